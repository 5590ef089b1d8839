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
#include "../lib/log.h"
#include "../lib/net.h"
#include "../lib/util.h"
#include "../lib/wire.h"
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

/* Take --count N, --interval D and --log-dirty out of argv; the rest is
 * the daemons'. */
static int take_options(int *argc, char **argv, uint64_t *count, uint64_t *interval_ms,
			bool *have_interval, bool *log_dirty)
{
	int n = 1;

	for (int i = 1; i < *argc; i++) {
		bool is_count = !strcmp(argv[i], "--count"), is_iv = !strcmp(argv[i], "--interval");

		if (!strcmp(argv[i], "--log-dirty")) {
			*log_dirty = true;
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
		*have_interval |= is_iv;
		i++;
	}
	*argc = n;
	argv[n] = NULL;
	return 0;
}

int cmd_probe(int argc, char **argv)
{
	struct tandem_config cfg;
	struct domain dom = { 0 };
	struct sigaction sa = { .sa_handler = on_stop };
	uint64_t count = 20, interval_ms = 0, *pause = NULL, *susp = NULL, *res = NULL;
	uint64_t done = 0;
	bool have_interval = false, log_dirty = false;
	char path[512];
	int rc, exit_code = EXIT_OK;

	if (take_options(&argc, argv, &count, &interval_ms, &have_interval, &log_dirty)) {
		fprintf(stderr, "usage: tandem probe [--count N] [--interval DURATION] [--log-dirty] "
			"[--log-level LEVEL] CONFIG\n");
		return EXIT_USAGE;
	}
	if ((rc = cmd_load_config(argc, argv, "probe", &cfg)))
		return rc;
	if (!have_interval)
		interval_ms = cfg.interval_ms;
	config_status_path(&cfg, "primary", path, sizeof(path));
	if (socket_answers(path)) {
		log_error("tandem primary is protecting '%s' on this host (%s answers): a probe "
			  "would suspend the guest behind its back; stop it first", cfg.name, path);
		return EXIT_FAILURE_RUNTIME;
	}
	pause = calloc(count, sizeof(*pause));
	susp = calloc(count, sizeof(*susp));
	res = calloc(count, sizeof(*res));
	if (!pause || !susp || !res) {
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
		if (done)
			nap_ms(interval_ms);
		if (stop_req)
			break;
		rc = dom.ops->probe(&dom, log_dirty, &susp[done], &res[done]);
		if (rc) {
			log_error("cycle %" PRIu64 ": the guest did not suspend: %s", done + 1,
				  strerror(-rc));
			exit_code = EXIT_FAILURE_RUNTIME;
			break;
		}
		pause[done] = susp[done] + res[done];
		printf("cycle %" PRIu64 ": pause %.1f ms (suspend %.1f, resume %.1f)\n", done + 1,
		       (double)pause[done] / 1000, (double)susp[done] / 1000, (double)res[done] / 1000);
		fflush(stdout);
		done++;
	}
	if (done) {
		uint64_t p50 = u64_median(pause, done);
		uint64_t lo = pause[0], hi = pause[done - 1];	/* sorted by u64_median */

		printf("probe: cycles=%" PRIu64 " interval_ms=%" PRIu64 " log_dirty=%d pause_ms_p50=%.1f "
		       "pause_ms_min=%.1f pause_ms_max=%.1f suspend_ms_p50=%.1f resume_ms_p50=%.1f\n",
		       done, interval_ms, log_dirty, (double)p50 / 1000, (double)lo / 1000, (double)hi / 1000,
		       (double)u64_median(susp, done) / 1000, (double)u64_median(res, done) / 1000);
		printf("probe: every checkpoint pauses '%s' at least %.1f ms (median) before its "
		       "pages are copied; at %" PRIu64 " ms between checkpoints that is %.0f %% of "
		       "its time or more\n", cfg.name, (double)p50 / 1000, interval_ms,
		       100.0 * (double)p50 / ((double)p50 + (double)interval_ms * 1000));
	}
	dom.ops->close(&dom);
out:
	free(pause);
	free(susp);
	free(res);
	return exit_code;
}
