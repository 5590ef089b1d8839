/*
 * status.c - unix-socket status server on the daemon's libuv loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_MODULE "status"
#include "log.h"
#include "status.h"

struct status_server {
	uv_pipe_t pipe;
	int lock_fd;			/* PATH.lock, flock()ed for the daemon's life */
	char path[256];
	status_render_fn render;
	void *arg;
};

struct status_client {
	uv_pipe_t pipe;
	struct status_server *server;
	char req[64];
	size_t req_len;
	uv_write_t wr;
	char reply[16384];
};

static void client_closed(uv_handle_t *h)
{
	free(h->data);
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
	c->server->render(c->server->arg, c->req, c->reply, sizeof(c->reply));
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
	uv_pipe_init(loop, &s->pipe, 0);
	s->pipe.data = s;
	unlink(path);
	r = uv_pipe_bind(&s->pipe, path);
	if (!r)
		r = uv_listen((uv_stream_t *)&s->pipe, 8, on_connection);
	if (r) {
		log_error("cannot serve status on %s: %s", path, uv_strerror(r));
		uv_close((uv_handle_t *)&s->pipe, NULL);
		uv_run(loop, UV_RUN_NOWAIT);
		close(s->lock_fd);
		free(s);
		return r;
	}
	chmod(path, 0660);
	*out = s;
	return 0;
}

static void server_closed(uv_handle_t *h)
{
	free(h->data);
}

void status_server_stop(struct status_server *s)
{
	if (!s)
		return;
	unlink(s->path);
	/* the lock goes when the process does (the fd is kept until exit): a
	 * second daemon must not start while this one is still shutting down */
	uv_close((uv_handle_t *)&s->pipe, server_closed);
}
