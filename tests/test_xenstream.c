/*
 * test_xenstream.c - cutting a checkpointed libxc stream at CHECKPOINT
 * records, whatever the read sizes (the xen driver's drain thread).
 */
#include <errno.h>
#include <unistd.h>

#include "../domain/xencheck.h"
#include "../domain/xenstream.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "test.h"

static size_t put_rec(uint8_t *p, uint32_t type, uint32_t len)
{
	p[0] = (uint8_t)type; p[1] = (uint8_t)(type >> 8); p[2] = (uint8_t)(type >> 16); p[3] = (uint8_t)(type >> 24);
	p[4] = (uint8_t)len; p[5] = (uint8_t)(len >> 8); p[6] = (uint8_t)(len >> 16); p[7] = (uint8_t)(len >> 24);
	memset(p + 8, 0x5a, len);
	memset(p + 8 + len, 0, ALIGN8(len) - len);
	return 8 + ALIGN8(len);
}

/* image header, domain header (Xen 4.17), then two checkpoints. */
static size_t make_stream(uint8_t *s, size_t cuts[2])
{
	size_t n = 0;

	memset(s, 0xff, 8);
	put_be32(s + 8, 0x58454E46u);
	put_be32(s + 12, 3);
	memset(s + 16, 0, 8);
	n = 24;
	memset(s + n, 0, 16);
	s[n] = 2;		/* HVM, little-endian */
	s[n + 4] = 12;
	s[n + 8] = 4;
	s[n + 12] = 17;
	n += 16;
	n += put_rec(s + n, 1, 16 + 4096);	/* PAGE_DATA */
	n += put_rec(s + n, 9, 100);		/* HVM_CONTEXT, padded */
	n += put_rec(s + n, 0xe, 0);		/* CHECKPOINT */
	cuts[0] = n;
	n += put_rec(s + n, 1, 16 + 8192);
	n += put_rec(s + n, 0x80000010u, 3);	/* an optional record */
	n += put_rec(s + n, 0xe, 0);
	cuts[1] = n;
	return n;
}

int test_xenstream_cuts_at_checkpoints(void)
{
	static uint8_t s[32768];
	size_t cuts[2], n = make_stream(s, cuts);

	for (size_t chunk = 1; chunk <= n; chunk = chunk * 3 + 1) {
		struct xenstream_cut c = { 0 };
		size_t pos = 0, found = 0, got[2] = { 0, 0 };

		while (pos < n) {
			size_t len = MIN(chunk, n - pos);
			long used = xenstream_feed(&c, s + pos, len);
			ASSERT(used >= 0);
			pos += (size_t)used;
			if ((size_t)used < len || c.checkpoints > found) {
				ASSERT(c.checkpoints == found + 1);
				got[found++] = pos;
			}
		}
		ASSERT_EQ(found, 2);
		ASSERT_EQ(got[0], cuts[0]);
		ASSERT_EQ(got[1], cuts[1]);
		ASSERT_EQ(c.xen_major, 4);
		ASSERT_EQ(c.xen_minor, 17);
		ASSERT_EQ(c.dom_type, 2);
	}
	return TEST_OK;
}

int test_xenstream_rejects_garbage(void)
{
	static uint8_t s[32768];
	size_t cuts[2], n = make_stream(s, cuts);
	struct xenstream_cut c = { 0 };
	uint8_t bad[32];

	(void)n;
	memcpy(bad, s, 32);
	bad[3] = 0;			/* marker */
	ASSERT_EQ(xenstream_feed(&c, bad, 32), -EBADMSG);
	memset(&c, 0, sizeof(c));
	memcpy(bad, s, 32);
	bad[17] = 1;			/* big-endian stream */
	ASSERT_EQ(xenstream_feed(&c, bad, 32), -EBADMSG);
	memset(&c, 0, sizeof(c));
	ASSERT_EQ(xenstream_feed(&c, s, 40), 40);
	{
		uint8_t rec[8] = { 1, 0, 0, 0, 0, 0, 0, 0x10 };	/* 256 MiB record */
		ASSERT_EQ(xenstream_feed(&c, rec, 8), -EBADMSG);
	}
	return TEST_OK;
}

int test_xenstream_libxl_records(void)
{
	uint8_t p[32], e[8];

	ASSERT_EQ(xenstream_libxl_prologue(p), 24);
	ASSERT(!memcmp(p, "LibxlFmt", 8));
	ASSERT_EQ(get_be32(p + 8), 2);
	ASSERT(p[16] == 1 && p[20] == 0);
	ASSERT_EQ(xenstream_libxl_checkpoint_end(e), 8);
	ASSERT(e[0] == 4 && e[4] == 0);
	return TEST_OK;
}

/* On a host without Xen the driver refuses clearly (exit status 4), for
 * the primary and for `tandem probe`. */
int test_xen_driver_needs_xen(void)
{
	char cmd[1024];
	const char *cfg;

	if (access("/proc/xen/capabilities", F_OK) == 0)
		test_skip("this host runs Xen");
	cfg = test_write_file("x.cfg", "name = web-01\ndomain = xen\nreplication = 127.0.0.1:1\n"
			      "key-file = /nonexistent\n");
	(void)cfg;
	snprintf(cmd, sizeof(cmd), "cd %s && %s keygen k >/dev/null && sed -i 's|/nonexistent|%s/k|' x.cfg "
		 "&& echo 'run-dir = %s/run' >> x.cfg && echo 'netbuf = queue' >> x.cfg && "
		 "%s primary x.cfg 2> err.txt; test $? -eq 4 && grep -q 'this host is not running Xen' err.txt && "
		 "{ %s probe x.cfg > probe.txt 2>&1; test $? -eq 4; } && grep -q 'this host is not running Xen' probe.txt",
		 test_tmpdir(), test_tandem_bin(), test_tmpdir(), test_tmpdir(), test_tandem_bin(),
		 test_tandem_bin());
	ASSERT_EQ(system(cmd), 0);
	return TEST_OK;
}

/* Which guests the xen driver takes (domain/xencheck.h): PVH yes, HVM not
 * yet, and what no checkpoint can carry never, whatever the type. */
int test_xen_guest_types(void)
{
	char why[400];
	struct xen_guest_facts f;

	f = (struct xen_guest_facts){ .type = XG_PVH };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_PROTECTED);

	f = (struct xen_guest_facts){ .type = XG_HVM };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NOT_YET);
	ASSERT_STR_CONTAINS(why, "HVM guest");
	ASSERT_STR_CONTAINS(why, "device model");

	f = (struct xen_guest_facts){ .type = XG_HVM, .stubdom = true };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	ASSERT_STR_CONTAINS(why, "stub domain");

	f = (struct xen_guest_facts){ .type = XG_HVM, .qemu_traditional = true };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	ASSERT_STR_CONTAINS(why, "qemu-xen-traditional");

	/* final whatever the type: a PVH guest with passthrough is refused */
	f = (struct xen_guest_facts){ .type = XG_PVH, .pcidevs = 2 };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	ASSERT_STR_CONTAINS(why, "2 PCI passthrough devices");

	f = (struct xen_guest_facts){ .type = XG_HVM, .usb_host_devs = 1 };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	ASSERT_STR_CONTAINS(why, "USB host device");

	f = (struct xen_guest_facts){ .type = XG_PVH, .vtpms = 1 };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	ASSERT_STR_CONTAINS(why, "vTPM");
	return TEST_OK;
}
