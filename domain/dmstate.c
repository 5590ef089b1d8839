/*
 * dmstate.c - the device model's part of one checkpoint (dmstate.h): QMP
 * `stop`, QEMU's device state into a memfd, `cont`.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define LOG_MODULE "dmstate"
#include "../lib/log.h"
#include "../lib/util.h"
#include "dmstate.h"
#include "qmp.h"

/* Milliseconds left until deadline (ns), 0 once it has passed. */
static unsigned left_ms(uint64_t deadline)
{
	uint64_t now = now_ns();

	return now < deadline ? (unsigned)((deadline - now + 999999u) / 1000000u) : 0;
}

/* err = what failed, in an operator's words, and QMP's reason. */
static int qfail(int rc, struct qmp *q, char *err, size_t errlen, const char *cmd,
		 const char *what, unsigned timeout_ms)
{
	if (rc == -ETIMEDOUT)
		snprintf(err, errlen, "QEMU did not answer `%s` in time (the device model's step "
			 "has %u ms in all): %s", cmd, timeout_ms, qmp_error(q));
	else
		snprintf(err, errlen, "%s (`%s`): %s", what, cmd, qmp_error(q));
	return rc;
}

static int late(char *err, size_t errlen, unsigned timeout_ms, const char *before)
{
	snprintf(err, errlen, "the device model's save took more than its %u ms, before %s",
		 timeout_ms, before);
	return -ETIMEDOUT;
}

/*
 * A memfd, and an O_WRONLY open of the same file for QEMU (which takes
 * from an fdset only an fd of the access mode it opens with).
 */
static int make_memfd(int *rw, int *wo, char *err, size_t errlen)
{
	char path[64];

	*rw = memfd_create("tandem-dmstate", MFD_CLOEXEC);
	if (*rw < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot create a memory file for QEMU's device state "
			 "(memfd_create): %s", strerror(e));
		return -e;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", *rw);
	*wo = open(path, O_WRONLY | O_CLOEXEC);
	if (*wo < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot reopen the device-state memory file write-only (%s): "
			 "%s (is /proc mounted?)", path, strerror(e));
		close(*rw);
		*rw = -1;
		return -e;
	}
	return 0;
}

/* The memfd's contents: 0 with *out, *len; or an error in err. */
static int read_back(int fd, uint8_t **out, size_t *len, char *err, size_t errlen)
{
	struct stat st;
	uint8_t *buf;
	size_t n;

	if (fstat(fd, &st) < 0) {
		int e = errno;

		snprintf(err, errlen, "cannot read the size of QEMU's device state: %s", strerror(e));
		return -e;
	}
	if (st.st_size <= 0) {
		snprintf(err, errlen, "QEMU answered `xen-save-devices-state` but wrote no device "
			 "state");
		return -EBADMSG;
	}
	if ((uint64_t)st.st_size > DMSTATE_MAX) {
		snprintf(err, errlen, "QEMU's device state is %jd bytes, more than the %u tandem "
			 "carries in a checkpoint", (intmax_t)st.st_size, DMSTATE_MAX);
		return -EMSGSIZE;
	}
	n = (size_t)st.st_size;
	buf = malloc(n);
	if (!buf) {
		snprintf(err, errlen, "out of memory for %zu bytes of device state", n);
		return -ENOMEM;
	}
	for (size_t off = 0; off < n;) {
		ssize_t r = pread(fd, buf + off, n - off, (off_t)off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			int e = r < 0 ? errno : EIO;

			snprintf(err, errlen, "cannot read QEMU's device state back: %s",
				 r < 0 ? strerror(e) : "it shrank while read");
			free(buf);
			return -e;
		}
		off += (size_t)r;
	}
	if (n < 8 || memcmp(buf, DMSTATE_MAGIC, 4)) {
		snprintf(err, errlen, "what QEMU wrote (%zu bytes) is not a device state: it does "
			 "not begin with QEMU's magic \"" DMSTATE_MAGIC "\"", n);
		free(buf);
		return -EBADMSG;
	}
	*out = buf;
	*len = n;
	return 0;
}

int dmstate_save(struct qmp *q, unsigned timeout_ms, uint8_t **out, size_t *len,
		 struct dmstate_stats *st, char *err, size_t errlen)
{
	uint64_t deadline = now_ns() + (uint64_t)timeout_ms * 1000000u, t0 = now_ns(), t1, t2;
	int rw = -1, wo = -1, rc;
	int64_t fdset = -1;
	char filename[48];
	unsigned ms;

	*out = NULL;
	*len = 0;
	if (errlen)
		err[0] = '\0';

	/* 1. stop: QEMU's vCPU-side emulation and its devices pause */
	rc = qmp_stop(q, timeout_ms);
	if (rc)
		return qfail(rc, q, err, errlen, "stop", "QEMU did not pause", timeout_ms);
	t1 = now_ns();

	/* 2. a memory file QEMU can write to, passed with add-fd */
	rc = make_memfd(&rw, &wo, err, errlen);
	if (rc)
		goto out;
	if (!(ms = left_ms(deadline))) {
		rc = late(err, errlen, timeout_ms, "`add-fd`");
		goto out;
	}
	rc = qmp_add_fd(q, wo, ms, &fdset);
	close(wo);		/* QEMU holds its own copy now, or none */
	wo = -1;
	if (rc) {
		qfail(rc, q, err, errlen, "add-fd", "QEMU did not take the device-state file",
		      timeout_ms);
		fdset = -1;
		goto out;
	}

	/* 3. the save itself, into /dev/fdset/N */
	snprintf(filename, sizeof(filename), "/dev/fdset/%" PRId64, fdset);
	if (!(ms = left_ms(deadline))) {
		rc = late(err, errlen, timeout_ms, "`xen-save-devices-state`");
		goto out;
	}
	rc = qmp_save_devices_state(q, filename, false, ms);
	if (rc) {
		qfail(rc, q, err, errlen, "xen-save-devices-state",
		      "QEMU could not save its device state", timeout_ms);
		goto out;
	}

	/* 4. remove-fd: QEMU closes its copy (done in `out` on any path) */
	if (!(ms = left_ms(deadline))) {
		rc = late(err, errlen, timeout_ms, "`remove-fd`");
		goto out;
	}
	rc = qmp_remove_fd(q, fdset, ms);
	fdset = -1;
	if (rc == -EREMOTEIO) {
		/* The state is saved; QEMU frees the set when we hang up. */
		log_debug("remove-fd: %s (the state is saved; QEMU frees the set at hang-up)",
			  qmp_error(q));
		rc = 0;
	} else if (rc) {
		qfail(rc, q, err, errlen, "remove-fd", "QEMU did not release the device-state file",
		      timeout_ms);
		goto out;
	}
	t2 = now_ns();

	/* 5. read it back */
	rc = read_back(rw, out, len, err, errlen);
	if (rc)
		goto out;
	if (st) {
		st->stop_us = (t1 - t0) / 1000;
		st->save_us = (t2 - t1) / 1000;
		st->read_us = (now_ns() - t2) / 1000;
		st->bytes = *len;
	}
	log_debug("device state: %zu bytes; stop %" PRIu64 " us, save %" PRIu64 " us",
		  *len, (t1 - t0) / 1000, (t2 - t1) / 1000);
out:
	/* A set left in QEMU after a failure: give it back if the session
	 * still can (best effort, briefly; at hang-up QEMU frees it anyway). */
	if (fdset >= 0 && (ms = left_ms(deadline)) > 0)
		qmp_remove_fd(q, fdset, MIN(ms, 100u));
	if (wo >= 0)
		close(wo);
	if (rw >= 0)
		close(rw);
	return rc;
}

int dmstate_cont(struct qmp *q, unsigned timeout_ms, char *err, size_t errlen)
{
	int rc = qmp_cont(q, timeout_ms);

	if (errlen)
		err[0] = '\0';
	if (rc)
		return qfail(rc, q, err, errlen, "cont", "QEMU did not run again", timeout_ms);
	return 0;
}

int dmstate_dirty_log(struct qmp *q, bool enable, unsigned timeout_ms, char *err, size_t errlen)
{
	int rc = qmp_set_global_dirty_log(q, enable, timeout_ms);

	if (errlen)
		err[0] = '\0';
	if (rc)
		return qfail(rc, q, err, errlen, "xen-set-global-dirty-log", enable ?
			     "QEMU did not start reporting its writes to guest memory" :
			     "QEMU did not stop reporting its writes to guest memory", timeout_ms);
	return 0;
}

/* The spec's key alphabet (alphanumeric ASCII and -/_@), and relative:
 * libxl's restore refuses an empty key or one that begins with '/'
 * (libxl_dom_save.c:libxl__restore_emulator_xenstore_data). */
static bool xs_key_ok(const char *k)
{
	if (!*k || *k == '/')
		return false;
	for (; *k; k++)
		if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
		      (*k >= '0' && *k <= '9') || strchr("-/_@", *k)))
			return false;
	return true;
}

int dmstate_xs_pack(char **buf, size_t *len, const char *key, const char *value)
{
	size_t kl = strlen(key) + 1, vl = strlen(value) + 1;
	char *n;

	if (!xs_key_ok(key))
		return -EINVAL;
	if (*len + kl + vl > DMSTATE_MAX)
		return -EMSGSIZE;
	n = realloc(*buf, *len + kl + vl);
	if (!n)
		return -ENOMEM;
	memcpy(n + *len, key, kl);
	memcpy(n + *len + kl, value, vl);
	*buf = n;
	*len += kl + vl;
	return 0;
}

void dmstate_status(const struct dmstate_stats *st, size_t physmap_bytes, uint64_t open_us,
		    uint64_t saves, bool json, char *buf, size_t len)
{
	uint64_t pause_us = st->stop_us + st->save_us + st->read_us;

	if (json)
		snprintf(buf, len, "\"device_model\":{\"saves\":%" PRIu64 ",\"state_bytes\":%zu,"
			 "\"physmap_bytes\":%zu,\"qmp_open_us\":%" PRIu64 ",\"stop_us\":%" PRIu64
			 ",\"save_us\":%" PRIu64 ",\"read_us\":%" PRIu64 ",\"pause_us\":%" PRIu64 "},",
			 saves, saves ? st->bytes : 0, saves ? physmap_bytes : 0, saves ? open_us : 0,
			 saves ? st->stop_us : 0, saves ? st->save_us : 0, saves ? st->read_us : 0,
			 saves ? pause_us : 0);
	else if (!saves)
		snprintf(buf, len, "  device model (QEMU): no state saved yet\n");
	else
		snprintf(buf, len, "  device model (QEMU): %zu bytes of state and %zu of physmap keys "
			 "per checkpoint; its share of the pause %.1f ms (stop %.1f, save %.1f, read "
			 "%.1f), QMP open %.1f ms before the suspend; %" PRIu64 " saves\n", st->bytes,
			 physmap_bytes, (double)pause_us / 1000.0, (double)st->stop_us / 1000.0,
			 (double)st->save_us / 1000.0, (double)st->read_us / 1000.0,
			 (double)open_us / 1000.0, saves);
}
