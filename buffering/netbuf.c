/*
 * netbuf.c - backend selection and the `none` backend.
 */
#include <stddef.h>

#define LOG_MODULE "netbuf"
#include "../lib/log.h"
#include "netbuf.h"

/* ---- none: no buffering at all (allow-unsafe-no-buffering = yes) ------- */

static int none_attach(struct netbuf *nb, const char *ifname)
{
	(void)ifname;
	log_warn("UNSAFE: output buffering is off (netbuf = none): clients may see "
		 "output from state that is lost at failover");
	nb->attached = true;
	return 0;
}

static int none_epoch(struct netbuf *nb, uint64_t epoch)
{
	(void)nb;
	(void)epoch;
	return 0;
}

static int none_release_all(struct netbuf *nb)
{
	(void)nb;
	return 0;
}

static void none_detach(struct netbuf *nb)
{
	nb->attached = false;
}

const struct netbuf_ops netbuf_none_ops = {
	.name = "none",
	.attach = none_attach,
	.close_epoch = none_epoch,
	.release = none_epoch,
	.release_all = none_release_all,
	.detach = none_detach,
	.max_closed_epochs = 1u << 30,
	.counters = NULL,
};

const struct netbuf_ops *netbuf_ops_for(const struct tandem_config *cfg)
{
	switch (cfg->netbuf) {
	case NETBUF_NONE:
		return &netbuf_none_ops;
	case NETBUF_PLUG:
		return &netbuf_plug_ops;
	case NETBUF_QUEUE:
		return &netbuf_queue_ops;
	default:
		return NULL;
	}
}

bool netbuf_unsafe(const struct tandem_config *cfg)
{
	return cfg->netbuf == NETBUF_NONE;
}
