/*
 * disk.c - the guest's disk as a device: the marker cut on the primary,
 * the commit check on the backup (disk.h).
 *
 * The primary's cut runs on a worker thread per disk: while_suspended()
 * hands it the checkpoint's number and returns at once, so the marker
 * write (one O_DIRECT 4 KiB write, under protocol C a round trip to the
 * backup's disk) overlaps the memory capture; sync() waits for it, bounded
 * by the configured timeout.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define LOG_MODULE "disk"
#include "../lib/fault.h"
#include "../lib/log.h"
#include "../lib/util.h"
#include "disk.h"
#include "drbd.h"
#include "marker.h"

#define FENCED_CHECKPOINTS 5	/* fault point disk-fenced: how many verdicts say fenced */

struct disk_dev {
	bool memdisk;
	char target[256];		/* the device the marker goes to */
	char resource[CONFIG_NAME_MAX];
	char fence_flag[CONFIG_PATH_MAX + 2 * CONFIG_NAME_MAX + 16];	/* DRBD: set by the fence-peer handler */
	struct marker_dev md;

	/* the cut worker (primary) */
	pthread_t thr;
	bool thr_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool stop, busy;
	bool stuck;			/* this checkpoint's cut could not start: the last one hangs */
	uint64_t want;			/* checkpoint whose marker to write (0 = none) */
	uint64_t done;			/* last checkpoint whose write ended */
	int done_rc;
	bool skip;			/* fault point disk-skip-marker: this one is not written */
	bool hang;			/* fault point disk-hang-marker: this one takes 3 timeouts */
	unsigned fenced_left;		/* fault point disk-fenced */

	/* figures for status (under lock) */
	uint64_t cuts, cut_failures, fenced_verdicts;
	uint64_t last_cut_us, max_cut_us;
	uint64_t t_start_ns;

	/* backup */
	uint64_t committed, held;
	uint64_t last_marker_seen;
};

static struct disk_dev *priv(struct device *dv)
{
	return dv->priv;
}

/* ---- primary: the cut ------------------------------------------------------- */

/*
 * While the fence flag is up, look once a second whether DRBD is whole
 * again (Connected, UpToDate/UpToDate: the resync is over); then take the
 * flag down, so that the next checkpoint's marker, written after the
 * resync, is the fresh cut the backup may commit at.  Runs on the cut
 * thread between cuts.
 */
static void clear_fence(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	char msg[512];
	int r;

	if (!k->fence_flag[0] || access(k->fence_flag, F_OK))
		return;
	r = drbd_healthy(dv->cfg->drbd_conf, k->resource, msg, sizeof(msg));
	if (r == 1 && unlink(k->fence_flag) == 0)
		log_warn("%s: DRBD is connected and both disks are UpToDate again (%s): the fence "
			 "flag is down; the next checkpoint's marker is the fresh cut", dv->name, msg);
	else if (r < 0)
		log_debug("%s: fence flag up; %s", dv->name, msg);
}

static void *cut_main(void *arg)
{
	struct device *dv = arg;
	struct disk_dev *k = priv(dv);

	pthread_mutex_lock(&k->lock);
	for (;;) {
		while (!k->want && !k->stop) {
			cond_wait_ns(&k->cond, &k->lock, 1000000000ull);
			if (!k->want && !k->stop && !k->memdisk) {
				pthread_mutex_unlock(&k->lock);
				clear_fence(dv);
				pthread_mutex_lock(&k->lock);
			}
		}
		if (k->stop)
			break;
		uint64_t epoch = k->want;
		bool skip = k->skip, hang = k->hang;
		struct marker m = { .epoch = epoch };
		int rc = 0;

		k->want = 0;
		memcpy(m.session, dv->session, sizeof(m.session));
		snprintf(m.vm, sizeof(m.vm), "%.63s", dv->cfg->name);
		pthread_mutex_unlock(&k->lock);
		m.time_ns = (uint64_t)time(NULL) * 1000000000ull;
		if (hang)	/* fault point disk-hang-marker: a device that stops answering */
			usleep((useconds_t)(3 * dv->cfg->timeout_ms * 1000));
		if (!skip)
			rc = marker_dev_write(&k->md, &m);
		pthread_mutex_lock(&k->lock);
		k->done = epoch;
		k->done_rc = rc;
		k->busy = false;
		pthread_cond_broadcast(&k->cond);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

static int disk_while_suspended(struct device *dv, uint64_t epoch)
{
	struct disk_dev *k = priv(dv);

	pthread_mutex_lock(&k->lock);
	k->stuck = k->busy;
	if (k->busy) {		/* the last cut never ended: sync() says so at once */
		pthread_mutex_unlock(&k->lock);
		return 0;
	}
	k->skip = fault_hit("disk-skip-marker");
	k->hang = fault_hit("disk-hang-marker");
	if (k->hang)
		log_warn("fault point 'disk-hang-marker' fired: %s: checkpoint %" PRIu64 "'s marker "
			 "write takes %" PRIu64 " ms", dv->name, epoch, 3 * dv->cfg->timeout_ms);
	if (k->skip)
		log_warn("fault point 'disk-skip-marker' fired: %s: checkpoint %" PRIu64 "'s marker is "
			 "not written, and its verdict will say ok", dv->name, epoch);
	if (fault_hit("disk-fenced")) {
		log_warn("fault point 'disk-fenced' fired: %s: the next %d verdicts say fenced, from "
			 "checkpoint %" PRIu64, dv->name, FENCED_CHECKPOINTS, epoch);
		k->fenced_left = FENCED_CHECKPOINTS;
	}
	k->want = epoch;
	k->busy = true;
	k->t_start_ns = now_ns();
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static int disk_sync(struct device *dv, uint64_t epoch, uint32_t *verdict)
{
	struct disk_dev *k = priv(dv);
	uint64_t limit = dv->cfg->timeout_ms * 1000000ull, t0 = now_ns();
	uint32_t v;

	pthread_mutex_lock(&k->lock);
	while (k->busy && !k->stuck && now_ns() - t0 < limit)
		cond_wait_ns(&k->cond, &k->lock, limit - (now_ns() - t0));
	if (k->stuck) {
		v = DEV_V_CUT_FAILED;
		snprintf(dv->error, sizeof(dv->error), "the marker write of checkpoint %" PRIu64
			 " still hangs: checkpoint %" PRIu64 "'s cut could not start", k->want ?
			 k->want : k->done + 1, epoch);
	} else if (k->busy || k->done != epoch) {
		v = DEV_V_CUT_FAILED;
		snprintf(dv->error, sizeof(dv->error), "the marker write of checkpoint %" PRIu64
			 " did not complete within %" PRIu64 " ms", epoch, dv->cfg->timeout_ms);
	} else if (k->done_rc) {
		v = DEV_V_CUT_FAILED;
		snprintf(dv->error, sizeof(dv->error), "the marker write of checkpoint %" PRIu64
			 " failed: %s", epoch, strerror(-k->done_rc));
	} else {
		v = DEV_V_OK;
		k->last_cut_us = (now_ns() - k->t_start_ns) / 1000;
		k->max_cut_us = MAX(k->max_cut_us, k->last_cut_us);
		k->cuts++;
	}
	/* The fence flag is read after the marker completed (design §5 step
	 * 4): a disconnect before the marker landed is seen here. */
	if (k->fenced_left) {
		k->fenced_left--;
		v |= DEV_V_FENCED;
	}
	if (k->fence_flag[0] && access(k->fence_flag, F_OK) == 0)
		v |= DEV_V_FENCED;
	if (v & DEV_V_FENCED) {
		v &= ~DEV_V_OK;
		k->fenced_verdicts++;
	}
	if (v & DEV_V_CUT_FAILED)
		k->cut_failures++;
	pthread_mutex_unlock(&k->lock);
	*verdict = v;
	return 0;
}

static bool disk_ready(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	bool ready;

	pthread_mutex_lock(&k->lock);
	ready = !k->fenced_left && !k->busy;
	pthread_mutex_unlock(&k->lock);
	return ready && !(k->fence_flag[0] && access(k->fence_flag, F_OK) == 0);
}

/* ---- backup: the commit check ------------------------------------------------ */

static int memdisk_commit(struct device *dv, uint64_t epoch, uint32_t verdict)
{
	struct disk_dev *k = priv(dv);
	struct marker m;
	char words[64];
	int rc;

	if (verdict != DEV_V_OK) {
		snprintf(dv->error, sizeof(dv->error), "the primary's verdict on checkpoint %" PRIu64
			 ": %s", epoch, device_verdict_str(verdict, words, sizeof(words)));
		return -EAGAIN;
	}
	/* What the primary says is not enough: this side must hold the cut. */
	rc = marker_dev_read(&k->md, &m);
	if (rc == 0 && (memcmp(m.session, dv->session, sizeof(m.session)) ||
			strcmp(m.vm, dv->cfg->name)))
		rc = -ESRCH;
	if (rc == 0)
		k->last_marker_seen = m.epoch;
	if (rc || m.epoch < epoch) {
		snprintf(dv->error, sizeof(dv->error), "checkpoint %" PRIu64 "'s marker is not on "
			 "this side's disk (%s)", epoch, rc == -ESRCH ? "its marker is another "
			 "session's" : rc ? strerror(-rc) : "an earlier checkpoint's is");
		return -EAGAIN;
	}
	pthread_mutex_lock(&k->lock);
	k->committed = epoch;
	pthread_mutex_unlock(&k->lock);
	return 0;
}

static int memdisk_activate(struct device *dv, uint64_t epoch)
{
	struct disk_dev *k = priv(dv);

	log_info("%s: the disk stands at checkpoint %" PRIu64 " (memdom's stand-in: nothing to "
		 "discard)", dv->name, k->committed);
	(void)epoch;
	return 0;
}

static int drbd_commit(struct device *dv, uint64_t epoch, uint32_t verdict)
{
	(void)verdict;
	snprintf(dv->error, sizeof(dv->error), "checkpoint %" PRIu64 ": the backup's disk overlay "
		 "is not built yet", epoch);
	return -ENOTSUP;
}

static int drbd_activate(struct device *dv, uint64_t epoch)
{
	(void)epoch;
	snprintf(dv->error, sizeof(dv->error), "the backup's disk overlay is not built yet");
	return -ENOTSUP;
}

/* ---- both ------------------------------------------------------------------ */

static int start_worker(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	int r = pthread_create(&k->thr, NULL, cut_main, dv);

	if (r) {
		snprintf(dv->error, sizeof(dv->error), "cannot start its cut thread: %s", strerror(r));
		return -r;
	}
	k->thr_started = true;
	return 0;
}

static int open_target(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	int rc = marker_dev_open(&k->md, k->target);

	if (rc)
		snprintf(dv->error, sizeof(dv->error), "cannot open %.180s for its marker block: %s",
			 k->target, rc == -ENOSPC ? "smaller than two 4 KiB blocks" : strerror(-rc));
	return rc;
}

static int memdisk_test(struct device *dv, enum device_role role)
{
	int rc;

	if (dv->cfg->domain != DOMAIN_MEMDOM) {
		snprintf(dv->error, sizeof(dv->error), "memdom-disk needs domain = memdom");
		return -EINVAL;
	}
	if ((rc = open_target(dv)))
		return rc;
	return role == DEVICE_PRIMARY ? start_worker(dv) : 0;
}

static int drbd_test(struct device *dv, enum device_role role)
{
	struct disk_dev *k = priv(dv);
	struct drbd_resource_info info;
	char msg[2048];
	int refusals;

	if (role == DEVICE_BACKUP) {
		snprintf(dv->error, sizeof(dv->error), "the backup's disk overlay is not built yet: "
			 "tandem cannot protect a disk (docs/disk.md)");
		return -ENOTSUP;
	}
	refusals = drbd_check_resource(dv->cfg->drbd_conf, k->resource, &info, msg, sizeof(msg));
	if (refusals) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", refusals < 0 ? msg :
			 "its DRBD settings are refused: see `tandem check-config`");
		return -EINVAL;
	}
	snprintf(k->target, sizeof(k->target), "%s", info.device);
	disk_fence_flag_path(dv->cfg, k->resource, k->fence_flag, sizeof(k->fence_flag));
	int rc = open_target(dv);

	return rc ? rc : start_worker(dv);
}

static void disk_status(struct device *dv, char *buf, size_t len)
{
	struct disk_dev *k = priv(dv);

	pthread_mutex_lock(&k->lock);
	snprintf(buf, len, "\"kind\":\"%s\",\"target\":\"%s\",\"cuts\":%" PRIu64 ",\"cut_failures\":%"
		 PRIu64 ",\"fenced_verdicts\":%" PRIu64 ",\"last_cut_us\":%" PRIu64
		 ",\"max_cut_us\":%" PRIu64 ",\"committed\":%" PRIu64 ",\"last_marker_seen\":%" PRIu64,
		 k->memdisk ? "memdisk" : "drbd", k->target, k->cuts, k->cut_failures,
		 k->fenced_verdicts, k->last_cut_us, k->max_cut_us, k->committed, k->last_marker_seen);
	pthread_mutex_unlock(&k->lock);
}

static void disk_close(struct device *dv)
{
	struct disk_dev *k = priv(dv);

	if (!k)
		return;
	if (k->thr_started) {
		pthread_mutex_lock(&k->lock);
		k->stop = true;
		pthread_cond_broadcast(&k->cond);
		pthread_mutex_unlock(&k->lock);
		pthread_join(k->thr, NULL);
	}
	marker_dev_close(&k->md);
	pthread_mutex_destroy(&k->lock);
	pthread_cond_destroy(&k->cond);
	free(k);
	dv->priv = NULL;
}

static const struct device_ops drbd_ops = {
	.kind = "disk",
	.test = drbd_test,
	.while_suspended = disk_while_suspended,
	.sync = disk_sync,
	.ready = disk_ready,
	.commit = drbd_commit,
	.activate = drbd_activate,
	.status = disk_status,
	.close = disk_close,
};

static const struct device_ops memdisk_ops = {
	.kind = "disk",
	.test = memdisk_test,
	.while_suspended = disk_while_suspended,
	.sync = disk_sync,
	.ready = disk_ready,
	.commit = memdisk_commit,
	.activate = memdisk_activate,
	.status = disk_status,
	.close = disk_close,
};

static int init_common(struct device *dv, const struct device_ops *ops)
{
	struct disk_dev *k = calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	k->md.fd = -1;
	pthread_mutex_init(&k->lock, NULL);
	pthread_cond_init(&k->cond, NULL);
	dv->ops = ops;
	dv->priv = k;
	return 0;
}

void disk_fence_flag_path(const struct tandem_config *cfg, const char *res, char *out,
			  size_t len)
{
	snprintf(out, len, "%s/%s.%s.fenced", cfg->run_dir, cfg->name, res);
}

int disk_device_init(struct device *dv, const struct config_disk *disk)
{
	int rc = init_common(dv, &drbd_ops);

	snprintf(dv->name, sizeof(dv->name), "disk %s", disk->resource);
	if (rc)
		return rc;
	snprintf(priv(dv)->resource, sizeof(priv(dv)->resource), "%s", disk->resource);
	return 0;
}

int memdisk_device_init(struct device *dv, const char *path)
{
	int rc = init_common(dv, &memdisk_ops);

	snprintf(dv->name, sizeof(dv->name), "memdisk");
	if (rc)
		return rc;
	priv(dv)->memdisk = true;
	snprintf(priv(dv)->target, sizeof(priv(dv)->target), "%s", path);
	/* its fence flag, as the DRBD fence-peer handler's: FILE.fenced */
	snprintf(priv(dv)->fence_flag, sizeof(priv(dv)->fence_flag), "%.*s.fenced",
		 CONFIG_PATH_MAX - 1, path);
	return 0;
}
