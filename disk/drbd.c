/*
 * drbd.c - read and check a DRBD resource's settings (drbd.h).
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "../lib/run.h"
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

/* A key of this host's `on HOST` section, else of the resource. */
static const char *this_host(const struct parsed *p, const char *host, const char *key)
{
	const char *v = NULL;

	for (int i = 0; i < p->n; i++)
		if (!strcmp(p->s[i].key, key) && !strcmp(p->s[i].section, "on") &&
		    !strcmp(p->s[i].section_arg, host))
			v = p->s[i].value;
	return v ? v : find(p, "resource", key);
}

static void this_device(const struct parsed *p, const char *host, char *out, size_t len)
{
	const char *dev = this_host(p, host, "device");

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
	v = this_host(p, host, "disk");
	snprintf(info->disk, sizeof(info->disk), "%.*s", v ? (int)strcspn(v, " ") : 0, v ? v : "");
	v = this_host(p, host, "meta-disk");
	if (!v)
		v = this_host(p, host, "flexible-meta-disk");
	snprintf(info->meta_disk, sizeof(info->meta_disk), "%s", v ? v : "internal");
	if (info->device[0] && !strcmp(info->meta_disk, "internal"))
		add(&r, true, "meta-disk internal: tandem's checkpoint marker is the last 4 KiB of "
		    "/dev/drbdN, and on the backup the device under DRBD is tandem's overlay, which "
		    "finds each marker in its own last 4 KiB; internal metadata sits there instead: "
		    "put the metadata on a device of its own (meta-disk /dev/...)");
	if (info->device[0] && info->disk[0] && strncmp(info->disk, "/dev/mapper/", 12))
		add(&r, true, "disk %s: on the backup, tandem puts its overlay under DRBD by "
		    "switching this device's table; it must be a device-mapper linear device over "
		    "the real disk (disk /dev/mapper/tdm-NAME-lower, docs/disk.md)", info->disk);

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
 * Run `drbdadm -c conf VERB [OPT] res` and collect what it prints (up to
 * cap - 1 bytes).  Returns 0, or -1 with why in msg.
 */
static int run_drbdadm(const char *conf, const char *verb, const char *opt, const char *res,
		       char *text, size_t cap, char *msg, size_t msglen)
{
	const char *argv[] = { "drbdadm", "-c", conf, verb, opt ? opt : res, opt ? res : NULL, NULL };
	char errtext[4096], why[1024];
	int rc = run_capture(argv, DRBDADM_TIMEOUT_MS, text, cap, errtext, sizeof(errtext));

	if (rc == 0)
		return 0;
	if (rc == 127)
		snprintf(msg, msglen, "drbdadm not found: install drbd-utils (apt-get install "
			 "drbd-utils) to protect disks");
	else {
		first_error(errtext, why, sizeof(why));
		snprintf(msg, msglen, "drbdadm cannot %s DRBD resource '%s' from %s: %s",
			 !strcmp(verb, "dump") ? "read" : !strcmp(verb, "cstate") ||
			 !strcmp(verb, "dstate") || !strcmp(verb, "role") ? "read the state of" : verb, res, conf,
			 rc < 0 ? strerror(-rc) : why[0] ? why : "it failed");
	}
	return -1;
}

int drbd_adm(const char *conf, const char *verb, const char *opt, const char *res, char *msg,
	     size_t msglen)
{
	char out[4096];

	return run_drbdadm(conf, verb, opt, res, out, sizeof(out), msg, msglen);
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
	if (run_drbdadm(conf, "dump", NULL, res, dump, DUMP_MAX, msg, msglen)) {
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

int drbd_proc_parse(const char *text, unsigned minor, struct drbd_state *st)
{
	const char *line = text;

	memset(st, 0, sizeof(*st));
	while (line && *line) {
		unsigned m;
		int n = 0;

		if (sscanf(line, " %u: cs:%31s%n", &m, st->cs, &n) == 2 && m == minor) {
			const char *ro = strstr(line, " ro:"), *ds = strstr(line, " ds:");
			const char *eol = strchr(line, '\n');

			if (ro && (!eol || ro < eol))
				sscanf(ro + 4, "%47s", st->ro);
			if (ds && (!eol || ds < eol))
				sscanf(ds + 4, "%47s", st->ds);
			return 0;
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
	memset(st, 0, sizeof(*st));
	return -ENOENT;
}

int drbd_state(const char *conf, const char *res, const char *device, unsigned want,
	       struct drbd_state *st, char *msg, size_t msglen)
{
	static const struct {
		unsigned bit;
		const char *verb;
		size_t off, len;
	} asks[] = {
		{ DRBD_CS, "cstate", offsetof(struct drbd_state, cs), sizeof(st->cs) },
		{ DRBD_RO, "role", offsetof(struct drbd_state, ro), sizeof(st->ro) },
		{ DRBD_DS, "dstate", offsetof(struct drbd_state, ds), sizeof(st->ds) },
	};
	char text[8192], out[256];
	unsigned minor;
	char tail;
	int fd;

	if (device && sscanf(device, "/dev/drbd%u%c", &minor, &tail) == 1 &&
	    (fd = open("/proc/drbd", O_RDONLY | O_CLOEXEC)) >= 0) {
		ssize_t n = read(fd, text, sizeof(text) - 1);

		close(fd);
		if (n > 0) {
			text[n] = '\0';
			if (drbd_proc_parse(text, minor, st) == 0 && st->ds[0])
				return 0;
		}
	}
	memset(st, 0, sizeof(*st));
	for (size_t i = 0; i < ARRAY_SIZE(asks); i++) {
		char *field = (char *)st + asks[i].off;

		if (!(want & asks[i].bit))
			continue;
		if (run_drbdadm(conf, asks[i].verb, NULL, res, out, sizeof(out), msg, msglen))
			return -1;
		out[strcspn(out, " \t\n")] = '\0';
		snprintf(field, asks[i].len, "%s", out);
	}
	return 0;
}

int drbd_healthy(const char *conf, const char *res, const char *device, char *msg, size_t msglen)
{
	struct drbd_state st;

	if (drbd_state(conf, res, device, DRBD_CS | DRBD_DS, &st, msg, msglen))
		return -1;
	snprintf(msg, msglen, "connection %s, disks %s", st.cs, st.ds);
	return drbd_state_healthy(st.cs, st.ds);
}
