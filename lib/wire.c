/*
 * wire.c - record layouts, header checks and one validator per record type.
 */
#include <errno.h>
#include <string.h>

#include <lz4.h>

#include "util.h"
#include "wire.h"

typedef int (*validator_fn)(const uint8_t *p, uint32_t len, const char **why);

struct rec_desc {
	uint32_t type;
	const char *name;
	uint32_t min_len, max_len;	/* payload bounds, checked before allocation */
	validator_fn validate;
};

#define FAIL(msg) do { *why = (msg); return -EBADMSG; } while (0)

static int v_hello(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t role = get_be32(p + 4), namelen = get_be32(p + 80);

	if (get_be32(p + 84) != 0)
		FAIL("hello: reserved field is not zero");
	if (role != ROLE_PRIMARY && role != ROLE_BACKUP)
		FAIL("hello: unknown role");
	if (namelen == 0 || namelen > WIRE_NAME_MAX)
		FAIL("hello: VM name length out of bounds (1 to 64)");
	if (len != HELLO_FIXED_LEN + namelen)
		FAIL("hello: length does not match the VM name length");
	for (uint32_t i = 0; i < namelen; i++)
		if (p[HELLO_FIXED_LEN + i] < 0x21 || p[HELLO_FIXED_LEN + i] > 0x7e)
			FAIL("hello: VM name has a non-printable character");
	return 0;
}

static int v_fixed(const uint8_t *p, uint32_t len, const char **why)
{
	(void)p; (void)len; (void)why;
	return 0;
}

static int v_error(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t msglen = get_be32(p + 4);

	if (msglen > WIRE_MSG_MAX)
		FAIL("error: message longer than 256 bytes");
	if (len != ERROR_FIXED_LEN + msglen)
		FAIL("error: length does not match the message length");
	return 0;
}

static int v_held(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t msglen = get_be32(p + 8);

	if (msglen > WIRE_MSG_MAX)
		FAIL("held: message longer than 256 bytes");
	if (len != HELD_FIXED_LEN + msglen)
		FAIL("held: length does not match the message length");
	if (get_be32(p + 12))
		FAIL("held: reserved field not zero");
	return 0;
}

static int v_ckpt_begin(const uint8_t *p, uint32_t len, const char **why)
{
	(void)len;
	if (get_be64(p + 24) & ~(uint64_t)CKPT_F_INITIAL)
		FAIL("ckpt_begin: unknown flags");
	if (get_be64(p + 8) > get_be64(p + 16))
		FAIL("ckpt_begin: more pages than the guest has");
	return 0;
}

static int v_ckpt_pages(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t count = get_be32(p + 8);

	if (get_be32(p + 12) != 0)
		FAIL("ckpt_pages: reserved field is not zero");
	if (count == 0 || count > WIRE_MAX_PAGES_PER_REC)
		FAIL("ckpt_pages: page count out of bounds (1 to 256)");
	if ((uint64_t)len != CKPT_PAGES_FIXED_LEN + (uint64_t)count * (8 + WIRE_PAGE_SIZE))
		FAIL("ckpt_pages: length does not match the page count");
	return 0;
}

static int v_ckpt_state(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t kind = get_be32(p + 8), slen = get_be32(p + 12);

	if (kind != STATE_VCPU && kind != STATE_DEVICE)
		FAIL("ckpt_state: unknown state kind");
	if (slen == 0 || slen > WIRE_STATE_MAX)
		FAIL("ckpt_state: state length out of bounds");
	if (len != CKPT_STATE_FIXED_LEN + slen)
		FAIL("ckpt_state: length does not match the state length");
	return 0;
}

static int v_ckpt_blob(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t slen = get_be32(p + 12);

	if (get_be32(p + 8) != 0)
		FAIL("ckpt_blob: reserved field is not zero");
	if (slen == 0 || slen > WIRE_BLOB_MAX)
		FAIL("ckpt_blob: blob length out of bounds");
	if (len != CKPT_BLOB_FIXED_LEN + slen)
		FAIL("ckpt_blob: length does not match the blob length");
	return 0;
}

static int v_ckpt_end(const uint8_t *p, uint32_t len, const char **why)
{
	(void)len;
	if (get_be64(p + 16) > (1ull << 40))
		FAIL("ckpt_end: record count out of bounds");
	return 0;
}

static int v_ckpt_verify(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t count = get_be32(p + 8);

	if (get_be32(p + 12) & ~1u)
		FAIL("ckpt_verify: unknown flags");
	if (count > WIRE_VERIFY_MAX_PAGES)
		FAIL("ckpt_verify: page count out of bounds (0 to 65536)");
	if ((uint64_t)len != CKPT_VERIFY_FIXED_LEN + (uint64_t)count * 16)
		FAIL("ckpt_verify: length does not match the page count");
	return 0;
}

static int v_ckpt_devices(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t count = get_be32(p + 8);

	if (get_be32(p + 12) != 0)
		FAIL("ckpt_devices: unknown flags");
	if (count == 0 || count > WIRE_DEVICES_MAX)
		FAIL("ckpt_devices: device count out of bounds (1 to 8)");
	if (len != CKPT_DEVICES_FIXED_LEN + count * 4)
		FAIL("ckpt_devices: length does not match the device count");
	for (uint32_t i = 0; i < count; i++)
		if (get_be32(p + CKPT_DEVICES_FIXED_LEN + 4 * i) & ~7u)
			FAIL("ckpt_devices: unknown verdict bits");
	return 0;
}

static int v_probe(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t flags = get_be32(p + 8);

	if (flags & ~(PROBE_F_ECHO | PROBE_F_DONE | PROBE_F_RESULT) || get_be32(p + 12))
		FAIL("probe: unknown flags");
	if ((flags & PROBE_F_RESULT) && len != PROBE_FIXED_LEN + 16)
		FAIL("probe: a result carries 16 bytes");
	return 0;
}

static int v_set(const uint8_t *p, uint32_t len, const char **why)
{
	uint64_t v = get_be64(p + 8);

	(void)len;
	if (get_be32(p) != SET_KEY_INTERVAL || get_be32(p + 4))
		FAIL("set: unknown key");
	if (v < 10 || v > 10000)
		FAIL("set: interval out of bounds (10 to 10000 ms)");
	return 0;
}

static int v_lz4(const uint8_t *p, uint32_t len, const char **why)
{
	uint32_t type = get_be32(p), ilen = get_be32(p + 4);

	if (type != REC_CKPT_PAGES && type != REC_CKPT_BLOB)
		FAIL("lz4: only ckpt_pages and ckpt_blob records travel compressed");
	if (wire_check_header(type, ilen, why))
		return -EBADMSG;
	if (len - LZ4_FIXED_LEN >= ilen)
		FAIL("lz4: compressed data is not smaller than the record");
	return 0;
}

static int v_reserved32(const uint8_t *p, uint32_t len, const char **why)
{
	(void)len;
	if (get_be32(p + 4) != 0)
		FAIL("reserved field is not zero");
	return 0;
}

static int v_generation(const uint8_t *p, uint32_t len, const char **why)
{
	(void)len;
	if (get_be32(p + 16) & ~GEN_F_ACTIVE)
		FAIL("generation: unknown flags");
	if (get_be32(p + 20) != 0)
		FAIL("generation: reserved field is not zero");
	return 0;
}

static const struct rec_desc records[] = {
	{ REC_HELLO, "hello", HELLO_FIXED_LEN + 1, HELLO_FIXED_LEN + WIRE_NAME_MAX, v_hello },
	{ REC_AUTH, "auth", AUTH_LEN, AUTH_LEN, v_fixed },
	{ REC_ERROR, "error", ERROR_FIXED_LEN, ERROR_FIXED_LEN + WIRE_MSG_MAX, v_error },
	{ REC_CKPT_BEGIN, "ckpt_begin", CKPT_BEGIN_LEN, CKPT_BEGIN_LEN, v_ckpt_begin },
	{ REC_CKPT_PAGES, "ckpt_pages", CKPT_PAGES_FIXED_LEN + 8 + WIRE_PAGE_SIZE,
	  CKPT_PAGES_FIXED_LEN + WIRE_MAX_PAGES_PER_REC * (8 + WIRE_PAGE_SIZE), v_ckpt_pages },
	{ REC_CKPT_STATE, "ckpt_state", CKPT_STATE_FIXED_LEN + 1,
	  CKPT_STATE_FIXED_LEN + WIRE_STATE_MAX, v_ckpt_state },
	{ REC_CKPT_BLOB, "ckpt_blob", CKPT_BLOB_FIXED_LEN + 1,
	  CKPT_BLOB_FIXED_LEN + WIRE_BLOB_MAX, v_ckpt_blob },
	{ REC_CKPT_END, "ckpt_end", CKPT_END_LEN, CKPT_END_LEN, v_ckpt_end },
	{ REC_CKPT_VERIFY, "ckpt_verify", CKPT_VERIFY_FIXED_LEN,
	  CKPT_VERIFY_FIXED_LEN + WIRE_VERIFY_MAX_PAGES * 16, v_ckpt_verify },
	{ REC_CKPT_DEVICES, "ckpt_devices", CKPT_DEVICES_FIXED_LEN + 4,
	  CKPT_DEVICES_FIXED_LEN + WIRE_DEVICES_MAX * 4, v_ckpt_devices },
	{ REC_ACK, "ack", ACK_LEN, ACK_LEN, v_fixed },
	{ REC_HELD, "held", HELD_FIXED_LEN, HELD_FIXED_LEN + WIRE_MSG_MAX, v_held },
	{ REC_HEARTBEAT, "heartbeat", HEARTBEAT_LEN, HEARTBEAT_LEN, v_fixed },
	{ REC_FAILOVER, "failover", FAILOVER_LEN, FAILOVER_LEN, v_reserved32 },
	{ REC_FENCE, "fence", FENCE_LEN, FENCE_LEN, v_reserved32 },
	{ REC_STOP, "stop", STOP_LEN, STOP_LEN, v_reserved32 },
	{ REC_SET, "set", SET_LEN, SET_LEN, v_set },
	{ REC_GENERATION, "generation", GENERATION_LEN, GENERATION_LEN, v_generation },
	{ REC_PROBE, "probe", PROBE_FIXED_LEN, PROBE_FIXED_LEN + PROBE_MAX_DATA, v_probe },
	{ REC_LZ4, "lz4", LZ4_FIXED_LEN + 1, WIRE_MAX_PAYLOAD, v_lz4 },
};

static const struct rec_desc *find_desc(uint32_t type)
{
	for (size_t i = 0; i < ARRAY_SIZE(records); i++)
		if (records[i].type == type)
			return &records[i];
	return NULL;
}

const char *wire_type_name(uint32_t type)
{
	const struct rec_desc *d = find_desc(type);

	return d ? d->name : "unknown";
}

void wire_stream_header(uint8_t out[WIRE_STREAM_HDR_LEN])
{
	memcpy(out, WIRE_MAGIC, WIRE_MAGIC_LEN);
	put_be32(out + 8, WIRE_VERSION);
	put_be32(out + 12, 0);
}

int wire_check_stream_header(const uint8_t in[WIRE_STREAM_HDR_LEN], uint32_t *version)
{
	if (memcmp(in, WIRE_MAGIC, WIRE_MAGIC_LEN) != 0)
		return -EPROTO;
	*version = get_be32(in + 8);
	if (*version != WIRE_VERSION)
		return -EPROTONOSUPPORT;
	if (get_be32(in + 12) != 0)
		return -EPROTO;
	return 0;
}

int wire_check_header(uint32_t type, uint32_t length, const char **why)
{
	const struct rec_desc *d = find_desc(type);

	if (!d)
		FAIL("unknown record type");
	if (length < d->min_len)
		FAIL("record shorter than its type allows");
	if (length > d->max_len)
		FAIL("record longer than its type allows");
	return 0;
}

int wire_validate(uint32_t type, const uint8_t *p, uint32_t len, const char **why)
{
	const struct rec_desc *d = find_desc(type);
	int rc;

	if ((rc = wire_check_header(type, len, why)))
		return rc;
	for (size_t i = len; i < ALIGN8(len); i++)
		if (p[i])
			FAIL("padding is not zero");
	return d->validate(p, len, why);
}

/* ---- encoders ------------------------------------------------------------ */

static uint32_t pad(uint8_t *out, uint32_t len)
{
	memset(out + len, 0, ALIGN8(len) - len);
	return len;
}

uint32_t wire_put_hello(uint8_t *out, const struct wire_hello *h)
{
	uint32_t namelen = (uint32_t)strnlen(h->name, WIRE_NAME_MAX);

	put_be32(out, h->version);
	put_be32(out + 4, h->role);
	put_be64(out + 8, h->caps);
	memcpy(out + 16, h->nonce, WIRE_NONCE_LEN);
	memcpy(out + 48, h->digest, WIRE_DIGEST_LEN);
	put_be32(out + 80, namelen);
	put_be32(out + 84, 0);
	memcpy(out + HELLO_FIXED_LEN, h->name, namelen);
	return pad(out, HELLO_FIXED_LEN + namelen);
}

uint32_t wire_put_error(uint8_t *out, uint32_t code, const char *msg)
{
	uint32_t n = (uint32_t)strnlen(msg, WIRE_MSG_MAX);

	put_be32(out, code);
	put_be32(out + 4, n);
	memcpy(out + 8, msg, n);
	return pad(out, ERROR_FIXED_LEN + n);
}

uint32_t wire_put_held(uint8_t *out, uint64_t epoch, const char *msg)
{
	uint32_t n = (uint32_t)strnlen(msg, WIRE_MSG_MAX);

	put_be64(out, epoch);
	put_be32(out + 8, n);
	put_be32(out + 12, 0);
	memcpy(out + HELD_FIXED_LEN, msg, n);
	return pad(out, HELD_FIXED_LEN + n);
}

uint32_t wire_put_ckpt_begin(uint8_t *out, const struct wire_ckpt_begin *b)
{
	put_be64(out, b->epoch);
	put_be64(out + 8, b->npages);
	put_be64(out + 16, b->guest_pages);
	put_be64(out + 24, b->flags);
	return CKPT_BEGIN_LEN;
}

uint32_t wire_put_ckpt_end(uint8_t *out, const struct wire_ckpt_end *e)
{
	put_be64(out, e->epoch);
	put_be64(out + 8, e->npages);
	put_be64(out + 16, e->nrecords);
	memcpy(out + 24, e->digest, WIRE_DIGEST_LEN);
	return CKPT_END_LEN;
}

uint32_t wire_put_ckpt_devices(uint8_t *out, const struct wire_ckpt_devices *d)
{
	put_be64(out, d->epoch);
	put_be32(out + 8, d->n);
	put_be32(out + 12, 0);
	memcpy(out + 16, d->session, WIRE_SESSION_LEN);
	for (uint32_t i = 0; i < d->n; i++)
		put_be32(out + CKPT_DEVICES_FIXED_LEN + 4 * i, d->verdict[i]);
	return CKPT_DEVICES_FIXED_LEN + 4 * d->n;
}

uint32_t wire_put_ack(uint8_t *out, const struct wire_ack *a)
{
	put_be64(out, a->epoch);
	put_be64(out + 8, a->commit_us);
	return ACK_LEN;
}

uint32_t wire_put_heartbeat(uint8_t *out, const struct wire_heartbeat *h)
{
	put_be64(out, h->seq);
	put_be64(out + 8, h->time_ns);
	put_be64(out + 16, h->epoch);
	return HEARTBEAT_LEN;
}

uint32_t wire_put_failover(uint8_t *out, const struct wire_failover *f)
{
	put_be32(out, f->reason);
	put_be32(out + 4, 0);
	put_be64(out + 8, f->epoch);
	return FAILOVER_LEN;
}

uint32_t wire_put_stop(uint8_t *out, const struct wire_stop *s)
{
	put_be32(out, s->reason);
	put_be32(out + 4, 0);
	return STOP_LEN;
}

void wire_put_pages_prefix(uint8_t out[16], uint64_t epoch, uint32_t count)
{
	put_be64(out, epoch);
	put_be32(out + 8, count);
	put_be32(out + 12, 0);
}

void wire_put_state_prefix(uint8_t out[16], uint64_t epoch, uint32_t kind, uint32_t len)
{
	put_be64(out, epoch);
	put_be32(out + 8, kind);
	put_be32(out + 12, len);
}

uint32_t wire_lz4_wrap(uint32_t type, const uint8_t *in, uint32_t n, uint8_t *out, size_t outcap)
{
	int clen;

	if (outcap <= LZ4_FIXED_LEN || n > (uint32_t)LZ4_MAX_INPUT_SIZE)
		return 0;
	clen = LZ4_compress_default((const char *)in, (char *)out + LZ4_FIXED_LEN, (int)n,
				    (int)MIN(outcap - LZ4_FIXED_LEN, (size_t)INT32_MAX));
	if (clen <= 0 || (uint64_t)clen + LZ4_FIXED_LEN >= n)
		return 0;
	put_be32(out, type);
	put_be32(out + 4, n);
	return LZ4_FIXED_LEN + (uint32_t)clen;
}

int wire_lz4_unwrap(const uint8_t *p, uint32_t len, uint8_t *out, size_t outcap,
		    uint32_t *type, uint32_t *ilen, const char **why)
{
	uint32_t t = get_be32(p), n = get_be32(p + 4);
	int got;

	if (ALIGN8((size_t)n) > outcap)
		FAIL("lz4: record larger than the receive buffer");
	got = LZ4_decompress_safe((const char *)p + LZ4_FIXED_LEN, (char *)out,
				  (int)(len - LZ4_FIXED_LEN), (int)n);
	if (got < 0 || (uint32_t)got != n)
		FAIL("lz4: data does not decompress to the stated length");
	memset(out + n, 0, ALIGN8((size_t)n) - n);
	*type = t;
	*ilen = n;
	return wire_validate(t, out, n, why);
}

/* ---- decoders ------------------------------------------------------------ */

void wire_get_hello(const uint8_t *p, struct wire_hello *h)
{
	uint32_t namelen = get_be32(p + 80);

	h->version = get_be32(p);
	h->role = get_be32(p + 4);
	h->caps = get_be64(p + 8);
	memcpy(h->nonce, p + 16, WIRE_NONCE_LEN);
	memcpy(h->digest, p + 48, WIRE_DIGEST_LEN);
	memcpy(h->name, p + HELLO_FIXED_LEN, namelen);
	h->name[namelen] = '\0';
}

void wire_get_error(const uint8_t *p, struct wire_error *e)
{
	uint32_t n = get_be32(p + 4);

	e->code = get_be32(p);
	memcpy(e->msg, p + 8, n);
	e->msg[n] = '\0';
	for (uint32_t i = 0; i < n; i++)
		if (e->msg[i] < 0x20 || e->msg[i] > 0x7e)
			e->msg[i] = '?';
}

void wire_get_held(const uint8_t *p, struct wire_held *h)
{
	uint32_t n = get_be32(p + 8);

	h->epoch = get_be64(p);
	memcpy(h->msg, p + HELD_FIXED_LEN, n);
	h->msg[n] = '\0';
	for (uint32_t i = 0; i < n; i++)
		if (h->msg[i] < 0x20 || h->msg[i] > 0x7e)
			h->msg[i] = '?';
}

void wire_get_ckpt_begin(const uint8_t *p, struct wire_ckpt_begin *b)
{
	b->epoch = get_be64(p);
	b->npages = get_be64(p + 8);
	b->guest_pages = get_be64(p + 16);
	b->flags = get_be64(p + 24);
}

void wire_get_ckpt_pages(const uint8_t *p, struct wire_ckpt_pages *pg)
{
	pg->epoch = get_be64(p);
	pg->count = get_be32(p + 8);
	pg->pfns = p + 16;
	pg->data = p + 16 + (size_t)pg->count * 8;
}

void wire_get_ckpt_state(const uint8_t *p, struct wire_ckpt_state *s)
{
	s->epoch = get_be64(p);
	s->kind = get_be32(p + 8);
	s->len = get_be32(p + 12);
	s->data = p + 16;
}

void wire_get_ckpt_end(const uint8_t *p, struct wire_ckpt_end *e)
{
	e->epoch = get_be64(p);
	e->npages = get_be64(p + 8);
	e->nrecords = get_be64(p + 16);
	memcpy(e->digest, p + 24, WIRE_DIGEST_LEN);
}

/* After v_ckpt_devices: n is 1..WIRE_DEVICES_MAX. */
void wire_get_ckpt_devices(const uint8_t *p, struct wire_ckpt_devices *d)
{
	memset(d, 0, sizeof(*d));
	d->epoch = get_be64(p);
	d->n = get_be32(p + 8);
	memcpy(d->session, p + 16, WIRE_SESSION_LEN);
	for (uint32_t i = 0; i < d->n && i < WIRE_DEVICES_MAX; i++)
		d->verdict[i] = get_be32(p + CKPT_DEVICES_FIXED_LEN + 4 * i);
}

void wire_get_ack(const uint8_t *p, struct wire_ack *a)
{
	a->epoch = get_be64(p);
	a->commit_us = get_be64(p + 8);
}

void wire_get_heartbeat(const uint8_t *p, struct wire_heartbeat *h)
{
	h->seq = get_be64(p);
	h->time_ns = get_be64(p + 8);
	h->epoch = get_be64(p + 16);
}

void wire_get_failover(const uint8_t *p, struct wire_failover *f)
{
	f->reason = get_be32(p);
	f->epoch = get_be64(p + 8);
}

void wire_get_stop(const uint8_t *p, struct wire_stop *s)
{
	s->reason = get_be32(p);
}

uint32_t wire_put_generation(uint8_t *out, const struct wire_generation *g)
{
	put_be64(out, g->gen);
	put_be64(out + 8, g->checkpoint);
	put_be32(out + 16, g->flags);
	put_be32(out + 20, 0);
	return GENERATION_LEN;
}

void wire_get_generation(const uint8_t *p, struct wire_generation *g)
{
	g->gen = get_be64(p);
	g->checkpoint = get_be64(p + 8);
	g->flags = get_be32(p + 16);
}
