/* seqsrv: the lab guest's TCP request/response service (see seqproto.h).
 * Single-threaded poll() loop; built static, runs as the guest's service.
 * Usage: seqsrv [port [file]]
 * With a file (the disk guest: on its ext4 disk), each answer to a REQ is
 * first appended to the file as a record "<sid> <count> <total>\n" and
 * fsync'd: a number the client has received is on the disk.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "seqproto.h"

#define MAX_CONN 64
#define MAX_SESS 256

struct conn {
	int fd;
	size_t len;
	char buf[SEQ_LINE_MAX + 1];
};

struct sess {
	uint64_t sid;
	uint64_t count;
};

static struct conn conns[MAX_CONN];
static struct sess sessions[MAX_SESS];
static unsigned nsess;
static uint64_t boot_id;
static uint64_t total;
static int rec_fd = -1;		/* the record file, or -1 */

/* Append the answer's record and fsync it; 0, or -1 (the answer is not sent). */
static int record(uint64_t sid, uint64_t count)
{
	char rec[96];
	int n = snprintf(rec, sizeof(rec), "%llu %llu %llu\n", (unsigned long long)sid,
			 (unsigned long long)count, (unsigned long long)total);
	const char *p = rec;

	if (rec_fd < 0)
		return 0;
	while (n > 0) {
		ssize_t w = write(rec_fd, p, (size_t)n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			perror("seqsrv: write record");
			return -1;
		}
		p += w;
		n -= (int)w;
	}
	if (fsync(rec_fd)) {
		perror("seqsrv: fsync record");
		return -1;
	}
	return 0;
}

static struct sess *session(uint64_t sid)
{
	unsigned i;

	for (i = 0; i < nsess; i++)
		if (sessions[i].sid == sid)
			return &sessions[i];
	if (nsess == MAX_SESS) { /* forget the oldest */
		memmove(&sessions[0], &sessions[1], sizeof(sessions[0]) * (MAX_SESS - 1));
		nsess--;
	}
	sessions[nsess].sid = sid;
	sessions[nsess].count = 0;
	return &sessions[nsess++];
}

static void drop(struct conn *c)
{
	close(c->fd);
	c->fd = -1;
	c->len = 0;
}

static int send_line(struct conn *c, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(c->fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

/* Returns -1 when the connection must be dropped. */
static int handle_line(struct conn *c, char *line)
{
	char out[SEQ_LINE_MAX];
	unsigned long long sid, n;
	int len;

	if (sscanf(line, "HELLO %llu", &sid) == 1) {
		struct sess *s = session(sid);

		len = snprintf(out, sizeof(out), "WELCOME %llu %llu %llu\n", sid,
			       (unsigned long long)s->count, (unsigned long long)boot_id);
	} else if (sscanf(line, "REQ %llu %llu", &sid, &n) == 2) {
		struct sess *s = session(sid);

		s->count++;
		total++;
		if (record(s->sid, s->count)) {
			/* not on the disk: no answer; the client times out */
			s->count--;
			total--;
			return -1;
		}
		len = snprintf(out, sizeof(out), "RSP %llu %llu %llu %llu %llu\n", sid, n,
			       (unsigned long long)s->count, (unsigned long long)boot_id,
			       (unsigned long long)total);
	} else {
		len = snprintf(out, sizeof(out), "ERR bad request\n");
		send_line(c, out, (size_t)len);
		return -1;
	}
	return send_line(c, out, (size_t)len);
}

static void on_readable(struct conn *c)
{
	ssize_t r = read(c->fd, c->buf + c->len, SEQ_LINE_MAX - c->len);
	char *nl;

	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r <= 0) {
		drop(c);
		return;
	}
	c->len += (size_t)r;
	c->buf[c->len] = '\0';
	while ((nl = memchr(c->buf, '\n', c->len)) != NULL) {
		size_t used = (size_t)(nl - c->buf) + 1;

		*nl = '\0';
		if (handle_line(c, c->buf) < 0) {
			drop(c);
			return;
		}
		memmove(c->buf, c->buf + used, c->len - used);
		c->len -= used;
		c->buf[c->len] = '\0';
	}
	if (c->len == SEQ_LINE_MAX) /* line too long */
		drop(c);
}

int main(int argc, char **argv)
{
	int port = argc > 1 ? atoi(argv[1]) : SEQ_DEFAULT_PORT;
	struct sockaddr_in sa;
	struct pollfd pfd[MAX_CONN + 1];
	struct timespec ts;
	int lfd, one = 1, i;

	signal(SIGPIPE, SIG_IGN);
	if (argc > 2) {
		rec_fd = open(argv[2], O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (rec_fd < 0 || fsync(rec_fd)) {
			perror("seqsrv: record file");
			return 1;
		}
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	boot_id = ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid()) % 1000000000ULL;
	{
		int rfd = open("/dev/urandom", O_RDONLY);
		uint32_t rnd;

		if (rfd >= 0 && read(rfd, &rnd, sizeof(rnd)) == (ssize_t)sizeof(rnd))
			boot_id = (boot_id ^ rnd) % 1000000000ULL;
		if (rfd >= 0)
			close(rfd);
	}

	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0) {
		perror("seqsrv: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_ANY);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 16) < 0) {
		perror("seqsrv: bind/listen");
		return 1;
	}
	for (i = 0; i < MAX_CONN; i++)
		conns[i].fd = -1;
	printf("seqsrv: listening on port %d boot=%llu%s%s\n", port, (unsigned long long)boot_id,
	       rec_fd >= 0 ? " records to " : "", rec_fd >= 0 ? argv[2] : "");
	fflush(stdout);

	for (;;) {
		int n = 0, map[MAX_CONN + 1];

		pfd[n].fd = lfd;
		pfd[n].events = POLLIN;
		map[n++] = -1;
		for (i = 0; i < MAX_CONN; i++) {
			if (conns[i].fd < 0)
				continue;
			pfd[n].fd = conns[i].fd;
			pfd[n].events = POLLIN;
			map[n++] = i;
		}
		if (poll(pfd, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			perror("seqsrv: poll");
			return 1;
		}
		for (i = 1; i < n; i++)
			if (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))
				on_readable(&conns[map[i]]);
		if (pfd[0].revents & POLLIN) {
			int fd = accept(lfd, NULL, NULL);

			if (fd < 0)
				continue;
			setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
			for (i = 0; i < MAX_CONN && conns[i].fd >= 0; i++)
				;
			if (i == MAX_CONN) {
				close(fd);
				continue;
			}
			conns[i].fd = fd;
			conns[i].len = 0;
		}
	}
}
