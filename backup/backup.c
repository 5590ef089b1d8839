/*
 * backup.c - `tandem backup`: the warm standby on the second host.
 *
 * Threads:
 *   main   libuv loop: signals, status socket
 *   net    accepts the primary, receives checkpoints into staging,
 *          commits complete ones, acks them, sends heartbeats, and on
 *          loss of the primary activates the standby
 *
 * A checkpoint is staged record by record; only a complete one (CKPT_END
 * with matching counts) is committed, and only a committed one is acked.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include <uv.h>

#define LOG_MODULE "backup"
#include "../cli/cmd.h"
#include "../device/device.h"
#include "../domain/domain.h"
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
#include "../primary/primary.h"
#include "backup.h"
#include "gate.h"

#define HELD_MAX 256	/* checkpoints held for the devices (and staging-limit bounds them) */

enum bstate { B_WAITING, B_SYNCING, B_STANDBY, B_DEGRADED, B_MANUAL, B_ACTIVATING, B_ACTIVE,
	      B_STOPPED, B_FAILED };

static const char *const bstate_names[] = {
	[B_WAITING] = "waiting", [B_SYNCING] = "syncing", [B_STANDBY] = "standby",
	[B_DEGRADED] = "degraded", [B_MANUAL] = "manual", [B_ACTIVATING] = "activating",
	[B_ACTIVE] = "active", [B_STOPPED] = "stopped", [B_FAILED] = "failed",
};

struct backup {
	struct tandem_config cfg;
	struct hook *hook;		/* the notify command (NULL: none) */
	struct domain dom;
	uint8_t key[KEY_LEN];
	int exit_code;

	uv_loop_t loop;
	uv_signal_t sigterm, sigint, sighup;
	uv_async_t done_async;
	uv_timer_t hb_timer;
	struct status_server *status;

	pthread_t net_thr;
	pthread_mutex_t lock;
	pthread_mutex_t ch_lock;	/* guards ch against the heartbeat timer */
	struct channel *ch;
	int listen_fd;
	struct gate *gate;
	struct channel *incoming;	/* an authenticated primary waiting for the net thread */
	char incoming_src[96];
	bool handover;			/* the session ends for a newer connection of the primary */
	pthread_cond_t in_cond;
	bool stop, standby_ready;

	enum bstate state;
	char detail[200];
	uint64_t committed;		/* last committed checkpoint (0 = none yet) */
	uint64_t file_interval_ms;	/* what the file says (`tandem set` may change it) */
	uint64_t rounds;		/* initial-copy rounds committed */
	uint64_t bytes_received, last_commit_us;
	uint64_t last_heard_ns, last_sent_ns, hb_seq, last_notify_ns;
	double activate_ms, failover_ms;

	/* failure detection (heartbeat/) and the decision to act on */
	struct hb *hb;
	enum hb_decision decision;
	uint64_t decision_seq, acted_seq, next_witness_ns;
	bool promote, promote_forced;
	char forced_note[300];		/* what `promote --force` overrode ("" = nothing) */
	uint64_t activated_from;	/* checkpoint the guest was activated from */
	bool activation_failed;		/* an activation failed: never another in this process */
	char lost_why[300];

	/* `tandem report`: what the failover found and did */
	struct {
		bool done;
		char at[40];			/* UTC */
		char why[300], decision[32], fence[600];
		uint64_t last_heard_ms, rounds, rx_ckpts;
		char paths[2048];
	} rep;

	/* the guest's devices (device/device.h), and the complete checkpoints
	 * a device has not let commit yet, oldest first: each commits, in
	 * order, with the first later one that every device lets through */
	struct devices devs;
	struct ckpt *held[HELD_MAX];
	unsigned nheld;
	uint64_t held_bytes, held_total;
	char hold_why[600];

	/* staging of the checkpoint being received */
	struct ckpt *rx;
	bool rx_open, rx_skip;
	uint64_t rx_npages, rx_records;
	uint8_t rx_digest[32];

	/* the initial copy's pieces: each is committed by the committer
	 * thread while the net thread receives the next one, so that the link
	 * is read on during a commit (a piece's commit into a standby touched
	 * for the first time takes longer than the socket's buffer lasts) */
	pthread_t ac_thread;
	bool ac_started, ac_quit;
	pthread_mutex_t ac_lock;
	pthread_cond_t ac_cond;
	struct ckpt *ac;		/* handed over, being committed (ac_lock) */
	struct ckpt *ac_spare;		/* committed: the next piece's buffer (ac_lock) */
	int ac_failed;			/* a piece's commit failed (ac_lock) */
	uint64_t ac_bytes;		/* net thread: staging held by the piece handed over */

	/* which copy is current (lib/generation.h), and re-protection once
	 * active: look for a backup on the other host, then become primary */
	struct generation gen;
	bool gen_active;		/* raised by this daemon's activation */
	char switch_note[300];		/* a switchover made this daemon (its result) */
	bool switch_answer;		/* fail_over: tell the primary when the guest runs */
	bool reprotect_req;		/* `tandem reprotect NAME` (or reprotect = auto) */
	bool become_primary;		/* a backup answered: re-protect from here */
	uint64_t next_lookup_ns, lookup_logged_ns, lookups;
	char lookup_err[300];

	/* the checkpoint oracle (config `verify` on the primary) */
	struct {
		uint64_t checkpoints, pages, unstable;
		uint64_t bad_checkpoints, bad_pages, bad_vcpu, errors;
		uint64_t last_epoch, last_bad_epoch;
		char last_bad[200];
	} vr;
};

static void set_state(struct backup *b, enum bstate s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_state(struct backup *b, enum bstate s, const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&b->lock);
	va_start(ap, fmt);
	vsnprintf(b->detail, sizeof(b->detail), fmt, ap);
	va_end(ap);
	if (b->state != s) {
		log_info("state %s -> %s: %s", bstate_names[b->state], bstate_names[s], b->detail);
		hook_state(b->hook, bstate_names[b->state], bstate_names[s], b->detail);
		notify_status("%s: %s", bstate_names[s], b->detail);
		status_event(b->status, "%s backup state %s from=%s committed=%" PRIu64 " detail=\"%s\"",
			     b->cfg.name, bstate_names[s], bstate_names[b->state], b->committed, b->detail);
		if (s == B_STANDBY)
			notify_ready();		/* systemd: a committed checkpoint stands by */
		if (s == B_STOPPED)
			notify_stopping();
	}
	b->state = s;
	pthread_mutex_unlock(&b->lock);
}

static bool stopping(struct backup *b)
{
	bool s;

	pthread_mutex_lock(&b->lock);
	s = b->stop;
	pthread_mutex_unlock(&b->lock);
	return s;
}

/* ---- receiving one checkpoint ------------------------------------------- */

enum rx_result { RX_OK, RX_COMMITTED, RX_STOP, RX_BAD, RX_SWITCH };

static enum rx_result bad(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static enum rx_result bad(const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	log_error("invalid checkpoint stream from the primary: %s; the partial checkpoint "
		  "is discarded", msg);
	return RX_BAD;
}

static uint64_t expected_guest_pages(const struct backup *b)
{
	return b->cfg.domain == DOMAIN_MEMDOM ? b->cfg.memory / CKPT_PAGE_SIZE : 0;
}

/* Acknowledge checkpoint `epoch` (0: a round of the initial copy). */
static void send_ack(struct backup *b, uint64_t epoch, uint64_t commit_us)
{
	uint8_t buf[ACK_LEN];
	struct wire_ack ack = { epoch, commit_us };

	wire_put_ack(buf, &ack);
	if (channel_send(b->ch, REC_ACK, buf, ACK_LEN) == 0)
		b->last_sent_ns = now_ns();
}

/* Tell the primary why its stream cannot be applied here. */
static void send_error(struct backup *b, uint32_t code, const char *msg)
{
	uint8_t buf[ERROR_FIXED_LEN + WIRE_MSG_MAX + 8];

	(void)channel_send(b->ch, REC_ERROR, buf, wire_put_error(buf, code, msg));
}

/*
 * The checkpoint oracle, backup side: checkpoint c is committed; hash the
 * same pages of the standby and its vCPU state, compare with what the
 * primary captured, and count.  A mismatch is logged, not fatal: the
 * oracle is a diagnostic, and the operator decides.
 */
static void verify_standby(struct backup *b, const struct ckpt *c)
{
	const struct verify_set *v = &c->verify;
	uint64_t *got = calloc(v->n ? v->n : 1, sizeof(*got));
	uint8_t vcpu[32];
	bool has_vcpu = false;
	struct verify_result r;
	char pfns[160];
	uint64_t t0 = now_ns();
	int rc;

	if (!b->dom.ops->verify_standby || !got) {
		free(got);
		pthread_mutex_lock(&b->lock);
		b->vr.errors++;
		pthread_mutex_unlock(&b->lock);
		return;
	}
	rc = b->dom.ops->verify_standby(&b->dom, c, v, got, vcpu, &has_vcpu);
	if (rc) {
		log_warn("checkpoint %" PRIu64 ": the checkpoint oracle could not read the standby: %s",
			 c->epoch, strerror(-rc));
		free(got);
		pthread_mutex_lock(&b->lock);
		b->vr.errors++;
		pthread_mutex_unlock(&b->lock);
		return;
	}
	verify_compare(v, got, has_vcpu ? vcpu : NULL, &r);
	free(got);
	verify_format_pfns(&r, pfns, sizeof(pfns));
	if (r.mismatched)
		log_error("checkpoint %" PRIu64 ": the standby differs from what the primary captured "
			  "in %u of %u pages compared: pfns %s", c->epoch, r.mismatched, r.compared,
			  pfns);
	if (r.vcpu_mismatch)
		log_error("checkpoint %" PRIu64 ": the standby's vCPU state differs from what the "
			  "primary captured", c->epoch);
	log_debug("checkpoint %" PRIu64 ": oracle compared %u pages (%u changed while suspended, "
		  "not compared), vCPU %s, in %.1f ms", c->epoch, r.compared, r.unstable,
		  !r.vcpu_compared ? "not compared" : r.vcpu_mismatch ? "DIFFERS" : "equal",
		  (double)(now_ns() - t0) / 1e6);
	testlog("verify %" PRIu64 " compared=%u unstable=%u mismatched=%u vcpu=%s", c->epoch,
		r.compared, r.unstable, r.mismatched,
		!r.vcpu_compared ? "none" : r.vcpu_mismatch ? "differs" : "equal");
	pthread_mutex_lock(&b->lock);
	b->vr.checkpoints++;
	b->vr.pages += r.compared;
	b->vr.unstable += r.unstable;
	b->vr.last_epoch = c->epoch;
	if (r.mismatched || r.vcpu_mismatch) {
		b->vr.bad_checkpoints++;
		b->vr.bad_pages += r.mismatched;
		b->vr.bad_vcpu += r.vcpu_mismatch;
		b->vr.last_bad_epoch = c->epoch;
		snprintf(b->vr.last_bad, sizeof(b->vr.last_bad), "%s%s%s",
			 r.mismatched ? "pfns " : "", r.mismatched ? pfns : "",
			 r.vcpu_mismatch ? (r.mismatched ? "; vCPU state" : "vCPU state") : "");
	}
	pthread_mutex_unlock(&b->lock);
}

/* The held checkpoints go: the session ended (the primary sends them again)
 * or they were committed. */
static void drop_held(struct backup *b)
{
	for (unsigned i = 0; i < b->nheld; i++)
		ckpt_free(b->held[i]);
	pthread_mutex_lock(&b->lock);
	b->nheld = 0;
	b->held_bytes = 0;
	pthread_mutex_unlock(&b->lock);
}

/* The epoch the next checkpoint must follow: the last held, else the last
 * committed. */
static uint64_t last_received(const struct backup *b)
{
	return b->nheld ? b->held[b->nheld - 1]->epoch : b->committed;
}

/*
 * A device does not let complete checkpoint c commit (its cut is fenced,
 * failed, or not on this side's disk yet): keep it, uncommitted and
 * unacknowledged, to commit in order with the first later checkpoint that
 * every device lets through.  Its memory cannot be skipped: the next
 * checkpoint holds only what changed after it.
 */
static enum rx_result hold(struct backup *b, struct ckpt *c, const char *why)
{
	if (b->nheld == HELD_MAX || b->held_bytes + ckpt_bytes(c) > b->cfg.staging_limit) {
		return bad("checkpoints held for the devices since checkpoint %" PRIu64 " exceed %s "
			   "(%s); the primary must start over", b->committed + 1,
			   b->nheld == HELD_MAX ? "256 checkpoints" : "staging-limit", why);
	}
	if (!b->nheld)
		log_warn("checkpoint %" PRIu64 " is held, not committed: %s; the standby stays at "
			 "checkpoint %" PRIu64 " until a checkpoint that every device lets commit",
			 c->epoch, why, b->committed);
	else
		log_debug("checkpoint %" PRIu64 " is held too: %s", c->epoch, why);
	b->rx = ckpt_new(0);
	if (!b->rx) {
		b->rx = c;
		return bad("out of memory holding checkpoint %" PRIu64, c->epoch);
	}
	pthread_mutex_lock(&b->lock);
	b->held[b->nheld++] = c;
	b->held_bytes += ckpt_bytes(c);
	b->held_total++;
	snprintf(b->hold_why, sizeof(b->hold_why), "%s", why);
	pthread_mutex_unlock(&b->lock);
	status_event(b->status, "%s backup held checkpoint=%" PRIu64 " committed=%" PRIu64
		     " why=\"%s\"", b->cfg.name, c->epoch, b->committed, why);
	if (channel_peer(b->ch)->caps & CAP_HELD) {
		/* The primary's own verdicts may all be ok (this side's reason):
		 * it must go on taking checkpoints rather than wait for acks. */
		uint8_t buf[HELD_FIXED_LEN + WIRE_MSG_MAX + 8];

		(void)channel_send(b->ch, REC_HELD, buf, wire_put_held(buf, c->epoch, why));
	}
	testlog("held %" PRIu64, c->epoch);
	return RX_OK;
}

/* Commit the held checkpoints, oldest first, before the one that lets them. */
static int commit_held(struct backup *b)
{
	int rc;

	for (unsigned i = 0; i < b->nheld; i++) {
		b->dom.error[0] = '\0';
		if ((rc = b->dom.ops->commit(&b->dom, b->held[i]))) {
			log_error("cannot commit held checkpoint %" PRIu64 ": %s", b->held[i]->epoch,
				  strerror(-rc));
			return rc;
		}
		pthread_mutex_lock(&b->lock);
		b->committed = b->held[i]->epoch;
		pthread_mutex_unlock(&b->lock);
		testlog("commit %" PRIu64, b->held[i]->epoch);
	}
	if (b->nheld)
		log_warn("checkpoints %" PRIu64 "-%" PRIu64 " committed: the devices let checkpoint %"
			 PRIu64 " commit", b->held[0]->epoch, b->held[b->nheld - 1]->epoch,
			 b->rx->epoch);
	drop_held(b);
	return 0;
}

static enum rx_result commit_ckpt(struct backup *b, struct ckpt *c)
{
	uint64_t t0 = now_ns();
	uint8_t hash[32];
	bool initial = c->flags & CKPT_F_INITIAL, hashed;
	int rc;

	if (!b->standby_ready) {
		if ((rc = b->dom.ops->prepare_standby(&b->dom))) {
			log_error("cannot prepare the standby: %s", strerror(-rc));
			return RX_BAD;
		}
		b->standby_ready = true;
	}
	fault_kill("backup-mid-commit");
	if (fault_hit("null-call")) {
		/* Fault point: what a library's call through a NULL pointer does
		 * (seen in libxl); the crash report must say where it came from. */
		void (*volatile fn)(void) = NULL;

		fn();
	}
	if (fault_hit("slow-commit")) {
		/* Fault point: a standby that applies slowly (libxl under TCG): the
		 * net thread stops reading; heartbeats go on from the loop. */
		log_warn("fault point 'slow-commit' fired: stalling %" PRIu64 " ms before a commit",
			 3 * b->cfg.timeout_ms);
		usleep((useconds_t)(3 * b->cfg.timeout_ms * 1000));
	}
	/* (before commit_held(), which commits held ones first: the first
	 * commit of a standby whose disk was not whole yet is one of those) */
	bool first = !initial && !b->committed;

	if (!initial && b->devs.n) {
		char why[600];

		devices_set_session(&b->devs, c->dev_session);
		rc = devices_commit(&b->devs, c->epoch, c->dev_verdict, why, sizeof(why));
		if (rc == -EAGAIN)
			return hold(b, c, why);
		if (rc) {
			log_error("checkpoint %" PRIu64 ": %s; the standby keeps checkpoint %" PRIu64,
				  c->epoch, why, b->committed);
			send_error(b, ERR_STANDBY, why);
			return RX_BAD;
		}
		if (commit_held(b)) {
			send_error(b, ERR_STANDBY, "cannot commit held checkpoints");
			return RX_BAD;
		}
	}
	b->dom.error[0] = '\0';
	rc = b->dom.ops->commit(&b->dom, c);
	if (rc) {
		log_error("cannot commit checkpoint %" PRIu64 ": %s; the standby keeps checkpoint %"
			  PRIu64, c->epoch, strerror(-rc), b->committed);
		send_error(b, ERR_STANDBY, b->dom.error[0] ? b->dom.error : strerror(-rc));
		return RX_BAD;
	}
	hashed = c->has_digest && b->dom.ops->guest_hash && b->dom.ops->guest_hash(&b->dom, hash) == 0;
	if (hashed && memcmp(hash, c->digest, 32) != 0) {
		log_error("standby differs from the primary's guest at checkpoint %" PRIu64, c->epoch);
		b->exit_code = EXIT_FAILURE_RUNTIME;
		return RX_BAD;
	}
	if (!initial && c->has_verify)
		verify_standby(b, c);

	pthread_mutex_lock(&b->lock);
	if (initial) {
		b->rounds++;
		notify_extend(120000000ull);	/* the initial copy makes progress: 2 min more */
	} else {
		b->committed = c->epoch;
	}
	b->last_commit_us = (now_ns() - t0) / 1000;
	pthread_mutex_unlock(&b->lock);
	log_debug("%s %" PRIu64 ": committed in %.1f ms", initial ? "round" : "checkpoint",
		  initial ? b->rounds : c->epoch, (double)b->last_commit_us / 1e3);
	if (!initial) {
		hb_set_epoch(b->hb, c->epoch);
		if (hashed) {	/* tests: the standby's hash, equal to the primary's capture */
			char hex[65];

			hex_encode(hash, 32, hex);
			testlog("commit %" PRIu64 " %s", c->epoch, hex);
		} else {
			testlog("commit %" PRIu64, c->epoch);
		}
		if (first)
			set_state(b, B_STANDBY, "standby holds checkpoint %" PRIu64 " onwards", c->epoch);
	}
	fault_kill("backup-before-ack");
	if (!initial && fault_hit("drop-ack")) {
		log_warn("fault point 'drop-ack' fired: not acknowledging checkpoint %" PRIu64, c->epoch);
		return RX_COMMITTED;
	}
	send_ack(b, initial ? 0 : c->epoch, b->last_commit_us);
	return RX_COMMITTED;
}

/* ---- the initial copy's pieces, committed beside the next one's receipt ---- */

static void *ac_main(void *arg)
{
	struct backup *b = arg;

	pthread_mutex_lock(&b->ac_lock);
	for (;;) {
		struct ckpt *c;
		enum rx_result r;

		while (!b->ac && !b->ac_quit)
			pthread_cond_wait(&b->ac_cond, &b->ac_lock);
		if (!b->ac)
			break;
		c = b->ac;
		pthread_mutex_unlock(&b->ac_lock);
		r = commit_ckpt(b, c);
		pthread_mutex_lock(&b->ac_lock);
		if (r != RX_COMMITTED)
			b->ac_failed = 1;
		b->ac = NULL;
		if (!b->ac_spare)
			b->ac_spare = c;
		else
			ckpt_free(c);
		pthread_cond_broadcast(&b->ac_cond);
	}
	pthread_mutex_unlock(&b->ac_lock);
	return NULL;
}

/*
 * Net thread: wait until the piece handed over is committed.  RX_BAD when
 * its commit failed (said in the log then), else RX_OK.  Every record but
 * a heartbeat and the next piece of the initial copy waits so first: what
 * follows may read what a commit writes (rounds, the standby).
 */
static enum rx_result ac_wait(struct backup *b)
{
	int failed;

	if (!b->ac_started)
		return RX_OK;
	pthread_mutex_lock(&b->ac_lock);
	while (b->ac)
		pthread_cond_wait(&b->ac_cond, &b->ac_lock);
	failed = b->ac_failed;
	b->ac_failed = 0;
	pthread_mutex_unlock(&b->ac_lock);
	b->ac_bytes = 0;
	return failed ? RX_BAD : RX_OK;
}

/* Net thread: a whole piece of the initial copy: hand it to the committer
 * and receive the next into another buffer (committed inline when the
 * thread or the buffer cannot be had). */
static enum rx_result commit_piece(struct backup *b)
{
	struct ckpt *next;

	if (ac_wait(b) == RX_BAD)
		return RX_BAD;
	if (!b->ac_started) {
		pthread_mutex_init(&b->ac_lock, NULL);
		pthread_cond_init(&b->ac_cond, NULL);
		if (pthread_create(&b->ac_thread, NULL, ac_main, b)) {
			pthread_cond_destroy(&b->ac_cond);
			pthread_mutex_destroy(&b->ac_lock);
			return commit_ckpt(b, b->rx);
		}
		pthread_setname_np(b->ac_thread, "tandem-commit");
		b->ac_started = true;
	}
	pthread_mutex_lock(&b->ac_lock);
	next = b->ac_spare;
	b->ac_spare = NULL;
	pthread_mutex_unlock(&b->ac_lock);
	if (!next && !(next = ckpt_new(0)))
		return commit_ckpt(b, b->rx);
	b->ac_bytes = ckpt_bytes(b->rx);
	pthread_mutex_lock(&b->ac_lock);
	b->ac = b->rx;
	pthread_cond_broadcast(&b->ac_cond);
	pthread_mutex_unlock(&b->ac_lock);
	b->rx = next;
	return RX_OK;
}

/* The daemon ends: the committer too (after its piece). */
static void ac_stop(struct backup *b)
{
	if (!b->ac_started)
		return;
	pthread_mutex_lock(&b->ac_lock);
	b->ac_quit = true;
	pthread_cond_broadcast(&b->ac_cond);
	pthread_mutex_unlock(&b->ac_lock);
	pthread_join(b->ac_thread, NULL);
	ckpt_free(b->ac_spare);
	b->ac_spare = NULL;
	pthread_cond_destroy(&b->ac_cond);
	pthread_mutex_destroy(&b->ac_lock);
	b->ac_started = false;
}

static enum rx_result handle_record(struct backup *b, const struct channel_rec *rec)
{
	struct ckpt *c = b->rx;

	if (rec->type != REC_HEARTBEAT && rec->type != REC_CKPT_BEGIN &&
	    !(b->rx_open && (c->flags & CKPT_F_INITIAL)) && ac_wait(b) == RX_BAD)
		return RX_BAD;
	switch (rec->type) {
	case REC_HEARTBEAT:
		return RX_OK;
	case REC_STOP:
		return RX_STOP;
	case REC_FAILOVER: {	/* `tandem switchover` on the primary */
		struct wire_failover f;

		wire_get_failover(rec->payload, &f);
		if (f.reason != FAILOVER_SWITCHOVER)
			return bad("unexpected failover record (reason %u)", f.reason);
		fault_kill("backup-on-switchover");	/* tests: a switchover killed half-way */
		if (b->rx_open || f.epoch != b->committed)
			return bad("switchover to checkpoint %" PRIu64 ", but this standby holds %" PRIu64
				   "%s", f.epoch, b->committed, b->rx_open ? " and one in progress" : "");
		return RX_SWITCH;
	}
	case REC_SET: {		/* `tandem set` on the primary: interval */
		uint64_t v = get_be64(rec->payload + 8), was;

		if (b->rx_open)
			return bad("a setting inside checkpoint %" PRIu64, c->epoch);
		pthread_mutex_lock(&b->lock);
		was = b->cfg.interval_ms;
		b->cfg.interval_ms = v;
		pthread_mutex_unlock(&b->lock);
		if (v != was)
			log_warn("configuration changed while protecting (by the primary): interval %"
				 PRIu64 "ms -> %" PRIu64 "ms%s", was, v, v != b->file_interval_ms ?
				 "; differs from the file now" : "; the file says the same again");
		status_event(b->status, "%s backup set interval=%" PRIu64 "ms", b->cfg.name, v);
		return RX_OK;
	}
	case REC_CKPT_BEGIN: {
		struct wire_ckpt_begin w;
		uint64_t want = expected_guest_pages(b);

		wire_get_ckpt_begin(rec->payload, &w);
		if (b->rx_open)
			return bad("checkpoint %" PRIu64 " begins inside checkpoint %" PRIu64, w.epoch, c->epoch);
		/* only a next piece of the initial copy is received while the
		 * last one commits */
		if ((!(w.flags & CKPT_F_INITIAL) || b->committed) && ac_wait(b) == RX_BAD)
			return RX_BAD;
		b->rx_skip = false;
		if (w.flags & CKPT_F_INITIAL) {
			if (w.epoch != 0)
				return bad("initial-copy round with epoch %" PRIu64, w.epoch);
			drop_held(b);
			if (b->committed) {
				/* A new primary process: its running guest is the truth. */
				log_warn("the primary restarted protection: discarding the standby at "
					 "checkpoint %" PRIu64 " for a new initial copy", b->committed);
				if (b->standby_ready && b->dom.ops->discard)
					b->dom.ops->discard(&b->dom);
				b->standby_ready = false;
				pthread_mutex_lock(&b->lock);
				b->committed = 0;
				b->rounds = 0;
				pthread_mutex_unlock(&b->lock);
				set_state(b, B_SYNCING, "receiving a new initial copy");
			}
		} else if (w.epoch <= b->committed) {
			/* Sent again after a reconnect: committed already; ack it again. */
			b->rx_skip = true;
		} else if (!b->committed && !b->rounds) {
			return bad("checkpoint %" PRIu64 " before any initial copy", w.epoch);
		} else if (last_received(b) && w.epoch != last_received(b) + 1) {
			/* (a stream's first checkpoint may have any number: a primary
			 * that started protection over keeps counting) */
			return bad("checkpoint %" PRIu64 " follows checkpoint %" PRIu64, w.epoch,
				   last_received(b));
		}
		if (want && w.guest_pages != want)
			return bad("guest of %" PRIu64 " pages, the standby has %" PRIu64, w.guest_pages, want);
		ckpt_reset(c, w.epoch);
		c->flags = w.flags;
		c->guest_pages = w.guest_pages;
		b->rx_npages = w.npages;
		b->rx_records = 0;
		b->rx_open = true;
		if (b->state == B_WAITING)
			set_state(b, B_SYNCING, "receiving the initial copy");
		return RX_OK;
	}
	case REC_CKPT_PAGES: {
		struct wire_ckpt_pages pg;

		wire_get_ckpt_pages(rec->payload, &pg);
		if (!b->rx_open || pg.epoch != c->epoch)
			return bad("pages of checkpoint %" PRIu64 " outside it", pg.epoch);
		if (b->rx_skip) {
			c->npages += pg.count;
			b->rx_records++;
			return RX_OK;
		}
		if (c->npages + pg.count > b->rx_npages)
			return bad("more pages than checkpoint %" PRIu64 " announced", c->epoch);
		if ((c->npages + pg.count) * (CKPT_PAGE_SIZE + 8) + c->blob_len + c->state_len +
		    b->held_bytes + b->ac_bytes > b->cfg.staging_limit)
			return bad("%s %" PRIu64 " exceeds staging-limit (%" PRIu64 " bytes here): is "
				   "the primary's staging-limit larger?", c->flags & CKPT_F_INITIAL ?
				   "a piece of the initial copy, checkpoint" : "checkpoint", c->epoch,
				   b->cfg.staging_limit);
		if (ckpt_reserve_pages(c, pg.count))
			return bad("out of memory staging checkpoint %" PRIu64, c->epoch);
		for (uint32_t i = 0; i < pg.count; i++) {
			uint64_t pfn = get_be64(pg.pfns + 8 * i);
			if (pfn >= c->guest_pages)
				return bad("page %" PRIu64 " beyond the guest's %" PRIu64 " pages", pfn,
					   c->guest_pages);
			c->pfns[c->npages + i] = pfn;
		}
		memcpy(c->pages + c->npages * CKPT_PAGE_SIZE, pg.data, (size_t)pg.count * CKPT_PAGE_SIZE);
		c->npages += pg.count;
		b->rx_records++;
		return RX_OK;
	}
	case REC_CKPT_STATE:
	case REC_CKPT_BLOB: {
		struct wire_ckpt_state st;
		int rc;

		wire_get_ckpt_state(rec->payload, &st);
		if (!b->rx_open || st.epoch != c->epoch)
			return bad("state of checkpoint %" PRIu64 " outside it", st.epoch);
		if (b->rx_skip) {
			b->rx_records++;
			return RX_OK;
		}
		if (rec->type == REC_CKPT_STATE)
			rc = ckpt_set_state(c, st.kind, st.data, st.len);
		else if (c->blob_len + st.len > b->cfg.staging_limit)
			return bad("checkpoint %" PRIu64 " exceeds staging-limit", c->epoch);
		else
			rc = ckpt_append_blob(c, st.data, st.len);
		if (rc)
			return bad("out of memory staging checkpoint %" PRIu64, c->epoch);
		b->rx_records++;
		return RX_OK;
	}
	case REC_CKPT_VERIFY: {
		uint64_t epoch = get_be64(rec->payload);

		if (!b->rx_open || epoch != c->epoch)
			return bad("verify record of checkpoint %" PRIu64 " outside it", epoch);
		b->rx_records++;
		if (b->rx_skip)
			return RX_OK;
		verify_set_free(&c->verify);
		if (verify_decode(rec->payload, rec->len, &c->verify))
			return bad("out of memory staging checkpoint %" PRIu64, c->epoch);
		c->has_verify = true;
		return RX_OK;
	}
	case REC_CKPT_DEVICES: {
		struct wire_ckpt_devices d;

		wire_get_ckpt_devices(rec->payload, &d);
		if (!b->rx_open || d.epoch != c->epoch || (c->flags & CKPT_F_INITIAL))
			return bad("device verdicts of checkpoint %" PRIu64 " outside it", d.epoch);
		if (d.n != b->devs.n)
			return bad("checkpoint %" PRIu64 " carries %u devices' verdicts; this backup "
				   "protects %u devices: are both configurations the same?", d.epoch,
				   d.n, b->devs.n);
		b->rx_records++;
		c->ndev = d.n;
		memcpy(c->dev_verdict, d.verdict, sizeof(c->dev_verdict));
		memcpy(c->dev_session, d.session, sizeof(c->dev_session));
		return RX_OK;
	}
	case REC_CKPT_END: {
		struct wire_ckpt_end e;
		static const uint8_t zero[32];

		wire_get_ckpt_end(rec->payload, &e);
		if (!b->rx_open || e.epoch != c->epoch)
			return bad("end of checkpoint %" PRIu64 " outside it", e.epoch);
		if (b->devs.n && !c->ndev && !(c->flags & CKPT_F_INITIAL))
			return bad("checkpoint %" PRIu64 " carries no device verdicts; this backup "
				   "protects %u devices", e.epoch, b->devs.n);
		if (e.npages != c->npages || e.npages != b->rx_npages || e.nrecords != b->rx_records)
			return bad("checkpoint %" PRIu64 " incomplete: %" PRIu64 " of %" PRIu64
				   " pages, %" PRIu64 " of %" PRIu64 " records", e.epoch, c->npages,
				   e.npages, b->rx_records, e.nrecords);
		b->rx_open = false;
		if (b->rx_skip) {
			send_ack(b, e.epoch, 0);
			return RX_OK;
		}
		c->has_digest = memcmp(e.digest, zero, 32) != 0;
		memcpy(c->digest, e.digest, 32);
		if (c->flags & CKPT_F_INITIAL)
			return commit_piece(b);
		return commit_ckpt(b, c);
	}
	default:
		return bad("unexpected %s record", wire_type_name(rec->type));
	}
}

/* ---- failover ------------------------------------------------------------ */

/*
 * The primary is gone (stream broke, or silent for `timeout`).  This is
 * the hook where failure detection over several paths and the split-brain
 * policy decide; today the replication stream is the only path.
 */
static void answer_switchover(struct backup *b);
static void switch_failed(struct backup *b, const struct generation *was, const char *err);

/* An activation failed part-way (err says why): never another in this
 * process, and the daemon ends failed; a switchover's primary is told. */
static void activation_gave_up(struct backup *b, const struct generation *was, const char *err)
{
	b->activation_failed = true;
	b->exit_code = EXIT_FAILURE_RUNTIME;
	if (b->switch_answer)
		switch_failed(b, was, err);
	else
		set_state(b, B_FAILED, "activation from checkpoint %" PRIu64 " failed: %s",
			  b->committed, err);
}

static void fail_over(struct backup *b, const char *why)
{
	uint64_t heard = MAX(b->last_heard_ns, hb_last_heard_ns(b->hb));
	uint64_t t0 = now_ns(), since = (t0 - heard) / 1000000;
	struct generation was;
	uint8_t hash[32];
	char hex[65];
	int rc;

	if (b->activation_failed) {
		/* An activation of this standby already failed part-way (its
		 * disk may be promoted, its overlay released): another would
		 * not start the checkpoint's guest.  Seen when a switchover's
		 * activation failed and the link's loss then asked again. */
		log_error("not activating again (%s): an activation from checkpoint %" PRIu64
			  " failed already (see above); if no copy of %s runs now, resume the old "
			  "one by hand and start protection again", why, b->activated_from,
			  b->cfg.name);
		return;
	}
	if (!b->committed) {
		log_error("primary lost (%s) before the first checkpoint completed: nothing to "
			  "activate; waiting for the primary to reconnect", why);
		if (b->standby_ready && b->dom.ops->discard)
			b->dom.ops->discard(&b->dom);
		b->standby_ready = false;
		pthread_mutex_lock(&b->lock);
		b->rounds = 0;
		pthread_mutex_unlock(&b->lock);
		set_state(b, B_WAITING, "waiting for the primary");
		return;
	}
	/* From this moment every heartbeat and every handshake says so: a
	 * primary that is still alive somewhere steps down when it hears it.
	 * A switchover's primary has paused its guest and waits for the
	 * answer: the heartbeats say ACTIVE only once the guest runs here,
	 * so that an activation that fails is never taken for one done. */
	if (!b->switch_answer)
		hb_set_active(b->hb, b->committed);
	pthread_mutex_lock(&b->lock);
	was = b->gen;
	b->activated_from = b->committed;
	/* A new generation, written down before the guest runs: the copy the
	 * old primary holds is stale from now on, whatever it is told later. */
	b->gen.gen++;
	b->gen_active = true;	/* handshakes say ACTIVE from here, with this generation */
	b->gen.checkpoint = b->committed;
	snprintf(b->gen.what, sizeof(b->gen.what), "active");
	pthread_mutex_unlock(&b->lock);
	if ((rc = generation_save(&b->cfg, &b->gen)))
		log_error("cannot write the protection generation %" PRIu64 " to %s: %s; the old "
			  "primary's host may not learn that its copy is stale", b->gen.gen,
			  b->cfg.run_dir, strerror(-rc));
	else
		log_info("protection generation %" PRIu64 " (this activation) written down",
			 b->gen.gen);
	log_warn("failover: primary lost (%s), last heard %" PRIu64 " ms ago, timeout %" PRIu64
		 " ms; activating the standby from checkpoint %" PRIu64, why, since,
		 b->cfg.timeout_ms, b->committed);
	{	/* for `tandem report` */
		time_t t = time(NULL);
		struct tm tm;

		gmtime_r(&t, &tm);
		pthread_mutex_lock(&b->lock);
		strftime(b->rep.at, sizeof(b->rep.at), "%Y-%m-%dT%H:%M:%SZ", &tm);
		snprintf(b->rep.why, sizeof(b->rep.why), "%s", why);
		snprintf(b->rep.decision, sizeof(b->rep.decision), "%s", hb_decision_name(b->decision));
		b->rep.last_heard_ms = since;
		pthread_mutex_unlock(&b->lock);
		hb_render(b->hb, false, b->rep.paths, sizeof(b->rep.paths));
	}
	set_state(b, B_ACTIVATING, "activating from checkpoint %" PRIu64, b->committed);
	if (b->nheld)
		log_warn("%u checkpoints held for the devices (%" PRIu64 "-%" PRIu64 ") are discarded: "
			 "the guest resumes from checkpoint %" PRIu64 ", the last every device let "
			 "commit", b->nheld, b->held[0]->epoch, b->held[b->nheld - 1]->epoch,
			 b->committed);
	drop_held(b);
	if (b->devs.n) {
		char derr[600];

		if ((rc = devices_activate(&b->devs, b->committed, derr, sizeof(derr)))) {
			log_error("activation failed: %s; the guest is not started (its disk would not "
				  "be checkpoint %" PRIu64 "'s)", derr, b->committed);
			activation_gave_up(b, &was, derr);
			return;
		}
	}
	if (fault_hit("slow-activate")) {
		/* Fault point: an activation as slow as libxl's under an emulated
		 * CPU (heartbeats go on from the loop). */
		log_warn("fault point 'slow-activate' fired: the activation takes %" PRIu64 " ms more",
			 4 * b->cfg.timeout_ms);
		usleep((useconds_t)(4 * b->cfg.timeout_ms * 1000));
	}
	rc = fault_hit("activate-fails") ? -EIO : b->dom.ops->activate(&b->dom);
	if (rc) {
		if (b->switch_answer)	/* (it said nothing yet: switch_failed tells the primary) */
			log_error("activation failed: %s", strerror(-rc));
		else
			log_error("activation failed: %s; this backup said it was active, so a primary "
				  "that heard it has paused its guest (superseded): if no copy of %s runs "
				  "now, unpause the old one by hand (xl unpause) and start protection "
				  "again", strerror(-rc), b->cfg.name);
		activation_gave_up(b, &was, strerror(-rc));
		return;
	}
	pthread_mutex_lock(&b->lock);
	b->activate_ms = (double)(now_ns() - t0) / 1e6;
	b->failover_ms = (double)(now_ns() - heard) / 1e6;
	pthread_mutex_unlock(&b->lock);
	if (b->switch_answer) {
		hb_set_active(b->hb, b->committed);
		answer_switchover(b);
	}
	log_warn("guest running: activated from checkpoint %" PRIu64 " in %.1f ms, %.1f ms after "
		 "the primary was last heard (timeout %" PRIu64 " ms)", b->committed, b->activate_ms,
		 b->failover_ms, b->cfg.timeout_ms);
	if (b->dom.ops->guest_hash && b->dom.ops->guest_hash(&b->dom, hash) == 0) {
		hex_encode(hash, 32, hex);
		testlog("activated %" PRIu64 " %s", b->committed, hex);
	}
	testlog("failover heard_to_running_ms=%.1f activate_ms=%.1f", b->failover_ms, b->activate_ms);
	status_event(b->status, "%s backup failover checkpoint=%" PRIu64 " heard_to_running_ms=%.1f "
		     "activate_ms=%.1f timeout_ms=%" PRIu64 " reason=\"%s\"", b->cfg.name, b->committed,
		     b->failover_ms, b->activate_ms, b->cfg.timeout_ms, why);
	pthread_mutex_lock(&b->lock);
	b->rep.done = true;
	pthread_mutex_unlock(&b->lock);
	set_state(b, B_ACTIVE, "guest running from checkpoint %" PRIu64, b->committed);
}

/*
 * A planned switchover: the primary paused its guest, its last checkpoint
 * (committed here and acknowledged) is the guest's state; activate from it
 * and tell the primary that the guest runs here (FAILOVER reason 2), so
 * that it destroys its paused copy.  Net thread, in the session.
 */
static void switched_over(struct backup *b)
{
	log_warn("switchover requested by the primary: its guest is paused at checkpoint %" PRIu64
		 ", committed here; activating", b->committed);
	b->switch_answer = true;	/* fail_over answers as soon as the guest runs */
	fail_over(b, "switchover requested by the primary (tandem switchover)");
	b->switch_answer = false;
}

/* The switchover's answer, the moment the guest runs here (net thread). */
static void answer_switchover(struct backup *b)
{
	uint8_t buf[FAILOVER_LEN];
	struct wire_failover f = { FAILOVER_SWITCHED, b->committed };

	wire_put_failover(buf, &f);
	if (channel_send(b->ch, REC_FAILOVER, buf, FAILOVER_LEN))
		log_warn("could not tell the primary that the guest runs here; it learns it from "
			 "the heartbeats");
	testlog("switched %" PRIu64, b->committed);
}

/*
 * A switchover's activation failed here (net thread, in the session): the
 * guest did not start, and the primary's paused copy is the only one.
 * Make sure this one never runs (discard it), take the generation this
 * activation wrote back (else the primary would read its own copy as
 * stale at its next connection), and tell the primary (FAILOVER reason
 * 3), which resumes its guest.  The daemon then ends (failed): a backup
 * started again gets a new initial copy; its disks resync in full, since
 * the primary's resumed copy counts as a new generation.
 */
static void switch_failed(struct backup *b, const struct generation *was, const char *err)
{
	uint8_t buf[FAILOVER_LEN];
	struct wire_failover f = { FAILOVER_SWITCH_FAILED, b->committed };
	int rc;

	if (b->standby_ready && b->dom.ops->discard)
		b->dom.ops->discard(&b->dom);
	b->standby_ready = false;
	pthread_mutex_lock(&b->lock);
	b->gen = *was;
	b->gen_active = false;
	pthread_mutex_unlock(&b->lock);
	if ((rc = generation_save(&b->cfg, &b->gen)))
		log_error("cannot write the protection generation %" PRIu64 " back: %s; the "
			  "primary may take its own copy for stale", b->gen.gen, strerror(-rc));
	wire_put_failover(buf, &f);
	if (channel_send(b->ch, REC_FAILOVER, buf, FAILOVER_LEN))
		log_error("switchover failed (%s), and the primary could not be told: its guest "
			  "stays paused until this backup is started again (a backup with no "
			  "standby makes it resume)", err);
	else
		log_error("switchover failed: the guest could not be started here from checkpoint %"
			  PRIu64 " (%s); the standby is discarded, the primary resumes its paused "
			  "guest", b->committed, err);
	testlog("switch-failed %" PRIu64, b->committed);
	set_state(b, B_FAILED, "the switchover's activation from checkpoint %" PRIu64 " failed "
		  "(%s); the guest runs on the other host", b->committed, err);
}

/* ---- the session with one primary ---------------------------------------- */

/* Returns true when the daemon should stop accepting (stopped or activated). */
static bool run_session(struct backup *b)
{
	uint64_t timeout_ns = b->cfg.timeout_ms * 1000000ull;
	struct channel_rec rec;
	char why[300] = "";

	b->last_heard_ns = b->last_sent_ns = now_ns();
	b->rx_open = false;
	drop_held(b);	/* unacknowledged: the primary sends them again */
	for (;;) {
		int rc = channel_recv(b->ch, &rec);

		if (stopping(b))
			return true;
		if (rc == 0) {
			enum rx_result r;

			b->last_heard_ns = now_ns();
			pthread_mutex_lock(&b->lock);
			b->bytes_received = channel_bytes_received(b->ch);
			pthread_mutex_unlock(&b->lock);
			r = handle_record(b, &rec);
			if (r == RX_STOP) {
				log_info("the primary stopped protection cleanly; discarding the standby");
				if (b->standby_ready && b->dom.ops->discard)
					b->dom.ops->discard(&b->dom);
				b->standby_ready = false;
				set_state(b, B_STOPPED, "the primary stopped protection");
				return true;
			}
			if (r == RX_BAD) {
				snprintf(why, sizeof(why), "invalid checkpoint stream");
				break;
			}
			if (r == RX_SWITCH) {
				switched_over(b);
				if (b->activation_failed) {
					/* the primary reads the answer, then closes */
					uint64_t end = now_ns() + timeout_ns;

					while (now_ns() < end && !stopping(b)) {
						int r2 = channel_recv(b->ch, &rec);

						if (r2 && r2 != -EAGAIN)
							break;
					}
					snprintf(why, sizeof(why), "the switchover's activation failed");
					break;
				}
				snprintf(why, sizeof(why), "switchover");
				break;
			}
		} else if (rc == -EAGAIN) {
			if (now_ns() - b->last_heard_ns > timeout_ns) {
				snprintf(why, sizeof(why), "nothing heard for %" PRIu64 " ms",
					 (now_ns() - b->last_heard_ns) / 1000000);
				break;
			}
		} else {
			snprintf(why, sizeof(why), "%s", rc == -EPIPE ? "the replication stream closed" :
				 rc == -EBADMSG ? channel_error(b->ch) : strerror(-rc));
			if (rc == -EBADMSG)
				log_error("dropping the replication stream: %s", channel_error(b->ch));
			break;
		}
	}
	ac_wait(b);	/* (its commit answers on this channel) */
	{
		struct channel *ch = b->ch;
		pthread_mutex_lock(&b->ch_lock);
		pthread_mutex_lock(&b->lock);
		b->ch = NULL;
		snprintf(b->lost_why, sizeof(b->lost_why), "%s", why);
		pthread_mutex_unlock(&b->lock);
		pthread_mutex_unlock(&b->ch_lock);
		channel_free(ch);
	}
	pthread_mutex_lock(&b->lock);
	bool handover = b->handover;
	b->handover = false;
	pthread_mutex_unlock(&b->lock);
	if (b->activation_failed)
		return true;	/* the daemon ends: the guest runs on the other host */
	if (b->state == B_ACTIVE && !strcmp(why, "switchover")) {
		hb_set_replication_up(b->hb, false);
		return false;	/* the guest runs here; re-protection looks for the old primary */
	}
	if (handover) {
		/* The primary is already back on a new connection: no gap. */
		log_info("the primary's previous session ended: it connected again");
		return false;
	}
	log_warn("replication stream from the primary lost: %s (timeout %" PRIu64 " ms)", why,
		 b->cfg.timeout_ms);
	hb_set_replication_up(b->hb, false);
	if (fault_hit("backup-late-loop")) {
		/* the primary's next connection arrives before this thread
		 * looks at the decision the loss just took */
		log_warn("fault point 'backup-late-loop' fired: waiting for the primary's next "
			 "connection before acting on the loss");
		for (int i = 0; i < 500 && !stopping(b); i++) {
			bool pending;

			pthread_mutex_lock(&b->lock);
			pending = b->incoming != NULL;
			pthread_mutex_unlock(&b->lock);
			if (pending)
				break;
			usleep(10000);
		}
	}
	return false;
}

/* The heartbeat module's verdict changed (its thread; must not block). */
static void on_decision(void *arg, enum hb_decision d, const struct hb_view *v)
{
	struct backup *b = arg;

	status_event(b->status, "%s backup decision %s replication=%s paths_up=%u paths=%u",
		     b->cfg.name, hb_decision_name(d), v->repl_up ? "up" : "down", v->paths_up,
		     v->paths);
	pthread_mutex_lock(&b->lock);
	b->decision = d;
	b->decision_seq++;
	pthread_mutex_unlock(&b->lock);
}

/*
 * Act on the current decision while no primary is connected.  Returns true
 * when the daemon should stop accepting (activated, or activation failed).
 */
static bool act_on_decision(struct backup *b)
{
	enum hb_decision d;
	uint64_t seq;
	bool promote, fresh;
	char err[512];
	int rc;

	if (b->activation_failed) {	/* fail_over says so once; then the daemon ends */
		if (b->state != B_FAILED)
			set_state(b, B_FAILED, "activation from checkpoint %" PRIu64 " failed",
				  b->activated_from);
		return true;
	}
	pthread_mutex_lock(&b->lock);
	d = b->decision;
	seq = b->decision_seq;
	promote = b->promote;
	b->promote = false;
	fresh = seq != b->acted_seq;
	b->acted_seq = seq;
	pthread_mutex_unlock(&b->lock);

	if (promote) {
		fail_over(b, b->forced_note[0] ? "promoted by the operator with --force" :
			  "promoted by the operator (tandem promote)");
		goto out;
	}
	if (!b->committed && (d == HB_FAILOVER || d == HB_RUN_FENCE || d == HB_ASK_WITNESS ||
			      d == HB_WAIT_MANUAL)) {
		if (fresh)
			fail_over(b, b->lost_why);	/* nothing to activate: back to waiting */
		goto out;
	}
	switch (d) {
	case HB_FAILOVER:
		if (fresh)
			fail_over(b, b->lost_why);
		break;
	case HB_RUN_FENCE:
		if (!fresh)
			break;
		log_warn("every path to the primary is lost: running the fence command "
			 "(timeout %" PRIu64 " ms)", b->cfg.fence_timeout_ms);
		rc = hb_run_fence(b->cfg.name, b->cfg.fence_command, b->cfg.fence_timeout_ms,
				  err, sizeof(err));
		snprintf(b->rep.fence, sizeof(b->rep.fence), "%s", rc == 0 ? "the fence command "
			 "succeeded: the primary was fenced before activation" : err);
		status_event(b->status, "%s backup fence result=%s detail=\"%s\"", b->cfg.name,
			     rc == 0 ? "fenced" : "failed", rc == 0 ? "exit 0" : err);
		if (rc == 0) {
			log_warn("fence command succeeded: the primary is fenced");
			fail_over(b, "primary lost and fenced");
		} else {
			log_error("fence command failed: %s; NOT activating (run `tandem promote %s` "
				  "once the primary is known to be down)", err, b->cfg.name);
			set_state(b, B_MANUAL, "fence failed (%s): not activating; waiting for "
				  "`tandem promote %s`", err, b->cfg.name);
		}
		break;
	case HB_ASK_WITNESS:
		if (!fresh && now_ns() < b->next_witness_ns)
			break;
		b->next_witness_ns = now_ns() + b->cfg.timeout_ms * 1000000ull;
		rc = hb_witness_ask(&b->cfg, b->key, ROLE_BACKUP, b->cfg.timeout_ms, err, sizeof(err));
		if (rc == 0) {
			log_warn("the witness granted activation");
			fail_over(b, "primary lost; the witness agreed");
		} else {
			set_state(b, B_MANUAL, "the witness did not grant activation (%s): not activating; "
				  "asking again", err);
		}
		break;
	case HB_WAIT_MANUAL:
		if (fresh)
			set_state(b, B_MANUAL, "every path to the primary is lost: standby at checkpoint %"
				  PRIu64 "; waiting for `tandem promote %s`", b->committed, b->cfg.name);
		break;
	case HB_DEGRADED_WAIT:
		if (fresh)
			set_state(b, B_DEGRADED, "%s: the primary is alive on another path; standby kept "
				  "at checkpoint %" PRIu64, hb_decision_status(d), b->committed);
		break;
	default:
		break;
	}
out:
	return b->state == B_ACTIVE || b->state == B_FAILED;
}

/*
 * The guest runs here: a primary that connects (restarted, or back after a
 * partition) is told so, with the checkpoint it was activated from, and
 * steps down (docs/protocol.md, ERROR code 6).  Then the connection ends.
 */
/* ---- `tandem probe`'s link measurement --------------------------------------- */

#define PROBE_SERVE_MAX_S 30

struct probe_job {
	struct backup *b;
	struct channel *ch;
	char src[96];
};

static int probes_running;	/* one at a time (atomic) */

/*
 * A primary host's `tandem probe` measuring the replication link: an
 * authenticated connection (CAP_PROBE in its HELLO) that never becomes a
 * session.  Echo what asks for it; count the bytes; at PROBE_F_DONE answer
 * how many arrived and over how long.  Bounded: 30 s, then the connection
 * is closed.
 */
static void *probe_main(void *arg)
{
	struct probe_job *j = arg;
	uint64_t bytes = 0, first = 0, last = 0, t0 = now_ns();
	struct channel_rec rec;
	bool done = false;

	net_tune(channel_fd(j->ch), 5000);
	net_send_timeout(channel_fd(j->ch), 5000);
	channel_set_stall_timeout(j->ch, 5000);
	while (!done && now_ns() - t0 < PROBE_SERVE_MAX_S * 1000000000ull &&
	       channel_recv(j->ch, &rec) == 0 && rec.type == REC_PROBE) {
		uint8_t out[PROBE_FIXED_LEN + 16];
		uint32_t flags = get_be32(rec.payload + 8);
		uint64_t t = now_ns();

		if (!first)
			first = t;
		last = t;
		bytes += rec.len;
		memcpy(out, rec.payload, 8);			/* its seq */
		memset(out + 8, 0, sizeof(out) - 8);
		if (flags & PROBE_F_ECHO &&
		    channel_send(j->ch, REC_PROBE, out, PROBE_FIXED_LEN))
			break;
		if (flags & PROBE_F_DONE) {
			put_be32(out + 8, PROBE_F_RESULT);
			put_be64(out + PROBE_FIXED_LEN, bytes);
			put_be64(out + PROBE_FIXED_LEN + 8, (last - first) / 1000);
			channel_send(j->ch, REC_PROBE, out, sizeof(out));
			done = true;
		}
	}
	log_info("link probe from %s: %.1f MiB in %.2f s%s", j->src, (double)bytes / 1048576,
		 (double)(last - first) / 1e9, done ? "" : " (ended early)");
	channel_free(j->ch);
	free(j);
	__atomic_sub_fetch(&probes_running, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void serve_probe(struct backup *b, struct channel *ch, const char *src)
{
	struct probe_job *j;
	pthread_attr_t at;
	pthread_t t;

	if (__atomic_add_fetch(&probes_running, 1, __ATOMIC_SEQ_CST) > 1 ||
	    !(j = calloc(1, sizeof(*j)))) {
		__atomic_sub_fetch(&probes_running, 1, __ATOMIC_SEQ_CST);
		log_warn("link probe from %s refused: another one runs", src);
		channel_free(ch);
		return;
	}
	j->b = b;
	j->ch = ch;
	snprintf(j->src, sizeof(j->src), "%s", src);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, probe_main, j)) {
		__atomic_sub_fetch(&probes_running, 1, __ATOMIC_SEQ_CST);
		channel_free(ch);
		free(j);
	}
	pthread_attr_destroy(&at);
}

static void tell_superseded(struct backup *b, struct channel *ch)
{
	char msg[WIRE_MSG_MAX];
	uint8_t buf[ERROR_FIXED_LEN + WIRE_MSG_MAX + 8];
	uint64_t end = now_ms() + b->cfg.timeout_ms;
	struct channel_rec rec;

	snprintf(msg, sizeof(msg), "the backup of %s is active: it runs the guest from checkpoint %"
		 PRIu64 "; this primary is superseded", b->cfg.name, b->activated_from);
	log_warn("a primary connected while the guest runs here: telling it to step down");
	if (channel_send(ch, REC_ERROR, buf, wire_put_error(buf, ERR_ACTIVE, msg)) == 0) {
		/* Let it read the record before we close: drain until it closes. */
		while (now_ms() < end) {
			int rc = channel_recv(ch, &rec);
			if (rc && rc != -EAGAIN)
				break;
		}
	}
	channel_free(ch);
}

/*
 * The gate hands over an authenticated primary (on its handshake thread).
 * The newest connection wins: a primary that reconnects after a silent
 * drop ends its own dead session at once instead of waiting for it to
 * time out.  Once active, the primary is told to step down instead.
 */
static void on_arrived(void *arg, struct channel *ch, const char *src)
{
	struct backup *b = arg;
	struct channel *old;

	if (channel_peer(ch)->caps & CAP_PROBE) {	/* never a session */
		serve_probe(b, ch, src);
		return;
	}
	if (channel_peer(ch)->caps & CAP_LOOKUP) {	/* never a session either */
		struct wire_generation pg = { 0 };

		channel_peer_generation(ch, &pg);
		log_info("the host that runs the guest (generation %" PRIu64 ", from %s) found this "
			 "backup: it re-protects %s to this host now", pg.gen, src, b->cfg.name);
		channel_free(ch);
		return;
	}
	{
		struct wire_generation pg;

		pthread_mutex_lock(&b->lock);
		bool is_stale = channel_peer_generation(ch, &pg) && pg.gen < b->gen.gen &&
				!b->gen_active && b->state != B_ACTIVE && b->state != B_ACTIVATING;
		uint64_t mine = b->gen.gen;
		pthread_mutex_unlock(&b->lock);
		if (is_stale) {
			char msg[WIRE_MSG_MAX];
			uint8_t buf[ERROR_FIXED_LEN + WIRE_MSG_MAX + 8];

			snprintf(msg, sizeof(msg), "the primary's copy of %s is stale: generation %"
				 PRIu64 ", this backup has seen %" PRIu64 " (a newer copy ran since)",
				 b->cfg.name, pg.gen, mine);
			log_error("refused the primary from %s: %s", src, msg);
			channel_send(ch, REC_ERROR, buf, wire_put_error(buf, ERR_STALE, msg));
			channel_free(ch);
			return;
		}
	}
	pthread_mutex_lock(&b->lock);
	if (b->stop) {
		pthread_mutex_unlock(&b->lock);
		channel_free(ch);
		return;
	}
	if (b->gen_active || b->state == B_ACTIVE || b->state == B_ACTIVATING) {
		pthread_mutex_unlock(&b->lock);
		tell_superseded(b, ch);
		return;
	}
	old = b->incoming;
	b->incoming = ch;
	snprintf(b->incoming_src, sizeof(b->incoming_src), "%s", src);
	if (b->ch) {
		log_warn("the primary connected again (from %s, authenticated): ending its previous "
			 "session", src);
		b->handover = true;
		channel_shutdown(b->ch);
	}
	pthread_cond_broadcast(&b->in_cond);
	pthread_mutex_unlock(&b->lock);
	channel_free(old);
}

/* The next authenticated primary, waiting up to 50 ms; NULL if none. */
static struct channel *take_incoming(struct backup *b, char *src, size_t len)
{
	struct channel *ch;

	pthread_mutex_lock(&b->lock);
	if (!b->incoming && !b->stop)
		cond_wait_ns(&b->in_cond, &b->lock, 50000000ull);
	ch = b->incoming;
	b->incoming = NULL;
	snprintf(src, len, "%s", b->incoming_src);
	pthread_mutex_unlock(&b->lock);
	return ch;
}

/* ---- re-protection: this host runs the guest, the other returns --------- */

/* This side's generation, for the handshake (channel_params.generation). */
static void backup_generation(void *arg, struct wire_generation *out)
{
	struct backup *b = arg;

	pthread_mutex_lock(&b->lock);
	out->gen = b->gen.gen;
	if (b->gen_active || b->state == B_ACTIVE || b->state == B_ACTIVATING) {
		out->flags = GEN_F_ACTIVE;
		out->checkpoint = b->activated_from;
	} else {
		out->flags = 0;
		out->checkpoint = b->committed;
	}
	pthread_mutex_unlock(&b->lock);
}

/* Why this active daemon cannot re-protect (NULL: it can). */
static const char *cannot_reprotect(const struct backup *b)
{
	if (!b->cfg.hosts.n)
		return "the configuration names one direction only (replication = ...); "
		       "re-protection needs hosts = NAME ADDR:PORT, NAME ADDR:PORT in the file on "
		       "both hosts (docs/configuration.md, 'One file for both hosts')";
	if (!b->dom.ops->become_primary)
		return "the domain driver cannot protect the guest it activated from the same "
		       "daemon yet";
	return NULL;
}

/* Time to look for a backup on the other host (active, two hosts). */
static bool lookup_due(struct backup *b)
{
	bool due;

	pthread_mutex_lock(&b->lock);
	due = (b->reprotect_req || b->cfg.reprotect == REPROTECT_AUTO) && !cannot_reprotect(b) &&
	      now_ns() >= b->next_lookup_ns;
	if (due)
		b->next_lookup_ns = now_ns() + 1000000000ull;	/* once a second */
	pthread_mutex_unlock(&b->lock);
	return due;
}

/*
 * Is a backup of this VM listening on the other host, one that takes this
 * host as its primary?  An authenticated handshake as a primary announcing
 * a look-up (CAP_LOOKUP: the backup answers it and closes, never a
 * session), so that a wrong key, configuration or generation is found
 * before this host holds its guest's output for a backup that would never
 * acknowledge.  True: become primary now.
 */
static bool look_for_backup(struct backup *b)
{
	struct tandem_config cfg = b->cfg;
	struct channel_params cp = { .role = ROLE_PRIMARY, .vm = b->cfg.name, .encrypt = b->cfg.encrypt,
				     .caps = CAP_LOOKUP, .generation = backup_generation,
				     .generation_arg = b };
	struct wire_generation pg;
	struct channel *ch = NULL;
	char err[512] = "";
	int fd, rc;

	config_set_role(&cfg, ROLE_PRIMARY);	/* where the other host listens */
	memcpy(cp.key, b->key, KEY_LEN);
	config_digest(&b->cfg, cp.digest);
	pthread_mutex_lock(&b->lock);
	b->lookups++;
	pthread_mutex_unlock(&b->lock);
	fd = net_connect(&cfg.replication, 1000, err, sizeof(err));
	if (fd >= 0) {
		net_tune(fd, MAX(b->cfg.timeout_ms, 1000ull));
		rc = channel_handshake(fd, &cp, &ch, err, sizeof(err));
		if (rc)
			close(fd);
		else if (channel_peer_generation(ch, &pg) && pg.gen > b->gen.gen)
			snprintf(err, sizeof(err), "the backup there holds protection generation %"
				 PRIu64 ", newer than this host's %" PRIu64 ": this copy would be stale",
				 pg.gen, b->gen.gen);
		else if (!channel_peer_generation(ch, &pg))
			snprintf(err, sizeof(err), "the tandem there does not exchange protection "
				 "generations: run the same version on both hosts");
		else if (pg.flags & GEN_F_ACTIVE)
			snprintf(err, sizeof(err), "the backup there says it runs the guest too "
				 "(generation %" PRIu64 ", from checkpoint %" PRIu64 "): not "
				 "re-protecting; check `tandem status %s` on both hosts", pg.gen,
				 pg.checkpoint, b->cfg.name);
		else
			err[0] = '\0';
		channel_free(ch);
		ch = NULL;
		if (!rc && !err[0]) {
			log_warn("re-protection: a backup of %s answers on %s at %s:%u (generation %"
				 PRIu64 "): this host, which runs the guest, becomes its primary",
				 b->cfg.name, config_peer_host(&b->cfg), cfg.replication.host,
				 cfg.replication.port, pg.gen);
			set_state(b, B_ACTIVE, "re-protecting: a backup answers on %s; becoming primary",
				  config_peer_host(&b->cfg));
			pthread_mutex_lock(&b->lock);
			b->become_primary = true;
			b->stop = true;
			pthread_mutex_unlock(&b->lock);
			return true;
		}
	}
	pthread_mutex_lock(&b->lock);
	snprintf(b->lookup_err, sizeof(b->lookup_err), "%s", err);
	bool say = now_ns() - b->lookup_logged_ns > 30000000000ull || !b->lookup_logged_ns;
	if (say)
		b->lookup_logged_ns = now_ns();
	pthread_mutex_unlock(&b->lock);
	if (say)
		log_info("re-protection: no backup of %s answers on %s at %s:%u yet (%s); looking "
			 "every second", b->cfg.name, config_peer_host(&b->cfg), cfg.replication.host,
			 cfg.replication.port, err);
	return false;
}

static void *net_main(void *arg)
{
	struct backup *b = arg;
	struct channel_params cp = { .role = ROLE_BACKUP, .vm = b->cfg.name, .encrypt = b->cfg.encrypt,
				     .generation = backup_generation, .generation_arg = b };
	char src[96];
	int rc;

	memcpy(cp.key, b->key, KEY_LEN);
	config_digest(&b->cfg, cp.digest);
	set_state(b, B_WAITING, "waiting for the primary on %s:%u", b->cfg.replication.host,
		  b->cfg.replication.port);
	/* a handshake has at most the timeout, and never less than a second */
	{
		struct gate *g = NULL;

		rc = gate_start(&g, b->listen_fd, &cp, MAX(b->cfg.timeout_ms, 1000ull), on_arrived, b);
		pthread_mutex_lock(&b->lock);
		b->gate = g;
		pthread_mutex_unlock(&b->lock);
	}
	explicit_bzero(cp.key, sizeof(cp.key));
	if (rc) {
		log_error("cannot start accepting connections: %s", strerror(-rc));
		set_state(b, B_FAILED, "cannot accept connections");
		goto out;
	}
	while (!stopping(b)) {
		struct channel *ch;
		bool pending, fresh;

		/* A decision taken before a primary's new connection arrived is
		 * acted on first: the loss it answers happened before, and a
		 * reconnection landing in the same instant must not make the
		 * outcome depend on which thread ran first. */
		pthread_mutex_lock(&b->lock);
		pending = b->incoming != NULL;
		fresh = b->decision_seq != b->acted_seq || b->promote;
		pthread_mutex_unlock(&b->lock);
		if ((!pending || fresh) && b->state != B_ACTIVE && act_on_decision(b) &&
		    b->state != B_ACTIVE)
			break;		/* activation failed */
		if (!pending && b->state == B_ACTIVE && lookup_due(b) && look_for_backup(b))
			break;		/* a backup answers: re-protect from here */
		ch = take_incoming(b, src, sizeof(src));
		if (!ch)
			continue;
		if (b->state == B_ACTIVE) {
			tell_superseded(b, ch);
			continue;
		}
		net_tune(channel_fd(ch), 50);
		net_send_timeout(channel_fd(ch), b->cfg.timeout_ms);
		channel_set_stall_timeout(ch, b->cfg.timeout_ms);
		log_info("primary connected from %s (%s)", src,
			 b->cfg.encrypt ? "authenticated, encrypted" : "authenticated");
		{
			struct wire_generation pg;

			if (channel_peer_generation(ch, &pg) && pg.gen > b->gen.gen) {
				char why[160];

				/* the guest ran elsewhere since this host last knew:
				 * its disks may have diverged (docs/disk.md) */
				snprintf(why, sizeof(why), "the primary's protection generation %"
					 PRIu64 " is newer than this host's %" PRIu64, pg.gen,
					 b->gen.gen);
				devices_diverged(&b->devs, why);
				pthread_mutex_lock(&b->lock);
				b->gen.gen = pg.gen;
				b->gen.checkpoint = 0;
				snprintf(b->gen.what, sizeof(b->gen.what), "standby");
				pthread_mutex_unlock(&b->lock);
				if ((rc = generation_save(&b->cfg, &b->gen)))
					log_error("cannot write the protection generation: %s",
						  strerror(-rc));
				log_info("protection generation %" PRIu64 ": the primary's, taken over",
					 pg.gen);
			}
		}
		if (b->cfg.interval_ms != b->file_interval_ms) {
			/* `tandem set` lasts a session: a primary that runs with
			 * another value says so (SET) before its next checkpoint */
			log_info("a new session: interval back to the file's %" PRIu64 "ms until the "
				 "primary says otherwise", b->file_interval_ms);
			pthread_mutex_lock(&b->lock);
			b->cfg.interval_ms = b->file_interval_ms;
			pthread_mutex_unlock(&b->lock);
		}
		pthread_mutex_lock(&b->ch_lock);
		pthread_mutex_lock(&b->lock);
		b->ch = ch;
		pthread_mutex_unlock(&b->lock);
		{
			/* First word: the checkpoint this standby holds (0: none),
			 * so that a primary knows whether to resume or start over. */
			uint8_t buf[HEARTBEAT_LEN];
			struct wire_heartbeat hb = { b->hb_seq++, now_ns(), b->committed };

			wire_put_heartbeat(buf, &hb);
			if (channel_send(ch, REC_HEARTBEAT, buf, HEARTBEAT_LEN) == 0)
				b->last_sent_ns = now_ns();
		}
		pthread_mutex_unlock(&b->ch_lock);
		hb_set_replication_up(b->hb, true);
		if (b->committed && b->state != B_STANDBY)
			set_state(b, B_STANDBY, "the primary is back; standby at checkpoint %" PRIu64,
				  b->committed);
		if (run_session(b))
			break;
	}
out:
	ac_stop(b);
	{
		struct gate *g;

		pthread_mutex_lock(&b->lock);
		g = b->gate;
		b->gate = NULL;		/* status stops reading it */
		pthread_mutex_unlock(&b->lock);
		gate_stop(g);
	}
	pthread_mutex_lock(&b->lock);
	channel_free(b->incoming);
	b->incoming = NULL;
	pthread_mutex_unlock(&b->lock);
	close(b->listen_fd);
	b->listen_fd = -1;
	uv_async_send(&b->done_async);
	return NULL;
}

/* ---- status --------------------------------------------------------------- */

/* The first UDP path on which the primary is heard now, described in
 * `what` ("path 1 (A-B), last heard 40 ms ago"); -1 when none hears it. */
static int primary_heard_on(struct backup *b, char *what, size_t len)
{
	for (int i = 0; i < hb_npaths(b->hb); i++) {
		struct hb_path_stats st;

		if (hb_path_stats(b->hb, i, &st) == 0 && st.up) {
			snprintf(what, len, "path %d, last heard %" PRId64 " ms ago (timeout %" PRIu64
				 " ms)", i + 1, st.last_heard_ms, b->cfg.timeout_ms);
			return i;
		}
	}
	return -1;
}

/*
 * `tandem promote [--force] NAME`: activate now, on the operator's word.
 * Refused while the primary is heard on any path (it runs the guest: two
 * live copies); --force overrides that, and says so in the log and in
 * status.  The primary, when it hears of the activation, steps down.
 */
static void promote_request(struct backup *b, bool force, char *buf, size_t len)
{
	char heard[200];
	int path = primary_heard_on(b, heard, sizeof(heard));

	pthread_mutex_lock(&b->lock);
	if (b->state == B_ACTIVE || b->state == B_ACTIVATING)
		snprintf(buf, len, "refused: %s is already active here\n", b->cfg.name);
	else if (!b->committed)
		snprintf(buf, len, "refused: no complete checkpoint of %s to activate\n", b->cfg.name);
	else if (b->ch)
		snprintf(buf, len, "refused: the primary of %s is connected and protecting; stop it "
			 "first\n", b->cfg.name);
	else if (path >= 0 && !force)
		snprintf(buf, len, "refused: the primary of %s is alive: heard on %s; activating "
			 "here would run two copies of the guest.  Stop the primary, or if you know "
			 "it is dead, `tandem promote --force %s` (the primary steps down when it "
			 "hears of it)\n", b->cfg.name, heard, b->cfg.name);
	else {
		b->promote = true;
		if (path >= 0) {
			snprintf(b->forced_note, sizeof(b->forced_note),
				 "promoted with --force while the primary was heard on %s", heard);
			log_warn("promote --force by the operator: OVERRIDING that the primary is "
				 "heard on %s; activating from checkpoint %" PRIu64, heard, b->committed);
		} else {
			log_warn("promote requested by the operator: activating from checkpoint %"
				 PRIu64, b->committed);
		}
		snprintf(buf, len, "ok: activating %s from checkpoint %" PRIu64 "%s\n", b->cfg.name,
			 b->committed, path >= 0 ? " (--force: the primary was still heard)" : "");
	}
	pthread_mutex_unlock(&b->lock);
}

/*
 * `tandem reprotect NAME` on the host that runs the guest: look for a
 * backup on the other host now (and every second after), and become its
 * primary as soon as one answers.  Refused before an activation, and for
 * a file that names one direction only.
 */
static void reprotect_request(struct backup *b, char *buf, size_t len)
{
	const char *no;

	pthread_mutex_lock(&b->lock);
	no = cannot_reprotect(b);
	if (b->state != B_ACTIVE)
		snprintf(buf, len, "refused: %s is not running here (backup %s: %s); reprotect runs "
			 "on the host whose backup activated the guest\n", b->cfg.name,
			 bstate_names[b->state], b->detail);
	else if (no)
		snprintf(buf, len, "refused: %s\n", no);
	else {
		struct tandem_config cfg = b->cfg;

		config_set_role(&cfg, ROLE_PRIMARY);
		b->reprotect_req = true;
		b->next_lookup_ns = 0;
		log_warn("reprotect requested by the operator: looking for a backup of %s on %s at "
			 "%s:%u", b->cfg.name, config_peer_host(&b->cfg), cfg.replication.host,
			 cfg.replication.port);
		snprintf(buf, len, "ok: looking for a backup of %s on %s at %s:%u (start `tandem "
			 "backup` there); this host becomes its primary when one answers\n",
			 b->cfg.name, config_peer_host(&b->cfg), cfg.replication.host,
			 cfg.replication.port);
	}
	pthread_mutex_unlock(&b->lock);
}

/* What re-protection is doing, for status (lock held). */
static void reprotect_status(const struct backup *b, char *buf, size_t len)
{
	const char *no = cannot_reprotect(b);

	buf[0] = '\0';
	if (b->state != B_ACTIVE)
		return;
	if (no)
		snprintf(buf, len, "not possible: %s", no);
	else if (b->cfg.reprotect == REPROTECT_MANUAL && !b->reprotect_req)
		snprintf(buf, len, "waiting for `tandem reprotect %s` (reprotect = manual)", b->cfg.name);
	else
		snprintf(buf, len, "looking for a backup on %s every second (%" PRIu64 " tries)%s%s",
			 config_peer_host(&b->cfg), b->lookups, b->lookup_err[0] ? ": " : "",
			 b->lookup_err);
}

/* The failover report (lock held). */
static void report(struct backup *b, char *buf, size_t len)
{
	size_t n;

	if (!b->rep.done) {
		snprintf(buf, len, "%s: no failover on this host (backup %s: %s)\n", b->cfg.name,
			 bstate_names[b->state], b->detail);
		return;
	}
	n = (size_t)snprintf(buf, len,
		"failover report: %s, activated on this host at %s\n"
		"  why:        %s (decision: %s)\n"
		"  detection:  the primary was last heard %" PRIu64 " ms before the decision "
		"(timeout %" PRIu64 " ms)\n"
		"  activation: %.1f ms; last heard to guest running: %.1f ms\n"
		"  checkpoint: activated from %" PRIu64 ", the last committed and acknowledged one; "
		"%" PRIu64 " initial-copy pieces before the first\n"
		"  output:     what the primary held after checkpoint %" PRIu64 " was never released: "
		"it belongs to a state the guest no longer has (the primary's counts of packets "
		"released and dropped are in its own status, if it runs)\n"
		"  fencing:    %s\n"
		"  disk:       no disk is protected (docs/disk.md)\n"
		"  state now:  %s: %s\n",
		b->cfg.name, b->rep.at, b->rep.why, b->rep.decision, b->rep.last_heard_ms,
		b->cfg.timeout_ms, b->activate_ms, b->failover_ms, b->activated_from, b->rounds,
		b->activated_from, b->rep.fence[0] ? b->rep.fence : "none ran (on-peer-loss is not fence)",
		bstate_names[b->state], b->detail);
	if (n < len)
		n += (size_t)snprintf(buf + n, len - n, "  heartbeat paths at the decision:\n%s",
				      b->rep.paths[0] ? b->rep.paths : "    (none configured: the "
				      "replication link was the only path)\n");
	if (b->forced_note[0] && n < len)
		snprintf(buf + n, len - n, "  FORCED:     %s\n", b->forced_note);
}

static void render_status(void *arg, const char *request, char *buf, size_t len)
{
	struct backup *b = arg;
	bool json = strcmp(request, "json") == 0;
	char guest[200] = "", paths[2048] = "", dj[8192], rp[600];
	struct gate_stats gs = { 0 };
	size_t n;

	if (strcmp(request, "promote") == 0 || strcmp(request, "promote-force") == 0) {
		promote_request(b, strcmp(request, "promote-force") == 0, buf, len);
		return;
	}
	if (strcmp(request, "reprotect") == 0) {
		reprotect_request(b, buf, len);
		return;
	}
	if (b->dom.ops->describe)
		b->dom.ops->describe(&b->dom, guest, sizeof(guest));
	hb_render(b->hb, json, paths, sizeof(paths));
	if (json)
		devices_status_json(&b->devs, dj, sizeof(dj));
	else
		devices_status_text(&b->devs, dj, sizeof(dj));
	pthread_mutex_lock(&b->lock);
	if (b->gate)
		gate_get_stats(b->gate, &gs);
	reprotect_status(b, rp, sizeof(rp));
	if (!strcmp(request, "report")) {	/* `tandem report` */
		report(b, buf, len);
		pthread_mutex_unlock(&b->lock);
		return;
	}
	if (!strcmp(request, "now")) {		/* `tandem events --now` */
		status_format_event(buf, len, "%s backup exists state=%s committed=%" PRIu64
				    " detail=\"%s\"", b->cfg.name, bstate_names[b->state], b->committed,
				    b->detail);
	} else if (json) {
		snprintf(buf, len,
			 "{\"role\":\"backup\",\"state\":\"%s\",\"detail\":\"%s\",\"vm\":\"%s\","
			 "\"domain\":\"%s\",\"synthetic\":%s,\"guest\":\"%s\",\"epoch\":%" PRIu64 ","
			 "\"last_acked_epoch\":%" PRIu64 ",\"interval_ms\":%" PRIu64 ","
			 "\"initial_rounds\":%" PRIu64 ",\"bytes_received\":%" PRIu64 ","
			 "\"last_commit_ms\":%.3f,\"last_heard_ms\":%.1f,\"timeout_ms\":%" PRIu64 ","
			 "\"activate_ms\":%.1f,\"failover_ms\":%.1f,\"decision\":\"%s\","
			 "\"forced\":\"%s\",\"connections\":{\"accepted\":%" PRIu64 ","
			 "\"authenticated\":%" PRIu64 ",\"refused_busy\":%" PRIu64 ",\"failed\":%"
			 PRIu64 ",\"timed_out\":%" PRIu64 ",\"in_progress\":%u},\"verify\":{"
			 "\"checkpoints\":%" PRIu64 ",\"pages\":%" PRIu64 ",\"unstable\":%" PRIu64
			 ",\"mismatched_checkpoints\":%" PRIu64 ",\"mismatched_pages\":%" PRIu64
			 ",\"mismatched_vcpu\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"last_epoch\":%"
			 PRIu64 ",\"last_mismatch_epoch\":%" PRIu64 ",\"last_mismatch\":\"%s\"},"
			 "\"devices\":%s,\"held_checkpoints\":%u,\"held_checkpoints_total\":%" PRIu64
			 ",\"hold_reason\":\"%s\",\"generation\":%" PRIu64 ",\"reprotect\":\"%s\","
			 "\"switchover\":\"%s\","
			 "\"paths\":%s}\n",
			 bstate_names[b->state], b->detail, b->cfg.name, b->dom.ops->name,
			 b->cfg.domain == DOMAIN_MEMDOM ? "true" : "false", guest, b->committed,
			 b->committed, b->cfg.interval_ms, b->rounds, b->bytes_received,
			 (double)b->last_commit_us / 1000.0,
			 b->ch ? (double)(now_ns() - b->last_heard_ns) / 1e6 : -1.0,
			 b->cfg.timeout_ms, b->activate_ms, b->failover_ms,
			 hb_decision_name(b->decision), b->forced_note, gs.accepted, gs.authenticated,
			 gs.refused_busy, gs.failed, gs.timed_out, gs.in_progress,
			 b->vr.checkpoints, b->vr.pages, b->vr.unstable, b->vr.bad_checkpoints,
			 b->vr.bad_pages, b->vr.bad_vcpu, b->vr.errors, b->vr.last_epoch,
			 b->vr.last_bad_epoch, b->vr.last_bad, dj, b->nheld, b->held_total,
			 b->nheld ? b->hold_why : "", b->gen.gen, rp, b->switch_note,
			 paths[0] ? paths : "[]");
	} else {
		n = (size_t)snprintf(buf, len,
			 "%s (backup): %s - %s\n"
			 "  guest:     %s%s\n"
			 "  committed checkpoint %" PRIu64 " (acknowledged), %.1f MiB received, "
			 "last commit %.3f ms\n"
			 "  timeout %" PRIu64 " ms, replication %s%s\n",
			 b->cfg.name, bstate_names[b->state], b->detail, guest[0] ? guest : "(no standby yet)",
			 b->cfg.domain == DOMAIN_MEMDOM ? " [synthetic test guest]" : "",
			 b->committed, (double)b->bytes_received / 1048576.0,
			 (double)b->last_commit_us / 1000.0, b->cfg.timeout_ms,
			 b->ch ? "connected" : "not connected",
			 b->state == B_ACTIVE ? "; failed over" : "");
		if (n < len && dj[0])
			n += (size_t)snprintf(buf + n, len - n, "%s", dj);
		if (n < len && b->nheld)
			n += (size_t)snprintf(buf + n, len - n, "  HELD: %u complete checkpoints after %"
					      PRIu64 " wait for the devices: %s\n", b->nheld,
					      b->committed, b->hold_why);
		if (n < len && (gs.refused_busy || gs.failed || gs.timed_out))
			n += (size_t)snprintf(buf + n, len - n, "  connections: %" PRIu64 " accepted, %"
					      PRIu64 " authenticated, %" PRIu64 " refused (busy), %"
					      PRIu64 " failed, %" PRIu64 " timed out\n", gs.accepted,
					      gs.authenticated, gs.refused_busy, gs.failed, gs.timed_out);
		if (n < len && (b->vr.checkpoints || b->vr.errors))
			n += (size_t)snprintf(buf + n, len - n, "  checkpoint oracle: %" PRIu64
					      " checkpoints, %" PRIu64 " pages compared (%" PRIu64
					      " changed while suspended), %s%" PRIu64 " mismatched "
					      "checkpoints%s%s%s\n", b->vr.checkpoints, b->vr.pages,
					      b->vr.unstable, b->vr.bad_checkpoints ? "MISMATCH: " : "",
					      b->vr.bad_checkpoints, b->vr.bad_checkpoints ? " (last: " : "",
					      b->vr.last_bad, b->vr.bad_checkpoints ? ")" : "");
		if (b->forced_note[0] && n < len)
			n += (size_t)snprintf(buf + n, len - n, "  WARNING: %s\n", b->forced_note);
		if (rp[0] && n < len)
			n += (size_t)snprintf(buf + n, len - n, "  UNPROTECTED (generation %" PRIu64
					      "); re-protection: %s\n", b->gen.gen, rp);
		if (n < len)
			snprintf(buf + n, len - n, "%s", paths);
	}
	pthread_mutex_unlock(&b->lock);
}

/*
 * Heartbeats go out from the loop, not from the receive path, so that a
 * long commit (the first one allocates and fills the whole standby) never
 * silences the backup.
 */
static void on_hb_timer(uv_timer_t *t)
{
	struct backup *b = t->data;
	uint64_t hb_ns = b->cfg.heartbeat_interval_ms * 1000000ull;

	notify_watchdog();
	if (now_ns() - b->last_notify_ns >= 1000000000ull) {	/* systemd's STATUS, once a second */
		b->last_notify_ns = now_ns();
		pthread_mutex_lock(&b->lock);
		if (b->state == B_STANDBY)
			notify_status("standby: checkpoint %" PRIu64 " committed, %.1f MiB received",
				      b->committed, (double)b->bytes_received / 1048576.0);
		pthread_mutex_unlock(&b->lock);
	}
	pthread_mutex_lock(&b->ch_lock);
	if (b->ch && now_ns() - b->last_sent_ns >= hb_ns) {
		uint8_t buf[HEARTBEAT_LEN];
		struct wire_heartbeat hb = { b->hb_seq++, now_ns(), b->committed };

		wire_put_heartbeat(buf, &hb);
		if (channel_send(b->ch, REC_HEARTBEAT, buf, HEARTBEAT_LEN) == 0)
			b->last_sent_ns = now_ns();
	}
	pthread_mutex_unlock(&b->ch_lock);
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
	struct backup *b = h->data;

	(void)signum;
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	pthread_mutex_unlock(&b->lock);
	log_info("stopping (signal)");
	notify_stopping();
	uv_stop(&b->loop);
}

static void on_net_done(uv_async_t *a)
{
	struct backup *b = a->data;

	/* Stopped cleanly: exit.  Active: keep running the guest and serving status. */
	if (b->state == B_STOPPED || b->state == B_FAILED || stopping(b))
		uv_stop(&b->loop);
}

static void close_handle(uv_handle_t *h, void *arg)
{
	(void)arg;
	if (!uv_is_closing(h))
		uv_close(h, NULL);
}

/*
 * Re-protection: the backup's part is over (its net thread and heartbeat
 * paths are gone); its loop, status socket and hook go too, and the same
 * process goes on as the primary of the guest it activated, which runs on
 * throughout.  Returns the primary's exit status.
 */
static int reprotect(struct backup *b)
{
	drop_held(b);
	devices_close(&b->devs);
	status_server_stop(b->status);
	b->status = NULL;
	uv_walk(&b->loop, close_handle, NULL);
	uv_run(&b->loop, UV_RUN_DEFAULT);
	uv_loop_close(&b->loop);
	ckpt_free(b->rx);
	b->rx = NULL;
	hook_close(b->hook);
	b->hook = NULL;
	testlog("reprotect generation %" PRIu64, b->gen.gen);
	log_warn("the backup of %s hands over to its primary in this process (the guest runs on)",
		 b->cfg.name);
	return primary_adopt(&b->cfg, b->key, &b->gen, &b->dom);
}

static int backup_run(struct backup *b);

int cmd_backup(int argc, char **argv)
{
	struct backup *b = calloc(1, sizeof(*b));
	char err[512];
	int rc;

	if (!b)
		return EXIT_FAILURE_RUNTIME;
	if ((rc = cmd_load_config(argc, argv, "backup", &b->cfg)))
		return rc;
	b->file_interval_ms = b->cfg.interval_ms;
	if (fault_init())
		return EXIT_USAGE;
	testlog_init();
	crash_report_install("tandem backup");
	signal(SIGPIPE, SIG_IGN);
	if (key_load(b->cfg.key_file, b->key, err, sizeof(err))) {
		log_error("%s", err);
		return EXIT_USAGE;
	}
	if (generation_load(&b->cfg, &b->gen, err, sizeof(err)))
		log_warn("protection generation: %s; taking 0", err);
	return backup_run(b);
}

int backup_adopt(const struct tandem_config *cfg, const uint8_t key[KEY_LEN],
		 const struct generation *gen, const char *note)
{
	struct backup *b = calloc(1, sizeof(*b));

	if (!b)
		return EXIT_FAILURE_RUNTIME;
	b->cfg = *cfg;
	if (config_set_role(&b->cfg, ROLE_BACKUP)) {
		log_error("a switchover needs a configuration with hosts");
		return EXIT_USAGE;
	}
	b->file_interval_ms = b->cfg.interval_ms;
	log_set_role("backup");
	memcpy(b->key, key, KEY_LEN);
	b->gen = *gen;
	snprintf(b->switch_note, sizeof(b->switch_note), "%s", note);
	log_info("this host now waits as the backup of %s, for the host that runs the guest",
		 b->cfg.name);
	return backup_run(b);
}

/* The daemon proper, once the configuration, key and generation are in. */
static int backup_run(struct backup *b)
{
	char err[512], path[512];
	int rc = 0;

	pthread_mutex_init(&b->lock, NULL);
	pthread_mutex_init(&b->ch_lock, NULL);
	pthread_cond_init(&b->in_cond, NULL);
	b->dom.ops = domain_ops_for(&b->cfg);
	b->dom.cfg = &b->cfg;
	b->dom.role = ROLE_BACKUP;
	b->rx = ckpt_new(0);
	uv_loop_init(&b->loop);
	uv_signal_init(&b->loop, &b->sigterm);
	uv_signal_init(&b->loop, &b->sigint);
	b->sigterm.data = b->sigint.data = b;
	uv_signal_start(&b->sigterm, on_signal, SIGTERM);
	uv_signal_start(&b->sigint, on_signal, SIGINT);
	uv_signal_init(&b->loop, &b->sighup);
	uv_signal_start(&b->sighup, on_sighup, SIGHUP);
	uv_async_init(&b->loop, &b->done_async, on_net_done);
	b->done_async.data = b;
	uv_timer_init(&b->loop, &b->hb_timer);
	b->hb_timer.data = b;
	uv_timer_start(&b->hb_timer, on_hb_timer, b->cfg.heartbeat_interval_ms / 2,
		       MAX(b->cfg.heartbeat_interval_ms / 2, 5));

	log_info("standby for %s (%s driver%s), listening on %s:%u", b->cfg.name, b->dom.ops->name,
		 b->cfg.domain == DOMAIN_MEMDOM ? ": a synthetic test guest, not a real workload" : "",
		 b->cfg.replication.host, b->cfg.replication.port);
	notify_status("waiting: listening on %s:%u for the primary", b->cfg.replication.host,
		      b->cfg.replication.port);
	config_status_path(&b->cfg, "backup", path, sizeof(path));
	if (status_server_start(&b->loop, path, render_status, b, &b->status))
		return EXIT_ENV;
	if (hook_open(b->cfg.notify, b->cfg.notify_timeout_ms, b->cfg.name, "backup", &b->hook))
		log_error("cannot start the notify hook's thread: no notify command will run");
	if (!b->dom.ops->open || (rc = b->dom.ops->open(&b->dom))) {
		log_error("cannot open the %s domain driver: %s", b->dom.ops->name, strerror(rc ? -rc : ENOSYS));
		b->exit_code = (rc == -ENOTSUP || !b->dom.ops->open) ? EXIT_ENV : EXIT_FAILURE_RUNTIME;
		goto out_status;
	}
	if ((rc = devices_open(&b->devs, &b->cfg, DEVICE_BACKUP, err, sizeof(err)))) {
		log_error("cannot protect the guest's devices: %s", err);
		b->exit_code = rc == -ENOTSUP || rc == -EINVAL ? EXIT_ENV : EXIT_FAILURE_RUNTIME;
		goto out_dom;
	}
	b->listen_fd = net_listen(&b->cfg.replication, err, sizeof(err));
	if (b->listen_fd < 0) {
		log_error("%s", err);
		b->exit_code = EXIT_ENV;
		goto out_dom;
	}
	{
		struct hb_callbacks hbc = { .decision = on_decision };
		if ((rc = hb_start(&b->hb, &b->cfg, b->key, ROLE_BACKUP, &hbc, b))) {
			log_error("cannot start the heartbeat paths: %s", strerror(-rc));
			b->exit_code = EXIT_ENV;
			goto out_dom;
		}
	}
	pthread_create(&b->net_thr, NULL, net_main, b);
	pthread_setname_np(b->net_thr, "tandem-net");
	uv_run(&b->loop, UV_RUN_DEFAULT);
	/* A deliberate stop: tell a connected primary that the standby goes
	 * (it then runs on unprotected, output released, and looks for a
	 * backup again) instead of leaving it to hold output for nothing. */
	pthread_mutex_lock(&b->ch_lock);
	if (b->ch && b->state != B_ACTIVE && b->state != B_ACTIVATING) {
		uint8_t buf[STOP_LEN];
		struct wire_stop st = { STOP_BACKUP_LEAVES };

		wire_put_stop(buf, &st);
		if (channel_send(b->ch, REC_STOP, buf, STOP_LEN) == 0)
			log_info("told the primary that this backup stops and discards its standby");
	}
	pthread_mutex_unlock(&b->ch_lock);
	pthread_mutex_lock(&b->lock);
	b->stop = true;
	channel_shutdown(b->ch);
	pthread_cond_broadcast(&b->in_cond);
	pthread_mutex_unlock(&b->lock);
	pthread_join(b->net_thr, NULL);
	hb_stop(b->hb);
	if (b->become_primary)
		return reprotect(b);
	if (b->state != B_ACTIVE && b->standby_ready && b->dom.ops->discard)
		b->dom.ops->discard(&b->dom);
out_dom:
	drop_held(b);
	devices_close(&b->devs);
	b->dom.ops->close(&b->dom);
out_status:
	status_server_stop(b->status);
	b->status = NULL;	/* no event after this */
	uv_run(&b->loop, UV_RUN_NOWAIT);
	ckpt_free(b->rx);
	hook_close(b->hook);	/* the last changes (stopping, stopped) run too */
	log_info("exit %d", b->exit_code);
	return b->exit_code;
}
