/*
 * test_memdom.c - the memdom driver against the real kernel: dirty
 * tracking (userfaultfd WP-async + PAGEMAP_SCAN), SIGSTOP suspend,
 * commit and activation.  No mocks; small guests.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../domain/domain.h"
#include "../domain/memdom.h"
#include "../lib/log.h"
#include "../lib/wire.h"
#include "test.h"

#define MiB (1024ull * 1024)

struct side {
	struct tandem_config cfg;
	struct domain d;
};

static void side_init(struct side *s, int role, uint64_t memory, int pattern, uint64_t rate,
		      uint64_t hotset)
{
	memset(s, 0, sizeof(*s));
	if (getenv("MEMDOM_DEBUG"))
		log_set_level(LOG_LVL_DEBUG);
	snprintf(s->cfg.name, sizeof(s->cfg.name), "memdom-test");
	s->cfg.domain = DOMAIN_MEMDOM;
	s->cfg.memory = memory;
	s->cfg.workload_pattern = pattern;
	s->cfg.workload_rate = rate;
	s->cfg.hotset = hotset;
	s->d.ops = &memdom_ops;
	s->d.cfg = &s->cfg;
	s->d.role = role;
}

/* Open a side; returns -ENOTSUP (for test_skip) or asserts success. */
static int side_open(struct side *s)
{
	int rc = s->d.ops->open(&s->d);

	if (rc == -ENOTSUP)
		return rc;
	ASSERT_EQ(rc, 0);
	return 0;
}

static uint64_t now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

static char proc_state(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	p = strrchr(buf, ')');
	return p && p[1] && p[2] ? p[2] : 0;
}

/* A sink that commits every delivery into a backup-role memdom. */
struct commit_sink {
	struct domain *primary, *backup;
	unsigned deliveries, finals;
	uint64_t pages;
	bool final_hash_ok;
};

static int commit_deliver(void *arg, struct ckpt *c, bool final)
{
	struct commit_sink *cs = arg;
	uint8_t hp[32], hb[32];

	ASSERT_EQ(c->guest_pages, cs->backup->cfg->memory / 4096);
	ASSERT_EQ(!!(c->flags & CKPT_F_INITIAL), !final);
	ASSERT_EQ(cs->backup->ops->commit(cs->backup, c), 0);
	cs->deliveries++;
	cs->pages += c->npages;
	if (final) {
		/* The primary is suspended for the first checkpoint. */
		ASSERT_EQ(cs->primary->ops->guest_hash(cs->primary, hp), 0);
		ASSERT_EQ(cs->backup->ops->guest_hash(cs->backup, hb), 0);
		cs->final_hash_ok = memcmp(hp, hb, 32) == 0;
		cs->finals++;
	}
	return 0;
}

static int null_deliver(void *arg, struct ckpt *c, bool final)
{
	(void)arg;
	(void)c;
	(void)final;
	return 0;
}

static const struct domain_sink null_sink = { .deliver = null_deliver };

/* Protect primary p into backup b and check the first checkpoint matched. */
static void protect_into(struct side *p, struct side *b, struct commit_sink *cs)
{
	struct domain_sink sink = { .deliver = commit_deliver, .arg = cs };

	memset(cs, 0, sizeof(*cs));
	cs->primary = &p->d;
	cs->backup = &b->d;
	ASSERT_EQ(b->d.ops->prepare_standby(&b->d), 0);
	ASSERT_EQ(p->d.ops->start_protection(&p->d, &sink), 0);
	ASSERT_EQ(cs->finals, 1);
	ASSERT(cs->final_hash_ok);
	ASSERT(cs->pages >= p->cfg.memory / 4096);
}

/*
 * One epoch: suspend, hash the primary, capture, resume, commit into the
 * backup, and check the backup now hashes like the suspended primary.
 */
static void epoch(struct side *p, struct side *b, struct ckpt *c, uint64_t n)
{
	uint8_t hp[32], hb[32];

	ckpt_reset(c, n);
	ASSERT_EQ(p->d.ops->suspend(&p->d), 0);
	ASSERT_EQ(p->d.ops->guest_hash(&p->d, hp), 0);
	ASSERT_EQ(p->d.ops->capture(&p->d, c), 0);
	ASSERT_EQ(p->d.ops->resume(&p->d), 0);
	ASSERT_EQ(b->d.ops->commit(&b->d, c), 0);
	ASSERT_EQ(b->d.ops->guest_hash(&b->d, hb), 0);
	ASSERT(memcmp(hp, hb, 32) == 0);
}

/* Pages are in strictly increasing pfn order (address order, no repeats). */
static void assert_sorted(const struct ckpt *c)
{
	for (uint64_t i = 1; i < c->npages; i++)
		ASSERT(c->pfns[i - 1] < c->pfns[i]);
}

int test_memdom_tracking_exact(void)
{
	struct side p, b;
	struct commit_sink cs;
	struct ckpt *c = ckpt_new(256);
	uint64_t last_step = 0, nonzero = 0;

	side_init(&p, ROLE_PRIMARY, 16 * MiB, PATTERN_HOTSET, 0, 8 * MiB);
	side_init(&b, ROLE_BACKUP, 16 * MiB, PATTERN_HOTSET, 0, 8 * MiB);
	if (side_open(&p) == -ENOTSUP)
		test_skip("kernel lacks userfaultfd WP-async / PAGEMAP_SCAN");
	ASSERT_EQ(side_open(&b), 0);
	ASSERT(c);
	/* Small scan vectors and slices: every harvest needs several scans. */
	memdom_test_tune(&p.d, 7, 100);
	protect_into(&p, &b, &cs);
	ASSERT(cs.deliveries >= 4096 / 100 + 2);
	ASSERT_EQ(memdom_guest_steps(&b.d) > 0, 1);
	last_step = memdom_guest_steps(&b.d);

	for (uint64_t n = 1; n <= 20; n++) {
		uint64_t step;

		ASSERT(WAIT_FOR(memdom_guest_steps(&p.d) > last_step + 300, 3000));
		epoch(&p, &b, c, n);
		assert_sorted(c);
		ASSERT_EQ(memdom_state_step(c, &step), 0);
		ASSERT(step > last_step);
		/* One page per step; a step interrupted by the stop may add one. */
		ASSERT(c->npages > 0);
		ASSERT(c->npages <= step - last_step + 1);
		ASSERT(c->npages <= 2048);		/* the hot set */
		for (uint64_t i = 0; i < c->npages; i++)
			ASSERT(c->pfns[i] < 2048);
		nonzero += c->npages > 0;
		last_step = step;
	}
	ASSERT_EQ(nonzero, 20);
	p.d.ops->stop_protection(&p.d);
	ckpt_free(c);
	p.d.ops->close(&p.d);
	b.d.ops->close(&b.d);
	return TEST_OK;
}

int test_memdom_suspend_real(void)
{
	struct side p;
	char buf[256];
	pid_t pid;

	side_init(&p, ROLE_PRIMARY, 8 * MiB, PATTERN_RANDOM, 0, 4 * MiB);
	if (side_open(&p) == -ENOTSUP)
		test_skip("kernel lacks userfaultfd WP-async / PAGEMAP_SCAN");
	pid = memdom_guest_pid(&p.d);
	ASSERT(pid > 0);
	ASSERT(WAIT_FOR(memdom_guest_steps(&p.d) > 1000, 2000));
	for (int i = 0; i < 3; i++) {
		uint64_t s1, s2;

		ASSERT_EQ(p.d.ops->suspend(&p.d), 0);
		ASSERT_EQ(proc_state(pid), 'T');
		s1 = memdom_guest_steps(&p.d);
		test_sleep_ms(150);	/* a few epochs' worth of time, observed */
		s2 = memdom_guest_steps(&p.d);
		ASSERT_EQ(s1, s2);
		p.d.ops->describe(&p.d, buf, sizeof(buf));
		ASSERT_STR_CONTAINS(buf, "not a real workload");
		ASSERT_STR_CONTAINS(buf, "suspended");
		ASSERT_EQ(p.d.ops->resume(&p.d), 0);
		ASSERT(WAIT_FOR(memdom_guest_steps(&p.d) > s2, 2000));
	}
	p.d.ops->close(&p.d);
	ASSERT(WAIT_FOR(kill(pid, 0) < 0, 2000));
	return TEST_OK;
}

struct run_until_arg {
	struct domain *d;
	uint64_t step;
	int rc;
};

static void *run_until_thread(void *arg)
{
	struct run_until_arg *a = arg;

	a->rc = memdom_run_until(a->d, a->step, 5000);
	return NULL;
}

int test_memdom_activation_exact(void)
{
	struct side p, b;
	struct commit_sink cs;
	struct ckpt *c = ckpt_new(256);
	uint8_t committed[32], started[32], hp[32], hb[32];
	uint64_t s0, target, t0;

	side_init(&p, ROLE_PRIMARY, 16 * MiB, PATTERN_RANDOM, 50000, 4 * MiB);
	side_init(&b, ROLE_BACKUP, 16 * MiB, PATTERN_RANDOM, 50000, 4 * MiB);
	if (side_open(&p) == -ENOTSUP)
		test_skip("kernel lacks userfaultfd WP-async / PAGEMAP_SCAN");
	ASSERT_EQ(side_open(&b), 0);
	protect_into(&p, &b, &cs);
	for (uint64_t n = 1; n <= 5; n++) {
		uint64_t s = memdom_guest_steps(&p.d);

		ASSERT(WAIT_FOR(memdom_guest_steps(&p.d) > s + 500, 3000));
		epoch(&p, &b, c, n);
	}

	/* The primary runs on; the backup activates from the committed image. */
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, committed), 0);
	s0 = memdom_guest_steps(&b.d);
	ASSERT(s0 > 0);
	ASSERT_EQ(memdom_activated_hash(&b.d, started), -ENOENT);
	t0 = now_us();
	ASSERT_EQ(b.d.ops->activate(&b.d), 0);
	printf("  activation of a 16 MiB guest took %llu us\n",
	       (unsigned long long)(now_us() - t0));
	ASSERT(memdom_guest_pid(&b.d) > 0);
	ASSERT_EQ(memdom_activated_hash(&b.d, started), 0);
	ASSERT(memcmp(committed, started, 32) == 0);
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, hb), 0);
	ASSERT(memcmp(committed, hb, 32) == 0);
	ASSERT(memdom_guest_steps(&b.d) >= s0);
	ASSERT(WAIT_FOR(memdom_guest_steps(&b.d) > s0 + 100, 3000));

	/*
	 * Determinism: both guests stopped at the same step must be identical,
	 * although one ran from step 0 and the other from the checkpoint.
	 */
	/* Arm both stops at once (one thread each), well ahead of both. */
	target = memdom_guest_steps(&p.d);
	if (memdom_guest_steps(&b.d) > target)
		target = memdom_guest_steps(&b.d);
	target += 20000;
	{
		struct run_until_arg ra[2] = { { &p.d, target, -1 }, { &b.d, target, -1 } };
		pthread_t t[2];

		for (int i = 0; i < 2; i++)
			pthread_create(&t[i], NULL, run_until_thread, &ra[i]);
		for (int i = 0; i < 2; i++)
			pthread_join(t[i], NULL);
		ASSERT_EQ(ra[0].rc, 0);
		ASSERT_EQ(ra[1].rc, 0);
	}
	ASSERT_EQ(memdom_live_hash(&p.d, hp), 0);
	ASSERT_EQ(memdom_live_hash(&b.d, hb), 0);
	ASSERT(memcmp(hp, hb, 32) == 0);
	ASSERT(memcmp(hb, committed, 32) != 0);

	/* Both continue after resume. */
	ASSERT_EQ(b.d.ops->resume(&b.d), 0);
	ASSERT(WAIT_FOR(memdom_guest_steps(&b.d) > target, 2000));

	ckpt_free(c);
	p.d.ops->close(&p.d);
	b.d.ops->close(&b.d);
	return TEST_OK;
}

/* Fill c with one page per pfn in list (contents derived from the pfn). */
static void fill_pages(struct ckpt *c, const uint64_t *pfns, size_t n, uint8_t salt)
{
	uint8_t page[4096];

	for (size_t i = 0; i < n; i++) {
		memset(page, (int)(pfns[i] * 7 + salt), sizeof(page));
		ASSERT_EQ(ckpt_add_page(c, pfns[i], page), 0);
	}
}

int test_memdom_commit_rejects(void)
{
	struct side b;
	struct ckpt *c = ckpt_new(16);
	uint8_t h0[32], h1[32], h2[32], state[MEMDOM_STATE_LEN];
	const uint64_t npages = 8 * MiB / 4096;
	const uint64_t good[] = { 0, 5, 100, npages - 1 };
	const uint64_t bad[] = { 1, 2, npages };

	side_init(&b, ROLE_BACKUP, 8 * MiB, PATTERN_RANDOM, 0, 4 * MiB);
	ASSERT_EQ(side_open(&b), 0);
	ASSERT_EQ(b.d.ops->prepare_standby(&b.d), 0);
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, h0), 0);
	ASSERT_EQ(b.d.ops->activate(&b.d), -EINVAL);	/* nothing committed yet */

	/* A good initial round changes the image. */
	ckpt_reset(c, 0);
	c->flags = CKPT_F_INITIAL;
	c->guest_pages = npages;
	fill_pages(c, good, 4, 1);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), 0);
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, h1), 0);
	ASSERT(memcmp(h0, h1, 32) != 0);

	/* An out-of-range pfn after good ones: nothing applied. */
	ckpt_reset(c, 1);
	c->flags = CKPT_F_INITIAL;
	c->guest_pages = npages;
	fill_pages(c, bad, 3, 2);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), -EINVAL);
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, h2), 0);
	ASSERT(memcmp(h1, h2, 32) == 0);

	/* A wrong guest size. */
	ckpt_reset(c, 2);
	c->flags = CKPT_F_INITIAL;
	c->guest_pages = npages * 2;
	fill_pages(c, good, 2, 3);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), -EINVAL);

	/* A checkpoint (not an initial round) without state. */
	ckpt_reset(c, 3);
	c->guest_pages = npages;
	fill_pages(c, good, 2, 4);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), -EINVAL);

	/* Bad state: wrong length, wrong kind, wrong magic, wrong memory size. */
	memset(state, 0, sizeof(state));
	ASSERT_EQ(ckpt_set_state(c, STATE_VCPU, state, 8), 0);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), -EINVAL);
	ASSERT_EQ(ckpt_set_state(c, STATE_DEVICE, state, MEMDOM_STATE_LEN), 0);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), -EINVAL);
	ASSERT_EQ(ckpt_set_state(c, STATE_VCPU, state, MEMDOM_STATE_LEN), 0);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), -EINVAL);
	/* A well-formed state for a 16 MiB guest. */
	for (int i = 0; i < 8; i++)
		state[i] = (uint8_t)(MEMDOM_STATE_MAGIC >> (8 * i));
	state[8] = MEMDOM_STATE_VERSION;
	state[12] = PATTERN_RANDOM;
	state[18] = 0x00; state[19] = 0x01;	/* 16 MiB little-endian */
	ASSERT_EQ(ckpt_set_state(c, STATE_VCPU, state, MEMDOM_STATE_LEN), 0);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), -EINVAL);
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, h2), 0);
	ASSERT(memcmp(h1, h2, 32) == 0);

	/* The same state for the right size (8 MiB) is accepted. */
	state[18] = 0x80; state[19] = 0x00;
	ASSERT_EQ(ckpt_set_state(c, STATE_VCPU, state, MEMDOM_STATE_LEN), 0);
	ASSERT_EQ(b.d.ops->commit(&b.d, c), 0);
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, h2), 0);
	ASSERT(memcmp(h1, h2, 32) != 0);

	b.d.ops->discard(&b.d);
	ASSERT_EQ(b.d.ops->guest_hash(&b.d, h2), -ENOENT);
	ckpt_free(c);
	b.d.ops->close(&b.d);
	return TEST_OK;
}

/* Run one epoch of `steps` writes on pattern and return the captured ckpt. */
static struct ckpt *pattern_epoch(struct side *p, uint64_t steps, uint64_t *delta)
{
	struct ckpt *c = ckpt_new(256);
	uint64_t s0, s1;

	ASSERT(c);
	ASSERT_EQ(p->d.ops->start_protection(&p->d, &null_sink), 0);
	/* Drain what built up since the first checkpoint. */
	ASSERT_EQ(p->d.ops->suspend(&p->d), 0);
	ASSERT_EQ(p->d.ops->capture(&p->d, c), 0);
	ASSERT_EQ(memdom_state_step(c, &s0), 0);
	ASSERT_EQ(p->d.ops->resume(&p->d), 0);
	ASSERT(WAIT_FOR(memdom_guest_steps(&p->d) >= s0 + steps, 5000));
	ckpt_reset(c, 1);
	ASSERT_EQ(p->d.ops->suspend(&p->d), 0);
	ASSERT_EQ(p->d.ops->capture(&p->d, c), 0);
	ASSERT_EQ(memdom_state_step(c, &s1), 0);
	ASSERT_EQ(p->d.ops->resume(&p->d), 0);
	assert_sorted(c);
	*delta = s1 - s0;
	ASSERT(c->npages > 0 && c->npages <= *delta + 1);
	return c;
}

int test_memdom_patterns(void)
{
	const uint64_t npages = 32 * MiB / 4096, hot = 1 * MiB / 4096;
	struct side p;
	struct ckpt *c;
	uint64_t d, gaps;

	/* Sequential: one contiguous run (modulo wrap-around), one page per step. */
	side_init(&p, ROLE_PRIMARY, 32 * MiB, PATTERN_SEQUENTIAL, 20000, 1 * MiB);
	if (side_open(&p) == -ENOTSUP)
		test_skip("kernel lacks userfaultfd WP-async / PAGEMAP_SCAN");
	c = pattern_epoch(&p, 2000, &d);
	ASSERT(d < npages);
	ASSERT(c->npages >= d && c->npages <= d + 1);
	gaps = 0;
	for (uint64_t i = 1; i < c->npages; i++)
		gaps += c->pfns[i] != c->pfns[i - 1] + 1;
	ASSERT(gaps == 0 || (gaps == 1 && c->pfns[0] == 0 && c->pfns[c->npages - 1] == npages - 1));
	ckpt_free(c);
	p.d.ops->close(&p.d);

	/* Random: spread over the whole guest, few repeats. */
	side_init(&p, ROLE_PRIMARY, 32 * MiB, PATTERN_RANDOM, 20000, 1 * MiB);
	ASSERT_EQ(side_open(&p), 0);
	c = pattern_epoch(&p, 2000, &d);
	ASSERT(c->npages * 10 >= d * 8);	/* ~89% distinct for 2000 of 8192 */
	ASSERT(c->pfns[0] < npages / 8);
	ASSERT(c->pfns[c->npages - 1] > npages - npages / 8);
	{
		uint64_t beyond_hot = 0;
		for (uint64_t i = 0; i < c->npages; i++)
			beyond_hot += c->pfns[i] >= hot;
		ASSERT(beyond_hot > c->npages / 2);
	}
	ckpt_free(c);
	p.d.ops->close(&p.d);

	/* Hotset: every dirty page inside the hot set, most of it dirty. */
	side_init(&p, ROLE_PRIMARY, 32 * MiB, PATTERN_HOTSET, 20000, 1 * MiB);
	ASSERT_EQ(side_open(&p), 0);
	c = pattern_epoch(&p, 2000, &d);
	for (uint64_t i = 0; i < c->npages; i++)
		ASSERT(c->pfns[i] < hot);
	ASSERT(c->npages <= hot && c->npages > hot * 3 / 4);
	ckpt_free(c);
	p.d.ops->close(&p.d);
	return TEST_OK;
}

int test_memdom_rate_limit(void)
{
	struct side p;
	uint64_t s0, s1, t0, t1, rate;

	side_init(&p, ROLE_PRIMARY, 8 * MiB, PATTERN_RANDOM, 5000, 4 * MiB);
	if (side_open(&p) == -ENOTSUP)
		test_skip("kernel lacks userfaultfd WP-async / PAGEMAP_SCAN");
	ASSERT(WAIT_FOR(memdom_guest_steps(&p.d) > 0, 2000));
	s0 = memdom_guest_steps(&p.d);
	t0 = now_us();
	test_sleep_ms(500);	/* a measurement window, not a wait for a condition */
	s1 = memdom_guest_steps(&p.d);
	t1 = now_us();
	rate = (s1 - s0) * 1000000 / (t1 - t0);
	printf("  rate 5000/s configured, %llu/s measured\n", (unsigned long long)rate);
	ASSERT(rate <= 5000 * 12 / 10);
	ASSERT(rate >= 5000 / 2);
	p.d.ops->close(&p.d);
	return TEST_OK;
}

int test_memdom_dies_with_daemon(void)
{
	int fds[2];
	pid_t daemon, guest = 0;
	char st;

	ASSERT_EQ(pipe(fds), 0);
	daemon = fork();
	ASSERT(daemon >= 0);
	if (daemon == 0) {
		struct side p;
		pid_t g;

		close(fds[0]);
		side_init(&p, ROLE_PRIMARY, 8 * MiB, PATTERN_RANDOM, 1000, 4 * MiB);
		if (p.d.ops->open(&p.d))
			_exit(1);
		g = memdom_guest_pid(&p.d);
		if (write(fds[1], &g, sizeof(g)) != (ssize_t)sizeof(g))
			_exit(1);
		for (;;)
			pause();
	}
	close(fds[1]);
	if (read(fds[0], &guest, sizeof(guest)) != (ssize_t)sizeof(guest)) {
		waitpid(daemon, NULL, 0);
		test_skip("the daemon could not open memdom (kernel lacks WP-async?)");
	}
	close(fds[0]);
	ASSERT(guest > 0);
	ASSERT_EQ(kill(guest, 0), 0);
	/* Host loss: the daemon is SIGKILLed; its guest must not outlive it. */
	ASSERT_EQ(kill(daemon, SIGKILL), 0);
	ASSERT_EQ(waitpid(daemon, NULL, 0), daemon);
	ASSERT(WAIT_FOR((st = proc_state(guest)) == 0 || st == 'Z' || st == 'X', 3000));
	return TEST_OK;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/*
 * Measurement for the benchmark: the pause (suspend + capture + resume)
 * for about 10 000 dirty pages of a 256 MiB guest, against a plain memcpy
 * of the same number of scattered pages from a local 256 MiB buffer.
 */
int test_memdom_pause_measure(void)
{
	const uint64_t size = 256 * MiB, want = 10000;
	struct side p;
	struct ckpt *c = ckpt_new(16384);
	uint8_t *src, *dst;
	uint64_t pause[3], copy[3], pages[3], suspend_us[3], capture_us[3];

	side_init(&p, ROLE_PRIMARY, size, PATTERN_RANDOM, 0, 4 * MiB);
	if (side_open(&p) == -ENOTSUP)
		test_skip("kernel lacks userfaultfd WP-async / PAGEMAP_SCAN");
	ASSERT(c);
	ASSERT_EQ(p.d.ops->start_protection(&p.d, &null_sink), 0);
	/* 4 KiB pages like the guest's; MAP_POPULATE saves a fault per page. */
	src = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		   -1, 0);
	ASSERT(src != MAP_FAILED);
	madvise(src, size, MADV_NOHUGEPAGE);
	ASSERT_EQ(madvise(src, size, MADV_POPULATE_WRITE), 0);
	dst = mmap(NULL, 16384 * 4096, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	ASSERT(dst != MAP_FAILED);
	memset(src, 0x5a, size);
	memset(dst, 0, 16384 * 4096);

	/* Start from an empty dirty set. */
	ASSERT_EQ(p.d.ops->suspend(&p.d), 0);
	ASSERT_EQ(p.d.ops->capture(&p.d, c), 0);
	ASSERT_EQ(p.d.ops->resume(&p.d), 0);
	for (int i = 0; i < 3; i++) {
		uint64_t s0 = memdom_guest_steps(&p.d), t0, t1, t2, t3;

		/* Random writes over 65 536 pages: ~10 800 steps dirty ~10 000. */
		ASSERT(WAIT_FOR(memdom_guest_steps(&p.d) >= s0 + want * 108 / 100, 8000));
		ckpt_reset(c, (uint64_t)i);
		t0 = now_us();
		ASSERT_EQ(p.d.ops->suspend(&p.d), 0);
		t1 = now_us();
		ASSERT_EQ(p.d.ops->capture(&p.d, c), 0);
		t2 = now_us();
		ASSERT_EQ(p.d.ops->resume(&p.d), 0);
		t3 = now_us();
		pause[i] = t3 - t0;
		suspend_us[i] = t1 - t0;
		capture_us[i] = t2 - t1;
		pages[i] = c->npages;

		t0 = now_us();
		for (uint64_t k = 0; k < c->npages; k++)
			memcpy(dst + k * 4096, src + c->pfns[k] * 4096, 4096);
		copy[i] = now_us() - t0;
		ASSERT(dst[0] == 0x5a);
	}
	qsort(pause, 3, sizeof(pause[0]), cmp_u64);
	qsort(copy, 3, sizeof(copy[0]), cmp_u64);
	qsort(suspend_us, 3, sizeof(suspend_us[0]), cmp_u64);
	qsort(capture_us, 3, sizeof(capture_us[0]), cmp_u64);
	qsort(pages, 3, sizeof(pages[0]), cmp_u64);
	printf("  256 MiB guest, ~%llu dirty pages: pause median %llu us [%llu-%llu] "
	       "(suspend %llu us, capture %llu us), memcpy of as many scattered pages "
	       "median %llu us [%llu-%llu], ratio %.2f\n",
	       (unsigned long long)pages[1], (unsigned long long)pause[1],
	       (unsigned long long)pause[0], (unsigned long long)pause[2],
	       (unsigned long long)suspend_us[1], (unsigned long long)capture_us[1],
	       (unsigned long long)copy[1], (unsigned long long)copy[0],
	       (unsigned long long)copy[2], copy[1] ? (double)pause[1] / (double)copy[1] : 0.0);
	ASSERT(pages[1] > want * 8 / 10);
	ASSERT(pause[1] < 1000000);
	munmap(src, size);
	munmap(dst, 16384 * 4096);
	ckpt_free(c);
	p.d.ops->close(&p.d);
	return TEST_OK;
}
