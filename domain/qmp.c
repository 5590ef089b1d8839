/*
 * qmp.c - a small QMP client (qmp.h): libxl's lock, one AF_UNIX session,
 * a bounded JSON reader for what QEMU sends, and the commands a checkpoint
 * needs.  Everything QEMU sends is treated as untrusted input: every
 * length is checked against the buffer it is read from, nesting and
 * message size are bounded, and nothing is allocated by size read off the
 * wire.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define LOG_MODULE "qmp"
#include "../lib/log.h"
#include "../lib/util.h"
#include "qmp.h"

#define QMP_EVENT_NAMES 16
#define CONNECT_RETRY_NS (20u * 1000 * 1000)	/* QEMU not listening yet: retry every 20 ms */
#define LOCK_RETRY_NS (5u * 1000 * 1000)	/* libxl holds the lock: look again every 5 ms */

struct qmp {
	int fd;
	int lock_fd;			/* libxl's qmp-socket-lock, -1 if none taken */
	char *lock_path;
	bool broken;			/* replies can no longer be matched to commands */
	int64_t next_id;
	int major, minor, micro;
	char err[QMP_ERROR_MAX];

	/* bytes read from QEMU, not yet handed out as messages */
	char *buf;
	size_t len;
	/* the framer: where the first message ends, found incrementally */
	size_t scan;
	unsigned fdepth;
	bool fstarted, fstr, fesc;

	struct {
		char name[32];
		unsigned n;
	} ev[QMP_EVENT_NAMES];
	unsigned ev_total;
};

/* ======================================================================
 * JSON reader
 *
 * Recursive descent over buf[0..len), validating RFC 8259's grammar and
 * producing no tree: callers ask for a member's span by key and parse the
 * span again when they need inside it.  Running out of input returns
 * -EAGAIN (the message is incomplete), a grammar error -EPROTO, nesting
 * past QMP_DEPTH_MAX -EMSGSIZE.
 * ====================================================================== */

struct jp {
	const char *s;
	size_t len, pos;
};

static void jp_ws(struct jp *p)
{
	while (p->pos < p->len) {
		char c = p->s[p->pos];

		if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
			break;
		p->pos++;
	}
}

/* Four hex digits at p->pos: the code unit, -EAGAIN or -EPROTO. */
static int jp_hex4(struct jp *p, unsigned *out)
{
	unsigned v = 0;

	for (int i = 0; i < 4; i++) {
		int h;

		if (p->pos >= p->len)
			return -EAGAIN;
		h = hex_digit(p->s[p->pos]);
		if (h < 0)
			return -EPROTO;
		v = (v << 4) | (unsigned)h;
		p->pos++;
	}
	*out = v;
	return 0;
}

/* Append one byte to out[0..outlen) (NUL kept in room); *trunc if not. */
static void put_byte(char *out, size_t outlen, size_t *n, bool *trunc, unsigned char c)
{
	if (!out)
		return;
	if (*n + 1 < outlen)
		out[(*n)++] = (char)c;
	else
		*trunc = true;
}

static void put_utf8(char *out, size_t outlen, size_t *n, bool *trunc, unsigned cp)
{
	if (cp < 0x80) {
		put_byte(out, outlen, n, trunc, (unsigned char)cp);
	} else if (cp < 0x800) {
		put_byte(out, outlen, n, trunc, (unsigned char)(0xc0 | (cp >> 6)));
		put_byte(out, outlen, n, trunc, (unsigned char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		put_byte(out, outlen, n, trunc, (unsigned char)(0xe0 | (cp >> 12)));
		put_byte(out, outlen, n, trunc, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
		put_byte(out, outlen, n, trunc, (unsigned char)(0x80 | (cp & 0x3f)));
	} else {
		put_byte(out, outlen, n, trunc, (unsigned char)(0xf0 | (cp >> 18)));
		put_byte(out, outlen, n, trunc, (unsigned char)(0x80 | ((cp >> 12) & 0x3f)));
		put_byte(out, outlen, n, trunc, (unsigned char)(0x80 | ((cp >> 6) & 0x3f)));
		put_byte(out, outlen, n, trunc, (unsigned char)(0x80 | (cp & 0x3f)));
	}
}

/*
 * A string at p->pos (which is '"').  Decoded into out (NUL-terminated,
 * at most outlen - 1 bytes; *trunc set when it did not fit) unless out is
 * NULL.  A lone surrogate decodes as U+FFFD.
 */
static int jp_string(struct jp *p, char *out, size_t outlen, bool *trunc)
{
	size_t n = 0;
	bool t = false;
	int rc;

	p->pos++;	/* the opening quote */
	for (;;) {
		unsigned char c;

		if (p->pos >= p->len)
			return -EAGAIN;
		c = (unsigned char)p->s[p->pos++];
		if (c == '"')
			break;
		if (c < 0x20)
			return -EPROTO;
		if (c != '\\') {
			put_byte(out, outlen, &n, &t, c);
			continue;
		}
		if (p->pos >= p->len)
			return -EAGAIN;
		c = (unsigned char)p->s[p->pos++];
		switch (c) {
		case '"': case '\\': case '/':
			put_byte(out, outlen, &n, &t, c);
			break;
		case 'b': put_byte(out, outlen, &n, &t, '\b'); break;
		case 'f': put_byte(out, outlen, &n, &t, '\f'); break;
		case 'n': put_byte(out, outlen, &n, &t, '\n'); break;
		case 'r': put_byte(out, outlen, &n, &t, '\r'); break;
		case 't': put_byte(out, outlen, &n, &t, '\t'); break;
		case 'u': {
			unsigned cp, lo;

			rc = jp_hex4(p, &cp);
			if (rc)
				return rc;
			if (cp >= 0xd800 && cp < 0xdc00) {
				/* a high surrogate: a low one should follow */
				if (p->pos >= p->len ||
				    (p->s[p->pos] == '\\' && p->pos + 1 >= p->len)) {
					return -EAGAIN;
				} else if (p->s[p->pos] == '\\' && p->s[p->pos + 1] == 'u') {
					size_t save = p->pos;

					p->pos += 2;
					rc = jp_hex4(p, &lo);
					if (rc)
						return rc;
					if (lo >= 0xdc00 && lo < 0xe000) {
						cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					} else {
						p->pos = save;	/* not a pair: read it on its own */
						cp = 0xfffd;
					}
				} else {
					cp = 0xfffd;
				}
			} else if (cp >= 0xdc00 && cp < 0xe000) {
				cp = 0xfffd;
			}
			put_utf8(out, outlen, &n, &t, cp);
			break;
		}
		default:
			return -EPROTO;
		}
	}
	if (out && outlen)
		out[n] = '\0';
	if (trunc)
		*trunc = t;
	return 0;
}

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

/* A number.  One that runs to the end of the input is incomplete: more
 * digits may follow. */
static int jp_number(struct jp *p)
{
#define NEED() do { if (p->pos >= p->len) return -EAGAIN; } while (0)
	if (p->s[p->pos] == '-')
		p->pos++;
	NEED();
	if (p->s[p->pos] == '0') {
		p->pos++;
	} else if (is_digit(p->s[p->pos])) {
		while (p->pos < p->len && is_digit(p->s[p->pos]))
			p->pos++;
	} else {
		return -EPROTO;
	}
	NEED();
	if (p->s[p->pos] == '.') {
		p->pos++;
		NEED();
		if (!is_digit(p->s[p->pos]))
			return -EPROTO;
		while (p->pos < p->len && is_digit(p->s[p->pos]))
			p->pos++;
		NEED();
	}
	if (p->s[p->pos] == 'e' || p->s[p->pos] == 'E') {
		p->pos++;
		NEED();
		if (p->s[p->pos] == '+' || p->s[p->pos] == '-')
			p->pos++;
		NEED();
		if (!is_digit(p->s[p->pos]))
			return -EPROTO;
		while (p->pos < p->len && is_digit(p->s[p->pos]))
			p->pos++;
		NEED();
	}
#undef NEED
	return 0;
}

static int jp_literal(struct jp *p, const char *word)
{
	size_t n = strlen(word);

	for (size_t i = 0; i < n; i++) {
		if (p->pos + i >= p->len)
			return -EAGAIN;
		if (p->s[p->pos + i] != word[i])
			return -EPROTO;
	}
	p->pos += n;
	return 0;
}

static int jp_value(struct jp *p, unsigned depth);

/* An object's or array's members, p->pos at '{' or '['. */
static int jp_container(struct jp *p, unsigned depth)
{
	char close = p->s[p->pos] == '{' ? '}' : ']';
	bool first = true;
	int rc;

	if (depth >= QMP_DEPTH_MAX)
		return -EMSGSIZE;
	p->pos++;
	for (;;) {
		jp_ws(p);
		if (p->pos >= p->len)
			return -EAGAIN;
		if (p->s[p->pos] == close && first) {
			p->pos++;
			return 0;
		}
		if (!first) {
			if (p->s[p->pos] == close) {
				p->pos++;
				return 0;
			}
			if (p->s[p->pos] != ',')
				return -EPROTO;
			p->pos++;
			jp_ws(p);
			if (p->pos >= p->len)
				return -EAGAIN;
		}
		first = false;
		if (close == '}') {
			if (p->s[p->pos] != '"')
				return -EPROTO;
			rc = jp_string(p, NULL, 0, NULL);
			if (rc)
				return rc;
			jp_ws(p);
			if (p->pos >= p->len)
				return -EAGAIN;
			if (p->s[p->pos] != ':')
				return -EPROTO;
			p->pos++;
		}
		rc = jp_value(p, depth + 1);
		if (rc)
			return rc;
	}
}

/* Any value, leading whitespace skipped. */
static int jp_value(struct jp *p, unsigned depth)
{
	jp_ws(p);
	if (p->pos >= p->len)
		return -EAGAIN;
	switch (p->s[p->pos]) {
	case '{': case '[':
		return jp_container(p, depth);
	case '"':
		return jp_string(p, NULL, 0, NULL);
	case 't':
		return jp_literal(p, "true");
	case 'f':
		return jp_literal(p, "false");
	case 'n':
		return jp_literal(p, "null");
	default:
		if (p->s[p->pos] == '-' || is_digit(p->s[p->pos]))
			return jp_number(p);
		return -EPROTO;
	}
}

/*
 * The members of the object s[0..len) one by one: calls fn with each key
 * (decoded, "" if longer than 63 bytes) and its value's span.  fn returns
 * 0 to go on, anything else stops the walk and is returned.
 */
typedef int (*member_fn)(void *arg, const char *key, size_t voff, size_t vlen);

static int jp_members(const char *s, size_t len, member_fn fn, void *arg)
{
	struct jp p = { s, len, 0 };
	bool first = true;
	int rc;

	jp_ws(&p);
	if (p.pos >= p.len)
		return -EAGAIN;
	if (s[p.pos] != '{')
		return -EPROTO;
	p.pos++;
	for (;;) {
		char key[64];
		bool trunc = false;
		size_t voff;

		jp_ws(&p);
		if (p.pos >= p.len)
			return -EAGAIN;
		if (s[p.pos] == '}') {
			p.pos++;
			return 0;
		}
		if (!first) {
			if (s[p.pos] != ',')
				return -EPROTO;
			p.pos++;
			jp_ws(&p);
			if (p.pos >= p.len)
				return -EAGAIN;
		}
		first = false;
		if (s[p.pos] != '"')
			return -EPROTO;
		rc = jp_string(&p, key, sizeof(key), &trunc);
		if (rc)
			return rc;
		if (trunc)
			key[0] = '\0';
		jp_ws(&p);
		if (p.pos >= p.len)
			return -EAGAIN;
		if (s[p.pos] != ':')
			return -EPROTO;
		p.pos++;
		jp_ws(&p);
		voff = p.pos;
		rc = jp_value(&p, 1);
		if (rc)
			return rc;
		rc = fn(arg, key, voff, p.pos - voff);
		if (rc)
			return rc;
	}
}

struct find {
	const char *key;
	size_t off, len;
	bool found;
};

static int find_cb(void *arg, const char *key, size_t voff, size_t vlen)
{
	struct find *f = arg;

	if (strcmp(key, f->key))
		return 0;
	if (f->found)
		return -EPROTO;		/* the same key twice: ambiguous, refuse it */
	f->found = true;
	f->off = voff;
	f->len = vlen;
	return 0;
}

/* The span of member `key` of the object s[0..len): 0, -ENOENT, -EPROTO. */
static int json_member(const char *s, size_t len, const char *key, size_t *off, size_t *vlen)
{
	struct find f = { .key = key };
	int rc = jp_members(s, len, find_cb, &f);

	if (rc == -EAGAIN)
		rc = -EPROTO;	/* a span handed in is complete, or it is not JSON */
	if (rc)
		return rc;
	if (!f.found)
		return -ENOENT;
	*off = f.off;
	*vlen = f.len;
	return 0;
}

/* The integer s[0..len) (exactly one JSON integer, no fraction or
 * exponent, within int64_t): 0 or -EPROTO. */
static int json_int(const char *s, size_t len, int64_t *out)
{
	bool neg = false;
	uint64_t v = 0;
	size_t i = 0;

	if (len && s[0] == '-') {
		neg = true;
		i = 1;
	}
	if (i >= len || (s[i] == '0' && len - i > 1))
		return -EPROTO;		/* empty, or a leading zero */
	for (; i < len; i++) {
		unsigned d;

		if (!is_digit(s[i]))
			return -EPROTO;
		d = (unsigned)(s[i] - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -EPROTO;
		v = v * 10 + d;
	}
	if (neg ? v > (uint64_t)INT64_MAX + 1 : v > (uint64_t)INT64_MAX)
		return -EPROTO;
	*out = neg ? (int64_t)(0 - v) : (int64_t)v;
	return 0;
}

int qmp__object_int(const char *obj, size_t len, const char *key, int64_t *out)
{
	size_t off, vlen;
	int rc = json_member(obj, len, key, &off, &vlen);

	if (rc)
		return rc;
	return json_int(obj + off, vlen, out);
}

/* A string value's text, for logs: control and non-ASCII bytes as '?'. */
static int json_text(const char *s, size_t len, char *out, size_t outlen)
{
	struct jp p = { s, len, 0 };
	bool trunc = false;
	int rc;

	if (!len || s[0] != '"')
		return -EPROTO;
	rc = jp_string(&p, out, outlen, &trunc);
	if (rc)
		return -EPROTO;
	if (p.pos != len)
		return -EPROTO;
	for (char *c = out; *c; c++)
		if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
			*c = '?';
	return 0;
}

/* ---- QMP messages ---- */

struct top {
	size_t off[5], len[5];		/* QMP, event, return, error, id */
	bool has[5];
};

static const char *const top_keys[5] = { "QMP", "event", "return", "error", "id" };

static int top_cb(void *arg, const char *key, size_t voff, size_t vlen)
{
	struct top *t = arg;

	for (int i = 0; i < 5; i++) {
		if (strcmp(key, top_keys[i]))
			continue;
		if (t->has[i])
			return -EPROTO;
		t->has[i] = true;
		t->off[i] = voff;
		t->len[i] = vlen;
	}
	return 0;
}

static int parse_greeting(const char *s, size_t len, struct qmp__msg *m)
{
	size_t off, vlen, qoff, qlen, coff, clen;
	int64_t v[3];
	static const char *const parts[3] = { "major", "minor", "micro" };
	int rc;

	rc = json_member(s, len, "version", &off, &vlen);
	if (rc)
		return -EPROTO;
	rc = json_member(s + off, vlen, "qemu", &qoff, &qlen);
	if (rc)
		return -EPROTO;
	for (int i = 0; i < 3; i++) {
		rc = qmp__object_int(s + off + qoff, qlen, parts[i], &v[i]);
		if (rc || v[i] < 0 || v[i] > 100000)
			return -EPROTO;
	}
	rc = json_member(s, len, "capabilities", &coff, &clen);
	if (rc || s[coff] != '[')
		return -EPROTO;
	m->major = (int)v[0];
	m->minor = (int)v[1];
	m->micro = (int)v[2];
	return 0;
}

static int parse_error(const char *s, size_t len, struct qmp__msg *m)
{
	size_t off, vlen;

	if (json_member(s, len, "class", &off, &vlen) ||
	    json_text(s + off, vlen, m->name, sizeof(m->name)))
		return -EPROTO;
	if (json_member(s, len, "desc", &off, &vlen) ||
	    json_text(s + off, vlen, m->desc, sizeof(m->desc)))
		return -EPROTO;
	return 0;
}

int qmp__parse(const char *buf, size_t len, size_t *used, struct qmp__msg *m)
{
	struct jp p = { buf, MIN(len, (size_t)QMP_MSG_MAX), 0 };
	struct top t = { 0 };
	size_t start;
	int rc, kinds = 0;

	memset(m, 0, sizeof(*m));
	jp_ws(&p);
	if (p.pos >= p.len)
		return len > QMP_MSG_MAX ? -EMSGSIZE : -EAGAIN;
	if (buf[p.pos] != '{')
		return -EPROTO;		/* every QMP message is an object */
	start = p.pos;
	rc = jp_value(&p, 0);
	if (rc == -EAGAIN && len > QMP_MSG_MAX)
		return -EMSGSIZE;
	if (rc)
		return rc;
	rc = jp_members(buf + start, p.pos - start, top_cb, &t);
	if (rc)
		return rc == -EAGAIN ? -EPROTO : rc;
	for (int i = 0; i < 4; i++)
		kinds += t.has[i];
	if (kinds != 1)
		return -EPROTO;		/* none of greeting, event, return, error; or two */

#define SPAN(i) (buf + start + t.off[i]), t.len[i]
	if (t.has[4]) {
		m->id_kind = json_int(SPAN(4), &m->id) == 0 ? 1 : 2;
		if (m->id_kind == 2)
			m->id = 0;
	}
	if (t.has[0]) {
		m->kind = QMP__GREETING;
		rc = parse_greeting(SPAN(0), m);
	} else if (t.has[1]) {
		m->kind = QMP__EVENT;
		rc = json_text(SPAN(1), m->name, sizeof(m->name));
	} else if (t.has[2]) {
		m->kind = QMP__RETURN;
		m->ret_off = start + t.off[2];
		m->ret_len = t.len[2];
	} else {
		m->kind = QMP__ERROR;
		rc = parse_error(SPAN(3), m);
	}
#undef SPAN
	if (rc)
		return -EPROTO;
	*used = p.pos;
	return 0;
}

/* ======================================================================
 * The session
 * ====================================================================== */

/* Set q->err; a failure that leaves bytes of a reply unread breaks the
 * session.  Returns rc. */
static int fail(struct qmp *q, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct qmp *q, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
	switch (rc) {
	case -EREMOTEIO: case -ENOBUFS: case -EINVAL: case -ENOTCONN: case -ENOMEM:
	case -EBADF: case -ENAMETOOLONG:
		break;		/* nothing sent, or the reply read whole: still in step */
	default:
		q->broken = true;
	}
	log_debug("%s", q->err);
	return rc;
}

static uint64_t deadline_after(unsigned timeout_ms)
{
	return now_ns() + (uint64_t)timeout_ms * 1000000u;
}

/* Wait for `events` on q->fd until the deadline: 0, -ETIMEDOUT, -errno. */
static int wait_fd(int fd, short events, uint64_t deadline)
{
	for (;;) {
		struct pollfd pfd = { .fd = fd, .events = events };
		uint64_t now = now_ns();
		struct timespec ts;
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		ts.tv_sec = (time_t)((deadline - now) / 1000000000u);
		ts.tv_nsec = (long)((deadline - now) % 1000000000u);
		r = ppoll(&pfd, 1, &ts, NULL);
		if (r > 0)
			return 0;	/* readable, writable, or an error a read/write reports */
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

static void sleep_until(uint64_t deadline, uint64_t most_ns)
{
	uint64_t now = now_ns(), ns = deadline > now ? MIN(deadline - now, most_ns) : 0;
	struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/*
 * The framer: scan the bytes read since the last call for the end of the
 * first message (its top-level braces balanced, outside strings), so a
 * message trickling in is scanned once, not parsed again per read.
 * Returns its length with the whitespace before it, 0 if not yet there,
 * -EPROTO when it does not start with '{'.
 */
static ssize_t frame(struct qmp *q)
{
	for (; q->scan < q->len; q->scan++) {
		char c = q->buf[q->scan];

		if (!q->fstarted) {
			if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
				continue;
			if (c != '{')
				return -EPROTO;
			q->fstarted = true;
			q->fdepth = 1;
			continue;
		}
		if (q->fstr) {
			if (q->fesc)
				q->fesc = false;
			else if (c == '\\')
				q->fesc = true;
			else if (c == '"')
				q->fstr = false;
			continue;
		}
		if (c == '"') {
			q->fstr = true;
		} else if (c == '{' || c == '[') {
			q->fdepth++;
		} else if (c == '}' || c == ']') {
			if (--q->fdepth == 0)
				return (ssize_t)++q->scan;
		}
	}
	if (!q->fstarted) {
		q->len = q->scan = 0;	/* only whitespace so far: drop it */
	}
	return 0;
}

static void consume(struct qmp *q, size_t n)
{
	memmove(q->buf, q->buf + n, q->len - n);
	q->len -= n;
	q->scan = 0;
	q->fdepth = 0;
	q->fstarted = q->fstr = q->fesc = false;
}

/* The next message from QEMU, by the deadline.  `what` names what is
 * awaited, for the error text. */
static int read_msg(struct qmp *q, uint64_t deadline, unsigned timeout_ms, const char *what,
		    struct qmp__msg *m)
{
	for (;;) {
		ssize_t k = frame(q), n;
		size_t used = 0;
		int rc;

		if (k < 0)
			return fail(q, -EPROTO, "QEMU sent something that is not a QMP message "
				    "while we waited for %s", what);
		if (k > 0) {
			rc = qmp__parse(q->buf, (size_t)k, &used, m);
			if (rc == -EAGAIN)
				rc = -EPROTO;
			if (rc == -EMSGSIZE)
				return fail(q, rc, "QEMU sent a message nested deeper than %u "
					    "while we waited for %s", QMP_DEPTH_MAX, what);
			if (rc)
				return fail(q, rc, "QEMU sent malformed JSON or not a QMP message "
					    "while we waited for %s", what);
			/* ret_off points into buf: the caller copies it before the next read */
			q->scan = (size_t)k;
			return 0;
		}
		if (q->len >= QMP_MSG_MAX)
			return fail(q, -EMSGSIZE, "QEMU sent a message longer than %u bytes "
				    "while we waited for %s", QMP_MSG_MAX, what);
		rc = wait_fd(q->fd, POLLIN, deadline);
		if (rc == -ETIMEDOUT)
			return fail(q, rc, "no answer from QEMU within %u ms while we waited for %s",
				    timeout_ms, what);
		if (rc)
			return fail(q, rc, "polling the QMP socket: %s", strerror(-rc));
		n = read(q->fd, q->buf + q->len, QMP_MSG_MAX - q->len);
		if (n == 0)
			return fail(q, -ECONNRESET, "QEMU closed the QMP connection while we waited "
				    "for %s", what);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return fail(q, -errno, "reading the QMP socket: %s", strerror(errno));
		}
		q->len += (size_t)n;
	}
}

/* Send all of msg by the deadline, fd (if >= 0) on its first byte. */
static int send_msg(struct qmp *q, const char *msg, size_t len, int fd, uint64_t deadline,
		    unsigned timeout_ms, const char *what)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n;
		int rc;

		if (fd >= 0 && off == 0) {
			char cbuf[CMSG_SPACE(sizeof(int))];
			struct iovec iov = { (void *)msg, 1 };
			struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
					     .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
			struct cmsghdr *cm;

			memset(cbuf, 0, sizeof(cbuf));
			cm = CMSG_FIRSTHDR(&mh);
			cm->cmsg_level = SOL_SOCKET;
			cm->cmsg_type = SCM_RIGHTS;
			cm->cmsg_len = CMSG_LEN(sizeof(int));
			memcpy(CMSG_DATA(cm), &fd, sizeof(int));
			n = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
		} else {
			n = send(q->fd, msg + off, len - off, MSG_NOSIGNAL);
		}
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno != EAGAIN)
			return fail(q, errno == EPIPE ? -ECONNRESET : -errno,
				    "sending %s to QEMU: %s", what, strerror(errno));
		rc = wait_fd(q->fd, POLLOUT, deadline);
		if (rc == -ETIMEDOUT)
			return fail(q, rc, "QEMU took no bytes of %s within %u ms", what, timeout_ms);
		if (rc)
			return fail(q, rc, "polling the QMP socket: %s", strerror(-rc));
	}
	return 0;
}

static void record_event(struct qmp *q, const char *name)
{
	int free_slot = -1;

	q->ev_total++;
	log_debug("QEMU event %s", name);
	for (int i = 0; i < QMP_EVENT_NAMES; i++) {
		if (q->ev[i].n && !strcmp(q->ev[i].name, name)) {
			q->ev[i].n++;
			return;
		}
		if (!q->ev[i].n && free_slot < 0)
			free_slot = i;
	}
	if (free_slot >= 0 && strlen(name) < sizeof(q->ev[0].name)) {
		snprintf(q->ev[free_slot].name, sizeof(q->ev[0].name), "%s", name);
		q->ev[free_slot].n = 1;
	}
}

static bool valid_command_name(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63)
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || is_digit(*s) ||
		      *s == '-' || *s == '_'))
			return false;
	return true;
}

/* One command and its reply (see qmp_command); args is JSON or NULL. */
static int execute(struct qmp *q, int fd, unsigned timeout_ms, char *reply, size_t replylen,
		   const char *cmd, const char *args)
{
	uint64_t deadline = deadline_after(timeout_ms);
	char what[96], *msg = NULL;
	int64_t id;
	int n, rc;

	q->err[0] = '\0';
	if (reply && replylen)
		reply[0] = '\0';
	if (q->broken)
		return fail(q, -ENOTCONN, "the QMP session broke earlier; open a new one");
	if (!valid_command_name(cmd))
		return fail(q, -EINVAL, "not a QMP command name: \"%.64s\"", cmd);
	if (args) {
		struct jp p = { args, strlen(args), 0 };

		jp_ws(&p);
		rc = p.pos < p.len && args[p.pos] == '{' ? jp_value(&p, 0) : -EPROTO;
		jp_ws(&p);
		if (rc || p.pos != p.len)
			return fail(q, -EINVAL, "the arguments of `%s` are not one JSON object", cmd);
	}
	snprintf(what, sizeof(what), "the reply to `%s`", cmd);
	msg = malloc(QMP_MSG_MAX);
	if (!msg)
		return fail(q, -ENOMEM, "out of memory");
	id = ++q->next_id;
	if (args)
		n = snprintf(msg, QMP_MSG_MAX, "{\"execute\":\"%s\",\"arguments\":%s,\"id\":%" PRId64 "}\n",
			     cmd, args, id);
	else
		n = snprintf(msg, QMP_MSG_MAX, "{\"execute\":\"%s\",\"id\":%" PRId64 "}\n", cmd, id);
	if (n < 0 || (size_t)n >= QMP_MSG_MAX) {
		rc = fail(q, -EINVAL, "the command `%s` is longer than %u bytes", cmd, QMP_MSG_MAX);
		q->next_id--;
		goto out;
	}
	rc = send_msg(q, msg, (size_t)n, fd, deadline, timeout_ms, cmd);
	if (rc)
		goto out;
	for (;;) {
		struct qmp__msg m;

		rc = read_msg(q, deadline, timeout_ms, what, &m);
		if (rc)
			goto out;
		if (m.kind == QMP__EVENT) {
			record_event(q, m.name);
			consume(q, q->scan);
			continue;
		}
		if (m.kind == QMP__GREETING) {
			rc = fail(q, -EPROTO, "QEMU greeted again instead of answering `%s`", cmd);
			goto out;
		}
		if (m.id_kind != 1 || m.id != id) {
			if (m.kind == QMP__ERROR && m.id_kind == 0)
				rc = fail(q, -EPROTO, "QEMU could not read `%s`: %s: %s", cmd, m.name, m.desc);
			else if (m.id_kind == 1)
				rc = fail(q, -EPROTO, "QEMU answered id %" PRId64 " while we waited for id "
					  "%" PRId64 " (`%s`)", m.id, id, cmd);
			else
				rc = fail(q, -EPROTO, "QEMU answered with %s id while we waited for "
					  "id %" PRId64 " (`%s`)", m.id_kind ? "a non-integer" : "no",
					  id, cmd);
			goto out;
		}
		if (m.kind == QMP__ERROR) {
			consume(q, q->scan);
			rc = fail(q, -EREMOTEIO, "QEMU refused `%s`: %s: %s", cmd, m.name, m.desc);
			goto out;
		}
		if (reply && replylen) {
			if (m.ret_len >= replylen) {
				consume(q, q->scan);
				rc = fail(q, -ENOBUFS, "QEMU's reply to `%s` has %zu bytes, more than "
					  "the %zu expected", cmd, m.ret_len, replylen - 1);
				goto out;
			}
			memcpy(reply, q->buf + m.ret_off, m.ret_len);
			reply[m.ret_len] = '\0';
		}
		consume(q, q->scan);
		rc = 0;
		goto out;
	}
out:
	free(msg);
	return rc;
}

static int vcommand(struct qmp *q, int fd, unsigned timeout_ms, char *reply, size_t replylen,
		    const char *cmd, const char *args_fmt, va_list ap)
{
	char *args = NULL;
	int rc;

	if (args_fmt && vasprintf(&args, args_fmt, ap) < 0)
		return fail(q, -ENOMEM, "out of memory");
	rc = execute(q, fd, timeout_ms, reply, replylen, cmd, args);
	free(args);
	return rc;
}

int qmp_command(struct qmp *q, unsigned timeout_ms, char *reply, size_t replylen,
		const char *execute_name, const char *args_fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, args_fmt);
	rc = vcommand(q, -1, timeout_ms, reply, replylen, execute_name, args_fmt, ap);
	va_end(ap);
	return rc;
}

int qmp_command_fd(struct qmp *q, int fd, unsigned timeout_ms, char *reply, size_t replylen,
		   const char *execute_name, const char *args_fmt, ...)
{
	va_list ap;
	int rc;

	if (fd < 0)
		return fail(q, -EBADF, "no file descriptor to pass with `%s`", execute_name);
	va_start(ap, args_fmt);
	rc = vcommand(q, fd, timeout_ms, reply, replylen, execute_name, args_fmt, ap);
	va_end(ap);
	return rc;
}

/* ---- libxl's lock ---- */

/*
 * libxl__ev_slowlock_lock's protocol (libxl_internal.c), bounded: open
 * O_RDWR|O_CREAT 0666, flock(LOCK_EX), then make sure the file we locked
 * is still the one at the path (the previous holder unlinks it before it
 * unlocks); if not, start over.
 */
static int take_lock(const char *path, uint64_t deadline, unsigned timeout_ms, int *out,
		     char *err, size_t errlen)
{
	for (;;) {
		struct stat st, fst;
		int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);

		if (fd < 0) {
			int e = errno;

			snprintf(err, errlen, "cannot open libxl's QMP lock %s: %s", path, strerror(e));
			return -e;
		}
		for (;;) {
			if (flock(fd, LOCK_EX | LOCK_NB) == 0)
				break;
			if (errno == EINTR)
				continue;
			if (errno != EWOULDBLOCK) {
				int e = errno;

				snprintf(err, errlen, "cannot lock %s: %s", path, strerror(e));
				close(fd);
				return -e;
			}
			if (now_ns() >= deadline) {
				snprintf(err, errlen, "another QMP client of this domain (libxl, xl) held "
					 "%s for more than %u ms", path, timeout_ms);
				close(fd);
				return -ETIMEDOUT;
			}
			sleep_until(deadline, LOCK_RETRY_NS);
		}
		if (fstat(fd, &fst) == 0 && stat(path, &st) == 0 &&
		    st.st_dev == fst.st_dev && st.st_ino == fst.st_ino) {
			*out = fd;
			return 0;
		}
		close(fd);	/* the holder unlinked it as we waited: lock the new one */
		if (now_ns() >= deadline) {
			snprintf(err, errlen, "could not lock %s within %u ms", path, timeout_ms);
			return -ETIMEDOUT;
		}
	}
}

static void release_lock(struct qmp *q)
{
	if (q->lock_fd < 0)
		return;
	/* As libxl__ev_slowlock_unlock: unlink first, then unlock. */
	if (unlink(q->lock_path) < 0 && errno != ENOENT)
		log_debug("unlink %s: %s", q->lock_path, strerror(errno));
	flock(q->lock_fd, LOCK_UN);
	close(q->lock_fd);
	q->lock_fd = -1;
}

/* ---- open, close ---- */

int qmp_open(const char *path, const char *lock_path, unsigned timeout_ms, struct qmp **out,
	     char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	uint64_t deadline = deadline_after(timeout_ms);
	struct qmp *q = NULL;
	struct qmp__msg m;
	char dummy[8];
	int rc;

	*out = NULL;
	if (errlen)
		err[0] = '\0';
	if (strlen(path) >= sizeof(sa.sun_path)) {
		snprintf(err, errlen, "QMP socket path too long: %s", path);
		return -ENAMETOOLONG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	q = calloc(1, sizeof(*q));
	if (q)
		q->buf = malloc(QMP_MSG_MAX);
	if (!q || !q->buf) {
		snprintf(err, errlen, "out of memory");
		rc = -ENOMEM;
		goto out;
	}
	q->fd = -1;
	q->lock_fd = -1;
	if (lock_path) {
		q->lock_path = strdup(lock_path);
		if (!q->lock_path) {
			snprintf(err, errlen, "out of memory");
			rc = -ENOMEM;
			goto out;
		}
		rc = take_lock(lock_path, deadline, timeout_ms, &q->lock_fd, err, errlen);
		if (rc)
			goto out;
	}
	q->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (q->fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "socket: %s", strerror(errno));
		goto out;
	}
	/* As libxl's qmp_open: the socket may not be there yet, or be a
	 * leftover nobody listens on; try again until the deadline. */
	for (;;) {
		if (connect(q->fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			break;
		rc = -errno;
		if (rc != -ENOENT && rc != -ECONNREFUSED && rc != -EAGAIN && rc != -EINTR) {
			snprintf(err, errlen, "cannot connect to QMP socket %s: %s", path, strerror(-rc));
			goto out;
		}
		if (now_ns() >= deadline) {
			snprintf(err, errlen, "cannot connect to QMP socket %s within %u ms: %s "
				 "(is the guest's QEMU running?)", path, timeout_ms, strerror(-rc));
			goto out;
		}
		sleep_until(deadline, CONNECT_RETRY_NS);
	}

	rc = read_msg(q, deadline, timeout_ms, "QEMU's greeting", &m);
	if (rc == 0 && m.kind != QMP__GREETING)
		rc = fail(q, -EPROTO, "QEMU's first message on %s is not a QMP greeting", path);
	if (rc) {
		snprintf(err, errlen, "%s", q->err);
		goto out;
	}
	consume(q, q->scan);
	q->major = m.major;
	q->minor = m.minor;
	q->micro = m.micro;
	log_debug("QMP %s: QEMU %d.%d.%d", path, q->major, q->minor, q->micro);

	/* What remains of the open's time is the capabilities' bound. */
	{
		uint64_t now = now_ns();
		unsigned left = now < deadline ? (unsigned)((deadline - now + 999999u) / 1000000u) : 0;

		rc = execute(q, -1, left, dummy, sizeof(dummy), "qmp_capabilities", NULL);
	}
	if (rc) {
		snprintf(err, errlen, "QMP capabilities negotiation on %s: %s", path, q->err);
		goto out;
	}
	*out = q;
	q = NULL;
	rc = 0;
out:
	if (q && rc)
		log_debug("%s", err);
	qmp_close(q);
	return rc;
}

void qmp_close(struct qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	release_lock(q);
	free(q->lock_path);
	free(q->buf);
	free(q);
}

const char *qmp_error(const struct qmp *q)
{
	return q->err;
}

void qmp_version(const struct qmp *q, int *major, int *minor, int *micro)
{
	*major = q->major;
	*minor = q->minor;
	*micro = q->micro;
}

unsigned qmp_event_count(const struct qmp *q, const char *name)
{
	if (!name)
		return q->ev_total;
	for (int i = 0; i < QMP_EVENT_NAMES; i++)
		if (q->ev[i].n && !strcmp(q->ev[i].name, name))
			return q->ev[i].n;
	return 0;
}

void qmp_events_clear(struct qmp *q)
{
	memset(q->ev, 0, sizeof(q->ev));
	q->ev_total = 0;
}

int qmp_json_quote(const char *s, char *buf, size_t len)
{
	size_t n = 0;

#define PUT(c) do { if (n + 1 >= len) return -ENOSPC; buf[n++] = (c); } while (0)
	PUT('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			PUT('\\');
			PUT((char)c);
		} else if (c < 0x20) {
			static const char hex[] = "0123456789abcdef";

			PUT('\\'); PUT('u'); PUT('0'); PUT('0');
			PUT(hex[c >> 4]);
			PUT(hex[c & 15]);
		} else {
			PUT((char)c);
		}
	}
	PUT('"');
#undef PUT
	buf[n] = '\0';
	return 0;
}

int qmp_libxl_socket_path(uint32_t domid, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/qmp-libxl-%u", QMP_LIBXL_RUN_DIR, domid);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int qmp_libxl_lock_path(uint32_t domid, const uint8_t u[16], char *buf, size_t len)
{
	/* libxl__userdata_path(gc, domid, "qmp-socket-lock", "l") with
	 * LIBXL_UUID_FMT (lowercase, 8-4-4-4-12) */
	int n = snprintf(buf, len, "%s/userdata-l.%u.%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
			 "%02x%02x%02x%02x%02x%02x.qmp-socket-lock", QMP_LIBXL_LIB_DIR, domid,
			 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11],
			 u[12], u[13], u[14], u[15]);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* ---- the checkpoint's commands ---- */

int qmp_stop(struct qmp *q, unsigned timeout_ms)
{
	return qmp_command(q, timeout_ms, NULL, 0, "stop", NULL);
}

int qmp_cont(struct qmp *q, unsigned timeout_ms)
{
	return qmp_command(q, timeout_ms, NULL, 0, "cont", NULL);
}

int qmp_set_global_dirty_log(struct qmp *q, bool enable, unsigned timeout_ms)
{
	return qmp_command(q, timeout_ms, NULL, 0, "xen-set-global-dirty-log", "{\"enable\":%s}",
			   enable ? "true" : "false");
}

int qmp_save_devices_state(struct qmp *q, const char *filename, bool live, unsigned timeout_ms)
{
	char quoted[600];

	if (qmp_json_quote(filename, quoted, sizeof(quoted)))
		return fail(q, -ENAMETOOLONG, "device-state file name too long: %.64s...", filename);
	/* `live` exists since QEMU 2.11 (qapi/migration.json); libxl sends it
	 * only from that version on (libxl_qmp.c:dm_state_save_to_fdset). */
	if (q->major > 2 || (q->major == 2 && q->minor >= 11))
		return qmp_command(q, timeout_ms, NULL, 0, "xen-save-devices-state",
				   "{\"filename\":%s,\"live\":%s}", quoted, live ? "true" : "false");
	return qmp_command(q, timeout_ms, NULL, 0, "xen-save-devices-state", "{\"filename\":%s}",
			   quoted);
}

int qmp_add_fd(struct qmp *q, int fd, unsigned timeout_ms, int64_t *fdset_id)
{
	char reply[256];
	int rc = qmp_command_fd(q, fd, timeout_ms, reply, sizeof(reply), "add-fd", NULL);

	if (rc)
		return rc;
	if (qmp__object_int(reply, strlen(reply), "fdset-id", fdset_id) || *fdset_id < 0)
		return fail(q, -EPROTO, "QEMU's reply to `add-fd` has no fdset-id: %.200s", reply);
	return 0;
}

int qmp_remove_fd(struct qmp *q, int64_t fdset_id, unsigned timeout_ms)
{
	return qmp_command(q, timeout_ms, NULL, 0, "remove-fd", "{\"fdset-id\":%" PRId64 "}",
			   fdset_id);
}

int qmp_getfd(struct qmp *q, int fd, const char *fdname, unsigned timeout_ms)
{
	char quoted[160];

	if (qmp_json_quote(fdname, quoted, sizeof(quoted)))
		return fail(q, -EINVAL, "fd name too long: %.64s...", fdname);
	return qmp_command_fd(q, fd, timeout_ms, NULL, 0, "getfd", "{\"fdname\":%s}", quoted);
}
