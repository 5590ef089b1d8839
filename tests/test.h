/*
 * test.h - assertions and helpers for tandem's tests (tests/runner.c).
 *
 * A test is `int test_NAME(void)` listed in tests/list.h.  It runs in its
 * own forked process with a timeout; it returns TEST_OK, or TEST_SKIP after
 * test_skip("why").  A failed assertion prints where and exits 1.
 */
#ifndef TANDEM_TEST_H
#define TANDEM_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TEST_OK 0
#define TEST_SKIP 77

#define FAILF(...) do { \
	fprintf(stderr, "  FAIL %s:%d: ", __FILE__, __LINE__); \
	fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); exit(1); } while (0)

#define ASSERT(c) do { if (!(c)) FAILF("assertion failed: %s", #c); } while (0)
#define ASSERT_EQ(a, b) do { long long a_ = (long long)(a), b_ = (long long)(b); \
	if (a_ != b_) FAILF("%s == %s: %lld != %lld", #a, #b, a_, b_); } while (0)
#define ASSERT_STR_CONTAINS(hay, needle) do { const char *h_ = (hay); \
	if (!h_ || !strstr(h_, (needle))) \
		FAILF("expected \"%s\" in: %s", (needle), h_ ? h_ : "(null)"); } while (0)

/* Print why, return TEST_SKIP from the caller. */
#define test_skip(...) do { printf("  skip: "); printf(__VA_ARGS__); printf("\n"); \
	return TEST_SKIP; } while (0)

/* Poll cond every 5 ms until it holds or timeout_ms passes; true if it held. */
#define WAIT_FOR(cond, timeout_ms) ({ \
	uint64_t end_ = test_now_ms() + (timeout_ms); \
	bool ok_ = false; \
	for (;;) { \
		if (cond) { \
			ok_ = true; \
			break; \
		} \
		if (test_now_ms() > end_) \
			break; \
		test_sleep_ms(5); \
	} \
	ok_; })

uint64_t test_now_ms(void);
void test_sleep_ms(unsigned ms);

/* A fresh temporary directory for this test (removed by the runner). */
const char *test_tmpdir(void);

/* Write text to DIR/name; returns the path (static buffer rotation of 8). */
const char *test_write_file(const char *name, const char *text);

/* True when the file's first 64 KiB hold a, and b too unless it is NULL
 * (e.g. /proc/drbd's states). */
bool test_file_has(const char *path, const char *a, const char *b);

/* Run a shell command; a non-zero exit status fails the test. */
void test_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run a shell command, its standard output into out (len bytes, NUL
 * ended); returns its exit status, -1 if a signal ended it. */
int test_capture(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Path of the tandem binary under test. */
const char *test_tandem_bin(void);

/* Prototypes of every test. */
#define TEST(name, timeout_s) int test_##name(void);
#include "list.h"
#undef TEST

#endif
