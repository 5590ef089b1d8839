/*
 * channel.c - mutual handshake and authenticated framing (see channel.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lz4.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#define LOG_MODULE "channel"
#include "channel.h"
#include "fault.h"
#include "log.h"
#include "util.h"

struct channel {
	int fd;
	bool encrypt;
	struct wire_hello peer;
	EVP_CIPHER_CTX *tx, *rx;
	uint64_t tx_seq, rx_seq;
	uint8_t *tx_buf;		/* ciphertext staging (encrypt mode) */
	uint8_t *rx_buf;
	size_t buf_len;
	pthread_mutex_t tx_lock;
	uint64_t bytes_sent, bytes_received;
	bool compress;
	pthread_mutex_t z_lock;		/* z_in, z_out: the compressing sender */
	uint8_t *z_in, *z_out;		/* gathered record, its LZ4 record */
	size_t z_out_cap;
	uint8_t *z_rx;			/* a received LZ4 record, decompressed */
	uint64_t bytes_sent_raw;
	uint64_t stall_ms;		/* longest wait for the rest of a started frame */
	bool have_peer_gen;
	struct wire_generation peer_gen;
	bool (*peer_alive)(void *);	/* asked when a send times out */
	void *peer_alive_arg;
	char err[256];
};

static const char *role_name(uint32_t role)
{
	return role == ROLE_PRIMARY ? "primary" : role == ROLE_BACKUP ? "backup" : "?";
}

static void hmac_sha256(const uint8_t key[KEY_LEN], const char *label,
			const uint8_t *data, size_t len, uint8_t out[32])
{
	uint8_t msg[128 + 32];
	size_t ll = strlen(label);
	unsigned int olen = 32;

	memcpy(msg, label, ll);
	memcpy(msg + ll, data, len);
	HMAC(EVP_sha256(), key, KEY_LEN, msg, ll + len, out, &olen);
}

/* ---- handshake ----------------------------------------------------------- */

/* Read one plain record (handshake phase) into buf (cap bytes). */
static int read_plain_record(int fd, uint8_t *buf, size_t cap, uint32_t *type,
			     uint32_t *len, const char **why)
{
	int rc;

	if ((rc = read_full(fd, buf, WIRE_REC_HDR_LEN)))
		return rc;
	*type = get_be32(buf);
	*len = get_be32(buf + 4);
	if ((rc = wire_check_header(*type, *len, why)))
		return rc;
	if (WIRE_REC_HDR_LEN + ALIGN8(*len) > cap) {
		*why = "handshake record too large";
		return -EBADMSG;
	}
	if ((rc = read_full(fd, buf + WIRE_REC_HDR_LEN, ALIGN8(*len))))
		return rc;
	return wire_validate(*type, buf + WIRE_REC_HDR_LEN, *len, why);
}

static size_t put_plain_record(uint8_t *out, uint32_t type, uint32_t len)
{
	put_be32(out, type);
	put_be32(out + 4, len);
	return WIRE_REC_HDR_LEN + ALIGN8(len);
}

static void send_error(int fd, uint32_t code, const char *msg)
{
	uint8_t buf[WIRE_REC_HDR_LEN + ERROR_FIXED_LEN + WIRE_MSG_MAX + 8];
	uint32_t len = wire_put_error(buf + WIRE_REC_HDR_LEN, code, msg);

	(void)write_full(fd, buf, put_plain_record(buf, REC_ERROR, len));
}

static int io_error(int rc, const char *stage, char *err, size_t errlen)
{
	if (rc == -EPIPE)
		snprintf(err, errlen, "handshake truncated: the peer closed the connection %s", stage);
	else if (rc == -EAGAIN || rc == -EWOULDBLOCK)
		snprintf(err, errlen, "handshake timed out %s", stage);
	else
		snprintf(err, errlen, "handshake failed %s: %s", stage, strerror(-rc));
	return rc == -EWOULDBLOCK ? -EAGAIN : rc;
}

int channel_handshake(int fd, const struct channel_params *p, struct channel **out,
		      char *err, size_t errlen)
{
	enum { HBUF = WIRE_STREAM_HDR_LEN + WIRE_REC_HDR_LEN + HELLO_FIXED_LEN + WIRE_NAME_MAX + 8 };
	uint8_t mine[HBUF], theirs[HBUF], th[32], proof[32], expect[32];
	uint8_t kp2b[32], kb2p[32], rec[WIRE_REC_HDR_LEN + ERROR_FIXED_LEN + WIRE_MSG_MAX + 8];
	size_t mine_len, theirs_len;
	struct wire_hello hello = { 0 }, peer;
	struct channel *c = NULL;
	uint32_t type, len, version;
	const char *why = NULL;
	char a[17], b[17];
	EVP_MD_CTX *md;
	unsigned int olen;
	int rc;

	*out = NULL;
	hello.version = WIRE_VERSION;
	hello.role = p->role;
	hello.caps = p->caps | CAP_LZ4 | (p->encrypt ? CAP_ENCRYPT : 0) |
		     (p->generation ? CAP_GENERATION : 0);
	if (RAND_bytes(hello.nonce, sizeof(hello.nonce)) != 1) {
		snprintf(err, errlen, "handshake: no random bytes for the nonce");
		return -EIO;
	}
	memcpy(hello.digest, p->digest, WIRE_DIGEST_LEN);
	snprintf(hello.name, sizeof(hello.name), "%s", p->vm);

	/* 1. Both sides send their stream header and hello at once. */
	wire_stream_header(mine);
	len = wire_put_hello(mine + WIRE_STREAM_HDR_LEN + WIRE_REC_HDR_LEN, &hello);
	mine_len = WIRE_STREAM_HDR_LEN + put_plain_record(mine + WIRE_STREAM_HDR_LEN, REC_HELLO, len);
	if ((rc = write_full(fd, mine, mine_len)))
		return io_error(rc, "while sending the hello", err, errlen);

	/* 2. Read and check the peer's. */
	if ((rc = read_full(fd, theirs, WIRE_STREAM_HDR_LEN)))
		return io_error(rc, "before its stream header", err, errlen);
	rc = wire_check_stream_header(theirs, &version);
	if (rc == -EPROTONOSUPPORT) {
		snprintf(err, errlen, "peer speaks protocol version %u, this side speaks %u: "
			 "run the same tandem version on both hosts", version, WIRE_VERSION);
		return rc;
	}
	if (rc) {
		snprintf(err, errlen, "peer is not a tandem daemon (bad stream header)");
		return -EPROTO;
	}
	rc = read_plain_record(fd, theirs + WIRE_STREAM_HDR_LEN, sizeof(theirs) - WIRE_STREAM_HDR_LEN,
			       &type, &len, &why);
	if (rc == -EBADMSG || (!rc && type != REC_HELLO)) {
		snprintf(err, errlen, "malformed handshake from peer: %s",
			 rc ? why : "expected a hello record");
		return -EPROTO;
	}
	if (rc)
		return io_error(rc, "before its hello", err, errlen);
	theirs_len = WIRE_STREAM_HDR_LEN + WIRE_REC_HDR_LEN + ALIGN8(len);
	wire_get_hello(theirs + WIRE_STREAM_HDR_LEN + WIRE_REC_HDR_LEN, &peer);

	if (peer.role == p->role) {
		snprintf(err, errlen, "peer is also a %s: one host must run `tandem primary`, "
			 "the other `tandem backup`", role_name(p->role));
		send_error(fd, 1, err);
		return -ESRCH;
	}
	if (strcmp(peer.name, p->vm) != 0) {
		snprintf(err, errlen, "peer protects VM '%s', this side protects '%s': wrong peer",
			 peer.name, p->vm);
		send_error(fd, 2, err);
		return -ESRCH;
	}
	if (memcmp(peer.digest, p->digest, WIRE_DIGEST_LEN) != 0) {
		hex_encode(peer.digest, 8, a);
		hex_encode(p->digest, 8, b);
		snprintf(err, errlen, "configuration of VM '%s' differs from the peer's "
			 "(digest %s here, %s there): the keys marked 'both' in "
			 "docs/configuration.md must be equal on both hosts", p->vm, b, a);
		send_error(fd, 3, err);
		return -EKEYREJECTED;
	}

	/* 3. Transcript hash, primary's half first, then proofs. */
	md = EVP_MD_CTX_new();
	EVP_DigestInit_ex(md, EVP_sha256(), NULL);
	if (p->role == ROLE_PRIMARY) {
		EVP_DigestUpdate(md, mine, mine_len);
		EVP_DigestUpdate(md, theirs, theirs_len);
	} else {
		EVP_DigestUpdate(md, theirs, theirs_len);
		EVP_DigestUpdate(md, mine, mine_len);
	}
	EVP_DigestFinal_ex(md, th, &olen);
	EVP_MD_CTX_free(md);

	hmac_sha256(p->key, p->role == ROLE_PRIMARY ? "tandem-v1 proof primary" :
		    "tandem-v1 proof backup", th, sizeof(th), proof);
	hmac_sha256(p->key, p->role == ROLE_PRIMARY ? "tandem-v1 proof backup" :
		    "tandem-v1 proof primary", th, sizeof(th), expect);
	memcpy(rec + WIRE_REC_HDR_LEN, proof, AUTH_LEN);
	if ((rc = write_full(fd, rec, put_plain_record(rec, REC_AUTH, AUTH_LEN))))
		return io_error(rc, "while sending its proof", err, errlen);
	rc = read_plain_record(fd, rec, sizeof(rec), &type, &len, &why);
	if (rc == -EBADMSG || (!rc && type != REC_AUTH && type != REC_ERROR)) {
		snprintf(err, errlen, "malformed handshake from peer: %s",
			 rc ? why : "expected an auth record");
		return -EPROTO;
	}
	if (rc)
		return io_error(rc, "before proving it holds the key (wrong key on the peer?)",
				err, errlen);
	if (type == REC_ERROR) {
		struct wire_error e;
		wire_get_error(rec + WIRE_REC_HDR_LEN, &e);
		snprintf(err, errlen, "peer refused the handshake: %s", e.msg);
		return -EACCES;
	}
	if (CRYPTO_memcmp(rec + WIRE_REC_HDR_LEN, expect, AUTH_LEN) != 0) {
		snprintf(err, errlen, "peer failed authentication: it does not hold this "
			 "side's key (wrong key file, or not the real peer)");
		send_error(fd, 4, "authentication failed: the keys differ");
		return -EACCES;
	}

	/* 4. Session keys, one per direction. */
	hmac_sha256(p->key, "tandem-v1 key primary->backup", th, sizeof(th), kp2b);
	hmac_sha256(p->key, "tandem-v1 key backup->primary", th, sizeof(th), kb2p);

	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = fd;
	c->encrypt = p->encrypt;
	c->peer = peer;
	c->buf_len = CHANNEL_FRAME_HDR_LEN + ALIGN8(WIRE_MAX_PAYLOAD) + CHANNEL_TAG_LEN;
	c->rx_buf = malloc(c->buf_len);
	c->tx_buf = c->encrypt ? malloc(c->buf_len) : NULL;
	c->tx = EVP_CIPHER_CTX_new();
	c->rx = EVP_CIPHER_CTX_new();
	pthread_mutex_init(&c->tx_lock, NULL);
	pthread_mutex_init(&c->z_lock, NULL);
	if (!c->rx_buf || (c->encrypt && !c->tx_buf) || !c->tx || !c->rx ||
	    !EVP_EncryptInit_ex(c->tx, EVP_aes_256_gcm(), NULL,
				p->role == ROLE_PRIMARY ? kp2b : kb2p, NULL) ||
	    !EVP_DecryptInit_ex(c->rx, EVP_aes_256_gcm(), NULL,
				p->role == ROLE_PRIMARY ? kb2p : kp2b, NULL)) {
		snprintf(err, errlen, "handshake: out of memory or cipher unavailable");
		c->fd = -1;
		channel_free(c);
		return -ENOMEM;
	}
	OPENSSL_cleanse(kp2b, sizeof(kp2b));
	OPENSSL_cleanse(kb2p, sizeof(kb2p));
	c->stall_ms = 10000;
	c->compress = p->compress && (peer.caps & CAP_LZ4);
	if (p->compress && !c->compress)
		log_warn("the peer does not read compressed records: sending uncompressed");
	c->bytes_sent = mine_len + WIRE_REC_HDR_LEN + AUTH_LEN;
	c->bytes_sent_raw = c->bytes_sent;
	c->bytes_received = theirs_len + WIRE_REC_HDR_LEN + AUTH_LEN;

	/* 5. Both know the generation: each sends its own, reads the peer's. */
	if (p->generation && (peer.caps & CAP_GENERATION)) {
		uint8_t gbuf[GENERATION_LEN];
		struct wire_generation mine_gen = { 0 };
		struct channel_rec grec;

		p->generation(p->generation_arg, &mine_gen);
		wire_put_generation(gbuf, &mine_gen);
		if ((rc = channel_send(c, REC_GENERATION, gbuf, GENERATION_LEN)) ||
		    (rc = channel_recv(c, &grec))) {
			rc = io_error(rc == -EBADMSG ? -EPROTO : rc, "while exchanging the generation",
				      err, errlen);
			c->fd = -1;
			channel_free(c);
			return rc;
		}
		if (grec.type == REC_ERROR) {
			struct wire_error e;

			wire_get_error(grec.payload, &e);
			snprintf(err, errlen, "peer refused the handshake: %s", e.msg);
			c->fd = -1;
			channel_free(c);
			return -EACCES;
		}
		if (grec.type != REC_GENERATION) {
			snprintf(err, errlen, "malformed handshake from peer: expected its generation, "
				 "got a %s record", wire_type_name(grec.type));
			c->fd = -1;
			channel_free(c);
			return -EPROTO;
		}
		wire_get_generation(grec.payload, &c->peer_gen);
		c->have_peer_gen = true;
	}
	*out = c;
	return 0;
}

bool channel_peer_generation(const struct channel *c, struct wire_generation *out)
{
	if (c->have_peer_gen)
		*out = c->peer_gen;
	return c->have_peer_gen;
}

void channel_free(struct channel *c)
{
	if (!c)
		return;
	if (c->fd >= 0)
		close(c->fd);
	EVP_CIPHER_CTX_free(c->tx);
	EVP_CIPHER_CTX_free(c->rx);
	free(c->tx_buf);
	free(c->rx_buf);
	free(c->z_in);
	free(c->z_out);
	free(c->z_rx);
	pthread_mutex_destroy(&c->tx_lock);
	pthread_mutex_destroy(&c->z_lock);
	free(c);
}

int channel_fd(const struct channel *c) { return c->fd; }
void channel_set_stall_timeout(struct channel *c, uint64_t ms) { c->stall_ms = ms; }

void channel_set_peer_alive(struct channel *c, bool (*alive)(void *), void *arg)
{
	c->peer_alive = alive;
	c->peer_alive_arg = arg;
}
const struct wire_hello *channel_peer(const struct channel *c) { return &c->peer; }
const char *channel_error(const struct channel *c) { return c->err; }
uint64_t channel_bytes_sent(const struct channel *c) { return c->bytes_sent; }
uint64_t channel_bytes_received(const struct channel *c) { return c->bytes_received; }
uint64_t channel_bytes_sent_raw(const struct channel *c) { return c->bytes_sent_raw; }
bool channel_compresses(const struct channel *c) { return c->compress; }

void channel_shutdown(struct channel *c)
{
	if (c && c->fd >= 0)
		shutdown(c->fd, SHUT_RDWR);
}

/* ---- frames -------------------------------------------------------------- */

static void seq_iv(uint64_t seq, uint8_t iv[12])
{
	memset(iv, 0, 4);
	put_be64(iv + 4, seq);
}

/*
 * writev() the whole vector, advancing through partial writes.  A send that
 * times out (SO_SNDTIMEO) is a dead peer unless peer_alive() says the peer is
 * still heard from: then it is only slow to read (a standby applying a large
 * round), and the send goes on.
 */
static int writev_full(struct channel *c, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t r = writev(c->fd, iov, MIN(n, 1024));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			if ((errno == EAGAIN || errno == EWOULDBLOCK) && c->peer_alive &&
			    c->peer_alive(c->peer_alive_arg))
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)r >= iov->iov_len) {
			r -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + r;
			iov->iov_len -= (size_t)r;
		}
	}
	return 0;
}

/* One frame; raw_len: the record's length before compression (0: len). */
static int send_frame(struct channel *c, uint32_t type, const struct iovec *iov, int iovcnt,
		      size_t raw_len)
{
	static const uint8_t zeros[8];
	uint8_t hdr[CHANNEL_FRAME_HDR_LEN], tag[CHANNEL_TAG_LEN], iv[12];
	struct iovec out[WIRE_MAX_PAGES_PER_REC * 2 + 8];
	size_t len = 0, padlen;
	int n = 0, outl, rc = 0;
	const char *why;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (wire_check_header(type, (uint32_t)len, &why) || len > WIRE_MAX_PAYLOAD ||
	    iovcnt > (int)ARRAY_SIZE(out) - 3) {
		log_error("refusing to send an invalid %s record of %zu bytes", wire_type_name(type), len);
		return -EINVAL;
	}
	padlen = ALIGN8(len) - len;

	pthread_mutex_lock(&c->tx_lock);
	put_be32(hdr, type);
	put_be32(hdr + 4, (uint32_t)len);
	put_be64(hdr + 8, c->tx_seq);
	seq_iv(c->tx_seq, iv);
	if (!EVP_EncryptInit_ex(c->tx, NULL, NULL, NULL, iv) ||
	    !EVP_EncryptUpdate(c->tx, NULL, &outl, hdr, sizeof(hdr))) {
		rc = -EIO;
		goto out;
	}
	out[n++] = (struct iovec){ hdr, sizeof(hdr) };
	if (c->encrypt) {
		uint8_t *p = c->tx_buf;
		for (int i = 0; i < iovcnt; i++) {
			if (!EVP_EncryptUpdate(c->tx, p, &outl, iov[i].iov_base, (int)iov[i].iov_len)) {
				rc = -EIO;
				goto out;
			}
			p += outl;
		}
		if (padlen && !EVP_EncryptUpdate(c->tx, p, &outl, zeros, (int)padlen)) {
			rc = -EIO;
			goto out;
		}
		p += padlen ? outl : 0;
		if (!EVP_EncryptFinal_ex(c->tx, p, &outl)) {
			rc = -EIO;
			goto out;
		}
		out[n++] = (struct iovec){ c->tx_buf, len + padlen };
	} else {
		for (int i = 0; i < iovcnt; i++) {
			if (iov[i].iov_len && !EVP_EncryptUpdate(c->tx, NULL, &outl, iov[i].iov_base,
								 (int)iov[i].iov_len)) {
				rc = -EIO;
				goto out;
			}
			if (iov[i].iov_len)
				out[n++] = iov[i];
		}
		if (padlen) {
			EVP_EncryptUpdate(c->tx, NULL, &outl, zeros, (int)padlen);
			out[n++] = (struct iovec){ (void *)zeros, padlen };
		}
		if (!EVP_EncryptFinal_ex(c->tx, NULL, &outl)) {
			rc = -EIO;
			goto out;
		}
	}
	EVP_CIPHER_CTX_ctrl(c->tx, EVP_CTRL_GCM_GET_TAG, CHANNEL_TAG_LEN, tag);
	out[n++] = (struct iovec){ tag, sizeof(tag) };
	c->tx_seq++;
	if (fault_hit("duplicate-frame")) {
		/* Fault point: send this frame twice; the peer must reject the copy. */
		struct iovec copy[ARRAY_SIZE(out)];
		memcpy(copy, out, sizeof(copy[0]) * (size_t)n);
		log_warn("fault point 'duplicate-frame' fired: sending a %s frame twice",
			 wire_type_name(type));
		rc = writev_full(c, copy, n);
		if (rc)
			goto out;
	}
	rc = writev_full(c, out, n);
	if (!rc) {
		c->bytes_sent += sizeof(hdr) + len + padlen + sizeof(tag);
		c->bytes_sent_raw += sizeof(hdr) + ALIGN8(raw_len ? raw_len : len) + sizeof(tag);
	}
out:
	pthread_mutex_unlock(&c->tx_lock);
	return rc;
}

/*
 * Checkpoint data (CKPT_PAGES, CKPT_BLOB) goes out as an LZ4 record when
 * the channel compresses and that is smaller.  The record is gathered and
 * compressed under z_lock, outside tx_lock: heartbeats and acks from other
 * threads are not held up by the compression.
 */
int channel_sendv(struct channel *c, uint32_t type, const struct iovec *iov, int iovcnt)
{
	size_t len = 0, off = 0;
	uint32_t zlen;
	int rc;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	if (!c->compress || (type != REC_CKPT_PAGES && type != REC_CKPT_BLOB) || len < 256 ||
	    len > WIRE_MAX_PAYLOAD)
		return send_frame(c, type, iov, iovcnt, 0);
	pthread_mutex_lock(&c->z_lock);
	if (!c->z_in) {
		c->z_out_cap = LZ4_FIXED_LEN + LZ4_COMPRESSBOUND(WIRE_MAX_PAYLOAD);
		c->z_in = malloc(WIRE_MAX_PAYLOAD);
		c->z_out = malloc(c->z_out_cap);
		if (!c->z_in || !c->z_out) {
			free(c->z_in);
			free(c->z_out);
			c->z_in = c->z_out = NULL;
			pthread_mutex_unlock(&c->z_lock);
			return send_frame(c, type, iov, iovcnt, 0);
		}
	}
	for (int i = 0; i < iovcnt; i++) {
		memcpy(c->z_in + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	zlen = wire_lz4_wrap(type, c->z_in, (uint32_t)len, c->z_out, c->z_out_cap);
	if (zlen) {
		struct iovec z = { c->z_out, zlen };
		rc = send_frame(c, REC_LZ4, &z, 1, len);
	} else {
		rc = send_frame(c, type, iov, iovcnt, 0);
	}
	pthread_mutex_unlock(&c->z_lock);
	return rc;
}

int channel_send(struct channel *c, uint32_t type, const void *payload, uint32_t len)
{
	struct iovec iov = { (void *)payload, len };

	return channel_sendv(c, type, &iov, len ? 1 : 0);
}

/*
 * Read len bytes of a frame.  The socket's receive timeout wakes the caller
 * while the link is idle; once a frame has started (`started`, or some of
 * these bytes arrived) a timeout no longer returns early: the rest is
 * waited for, so a frame is never split between calls, and the link counts
 * as stalled only after stall_ms without a byte (a large frame on a slow
 * link may take longer than that as a whole).
 */
static int read_frame(struct channel *c, uint8_t *buf, size_t len, bool started)
{
	uint64_t deadline = 0;
	size_t got = 0;

	while (got < len) {
		ssize_t r = read(c->fd, buf + got, len - got);
		if (r > 0) {
			got += (size_t)r;
			deadline = 0;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if (!started && got == 0)
			return -EAGAIN;
		if (!deadline)
			deadline = now_ns() + c->stall_ms * 1000000ull;
		else if (now_ns() > deadline)
			return -ETIMEDOUT;
	}
	return 0;
}

int channel_recv(struct channel *c, struct channel_rec *rec)
{
	uint8_t *hdr = c->rx_buf, *payload = c->rx_buf + CHANNEL_FRAME_HDR_LEN, iv[12];
	uint32_t type, len;
	uint64_t seq;
	size_t body;
	const char *why;
	int rc, outl;

	c->err[0] = '\0';
	rc = read_frame(c, hdr, CHANNEL_FRAME_HDR_LEN, false);
	if (rc)
		return rc;
	type = get_be32(hdr);
	len = get_be32(hdr + 4);
	seq = get_be64(hdr + 8);
	if (seq != c->rx_seq) {
		snprintf(c->err, sizeof(c->err), "%s frame (sequence %llu, expected %llu): "
			 "dropping the connection", seq < c->rx_seq ? "replayed" : "reordered or forged",
			 (unsigned long long)seq, (unsigned long long)c->rx_seq);
		return -EBADMSG;
	}
	if (wire_check_header(type, len, &why)) {
		snprintf(c->err, sizeof(c->err), "invalid frame header (type 0x%x, length %u): %s",
			 type, len, why);
		return -EBADMSG;
	}
	body = ALIGN8(len);
	rc = read_frame(c, payload, body + CHANNEL_TAG_LEN, true);
	if (rc) {
		if (rc == -EPIPE)
			snprintf(c->err, sizeof(c->err), "connection closed in the middle of a %s frame",
				 wire_type_name(type));
		else if (rc == -ETIMEDOUT)
			snprintf(c->err, sizeof(c->err), "the rest of a %s frame did not arrive within %llu ms",
				 wire_type_name(type), (unsigned long long)c->stall_ms);
		return rc;
	}
	seq_iv(seq, iv);
	if (!EVP_DecryptInit_ex(c->rx, NULL, NULL, NULL, iv) ||
	    !EVP_DecryptUpdate(c->rx, NULL, &outl, hdr, CHANNEL_FRAME_HDR_LEN))
		return -EIO;
	if (c->encrypt) {
		if (body && !EVP_DecryptUpdate(c->rx, payload, &outl, payload, (int)body))
			return -EIO;
	} else if (body && !EVP_DecryptUpdate(c->rx, NULL, &outl, payload, (int)body)) {
		return -EIO;
	}
	EVP_CIPHER_CTX_ctrl(c->rx, EVP_CTRL_GCM_SET_TAG, CHANNEL_TAG_LEN, payload + body);
	if (EVP_DecryptFinal_ex(c->rx, payload + body, &outl) <= 0) {
		snprintf(c->err, sizeof(c->err), "forged or altered %s frame (sequence %llu): "
			 "authentication tag mismatch, dropping the connection",
			 wire_type_name(type), (unsigned long long)seq);
		return -EBADMSG;
	}
	c->rx_seq++;
	c->bytes_received += CHANNEL_FRAME_HDR_LEN + body + CHANNEL_TAG_LEN;
	if (wire_validate(type, payload, len, &why)) {
		snprintf(c->err, sizeof(c->err), "invalid %s record from the peer: %s",
			 wire_type_name(type), why);
		return -EBADMSG;
	}
	if (type == REC_LZ4) {
		if (!c->z_rx && !(c->z_rx = malloc(ALIGN8(WIRE_MAX_PAYLOAD))))
			return -ENOMEM;
		if (wire_lz4_unwrap(payload, len, c->z_rx, ALIGN8(WIRE_MAX_PAYLOAD), &type, &len,
				    &why)) {
			snprintf(c->err, sizeof(c->err), "invalid lz4 record from the peer: %s", why);
			return -EBADMSG;
		}
		payload = c->z_rx;
	}
	rec->type = type;
	rec->len = len;
	rec->payload = payload;
	return 0;
}
