/*
 * verify.c - the checkpoint oracle's hashes, sets, comparison and record.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "verify.h"

static inline uint64_t rotl64(uint64_t x, int r)
{
	return (x << r) | (x >> (64 - r));
}

/* Two multiply-xor lanes over the page's words, then a final avalanche:
 * every bit of every word reaches the result, and the word order counts. */
uint64_t verify_page_hash(const void *page)
{
	const uint8_t *p = page;
	uint64_t a = 0x9e3779b97f4a7c15ull, b = 0xc2b2ae3d27d4eb4full;

	for (size_t i = 0; i < 4096; i += 16) {
		uint64_t w0, w1;

		memcpy(&w0, p + i, 8);
		memcpy(&w1, p + i + 8, 8);
		a = rotl64(a ^ w0, 27) * 0xff51afd7ed558ccdull;
		b = rotl64(b ^ w1, 31) * 0xc4ceb9fe1a85ec53ull;
	}
	a ^= rotl64(b, 33);
	a ^= a >> 33;
	a *= 0xff51afd7ed558ccdull;
	a ^= a >> 29;
	a *= 0xc4ceb9fe1a85ec53ull;
	a ^= a >> 32;
	return a <= VERIFY_UNSTABLE ? a + 2 : a;
}

void verify_state_hash(const void *p, size_t n, uint8_t out[32])
{
	unsigned olen = 0;

	if (EVP_Digest(p, n, out, &olen, EVP_sha256(), NULL) != 1 || olen != 32)
		memset(out, 0, 32);
}

int verify_set_init(struct verify_set *v, uint32_t cap)
{
	memset(v, 0, sizeof(*v));
	if (cap > VERIFY_MAX_PAGES)
		cap = VERIFY_MAX_PAGES;
	v->pfns = calloc(cap ? cap : 1, sizeof(*v->pfns));
	v->hashes = calloc(cap ? cap : 1, sizeof(*v->hashes));
	if (!v->pfns || !v->hashes) {
		verify_set_free(v);
		return -ENOMEM;
	}
	v->cap = cap;
	return 0;
}

void verify_set_free(struct verify_set *v)
{
	free(v->pfns);
	free(v->hashes);
	memset(v, 0, sizeof(*v));
}

int verify_set_add(struct verify_set *v, uint64_t pfn)
{
	if (v->n >= v->cap)
		return -1;
	v->pfns[v->n] = pfn;
	v->hashes[v->n] = VERIFY_ABSENT;
	return (int)v->n++;
}

void verify_window(struct verify_set *v, const uint64_t *pfns, uint64_t n, uint64_t *cursor,
		   uint32_t want)
{
	if (!n)
		return;
	if (want > n)
		want = (uint32_t)n;
	for (uint32_t i = 0; i < want && v->n < v->cap; i++) {
		if (*cursor >= n)
			*cursor = 0;
		verify_set_add(v, pfns[(*cursor)++]);
	}
}

void verify_compare(const struct verify_set *want, const uint64_t *got, const uint8_t *got_vcpu,
		    struct verify_result *r)
{
	memset(r, 0, sizeof(*r));
	for (uint32_t i = 0; i < want->n; i++) {
		if (want->hashes[i] == VERIFY_UNSTABLE) {
			r->unstable++;
			continue;
		}
		r->compared++;
		if (want->hashes[i] == got[i])
			continue;
		if (r->mismatched < VERIFY_MAX_LISTED)
			r->listed[r->mismatched] = want->pfns[i];
		r->mismatched++;
	}
	if (want->has_vcpu && got_vcpu) {
		r->vcpu_compared = true;
		r->vcpu_mismatch = memcmp(want->vcpu, got_vcpu, 32) != 0;
	}
}

void verify_format_pfns(const struct verify_result *r, char *buf, size_t len)
{
	size_t used = 0;
	uint32_t shown = r->mismatched < VERIFY_MAX_LISTED ? r->mismatched : VERIFY_MAX_LISTED;

	if (!len)
		return;
	buf[0] = '\0';
	for (uint32_t i = 0; i < shown && used < len; i++) {
		int w = snprintf(buf + used, len - used, "%s%#llx", i ? ", " : "",
				 (unsigned long long)r->listed[i]);
		if (w < 0)
			return;
		used += (size_t)w;
	}
	if (r->mismatched > shown && used < len)
		snprintf(buf + used, len - used, " (+%u more)", r->mismatched - shown);
}

size_t verify_wire_len(uint32_t n)
{
	return CKPT_VERIFY_FIXED_LEN + (size_t)n * 16;
}

void verify_encode(const struct verify_set *v, uint8_t *out)
{
	uint8_t *p = out + CKPT_VERIFY_FIXED_LEN;

	put_be64(out, v->epoch);
	put_be32(out + 8, v->n);
	put_be32(out + 12, v->has_vcpu ? 1u : 0u);
	memcpy(out + 16, v->vcpu, 32);
	for (uint32_t i = 0; i < v->n; i++, p += 16) {
		put_be64(p, v->pfns[i]);
		put_be64(p + 8, v->hashes[i]);
	}
}

int verify_decode(const uint8_t *p, uint32_t len, struct verify_set *v)
{
	uint32_t n = get_be32(p + 8);
	const uint8_t *e = p + CKPT_VERIFY_FIXED_LEN;

	(void)len;	/* wire_validate checked it against n */
	if (verify_set_init(v, n))
		return -ENOMEM;
	v->epoch = get_be64(p);
	v->has_vcpu = get_be32(p + 12) & 1u;
	memcpy(v->vcpu, p + 16, 32);
	for (uint32_t i = 0; i < n; i++, e += 16) {
		v->pfns[i] = get_be64(e);
		v->hashes[i] = get_be64(e + 8);
	}
	v->n = n;
	return 0;
}
