/*
 * fault.c - named fault points driven by TANDEM_FAULT.
 */
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOG_MODULE "fault"
#include "fault.h"
#include "log.h"
#include "util.h"

static const char *const points[] = {
	"before-capture", "mid-capture", "mid-ship", "after-ship-before-ack",
	"drop-ack", "duplicate-frame", "backup-mid-commit", "backup-before-ack",
	"primary-exit-after-release", "slow-commit", "suspend-fails", "xen-version-differs",
	"restore-ends-early", "null-call", "no-xs-resume", "ignore-active", "backup-on-switchover",
	"verify-drop-page",
	"disk-fenced",
	"disk-skip-marker",
	"disk-hang-marker",
	"disk-backup-holds",
	"backup-late-loop",
	"activate-fails",
	"disk-ignore-health",
	"slow-activate",
	"suspend-stuck",
	"guest-ends-suspended",
};

static struct {
	atomic_long remaining;	/* hits before it fires; 0 = disarmed */
} armed[ARRAY_SIZE(points)];

static int point_index(const char *name, size_t len)
{
	for (size_t i = 0; i < ARRAY_SIZE(points); i++)
		if (strlen(points[i]) == len && !strncmp(points[i], name, len))
			return (int)i;
	return -1;
}

int fault_init(void)
{
	const char *spec = getenv("TANDEM_FAULT");

	while (spec && *spec) {
		const char *end = strchr(spec, ',');
		size_t len = end ? (size_t)(end - spec) : strlen(spec);
		const char *at = memchr(spec, '@', len);
		size_t nlen = at ? (size_t)(at - spec) : len;
		long n = at ? strtol(at + 1, NULL, 10) : 1;
		int i = point_index(spec, nlen);

		if (i < 0 || n < 1) {
			log_error("TANDEM_FAULT: unknown fault point '%.*s'", (int)nlen, spec);
			return -EINVAL;
		}
		atomic_store(&armed[i].remaining, n);
		log_warn("fault point '%s' armed (fires at hit %ld)", points[i], n);
		spec = end ? end + 1 : NULL;
	}
	return 0;
}

bool fault_hit(const char *name)
{
	int i = point_index(name, strlen(name));

	if (i < 0 || atomic_load(&armed[i].remaining) == 0)
		return false;
	return atomic_fetch_sub(&armed[i].remaining, 1) == 1;
}

void fault_kill(const char *name)
{
	if (!fault_hit(name))
		return;
	log_warn("fault point '%s' fired: killing this process", name);
	kill(getpid(), SIGKILL);
	pause();
}
