/*
 * primary.c - `tandem primary`: the epoch loop on the VM's host.
 *
 * Threads (design: docs/design.md):
 *   main    libuv loop: signals, status socket, the once-a-second tick
 *           (UNSAFE reminder, status rates)
 *   ckpt    epoch timer; suspend -> close output epoch -> capture into
 *           staging -> resume; the guest's pause is this and nothing else
 *   ship    sends staged checkpoints in order, heartbeats when idle
 *   link    connects and reconnects; acks (release output epoch N),
 *           heartbeats, loss of the stream
 *
 * Captured checkpoints wait in `pending` (in epoch order) until acked;
 * at most epochs-in-flight of them, within staging-limit bytes.  When
 * either bound is reached the next epoch waits: it stretches.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <uv.h>

#define LOG_MODULE "primary"
#include "../buffering/netbuf.h"
#include "../cli/cmd.h"
#include "../device/device.h"
#include "linkprobe.h"
#include "../domain/domain.h"
#include "../domain/memdom.h"
#include "../heartbeat/heartbeat.h"
#include "../heartbeat/policy.h"
#include "../lib/channel.h"
#include "../lib/crash.h"
#include "../lib/fault.h"
#include "../lib/generation.h"
#include "../lib/hook.h"
#include "../lib/key.h"
#include "../lib/log.h"
#include "../lib/notify.h"
#include "../lib/net.h"
#include "../lib/status.h"
#include "../lib/testlog.h"
#include "../lib/util.h"
#include "../backup/backup.h"
#include "primary.h"
#include "ship.h"

#define MAX_IN_FLIGHT 64
#define HZ_WINDOW 32

enum pstate { P_STARTING, P_CONNECTING, P_SYNCING, P_PROTECTING, P_DEGRADED, P_STOPPING,
	      P_SUPERSEDED };

static const char *const pstate_names[] = {
	[P_STARTING] = "starting", [P_CONNECTING] = "connecting", [P_SYNCING] = "syncing",
	[P_PROTECTING] = "protecting", [P_DEGRADED] = "degraded", [P_STOPPING] = "stopping",
	[P_SUPERSEDED] = "superseded",
};

/* Prometheus-style histograms (`tandem metrics`): cumulative at print. */
#define HIST_BUCKETS 12
static const double hist_le[HIST_BUCKETS] = { 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05,
					      0.1, 0.2, 0.5, 1, 5 };
struct hist {
	uint64_t n[HIST_BUCKETS + 1];	/* per bucket; the last: above every bound */
	uint64_t count;
	double sum;			/* seconds */
};

static void hist_add(struct hist *h, double seconds)
{
	unsigned i = 0;

	while (i < HIST_BUCKETS && seconds > hist_le[i])
		i++;
	h->n[i]++;
	h->count++;
	h->sum += seconds;
}

/* "\"NAME\":{\"le\":[...],\"counts\":[cumulative...],\"sum\":S,\"count\":N}" */
static int hist_json(const struct hist *h, const char *name, char *buf, size_t len)
{
	size_t n = (size_t)snprintf(buf, len, "\"%s\":{\"le\":[", name);
	uint64_t cum = 0;

	for (unsigned i = 0; i < HIST_BUCKETS && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%g", i ? "," : "", hist_le[i]);
	n += n < len ? (size_t)snprintf(buf + n, len - n, "],\"counts\":[") : 0;
	for (unsigned i = 0; i < HIST_BUCKETS && n < len; i++) {
		cum += h->n[i];
		n += (size_t)snprintf(buf + n, len - n, "%s%" PRIu64, i ? "," : "", cum);
	}
	n += n < len ? (size_t)snprintf(buf + n, len - n, "],\"sum\":%.6f,\"count\":%" PRIu64 "}",
					 h->sum, h->count) : 0;
	return (int)n;
}

struct primary {
	struct tandem_config cfg;
	struct hook *hook;		/* the notify command (NULL: none) */
	struct domain dom;
	struct devices devs;		/* the guest's disks (device/device.h) */
	struct netbuf nb;
	struct channel *ch;
	int exit_code;
	bool devs_bad;			/* the last verdicts were not all ok (logged once) */
	bool merge_output;		/* the next close_epoch joins the held closed epoch */

	/* `tandem set`: the file's configuration (what a restart uses), and an
	 * interval the backup has yet to hear of */
	struct tandem_config file_cfg;
	bool set_interval_pending;

	/* `tandem probe`'s prediction for this VM (RUN_DIR/NAME.probe), shown
	 * beside what protection measures */
	struct probe_prediction pred;
	double pred_link_Bps, pred_dirty;
	uint64_t pred_at;
	bool have_pred;

	/* the added-latency budget (config latency-budget): the guest's speed */
	struct {
		unsigned pct;			/* 100 = full speed */
		uint64_t settle_epoch;		/* no change until this checkpoint is acked */
		uint64_t changes;
		unsigned calm;			/* acks in a row well under the budget */
		uint64_t changed_ns;		/* when the speed last changed */
		double last_ms;			/* added latency of the last acked epoch */
		char cause[240];
		bool unsupported;
	} bud;
	bool digest_off;		/* verify-drop-page fired: the test digest would only trip */
	/* which copy is current (lib/generation.h), and re-protection: this
	 * daemon was a backup that activated the guest and now protects it
	 * from this host (primary_adopt) */
	struct generation gen;
	bool adopted, reprotected;
	bool gen_checked;		/* superseded: the one handshake that learns the generation */
	bool have_newer_peer;		/* the backup's generation is newer: this copy is stale */
	/* `tandem switchover`: the last checkpoint with the guest left paused,
	 * its ack, FAILOVER to the backup, its word that the guest runs there */
	enum { SW_NONE, SW_REQUESTED, SW_FINAL, SW_SENT } sw;
	bool switch_final;		/* take_checkpoint: leave the guest suspended */
	bool switching;			/* FAILOVER sent: an activation heard is the answer */
	bool sw_confirmed, sw_active_heard, sw_peer_restarted, become_backup;
	bool sw_failed;			/* the backup: its activation failed (FAILOVER 3) */
	int sw_send;			/* FAILOVER: 1 to send (ship thread), 4 sending, 2 sent, 3 failed */
	uint64_t sw_epoch, sw_t0, sw_t_reply;
	char sw_result[400];
	struct wire_generation newer_peer;
	char peer_host[CONFIG_NAME_MAX + 1];
	bool notified_ready;		/* systemd heard READY=1 */
	struct hist pause_hist;		/* suspend to resume, per checkpoint */
	struct hist latency_hist;	/* capture to ack: how long its output was held */
	uint64_t last_resume_ns;	/* the last checkpoint's resume: its epoch's start */

	uv_loop_t loop;
	uv_signal_t sigterm, sigint, sighup;
	uv_timer_t tick;
	uv_async_t done_async, release_async;
	struct status_server *status;

	pthread_t ckpt_thr, ship_thr, link_thr;
	bool ship_started, recv_started;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_mutex_t nb_lock;

	/* Checkpoints captured and not yet acked, oldest first. */
	struct ckpt *pending[MAX_IN_FLIGHT];
	unsigned npending;
	uint64_t ship_next;		/* epoch the shipper sends next; all below have started */
	struct ckpt *spare[MAX_IN_FLIGHT];
	/* the initial copy: a piece ships (rs_thr) while the driver collects
	 * the next one */
	pthread_t rs_thr;
	bool rs_busy;
	int rs_rc;
	struct ckpt *rs_c;
	unsigned nspare;
	size_t staging_bytes;

	bool stop, isolated, stretched;
	/* the staging bound: the next checkpoint must fit what is free */
	bool throttled;			/* the guest is paused until it fits */
	uint64_t throttle_start_ns, throttled_ns_total, throttles, early_epochs;
	uint64_t throttle_logged_ns;	/* the last pause logged at warn level */
	bool throttle_loud;
	uint64_t next_estimate;		/* bytes the next checkpoint would stage now */
	bool dirty_warned;
	bool restart;			/* protection must start over: a new initial copy */
	uint64_t backup_holds;		/* the backup holds checkpoints from this one (HELD); 0 = no */
	char restart_why[200];
	unsigned copy_failures;		/* initial copies failed in a row (backoff) */
	unsigned ckpt_failures;		/* checkpoints failed with no ack after them */
	uint64_t ckpt_fail_epoch;	/* the last of them */
	bool resume_failed;		/* take_checkpoint: the guest was not resumed */
	bool suspend_stuck;		/* fault point suspend-stuck fired */
	uint64_t last_ack_ns;		/* when the last ack arrived (0 = none yet) */
	bool superseded;		/* the backup activated: step down, never release */
	bool ckpt_exited, stepped_down;	/* step_down runs once, after the checkpoint thread */
	uv_async_t step_async;
	char superseded_why[300];
	bool link_up, shipping, released;
	struct hb *hb;
	enum hb_decision decision;
	uint8_t key[KEY_LEN];
	enum pstate state;
	char detail[160];

	uint64_t epoch, last_shipped, last_acked;
	uint64_t last_pause_us, last_dirty, bytes_shipped;
	uint64_t bytes_shipped_raw;		/* what bytes_shipped would be uncompressed */
	bool compressing;			/* the link compresses (asked, and the backup reads it) */
	uint64_t last_heard_ns, last_sent_ns, hb_seq;
	uint64_t epoch_times[HZ_WINDOW];
	uint64_t pause_us[HZ_WINDOW];	/* pauses of the same checkpoints */
	unsigned nepoch_times;
	struct domain_progress progress;
	uint64_t progress_start_ns;
};


/* ---- helpers (call with lock held unless noted) --------------------------- */

/* Wait on p->cond for at most `wait` nanoseconds (lock held). */
static void wait_ns(struct primary *p, uint64_t wait)
{
	cond_wait_ns(&p->cond, &p->lock, wait);
}

static void set_state(struct primary *p, enum pstate s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_state(struct primary *p, enum pstate s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(p->detail, sizeof(p->detail), fmt, ap);
	va_end(ap);
	if (p->state != s) {
		log_info("state %s -> %s: %s", pstate_names[p->state], pstate_names[s], p->detail);
		hook_state(p->hook, pstate_names[p->state], pstate_names[s], p->detail);
		notify_status("%s: %s", pstate_names[s], p->detail);
		status_event(p->status, "%s primary state %s from=%s epoch=%" PRIu64 " acked=%" PRIu64
			     " detail=\"%s\"", p->cfg.name, pstate_names[s], pstate_names[p->state],
			     p->epoch, p->last_acked, p->detail);
		if (s == P_STOPPING)
			notify_stopping();
	}
	p->state = s;
}

static double achieved_hz(const struct primary *p)
{
	unsigned n = MIN(p->nepoch_times, HZ_WINDOW);
	uint64_t newest, oldest;

	if (n < 2)
		return 0;
	newest = p->epoch_times[(p->nepoch_times - 1) % HZ_WINDOW];
	oldest = p->epoch_times[(p->nepoch_times - n) % HZ_WINDOW];
	if (now_ns() - newest > 2 * 1000000000ull)
		return 0;
	return (double)(n - 1) * 1e9 / (double)(newest - oldest);
}

/* Median pause of the last HZ_WINDOW checkpoints, in ms (0 before the first). */
static double pause_median_ms(const struct primary *p)
{
	uint64_t v[HZ_WINDOW];
	unsigned n = MIN(p->nepoch_times, HZ_WINDOW);

	memcpy(v, p->pause_us, sizeof(v));
	return (double)u64_median(v, n) / 1000.0;
}

/*
 * The backup is lost (every path down, or the stream made no sense): the
 * guest keeps running and its output stays held, since nothing is released
 * without an ack, so a partitioned primary stays invisible to clients and
 * never contradicts a backup that activated.  The link keeps being retried:
 * a backup that answers resumes the stream (or, if it holds no standby of
 * it, takes a new initial copy); one that activated makes this primary step
 * down.  Any thread.
 */
static void peer_lost(struct primary *p, const char *why)
{
	pthread_mutex_lock(&p->lock);
	if (!p->isolated && !p->stop && !p->superseded && !p->released) {
		p->isolated = true;
		log_error("backup lost: %s (timeout %" PRIu64 " ms); the guest keeps running, output "
			  "of unacknowledged epochs stays held; reconnecting", why, p->cfg.timeout_ms);
		set_state(p, P_DEGRADED, "isolated: backup lost (%s); output held after epoch %"
			  PRIu64 "; reconnecting", why, p->last_acked);
	}
	if (p->ch)
		channel_shutdown(p->ch);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* The replication stream broke; the heartbeat paths decide what it means.
 * Called by the link thread, which owns the channel. */
static void link_down(struct primary *p, const char *why)
{
	struct channel *ch;

	pthread_mutex_lock(&p->lock);
	p->link_up = false;
	if (p->ch)
		channel_shutdown(p->ch);
	pthread_cond_broadcast(&p->cond);
	while (p->shipping)
		pthread_cond_wait(&p->cond, &p->lock);
	ch = p->ch;
	p->ch = NULL;
	if (!p->isolated && !p->stop && !p->released && !p->superseded)
		set_state(p, P_DEGRADED, "replication link down: %s; output held after epoch %" PRIu64,
			  why, p->last_acked);
	pthread_mutex_unlock(&p->lock);
	log_warn("replication link down: %s (timeout %" PRIu64 " ms)", why, p->cfg.timeout_ms);
	channel_free(ch);
	hb_set_replication_up(p->hb, false);
}

/*
 * The backup activated (it said so on a heartbeat path or in the
 * handshake): this primary is superseded.  It stops checkpointing at once
 * and never releases output again; the checkpoint thread then stops
 * protection and pauses or destroys the guest (on-superseded).  Any
 * thread; must not block.
 */
static void superseded(struct primary *p, const char *why)
{
	static bool ignore;	/* fault point ignore-active: sticky once hit */

	if (!ignore)
		ignore = fault_hit("ignore-active");
	if (ignore) {
		log_error("fault point 'ignore-active': NOT stepping down (%s)", why);
		return;
	}
	pthread_mutex_lock(&p->lock);
	if (p->switching) {
		/* the backup took over as asked (it says ACTIVE from its decision
		 * on, before its guest runs): the switchover's answer with the
		 * time is its FAILOVER record; this one only stands in for it */
		p->sw_active_heard = true;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (p->superseded) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	p->superseded = true;
	snprintf(p->superseded_why, sizeof(p->superseded_why), "%s", why);
	set_state(p, P_SUPERSEDED, "the backup runs the guest (%s); this copy is being %s, its "
		  "held output is never released", why,
		  p->cfg.on_superseded == SUPERSEDED_DESTROY ? "destroyed" : "paused");
	if (p->ch)
		channel_shutdown(p->ch);
	pthread_cond_broadcast(&p->cond);
	/* The checkpoint thread steps down as it leaves; if it has left
	 * already (isolated, or stopped), the loop does. */
	if (p->ckpt_exited && !p->stepped_down) {
		p->stepped_down = true;
		uv_async_send(&p->step_async);
	}
	pthread_mutex_unlock(&p->lock);
	log_error("SUPERSEDED: %s; stepping down: checkpoints stop, the guest is %s, held output "
		  "is discarded (never released)", why,
		  p->cfg.on_superseded == SUPERSEDED_DESTROY ? "destroyed" : "paused");
}

static void on_peer_active(void *arg, int index, uint64_t epoch)
{
	char why[160];

	snprintf(why, sizeof(why), "heartbeat path %d says the backup is active from checkpoint %"
		 PRIu64, index + 1, epoch);
	superseded(arg, why);
}

/* The checkpoint thread, after its loop: the guest must stop for good. */
static void step_down(struct primary *p)
{
	bool destroy = p->cfg.on_superseded == SUPERSEDED_DESTROY;
	int rc = 0;

	if (p->dom.ops->stop_protection)
		p->dom.ops->stop_protection(&p->dom);
	if (p->dom.ops->halt)
		rc = p->dom.ops->halt(&p->dom, destroy);
	pthread_mutex_lock(&p->lock);
	if (!p->dom.ops->halt || rc)
		set_state(p, P_SUPERSEDED, "the backup runs the guest (%s); this copy could NOT be "
			  "%s (see the log): stop it by hand; its held output is never released",
			  p->superseded_why, destroy ? "destroyed" : "paused");
	else
		set_state(p, P_SUPERSEDED, "the backup runs the guest (%s); this copy is %s; its "
			  "held output is never released", p->superseded_why,
			  destroy ? "destroyed" : "paused");
	pthread_mutex_unlock(&p->lock);
	testlog("superseded %s", destroy ? "destroyed" : "paused");
}

/* The heartbeat module's verdict changed (its own thread; must not block). */
static void on_decision(void *arg, enum hb_decision d, const struct hb_view *v)
{
	struct primary *p = arg;

	status_event(p->status, "%s primary decision %s replication=%s paths_up=%u paths=%u",
		     p->cfg.name, hb_decision_name(d), v->repl_up ? "up" : "down", v->paths_up,
		     v->paths);
	pthread_mutex_lock(&p->lock);
	p->decision = d;
	if (p->link_up && d != HB_NOTHING) {
		/* A verdict on a view with the stream down that arrives after the
		 * link thread reconnected: the stream is up, it no longer holds
		 * (the verdict on the new view follows). */
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (d != HB_ISOLATED_HOLD && p->isolated && !p->released && !p->superseded) {
		p->isolated = false;	/* heard again: reconnecting */
		set_state(p, P_DEGRADED, "the backup is heard again; reconnecting; output held "
			  "after epoch %" PRIu64, p->last_acked);
	}
	if (d == HB_DEGRADED_WAIT && !p->isolated && !p->released && !p->superseded)
		set_state(p, P_DEGRADED, "%s: the backup is alive on another path; output held, "
			  "reconnecting", hb_decision_status(d));
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	if (d == HB_ISOLATED_HOLD)
		peer_lost(p, "every path to the backup is down");
	else if (d == HB_RELEASE_OUTPUT)
		uv_async_send(&p->release_async);
}

static struct ckpt *take_spare(struct primary *p)
{
	if (p->nspare)
		return p->spare[--p->nspare];
	return ckpt_new(0);
}

static void recount_staging(struct primary *p)
{
	size_t total = 0;

	for (unsigned i = 0; i < p->npending; i++)
		total += ckpt_bytes(p->pending[i]);
	for (unsigned i = 0; i < p->nspare; i++)
		total += ckpt_bytes(p->spare[i]);
	p->staging_bytes = total;
}

/* ---- initial copy --------------------------------------------------------- */

/* The link's byte counters after a send (lock held). */
static void note_sent(struct primary *p, const struct channel *ch)
{
	p->bytes_shipped = channel_bytes_sent(ch);
	p->bytes_shipped_raw = channel_bytes_sent_raw(ch);
	p->compressing = channel_compresses(ch);
}

static int ship_round(struct primary *p, struct ckpt *c)
{
	struct channel *ch;
	int rc;

	pthread_mutex_lock(&p->lock);
	while (p->shipping)
		pthread_cond_wait(&p->cond, &p->lock);
	ch = p->link_up ? p->ch : NULL;
	p->shipping = ch != NULL;
	pthread_mutex_unlock(&p->lock);
	if (!ch)
		return -ENOTCONN;
	rc = ship_ckpt(ch, c, NULL);
	pthread_mutex_lock(&p->lock);
	p->shipping = false;
	if (!rc) {
		note_sent(p, ch);
		p->last_sent_ns = now_ns();
	}
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	return rc;
}

static void *round_thr(void *arg)
{
	struct primary *p = arg;

	p->rs_rc = ship_round(p, p->rs_c);
	return NULL;
}

/* The piece shipping in the background has gone: its result (0, -errno). */
static int round_wait(struct primary *p)
{
	int rc;

	if (!p->rs_busy)
		return 0;
	pthread_join(p->rs_thr, NULL);
	p->rs_busy = false;
	rc = p->rs_rc;
	p->rs_rc = 0;
	return rc;
}

/*
 * The driver's sink for the initial copy (its thread).  A piece while the
 * guest runs ships in the background, and the driver collects the next
 * one meanwhile: collecting a piece (copying it out of the guest, or
 * draining libxenguest's stream) then no longer leaves the link idle.  At
 * most one piece ships so: the next waits for it, so the memory held is
 * that piece and the one being collected.  The last one (final: the first
 * checkpoint) ships before the call returns.
 */
static int deliver_round(void *arg, struct ckpt *c, bool final)
{
	struct primary *p = arg;
	int rc;

	c->epoch = 0;
	c->flags |= CKPT_F_INITIAL;
	if ((rc = round_wait(p)))
		return rc;
	if (final || (!p->rs_c && !(p->rs_c = ckpt_new(0))))
		return ship_round(p, c);
	ckpt_swap(c, p->rs_c);
	ckpt_reset(c, 0);
	if (pthread_create(&p->rs_thr, NULL, round_thr, p)) {
		ckpt_swap(c, p->rs_c);
		return ship_round(p, c);
	}
	p->rs_busy = true;
	return 0;
}

static void on_progress(void *arg, const struct domain_progress *pr)
{
	struct primary *p = arg;
	static uint64_t last_print;
	uint64_t now = now_ns();

	notify_extend(120000000ull);	/* the initial copy makes progress: 2 min more */

	pthread_mutex_lock(&p->lock);
	p->progress = *pr;
	pthread_mutex_unlock(&p->lock);
	if (isatty(2) && (now - last_print > 250000000ull || pr->pages_done == pr->pages_total)) {
		double secs = (double)(now - p->progress_start_ns) / 1e9;
		double rate = secs > 0 ? (double)pr->pages_done * 4096 / secs / 1048576 : 0;
		double pct = pr->pages_total ? 100.0 * (double)pr->pages_done / (double)pr->pages_total : 0;
		double eta = rate > 0 ? (double)(pr->pages_total - pr->pages_done) * 4096 / 1048576 / rate : 0;
		fprintf(stderr, "\rinitial copy: round %u  %5.1f%%  %7.1f MiB/s  ETA %4.1fs ",
			pr->round, pct, rate, eta);
		if (pr->pages_done == pr->pages_total)
			fputc('\n', stderr);
		last_print = now;
	}
}

/* ---- the checkpoint thread ----------------------------------------------- */

/* Staging a checkpoint of n dirty pages takes: the pages and their pfns,
 * and room for its state and stream records. */
#define CKPT_MARGIN (1u << 20)
static uint64_t ckpt_estimate(uint64_t pages)
{
	uint64_t b = pages * (CKPT_PAGE_SIZE + 8);

	return b + MAX((uint64_t)CKPT_MARGIN, b / 4);	/* + what the guest writes until paused */
}

/* The guest ran again with its checkpoint (resume), or protection ends. Lock held. */
static void unthrottled(struct primary *p, const char *why)
{
	uint64_t ms;

	if (!p->throttled)
		return;
	p->throttled = false;
	ms = (now_ns() - p->throttle_start_ns) / 1000000;
	p->throttled_ns_total += now_ns() - p->throttle_start_ns;
	if (p->throttle_loud)
		log_info("guest runs again after %" PRIu64 " ms paused for staging (%s)", ms, why);
	else
		log_debug("guest runs again after %" PRIu64 " ms paused for staging (%s)", ms, why);
}

/*
 * Wait (lock held) until the next checkpoint may be taken; false = stop.
 *
 * The bound on staging (docs/design.md, "Staging is bounded"): a
 * checkpoint is taken only when it fits what staging has free, sized by
 * the guest's dirty pages (the driver's count, polled during the epoch).
 * The epoch ends early once the dirty set reaches half of what is free,
 * so that checkpoints stay small and the link drains them; when it cannot
 * fit (too many unacknowledged bytes) the guest is paused until
 * acknowledgements free the room, and its checkpoint is taken then.
 */
/* The newest checkpoint awaiting an ack has a device's cut incomplete:
 * the backup holds it (and every later one until a cut is complete). */
static bool pending_held(const struct primary *p)
{
	return p->npending && p->devs.n &&
	       (p->backup_holds ||
		!devices_all_ok(&p->devs, p->pending[p->npending - 1]->dev_verdict));
}

static bool wait_for_room(struct primary *p, uint64_t deadline_ns)
{
	unsigned limit = (unsigned)MIN(p->cfg.epochs_in_flight, (uint64_t)MAX_IN_FLIGHT);
	uint64_t stretch_start = 0, next_poll = 0, est = 0;
	uint64_t poll_ns = MAX(2000000ull, p->cfg.interval_ms * 100000ull);	/* interval / 10 */
	bool throttle_failed = false;

	limit = MIN(limit, p->nb.ops->max_closed_epochs);
	for (;;) {
		uint64_t now = now_ns(), free_bytes, wake, pending;
		bool slots, fits, room, look;

		if (p->stop || p->superseded || p->restart)
			return false;
		/* spare buffers are reused by the next checkpoint: what counts is
		 * the checkpoints that await an ack */
		pending = 0;
		for (unsigned i = 0; i < p->npending; i++)
			pending += ckpt_bytes(p->pending[i]);
		free_bytes = p->cfg.staging_limit > pending ? p->cfg.staging_limit - pending : 0;
		/* A guest whose every page fits half the free staging can neither
		 * end the epoch early nor need a pause: its count changes nothing
		 * below, and on Xen each look pauses the domain (the lab's guest
		 * is forced out of a running vCPU up to a hundred times a second
		 * at 100 ms). */
		look = p->dom.ops->dirty_pages && !p->throttled &&
		       !(p->dom.max_pages && ckpt_estimate(p->dom.max_pages) < free_bytes / 2);
		if (!look)
			est = 0;
		if (look && now >= next_poll) {
			uint64_t pages = 0;
			int r;

			pthread_mutex_unlock(&p->lock);
			r = p->dom.ops->dirty_pages(&p->dom, &pages);
			pthread_mutex_lock(&p->lock);
			if (!r)
				est = ckpt_estimate(pages);
			else if (!p->dirty_warned) {
				p->dirty_warned = true;
				log_warn("cannot count the guest's dirty pages (%s): checkpoints are not "
					 "sized before they are taken; staging is bounded by the epoch "
					 "only", strerror(-r));
			}
			next_poll = now_ns() + poll_ns;
			p->next_estimate = est;
			continue;	/* the lock was dropped: look again */
		}
		/* over the latency budget: one checkpoint shipping, one being
		 * captured, rather than several waiting for the link */
		slots = p->npending < (p->bud.pct < 100 ? MIN(limit, 2u) : limit);
		if (pending_held(p)) {
			/* The backup acks nothing until a checkpoint whose cuts are
			 * all complete: in-flight limits would only wait forever.
			 * Go on up to MAX_IN_FLIGHT (output of the held epochs is
			 * merged, see take_checkpoint); beyond that, once the
			 * devices are back, start over. */
			slots = p->npending < MAX_IN_FLIGHT;
			/* Not a stretch: the backup needs a fresh checkpoint (its
			 * marker after the device is whole) to commit the held ones,
			 * and a stretched epoch would never give it one. */
			if (!slots && devices_ready(&p->devs)) {
				p->restart = true;
				snprintf(p->restart_why, sizeof(p->restart_why), "%u checkpoints in a "
					 "row were held for a device (the most the backup holds); the "
					 "devices are back", p->npending);
				return false;
			}
		}
		fits = est <= free_bytes;
		if (!fits && !p->npending && slots) {
			/* nothing in flight and still too big: the guest dirtied
			 * more than staging-limit between two looks; take it */
			log_error("epoch %" PRIu64 ": the guest dirtied %.1f MiB, more than staging-limit "
				  "(%.1f MiB) holds: the backup may refuse this checkpoint; raise "
				  "staging-limit or shorten interval", p->epoch + 1, (double)est / 1048576,
				  (double)p->cfg.staging_limit / 1048576);
			fits = true;
		}
		room = slots && fits;
		if (room && now >= deadline_ns)
			break;
		if (room && est && est >= free_bytes / 2 && est > CKPT_MARGIN * 2) {
			p->early_epochs++;
			log_debug("epoch %" PRIu64 " ends early: %.1f MiB to stage, %.1f MiB free",
				  p->epoch + 1, (double)est / 1048576, (double)free_bytes / 1048576);
			break;
		}
		if (!fits && est && !p->throttled && !throttle_failed && p->dom.ops->throttle) {
			pthread_mutex_unlock(&p->lock);
			int r = p->dom.ops->throttle(&p->dom, true);
			pthread_mutex_lock(&p->lock);
			if (r) {
				/* not again in this epoch: the checkpoint waits for room
				 * with the guest running, as before the bound */
				throttle_failed = true;
				log_warn("cannot pause the guest for staging (%s): its next checkpoint "
					 "waits for room while it runs", strerror(-r));
			} else {
				/* loud for the first pause in a minute, then a summary a minute */
				uint64_t t = now_ns();

				p->throttle_loud = t - p->throttle_logged_ns >= 60000000000ull;
				p->throttled = true;
				p->throttles++;
				p->throttle_start_ns = t;
				if (p->throttle_loud)
					status_event(p->status, "%s primary guest-paused next_checkpoint_bytes=%"
						     PRIu64 " staging_free_bytes=%" PRIu64 " pauses=%" PRIu64,
						     p->cfg.name, est, free_bytes, p->throttles);
				if (p->throttle_loud) {
					log_warn("guest paused: its next checkpoint (%.1f MiB) does not fit "
						 "the staging free (%.1f of %.1f MiB; %u checkpoints await an "
						 "ack); it runs again with that checkpoint once "
						 "acknowledgements free room (paused %" PRIu64 " times, %.1f s "
						 "in all so far)", (double)est / 1048576,
						 (double)free_bytes / 1048576,
						 (double)p->cfg.staging_limit / 1048576, p->npending,
						 p->throttles, (double)p->throttled_ns_total / 1e9);
					p->throttle_logged_ns = t;
				} else {
					log_debug("guest paused: next checkpoint %.1f MiB, staging free "
						  "%.1f MiB", (double)est / 1048576,
						  (double)free_bytes / 1048576);
				}
			}
			continue;
		}
		if (!room && now >= deadline_ns && !stretch_start) {
			stretch_start = now;
			if (!p->stretched) {
				p->stretched = true;
				status_event(p->status, "%s primary stretched epoch=%" PRIu64
					     " in_flight=%u staging_bytes=%zu", p->cfg.name,
					     p->epoch + 1, p->npending, p->staging_bytes);
				log_warn("epoch %" PRIu64 " stretches: %u checkpoints await an ack "
					 "(limit %u), staging %zu of %" PRIu64 " bytes",
					 p->epoch + 1, p->npending, limit, p->staging_bytes,
					 p->cfg.staging_limit);
			}
		}
		/* Until the epoch's deadline or the next look at the dirty set;
		 * without room, until an ack (or a stop) wakes us through
		 * p->cond, or a second at most. */
		wake = room ? deadline_ns - now : now < deadline_ns ? deadline_ns - now : 1000000000ull;
		if (look)
			wake = MIN(wake, next_poll > now ? next_poll - now : 0);
		wait_ns(p, MAX(wake, 100000ull));
	}
	if (p->stretched && !stretch_start) {
		p->stretched = false;
		status_event(p->status, "%s primary unstretched epoch=%" PRIu64, p->cfg.name,
			     p->epoch + 1);
		log_info("epochs back to the configured interval (%" PRIu64 " ms)", p->cfg.interval_ms);
	}
	return true;
}

/*
 * The checkpoint oracle, primary side (config `verify`): while the guest
 * is still suspended, hash the next window of its pages and its vCPU
 * state into c's CKPT_VERIFY record.  A failure costs this checkpoint its
 * verification, never the checkpoint.
 */
static void verify_checkpoint(struct primary *p, struct ckpt *c, uint64_t epoch)
{
	uint64_t want = p->cfg.verify / CKPT_PAGE_SIZE + 1;	/* + the dropped page */
	int rc;

	if (!c->verify.cap &&
	    verify_set_init(&c->verify, (uint32_t)MIN(want, (uint64_t)VERIFY_MAX_PAGES))) {
		log_warn("checkpoint %" PRIu64 ": no memory for the checkpoint oracle", epoch);
		return;
	}
	c->verify.n = 0;
	c->verify.has_vcpu = false;
	c->verify.epoch = epoch;
	rc = p->dom.ops->verify_capture(&p->dom, &c->verify);
	p->dom.dropped = false;
	if (rc) {
		log_warn("checkpoint %" PRIu64 ": the checkpoint oracle could not hash the guest: %s",
			 epoch, strerror(-rc));
		return;
	}
	c->has_verify = true;
}

/*
 * Say when the devices' verdicts turn bad and when they are good again:
 * the backup commits no checkpoint whose verdicts are not all ok, so the
 * output of these epochs stays held until a later one's are.
 */
static void note_verdicts(struct primary *p, const struct ckpt *c)
{
	bool ok = devices_all_ok(&p->devs, c->dev_verdict);
	char words[64];

	if (ok && p->devs_bad) {
		log_warn("checkpoint %" PRIu64 ": every device's cut is complete again: the backup "
			 "can commit from here", c->epoch);
		status_event(p->status, "%s primary devices ok checkpoint=%" PRIu64, p->cfg.name,
			     c->epoch);
	}
	if (!ok && !p->devs_bad) {
		for (unsigned i = 0; i < p->devs.n; i++) {
			if (c->dev_verdict[i] == DEV_V_OK)
				continue;
			log_error("checkpoint %" PRIu64 ": %s: %s%s%s: the backup will not commit it; "
				  "output stays held until a checkpoint whose cuts are all complete",
				  c->epoch, p->devs.d[i].name,
				  device_verdict_str(c->dev_verdict[i], words, sizeof(words)),
				  p->devs.d[i].error[0] ? ": " : "", p->devs.d[i].error);
			status_event(p->status, "%s primary device-not-ok checkpoint=%" PRIu64
				     " device=\"%s\" verdict=\"%s\"", p->cfg.name, c->epoch,
				     p->devs.d[i].name, words);
		}
	}
	p->devs_bad = !ok;
}

/* One checkpoint: the guest's pause is suspend..resume. */
static int take_checkpoint(struct primary *p, struct ckpt *c, uint64_t epoch)
{
	uint8_t hash[32];
	char hex[65];
	uint64_t t0, t1 = 0, t2 = 0, t3, t_dev = 0;
	int rc, r;

	ckpt_reset(c, epoch);
	fault_kill("before-capture");
	if ((rc = devices_before_suspend(&p->devs, epoch))) {
		log_error("checkpoint %" PRIu64 ": a device cannot prepare its cut: %s", epoch,
			  strerror(-rc));
		return rc;
	}
	t0 = now_ns();
	if (!p->suspend_stuck)
		p->suspend_stuck = fault_hit("suspend-stuck");
	rc = fault_hit("suspend-fails") || p->suspend_stuck ? -ETIMEDOUT :
	     p->dom.ops->suspend(&p->dom);
	if (rc == -ESHUTDOWN) {
		log_error("checkpoint %" PRIu64 ": guest '%s' shut down or was destroyed by itself or "
			  "its owner: protection ends; the backup discards its standby (this is not "
			  "a failover)", epoch, p->cfg.name);
		return rc;
	}
	if (rc) {
		log_error("checkpoint %" PRIu64 ": cannot suspend the guest: %s", epoch, strerror(-rc));
		return rc;
	}
	/* The devices' cuts (a disk's marker write) run beside the capture. */
	if ((rc = devices_while_suspended(&p->devs, epoch))) {
		log_error("checkpoint %" PRIu64 ": a device cannot start its cut: %s", epoch,
			  strerror(-rc));
		goto resume;
	}
	pthread_mutex_lock(&p->nb_lock);
	if (p->merge_output && p->nb.ops->restart)
		p->nb.ops->restart(&p->nb);
	rc = p->nb.ops->close_epoch(&p->nb, epoch);
	pthread_mutex_unlock(&p->nb_lock);
	t1 = now_ns();
	if (rc) {
		log_error("checkpoint %" PRIu64 ": cannot close the output epoch: %s", epoch, strerror(-rc));
		goto resume;
	}
	p->dom.drop_page = p->cfg.verify && p->dom.ops->verify_capture &&
			   fault_hit("verify-drop-page");
	rc = p->dom.ops->capture(&p->dom, c);
	fault_kill("mid-capture");
	if (p->dom.dropped) {
		log_warn("fault point 'verify-drop-page' fired: pfn %#" PRIx64 " %s checkpoint %"
			 PRIu64 "; the checkpoint oracle must report it", p->dom.dropped_pfn,
			 strcmp(p->dom.ops->name, "xen") ? "left out of" : "with one byte inverted in",
			 epoch);
		p->digest_off = true;	/* the standby is wrong on purpose from here */
	}
	if (!rc && p->cfg.verify && p->dom.ops->verify_capture)
		verify_checkpoint(p, c, epoch);
	/* tests: the whole guest's hash (the oracle, when on, stands in for it:
	 * hashing a big guest at every pause would throttle it by itself) */
	if (!rc && testlog_enabled() && !p->digest_off && !p->cfg.verify && p->dom.ops->guest_hash &&
	    p->dom.ops->guest_hash(&p->dom, hash) == 0) {
		uint64_t step = 0;	/* memdom: the guest's step, for tests/test_observer.c */

		hex_encode(hash, 32, hex);
		testlog("ckpt %" PRIu64 " %s step %" PRIu64, epoch, hex,
			memdom_state_step(c, &step) == 0 ? step : 0);
		memcpy(c->digest, hash, 32);	/* travels in CKPT_END */
		c->has_digest = true;
	}
	t2 = now_ns();
resume:
	if (p->devs.n) {
		/* Wait for every cut before the guest resumes (even after a
		 * failed capture: no marker may land after the resume). */
		int d = devices_sync(&p->devs, epoch, c->dev_verdict);

		c->ndev = p->devs.n;
		memcpy(c->dev_session, p->devs.d[0].session, sizeof(c->dev_session));
		if (d && !rc)
			rc = d;
		t_dev = now_ns();
	}
	if (p->switch_final && !rc) {
		r = 0;		/* the switchover's last checkpoint: the guest stays paused */
		p->sw_t0 = t0;
	} else {
		r = p->dom.ops->resume(&p->dom);
	}
	t3 = now_ns();
	if (r) {
		if (r == -ESHUTDOWN)
			log_error("checkpoint %" PRIu64 ": guest '%s' was destroyed or ended while "
				  "suspended for it: protection ends; the backup discards its standby "
				  "(this is not a failover)", epoch, p->cfg.name);
		else
			log_error("checkpoint %" PRIu64 ": cannot resume the guest: %s", epoch,
				  strerror(-r));
		p->resume_failed = true;
		return r;
	}
	if (rc) {
		log_error("checkpoint %" PRIu64 ": capture failed: %s", epoch, strerror(-rc));
		return rc;
	}
	c->t_suspend_us = (t1 - t0) / 1000;
	c->t_capture_us = (t2 - t1) / 1000;
	c->t_resume_us = (t3 - t2) / 1000;
	c->captured_at_ns = t3;
	pthread_mutex_lock(&p->lock);
	c->epoch_start_ns = p->last_resume_ns;
	p->last_resume_ns = t3;
	p->last_pause_us = (t3 - t0) / 1000;
	hist_add(&p->pause_hist, (double)(t3 - t0) / 1e9);
	p->last_dirty = c->npages;
	p->pause_us[p->nepoch_times % HZ_WINDOW] = p->last_pause_us;
	p->epoch_times[p->nepoch_times++ % HZ_WINDOW] = t3;
	pthread_mutex_unlock(&p->lock);
	log_debug("checkpoint %" PRIu64 ": %" PRIu64 " pages, pause %.2f ms (suspend %.2f, "
		  "capture %.2f, devices' cut after capture %.2f, resume %.2f)", epoch, c->npages,
		  (double)(t3 - t0) / 1e6, (double)(t1 - t0) / 1e6, (double)(t2 - t1) / 1e6,
		  t_dev ? (double)(t_dev - t2) / 1e6 : 0.0,
		  (double)(t3 - (t_dev ? t_dev : t2)) / 1e6);
	if (p->devs.n)
		note_verdicts(p, c);
	return 0;
}

/*
 * A checkpoint failed and the guest runs on (it did not suspend in time,
 * or its capture failed and it was resumed): the stream is broken (libxc's
 * save ends with it), but nothing else is.  Start protection over with a
 * new initial copy rather than end it, after 200 ms doubling per failure;
 * output not yet acknowledged stays held until the new stream's first ack
 * (on-replication-loss = wait) or is released with the standby discarded
 * (release), as for a lost link.  CKPT_FAIL_LIMIT failures with no ack
 * between them (a guest that never suspends) end protection as before:
 * false.  Lock held.
 */
#define CKPT_FAIL_LIMIT 3

static bool go_unprotected(struct primary *p, bool link_down, const char *restart_why,
			   const char *detail);

/* Wait (lock held) until end, or until stopped or superseded. */
static void backoff_wait(struct primary *p, uint64_t end)
{
	while (!p->stop && !p->superseded && now_ns() < end)
		wait_ns(p, end - now_ns());
}

static bool checkpoint_failed(struct primary *p, uint64_t epoch, int rc)
{
	char why[sizeof(p->restart_why)];
	uint64_t wait_ms, end;

	if (p->stop || p->superseded || p->sw != SW_NONE)
		return false;
	if (++p->ckpt_failures >= CKPT_FAIL_LIMIT) {
		log_error("checkpoint %" PRIu64 " failed (%s): %u checkpoints in a row failed "
			  "with none acknowledged between them: protection ends", epoch,
			  strerror(-rc), p->ckpt_failures);
		return false;
	}
	p->ckpt_fail_epoch = epoch;
	wait_ms = 200ull << (p->ckpt_failures - 1);
	snprintf(why, sizeof(why), "checkpoint %" PRIu64 " could not be taken (%s); the guest "
		 "runs on (%u failed in a row; protection ends at %u)", epoch, strerror(-rc),
		 p->ckpt_failures, CKPT_FAIL_LIMIT);
	if (p->cfg.on_replication_loss == REPL_LOSS_RELEASE) {
		pthread_mutex_unlock(&p->lock);
		go_unprotected(p, false, why, "UNPROTECTED: a checkpoint failed; output released "
			       "(on-replication-loss = release), protection starts over");
		pthread_mutex_lock(&p->lock);
	} else {
		p->restart = true;
		snprintf(p->restart_why, sizeof(p->restart_why), "%s", why);
		set_state(p, P_DEGRADED, "%s; protection starts over with a new initial copy, "
			  "output held until its first acknowledgement", why);
	}
	log_error("%s: protection starts over with a new initial copy in %.1f s", why,
		  (double)wait_ms / 1000.0);
	end = now_ns() + wait_ms * 1000000ull;
	backoff_wait(p, end);
	return true;
}

/*
 * Start protection over: the backup holds nothing of this stream (it
 * restarted, or this primary released its output).  Dirty tracking is
 * turned off and the checkpoints awaiting an ack are dropped (the new
 * backup could not apply them); output still held stays held and goes out
 * with the new stream's first acknowledged checkpoint.  Lock held.
 */
static void drop_stream(struct primary *p)
{
	p->backup_holds = 0;
	pthread_mutex_unlock(&p->lock);
	if (p->dom.ops->stop_protection)
		p->dom.ops->stop_protection(&p->dom);
	pthread_mutex_lock(&p->lock);
	while (p->shipping)
		pthread_cond_wait(&p->cond, &p->lock);
	while (p->npending) {
		struct ckpt *c = p->pending[--p->npending];
		if (p->nspare < MAX_IN_FLIGHT)
			p->spare[p->nspare++] = c;
		else
			ckpt_free(c);
	}
	recount_staging(p);
	p->ship_next = p->epoch + 1;
	pthread_mutex_lock(&p->nb_lock);
	if (p->nb.ops->restart)
		p->nb.ops->restart(&p->nb);
	pthread_mutex_unlock(&p->nb_lock);
}

/* The initial copy failed: wait before the next try (200 ms, doubling, at
 * most 30 s), or until stopped.  Lock held. */
static void copy_backoff(struct primary *p, int rc)
{
	uint64_t wait_ms = MIN(200ull << MIN(p->copy_failures, 8u), 30000ull);
	uint64_t end = now_ns() + wait_ms * 1000000ull;

	p->copy_failures++;
	log_error("initial copy failed: %s; trying again in %.1f s (attempt %u failed)",
		  strerror(-rc), (double)wait_ms / 1000.0, p->copy_failures);
	if (!p->superseded && !p->stop)
		set_state(p, P_DEGRADED, "%sinitial copy failed (%s), attempt %u; trying again in "
			  "%.1f s", p->released ? "UNPROTECTED (output flows): " : "", strerror(-rc),
			  p->copy_failures, (double)wait_ms / 1000.0);
	backoff_wait(p, end);
}

/* Wait on p->cond until done(p) or the deadline (lock held). */
static bool wait_until(struct primary *p, bool (*done)(struct primary *), uint64_t deadline_ns)
{
	while (!done(p) && !p->stop && now_ns() < deadline_ns)
		wait_ns(p, MIN(deadline_ns - now_ns(), 50000000ull));
	return done(p);
}

/* A switchover waits this long at most for the backup's activation, while
 * the backup is heard. */
#define SW_ACTIVATION_MAX_NS (600ull * 1000000000ull)

static bool final_acked(struct primary *p) { return p->last_acked >= p->sw_epoch; }
static bool sw_answered(struct primary *p) { return p->sw_confirmed || p->sw_failed; }
static bool sw_sent(struct primary *p) { return p->sw_send == 2 || p->sw_send == 3; }

/*
 * After FAILOVER was sent, the backup did not start the guest (its
 * activation failed, or it restarted before it activated): the paused copy
 * here is the only one.  Resume it, as a new life of the guest from
 * checkpoint `epoch`: a new protection generation, written down, so that
 * the backup's standby or disk of the attempt counts as diverged (its
 * disks resync in full) and never as current.  Lock held.  Returns 0 (the
 * switchover is abandoned: the loop goes on).
 */
static int resume_after_switch(struct primary *p, uint64_t epoch, const char *why)
{
	int rc, grc;

	p->switching = false;
	p->sw = SW_NONE;
	p->gen.gen++;
	p->gen.checkpoint = epoch;
	snprintf(p->gen.what, sizeof(p->gen.what), "primary");
	pthread_mutex_unlock(&p->lock);
	grc = generation_save(&p->cfg, &p->gen);
	rc = p->dom.ops->resume(&p->dom);
	pthread_mutex_lock(&p->lock);
	if (grc)
		log_error("cannot write the protection generation %" PRIu64 ": %s", p->gen.gen,
			  strerror(-grc));
	snprintf(p->sw_result, sizeof(p->sw_result), "failed: %s; the guest resumed here%s from "
		 "checkpoint %" PRIu64 " (protection generation %" PRIu64 ") and is protected again "
		 "with a new initial copy once a backup answers", why, rc ? " (it could NOT be "
		 "resumed: see the log)" : "", epoch, p->gen.gen);
	log_warn("switchover %s", p->sw_result);
	testlog("switchover-resumed %" PRIu64, epoch);
	return 0;
}

/*
 * `tandem switchover`, in the checkpoint thread (lock held): take one
 * more checkpoint and leave the guest paused after it, wait for its ack
 * (all output is then released: the guest made none since), send
 * FAILOVER(N), and wait for the backup's word that the guest runs there
 * (FAILOVER reason 2, ERROR 6 at a reconnect or ACTIVE on a heartbeat).
 * Then the paused copy here is destroyed and this daemon becomes the
 * backup (cmd_primary's end).  Until FAILOVER is sent the switchover can
 * be abandoned (the guest resumes here); after it, only the backup may run
 * the guest: without an answer the copy here stays paused.  The blackout
 * is measured here, from the suspend to the answer: the guest started on
 * the other host at most one link delay before the answer arrived.
 * Returns 1 done or half-way (the loop ends), 0 abandoned, <0 capture
 * failed.
 */
static int switch_over(struct primary *p)
{
	uint64_t budget_ns = (2 * p->cfg.timeout_ms + 1000) * 1000000ull;
	struct ckpt *c = take_spare(p);
	uint64_t epoch = p->epoch + 1;
	const char *peer = config_peer_host(&p->cfg);
	int rc;

	if (!c)
		return -ENOMEM;
	p->switch_final = true;
	p->sw = SW_FINAL;
	pthread_mutex_unlock(&p->lock);
	rc = take_checkpoint(p, c, epoch);
	pthread_mutex_lock(&p->lock);
	p->switch_final = false;
	if (rc) {
		ckpt_free(c);
		p->sw = SW_NONE;
		snprintf(p->sw_result, sizeof(p->sw_result), "failed: the last checkpoint could not "
			 "be taken (%s)", strerror(-rc));
		return rc;
	}
	p->epoch = epoch;
	p->sw_epoch = epoch;
	hb_set_epoch(p->hb, epoch);
	p->pending[p->npending++] = c;
	recount_staging(p);
	pthread_cond_broadcast(&p->cond);
	set_state(p, P_PROTECTING, "switchover: guest paused at checkpoint %" PRIu64 ", waiting for "
		  "its acknowledgement", epoch);
	snprintf(p->sw_result, sizeof(p->sw_result), "in progress: guest paused at checkpoint %"
		 PRIu64, epoch);
	log_info("switchover: the guest is paused at checkpoint %" PRIu64 "; waiting for its "
		 "acknowledgement", epoch);
	if (!wait_until(p, final_acked, now_ns() + budget_ns)) {
		pthread_mutex_unlock(&p->lock);
		rc = p->dom.ops->resume(&p->dom);
		pthread_mutex_lock(&p->lock);
		p->sw = SW_NONE;
		snprintf(p->sw_result, sizeof(p->sw_result), "failed: checkpoint %" PRIu64 " was not "
			 "acknowledged within %" PRIu64 " ms; switchover abandoned, the guest runs on "
			 "here%s", epoch, budget_ns / 1000000, rc ? " (it could NOT be resumed: see "
			 "the log)" : "");
		log_error("switchover: %s", p->sw_result);
		set_state(p, P_PROTECTING, "checkpointing every %" PRIu64 " ms (the switchover was "
			  "abandoned)", p->cfg.interval_ms);
		return 0;
	}
	/* From here only the backup may run the guest.  The shipping thread
	 * sends it (it owns the channel's sends while the link is up). */
	p->switching = true;
	p->sw = SW_SENT;
	p->sw_send = 1;
	pthread_cond_broadcast(&p->cond);
	wait_until(p, sw_sent, now_ns() + budget_ns);
	while (p->sw_send == 4)	/* being sent: its outcome decides (the send is bounded) */
		wait_ns(p, 50000000ull);
	if (p->sw_send != 2) {	/* never sent, or not whole: the backup cannot act on it */
		p->sw_send = 0;
		/* not sent: nothing can activate from it */
		p->switching = false;
		pthread_mutex_unlock(&p->lock);
		rc = p->dom.ops->resume(&p->dom);
		pthread_mutex_lock(&p->lock);
		p->sw = SW_NONE;
		snprintf(p->sw_result, sizeof(p->sw_result), "failed: the switchover could not be sent "
			 "to the backup; abandoned, the guest runs on here");
		log_error("switchover: %s", p->sw_result);
		return 0;
	}
	log_info("switchover: checkpoint %" PRIu64 " acknowledged; the backup on %s activates from it",
		 epoch, peer);
	set_state(p, P_PROTECTING, "switchover: the backup on %s activates from checkpoint %" PRIu64,
		  peer, epoch);
	/* The answer comes once the guest runs there: a Xen activation takes
	 * seconds (a minute under an emulated CPU).  Wait while the backup is
	 * still heard (it is activating), up to SW_ACTIVATION_MAX_NS; it is
	 * half-way only when the backup falls silent for the budget. */
	{
		uint64_t t_sent = now_ns(), next_log = t_sent + 10000000000ull;

		/* Its heartbeats say ACTIVE from its decision on, before the
		 * guest runs: that is its acceptance, but the answer, with the
		 * time the blackout ends, still comes on the stream; wait for it
		 * while the stream is up and heard. */
		while (!sw_answered(p) && !p->stop) {
			uint64_t now = now_ns();

			if (now - p->last_heard_ns > budget_ns || now - t_sent > SW_ACTIVATION_MAX_NS)
				break;
			if (p->sw_active_heard && !p->link_up)
				break;
			if (now >= next_log) {
				log_info("switchover: the backup on %s is still activating (%.0f s); "
					 "waiting while it is heard", peer, (double)(now - t_sent) / 1e9);
				next_log = now + 10000000000ull;
			}
			wait_ns(p, 50000000ull);
		}
	}
	if (!sw_answered(p) && !p->sw_active_heard) {
		/*
		 * Half-way: the backup may or may not run the guest.  The copy
		 * here stays paused until the backup tells: ACTIVE (or a newer
		 * generation) at a reconnect, and the switchover is done; or a
		 * backup with no standby at all and no newer generation, which
		 * can only be a backup that restarted before it activated (one
		 * daemon per VM and role), and the guest resumes here.
		 */
		snprintf(p->sw_result, sizeof(p->sw_result), "FAILED half-way: the backup on %s did not "
			 "say that it runs the guest from checkpoint %" PRIu64 "; the guest stays PAUSED "
			 "here until the backup answers (the other host may run it): check `tandem "
			 "status %s` on %s", peer, epoch, p->cfg.name, peer);
		log_error("switchover: %s", p->sw_result);
		set_state(p, P_DEGRADED, "%s", p->sw_result);
		while (!p->stop && !p->sw_confirmed && !p->sw_active_heard && !p->sw_peer_restarted &&
		       !p->sw_failed)
			wait_ns(p, 100000000ull);
		if (p->stop) {
			p->superseded = true;
			p->stepped_down = true;	/* keep it paused: no step_down (it would resume first) */
			return 1;
		}
		if (p->sw_peer_restarted && !p->sw_confirmed && !p->sw_active_heard &&
		    !p->sw_failed) {
			char why[200];

			snprintf(why, sizeof(why), "the backup on %s restarted before it activated "
				 "(no standby, generation not newer)", peer);
			return resume_after_switch(p, epoch, why);
		}
	}
	if (p->sw_failed && !p->sw_confirmed) {
		char why[200];

		snprintf(why, sizeof(why), "the backup on %s could not start the guest (its "
			 "activation failed: see its log) and discarded its standby", peer);
		return resume_after_switch(p, epoch, why);
	}
	double blackout_ms = p->sw_confirmed ? (double)(p->sw_t_reply - p->sw_t0) / 1e6 : -1;
	pthread_mutex_unlock(&p->lock);
	rc = p->dom.ops->halt ? p->dom.ops->halt(&p->dom, true) : -ENOSYS;
	pthread_mutex_lock(&p->lock);
	if (blackout_ms >= 0)
		snprintf(p->sw_result, sizeof(p->sw_result), "done: the guest runs on %s from "
			 "checkpoint %" PRIu64 "; blackout %.1f ms (paused here to running there, at "
			 "most one link delay less); this host is now its backup", peer, epoch,
			 blackout_ms);
	else
		snprintf(p->sw_result, sizeof(p->sw_result), "done: %s is active from checkpoint %"
			 PRIu64 " (its heartbeats say so; its word that the guest runs was lost, so the "
			 "blackout was not measured); this host is now its backup", peer, epoch);
	log_warn("switchover %s%s", p->sw_result, rc ? " (the paused copy here could NOT be "
		 "destroyed: see the log)" : "");
	testlog("switchover %" PRIu64 " blackout_ms=%.1f", epoch, blackout_ms);
	set_state(p, P_STOPPING, "switched over: the guest runs on %s; this host becomes its backup",
		  peer);
	p->become_backup = true;
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	uv_async_send(&p->done_async);
	return 1;
}

/* `tandem switchover NAME` (status socket; the loop thread). */
static void switchover_request(struct primary *p, char *buf, size_t len)
{
	pthread_mutex_lock(&p->lock);
	if (!p->cfg.hosts.n)
		snprintf(buf, len, "refused: a switchover needs hosts = NAME ADDR:PORT, NAME ADDR:PORT "
			 "in the file on both hosts (docs/configuration.md)\n");
	else if (!p->dom.ops->become_primary)
		snprintf(buf, len, "refused: the %s driver cannot switch over yet\n", p->dom.ops->name);
	else if (p->sw != SW_NONE)
		snprintf(buf, len, "refused: a switchover is already under way (%s)\n", p->sw_result);
	else if (p->state != P_PROTECTING || !p->link_up || !p->last_acked || p->released)
		snprintf(buf, len, "refused: %s is not protected now (%s: %s); a switchover moves a "
			 "protected guest\n", p->cfg.name, pstate_names[p->state], p->detail);
	else {
		p->sw = SW_REQUESTED;
		p->sw_confirmed = p->sw_active_heard = p->sw_peer_restarted = p->sw_failed = false;
		snprintf(p->sw_result, sizeof(p->sw_result), "requested");
		log_warn("switchover requested by the operator: %s moves to %s", p->cfg.name,
			 config_peer_host(&p->cfg));
		snprintf(buf, len, "ok: switching %s over to %s\n", p->cfg.name,
			 config_peer_host(&p->cfg));
		pthread_cond_broadcast(&p->cond);
	}
	pthread_mutex_unlock(&p->lock);
}

static void *ckpt_main(void *arg)
{
	struct primary *p = arg;
	struct domain_sink sink = { deliver_round, on_progress, p };
	uint64_t deadline;
	int rc;

	/*
	 * One protection stream per turn: the initial copy, then checkpoints
	 * until stopped, superseded, or the stream must start over (the backup
	 * holds no standby of it, or output was released).
	 */
	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->link_up && !p->stop && !p->superseded)
			pthread_cond_wait(&p->cond, &p->lock);
		if (p->stop || p->superseded)
			break;
		if (p->restart) {
			log_warn("protection starts over with a new initial copy: %s", p->restart_why);
			drop_stream(p);
			p->restart = false;
			if (p->stop || p->superseded)
				break;
			/* Released output flows until the new stream's first
			 * checkpoint closes an epoch; held output stays held. */
			set_state(p, P_SYNCING, "initial copy of the running guest (%s)", p->released ?
				  "UNPROTECTED: output flows until its first checkpoint" :
				  "output held until its first acknowledgement");
		} else {
			set_state(p, P_SYNCING, "initial copy of the running guest");
		}
		pthread_mutex_unlock(&p->lock);
		p->progress_start_ns = now_ns();
		devices_new_session(&p->devs);	/* its markers are this stream's */
		p->last_resume_ns = 0;
		rc = p->dom.ops->start_protection(&p->dom, &sink);
		{
			int src = round_wait(p);	/* a piece the driver gave up after */

			rc = rc ? rc : src;
			ckpt_free(p->rs_c);	/* (a piece's room: not needed until the next copy) */
			p->rs_c = NULL;
		}
		pthread_mutex_lock(&p->lock);
		if (rc) {
			/* the backup discards a standby without a checkpoint */
			pthread_mutex_unlock(&p->lock);
			if (p->dom.ops->stop_protection)
				p->dom.ops->stop_protection(&p->dom);
			pthread_mutex_lock(&p->lock);
			if (rc == -ESHUTDOWN) {
				/* no copy of a guest that is gone: as at a checkpoint */
				log_error("guest '%s' shut down or was destroyed by itself or its "
					  "owner during its initial copy: protection ends; the backup "
					  "discards what it received (this is not a failover)",
					  p->cfg.name);
				p->exit_code = EXIT_GUEST_ENDED;
				set_state(p, P_STOPPING, "the guest ended (shut down or destroyed) "
					  "during its initial copy: protection ends");
				p->stop = true;
				break;
			}
			copy_backoff(p, rc);
			continue;
		}
		p->copy_failures = 0;
		log_info("initial copy done; taking checkpoints every %" PRIu64 " ms", p->cfg.interval_ms);
		p->last_ack_ns = now_ns();	/* the clock for "acknowledged within timeout" */
		if (!p->superseded)
			set_state(p, P_PROTECTING, "checkpointing every %" PRIu64 " ms",
				  p->cfg.interval_ms);
		deadline = now_ns();
		for (;;) {
			struct ckpt *c;
			uint64_t epoch, t_room = now_ns(), late_ns;

			if (!wait_for_room(p, deadline))
				break;
			late_ns = now_ns() - MAX(t_room, deadline);
			if (late_ns > 2000000ull)
				log_debug("epoch %" PRIu64 ": began %.1f ms past its deadline, waiting "
					  "for an ack", p->epoch + 1, (double)late_ns / 1e6);
			if (p->sw == SW_REQUESTED) {
				rc = switch_over(p);
				if (rc > 0)
					break;		/* done, or half-way: the loop ends */
				if (rc < 0) {
					p->exit_code = EXIT_FAILURE_RUNTIME;
					p->stop = true;
					break;
				}
				deadline = now_ns();
				continue;		/* abandoned: the guest runs on here */
			}
			c = take_spare(p);
			epoch = p->epoch + 1;
			/* behind a held checkpoint, a backend that holds no more
			 * closed epochs joins this epoch's output to the held one:
			 * released one ack later, never earlier */
			p->merge_output = pending_held(p) &&
					  p->npending >= p->nb.ops->max_closed_epochs;
			pthread_mutex_unlock(&p->lock);
			if (!c) {
				log_error("out of memory for staging");
				pthread_mutex_lock(&p->lock);
				p->exit_code = EXIT_FAILURE_RUNTIME;
				p->stop = true;
				break;
			}
			p->resume_failed = false;
			rc = take_checkpoint(p, c, epoch);
			pthread_mutex_lock(&p->lock);
			unthrottled(p, "its checkpoint fitted");
			if (!rc && p->released && !p->restart)
				p->released = false;	/* its close_epoch holds output again */
			if (rc && rc != -ESHUTDOWN && !p->resume_failed &&
			    checkpoint_failed(p, epoch, rc)) {
				ckpt_free(c);
				break;			/* the stream starts over */
			}
			if (rc) {
				ckpt_free(c);
				p->exit_code = rc == -ESHUTDOWN ? EXIT_GUEST_ENDED : EXIT_FAILURE_RUNTIME;
				if (rc == -ESHUTDOWN)
					set_state(p, P_STOPPING, "the guest ended (shut down or destroyed): "
						  "protection ends");
				p->stop = true;
				break;
			}
			p->epoch = epoch;
			hb_set_epoch(p->hb, epoch);
			p->pending[p->npending++] = c;
			recount_staging(p);
			pthread_cond_broadcast(&p->cond);
			deadline = c->captured_at_ns + p->cfg.interval_ms * 1000000ull;
		}
		if (p->throttled) {
			pthread_mutex_unlock(&p->lock);
			p->dom.ops->throttle(&p->dom, false);
			pthread_mutex_lock(&p->lock);
			unthrottled(p, "protection stops or starts over");
		}
		if (p->stop || p->superseded)
			break;
	}
	p->ckpt_exited = true;
	bool stepping_down = p->superseded && !p->stepped_down;
	p->stepped_down |= stepping_down;
	pthread_mutex_unlock(&p->lock);
	if (stepping_down)
		step_down(p);
	uv_async_send(&p->done_async);
	return NULL;
}

/* ---- the shipping thread ------------------------------------------------- */

static void *ship_main(void *arg)
{
	struct primary *p = arg;
	uint64_t hb_ns = p->cfg.heartbeat_interval_ms * 1000000ull;

	pthread_mutex_lock(&p->lock);
	while (!p->stop && !p->superseded) {
		struct channel *ch = p->link_up && !p->shipping ? p->ch : NULL;

		if (ch && p->sw_send == 1 && p->last_shipped >= p->sw_epoch) {	/* switchover */
			uint8_t buf[FAILOVER_LEN];
			struct wire_failover f = { FAILOVER_SWITCHOVER, p->sw_epoch };
			int rc;

			p->shipping = true;
			p->sw_send = 4;		/* in flight: no longer to be called off */
			pthread_mutex_unlock(&p->lock);
			wire_put_failover(buf, &f);
			rc = channel_send(ch, REC_FAILOVER, buf, FAILOVER_LEN);
			pthread_mutex_lock(&p->lock);
			p->shipping = false;
			p->sw_send = rc ? 3 : 2;
			pthread_cond_broadcast(&p->cond);
			continue;
		}
		if (ch && p->set_interval_pending) {	/* between two checkpoints */
			uint8_t buf[SET_LEN];

			put_be32(buf, SET_KEY_INTERVAL);
			put_be32(buf + 4, 0);
			put_be64(buf + 8, p->cfg.interval_ms);
			p->set_interval_pending = false;
			p->shipping = true;
			pthread_mutex_unlock(&p->lock);
			if (channel_send(ch, REC_SET, buf, SET_LEN))
				log_warn("could not tell the backup the new interval: the link broke; "
					 "it will refuse this primary's configuration until both "
					 "agree (tandem set, or the files and a restart)");
			pthread_mutex_lock(&p->lock);
			p->shipping = false;
			pthread_cond_broadcast(&p->cond);
			continue;
		}

		if (ch && !p->restart && !p->released && p->npending &&
		    p->ship_next <= p->pending[p->npending - 1]->epoch &&
		    p->ship_next >= p->pending[0]->epoch) {
			struct ckpt *c = p->pending[p->ship_next - p->pending[0]->epoch];
			uint64_t epoch = c->epoch;
			int rc;

			/* Mark it shipped before sending: its ack may arrive before we
			 * relock, and the ack handler may then recycle c. */
			p->ship_next = epoch + 1;
			p->shipping = true;
			pthread_mutex_unlock(&p->lock);
			uint64_t t0 = now_ns();
			rc = ship_ckpt(ch, c, c->has_digest ? c->digest : NULL);
			uint64_t t1 = now_ns();
			pthread_mutex_lock(&p->lock);
			p->shipping = false;
			pthread_cond_broadcast(&p->cond);
			if (rc)
				continue;	/* the link thread sees the break and reconnects */
			log_debug("checkpoint %" PRIu64 ": its %zu bytes shipped in %.1f ms, from %.1f ms "
				  "after its capture", epoch, c->blob_len + c->npages * CKPT_PAGE_SIZE,
				  (double)(t1 - t0) / 1e6, (double)(t0 - c->captured_at_ns) / 1e6);
			p->last_shipped = MAX(p->last_shipped, epoch);
			p->last_sent_ns = now_ns();
			note_sent(p, ch);
			fault_kill("after-ship-before-ack");
			continue;
		}
		if (ch && now_ns() - p->last_sent_ns >= hb_ns) {
			uint8_t buf[HEARTBEAT_LEN];
			struct wire_heartbeat hb = { p->hb_seq++, now_ns(), p->epoch };

			p->shipping = true;
			pthread_mutex_unlock(&p->lock);
			wire_put_heartbeat(buf, &hb);
			if (channel_send(ch, REC_HEARTBEAT, buf, HEARTBEAT_LEN) == 0)
				p->last_sent_ns = now_ns();
			pthread_mutex_lock(&p->lock);
			p->shipping = false;
			pthread_cond_broadcast(&p->cond);
			continue;
		}
		/* Until the next heartbeat is due; a new checkpoint, the link
		 * coming up or a stop wakes us through p->cond. */
		{
			uint64_t idle = now_ns() - p->last_sent_ns;
			wait_ns(p, ch && idle < hb_ns ? hb_ns - idle : hb_ns);
		}
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* ---- the receiving thread ------------------------------------------------ */

/*
 * The added-latency budget.  The oldest packet of epoch N waits the
 * epoch's length and then until N's ack: that is N's added latency.  When
 * it exceeds three quarters of latency-budget the guest is slowed (the
 * scheduler's cap on Xen, its write rate for memdom) in proportion to the
 * excess, and fewer checkpoints go in flight, so that fewer of them wait
 * only for the link; after 5 acks in a row under 40% of the budget, and
 * ten times the added latency after the last change, the guest speeds up
 * again, a step at a time, to full speed.  Each change waits for the ack
 * of a checkpoint taken after it before the next.  Returns the speed to set, or 0 for no
 * change.  Lock held.
 */
static unsigned budget_step(struct primary *p, uint64_t epoch, double added_ms)
{
	double budget = (double)p->cfg.latency_budget_ms;
	unsigned pct = p->bud.pct, want = pct;

	p->bud.last_ms = added_ms;
	if (!p->cfg.latency_budget_ms || p->bud.unsupported)
		return 0;
	/* aim under the budget (three quarters of it), so that the tail, not
	 * only the median, stays within it */
	if (added_ms > 0.75 * budget) {
		p->bud.calm = 0;
		if (epoch < p->bud.settle_epoch)
			return 0;	/* the last change has not shown yet */
		double w = (double)pct * 0.6 * budget / added_ms;

		want = (unsigned)MAX(5.0, MIN(w, (double)pct * 0.9));
		if (want >= pct && pct > 5)
			want = pct - 1;
		snprintf(p->bud.cause, sizeof(p->bud.cause), "checkpoint %" PRIu64 "'s output "
			 "waited %.0f ms, over three quarters of the latency-budget of %.0f ms "
			 "(%.1f MiB of checkpoints await an ack)", epoch, added_ms, budget,
			 (double)p->staging_bytes / 1048576);
	} else if (added_ms < 0.4 * budget && pct < 100) {
		/* speed up slowly: after 5 calm acks in a row, a tenth more,
		 * and a single point below 20%: there a point is already 5-20%
		 * more dirtying, and the lab's 1 GiB guest overshot the budget
		 * after 2-point steps at 5-13% */
		if (++p->bud.calm < 5 || epoch < p->bud.settle_epoch)
			return 0;
		/* and not sooner than ten times the added latency after the
		 * last change: a faster guest's bigger checkpoints fill the
		 * pipeline for several round trips before its acks show them
		 * (the lab's 1 GiB guest: its overshoots came 5-11 s after a
		 * speed-up, with 1 s added latency; docs/lab.md, "Real sizes") */
		if (now_ns() - p->bud.changed_ns < (uint64_t)(10.0 * added_ms * 1e6))
			return 0;
		p->bud.calm = 0;
		want = MIN(100u, pct + MAX(1u, pct / 10));
		snprintf(p->bud.cause, sizeof(p->bud.cause), "5 checkpoints' output waited under "
			 "%.0f ms (the last %.0f ms), under 40%% of the latency-budget of %.0f ms",
			 0.4 * budget, added_ms, budget);
	} else {
		p->bud.calm = 0;
	}
	if (want == pct)
		return 0;
	p->bud.settle_epoch = p->epoch + 1;
	return want;
}

static void budget_apply(struct primary *p, unsigned want)
{
	unsigned was;
	int rc;

	if (!want)
		return;
	if (!p->dom.ops->set_speed) {
		rc = -ENOTSUP;
	} else {
		rc = p->dom.ops->set_speed(&p->dom, want);
	}
	pthread_mutex_lock(&p->lock);
	was = p->bud.pct;
	if (rc) {
		p->bud.unsupported = true;
		pthread_mutex_unlock(&p->lock);
		log_error("latency-budget: cannot slow the guest (%s): the budget is not held; "
			  "output waits as long as the link makes it", strerror(-rc));
		return;
	}
	p->bud.pct = want;
	p->bud.changes++;
	p->bud.changed_ns = now_ns();
	pthread_mutex_unlock(&p->lock);
	status_event(p->status, "%s primary speed pct=%u from=%u cause=\"%s\"", p->cfg.name, want,
		     was, p->bud.cause);
	testlog("speed %u", want);
	if (was == 100)
		log_warn("latency-budget: guest slowed to %u%% of its CPU: %s", want, p->bud.cause);
	else if (want == 100)
		log_warn("latency-budget: guest back at full speed: %s", p->bud.cause);
	else
		log_info("latency-budget: guest at %u%% (was %u%%): %s", want, was, p->bud.cause);
}

static void handle_ack(struct primary *p, const struct wire_ack *a)
{
	unsigned speed = 0;
	int rc;

	if (a->epoch == 0)
		return;		/* a round of the initial copy */
	pthread_mutex_lock(&p->lock);
	if (p->superseded) {
		pthread_mutex_unlock(&p->lock);
		return;
	}
	if (a->epoch >= p->ship_next || a->epoch <= p->last_acked) {
		pthread_mutex_unlock(&p->lock);
		log_error("ack for checkpoint %" PRIu64 " does not match (last sent %" PRIu64
			  ", last acked %" PRIu64 "): dropping the connection to start again",
			  a->epoch, p->ship_next - 1, p->last_acked);
		pthread_mutex_lock(&p->lock);
		if (p->ch)
			channel_shutdown(p->ch);
		pthread_mutex_unlock(&p->lock);
		return;
	}
	pthread_mutex_lock(&p->nb_lock);
	rc = p->nb.ops->release(&p->nb, a->epoch);
	pthread_mutex_unlock(&p->nb_lock);
	if (rc)
		log_error("cannot release output epoch %" PRIu64 ": %s", a->epoch, strerror(-rc));
	p->last_acked = a->epoch;
	p->last_ack_ns = now_ns();
	if (p->ckpt_failures && a->epoch > p->ckpt_fail_epoch) {
		log_info("checkpoint %" PRIu64 " acknowledged: protection is back after %u failed "
			 "checkpoint%s", a->epoch, p->ckpt_failures, p->ckpt_failures > 1 ? "s" : "");
		p->ckpt_failures = 0;
	}
	if (p->backup_holds && a->epoch >= p->backup_holds) {
		log_info("the backup commits again (checkpoint %" PRIu64 ")", a->epoch);
		p->backup_holds = 0;
	}
	testlog("ack %" PRIu64, a->epoch);
	if (p->adopted && !p->reprotected) {
		p->reprotected = true;
		log_warn("re-protected: protection is back: checkpoint %" PRIu64 " acknowledged by "
			 "the backup on %s (generation %" PRIu64 "); a failure of this host now fails "
			 "over to it", a->epoch, p->peer_host[0] ? p->peer_host : "the other host",
			 p->gen.gen);
		testlog("reprotected %" PRIu64, a->epoch);
	}
	if (!p->notified_ready) {	/* systemd: protected from the first ack on */
		p->notified_ready = true;
		notify_status("protecting: checkpoint %" PRIu64 " acknowledged", a->epoch);
		notify_ready();
	}
	fault_kill("primary-exit-after-release");
	if (p->npending && a->epoch - p->pending[0]->epoch < p->npending) {
		const struct ckpt *c = p->pending[a->epoch - p->pending[0]->epoch];
		log_debug("checkpoint %" PRIu64 ": acked %.1f ms after its capture (the backup's "
			  "commit: %.1f ms)", a->epoch, (double)(now_ns() - c->captured_at_ns) / 1e6,
			  (double)a->commit_us / 1e3);
	}
	while (p->npending && p->pending[0]->epoch <= a->epoch) {
		struct ckpt *c = p->pending[0];
		hist_add(&p->latency_hist, (double)(now_ns() - c->captured_at_ns) / 1e9);
		if (c->epoch == a->epoch) {
			/* from the start of its epoch: the previous resume */
			uint64_t start = c->epoch_start_ns ? c->epoch_start_ns : c->captured_at_ns -
					 p->cfg.interval_ms * 1000000ull;
			double added = (double)(now_ns() - start) / 1e6;

			testlog("added %" PRIu64 " %.1f", c->epoch, added);
			speed = budget_step(p, c->epoch, added);
		}
		memmove(p->pending, p->pending + 1, sizeof(p->pending[0]) * --p->npending);
		recount_staging(p);
		/* keep its buffers for the next checkpoint while staging holds them */
		if (p->nspare < MAX_IN_FLIGHT && p->staging_bytes + ckpt_bytes(c) <= p->cfg.staging_limit)
			p->spare[p->nspare++] = c;
		else
			ckpt_free(c);
	}
	recount_staging(p);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	budget_apply(p, speed);
}

/* The backup is heard from (records within the timeout): a send that timed
 * out only met a backup that reads slowly, e.g. while libxl applies a
 * large round of the initial copy under an emulated CPU. */
static bool backup_heard(void *arg)
{
	struct primary *p = arg;
	bool alive;

	pthread_mutex_lock(&p->lock);
	alive = !p->stop &&
		now_ns() - p->last_heard_ns <= p->cfg.timeout_ms * 1000000ull;
	pthread_mutex_unlock(&p->lock);
	return alive;
}

/*
 * Release all held output and run on unprotected: protection starts over
 * (a new initial copy) once a backup answers.  False, and nothing done,
 * when already released, stopping or superseded.  link_down: the link is
 * known gone (the link thread tears it down next).  Any thread but the
 * heartbeat's.
 */
static bool go_unprotected(struct primary *p, bool link_down, const char *restart_why,
			   const char *detail)
{
	pthread_mutex_lock(&p->lock);
	if (p->released || p->stop || p->superseded) {
		pthread_mutex_unlock(&p->lock);
		return false;
	}
	p->released = true;
	p->restart = true;
	if (link_down)
		p->link_up = false;
	snprintf(p->restart_why, sizeof(p->restart_why), "%s", restart_why);
	set_state(p, P_DEGRADED, "%s", detail);
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_mutex_lock(&p->nb_lock);
	p->nb.ops->release_all(&p->nb);
	pthread_mutex_unlock(&p->nb_lock);
	return true;
}

/*
 * The backup left on purpose (STOP from it: its operator stopped it; it
 * discarded its standby, so nothing can activate): run on unprotected,
 * output released, and keep looking for a backup; the next one gets a new
 * initial copy.  Link thread.
 */
static void backup_left(struct primary *p)
{
	char detail[sizeof(p->detail)];

	snprintf(detail, sizeof(detail), "UNPROTECTED: the backup was stopped (it discarded its "
		 "standby); output released; reconnecting, protection starts over when a backup "
		 "answers");
	if (go_unprotected(p, true, "the backup was stopped and discarded its standby", detail))
		log_error("UNPROTECTED: the backup was stopped by its operator and discarded its "
			  "standby; held output RELEASED; the guest runs unprotected until a backup "
			  "answers again");
}

/*
 * What the backup holds, from its first record after the handshake (a
 * HEARTBEAT carrying its last committed checkpoint; an ERROR 6 when it is
 * active).  A backup without this stream's standby (restarted, or it
 * discarded it) makes protection start over with a new initial copy: its
 * first ack then releases the output held meanwhile.  Returns 0, -ESTALE
 * (superseded), or a retryable -errno with err set.
 */
static int first_word(struct primary *p, struct channel *ch, char *err, size_t errlen)
{
	uint64_t end = now_ns() + p->cfg.timeout_ms * 1000000ull;
	struct channel_rec rec;

	for (;;) {
		int rc = channel_recv(ch, &rec);

		if (rc == -EAGAIN && now_ns() < end)
			continue;
		if (rc) {
			snprintf(err, errlen, "the backup said nothing after the handshake: %s",
				 rc == -EAGAIN ? "timed out" : rc == -EPIPE ? "it closed the connection" :
				 strerror(-rc));
			return rc == -EAGAIN ? -ETIMEDOUT : rc;
		}
		if (rec.type == REC_ERROR) {
			struct wire_error e;

			wire_get_error(rec.payload, &e);
			log_error("the backup reports: %s", e.msg);
			if (e.code == ERR_ACTIVE) {
				superseded(p, "the backup said so when this primary connected");
				return -ESTALE;
			}
			if (e.code == ERR_STALE) {
				superseded(p, "the backup holds a newer protection generation: this "
					   "copy is stale");
				return -ESTALE;
			}
			snprintf(err, errlen, "the backup reported an error");
			return -EPROTO;
		}
		if (rec.type == REC_HEARTBEAT) {
			struct wire_heartbeat hb;

			wire_get_heartbeat(rec.payload, &hb);
			pthread_mutex_lock(&p->lock);
			if (p->epoch && !p->restart && (hb.epoch == 0 || hb.epoch < p->last_acked)) {
				p->restart = true;
				snprintf(p->restart_why, sizeof(p->restart_why), "the backup holds %s "
					 "(this stream is at checkpoint %" PRIu64 ", acked up to %" PRIu64
					 "): it restarted or discarded its standby", hb.epoch ?
					 "an older checkpoint" : "no checkpoint of this stream", p->epoch,
					 p->last_acked);
				pthread_cond_broadcast(&p->cond);
			}
			pthread_mutex_unlock(&p->lock);
			return 0;
		}
		return 0;	/* anything else: an older backup; go on */
	}
}

/* This side's generation, for the handshake (channel_params.generation). */
static void my_generation(void *arg, struct wire_generation *out)
{
	struct primary *p = arg;

	pthread_mutex_lock(&p->lock);
	out->gen = p->gen.gen;
	out->checkpoint = p->last_acked;
	out->flags = 0;
	pthread_mutex_unlock(&p->lock);
}

/*
 * The backup's protection generation is newer than this primary's: another
 * copy of the guest ran (the backup activated) after this one was last
 * protected, so this copy is stale and must never run on.  It steps down
 * as a superseded primary does (guest paused or destroyed, held output
 * discarded); a primary that never had an acknowledgement (it was just
 * started on the stale host) then exits 3, saying what to do instead.
 */
static void stale(struct primary *p, const struct wire_generation *pg)
{
	char why[300];
	bool fresh;

	snprintf(why, sizeof(why), "this host's copy of %s is STALE: protection generation %" PRIu64
		 " here, %" PRIu64 " on the other host, whose copy %s checkpoint %" PRIu64,
		 p->cfg.name, p->gen.gen, pg->gen, pg->flags & GEN_F_ACTIVE ?
		 "runs, activated from" : "is newer, at", pg->checkpoint);
	pthread_mutex_lock(&p->lock);
	fresh = p->last_acked == 0;
	if (p->switching) {	/* asked for: the switchover's backup activated */
		pthread_mutex_unlock(&p->lock);
		superseded(p, why);
		return;
	}
	pthread_mutex_unlock(&p->lock);
	log_error("refusing to run the guest from this host: %s.  Run `tandem backup` here instead: "
		  "the host that runs the guest then re-protects it to this one", why);
	superseded(p, why);
	if (fresh) {
		pthread_mutex_lock(&p->lock);
		p->exit_code = EXIT_PEER;
		p->stop = true;
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		uv_async_send(&p->done_async);
	}
}

/* One connection attempt with handshake.  Returns 0, a retryable -errno,
 * -ESTALE (this copy is stale: stepped down), or a fatal one (the peer
 * refused us: wrong VM, config, version or key). */
static int connect_once(struct primary *p, struct channel **out, char *err, size_t errlen)
{
	struct channel_params cp = { .role = ROLE_PRIMARY, .vm = p->cfg.name, .caps = CAP_HELD,
				     .encrypt = p->cfg.encrypt,
				     .compress = p->cfg.compress == COMPRESS_LZ4,
				     .generation = my_generation, .generation_arg = p };
	struct wire_generation pg;
	int fd, rc;

	memcpy(cp.key, p->key, KEY_LEN);
	config_digest(&p->file_cfg, cp.digest);	/* the files agree; `tandem set` values follow (SET) */
	fd = net_connect(&p->cfg.replication, 1000, err, errlen);
	if (fd < 0)
		return fd;
	net_tune(fd, p->cfg.timeout_ms);
	rc = channel_handshake(fd, &cp, out, err, errlen);
	if (rc) {
		close(fd);
		return rc;
	}
	if (channel_peer_generation(*out, &pg) && pg.gen > p->gen.gen) {
		p->newer_peer = pg;
		p->have_newer_peer = true;
		if (!(pg.flags & GEN_F_ACTIVE)) {
			stale(p, &pg);
			return -ESTALE;
		}
		/* an active backup says so next (ERROR 6): superseded, then stale */
	} else if (channel_peer_generation(*out, &pg) && !(pg.flags & GEN_F_ACTIVE) &&
		   pg.checkpoint == 0) {
		pthread_mutex_lock(&p->lock);
		if (p->switching && !p->sw_peer_restarted) {	/* cannot have activated */
			p->sw_peer_restarted = true;
			pthread_cond_broadcast(&p->cond);
		}
		pthread_mutex_unlock(&p->lock);
	}
	net_tune(fd, 100);	/* recv wakes every 100 ms to check the timeout */
	net_send_timeout(fd, p->cfg.timeout_ms);
	channel_set_stall_timeout(*out, p->cfg.timeout_ms);
	channel_set_peer_alive(*out, backup_heard, p);
	return 0;
}

static bool fatal_handshake(int rc)
{
	return rc == -EACCES || rc == -ESRCH || rc == -EKEYREJECTED ||
	       rc == -EPROTONOSUPPORT || rc == -EPROTO;
}

/* Receive from a connected channel until it breaks; returns why. */
static void receive(struct primary *p, struct channel *ch, char *why, size_t len)
{
	uint64_t timeout_ns = p->cfg.timeout_ms * 1000000ull;
	struct channel_rec rec;

	for (;;) {
		int rc = channel_recv(ch, &rec);
		bool stop;

		pthread_mutex_lock(&p->lock);
		stop = p->stop || p->superseded;
		if (rc == 0)
			p->last_heard_ns = now_ns();
		pthread_mutex_unlock(&p->lock);
		if (stop) {
			snprintf(why, len, "stopping");
			return;
		}
		if (rc == -EAGAIN) {
			if (now_ns() - p->last_heard_ns > timeout_ns) {
				snprintf(why, len, "nothing heard from the backup for %" PRIu64 " ms",
					 (now_ns() - p->last_heard_ns) / 1000000);
				return;
			}
			continue;
		}
		if (rc == -EPIPE) {
			snprintf(why, len, "the backup closed the replication stream");
			return;
		}
		if (rc) {
			snprintf(why, len, "replication stream failed: %s",
				 rc == -EBADMSG || rc == -ETIMEDOUT ? channel_error(ch) : strerror(-rc));
			return;
		}
		switch (rec.type) {
		case REC_ACK: {
			struct wire_ack a;
			wire_get_ack(rec.payload, &a);
			handle_ack(p, &a);
			break;
		}
		case REC_HELD: {
			/* The backup holds a checkpoint for a reason of its own
			 * side (its disk's DRBD not whole, a marker it has not
			 * seen): go on taking checkpoints as behind a held one. */
			struct wire_held h;

			wire_get_held(rec.payload, &h);
			pthread_mutex_lock(&p->lock);
			if (!p->backup_holds && p->devs.n) {
				p->backup_holds = h.epoch ? h.epoch : 1;
				log_warn("the backup holds checkpoint %" PRIu64 ": %s; output stays held "
					 "until a checkpoint it can commit", h.epoch, h.msg);
				pthread_cond_broadcast(&p->cond);
			}
			pthread_mutex_unlock(&p->lock);
			break;
		}
		case REC_HEARTBEAT:
			break;
		case REC_FAILOVER: {	/* the switchover's answer */
			struct wire_failover f;

			wire_get_failover(rec.payload, &f);
			pthread_mutex_lock(&p->lock);
			if (p->switching && f.reason == FAILOVER_SWITCHED && f.epoch == p->sw_epoch &&
			    !p->sw_confirmed) {
				p->sw_confirmed = true;
				p->sw_t_reply = now_ns();
				pthread_cond_broadcast(&p->cond);
			}
			if (p->switching && f.reason == FAILOVER_SWITCH_FAILED &&
			    f.epoch == p->sw_epoch && !p->sw_confirmed) {
				char detail[sizeof(p->detail)];

				/* the guest resumes here (switch_over); the backup
				 * has no standby left: as when it was stopped */
				p->sw_failed = true;
				pthread_cond_broadcast(&p->cond);
				pthread_mutex_unlock(&p->lock);
				snprintf(detail, sizeof(detail), "UNPROTECTED: the switchover failed on "
					 "the backup; the guest resumed here, output released; protection "
					 "starts over when a backup answers");
				if (go_unprotected(p, true, "the switchover's activation failed on the "
						   "backup, which discarded its standby", detail))
					log_error("UNPROTECTED: the backup could not start the guest in "
						  "the switchover and discarded its standby; the guest "
						  "resumes here; held output RELEASED; it runs unprotected "
						  "until a backup answers again");
				snprintf(why, len, "the switchover's activation failed on the backup");
				return;
			}
			pthread_mutex_unlock(&p->lock);
			break;
		}
		case REC_STOP:
			backup_left(p);
			snprintf(why, len, "the backup stopped (its operator stopped it)");
			return;
		case REC_ERROR: {
			struct wire_error e;
			wire_get_error(rec.payload, &e);
			log_error("the backup reports: %s", e.msg);
			if (e.code == ERR_ACTIVE || e.code == ERR_STALE) {
				superseded(p, e.code == ERR_ACTIVE ? "the backup said so when this "
					   "primary connected" : "the backup holds a newer protection "
					   "generation: this copy is stale");
				snprintf(why, len, "the backup is active");
				return;
			}
			snprintf(why, len, "the backup reported an error");
			return;
		}
		default:
			snprintf(why, len, "protocol error: unexpected %s record", wire_type_name(rec.type));
			return;
		}
	}
}

/*
 * The link thread: connect (and reconnect) to the backup, then receive
 * acks and heartbeats.  A reconnect resumes the epoch stream where the
 * backup's acks left it: unacknowledged checkpoints are shipped again.
 */
static void *link_main(void *arg)
{
	struct primary *p = arg;
	uint64_t last_log = 0;
	char err[512], why[300];

	for (;;) {
		struct channel *ch = NULL;
		int rc;

		pthread_mutex_lock(&p->lock);
		/* Superseded before any acknowledgement (a heartbeat said so
		 * first): one handshake still, to learn whether this copy is
		 * stale (the generation) and then refuse as such. */
		if (p->stop || (p->superseded && (p->gen_checked || p->last_acked))) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		if (p->superseded)
			p->gen_checked = true;
		pthread_mutex_unlock(&p->lock);
		rc = connect_once(p, &ch, err, sizeof(err));
		if (!rc)
			rc = first_word(p, ch, err, sizeof(err));
		if (rc == -ESTALE) {	/* the backup is active, or this copy stale: superseded */
			channel_free(ch);
			if (p->have_newer_peer && (p->newer_peer.flags & GEN_F_ACTIVE))
				stale(p, &p->newer_peer);
			break;
		}
		if (rc && ch) {
			channel_free(ch);
			ch = NULL;
		}
		if (rc) {
			if (fatal_handshake(rc)) {
				log_error("the backup refused this primary: %s", err);
				pthread_mutex_lock(&p->lock);
				p->exit_code = EXIT_PEER;
				p->stop = true;
				pthread_cond_broadcast(&p->cond);
				pthread_mutex_unlock(&p->lock);
				uv_async_send(&p->done_async);
				break;
			}
			if (now_ms() - last_log > 5000) {
				log_info("waiting for the backup: %s", err);
				last_log = now_ms();
			}
			pthread_mutex_lock(&p->lock);
			if (!p->stop)
				wait_ns(p, 200000000ull);
			pthread_mutex_unlock(&p->lock);
			continue;
		}
		pthread_mutex_lock(&p->lock);
		p->ch = ch;
		p->link_up = true;
		/* the backup starts each session at its file's interval */
		p->set_interval_pending = p->cfg.interval_ms != p->file_cfg.interval_ms;
		p->isolated = false;
		/* resend what was not acked (of this stream) */
		p->ship_next = MAX(p->last_acked + 1, p->npending ? p->pending[0]->epoch : 0);
		p->last_heard_ns = p->last_sent_ns = now_ns();
		if (!p->released && !p->restart &&
		    (p->state == P_DEGRADED || p->state == P_STARTING || p->state == P_CONNECTING))
			set_state(p, p->epoch ? P_PROTECTING : P_CONNECTING, "replication link up");
		pthread_cond_broadcast(&p->cond);
		pthread_mutex_unlock(&p->lock);
		hb_set_replication_up(p->hb, true);
		log_info("connected to the backup at %s:%u (%s)", p->cfg.replication.host,
			 p->cfg.replication.port,
			 p->cfg.encrypt ? "authenticated, encrypted" : "authenticated");
		receive(p, ch, why, sizeof(why));
		pthread_mutex_lock(&p->lock);
		if (p->stop) {		/* keep the channel for clean_stop */
			pthread_mutex_unlock(&p->lock);
			break;
		}
		pthread_mutex_unlock(&p->lock);
		link_down(p, why);
		pthread_mutex_lock(&p->lock);
		if (p->superseded) {
			pthread_mutex_unlock(&p->lock);
			break;
		}
		pthread_mutex_unlock(&p->lock);
	}
	return NULL;
}

/* ---- status --------------------------------------------------------------- */

static void live_set(struct primary *p, const char *kv, char *buf, size_t len);

static void render_status(void *arg, const char *request, char *buf, size_t len)
{
	bool json = strcmp(request, "json") == 0;
	struct primary *p = arg;
	char guest[160] = "", peer[300], paths[2048] = "", figures[400] = "";
	struct netbuf_counters nc = { 0 };
	double hz, lag_ms = 0;
	enum pstate state;
	char detail[sizeof(p->detail)];

	if (!strcmp(request, "switchover")) {
		switchover_request(p, buf, len);
		return;
	}
	if (!strncmp(request, "set ", 4)) {
		live_set(p, request + 4, buf, len);
		return;
	}
	if (p->dom.ops->describe)
		p->dom.ops->describe(&p->dom, guest, sizeof(guest));
	if (p->dom.ops->status_figures)
		p->dom.ops->status_figures(&p->dom, json, figures, sizeof(figures));
	hb_render(p->hb, json, paths, sizeof(paths));
	pthread_mutex_lock(&p->nb_lock);
	if (p->nb.ops->counters && p->nb.attached)
		p->nb.ops->counters(&p->nb, &nc);
	pthread_mutex_unlock(&p->nb_lock);
	pthread_mutex_lock(&p->lock);
	hz = achieved_hz(p);
	if (p->npending)
		lag_ms = (double)(now_ns() - p->pending[0]->captured_at_ns) / 1e6;
	/* `protecting` only while acks arrive: never from a flag alone */
	state = p->state;
	snprintf(detail, sizeof(detail), "%s", p->detail);
	if (state == P_PROTECTING && now_ns() - p->last_ack_ns > p->cfg.timeout_ms * 1000000ull) {
		state = P_DEGRADED;
		snprintf(detail, sizeof(detail), "no checkpoint acknowledged for %" PRIu64 " ms "
			 "(timeout %" PRIu64 " ms); output held after epoch %" PRIu64,
			 (now_ns() - p->last_ack_ns) / 1000000, p->cfg.timeout_ms, p->last_acked);
	}
	snprintf(peer, sizeof(peer), "%s:%u", p->cfg.replication.host, p->cfg.replication.port);
	if (!strcmp(request, "now")) {		/* `tandem events --now` */
		status_format_event(buf, len, "%s primary exists state=%s epoch=%" PRIu64 " acked=%"
				    PRIu64 " in_flight=%u detail=\"%s\"", p->cfg.name,
				    pstate_names[state], p->epoch, p->last_acked, p->npending, detail);
	} else if (json) {
		char ph[512], lh[512], dj[8192], bj[512], pj[400], mj[1200], cd[300];

		devices_status_json(&p->devs, dj, sizeof(dj));
		if (p->have_pred)
			snprintf(pj, sizeof(pj), "\"prediction\":{\"at\":%" PRIu64 ",\"pause_ms\":%.1f,"
				 "\"checkpoint_bytes\":%.0f,\"added_latency_ms\":%.1f,\"speed_pct\":%.0f,"
				 "\"link_bytes_per_s\":%.0f,\"dirty_pages\":%.0f},", p->pred_at,
				 p->pred.pause_ms, p->pred.checkpoint_bytes, p->pred.added_latency_ms,
				 p->pred.speed_pct, p->pred_link_Bps, p->pred_dirty);
		else
			pj[0] = '\0';
		config_live_diff(&p->cfg, &p->file_cfg, cd, sizeof(cd));
		snprintf(mj, sizeof(mj), "\"running_config_differs\":\"%s\",\"generation\":%" PRIu64
			 ",\"reprotected\":%s,\"switchover\":\"%s\",", cd, p->gen.gen,
			 p->reprotected ? "true" : "false", p->sw_result);
		snprintf(mj + strlen(mj), sizeof(mj) - strlen(mj), "\"measured\":{\"pause_ms\":%.1f,\"checkpoint_bytes\":%" PRIu64
			 ",\"added_latency_ms\":%.1f,\"speed_pct\":%u}", pause_median_ms(p),
			 p->last_dirty * (CKPT_PAGE_SIZE + 8), p->bud.last_ms, p->bud.pct);
		snprintf(bj, sizeof(bj), "\"latency_budget\":{\"budget_ms\":%" PRIu64 ",\"speed_pct\":%u,"
			 "\"changes\":%" PRIu64 ",\"last_added_ms\":%.1f,\"cause\":\"%s\"}",
			 p->cfg.latency_budget_ms, p->bud.pct, p->bud.changes, p->bud.last_ms,
			 p->bud.cause);
		hist_json(&p->pause_hist, "pause_seconds", ph, sizeof(ph));
		hist_json(&p->latency_hist, "added_latency_seconds", lh, sizeof(lh));
		snprintf(buf, len,
			 "{\"role\":\"primary\",\"state\":\"%s\",\"detail\":\"%s\",\"vm\":\"%s\","
			 "\"domain\":\"%s\",\"synthetic\":%s,\"guest\":\"%s\",\"peer\":\"%s\","
			 "\"epoch\":%" PRIu64 ",\"last_acked_epoch\":%" PRIu64 ",\"interval_ms\":%" PRIu64 ","
			 "\"achieved_hz\":%.1f,\"last_pause_ms\":%.3f,\"pause_ms_p50\":%.3f,\"dirty_pages\":%" PRIu64 ","
			 "\"bytes_shipped\":%" PRIu64 ",\"bytes_shipped_raw\":%" PRIu64 ",\"compress\":\"%s\","
			 "\"epochs_in_flight\":%u,\"lag_ms\":%.1f,"
			 "\"stretched\":%s,\"throttled\":%s,\"throttles\":%" PRIu64 ",\"throttled_ms\":%.1f,"
			 "\"early_epochs\":%" PRIu64 ",\"next_checkpoint_bytes\":%" PRIu64 ","
			 "\"staging_bytes\":%zu,\"netbuf\":\"%s\",\"unsafe\":%s,"
			 "\"held_packets\":%" PRIu64 ",\"released_packets\":%" PRIu64 ",\"dropped_packets\":%" PRIu64 ","
			 "\"initial_copy_pages_done\":%" PRIu64 ",\"initial_copy_pages_total\":%" PRIu64 ","
			 "\"link_up\":%s,\"decision\":\"%s\",%s,%s,\"devices\":%s,%s,%s%s,%s\"paths\":%s}\n",
			 pstate_names[state], detail, p->cfg.name, p->dom.ops->name,
			 p->cfg.domain == DOMAIN_MEMDOM ? "true" : "false", guest, peer,
			 p->epoch, p->last_acked, p->cfg.interval_ms, hz, (double)p->last_pause_us / 1000.0,
			 pause_median_ms(p), p->last_dirty, p->bytes_shipped, p->bytes_shipped_raw,
			 p->compressing ? "lz4" : "none", p->npending, lag_ms,
			 p->stretched ? "true" : "false", p->throttled ? "true" : "false", p->throttles,
			 (double)(p->throttled_ns_total + (p->throttled ? now_ns() - p->throttle_start_ns : 0)) / 1e6,
			 p->early_epochs, p->next_estimate, p->staging_bytes, p->nb.ops->name,
			 netbuf_unsafe(&p->cfg) ? "true" : "false",
			 nc.held_packets, nc.released_packets, nc.dropped_packets,
			 p->progress.pages_done, p->progress.pages_total,
			 p->link_up ? "true" : "false", hb_decision_name(p->decision), ph, lh, dj, bj, pj, mj,
			 figures, paths[0] ? paths : "[]");
	} else {
		char zinfo[64] = "";
		if (p->compressing)
			snprintf(zinfo, sizeof(zinfo), " (lz4: %.1f MiB before compression)",
				 (double)p->bytes_shipped_raw / 1048576.0);
		snprintf(buf, len,
			 "%s (primary): %s%s - %s\n"
			 "  guest:     %s%s\n"
			 "  backup:    %s\n"
			 "  epoch %" PRIu64 ", last acked %" PRIu64 ", %u in flight, lag %.1f ms%s\n"
			 "  interval %" PRIu64 " ms, achieved %.1f Hz, pause %.3f ms (median %.3f), %" PRIu64 " dirty pages\n"
			 "  shipped %.1f MiB%s; output buffering: %s (held %" PRIu64 ", released %" PRIu64
			 ", dropped %" PRIu64 " packets)\n",
			 p->cfg.name, pstate_names[state],
			 netbuf_unsafe(&p->cfg) ? " UNSAFE (no output buffering)" : "", detail,
			 guest, p->cfg.domain == DOMAIN_MEMDOM ? " [synthetic test guest]" : "", peer,
			 p->epoch, p->last_acked, p->npending, lag_ms,
			 p->throttled ? " (GUEST PAUSED: its next checkpoint does not fit staging)" :
			 p->stretched ? " (epoch stretched: the link cannot keep up)" : "",
			 p->cfg.interval_ms, hz, (double)p->last_pause_us / 1000.0, pause_median_ms(p),
			 p->last_dirty, (double)p->bytes_shipped / 1048576.0, zinfo, p->nb.ops->name,
			 nc.held_packets, nc.released_packets, nc.dropped_packets);
		{
			size_t n = strlen(buf);
			char cd[300];

			config_live_diff(&p->cfg, &p->file_cfg, cd, sizeof(cd));
			if (cd[0] && n < len)
				n += (size_t)snprintf(buf + n, len - n, "  running configuration "
						      "differs from the file: %s\n", cd);
			if (p->cfg.latency_budget_ms && n < len)
				n += (size_t)snprintf(buf + n, len - n, "  latency-budget %" PRIu64
						      " ms: guest at %u%%, last epoch's output waited "
						      "%.0f ms%s%s\n", p->cfg.latency_budget_ms,
						      p->bud.pct, p->bud.last_ms,
						      p->bud.cause[0] ? "; " : "", p->bud.cause);
			if (p->devs.n && n < len) {
				char dt[2048];

				devices_status_text(&p->devs, dt, sizeof(dt));
				n += (size_t)snprintf(buf + n, len - n, "%s%s", dt, p->devs_bad ?
						      "  devices: cuts NOT complete: the backup holds "
						      "checkpoints\n" : p->backup_holds ? "  devices: the "
						      "backup holds checkpoints for its own side\n" : "");
			}
			if (figures[0] && n < len)
				n += (size_t)snprintf(buf + n, len - n, "%s", figures);
			if (p->have_pred && n < len)
				n += (size_t)snprintf(buf + n, len - n, "  probe predicted: pause %.1f ms, "
						      "checkpoint %.0f KiB, added latency %.0f ms; "
						      "measured: pause %.1f ms, checkpoint %" PRIu64
						      " KiB, added latency %.0f ms\n", p->pred.pause_ms,
						      p->pred.checkpoint_bytes / 1024,
						      p->pred.added_latency_ms, pause_median_ms(p),
						      p->last_dirty * (CKPT_PAGE_SIZE + 8) / 1024,
						      p->bud.last_ms);
		}
		if (strlen(buf) + 1 < len)
			snprintf(buf + strlen(buf), len - strlen(buf), "%s", paths);
	}
	pthread_mutex_unlock(&p->lock);
}

/* ---- loop callbacks ------------------------------------------------------- */

/*
 * `tandem set NAME KEY=VALUE` (status request "set KEY=VALUE"): change a
 * key while protecting.  interval is a key both sides agree on: it is
 * refused while the backup is not connected, and the backup hears it
 * before the next checkpoint (SET).
 */
static void live_set(struct primary *p, const char *kv, char *buf, size_t len)
{
	struct tandem_config tmp;
	char key[48], err[300], diff[300];
	const char *eq = strchr(kv, '=');
	uint64_t old_interval;
	int rc;

	if (!eq || eq == kv || (size_t)(eq - kv) >= sizeof(key)) {
		snprintf(buf, len, "error: expected KEY=VALUE, got '%s'\n", kv);
		return;
	}
	snprintf(key, sizeof(key), "%.*s", (int)(eq - kv), kv);
	pthread_mutex_lock(&p->lock);
	tmp = p->cfg;
	old_interval = p->cfg.interval_ms;
	rc = config_set_live(&tmp, key, eq + 1, err, sizeof(err));
	if (!rc && tmp.interval_ms != old_interval && !(p->link_up && p->ch)) {
		snprintf(err, sizeof(err), "interval must change on both hosts at once and the "
			 "backup is not connected: try again when it is");
		rc = -ENOTCONN;
	}
	if (rc) {
		pthread_mutex_unlock(&p->lock);
		snprintf(buf, len, "error: %s\n", err);
		return;
	}
	p->cfg.interval_ms = tmp.interval_ms;
	p->cfg.epochs_in_flight = tmp.epochs_in_flight;
	p->cfg.latency_budget_ms = tmp.latency_budget_ms;
	if (tmp.interval_ms != old_interval)
		p->set_interval_pending = true;
	config_live_diff(&p->cfg, &p->file_cfg, diff, sizeof(diff));
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	log_warn("configuration changed while protecting: %s=%s%s%s", key, eq + 1,
		 diff[0] ? "; differs from the file now: " : "; the file says the same again",
		 diff);
	status_event(p->status, "%s primary set %s=%s", p->cfg.name, key, eq + 1);
	snprintf(buf, len, "ok: %s=%s%s%s\n", key, eq + 1, tmp.interval_ms != old_interval ?
		 " (the backup hears it before the next checkpoint)" : "",
		 diff[0] ? "; a restart would use the file's values" : "");
}

static void request_stop(struct primary *p)
{
	pthread_mutex_lock(&p->lock);
	if (!p->stop) {
		log_info("stopping protection (signal)");
		notify_stopping();
	}
	p->stop = true;
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
}

/* SIGHUP (a closed terminal, or a reload by habit) must not end the
 * daemon: nothing is re-read; a changed configuration needs a restart. */
static void on_sighup(uv_signal_t *h, int signum)
{
	(void)h;
	(void)signum;
	log_warn("SIGHUP ignored: tandem re-reads nothing at run time; restart the daemon to "
		 "apply a changed configuration");
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct primary *p = h->data;

	(void)signum;
	request_stop(p);
	uv_stop(&p->loop);
}

static void on_tick(uv_timer_t *t)
{
	struct primary *p = t->data;
	static unsigned ticks;

	if (netbuf_unsafe(&p->cfg) && ticks++ % 60 == 0)
		log_warn("UNSAFE: running without output buffering (allow-unsafe-no-buffering = yes)");
	notify_watchdog();
	pthread_mutex_lock(&p->lock);
	if (p->notified_ready)
		notify_status("%s: epoch %" PRIu64 ", last acked %" PRIu64 ", %u in flight%s%s",
			      pstate_names[p->state], p->epoch, p->last_acked, p->npending,
			      p->throttled ? ", guest paused for staging" : "",
			      p->stretched ? ", epoch stretched" : "");
	pthread_mutex_unlock(&p->lock);
}

static void on_ckpt_done(uv_async_t *a)
{
	struct primary *p = a->data;

	pthread_mutex_lock(&p->lock);
	bool stopping = p->stop;
	pthread_mutex_unlock(&p->lock);
	if (stopping)
		uv_stop(&p->loop);
	/* else: degraded; keep serving status until a signal stops us */
}

static void on_step_async(uv_async_t *a)
{
	step_down(a->data);
}

/* ---- start-up and shut-down ---------------------------------------------- */

/* Policy on-replication-loss = release: stop protection, let output go. */
static void on_release(uv_async_t *a)
{
	struct primary *p = a->data;
	char detail[sizeof(p->detail)];

	snprintf(detail, sizeof(detail), "UNPROTECTED: replication link down for %" PRIu64 " ms; "
		 "protection stopped and output released (on-replication-loss = release)",
		 p->cfg.replication_loss_grace_ms);
	if (go_unprotected(p, false, "output was released (on-replication-loss = release): the "
			   "backup's standby no longer matches the guest", detail))
		log_error("UNPROTECTED: the replication link stayed down past replication-loss-grace "
			  "(%" PRIu64 " ms) while the backup is alive on another path; protection "
			  "stopped and held output RELEASED; it starts over (a new initial copy) when "
			  "the link is back.  Until then the backup's standby is stale: it must not be "
			  "activated.", p->cfg.replication_loss_grace_ms);
}

/* Clean stop: tell the backup, then release held output only if it confirmed. */
static void clean_stop(struct primary *p)
{
	uint8_t buf[STOP_LEN];
	struct wire_stop st = { 1 };
	bool confirmed = false;

	if (p->superseded) {
		log_warn("superseded: the output this primary held is discarded, never released");
		return;
	}
	if (p->ch && p->link_up) {
		wire_put_stop(buf, &st);
		if (channel_send(p->ch, REC_STOP, buf, STOP_LEN) == 0) {
			/* The backup closes the stream once it has discarded its standby. */
			uint64_t end = now_ms() + p->cfg.timeout_ms;
			while (now_ms() < end) {
				struct channel_rec rec;
				int rc = channel_recv(p->ch, &rec);
				if (rc == -EPIPE) {
					confirmed = true;
					break;
				}
				if (rc && rc != -EAGAIN)
					break;
			}
		}
	}
	pthread_mutex_lock(&p->nb_lock);
	if (confirmed || netbuf_unsafe(&p->cfg)) {
		p->nb.ops->release_all(&p->nb);
		log_info("protection stopped; the backup discarded its standby; output released");
	} else if (p->nb.attached) {
		log_error("the backup did not confirm the stop: output of epochs after %" PRIu64
			  " stays held so that it cannot contradict a failover", p->last_acked);
	}
	pthread_mutex_unlock(&p->nb_lock);
}

static int primary_run(struct primary *p, struct domain *adopt);

static void close_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

int cmd_primary(int argc, char **argv)
{
	struct primary *p;
	char err[512];
	int rc;

	p = calloc(1, sizeof(*p));
	if (!p)
		return EXIT_FAILURE_RUNTIME;
	if ((rc = cmd_load_config(argc, argv, "primary", &p->cfg)))
		return rc;
	if (fault_init())
		return EXIT_USAGE;
	testlog_init();
	crash_report_install("tandem primary");
	signal(SIGPIPE, SIG_IGN);
	if (key_load(p->cfg.key_file, p->key, err, sizeof(err))) {
		log_error("%s", err);
		return EXIT_USAGE;
	}
	if (generation_load(&p->cfg, &p->gen, err, sizeof(err)))
		log_warn("protection generation: %s; taking 0 (the oldest: a backup with any newer "
			 "one refuses this primary)", err);
	return primary_run(p, NULL);
}

int primary_adopt(const struct tandem_config *cfg, const uint8_t key[KEY_LEN],
		  const struct generation *gen, struct domain *dom)
{
	struct primary *p = calloc(1, sizeof(*p));

	if (!p)
		return EXIT_FAILURE_RUNTIME;
	p->cfg = *cfg;
	if (config_set_role(&p->cfg, ROLE_PRIMARY)) {
		log_error("re-protection needs a configuration with hosts");
		return EXIT_USAGE;
	}
	log_set_role("primary");
	memcpy(p->key, key, KEY_LEN);
	p->gen = *gen;
	p->adopted = true;
	snprintf(p->peer_host, sizeof(p->peer_host), "%s", config_peer_host(&p->cfg));
	return primary_run(p, dom);
}

/*
 * The daemon proper: a guest opened here (adopt NULL), or the guest a
 * backup activated on this host (re-protection).
 */
static int primary_run(struct primary *p, struct domain *adopt)
{
	struct hb_callbacks hbc = { .decision = on_decision, .peer_active = on_peer_active };
	char err[512], path[512];
	int rc = 0;

	pthread_mutex_init(&p->lock, NULL);
	pthread_mutex_init(&p->nb_lock, NULL);
	pthread_cond_init(&p->cond, NULL);
	uv_loop_init(&p->loop);
	uv_signal_init(&p->loop, &p->sigterm);
	uv_signal_init(&p->loop, &p->sigint);
	p->sigterm.data = p->sigint.data = p;
	uv_signal_start(&p->sigterm, on_signal, SIGTERM);
	uv_signal_start(&p->sigint, on_signal, SIGINT);
	uv_signal_init(&p->loop, &p->sighup);
	uv_signal_start(&p->sighup, on_sighup, SIGHUP);
	uv_timer_init(&p->loop, &p->tick);
	p->tick.data = p;
	uv_timer_start(&p->tick, on_tick, 0, 1000);
	uv_async_init(&p->loop, &p->done_async, on_ckpt_done);
	p->done_async.data = p;
	uv_async_init(&p->loop, &p->release_async, on_release);
	p->release_async.data = p;
	uv_async_init(&p->loop, &p->step_async, on_step_async);
	p->step_async.data = p;

	p->dom.ops = domain_ops_for(&p->cfg);
	p->dom.cfg = &p->cfg;
	p->dom.role = ROLE_PRIMARY;
	p->nb.ops = netbuf_ops_for(&p->cfg);
	p->nb.cfg = &p->cfg;
	if (!p->nb.ops) {
		log_error("netbuf backend not available in this build");
		return EXIT_ENV;
	}
	log_info("protecting %s (%s driver%s), interval %" PRIu64 " ms, backup %s:%u",
		 p->cfg.name, p->dom.ops->name,
		 p->cfg.domain == DOMAIN_MEMDOM ? ": a synthetic test guest, not a real workload" : "",
		 p->cfg.interval_ms, p->cfg.replication.host, p->cfg.replication.port);

	config_status_path(&p->cfg, "primary", path, sizeof(path));
	if (status_server_start(&p->loop, path, render_status, p, &p->status))
		return EXIT_ENV;
	if (hook_open(p->cfg.notify, p->cfg.notify_timeout_ms, p->cfg.name, "primary", &p->hook))
		log_error("cannot start the notify hook's thread: no notify command will run");
	if (adopt) {
		/* the guest this daemon activated as the backup runs on */
		p->dom = *adopt;
		p->dom.cfg = &p->cfg;
		p->dom.role = ROLE_PRIMARY;
		rc = p->dom.ops->become_primary ? p->dom.ops->become_primary(&p->dom) : -ENOTSUP;
		if (rc) {
			log_error("cannot protect the guest that runs here: %s; it runs on unprotected",
				  strerror(-rc));
			p->exit_code = EXIT_FAILURE_RUNTIME;
			goto out_status;
		}
		log_warn("re-protecting %s: this host (%s) runs the guest and is now its primary; "
			 "the backup is on %s at %s:%u; protection generation %" PRIu64 "; an initial "
			 "copy while the guest runs, then checkpoints", p->cfg.name,
			 p->cfg.hosts.h[p->cfg.this_host].name, p->peer_host, p->cfg.replication.host,
			 p->cfg.replication.port, p->gen.gen);
	} else if (!p->dom.ops->open || (rc = p->dom.ops->open(&p->dom))) {
		log_error("cannot open the %s domain: %s", p->dom.ops->name, strerror(rc ? -rc : ENOSYS));
		p->exit_code = (rc == -ENOTSUP || rc == -ENOENT || !p->dom.ops->open) ? EXIT_ENV :
			       EXIT_FAILURE_RUNTIME;
		goto out_status;
	}
	if ((rc = devices_open(&p->devs, &p->cfg, DEVICE_PRIMARY, err, sizeof(err)))) {
		log_error("cannot protect the guest's devices: %s", err);
		p->exit_code = rc == -ENOTSUP || rc == -EINVAL ? EXIT_ENV : EXIT_FAILURE_RUNTIME;
		goto out_dom;
	}
	/* Output is buffered before the first byte is shipped: never unbuffered. */
	if (!p->cfg.vif[0] && p->cfg.netbuf != NETBUF_NONE && p->dom.ops->default_vif &&
	    p->dom.ops->default_vif(&p->dom, p->cfg.vif, sizeof(p->cfg.vif)) == 0)
		log_info("the guest's output goes through %s (vif is not set: derived from the "
			 "domain)", p->cfg.vif);
	if ((rc = p->nb.ops->attach(&p->nb, p->cfg.vif))) {
		p->exit_code = (rc == -ENOTSUP || rc == -ENODEV) ? EXIT_ENV : EXIT_FAILURE_RUNTIME;
		goto out_dom;
	}
	if ((rc = hb_start(&p->hb, &p->cfg, p->key, ROLE_PRIMARY, &hbc, p))) {
		log_error("cannot start the heartbeat paths: %s", strerror(-rc));
		p->exit_code = EXIT_ENV;
		goto out_nb;
	}
	pthread_mutex_lock(&p->lock);
	/* a heartbeat may already have said the backup is active: superseded stays */
	if (p->superseded)
		;
	else if (p->adopted)
		set_state(p, P_CONNECTING, "re-protecting: connecting to the backup on %s at %s:%u "
			  "(generation %" PRIu64 ")", p->peer_host, p->cfg.replication.host,
			  p->cfg.replication.port, p->gen.gen);
	else
		set_state(p, P_CONNECTING, "connecting to the backup");
	pthread_mutex_unlock(&p->lock);
	p->ship_next = 1;
	p->bud.pct = 100;
	p->file_cfg = p->cfg;
	p->have_pred = probe_prediction_load(&p->cfg, &p->pred, &p->pred_link_Bps, &p->pred_dirty,
					     &p->pred_at) == 0;
	pthread_create(&p->link_thr, NULL, link_main, p);
	pthread_create(&p->ship_thr, NULL, ship_main, p);
	pthread_create(&p->ckpt_thr, NULL, ckpt_main, p);
	/* names for top -H and ps -L */
	pthread_setname_np(p->link_thr, "tandem-link");
	pthread_setname_np(p->ship_thr, "tandem-ship");
	pthread_setname_np(p->ckpt_thr, "tandem-ckpt");

	uv_run(&p->loop, UV_RUN_DEFAULT);

	pthread_mutex_lock(&p->lock);
	p->stop = true;
	if (p->state != P_DEGRADED && p->state != P_STOPPING && p->state != P_SUPERSEDED)
		set_state(p, P_STOPPING, "stopping");
	pthread_cond_broadcast(&p->cond);
	pthread_mutex_unlock(&p->lock);
	pthread_join(p->ckpt_thr, NULL);
	pthread_join(p->ship_thr, NULL);
	pthread_join(p->link_thr, NULL);
	if (!p->become_backup)
		clean_stop(p);	/* (a switchover released all output: its last checkpoint was acked) */
	hb_stop(p->hb);
	if (p->dom.ops->stop_protection)
		p->dom.ops->stop_protection(&p->dom);
out_nb:
	p->nb.ops->detach(&p->nb);
out_dom:
	devices_close(&p->devs);
	p->dom.ops->close(&p->dom);
out_status:
	status_server_stop(p->status);
	p->status = NULL;	/* no event after this */
	uv_run(&p->loop, UV_RUN_NOWAIT);
	channel_free(p->ch);
	hook_close(p->hook);	/* the last changes (stopping, stopped) run too */
	if (p->become_backup) {
		uv_walk(&p->loop, close_handle, NULL);
		uv_run(&p->loop, UV_RUN_DEFAULT);
		uv_loop_close(&p->loop);
		return backup_adopt(&p->cfg, p->key, &p->gen, p->sw_result);
	}
	log_info("exit %d", p->exit_code);
	return p->exit_code;
}
