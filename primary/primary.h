/*
 * primary.h - the primary daemon's entry points besides `tandem primary`.
 */
#ifndef TANDEM_PRIMARY_H
#define TANDEM_PRIMARY_H

#include <stdint.h>

#include "../config/config.h"
#include "../domain/domain.h"
#include "../lib/generation.h"
#include "../lib/key.h"

/*
 * Re-protection (docs/operations.md, "After a failover"): a backup daemon
 * whose guest runs here since its activation goes on as this guest's
 * primary, in the same process.  cfg: the resolved two-host configuration
 * (its role is switched to primary here); dom: the driver handle whose
 * guest runs (the driver's become_primary takes it over); gen: this
 * host's generation, the one the activation raised.  The backup's loop,
 * status socket and heartbeat paths must be gone.  Runs the daemon until
 * it stops; returns its exit status.
 */
int primary_adopt(const struct tandem_config *cfg, const uint8_t key[KEY_LEN],
		  const struct generation *gen, struct domain *dom);

#endif
