/*
 * bench.c - `make bench`: one line per figure, `bench NAME: key=value ...`,
 * each a ratio against a baseline measured side by side in the same run.
 * Figures are medians of at least 5 runs.  Usage: tandem-bench [NAME...]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../config/config.h"
#include "../domain/domain.h"
#include "../domain/memdom.h"
#include "../lib/channel.h"
#include "../lib/key.h"
#include "../lib/log.h"
#include "../lib/net.h"
#include "../lib/util.h"
#include "../primary/ship.h"
#include "bench.h"

#define RUNS 5

static char tmpdir[64];

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

double bench_median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static bool wanted(int argc, char **argv, const char *name)
{
	if (argc < 2)
		return true;
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], name))
			return true;
	return false;
}

/* ---- channel / ship: one TCP stream over loopback ------------------------ */

enum mode { RAW, AUTH, ENCRYPT, SHIP };

struct stream_args {
	enum mode mode;
	int fd;
	uint64_t bytes;
	uint8_t key[KEY_LEN];
};

static void channel_params_for(struct channel_params *p, uint32_t role, bool encrypt,
			       const uint8_t key[KEY_LEN])
{
	memset(p, 0, sizeof(*p));
	p->role = role;
	p->vm = "bench";
	p->encrypt = encrypt;
	memcpy(p->key, key, KEY_LEN);
}

/* Receiver process: read until `bytes` of payload arrived, then answer one byte. */
static void receiver(int fd, enum mode mode, uint64_t bytes, const uint8_t key[KEY_LEN])
{
	static uint8_t buf[1 << 20];
	uint64_t got = 0;
	char err[256];

	if (mode == RAW) {
		while (got < bytes) {
			ssize_t r = read(fd, buf, sizeof(buf));
			if (r <= 0)
				_exit(1);
			got += (uint64_t)r;
		}
	} else {
		struct channel_params p;
		struct channel *ch;
		struct channel_rec rec;

		channel_params_for(&p, ROLE_BACKUP, mode == ENCRYPT, key);
		if (channel_handshake(fd, &p, &ch, err, sizeof(err)))
			_exit(2);
		while (got < bytes) {
			if (channel_recv(ch, &rec))
				_exit(3);
			if (rec.type == REC_CKPT_PAGES)
				got += (uint64_t)rec.len - 16 - (rec.len - 16) / 4104 * 8;
			else if (rec.type == REC_CKPT_BLOB)
				got += rec.len - 16;
		}
		fd = channel_fd(ch);
	}
	if (write(fd, "k", 1) != 1)
		_exit(4);
	_exit(0);
}

/* One run: bytes of page payload from sender to a forked receiver; MB/s. */
static double stream_run(enum mode mode, uint64_t bytes, struct ckpt *ck)
{
	struct config_addr addr = { "127.0.0.1", 0 };
	struct sockaddr_in sa;
	socklen_t sl = sizeof(sa);
	uint8_t key[KEY_LEN];
	char err[256];
	int lfd, fd, status;
	uint64_t t0, sent = 0;
	pid_t pid;
	char c;

	memset(key, 7, sizeof(key));
	addr.port = (uint16_t)(30000 + getpid() % 20000);
	lfd = net_listen(&addr, err, sizeof(err));
	if (lfd < 0) {
		addr.port++;
		lfd = net_listen(&addr, err, sizeof(err));
	}
	if (lfd < 0) {
		fprintf(stderr, "bench: %s\n", err);
		exit(1);
	}
	getsockname(lfd, (struct sockaddr *)&sa, &sl);
	pid = fork();
	if (pid == 0) {
		int afd = accept(lfd, NULL, NULL);
		net_tune(afd, 0);
		receiver(afd, mode, bytes, key);
	}
	close(lfd);
	fd = net_connect(&addr, 2000, err, sizeof(err));
	if (fd < 0) {
		fprintf(stderr, "bench: %s\n", err);
		exit(1);
	}
	net_tune(fd, 0);
	if (mode == RAW) {
		t0 = now_ns();
		while (sent < bytes) {
			size_t n = (size_t)MIN((uint64_t)(ck->npages * CKPT_PAGE_SIZE), bytes - sent);
			if (write_full(fd, ck->pages, n))
				exit(1);
			sent += n;
		}
	} else {
		struct channel_params p;
		struct channel *ch;

		channel_params_for(&p, ROLE_PRIMARY, mode == ENCRYPT, key);
		if (channel_handshake(fd, &p, &ch, err, sizeof(err))) {
			fprintf(stderr, "bench: %s\n", err);
			exit(1);
		}
		t0 = now_ns();
		while (sent < bytes) {
			if (ship_ckpt(ch, ck, NULL))
				exit(1);
			sent += ck->npages * CKPT_PAGE_SIZE;
		}
		fd = dup(channel_fd(ch));
		/* keep ch alive until the receiver answers */
		if (read(fd, &c, 1) != 1)
			exit(1);
		{
			double secs = (double)(now_ns() - t0) / 1e9;
			channel_free(ch);
			close(fd);
			waitpid(pid, &status, 0);
			return (double)sent / 1e6 / secs;
		}
	}
	if (read(fd, &c, 1) != 1)
		exit(1);
	{
		double secs = (double)(now_ns() - t0) / 1e9;
		close(fd);
		waitpid(pid, &status, 0);
		return (double)sent / 1e6 / secs;
	}
}

static struct ckpt *random_ckpt(uint64_t pages)
{
	struct ckpt *c = ckpt_new(pages);
	uint8_t page[CKPT_PAGE_SIZE];
	uint32_t x = 1;

	c->guest_pages = pages * 4;
	for (uint64_t i = 0; i < pages; i++) {
		for (size_t j = 0; j < sizeof(page); j += 4) {
			x ^= x << 13; x ^= x >> 17; x ^= x << 5;
			memcpy(page + j, &x, 4);
		}
		ckpt_add_page(c, i * 3, page);
	}
	return c;
}

static void bench_channel(void)
{
	struct ckpt *ck = random_ckpt(256);
	uint64_t bytes = 1ull << 30;
	double raw[RUNS], auth[RUNS], enc[RUNS], r, a, e;

	for (int i = 0; i < RUNS; i++) {
		raw[i] = stream_run(RAW, bytes, ck);
		auth[i] = stream_run(AUTH, bytes, ck);
		enc[i] = stream_run(ENCRYPT, bytes, ck);
	}
	r = bench_median(raw, RUNS);
	a = bench_median(auth, RUNS);
	e = bench_median(enc, RUNS);
	printf("bench channel: raw_tcp_MBps=%.0f auth_MBps=%.0f encrypt_MBps=%.0f "
	       "ratio_auth=%.2f ratio_encrypt=%.2f\n", r, a, e, a / r, e / r);
	ckpt_free(ck);
}

static void bench_ship(void)
{
	struct ckpt *ck = random_ckpt(10000);
	uint64_t bytes = 10000ull * 4096 * 24;
	double raw[RUNS], ship[RUNS], r, s;

	for (int i = 0; i < RUNS; i++) {
		raw[i] = stream_run(RAW, bytes, ck);
		ship[i] = stream_run(AUTH, bytes, ck);
	}
	r = bench_median(raw, RUNS);
	s = bench_median(ship, RUNS);
	printf("bench ship: raw_tcp_MBps=%.0f ship_MBps=%.0f ratio=%.2f\n", r, s, s / r);
	ckpt_free(ck);
}

/* ---- pause vs memcpy ---------------------------------------------------- */

static void memdom_config(struct tandem_config *cfg, const char *extra)
{
	char text[1024], err[1024];

	snprintf(text, sizeof(text), "name = bench\ndomain = memdom\nreplication = 127.0.0.1:1\n%s", extra);
	if (config_parse("bench", text, strlen(text), cfg, err, sizeof(err))) {
		fprintf(stderr, "bench: %s", err);
		exit(1);
	}
}

static int sink_discard(void *arg, struct ckpt *c, bool final)
{
	(void)arg; (void)c; (void)final;
	return 0;
}

static void bench_pause(uint64_t want)
{
	struct tandem_config cfg;
	struct domain d = { .ops = &memdom_ops, .cfg = &cfg, .role = ROLE_PRIMARY };
	struct domain_sink sink = { sink_discard, NULL, NULL };
	struct ckpt *c = ckpt_new(want);
	double pause[RUNS], copy[RUNS];
	uint64_t pages = 0, mem_pages;
	uint8_t *src, *dst;
	char extra[256];

	mem_pages = want * 4 > 65536 ? want * 4 : 65536;
	/* sequential and unthrottled: after `want` steps, exactly `want` pages
	 * are dirty (the guest is larger than that, so it does not wrap) */
	snprintf(extra, sizeof(extra), "memory = %" PRIu64 "\nworkload-pattern = sequential\n"
		 "workload-rate = 0\n", mem_pages * 4096);
	memdom_config(&cfg, extra);
	if (d.ops->open(&d) || d.ops->start_protection(&d, &sink)) {
		fprintf(stderr, "bench pause: memdom failed\n");
		exit(1);
	}
	src = mmap(NULL, mem_pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dst = mmap(NULL, want * 2 * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(src, 1, mem_pages * 4096);
	memset(dst, 1, want * 2 * 4096);
	for (int i = 0; i < RUNS; i++) {
		uint64_t t0, t1;

		/* clear the dirty set, then let the guest dirty about `want` pages */
		d.ops->suspend(&d);
		ckpt_reset(c, 1);
		d.ops->capture(&d, c);
		d.ops->resume(&d);
		{
			uint64_t s0 = memdom_guest_steps(&d), end = now_ms() + 30000;
			while (memdom_guest_steps(&d) < s0 + want && now_ms() < end)
				usleep(1000);
		}
		ckpt_reset(c, 2);
		t0 = now_ns();
		d.ops->suspend(&d);
		d.ops->capture(&d, c);
		d.ops->resume(&d);
		t1 = now_ns();
		pause[i] = (double)(t1 - t0) / 1e6;
		pages = c->npages;
		/* baseline: memcpy of the same pages (same pfns) in the same run */
		t0 = now_ns();
		for (uint64_t j = 0; j < c->npages; j++)
			memcpy(dst + j * 4096, src + (c->pfns[j] % mem_pages) * 4096, 4096);
		t1 = now_ns();
		copy[i] = (double)(t1 - t0) / 1e6;
	}
	{
		double p = bench_median(pause, RUNS), m = bench_median(copy, RUNS);
		printf("bench pause: dirty_pages=%" PRIu64 " pause_ms=%.2f memcpy_ms=%.2f ratio=%.2f\n",
		       pages, p, m, p / m);
	}
	d.ops->close(&d);
	munmap(src, mem_pages * 4096);
	munmap(dst, want * 2 * 4096);
	ckpt_free(c);
}

/* ---- daemons: rate, overhead, failover ----------------------------------- */

static const char *write_config(const char *extra, int port)
{
	static char path[256];
	char keypath[256], err[256];
	FILE *f;

	snprintf(keypath, sizeof(keypath), "%s/key", tmpdir);
	if (access(keypath, F_OK) && key_generate(keypath, err, sizeof(err))) {
		fprintf(stderr, "bench: %s\n", err);
		exit(1);
	}
	snprintf(path, sizeof(path), "%s/bench.cfg", tmpdir);
	f = fopen(path, "w");
	fprintf(f, "name = bench\ndomain = memdom\nreplication = 127.0.0.1:%d\nkey-file = %s\n"
		"run-dir = %s/run\nnetbuf = none\nallow-unsafe-no-buffering = yes\n%s",
		port, keypath, tmpdir, extra);
	fclose(f);
	return path;
}

/* Daemons this run started, killed on every exit path. */
static pid_t spawned[8];
static int nspawned;

static void kill_spawned(void)
{
	for (int i = 0; i < nspawned; i++) {
		int st;
		kill(spawned[i], SIGCONT);
		if (kill(spawned[i], SIGKILL) == 0)
			waitpid(spawned[i], &st, 0);
	}
	nspawned = 0;
}

static pid_t spawn(const char *role, const char *cfg, const char *events)
{
	pid_t pid = fork();

	if (pid == 0) {
		char log[300];
		int fd;
		snprintf(log, sizeof(log), "%s/%s.log", tmpdir, role);
		fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
		dup2(fd, 2);
		if (events)
			setenv("TANDEM_TEST_LOG", events, 1);
		else
			unsetenv("TANDEM_TEST_LOG");
		execl("./tandem", "tandem", role, cfg, (char *)NULL);
		_exit(127);
	}
	if (pid > 0 && nspawned < (int)ARRAY_SIZE(spawned))
		spawned[nspawned++] = pid;
	return pid;
}

static const char *status_json(const char *role)
{
	static char buf[8192];
	char path[PATH_MAX];
	size_t n = 0;
	ssize_t r;
	int fd;

	snprintf(path, sizeof(path), "%s/run/bench.%s.sock", tmpdir, role);
	fd = net_unix_connect(path);
	if (fd >= 0 && write(fd, "json\n", 5) == 5)
		while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
			n += (size_t)r;
	buf[n] = '\0';
	if (fd >= 0)
		close(fd);
	return buf;
}

static double json_num(const char *js, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

static bool json_state(const char *role, const char *state)
{
	char pat[64];

	snprintf(pat, sizeof(pat), "\"state\":\"%s\"", state);
	return strstr(status_json(role), pat) != NULL;
}

static bool wait_until(bool (*fn)(const char *, const char *), const char *a, const char *b,
		       unsigned ms)
{
	uint64_t end = now_ms() + ms;

	while (now_ms() < end) {
		if (fn(a, b))
			return true;
		usleep(5000);
	}
	return false;
}

static void stop_pid(pid_t pid)
{
	int st;

	kill(pid, SIGCONT);
	kill(pid, SIGKILL);
	waitpid(pid, &st, 0);
}

/* Start a pair; returns false if protection did not start. */
static bool start_pair(const char *cfg, pid_t *pp, pid_t *bp, const char *pevents, const char *bevents)
{
	*bp = spawn("backup", cfg, bevents);
	if (!wait_until(json_state, "backup", "waiting", 5000))
		return false;
	*pp = spawn("primary", cfg, pevents);
	return wait_until(json_state, "primary", "protecting", 20000);
}

static void bench_rate(void)
{
	double hz[RUNS];
	int port = 31000 + getpid() % 1000;

	for (int i = 0; i < RUNS; i++) {
		const char *cfg = write_config("interval = 10ms\nmemory = 64M\nworkload-pattern = random\n"
					       "workload-rate = 100000\n", port + i);
		pid_t p, b;

		if (!start_pair(cfg, &p, &b, NULL, NULL)) {
			fprintf(stderr, "bench rate: protection did not start\n");
			exit(1);
		}
		sleep(2);
		hz[i] = json_num(status_json("primary"), "achieved_hz");
		stop_pid(p);
		stop_pid(b);
	}
	printf("bench rate: interval_ms=10 dirty_pages_per_epoch=1000 achieved_hz=%.1f target_hz=100 ratio=%.2f\n",
	       bench_median(hz, RUNS), bench_median(hz, RUNS) / 100.0);
}

static double steps_per_s(struct domain *d)
{
	uint64_t s0 = memdom_guest_steps(d), t0 = now_ns(), s1;

	usleep(1500000);
	s1 = memdom_guest_steps(d);
	return (double)(s1 - s0) / ((double)(now_ns() - t0) / 1e9);
}

static double guest_steps_from_status(void)
{
	const char *js = status_json("primary");
	const char *p = strstr(js, "step ");

	return p ? strtod(p + 5, NULL) : -1;
}

static void bench_overhead(void)
{
	double ratio[RUNS];
	int port = 32000 + getpid() % 1000;
	const char *extra = "interval = 25ms\nmemory = 64M\nworkload-pattern = hotset\nhotset = 4M\n"
			    "workload-rate = 0\n";

	for (int i = 0; i < RUNS; i++) {
		struct tandem_config cfg;
		struct domain d = { .ops = &memdom_ops, .cfg = &cfg, .role = ROLE_PRIMARY };
		double unprot, prot, s0, s1;
		uint64_t t0;
		pid_t p, b;

		memdom_config(&cfg, extra);
		if (d.ops->open(&d)) {
			fprintf(stderr, "bench overhead: memdom failed\n");
			exit(1);
		}
		unprot = steps_per_s(&d);
		d.ops->close(&d);
		if (!start_pair(write_config(extra, port + i), &p, &b, NULL, NULL)) {
			fprintf(stderr, "bench overhead: protection did not start\n");
			exit(1);
		}
		s0 = guest_steps_from_status();
		t0 = now_ns();
		usleep(1500000);
		s1 = guest_steps_from_status();
		prot = (s1 - s0) / ((double)(now_ns() - t0) / 1e9);
		ratio[i] = prot / unprot;
		stop_pid(p);
		stop_pid(b);
	}
	printf("bench overhead: interval_ms=25 workload=hotset-4M ratio=%.2f\n", bench_median(ratio, RUNS));
}

static void bench_failover(void)
{
	double over[RUNS], detect[RUNS], act[RUNS];
	int port = 33000 + getpid() % 1000;
	char events[300];

	snprintf(events, sizeof(events), "%s/backup.events", tmpdir);
	for (int i = 0; i < RUNS; i++) {
		const char *cfg = write_config("interval = 25ms\ntimeout = 1s\nmemory = 16M\n", port + i);
		pid_t p, b;
		FILE *f;
		char line[256];

		unlink(events);
		if (!start_pair(cfg, &p, &b, NULL, events)) {
			fprintf(stderr, "bench failover: protection did not start\n");
			exit(1);
		}
		usleep(500000);
		kill(p, SIGSTOP);	/* the host goes silent: no FIN, nothing heard */
		if (!wait_until(json_state, "backup", "active", 10000)) {
			fprintf(stderr, "bench failover: no activation\n");
			exit(1);
		}
		f = fopen(events, "r");
		while (f && fgets(line, sizeof(line), f)) {
			double h, a;
			if (sscanf(line, "failover heard_to_running_ms=%lf activate_ms=%lf", &h, &a) == 2) {
				over[i] = h - 1000;
				detect[i] = h - a;
				act[i] = a;
			}
		}
		if (f)
			fclose(f);
		stop_pid(p);
		stop_pid(b);
	}
	printf("bench failover: timeout_ms=1000 detect_ms=%.1f activate_ms=%.1f over_timeout_ms=%.1f\n",
	       bench_median(detect, RUNS), bench_median(act, RUNS), bench_median(over, RUNS));
}

int main(int argc, char **argv)
{
	char cmd[200];

	signal(SIGPIPE, SIG_IGN);
	atexit(kill_spawned);
	log_set_level(LOG_LVL_ERROR);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/tandem-bench.XXXXXX");
	if (!mkdtemp(tmpdir))
		return 1;
	if (wanted(argc, argv, "channel"))
		bench_channel();
	if (wanted(argc, argv, "pause")) {
		bench_pause(10000);
		bench_pause(100000);
	}
	if (wanted(argc, argv, "ship"))
		bench_ship();
	if (wanted(argc, argv, "rate"))
		bench_rate();
	if (wanted(argc, argv, "overhead"))
		bench_overhead();
	if (wanted(argc, argv, "failover"))
		bench_failover();
	if (wanted(argc, argv, "netbuf"))
		bench_netbuf();
	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd) == 0 ? 0 : 1;
}
