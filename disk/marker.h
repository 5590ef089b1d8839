/*
 * marker.h - the checkpoint marker: one 4 KiB block that cuts a disk's
 * write stream at each checkpoint (docs/disk.md).
 *
 * In the pause of checkpoint N, beside the memory capture, the primary
 * writes M(N) with O_DIRECT to the last 4 KiB of the DRBD device (the
 * guest-facing device stops before it) and waits for the write before the
 * guest resumes.  Under DRBD's protocol C the write completes only once
 * the backup's lower device has it, and DRBD orders it after every write
 * the guest saw complete before the pause.  On the backup, tandem's overlay
 * under the DRBD secondary sees M(N) arrive in the write stream: writes
 * before it belong to checkpoint N or earlier, writes after it to later
 * epochs.
 *
 * Layout (big-endian), MARKER_SIZE bytes:
 *   0   8  magic "TNDMMRK1"
 *   8   4  version (1)
 *   12  4  flags (0)
 *   16  8  epoch N
 *   24  16 session: random per primary session (a new session may reuse N)
 *   40  64 VM name, NUL-padded
 *   104 8  wall-clock time of the write, ns since the epoch
 *   112 ...  zero
 *   4092 4 CRC32C of bytes 0..4091
 */
#ifndef TANDEM_MARKER_H
#define TANDEM_MARKER_H

#include <stddef.h>
#include <stdint.h>

#define MARKER_SIZE 4096u
#define MARKER_SESSION_LEN 16
#define MARKER_VM_LEN 64

struct marker {
	uint64_t epoch;
	uint8_t session[MARKER_SESSION_LEN];
	char vm[MARKER_VM_LEN];		/* NUL-terminated (at most 63 characters kept) */
	uint64_t time_ns;
};

/* CRC32C (Castagnoli), software; crc = 0 to start. */
uint32_t crc32c(uint32_t crc, const void *p, size_t n);

/* Encode m into out (MARKER_SIZE bytes). */
void marker_encode(const struct marker *m, uint8_t *out);

/*
 * Decode a block.  Returns 0 and fills m when buf (len bytes, at least
 * MARKER_SIZE) holds a marker with a good CRC and known version; -EINVAL
 * when it is not a marker (an ordinary data block); -EBADMSG when the magic
 * is there but the CRC or version is wrong (a torn or foreign marker).
 */
int marker_decode(const uint8_t *buf, size_t len, struct marker *m);

/*
 * The marker block of a device: opened read-write with O_DIRECT (a
 * regular file without O_DIRECT support falls back to O_DSYNC, for tests).
 */
struct marker_dev {
	int fd;
	uint64_t offset;		/* of the marker block: size - MARKER_SIZE */
	uint64_t size;			/* of the whole device */
	void *buf;			/* MARKER_SIZE, aligned for O_DIRECT */
	char path[256];
};

/* Open path's marker block.  Returns 0 or -errno (a device smaller than
 * two blocks is -ENOSPC).  marker_dev_close() on a closed one is a no-op. */
int marker_dev_open(struct marker_dev *d, const char *path);
void marker_dev_close(struct marker_dev *d);

/* Write M and wait for its completion.  Returns 0 or -errno. */
int marker_dev_write(struct marker_dev *d, const struct marker *m);

/* Read back the marker block.  Returns as marker_decode(), or -errno. */
int marker_dev_read(struct marker_dev *d, struct marker *m);

#endif
