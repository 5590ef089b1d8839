/*
 * fault.h - named fault points for failure tests (CRIU's fault_injected).
 *
 * TANDEM_FAULT="name[@n][,name[@n]...]" arms fault points: the point fires
 * the n-th time (default: first) execution reaches it.  What a point does
 * is up to its caller: most kill the process (fault_kill), some corrupt
 * (duplicate a frame, drop an ack).
 *
 * Points: before-capture, mid-capture, mid-ship, after-ship-before-ack,
 * drop-ack, duplicate-frame, backup-mid-commit, backup-before-ack,
 * primary-exit-after-release, slow-commit (the backup stalls 3 timeouts
 * before a commit, still sending heartbeats), suspend-fails (the guest
 * does not suspend, as a Xen guest that ignores the request, once),
 * suspend-stuck (the same from its hit on, for the life of the process),
 * xen-version-differs (a Xen backup takes its own version for the next
 * minor one, for the life of the process: lab/lab.sh errors),
 * restore-ends-early (a Xen backup refuses the first round just after
 * libxl's restore began, before it has read a byte: the stream ends while
 * libxl builds the domain), null-call (the backup calls a NULL function
 * pointer before a commit: the crash report, lib/crash.h), no-xs-resume
 * (a Xen primary resumes the guest after each checkpoint without telling
 * xenstored, from the first hit for the life of the process: tandem before
 * the fix, for lab/lab.sh errors' guest_shutdown case), ignore-active (a
 * primary that hears the backup is active does not step down, from the
 * first time for the life of the process: the negative control of the
 * fault schedule, tests/test_schedule.c), verify-drop-page (with `verify`
 * on, the primary spoils one page of the checkpoint, memdom by leaving
 * it out, xen by inverting one byte of it in libxc's stream: the
 * checkpoint oracle's negative control; test digests stop from then on),
 * disk-fenced (a disk's verdict says fenced for 5 checkpoints from the
 * one the point fires at, as after a DRBD disconnect: the backup must hold
 * them), disk-skip-marker (the primary does not write that checkpoint's
 * marker but says its cut is complete: the backup must not commit it),
 * disk-hang-marker (that checkpoint's marker write takes 3 timeouts: the
 * pause is bounded by one, later cuts fail at once until it ends),
 * disk-backup-holds (a backup's stand-in disk refuses 8 checkpoints in a
 * row, its own side's reason, as a DRBD that is not whole there: every
 * primary verdict is ok, and the primary must go on taking checkpoints),
 * backup-late-loop (a backup that lost the primary's stream waits, up to
 * 5 s, until the primary's next connection is pending before it acts on
 * the loss: the race of a reconnection with the decision, made certain),
 * activate-fails (the backup's guest activation fails with EIO, after
 * its devices were activated: what a domain that cannot be restored
 * does), disk-ignore-health (from the first commit it fires at, for the
 * life of the process, a backup's DRBD disk commits without waiting for
 * DRBD to be whole here and a fresh marker: the negative control of the
 * disk fault schedule, tests/test_disk_failover.c), slow-activate (the
 * backup's activation takes 4 timeouts more, its heartbeats going on: a
 * Xen activation under an emulated CPU; a switchover must wait for it).
 */
#ifndef TANDEM_FAULT_H
#define TANDEM_FAULT_H

#include <stdbool.h>

/* Parse TANDEM_FAULT; returns 0 or -EINVAL for an unknown point name. */
int fault_init(void);

/* True when the named point fires now. */
bool fault_hit(const char *name);

/* If the named point fires now: log it and SIGKILL this process. */
void fault_kill(const char *name);

#endif
