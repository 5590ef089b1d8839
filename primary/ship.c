/*
 * ship.c - serialise a staged checkpoint onto the channel.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define LOG_MODULE "ship"
#include "../lib/fault.h"
#include "../lib/log.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "ship.h"

int ship_ckpt(struct channel *ch, const struct ckpt *c, const uint8_t *digest)
{
	uint8_t buf[64], prefix[16], pfns[WIRE_MAX_PAGES_PER_REC * 8];
	struct wire_ckpt_begin b = { c->epoch, c->npages, c->guest_pages, c->flags };
	struct wire_ckpt_end e = { c->epoch, c->npages, 0, { 0 } };
	uint32_t len;
	int rc;

	len = wire_put_ckpt_begin(buf, &b);
	if ((rc = channel_send(ch, REC_CKPT_BEGIN, buf, len)))
		return rc;
	fault_kill("mid-ship");

	for (uint64_t i = 0; i < c->npages; i += WIRE_MAX_PAGES_PER_REC) {
		uint32_t n = (uint32_t)MIN((uint64_t)WIRE_MAX_PAGES_PER_REC, c->npages - i);
		struct iovec iov[3] = {
			{ prefix, sizeof(prefix) },
			{ pfns, (size_t)n * 8 },
			{ c->pages + i * CKPT_PAGE_SIZE, (size_t)n * CKPT_PAGE_SIZE },
		};
		wire_put_pages_prefix(prefix, c->epoch, n);
		for (uint32_t j = 0; j < n; j++)
			put_be64(pfns + 8 * j, c->pfns[i + j]);
		if ((rc = channel_sendv(ch, REC_CKPT_PAGES, iov, 3)))
			return rc;
		e.nrecords++;
	}
	if (c->state_kind) {
		struct iovec iov[2] = { { prefix, 16 }, { c->state, c->state_len } };
		wire_put_state_prefix(prefix, c->epoch, c->state_kind, c->state_len);
		if ((rc = channel_sendv(ch, REC_CKPT_STATE, iov, 2)))
			return rc;
		e.nrecords++;
	}
	for (size_t off = 0; off < c->blob_len; off += WIRE_BLOB_MAX) {
		uint32_t n = (uint32_t)MIN((size_t)WIRE_BLOB_MAX, c->blob_len - off);
		struct iovec iov[2] = { { prefix, 16 }, { c->blob + off, n } };
		wire_put_state_prefix(prefix, c->epoch, 0, n);
		if ((rc = channel_sendv(ch, REC_CKPT_BLOB, iov, 2)))
			return rc;
		e.nrecords++;
	}
	if (c->has_verify) {
		size_t vlen = verify_wire_len(c->verify.n);
		uint8_t *v = malloc(vlen);

		if (!v)
			return -ENOMEM;
		verify_encode(&c->verify, v);
		rc = channel_send(ch, REC_CKPT_VERIFY, v, (uint32_t)vlen);
		free(v);
		if (rc)
			return rc;
		e.nrecords++;
	}
	if (c->ndev) {
		struct wire_ckpt_devices d = { .epoch = c->epoch, .n = c->ndev };
		uint8_t dbuf[CKPT_DEVICES_FIXED_LEN + WIRE_DEVICES_MAX * 4];

		memcpy(d.session, c->dev_session, sizeof(d.session));
		memcpy(d.verdict, c->dev_verdict, c->ndev * sizeof(d.verdict[0]));
		len = wire_put_ckpt_devices(dbuf, &d);
		if ((rc = channel_send(ch, REC_CKPT_DEVICES, dbuf, len)))
			return rc;
		e.nrecords++;
	}
	if (digest)
		memcpy(e.digest, digest, sizeof(e.digest));
	len = wire_put_ckpt_end(buf, &e);
	return channel_send(ch, REC_CKPT_END, buf, len);
}
