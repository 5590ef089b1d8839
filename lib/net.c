/*
 * net.c - TCP helpers for the replication link, and the status socket's client.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "net.h"

static int resolve(const struct config_addr *addr, struct addrinfo **res, bool passive)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0 };
	char port[8];

	snprintf(port, sizeof(port), "%u", addr->port);
	return getaddrinfo(addr->host, port, &hints, res);
}

int net_listen(const struct config_addr *addr, char *err, size_t errlen)
{
	struct addrinfo *res = NULL;
	int fd = -1, one = 1, r;

	r = resolve(addr, &res, true);
	if (r) {
		snprintf(err, errlen, "cannot resolve %s: %s", addr->host, gai_strerror(r));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto fail;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) < 0 || listen(fd, 64) < 0)
		goto fail;
	freeaddrinfo(res);
	return fd;
fail:
	r = -errno;
	snprintf(err, errlen, "cannot listen on %s:%u: %s", addr->host, addr->port, strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return r;
}

int net_connect(const struct config_addr *addr, uint64_t timeout_ms, char *err, size_t errlen)
{
	struct addrinfo *res = NULL;
	struct pollfd pfd;
	socklen_t sl = sizeof(int);
	int fd = -1, r, soerr = 0;

	r = resolve(addr, &res, false);
	if (r) {
		snprintf(err, errlen, "cannot resolve %s: %s", addr->host, gai_strerror(r));
		return -EINVAL;
	}
	fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		goto fail;
	if (connect(fd, res->ai_addr, res->ai_addrlen) < 0) {
		if (errno != EINPROGRESS)
			goto fail;
		pfd = (struct pollfd){ fd, POLLOUT, 0 };
		r = poll(&pfd, 1, (int)timeout_ms);
		if (r == 0) {
			errno = ETIMEDOUT;
			goto fail;
		}
		if (r < 0)
			goto fail;
		getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
		if (soerr) {
			errno = soerr;
			goto fail;
		}
	}
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	freeaddrinfo(res);
	return fd;
fail:
	r = -errno;
	snprintf(err, errlen, "cannot connect to %s:%u: %s", addr->host, addr->port, strerror(errno));
	if (fd >= 0)
		close(fd);
	freeaddrinfo(res);
	return r;
}

void net_tune(int fd, uint64_t rcv_timeout_ms)
{
	struct timeval tv = { (time_t)(rcv_timeout_ms / 1000), (suseconds_t)(rcv_timeout_ms % 1000) * 1000 };
	int one = 1, buf = 4 << 20;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
	if (rcv_timeout_ms)
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
}

void net_send_timeout(int fd, uint64_t ms)
{
	struct timeval tv = { (time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000 };

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

int net_unix_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = errno;
		close(fd);
		return -err;
	}
	return fd;
}
