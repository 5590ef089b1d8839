/*
 * memdom.c - the memdom domain driver: a synthetic guest for tests and
 * benchmarks (see memdom.h for the workload and its vCPU block).
 *
 * The guest is a child process forked from the daemon.  Its memory is a
 * private anonymous mapping of cfg->memory bytes; its vCPU block lives in
 * a small MAP_SHARED page so the daemon can read the step counter at any
 * time.  The child runs only async-signal-safe code (the daemon may have
 * threads) and dies with the daemon (PR_SET_PDEATHSIG).
 *
 * Primary: dirty tracking is userfaultfd write-protection in WP-async
 * mode, registered by the child inside its own mm; the daemon harvests the
 * written pages with PAGEMAP_SCAN on /proc/<child>/pagemap, which reports
 * and re-protects them in one call, and copies them with process_vm_readv
 * straight into the checkpoint's page buffer.  Suspend is SIGSTOP, resume
 * is SIGCONT.
 *
 * Backup: the standby is an image of the guest memory plus the vCPU block
 * in the daemon; activation forks a child that inherits the image and
 * continues the workload from the committed vCPU state. *
 * Network: with memdom-netns the child joins that namespace before its
 * first step and, with memdom-observer, sends numbered UDP packets from
 * its step loop (memdom.h), so SIGSTOP really stops its output.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/fs.h>
#include <linux/userfaultfd.h>
#include <openssl/evp.h>

#include "../lib/fault.h"
#include "../lib/wire.h"
#include "memdom.h"

#define LOG_MODULE "memdom"
#include "../lib/log.h"

/* ---- kernel interfaces missing from older headers (limits.md 3a) -------- */

#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif

#ifndef PAGEMAP_SCAN
#define PAGE_IS_WRITTEN (1 << 1)
#define PM_SCAN_WP_MATCHING (1 << 0)
#define PM_SCAN_CHECK_WPASYNC (1 << 1)

struct page_region {
	uint64_t start, end, categories;
};

struct pm_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};

#define PAGEMAP_SCAN _IOWR('f', 16, struct pm_scan_arg)
#endif

/* ---- tunables ------------------------------------------------------------ */

#define PAGE_SZ ((uint64_t)4096)
#define SCAN_REGIONS 16384		/* page_region entries per PAGEMAP_SCAN call */
#define SLICE_PAGES 16384ull		/* pages per delivery while the guest runs */
#define SMALL_DIRTY 1024ull		/* stop the initial rounds at this dirty count */
#define MAX_ROUNDS 8u			/* ... or after this many rounds */
#define STOP_TIMEOUT_MS 1000u		/* suspend gives up after this */
#define DISK_STOP_TIMEOUT_MS 15000u	/* ... with memdom-disk-writes: see memdom_suspend */
#define COMMAND_TIMEOUT_MS 5000	/* the child answers a command within this */
#define HASH_CHUNK (1u << 20)
#define GUEST_SEED 0x74616e64656d2121ull
#define GUEST_BATCH 1024u		/* steps between looks at the command word */
#define GUEST_SNDBUF (4 << 20)		/* socket buffer: held packets stay charged to it */
#define PACKET_MAGIC 0x6f6d6474u	/* "tdmo" */
#define PACKET_VERSION 1u
#define PACKET_LEN 32u
#define DISKW_MAGIC 0x77646474u	/* "tddw": a memdom-disk-writes block */
#define DISKW_VERSION 1u
#define DISKW_BLOCK 4096u

enum guest_cmd { CMD_NONE = 0, CMD_TRACK, CMD_UNTRACK };

/* ---- the page shared between the daemon and the guest child --------------- */

struct guest_regs {
	uint64_t step, prng;
};

/*
 * The vCPU block.  The child publishes each step by filling the inactive
 * regs slot and then flipping `cur` with a release store, so whenever the
 * child is stopped regs[cur] is a complete state.  A stop between a step's
 * memory write and its publication leaves that write in memory with the
 * previous step's state; running the step again rewrites the same bytes,
 * so the guest still continues exactly.
 */
struct guest_shared {
	uint64_t magic;
	uint32_t version, pattern;
	uint64_t memory, hotset, rate, seed;
	uint32_t cur, pad;
	struct guest_regs regs[2];

	/* Control words, not guest state. */
	uint32_t cmd;			/* enum guest_cmd, cleared by the child */
	uint32_t pad2;
	uint64_t stop_at;		/* stop after this step; 0 = never */

	/*
	 * The network (memdom-observer).  A step that sends a packet is one
	 * unit: the child sets tx_busy, sends, publishes the step, clears
	 * tx_busy and then stops itself if stop_req is set.  suspend sets
	 * stop_req before SIGSTOP and, finding the child stopped with tx_busy
	 * set, lets it run to the end of that step, so a checkpoint never
	 * holds a state from before a packet that was already sent (the
	 * activated guest would send it again) nor the reverse.
	 */
	uint32_t net_on;		/* send packets; set once protection starts */
	uint32_t tx_busy;		/* the child is inside a step that sends */
	uint32_t stop_req;		/* suspend: stop at the end of that step */
	uint32_t speed;			/* set_speed: percent of its CPU it may use (0 = 100) */
	uint32_t pad3;
	uint64_t disk_writes, disk_errors;	/* memdom-disk-writes, counted by the child */
};

_Static_assert(sizeof(struct guest_shared) <= PAGE_SZ, "shared block fits a page");

/* What the child needs; copied into it by fork. */
struct guest_args {
	struct guest_shared *sh;
	uint8_t *base;
	pid_t ppid;
	int ack_fd;
	bool stop_first;

	/* Network: join netns_fd (-1: stay), send to obs every packet_steps
	 * steps when net is set.  With either, the child reports its set-up on
	 * ack_fd (two ints: stage, errno) before anything else. */
	int netns_fd;
	bool net;
	struct sockaddr_storage obs;
	socklen_t obs_len;
	uint64_t packet_steps;

	/* Disk (memdom-disk-writes): every disk_steps steps, write k =
	 * step / disk_steps to block k of disk_path (k < disk_blocks). */
	char disk_path[CONFIG_PATH_MAX];
	uint64_t disk_steps, disk_blocks;
};

/*
 * A guest child is forked from its own long-lived thread: PR_SET_PDEATHSIG
 * fires when the *thread* that forked the child exits, so forking from a
 * short-lived engine thread would kill the guest with it.  The thread
 * waits until the driver closes.
 */
struct spawner {
	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool running, done, quit;
	pid_t pid;
	int err;
	struct guest_args args;
};

struct memdom {
	struct domain *d;
	uint64_t npages;

	/* The guest child (primary guest or activated backup guest). */
	pid_t pid;
	bool suspended;
	uint8_t *base;			/* guest memory's address in the child */
	struct guest_shared *sh;	/* MAP_SHARED page */
	int ack_fd;			/* child's answers to commands */
	struct spawner sp;
	bool net;			/* the guest sends packets (memdom-observer) */
	uint64_t probe_step;		/* `tandem probe --log-dirty`: the step at the last cycle */
	bool probe_step_set;

	/* Primary: dirty tracking. */
	int pagemap_fd;
	bool tracking;
	bool need_full;			/* lost a harvest: next capture copies all */
	bool full_copy;			/* no dirty tracking on this kernel: copy all, always */
	struct page_region *regions;
	struct iovec *iov;
	uint64_t scan_regions;		/* entries of regions used per scan */
	uint64_t slice_pages;		/* pages per delivery while running */
	uint64_t verify_cursor;		/* the checkpoint oracle's rotation */

	/* Backup: the standby. */
	uint8_t *image;
	uint8_t state[MEMDOM_STATE_LEN];
	bool have_state;
	bool activated;
	uint8_t activated_hash[32];
	uint8_t activated_state[MEMDOM_STATE_LEN];	/* vCPU block it started with */
	bool activated_hash_valid;
};

/* ---- small helpers --------------------------------------------------------- */

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get_le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = (v << 8) | p[i];
	return v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t hot_pages_of(uint64_t hotset, uint64_t npages)
{
	uint64_t hot = hotset / PAGE_SZ;

	if (hot < 1)
		hot = 1;
	return hot < npages ? hot : npages;
}

/* Encode the vCPU block's current state (the child must be stopped for a
 * consistent answer). */
static void state_encode(const struct guest_shared *sh, uint8_t out[MEMDOM_STATE_LEN])
{
	uint32_t cur = __atomic_load_n(&sh->cur, __ATOMIC_ACQUIRE) & 1;

	put_le64(out + 0, sh->magic);
	put_le32(out + 8, sh->version);
	put_le32(out + 12, sh->pattern);
	put_le64(out + 16, sh->memory);
	put_le64(out + 24, sh->hotset);
	put_le64(out + 32, sh->rate);
	put_le64(out + 40, sh->seed);
	put_le64(out + 48, sh->regs[cur].step);
	put_le64(out + 56, sh->regs[cur].prng);
}

/* Check an encoded block against this guest's size; fill sh if given. */
static int state_decode(const uint8_t *in, uint32_t len, uint64_t memory,
			struct guest_shared *sh)
{
	if (len != MEMDOM_STATE_LEN || get_le64(in) != MEMDOM_STATE_MAGIC ||
	    get_le32(in + 8) != MEMDOM_STATE_VERSION || get_le32(in + 12) > PATTERN_HOTSET)
		return -EINVAL;
	if (memory && get_le64(in + 16) != memory)
		return -EINVAL;
	if (sh) {
		memset(sh, 0, sizeof(*sh));
		sh->magic = MEMDOM_STATE_MAGIC;
		sh->version = MEMDOM_STATE_VERSION;
		sh->pattern = get_le32(in + 12);
		sh->memory = get_le64(in + 16);
		sh->hotset = get_le64(in + 24);
		sh->rate = get_le64(in + 32);
		sh->seed = get_le64(in + 40);
		sh->regs[0].step = get_le64(in + 48);
		sh->regs[0].prng = get_le64(in + 56);
	}
	return 0;
}

static void format_size(uint64_t v, char *buf, size_t len)
{
	if (v && v % (1ull << 30) == 0)
		snprintf(buf, len, "%" PRIu64 "G", v >> 30);
	else if (v && v % (1ull << 20) == 0)
		snprintf(buf, len, "%" PRIu64 "M", v >> 20);
	else
		snprintf(buf, len, "%" PRIu64 " bytes", v);
}

/* ---- the guest child (async-signal-safe code only) ------------------------ */

static inline uint64_t splitmix64(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Send one int to the daemon; the child has nothing to do if that fails. */
static void guest_answer(int fd, int v)
{
	ssize_t r;

	do
		r = write(fd, &v, sizeof(v));
	while (r < 0 && errno == EINTR);
}

/* Turn tracking on: register the guest memory for WP-async and protect it
 * all.  Done again on a later CMD_TRACK, which re-protects everything. */
static int guest_track(const struct guest_args *a, int *uffd)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	struct uffdio_register reg = { .range = { (uintptr_t)a->base, a->sh->memory },
				       .mode = UFFDIO_REGISTER_MODE_WP };
	struct uffdio_writeprotect wp = { .range = { (uintptr_t)a->base, a->sh->memory },
					  .mode = UFFDIO_WRITEPROTECT_MODE_WP };

	if (*uffd < 0) {
		int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);

		if (fd < 0 && errno == EINVAL)
			fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		if (fd < 0)
			return -errno;
		if (ioctl(fd, UFFDIO_API, &api) < 0 || ioctl(fd, UFFDIO_REGISTER, &reg) < 0) {
			int e = -errno;
			close(fd);
			return e;
		}
		*uffd = fd;
	}
	if (ioctl(*uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return -errno;
	return 0;
}

static void guest_command(const struct guest_args *a, int *uffd)
{
	uint32_t cmd = __atomic_load_n(&a->sh->cmd, __ATOMIC_ACQUIRE);
	int rc = 0;

	if (cmd == CMD_NONE)
		return;
	if (cmd == CMD_TRACK) {
		rc = guest_track(a, uffd);
	} else if (cmd == CMD_UNTRACK) {
		if (*uffd >= 0)
			close(*uffd);	/* unregisters and drops the protection */
		*uffd = -1;
	} else {
		rc = -EINVAL;
	}
	__atomic_store_n(&a->sh->cmd, CMD_NONE, __ATOMIC_RELEASE);
	guest_answer(a->ack_fd, rc);
}

/* Sleep for ns nanoseconds (restarted across SIGSTOP/SIGCONT by the kernel). */
static void guest_nap(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

	nanosleep(&ts, NULL);
}

/*
 * Send packet k = step / packet_steps: 32 bytes, little-endian: magic,
 * version (u32), k, step, prng (u64).  A pure function of the guest state
 * after `step`.  Errors are ignored: a lost datagram is the network's.
 */
static void guest_send(const struct guest_args *a, int sock, uint64_t step, uint64_t prng)
{
	uint8_t pkt[PACKET_LEN];
	ssize_t r;

	put_le32(pkt + 0, PACKET_MAGIC);
	put_le32(pkt + 4, PACKET_VERSION);
	put_le64(pkt + 8, step / a->packet_steps);
	put_le64(pkt + 16, step);
	put_le64(pkt + 24, prng);
	do
		r = sendto(sock, pkt, sizeof(pkt), 0, (const struct sockaddr *)&a->obs, a->obs_len);
	while (r < 0 && errno == EINTR);
}

/*
 * The workload loop.  Never returns.  Pacing: with a rate, the guest owes
 * rate * elapsed steps; a backlog of more than 20 ms worth (the guest was
 * suspended) is forgiven, so time spent stopped is lost, as for a VM.
 * With a socket, step k * packet_steps sends packet k once net_on is set
 * (see struct guest_shared for how that step stays one unit).
 */
/*
 * Write k of memdom-disk-writes: block k, stamped little-endian with
 * magic, version (u32), k, step (u64) and the daemon's pid (u32), so that
 * a test can tell which guest wrote it.  The step is published only after
 * the write returned: a checkpoint that holds step s holds every write
 * issued up to s complete.
 */
static void guest_disk_write(const struct guest_args *a, int dfd, uint8_t *buf, uint64_t step)
{
	uint64_t k = step / a->disk_steps;
	ssize_t r;

	if (k >= a->disk_blocks)
		return;
	put_le32(buf + 0, DISKW_MAGIC);
	put_le32(buf + 4, DISKW_VERSION);
	put_le64(buf + 8, k);
	put_le64(buf + 16, step);
	put_le32(buf + 24, (uint32_t)a->ppid);
	do
		r = pwrite(dfd, buf, DISKW_BLOCK, (off_t)(k * DISKW_BLOCK));
	while (r < 0 && errno == EINTR);
	if (r == (ssize_t)DISKW_BLOCK)
		__atomic_add_fetch(&a->sh->disk_writes, 1, __ATOMIC_RELAXED);
	else
		__atomic_add_fetch(&a->sh->disk_errors, 1, __ATOMIC_RELAXED);
}

__attribute__((noreturn))
static void guest_loop(const struct guest_args *a, int sock, int dfd, uint8_t *dbuf)
{
	struct guest_shared *sh = a->sh;
	uint32_t cur = sh->cur & 1;
	uint64_t step = sh->regs[cur].step, prng = sh->regs[cur].prng;
	const uint64_t npages = sh->memory / PAGE_SZ;
	const uint64_t hot = hot_pages_of(sh->hotset, npages);
	const uint64_t pattern = sh->pattern;
	uint64_t rate = sh->rate, slack = rate / 50 ? rate / 50 : 1;
	uint64_t t0 = now_ns(), base_step = step;
	uint32_t speed_was = 0;
	int uffd = -1;

	for (;;) {
		uint64_t batch = GUEST_BATCH, t_batch = now_ns();
		uint32_t speed = __atomic_load_n(&sh->speed, __ATOMIC_RELAXED);

		if (speed != speed_was && sh->rate) {
			/* set_speed on a paced guest: speed% of its rate, from now */
			speed_was = speed;
			rate = speed ? sh->rate * speed / 100 : sh->rate;
			rate = rate ? rate : 1;
			slack = rate / 50 ? rate / 50 : 1;
			t0 = t_batch;
			base_step = step;
		}
		if (rate) {
			uint64_t t = now_ns();
			uint64_t due = base_step + (uint64_t)((unsigned __int128)(t - t0) * rate / 1000000000ull);

			if (due > step + slack) {
				t0 = t;
				base_step = step;
				due = step + 1;
			}
			if (due <= step) {
				uint64_t next = t0 + (uint64_t)((unsigned __int128)(step + 1 - base_step) *
								1000000000ull / rate);
				uint64_t wait = next > t ? next - t : 0;

				if (wait < 100000)
					wait = 100000;
				if (wait > 10000000)
					wait = 10000000;
				guest_nap(wait);
				guest_command(a, &uffd);
				continue;
			}
			if (due - step < batch)
				batch = due - step;
		}
		for (uint64_t i = 0; i < batch; i++) {
			uint64_t x = splitmix64(&prng), page;
			uint64_t *slot;
			uint32_t nxt = cur ^ 1;
			bool tx;

			if (pattern == PATTERN_SEQUENTIAL)
				page = step % npages;
			else if (pattern == PATTERN_HOTSET)
				page = (uint64_t)(((unsigned __int128)x * hot) >> 64);
			else
				page = (uint64_t)(((unsigned __int128)x * npages) >> 64);
			step++;
			slot = (uint64_t *)(a->base + page * PAGE_SZ + (x & 0xff) * 16);
			__atomic_store_n(&slot[0], step, __ATOMIC_RELAXED);
			__atomic_store_n(&slot[1], x, __ATOMIC_RELAXED);
			tx = sock >= 0 && step % a->packet_steps == 0 &&
			     __atomic_load_n(&sh->net_on, __ATOMIC_RELAXED);
			if (tx) {
				__atomic_store_n(&sh->tx_busy, 1, __ATOMIC_SEQ_CST);
				guest_send(a, sock, step, prng);
			}
			if (dfd >= 0 && step % a->disk_steps == 0)
				guest_disk_write(a, dfd, dbuf, step);
			sh->regs[nxt].step = step;
			sh->regs[nxt].prng = prng;
			__atomic_store_n(&sh->cur, nxt, __ATOMIC_RELEASE);
			cur = nxt;
			if (tx) {
				__atomic_store_n(&sh->tx_busy, 0, __ATOMIC_SEQ_CST);
				if (__atomic_load_n(&sh->stop_req, __ATOMIC_SEQ_CST))
					kill(getpid(), SIGSTOP);
			}
			if (step == __atomic_load_n(&sh->stop_at, __ATOMIC_RELAXED)) {
				__atomic_store_n(&sh->stop_at, 0, __ATOMIC_RELAXED);
				kill(getpid(), SIGSTOP);
			}
		}
		if (speed && speed < 100 && !sh->rate) {
			/* set_speed: run speed% of the time, as Xen's credit cap
			 * does to a vCPU: idle (100 - speed) / speed of the batch's
			 * own time after it */
			uint64_t idle = (now_ns() - t_batch) * (100 - speed) / speed;

			guest_nap(idle < 20000000ull ? idle : 20000000ull);
		}
		guest_command(a, &uffd);
	}
}

/* The child's entry point after fork.  Never returns. */
__attribute__((noreturn))
static void guest_main(const struct guest_args *a)
{
	struct sigaction sa;
	sigset_t none;
	int setup[2] = { 0, 0 }, sock = -1;

	/* Die with the daemon; if it is already gone, do not start. */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != a->ppid)
		_exit(1);
	prctl(PR_SET_NAME, "memdom-guest");

	/* Shed the daemon's signal handlers, mask and descriptors. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	for (int s = 1; s < NSIG; s++)
		if (s != SIGKILL && s != SIGSTOP)
			sigaction(s, &sa, NULL);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Join the guest's network namespace (before the descriptor goes). */
	if (a->netns_fd >= 0 && setns(a->netns_fd, CLONE_NEWNET) < 0) {
		setup[0] = 1;
		setup[1] = errno;
	}
	if (a->ack_fd > 3)
		close_range(3, (unsigned)a->ack_fd - 1, 0);
	close_range((unsigned)a->ack_fd + 1, ~0u, 0);

	/* Its socket, made in that namespace. */
	if (a->net && !setup[0]) {
		int size = GUEST_SNDBUF;

		sock = socket(a->obs.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		if (sock < 0) {
			setup[0] = 2;
			setup[1] = errno;
		} else if (setsockopt(sock, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0) {
			setsockopt(sock, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
		}
	}
	if (a->net || a->netns_fd >= 0) {
		ssize_t r;

		do
			r = write(a->ack_fd, setup, sizeof(setup));
		while (r < 0 && errno == EINTR);
		if (setup[0])
			_exit(3);
	}

	/* Its disk (the daemon checked that it opens). */
	int dfd = -1;
	uint8_t *dbuf = NULL;

	if (a->disk_path[0]) {
		void *p = mmap(NULL, DISKW_BLOCK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);

		dfd = open(a->disk_path, O_RDWR | O_DIRECT | O_CLOEXEC);
		if (p == MAP_FAILED || dfd < 0)
			__atomic_add_fetch(&a->sh->disk_errors, 1, __ATOMIC_RELAXED);
		dbuf = p == MAP_FAILED ? NULL : p;
		if (!dbuf && dfd >= 0) {
			close(dfd);
			dfd = -1;
		}
	}
	if (a->stop_first)
		kill(getpid(), SIGSTOP);
	guest_loop(a, sock, dfd, dbuf);
}

/* ---- spawning and controlling the child ------------------------------------- */

static void *spawner_thread(void *arg)
{
	struct spawner *sp = arg;
	pid_t pid = fork();

	if (pid == 0)
		guest_main(&sp->args);
	pthread_mutex_lock(&sp->lock);
	sp->pid = pid;
	sp->err = pid < 0 ? -errno : 0;
	sp->done = true;
	pthread_cond_broadcast(&sp->cond);
	while (!sp->quit)
		pthread_cond_wait(&sp->cond, &sp->lock);
	pthread_mutex_unlock(&sp->lock);
	return NULL;
}

/* Fork the guest child from a fresh spawner thread; returns its pid or -errno. */
static int spawn_guest(struct memdom *m, const struct guest_args *args)
{
	struct spawner *sp = &m->sp;
	sigset_t all, old;
	int r;

	memset(sp, 0, sizeof(*sp));
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->cond, NULL);
	sp->args = *args;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	r = pthread_create(&sp->thread, NULL, spawner_thread, sp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (r) {
		log_error("cannot start the guest's spawner thread: %s", strerror(r));
		return -r;
	}
	sp->running = true;
	pthread_mutex_lock(&sp->lock);
	while (!sp->done)
		pthread_cond_wait(&sp->cond, &sp->lock);
	pthread_mutex_unlock(&sp->lock);
	if (sp->err) {
		log_error("cannot fork the memdom guest: %s", strerror(-sp->err));
		return sp->err;
	}
	return sp->pid;
}

static void spawner_stop(struct spawner *sp)
{
	if (!sp->running)
		return;
	pthread_mutex_lock(&sp->lock);
	sp->quit = true;
	pthread_cond_broadcast(&sp->cond);
	pthread_mutex_unlock(&sp->lock);
	pthread_join(sp->thread, NULL);
	pthread_mutex_destroy(&sp->lock);
	pthread_cond_destroy(&sp->cond);
	sp->running = false;
}

/* The child exited: say how, forget it. */
static void guest_gone(struct memdom *m, const siginfo_t *si)
{
	if (si->si_code == CLD_EXITED)
		log_error("memdom guest pid %d exited with status %d", (int)m->pid, si->si_status);
	else
		log_error("memdom guest pid %d was killed by signal %d", (int)m->pid, si->si_status);
	m->pid = 0;
	m->suspended = false;
}

/*
 * Wait until the child is stopped (consuming the stop report).  Returns 0,
 * -ETIMEDOUT, or -ESRCH if it died (then it is reaped and forgotten).
 */
static int wait_stopped(struct memdom *m, unsigned timeout_ms)
{
	uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000ull;
	unsigned spins = 0;

	for (;;) {
		siginfo_t si;

		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)m->pid, &si, WSTOPPED | WEXITED | WNOHANG) < 0) {
			int e = -errno;
			log_perror("waitid on memdom guest pid %d", (int)m->pid);
			return e;
		}
		if (si.si_pid == m->pid) {
			if (si.si_code == CLD_STOPPED || si.si_code == CLD_TRAPPED)
				return 0;
			guest_gone(m, &si);
			return -ESRCH;
		}
		if (now_ns() > end)
			return -ETIMEDOUT;
		if (spins++ < 200) {
			sched_yield();
		} else {
			struct timespec ts = { 0, 20000 };
			nanosleep(&ts, NULL);
		}
	}
}

/* Has the child exited (reaped and forgotten if so)?  Stop reports are
 * left for wait_stopped. */
static bool guest_exited(struct memdom *m)
{
	siginfo_t si;

	if (!m->pid)
		return true;
	memset(&si, 0, sizeof(si));
	if (waitid(P_PID, (id_t)m->pid, &si, WEXITED | WNOHANG) == 0 && si.si_pid == m->pid) {
		guest_gone(m, &si);
		return true;
	}
	return false;
}

/* Ask the running child to do cmd; returns its answer or -errno. */
static int send_command(struct memdom *m, uint32_t cmd)
{
	struct pollfd pfd = { .fd = m->ack_fd, .events = POLLIN };
	int answer = 0, r;
	ssize_t n;

	if (!m->pid)
		return -ESRCH;
	if (m->suspended) {
		log_error("memdom guest pid %d is suspended and cannot take a command", (int)m->pid);
		return -EBUSY;
	}
	__atomic_store_n(&m->sh->cmd, cmd, __ATOMIC_RELEASE);
	do
		r = poll(&pfd, 1, COMMAND_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	if (r == 0) {
		log_error("memdom guest pid %d did not answer within %d ms", (int)m->pid,
			  COMMAND_TIMEOUT_MS);
		return -ETIMEDOUT;
	}
	if (r < 0) {
		int e = -errno;
		log_perror("poll on memdom guest pid %d", (int)m->pid);
		return e;
	}
	do
		n = read(m->ack_fd, &answer, sizeof(answer));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(answer)) {
		log_error("memdom guest pid %d went away during a command", (int)m->pid);
		return -ESRCH;
	}
	return answer;
}

/* Kill and reap the child, if any. */
static void guest_kill(struct memdom *m)
{
	if (m->pid > 0) {
		kill(m->pid, SIGKILL);
		while (waitpid(m->pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	m->pid = 0;
	m->suspended = false;
	spawner_stop(&m->sp);
	if (m->ack_fd >= 0)
		close(m->ack_fd);
	m->ack_fd = -1;
	if (m->pagemap_fd >= 0)
		close(m->pagemap_fd);
	m->pagemap_fd = -1;
	m->tracking = false;
}

/*
 * memdom-netns with %r replaced by the role and %% by %; a value without a
 * '/' names /run/netns/NAME.  Returns 0 or -ENAMETOOLONG.
 */
static int netns_path(const struct memdom *m, char *buf, size_t len)
{
	const char *v = m->d->cfg->memdom_netns;
	const char *role = m->d->role == ROLE_PRIMARY ? "primary" : "backup";
	size_t n = 0;

	if (!strchr(v, '/'))
		n = (size_t)snprintf(buf, len, "/run/netns/");
	for (; *v && n < len; v++) {
		if (v[0] == '%' && v[1] == 'r') {
			n += (size_t)snprintf(buf + n, len - n, "%s", role);
			v++;
		} else if (v[0] == '%' && v[1] == '%') {
			buf[n++] = '%';
			v++;
		} else {
			buf[n++] = *v;
		}
	}
	if (n >= len)
		return -ENAMETOOLONG;
	buf[n] = '\0';
	return 0;
}

/*
 * The guest's network, in the daemon before the fork: open memdom-netns
 * (args->netns_fd, -1 when unset) and resolve memdom-observer.  The child
 * joins, makes its socket and reports back (guest_start).  Returns 0 or
 * -errno, logged.
 */
static int net_prepare(struct memdom *m, struct guest_args *args, char *path, size_t len)
{
	const struct tandem_config *cfg = m->d->cfg;
	const struct config_addr *o = &cfg->memdom_observer;
	int rc;

	args->netns_fd = -1;
	path[0] = '\0';
	if (o->host[0]) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&args->obs;
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&args->obs;

		memset(&args->obs, 0, sizeof(args->obs));
		if (inet_pton(AF_INET, o->host, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			s4->sin_port = htons(o->port);
			args->obs_len = sizeof(*s4);
		} else if (inet_pton(AF_INET6, o->host, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons(o->port);
			args->obs_len = sizeof(*s6);
		} else {
			log_error("memdom-observer '%s' is not a numeric IPv4 or IPv6 address", o->host);
			return -EINVAL;
		}
		args->net = true;
		args->packet_steps = cfg->memdom_packet_steps ? cfg->memdom_packet_steps : 1;
	}
	if (!cfg->memdom_netns[0])
		return 0;
	if (netns_path(m, path, len)) {
		log_error("memdom-netns '%s' is too long", cfg->memdom_netns);
		return -ENAMETOOLONG;
	}
	args->netns_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (args->netns_fd < 0) {
		rc = -errno;
		if (rc == -ENOENT && !strchr(cfg->memdom_netns, '/'))
			log_error("memdom-netns: no network namespace %s (create it with "
				  "`ip netns add %s`)", path, path + strlen("/run/netns/"));
		else
			log_perror("memdom-netns: cannot open %s", path);
		return rc;
	}
	return 0;
}

/* memdom-disk-writes, in the daemon before the fork: the device opens
 * for O_DIRECT writes, and how many blocks it has.  0 or -errno, logged. */
static int disk_prepare(struct memdom *m, struct guest_args *args)
{
	const struct tandem_config *cfg = m->d->cfg;
	struct stat sb;
	uint64_t size = 0;
	int fd;

	if (!cfg->memdom_disk_writes[0])
		return 0;
	fd = open(cfg->memdom_disk_writes, O_RDWR | O_DIRECT | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &sb) < 0 ||
	    (S_ISBLK(sb.st_mode) ? ioctl(fd, BLKGETSIZE64, &size) < 0 : (size = (uint64_t)sb.st_size, 0))) {
		int e = errno;

		log_error("memdom-disk-writes: cannot open %s for O_DIRECT writes: %s",
			  cfg->memdom_disk_writes, strerror(e));
		if (fd >= 0)
			close(fd);
		return -e;
	}
	close(fd);
	snprintf(args->disk_path, sizeof(args->disk_path), "%s", cfg->memdom_disk_writes);
	args->disk_steps = cfg->memdom_disk_steps ? cfg->memdom_disk_steps : 1;
	args->disk_blocks = size / DISKW_BLOCK;
	log_info("memdom guest writes block k of %s (%" PRIu64 " blocks) at step k * %" PRIu64,
		 args->disk_path, args->disk_blocks, args->disk_steps);
	return 0;
}

/* Read the child's set-up report (guest_main); 0 or -errno, logged. */
static int net_setup_answer(struct memdom *m, const char *path)
{
	struct pollfd pfd = { .fd = m->ack_fd, .events = POLLIN };
	int setup[2] = { 0, 0 }, r;
	ssize_t n;

	do
		r = poll(&pfd, 1, COMMAND_TIMEOUT_MS);
	while (r < 0 && errno == EINTR);
	if (r <= 0) {
		log_error("memdom guest pid %d did not report its network set-up within %d ms",
			  (int)m->pid, COMMAND_TIMEOUT_MS);
		return -ETIMEDOUT;
	}
	do
		n = read(m->ack_fd, setup, sizeof(setup));
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(setup)) {
		log_error("memdom guest pid %d died setting up its network", (int)m->pid);
		return -ESRCH;
	}
	if (setup[0] == 1) {
		log_error("memdom guest pid %d cannot join network namespace %s: %s%s", (int)m->pid,
			  path, strerror(setup[1]), setup[1] == EPERM ? " (needs root)" : "");
		return -setup[1];
	}
	if (setup[0] == 2) {
		log_error("memdom guest pid %d cannot create its UDP socket: %s", (int)m->pid,
			  strerror(setup[1]));
		return -setup[1];
	}
	return 0;
}

/*
 * Start a guest child.  Its memory is m->base (a private mapping the child
 * inherits) and its vCPU block m->sh.  With stop_first the child stops
 * itself before its first step and this returns with it stopped.  With
 * memdom-netns the child first joins that namespace; with memdom-observer
 * it sends packets once sh->net_on is set.
 */
static int guest_start(struct memdom *m, bool stop_first)
{
	struct guest_args args;
	char path[CONFIG_PATH_MAX + 32];
	int fds[2] = { -1, -1 };
	int rc, pid;

	memset(&args, 0, sizeof(args));
	rc = net_prepare(m, &args, path, sizeof(path));
	if (rc)
		return rc;
	if (pipe2(fds, O_CLOEXEC) < 0) {
		rc = -errno;
		log_perror("cannot create the memdom guest's pipe");
		goto out;
	}
	if ((rc = disk_prepare(m, &args)))
		goto out;
	args.sh = m->sh;
	args.base = m->base;
	args.ppid = getpid();
	args.ack_fd = fds[1];
	args.stop_first = stop_first;
	pid = spawn_guest(m, &args);
	if (pid < 0) {
		rc = pid;
		goto out;
	}
	m->pid = pid;
	m->ack_fd = fds[0];
	fds[0] = -1;
	m->net = args.net;
	rc = 0;
	if (args.net || args.netns_fd >= 0) {
		close(fds[1]);
		fds[1] = -1;
		rc = net_setup_answer(m, path);
		if (rc) {
			guest_kill(m);
			goto out;
		}
		if (path[0])
			log_info("memdom guest pid %d runs in network namespace %s", pid, path);
		if (args.net)
			log_info("memdom guest pid %d sends a packet to %s port %u every %" PRIu64
				 " steps%s", pid, m->d->cfg->memdom_observer.host,
				 m->d->cfg->memdom_observer.port, args.packet_steps,
				 m->d->role == ROLE_PRIMARY ? " once protection starts" : "");
	}
	if (stop_first) {
		rc = wait_stopped(m, COMMAND_TIMEOUT_MS);
		if (rc) {
			log_error("memdom guest pid %d did not stop at start: %s", pid, strerror(-rc));
			guest_kill(m);
			goto out;
		}
		m->suspended = true;
	}
out:
	if (fds[0] >= 0)
		close(fds[0]);
	if (fds[1] >= 0)
		close(fds[1]);
	if (args.netns_fd >= 0)
		close(args.netns_fd);
	return rc;
}

/* ---- hashing ------------------------------------------------------------------ */

/*
 * SHA-256 over the memory (from the child through process_vm_readv when
 * pid > 0, otherwise from `local`) followed by the encoded vCPU state.
 */
static int hash_guest(struct memdom *m, pid_t pid, const uint8_t *local,
		      const uint8_t state[MEMDOM_STATE_LEN], uint8_t out[32])
{
	uint64_t size = m->npages * PAGE_SZ;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t *buf = NULL;
	unsigned olen = 0;
	int rc = -ENOMEM;

	if (!ctx)
		goto out;
	if (pid > 0 && !(buf = malloc(HASH_CHUNK)))
		goto out;
	rc = -EIO;
	if (EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	for (uint64_t off = 0; off < size; off += HASH_CHUNK) {
		size_t n = size - off < HASH_CHUNK ? (size_t)(size - off) : HASH_CHUNK;
		const void *p = buf;

		if (pid <= 0) {
			p = local + off;
		} else {
			struct iovec li = { buf, n }, ri = { m->base + off, n };
			ssize_t r = process_vm_readv(pid, &li, 1, &ri, 1, 0);

			if (r != (ssize_t)n) {
				rc = r < 0 ? -errno : -EIO;
				log_error("cannot read memdom guest pid %d memory: %s", (int)pid,
					  strerror(-rc));
				goto out_quiet;
			}
			p = buf;
		}
		if (EVP_DigestUpdate(ctx, p, n) != 1)
			goto out;
	}
	if (EVP_DigestUpdate(ctx, state, MEMDOM_STATE_LEN) != 1 ||
	    EVP_DigestFinal_ex(ctx, out, &olen) != 1 || olen != 32)
		goto out;
	rc = 0;
out:
	if (rc == -EIO)
		log_error("SHA-256 of the memdom guest failed");
out_quiet:
	free(buf);
	EVP_MD_CTX_free(ctx);
	return rc;
}

/* ---- harvesting dirty pages (primary) ---------------------------------------- */

/*
 * Copy the guest pages in regions[0..n) (page-aligned child addresses)
 * into c, in the order given, with as few process_vm_readv calls as
 * IOV_MAX allows.  c must have room reserved for them.
 */
static int copy_regions(struct memdom *m, struct ckpt *c, const struct page_region *regions,
			size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t k = 0;
		uint64_t bytes = 0;
		struct iovec local;
		ssize_t r;

		for (; i < n && k < IOV_MAX; i++, k++) {
			uint64_t first = (regions[i].start - (uintptr_t)m->base) / PAGE_SZ;
			uint64_t count = (regions[i].end - regions[i].start) / PAGE_SZ;

			for (uint64_t p = 0; p < count; p++)
				c->pfns[c->npages + bytes / PAGE_SZ + p] = first + p;
			m->iov[k].iov_base = (void *)(uintptr_t)regions[i].start;
			m->iov[k].iov_len = count * PAGE_SZ;
			bytes += count * PAGE_SZ;
		}
		local.iov_base = c->pages + c->npages * PAGE_SZ;
		local.iov_len = bytes;
		r = process_vm_readv(m->pid, &local, 1, m->iov, k, 0);
		if (r != (ssize_t)bytes) {
			int e = r < 0 ? -errno : -EIO;
			log_error("cannot copy %" PRIu64 " pages from memdom guest pid %d: %s",
				  bytes / PAGE_SZ, (int)m->pid, strerror(-e));
			return e;
		}
		c->npages += bytes / PAGE_SZ;
	}
	return 0;
}

/* Copy guest pages [first, first+count) into c. */
static int copy_range(struct memdom *m, struct ckpt *c, uint64_t first, uint64_t count)
{
	struct page_region r = { (uintptr_t)m->base + first * PAGE_SZ,
				 (uintptr_t)m->base + (first + count) * PAGE_SZ, 0 };
	int rc = ckpt_reserve_pages(c, count);

	if (rc) {
		log_error("out of memory staging %" PRIu64 " pages", count);
		return rc;
	}
	return copy_regions(m, c, &r, 1);
}

typedef int (*flush_fn)(struct memdom *m, struct ckpt *c, void *arg);

/*
 * Harvest: find the pages written since the last harvest, re-protect them
 * (one PAGEMAP_SCAN), and append copies to c in address order.  With a
 * flush function c is handed over whenever it holds SLICE_PAGES or more.
 * A failure after a scan has consumed dirty bits sets need_full, so the
 * next capture copies everything rather than miss a page.  *found (may be
 * NULL) receives the number of dirty pages found.
 */
static int harvest(struct memdom *m, struct ckpt *c, flush_fn flush, void *arg,
		   uint64_t *found)
{
	uint64_t start = (uintptr_t)m->base, end = start + m->npages * PAGE_SZ, total = 0;
	int rc = 0;

	if (m->full_copy) {
		for (uint64_t first = 0; first < m->npages && !rc; first += m->slice_pages) {
			rc = copy_range(m, c, first, m->npages - first < m->slice_pages ?
						m->npages - first : m->slice_pages);
			if (!rc && flush && c->npages >= m->slice_pages)
				rc = flush(m, c, arg);
		}
		if (found)
			*found = m->npages;
		return rc;
	}
	while (start < end) {
		struct pm_scan_arg sa = {
			.size = sizeof(sa),
			.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
			.start = start, .end = end,
			.vec = (uintptr_t)m->regions, .vec_len = m->scan_regions,
			.category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
			/* while the guest runs, pieces of at most a slice */
			.max_pages = !flush ? 0 : c->npages < m->slice_pages ?
				     m->slice_pages - c->npages : 1,
		};
		long n = ioctl(m->pagemap_fd, PAGEMAP_SCAN, &sa);
		uint64_t pages = 0;

		if (n < 0) {
			rc = -errno;
			log_perror("PAGEMAP_SCAN of memdom guest pid %d", (int)m->pid);
			goto out;
		}
		for (long i = 0; i < n; i++)
			pages += (m->regions[i].end - m->regions[i].start) / PAGE_SZ;
		total += pages;
		rc = ckpt_reserve_pages(c, pages);
		if (rc) {
			log_error("out of memory staging %" PRIu64 " dirty pages", c->npages + pages);
			goto out;
		}
		rc = copy_regions(m, c, m->regions, (size_t)n);
		if (rc)
			goto out;
		if (flush && c->npages >= m->slice_pages) {
			rc = flush(m, c, arg);
			if (rc)
				goto out;
		}
		if (sa.walk_end <= start) {
			rc = -EIO;
			log_error("PAGEMAP_SCAN made no progress at %#" PRIx64, start);
			goto out;
		}
		start = sa.walk_end;
	}
out:
	if (rc && m->tracking)
		m->need_full = true;
	if (found)
		*found = total;
	return rc;
}

/* ---- kernel check ---------------------------------------------------------------- */

/*
 * Check, for real, that this kernel has WP-async userfaultfd and
 * PAGEMAP_SCAN: register a scratch mapping, write one page, and expect the
 * scan to report exactly that page.  Returns 0 or -ENOTSUP (logged).
 */
static int check_kernel(void)
{
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	const size_t len = 16 * PAGE_SZ;
	struct page_region reg[4];
	struct utsname u;
	const char *missing = NULL;
	uint8_t *mem = MAP_FAILED;
	int uffd = -1, pm = -1, rc = -ENOTSUP;
	long n;

	if (uname(&u) < 0)
		snprintf(u.release, sizeof(u.release), "unknown");
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (uffd < 0 && errno == EINVAL)
		uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) {
		missing = errno == EPERM ? "permission to use userfaultfd (run as root or set "
					   "vm.unprivileged_userfaultfd=1)"
					 : "the userfaultfd system call";
		goto out;
	}
	if (ioctl(uffd, UFFDIO_API, &api) < 0 ||
	    (api.features & (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)) !=
		    (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED)) {
		missing = "userfaultfd features UFFD_FEATURE_WP_ASYNC and UFFD_FEATURE_WP_UNPOPULATED";
		goto out;
	}
	mem = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (mem == MAP_FAILED) {
		rc = -errno;
		log_perror("cannot map scratch memory");
		goto out;
	}
	madvise(mem, len, MADV_NOHUGEPAGE);
	{
		struct uffdio_register r = { .range = { (uintptr_t)mem, len },
					     .mode = UFFDIO_REGISTER_MODE_WP };
		struct uffdio_writeprotect w = { .range = { (uintptr_t)mem, len },
						 .mode = UFFDIO_WRITEPROTECT_MODE_WP };

		if (ioctl(uffd, UFFDIO_REGISTER, &r) < 0 || ioctl(uffd, UFFDIO_WRITEPROTECT, &w) < 0) {
			missing = "userfaultfd write-protect registration (UFFDIO_REGISTER_MODE_WP)";
			goto out;
		}
	}
	mem[5 * PAGE_SZ] = 1;
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (pm < 0) {
		missing = "/proc/self/pagemap";
		goto out;
	}
	{
		struct pm_scan_arg sa = {
			.size = sizeof(sa), .flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC,
			.start = (uintptr_t)mem, .end = (uintptr_t)mem + len,
			.vec = (uintptr_t)reg, .vec_len = 4,
			.category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
		};

		n = ioctl(pm, PAGEMAP_SCAN, &sa);
		if (n != 1 || reg[0].start != (uintptr_t)mem + 5 * PAGE_SZ ||
		    reg[0].end != reg[0].start + PAGE_SZ) {
			missing = "the PAGEMAP_SCAN ioctl with PM_SCAN_WP_MATCHING";
			goto out;
		}
	}
	rc = 0;
out:
	if (missing)
		log_warn("memdom cannot track dirty pages on this kernel (Linux %s): missing %s "
			 "(Linux 6.7 or later has them)", u.release, missing);
	if (pm >= 0)
		close(pm);
	if (mem != MAP_FAILED)
		munmap(mem, len);
	if (uffd >= 0)
		close(uffd);
	return rc;
}

/* ---- ops: both roles ----------------------------------------------------------- */

static void memdom_close(struct domain *d);

static struct guest_shared *map_shared(void)
{
	void *p = mmap(NULL, PAGE_SZ, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED) {
		log_perror("cannot map the memdom vCPU block");
		return NULL;
	}
	return p;
}

static int open_primary(struct memdom *m)
{
	const struct tandem_config *cfg = m->d->cfg;
	uint64_t size = m->npages * PAGE_SZ;
	char path[64];
	void *base;
	int rc;

	rc = check_kernel();
	if (rc == -ENOTSUP) {
		/* memdom is a test guest: on an older kernel (the 6.1 VM of the
		 * DRBD tests) it still works, copying every page each time. */
		log_warn("memdom falls back to copying all %" PRIu64 " guest pages at every "
			 "checkpoint (no dirty tracking on this kernel)", m->npages);
		m->full_copy = true;
		rc = 0;
	}
	if (rc)
		return rc;
	m->regions = calloc(SCAN_REGIONS, sizeof(*m->regions));
	m->iov = calloc(IOV_MAX, sizeof(*m->iov));
	if (!m->regions || !m->iov)
		return -ENOMEM;
	m->sh = map_shared();
	if (!m->sh)
		return -ENOMEM;
	m->sh->magic = MEMDOM_STATE_MAGIC;
	m->sh->version = MEMDOM_STATE_VERSION;
	m->sh->pattern = (uint32_t)cfg->workload_pattern;
	m->sh->memory = size;
	m->sh->hotset = cfg->hotset;
	m->sh->rate = cfg->workload_rate;
	m->sh->seed = GUEST_SEED;
	m->sh->regs[0].prng = GUEST_SEED;

	/* The parent maps the guest memory only to hand it to the child. */
	base = mmap(NULL, size, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (base == MAP_FAILED) {
		rc = -errno;
		log_perror("cannot map %" PRIu64 " bytes of memdom guest memory", size);
		return rc;
	}
	/* 4 KiB pages, as tracked and shipped; THP would dirty 2 MiB at a time. */
	madvise(base, size, MADV_NOHUGEPAGE);
	m->base = base;
	rc = guest_start(m, false);
	munmap(base, size);
	if (rc)
		return rc;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)m->pid);
	m->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (m->pagemap_fd < 0) {
		rc = -errno;
		log_perror("cannot open %s", path);
		return rc;
	}
	log_info("memdom synthetic guest pid %d started: %" PRIu64 " pages, %s pattern, "
		 "%" PRIu64 " writes/s (0 = unthrottled)", (int)m->pid, m->npages,
		 cfg->workload_pattern == PATTERN_SEQUENTIAL ? "sequential" :
		 cfg->workload_pattern == PATTERN_HOTSET ? "hotset" : "random",
		 cfg->workload_rate);
	return 0;
}

/*
 * open: validate the configuration; on the primary check the kernel's
 * dirty-tracking features and start the guest child (running), on the
 * backup only allocate the driver state.  Returns 0, -EINVAL for a bad
 * memory size, -ENOTSUP when the kernel lacks what memdom needs, -errno.
 */
static int memdom_open(struct domain *d)
{
	const struct tandem_config *cfg = d->cfg;
	struct memdom *m;
	int rc;

	if (cfg->memory < PAGE_SZ || cfg->memory % PAGE_SZ) {
		log_error("memdom memory must be a positive multiple of 4 KiB (got %" PRIu64 ")",
			  cfg->memory);
		return -EINVAL;
	}
	if (cfg->workload_pattern < PATTERN_SEQUENTIAL || cfg->workload_pattern > PATTERN_HOTSET) {
		log_error("unknown memdom workload pattern %d", cfg->workload_pattern);
		return -EINVAL;
	}
	m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->d = d;
	m->npages = cfg->memory / PAGE_SZ;
	m->ack_fd = -1;
	m->pagemap_fd = -1;
	m->scan_regions = SCAN_REGIONS;
	/* a piece of the initial copy: a slice, and at most a quarter of
	 * staging-limit (the backup stages each piece whole) */
	m->slice_pages = SLICE_PAGES;
	if (d->cfg->staging_limit / 4 / (PAGE_SZ + 8) < m->slice_pages)
		m->slice_pages = d->cfg->staging_limit / 4 / (PAGE_SZ + 8) > 256 ?
				 d->cfg->staging_limit / 4 / (PAGE_SZ + 8) : 256;
	d->priv = m;
	if (d->role == ROLE_PRIMARY) {
		rc = open_primary(m);
		if (rc) {
			memdom_close(d);
			return rc;
		}
	}
	return 0;
}

/* close: kill and reap any guest child, free everything.  NULL-safe. */
static void memdom_close(struct domain *d)
{
	struct memdom *m = d ? d->priv : NULL;

	if (!m)
		return;
	guest_kill(m);
	if (m->sh)
		munmap(m->sh, PAGE_SZ);
	if (m->image)
		munmap(m->image, m->npages * PAGE_SZ);
	free(m->regions);
	free(m->iov);
	free(m);
	d->priv = NULL;
}

/* ---- ops: primary ------------------------------------------------------------ */

static int memdom_suspend(struct domain *d)
{
	struct memdom *m = d->priv;
	int rc;

	if (!m->pid)
		return -ESHUTDOWN;	/* the guest exited: domain.h, suspend */
	if (m->suspended)
		return 0;
	if (m->net)
		__atomic_store_n(&m->sh->stop_req, 1, __ATOMIC_SEQ_CST);
	/* SIGSTOP takes effect when the child returns to user mode: a child
	 * inside a disk write (memdom-disk-writes) stops only once the write
	 * completes, and DRBD may hold writes for seconds (its fence-peer
	 * handler, a resync).  A Xen vCPU does not wait for its disk; the
	 * synthetic guest waits longer rather than end protection. */
	unsigned stop_ms = m->d->cfg->memdom_disk_writes[0] ? DISK_STOP_TIMEOUT_MS : STOP_TIMEOUT_MS;

	if (kill(m->pid, SIGSTOP) < 0) {
		rc = -errno;
		log_perror("cannot stop memdom guest pid %d", (int)m->pid);
		return rc;
	}
	rc = wait_stopped(m, stop_ms);
	/* Stopped inside a step that sends: let it finish that step (see
	 * struct guest_shared); it stops itself at its end. */
	if (!rc && m->net && __atomic_load_n(&m->sh->tx_busy, __ATOMIC_SEQ_CST)) {
		kill(m->pid, SIGCONT);
		rc = wait_stopped(m, stop_ms);
	}
	if (rc == -ETIMEDOUT) {
		__atomic_store_n(&m->sh->stop_req, 0, __ATOMIC_SEQ_CST);
		kill(m->pid, SIGCONT);
		log_error("memdom guest pid %d did not stop within %u ms; resumed it",
			  (int)m->pid, stop_ms);
	}
	if (rc == -ESRCH)
		return -ESHUTDOWN;
	if (rc)
		return rc;
	m->suspended = true;
	return 0;
}

static int memdom_resume(struct domain *d)
{
	struct memdom *m = d->priv;
	int rc;

	if (!m->pid || guest_exited(m))
		return -ESHUTDOWN;	/* it ended while suspended: nothing to resume */
	__atomic_store_n(&m->sh->stop_req, 0, __ATOMIC_SEQ_CST);
	if (kill(m->pid, SIGCONT) < 0) {
		rc = -errno;
		log_perror("cannot continue memdom guest pid %d", (int)m->pid);
		return rc;
	}
	m->suspended = false;
	return 0;
}

/* probe: a suspend and a resume, as a checkpoint's without its capture. */
static int memdom_probe(struct domain *d, bool log_dirty, struct domain_probe_cycle *out)
{
	struct memdom *m = d->priv;
	uint64_t t0 = now_ns(), t1;
	int rc;

	*out = (struct domain_probe_cycle){ .dirty_pages = UINT64_MAX };
	rc = memdom_suspend(d);

	t1 = now_ns();
	if (rc)
		return rc;
	if (log_dirty) {
		/* no dirty log outside protection: the distinct pages its writes
		 * since the last cycle touched, expected for its pattern */
		uint64_t step = m->sh->regs[m->sh->cur & 1].step, w = step - m->probe_step;
		double n = (double)(m->sh->pattern == PATTERN_HOTSET ?
				    hot_pages_of(m->sh->hotset, m->npages) : m->npages);

		if (m->probe_step_set)
			out->dirty_pages = m->sh->pattern == PATTERN_SEQUENTIAL ?
				       (uint64_t)((double)w < n ? (double)w : n) :
				       (uint64_t)(n * (1.0 - exp(-(double)w / n)));
		m->probe_step = step;
		m->probe_step_set = true;
	}
	rc = memdom_resume(d);
	out->suspend_us = (t1 - t0) / 1000;
	out->resume_us = (now_ns() - t1) / 1000;
	return rc;
}

/*
 * capture: while suspended, append the pages written since the last
 * harvest (all pages after a lost harvest) and the vCPU block to c, and
 * set c->guest_pages.
 */
static int memdom_capture(struct domain *d, struct ckpt *c)
{
	struct memdom *m = d->priv;
	uint8_t state[MEMDOM_STATE_LEN];
	uint64_t t0 = now_ns();
	int rc;

	if (!m->pid || !m->suspended || !m->tracking) {
		log_error("memdom capture needs a suspended, protected guest");
		return -EINVAL;
	}
	if (fault_hit("guest-ends-suspended")) {
		/* what `xl destroy` of a guest suspended for a checkpoint is */
		siginfo_t si;

		log_warn("fault point 'guest-ends-suspended' fired: killing the guest (pid %d) "
			 "while it is suspended", (int)m->pid);
		kill(m->pid, SIGKILL);
		memset(&si, 0, sizeof(si));
		(void)waitid(P_PID, (id_t)m->pid, &si, WEXITED | WNOWAIT);
	}
	c->guest_pages = m->npages;
	if (m->need_full) {
		/* Re-arm every page, then copy them all. */
		uint64_t n0 = c->npages;

		rc = harvest(m, c, NULL, NULL, NULL);
		if (rc)
			return rc;
		c->npages = n0;
		rc = copy_range(m, c, 0, m->npages);
		if (rc)
			return rc;
		m->need_full = false;
		log_info("memdom: copied all %" PRIu64 " pages after an earlier failure", m->npages);
	} else {
		rc = harvest(m, c, NULL, NULL, NULL);
		if (rc)
			return rc;
	}
	if (d->drop_page && c->npages) {
		/* the oracle's negative control: a dirty page left out, its
		 * tracking re-armed, as a write behind log-dirty's back */
		d->dropped_pfn = c->pfns[--c->npages];
		d->dropped = true;
	}
	d->drop_page = false;
	state_encode(m->sh, state);
	rc = ckpt_set_state(c, STATE_VCPU, state, MEMDOM_STATE_LEN);
	if (rc) {
		m->need_full = true;
		return rc;
	}
	c->captured_at_ns = now_ns();
	c->t_capture_us = (c->captured_at_ns - t0) / 1000;
	return 0;
}

static int memdom_dirty_pages(struct domain *d, uint64_t *pages);

struct round_ctx {
	const struct domain_sink *sink;
	struct domain_progress prog;
};

/* Deliver one initial-copy ckpt (while the guest runs) and empty it. */
static int deliver_initial(struct memdom *m, struct ckpt *c, void *arg)
{
	struct round_ctx *rc_ = arg;
	uint64_t n = c->npages;
	int rc;

	c->flags |= CKPT_F_INITIAL;
	c->guest_pages = m->npages;
	rc = rc_->sink->deliver(rc_->sink->arg, c, false);
	if (rc) {
		log_error("memdom: delivering initial round %u failed: %s", rc_->prog.round,
			  strerror(rc < 0 ? -rc : rc));
		return rc < 0 ? rc : -EIO;
	}
	rc_->prog.pages_done += n;
	if (rc_->sink->progress)
		rc_->sink->progress(rc_->sink->arg, &rc_->prog);
	ckpt_reset(c, 0);
	c->flags = CKPT_F_INITIAL;
	c->guest_pages = m->npages;
	return 0;
}


/*
 * start_protection: write-protect the guest (inside the child), copy it in
 * rounds while it runs (round 0: every page, in slices of SLICE_PAGES;
 * then the pages dirtied since the previous round) until a round finds at
 * most SMALL_DIRTY pages or MAX_ROUNDS rounds have run, then suspend,
 * capture, deliver the first checkpoint (final = true) and resume.  Every
 * ckpt is delivered with epoch 0; the sink may renumber it.  Progress:
 * pages_done counts the pages copied in the current round, pages_total is
 * the guest's size.  Calling it again restarts protection with a full copy.
 */
static int memdom_start_protection(struct domain *d, const struct domain_sink *sink)
{
	struct memdom *m = d->priv;
	struct round_ctx ctx = { .sink = sink };
	struct ckpt *c = NULL;
	bool suspended = false;
	uint64_t dirty = 0, prev_dirty = m->npages;	/* round 0 copied them all */
	int rc;

	if (d->role != ROLE_PRIMARY) {
		log_error("memdom start_protection needs a primary guest");
		return -EINVAL;
	}
	if (guest_exited(m)) {
		log_error("memdom guest ended before its initial copy");
		return -ESHUTDOWN;	/* domain.h: the guest ended */
	}
	c = ckpt_new(m->slice_pages);
	if (!c)
		return -ENOMEM;
	/* The output is buffered by now: the guest may start sending. */
	__atomic_store_n(&m->sh->net_on, 1, __ATOMIC_RELEASE);
	rc = m->full_copy ? 0 : send_command(m, CMD_TRACK);
	if (rc) {
		log_error("memdom guest pid %d could not turn on dirty tracking: %s",
			  (int)m->pid, strerror(-rc));
		goto out;
	}
	m->tracking = true;
	m->need_full = false;
	ctx.prog.pages_total = m->npages;

	/* Round 0: every page.  Writes after the protection above show up later. */
	ckpt_reset(c, 0);
	for (uint64_t first = 0; first < m->npages; first += m->slice_pages) {
		uint64_t n = m->npages - first < m->slice_pages ? m->npages - first : m->slice_pages;

		rc = copy_range(m, c, first, n);
		if (rc)
			goto out;
		rc = deliver_initial(m, c, &ctx);
		if (rc)
			goto out;
	}
	log_debug("memdom: round 0 copied %" PRIu64 " pages", m->npages);

	for (ctx.prog.round = 1; ctx.prog.round < MAX_ROUNDS; ctx.prog.round++) {
		ctx.prog.pages_done = 0;
		rc = harvest(m, c, deliver_initial, &ctx, &dirty);
		if (!rc && c->npages)
			rc = deliver_initial(m, c, &ctx);
		if (rc)
			goto out;
		log_debug("memdom: round %u copied %" PRIu64 " dirty pages", ctx.prog.round, dirty);
		if (dirty <= SMALL_DIRTY)
			break;
		if (prev_dirty && dirty * 10 >= prev_dirty * 9) {
			log_info("memdom: the initial copy does not converge (round %u: %" PRIu64
				 " dirty pages, round before: %" PRIu64 "): stop-and-copy now",
				 ctx.prog.round, dirty, prev_dirty);
			break;
		}
		prev_dirty = dirty;
	}

	/* The last piece: the guest stopped while what it dirtied since is
	 * copied and shipped, in slices like the rounds before when it is
	 * bigger than one (the rounds did not converge: the guest dirties
	 * faster than the link carries).  Shipping those slices while the
	 * guest still runs would only dirty it all again, and the first
	 * checkpoint would not fit staging: so the pause lasts until they are
	 * shipped, stated in the log, bounded by the guest's size over the
	 * link's rate. */
	rc = memdom_suspend(d);
	if (rc)
		goto out;
	suspended = true;
	{
		uint64_t t0 = now_ns(), paused_ns, left = 0, shipped = 0;
		bool sliced;

		/* more than a slice dirty: ship it in slices straight from the
		 * paused guest (memory: a slice, not the guest) */
		rc = memdom_dirty_pages(d, &left);
		sliced = !rc && left > m->slice_pages;
		if (sliced) {
			ckpt_reset(c, 0);
			c->flags = CKPT_F_INITIAL;
			c->guest_pages = m->npages;
			rc = harvest(m, c, deliver_initial, &ctx, &shipped);
			if (!rc && c->npages)
				rc = deliver_initial(m, c, &ctx);
		}
		if (rc)
			goto out;
		ckpt_reset(c, 0);
		rc = memdom_capture(d, c);
		if (!rc)
			rc = sink->deliver(sink->arg, c, true);
		if (!rc) {
			rc = memdom_resume(d);
			suspended = false;
		}
		paused_ns = now_ns() - t0;
		log_info("memdom guest pid %d: the initial copy's stop-and-copy paused it %.1f ms "
			 "for %" PRIu64 " pages%s", (int)m->pid, (double)paused_ns / 1e6,
			 c->npages + shipped,
			 sliced ? " (the rounds did not converge: shipped in slices while paused)" : "");
	}
	if (rc) {
		log_error("memdom: delivering the first checkpoint failed");
		rc = rc < 0 ? rc : -EIO;
		goto out;
	}
	log_info("memdom guest pid %d protected: first checkpoint has %" PRIu64 " pages "
		 "after %u copy rounds", (int)m->pid, c->npages,
		 ctx.prog.round < MAX_ROUNDS ? ctx.prog.round + 1 : MAX_ROUNDS);
out:
	if (suspended) {
		int r = memdom_resume(d);
		if (!rc)
			rc = r;
	}
	if (rc && m->tracking)
		m->need_full = true;
	if (rc && rc != -ESHUTDOWN && guest_exited(m))
		rc = -ESHUTDOWN;	/* it died during its copy */
	ckpt_free(c);
	return rc;
}

/* stop_protection: turn tracking off in the child (call while it runs). */
static void memdom_stop_protection(struct domain *d)
{
	struct memdom *m = d->priv;

	if (!m->tracking)
		return;
	if (m->suspended)
		memdom_resume(d);
	if (m->full_copy || send_command(m, CMD_UNTRACK) == 0)
		m->tracking = false;
}

/* halt: the synthetic guest stays stopped (SIGSTOP), or is killed. */
static int memdom_halt(struct domain *d, bool destroy)
{
	struct memdom *m = d->priv;

	if (!m->pid)
		return 0;
	if (destroy) {
		guest_kill(m);
		return 0;
	}
	return memdom_suspend(d);
}

/*
 * become_primary: the activated guest child, running on, is now the
 * primary's guest (re-protection after a failover): the dirty-tracking
 * state the primary needs (its pagemap, the scan buffers), as open_primary
 * sets it up for a guest it starts.  The standby image is dropped: the
 * child has its own copy since the fork.
 */
static int memdom_become_primary(struct domain *d)
{
	struct memdom *m = d->priv;
	char path[64];
	int rc;

	m->d = d;
	if (!m->activated || !m->pid) {
		log_error("memdom: no activated guest to protect");
		return -EINVAL;
	}
	rc = check_kernel();
	if (rc == -ENOTSUP) {	/* as open_primary: copy all of it each time */
		log_warn("memdom falls back to copying all %" PRIu64 " guest pages at every "
			 "checkpoint (no dirty tracking on this kernel)", m->npages);
		m->full_copy = true;
		rc = 0;
	}
	if (rc)
		return rc;
	if (!m->regions)
		m->regions = calloc(SCAN_REGIONS, sizeof(*m->regions));
	if (!m->iov)
		m->iov = calloc(IOV_MAX, sizeof(*m->iov));
	if (!m->regions || !m->iov)
		return -ENOMEM;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)m->pid);
	m->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (m->pagemap_fd < 0) {
		rc = -errno;
		log_perror("cannot open %s", path);
		return rc;
	}
	if (m->image) {
		munmap(m->image, m->npages * PAGE_SZ);
		m->image = NULL;
	}
	m->have_state = false;
	log_info("memdom synthetic guest pid %d, activated here, is now the primary's guest",
		 (int)m->pid);
	return 0;
}

/* ---- ops: backup ------------------------------------------------------------- */

/* prepare_standby: a zeroed image of the guest memory and no vCPU state yet. */
static int memdom_prepare_standby(struct domain *d)
{
	struct memdom *m = d->priv;
	uint64_t size = m->npages * PAGE_SZ;
	void *p;
	int rc;

	if (m->activated) {
		log_error("memdom standby was already activated");
		return -EINVAL;
	}
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		 -1, 0);
	if (p == MAP_FAILED) {
		rc = -errno;
		log_perror("cannot map a %" PRIu64 "-byte memdom standby", size);
		return rc;
	}
	if (m->image)
		munmap(m->image, size);
	m->image = p;
	memset(m->state, 0, sizeof(m->state));
	m->have_state = false;
	return 0;
}

/*
 * commit: validate everything first (guest size, every pfn, the state
 * block; a checkpoint that is not an initial round must carry state), then
 * apply, so an error leaves the image as it was.
 */
static int memdom_commit(struct domain *d, const struct ckpt *c)
{
	struct memdom *m = d->priv;

	if (!m->image || m->activated) {
		log_error("memdom commit without a standby");
		return -EINVAL;
	}
	if (c->guest_pages != m->npages) {
		log_error("checkpoint %" PRIu64 " is for a guest of %" PRIu64 " pages, the standby "
			  "has %" PRIu64 " (do both sides configure the same memory?)",
			  c->epoch, c->guest_pages, m->npages);
		return -EINVAL;
	}
	for (uint64_t i = 0; i < c->npages; i++) {
		if (c->pfns[i] >= m->npages) {
			log_error("checkpoint %" PRIu64 " has page %" PRIu64 " beyond the guest's "
				  "%" PRIu64 " pages", c->epoch, c->pfns[i], m->npages);
			return -EINVAL;
		}
	}
	if (c->blob_len) {
		log_error("checkpoint %" PRIu64 " carries a driver stream memdom does not use",
			  c->epoch);
		return -EINVAL;
	}
	if (c->state_kind || c->state_len) {
		if (c->state_kind != STATE_VCPU ||
		    state_decode(c->state, c->state_len, m->npages * PAGE_SZ, NULL)) {
			log_error("checkpoint %" PRIu64 " has an invalid memdom vCPU state "
				  "(kind %u, %u bytes)", c->epoch, c->state_kind, c->state_len);
			return -EINVAL;
		}
	} else if (!(c->flags & CKPT_F_INITIAL)) {
		log_error("checkpoint %" PRIu64 " has no vCPU state", c->epoch);
		return -EINVAL;
	}

	for (uint64_t i = 0; i < c->npages; i++)
		memcpy(m->image + c->pfns[i] * PAGE_SZ, c->pages + i * PAGE_SZ, PAGE_SZ);
	if (c->state_len) {
		memcpy(m->state, c->state, MEMDOM_STATE_LEN);
		m->have_state = true;
	}
	return 0;
}

/*
 * activate: fork a guest child from the committed image and state and let
 * it run at once.  The child's memory at its start is a fork copy of
 * m->image, which the daemon never writes again, so the hash of what it
 * started from (memdom_activated_hash) is computed later, on demand, off
 * the failover path.
 */
static int memdom_activate(struct domain *d)
{
	struct memdom *m = d->priv;
	uint8_t st[MEMDOM_STATE_LEN];
	int rc;

	if (m->activated) {
		log_error("memdom standby is already active");
		return -EINVAL;
	}
	if (!m->image || !m->have_state) {
		log_error("memdom cannot activate: no complete checkpoint has been committed");
		return -EINVAL;
	}
	m->sh = map_shared();
	if (!m->sh)
		return -ENOMEM;
	rc = state_decode(m->state, MEMDOM_STATE_LEN, 0, m->sh);
	if (rc)
		goto out;
	m->sh->net_on = 1;	/* the activated guest goes on sending at once */
	m->base = m->image;
	rc = guest_start(m, true);
	if (rc)
		goto out;
	state_encode(m->sh, st);
	memcpy(m->activated_state, st, MEMDOM_STATE_LEN);
	m->activated_hash_valid = false;
	m->activated = true;
	rc = memdom_resume(d);
	if (rc)
		goto out;
	log_info("memdom synthetic guest pid %d activated at step %" PRIu64, (int)m->pid,
		 m->sh->regs[0].step);
out:
	if (rc && !m->activated && m->sh) {
		munmap(m->sh, PAGE_SZ);
		m->sh = NULL;
	}
	return rc;
}

/* discard: drop the standby image and state. */
static void memdom_discard(struct domain *d)
{
	struct memdom *m = d->priv;

	if (m->image && !m->activated) {
		munmap(m->image, m->npages * PAGE_SZ);
		m->image = NULL;
	}
	m->have_state = false;
}

/* ---- ops: inspection --------------------------------------------------------- */

static int memdom_guest_hash(struct domain *d, uint8_t out[32])
{
	struct memdom *m = d->priv;

	if (d->role == ROLE_PRIMARY)
		return memdom_live_hash(d, out);
	if (m->activated)
		return memdom_activated_hash(d, out);
	if (!m->image)
		return -ENOENT;
	return hash_guest(m, 0, m->image, m->state, out);
}

/* ---- ops: sizing the next checkpoint ------------------------------------------- */

/* Written pages since the last harvest: the same scan, without re-arming. */
static int memdom_dirty_pages(struct domain *d, uint64_t *pages)
{
	struct memdom *m = d->priv;
	uint64_t start = (uintptr_t)m->base, end = start + m->npages * PAGE_SZ, total = 0;

	if (!m->pid || !m->tracking)
		return -EINVAL;
	if (m->need_full || m->full_copy) {
		*pages = m->npages;
		return 0;
	}
	while (start < end) {
		struct pm_scan_arg sa = {
			.size = sizeof(sa), .flags = 0, .start = start, .end = end,
			.vec = (uintptr_t)m->regions, .vec_len = m->scan_regions,
			.category_mask = PAGE_IS_WRITTEN, .return_mask = PAGE_IS_WRITTEN,
		};
		long n = ioctl(m->pagemap_fd, PAGEMAP_SCAN, &sa);

		if (n < 0)
			return -errno;
		for (long i = 0; i < n; i++)
			total += (m->regions[i].end - m->regions[i].start) / PAGE_SZ;
		if (sa.walk_end <= start)
			return -EIO;
		start = sa.walk_end;
	}
	*pages = total;
	return 0;
}

/* Paused = stopped as for a checkpoint; the next checkpoint's suspend
 * finds it stopped, its resume lets it run. */
static int memdom_throttle(struct domain *d, bool pause)
{
	return pause ? memdom_suspend(d) : memdom_resume(d);
}

/* Slow the guest to pct percent of the CPU it would use (100: no limit). */
static int memdom_set_speed(struct domain *d, unsigned pct)
{
	struct memdom *m = d->priv;

	if (!m || !m->sh || pct < 1 || pct > 100)
		return -EINVAL;
	__atomic_store_n(&m->sh->speed, pct >= 100 ? 0 : pct, __ATOMIC_RELAXED);
	return 0;
}

/* ---- ops: the checkpoint oracle ------------------------------------------------ */

/* Hash v's pages [from, v->n) from the suspended guest child: runs of
 * consecutive pfns in one process_vm_readv each (at most 256 pages). */
static int verify_read(struct memdom *m, struct verify_set *v, uint32_t from)
{
	const uint32_t max_run = 256;
	uint8_t *buf = malloc(max_run * PAGE_SZ);

	if (!buf)
		return -ENOMEM;
	for (uint32_t i = from; i < v->n;) {
		uint32_t k = 1;
		struct iovec li, ri;

		if (v->pfns[i] >= m->npages) {
			v->hashes[i++] = VERIFY_ABSENT;
			continue;
		}
		while (i + k < v->n && k < max_run && v->pfns[i + k] == v->pfns[i] + k &&
		       v->pfns[i + k] < m->npages)
			k++;
		li = (struct iovec){ buf, k * PAGE_SZ };
		ri = (struct iovec){ m->base + v->pfns[i] * PAGE_SZ, k * PAGE_SZ };
		if (process_vm_readv(m->pid, &li, 1, &ri, 1, 0) != (ssize_t)(k * PAGE_SZ)) {
			int rc = -errno;

			log_error("cannot read memdom guest pid %d memory: %s", (int)m->pid,
				  strerror(errno));
			free(buf);
			return rc ? rc : -EIO;
		}
		for (uint32_t j = 0; j < k; j++)
			v->hashes[i + j] = verify_page_hash(buf + j * PAGE_SZ);
		i += k;
	}
	free(buf);
	return 0;
}

static int memdom_verify_capture(struct domain *d, struct verify_set *v)
{
	struct memdom *m = d->priv;
	uint8_t state[MEMDOM_STATE_LEN];
	uint64_t want = d->cfg->verify / PAGE_SZ ? d->cfg->verify / PAGE_SZ : 1;
	uint32_t from = v->n;

	if (!m->pid || !m->suspended)
		return -EINVAL;
	if (d->dropped)
		verify_set_add(v, d->dropped_pfn);
	if (want > m->npages)
		want = m->npages;
	for (uint64_t i = 0; i < want && v->n < v->cap; i++) {
		if (m->verify_cursor >= m->npages)
			m->verify_cursor = 0;
		verify_set_add(v, m->verify_cursor++);
	}
	state_encode(m->sh, state);
	verify_state_hash(state, MEMDOM_STATE_LEN, v->vcpu);
	v->has_vcpu = true;
	return verify_read(m, v, from);
}

static int memdom_verify_standby(struct domain *d, const struct ckpt *c, const struct verify_set *v,
				 uint64_t *got, uint8_t got_vcpu[32], bool *has_vcpu)
{
	struct memdom *m = d->priv;

	(void)c;
	if (!m->image || m->activated)
		return -EINVAL;
	for (uint32_t i = 0; i < v->n; i++)
		got[i] = v->pfns[i] < m->npages ? verify_page_hash(m->image + v->pfns[i] * PAGE_SZ)
						 : VERIFY_ABSENT;
	*has_vcpu = m->have_state;
	if (m->have_state)
		verify_state_hash(m->state, MEMDOM_STATE_LEN, got_vcpu);
	return 0;
}

static void memdom_describe(struct domain *d, char *buf, size_t len)
{
	struct memdom *m = d->priv;
	char size[32];

	format_size(d->cfg->memory, size, sizeof(size));
	if (m && m->pid)
		snprintf(buf, len, "memdom synthetic guest pid %d, %s, step %" PRIu64
			 "%s (not a real workload)", (int)m->pid, size, memdom_guest_steps(d),
			 m->suspended ? ", suspended" : "");
	else if (m && m->image)
		snprintf(buf, len, "memdom synthetic standby, %s, step %" PRIu64
			 " (not a real workload)", size, memdom_guest_steps(d));
	else
		snprintf(buf, len, "memdom synthetic guest, %s (not a real workload)", size);
}

const struct domain_ops memdom_ops = {
	.name = "memdom",
	.open = memdom_open,
	.close = memdom_close,
	.start_protection = memdom_start_protection,
	.suspend = memdom_suspend,
	.capture = memdom_capture,
	.resume = memdom_resume,
	.stop_protection = memdom_stop_protection,
	.halt = memdom_halt,
	.prepare_standby = memdom_prepare_standby,
	.commit = memdom_commit,
	.activate = memdom_activate,
	.discard = memdom_discard,
	.become_primary = memdom_become_primary,
	.probe = memdom_probe,
	.guest_hash = memdom_guest_hash,
	.dirty_pages = memdom_dirty_pages,
	.throttle = memdom_throttle,
	.set_speed = memdom_set_speed,
	.verify_capture = memdom_verify_capture,
	.verify_standby = memdom_verify_standby,
	.describe = memdom_describe,
};

/* ---- extra API (memdom.h) --------------------------------------------------- */

uint64_t memdom_guest_steps(struct domain *d)
{
	struct memdom *m = d->priv;
	uint32_t cur;

	if (!m)
		return 0;
	if (m->sh && (m->pid || m->activated)) {
		cur = __atomic_load_n(&m->sh->cur, __ATOMIC_ACQUIRE) & 1;
		return __atomic_load_n(&m->sh->regs[cur].step, __ATOMIC_RELAXED);
	}
	if (m->have_state)
		return get_le64(m->state + 48);
	return 0;
}

pid_t memdom_guest_pid(struct domain *d)
{
	struct memdom *m = d->priv;

	return m ? m->pid : 0;
}

int memdom_state_step(const struct ckpt *c, uint64_t *step)
{
	if (c->state_kind != STATE_VCPU || state_decode(c->state, c->state_len, 0, NULL))
		return -EINVAL;
	*step = get_le64(c->state + 48);
	return 0;
}

int memdom_run_until(struct domain *d, uint64_t step, unsigned timeout_ms)
{
	struct memdom *m = d->priv;
	int rc;

	if (!m->pid)
		return -ESRCH;
	if (m->suspended || memdom_guest_steps(d) >= step)
		return -EINVAL;
	__atomic_store_n(&m->sh->stop_at, step, __ATOMIC_RELEASE);
	/* The guest may have passed the step between the check and the store. */
	rc = wait_stopped(m, timeout_ms);
	if (rc) {
		__atomic_store_n(&m->sh->stop_at, 0, __ATOMIC_RELEASE);
		return rc;
	}
	m->suspended = true;
	if (memdom_guest_steps(d) != step) {
		log_error("memdom guest pid %d stopped at step %" PRIu64 ", not %" PRIu64,
			  (int)m->pid, memdom_guest_steps(d), step);
		return -EINVAL;
	}
	return 0;
}

int memdom_live_hash(struct domain *d, uint8_t out[32])
{
	struct memdom *m = d->priv;
	uint8_t state[MEMDOM_STATE_LEN];

	if (!m->pid)
		return -ESRCH;
	state_encode(m->sh, state);
	return hash_guest(m, m->pid, NULL, state, out);
}

void memdom_test_tune(struct domain *d, unsigned scan_regions, unsigned slice_pages)
{
	struct memdom *m = d->priv;

	if (scan_regions && scan_regions <= SCAN_REGIONS)
		m->scan_regions = scan_regions;
	if (slice_pages)
		m->slice_pages = slice_pages;
}

int memdom_activated_hash(struct domain *d, uint8_t out[32])
{
	struct memdom *m = d->priv;

	if (!m->activated)
		return -ENOENT;
	if (!m->activated_hash_valid) {
		int rc = hash_guest(m, 0, m->image, m->activated_state, m->activated_hash);
		if (rc)
			return rc;
		m->activated_hash_valid = true;
	}
	memcpy(out, m->activated_hash, 32);
	return 0;
}
