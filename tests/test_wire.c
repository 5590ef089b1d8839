/*
 * test_wire.c - record encoders, decoders and validators.
 */
#include <errno.h>

#include "../lib/util.h"
#include "../lib/wire.h"
#include "test.h"

static uint8_t buf[WIRE_MAX_PAYLOAD + 64];

static int validate(uint32_t type, uint32_t len, const char **why)
{
	return wire_validate(type, buf, len, why);
}

int test_wire_round_trips(void)
{
	struct wire_hello h = { .version = 1, .role = ROLE_BACKUP, .caps = 5 }, h2;
	struct wire_ckpt_begin b = { 7, 3, 100, CKPT_F_INITIAL }, b2;
	struct wire_ckpt_end e = { 7, 3, 5, { 1, 2, 3 } }, e2;
	struct wire_ack a = { 9, 1234 }, a2;
	struct wire_heartbeat hb = { 1, 2, 3 }, hb2;
	struct wire_failover fo = { 2, 44 }, fo2;
	struct wire_stop st = { 1 }, st2;
	struct wire_error er;
	const char *why = NULL;
	uint32_t len;

	memset(h.nonce, 0xaa, sizeof(h.nonce));
	memset(h.digest, 0x55, sizeof(h.digest));
	strcpy(h.name, "web-01");
	len = wire_put_hello(buf, &h);
	ASSERT_EQ(len, HELLO_FIXED_LEN + 6);
	ASSERT_EQ(validate(REC_HELLO, len, &why), 0);
	memset(&h2, 0, sizeof(h2));	/* the name's bytes after its NUL are not set */
	wire_get_hello(buf, &h2);
	ASSERT(!memcmp(&h, &h2, sizeof(h)));

	len = wire_put_ckpt_begin(buf, &b);
	ASSERT_EQ(validate(REC_CKPT_BEGIN, len, &why), 0);
	wire_get_ckpt_begin(buf, &b2);
	ASSERT(!memcmp(&b, &b2, sizeof(b)));

	len = wire_put_ckpt_end(buf, &e);
	ASSERT_EQ(validate(REC_CKPT_END, len, &why), 0);
	wire_get_ckpt_end(buf, &e2);
	ASSERT(!memcmp(&e, &e2, sizeof(e)));

	len = wire_put_ack(buf, &a);
	ASSERT_EQ(validate(REC_ACK, len, &why), 0);
	wire_get_ack(buf, &a2);
	ASSERT(a2.epoch == 9 && a2.commit_us == 1234);

	len = wire_put_heartbeat(buf, &hb);
	ASSERT_EQ(validate(REC_HEARTBEAT, len, &why), 0);
	wire_get_heartbeat(buf, &hb2);
	ASSERT(!memcmp(&hb, &hb2, sizeof(hb)));

	len = wire_put_failover(buf, &fo);
	ASSERT_EQ(validate(REC_FAILOVER, len, &why), 0);
	wire_get_failover(buf, &fo2);
	ASSERT(fo2.reason == 2 && fo2.epoch == 44);
	ASSERT_EQ(validate(REC_FENCE, len, &why), 0);

	len = wire_put_stop(buf, &st);
	ASSERT_EQ(validate(REC_STOP, len, &why), 0);
	wire_get_stop(buf, &st2);
	ASSERT_EQ(st2.reason, 1);

	len = wire_put_error(buf, 3, "bad thing");
	ASSERT_EQ(validate(REC_ERROR, len, &why), 0);
	wire_get_error(buf, &er);
	ASSERT(er.code == 3 && !strcmp(er.msg, "bad thing"));
	{
		struct wire_held hd;

		len = wire_put_held(buf, 42, "disk r0: DRBD is not whole\x01");
		ASSERT_EQ(validate(REC_HELD, len, &why), 0);
		wire_get_held(buf, &hd);
		ASSERT(hd.epoch == 42 && !strcmp(hd.msg, "disk r0: DRBD is not whole?"));
	}

	/* pages: 2 pages */
	wire_put_pages_prefix(buf, 5, 2);
	put_be64(buf + 16, 10);
	put_be64(buf + 24, 11);
	memset(buf + 32, 0x42, 2 * WIRE_PAGE_SIZE);
	ASSERT_EQ(validate(REC_CKPT_PAGES, 16 + 2 * (8 + 4096), &why), 0);
	{
		struct wire_ckpt_pages pg;
		wire_get_ckpt_pages(buf, &pg);
		ASSERT(pg.epoch == 5 && pg.count == 2 && get_be64(pg.pfns + 8) == 11 && pg.data[4095] == 0x42);
	}
	wire_put_state_prefix(buf, 5, STATE_VCPU, 24);
	memset(buf + 16, 1, 24);
	ASSERT_EQ(validate(REC_CKPT_STATE, 40, &why), 0);
	wire_put_state_prefix(buf, 5, 0, 24);
	ASSERT_EQ(validate(REC_CKPT_BLOB, 40, &why), 0);
	return TEST_OK;
}

int test_wire_stream_header(void)
{
	uint8_t h[WIRE_STREAM_HDR_LEN];
	uint32_t v = 0;

	wire_stream_header(h);
	ASSERT_EQ(wire_check_stream_header(h, &v), 0);
	ASSERT_EQ(v, WIRE_VERSION);
	put_be32(h + 8, 2);
	ASSERT_EQ(wire_check_stream_header(h, &v), -EPROTONOSUPPORT);
	ASSERT_EQ(v, 2);
	wire_stream_header(h);
	h[0] = 'X';
	ASSERT_EQ(wire_check_stream_header(h, &v), -EPROTO);
	return TEST_OK;
}

struct vcase {
	uint32_t type;
	uint32_t len;
	const char *expect;
};

/* Build a valid record of each type in buf, then break it in each way. */
int test_wire_validators_reject(void)
{
	const char *why;
	struct wire_hello h = { .version = 1, .role = ROLE_PRIMARY };
	uint32_t len;

	/* Unknown type, zero lengths, oversized lengths: rejected from the header alone. */
	ASSERT_EQ(wire_check_header(0x9999, 8, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "unknown record type");
	{
		static const uint32_t types[] = { REC_HELLO, REC_AUTH, REC_ERROR, REC_CKPT_BEGIN,
			REC_CKPT_PAGES, REC_CKPT_STATE, REC_CKPT_BLOB, REC_CKPT_END, REC_ACK,
			REC_HEARTBEAT, REC_FAILOVER, REC_FENCE, REC_STOP };
		for (size_t i = 0; i < ARRAY_SIZE(types); i++) {
			if (wire_check_header(types[i], 0, &why) != -EBADMSG)
				FAILF("%s accepts length 0", wire_type_name(types[i]));
			ASSERT_STR_CONTAINS(why, "shorter");
			if (wire_check_header(types[i], 0xffffffffu, &why) != -EBADMSG)
				FAILF("%s accepts length 4G", wire_type_name(types[i]));
			ASSERT_STR_CONTAINS(why, "longer");
			if (wire_check_header(types[i], WIRE_MAX_PAYLOAD + 1, &why) != -EBADMSG)
				FAILF("%s accepts more than the payload cap", wire_type_name(types[i]));
		}
	}

	/* hello: truncated, name length lies, bad role, bad name, wrong padding */
	strcpy(h.name, "vm");
	len = wire_put_hello(buf, &h);
	ASSERT_EQ(validate(REC_HELLO, len - 1, &why), -EBADMSG);	/* truncated */
	put_be32(buf + 80, 3);
	ASSERT_EQ(validate(REC_HELLO, len, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "does not match");
	put_be32(buf + 80, 0);
	ASSERT_EQ(validate(REC_HELLO, len, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "name length out of bounds");
	len = wire_put_hello(buf, &h);
	put_be32(buf + 4, 7);
	ASSERT_EQ(validate(REC_HELLO, len, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "unknown role");
	len = wire_put_hello(buf, &h);
	buf[HELLO_FIXED_LEN] = '\n';
	ASSERT_EQ(validate(REC_HELLO, len, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "non-printable");
	len = wire_put_hello(buf, &h);
	buf[len + 1] = 1;	/* padding byte */
	ASSERT_EQ(validate(REC_HELLO, len, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "padding is not zero");
	len = wire_put_hello(buf, &h);
	put_be32(buf + 84, 1);
	ASSERT_EQ(validate(REC_HELLO, len, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "reserved");

	/* pages: count zero, count too big, length mismatch, reserved */
	wire_put_pages_prefix(buf, 1, 0);
	ASSERT_EQ(validate(REC_CKPT_PAGES, 16 + 8 + 4096, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "page count out of bounds");
	wire_put_pages_prefix(buf, 1, 257);
	ASSERT_EQ(validate(REC_CKPT_PAGES, 16 + 8 + 4096, &why), -EBADMSG);
	wire_put_pages_prefix(buf, 1, 2);
	ASSERT_EQ(validate(REC_CKPT_PAGES, 16 + 8 + 4096, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "does not match the page count");
	wire_put_pages_prefix(buf, 1, 1);
	put_be32(buf + 12, 9);
	ASSERT_EQ(validate(REC_CKPT_PAGES, 16 + 8 + 4096, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "reserved");

	/* state: zero length, unknown kind, mismatch, over the cap */
	wire_put_state_prefix(buf, 1, STATE_VCPU, 0);
	ASSERT_EQ(validate(REC_CKPT_STATE, 24, &why), -EBADMSG);
	wire_put_state_prefix(buf, 1, 9, 8);
	ASSERT_EQ(validate(REC_CKPT_STATE, 24, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "unknown state kind");
	wire_put_state_prefix(buf, 1, STATE_VCPU, 16);
	ASSERT_EQ(validate(REC_CKPT_STATE, 24, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "does not match");
	wire_put_state_prefix(buf, 1, STATE_VCPU, WIRE_STATE_MAX + 1);
	ASSERT_EQ(validate(REC_CKPT_STATE, 24, &why), -EBADMSG);

	/* blob: reserved, mismatch */
	wire_put_state_prefix(buf, 1, 1, 8);
	ASSERT_EQ(validate(REC_CKPT_BLOB, 24, &why), -EBADMSG);
	wire_put_state_prefix(buf, 1, 0, 9);
	ASSERT_EQ(validate(REC_CKPT_BLOB, 24, &why), -EBADMSG);

	/* begin: unknown flags, more pages than the guest */
	{
		struct wire_ckpt_begin b = { 1, 5, 4, 0 };
		len = wire_put_ckpt_begin(buf, &b);
		ASSERT_EQ(validate(REC_CKPT_BEGIN, len, &why), -EBADMSG);
		b.npages = 1;
		b.flags = 8;
		len = wire_put_ckpt_begin(buf, &b);
		ASSERT_EQ(validate(REC_CKPT_BEGIN, len, &why), -EBADMSG);
		ASSERT_STR_CONTAINS(why, "unknown flags");
	}
	/* error: message length lies */
	len = wire_put_error(buf, 1, "abc");
	put_be32(buf + 4, 300);
	ASSERT_EQ(validate(REC_ERROR, len, &why), -EBADMSG);
	/* held: message length lies, reserved set */
	len = wire_put_held(buf, 1, "abc");
	put_be32(buf + 8, 4);
	ASSERT_EQ(validate(REC_HELD, len, &why), -EBADMSG);
	len = wire_put_held(buf, 1, "abc");
	put_be32(buf + 12, 1);
	ASSERT_EQ(validate(REC_HELD, len, &why), -EBADMSG);
	/* devices: a round trip, then count, bits and length that lie */
	{
		struct wire_ckpt_devices d = { .epoch = 9, .n = 2, .verdict = { 1, 2 } }, g;

		memset(d.session, 0x5a, sizeof(d.session));
		len = wire_put_ckpt_devices(buf, &d);
		ASSERT_EQ(len, CKPT_DEVICES_FIXED_LEN + 8);
		ASSERT_EQ(validate(REC_CKPT_DEVICES, len, &why), 0);
		wire_get_ckpt_devices(buf, &g);
		ASSERT_EQ(g.epoch, 9);
		ASSERT_EQ(g.n, 2);
		ASSERT_EQ(g.verdict[1], 2);
		ASSERT(!memcmp(g.session, d.session, sizeof(d.session)));
		ASSERT_EQ(validate(REC_CKPT_DEVICES, len - 4, &why), -EBADMSG);
		put_be32(buf + CKPT_DEVICES_FIXED_LEN, 8);	/* an unknown verdict bit */
		ASSERT_EQ(validate(REC_CKPT_DEVICES, len, &why), -EBADMSG);
		ASSERT_STR_CONTAINS(why, "verdict");
		put_be32(buf + 8, 0);
		ASSERT_EQ(validate(REC_CKPT_DEVICES, len, &why), -EBADMSG);
		put_be32(buf + 8, 9);
		ASSERT_EQ(validate(REC_CKPT_DEVICES, len, &why), -EBADMSG);
		ASSERT_EQ(wire_check_header(REC_CKPT_DEVICES, CKPT_DEVICES_FIXED_LEN + 36, &why),
			  -EBADMSG);
	}
	/* probe: flags known only, a result of exactly 16 bytes */
	memset(buf, 0, 64);
	put_be32(buf + 8, PROBE_F_ECHO);
	ASSERT_EQ(validate(REC_PROBE, PROBE_FIXED_LEN, &why), 0);
	put_be32(buf + 8, 8);
	ASSERT_EQ(validate(REC_PROBE, PROBE_FIXED_LEN, &why), -EBADMSG);
	put_be32(buf + 8, PROBE_F_RESULT);
	ASSERT_EQ(validate(REC_PROBE, PROBE_FIXED_LEN + 16, &why), 0);
	ASSERT_EQ(validate(REC_PROBE, PROBE_FIXED_LEN + 8, &why), -EBADMSG);
	ASSERT_EQ(wire_check_header(REC_PROBE, PROBE_FIXED_LEN + PROBE_MAX_DATA + 1, &why), -EBADMSG);
	/* fixed-size records with the wrong size */
	ASSERT_EQ(validate(REC_ACK, 15, &why), -EBADMSG);
	ASSERT_EQ(validate(REC_ACK, 24, &why), -EBADMSG);
	ASSERT_EQ(validate(REC_AUTH, 31, &why), -EBADMSG);
	return TEST_OK;
}

/* Random garbage never crashes a validator and never passes as a hello
 * with a broken length relation. */
int test_wire_garbage(void)
{
	uint32_t seed = 12345;
	const char *why;
	int accepted = 0;

	for (int iter = 0; iter < 20000; iter++) {
		uint32_t type, len;
		for (size_t i = 0; i < 512; i++) {
			seed = seed * 1103515245u + 12345u;
			buf[i] = (uint8_t)(seed >> 16);
		}
		type = (uint32_t)(buf[0] % 0x50);
		len = (uint32_t)(buf[1] | buf[2] << 8) % 400;
		memset(buf + len, 0, ALIGN8(len) - len);
		if (wire_validate(type, buf, len, &why) == 0) {
			accepted++;
			if (type == REC_HELLO)
				ASSERT_EQ(len, HELLO_FIXED_LEN + get_be32(buf + 80));
		}
	}
	/* Only fixed-layout records without checks (ack, heartbeat, auth) pass by chance. */
	ASSERT(accepted < 2000);
	return TEST_OK;
}

/* wire_lz4_wrap, and the zero padding the channel adds on the wire */
static uint32_t wrap(const uint8_t *rec, uint32_t n, uint8_t *z, size_t zcap)
{
	uint32_t zlen = wire_lz4_wrap(REC_CKPT_PAGES, rec, n, z, zcap - 8);

	memset(z + zlen, 0, ALIGN8(zlen) - zlen);
	return zlen;
}

/* LZ4 records: round trip, and every way a peer can get one wrong. */
int test_wire_lz4(void)
{
	static uint8_t rec[16 + 4 * (8 + 4096)], z[LZ4_FIXED_LEN + 32768], out[ALIGN8(sizeof(rec))];
	uint32_t zlen, type = 0, ilen = 0;
	const char *why = NULL;

	wire_put_pages_prefix(rec, 5, 4);
	for (uint32_t i = 0; i < 4; i++)
		put_be64(rec + 16 + 8 * i, i * 9);
	memset(rec + 16 + 32, 'x', sizeof(rec) - 16 - 32);
	zlen = wrap(rec, sizeof(rec), z, sizeof(z));
	ASSERT(zlen > LZ4_FIXED_LEN && zlen < sizeof(rec) / 10);
	ASSERT_EQ(wire_validate(REC_LZ4, z, zlen, &why), 0);
	ASSERT_EQ(wire_lz4_unwrap(z, zlen, out, sizeof(out), &type, &ilen, &why), 0);
	ASSERT_EQ(type, REC_CKPT_PAGES);
	ASSERT_EQ(ilen, sizeof(rec));
	ASSERT(!memcmp(out, rec, sizeof(rec)));

	/* incompressible: not wrapped */
	for (size_t i = 0, x = 88172645463325252ull; i < sizeof(rec); i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		rec[i] = (uint8_t)(x >> 24);
	}
	ASSERT_EQ(wrap(rec, sizeof(rec), z, sizeof(z)), 0);
	wire_put_pages_prefix(rec, 5, 4);
	memset(rec + 16 + 32, 'x', sizeof(rec) - 16 - 32);
	zlen = wrap(rec, sizeof(rec), z, sizeof(z));

	/* only checkpoint data travels compressed */
	put_be32(z, REC_ACK);
	ASSERT_EQ(wire_validate(REC_LZ4, z, zlen, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "only ckpt_pages and ckpt_blob");
	put_be32(z, REC_LZ4);
	ASSERT_EQ(wire_validate(REC_LZ4, z, zlen, &why), -EBADMSG);
	put_be32(z, REC_CKPT_PAGES);
	/* a stated length its type does not allow */
	put_be32(z + 4, WIRE_MAX_PAYLOAD + 1);
	ASSERT_EQ(wire_validate(REC_LZ4, z, zlen, &why), -EBADMSG);
	/* "compressed" data as long as the record */
	put_be32(z, REC_CKPT_BLOB);
	put_be32(z + 4, zlen - LZ4_FIXED_LEN);
	ASSERT_EQ(wire_validate(REC_LZ4, z, zlen, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "not smaller");
	put_be32(z, REC_CKPT_PAGES);
	/* a stated length the data does not decompress to */
	put_be32(z + 4, sizeof(rec) - 4096 - 8);
	ASSERT_EQ(wire_validate(REC_LZ4, z, zlen, &why), 0);
	ASSERT_EQ(wire_lz4_unwrap(z, zlen, out, sizeof(out), &type, &ilen, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "does not decompress");
	put_be32(z + 4, sizeof(rec));
	/* corrupt data: refused, never written past out */
	for (uint32_t i = LZ4_FIXED_LEN; i < zlen; i += 3)
		z[i] ^= 0xa5;
	ASSERT_EQ(wire_lz4_unwrap(z, zlen, out, sizeof(out), &type, &ilen, &why), -EBADMSG);
	/* decompresses to a record its own validator refuses (page count 0) */
	wire_put_pages_prefix(rec, 5, 0);
	zlen = wrap(rec, sizeof(rec), z, sizeof(z));
	ASSERT(zlen > 0);
	ASSERT_EQ(wire_validate(REC_LZ4, z, zlen, &why), 0);
	ASSERT_EQ(wire_lz4_unwrap(z, zlen, out, sizeof(out), &type, &ilen, &why), -EBADMSG);
	ASSERT_STR_CONTAINS(why, "page count");
	/* a receive buffer too small for the stated length */
	wire_put_pages_prefix(rec, 5, 4);
	zlen = wrap(rec, sizeof(rec), z, sizeof(z));
	ASSERT_EQ(wire_lz4_unwrap(z, zlen, out, 4096, &type, &ilen, &why), -EBADMSG);
	return TEST_OK;
}
