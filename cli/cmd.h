/*
 * cmd.h - the `tandem` subcommands, dispatched from the table in main.c.
 *
 * Each takes the arguments after its name (argv[0] is the subcommand) and
 * returns the process exit status (see docs/operations.md, "Exit codes").
 */
#ifndef TANDEM_CMD_H
#define TANDEM_CMD_H

#include <stdbool.h>
#include <stdio.h>

enum exit_code {
	EXIT_OK = 0,
	EXIT_FAILURE_RUNTIME = 1,	/* runtime failure */
	EXIT_USAGE = 2,			/* bad usage or bad configuration */
	EXIT_PEER = 3,			/* peer refused: auth, version, name, digest */
	EXIT_ENV = 4,			/* host lacks a kernel feature, module, device */
	EXIT_NO_DAEMON = 5,		/* status: no daemon answered */
	EXIT_GUEST_ENDED = 6,		/* primary: the guest shut itself down or was destroyed;
					 * protection ended, the backup discarded its standby */
};

/* `tandem status` exits by health, as monitoring plugins expect (the worst
 * over the daemons it asked; docs/operations.md). */
enum health {
	HEALTH_OK = 0,		/* primary protecting, or backup holding a committed checkpoint */
	HEALTH_WARNING = 1,	/* degraded: connecting, syncing, link down, active (unprotected) */
	HEALTH_CRITICAL = 2,	/* failed, isolated, superseded, UNPROTECTED, UNSAFE, manual */
	HEALTH_UNKNOWN = 3,	/* no daemon answered, permission denied, unknown state */
};

/* The health of one daemon from its `status --json` object. */
int status_health(const char *json);

/* The daemons' run directory: TANDEM_RUN_DIR, else /run/tandem. */
const char *cmd_run_dir(void);

/* cmd_run_dir(), or DIR when the arguments start with `--run-dir DIR`
 * (then *argv moves on by two: the name after it is (*argv)[1]). */
const char *cmd_take_run_dir(int *argc, char ***argv);

/* The string value of "key" in a one-line JSON object ("" if absent). */
const char *json_str(const char *json, const char *key, char *buf, size_t len);

/* A run-dir entry that is a daemon's socket (NAME.primary.sock or
 * NAME.backup.sock; any VM when name is NULL). */
bool daemon_socket(const char *file, const char *name);
int cmd_events(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_report(int argc, char **argv);
/* Send request to a daemon's status socket, copy its reply to out; 0 or -errno. */
int cmd_query_socket(const char *path, const char *request, FILE *out);

int cmd_primary(int argc, char **argv);
int cmd_backup(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_fence_peer(int argc, char **argv);
int cmd_set(int argc, char **argv);
int cmd_promote(int argc, char **argv);
int cmd_reprotect(int argc, char **argv);
int cmd_switchover(int argc, char **argv);
int cmd_witness(int argc, char **argv);
int cmd_probe(int argc, char **argv);

/* Shared by the daemons: parse "[--log-level L] CONFIG" (they always run in
 * the foreground, as systemd wants). */
struct tandem_config;
int cmd_load_config(int argc, char **argv, const char *role, struct tandem_config *cfg);

#endif
