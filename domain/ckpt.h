/*
 * ckpt.h - one checkpoint held in local memory ("staging").
 *
 * On the primary a driver's capture() fills a ckpt while the guest is
 * suspended (memory speed, no network); the shipper sends it from here
 * while the guest runs.  On the backup the receiver fills a ckpt from the
 * wire and hands it to the driver's commit() only once it is complete.
 *
 * A ckpt holds up to three kinds of content:
 *   - pages: pfn list + 4 KiB page copies (memdom; any driver that tracks pages)
 *   - state: one vCPU/device state block
 *   - blob:  an opaque driver stream (xen: libxenguest's migration stream)
 */
#ifndef TANDEM_CKPT_H
#define TANDEM_CKPT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "verify.h"

#define CKPT_PAGE_SIZE 4096u

struct ckpt {
	uint64_t epoch;
	uint64_t flags;			/* CKPT_F_* from lib/wire.h */
	uint64_t guest_pages;		/* size of the guest in pages */

	uint64_t npages;		/* pages captured */
	uint64_t cap_pages;		/* room in pfns/pages */
	uint64_t *pfns;
	uint8_t *pages;			/* npages * 4096 bytes */

	uint32_t state_kind;		/* STATE_VCPU, 0 = none */
	uint32_t state_len;
	uint8_t *state;
	uint32_t state_cap;

	uint8_t *blob;
	size_t blob_len, blob_cap;

	/* SHA-256 of the guest at capture, when tests ask for it (TANDEM_TEST_LOG). */
	uint8_t digest[32];
	bool has_digest;

	/* The checkpoint oracle's hashes (config `verify`), in CKPT_VERIFY. */
	struct verify_set verify;
	bool has_verify;

	/* The devices' verdicts (CKPT_DEVICES; device/device.h), when the
	 * VM has devices: ndev of them, in table order, for the session. */
	uint32_t ndev;
	uint32_t dev_verdict[8];
	uint8_t dev_session[16];

	/* Timings filled by the engine and drivers (microseconds). */
	uint64_t t_suspend_us, t_capture_us, t_resume_us;
	uint64_t captured_at_ns;	/* monotonic time of capture */
	uint64_t epoch_start_ns;	/* primary: the previous checkpoint's resume (0 = none) */
};

/* Allocate an empty checkpoint with room for `pages` pages (grows as needed). */
struct ckpt *ckpt_new(uint64_t pages);
void ckpt_free(struct ckpt *c);

/* Empty it for reuse (keeps its buffers). */
void ckpt_reset(struct ckpt *c, uint64_t epoch);

/* Exchange what a and b hold (their buffers too): no copy. */
void ckpt_swap(struct ckpt *a, struct ckpt *b);

/* Make room for `n` more pages; returns 0 or -ENOMEM. */
int ckpt_reserve_pages(struct ckpt *c, uint64_t n);

/* Append one page (copies 4096 bytes from src). Returns 0 or -ENOMEM. */
int ckpt_add_page(struct ckpt *c, uint64_t pfn, const void *src);

/* Set the state block (copied). Returns 0 or -ENOMEM. */
int ckpt_set_state(struct ckpt *c, uint32_t kind, const void *data, uint32_t len);

/* Append to the opaque blob. Returns 0 or -ENOMEM. */
int ckpt_append_blob(struct ckpt *c, const void *data, size_t len);

/* Bytes of staging memory this checkpoint uses now. */
size_t ckpt_bytes(const struct ckpt *c);

#endif
