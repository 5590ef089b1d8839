/*
 * notify.h - tell systemd what the daemon is doing (sd_notify(3)).
 *
 * All calls are cheap and do nothing unless systemd started the daemon
 * with Type=notify (NOTIFY_SOCKET set).  READY=1 is sent once, when the VM
 * is really protected (primary: the first acknowledged checkpoint; backup:
 * a standby holding a committed checkpoint); STATUS= carries one line with
 * the state, the epoch and the lag; EXTEND_TIMEOUT_USEC keeps a long
 * initial copy inside the unit's start timeout; WATCHDOG=1 is sent from
 * the daemon's event loop at half the unit's WatchdogSec.
 */
#ifndef TANDEM_NOTIFY_H
#define TANDEM_NOTIFY_H

#include <stdint.h>

void notify_ready(void);
void notify_status(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The start may take usec more (sent at most every 5 s). */
void notify_extend(uint64_t usec);
void notify_stopping(void);
/* From a periodic timer: WATCHDOG=1 when half the watchdog period has passed. */
void notify_watchdog(void);

#endif
