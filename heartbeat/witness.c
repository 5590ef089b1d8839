/*
 * witness.c - `tandem witness`: a third-party vote for activation, and
 * the client that asks for it (docs/protocol.md, "Witness").
 *
 * Both daemons send the witness WITNESS_PING datagrams every
 * heartbeat-interval (heartbeat.c).  A daemon that has lost its peer on
 * every path asks for the vote in two round trips, so that a recorded
 * request cannot be replayed:
 *     ASK {nonce R}  ->  CHALLENGE {nonce C, echo R}
 *     ASK {nonce R, echo C}  ->  GRANT | DENY {nonce C, echo R, aux reason}
 * C = HMAC(witness secret, R | role | vm | 30-second bucket), so the
 * witness keeps no state per challenge; each R is answered at most once
 * (a retransmission of the same R gets the same answer).
 *
 * The rule: the vote for VM v goes to role X only if no vote of this term
 * went to the other role, the witness has run for at least the asker's
 * timeout, and the other role has not pinged within that timeout.  A term
 * ends, and a new vote may go to the other role, only after the witness has
 * heard pings from both roles carrying boot nonces it did not know when it
 * granted: both daemons were restarted, i.e. the operator re-protected.
 * State is in memory: restarting the witness starts a new term (it then
 * refuses every vote for one timeout, HB_DENY_STARTING).
 */
#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define LOG_MODULE "witness"
#include "../lib/log.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "heartbeat.h"

#define W_MAX_VMS 256
#define W_USED 512
#define W_BUCKET_S 30
#define W_RETRANSMIT_MS 200

static int resolve_text(const char *text, struct sockaddr_storage *ss, socklen_t *sl)
{
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char host[CONFIG_PATH_MAX];
	const char *colon, *h = text;
	size_t hl;

	if (*text == '[') {
		const char *close = strchr(text, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		h = text + 1;
		hl = (size_t)(close - h);
		colon = close + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon)
			return -EINVAL;
		hl = (size_t)(colon - text);
	}
	if (hl == 0 || hl >= sizeof(host))
		return -EINVAL;
	memcpy(host, h, hl);
	host[hl] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &res) || !res)
		return -EADDRNOTAVAIL;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*sl = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* ---- server ----------------------------------------------------------------- */

struct w_vm {
	char name[HB_VM_LEN + 1];
	bool have[3];
	uint8_t nonce[3][HB_NONCE_LEN];
	uint64_t seq[3], last_ns[3];
	int granted;				/* role holding this term's vote, 0 = none */
	uint8_t nonce_at_grant[3][HB_NONCE_LEN];
	bool renewed[3];
	uint64_t term;
};

struct w_used {
	bool valid;
	uint8_t r[HB_NONCE_LEN];
	uint8_t type;
	uint64_t aux;
};

struct witness {
	uint8_t hbkey[32], secret[32];
	uint64_t start_ns;
	struct w_vm vms[W_MAX_VMS];
	int nvms;
	struct w_used used[W_USED];
	unsigned used_next;
};

static volatile sig_atomic_t w_stop;

static void on_term(int sig)
{
	(void)sig;
	w_stop = 1;
}

static const char *rname(int role)
{
	return role == ROLE_PRIMARY ? "primary" : role == ROLE_BACKUP ? "backup" : "?";
}

static struct w_vm *find_vm(struct witness *w, const char *name, bool create)
{
	for (int i = 0; i < w->nvms; i++)
		if (!strcmp(w->vms[i].name, name))
			return &w->vms[i];
	if (!create || w->nvms == W_MAX_VMS)
		return NULL;
	memset(&w->vms[w->nvms], 0, sizeof(w->vms[0]));
	snprintf(w->vms[w->nvms].name, sizeof(w->vms[0].name), "%s", name);
	return &w->vms[w->nvms++];
}

static void challenge(const struct witness *w, const struct hb_dgram *d, uint64_t bucket,
		      uint8_t out[HB_NONCE_LEN])
{
	uint8_t msg[HB_NONCE_LEN + 1 + HB_VM_LEN + 8];
	unsigned int len = HB_NONCE_LEN;

	memset(msg, 0, sizeof(msg));
	memcpy(msg, d->nonce, HB_NONCE_LEN);
	msg[HB_NONCE_LEN] = d->role;
	memcpy(msg + HB_NONCE_LEN + 1, d->vm, strnlen(d->vm, HB_VM_LEN));
	put_be64(msg + HB_NONCE_LEN + 1 + HB_VM_LEN, bucket);
	HMAC(EVP_sha256(), w->secret, 32, msg, sizeof(msg), out, &len);
}

static void on_ping(struct witness *w, const struct hb_dgram *d, uint64_t now)
{
	struct w_vm *v = find_vm(w, d->vm, true);
	int r = d->role;

	if (!v)
		return;
	if (v->have[r] && !memcmp(v->nonce[r], d->nonce, HB_NONCE_LEN) && d->seq <= v->seq[r])
		return;		/* replayed */
	if (!v->have[r] || memcmp(v->nonce[r], d->nonce, HB_NONCE_LEN))
		log_info("vm %s: %s pinging (new boot nonce)", v->name, rname(r));
	v->have[r] = true;
	memcpy(v->nonce[r], d->nonce, HB_NONCE_LEN);
	v->seq[r] = d->seq;
	v->last_ns[r] = now;
	if (v->granted && memcmp(v->nonce_at_grant[r], d->nonce, HB_NONCE_LEN))
		v->renewed[r] = true;
	if (v->granted && v->renewed[ROLE_PRIMARY] && v->renewed[ROLE_BACKUP]) {
		log_warn("vm %s: both daemons restarted since the vote went to the %s: term %" PRIu64
			 " ends, a new vote may be granted", v->name, rname(v->granted), v->term);
		v->granted = 0;
		v->term++;
	}
}

/* Decide an authenticated, fresh ASK; returns GRANT or DENY and the reason. */
static uint8_t decide(struct witness *w, const struct hb_dgram *d, uint64_t now, uint64_t *reason)
{
	struct w_vm *v = find_vm(w, d->vm, true);
	int me = d->role, other = d->role == ROLE_PRIMARY ? ROLE_BACKUP : ROLE_PRIMARY;
	uint64_t timeout_ns = d->aux * 1000000ull;

	*reason = 0;
	if (!v) {
		*reason = HB_DENY_FULL;
		return HB_MSG_WITNESS_DENY;
	}
	if (v->granted && v->granted != me) {
		log_warn("vm %s: vote refused to the %s: term %" PRIu64 "'s vote went to the %s",
			 v->name, rname(me), v->term, rname(v->granted));
		*reason = HB_DENY_GRANTED_OTHER;
		return HB_MSG_WITNESS_DENY;
	}
	if (now - w->start_ns < timeout_ns) {
		log_warn("vm %s: vote refused to the %s: this witness started %" PRIu64 " ms ago, "
			 "less than the timeout (%" PRIu64 " ms)", v->name, rname(me),
			 (now - w->start_ns) / 1000000, d->aux);
		*reason = HB_DENY_STARTING;
		return HB_MSG_WITNESS_DENY;
	}
	if (v->have[other] && now - v->last_ns[other] < timeout_ns) {
		log_warn("vm %s: vote refused to the %s: the %s was heard %" PRIu64 " ms ago "
			 "(timeout %" PRIu64 " ms)", v->name, rname(me), rname(other),
			 (now - v->last_ns[other]) / 1000000, d->aux);
		*reason = HB_DENY_PEER_ALIVE;
		return HB_MSG_WITNESS_DENY;
	}
	if (!v->granted) {
		v->granted = me;
		for (int r = 1; r <= 2; r++) {
			memcpy(v->nonce_at_grant[r], v->nonce[r], HB_NONCE_LEN);
			v->renewed[r] = false;
		}
	}
	if (v->have[other])
		log_warn("vm %s: vote granted to the %s (term %" PRIu64 "): the %s last heard %" PRIu64
			 " ms ago (timeout %" PRIu64 " ms)", v->name, rname(me), v->term, rname(other),
			 (now - v->last_ns[other]) / 1000000, d->aux);
	else
		log_warn("vm %s: vote granted to the %s (term %" PRIu64 "): the %s never heard "
			 "(timeout %" PRIu64 " ms)", v->name, rname(me), v->term, rname(other), d->aux);
	return HB_MSG_WITNESS_GRANT;
}

static void reply(int fd, const struct witness *w, const struct hb_dgram *req, uint8_t type,
		  const uint8_t c[HB_NONCE_LEN], uint64_t aux, const struct sockaddr *to,
		  socklen_t tolen)
{
	struct hb_dgram d;
	uint8_t buf[HB_DGRAM_LEN];

	memset(&d, 0, sizeof(d));
	d.type = type;
	d.role = HB_ROLE_WITNESS;
	d.path = HB_PATH_NONE;
	memcpy(d.vm, req->vm, sizeof(d.vm));
	memcpy(d.nonce, c, HB_NONCE_LEN);
	d.seq = req->seq;
	d.time_ns = now_ns();
	memcpy(d.echo_nonce, req->nonce, HB_NONCE_LEN);
	d.echo_seq = req->seq;
	d.echo_time_ns = req->time_ns;
	d.aux = aux;
	hb_pack(w->hbkey, &d, buf);
	sendto(fd, buf, sizeof(buf), 0, to, tolen);
}

static void on_ask(int fd, struct witness *w, const struct hb_dgram *d, const struct sockaddr *from,
		   socklen_t fromlen, uint64_t now)
{
	static const uint8_t zero[HB_NONCE_LEN];
	uint64_t bucket = now / (W_BUCKET_S * 1000000000ull), reason;
	uint8_t c[HB_NONCE_LEN], c_prev[HB_NONCE_LEN];
	struct w_used *u;
	uint8_t type;

	challenge(w, d, bucket, c);
	if (!memcmp(d->echo_nonce, zero, HB_NONCE_LEN)) {
		reply(fd, w, d, HB_MSG_WITNESS_CHALLENGE, c, 0, from, fromlen);
		return;
	}
	challenge(w, d, bucket ? bucket - 1 : 0, c_prev);
	if (CRYPTO_memcmp(d->echo_nonce, c, HB_NONCE_LEN) &&
	    CRYPTO_memcmp(d->echo_nonce, c_prev, HB_NONCE_LEN))
		return;		/* stale or invented challenge: ignore */
	for (unsigned i = 0; i < W_USED; i++) {
		u = &w->used[i];
		if (u->valid && !memcmp(u->r, d->nonce, HB_NONCE_LEN)) {
			reply(fd, w, d, u->type, d->echo_nonce, u->aux, from, fromlen);
			return;
		}
	}
	type = decide(w, d, now, &reason);
	u = &w->used[w->used_next++ % W_USED];
	u->valid = true;
	memcpy(u->r, d->nonce, HB_NONCE_LEN);
	u->type = type;
	u->aux = reason;
	reply(fd, w, d, type, d->echo_nonce, reason, from, fromlen);
}

int hb_witness_serve(const char *addr, const char *keyfile)
{
	struct witness *w = NULL;
	struct sockaddr_storage ss;
	struct sigaction sa;
	uint8_t key[KEY_LEN];
	socklen_t sl = 0;
	char err[512];
	int fd = -1, rc = 0;

	if (key_load(keyfile, key, err, sizeof(err))) {
		log_error("%s", err);
		return -EINVAL;
	}
	if ((rc = resolve_text(addr, &ss, &sl))) {
		log_error("witness address '%s': expected host:port (IPv6 as [addr]:port)", addr);
		return rc;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	hb_derive_key(key, w->hbkey);
	OPENSSL_cleanse(key, sizeof(key));
	if (RAND_bytes(w->secret, sizeof(w->secret)) != 1) {
		rc = -EIO;
		goto out;
	}
	w->start_ns = now_ns();
	fd = socket(ss.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || bind(fd, (struct sockaddr *)&ss, sl) < 0) {
		rc = -errno;
		log_perror("witness: cannot bind %s", addr);
		goto out;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_term;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	w_stop = 0;
	log_info("witness listening on %s", addr);
	while (!w_stop) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		struct sockaddr_storage from;
		socklen_t fromlen = sizeof(from);
		uint8_t buf[HB_DGRAM_LEN + 1];
		struct hb_dgram d;
		uint64_t now;
		ssize_t n;

		if (poll(&pfd, 1, 500) <= 0)
			continue;
		n = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &fromlen);
		if (n < 0)
			continue;
		if (hb_unpack(w->hbkey, buf, (size_t)n, &d))
			continue;	/* malformed or forged: silently dropped */
		if (d.role != ROLE_PRIMARY && d.role != ROLE_BACKUP)
			continue;
		now = now_ns();
		if (d.type == HB_MSG_WITNESS_PING)
			on_ping(w, &d, now);
		else if (d.type == HB_MSG_WITNESS_ASK)
			on_ask(fd, w, &d, (struct sockaddr *)&from, fromlen, now);
	}
	log_info("witness stopping");
out:
	if (fd >= 0)
		close(fd);
	if (w)
		OPENSSL_cleanse(w, sizeof(*w));
	free(w);
	return rc;
}

/* ---- client ------------------------------------------------------------------ */

int hb_witness_ask(const struct tandem_config *cfg, const uint8_t key[KEY_LEN], int role,
		   uint64_t timeout_ms, char *err, size_t errlen)
{
	struct sockaddr_storage ss;
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	uint8_t hbkey[32], buf[HB_DGRAM_LEN], c[HB_NONCE_LEN];
	struct hb_dgram ask;
	uint64_t deadline = now_ms() + timeout_ms, next = 0;
	bool have_c = false;
	char port[8];
	int fd = -1, rc = -ETIMEDOUT;

	if (!cfg->witness.host[0]) {
		snprintf(err, errlen, "no witness configured");
		return -EINVAL;
	}
	snprintf(port, sizeof(port), "%u", cfg->witness.port);
	if (getaddrinfo(cfg->witness.host, port, &hints, &res) || !res) {
		snprintf(err, errlen, "witness %s:%u: cannot resolve", cfg->witness.host,
			 cfg->witness.port);
		return -EADDRNOTAVAIL;
	}
	memcpy(&ss, res->ai_addr, res->ai_addrlen);
	fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&ss, res->ai_addrlen) < 0) {
		rc = -errno;
		snprintf(err, errlen, "witness %s:%u: %s", cfg->witness.host, cfg->witness.port,
			 strerror(errno));
		goto out;
	}
	hb_derive_key(key, hbkey);
	memset(&ask, 0, sizeof(ask));
	ask.type = HB_MSG_WITNESS_ASK;
	ask.role = (uint8_t)role;
	ask.path = HB_PATH_NONE;
	snprintf(ask.vm, sizeof(ask.vm), "%s", cfg->name);
	if (RAND_bytes(ask.nonce, HB_NONCE_LEN) != 1) {
		rc = -EIO;
		goto out;
	}
	ask.seq = 1;
	ask.aux = cfg->timeout_ms;
	log_warn("asking the witness %s:%u for the vote as %s (timeout %" PRIu64 " ms)",
		 cfg->witness.host, cfg->witness.port, rname(role), timeout_ms);
	for (;;) {
		uint64_t now = now_ms();
		struct pollfd pfd = { fd, POLLIN, 0 };
		struct hb_dgram d;
		ssize_t n;

		if (now >= deadline)
			break;
		if (now >= next) {
			ask.time_ns = now_ns();
			hb_pack(hbkey, &ask, buf);
			send(fd, buf, sizeof(buf), 0);	/* ECONNREFUSED etc.: keep trying */
			next = now + W_RETRANSMIT_MS;
		}
		if (poll(&pfd, 1, (int)(MIN(next, deadline) - now)) <= 0)
			continue;
		n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 || hb_unpack(hbkey, buf, (size_t)n, &d))
			continue;
		if (d.role != HB_ROLE_WITNESS || strcmp(d.vm, ask.vm) ||
		    memcmp(d.echo_nonce, ask.nonce, HB_NONCE_LEN))
			continue;
		if (d.type == HB_MSG_WITNESS_CHALLENGE && !have_c) {
			memcpy(c, d.nonce, HB_NONCE_LEN);
			have_c = true;
			memcpy(ask.echo_nonce, c, HB_NONCE_LEN);
			ask.seq = 2;
			next = 0;	/* send the answer now */
			continue;
		}
		if (!have_c || memcmp(d.nonce, c, HB_NONCE_LEN))
			continue;
		if (d.type == HB_MSG_WITNESS_GRANT) {
			log_warn("the witness granted the vote to the %s", rname(role));
			rc = 0;
			goto out;
		}
		if (d.type == HB_MSG_WITNESS_DENY) {
			snprintf(err, errlen, "the witness refused the vote: %s",
				 d.aux == HB_DENY_PEER_ALIVE ? "it hears the peer (the peer is alive)" :
				 d.aux == HB_DENY_GRANTED_OTHER ? "this term's vote went to the peer" :
				 d.aux == HB_DENY_STARTING ? "it started less than a timeout ago" :
				 d.aux == HB_DENY_FULL ? "it serves too many VMs" : "unknown reason");
			log_error("%s", err);
			rc = -EACCES;
			goto out;
		}
	}
	snprintf(err, errlen, "no valid answer from the witness %s:%u within %" PRIu64 " ms: "
		 "not activating", cfg->witness.host, cfg->witness.port, timeout_ms);
	log_error("%s", err);
	rc = -ETIMEDOUT;
out:
	if (res)
		freeaddrinfo(res);
	if (fd >= 0)
		close(fd);
	return rc;
}
