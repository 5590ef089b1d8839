/*
 * runner.c - tandem's test runner (libuv's shape).
 *
 * Runs every test in tests/list.h, or those whose name contains one of the
 * arguments, each in a forked child with its own temporary directory and a
 * timeout.  Ends with "N passed, N failed, N skipped".
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

struct test_entry {
	const char *name;
	int (*fn)(void);
	unsigned timeout_s;
};

static const struct test_entry tests[] = {
#define TEST(name, timeout_s) { #name, test_##name, timeout_s },
#include "list.h"
#undef TEST
};

static char tmpdir[256];

uint64_t test_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void test_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

const char *test_tmpdir(void) { return tmpdir; }

bool test_file_has(const char *path, const char *a, const char *b)
{
	static char buf[65536];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return false;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return strstr(buf, a) && (!b || strstr(buf, b));
}

const char *test_write_file(const char *name, const char *text)
{
	static char paths[8][512];
	static int next;
	char *p = paths[next++ % 8];
	FILE *f;

	snprintf(p, 512, "%s/%s", tmpdir, name);
	f = fopen(p, "w");
	if (!f)
		FAILF("cannot write %s", p);
	fputs(text, f);
	fclose(f);
	return p;
}

void test_sh(const char *fmt, ...)
{
	char cmd[1024];
	va_list ap;
	int r;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	r = system(cmd);
	if (r != 0)
		FAILF("command failed (%d): %s", r, cmd);
}

int test_capture(char *out, size_t len, const char *fmt, ...)
{
	char cmd[1200];
	va_list ap;
	FILE *f;
	size_t n;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	f = popen(cmd, "r");
	if (!f)
		FAILF("cannot run: %s", cmd);
	n = fread(out, 1, len - 1, f);
	out[n] = '\0';
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

const char *test_tandem_bin(void)
{
	static char path[512];
	const char *env = getenv("TANDEM_BIN");

	if (env)
		return env;
	if (!path[0] && !realpath("./tandem", path))
		snprintf(path, sizeof(path), "./tandem");
	return path;
}

static bool selected(const char *name, int argc, char **argv)
{
	if (argc < 2)
		return true;
	for (int i = 1; i < argc; i++)
		if (strstr(name, argv[i]))
			return true;
	return false;
}

static int run_one(const struct test_entry *t)
{
	char base[] = "/tmp/tandem-test.XXXXXX";
	pid_t pid;
	int status = 0;
	uint64_t deadline;

	if (!mkdtemp(base)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(tmpdir, sizeof(tmpdir), "%s", base);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		setpgid(0, 0);
		if (chdir(getenv("TANDEM_SRC") ? getenv("TANDEM_SRC") : ".") < 0)
			_exit(1);
		_exit(t->fn());
	}
	setpgid(pid, pid);
	deadline = test_now_ms() + (getenv("TANDEM_TIMEOUT_S") ?
				    strtoull(getenv("TANDEM_TIMEOUT_S"), NULL, 10) :
				    t->timeout_s) * 1000ull;
	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			break;
		if (test_now_ms() > deadline) {
			printf("  timeout after %us\n", t->timeout_s);
			kill(-pid, SIGKILL);
			waitpid(pid, &status, 0);
			status = -1;
			break;
		}
		test_sleep_ms(5);
	}
	/* Reap anything the test left in its process group. */
	kill(-pid, SIGKILL);
	if (getenv("TANDEM_KEEP_TMP"))
		printf("  kept %s\n", base);
	else {
		char cmd[300];
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", base);
	}
	if (status == -1)
		return 1;
	if (WIFSIGNALED(status)) {
		printf("  killed by signal %d\n", WTERMSIG(status));
		return 1;
	}
	return WEXITSTATUS(status);
}

int main(int argc, char **argv)
{
	int passed = 0, failed = 0, skipped = 0, n = 0;
	char cwd[512];

	signal(SIGPIPE, SIG_IGN);
	if (!getenv("TANDEM_SRC") && getcwd(cwd, sizeof(cwd)))
		setenv("TANDEM_SRC", cwd, 1);
	setvbuf(stdout, NULL, _IOLBF, 0);
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		const struct test_entry *t = &tests[i];
		uint64_t start;
		int rc;

		if (!selected(t->name, argc, argv))
			continue;
		n++;
		start = test_now_ms();
		rc = run_one(t);
		if (rc == TEST_OK) {
			printf("ok %d %s (%llu ms)\n", n, t->name,
			       (unsigned long long)(test_now_ms() - start));
			passed++;
		} else if (rc == TEST_SKIP) {
			printf("skip %d %s\n", n, t->name);
			skipped++;
		} else {
			printf("not ok %d %s (%llu ms)\n", n, t->name,
			       (unsigned long long)(test_now_ms() - start));
			failed++;
		}
	}
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed || passed == 0 ? 1 : 0;
}
