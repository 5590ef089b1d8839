/*
 * test_probe.c - `tandem probe` on the memdom guest: the command an
 * operator runs before choosing an interval (its Xen side is proven in
 * the lab: lab/lab.sh compare, suspend-only windows).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "test.h"

/* The whole of a file (static buffer; "" when missing). */
static const char *slurp(const char *path)
{
	static char buf[65536];
	FILE *f = fopen(path, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return buf;
}

static int count_lines(const char *text, const char *prefix)
{
	int n = 0;

	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		n += strncmp(l, prefix, strlen(prefix)) == 0;
	return n;
}

/* N cycles, one line each, then the medians; bad options are refused. */
int test_probe_cycles(void)
{
	const char *cfg = td_config("probe-a", NULL);
	char out[600], cmd[2048];
	const char *text;

	snprintf(out, sizeof(out), "%s/probe.out", test_tmpdir());
	snprintf(cmd, sizeof(cmd), "%s probe --count 4 --interval 10ms %s > %s 2>&1",
		 test_tandem_bin(), cfg, out);
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 0);
	text = slurp(out);
	ASSERT_EQ(count_lines(text, "cycle "), 4);
	ASSERT_STR_CONTAINS(text, "cycle 4: pause ");
	ASSERT_STR_CONTAINS(text, "probe: cycles=4 interval_ms=10 log_dirty=0 pause_ms_p50=");
	ASSERT_STR_CONTAINS(text, "% of its time or more");

	/* no backup listens: the link is not measured, the probe still succeeds */
	ASSERT_STR_CONTAINS(text, "probe: link not measured: 127.0.0.1:");
	/* memdom's dirty count is an estimate from its writes, and says so */
	snprintf(cmd, sizeof(cmd), "%s probe --log-dirty --no-link --count 3 --interval 20ms %s > "
		 "%s 2>&1", test_tandem_bin(), cfg, out);
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 0);
	text = slurp(out);
	ASSERT_STR_CONTAINS(text, "pages dirtied since the last (estimated from its writes)");
	ASSERT_STR_CONTAINS(text, "probe: dirty_pages_p50=");
	ASSERT(!strstr(text, "probe: link"));

	snprintf(cmd, sizeof(cmd), "%s probe --count 0 %s > %s 2>&1", test_tandem_bin(), cfg, out);
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 2);
	ASSERT_STR_CONTAINS(slurp(out), "--count: expected 1 to");
	snprintf(cmd, sizeof(cmd), "%s probe --interval soon %s > %s 2>&1", test_tandem_bin(), cfg, out);
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 2);
	ASSERT_STR_CONTAINS(slurp(out), "--interval: expected a duration");
	return TEST_OK;
}

/* A probe would suspend a protected guest behind the primary's back. */
int test_probe_refused_while_protected(void)
{
	const char *cfg = td_config("probe-b", NULL);
	char out[600], cmd[2048];
	struct td p;

	td_start(&p, "primary", cfg, NULL);
	if (!WAIT_FOR(td_status("probe-b", "primary")[0] != '\0', 10000)) {
		td_dump(&p);
		td_stop(&p);
		FAILF("the primary's status socket never answered");
	}
	snprintf(out, sizeof(out), "%s/probe.out", test_tmpdir());
	snprintf(cmd, sizeof(cmd), "%s probe --count 2 %s > %s 2>&1", test_tandem_bin(), cfg, out);
	int rc = WEXITSTATUS(system(cmd));
	td_stop(&p);
	ASSERT_EQ(rc, 1);
	ASSERT_STR_CONTAINS(slurp(out), "tandem primary is protecting 'probe-b' on this host");
	ASSERT_EQ(count_lines(slurp(out), "cycle "), 0);
	return TEST_OK;
}

/* SIGINT ends the probe between cycles: exit 0, the medians of the cycles done. */
int test_probe_stops_between_cycles(void)
{
	const char *cfg = td_config("probe-c", NULL);
	char out[600], want[64];
	const char *text;
	int status, cycles;
	pid_t pid;

	snprintf(out, sizeof(out), "%s/probe.out", test_tmpdir());
	pid = fork();
	ASSERT(pid >= 0);
	if (pid == 0) {
		if (!freopen(out, "w", stdout) || dup2(fileno(stdout), 2) < 0)
			_exit(127);
		execl(test_tandem_bin(), "tandem", "probe", "--count", "1000000", "--interval", "10ms",
		      cfg, (char *)NULL);
		_exit(127);
	}
	if (!WAIT_FOR(strstr(slurp(out), "cycle 3: pause "), 10000)) {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		FAILF("no third cycle: %s", slurp(out));
	}
	ASSERT_EQ(kill(pid, SIGINT), 0);
	ASSERT_EQ(waitpid(pid, &status, 0), pid);
	ASSERT(WIFEXITED(status));
	ASSERT_EQ(WEXITSTATUS(status), 0);
	text = slurp(out);
	cycles = count_lines(text, "cycle ");
	ASSERT(cycles >= 3);
	snprintf(want, sizeof(want), "probe: cycles=%d interval_ms=10 ", cycles);
	ASSERT_STR_CONTAINS(text, want);
	return TEST_OK;
}

/*
 * The link and the prediction: with the backup listening, the probe
 * measures the replication link through the backup (authenticated and
 * encrypted, as protection will run), predicts the pause, the checkpoint,
 * the added latency and the speed the budget would need, and the primary
 * shows that prediction beside what it then measures.  The backup never
 * takes the probe for a primary.
 */
int test_probe_link_predicts(void)
{
	const char *cfg = td_config("probe-d", "encrypt = yes\nworkload-rate = 4000\n");
	char out[600], cmd[2048];
	const char *text, *js, *pred;
	struct td b, p;

	td_start(&b, "backup", cfg, NULL);
	ASSERT(WAIT_FOR(strstr(td_status("probe-d", "backup"), "\"state\":\"waiting\""), 15000));
	snprintf(out, sizeof(out), "%s/probe.out", test_tmpdir());
	snprintf(cmd, sizeof(cmd), "%s probe --log-dirty --count 4 --interval 50ms --link-time 300ms "
		 "%s > %s 2>&1", test_tandem_bin(), cfg, out);
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 0);
	text = slurp(out);
	if (!strstr(text, "probe: link to 127.0.0.1:")) {
		fprintf(stderr, "%s", text);
		FAILF("the link was not measured");
	}
	ASSERT_STR_CONTAINS(text, "(authenticated, encrypted): rtt_ms_p50=");
	ASSERT(!strstr(text, "MBps=0.0 "));
	ASSERT_STR_CONTAINS(text, "probe: predicted at interval 50 ms: dirty_pages=");
	ASSERT(WAIT_FOR(td_log_has(&b, "link probe from 127.0.0.1:"), 5000));
	/* still waiting for its primary: the probe was no session */
	ASSERT(strstr(td_status("probe-d", "backup"), "\"state\":\"waiting\"") != NULL);
	ASSERT(!td_log_has(&b, "primary connected"));

	td_start(&p, "primary", cfg, NULL);
	ASSERT(WAIT_FOR(td_num(td_status("probe-d", "primary"), "last_acked_epoch") >= 5, 15000));
	js = td_status("probe-d", "primary");
	pred = strstr(js, "\"prediction\":{");
	ASSERT(pred != NULL);
	ASSERT(td_num(pred, "checkpoint_bytes") > 0);
	ASSERT(td_num(pred, "added_latency_ms") > 0);
	ASSERT(strstr(js, "\"measured\":{") != NULL);
	ASSERT(td_num(strstr(js, "\"measured\":{"), "pause_ms") >= 0);
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}
