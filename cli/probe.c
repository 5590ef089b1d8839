/*
 * probe.c - `tandem probe`: how long the guest's own suspend path takes.
 *
 * Every checkpoint pauses the guest for at least its suspend (the request
 * through xenstore, the guest kernel freezing itself, Xen reporting it
 * suspended) plus the fast resume.  The probe does exactly that, with no
 * dirty tracking and nothing copied, a number of times, and prints each
 * cycle and the medians: the floor under any checkpoint's pause, before
 * an operator picks an interval.  The guest is never left suspended.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../config/config.h"
#include "../domain/domain.h"
#include "../lib/key.h"
#include "../lib/log.h"
#include "../lib/net.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "../primary/linkprobe.h"
#include "cmd.h"

#define PROBE_MAX_CYCLES 1000000u

static volatile sig_atomic_t stop_req;

static void on_stop(int sig)
{
	(void)sig;
	stop_req = 1;
}

/* True when a daemon answers on the status socket at path. */
static bool socket_answers(const char *path)
{
	int fd = net_unix_connect(path);

	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* Sleep ms, or less if a stop is asked for. */
static void nap_ms(uint64_t ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };

	while (!stop_req && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

struct probe_opts {
	uint64_t count, interval_ms, link_ms;
	bool have_interval, log_dirty, no_link;
};

/* Take --count N, --interval D, --log-dirty, --no-link and --link-time D
 * out of argv; the rest is the daemons'. */
static int take_options(int *argc, char **argv, struct probe_opts *o)
{
	uint64_t *count = &o->count, *interval_ms = &o->interval_ms;
	int n = 1;

	for (int i = 1; i < *argc; i++) {
		bool is_count = !strcmp(argv[i], "--count"), is_iv = !strcmp(argv[i], "--interval");
		bool is_lt = !strcmp(argv[i], "--link-time");

		if (!strcmp(argv[i], "--log-dirty")) {
			o->log_dirty = true;
			continue;
		}
		if (!strcmp(argv[i], "--no-link")) {
			o->no_link = true;
			continue;
		}
		if (is_lt) {
			if (i + 1 >= *argc || parse_duration_ms(argv[i + 1], &o->link_ms) ||
			    o->link_ms < 100 || o->link_ms > 60000) {
				fprintf(stderr, "tandem probe: --link-time: expected a duration from "
					"100ms to 60s\n");
				return -EINVAL;
			}
			i++;
			continue;
		}
		if (!is_count && !is_iv) {
			argv[n++] = argv[i];
			continue;
		}
		if (i + 1 >= *argc) {
			fprintf(stderr, "tandem probe: %s needs a value\n", argv[i]);
			return -EINVAL;
		}
		if (is_count && (parse_u64(argv[i + 1], count) || *count < 1 ||
				 *count > PROBE_MAX_CYCLES)) {
			fprintf(stderr, "tandem probe: --count: expected 1 to %u, got '%s'\n",
				PROBE_MAX_CYCLES, argv[i + 1]);
			return -EINVAL;
		}
		if (is_iv && parse_duration_ms(argv[i + 1], interval_ms)) {
			fprintf(stderr, "tandem probe: --interval: expected a duration such as 100ms, "
				"got '%s'\n", argv[i + 1]);
			return -EINVAL;
		}
		o->have_interval |= is_iv;
		i++;
	}
	*argc = n;
	argv[n] = NULL;
	return 0;
}

/* memcpy's rate on this host (median of three 64 MiB copies), for the
 * capture's share of the predicted pause. */
static double memcpy_rate(void)
{
	const size_t n = 64u << 20;
	uint8_t *a = malloc(n), *b = malloc(n);
	uint64_t t[3];

	if (!a || !b) {
		free(a);
		free(b);
		return 0;
	}
	memset(a, 1, n);
	memset(b, 2, n);
	for (int i = 0; i < 3; i++) {
		uint64_t t0 = now_ns();

		memcpy(b, a, n);
		t[i] = now_ns() - t0;
		a[i] = b[n - 1 - (size_t)i];	/* keep the copy */
	}
	free(a);
	free(b);
	return (double)n / ((double)u64_median(t, 3) / 1e9);
}

/* The replication link, then, with the guest's dirty rate, the prediction. */
static void probe_link(const struct tandem_config *cfg, const struct probe_opts *o,
		       uint64_t interval_ms, double pause_ms, double dirty)
{
	struct tandem_config at = *cfg;		/* the prediction's interval: --interval's */
	struct link_probe_result lr;
	struct probe_prediction pr;
	uint8_t key[KEY_LEN];
	char err[512];
	int rc;

	if (key_load(cfg->key_file, key, err, sizeof(err))) {
		printf("probe: link not measured: %s\n", err);
		return;
	}
	rc = link_probe(cfg, key, 1ull << 30, o->link_ms, &lr, err, sizeof(err));
	explicit_bzero(key, sizeof(key));
	if (rc) {
		printf("probe: link not measured: %s:%u: %s\n", cfg->replication.host,
		       cfg->replication.port, err);
		return;
	}
	printf("probe: link to %s:%u (authenticated%s): rtt_ms_p50=%.2f rtt_ms_max=%.2f "
	       "MBps=%.1f (%.1f MiB in %.2f s)\n", cfg->replication.host, cfg->replication.port,
	       cfg->encrypt ? ", encrypted" : "", lr.rtt_ms_p50, lr.rtt_ms_max,
	       lr.bytes_per_s / 1e6, (double)lr.bytes / 1048576, lr.seconds);
	if (dirty < 0) {
		printf("probe: no prediction: the guest's dirty rate needs --log-dirty\n");
		return;
	}
	at.interval_ms = interval_ms;
	probe_predict(&at, pause_ms, dirty, memcpy_rate(), &lr, &pr);
	printf("probe: predicted at interval %" PRIu64 " ms: dirty_pages=%.0f pause_ms=%.1f "
	       "checkpoint_KiB=%.0f ship_ms=%.1f added_latency_ms=%.0f speed_pct=%.0f\n",
	       interval_ms, dirty, pr.pause_ms, pr.checkpoint_bytes / 1024, pr.ship_ms,
	       pr.added_latency_ms, pr.speed_pct);
	if (pr.speed_pct < 100)
		printf("probe: the link carries %.0f%% of what '%s' dirties each interval: epochs "
		       "will stretch; latency-budget would slow the guest to about %.0f%%\n",
		       pr.speed_pct, cfg->name, pr.speed_pct);
	else
		printf("probe: the link keeps up: a checkpoint ships in %.0f%% of the interval\n",
		       100.0 * pr.ship_ms / (double)interval_ms);
	if ((rc = probe_prediction_save(cfg, &pr, &lr, dirty)))
		printf("probe: prediction not saved for `tandem status` (%s/%s.probe: %s)\n",
		       cfg->run_dir, cfg->name, strerror(-rc));
}

int cmd_probe(int argc, char **argv)
{
	struct tandem_config cfg;
	struct domain dom = { 0 };
	struct sigaction sa = { .sa_handler = on_stop };
	struct probe_opts o = { .count = 20, .link_ms = 3000 };
	uint64_t *pause = NULL, *susp = NULL, *res = NULL, *dirty = NULL, *dm = NULL, ndirty = 0;
	uint64_t dm_bytes = 0;
	uint64_t done = 0, count, interval_ms;
	bool log_dirty;
	char path[512];
	int rc, exit_code = EXIT_OK;

	if (take_options(&argc, argv, &o)) {
		fprintf(stderr, "usage: tandem probe [--count N] [--interval DURATION] [--log-dirty] "
			"[--no-link] [--link-time DURATION] [--log-level LEVEL] CONFIG\n");
		return EXIT_USAGE;
	}
	if ((rc = cmd_load_config(argc, argv, "probe", &cfg)))
		return rc;
	count = o.count;
	log_dirty = o.log_dirty;
	interval_ms = o.have_interval ? o.interval_ms : cfg.interval_ms;
	config_status_path(&cfg, "primary", path, sizeof(path));
	if (socket_answers(path)) {
		log_error("tandem primary is protecting '%s' on this host (%s answers): a probe "
			  "would suspend the guest behind its back; stop it first", cfg.name, path);
		return EXIT_FAILURE_RUNTIME;
	}
	pause = calloc(count, sizeof(*pause));
	susp = calloc(count, sizeof(*susp));
	res = calloc(count, sizeof(*res));
	dirty = calloc(count, sizeof(*dirty));
	dm = calloc(count, sizeof(*dm));
	if (!pause || !susp || !res || !dirty || !dm) {
		exit_code = EXIT_FAILURE_RUNTIME;
		goto out;
	}
	dom.ops = domain_ops_for(&cfg);
	dom.cfg = &cfg;
	dom.role = ROLE_PRIMARY;
	if (!dom.ops || !dom.ops->probe) {
		log_error("this domain driver cannot be probed");
		exit_code = EXIT_ENV;
		goto out;
	}
	if ((rc = dom.ops->open(&dom))) {
		log_error("cannot open the %s domain: %s", dom.ops->name, strerror(-rc));
		exit_code = (rc == -ENOTSUP || rc == -ENOENT) ? EXIT_ENV : EXIT_FAILURE_RUNTIME;
		goto out;
	}
	/* A stop ends the probe between cycles, never inside one. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	printf("probe: %" PRIu64 " suspend-resume cycles of '%s' (%s driver), one every %" PRIu64
	       " ms, nothing copied%s\n", count, cfg.name, dom.ops->name, interval_ms,
	       log_dirty ? ", dirty tracking on" : "");
	fflush(stdout);
	while (done < count && !stop_req) {
		struct domain_probe_cycle cy;

		if (done)
			nap_ms(interval_ms);
		if (stop_req)
			break;
		rc = dom.ops->probe(&dom, log_dirty, &cy);
		if (rc) {
			log_error("cycle %" PRIu64 ": the guest did not suspend: %s", done + 1,
				  strerror(-rc));
			exit_code = EXIT_FAILURE_RUNTIME;
			break;
		}
		susp[done] = cy.suspend_us;
		res[done] = cy.resume_us;
		dm[done] = cy.dm_us;
		dm_bytes = MAX(dm_bytes, cy.dm_bytes);
		pause[done] = susp[done] + res[done];
		if (cy.dirty_pages != UINT64_MAX)
			dirty[ndirty++] = cy.dirty_pages;
		printf("cycle %" PRIu64 ": pause %.1f ms (suspend %.1f, resume %.1f)", done + 1,
		       (double)pause[done] / 1000, (double)susp[done] / 1000, (double)res[done] / 1000);
		if (cy.dm_bytes)
			printf(", device model %.1f ms of it (%" PRIu64 " bytes of state)",
			       (double)cy.dm_us / 1000, cy.dm_bytes);
		if (cy.dirty_pages != UINT64_MAX)
			printf(", %" PRIu64 " pages dirtied since the last%s", cy.dirty_pages,
			       strcmp(dom.ops->name, "memdom") ? "" : " (estimated from its writes)");
		printf("\n");
		fflush(stdout);
		done++;
	}
	if (done) {
		uint64_t p50 = u64_median(pause, done);
		uint64_t lo = pause[0], hi = pause[done - 1];	/* sorted by u64_median */
		double dirty_p50 = ndirty ? (double)u64_median(dirty, ndirty) : -1;

		printf("probe: cycles=%" PRIu64 " interval_ms=%" PRIu64 " log_dirty=%d pause_ms_p50=%.1f "
		       "pause_ms_min=%.1f pause_ms_max=%.1f suspend_ms_p50=%.1f resume_ms_p50=%.1f\n",
		       done, interval_ms, log_dirty, (double)p50 / 1000, (double)lo / 1000, (double)hi / 1000,
		       (double)u64_median(susp, done) / 1000, (double)u64_median(res, done) / 1000);
		printf("probe: every checkpoint pauses '%s' at least %.1f ms (median) before its "
		       "pages are copied; at %" PRIu64 " ms between checkpoints that is %.0f %% of "
		       "its time or more\n", cfg.name, (double)p50 / 1000, interval_ms,
		       100.0 * (double)p50 / ((double)p50 + (double)interval_ms * 1000));
		if (dm_bytes) {
			uint64_t dm50 = u64_median(dm, done);

			printf("probe: device_model_ms_p50=%.1f device_model_bytes=%" PRIu64 " (QEMU "
			       "stopped, its state saved and read back, running again: %.0f %% of the "
			       "median pause)\n", (double)dm50 / 1000, dm_bytes,
			       p50 ? 100.0 * (double)dm50 / (double)p50 : 0.0);
		}
		if (ndirty)
			printf("probe: dirty_pages_p50=%.0f per %" PRIu64 " ms (%.1f MB/s)\n", dirty_p50,
			       interval_ms, dirty_p50 * 4096 / ((double)interval_ms / 1000) / 1e6);
		if (!o.no_link && !stop_req && exit_code == EXIT_OK)
			probe_link(&cfg, &o, interval_ms, (double)p50 / 1000, dirty_p50);
	}
	dom.ops->close(&dom);
out:
	free(pause);
	free(susp);
	free(res);
	free(dirty);
	free(dm);
	return exit_code;
}
