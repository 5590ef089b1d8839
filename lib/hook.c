/*
 * hook.c - the `notify` hook (hook.h): a queue of state changes and one
 * thread that runs the operator's command for each, bounded in time.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "hook.h"
#include "util.h"

#define LOG_MODULE "hook"
#include "log.h"

extern char **environ;

struct hook_change {
	char old_state[32], new_state[32], reason[512];
};

struct hook {
	char *command;
	uint64_t timeout_ms;
	char vm[128], role[16];

	pthread_t thr;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	struct hook_change q[HOOK_QUEUE];
	unsigned head, n;		/* q[head] is the oldest of n */
	uint64_t dropped;
	bool closing;
	uint64_t close_deadline_ms;	/* once closing: kill and drop after this */
};

static void hook_env_free(char **env, size_t ours_from)
{
	if (!env)
		return;
	for (size_t i = ours_from; env[i]; i++)
		free(env[i]);
	free(env);
}

/*
 * The environment of one run: the daemon's without our names, then ours
 * (from *ours on, owned: hook_env_free()), the command last.  NULL when
 * out of memory.
 */
static char **hook_env(const struct hook *h, const struct hook_change *c, size_t *ours)
{
	static const char *const names[] = { "TANDEM_VM=", "TANDEM_ROLE=", "TANDEM_OLD_STATE=",
					     "TANDEM_NEW_STATE=", "TANDEM_REASON=",
					     "TANDEM_HOOK_COMMAND=" };
	const char *vals[] = { h->vm, h->role, c->old_state, c->new_state, c->reason, h->command };
	size_t n = 0, k = 0;
	char **env;

	while (environ && environ[n])
		n++;
	env = calloc(n + ARRAY_SIZE(names) + 1, sizeof(*env));
	if (!env)
		return NULL;
	for (size_t i = 0; i < n; i++) {
		bool mine = false;

		for (size_t j = 0; j < ARRAY_SIZE(names); j++)
			mine |= strncmp(environ[i], names[j], strlen(names[j])) == 0;
		if (!mine)
			env[k++] = environ[i];
	}
	*ours = k;
	for (size_t j = 0; j < ARRAY_SIZE(names); j++) {
		if (asprintf(&env[k], "%s%s", names[j], vals[j]) < 0) {
			env[k] = NULL;
			hook_env_free(env, *ours);
			return NULL;
		}
		k++;
	}
	return env;
}

/* Run the command for one change; wait at most the timeout (less once closing). */
static void hook_run(struct hook *h, const struct hook_change *c)
{
	/* The command travels in the environment, so that it is not quoted
	 * into the script: the shell parses it as the operator wrote it. */
	char script[] = "eval \"$TANDEM_HOOK_COMMAND\" '\"$@\"'";
	char *argv[] = { "sh", "-c", script, "sh", h->vm, h->role, (char *)c->old_state,
			 (char *)c->new_state, NULL };
	size_t ours = 0;
	char **env = hook_env(h, c, &ours);
	uint64_t t0 = now_ms(), deadline = t0 + h->timeout_ms;
	int status = 0;
	pid_t pid, w;

	if (!env) {
		log_error("notify hook: out of memory; not run for %s -> %s", c->old_state, c->new_state);
		return;
	}
	pid = fork();
	if (pid < 0) {
		log_perror("notify hook: fork");
		hook_env_free(env, ours);
		return;
	}
	if (pid == 0) {
		/* Only async-signal-safe calls: the daemon has threads. */
		int fd = open("/dev/null", O_RDWR);

		setpgid(0, 0);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
		}
		syscall(SYS_close_range, 3, ~0U, 0);	/* no socket or lock of the daemon's */
		signal(SIGPIPE, SIG_DFL);
		execve("/bin/sh", argv, env);
		_exit(127);
	}
	setpgid(pid, pid);
	hook_env_free(env, ours);
	for (;;) {
		uint64_t now;

		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			log_perror("notify hook: waitpid");
			return;
		}
		now = now_ms();
		pthread_mutex_lock(&h->lock);
		if (h->closing && h->close_deadline_ms < deadline)
			deadline = h->close_deadline_ms;
		pthread_mutex_unlock(&h->lock);
		if (now >= deadline) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			log_warn("notify hook for %s -> %s killed after %" PRIu64 " ms (notify-timeout %"
				 PRIu64 " ms)", c->old_state, c->new_state, now - t0, h->timeout_ms);
			return;
		}
		nanosleep(&(struct timespec){ 0, 5 * 1000000 }, NULL);
	}
	kill(-pid, SIGKILL);	/* whatever it left behind in its group */
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		log_info("notify hook for %s -> %s exited 0 in %" PRIu64 " ms", c->old_state,
			 c->new_state, now_ms() - t0);
	else if (WIFEXITED(status))
		log_warn("notify hook for %s -> %s exited with status %d%s", c->old_state, c->new_state,
			 WEXITSTATUS(status), WEXITSTATUS(status) == 127 ? " (command not found?)" : "");
	else
		log_warn("notify hook for %s -> %s ended by signal %d", c->old_state, c->new_state,
			 WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void *hook_main(void *arg)
{
	struct hook *h = arg;

	pthread_mutex_lock(&h->lock);
	for (;;) {
		struct hook_change c;

		while (!h->n && !h->closing)
			pthread_cond_wait(&h->cond, &h->lock);
		if (!h->n)
			break;
		if (h->closing && now_ms() >= h->close_deadline_ms) {
			log_warn("notify hook: stopping; %u state changes not run", h->n);
			h->n = 0;
			break;
		}
		c = h->q[h->head];
		h->head = (h->head + 1) % HOOK_QUEUE;
		h->n--;
		pthread_mutex_unlock(&h->lock);
		hook_run(h, &c);
		pthread_mutex_lock(&h->lock);
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

int hook_open(const char *command, uint64_t timeout_ms, const char *vm, const char *role,
	      struct hook **out)
{
	struct hook *h;
	int r;

	*out = NULL;
	if (!command || !*command)
		return 0;
	h = calloc(1, sizeof(*h));
	if (!h || !(h->command = strdup(command))) {
		free(h);
		return -ENOMEM;
	}
	h->timeout_ms = timeout_ms;
	snprintf(h->vm, sizeof(h->vm), "%s", vm);
	snprintf(h->role, sizeof(h->role), "%s", role);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	if ((r = pthread_create(&h->thr, NULL, hook_main, h))) {
		free(h->command);
		free(h);
		return -r;
	}
	pthread_setname_np(h->thr, "tandem-hook");
	log_info("notify hook on every state change (timeout %" PRIu64 " ms): %s", timeout_ms, command);
	*out = h;
	return 0;
}

void hook_state(struct hook *h, const char *old_state, const char *new_state, const char *reason)
{
	struct hook_change *c;

	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	if (h->n == HOOK_QUEUE || h->closing) {
		if (!h->dropped++ || !h->closing)
			log_warn("notify hook: %s -> %s not run (%s)", old_state, new_state,
				 h->closing ? "stopping" : "64 changes already wait for it");
		pthread_mutex_unlock(&h->lock);
		return;
	}
	c = &h->q[(h->head + h->n) % HOOK_QUEUE];
	snprintf(c->old_state, sizeof(c->old_state), "%s", old_state);
	snprintf(c->new_state, sizeof(c->new_state), "%s", new_state);
	snprintf(c->reason, sizeof(c->reason), "%s", reason ? reason : "");
	h->n++;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

void hook_close(struct hook *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&h->lock);
	h->closing = true;
	h->close_deadline_ms = now_ms() + h->timeout_ms;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
	pthread_join(h->thr, NULL);
	pthread_mutex_destroy(&h->lock);
	pthread_cond_destroy(&h->cond);
	free(h->command);
	free(h);
}
