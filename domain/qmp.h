/*
 * qmp.h - a small QMP (QEMU Machine Protocol) client: the one session per
 * checkpoint that an HVM guest's device model needs (issue 21).
 *
 * What libxl does, read in Xen 4.17 (RELEASE-4.17.7, tools/libs/light/):
 *
 *  - Socket.  libxl starts QEMU with `-chardev socket,id=libxl-cmd,
 *    path=<run dir>/qmp-libxl-<domid>,server=on,wait=off` and `-mon
 *    chardev=libxl-cmd,mode=control` (libxl_dm.c); the path is
 *    libxl__qemu_qmp_path() in libxl_internal.h, with XEN_RUN_DIR =
 *    /var/run/xen (m4/paths.m4; Debian's libxenlight.so.4.17 holds the
 *    strings "/var/run/xen" and "%s/qmp-libxl-%d").  QEMU's socket chardev
 *    serves one client at a time: a second client's connect() succeeds
 *    (the listen backlog) but no greeting comes until the first hangs up.
 *    So a session must be short, and every read here has a deadline.
 *
 *  - Lock.  libxl's asynchronous QMP client (libxl__ev_qmp, used for
 *    `stop`, `add-fd`, `xen-save-devices-state` in libxl__qmp_suspend_save,
 *    the dirty-log switch, device hotplug, `cont` on unpause) connects only
 *    while holding the "qmp-socket-lock" (libxl_qmp.c:qmp_ev_connect ->
 *    libxl__ev_slowlock_lock; libxl__ev_qmplock_init in libxl_internal.c):
 *    flock(LOCK_EX) on XEN_LIB_DIR/userdata-l.<domid>.<uuid>.qmp-socket-lock
 *    (libxl_dom.c:libxl__userdata_path; XEN_LIB_DIR = /var/lib/xen), opened
 *    O_RDWR|O_CREAT mode 0666.  After flock succeeds libxl compares the
 *    path's inode with the fd's and starts over if they differ, because the
 *    holder unlinks the file before it unlocks (libxl__ev_slowlock_unlock).
 *    qmp_open() follows the same protocol, bounded by its timeout.
 *    libxl's older synchronous client (libxl__qmp_initialize, used by
 *    libxl__qmp_resume = `cont` in libxl__domain_resume_deprecated and by
 *    libxl__qmp_restore) takes no lock and simply connects per command;
 *    against it only the one-client-at-a-time socket serialises.
 *
 *  - Protocol (QEMU's docs/interop/qmp-spec): on connect QEMU sends a
 *    greeting {"QMP": {"version": {"qemu": {"major", "minor", "micro"},
 *    "package"}, "capabilities": [...]}}; the client sends
 *    {"execute": "qmp_capabilities"} and gets {"return": {}}; then each
 *    command {"execute", "arguments", "id"} is answered by {"return": V,
 *    "id"} or {"error": {"class", "desc"}, "id"}, with asynchronous
 *    {"event": NAME, "data", "timestamp"} messages (STOP, RESUME, ...)
 *    anywhere in between.  libxl, like this client, uses integer ids and
 *    treats a reply with another id as a protocol error (libxl_qmp.c,
 *    qmp_ev_handle_message).
 *
 *  - Commands a checkpoint uses (QEMU qapi/migration.json, qapi/misc.json):
 *    `stop`, `cont`, `xen-set-global-dirty-log {"enable": bool}` (since
 *    1.3), `xen-save-devices-state {"filename": str, "live": bool}`
 *    (filename required; `live` optional since 2.11, default true; libxl
 *    sends it only to QEMU >= 2.11), and for the file, `add-fd` with the fd
 *    passed by SCM_RIGHTS alongside, answering {"fdset-id", "fd"}, then
 *    the filename "/dev/fdset/<id>" (libxl_qmp.c:dm_stopped,
 *    dm_state_save_to_fdset).  QEMU opens that filename with qemu_open(),
 *    which knows /dev/fdset/N but not the names `getfd` gives, so `getfd`
 *    (also here) cannot feed xen-save-devices-state; `remove-fd` frees
 *    the set afterwards.
 *
 * Contract, for every function: 0 or a negative errno; on error the
 * reason is in qmp_error(q) (qmp_open: in err) in an operator's words and
 * is logged at debug level only: the caller decides how loud it is.
 *   -ETIMEDOUT  the deadline passed (the whole call's, not per read)
 *   -EREMOTEIO  QEMU answered {"error": ...}; its class and desc are in
 *               qmp_error() and the session stays usable
 *   -EPROTO     malformed JSON, not a QMP message, a reply without or with
 *               another id, an unexpected greeting
 *   -EMSGSIZE   a message longer than QMP_MSG_MAX or nested deeper than
 *               QMP_DEPTH_MAX
 *   -ECONNRESET QEMU closed the connection
 *   -ENOBUFS    the reply did not fit the caller's buffer (the command
 *               itself succeeded)
 *   -ENOTCONN   the session broke earlier (timeout, protocol error,
 *               hang-up): replies can no longer be matched; close it and
 *               open a new one
 * A session is not thread-safe; use it from one thread at a time.
 */
#ifndef TANDEM_QMP_H
#define TANDEM_QMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define QMP_MSG_MAX (64u * 1024)	/* one message from QEMU, and one command */
#define QMP_DEPTH_MAX 32		/* nesting of arrays and objects */
#define QMP_ERROR_MAX 320		/* qmp_error()'s text */

/* libxl's places (see above); XEN_RUN_DIR and XEN_LIB_DIR of Debian's build. */
#define QMP_LIBXL_RUN_DIR "/var/run/xen"
#define QMP_LIBXL_LIB_DIR "/var/lib/xen"

struct qmp;

/*
 * libxl's QMP socket for domid, and its qmp-socket-lock file for the
 * domain with that uuid (16 bytes, as libxl_dominfo.uuid).  Returns 0 or
 * -ENAMETOOLONG.
 */
int qmp_libxl_socket_path(uint32_t domid, char *buf, size_t len);
int qmp_libxl_lock_path(uint32_t domid, const uint8_t uuid[16], char *buf, size_t len);

/*
 * Open a session: take libxl's lock (lock_path; NULL: none), connect to
 * the AF_UNIX socket at path, read and check the greeting, send
 * qmp_capabilities and wait for its {"return": {}}; all within timeout_ms.
 * On success *out is the session (the lock is held until qmp_close);
 * on error *out is NULL, nothing is held, and err says why.
 */
int qmp_open(const char *path, const char *lock_path, unsigned timeout_ms, struct qmp **out,
	     char *err, size_t errlen);

/* Hang up and release libxl's lock (unlinking its file first, as libxl
 * does).  NULL is a no-op. */
void qmp_close(struct qmp *q);

/* The last error's text ("" after a success). */
const char *qmp_error(const struct qmp *q);

/* QEMU's version from the greeting. */
void qmp_version(const struct qmp *q, int *major, int *minor, int *micro);

/*
 * Send {"execute": execute, "arguments": <args>, "id": N} and wait at most
 * timeout_ms for the reply with id N, skipping and counting events.
 * args_fmt (NULL: no arguments) is printf'd and must give one JSON
 * object (-EINVAL otherwise, nothing sent); quote strings with
 * qmp_json_quote().  The return value's JSON text goes into reply
 * (NUL-terminated; reply may be NULL).
 */
int qmp_command(struct qmp *q, unsigned timeout_ms, char *reply, size_t replylen,
		const char *execute, const char *args_fmt, ...)
	__attribute__((format(printf, 6, 7)));

/* The same, passing fd to QEMU with SCM_RIGHTS on the command's first
 * byte (as libxl does); fd stays the caller's. */
int qmp_command_fd(struct qmp *q, int fd, unsigned timeout_ms, char *reply, size_t replylen,
		   const char *execute, const char *args_fmt, ...)
	__attribute__((format(printf, 7, 8)));

/*
 * Events seen since open (or the last qmp_events_clear): how many named
 * `name` (e.g. "STOP", "RESUME"), all of them when name is NULL.  Up to
 * 16 distinct names are counted; the total counts all.
 */
unsigned qmp_event_count(const struct qmp *q, const char *name);
void qmp_events_clear(struct qmp *q);

/* JSON string literal for s (quotes and escapes) into buf: 0 or -ENOSPC. */
int qmp_json_quote(const char *s, char *buf, size_t len);

/* ---- the steps of a checkpoint, each bounded by timeout_ms ---- */

int qmp_stop(struct qmp *q, unsigned timeout_ms);
int qmp_cont(struct qmp *q, unsigned timeout_ms);
/* xen-set-global-dirty-log {"enable": enable} */
int qmp_set_global_dirty_log(struct qmp *q, bool enable, unsigned timeout_ms);
/* xen-save-devices-state {"filename": filename, "live": live}; `live` is
 * left out for QEMU older than 2.11 (it has no such argument). */
int qmp_save_devices_state(struct qmp *q, const char *filename, bool live, unsigned timeout_ms);
/* add-fd with fd (opened with the access mode QEMU will use): its
 * fdset-id, for the filename "/dev/fdset/<id>". */
int qmp_add_fd(struct qmp *q, int fd, unsigned timeout_ms, int64_t *fdset_id);
int qmp_remove_fd(struct qmp *q, int64_t fdset_id, unsigned timeout_ms);
/* getfd: fd under a name, for commands that take an fdname. */
int qmp_getfd(struct qmp *q, int fd, const char *fdname, unsigned timeout_ms);

/* ---- the message reader (internal; for the tests and fuzz/fuzz-qmp.c) ---- */

enum qmp__kind { QMP__GREETING = 1, QMP__RETURN, QMP__ERROR, QMP__EVENT };

struct qmp__msg {
	enum qmp__kind kind;
	int id_kind;			/* 0 none, 1 integer (id), 2 another JSON value */
	int64_t id;
	char name[64];			/* an event's name, an error's class */
	char desc[256];			/* an error's desc, printable ASCII */
	int major, minor, micro;	/* a greeting's QEMU version */
	size_t ret_off, ret_len;	/* a return value's text in the buffer */
};

/*
 * Read the first message in buf[0..len): 0 with *used (the bytes it and
 * the whitespace before it take) and m filled; -EAGAIN if buf holds only
 * part of one; -EPROTO, -EMSGSIZE as above.  Never reads past len.
 */
int qmp__parse(const char *buf, size_t len, size_t *used, struct qmp__msg *m);

/* The integer member `key` of the JSON object text obj[0..len):
 * 0, -ENOENT, or -EPROTO. */
int qmp__object_int(const char *obj, size_t len, const char *key, int64_t *out);

#endif
