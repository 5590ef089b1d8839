/*
 * fuzz-wire.c - libFuzzer harness for the record parser: header check,
 * per-type validator, and the decoder of whatever passes.
 * Input: u32 type, u32 length (big-endian), then the payload bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/util.h"
#include "../lib/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *why;
	uint32_t type, len;
	uint8_t *p;

	if (size < 8)
		return 0;
	type = get_be32(data);
	len = get_be32(data + 4);
	if (wire_check_header(type, len, &why))
		return 0;
	/* The receiver reads exactly ALIGN8(len) bytes; missing bytes mean a
	 * truncated stream, which never reaches the validator. */
	if (size - 8 < ALIGN8(len))
		return 0;
	p = malloc(ALIGN8(len) ? ALIGN8(len) : 1);
	memcpy(p, data + 8, ALIGN8(len));
	if (wire_validate(type, p, len, &why) == 0) {
		union {
			struct wire_hello h; struct wire_error e; struct wire_ckpt_begin b;
			struct wire_ckpt_pages pg; struct wire_ckpt_state s; struct wire_ckpt_end end;
			struct wire_ack a; struct wire_heartbeat hb; struct wire_failover f;
			struct wire_stop st;
		} u;
		switch (type) {
		case REC_HELLO: wire_get_hello(p, &u.h); break;
		case REC_ERROR: wire_get_error(p, &u.e); break;
		case REC_CKPT_BEGIN: wire_get_ckpt_begin(p, &u.b); break;
		case REC_CKPT_PAGES:
			wire_get_ckpt_pages(p, &u.pg);
			/* touch the last byte the decoder promises */
			if (u.pg.data[(size_t)u.pg.count * 4096 - 1] == 0xfe && get_be64(u.pg.pfns) == 1)
				why = "x";
			break;
		case REC_CKPT_STATE:
		case REC_CKPT_BLOB:
			wire_get_ckpt_state(p, &u.s);
			if (u.s.data[u.s.len - 1] == 0xfe)
				why = "x";
			break;
		case REC_CKPT_END: wire_get_ckpt_end(p, &u.end); break;
		case REC_ACK: wire_get_ack(p, &u.a); break;
		case REC_HEARTBEAT: wire_get_heartbeat(p, &u.hb); break;
		case REC_FAILOVER: case REC_FENCE: wire_get_failover(p, &u.f); break;
		case REC_STOP: wire_get_stop(p, &u.st); break;
		case REC_LZ4: {
			static uint8_t out[ALIGN8(WIRE_MAX_PAYLOAD)];
			uint32_t itype, ilen;
			if (wire_lz4_unwrap(p, len, out, sizeof(out), &itype, &ilen, &why) == 0 &&
			    out[ilen - 1] == 0xfe)
				why = "x";
			break;
		}
		default: break;
		}
	}
	free(p);
	return 0;
}
