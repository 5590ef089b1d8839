/*
 * netbuf.h - output commit: hold the guest's network output until the
 * checkpoint that produced it is acknowledged.
 *
 * Epoch N is the guest's execution between checkpoint N-1 and checkpoint N.
 * The engine calls close_epoch(N) while the guest is suspended for
 * checkpoint N, so every packet is on the right side of it, and
 * release(N) when the backup acknowledges checkpoint N.
 *
 * Backends: `plug` (sch_plug on an IFB fed from the vif's ingress; one
 * closed epoch at a time), `queue` (NFQUEUE; many epochs), `none` (unsafe,
 * only with allow-unsafe-no-buffering).  All members are required except
 * counters and restart, which may be NULL.  After release_all, output
 * passes until the next close_epoch, which holds again from then on.
 */
#ifndef TANDEM_NETBUF_H
#define TANDEM_NETBUF_H

#include <stdbool.h>
#include <stdint.h>

#include "../config/config.h"

struct netbuf_counters {
	uint64_t held_packets, held_bytes;
	uint64_t released_packets, released_bytes;
	uint64_t dropped_packets, dropped_bytes;
	uint64_t epochs_held;
};

struct netbuf;

struct netbuf_ops {
	const char *name;
	/* Set up buffering on ifname; finds and reuses or removes leftovers of
	 * an earlier run.  Fails with a clear message when the host lacks
	 * what the backend needs (-ENOTSUP / -ENODEV). */
	int (*attach)(struct netbuf *nb, const char *ifname);
	int (*close_epoch)(struct netbuf *nb, uint64_t epoch);
	int (*release)(struct netbuf *nb, uint64_t epoch);
	int (*release_all)(struct netbuf *nb);
	/* Remove every device, qdisc, filter and rule it made. */
	void (*detach)(struct netbuf *nb);
	/* A new protection stream starts (a new initial copy): epochs closed
	 * in the old one and never acknowledged stay held, and the next
	 * close_epoch must not fail because of them: they go out with the new
	 * stream's first acknowledged epoch (or later).  May be NULL when
	 * close_epoch allows it anyway. */
	void (*restart)(struct netbuf *nb);
	/* Closed epochs it can hold before the next close must wait. */
	unsigned max_closed_epochs;
	void (*counters)(struct netbuf *nb, struct netbuf_counters *c);
};

struct netbuf {
	const struct netbuf_ops *ops;
	const struct tandem_config *cfg;
	bool attached;
	void *priv;
};

extern const struct netbuf_ops netbuf_none_ops;
extern const struct netbuf_ops netbuf_plug_ops, netbuf_queue_ops;

/* The backend for cfg->netbuf.  Returns NULL for one not built in. */
const struct netbuf_ops *netbuf_ops_for(const struct tandem_config *cfg);

/* True when this configuration runs without output buffering. */
bool netbuf_unsafe(const struct tandem_config *cfg);

#endif
