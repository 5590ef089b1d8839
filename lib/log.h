/*
 * log.h - levelled logging for tandem.
 *
 * Every line goes to stderr (journald collects it under systemd) and carries
 * a timestamp, the level, the VM's name once it is known, and the source
 * module.  Format strings are checked by the compiler.
 */
#ifndef TANDEM_LOG_H
#define TANDEM_LOG_H

#include <errno.h>

enum log_level {
	LOG_LVL_ERROR = 0,
	LOG_LVL_WARN,
	LOG_LVL_INFO,
	LOG_LVL_DEBUG,
};

/* Set the minimum level printed.  Returns 0, or -EINVAL for an unknown name. */
int log_set_level_name(const char *name);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);

/* The VM name printed on every line ("-" until set).  The string is copied. */
void log_set_vm(const char *vm);

/* The process role printed on every line ("primary", "backup", ...). */
void log_set_role(const char *role);

void log_msg(enum log_level lvl, const char *mod, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#ifndef LOG_MODULE
#define LOG_MODULE "tandem"
#endif

#define log_error(...) log_msg(LOG_LVL_ERROR, LOG_MODULE, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, LOG_MODULE, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, LOG_MODULE, __VA_ARGS__)
#define log_debug(...) \
	do { if (log_get_level() >= LOG_LVL_DEBUG) \
		log_msg(LOG_LVL_DEBUG, LOG_MODULE, __VA_ARGS__); } while (0)

/* log_error() with ": strerror(errno)" appended; errno is preserved. */
#define log_perror(fmt, ...) \
	do { int e__ = errno; \
	     log_msg(LOG_LVL_ERROR, LOG_MODULE, fmt ": %s", ##__VA_ARGS__, strerror(e__)); \
	     errno = e__; } while (0)

#endif
