/*
 * test_fuzz.c - every libFuzzer harness over its stored corpus (make test
 * builds them with clang).  A crash, leak or sanitizer report fails.
 */
#include <sys/wait.h>

#include "test.h"

static int run_corpus(const char *name)
{
	char cmd[512];
	int rc;

	snprintf(cmd, sizeof(cmd), "./fuzz/bin/fuzz-%s -runs=0 fuzz/corpus/%s > %s/out 2>&1",
		 name, name, test_tmpdir());
	rc = system(cmd);
	if (rc != 0) {
		snprintf(cmd, sizeof(cmd), "tail -20 %s/out >&2", test_tmpdir());
		if (system(cmd) != 0)
			fprintf(stderr, "no output\n");
		FAILF("fuzz-%s over its corpus exited with %d", name, WEXITSTATUS(rc));
	}
	return TEST_OK;
}

int test_fuzz_corpus_wire(void) { return run_corpus("wire"); }
int test_fuzz_corpus_handshake(void) { return run_corpus("handshake"); }
int test_fuzz_corpus_config(void) { return run_corpus("config"); }
int test_fuzz_corpus_heartbeat(void) { return run_corpus("heartbeat"); }
int test_fuzz_corpus_status(void) { return run_corpus("status"); }
int test_fuzz_corpus_qmp(void) { return run_corpus("qmp"); }
