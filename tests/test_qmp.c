/*
 * test_qmp.c - the QMP client (domain/qmp.h) against a fake QMP peer: a
 * thread listening on a unix socket in the test's directory that plays a
 * script of what QEMU would send, records what the client sent (and any
 * fd passed with it), and checks it.  Plus the message reader on its own
 * and libxl's lock protocol.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../domain/qmp.h"
#include "../lib/util.h"
#include "qmppeer.h"
#include "test.h"

/* ---- the message reader ---- */

static int parse(const char *s, struct qmp__msg *m)
{
	size_t used = 0;
	int rc = qmp__parse(s, strlen(s), &used, m);

	if (rc == 0)
		ASSERT(used > 0 && used <= strlen(s));
	return rc;
}

int test_qmp_json_reader(void)
{
	struct qmp__msg m;
	size_t used;
	char big[200], quoted[300], buf[600];
	int64_t v;

	/* the four kinds */
	ASSERT_EQ(parse(GREETING, &m), 0);
	ASSERT_EQ(m.kind, QMP__GREETING);
	ASSERT_EQ(m.major, 7);
	ASSERT_EQ(m.minor, 2);
	ASSERT_EQ(m.micro, 22);
	{
		const char *ret = "{\"status\": \"paused\", \"running\": false}";
		char msg[128];

		snprintf(msg, sizeof(msg), "{\"return\": %s, \"id\": 42}", ret);
		ASSERT_EQ(parse(msg, &m), 0);
		ASSERT_EQ(m.kind, QMP__RETURN);
		ASSERT_EQ(m.id_kind, 1);
		ASSERT_EQ(m.id, 42);
		ASSERT_EQ(m.ret_off, 11);
		ASSERT_EQ(m.ret_len, strlen(ret));
		ASSERT(!strncmp(msg + m.ret_off, ret, m.ret_len));
	}
	ASSERT_EQ(parse(EV("STOP"), &m), 0);
	ASSERT_EQ(m.kind, QMP__EVENT);
	ASSERT(!strcmp(m.name, "STOP"));
	ASSERT_EQ(m.id_kind, 0);
	ASSERT_EQ(parse("{\"id\": 7, \"error\": {\"class\": \"GenericError\", "
			"\"desc\": \"caf\\u00e9 \\\"x\\\"\\n\\ud83d\\ude00\"}}", &m), 0);
	ASSERT_EQ(m.kind, QMP__ERROR);
	ASSERT(!strcmp(m.name, "GenericError"));
	/* non-ASCII and control characters are shown as '?' (é is 2 bytes, the emoji 4) */
	ASSERT(!strcmp(m.desc, "caf?? \"x\"?????"));
	/* lone surrogates, at the end of a string or before another escape */
	ASSERT_EQ(parse("{\"error\": {\"class\": \"\\ud83d\", \"desc\": \"\\udc00\\ud83d\\n\"}}", &m), 0);
	ASSERT(!strcmp(m.name, "???"));
	ASSERT(!strcmp(m.desc, "???????"));
	/* ids: a string id is not ours, an integer one must fit */
	ASSERT_EQ(parse("{\"return\": {}, \"id\": \"7\"}", &m), 0);
	ASSERT_EQ(m.id_kind, 2);
	ASSERT_EQ(parse("{\"return\": {}, \"id\": 99999999999999999999}", &m), 0);
	ASSERT_EQ(m.id_kind, 2);
	ASSERT_EQ(parse("{\"return\": {}, \"id\": 1.0}", &m), 0);
	ASSERT_EQ(m.id_kind, 2);
	ASSERT_EQ(parse("{\"return\": {}, \"id\": -3}", &m), 0);
	ASSERT_EQ(m.id_kind, 1);
	ASSERT_EQ(m.id, -3);
	/* two messages back to back: the first, then the second */
	{
		const char *two = "  {\"return\": 1, \"id\": 1}\r\n{\"return\": 2, \"id\": 2}";

		ASSERT_EQ(qmp__parse(two, strlen(two), &used, &m), 0);
		ASSERT_EQ(m.id, 1);
		ASSERT_EQ(qmp__parse(two + used, strlen(two) - used, &used, &m), 0);
		ASSERT_EQ(m.id, 2);
	}

	/* every proper prefix of a message is incomplete, never an error */
	{
		const char *msgs[] = { GREETING, EV("RESUME"),
			"{\"return\": [1, -2.5e+3, true, false, null, \"a\\\\b\\u0041\", {}], \"id\": 3}",
			"{\"error\": {\"class\": \"C\", \"desc\": \"d\"}, \"id\": 9}" };

		for (size_t k = 0; k < ARRAY_SIZE(msgs); k++) {
			size_t n = strlen(msgs[k]);

			while (n && (msgs[k][n - 1] == '\n' || msgs[k][n - 1] == '\r'))
				n--;
			for (size_t i = 0; i < n; i++) {
				int rc = qmp__parse(msgs[k], i, &used, &m);

				if (rc != -EAGAIN)
					FAILF("prefix %zu of message %zu: %d, expected -EAGAIN", i, k, rc);
			}
			ASSERT_EQ(qmp__parse(msgs[k], n, &used, &m), 0);
			ASSERT_EQ(used, n);
		}
	}

	/* malformed JSON, or JSON that is not a QMP message */
	{
		const char *bad[] = {
			"[1, 2]", "\"QMP\"", "x", "{\"return\": {]}, \"id\": 1}",
			"{\"return\": 01, \"id\": 1}", "{\"return\": tru, \"id\": 1}",
			"{\"return\": 1,, \"id\": 1}", "{\"return\" 1}", "{'return': 1}",
			"{\"return\": \"a\x01\"}", "{\"return\": \"\\x\"}", "{\"return\": \"\\u12G4\"}",
			"{\"return\": 1.}", "{\"return\": -}", "{\"return\": 1e}",
			"{\"return\": {}, \"return\": {}}", "{\"return\": {}, \"error\": {}}",
			"{\"id\": 1}", "{}", "{\"event\": 5}", "{\"error\": {\"class\": \"C\"}}",
			"{\"error\": \"no\"}", "{\"QMP\": {\"version\": {}}}",
			"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 7, \"minor\": 2, \"micro\": 0}}, "
			"\"capabilities\": {}}}",
			"{\"QMP\": {\"version\": {\"qemu\": {\"major\": \"7\", \"minor\": 2, \"micro\": 0}}, "
			"\"capabilities\": []}}",
			"{\"return\": [1 2]}", "{\"return\": 1 \"id\": 2}",
		};

		for (size_t k = 0; k < ARRAY_SIZE(bad); k++) {
			int rc = parse(bad[k], &m);

			if (rc != -EPROTO)
				FAILF("%s: %d, expected -EPROTO", bad[k], rc);
		}
	}

	/* nesting and size bounds */
	{
		char deep[200];
		size_t n = 0;

		n += (size_t)snprintf(deep, sizeof(deep), "{\"return\": ");
		for (int i = 0; i < QMP_DEPTH_MAX; i++)
			deep[n++] = '[';
		deep[n] = '\0';
		ASSERT_EQ(parse(deep, &m), -EMSGSIZE);
		n = (size_t)snprintf(deep, sizeof(deep), "{\"return\": ");
		for (int i = 0; i < QMP_DEPTH_MAX - 1; i++)
			deep[n++] = '[';
		for (int i = 0; i < QMP_DEPTH_MAX - 1; i++)
			deep[n++] = ']';
		n += (size_t)snprintf(deep + n, sizeof(deep) - n, ", \"id\": 1}");
		ASSERT_EQ(parse(deep, &m), 0);
	}
	{
		size_t n = QMP_MSG_MAX + 100;
		char *huge = malloc(n + 1);

		ASSERT(huge);
		memset(huge, ' ', n);
		memcpy(huge, "{\"return\": \"", 12);
		huge[n] = '\0';
		ASSERT_EQ(qmp__parse(huge, n, &used, &m), -EMSGSIZE);
		ASSERT_EQ(qmp__parse(huge, QMP_MSG_MAX - 1, &used, &m), -EAGAIN);
		free(huge);
	}

	/* members of a return value */
	ASSERT_EQ(qmp__object_int("{\"fd\": 25, \"fdset-id\": 3}", 26, "fdset-id", &v), 0);
	ASSERT_EQ(v, 3);
	ASSERT_EQ(qmp__object_int("{\"fd\": 25}", 10, "fdset-id", &v), -ENOENT);
	ASSERT_EQ(qmp__object_int("{\"fdset-id\": \"3\"}", 17, "fdset-id", &v), -EPROTO);
	ASSERT_EQ(qmp__object_int("{\"fdset-id\": 1, \"fdset-id\": 2}", 30, "fdset-id", &v), -EPROTO);

	/* quoting round-trips through the reader */
	ASSERT_EQ(qmp_json_quote("/dev/fdset/\"3\"\\\n\x01", quoted, sizeof(quoted)), 0);
	ASSERT(!strcmp(quoted, "\"/dev/fdset/\\\"3\\\"\\\\\\u000a\\u0001\""));
	snprintf(buf, sizeof(buf), "{\"error\": {\"class\": %s, \"desc\": \"\"}}", quoted);
	ASSERT_EQ(parse(buf, &m), 0);
	ASSERT(!strcmp(m.name, "/dev/fdset/\"3\"\\??"));
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ASSERT_EQ(qmp_json_quote(big, quoted, 100), -ENOSPC);
	return TEST_OK;
}

/* ---- a session ---- */

static void script_session(struct peer *p)
{
	int i;

	pgreet(p);
	preturn(p, pexpect(p, "stop"), "{}");
	preturn(p, pexpect(p, "xen-set-global-dirty-log"), "{}");
	preturn(p, pexpect(p, "xen-save-devices-state"), "{}");
	i = pexpect(p, "query-status");
	psendf(p, "{\"return\": {\"status\": \"paused\", \"singlestep\": false, \"running\": false}, "
	       "\"id\": %lld}\n", (long long)p->cmd_id[i]);
	preturn(p, pexpect(p, "cont"), "{}");
	pdrain(p);
}

int test_qmp_session(void)
{
	struct peer *p = peer_start(script_session, 0);
	struct qmp *q = popen_ok(p);
	char reply[256];
	int major, minor, micro;

	qmp_version(q, &major, &minor, &micro);
	ASSERT_EQ(major, 7);
	ASSERT_EQ(minor, 2);
	ASSERT_EQ(micro, 22);
	ASSERT_EQ(qmp_stop(q, 1000), 0);
	ASSERT_EQ(qmp_set_global_dirty_log(q, true, 1000), 0);
	ASSERT_EQ(qmp_save_devices_state(q, "/dev/fdset/3", false, 1000), 0);
	ASSERT_EQ(qmp_command(q, 1000, reply, sizeof(reply), "query-status", NULL), 0);
	ASSERT(!strcmp(reply, "{\"status\": \"paused\", \"singlestep\": false, \"running\": false}"));
	ASSERT_EQ(qmp_cont(q, 1000), 0);
	ASSERT(!strcmp(qmp_error(q), ""));
	/* bad arguments are refused before anything is sent */
	ASSERT_EQ(qmp_command(q, 1000, NULL, 0, "cont", "{\"a\": %d", 1), -EINVAL);
	ASSERT_EQ(qmp_command(q, 1000, NULL, 0, "cont", "[1]"), -EINVAL);
	ASSERT_EQ(qmp_command(q, 1000, NULL, 0, "co\"nt", NULL), -EINVAL);
	qmp_close(q);
	qmp_close(NULL);

	/* what the peer got: capabilities first, unique increasing ids, the arguments */
	ASSERT_EQ(p->ncmd, 6);
	ASSERT(!strcmp(p->cmd[0], "{\"execute\":\"qmp_capabilities\",\"id\":1}"));
	for (int i = 1; i < 6; i++)
		ASSERT_EQ(p->cmd_id[i], p->cmd_id[i - 1] + 1);
	ASSERT(!strcmp(p->cmd[1], "{\"execute\":\"stop\",\"id\":2}"));
	ASSERT_STR_CONTAINS(p->cmd[2], "\"arguments\":{\"enable\":true}");
	ASSERT_STR_CONTAINS(p->cmd[3], "\"arguments\":{\"filename\":\"/dev/fdset/3\",\"live\":false}");
	for (int i = 0; i < 6; i++)
		ASSERT_EQ(p->cmd_fd[i], -1);
	peer_join(p);
	return TEST_OK;
}

/* ---- events ---- */

static void script_events(struct peer *p)
{
	int i;

	psend(p, GREETING);
	i = pexpect(p, "qmp_capabilities");
	preturn(p, i, "{}");
	i = pexpect(p, "stop");
	psend(p, EV("STOP"));
	/* an event split across writes */
	psend(p, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"ev");
	test_sleep_ms(30);
	/* braces and an escaped quote inside a string do not end it */
	psend(p, "ent\": \"STOP\", \"data\": {\"reason\": \"\\\"}}]\"}}\n");
	preturn(p, i, "{}");
	i = pexpect(p, "cont");
	/* the reply and an event in one write, the event first */
	psendf(p, EV("RESUME") "{\"return\": {}, \"id\": %lld}\r\n" EV("BLOCK_IO_ERROR"),
	       (long long)p->cmd_id[i]);
	i = pexpect(p, "query-status");
	preturn(p, i, "{\"status\": \"running\"}");
	pdrain(p);
}

int test_qmp_events_interleaved(void)
{
	struct peer *p = peer_start(script_events, 0);
	struct qmp *q = popen_ok(p);
	char reply[64];

	ASSERT_EQ(qmp_stop(q, 1000), 0);
	ASSERT_EQ(qmp_event_count(q, "STOP"), 2);
	ASSERT_EQ(qmp_event_count(q, "RESUME"), 0);
	ASSERT_EQ(qmp_cont(q, 1000), 0);
	ASSERT_EQ(qmp_event_count(q, "RESUME"), 1);
	/* the event after cont's reply is read with the next command's */
	ASSERT_EQ(qmp_command(q, 1000, reply, sizeof(reply), "query-status", NULL), 0);
	ASSERT(!strcmp(reply, "{\"status\": \"running\"}"));
	ASSERT_EQ(qmp_event_count(q, "BLOCK_IO_ERROR"), 1);
	ASSERT_EQ(qmp_event_count(q, NULL), 4);
	qmp_events_clear(q);
	ASSERT_EQ(qmp_event_count(q, NULL), 0);
	ASSERT_EQ(qmp_event_count(q, "STOP"), 0);
	qmp_close(q);
	peer_join(p);
	return TEST_OK;
}

/* ---- error replies ---- */

static void script_errors(struct peer *p)
{
	int i;

	pgreet(p);
	i = pexpect(p, "xen-save-devices-state");
	psendf(p, "{\"id\": %lld, \"error\": {\"class\": \"GenericError\", "
	       "\"desc\": \"failed to open file '/dev/fdset/9': No such file or directory\"}}\r\n",
	       (long long)p->cmd_id[i]);
	/* the session is still in step: the next command works */
	preturn(p, pexpect(p, "cont"), "{}");
	/* an error without id: QEMU could not read the command */
	pexpect(p, "stop");
	psend(p, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, "
	      "invalid keyword 'x'\"}}\r\n");
	pdrain(p);
}

int test_qmp_error_reply(void)
{
	struct peer *p = peer_start(script_errors, 0);
	struct qmp *q = popen_ok(p);

	ASSERT_EQ(qmp_save_devices_state(q, "/dev/fdset/9", false, 1000), -EREMOTEIO);
	ASSERT_STR_CONTAINS(qmp_error(q), "xen-save-devices-state");
	ASSERT_STR_CONTAINS(qmp_error(q), "GenericError");
	ASSERT_STR_CONTAINS(qmp_error(q), "failed to open file '/dev/fdset/9'");
	ASSERT_EQ(qmp_cont(q, 1000), 0);
	ASSERT(!strcmp(qmp_error(q), ""));
	ASSERT_EQ(qmp_stop(q, 1000), -EPROTO);
	ASSERT_STR_CONTAINS(qmp_error(q), "JSON parse error");
	ASSERT_EQ(qmp_cont(q, 1000), -ENOTCONN);
	qmp_close(q);
	peer_join(p);
	return TEST_OK;
}

/* ---- silence ---- */

static void script_silent(struct peer *p)
{
	pgreet(p);
	pexpect(p, "stop");
	pdrain(p);	/* no answer, ever */
}

/* After capabilities, events every 40 ms, but no reply. */
static void script_trickle(struct peer *p)
{
	int flags;

	pgreet(p);
	pexpect(p, "stop");
	flags = fcntl(p->fd, F_GETFL);
	fcntl(p->fd, F_SETFL, flags | O_NONBLOCK);
	for (;;) {
		char c;

		if (send(p->fd, EV("STOP"), strlen(EV("STOP")), MSG_NOSIGNAL) < 0)
			break;
		if (read(p->fd, &c, 1) == 0)
			break;	/* the client hung up */
		test_sleep_ms(40);
	}
}

static void script_no_greeting(struct peer *p)
{
	pdrain(p);
}

int test_qmp_timeout(void)
{
	char err[QMP_ERROR_MAX];
	struct peer *p;
	struct qmp *q;
	uint64_t t0, dt;
	int rc;

	/* a silent QEMU: the command's bound, measured */
	p = peer_start(script_silent, 0);
	q = popen_ok(p);
	t0 = test_now_ms();
	ASSERT_EQ(qmp_stop(q, 300), -ETIMEDOUT);
	dt = test_now_ms() - t0;
	printf("  silent: -ETIMEDOUT after %llu ms (bound 300)\n", (unsigned long long)dt);
	ASSERT(dt >= 300 && dt < 1300);
	ASSERT_STR_CONTAINS(qmp_error(q), "no answer from QEMU within 300 ms");
	ASSERT_STR_CONTAINS(qmp_error(q), "`stop`");
	/* a late reply could no longer be matched: the session is done */
	ASSERT_EQ(qmp_cont(q, 300), -ENOTCONN);
	qmp_close(q);
	peer_join(p);

	/* events that keep coming do not stretch the bound: it is the
	 * whole command's, not per read */
	p = peer_start(script_trickle, 0);
	q = popen_ok(p);
	t0 = test_now_ms();
	ASSERT_EQ(qmp_stop(q, 300), -ETIMEDOUT);
	dt = test_now_ms() - t0;
	printf("  trickling events: -ETIMEDOUT after %llu ms (bound 300), %u events\n",
	       (unsigned long long)dt, qmp_event_count(q, "STOP"));
	ASSERT(dt >= 300 && dt < 1300);
	ASSERT(qmp_event_count(q, "STOP") >= 2);
	qmp_close(q);
	peer_join(p);

	/* no greeting: qmp_open's bound (QEMU serving another client looks so) */
	p = peer_start(script_no_greeting, 0);
	t0 = test_now_ms();
	q = (struct qmp *)1;
	rc = qmp_open(p->path, NULL, 250, &q, err, sizeof(err));
	dt = test_now_ms() - t0;
	ASSERT_EQ(rc, -ETIMEDOUT);
	ASSERT(q == NULL);
	ASSERT_STR_CONTAINS(err, "greeting");
	ASSERT(dt >= 250 && dt < 1250);
	peer_join(p);

	/* nobody listening: retried (as libxl does) until the bound */
	{
		char path[300];

		snprintf(path, sizeof(path), "%s/nobody.sock", test_tmpdir());
		t0 = test_now_ms();
		rc = qmp_open(path, NULL, 150, &q, err, sizeof(err));
		dt = test_now_ms() - t0;
		ASSERT_EQ(rc, -ENOENT);
		ASSERT_STR_CONTAINS(err, "is the guest's QEMU running?");
		ASSERT(dt >= 150 && dt < 1150);
	}
	return TEST_OK;
}

/* ---- malformed and mismatched replies ---- */

static void script_bad_reply(struct peer *p)
{
	int i;

	pgreet(p);
	i = pexpect(p, "stop");
	switch (p->arg) {
	case 0:		/* malformed JSON */
		psendf(p, "{\"return\": {]}, \"id\": %lld}\r\n", (long long)p->cmd_id[i]);
		break;
	case 1:		/* not an object */
		psend(p, "[\"return\"]\r\n");
		break;
	case 2:		/* the wrong id */
		psendf(p, "{\"return\": {}, \"id\": %lld}\r\n", (long long)p->cmd_id[i] + 1);
		break;
	case 3:		/* an id of another type */
		psendf(p, "{\"return\": {}, \"id\": \"%lld\"}\r\n", (long long)p->cmd_id[i]);
		break;
	case 4:		/* no id */
		psend(p, "{\"return\": {}}\r\n");
		break;
	case 5:		/* a second greeting */
		psend(p, GREETING);
		break;
	case 6:		/* hang up */
		return;
	}
	pdrain(p);
}

int test_qmp_malformed(void)
{
	static const struct {
		int rc;
		const char *text;
	} want[] = {
		{ -EPROTO, "malformed JSON" },
		{ -EPROTO, "not a QMP message" },
		{ -EPROTO, "answered id 3 while we waited for id 2" },
		{ -EPROTO, "a non-integer id" },
		{ -EPROTO, "with no id" },
		{ -EPROTO, "greeted again" },
		{ -ECONNRESET, "closed the QMP connection" },
	};

	for (int k = 0; k < (int)ARRAY_SIZE(want); k++) {
		struct peer *p = peer_start(script_bad_reply, k);
		struct qmp *q = popen_ok(p);
		int rc = qmp_stop(q, 1000);

		if (rc != want[k].rc)
			FAILF("case %d: %d, expected %d (%s)", k, rc, want[k].rc, qmp_error(q));
		ASSERT_STR_CONTAINS(qmp_error(q), want[k].text);
		ASSERT_EQ(qmp_cont(q, 100), -ENOTCONN);
		qmp_close(q);
		peer_join(p);
	}
	return TEST_OK;
}

/* ---- size bounds ---- */

static void script_huge(struct peer *p)
{
	size_t n = QMP_MSG_MAX + 4096;
	char *big = malloc(n + 1);
	int i;

	ASSERT(big);
	pgreet(p);
	/* a complete reply, bigger than the caller's buffer */
	i = pexpect(p, "query-commands");
	memset(big, 'x', 2000);
	big[2000] = '\0';
	psendf(p, "{\"return\": [\"%s\"], \"id\": %lld}\r\n", big, (long long)p->cmd_id[i]);
	/* still in step */
	preturn(p, pexpect(p, "cont"), "{}");
	/* a reply that never ends within the bound */
	pexpect(p, "stop");
	memset(big, ' ', n);
	memcpy(big, "{\"return\": \"", 12);
	big[n] = '\0';
	(void)write_full(p->fd, big, n);	/* the client may hang up midway */
	free(big);
	pdrain(p);
}

int test_qmp_huge_reply(void)
{
	struct peer *p = peer_start(script_huge, 0);
	struct qmp *q = popen_ok(p);
	char reply[1024];
	uint64_t t0, dt;

	ASSERT_EQ(qmp_command(q, 1000, reply, sizeof(reply), "query-commands", NULL), -ENOBUFS);
	ASSERT_STR_CONTAINS(qmp_error(q), "2004 bytes");
	ASSERT_EQ(qmp_cont(q, 1000), 0);
	t0 = test_now_ms();
	ASSERT_EQ(qmp_stop(q, 3000), -EMSGSIZE);
	dt = test_now_ms() - t0;
	ASSERT(dt < 2500);	/* refused at the bound, not timed out */
	ASSERT_STR_CONTAINS(qmp_error(q), "longer than 65536 bytes");
	ASSERT_EQ(qmp_cont(q, 100), -ENOTCONN);
	qmp_close(q);
	peer_join(p);
	return TEST_OK;
}

/* ---- fd passing ---- */

static void script_fds(struct peer *p)
{
	static const char state[] = "QEVM device state";
	int i;

	pgreet(p);
	/* add-fd: the fd comes with the command; QEMU writes the state to it */
	i = pexpect(p, "add-fd");
	if (p->cmd_fd[i] < 0)
		FAILF("peer: add-fd came without an fd");
	if (write_full(p->cmd_fd[i], state, sizeof(state) - 1) != 0)
		FAILF("peer: write to the passed fd: %s", strerror(errno));
	preturn(p, i, "{\"fdset-id\": 3, \"fd\": 25}");
	preturn(p, pexpect(p, "xen-save-devices-state"), "{}");
	preturn(p, pexpect(p, "remove-fd"), "{}");
	/* getfd */
	i = pexpect(p, "getfd");
	if (p->cmd_fd[i] < 0)
		FAILF("peer: getfd came without an fd");
	if (write_full(p->cmd_fd[i], "named", 5) != 0)
		FAILF("peer: write to the named fd: %s", strerror(errno));
	preturn(p, i, "{}");
	/* add-fd answered without fdset-id */
	preturn(p, pexpect(p, "add-fd"), "{\"fd\": 26}");
	pdrain(p);
}

int test_qmp_fd_passing(void)
{
	struct peer *p = peer_start(script_fds, 0);
	struct qmp *q = popen_ok(p);
	int pfd[2], pfd2[2];
	int64_t fdset = -1;
	char got[64] = { 0 };

	ASSERT(pipe(pfd) == 0);
	ASSERT(pipe(pfd2) == 0);
	ASSERT_EQ(qmp_add_fd(q, pfd[1], 1000, &fdset), 0);
	ASSERT_EQ(fdset, 3);
	close(pfd[1]);	/* the caller's copy; the peer holds its own */
	ASSERT_EQ(qmp_save_devices_state(q, "/dev/fdset/3", false, 1000), 0);
	ASSERT_EQ(qmp_remove_fd(q, fdset, 1000), 0);
	ASSERT_EQ(qmp_getfd(q, pfd2[1], "dm-state", 1000), 0);
	close(pfd2[1]);
	ASSERT_EQ(qmp_add_fd(q, pfd2[0], 1000, &fdset), -EPROTO);
	ASSERT_STR_CONTAINS(qmp_error(q), "no fdset-id");
	ASSERT_EQ(qmp_command_fd(q, -1, 1000, NULL, 0, "getfd", NULL), -EBADF);
	qmp_close(q);
	peer_join(p);	/* closes the peer's copies of the fds */

	/* what the peer wrote to the fds it was passed */
	ASSERT_EQ(read_full(pfd[0], got, 17), 0);
	ASSERT(!strcmp(got, "QEVM device state"));
	ASSERT_EQ(read(pfd[0], got, 1), 0);	/* and nothing more: every copy closed */
	memset(got, 0, sizeof(got));
	ASSERT_EQ(read_full(pfd2[0], got, 5), 0);
	ASSERT(!strcmp(got, "named"));
	close(pfd[0]);
	close(pfd2[0]);
	return TEST_OK;
}

/* ---- libxl's paths and lock ---- */

struct holder {
	const char *path;
	int fd;
	unsigned hold_ms, again_ms;
};

/*
 * Hold the lock hold_ms, then release it as libxl does (unlink, unlock).
 * With again_ms, another libxl gets in first: a new file at the path,
 * locked before the old one is unlocked, and held again_ms more; whoever
 * waited on the old file must see it is no longer the path's and wait on.
 */
static void *holder_main(void *arg)
{
	struct holder *h = arg;
	int fd2 = -1;

	test_sleep_ms(h->hold_ms);
	unlink(h->path);
	if (h->again_ms) {
		fd2 = open(h->path, O_RDWR | O_CREAT, 0666);
		if (fd2 < 0 || flock(fd2, LOCK_EX) < 0)
			FAILF("holder: %s", strerror(errno));
	}
	flock(h->fd, LOCK_UN);
	close(h->fd);
	if (fd2 >= 0) {
		test_sleep_ms(h->again_ms);
		unlink(h->path);
		flock(fd2, LOCK_UN);
		close(fd2);
	}
	return NULL;
}

static void script_greet_drain(struct peer *p)
{
	pgreet(p);
	pdrain(p);
}

int test_qmp_libxl_lock(void)
{
	static const uint8_t uuid[16] = { 0x5a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f, 0x60, 0x71,
					  0x82, 0x93, 0xa4, 0xb5, 0xc6, 0xd7, 0xe8, 0xf9 };
	char sock[128], lock[256], err[QMP_ERROR_MAX];
	struct holder h;
	struct peer *p;
	struct qmp *q;
	struct stat st;
	pthread_t thr;
	uint64_t t0, dt;
	int fd, rc;

	/* the places libxl uses (libxl_internal.h, libxl_dom.c) */
	ASSERT_EQ(qmp_libxl_socket_path(7, sock, sizeof(sock)), 0);
	ASSERT(!strcmp(sock, "/var/run/xen/qmp-libxl-7"));
	ASSERT_EQ(qmp_libxl_lock_path(12, uuid, lock, sizeof(lock)), 0);
	ASSERT(!strcmp(lock, "/var/lib/xen/userdata-l.12.5a1b2c3d-4e5f-6071-8293-a4b5c6d7e8f9."
		       "qmp-socket-lock"));
	ASSERT_EQ(qmp_libxl_lock_path(12, uuid, lock, 40), -ENAMETOOLONG);

	snprintf(lock, sizeof(lock), "%s/userdata-l.1.x.qmp-socket-lock", test_tmpdir());

	/* held by someone else all along: qmp_open gives up at its bound */
	fd = open(lock, O_RDWR | O_CREAT, 0666);
	ASSERT(fd >= 0);
	ASSERT(flock(fd, LOCK_EX) == 0);
	t0 = test_now_ms();
	rc = qmp_open("/nonexistent/qmp.sock", lock, 200, &q, err, sizeof(err));
	dt = test_now_ms() - t0;
	ASSERT_EQ(rc, -ETIMEDOUT);
	ASSERT_STR_CONTAINS(err, "held");
	ASSERT(dt >= 200 && dt < 1200);

	/* released (unlink, unlock) while we wait, and taken at once by
	 * another libxl on a new file: the file we opened is no longer the
	 * path's, so we wait on the new one, then QEMU is reached */
	h = (struct holder){ lock, fd, 150, 150 };
	t0 = test_now_ms();
	ASSERT(pthread_create(&thr, NULL, holder_main, &h) == 0);
	p = peer_start(script_greet_drain, 0);
	rc = qmp_open(p->path, lock, 3000, &q, err, sizeof(err));
	dt = test_now_ms() - t0;
	pthread_join(thr, NULL);
	if (rc)
		FAILF("qmp_open: %d (%s)", rc, err);
	printf("  lock taken after %llu ms (the two holders let go at 150 and 300)\n",
	       (unsigned long long)dt);
	ASSERT(dt >= 300);	/* not before the second holder let go */
	/* while the session lasts, the file at the path is locked */
	fd = open(lock, O_RDWR);
	ASSERT(fd >= 0);
	ASSERT(flock(fd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK);
	close(fd);
	qmp_close(q);
	/* and after, it is gone (libxl's protocol: unlink, then unlock) */
	ASSERT(stat(lock, &st) < 0 && errno == ENOENT);
	peer_join(p);

	/* a failed open holds nothing */
	rc = qmp_open("/nonexistent/qmp.sock", lock, 50, &q, err, sizeof(err));
	ASSERT_EQ(rc, -ENOENT);
	fd = open(lock, O_RDWR | O_CREAT, 0666);
	ASSERT(fd >= 0);
	ASSERT(flock(fd, LOCK_EX | LOCK_NB) == 0);
	close(fd);
	return TEST_OK;
}
