/*
 * test_disk_failover.c - a protected guest with a DRBD disk, end to end,
 * under Debian's 6.1 kernel (tests/vm61): the real `tandem primary` and
 * `tandem backup`, a DRBD 8.4 pair in one kernel, tandem's overlay under
 * the backup's secondary, the dm-linear switch, and a failover after
 * which the backup's disk must be the last committed checkpoint's.
 *
 * "Host A": /dev/ram0 (disk) and /dev/ram2 (DRBD metadata) under
 * tdmA-lower, resource r0 (minor 0, primary), the guest's device
 * tdmA-guest = /dev/drbd0 without its marker block.  "Host B": /dev/ram1
 * and /dev/ram3 under tdmB-lower, resource r1 (minor 1).  Each host has
 * its own drbd.conf and tandem configuration (one kernel cannot hold two
 * resources of one name); DRBD's usermode helper is a wrapper that runs
 * drbdadm with the conf of the minor that called it, so the fence-peer
 * handler that runs is the one in the conf: `tandem fence-peer`.
 *
 * The guest is memdom with memdom-disk-writes: write k goes to block k of
 * tdmA-guest, stamped with k and the primary daemon's pid, and the guest
 * publishes step k * memdom-disk-steps only after the write returned.  A
 * checkpoint at step S has therefore seen writes 1..K complete, K = S /
 * steps; write K+1 may be in flight across the pause; writes after it
 * were issued after the guest resumed.  After the failover at checkpoint
 * N (memory at step S), B's disk must hold writes 1..K, maybe K+1, and
 * nothing later: I2 "the disk misses a write the checkpoint saw complete",
 * I1 "the disk is ahead of the memory".
 *
 * Phases: (1) protect; DRBD disconnects and comes back (held checkpoints,
 * commits again after the resync and a fresh marker); T4: DRBD's link
 * breaks (its packets dropped on lo): DRBD runs the fence-peer handler,
 * the verdicts say fenced, B holds every checkpoint and commits none until
 * the link healed, DRBD is whole and a fresh marker came; stop the backup
 * cleanly: its overlay writes back what it held, DRBD's lower device is
 * the real disk again, and DRBD's online verify finds B's disk equal to
 * A's; (2) a backup killed with its overlay under DRBD: the next one puts
 * the real disk back and has DRBD resync it (drbdadm invalidate) before
 * anything commits, protects again and stops cleanly; (3) a backup stalls in a
 * commit (fault point slow-commit) while A's guest runs on and writes
 * past the last checkpoint, A "dies" (daemon killed, r0 disconnected), B
 * activates: the disk and memory checks above, writes after the marker
 * discarded, r1 Primary over the real disk; (4) T6: A's r0, still primary,
 * meets r1 again: DRBD detects the split brain and disconnects, nothing
 * resyncs, B's disk keeps its checkpoint.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "daemon.h"
#include "test.h"

#define DF_NAME "dk"
#define DF_STEPS 800			/* memdom-disk-steps: 25 writes a second */
#define DF_BLOCK 4096u
#define DF_A "127.0.0.1"		/* DRBD's addresses */
#define DF_B "127.0.0.1"
#define DF_MAGIC 0x77646474u		/* domain/memdom.c DISKW_MAGIC */
/* Both hosts' keys (a 2 MiB guest: memdom copies all of it at each
 * checkpoint on this kernel, which has no uffd-wp async). */
#define DF_COMMON "memdom-disk-steps = %d\nepochs-in-flight = 4\nmemory = 2M\nhotset = 1M\n" \
		  "interval = 50ms\ntimeout = 5s\n"

static uint64_t le(const uint8_t *p, int n)
{
	uint64_t v = 0;

	for (int i = n - 1; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

/* Read block k of dev: its write number and writer pid (0, 0 = never written). */
static int read_stamp(int fd, uint64_t k, uint64_t *wk, uint32_t *pid)
{
	static uint8_t *buf;

	if (!buf && posix_memalign((void **)&buf, 4096, DF_BLOCK))
		return -ENOMEM;
	if (pread(fd, buf, DF_BLOCK, (off_t)(k * DF_BLOCK)) != (ssize_t)DF_BLOCK)
		return -EIO;
	*wk = 0;
	*pid = 0;
	if (le(buf, 4) != DF_MAGIC)
		return 0;
	*wk = le(buf + 8, 8);
	*pid = (uint32_t)le(buf + 24, 4);
	return 0;
}

/* DRBD's side of a failure: its helper's calls, its state, its kernel log. */
static void df_dump(const char *dir)
{
	static char out[8192];

	test_capture(out, sizeof(out), "tail -20 %s/drbd-helper.log; cat /proc/drbd; "
		     "dmesg | grep -i drbd | tail -25", dir);
	printf("--- DRBD:\n%s\n", out);
}

static void df_cleanup(const char *dir)
{
	(void)!system("for r in r0 r1; do /lib/drbd/drbdsetup-84 down $r; done >/dev/null 2>&1; "
		      "for d in tdmA-guest tdmB-guest tdmA-lower tdmB-lower; do dmsetup remove $d; done "
		      ">/dev/null 2>&1");
	(void)dir;
}

static const char *drbd_conf(const char *file, const char *res, int minor, const char *host,
			     const char *lower, const char *meta, const char *addr,
			     const char *peer_addr, const char *tandem_host, const char *cfg)
{
	char text[2048];

	snprintf(text, sizeof(text),
		 "resource %s {\n"
		 "  net { protocol C; after-sb-0pri disconnect; after-sb-1pri disconnect;\n"
		 "        after-sb-2pri disconnect; csums-alg crc32c; verify-alg crc32c;\n"
		 "        on-congestion block; timeout 10; ping-int 1; ping-timeout 5;\n"
		 "        connect-int 1; }\n"
		 "  disk { fencing resource-and-stonith; on-io-error detach; }\n"
		 "  handlers { fence-peer \"%s fence-peer --this-host %s %s\"; }\n"
		 "  on %s { device /dev/drbd%d minor %d; disk %s; meta-disk %s;\n"
		 "          address %s; }\n"
		 "  on peer-of-%s { device /dev/drbd%d minor %d; disk /dev/mapper/none; meta-disk /dev/none;\n"
		 "          address %s; }\n"
		 "}\n", res, test_tandem_bin(), tandem_host, cfg, host, minor, minor, lower, meta, addr, res,
		 minor, minor, peer_addr);
	return test_write_file(file, text);
}

static char run_a[600], run_b[600];

/*
 * One host's configuration: both hosts named (`hosts`, so that re-protection
 * can turn the roles round), each with its own file for what is per host
 * (the disk's resource and DRBD configuration, the run-dir: one kernel
 * holds both "hosts", so the resources and run-dirs must differ).
 */
static const char *host_config(const char *file, const char *run, const char *extra)
{
	int port = 20000 + (int)(getpid() % 20000);
	char text[4096];

	td_config(DF_NAME, NULL);	/* the key file */
	snprintf(text, sizeof(text),
		 "name = %s\ndomain = memdom\nhosts = alpha 127.0.0.1:%d, beta 127.0.0.1:%d\n"
		 "key-file = %s/key\nrun-dir = %s\nstate-dir = %s\nheartbeat-interval = 50ms\n"
		 "workload-rate = 20000\nworkload-pattern = hotset\nnetbuf = none\n"
		 "allow-unsafe-no-buffering = yes\n%s",
		 DF_NAME, port, port + 10, test_tmpdir(), run, run, extra);
	return test_write_file(file, text);
}

static const char *status_of(const char *run, const char *role)
{
	return td_status_at(run, DF_NAME, role);
}

static bool state_is(const char *run, const char *role, const char *state)
{
	char st[64];

	return !strcmp(td_str(status_of(run, role), "state", st, sizeof(st)), state);
}

static bool backup_active(void)
{
	return state_is(run_b, "backup", "active");
}

static bool acked_at_least(const struct td *p, uint64_t n)
{
	return td_max_ack(p) >= n;
}

/* dmsetup table NAME's device as "MAJ:MIN". */
static void dm_target(const char *name, char *out, size_t len)
{
	char buf[256] = "";
	unsigned long long a, b;
	unsigned ma = 0, mi = 0;

	test_capture(buf, sizeof(buf), "dmsetup table %s", name);
	if (sscanf(buf, "%llu %llu linear %u:%u", &a, &b, &ma, &mi) != 4)
		snprintf(out, len, "?");
	else
		snprintf(out, len, "%u:%u", ma, mi);
}

/* What FILE holds from byte `from` on (malloc'd, NUL-ended; "" if none). */
static char *tail_from(const char *file, long from)
{
	FILE *f = fopen(file, "r");
	char *buf;
	long n = 0;

	if (!f)
		return strdup("");
	fseek(f, 0, SEEK_END);
	n = ftell(f) - from;
	if (n < 0)
		n = 0;
	buf = calloc(1, (size_t)n + 1);
	fseek(f, from, SEEK_SET);
	if (buf && n)
		n = (long)fread(buf, 1, (size_t)n, f);
	fclose(f);
	if (buf)
		buf[n] = '\0';
	return buf ? buf : strdup("");
}

static long file_size(const char *file)
{
	FILE *f = fopen(file, "r");
	long n;

	if (!f)
		return 0;
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fclose(f);
	return n;
}

/*
 * T4, after the break: B's events from the break on.  The first "held"
 * opens the fenced stretch; the commits that end it must be held ones
 * followed by one checkpoint that was not held, later than `fresh_after`
 * (whose marker was the last before DRBD was whole): nothing commits by
 * itself between the break and a fresh marker.  Returns the checkpoint
 * that ended it (0 and `why` set when the order is broken).
 */
static uint64_t fenced_stretch(const char *ev, uint64_t fresh_after, unsigned *nheld, char *why,
			       size_t len)
{
	uint64_t held[512], n;
	unsigned nh = 0;
	bool in = false;
	const char *l = ev;

	*nheld = 0;
	while (l && *l) {
		bool is_held = sscanf(l, "held %" SCNu64, &n) == 1;
		bool is_commit = !is_held && sscanf(l, "commit %" SCNu64, &n) == 1;

		if (is_held) {
			in = true;
			if (nh < 512)
				held[nh++] = n;
		} else if (is_commit && in) {
			bool was_held = false;

			for (unsigned i = 0; i < nh; i++)
				was_held |= held[i] == n;
			if (!was_held) {
				*nheld = nh;
				if (n <= fresh_after) {
					snprintf(why, len, "checkpoint %" PRIu64 " committed after the break "
						 "but its marker is not after DRBD was whole (checkpoint %"
						 PRIu64 "'s was the last before)", n, fresh_after);
					return 0;
				}
				return n;
			}
		}
		l = strchr(l, '\n');
		l = l ? l + 1 : NULL;
	}
	snprintf(why, len, "no checkpoint committed after the fenced stretch (%u held)", nh);
	return 0;
}

/*
 * DRBD's online verify of resource res (minor `minor`, conf), run to its
 * end: FAILs naming `what` unless it finds both disks equal (oos:0).
 */
static void verify_equal(const char *conf, const char *res, int minor, const char *what)
{
	char out[256], pat[32], cmd[128], all[4096];
	int done0;

	test_capture(out, sizeof(out), "dmesg | grep -c 'Online verify done'");
	done0 = atoi(out);
	test_sh("drbdadm -c %s verify %s", conf, res);
	if (!WAIT_FOR((test_capture(out, sizeof(out), "dmesg | grep -c 'Online verify done'"),
		       atoi(out) > done0), 120000))
		FAILF("DRBD's online verify did not finish");
	snprintf(pat, sizeof(pat), "/^ %d: cs/,/oos:/p", minor);
	snprintf(cmd, sizeof(cmd), "sed -n '%s' /proc/drbd | grep -o 'oos:[0-9]*'", pat);
	test_capture(out, sizeof(out), "%s", cmd);
	if (strncmp(out, "oos:0\n", 6)) {
		test_capture(all, sizeof(all), "cat /proc/drbd; dmesg | grep -i verify | tail -5");
		FAILF("%s (%s): %s", what, out, all);
	}
}

/*
 * The two "hosts" of one kernel, DRBD connected, r0 Primary and UpToDate,
 * A's guest device made; extra_b: more keys for B's configuration.
 */
static int df_setup(const char *extra_b, const char **cfg_a, const char **cfg_b,
		    const char **conf_a, const char **conf_b)
{
	struct utsname u;
	const char *dir = test_tmpdir();
	char extra[2048], out[4096], helper[600];

	if (!getenv("TANDEM_VM61"))
		test_skip("runs under Debian's 6.1 kernel (disk_failover_vm61)");
	if (access("/proc/drbd", F_OK) || access("/dev/nbd0", F_OK) || access("/dev/ram3", F_OK) ||
	    access("/dev/mapper/control", F_OK))
		FAILF("drbd, nbd, brd or dm-mod missing (VM61_MODS=\"drbd nbd brd dm-mod\")");
	ASSERT_EQ(uname(&u), 0);
	setenv("DM_DISABLE_UDEV", "1", 1);	/* no udev in the VM: libdevmapper makes the nodes */
	df_cleanup(dir);

	/* the two hosts' tandem configurations: one kernel, so two resources */
	snprintf(run_a, sizeof(run_a), "%s/run-alpha", dir);
	snprintf(run_b, sizeof(run_b), "%s/run-beta", dir);
	snprintf(extra, sizeof(extra), "disks = r0:/dev/mapper/tdmA-guest\ndrbd-conf = %s/drbd-a.conf\n"
		 "memdom-disk-writes = /dev/mapper/tdmA-guest\n"
		 DF_COMMON, dir, DF_STEPS);
	*cfg_a = host_config("a.cfg", run_a, extra);
	snprintf(extra, sizeof(extra), "disks = r1:/dev/mapper/tdmB-guest\ndrbd-conf = %s/drbd-b.conf\n"
		 DF_COMMON "%s", dir, DF_STEPS, extra_b);
	*cfg_b = host_config("b.cfg", run_b, extra);
	*conf_a = drbd_conf("drbd-a.conf", "r0", 0, u.nodename, "/dev/mapper/tdmA-lower", "/dev/ram2",
			   DF_A ":7788", DF_B ":7789", "alpha", *cfg_a);
	*conf_b = drbd_conf("drbd-b.conf", "r1", 1, u.nodename, "/dev/mapper/tdmB-lower", "/dev/ram3",
			   DF_B ":7789", DF_A ":7788", "beta", *cfg_b);
	/* DRBD's helper: drbdadm with the conf of the minor that calls it */
	snprintf(helper, sizeof(helper), "%s/drbd-helper", dir);
	/* (its second argument names the resource, r0 or r1, for the
	 * connection's helpers such as fence-peer, the device, minor-0 or
	 * minor-1, for the device's) */
	snprintf(extra, sizeof(extra), "#!/bin/sh\necho \"$*\" >>\"$0.log\"\n"
		 "case \"$2\" in r0|minor-0) c=a ;; *) c=b ;; esac\n"
		 "drbdadm -c %s/drbd-$c.conf \"$@\" 2>>\"$0.log\"\nrc=$?\n"
		 "echo \"$*: exit $rc\" >>\"$0.log\"\nexit $rc\n", dir);
	test_write_file("drbd-helper", extra);
	/* printf, not echo: a newline would end up in the helper's path, and
	 * every helper call would fail (DRBD says "returned 0") */
	test_sh("chmod +x %s && printf %%s %s >/sys/module/drbd/parameters/usermode_helper", helper,
		helper);

	/* the stacks */
	test_sh("dmsetup create tdmA-lower --table '0 32768 linear /dev/ram0 0' && "
		"dmsetup create tdmB-lower --table '0 32768 linear /dev/ram1 0'");
	test_sh("drbdmeta --force 0 v08 /dev/ram2 flex-external create-md </dev/null >/dev/null 2>&1 && "
		"drbdmeta --force 1 v08 /dev/ram3 flex-external create-md </dev/null >/dev/null 2>&1");
	test_sh("drbdadm -c %s up r0 && drbdadm -c %s up r1", *conf_a, *conf_b);
	if (!WAIT_FOR(test_file_has("/proc/drbd", "0: cs:Connected", "1: cs:Connected"), 60000)) {
		test_capture(out, sizeof(out), "cat /proc/drbd");
		FAILF("the DRBD pair did not connect: %s", out);
	}
	test_sh("drbdadm -c %s -- --clear-bitmap new-current-uuid r0 && drbdadm -c %s primary r0",
		*conf_a, *conf_a);
	if (!WAIT_FOR(test_file_has("/proc/drbd",
				    "0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate", NULL),
		      30000))
		FAILF("r0 did not become Primary/UpToDate");
	test_sh("dmsetup create tdmA-guest --table \"0 $(( $(blockdev --getsz /dev/drbd0) - 8 )) "
		"linear /dev/drbd0 0\"");
	return TEST_OK;
}

int test_disk_failover_run(void)
{
	struct td prim, back;
	const char *dir = test_tmpdir(), *cfg_a = NULL, *cfg_b = NULL, *conf_a = NULL,
		   *conf_b = NULL;
	char extra[2048], out[4096], ram0[16], ram1[16], tgt[32];
	uint64_t n = 0, step = 0, kmax, wk;
	unsigned i1 = 0, i2 = 0, ahead_on_a = 0, in_flight = 0;
	uint32_t wpid;
	int fa, fb;

	int rc = df_setup("", &cfg_a, &cfg_b, &conf_a, &conf_b);

	if (rc != TEST_OK)
		return rc;
	test_capture(ram0, sizeof(ram0), "printf %%s $(( $(stat -c 0x%%t /dev/ram0) )):$(( $(stat -c 0x%%T /dev/ram0) ))");
	test_capture(ram1, sizeof(ram1), "printf %%s $(( $(stat -c 0x%%t /dev/ram1) )):$(( $(stat -c 0x%%T /dev/ram1) ))");

	/* (1) protect; a clean stop of the backup releases its overlay */
	td_start_host(&back, "backup", cfg_b, NULL, "beta", "backup");
	if (!WAIT_FOR(td_log_has(&back, "now goes through the overlay"), 30000)) {
		td_dump(&back);
		FAILF("the backup did not put its overlay under DRBD");
	}
	dm_target("tdmB-lower", tgt, sizeof(tgt));
	if (strncmp(tgt, "43:", 3))
		FAILF("tdmB-lower points at %s, not at an NBD device", tgt);
	td_start_host(&prim, "primary", cfg_a, NULL, "alpha", "primary");
	if (!WAIT_FOR(acked_at_least(&prim, 20), 60000)) {
		td_dump(&prim);
		td_dump(&back);
		FAILF("no 20 acknowledged checkpoints with a disk");
	}
	{
		const char *js = status_of(run_b, "backup");

		if (!strstr(js, "\"drbd_whole\":true") || !strstr(js, "\"overlay\":\"/dev/nbd") ||
		    !strstr(js, "\"overlay_held_bytes\":"))
			FAILF("the backup's status does not show its disk: %s", js);
	}
	/* DRBD disconnects mid-protection and comes back (the primary's side
	 * outdates B's disk as it goes): B's DRBD is not whole, so the backup
	 * holds every checkpoint, says so (HELD) and the primary goes on; the
	 * resync's writes reach B in block order, so nothing commits until
	 * DRBD is whole again and a fresh marker came; then the held
	 * checkpoints commit with it. */
	{
		int held0 = td_events(&back, "held", NULL, NULL), held1;
		uint64_t at_disc = td_max_ack(&prim), commit_before = 0, commit_after = 0;

		test_sh("drbdadm -c %s disconnect r0", conf_a);
		if (!WAIT_FOR(td_events(&back, "held", NULL, NULL) >= held0 + 3, 30000)) {
			td_dump(&prim);
			td_dump(&back);
			FAILF("no checkpoints held while DRBD was disconnected");
		}
		td_events(&back, "commit", &commit_before, NULL);
		test_sh("drbdadm -c %s connect r0", conf_a);
		if (!WAIT_FOR(td_max_ack(&prim) >= at_disc + 10, 60000)) {
			td_dump(&prim);
			td_dump(&back);
			df_dump(dir);
			FAILF("no acknowledgements after DRBD came back");
		}
		held1 = td_events(&back, "held", NULL, NULL);
		td_events(&back, "commit", &commit_after, NULL);
		ASSERT(td_log_has(&back, "DRBD is not whole here"));
		ASSERT(td_log_has(&back, "DRBD is whole here"));
		ASSERT(td_log_has(&prim, "the backup holds checkpoint"));
		printf("  DRBD disconnected and came back: %d checkpoints held (commits stood at %"
		       PRIu64 "), then committed on to %" PRIu64 "\n", held1 - held0, commit_before,
		       commit_after);
	}
	/* T4: the DRBD link BREAKS (its packets dropped on lo, where a
	 * disconnect by hand would outdate the peer politely): r0 loses its
	 * peer by DRBD's ping timeout, freezes its I/O and runs the fence-peer
	 * handler (tandem fence-peer); a marker in flight completes only after
	 * the handler answered, and the flag it put up makes that checkpoint's
	 * verdict and every later one fenced.  B holds them; nothing commits
	 * until DRBD is connected and UpToDate again (the link healed) and a
	 * fresh marker came. */
	{
		char helper_log[700], why[300], *ev, *blog, *hl = NULL;
		long ev0, blog0 = file_size(back.log), hl0;
		uint64_t at_break = td_max_ack(&prim), fresh_after = 0, ended;
		double fenced0 = td_num(status_of(run_a, "primary"), "fenced_verdicts");
		unsigned nheld;
		const char *w;

		snprintf(helper_log, sizeof(helper_log), "%s/drbd-helper.log", dir);
		hl0 = file_size(helper_log);
		ev0 = file_size(back.events);
		test_sh("tc qdisc add dev lo root handle 1: prio && "
			"for p in 7788 7789; do for d in sport dport; do "
			"tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip $d $p 0xffff "
			"action drop || exit 1; done; done");
		if (!WAIT_FOR((free(hl), hl = tail_from(helper_log, hl0), strstr(hl, "fence-peer r0: exit 5")),
			      30000)) {
			td_dump(&prim);
			df_dump(dir);
			FAILF("DRBD did not run the fence-peer handler after its link broke: %s", hl);
		}
		free(hl);
		if (!WAIT_FOR(td_events(&back, "held", NULL, NULL) >= 3 &&
			      td_num(status_of(run_a, "primary"), "fenced_verdicts") > fenced0, 30000)) {
			td_dump(&prim);
			td_dump(&back);
			df_dump(dir);
			FAILF("no fenced verdicts and held checkpoints after the DRBD link broke");
		}
		test_sh("tc qdisc del dev lo root");
		/* (acks alone do not say it: some that arrive after the break
		 * are of checkpoints taken before it) */
		if (!WAIT_FOR(td_log_has(&prim, "the fence flag is down") &&
			      td_max_ack(&prim) >= at_break + 10 &&
			      (ev = tail_from(back.events, ev0),
			       ended = fenced_stretch(ev, 0, &nheld, why, sizeof(why)), free(ev),
			       ended > 0), 90000)) {
			td_dump(&prim);
			td_dump(&back);
			df_dump(dir);
			FAILF("protection did not come back after the DRBD link healed");
		}
		blog = tail_from(back.log, blog0);
		w = blog;
		while ((w = strstr(w, "DRBD is whole here (")) && (w = strstr(w, "after checkpoint ")))
			fresh_after = strtoull(w + strlen("after checkpoint "), NULL, 10);
		ev = tail_from(back.events, ev0);
		ended = fenced_stretch(ev, fresh_after, &nheld, why, sizeof(why));
		if (!ended || !fresh_after) {
			td_dump(&prim);
			td_dump(&back);
			df_dump(dir);
			FAILF("T4: %s (DRBD whole after checkpoint %" PRIu64 ")", why, fresh_after);
		}
		printf("  T4: DRBD's link broke: the fence-peer handler ran, %.0f fenced verdicts, %u "
		       "checkpoints held, none committed until DRBD was whole again (after checkpoint %"
		       PRIu64 "'s marker) and checkpoint %" PRIu64 " came with a fresh marker\n",
		       td_num(status_of(run_a, "primary"), "fenced_verdicts") - fenced0, nheld,
		       fresh_after, ended);
		free(blog);
		free(ev);
	}
	/* SIGTERM and its whole exit (td_stop would SIGKILL after 5 s: the
	 * release's dmsetup calls are slow under TCG) */
	kill(back.pid, SIGTERM);
	if (!WAIT_FOR(td_exited(&back), 60000))
		FAILF("the backup did not exit within 60 s of SIGTERM");
	if (!td_log_has(&back, "overlay of " DF_NAME " released")) {
		td_dump(&back);
		FAILF("the backup's clean stop did not release its overlay");
	}
	dm_target("tdmB-lower", tgt, sizeof(tgt));
	if (strcmp(tgt, ram1))
		FAILF("after a clean stop tdmB-lower points at %s, not at /dev/ram1 (%s)", tgt, ram1);
	snprintf(extra, sizeof(extra), "%s/" DF_NAME ".r1.lower", run_b);
	ASSERT(access(extra, F_OK) != 0);
	if (!test_file_has("/proc/drbd", "1: cs:Connected", NULL) ||
	    test_file_has("/proc/drbd", "1: cs:Connected ro:Secondary/Primary ds:Diskless", NULL))
		FAILF("DRBD lost its disk or its peer over the release");
	/* B's disk equals A's (DRBD's online verify, A's guest still writing):
	 * the release wrote back everything DRBD saw complete. */
	verify_equal(conf_a, "r0", 0, "after the release B's disk differs from A's");
	printf("  clean stop: overlay released, tdmB-lower over /dev/ram1 again, r1 still "
	       "connected; online verify: oos:0\n");

	/* (2) a backup killed with its overlay under DRBD: the writes it held
	 * are lost though DRBD saw them complete; the next backup puts the
	 * real disk back, has DRBD resync it from A, and protects again */
	td_start_host(&back, "backup", cfg_b, NULL, "beta", "backup");
	{
		uint64_t a0 = td_max_ack(&prim);

		if (!WAIT_FOR(td_max_ack(&prim) >= a0 + 10, 60000)) {
			td_dump(&prim);
			td_dump(&back);
			FAILF("no protection with the second backup");
		}
	}
	td_kill(&back, SIGKILL);
	dm_target("tdmB-lower", tgt, sizeof(tgt));
	if (strncmp(tgt, "43:", 3))
		FAILF("after SIGKILL tdmB-lower points at %s, not at the dead overlay", tgt);
	/* the next backup recovers: the real disk back, a full resync, then
	 * protection again; then it stops cleanly */
	td_start_host(&back, "backup", cfg_b, NULL, "beta", "backup");
	if (!WAIT_FOR(td_log_has(&back, "resyncs this disk from the primary"), 120000)) {
		td_dump(&back);
		FAILF("the backup after a killed one did not resync its disk");
	}
	{
		uint64_t a0 = td_max_ack(&prim);

		if (!WAIT_FOR(td_max_ack(&prim) >= a0 + 10, 180000)) {
			td_dump(&prim);
			td_dump(&back);
			FAILF("no protection after the resync that followed a killed backup");
		}
	}
	kill(back.pid, SIGTERM);
	if (!WAIT_FOR(td_exited(&back), 60000))
		FAILF("the backup did not exit within 60 s of SIGTERM");
	printf("  a killed backup: the next one put the real disk back, resynced it in full "
	       "and protected again\n");
	/* (3) a backup that stalls in its 30th commit while A runs on */
	td_start_host(&back, "backup", cfg_b, "slow-commit@30", "beta", "backup");
	if (!WAIT_FOR(td_log_has(&back, "fault point 'slow-commit' fired"), 90000)) {
		td_dump(&prim);
		td_dump(&back);
		FAILF("the second backup never reached its 30th commit");
	}
	test_sleep_ms(1500);	/* the stall lasts 3 timeouts: A's guest writes past its last checkpoint */
	td_kill(&prim, SIGKILL);	/* host A dies: its guest with it, */
	test_sh("drbdadm -c %s disconnect r0", conf_a);	/* and its DRBD */
	if (!WAIT_FOR(backup_active(), 60000)) {
		td_dump(&back);
		FAILF("the backup did not activate");
	}
	if (!td_grep(&back, "activated at step ", out, sizeof(out)) ||
	    sscanf(out, "%" SCNu64, &step) != 1)
		FAILF("no 'activated at step' in the backup's log");
	ASSERT(td_events(&back, "activated", &n, NULL) == 1);
	{
		uint64_t s2 = 0;
		char h1[80] = "", h2[80] = "";

		ASSERT(td_ckpt_step(&prim, n, &s2));
		if (s2 != step) {
			td_dump(&prim);
			td_dump(&back);
			FAILF("the standby activated at step %" PRIu64 ", checkpoint %" PRIu64 " was "
			      "taken at step %" PRIu64, step, n, s2);
		}
		ASSERT(td_ckpt_hash(&prim, n, h1));
		td_events(&back, "activated", NULL, h2);
		if (strcmp(h1, h2))
			FAILF("the standby's memory is not checkpoint %" PRIu64 "'s (%s vs %s)", n, h1, h2);
	}

	/* the disks: B's after activation, A's as its guest left it */
	kmax = step / DF_STEPS;
	ASSERT((fa = open("/dev/ram0", O_RDONLY | O_DIRECT)) >= 0);
	ASSERT((fb = open("/dev/ram1", O_RDONLY | O_DIRECT)) >= 0);
	for (uint64_t k = 1; k < 4095; k++) {
		ASSERT_EQ(read_stamp(fb, k, &wk, &wpid), 0);
		if (wk && wk != k)
			FAILF("block %" PRIu64 " of B's disk holds write %" PRIu64, k, wk);
		if (k <= kmax && (!wk || wpid != (uint32_t)prim.pid))
			i2++;
		else if (k == kmax + 1)
			in_flight += wk != 0;
		else if (k > kmax + 1 && wk)
			i1++;
		ASSERT_EQ(read_stamp(fa, k, &wk, &wpid), 0);
		if (k > kmax + 1 && wk && wpid == (uint32_t)prim.pid)
			ahead_on_a++;
	}
	close(fa);
	close(fb);
	test_capture(out, sizeof(out), "grep -o 'the disk is checkpoint.*discarded' %s | tail -n 1",
		     back.log);
	printf("  failover at checkpoint %" PRIu64 " (guest step %" PRIu64 ", writes 1..%" PRIu64
	       " complete): B's disk I2 (missing) %u, I1 (ahead) %u, the write in flight %s; A's "
	       "guest had written %u blocks past it; backup: %s", n, step, kmax, i2, i1,
	       in_flight ? "landed" : "not there", ahead_on_a, out);
	if (kmax + 2 >= 4095)
		FAILF("the guest wrote the whole device: the test cannot tell what came after");
	ASSERT_EQ(i2, 0);
	ASSERT_EQ(i1, 0);
	if (!ahead_on_a)
		FAILF("A's guest wrote nothing past checkpoint %" PRIu64 ": the failover discarded "
		      "nothing, so the test proves nothing", n);
	ASSERT(td_log_has(&back, "discarded a write the guest issued after the checkpoint"));
	dm_target("tdmB-lower", tgt, sizeof(tgt));
	if (strcmp(tgt, ram1))
		FAILF("after activation tdmB-lower points at %s, not at /dev/ram1 (%s)", tgt, ram1);
	if (!WAIT_FOR(test_file_has("/proc/drbd", "1: cs:", "ro:Primary/"), 10000)) {
		test_capture(out, sizeof(out), "cat /proc/drbd");
		FAILF("r1 is not Primary after activation: %s", out);
	}
	/* the guest's device on B: created by the activation, after the
	 * promotion (a Secondary cannot be opened), over drbd1 without the
	 * marker block */
	dm_target("tdmB-guest", tgt, sizeof(tgt));
	test_capture(out, sizeof(out), "printf %%s $(( $(stat -c 0x%%t /dev/drbd1) )):$(( $(stat -c 0x%%T /dev/drbd1) ))");
	if (strcmp(tgt, out))
		FAILF("after activation tdmB-guest is over %s, not over /dev/drbd1 (%s)", tgt, out);
	test_capture(out, sizeof(out), "echo $(( $(blockdev --getsz /dev/drbd1) - $(blockdev --getsz /dev/mapper/tdmB-guest) ))");
	if (atoi(out) != 8)
		FAILF("tdmB-guest is not /dev/drbd1 less its 8-sector marker block (difference %s)", out);
	ASSERT(td_log_has(&back, "the guest's device /dev/mapper/tdmB-guest created"));
	printf("  activation created the guest's device tdmB-guest over /dev/drbd1 less its marker block\n");
	(void)ram0;
	/* T6: A comes back with r0 still primary and the two meet: DRBD must
	 * not settle it by itself (every after-sb-* is disconnect). */
	test_capture(out, sizeof(out), "dmesg | grep -c 'Split-Brain detected'");
	{
		int sb0 = atoi(out);

		test_sh("drbdadm -c %s connect r0; drbdadm -c %s connect r1", conf_a, conf_b);
		if (!WAIT_FOR((test_capture(out, sizeof(out), "dmesg | grep -c 'Split-Brain detected'"),
			       atoi(out) > sb0), 60000)) {
			test_capture(out, sizeof(out), "cat /proc/drbd");
			FAILF("both primaries met and DRBD saw no split brain: %s", out);
		}
	}
	if (test_file_has("/proc/drbd", "cs:Sync", NULL) ||
	    test_file_has("/proc/drbd", "0: cs:Connected", NULL)) {
		test_capture(out, sizeof(out), "cat /proc/drbd");
		FAILF("after a split brain DRBD resyncs or stays connected: %s", out);
	}
	ASSERT((fb = open("/dev/ram1", O_RDONLY | O_DIRECT)) >= 0);
	for (uint64_t k = kmax + 2; k < 4095; k++) {
		ASSERT_EQ(read_stamp(fb, k, &wk, &wpid), 0);
		if (wk && wpid == (uint32_t)prim.pid)
			FAILF("after the split brain B's block %" PRIu64 " holds A's write", k);
	}
	close(fb);
	printf("  T6: both primaries met: DRBD detected the split brain and disconnected; B's "
	       "disk kept its checkpoint\n");

	/* (5) re-protection: A returns as a backup.  Its r0 is still Primary,
	 * stands alone after the split brain, and holds writes its guest made
	 * after checkpoint N that B never kept (ahead_on_a blocks, in no DRBD
	 * bitmap).  Its backup steps r0 down and has it resynced in full
	 * (invalidate); B's active daemon finds it and becomes its primary,
	 * connecting r1, which also stands alone; nothing commits on A until
	 * its disk is whole and a fresh marker came; then A's disk equals
	 * B's (T5: online verify, oos:0) and A's extra writes are gone. */
	{
		struct td aback;
		uint64_t c0 = 0, whole_at = 0;
		int fd, ahead_now = 0;

		test_sh("dmsetup remove tdmA-guest");	/* no guest on A any more */
		td_start_host(&aback, "backup", cfg_a, NULL, "alpha", "alpha-backup");
		if (!WAIT_FOR(td_log_has(&aback, "was Primary here, so this host ran the guest"),
			      60000)) {
			td_dump(&aback);
			FAILF("A's backup did not step its Primary r0 down");
		}
		printf("  re-protection: A's backup stepped r0 down\n");
		fflush(stdout);
		/* A's standby state too: its log says so just after the ack that
		 * B counts */
		if (!WAIT_FOR(state_is(run_b, "primary", "protecting") &&
			      td_num(status_of(run_b, "primary"), "last_acked_epoch") >= 10 &&
			      state_is(run_a, "backup", "standby"), 150000)) {
			test_capture(out, sizeof(out), "cat /proc/drbd");
			td_dump(&back);
			td_dump(&aback);
			FAILF("B did not re-protect the guest and its disk to A: %s", out);
		}
		ASSERT(td_log_has(&back, "re-protection: a backup of " DF_NAME " answers on alpha"));
		ASSERT(td_log_has(&aback, "resyncs this disk from the primary (drbdadm invalidate)"));
		ASSERT(td_log_has(&back, "stood alone") || td_log_has(&aback, "stood alone"));
		if (!test_file_has("/proc/drbd", "0: cs:Connected ro:Secondary/Primary "
				   "ds:UpToDate/UpToDate", "1: cs:Connected ro:Primary/Secondary")) {
			test_capture(out, sizeof(out), "cat /proc/drbd");
			FAILF("after re-protection DRBD is not A Secondary / B Primary, both "
			      "UpToDate: %s", out);
		}
		/* no commit on A before its disk was whole: in its log, the first
		 * commit ("standby holds checkpoint") comes after "DRBD is whole" */
		test_capture(out, sizeof(out), "grep -n 'DRBD is whole here' %s | head -n 1 | "
			     "cut -d: -f1", aback.log);
		whole_at = strtoull(out, NULL, 10);
		test_capture(out, sizeof(out), "grep -n 'standby holds checkpoint' %s | head -n 1 | "
			     "cut -d: -f1", aback.log);
		if (!whole_at || strtoull(out, NULL, 10) <= whole_at) {
			td_dump(&aback);
			FAILF("A's backup committed before its disk was whole (log lines %" PRIu64
			      " and %s)", whole_at, out);
		}
		ASSERT(td_events(&aback, "commit", &c0, NULL) > 0);
		/* A's extra writes are gone: its disk took B's blocks in full */
		ASSERT((fd = open("/dev/ram0", O_RDONLY | O_DIRECT)) >= 0);
		for (uint64_t k = kmax + 2; k < 4095; k++) {
			ASSERT_EQ(read_stamp(fd, k, &wk, &wpid), 0);
			ahead_now += wk && wpid == (uint32_t)prim.pid;
		}
		close(fd);
		if (ahead_now)
			FAILF("after re-protection %d blocks of A's disk still hold writes B never "
			      "had (of %u before)", ahead_now, ahead_on_a);
		/* T5: a clean stop of A's backup writes back what it holds; then
		 * DRBD's online verify finds both disks equal */
		kill(aback.pid, SIGTERM);
		if (!WAIT_FOR(td_exited(&aback), 60000))
			FAILF("A's backup did not exit within 60 s of SIGTERM");
		verify_equal(conf_b, "r1", 1, "after re-protection A's disk differs from B's");
		printf("  re-protection: A's r0 stepped down and resynced in full (%u blocks of its "
		       "own writes past checkpoint %" PRIu64 " overwritten), B protects again "
		       "(commit %" PRIu64 " on A), online verify after A's clean stop: oos:0\n",
		       ahead_on_a, n, c0);
	}

	/* (6) a planned switchover with the disk: A's backup again (same
	 * generation: no resync), then `tandem switchover` on B.  A activates
	 * from B's last checkpoint (its r0 Primary), B's process becomes A's
	 * backup: its r1, Primary until then, steps down and resyncs in full
	 * (both were Primary apart), and A protects to B.  After B's clean
	 * stop, online verify finds the disks equal. */
	{
		struct td aback;
		uint64_t a0, act = 0;
		char hash[80] = "", ckpt_hash[80] = "";

		/* A's guest will not write its disk: tdmA-guest is gone (phase 5) */
		snprintf(extra, sizeof(extra), "disks = r0:/dev/mapper/tdmA-guest\n"
			 "drbd-conf = %s/drbd-a.conf\n" DF_COMMON, dir, DF_STEPS);
		td_start_host(&aback, "backup", host_config("a2.cfg", run_a, extra), NULL, "alpha",
			      "alpha-backup2");
		a0 = (uint64_t)td_num(status_of(run_b, "primary"), "last_acked_epoch");
		if (!WAIT_FOR(state_is(run_a, "backup", "standby") &&
			      td_num(status_of(run_b, "primary"), "last_acked_epoch") >= a0 + 10,
			      120000)) {
			td_dump(&back);
			td_dump(&aback);
			FAILF("B did not protect to A's second backup");
		}
		if (test_capture(out, sizeof(out), "%s switchover --run-dir %s " DF_NAME " 2>&1",
				 test_tandem_bin(), run_b) != 0 || !strstr(out, "blackout ")) {
			td_dump(&back);
			td_dump(&aback);
			FAILF("the switchover failed: %s", out);
		}
		printf("  %s", out);
		if (!WAIT_FOR(td_events(&aback, "activated", &act, hash) == 1, 30000)) {
			td_dump(&back);
			td_dump(&aback);
			FAILF("A did not say it activated after the switchover");
		}
		ASSERT(td_ckpt_hash(&back, act, ckpt_hash));
		if (strcmp(hash, ckpt_hash))
			FAILF("A's guest after the switchover differs from B's checkpoint %" PRIu64,
			      act);
		if (!WAIT_FOR(state_is(run_a, "primary", "protecting") &&
			      state_is(run_b, "backup", "standby") &&
			      td_num(status_of(run_a, "primary"), "last_acked_epoch") >= 10, 180000)) {
			test_capture(extra, sizeof(extra), "cat /proc/drbd");
			td_dump(&back);
			td_dump(&aback);
			FAILF("A did not protect to B after the switchover: %s", extra);
		}
		ASSERT(td_log_has(&back, "DRBD resource r1 was Primary here"));
		ASSERT(td_log_has(&back, "resyncs this disk from the primary (drbdadm invalidate)"));
		/* B stepped down: its guest's device went first; A's activation
		 * made its own (removed in phase 5) */
		ASSERT(td_log_has(&back, "the guest's device /dev/mapper/tdmB-guest removed"));
		ASSERT(access("/dev/mapper/tdmB-guest", F_OK) != 0);
		ASSERT(td_log_has(&aback, "the guest's device /dev/mapper/tdmA-guest created"));
		if (!test_file_has("/proc/drbd", "0: cs:Connected ro:Primary/Secondary "
				   "ds:UpToDate/UpToDate", "1: cs:Connected ro:Secondary/Primary")) {
			test_capture(extra, sizeof(extra), "cat /proc/drbd");
			FAILF("after the switchover DRBD is not A Primary / B Secondary, both "
			      "UpToDate: %s", extra);
		}
		kill(back.pid, SIGTERM);	/* B's process, now A's backup */
		if (!WAIT_FOR(td_exited(&back), 60000))
			FAILF("B's backup did not exit within 60 s of SIGTERM");
		verify_equal(conf_a, "r0", 0, "after the switchover B's disk differs from A's");
		printf("  switchover: A runs the guest from B's checkpoint %" PRIu64 " (equal by "
		       "hash), r1 stepped down and resynced in full, A protects to B; online "
		       "verify after B's clean stop: oos:0\n", act);
		td_stop(&aback);
	}
	td_stop(&back);
	df_cleanup(dir);
	return TEST_OK;
}

/*
 * The overlay overflows under a running pair and protection comes back
 * without a restart: B's overlay has a limit of 1 MiB, and A's guest
 * device takes a 3 MiB burst inside one epoch.  The overlay refuses the
 * writes past its limit, DRBD detaches B's disk, and B's watch writes
 * what the overlay held through to the disk, has DRBD attach it again and
 * resync what it missed; the overlay holds writes again from the first
 * marker after DRBD is whole.  Asserted: the same backup process protects
 * again (10 more acknowledgements); no checkpoint commits between the
 * overflow and that marker; status shows the overflow counted and over;
 * after B's clean stop DRBD's online verify finds both disks equal.
 */
int test_disk_overflow_run(void)
{
	struct td prim, back;
	const char *dir = test_tmpdir(), *cfg_a = NULL, *cfg_b = NULL, *conf_a = NULL,
		   *conf_b = NULL;
	char why[300], *ev, *blog;
	const char *w, *js;
	long ev0, blog0;
	uint64_t at_burst, ended, armed_at = 0;
	unsigned nheld;
	int rc = df_setup("disk-overlay-limit = 1M\n", &cfg_a, &cfg_b, &conf_a, &conf_b);

	if (rc != TEST_OK)
		return rc;
	td_start_host(&back, "backup", cfg_b, NULL, "beta", "backup");
	if (!WAIT_FOR(td_log_has(&back, "now goes through the overlay"), 30000)) {
		td_dump(&back);
		FAILF("the backup did not put its overlay under DRBD");
	}
	td_start_host(&prim, "primary", cfg_a, NULL, "alpha", "primary");
	if (!WAIT_FOR(acked_at_least(&prim, 20), 60000)) {
		td_dump(&prim);
		td_dump(&back);
		FAILF("no 20 acknowledged checkpoints with a disk");
	}
	ev0 = file_size(back.events);
	blog0 = file_size(back.log);
	at_burst = td_max_ack(&prim);
	/* 3 MiB in one go, far from the blocks memdom's guest writes */
	test_sh("dd if=/dev/urandom of=/dev/mapper/tdmA-guest bs=1M count=3 seek=12 oflag=direct "
		"status=none");
	if (!WAIT_FOR(td_log_has(&back, "the overlay overflowed (disk-overlay-limit"), 30000)) {
		td_dump(&back);
		df_dump(dir);
		FAILF("B's overlay (limit 1M) did not overflow under a 3 MiB burst");
	}
	js = status_of(run_b, "backup");
	printf("  overflowed: %s\n", strstr(js, "\"overflows\":") ? strstr(js, "\"overflows\":") : js);
	if (!WAIT_FOR(td_log_has(&back, "holds writes again after checkpoint") &&
		      td_max_ack(&prim) >= at_burst + 10 && state_is(run_b, "backup", "standby"),
		      120000)) {
		td_dump(&prim);
		td_dump(&back);
		df_dump(dir);
		FAILF("protection did not come back after the overlay overflowed");
	}
	if (td_exited(&back))
		FAILF("the backup exited: protection came back only with a new process");
	ASSERT(td_log_has(&back, "has this disk again and resyncs it from the primary"));
	blog = tail_from(back.log, blog0);
	if ((w = strstr(blog, "holds writes again after checkpoint ")))
		armed_at = strtoull(w + strlen("holds writes again after checkpoint "), NULL, 10);
	free(blog);
	ASSERT(armed_at > 0);
	/* nothing committed between the overflow and the marker that ended
	 * write-through: the first checkpoint that commits by itself after
	 * the first held one is that one or later */
	ev = tail_from(back.events, ev0);
	ended = fenced_stretch(ev, armed_at - 1, &nheld, why, sizeof(why));
	free(ev);
	if (!ended)
		FAILF("after the overflow: %s", why);
	js = status_of(run_b, "backup");
	if (!strstr(js, "\"overflowed\":false") || !strstr(js, "\"overflows\":1") ||
	    !strstr(js, "\"overlay_through\":false") || !strstr(js, "\"drbd_whole\":true"))
		FAILF("B's status after the recovery: %s", js);
	/* B's clean stop writes back what it holds; then the disks are equal */
	kill(back.pid, SIGTERM);
	if (!WAIT_FOR(td_exited(&back), 60000))
		FAILF("the backup did not exit within 60 s of SIGTERM");
	verify_equal(conf_a, "r0", 0, "after the overflow and its resync B's disk differs from A's");
	printf("  overflow of B's overlay (1 MiB) under a 3 MiB burst after checkpoint %" PRIu64
	       ": DRBD detached and re-attached B's disk, %u checkpoints held, the overlay held "
	       "writes again from checkpoint %" PRIu64 "'s marker, the first commit %" PRIu64
	       "; same backup process; online verify after its clean stop: oos:0\n", at_burst,
	       nheld, armed_at, ended);
	(void)cfg_b;
	(void)conf_b;
	td_stop(&prim);
	df_cleanup(dir);
	return TEST_OK;
}

/*
 * Run `tandem-test TEST` under Debian's 6.1 kernel (tests/vm61/run.sh)
 * with these modules; passes when it passed there.
 */
static int df_in_vm61(const char *mods, unsigned timeout_s, const char *test)
{
	static char out[65536];

	if (getenv("TANDEM_VM61"))
		test_skip("already inside the VM");
	if (access("/lib/drbd/drbdsetup-84", X_OK) != 0)
		test_skip("no /lib/drbd/drbdsetup-84 (drbd-utils)");
	test_capture(out, sizeof(out), "VM61_MODS='%s' tests/vm61/run.sh --timeout %u -- "
		     "./tests/tandem-test %s 2>&1; echo \"exit=$?\"", mods, timeout_s, test);
	printf("%s", out);
	ASSERT_STR_CONTAINS(out, "exit=0");
	ASSERT_STR_CONTAINS(out, " 0 failed, 0 skipped");
	return TEST_OK;
}

/* ---- the disk fault schedule ------------------------------------------- */

static const char *ds_names[] = {
	"DRBD link broken", "DRBD disconnected", "overlay overflow (3 MiB burst)",
	"backup killed and restarted",
};
#define DS_KINDS 4

#define DS_MAX(a, b) ((a) > (b) ? (a) : (b))

static uint64_t ds_rng;

static unsigned ds_pick(unsigned n)
{
	ds_rng ^= ds_rng << 13;
	ds_rng ^= ds_rng >> 7;
	ds_rng ^= ds_rng << 17;
	return (unsigned)(ds_rng % n);
}

/*
 * One backup process's events from byte `from` on, against "no checkpoint
 * commits on the disk between this side's disk ceasing to be whole (or the
 * overlay writing through) and DRBD whole here again with a later marker".
 * The disk's own lines, each written under the lock of the change it
 * reports (so in the order of the changes): "disk-unwhole", "disk-through"
 * open the gate; "disk-whole N" (commits may follow above N), "disk-armed
 * K" (write-through ended at K's marker: K and later); "disk-commit N" must
 * then be past both, and closes the gate.  Returns the number of
 * violations, the first described in why.
 */
static unsigned ds_check_events(const char *events, long from, char *why, size_t len)
{
	char *ev = tail_from(events, from), *l = ev;
	uint64_t n, bound = 0;
	unsigned bad = 0;
	bool gated = false, whole = false, through = false, armed = false;

	while (l && *l) {
		if (!strncmp(l, "disk-unwhole", 12)) {
			gated = true;
			whole = false;
		} else if (!strncmp(l, "disk-through", 12)) {
			gated = through = true;
			whole = armed = false;
		} else if (sscanf(l, "disk-whole %" SCNu64, &n) == 1) {
			whole = true;
			bound = DS_MAX(bound, n + 1);
		} else if (sscanf(l, "disk-armed %" SCNu64, &n) == 1) {
			armed = true;
			bound = DS_MAX(bound, n);
		} else if (sscanf(l, "disk-commit %" SCNu64, &n) == 1) {
			if (gated && (!whole || (through && !armed) || n < bound) && !bad++)
				snprintf(why, len, "checkpoint %" PRIu64 " committed %s", n,
					 !whole ? "before DRBD was whole here again" :
					 through && !armed ? "while the overlay wrote through" :
					 "with a marker from before DRBD was whole");
			gated = whole = through = armed = false;
			bound = 0;
		}
		l = strchr(l, '\n');
		l = l ? l + 1 : NULL;
	}
	free(ev);
	return bad;
}

/* The disk's lines of a backup's events from byte `from` on, for a report. */
static void ds_print_disk_events(const char *events, long from)
{
	char *ev = tail_from(events, from), *l = ev;
	unsigned shown = 0;

	while (l && *l && shown < 80) {
		char *e = strchr(l, '\n');

		if (!strncmp(l, "disk-", 5) || !strncmp(l, "held ", 5)) {
			printf("    | %.*s\n", e ? (int)(e - l) : (int)strlen(l), l);
			shown++;
		}
		l = e ? e + 1 : NULL;
	}
	free(ev);
}

static void ds_link(bool broken)
{
	if (broken)
		test_sh("tc qdisc add dev lo root handle 1: prio && "
			"for p in 7788 7789; do for d in sport dport; do "
			"tc filter add dev lo parent 1: protocol ip prio 1 u32 match ip $d $p 0xffff "
			"action drop || exit 1; done; done");
	else
		test_sh("tc qdisc del dev lo root");
}

/* A pair that protects again after a fault: primary protecting, this
 * backup standby with DRBD whole, A's fence flag down, `more` acks. */
static bool ds_settled(struct td *prim, uint64_t acks)
{
	const char *js;

	if (!state_is(run_a, "primary", "protecting") || td_max_ack(prim) < acks)
		return false;
	js = status_of(run_b, "backup");	/* (one static buffer for both) */
	return strstr(js, "\"state\":\"standby\"") && strstr(js, "\"drbd_whole\":true");
}

/*
 * A randomized schedule of disk faults on a protected pair with a DRBD
 * disk (6.1 kernel; TANDEM_DISK_FAULTS faults, default 5, `make soak` 60; TANDEM_SEED
 * replays one): DRBD's link broken (its packets dropped: ping timeout,
 * fence-peer), DRBD disconnected by hand, a burst that overflows B's 1 MiB
 * overlay, B's backup killed and restarted (its dead overlay: the real
 * disk back, a full resync); each held 1-8 s.  After each: the pair
 * protects again within 150 s (5 more acks, B standby and whole), and B's
 * events show no commit across the fault before DRBD was whole and a
 * fresh marker came (ds_check_events).  At the end, after B's clean stop,
 * DRBD's online verify finds both disks equal.  Negative control: a
 * backup with the fault point disk-ignore-health (it commits without
 * waiting for DRBD) through DRBD disconnects must be caught.
 */
int test_disk_schedule_run(void)
{
	struct td prim, back;
	const char *dir = test_tmpdir(), *cfg_a = NULL, *cfg_b = NULL, *conf_a = NULL,
		   *conf_b = NULL, *env = getenv("TANDEM_DISK_FAULTS");
	unsigned want = env ? (unsigned)atoi(env) : 5, violations = 0, count[DS_KINDS] = { 0 };
	unsigned nback = 1;
	char why[300], tag[32];
	int rc = df_setup("disk-overlay-limit = 1M\n", &cfg_a, &cfg_b, &conf_a, &conf_b);

	if (rc != TEST_OK)
		return rc;
	ds_rng = getenv("TANDEM_SEED") ? strtoull(getenv("TANDEM_SEED"), NULL, 0) :
		 (uint64_t)test_now_ms() ^ ((uint64_t)getpid() << 32);
	if (!ds_rng)
		ds_rng = 1;
	printf("  seed %llu (TANDEM_SEED=%llu replays it)\n", (unsigned long long)ds_rng,
	       (unsigned long long)ds_rng);
	td_start_host(&back, "backup", cfg_b, NULL, "beta", "backup1");
	td_start_host(&prim, "primary", cfg_a, NULL, "alpha", "primary");
	if (!WAIT_FOR(ds_settled(&prim, 20), 90000)) {
		td_dump(&prim);
		td_dump(&back);
		FAILF("no 20 acknowledged checkpoints with a disk");
	}
	for (unsigned i = 0; i < want; i++) {
		unsigned kind = ds_pick(DS_KINDS), d = 1000 + ds_pick(7000), bad;
		long ev0 = file_size(back.events);
		uint64_t t0, want_acks;

		if (getenv("TANDEM_SCHEDULE_KIND"))
			kind = (unsigned)atoi(getenv("TANDEM_SCHEDULE_KIND")) % DS_KINDS;
		printf("  fault %u: %s, %u ms\n", i + 1, ds_names[kind], d);
		fflush(stdout);
		count[kind]++;
		switch (kind) {
		case 0:	/* (a duration, not a condition: the fault lasts d) */
			ds_link(true);
			test_sleep_ms(d);
			ds_link(false);
			break;
		case 1:
			test_sh("drbdadm -c %s disconnect r0", conf_a);
			test_sleep_ms(d);
			test_sh("drbdadm -c %s connect r0", conf_a);
			break;
		case 2:
			test_sh("dd if=/dev/urandom of=/dev/mapper/tdmA-guest bs=1M count=3 seek=%u "
				"oflag=direct status=none", 6 + 3 * (i % 3));
			break;
		case 3:
			td_kill(&back, SIGKILL);
			test_sleep_ms(d / 2);
			snprintf(tag, sizeof(tag), "backup%u", ++nback);
			td_start_host(&back, "backup", cfg_b, NULL, "beta", tag);
			ev0 = 0;
			break;
		}
		t0 = test_now_ms();
		want_acks = td_max_ack(&prim) + 5;
		if (!WAIT_FOR(ds_settled(&prim, want_acks), 150000)) {
			td_dump(&prim);
			td_dump(&back);
			df_dump(dir);
			printf("  primary: %s\n", status_of(run_a, "primary"));
			printf("  backup: %s\n", status_of(run_b, "backup"));
			FAILF("fault %u (%s, %u ms): the pair did not protect again within 150 s",
			      i + 1, ds_names[kind], d);
		}
		bad = ds_check_events(back.events, ev0, why, sizeof(why));
		if (bad) {
			printf("  VIOLATION after fault %u (%s): %s (%u in all); the disk's events:\n",
			       i + 1, ds_names[kind], why, bad);
			ds_print_disk_events(back.events, ev0);
			violations += bad;
		}
		printf("    protecting again after %.1f s\n", (double)(test_now_ms() - t0) / 1000);
	}
	kill(back.pid, SIGTERM);
	if (!WAIT_FOR(td_exited(&back), 60000))
		FAILF("the backup did not exit within 60 s of SIGTERM");
	verify_equal(conf_a, "r0", 0, "after the fault schedule B's disk differs from A's");
	printf("  disk schedule: faults=%u (link %u, disconnect %u, overflow %u, backup killed "
	       "%u) violations=%u; online verify after B's clean stop: oos:0\n", want, count[0],
	       count[1], count[2], count[3], violations);
	ASSERT_EQ(violations, 0);

	/* Negative control: a backup that commits without waiting for DRBD. */
	{
		unsigned caught = 0, tries;
		long ev0;

		uint64_t want_acks = td_max_ack(&prim) + 5;

		td_start_host(&back, "backup", cfg_b, "disk-ignore-health", "beta", "backup-nc");
		if (!WAIT_FOR(ds_settled(&prim, want_acks), 150000)) {
			td_dump(&prim);
			td_dump(&back);
			FAILF("negative control: the pair did not protect");
		}
		for (tries = 0; tries < 4 && !caught; tries++) {
			ev0 = file_size(back.events);
			test_sh("drbdadm -c %s disconnect r0", conf_a);
			test_sleep_ms(2000);
			test_sh("drbdadm -c %s connect r0", conf_a);
			want_acks = td_max_ack(&prim) + 5;
			if (!WAIT_FOR(ds_settled(&prim, want_acks), 150000))
				FAILF("negative control: the pair did not protect again");
			caught = ds_check_events(back.events, ev0, why, sizeof(why));
		}
		printf("  negative control (disk-ignore-health): violations=%u in %u disconnects%s%s\n",
		       caught, tries, caught ? ": " : "", caught ? why : "");
		ASSERT(caught > 0);
		td_stop(&back);
	}
	(void)cfg_b;
	(void)conf_b;
	td_stop(&prim);
	df_cleanup(dir);
	return TEST_OK;
}

/* The disk fault schedule under Debian's 6.1 kernel. */
int test_disk_schedule_vm61(void)
{
	const char *env = getenv("TANDEM_DISK_FAULTS");
	unsigned faults = env ? (unsigned)atoi(env) : 5;

	/* (a killed backup's successor resyncs in full: about a minute under TCG) */
	return df_in_vm61("drbd nbd brd dm-mod sch_prio act_gact", 300 + 120 * faults,
			  "disk_schedule_run");
}

/* The overlay's overflow and its way back, under Debian's 6.1 kernel. */
int test_disk_overflow_vm61(void)
{
	return df_in_vm61("drbd nbd brd dm-mod", 400, "disk_overflow_run");
}

/* The failover with a disk under Debian's 6.1 kernel (tests/vm61/run.sh). */
int test_disk_failover_vm61(void)
{
	return df_in_vm61("drbd nbd brd dm-mod sch_prio act_gact", 810, "disk_failover_run");
}
