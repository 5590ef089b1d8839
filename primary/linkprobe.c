/*
 * linkprobe.c - measure the replication link and predict (linkprobe.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../lib/channel.h"
#include "../lib/net.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "linkprobe.h"

#define ECHOES 20
#define BULK_RECORD (1u << 20)

/* Send one PROBE record; data may be NULL (no payload). */
static int send_probe(struct channel *ch, uint64_t seq, uint32_t flags, const uint8_t *data,
		      uint32_t len)
{
	uint8_t hdr[PROBE_FIXED_LEN];
	struct iovec iov[2] = { { hdr, sizeof(hdr) }, { (void *)data, len } };

	put_be64(hdr, seq);
	put_be32(hdr + 8, flags);
	put_be32(hdr + 12, 0);
	return channel_sendv(ch, REC_PROBE, iov, data ? 2 : 1);
}

/* The backup's answer to seq (an echo, or with PROBE_F_RESULT the result). */
static int wait_probe(struct channel *ch, uint64_t seq, uint32_t want, struct channel_rec *rec)
{
	for (;;) {
		int rc = channel_recv(ch, rec);

		if (rc)
			return rc;
		if (rec->type != REC_PROBE)
			return -EPROTO;
		if (get_be64(rec->payload) == seq && (get_be32(rec->payload + 8) & want) == want)
			return 0;
	}
}

int link_probe(const struct tandem_config *cfg, const uint8_t key[KEY_LEN], uint64_t max_bytes,
	       uint64_t max_ms, struct link_probe_result *r, char *err, size_t errlen)
{
	struct channel_params cp = { .role = ROLE_PRIMARY, .vm = cfg->name, .caps = CAP_PROBE,
				     .encrypt = cfg->encrypt };
	struct channel *ch = NULL;
	struct channel_rec rec;
	uint64_t rtt[ECHOES], sent = 0, t0, seq = 0;
	uint8_t *data = NULL;
	int fd, rc;

	memset(r, 0, sizeof(*r));
	memcpy(cp.key, key, KEY_LEN);
	config_digest(cfg, cp.digest);
	fd = net_connect(&cfg->replication, MAX(cfg->timeout_ms, 1000ull), err, errlen);
	if (fd < 0)
		return fd;
	net_tune(fd, MAX(cfg->timeout_ms, 5000ull));
	net_send_timeout(fd, MAX(cfg->timeout_ms, 5000ull));
	rc = channel_handshake(fd, &cp, &ch, err, errlen);
	explicit_bzero(cp.key, sizeof(cp.key));
	if (rc) {
		close(fd);
		return rc;
	}
	for (int i = 0; i < ECHOES; i++) {
		uint64_t t = now_ns();

		if ((rc = send_probe(ch, ++seq, PROBE_F_ECHO, NULL, 0)) ||
		    (rc = wait_probe(ch, seq, 0, &rec)))
			goto io;
		rtt[i] = now_ns() - t;
	}
	r->rtt_ms_max = 0;
	for (int i = 0; i < ECHOES; i++)
		r->rtt_ms_max = MAX(r->rtt_ms_max, (double)rtt[i] / 1e6);
	r->rtt_ms_p50 = (double)u64_median(rtt, ECHOES) / 1e6;
	data = malloc(BULK_RECORD);
	if (!data) {
		rc = -ENOMEM;
		goto out;
	}
	for (uint32_t i = 0; i < BULK_RECORD; i++)	/* not all zero: a middlebox may compress */
		data[i] = (uint8_t)(i * 2654435761u >> 24);
	t0 = now_ns();
	while (sent < max_bytes && now_ns() - t0 < max_ms * 1000000ull) {
		if ((rc = send_probe(ch, ++seq, 0, data, BULK_RECORD)))
			goto io;
		sent += BULK_RECORD;
	}
	if ((rc = send_probe(ch, ++seq, PROBE_F_DONE, NULL, 0)) ||
	    (rc = wait_probe(ch, seq, PROBE_F_RESULT, &rec)))
		goto io;
	r->bytes = get_be64(rec.payload + PROBE_FIXED_LEN);
	r->seconds = (double)get_be64(rec.payload + PROBE_FIXED_LEN + 8) / 1e6;
	r->bytes_per_s = r->seconds > 0 ? (double)r->bytes / r->seconds : 0;
	rc = 0;
	goto out;
io:
	snprintf(err, errlen, "the link probe stopped: %s", rc == -EPROTO ?
		 "the backup answered something else (an older tandem?)" : strerror(-rc));
out:
	free(data);
	channel_free(ch);
	return rc;
}

void probe_predict(const struct tandem_config *cfg, double pause_ms, double dirty_pages,
		   double memcpy_bytes_per_s, const struct link_probe_result *link,
		   struct probe_prediction *out)
{
	double interval = (double)cfg->interval_ms;

	out->checkpoint_bytes = dirty_pages * (4096 + 8) + 4096;
	out->pause_ms = pause_ms + (memcpy_bytes_per_s > 0 ?
				    dirty_pages * 4096 / memcpy_bytes_per_s * 1e3 : 0);
	out->ship_ms = link->bytes_per_s > 0 ? out->checkpoint_bytes / link->bytes_per_s * 1e3 : 0;
	/* the link carries interval's worth per interval at most: beyond, the
	 * guest must be slowed to that share (the budget's brake), and the
	 * latency is the slowed guest's (unslowed, epochs stretch without end) */
	out->speed_pct = out->ship_ms > interval ? 100.0 * interval / out->ship_ms : 100.0;
	out->added_latency_ms = interval + out->pause_ms + MIN(out->ship_ms, interval) +
				link->rtt_ms_p50;
}

static void probe_path(const struct tandem_config *cfg, char *out, size_t len)
{
	snprintf(out, len, "%s/%s.probe", cfg->run_dir, cfg->name);
}

int probe_prediction_save(const struct tandem_config *cfg, const struct probe_prediction *p,
			  const struct link_probe_result *link, double dirty_pages)
{
	char path[CONFIG_PATH_MAX + CONFIG_NAME_MAX + 16];
	FILE *f;

	probe_path(cfg, path, sizeof(path));
	if (!(f = fopen(path, "w")))
		return -errno;
	fprintf(f, "at=%lld\npause_ms=%.3f\ncheckpoint_bytes=%.0f\nship_ms=%.3f\n"
		"added_latency_ms=%.3f\nspeed_pct=%.1f\nlink_bytes_per_s=%.0f\ndirty_pages=%.0f\n",
		(long long)time(NULL), p->pause_ms, p->checkpoint_bytes, p->ship_ms,
		p->added_latency_ms, p->speed_pct, link->bytes_per_s, dirty_pages);
	return fclose(f) ? -errno : 0;
}

int probe_prediction_load(const struct tandem_config *cfg, struct probe_prediction *p,
			  double *link_bytes_per_s, double *dirty_pages, uint64_t *at)
{
	char path[CONFIG_PATH_MAX + CONFIG_NAME_MAX + 16], line[128];
	int found = 0;
	FILE *f;

	probe_path(cfg, path, sizeof(path));
	if (!(f = fopen(path, "r")))
		return -errno;
	memset(p, 0, sizeof(*p));
	while (fgets(line, sizeof(line), f)) {
		unsigned long long u;
		double v;

		if (sscanf(line, "at=%llu", &u) == 1)
			*at = u, found++;
		else if (sscanf(line, "pause_ms=%lf", &v) == 1)
			p->pause_ms = v, found++;
		else if (sscanf(line, "checkpoint_bytes=%lf", &v) == 1)
			p->checkpoint_bytes = v, found++;
		else if (sscanf(line, "ship_ms=%lf", &v) == 1)
			p->ship_ms = v, found++;
		else if (sscanf(line, "added_latency_ms=%lf", &v) == 1)
			p->added_latency_ms = v, found++;
		else if (sscanf(line, "speed_pct=%lf", &v) == 1)
			p->speed_pct = v, found++;
		else if (sscanf(line, "link_bytes_per_s=%lf", &v) == 1)
			*link_bytes_per_s = v, found++;
		else if (sscanf(line, "dirty_pages=%lf", &v) == 1)
			*dirty_pages = v, found++;
	}
	fclose(f);
	return found == 8 ? 0 : -EBADMSG;
}
