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
#define XS_REC_PAGE_DATA 0x1u
#define XS_REC_HVM_CONTEXT 0x9u
#define XS_REC_HVM_PARAMS 0xau
#define XS_REC_CHECKPOINT 0xeu
#define XS_REC_LENGTH_MAX (128u << 20)

/* PAGE_DATA entries: pfn in the low 52 bits, XEN_DOMCTL_PFINFO type above. */
#define XS_PFN_MASK 0x000fffffffffffffull
#define XS_PFINFO_TYPE_MASK32 0xf0000000u
#define XS_PFINFO_BROKEN 0xd0000000u	/* and XALLOC 0xe, XTAB 0xf: no data */
#define XS_PFINFO_XTAB 0xf0000000u
/* HVM context save records (xen/hvm/save.h): typecodes */
#define XS_HVM_CODE_END 0
#define XS_HVM_CODE_CPU 2

#define XL_HDR_LEN 16
#define XL_IDENT 0x4c6962786c466d74ull	/* "LibxlFmt" */
#define XL_VERSION 2u
#define XL_REC_END 0u
#define XL_REC_LIBXC_CONTEXT 1u
#define XL_REC_EMULATOR_XENSTORE_DATA 2u
#define XL_REC_EMULATOR_CONTEXT 3u
#define XL_REC_CHECKPOINT_END 4u
#define XL_REC_CHECKPOINT_STATE 5u	/* COLO only */
/* The emulator records' sub-header {u32 emulator_id, u32 index}
 * (libxl_sr_stream_format.h: libxl__sr_emulator_hdr). */
#define XL_EMU_HDR_LEN 8
#define XL_EMULATOR_QEMU_UPSTREAM 2u	/* EMULATOR_QEMU_UPSTREAM */

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

/*
 * libxl's emulator records (libxl-migration-stream.pandoc, "Emulator
 * Records"; libxl_sr_stream_format.h): {u32 type, u32 length} with
 * length = 8 + n, the sub-header {u32 emulator_id, u32 index}, the n
 * bytes of body, zero padding to a multiple of 8 (REC_ALIGN_ORDER), all
 * in the host's (little-endian) order, as libxl_stream_write.c:
 * setup_generic_write writes them.
 *   EMULATOR_XENSTORE_DATA (2): packed NUL-terminated (key, value) pairs
 *     relative to the device model's xenstore directory (the physmap keys;
 *     libxl leaves the record out when there are none).
 *   EMULATOR_CONTEXT (3): the emulator's saved state, for QEMU what
 *     xen-save-devices-state wrote; libxl's restore writes it to
 *     qemu-resume.<domid> (libxl_stream_read.c:write_emulator_blob).
 * In a checkpointed stream libxl writes them after libxc's CHECKPOINT and
 * before CHECKPOINT_END (libxl_stream_write.c:
 * libxl__stream_write_start_checkpoint), xenstore data first.
 *
 * The bytes such a record takes for a body of n bytes (0: too long).
 */
size_t xenstream_libxl_emulator_len(size_t n);

/* Write one into out (room for xenstream_libxl_emulator_len(n)); returns
 * the bytes written, 0 if n is too long. */
size_t xenstream_libxl_emulator_record(uint8_t *out, uint32_t type, uint32_t emulator_id,
				       uint32_t index, const void *body, size_t n);

/* What xenstream_libxl_emulator_find() found. */
struct xenstream_emu {
	unsigned checkpoints;		/* complete ones: CHECKPOINT ... CHECKPOINT_END */
	/* in the latest complete checkpoint: */
	unsigned contexts;		/* its EMULATOR_CONTEXT records */
	size_t ctx_off;			/* the last one's body, after the sub-header */
	uint32_t ctx_len;
	uint32_t ctx_id, ctx_index;	/* its emulator id and index */
	unsigned xs_records;		/* its EMULATOR_XENSTORE_DATA records */
	size_t xs_off;			/* the last one's pairs */
	uint32_t xs_len;
};

/*
 * Walk s[0..len), which begins at a libxc record of a checkpointed stream
 * (a checkpoint as the backup receives it, or several): libxc's records
 * up to its CHECKPOINT, then libxl's up to CHECKPOINT_END, and again.
 * Fills e with the emulator records of the latest complete checkpoint,
 * the one libxl's restore would keep (a checkpoint cut short is ignored,
 * as libxl drops records it buffered without their CHECKPOINT_END).
 * Returns the number of complete checkpoints, or -EBADMSG: a length over
 * XS_REC_LENGTH_MAX, an emulator record shorter than its sub-header, a
 * CHECKPOINT_END with a body, or a record libxl's restore does not know
 * among libxl's (libxl_stream_read.c:process_record refuses those).
 */
int xenstream_libxl_emulator_find(const uint8_t *s, size_t len, struct xenstream_emu *e);

/*
 * The last record of `type` in one checkpoint's libxc records s[0..len)
 * (up to its CHECKPOINT): 0 with its body's offset and length, -ENOENT,
 * or -EBADMSG.
 */
int xenstream_find_record(const uint8_t *s, size_t len, uint32_t type, size_t *body,
			  uint32_t *body_len);

/*
 * SHA-256 over the CPU records of an HVM context blob (xc_domain_hvm_getcontext's
 * format, also the HVM_CONTEXT record's body), each with its guest TSC
 * (at tsc_off in struct hvm_hw_cpu) zeroed: the registers as the guest
 * will resume with them.  Returns the number of vCPUs, -ENOENT, -ENOMEM.
 */
int xenstream_vcpu_hash(const uint8_t *ctx, size_t len, size_t tsc_off, uint8_t out[32]);

/*
 * The checkpoint oracle's negative control: in one checkpoint's records,
 * mark the first page that carries data in the first PAGE_DATA record as
 * not present (XTAB) and cut its 4 KiB out, so the restore leaves that pfn
 * as it was.  0 with *pfn and *len updated, -ENOENT (no page), -EBADMSG.
 */
int xenstream_drop_page(uint8_t *s, size_t *len, uint64_t *pfn);

/*
 * The negative control tandem uses on Xen: in the first page that carries
 * data in the first PAGE_DATA record, invert the byte at offset
 * XENSTREAM_ALTER_AT, so the standby's copy of that pfn differs from the
 * guest's whether or not the page changed since it was last shipped (a
 * dropped page that had not changed would leave the standby right).
 * 0 with *pfn, -ENOENT (no page), -EBADMSG.
 */
#define XENSTREAM_ALTER_AT 2048u
int xenstream_alter_page(uint8_t *s, size_t len, uint64_t *pfn);

/*
 * The checkpoint oracle's choice among n consecutive pfns of a guest: err[i]
 * is the map error of pfns[i] (nonzero: not populated, not compared, and
 * not asked its type), types[] the XEN_DOMCTL_PFINFO type of each pfn that
 * mapped, in order (the type query costs Xen a p2m walk per pfn, so only
 * those are asked; NULL: not known, keep them).  A pfn typed BROKEN, XALLOC
 * or XTAB is a frame libxc's stream carries no data for (Xen reports its
 * own frames in the physmap, shared info and grant table, as XTAB): left
 * out and counted in *xen_owned; so is a pfn in skip[] (pages libxc's
 * restore rewrites).  The rest go to out[] (room for n); returns how many.
 */
uint32_t xenstream_oracle_pick(const uint64_t *pfns, const int *err, uint32_t n,
			       const uint64_t *types, const uint64_t *skip, size_t nskip,
			       uint64_t *out, uint64_t *xen_owned);

/*
 * A record that libxc's restore buffers and later skips (an empty
 * HVM_PARAMS record, which libxc tolerates): written after a checkpoint,
 * once the restore has read it, the checkpoint before it is applied.
 */
#define XENSTREAM_BARRIER_LEN 16
size_t xenstream_barrier(uint8_t out[16]);

#endif
