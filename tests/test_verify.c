/*
 * test_verify.c - the checkpoint oracle's pieces: the page hash, the
 * rotation, the comparison and the CKPT_VERIFY record.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "../domain/verify.h"
#include "../lib/wire.h"
#include "test.h"

/* Any one bit of a page, and the order of its words, change the hash. */
int test_verify_page_hash(void)
{
	static uint8_t page[4096], other[4096];
	uint64_t h0;

	for (size_t i = 0; i < sizeof(page); i++)
		page[i] = (uint8_t)(i * 131 + 7);
	h0 = verify_page_hash(page);
	ASSERT(h0 != VERIFY_ABSENT && h0 != VERIFY_UNSTABLE);
	ASSERT_EQ(verify_page_hash(page), h0);
	for (size_t bit = 0; bit < 4096 * 8; bit += 61) {
		memcpy(other, page, sizeof(page));
		other[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		if (verify_page_hash(other) == h0)
			FAILF("flipping bit %zu does not change the hash", bit);
	}
	memcpy(other, page, sizeof(page));	/* swap two words */
	memcpy(other, page + 8, 8);
	memcpy(other + 8, page, 8);
	ASSERT(verify_page_hash(other) != h0);
	memset(other, 0, sizeof(other));
	ASSERT(verify_page_hash(other) > VERIFY_UNSTABLE);
	return TEST_OK;
}

/* The rotation wraps and every pfn comes round. */
int test_verify_window(void)
{
	uint64_t pfns[10], cursor = 0;
	struct verify_set v;
	int seen[10] = { 0 };

	for (int i = 0; i < 10; i++)
		pfns[i] = 100 + (uint64_t)i;
	ASSERT_EQ(verify_set_init(&v, 4), 0);
	for (int round = 0; round < 5; round++) {
		v.n = 0;
		verify_window(&v, pfns, 10, &cursor, 4);
		ASSERT_EQ(v.n, 4);
		for (uint32_t i = 0; i < v.n; i++)
			seen[v.pfns[i] - 100]++;
	}
	for (int i = 0; i < 10; i++)
		ASSERT_EQ(seen[i], 2);
	v.n = 0;
	ASSERT_EQ(verify_set_add(&v, 7), 0);
	verify_window(&v, pfns, 10, &cursor, 9);	/* room for 3 more only */
	ASSERT_EQ(v.n, 4);
	ASSERT_EQ(verify_set_add(&v, 8), -1);
	verify_set_free(&v);
	return TEST_OK;
}

/* Equal, different, unstable, absent on one side, the vCPU hash. */
int test_verify_compare(void)
{
	struct verify_set v;
	struct verify_result r;
	uint64_t got[5];
	uint8_t vcpu[32];
	char buf[200];

	ASSERT_EQ(verify_set_init(&v, 8), 0);
	for (int i = 0; i < 5; i++) {
		verify_set_add(&v, 0x1000 + (uint64_t)i);
		v.hashes[i] = got[i] = 0xabc0 + (uint64_t)i;
	}
	verify_state_hash("state", 5, v.vcpu);
	v.has_vcpu = true;
	memcpy(vcpu, v.vcpu, 32);
	verify_compare(&v, got, vcpu, &r);
	ASSERT_EQ(r.compared, 5);
	ASSERT_EQ(r.mismatched, 0);
	ASSERT(r.vcpu_compared && !r.vcpu_mismatch);

	got[1] = 1234;				/* differs */
	got[3] = VERIFY_ABSENT;			/* no page on the standby */
	v.hashes[4] = VERIFY_UNSTABLE;		/* not compared */
	got[4] = 99;
	vcpu[0] ^= 1;
	verify_compare(&v, got, vcpu, &r);
	ASSERT_EQ(r.compared, 4);
	ASSERT_EQ(r.unstable, 1);
	ASSERT_EQ(r.mismatched, 2);
	ASSERT_EQ(r.listed[0], 0x1001);
	ASSERT_EQ(r.listed[1], 0x1003);
	ASSERT(r.vcpu_mismatch);
	verify_format_pfns(&r, buf, sizeof(buf));
	ASSERT(strcmp(buf, "0x1001, 0x1003") == 0);
	verify_compare(&v, got, NULL, &r);	/* the standby cannot hash its vCPU */
	ASSERT(!r.vcpu_compared && !r.vcpu_mismatch);
	verify_set_free(&v);
	return TEST_OK;
}

/* CKPT_VERIFY: encode, validate, decode; and what the validator refuses. */
int test_verify_record(void)
{
	struct verify_set v, d;
	const char *why = NULL;
	size_t len;
	uint8_t *p;

	ASSERT_EQ(verify_set_init(&v, 3), 0);
	v.epoch = 77;
	for (int i = 0; i < 3; i++) {
		verify_set_add(&v, (uint64_t)i << 40 | 5);
		v.hashes[i] = 0x1122334455667788ull + (uint64_t)i;
	}
	v.has_vcpu = true;
	memset(v.vcpu, 0x42, 32);
	len = verify_wire_len(v.n);
	ASSERT_EQ(len, CKPT_VERIFY_FIXED_LEN + 3 * 16);
	p = calloc(1, len + 8);
	verify_encode(&v, p);
	ASSERT_EQ(wire_check_header(REC_CKPT_VERIFY, (uint32_t)len, &why), 0);
	ASSERT_EQ(wire_validate(REC_CKPT_VERIFY, p, (uint32_t)len, &why), 0);
	ASSERT_EQ(verify_decode(p, (uint32_t)len, &d), 0);
	ASSERT_EQ(d.epoch, 77);
	ASSERT_EQ(d.n, 3);
	ASSERT(d.has_vcpu && memcmp(d.vcpu, v.vcpu, 32) == 0);
	ASSERT(memcmp(d.pfns, v.pfns, 3 * 8) == 0 && memcmp(d.hashes, v.hashes, 3 * 8) == 0);
	verify_set_free(&d);

	ASSERT(wire_validate(REC_CKPT_VERIFY, p, (uint32_t)len - 16, &why) == -EBADMSG);
	put_be32(p + 12, 2);			/* unknown flag */
	ASSERT(wire_validate(REC_CKPT_VERIFY, p, (uint32_t)len, &why) == -EBADMSG);
	put_be32(p + 12, 1);
	put_be32(p + 8, WIRE_VERIFY_MAX_PAGES + 1);
	ASSERT(wire_validate(REC_CKPT_VERIFY, p, (uint32_t)len, &why) == -EBADMSG);
	ASSERT(wire_check_header(REC_CKPT_VERIFY, CKPT_VERIFY_FIXED_LEN - 8, &why) == -EBADMSG);
	ASSERT(wire_check_header(REC_CKPT_VERIFY, CKPT_VERIFY_FIXED_LEN +
				 WIRE_VERIFY_MAX_PAGES * 16 + 16, &why) == -EBADMSG);
	free(p);
	verify_set_free(&v);
	return TEST_OK;
}
