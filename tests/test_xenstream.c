/*
 * test_xenstream.c - cutting a checkpointed libxc stream at CHECKPOINT
 * records, whatever the read sizes (the xen driver's drain thread).
 */
#include <errno.h>
#include <unistd.h>

#include "../domain/precopy.h"
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

static void le32_at(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void le64_at(uint8_t *p, uint64_t v)
{
	le32_at(p, (uint32_t)v);
	le32_at(p + 4, (uint32_t)(v >> 32));
}

/*
 * One checkpoint's records: a PAGE_DATA of three entries (one not present,
 * two pages of data, filled with 0xa1 and 0xb2), an HVM_CONTEXT, then
 * CHECKPOINT and libxl's CHECKPOINT_END.
 */
static size_t make_checkpoint(uint8_t *s, const uint8_t *ctx, uint32_t ctx_len)
{
	size_t n = 0;

	le32_at(s, 1);
	le32_at(s + 4, 8 + 3 * 8 + 2 * 4096);
	le32_at(s + 8, 3);
	le32_at(s + 12, 0);
	le64_at(s + 16, 0x100 | 0xf000000000000000ull);		/* XTAB */
	le64_at(s + 24, 0x200);					/* NOTAB */
	le64_at(s + 32, 0x300 | 0x1000000000000000ull);		/* L1TAB: has data */
	memset(s + 40, 0xa1, 4096);
	memset(s + 40 + 4096, 0xb2, 4096);
	n = 40 + 8192;
	le32_at(s + n, 9);
	le32_at(s + n + 4, ctx_len);
	memcpy(s + n + 8, ctx, ctx_len);
	memset(s + n + 8 + ctx_len, 0, ALIGN8(ctx_len) - ctx_len);
	n += 8 + ALIGN8(ctx_len);
	n += put_rec(s + n, 0xe, 0);
	n += xenstream_libxl_checkpoint_end(s + n);
	return n;
}

/* An HVM context: header record, two CPU records (tsc at offset 40), END. */
static uint32_t make_hvm_context(uint8_t *c, uint64_t tsc0, uint64_t tsc1, uint8_t rax1)
{
	uint32_t n = 0;

	memset(c, 0, 256);
	c[n] = 1; le32_at(c + n + 4, 16); n += 8 + 16;			/* HEADER */
	c[n] = 2; le32_at(c + n + 4, 64); le64_at(c + n + 8 + 40, tsc0); n += 8 + 64;
	c[n] = 2; c[n + 2] = 1; le32_at(c + n + 4, 64);
	c[n + 8] = rax1; le64_at(c + n + 8 + 40, tsc1); n += 8 + 64;
	c[n] = 0; n += 8;						/* END */
	return n;
}

/*
 * The oracle's pieces on a captured stream: the HVM_CONTEXT record is
 * found, the vCPU hash ignores the TSC and sees a register, the negative
 * control drops exactly one page, and the restore barrier is an empty
 * HVM_PARAMS record.
 */
int test_xenstream_oracle_pieces(void)
{
	static uint8_t s[16384], t[16384];
	uint8_t ctx[256], ctx2[256], h1[32], h2[32], bar[16];
	uint32_t clen = make_hvm_context(ctx, 111, 222, 7), blen;
	size_t n = make_checkpoint(s, ctx, clen), body, len;
	uint64_t pfn = 0;

	ASSERT_EQ(xenstream_find_record(s, n, XS_REC_HVM_CONTEXT, &body, &blen), 0);
	ASSERT_EQ(blen, clen);
	ASSERT(memcmp(s + body, ctx, clen) == 0);
	ASSERT_EQ(xenstream_find_record(s, n, XS_REC_HVM_PARAMS, &body, &blen), -ENOENT);
	ASSERT_EQ(xenstream_find_record(s, n - 30, XS_REC_HVM_CONTEXT, &body, &blen), -EBADMSG);

	ASSERT_EQ(xenstream_vcpu_hash(ctx, clen, 40, h1), 2);
	make_hvm_context(ctx2, 999, 5, 7);		/* only the TSCs differ */
	ASSERT_EQ(xenstream_vcpu_hash(ctx2, clen, 40, h2), 2);
	ASSERT(memcmp(h1, h2, 32) == 0);
	make_hvm_context(ctx2, 111, 222, 8);		/* vCPU 1's rax differs */
	ASSERT_EQ(xenstream_vcpu_hash(ctx2, clen, 40, h2), 2);
	ASSERT(memcmp(h1, h2, 32) != 0);
	ASSERT_EQ(xenstream_vcpu_hash(ctx, 24, 40, h2), -ENOENT);	/* header only */

	memcpy(t, s, n);
	len = n;
	ASSERT_EQ(xenstream_drop_page(t, &len, &pfn), 0);
	ASSERT_EQ(pfn, 0x200);				/* the first page with data */
	ASSERT_EQ(len, n - 4096);
	ASSERT_EQ(t[4] | t[5] << 8 | t[6] << 16, 8 + 3 * 8 + 4096);
	ASSERT_EQ(t[24 + 7], 0xf0);			/* now XTAB */
	ASSERT_EQ(t[40], 0xb2);				/* the other page's data moved up */
	ASSERT_EQ(xenstream_find_record(t, len, XS_REC_HVM_CONTEXT, &body, &blen), 0);
	ASSERT(memcmp(t + body, ctx, clen) == 0);	/* the records after it intact */
	{
		struct xenstream_cut c = { .stage = 2 };	/* and it still cuts */
		ASSERT_EQ(xenstream_feed(&c, t, len), (long)(len - 8));
		ASSERT_EQ(c.checkpoints, 1);
	}
	{	/* the byte-altering control: same page, one byte, same length */
		uint8_t *u = malloc(n);

		ASSERT(u != NULL);
		memcpy(u, s, n);
		pfn = 0;
		ASSERT_EQ(xenstream_alter_page(u, n, &pfn), 0);
		ASSERT_EQ(pfn, 0x200);
		for (size_t i = 0, diff = 0; i < n; i++) {
			if (u[i] != s[i] && ++diff > 1)
				FAILF("more than one byte altered (at %zu)", i);
			if (i == n - 1)
				ASSERT_EQ(diff, 1);
		}
		ASSERT_EQ(xenstream_alter_page(u, 8, &pfn), -EBADMSG);	/* a torn record */
		free(u);
	}
	len = 8;					/* a CHECKPOINT only: nothing to drop */
	ASSERT_EQ(xenstream_drop_page(t + n - 16 - 4096, &len, &pfn), -ENOENT);

	ASSERT_EQ(xenstream_barrier(bar), XENSTREAM_BARRIER_LEN);
	ASSERT_EQ(bar[0], 0x0a);
	ASSERT_EQ(bar[4], 8);
	for (int i = 8; i < 16; i++)
		ASSERT_EQ(bar[i], 0);
	return TEST_OK;
}

/*
 * The oracle's choice of pfns (verify_scan on Xen): only the pfns that map
 * were asked their type, so types[] is indexed by mapped pfn, not by pfn;
 * Xen's own frames (XTAB: shared info and grant table as the lab's guest
 * maps them, at 0x10 and just above RAM), XALLOC and BROKEN are left out
 * and counted, the special pages too (not counted), and an unknown type
 * (no types[]) keeps every mapped pfn.
 */
int test_xenstream_oracle_pick(void)
{
	/* pfns 0x0e..0x13 of RAM, a hole, then the two grant frames */
	const uint64_t pfns[] = { 0x0e, 0x0f, 0x10, 0x11, 0x12, 0x13, 0x14000, 0x14001, 0x17ffe, 0x17fff };
	const int err[] =       { 0,    0,    0,    0,    0,    0,    -22,     -22,     0,       0 };
	/* the mapped ones, in order: RAM, RAM (L1 page table: kept), shared
	 * info, XALLOC, BROKEN, xenstore page (RAM, skipped), grant 1, grant 0 */
	const uint64_t types[] = { 0, 0x10000000u, 0xf0000000u, 0xe0000000u, 0xd0000000u, 0,
				   0xf0000000u, 0xf0000000u };
	const uint64_t skip[] = { 0, 0x13, 0 };
	uint64_t out[10], owned = 0;
	uint32_t n = xenstream_oracle_pick(pfns, err, 10, types, skip, 3, out, &owned);

	ASSERT_EQ(n, 2);
	ASSERT_EQ(out[0], 0x0e);
	ASSERT_EQ(out[1], 0x0f);
	ASSERT_EQ(owned, 5);		/* 0x10, 0x11, 0x12, 0x17ffe, 0x17fff */

	owned = 0;			/* type query failed: every mapped pfn but the skipped */
	n = xenstream_oracle_pick(pfns, err, 10, NULL, skip, 3, out, &owned);
	ASSERT_EQ(n, 7);
	ASSERT_EQ(owned, 0);
	ASSERT_EQ(out[4], 0x12);
	ASSERT_EQ(out[5], 0x17ffe);

	owned = 0;			/* the hole alone: nothing asked, nothing kept */
	ASSERT_EQ(xenstream_oracle_pick(pfns + 6, err + 6, 2, types, NULL, 0, out, &owned), 0);
	ASSERT_EQ(owned, 0);
	return TEST_OK;
}

/*
 * libxl's emulator records byte by byte, against the layout of
 * libxl-migration-stream.pandoc ("Record Overview", "Emulator Records")
 * and libxl_sr_stream_format.h: type 2 and 3, length = sub-header + body,
 * {emulator_id = 2 (QEMU upstream), index}, body, zeros to 8.
 */
int test_xenstream_emulator_records(void)
{
	uint8_t out[64], body[16];

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (uint8_t)(0xa0 + i);
	/* the spec's numbers, as libxl_sr_stream_format.h has them */
	ASSERT_EQ(XL_REC_EMULATOR_XENSTORE_DATA, 0x00000002);
	ASSERT_EQ(XL_REC_EMULATOR_CONTEXT, 0x00000003);
	ASSERT_EQ(XL_REC_CHECKPOINT_END, 0x00000004);
	ASSERT_EQ(XL_EMULATOR_QEMU_UPSTREAM, 0x00000002);

	/* 13 bytes of body: 8 + 13 = 21, padded with 3 zeros to 24 */
	memset(out, 0xee, sizeof(out));
	ASSERT_EQ(xenstream_libxl_emulator_len(13), 32);
	ASSERT_EQ(xenstream_libxl_emulator_record(out, XL_REC_EMULATOR_CONTEXT,
						  XL_EMULATOR_QEMU_UPSTREAM, 0, body, 13), 32);
	{
		static const uint8_t want[16] = { 3, 0, 0, 0, 21, 0, 0, 0,	/* type, length */
						  2, 0, 0, 0, 0, 0, 0, 0 };	/* id, index */
		ASSERT(memcmp(out, want, 16) == 0);
	}
	ASSERT(memcmp(out + 16, body, 13) == 0);
	ASSERT(out[29] == 0 && out[30] == 0 && out[31] == 0);		/* padding */
	ASSERT_EQ(out[32], 0xee);					/* nothing past it */

	/* a body that ends on 8: no padding; the index goes where it should */
	ASSERT_EQ(xenstream_libxl_emulator_record(out, XL_REC_EMULATOR_XENSTORE_DATA,
						  XL_EMULATOR_QEMU_UPSTREAM, 1, body, 16), 32);
	ASSERT(out[0] == 2 && out[4] == 24 && out[8] == 2 && out[12] == 1);
	ASSERT(memcmp(out + 16, body, 16) == 0);

	/* the sub-header alone (an empty state) is a valid record of length 8 */
	ASSERT_EQ(xenstream_libxl_emulator_record(out, XL_REC_EMULATOR_CONTEXT,
						  XL_EMULATOR_QEMU_UPSTREAM, 0, NULL, 0), 16);
	ASSERT(out[0] == 3 && out[4] == 8);
	/* too long for a record */
	ASSERT_EQ(xenstream_libxl_emulator_len((size_t)XS_REC_LENGTH_MAX), 0);
	return TEST_OK;
}

/* One checkpoint as tandem's drain builds it for an HVM guest: libxc's
 * records to its CHECKPOINT, then the emulator records, CHECKPOINT_END. */
static size_t make_hvm_checkpoint(uint8_t *s, const uint8_t *xs, size_t xs_len,
				  const uint8_t *ctx, size_t ctx_len, bool end)
{
	size_t n = 0;

	n += put_rec(s + n, 1, 16 + 4096);		/* PAGE_DATA */
	n += put_rec(s + n, 9, 100);			/* HVM_CONTEXT */
	n += put_rec(s + n, 0xe, 0);			/* CHECKPOINT */
	if (xs)
		n += xenstream_libxl_emulator_record(s + n, XL_REC_EMULATOR_XENSTORE_DATA,
						     XL_EMULATOR_QEMU_UPSTREAM, 0, xs, xs_len);
	if (ctx)
		n += xenstream_libxl_emulator_record(s + n, XL_REC_EMULATOR_CONTEXT,
						     XL_EMULATOR_QEMU_UPSTREAM, 0, ctx, ctx_len);
	if (end)
		n += xenstream_libxl_checkpoint_end(s + n);
	return n;
}

/*
 * The backup's side: encode -> parse round trips, and the latest complete
 * checkpoint's EMULATOR_CONTEXT is the one found (libxl keeps only that
 * one in qemu-resume.<domid>); a checkpoint cut short does not count.
 */
int test_xenstream_emulator_find(void)
{
	static uint8_t s[65536];
	static const uint8_t xs[] = "physmap/f0000000/start_addr\0f0000000\0"
				    "physmap/f0000000/size\0800000\0"
				    "physmap/f0000000/name\0vga.vram";
	uint8_t ctx1[37], ctx2[1000];
	struct xenstream_emu e;
	size_t n, n1, n2;

	memset(ctx1, 0x11, sizeof(ctx1));
	memcpy(ctx1, "QEVM", 4);
	memset(ctx2, 0x22, sizeof(ctx2));
	memcpy(ctx2, "QEVM", 4);

	/* one checkpoint: both records found, bodies intact */
	n1 = make_hvm_checkpoint(s, xs, sizeof(xs), ctx1, sizeof(ctx1), true);
	ASSERT_EQ(xenstream_libxl_emulator_find(s, n1, &e), 1);
	ASSERT_EQ(e.checkpoints, 1);
	ASSERT_EQ(e.contexts, 1);
	ASSERT_EQ(e.ctx_len, sizeof(ctx1));
	ASSERT(memcmp(s + e.ctx_off, ctx1, sizeof(ctx1)) == 0);
	ASSERT_EQ(e.ctx_id, XL_EMULATOR_QEMU_UPSTREAM);
	ASSERT_EQ(e.ctx_index, 0);
	ASSERT_EQ(e.xs_records, 1);
	ASSERT_EQ(e.xs_len, sizeof(xs));
	ASSERT(memcmp(s + e.xs_off, xs, sizeof(xs)) == 0);
	/* the record before CHECKPOINT_END is the context, as libxl orders them */
	ASSERT_EQ(e.ctx_off + ALIGN8(8 + sizeof(ctx1)) - 8, n1 - 8);

	/* a second one, without xenstore data: its context is the latest */
	n2 = make_hvm_checkpoint(s + n1, NULL, 0, ctx2, sizeof(ctx2), true);
	ASSERT_EQ(xenstream_libxl_emulator_find(s, n1 + n2, &e), 2);
	ASSERT_EQ(e.ctx_len, sizeof(ctx2));
	ASSERT(memcmp(s + e.ctx_off, ctx2, sizeof(ctx2)) == 0);
	ASSERT_EQ(e.xs_records, 0);

	/* a third cut short (no CHECKPOINT_END, or a torn record): ignored */
	n = make_hvm_checkpoint(s + n1 + n2, xs, sizeof(xs), ctx1, sizeof(ctx1), false);
	ASSERT_EQ(xenstream_libxl_emulator_find(s, n1 + n2 + n, &e), 2);
	ASSERT(memcmp(s + e.ctx_off, ctx2, sizeof(ctx2)) == 0);
	ASSERT_EQ(xenstream_libxl_emulator_find(s, n1 + n2 + n - 5, &e), 2);

	/* a checkpoint without a context (a PVH guest's, or a primary that
	 * failed to add it): the backup sees contexts == 0 */
	n = make_hvm_checkpoint(s, NULL, 0, NULL, 0, true);
	ASSERT_EQ(xenstream_libxl_emulator_find(s, n, &e), 1);
	ASSERT_EQ(e.contexts, 0);

	/* malformed */
	{
		size_t k = make_hvm_checkpoint(s, NULL, 0, NULL, 0, false);

		k += put_rec(s + k, XL_REC_EMULATOR_CONTEXT, 4);	/* shorter than its sub-header */
		k += xenstream_libxl_checkpoint_end(s + k);
		ASSERT_EQ(xenstream_libxl_emulator_find(s, k, &e), -EBADMSG);

		k = make_hvm_checkpoint(s, NULL, 0, NULL, 0, false);
		k += put_rec(s + k, 0x80000010u, 8);	/* unknown to libxl's restore */
		k += xenstream_libxl_checkpoint_end(s + k);
		ASSERT_EQ(xenstream_libxl_emulator_find(s, k, &e), -EBADMSG);

		k = make_hvm_checkpoint(s, NULL, 0, NULL, 0, false);
		k += put_rec(s + k, XL_REC_CHECKPOINT_END, 8);	/* with a body */
		ASSERT_EQ(xenstream_libxl_emulator_find(s, k, &e), -EBADMSG);

		k = make_hvm_checkpoint(s, NULL, 0, NULL, 0, false);
		{
			uint8_t big[8] = { 3, 0, 0, 0, 0, 0, 0, 0x10 };	/* 256 MiB */
			memcpy(s + k, big, 8);
			ASSERT_EQ(xenstream_libxl_emulator_find(s, k + 8, &e), -EBADMSG);
		}
	}
	return TEST_OK;
}

/*
 * The lab's switch for HVM (TANDEM_HVM_EXPERIMENTAL=1): off unless exactly
 * "1"; on, an HVM guest is taken as unproven, and what no checkpoint can
 * carry stays refused; without it the refusal is today's.
 */
int test_xen_hvm_switch(void)
{
	char why[400];
	struct xen_guest_facts f;

	ASSERT(!xen_hvm_switch(NULL));
	ASSERT(!xen_hvm_switch(""));
	ASSERT(!xen_hvm_switch("0"));
	ASSERT(!xen_hvm_switch("yes"));
	ASSERT(!xen_hvm_switch("1 "));
	ASSERT(xen_hvm_switch("1"));

	f = (struct xen_guest_facts){ .type = XG_HVM, .hvm_experimental = true };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_EXPERIMENTAL);
	ASSERT_STR_CONTAINS(why, "TANDEM_HVM_EXPERIMENTAL=1");
	ASSERT_STR_CONTAINS(why, "UNPROVEN");

	f = (struct xen_guest_facts){ .type = XG_HVM };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NOT_YET);
	ASSERT_STR_CONTAINS(why, "does not yet carry its device model's");

	f = (struct xen_guest_facts){ .type = XG_PVH, .hvm_experimental = true };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_PROTECTED);

	f = (struct xen_guest_facts){ .type = XG_HVM, .hvm_experimental = true, .stubdom = true };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	f = (struct xen_guest_facts){ .type = XG_HVM, .hvm_experimental = true,
				      .qemu_traditional = true };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	f = (struct xen_guest_facts){ .type = XG_HVM, .hvm_experimental = true, .pcidevs = 1 };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	f = (struct xen_guest_facts){ .type = XG_HVM, .hvm_experimental = true, .vtpms = 1 };
	ASSERT_EQ(xen_guest_check(&f, why, sizeof(why)), XG_NEVER);
	return TEST_OK;
}

/*
 * When a protected guest has ended by itself (domain/xencheck.h): libxc
 * reports a crash with `crashed` set and `shutdown` clear, and a crashed
 * guest must count as ended, else the primary takes it for one that did
 * not answer the suspend request (seen in the lab: "did not answer the
 * suspend request ... guest left running" for a guest that had crashed).
 */
int test_xen_guest_ended(void)
{
	struct xen_dom_state running = { false, false, false, 0 };
	struct xen_dom_state suspended = { false, true, false, 2 };
	struct xen_dom_state crashed = { false, false, true, 3 };
	struct xen_dom_state poweroff = { false, true, false, 0 };
	struct xen_dom_state reboot = { false, true, false, 1 };
	struct xen_dom_state dying = { true, false, false, 0 };
	char what[128] = "";

	ASSERT(!xen_guest_ended(&running, what, sizeof(what)));
	ASSERT(!xen_guest_ended(&suspended, what, sizeof(what)));
	ASSERT(xen_guest_ended(&crashed, what, sizeof(what)));
	ASSERT_STR_CONTAINS(what, "crashed");
	ASSERT(xen_guest_ended(&poweroff, what, sizeof(what)));
	ASSERT_STR_CONTAINS(what, "shut itself down (poweroff)");
	ASSERT(xen_guest_ended(&reboot, what, sizeof(what)));
	ASSERT_STR_CONTAINS(what, "(reboot)");
	ASSERT(xen_guest_ended(&dying, what, sizeof(what)));
	ASSERT_STR_CONTAINS(what, "being destroyed");
	return TEST_OK;
}

/*
 * The live copy's policy (domain/precopy.h), driven in libxenguest's own
 * call pattern (xg_sr_save.c send_memory_live: a call at the top of each
 * round with the dirty count, a round sent, a call with -1, a clean) on a
 * model guest: p2m pages, a link that sends `link` pages per time unit,
 * a guest that dirties `rate` distinct pages per time unit at full speed
 * (scaled by the speed the policy asks for, when `obey`).  Returns the
 * dirty set the stop-and-copy takes (pages dirtied during the last round,
 * which the suspend sends), and the rounds.
 */
static long precopy_run(struct precopy *pp, long p2m, double link, double rate, bool obey,
			unsigned *rounds, unsigned *slowest)
{
	long dirty = p2m;			/* policy_stats before the loop */
	unsigned x = 0, pct = 100, sp;
	enum precopy_decision d;

	*slowest = 100;
	for (;;) {
		long sent;

		d = precopy_decide(pp, x, dirty, &sp);	/* the top of a round */
		if (sp && obey)
			pct = sp;
		x++;
		sent = dirty;			/* sent live, even on STOP */
		/* pages the guest dirties while the round goes out */
		dirty = (long)(rate * pct / 100.0 * ((double)sent / link));
		if (dirty > p2m)
			dirty = p2m;
		if (d != PRECOPY_CONTINUE)
			break;
		d = precopy_decide(pp, x, -1, &sp);	/* after the round, before the clean */
		if (d != PRECOPY_CONTINUE)
			break;
		if (x > 1000)
			return -1;			/* never stopped */
	}
	*rounds = x;
	*slowest = pct;
	return dirty;
}

int test_xen_precopy_policy(void)
{
	struct precopy pp;
	unsigned rounds, slowest, sp;
	long left;

	/* the calls themselves: -1 and the first call go on */
	precopy_init(&pp, 4096, 30);
	ASSERT_EQ(precopy_decide(&pp, 0, 65536, &sp), PRECOPY_CONTINUE);
	ASSERT_EQ(sp, 0);
	ASSERT_EQ(precopy_decide(&pp, 1, -1, &sp), PRECOPY_CONTINUE);
	ASSERT_EQ(precopy_decide(&pp, 1, 4096, &sp), PRECOPY_STOP);	/* within the budget */
	ASSERT(pp.converged);
	ASSERT_EQ(pp.final_dirty, 4096);

	/* a 1 GiB guest dirtying a tenth of what the link carries: no slowing,
	 * a few rounds, the stop-and-copy within the budget */
	precopy_init(&pp, 4096, 30);
	left = precopy_run(&pp, 262144, 1000, 100, true, &rounds, &slowest);
	ASSERT(left >= 0 && left <= 4096);
	ASSERT(pp.converged);
	ASSERT_EQ(slowest, 100);
	ASSERT(rounds <= 5);

	/* dirtying twice what the link carries: Xen's own policy would stop at
	 * round 5 with the whole guest dirty; this one slows the guest until the
	 * rounds converge, and the stop-and-copy stays within the budget */
	precopy_init(&pp, 4096, 30);
	left = precopy_run(&pp, 262144, 1000, 2000, true, &rounds, &slowest);
	printf("  2x the link: %u rounds, guest slowed to %u%%, stop-and-copy of %ld pages "
	       "(budget 4096)\n", rounds, slowest, left);
	ASSERT(left >= 0 && left <= 4096);
	ASSERT(pp.converged);
	ASSERT(slowest < 100);
	ASSERT(rounds < 30);

	/* a guest the cap cannot slow (the scheduler refused): stops at the
	 * round bound, said as not converged */
	precopy_init(&pp, 4096, 30);
	left = precopy_run(&pp, 262144, 1000, 2000, false, &rounds, &slowest);
	ASSERT(left > 4096);
	ASSERT(!pp.converged);
	ASSERT_EQ(pp.rounds, 30);		/* it stopped at round 30 ... */
	ASSERT_EQ(rounds, 31);			/* ... which libxenguest still sends live */
	ASSERT_EQ(pp.final_dirty, 262144);

	/* the speed halves per round that does not converge, never under 1% */
	precopy_init(&pp, 10, 100);
	ASSERT_EQ(precopy_decide(&pp, 0, 1000, &sp), PRECOPY_CONTINUE);
	ASSERT_EQ(precopy_decide(&pp, 1, 1000, &sp), PRECOPY_CONTINUE);
	ASSERT_EQ(sp, 0);				/* no round before to compare */
	ASSERT_EQ(precopy_decide(&pp, 2, 950, &sp), PRECOPY_CONTINUE);
	ASSERT_EQ(sp, 50);				/* 95% of the round before */
	ASSERT_EQ(precopy_decide(&pp, 3, 500, &sp), PRECOPY_CONTINUE);
	ASSERT_EQ(sp, 0);				/* it converges: no change */
	for (unsigned i = 4; i < 20; i++)
		precopy_decide(&pp, i, 500, &sp);
	ASSERT_EQ(pp.pct, 1);
	return TEST_OK;
}

/*
 * The emulated-NIC warning: a guest that takes its PV suspend and has
 * QEMU's tap (vifD.N-emu) is told; Xen's own suspend, or no -emu tap
 * (PV NICs only, or the emulated one unplugged), is not.
 */
int test_xen_hvm_nic_at_risk(void)
{
	char why[700] = "";

	ASSERT(xen_hvm_nic_at_risk(true, "vif4.0,vif4.0-emu", why, sizeof(why)));
	ASSERT_STR_CONTAINS(why, "vif4.0-emu");
	ASSERT_STR_CONTAINS(why, "xen_platform_pci = 1");
	ASSERT_STR_CONTAINS(why, "nopv");
	ASSERT(xen_hvm_nic_at_risk(true, "vif4.1-emu", why, sizeof(why)));
	ASSERT_STR_CONTAINS(why, "(vif4.1-emu)");
	/* the -emu tap listed first, then netback's: the tap is the one named */
	ASSERT(xen_hvm_nic_at_risk(true, "vif7.0-emu,vif7.1", why, sizeof(why)));
	ASSERT_STR_CONTAINS(why, "(vif7.0-emu)");
	ASSERT(!xen_hvm_nic_at_risk(false, "vif4.0,vif4.0-emu", why, sizeof(why)));
	ASSERT(!xen_hvm_nic_at_risk(true, "vif1.0", why, sizeof(why)));
	ASSERT(!xen_hvm_nic_at_risk(true, "vif1.0,vif1.1", why, sizeof(why)));
	ASSERT(!xen_hvm_nic_at_risk(true, "", why, sizeof(why)));
	ASSERT(!xen_hvm_nic_at_risk(true, NULL, why, sizeof(why)));
	ASSERT(!xen_hvm_nic_at_risk(true, "-emu", why, sizeof(why)));
	return TEST_OK;
}
