/*
 * dm.h - the device-mapper linear device under the backup's DRBD
 * (`disk /dev/mapper/tdm-NAME-lower`, docs/disk.md), pointed at the real
 * disk or at tandem's overlay, through dmsetup.
 *
 * A switch is load (the new table, inactive), suspend (device-mapper
 * drains the I/O in flight to the old target and queues new I/O), resume
 * (the new table becomes live, the queue goes to it): DRBD above sees
 * neither an error nor a gap.
 */
#ifndef TANDEM_DM_H
#define TANDEM_DM_H

#include <stddef.h>
#include <stdint.h>

#define NBD_MAJOR_NUMBER 43

/* A one-segment linear table: 0 sectors linear major:minor offset. */
struct dm_linear {
	uint64_t sectors;
	unsigned major, minor;
	uint64_t offset;		/* sectors */
};

/* Parse `dmsetup table` output for such a table: 0, or -EINVAL. */
int dm_linear_parse(const char *text, struct dm_linear *t);

/* The live table of device-mapper device `dev` (/dev/mapper/NAME or
 * NAME).  0, or -errno with why in msg (no such device, not linear, more
 * than one segment, dmsetup missing). */
int dm_linear_get(const char *dev, struct dm_linear *t, char *msg, size_t msglen);

/* Load t as the inactive table of dev. */
int dm_linear_load(const char *dev, const struct dm_linear *t, char *msg, size_t msglen);

/* Create dev (/dev/mapper/NAME) with t as its table; remove dev (fails
 * while something holds it open).  0, or -errno with why in msg. */
int dm_linear_create(const char *dev, const struct dm_linear *t, char *msg, size_t msglen);
int dm_remove(const char *dev, char *msg, size_t msglen);

/* Suspend (drains I/O) and resume (makes a loaded table live). */
int dm_suspend(const char *dev, char *msg, size_t msglen);
int dm_resume(const char *dev, char *msg, size_t msglen);

/* /dev/NAME of block device major:minor (from sysfs), or -errno. */
int dm_block_path(unsigned major, unsigned minor, char *out, size_t len);

#endif
