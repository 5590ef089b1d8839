/*
 * run.c - run a helper program and collect its output (run.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ctype.h>

#include "run.h"
#include "util.h"

/* Read both pipes to their end or the deadline; 0 or -ETIMEDOUT. */
static int collect(int out_fd, int err_fd, uint64_t end, char *out, size_t out_cap, char *err,
		   size_t err_cap)
{
	size_t no = 0, ne = 0;
	struct pollfd pf[2] = { { out_fd, POLLIN, 0 }, { err_fd, POLLIN, 0 } };

	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		uint64_t t = now_ms();
		char buf[4096];

		if (t >= end)
			return -ETIMEDOUT;
		if (poll(pf, 2, (int)(end - t)) < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < 2; i++) {
			char *dst = i ? err : out;
			size_t cap = i ? err_cap : out_cap, *n = i ? &ne : &no;
			ssize_t r;

			if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = read(pf[i].fd, buf, sizeof(buf));
			if (r <= 0) {
				pf[i].fd = -1;
				continue;
			}
			if (dst && *n + (size_t)r < cap) {
				memcpy(dst + *n, buf, (size_t)r);
				*n += (size_t)r;
			}
		}
	}
	if (out_cap)
		out[no] = '\0';
	if (err_cap)
		err[ne] = '\0';
	return 0;
}

int run_capture(const char *const argv[], unsigned timeout_ms, char *out, size_t out_cap,
		char *err, size_t err_cap)
{
	int o[2] = { -1, -1 }, e[2] = { -1, -1 }, status = 0, rc;
	pid_t pid;

	if (out_cap)
		out[0] = '\0';
	if (err_cap)
		err[0] = '\0';
	if (pipe2(o, O_CLOEXEC) || pipe2(e, O_CLOEXEC)) {
		rc = -errno;
		for (int i = 0; i < 2; i++) {
			if (o[i] >= 0)
				close(o[i]);
			if (e[i] >= 0)
				close(e[i]);
		}
		return rc;
	}
	pid = fork();
	if (pid == 0) {
		int null = open("/dev/null", O_RDONLY);

		if (null >= 0)
			dup2(null, 0);
		dup2(o[1], 1);
		dup2(e[1], 2);
		execvp(argv[0], (char *const *)argv);
		dprintf(2, "%s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(o[1]);
	close(e[1]);
	rc = pid < 0 ? -errno : collect(o[0], e[0], now_ms() + timeout_ms, out, out_cap, err, err_cap);
	close(o[0]);
	close(e[0]);
	if (pid < 0)
		return rc;
	if (rc)
		kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (rc)
		return rc;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -EINTR;
}

void run_one_line(const char *text, char *out, size_t len)
{
	size_t n = 0;

	if (!len)
		return;
	for (const char *p = text; *p && n + 1 < len; p++) {
		if (isspace((unsigned char)*p)) {
			if (n && out[n - 1] != ' ')
				out[n++] = ' ';
			continue;
		}
		out[n++] = *p;
	}
	while (n && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}
