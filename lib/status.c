/*
 * status.c - unix-socket status server on the daemon's libuv loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_MODULE "status"
#include "log.h"
#include "status.h"
#include "util.h"

#define EVENTS_KEPT 256u
#define EVENT_LEN 384u
#define MAX_SUBSCRIBERS 16

struct status_client;

struct status_server {
	uv_pipe_t pipe;
	int lock_fd;			/* PATH.lock, flock()ed for the daemon's life */
	char path[256];
	status_render_fn render;
	void *arg;

	/* the event stream: a ring of the last lines, any thread appends */
	pthread_mutex_t ev_lock;
	char ring[EVENTS_KEPT][EVENT_LEN];
	uint64_t ev_seq;		/* events appended so far */
	uv_async_t ev_async;
	struct status_client *subs[MAX_SUBSCRIBERS];
	int open_handles;
};

struct status_client {
	uv_pipe_t pipe;
	struct status_server *server;
	char req[64];
	size_t req_len;
	uv_write_t wr;
	char reply[16384];
	bool subscribed, writing, closing;
	uint64_t next_seq;		/* the next event it gets */
	char *out;			/* its write in flight */
};

static void client_closed(uv_handle_t *h)
{
	struct status_client *c = h->data;

	if (c->subscribed)
		for (int i = 0; i < MAX_SUBSCRIBERS; i++)
			if (c->server->subs[i] == c)
				c->server->subs[i] = NULL;
	free(c->out);
	free(c);
}

static void sub_close(struct status_client *c)
{
	if (!c->closing) {
		c->closing = true;
		uv_close((uv_handle_t *)&c->pipe, client_closed);
	}
}

static void sub_flush(struct status_client *c);

static void sub_written(uv_write_t *wr, int status)
{
	struct status_client *c = wr->data;

	c->writing = false;
	free(c->out);
	c->out = NULL;
	if (status < 0)
		sub_close(c);
	else
		sub_flush(c);
}

/* Write every event this subscriber has not had yet (loop thread). */
static void sub_flush(struct status_client *c)
{
	struct status_server *s = c->server;
	size_t cap = 0, len = 0;
	uv_buf_t b;

	if (c->writing || c->closing)
		return;
	pthread_mutex_lock(&s->ev_lock);
	if (c->next_seq < s->ev_seq) {
		uint64_t lost = s->ev_seq - c->next_seq > EVENTS_KEPT ?
				s->ev_seq - c->next_seq - EVENTS_KEPT : 0;

		cap = (size_t)(s->ev_seq - c->next_seq - lost) * (EVENT_LEN + 1) + 80;
		c->out = malloc(cap);
		if (c->out && lost)
			len += (size_t)snprintf(c->out, cap, "lost %llu events (a slow reader)\n",
						(unsigned long long)lost);
		for (uint64_t q = c->next_seq + lost; c->out && q < s->ev_seq; q++)
			len += (size_t)snprintf(c->out + len, cap - len, "%s\n",
						s->ring[q % EVENTS_KEPT]);
		c->next_seq = s->ev_seq;
	}
	pthread_mutex_unlock(&s->ev_lock);
	if (!len) {
		free(c->out);
		c->out = NULL;
		return;
	}
	b = uv_buf_init(c->out, (unsigned)len);
	c->wr.data = c;
	c->writing = true;
	if (uv_write(&c->wr, (uv_stream_t *)&c->pipe, &b, 1, sub_written)) {
		c->writing = false;
		sub_close(c);
	}
}

static void on_events(uv_async_t *a)
{
	struct status_server *s = a->data;

	for (int i = 0; i < MAX_SUBSCRIBERS; i++)
		if (s->subs[i])
			sub_flush(s->subs[i]);
}

/* A subscriber hangs up: we read EOF (it sends nothing after its line). */
static void sub_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf)
{
	struct status_client *c = st->data;

	(void)buf;
	if (n < 0)
		sub_close(c);
}

static void sub_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct status_client *c = h->data;

	(void)suggested;
	buf->base = c->req;
	buf->len = sizeof(c->req);
}

/* "events" or "events-now": keep the connection and stream events; with
 * -now the daemon's current state first (the render function's "now"). */
static void subscribe(struct status_client *c, bool now)
{
	struct status_server *s = c->server;
	int slot = -1;

	for (int i = 0; i < MAX_SUBSCRIBERS && slot < 0; i++)
		if (!s->subs[i])
			slot = i;
	if (slot < 0) {
		snprintf(c->reply, sizeof(c->reply), "busy: %d event readers already\n", MAX_SUBSCRIBERS);
		return;
	}
	s->subs[slot] = c;
	c->subscribed = true;
	pthread_mutex_lock(&s->ev_lock);
	c->next_seq = s->ev_seq;
	pthread_mutex_unlock(&s->ev_lock);
	if (now) {
		uv_buf_t b;

		s->render(s->arg, "now", c->reply, sizeof(c->reply));
		c->out = strdup(c->reply);
		if (c->out) {
			b = uv_buf_init(c->out, (unsigned)strlen(c->out));
			c->wr.data = c;
			c->writing = true;
			if (uv_write(&c->wr, (uv_stream_t *)&c->pipe, &b, 1, sub_written)) {
				c->writing = false;
				sub_close(c);
				return;
			}
		}
	}
	uv_read_start((uv_stream_t *)&c->pipe, sub_alloc, sub_read);
}

static void vformat_event(char *line, size_t len, const char *fmt, va_list ap)
{
	struct timespec ts;
	struct tm tm;
	size_t n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = strftime(line, len, "%Y-%m-%dT%H:%M:%S", &tm);
	n += (size_t)snprintf(line + n, len - n, ".%03ldZ ", ts.tv_nsec / 1000000);
	if (n < len)
		vsnprintf(line + n, len - n, fmt, ap);
	for (char *c = line; *c; c++)
		if (*c == '\n')
			*c = ' ';
}

void status_format_event(char *line, size_t len, const char *fmt, ...)
{
	va_list ap;
	size_t n;

	va_start(ap, fmt);
	vformat_event(line, len > 1 ? len - 1 : len, fmt, ap);
	va_end(ap);
	n = strlen(line);
	if (n + 1 < len) {
		line[n] = '\n';
		line[n + 1] = '\0';
	}
}

void status_event(struct status_server *s, const char *fmt, ...)
{
	char line[EVENT_LEN];
	va_list ap;

	if (!s)
		return;
	va_start(ap, fmt);
	vformat_event(line, sizeof(line), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->ev_lock);
	memcpy(s->ring[s->ev_seq % EVENTS_KEPT], line, sizeof(line));
	s->ev_seq++;
	pthread_mutex_unlock(&s->ev_lock);
	uv_async_send(&s->ev_async);
}

static void client_written(uv_write_t *wr, int status)
{
	struct status_client *c = wr->data;

	(void)status;
	uv_close((uv_handle_t *)&c->pipe, client_closed);
}

static void client_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	struct status_client *c = h->data;

	(void)suggested;
	buf->base = c->req + c->req_len;
	buf->len = sizeof(c->req) - 1 - c->req_len;
}

static void client_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct status_client *c = s->data;
	uv_buf_t out;
	char *nl;

	(void)buf;
	if (n < 0) {
		uv_close((uv_handle_t *)&c->pipe, client_closed);
		return;
	}
	c->req_len += (size_t)n;
	c->req[c->req_len] = '\0';
	if (!strchr(c->req, '\n') && c->req_len < sizeof(c->req) - 1)
		return;
	uv_read_stop(s);
	nl = strchr(c->req, '\n');
	if (nl)
		*nl = '\0';
	if (!strcmp(c->req, "events") || !strcmp(c->req, "events-now")) {
		subscribe(c, !strcmp(c->req, "events-now"));
		if (c->subscribed)
			return;
	} else {
		c->server->render(c->server->arg, c->req, c->reply, sizeof(c->reply));
	}
	out = uv_buf_init(c->reply, (unsigned)strlen(c->reply));
	c->wr.data = c;
	if (uv_write(&c->wr, s, &out, 1, client_written))
		uv_close((uv_handle_t *)&c->pipe, client_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
	struct status_server *srv = server->data;
	struct status_client *c;

	if (status < 0)
		return;
	c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->server = srv;
	uv_pipe_init(server->loop, &c->pipe, 0);
	c->pipe.data = c;
	if (uv_accept(server, (uv_stream_t *)&c->pipe) ||
	    uv_read_start((uv_stream_t *)&c->pipe, client_alloc, client_read))
		uv_close((uv_handle_t *)&c->pipe, client_closed);
}

/*
 * The run-dir holds the sockets that command the daemons (`promote`): it is
 * created owner-only, and an existing one that another user owns or anyone
 * may write to is refused (whoever can write there can replace a socket).
 */
static int check_run_dir(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int r = -errno;
		log_perror("cannot create the run directory %s", dir);
		return r;
	}
	if (stat(dir, &st) < 0) {
		int r = -errno;
		log_perror("cannot read the run directory %s", dir);
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("run-dir %s is not a directory", dir);
		return -ENOTDIR;
	}
	if (st.st_uid != geteuid()) {
		log_error("run-dir %s belongs to uid %u, not to this user (uid %u): refusing to put "
			  "this daemon's command socket there; use a directory of your own "
			  "(run-dir) or fix its owner", dir, (unsigned)st.st_uid, (unsigned)geteuid());
		return -EPERM;
	}
	if (st.st_mode & S_IWOTH) {
		log_error("run-dir %s is writable by anyone (mode %04o): refusing to put this "
			  "daemon's command socket there; chmod o-w %s", dir,
			  (unsigned)(st.st_mode & 07777), dir);
		return -EPERM;
	}
	return 0;
}

/* One daemon per VM and role and run-dir: a lock beside the socket, held
 * for the daemon's life, so that a second one refuses to start instead of
 * taking the first one's socket over.  A POSIX record lock (F_SETLK), not
 * flock: processes the daemon forks (memdom's guest) do not inherit it,
 * so it goes exactly when the daemon does. */
static int take_lock(struct status_server *s)
{
	char lock[300];

	snprintf(lock, sizeof(lock), "%s.lock", s->path);
	s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (s->lock_fd < 0) {
		int r = -errno;
		log_perror("cannot open the lock %s", lock);
		return r;
	}
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };

	if (fcntl(s->lock_fd, F_SETLK, &fl) < 0) {
		int r = errno == EAGAIN || errno == EACCES ? -EBUSY : -errno;
		if (r == -EBUSY)
			log_error("another tandem daemon for this VM and role already runs here (it "
				  "holds %s; `tandem status` shows it): refusing to start a second one",
				  lock);
		else
			log_perror("cannot lock %s", lock);
		close(s->lock_fd);
		s->lock_fd = -1;
		return r;
	}
	return 0;
}

int status_server_start(uv_loop_t *loop, const char *path, status_render_fn fn, void *arg,
			struct status_server **out)
{
	struct status_server *s;
	char dir[256], *slash;
	int r;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->lock_fd = -1;
	snprintf(s->path, sizeof(s->path), "%s", path);
	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		if ((r = check_run_dir(dir))) {
			free(s);
			return r;
		}
	}
	if ((r = take_lock(s))) {
		free(s);
		return r;
	}
	s->render = fn;
	s->arg = arg;
	pthread_mutex_init(&s->ev_lock, NULL);
	uv_async_init(loop, &s->ev_async, on_events);
	s->ev_async.data = s;
	uv_pipe_init(loop, &s->pipe, 0);
	s->pipe.data = s;
	s->open_handles = 2;
	unlink(path);
	r = uv_pipe_bind(&s->pipe, path);
	if (!r)
		r = uv_listen((uv_stream_t *)&s->pipe, 8, on_connection);
	if (r) {
		log_error("cannot serve status on %s: %s", path, uv_strerror(r));
		uv_close((uv_handle_t *)&s->pipe, NULL);
		uv_close((uv_handle_t *)&s->ev_async, NULL);
		uv_run(loop, UV_RUN_NOWAIT);
		close(s->lock_fd);
		free(s);
		return r;
	}
	chmod(path, 0660);
	*out = s;
	return 0;
}

/* The pipe and the async handle both close; the last one frees. */
static void server_closed(uv_handle_t *h)
{
	struct status_server *s = h->data;

	if (--s->open_handles == 0)
		free(s);
}

void status_server_stop(struct status_server *s)
{
	if (!s)
		return;
	for (int i = 0; i < MAX_SUBSCRIBERS; i++)
		if (s->subs[i])
			sub_close(s->subs[i]);
	uv_close((uv_handle_t *)&s->ev_async, server_closed);
	unlink(s->path);
	/* the lock goes when the process does (the fd is kept until exit): a
	 * second daemon must not start while this one is still shutting down */
	uv_close((uv_handle_t *)&s->pipe, server_closed);
}
