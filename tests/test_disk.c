/*
 * test_disk.c - the disk's configuration: the `disks` key, and the DRBD
 * settings check-config refuses (disk/drbd.h), on canned `drbdadm dump`
 * texts and through the real drbdadm (drbd-utils).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "../config/config.h"
#include "../disk/drbd.h"
#include "../disk/marker.h"
#include "../disk/overlay.h"
#include "daemon.h"
#include "test.h"

int test_disk_config_key(void)
{
	struct tandem_config cfg;
	char err[2048], text[1024];
	static const char *const bad[] = {
		"r0", "r0:dev/x", ":/dev/x", "r 0:/dev/x", "r0:/dev/a, r0:/dev/b",
		"r0:/dev/a, r1:/dev/a",
		"a:/1,b:/2,c:/3,d:/4,e:/5,f:/6,g:/7,h:/8,i:/9",
	};

	snprintf(text, sizeof(text), "name = vm\nreplication = 127.0.0.1:7000\nkey-file = %s/k\n"
		 "disks = r0:/dev/mapper/tdm-vm-guest , data.1:/dev/vg/d\n", test_tmpdir());
	ASSERT_EQ(config_load(test_write_file("d.cfg", text), &cfg, err, sizeof(err)), 0);
	ASSERT_EQ(cfg.disks.n, 2);
	ASSERT(!strcmp(cfg.disks.d[0].resource, "r0"));
	ASSERT(!strcmp(cfg.disks.d[0].device, "/dev/mapper/tdm-vm-guest"));
	ASSERT(!strcmp(cfg.disks.d[1].resource, "data.1"));
	ASSERT(!strcmp(cfg.drbd_conf, "/etc/drbd.conf"));
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(text, sizeof(text), "name = vm\nreplication = 127.0.0.1:7000\n"
			 "key-file = %s/k\ndisks = %s\n", test_tmpdir(), bad[i]);
		if (config_load(test_write_file("d.cfg", text), &cfg, err, sizeof(err)) == 0)
			FAILF("disks = %s was accepted", bad[i]);
		ASSERT(strstr(err, "disks"));
	}
	return TEST_OK;
}

/* A dump as drbdadm prints it, with `extra` in its net and disk sections. */
static const char *meta_disk = "/dev/vg/web-md";

static const char *dump_with(const char *net, const char *disk, const char *handlers)
{
	static char buf[2048];

	snprintf(buf, sizeof(buf),
		 "# resource r0 on a: not ignored, not stacked\n"
		 "resource r0 {\n"
		 "    on a {\n        node-id 0;\n        device /dev/drbd4 minor 4;\n"
		 "        disk /dev/mapper/tdm-web-lower;\n        meta-disk %s;\n"
		 "        address ipv4 10.0.0.1:7789;\n    }\n"
		 "    on b {\n        node-id 1;\n        device /dev/drbd4 minor 4;\n"
		 "        disk /dev/mapper/tdm-web-lower;\n        meta-disk %s;\n"
		 "        address ipv4 10.0.0.2:7789;\n    }\n"
		 "    net {\n%s    }\n    disk {\n%s    }\n%s}\n", meta_disk, meta_disk, net, disk,
		 handlers);
	return buf;
}

#define GOOD_NET "        protocol C;\n        fencing resource-and-stonith;\n        csums-alg sha1;\n"
#define GOOD_HANDLERS "    handlers {\n        fence-peer \"/usr/sbin/tandem fence-peer /etc/tandem/vm.cfg\";\n    }\n"

int test_disk_drbd_refusals(void)
{
	static const struct {
		const char *net, *disk, *handlers, *want;
	} cases[] = {
		{ "protocol A; fencing resource-and-stonith;", "", GOOD_HANDLERS, "protocol A" },
		{ "protocol B; fencing resource-and-stonith;", "", GOOD_HANDLERS, "protocol B" },
		{ GOOD_NET "on-congestion pull-ahead;", "", GOOD_HANDLERS, "on-congestion pull-ahead" },
		{ GOOD_NET, "disk-flushes no; disk-drain no;", GOOD_HANDLERS, "disk-flushes no with disk-drain no" },
		{ GOOD_NET "after-sb-0pri discard-zero-changes;", "", GOOD_HANDLERS, "after-sb-0pri discard-zero-changes" },
		{ GOOD_NET "after-sb-1pri discard-secondary;", "", GOOD_HANDLERS, "after-sb-1pri discard-secondary" },
		{ GOOD_NET "after-sb-2pri call-pri-lost-after-sb;", "", GOOD_HANDLERS, "after-sb-2pri" },
		{ GOOD_NET "allow-two-primaries yes;", "", GOOD_HANDLERS, "allow-two-primaries" },
		{ "protocol C;", "", GOOD_HANDLERS, "fencing dont-care (the default)" },
		{ "protocol C; fencing dont-care;", "", GOOD_HANDLERS, "fencing dont-care" },
		{ GOOD_NET, "", "", "no fence-peer handler" },
	};
	struct drbd_resource_info info;
	char msg[4096];

	/* the good one: usable, and what it reports */
	ASSERT_EQ(drbd_check_dump(dump_with(GOOD_NET, "        disk-flushes no;\n", GOOD_HANDLERS),
				  "r0", "a", &info, msg, sizeof(msg)), 0);
	ASSERT(!strcmp(info.device, "/dev/drbd4"));
	ASSERT_EQ(info.protocol, 'C');
	ASSERT(!strcmp(info.fencing, "resource-and-stonith"));
	ASSERT(!strcmp(info.fence_peer, "/usr/sbin/tandem fence-peer /etc/tandem/vm.cfg"));
	ASSERT(!strcmp(info.disk, "/dev/mapper/tdm-web-lower"));
	ASSERT(!strcmp(info.meta_disk, "/dev/vg/web-md"));
	ASSERT_EQ(info.warnings, 0);
	/* internal metadata: the marker block would be DRBD's */
	meta_disk = "internal";
	ASSERT_EQ(drbd_check_dump(dump_with(GOOD_NET, "", GOOD_HANDLERS), "r0", "a", &info, msg,
				  sizeof(msg)), 1);
	ASSERT(strstr(msg, "refused: meta-disk internal"));
	meta_disk = "/dev/vg/web-md";
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		int r = drbd_check_dump(dump_with(cases[i].net, cases[i].disk, cases[i].handlers), "r0",
					"a", &info, msg, sizeof(msg));
		if (r != 1 || !strstr(msg, cases[i].want) || strncmp(msg, "refused: ", 9))
			FAILF("case %zu (%s): %d refusals: %s", i, cases[i].want, r, msg);
	}
	/* DRBD 8.4's layout: protocol at the resource, fencing in disk; no
	 * csums-alg is a warning, not a refusal; `device minor N` */
	ASSERT_EQ(drbd_check_dump("resource r0 {\n protocol C;\n on a { device minor 3; disk /dev/mapper/l; "
				  "flexible-meta-disk /dev/m; }\n"
				  " disk { fencing resource-only; }\n"
				  " handlers { fence-peer /x; }\n}\n", "r0", "a", &info, msg,
				  sizeof(msg)), 0);
	ASSERT(!strcmp(info.device, "/dev/drbd3"));
	ASSERT(!strcmp(info.meta_disk, "/dev/m"));
	ASSERT_EQ(info.warnings, 3);		/* resource-only, no csums-alg, a handler not tandem's */
	ASSERT(strstr(msg, "warning: fence-peer /x is not tandem's"));
	ASSERT(strstr(msg, "warning: fencing resource-only") && strstr(msg, "warning: no csums-alg"));
	/* not this host's resource; not a dump at all */
	ASSERT_EQ(drbd_check_dump(dump_with(GOOD_NET, "", GOOD_HANDLERS), "r0", "elsewhere", &info,
				  msg, sizeof(msg)), 1);
	ASSERT(strstr(msg, "no device for this host ('on elsewhere' section)"));
	ASSERT_EQ(drbd_check_dump("resource r0 { net { protocol C; }", "r0", "a", &info, msg,
				  sizeof(msg)), 1);
	ASSERT(strstr(msg, "cannot read the settings"));
	/* a lower disk the backup cannot switch to its overlay */
	ASSERT_EQ(drbd_check_dump("resource r0 {\n protocol C;\n on a { device minor 3; disk /dev/vg/d; "
				  "meta-disk /dev/m; }\n disk { fencing resource-and-stonith; }\n"
				  " handlers { fence-peer \"tandem fence-peer /c\"; }\n"
				  " net { csums-alg sha1; }\n}\n", "r0", "a", &info, msg, sizeof(msg)), 1);
	ASSERT(strstr(msg, "refused: disk /dev/vg/d: ") && strstr(msg, "device-mapper linear"));
	return TEST_OK;
}

/*
 * Through the real drbdadm: check-config refuses a resource with bad
 * settings (exit 2, each named), accepts a good one, says when drbdadm
 * cannot read the resource; the daemons say what stops a disk here.
 */
int test_disk_check_config(void)
{
	struct utsname u;
	char conf[2048], out[16384], cfgtext[1024];
	const char *drbd, *cfg;
	int rc;

	ASSERT_EQ(uname(&u), 0);
	ASSERT_EQ(test_capture(out, sizeof(out), "command -v drbdadm"), 0);	/* README installs drbd-utils */
	snprintf(conf, sizeof(conf),
		 "resource good {\n"
		 "  net { protocol C; fencing resource-and-stonith; csums-alg sha1; }\n"
		 "  handlers { fence-peer \"/usr/sbin/tandem fence-peer /etc/tandem/vm.cfg\"; }\n"
		 "  on %s { device /dev/drbd7; disk /dev/mapper/tdm-g-lower; address 10.9.0.1:7789; meta-disk /dev/vg/g-md; }\n"
		 "  on peer-of-%s { device /dev/drbd7; disk /dev/mapper/tdm-g-lower; address 10.9.0.2:7789; meta-disk /dev/vg/g-md; }\n"
		 "}\n"
		 "resource bad {\n"
		 "  net { protocol A; after-sb-1pri discard-secondary; on-congestion pull-ahead; }\n"
		 "  on %s { device /dev/drbd8; disk /dev/vg/b; address 10.9.0.1:7790; meta-disk internal; }\n"
		 "  on peer-of-%s { device /dev/drbd8; disk /dev/vg/b; address 10.9.0.2:7790; meta-disk internal; }\n"
		 "}\n", u.nodename, u.nodename, u.nodename, u.nodename);
	drbd = test_write_file("drbd.conf", conf);

	snprintf(cfgtext, sizeof(cfgtext), "disks = good:/dev/mapper/tdm-vm-guest\ndrbd-conf = %s\n", drbd);
	cfg = td_config("vm", cfgtext);
	rc = test_capture(out, sizeof(out), "%s check-config %s 2>&1", test_tandem_bin(), cfg);
	if (rc != 0 || !strstr(out, "# disk good: DRBD /dev/drbd7, protocol C") || strstr(out, "refused"))
		FAILF("good resource: exit %d: %s", rc, out);

	snprintf(cfgtext, sizeof(cfgtext), "disks = bad:/dev/mapper/tdm-vm-guest\ndrbd-conf = %s\n", drbd);
	cfg = td_config("vm", cfgtext);
	rc = test_capture(out, sizeof(out), "%s check-config %s 2>&1", test_tandem_bin(), cfg);
	ASSERT_EQ(rc, 2);
	ASSERT(strstr(out, "disk bad: refused: protocol A"));
	ASSERT(strstr(out, "disk bad: refused: on-congestion pull-ahead"));
	ASSERT(strstr(out, "disk bad: refused: after-sb-1pri discard-secondary"));
	ASSERT(strstr(out, "disk bad: refused: fencing dont-care"));
	ASSERT(strstr(out, "disk bad: refused: no fence-peer handler"));

	snprintf(cfgtext, sizeof(cfgtext), "disks = nosuch:/dev/mapper/tdm-vm-guest\ndrbd-conf = %s\n", drbd);
	cfg = td_config("vm", cfgtext);
	rc = test_capture(out, sizeof(out), "%s check-config %s 2>&1", test_tandem_bin(), cfg);
	ASSERT_EQ(rc, 2);
	ASSERT(strstr(out, "drbdadm cannot read DRBD resource 'nosuch'"));

	snprintf(cfgtext, sizeof(cfgtext), "disks = good:/dev/mapper/tdm-vm-guest\ndrbd-conf = %s\n", drbd);
	cfg = td_config("vm", cfgtext);
	/* The daemons start with disks now: each says what stops it here (no
	 * DRBD device on this host; no device-mapper device under it). */
	rc = test_capture(out, sizeof(out), "timeout 20 %s primary %s 2>&1", test_tandem_bin(), cfg);
	if (rc == 0 || !strstr(out, "disk good") || !strstr(out, "/dev/drbd7"))
		FAILF("primary with a disk whose DRBD device is missing: exit %d: %s", rc, out);
	rc = test_capture(out, sizeof(out), "timeout 20 %s backup %s 2>&1", test_tandem_bin(), cfg);
	if (rc == 0 || !strstr(out, "disk good") || !strstr(out, "tdm-g-lower"))
		FAILF("backup with a disk whose lower device is missing: exit %d: %s", rc, out);
	return TEST_OK;
}

/* ---- the checkpoint marker (disk/marker.h) ------------------------------------ */

int test_disk_marker(void)
{
	struct marker m = { .epoch = 0x0102030405060708ull, .time_ns = 42 }, got;
	struct marker_dev d;
	uint8_t blk[MARKER_SIZE];
	char path[512];
	FILE *f;

	/* CRC32C's check value (RFC 3720 B.4). */
	ASSERT_EQ(crc32c(0, "123456789", 9), 0xe3069283u);
	memset(m.session, 0xa5, sizeof(m.session));
	snprintf(m.vm, sizeof(m.vm), "web.2");
	marker_encode(&m, blk);
	ASSERT_EQ(marker_decode(blk, sizeof(blk), &got), 0);
	ASSERT_EQ(got.epoch, m.epoch);
	ASSERT(!memcmp(got.session, m.session, sizeof(m.session)));
	ASSERT(!strcmp(got.vm, "web.2"));
	ASSERT_EQ(got.time_ns, 42);
	ASSERT_EQ(marker_decode(blk, sizeof(blk) - 1, &got), -EINVAL);	/* short */
	blk[2000] ^= 1;			/* one flipped bit: a torn or foreign marker */
	ASSERT_EQ(marker_decode(blk, sizeof(blk), &got), -EBADMSG);
	memset(blk, 0, sizeof(blk));	/* a data block */
	ASSERT_EQ(marker_decode(blk, sizeof(blk), &got), -EINVAL);

	/* The block device stand-in: a file of 1 MiB + 1000 bytes; the marker
	 * goes in the last whole 4 KiB block. */
	snprintf(path, sizeof(path), "%s/disk.img", test_tmpdir());
	ASSERT((f = fopen(path, "w")) != NULL);
	ASSERT_EQ(ftruncate(fileno(f), 1048576 + 1000), 0);
	fclose(f);
	ASSERT_EQ(marker_dev_open(&d, path), 0);
	ASSERT_EQ(d.offset, 1048576 - MARKER_SIZE);
	ASSERT_EQ(marker_dev_read(&d, &got), -EINVAL);	/* zeros: no marker yet */
	m.epoch = 7;
	ASSERT_EQ(marker_dev_write(&d, &m), 0);
	ASSERT_EQ(marker_dev_read(&d, &got), 0);
	ASSERT_EQ(got.epoch, 7);
	marker_dev_close(&d);
	marker_dev_close(&d);		/* a no-op */
	ASSERT_EQ(truncate(path, MARKER_SIZE), 0);
	ASSERT_EQ(marker_dev_open(&d, path), -ENOSPC);
	ASSERT_EQ(marker_dev_open(&d, "/dev/null"), -ENOTBLK);
	return 0;
}

/*
 * tandem's DRBD fence-peer handler: with DRBD_RESOURCE one of the VM's
 * disks it puts the fence flag up and exits 5 (DRBD resumes I/O, the peer
 * outdated); anything else exits 1 (DRBD keeps I/O frozen).  And what
 * takes the flag down: drbdadm's cstate/dstate texts.
 */
int test_disk_fence_peer(void)
{
	char text[1024], cfg[512], flag[600], out[4096];
	struct stat st;

	snprintf(text, sizeof(text), "name = vm\nreplication = 127.0.0.1:7000\nkey-file = %s/k\n"
		 "run-dir = %s\ndisks = r0:/dev/mapper/tdm-vm-guest\n", test_tmpdir(),
		 test_tmpdir());
	snprintf(cfg, sizeof(cfg), "%s", test_write_file("f.cfg", text));
	snprintf(flag, sizeof(flag), "%s/vm.r0.fenced", test_tmpdir());
	ASSERT_EQ(test_capture(out, sizeof(out), "DRBD_RESOURCE=r0 DRBD_PEER_ADDRESS=10.0.0.2 %s "
			       "fence-peer %s 2>&1", test_tandem_bin(), cfg), 5);
	ASSERT_STR_CONTAINS(out, "fence flag up");
	ASSERT_EQ(stat(flag, &st), 0);
	ASSERT_EQ(st.st_mode & 077, 0);
	ASSERT_EQ(unlink(flag), 0);
	ASSERT_EQ(test_capture(out, sizeof(out), "DRBD_RESOURCE=r9 %s fence-peer %s 2>&1",
			       test_tandem_bin(), cfg), 1);
	ASSERT_STR_CONTAINS(out, "is not one of vm's disks");
	ASSERT_EQ(test_capture(out, sizeof(out), "env -u DRBD_RESOURCE %s fence-peer %s 2>&1",
			       test_tandem_bin(), cfg), 1);
	ASSERT_STR_CONTAINS(out, "DRBD_RESOURCE is not set");
	ASSERT(stat(flag, &st) != 0);
	/* a flag it cannot write: I/O stays frozen */
	snprintf(text, sizeof(text), "name = vm\nreplication = 127.0.0.1:7000\nkey-file = %s/k\n"
		 "run-dir = %s/no/such/dir\ndisks = r0:/dev/x\n", test_tmpdir(), test_tmpdir());
	snprintf(cfg, sizeof(cfg), "%s", test_write_file("g.cfg", text));
	ASSERT_EQ(test_capture(out, sizeof(out), "DRBD_RESOURCE=r0 %s fence-peer %s 2>&1",
			       test_tandem_bin(), cfg), 1);
	ASSERT_STR_CONTAINS(out, "stays frozen");
	/* one file for both hosts, run-dir per host (%h): the flag goes where
	 * the daemons of the host named look for it */
	snprintf(text, sizeof(text), "name = vm\nhosts = alpha 127.0.0.1:7000, beta 127.0.0.1:7010\n"
		 "key-file = %s/k\nrun-dir = %s/run-%%h\ndisks = r0:/dev/mapper/tdm-vm-guest\n",
		 test_tmpdir(), test_tmpdir());
	snprintf(cfg, sizeof(cfg), "%s", test_write_file("h.cfg", text));
	test_sh("mkdir -p %s/run-alpha", test_tmpdir());
	ASSERT_EQ(test_capture(out, sizeof(out), "DRBD_RESOURCE=r0 %s fence-peer --this-host alpha %s "
			       "2>&1", test_tandem_bin(), cfg), 5);
	snprintf(flag, sizeof(flag), "%s/run-alpha/vm.r0.fenced", test_tmpdir());
	ASSERT_EQ(stat(flag, &st), 0);

	ASSERT(drbd_state_healthy("Connected\n", "UpToDate/UpToDate\n"));
	ASSERT(!drbd_state_healthy("SyncSource\n", "UpToDate/Inconsistent\n"));
	ASSERT(!drbd_state_healthy("WFConnection\n", "UpToDate/DUnknown\n"));
	ASSERT(!drbd_state_healthy("Connected\n", "UpToDate/Outdated\n"));
	ASSERT(!drbd_state_healthy("", ""));

	/* the state from /proc/drbd (DRBD 8.4), which the watches read
	 * instead of running drbdadm when it has the minor */
	{
		static const char proc84[] =
			"version: 8.4.11 (api:1/proto:86-101)\nsrcversion: 0123\n"
			" 0: cs:Connected ro:Primary/Secondary ds:UpToDate/UpToDate C r-----\n"
			"    ns:16 nr:0 dw:16 dr:1 al:1 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:0\n"
			" 1: cs:StandAlone ro:Secondary/Unknown ds:Inconsistent/DUnknown   r-----\n"
			"    ns:0 nr:0 dw:0 dr:0 al:0 bm:0 lo:0 pe:0 ua:0 ap:0 ep:1 wo:f oos:16\n"
			"11: cs:SyncTarget ro:Secondary/Primary ds:Inconsistent/UpToDate C r-----\n"
			" 2: cs:Unconfigured\n";
		struct drbd_state ds;

		ASSERT_EQ(drbd_proc_parse(proc84, 0, &ds), 0);
		ASSERT(!strcmp(ds.cs, "Connected") && !strcmp(ds.ro, "Primary/Secondary") &&
		       !strcmp(ds.ds, "UpToDate/UpToDate"));
		ASSERT(drbd_state_healthy(ds.cs, ds.ds));
		ASSERT_EQ(drbd_proc_parse(proc84, 1, &ds), 0);
		ASSERT(!strcmp(ds.cs, "StandAlone") && !strcmp(ds.ro, "Secondary/Unknown") &&
		       !strcmp(ds.ds, "Inconsistent/DUnknown"));
		ASSERT_EQ(drbd_proc_parse(proc84, 11, &ds), 0);
		ASSERT(!strcmp(ds.cs, "SyncTarget") && !drbd_state_healthy(ds.cs, ds.ds));
		ASSERT_EQ(drbd_proc_parse(proc84, 2, &ds), 0);	/* no ds: drbdadm asked */
		ASSERT(!strcmp(ds.cs, "Unconfigured") && !ds.ds[0]);
		ASSERT_EQ(drbd_proc_parse(proc84, 3, &ds), -ENOENT);
		ASSERT_EQ(drbd_proc_parse("version: 9.2.4 (api:2/proto:86-122)\n", 0, &ds), -ENOENT);
		ASSERT_EQ(drbd_proc_parse("", 0, &ds), -ENOENT);
	}
	return 0;
}

/* ---- the backup's epoch overlay (disk/overlay.h), without NBD --------------- */

#define OVB OVERLAY_BLOCK
#define OV_BLOCKS 64u			/* the stand-in lower device: 256 KiB */

struct ov_seen {
	int n;
	struct { uint64_t off; bool marker; bool has_prev; uint64_t prev; uint8_t tag; } w[64];
};

static void ov_trace(void *arg, const struct overlay_trace *t)
{
	struct ov_seen *s = arg;

	if (s->n >= 64)
		return;
	s->w[s->n].off = t->off;
	s->w[s->n].marker = t->is_marker || t->cut;
	s->w[s->n].has_prev = t->has_prev;
	s->w[s->n].prev = t->prev_epoch;
	s->w[s->n].tag = t->len ? ((const uint8_t *)t->data)[0] : 0;
	s->n++;
}

struct ov_discards {
	int n, markers;
	uint64_t off[64];
};

static void ov_discard(void *arg, uint64_t off, uint32_t len, bool is_marker)
{
	struct ov_discards *d = arg;

	(void)len;
	if (d->n < 64)
		d->off[d->n] = off;
	d->n++;
	d->markers += is_marker;
}

/* A lower device file of OV_BLOCKS blocks, block b filled with 0x80 + b. */
static const char *ov_lower(void)
{
	static char path[512];
	uint8_t blk[OVB];
	FILE *f;

	snprintf(path, sizeof(path), "%s/lower.img", test_tmpdir());
	ASSERT((f = fopen(path, "w")) != NULL);
	for (unsigned b = 0; b < OV_BLOCKS; b++) {
		memset(blk, 0x80 + b, sizeof(blk));
		ASSERT_EQ(fwrite(blk, 1, sizeof(blk), f), sizeof(blk));
	}
	fclose(f);
	return path;
}

/* The first byte of block b of the lower device file. */
static int ov_lower_byte(const char *path, unsigned b)
{
	FILE *f = fopen(path, "r");
	int c;

	ASSERT(f != NULL);
	ASSERT_EQ(fseek(f, (long)b * OVB, SEEK_SET), 0);
	c = fgetc(f);
	fclose(f);
	return c;
}

static void ov_put(struct overlay *ov, unsigned b, uint8_t tag, int want)
{
	static uint8_t blk[OVB];

	memset(blk, tag, sizeof(blk));
	ASSERT_EQ(overlay_write(ov, (uint64_t)b * OVB, blk, OVB), want);
}

static void ov_marker(struct overlay *ov, const char *vm, uint8_t sess, uint64_t epoch, bool torn)
{
	struct marker m = { .epoch = epoch };
	static uint8_t blk[OVB];

	memset(m.session, sess, sizeof(m.session));
	snprintf(m.vm, sizeof(m.vm), "%s", vm);
	marker_encode(&m, blk);
	if (torn)
		blk[100] ^= 0x40;
	ASSERT_EQ(overlay_write(ov, (uint64_t)(OV_BLOCKS - 1) * OVB, blk, OVB), 0);
}

static int ov_read_byte(struct overlay *ov, unsigned b)
{
	static uint8_t blk[2 * OVB];

	ASSERT_EQ(overlay_read(ov, (uint64_t)b * OVB, blk, OVB), 0);
	return blk[0];
}

/* Grouping by marker, foreign and torn markers, reads, waits, commit,
 * write-back, activation. */
int test_disk_overlay_epochs(void)
{
	struct ov_seen seen = { 0 };
	struct ov_discards disc = { 0 };
	struct overlay_opts o = { .vm = "web", .trace = ov_trace, .trace_arg = &seen };
	struct overlay *ov;
	struct overlay_stats st;
	uint8_t s1[MARKER_SESSION_LEN], s2[MARKER_SESSION_LEN], two[2 * OVB];
	char err[256];

	memset(s1, 1, sizeof(s1));
	memset(s2, 2, sizeof(s2));
	o.lower = ov_lower();
	ASSERT_EQ(overlay_open(&o, &ov, err, sizeof(err)), 0);
	ASSERT_EQ(overlay_write(ov, 100, two, OVB), -EINVAL);		/* misaligned */
	ASSERT_EQ(overlay_write(ov, (uint64_t)OV_BLOCKS * OVB, two, OVB), -EINVAL);	/* outside */
	ov_put(ov, 1, 'A', 0);					/* epoch 1 */
	ov_marker(ov, "web", 1, 1, false);			/* M(s1, 1) */
	ov_put(ov, 2, 'B', 0);					/* epoch 2 */
	ov_marker(ov, "db", 1, 2, false);			/* another VM's marker: data */
	ov_marker(ov, "web", 1, 2, true);			/* torn: data */
	ov_put(ov, 1, 'C', 0);
	ov_marker(ov, "web", 1, 2, false);			/* M(s1, 2) */
	ov_put(ov, 3, 'D', 0);					/* epoch 3 */

	ASSERT_EQ(seen.n, 8);
	ASSERT(!seen.w[0].has_prev && !seen.w[0].marker && seen.w[0].tag == 'A');
	ASSERT(!seen.w[1].has_prev && seen.w[1].marker);	/* M1 follows nothing */
	for (int i = 2; i <= 5; i++)				/* B, foreign, torn, C: after M1 */
		ASSERT(seen.w[i].has_prev && seen.w[i].prev == 1);
	ASSERT(!seen.w[3].marker && !seen.w[4].marker && seen.w[5].marker == false);
	ASSERT(seen.w[6].marker && seen.w[6].prev == 1);
	ASSERT(seen.w[7].has_prev && seen.w[7].prev == 2 && seen.w[7].tag == 'D');
	overlay_get_stats(ov, &st);
	ASSERT_EQ(st.markers, 2);
	ASSERT_EQ(st.foreign_markers, 1);
	ASSERT_EQ(st.bad_markers, 1);
	ASSERT_EQ(st.held_writes, 8);
	ASSERT_EQ(st.held_bytes, 8 * OVB);
	ASSERT(st.has_marker && st.marker_epoch == 2 && !st.has_committed);

	/* Reads: newest held write, else the lower device; across blocks. */
	ASSERT_EQ(ov_read_byte(ov, 1), 'C');
	ASSERT_EQ(ov_read_byte(ov, 2), 'B');
	ASSERT_EQ(ov_read_byte(ov, 4), 0x84);
	ASSERT_EQ(overlay_read(ov, 3 * OVB, two, 2 * OVB), 0);
	ASSERT(two[0] == 'D' && two[OVB] == 0x84);
	ASSERT_EQ(overlay_flush(ov), 0);

	/* Markers seen, and not. */
	ASSERT_EQ(overlay_wait_marker(ov, s1, 1, 0), 0);
	ASSERT_EQ(overlay_wait_marker(ov, s1, 2, 10), 0);
	ASSERT_EQ(overlay_wait_marker(ov, s1, 3, 30), -ETIMEDOUT);
	ASSERT_EQ(overlay_wait_marker(ov, s2, 1, 30), -ETIMEDOUT);
	ASSERT_EQ(overlay_commit(ov, s1, 3), -ENOENT);
	ASSERT_EQ(overlay_commit(ov, s2, 1), -ENOENT);

	/* Commit M(s1, 1): A and M1 go to the lower device, nothing else. */
	ASSERT_EQ(overlay_commit(ov, s1, 1), 0);
	ASSERT_EQ(overlay_sync(ov, 5000), 0);
	ASSERT_EQ(ov_lower_byte(o.lower, 1), 'A');
	ASSERT_EQ(ov_lower_byte(o.lower, 2), 0x82);
	ASSERT_EQ(ov_lower_byte(o.lower, OV_BLOCKS - 1), 'T');	/* "TNDMMRK1" */
	ASSERT_EQ(ov_read_byte(ov, 1), 'C');			/* still held */
	overlay_get_stats(ov, &st);
	ASSERT_EQ(st.written_back_writes, 2);
	ASSERT_EQ(st.held_writes, 6);
	ASSERT_EQ(st.lag_writes, 0);
	ASSERT(st.has_committed && st.committed_epoch == 1);
	ASSERT_EQ(overlay_commit(ov, s1, 1), 0);		/* again: a no-op */
	ASSERT_EQ(overlay_wait_marker(ov, s1, 1, 0), 0);	/* written back, still seen */

	/* A new session may restart at epoch 1. */
	ov_marker(ov, "web", 2, 1, false);
	ov_put(ov, 5, 'E', 0);
	ASSERT_EQ(overlay_wait_marker(ov, s2, 1, 0), 0);

	/* Failover at M(s1, 2): B, the foreign and torn blocks, C and M2 are
	 * written back; D, M(s2, 1) and E are discarded. */
	ASSERT_EQ(overlay_commit(ov, s1, 2), 0);
	ASSERT_EQ(overlay_activate(ov, ov_discard, &disc), 0);
	ASSERT_EQ(disc.n, 3);
	ASSERT_EQ(disc.markers, 1);
	ASSERT(disc.off[0] == 3 * OVB && disc.off[2] == 5 * OVB);
	ASSERT_EQ(ov_lower_byte(o.lower, 1), 'C');
	ASSERT_EQ(ov_lower_byte(o.lower, 2), 'B');
	ASSERT_EQ(ov_lower_byte(o.lower, 3), 0x83);
	ASSERT_EQ(ov_lower_byte(o.lower, 5), 0x85);
	ASSERT_EQ(ov_read_byte(ov, 3), 0x83);			/* reads see the lower device */
	overlay_get_stats(ov, &st);
	ASSERT(st.activated && st.committed_epoch == 2);
	ASSERT_EQ(st.discarded_writes, 3);
	ASSERT_EQ(st.discarded_bytes, 3 * OVB);
	ASSERT_EQ(st.held_writes, 0);
	ASSERT_EQ(overlay_write(ov, 0, two, OVB), -ESHUTDOWN);
	ASSERT_EQ(overlay_commit(ov, s1, 2), -ESHUTDOWN);
	ASSERT_EQ(overlay_activate(ov, NULL, NULL), -EALREADY);
	overlay_close(ov);
	overlay_close(NULL);
	return TEST_OK;
}

/*
 * An overlay over ov_lower() with a limit of three blocks, brought to its
 * overflow: A and M1 committed, B C D held (the first two waited for A and
 * M1's write-back instead of overflowing), E refused.
 */
static struct overlay *ov_overflowed(struct overlay_opts *o, const uint8_t *s1)
{
	struct overlay *ov;
	struct overlay_stats st;
	char err[256];

	o->vm = "web";
	o->mem_limit = 3 * OVB;
	o->lower = ov_lower();
	ASSERT_EQ(overlay_open(o, &ov, err, sizeof(err)), 0);
	ov_put(ov, 1, 'A', 0);
	ov_marker(ov, "web", 1, 1, false);
	ASSERT_EQ(overlay_commit(ov, s1, 1), 0);
	ov_put(ov, 2, 'B', 0);
	ov_put(ov, 3, 'C', 0);
	ov_put(ov, 4, 'D', 0);
	overlay_get_stats(ov, &st);
	ASSERT(!st.overflowed);
	ASSERT_EQ(st.written_back_writes, 2);
	ov_put(ov, 5, 'E', -EIO);				/* nothing committed: overflow */
	return ov;
}

/* The overflow policy: committed writes make room by being written back;
 * when nothing held is committed, writes fail with EIO from then on, and
 * markers after that point never come. */
int test_disk_overlay_overflow(void)
{
	struct overlay_opts o = { 0 };
	struct overlay *ov;
	struct overlay_stats st;
	uint8_t s1[MARKER_SESSION_LEN];

	memset(s1, 1, sizeof(s1));
	ov = ov_overflowed(&o, s1);
	ov_put(ov, 6, 'F', -EIO);				/* and from then on */
	overlay_get_stats(ov, &st);
	ASSERT(st.overflowed);
	ASSERT_EQ(st.refused_writes, 2);
	ASSERT_EQ(overlay_wait_marker(ov, s1, 2, 1000), -ENOSPC);
	ASSERT_EQ(overlay_wait_marker(ov, s1, 1, 0), 0);	/* seen before */
	ASSERT_EQ(overlay_commit(ov, s1, 2), -ENOENT);
	/* Activation still yields checkpoint 1. */
	ASSERT_EQ(overlay_activate(ov, NULL, NULL), 0);
	ASSERT_EQ(ov_lower_byte(o.lower, 1), 'A');
	ASSERT_EQ(ov_lower_byte(o.lower, 2), 0x82);
	overlay_get_stats(ov, &st);
	ASSERT_EQ(st.discarded_writes, 3);
	overlay_close(ov);
	return TEST_OK;
}

/*
 * The way back from an overflow: write-through.  What was held (committed
 * or not) goes to the lower device, later writes follow in order and wait
 * for room instead of overflowing, no commit is taken until write-through
 * ends at the first marker after overlay_arm(); that marker's checkpoint is
 * then the committed one, earlier ones are refused, and later writes are
 * held (and discarded by an activation) as before.
 */
int test_disk_overlay_through(void)
{
	struct overlay_opts o = { 0 };
	struct overlay *ov;
	struct overlay_stats st;
	uint8_t s1[MARKER_SESSION_LEN];

	memset(s1, 1, sizeof(s1));
	ov = ov_overflowed(&o, s1);
	overlay_get_stats(ov, &st);
	ASSERT(st.overflowed);
	ASSERT_EQ(st.overflows, 1);
	/* B, C and D (no checkpoint's) go through; the overflow is over */
	ASSERT_EQ(overlay_through(ov), 3);
	ASSERT_EQ(overlay_through(ov), 0);			/* idempotent */
	overlay_get_stats(ov, &st);
	ASSERT(!st.overflowed && st.through && !st.has_committed);
	ASSERT_EQ(overlay_commit(ov, s1, 1), -EBUSY);
	/* twice the limit: the writer waits for room, nothing overflows */
	for (unsigned b = 6; b <= 11; b++)
		ov_put(ov, b, (uint8_t)('A' + b - 1), 0);
	ov_marker(ov, "web", 1, 2, false);			/* not armed: goes through */
	ASSERT_EQ(overlay_commit(ov, s1, 2), -EBUSY);
	ASSERT_EQ(ov_read_byte(ov, 11), 'K');
	overlay_arm(ov);
	ov_put(ov, 12, 'L', 0);
	ov_marker(ov, "web", 1, 3, false);			/* ends write-through */
	ov_put(ov, 13, 'M', 0);					/* held again */
	overlay_get_stats(ov, &st);
	ASSERT(!st.through && !st.armed && !st.overflowed);
	ASSERT(st.has_committed && st.committed_epoch == 3);
	ASSERT_EQ(st.through_writes, 9);			/* 6-11, M2, 12, M3; not 13 */
	ASSERT_EQ(overlay_commit(ov, s1, 2), -ESTALE);		/* the disk is past it */
	ASSERT_EQ(overlay_commit(ov, s1, 3), 0);
	ASSERT_EQ(overlay_activate(ov, NULL, NULL), 0);
	for (unsigned b = 1; b <= 12; b++)
		ASSERT_EQ(ov_lower_byte(o.lower, b), b == 5 ? 0x85 : 'A' + (int)b - 1);
	ASSERT_EQ(ov_lower_byte(o.lower, 13), 0x80 + 13);	/* after checkpoint 3 */
	overlay_get_stats(ov, &st);
	ASSERT_EQ(st.discarded_writes, 1);
	overlay_close(ov);
	return TEST_OK;
}
