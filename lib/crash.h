/*
 * crash.h - a last word when tandem dies of a fatal signal.
 *
 * On SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT (an assert in a library)
 * the handler writes the signal, the faulting address, the program counter,
 * the return address on top of the stack (what called a NULL function
 * pointer) and a backtrace to stderr, which is the daemon's log, then dies
 * of the same signal (core dump and exit status as without it).  Redis'
 * crash report, smaller.
 */
#ifndef TANDEM_CRASH_H
#define TANDEM_CRASH_H

/* Install the handler for this process; who names it in the report. */
void crash_report_install(const char *who);

#endif
