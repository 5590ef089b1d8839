/*
 * memdom.h - extra API of the memdom driver, for tests and benchmarks.
 *
 * memdom is a synthetic guest: a child process of the daemon that writes a
 * deterministic workload into cfg->memory bytes, tracked by the kernel's
 * userfaultfd write-protection (WP-async) and harvested with PAGEMAP_SCAN.
 * It exists to test and benchmark the engine; it protects no real workload.
 * The driver itself is reached through memdom_ops (domain/domain.h).
 *
 * The guest's "vCPU" is a small block holding a magic, the workload
 * parameters, the step counter and the PRNG state.  Step k+1 writes 16
 * bytes (the step number and a PRNG value) at a PRNG-chosen 16-byte slot
 * of one page chosen by the workload pattern, so the memory after k steps
 * is a pure function of k and the parameters; the rate limit only paces
 * the steps.  In a checkpoint the block travels as STATE_VCPU,
 * MEMDOM_STATE_LEN bytes, every field little-endian:
 *
 *   u64 magic  u32 version  u32 pattern  u64 memory  u64 hotset
 *   u64 rate   u64 seed     u64 step     u64 prng
 *
 * Network (memdom-netns, memdom-observer, memdom-packet-steps): the guest
 * child joins the configured network namespace right after fork (primary:
 * at open; backup: at activation), so its packets leave through that
 * namespace's interface, a veth whose host end is the vif the output
 * buffering guards.  Once protection has started (backup: at once) step
 * k * N sends packet k to the observer, 32 bytes, little-endian:
 *
 *   u32 magic "tdmo" (0x6f6d6474)  u32 version 1  u64 k  u64 step  u64 prng
 *
 * a pure function of the guest state, so a guest activated from checkpoint
 * C goes on with the packet after C's.  Sending is part of its step:
 * suspend lets a step that is sending finish, so no checkpoint splits one.
 */
#ifndef TANDEM_MEMDOM_H
#define TANDEM_MEMDOM_H

#include <stdint.h>
#include <sys/types.h>

#include "domain.h"

#define MEMDOM_STATE_LEN 64u
#define MEMDOM_STATE_MAGIC 0x7076436d6f646d6dull	/* "mmdomCvp" */
#define MEMDOM_STATE_VERSION 1u

/*
 * The guest's step counter: the number of page writes it has done since it
 * was created (including those before a checkpoint it was activated from).
 * Primary: the running guest.  Backup: the activated guest, or before
 * activation the step of the last committed vCPU state.  0 when there is
 * none.  Cheap (reads shared memory), callable at any time from any thread.
 */
uint64_t memdom_guest_steps(struct domain *d);

/* Pid of the guest child process, or 0 when none is running. */
pid_t memdom_guest_pid(struct domain *d);

/*
 * Decode the step counter from a checkpoint's STATE_VCPU block.
 * Returns 0, or -EINVAL when c holds no valid memdom vCPU state.
 */
int memdom_state_step(const struct ckpt *c, uint64_t *step);

/*
 * Let the guest run until its step counter equals `step`, where it stops
 * itself (after completing that step, so memory and vCPU state agree
 * exactly).  Waits up to timeout_ms for the stop.  Afterwards the guest
 * counts as suspended: resume() continues it.  Works on the primary's guest
 * and on an activated backup guest.  Returns 0, -EINVAL if the guest is
 * already past `step` or suspended, -ETIMEDOUT, or -ESRCH if it died.
 */
int memdom_run_until(struct domain *d, uint64_t step, unsigned timeout_ms);

/*
 * SHA-256 of the running guest child's memory and vCPU block, read from the
 * child now (call while it is stopped), in either role.  Same digest layout
 * as guest_hash.  Returns 0, -ESRCH when no child runs, or -errno.
 */
int memdom_live_hash(struct domain *d, uint8_t out[32]);

/*
 * Backup: the hash of the activated guest's memory and vCPU block, taken
 * from the child itself after fork and before it ran its first step.
 * Returns 0, or -ENOENT before activation.
 */
int memdom_activated_hash(struct domain *d, uint8_t out[32]);

/*
 * Tests only: shrink the PAGEMAP_SCAN result vector (at most its built-in
 * size) and the slice in which the initial copy is delivered, so small
 * guests exercise the scan continuation and slicing paths.  0 keeps a
 * value.
 */
void memdom_test_tune(struct domain *d, unsigned scan_regions, unsigned slice_pages);

#endif
