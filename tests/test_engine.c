/*
 * test_engine.c - integration tier: real primary and backup daemons over
 * loopback protecting a memdom guest.  Invariants checked after every
 * failure: the activated guest equals, byte for byte, the last checkpoint
 * the backup acknowledged (SHA-256 the primary recorded at capture); no
 * acknowledged checkpoint is lost; nothing partial is applied.
 */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon.h"
#include "test.h"

#define VM "vm1"

static bool status_is(const char *role, const char *state)
{
	char buf[64];

	return !strcmp(td_str(td_status(VM, role), "state", buf, sizeof(buf)), state);
}

static double status_num(const char *role, const char *key)
{
	return td_num(td_status(VM, role), key);
}

static void fail_dump(struct td *p, struct td *b, const char *what)
{
	if (p)
		td_dump(p);
	if (b)
		td_dump(b);
	FAILF("%s", what);
}

/* Backup up and listening, then the primary; wait for `acks` acknowledged checkpoints. */
static void start_pair(struct td *p, struct td *b, const char *cfg, const char *pfault,
		       const char *bfault, int acks)
{
	td_start(b, "backup", cfg, bfault);
	if (!WAIT_FOR(status_is("backup", "waiting"), 15000))
		fail_dump(NULL, b, "backup did not come up");
	td_start(p, "primary", cfg, pfault);
	if (acks && !WAIT_FOR(status_num("primary", "last_acked_epoch") >= acks, 15000))
		fail_dump(p, b, "primary did not reach the wanted number of acks");
}

/*
 * After the backup activated: its guest equals checkpoint N as the primary
 * captured it, N is its last commit, and the primary never saw an ack
 * beyond N.  Returns N.
 */
static uint64_t check_failover(struct td *p, struct td *b)
{
	char act_hash[65] = "", ckpt_hash[65];
	uint64_t act = 0, last_commit = 0;

	if (!WAIT_FOR(status_is("backup", "active"), 10000))
		fail_dump(p, b, "backup did not activate");
	ASSERT_EQ(td_events(b, "activated", &act, act_hash), 1);
	td_events(b, "commit", &last_commit, NULL);
	ASSERT_EQ(last_commit, act);
	if (!td_ckpt_hash(p, act, ckpt_hash))
		fail_dump(p, b, "primary has no hash for the activated checkpoint");
	if (strcmp(act_hash, ckpt_hash))
		FAILF("activated guest differs from checkpoint %llu: %s vs %s",
		      (unsigned long long)act, act_hash, ckpt_hash);
	if (td_max_ack(p) > act)
		FAILF("acknowledged checkpoint %llu lost: activated %llu",
		      (unsigned long long)td_max_ack(p), (unsigned long long)act);
	return act;
}

/* The activated synthetic guest runs on: its description changes. */
static void check_guest_runs(void)
{
	char g1[200], g2[200];

	td_str(td_status(VM, "backup"), "guest", g1, sizeof(g1));
	ASSERT(g1[0]);
	ASSERT(WAIT_FOR(strcmp(td_str(td_status(VM, "backup"), "guest", g2, sizeof(g2)), g1) != 0, 3000));
}

int test_engine_protect_and_failover(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);
	char state[64];

	start_pair(&p, &b, cfg, NULL, NULL, 25);
	td_str(td_status(VM, "primary"), "state", state, sizeof(state));
	ASSERT(!strcmp(state, "protecting"));
	ASSERT(status_num("primary", "achieved_hz") > 5);
	ASSERT(status_num("backup", "epoch") >= 25);
	td_kill(&p, SIGKILL);
	check_failover(&p, &b);
	check_guest_runs();
	ASSERT(td_log_has(&b, "guest running: activated from checkpoint"));
	td_stop(&b);
	return TEST_OK;
}

/* compress = lz4 (with encryption): checkpoint data travels compressed,
 * and the activated guest still equals the last acknowledged checkpoint. */
int test_engine_lz4_failover(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, "compress = lz4\nencrypt = yes\n");
	char z[16];
	double shipped, raw;

	start_pair(&p, &b, cfg, NULL, NULL, 20);
	ASSERT(!strcmp(td_str(td_status(VM, "primary"), "compress", z, sizeof(z)), "lz4"));
	shipped = status_num("primary", "bytes_shipped");
	raw = status_num("primary", "bytes_shipped_raw");
	printf("  shipped %.0f bytes for %.0f uncompressed\n", shipped, raw);
	/* memdom's pages: 16-byte slots written into zeroed memory */
	ASSERT(shipped > 0 && shipped * 4 < raw);
	td_kill(&p, SIGKILL);
	check_failover(&p, &b);
	check_guest_runs();
	td_stop(&b);
	return TEST_OK;
}

int test_engine_status_fields(void)
{
	static const char *const fields[] = { "role", "state", "vm", "epoch", "last_acked_epoch",
		"interval_ms", "achieved_hz", "last_pause_ms", "pause_ms_p50", "dirty_pages", "bytes_shipped",
		"bytes_shipped_raw", "compress", "epochs_in_flight", "lag_ms" };
	struct td p, b;
	const char *cfg = td_config(VM, NULL);
	const char *js;
	char cmd[1024];

	start_pair(&p, &b, cfg, NULL, NULL, 5);
	js = td_status(VM, "primary");
	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
		char pat[64];
		snprintf(pat, sizeof(pat), "\"%s\":", fields[i]);
		ASSERT_STR_CONTAINS(js, pat);
	}
	ASSERT_STR_CONTAINS(js, "\"synthetic\":true");
	ASSERT_STR_CONTAINS(js, "\"unsafe\":true");
	ASSERT_EQ(status_num("primary", "interval_ms"), 20);
	/* the CLI prints both daemons, and says the guest is synthetic and unsafe */
	snprintf(cmd, sizeof(cmd), "%s status --run-dir %s/run " VM " > %s/st.txt",
		 test_tandem_bin(), test_tmpdir(), test_tmpdir());
	ASSERT_EQ(system(cmd), 0);
	{
		char path[600], text[8192];
		FILE *f;
		size_t n;
		snprintf(path, sizeof(path), "%s/st.txt", test_tmpdir());
		f = fopen(path, "r");
		n = fread(text, 1, sizeof(text) - 1, f);
		text[n] = '\0';
		fclose(f);
		ASSERT_STR_CONTAINS(text, "vm1 (primary): protecting UNSAFE");
		ASSERT_STR_CONTAINS(text, "vm1 (backup): standby");
		ASSERT_STR_CONTAINS(text, "[synthetic test guest]");
	}
	snprintf(cmd, sizeof(cmd), "%s status --run-dir %s/run nosuchvm 2>/dev/null",
		 test_tandem_bin(), test_tmpdir());
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 5);
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/* SIGTERM of the primary: the backup discards its standby and exits 0. */
int test_engine_clean_stop(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);

	start_pair(&p, &b, cfg, NULL, NULL, 5);
	td_kill(&p, SIGTERM);
	ASSERT(WAIT_FOR(td_exited(&p), 5000));
	ASSERT(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 0);
	if (!WAIT_FOR(td_exited(&b), 5000))
		fail_dump(&p, &b, "backup did not exit after the clean stop");
	ASSERT(WIFEXITED(b.status) && WEXITSTATUS(b.status) == 0);
	ASSERT(td_log_has(&b, "stopped protection cleanly"));
	ASSERT_EQ(td_events(&b, "activated", NULL, NULL), 0);
	return TEST_OK;
}

/*
 * A guest that does not suspend (a Xen guest that ignores the request past
 * the bound): the primary stops protection, says why and exits 1; the
 * backup is told, discards its standby and does not fail over; held output
 * is released.
 */
int test_engine_suspend_fails(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);

	start_pair(&p, &b, cfg, "suspend-fails@5", NULL, 0);
	if (!WAIT_FOR(td_exited(&p), 15000))
		fail_dump(&p, &b, "primary did not stop when the guest did not suspend");
	ASSERT(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 1);
	ASSERT(td_log_has(&p, "checkpoint 5: cannot suspend the guest"));
	ASSERT(td_log_has(&p, "output released"));
	if (!WAIT_FOR(td_exited(&b), 5000))
		fail_dump(&p, &b, "backup did not exit after the primary stopped");
	ASSERT(WIFEXITED(b.status) && WEXITSTATUS(b.status) == 0);
	ASSERT(td_log_has(&b, "stopped protection cleanly"));
	ASSERT_EQ(td_events(&b, "activated", NULL, NULL), 0);
	return TEST_OK;
}

/*
 * The guest ends under protection (a Xen guest's poweroff or crash; here
 * the synthetic guest's process dies): protection ends cleanly with exit
 * 6 and the reason, the backup discards its standby and never activates.
 */
int test_engine_guest_ends(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);
	char guest[256];
	const char *at;
	int pid;

	start_pair(&p, &b, cfg, NULL, NULL, 5);
	td_str(td_status(VM, "primary"), "guest", guest, sizeof(guest));
	at = strstr(guest, " pid ");
	ASSERT(at && sscanf(at, " pid %d", &pid) == 1 && pid > 1);
	ASSERT_EQ(kill(pid, SIGKILL), 0);
	if (!WAIT_FOR(td_exited(&p), 10000))
		fail_dump(&p, &b, "primary did not stop when its guest ended");
	ASSERT(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 6);
	ASSERT(td_log_has(&p, "shut down or was destroyed"));
	ASSERT(td_log_has(&p, "not a failover"));
	if (!WAIT_FOR(td_exited(&b), 5000))
		fail_dump(&p, &b, "backup did not exit after the primary stopped");
	ASSERT(WIFEXITED(b.status) && WEXITSTATUS(b.status) == 0);
	ASSERT(td_log_has(&b, "stopped protection cleanly"));
	ASSERT_EQ(td_events(&b, "activated", NULL, NULL), 0);
	return TEST_OK;
}

/* A frozen primary (host hang: no FIN, nothing heard) fails over after the timeout. */
int test_engine_timeout_failover(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, "");
	uint64_t t0;
	double ms;

	start_pair(&p, &b, cfg, NULL, NULL, 10);
	t0 = test_now_ms();
	kill(p.pid, SIGSTOP);
	check_failover(&p, &b);
	ms = (double)(test_now_ms() - t0);
	ASSERT(ms >= 1000);
	ASSERT(td_log_has(&b, "timeout 1000 ms"));
	td_kill(&p, SIGKILL);
	td_stop(&b);
	return TEST_OK;
}

/* A backup that stalls makes the epoch stretch, never grow staging without bound. */
int test_engine_stretch(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, "timeout = 10s\nepochs-in-flight = 3\n");
	bool stretched;

	start_pair(&p, &b, cfg, NULL, NULL, 5);
	kill(b.pid, SIGSTOP);
	stretched = WAIT_FOR(td_num(td_status(VM, "primary"), "stretched") != -1 &&
			     strstr(td_status(VM, "primary"), "\"stretched\":true"), 3000);
	ASSERT(status_num("primary", "epochs_in_flight") <= 3);
	kill(b.pid, SIGCONT);
	if (!stretched)
		fail_dump(&p, &b, "epoch did not stretch");
	ASSERT(td_log_has(&p, "stretches"));
	ASSERT(WAIT_FOR(strstr(td_status(VM, "primary"), "\"stretched\":false"), 5000));
	ASSERT(WAIT_FOR(status_num("primary", "last_acked_epoch") >= 20, 5000));
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

int test_engine_wrong_peer(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);
	char other[700], text[2048];
	FILE *f;
	size_t n;

	td_start(&b, "backup", cfg, NULL);
	ASSERT(WAIT_FOR(status_is("backup", "waiting"), 5000));
	/* same port and key, another VM name */
	f = fopen(cfg, "r");
	n = fread(text, 1, sizeof(text) - 1, f);
	text[n] = '\0';
	fclose(f);
	memcpy(text, "name = vm9", 10);
	snprintf(other, sizeof(other), "%s", test_write_file("other.cfg", text));
	td_start(&p, "primary", other, NULL);
	ASSERT(WAIT_FOR(td_exited(&p), 5000));
	ASSERT_EQ(WEXITSTATUS(p.status), 3);
	ASSERT(td_log_has(&p, "peer protects VM 'vm1', this side protects 'vm9'"));
	ASSERT(WAIT_FOR(td_log_has(&b, "refused a connection: peer protects VM 'vm9'"), 2000));
	ASSERT(status_is("backup", "waiting"));
	td_stop(&b);
	return TEST_OK;
}

/* ---- fault points --------------------------------------------------------- */

/* A primary-side fault that kills the primary: the backup takes over. */
static void primary_dies_at(const char *fault)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);

	start_pair(&p, &b, cfg, fault, NULL, 0);
	if (!WAIT_FOR(td_exited(&p), 15000))
		fail_dump(&p, &b, "fault point did not fire");
	ASSERT(WIFSIGNALED(p.status) && WTERMSIG(p.status) == SIGKILL);
	ASSERT(td_log_has(&p, "fired"));
	check_failover(&p, &b);
	check_guest_runs();
	td_stop(&b);
}

int test_fault_before_capture(void) { primary_dies_at("before-capture@8"); return TEST_OK; }
int test_fault_mid_capture(void) { primary_dies_at("mid-capture@8"); return TEST_OK; }
int test_fault_mid_ship(void) { primary_dies_at("mid-ship@30"); return TEST_OK; }
int test_fault_after_ship_before_ack(void) { primary_dies_at("after-ship-before-ack@8"); return TEST_OK; }
int test_fault_primary_exit_after_release(void) { primary_dies_at("primary-exit-after-release@8"); return TEST_OK; }

/* A daemon that dies of SIGSEGV says so in its log, with where the bad call
 * came from, and still dies of the signal. */
int test_crash_report(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);

	start_pair(&p, &b, cfg, NULL, "null-call@3", 0);
	if (!WAIT_FOR(td_exited(&b), 15000))
		fail_dump(&p, &b, "fault point null-call did not fire");
	ASSERT(WIFSIGNALED(b.status) && WTERMSIG(b.status) == SIGSEGV);
	ASSERT(td_log_has(&b, "tandem backup: CRASHED: SIGSEGV at address 0x0, pc 0x0, top of stack 0x"));
	ASSERT(td_log_has(&b, "backtrace (addresses: addr2line"));
	ASSERT(td_log_has(&b, "please report it"));
	td_stop(&p);
	return TEST_OK;
}

/* A duplicated frame is rejected; the backup drops the stream and fails over. */
int test_fault_duplicate_frame(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);

	start_pair(&p, &b, cfg, "duplicate-frame@60", NULL, 0);
	check_failover(&p, &b);
	ASSERT(td_log_has(&b, "replayed frame"));
	ASSERT(WAIT_FOR(status_is("primary", "degraded"), 5000));
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/* A dropped ack: the primary never sees ack 8, releases it with ack 9. */
int test_fault_drop_ack(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);
	FILE *f;
	char line[128];
	bool saw8 = false, saw9plus = false;

	start_pair(&p, &b, cfg, NULL, "drop-ack@8", 15);
	f = fopen(p.events, "r");
	while (fgets(line, sizeof(line), f)) {
		unsigned long long e;
		if (sscanf(line, "ack %llu", &e) == 1) {
			saw8 |= e == 8;
			saw9plus |= e >= 9;
		}
	}
	fclose(f);
	ASSERT(!saw8 && saw9plus);
	td_kill(&p, SIGKILL);
	check_failover(&p, &b);
	td_stop(&b);
	return TEST_OK;
}

/* A backup that applies a round of the initial copy for longer than the
 * timeout, while its heartbeats keep coming, is slow, not lost: the
 * primary's blocked send waits for it instead of failing the copy. */
int test_engine_slow_backup(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, "memory = 96M");

	start_pair(&p, &b, cfg, NULL, "slow-commit", 5);
	ASSERT(td_log_has(&b, "fault point 'slow-commit' fired"));
	ASSERT(!td_log_has(&p, "initial copy failed"));
	ASSERT(!td_log_has(&p, "replication link down"));
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/* A backup that dies in commit or before its ack: the primary degrades and
 * never counts the lost checkpoint as acknowledged. */
static void backup_dies_at(const char *fault, bool committed_last)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);
	uint64_t last_commit = 0;

	start_pair(&p, &b, cfg, NULL, fault, 0);
	if (!WAIT_FOR(td_exited(&b), 15000))
		fail_dump(&p, &b, "fault point did not fire");
	ASSERT(WIFSIGNALED(b.status));
	/* commits are 1..last_commit, contiguous */
	ASSERT_EQ(td_events(&b, "commit", &last_commit, NULL), last_commit);
	ASSERT(last_commit >= 1);
	if (!WAIT_FOR(status_is("primary", "degraded"), 5000))
		fail_dump(&p, &b, "primary did not notice the loss of the backup");
	/* mid-commit: checkpoint last_commit+1 died in commit, never acked;
	 * before-ack: last_commit was committed but its ack never sent */
	if (committed_last)
		ASSERT(td_max_ack(&p) < last_commit);
	else
		ASSERT(td_max_ack(&p) <= last_commit);
	td_stop(&p);
}

int test_fault_backup_mid_commit(void) { backup_dies_at("backup-mid-commit@12", false); return TEST_OK; }
int test_fault_backup_before_ack(void) { backup_dies_at("backup-before-ack@12", true); return TEST_OK; }

/* ---- random SIGKILLs ----------------------------------------------------- */

int test_engine_random_kill(void)
{
	const char *env = getenv("TANDEM_TRIALS");
	int trials = env ? atoi(env) : 100;
	int primary_kills = 0, backup_kills = 0, activations = 0;
	uint32_t seed = (uint32_t)getpid();

	for (int t = 0; t < trials; t++) {
		struct td p, b;
		const char *cfg;
		char path[600];
		unsigned delay;
		bool kill_primary;

		seed = seed * 1103515245u + 12345u;
		delay = (seed >> 8) % 700;
		kill_primary = (seed >> 20) % 4 != 0;
		snprintf(path, sizeof(path), "rm -f %s/*.events %s/*.log", test_tmpdir(), test_tmpdir());
		if (system(path) != 0)
			FAILF("cleanup");
		cfg = td_config(VM, "interval = 10ms\nmemory = 4M\nhotset = 1M\n");
		start_pair(&p, &b, cfg, NULL, NULL, 0);
		test_sleep_ms(delay);	/* the random moment of the kill */
		if (kill_primary) {
			uint64_t acked;
			primary_kills++;
			td_kill(&p, SIGKILL);
			acked = td_max_ack(&p);
			/* Either the backup activates, or it had nothing to activate
			 * (killed before the first checkpoint, or before connecting). */
			if (!WAIT_FOR(status_is("backup", "active") ||
				      td_log_has(&b, "nothing to activate") ||
				      (!td_log_has(&b, "primary connected") && status_is("backup", "waiting")),
				      5000))
				fail_dump(&p, &b, "backup neither activated nor gave up");
			if (status_is("backup", "active") || acked > 0) {
				check_failover(&p, &b);
				activations++;
			}
		} else {
			uint64_t last_commit = 0;
			backup_kills++;
			td_kill(&b, SIGKILL);
			td_events(&b, "commit", &last_commit, NULL);
			/* degraded, or still connecting if the backup died first */
			if (!WAIT_FOR(status_is("primary", "degraded") || status_is("primary", "connecting") ||
				      td_exited(&p), 5000)) {
				fprintf(stderr, "primary status: %s\n", td_status(VM, "primary"));
				fail_dump(&p, &b, "primary did not notice the loss of the backup");
			}
			ASSERT(td_max_ack(&p) <= last_commit);
			td_stop(&p);
		}
		td_stop(&b);
		td_stop(&p);
	}
	printf("  %d trials: %d primary kills (%d activations checked), %d backup kills\n",
	       trials, primary_kills, activations, backup_kills);
	return TEST_OK;
}
