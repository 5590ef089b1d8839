/*
 * test_dmstate.c - the device model's part of a checkpoint (domain/dmstate.h)
 * against a fake QEMU (qmppeer.h) that behaves as QEMU 7.2 does where it
 * matters: it takes from an fdset only an fd opened O_WRONLY, truncates
 * it and writes the device state into it during xen-save-devices-state.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../domain/dmstate.h"
#include "../domain/qmp.h"
#include "../lib/util.h"
#include "daemon.h"
#include "qmppeer.h"
#include "test.h"

/* The device state the fake QEMU writes: QEMU's magic and version, then
 * a pattern that depends on the offset and on a seed. */
static void fill_state(uint8_t *b, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(i * 31u + seed);
	if (n >= 8)
		memcpy(b, "QEVM\0\0\0\3", 8);
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	int n = 0;

	ASSERT(d);
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n - 1;	/* the directory's own fd */
}

/*
 * What QEMU does with add-fd then xen-save-devices-state: check the fd's
 * access mode as monitor_fdset_dup_fd_add does, answer the fdset id; on
 * the save, check the filename and `live`, truncate and write.  Returns
 * the index of the add-fd command.
 */
static int fake_add_fd(struct peer *p, int64_t fdset)
{
	int i = pexpect(p, "add-fd"), fl;
	char ret[64];

	if (p->cmd_fd[i] < 0)
		FAILF("fake QEMU: add-fd came without an fd");
	fl = fcntl(p->cmd_fd[i], F_GETFL);
	if ((fl & O_ACCMODE) != O_WRONLY)
		FAILF("fake QEMU: the fd passed is not O_WRONLY (flags %#x): QEMU would answer "
		      "EACCES when it opens /dev/fdset/N", fl);
	snprintf(ret, sizeof(ret), "{\"fdset-id\": %" PRId64 ", \"fd\": 31}", fdset);
	preturn(p, i, ret);
	return i;
}

static void fake_save(struct peer *p, int addfd, int64_t fdset, const uint8_t *state, size_t n)
{
	int i = pexpect(p, "xen-save-devices-state");
	char want[128];

	snprintf(want, sizeof(want), "\"arguments\":{\"filename\":\"/dev/fdset/%" PRId64 "\","
		 "\"live\":false}", fdset);
	if (!strstr(p->cmd[i], want))
		FAILF("fake QEMU: xen-save-devices-state without %s: %s", want, p->cmd[i]);
	/* qemu_open(O_WRONLY|O_CREAT|O_TRUNC) on the set: a dup, truncated */
	if (ftruncate(p->cmd_fd[addfd], 0) < 0 || lseek(p->cmd_fd[addfd], 0, SEEK_SET) < 0 ||
	    (n && write_full(p->cmd_fd[addfd], state, n) != 0))
		FAILF("fake QEMU: writing the state: %s", strerror(errno));
	psend(p, EV("STOP"));	/* vm_stop(RUN_STATE_SAVE_VM): no event when paused, but harmless */
	preturn(p, i, "{}");
}

static void fake_remove_fd(struct peer *p, int64_t fdset)
{
	int i = pexpect(p, "remove-fd");
	char want[64];

	snprintf(want, sizeof(want), "\"arguments\":{\"fdset-id\":%" PRId64 "}", fdset);
	if (!strstr(p->cmd[i], want))
		FAILF("fake QEMU: remove-fd without %s: %s", want, p->cmd[i]);
	preturn(p, i, "{}");
}

/* ---- the sequence ---- */

#define STATE_LEN 40000u

static void script_sequence(struct peer *p)
{
	static uint8_t state[STATE_LEN];
	int a;

	fill_state(state, sizeof(state), 7);
	pgreet(p);
	preturn(p, pexpect(p, "xen-set-global-dirty-log"), "{}");
	preturn(p, pexpect(p, "stop"), "{}");
	a = fake_add_fd(p, 5);
	fake_save(p, a, 5, state, sizeof(state));
	fake_remove_fd(p, 5);
	psend(p, EV("RESUME"));
	preturn(p, pexpect(p, "cont"), "{}");
	preturn(p, pexpect(p, "xen-set-global-dirty-log"), "{}");
	pdrain(p);
}

int test_dmstate_sequence(void)
{
	static uint8_t want[STATE_LEN];
	int fds0 = open_fds();
	struct peer *p = peer_start(script_sequence, 0);
	struct qmp *q = popen_ok(p);
	struct dmstate_stats st = { 0 };
	char err[400];
	uint8_t *got = NULL;
	size_t len = 0;

	ASSERT_EQ(dmstate_dirty_log(q, true, 1000, err, sizeof(err)), 0);
	ASSERT_EQ(dmstate_save(q, 2000, &got, &len, &st, err, sizeof(err)), 0);
	ASSERT(got != NULL);
	fill_state(want, sizeof(want), 7);
	ASSERT_EQ(len, STATE_LEN);
	ASSERT(memcmp(got, want, len) == 0);		/* exactly the bytes QEMU wrote */
	ASSERT_EQ(st.bytes, STATE_LEN);
	ASSERT_EQ(dmstate_cont(q, 1000, err, sizeof(err)), 0);
	ASSERT_EQ(dmstate_dirty_log(q, false, 1000, err, sizeof(err)), 0);
	qmp_close(q);
	peer_join(p);
	ASSERT_EQ(open_fds(), fds0);			/* the memfd and its twin closed */
	free(got);

	/* what `tandem status` shows of this save */
	{
		char js[400], obj[420], txt[400], want_txt[64];

		dmstate_status(&st, 96, 1234, 0, true, js, sizeof(js));
		ASSERT(strstr(js, "\"saves\":0,\"state_bytes\":0,") != NULL);	/* none yet */
		dmstate_status(&st, 96, 1234, 0, false, txt, sizeof(txt));
		ASSERT(strstr(txt, "no state saved yet") != NULL);
		dmstate_status(&st, 96, 1234, 3, true, js, sizeof(js));
		ASSERT(strncmp(js, "\"device_model\":{", 16) == 0);
		ASSERT(js[strlen(js) - 1] == ',' && js[strlen(js) - 2] == '}');
		snprintf(obj, sizeof(obj), "{%.*s}", (int)strlen(js) - 1, js);
		ASSERT_EQ(td_num(obj, "saves"), 3);
		ASSERT_EQ(td_num(obj, "state_bytes"), STATE_LEN);
		ASSERT_EQ(td_num(obj, "physmap_bytes"), 96);
		ASSERT_EQ(td_num(obj, "qmp_open_us"), 1234);
		ASSERT_EQ(td_num(obj, "pause_us"), (double)(st.stop_us + st.save_us + st.read_us));
		ASSERT(td_num(obj, "save_us") > 0);	/* the fake wrote 40000 bytes meanwhile */
		dmstate_status(&st, 96, 1234, 3, false, txt, sizeof(txt));
		snprintf(want_txt, sizeof(want_txt), "%d bytes of state and 96 of physmap", STATE_LEN);
		ASSERT(strstr(txt, want_txt) != NULL);
		ASSERT(txt[strlen(txt) - 1] == '\n');
	}
	return TEST_OK;
}

/* The commands exactly as sent, in order, with an fd on add-fd only. */
static const char *const cmds_want[] = {
	"{\"execute\":\"qmp_capabilities\",\"id\":1}",
	"{\"execute\":\"xen-set-global-dirty-log\",\"arguments\":{\"enable\":true},\"id\":2}",
	"{\"execute\":\"stop\",\"id\":3}",
	"{\"execute\":\"add-fd\",\"id\":4}",
	"{\"execute\":\"xen-save-devices-state\",\"arguments\":{\"filename\":\"/dev/fdset/0\","
	"\"live\":false},\"id\":5}",
	"{\"execute\":\"remove-fd\",\"arguments\":{\"fdset-id\":0},\"id\":6}",
	"{\"execute\":\"cont\",\"id\":7}",
	"{\"execute\":\"xen-set-global-dirty-log\",\"arguments\":{\"enable\":false},\"id\":8}",
};

static void script_record(struct peer *p)
{
	static uint8_t state[64];
	int a;

	fill_state(state, sizeof(state), 1);
	pgreet(p);
	preturn(p, pexpect(p, "xen-set-global-dirty-log"), "{}");
	preturn(p, pexpect(p, "stop"), "{}");
	a = fake_add_fd(p, 0);
	fake_save(p, a, 0, state, sizeof(state));
	fake_remove_fd(p, 0);
	preturn(p, pexpect(p, "cont"), "{}");
	preturn(p, pexpect(p, "xen-set-global-dirty-log"), "{}");
	pdrain(p);
	if (p->ncmd != (int)ARRAY_SIZE(cmds_want))
		FAILF("%d commands, expected %zu", p->ncmd, ARRAY_SIZE(cmds_want));
	for (size_t i = 0; i < ARRAY_SIZE(cmds_want); i++) {
		if (strcmp(p->cmd[i], cmds_want[i]))
			FAILF("command %zu: %s, expected %s", i, p->cmd[i], cmds_want[i]);
		if ((p->cmd_fd[i] >= 0) != (i == 3))
			FAILF("command %zu: an fd %s", i, i == 3 ? "missing" : "where none belongs");
	}
}

int test_dmstate_commands(void)
{
	struct peer *p = peer_start(script_record, 0);
	struct qmp *q = popen_ok(p);
	char err[400];
	uint8_t *got = NULL;
	size_t len = 0;

	ASSERT_EQ(dmstate_dirty_log(q, true, 1000, err, sizeof(err)), 0);
	ASSERT_EQ(dmstate_save(q, 2000, &got, &len, NULL, err, sizeof(err)), 0);
	ASSERT_EQ(len, 64);
	ASSERT_EQ(dmstate_cont(q, 1000, err, sizeof(err)), 0);
	ASSERT_EQ(dmstate_dirty_log(q, false, 1000, err, sizeof(err)), 0);
	qmp_close(q);
	peer_join(p);		/* the script checked what it got */
	free(got);
	return TEST_OK;
}

/* ---- QEMU refuses, or misbehaves, at each step ---- */

enum { E_STOP, E_ADDFD, E_SAVE, E_EMPTY, E_NOTQEMU, E_REMOVE, E_CLOSE, E_NOFDSET, E_CASES };

static void err_reply(struct peer *p, int i, const char *desc)
{
	psendf(p, "{\"id\": %lld, \"error\": {\"class\": \"GenericError\", \"desc\": \"%s\"}}\r\n",
	       (long long)p->cmd_id[i], desc);
}

static void script_errors(struct peer *p)
{
	static uint8_t state[128];
	int a, i;

	fill_state(state, sizeof(state), 3);
	pgreet(p);
	i = pexpect(p, "stop");
	if (p->arg == E_STOP) {
		err_reply(p, i, "Resetting the Virtual Machine is required");
		goto cont;
	}
	preturn(p, i, "{}");
	if (p->arg == E_ADDFD) {
		err_reply(p, pexpect(p, "add-fd"), "No file descriptor supplied via SCM_RIGHTS");
		goto cont;
	}
	if (p->arg == E_NOFDSET) {
		preturn(p, pexpect(p, "add-fd"), "{\"fd\": 31}");
		pdrain(p);	/* the client cannot trust this session any more */
		return;
	}
	a = fake_add_fd(p, 2);
	if (p->arg == E_CLOSE)
		return;		/* QEMU dies mid-way */
	if (p->arg == E_SAVE) {
		err_reply(p, pexpect(p, "xen-save-devices-state"),
			  "failed to open file '/dev/fdset/2': Permission denied");
		fake_remove_fd(p, 2);	/* the client gives the set back */
		goto cont;
	}
	fake_save(p, a, 2, state, p->arg == E_EMPTY ? 0 : sizeof(state));
	if (p->arg == E_NOTQEMU)
		(void)!pwrite(p->cmd_fd[a], "NOPE", 4, 0);
	if (p->arg == E_REMOVE)
		err_reply(p, pexpect(p, "remove-fd"), "File descriptor named '2' not found");
	else
		fake_remove_fd(p, 2);
cont:
	preturn(p, pexpect(p, "cont"), "{}");
	pdrain(p);
}

int test_dmstate_errors(void)
{
	static const struct {
		int rc;
		const char *text, *qemu;
	} want[E_CASES] = {
		[E_STOP] = { -EREMOTEIO, "QEMU did not pause (`stop`)", "Resetting the Virtual" },
		[E_ADDFD] = { -EREMOTEIO, "did not take the device-state file (`add-fd`)",
			      "No file descriptor supplied" },
		[E_SAVE] = { -EREMOTEIO, "could not save its device state (`xen-save-devices-state`)",
			     "Permission denied" },
		[E_EMPTY] = { -EBADMSG, "wrote no device state", NULL },
		[E_NOTQEMU] = { -EBADMSG, "does not begin with QEMU's magic", NULL },
		[E_REMOVE] = { 0, NULL, NULL },		/* the state is saved: not a failure */
		[E_CLOSE] = { -ECONNRESET, "xen-save-devices-state", NULL },
		[E_NOFDSET] = { -EPROTO, "no fdset-id", NULL },
	};

	for (int k = 0; k < E_CASES; k++) {
		int fds0 = open_fds();
		struct peer *p = peer_start(script_errors, k);
		struct qmp *q = popen_ok(p);
		char err[400];
		uint8_t *got = (uint8_t *)1;
		size_t len = 1;
		int rc = dmstate_save(q, 2000, &got, &len, NULL, err, sizeof(err));

		printf("  case %d: %d: %s\n", k, rc, err);
		if (rc != want[k].rc)
			FAILF("case %d: %d, expected %d (%s)", k, rc, want[k].rc, err);
		if (want[k].text)
			ASSERT_STR_CONTAINS(err, want[k].text);
		if (want[k].qemu)
			ASSERT_STR_CONTAINS(err, want[k].qemu);	/* QEMU's own words */
		if (rc) {
			ASSERT(got == NULL);
			ASSERT_EQ(len, 0);
		} else {
			ASSERT_EQ(len, 128);
			free(got);
		}
		if (k == E_CLOSE || k == E_NOFDSET) {
			/* the session is gone: cont needs a new one */
			ASSERT_EQ(dmstate_cont(q, 200, err, sizeof(err)), -ENOTCONN);
			ASSERT_STR_CONTAINS(err, "QEMU did not run again (`cont`)");
		} else if (dmstate_cont(q, 1000, err, sizeof(err))) {
			/* still in step: the caller's cont goes through */
			FAILF("case %d: cont: %s", k, err);
		}
		qmp_close(q);
		peer_join(p);
		ASSERT_EQ(open_fds(), fds0);	/* nothing leaked on any path */
	}
	return TEST_OK;
}

/* ---- silence: one deadline for the whole save (replies 100 ms late) ---- */

static void script_slow(struct peer *p)
{
	int a;

	pgreet(p);
	pexpect(p, "stop");
	test_sleep_ms(100);
	preturn(p, p->ncmd - 1, "{}");
	a = pexpect(p, "add-fd");
	test_sleep_ms(100);
	preturn(p, a, "{\"fdset-id\": 1, \"fd\": 31}");
	pexpect(p, "xen-save-devices-state");
	if (p->arg == 0) {
		char late[64];
		int n;

		test_sleep_ms(150);	/* past the deadline: the client may be gone */
		n = snprintf(late, sizeof(late), "{\"return\": {}, \"id\": %lld}\r\n",
			     (long long)p->cmd_id[p->ncmd - 1]);
		(void)!send(p->fd, late, (size_t)n, MSG_NOSIGNAL);
	}
	pdrain(p);
}

int test_dmstate_deadline(void)
{
	for (int k = 0; k < 2; k++) {
		struct peer *p = peer_start(script_slow, k);
		struct qmp *q = popen_ok(p);
		char err[400];
		uint8_t *got = NULL;
		size_t len = 0;
		uint64_t t0 = test_now_ms(), dt;
		int rc = dmstate_save(q, 300, &got, &len, NULL, err, sizeof(err));

		dt = test_now_ms() - t0;
		printf("  %s: %d after %llu ms (bound 300 for the whole save): %s\n",
		       k ? "silent QEMU" : "slow QEMU", rc, (unsigned long long)dt, err);
		ASSERT_EQ(rc, -ETIMEDOUT);
		ASSERT(got == NULL);
		/* the bound is the save's, not each command's: 100 + 100 + the rest */
		ASSERT(dt >= 300 && dt < 1000);
		/* given up waiting for the save's reply, or (a loaded machine) before
		 * sending it: either way the save's step is named */
		ASSERT_STR_CONTAINS(err, "`xen-save-devices-state`");
		if (!strstr(err, "in time") && !strstr(err, "took more than its 300 ms"))
			FAILF("not a timeout's words: %s", err);
		/* a reply that may still come can no longer be matched */
		ASSERT_EQ(dmstate_cont(q, 100, err, sizeof(err)), -ENOTCONN);
		qmp_close(q);
		peer_join(p);
	}
	return TEST_OK;
}

/* ---- a figure: size and time of a save against the fake ---- */

#define FIG_ROUNDS 200

static size_t fig_n;	/* the state's size in this run */

static void script_figures(struct peer *p)
{
	size_t n = fig_n;
	uint8_t *state = malloc(n);

	ASSERT(state);
	fill_state(state, n, 9);
	pgreet(p);
	for (int r = 0; r < FIG_ROUNDS; r++) {
		int a;

		preturn(p, pexpect(p, "stop"), "{}");
		a = fake_add_fd(p, r);
		fake_save(p, a, r, state, n);
		fake_remove_fd(p, r);
		close(p->cmd_fd[a]);	/* QEMU closes its copy on remove-fd */
		p->cmd_fd[a] = -1;
		preturn(p, pexpect(p, "cont"), "{}");
	}
	free(state);
	pdrain(p);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int test_dmstate_figures(void)
{
	static const size_t sizes[] = { 64u << 10, 1u << 20 };

	for (size_t s = 0; s < ARRAY_SIZE(sizes); s++) {
		struct peer *p;
		struct qmp *q;
		uint64_t total[FIG_ROUNDS], stop[FIG_ROUNDS], save[FIG_ROUNDS], rd[FIG_ROUNDS];
		char err[400];

		fig_n = sizes[s];
		p = peer_start(script_figures, 0);
		p->wrap = true;		/* read by the peer only once we connect */
		q = popen_ok(p);
		for (int r = 0; r < FIG_ROUNDS; r++) {
			struct dmstate_stats st = { 0 };
			uint8_t *got = NULL;
			size_t len = 0;
			uint64_t t0 = now_us();

			if (dmstate_save(q, 2000, &got, &len, &st, err, sizeof(err)))
				FAILF("round %d: %s", r, err);
			if (dmstate_cont(q, 1000, err, sizeof(err)))
				FAILF("round %d: %s", r, err);
			total[r] = now_us() - t0;
			ASSERT_EQ(len, sizes[s]);
			ASSERT(!memcmp(got, "QEVM", 4));
			stop[r] = st.stop_us;
			save[r] = st.save_us;
			rd[r] = st.read_us;
			free(got);
		}
		qmp_close(q);
		peer_join(p);
		qsort(total, FIG_ROUNDS, sizeof(uint64_t), cmp_u64);
		qsort(stop, FIG_ROUNDS, sizeof(uint64_t), cmp_u64);
		qsort(save, FIG_ROUNDS, sizeof(uint64_t), cmp_u64);
		qsort(rd, FIG_ROUNDS, sizeof(uint64_t), cmp_u64);
		printf("  dmstate figure (fake QEMU on a unix socket, not QEMU): %zu KiB state, %d "
		       "saves: stop+save+cont median %" PRIu64 " us, p99 %" PRIu64 " us (stop %" PRIu64
		       ", add-fd..remove-fd %" PRIu64 ", read back %" PRIu64 " us median)\n",
		       sizes[s] >> 10, FIG_ROUNDS, total[FIG_ROUNDS / 2], total[FIG_ROUNDS * 99 / 100],
		       stop[FIG_ROUNDS / 2], save[FIG_ROUNDS / 2], rd[FIG_ROUNDS / 2]);
	}
	return TEST_OK;
}

/* ---- the xenstore pairs of EMULATOR_XENSTORE_DATA ---- */

int test_dmstate_xs_pack(void)
{
	char *buf = NULL;
	size_t len = 0;
	static const char want[] = "physmap/f0000000/start_addr\0f0000000\0"
				   "physmap/f0000000/size\0800000\0"
				   "physmap/f0000000/name\0vga.vram";

	ASSERT_EQ(dmstate_xs_pack(&buf, &len, "physmap/f0000000/start_addr", "f0000000"), 0);
	ASSERT_EQ(dmstate_xs_pack(&buf, &len, "physmap/f0000000/size", "800000"), 0);
	ASSERT_EQ(dmstate_xs_pack(&buf, &len, "physmap/f0000000/name", "vga.vram"), 0);
	ASSERT_EQ(len, sizeof(want));		/* the last NUL included */
	ASSERT(memcmp(buf, want, len) == 0);
	/* keys: alphanumeric ASCII and -/_@ only, not empty */
	ASSERT_EQ(dmstate_xs_pack(&buf, &len, "", "x"), -EINVAL);
	ASSERT_EQ(dmstate_xs_pack(&buf, &len, "physmap/a b", "x"), -EINVAL);
	ASSERT_EQ(dmstate_xs_pack(&buf, &len, "physmap/\xc3\xa9", "x"), -EINVAL);
	/* relative only: libxl's restore refuses a key beginning with '/' */
	ASSERT_EQ(dmstate_xs_pack(&buf, &len, "/local/domain/0/device-model/1/physmap", "x"),
		  -EINVAL);
	ASSERT_EQ(len, sizeof(want));		/* refused ones added nothing */
	free(buf);
	return TEST_OK;
}
