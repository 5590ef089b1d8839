/*
 * gate.c - the backup's door on the replication port (see gate.h).
 *
 * One acceptor thread polls the listening socket every 50 ms, accepts
 * everything pending, and gives each connection a slot and a thread that
 * runs the handshake.  The acceptor also enforces each slot's deadline
 * (shutdown() wakes a handshake that a slow or silent peer keeps in a
 * read) and joins finished threads.  Refusals are logged per source at
 * most once per GATE_LOG_NS, with counts.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LOG_MODULE "gate"
#include "../lib/key.h"
#include "../lib/log.h"
#include "../lib/net.h"
#include "../lib/util.h"
#include "gate.h"

#define GATE_LOG_NS (10ull * 1000000000ull)
#define GATE_SOURCES 32

struct slot {
	struct gate *g;
	bool used, done;
	int fd;
	char src[NI_MAXHOST + 8];	/* "ADDR:PORT" */
	char host[NI_MAXHOST];
	uint64_t deadline_ns;
	bool expired;
	pthread_t thr;
};

/* Per-address log throttle. */
struct source {
	char host[NI_MAXHOST];
	uint64_t last_log_ns, unlogged;
};

struct gate {
	int listen_fd;
	struct channel_params cp;
	uint64_t deadline_ms;
	gate_arrived_fn fn;
	void *arg;

	pthread_t thr;
	pthread_mutex_t lock;
	bool stop;
	struct slot slots[GATE_MAX];
	struct source sources[GATE_SOURCES];
	unsigned next_source;
	struct gate_stats st;
};

/* Log `what` about a connection from host, at most once per GATE_LOG_NS
 * per address (lock held). */
static void note_locked(struct gate *g, const char *host, const char *what)
{
	struct source *s = NULL;
	uint64_t now = now_ns();

	for (unsigned i = 0; i < GATE_SOURCES; i++)
		if (!strcmp(g->sources[i].host, host)) {
			s = &g->sources[i];
			break;
		}
	if (!s) {
		s = &g->sources[g->next_source++ % GATE_SOURCES];
		memset(s, 0, sizeof(*s));
		snprintf(s->host, sizeof(s->host), "%s", host);
	}
	if (s->last_log_ns && now - s->last_log_ns < GATE_LOG_NS) {
		s->unlogged++;
		return;
	}
	if (s->unlogged)
		log_warn("%s (and %" PRIu64 " more from %s since the last report)", what,
			 s->unlogged, host);
	else
		log_warn("%s", what);
	s->last_log_ns = now;
	s->unlogged = 0;
}

static void *handshake_main(void *arg)
{
	struct slot *sl = arg;
	struct gate *g = sl->g;
	struct channel *ch = NULL;
	char err[512], msg[2048];
	int rc;

	rc = channel_handshake(sl->fd, &g->cp, &ch, err, sizeof(err));
	pthread_mutex_lock(&g->lock);
	if (rc) {
		if (sl->expired) {
			g->st.timed_out++;
			snprintf(msg, sizeof(msg), "refused a connection from %s: no handshake within "
				 "%" PRIu64 " ms", sl->src, g->deadline_ms);
		} else {
			g->st.failed++;
			snprintf(msg, sizeof(msg), "refused a connection from %s: %s", sl->src, err);
		}
		note_locked(g, sl->host, msg);
		close(sl->fd);
	} else {
		g->st.authenticated++;
	}
	sl->fd = -1;
	pthread_mutex_unlock(&g->lock);
	if (!rc)
		g->fn(g->arg, ch, sl->src);
	pthread_mutex_lock(&g->lock);
	sl->done = true;
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

/* Join finished handshakes, wake expired ones (lock held). */
static void tend_locked(struct gate *g)
{
	uint64_t now = now_ns();

	for (unsigned i = 0; i < GATE_MAX; i++) {
		struct slot *sl = &g->slots[i];

		if (!sl->used)
			continue;
		if (sl->done) {
			pthread_mutex_unlock(&g->lock);
			pthread_join(sl->thr, NULL);
			pthread_mutex_lock(&g->lock);
			sl->used = false;
			g->st.in_progress--;
		} else if (!sl->expired && sl->fd >= 0 && (now > sl->deadline_ns || g->stop)) {
			sl->expired = true;
			shutdown(sl->fd, SHUT_RDWR);
		}
	}
}

/*
 * Every slot is taken and this source has few: end the oldest handshake of
 * the source that holds the most, so that no few sources can keep the
 * door shut for others.  Returns a slot that is free once tend_locked has
 * joined it, or NULL (lock held).
 */
static struct slot *evict_locked(struct gate *g)
{
	struct slot *victim = NULL;
	unsigned most = 0;

	for (unsigned i = 0; i < GATE_MAX; i++) {
		struct slot *sl = &g->slots[i];
		unsigned n = 0;

		if (!sl->used || sl->done || sl->expired || sl->fd < 0)
			continue;
		for (unsigned j = 0; j < GATE_MAX; j++)
			n += g->slots[j].used && !g->slots[j].done &&
			     !strcmp(g->slots[j].host, sl->host);
		if (n > most || (n == most && victim && sl->deadline_ns < victim->deadline_ns)) {
			most = n;
			victim = sl;
		}
	}
	if (!victim || most < 2)
		return NULL;
	victim->expired = true;
	shutdown(victim->fd, SHUT_RDWR);
	/* its thread ends and frees the slot; the newcomer waits for none:
	 * refuse it this time only if no slot frees within a moment */
	for (int spin = 0; spin < 50; spin++) {
		tend_locked(g);
		for (unsigned i = 0; i < GATE_MAX; i++)
			if (!g->slots[i].used)
				return &g->slots[i];
		pthread_mutex_unlock(&g->lock);
		usleep(200);
		pthread_mutex_lock(&g->lock);
	}
	return NULL;
}

/* Take one accepted connection (lock held). */
static void admit_locked(struct gate *g, int fd, const struct sockaddr_storage *ss, socklen_t sl_len)
{
	char host[NI_MAXHOST] = "?", port[NI_MAXSERV] = "?", msg[NI_MAXHOST + 200];
	struct slot *free_slot = NULL;
	unsigned from_host = 0;

	getnameinfo((const struct sockaddr *)ss, sl_len, host, sizeof(host), port, sizeof(port),
		    NI_NUMERICHOST | NI_NUMERICSERV);
	g->st.accepted++;
	for (unsigned i = 0; i < GATE_MAX; i++) {
		struct slot *sl = &g->slots[i];
		if (!sl->used && !free_slot)
			free_slot = sl;
		else if (sl->used && !sl->done && !strcmp(sl->host, host))
			from_host++;
	}
	if (!free_slot && from_host < GATE_PER_SOURCE)
		free_slot = evict_locked(g);
	if (!free_slot || from_host >= GATE_PER_SOURCE) {
		g->st.refused_busy++;
		if (free_slot)
			snprintf(msg, sizeof(msg), "refused a connection from %s:%s at once: it has %d "
				 "handshakes in progress already", host, port, GATE_PER_SOURCE);
		else
			snprintf(msg, sizeof(msg), "refused a connection from %s:%s at once: %d "
				 "handshakes are in progress", host, port, GATE_MAX);
		note_locked(g, host, msg);
		close(fd);
		return;
	}
	memset(free_slot, 0, sizeof(*free_slot));
	free_slot->g = g;
	free_slot->used = true;
	free_slot->fd = fd;
	snprintf(free_slot->host, sizeof(free_slot->host), "%s", host);
	snprintf(free_slot->src, sizeof(free_slot->src), "%s:%s", host, port);
	free_slot->deadline_ns = now_ns() + g->deadline_ms * 1000000ull;
	net_tune(fd, g->deadline_ms);
	log_debug("connection from %s: handshaking", free_slot->src);
	if (pthread_create(&free_slot->thr, NULL, handshake_main, free_slot)) {
		close(fd);
		free_slot->used = false;
		return;
	}
	g->st.in_progress++;
}

static void *gate_main(void *arg)
{
	struct gate *g = arg;

	pthread_mutex_lock(&g->lock);
	while (!g->stop) {
		struct pollfd pfd = { g->listen_fd, POLLIN, 0 };

		tend_locked(g);
		pthread_mutex_unlock(&g->lock);
		poll(&pfd, 1, 50);
		pthread_mutex_lock(&g->lock);
		while (!g->stop && (pfd.revents & POLLIN)) {
			struct sockaddr_storage ss;
			socklen_t len = sizeof(ss);
			int fd = accept4(g->listen_fd, (struct sockaddr *)&ss, &len,
					 SOCK_CLOEXEC | SOCK_NONBLOCK);

			if (fd < 0)
				break;
			/* handshakes block (with a receive timeout) */
			{
				int fl = fcntl(fd, F_GETFL);
				fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
			}
			admit_locked(g, fd, &ss, len);
		}
	}
	/* stopping: wake every handshake, then join them */
	for (;;) {
		bool any = false;

		tend_locked(g);
		for (unsigned i = 0; i < GATE_MAX; i++)
			any |= g->slots[i].used;
		if (!any)
			break;
		pthread_mutex_unlock(&g->lock);
		usleep(1000);
		pthread_mutex_lock(&g->lock);
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int gate_start(struct gate **out, int listen_fd, const struct channel_params *cp,
	       uint64_t deadline_ms, gate_arrived_fn fn, void *arg)
{
	struct gate *g = calloc(1, sizeof(*g));

	*out = NULL;
	if (!g)
		return -ENOMEM;
	g->listen_fd = listen_fd;
	/* accept everything pending without ever blocking (with the lock) */
	fcntl(listen_fd, F_SETFL, fcntl(listen_fd, F_GETFL) | O_NONBLOCK);
	g->cp = *cp;
	g->deadline_ms = deadline_ms;
	g->fn = fn;
	g->arg = arg;
	pthread_mutex_init(&g->lock, NULL);
	if (pthread_create(&g->thr, NULL, gate_main, g)) {
		pthread_mutex_destroy(&g->lock);
		free(g);
		return -EAGAIN;
	}
	pthread_setname_np(g->thr, "tandem-gate");
	*out = g;
	return 0;
}

void gate_stop(struct gate *g)
{
	if (!g)
		return;
	pthread_mutex_lock(&g->lock);
	g->stop = true;
	pthread_mutex_unlock(&g->lock);
	pthread_join(g->thr, NULL);
	pthread_mutex_destroy(&g->lock);
	explicit_bzero(g->cp.key, sizeof(g->cp.key));
	free(g);
}

void gate_get_stats(struct gate *g, struct gate_stats *st)
{
	pthread_mutex_lock(&g->lock);
	*st = g->st;
	pthread_mutex_unlock(&g->lock);
}
