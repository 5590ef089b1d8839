/*
 * overlay.c - the backup's epoch overlay (overlay.h).
 *
 * Held writes are records in one FIFO (stream order).  An index maps each
 * 4 KiB block to the newest record holding it, for reads.  Markers are
 * records too (their block is data of the device as well) and are also
 * linked in a second list, to find the one a commit names.  commit_seq is
 * the sequence number of the last committed marker: the write-back thread
 * takes records off the head of the FIFO while their sequence number is at
 * most commit_seq, writes them to the lower device, drops them from the
 * index and frees them.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/fs.h>
#include <linux/nbd.h>

#define LOG_MODULE "overlay"
#include "../lib/log.h"
#include "../lib/testlog.h"
#include "../lib/util.h"
#include "overlay.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#endif

#define OV_DEFAULT_LIMIT (256ull << 20)
#define OV_BUCKETS (1u << 16)
#define OV_MAX_REQUEST (32u << 20)	/* nbd's max_hw_sectors (65536 sectors) */

/* NBD's wire format (the kernel's side of the socket), big-endian. */
#define NBD_REQ_MAGIC 0x25609513u
#define NBD_REP_MAGIC 0x67446698u
#define NBD_REQ_SIZE 28
#define NBD_REP_SIZE 16

struct ov_rec {
	struct ov_rec *next;		/* FIFO, stream order */
	struct ov_rec *next_marker;	/* markers only */
	uint64_t seq;
	uint64_t off;
	uint32_t len;			/* 0 for an overlay_cut() */
	bool is_marker;
	uint64_t epoch;			/* markers */
	uint8_t session[MARKER_SESSION_LEN];
	uint8_t data[];
};

struct ov_ent {
	struct ov_ent *next;
	uint64_t blk;
	struct ov_rec *rec;
};

struct overlay {
	int lower_fd;
	uint64_t size;
	uint64_t marker_off;
	char vm[MARKER_VM_LEN];
	uint64_t limit;
	void (*trace)(void *arg, const struct overlay_trace *t);
	void *trace_arg;

	pthread_mutex_t lock;
	pthread_cond_t cond;		/* any change: marker seen, written back, commit, stop */
	struct ov_rec *head, *tail;
	struct ov_rec *mhead, *mtail;	/* held markers */
	struct ov_ent **idx;
	uint64_t next_seq;
	uint64_t commit_seq;		/* 0: nothing committed */
	/* the marker that ended write-through: no commit of an earlier one */
	bool has_floor;
	uint64_t floor_seq, floor_epoch;
	uint8_t floor_session[MARKER_SESSION_LEN];
	bool writing_back;		/* the head is being written by the thread */
	bool wb_stop;
	bool dirty_since_sync;		/* lower written since the last fdatasync */
	struct overlay_stats st;	/* the counters (held_*, lag_* computed) */
	uint64_t lag_bytes, lag_writes;

	pthread_t wb_thread;
	bool wb_started;

	/* the NBD device */
	int nbd_fd;
	int sock[2];			/* [0] the kernel's, [1] ours */
	pthread_t doit_thread, serve_thread;
	bool serving;
	int doit_rc;
};

/* ---- helpers ------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static int full_io(int fd, void *buf, size_t len, bool wr)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = wr ? write(fd, p, len) : read(fd, p, len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0)
			return -EPIPE;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

static int full_pio(int fd, void *buf, size_t len, uint64_t off, bool wr)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t r = wr ? pwrite(fd, p, len, (off_t)off) : pread(fd, p, len, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -errno;
		if (r == 0) {		/* reading past a file's end: zeros */
			if (wr)
				return -EIO;
			memset(p, 0, len);
			return 0;
		}
		p += r;
		len -= (size_t)r;
		off += (uint64_t)r;
	}
	return 0;
}

static void io_flusher(const char *what)
{
	if (prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) < 0)
		log_warn("%s thread: PR_SET_IO_FLUSHER refused (%s): memory reclaim may wait on "
			 "this device", what, strerror(errno));
}

/* ---- the index (lock held) ---------------------------------------------- */

static struct ov_ent **idx_slot(struct overlay *ov, uint64_t blk)
{
	struct ov_ent **e = &ov->idx[(blk * 0x9e3779b97f4a7c15ull) >> 48];

	while (*e && (*e)->blk != blk)
		e = &(*e)->next;
	return e;
}

static int idx_put(struct overlay *ov, uint64_t blk, struct ov_rec *r)
{
	struct ov_ent **e = idx_slot(ov, blk);

	if (!*e) {
		*e = calloc(1, sizeof(**e));
		if (!*e)
			return -ENOMEM;
		(*e)->blk = blk;
	}
	(*e)->rec = r;
	return 0;
}

/* Drop r's blocks from the index where r is still the newest. */
static void idx_drop(struct overlay *ov, struct ov_rec *r)
{
	for (uint32_t i = 0; i < r->len / OVERLAY_BLOCK; i++) {
		struct ov_ent **e = idx_slot(ov, r->off / OVERLAY_BLOCK + i), *d;

		if (*e && (*e)->rec == r) {
			d = *e;
			*e = d->next;
			free(d);
		}
	}
}

static void idx_clear(struct overlay *ov)
{
	for (size_t b = 0; b < OV_BUCKETS; b++) {
		while (ov->idx[b]) {
			struct ov_ent *d = ov->idx[b];

			ov->idx[b] = d->next;
			free(d);
		}
	}
}

/* ---- the held stream (lock held) ---------------------------------------- */

/* Unlink the FIFO's head (and, for a marker, the marker list's head). */
static struct ov_rec *pop_head(struct overlay *ov)
{
	struct ov_rec *r = ov->head;

	ov->head = r->next;
	if (!ov->head)
		ov->tail = NULL;
	if (r->is_marker) {
		ov->mhead = r->next_marker;	/* markers leave in order too */
		if (!ov->mhead)
			ov->mtail = NULL;
	}
	ov->st.held_bytes -= r->len;
	ov->st.held_writes -= r->len ? 1 : 0;
	return r;
}

static bool committed_pending(struct overlay *ov)
{
	return ov->head && ov->head->seq <= ov->commit_seq;
}

static struct ov_rec *find_marker(struct overlay *ov, const uint8_t *session, uint64_t epoch)
{
	for (struct ov_rec *m = ov->mhead; m; m = m->next_marker)
		if (m->epoch == epoch && !memcmp(m->session, session, MARKER_SESSION_LEN))
			return m;
	return NULL;
}

static void fill_trace(struct overlay *ov, struct overlay_trace *t)
{
	t->has_prev = ov->st.has_marker;
	t->prev_epoch = ov->st.marker_epoch;
	memcpy(t->prev_session, ov->st.marker_session, MARKER_SESSION_LEN);
}

static uint64_t commit_upto(struct overlay *ov, uint64_t seq);

/* Append a record: data (len bytes) or a cut; m set for a marker. */
static int hold(struct overlay *ov, uint64_t off, const void *buf, uint32_t len,
		const struct marker *m, bool cut)
{
	struct overlay_trace t = { .off = off, .len = len, .data = buf, .is_marker = m && !cut,
				   .cut = cut };
	struct ov_rec *r = NULL;
	int rc = 0;

	pthread_mutex_lock(&ov->lock);
	if (ov->st.activated) {
		rc = -ESHUTDOWN;
		goto out;
	}
	if (ov->st.overflowed) {
		ov->st.refused_writes++;
		rc = -EIO;
		goto out;
	}
	/* Room: wait for the write-back of committed writes, else overflow.
	 * (Writing through, everything held is committed; a write larger than
	 * the limit goes in alone.) */
	while (ov->st.held_bytes + len > ov->limit && !(ov->st.through && !ov->head)) {
		if (ov->st.activated) {
			rc = -ESHUTDOWN;
			goto out;
		}
		if (!committed_pending(ov) || ov->st.writeback_error) {
			ov->st.overflowed = true;
			ov->st.overflows++;
			ov->st.refused_writes++;
			log_error("overlay of %s overflowed: %llu bytes held, limit %llu; writes now "
				  "fail (DRBD detaches this disk) until it writes through", ov->vm,
				  (unsigned long long)ov->st.held_bytes, (unsigned long long)ov->limit);
			pthread_cond_broadcast(&ov->cond);
			rc = -EIO;
			goto out;
		}
		pthread_cond_wait(&ov->cond, &ov->lock);
	}
	r = malloc(sizeof(*r) + len);
	if (!r) {
		rc = -ENOMEM;
		goto out;
	}
	memset(r, 0, sizeof(*r));
	memcpy(r->data, buf, len);
	r->seq = ++ov->next_seq;
	r->off = off;
	r->len = len;
	for (uint32_t i = 0; i < len / OVERLAY_BLOCK; i++) {
		if ((rc = idx_put(ov, off / OVERLAY_BLOCK + i, r))) {
			idx_drop(ov, r);
			free(r);
			goto out;
		}
	}
	fill_trace(ov, &t);
	if (ov->tail)
		ov->tail->next = r;
	else
		ov->head = r;
	ov->tail = r;
	ov->st.held_bytes += len;
	ov->st.held_writes += len ? 1 : 0;
	if (len)
		ov->st.writes++;
	if (m) {
		r->is_marker = true;
		r->epoch = m->epoch;
		memcpy(r->session, m->session, MARKER_SESSION_LEN);
		if (ov->mtail)
			ov->mtail->next_marker = r;
		else
			ov->mhead = r;
		ov->mtail = r;
		ov->st.markers++;
		ov->st.has_marker = true;
		ov->st.marker_epoch = m->epoch;
		memcpy(ov->st.marker_session, m->session, MARKER_SESSION_LEN);
		pthread_cond_broadcast(&ov->cond);
	}
	if (ov->st.through) {
		ov->st.through_writes += len ? 1 : 0;
		commit_upto(ov, r->seq);
		if (m && !cut && ov->st.armed) {
			/* everything before this marker is on its way to the
			 * lower device: it stands at this checkpoint */
			ov->st.through = ov->st.armed = false;
			ov->st.has_committed = true;
			ov->st.committed_epoch = m->epoch;
			memcpy(ov->st.committed_session, m->session, MARKER_SESSION_LEN);
			ov->has_floor = true;
			ov->floor_seq = r->seq;
			ov->floor_epoch = m->epoch;
			memcpy(ov->floor_session, m->session, MARKER_SESSION_LEN);
			log_info("overlay of %s holds writes again after checkpoint %llu's marker "
				 "(%llu writes went through)", ov->vm, (unsigned long long)m->epoch,
				 (unsigned long long)ov->st.through_writes);
			testlog("disk-armed %llu", (unsigned long long)m->epoch);
		}
	}
	if (ov->trace)
		ov->trace(ov->trace_arg, &t);
out:
	pthread_mutex_unlock(&ov->lock);
	return rc;
}

/* ---- the device side ---------------------------------------------------- */

int overlay_write(struct overlay *ov, uint64_t off, const void *buf, uint32_t len)
{
	struct marker m, *mp = NULL;
	int r;

	if (!len || off % OVERLAY_BLOCK || len % OVERLAY_BLOCK || off > ov->size ||
	    len > ov->size - off)
		return -EINVAL;
	if (off <= ov->marker_off && ov->marker_off < off + len) {
		r = marker_decode((const uint8_t *)buf + (ov->marker_off - off), MARKER_SIZE, &m);
		if (r == 0 && !strcmp(m.vm, ov->vm)) {
			mp = &m;
		} else if (r == 0 || r == -EBADMSG) {
			pthread_mutex_lock(&ov->lock);
			if (r == 0)
				ov->st.foreign_markers++;
			else
				ov->st.bad_markers++;
			pthread_mutex_unlock(&ov->lock);
			log_warn("%s marker in %s's marker block (%s): held as data",
				 r == 0 ? "a foreign" : "a torn or unknown", ov->vm,
				 r == 0 ? m.vm : "bad CRC or version");
		}
	}
	return hold(ov, off, buf, len, mp, false);
}

int overlay_cut(struct overlay *ov, const struct marker *m)
{
	return hold(ov, 0, NULL, 0, m, true);
}

int overlay_read(struct overlay *ov, uint64_t off, void *buf, uint32_t len)
{
	uint8_t *p = buf;
	int rc;

	if (!len || off % OVERLAY_BLOCK || len % OVERLAY_BLOCK || off > ov->size ||
	    len > ov->size - off)
		return -EINVAL;
	for (uint32_t i = 0; i < len / OVERLAY_BLOCK; i++) {
		uint64_t blk = off / OVERLAY_BLOCK + i;
		struct ov_ent **e;
		bool hit = false;

		pthread_mutex_lock(&ov->lock);
		ov->st.reads += i == 0;
		e = idx_slot(ov, blk);
		if (*e) {
			struct ov_rec *r = (*e)->rec;

			memcpy(p + (size_t)i * OVERLAY_BLOCK,
			       r->data + (blk * OVERLAY_BLOCK - r->off), OVERLAY_BLOCK);
			hit = true;
		}
		pthread_mutex_unlock(&ov->lock);
		/* A miss: no held write has this block, and none can be added
		 * meanwhile (writes come from this same thread). */
		if (!hit && (rc = full_pio(ov->lower_fd, p + (size_t)i * OVERLAY_BLOCK,
					   OVERLAY_BLOCK, blk * OVERLAY_BLOCK, false)))
			return rc;
	}
	return 0;
}

int overlay_flush(struct overlay *ov)
{
	pthread_mutex_lock(&ov->lock);
	ov->st.flushes++;
	pthread_mutex_unlock(&ov->lock);
	return 0;
}

/* ---- write-back ---------------------------------------------------------- */

static void *wb_main(void *arg)
{
	struct overlay *ov = arg;

	io_flusher("write-back");
	pthread_mutex_lock(&ov->lock);
	for (;;) {
		struct ov_rec *r;
		int rc = 0;

		while (!ov->wb_stop && !(committed_pending(ov) && !ov->st.writeback_error))
			pthread_cond_wait(&ov->cond, &ov->lock);
		if (ov->wb_stop)
			break;
		r = ov->head;
		ov->writing_back = true;
		pthread_mutex_unlock(&ov->lock);
		/* r stays held (and readable) until it is on the lower device. */
		if (r->len)
			rc = full_pio(ov->lower_fd, r->data, r->len, r->off, true);
		if (!rc && r->is_marker && fdatasync(ov->lower_fd) < 0)
			rc = -errno;
		pthread_mutex_lock(&ov->lock);
		ov->writing_back = false;
		if (rc) {
			ov->st.writeback_error = rc;
			log_error("overlay of %s: write-back at %llu failed: %s; the lower device is "
				  "behind the committed checkpoint", ov->vm, (unsigned long long)r->off,
				  strerror(-rc));
			pthread_cond_broadcast(&ov->cond);
			continue;
		}
		pop_head(ov);
		idx_drop(ov, r);
		ov->lag_bytes -= r->len;
		ov->lag_writes -= r->len ? 1 : 0;
		ov->st.written_back_bytes += r->len;
		ov->st.written_back_writes += r->len ? 1 : 0;
		ov->dirty_since_sync = !r->is_marker && (ov->dirty_since_sync || r->len);
		free(r);
		pthread_cond_broadcast(&ov->cond);
	}
	pthread_mutex_unlock(&ov->lock);
	return NULL;
}

/* Commit every held record up to seq: the write-back may take them (lock
 * held).  Returns how many writes (not markers) this newly committed. */
static uint64_t commit_upto(struct overlay *ov, uint64_t seq)
{
	uint64_t n = 0;

	for (struct ov_rec *r = ov->head; r && r->seq <= seq; r = r->next) {
		if (r->seq > ov->commit_seq) {
			ov->lag_bytes += r->len;
			ov->lag_writes += r->len ? 1 : 0;
			n += r->len ? 1 : 0;
		}
	}
	if (seq > ov->commit_seq)
		ov->commit_seq = seq;
	pthread_cond_broadcast(&ov->cond);
	return n;
}

int overlay_commit(struct overlay *ov, const uint8_t *session, uint64_t epoch)
{
	struct ov_rec *m;
	int rc = 0;

	pthread_mutex_lock(&ov->lock);
	if (ov->st.activated) {
		rc = -ESHUTDOWN;
		goto out;
	}
	if (ov->st.through) {
		rc = -EBUSY;
		goto out;
	}
	m = find_marker(ov, session, epoch);
	if (m ? ov->has_floor && m->seq < ov->floor_seq :
		ov->has_floor && !memcmp(ov->floor_session, session, MARKER_SESSION_LEN) &&
		epoch < ov->floor_epoch) {
		rc = -ESTALE;	/* the lower device is ahead of that checkpoint */
		goto out;
	}
	if (!m) {
		/* Written back already: committed, or older in the same session. */
		if (!(ov->st.has_committed &&
		      !memcmp(ov->st.committed_session, session, MARKER_SESSION_LEN) &&
		      epoch <= ov->st.committed_epoch))
			rc = -ENOENT;
		goto out;
	}
	if (m->seq <= ov->commit_seq)
		goto out;
	commit_upto(ov, m->seq);
	ov->st.has_committed = true;
	ov->st.committed_epoch = epoch;
	memcpy(ov->st.committed_session, session, MARKER_SESSION_LEN);
out:
	if (rc == 0)	/* (in the order of the overlay's own changes) */
		testlog("disk-commit %llu", (unsigned long long)epoch);
	pthread_mutex_unlock(&ov->lock);
	return rc;
}

uint64_t overlay_through(struct overlay *ov)
{
	uint64_t n = 0;
	bool was;

	pthread_mutex_lock(&ov->lock);
	if (ov->st.activated) {
		pthread_mutex_unlock(&ov->lock);
		return 0;
	}
	if (ov->tail)
		n = commit_upto(ov, ov->tail->seq);
	was = ov->st.through;
	if (!was)
		testlog("disk-through");
	ov->st.through = true;
	ov->st.armed = false;
	ov->st.overflowed = false;
	ov->st.has_committed = false;
	ov->has_floor = false;
	pthread_cond_broadcast(&ov->cond);
	pthread_mutex_unlock(&ov->lock);
	if (!was)
		log_info("overlay of %s writes through: %llu held writes of no committed checkpoint "
			 "go to the disk with the rest", ov->vm, (unsigned long long)n);
	return n;
}

void overlay_arm(struct overlay *ov)
{
	pthread_mutex_lock(&ov->lock);
	if (ov->st.through && !ov->st.armed) {
		ov->st.armed = true;
		log_info("overlay of %s: write-through ends at the next marker", ov->vm);
	}
	pthread_mutex_unlock(&ov->lock);
}

int overlay_wait_marker(struct overlay *ov, const uint8_t *session, uint64_t epoch,
			unsigned timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int rc;

	pthread_mutex_lock(&ov->lock);
	for (;;) {
		uint64_t now;

		if (find_marker(ov, session, epoch) ||
		    (ov->st.has_marker && !memcmp(ov->st.marker_session, session, MARKER_SESSION_LEN) &&
		     epoch <= ov->st.marker_epoch)) {
			rc = 0;
			break;
		}
		if (ov->st.activated) {
			rc = -ESHUTDOWN;
			break;
		}
		if (ov->st.overflowed) {
			rc = -ENOSPC;
			break;
		}
		now = now_ns();
		if (now >= end) {
			rc = -ETIMEDOUT;
			break;
		}
		cond_wait_ns(&ov->cond, &ov->lock, end - now);
	}
	pthread_mutex_unlock(&ov->lock);
	return rc;
}

int overlay_sync(struct overlay *ov, unsigned timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	int rc = 0;

	pthread_mutex_lock(&ov->lock);
	while (committed_pending(ov) && !ov->st.writeback_error && ov->wb_started) {
		uint64_t now = now_ns();

		if (now >= end) {
			rc = -ETIMEDOUT;
			goto out;
		}
		cond_wait_ns(&ov->cond, &ov->lock, end - now);
	}
	rc = ov->st.writeback_error;
	if (!rc && ov->dirty_since_sync) {
		ov->dirty_since_sync = false;
		if (fdatasync(ov->lower_fd) < 0)
			rc = -errno;
	}
out:
	pthread_mutex_unlock(&ov->lock);
	return rc;
}

/* ---- NBD ------------------------------------------------------------------ */

static int nbd_reply(int fd, const uint8_t *handle, uint32_t error, const void *data, uint32_t len)
{
	uint8_t rep[NBD_REP_SIZE];
	int rc;

	put32(rep, NBD_REP_MAGIC);
	put32(rep + 4, error);
	memcpy(rep + 8, handle, 8);
	if ((rc = full_io(fd, rep, sizeof(rep), true)))
		return rc;
	return len ? full_io(fd, (void *)data, len, true) : 0;
}

static void *serve_main(void *arg)
{
	struct overlay *ov = arg;
	int fd = ov->sock[1];
	uint8_t req[NBD_REQ_SIZE];
	uint8_t *buf = NULL;
	int rc;

	io_flusher("nbd serving");
	buf = malloc(OV_MAX_REQUEST);
	if (!buf) {
		log_error("overlay of %s: no memory for the request buffer", ov->vm);
		goto out;
	}
	for (;;) {
		uint32_t type, len, err = 0;
		uint64_t from;

		if ((rc = full_io(fd, req, sizeof(req), false)))
			break;		/* the kernel closed its side */
		if (get32(req) != NBD_REQ_MAGIC) {
			log_error("overlay of %s: bad NBD request magic", ov->vm);
			break;
		}
		type = get32(req + 4) & 0xffff;
		from = get64(req + 16);
		len = get32(req + 24);
		if (type == NBD_CMD_DISC)
			break;
		if ((type == NBD_CMD_READ || type == NBD_CMD_WRITE) && len > OV_MAX_REQUEST) {
			log_error("overlay of %s: NBD request of %u bytes", ov->vm, len);
			break;
		}
		switch (type) {
		case NBD_CMD_WRITE:
			if ((rc = full_io(fd, buf, len, false)))
				goto out;
			err = overlay_write(ov, from, buf, len) ? EIO : 0;
			rc = nbd_reply(fd, req + 8, err, NULL, 0);
			break;
		case NBD_CMD_READ:
			err = overlay_read(ov, from, buf, len) ? EIO : 0;
			rc = nbd_reply(fd, req + 8, err, buf, err ? 0 : len);
			break;
		case NBD_CMD_FLUSH:
			overlay_flush(ov);
			rc = nbd_reply(fd, req + 8, 0, NULL, 0);
			break;
		default:	/* TRIM, WRITE_ZEROES: not advertised */
			rc = nbd_reply(fd, req + 8, EINVAL, NULL, 0);
			break;
		}
		if (rc)
			break;
	}
out:
	shutdown(fd, SHUT_RDWR);	/* ends NBD_DO_IT */
	free(buf);
	return NULL;
}

static void *doit_main(void *arg)
{
	struct overlay *ov = arg;

	io_flusher("nbd");
	ov->doit_rc = ioctl(ov->nbd_fd, NBD_DO_IT) < 0 ? -errno : 0;
	return NULL;
}

static int nbd_start(struct overlay *ov, const char *path, char *err, size_t errlen)
{
	int rc;

	ov->nbd_fd = open(path, O_RDWR | O_CLOEXEC);
	if (ov->nbd_fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-rc));
		return rc;
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ov->sock) < 0) {
		rc = -errno;
		snprintf(err, errlen, "socketpair: %s", strerror(-rc));
		return rc;
	}
	ioctl(ov->nbd_fd, NBD_CLEAR_SOCK);
	if (ioctl(ov->nbd_fd, NBD_SET_BLKSIZE, (unsigned long)OVERLAY_BLOCK) < 0 ||
	    ioctl(ov->nbd_fd, NBD_SET_SIZE_BLOCKS, (unsigned long)(ov->size / OVERLAY_BLOCK)) < 0 ||
	    ioctl(ov->nbd_fd, NBD_SET_FLAGS, (unsigned long)(NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH)) < 0 ||
	    ioctl(ov->nbd_fd, NBD_SET_SOCK, (unsigned long)ov->sock[0]) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: NBD setup ioctl: %s (in use?)", path, strerror(-rc));
		return rc;
	}
	if ((rc = -pthread_create(&ov->serve_thread, NULL, serve_main, ov))) {
		snprintf(err, errlen, "cannot start the serving thread: %s", strerror(-rc));
		return rc;
	}
	if ((rc = -pthread_create(&ov->doit_thread, NULL, doit_main, ov))) {
		shutdown(ov->sock[1], SHUT_RDWR);
		pthread_join(ov->serve_thread, NULL);
		snprintf(err, errlen, "cannot start the NBD thread: %s", strerror(-rc));
		return rc;
	}
	ov->serving = true;
	return 0;
}

static void nbd_stop(struct overlay *ov)
{
	if (!ov->serving)
		return;
	ov->serving = false;
	/* The kernel sends NBD_CMD_DISC after what is queued; the serving
	 * thread then shuts the socket down and NBD_DO_IT returns. */
	if (ioctl(ov->nbd_fd, NBD_DISCONNECT) < 0)
		shutdown(ov->sock[1], SHUT_RDWR);
	pthread_join(ov->serve_thread, NULL);
	pthread_join(ov->doit_thread, NULL);
	ioctl(ov->nbd_fd, NBD_CLEAR_SOCK);
}

/* ---- open, activate, close ------------------------------------------------ */

int overlay_open(const struct overlay_opts *o, struct overlay **out, char *err, size_t errlen)
{
	struct overlay *ov = NULL;
	struct stat sb;
	uint64_t size = 0;
	int rc;

	*out = NULL;
	if (!o->lower || !o->vm || !o->vm[0] || strlen(o->vm) >= MARKER_VM_LEN) {
		snprintf(err, errlen, "overlay needs a lower device and a VM name (< %d characters)",
			 MARKER_VM_LEN);
		return -EINVAL;
	}
	ov = calloc(1, sizeof(*ov));
	if (!ov) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ov->lower_fd = ov->nbd_fd = ov->sock[0] = ov->sock[1] = -1;
	pthread_mutex_init(&ov->lock, NULL);
	pthread_cond_init(&ov->cond, NULL);
	snprintf(ov->vm, sizeof(ov->vm), "%s", o->vm);
	ov->limit = o->mem_limit ? o->mem_limit : OV_DEFAULT_LIMIT;
	ov->trace = o->trace;
	ov->trace_arg = o->trace_arg;
	ov->idx = calloc(OV_BUCKETS, sizeof(*ov->idx));
	if (!ov->idx) {
		rc = -ENOMEM;
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	ov->lower_fd = open(o->lower, O_RDWR | O_CLOEXEC);
	if (ov->lower_fd < 0 || fstat(ov->lower_fd, &sb) < 0) {
		rc = -errno;
		snprintf(err, errlen, "%s: %s", o->lower, strerror(-rc));
		goto out;
	}
	if (S_ISBLK(sb.st_mode)) {
		if (ioctl(ov->lower_fd, BLKGETSIZE64, &size) < 0) {
			rc = -errno;
			snprintf(err, errlen, "%s: BLKGETSIZE64: %s", o->lower, strerror(-rc));
			goto out;
		}
	} else if (S_ISREG(sb.st_mode)) {
		size = (uint64_t)sb.st_size;
	} else {
		rc = -ENOTBLK;
		snprintf(err, errlen, "%s: neither a block device nor a file", o->lower);
		goto out;
	}
	ov->size = size / OVERLAY_BLOCK * OVERLAY_BLOCK;
	if (ov->size < 2 * OVERLAY_BLOCK) {
		rc = -ENOSPC;
		snprintf(err, errlen, "%s: too small (%llu bytes)", o->lower, (unsigned long long)size);
		goto out;
	}
	ov->marker_off = ov->size - MARKER_SIZE;
	ov->st.size = ov->size;
	if (o->lock_memory && mlockall(MCL_CURRENT | MCL_FUTURE) < 0)
		log_warn("overlay of %s: mlockall refused (%s): held writes may be swapped out",
			 ov->vm, strerror(errno));
	if ((rc = -pthread_create(&ov->wb_thread, NULL, wb_main, ov))) {
		snprintf(err, errlen, "cannot start the write-back thread: %s", strerror(-rc));
		goto out;
	}
	ov->wb_started = true;
	if (o->nbd && (rc = nbd_start(ov, o->nbd, err, errlen)))
		goto out;
	log_info("overlay of %s: %s over %s, %llu bytes, memory limit %llu", ov->vm,
		 o->nbd ? o->nbd : "no device", o->lower, (unsigned long long)ov->size,
		 (unsigned long long)ov->limit);
	*out = ov;
	ov = NULL;
	rc = 0;
out:
	overlay_close(ov);
	return rc;
}

/* The end of serving, for activate and release: once only (-EALREADY);
 * stop the NBD device, refuse later writes and cuts (-ESHUTDOWN).
 * Returns 0 with the lock held. */
static int end_serving(struct overlay *ov)
{
	pthread_mutex_lock(&ov->lock);
	if (ov->st.activated) {
		pthread_mutex_unlock(&ov->lock);
		return -EALREADY;
	}
	pthread_mutex_unlock(&ov->lock);
	nbd_stop(ov);
	pthread_mutex_lock(&ov->lock);
	ov->st.activated = true;
	pthread_cond_broadcast(&ov->cond);
	return 0;
}

int overlay_activate(struct overlay *ov, overlay_discard_fn *discard, void *arg)
{
	int rc;

	if (end_serving(ov))
		return -EALREADY;
	while (committed_pending(ov) && !ov->st.writeback_error)
		pthread_cond_wait(&ov->cond, &ov->lock);
	rc = ov->st.writeback_error ? -EIO : 0;
	while (ov->head && !ov->writing_back) {
		struct ov_rec *r = pop_head(ov);

		if (r->len) {
			ov->st.discarded_writes++;
			ov->st.discarded_bytes += r->len;
		}
		if (discard)
			discard(arg, r->off, r->len, r->is_marker);
		free(r);
	}
	idx_clear(ov);
	if (!rc && fdatasync(ov->lower_fd) < 0)
		rc = -errno;
	log_info("overlay of %s activated: last committed checkpoint %llu%s, %llu writes "
		 "(%llu bytes) after it discarded", ov->vm,
		 (unsigned long long)ov->st.committed_epoch, ov->st.has_committed ? "" : " (none)",
		 (unsigned long long)ov->st.discarded_writes,
		 (unsigned long long)ov->st.discarded_bytes);
	pthread_mutex_unlock(&ov->lock);
	return rc;
}

int overlay_release(struct overlay *ov, unsigned timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull, held = 0;
	int rc = 0;

	if (end_serving(ov))
		return -EALREADY;
	if (ov->tail)
		held = commit_upto(ov, ov->tail->seq);
	while (committed_pending(ov) && !ov->st.writeback_error && !rc) {
		uint64_t now = now_ns();

		if (now >= end)
			rc = -ETIMEDOUT;
		else
			cond_wait_ns(&ov->cond, &ov->lock, end - now);
	}
	if (!rc && ov->st.writeback_error)
		rc = -EIO;
	if (!rc && fdatasync(ov->lower_fd) < 0)
		rc = -errno;
	log_info("overlay of %s released: %llu writes not committed to a checkpoint written back "
		 "with the rest%s", ov->vm, (unsigned long long)held,
		 rc ? "; the write-back did not finish" : "");
	pthread_mutex_unlock(&ov->lock);
	return rc;
}

void overlay_get_stats(struct overlay *ov, struct overlay_stats *st)
{
	pthread_mutex_lock(&ov->lock);
	*st = ov->st;
	st->lag_bytes = ov->lag_bytes;
	st->lag_writes = ov->lag_writes;
	st->spilled_bytes = 0;
	pthread_mutex_unlock(&ov->lock);
}

void overlay_close(struct overlay *ov)
{
	if (!ov)
		return;
	if (ov->serving)
		nbd_stop(ov);
	if (ov->wb_started) {
		pthread_mutex_lock(&ov->lock);
		ov->wb_stop = true;
		pthread_cond_broadcast(&ov->cond);
		pthread_mutex_unlock(&ov->lock);
		pthread_join(ov->wb_thread, NULL);
	}
	while (ov->head)
		free(pop_head(ov));
	if (ov->idx) {
		idx_clear(ov);
		free(ov->idx);
	}
	if (ov->nbd_fd >= 0)
		close(ov->nbd_fd);
	for (int i = 0; i < 2; i++)
		if (ov->sock[i] >= 0)
			close(ov->sock[i]);
	if (ov->lower_fd >= 0)
		close(ov->lower_fd);
	pthread_cond_destroy(&ov->cond);
	pthread_mutex_destroy(&ov->lock);
	free(ov);
}
