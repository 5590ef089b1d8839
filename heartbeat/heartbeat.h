/*
 * heartbeat.h - multi-path authenticated UDP heartbeats (docs/protocol.md, "Heartbeats").
 *
 * Each configured path (`heartbeat-paths`, PRIMARY:PORT-BACKUP:PORT) carries
 * one 224-byte datagram every `heartbeat-interval` in each direction.  A path
 * is up from the first authentic, fresh datagram and down after `timeout`
 * without one.  Fresh means it echoes one of this side's own datagrams sent
 * less than `timeout` ago, and the path counts as heard at that send time:
 * a peer that dies at T is down on every path by T + timeout, whatever a
 * relay delays, replays or buffers.  The replication stream counts as one more path: the daemon
 * reports it with hb_set_replication_up().  "Peer lost" means the replication
 * stream and every UDP path are down.
 *
 * Threading: hb_start() creates its own thread running its own libuv loop
 * (one uv_udp_t per path, two timers).  Every hb_* call below is thread-safe
 * and may be made from any daemon thread.  Callbacks run on the heartbeat
 * thread with no heartbeat lock held: they may call the getters, must not
 * call hb_stop(), and should return quickly (post to the daemon's own loop
 * or set a flag; never run a fence command or activation inline).
 *
 * Path indices in the API are 0-based; log lines and status number paths
 * from 1 in the order of `heartbeat-paths`.
 */
#ifndef TANDEM_HEARTBEAT_H
#define TANDEM_HEARTBEAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/config.h"
#include "../lib/key.h"
#include "policy.h"

/* ---- the datagram (big-endian; docs/protocol.md) ----------------- */

#define HB_MAGIC "TDHB"
#define HB_VERSION 1
#define HB_NONCE_LEN 32
#define HB_VM_LEN 64
#define HB_MAC_LEN 32

#define HB_OFF_MAGIC 0		/* 4  "TDHB" */
#define HB_OFF_VERSION 4	/* 1  1 */
#define HB_OFF_TYPE 5		/* 1  enum hb_msg_type */
#define HB_OFF_ROLE 6		/* 1  ROLE_PRIMARY, ROLE_BACKUP, HB_ROLE_WITNESS */
#define HB_OFF_PATH 7		/* 1  path index (0-based), HB_PATH_NONE for witness traffic */
#define HB_OFF_VM 8		/* 64 VM name, NUL-padded */
#define HB_OFF_NONCE 72		/* 32 sender's per-boot nonce (witness: request/challenge) */
#define HB_OFF_SEQ 104		/* 8  per (nonce, path) sequence, starts at 1 */
#define HB_OFF_TIME 112		/* 8  sender's CLOCK_MONOTONIC, ns */
#define HB_OFF_EPOCH 120	/* 8  sender's last epoch (primary) / committed (backup) */
#define HB_OFF_ECHO_NONCE 128	/* 32 nonce of the last datagram received on this path */
#define HB_OFF_ECHO_SEQ 160	/* 8  its seq */
#define HB_OFF_ECHO_TIME 168	/* 8  its time field, unchanged */
#define HB_OFF_ECHO_HOLD 176	/* 8  ns between its receipt and this send */
#define HB_OFF_AUX 184		/* 8  type-specific (witness: timeout ms, reason) */
#define HB_OFF_MAC 192		/* 32 HMAC-SHA256(hb key, bytes 0..191) */
#define HB_DGRAM_LEN 224

_Static_assert(HB_OFF_VM + HB_VM_LEN == HB_OFF_NONCE, "vm then nonce");
_Static_assert(HB_OFF_NONCE + HB_NONCE_LEN == HB_OFF_SEQ, "nonce then seq");
_Static_assert(HB_OFF_ECHO_NONCE + HB_NONCE_LEN == HB_OFF_ECHO_SEQ, "echo nonce then seq");
_Static_assert(HB_OFF_AUX + 8 == HB_OFF_MAC, "aux then mac");
_Static_assert(HB_OFF_MAC + HB_MAC_LEN == HB_DGRAM_LEN, "mac ends the datagram");
_Static_assert(HB_DGRAM_LEN % 8 == 0 && HB_DGRAM_LEN <= 512, "small, 8-aligned datagram");
_Static_assert(HB_VM_LEN >= CONFIG_NAME_MAX, "a VM name fits");

enum hb_msg_type {
	HB_MSG_HEARTBEAT = 1,		/* daemon -> daemon, on a path */
	HB_MSG_WITNESS_PING = 2,	/* daemon -> witness, every heartbeat-interval */
	HB_MSG_WITNESS_ASK = 3,		/* daemon -> witness: vote request */
	HB_MSG_WITNESS_CHALLENGE = 4,	/* witness -> daemon: prove freshness */
	HB_MSG_WITNESS_GRANT = 5,	/* witness -> daemon: vote granted */
	HB_MSG_WITNESS_DENY = 6,	/* witness -> daemon: vote refused (aux = reason) */
};

/* HEARTBEAT's aux field: flags.  ACTIVE: the backup has decided to
 * activate (or runs the guest); its epoch field is then the checkpoint it
 * activated from.  A primary that hears it steps down. */
#define HB_AUX_ACTIVE 1ull

#define HB_ROLE_WITNESS 3
#define HB_PATH_NONE 0xff

/* A decoded datagram. */
struct hb_dgram {
	uint8_t type, role, path;
	char vm[HB_VM_LEN + 1];
	uint8_t nonce[HB_NONCE_LEN];
	uint64_t seq, time_ns, epoch;
	uint8_t echo_nonce[HB_NONCE_LEN];
	uint64_t echo_seq, echo_time_ns, echo_hold_ns, aux;
};

/* hb key = HMAC-SHA256(shared key, "tandem-v1 heartbeat"). */
void hb_derive_key(const uint8_t key[KEY_LEN], uint8_t hbkey[32]);

/* Encode and MAC one datagram. */
void hb_pack(const uint8_t hbkey[32], const struct hb_dgram *d, uint8_t out[HB_DGRAM_LEN]);

/*
 * Check and decode one datagram.  Returns 0; -EBADMSG for a wrong length,
 * magic, version, type or an unterminated name; -EACCES when the MAC does
 * not verify (forged, altered, other key).  Replay and VM checks are the
 * caller's.
 */
int hb_unpack(const uint8_t hbkey[32], const uint8_t *buf, size_t len, struct hb_dgram *d);

/* ---- the heartbeat engine ------------------------------------------------ */

struct hb;

struct hb_callbacks {
	/* Path `index` went up or down.  May be NULL. */
	void (*path_changed)(void *arg, int index, bool up);
	/* Every path, the replication stream included, is now down (some
	 * path was up before).  Fires once per loss.  May be NULL. */
	void (*peer_lost)(void *arg);
	/* Some path is up again after peer_lost.  May be NULL. */
	void (*peer_back)(void *arg);
	/* hb_decide() over the current view changed (checked with the path
	 * timeouts, every twentieth of the timeout, and on every transition,
	 * so the grace period needs no timer of yours).
	 * Called once at start with the initial decision.  May be NULL. */
	void (*decision)(void *arg, enum hb_decision d, const struct hb_view *v);
	/* The backup says it is active (activating or running the guest from
	 * checkpoint `epoch`), in an accepted datagram on UDP path `index`.
	 * Primary only; fires once.  May be NULL. */
	void (*peer_active)(void *arg, int index, uint64_t epoch);
};

/*
 * Start heartbeats for `role` (ROLE_PRIMARY or ROLE_BACKUP): bind this
 * side's address of each path, start the thread.  cfg and key are copied;
 * cb may be NULL.  The replication stream starts as down.  With an empty
 * `heartbeat-paths` nothing is bound and the view is driven by
 * hb_set_replication_up() alone.  When on-peer-loss = witness, heartbeats
 * also go to the witness (as WITNESS_PING).
 * Returns 0, -EADDRINUSE / -EADDRNOTAVAIL / -errno (message logged), -ENOMEM.
 */
int hb_start(struct hb **out, const struct tandem_config *cfg, const uint8_t key[KEY_LEN],
	     int role, const struct hb_callbacks *cb, void *arg);

/* Stop the thread, close the sockets, free.  No callback runs after it
 * returns.  NULL is a no-op.  Do not call from a callback. */
void hb_stop(struct hb *hb);

/* The epoch carried in outgoing datagrams (informational for the peer). */
void hb_set_epoch(struct hb *hb, uint64_t epoch);

/* Backup: from now on every datagram says this side is active, having
 * activated from checkpoint `epoch` (HB_AUX_ACTIVE).  Sent at once on
 * every path, then every heartbeat-interval. */
void hb_set_active(struct hb *hb, uint64_t epoch);

/* Whether the peer said it is active (primary: the backup activated), and
 * from which checkpoint.  False until an accepted datagram says so. */
bool hb_peer_active(struct hb *hb, uint64_t *epoch);

/* The replication stream is up (authenticated channel, records flowing)
 * or down (broke, timed out, not connected). */
void hb_set_replication_up(struct hb *hb, bool up);

/* Any path up, the replication stream included. */
bool hb_peer_alive(struct hb *hb);

/* UDP path `index` (0-based) is up. */
bool hb_path_up(struct hb *hb, int index);

/* Number of UDP paths configured. */
int hb_npaths(const struct hb *hb);

/* CLOCK_MONOTONIC ns (lib/util now_ns()) of the last authentic datagram on
 * any UDP path; 0 if never.  The replication stream's own last word is the
 * daemon's to track. */
uint64_t hb_last_heard_ns(struct hb *hb);

/* Snapshot of the view hb_decide() works on. */
void hb_get_view(struct hb *hb, struct hb_view *v);

/* The current decision (hb_decide over hb_get_view with the config's policy). */
enum hb_decision hb_current_decision(struct hb *hb);

struct hb_path_stats {
	bool up;
	int64_t last_heard_ms;		/* ms ago; -1 = never: the peer proved it was alive
					 * then (our datagram it echoed was sent then) */
	double rtt_ms;			/* last measured; -1 = none yet */
	uint64_t sent, received, rejected, unconfirmed;
	uint64_t stale;			/* authentic, but echoing nothing of ours within `timeout` */
};

/* Per-path state.  Returns 0 or -EINVAL for a bad index. */
int hb_path_stats(struct hb *hb, int index, struct hb_path_stats *st);

/*
 * Render the per-path state for `tandem status`.  json: a JSON array
 * (no trailing newline), one object per path:
 *   {"index":1,"path":"10.0.1.1:7401-10.0.1.2:7401","up":true,
 *    "last_heard_ms":42,"rtt_ms":0.31,"sent":10,"received":10,
 *    "rejected":0,"unconfirmed":0}
 * text: one line per path, each starting with two spaces and ending with
 * '\n' ("  path 1 (A-B): up, last heard 42 ms ago, rtt 0.31 ms, sent 10,
 * received 10, rejected 0").  Returns the length written (truncated to len).
 */
size_t hb_render(struct hb *hb, bool json, char *buf, size_t len);

/* ---- for fuzzing and tests (fuzz/fuzz-heartbeat.c) ------------------------ */

/* An engine with `npaths` paths and no thread, socket or timer; its own
 * nonce is given.  Free with hb__free_detached. */
struct hb *hb__new_detached(const char *vm, const uint8_t key[KEY_LEN], int role, int npaths,
			    uint64_t timeout_ms, uint64_t interval_ms, const uint8_t nonce[HB_NONCE_LEN]);

/* Apply the acceptance rules to one datagram received on `path` at `now`
 * (CLOCK_MONOTONIC ns): 1 accepted (proof_ns: the send time it echoes;
 * active_epoch: a backup's activation, UINT64_MAX if none), 0 dropped,
 * -EINVAL for a bad path. */
int hb__accept(struct hb *hb, int path, const uint8_t *buf, size_t len, uint64_t now,
	       uint64_t *proof_ns, uint64_t *active_epoch);

void hb__free_detached(struct hb *hb);

#endif
