/*
 * qmppeer.c - a fake QMP peer for the tests (qmppeer.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "../domain/qmp.h"
#include "../lib/util.h"
#include "qmppeer.h"
#include "test.h"

void psend(struct peer *p, const char *s)
{
	if (write_full(p->fd, s, strlen(s)) != 0)
		FAILF("peer: write: %s", strerror(errno));
}

void psendf(struct peer *p, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	psend(p, buf);
}

/* One command line from the client (the client ends each with '\n'),
 * byte by byte with recvmsg so an fd on any byte is caught.  Returns its
 * index in p->cmd, or -1 at EOF. */
int precv(struct peer *p)
{
	int i = p->ncmd % PEER_CMDS, fd = -1;
	size_t n = 0;
	char *line;

	if (p->ncmd >= PEER_CMDS && !p->wrap)
		FAILF("peer: more than %d commands", PEER_CMDS);
	if (p->ncmd >= PEER_CMDS && p->cmd_fd[i] >= 0)
		close(p->cmd_fd[i]);	/* a slot used again: its fd is done with */
	line = p->cmd[i];
	for (;;) {
		char c, cbuf[CMSG_SPACE(sizeof(int))];
		struct iovec iov = { &c, 1 };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *cm;
		ssize_t r = recvmsg(p->fd, &mh, 0);

		if (r == 0)
			return -1;
		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
			if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
				memcpy(&fd, CMSG_DATA(cm), sizeof(int));
		if (c == '\n')
			break;
		if (n + 1 >= sizeof(p->cmd[0]))
			FAILF("peer: command line too long");
		line[n++] = c;
	}
	line[n] = '\0';
	p->cmd_fd[i] = fd;
	p->cmd_id[i] = -1;
	if (strstr(line, "\"id\":"))
		p->cmd_id[i] = strtoll(strstr(line, "\"id\":") + 5, NULL, 10);
	p->ncmd++;
	return i;
}

/* Receive a command, which must be `execute`; returns its index. */
int pexpect(struct peer *p, const char *execute)
{
	char want[128];
	int i = precv(p);

	if (i < 0)
		FAILF("peer: the client hung up, expected `%s`", execute);
	snprintf(want, sizeof(want), "{\"execute\":\"%s\"", execute);
	if (strncmp(p->cmd[i], want, strlen(want)))
		FAILF("peer: expected `%s`, got %s", execute, p->cmd[i]);
	return i;
}

void preturn(struct peer *p, int i, const char *value)
{
	psendf(p, "{\"return\": %s, \"id\": %lld}\r\n", value, (long long)p->cmd_id[i]);
}

void pgreet(struct peer *p)
{
	psend(p, GREETING);
	preturn(p, pexpect(p, "qmp_capabilities"), "{}");
}

/* Read until the client hangs up. */
void pdrain(struct peer *p)
{
	char buf[256];

	while (read(p->fd, buf, sizeof(buf)) > 0)
		;
}

static void *peer_main(void *arg)
{
	struct peer *p = arg;

	p->fd = accept(p->lfd, NULL, NULL);
	if (p->fd < 0)
		FAILF("peer: accept: %s", strerror(errno));
	p->script(p);
	close(p->fd);
	return NULL;
}

struct peer *peer_start(void (*script)(struct peer *), int arg)
{
	struct peer *p = calloc(1, sizeof(*p));
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	ASSERT(p);
	p->script = script;
	p->arg = arg;
	snprintf(p->path, sizeof(p->path), "%s/qmp.sock", test_tmpdir());
	unlink(p->path);
	ASSERT(strlen(p->path) < sizeof(sa.sun_path));
	memcpy(sa.sun_path, p->path, strlen(p->path) + 1);
	p->lfd = socket(AF_UNIX, SOCK_STREAM, 0);
	ASSERT(p->lfd >= 0);
	ASSERT(bind(p->lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	ASSERT(listen(p->lfd, 1) == 0);
	ASSERT(pthread_create(&p->thr, NULL, peer_main, p) == 0);
	return p;
}

void peer_join(struct peer *p)
{
	pthread_join(p->thr, NULL);
	close(p->lfd);
	unlink(p->path);
	for (int i = 0; i < MIN(p->ncmd, PEER_CMDS); i++)
		if (p->cmd_fd[i] >= 0)
			close(p->cmd_fd[i]);
	free(p);
}

struct qmp *popen_ok(struct peer *p)
{
	char err[QMP_ERROR_MAX];
	struct qmp *q = NULL;
	int rc = qmp_open(p->path, NULL, 2000, &q, err, sizeof(err));

	if (rc)
		FAILF("qmp_open: %d (%s)", rc, err);
	ASSERT(q);
	return q;
}

