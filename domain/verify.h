/*
 * verify.h - the checkpoint oracle (configuration key `verify`).
 *
 * A diagnostic that proves, checkpoint by checkpoint, that the backup's
 * standby holds what the primary captured.  At checkpoint N the primary,
 * while the guest is still suspended, hashes a window of guest pages (the
 * next `verify` bytes of a rotation over the guest's memory) and the
 * guest's vCPU state; the hashes travel in a CKPT_VERIFY record.  Once N
 * is committed, the backup hashes the same pfns of its standby and its
 * vCPU state and compares: a mismatch names the pfns, in the log and in
 * status.  docs/operations.md says what it costs.
 *
 * Page hashes are 64-bit (not cryptographic: the oracle looks for bugs,
 * not for an adversary; the channel is authenticated).  Two values are
 * reserved: VERIFY_ABSENT (no page at that pfn) and VERIFY_UNSTABLE (the
 * page changed while the guest was suspended, written by a backend or by
 * the hypervisor, so what was shipped is not known; not compared).
 */
#ifndef TANDEM_VERIFY_H
#define TANDEM_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../lib/wire.h"

#define VERIFY_ABSENT 0ull
#define VERIFY_UNSTABLE 1ull
/* At most this many pages per checkpoint (256 MiB of guest): the record
 * stays under the wire's payload cap. */
#define VERIFY_MAX_PAGES WIRE_VERIFY_MAX_PAGES
#define VERIFY_MAX_LISTED 16u

struct verify_set {
	uint64_t epoch;
	uint32_t n, cap;
	uint64_t *pfns;
	uint64_t *hashes;
	uint8_t vcpu[32];		/* SHA-256 of the vCPU state (has_vcpu) */
	bool has_vcpu;
};

struct verify_result {
	uint32_t compared;		/* pages compared */
	uint32_t unstable;		/* pages the primary could not pin down */
	uint32_t mismatched;
	uint64_t listed[VERIFY_MAX_LISTED];	/* the first mismatched pfns */
	bool vcpu_compared, vcpu_mismatch;
};

/* The hash of one 4 KiB page; never VERIFY_ABSENT or VERIFY_UNSTABLE. */
uint64_t verify_page_hash(const void *page);

/* SHA-256 of n bytes (vCPU state). */
void verify_state_hash(const void *p, size_t n, uint8_t out[32]);

/* Allocate room for cap pages (0 or -ENOMEM); free. */
int verify_set_init(struct verify_set *v, uint32_t cap);
void verify_set_free(struct verify_set *v);

/* Append a pfn (hash VERIFY_ABSENT until filled); its index, or -1 when
 * the set is full. */
int verify_set_add(struct verify_set *v, uint64_t pfn);

/*
 * Compare what the primary sent (want) with what the standby holds (got:
 * one hash per want->pfns entry; got_vcpu NULL when the standby's vCPU
 * state cannot be hashed).
 */
void verify_compare(const struct verify_set *want, const uint64_t *got, const uint8_t *got_vcpu,
		    struct verify_result *r);

/* "pfns 0x12, 0x40 (+3 more)" for the log. */
void verify_format_pfns(const struct verify_result *r, char *buf, size_t len);

/* The window of a rotation: the next `want` entries of pfns[0..n) from
 * *cursor, wrapping; added to v.  Advances *cursor. */
void verify_window(struct verify_set *v, const uint64_t *pfns, uint64_t n, uint64_t *cursor,
		   uint32_t want);

/* CKPT_VERIFY payload: encode into out (verify_wire_len bytes, 8-aligned),
 * decode a validated payload into v (allocated here; 0 or -ENOMEM). */
size_t verify_wire_len(uint32_t n);
void verify_encode(const struct verify_set *v, uint8_t *out);
int verify_decode(const uint8_t *p, uint32_t len, struct verify_set *v);

#endif
