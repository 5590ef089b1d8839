/*
 * qmppeer.h - a fake QMP peer for the tests of the QMP client and of the
 * device-model checkpoint (test_qmp.c, test_dmstate.c): a thread listening
 * on a unix socket in the test's directory plays a script of what QEMU
 * would send, records what the client sent (and any fd passed with it),
 * and checks it.
 */
#ifndef TANDEM_TESTS_QMPPEER_H
#define TANDEM_TESTS_QMPPEER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct qmp;

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, " \
	"\"package\": \"Debian 1:7.2+dfsg-7+deb12u18\"}, \"capabilities\": [\"oob\"]}}\r\n"
#define EV(name) "{\"timestamp\": {\"seconds\": 1765000000, \"microseconds\": 1234}, " \
	"\"event\": \"" name "\"}\r\n"

#define PEER_CMDS 16

struct peer {
	char path[256];
	int lfd, fd;
	void (*script)(struct peer *);
	pthread_t thr;
	char cmd[PEER_CMDS][1024];	/* what the client sent, in order */
	int cmd_fd[PEER_CMDS];		/* the fd that came with each, or -1 */
	int64_t cmd_id[PEER_CMDS];
	int ncmd;			/* commands received */
	bool wrap;			/* past PEER_CMDS, reuse the slots (else fail) */
	int arg;			/* for scripts that vary */
};

/* Send s / a formatted message to the client. */
void psend(struct peer *p, const char *s);
void psendf(struct peer *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* One command line from the client, byte by byte with recvmsg so an fd
 * on any byte is caught: its index in p->cmd, or -1 at EOF. */
int precv(struct peer *p);

/* Receive a command, which must be `execute` (else the test fails); its index. */
int pexpect(struct peer *p, const char *execute);

/* Answer command i with {"return": value, "id": its id}. */
void preturn(struct peer *p, int i, const char *value);

/* The greeting, then qmp_capabilities answered. */
void pgreet(struct peer *p);

/* Read until the client hangs up. */
void pdrain(struct peer *p);

/* Listen on TMPDIR/qmp.sock and run script(p) on the first connection, in
 * a thread; p->arg = arg. */
struct peer *peer_start(void (*script)(struct peer *), int arg);

/* Wait for the script to end; close the fds the client passed; free p. */
void peer_join(struct peer *p);

/* qmp_open on the peer's socket, which must succeed within 2 s. */
struct qmp *popen_ok(struct peer *p);

#endif
