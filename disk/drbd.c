/*
 * drbd.c - read and check a DRBD resource's settings (drbd.h).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/util.h"
#include "drbd.h"

/* ---- the dump's syntax: statements and sections ------------------------------ */

#define MAX_STMTS 512
#define MAX_DEPTH 8
#define VAL_MAX 256

struct stmt {
	char section[32];		/* innermost section's first word: net, disk, on, ... */
	char section_arg[64];		/* its first argument (the host of an `on`) */
	char key[48];
	char value[VAL_MAX];		/* the arguments, space-separated */
};

struct parsed {
	struct stmt s[MAX_STMTS];
	int n;
};

struct lexer {
	const char *p;
};

/* Next token into tok: a word, a quoted string (quotes removed) or one of
 * { } ;.  Returns its first character ('w' for a word or string), 0 at
 * the end. */
static int lex(struct lexer *l, char *tok, size_t len)
{
	size_t n = 0;

	for (;;) {
		while (isspace((unsigned char)*l->p))
			l->p++;
		if (*l->p != '#')
			break;
		while (*l->p && *l->p != '\n')
			l->p++;
	}
	if (!*l->p)
		return 0;
	if (strchr("{};", *l->p)) {
		tok[0] = *l->p++;
		tok[1] = '\0';
		return tok[0];
	}
	if (*l->p == '"') {
		l->p++;
		while (*l->p && *l->p != '"') {
			if (*l->p == '\\' && l->p[1])
				l->p++;
			if (n + 1 < len)
				tok[n++] = *l->p;
			l->p++;
		}
		if (*l->p == '"')
			l->p++;
		tok[n] = '\0';
		return 'w';
	}
	while (*l->p && !isspace((unsigned char)*l->p) && !strchr("{};\"", *l->p)) {
		if (n + 1 < len)
			tok[n++] = *l->p;
		l->p++;
	}
	tok[n] = '\0';
	return 'w';
}

static int parse_dump(const char *text, struct parsed *out)
{
	struct lexer l = { text };
	char words[8][VAL_MAX], tok[VAL_MAX];
	char sec[MAX_DEPTH][32], sec_arg[MAX_DEPTH][64];
	int nw = 0, depth = 0, t;

	out->n = 0;
	while ((t = lex(&l, tok, sizeof(tok))) != 0) {
		if (t == 'w') {
			if (nw < 8)
				snprintf(words[nw++], VAL_MAX, "%s", tok);
			continue;
		}
		if (t == '{') {
			if (depth == MAX_DEPTH || !nw)
				return -EBADMSG;
			snprintf(sec[depth], sizeof(sec[depth]), "%.31s", words[0]);
			snprintf(sec_arg[depth], sizeof(sec_arg[depth]), "%.63s", nw > 1 ? words[1] : "");
			depth++;
			nw = 0;
		} else if (t == '}') {
			if (!depth || nw)
				return -EBADMSG;
			depth--;
		} else {	/* ';' ends a statement */
			struct stmt *s;

			if (!nw)
				continue;
			if (out->n == MAX_STMTS)
				return -E2BIG;
			s = &out->s[out->n++];
			memset(s, 0, sizeof(*s));
			snprintf(s->section, sizeof(s->section), "%s", depth ? sec[depth - 1] : "");
			snprintf(s->section_arg, sizeof(s->section_arg), "%s",
				 depth ? sec_arg[depth - 1] : "");
			snprintf(s->key, sizeof(s->key), "%.47s", words[0]);
			for (int i = 1; i < nw; i++) {
				size_t used = strlen(s->value);
				snprintf(s->value + used, sizeof(s->value) - used, "%s%s", i > 1 ? " " : "",
					 words[i]);
			}
			nw = 0;
		}
	}
	return depth || nw ? -EBADMSG : 0;
}

/* The last value of key in a section named sec (NULL: any), or NULL. */
static const char *find(const struct parsed *p, const char *sec, const char *key)
{
	const char *v = NULL;

	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->s[i].key, key) && (!sec || !strcmp(p->s[i].section, sec)))
			v = p->s[i].value;
	return v;
}

/* ---- the checks -------------------------------------------------------------------- */

struct report {
	char *msg;
	size_t len, used;
	int refusals, warnings;
};

static void __attribute__((format(printf, 3, 4)))
add(struct report *r, bool refuse, const char *fmt, ...)
{
	va_list ap;
	int w;

	if (refuse)
		r->refusals++;
	else
		r->warnings++;
	if (r->used >= r->len)
		return;
	w = snprintf(r->msg + r->used, r->len - r->used, "%s: ", refuse ? "refused" : "warning");
	if (w > 0)
		r->used = MIN(r->len, r->used + (size_t)w);
	va_start(ap, fmt);
	w = r->used < r->len ? vsnprintf(r->msg + r->used, r->len - r->used, fmt, ap) : 0;
	va_end(ap);
	if (w > 0)
		r->used = MIN(r->len, r->used + (size_t)w);
	if (r->used + 1 < r->len) {
		r->msg[r->used++] = '\n';
		r->msg[r->used] = '\0';
	}
}

static void this_device(const struct parsed *p, const char *host, char *out, size_t len)
{
	const char *dev = NULL;

	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->s[i].key, "device") && !strcmp(p->s[i].section, "on") &&
		    !strcmp(p->s[i].section_arg, host))
			dev = p->s[i].value;
	if (!dev)
		dev = find(p, "resource", "device");
	out[0] = '\0';
	if (!dev)
		return;
	if (!strncmp(dev, "minor ", 6))		/* "device minor N;" */
		snprintf(out, len, "/dev/drbd%s", dev + 6);
	else
		snprintf(out, len, "%.*s", (int)strcspn(dev, " "), dev);
}

int drbd_check_dump(const char *dump, const char *res, const char *host,
		    struct drbd_resource_info *info, char *msg, size_t msglen)
{
	static const char *const after_sb[] = { "after-sb-0pri", "after-sb-1pri", "after-sb-2pri" };
	struct parsed *p = calloc(1, sizeof(*p));
	struct report r = { msg, msglen, 0, 0, 0 };
	const char *v, *flushes, *drain;

	if (msglen)
		msg[0] = '\0';
	memset(info, 0, sizeof(*info));
	if (!p) {
		add(&r, true, "out of memory");
		return r.refusals;
	}
	if (parse_dump(dump, p) || !find(p, NULL, "device")) {
		add(&r, true, "cannot read the settings of DRBD resource '%s' (drbdadm dump printed "
		    "something tandem does not understand)", res);
		free(p);
		return r.refusals;
	}
	this_device(p, host, info->device, sizeof(info->device));
	if (!info->device[0])
		add(&r, true, "resource '%s' has no device for this host ('on %s' section): tandem "
		    "writes its checkpoint marker to this host's /dev/drbdN", res, host);

	v = find(p, "net", "protocol");
	if (!v)
		v = find(p, "resource", "protocol");
	info->protocol = v ? (char)toupper((unsigned char)v[0]) : 'C';
	if (info->protocol != 'C')
		add(&r, true, "protocol %c: a write completes before the backup's disk has it, so "
		    "at failover the backup's disk can miss writes the guest saw complete (and "
		    "the marker's wait in the pause would wait for the local disk only); tandem "
		    "needs protocol C", info->protocol);

	v = find(p, "net", "on-congestion");
	if (v && strcmp(v, "block"))
		add(&r, true, "on-congestion %s: DRBD stops mirroring while the link is congested "
		    "(Ahead/Behind mode or a disconnect), so the backup's disk falls behind "
		    "acknowledged checkpoints; use on-congestion block (the default)", v);

	flushes = find(p, "disk", "disk-flushes");
	drain = find(p, "disk", "disk-drain");
	if (flushes && drain && !strcmp(flushes, "no") && !strcmp(drain, "no"))
		add(&r, true, "disk-flushes no with disk-drain no: write ordering 'none' lets the "
		    "backup apply writes across the barriers that mark each checkpoint (DRBD's "
		    "own documentation forbids it: BarrierAck errors and resync loops); keep "
		    "either one yes");

	for (size_t i = 0; i < ARRAY_SIZE(after_sb); i++) {
		v = find(p, "net", after_sb[i]);
		if (v && strcmp(v, "disconnect"))
			add(&r, true, "%s %s: DRBD would settle a split brain by itself, keeping one "
			    "side's writes and throwing the other's away; which side holds the last "
			    "acknowledged checkpoint is for tandem to say: set %s disconnect",
			    after_sb[i], v, after_sb[i]);
	}

	v = find(p, "net", "allow-two-primaries");
	if (v && !strcmp(v, "yes"))
		add(&r, true, "allow-two-primaries yes: both hosts could write the disk at once; "
		    "tandem needs single-primary DRBD");

	v = find(p, "disk", "fencing");
	if (!v)
		v = find(p, "net", "fencing");
	snprintf(info->fencing, sizeof(info->fencing), "%s", v ? v : "dont-care");
	if (!strcmp(info->fencing, "dont-care"))
		add(&r, true, "fencing %s%s: a primary that loses its peer keeps completing writes "
		    "the backup never sees, and a checkpoint could commit across the gap; use "
		    "fencing resource-and-stonith with tandem's fence-peer handler", info->fencing,
		    v ? "" : " (the default)");
	else if (strcmp(info->fencing, "resource-and-stonith"))
		add(&r, false, "fencing %s: resource-and-stonith freezes I/O until the fence-peer "
		    "handler answers, so no write completes unseen by the backup", info->fencing);

	v = find(p, "handlers", "fence-peer");
	snprintf(info->fence_peer, sizeof(info->fence_peer), "%s", v ? v : "");
	if (!v)
		add(&r, true, "no fence-peer handler: with fencing on, a disconnect must mark this "
		    "resource so that tandem commits no checkpoint across it; set handlers { "
		    "fence-peer \"tandem fence-peer CONFIG\"; }");
	else if (!strstr(v, "tandem fence-peer"))
		add(&r, false, "fence-peer %s is not tandem's (tandem fence-peer CONFIG): a "
		    "disconnect does not put tandem's fence flag up, so a checkpoint could commit "
		    "while a resync is still bringing older writes to the backup", v);

	if (!find(p, "net", "csums-alg"))
		add(&r, false, "no csums-alg: re-protection after a failover resyncs the whole disk "
		    "over the link instead of the blocks that differ (set csums-alg, e.g. sha1)");
	info->warnings = r.warnings;
	free(p);
	return r.refusals;
}

/* ---- running drbdadm ------------------------------------------------------------------ */

#define DUMP_MAX (1u << 20)
#define DRBDADM_TIMEOUT_MS 10000

/* Read both pipes to the end (or the deadline); returns 0 or -ETIMEDOUT. */
static int collect(int out_fd, int err_fd, char *out, size_t out_cap, char *err, size_t err_cap)
{
	size_t no = 0, ne = 0;
	uint64_t end = now_ms() + DRBDADM_TIMEOUT_MS;
	struct pollfd pf[2] = { { out_fd, POLLIN, 0 }, { err_fd, POLLIN, 0 } };

	while (pf[0].fd >= 0 || pf[1].fd >= 0) {
		uint64_t t = now_ms();
		char buf[4096];

		if (t >= end)
			return -ETIMEDOUT;
		if (poll(pf, 2, (int)(end - t)) < 0 && errno != EINTR)
			return -errno;
		for (int i = 0; i < 2; i++) {
			ssize_t r;

			if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = read(pf[i].fd, buf, sizeof(buf));
			if (r <= 0) {
				pf[i].fd = -1;
				continue;
			}
			if (i == 0 && no + (size_t)r < out_cap) {
				memcpy(out + no, buf, (size_t)r);
				no += (size_t)r;
			} else if (i == 1 && ne + (size_t)r < err_cap) {
				memcpy(err + ne, buf, (size_t)r);
				ne += (size_t)r;
			}
		}
	}
	out[no] = '\0';
	err[ne] = '\0';
	return 0;
}

/* drbdadm's complaint on one line, without the noise it prints when no
 * DRBD module is loaded ("modinfo: ERROR: ...", not always on a line of
 * its own) or when an address is not this host's. */
static void first_error(const char *err, char *out, size_t len)
{
	size_t n = 0;

	for (const char *p = err; *p && n + 1 < len;) {
		if (!strncmp(p, "modinfo:", 8) || !strncmp(p, "IP ", 3)) {
			p += strcspn(p, "\n");
			continue;
		}
		if (isspace((unsigned char)*p)) {
			if (n && out[n - 1] != ' ')
				out[n++] = ' ';
			p++;
			continue;
		}
		out[n++] = *p++;
	}
	while (n && out[n - 1] == ' ')
		n--;
	out[n] = '\0';
}

/*
 * Run `drbdadm -c conf VERB res` and collect what it prints (up to cap - 1
 * bytes).  Returns 0, or -1 with why in msg.
 */
static int run_drbdadm(const char *conf, const char *verb, const char *res, char *text,
		       size_t cap, char *msg, size_t msglen)
{
	int out[2] = { -1, -1 }, err[2] = { -1, -1 }, status = 0, rc;
	char errtext[4096] = "", why[1024];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)) {
		snprintf(msg, msglen, "cannot run drbdadm: %s", strerror(errno));
		return -1;
	}
	pid = fork();
	if (pid == 0) {
		dup2(out[1], 1);
		dup2(err[1], 2);
		execlp("drbdadm", "drbdadm", "-c", conf, verb, res, (char *)NULL);
		dprintf(2, "exec: %s\n", strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}
	close(out[1]);
	close(err[1]);
	rc = pid < 0 ? -errno : collect(out[0], err[0], text, cap, errtext, sizeof(errtext));
	close(out[0]);
	close(err[0]);
	if (pid > 0) {
		if (rc)
			kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (rc || !WIFEXITED(status) || WEXITSTATUS(status)) {
		if (!rc && WIFEXITED(status) && WEXITSTATUS(status) == 127)
			snprintf(msg, msglen, "drbdadm not found: install drbd-utils (apt-get install "
				 "drbd-utils) to protect disks");
		else {
			first_error(errtext, why, sizeof(why));
			snprintf(msg, msglen, "drbdadm cannot %s DRBD resource '%s' from %s: %s",
				 strcmp(verb, "dump") ? "read the state of" : "read", res, conf,
				 rc ? strerror(-rc) : why[0] ? why : "it failed");
		}
		return -1;
	}
	return 0;
}

int drbd_check_resource(const char *conf, const char *res, struct drbd_resource_info *info,
			char *msg, size_t msglen)
{
	char *dump = malloc(DUMP_MAX);
	struct utsname u;
	int rc;

	if (!dump) {
		snprintf(msg, msglen, "cannot run drbdadm: %s", strerror(ENOMEM));
		return -1;
	}
	if (run_drbdadm(conf, "dump", res, dump, DUMP_MAX, msg, msglen)) {
		free(dump);
		return -1;
	}
	if (uname(&u))
		snprintf(u.nodename, sizeof(u.nodename), "localhost");
	rc = drbd_check_dump(dump, res, u.nodename, info, msg, msglen);
	free(dump);
	return rc;
}

bool drbd_state_healthy(const char *cstate, const char *dstate)
{
	char c[64] = "", d[64] = "";

	sscanf(cstate, "%63s", c);
	sscanf(dstate, "%63s", d);
	return !strcmp(c, "Connected") && !strcmp(d, "UpToDate/UpToDate");
}

int drbd_healthy(const char *conf, const char *res, char *msg, size_t msglen)
{
	char cstate[256], dstate[256];

	if (run_drbdadm(conf, "cstate", res, cstate, sizeof(cstate), msg, msglen) ||
	    run_drbdadm(conf, "dstate", res, dstate, sizeof(dstate), msg, msglen))
		return -1;
	cstate[strcspn(cstate, "\n")] = '\0';
	dstate[strcspn(dstate, "\n")] = '\0';
	snprintf(msg, msglen, "connection %s, disks %s", cstate, dstate);
	return drbd_state_healthy(cstate, dstate);
}
