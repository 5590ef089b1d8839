/*
 * config.c - schema table, parser, printer and digest of the VM config.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <netdb.h>
#include <sys/socket.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "config.h"
#include "../lib/util.h"
#include "../lib/wire.h"

#define F(field) offsetof(struct tandem_config, field), sizeof(((struct tandem_config *)0)->field)

static const char *const domain_names[] = { "xen", "memdom", NULL };
static const char *const netbuf_names[] = { "plug", "queue", "none", NULL };
static const char *const compress_names[] = { "none", "lz4", NULL };
static const char *const pattern_names[] = { "sequential", "random", "hotset", NULL };
static const char *const peer_loss_names[] = { "failover", "fence", "witness", "manual", NULL };
static const char *const repl_loss_names[] = { "wait", "release", NULL };
static const char *const superseded_names[] = { "pause", "destroy", NULL };
static const char *const reprotect_names[] = { "auto", "manual", NULL };

#define KB 1024ull
#define MB (1024ull * KB)
#define GB (1024ull * MB)

/*
 * The schema.  Keep docs/configuration.md in step: a unit test compares the
 * two.  `digest` marks the keys both peers must agree on.
 */
static const struct config_key schema[] = {
	{ "name", CT_STRING, F(name), 0, 0, NULL, NULL, true,
	  "Name of the protected VM; tags every log line and the status socket." },
	{ "domain", CT_ENUM, F(domain), 0, 0, "xen", domain_names, true,
	  "Domain driver: xen (the product) or memdom (a synthetic test guest)." },
	{ "xen-domain", CT_STRING, F(xen_domain), 0, 0, "", NULL, false,
	  "Xen domain name to protect, when it differs from name." },
	{ "replication", CT_ADDR, F(replication), 0, 0, "", NULL, true,
	  "host:port where the backup listens and the primary connects (a single-direction file; with hosts, not set)." },
	{ "hosts", CT_HOSTS, F(hosts), 0, 0, "", NULL, true,
	  "Both hosts of the pair, NAME ADDR:PORT, NAME ADDR:PORT: each host's name and where it listens while it is the backup; one file then serves both directions." },
	{ "reprotect", CT_ENUM, F(reprotect), 0, 0, "auto", reprotect_names, false,
	  "After a failover (with hosts): auto, the active host re-protects as soon as a backup answers on the other host; manual, only on `tandem reprotect NAME`." },
	{ "key-file", CT_STRING, F(key_file), 0, 0, "/etc/tandem/tandem.key", NULL, false,
	  "Shared key made by `tandem keygen`; must not be readable by group or others." },
	{ "encrypt", CT_BOOL, F(encrypt), 0, 0, "no", NULL, true,
	  "Encrypt the replication stream (AES-256-GCM); it is always authenticated." },
	{ "compress", CT_ENUM, F(compress), 0, 0, "none", compress_names, false,
	  "Compress checkpoint data on the link: none or lz4 (the primary's setting counts)." },
	{ "run-dir", CT_STRING, F(run_dir), 0, 0, "/run/tandem", NULL, false,
	  "Directory for the daemons' status sockets." },
	{ "state-dir", CT_STRING, F(state_dir), 0, 0, "/var/lib/tandem", NULL, false,
	  "Directory for what must survive a reboot: the protection generation." },
	{ "interval", CT_DURATION, F(interval_ms), 10, 10000, "100ms", NULL, true,
	  "Epoch length: time between checkpoints." },
	{ "timeout", CT_DURATION, F(timeout_ms), 100, 60000, "1s", NULL, true,
	  "Silence from the peer after which it is declared lost." },
	{ "heartbeat-interval", CT_DURATION, F(heartbeat_interval_ms), 10, 10000, "100ms", NULL, true,
	  "Time between heartbeats on the replication link." },
	{ "epochs-in-flight", CT_UINT, F(epochs_in_flight), 1, 64, "4", NULL, false,
	  "Checkpoints captured but not yet acknowledged before the epoch stretches." },
	{ "staging-limit", CT_SIZE, F(staging_limit), 1 * MB, 64 * GB, "1G", NULL, false,
	  "Memory for checkpoints captured but not yet acknowledged." },
	{ "latency-budget", CT_DURATION, F(latency_budget_ms), 0, 600000, "0", NULL, false,
	  "Added output latency to hold: slow the guest when its checkpoints wait for the link longer (0 = off)." },
	{ "verify", CT_SIZE, F(verify), 0, 256 * MB, "0", NULL, false,
	  "Diagnostic: guest memory the checkpoint oracle compares per checkpoint, in rotation (0 = off)." },
	{ "netbuf", CT_ENUM, F(netbuf), 0, 0, "plug", netbuf_names, false,
	  "Output buffering backend: plug (qdisc over IFB), queue (NFQUEUE) or none." },
	{ "vif", CT_STRING, F(vif), 0, 0, "", NULL, false,
	  "Network interface carrying the VM's output (default: derived from the domain)." },
	{ "buffer-limit", CT_SIZE, F(buffer_limit), 64 * KB, 1 * GB, "10M", NULL, false,
	  "Bytes of output held per VM before packets are dropped." },
	{ "allow-unsafe-no-buffering", CT_BOOL, F(allow_unsafe_no_buffering), 0, 0, "no", NULL, false,
	  "Permit netbuf = none; clients may then see state that is lost at failover." },
	{ "memory", CT_SIZE, F(memory), 1 * MB, 64 * GB, "64M", NULL, true,
	  "memdom: size of the synthetic guest's memory." },
	{ "workload-rate", CT_UINT, F(workload_rate), 0, 100000000, "20000", NULL, true,
	  "memdom: page writes per second (0 = as fast as possible)." },
	{ "workload-pattern", CT_ENUM, F(workload_pattern), 0, 0, "random", pattern_names, true,
	  "memdom: which pages are written: sequential, random or hotset." },
	{ "hotset", CT_SIZE, F(hotset), 4 * KB, 64 * GB, "4M", NULL, true,
	  "memdom: size of the hot set for workload-pattern = hotset." },
	{ "memdom-netns", CT_STRING, F(memdom_netns), 0, 0, "", NULL, false,
	  "memdom: network namespace the guest joins (/run/netns/NAME or a path; %r = role)." },
	{ "memdom-disk", CT_STRING, F(memdom_disk), 0, 0, "", NULL, true,
	  "memdom: a file standing in for a replicated disk (both daemons of a pair on one host share it; each checkpoint's marker goes in its last 4 KiB)." },
	{ "memdom-disk-writes", CT_STRING, F(memdom_disk_writes), 0, 0, "", NULL, false,
	  "memdom: a block device the guest writes as a disk, one 4 KiB write every memdom-disk-steps steps (write k to block k)." },
	{ "memdom-disk-steps", CT_UINT, F(memdom_disk_steps), 1, 1000000000, "1000", NULL, true,
	  "memdom: workload steps between two writes to memdom-disk-writes." },
	{ "memdom-observer", CT_ADDR, F(memdom_observer), 0, 0, "", NULL, true,
	  "memdom: numeric IP:port the guest sends its sequence-numbered UDP packets to." },
	{ "memdom-packet-steps", CT_UINT, F(memdom_packet_steps), 1, 1000000000, "1000", NULL, true,
	  "memdom: workload steps between two packets to memdom-observer." },
	{ "heartbeat-paths", CT_HB_PATHS, F(heartbeat_paths), 0, 0, "", NULL, true,
	  "Extra heartbeat paths PRIMARY:PORT-BACKUP:PORT, comma-separated (empty: replication link only)." },
	{ "on-peer-loss", CT_ENUM, F(on_peer_loss), 0, 0, "failover", peer_loss_names, true,
	  "When every path to the peer is lost: failover, fence, witness or manual." },
	{ "fence-command", CT_STRING, F(fence_command), 0, 0, "", NULL, false,
	  "Shell command run before activation when on-peer-loss = fence; exit status 0 = fenced." },
	{ "fence-timeout", CT_DURATION, F(fence_timeout_ms), 100, 600000, "10s", NULL, false,
	  "Time the fence command may take before it is killed and counted as failed." },
	{ "witness", CT_ADDR, F(witness), 0, 0, "", NULL, true,
	  "host:port of `tandem witness`; required when on-peer-loss = witness." },
	{ "replication-loss-grace", CT_DURATION, F(replication_loss_grace_ms), 1000, 86400000, "30s", NULL, true,
	  "How long a primary whose replication link is down, peer alive elsewhere, waits before on-replication-loss." },
	{ "on-replication-loss", CT_ENUM, F(on_replication_loss), 0, 0, "wait", repl_loss_names, true,
	  "After the grace: wait (output stays held) or release (stop protection, release output)." },
	{ "disks", CT_DISKS, F(disks), 0, 0, "", NULL, false,
	  "The guest's DRBD-replicated disks RESOURCE:DEVICE, comma-separated (empty: no protected disk)." },
	{ "disk-overlay-limit", CT_SIZE, F(disk_overlay_limit), 1 * MB, 64 * GB, "256M", NULL, false,
	  "Backup: memory each disk's overlay may use for writes not yet written to the disk." },
	{ "drbd-conf", CT_STRING, F(drbd_conf), 0, 0, "/etc/drbd.conf", NULL, false,
	  "DRBD configuration that defines the resources named in disks." },
	{ "on-superseded", CT_ENUM, F(on_superseded), 0, 0, "pause", superseded_names, false,
	  "When the backup activated and this primary learns it: pause or destroy its guest." },
	{ "notify", CT_STRING, F(notify), 0, 0, "", NULL, false,
	  "Command run on every state change with the arguments VM ROLE OLD NEW (this host's own)." },
	{ "notify-timeout", CT_DURATION, F(notify_timeout_ms), 100, 600000, "10s", NULL, false,
	  "Time the notify command may take before it is killed." },
};

const struct config_key *config_schema(size_t *n)
{
	*n = ARRAY_SIZE(schema);
	return schema;
}

/* ---- error accumulation ------------------------------------------------ */

struct errbuf {
	char *buf;
	size_t len, used;
	int count;
};

static void __attribute__((format(printf, 2, 3)))
err_add(struct errbuf *e, const char *fmt, ...)
{
	va_list ap;
	int r;

	e->count++;
	if (!e->buf || e->used + 1 >= e->len)
		return;
	va_start(ap, fmt);
	r = vsnprintf(e->buf + e->used, e->len - e->used, fmt, ap);
	va_end(ap);
	if (r > 0)
		e->used = MIN(e->len - 1, e->used + (size_t)r);
	if (e->used + 1 < e->len) {
		e->buf[e->used++] = '\n';
		e->buf[e->used] = '\0';
	}
}

/* ---- values ------------------------------------------------------------ */

static const char *type_expect(const struct config_key *k)
{
	switch (k->type) {
	case CT_STRING: return "a string";
	case CT_BOOL: return "yes or no";
	case CT_DURATION: return "a duration such as 25ms or 1s";
	case CT_SIZE: return "a size such as 4096, 256K, 10M or 1G";
	case CT_UINT: return "a whole number";
	case CT_ENUM: return "one of the listed words";
	case CT_ADDR: return "an address host:port (IPv6 as [addr]:port)";
	case CT_HB_PATHS: return "paths PRIMARY:PORT-BACKUP:PORT separated by commas";
	case CT_HOSTS: return "two hosts NAME ADDR:PORT separated by a comma";
	case CT_DISKS: return "disks RESOURCE:/dev/DEVICE separated by commas";
	}
	return "?";
}

static void fmt_bound(const struct config_key *k, uint64_t v, char *buf, size_t len)
{
	if (k->type == CT_DURATION) {
		if (v >= 1000 && v % 1000 == 0)
			snprintf(buf, len, "%llus", (unsigned long long)(v / 1000));
		else
			snprintf(buf, len, "%llums", (unsigned long long)v);
	} else if (k->type == CT_SIZE) {
		fmt_size(v, buf, len);
	} else {
		snprintf(buf, len, "%llu", (unsigned long long)v);
	}
}

static int parse_addr(const char *s, struct config_addr *a)
{
	const char *colon;
	size_t hostlen;
	uint64_t port;

	if (*s == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':')
			return -EINVAL;
		hostlen = (size_t)(close - s - 1);
		s++;
		colon = close + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon || strchr(s, ':') != colon)
			return -EINVAL;
		hostlen = (size_t)(colon - s);
	}
	if (hostlen == 0 || hostlen >= sizeof(a->host))
		return -EINVAL;
	if (parse_u64(colon + 1, &port) || port == 0 || port > 65535)
		return -EINVAL;
	memcpy(a->host, s, hostlen);
	a->host[hostlen] = '\0';
	a->port = (uint16_t)port;
	return 0;
}

/* The next item of a comma-separated list at *s, blanks trimmed, into
 * item (cap bytes); *s moves past it.  Its length, or -1 when it does not
 * fit (item then holds nothing). */
static long next_item(const char **s, char *item, size_t cap)
{
	const char *p = *s, *end = strchr(p, ',');
	size_t len;

	if (!end)
		end = p + strlen(p);
	*s = *end ? end + 1 : end;
	while (p < end && isspace((unsigned char)*p))
		p++;
	len = (size_t)(end - p);
	while (len && isspace((unsigned char)p[len - 1]))
		len--;
	item[0] = '\0';
	if (len >= cap)
		return -1;
	memcpy(item, p, len);
	item[len] = '\0';
	return (long)len;
}

/* disks: RESOURCE:DEVICE, comma-separated: a DRBD resource name and the
 * absolute path of the block device the guest's VBD uses. */
static int parse_disks(const char *s, struct config_disks *out, char *msg, size_t msglen)
{
	struct config_disks ds;

	memset(&ds, 0, sizeof(ds));
	while (*s) {
		const char *colon;
		char item[CONFIG_NAME_MAX + CONFIG_PATH_MAX + 2];
		long len = next_item(&s, item, sizeof(item));
		size_t rlen;

		if (len < 0) {
			snprintf(msg, msglen, "disk entry too long (at most %zu characters)",
				 sizeof(item) - 1);
			return -EINVAL;
		}
		if (!len)
			continue;
		if (ds.n == CONFIG_DISKS_MAX) {
			snprintf(msg, msglen, "at most %d disks", CONFIG_DISKS_MAX);
			return -EINVAL;
		}
		colon = strchr(item, ':');
		rlen = colon ? (size_t)(colon - item) : 0;
		if (!colon || !rlen || rlen >= CONFIG_NAME_MAX || colon[1] != '/' ||
		    strlen(colon + 1) >= CONFIG_PATH_MAX) {
			snprintf(msg, msglen, "expected RESOURCE:/dev/DEVICE (a DRBD resource and the "
				 "guest-facing block device's absolute path), got '%.80s'", item);
			return -EINVAL;
		}
		for (size_t i = 0; i < rlen; i++) {
			if (!isalnum((unsigned char)item[i]) && !strchr("-_.", item[i])) {
				snprintf(msg, msglen, "DRBD resource name '%.*s': expected letters, "
					 "digits, '-', '_' or '.'", (int)rlen, item);
				return -EINVAL;
			}
		}
		memcpy(ds.d[ds.n].resource, item, rlen);
		snprintf(ds.d[ds.n].device, sizeof(ds.d[ds.n].device), "%s", colon + 1);
		for (unsigned j = 0; j < ds.n; j++) {
			if (!strcmp(ds.d[j].resource, ds.d[ds.n].resource) ||
			    !strcmp(ds.d[j].device, ds.d[ds.n].device)) {
				snprintf(msg, msglen, "disk '%.80s' is named twice", item);
				return -EINVAL;
			}
		}
		ds.n++;
	}
	*out = ds;
	return 0;
}

/*
 * heartbeat-paths: "A:P-B:P, A:P-B:P".  The '-' separating the two ends is
 * the first one after the primary's port, so host names may contain '-'.
 */
static int parse_hb_paths(const char *s, struct config_hb_paths *out, char *msg, size_t msglen)
{
	struct config_hb_paths ps;
	char item[2 * CONFIG_PATH_MAX + 16];

	memset(&ps, 0, sizeof(ps));
	while (*s) {
		const char *p, *dash;
		long len = next_item(&s, item, sizeof(item));

		if (len <= 0) {
			snprintf(msg, msglen, "expected %s, got an empty or overlong item",
				 "PRIMARY:PORT-BACKUP:PORT");
			return -EINVAL;
		}
		if (ps.n == CONFIG_HB_PATHS_MAX) {
			snprintf(msg, msglen, "at most %d paths", CONFIG_HB_PATHS_MAX);
			return -EINVAL;
		}
		/* Find the end of the first address's port. */
		p = item;
		if (*p == '[') {
			p = strchr(p, ']');
			p = p ? p + 1 : item + (size_t)len;
		} else {
			while (*p && *p != ':')
				p++;
		}
		if (*p == ':')
			p++;
		while (isdigit((unsigned char)*p))
			p++;
		dash = p;
		if (*dash != '-') {
			snprintf(msg, msglen, "expected PRIMARY:PORT-BACKUP:PORT (IPv6 in brackets), got '%.120s'",
				 item);
			return -EINVAL;
		}
		item[dash - item] = '\0';
		if (parse_addr(item, &ps.p[ps.n].primary) || parse_addr(dash + 1, &ps.p[ps.n].backup)) {
			item[dash - item] = '-';
			snprintf(msg, msglen, "expected PRIMARY:PORT-BACKUP:PORT (IPv6 in brackets), got '%.120s'",
				 item);
			return -EINVAL;
		}
		ps.n++;
	}
	*out = ps;
	return 0;
}

static bool name_ok(const char *s);

/* hosts: "NAME ADDR:PORT, NAME ADDR:PORT", exactly two, names differ. */
static int parse_hosts(const char *s, struct config_hosts *out, char *msg, size_t msglen)
{
	struct config_hosts hs;
	char item[CONFIG_NAME_MAX + CONFIG_PATH_MAX + 16];

	memset(&hs, 0, sizeof(hs));
	if (!*s) {
		*out = hs;
		return 0;
	}
	while (*s) {
		char *sp;
		long len = next_item(&s, item, sizeof(item));

		if (len <= 0 || hs.n == CONFIG_HOSTS) {
			snprintf(msg, msglen, "expected exactly two hosts NAME ADDR:PORT, NAME ADDR:PORT "
				 "(each host's name and where it listens as the backup)");
			return -EINVAL;
		}
		sp = item;
		while (*sp && !isspace((unsigned char)*sp))
			sp++;
		if (!*sp || (size_t)(sp - item) > CONFIG_NAME_MAX) {
			snprintf(msg, msglen, "expected NAME ADDR:PORT (a host name, a blank, its "
				 "replication address), got '%.120s'", item);
			return -EINVAL;
		}
		*sp++ = '\0';
		while (isspace((unsigned char)*sp))
			sp++;
		if (!name_ok(item)) {
			snprintf(msg, msglen, "host name '%.64s': expected letters, digits, '-', '_' or '.'",
				 item);
			return -EINVAL;
		}
		if (parse_addr(sp, &hs.h[hs.n].repl)) {
			snprintf(msg, msglen, "host '%.64s': expected ADDR:PORT (IPv6 in brackets), got "
				 "'%.120s'", item, sp);
			return -EINVAL;
		}
		memcpy(hs.h[hs.n].name, item, strlen(item) + 1);	/* at most 64: checked above */
		hs.n++;
	}
	if (hs.n != CONFIG_HOSTS) {
		snprintf(msg, msglen, "expected exactly two hosts NAME ADDR:PORT, NAME ADDR:PORT, got one");
		return -EINVAL;
	}
	if (!strcmp(hs.h[0].name, hs.h[1].name)) {
		snprintf(msg, msglen, "the two hosts have the same name '%s'", hs.h[0].name);
		return -EINVAL;
	}
	*out = hs;
	return 0;
}

static void fmt_addr(const struct config_addr *a, char *buf, size_t len)
{
	if (!a->host[0])
		snprintf(buf, len, "%s", "");
	else if (strchr(a->host, ':'))
		snprintf(buf, len, "[%s]:%u", a->host, a->port);
	else
		snprintf(buf, len, "%s:%u", a->host, a->port);
}

static bool name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("-_.", *s))
			return false;
	return true;
}

/*
 * Set one key from its text.  Returns 0, or -EINVAL with a message (without
 * the file/line prefix) in msg.
 */
static int set_value(struct tandem_config *cfg, const struct config_key *k,
		     const char *v, char *msg, size_t msglen)
{
	char *field = (char *)cfg + k->offset;
	char lo[32], hi[32];
	uint64_t u;
	int r;

	switch (k->type) {
	case CT_STRING:
		if (strlen(v) >= k->size) {
			snprintf(msg, msglen, "expected at most %zu characters, got %zu",
				 k->size - 1, strlen(v));
			return -EINVAL;
		}
		if (strcmp(k->name, "name") == 0 && !name_ok(v)) {
			snprintf(msg, msglen, "expected letters, digits, '-', '_' or '.', got '%s'", v);
			return -EINVAL;
		}
		strcpy(field, v);
		return 0;
	case CT_BOOL:
		if (!strcmp(v, "yes") || !strcmp(v, "true") || !strcmp(v, "1"))
			*(bool *)field = true;
		else if (!strcmp(v, "no") || !strcmp(v, "false") || !strcmp(v, "0"))
			*(bool *)field = false;
		else {
			snprintf(msg, msglen, "expected yes or no, got '%s'", v);
			return -EINVAL;
		}
		return 0;
	case CT_ENUM:
		for (int i = 0; k->enums[i]; i++) {
			if (strcmp(v, k->enums[i]) == 0) {
				*(int *)field = i;
				return 0;
			}
		}
		{
			char list[128] = "";
			for (int i = 0; k->enums[i]; i++) {
				strncat(list, i ? ", " : "", sizeof(list) - strlen(list) - 1);
				strncat(list, k->enums[i], sizeof(list) - strlen(list) - 1);
			}
			snprintf(msg, msglen, "expected one of %s, got '%s'", list, v);
		}
		return -EINVAL;
	case CT_HB_PATHS:
		return parse_hb_paths(v, (struct config_hb_paths *)field, msg, msglen);
	case CT_DISKS:
		return parse_disks(v, (struct config_disks *)field, msg, msglen);
	case CT_HOSTS:
		return parse_hosts(v, (struct config_hosts *)field, msg, msglen);
	case CT_ADDR:
		if (!*v && k->def && !*k->def) {	/* optional address, unset */
			memset(field, 0, sizeof(struct config_addr));
			return 0;
		}
		if (parse_addr(v, (struct config_addr *)field)) {
			snprintf(msg, msglen, "expected %s, got '%s'", type_expect(k), v);
			return -EINVAL;
		}
		return 0;
	case CT_DURATION:
		r = parse_duration_ms(v, &u);
		break;
	case CT_SIZE:
		r = parse_size(v, &u);
		break;
	case CT_UINT:
		r = parse_u64(v, &u);
		break;
	default:
		r = -EINVAL;
	}
	if (r) {
		snprintf(msg, msglen, "expected %s, got '%s'", type_expect(k), v);
		return -EINVAL;
	}
	if (u < k->min || u > k->max) {
		fmt_bound(k, k->min, lo, sizeof(lo));
		fmt_bound(k, k->max, hi, sizeof(hi));
		snprintf(msg, msglen, "%s is out of bounds (%s to %s)", v, lo, hi);
		return -EINVAL;
	}
	*(uint64_t *)field = u;
	return 0;
}

static const struct config_key *find_key(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(schema); i++)
		if (strcmp(schema[i].name, name) == 0)
			return &schema[i];
	return NULL;
}

static const char *closest_key(const char *name)
{
	const char *best = NULL;
	unsigned bestd = 99;

	for (size_t i = 0; i < ARRAY_SIZE(schema); i++) {
		unsigned d = edit_distance(name, schema[i].name);
		if (d < bestd) {
			bestd = d;
			best = schema[i].name;
		}
	}
	return bestd <= MAX(2u, (unsigned)strlen(name) / 3) ? best : NULL;
}

static char *trim(char *s)
{
	char *end;

	while (isspace((unsigned char)*s))
		s++;
	end = s + strlen(s);
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* Strip a '#' comment that is not inside double quotes. */
static void strip_comment(char *s)
{
	bool quoted = false;

	for (; *s; s++) {
		if (*s == '"')
			quoted = !quoted;
		else if (*s == '#' && !quoted) {
			*s = '\0';
			return;
		}
	}
}

/*
 * The lines of one file into cfg.  seen[]: the keys this file set (twice
 * in one file is an error); over[]: keys an earlier file (an include) set,
 * which this one may override.  incl: where `include = FILE` may load a
 * file of defaults (NULL: not here).
 */
struct include_ctx {
	int (*load)(const char *path, char **text, size_t *len, char *msg, size_t msglen);
	bool done;
};

static void parse_text(const char *file, const char *text, size_t len, struct tandem_config *cfg,
		       bool *seen, struct errbuf *ep, struct include_ctx *incl, bool *inc_seen)
{
	struct errbuf e_ = *ep, *e = &e_;
	char msg[256], line[1024];
	size_t pos = 0;
	int lineno = 0;
	bool any_key = false;

	while (pos < len) {
		size_t n = 0;
		char *s, *eq, *key, *val;
		const struct config_key *k;

		lineno++;
		while (pos < len && text[pos] != '\n') {
			if (n + 1 < sizeof(line))
				line[n++] = text[pos] ? text[pos] : ' ';
			pos++;
		}
		pos++;
		line[n] = '\0';
		if (n + 1 >= sizeof(line)) {
			err_add(e, "%s:%d: line is longer than %zu characters", file, lineno, sizeof(line) - 2);
			continue;
		}
		strip_comment(line);
		s = trim(line);
		if (!*s)
			continue;
		eq = strchr(s, '=');
		if (!eq) {
			err_add(e, "%s:%d: expected 'key = value', got '%s'", file, lineno, s);
			continue;
		}
		*eq = '\0';
		key = trim(s);
		val = trim(eq + 1);
		if (!*key) {
			err_add(e, "%s:%d: expected a key before '='", file, lineno);
			continue;
		}
		if (!strcmp(key, "include")) {
			char *itext = NULL;
			size_t ilen = 0;

			if (*val == '"' && strlen(val) >= 2 && val[strlen(val) - 1] == '"') {
				val[strlen(val) - 1] = '\0';
				val++;
			}
			if (!incl)
				err_add(e, "%s:%d: include: only a VM's own file may include a file of defaults",
					file, lineno);
			else if (incl->done || any_key)
				err_add(e, "%s:%d: include: at most one, before every key", file, lineno);
			else {
				/* a relative path is the including file's neighbour */
				char ipath[CONFIG_PATH_MAX * 2];
				const char *slash = strrchr(file, '/');

				if (*val != '/' && slash)
					snprintf(ipath, sizeof(ipath), "%.*s/%s", (int)(slash - file), file, val);
				else
					snprintf(ipath, sizeof(ipath), "%s", val);
				if (incl->load(ipath, &itext, &ilen, msg, sizeof(msg))) {
					err_add(e, "%s:%d: include: %s", file, lineno, msg);
				} else {
					incl->done = true;
					parse_text(ipath, itext, ilen, cfg, inc_seen, e, NULL, NULL);
				}
			}
			free(itext);
			continue;
		}
		any_key = true;
		k = find_key(key);
		if (!k) {
			const char *c = closest_key(key);
			if (c)
				err_add(e, "%s:%d: unknown key '%s' (did you mean '%s'?)", file, lineno, key, c);
			else
				err_add(e, "%s:%d: unknown key '%s' (see docs/configuration.md)", file, lineno, key);
			continue;
		}
		if (seen[k - schema]) {
			err_add(e, "%s:%d: key '%s': set twice", file, lineno, key);
			continue;
		}
		seen[k - schema] = true;
		if (*val == '"') {
			size_t vl = strlen(val);
			if (vl < 2 || val[vl - 1] != '"') {
				err_add(e, "%s:%d: key '%s': unterminated quoted string", file, lineno, key);
				continue;
			}
			val[vl - 1] = '\0';
			val++;
		}
		if (set_value(cfg, k, val, msg, sizeof(msg)))
			err_add(e, "%s:%d: key '%s': %s", file, lineno, key, msg);
	}

	*ep = *e;
}

static int parse_layers(const char *file, const char *text, size_t len,
			struct tandem_config *cfg, char *err, size_t errlen,
			struct include_ctx *incl)
{
	struct errbuf e = { err, errlen, 0, 0 };
	bool seen[ARRAY_SIZE(schema)] = { false }, inc_seen[ARRAY_SIZE(schema)] = { false };
	char msg[256];

	if (err && errlen)
		err[0] = '\0';
	memset(cfg, 0, sizeof(*cfg));
	snprintf(cfg->source, sizeof(cfg->source), "%s", file);
	for (size_t i = 0; i < ARRAY_SIZE(schema); i++) {
		if (schema[i].def && set_value(cfg, &schema[i], schema[i].def, msg, sizeof(msg)))
			err_add(&e, "internal: default of '%s': %s", schema[i].name, msg);
	}

	parse_text(file, text, len, cfg, seen, &e, incl, inc_seen);

	for (size_t i = 0; i < ARRAY_SIZE(schema); i++) {
		if (!schema[i].def && !seen[i] && !inc_seen[i])
			err_add(&e, "%s: key '%s' is required: %s", file, schema[i].name, schema[i].help);
	}
	cfg->this_host = -1;
	cfg->hb_by_host = cfg->heartbeat_paths;
	if (!cfg->hosts.n && !cfg->replication.host[0])
		err_add(&e, "%s: key 'replication' is required: host:port where the backup listens and "
			"the primary connects (or, for one file that serves both directions, hosts = "
			"NAME ADDR:PORT, NAME ADDR:PORT)", file);
	if (cfg->hosts.n && cfg->replication.host[0])
		err_add(&e, "%s: key 'replication': not with hosts (each host's replication address "
			"is in hosts, the address it listens on while it is the backup): remove it", file);
	if (!cfg->hosts.n && strstr(cfg->run_dir, "%h"))
		err_add(&e, "%s: key 'run-dir': %%h (this host's name) needs hosts", file);
	if (!cfg->hosts.n && strstr(cfg->state_dir, "%h"))
		err_add(&e, "%s: key 'state-dir': %%h (this host's name) needs hosts", file);
	if (!e.count && cfg->netbuf == NETBUF_NONE && !cfg->allow_unsafe_no_buffering)
		err_add(&e, "%s: key 'netbuf': none needs allow-unsafe-no-buffering = yes "
			"(clients could see output from state lost at failover)", file);
	if (!e.count && cfg->heartbeat_interval_ms * 2 > cfg->timeout_ms)
		err_add(&e, "%s: key 'heartbeat-interval': %llums must be at most half of timeout (%llums)",
			file, (unsigned long long)cfg->heartbeat_interval_ms,
			(unsigned long long)cfg->timeout_ms);
	if (!e.count && cfg->latency_budget_ms && cfg->latency_budget_ms < 2 * cfg->interval_ms)
		err_add(&e, "%s: key 'latency-budget': %llums must be at least two intervals (%llums): "
			"output waits one interval in its epoch and then for the checkpoint's ack",
			file, (unsigned long long)cfg->latency_budget_ms,
			(unsigned long long)(2 * cfg->interval_ms));
	if (!e.count && cfg->on_peer_loss == PEER_LOSS_FENCE && !cfg->fence_command[0])
		err_add(&e, "%s: key 'fence-command' is required when on-peer-loss = fence "
			"(the command that fences the peer's host; exit status 0 = fenced)", file);
	if (!e.count && cfg->on_peer_loss == PEER_LOSS_WITNESS && !cfg->witness.host[0])
		err_add(&e, "%s: key 'witness' is required when on-peer-loss = witness "
			"(host:port of a `tandem witness` responder on a third host)", file);
	if (!e.count && cfg->memdom_observer.host[0]) {
		unsigned char a[16];

		if (inet_pton(AF_INET, cfg->memdom_observer.host, a) != 1 &&
		    inet_pton(AF_INET6, cfg->memdom_observer.host, a) != 1)
			err_add(&e, "%s: key 'memdom-observer': expected a numeric IPv4 or IPv6 "
				"address and port, got host '%s'", file, cfg->memdom_observer.host);
	}
	return e.count ? -EINVAL : 0;
}

int config_parse(const char *file, const char *text, size_t len,
		 struct tandem_config *cfg, char *err, size_t errlen)
{
	return parse_layers(file, text, len, cfg, err, errlen, NULL);
}

static int read_config_file(const char *path, char **text, size_t *len, char *msg, size_t msglen)
{
	struct stat st;
	int fd, rc;

	*text = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		snprintf(msg, msglen, "%s: cannot open: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > 1024 * 1024) {
		snprintf(msg, msglen, "%s: not a regular file of at most 1 MiB", path);
		close(fd);
		return -EINVAL;
	}
	*text = malloc((size_t)st.st_size + 1);
	if (!*text) {
		close(fd);
		return -ENOMEM;
	}
	rc = read_full(fd, *text, (size_t)st.st_size);
	close(fd);
	if (rc) {
		snprintf(msg, msglen, "%s: read failed: %s", path, strerror(-rc));
		free(*text);
		*text = NULL;
		return rc;
	}
	*len = (size_t)st.st_size;
	return 0;
}

int config_load(const char *path, struct tandem_config *cfg, char *err, size_t errlen)
{
	struct include_ctx incl = { read_config_file, false };
	char *text = NULL, msg[512];
	size_t len = 0;
	int rc = read_config_file(path, &text, &len, msg, sizeof(msg));

	if (rc) {
		snprintf(err, errlen, "%s\n", msg);
		return rc;
	}
	rc = parse_layers(path, text, len, cfg, err, errlen, &incl);
	free(text);
	return rc;
}

void config_format_value(const struct tandem_config *cfg, const struct config_key *k,
			 char *buf, size_t len)
{
	const char *field = (const char *)cfg + k->offset;
	const struct config_addr *a;

	switch (k->type) {
	case CT_STRING:
		snprintf(buf, len, "%s", field);
		break;
	case CT_BOOL:
		snprintf(buf, len, "%s", *(const bool *)field ? "yes" : "no");
		break;
	case CT_ENUM:
		snprintf(buf, len, "%s", k->enums[*(const int *)field]);
		break;
	case CT_ADDR:
		a = (const struct config_addr *)field;
		fmt_addr(a, buf, len);
		break;
	case CT_DISKS: {
		const struct config_disks *ds = (const struct config_disks *)field;
		size_t used = 0;

		buf[0] = '\0';
		for (unsigned i = 0; i < ds->n && used < len; i++) {
			int r = snprintf(buf + used, len - used, "%s%s:%s", i ? ", " : "",
					 ds->d[i].resource, ds->d[i].device);
			if (r < 0)
				break;
			used += (size_t)r;
		}
		break;
	}
	case CT_HB_PATHS: {
		const struct config_hb_paths *ps = (const struct config_hb_paths *)field;
		char pa[CONFIG_PATH_MAX + 16], pb[CONFIG_PATH_MAX + 16];
		size_t used = 0;

		buf[0] = '\0';
		for (unsigned i = 0; i < ps->n && used < len; i++) {
			int r;
			fmt_addr(&ps->p[i].primary, pa, sizeof(pa));
			fmt_addr(&ps->p[i].backup, pb, sizeof(pb));
			r = snprintf(buf + used, len - used, "%s%s-%s", i ? ", " : "", pa, pb);
			if (r < 0)
				break;
			used += (size_t)r;
		}
		break;
	}
	case CT_HOSTS: {
		const struct config_hosts *hs = (const struct config_hosts *)field;
		char pa[CONFIG_PATH_MAX + 16];
		size_t used = 0;

		buf[0] = '\0';
		for (unsigned i = 0; i < hs->n && used < len; i++) {
			int r;
			fmt_addr(&hs->h[i].repl, pa, sizeof(pa));
			r = snprintf(buf + used, len - used, "%s%s %s", i ? ", " : "", hs->h[i].name, pa);
			if (r < 0)
				break;
			used += (size_t)r;
		}
		break;
	}
	case CT_DURATION:
	case CT_SIZE:
	case CT_UINT:
		fmt_bound(k, *(const uint64_t *)field, buf, len);
		break;
	}
}

int config_explain(const char *name, FILE *out, char *err, size_t errlen)
{
	const struct config_key *k = find_key(name);
	char lo[32], hi[32];

	if (!k) {
		const char *c = closest_key(name);

		snprintf(err, errlen, "unknown key '%s'%s%s%s", name, c ? " (did you mean '" : "",
			 c ? c : "", c ? "'?)" : "");
		return -ENOENT;
	}
	fprintf(out, "%s: ", k->name);
	if (k->enums) {
		fprintf(out, "one of");
		for (const char *const *e = k->enums; *e; e++)
			fprintf(out, "%s %s", e == k->enums ? "" : ",", *e);
	} else {
		fprintf(out, "%s", type_expect(k));
	}
	if (!k->def)
		fprintf(out, "; required");
	else
		fprintf(out, "; default %s", k->def[0] ? k->def : "\"\" (empty)");
	if ((k->type == CT_DURATION || k->type == CT_SIZE || k->type == CT_UINT) && k->max) {
		fmt_bound(k, k->min, lo, sizeof(lo));
		fmt_bound(k, k->max, hi, sizeof(hi));
		fprintf(out, "; %s to %s", lo, hi);
	}
	fprintf(out, "\n%s\n", k->digest ? "Both hosts must give it the same value (it is in the "
		"configuration digest the handshake compares)." : "Each host's own (not in the "
		"configuration digest).");
	fprintf(out, "%s\n", k->help);
	return 0;
}

/* Keys whose help starts "memdom:" drive the synthetic guest only: for any
 * other domain they are neither printed nor part of the digest. */
bool config_key_applies(const struct tandem_config *cfg, const struct config_key *k)
{
	return cfg->domain == DOMAIN_MEMDOM || strncmp(k->help, "memdom:", 7) != 0;
}

static const char *const live_keys[] = { "interval", "epochs-in-flight", "latency-budget" };

int config_set_live(struct tandem_config *cfg, const char *key, const char *value, char *err,
		    size_t errlen)
{
	const struct config_key *k = NULL;
	struct tandem_config tmp = *cfg;
	bool live = false;
	char msg[256];

	for (size_t i = 0; i < ARRAY_SIZE(schema); i++)
		if (!strcmp(schema[i].name, key))
			k = &schema[i];
	for (size_t i = 0; i < ARRAY_SIZE(live_keys); i++)
		live |= !strcmp(live_keys[i], key);
	if (!k) {
		snprintf(err, errlen, "unknown key '%s' (see docs/configuration.md)", key);
		return -ENOENT;
	}
	if (!live) {
		snprintf(err, errlen, "'%s' cannot change while protecting (these can: %s); change "
			 "the file on both hosts and restart", key, CONFIG_LIVE_KEYS);
		return -EPERM;
	}
	if (set_value(&tmp, k, value, msg, sizeof(msg))) {
		snprintf(err, errlen, "key '%s': %s", key, msg);
		return -EINVAL;
	}
	if (tmp.latency_budget_ms && tmp.latency_budget_ms < 2 * tmp.interval_ms) {
		snprintf(err, errlen, "latency-budget (%llums) must stay at least two intervals "
			 "(%llums)", (unsigned long long)tmp.latency_budget_ms,
			 (unsigned long long)(2 * tmp.interval_ms));
		return -EINVAL;
	}
	*cfg = tmp;
	return 0;
}

void config_live_diff(const struct tandem_config *cfg, const struct tandem_config *file,
		      char *out, size_t len)
{
	size_t used = 0;

	out[0] = '\0';
	for (size_t i = 0; i < ARRAY_SIZE(schema); i++) {
		char a[128], b[128];
		bool live = false;

		for (size_t j = 0; j < ARRAY_SIZE(live_keys); j++)
			live |= !strcmp(live_keys[j], schema[i].name);
		if (!live)
			continue;
		config_format_value(cfg, &schema[i], a, sizeof(a));
		config_format_value(file, &schema[i], b, sizeof(b));
		if (strcmp(a, b) && used < len)
			used += (size_t)snprintf(out + used, len - used, "%s%s=%s (file: %s)",
						 used ? ", " : "", schema[i].name, a, b);
	}
}

/* The file's view of a resolved configuration: what both hosts wrote
 * (replication unset, heartbeat-paths in hosts order), so that the digest
 * and check-config do not depend on which host or role resolved it. */
static const struct tandem_config *as_written(const struct tandem_config *cfg,
					      struct tandem_config *tmp)
{
	if (!cfg->hosts.n || cfg->this_host < 0)
		return cfg;
	*tmp = *cfg;
	memset(&tmp->replication, 0, sizeof(tmp->replication));
	tmp->heartbeat_paths = tmp->hb_by_host;
	return tmp;
}

void config_print(const struct tandem_config *cfg_in, FILE *out)
{
	static struct tandem_config tmp;	/* large: not on the stack */
	const struct tandem_config *cfg = as_written(cfg_in, &tmp);
	char val[CONFIG_VALUE_MAX];

	fprintf(out, "# effective configuration of %s (defaults included)\n", cfg->source);
	for (size_t i = 0; i < ARRAY_SIZE(schema); i++) {
		if (!config_key_applies(cfg, &schema[i]))
			continue;
		if (cfg->hosts.n && !strcmp(schema[i].name, "replication"))
			continue;	/* hosts says it, per host */
		config_format_value(cfg, &schema[i], val, sizeof(val));
		if (schema[i].type == CT_STRING)
			fprintf(out, "%-26s = \"%s\"\n", schema[i].name, val);
		else
			fprintf(out, "%-26s = %s\n", schema[i].name, val);
	}
}

void config_digest(const struct tandem_config *cfg_in, uint8_t out[CONFIG_DIGEST_LEN])
{
	struct tandem_config *tmp = malloc(sizeof(*tmp));
	const struct tandem_config *cfg = tmp ? as_written(cfg_in, tmp) : cfg_in;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	char val[CONFIG_VALUE_MAX];
	unsigned int olen = 0;

	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (size_t i = 0; i < ARRAY_SIZE(schema); i++) {
		if (!schema[i].digest || !config_key_applies(cfg, &schema[i]))
			continue;
		config_format_value(cfg, &schema[i], val, sizeof(val));
		EVP_DigestUpdate(ctx, schema[i].name, strlen(schema[i].name) + 1);
		EVP_DigestUpdate(ctx, val, strlen(val) + 1);
	}
	EVP_DigestFinal_ex(ctx, out, &olen);
	EVP_MD_CTX_free(ctx);
	free(tmp);
}

const char *config_warning(const struct tandem_config *cfg)
{
	if (cfg->on_peer_loss == PEER_LOSS_FAILOVER && cfg->heartbeat_paths.n == 0)
		return "on-peer-loss = failover with the replication link as the only path "
		       "(no heartbeat-paths): a broken link or a stalled primary looks like a dead "
		       "primary, so the backup activates while the primary may still run; the "
		       "primary then steps down when it hears of it (its guest paused), but clients "
		       "see a failover for a network blip.  Add a heartbeat path over another "
		       "network, or use on-peer-loss = fence, witness or manual";
	return NULL;
}

void config_status_path(const struct tandem_config *cfg, const char *role,
			char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.%s.sock", cfg->run_dir, cfg->name, role);
}

/* ---- both directions in one file -------------------------------------------- */

/* Whether host (a name or a numeric address) is an address of this
 * machine: a UDP socket can bind it. */
static bool addr_is_local(const struct config_addr *a)
{
	struct addrinfo hints = { .ai_socktype = SOCK_DGRAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	bool local = false;

	if (getaddrinfo(a->host, "0", &hints, &res) != 0)
		return false;
	for (struct addrinfo *ai = res; ai && !local; ai = ai->ai_next) {
		int fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			continue;
		local = bind(fd, ai->ai_addr, ai->ai_addrlen) == 0;
		close(fd);
	}
	freeaddrinfo(res);
	return local;
}

int config_set_role(struct tandem_config *cfg, int role)
{
	int me = cfg->this_host, primary_host;

	if (!cfg->hosts.n || me < 0)
		return -EINVAL;
	primary_host = role == ROLE_PRIMARY ? me : 1 - me;
	cfg->replication = cfg->hosts.h[1 - primary_host].repl;
	cfg->heartbeat_paths = cfg->hb_by_host;
	if (primary_host == 1) {
		for (unsigned i = 0; i < cfg->heartbeat_paths.n; i++) {
			struct config_addr t = cfg->heartbeat_paths.p[i].primary;

			cfg->heartbeat_paths.p[i].primary = cfg->heartbeat_paths.p[i].backup;
			cfg->heartbeat_paths.p[i].backup = t;
		}
	}
	cfg->resolved_role = role;
	return 0;
}

const char *config_peer_host(const struct tandem_config *cfg)
{
	return cfg->hosts.n && cfg->this_host >= 0 ? cfg->hosts.h[1 - cfg->this_host].name : "";
}

/* %h in s becomes name, %% a %; into a buffer of cap bytes.  -EINVAL when
 * it does not fit. */
static int expand_host(char *s, size_t cap, const char *name)
{
	char out[CONFIG_PATH_MAX];
	size_t n = 0;

	for (const char *p = s; *p; p++) {
		const char *add = NULL;
		char one[2] = { *p, 0 };

		if (p[0] == '%' && p[1] == 'h') {
			add = name;
			p++;
		} else if (p[0] == '%' && p[1] == '%') {
			add = "%";
			p++;
		} else {
			add = one;
		}
		if (n + strlen(add) >= sizeof(out) || n + strlen(add) >= cap)
			return -EINVAL;
		memcpy(out + n, add, strlen(add));
		n += strlen(add);
	}
	out[n] = '\0';
	memcpy(s, out, n + 1);
	return 0;
}

int config_resolve(struct tandem_config *cfg, const char *this_host, int role,
		   char *err, size_t errlen)
{
	int me = -1;

	if (!cfg->hosts.n) {
		if (this_host) {
			snprintf(err, errlen, "%s: --this-host %s: the file names one direction only "
				 "(replication = %s:%u); --this-host needs hosts = NAME ADDR:PORT, NAME "
				 "ADDR:PORT (docs/configuration.md)", cfg->source, this_host,
				 cfg->replication.host, cfg->replication.port);
			return -EINVAL;
		}
		cfg->resolved_role = role;
		return 0;
	}
	if (this_host) {
		for (int i = 0; i < CONFIG_HOSTS; i++)
			if (!strcmp(cfg->hosts.h[i].name, this_host))
				me = i;
		if (me < 0) {
			snprintf(err, errlen, "%s: --this-host %s is none of the hosts in the file (%s, %s)",
				 cfg->source, this_host, cfg->hosts.h[0].name, cfg->hosts.h[1].name);
			return -EINVAL;
		}
	} else {
		char hn[256] = "", shortn[256];
		bool local[CONFIG_HOSTS];

		if (gethostname(hn, sizeof(hn) - 1) != 0)
			hn[0] = '\0';
		snprintf(shortn, sizeof(shortn), "%s", hn);
		if (strchr(shortn, '.'))
			*strchr(shortn, '.') = '\0';
		for (int i = 0; i < CONFIG_HOSTS && me < 0; i++)
			if (hn[0] && (!strcmp(cfg->hosts.h[i].name, hn) ||
				      !strcmp(cfg->hosts.h[i].name, shortn)))
				me = i;
		if (me < 0) {
			for (int i = 0; i < CONFIG_HOSTS; i++)
				local[i] = addr_is_local(&cfg->hosts.h[i].repl);
			if (local[0] && local[1]) {
				snprintf(err, errlen, "%s: both hosts' replication addresses (%s, %s) are "
					 "local to this machine and neither is named '%s': say which host "
					 "this is with --this-host NAME", cfg->source,
					 cfg->hosts.h[0].repl.host, cfg->hosts.h[1].repl.host, hn);
				return -EINVAL;
			}
			me = local[0] ? 0 : local[1] ? 1 : -1;
		}
		if (me < 0) {
			snprintf(err, errlen, "%s: this machine (host name '%s') is none of the hosts "
				 "in the file (%s, %s), and neither replication address is local: name "
				 "the hosts as `hostname` says, or give --this-host NAME", cfg->source, hn,
				 cfg->hosts.h[0].name, cfg->hosts.h[1].name);
			return -EINVAL;
		}
	}
	cfg->this_host = me;
	if (expand_host(cfg->run_dir, sizeof(cfg->run_dir), cfg->hosts.h[me].name)) {
		snprintf(err, errlen, "%s: key 'run-dir': too long once %%h is replaced", cfg->source);
		return -EINVAL;
	}
	if (expand_host(cfg->state_dir, sizeof(cfg->state_dir), cfg->hosts.h[me].name)) {
		snprintf(err, errlen, "%s: key 'state-dir': too long once %%h is replaced",
			 cfg->source);
		return -EINVAL;
	}
	return config_set_role(cfg, role);
}
