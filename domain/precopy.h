/*
 * precopy.h - when the xen driver's live copy stops copying and suspends
 * the guest for the stop-and-copy (issue 25: the initial copy completes,
 * and its last pause is bounded).
 *
 * libxenguest asks a precopy_policy callback (xenguest.h, struct
 * save_callbacks) twice a round (tools/libs/guest/xg_sr_save.c,
 * send_memory_live, Xen 4.17): at the top of a round with the pages
 * dirty for it (the first: every page, iteration 0), and after the round
 * was sent with dirty_count -1, before it cleans the log-dirty bitmap.
 * A STOP at the top of a round still sends that round live; the guest is
 * then suspended and what it dirtied since goes out while it is
 * suspended, as the first checkpoint.  Its own policy without a callback
 * stops at 5 rounds or under 50 dirty pages, so a guest that dirties
 * faster than the link carries ends in a stop-and-copy of whatever is
 * dirty after 5 rounds: a pause and a first checkpoint without bound.
 *
 * tandem's: stop once the dirty set fits the budget (target_pages: a
 * piece of the initial copy, at most a quarter of staging-limit); while
 * a round leaves the dirty set more than 90% of the round before, halve
 * the guest's speed (the scheduler's cap, as the latency budget's brake)
 * down to 1%; stop anyway after max_rounds rounds.  The caller restores
 * the guest's speed after the stop-and-copy.  Pure: no Xen here.
 */
#ifndef TANDEM_PRECOPY_H
#define TANDEM_PRECOPY_H

#include <stdbool.h>
#include <stdint.h>

enum precopy_decision { PRECOPY_CONTINUE, PRECOPY_STOP };

struct precopy {
	/* set by the caller */
	uint64_t target_pages;		/* the stop-and-copy's budget */
	unsigned max_rounds;		/* stop after this many rounds whatever is dirty */
	/* kept by precopy_decide */
	long last_dirty;		/* the dirty set at the top of the round before, -1 none */
	unsigned pct;			/* the speed asked for, 100 = not slowed */
	unsigned rounds;		/* the last round seen */
	bool converged;			/* stopped within the budget (else: at max_rounds) */
	long final_dirty;		/* the dirty set when it stopped */
};

void precopy_init(struct precopy *pp, uint64_t target_pages, unsigned max_rounds);

/*
 * One call of the policy: iteration and dirty_count as libxenguest passes
 * them.  *speed_pct is set to the guest's new speed (1..100) when it
 * should change, else 0.
 */
enum precopy_decision precopy_decide(struct precopy *pp, unsigned iteration, long dirty_count,
				     unsigned *speed_pct);

#endif
