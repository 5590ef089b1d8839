/*
 * config.h - the per-VM configuration file.
 *
 * One file per protected VM, "key = value" lines in the look of an xl.cfg.
 * Everything about a key (type, bounds, default, help) lives in one schema
 * table in config.c; the parser, `tandem check-config`, the digest both
 * peers compare, and the docs test are all driven by it.
 */
#ifndef TANDEM_CONFIG_H
#define TANDEM_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_NAME_MAX 64
#define CONFIG_PATH_MAX 256
#define CONFIG_DIGEST_LEN 32

struct config_addr {
	char host[CONFIG_PATH_MAX];
	uint16_t port;
};

/* heartbeat-paths: PRIMARY_ADDR:PORT-BACKUP_ADDR:PORT, comma-separated. */
#define CONFIG_HB_PATHS_MAX 8
/* Longest formatted value of any key (heartbeat-paths, fence-command). */
#define CONFIG_VALUE_MAX 4096

struct config_hb_path {
	struct config_addr primary, backup;
};

struct config_hb_paths {
	unsigned n;
	struct config_hb_path p[CONFIG_HB_PATHS_MAX];
};

/*
 * hosts: the two hosts of the pair, "NAME ADDR:PORT, NAME ADDR:PORT": each
 * host's name and the replication address it listens on while it is the
 * backup.  With hosts, one file serves both directions: `replication` is
 * not set, heartbeat-paths list the first host's end first, and each daemon
 * works out which host it is (config_resolve).
 */
#define CONFIG_HOSTS 2

struct config_host {
	char name[CONFIG_NAME_MAX + 1];
	struct config_addr repl;
};

struct config_hosts {
	unsigned n;			/* 0 (a single-direction file) or 2 */
	struct config_host h[CONFIG_HOSTS];
};

/* disks: RESOURCE:DEVICE, comma-separated (a DRBD resource, the guest-facing device). */
#define CONFIG_DISKS_MAX 8

struct config_disk {
	char resource[CONFIG_NAME_MAX];
	char device[CONFIG_PATH_MAX];
};

struct config_disks {
	unsigned n;
	struct config_disk d[CONFIG_DISKS_MAX];
};

enum domain_kind { DOMAIN_XEN = 0, DOMAIN_MEMDOM };
enum netbuf_kind { NETBUF_PLUG = 0, NETBUF_QUEUE, NETBUF_NONE };
enum memdom_pattern { PATTERN_SEQUENTIAL = 0, PATTERN_RANDOM, PATTERN_HOTSET };
enum peer_loss_policy { PEER_LOSS_FAILOVER = 0, PEER_LOSS_FENCE, PEER_LOSS_WITNESS, PEER_LOSS_MANUAL };
enum repl_loss_policy { REPL_LOSS_WAIT = 0, REPL_LOSS_RELEASE };
enum compress_kind { COMPRESS_NONE = 0, COMPRESS_LZ4 };
enum superseded_policy { SUPERSEDED_PAUSE = 0, SUPERSEDED_DESTROY };
enum reprotect_policy { REPROTECT_AUTO = 0, REPROTECT_MANUAL };

struct tandem_config {
	char source[CONFIG_PATH_MAX];		/* file it came from */

	char name[CONFIG_NAME_MAX + 1];
	int domain;				/* enum domain_kind */
	char xen_domain[CONFIG_NAME_MAX + 1];
	struct config_addr replication;
	char key_file[CONFIG_PATH_MAX];
	bool encrypt;
	int compress;				/* enum compress_kind */
	char run_dir[CONFIG_PATH_MAX];
	char state_dir[CONFIG_PATH_MAX];	/* what survives a reboot (the generation) */

	uint64_t interval_ms;
	uint64_t timeout_ms;
	uint64_t heartbeat_interval_ms;
	uint64_t epochs_in_flight;
	uint64_t staging_limit;
	uint64_t verify;			/* bytes per checkpoint, 0 = off */
	uint64_t latency_budget_ms;		/* added output latency to hold, 0 = off */

	int netbuf;				/* enum netbuf_kind */
	char vif[CONFIG_NAME_MAX + 1];
	uint64_t buffer_limit;
	bool allow_unsafe_no_buffering;

	uint64_t memory;			/* memdom only */
	uint64_t workload_rate;
	int workload_pattern;			/* enum memdom_pattern */
	uint64_t hotset;
	char memdom_netns[CONFIG_PATH_MAX];
	char memdom_disk[CONFIG_PATH_MAX];	/* "" = none (device/device.h: memdisk) */
	char memdom_disk_writes[CONFIG_PATH_MAX];	/* "" = the guest writes no disk */
	uint64_t memdom_disk_steps;
	struct config_addr memdom_observer;	/* host "" = send nothing */
	uint64_t memdom_packet_steps;

	/* failure detection (heartbeat/) */
	struct config_hb_paths heartbeat_paths;
	int on_peer_loss;			/* enum peer_loss_policy */
	char fence_command[1024];
	uint64_t fence_timeout_ms;
	struct config_addr witness;		/* host "" = none */
	uint64_t replication_loss_grace_ms;
	int on_replication_loss;		/* enum repl_loss_policy */
	int on_superseded;			/* enum superseded_policy */

	/* the notify hook (lib/hook.h): this host's own, not in the digest */
	char notify[1024];
	uint64_t notify_timeout_ms;

	/* the guest's disks (disk/drbd.h) */
	struct config_disks disks;
	uint64_t disk_overlay_limit;		/* backup: per disk */
	char drbd_conf[CONFIG_PATH_MAX];

	/* both directions in one file (config_resolve) */
	struct config_hosts hosts;
	int reprotect;				/* enum reprotect_policy */
	int this_host;				/* index in hosts; -1: not resolved / no hosts */
	int resolved_role;			/* ROLE_PRIMARY or ROLE_BACKUP once resolved, else 0 */
	struct config_hb_paths hb_by_host;	/* heartbeat-paths as written (hosts[0]'s end first) */
};

enum config_type {
	CT_STRING, CT_BOOL, CT_DURATION, CT_SIZE, CT_UINT, CT_ENUM, CT_ADDR,
	CT_HB_PATHS,			/* struct config_hb_paths */
	CT_DISKS,			/* struct config_disks */
	CT_HOSTS,			/* struct config_hosts */
};

struct config_key {
	const char *name;
	enum config_type type;
	size_t offset;
	size_t size;			/* strings: buffer size */
	uint64_t min, max;		/* durations (ms), sizes, uints */
	const char *def;		/* default as text; NULL = required */
	const char *const *enums;	/* CT_ENUM: NULL-terminated names */
	bool digest;			/* both peers must agree on it */
	const char *help;
};

/* The schema; *n receives its length. */
const struct config_key *config_schema(size_t *n);

/* `tandem check-config --explain KEY`: what key `name` takes, its default,
 * bounds, whether both hosts must agree on it, and its help, to out.
 * 0, or -ENOENT with "unknown key ... (did you mean ...)" in err. */
int config_explain(const char *name, FILE *out, char *err, size_t errlen);

/*
 * Parse a configuration from text (file name used in messages only).
 * Defaults are applied first.  On error returns -EINVAL and writes one
 * line per problem into err ("FILE:LINE: key 'k': ...").
 */
int config_parse(const char *file, const char *text, size_t len,
		 struct tandem_config *cfg, char *err, size_t errlen);

/* Read and parse a file.  Returns 0, -EINVAL (err filled) or -errno. */
int config_load(const char *path, struct tandem_config *cfg,
		char *err, size_t errlen);

/* Print the effective configuration, defaults included, as a config file. */
void config_print(const struct tandem_config *cfg, FILE *out);

/* Format one key's effective value. */
void config_format_value(const struct tandem_config *cfg,
			 const struct config_key *k, char *buf, size_t len);

/* Whether key k means anything for cfg's domain driver (the memdom-only
 * keys do not for xen): config_print and config_digest skip those. */
bool config_key_applies(const struct tandem_config *cfg, const struct config_key *k);

/* SHA-256 over the keys both peers must agree on (that apply). */
void config_digest(const struct tandem_config *cfg, uint8_t out[CONFIG_DIGEST_LEN]);

/*
 * `tandem set`: change key to value on a running daemon's configuration,
 * validated as in a file.  Only some keys may change while protecting
 * (CONFIG_LIVE_KEYS).  0; -ENOENT unknown key; -EPERM a key that cannot
 * change live; -EINVAL a bad value (err says why in all cases).
 */
#define CONFIG_LIVE_KEYS "interval, epochs-in-flight, latency-budget"
int config_set_live(struct tandem_config *cfg, const char *key, const char *value, char *err,
		    size_t errlen);

/* "KEY=VALUE (file: VALUE)" for each live key whose value in cfg differs
 * from file's, comma-separated ("" when none). */
void config_live_diff(const struct tandem_config *cfg, const struct tandem_config *file,
		      char *out, size_t len);

/* A valid but risky setting, in an operator's words (NULL: none):
 * check-config prints it, the daemons log it at start. */
const char *config_warning(const struct tandem_config *cfg);

/*
 * Which end of a two-host file this daemon is, and the role it runs: sets
 * cfg->this_host and rewrites cfg->replication and cfg->heartbeat_paths
 * into the role-based view the engine uses (replication = the backup
 * host's address; each path's `primary` end = the primary host's), and
 * expands `%h` (this host's name) in run-dir.  this_host: the name given
 * with --this-host, or NULL: the host whose name is this machine's host
 * name (or its first label), else the one host whose replication address
 * is local here.  A file without hosts is left as it is (and this_host
 * must be NULL).  0, or -EINVAL with why in err.
 */
int config_resolve(struct tandem_config *cfg, const char *this_host, int role,
		   char *err, size_t errlen);

/* A resolved two-host configuration, now for the other role (the daemon's
 * role changes: a backup that re-protects becomes the primary).  -EINVAL
 * for a file without hosts. */
int config_set_role(struct tandem_config *cfg, int role);

/* The other host's name ("" without hosts). */
const char *config_peer_host(const struct tandem_config *cfg);

/* Path of this VM's status socket: RUN_DIR/NAME.ROLE.sock */
void config_status_path(const struct tandem_config *cfg, const char *role,
			char *buf, size_t len);

#endif
