/*
 * metrics.c - `tandem metrics`: every daemon on this host in the
 * Prometheus text exposition format, from their status sockets.
 *
 * A command, not an HTTP endpoint in the daemons: a dom0 gets no new
 * listening port (and no second authentication story), and Debian hosts
 * already run node_exporter, whose textfile collector reads what
 * `tandem metrics --textfile FILE` writes (atomically) from a timer.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/util.h"
#include "cmd.h"

#define MAX_DAEMONS 128

struct daemon_json {
	char *js;
	char vm[80], role[16], state[32];
};

/* The number after "key": in js (first match after `from`), or NAN-ish -1. */
static double jnum(const char *js, const char *key)
{
	char pat[80];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(js, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

static unsigned count_of(const char *js, const char *text)
{
	unsigned n = 0;

	for (const char *p = strstr(js, text); p; p = strstr(p + 1, text))
		n++;
	return n;
}

static void family(FILE *out, const char *name, const char *type, const char *help)
{
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* One sample of a numeric field of each daemon of `role` (NULL: any). */
static void samples(FILE *out, struct daemon_json *d, int n, const char *role, const char *name,
		    const char *key, double scale)
{
	for (int i = 0; i < n; i++) {
		double v;

		if (role && strcmp(d[i].role, role))
			continue;
		v = jnum(d[i].js, key);
		if (v < 0)
			continue;
		fprintf(out, "%s{vm=\"%s\",role=\"%s\"} %.9g\n", name, d[i].vm, d[i].role, v * scale);
	}
}

/* A histogram the daemon keeps as {"le":[...],"counts":[cumulative],...}. */
static void histogram(FILE *out, struct daemon_json *d, int n, const char *name, const char *key)
{
	for (int i = 0; i < n; i++) {
		char pat[96];
		const char *h, *le, *cn;
		double sum, count;

		snprintf(pat, sizeof(pat), "\"%s\":{", key);
		if (!(h = strstr(d[i].js, pat)))
			continue;
		le = strstr(h, "\"le\":[");
		cn = strstr(h, "\"counts\":[");
		if (!le || !cn)
			continue;
		le += 6;
		cn += 10;
		while (*le && *le != ']' && *cn && *cn != ']') {
			char *e1, *e2;
			double bound = strtod(le, &e1);
			unsigned long long c = strtoull(cn, &e2, 10);

			if (e1 == le || e2 == cn)
				break;
			fprintf(out, "%s_bucket{vm=\"%s\",role=\"%s\",le=\"%g\"} %llu\n", name, d[i].vm,
				d[i].role, bound, c);
			le = *e1 == ',' ? e1 + 1 : e1;
			cn = *e2 == ',' ? e2 + 1 : e2;
		}
		sum = jnum(h, "sum");
		count = jnum(h, "count");
		fprintf(out, "%s_bucket{vm=\"%s\",role=\"%s\",le=\"+Inf\"} %.0f\n", name, d[i].vm,
			d[i].role, count);
		fprintf(out, "%s_sum{vm=\"%s\",role=\"%s\"} %.9g\n", name, d[i].vm, d[i].role, sum);
		fprintf(out, "%s_count{vm=\"%s\",role=\"%s\"} %.0f\n", name, d[i].vm, d[i].role, count);
	}
}

static void expose(FILE *out, struct daemon_json *d, int n)
{
	static const char *const actions[] = { "held", "released", "dropped" };

	family(out, "tandem_up", "gauge", "A tandem daemon answers for this VM and role.");
	for (int i = 0; i < n; i++)
		fprintf(out, "tandem_up{vm=\"%s\",role=\"%s\"} 1\n", d[i].vm, d[i].role);
	family(out, "tandem_state", "gauge", "The daemon's state (1 for the current one).");
	for (int i = 0; i < n; i++)
		fprintf(out, "tandem_state{vm=\"%s\",role=\"%s\",state=\"%s\"} 1\n", d[i].vm, d[i].role,
			d[i].state);
	family(out, "tandem_epoch", "gauge", "The primary's last checkpoint taken.");
	samples(out, d, n, "primary", "tandem_epoch", "epoch", 1);
	family(out, "tandem_acked_epoch", "gauge",
	       "The last checkpoint acknowledged (primary) or committed and acknowledged (backup).");
	samples(out, d, n, NULL, "tandem_acked_epoch", "last_acked_epoch", 1);
	family(out, "tandem_lag_seconds", "gauge", "Age of the oldest checkpoint awaiting an ack.");
	samples(out, d, n, "primary", "tandem_lag_seconds", "lag_ms", 1e-3);
	family(out, "tandem_pause_seconds", "histogram", "Guest pause per checkpoint, suspend to resume.");
	histogram(out, d, n, "tandem_pause_seconds", "pause_seconds");
	family(out, "tandem_added_latency_seconds", "histogram",
	       "Capture to acknowledgement per checkpoint: how long its output was held.");
	histogram(out, d, n, "tandem_added_latency_seconds", "added_latency_seconds");
	family(out, "tandem_shipped_bytes_total", "counter", "Bytes sent on the replication link.");
	samples(out, d, n, "primary", "tandem_shipped_bytes_total", "bytes_shipped", 1);
	family(out, "tandem_shipped_raw_bytes_total", "counter", "Checkpoint bytes before compression.");
	samples(out, d, n, "primary", "tandem_shipped_raw_bytes_total", "bytes_shipped_raw", 1);
	family(out, "tandem_received_bytes_total", "counter", "Bytes received from the primary.");
	samples(out, d, n, "backup", "tandem_received_bytes_total", "bytes_received", 1);
	family(out, "tandem_output_packets_total", "counter",
	       "The guest's output packets held, released after an ack, or dropped.");
	for (int i = 0; i < n; i++) {
		if (strcmp(d[i].role, "primary"))
			continue;
		for (int a = 0; a < 3; a++) {
			char key[40];
			double v;

			snprintf(key, sizeof(key), "%s_packets", actions[a]);
			v = jnum(d[i].js, key);
			if (v >= 0)
				fprintf(out, "tandem_output_packets_total{vm=\"%s\",role=\"primary\",action=\"%s\"} %.0f\n",
					d[i].vm, actions[a], v);
		}
	}
	family(out, "tandem_heartbeat_paths", "gauge", "Heartbeat paths configured.");
	family(out, "tandem_heartbeat_paths_up", "gauge", "Heartbeat paths that hear the peer.");
	for (int i = 0; i < n; i++) {
		fprintf(out, "tandem_heartbeat_paths{vm=\"%s\",role=\"%s\"} %u\n", d[i].vm, d[i].role,
			count_of(d[i].js, "\"up\":"));
		fprintf(out, "tandem_heartbeat_paths_up{vm=\"%s\",role=\"%s\"} %u\n", d[i].vm, d[i].role,
			count_of(d[i].js, "\"up\":true"));
	}
	family(out, "tandem_failovers_total", "counter", "Activations of the standby by this backup.");
	for (int i = 0; i < n; i++)
		if (!strcmp(d[i].role, "backup"))
			fprintf(out, "tandem_failovers_total{vm=\"%s\",role=\"backup\"} %d\n", d[i].vm,
				!strcmp(d[i].state, "active") || jnum(d[i].js, "failover_ms") > 0);
	family(out, "tandem_guest_pauses_total", "counter",
	       "Times the guest was paused because its next checkpoint did not fit staging.");
	samples(out, d, n, "primary", "tandem_guest_pauses_total", "throttles", 1);
	family(out, "tandem_guest_paused_seconds_total", "counter", "Time the guest spent so paused.");
	samples(out, d, n, "primary", "tandem_guest_paused_seconds_total", "throttled_ms", 1e-3);
	family(out, "tandem_verify_mismatched_checkpoints_total", "counter",
	       "Checkpoints the checkpoint oracle found differing on the standby.");
	samples(out, d, n, "backup", "tandem_verify_mismatched_checkpoints_total",
		"mismatched_checkpoints", 1);
}

/* `status --json` of one socket into a malloc'd string (NULL: no answer). */
static char *query_json(const char *path)
{
	char *js = NULL;
	size_t len = 0;
	FILE *mem = open_memstream(&js, &len);
	int rc;

	if (!mem)
		return NULL;
	rc = cmd_query_socket(path, "json\n", mem);
	fclose(mem);
	if (rc || !len) {
		free(js);
		return NULL;
	}
	return js;
}

int cmd_metrics(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "run-dir", required_argument, NULL, 'r' },
		{ "textfile", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *run_dir = cmd_run_dir();
	const char *name = NULL, *textfile = NULL;
	struct daemon_json d[MAX_DAEMONS];
	char tmp[600];
	int n = 0, c;
	FILE *out = stdout;
	DIR *dir;
	struct dirent *de;

	optind = 1;
	while ((c = getopt_long(argc, argv, "r:t:", opts, NULL)) != -1) {
		switch (c) {
		case 'r': run_dir = optarg; break;
		case 't': textfile = optarg; break;
		default:
			fprintf(stderr, "usage: tandem metrics [--run-dir DIR] [--textfile FILE] [NAME]\n");
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		name = argv[optind];
	dir = opendir(run_dir);
	while (dir && (de = readdir(dir)) && n < MAX_DAEMONS) {
		char path[512];

		if (!daemon_socket(de->d_name, name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", run_dir, de->d_name);
		if (!(d[n].js = query_json(path)))
			continue;
		json_str(d[n].js, "vm", d[n].vm, sizeof(d[n].vm));
		json_str(d[n].js, "role", d[n].role, sizeof(d[n].role));
		json_str(d[n].js, "state", d[n].state, sizeof(d[n].state));
		n++;
	}
	if (dir)
		closedir(dir);
	if (textfile) {
		snprintf(tmp, sizeof(tmp), "%s.tmp", textfile);
		if (!(out = fopen(tmp, "w"))) {
			fprintf(stderr, "tandem metrics: cannot write %s: %s\n", tmp, strerror(errno));
			return EXIT_FAILURE_RUNTIME;
		}
	}
	expose(out, d, n);
	for (int i = 0; i < n; i++)
		free(d[i].js);
	if (textfile) {
		if (fclose(out) || rename(tmp, textfile)) {
			fprintf(stderr, "tandem metrics: cannot write %s: %s\n", textfile, strerror(errno));
			return EXIT_FAILURE_RUNTIME;
		}
	}
	return n ? EXIT_OK : EXIT_NO_DAEMON;
}
