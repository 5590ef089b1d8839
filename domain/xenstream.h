/*
 * xenstream.h - just enough of Xen's migration stream formats to cut a
 * checkpointed libxc stream into checkpoints and to wrap it for libxl.
 *
 * libxc stream (docs/specs/libxc-migration-stream.pandoc in Xen): a 24-byte
 * image header, a 16-byte domain header, then records {u32 type, u32
 * length, body padded to 8} in the host's byte order.  In a Remus stream
 * each checkpoint ends with a CHECKPOINT record (type 0xe, length 0).
 *
 * libxl stream v2 (libxl-migration-stream.pandoc): a 16-byte header
 * (ident "LibxlFmt", version 2, options; big-endian), then records of the
 * same shape; LIBXC_CONTEXT (1) says a libxc stream follows, and in a
 * checkpointed stream libxl reads its own records after each libxc
 * CHECKPOINT up to CHECKPOINT_END (4).
 */
#ifndef TANDEM_XENSTREAM_H
#define TANDEM_XENSTREAM_H

#include <stddef.h>
#include <stdint.h>

#define XS_IHDR_LEN 24
#define XS_DHDR_LEN 16
#define XS_IHDR_MARKER 0xffffffffffffffffull
#define XS_IHDR_ID 0x58454E46u		/* "XENF" */
#define XS_REC_END 0x0u
#define XS_REC_CHECKPOINT 0xeu
#define XS_REC_LENGTH_MAX (128u << 20)

#define XL_HDR_LEN 16
#define XL_IDENT 0x4c6962786c466d74ull	/* "LibxlFmt" */
#define XL_VERSION 2u
#define XL_REC_LIBXC_CONTEXT 1u
#define XL_REC_CHECKPOINT_END 4u

struct xenstream_cut {
	int stage;			/* 0 image header, 1 domain header, 2 record header, 3 body */
	uint8_t hdr[XS_IHDR_LEN];
	size_t have;			/* bytes of hdr collected */
	uint64_t body_left;		/* stage 3 */
	uint32_t type;
	uint32_t xen_major, xen_minor;	/* from the domain header */
	uint32_t dom_type;		/* 1 PV, 2 HVM (PVH is HVM here) */
	uint64_t checkpoints;		/* CHECKPOINT records seen */
	int ended;			/* END record seen */
};

/*
 * Feed n bytes.  Returns the number of bytes consumed: fewer than n when a
 * CHECKPOINT record ended inside the data (the cut is right after it;
 * feed the rest afterwards), or -EBADMSG for a malformed stream.
 */
long xenstream_feed(struct xenstream_cut *s, const uint8_t *data, size_t n);

/* The libxl header and LIBXC_CONTEXT record that open a stream (24 bytes). */
#define XENSTREAM_PROLOGUE_LEN 24
size_t xenstream_libxl_prologue(uint8_t out[32]);

/* A libxl CHECKPOINT_END record (8 bytes). */
size_t xenstream_libxl_checkpoint_end(uint8_t out[8]);

#endif
