/*
 * test_ocf.c - the Pacemaker resource agent ocf:tandem:vm (ocf/vm) against
 * memdom daemons on loopback: Debian's ocf-tester (resource-agents), and
 * the promotable cycle of a two-node cluster driven action by action.
 *
 * The two "nodes" are two run-dirs on this machine with the same VM and
 * replication address: node A, the guest's home (guest_check=true), runs
 * the primary once promoted; node B runs the backup.  Every daemon the
 * agent starts is recorded in its run-dir (NAME.ROLE.ocf-pid) and killed
 * by that PID when the test ends, whatever happened.
 */
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/key.h"
#include "daemon.h"
#include "test.h"

#define VM "hv1"

static char agent[PATH_MAX], bin[PATH_MAX];
static char node_dir[2][600];	/* run-dirs of node A and node B */

/* Kill what the agent started and left running (by its recorded PID). */
static void ocf_cleanup(void)
{
	static const char *roles[] = { "primary", "backup" };

	for (int n = 0; n < 2; n++)
		for (int r = 0; r < 2; r++) {
			char path[1400];
			FILE *f;
			int pid = 0;

			if (!node_dir[n][0])
				continue;
			snprintf(path, sizeof(path), "%s/%s.%s.ocf-pid", node_dir[n], VM, roles[r]);
			if (!(f = fopen(path, "r")))
				continue;
			if (fscanf(f, "%d", &pid) == 1 && pid > 1)
				kill(pid, SIGKILL);
			fclose(f);
		}
}

/*
 * Write node A's and node B's configurations (memdom on loopback, a port
 * of this test's own, on-peer-loss = manual as under Pacemaker), and one
 * wrapper per node that runs the agent with that node's parameters:
 * NODE ACTION [VAR=VALUE ...].
 */
static void ocf_setup(void)
{
	const char *t = test_tmpdir();
	char key[600], err[256], text[16384], out[256];
	int port = 21000 + (int)(getpid() % 19000);

	ASSERT(realpath("ocf/vm", agent));
	ASSERT(realpath(test_tandem_bin(), bin));
	snprintf(key, sizeof(key), "%s/key", t);
	if (access(key, F_OK) != 0 && key_generate(key, err, sizeof(err)))
		FAILF("keygen: %s", err);
	for (int n = 0; n < 2; n++) {
		char name[32];

		snprintf(node_dir[n], sizeof(node_dir[n]), "%s/run%c", t, 'A' + n);
		snprintf(text, sizeof(text),
			 "name = " VM "\ndomain = memdom\nreplication = 127.0.0.1:%d\nkey-file = %s\n"
			 "run-dir = %s\nstate-dir = %s\ninterval = 20ms\ntimeout = 1s\n"
			 "heartbeat-interval = 50ms\n"
			 "memory = 8M\nworkload-rate = 20000\nworkload-pattern = hotset\nhotset = 2M\n"
			 "netbuf = none\nallow-unsafe-no-buffering = yes\non-peer-loss = manual\n",
			 port, key, node_dir[n], node_dir[n]);
		snprintf(name, sizeof(name), "node%c.cfg", 'A' + n);
		test_write_file(name, text);
		/* A fake crm_attribute records the promotion scores the agent sets. */
		snprintf(text, sizeof(text),
			 "#!/bin/sh\n"
			 "export OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE=" VM "\n"
			 "export OCF_RESKEY_config=%s/node%c.cfg OCF_RESKEY_tandem=%s\n"
			 "export OCF_RESKEY_logfile=%s/node%c.log OCF_RESKEY_guest_check=%s\n"
			 "export OCF_RESKEY_CRM_meta_clone=%d OCF_RESKEY_CRM_meta_timeout=20000\n"
			 "export OCF_RESKEY_CRM_meta_interval=11000\n"
			 "export HA_SBIN_DIR=%s/fakebin PATH=%s/fakebin:$PATH SCORES=%s/node%c.scores\n"
			 "a=$1; shift; for v; do export \"$v\"; done\n"
			 "exec %s \"$a\"\n",
			 t, 'A' + n, bin, t, 'A' + n, n == 0 ? "true" : "false", n, t, t, t, 'A' + n,
			 agent);
		snprintf(name, sizeof(name), "node%c", 'A' + n);
		test_write_file(name, text);
	}
	test_sh("mkdir -p %s/fakebin", t);
	test_write_file("fakebin/crm_attribute", "#!/bin/sh\necho \"$*\" >> \"$SCORES\"\n");
	ASSERT_EQ(test_capture(out, sizeof(out), "chmod 755 %s/nodeA %s/nodeB %s/fakebin/crm_attribute",
			       t, t, t), 0);
	atexit(ocf_cleanup);
}

/* Run ACTION on node n (0 = A, 1 = B); its output (stdout and stderr) in out. */
static int ra(int n, const char *action, char *out, size_t len)
{
	return test_capture(out, len, "%s/node%c %s 2>&1", test_tmpdir(), 'A' + n, action);
}

/* The last promotion score node n's agent set ("" none, "-D" deleted). */
static const char *last_score(int n, char *buf, size_t len)
{
	char out[256];

	buf[0] = '\0';
	if (test_capture(out, sizeof(out), "tail -n 1 %s/node%c.scores 2>/dev/null", test_tmpdir(),
			 'A' + n) == 0)
		snprintf(buf, len, "%.*s", (int)strcspn(out, "\n"), out);
	return buf;
}

static const char *state_of(int n, const char *role, char *buf, size_t len)
{
	char out[8192];

	test_capture(out, sizeof(out), "%s status --json --run-dir %s " VM " 2>/dev/null", bin,
		     node_dir[n]);
	buf[0] = '\0';
	for (char *l = strtok(out, "\n"); l; l = strtok(NULL, "\n")) {
		char r[32];

		if (!strcmp(td_str(l, "role", r, sizeof(r)), role))
			return td_str(l, "state", buf, len);
	}
	return buf;
}

#define ASSERT_RA(n, action, want) do { \
	char o_[4096]; \
	int r_ = ra((n), (action), o_, sizeof(o_)); \
	if (r_ != (want)) \
		FAILF("node %c %s: exit %d, expected %d: %s", 'A' + (n), (action), r_, (want), o_); \
	} while (0)

/*
 * Debian's ocf-tester against node A's instance (the guest's home), with
 * node B's backup started first by the agent so that the first promote
 * really protects: meta-data against ra-api-1.dtd, validate-all, probes,
 * start/stop twice, demote/promote cycles, notify.  It must end with
 * "passed all tests".
 */
int test_ocf_tester(void)
{
	static char out[65536];
	char st[64], cmd[16384];
	int rc;

	ASSERT_EQ(test_capture(out, sizeof(out), "command -v ocf-tester"), 0);	/* README installs it */
	ocf_setup();
	ASSERT_RA(1, "start", 0);
	snprintf(cmd, sizeof(cmd),
		 "ocf-tester -n " VM " -o config=%s/nodeA.cfg -o tandem=%s -o guest_check=true "
		 "-o logfile=%s/nodeA.log %s 2>&1", test_tmpdir(), bin, test_tmpdir(), agent);
	rc = test_capture(out, sizeof(out), "%s", cmd);
	printf("  ocf-tester: %s\n", strstr(out, "passed all tests") ? "passed all tests" : "FAILED");
	if (rc != 0 || !strstr(out, "passed all tests"))
		FAILF("ocf-tester: exit %d:\n%s", rc, out);
	/* It left nothing running on node A; node B's backup exited when the
	 * first demote stopped the primary cleanly (it discards its standby). */
	ASSERT(!state_of(0, "primary", st, sizeof(st))[0]);
	ASSERT_RA(0, "monitor", 7);
	ASSERT_RA(1, "stop", 0);
	ASSERT_RA(1, "monitor", 7);
	return TEST_OK;
}

/*
 * The promotable cycle of a two-node cluster, with the exit codes and
 * states Pacemaker would see:
 *   B start -> 0 (backup waiting), promote refused (no committed checkpoint);
 *   A start -> 0 (home, score 100), promote -> primary, monitor 8;
 *   B standby with a committed checkpoint -> monitor 0, score 10; promote
 *     refused by tandem while the primary is connected;
 *   A's host lost (the primary SIGKILLed), as after fencing: B manual ->
 *     promote -> monitor 8, the backup active; A monitor 9 (failed promoted);
 *   B demote refused (an activated guest is no standby again); stops.
 */
int test_ocf_promotable_cycle(void)
{
	char out[4096], st[64], sc[128];
	int pid = 0;
	FILE *f;

	ocf_setup();
	ASSERT_RA(1, "validate-all", 0);
	ASSERT_RA(1, "monitor OCF_RESKEY_CRM_meta_interval=0", 7);	/* the probe */
	ASSERT_RA(1, "monitor", 7);
	ASSERT_RA(1, "start", 0);
	ASSERT_RA(1, "monitor", 0);
	ASSERT(!strcmp(state_of(1, "backup", st, sizeof(st)), "waiting"));
	ASSERT_EQ(ra(1, "promote", out, sizeof(out)), 1);
	ASSERT_STR_CONTAINS(out, "holds no committed checkpoint");
	ASSERT(!strcmp(state_of(1, "backup", st, sizeof(st)), "waiting"));	/* untouched */

	ASSERT_RA(0, "monitor", 7);
	ASSERT_RA(0, "start", 0);
	ASSERT_RA(0, "monitor", 0);
	ASSERT(!strcmp(last_score(0, sc, sizeof(sc)), "-p -v 100"));
	ASSERT(!state_of(0, "primary", st, sizeof(st))[0]);	/* nothing runs before promote */
	ASSERT_RA(0, "promote", 0);
	ASSERT_RA(0, "monitor", 8);
	if (!WAIT_FOR(!strcmp(state_of(0, "primary", st, sizeof(st)), "protecting") &&
		      !strcmp(state_of(1, "backup", st, sizeof(st)), "standby"), 20000))
		FAILF("no protection: primary %s", state_of(0, "primary", st, sizeof(st)));
	ASSERT_RA(1, "monitor", 0);
	ASSERT(!strcmp(last_score(1, sc, sizeof(sc)), "-p -v 10"));
	ASSERT_EQ(ra(1, "promote", out, sizeof(out)), 1);	/* the primary is connected */
	ASSERT_STR_CONTAINS(out, "connected and protecting");
	ASSERT(!strcmp(state_of(1, "backup", st, sizeof(st)), "standby"));
	ASSERT_RA(0, "monitor", 8);
	ASSERT_RA(0, "promote", 0);	/* promoting a promoted instance: nothing */

	/* Node A is lost (as if fenced): its primary and its memdom guest die. */
	{
		char path[1400];

		snprintf(path, sizeof(path), "%s/" VM ".primary.ocf-pid", node_dir[0]);
		ASSERT(f = fopen(path, "r"));
		ASSERT(fscanf(f, "%d", &pid) == 1 && pid > 1);
		fclose(f);
		kill(pid, SIGKILL);
	}
	if (!WAIT_FOR(!strcmp(state_of(1, "backup", st, sizeof(st)), "manual"), 10000))
		FAILF("backup: %s, expected manual", st);
	ASSERT_RA(1, "monitor", 0);	/* a standby waiting to be promoted */
	ASSERT_RA(1, "promote", 0);
	ASSERT(!strcmp(state_of(1, "backup", st, sizeof(st)), "active"));
	ASSERT_RA(1, "monitor", 8);
	ASSERT_RA(1, "promote", 0);
	ASSERT_RA(0, "monitor", 9);	/* A's promoted instance failed */

	ASSERT_EQ(ra(1, "demote", out, sizeof(out)), 1);
	ASSERT_STR_CONTAINS(out, "cannot go back to being a standby");
	ASSERT_RA(1, "monitor", 8);
	ASSERT_RA(1, "stop", 0);
	ASSERT_RA(1, "monitor", 7);
	ASSERT_RA(1, "stop", 0);
	ASSERT_RA(0, "demote", 0);
	ASSERT_RA(0, "stop", 0);
	ASSERT_RA(0, "monitor", 7);
	return TEST_OK;
}

/*
 * What validate-all refuses: a missing configuration (5), one tandem
 * rejects (6), on-peer-loss = failover (6: tandem would activate behind
 * the cluster's back), a name that is not the configuration's (6).
 */
int test_ocf_validate(void)
{
	char out[4096];

	ocf_setup();
	ASSERT_EQ(ra(0, "validate-all OCF_RESKEY_config=/nonexistent.cfg", out, sizeof(out)), 5);
	test_write_file("bad.cfg", "name = x\ninterval = soon\n");
	{
		char p[700];

		snprintf(p, sizeof(p), "validate-all OCF_RESKEY_config=%s/bad.cfg", test_tmpdir());
		ASSERT_EQ(ra(0, p, out, sizeof(out)), 6);
		test_sh("sed 's/^on-peer-loss = manual/on-peer-loss = failover/' %s/nodeA.cfg > %s/fo.cfg",
			test_tmpdir(), test_tmpdir());
		snprintf(p, sizeof(p), "validate-all OCF_RESKEY_config=%s/fo.cfg", test_tmpdir());
		ASSERT_EQ(ra(0, p, out, sizeof(out)), 6);
		ASSERT_STR_CONTAINS(out, "on-peer-loss = failover");
	}
	ASSERT_EQ(ra(0, "validate-all OCF_RESKEY_name=other", out, sizeof(out)), 6);
	ASSERT_RA(0, "validate-all", 0);
	ASSERT_EQ(test_capture(out, sizeof(out), "%s meta-data | xmllint --noout "
			       "--dtdvalid /usr/share/resource-agents/ra-api-1.dtd - 2>&1", agent), 0);
	return TEST_OK;
}
