/*
 * device.c - the table of a VM's devices and the steps run on each
 * (device.h).
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "../disk/disk.h"
#include "../lib/util.h"
#include "device.h"

_Static_assert(DEVICES_MAX == 8, "CKPT_DEVICES and struct ckpt hold 8 verdicts");
_Static_assert(DEVICE_SESSION_LEN == 16, "CKPT_DEVICES's session is 16 bytes");

int devices_open(struct devices *ds, const struct tandem_config *cfg, enum device_role role,
		 char *err, size_t errlen)
{
	int rc = 0;

	memset(ds, 0, sizeof(*ds));
	/* The disks first: DRBD resources, or memdom's stand-in. */
	for (unsigned i = 0; i < cfg->disks.n && ds->n < DEVICES_MAX; i++) {
		struct device *dv = &ds->d[ds->n];

		dv->cfg = cfg;
		dv->index = ds->n++;
		if ((rc = disk_device_init(dv, &cfg->disks.d[i])))
			goto fail;
	}
	if (cfg->memdom_disk[0] && ds->n < DEVICES_MAX) {
		struct device *dv = &ds->d[ds->n];

		dv->cfg = cfg;
		dv->index = ds->n++;
		if ((rc = memdisk_device_init(dv, cfg->memdom_disk)))
			goto fail;
	}
	for (unsigned i = 0; i < ds->n; i++) {
		struct device *dv = &ds->d[i];

		if ((rc = dv->ops->test(dv, role))) {
			snprintf(err, errlen, "%s: %s", dv->name,
				 dv->error[0] ? dv->error : strerror(-rc));
			devices_close(ds);
			return rc;
		}
	}
	devices_new_session(ds);
	return 0;
fail:
	snprintf(err, errlen, "%s: %s", ds->d[ds->n - 1].name,
		 ds->d[ds->n - 1].error[0] ? ds->d[ds->n - 1].error : strerror(-rc));
	devices_close(ds);
	return rc;
}

void devices_close(struct devices *ds)
{
	for (unsigned i = 0; i < ds->n; i++)
		if (ds->d[i].ops && ds->d[i].ops->close)
			ds->d[i].ops->close(&ds->d[i]);
	ds->n = 0;
}

void devices_new_session(struct devices *ds)
{
	uint8_t s[DEVICE_SESSION_LEN];

	if (getrandom(s, sizeof(s), 0) != (ssize_t)sizeof(s)) {	/* never short for 16 bytes */
		uint64_t t = now_ns();

		memset(s, 0, sizeof(s));
		memcpy(s, &t, sizeof(t));
	}
	devices_set_session(ds, s);
}

void devices_set_session(struct devices *ds, const uint8_t session[DEVICE_SESSION_LEN])
{
	for (unsigned i = 0; i < ds->n; i++)
		memcpy(ds->d[i].session, session, DEVICE_SESSION_LEN);
}

int devices_before_suspend(struct devices *ds, uint64_t epoch)
{
	int rc;

	for (unsigned i = 0; i < ds->n; i++)
		if (ds->d[i].ops->before_suspend &&
		    (rc = ds->d[i].ops->before_suspend(&ds->d[i], epoch)))
			return rc;
	return 0;
}

int devices_while_suspended(struct devices *ds, uint64_t epoch)
{
	int rc;

	for (unsigned i = 0; i < ds->n; i++)
		if ((rc = ds->d[i].ops->while_suspended(&ds->d[i], epoch)))
			return rc;
	return 0;
}

int devices_sync(struct devices *ds, uint64_t epoch, uint32_t *verdicts)
{
	int rc, first = 0;

	/* Every device is waited for, even after one fails: none may still be
	 * cutting when the guest resumes. */
	for (unsigned i = 0; i < ds->n; i++) {
		verdicts[i] = DEV_V_CUT_FAILED;
		rc = ds->d[i].ops->sync(&ds->d[i], epoch, &verdicts[i]);
		if (rc && !first)
			first = rc;
	}
	return first;
}

bool devices_ready(struct devices *ds)
{
	for (unsigned i = 0; i < ds->n; i++)
		if (ds->d[i].ops->ready && !ds->d[i].ops->ready(&ds->d[i]))
			return false;
	return true;
}

bool devices_all_ok(const struct devices *ds, const uint32_t *verdicts)
{
	for (unsigned i = 0; i < ds->n; i++)
		if (verdicts[i] != DEV_V_OK)
			return false;
	return true;
}

int devices_commit(struct devices *ds, uint64_t epoch, const uint32_t *verdicts, char *err,
		   size_t errlen)
{
	int rc;

	for (unsigned i = 0; i < ds->n; i++) {
		struct device *dv = &ds->d[i];

		dv->error[0] = '\0';
		if ((rc = dv->ops->commit(dv, epoch, verdicts[i]))) {
			snprintf(err, errlen, "%s: %s", dv->name,
				 dv->error[0] ? dv->error : strerror(-rc));
			return rc;
		}
	}
	return 0;
}

int devices_activate(struct devices *ds, uint64_t epoch, char *err, size_t errlen)
{
	int rc;

	for (unsigned i = 0; i < ds->n; i++) {
		struct device *dv = &ds->d[i];

		dv->error[0] = '\0';
		if ((rc = dv->ops->activate(dv, epoch))) {
			snprintf(err, errlen, "%s: %s", dv->name,
				 dv->error[0] ? dv->error : strerror(-rc));
			return rc;
		}
	}
	return 0;
}

void devices_diverged(struct devices *ds, const char *why)
{
	for (unsigned i = 0; i < ds->n; i++)
		if (ds->d[i].ops->diverged)
			ds->d[i].ops->diverged(&ds->d[i], why);
}

void devices_status_json(struct devices *ds, char *buf, size_t len)
{
	size_t used = 0;

	used += (size_t)snprintf(buf, len, "[");
	for (unsigned i = 0; i < ds->n && used < len; i++) {
		char one[1024] = "";

		if (ds->d[i].ops->status)
			ds->d[i].ops->status(&ds->d[i], one, sizeof(one));
		used += (size_t)snprintf(buf + used, len - used, "%s{\"name\":\"%s\"%s%s}",
					 i ? "," : "", ds->d[i].name, one[0] ? "," : "", one);
	}
	if (used < len)
		snprintf(buf + used, len - used, "]");
}

void devices_status_text(struct devices *ds, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < ds->n && used < len; i++) {
		char one[512] = "";

		if (!ds->d[i].ops->status_text)
			continue;
		ds->d[i].ops->status_text(&ds->d[i], one, sizeof(one));
		used += (size_t)snprintf(buf + used, len - used, "  %s: %s\n", ds->d[i].name, one);
	}
}

const char *device_verdict_str(uint32_t verdict, char *buf, size_t len)
{
	if (verdict == DEV_V_OK) {
		snprintf(buf, len, "ok");
		return buf;
	}
	snprintf(buf, len, "%s%s%s%s", verdict & DEV_V_FENCED ? "fenced" : "",
		 (verdict & DEV_V_FENCED) && (verdict & DEV_V_CUT_FAILED) ? ", " : "",
		 verdict & DEV_V_CUT_FAILED ? "cut failed" : "",
		 !(verdict & DEV_V_ALL) || !(verdict & (DEV_V_FENCED | DEV_V_CUT_FAILED)) ?
		 "not ok" : "");
	return buf;
}
