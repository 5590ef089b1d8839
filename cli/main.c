/*
 * main.c - the single `tandem` binary: a table of subcommands.
 */
#include <stdio.h>
#include <string.h>

#include "../lib/log.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "cmd.h"

#ifndef TANDEM_VERSION
#define TANDEM_VERSION "0.1.0"
#endif

struct builtin {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *usage;
	const char *help;
};

static int cmd_help(int argc, char **argv);
static int cmd_version(int argc, char **argv);

static const struct builtin builtins[] = {
	{ "primary", cmd_primary, "primary [--this-host NAME] [--log-level LEVEL] CONFIG",
	  "Protect the VM named in CONFIG from this host: checkpoint it every\n"
	  "epoch and ship each checkpoint to the backup.  Runs until SIGTERM\n"
	  "(clean stop: output released, guest left running) or loss of the peer." },
	{ "backup", cmd_backup, "backup [--this-host NAME] [--log-level LEVEL] CONFIG",
	  "Hold the warm standby of the VM named in CONFIG: receive and commit\n"
	  "checkpoints, acknowledge them, and activate the standby when the\n"
	  "primary is lost." },
	{ "status", cmd_status, "status [--json] [--watch] [--run-dir DIR] [NAME]",
	  "Ask the daemons running on this host (all, or those of VM NAME) for\n"
	  "their state.  --json prints one JSON object per daemon with stable\n"
	  "field names; --watch refreshes every second.  Sockets are looked for\n"
	  "in /run/tandem, or --run-dir DIR (or TANDEM_RUN_DIR)." },
	{ "events", cmd_events, "events [--now] [--run-dir DIR] [NAME]",
	  "Follow the daemons on this host (all, or those of VM NAME): one line\n"
	  "per event (a state change and its reason, an epoch that stretches, a\n"
	  "guest paused for staging, a failover with its figures) until they\n"
	  "stop.  --now first prints each daemon's current state." },
	{ "metrics", cmd_metrics, "metrics [--run-dir DIR] [--textfile FILE] [NAME]",
	  "Print every daemon on this host (or those of VM NAME) in Prometheus'\n"
	  "text format: state, epochs, lag, pause and added-latency histograms,\n"
	  "bytes, output packets, heartbeat paths, failovers.  --textfile writes\n"
	  "FILE atomically, for node_exporter's textfile collector." },
	{ "report", cmd_report, "report [--run-dir DIR] NAME",
	  "After a failover, on the host that took over: why and when it\n"
	  "happened, how long detection and activation took, the checkpoint the\n"
	  "guest was activated from, the fence result, and the heartbeat paths\n"
	  "as they were at the decision.  Exit 1 when this host did not fail over." },
	{ "promote", cmd_promote, "promote [--force] [--run-dir DIR] NAME",
	  "Activate the standby of VM NAME on this host now, from its last\n"
	  "complete checkpoint.  For on-peer-loss = manual, or after a failed\n"
	  "fence.  Refused while the primary is connected or heard on any\n"
	  "heartbeat path; --force overrides the latter (logged, shown in\n"
	  "status).  The old primary steps down when it hears of the activation." },
	{ "reprotect", cmd_reprotect, "reprotect [--run-dir DIR] NAME",
	  "After a failover, on the host that runs VM NAME now (its backup\n"
	  "activated): look for a backup on the other host (start `tandem backup`\n"
	  "there first) and, when one answers, become its primary: an initial\n"
	  "copy while the guest runs, then checkpoints.  Needs a configuration\n"
	  "with hosts.  With reprotect = auto (the default) this happens by\n"
	  "itself; the command makes it happen with reprotect = manual." },
	{ "switchover", cmd_switchover, "switchover [--run-dir DIR] NAME",
	  "Planned move of protected VM NAME to the backup's host, on the\n"
	  "primary's host: one last checkpoint with the guest left paused, its\n"
	  "acknowledgement (nothing acknowledged is lost), the backup activates\n"
	  "from it, the copy here is destroyed and this host becomes the\n"
	  "backup, which the other host then re-protects to.  Prints the\n"
	  "blackout.  Needs a configuration with hosts." },
	{ "set", cmd_set, "set [--run-dir DIR] NAME KEY=VALUE",
	  "Change KEY on the running primary of VM NAME without a restart or a\n"
	  "new initial copy: interval (both daemons agree through the protocol),\n"
	  "epochs-in-flight, latency-budget.  Logged, and shown in status\n"
	  "(running_config_differs) while it differs from the file, whose\n"
	  "values a restart uses." },
	{ "witness", cmd_witness, "witness ADDR:PORT KEYFILE",
	  "Run a witness for on-peer-loss = witness: a third host that grants\n"
	  "a backup's activation only when it too has lost the primary." },
	{ "probe", cmd_probe, "probe [--count N] [--interval DURATION] [--log-dirty] [--no-link] [--link-time DURATION] [--log-level LEVEL] CONFIG",
	  "Before protecting the VM named in CONFIG: suspend it and resume it at\n"
	  "once, N times (default 20), DURATION apart (default: the configured\n"
	  "interval), copying nothing, and print how long each pause took.  Every\n"
	  "checkpoint pauses the guest at least this long.  --log-dirty also\n"
	  "turns dirty tracking on and cleans it each cycle, as protection does,\n"
	  "and counts the pages dirtied per cycle (memdom: estimated).  Then,\n"
	  "unless --no-link, it measures the replication link through the\n"
	  "backup (round trip, and bytes per second for --link-time, default 3s,\n"
	  "authenticated and encrypted as configured) and, with --log-dirty,\n"
	  "predicts the pause, checkpoint size, added output latency and the\n"
	  "speed latency-budget would need; tandem status shows the prediction\n"
	  "beside what protection measures.  Refused while tandem primary\n"
	  "protects the VM; SIGINT ends it between cycles." },
	{ "check-config", cmd_check_config, "check-config CONFIG | --explain KEY | --keys",
	  "Validate CONFIG and print the effective configuration, defaults\n"
	  "included.  Exit status 2 when it has errors.  --explain KEY says what\n"
	  "configuration key KEY takes (type, default, bounds, whether both hosts\n"
	  "must agree on it); --keys lists every key." },
	{ "fence-peer", cmd_fence_peer, "fence-peer [--this-host NAME] CONFIG",
	  "DRBD's fence-peer handler for the disks of the VM in CONFIG (drbd.conf:\n"
	  "handlers { fence-peer \"tandem fence-peer CONFIG\"; }).  Puts the\n"
	  "disk's fence flag up, so that no checkpoint commits until DRBD is\n"
	  "whole again, and exits 5 (peer unreachable) so that DRBD resumes I/O;\n"
	  "exits 1, leaving DRBD's I/O frozen, when it cannot.  A file with hosts\n"
	  "is resolved as the daemons do (--this-host as theirs)." },
	{ "keygen", cmd_keygen, "keygen FILE",
	  "Write a new random shared key to FILE (mode 0600; never overwrites).\n"
	  "Copy the same file to both hosts." },
	{ "help", cmd_help, "help [COMMAND]", "Show help for COMMAND." },
	{ "version", cmd_version, "version", "Print the version." },
};

static void usage(FILE *out)
{
	fprintf(out, "usage: tandem COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < ARRAY_SIZE(builtins); i++)
		fprintf(out, "  tandem %s\n", builtins[i].usage);
	fprintf(out, "\n`tandem help COMMAND` explains one; docs/operations.md has the rest.\n");
}

static const struct builtin *find_builtin(const char *name)
{
	for (size_t i = 0; i < ARRAY_SIZE(builtins); i++)
		if (strcmp(builtins[i].name, name) == 0)
			return &builtins[i];
	return NULL;
}

static int cmd_help(int argc, char **argv)
{
	const struct builtin *b;

	if (argc < 2) {
		usage(stdout);
		return EXIT_OK;
	}
	b = find_builtin(argv[1]);
	if (!b) {
		fprintf(stderr, "tandem: no command '%s'\n", argv[1]);
		usage(stderr);
		return EXIT_USAGE;
	}
	printf("usage: tandem %s\n\n%s\n", b->usage, b->help);
	return EXIT_OK;
}

static int cmd_version(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	printf("tandem %s (protocol version %d)\n", TANDEM_VERSION, WIRE_VERSION);
	return EXIT_OK;
}

int main(int argc, char **argv)
{
	const struct builtin *b;

	if (argc < 2) {
		usage(stderr);
		return EXIT_USAGE;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V"))
		return cmd_version(argc - 1, argv + 1);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return cmd_help(1, argv + 1);
	b = find_builtin(argv[1]);
	if (!b) {
		fprintf(stderr, "tandem: unknown command '%s'\n", argv[1]);
		usage(stderr);
		return EXIT_USAGE;
	}
	if (argc >= 3 && (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h"))) {
		char *hargv[] = { "help", argv[1], NULL };
		return cmd_help(2, hargv);
	}
	return b->fn(argc - 1, argv + 1);
}
