/*
 * daemon.h - start real tandem daemons for integration tests and read
 * what they report (status socket, TANDEM_TEST_LOG event files).
 */
#ifndef TANDEM_TEST_DAEMON_H
#define TANDEM_TEST_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct td {
	pid_t pid;
	const char *role;
	char log[512];		/* its stderr */
	char events[512];	/* its TANDEM_TEST_LOG */
	int status;		/* exit status once reaped */
	bool reaped;
};

/* Write a config (memdom on loopback, unique port) plus extra lines, and a key.
 * Returns the config path. */
const char *td_config(const char *name, const char *extra);

/* Start `tandem ROLE CONFIG` with optional TANDEM_FAULT. */
void td_start(struct td *d, const char *role, const char *cfg, const char *fault);
/* The same with `--this-host host` (NULL: none), its log and events files
 * named after tag (NULL: the role), for pairs of a two-host file. */
void td_start_host(struct td *d, const char *role, const char *cfg, const char *fault,
		   const char *host, const char *tag);

/* Ask its status socket for JSON; returns a static buffer ("" if none). */
const char *td_status(const char *name, const char *role);
/* The same for a daemon whose run-dir is run_dir. */
const char *td_status_at(const char *run_dir, const char *name, const char *role);

/* Numeric / string field of a JSON status reply (-1 / "" when absent). */
double td_num(const char *json, const char *key);
const char *td_str(const char *json, const char *key, char *buf, size_t len);

/* True once the process has exited (reaps it). */
bool td_exited(struct td *d);

/* SIGKILL (or another signal) and, for SIGKILL, reap. */
void td_kill(struct td *d, int sig);

/* Stop it (SIGTERM, then SIGKILL after 5 s) and reap. */
void td_stop(struct td *d);

/* Count lines of its event file starting with `prefix`; the last such
 * line's numeric field and hash are returned when the pointers are set. */
int td_events(const struct td *d, const char *prefix, uint64_t *last_num, char *last_hash);

/* The hash the primary recorded for checkpoint `epoch` ("" if none). */
bool td_ckpt_hash(const struct td *primary, uint64_t epoch, char *hash);

/* The memdom guest step the primary recorded for checkpoint `epoch`
 * ("ckpt N HASH step S" events); false if none. */
bool td_ckpt_step(const struct td *primary, uint64_t epoch, uint64_t *step);

/* Largest epoch the primary saw acknowledged (0 if none). */
uint64_t td_max_ack(const struct td *primary);

/* True if its log contains text. */
/* The first line of d's log with text: true, and what follows text in after. */
bool td_grep(const struct td *d, const char *text, char *after, size_t len);
bool td_log_has(const struct td *d, const char *text);

/* Move this test process into a new network namespace with lo up, so
 * iptables rules and addresses stay inside the test.  False without root. */
bool td_own_netns(void);

/* Dump the last lines of its log to stderr (on failure). */
void td_dump(const struct td *d);

/* The memdom guest's pid from the status of VM name's daemon of role
 * (its "guest" field, "... pid N ..."); fails the test when absent. */
int td_guest_pid(const char *name, const char *role);

/* After the primary p stopped protection: the backup b exits 0 within 5 s
 * having stopped protection cleanly (its standby discarded), and never
 * activated.  Fails the test otherwise (both logs dumped). */
void td_backup_discarded(struct td *p, struct td *b);

#endif
