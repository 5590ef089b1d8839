/*
 * marker.c - the checkpoint marker block (marker.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>

#include "marker.h"

static const char marker_magic[8] = { 'T', 'N', 'D', 'M', 'M', 'R', 'K', '1' };

#define MARKER_VERSION 1u
#define CRC_OFF (MARKER_SIZE - 4u)

uint32_t crc32c(uint32_t crc, const void *p, size_t n)
{
	static uint32_t table[256];
	static bool ready;
	const uint8_t *b = p;

	if (!ready) {	/* benign race: every thread computes the same table */
		for (uint32_t i = 0; i < 256; i++) {
			uint32_t c = i;

			for (int k = 0; k < 8; k++)
				c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
			table[i] = c;
		}
		ready = true;
	}
	crc = ~crc;
	while (n--)
		crc = table[(crc ^ *b++) & 0xff] ^ (crc >> 8);
	return ~crc;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, v >> 32);
	put32(p + 4, (uint32_t)v);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

void marker_encode(const struct marker *m, uint8_t *out)
{
	memset(out, 0, MARKER_SIZE);
	memcpy(out, marker_magic, 8);
	put32(out + 8, MARKER_VERSION);
	put64(out + 16, m->epoch);
	memcpy(out + 24, m->session, MARKER_SESSION_LEN);
	memcpy(out + 40, m->vm, strnlen(m->vm, MARKER_VM_LEN - 1));
	put64(out + 104, m->time_ns);
	put32(out + CRC_OFF, crc32c(0, out, CRC_OFF));
}

int marker_decode(const uint8_t *buf, size_t len, struct marker *m)
{
	if (len < MARKER_SIZE || memcmp(buf, marker_magic, 8) != 0)
		return -EINVAL;
	if (get32(buf + CRC_OFF) != crc32c(0, buf, CRC_OFF) || get32(buf + 8) != MARKER_VERSION ||
	    get32(buf + 12) != 0)
		return -EBADMSG;
	m->epoch = get64(buf + 16);
	memcpy(m->session, buf + 24, MARKER_SESSION_LEN);
	memcpy(m->vm, buf + 40, MARKER_VM_LEN);
	m->vm[MARKER_VM_LEN - 1] = '\0';
	m->time_ns = get64(buf + 104);
	return 0;
}

/* ---- the device's marker block --------------------------------------------- */

int marker_dev_open(struct marker_dev *d, const char *path)
{
	struct stat st;
	uint64_t size = 0;
	int fd, rc;

	memset(d, 0, sizeof(*d));
	d->fd = -1;
	snprintf(d->path, sizeof(d->path), "%s", path);
	fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL)	/* a file system without O_DIRECT (tests) */
		fd = open(path, O_RDWR | O_DSYNC | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (S_ISBLK(st.st_mode)) {
		if (ioctl(fd, BLKGETSIZE64, &size) < 0) {
			rc = -errno;
			goto out;
		}
	} else if (S_ISREG(st.st_mode)) {
		size = (uint64_t)st.st_size;
	} else {
		rc = -ENOTBLK;
		goto out;
	}
	if (size < 2 * MARKER_SIZE) {
		rc = -ENOSPC;
		goto out;
	}
	if ((rc = posix_memalign(&d->buf, MARKER_SIZE, MARKER_SIZE))) {
		rc = -rc;
		goto out;
	}
	d->fd = fd;
	d->size = size;
	d->offset = (size / MARKER_SIZE - 1) * MARKER_SIZE;
	return 0;
out:
	close(fd);
	return rc;
}

void marker_dev_close(struct marker_dev *d)
{
	if (d->fd >= 0)
		close(d->fd);
	free(d->buf);
	d->buf = NULL;
	d->fd = -1;
}

int marker_dev_write(struct marker_dev *d, const struct marker *m)
{
	ssize_t r;

	if (d->fd < 0)
		return -EBADF;
	marker_encode(m, d->buf);
	r = pwrite(d->fd, d->buf, MARKER_SIZE, (off_t)d->offset);
	if (r < 0)
		return -errno;
	return r == (ssize_t)MARKER_SIZE ? 0 : -EIO;
}

int marker_dev_read(struct marker_dev *d, struct marker *m)
{
	ssize_t r;

	if (d->fd < 0)
		return -EBADF;
	r = pread(d->fd, d->buf, MARKER_SIZE, (off_t)d->offset);
	if (r < 0)
		return -errno;
	if (r != (ssize_t)MARKER_SIZE)
		return -EIO;
	return marker_decode(d->buf, MARKER_SIZE, m);
}
