/*
 * log.c - levelled logging to stderr.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "log.h"

static enum log_level log_level = LOG_LVL_INFO;
static char log_vm[72] = "-";
static char log_role[16] = "tandem";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

/* syslog priorities, for the journal's "<N>" line prefix (sd-daemon.h) */
static const int level_prio[] = {
	[LOG_LVL_ERROR] = 3, [LOG_LVL_WARN] = 4, [LOG_LVL_INFO] = 6, [LOG_LVL_DEBUG] = 7,
};

static const char *const level_names[] = {
	[LOG_LVL_ERROR] = "error",
	[LOG_LVL_WARN] = "warn",
	[LOG_LVL_INFO] = "info",
	[LOG_LVL_DEBUG] = "debug",
};

int log_set_level_name(const char *name)
{
	for (unsigned i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcasecmp(name, level_names[i]) == 0) {
			log_level = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_set_level(enum log_level lvl) { log_level = lvl; }
enum log_level log_get_level(void) { return log_level; }

void log_set_vm(const char *vm)
{
	pthread_mutex_lock(&log_lock);
	snprintf(log_vm, sizeof(log_vm), "%s", vm && *vm ? vm : "-");
	pthread_mutex_unlock(&log_lock);
}

void log_set_role(const char *role)
{
	pthread_mutex_lock(&log_lock);
	snprintf(log_role, sizeof(log_role), "%s", role);
	pthread_mutex_unlock(&log_lock);
}

/*
 * stderr is the journal when JOURNAL_STREAM names stderr's device and inode
 * (systemd.exec(5)): then each line starts with its syslog priority, so
 * that `journalctl -p err` finds the errors.  Decided once.
 */
static bool log_to_journal(void)
{
	static int journal = -1;	/* under log_lock */

	if (journal < 0) {
		const char *js = getenv("JOURNAL_STREAM");
		unsigned long long dev, ino;
		struct stat st;

		journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(2, &st) == 0 &&
			  (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
	}
	return journal;
}

void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...)
{
	char msg[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;

	if (lvl > log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	pthread_mutex_lock(&log_lock);
	if (log_to_journal())
		fprintf(stderr, "<%d>", level_prio[lvl]);
	fprintf(stderr, "%04d-%02d-%02d %02d:%02d:%02d.%03ld %s[%s] %-5s %s: %s\n",
		tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
		tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
		log_role, log_vm, level_names[lvl], mod, msg);
	pthread_mutex_unlock(&log_lock);
}
