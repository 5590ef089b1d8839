/*
 * xenstream.c - cut a checkpointed libxc stream at CHECKPOINT records.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../lib/util.h"
#include "../lib/wire.h"
#include "verify.h"
#include "xenstream.h"

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put_le32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24);
}

long xenstream_feed(struct xenstream_cut *s, const uint8_t *data, size_t n)
{
	size_t i = 0;

	while (i < n) {
		size_t want;

		if (s->stage == 3) {
			size_t take = (size_t)MIN((uint64_t)(n - i), s->body_left);
			s->body_left -= take;
			i += take;
			if (s->body_left == 0)
				s->stage = 2;
			continue;
		}
		want = s->stage == 0 ? XS_IHDR_LEN : s->stage == 1 ? XS_DHDR_LEN : 8;
		{
			size_t take = MIN(n - i, want - s->have);
			memcpy(s->hdr + s->have, data + i, take);
			s->have += take;
			i += take;
		}
		if (s->have < want)
			continue;
		s->have = 0;
		switch (s->stage) {
		case 0:
			/* the image header is big-endian: marker, id, version, options;
			 * options bit 0 set means a big-endian stream, which we refuse */
			if (get_be64(s->hdr) != XS_IHDR_MARKER || get_be32(s->hdr + 8) != XS_IHDR_ID)
				return -EBADMSG;
			if (s->hdr[17] & 1)
				return -EBADMSG;
			s->stage = 1;
			break;
		case 1:
			/* the domain header is in the stream's (little-endian) order */
			s->dom_type = le32(s->hdr);
			s->xen_major = le32(s->hdr + 8);
			s->xen_minor = le32(s->hdr + 12);
			s->stage = 2;
			break;
		case 2:
			s->type = le32(s->hdr) & ~0x80000000u;
			s->body_left = ALIGN8((uint64_t)le32(s->hdr + 4));
			if (le32(s->hdr + 4) > XS_REC_LENGTH_MAX)
				return -EBADMSG;
			if (s->type == XS_REC_END)
				s->ended = 1;
			if (s->body_left)
				s->stage = 3;
			if (s->type == XS_REC_CHECKPOINT && s->body_left == 0) {
				s->checkpoints++;
				return (long)i;
			}
			break;
		}
	}
	return (long)i;
}

size_t xenstream_libxl_prologue(uint8_t out[32])
{
	put_be64(out, XL_IDENT);
	put_be32(out + 8, XL_VERSION);
	put_be32(out + 12, 0);
	put_le32(out + 16, XL_REC_LIBXC_CONTEXT);
	put_le32(out + 20, 0);
	return XENSTREAM_PROLOGUE_LEN;
}

size_t xenstream_libxl_checkpoint_end(uint8_t out[8])
{
	put_le32(out, XL_REC_CHECKPOINT_END);
	put_le32(out + 4, 0);
	return 8;
}

size_t xenstream_libxl_emulator_len(size_t n)
{
	if (n > XS_REC_LENGTH_MAX - XL_EMU_HDR_LEN)
		return 0;
	return 8 + ALIGN8(XL_EMU_HDR_LEN + n);
}

size_t xenstream_libxl_emulator_record(uint8_t *out, uint32_t type, uint32_t emulator_id,
				       uint32_t index, const void *body, size_t n)
{
	size_t total = xenstream_libxl_emulator_len(n), used = 8 + XL_EMU_HDR_LEN + n;

	if (!total)
		return 0;
	put_le32(out, type);
	put_le32(out + 4, (uint32_t)(XL_EMU_HDR_LEN + n));
	put_le32(out + 8, emulator_id);
	put_le32(out + 12, index);
	if (n)
		memcpy(out + 16, body, n);
	memset(out + used, 0, total - used);
	return total;
}

int xenstream_libxl_emulator_find(const uint8_t *s, size_t len, struct xenstream_emu *e)
{
	struct xenstream_emu cur = { 0 };
	bool libxl = false;	/* in libxl's records, after libxc's CHECKPOINT */

	memset(e, 0, sizeof(*e));
	for (size_t off = 0; off + 8 <= len;) {
		uint32_t t = le32(s + off), l = le32(s + off + 4);
		size_t body = off + 8;

		if (l > XS_REC_LENGTH_MAX)
			return -EBADMSG;
		if (body + ALIGN8((size_t)l) > len)
			break;		/* a record cut short: the checkpoint is incomplete */
		off = body + ALIGN8((size_t)l);
		if (!libxl) {
			t &= ~0x80000000u;	/* libxc's optional-record bit */
			if (t == XS_REC_CHECKPOINT || t == XS_REC_END) {
				libxl = true;
				memset(&cur, 0, sizeof(cur));
			}
			continue;
		}
		switch (t) {
		case XL_REC_EMULATOR_XENSTORE_DATA:
		case XL_REC_EMULATOR_CONTEXT:
			if (l < XL_EMU_HDR_LEN)
				return -EBADMSG;
			if (t == XL_REC_EMULATOR_CONTEXT) {
				cur.contexts++;
				cur.ctx_id = le32(s + body);
				cur.ctx_index = le32(s + body + 4);
				cur.ctx_off = body + XL_EMU_HDR_LEN;
				cur.ctx_len = l - XL_EMU_HDR_LEN;
			} else {
				cur.xs_records++;
				cur.xs_off = body + XL_EMU_HDR_LEN;
				cur.xs_len = l - XL_EMU_HDR_LEN;
			}
			break;
		case XL_REC_CHECKPOINT_STATE:
			break;
		case XL_REC_CHECKPOINT_END:
			if (l)
				return -EBADMSG;
			cur.checkpoints = e->checkpoints + 1;
			*e = cur;
			libxl = false;
			break;
		case XL_REC_END:
			return (int)e->checkpoints;	/* libxl's stream ends */
		default:
			return -EBADMSG;
		}
	}
	return (int)e->checkpoints;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static void put_le64(uint8_t *p, uint64_t v)
{
	put_le32(p, (uint32_t)v);
	put_le32(p + 4, (uint32_t)(v >> 32));
}

int xenstream_find_record(const uint8_t *s, size_t len, uint32_t type, size_t *body,
			  uint32_t *body_len)
{
	int found = -ENOENT;

	for (size_t off = 0; off + 8 <= len;) {
		uint32_t t = le32(s + off) & ~0x80000000u, l = le32(s + off + 4);

		if (l > XS_REC_LENGTH_MAX || off + 8 + ALIGN8((uint64_t)l) > len)
			return -EBADMSG;
		if (t == type) {
			*body = off + 8;
			*body_len = l;
			found = 0;
		}
		if (t == XS_REC_CHECKPOINT || t == XS_REC_END)
			return found;
		off += 8 + ALIGN8((size_t)l);
	}
	return found;
}

int xenstream_vcpu_hash(const uint8_t *ctx, size_t len, size_t tsc_off, uint8_t out[32])
{
	uint8_t *acc = NULL;
	size_t acc_len = 0;
	int cpus = 0;

	for (size_t off = 0; off + 8 <= len;) {
		uint16_t code = (uint16_t)(ctx[off] | ctx[off + 1] << 8);
		uint32_t l = le32(ctx + off + 4);
		uint8_t *n;

		if (off + 8 + l > len)
			break;
		if (code == XS_HVM_CODE_END)
			break;
		if (code == XS_HVM_CODE_CPU && l >= tsc_off + 8) {
			n = realloc(acc, acc_len + 8 + l);
			if (!n) {
				free(acc);
				return -ENOMEM;
			}
			acc = n;
			memcpy(acc + acc_len, ctx + off, 8 + l);
			memset(acc + acc_len + 8 + tsc_off, 0, 8);	/* time moves on */
			acc_len += 8 + l;
			cpus++;
		}
		off += 8 + l;
	}
	if (cpus)
		verify_state_hash(acc, acc_len, out);
	free(acc);
	return cpus ? cpus : -ENOENT;
}

int xenstream_drop_page(uint8_t *s, size_t *len, uint64_t *pfn)
{
	for (size_t off = 0; off + 8 <= *len;) {
		uint32_t t = le32(s + off) & ~0x80000000u, l = le32(s + off + 4);
		size_t body = off + 8;

		if (l > XS_REC_LENGTH_MAX || off + 8 + ALIGN8((uint64_t)l) > *len)
			return -EBADMSG;
		if (t == XS_REC_CHECKPOINT || t == XS_REC_END)
			return -ENOENT;
		if (t == XS_REC_PAGE_DATA && l >= 8) {
			uint32_t count = le32(s + body);
			size_t data = body + 8 + (size_t)count * 8, k = 0;

			if (8 + (uint64_t)count * 8 > l)
				return -EBADMSG;
			for (uint32_t i = 0; i < count; i++) {
				uint64_t e = le64(s + body + 8 + 8 * (size_t)i);
				uint32_t type = (uint32_t)(e >> 32) & XS_PFINFO_TYPE_MASK32;
				size_t at, tail;

				if (type >= XS_PFINFO_BROKEN)	/* carries no data */
					continue;
				at = data + k * 4096;
				if (at + 4096 > body + l)
					return -EBADMSG;
				/* mark it "not present" and cut its data out */
				*pfn = e & XS_PFN_MASK;
				put_le64(s + body + 8 + 8 * (size_t)i, *pfn | (uint64_t)XS_PFINFO_XTAB << 32);
				tail = *len - (at + 4096);
				memmove(s + at, s + at + 4096, tail);
				*len -= 4096;
				put_le32(s + off + 4, l - 4096);
				return 0;
			}
		}
		off += 8 + ALIGN8((size_t)l);
	}
	return -ENOENT;
}

int xenstream_alter_page(uint8_t *s, size_t len, uint64_t *pfn)
{
	for (size_t off = 0; off + 8 <= len;) {
		uint32_t t = le32(s + off) & ~0x80000000u, l = le32(s + off + 4);
		size_t body = off + 8;

		if (l > XS_REC_LENGTH_MAX || off + 8 + ALIGN8((uint64_t)l) > len)
			return -EBADMSG;
		if (t == XS_REC_CHECKPOINT || t == XS_REC_END)
			return -ENOENT;
		if (t == XS_REC_PAGE_DATA && l >= 8) {
			uint32_t count = le32(s + body);
			size_t data = body + 8 + (size_t)count * 8;

			if (8 + (uint64_t)count * 8 > l)
				return -EBADMSG;
			for (uint32_t i = 0; i < count; i++) {
				uint64_t e = le64(s + body + 8 + 8 * (size_t)i);
				uint32_t type = (uint32_t)(e >> 32) & XS_PFINFO_TYPE_MASK32;

				if (type >= XS_PFINFO_BROKEN)	/* carries no data */
					continue;
				if (data + 4096 > body + l)
					return -EBADMSG;
				*pfn = e & XS_PFN_MASK;
				s[data + XENSTREAM_ALTER_AT] ^= 0xff;
				return 0;
			}
		}
		off += 8 + ALIGN8((size_t)l);
	}
	return -ENOENT;
}

uint32_t xenstream_oracle_pick(const uint64_t *pfns, const int *err, uint32_t n,
			       const uint64_t *types, const uint64_t *skip, size_t nskip,
			       uint64_t *out, uint64_t *xen_owned)
{
	uint32_t kept = 0, mapped = 0;

	for (uint32_t i = 0; i < n; i++) {
		uint32_t type;
		bool skipped = false;

		if (err[i])
			continue;
		type = types ? (uint32_t)types[mapped] & XS_PFINFO_TYPE_MASK32 : 0;
		mapped++;
		if (type >= XS_PFINFO_BROKEN) {	/* BROKEN, XALLOC, XTAB: no data */
			(*xen_owned)++;
			continue;
		}
		for (size_t s = 0; s < nskip; s++)
			skipped |= skip[s] && skip[s] == pfns[i];
		if (!skipped)
			out[kept++] = pfns[i];
	}
	return kept;
}

size_t xenstream_barrier(uint8_t out[16])
{
	put_le32(out, XS_REC_HVM_PARAMS);
	put_le32(out + 4, 8);
	memset(out + 8, 0, 8);		/* count 0, reserved */
	return 16;
}
