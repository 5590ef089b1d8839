/*
 * fuzz-status.c - libFuzzer harness for the status socket's requests: the
 * input is what a local client writes to a daemon's status socket (lib/
 * status.c reads one line, at most 63 bytes, and hands it to the daemon's
 * renderer, which dispatches on it as the daemons do: "json", "text",
 * "promote", "promote-force").  The server runs on a libuv loop in this
 * process; every input is one connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "../lib/log.h"
#include "../lib/status.h"
#include "../lib/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uv_loop_t loop;
static struct status_server *server;
static char path[108];

/* As the daemons' renderers: a command, or a status in the asked form. */
static void render(void *arg, const char *request, char *buf, size_t len)
{
	(void)arg;
	if (strlen(request) > 63)
		__builtin_trap();	/* the server never hands over more than a line of 63 */
	if (!strcmp(request, "promote") || !strcmp(request, "promote-force"))
		snprintf(buf, len, "refused: fuzzing\n");
	else if (!strcmp(request, "json"))
		snprintf(buf, len, "{\"role\":\"backup\",\"state\":\"standby\",\"request\":\"%s\"}\n",
			 request);
	else
		snprintf(buf, len, "vm1 (backup): standby - %s\n", request);
}

static char dir[64];

static void cleanup(void)
{
	char lock[128];

	snprintf(lock, sizeof(lock), "%s.lock", path);
	unlink(path);
	unlink(lock);
	rmdir(dir);
}

static int setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/fuzz-status.%d", (int)getpid());
	atexit(cleanup);
	snprintf(path, sizeof(path), "%s/vm1.backup.sock", dir);
	log_set_level(LOG_LVL_ERROR);
	uv_loop_init(&loop);
	return status_server_start(&loop, path, render, NULL, &server);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready = -1;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char reply[20000];
	int fd, spins = 0;

	if (ready < 0)
		ready = setup() == 0;
	if (!ready || size > 4096)
		return 0;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return 0;
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return 0;
	}
	if (size && write(fd, data, size) < 0) {
		close(fd);
		return 0;
	}
	shutdown(fd, SHUT_WR);
	/* Serve until the server closes this connection (it always must). */
	for (;;) {
		ssize_t n = read(fd, reply, sizeof(reply));

		if (n == 0)
			break;
		if (n < 0 && errno != EAGAIN)
			break;
		uv_run(&loop, UV_RUN_NOWAIT);
		if (++spins > 100000)
			__builtin_trap();	/* a request left the connection hanging */
	}
	close(fd);
	uv_run(&loop, UV_RUN_NOWAIT);
	return 0;
}
