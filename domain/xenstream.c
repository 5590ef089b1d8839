/*
 * xenstream.c - cut a checkpointed libxc stream at CHECKPOINT records.
 */
#include <errno.h>
#include <string.h>

#include "../lib/util.h"
#include "../lib/wire.h"
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
