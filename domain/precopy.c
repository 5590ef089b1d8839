/*
 * precopy.c - the xen driver's live-copy policy (precopy.h).
 */
#include "precopy.h"

#define PRECOPY_MIN_PCT 1u

void precopy_init(struct precopy *pp, uint64_t target_pages, unsigned max_rounds)
{
	*pp = (struct precopy){ .target_pages = target_pages ? target_pages : 1,
				.max_rounds = max_rounds ? max_rounds : 1,
				.last_dirty = -1, .pct = 100, .final_dirty = -1 };
}

enum precopy_decision precopy_decide(struct precopy *pp, unsigned iteration, long dirty_count,
				     unsigned *speed_pct)
{
	*speed_pct = 0;
	pp->rounds = iteration;
	/* after a round, before the clean: let it count the next */
	if (dirty_count < 0)
		return PRECOPY_CONTINUE;
	/* the first call: every page, nothing known of the guest's rate yet */
	if (iteration == 0)
		return PRECOPY_CONTINUE;
	if ((uint64_t)dirty_count <= pp->target_pages || iteration >= pp->max_rounds) {
		pp->converged = (uint64_t)dirty_count <= pp->target_pages;
		pp->final_dirty = dirty_count;
		return PRECOPY_STOP;
	}
	/* a round that left 90% or more of the round before dirty: the guest
	 * dirties about as fast as the link carries; slow it down */
	if (pp->last_dirty >= 0 && (uint64_t)dirty_count * 10 >= (uint64_t)pp->last_dirty * 9 &&
	    pp->pct > PRECOPY_MIN_PCT) {
		pp->pct = pp->pct / 2 > PRECOPY_MIN_PCT ? pp->pct / 2 : PRECOPY_MIN_PCT;
		*speed_pct = pp->pct;
	}
	pp->last_dirty = dirty_count;
	return PRECOPY_CONTINUE;
}
