/*
 * ship.h - send one staged checkpoint as CKPT_BEGIN .. CKPT_END records.
 */
#ifndef TANDEM_SHIP_H
#define TANDEM_SHIP_H

#include <stdint.h>

#include "../domain/ckpt.h"
#include "../lib/channel.h"

/*
 * Ship c over ch (blocking; called off the guest's pause).  digest may be
 * NULL (all zero on the wire).  Returns 0 or -errno.  The fault point
 * mid-ship fires after the first record.
 */
int ship_ckpt(struct channel *ch, const struct ckpt *c, const uint8_t *digest);

#endif
