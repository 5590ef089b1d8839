/*
 * notify.c - sd_notify(3) for the daemons (notify.h).
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

#include "notify.h"
#include "util.h"

static bool ready;
static uint64_t last_extend_ns, last_watchdog_ns;
static int watchdog = -1;		/* -1 not looked up, 0 off, 1 on */
static uint64_t watchdog_usec;

void notify_ready(void)
{
	if (ready)
		return;
	ready = true;
	sd_notify(0, "READY=1");
}

void notify_status(const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	sd_notifyf(0, "STATUS=%s", line);
}

void notify_extend(uint64_t usec)
{
	uint64_t now = now_ns();

	if (ready || (last_extend_ns && now - last_extend_ns < 5000000000ull))
		return;
	last_extend_ns = now;
	sd_notifyf(0, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)usec);
}

void notify_stopping(void)
{
	sd_notify(0, "STOPPING=1");
}

void notify_watchdog(void)
{
	uint64_t now = now_ns();

	if (watchdog < 0)
		watchdog = sd_watchdog_enabled(0, &watchdog_usec) > 0;
	if (!watchdog || now - last_watchdog_ns < watchdog_usec * 1000 / 2)
		return;
	last_watchdog_ns = now;
	sd_notify(0, "WATCHDOG=1");
}
