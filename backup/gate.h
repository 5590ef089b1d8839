/*
 * gate.h - the backup's door on the replication port.
 *
 * Every connection is accepted as it arrives, also while a primary's
 * session runs, and handshakes on a thread of its own within a deadline;
 * at most GATE_MAX handshakes run at once and at most GATE_PER_SOURCE
 * from one address, so connections that hold no key can neither fill the
 * backlog nor keep a primary that holds it waiting.  What a handshake
 * holds before it proves the key is a few stack buffers (lib/channel.c).
 * An authenticated primary is handed to the daemon at once through
 * `arrived` (on the handshake's thread), which may end an older session.
 */
#ifndef TANDEM_GATE_H
#define TANDEM_GATE_H

#include <stdint.h>

#include "../lib/channel.h"

#define GATE_MAX 16		/* handshakes in progress */
#define GATE_PER_SOURCE 4	/* of them from one address */

struct gate;

/* An authenticated primary (the callee owns ch).  src: "ADDR:PORT". */
typedef void (*gate_arrived_fn)(void *arg, struct channel *ch, const char *src);

struct gate_stats {
	uint64_t accepted;		/* connections accepted */
	uint64_t authenticated;		/* handed over */
	uint64_t refused_busy;		/* closed at once: too many from the source, or in all */
	uint64_t failed;		/* handshake failed (wrong key, not tandem, ...) */
	uint64_t timed_out;		/* handshake not done within the deadline */
	unsigned in_progress;
};

/*
 * Serve listen_fd (the gate does not close it) with the handshake
 * parameters cp (copied), each handshake within deadline_ms.  Returns 0
 * or -errno.
 */
int gate_start(struct gate **out, int listen_fd, const struct channel_params *cp,
	       uint64_t deadline_ms, gate_arrived_fn fn, void *arg);

/* Stop accepting, end the handshakes in progress, join every thread.
 * No callback runs after it returns.  NULL is a no-op. */
void gate_stop(struct gate *g);

void gate_get_stats(struct gate *g, struct gate_stats *st);

#endif
