/*
 * test_service.c - running tandem as a service: the systemd units (checked
 * by systemd-analyze) and what the daemons tell systemd (sd_notify), read
 * on sockets of the test's own (NOTIFY_SOCKET).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../config/config.h"
#include "daemon.h"
#include "test.h"

#define VM "vm1"

/* The units, made for this build's binary, pass systemd-analyze verify
 * with nothing said (it exits 0 on a key it ignores: any output fails). */
int test_service_units_verify(void)
{
	char out[8192], dir[600], bin[PATH_MAX];
	const char *units[] = { "tandem-primary@web.service", "tandem-backup@web.service" };
	int rc;

	ASSERT(realpath(test_tandem_bin(), bin));
	*strrchr(bin, '/') = '\0';
	snprintf(dir, sizeof(dir), "%s/units", test_tmpdir());
	ASSERT_EQ(test_capture(out, sizeof(out), "mkdir -p %s && make -s units UNITS_OUT=%s SBINDIR=%s 2>&1",
			       dir, dir, bin), 0);
	for (size_t i = 0; i < 2; i++) {
		rc = test_capture(out, sizeof(out), "cd %s && systemd-analyze verify %s 2>&1", dir,
				  units[i]);
		if (rc != 0 || out[0])
			FAILF("systemd-analyze verify %s: exit %d: %s", units[i], rc, out);
	}
	/* and the policy the issue asks for */
	ASSERT_EQ(test_capture(out, sizeof(out), "grep -h '^Type=\\|^RestartPreventExitStatus=\\|^WatchdogSec=' %s/*.service",
			       dir), 0);
	ASSERT(strstr(out, "Type=notify"));
	ASSERT(strstr(out, "RestartPreventExitStatus=2 3 4 6"));	/* primary: 6 = the guest ended */
	ASSERT(strstr(out, "WatchdogSec=30s"));
	return TEST_OK;
}

static int notify_socket(const char *path)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	snprintf(a.sun_path, sizeof(a.sun_path), "%s", path);
	unlink(path);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0)
		FAILF("notify socket %s: %s", path, strerror(errno));
	return fd;
}

/* Append every datagram waiting on fd to log (one message per line, its
 * assignments joined by '|'). */
static void drain(int fd, char *log, size_t len)
{
	char msg[1024];
	ssize_t n;

	while ((n = recv(fd, msg, sizeof(msg) - 1, 0)) > 0) {
		size_t used = strlen(log);

		msg[n] = '\0';
		for (char *c = msg; *c; c++)
			if (*c == '\n')
				*c = '|';
		snprintf(log + used, len - used, "%s\n", msg);
	}
}

/* Where text first appears in log (its offset), or -1. */
static long at(const char *log, const char *text)
{
	const char *p = strstr(log, text);

	return p ? p - log : -1;
}

static char plog[65536], blog[65536];
static int pfd, bfd;

static bool primary_ready(void) { drain(pfd, plog, sizeof(plog)); return strstr(plog, "READY=1"); }
static bool backup_ready(void) { drain(bfd, blog, sizeof(blog)); return strstr(blog, "READY=1"); }

/*
 * What systemd hears, in order.  Backup: STATUS waiting, READY=1 only with
 * a committed standby (after its STATUS standby), STOPPING=1 on SIGTERM.
 * Primary: STATUS syncing, READY=1 only after its first acknowledged
 * checkpoint (after STATUS protecting: checkpoint N acknowledged), then a
 * STATUS line with epoch and lag, STOPPING=1 on SIGTERM.  READY=1 once each.
 */
int test_service_notify_order(void)
{
	char ppath[600], bpath[600];
	const char *cfg = td_config(VM, NULL);
	struct td p, b;

	plog[0] = blog[0] = '\0';
	snprintf(ppath, sizeof(ppath), "%s/notify-p.sock", test_tmpdir());
	snprintf(bpath, sizeof(bpath), "%s/notify-b.sock", test_tmpdir());
	pfd = notify_socket(ppath);
	bfd = notify_socket(bpath);
	setenv("NOTIFY_SOCKET", bpath, 1);
	td_start(&b, "backup", cfg, NULL);
	setenv("NOTIFY_SOCKET", ppath, 1);
	td_start(&p, "primary", cfg, NULL);
	unsetenv("NOTIFY_SOCKET");
	if (!WAIT_FOR(primary_ready() && backup_ready(), 20000))
		FAILF("no READY=1: primary heard [%s], backup heard [%s]", plog, blog);
	usleep(1500000);	/* a periodic STATUS line, once a second */
	drain(pfd, plog, sizeof(plog));
	drain(bfd, blog, sizeof(blog));
	td_stop(&p);
	td_stop(&b);
	drain(pfd, plog, sizeof(plog));
	drain(bfd, blog, sizeof(blog));

	/* backup */
	ASSERT(at(blog, "STATUS=waiting") >= 0);
	ASSERT(at(blog, "STATUS=standby: standby holds checkpoint") >= 0);
	ASSERT(at(blog, "READY=1") > at(blog, "STATUS=standby: standby holds checkpoint"));
	ASSERT(at(blog, "STATUS=standby: checkpoint ") > at(blog, "READY=1"));
	ASSERT(at(blog, "STOPPING=1") > at(blog, "READY=1"));
	ASSERT(!strstr(strstr(blog, "READY=1") + 1, "READY=1"));
	/* primary */
	ASSERT(at(plog, "STATUS=syncing") >= 0);
	ASSERT(at(plog, "STATUS=protecting: checkpoint ") > at(plog, "STATUS=syncing"));
	ASSERT(at(plog, "READY=1") > at(plog, "STATUS=protecting: checkpoint "));
	ASSERT(at(plog, "STATUS=protecting: epoch ") > at(plog, "READY=1"));
	ASSERT(at(plog, "STOPPING=1") > at(plog, "READY=1"));
	ASSERT(!strstr(strstr(plog, "READY=1") + 1, "READY=1"));
	close(pfd);
	close(bfd);
	return TEST_OK;
}

/*
 * The man pages: every subcommand `tandem help` lists is in tandem(8),
 * every configuration key is in tandem.cfg(5), and man renders both with
 * no warning.
 */
int test_service_man_pages(void)
{
	static char help[8192], page[65536], out[4096];
	size_t nkeys;
	const struct config_key *keys = config_schema(&nkeys);
	const char *pages[] = { "man/tandem.8", "man/tandem.cfg.5" };
	FILE *f;
	size_t n;

	ASSERT_EQ(test_capture(help, sizeof(help), "%s help", test_tandem_bin()), 0);
	ASSERT(f = fopen("man/tandem.8", "r"));
	n = fread(page, 1, sizeof(page) - 1, f);
	page[n] = '\0';
	fclose(f);
	for (char *l = strstr(help, "  tandem "); l; l = strstr(l + 1, "\n  tandem ")) {
		char cmd[64], want[96];

		if (sscanf(l, " tandem %63s", cmd) != 1)
			continue;
		snprintf(want, sizeof(want), ".B tandem %s", cmd);
		{	/* roff writes '-' as '\-' */
			char esc[128];
			size_t j = 0;

			for (const char *c = want; *c && j + 2 < sizeof(esc); c++) {
				if (*c == '-')
					esc[j++] = '\\';
				esc[j++] = *c;
			}
			esc[j] = '\0';
			if (!strstr(page, esc))
				FAILF("tandem(8) lacks the subcommand '%s'", cmd);
		}
	}
	ASSERT(f = fopen("man/tandem.cfg.5", "r"));
	n = fread(page, 1, sizeof(page) - 1, f);
	page[n] = '\0';
	fclose(f);
	for (size_t i = 0; i < nkeys; i++) {
		char esc[128];
		size_t j = 0;

		j += (size_t)snprintf(esc, sizeof(esc), "\\fB");
		for (const char *c = keys[i].name; *c && j + 8 < sizeof(esc); c++) {
			if (*c == '-')
				esc[j++] = '\\';
			esc[j++] = *c;
		}
		snprintf(esc + j, sizeof(esc) - j, "\\fR (");
		if (!strstr(page, esc))
			FAILF("tandem.cfg(5) lacks the key '%s'", keys[i].name);
	}
	for (size_t i = 0; i < 2; i++) {
		int rc = test_capture(out, sizeof(out), "MANWIDTH=80 man --warnings -l %s 2>&1 >/dev/null",
				      pages[i]);
		if (rc != 0 || out[0])
			FAILF("man -l %s: exit %d: %s", pages[i], rc, out);
	}
	return TEST_OK;
}

/* Bash completion: subcommands (the same list `tandem help` prints),
 * options, VM names from the run-dir's sockets. */
int test_service_bash_completion(void)
{
	char out[4096], help[8192], run[600], want[1024] = "";
	const char *complete =
		"source completion/tandem; c() { COMP_WORDS=(\"$@\"); COMP_CWORD=$(($# - 1)); _tandem; "
		"echo \"${COMPREPLY[*]}\"; }; ";

	snprintf(run, sizeof(run), "%s/comp-run", test_tmpdir());
	ASSERT_EQ(test_capture(out, sizeof(out), "mkdir -p %s && : > %s/web.primary.sock && "
			       ": > %s/db.backup.sock", run, run, run), 0);
	ASSERT_EQ(test_capture(out, sizeof(out), "bash -c '%s c tandem \"\"'", complete), 0);
	ASSERT_EQ(test_capture(help, sizeof(help), "%s help", test_tandem_bin()), 0);
	for (char *l = strstr(help, "  tandem "); l; l = strstr(l + 1, "\n  tandem ")) {
		char cmd[64];

		if (sscanf(l, " tandem %63s", cmd) == 1)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s",
				 want[0] ? " " : "", cmd);
	}
	out[strcspn(out, "\n")] = '\0';
	if (strcmp(out, want))
		FAILF("completion offers [%s], tandem help lists [%s]", out, want);
	ASSERT_EQ(test_capture(out, sizeof(out), "bash -c '%s c tandem status --j'", complete), 0);
	ASSERT(!strcmp(out, "--json\n"));
	ASSERT_EQ(test_capture(out, sizeof(out), "TANDEM_RUN_DIR=%s bash -c '%s c tandem promote \"\"'",
			       run, complete), 0);
	ASSERT(!strcmp(out, "db web\n"));
	ASSERT_EQ(test_capture(out, sizeof(out), "bash -c '%s c tandem backup --log-level w'", complete), 0);
	ASSERT(!strcmp(out, "warn\n"));
	/* configuration keys after check-config --explain: the schema's, all
	 * of them, asked of the binary being completed */
	{
		size_t n;
		const struct config_key *keys = config_schema(&n);

		want[0] = '\0';
		for (size_t i = 0; i < n; i++)
			snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s",
				 i ? " " : "", keys[i].name);
		ASSERT_EQ(test_capture(out, sizeof(out), "bash -c '%s c %s check-config --explain \"\"'",
				       complete, test_tandem_bin()), 0);
		out[strcspn(out, "\n")] = '\0';
		if (strcmp(out, want))
			FAILF("--explain completes [%s], the schema has [%s]", out, want);
	}
	ASSERT_EQ(test_capture(out, sizeof(out), "bash -c '%s c %s check-config --explain notify-'",
			       complete, test_tandem_bin()), 0);
	ASSERT(!strcmp(out, "notify-timeout\n"));
	ASSERT_EQ(test_capture(out, sizeof(out), "bash -c '%s c tandem check-config --e'", complete), 0);
	ASSERT(!strcmp(out, "--explain\n"));
	/* and what --explain says */
	ASSERT_EQ(test_capture(out, sizeof(out), "%s check-config --explain notify", test_tandem_bin()), 0);
	ASSERT_STR_CONTAINS(out, "not in the configuration digest");
	ASSERT_EQ(test_capture(out, sizeof(out), "%s check-config --explain interval", test_tandem_bin()), 0);
	ASSERT_STR_CONTAINS(out, "default 100ms; 10ms to 10s");
	ASSERT_STR_CONTAINS(out, "Both hosts must give it the same value");
	ASSERT_EQ(test_capture(out, sizeof(out), "%s check-config --explain intervall 2>&1", test_tandem_bin()), 2);
	ASSERT_STR_CONTAINS(out, "did you mean 'interval'");
	return TEST_OK;
}

/*
 * `tandem events --now`: each daemon's current state first, then one line
 * per event: here the primary's host is lost (SIGKILL) and the backup
 * fails over; the stream ends when the last daemon followed stops.
 */
int test_service_events(void)
{
	char cmd[2600], out[16384], run[600], evpath[600];
	const char *cfg = td_config(VM, NULL);
	struct td p, b;
	FILE *f;
	size_t n;
	pid_t ev;

	snprintf(run, sizeof(run), "%s/run", test_tmpdir());
	snprintf(evpath, sizeof(evpath), "%s/events.out", test_tmpdir());
	td_start(&b, "backup", cfg, NULL);
	td_start(&p, "primary", cfg, NULL);
	if (!WAIT_FOR(strstr(td_status(VM, "backup"), "\"state\":\"standby\""), 15000))
		FAILF("no standby");
	ev = fork();
	if (ev == 0) {
		snprintf(cmd, sizeof(cmd), "exec %s events --now --run-dir %s %s > %s 2>&1",
			 test_tandem_bin(), run, VM, evpath);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	usleep(500000);		/* it has connected and printed the present */
	td_kill(&p, SIGKILL);
	if (!WAIT_FOR(strstr(td_status(VM, "backup"), "\"state\":\"active\""), 10000))
		FAILF("the backup did not activate");
	td_stop(&b);
	{
		int st = 0;
		bool gone = WAIT_FOR(waitpid(ev, &st, WNOHANG) == ev, 10000);

		if (!gone) {
			kill(ev, SIGKILL);
			waitpid(ev, &st, 0);
			FAILF("tandem events did not end when the daemons stopped");
		}
		ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
	ASSERT(f = fopen(evpath, "r"));
	n = fread(out, 1, sizeof(out) - 1, f);
	out[n] = '\0';
	fclose(f);
	if (!strstr(out, VM " primary exists state=protecting") ||
	    !strstr(out, VM " backup exists state=standby") ||
	    !strstr(out, VM " backup state activating from=") ||
	    !strstr(out, VM " backup failover checkpoint=") ||
	    !strstr(out, VM " backup decision failover replication=down") ||
	    !strstr(out, VM " backup state active from=activating"))
		FAILF("events: %s", out);
	/* in order: the present, then the failover */
	ASSERT(strstr(out, "exists") < strstr(out, "backup failover"));
	ASSERT(strstr(out, "backup failover") < strstr(out, "state active"));
	ASSERT(out[4] == '-' && strstr(out, "Z " VM));	/* UTC times first */
	return TEST_OK;
}

/*
 * `tandem metrics`: a protecting pair in Prometheus' text format, which
 * `promtool check metrics` (Debian's prometheus) accepts without a word;
 * the series an operator alerts on are there with true values; --textfile
 * writes the same.
 */
int test_service_metrics(void)
{
	static char out[65536], chk[4096];
	char run[600], tf[600];
	const char *cfg = td_config(VM, NULL);
	struct td p, b;
	int rc;

	snprintf(run, sizeof(run), "%s/run", test_tmpdir());
	snprintf(tf, sizeof(tf), "%s/tandem.prom", test_tmpdir());
	ASSERT_EQ(test_capture(chk, sizeof(chk), "command -v promtool"), 0);	/* README installs it */
	td_start(&b, "backup", cfg, NULL);
	td_start(&p, "primary", cfg, NULL);
	if (!WAIT_FOR(td_num(td_status(VM, "primary"), "last_acked_epoch") >= 20, 15000))
		FAILF("not protecting");
	rc = test_capture(out, sizeof(out), "%s metrics --run-dir %s", test_tandem_bin(), run);
	ASSERT_EQ(rc, 0);
	rc = test_capture(chk, sizeof(chk), "%s metrics --run-dir %s | promtool check metrics 2>&1",
			  test_tandem_bin(), run);
	if (rc != 0 || chk[0])
		FAILF("promtool check metrics: exit %d: %s", rc, chk);
	ASSERT(strstr(out, "tandem_up{vm=\"" VM "\",role=\"primary\"} 1"));
	ASSERT(strstr(out, "tandem_state{vm=\"" VM "\",role=\"backup\",state=\"standby\"} 1"));
	ASSERT(strstr(out, "tandem_pause_seconds_bucket{vm=\"" VM "\",role=\"primary\",le=\"+Inf\"}"));
	ASSERT(strstr(out, "tandem_added_latency_seconds_count{vm=\"" VM "\",role=\"primary\"}"));
	ASSERT(strstr(out, "tandem_failovers_total{vm=\"" VM "\",role=\"backup\"} 0"));
	{
		const char *c = strstr(out, "tandem_pause_seconds_count{vm=\"" VM "\",role=\"primary\"} ");
		ASSERT(c && atof(strchr(c, '}') + 2) >= 20);	/* every checkpoint's pause */
	}
	rc = test_capture(chk, sizeof(chk), "%s metrics --run-dir %s --textfile %s && grep -c '^tandem_up' %s",
			  test_tandem_bin(), run, tf, tf);
	ASSERT_EQ(rc, 0);
	ASSERT(atoi(chk) == 2);
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/* `tandem report` after a failover: the decision, the figures, the
 * checkpoint; before one, it says there was none (exit 1). */
int test_service_report(void)
{
	char out[8192], run[600];
	const char *cfg = td_config(VM, NULL);
	struct td p, b;
	int rc;

	snprintf(run, sizeof(run), "%s/run", test_tmpdir());
	td_start(&b, "backup", cfg, NULL);
	td_start(&p, "primary", cfg, NULL);
	if (!WAIT_FOR(strstr(td_status(VM, "backup"), "\"state\":\"standby\""), 15000))
		FAILF("no standby");
	rc = test_capture(out, sizeof(out), "%s report --run-dir %s %s", test_tandem_bin(), run, VM);
	ASSERT_EQ(rc, 1);
	ASSERT(strstr(out, "no failover on this host"));
	td_kill(&p, SIGKILL);
	if (!WAIT_FOR(strstr(td_status(VM, "backup"), "\"state\":\"active\""), 10000))
		FAILF("the backup did not activate");
	rc = test_capture(out, sizeof(out), "%s report --run-dir %s %s", test_tandem_bin(), run, VM);
	if (rc != 0 || !strstr(out, "failover report: " VM) || !strstr(out, "decision: failover") ||
	    !strstr(out, "activated from ") || !strstr(out, "last heard to guest running:"))
		FAILF("report: exit %d: %s", rc, out);
	{
		uint64_t act = 0;
		char want[64];

		td_events(&b, "activated", &act, NULL);
		snprintf(want, sizeof(want), "activated from %llu,", (unsigned long long)act);
		ASSERT(strstr(out, want));
	}
	td_stop(&b);
	return TEST_OK;
}

/* The lines of file (all of it, NUL-ended, in a static buffer). */
static const char *slurp(const char *path)
{
	static char buf[16384];
	FILE *f = fopen(path, "r");
	size_t n = 0;

	buf[0] = '\0';
	if (f) {
		n = fread(buf, 1, sizeof(buf) - 1, f);
		buf[n] = '\0';
		fclose(f);
	}
	return buf;
}

/*
 * The notify hook: a memdom pair whose command appends its arguments (VM
 * ROLE OLD NEW) and TANDEM_REASON to a file; the primary is lost and the
 * backup fails over.  Every transition arrives, in order per daemon.  The
 * command sleeps on the change to syncing: notify-timeout kills it (logged)
 * and neither daemon waited for it.
 */
int test_service_notify_hook(void)
{
	char extra[1400], hook[700], out[700];
	const char *cfg, *got;
	struct td p, b;
	uint64_t t0;

	snprintf(out, sizeof(out), "%s/hook.out", test_tmpdir());
	snprintf(hook, sizeof(hook), "%s", test_write_file("hook.sh",
		 "#!/bin/sh\n"
		 "[ \"$4\" = syncing ] && sleep 30\n"
		 "echo \"$1 $2 $3 $4 reason=$TANDEM_REASON env=$TANDEM_VM/$TANDEM_ROLE/$TANDEM_OLD_STATE/$TANDEM_NEW_STATE\" >> \"$HOOK_OUT\"\n"));
	test_sh("chmod 755 %s", hook);
	setenv("HOOK_OUT", out, 1);
	snprintf(extra, sizeof(extra), "notify = %s\nnotify-timeout = 500ms", hook);
	cfg = td_config(VM, extra);
	t0 = test_now_ms();
	td_start(&b, "backup", cfg, NULL);
	td_start(&p, "primary", cfg, NULL);
	if (!WAIT_FOR(strstr(td_status(VM, "backup"), "\"state\":\"standby\""), 15000))
		FAILF("no standby");
	/* The daemons went on while the syncing hooks slept (killed at 0.5 s). */
	if (!WAIT_FOR(td_log_has(&b, "notify hook for waiting -> syncing killed after") &&
		      td_log_has(&p, "notify hook for connecting -> syncing killed after"), 5000))
		FAILF("no hook was killed at notify-timeout");
	/* the primary's next hook (syncing -> protecting) runs once the killed
	 * one is gone: let it write before the primary is killed with its hooks */
	if (!WAIT_FOR(strstr(slurp(out), VM " primary syncing protecting "), 5000))
		FAILF("the primary's protecting hook did not run: %s", slurp(out));
	td_kill(&p, SIGKILL);
	if (!WAIT_FOR(strstr(td_status(VM, "backup"), "\"state\":\"active\""), 10000))
		FAILF("the backup did not activate");
	if (!WAIT_FOR(strstr(slurp(out), VM " backup activating active"), 5000))
		FAILF("hook output: %s", slurp(out));
	td_stop(&b);
	got = slurp(out);
	printf("  hook saw:\n%s", got);
	{
		const char *want_b[] = { VM " backup syncing standby reason=standby holds checkpoint",
					 VM " backup standby activating reason=activating from checkpoint",
					 VM " backup activating active reason=guest running from checkpoint" };
		const char *want_p[] = { VM " primary starting connecting reason=connecting to the backup",
					 VM " primary syncing protecting " };
		const char *at_b = got, *at_p = got;

		for (size_t i = 0; i < sizeof(want_b) / sizeof(want_b[0]); i++) {
			const char *q = strstr(at_b, want_b[i]);
			if (!q)
				FAILF("hook: no '%s' after the earlier changes in:\n%s", want_b[i], got);
			at_b = q + 1;
		}
		for (size_t i = 0; i < sizeof(want_p) / sizeof(want_p[0]); i++) {
			const char *q = strstr(at_p, want_p[i]);
			if (!q)
				FAILF("hook: no '%s' after the earlier changes in:\n%s", want_p[i], got);
			at_p = q + 1;
		}
	}
	ASSERT_STR_CONTAINS(got, "env=" VM "/backup/standby/activating");
	ASSERT(!strstr(got, " syncing reason="));	/* those were killed before they wrote */
	ASSERT(td_log_has(&b, "notify hook for standby -> activating exited 0"));
	ASSERT(test_now_ms() - t0 < 25000);	/* nobody waited for the 30 s sleeps */
	unsetenv("HOOK_OUT");
	return TEST_OK;
}
