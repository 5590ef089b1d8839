/*
 * domain.h - domain drivers behind one ops table.
 *
 * The engine (primary/, backup/) drives a protected domain only through
 * these operations.  Two drivers implement them: `xen` (the product, in
 * domain/xen.c) and `memdom` (a synthetic guest for tests and benchmarks,
 * in domain/memdom.c).
 *
 * The shape follows libxenguest's Remus loop, in which xc_domain_save()
 * calls suspend(), writes the dirty pages, calls postcopy() (resume) and
 * then checkpoint() (wait for the next epoch).  The engine calls the same
 * steps one at a time from its checkpoint thread:
 *
 *   primary:  open -> start_protection -> { suspend -> capture -> resume }*
 *             -> stop_protection -> close
 *   backup:   open -> prepare_standby -> { commit }* -> activate | discard
 *             -> close
 *
 * A driver whose library owns the loop (xen) runs that loop on its own
 * thread and meets the engine's calls at the library's callbacks.
 *
 * Return values: 0 or a negative errno; on error the driver has logged
 * what went wrong in an operator's words.
 *
 * Members that may be NULL: stop_protection, halt, discard, become_primary, probe,
 * guest_hash, verify_capture, verify_standby, dirty_pages, throttle,
 * set_speed, describe and default_vif.  All others are required for the role that uses them.
 */
#ifndef TANDEM_DOMAIN_H
#define TANDEM_DOMAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "../config/config.h"
#include "ckpt.h"

struct domain;

/* Progress of the initial copy, reported by start_protection. */
struct domain_progress {
	uint64_t pages_done, pages_total;
	unsigned round;
};

typedef void (*domain_progress_fn)(void *arg, const struct domain_progress *p);

/*
 * Where start_protection delivers the initial copy: each round's pages go
 * into a ckpt, handed to `deliver`, which ships it (blocking) before the
 * next round is captured.  Every round is part of the initial image (the
 * engine sends it with CKPT_F_INITIAL, whatever `final` says).  When
 * start_protection returns, the guest is running and tracking is on; the
 * engine then takes checkpoint 1 through suspend/capture/resume, so that
 * the output epoch is closed while the guest is suspended.
 */
struct domain_sink {
	int (*deliver)(void *arg, struct ckpt *c, bool final);
	domain_progress_fn progress;
	void *arg;
};

/* One `tandem probe` cycle (domain_ops.probe), times in microseconds. */
struct domain_probe_cycle {
	uint64_t suspend_us;		/* from the suspend request to suspended */
	uint64_t resume_us;		/* from suspended to running again */
	/* with log_dirty: pages dirtied since the previous call (UINT64_MAX
	 * on the first, or where the driver cannot tell; memdom estimates it
	 * from its write count and pattern) */
	uint64_t dirty_pages;
	/* an HVM guest's device model, inside the two times above: QEMU
	 * stopped, its state saved and read back, QEMU running again, as in
	 * a checkpoint; dm_bytes its state's size (0: no device model) */
	uint64_t dm_us, dm_bytes;
};

struct domain_ops {
	const char *name;

	/* Both roles.  open() checks the host can run this driver (kernel
	 * features, hypervisor, guest exists) and fails with -ENOTSUP and a
	 * clear message when it cannot. */
	int (*open)(struct domain *d);
	void (*close)(struct domain *d);

	/* ---- primary ---- */
	/* Turn dirty tracking on and copy the running guest in rounds until
	 * the dirty set is small, then deliver the first checkpoint.
	 * -ESHUTDOWN: the guest ended before or during the copy (as suspend's). */
	int (*start_protection)(struct domain *d, const struct domain_sink *sink);
	/* Stop the guest executing, devices stay connected.  Bounded in time:
	 * a guest that does not answer is resumed and -ETIMEDOUT returned.
	 * -ESHUTDOWN: the guest shut itself down (poweroff, reboot, crash) or
	 * is gone; protection ends cleanly, it is not a failover. */
	int (*suspend)(struct domain *d);
	/* While suspended: copy dirty pages and state into c (memory speed). */
	int (*capture)(struct domain *d, struct ckpt *c);
	/* Resume after capture (Xen: suspend_cancel, devices stay connected). */
	int (*resume)(struct domain *d);
	/* Pages the guest has written since the last capture (an estimate
	 * the engine sizes the next checkpoint by), guest running.  May be NULL. */
	int (*dirty_pages)(struct domain *d, uint64_t *pages);
	/* Stop the guest executing (pause = true) because its next checkpoint
	 * would not fit staging, or let it run again.  A paused guest is made
	 * to run again by resume() after the next capture (suspend() copes
	 * with a paused guest).  May be NULL. */
	int (*throttle)(struct domain *d, bool pause);
	/* The added-latency budget (config latency-budget): let the guest use
	 * pct percent (1..100) of the CPU it would use, 100 = no limit, as
	 * Xen's scheduler cap does; it keeps running, only slower.  The
	 * driver restores the guest's own setting at stop_protection and
	 * close.  May be NULL. */
	int (*set_speed)(struct domain *d, unsigned pct);
	/* Turn dirty tracking off; leave the guest running.  May be NULL. */
	void (*stop_protection)(struct domain *d);
	/* The backup took over (this primary is superseded): after
	 * stop_protection, stop the guest for good: pause it (destroy =
	 * false; it stays in memory, for an operator to look at or destroy)
	 * or destroy it.  0 or -errno (logged).  May be NULL. */
	int (*halt)(struct domain *d, bool destroy);

	/* ---- backup ---- */
	/* Create the standby from the initial copy (c has CKPT_F_INITIAL set
	 * for each round before the first checkpoint). */
	int (*prepare_standby)(struct domain *d);
	/* Apply a complete checkpoint to the standby, atomically: after an
	 * error or a crash the standby equals the previous commit. */
	int (*commit)(struct domain *d, const struct ckpt *c);
	/* Start the guest from the last committed checkpoint. */
	int (*activate)(struct domain *d);
	/* Destroy the standby (clean stop of the primary).  May be NULL. */
	void (*discard)(struct domain *d);
	/* Re-protection: the guest activated on this host (after activate())
	 * becomes the primary's guest, running on, and d->role is now
	 * ROLE_PRIMARY; d may have moved (the driver must take d as its new
	 * handle).  Then start_protection() copies it to the other host.  May
	 * be NULL: the driver cannot re-protect in place. */
	int (*become_primary)(struct domain *d);

	/* ---- `tandem probe`, outside protection ---- */
	/* Suspend the guest as a checkpoint does and resume it at once
	 * (Xen: suspend_cancel), with no dirty tracking and nothing copied:
	 * what the guest's own suspend path costs every pause.  With
	 * log_dirty, dirty tracking is on (from the first call until close)
	 * and cleaned while suspended, as a checkpoint would, still copying
	 * nothing.  Fills *out (struct domain_probe_cycle); never leaves the
	 * guest suspended.  May be NULL. */
	int (*probe)(struct domain *d, bool log_dirty, struct domain_probe_cycle *out);

	/* SHA-256 of the guest's memory and state as the driver sees them now
	 * (primary: the live guest, call while suspended; backup: the last
	 * committed image).  For tests.  May be NULL. */
	int (*guest_hash)(struct domain *d, uint8_t out[32]);
	/* The checkpoint oracle (config `verify`, domain/verify.h).
	 * Primary, after capture() while the guest is still suspended: add to
	 * v up to v->cap pfns (the page the negative control dropped, if any,
	 * then the next window of a rotation over the guest's memory) with
	 * each page's hash as the guest holds it now (VERIFY_UNSTABLE: it
	 * changed while suspended), and the vCPU state's hash.
	 * Backup, after commit() of c, which carried v: hash the standby's
	 * pages v->pfns into got[] and its vCPU state into got_vcpu (*has_vcpu
	 * false when the driver cannot).  0 or -errno.  Both may be NULL. */
	int (*verify_capture)(struct domain *d, struct verify_set *v);
	int (*verify_standby)(struct domain *d, const struct ckpt *c, const struct verify_set *v,
			      uint64_t *got, uint8_t got_vcpu[32], bool *has_vcpu);
	/* One line about the guest for status ("synthetic", domid, ...).  May be NULL. */
	void (*describe)(struct domain *d, char *buf, size_t len);
	/* Primary: the driver's own figures for status (Xen HVM: the device
	 * model's state size and QMP times): json, members each with a
	 * trailing comma; else text lines of "  " indent.  Empty when it has
	 * none.  May be NULL. */
	void (*status_figures)(struct domain *d, bool json, char *buf, size_t len);
	/* Primary, after open: the interface that carries the guest's output
	 * when the configuration names none (`vif` empty), e.g. Xen's
	 * "vif<domid>.0": the domid differs per host, so one file serves both.
	 * 0, or -errno (no default).  May be NULL. */
	int (*default_vif)(struct domain *d, char *buf, size_t len);
};

struct domain {
	const struct domain_ops *ops;
	const struct tandem_config *cfg;
	int role;			/* ROLE_PRIMARY or ROLE_BACKUP */
	void *priv;			/* the driver's own state */
	char error[256];		/* why the driver refused (the backup sends it to the primary) */
	/* Fault point verify-drop-page, the oracle's negative control: the
	 * engine sets drop_page before capture(); a driver that honours it
	 * leaves one dirty page out of that checkpoint, says which in
	 * dropped_pfn and sets dropped (verify_capture then includes it). */
	bool drop_page, dropped;
	uint64_t dropped_pfn;
	/* The most pages the guest can have (0: unknown).  When a checkpoint
	 * of all of them fits half the free staging, the engine does not
	 * count dirty pages between checkpoints: no count could change what
	 * it decides (on Xen each count pauses the whole domain). */
	uint64_t max_pages;
};

extern const struct domain_ops memdom_ops;
extern const struct domain_ops xen_ops;

/* The ops for cfg->domain. */
const struct domain_ops *domain_ops_for(const struct tandem_config *cfg);

#endif
