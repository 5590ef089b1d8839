/*
 * status.h - the per-daemon status socket (`tandem status`), on libuv.
 *
 * A client connects to RUN_DIR/NAME.ROLE.sock, writes one line ("text",
 * "json", or a command such as "promote"), and reads the reply until the
 * daemon closes the connection.  The socket is mode 0660 in a directory of
 * mode 0700: commands are for the daemon's user only.
 */
#ifndef TANDEM_STATUS_H
#define TANDEM_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct status_server;

/* Fill buf (len bytes) with the reply to `request` (the client's line
 * without its newline: "text", "json", or a command such as "promote"). */
typedef void (*status_render_fn)(void *arg, const char *request, char *buf, size_t len);

/* Bind the socket (creating its directory owner-only, replacing a stale
 * socket).  Refused: a run-dir another user owns or anyone may write
 * (-EPERM), a second daemon for the same VM and role there (-EBUSY: a lock
 * PATH.lock is held for the process's life).  Returns 0 or -errno with a
 * message logged. */
int status_server_start(uv_loop_t *loop, const char *path, status_render_fn fn, void *arg,
			struct status_server **out);

/*
 * The event stream (`tandem events`): a client that sends "events" keeps
 * its connection and gets one line per event from then on; "events-now"
 * first gets the render function's reply to "now" (the current state as
 * event lines).  status_event() appends a line (any thread; the daemon's
 * time in UTC is put first); the last 256 are kept for slow readers.
 * NULL server: a no-op.
 */
void status_event(struct status_server *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One event line as status_event() makes it (the time first, a newline
 * last), into line: for a render function's reply to "now". */
void status_format_event(char *line, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Close and unlink.  NULL is a no-op. */
void status_server_stop(struct status_server *s);

#endif
