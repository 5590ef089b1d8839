/*
 * test_netbuf.c - packet-level tests of the output-buffering backends on
 * real kernel paths.
 *
 * Each test builds three network namespaces of its own: "guest" (eth0,
 * the sender), "host" (the test process itself after unshare: the vif, a
 * bridge, and the buffering under test) and "observer" (eth0 behind the
 * bridge, with UDP receivers and an ARP capture):
 *
 *   guest eth0 <-veth-> vif --[buffer]--> br0 <--> h1 <-veth-> observer eth0
 *
 * The guest and observer namespaces belong to two child processes that
 * only wait; everything dies with the test's process group, so a failed
 * test leaves nothing on the machine.  Names carry the pid.
 *
 * `plug` tests skip (with the reason) where the kernel has no sch_plug;
 * netbuf_vm61_plug runs them under Debian's 6.1 kernel, where it has.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../buffering/netbuf.h"
#include "test.h"

#define MAX_SEQ 256

struct topo {
	pid_t guest, observer;
	char vif[IFNAMSIZ];
	int g4, g6, graw;		/* guest senders */
	int o4, o6, oarp;		/* observer receivers */
	int gindex;
	/* what the observer got, in arrival order: kind<<16 | seq */
	unsigned got[4096];
	size_t ngot;
};

static const uint8_t guest_mac[6] = { 0x02, 0x77, 0, 0, 0, 0x02 };

enum { K4 = 1, K6 = 2, KARP = 3 };


/* Output of a command (first 4 KiB). */
static const char *sh_out(const char *cmd)
{
	static char buf[4096];
	FILE *f = popen(cmd, "r");
	size_t n = 0;

	buf[0] = 0;
	if (!f)
		return buf;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	pclose(f);
	return buf;
}

/* A child that sits in a fresh network namespace until killed. */
static pid_t ns_child(void)
{
	int p[2];
	char c;
	pid_t pid;

	ASSERT(pipe(p) == 0);
	pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNET) < 0)
			_exit(1);
		if (write(p[1], "x", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	ASSERT(read(p[0], &c, 1) == 1);
	close(p[0]);
	return pid;
}

/* A socket created inside pid's network namespace. */
static int socket_in(pid_t pid, int domain, int type, int proto)
{
	char path[64];
	int self, ns, fd;

	self = open("/proc/self/ns/net", O_RDONLY);
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
	ns = open(path, O_RDONLY);
	ASSERT(self >= 0 && ns >= 0);
	ASSERT(setns(ns, CLONE_NEWNET) == 0);
	fd = socket(domain, type, proto);
	ASSERT(setns(self, CLONE_NEWNET) == 0);
	close(ns);
	close(self);
	ASSERT(fd >= 0);
	return fd;
}

static void topo_setup(struct topo *t)
{
	struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons(7777) };
	struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons(7777) };
	struct sockaddr_ll ll = { .sll_family = AF_PACKET };
	char g[32], o[32];
	int one = 1;

	memset(t, 0, sizeof(*t));
	t->guest = ns_child();
	t->observer = ns_child();
	ASSERT(unshare(CLONE_NEWNET) == 0);
	snprintf(t->vif, sizeof(t->vif), "tv%d", (int)getpid());
	snprintf(g, sizeof(g), "nsenter -t %d -n", (int)t->guest);
	snprintf(o, sizeof(o), "nsenter -t %d -n", (int)t->observer);
	test_sh("ip link set lo up && ip link add br0 type bridge && ip link set br0 up");
	test_sh("ip link add %s type veth peer name eth0 netns %d", t->vif, (int)t->guest);
	test_sh("ip link add h1 type veth peer name eth0 netns %d", (int)t->observer);
	test_sh("ip link set %s master br0 && ip link set %s up && ip link set h1 master br0 "
	   "&& ip link set h1 up", t->vif, t->vif);
	test_sh("echo 0 > /proc/sys/net/ipv6/conf/br0/accept_dad 2>/dev/null; true");
	test_sh("%s sh -c 'echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad; "
	   "echo 0 > /proc/sys/net/ipv6/conf/default/router_solicitations'", g);
	test_sh("%s sh -c 'echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad'", o);
	test_sh("%s ip link set eth0 address 02:77:00:00:00:02", g);
	test_sh("%s ip link set eth0 address 02:77:00:00:00:03", o);
	test_sh("%s ip addr add 10.77.0.2/24 dev eth0 && %s ip addr add fd77::2/64 dev eth0 nodad "
	   "&& %s ip link set eth0 up && %s ip link set lo up", g, g, g, g);
	test_sh("%s ip addr add 10.77.0.3/24 dev eth0 && %s ip addr add fd77::3/64 dev eth0 nodad "
	   "&& %s ip link set eth0 up && %s ip link set lo up", o, o, o, o);
	/* Static neighbours: IP tests need no ARP/ND, the ARP test makes its own. */
	test_sh("%s ip neigh replace 10.77.0.3 lladdr 02:77:00:00:00:03 dev eth0 nud permanent", g);
	test_sh("%s ip neigh replace fd77::3 lladdr 02:77:00:00:00:03 dev eth0 nud permanent", g);

	t->o4 = socket_in(t->observer, AF_INET, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	ASSERT(bind(t->o4, (struct sockaddr *)&a4, sizeof(a4)) == 0);
	t->o6 = socket_in(t->observer, AF_INET6, SOCK_DGRAM | SOCK_NONBLOCK, 0);
	setsockopt(t->o6, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	ASSERT(bind(t->o6, (struct sockaddr *)&a6, sizeof(a6)) == 0);
	t->oarp = socket_in(t->observer, AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, htons(ETH_P_ARP));
	t->g4 = socket_in(t->guest, AF_INET, SOCK_DGRAM, 0);
	t->g6 = socket_in(t->guest, AF_INET6, SOCK_DGRAM, 0);
	t->graw = socket_in(t->guest, AF_PACKET, SOCK_RAW, htons(ETH_P_ARP));
	t->gindex = 2;	/* eth0 in a fresh namespace: lo is 1 */
	ll.sll_ifindex = t->gindex;
	ll.sll_protocol = htons(ETH_P_ARP);
	ASSERT(bind(t->graw, (struct sockaddr *)&ll, sizeof(ll)) == 0);
	/* Wait until the bridge forwards (STP off: immediately, but be sure). */
	test_sleep_ms(50);
}

/* The guest sends one packet of kind with sequence number seq. */
static void gsend(struct topo *t, int kind, unsigned seq, size_t size)
{
	uint8_t buf[1500] = { 0 };

	if (size < 8)
		size = 8;
	memcpy(buf, &seq, sizeof(seq));
	if (kind == K4) {
		struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons(7777) };
		inet_pton(AF_INET, "10.77.0.3", &d.sin_addr);
		ASSERT(sendto(t->g4, buf, size, 0, (struct sockaddr *)&d, sizeof(d)) == (ssize_t)size);
	} else if (kind == K6) {
		struct sockaddr_in6 d = { .sin6_family = AF_INET6, .sin6_port = htons(7777) };
		inet_pton(AF_INET6, "fd77::3", &d.sin6_addr);
		ASSERT(sendto(t->g6, buf, size, 0, (struct sockaddr *)&d, sizeof(d)) == (ssize_t)size);
	} else {
		/* ARP request "who has 10.78.x.y" (seq in the target address). */
		uint8_t f[42];
		struct sockaddr_ll ll = { .sll_family = AF_PACKET, .sll_halen = 6 };

		memset(f, 0xff, 6);
		memcpy(f + 6, guest_mac, 6);
		f[12] = 0x08; f[13] = 0x06;
		f[14] = 0; f[15] = 1; f[16] = 0x08; f[17] = 0; f[18] = 6; f[19] = 4;
		f[20] = 0; f[21] = 1;
		memcpy(f + 22, guest_mac, 6);
		f[28] = 10; f[29] = 77; f[30] = 0; f[31] = 2;
		memset(f + 32, 0, 6);
		f[38] = 10; f[39] = 78; f[40] = (uint8_t)(seq >> 8); f[41] = (uint8_t)seq;
		ll.sll_ifindex = t->gindex;
		ll.sll_protocol = htons(ETH_P_ARP);
		memset(ll.sll_addr, 0xff, 6);
		ASSERT(sendto(t->graw, f, sizeof(f), 0, (struct sockaddr *)&ll, sizeof(ll)) == 42);
	}
}

/* Collect what has reached the observer so far. */
static void collect(struct topo *t)
{
	uint8_t buf[2048];
	ssize_t n;

	while ((n = recv(t->o4, buf, sizeof(buf), 0)) >= 4 && t->ngot < 4096) {
		unsigned s;
		memcpy(&s, buf, 4);
		t->got[t->ngot++] = K4 << 16 | s;
	}
	while ((n = recv(t->o6, buf, sizeof(buf), 0)) >= 4 && t->ngot < 4096) {
		unsigned s;
		memcpy(&s, buf, 4);
		t->got[t->ngot++] = K6 << 16 | s;
	}
	while ((n = recv(t->oarp, buf, sizeof(buf), 0)) >= 28 && t->ngot < 4096) {
		/* Only our requests (target 10.78.x.y from the guest's MAC). */
		if (buf[24] == 10 && buf[25] == 78 && !memcmp(buf + 8, guest_mac, 6))
			t->got[t->ngot++] = KARP << 16 | (unsigned)(buf[26] << 8 | buf[27]);
	}
}

static size_t count_kind(struct topo *t, int kind)
{
	size_t n = 0;

	collect(t);
	for (size_t i = 0; i < t->ngot; i++)
		n += (int)(t->got[i] >> 16) == kind;
	return n;
}

/* The observer's packets of kind are exactly first..last, in order. */
static void expect_kind(struct topo *t, int kind, unsigned first, unsigned last)
{
	unsigned want = first;

	collect(t);
	for (size_t i = 0; i < t->ngot; i++) {
		if ((int)(t->got[i] >> 16) != kind)
			continue;
		if ((t->got[i] & 0xffff) != want)
			FAILF("kind %d: got seq %u, expected %u (order or leak)", kind,
			      t->got[i] & 0xffff, want);
		want++;
	}
	if (want != last + 1)
		FAILF("kind %d: got up to %u, expected %u", kind, want - 1, last);
}

/* Nothing new reaches the observer during ms (a short window). */
static void expect_quiet(struct topo *t, unsigned ms)
{
	size_t before;

	collect(t);
	before = t->ngot;
	test_sleep_ms(ms);
	collect(t);
	if (t->ngot != before)
		FAILF("%zu packet(s) left before their release (first: kind %u seq %u)",
		      t->ngot - before, t->got[before] >> 16, t->got[before] & 0xffff);
}

static struct tandem_config test_cfg(int kind, uint64_t limit)
{
	struct tandem_config c;

	memset(&c, 0, sizeof(c));
	c.netbuf = kind;
	c.buffer_limit = limit;
	snprintf(c.name, sizeof(c.name), "t");
	return c;
}

/* Attach, or skip the test when the kernel lacks what the backend needs. */
static int attach_or_skip(struct netbuf *nb, const struct tandem_config *cfg, const char *vif)
{
	memset(nb, 0, sizeof(*nb));
	nb->cfg = cfg;
	nb->ops = netbuf_ops_for(cfg);
	ASSERT(nb->ops);
	return nb->ops->attach(nb, vif);
}

#define ATTACH(nb, cfg, vif) do { \
	int r_ = attach_or_skip(nb, cfg, vif); \
	if (r_ == -ENOTSUP && (cfg)->netbuf == NETBUF_PLUG) \
		test_skip("this kernel has no sch_plug (it runs in netbuf_vm61_plug)"); \
	ASSERT_EQ(r_, 0); } while (0)

/* Everything the backend may have made for vif is gone. */
static void expect_clean(const char *vif)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "ip -o link show 2>/dev/null | grep -E 'tn[dci]-%s' ; true", vif);
	if (*sh_out(cmd))
		FAILF("devices left behind: %s", sh_out(cmd));
	snprintf(cmd, sizeof(cmd), "tc qdisc show dev %s | grep -E 'ingress|plug'; true", vif);
	if (*sh_out(cmd))
		FAILF("qdisc left behind on %s: %s", vif, sh_out(cmd));
	snprintf(cmd, sizeof(cmd), "tc qdisc show | grep plug; true");
	if (*sh_out(cmd))
		FAILF("plug qdisc left behind: %s", sh_out(cmd));
	snprintf(cmd, sizeof(cmd),
		 "(iptables -w -t raw -S; ip6tables -w -t raw -S) 2>/dev/null | grep -i tandem; true");
	if (*sh_out(cmd))
		FAILF("rules left behind: %s", sh_out(cmd));
}

/* ---- shared scenarios ------------------------------------------------- */

/* Epoch N's packets (IPv4, kind) leave only at release(N), in order. */
static int scenario_epochs(int backend, int kind)
{
	struct tandem_config cfg = test_cfg(backend, 1 << 20);
	struct netbuf nb;
	struct topo t;

	topo_setup(&t);
	ATTACH(&nb, &cfg, t.vif);
	/* Before any close: held (the current epoch is open). */
	for (unsigned s = 1; s <= 5; s++)
		gsend(&t, kind, s, 100);
	ASSERT_EQ(nb.ops->close_epoch(&nb, 1), 0);
	for (unsigned s = 6; s <= 10; s++)
		gsend(&t, kind, s, 100);
	expect_quiet(&t, 150);
	ASSERT_EQ(count_kind(&t, kind), 0);
	ASSERT_EQ(nb.ops->release(&nb, 0), 0);	/* an older ack: nothing */
	expect_quiet(&t, 100);
	ASSERT_EQ(nb.ops->release(&nb, 1), 0);
	ASSERT(WAIT_FOR(count_kind(&t, kind) >= 5, 2000));
	expect_quiet(&t, 150);
	expect_kind(&t, kind, 1, 5);
	ASSERT_EQ(nb.ops->close_epoch(&nb, 2), 0);
	ASSERT_EQ(nb.ops->release(&nb, 2), 0);
	ASSERT(WAIT_FOR(count_kind(&t, kind) >= 10, 2000));
	expect_kind(&t, kind, 1, 10);
	if (nb.ops->counters) {
		struct netbuf_counters c;
		nb.ops->counters(&nb, &c);
		ASSERT(c.released_packets >= 10);
		ASSERT_EQ(c.epochs_held, 0);
	}
	/* Clean stop: what is open goes out, then everything is removed. */
	gsend(&t, kind, 11, 100);
	expect_quiet(&t, 100);
	ASSERT_EQ(nb.ops->release_all(&nb), 0);
	ASSERT(WAIT_FOR(count_kind(&t, kind) >= 11, 2000));
	expect_kind(&t, kind, 1, 11);
	nb.ops->detach(&nb);
	expect_clean(t.vif);
	return TEST_OK;
}

/* buffer-limit: what does not fit is dropped and counted, never let out. */
static int scenario_overflow(int backend)
{
	struct tandem_config cfg = test_cfg(backend, 8000);
	struct netbuf_counters c;
	struct netbuf nb;
	struct topo t;
	size_t got;

	topo_setup(&t);
	/* Counts below are of this test's packets only: the guest's own IPv6
	 * chatter (MLD, ND) would be held too and take room. */
	test_sh("nsenter -t %d -n sh -c 'echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6'",
		(int)t.guest);
	ATTACH(&nb, &cfg, t.vif);
	for (unsigned s = 1; s <= 40; s++)
		gsend(&t, K4, s, 1000);
	ASSERT(WAIT_FOR((nb.ops->counters(&nb, &c), c.dropped_packets >= 30), 2000));
	expect_quiet(&t, 150);
	ASSERT_EQ(count_kind(&t, K4), 0);
	nb.ops->counters(&nb, &c);
	printf("  held %llu, dropped %llu\n", (unsigned long long)c.held_packets,
	       (unsigned long long)c.dropped_packets);
	ASSERT(c.held_packets >= 1 && c.held_packets <= 8);
	ASSERT_EQ(c.held_packets + c.dropped_packets, 40);
	ASSERT_EQ(nb.ops->close_epoch(&nb, 1), 0);
	ASSERT_EQ(nb.ops->release(&nb, 1), 0);
	ASSERT(WAIT_FOR(count_kind(&t, K4) >= 1, 2000));
	expect_quiet(&t, 150);
	got = count_kind(&t, K4);
	ASSERT(got >= 1 && got <= c.held_packets);
	expect_kind(&t, K4, 1, (unsigned)got);	/* the first ones, in order */
	nb.ops->detach(&nb);
	expect_clean(t.vif);
	return TEST_OK;
}

/* A daemon SIGKILLed while attached: the next attach cleans up and works. */
static int scenario_sigkill(int backend)
{
	struct tandem_config cfg = test_cfg(backend, 1 << 20);
	struct netbuf nb;
	struct topo t;
	int p[2], st;
	char c;
	pid_t pid;

	topo_setup(&t);
	ASSERT(pipe(p) == 0);
	pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		struct netbuf cnb;
		int r = attach_or_skip(&cnb, &cfg, t.vif);
		c = r == 0 ? 'y' : r == -ENOTSUP ? 's' : 'n';
		if (r == 0)
			cnb.ops->close_epoch(&cnb, 1);
		if (write(p[1], &c, 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	ASSERT(read(p[0], &c, 1) == 1);
	if (c == 's')
		test_skip("this kernel has no sch_plug (it runs in netbuf_vm61_plug)");
	ASSERT(c == 'y');
	gsend(&t, K4, 1, 100);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
	/* Fail-closed while nobody runs: nothing leaks. */
	gsend(&t, K4, 2, 100);
	expect_quiet(&t, 150);
	ATTACH(&nb, &cfg, t.vif);
	gsend(&t, K4, 3, 100);
	expect_quiet(&t, 100);
	ASSERT_EQ(nb.ops->close_epoch(&nb, 1), 0);
	ASSERT_EQ(nb.ops->release(&nb, 1), 0);
	ASSERT(WAIT_FOR(count_kind(&t, K4) >= 1, 2000));
	expect_quiet(&t, 100);
	collect(&t);
	/* Only packet 3 may appear: the dead run's packets were dropped. */
	ASSERT_EQ(t.ngot, 1);
	ASSERT_EQ(t.got[0], K4 << 16 | 3);
	nb.ops->detach(&nb);
	expect_clean(t.vif);
	/* Detach twice / attach again: idempotent. */
	ATTACH(&nb, &cfg, t.vif);
	ATTACH(&nb, &cfg, t.vif);	/* a second attach over the first's leftovers */
	nb.ops->detach(&nb);
	expect_clean(t.vif);
	return TEST_OK;
}

static int scenario_missing_vif(int backend)
{
	struct tandem_config cfg = test_cfg(backend, 1 << 20);
	struct netbuf nb;

	ASSERT(unshare(CLONE_NEWNET) == 0);
	ASSERT_EQ(attach_or_skip(&nb, &cfg, "vif999.0"), -ENODEV);
	ASSERT(!nb.attached);
	return TEST_OK;
}

/* ---- queue (this machine's kernel) --------------------------------- */

int test_netbuf_queue_ipv4_epochs(void) { return scenario_epochs(NETBUF_QUEUE, K4); }
int test_netbuf_queue_ipv6_held(void) { return scenario_epochs(NETBUF_QUEUE, K6); }
int test_netbuf_queue_arp_held(void) { return scenario_epochs(NETBUF_QUEUE, KARP); }
int test_netbuf_queue_overflow(void) { return scenario_overflow(NETBUF_QUEUE); }
int test_netbuf_queue_sigkill(void) { return scenario_sigkill(NETBUF_QUEUE); }
int test_netbuf_queue_missing_vif(void) { return scenario_missing_vif(NETBUF_QUEUE); }

/* Many closed epochs, cumulative acks that skip, mixed protocols in order. */
int test_netbuf_queue_many_epochs(void)
{
	struct tandem_config cfg = test_cfg(NETBUF_QUEUE, 1 << 20);
	struct netbuf nb;
	struct topo t;

	topo_setup(&t);
	ATTACH(&nb, &cfg, t.vif);
	for (unsigned e = 1; e <= 6; e++) {
		gsend(&t, K4, e, 200);
		gsend(&t, K6, e, 200);
		gsend(&t, KARP, e, 0);
		ASSERT_EQ(nb.ops->close_epoch(&nb, e), 0);
	}
	expect_quiet(&t, 150);
	ASSERT_EQ(nb.ops->release(&nb, 2), 0);
	ASSERT(WAIT_FOR(count_kind(&t, K4) >= 2 && count_kind(&t, K6) >= 2 &&
			count_kind(&t, KARP) >= 2, 2000));
	expect_quiet(&t, 150);
	expect_kind(&t, K4, 1, 2);
	expect_kind(&t, K6, 1, 2);
	expect_kind(&t, KARP, 1, 2);
	ASSERT_EQ(nb.ops->release(&nb, 5), 0);	/* skips 3 and 4 */
	ASSERT(WAIT_FOR(count_kind(&t, K4) >= 5 && count_kind(&t, K6) >= 5 &&
			count_kind(&t, KARP) >= 5, 2000));
	expect_quiet(&t, 150);
	expect_kind(&t, K4, 1, 5);
	expect_kind(&t, K6, 1, 5);
	expect_kind(&t, KARP, 1, 5);
	{
		struct netbuf_counters c;
		nb.ops->counters(&nb, &c);
		ASSERT_EQ(c.epochs_held, 1);
		ASSERT(c.held_packets >= 3);	/* + the guest's own IPv6 chatter (MLD) */
	}
	nb.ops->detach(&nb);	/* without release_all: epoch 6 is dropped */
	expect_quiet(&t, 150);
	expect_clean(t.vif);
	return TEST_OK;
}

/* ---- plug (needs sch_plug: Debian's 6.1 kernel, see below) ---------- */

int test_netbuf_plug_ipv4_epochs(void) { return scenario_epochs(NETBUF_PLUG, K4); }
int test_netbuf_plug_ipv6_held(void) { return scenario_epochs(NETBUF_PLUG, K6); }
int test_netbuf_plug_arp_held(void) { return scenario_epochs(NETBUF_PLUG, KARP); }
int test_netbuf_plug_overflow(void) { return scenario_overflow(NETBUF_PLUG); }
int test_netbuf_plug_sigkill(void) { return scenario_sigkill(NETBUF_PLUG); }
int test_netbuf_plug_missing_vif(void) { return scenario_missing_vif(NETBUF_PLUG); }

/* sch_plug holds one closed epoch: a second close before the ack fails. */
int test_netbuf_plug_one_closed_epoch(void)
{
	struct tandem_config cfg = test_cfg(NETBUF_PLUG, 1 << 20);
	struct netbuf nb;
	struct topo t;

	topo_setup(&t);
	ATTACH(&nb, &cfg, t.vif);
	ASSERT_EQ(nb.ops->max_closed_epochs, 1);
	ASSERT_EQ(nb.ops->close_epoch(&nb, 1), 0);
	ASSERT_EQ(nb.ops->close_epoch(&nb, 2), -EBUSY);
	ASSERT_EQ(nb.ops->release(&nb, 1), 0);
	ASSERT_EQ(nb.ops->close_epoch(&nb, 2), 0);
	nb.ops->detach(&nb);
	expect_clean(t.vif);
	return TEST_OK;
}

/*
 * A guest that sends through two interfaces (an HVM guest's vifD.N and
 * vifD.N-emu): both are buffered by one plug, given as "a,b"; an epoch's
 * packets from either leave only at its release, and detach removes
 * everything from both.
 */
int test_netbuf_plug_two_vifs(void)
{
	struct tandem_config cfg = test_cfg(NETBUF_PLUG, 1 << 20);
	struct netbuf nb;
	struct topo t;
	char g[32], o[32], emu[IFNAMSIZ], list[64];
	unsigned seen[2] = { 0, 0 };

	topo_setup(&t);
	snprintf(g, sizeof(g), "nsenter -t %d -n", (int)t.guest);
	snprintf(o, sizeof(o), "nsenter -t %d -n", (int)t.observer);
	snprintf(emu, sizeof(emu), "%.14se", t.vif);
	test_sh("ip link add %s type veth peer name eth1 netns %d && ip link set %s master br0 && "
		"ip link set %s up", emu, (int)t.guest, emu, emu);
	test_sh("%s ip link set eth1 address 02:77:00:00:00:12 && %s ip addr add 10.79.0.2/24 "
		"dev eth1 && %s ip link set eth1 up && %s ip neigh replace 10.79.0.3 lladdr "
		"02:77:00:00:00:03 dev eth1 nud permanent", g, g, g, g);
	test_sh("%s ip addr add 10.79.0.3/24 dev eth0", o);
	snprintf(list, sizeof(list), "%s, %s", t.vif, emu);
	ATTACH(&nb, &cfg, list);
	for (unsigned s = 1; s <= 5; s++) {
		struct sockaddr_in d = { .sin_family = AF_INET, .sin_port = htons(7777) };
		unsigned seq = 100 + s;

		gsend(&t, K4, s, 100);				/* through eth0: the vif */
		inet_pton(AF_INET, "10.79.0.3", &d.sin_addr);	/* through eth1: the -emu */
		ASSERT(sendto(t.g4, &seq, sizeof(seq), 0, (struct sockaddr *)&d, sizeof(d)) ==
		       sizeof(seq));
	}
	ASSERT_EQ(nb.ops->close_epoch(&nb, 1), 0);
	expect_quiet(&t, 200);
	ASSERT_EQ(count_kind(&t, K4), 0);
	ASSERT_EQ(nb.ops->release(&nb, 1), 0);
	ASSERT(WAIT_FOR(count_kind(&t, K4) >= 10, 2000));
	for (size_t i = 0; i < t.ngot; i++) {
		unsigned seq = t.got[i] & 0xffff;

		seen[seq > 100]++;
	}
	if (seen[0] != 5 || seen[1] != 5)
		FAILF("after the release: %u packets through the vif, %u through the other "
		      "(expected 5 and 5)", seen[0], seen[1]);
	nb.ops->detach(&nb);
	expect_clean(t.vif);
	expect_clean(emu);
	return TEST_OK;
}

/* netbuf = queue buffers one interface: a list is refused, nothing made. */
int test_netbuf_queue_two_vifs_refused(void)
{
	struct tandem_config cfg = test_cfg(NETBUF_QUEUE, 1 << 20);
	struct netbuf nb;
	struct topo t;
	char list[64];

	topo_setup(&t);
	snprintf(list, sizeof(list), "%s,%se", t.vif, t.vif);
	ASSERT_EQ(attach_or_skip(&nb, &cfg, list), -EINVAL);
	expect_clean(t.vif);
	return TEST_OK;
}

/*
 * The plug tests for real: under Debian's 6.1 kernel (QEMU TCG, the host's
 * root over 9p; tests/vm61/run.sh), where sch_plug exists.  Every plug
 * test must pass there, none may skip.
 */
int test_netbuf_vm61_plug(void)
{
	char cmd[512];
	const char *out;

	if (getenv("TANDEM_VM61"))
		test_skip("already inside the VM");
	if (access("tests/vm61/run.sh", X_OK) != 0)
		FAILF("tests/vm61/run.sh is missing");
	snprintf(cmd, sizeof(cmd),
		 "tests/vm61/run.sh --timeout 380 -- ./tests/tandem-test netbuf_plug_ 2>&1; "
		 "echo \"exit=$?\"");
	out = sh_out(cmd);
	printf("%s", out);
	ASSERT_STR_CONTAINS(out, "exit=0");
	ASSERT_STR_CONTAINS(out, " 0 failed, 0 skipped");
	return TEST_OK;
}
