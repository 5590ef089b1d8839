/*
 * backup.h - the backup daemon's entry points besides `tandem backup`.
 */
#ifndef TANDEM_BACKUP_H
#define TANDEM_BACKUP_H

#include <stdint.h>

#include "../config/config.h"
#include "../lib/generation.h"
#include "../lib/key.h"

/*
 * A planned switchover (docs/operations.md, "Maintenance: switchover"):
 * the primary whose guest now runs on the other host goes on as this
 * host's backup, in the same process, so that the other host re-protects
 * the guest to it.  cfg: the resolved two-host configuration (switched to
 * the backup role here); note: the switchover's result, shown in status
 * (`switchover`).  The primary's loop, socket, paths and domain must be
 * gone.  Returns the daemon's exit status.
 */
int backup_adopt(const struct tandem_config *cfg, const uint8_t key[KEY_LEN],
		 const struct generation *gen, const char *note);

#endif
