/*
 * run.h - run a helper program (drbdadm, dmsetup) and collect what it
 * prints, bounded in time.
 */
#ifndef TANDEM_RUN_H
#define TANDEM_RUN_H

#include <stddef.h>

/*
 * Run argv[0] (looked up in PATH) with argv, stdin from /dev/null, and
 * collect its stdout into out and its stderr into err (each up to cap - 1
 * bytes, NUL-terminated; either may be NULL with cap 0).  After
 * timeout_ms the program is killed.  Returns its exit status (0-255), 127
 * when it cannot be executed (not installed), -ETIMEDOUT, -EINTR when it
 * died of a signal, or another -errno when it could not be started.
 */
int run_capture(const char *const argv[], unsigned timeout_ms, char *out, size_t out_cap,
		char *err, size_t err_cap);

/* What a program said on stderr, on one line: whitespace runs folded. */
void run_one_line(const char *text, char *out, size_t len);

#endif
