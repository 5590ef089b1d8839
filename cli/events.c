/*
 * events.c - `tandem events`: follow the daemons' event streams, in the
 * manner of `drbdsetup events2` (lib/status.h).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../lib/net.h"
#include "../lib/util.h"
#include "cmd.h"

#define MAX_FOLLOWED 64

int cmd_events(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "now", no_argument, NULL, 'n' },
		{ "run-dir", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	const char *run_dir = cmd_run_dir();
	const char *name = NULL, *req = "events\n";
	struct pollfd pf[MAX_FOLLOWED];
	int n = 0, open_n, c;
	DIR *d;
	struct dirent *de;

	optind = 1;
	while ((c = getopt_long(argc, argv, "nr:", opts, NULL)) != -1) {
		switch (c) {
		case 'n': req = "events-now\n"; break;
		case 'r': run_dir = optarg; break;
		default:
			fprintf(stderr, "usage: tandem events [--now] [--run-dir DIR] [NAME]\n");
			return EXIT_USAGE;
		}
	}
	if (optind < argc)
		name = argv[optind];
	d = opendir(run_dir);
	if (!d) {
		fprintf(stderr, "tandem events: cannot open %s: %s\n", run_dir, strerror(errno));
		return errno == EACCES ? EXIT_FAILURE_RUNTIME : EXIT_NO_DAEMON;
	}
	while ((de = readdir(d)) && n < MAX_FOLLOWED) {
		char path[512];
		int fd;

		if (!daemon_socket(de->d_name, name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", run_dir, de->d_name);
		fd = net_unix_connect(path);
		if (fd < 0)
			continue;
		if (write_full(fd, req, strlen(req))) {
			close(fd);
			continue;
		}
		pf[n].fd = fd;
		pf[n].events = POLLIN;
		n++;
	}
	closedir(d);
	if (!n) {
		fprintf(stderr, "tandem events: no tandem daemon%s%s answers in %s\n",
			name ? " for VM " : "", name ? name : "", run_dir);
		return EXIT_NO_DAEMON;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	/* until every daemon followed has gone (or SIGINT) */
	for (open_n = n; open_n > 0;) {
		if (poll(pf, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < n; i++) {
			char buf[8192];
			ssize_t r;

			if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = read(pf[i].fd, buf, sizeof(buf));
			if (r <= 0) {
				close(pf[i].fd);
				pf[i].fd = -1;
				open_n--;
				continue;
			}
			fwrite(buf, 1, (size_t)r, stdout);
		}
	}
	return EXIT_OK;
}
