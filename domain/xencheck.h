/*
 * xencheck.h - which Xen guests the xen driver can protect, as a pure
 * function of facts read from the guest's libxl configuration (xen.c
 * reads them; tests/test_xenstream.c checks the table).
 *
 * A PVH guest is protected.  An HVM guest is refused by default: the path
 * that carries its device model's (QEMU's) state in the checkpoints
 * (dmstate.h) is built and unit-tested, and has run in the lab only a
 * little (docs/hvm.md: failovers of a guest with PV drivers, and of one
 * with an emulated e1000 that Xen suspends itself).  With
 * the lab's switch TANDEM_HVM_EXPERIMENTAL=1 in the primary's environment
 * it is taken, as unproven (XG_EXPERIMENTAL).  Refused for good, whatever
 * the type or the switch, is what no checkpoint can carry: a device model
 * in a stub domain, qemu-traditional, PCI passthrough, USB host devices,
 * and a vTPM (no device hook for its state).
 */
#ifndef TANDEM_XENCHECK_H
#define TANDEM_XENCHECK_H

#include <stdbool.h>
#include <stddef.h>

enum xen_guest_type { XG_PV, XG_PVH, XG_HVM };

struct xen_guest_facts {
	enum xen_guest_type type;
	bool stubdom;			/* device_model_stubdomain_override */
	bool qemu_traditional;		/* device_model_version = qemu-xen-traditional */
	unsigned pcidevs;		/* pci = [...] */
	unsigned usb_host_devs;		/* usbdev = [ "hostbus=...", ... ] */
	unsigned vtpms;			/* vtpm = [...] */
	bool hvm_experimental;		/* TANDEM_HVM_EXPERIMENTAL=1 (xen_hvm_switch) */
};

/* The switch's environment variable, and whether its value turns it on
 * (exactly "1"; NULL, "", "0", "yes"... leave HVM refused). */
#define XEN_HVM_SWITCH "TANDEM_HVM_EXPERIMENTAL"
bool xen_hvm_switch(const char *value);

enum xen_guest_verdict {
	XG_PROTECTED = 0,		/* checkpoint it */
	XG_NOT_YET = 1,			/* HVM: refused until its device model is checkpointed */
	XG_NEVER = 2,			/* refused for good: nothing can checkpoint it */
	XG_EXPERIMENTAL = 3,		/* HVM under the switch: checkpointed by an unproven path */
};

/* The verdict for a guest; for a refusal, `why` says what and what to do,
 * for XG_EXPERIMENTAL what is unproven (the guest's name is the caller's
 * to add). */
enum xen_guest_verdict xen_guest_check(const struct xen_guest_facts *f, char *why, size_t len);

/*
 * The state of a domain as xc_domain_getinfo() reports it.  libxc splits
 * Xen's one "shut down" flag by its reason: a guest that crashed has
 * `crashed` set and `shutdown` clear.  reason: Xen's SHUTDOWN_* (0
 * poweroff, 1 reboot, 2 suspend, 3 crash, 4 watchdog, 5 soft reset).
 */
struct xen_dom_state {
	bool dying, shutdown, crashed;
	unsigned reason;
};

/* Whether the guest ended by itself or its owner (a shutdown of any kind
 * but a suspend, a crash, or a dying domain); `what` then says how. */
bool xen_guest_ended(const struct xen_dom_state *s, char *what, size_t len);

/*
 * An HVM guest that takes its PV suspend (a Xen-aware kernel: Linux with
 * Xen support, Windows with PV drivers) freezes and thaws every device at
 * each checkpoint; an emulated NIC (QEMU's tap, dom0's vif<domid>.<n>-emu)
 * then receives nothing under checkpoints: QEMU's e1000 refuses to receive
 * until a timer on its virtual clock fires a second after each thaw's
 * reset, and that clock barely moves between checkpoints (docs/hvm.md; the
 * same under `xl remus`).  Given whether the guest suspends through its PV
 * drivers and its interfaces as dom0 names them (comma-separated): true,
 * with `why` naming the interface and what to do, when both hold.
 */
bool xen_hvm_nic_at_risk(bool pv_suspend, const char *ifaces, char *why, size_t len);

/* "poweroff", "reboot", "crash", ... for a SHUTDOWN_* reason. */
const char *xen_shutdown_reason_name(unsigned reason);

#endif
