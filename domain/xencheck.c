/*
 * xencheck.c - which Xen guests can be protected (see xencheck.h).
 */
#include <stdio.h>
#include <string.h>

#include "xencheck.h"

enum xen_guest_verdict xen_guest_check(const struct xen_guest_facts *f, char *why, size_t len)
{
	/* What no checkpoint can carry comes first: it is final, whatever
	 * the guest's type. */
	if (f->pcidevs) {
		snprintf(why, len, "it has %u PCI passthrough device%s: a physical device's state "
			 "cannot be checkpointed nor moved to another host", f->pcidevs,
			 f->pcidevs == 1 ? "" : "s");
		return XG_NEVER;
	}
	if (f->usb_host_devs) {
		snprintf(why, len, "it has %u USB host device%s passed through: their state cannot "
			 "be checkpointed nor moved to another host", f->usb_host_devs,
			 f->usb_host_devs == 1 ? "" : "s");
		return XG_NEVER;
	}
	if (f->vtpms) {
		snprintf(why, len, "it has a vTPM: its state lives in a vTPM domain that tandem "
			 "has no device hook for, so the backup's copy would lose it");
		return XG_NEVER;
	}
	if (f->stubdom) {
		snprintf(why, len, "its device model runs in a stub domain, whose state cannot be "
			 "checkpointed; run QEMU in dom0 (device_model_stubdomain_override = 0)");
		return XG_NEVER;
	}
	if (f->qemu_traditional) {
		snprintf(why, len, "it uses qemu-xen-traditional, which cannot save its device state "
			 "per checkpoint; use device_model_version = \"qemu-xen\"");
		return XG_NEVER;
	}
	if (f->type == XG_HVM && f->hvm_experimental) {
		snprintf(why, len, "it is an HVM guest and " XEN_HVM_SWITCH "=1 is set: its device "
			 "model's (QEMU's) state is carried in every checkpoint by a path that is "
			 "UNPROVEN (lab failovers of a guest with PV drivers and of one with an "
			 "emulated e1000 that Xen suspends; an emulated NIC in a guest that "
			 "takes its PV suspend receives nothing: docs/hvm.md); a "
			 "failover may lose or corrupt its emulated devices' state: for the lab, "
			 "not for guests that matter");
		return XG_EXPERIMENTAL;
	}
	if (f->type == XG_HVM) {
		snprintf(why, len, "it is an HVM guest: tandem does not yet carry its device model's "
			 "(QEMU's) state in the checkpoints, so a failover would lose its emulated "
			 "devices' state; PVH guests are protected (type = \"pvh\")");
		return XG_NOT_YET;
	}
	return XG_PROTECTED;
}

bool xen_hvm_switch(const char *value)
{
	return value && !strcmp(value, "1");
}

bool xen_hvm_nic_at_risk(bool pv_suspend, const char *ifaces, char *why, size_t len)
{
	const char *p = ifaces, *end;

	if (!pv_suspend || !ifaces)
		return false;
	for (; *p; p = *end ? end + 1 : end) {
		size_t n;

		end = strchr(p, ',');
		if (!end)
			end = p + strlen(p);
		n = (size_t)(end - p);
		if (n > 4 && !memcmp(end - 4, "-emu", 4)) {
			snprintf(why, len, "it suspends through its PV drivers (a Xen-aware kernel), "
				 "which resets its devices at every checkpoint, and it has an emulated "
				 "NIC (%.*s): QEMU's e1000 receives nothing for a second of the guest's "
				 "time after each reset, so under checkpoints that NIC may receive "
				 "nothing (the same under xl remus; docs/hvm.md). Give the guest PV "
				 "network drivers (xen_platform_pci = 1), or boot it without Xen "
				 "support (Linux: nopv) so that Xen suspends it", (int)n, p);
			return true;
		}
	}
	return false;
}

const char *xen_shutdown_reason_name(unsigned reason)
{
	switch (reason) {
	case 0: return "poweroff";
	case 1: return "reboot";
	case 3: return "crash";
	case 4: return "watchdog";
	case 5: return "soft reset";
	default: return "shutdown";
	}
}

bool xen_guest_ended(const struct xen_dom_state *s, char *what, size_t len)
{
	if (s->dying) {
		snprintf(what, len, "its domain is being destroyed");
		return true;
	}
	if (s->crashed) {
		snprintf(what, len, "it crashed");
		return true;
	}
	if (s->shutdown && s->reason != 2) {
		snprintf(what, len, "it shut itself down (%s)", xen_shutdown_reason_name(s->reason));
		return true;
	}
	return false;
}
