/* seqcli: the lab's test client (see seqproto.h).  It runs in the lab's
 * network namespace on the `public` bridge and does continuous
 * request/response with the guest's seqsrv, detecting resets, gaps,
 * repeats, rollbacks and server restarts, and timing every stall.
 *
 * Usage: seqcli [options] HOST [PORT]
 *   -i MS    pause between a response and the next request (default 20)
 *   -t SEC   a request unanswered this long counts as a dead connection:
 *            the client closes it and reconnects (default 60)
 *   -d SEC   stop after SEC seconds (default: run until SIGTERM/SIGINT)
 *   -s FILE  rewrite FILE (atomically) every 200 ms with key=value status
 *   -n SID   session id (default: derived from pid and time)
 *   -1       connect, do one request/response, exit 0 on success (a probe)
 * SIGUSR1 makes it drop the connection and reconnect (HELLO compares the
 * server's count with its own, which shows a rollback across a failover).
 * Events go to stdout, one line each, prefixed with the wall-clock time.
 * On exit it prints one summary line "seqcli: summary key=value ...".
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "seqproto.h"

static volatile sig_atomic_t stop, reconnect_req;

static struct {
	uint64_t ok, resets, timeouts, gaps, repeats, rollbacks, reboots, conns, errors, forced;
	uint64_t last_count;    /* responses the client has seen in its session */
	uint64_t boot;          /* server boot id last seen (0 = none) */
	double start, last_ok, max_stall, max_stall_at, first_ok;
	int connected;
} st;

static const char *status_path;
static unsigned long long status_sid;	/* the session id, in the status file */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void event(const char *fmt, ...)
{
	va_list ap;

	printf("%.3f ", now());
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	fflush(stdout);
}

static void write_status(void)
{
	char tmp[4096];
	FILE *f;
	double t = now();

	if (!status_path)
		return;
	snprintf(tmp, sizeof(tmp), "%s.tmp", status_path);
	f = fopen(tmp, "w");
	if (!f)
		return;
	fprintf(f, "now=%.3f ok=%llu connected=%d conns=%llu resets=%llu timeouts=%llu gaps=%llu "
		"repeats=%llu rollbacks=%llu reboots=%llu errors=%llu last_count=%llu boot=%llu "
		"forced=%llu last_ok=%.3f last_ok_age_ms=%.0f max_stall_ms=%.0f max_stall_end=%.3f sid=%llu\n",
		t, (unsigned long long)st.ok, st.connected, (unsigned long long)st.conns,
		(unsigned long long)st.resets, (unsigned long long)st.timeouts,
		(unsigned long long)st.gaps, (unsigned long long)st.repeats,
		(unsigned long long)st.rollbacks, (unsigned long long)st.reboots,
		(unsigned long long)st.errors, (unsigned long long)st.last_count,
		(unsigned long long)st.boot, (unsigned long long)st.forced, st.last_ok,
		st.last_ok > 0 ? (t - st.last_ok) * 1000 : -1.0, st.max_stall * 1000,
		st.max_stall_at, status_sid);
	fclose(f);
	rename(tmp, status_path);
}

static void on_signal(int sig)
{
	if (sig == SIGUSR1)
		reconnect_req = 1;
	else
		stop = 1;
}

/* Connect with a timeout; returns fd or -1. */
static int dial(const char *host, int port, int timeout_ms)
{
	struct sockaddr_in sa;
	struct pollfd p;
	int fd, one = 1, err = 0;
	socklen_t el = sizeof(err);

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		return -1;
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS)
		goto fail;
	p.fd = fd;
	p.events = POLLOUT;
	if (poll(&p, 1, timeout_ms) != 1)
		goto fail;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err != 0)
		goto fail;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
fail:
	close(fd);
	return -1;
}

/* Read one line with a deadline.  Returns 1 line, 0 timeout, -1 closed/error. */
static int read_line(int fd, char *buf, size_t *len, char *line, double deadline)
{
	for (;;) {
		char *nl = memchr(buf, '\n', *len);
		struct pollfd p;
		double left;
		ssize_t r;
		int pr;

		if (nl) {
			size_t used = (size_t)(nl - buf) + 1;

			memcpy(line, buf, used - 1);
			line[used - 1] = '\0';
			memmove(buf, buf + used, *len - used);
			*len -= used;
			return 1;
		}
		if (*len >= SEQ_LINE_MAX)
			return -1;
		left = deadline - now();
		if (left <= 0)
			return 0;
		p.fd = fd;
		p.events = POLLIN;
		pr = poll(&p, 1, left > 0.2 ? 200 : (int)(left * 1000) + 1);
		if (stop || reconnect_req)
			return -1;
		if (pr < 0 && errno == EINTR)
			continue;
		if (pr <= 0) {
			write_status();
			continue;
		}
		r = read(fd, buf + *len, SEQ_LINE_MAX - *len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		*len += (size_t)r;
	}
}

static void check_boot(uint64_t boot)
{
	if (st.boot && boot != st.boot) {
		st.reboots++;
		event("event=reboot old_boot=%llu new_boot=%llu", (unsigned long long)st.boot,
		      (unsigned long long)boot);
	}
	st.boot = boot;
}

/* Compare the server's count with what the client expected. */
static void check_count(uint64_t count, uint64_t expect, const char *where)
{
	if (count < expect) {
		st.rollbacks++;
		event("event=rollback where=%s server_count=%llu expected=%llu lost=%llu", where,
		      (unsigned long long)count, (unsigned long long)expect,
		      (unsigned long long)(expect - count));
	} else if (count > expect) {
		st.gaps++;
		event("event=gap where=%s server_count=%llu expected=%llu missing=%llu", where,
		      (unsigned long long)count, (unsigned long long)expect,
		      (unsigned long long)(count - expect));
	}
}

static void got_ok(void)
{
	double t = now();

	if (st.last_ok > 0 && t - st.last_ok > st.max_stall) {
		st.max_stall = t - st.last_ok;
		st.max_stall_at = t;
	}
	if (st.last_ok > 0 && t - st.last_ok > 1.0)
		event("event=resumed stall_ms=%.0f", (t - st.last_ok) * 1000);
	if (st.first_ok == 0)
		st.first_ok = t;
	st.last_ok = t;
	st.ok++;
}

static void summary(void)
{
	printf("seqcli: summary ok=%llu conns=%llu resets=%llu timeouts=%llu gaps=%llu repeats=%llu "
	       "rollbacks=%llu reboots=%llu errors=%llu forced=%llu max_stall_ms=%.0f max_stall_end=%.3f "
	       "duration_s=%.1f\n",
	       (unsigned long long)st.ok, (unsigned long long)st.conns,
	       (unsigned long long)st.resets, (unsigned long long)st.timeouts,
	       (unsigned long long)st.gaps, (unsigned long long)st.repeats,
	       (unsigned long long)st.rollbacks, (unsigned long long)st.reboots,
	       (unsigned long long)st.errors, (unsigned long long)st.forced, st.max_stall * 1000,
	       st.max_stall_at,
	       now() - st.start);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *host;
	int port = SEQ_DEFAULT_PORT, interval_ms = 20, opt, probe = 0;
	double stall_timeout = 60, duration = 0;
	unsigned long long sid = 0;
	struct sigaction sa;

	while ((opt = getopt(argc, argv, "i:t:d:s:n:1")) != -1) {
		switch (opt) {
		case 'i': interval_ms = atoi(optarg); break;
		case 't': stall_timeout = atof(optarg); break;
		case 'd': duration = atof(optarg); break;
		case 's': status_path = optarg; break;
		case 'n': sid = strtoull(optarg, NULL, 10); break;
		case '1': probe = 1; break;
		default:
			fprintf(stderr, "usage: seqcli [-i ms] [-t sec] [-d sec] [-s file] [-n sid] [-1] HOST [PORT]\n");
			return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "seqcli: HOST missing\n");
		return 2;
	}
	host = argv[optind];
	if (optind + 1 < argc)
		port = atoi(argv[optind + 1]);

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGUSR1, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	st.start = now();
	if (!sid)
		sid = ((unsigned long long)getpid() << 20) ^ (unsigned long long)st.start;
	status_sid = sid;

	while (!stop && (duration <= 0 || now() - st.start < duration)) {
		char buf[SEQ_LINE_MAX + 1], line[SEQ_LINE_MAX + 1], out[SEQ_LINE_MAX];
		unsigned long long rsid, rn, rcount, rboot, rtotal;
		size_t len = 0;
		int fd, r, n;

		fd = dial(host, port, 2000);
		if (fd < 0) {
			if (probe)
				return 1;
			write_status();
			usleep(200000);
			continue;
		}
		st.conns++;
		n = snprintf(out, sizeof(out), "HELLO %llu\n", sid);
		if (write(fd, out, (size_t)n) != n ||
		    read_line(fd, buf, &len, line, now() + stall_timeout) != 1 ||
		    sscanf(line, "WELCOME %llu %llu %llu", &rsid, &rcount, &rboot) != 3 || rsid != sid) {
			close(fd);
			st.errors++;
			event("event=hello_failed");
			if (probe)
				return 1;
			usleep(200000);
			continue;
		}
		check_boot(rboot);
		if (st.conns > 1)
			check_count(rcount, st.last_count, "hello");
		st.last_count = rcount;
		st.connected = 1;
		event("event=connected conn=%llu server_count=%llu boot=%llu",
		      (unsigned long long)st.conns, rcount, rboot);

		while (!stop && (duration <= 0 || now() - st.start < duration)) {
			uint64_t expect = st.last_count + 1;

			n = snprintf(out, sizeof(out), "REQ %llu %llu\n", sid, (unsigned long long)expect);
			if (write(fd, out, (size_t)n) != n) {
				r = -1;
			} else {
				/* skip stale answers (n below what we asked for) as repeats */
				for (;;) {
					r = read_line(fd, buf, &len, line, now() + stall_timeout);
					if (r != 1)
						break;
					if (sscanf(line, "RSP %llu %llu %llu %llu %llu", &rsid, &rn, &rcount,
						   &rboot, &rtotal) != 5 || rsid != sid) {
						st.errors++;
						event("event=bad_line line=\"%.60s\"", line);
						continue;
					}
					if (rn < expect) {
						st.repeats++;
						event("event=repeat n=%llu expected=%llu", rn,
						      (unsigned long long)expect);
						continue;
					}
					break;
				}
			}
			if (r != 1) {
				if (stop)
					break;
				if (reconnect_req) {
					reconnect_req = 0;
					st.forced++;
					event("event=forced_reconnect");
					break;
				}
				if (r == 0) {
					st.timeouts++;
					event("event=timeout waited_s=%.0f", stall_timeout);
				} else {
					event("event=reset errno=%d (%s)", errno, strerror(errno));
				}
				st.resets++;
				break;
			}
			check_boot(rboot);
			check_count(rcount, expect, "rsp");
			st.last_count = rcount;
			got_ok();
			if (probe) {
				close(fd);
				printf("seqcli: probe ok count=%llu boot=%llu\n", rcount, rboot);
				return 0;
			}
			if (interval_ms > 0)
				usleep((useconds_t)interval_ms * 1000);
			if (st.ok % 10 == 0)
				write_status();
		}
		st.connected = 0;
		close(fd);
		write_status();
	}
	write_status();
	summary();
	return 0;
}
