/*
 * commands.c - check-config, keygen, status, and shared daemon start-up.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../config/config.h"
#include "../disk/disk.h"
#include "../disk/drbd.h"
#include "../heartbeat/policy.h"
#include "../lib/key.h"
#include "../lib/log.h"
#include "../lib/net.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "cmd.h"

/*
 * Each disk's DRBD resource, as drbdadm reads it from drbd-conf: its
 * refusals and warnings on stderr, one per line.  Returns the number of
 * disks that cannot be used.
 */
static int check_disks(const char *path, const struct tandem_config *cfg)
{
	int bad = 0;

	for (unsigned i = 0; i < cfg->disks.n; i++) {
		const struct config_disk *dk = &cfg->disks.d[i];
		struct drbd_resource_info info;
		char msg[4096];
		int r = drbd_check_resource(cfg->drbd_conf, dk->resource, &info, msg, sizeof(msg));

		if (r < 0) {
			fprintf(stderr, "%s: disk %s: %s\n", path, dk->resource, msg);
			bad++;
			continue;
		}
		for (const char *l = msg; *l;) {
			size_t n = strcspn(l, "\n");
			fprintf(stderr, "%s: disk %s: %.*s\n", path, dk->resource, (int)n, l);
			l += n + (l[n] == '\n');
		}
		if (r)
			bad++;
		else
			printf("# disk %s: DRBD %s, protocol %c, fencing %s, fence-peer %s: usable\n",
			       dk->resource, info.device, info.protocol, info.fencing, info.fence_peer);
	}
	return bad;
}

int cmd_check_config(int argc, char **argv)
{
	struct tandem_config cfg;
	char err[4096];

	if (argc == 2 && !strcmp(argv[1], "--keys")) {
		size_t n;
		const struct config_key *keys = config_schema(&n);

		for (size_t i = 0; i < n; i++)
			printf("%s\n", keys[i].name);
		return EXIT_OK;
	}
	if (argc == 3 && !strcmp(argv[1], "--explain")) {
		if (config_explain(argv[2], stdout, err, sizeof(err))) {
			fprintf(stderr, "tandem check-config: %s\n", err);
			return EXIT_USAGE;
		}
		return EXIT_OK;
	}
	if (argc != 2 || argv[1][0] == '-') {
		fprintf(stderr, "usage: tandem check-config CONFIG | --explain KEY | --keys\n");
		return EXIT_USAGE;
	}
	if (config_load(argv[1], &cfg, err, sizeof(err))) {
		fprintf(stderr, "%s", err);
		return EXIT_USAGE;
	}
	config_print(&cfg, stdout);
	if (config_warning(&cfg))
		fprintf(stderr, "%s: warning: %s\n", argv[1], config_warning(&cfg));
	return check_disks(argv[1], &cfg) ? EXIT_USAGE : EXIT_OK;
}

int cmd_keygen(int argc, char **argv)
{
	char err[512];

	if (argc != 2) {
		fprintf(stderr, "usage: tandem keygen FILE\n");
		return EXIT_USAGE;
	}
	if (key_generate(argv[1], err, sizeof(err))) {
		fprintf(stderr, "tandem keygen: %s\n", err);
		return EXIT_FAILURE_RUNTIME;
	}
	printf("wrote a new key to %s (mode 0600); copy it to the peer host\n", argv[1]);
	return EXIT_OK;
}

int cmd_load_config(int argc, char **argv, const char *role, struct tandem_config *cfg)
{
	static const struct option opts[] = {
		{ "log-level", required_argument, NULL, 'l' },
		{ "this-host", required_argument, NULL, 'H' },
		{ NULL, 0, NULL, 0 },
	};
	const char *this_host = NULL;
	char err[4096];
	int c;

	log_set_role(role);
	optind = 1;
	while ((c = getopt_long(argc, argv, "l:H:", opts, NULL)) != -1) {
		if (c == 'H') {
			this_host = optarg;
		} else if (c == 'l') {
			if (log_set_level_name(optarg)) {
				fprintf(stderr, "tandem %s: --log-level: expected error, warn, info or debug, got '%s'\n",
					role, optarg);
				return EXIT_USAGE;
			}
		} else {
			fprintf(stderr, "usage: tandem %s [--this-host NAME] [--log-level LEVEL] CONFIG\n",
				role);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "usage: tandem %s [--this-host NAME] [--log-level LEVEL] CONFIG\n", role);
		return EXIT_USAGE;
	}
	if (config_load(argv[optind], cfg, err, sizeof(err))) {
		fprintf(stderr, "%s", err);
		return EXIT_USAGE;
	}
	/* A two-host file: which host this is, and the addresses for this role. */
	if (config_resolve(cfg, this_host, strcmp(role, "backup") ? ROLE_PRIMARY : ROLE_BACKUP,
			   err, sizeof(err))) {
		fprintf(stderr, "tandem %s: %s\n", role, err);
		return EXIT_USAGE;
	}
	log_set_vm(cfg->name);
	if (config_warning(cfg))
		log_warn("%s: %s", argv[optind], config_warning(cfg));
	return EXIT_OK;
}

const char *cmd_run_dir(void)
{
	return getenv("TANDEM_RUN_DIR") ? getenv("TANDEM_RUN_DIR") : "/run/tandem";
}

const char *cmd_take_run_dir(int *argc, char ***argv)
{
	if (*argc >= 3 && !strcmp((*argv)[1], "--run-dir")) {
		const char *dir = (*argv)[2];

		*argv += 2;
		*argc -= 2;
		return dir;
	}
	return cmd_run_dir();
}

/* ---- status client -------------------------------------------------------- */

/* The string value of "key" in a one-line JSON object ("" if absent). */
const char *json_str(const char *json, const char *key, char *buf, size_t len)
{
	char pat[64];
	const char *p, *e;

	buf[0] = '\0';
	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(json, pat);
	if (!p)
		return buf;
	p += strlen(pat);
	e = strchr(p, '"');
	if (e)
		snprintf(buf, len, "%.*s", (int)MIN((size_t)(e - p), len - 1), p);
	return buf;
}

int status_health(const char *json)
{
	char role[16], state[32], detail[256];

	json_str(json, "role", role, sizeof(role));
	json_str(json, "state", state, sizeof(state));
	json_str(json, "detail", detail, sizeof(detail));
	if (strstr(json, "\"unsafe\":true"))
		return HEALTH_CRITICAL;		/* output is not buffered: nothing is protected */
	if (!strcmp(role, "primary")) {
		if (!strcmp(state, "protecting"))
			return HEALTH_OK;
		if (!strcmp(state, "superseded") || !strncmp(detail, "isolated", 8) ||
		    !strncmp(detail, "UNPROTECTED", 11))
			return HEALTH_CRITICAL;
		if (!strcmp(state, "starting") || !strcmp(state, "connecting") ||
		    !strcmp(state, "syncing") || !strcmp(state, "degraded") ||
		    !strcmp(state, "stopping"))
			return HEALTH_WARNING;
	} else if (!strcmp(role, "backup")) {
		if (!strcmp(state, "standby"))
			return HEALTH_OK;
		if (!strcmp(state, "manual") || !strcmp(state, "failed"))
			return HEALTH_CRITICAL;
		if (!strcmp(state, "waiting") || !strcmp(state, "syncing") ||
		    !strcmp(state, "degraded") || !strcmp(state, "activating") ||
		    !strcmp(state, "active") || !strcmp(state, "stopped"))
			return HEALTH_WARNING;
	}
	return HEALTH_UNKNOWN;
}

/* Send `request` to one status socket and copy the reply to out. */
bool daemon_socket(const char *file, const char *name)
{
	size_t dl = strlen(file), nl = name ? strlen(name) : 0;

	if (dl < 6 || strcmp(file + dl - 5, ".sock") != 0)
		return false;
	/* NAME.ROLE.sock: the name is all before the role */
	if (name && (dl <= nl || strncmp(file, name, nl) != 0 ||
		     (strcmp(file + nl, ".primary.sock") != 0 && strcmp(file + nl, ".backup.sock") != 0)))
		return false;
	return true;
}

int cmd_query_socket(const char *path, const char *request, FILE *out)
{
	struct timeval tv = { .tv_sec = 2 };
	char buf[8192];
	ssize_t n;
	int fd, rc = 0;

	fd = net_unix_connect(path);
	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if ((rc = write_full(fd, request, strlen(request))))
		goto out;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		fwrite(buf, 1, (size_t)n, out);
	if (n < 0)
		rc = -errno;
out:
	close(fd);
	return rc;
}

int cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "watch", no_argument, NULL, 'w' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *run_dir = cmd_run_dir();
	const char *name = NULL;
	bool json = false, watch = false;
	int c, found, denied, health = HEALTH_OK;

	optind = 1;
	while ((c = getopt_long(argc, argv, "jwr:", opts, NULL)) != -1) {
		switch (c) {
		case 'j': json = true; break;
		case 'w': watch = true; break;
		case 'r': run_dir = optarg; break;
		default:
			fprintf(stderr, "usage: tandem status [--json] [--watch] [--run-dir DIR] [NAME]\n");
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		name = argv[optind];

	for (;;) {
		DIR *d = opendir(run_dir);
		struct dirent *de;

		found = denied = 0;
		health = HEALTH_OK;
		if (watch)
			printf("\033[H\033[J");
		if (!d && errno == EACCES) {
			fprintf(stderr, "tandem status: permission denied on %s: the daemons' sockets "
				"are for the user that runs them (root)\n", run_dir);
			denied++;
		}
		while (d && (de = readdir(d))) {
			char path[512], *js = NULL;
			size_t nl = name ? strlen(name) : 0;
			size_t dl = strlen(de->d_name), jslen = 0;
			FILE *mem;
			int rc;

			(void)nl;
			(void)dl;
			if (!daemon_socket(de->d_name, name))
				continue;
			snprintf(path, sizeof(path), "%s/%s", run_dir, de->d_name);
			mem = open_memstream(&js, &jslen);
			if (!mem)
				continue;
			rc = cmd_query_socket(path, "json\n", mem);
			fclose(mem);
			if (rc == -EACCES) {
				fprintf(stderr, "tandem status: permission denied on %s: the daemons' "
					"sockets are for the user that runs them (root)\n", path);
				denied++;
			} else if (rc == 0 && js && jslen) {
				int h = status_health(js);
				found++;
				health = MAX(health, h);
				if (json)
					fputs(js, stdout);
				else
					cmd_query_socket(path, "text\n", stdout);
			}
			free(js);
		}
		if (d)
			closedir(d);
		fflush(stdout);
		if (!watch)
			break;
		sleep(1);
	}
	if (!found) {
		if (!denied)
			fprintf(stderr, "tandem status: no tandem daemon%s%s answers in %s\n",
				name ? " for VM " : "", name ? name : "", run_dir);
		return HEALTH_UNKNOWN;
	}
	return health;
}

int cmd_report(int argc, char **argv)
{
	const char *run_dir = cmd_take_run_dir(&argc, &argv);
	char path[512], *text = NULL;
	size_t len = 0;
	FILE *mem;
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: tandem report [--run-dir DIR] NAME\n");
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "%s/%s.backup.sock", run_dir, argv[1]);
	if (!(mem = open_memstream(&text, &len)))
		return EXIT_FAILURE_RUNTIME;
	rc = cmd_query_socket(path, "report\n", mem);
	fclose(mem);
	if (rc || !len) {
		fprintf(stderr, "tandem report: no backup for VM %s answers in %s (%s): the report "
			"lives in the backup that failed over\n", argv[1], run_dir,
			rc ? strerror(-rc) : "no reply");
		free(text);
		return EXIT_NO_DAEMON;
	}
	fputs(text, stdout);
	rc = strstr(text, "failover report:") ? EXIT_OK : EXIT_FAILURE_RUNTIME;
	free(text);
	return rc;
}

/*
 * Send one request line to a daemon's status socket and print its answer:
 * to stdout when it starts with "ok", to stderr otherwise.  Returns the
 * exit status (EXIT_NO_DAEMON when nothing answers at path).
 */
static int ask_daemon(const char *cmd, const char *what, const char *name, const char *path,
		      const char *req)
{
	char reply[1024];
	FILE *f;
	size_t n;
	int rc;

	if (!(f = tmpfile()))
		return EXIT_FAILURE_RUNTIME;
	rc = cmd_query_socket(path, req, f);
	if (rc) {
		fprintf(stderr, "tandem %s: no %s daemon for VM %s answers at %s: %s\n", cmd, what,
			name, path, strerror(-rc));
		fclose(f);
		return EXIT_NO_DAEMON;
	}
	rewind(f);
	n = fread(reply, 1, sizeof(reply) - 1, f);
	reply[n] = '\0';
	fclose(f);
	fputs(reply, strncmp(reply, "ok", 2) ? stderr : stdout);
	return strncmp(reply, "ok", 2) ? EXIT_FAILURE_RUNTIME : EXIT_OK;
}

int cmd_promote(int argc, char **argv)
{
	const char *run_dir = cmd_run_dir();
	char path[512];
	bool force = false;

	for (;;) {
		if (argc >= 3 && !strcmp(argv[1], "--run-dir")) {
			run_dir = argv[2];
			argv += 2;
			argc -= 2;
		} else if (argc >= 2 && !strcmp(argv[1], "--force")) {
			force = true;
			argv++;
			argc--;
		} else {
			break;
		}
	}
	if (argc != 2) {
		fprintf(stderr, "usage: tandem promote [--force] [--run-dir DIR] NAME\n");
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "%s/%s.backup.sock", run_dir, argv[1]);
	return ask_daemon("promote", "backup", argv[1], path,
			  force ? "promote-force\n" : "promote\n");
}

/* `tandem reprotect NAME`, on the host whose backup activated the guest. */
int cmd_reprotect(int argc, char **argv)
{
	const char *run_dir = cmd_take_run_dir(&argc, &argv);
	char path[512];

	if (argc != 2) {
		fprintf(stderr, "usage: tandem reprotect [--run-dir DIR] NAME\n");
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "%s/%s.backup.sock", run_dir, argv[1]);
	return ask_daemon("reprotect", "active backup", argv[1], path, "reprotect\n");
}

/* The "switchover" field of a daemon's status ("" when it does not answer). */
static const char *switchover_field(const char *path, char *buf, size_t len)
{
	char json[16384];
	FILE *f = tmpfile();
	size_t n;

	buf[0] = '\0';
	if (!f)
		return buf;
	if (cmd_query_socket(path, "json\n", f) == 0) {
		rewind(f);
		n = fread(json, 1, sizeof(json) - 1, f);
		json[n] = '\0';
		json_str(json, "switchover", buf, len);
	}
	fclose(f);
	return buf;
}

/*
 * `tandem switchover NAME`, on the primary's host: ask the primary, then
 * follow the switchover in its status (and, once the primary has become
 * the backup, in the backup's) until it is done or failed; print the
 * result with the blackout.
 */
int cmd_switchover(int argc, char **argv)
{
	const char *run_dir = cmd_take_run_dir(&argc, &argv);
	char ppath[512], bpath[512], res[600];
	int rc;

	if (argc != 2) {
		fprintf(stderr, "usage: tandem switchover [--run-dir DIR] NAME\n");
		return EXIT_USAGE;
	}
	snprintf(ppath, sizeof(ppath), "%s/%s.primary.sock", run_dir, argv[1]);
	snprintf(bpath, sizeof(bpath), "%s/%s.backup.sock", run_dir, argv[1]);
	if ((rc = ask_daemon("switchover", "primary", argv[1], ppath, "switchover\n")))
		return rc;
	for (int i = 0; i < 1200; i++) {	/* 2 min */
		struct timespec ts = { 0, 100000000 };

		if (!switchover_field(ppath, res, sizeof(res))[0])
			switchover_field(bpath, res, sizeof(res));
		if (!strncmp(res, "done", 4)) {
			printf("switchover %s\n", res);
			return EXIT_OK;
		}
		if (!strncmp(res, "failed", 6) || !strncmp(res, "FAILED", 6)) {
			fprintf(stderr, "switchover %s\n", res);
			return EXIT_FAILURE_RUNTIME;
		}
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "tandem switchover: no result after 2 minutes (last: %s); see `tandem status "
		"%s` here and on the other host\n", res[0] ? res : "no answer", argv[1]);
	return EXIT_FAILURE_RUNTIME;
}

int cmd_witness(int argc, char **argv)
{
	if (argc != 3) {
		fprintf(stderr, "usage: tandem witness ADDR:PORT KEYFILE\n");
		return EXIT_USAGE;
	}
	log_set_role("witness");
	return hb_witness_serve(argv[1], argv[2]) ? EXIT_FAILURE_RUNTIME : EXIT_OK;
}

/*
 * DRBD's fence-peer handler (disk/disk.h): DRBD runs it, with the resource
 * in DRBD_RESOURCE, when a resource with `fencing resource-and-stonith`
 * loses its peer, and freezes the resource's I/O until it answers.  It
 * puts the disk's fence flag up: every checkpoint's verdict then says
 * fenced, and the backup commits none until the primary saw DRBD whole
 * again and took the flag down.  Exit 5 ("peer unreachable") lets DRBD
 * resume I/O with the peer outdated; exit 1 leaves it frozen (DRBD's
 * answer to a broken handler), which is what tandem wants when it could
 * not put the flag up: a guest whose disk stalls, not one whose disk
 * moves on where no checkpoint can follow.
 */
int cmd_fence_peer(int argc, char **argv)
{
	struct tandem_config cfg;
	const char *res = getenv("DRBD_RESOURCE"), *peer = getenv("DRBD_PEER_ADDRESS");
	char flag[CONFIG_PATH_MAX + 2 * CONFIG_NAME_MAX + 16], text[256];
	bool ours = false;
	int fd;

	/* a two-host file is resolved as the daemons resolve it (the run-dir
	 * may name the host with %h): --this-host where the names do not
	 * tell the hosts apart */
	if (cmd_load_config(argc, argv, "fence-peer", &cfg))
		return 1;
	if (!res || !*res) {
		fprintf(stderr, "tandem fence-peer: DRBD_RESOURCE is not set: DRBD runs this as the "
			"resource's fence-peer handler\n");
		return 1;
	}
	for (unsigned i = 0; i < cfg.disks.n; i++)
		ours |= strcmp(cfg.disks.d[i].resource, res) == 0;
	if (!ours) {
		fprintf(stderr, "tandem fence-peer: DRBD resource '%s' is not one of %s's disks in "
			"%s: I/O stays frozen; fix the handler's configuration\n", res, cfg.name,
			argv[argc - 1]);
		return 1;
	}
	disk_fence_flag_path(&cfg, res, flag, sizeof(flag));
	fd = open(flag, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "tandem fence-peer: cannot put up the fence flag %s: %s; DRBD's I/O "
			"stays frozen\n", flag, strerror(errno));
		return 1;
	}
	snprintf(text, sizeof(text), "fenced at %lld, peer %s\n", (long long)time(NULL),
		 peer && *peer ? peer : "unknown");
	if (write_full(fd, text, strlen(text)) || fsync(fd)) {
		fprintf(stderr, "tandem fence-peer: cannot write the fence flag %s: %s; DRBD's I/O "
			"stays frozen\n", flag, strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	fprintf(stderr, "tandem fence-peer: %s: DRBD resource %s lost its peer: fence flag up "
		"(%s); no checkpoint commits until DRBD is whole again\n", cfg.name, res, flag);
	return 5;
}

/* `tandem set [--run-dir DIR] NAME KEY=VALUE`: change a key on the running
 * primary (config_set_live); it tells the backup what both must agree on. */
int cmd_set(int argc, char **argv)
{
	const char *run_dir = cmd_take_run_dir(&argc, &argv);
	char path[512], req[80];

	if (argc != 3 || !strchr(argv[2], '=') || strchr(argv[2], '\n') ||
	    strlen(argv[2]) > sizeof(req) - 8) {
		fprintf(stderr, "usage: tandem set [--run-dir DIR] NAME KEY=VALUE (keys: %s)\n",
			CONFIG_LIVE_KEYS);
		return EXIT_USAGE;
	}
	snprintf(path, sizeof(path), "%s/%s.primary.sock", run_dir, argv[1]);
	snprintf(req, sizeof(req), "set %s\n", argv[2]);
	return ask_daemon("set", "primary", argv[1], path, req);
}
