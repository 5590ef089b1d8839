/*
 * overlay.h - the backup's epoch overlay: the device under the DRBD
 * secondary that holds each checkpoint's disk writes until tandem commits
 * that checkpoint (docs/disk.md).
 *
 * On the backup, DRBD's secondary writes to a lower device that is, in
 * fact, this overlay, served to the kernel as /dev/nbdK through the NBD
 * ioctls on a socketpair (NBD_SET_SOCK, NBD_DO_IT): no separate server
 * process.  The overlay keeps every write in memory, in arrival order.  A
 * write of the marker block (the last 4 KiB of the device) that decodes as
 * a marker of this VM (marker.h) closes the current group: the writes
 * before M(session, N) belong to checkpoint N or earlier, the writes after
 * it to later checkpoints.  READs answer from the held writes (newest
 * wins), else from the lower device.  FLUSH is answered at once: what is
 * held is not meant to be durable before its checkpoint commits, and a
 * committed checkpoint is made durable by the write-back (fdatasync after
 * each marker).  TRIM and WRITE_ZEROES are not offered (the NBD device does
 * not advertise them, so the kernel never sends them).
 *
 * When memory checkpoint N is complete, the engine commits M(session, N):
 * every write up to and including the marker is written back to the
 * lower device, in order, by a background thread.  At failover, activation
 * finishes that write-back, discards everything after the last committed
 * marker (reported, so that the caller can log the blocks) and stops
 * serving the NBD device: the lower device then holds exactly the disk of
 * the last committed checkpoint.
 *
 * Overflow policy.  Held writes live in memory only, up to mem_limit bytes
 * (there is no spill file: a spill file moves the overflow point without
 * removing it, and puts a file system in the I/O path of a device the
 * kernel may need to write back to in order to reclaim memory).  When a
 * write does not fit, the overlay first waits for the write-back of
 * committed writes to make room; when nothing held is committed, the
 * overlay overflows: that write and every later one fail with EIO (DRBD,
 * with `on-io-error detach`, detaches the secondary's disk), the overflowed
 * flag is set, overlay_wait_marker() returns -ENOSPC for markers not seen
 * before the overflow, and no marker after the overflow point can be
 * committed.  Markers seen before the overflow can still be committed and
 * activated.  The way back is write-through (below): the caller (disk.c)
 * has DRBD detach this side, enters write-through (which also clears the
 * overflow), attaches it again and lets DRBD resync it.
 *
 * Write-through.  While there is no checkpoint to keep on this side (after
 * an overflow, or while DRBD resyncs this disk in full), holding writes
 * only risks an overflow: overlay_through() commits everything held,
 * committed or not, and every later write as it arrives, so the write-back
 * writes the stream to the lower device in order and a writer waits for
 * room instead of overflowing.  The last committed checkpoint is forgotten
 * (activation then finds none: the lower device holds no checkpoint's
 * disk) and overlay_commit() refuses with -EBUSY.  overlay_arm() ends it
 * at the next marker of this VM: that marker and everything before it are
 * committed (its checkpoint is the committed one) and later writes are
 * held again; commits of earlier markers are refused with -ESTALE.  Arm
 * only once DRBD is whole here, so that the marker that ends it cuts the
 * stream as every marker does.
 *
 * Threads: overlay_write(), overlay_read() and overlay_flush() are the
 * device side and must be called from one thread (the NBD serving thread,
 * or a test): a read that misses the held writes goes to the lower device
 * outside the lock, which is safe only because no write can arrive
 * meanwhile.  The other functions may be called from any thread.
 */
#ifndef TANDEM_OVERLAY_H
#define TANDEM_OVERLAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "marker.h"

#define OVERLAY_BLOCK 4096u

struct overlay;

/* What overlay_opts.trace sees for each write the overlay holds. */
struct overlay_trace {
	uint64_t off;			/* bytes */
	uint32_t len;			/* bytes */
	const void *data;		/* len bytes, valid during the call */
	bool is_marker;			/* this write is a marker of this VM (it closes a group) */
	bool cut;			/* a cut given through overlay_cut() (no data) */
	bool has_prev;			/* a marker was seen before this write */
	uint64_t prev_epoch;		/* ... its epoch: this write belongs to a later group */
	uint8_t prev_session[MARKER_SESSION_LEN];
};

struct overlay_opts {
	const char *lower;		/* the real device (or a regular file), opened O_RDWR */
	const char *nbd;		/* "/dev/nbdK" to serve; NULL: no device, the caller
					 * drives overlay_write/read/flush itself (tests) */
	const char *vm;			/* the VM name markers must carry */
	uint64_t mem_limit;		/* bytes of held write data; 0: 256 MiB */
	bool lock_memory;		/* mlockall(MCL_CURRENT | MCL_FUTURE); logged if refused */
	/* Optional: called for every write held (and every overlay_cut()), in
	 * stream order, before the write is answered, with the overlay's lock
	 * held: it must not call back into the overlay. */
	void (*trace)(void *arg, const struct overlay_trace *t);
	void *trace_arg;
};

struct overlay_stats {
	uint64_t size;			/* of the device (= the lower's, rounded down to 4 KiB) */
	uint64_t held_bytes;		/* write data in memory, committed or not */
	uint64_t held_writes;
	uint64_t spilled_bytes;		/* always 0: there is no spill file */
	uint64_t lag_bytes;		/* committed, not yet written back */
	uint64_t lag_writes;
	uint64_t written_back_writes;
	uint64_t written_back_bytes;
	uint64_t writes;		/* writes received (including markers) */
	uint64_t reads;
	uint64_t flushes;
	uint64_t markers;		/* markers of this VM seen */
	uint64_t foreign_markers;	/* good markers of another VM (held as data) */
	uint64_t bad_markers;		/* marker magic with a bad CRC or version (held as data) */
	bool has_marker;		/* last marker seen: */
	uint64_t marker_epoch;
	uint8_t marker_session[MARKER_SESSION_LEN];
	bool has_committed;		/* last committed marker: */
	uint64_t committed_epoch;
	uint8_t committed_session[MARKER_SESSION_LEN];
	uint64_t discarded_writes;	/* by overlay_activate() */
	uint64_t discarded_bytes;
	bool overflowed;
	uint64_t overflows;		/* times it overflowed (each cleared by write-through) */
	uint64_t refused_writes;	/* failed with EIO after an overflow */
	bool through;			/* write-through (no checkpoint held on this side) */
	bool armed;			/* ... until the next marker (overlay_arm) */
	uint64_t through_writes;	/* writes that went through, in all */
	int writeback_error;		/* 0, or the -errno of a failed write-back */
	bool activated;
};

/*
 * Open the overlay over o->lower and, when o->nbd is set, serve it as that
 * NBD device (block size 4 KiB, the lower's size rounded down to 4 KiB;
 * the device must not be in use).  The serving and write-back threads run
 * with PR_SET_IO_FLUSHER (logged when refused: it needs
 * CAP_SYS_RESOURCE).  Returns 0 and *out, or -errno with a reason in err.
 */
int overlay_open(const struct overlay_opts *o, struct overlay **out, char *err, size_t errlen);

/*
 * Wait until M(session, epoch) has been seen (held now, or the session's
 * latest marker seen has an epoch >= this one).  Returns 0, -ETIMEDOUT
 * after timeout_ms, -ENOSPC if the overlay overflowed before the marker
 * came, -ESHUTDOWN once activated.
 */
int overlay_wait_marker(struct overlay *ov, const uint8_t *session, uint64_t epoch,
			unsigned timeout_ms);

/*
 * Commit checkpoint M(session, epoch): every write held up to and
 * including that marker is written back to the lower device in order, in
 * the background (see lag_* in the stats).  Returns 0 (also when it was
 * committed already), -ENOENT if that marker was not seen (or is no longer
 * held and was not committed), -EBUSY while writing through, -ESTALE for
 * a marker before the one that ended write-through, -ESHUTDOWN once
 * activated.
 */
int overlay_commit(struct overlay *ov, const uint8_t *session, uint64_t epoch);

/*
 * Write-through (see above): commit everything held and every later write
 * as it arrives; clears the overflow and any arming; forgets the committed
 * checkpoint.  Returns how many held writes that were not committed it
 * committed now (they reach the lower device with the rest).  Idempotent.
 */
uint64_t overlay_through(struct overlay *ov);

/* End write-through at the next marker of this VM (no-op when not
 * writing through). */
void overlay_arm(struct overlay *ov);

/*
 * Wait until everything committed has been written back and made durable
 * (fdatasync), at most timeout_ms.  Returns 0, -ETIMEDOUT, or the
 * write-back's -errno.
 */
int overlay_sync(struct overlay *ov, unsigned timeout_ms);

/* One discarded write, as overlay_activate() reports it. */
typedef void overlay_discard_fn(void *arg, uint64_t off, uint32_t len, bool is_marker);

/*
 * Failover: stop serving the NBD device (later writes fail), finish the
 * write-back of everything committed, discard every write after the last
 * committed marker, calling discard(arg, ...) for each (may be NULL) in
 * stream order, and fdatasync the lower device.  Afterwards the lower
 * device holds exactly the disk of the last committed checkpoint (the
 * stats say which, and how much was discarded).  Returns 0, or -EIO when a
 * write-back failed (the lower device is then not that disk).  Calling it
 * twice is -EALREADY.
 */
int overlay_activate(struct overlay *ov, overlay_discard_fn *discard, void *arg);

/*
 * Protection ends without a failover (the primary stopped it, or this
 * backup stops): stop serving the NBD device and write back everything
 * held, committed or not, in order, then fdatasync.  DRBD's secondary saw
 * every one of those writes complete, so its idea of this disk stays
 * true.  At most timeout_ms.  Returns 0, -ETIMEDOUT, -EIO (a write-back
 * failed), -EALREADY after overlay_activate() or a first release.
 */
int overlay_release(struct overlay *ov, unsigned timeout_ms);

void overlay_get_stats(struct overlay *ov, struct overlay_stats *st);

/* Stop serving (if still serving), stop the write-back without finishing
 * it, free everything.  overlay_close(NULL) is a no-op. */
void overlay_close(struct overlay *ov);

/* ---- the device side ----------------------------------------------------- */

/*
 * A write of len bytes at off (both multiples of OVERLAY_BLOCK, inside the
 * device).  Returns 0 (held), -EINVAL (misaligned or outside), -EIO (the
 * overlay has overflowed: now or before), -ESHUTDOWN (activated).
 */
int overlay_write(struct overlay *ov, uint64_t off, const void *buf, uint32_t len);

/* A read: held writes, newest first, else the lower device.  0 or -errno. */
int overlay_read(struct overlay *ov, uint64_t off, void *buf, uint32_t len);

/* A flush: answered at once (see above).  Returns 0. */
int overlay_flush(struct overlay *ov);

/*
 * A cut given out of band (a CUT(N) message beside the stream rather than
 * a marker block in it): closes the current group as M(m) exactly as a
 * marker write would, without data.  Only sound under DRBD protocol C
 * (disk-and-cluster.md §3.3); the cut test uses it as a negative control
 * under protocol A.  Any thread (it holds no data).  Returns 0 or as
 * overlay_write().
 */
int overlay_cut(struct overlay *ov, const struct marker *m);

#endif
