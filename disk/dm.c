/*
 * dm.c - device-mapper linear switching through dmsetup (dm.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../lib/run.h"
#include "dm.h"

#define DMSETUP_TIMEOUT_MS 10000
#define DMSETUP_CREATE_TIMEOUT_MS 30000	/* create waits for udev's node */

static const char *dm_name(const char *dev)
{
	return strncmp(dev, "/dev/mapper/", 12) ? dev : dev + 12;
}

/* dmsetup VERB NAME [ARGS]: 0, or -errno with dmsetup's words in msg. */
static int dmsetup_t(const char *const argv[], unsigned timeout_ms, char *out, size_t out_cap,
		     char *msg, size_t msglen)
{
	char err[2048], line[512];
	int rc = run_capture(argv, timeout_ms, out, out_cap, err, sizeof(err));

	if (rc == 0)
		return 0;
	run_one_line(err, line, sizeof(line));
	if (rc == 127)
		snprintf(msg, msglen, "dmsetup not found: install dmsetup (apt-get install dmsetup)");
	else
		snprintf(msg, msglen, "dmsetup %s %s: %s", argv[1], argv[2],
			 rc < 0 ? strerror(-rc) : line[0] ? line : "it failed");
	return rc < 0 ? rc : -EIO;
}

static int dmsetup(const char *const argv[], char *out, size_t out_cap, char *msg, size_t msglen)
{
	return dmsetup_t(argv, DMSETUP_TIMEOUT_MS, out, out_cap, msg, msglen);
}

int dm_linear_parse(const char *text, struct dm_linear *t)
{
	uint64_t start;
	char type[32];
	int used = 0;

	if (sscanf(text, "%" SCNu64 " %" SCNu64 " %31s %u:%u %" SCNu64 " %n", &start, &t->sectors,
		   type, &t->major, &t->minor, &t->offset, &used) != 6 || start != 0 ||
	    strcmp(type, "linear") || !t->sectors)
		return -EINVAL;
	return text[used] ? -EINVAL : 0;	/* one segment only */
}

int dm_linear_get(const char *dev, struct dm_linear *t, char *msg, size_t msglen)
{
	const char *argv[] = { "dmsetup", "table", dm_name(dev), NULL };
	char out[4096];
	int rc = dmsetup(argv, out, sizeof(out), msg, msglen);

	if (rc)
		return rc;
	if (dm_linear_parse(out, t)) {
		out[strcspn(out, "\n")] = '\0';
		snprintf(msg, msglen, "%s is not a one-segment linear device (its table: %.200s)", dev,
			 out);
		return -EINVAL;
	}
	return 0;
}

int dm_linear_load(const char *dev, const struct dm_linear *t, char *msg, size_t msglen)
{
	char table[128];
	const char *argv[] = { "dmsetup", "load", dm_name(dev), "--table", table, NULL };

	snprintf(table, sizeof(table), "0 %" PRIu64 " linear %u:%u %" PRIu64, t->sectors, t->major,
		 t->minor, t->offset);
	return dmsetup(argv, NULL, 0, msg, msglen);
}

int dm_linear_create(const char *dev, const struct dm_linear *t, char *msg, size_t msglen)
{
	char table[128];
	const char *argv[] = { "dmsetup", "create", dm_name(dev), "--table", table, NULL };

	snprintf(table, sizeof(table), "0 %" PRIu64 " linear %u:%u %" PRIu64, t->sectors, t->major,
		 t->minor, t->offset);
	return dmsetup_t(argv, DMSETUP_CREATE_TIMEOUT_MS, NULL, 0, msg, msglen);
}

int dm_remove(const char *dev, char *msg, size_t msglen)
{
	const char *argv[] = { "dmsetup", "remove", dm_name(dev), NULL };

	return dmsetup_t(argv, DMSETUP_CREATE_TIMEOUT_MS, NULL, 0, msg, msglen);
}

int dm_suspend(const char *dev, char *msg, size_t msglen)
{
	const char *argv[] = { "dmsetup", "suspend", dm_name(dev), NULL };

	return dmsetup(argv, NULL, 0, msg, msglen);
}

int dm_resume(const char *dev, char *msg, size_t msglen)
{
	const char *argv[] = { "dmsetup", "resume", dm_name(dev), NULL };

	return dmsetup(argv, NULL, 0, msg, msglen);
}

int dm_block_path(unsigned major, unsigned minor, char *out, size_t len)
{
	char path[128], line[256];
	FILE *f;
	int rc = -ENOENT;

	snprintf(path, sizeof(path), "/sys/dev/block/%u:%u/uevent", major, minor);
	if (!(f = fopen(path, "r")))
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, "DEVNAME=", 8)) {
			line[strcspn(line, "\n")] = '\0';
			snprintf(out, len, "/dev/%s", line + 8);
			rc = 0;
		}
	fclose(f);
	return rc;
}
