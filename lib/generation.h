/*
 * generation.h - the protection generation: which copy of a VM is current.
 *
 * Every activation raises the generation by one (the activating backup
 * takes the higher of its own and the last primary's, plus one) and
 * writes it down before the guest runs; a backup that takes a session
 * adopts its primary's.  Both daemons exchange it in the handshake
 * (docs/protocol.md, GENERATION): the side with the lower number holds a
 * stale copy and never runs it.  Stored in STATE_DIR/NAME.generation
 * (state-dir: it must survive a reboot), one "key value" per line,
 * replaced atomically (write, fsync, rename, fsync of the directory); a
 * file in RUN_DIR, where tandem kept it before, is read when STATE_DIR
 * has none.
 */
#ifndef TANDEM_GENERATION_H
#define TANDEM_GENERATION_H

#include <stdint.h>

#include "../config/config.h"

struct generation {
	uint64_t gen;			/* 0: never activated, nothing known */
	uint64_t checkpoint;		/* the checkpoint it was activated from (0: none) */
	char what[32];			/* "primary", "standby", "active" */
};

/* Read this host's generation for cfg's VM.  A missing file is generation
 * 0 (returns 0); an unreadable or malformed one: -errno / -EINVAL with
 * err set (g then holds 0). */
int generation_load(const struct tandem_config *cfg, struct generation *g, char *err, size_t errlen);

/* Write it down (durably).  0 or -errno. */
int generation_save(const struct tandem_config *cfg, const struct generation *g);

#endif
