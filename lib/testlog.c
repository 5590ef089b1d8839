/*
 * testlog.c - event lines for tests (TANDEM_TEST_LOG).
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "testlog.h"

static int testlog_fd = -1;

void testlog_init(void)
{
	const char *path = getenv("TANDEM_TEST_LOG");

	if (path && *path)
		testlog_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

bool testlog_enabled(void)
{
	return testlog_fd >= 0;
}

void testlog(const char *fmt, ...)
{
	char line[256];
	va_list ap;
	int n;

	if (testlog_fd < 0)
		return;
	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if (n > (int)sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (write(testlog_fd, line, (size_t)n) < 0)
		return;
}
