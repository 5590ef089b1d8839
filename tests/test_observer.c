/*
 * test_observer.c - the observer invariant, end to end: real primary and
 * backup daemons protect a memdom guest that has a network interface and
 * sends sequence-numbered UDP packets (memdom-observer) to an observer,
 * through the same output buffering (`queue`) that guards a Xen vif.
 *
 * Topology, inside a network namespace of the test's own (the daemons
 * inherit it) plus three named namespaces (names carry the pid; removed at
 * exit):
 *
 *   tdoPIDprimary eth0 <-veth-> vpPID --[queue buffer]--+
 *   tdoPIDbackup  eth0 <-veth-> vbPID ------------------+-- br0 -- hoPID <-veth-> tdoPIDobs eth0
 *
 * Both guests have the same MAC and IP (10.78.0.2): after failover the VM
 * keeps its address.  The observer is 10.78.0.3; the guests know its MAC
 * statically, so no ARP is involved.  The config is one file for both
 * daemons: memdom-netns = tdoPID%r.
 *
 * Packet k carries step k * N (N = memdom-packet-steps) and is sent in the
 * guest's step k * N; checkpoint C records the guest's step S_C ("ckpt C
 * HASH step S_C" in the primary's TANDEM_TEST_LOG), so packet k belongs to
 * the first epoch C with S_C >= k * N.  What is checked:
 *
 *  - hold: with the backup frozen no ack arrives, and no packet of an epoch
 *    beyond the last ack reaches the observer while the guest runs on;
 *  - no packet arrives before an ack covering it was logged (one ack line of
 *    slack: the primary logs "ack N" just after releasing epoch N);
 *  - across failover every value arrives once and in order: no repeat, no
 *    reordering, nothing lost of an acknowledged epoch, the activated guest
 *    goes on with the packet after its checkpoint's.  The one gap allowed is
 *    the output of epochs the backup committed but whose ack the primary
 *    never received (A, act]: a UDP guest cannot resend it (a TCP guest
 *    would retransmit), and Remus-style output commit must not release it;
 *    the test reports its size.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "test.h"

#define VM "vm1"
#define OBS_IP "10.78.0.3"
#define OBS_PORT 7788
#define PACKET_STEPS 100	/* 20000 steps/s: 200 packets/s, ~4 per 20 ms epoch */
#define MAX_PKTS 65536
#define MAX_EPOCHS 65536
#define NO_ACK UINT64_MAX

enum { NS_PRIMARY, NS_BACKUP, NS_OBS, NS_N };

struct pkt {
	uint64_t k, step;
	uint64_t ack_seen;	/* last ack logged after it arrived; NO_ACK: unchecked */
};

static struct {
	char ns[NS_N][32];
	bool made[NS_N];
	char vifp[IFNAMSIZ], vifb[IFNAMSIZ], ho[IFNAMSIZ];
	int sock;
	const struct td *primary;	/* alive: record acks at arrival */
	struct pkt pk[MAX_PKTS];
	size_t n;
	unsigned malformed;
} T;

/* The primary's events: step of each checkpoint, acks in order. */
struct evlog {
	uint64_t step[MAX_EPOCHS];
	bool have[MAX_EPOCHS];
	uint64_t acks[MAX_EPOCHS];
	size_t nacks;
};


static void cleanup(void)
{
	char cmd[128];

	for (int i = 0; i < NS_N; i++) {
		if (!T.made[i])
			continue;
		snprintf(cmd, sizeof(cmd), "ip netns del %s 2>/dev/null", T.ns[i]);
		if (system(cmd) != 0)
			fprintf(stderr, "  (could not delete netns %s)\n", T.ns[i]);
		T.made[i] = false;
	}
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/*
 * Read every datagram waiting at the observer.  The last ack the primary
 * logged is read after the socket is empty, so every packet of the batch
 * arrived before that ack line was looked at.  Returns the packets added.
 */
static size_t collect(void)
{
	size_t first = T.n;
	uint8_t buf[64];
	ssize_t r;

	while ((r = recv(T.sock, buf, sizeof(buf), MSG_DONTWAIT)) >= 0) {
		uint64_t k, step;

		if (r != 32 || le32(buf) != 0x6f6d6474u || le32(buf + 4) != 1) {
			T.malformed++;
			continue;
		}
		k = le64(buf + 8);
		step = le64(buf + 16);
		if (step % PACKET_STEPS || step / PACKET_STEPS != k) {
			T.malformed++;
			continue;
		}
		if (T.n == MAX_PKTS)
			FAILF("more than %d packets", MAX_PKTS);
		T.pk[T.n].k = k;
		T.pk[T.n].step = step;
		T.pk[T.n].ack_seen = NO_ACK;
		T.n++;
	}
	if (errno != EAGAIN && errno != EWOULDBLOCK)
		FAILF("observer recv: %s", strerror(errno));
	if (T.n > first && T.primary) {
		uint64_t a = td_max_ack(T.primary);

		for (size_t i = first; i < T.n; i++)
			T.pk[i].ack_seen = a;
	}
	return T.n - first;
}

static uint64_t last_step(void)
{
	return T.n ? T.pk[T.n - 1].step : 0;
}

/* A UDP socket bound in the observer's namespace. */
static int observer_socket(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(OBS_PORT) };
	char path[64];
	int self, ns, fd, size = 8 << 20;

	snprintf(path, sizeof(path), "/run/netns/%s", T.ns[NS_OBS]);
	self = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	ns = open(path, O_RDONLY | O_CLOEXEC);
	ASSERT(self >= 0 && ns >= 0);
	ASSERT(setns(ns, CLONE_NEWNET) == 0);
	fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ASSERT(setns(self, CLONE_NEWNET) == 0);
	close(ns);
	close(self);
	ASSERT(fd >= 0);
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, sizeof(size)) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
	ASSERT(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	return fd;
}

/* The topology (see the top of the file); false when the host cannot. */
static bool topo_setup(void)
{
	int pid = (int)getpid();

	memset(&T, 0, sizeof(T));
	T.sock = -1;
	if (!td_own_netns())
		return false;
	if (system("ip netns list >/dev/null 2>&1") != 0)
		return false;
	snprintf(T.ns[NS_PRIMARY], sizeof(T.ns[0]), "tdo%dprimary", pid);
	snprintf(T.ns[NS_BACKUP], sizeof(T.ns[0]), "tdo%dbackup", pid);
	snprintf(T.ns[NS_OBS], sizeof(T.ns[0]), "tdo%dobs", pid);
	snprintf(T.vifp, sizeof(T.vifp), "vp%d", pid);
	snprintf(T.vifb, sizeof(T.vifb), "vb%d", pid);
	snprintf(T.ho, sizeof(T.ho), "ho%d", pid);
	atexit(cleanup);
	for (int i = 0; i < NS_N; i++) {
		test_sh("ip netns add %s", T.ns[i]);
		T.made[i] = true;
	}
	test_sh("ip link add br0 type bridge && ip link set br0 up");
	test_sh("ip link add %s type veth peer name eth0 netns %s", T.vifp, T.ns[NS_PRIMARY]);
	test_sh("ip link add %s type veth peer name eth0 netns %s", T.vifb, T.ns[NS_BACKUP]);
	test_sh("ip link add %s type veth peer name eth0 netns %s", T.ho, T.ns[NS_OBS]);
	test_sh("ip link set %s master br0 up && ip link set %s master br0 up && ip link set %s master br0 up",
	   T.vifp, T.vifb, T.ho);
	for (int i = 0; i < NS_N; i++) {
		const char *n = T.ns[i];

		/* IPv4 only: no router solicitations or MLD reports in the buffer. */
		test_sh("ip netns exec %s sh -c 'echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; "
		   "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6'", n);
		test_sh("ip -n %s link set lo up && ip -n %s link set eth0 address 02:78:00:00:00:0%d",
		   n, n, i == NS_OBS ? 3 : 2);
		test_sh("ip -n %s addr add 10.78.0.%d/24 dev eth0 && ip -n %s link set eth0 up",
		   n, i == NS_OBS ? 3 : 2, n);
		if (i != NS_OBS)
			test_sh("ip -n %s neigh replace " OBS_IP " lladdr 02:78:00:00:00:03 dev eth0 "
			   "nud permanent", n);
	}
	T.sock = observer_socket();
	return true;
}

static const char *observer_config(const char *extra)
{
	char text[1024];

	snprintf(text, sizeof(text),
		 "netbuf = queue\nallow-unsafe-no-buffering = no\nvif = %s\n"
		 "memdom-netns = tdo%d%%r\nmemdom-observer = " OBS_IP ":%d\n"
		 "memdom-packet-steps = %d\ntimeout = 2s\n%s",
		 T.vifp, (int)getpid(), OBS_PORT, PACKET_STEPS, extra ? extra : "");
	return td_config(VM, text);
}

static bool status_is(const char *role, const char *state)
{
	char buf[64];

	return !strcmp(td_str(td_status(VM, role), "state", buf, sizeof(buf)), state);
}

static double status_num(const char *role, const char *key)
{
	return td_num(td_status(VM, role), key);
}

/* The running guest's step, from its description in the status. */
static uint64_t guest_step(const char *role)
{
	char g[256];
	const char *s;

	td_str(td_status(VM, role), "guest", g, sizeof(g));
	s = strstr(g, "step ");
	return s ? strtoull(s + 5, NULL, 10) : 0;
}

static void fail_dump(struct td *p, struct td *b, const char *what)
{
	if (p)
		td_dump(p);
	if (b)
		td_dump(b);
	fprintf(stderr, "  observer: %zu packets, last k %" PRIu64 ", %u malformed\n", T.n,
		T.n ? T.pk[T.n - 1].k : 0, T.malformed);
	FAILF("%s", what);
}

/*
 * Backup, then primary.  Returns false (the caller skips) when the primary
 * exits for want of a kernel feature (exit status 4).
 */
static bool start_pair(struct td *p, struct td *b, const char *cfg, const char *pfault)
{
	td_start(b, "backup", cfg, NULL);
	if (!WAIT_FOR(status_is("backup", "waiting"), 15000))
		fail_dump(NULL, b, "backup did not come up");
	td_start(p, "primary", cfg, pfault);
	T.primary = p;
	if (!WAIT_FOR((collect(), status_num("primary", "last_acked_epoch") >= 1 || td_exited(p)),
		      15000))
		fail_dump(p, b, "protection did not start");
	if (td_exited(p) && WIFEXITED(p->status) && WEXITSTATUS(p->status) == 4) {
		td_dump(p);
		td_stop(b);
		return false;
	}
	return true;
}

static void load_events(const struct td *p, struct evlog *ev)
{
	FILE *f = fopen(p->events, "r");
	char line[256];

	memset(ev, 0, sizeof(*ev));
	ASSERT(f);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long e, s;

		if (sscanf(line, "ckpt %llu %*64s step %llu", &e, &s) == 2 && e < MAX_EPOCHS) {
			ev->step[e] = s;
			ev->have[e] = true;
		} else if (sscanf(line, "ack %llu", &e) == 1 && ev->nacks < MAX_EPOCHS) {
			ev->acks[ev->nacks++] = e;
		}
	}
	fclose(f);
}

static uint64_t ev_step(const struct evlog *ev, uint64_t epoch)
{
	if (epoch == 0)
		return 0;
	if (epoch >= MAX_EPOCHS || !ev->have[epoch])
		FAILF("the primary logged no step for checkpoint %" PRIu64, epoch);
	return ev->step[epoch];
}

/*
 * No packet arrived before an ack covering its step: it must be covered by
 * the last ack logged when it arrived or, since "ack N" is written just
 * after epoch N is released, by the next ack line.  Packets after `last`
 * (the activated checkpoint's last packet) can only come from the guest
 * activated on the backup, which may start sending before the test has
 * noticed the failover; they are checked by failover_and_check.
 */
static void check_arrivals_after_acks(const struct evlog *ev, uint64_t last)
{
	size_t checked = 0;

	for (size_t i = 0; i < T.n; i++) {
		uint64_t a = T.pk[i].ack_seen, bound = 0, next = 0;
		bool have_next = false;

		if (a == NO_ACK || T.pk[i].k > last)
			continue;
		for (size_t j = 0; j < ev->nacks; j++) {
			if (ev->acks[j] > a) {
				next = ev->acks[j];
				have_next = true;
				break;
			}
		}
		bound = ev_step(ev, have_next ? next : a);
		if (T.pk[i].step > bound)
			FAILF("packet %" PRIu64 " (step %" PRIu64 ") reached the observer when the last "
			      "ack was %" PRIu64 " (step %" PRIu64 "), before any ack covering it",
			      T.pk[i].k, T.pk[i].step, a, ev_step(ev, a));
		checked++;
	}
	ASSERT(checked > 0);
}

/*
 * Hold: freeze the backup so nothing is acknowledged; the guest runs on
 * and sends, and nothing beyond the last acknowledged epoch may reach the
 * observer.  Then let the backup go: the held packets follow, in order.
 */
static void check_hold(struct td *p, struct td *b)
{
	struct evlog *ev = malloc(sizeof(*ev));
	uint64_t s0, a, sa;

	ASSERT(ev);
	kill(b->pid, SIGSTOP);
	if (!WAIT_FOR((collect(), strstr(td_status(VM, "primary"), "\"stretched\":true") != NULL), 3000)) {
		kill(b->pid, SIGCONT);
		fail_dump(p, b, "epoch did not stretch with the backup frozen");
	}
	s0 = guest_step("primary");
	if (!WAIT_FOR((collect(), guest_step("primary") >= s0 + 20 * PACKET_STEPS), 3000)) {
		kill(b->pid, SIGCONT);
		fail_dump(p, b, "the guest did not run on while its output was held");
	}
	collect();
	/* The backup is frozen: the ack log is final for now. */
	a = td_max_ack(p);
	load_events(p, ev);
	sa = ev_step(ev, a);
	for (size_t i = 0; i < T.n; i++)
		if (T.pk[i].step > sa) {
			kill(b->pid, SIGCONT);
			FAILF("packet %" PRIu64 " (step %" PRIu64 ") left while the last ack was %" PRIu64
			      " (step %" PRIu64 "): output of an unacknowledged epoch", T.pk[i].k,
			      T.pk[i].step, a, sa);
		}
	printf("  hold: acked up to checkpoint %" PRIu64 " (step %" PRIu64 "), guest at step %"
	       PRIu64 ", observer at packet %" PRIu64 "\n", a, sa, guest_step("primary"),
	       T.n ? T.pk[T.n - 1].k : 0);
	ASSERT(guest_step("primary") >= sa + 20 * PACKET_STEPS);
	kill(b->pid, SIGCONT);
	if (!WAIT_FOR((collect(), last_step() > s0 + 20 * PACKET_STEPS), 5000))
		fail_dump(p, b, "held packets were not released after the backup came back");
	free(ev);
}

/*
 * After the primary died: the backup activates from checkpoint act; the
 * observer's sequence is checked against the primary's last logged ack A.
 * exact_last: the primary died on its ack path right after logging "ack
 * A", so the last packet it released is exactly the last one of epoch A;
 * otherwise it may have died between releasing an epoch and logging its
 * ack, and the last packet released may belong to an epoch up to act.
 */
static void failover_and_check(struct td *p, struct td *b, bool exact_last)
{
	struct evlog *ev = malloc(sizeof(*ev));
	uint64_t act = 0, a, lo, hi, x, gap;
	char act_hash[65], ckpt_hash[65];
	size_t first_b = SIZE_MAX;

	ASSERT(ev);
	T.primary = NULL;	/* its log is final; later packets are the backup's */
	if (!WAIT_FOR((collect(), status_is("backup", "active")), 10000))
		fail_dump(p, b, "backup did not activate");
	ASSERT_EQ(td_events(b, "activated", &act, act_hash), 1);
	ASSERT(td_ckpt_hash(p, act, ckpt_hash));
	if (strcmp(act_hash, ckpt_hash))
		FAILF("activated guest differs from checkpoint %" PRIu64, act);
	load_events(p, ev);
	a = td_max_ack(p);
	ASSERT(a <= act);
	lo = ev_step(ev, a) / PACKET_STEPS;
	hi = ev_step(ev, act) / PACKET_STEPS;
	/* The activated guest goes on sending from packet hi + 1. */
	if (!WAIT_FOR((collect(), last_step() >= (hi + 30) * PACKET_STEPS), 5000))
		fail_dump(p, b, "the activated guest's packets did not reach the observer");
	check_arrivals_after_acks(ev, hi);
	ASSERT_EQ(T.malformed, 0);

	/* Once each, in order; at most one gap, and only of output that was
	 * never released: epochs a+1..act. */
	for (size_t i = 1; i < T.n; i++) {
		uint64_t prev = T.pk[i - 1].k, cur = T.pk[i].k;

		if (cur <= prev)
			FAILF("packet %" PRIu64 " after packet %" PRIu64 ": %s", cur, prev,
			      cur == prev ? "seen twice" : "out of order");
		if (cur != prev + 1 && cur != hi + 1)
			FAILF("packets %" PRIu64 "..%" PRIu64 " lost (activated checkpoint %" PRIu64
			      " ends at packet %" PRIu64 ")", prev + 1, cur - 1, act, hi);
	}
	for (size_t i = 0; i < T.n; i++)
		if (T.pk[i].k == hi + 1)
			first_b = i;
	if (first_b == SIZE_MAX)
		FAILF("packet %" PRIu64 ", the first after checkpoint %" PRIu64 ", never arrived", hi + 1, act);
	if (first_b == 0)
		FAILF("nothing arrived from the guest before the failover");
	x = T.pk[first_b - 1].k;	/* the last packet the primary released */
	gap = hi - x;
	if (x < lo)
		FAILF("packets %" PRIu64 "..%" PRIu64 " of acknowledged checkpoint %" PRIu64
		      " never arrived", x + 1, lo, a);
	if (exact_last && x != lo)
		FAILF("the last packet before failover is %" PRIu64 ", but the last acknowledged "
		      "checkpoint %" PRIu64 " ends at packet %" PRIu64, x, a, lo);
	printf("  failover: %zu packets %" PRIu64 "..%" PRIu64 "; last ack %" PRIu64 " (packet %"
	       PRIu64 "), activated %" PRIu64 " (packet %" PRIu64 "), last released %" PRIu64
	       ", unreleased output of committed epochs: %" PRIu64 " packet(s)\n",
	       T.n, T.pk[0].k, T.pk[T.n - 1].k, a, lo, act, hi, x, gap);
	free(ev);
}

#define TOPO_OR_SKIP() do { if (!topo_setup()) \
	test_skip("needs root, ip netns and a private network namespace"); } while (0)
#define START_OR_SKIP(p, b, cfg, fault) do { if (!start_pair(p, b, cfg, fault)) \
	test_skip("the queue backend cannot run here (see the primary's log above)"); } while (0)

/* Protect, hold, release, SIGKILL the primary, fail over. */
int test_observer_protect_and_failover(void)
{
	struct td p, b;
	const char *cfg;

	TOPO_OR_SKIP();
	cfg = observer_config(NULL);
	START_OR_SKIP(&p, &b, cfg, NULL);
	if (!WAIT_FOR((collect(), status_num("primary", "last_acked_epoch") >= 25 && T.n >= 20), 15000))
		fail_dump(&p, &b, "no packets reached the observer");
	check_hold(&p, &b);
	if (!WAIT_FOR((collect(), status_num("primary", "last_acked_epoch") >= 60), 10000))
		fail_dump(&p, &b, "protection did not go on after the hold");
	collect();
	td_kill(&p, SIGKILL);
	failover_and_check(&p, &b, false);
	td_stop(&b);
	cleanup();
	return TEST_OK;
}

/* A primary killed by a fault point; the same invariant. */
static int primary_dies_at(const char *fault, bool exact_last)
{
	struct td p, b;
	const char *cfg;

	TOPO_OR_SKIP();
	cfg = observer_config(NULL);
	START_OR_SKIP(&p, &b, cfg, fault);
	if (!WAIT_FOR((collect(), td_exited(&p)), 15000))
		fail_dump(&p, &b, "fault point did not fire");
	ASSERT(WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGKILL);
	ASSERT(td_log_has(&p, "fired"));
	failover_and_check(&p, &b, exact_last);
	td_stop(&b);
	cleanup();
	return TEST_OK;
}

/* Dies just after releasing epoch N and logging "ack N". */
int test_observer_exit_after_release(void)
{
	return primary_dies_at("primary-exit-after-release@20", true);
}

/* Dies after shipping a checkpoint, before its ack: the backup activates
 * from a checkpoint whose output was never released. */
int test_observer_after_ship_before_ack(void)
{
	return primary_dies_at("after-ship-before-ack@20", false);
}

/* Dies in the middle of a capture. */
int test_observer_mid_capture(void)
{
	return primary_dies_at("mid-capture@20", false);
}
