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
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define LOG_MODULE "disk"
#include "../lib/fault.h"
#include "../lib/log.h"
#include "../lib/testlog.h"
#include "../lib/util.h"
#include "disk.h"
#include "dm.h"
#include "drbd.h"
#include "marker.h"
#include "overlay.h"

#define FENCED_CHECKPOINTS 5	/* fault point disk-fenced: how many verdicts say fenced */
#define BACKUP_HOLDS 8		/* fault point disk-backup-holds: how many the backup holds */
#define MARKER_WAIT_MS 500	/* backup: how long a commit waits for its marker */
#define RELEASE_TIMEOUT_MS 60000	/* backup: writing back what the overlay holds at the end */
#define CONNECT_FIRST_NS 3000000000ull	/* a StandAlone resource: the first wait to connect */
#define CONNECT_MAX_NS 60000000000ull	/* ... doubling up to this */

struct disk_dev {
	bool memdisk;
	char target[256];		/* the device the marker goes to */
	char resource[CONFIG_NAME_MAX];
	char guest[CONFIG_PATH_MAX];	/* DRBD: the guest's device (`disks` RESOURCE:DEVICE) */
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
	unsigned backup_holds_left;	/* fault point disk-backup-holds */

	/* figures for status (under lock) */
	uint64_t cuts, cut_failures, fenced_verdicts;
	uint64_t last_cut_us, max_cut_us;
	uint64_t t_start_ns;

	/* backup */
	uint64_t committed, held;
	uint64_t last_marker_seen;

	/* backup, DRBD: the overlay under the secondary (docs/disk.md) */
	struct overlay *ov;
	char lower_dm[DRBD_DEVICE_MAX];	/* /dev/mapper/tdm-NAME-lower */
	struct dm_linear real;		/* its table over the real disk */
	char real_path[64];		/* the real disk (/dev/...) */
	char nbd[32];			/* the overlay's /dev/nbdK */
	char state_path[CONFIG_PATH_MAX + 2 * CONFIG_NAME_MAX + 16];	/* RUN_DIR/NAME.RES.lower */
	bool switched;			/* the dm table points at the overlay */
	bool activated;
	bool healthy;			/* DRBD: Connected, UpToDate/UpToDate (the poller) */
	bool need_invalidate;		/* a full resync of this side is still to start */
	bool need_attach;		/* after an overflow: DRBD is to take this disk back */
	bool ignore_health;		/* fault point disk-ignore-health */
	uint64_t attach_ns;		/* the last attach tried */
	pthread_mutex_t ops_lock;	/* the watch's detach/attach vs. activation */
	unsigned diverged;		/* times told the guest ran elsewhere (diverged()) */

	/* DRBD, both roles: until it is first whole, tandem connects a
	 * StandAlone resource (a split brain left it so); after that a
	 * StandAlone resource is the operator's doing and is left alone */
	bool whole_seen;
	bool invalidated;		/* backup: tandem had this side resynced in full */
	uint64_t connect_ns;		/* the last connect tried */
	uint64_t connect_wait_ns;	/* until the next (doubles) */
	char health[256];
	bool fresh_has;			/* the last marker seen when DRBD became whole: */
	uint64_t fresh_epoch;		/* checkpoints up to it may not commit */
	uint8_t fresh_session[MARKER_SESSION_LEN];
};

static struct disk_dev *priv(struct device *dv)
{
	return dv->priv;
}

/*
 * DRBD never connects a StandAlone resource by itself: a split brain (every
 * after-sb-* is disconnect) or `drbdadm disconnect` leaves it so.  While
 * protection starts (DRBD not yet whole since this device opened), tandem
 * connects it: after a failover both sides stand alone, and the returning
 * side's full resync (its invalidate) can only begin once both connect.
 * Each try that meets a peer still split from this one is another split
 * brain DRBD reports (and its handlers run), so the tries come 3 s apart,
 * then 6, 12 ... up to a minute.  The backup tries only once tandem had
 * its side invalidated (before, it would meet the primary as a split
 * brain again).  Later a StandAlone resource is the operator's and stays
 * as it is.  Called by one thread at a time.
 */
static void connect_standalone(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	struct drbd_state st;
	char msg[512];
	bool whole_seen;

	pthread_mutex_lock(&k->lock);
	whole_seen = k->whole_seen;
	pthread_mutex_unlock(&k->lock);
	if (whole_seen || (k->connect_ns && now_ns() - k->connect_ns < k->connect_wait_ns))
		return;
	if (drbd_state(dv->cfg->drbd_conf, k->resource, k->target, DRBD_CS, &st, msg,
		       sizeof(msg)) || strcmp(st.cs, "StandAlone"))
		return;
	k->connect_wait_ns = !k->connect_ns ? CONNECT_FIRST_NS :
			     MIN(2 * k->connect_wait_ns, CONNECT_MAX_NS);
	k->connect_ns = now_ns();
	if (drbd_adm(dv->cfg->drbd_conf, "connect", NULL, k->resource, msg, sizeof(msg)))
		log_warn("%s: DRBD resource %s stands alone and would not connect: %s", dv->name,
			 k->resource, msg);
	else
		log_warn("%s: DRBD resource %s stood alone (a split brain or a disconnect): "
			 "connecting it to its peer, as protection starts", dv->name, k->resource);
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
	connect_standalone(dv);
	r = drbd_healthy(dv->cfg->drbd_conf, k->resource, k->target, msg, sizeof(msg));
	if (r == 1) {
		pthread_mutex_lock(&k->lock);
		k->whole_seen = true;
		pthread_mutex_unlock(&k->lock);
	}
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
	if (k->backup_holds_left || fault_hit("disk-backup-holds")) {
		if (!k->backup_holds_left) {
			k->backup_holds_left = BACKUP_HOLDS;
			log_warn("fault point 'disk-backup-holds' fired: %s: this side refuses %d "
				 "checkpoints from %" PRIu64, dv->name, BACKUP_HOLDS, epoch);
		}
		k->backup_holds_left--;
		snprintf(dv->error, sizeof(dv->error), "this side's disk is not whole (fault point "
			 "disk-backup-holds)");
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

/*
 * The overlay overflowed (disk-overlay-limit): writes to it fail, so DRBD
 * detaches this disk (on-io-error detach; by hand when it has not), and
 * the last committed checkpoint's disk cannot be kept here any more.  The
 * way back without a restart: the overlay writes through (what it held,
 * which DRBD saw complete, goes to the disk, then everything after in
 * order), DRBD attaches the disk again and resyncs from the primary what
 * it missed while detached, and the watch lets the overlay hold writes
 * again at the first marker after DRBD is whole.  Until then nothing
 * commits.  Called by the watch, with ops_lock held.
 */
static void recover_overflow(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	const char *conf = dv->cfg->drbd_conf;
	struct overlay_stats st;
	struct drbd_state ds;
	char msg[512], lim[32];
	uint64_t n;

	overlay_get_stats(k->ov, &st);
	if (st.overflowed) {
		if (drbd_state(conf, k->resource, k->target, DRBD_DS, &ds, msg, sizeof(msg)))
			return;		/* look again in a second */
		if (!strncmp(ds.ds, "Failed", 6))
			return;		/* detaching */
		if (strncmp(ds.ds, "Diskless", 8) &&
		    drbd_adm(conf, "detach", NULL, k->resource, msg, sizeof(msg))) {
			log_warn("%s: the overlay overflowed and DRBD would not let this disk go "
				 "(%.200s); trying again", dv->name, msg);
			return;
		}
		n = overlay_through(k->ov);
		pthread_mutex_lock(&k->lock);
		k->need_attach = true;
		k->attach_ns = 0;
		if (k->healthy)
			testlog("disk-unwhole");
		k->healthy = false;
		pthread_mutex_unlock(&k->lock);
		log_warn("%s: the overlay overflowed (disk-overlay-limit %s): this side no longer "
			 "holds checkpoint %" PRIu64 "'s disk; the %" PRIu64 " writes it held past "
			 "that checkpoint go to the disk, and DRBD is to attach it again and resync "
			 "what it missed; no checkpoint commits until DRBD is whole and a fresh marker "
			 "came", dv->name, fmt_size(dv->cfg->disk_overlay_limit, lim, sizeof(lim)),
			 st.committed_epoch, n);
	}
	if (!k->need_attach || (k->attach_ns && now_ns() - k->attach_ns < 5000000000ull))
		return;
	k->attach_ns = now_ns();
	if (drbd_adm(conf, "attach", NULL, k->resource, msg, sizeof(msg))) {
		log_warn("%s: DRBD would not attach this disk again (%.200s); trying again in 5 s",
			 dv->name, msg);
		return;
	}
	pthread_mutex_lock(&k->lock);
	k->need_attach = false;
	pthread_mutex_unlock(&k->lock);
	log_warn("%s: DRBD resource %s has this disk again and resyncs it from the primary",
		 dv->name, k->resource);
}

/*
 * The backup's view of DRBD, once a second: whole (Connected,
 * UpToDate/UpToDate) or not.  When it becomes whole, the last marker seen
 * so far came before (or during) the resync: only later markers cut the
 * stream, so checkpoints up to it may not commit.
 */
static void *health_main(void *arg)
{
	struct device *dv = arg;
	struct disk_dev *k = priv(dv);
	char msg[256];

	pthread_mutex_lock(&k->lock);
	while (!k->stop) {
		bool inval = k->need_invalidate, did_inval = false;

		pthread_mutex_unlock(&k->lock);
		pthread_mutex_lock(&k->ops_lock);
		if (!k->activated) {
			/* a full resync leaves no checkpoint here to keep: its
			 * writes go through rather than fill the overlay */
			if (inval)
				overlay_through(k->ov);
			if (inval && !drbd_adm(dv->cfg->drbd_conf, "invalidate", NULL, k->resource,
					       msg, sizeof(msg))) {
				log_warn("%s: DRBD resource %s resyncs this disk from the primary "
					 "(drbdadm invalidate); checkpoints are held until it is whole",
					 dv->name, k->resource);
				inval = false;
				did_inval = true;
			}
			recover_overflow(dv);
		}
		pthread_mutex_unlock(&k->ops_lock);
		if (!inval && (did_inval || k->invalidated))	/* never before: it would meet the
						 * primary as a split brain again */
			connect_standalone(dv);
		int r = drbd_healthy(dv->cfg->drbd_conf, k->resource, k->target, msg, sizeof(msg));
		struct overlay_stats st;

		if (inval && r == 1) {
			r = 0;	/* whole as DRBD sees it, not as the lost writes are */
			snprintf(msg, sizeof(msg), "waiting to resync this disk in full");
		} else if (did_inval && r == 1) {
			r = 0;	/* the resync just asked for: judge it at the next look */
			snprintf(msg, sizeof(msg), "its full resync was just asked for");
		}

		overlay_get_stats(k->ov, &st);
		/* writing through (a resync): DRBD whole now, so the next marker
		 * cuts the stream, and the overlay holds writes again from it */
		if (r == 1 && st.through)
			overlay_arm(k->ov);
		else if (r != 1 && st.armed)
			overlay_through(k->ov);
		pthread_mutex_lock(&k->lock);
		if (r == 1 && !k->healthy) {
			k->fresh_has = st.has_marker;
			k->fresh_epoch = st.marker_epoch;
			memcpy(k->fresh_session, st.marker_session, sizeof(k->fresh_session));
			log_info("%s: DRBD is whole here (%s): checkpoints whose marker comes after "
				 "checkpoint %" PRIu64 "'s may commit", dv->name, msg,
				 st.has_marker ? st.marker_epoch : 0);
			/* (under the lock a commit reads healthy with: before any
			 * commit it lets) */
			testlog("disk-whole %" PRIu64, st.has_marker ? st.marker_epoch : 0);
		} else if (r != 1 && k->healthy) {
			log_warn("%s: DRBD is not whole here (%s): no checkpoint commits until it is "
				 "and a fresh marker came", dv->name, msg);
			testlog("disk-unwhole");
		}
		if (did_inval) {	/* (diverged() may have asked again meanwhile) */
			k->need_invalidate = false;
			k->invalidated = true;
		}
		k->healthy = r == 1;
		if (r == 1)
			k->whole_seen = true;
		for (char *q = msg; *q; q++)	/* it goes into status JSON */
			if (*q == '"' || *q == '\\' || (unsigned char)*q < 0x20)
				*q = '\'';
		snprintf(k->health, sizeof(k->health), "%s", msg);
		if (!k->stop)
			cond_wait_ns(&k->cond, &k->lock, 1000000000ull);
	}
	pthread_mutex_unlock(&k->lock);
	return NULL;
}

/* Whether checkpoint `epoch` may commit on this side's DRBD state (lock
 * held); if not, why in dv->error. */
static bool drbd_may_commit(struct device *dv, uint64_t epoch)
{
	struct disk_dev *k = priv(dv);
	bool healthy, stale;

	healthy = k->healthy || k->ignore_health;
	stale = !k->ignore_health && k->fresh_has &&
		!memcmp(k->fresh_session, dv->session, MARKER_SESSION_LEN) &&
		epoch <= k->fresh_epoch;
	if (!healthy)
		snprintf(dv->error, sizeof(dv->error), "DRBD is not whole on this side (%.200s)",
			 k->health[0] ? k->health : "not asked yet");
	else if (stale)
		snprintf(dv->error, sizeof(dv->error), "checkpoint %" PRIu64 "'s marker came before "
			 "DRBD was whole here (the first fresh one is after %" PRIu64 ")", epoch,
			 k->fresh_epoch);
	return healthy && !stale;
}

static int drbd_commit(struct device *dv, uint64_t epoch, uint32_t verdict)
{
	struct disk_dev *k = priv(dv);
	char words[64];
	bool ok;
	int rc;

	if (verdict != DEV_V_OK) {
		snprintf(dv->error, sizeof(dv->error), "the primary's verdict on checkpoint %" PRIu64
			 ": %s", epoch, device_verdict_str(verdict, words, sizeof(words)));
		return -EAGAIN;
	}
	pthread_mutex_lock(&k->lock);
	if (!k->ignore_health && fault_hit("disk-ignore-health")) {
		k->ignore_health = true;
		log_warn("fault point 'disk-ignore-health' fired: %s: commits no longer wait for "
			 "DRBD to be whole here and a fresh marker", dv->name);
	}
	ok = drbd_may_commit(dv, epoch);
	pthread_mutex_unlock(&k->lock);
	if (!ok)
		return -EAGAIN;
	/* Under protocol C, M(N) was on this side before the primary's marker
	 * write completed, before its guest resumed: it is here already. */
	rc = overlay_wait_marker(k->ov, dv->session, epoch, MARKER_WAIT_MS);
	/* The watch may have found DRBD not whole meanwhile: judge again, and
	 * commit under the same lock it changes that under (its word and the
	 * commit are then in one order, for the log and for tests). */
	pthread_mutex_lock(&k->lock);
	if (rc == 0 && !drbd_may_commit(dv, epoch)) {
		pthread_mutex_unlock(&k->lock);
		return -EAGAIN;
	}
	if (rc == 0)
		rc = overlay_commit(k->ov, dv->session, epoch);
	if (rc == 0) {
		k->committed = epoch;
		k->last_marker_seen = epoch;
	}
	pthread_mutex_unlock(&k->lock);
	if (rc) {
		snprintf(dv->error, sizeof(dv->error), "checkpoint %" PRIu64 "'s marker %s", epoch,
			 rc == -ETIMEDOUT ? "has not reached this side's overlay" :
			 rc == -ENOSPC ? "came after the overlay overflowed (disk-overlay-limit): the "
			 "disk is resynced before a checkpoint commits again" :
			 rc == -EBUSY ? "came while DRBD resyncs this disk (the overlay writes "
			 "through): nothing commits until DRBD is whole and the next marker came" :
			 rc == -ESTALE ? "came before the one at which the overlay held writes "
			 "again: the disk is past it" : strerror(-rc));
		return -EAGAIN;
	}
	return 0;
}

/* What activation discards, for the log: ranges of blocks. */
struct discards {
	const char *name;
	uint64_t n, bytes, logged;
};

static void log_discard(void *arg, uint64_t off, uint32_t len, bool is_marker)
{
	struct discards *d = arg;

	if (!len)
		return;
	d->n++;
	d->bytes += len;
	if (d->logged++ < 16)
		log_info("%s: discarded a write the guest issued after the checkpoint: %u bytes at "
			 "%" PRIu64 "%s", d->name, len, off, is_marker ? " (a later marker)" : "");
	else
		log_debug("%s: discarded %u bytes at %" PRIu64, d->name, len, off);
}

/* This side's disk lacks writes DRBD saw complete: make it a full resync
 * target (and not promotable as it is).  Logged either way. */
static void invalidate_now(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	char msg[512];

	if (drbd_adm(dv->cfg->drbd_conf, "invalidate", NULL, k->resource, msg, sizeof(msg)))
		log_error("%s: %s: run `drbdadm invalidate %s` here before this disk is used",
			  dv->name, msg, k->resource);
	else
		log_warn("%s: DRBD resource %s marked for a full resync from its peer (drbdadm "
			 "invalidate)", dv->name, k->resource);
}

/*
 * The guest's device, /dev/mapper/tdm-NAME-guest: dm-linear over
 * /dev/drbdN without its last 4 KiB (the marker block).  It can exist
 * only where DRBD is Primary (DRBD 8.4 refuses to open a Secondary), so
 * the host that runs the guest has it: the backup creates it when it
 * activates, after the promotion, and removes it when it steps its DRBD
 * down again (a switchover, or a returning old primary's host whose
 * guest is gone).  Its table over DRBD as it must be: 0, or -errno.
 */
static int guest_table(struct device *dv, struct dm_linear *t)
{
	struct disk_dev *k = priv(dv);
	struct stat st;
	uint64_t bytes = 0;
	int fd, rc = 0;

	if (stat(k->target, &st) || !S_ISBLK(st.st_mode))
		return -ENODEV;
	t->major = major(st.st_rdev);
	t->minor = minor(st.st_rdev);
	t->offset = 0;
	if ((fd = open(k->target, O_RDONLY | O_CLOEXEC)) < 0)
		return -errno;
	if (ioctl(fd, BLKGETSIZE64, &bytes))
		rc = -errno;
	close(fd);
	if (rc)
		return rc;
	if (bytes < 2 * MARKER_SIZE)
		return -ENOSPC;
	t->sectors = (bytes - MARKER_SIZE) / 512;
	return 0;
}

static bool is_mapper(const char *path)
{
	return !strncmp(path, "/dev/mapper/", 12);
}

/* After the promotion: the guest's device exists, over this DRBD. */
static int guest_device_up(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	struct dm_linear want, cur;
	char msg[512];
	int rc;

	if (!k->guest[0])
		return 0;
	if (!is_mapper(k->guest)) {	/* not ours to make: it must be there */
		if (access(k->guest, F_OK)) {
			snprintf(dv->error, sizeof(dv->error), "the guest's device %.200s: %s",
				 k->guest, strerror(errno));
			return -errno;
		}
		return 0;
	}
	if ((rc = guest_table(dv, &want))) {
		snprintf(dv->error, sizeof(dv->error), "cannot read the size of %.100s for the "
			 "guest's device %.100s: %s", k->target, k->guest, strerror(-rc));
		return rc;
	}
	if (access(k->guest, F_OK) == 0) {
		if ((rc = dm_linear_get(k->guest, &cur, msg, sizeof(msg)))) {
			snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
			return rc;
		}
		if (cur.major != want.major || cur.minor != want.minor || cur.offset ||
		    cur.sectors != want.sectors) {
			snprintf(dv->error, sizeof(dv->error), "the guest's device %.120s is not "
				 "%.60s without its marker block (its table: 0 %" PRIu64 " linear "
				 "%u:%u %" PRIu64 "; expected 0 %" PRIu64 " linear %u:%u 0)", k->guest,
				 k->target, cur.sectors, cur.major, cur.minor, cur.offset,
				 want.sectors, want.major, want.minor);
			return -EINVAL;
		}
		return 0;
	}
	if ((rc = dm_linear_create(k->guest, &want, msg, sizeof(msg)))) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
		return rc;
	}
	for (int i = 0; i < 50 && access(k->guest, F_OK); i++)	/* udev makes the node */
		usleep(100000);
	if (access(k->guest, F_OK)) {
		snprintf(dv->error, sizeof(dv->error), "created %.200s, but its node did not appear",
			 k->guest);
		return -ENOENT;
	}
	log_info("%s: the guest's device %s created (%s without its marker block)", dv->name,
		 k->guest, k->target);
	return 0;
}

/* Before DRBD steps down: remove the guest's device if it is ours (over
 * this DRBD) and nothing holds it open (dmsetup refuses otherwise, and
 * the step down fails as it would have). */
static void guest_device_down(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	struct dm_linear want, cur;
	struct stat st;
	char msg[512];

	if (!k->guest[0] || !is_mapper(k->guest) || access(k->guest, F_OK))
		return;
	if (stat(k->target, &st) || !S_ISBLK(st.st_mode))
		return;
	want.major = major(st.st_rdev);
	want.minor = minor(st.st_rdev);
	if (dm_linear_get(k->guest, &cur, msg, sizeof(msg)) || cur.major != want.major ||
	    cur.minor != want.minor)
		return;
	if (dm_remove(k->guest, msg, sizeof(msg)))
		log_warn("%s: %s", dv->name, msg);
	else
		log_info("%s: the guest's device %s removed (no guest runs here on it)", dv->name,
			 k->guest);
}

static int drbd_activate_locked(struct device *dv, uint64_t epoch);

/* (the watch neither detaches nor attaches this disk meanwhile) */
static int drbd_activate(struct device *dv, uint64_t epoch)
{
	struct disk_dev *k = priv(dv);
	int rc;

	pthread_mutex_lock(&k->ops_lock);
	rc = drbd_activate_locked(dv, epoch);
	pthread_mutex_unlock(&k->ops_lock);
	return rc;
}

static int drbd_activate_locked(struct device *dv, uint64_t epoch)
{
	struct disk_dev *k = priv(dv);
	struct overlay_stats st;
	struct discards d = { dv->name, 0, 0, 0 };
	char msg[512];
	int rc;

	/* The primary is gone: nothing more may reach this side's disk. */
	if (drbd_adm(dv->cfg->drbd_conf, "disconnect", NULL, k->resource, msg, sizeof(msg)))
		log_warn("%s: %s (going on: the overlay takes no write after this)", dv->name, msg);
	if ((rc = dm_linear_load(k->lower_dm, &k->real, msg, sizeof(msg))) ||
	    (rc = dm_suspend(k->lower_dm, msg, sizeof(msg)))) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
		return rc;
	}
	rc = overlay_activate(k->ov, log_discard, &d);
	overlay_get_stats(k->ov, &st);
	if (rc) {
		/* The real disk lacks committed writes: say so to DRBD too, so
		 * that nothing promotes it as it is. */
		dm_resume(k->lower_dm, msg, sizeof(msg));
		k->switched = false;
		unlink(k->state_path);
		invalidate_now(dv);
		snprintf(dv->error, sizeof(dv->error), "the overlay's write-back failed: the disk "
			 "is not checkpoint %" PRIu64 "'s (DRBD marks it inconsistent)", epoch);
		return rc;
	}
	if (!st.has_committed || st.committed_epoch != epoch ||
	    memcmp(st.committed_session, dv->session, MARKER_SESSION_LEN)) {
		dm_resume(k->lower_dm, msg, sizeof(msg));
		if (st.through)
			snprintf(dv->error, sizeof(dv->error), "the disk is no checkpoint's: DRBD "
				 "was resyncing it from the primary (after an overflow of the "
				 "overlay, or a full resync), the memory is at %" PRIu64, epoch);
		else
			snprintf(dv->error, sizeof(dv->error), "the disk stands at checkpoint %"
				 PRIu64 "%s, the memory at %" PRIu64, st.committed_epoch,
				 st.has_committed ? "" : " (none)", epoch);
		return -ESTALE;
	}
	if ((rc = dm_resume(k->lower_dm, msg, sizeof(msg)))) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
		return rc;
	}
	k->switched = false;
	k->activated = true;
	unlink(k->state_path);
	log_warn("%s: the disk is checkpoint %" PRIu64 "'s: %" PRIu64 " writes (%" PRIu64 " bytes) "
		 "after its marker discarded; %s is over %s again", dv->name, epoch, d.n, d.bytes,
		 k->lower_dm, k->real_path);
	/* tandem's commit log, not DRBD's view of the peer, says this disk
	 * is current: --force only when DRBD refuses without it. */
	if (drbd_adm(dv->cfg->drbd_conf, "primary", NULL, k->resource, msg, sizeof(msg))) {
		log_warn("%s: %s; promoting with --force: this disk holds the last acknowledged "
			 "checkpoint", dv->name, msg);
		if (drbd_adm(dv->cfg->drbd_conf, "primary", "--force", k->resource, msg,
			     sizeof(msg))) {
			snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
			return -EIO;
		}
	}
	log_info("%s: DRBD resource %s is primary here", dv->name, k->resource);
	return guest_device_up(dv);
}

/* The first /dev/nbdK the kernel has and nobody serves. */
static int free_nbd(char *out, size_t len)
{
	char path[64], buf[32];

	if (access("/sys/block/nbd0", F_OK))
		return -ENODEV;
	for (unsigned i = 0; i < 1024; i++) {
		int fd;
		ssize_t n;

		snprintf(path, sizeof(path), "/sys/block/nbd%u/pid", i);
		if (access(path, F_OK) == 0)
			continue;	/* served */
		snprintf(path, sizeof(path), "/sys/block/nbd%u/size", i);
		if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
			return errno == ENOENT ? -ENOSPC : -errno;
		n = read(fd, buf, sizeof(buf) - 1);
		close(fd);
		if (n > 0 && atoll(buf) == 0) {
			snprintf(out, len, "/dev/nbd%u", i);
			return 0;
		}
	}
	return -ENOSPC;
}

/* RUN_DIR/NAME.RES.lower: the real table, while the overlay is under DRBD. */
static int save_real(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	FILE *f = fopen(k->state_path, "w");

	if (!f || fprintf(f, "0 %" PRIu64 " linear %u:%u %" PRIu64 "\n", k->real.sectors,
			  k->real.major, k->real.minor, k->real.offset) < 0 || fclose(f)) {
		int e = errno;

		snprintf(dv->error, sizeof(dv->error), "cannot write %.200s: %s", k->state_path,
			 strerror(e));
		return -e;
	}
	return 0;
}

/*
 * An earlier backup died with its overlay under DRBD (SIGKILL, a crash):
 * the writes it held are lost though DRBD saw them complete, and DRBD may
 * have detached the disk on the I/O errors that followed.  Put the real
 * disk back under DRBD (its table from RUN_DIR/NAME.RES.lower), attach it
 * again if DRBD let it go, and make this side a full resync target
 * (`drbdadm invalidate`: with csums-alg only the blocks that differ cross
 * the link).  The health check then holds every checkpoint until the
 * resync is over.  On success *cur is the real table.
 */
static int recover_dead_overlay(struct device *dv, struct dm_linear *cur)
{
	struct disk_dev *k = priv(dv);
	FILE *f = fopen(k->state_path, "r");
	char line[256] = "", msg[512];
	int rc;

	if (f) {
		if (!fgets(line, sizeof(line), f))
			line[0] = '\0';
		fclose(f);
	}
	if (!f || dm_linear_parse(line, &k->real)) {
		snprintf(dv->error, sizeof(dv->error), "%.80s points at NBD device %u:%u, an overlay "
			 "of an earlier tandem backup, and %.80s does not say what it pointed at "
			 "before: load its table over the real disk with dmsetup, then run `drbdadm "
			 "adjust %.40s` and `drbdadm invalidate %.40s` here", k->lower_dm, cur->major,
			 cur->minor, k->state_path, k->resource, k->resource);
		return -EINVAL;
	}
	log_warn("%s: an earlier backup died with its overlay under DRBD: this disk lacks writes "
		 "DRBD saw complete; putting the real disk back and resyncing it from the primary",
		 dv->name);
	if ((rc = dm_linear_load(k->lower_dm, &k->real, msg, sizeof(msg))) ||
	    (rc = dm_suspend(k->lower_dm, msg, sizeof(msg))) ||
	    (rc = dm_resume(k->lower_dm, msg, sizeof(msg)))) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
		return rc;
	}
	unlink(k->state_path);
	if (drbd_adm(dv->cfg->drbd_conf, "adjust", NULL, k->resource, msg, sizeof(msg)))
		log_warn("%s: %s", dv->name, msg);
	if (drbd_adm(dv->cfg->drbd_conf, "invalidate", NULL, k->resource, msg, sizeof(msg))) {
		/* e.g. the re-attached disk's own (bitmap) resync runs: it does
		 * not know the lost writes; invalidate once it is over */
		k->need_invalidate = true;
		log_warn("%s: %s; this side's full resync starts when DRBD lets it, and "
			 "checkpoints are held until it is over", dv->name, msg);
	} else {
		log_warn("%s: DRBD resource %s resyncs this disk from the primary (drbdadm "
			 "invalidate); checkpoints are held until it is whole", dv->name, k->resource);
		k->invalidated = true;
	}
	*cur = k->real;
	return 0;
}

/*
 * A backup's DRBD that is Primary here: this host ran the guest (the old
 * primary returning after a failover or a switchover, or the loser of a
 * split brain).  Its disk may hold writes the running guest's never had,
 * in blocks no DRBD bitmap knows of (the backup that activated discarded
 * them from its overlay): step down, and resync this side in full before
 * anything commits.  A resource that cannot step down is in use: the
 * guest still runs here, and the backup refuses.
 */
static int step_down(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	struct drbd_state st;
	char msg[512];

	if (drbd_state(dv->cfg->drbd_conf, k->resource, k->target, DRBD_RO, &st, msg,
		       sizeof(msg))) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
		return -EIO;
	}
	if (strncmp(st.ro, "Primary", 7))
		return 0;
	guest_device_down(dv);
	if (drbd_adm(dv->cfg->drbd_conf, "secondary", NULL, k->resource, msg, sizeof(msg))) {
		const char *guest = "";

		for (unsigned i = 0; i < dv->cfg->disks.n; i++)
			if (!strcmp(dv->cfg->disks.d[i].resource, k->resource))
				guest = dv->cfg->disks.d[i].device;
		snprintf(dv->error, sizeof(dv->error), "DRBD resource %s is Primary on this host and "
			 "cannot become Secondary (%.160s): a backup needs it Secondary.  Is a guest "
			 "still running here?  Once none is, remove what holds the device open (the "
			 "guest's device %.80s: dmsetup remove) and start the backup again",
			 k->resource, msg, guest);
		return -EBUSY;
	}
	k->need_invalidate = true;
	k->diverged++;
	log_warn("%s: DRBD resource %s was Primary here, so this host ran the guest: its disk may "
		 "hold writes the other host's never had; it is Secondary now, and resyncs in full "
		 "from the primary (drbdadm invalidate) before any checkpoint commits", dv->name,
		 k->resource);
	return 0;
}

static void drbd_diverged(struct device *dv, const char *why)
{
	struct disk_dev *k = priv(dv);

	pthread_mutex_lock(&k->lock);
	k->diverged++;
	/* one full resync in this process is enough: it came after this
	 * side last held the guest (a second, seen when a returning Primary
	 * had stepped down and the handshake then said so too, would only
	 * start the copy over) */
	if (k->need_invalidate || k->invalidated) {
		pthread_mutex_unlock(&k->lock);
		return;
	}
	k->need_invalidate = true;
	k->healthy = false;
	k->whole_seen = false;
	pthread_cond_broadcast(&k->cond);
	pthread_mutex_unlock(&k->lock);
	log_warn("%s: %s: this side's disk may differ from the primary's in blocks DRBD does "
		 "not know of; it resyncs in full (drbdadm invalidate) before any checkpoint "
		 "commits", dv->name, why);
}

static void memdisk_diverged(struct device *dv, const char *why)
{
	struct disk_dev *k = priv(dv);

	pthread_mutex_lock(&k->lock);
	k->diverged++;
	pthread_mutex_unlock(&k->lock);
	log_warn("%s: %s: memdom's stand-in is one file both sides share, so there is nothing "
		 "to resync", dv->name, why);
}

static int drbd_backup_open(struct device *dv, const struct drbd_resource_info *info)
{
	struct disk_dev *k = priv(dv);
	struct dm_linear cur, ovt;
	struct stat nst;
	struct overlay_opts o = { 0 };
	struct overlay_stats st;
	char msg[512], err[256];
	int rc;

	snprintf(k->lower_dm, sizeof(k->lower_dm), "%s", info->disk);
	snprintf(k->state_path, sizeof(k->state_path), "%s/%s.%s.lower", dv->cfg->run_dir,
		 dv->cfg->name, k->resource);
	if ((rc = dm_linear_get(k->lower_dm, &cur, msg, sizeof(msg)))) {
		snprintf(dv->error, sizeof(dv->error), "DRBD's lower device: %.220s", msg);
		return rc == -EIO ? -EINVAL : rc;
	}
	if (cur.major == NBD_MAJOR_NUMBER && (rc = recover_dead_overlay(dv, &cur)))
		return rc;
	if ((rc = step_down(dv)))
		return rc;
	if (cur.offset) {
		snprintf(dv->error, sizeof(dv->error), "%.80s maps the real disk from sector %" PRIu64
			 ": tandem needs it from sector 0", k->lower_dm, cur.offset);
		return -EINVAL;
	}
	k->real = cur;
	if ((rc = dm_block_path(cur.major, cur.minor, k->real_path, sizeof(k->real_path)))) {
		snprintf(dv->error, sizeof(dv->error), "cannot find the device %u:%u under %.80s: %s",
			 cur.major, cur.minor, k->lower_dm, strerror(-rc));
		return rc;
	}
	if ((rc = free_nbd(k->nbd, sizeof(k->nbd)))) {
		snprintf(dv->error, sizeof(dv->error), "%s", rc == -ENODEV ?
			 "no NBD devices: the backup serves its disk overlay as /dev/nbdK (modprobe "
			 "nbd)" : rc == -ENOSPC ? "every /dev/nbdK is in use (modprobe nbd nbds_max=N)"
			 : strerror(-rc));
		return rc == -ENODEV ? -ENOTSUP : rc;
	}
	o.lower = k->real_path;
	o.nbd = k->nbd;
	o.vm = dv->cfg->name;
	o.mem_limit = dv->cfg->disk_overlay_limit;
	o.lock_memory = true;
	if ((rc = overlay_open(&o, &k->ov, err, sizeof(err)))) {
		snprintf(dv->error, sizeof(dv->error), "its overlay: %.240s", err);
		return rc;
	}
	/* a full resync of this side is under way or to come: nothing here
	 * to keep, its writes go through (the watch ends that once DRBD is
	 * whole) */
	if (k->invalidated || k->need_invalidate)
		overlay_through(k->ov);
	overlay_get_stats(k->ov, &st);
	if (st.size != cur.sectors * 512) {
		snprintf(dv->error, sizeof(dv->error), "%.80s maps %" PRIu64 " bytes of %.40s, which has %"
			 PRIu64 " (4 KiB blocks): the marker block must be the last 4 KiB of both; map "
			 "the whole disk", k->lower_dm, cur.sectors * 512, k->real_path, st.size);
		return -EINVAL;
	}
	/* the node's own numbers: /dev/nbdK is minor K << part_shift (nbd's
	 * max_part), not K, for every K but 0 */
	if (stat(k->nbd, &nst) || !S_ISBLK(nst.st_mode)) {
		snprintf(dv->error, sizeof(dv->error), "%s is not a block device: %s", k->nbd,
			 strerror(errno ? errno : ENOTBLK));
		return -ENODEV;
	}
	if ((rc = save_real(dv)))
		return rc;
	ovt = (struct dm_linear){ cur.sectors, major(nst.st_rdev), minor(nst.st_rdev), 0 };
	if ((rc = dm_linear_load(k->lower_dm, &ovt, msg, sizeof(msg))) ||
	    (rc = dm_suspend(k->lower_dm, msg, sizeof(msg))) ||
	    (rc = dm_resume(k->lower_dm, msg, sizeof(msg)))) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", msg);
		unlink(k->state_path);
		return rc;
	}
	k->switched = true;
	log_info("%s: DRBD's lower device %s now goes through the overlay %s over %s (memory "
		 "limit %s)", dv->name, k->lower_dm, k->nbd, k->real_path,
		 fmt_size(dv->cfg->disk_overlay_limit, err, sizeof(err)));
	/* DRBD's state now, so that the first checkpoints need not wait a
	 * poll for it; then once a second (health_main). */
	k->healthy = drbd_healthy(dv->cfg->drbd_conf, k->resource, k->target, msg,
				  sizeof(msg)) == 1 &&
		     !k->need_invalidate;
	snprintf(k->health, sizeof(k->health), "%.200s", msg);
	if (!k->healthy) {
		log_warn("%s: DRBD is not whole here (%s): no checkpoint commits until it is and a "
			 "fresh marker came", dv->name, msg);
		testlog("disk-unwhole");
	}
	rc = pthread_create(&k->thr, NULL, health_main, dv);
	if (rc) {
		snprintf(dv->error, sizeof(dv->error), "cannot start its DRBD watch: %s", strerror(rc));
		return -rc;
	}
	k->thr_started = true;
	return 0;
}

/* Protection ends without a failover: every held write goes to the real
 * disk (DRBD saw them complete), and DRBD's lower device is the real disk
 * again. */
static void drbd_backup_close(struct device *dv)
{
	struct disk_dev *k = priv(dv);
	struct overlay_stats st;
	char msg[512];
	int rc;

	if (!k->switched) {
		overlay_close(k->ov);
		k->ov = NULL;
		return;
	}
	if (dm_linear_load(k->lower_dm, &k->real, msg, sizeof(msg)) ||
	    dm_suspend(k->lower_dm, msg, sizeof(msg))) {
		log_error("%s: %s: the overlay keeps serving until this process exits; DRBD will "
			  "then see I/O errors, and the next backup start puts the real disk back "
			  "and resyncs it from the primary", dv->name, msg);
		return;
	}
	rc = overlay_release(k->ov, RELEASE_TIMEOUT_MS);
	overlay_get_stats(k->ov, &st);
	if (dm_resume(k->lower_dm, msg, sizeof(msg)))
		log_error("%s: %s", dv->name, msg);
	unlink(k->state_path);
	if (rc) {
		log_error("%s: writing back what the overlay held: %s: this disk lacks writes DRBD "
			  "saw complete", dv->name, strerror(-rc));
		invalidate_now(dv);
	}
	log_info("%s: %s is over %s again (%" PRIu64 " writes written back in all)", dv->name,
		 k->lower_dm, k->real_path, st.written_back_writes);
	k->switched = false;
	overlay_close(k->ov);
	k->ov = NULL;
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
	int refusals, rc;

	refusals = drbd_check_resource(dv->cfg->drbd_conf, k->resource, &info, msg, sizeof(msg));
	if (refusals) {
		snprintf(dv->error, sizeof(dv->error), "%.250s", refusals < 0 ? msg :
			 "its DRBD settings are refused: see `tandem check-config`");
		return -EINVAL;
	}
	snprintf(k->target, sizeof(k->target), "%s", info.device);
	if (role == DEVICE_BACKUP)
		return drbd_backup_open(dv, &info);
	disk_fence_flag_path(dv->cfg, k->resource, k->fence_flag, sizeof(k->fence_flag));
	connect_standalone(dv);
	if (drbd_healthy(dv->cfg->drbd_conf, k->resource, k->target, msg, sizeof(msg)) == 1) {
		k->whole_seen = true;
	} else {
		/* Not in sync now: the first cuts must not count until it is. */
		FILE *f = fopen(k->fence_flag, "w");

		if (f)
			fclose(f);
		log_warn("%s: DRBD is not whole at start (%s): every verdict says fenced until it "
			 "is", dv->name, msg);
	}
	rc = open_target(dv);
	return rc ? rc : start_worker(dv);
}

static void disk_status(struct device *dv, char *buf, size_t len)
{
	struct disk_dev *k = priv(dv);
	size_t n;

	pthread_mutex_lock(&k->lock);
	n = (size_t)snprintf(buf, len, "\"kind\":\"%s\",\"target\":\"%s\",\"cuts\":%" PRIu64
			     ",\"cut_failures\":%" PRIu64 ",\"fenced_verdicts\":%" PRIu64
			     ",\"last_cut_us\":%" PRIu64 ",\"max_cut_us\":%" PRIu64 ",\"committed\":%"
			     PRIu64 ",\"last_marker_seen\":%" PRIu64 ",\"diverged\":%u",
			     k->memdisk ? "memdisk" : "drbd", k->target, k->cuts, k->cut_failures,
			     k->fenced_verdicts, k->last_cut_us, k->max_cut_us, k->committed,
			     k->last_marker_seen, k->diverged);
	if (k->ov && n < len) {
		struct overlay_stats st;

		overlay_get_stats(k->ov, &st);
		snprintf(buf + n, len - n, ",\"drbd_whole\":%s,\"drbd_state\":\"%s\",\"overlay\":"
			 "\"%s\",\"overlay_held_bytes\":%" PRIu64 ",\"overlay_held_writes\":%" PRIu64
			 ",\"overlay_limit_bytes\":%" PRIu64 ",\"writeback_lag_bytes\":%" PRIu64
			 ",\"written_back_bytes\":%" PRIu64 ",\"overflowed\":%s,\"overflows\":%"
			 PRIu64 ",\"overlay_through\":%s",
			 k->healthy ? "true" : "false", k->health, k->nbd, st.held_bytes,
			 st.held_writes, dv->cfg->disk_overlay_limit, st.lag_bytes,
			 st.written_back_bytes, st.overflowed ? "true" : "false", st.overflows,
			 st.through ? "true" : "false");
	}
	pthread_mutex_unlock(&k->lock);
}

static void disk_status_text(struct device *dv, char *buf, size_t len)
{
	struct disk_dev *k = priv(dv);
	char a[32], b[32], c[32];

	pthread_mutex_lock(&k->lock);
	if (k->ov) {
		struct overlay_stats st;

		overlay_get_stats(k->ov, &st);
		snprintf(buf, len, "DRBD %s (%s); overlay %s holds %s of %s, write-back lag %s; "
			 "committed checkpoint %" PRIu64 "%s", k->healthy ? "whole" : "NOT WHOLE",
			 k->health, k->nbd, fmt_size(st.held_bytes, a, sizeof(a)),
			 fmt_size(dv->cfg->disk_overlay_limit, b, sizeof(b)),
			 fmt_size(st.lag_bytes, c, sizeof(c)), k->committed,
			 st.overflowed ? "; OVERFLOWED: this disk is unprotected until DRBD has "
			 "resynced it" : st.through ? "; writing through while DRBD resyncs this "
			 "disk: no checkpoint of it until DRBD is whole" : "");
	} else if (k->thr_started && !k->memdisk) {
		snprintf(buf, len, "DRBD %s, %" PRIu64 " cuts, last %.2f ms, max %.2f ms; %" PRIu64
			 " fenced verdicts, %" PRIu64 " cut failures%s", k->target, k->cuts,
			 (double)k->last_cut_us / 1e3, (double)k->max_cut_us / 1e3, k->fenced_verdicts,
			 k->cut_failures, k->fence_flag[0] && access(k->fence_flag, F_OK) == 0 ?
			 "; FENCED: DRBD lost its peer, no checkpoint commits until it is whole" : "");
	} else {
		snprintf(buf, len, "%s %s, %" PRIu64 " cuts, committed checkpoint %" PRIu64,
			 k->memdisk ? "memdom stand-in" : "DRBD", k->target, k->cuts, k->committed);
	}
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
	if (k->ov)
		drbd_backup_close(dv);
	marker_dev_close(&k->md);
	pthread_mutex_destroy(&k->lock);
	pthread_mutex_destroy(&k->ops_lock);
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
	.diverged = drbd_diverged,
	.status = disk_status,
	.status_text = disk_status_text,
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
	.diverged = memdisk_diverged,
	.status = disk_status,
	.status_text = disk_status_text,
	.close = disk_close,
};

static int init_common(struct device *dv, const struct device_ops *ops)
{
	struct disk_dev *k = calloc(1, sizeof(*k));

	if (!k)
		return -ENOMEM;
	k->md.fd = -1;
	pthread_mutex_init(&k->lock, NULL);
	pthread_mutex_init(&k->ops_lock, NULL);
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
	snprintf(priv(dv)->guest, sizeof(priv(dv)->guest), "%s", disk->device);
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
