/*
 * test_reprotect.c - one configuration for both hosts, and re-protection
 * after a failover (docs/operations.md, "After a failover").
 *
 * Two "hosts" on one machine: alpha and beta share one file with `hosts`
 * (both on loopback, so each daemon is told which it is with
 * --this-host), each with its own run-dir (`run-dir = .../run-%h`), one
 * heartbeat path besides the link.  The invariants are the engine tests'
 * (tests/test_engine.c): the activated guest equals, by hash, the
 * checkpoint the primary captured, and no acknowledged checkpoint is lost;
 * after re-protection the new standby equals, by hash, the checkpoint the
 * new primary captured.
 */
#include <inttypes.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "test.h"

#define VM "vm1"

static char run_alpha[600], run_beta[600];

static const char *two_host_config(const char *extra)
{
	int port = 20000 + (int)(getpid() % 20000);
	char text[2048];

	snprintf(run_alpha, sizeof(run_alpha), "%s/run-alpha", test_tmpdir());
	snprintf(run_beta, sizeof(run_beta), "%s/run-beta", test_tmpdir());
	td_config(VM, NULL);	/* the key file */
	snprintf(text, sizeof(text),
		 "name = %s\ndomain = memdom\n"
		 "hosts = alpha 127.0.0.1:%d, beta 127.0.0.1:%d\n"
		 "heartbeat-paths = 127.0.0.1:%d-127.0.0.1:%d\n"
		 "key-file = %s/key\nrun-dir = %s/run-%%h\nstate-dir = %s/state-%%h\n"
		 "interval = 20ms\ntimeout = 1s\nheartbeat-interval = 50ms\n"
		 "memory = 8M\nworkload-rate = 20000\nworkload-pattern = hotset\nhotset = 2M\n"
		 "netbuf = none\nallow-unsafe-no-buffering = yes\n%s",
		 VM, port, port + 10, port + 1, port + 11, test_tmpdir(), test_tmpdir(), test_tmpdir(),
		 extra ? extra : "");
	return test_write_file("two.cfg", text);
}

static const char *st(const char *host, const char *role)
{
	return td_status_at(!strcmp(host, "alpha") ? run_alpha : run_beta, VM, role);
}

static bool state_is(const char *host, const char *role, const char *state)
{
	char buf[64];

	return !strcmp(td_str(st(host, role), "state", buf, sizeof(buf)), state);
}

static void fail_dump(struct td *a, struct td *b, const char *what)
{
	if (a)
		td_dump(a);
	if (b)
		td_dump(b);
	FAILF("%s", what);
}

/*
 * beta's backup (fault point bfault, or NULL), then alpha's primary
 * (log tag atag), which protects the guest to it: `acks` acknowledged
 * checkpoints.
 */
static void alpha_protects_to_beta(const char *cfg, struct td *a, struct td *b,
				   const char *bfault, const char *atag, int acks)
{
	td_start_host(b, "backup", cfg, bfault, "beta", "beta");
	if (!WAIT_FOR(state_is("beta", "backup", "waiting"), 15000))
		fail_dump(NULL, b, "beta's backup did not come up");
	td_start_host(a, "primary", cfg, NULL, "alpha", atag);
	if (!WAIT_FOR(td_num(st("alpha", "primary"), "last_acked_epoch") >= acks, 15000))
		fail_dump(a, b, "alpha did not protect the guest to beta");
}

/*
 * `to` activated after `from`, its primary, was killed: the guest runs
 * from checkpoint N, which equals by hash what `from` captured as N, and
 * `from` never saw an ack beyond N.  Returns N.
 */
static uint64_t check_activated(struct td *from, struct td *to, const char *host)
{
	char act_hash[65] = "", ckpt_hash[65];
	uint64_t act = 0;

	if (!WAIT_FOR(state_is(host, "backup", "active"), 10000))
		fail_dump(from, to, "the backup did not activate");
	ASSERT_EQ(td_events(to, "activated", &act, act_hash), 1);
	if (!td_ckpt_hash(from, act, ckpt_hash))
		fail_dump(from, to, "the primary has no hash for the activated checkpoint");
	if (strcmp(act_hash, ckpt_hash))
		FAILF("activated guest differs from checkpoint %" PRIu64 ": %s vs %s", act, act_hash,
		      ckpt_hash);
	if (td_max_ack(from) > act)
		FAILF("acknowledged checkpoint %" PRIu64 " lost: activated %" PRIu64, td_max_ack(from),
		      act);
	return act;
}

/*
 * alpha protects the guest to beta; alpha is killed; beta activates.  A
 * primary started again on alpha is stale (generation 0 against beta's 1)
 * and refuses (exit 3); a backup started on alpha instead is found by
 * beta, which becomes its primary: an initial copy, then checkpoints, and
 * the standby on alpha equals by hash what beta captured.  Then beta is
 * killed, and alpha activates from the last checkpoint beta had
 * acknowledged.
 */
int test_reprotect_after_failover(void)
{
	const char *cfg = two_host_config(NULL);
	struct td a1, b, astale, a2;
	char buf[600], hash[65], ckpt_hash[65];
	uint64_t n = 0, act;
	int commits;

	/* 1. alpha primary, beta backup */
	alpha_protects_to_beta(cfg, &a1, &b, NULL, "alpha1", 15);

	/* 2. alpha dies: beta runs the guest, generation 1, unprotected */
	td_kill(&a1, SIGKILL);
	check_activated(&a1, &b, "beta");
	ASSERT_EQ(td_num(st("beta", "backup"), "generation"), 1);
	ASSERT(WAIT_FOR(strstr(td_str(st("beta", "backup"), "reprotect", buf, sizeof(buf)),
			       "looking for a backup on alpha"), 5000));

	/* 3. the old primary's host returns as a primary: stale, refused */
	td_start_host(&astale, "primary", cfg, NULL, "alpha", "alpha-stale");
	if (!WAIT_FOR(td_exited(&astale), 15000))
		fail_dump(&astale, &b, "the stale primary on alpha did not stop");
	ASSERT(WIFEXITED(astale.status) && WEXITSTATUS(astale.status) == 3);
	ASSERT(td_log_has(&astale, "STALE: protection generation 0 here, 1 on the other host"));
	ASSERT(td_log_has(&astale, "Run `tandem backup` here instead"));
	ASSERT_EQ(td_events(&astale, "ack", NULL, NULL), 0);
	ASSERT(state_is("beta", "backup", "active"));

	/* 4. it returns as a backup: beta re-protects to it */
	td_start_host(&a2, "backup", cfg, NULL, "alpha", "alpha2");
	if (!WAIT_FOR(state_is("beta", "primary", "protecting") &&
		      td_num(st("beta", "primary"), "last_acked_epoch") >= 15, 20000))
		fail_dump(&b, &a2, "beta did not re-protect the guest to alpha");
	ASSERT(td_log_has(&b, "re-protection: a backup of vm1 answers on alpha"));
	ASSERT(td_log_has(&b, "re-protected: protection is back: checkpoint"));
	ASSERT(state_is("alpha", "backup", "standby"));
	ASSERT_EQ(td_num(st("alpha", "backup"), "generation"), 1);
	ASSERT_EQ(td_events(&b, "reprotect", NULL, NULL), 1);
	ASSERT_EQ(td_num(st("beta", "primary"), "generation"), 1);
	ASSERT_STR_CONTAINS(st("beta", "primary"), "\"reprotected\":true");

	/* the new standby equals, by hash, what beta captured */
	commits = td_events(&a2, "commit", &n, hash);
	ASSERT(commits >= 15 && strlen(hash) == 64);
	if (!td_ckpt_hash(&b, n, ckpt_hash))
		fail_dump(&b, &a2, "beta has no hash for alpha's last commit");
	if (strcmp(hash, ckpt_hash))
		FAILF("alpha's standby differs from beta's checkpoint %" PRIu64 ": %s vs %s", n, hash,
		      ckpt_hash);
	printf("  re-protected: alpha's standby at checkpoint %" PRIu64 " = beta's capture %.16s...\n",
	       n, hash);

	/* 5. a second failover, back to alpha */
	td_kill(&b, SIGKILL);
	act = check_activated(&b, &a2, "alpha");
	ASSERT(act >= n);
	ASSERT_EQ(td_num(st("alpha", "backup"), "generation"), 2);
	printf("  second failover: alpha runs the guest from beta's checkpoint %" PRIu64
	       ", generation 2\n", act);
	td_stop(&a2);
	return TEST_OK;
}

/*
 * reprotect = manual: the active host waits for `tandem reprotect NAME`,
 * then re-protects.  A file that names one direction only refuses
 * re-protection with what to change.
 */
int test_reprotect_manual_and_old_file(void)
{
	const char *cfg = two_host_config("reprotect = manual\n");
	struct td a1, b, a2;
	char buf[600], out[2048];

	alpha_protects_to_beta(cfg, &a1, &b, NULL, "alpha1", 5);
	/* before a failover there is nothing to re-protect */
	ASSERT_EQ(test_capture(out, sizeof(out), "%s reprotect --run-dir %s " VM " 2>&1",
			       test_tandem_bin(), run_beta), 1);
	ASSERT_STR_CONTAINS(out, "refused: vm1 is not running here");
	td_kill(&a1, SIGKILL);
	if (!WAIT_FOR(state_is("beta", "backup", "active"), 10000))
		fail_dump(&a1, &b, "beta did not activate");
	td_start_host(&a2, "backup", cfg, NULL, "alpha", "alpha2");
	if (!WAIT_FOR(state_is("alpha", "backup", "waiting"), 15000))
		fail_dump(&b, &a2, "alpha's backup did not come up");
	ASSERT_STR_CONTAINS(td_str(st("beta", "backup"), "reprotect", buf, sizeof(buf)),
			    "waiting for `tandem reprotect vm1` (reprotect = manual)");
	/* it waits: nothing looks for alpha, beta stays active */
	ASSERT(!td_log_has(&b, "re-protection: a backup"));
	ASSERT(state_is("beta", "backup", "active"));
	ASSERT_EQ(test_capture(out, sizeof(out), "%s reprotect --run-dir %s " VM " 2>&1",
			       test_tandem_bin(), run_beta), 0);
	ASSERT_STR_CONTAINS(out, "ok: looking for a backup of vm1 on alpha");
	if (!WAIT_FOR(state_is("beta", "primary", "protecting") &&
		      td_num(st("beta", "primary"), "last_acked_epoch") >= 5, 20000))
		fail_dump(&b, &a2, "beta did not re-protect after `tandem reprotect`");
	td_stop(&b);
	td_stop(&a2);

	/* an old single-direction file: refused, saying how to convert it */
	{
		const char *old = td_config(VM, NULL);
		struct td p, q;

		td_start(&q, "backup", old, NULL);
		if (!WAIT_FOR(!strcmp(td_str(td_status(VM, "backup"), "state", buf, sizeof(buf)),
				      "waiting"), 15000))
			fail_dump(NULL, &q, "backup did not come up");
		td_start(&p, "primary", old, NULL);
		if (!WAIT_FOR(td_num(td_status(VM, "primary"), "last_acked_epoch") >= 5, 15000))
			fail_dump(&p, &q, "the old-style pair did not protect");
		td_kill(&p, SIGKILL);
		if (!WAIT_FOR(!strcmp(td_str(td_status(VM, "backup"), "state", buf, sizeof(buf)),
				      "active"), 10000))
			fail_dump(&p, &q, "backup did not activate");
		ASSERT_STR_CONTAINS(td_str(td_status(VM, "backup"), "reprotect", buf, sizeof(buf)),
				    "not possible: the configuration names one direction only");
		snprintf(out, sizeof(out), "%s/run", test_tmpdir());
		ASSERT_EQ(test_capture(out, sizeof(out), "%s reprotect --run-dir %s/run " VM " 2>&1",
				       test_tandem_bin(), test_tmpdir()), 1);
		ASSERT_STR_CONTAINS(out, "re-protection needs hosts = NAME ADDR:PORT");
		td_stop(&q);
	}
	return TEST_OK;
}

/* Run `tandem switchover` on host's run-dir; its blackout in ms (-1: failed). */
static double switchover(const char *host, struct td *a, struct td *b)
{
	char out[2048];
	const char *at;
	int rc;

	rc = test_capture(out, sizeof(out), "%s switchover --run-dir %s " VM " 2>&1",
			  test_tandem_bin(), !strcmp(host, "alpha") ? run_alpha : run_beta);
	printf("  %s: %s", host, out);
	if (rc != 0 || !(at = strstr(out, "blackout ")))
		fail_dump(a, b, "the switchover failed");
	return strtod(at + strlen("blackout "), NULL);
}

/*
 * A planned switchover, both ways: alpha's guest moves to beta with
 * nothing acknowledged lost (beta runs exactly alpha's last checkpoint,
 * which alpha had acknowledged), alpha becomes the backup in the same
 * process, beta re-protects to it (standby equal by hash), and back.
 */
int test_reprotect_switchover_both_ways(void)
{
	const char *cfg = two_host_config(NULL);
	struct td a, b;
	char hash[65], ckpt_hash[65], out[1024];
	uint64_t act = 0, n = 0;
	double ms1, ms2;

	alpha_protects_to_beta(cfg, &a, &b, NULL, "alpha", 10);
	/* only a primary switches over */
	ASSERT_EQ(test_capture(out, sizeof(out), "%s switchover --run-dir %s " VM " 2>&1",
			       test_tandem_bin(), run_beta), 5);

	/* alpha -> beta */
	ms1 = switchover("alpha", &a, &b);
	ASSERT_EQ(td_events(&b, "activated", &act, hash), 1);
	ASSERT_EQ(act, td_max_ack(&a));		/* its last checkpoint, acknowledged */
	ASSERT(td_ckpt_hash(&a, act, ckpt_hash));
	if (strcmp(hash, ckpt_hash))
		FAILF("beta's guest differs from alpha's checkpoint %" PRIu64, act);
	ASSERT_EQ(td_events(&a, "switchover", NULL, NULL), 1);
	/* alpha, now the backup in the same process, is re-protected to */
	if (!WAIT_FOR(state_is("beta", "primary", "protecting") &&
		      td_num(st("beta", "primary"), "last_acked_epoch") >= 10 &&
		      state_is("alpha", "backup", "standby"), 20000))
		fail_dump(&a, &b, "beta did not re-protect the guest to alpha after the switchover");
	ASSERT(!td_exited(&a) && !td_exited(&b));
	ASSERT_STR_CONTAINS(st("alpha", "backup"), "\"switchover\":\"done: the guest runs on beta");
	ASSERT(td_events(&a, "commit", &n, hash) >= 10);
	ASSERT(td_ckpt_hash(&b, n, ckpt_hash));
	if (strcmp(hash, ckpt_hash))
		FAILF("alpha's standby differs from beta's checkpoint %" PRIu64, n);

	/* beta -> alpha */
	ms2 = switchover("beta", &b, &a);
	ASSERT_EQ(td_events(&a, "activated", &act, hash), 1);
	ASSERT_EQ(act, td_max_ack(&b));
	ASSERT(td_ckpt_hash(&b, act, ckpt_hash));
	if (strcmp(hash, ckpt_hash))
		FAILF("alpha's guest differs from beta's checkpoint %" PRIu64, act);
	if (!WAIT_FOR(state_is("alpha", "primary", "protecting") &&
		      td_num(st("alpha", "primary"), "last_acked_epoch") >= 10 &&
		      state_is("beta", "backup", "standby"), 20000))
		fail_dump(&a, &b, "alpha did not re-protect the guest to beta after switching back");
	ASSERT_EQ(td_num(st("alpha", "primary"), "generation"), 2);
	printf("  blackout: alpha->beta %.1f ms, beta->alpha %.1f ms (interval 20 ms, loopback)\n",
	       ms1, ms2);
	td_stop(&a);
	td_stop(&b);
	return TEST_OK;
}

/*
 * A switchover killed half-way: the backup dies the moment it reads the
 * FAILOVER (fault point backup-on-switchover), before it activates.  The
 * primary never resumes its paused guest on its own (the backup might run
 * it); `tandem switchover` says FAILED half-way.  When the backup comes
 * back with no standby and no newer generation (it cannot have activated),
 * the guest resumes on alpha and is protected again.  The guest ran on one
 * host only throughout: beta never activated.
 */
int test_reprotect_switchover_killed_half_way(void)
{
	const char *cfg = two_host_config(NULL);
	struct td a, b, b2;
	char out[2048], buf[600];
	uint64_t acked;

	alpha_protects_to_beta(cfg, &a, &b, "backup-on-switchover", "alpha", 10);
	ASSERT_EQ(test_capture(out, sizeof(out), "%s switchover --run-dir %s " VM " 2>&1",
			       test_tandem_bin(), run_alpha), 1);
	printf("  %s", out);
	ASSERT_STR_CONTAINS(out, "FAILED half-way");
	ASSERT(WAIT_FOR(td_exited(&b), 5000));
	ASSERT(WIFSIGNALED(b.status));
	ASSERT_EQ(td_events(&b, "activated", NULL, NULL), 0);
	/* paused here, and it stays paused while nobody answers */
	ASSERT_STR_CONTAINS(td_str(st("alpha", "primary"), "guest", buf, sizeof(buf)), "suspended");
	acked = td_max_ack(&a);
	ASSERT(!WAIT_FOR(!strstr(td_str(st("alpha", "primary"), "guest", buf, sizeof(buf)),
				 "suspended"), 1500));

	/* beta comes back without a standby: alpha resumes and protects to it */
	td_start_host(&b2, "backup", cfg, NULL, "beta", "beta2");
	if (!WAIT_FOR(strstr(td_str(st("alpha", "primary"), "switchover", buf, sizeof(buf)),
			     "failed: the backup on beta restarted before it activated") &&
		      state_is("alpha", "primary", "protecting") &&
		      td_max_ack(&a) >= acked + 5 && state_is("beta", "backup", "standby"), 20000))
		fail_dump(&a, &b2, "alpha did not resume and re-protect after the half-way switchover");
	ASSERT_EQ(td_events(&a, "switchover-resumed", NULL, NULL), 1);
	ASSERT_EQ(td_events(&b2, "activated", NULL, NULL), 0);
	td_stop(&a);
	td_stop(&b2);
	return TEST_OK;
}

/*
 * Re-protection with a disk (memdom's stand-in, one file both "hosts"
 * share): the active host becomes primary with its disk, and the
 * returning host's backup is told its copy may have diverged (the
 * primary's generation is newer than its own), before anything commits;
 * then checkpoints commit with their disk's cut, and the disk's status
 * says so.  The DRBD form of the same (invalidate, resync, verify) runs
 * in disk_failover_vm61.
 */
int test_reprotect_with_disk(void)
{
	char extra[700], path[600], buf[600];
	const char *cfg;
	struct td a1, b, a2;
	FILE *f;

	snprintf(path, sizeof(path), "%s/memdisk.img", test_tmpdir());
	f = fopen(path, "w");
	if (!f || ftruncate(fileno(f), 1 << 20))
		FAILF("cannot make %s", path);
	fclose(f);
	snprintf(extra, sizeof(extra), "memdom-disk = %s\n", path);
	cfg = two_host_config(extra);

	alpha_protects_to_beta(cfg, &a1, &b, NULL, "alpha1", 15);
	ASSERT(!td_log_has(&b, "may have diverged") && !td_log_has(&b, "nothing to resync"));

	td_kill(&a1, SIGKILL);
	check_activated(&a1, &b, "beta");
	td_start_host(&a2, "backup", cfg, NULL, "alpha", "alpha2");
	if (!WAIT_FOR(state_is("beta", "primary", "protecting") &&
		      td_num(st("beta", "primary"), "last_acked_epoch") >= 15, 20000))
		fail_dump(&b, &a2, "beta did not re-protect the guest and its disk to alpha");
	if (!td_grep(&a2, "the primary's protection generation 1 is newer than this host's 0",
		     buf, sizeof(buf)))
		fail_dump(&b, &a2, "alpha's backup was not told its disk may have diverged");
	ASSERT_STR_CONTAINS(st("alpha", "backup"), "\"diverged\":1");
	/* its disk commits again: the cut of a checkpoint after the hand-over */
	if (!WAIT_FOR(td_num(st("alpha", "backup"), "last_acked_epoch") >= 15, 10000))
		fail_dump(&b, &a2, "alpha's standby commits nothing");
	ASSERT(strstr(st("alpha", "backup"), "\"kind\":\"memdisk\""));
	ASSERT(!strstr(st("alpha", "backup"), "\"committed\":0,"));
	printf("  re-protected with its disk; alpha's backup: the primary's protection generation 1 "
	       "is newer than this host's 0%s\n", buf);
	td_stop(&b);
	td_stop(&a2);
	return TEST_OK;
}

/*
 * The generation survives a reboot (state-dir, not the run-dir's tmpfs):
 * beta activates (generation 1), then both hosts "reboot" (daemons killed,
 * both run-dirs emptied as a boot empties /run).  alpha's primary, started
 * again by habit, meets beta's backup, which still holds generation 1 and
 * refuses it: alpha's copy is stale.  With the generation in the run-dir
 * both would have come back as 0 and beta would have taken alpha's stale
 * copy as its new standby.  A generation file where tandem kept it before
 * (the run-dir) is still read when the state-dir has none.
 */
int test_reprotect_generation_survives_reboot(void)
{
	const char *cfg = two_host_config(NULL);
	struct td a1, b, b2, a2;
	char st_beta[700];

	alpha_protects_to_beta(cfg, &a1, &b, NULL, "alpha1", 10);
	td_kill(&a1, SIGKILL);
	check_activated(&a1, &b, "beta");
	ASSERT_EQ(td_num(st("beta", "backup"), "generation"), 1);

	/* both hosts reboot: every daemon gone, /run empty */
	td_kill(&b, SIGKILL);
	test_sh("rm -rf %s/* %s/*", run_alpha, run_beta);
	snprintf(st_beta, sizeof(st_beta), "%s/state-beta/" VM ".generation", test_tmpdir());
	ASSERT(test_file_has(st_beta, "generation 1", NULL));

	td_start_host(&b2, "backup", cfg, NULL, "beta", "beta2");
	if (!WAIT_FOR(state_is("beta", "backup", "waiting"), 15000))
		fail_dump(NULL, &b2, "beta's backup did not come up after the reboot");
	ASSERT_EQ(td_num(st("beta", "backup"), "generation"), 1);
	td_start_host(&a2, "primary", cfg, NULL, "alpha", "alpha2");
	if (!WAIT_FOR(td_exited(&a2), 15000))
		fail_dump(&a2, &b2, "alpha's stale primary did not stop after the reboot");
	ASSERT(WIFEXITED(a2.status) && WEXITSTATUS(a2.status) == 3);
	ASSERT(td_log_has(&a2, "STALE: protection generation 0 here, 1 on the other host"));
	ASSERT_EQ(td_events(&a2, "ack", NULL, NULL), 0);
	printf("  after both hosts rebooted beta still holds generation 1 (%s); alpha's stale "
	       "primary refused, exit 3\n", st_beta);
	td_stop(&b2);

	/* the old location: a run-dir file is read when the state-dir has none */
	test_sh("mkdir -p %s && mv %s %s/" VM ".generation", run_beta, st_beta, run_beta);
	td_start_host(&b2, "backup", cfg, NULL, "beta", "beta3");
	if (!WAIT_FOR(state_is("beta", "backup", "waiting"), 15000))
		fail_dump(NULL, &b2, "beta's backup did not come up");
	ASSERT_EQ(td_num(st("beta", "backup"), "generation"), 1);
	td_stop(&b2);
	return TEST_OK;
}

/*
 * A switchover whose activation takes longer than the answer's budget (2
 * timeouts + 1 s), as a Xen activation under an emulated CPU does: the
 * backup is still heard, so alpha waits for it, and `tandem switchover`
 * ends "done", not "FAILED half-way".
 */
int test_reprotect_switchover_slow_activation(void)
{
	const char *cfg = two_host_config(NULL);
	struct td a, b;
	char out[2048];
	double blackout = 0;
	const char *w;

	alpha_protects_to_beta(cfg, &a, &b, "slow-activate", "alpha", 10);
	if (test_capture(out, sizeof(out), "%s switchover --run-dir %s " VM " 2>&1",
			 test_tandem_bin(), run_alpha) != 0)
		fail_dump(&a, &b, out);
	ASSERT_STR_CONTAINS(out, "done: the guest runs on beta");
	ASSERT((w = strstr(out, "blackout ")) && sscanf(w, "blackout %lf", &blackout) == 1);
	ASSERT(blackout > 3000);	/* 1 s timeout: the activation took 4 s more */
	ASSERT(td_log_has(&b, "fault point 'slow-activate' fired"));
	ASSERT(td_log_has(&a, "is still activating") || blackout < 10000);
	if (!WAIT_FOR(state_is("beta", "primary", "protecting") &&
		      state_is("alpha", "backup", "standby"), 30000))
		fail_dump(&a, &b, "beta did not protect to alpha after the slow switchover");
	printf("  slow activation (4 s more, timeout 1 s): %.*s\n", (int)strcspn(out, "\n"), out);
	td_stop(&a);
	td_stop(&b);
	return TEST_OK;
}

/*
 * A switchover whose activation fails on beta (fault point
 * activate-fails): the guest must run on exactly one host, alpha's.  beta
 * never says ACTIVE (alpha would take that for the answer and destroy its
 * paused copy: no copy would run), discards its standby, takes back the
 * generation the attempt wrote (else alpha's copy would read as stale),
 * tells alpha, and ends; alpha resumes its guest as generation 1,
 * unprotected, output released.  No second activation follows (seen with
 * a disk: the second one found its overlay released and asked DRBD to
 * invalidate the disk it had just promoted).  A backup started again on
 * beta gets a new initial copy, and its standby equals by hash what alpha
 * captured.
 */
int test_reprotect_switchover_activation_fails(void)
{
	const char *cfg = two_host_config(NULL);
	struct td a, b, b2;
	char out[2048], buf[600], gen[700], hash[65], ckpt_hash[65];
	uint64_t sw = 0, n = 0, acked;

	alpha_protects_to_beta(cfg, &a, &b, "activate-fails", "alpha", 10);
	ASSERT_EQ(test_capture(out, sizeof(out), "%s switchover --run-dir %s " VM " 2>&1",
			       test_tandem_bin(), run_alpha), 1);	/* it failed, and says so */
	ASSERT_STR_CONTAINS(out, "switchover failed: the backup on beta could not start the guest");
	if (!WAIT_FOR(td_exited(&b), 15000))
		fail_dump(&a, &b, "beta did not end after its activation failed");
	ASSERT(td_log_has(&b, "activation failed"));
	ASSERT(td_log_has(&b, "switchover failed: the guest could not be started here"));
	ASSERT(WIFEXITED(b.status) && WEXITSTATUS(b.status) != 0);
	ASSERT_EQ(td_events(&b, "activated", NULL, NULL), 0);
	ASSERT_EQ(td_events(&b, "switch-failed", NULL, NULL), 1);
	snprintf(gen, sizeof(gen), "%s/state-beta/" VM ".generation", test_tmpdir());
	ASSERT(test_file_has(gen, "generation 0", NULL));	/* the attempt's taken back */

	/* alpha: resumed, not superseded, its guest the only copy */
	if (!WAIT_FOR(td_events(&a, "switchover-resumed", &sw, NULL) == 1, 10000))
		fail_dump(&a, &b, "alpha did not resume its guest after beta's activation failed");
	ASSERT(!td_log_has(&a, "switchover done"));
	ASSERT(td_log_has(&a, "could not start the guest (its activation failed"));
	ASSERT(!td_exited(&a));
	ASSERT_STR_CONTAINS(td_str(st("alpha", "primary"), "switchover", buf, sizeof(buf)),
			    "failed: the backup on beta could not start the guest");
	ASSERT_EQ(td_num(st("alpha", "primary"), "generation"), 1);
	ASSERT(WAIT_FOR(state_is("alpha", "primary", "degraded"), 5000));
	snprintf(gen, sizeof(gen), "%s/state-alpha/" VM ".generation", test_tmpdir());
	ASSERT(test_file_has(gen, "generation 1", NULL));
	acked = (uint64_t)td_num(st("alpha", "primary"), "last_acked_epoch");
	ASSERT_EQ(acked, sw);	/* nothing acknowledged since: no backup */

	/* protection comes back with the next backup on beta */
	td_start_host(&b2, "backup", cfg, NULL, "beta", "beta2");
	if (!WAIT_FOR(state_is("alpha", "primary", "protecting") &&
		      td_num(st("alpha", "primary"), "last_acked_epoch") >= (int64_t)sw + 10, 20000))
		fail_dump(&a, &b2, "alpha did not protect the resumed guest to beta's new backup");
	ASSERT(td_events(&b2, "commit", &n, hash) >= 10 && strlen(hash) == 64);
	if (!td_ckpt_hash(&a, n, ckpt_hash))
		fail_dump(&a, &b2, "alpha has no hash for beta's last commit");
	if (strcmp(hash, ckpt_hash))
		FAILF("beta's standby differs from alpha's checkpoint %" PRIu64 ": %s vs %s", n, hash,
		      ckpt_hash);
	ASSERT_EQ(td_num(st("beta", "backup"), "generation"), 1);	/* taken over from alpha */
	printf("  switchover with a failing activation: %.*s  alpha resumed at checkpoint %" PRIu64
	       ", generation 1; protected again to beta: standby at %" PRIu64 " = alpha's capture\n",
	       (int)strcspn(out, "\n"), out, sw, n);
	td_stop(&a);
	td_stop(&b2);
	return TEST_OK;
}
