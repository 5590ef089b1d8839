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

/* Close and unlink.  NULL is a no-op. */
void status_server_stop(struct status_server *s);

#endif
