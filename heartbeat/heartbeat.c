/*
 * heartbeat.c - multi-path authenticated UDP heartbeats (see heartbeat.h,
 * PROTOCOL.md).
 *
 * One thread, one libuv loop: a uv_udp_t per path, a send timer every
 * heartbeat-interval and a check timer (timeouts, grace, decisions) every
 * twentieth of the timeout, at least HB_CHECK_MIN_MS and at most half the
 * interval: detection is late by 5 % at most, and an idle daemon does not
 * wake a hundred times a second on a host whose CPUs its guest needs.
 * All state is under `lock`; callbacks are collected while it is held and
 * run after it is released.
 *
 * Acceptance of a datagram on path i (in this order):
 *   1. length, magic, version, type            else rejected "malformed"
 *   2. HMAC                                    else rejected "forged"
 *   3. VM name, sender role = our peer, path i else rejected "wrong VM/role/path"
 *   4. nonce == the peer's current nonce and seq <= highest seen
 *                                              -> rejected "replayed"
 *   5. it must echo our own nonce with an echo time younger than
 *      `timeout` (proof it was made after hearing us recently); else, from
 *      the peer's current nonce it is counted and logged "stale", from an
 *      unknown nonce "unconfirmed"; either is echoed back, nothing else.
 *      A fresh datagram from an unknown nonce replaces the peer's nonce
 *      state (the peer restarted).
 * Accepted datagrams refresh the path, and only they do, as of the echoed
 * send time (not the arrival): a relay that holds datagrams back cannot
 * keep a dead peer's path up past `timeout`.
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <uv.h>

#define LOG_MODULE "heartbeat"
#include "../lib/log.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "heartbeat.h"

#define HB_CHECK_MIN_MS 10
#define HB_REJECT_LOG_NS (10ull * 1000000000ull)

/* ---- datagram ------------------------------------------------------------- */

void hb_derive_key(const uint8_t key[KEY_LEN], uint8_t hbkey[32])
{
	static const char label[] = "tandem-v1 heartbeat";
	unsigned int len = 32;

	HMAC(EVP_sha256(), key, KEY_LEN, (const unsigned char *)label, sizeof(label) - 1, hbkey, &len);
}

static void mac(const uint8_t hbkey[32], const uint8_t *buf, uint8_t out[HB_MAC_LEN])
{
	unsigned int len = HB_MAC_LEN;

	HMAC(EVP_sha256(), hbkey, 32, buf, HB_OFF_MAC, out, &len);
}

void hb_pack(const uint8_t hbkey[32], const struct hb_dgram *d, uint8_t out[HB_DGRAM_LEN])
{
	memset(out, 0, HB_DGRAM_LEN);
	memcpy(out + HB_OFF_MAGIC, HB_MAGIC, 4);
	out[HB_OFF_VERSION] = HB_VERSION;
	out[HB_OFF_TYPE] = d->type;
	out[HB_OFF_ROLE] = d->role;
	out[HB_OFF_PATH] = d->path;
	memcpy(out + HB_OFF_VM, d->vm, strnlen(d->vm, HB_VM_LEN));
	memcpy(out + HB_OFF_NONCE, d->nonce, HB_NONCE_LEN);
	put_be64(out + HB_OFF_SEQ, d->seq);
	put_be64(out + HB_OFF_TIME, d->time_ns);
	put_be64(out + HB_OFF_EPOCH, d->epoch);
	memcpy(out + HB_OFF_ECHO_NONCE, d->echo_nonce, HB_NONCE_LEN);
	put_be64(out + HB_OFF_ECHO_SEQ, d->echo_seq);
	put_be64(out + HB_OFF_ECHO_TIME, d->echo_time_ns);
	put_be64(out + HB_OFF_ECHO_HOLD, d->echo_hold_ns);
	put_be64(out + HB_OFF_AUX, d->aux);
	mac(hbkey, out, out + HB_OFF_MAC);
}

int hb_unpack(const uint8_t hbkey[32], const uint8_t *buf, size_t len, struct hb_dgram *d)
{
	uint8_t want[HB_MAC_LEN];

	if (len != HB_DGRAM_LEN || memcmp(buf + HB_OFF_MAGIC, HB_MAGIC, 4) ||
	    buf[HB_OFF_VERSION] != HB_VERSION || buf[HB_OFF_TYPE] < HB_MSG_HEARTBEAT ||
	    buf[HB_OFF_TYPE] > HB_MSG_WITNESS_DENY)
		return -EBADMSG;
	mac(hbkey, buf, want);
	if (CRYPTO_memcmp(want, buf + HB_OFF_MAC, HB_MAC_LEN))
		return -EACCES;
	memset(d, 0, sizeof(*d));
	d->type = buf[HB_OFF_TYPE];
	d->role = buf[HB_OFF_ROLE];
	d->path = buf[HB_OFF_PATH];
	memcpy(d->vm, buf + HB_OFF_VM, HB_VM_LEN);
	d->vm[HB_VM_LEN] = '\0';
	memcpy(d->nonce, buf + HB_OFF_NONCE, HB_NONCE_LEN);
	d->seq = get_be64(buf + HB_OFF_SEQ);
	d->time_ns = get_be64(buf + HB_OFF_TIME);
	d->epoch = get_be64(buf + HB_OFF_EPOCH);
	memcpy(d->echo_nonce, buf + HB_OFF_ECHO_NONCE, HB_NONCE_LEN);
	d->echo_seq = get_be64(buf + HB_OFF_ECHO_SEQ);
	d->echo_time_ns = get_be64(buf + HB_OFF_ECHO_TIME);
	d->echo_hold_ns = get_be64(buf + HB_OFF_ECHO_HOLD);
	d->aux = get_be64(buf + HB_OFF_AUX);
	return 0;
}

/* ---- state ----------------------------------------------------------------- */

struct hb_path {
	struct hb *hb;
	int index;
	char name[2 * CONFIG_PATH_MAX + 40];	/* "A:P-B:P" */
	uv_udp_t udp;
	bool open;
	struct sockaddr_storage remote;

	bool up;
	uint64_t last_heard_ns;			/* 0 = never */
	int64_t rtt_ns;				/* -1 = none */
	uint64_t sent, received, rejected, unconfirmed, stale;
	uint64_t seq_out, stale_log_ns;
	uint64_t answer_ns;			/* last immediate answer (rate limit) */

	/* replay state for the peer on this path */
	bool have_peer;
	uint8_t peer_nonce[HB_NONCE_LEN];
	uint64_t peer_seq;

	/* what we echo: the last authentic datagram received */
	bool have_echo;
	uint8_t echo_nonce[HB_NONCE_LEN];
	uint64_t echo_seq, echo_time_ns, echo_rx_ns;

	uint64_t reject_log_ns, reject_suppressed;
};

struct hb {
	pthread_mutex_t lock;
	pthread_t thr;
	bool thr_started;
	uv_loop_t loop;
	uv_timer_t send_timer, check_timer;
	uv_async_t stop_async;

	char vm[CONFIG_NAME_MAX + 1];
	int role, peer_role;
	uint8_t hbkey[32];
	uint8_t nonce[HB_NONCE_LEN];
	uint64_t interval_ms, timeout_ms;
	struct hb_policy policy;
	struct hb_callbacks cb;
	void *arg;

	int npaths;
	struct hb_path paths[CONFIG_HB_PATHS_MAX];

	bool witness_on;
	uv_udp_t witness_udp;
	struct sockaddr_storage witness_addr;
	uint64_t witness_seq;

	uint64_t epoch;
	bool active;			/* this side (backup) is active: HB_AUX_ACTIVE */
	bool peer_active;		/* the peer said it is active */
	uint64_t peer_active_epoch;
	uv_async_t kick_async;		/* send now (hb_set_active) */
	bool repl_up;
	uint64_t repl_change_ns, repl_last_up_ns;
	bool established, alive, lost_reported;
	enum hb_decision decision;
	bool decision_reported;
};

static const char *role_name(int role)
{
	return role == ROLE_PRIMARY ? "primary" : role == ROLE_BACKUP ? "backup" :
	       role == HB_ROLE_WITNESS ? "witness" : "?";
}

/* ---- events collected under the lock, delivered after ------------------- */

enum ev_kind { EV_PATH, EV_LOST, EV_BACK, EV_DECISION, EV_ACTIVE };

struct ev {
	enum ev_kind kind;
	int index;
	bool up;
	enum hb_decision d;
	struct hb_view v;
	uint64_t epoch;
};

struct evq {
	struct ev ev[CONFIG_HB_PATHS_MAX * 2 + 4];
	int n;
};

static void evq_add(struct evq *q, struct ev e)
{
	if (q->n < (int)ARRAY_SIZE(q->ev))
		q->ev[q->n++] = e;
}

static void evq_deliver(struct hb *hb, struct evq *q)
{
	for (int i = 0; i < q->n; i++) {
		struct ev *e = &q->ev[i];
		switch (e->kind) {
		case EV_PATH:
			if (hb->cb.path_changed)
				hb->cb.path_changed(hb->arg, e->index, e->up);
			break;
		case EV_LOST:
			if (hb->cb.peer_lost)
				hb->cb.peer_lost(hb->arg);
			break;
		case EV_BACK:
			if (hb->cb.peer_back)
				hb->cb.peer_back(hb->arg);
			break;
		case EV_DECISION:
			if (hb->cb.decision)
				hb->cb.decision(hb->arg, e->d, &e->v);
			break;
		case EV_ACTIVE:
			if (hb->cb.peer_active)
				hb->cb.peer_active(hb->arg, e->index, e->epoch);
			break;
		}
	}
	q->n = 0;
}

/* ---- view and decision (lock held) ------------------------------------- */

static void view_locked(struct hb *hb, struct hb_view *v, uint64_t now)
{
	uint64_t last = 0;

	memset(v, 0, sizeof(*v));
	v->role = hb->role;
	v->established = hb->established;
	v->repl_up = hb->repl_up;
	v->paths = (unsigned)hb->npaths;
	for (int i = 0; i < hb->npaths; i++) {
		if (hb->paths[i].up)
			v->paths_up++;
		last = MAX(last, hb->paths[i].last_heard_ns);
	}
	if (hb->repl_up)
		last = now;
	else
		last = MAX(last, hb->repl_last_up_ns);
	v->repl_down_ms = hb->repl_up ? 0 : (now - hb->repl_change_ns) / 1000000;
	v->last_heard_ms = last ? (now - last) / 1000000 : UINT64_MAX;
}

static bool any_up_locked(struct hb *hb)
{
	if (hb->repl_up)
		return true;
	for (int i = 0; i < hb->npaths; i++)
		if (hb->paths[i].up)
			return true;
	return false;
}

/* Re-evaluate liveness and the decision after any change. */
static void evaluate_locked(struct hb *hb, struct evq *q, uint64_t now)
{
	bool alive = any_up_locked(hb);
	struct hb_view v;
	enum hb_decision d;

	if (hb->repl_up)
		hb->established = true;
	if (hb->alive && !alive && !hb->lost_reported) {
		hb->lost_reported = true;
		log_error("peer (%s) lost: the replication link and all %d heartbeat path%s are down "
			  "(timeout %" PRIu64 " ms)", role_name(hb->peer_role), hb->npaths,
			  hb->npaths == 1 ? "" : "s", hb->timeout_ms);
		evq_add(q, (struct ev){ .kind = EV_LOST });
	} else if (!hb->alive && alive && hb->lost_reported) {
		hb->lost_reported = false;
		log_warn("peer (%s) heard again after it was declared lost", role_name(hb->peer_role));
		evq_add(q, (struct ev){ .kind = EV_BACK });
	}
	hb->alive = alive;

	view_locked(hb, &v, now);
	d = hb_decide(&v, &hb->policy);
	if (!hb->decision_reported || d != hb->decision) {
		if (hb->decision_reported)
			log_warn("decision %s -> %s: replication %s, %u of %u heartbeat paths up "
				 "(timeout %" PRIu64 " ms, replication-loss-grace %" PRIu64 " ms)",
				 hb_decision_name(hb->decision), hb_decision_name(d),
				 v.repl_up ? "up" : "down", v.paths_up, v.paths, hb->timeout_ms,
				 hb->policy.grace_ms);
		hb->decision = d;
		hb->decision_reported = true;
		evq_add(q, (struct ev){ .kind = EV_DECISION, .d = d, .v = v });
	}
}

/* ---- sending ------------------------------------------------------------- */

static void build_locked(struct hb *hb, struct hb_path *p, struct hb_dgram *d, uint64_t now)
{
	memset(d, 0, sizeof(*d));
	d->type = HB_MSG_HEARTBEAT;
	d->role = (uint8_t)hb->role;
	d->path = p ? (uint8_t)p->index : HB_PATH_NONE;
	snprintf(d->vm, sizeof(d->vm), "%s", hb->vm);
	memcpy(d->nonce, hb->nonce, HB_NONCE_LEN);
	d->time_ns = now;
	d->epoch = hb->epoch;
	if (p && hb->active)
		d->aux = HB_AUX_ACTIVE;
	if (p && p->have_echo) {
		memcpy(d->echo_nonce, p->echo_nonce, HB_NONCE_LEN);
		d->echo_seq = p->echo_seq;
		d->echo_time_ns = p->echo_time_ns;
		d->echo_hold_ns = now - p->echo_rx_ns;
	}
}

/* One heartbeat on path p now (lock held, loop thread). */
static void send_one_locked(struct hb *hb, struct hb_path *p, uint64_t now)
{
	uint8_t buf[HB_DGRAM_LEN];
	uv_buf_t b = uv_buf_init((char *)buf, sizeof(buf));
	struct hb_dgram d;

	build_locked(hb, p, &d, now);
	d.seq = ++p->seq_out;
	hb_pack(hb->hbkey, &d, buf);
	if (uv_udp_try_send(&p->udp, &b, 1, (const struct sockaddr *)&p->remote) > 0)
		p->sent++;
}

static void send_all(struct hb *hb)
{
	uint8_t buf[HB_DGRAM_LEN];
	struct hb_dgram d;
	uint64_t now = now_ns();

	pthread_mutex_lock(&hb->lock);
	for (int i = 0; i < hb->npaths; i++)
		if (hb->paths[i].open)
			send_one_locked(hb, &hb->paths[i], now);
	if (hb->witness_on) {
		uv_buf_t b = uv_buf_init((char *)buf, sizeof(buf));
		build_locked(hb, NULL, &d, now);
		d.type = HB_MSG_WITNESS_PING;
		d.seq = ++hb->witness_seq;
		d.aux = hb->timeout_ms;
		hb_pack(hb->hbkey, &d, buf);
		uv_udp_try_send(&hb->witness_udp, &b, 1, (const struct sockaddr *)&hb->witness_addr);
	}
	pthread_mutex_unlock(&hb->lock);
}

static void on_send_timer(uv_timer_t *t)
{
	send_all(t->data);
}

static void on_kick_async(uv_async_t *a)
{
	send_all(a->data);
}

/* ---- receiving ------------------------------------------------------------ */

static void reject_locked(struct hb_path *p, uint64_t now, const char *why)
{
	p->rejected++;
	if (p->reject_log_ns && now - p->reject_log_ns < HB_REJECT_LOG_NS) {
		p->reject_suppressed++;
		return;
	}
	if (p->reject_suppressed)
		log_warn("path %d (%s): dropped a heartbeat: %s (and %" PRIu64 " more since the last "
			 "report; %" PRIu64 " rejected in all)", p->index + 1, p->name, why,
			 p->reject_suppressed, p->rejected);
	else
		log_warn("path %d (%s): dropped a heartbeat: %s (%" PRIu64 " rejected in all)",
			 p->index + 1, p->name, why, p->rejected);
	p->reject_log_ns = now;
	p->reject_suppressed = 0;
}

/* Returns true when the datagram refreshes the path; *proof_ns is then the
 * time of ours it echoes (when the peer was last proven alive), and
 * *active_epoch the checkpoint a backup says it activated from (or
 * UINT64_MAX when it does not say it is active). */
static bool accept_locked(struct hb *hb, struct hb_path *p, const uint8_t *buf, size_t len,
			  uint64_t now, uint64_t *proof_ns, uint64_t *active_epoch, bool *answer)
{
	struct hb_dgram d;
	bool echoes_us, fresh;
	int r;

	r = hb_unpack(hb->hbkey, buf, len, &d);
	if (r == -EBADMSG) {
		reject_locked(p, now, "malformed (length, magic, version or type)");
		return false;
	}
	if (r) {
		reject_locked(p, now, "authentication failed (forged, altered, or another key)");
		return false;
	}
	if (d.type != HB_MSG_HEARTBEAT || strcmp(d.vm, hb->vm) || d.role != hb->peer_role ||
	    d.path != p->index) {
		char why[200];
		snprintf(why, sizeof(why), "wrong VM, role or path (vm '%.64s', role %u, path %u)",
			 d.vm, d.role, d.path + 1u);
		reject_locked(p, now, why);
		return false;
	}
	if (p->have_peer && !memcmp(d.nonce, p->peer_nonce, HB_NONCE_LEN) && d.seq <= p->peer_seq) {
		reject_locked(p, now, "replayed (sequence number already seen)");
		return false;
	}

	echoes_us = !memcmp(d.echo_nonce, hb->nonce, HB_NONCE_LEN) && d.echo_time_ns <= now;
	fresh = echoes_us && now - d.echo_time_ns <= hb->timeout_ms * 1000000ull;
	/* The peer's proof of us is old (a path back from a cut, a peer that
	 * just started): answer at once rather than at our next interval, so
	 * its proof is one round trip old, not one interval more. */
	*answer = !echoes_us || now - d.echo_time_ns > hb->interval_ms * 1500000ull;
	if (!fresh) {
		bool known = p->have_peer && !memcmp(d.nonce, p->peer_nonce, HB_NONCE_LEN);

		/* Authentic but unproven: a peer that just started, an old
		 * capture, or a datagram held back on its way (the peer's
		 * current boot: stale).  Echo it, nothing more. */
		if (known) {
			p->stale++;
			p->peer_seq = d.seq;
			if (!p->stale_log_ns || now - p->stale_log_ns >= HB_REJECT_LOG_NS) {
				p->stale_log_ns = now;
				if (echoes_us)
					log_warn("path %d (%s): stale heartbeat from the %s: it answers "
						 "ours of %" PRIu64 " ms ago (timeout %" PRIu64 " ms); "
						 "not counted as alive (%" PRIu64 " stale in all)",
						 p->index + 1, p->name, role_name(hb->peer_role),
						 (now - d.echo_time_ns) / 1000000, hb->timeout_ms, p->stale);
				else
					log_warn("path %d (%s): stale heartbeat from the %s: it answers "
						 "none of ours; not counted as alive (%" PRIu64 " stale "
						 "in all)", p->index + 1, p->name, role_name(hb->peer_role),
						 p->stale);
			}
		} else {
			p->unconfirmed++;
		}
		memcpy(p->echo_nonce, d.nonce, HB_NONCE_LEN);
		p->echo_seq = d.seq;
		p->echo_time_ns = d.time_ns;
		p->echo_rx_ns = now;
		p->have_echo = true;
		return false;
	}
	if (!p->have_peer || memcmp(d.nonce, p->peer_nonce, HB_NONCE_LEN)) {
		if (p->have_peer)
			log_info("path %d (%s): the %s restarted (new boot nonce)", p->index + 1,
				 p->name, role_name(hb->peer_role));
		memcpy(p->peer_nonce, d.nonce, HB_NONCE_LEN);
		p->have_peer = true;
	}
	p->peer_seq = d.seq;
	p->received++;
	memcpy(p->echo_nonce, d.nonce, HB_NONCE_LEN);
	p->echo_seq = d.seq;
	p->echo_time_ns = d.time_ns;
	p->echo_rx_ns = now;
	p->have_echo = true;
	{
		uint64_t rtt = now - d.echo_time_ns;
		p->rtt_ns = rtt > d.echo_hold_ns ? (int64_t)(rtt - d.echo_hold_ns) : 0;
	}
	*proof_ns = d.echo_time_ns;
	*active_epoch = d.role == ROLE_BACKUP && (d.aux & HB_AUX_ACTIVE) ? d.epoch : UINT64_MAX;
	return true;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static __thread char slab[2048];

	(void)h;
	(void)suggested;
	*buf = uv_buf_init(slab, sizeof(slab));
}

static void on_recv(uv_udp_t *u, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *from,
		    unsigned flags)
{
	struct hb_path *p = u->data;
	struct hb *hb = p->hb;
	struct evq q = { .n = 0 };
	uint64_t now, proof = 0, active_epoch = UINT64_MAX;
	bool answer = false;

	if (nread <= 0 || !from)
		return;
	now = now_ns();
	pthread_mutex_lock(&hb->lock);
	if (flags & UV_UDP_PARTIAL) {
		reject_locked(p, now, "oversized datagram");
	} else if (accept_locked(hb, p, (const uint8_t *)buf->base, (size_t)nread, now, &proof,
				 &active_epoch, &answer)) {
		p->last_heard_ns = MAX(p->last_heard_ns, proof);
		if (active_epoch != UINT64_MAX && !hb->peer_active) {
			hb->peer_active = true;
			hb->peer_active_epoch = active_epoch;
			log_error("path %d (%s): the backup says it is ACTIVE, running the guest from "
				  "checkpoint %" PRIu64, p->index + 1, p->name, active_epoch);
			evq_add(&q, (struct ev){ .kind = EV_ACTIVE, .index = p->index,
						 .epoch = active_epoch });
		}
		if (!p->up) {
			p->up = true;
			log_info("path %d (%s) up: heartbeat from the %s, rtt %.2f ms (timeout %" PRIu64
				 " ms)", p->index + 1, p->name, role_name(hb->peer_role),
				 p->rtt_ns >= 0 ? (double)p->rtt_ns / 1e6 : 0.0, hb->timeout_ms);
			evq_add(&q, (struct ev){ .kind = EV_PATH, .index = p->index, .up = true });
		}
		evaluate_locked(hb, &q, now);
	}
	if (answer && now - p->answer_ns >= hb->interval_ms * 500000ull) {
		p->answer_ns = now;
		send_one_locked(hb, p, now);
	}
	pthread_mutex_unlock(&hb->lock);
	evq_deliver(hb, &q);
}

static void on_check_timer(uv_timer_t *t)
{
	struct hb *hb = t->data;
	struct evq q = { .n = 0 };
	uint64_t now = now_ns(), timeout_ns;

	pthread_mutex_lock(&hb->lock);
	timeout_ns = hb->timeout_ms * 1000000ull;
	for (int i = 0; i < hb->npaths; i++) {
		struct hb_path *p = &hb->paths[i];
		if (p->up && now - p->last_heard_ns >= timeout_ns) {
			p->up = false;
			log_warn("path %d (%s) down: nothing heard for %" PRIu64 " ms (timeout %" PRIu64
				 " ms)", i + 1, p->name, (now - p->last_heard_ns) / 1000000,
				 hb->timeout_ms);
			evq_add(&q, (struct ev){ .kind = EV_PATH, .index = i, .up = false });
		}
	}
	evaluate_locked(hb, &q, now);
	pthread_mutex_unlock(&hb->lock);
	evq_deliver(hb, &q);
}

/* ---- lifecycle ------------------------------------------------------------ */

static int resolve(const struct config_addr *a, struct sockaddr_storage *ss)
{
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char port[8];
	int r;

	snprintf(port, sizeof(port), "%u", a->port);
	r = getaddrinfo(a->host, port, &hints, &res);
	if (r || !res)
		return -EADDRNOTAVAIL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	freeaddrinfo(res);
	return 0;
}

static void fmt_end(const struct config_addr *a, char *buf, size_t len)
{
	if (strchr(a->host, ':'))
		snprintf(buf, len, "[%s]:%u", a->host, a->port);
	else
		snprintf(buf, len, "%s:%u", a->host, a->port);
}

static void on_stop_async(uv_async_t *a)
{
	struct hb *hb = a->data;

	uv_timer_stop(&hb->send_timer);
	uv_timer_stop(&hb->check_timer);
	uv_close((uv_handle_t *)&hb->send_timer, NULL);
	uv_close((uv_handle_t *)&hb->check_timer, NULL);
	uv_close((uv_handle_t *)&hb->stop_async, NULL);
	uv_close((uv_handle_t *)&hb->kick_async, NULL);
	for (int i = 0; i < hb->npaths; i++)
		if (hb->paths[i].open) {
			uv_udp_recv_stop(&hb->paths[i].udp);
			uv_close((uv_handle_t *)&hb->paths[i].udp, NULL);
		}
	if (hb->witness_on)
		uv_close((uv_handle_t *)&hb->witness_udp, NULL);
}

static void *hb_main(void *arg)
{
	struct hb *hb = arg;

	uv_run(&hb->loop, UV_RUN_DEFAULT);
	return NULL;
}

static void close_all_sync(struct hb *hb)
{
	/* Before the thread runs: close whatever was opened, on this thread. */
	for (int i = 0; i < hb->npaths; i++)
		if (hb->paths[i].open)
			uv_close((uv_handle_t *)&hb->paths[i].udp, NULL);
	if (hb->witness_on)
		uv_close((uv_handle_t *)&hb->witness_udp, NULL);
	uv_close((uv_handle_t *)&hb->send_timer, NULL);
	uv_close((uv_handle_t *)&hb->check_timer, NULL);
	uv_close((uv_handle_t *)&hb->stop_async, NULL);
	uv_close((uv_handle_t *)&hb->kick_async, NULL);
	uv_run(&hb->loop, UV_RUN_DEFAULT);
	uv_loop_close(&hb->loop);
}

int hb_start(struct hb **out, const struct tandem_config *cfg, const uint8_t key[KEY_LEN],
	     int role, const struct hb_callbacks *cb, void *arg)
{
	struct hb *hb;
	struct evq q = { .n = 0 };
	uint64_t check_ms;
	int rc = 0, r;

	*out = NULL;
	if (role != ROLE_PRIMARY && role != ROLE_BACKUP)
		return -EINVAL;
	hb = calloc(1, sizeof(*hb));
	if (!hb)
		return -ENOMEM;
	pthread_mutex_init(&hb->lock, NULL);
	snprintf(hb->vm, sizeof(hb->vm), "%s", cfg->name);
	hb->role = role;
	hb->peer_role = role == ROLE_PRIMARY ? ROLE_BACKUP : ROLE_PRIMARY;
	hb_derive_key(key, hb->hbkey);
	if (RAND_bytes(hb->nonce, HB_NONCE_LEN) != 1) {
		free(hb);
		return -EIO;
	}
	hb->interval_ms = cfg->heartbeat_interval_ms;
	hb->timeout_ms = cfg->timeout_ms;
	hb_policy_from_config(cfg, &hb->policy);
	if (cb)
		hb->cb = *cb;
	hb->arg = arg;
	hb->repl_change_ns = now_ns();

	uv_loop_init(&hb->loop);
	uv_timer_init(&hb->loop, &hb->send_timer);
	uv_timer_init(&hb->loop, &hb->check_timer);
	uv_async_init(&hb->loop, &hb->stop_async, on_stop_async);
	uv_async_init(&hb->loop, &hb->kick_async, on_kick_async);
	hb->send_timer.data = hb->check_timer.data = hb->stop_async.data = hb;
	hb->kick_async.data = hb;

	hb->npaths = (int)cfg->heartbeat_paths.n;
	for (int i = 0; i < hb->npaths; i++) {
		const struct config_hb_path *cp = &cfg->heartbeat_paths.p[i];
		const struct config_addr *mine = role == ROLE_PRIMARY ? &cp->primary : &cp->backup;
		const struct config_addr *theirs = role == ROLE_PRIMARY ? &cp->backup : &cp->primary;
		struct hb_path *p = &hb->paths[i];
		struct sockaddr_storage local;
		char a[CONFIG_PATH_MAX + 16], b[CONFIG_PATH_MAX + 16];

		p->hb = hb;
		p->index = i;
		p->rtt_ns = -1;
		fmt_end(&cp->primary, a, sizeof(a));
		fmt_end(&cp->backup, b, sizeof(b));
		snprintf(p->name, sizeof(p->name), "%s-%s", a, b);
		if ((r = resolve(mine, &local)) || (r = resolve(theirs, &p->remote))) {
			log_error("path %d (%s): cannot resolve an address", i + 1, p->name);
			rc = r;
			goto fail;
		}
		uv_udp_init(&hb->loop, &p->udp);
		p->udp.data = p;
		p->open = true;
		r = uv_udp_bind(&p->udp, (const struct sockaddr *)&local, 0);
		if (!r)
			r = uv_udp_recv_start(&p->udp, on_alloc, on_recv);
		if (r) {
			log_error("path %d (%s): cannot bind %s: %s", i + 1, p->name,
				  role == ROLE_PRIMARY ? a : b, uv_strerror(r));
			rc = r;
			goto fail;
		}
	}
	if (cfg->on_peer_loss == PEER_LOSS_WITNESS && cfg->witness.host[0]) {
		if ((r = resolve(&cfg->witness, &hb->witness_addr))) {
			log_error("witness %s:%u: cannot resolve", cfg->witness.host, cfg->witness.port);
			rc = r;
			goto fail;
		}
		uv_udp_init(&hb->loop, &hb->witness_udp);
		hb->witness_on = true;
	}

	check_ms = MAX(1u, MIN(hb->interval_ms / 2, MAX((uint64_t)HB_CHECK_MIN_MS, hb->timeout_ms / 20)));
	uv_timer_start(&hb->send_timer, on_send_timer, 0, hb->interval_ms);
	uv_timer_start(&hb->check_timer, on_check_timer, check_ms, check_ms);
	pthread_mutex_lock(&hb->lock);
	evaluate_locked(hb, &q, now_ns());
	pthread_mutex_unlock(&hb->lock);
	if (pthread_create(&hb->thr, NULL, hb_main, hb)) {
		rc = -EAGAIN;
		goto fail;
	}
	hb->thr_started = true;
	pthread_setname_np(hb->thr, "tandem-hb");
	log_info("heartbeats as %s on %d path%s every %" PRIu64 " ms, timeout %" PRIu64 " ms%s",
		 role_name(role), hb->npaths, hb->npaths == 1 ? "" : "s", hb->interval_ms,
		 hb->timeout_ms, hb->witness_on ? ", also to the witness" : "");
	for (int i = 0; i < hb->npaths; i++)
		log_info("path %d (%s): down until the %s is heard", i + 1, hb->paths[i].name,
			 role_name(hb->peer_role));
	evq_deliver(hb, &q);
	*out = hb;
	return 0;
fail:
	close_all_sync(hb);
	pthread_mutex_destroy(&hb->lock);
	free(hb);
	return rc ? rc : -EIO;
}

void hb_stop(struct hb *hb)
{
	if (!hb)
		return;
	if (hb->thr_started) {
		uv_async_send(&hb->stop_async);
		pthread_join(hb->thr, NULL);
	}
	uv_loop_close(&hb->loop);
	pthread_mutex_destroy(&hb->lock);
	OPENSSL_cleanse(hb->hbkey, sizeof(hb->hbkey));
	free(hb);
}

/* ---- detached engine, for fuzzing the acceptance rules -------------------- */

struct hb *hb__new_detached(const char *vm, const uint8_t key[KEY_LEN], int role, int npaths,
			    uint64_t timeout_ms, uint64_t interval_ms, const uint8_t nonce[HB_NONCE_LEN])
{
	struct hb *hb = calloc(1, sizeof(*hb));

	if (!hb)
		return NULL;
	pthread_mutex_init(&hb->lock, NULL);
	snprintf(hb->vm, sizeof(hb->vm), "%s", vm);
	hb->role = role;
	hb->peer_role = role == ROLE_PRIMARY ? ROLE_BACKUP : ROLE_PRIMARY;
	hb_derive_key(key, hb->hbkey);
	memcpy(hb->nonce, nonce, HB_NONCE_LEN);
	hb->timeout_ms = timeout_ms;
	hb->interval_ms = interval_ms;
	hb->npaths = MIN(npaths, CONFIG_HB_PATHS_MAX);
	for (int i = 0; i < hb->npaths; i++) {
		hb->paths[i].hb = hb;
		hb->paths[i].index = i;
		hb->paths[i].rtt_ns = -1;
		snprintf(hb->paths[i].name, sizeof(hb->paths[i].name), "fuzz-%d", i);
	}
	return hb;
}

int hb__accept(struct hb *hb, int path, const uint8_t *buf, size_t len, uint64_t now,
	       uint64_t *proof_ns, uint64_t *active_epoch)
{
	struct hb_path *p;
	bool answer = false, ok;

	if (path < 0 || path >= hb->npaths)
		return -EINVAL;
	p = &hb->paths[path];
	*proof_ns = 0;
	*active_epoch = UINT64_MAX;
	pthread_mutex_lock(&hb->lock);
	ok = accept_locked(hb, p, buf, len, now, proof_ns, active_epoch, &answer);
	if (ok)
		p->last_heard_ns = MAX(p->last_heard_ns, *proof_ns);
	pthread_mutex_unlock(&hb->lock);
	return ok ? 1 : 0;
}

void hb__free_detached(struct hb *hb)
{
	if (!hb)
		return;
	pthread_mutex_destroy(&hb->lock);
	free(hb);
}

/* ---- thread-safe getters and setters -------------------------------------- */

void hb_set_epoch(struct hb *hb, uint64_t epoch)
{
	pthread_mutex_lock(&hb->lock);
	hb->epoch = epoch;
	pthread_mutex_unlock(&hb->lock);
}

void hb_set_active(struct hb *hb, uint64_t epoch)
{
	pthread_mutex_lock(&hb->lock);
	hb->active = true;
	hb->epoch = epoch;
	pthread_mutex_unlock(&hb->lock);
	if (hb->thr_started)
		uv_async_send(&hb->kick_async);
}

bool hb_peer_active(struct hb *hb, uint64_t *epoch)
{
	bool a;

	pthread_mutex_lock(&hb->lock);
	a = hb->peer_active;
	if (a && epoch)
		*epoch = hb->peer_active_epoch;
	pthread_mutex_unlock(&hb->lock);
	return a;
}

void hb_set_replication_up(struct hb *hb, bool up)
{
	struct evq q = { .n = 0 };
	uint64_t now = now_ns();

	pthread_mutex_lock(&hb->lock);
	if (up != hb->repl_up) {
		hb->repl_up = up;
		hb->repl_change_ns = now;
		if (!up)
			hb->repl_last_up_ns = now;
		if (up) {
			log_info("replication link up (%d heartbeat path%s configured)", hb->npaths,
				 hb->npaths == 1 ? "" : "s");
		} else {
			int n = 0;
			for (int i = 0; i < hb->npaths; i++)
				n += hb->paths[i].up;
			log_warn("replication link down; %d of %d heartbeat paths up (timeout %" PRIu64
				 " ms)", n, hb->npaths, hb->timeout_ms);
		}
		evaluate_locked(hb, &q, now);
	}
	pthread_mutex_unlock(&hb->lock);
	evq_deliver(hb, &q);
}

bool hb_peer_alive(struct hb *hb)
{
	bool r;

	pthread_mutex_lock(&hb->lock);
	r = any_up_locked(hb);
	pthread_mutex_unlock(&hb->lock);
	return r;
}

bool hb_path_up(struct hb *hb, int index)
{
	bool r = false;

	pthread_mutex_lock(&hb->lock);
	if (index >= 0 && index < hb->npaths)
		r = hb->paths[index].up;
	pthread_mutex_unlock(&hb->lock);
	return r;
}

int hb_npaths(const struct hb *hb)
{
	return hb->npaths;
}

uint64_t hb_last_heard_ns(struct hb *hb)
{
	uint64_t last = 0;

	pthread_mutex_lock(&hb->lock);
	for (int i = 0; i < hb->npaths; i++)
		last = MAX(last, hb->paths[i].last_heard_ns);
	pthread_mutex_unlock(&hb->lock);
	return last;
}

void hb_get_view(struct hb *hb, struct hb_view *v)
{
	pthread_mutex_lock(&hb->lock);
	view_locked(hb, v, now_ns());
	pthread_mutex_unlock(&hb->lock);
}

enum hb_decision hb_current_decision(struct hb *hb)
{
	struct hb_view v;

	hb_get_view(hb, &v);
	return hb_decide(&v, &hb->policy);
}

int hb_path_stats(struct hb *hb, int index, struct hb_path_stats *st)
{
	uint64_t now = now_ns();
	struct hb_path *p;

	if (index < 0 || index >= hb->npaths)
		return -EINVAL;
	pthread_mutex_lock(&hb->lock);
	p = &hb->paths[index];
	st->up = p->up;
	st->last_heard_ms = p->last_heard_ns ? (int64_t)((now - p->last_heard_ns) / 1000000) : -1;
	st->rtt_ms = p->rtt_ns >= 0 ? (double)p->rtt_ns / 1e6 : -1.0;
	st->sent = p->sent;
	st->received = p->received;
	st->rejected = p->rejected;
	st->unconfirmed = p->unconfirmed;
	st->stale = p->stale;
	pthread_mutex_unlock(&hb->lock);
	return 0;
}

size_t hb_render(struct hb *hb, bool json, char *buf, size_t len)
{
	size_t used = 0;

	if (!len)
		return 0;
	buf[0] = '\0';
#define APPEND(...) do { \
		if (used < len) { \
			int r_ = snprintf(buf + used, len - used, __VA_ARGS__); \
			if (r_ > 0) used = MIN(len - 1, used + (size_t)r_); \
		} } while (0)
	if (json)
		APPEND("[");
	for (int i = 0; i < hb->npaths; i++) {
		struct hb_path_stats st;
		hb_path_stats(hb, i, &st);
		if (json)
			APPEND("%s{\"index\":%d,\"path\":\"%s\",\"up\":%s,\"last_heard_ms\":%" PRId64
			       ",\"rtt_ms\":%.3f,\"sent\":%" PRIu64 ",\"received\":%" PRIu64
			       ",\"rejected\":%" PRIu64 ",\"unconfirmed\":%" PRIu64
			       ",\"stale\":%" PRIu64 "}",
			       i ? "," : "", i + 1, hb->paths[i].name, st.up ? "true" : "false",
			       st.last_heard_ms, st.rtt_ms, st.sent, st.received, st.rejected,
			       st.unconfirmed, st.stale);
		else if (st.last_heard_ms < 0)
			APPEND("  path %d (%s): %s, never heard, sent %" PRIu64 ", received %" PRIu64
			       ", rejected %" PRIu64 "\n", i + 1, hb->paths[i].name,
			       st.up ? "up" : "down", st.sent, st.received, st.rejected);
		else
			APPEND("  path %d (%s): %s, last heard %" PRId64 " ms ago, rtt %.2f ms, sent %"
			       PRIu64 ", received %" PRIu64 ", rejected %" PRIu64 ", stale %" PRIu64
			       "\n", i + 1, hb->paths[i].name, st.up ? "up" : "down",
			       st.last_heard_ms, st.rtt_ms < 0 ? 0.0 : st.rtt_ms, st.sent, st.received,
			       st.rejected, st.stale);
	}
	if (json)
		APPEND("]");
#undef APPEND
	return used;
}
