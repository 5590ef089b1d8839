/* dirtier: the lab guest's memory-dirtying workload, for comparing the
 * guest's speed and the pauses it sees unprotected, under xl remus and under
 * tandem.  Runs in the guest; controlled over TCP (default port 7001), one
 * command line per connection:
 *
 *   START <pages>   dirty <pages> 4 KiB pages (at most 16384) over and over (random page,
 *                   one cache line each), counting operations
 *   STATS           answer "STATS ops=N elapsed_ms=T stalls=K
 *                   stall_ms_p50=A stall_ms_max=B pages=P longest=L1,L2,..."
 *                   (the longest stalls first, as many as fit a line) for
 *                   the window since the last START/STATS, then start a
 *                   new window
 *   STOP            stop dirtying
 *   POWEROFF        answer "OK poweroff", sync, and power the guest off
 *                   (reboot(RB_POWER_OFF): the guest ends itself, as its own
 *                   shutdown would, with no toolstack request; for lab.sh
 *                   errors' guest_shutdown case).  Under tandem the answer
 *                   is output of an epoch that is never checkpointed: it
 *                   may never leave the host.
 *
 * A stall is a gap of more than STALL_MS between two batches of work as
 * seen by the guest's CLOCK_BOOTTIME: the workload was not running (frozen
 * for a checkpoint's suspend, the domain paused, or descheduled).
 * CLOCK_MONOTONIC would not do: Linux's resume from a (cancelled) suspend
 * adds the suspended time to boot time only.  The median stall over a
 * window is the pause the guest saw, measured the same way whoever paused it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define STALL_MS 15.0
#define MAX_STALLS 4096
#define MAX_PAGES 16384	/* 64 MiB: an allocation beyond the guest's RAM fails */
#define OPS_PER_BATCH 2000

static unsigned char *mem;
static unsigned npages;
static uint64_t ops, rng = 88172645463325252ULL;
static double win_start, last_batch;
static double stalls[MAX_STALLS];
static unsigned nstalls;

static double boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static void new_window(void)
{
	ops = 0;
	nstalls = 0;
	win_start = last_batch = boot_ms();
}

static void work(void)
{
	double t;
	int i;

	for (i = 0; i < OPS_PER_BATCH; i++) {
		rng ^= rng << 13;
		rng ^= rng >> 7;
		rng ^= rng << 17;
		mem[(size_t)(rng % npages) * 4096 + (size_t)((rng >> 32) % 64) * 64] += 1;
	}
	ops += OPS_PER_BATCH;
	t = boot_ms();
	if (t - last_batch > STALL_MS && nstalls < MAX_STALLS)
		stalls[nstalls++] = t - last_batch;
	last_batch = t;
}

static void answer(int fd, char *cmd)
{
	char out[2048];
	unsigned n;
	int len = 0;

	if (sscanf(cmd, "START %u", &n) == 1 && n > 0 && n <= MAX_PAGES) {
		npages = n;
		memset(mem, 1, (size_t)npages * 4096);
		new_window();
		len = snprintf(out, sizeof(out), "OK pages=%u\n", npages);
	} else if (strncmp(cmd, "STATS", 5) == 0) {
		double t = boot_ms(), p50 = 0, max = 0;

		if (nstalls) {
			qsort(stalls, nstalls, sizeof(stalls[0]), cmp_double);
			p50 = stalls[nstalls / 2];
			max = stalls[nstalls - 1];
		}
		len = snprintf(out, sizeof(out),
			       "STATS ops=%llu elapsed_ms=%.0f stalls=%u stall_ms_p50=%.1f "
			       "stall_ms_max=%.1f pages=%u longest=",
			       (unsigned long long)ops, t - win_start, nstalls, p50, max, npages);
		/* the longest stalls, longest first, whole ms, comma-separated */
		for (unsigned i = 0; i < nstalls && len < (int)sizeof(out) - 16; i++)
			len += snprintf(out + len, sizeof(out) - (size_t)len, "%s%.0f", i ? "," : "",
					stalls[nstalls - 1 - i]);
		len += snprintf(out + len, sizeof(out) - (size_t)len, "\n");
		new_window();
	} else if (strncmp(cmd, "POWEROFF", 8) == 0) {
		len = snprintf(out, sizeof(out), "OK poweroff\n");
		if (write(fd, out, (size_t)len) < 0)
			perror("dirtier: write");
		fprintf(stderr, "dirtier: POWEROFF: powering the guest off\n");
		sync();
		reboot(RB_POWER_OFF);
		perror("dirtier: reboot(RB_POWER_OFF)");	/* only if it failed */
		return;
	} else if (strncmp(cmd, "STOP", 4) == 0) {
		npages = 0;
		len = snprintf(out, sizeof(out), "OK stopped\n");
	} else {
		len = snprintf(out, sizeof(out), "ERR START <pages>|STATS|STOP|POWEROFF\n");
	}
	if (write(fd, out, (size_t)len) < 0)
		perror("dirtier: write");
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : 7001, lfd, one = 1;
	struct sockaddr_in sa;

	signal(SIGPIPE, SIG_IGN);
	mem = mmap(NULL, (size_t)MAX_PAGES * 4096, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (mem == MAP_FAILED || lfd < 0) {
		perror("dirtier");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 4) < 0) {
		perror("dirtier: bind/listen");
		return 1;
	}
	for (;;) {
		struct pollfd p = { .fd = lfd, .events = POLLIN };

		if (poll(&p, 1, npages ? 0 : -1) < 0 && errno != EINTR)
			return 1;
		if (p.revents & POLLIN) {
			int fd = accept(lfd, NULL, NULL);
			char cmd[64];
			ssize_t r;

			if (fd < 0)
				continue;
			/* one short line; a slow client must not stall the workload long */
			struct pollfd q = { .fd = fd, .events = POLLIN };
			if (poll(&q, 1, 2000) == 1 && (r = read(fd, cmd, sizeof(cmd) - 1)) > 0) {
				cmd[r] = '\0';
				answer(fd, cmd);
			}
			close(fd);
			if (npages)
				last_batch = boot_ms(); /* serving a command is not a stall */
		}
		if (npages)
			work();
	}
}
