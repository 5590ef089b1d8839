/*
 * policy.h - what to do when paths to the peer are lost (docs/operations.md, "When paths are lost").
 *
 * hb_decide() is a pure function of a view (role, which paths are up, for
 * how long the replication stream has been down) and the policy keys; the
 * daemons act on its result.  The self-contained actions live here too:
 * running the fence command, and asking the witness (witness.c).
 */
#ifndef TANDEM_HB_POLICY_H
#define TANDEM_HB_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/config.h"
#include "../lib/key.h"
#include "../lib/wire.h"		/* ROLE_PRIMARY, ROLE_BACKUP */

enum hb_decision {
	HB_NOTHING = 0,		/* healthy (or the pair never formed): carry on */
	HB_DEGRADED_WAIT,	/* replication down, peer alive on another path: no failover;
				 * primary keeps output held */
	HB_RELEASE_OUTPUT,	/* primary, after replication-loss-grace, on-replication-loss =
				 * release: stop protection, release held output */
	HB_ISOLATED_HOLD,	/* primary, every path lost: protection stops, output of
				 * unacknowledged epochs stays held for good */
	HB_FAILOVER,		/* backup, every path lost, on-peer-loss = failover */
	HB_RUN_FENCE,		/* backup, every path lost, on-peer-loss = fence */
	HB_ASK_WITNESS,		/* backup, every path lost, on-peer-loss = witness */
	HB_WAIT_MANUAL,		/* backup, every path lost, on-peer-loss = manual */
};

struct hb_view {
	int role;			/* ROLE_PRIMARY or ROLE_BACKUP */
	bool established;		/* the replication stream has been up since start */
	bool repl_up;			/* replication stream up */
	unsigned paths;			/* UDP paths configured */
	unsigned paths_up;		/* UDP paths up */
	uint64_t repl_down_ms;		/* since the stream went down (0 when up) */
	uint64_t last_heard_ms;		/* since anything was heard (UINT64_MAX: never) */
};

struct hb_policy {
	int on_peer_loss;		/* enum peer_loss_policy */
	int on_replication_loss;	/* enum repl_loss_policy */
	uint64_t grace_ms;		/* replication-loss-grace */
};

void hb_policy_from_config(const struct tandem_config *cfg, struct hb_policy *p);

/*
 * The decision table (docs/operations.md):
 *   never replicated since start             -> NOTHING
 *   replication up                           -> NOTHING
 *   replication down, a UDP path up:
 *     backup                                 -> DEGRADED_WAIT
 *     primary, before the grace or `wait`    -> DEGRADED_WAIT
 *     primary, grace passed and `release`    -> RELEASE_OUTPUT
 *   everything down:
 *     primary                                -> ISOLATED_HOLD
 *     backup                                 -> FAILOVER | RUN_FENCE | ASK_WITNESS |
 *                                               WAIT_MANUAL per on-peer-loss
 */
enum hb_decision hb_decide(const struct hb_view *v, const struct hb_policy *p);

/* "nothing", "degraded-wait", ... */
const char *hb_decision_name(enum hb_decision d);

/* One line for status, e.g. "degraded: replication link down". */
const char *hb_decision_status(enum hb_decision d);

/*
 * Run a fence command: /bin/sh -c CMD in a new process group, stdin from
 * /dev/null, TANDEM_VM=vm in its environment, stdout/stderr inherited.
 * At timeout_ms the whole group gets SIGKILL.  Blocks; call it from a
 * daemon thread, never from a heartbeat callback.
 * Returns 0 only on exit status 0; otherwise err says why and:
 *   -ETIMEDOUT  killed at the timeout
 *   -ENOENT     the shell reported "not found" (exit 127)
 *   -EACCES     not executable (exit 126)
 *   -EIO        non-zero exit status or killed by a signal
 *   -errno      fork failed
 */
int hb_run_fence(const char *vm, const char *cmd, uint64_t timeout_ms, char *err, size_t errlen);

/* ---- witness (witness.c) -------------------------------------------------- */

/*
 * `tandem witness ADDR:PORT KEYFILE`: serve votes until SIGTERM/SIGINT
 * (returns 0) or an error (-errno, logged).  Any number of VMs sharing
 * the key; state is in memory only (see PROTOCOL.md, "Witness").
 */
int hb_witness_serve(const char *addr, const char *keyfile);

/*
 * Ask cfg->witness for the vote to become active, as `role`.  Blocks up
 * to timeout_ms (retransmitting every 200 ms).
 * Returns 0 (granted), -EACCES (denied, reason in err), -ETIMEDOUT
 * (unreachable or no valid answer: do not activate), other -errno.
 */
int hb_witness_ask(const struct tandem_config *cfg, const uint8_t key[KEY_LEN], int role,
		   uint64_t timeout_ms, char *err, size_t errlen);

/* Reasons in a WITNESS_DENY's aux field. */
enum hb_witness_deny {
	HB_DENY_PEER_ALIVE = 1,		/* the other role was heard within the timeout */
	HB_DENY_GRANTED_OTHER = 2,	/* this term's vote went to the other role */
	HB_DENY_STARTING = 3,		/* the witness started less than a timeout ago */
	HB_DENY_FULL = 4,		/* too many VMs */
};

#endif
