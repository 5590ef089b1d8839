/*
 * linkprobe.h - `tandem probe`'s measurement of the replication link, and
 * its prediction of what protection will cost (issue "Real-size guests",
 * item 4).
 *
 * The probe connects to the backup's replication address as the primary
 * would, with the same handshake, authentication and (when `encrypt` is
 * on) encryption, announcing CAP_PROBE: the backup answers it on its own
 * thread and never takes it for a session (docs/protocol.md, PROBE).  It
 * times echoes (the round trip) and then sends bulk records for a bounded
 * time: the backup's count of what arrived over how long is the rate.
 */
#ifndef TANDEM_LINKPROBE_H
#define TANDEM_LINKPROBE_H

#include <stdint.h>

#include "../config/config.h"
#include "../lib/key.h"

struct link_probe_result {
	double rtt_ms_p50, rtt_ms_max;
	uint64_t bytes;			/* bulk bytes the backup received */
	double seconds;			/* over how long (first to last, at the backup) */
	double bytes_per_s;
};

/* Measure: up to max_bytes of bulk data, up to max_ms.  0, or -errno with
 * why in err (the backup unreachable, refused, wrong key or config). */
int link_probe(const struct tandem_config *cfg, const uint8_t key[KEY_LEN], uint64_t max_bytes,
	       uint64_t max_ms, struct link_probe_result *r, char *err, size_t errlen);

/* What protection at cfg's interval will cost, from the probe's figures. */
struct probe_prediction {
	double pause_ms;		/* the guest's suspend path + copying the dirty pages */
	double checkpoint_bytes;
	double ship_ms;			/* one checkpoint over the link */
	double added_latency_ms;	/* an epoch's oldest output: epoch + pause + ship + ack */
	double speed_pct;		/* what latency-budget would slow the guest to (100: none) */
};

void probe_predict(const struct tandem_config *cfg, double pause_ms, double dirty_pages,
		   double memcpy_bytes_per_s, const struct link_probe_result *link,
		   struct probe_prediction *out);

/* The prediction as the primary shows it beside reality (status
 * "prediction"): RUN_DIR/NAME.probe, key=value lines. */
int probe_prediction_save(const struct tandem_config *cfg, const struct probe_prediction *p,
			  const struct link_probe_result *link, double dirty_pages);
int probe_prediction_load(const struct tandem_config *cfg, struct probe_prediction *p,
			  double *link_bytes_per_s, double *dirty_pages, uint64_t *at);

#endif
