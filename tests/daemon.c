/*
 * daemon.c - helpers that run real tandem daemons for integration tests.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../lib/key.h"
#include "daemon.h"
#include "test.h"

const char *td_config(const char *name, const char *extra)
{
	static char path[600];
	char text[4096], keypath[600], err[256];
	int port = 20000 + (int)(getpid() % 20000);

	snprintf(keypath, sizeof(keypath), "%s/key", test_tmpdir());
	if (access(keypath, F_OK) != 0 && key_generate(keypath, err, sizeof(err)))
		FAILF("keygen: %s", err);
	char base[2048], *line, *save = NULL;
	size_t n = 0;

	snprintf(base, sizeof(base),
		 "name = %s\ndomain = memdom\nreplication = 127.0.0.1:%d\nkey-file = %s\n"
		 "run-dir = %s/run\nstate-dir = %s/state\ninterval = 20ms\ntimeout = 1s\n"
		 "heartbeat-interval = 50ms\n"
		 "memory = 8M\nworkload-rate = 20000\nworkload-pattern = hotset\nhotset = 2M\n"
		 "netbuf = none\nallow-unsafe-no-buffering = yes\n",
		 name, port, keypath, test_tmpdir(), test_tmpdir());
	/* Keys in `extra` replace the base's. */
	text[0] = '\0';
	for (line = strtok_r(base, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char key[64], pat[80];
		if (sscanf(line, "%63s", key) != 1)
			continue;
		snprintf(pat, sizeof(pat), "%s =", key);
		if (extra && (strncmp(extra, pat, strlen(pat)) == 0 || strstr(extra, pat) != NULL))
			continue;
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%s\n", line);
	}
	snprintf(text + n, sizeof(text) - n, "%s\n", extra ? extra : "");
	snprintf(path, sizeof(path), "%s", test_write_file("vm.cfg", text));
	return path;
}

void td_start(struct td *d, const char *role, const char *cfg, const char *fault)
{
	td_start_host(d, role, cfg, fault, NULL, NULL);
}

void td_start_host(struct td *d, const char *role, const char *cfg, const char *fault,
		   const char *host, const char *tag)
{
	memset(d, 0, sizeof(*d));
	d->role = role;
	snprintf(d->log, sizeof(d->log), "%s/%s.log", test_tmpdir(), tag ? tag : role);
	snprintf(d->events, sizeof(d->events), "%s/%s.events", test_tmpdir(), tag ? tag : role);
	d->pid = fork();
	if (d->pid == 0) {
		int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND, 0644);
		dup2(fd, 2);
		dup2(fd, 1);
		setenv("TANDEM_TEST_LOG", d->events, 1);
		if (fault)
			setenv("TANDEM_FAULT", fault, 1);
		else
			unsetenv("TANDEM_FAULT");
		if (host)
			execl(test_tandem_bin(), "tandem", role, "--this-host", host, "--log-level",
			      "info", cfg, (char *)NULL);
		else
			execl(test_tandem_bin(), "tandem", role, "--log-level", "info", cfg,
			      (char *)NULL);
		_exit(127);
	}
}

const char *td_status(const char *name, const char *role)
{
	char dir[600];

	snprintf(dir, sizeof(dir), "%s/run", test_tmpdir());
	return td_status_at(dir, name, role);
}

const char *td_status_at(const char *run_dir, const char *name, const char *role)
{
	static char buf[8192];
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = 0;
	ssize_t r;
	int fd;

	buf[0] = '\0';
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s.%s.sock", run_dir, name, role);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	{
		/* a stopped daemon (SIGSTOP) answers nothing: count it as silent */
		struct timeval tv = { 0, 400000 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return buf;
	}
	if (write(fd, "json\n", 5) != 5) {
		close(fd);
		return buf;
	}
	while (n < sizeof(buf) - 1 && (r = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)r;
	buf[n] = '\0';
	close(fd);
	return buf;
}

double td_num(const char *json, const char *key)
{
	char pat[128];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(json, pat);
	return p ? strtod(p + strlen(pat), NULL) : -1;
}

const char *td_str(const char *json, const char *key, char *buf, size_t len)
{
	char pat[128];
	const char *p, *e;

	buf[0] = '\0';
	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(json, pat);
	if (!p)
		return buf;
	p += strlen(pat);
	e = strchr(p, '"');
	if (e && (size_t)(e - p) < len) {
		memcpy(buf, p, (size_t)(e - p));
		buf[e - p] = '\0';
	}
	return buf;
}

bool td_exited(struct td *d)
{
	if (d->reaped)
		return true;
	if (waitpid(d->pid, &d->status, WNOHANG) == d->pid) {
		d->reaped = true;
		return true;
	}
	return false;
}

void td_kill(struct td *d, int sig)
{
	if (d->reaped || d->pid <= 0)
		return;
	kill(d->pid, sig);
	if (sig == SIGKILL) {
		waitpid(d->pid, &d->status, 0);
		d->reaped = true;
	}
}

void td_stop(struct td *d)
{
	if (d->reaped || d->pid <= 0)
		return;
	kill(d->pid, SIGCONT);
	kill(d->pid, SIGTERM);
	if (!WAIT_FOR(td_exited(d), 5000))
		td_kill(d, SIGKILL);
}

int td_events(const struct td *d, const char *prefix, uint64_t *last_num, char *last_hash)
{
	FILE *f = fopen(d->events, "r");
	char line[256];
	int n = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		size_t pl = strlen(prefix);
		if (strncmp(line, prefix, pl) || line[pl] != ' ')
			continue;
		n++;
		if (last_num)
			*last_num = strtoull(line + pl + 1, NULL, 10);
		if (last_hash) {
			char *sp = strchr(line + pl + 1, ' ');
			last_hash[0] = '\0';
			if (sp)
				sscanf(sp + 1, "%64s", last_hash);
		}
	}
	fclose(f);
	return n;
}

bool td_ckpt_hash(const struct td *primary, uint64_t epoch, char *hash)
{
	FILE *f = fopen(primary->events, "r");
	char line[256];
	bool found = false;

	hash[0] = '\0';
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long e;
		char h[65];
		if (sscanf(line, "ckpt %llu %64s", &e, h) == 2 && e == epoch) {
			strcpy(hash, h);
			found = true;
		}
	}
	fclose(f);
	return found;
}

bool td_ckpt_step(const struct td *primary, uint64_t epoch, uint64_t *step)
{
	FILE *f = fopen(primary->events, "r");
	char line[256];
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long e, s;
		if (sscanf(line, "ckpt %llu %*64s step %llu", &e, &s) == 2 && e == epoch) {
			*step = s;
			found = true;
		}
	}
	fclose(f);
	return found;
}

uint64_t td_max_ack(const struct td *primary)
{
	FILE *f = fopen(primary->events, "r");
	char line[256];
	uint64_t max = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long e;
		if (sscanf(line, "ack %llu", &e) == 1 && e > max)
			max = e;
	}
	fclose(f);
	return max;
}

bool td_grep(const struct td *d, const char *text, char *after, size_t len)
{
	FILE *f = fopen(d->log, "r");
	char line[2048];
	const char *at = NULL;

	if (!f)
		return false;
	while (!at && fgets(line, sizeof(line), f))
		at = strstr(line, text);
	fclose(f);
	if (at && after && len)
		snprintf(after, len, "%s", at + strlen(text));
	return at != NULL;
}

bool td_log_has(const struct td *d, const char *text)
{
	return td_grep(d, text, NULL, 0);
}

void td_dump(const struct td *d)
{
	char cmd[700];

	snprintf(cmd, sizeof(cmd), "echo '--- %s log:' >&2; tail -25 '%s' >&2", d->role, d->log);
	if (system(cmd) != 0)
		fprintf(stderr, "(no log)\n");
}

bool td_own_netns(void)
{
	if (unshare(CLONE_NEWNET) < 0)
		return false;
	return system("ip link set lo up") == 0;
}

int td_guest_pid(const char *name, const char *role)
{
	char guest[256];
	const char *at;
	int pid = 0;

	td_str(td_status(name, role), "guest", guest, sizeof(guest));
	at = strstr(guest, " pid ");
	ASSERT(at && sscanf(at, " pid %d", &pid) == 1 && pid > 1);
	return pid;
}

void td_backup_discarded(struct td *p, struct td *b)
{
	if (!WAIT_FOR(td_exited(b), 5000)) {
		td_dump(p);
		td_dump(b);
		FAILF("backup did not exit after the primary stopped");
	}
	ASSERT(WIFEXITED(b->status) && WEXITSTATUS(b->status) == 0);
	ASSERT(td_log_has(b, "stopped protection cleanly"));
	ASSERT_EQ(td_events(b, "activated", NULL, NULL), 0);
}
