/*
 * drbd.h - what tandem needs to know about a DRBD resource before it can
 * protect a disk with it (docs/disk.md).
 *
 * tandem uses upstream DRBD with protocol C as the disk's transport and
 * cuts its write stream at each checkpoint with a marker write; that is
 * only sound with some settings.  drbd_check_resource() reads the
 * resource's settings as drbdadm sees them (`drbdadm -c CONF dump RES`,
 * DRBD's own defaults for what the file leaves out) and refuses, naming
 * the setting and why, what would let a failover hand the guest a disk
 * that is not the last acknowledged checkpoint's.
 */
#ifndef TANDEM_DRBD_H
#define TANDEM_DRBD_H

#include <stdbool.h>
#include <stddef.h>

#define DRBD_DEVICE_MAX 256

struct drbd_resource_info {
	char device[DRBD_DEVICE_MAX];	/* this host's /dev/drbdN ("" if not found) */
	char disk[DRBD_DEVICE_MAX];	/* its lower device (/dev/mapper/tdm-NAME-lower) */
	char meta_disk[DRBD_DEVICE_MAX];	/* "internal" or the metadata's device */
	char protocol;			/* 'A', 'B' or 'C' (effective) */
	char fencing[32];		/* effective */
	char fence_peer[256];		/* the handler ("" = none) */
	int warnings;			/* problems that do not refuse (csums-alg unset) */
};

/*
 * Parse the text of `drbdadm dump` for resource `res` and check it.  host
 * is this host's name as DRBD matches it (uname -n).  Returns the number
 * of refusals (0: tandem can use the resource); each refusal and warning
 * is one line "refused: SETTING: why" / "warning: ..." appended to msg.
 */
int drbd_check_dump(const char *dump, const char *res, const char *host,
		    struct drbd_resource_info *info, char *msg, size_t msglen);

/*
 * Run `drbdadm -c conf dump res` and check what it prints, as above.
 * Returns the number of refusals, or -1 when drbdadm cannot be run or
 * does not know the resource (msg says why).
 */
int drbd_check_resource(const char *conf, const char *res, struct drbd_resource_info *info,
			char *msg, size_t msglen);

/*
 * DRBD's replication is whole again: `drbdadm cstate` says Connected and
 * `drbdadm dstate` says UpToDate/UpToDate (the texts as drbdadm prints
 * them).
 */
bool drbd_state_healthy(const char *cstate, const char *dstate);

/*
 * Run `drbdadm -c conf VERB [OPT] res` (e.g. "disconnect", "primary"
 * with "--force").  Returns 0, or -1 with drbdadm's complaint in msg.
 */
int drbd_adm(const char *conf, const char *verb, const char *opt, const char *res, char *msg,
	     size_t msglen);

/* A resource's state as DRBD 8.4 words it: cs (Connected, StandAlone,
 * SyncTarget...), ro (Primary/Secondary), ds (UpToDate/UpToDate). */
struct drbd_state {
	char cs[32], ro[48], ds[48];
};

/*
 * Find minor's line in the text of /proc/drbd (DRBD 8.4: " 0: cs:Connected
 * ro:Primary/Secondary ds:UpToDate/UpToDate C r-----").  0, or -ENOENT
 * when the text has no state for it (DRBD 9's /proc/drbd never has).
 */
int drbd_proc_parse(const char *text, unsigned minor, struct drbd_state *st);

#define DRBD_CS 1u
#define DRBD_RO 2u
#define DRBD_DS 4u

/*
 * The state of resource res, whose device is `device` (/dev/drbdN): from
 * /proc/drbd when it has the minor (no process to run: the once-a-second
 * watches stay cheap on a loaded host), all three words at once; else
 * from `drbdadm cstate`, `role`, `dstate`, only those in `want` (DRBD_*;
 * the others stay "").  0, or -1 with why in msg.
 */
int drbd_state(const char *conf, const char *res, const char *device, unsigned want,
	       struct drbd_state *st, char *msg, size_t msglen);

/* 1 healthy (drbd_state_healthy), 0 not (msg says what it saw), -1
 * the state could not be read (msg says why). */
int drbd_healthy(const char *conf, const char *res, const char *device, char *msg, size_t msglen);


#endif
