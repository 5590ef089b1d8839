/*
 * net.h - TCP helpers for the replication link, and the status socket's client.
 */
#ifndef TANDEM_NET_H
#define TANDEM_NET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/config.h"

/* Listen on addr (SO_REUSEADDR).  Returns the fd or -errno (err filled). */
int net_listen(const struct config_addr *addr, char *err, size_t errlen);

/* Connect to addr within timeout_ms.  Returns the fd or -errno (err filled). */
int net_connect(const struct config_addr *addr, uint64_t timeout_ms, char *err, size_t errlen);

/* Receive/send timeouts, TCP_NODELAY and keepalive for a replication socket. */
void net_tune(int fd, uint64_t rcv_timeout_ms);

/* A send blocked for longer than ms fails (EAGAIN): a peer that stops
 * reading cannot wedge the sender. */
void net_send_timeout(int fd, uint64_t ms);

/* Connect to the daemon's status socket at path.  Returns the fd or -errno. */
int net_unix_connect(const char *path);

#endif
