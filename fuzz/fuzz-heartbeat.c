/*
 * fuzz-heartbeat.c - libFuzzer harness for the heartbeat datagram: the
 * decoder (hb_unpack) and the acceptance rules after it (replay, VM, role,
 * path, proof of recency, the ACTIVE flag), on an engine without sockets.
 *
 * The input is a sequence of datagrams, each 1 control byte then either
 * raw bytes (as anyone on the network could send) or the fields of an
 * authentic datagram that the harness MACs with the key (as a peer or a
 * replaying relay holding captured datagrams could send), so that the
 * fuzzer reaches the rules behind the MAC.  Whatever it sends, an accepted
 * datagram must prove a time within `timeout` before now.
 */
#include <stdint.h>
#include <string.h>

#include "../heartbeat/heartbeat.h"
#include "../lib/log.h"
#include "../lib/util.h"
#include "../lib/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define TIMEOUT_MS 1000u

static uint64_t take64(const uint8_t **p, size_t *n)
{
	uint64_t v = 0;

	for (int i = 0; i < 8 && *n; i++, (*p)++, (*n)--)
		v = v << 8 | **p;
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const uint8_t key[KEY_LEN] = { 7, 7, 7 };
	uint8_t mine[HB_NONCE_LEN], hbkey[32], buf[HB_DGRAM_LEN + 64];
	uint64_t now = 10ull * 1000000000ull;	/* a monotonic clock well past 0 */
	struct hb *hb;
	int role;

	if (size < 1 || size > 16384)
		return 0;
	log_set_level(LOG_LVL_ERROR + 0);
	memset(mine, 0x5a, sizeof(mine));
	role = data[0] & 1 ? ROLE_BACKUP : ROLE_PRIMARY;
	hb = hb__new_detached("vm1", key, role, 2, TIMEOUT_MS, 100, mine);
	if (!hb)
		return 0;
	hb_derive_key(key, hbkey);
	data++;
	size--;
	while (size) {
		uint8_t ctl = *data++;
		uint64_t proof, active;
		size_t len;
		int path = ctl & 1, r;

		size--;
		now += (uint64_t)(ctl >> 4) * 50000000ull;	/* time passes: 0-750 ms */
		if (ctl & 2) {
			/* raw bytes */
			len = MIN(MIN(size, sizeof(buf)), (size_t)(ctl & 4 ? HB_DGRAM_LEN : (ctl >> 3) * 37));
			memcpy(buf, data, len);
			data += len;
			size -= len;
		} else {
			/* an authentic datagram from fields of the input */
			struct hb_dgram d;
			uint64_t age;

			memset(&d, 0, sizeof(d));
			d.type = (uint8_t)take64(&data, &size);
			d.role = (uint8_t)take64(&data, &size);
			d.path = (uint8_t)take64(&data, &size);
			snprintf(d.vm, sizeof(d.vm), "%s", ctl & 8 ? "vm1" : "vm2");
			memset(d.nonce, ctl & 4 ? 0xa5 : (int)(take64(&data, &size) & 0xff), HB_NONCE_LEN);
			d.seq = take64(&data, &size);
			d.time_ns = take64(&data, &size);
			d.epoch = take64(&data, &size);
			if (ctl & 0x40)
				memcpy(d.echo_nonce, mine, HB_NONCE_LEN);
			age = take64(&data, &size);
			d.echo_time_ns = age <= now ? now - age : age;
			d.echo_seq = take64(&data, &size);
			d.echo_hold_ns = take64(&data, &size);
			d.aux = take64(&data, &size);
			hb_pack(hbkey, &d, buf);
			len = HB_DGRAM_LEN;
		}
		r = hb__accept(hb, path, buf, len, now, &proof, &active);
		if (r == 1) {
			/* accepted: it proves a moment of ours within the timeout */
			if (proof > now || now - proof > TIMEOUT_MS * 1000000ull)
				__builtin_trap();
			if (active != UINT64_MAX && role != ROLE_PRIMARY)
				__builtin_trap();	/* only a backup's word counts */
		}
	}
	hb__free_detached(hb);
	return 0;
}
