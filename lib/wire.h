/*
 * wire.h - the replication stream's records (docs/protocol.md is the spec).
 *
 * A stream starts with a 16-byte header (magic, version).  Then come
 * records: {u32 type; u32 length} in network byte order, a payload of
 * `length` bytes, zero padding to a multiple of 8.  After the handshake
 * every record travels inside an authenticated frame (lib/channel.h).
 * Nothing here casts a struct onto the wire: payloads are built and read
 * field by field with the put/get helpers below.
 */
#ifndef TANDEM_WIRE_H
#define TANDEM_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define WIRE_MAGIC "TANDEM\r\n"
#define WIRE_MAGIC_LEN 8
#define WIRE_VERSION 1
#define WIRE_STREAM_HDR_LEN 16		/* magic[8] version u32 flags u32 */
#define WIRE_REC_HDR_LEN 8		/* type u32 length u32 */

#define WIRE_PAGE_SIZE 4096u
#define WIRE_MAX_PAGES_PER_REC 256u
#define WIRE_NAME_MAX 64u
#define WIRE_NONCE_LEN 32u
#define WIRE_DIGEST_LEN 32u
#define WIRE_MAC_LEN 32u
#define WIRE_MSG_MAX 256u
/* ERROR codes: 1 role, 2 VM name, 3 config digest, 4 authentication (handshake),
 * 5 the standby cannot apply the stream (after it), 6 the backup is active. */
#define ERR_STANDBY 5u
/* 6: the backup is active (it runs the guest); the primary must step down. */
#define ERR_ACTIVE 6u
/* 7: the primary's copy is stale (its protection generation is older than
 * the backup's); it must not run. */
#define ERR_STALE 7u
#define WIRE_STATE_MAX (1u << 20)
#define WIRE_BLOB_MAX (4u << 20)
/* The largest payload of any record: a CKPT_BLOB. */
#define WIRE_MAX_PAYLOAD (16u + WIRE_BLOB_MAX)

enum wire_type {
	REC_HELLO = 0x0001,
	REC_AUTH = 0x0002,
	REC_ERROR = 0x0003,
	REC_CKPT_BEGIN = 0x0010,
	REC_CKPT_PAGES = 0x0011,
	REC_CKPT_STATE = 0x0012,
	REC_CKPT_BLOB = 0x0013,
	REC_CKPT_END = 0x0014,
	REC_CKPT_VERIFY = 0x0015,	/* the checkpoint oracle's hashes (domain/verify.h) */
	REC_CKPT_DEVICES = 0x0016,	/* every device's verdict on the checkpoint (device/device.h) */
	REC_ACK = 0x0020,
	REC_HELD = 0x0021,		/* backup: a checkpoint is complete but held for a device */
	REC_HEARTBEAT = 0x0030,
	REC_FAILOVER = 0x0040,
	REC_FENCE = 0x0041,
	REC_STOP = 0x0042,
	REC_SET = 0x0043,		/* `tandem set`: a key both sides agree on changed */
	REC_GENERATION = 0x0044,	/* the protection generation, right after the handshake */
	REC_PROBE = 0x0060,		/* `tandem probe`'s link measurement (probe session only) */
	REC_LZ4 = 0x0050,		/* a CKPT_PAGES or CKPT_BLOB, LZ4-compressed */
};

enum wire_role { ROLE_PRIMARY = 1, ROLE_BACKUP = 2 };

/* Fixed payload sizes (bytes), checked against the field lists below. */
#define HELLO_FIXED_LEN (4 + 4 + 8 + WIRE_NONCE_LEN + WIRE_DIGEST_LEN + 4 + 4)
#define AUTH_LEN WIRE_MAC_LEN
#define ERROR_FIXED_LEN 8
#define HELD_FIXED_LEN 16		/* epoch u64, message length u32, reserved u32 */
#define CKPT_BEGIN_LEN 32
#define CKPT_PAGES_FIXED_LEN 16
#define CKPT_STATE_FIXED_LEN 16
#define CKPT_BLOB_FIXED_LEN 16
#define CKPT_END_LEN (24 + WIRE_DIGEST_LEN)
#define CKPT_VERIFY_FIXED_LEN 48		/* epoch u64, count u32, flags u32, vcpu[32] */
#define WIRE_VERIFY_MAX_PAGES 65536u
#define CKPT_DEVICES_FIXED_LEN 32		/* epoch u64, count u32, flags u32, session[16] */
#define WIRE_DEVICES_MAX 8u
#define WIRE_SESSION_LEN 16
#define ACK_LEN 16
#define HEARTBEAT_LEN 24
#define FAILOVER_LEN 16
#define FENCE_LEN 16
#define STOP_LEN 8
#define SET_LEN 16			/* key u32, reserved u32, value u64 */
#define SET_KEY_INTERVAL 1u		/* value: milliseconds, 10 to 10000 */
#define PROBE_FIXED_LEN 16		/* seq u64, flags u32, reserved u32 */
#define PROBE_MAX_DATA (1u << 20)
#define PROBE_F_ECHO 1u			/* answer at once with the same seq, no data */
#define PROBE_F_DONE 2u			/* the last one: answer with PROBE_F_RESULT */
#define PROBE_F_RESULT 4u		/* data: u64 bytes received, u64 first-to-last us */
#define LZ4_FIXED_LEN 8			/* inner type u32, inner length u32 */
#define GENERATION_LEN 24		/* generation u64, checkpoint u64, flags u32, reserved u32 */
#define GEN_F_ACTIVE 1u			/* the sender runs the guest (activated from checkpoint) */

_Static_assert(HELLO_FIXED_LEN == 88, "hello layout");
_Static_assert(HELLO_FIXED_LEN % 8 == 0, "hello fixed part is 8-aligned");
_Static_assert(CKPT_END_LEN == 56, "ckpt_end layout");
_Static_assert(CKPT_VERIFY_FIXED_LEN + WIRE_VERIFY_MAX_PAGES * 16ull <= WIRE_MAX_PAYLOAD,
	       "a full verify record fits the payload cap");
_Static_assert(CKPT_PAGES_FIXED_LEN + WIRE_MAX_PAGES_PER_REC * (8 + WIRE_PAGE_SIZE) <= WIRE_MAX_PAYLOAD,
	       "a full pages record fits the payload cap");
_Static_assert(WIRE_STREAM_HDR_LEN % 8 == 0 && WIRE_REC_HDR_LEN % 8 == 0, "headers 8-aligned");

/* ---- decoded records ---------------------------------------------------- */

struct wire_hello {
	uint32_t version, role;
	uint64_t caps;
	uint8_t nonce[WIRE_NONCE_LEN];
	uint8_t digest[WIRE_DIGEST_LEN];
	char name[WIRE_NAME_MAX + 1];
};

struct wire_error {
	uint32_t code;
	char msg[WIRE_MSG_MAX + 1];
};

struct wire_held {
	uint64_t epoch;
	char msg[WIRE_MSG_MAX + 1];
};

struct wire_ckpt_begin {
	uint64_t epoch, npages, guest_pages, flags;
};

/* Points into the record buffer; valid until the next receive. */
struct wire_ckpt_pages {
	uint64_t epoch;
	uint32_t count;
	const uint8_t *pfns;		/* count big-endian u64 */
	const uint8_t *data;		/* count * 4096 bytes */
};

struct wire_ckpt_state {		/* also used for CKPT_BLOB */
	uint64_t epoch;
	uint32_t kind, len;
	const uint8_t *data;
};

struct wire_ckpt_end {
	uint64_t epoch, npages, nrecords;
	uint8_t digest[WIRE_DIGEST_LEN];
};

/* CKPT_DEVICES: the verdicts (DEV_V_* of device/device.h) in table order. */
struct wire_ckpt_devices {
	uint64_t epoch;
	uint32_t n;
	uint8_t session[WIRE_SESSION_LEN];
	uint32_t verdict[WIRE_DEVICES_MAX];
};

struct wire_ack { uint64_t epoch, commit_us; };
struct wire_heartbeat { uint64_t seq, time_ns, epoch; };
struct wire_failover { uint32_t reason; uint64_t epoch; };
/* FAILOVER reasons: 1 primary to backup, a planned switchover: activate from
 * checkpoint `epoch` (the last, acknowledged; the primary's guest stays
 * paused); 2 backup to primary: the guest runs here from `epoch`. */
#define FAILOVER_SWITCHOVER 1u
#define FAILOVER_SWITCHED 2u
#define FAILOVER_SWITCH_FAILED 3u
struct wire_stop { uint32_t reason; };
struct wire_generation { uint64_t gen, checkpoint; uint32_t flags; };
/* STOP reasons: 1 the primary stops protection (the backup discards its
 * standby); 2 the backup stops (it discarded its standby). */
#define STOP_PRIMARY_STOPS 1u
#define STOP_BACKUP_LEAVES 2u

enum ckpt_flags { CKPT_F_INITIAL = 1 };
enum state_kind { STATE_VCPU = 1, STATE_DEVICE = 2 };

/* ---- byte order helpers -------------------------------------------------- */

static inline void put_be32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

static inline void put_be64(uint8_t *p, uint64_t v)
{
	put_be32(p, (uint32_t)(v >> 32));
	put_be32(p + 4, (uint32_t)v);
}

static inline uint32_t get_be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t get_be64(const uint8_t *p)
{
	return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

/* ---- API ---------------------------------------------------------------- */

const char *wire_type_name(uint32_t type);

/* Write the 16-byte stream header. */
void wire_stream_header(uint8_t out[WIRE_STREAM_HDR_LEN]);

/*
 * Check a received stream header.  Returns 0; -EPROTO when the magic is
 * wrong (not a tandem peer); -EPROTONOSUPPORT when the version differs
 * (*version receives the peer's).
 */
int wire_check_stream_header(const uint8_t in[WIRE_STREAM_HDR_LEN], uint32_t *version);

/*
 * Check a record header before anything is allocated for it: a known type,
 * and a length inside that type's bounds.  Returns 0 or -EBADMSG with a
 * reason in *why.
 */
int wire_check_header(uint32_t type, uint32_t length, const char **why);

/*
 * Validate a complete payload of `len` bytes followed by its padding
 * (`padded` = ALIGN8(len) bytes readable at p): the per-type validator.
 * Returns 0 or -EBADMSG with a reason in *why.
 */
int wire_validate(uint32_t type, const uint8_t *p, uint32_t len, const char **why);

/* Encoders: write the payload into out (at least the fixed length plus
 * variable part, zero-padded to 8) and return the payload length. */
uint32_t wire_put_hello(uint8_t *out, const struct wire_hello *h);
uint32_t wire_put_error(uint8_t *out, uint32_t code, const char *msg);
uint32_t wire_put_held(uint8_t *out, uint64_t epoch, const char *msg);
uint32_t wire_put_ckpt_begin(uint8_t *out, const struct wire_ckpt_begin *b);
uint32_t wire_put_ckpt_end(uint8_t *out, const struct wire_ckpt_end *e);
uint32_t wire_put_ckpt_devices(uint8_t *out, const struct wire_ckpt_devices *d);
uint32_t wire_put_ack(uint8_t *out, const struct wire_ack *a);
uint32_t wire_put_heartbeat(uint8_t *out, const struct wire_heartbeat *h);
uint32_t wire_put_failover(uint8_t *out, const struct wire_failover *f);
uint32_t wire_put_stop(uint8_t *out, const struct wire_stop *s);
uint32_t wire_put_generation(uint8_t *out, const struct wire_generation *g);
/* Fixed 16-byte prefix of CKPT_PAGES/STATE/BLOB; the caller appends the rest. */
void wire_put_pages_prefix(uint8_t out[16], uint64_t epoch, uint32_t count);
void wire_put_state_prefix(uint8_t out[16], uint64_t epoch, uint32_t kind, uint32_t len);

/*
 * LZ4 records.  wrap: compress the record (type, the n bytes at in) into
 * out (LZ4_FIXED_LEN + LZ4_compressBound(n) bytes); returns the LZ4
 * record's payload length, or 0 when compressing would not make it
 * smaller (send the record as it is).  unwrap: decompress a validated LZ4
 * payload into out (outcap >= ALIGN8 of the inner length, zero-padded
 * here) and validate the inner record; 0 with *type and *len set, or
 * -EBADMSG with a reason in *why.
 */
uint32_t wire_lz4_wrap(uint32_t type, const uint8_t *in, uint32_t n, uint8_t *out, size_t outcap);
int wire_lz4_unwrap(const uint8_t *p, uint32_t len, uint8_t *out, size_t outcap,
		    uint32_t *type, uint32_t *ilen, const char **why);

/* Decoders: only call on a payload that passed wire_validate(). */
void wire_get_hello(const uint8_t *p, struct wire_hello *h);
void wire_get_error(const uint8_t *p, struct wire_error *e);
void wire_get_held(const uint8_t *p, struct wire_held *h);
void wire_get_ckpt_begin(const uint8_t *p, struct wire_ckpt_begin *b);
void wire_get_ckpt_pages(const uint8_t *p, struct wire_ckpt_pages *pg);
void wire_get_ckpt_state(const uint8_t *p, struct wire_ckpt_state *s);
void wire_get_ckpt_end(const uint8_t *p, struct wire_ckpt_end *e);
void wire_get_ckpt_devices(const uint8_t *p, struct wire_ckpt_devices *d);
void wire_get_ack(const uint8_t *p, struct wire_ack *a);
void wire_get_heartbeat(const uint8_t *p, struct wire_heartbeat *h);
void wire_get_failover(const uint8_t *p, struct wire_failover *f);
void wire_get_stop(const uint8_t *p, struct wire_stop *s);
void wire_get_generation(const uint8_t *p, struct wire_generation *g);

#endif
