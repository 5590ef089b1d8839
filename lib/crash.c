/*
 * crash.c - a last word when tandem dies of a fatal signal (crash.h).
 *
 * Only write(2) and stack buffers in the handler, except backtrace() and
 * dladdr(), which the install warms up so that they need no allocation.
 */
#include <dlfcn.h>
#include <execinfo.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <ucontext.h>
#include <unistd.h>

#include "crash.h"
#include "util.h"

static const char *crash_who = "tandem";
static char altstack[65536];

static void put(const char *s)
{
	ssize_t r = write(STDERR_FILENO, s, strlen(s));
	(void)r;
}

static void put_hex(uintptr_t v)
{
	char b[2 + 2 * sizeof(v) + 1], *p = b + sizeof(b) - 1;

	*p = '\0';
	do {
		*--p = "0123456789abcdef"[v & 15];
		v >>= 4;
	} while (v);
	*--p = 'x';
	*--p = '0';
	put(p);
}

/* "0x... (libfoo.so+0x..., symbol+0x...)" for a code address. */
static void put_code(uintptr_t a)
{
	Dl_info di;

	put_hex(a);
	if (a && dladdr((void *)a, &di) && di.dli_fname) {
		put(" (");
		put(di.dli_fname);
		put("+");
		put_hex(a - (uintptr_t)di.dli_fbase);
		if (di.dli_sname) {
			put(", ");
			put(di.dli_sname);
			put("+");
			put_hex(a - (uintptr_t)di.dli_saddr);
		}
		put(")");
	}
}

static const char *sig_name(int sig)
{
	switch (sig) {
	case SIGSEGV: return "SIGSEGV";
	case SIGBUS: return "SIGBUS";
	case SIGILL: return "SIGILL";
	case SIGFPE: return "SIGFPE";
	case SIGABRT: return "SIGABRT";
	default: return "a fatal signal";
	}
}

static void on_crash(int sig, siginfo_t *si, void *ucv)
{
	void *frames[64];
	int n;

	put("\n");
	put(crash_who);
	put(": CRASHED: ");
	put(sig_name(sig));
	if (sig != SIGABRT) {
		put(" at address ");
		put_hex((uintptr_t)si->si_addr);
	}
#if defined(__x86_64__)
	{
		const ucontext_t *uc = ucv;
		uintptr_t pc = (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
		uintptr_t sp = (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];

		put(", pc ");
		put_code(pc);
		if (sig != SIGABRT && sp) {
			/* After a call through a NULL (or wild) pointer, the caller's
			 * return address is the word on top of the stack. */
			put(", top of stack ");
			put_code(*(const uintptr_t *)sp);
		}
	}
#else
	(void)ucv;
#endif
	put("\nbacktrace (addresses: addr2line -f -e FILE OFFSET):\n");
	n = backtrace(frames, (int)ARRAY_SIZE(frames));
	backtrace_symbols_fd(frames, n, STDERR_FILENO);
	put("this is a bug in tandem or a library it uses: please report it with the lines above\n");
	signal(sig, SIG_DFL);
	raise(sig);
}

void crash_report_install(const char *who)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT };
	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack) };
	struct sigaction sa;
	void *warm[2];
	Dl_info di;

	crash_who = who;
	backtrace(warm, 2);		/* loads the unwinder now, not in the handler */
	dladdr((void *)crash_report_install, &di);
	sigaltstack(&ss, NULL);		/* this thread's stack may be what overflowed */
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_crash;
	sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESETHAND;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < ARRAY_SIZE(sigs); i++)
		sigaction(sigs[i], &sa, NULL);
}
