/*
 * testlog.h - facts for tests, written only when TANDEM_TEST_LOG names a
 * file: one line per event ("ckpt 5 <sha256> step S", "ack 5", "commit 5",
 * "activated 5 <sha256>"),
 * appended with a single write() so a SIGKILL never leaves half a line.
 */
#ifndef TANDEM_TESTLOG_H
#define TANDEM_TESTLOG_H

#include <stdbool.h>

/* Open the file named by TANDEM_TEST_LOG, if any. */
void testlog_init(void);
bool testlog_enabled(void);
void testlog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
