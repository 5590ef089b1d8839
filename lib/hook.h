/*
 * hook.h - the `notify` hook: an operator's command run on every state
 * change of a daemon, in the manner of keepalived's notify scripts.
 *
 * The command runs as `/bin/sh -c 'COMMAND "$@"' sh VM ROLE OLD NEW`, with
 * TANDEM_VM, TANDEM_ROLE, TANDEM_OLD_STATE, TANDEM_NEW_STATE and
 * TANDEM_REASON (the state's detail) in its environment, stdin and stdout
 * on /dev/null, stderr the daemon's (the journal).  The daemon never waits
 * for it: hook_state() only queues the change; one thread of the hook's
 * own runs the commands one at a time, in the order of the changes, kills
 * one that outlives the timeout (its whole process group), and logs each
 * exit status.  At most HOOK_QUEUE changes wait; more are dropped, and
 * logged.
 */
#ifndef TANDEM_HOOK_H
#define TANDEM_HOOK_H

#include <stdint.h>

#define HOOK_QUEUE 64

struct hook;

/* Start the hook's thread for `command` (copied).  An empty command gives
 * *out = NULL, on which every call is a no-op.  Returns 0 or -errno. */
int hook_open(const char *command, uint64_t timeout_ms, const char *vm, const char *role,
	      struct hook **out);

/* Queue one state change (any thread; never blocks on the command). */
void hook_state(struct hook *h, const char *old_state, const char *new_state, const char *reason);

/* Run what is queued (bounded by the timeout in all), then stop the thread
 * and free h.  A command still running at the end is killed.  NULL: no-op. */
void hook_close(struct hook *h);

#endif
