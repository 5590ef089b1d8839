/*
 * generation.c - the protection generation on disk (generation.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "generation.h"
#include "util.h"

static void gen_path(const char *dir, const struct tandem_config *cfg, const char *suffix,
		     char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.generation%s", dir, cfg->name, suffix);
}

int generation_load(const struct tandem_config *cfg, struct generation *g, char *err, size_t errlen)
{
	char path[CONFIG_PATH_MAX + 96], line[128];
	bool have = false;
	FILE *f;

	memset(g, 0, sizeof(*g));
	gen_path(cfg->state_dir, cfg, "", path, sizeof(path));
	f = fopen(path, "re");
	if (!f && errno == ENOENT) {
		/* tandem before state-dir kept it in the run-dir */
		gen_path(cfg->run_dir, cfg, "", path, sizeof(path));
		f = fopen(path, "re");
	}
	if (!f) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		return -errno;
	}
	while (fgets(line, sizeof(line), f)) {
		char key[32], val[64];

		if (sscanf(line, "%31s %63s", key, val) != 2)
			continue;
		if (!strcmp(key, "generation"))
			have = parse_u64(val, &g->gen) == 0;
		else if (!strcmp(key, "checkpoint"))
			parse_u64(val, &g->checkpoint);
		else if (!strcmp(key, "state"))
			snprintf(g->what, sizeof(g->what), "%.31s", val);
	}
	fclose(f);
	if (!have) {
		memset(g, 0, sizeof(*g));
		snprintf(err, errlen, "%s has no valid 'generation' line", path);
		return -EINVAL;
	}
	return 0;
}

int generation_save(const struct tandem_config *cfg, const struct generation *g)
{
	char path[CONFIG_PATH_MAX + 96], tmp[CONFIG_PATH_MAX + 96], text[256];
	int fd, n, rc = 0;

	if (mkdir(cfg->state_dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	gen_path(cfg->state_dir, cfg, "", path, sizeof(path));
	gen_path(cfg->state_dir, cfg, ".tmp", tmp, sizeof(tmp));
	n = snprintf(text, sizeof(text), "generation %" PRIu64 "\nstate %s\ncheckpoint %" PRIu64 "\n",
		     g->gen, g->what[0] ? g->what : "-", g->checkpoint);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (write_full(fd, text, (size_t)n) || fsync(fd))
		rc = -EIO;
	close(fd);
	if (!rc && rename(tmp, path))
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	/* the rename itself must survive a crash: the directory too */
	fd = open(cfg->state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		if (fsync(fd))
			rc = -errno;
		close(fd);
	}
	return rc;
}
