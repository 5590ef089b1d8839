/*
 * netbuf.c - `bench netbuf`: what output buffering costs a guest's packets.
 *
 * Topology (three network namespaces, named tbg-/tbh-/tbo-<pid>):
 *
 *   guest eth0 <-veth-> vif --[backend]--> br0 <--> h1 <-veth-> observer eth0
 *
 * The names are deleted as soon as file descriptors hold the namespaces,
 * so the namespaces, veths, bridge and rules go away with the measuring
 * process however it ends (the parent removes the names if it died while
 * setting up).  That process is forked, so bench.c's own namespace is
 * untouched; it moves itself into the host namespace and creates the
 * guest's and observer's sockets in theirs.  IPv6 is off in all three (no
 * MLD/ND chatter); the guest has a static neighbour entry (no ARP).
 *
 * Latency lines: the guest sends one UDP packet every pkt_every_ms with its
 * send time (CLOCK_MONOTONIC); the observer notes each arrival.  Epochs run
 * like the engine's: at every interval close_epoch(N), then "ship and ack"
 * for real -- a checkpoint of ckpt_kib over loopback TCP in the host
 * namespace to a thread that answers with an 8-byte ack -- then
 * release(N).  ack_ms is the median close -> release time, measured per
 * epoch; a late ack stretches the epoch as in the engine (epoch_ms is the
 * achieved mean epoch length).  A packet's added latency is its (arrival -
 * send) minus unbuffered_ms, the median latency of the same path without a
 * backend, measured in the same run just before attach.  expected =
 * interval/2 + ack_ms; ratio = p50 / expected.  early counts packets that
 * reached the observer before release() of their epoch was called (must
 * be 0); lost, packets that never arrived.  Per-run figures, then medians
 * of NB_RUNS runs.
 *
 * Throughput line: the guest floods (unpaced send()), epochs close and are
 * released every 10 ms (release right after close: no ship, so the core
 * goes to the packets); held_released_pps is what reaches the observer per
 * second (over the last 4/5 of each run).  The guest's sender, the backend
 * (and its reader thread) and the observer are all pinned to one CPU;
 * unbuffered_pps is the same flood without a backend, ratio their quotient
 * per run; dropped_pps comes from the backend's counters.  The epoch
 * driver runs SCHED_FIFO so the flood cannot stretch its cadence.
 *
 * backend=queue runs on this kernel.  backend=plug needs sch_plug, which
 * only Debian's 6.1 kernel has here: bench_netbuf re-runs this binary
 * under tests/vm61/run.sh (QEMU TCG, one vCPU), where TANDEM_VM61=1
 * selects plug, with a smaller checkpoint, a packet every 2 ms and shorter
 * runs.  Those lines say env=qemu-tcg: an emulated CPU, not comparable with
 * native figures.
 *
 * Knobs: TANDEM_BENCH_NO_VM=1 skips the VM; TANDEM_BENCH_DEBUG=1 prints
 * per-run figures on stderr.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../buffering/netbuf.h"
#include "../config/config.h"
#include "../lib/util.h"
#include "bench.h"

#define NB_RUNS 5
#define NB_PORT 7777
#define PAYLOAD 32
#define MAX_PKTS (1u << 16)	/* latency mode: packets per phase */
#define VM_TIMEOUT_S 300
#define MAX_EPOCHS 4096

/* Parameters of one environment (native, or the TCG VM). */
struct params {
	const char *backend_name;
	int backend;
	const char *env;
	uint64_t period_ns;		/* latency mode: one packet per period */
	unsigned ckpt_pages;		/* shipped per epoch */
	unsigned lat_ms[3];		/* run length per interval 10/25/100 */
	unsigned base_ms;		/* unbuffered baseline per run */
	unsigned flood_ms;		/* throughput run length */
};

static const unsigned intervals[3] = { 10, 25, 100 };

struct env {
	int g, h, o;			/* namespace fds */
	char names[3][32];
	bool named;
	char vif[16];
	int gfd, ofd;			/* guest sender, observer receiver */
	int ackfd;			/* our end of the ship/ack TCP link */
	uint8_t *ckpt;
	size_t ckpt_bytes;
	pthread_t peer;
};

/* One measured phase: the sender's and the receiver's shared state. */
struct phase {
	uint32_t id;
	bool flood;
	uint64_t period_ns, t0, t_end;
	uint64_t win_start;		/* flood: count arrivals after this */
	int gfd, ofd;
	_Atomic uint64_t sent, recvd, in_win, last_arrival;
	_Atomic uint64_t done;		/* when the sender's last send() returned */
	atomic_bool stop;
	/* latency mode, per seq: send and arrival times (0: not arrived) */
	uint64_t *snd, *arr;
};

struct pkt {
	uint32_t phase, pad;
	uint64_t seq, sent_ns;
	uint8_t fill[PAYLOAD - 24];
};

/* ---- small helpers ---------------------------------------------------- */

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_until(uint64_t t)
{
	struct timespec ts = { .tv_sec = (time_t)(t / 1000000000u),
			       .tv_nsec = (long)(t % 1000000000u) };

	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
		;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of v[0..n) (sorted here). */
static double pct(double *v, size_t n, double p)
{
	size_t i;

	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_dbl);
	i = (size_t)(p * (double)n + 0.999999);
	i = i ? i - 1 : 0;
	return v[i < n ? i : n - 1];
}

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	r = system(cmd);
	if (r != 0)
		fprintf(stderr, "bench netbuf: command failed (%d): %s\n", r, cmd);
	return r;
}

/* setns into a network namespace (the calling thread only). */
static int enter(int ns)
{
	return setns(ns, CLONE_NEWNET);
}

static int socket_in(struct env *e, int ns, int domain, int type)
{
	int fd;

	if (enter(ns) < 0)
		return -1;
	fd = socket(domain, type, 0);
	if (enter(e->h) < 0) {
		perror("bench netbuf: setns back to the host namespace");
		exit(1);
	}
	return fd;
}

static void write_proc_in(struct env *e, int ns, const char *path, const char *val)
{
	int fd;

	if (enter(ns) < 0)
		return;
	fd = open(path, O_WRONLY);
	if (fd >= 0) {
		if (write(fd, val, strlen(val)) < 0)
			fprintf(stderr, "bench netbuf: %s: %s\n", path, strerror(errno));
		close(fd);
	}
	if (enter(e->h) < 0)
		exit(1);
}

/* ---- topology --------------------------------------------------------- */

static void names_delete(struct env *e)
{
	char cmd[128];

	if (!e->named)
		return;
	for (int i = 0; i < 3; i++) {
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", e->names[i]);
		if (system(cmd) != 0) {
			/* already gone */
		}
	}
	e->named = false;
}

static int ns_open(const char *name)
{
	char path[96];

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	return open(path, O_RDONLY | O_CLOEXEC);
}

static void *ack_peer(void *arg)
{
	static uint8_t buf[1 << 20];
	int fd = (int)(intptr_t)arg;
	uint64_t len;

	while (read_full(fd, &len, sizeof(len)) == 0) {
		while (len) {
			size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
			if (read_full(fd, buf, n))
				return NULL;
			len -= n;
		}
		if (write_full(fd, &len, sizeof(len)))
			return NULL;
	}
	return NULL;
}

/* The ship/ack link: loopback TCP in the host namespace. */
static int ack_link(struct env *e)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int l, c, s, one = 1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
	    getsockname(l, (struct sockaddr *)&a, &al))
		return -1;
	c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c < 0 || connect(c, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	s = accept(l, NULL, NULL);
	close(l);
	if (s < 0)
		return -1;
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	e->ackfd = c;
	return pthread_create(&e->peer, NULL, ack_peer, (void *)(intptr_t)s) ? -1 : 0;
}

static int topo_setup(struct env *e, unsigned ckpt_pages)
{
	static const char *const pfx[3] = { "tbg", "tbh", "tbo" };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(NB_PORT) };
	const char *G = e->names[0], *H = e->names[1], *O = e->names[2];
	int big = 32 << 20;
	int fds[3];

	for (int i = 0; i < 3; i++) {
		snprintf(e->names[i], sizeof(e->names[i]), "%s-%d", pfx[i], (int)getpid());
		if (sh("ip netns add %s", e->names[i]))
			return -1;
		e->named = true;
		fds[i] = ns_open(e->names[i]);
		if (fds[i] < 0)
			return -1;
	}
	e->g = fds[0];
	e->h = fds[1];
	e->o = fds[2];
	/* The whole process (single-threaded here) moves to the host side. */
	if (enter(e->h) < 0)
		return -1;
	for (int i = 0; i < 3; i++) {
		write_proc_in(e, fds[i], "/proc/sys/net/ipv6/conf/all/disable_ipv6", "1");
		write_proc_in(e, fds[i], "/proc/sys/net/ipv6/conf/default/disable_ipv6", "1");
	}
	snprintf(e->vif, sizeof(e->vif), "tbv%d", (int)getpid());
	if (sh("ip -n %s link set lo up", H) || sh("ip -n %s link set lo up", G) ||
	    sh("ip -n %s link set lo up", O) ||
	    sh("ip -n %s link add br0 type bridge && ip -n %s link set br0 up", H, H) ||
	    sh("ip -n %s link add %s type veth peer name eth0 netns %s", H, e->vif, G) ||
	    sh("ip -n %s link add h1 type veth peer name eth0 netns %s", H, O) ||
	    sh("ip -n %s link set %s master br0 up && ip -n %s link set h1 master br0 up",
	       H, e->vif, H) ||
	    sh("ip -n %s link set eth0 address 02:77:00:00:00:02 && "
	       "ip -n %s addr add 10.77.0.2/24 dev eth0 && ip -n %s link set eth0 up", G, G, G) ||
	    sh("ip -n %s link set eth0 address 02:77:00:00:00:03 && "
	       "ip -n %s addr add 10.77.0.3/24 dev eth0 && ip -n %s link set eth0 up", O, O, O) ||
	    sh("ip -n %s neigh replace 10.77.0.3 lladdr 02:77:00:00:00:03 dev eth0 "
	       "nud permanent", G))
		return -1;
	/* From here on, fds keep the namespaces alive; drop the names. */
	names_delete(e);

	e->ofd = socket_in(e, e->o, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
	e->gfd = socket_in(e, e->g, AF_INET, SOCK_DGRAM | SOCK_CLOEXEC);
	if (e->ofd < 0 || e->gfd < 0)
		return -1;
	if (setsockopt(e->ofd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)))
		setsockopt(e->ofd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
	{
		struct timeval tv = { 0, 20000 };
		setsockopt(e->ofd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	if (bind(e->ofd, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	inet_pton(AF_INET, "10.77.0.3", &a.sin_addr);
	if (connect(e->gfd, (struct sockaddr *)&a, sizeof(a)))
		return -1;
	e->ckpt_bytes = (size_t)ckpt_pages * 4096;
	e->ckpt = malloc(e->ckpt_bytes ? e->ckpt_bytes : 1);
	if (!e->ckpt)
		return -1;
	for (size_t i = 0; i < e->ckpt_bytes; i++)
		e->ckpt[i] = (uint8_t)(i * 2654435761u >> 13);
	return ack_link(e);
}

/* ---- sender and receiver threads --------------------------------------- */

static void *sender(void *arg)
{
	struct phase *p = arg;
	struct pkt k;
	uint64_t seq = 0, t;

	memset(&k, 0, sizeof(k));
	k.phase = p->id;
	sleep_until(p->t0);
	for (;;) {
		if (!p->flood) {
			if (seq >= MAX_PKTS)
				break;
			t = p->t0 + seq * p->period_ns;
			if (t >= p->t_end)
				break;
			sleep_until(t);
		}
		t = mono_ns();
		if (p->flood && ((seq & 63) == 0 && t >= p->t_end))
			break;
		k.seq = seq;
		k.sent_ns = t;
		if (!p->flood)
			p->snd[seq] = t;
		if (send(p->gfd, &k, sizeof(k), 0) == (ssize_t)sizeof(k))
			seq++;
		atomic_store(&p->sent, seq);
	}
	atomic_store(&p->sent, seq);
	atomic_store(&p->done, mono_ns());
	return NULL;
}

static void *receiver(void *arg)
{
	struct phase *p = arg;
	struct pkt buf[64];
	struct mmsghdr m[64];
	struct iovec iov[64];

	for (int i = 0; i < 64; i++) {
		iov[i].iov_base = &buf[i];
		iov[i].iov_len = sizeof(buf[i]);
		memset(&m[i], 0, sizeof(m[i]));
		m[i].msg_hdr.msg_iov = &iov[i];
		m[i].msg_hdr.msg_iovlen = 1;
	}
	while (!atomic_load(&p->stop)) {
		int n = recvmmsg(p->ofd, m, 64, MSG_WAITFORONE, NULL);
		uint64_t t = mono_ns(), got = 0;

		if (n <= 0)
			continue;
		for (int i = 0; i < n; i++) {
			if (m[i].msg_len < 24 || buf[i].phase != p->id)
				continue;	/* a late packet of an earlier phase */
			got++;
			if (!p->flood && buf[i].seq < MAX_PKTS && !p->arr[buf[i].seq])
				p->arr[buf[i].seq] = t;
		}
		if (got) {
			atomic_fetch_add(&p->recvd, got);
			if (p->flood && t >= p->win_start && t <= p->t_end)
				atomic_fetch_add(&p->in_win, got);
			atomic_store(&p->last_arrival, t);
		}
	}
	return NULL;
}

/* Start the two threads of a phase; it begins 20 ms from now. */
static void phase_start(struct phase *p, struct env *e, bool flood, uint64_t period_ns,
			unsigned ms, pthread_t th[2])
{
	static uint32_t next_id = 1;

	p->id = next_id++;
	p->flood = flood;
	p->period_ns = period_ns;
	p->gfd = e->gfd;
	p->ofd = e->ofd;
	p->t0 = mono_ns() + 20 * 1000000ull;
	p->t_end = p->t0 + (uint64_t)ms * 1000000u;
	p->win_start = p->t0 + (p->t_end - p->t0) / 5;	/* skip the first fifth */
	atomic_store(&p->sent, 0);
	atomic_store(&p->recvd, 0);
	atomic_store(&p->in_win, 0);
	atomic_store(&p->last_arrival, 0);
	atomic_store(&p->done, 0);
	atomic_store(&p->stop, false);
	if (!flood) {
		memset(p->snd, 0, MAX_PKTS * sizeof(*p->snd));
		memset(p->arr, 0, MAX_PKTS * sizeof(*p->arr));
	}
	if (pthread_create(&th[1], NULL, receiver, p) || pthread_create(&th[0], NULL, sender, p)) {
		fprintf(stderr, "bench netbuf: cannot start threads\n");
		exit(1);
	}
}

/* Wait for the sender, then until everything sent arrived (or, as `lost`,
 * nothing arrived for quiet_ms), then stop the receiver. */
static void phase_finish(struct phase *p, pthread_t th[2], uint64_t dropped, unsigned quiet_ms)
{
	pthread_join(th[0], NULL);
	for (;;) {
		uint64_t now = mono_ns(), last = atomic_load(&p->last_arrival);
		uint64_t since = last > p->t_end ? last : p->t_end;

		if (atomic_load(&p->recvd) + dropped >= atomic_load(&p->sent))
			break;
		if (now > since + (uint64_t)quiet_ms * 1000000u)
			break;
		sleep_until(now + 1000000);	/* poll the condition every ms */
	}
	atomic_store(&p->stop, true);
	pthread_join(th[1], NULL);
}

/* ---- the backend ------------------------------------------------------ */

static int nb_attach(struct netbuf *nb, struct tandem_config *cfg, int backend, const char *vif)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->netbuf = backend;
	cfg->buffer_limit = 64u << 20;
	snprintf(cfg->name, sizeof(cfg->name), "bench");
	memset(nb, 0, sizeof(*nb));
	nb->cfg = cfg;
	nb->ops = netbuf_ops_for(cfg);
	if (!nb->ops)
		return -ENOTSUP;
	return nb->ops->attach(nb, vif);
}

/* Ship the checkpoint of an epoch and wait for its ack. */
static int ship_and_ack(struct env *e)
{
	uint64_t len = e->ckpt_bytes, ack;

	if (write_full(e->ackfd, &len, sizeof(len)) || write_full(e->ackfd, e->ckpt, e->ckpt_bytes) ||
	    read_full(e->ackfd, &ack, sizeof(ack)))
		return -EPIPE;
	return 0;
}

/*
 * Epochs of interval_ns from t0 until the sender has stopped and the epoch
 * holding its last packet is closed and released: close_epoch(k) at t0 +
 * k*interval (or at once, when a slow ship made us late: the epoch
 * stretches, as in the engine), then (with ship) ship and ack, then
 * release(k).  Per epoch k (1-based, when ep is not NULL): ep->closed[k]
 * = when close_epoch(k) returned, ep->rel[k] = when release(k) was
 * called, ep->ack_ms[k-1] = close -> release done.  Returns the number of
 * epochs, or -errno.
 */
struct epochs {
	uint64_t closed[MAX_EPOCHS + 1], rel[MAX_EPOCHS + 1], start[MAX_EPOCHS + 1];
	double ack_ms[MAX_EPOCHS];
};

static long drive_epochs(struct env *e, struct netbuf *nb, struct phase *p,
			 uint64_t interval_ns, bool ship, struct epochs *ep)
{
	struct sched_param rt = { .sched_priority = 10 }, normal = { .sched_priority = 0 };
	uint64_t last_close = 0;
	size_t k;
	int rc = 0;

	/* Keep the cadence under load (a flooding sender on the same core):
	 * only this thread, set after the other threads were started, as
	 * they would inherit it. */
	pthread_setschedparam(pthread_self(), SCHED_FIFO, &rt);
	for (k = 1; k <= MAX_EPOCHS; k++) {
		uint64_t c0, done = atomic_load(&p->done);

		/* the sender's last packet went out before the last close began */
		if (done && last_close > done)
			break;
		sleep_until(p->t0 + k * interval_ns);
		c0 = last_close = mono_ns();
		rc = nb->ops->close_epoch(nb, k);
		if (rc < 0)
			break;
		if (ep)
			ep->closed[k] = mono_ns();
		if (ship && ship_and_ack(e) < 0) {
			rc = -EPIPE;
			break;
		}
		if (ep)
			ep->rel[k] = mono_ns();
		rc = nb->ops->release(nb, k);
		if (rc < 0)
			break;
		if (ep) {
			ep->start[k] = c0;
			ep->ack_ms[k - 1] = (double)(mono_ns() - c0) / 1e6;
		}
	}
	pthread_setschedparam(pthread_self(), SCHED_OTHER, &normal);
	if (rc < 0)
		return rc;
	return k > MAX_EPOCHS ? -E2BIG : (long)(k - 1);
}

/* ---- latency ---------------------------------------------------------- */

struct lat_result {
	double p50, p99, expected, ratio, ack, base, epoch;
	uint64_t lost, early;
};

static bool debug(void)
{
	const char *d = getenv("TANDEM_BENCH_DEBUG");

	return d && *d == '1';
}

static int latency_run(struct env *e, const struct params *pr, unsigned interval_ms,
		       unsigned ms, struct phase *p, struct lat_result *r)
{
	static struct epochs ep;
	uint64_t interval_ns = (uint64_t)interval_ms * 1000000u, sent, n = 0;
	struct tandem_config cfg;
	struct netbuf nb;
	pthread_t th[2];
	size_t j = 0;
	double *v;
	long ne;
	int rc;

	/* 1. The same path, unbuffered. */
	phase_start(p, e, false, pr->period_ns, pr->base_ms, th);
	phase_finish(p, th, 0, 500);
	sent = atomic_load(&p->sent);
	v = calloc(MAX_PKTS, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < sent; i++)
		if (p->arr[i])
			v[n++] = (double)(p->arr[i] - p->snd[i]) / 1e6;
	r->base = pct(v, n, 0.5);

	/* 2. Buffered, epochs driven like the engine's. */
	rc = nb_attach(&nb, &cfg, pr->backend, e->vif);
	if (rc < 0) {
		free(v);
		return rc;
	}
	phase_start(p, e, false, pr->period_ns, ms, th);
	memset(&ep, 0, sizeof(ep));
	ne = drive_epochs(e, &nb, p, interval_ns, true, &ep);
	phase_finish(p, th, 0, 1000);
	nb.ops->release_all(&nb);
	nb.ops->detach(&nb);
	if (ne <= 0) {
		free(v);
		return ne < 0 ? (int)ne : -EIO;
	}
	sent = atomic_load(&p->sent);
	n = 0;
	r->lost = r->early = 0;
	for (uint64_t i = 0; i < sent; i++) {
		/* j: the last epoch closed before this packet was sent; the
		 * packet belongs to a later one, so release(j+1) must come
		 * first. */
		while (j < (size_t)ne && ep.closed[j + 1] <= p->snd[i])
			j++;
		if (!p->arr[i]) {
			r->lost++;
			continue;
		}
		if (j < (size_t)ne && p->arr[i] < ep.rel[j + 1])
			r->early++;
		v[n++] = (double)(p->arr[i] - p->snd[i]) / 1e6 - r->base;
	}
	r->epoch = (double)(ep.start[ne] - p->t0) / 1e6 / (double)ne;
	r->ack = pct(ep.ack_ms, (size_t)ne, 0.5);
	if (debug()) {
		double mx = pct(ep.ack_ms, (size_t)ne, 1.0);
		fprintf(stderr, "debug: interval %u: epochs %ld, mean epoch %.2f ms, ack p50 %.2f "
			"max %.2f, sent %" PRIu64 ", base %.3f\n", interval_ms, ne, r->epoch,
			r->ack, mx, sent, r->base);
	}
	r->p50 = pct(v, n, 0.5);
	r->p99 = pct(v, n, 0.99);
	r->expected = interval_ms / 2.0 + r->ack;
	r->ratio = r->p50 / r->expected;
	free(v);
	return 0;
}

static double med(double *v, int n)
{
	return bench_median(v, n);
}

static void bench_latency(struct env *e, const struct params *pr, struct phase *p)
{
	for (int i = 0; i < 3; i++) {
		double p50[NB_RUNS], p99[NB_RUNS], ex[NB_RUNS], ra[NB_RUNS], ack[NB_RUNS], base[NB_RUNS];
		double epoch[NB_RUNS];
		uint64_t lost = 0, early = 0;

		for (int run = 0; run < NB_RUNS; run++) {
			struct lat_result r;
			int rc = latency_run(e, pr, intervals[i], pr->lat_ms[i], p, &r);

			if (rc < 0) {
				printf("bench netbuf: backend=%s interval_ms=%u error=%s env=%s\n",
				       pr->backend_name, intervals[i], strerror(-rc), pr->env);
				fflush(stdout);
				return;
			}
			p50[run] = r.p50;
			p99[run] = r.p99;
			ex[run] = r.expected;
			ra[run] = r.ratio;
			ack[run] = r.ack;
			base[run] = r.base;
			epoch[run] = r.epoch;
			lost += r.lost;
			early += r.early;
		}
		printf("bench netbuf: backend=%s interval_ms=%u added_latency_p50_ms=%.2f p99_ms=%.2f "
		       "expected_ms=%.2f ratio=%.2f ack_ms=%.2f ckpt_kib=%u epoch_ms=%.2f unbuffered_ms=%.3f "
		       "pkt_every_ms=%.0f lost=%" PRIu64 " early=%" PRIu64 " runs=%d env=%s\n",
		       pr->backend_name, intervals[i], med(p50, NB_RUNS), med(p99, NB_RUNS),
		       med(ex, NB_RUNS), med(ra, NB_RUNS), med(ack, NB_RUNS), pr->ckpt_pages * 4,
		       med(epoch, NB_RUNS), med(base, NB_RUNS), (double)pr->period_ns / 1e6, lost, early, NB_RUNS,
		       pr->env);
		fflush(stdout);
	}
}

/* ---- throughput ------------------------------------------------------- */

/* Pin the calling thread (and what it starts later) to one CPU. */
static void pin_one(cpu_set_t *saved)
{
	cpu_set_t one;
	int cpu = sched_getcpu();

	sched_getaffinity(0, sizeof(*saved), saved);
	CPU_ZERO(&one);
	CPU_SET(cpu < 0 ? 0 : cpu, &one);
	sched_setaffinity(0, sizeof(one), &one);
}

static double flood_pps(struct phase *p)
{
	return (double)atomic_load(&p->in_win) / ((double)(p->t_end - p->win_start) / 1e9);
}

static void bench_pps(struct env *e, const struct params *pr, struct phase *p)
{
	double held[NB_RUNS], unbuf[NB_RUNS], ratio[NB_RUNS], drop[NB_RUNS], sentr[NB_RUNS];
	struct netbuf_counters c;
	cpu_set_t saved;

	pin_one(&saved);
	for (int run = 0; run < NB_RUNS; run++) {
		struct tandem_config cfg;
		struct netbuf nb;
		pthread_t th[2];
		double secs = (double)pr->flood_ms / 1e3;
		long ne;
		int rc;

		phase_start(p, e, true, 0, pr->flood_ms, th);
		phase_finish(p, th, 0, 200);
		unbuf[run] = flood_pps(p);

		rc = nb_attach(&nb, &cfg, pr->backend, e->vif);
		if (rc < 0) {
			printf("bench netbuf: backend=%s held_released_pps=0 error=%s env=%s\n",
			       pr->backend_name, strerror(-rc), pr->env);
			fflush(stdout);
			sched_setaffinity(0, sizeof(saved), &saved);
			return;
		}
		phase_start(p, e, true, 0, pr->flood_ms, th);
		ne = drive_epochs(e, &nb, p, 10 * 1000000ull, false, NULL);
		memset(&c, 0, sizeof(c));
		if (nb.ops->counters)
			nb.ops->counters(&nb, &c);
		phase_finish(p, th, c.dropped_packets, 200);
		if (nb.ops->counters)
			nb.ops->counters(&nb, &c);
		nb.ops->release_all(&nb);
		nb.ops->detach(&nb);
		if (ne < 0) {
			printf("bench netbuf: backend=%s held_released_pps=0 error=%s env=%s\n",
			       pr->backend_name, strerror((int)-ne), pr->env);
			fflush(stdout);
			sched_setaffinity(0, sizeof(saved), &saved);
			return;
		}
		held[run] = flood_pps(p);
		ratio[run] = held[run] / unbuf[run];
		drop[run] = (double)c.dropped_packets / secs;
		sentr[run] = (double)atomic_load(&p->sent) / secs;
		if (debug())
			fprintf(stderr, "debug: pps run %d: held %.0f unbuffered %.0f sent %.0f "
				"dropped %" PRIu64 " epochs %ld\n", run, held[run], unbuf[run],
				sentr[run], c.dropped_packets, ne);
	}
	sched_setaffinity(0, sizeof(saved), &saved);
	printf("bench netbuf: backend=%s held_released_pps=%.0f unbuffered_pps=%.0f ratio=%.2f "
	       "dropped_pps=%.0f sent_pps=%.0f epoch_ms=10 udp_payload=%d cpus=1 runs=%d env=%s\n",
	       pr->backend_name, med(held, NB_RUNS), med(unbuf, NB_RUNS), med(ratio, NB_RUNS),
	       med(drop, NB_RUNS), med(sentr, NB_RUNS), PAYLOAD, NB_RUNS, pr->env);
	fflush(stdout);
}

/* ---- one environment, in a child process ------------------------------ */

static void measure(const struct params *pr)
{
	struct env e;
	struct phase p;
	pid_t pid;
	int st;

	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return;
	if (pid == 0) {
		memset(&e, 0, sizeof(e));
		memset(&p, 0, sizeof(p));
		if (topo_setup(&e, pr->ckpt_pages) < 0) {
			names_delete(&e);
			printf("bench netbuf: backend=%s error=topology-setup-failed env=%s\n",
			       pr->backend_name, pr->env);
			fflush(stdout);
			_exit(1);
		}
		p.snd = calloc(MAX_PKTS, sizeof(*p.snd));
		p.arr = calloc(MAX_PKTS, sizeof(*p.arr));
		bench_latency(&e, pr, &p);
		bench_pps(&e, pr, &p);
		fflush(stdout);
		/* The namespaces, veths, bridge and rules go with this process. */
		_exit(0);
	}
	waitpid(pid, &st, 0);
	/* If the child died during set-up, its names may still be there. */
	{
		char cmd[160];
		snprintf(cmd, sizeof(cmd), "for n in tbg tbh tbo; do ip netns del $n-%d 2>/dev/null; "
			 "done; true", (int)pid);
		if (system(cmd) != 0)
			fprintf(stderr, "bench netbuf: cleanup of namespaces failed\n");
	}
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		fprintf(stderr, "bench netbuf: %s measurement ended abnormally (status %d)\n",
			pr->backend_name, st);
}

/* Native run of backend=plug: relay the VM's lines. */
static void plug_in_vm(void)
{
	char cmd[256], line[1024];
	bool any = false;
	uint64_t t0 = mono_ns();
	FILE *f;
	int st;

	if (access("tests/vm61/run.sh", X_OK) != 0) {
		printf("bench netbuf: backend=plug skipped=no-tests/vm61/run.sh\n");
		return;
	}
	fflush(stdout);
	snprintf(cmd, sizeof(cmd), "tests/vm61/run.sh --timeout %d -- ./bench/tandem-bench netbuf 2>&1",
		 VM_TIMEOUT_S);
	f = popen(cmd, "r");
	if (!f) {
		printf("bench netbuf: backend=plug error=cannot-run-vm61\n");
		return;
	}
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, "bench netbuf:", 13)) {
			fputs(line, stdout);
			fflush(stdout);
			any = true;
		} else {
			fputs(line, stderr);
		}
	}
	st = pclose(f);
	if (!any || !WIFEXITED(st) || WEXITSTATUS(st))
		printf("bench netbuf: backend=plug error=vm61-exit-%d env=qemu-tcg\n",
		       WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	fprintf(stderr, "bench netbuf: plug under vm61 took %.0f s (boot included)\n",
		(double)(mono_ns() - t0) / 1e9);
}

void bench_netbuf(void)
{
	static const struct params native = {
		.backend_name = "queue", .backend = NETBUF_QUEUE, .env = "native",
		.period_ns = 1000000, .ckpt_pages = 1000,
		.lat_ms = { 1000, 1000, 2000 }, .base_ms = 300, .flood_ms = 2000,
	};
	static const struct params vm = {
		.backend_name = "plug", .backend = NETBUF_PLUG, .env = "qemu-tcg",
		.period_ns = 2000000, .ckpt_pages = 64,
		.lat_ms = { 600, 600, 1200 }, .base_ms = 200, .flood_ms = 1000,
	};
	const char *in_vm = getenv("TANDEM_VM61");

	if (in_vm && *in_vm == '1') {
		measure(&vm);
		return;
	}
	measure(&native);
	if (!getenv("TANDEM_BENCH_NO_VM"))
		plug_in_vm();
}
