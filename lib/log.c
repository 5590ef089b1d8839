/*
 * log.c - levelled logging to stderr.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "log.h"

static enum log_level log_level = LOG_LVL_INFO;
static char log_vm[72] = "-";
static char log_role[16] = "tandem";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

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
	fprintf(stderr, "%02d:%02d:%02d.%03ld %s[%s] %-5s %s: %s\n",
		tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L,
		log_role, log_vm, level_names[lvl], mod, msg);
	pthread_mutex_unlock(&log_lock);
}
