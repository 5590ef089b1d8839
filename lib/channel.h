/*
 * channel.h - the authenticated replication channel over a stream socket.
 *
 * Handshake (docs/protocol.md, "Handshake"): each side sends its stream
 * header and HELLO (fresh 32-byte nonce, VM name, config digest), checks the
 * peer's, then proves knowledge of the shared key with an HMAC over the
 * transcript.  Both nonces are in the transcript, so a recorded session
 * cannot be replayed.  Per-direction session keys are derived from the key
 * and the transcript.
 *
 * Frames after the handshake: {type, length, seq} header, payload, zero
 * padding to 8, 16-byte AES-256-GCM tag.  The sequence number must be the
 * next expected one; the header is always authenticated, the payload is
 * encrypted when `encrypt` is set and authenticated otherwise (GMAC).  Any
 * failure is fatal for the connection: the caller closes it.
 *
 * Blocking I/O; the caller sets socket timeouts.  channel_send* may be
 * called from several threads (a lock serialises them); channel_recv from
 * one thread at a time.
 */
#ifndef TANDEM_CHANNEL_H
#define TANDEM_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "key.h"
#include "wire.h"

#define CHANNEL_FRAME_HDR_LEN 16
#define CHANNEL_TAG_LEN 16

#define CAP_ENCRYPT 1ull
#define CAP_LZ4 2ull			/* reads LZ4 records (every peer since they exist) */
#define CAP_PROBE 4ull			/* a primary's HELLO: `tandem probe` measuring the link */
#define CAP_GENERATION 8ull		/* exchanges GENERATION records right after the handshake */
#define CAP_LOOKUP 16ull		/* a primary's HELLO: an active host looking for its
					 * backup before it re-protects (never a session) */
#define CAP_HELD 32ull			/* a primary reads HELD records (the backup says why it holds) */

struct channel;

struct channel_params {
	uint32_t role;			/* ROLE_PRIMARY or ROLE_BACKUP */
	const char *vm;
	uint8_t digest[WIRE_DIGEST_LEN];
	uint64_t caps;
	uint8_t key[KEY_LEN];
	bool encrypt;
	bool compress;			/* send CKPT_PAGES/BLOB as LZ4 records when smaller */
	/* This side's protection generation (lib/generation.h), read at the
	 * handshake; NULL: no CAP_GENERATION, nothing exchanged. */
	void (*generation)(void *arg, struct wire_generation *out);
	void *generation_arg;
};

struct channel_rec {
	uint32_t type;
	uint32_t len;
	uint8_t *payload;		/* owned by the channel; valid until the next recv */
};

/*
 * Run the handshake on a connected socket.  On success *out owns fd.
 * On failure returns a negative errno, writes the reason into err, sends
 * the peer an ERROR record where that helps it explain, and leaves fd open
 * for the caller to close.
 *   -EPROTO            not a tandem peer, or a malformed handshake
 *   -EPROTONOSUPPORT   protocol version differs
 *   -ESRCH             VM name differs (or both sides have the same role)
 *   -EKEYREJECTED      config digest differs
 *   -EACCES            the peer failed authentication (wrong key, forged)
 *   -EPIPE             the peer closed during the handshake
 *   -EAGAIN            timed out (socket timeout)
 * With p->generation set and CAP_GENERATION in both hellos, each side then
 * sends its GENERATION as the first frame and reads the peer's
 * (channel_peer_generation); deciding what it means is the caller's.
 */
int channel_handshake(int fd, const struct channel_params *p, struct channel **out,
		      char *err, size_t errlen);

/* Close the socket and free the channel.  NULL is a no-op. */
void channel_free(struct channel *c);

int channel_fd(const struct channel *c);

/* Longest wait for the rest of a frame that has started to arrive
 * (default 10 s); past it channel_recv returns -ETIMEDOUT. */
void channel_set_stall_timeout(struct channel *c, uint64_t ms);
/* A send blocked past the socket's send timeout goes on while alive(arg)
 * returns true (the peer is heard from, it only reads slowly). */
void channel_set_peer_alive(struct channel *c, bool (*alive)(void *), void *arg);

/* The peer's hello. */
const struct wire_hello *channel_peer(const struct channel *c);

/* The peer's GENERATION (false: none was exchanged: the peer or this side
 * lacks CAP_GENERATION). */
bool channel_peer_generation(const struct channel *c, struct wire_generation *out);

/* Send one record whose payload is the concatenation of iov.  0 or -errno. */
int channel_sendv(struct channel *c, uint32_t type, const struct iovec *iov, int iovcnt);
int channel_send(struct channel *c, uint32_t type, const void *payload, uint32_t len);

/*
 * Receive and validate the next record.  Returns 0; -EPIPE when the peer
 * closed between frames; -EBADMSG for a forged, altered, replayed,
 * reordered or malformed frame (reason in channel_error()); -EAGAIN when
 * the socket's receive timeout passed with no frame started; -ETIMEDOUT
 * when a started frame stalled; other -errno.
 */
int channel_recv(struct channel *c, struct channel_rec *rec);

const char *channel_error(const struct channel *c);

/* Bytes sent and received on the wire, frames included. */
uint64_t channel_bytes_sent(const struct channel *c);
/* What channel_bytes_sent would be without compression. */
uint64_t channel_bytes_sent_raw(const struct channel *c);
/* Whether this channel compresses (asked for, and the peer reads LZ4). */
bool channel_compresses(const struct channel *c);
uint64_t channel_bytes_received(const struct channel *c);

/* Shut down the socket (both directions) so a blocked recv returns. */
void channel_shutdown(struct channel *c);

#endif
