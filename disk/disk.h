/*
 * disk.h - the guest's disk as a device (device/device.h).
 *
 * `disk`: a DRBD resource (protocol C).  The primary cuts its write stream
 * at each checkpoint with the marker block (marker.h), written beside the
 * memory capture and waited for before the guest resumes; a fence flag
 * (set by the fence-peer handler when DRBD loses its peer) turns the
 * verdict to fenced.  The backup commits a checkpoint only when its
 * overlay has seen the checkpoint's marker (docs/disk.md).
 *
 * `memdisk`: memdom's stand-in (config `memdom-disk = FILE`), for the
 * engine's tests: a file both daemons of a loopback pair share, standing
 * in for a protocol-C-replicated device.  The primary writes each marker
 * into it exactly as onto /dev/drbdN; the backup reads it back and
 * commits only when it holds this checkpoint's marker (or a later one of
 * the same session).  FILE.fenced, while it exists, stands for the fence
 * flag.  It proves the engine's device path, not DRBD.
 */
#ifndef TANDEM_DISK_H
#define TANDEM_DISK_H

#include "../config/config.h"
#include "../device/device.h"

/* Set dv up as a DRBD disk (its ops, name, private state).  0 or -errno. */
int disk_device_init(struct device *dv, const struct config_disk *disk);

/* The fence flag of resource res: RUN_DIR/NAME.RES.fenced.  tandem's
 * fence-peer handler (`tandem fence-peer CONFIG`) puts it up when DRBD
 * loses its peer; the primary takes it down once DRBD is whole again. */
void disk_fence_flag_path(const struct tandem_config *cfg, const char *res, char *out,
			  size_t len);

/* Set dv up as memdom's disk stand-in on file `path`.  0 or -errno. */
int memdisk_device_init(struct device *dv, const char *path);

#endif
