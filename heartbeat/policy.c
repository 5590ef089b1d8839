/*
 * policy.c - the failover decision table and the fence command.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LOG_MODULE "heartbeat"
#include "../lib/log.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "policy.h"

void hb_policy_from_config(const struct tandem_config *cfg, struct hb_policy *p)
{
	p->on_peer_loss = cfg->on_peer_loss;
	p->on_replication_loss = cfg->on_replication_loss;
	p->grace_ms = cfg->replication_loss_grace_ms;
}

enum hb_decision hb_decide(const struct hb_view *v, const struct hb_policy *p)
{
	if (!v->established || v->repl_up)
		return HB_NOTHING;
	if (v->paths_up > 0) {
		/* The peer is alive on another path: never fail over. */
		if (v->role == ROLE_PRIMARY && p->on_replication_loss == REPL_LOSS_RELEASE &&
		    v->repl_down_ms >= p->grace_ms)
			return HB_RELEASE_OUTPUT;
		return HB_DEGRADED_WAIT;
	}
	if (v->role == ROLE_PRIMARY)
		return HB_ISOLATED_HOLD;
	switch (p->on_peer_loss) {
	case PEER_LOSS_FENCE: return HB_RUN_FENCE;
	case PEER_LOSS_WITNESS: return HB_ASK_WITNESS;
	case PEER_LOSS_MANUAL: return HB_WAIT_MANUAL;
	default: return HB_FAILOVER;
	}
}

const char *hb_decision_name(enum hb_decision d)
{
	switch (d) {
	case HB_NOTHING: return "nothing";
	case HB_DEGRADED_WAIT: return "degraded-wait";
	case HB_RELEASE_OUTPUT: return "release-output";
	case HB_ISOLATED_HOLD: return "isolated-hold";
	case HB_FAILOVER: return "failover";
	case HB_RUN_FENCE: return "run-fence";
	case HB_ASK_WITNESS: return "ask-witness";
	case HB_WAIT_MANUAL: return "wait-manual";
	}
	return "?";
}

const char *hb_decision_status(enum hb_decision d)
{
	switch (d) {
	case HB_NOTHING: return "ok";
	case HB_DEGRADED_WAIT: return "degraded: replication link down";
	case HB_RELEASE_OUTPUT: return "unprotected: replication link down past the grace, output released";
	case HB_ISOLATED_HOLD: return "isolated: peer lost on every path, output held";
	case HB_FAILOVER: return "peer lost on every path: failing over";
	case HB_RUN_FENCE: return "peer lost on every path: fencing before failover";
	case HB_ASK_WITNESS: return "peer lost on every path: asking the witness";
	case HB_WAIT_MANUAL: return "peer lost on every path: waiting for `tandem promote`";
	}
	return "?";
}

/* ---- fence ------------------------------------------------------------------ */

int hb_run_fence(const char *vm, const char *cmd, uint64_t timeout_ms, char *err, size_t errlen)
{
	uint64_t t0 = now_ms();
	pid_t pid, w;
	int status = 0;

	if (!cmd || !*cmd) {
		snprintf(err, errlen, "no fence-command configured");
		return -EINVAL;
	}
	log_warn("fencing: running fence-command (timeout %" PRIu64 " ms): %s", timeout_ms, cmd);
	pid = fork();
	if (pid < 0) {
		int e = errno;
		snprintf(err, errlen, "cannot fork for the fence command: %s", strerror(e));
		return -e;
	}
	if (pid == 0) {
		int fd = open("/dev/null", O_RDONLY);
		setpgid(0, 0);
		if (fd >= 0) {
			dup2(fd, 0);
			if (fd > 2)
				close(fd);
		}
		signal(SIGPIPE, SIG_DFL);
		setenv("TANDEM_VM", vm ? vm : "", 1);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	setpgid(pid, pid);	/* also from here, so the group exists before any kill */
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			int e = errno;
			snprintf(err, errlen, "waiting for the fence command: %s", strerror(e));
			return -e;
		}
		if (now_ms() - t0 >= timeout_ms) {
			kill(-pid, SIGKILL);
			kill(pid, SIGKILL);
			while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
				;
			snprintf(err, errlen, "fence command timed out after %" PRIu64 " ms and was "
				 "killed: %s", timeout_ms, cmd);
			log_error("fencing failed: %s", err);
			return -ETIMEDOUT;
		}
		nanosleep(&(struct timespec){ 0, 5 * 1000000 }, NULL);
	}
	/* Whatever the shell left behind in its group goes too. */
	kill(-pid, SIGKILL);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
		log_warn("fencing: fence-command succeeded in %" PRIu64 " ms", now_ms() - t0);
		return 0;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 127) {
		snprintf(err, errlen, "fence command not found (exit status 127): %s", cmd);
		log_error("fencing failed: %s", err);
		return -ENOENT;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == 126) {
		snprintf(err, errlen, "fence command not executable (exit status 126): %s", cmd);
		log_error("fencing failed: %s", err);
		return -EACCES;
	}
	if (WIFEXITED(status))
		snprintf(err, errlen, "fence command failed with exit status %d: %s",
			 WEXITSTATUS(status), cmd);
	else
		snprintf(err, errlen, "fence command killed by signal %d: %s",
			 WIFSIGNALED(status) ? WTERMSIG(status) : 0, cmd);
	log_error("fencing failed: %s", err);
	return -EIO;
}
