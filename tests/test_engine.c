/*
 * test_engine.c - integration tier: real primary and backup daemons over
 * loopback protecting a memdom guest.  Invariants checked after every
 * failure: the activated guest equals, byte for byte, the last checkpoint
 * the backup acknowledged (SHA-256 the primary recorded at capture); no
 * acknowledged checkpoint is lost; nothing partial is applied.
 */
#include <inttypes.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../cli/cmd.h"
#include "../disk/marker.h"

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
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 2);	/* UNSAFE: nothing is protected */
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
	ASSERT_EQ(WEXITSTATUS(system(cmd)), 3);
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
	td_backup_discarded(&p, &b);
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

	start_pair(&p, &b, cfg, NULL, NULL, 5);
	ASSERT_EQ(kill(td_guest_pid(VM, "primary"), SIGKILL), 0);
	if (!WAIT_FOR(td_exited(&p), 10000))
		fail_dump(&p, &b, "primary did not stop when its guest ended");
	ASSERT(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 6);
	ASSERT(td_log_has(&p, "shut down or was destroyed"));
	ASSERT(td_log_has(&p, "not a failover"));
	td_backup_discarded(&p, &b);
	return TEST_OK;
}

/*
 * The guest is destroyed while suspended for a checkpoint (the fault point
 * kills memdom's guest between suspend and capture, as `xl destroy` would
 * a Xen guest): there is nothing to resume, so protection ends with exit 6
 * and the reason, not a failed resume (exit 1), and the backup discards
 * its standby without activating.
 */
int test_engine_guest_ends_suspended(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, NULL);

	start_pair(&p, &b, cfg, "guest-ends-suspended@20", NULL, 3);
	if (!WAIT_FOR(td_exited(&p), 10000))
		fail_dump(&p, &b, "primary did not stop when its guest ended while suspended");
	ASSERT(td_log_has(&p, "fault point 'guest-ends-suspended' fired"));
	ASSERT(WIFEXITED(p.status) && WEXITSTATUS(p.status) == 6);
	ASSERT(td_log_has(&p, "was destroyed or ended while suspended for it"));
	ASSERT(td_log_has(&p, "not a failover"));
	ASSERT(!td_log_has(&p, "cannot resume the guest"));
	ASSERT(!td_log_has(&p, "protection starts over"));
	td_backup_discarded(&p, &b);
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
	ASSERT(WAIT_FOR(td_log_has(&b, "refused a connection from 127.0.0.1:") &&
			td_log_has(&b, "peer protects VM 'vm9'"), 2000));
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

	/* backup-late-loop: the primary's reconnection is pending before the
	 * backup acts on the loss (CI once lost this race by chance) */
	start_pair(&p, &b, cfg, "duplicate-frame@60", "backup-late-loop", 0);
	check_failover(&p, &b);
	ASSERT(td_log_has(&b, "replayed frame"));
	/* the primary reconnects, learns the backup is active, steps down */
	ASSERT(WAIT_FOR(status_is("primary", "superseded"), 5000));
	ASSERT(td_log_has(&p, "the backup of " VM " is active"));	/* at the handshake */
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

/* ---- `tandem status`: exit by health, names with dots, permission ------- */

/* A fake daemon's status socket at DIR/NAME.ROLE.sock answering `json`
 * with the given object; returns the pid of the child serving it. */
static pid_t fake_status(const char *dir, const char *file, const char *json)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);
	pid_t pid;

	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, file);
	ASSERT(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(fd, 8) == 0);
	pid = fork();
	if (pid == 0) {
		for (;;) {
			char req[64];
			int c = accept(fd, NULL, NULL);
			if (c < 0)
				continue;
			if (read(c, req, sizeof(req)) > 0 && write(c, json, strlen(json)) < 0)
				_exit(1);
			close(c);
		}
	}
	close(fd);
	return pid;
}

static int status_rc(const char *dir, const char *args, char *out, size_t len)
{
	return test_capture(out, len, "%s status --run-dir %s %s 2>&1", test_tandem_bin(), dir, args);
}

int test_status_exit_codes(void)
{
	static const struct { const char *json; int health; } cases[] = {
		{ "{\"role\":\"primary\",\"state\":\"protecting\",\"detail\":\"x\",\"unsafe\":false}", 0 },
		{ "{\"role\":\"primary\",\"state\":\"protecting\",\"detail\":\"x\",\"unsafe\":true}", 2 },
		{ "{\"role\":\"primary\",\"state\":\"syncing\",\"detail\":\"x\",\"unsafe\":false}", 1 },
		{ "{\"role\":\"primary\",\"state\":\"degraded\",\"detail\":\"replication link down\"}", 1 },
		{ "{\"role\":\"primary\",\"state\":\"degraded\",\"detail\":\"isolated: backup lost\"}", 2 },
		{ "{\"role\":\"primary\",\"state\":\"degraded\",\"detail\":\"UNPROTECTED: x\"}", 2 },
		{ "{\"role\":\"primary\",\"state\":\"superseded\",\"detail\":\"x\"}", 2 },
		{ "{\"role\":\"backup\",\"state\":\"standby\",\"detail\":\"x\"}", 0 },
		{ "{\"role\":\"backup\",\"state\":\"active\",\"detail\":\"x\"}", 1 },
		{ "{\"role\":\"backup\",\"state\":\"manual\",\"detail\":\"x\"}", 2 },
		{ "{\"role\":\"backup\",\"state\":\"failed\",\"detail\":\"x\"}", 2 },
		{ "{\"role\":\"backup\",\"state\":\"sleeping\",\"detail\":\"x\"}", 3 },
	};
	char dir[600], out[4096];
	pid_t a, b;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		if (status_health(cases[i].json) != cases[i].health)
			FAILF("health of %s: %d, want %d", cases[i].json, status_health(cases[i].json),
			      cases[i].health);

	snprintf(dir, sizeof(dir), "%s/run", test_tmpdir());
	ASSERT_EQ(mkdir(dir, 0700), 0);
	a = fake_status(dir, "web.primary.sock",
			"{\"role\":\"primary\",\"state\":\"protecting\",\"detail\":\"x\",\"unsafe\":false}\n");
	b = fake_status(dir, "web.2.backup.sock",
			"{\"role\":\"backup\",\"state\":\"failed\",\"detail\":\"x\"}\n");
	/* `status web` is web's daemons only, not web.2's */
	ASSERT_EQ(status_rc(dir, "--json web", out, sizeof(out)), 0);
	ASSERT_STR_CONTAINS(out, "protecting");
	ASSERT(!strstr(out, "failed"));
	ASSERT_EQ(status_rc(dir, "--json web.2", out, sizeof(out)), 2);
	ASSERT(!strstr(out, "protecting"));
	ASSERT_EQ(status_rc(dir, "--json", out, sizeof(out)), 2);	/* the worst of all */
	ASSERT_EQ(status_rc(dir, "nosuchvm", out, sizeof(out)), 3);
	ASSERT_STR_CONTAINS(out, "no tandem daemon for VM nosuchvm answers");
	/* a user who may not read the run-dir is told so, not "no daemon" */
	if (geteuid() == 0 && system("command -v setpriv >/dev/null") == 0) {
		char cmd[1200];
		snprintf(cmd, sizeof(cmd), "setpriv --reuid=65534 --regid=65534 --clear-groups %s "
			 "status --run-dir %s web > %s/perm.txt 2>&1", test_tandem_bin(), dir,
			 test_tmpdir());
		ASSERT_EQ(WEXITSTATUS(system(cmd)), 3);
		snprintf(cmd, sizeof(cmd), "grep -q 'permission denied' %s/perm.txt", test_tmpdir());
		ASSERT_EQ(system(cmd), 0);
	}
	kill(a, SIGKILL);
	kill(b, SIGKILL);
	waitpid(a, NULL, 0);
	waitpid(b, NULL, 0);
	return TEST_OK;
}

/* The first line of a daemon's log. */
static void first_line(const struct td *d, char *buf, size_t len)
{
	FILE *f = fopen(d->log, "r");

	buf[0] = '\0';
	if (f) {
		if (!fgets(buf, (int)len, f))
			buf[0] = '\0';
		fclose(f);
	}
}

/*
 * Signals, locks and logs: SIGHUP does not end a daemon; a second daemon
 * for the same VM and role in the same run-dir refuses to start (the first
 * keeps its socket); a world-writable run-dir is refused; log lines carry
 * the date, and under the journal (JOURNAL_STREAM) their priority.
 */
int test_daemon_hygiene(void)
{
	struct td b, b2, b3;
	const char *cfg = td_config(VM, NULL);
	char line[512], extra[700], dir[600];
	int y, mo, dd, hh, prio;
	struct stat st;

	td_start(&b, "backup", cfg, NULL);
	if (!WAIT_FOR(status_is("backup", "waiting"), 15000))
		fail_dump(NULL, &b, "backup did not come up");
	ASSERT_EQ(kill(b.pid, SIGHUP), 0);
	ASSERT(WAIT_FOR(td_log_has(&b, "SIGHUP ignored"), 3000));
	ASSERT(!td_exited(&b));
	ASSERT(status_is("backup", "waiting"));

	td_start(&b2, "backup", cfg, NULL);
	if (!WAIT_FOR(td_exited(&b2), 5000))
		fail_dump(NULL, &b2, "a second backup for the same VM did not refuse to start");
	ASSERT(WIFEXITED(b2.status) && WEXITSTATUS(b2.status) == 4);
	ASSERT(td_log_has(&b2, "another tandem daemon for this VM and role already runs"));
	ASSERT(status_is("backup", "waiting"));	/* the first one still answers */
	ASSERT(!td_exited(&b));

	first_line(&b, line, sizeof(line));
	ASSERT(sscanf(line, "%4d-%2d-%2d %2d:", &y, &mo, &dd, &hh) == 4 && y >= 2024);
	td_stop(&b);

	/* a run-dir anyone may write to */
	snprintf(dir, sizeof(dir), "%s/open", test_tmpdir());
	ASSERT_EQ(mkdir(dir, 0700), 0);
	ASSERT_EQ(chmod(dir, 0777), 0);
	snprintf(extra, sizeof(extra), "run-dir = %s\n", dir);
	td_start(&b3, "backup", td_config(VM, extra), NULL);
	if (!WAIT_FOR(td_exited(&b3), 5000))
		fail_dump(NULL, &b3, "a world-writable run-dir was not refused");
	ASSERT(WIFEXITED(b3.status) && WEXITSTATUS(b3.status) == 4);
	ASSERT(td_log_has(&b3, "writable by anyone"));

	/* under the journal: each line starts with its syslog priority */
	snprintf(line, sizeof(line), "%s/backup.log", test_tmpdir());
	unlink(line);
	ASSERT(close(open(line, O_WRONLY | O_CREAT, 0644)) == 0 && stat(line, &st) == 0);
	snprintf(extra, sizeof(extra), "%llu:%llu", (unsigned long long)st.st_dev,
		 (unsigned long long)st.st_ino);
	setenv("JOURNAL_STREAM", extra, 1);
	td_start(&b, "backup", td_config(VM, NULL), NULL);
	unsetenv("JOURNAL_STREAM");
	if (!WAIT_FOR(status_is("backup", "waiting"), 15000))
		fail_dump(NULL, &b, "backup did not come up");
	first_line(&b, line, sizeof(line));
	ASSERT(sscanf(line, "<%d>%4d-", &prio, &y) == 2 && prio >= 3 && prio <= 7);
	ASSERT(td_log_has(&b, "<6>"));	/* info lines */
	ASSERT(td_log_has(&b, "<4>"));	/* the single-path warning */
	td_stop(&b);
	return TEST_OK;
}

/* The backup's status JSON: a number inside its "verify" object. */
static double verify_num(const char *key)
{
	const char *v = strstr(td_status(VM, "backup"), "\"verify\":");

	return v ? td_num(v, key) : -1;
}

/*
 * The checkpoint oracle (verify = 64K: 16 pages a checkpoint, in rotation):
 * every committed checkpoint is compared, pages and vCPU state, with no
 * mismatch, and status counts them.
 */
int test_engine_verify(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, "verify = 64K\nmemory = 1M\n");

	start_pair(&p, &b, cfg, NULL, NULL, 3);
	if (!WAIT_FOR(verify_num("checkpoints") >= 30, 20000))
		fail_dump(&p, &b, "the backup did not verify 30 checkpoints");
	/* 1M = 256 pages: 30 checkpoints of 16 went round the guest at least once */
	ASSERT(verify_num("pages") >= 30 * 16);
	ASSERT_EQ(verify_num("mismatched_checkpoints"), 0);
	ASSERT_EQ(verify_num("errors"), 0);
	ASSERT(td_events(&b, "verify", NULL, NULL) >= 30);
	ASSERT(!td_log_has(&b, "differs from what the primary captured"));
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/*
 * Its negative control: the primary leaves one dirty page out of
 * checkpoint 5 (fault point verify-drop-page); the oracle names that pfn
 * and status counts the mismatch.
 */
int test_engine_verify_negative(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, "verify = 64K\nmemory = 1M\n");
	char want[64], line[256];
	uint64_t pfn;

	start_pair(&p, &b, cfg, "verify-drop-page@5", NULL, 3);
	if (!WAIT_FOR(verify_num("mismatched_checkpoints") >= 1, 20000))
		fail_dump(&p, &b, "the oracle did not report the dropped page");
	if (!WAIT_FOR(td_log_has(&p, "fault point 'verify-drop-page' fired"), 5000))
		fail_dump(&p, &b, "the primary did not log the dropped page");
	ASSERT(verify_num("mismatched_pages") >= 1);
	ASSERT(verify_num("last_mismatch_epoch") >= 5);
	/* the pfn the primary dropped is the one the backup names */
	td_str(td_status(VM, "backup"), "last_mismatch", line, sizeof(line));
	ASSERT(td_grep(&p, "fault point 'verify-drop-page' fired: pfn ", want, sizeof(want)));
	ASSERT(sscanf(want, "%" SCNx64, &pfn) == 1);
	snprintf(want, sizeof(want), "%#" PRIx64, pfn);
	if (!strstr(line, want))
		FAILF("the backup names %s, the primary dropped %s", line, want);
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/* ---- devices: memdom's disk stand-in (device/device.h, disk/disk.h) --------- */

/* The epochs of d's event lines "PREFIX N", in order (at most max). */
static int event_epochs(const struct td *d, const char *prefix, uint64_t *out, int max)
{
	char line[512];
	size_t pl = strlen(prefix);
	int n = 0;
	FILE *f = fopen(d->events, "r");

	if (!f)
		return 0;
	while (n < max && fgets(line, sizeof(line), f))
		if (!strncmp(line, prefix, pl) && line[pl] == ' ')
			out[n++] = strtoull(line + pl + 1, NULL, 10);
	fclose(f);
	return n;
}

static const char *memdisk_config(char *path, size_t len)
{
	static char extra[700];
	FILE *f;

	snprintf(path, len, "%s/memdisk.img", test_tmpdir());
	f = fopen(path, "w");
	if (!f || ftruncate(fileno(f), 1 << 20))
		FAILF("cannot make %s", path);
	fclose(f);
	snprintf(extra, sizeof(extra), "memory = 1M\nmemdom-disk = %s\n", path);
	return td_config(VM, extra);
}

/*
 * Every checkpoint carries the disk's verdict and the backup commits one
 * only when the checkpoint's marker is on its side of the disk: the
 * marker of the last acknowledged checkpoint (or a later one) is there,
 * and nothing was held.
 */
int test_device_memdisk_cut(void)
{
	struct td p, b;
	char path[512], j[8192];
	const char *cfg = memdisk_config(path, sizeof(path));
	struct marker_dev md;
	struct marker m;
	uint64_t acked;

	start_pair(&p, &b, cfg, NULL, NULL, 30);
	acked = (uint64_t)status_num("primary", "last_acked_epoch");
	ASSERT_EQ(marker_dev_open(&md, path), 0);
	ASSERT_EQ(marker_dev_read(&md, &m), 0);
	marker_dev_close(&md);
	ASSERT(m.epoch >= acked);
	ASSERT(!strcmp(m.vm, VM));
	snprintf(j, sizeof(j), "%s", td_status(VM, "primary"));
	ASSERT(strstr(j, "\"devices\":[{\"name\":\"memdisk\",\"kind\":\"memdisk\""));
	ASSERT(td_num(strstr(j, "\"cuts\""), "cuts") >= 30);
	ASSERT_EQ(td_num(strstr(j, "\"cut_failures\""), "cut_failures"), 0);
	ASSERT_EQ(status_num("backup", "held_checkpoints_total"), 0);
	ASSERT_EQ(td_events(&b, "held", NULL, NULL), 0);
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/*
 * A fenced disk (its peer lost since the last good cut) holds checkpoints:
 * the backup commits none of them and acks none; the first checkpoint
 * whose cut is complete again commits them all in order (the standby
 * equals the primary's guest at it: the test digest).
 */
int test_device_fenced_holds(void)
{
	struct td p, b;
	char path[512];
	const char *cfg = memdisk_config(path, sizeof(path));
	uint64_t held[64], acks[4096], commits[4096];
	int nh, na, nc;

	start_pair(&p, &b, cfg, "disk-fenced@10", NULL, 3);
	if (!WAIT_FOR(td_events(&b, "held", NULL, NULL) >= 5 && td_max_ack(&p) >= 20, 20000))
		fail_dump(&p, &b, "the fenced checkpoints were not held and then committed");
	td_stop(&p);
	td_stop(&b);
	nh = event_epochs(&b, "held", held, 64);
	ASSERT_EQ(nh, 5);
	for (int i = 1; i < nh; i++)
		ASSERT_EQ(held[i], held[0] + (uint64_t)i);
	na = event_epochs(&p, "ack", acks, 4096);
	for (int i = 0; i < na; i++)	/* no held checkpoint was acknowledged */
		if (acks[i] >= held[0] && acks[i] <= held[nh - 1])
			FAILF("checkpoint %llu was acknowledged while held",
			      (unsigned long long)acks[i]);
	nc = event_epochs(&b, "commit", commits, 4096);
	for (int i = 1; i < nc; i++)	/* committed in order, none skipped */
		if (commits[i] != commits[i - 1] + 1)
			FAILF("commit %llu follows commit %llu", (unsigned long long)commits[i],
			      (unsigned long long)commits[i - 1]);
	ASSERT(td_log_has(&b, "is held, not committed: memdisk: the primary's verdict on checkpoint"));
	ASSERT(td_log_has(&b, "the devices let checkpoint"));
	ASSERT(td_log_has(&p, "the backup will not commit it"));
	ASSERT(td_log_has(&p, "every device's cut is complete again"));
	ASSERT(!td_log_has(&b, "standby differs"));
	return TEST_OK;
}

/*
 * The backup does not take the primary's word: a marker that never
 * reached the disk (fault point disk-skip-marker: the verdict says ok)
 * holds its checkpoint until a later marker is there.
 */
int test_device_missing_marker_holds(void)
{
	struct td p, b;
	char path[512];
	const char *cfg = memdisk_config(path, sizeof(path));
	uint64_t held[8];

	start_pair(&p, &b, cfg, "disk-skip-marker@10", NULL, 3);
	if (!WAIT_FOR(td_events(&b, "held", NULL, NULL) >= 1 && td_max_ack(&p) >= 15, 20000))
		fail_dump(&p, &b, "the checkpoint without its marker was not held");
	td_stop(&p);
	td_stop(&b);
	ASSERT_EQ(event_epochs(&b, "held", held, 8), 1);
	ASSERT(td_log_has(&p, "fault point 'disk-skip-marker' fired"));
	ASSERT(td_log_has(&b, "marker is not on this side's disk"));
	return TEST_OK;
}

/*
 * The backup holds checkpoints for a reason of its own side (its DRBD not
 * whole), every primary verdict ok, more in a row than the primary keeps
 * in flight: the backup says so (HELD), the primary goes on taking
 * checkpoints instead of waiting for acks that cannot come, and the held
 * ones commit with the first that passes.
 */
int test_device_backup_side_holds(void)
{
	struct td p, b;
	char path[512];
	const char *cfg = memdisk_config(path, sizeof(path));
	uint64_t held[64];
	int nh;

	start_pair(&p, &b, cfg, NULL, "disk-backup-holds@10", 3);
	if (!WAIT_FOR(td_events(&b, "held", NULL, NULL) >= 8 && td_max_ack(&p) >= 25, 30000))
		fail_dump(&p, &b, "the primary did not go on behind the backup's own holds");
	td_stop(&p);
	td_stop(&b);
	nh = event_epochs(&b, "held", held, 64);
	ASSERT_EQ(nh, 8);
	for (int i = 1; i < nh; i++)
		ASSERT_EQ(held[i], held[i - 1] + 1);
	ASSERT(td_log_has(&p, "the backup holds checkpoint"));
	ASSERT(td_log_has(&p, "the backup commits again"));
	printf("  held %" PRIu64 "-%" PRIu64 " on the backup's own word; acks went on to %" PRIu64 "\n",
	       held[0], held[nh - 1], td_max_ack(&p));
	return TEST_OK;
}

/*
 * A backup whose very first checkpoints are held (its disk not whole at
 * start: a dead overlay's resync, a returning host's full resync) says
 * `standby` once they commit: the first commit is a held one, not the
 * one that lets it.
 */
int test_device_backup_holds_from_the_first(void)
{
	struct td p, b;
	char path[512];
	const char *cfg = memdisk_config(path, sizeof(path));
	uint64_t held[64];

	start_pair(&p, &b, cfg, NULL, "disk-backup-holds@1", 0);
	if (!WAIT_FOR(status_num("primary", "last_acked_epoch") >= 12, 30000))
		fail_dump(&p, &b, "no acknowledgement after the held first checkpoints");
	ASSERT_EQ(event_epochs(&b, "held", held, 64), 8);
	if (!WAIT_FOR(status_is("backup", "standby"), 5000))
		fail_dump(&p, &b, "the backup commits but does not say standby");
	td_stop(&p);
	td_stop(&b);
	printf("  checkpoints %" PRIu64 "-%" PRIu64 " held from the first; the backup says "
	       "standby once they committed\n", held[0], held[7]);
	return TEST_OK;
}

/*
 * Failover while checkpoints are held (the fence flag stays up): the
 * guest resumes from the last checkpoint every device let commit, never
 * from a held one, and equals it.
 */
int test_device_failover_while_held(void)
{
	struct td p, b;
	char path[512], flag[600];
	const char *cfg = memdisk_config(path, sizeof(path));
	uint64_t held[4096], act = 0;
	FILE *f;
	int nh;

	start_pair(&p, &b, cfg, NULL, NULL, 10);
	snprintf(flag, sizeof(flag), "%s.fenced", path);
	ASSERT((f = fopen(flag, "w")) != NULL);
	fclose(f);
	if (!WAIT_FOR(td_events(&b, "held", NULL, NULL) >= 5, 20000))
		fail_dump(&p, &b, "the fenced checkpoints were not held");
	td_kill(&p, SIGKILL);
	check_failover(&p, &b);		/* the guest equals its checkpoint */
	nh = event_epochs(&b, "held", held, 4096);
	ASSERT(nh >= 5);
	ASSERT_EQ(td_events(&b, "activated", &act, NULL), 1);
	ASSERT(act < held[0]);
	ASSERT(td_log_has(&b, "checkpoints held for the devices"));
	ASSERT(td_log_has(&b, "are discarded: the guest resumes from checkpoint"));
	td_stop(&b);
	unlink(flag);
	return TEST_OK;
}

/* ---- `tandem set`: tuning while protecting ------------------------------------ */

/* Acks the primary received over ms milliseconds. */
static double acks_over(uint64_t ms)
{
	double a0 = status_num("primary", "last_acked_epoch");

	usleep((useconds_t)ms * 1000);
	return status_num("primary", "last_acked_epoch") - a0;
}

static int set_cmd(const char *kv, char *out, size_t len)
{
	return test_capture(out, len, "TANDEM_RUN_DIR=%s/run %s set " VM " %s 2>&1", test_tmpdir(),
			    test_tandem_bin(), kv);
}

/*
 * interval changes on a protected VM: both daemons take it, epochs go on
 * (no new initial copy), the achieved rate follows, status says the
 * running value differs from the file; keys that cannot change live and
 * bad values are refused; a reconnect after the change still handshakes
 * (both sides present the new configuration digest).
 */
int test_engine_live_set(void)
{
	struct td p, b;
	const char *cfg = td_config(VM, "interval = 200ms\nmemory = 1M\non-peer-loss = manual\n");
	char out[1024], js[8192];
	double slow, fast;

	start_pair(&p, &b, cfg, NULL, NULL, 3);
	slow = acks_over(3000);
	ASSERT_EQ(set_cmd("interval=40ms", out, sizeof(out)), 0);
	ASSERT_STR_CONTAINS(out, "ok: interval=40ms");
	ASSERT(WAIT_FOR(status_num("backup", "interval_ms") == 40, 5000));
	ASSERT_EQ(status_num("primary", "interval_ms"), 40);
	fast = acks_over(3000);
	printf("  interval 200ms -> 40ms: %.0f acks in 3 s before, %.0f after\n", slow, fast);
	ASSERT(fast >= 2 * slow);
	snprintf(js, sizeof(js), "%s", td_status(VM, "primary"));
	ASSERT_STR_CONTAINS(js, "\"running_config_differs\":\"interval=40ms (file: 200ms)\"");
	test_capture(js, sizeof(js), "TANDEM_RUN_DIR=%s/run %s status " VM " 2>&1", test_tmpdir(),
		     test_tandem_bin());
	ASSERT_STR_CONTAINS(js, "running configuration differs from the file: interval=40ms "
			    "(file: 200ms)");
	ASSERT(td_log_has(&p, "configuration changed while protecting: interval=40ms"));
	ASSERT(td_log_has(&b, "interval 200ms -> 40ms"));
	ASSERT(!td_log_has(&p, "protection starts over"));

	/* refused: not live, unknown, out of bounds, breaking the budget rule */
	ASSERT(set_cmd("replication=127.0.0.1:1", out, sizeof(out)) != 0);
	ASSERT_STR_CONTAINS(out, "cannot change while protecting");
	ASSERT(set_cmd("intervall=40ms", out, sizeof(out)) != 0);
	ASSERT_STR_CONTAINS(out, "unknown key");
	ASSERT(set_cmd("interval=5ms", out, sizeof(out)) != 0);
	ASSERT_STR_CONTAINS(out, "out of bounds");
	ASSERT(set_cmd("latency-budget=50ms", out, sizeof(out)) != 0);
	ASSERT_STR_CONTAINS(out, "at least two intervals");
	/* a primary restarted from its file (200ms): the backup goes back to
	 * its file's value with the new session */
	td_kill(&p, SIGKILL);
	td_start(&p, "primary", cfg, NULL);
	if (!WAIT_FOR(status_num("primary", "last_acked_epoch") >= 3, 20000))
		fail_dump(&p, &b, "the restarted primary did not protect");
	ASSERT(td_log_has(&b, "a new session: interval back to the file's 200ms"));
	ASSERT_EQ(status_num("backup", "interval_ms"), 200);
	ASSERT_EQ(set_cmd("interval=40ms", out, sizeof(out)), 0);
	ASSERT(WAIT_FOR(status_num("backup", "interval_ms") == 40, 5000));
	ASSERT_EQ(set_cmd("latency-budget=400ms", out, sizeof(out)), 0);

	/* interval cannot change while the backup is not connected; a
	 * backup restarted from its file (200ms) hears the primary's 40ms at
	 * the start of the new session: the setting outlives the restart */
	td_kill(&b, SIGKILL);
	ASSERT(WAIT_FOR(set_cmd("interval=100ms", out, sizeof(out)) != 0 &&
			strstr(out, "backup is not connected"), 10000));
	td_start(&b, "backup", cfg, NULL);
	if (!WAIT_FOR(status_num("backup", "interval_ms") == 40, 20000))
		fail_dump(&p, &b, "the restarted backup did not hear the running interval");
	{
		double a0 = status_num("primary", "last_acked_epoch");

		ASSERT(WAIT_FOR(status_num("primary", "last_acked_epoch") > a0 + 3, 20000));
	}
	ASSERT_EQ(status_num("primary", "interval_ms"), 40);
	ASSERT_STR_CONTAINS(td_status(VM, "primary"), "\"running_config_differs\":\"interval=40ms "
			    "(file: 200ms), latency-budget=400ms (file: 0ms)\"");
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}

/*
 * A disk that stops answering (fault point disk-hang-marker: one marker
 * write takes 3 timeouts): that checkpoint's pause is bounded by the
 * timeout, the pauses after it are not (their cuts fail at once while the
 * write hangs), the checkpoints are held, and protection goes on once the
 * device answers again.
 */
int test_device_hung_cut_bounded(void)
{
	struct td p, b;
	char path[512];
	const char *cfg = memdisk_config(path, sizeof(path));
	uint64_t held[4096];
	int nh;

	start_pair(&p, &b, cfg, "disk-hang-marker@10", NULL, 3);
	if (!WAIT_FOR(td_log_has(&p, "every device's cut is complete again") &&
		      td_max_ack(&p) >= 20, 20000))
		fail_dump(&p, &b, "protection did not go on after the hung marker write");
	ASSERT(td_log_has(&p, "fault point 'disk-hang-marker' fired"));
	ASSERT(td_log_has(&p, "did not complete within 1000 ms"));
	ASSERT(td_log_has(&b, "is held, not committed"));
	/* one pause of about the timeout, not one per checkpoint while it hung
	 * (3 without the bound): pauses over 0.5 s from the histogram */
	{
		const char *h = strstr(td_status(VM, "primary"), "\"pause_seconds\":{\"le\":[");
		double le[32], cnt[32], total;
		int n = 0, m = 0, at = -1;
		const char *q;

		ASSERT(h != NULL);
		for (q = strchr(h, '[') + 1; n < 32 && *q != ']'; n++) {
			le[n] = strtod(q, (char **)&q);
			q += *q == ',';
		}
		q = strstr(q, "\"counts\":[") + 10;
		for (; m < 32 && *q != ']'; m++) {
			cnt[m] = strtod(q, (char **)&q);
			q += *q == ',';
		}
		total = td_num(h, "count");
		for (int i = 0; i < n; i++)
			if (le[i] >= 0.5 && at < 0)
				at = i;
		ASSERT(at >= 0 && at < m);
		printf("  marker write hung 3 s: %.0f of %.0f pauses over 0.5 s\n", total - cnt[at],
		       total);
		ASSERT(total - cnt[at] >= 1);
		ASSERT(total - cnt[at] <= 2);
	}
	nh = event_epochs(&b, "held", held, 4096);
	ASSERT(nh >= 2);
	td_stop(&p);
	td_stop(&b);
	return TEST_OK;
}
