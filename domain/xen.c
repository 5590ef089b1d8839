/*
 * xen.c - the `xen` domain driver: protect a running PVH guest (HVM: xencheck.h).
 *
 * Primary: xc_domain_save(XC_STREAM_REMUS) runs on its own thread with
 * tandem's callbacks.  Its io_fd is a pipe that a drain thread empties into
 * local memory at memory speed, cutting the stream after each CHECKPOINT
 * record, so the guest's pause never includes the network.  The engine's
 * step calls meet libxenguest's callbacks:
 *
 *   engine suspend()  -> lets the suspend callback suspend the guest
 *   engine capture()  -> waits for the checkpoint's bytes (postcopy called,
 *                        CHECKPOINT record drained) and takes them
 *   engine resume()   -> lets the postcopy callback resume the guest with
 *                        xc_domain_resume(fast = 1): suspend_cancel, the
 *                        guest's devices stay connected
 *
 * The stream is wrapped for libxl (header, LIBXC_CONTEXT, CHECKPOINT_END
 * after each checkpoint) and the guest's libxl configuration travels as
 * JSON in the first round's state block.
 *
 * Backup: libxl_domain_create_restore() with a checkpointed (Remus) stream
 * runs on its own thread and reads from a socketpair; commit() writes one
 * complete checkpoint and returns once libxl has read it to its
 * CHECKPOINT_END (libxc applies a checkpoint only when its CHECKPOINT
 * record arrives).  activate() closes the stream after the last complete
 * checkpoint: libxc fails over to it, libxl attaches the devices, and the
 * guest is unpaused.
 *
 * HVM guests (only with TANDEM_HVM_EXPERIMENTAL=1, unproven: its pieces
 * are unit-tested, and in the lab failovers passed of a guest with PV
 * drivers and of a guest Xen suspends itself with an emulated e1000; an
 * emulated NIC in a guest that takes its PV suspend receives nothing under
 * checkpoints, xl remus' too: docs/hvm.md): the same, plus the device model's part of each checkpoint
 * (dmstate.h), in libxl's order for `xl remus` (hvm-device-model notes
 * and libxl_dom_suspend.c): once the guest is suspended, QMP `stop` and
 * QEMU's device state into memory; libxc sends the pages; at the cut the
 * drain appends EMULATOR_XENSTORE_DATA and EMULATOR_CONTEXT before
 * CHECKPOINT_END (libxl_stream_write.c); `cont` just before the guest
 * resumes.  QEMU's dirty log is on from libxc's setup to its cleanup
 * (switch_qemu_logdirty).  The backup needs nothing new to keep the state:
 * libxl's restore writes each checkpoint's EMULATOR_CONTEXT to
 * qemu-resume.<domid> and starts QEMU from it at activation.
 *
 * Only this file talks to libxenctrl, libxenguest, libxenstore and libxl.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define XC_WANT_COMPAT_MAP_FOREIGN_API
#include <xenctrl.h>
#include <xenguest.h>
#include <xenstore.h>
#include <libxl.h>
#include <libxl_utils.h>

#define LOG_MODULE "xen"
#include "../lib/fault.h"
#include "../lib/log.h"
#include "../lib/testlog.h"
#include "../lib/util.h"
#include "../lib/wire.h"
#include "dmstate.h"
#include "domain.h"
#include "precopy.h"
#include "qmp.h"
#include "verify.h"
#include "xencheck.h"
#include "xenstream.h"

/* A guest under QEMU TCG can take seconds to take a suspend request, more
 * to complete it. */
#define SUSPEND_ACK_TIMEOUT_MS 10000
/* An HVM guest's PV suspend freezes its emulated devices: in the lab it
 * took 11-19 s, and once did not take the request within 10 s at all
 * (docs/hvm.md).  libxl gives a guest 60 s (libxl_dom_suspend.c). */
#define SUSPEND_ACK_TIMEOUT_HVM_MS 60000
#define SUSPEND_DONE_TIMEOUT_MS 60000
#define COMMIT_TIMEOUT_MS 60000
#define PROLOGUE_WAIT_MS 30000	/* libxl to read the stream's prologue before it ends */
/* The live copy is shipped in pieces of at most this much (and at most a
 * quarter of staging-limit); the drain stops reading libxenguest's stream
 * while this much waits to be shipped, so the pipe blocks xc_domain_save:
 * the link's pace, not the guest's size, sets the primary's memory. */
#define PIECE_MAX (16u << 20)
/* The live copy's rounds (precopy.h): at most this many, the guest
 * slowed meanwhile while they do not converge (Xen's old save loop
 * stopped at 30 too, DEF_MAX_ITERS 29). */
#define PRECOPY_MAX_ROUNDS 30
/* Each QMP step of an HVM checkpoint (open, save, cont): libxl bounds its
 * dirty-log switch by 10 s (libxl_dom_save.c); a TCG lab is slow. */
#define DM_TIMEOUT_MS 10000

enum xphase { XP_IDLE, XP_PRECOPY, XP_WANT_SUSPEND, XP_SUSPENDED, XP_CAPTURED, XP_RUNNING,
	      XP_DONE };

struct xen {
	bool probe_logdirty;		/* `tandem probe --log-dirty` turned it on */
	xc_interface *xch;
	struct xs_handle *xsh;
	libxl_ctx *ctx;
	struct xlog *lg;
	bool quiet;			/* stopping or discarding: libxc's errors are expected */
	uint32_t domid;
	char name[CONFIG_NAME_MAX + 1];

	pthread_mutex_t lock;
	pthread_cond_t cond;

	/* primary */
	pthread_t save_thr, drain_thr;
	bool save_started;
	int io_rd, io_wr;
	enum xphase phase;
	bool go_suspend, go_resume, stopping, save_failed;
	bool suspend_taken;		/* the guest took a request, not yet suspended */
	bool throttled;			/* paused by throttle(): its next checkpoint would not fit */
	/* set_speed(): the scheduler cap tandem set, and the guest's own to
	 * put back (credit2, else credit: both have weight and cap) */
	bool capped, credit1;
	uint16_t own_cap, own_weight;
	/* A capped guest must run to take a suspend request (at 5% of a TCG
	 * vCPU the lab's 1 GiB guest took more than 10 s): cap_lift() puts
	 * the guest's own cap back from the request until it runs again,
	 * cap_restore() then set_cap, the one set_speed() chose.  cap_lock:
	 * set_speed() runs on the link thread, the suspend on the save thread. */
	pthread_mutex_t cap_lock;
	uint16_t set_cap;
	bool cap_lifted;
	char ended[160];		/* how the guest ended under protection ("" while it runs) */
	int suspend_rc;
	struct xenstream_cut cut;
	uint8_t *buf;			/* drained bytes not yet handed over */
	size_t len, cap;
	size_t piece_max;		/* live-copy piece and drain bound (PIECE_MAX) */
	uint64_t cut_ckpts;		/* checkpoints completely drained */
	uint64_t taken_ckpts;		/* checkpoints handed to the engine */
	size_t cut_len;			/* bytes of buf up to the last cut */
	char *config_json;
	bool prologue_sent;

	/* HVM under TANDEM_HVM_EXPERIMENTAL=1: the device model (dmstate.h) */
	bool hvm_switch;		/* the switch, read once at open */
	bool hvm;			/* this guest's checkpoints carry QEMU's state */
	uint8_t uuid[16];		/* for libxl's QMP lock */
	struct qmp *qmp;		/* this checkpoint's session, suspend to resume */
	bool dm_stopped;		/* QEMU may be stopped: `cont` owed before the guest runs */
	uint8_t *dm_state;		/* the last save, for the drain to append at the cut */
	size_t dm_len;
	char *dm_xs;			/* its physmap keys (EMULATOR_XENSTORE_DATA), or NULL */
	size_t dm_xs_len;
	bool dm_missing;		/* a cut found no device state: the stream is wrong */
	struct precopy pre;		/* the live copy's policy (precopy.h) */
	struct domain *d;		/* for the save thread's callbacks */
	bool pre_slowed;		/* the live copy slowed the guest: restore after the stop-and-copy */
	struct dmstate_stats dm_st;	/* the last save's figures (status) */
	size_t dm_st_xs;		/* and its physmap keys' bytes */
	uint64_t dm_saves;		/* saves so far */
	uint64_t dm_open_us;		/* the last session's connect, greeting, capabilities */
	int hvm_suspend_how;		/* the suspend path last logged: 0 none, 1 xenstore, 2 Xen */

	/* the checkpoint oracle (config `verify`) */
	xen_pfn_t *v_space;		/* the guest's populated pfns, special pages left out */
	uint64_t v_space_n, v_cursor;
	xen_pfn_t *v_win;		/* this checkpoint's window */
	uint64_t *v_pass1;		/* its hashes as the guest was suspended */
	uint32_t v_win_n, v_win_cap;
	uint64_t *v_pass2;
	uint64_t v_pass1_ns;		/* how long pass 1 took (debug log) */

	/* backup */
	pthread_t restore_thr;
	bool restore_started, restore_done;
	int rs_wr, rs_rd;
	int restore_rc;
	uint32_t new_domid;
	libxl_domain_config d_config;
	bool have_config;
	uint64_t rs_sent;		/* bytes written to libxl's stream */
	size_t rs_skip;			/* of the next round: the prologue, sent already */
	struct xenstream_cut rcut;	/* to check the primary's Xen version */
	int own_version;		/* this host's, as xc_version says (0: not read) */
	uint32_t standby_domid;		/* for the oracle (INVALID_DOMID: not looked up) */
	uint8_t last_vcpu[32];		/* the primary's vCPU hash of the last verified checkpoint */
	bool have_last_vcpu;
};

static struct xen *X(struct domain *d) { return d->priv; }

/* ---- libxc's and libxl's messages, into tandem's log ----------------------- */

/*
 * Their errors are tandem's errors, except while protection stops or the
 * standby is discarded: closing the stream under them makes libxc and
 * libxl report a failed save or restore, which is what was asked for; an
 * operator should not read it as a failure (debug level then).  Their
 * info lines (two per checkpoint on the backup) and progress (a line per
 * batch of the live copy) go to debug, except progress's first and last.
 */
struct xlog {
	xentoollog_logger vtable;
	struct xen *x;
};

static void xlog_vmessage(xentoollog_logger *lg, xentoollog_level level, int errnoval,
			  const char *context, const char *format, va_list al)
	__attribute__((format(printf, 5, 0)));
static void xlog_vmessage(xentoollog_logger *lg, xentoollog_level level, int errnoval,
			  const char *context, const char *format, va_list al)
{
	struct xen *x = ((struct xlog *)lg)->x;
	bool quiet = x && __atomic_load_n(&x->quiet, __ATOMIC_RELAXED);
	char msg[512];

	vsnprintf(msg, sizeof(msg), format, al);
	if (level < XTL_NOTICE || (quiet && level >= XTL_WARN))
		log_debug("%s: %s%s%s", context ? context : "xen", msg, errnoval >= 0 ? ": " : "",
			  errnoval >= 0 ? strerror(errnoval) : "");
	else if (level >= XTL_ERROR)
		log_error("%s: %s%s%s", context ? context : "xen", msg, errnoval >= 0 ? ": " : "",
			  errnoval >= 0 ? strerror(errnoval) : "");
	else if (level >= XTL_WARN)
		log_warn("%s: %s", context ? context : "xen", msg);
	else
		log_info("%s: %s", context ? context : "xen", msg);
}

static void xlog_progress(xentoollog_logger *lg, const char *context, const char *doing_what,
			  int percent, unsigned long done, unsigned long total)
{
	(void)lg;
	if (done == 0 || percent >= 100)
		log_info("%s: %s: %lu/%lu", context ? context : "xen", doing_what, done, total);
	else
		log_debug("%s: %s: %lu/%lu (%d%%)", context ? context : "xen", doing_what, done, total,
			  percent);
}

static void xlog_destroy(xentoollog_logger *lg)
{
	free(lg);
}

static struct xlog *xlog_new(struct xen *x)
{
	struct xlog *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->vtable.vmessage = xlog_vmessage;
	l->vtable.progress = xlog_progress;
	l->vtable.destroy = xlog_destroy;
	l->x = x;
	return l;
}

/* Log a refusal and keep it for the peer (the backup sends it in an ERROR). */
#define refuse(d, ...)                                                    \
	do {                                                              \
		snprintf((d)->error, sizeof((d)->error), __VA_ARGS__);    \
		log_error("%s", (d)->error);                              \
	} while (0)

static bool is_suspended(struct xen *x);
static int resume_guest(struct xen *x);
static int check_guest_type(struct xen *x);
static void leave_running(struct xen *x);
static void settle_restore_stream(struct xen *x);
static void verify_pass1(struct xen *x);
static int buf_append(struct xen *x, const void *p, size_t n);
static int verify_scan(struct domain *d);

static const char *guest_name(const struct domain *d)
{
	return d->cfg->xen_domain[0] ? d->cfg->xen_domain : d->cfg->name;
}

/* ---- open / close --------------------------------------------------------- */

static int xen_open(struct domain *d)
{
	struct xen *x = calloc(1, sizeof(*x));
	xc_dominfo_t info;
	int rc;

	if (!x)
		return -ENOMEM;
	d->priv = x;
	x->io_rd = x->io_wr = x->rs_wr = x->rs_rd = -1;
	x->standby_domid = (uint32_t)INVALID_DOMID;
	pthread_mutex_init(&x->lock, NULL);
	pthread_mutex_init(&x->cap_lock, NULL);
	pthread_cond_init(&x->cond, NULL);
	snprintf(x->name, sizeof(x->name), "%s", guest_name(d));

	if (access("/proc/xen/capabilities", F_OK) != 0 && access("/dev/xen/privcmd", F_OK) != 0) {
		log_error("this host is not running Xen (no /proc/xen, no /dev/xen/privcmd): the xen "
			  "driver needs a Xen dom0; domain = memdom runs the synthetic test guest");
		return -ENOTSUP;
	}
	x->lg = xlog_new(x);
	if (!x->lg)
		return -ENOMEM;
	x->xch = xc_interface_open((xentoollog_logger *)x->lg, (xentoollog_logger *)x->lg, 0);
	if (!x->xch) {
		log_error("cannot open the Xen control interface (xc_interface_open): %s; "
			  "run as root in dom0", strerror(errno));
		return -ENOTSUP;
	}
	x->xsh = xs_open(0);
	if (!x->xsh) {
		log_error("cannot connect to xenstore: %s (is xenstored running? systemctl start "
			  "xen.service)", strerror(errno));
		return -ENOTSUP;
	}
	rc = libxl_ctx_alloc(&x->ctx, LIBXL_VERSION, 0, (xentoollog_logger *)x->lg);
	if (rc) {
		log_error("cannot create a libxl context (%d)", rc);
		return -ENOTSUP;
	}
	if (d->role == ROLE_BACKUP) {
		/* The standby gets the guest's name: a domain by that name here is
		 * either a standby a backup left behind (paused) or the guest
		 * itself, after a failover.  Never destroyed on our own. */
		uint32_t other;

		if (libxl_name_to_domid(x->ctx, x->name, &other) == 0) {
			bool paused = xc_domain_getinfo(x->xch, other, 1, &info) == 1 &&
				      info.domid == other && info.paused;

			if (paused)
				log_error("a paused domain named '%s' is already on this host (domain "
					  "%u): a standby left by a backup that did not stop cleanly; if "
					  "no tandem backup runs for it, remove it (xl destroy %s) and "
					  "start again", x->name, other, x->name);
			else
				log_error("guest '%s' already runs on this host (domain %u), after a "
					  "failover?  Protect it from here: tandem primary on this host, "
					  "tandem backup on the other", x->name, other);
			return -EEXIST;
		}
		return 0;
	}

	if (libxl_name_to_domid(x->ctx, x->name, &x->domid)) {
		log_error("guest '%s' not found on this host (xl list shows the running domains)",
			  x->name);
		return -ENOENT;
	}
	if (xc_domain_getinfo(x->xch, x->domid, 1, &info) != 1 || info.domid != x->domid) {
		log_error("cannot read the state of guest '%s' (domain %u)", x->name, x->domid);
		return -EIO;
	}
	memcpy(x->uuid, info.handle, sizeof(x->uuid));
	/* The lab's switch for HVM guests: read here, once, for this process. */
	x->hvm_switch = xen_hvm_switch(getenv(XEN_HVM_SWITCH));
	if (x->hvm_switch)
		log_warn(XEN_HVM_SWITCH "=1: HVM guests will be checkpointed with their device "
			 "model's state by an EXPERIMENTAL, UNPROVEN path (lab failovers of guests "
			 "with PV drivers and of a guest Xen suspends, with an emulated e1000; "
			 "docs/hvm.md): for the lab only");
	/* Log-dirty mode, which every checkpoint needs, runs on HAP for HVM and
	 * PVH guests that use it, and on shadow paging otherwise (PV guests
	 * always).  Debian's Xen, for one, is built without shadow paging. */
	if (!info.hvm || !info.hap) {
		xc_physinfo_t phys = { 0 };
		bool shadow = xc_physinfo(x->xch, &phys) == 0 &&
			      (phys.capabilities & XEN_SYSCTL_PHYSCAP_shadow);

		if (!shadow && !info.hvm) {
			log_error("guest '%s' is a PV guest and this Xen has no shadow paging (xl info: "
				  "virt_caps without 'shadow'): log-dirty mode, and so checkpointing, is "
				  "unavailable for PV guests here; PVH and HVM guests work (type = "
				  "\"pvh\" in its xl config)", x->name);
			return -ENOTSUP;
		}
		if (!shadow) {
			log_error("guest '%s' runs without HAP and this Xen has no shadow paging: "
				  "log-dirty mode, and so checkpointing, is unavailable; run it with "
				  "hap = 1 (the default)", x->name);
			return -ENOTSUP;
		}
		if (!info.hvm)
			log_warn("guest '%s' is a PV guest: log-dirty runs on shadow paging; tandem "
				 "is tested with PVH guests", x->name);
	}
	if ((rc = check_guest_type(x)))
		return rc;
	if (is_suspended(x)) {
		log_warn("guest '%s' was left suspended (by an earlier run?): resuming it", x->name);
		resume_guest(x);
	}
	log_info("guest '%s' is domain %u (%s, %lu MiB)", x->name, x->domid,
		 info.hap ? "HVM container with HAP" : "HVM container",
		 info.max_memkb / 1024);
	d->max_pages = info.max_memkb / 4;
	return 0;
}

/*
 * Refuse what cannot be checkpointed (xencheck.h): the facts come from the
 * guest's libxl configuration.  0, or -ENOTSUP with the reason logged.
 */
static int check_guest_type(struct xen *x)
{
	struct xen_guest_facts f = { .type = XG_PVH };
	libxl_domain_config cfg;
	char why[400];
	enum xen_guest_verdict v;

	libxl_domain_config_init(&cfg);
	if (libxl_retrieve_domain_configuration(x->ctx, x->domid, &cfg, NULL)) {
		libxl_domain_config_dispose(&cfg);
		log_error("cannot read the libxl configuration of guest '%s' (domain %u): was it "
			  "created with xl?", x->name, x->domid);
		return -EIO;
	}
	f.type = cfg.c_info.type == LIBXL_DOMAIN_TYPE_HVM ? XG_HVM :
		 cfg.c_info.type == LIBXL_DOMAIN_TYPE_PV ? XG_PV : XG_PVH;
	if (f.type == XG_HVM) {
		f.stubdom = !libxl_defbool_is_default(cfg.b_info.device_model_stubdomain) &&
			    libxl_defbool_val(cfg.b_info.device_model_stubdomain);
		f.qemu_traditional = cfg.b_info.device_model_version ==
				     LIBXL_DEVICE_MODEL_VERSION_QEMU_XEN_TRADITIONAL;
	}
	f.pcidevs = (unsigned)MAX(cfg.num_pcidevs, 0);
	f.vtpms = (unsigned)MAX(cfg.num_vtpms, 0);
	for (int i = 0; i < cfg.num_usbdevs; i++)
		if (cfg.usbdevs[i].type == LIBXL_USBDEV_TYPE_HOSTDEV)
			f.usb_host_devs++;
	libxl_domain_config_dispose(&cfg);
	f.hvm_experimental = x->hvm_switch;
	v = xen_guest_check(&f, why, sizeof(why));
	if (v == XG_PROTECTED)
		return 0;
	if (v == XG_EXPERIMENTAL) {
		x->hvm = true;
		log_warn("guest '%s' is protected EXPERIMENTALLY: %s", x->name, why);
		return 0;
	}
	log_error("guest '%s' cannot be protected%s: %s", x->name,
		  v == XG_NEVER ? "" : " yet", why);
	return -ENOTSUP;
}

static int xen_set_speed(struct domain *d, unsigned pct);
static void cap_lift(struct xen *x);
static void cap_restore(struct xen *x);

static void xen_close(struct domain *d)
{
	struct xen *x = X(d);

	if (!x)
		return;
	if (x->capped)
		xen_set_speed(d, 100);
	if (x->probe_logdirty &&
	    xc_shadow_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_OFF, NULL, 0))
		log_error("cannot turn log-dirty mode off for guest '%s': %s", x->name, strerror(errno));
	if (x->restore_started) {
		if (x->rs_wr >= 0) {
			settle_restore_stream(x);
			close(x->rs_wr);
		}
		x->rs_wr = -1;
		pthread_join(x->restore_thr, NULL);
	}
	if (x->io_rd >= 0)
		close(x->io_rd);
	if (x->rs_rd >= 0)
		close(x->rs_rd);
	if (x->have_config)
		libxl_domain_config_dispose(&x->d_config);
	free(x->buf);
	free(x->dm_state);
	free(x->dm_xs);
	qmp_close(x->qmp);
	free(x->config_json);
	libxl_ctx_free(x->ctx);
	xs_close(x->xsh);
	if (x->xch)
		xc_interface_close(x->xch);
	if (x->lg)
		xtl_logger_destroy((xentoollog_logger *)x->lg);
	free(x);
	d->priv = NULL;
}

/* ---- primary: suspend, the save thread and its callbacks ----------------- */

/* True when the domain sits in the suspended state (xl list: ---ss-). */
static bool is_suspended(struct xen *x)
{
	xc_dominfo_t info;

	return xc_domain_getinfo(x->xch, x->domid, 1, &info) == 1 && info.domid == x->domid &&
	       info.shutdown && info.shutdown_reason == SHUTDOWN_suspend;
}

/*
 * The guest shut itself down (poweroff, reboot, crash, watchdog) or its
 * domain is gone (xl destroy, or xl tidied it up after its shutdown):
 * true, with what happened in `what`.  A suspend is not a shutdown here.
 */
_Static_assert(SHUTDOWN_poweroff == 0 && SHUTDOWN_reboot == 1 && SHUTDOWN_suspend == 2 &&
	       SHUTDOWN_crash == 3 && SHUTDOWN_watchdog == 4 && SHUTDOWN_soft_reset == 5,
	       "xencheck.c names Xen's SHUTDOWN_* reasons by number");

static bool guest_ended(struct xen *x, char *what, size_t len)
{
	xc_dominfo_t info;

	if (xc_domain_getinfo(x->xch, x->domid, 1, &info) != 1 || info.domid != x->domid) {
		snprintf(what, len, "its domain %u is gone (destroyed, or xl tidied it up after it "
			 "shut down)", x->domid);
		return true;
	}
	{
		struct xen_dom_state st = { info.dying, info.shutdown, info.crashed,
					    info.shutdown_reason };

		return xen_guest_ended(&st, what, len);
	}
}

/*
 * Resume a suspended guest with suspend_cancel and tell xenstored so, as
 * libxl's domain resume does: xenstored marks a domain that shut down (for
 * a suspend, too) and announces a domain's shutdown only once until
 * XS_RESUME clears the mark, so without it xl would miss the guest's
 * later poweroff, reboot or crash.  0 or -errno (logged).
 */
static int resume_guest(struct xen *x)
{
	static bool skip_xs;	/* fault point no-xs-resume: sticky once hit */
	int rc = 0;

	if (xc_domain_resume(x->xch, x->domid, 1)) {
		rc = -errno;
		log_error("xc_domain_resume(fast) of domain %u failed: %s", x->domid, strerror(errno));
		return rc;
	}
	if (!skip_xs)
		skip_xs = fault_hit("no-xs-resume");
	if (!skip_xs && !xs_resume_domain(x->xsh, x->domid)) {
		rc = errno ? -errno : -EIO;
		log_error("xs_resume_domain(%u) failed: %s; xl may miss the guest's next shutdown",
			  x->domid, strerror(-rc));
	}
	return rc;
}

/* ---- HVM: the device model's part of a checkpoint (dmstate.h) -------------
 *
 * EXPERIMENTAL (TANDEM_HVM_EXPERIMENTAL=1): this compiles and its pieces
 * are unit-tested (dmstate against a fake QEMU, the records' bytes); with
 * QEMU 7.2 on Xen 4.17 in the lab (lab.sh hvm, docs/hvm.md) a guest with PV
 * drivers failed over as it should (2 of 3 runs; the third hit a bound).  Everything here runs on the save thread
 * (libxc calls the callbacks synchronously), except the drain's append.
 */

/* A QMP session with the guest's QEMU under libxl's lock: 0 or -errno (logged). */
static int dm_open(struct xen *x, struct qmp **q)
{
	char sock[128], lock[256], err[QMP_ERROR_MAX];
	uint64_t t0 = now_us();
	int rc;

	*q = NULL;
	if (qmp_libxl_socket_path(x->domid, sock, sizeof(sock)) ||
	    qmp_libxl_lock_path(x->domid, x->uuid, lock, sizeof(lock)))
		return -ENAMETOOLONG;
	rc = qmp_open(sock, lock, DM_TIMEOUT_MS, q, err, sizeof(err));
	if (rc) {
		log_error("guest '%s': cannot reach its device model (QEMU): %s", x->name, err);
		return rc;
	}
	x->dm_open_us = now_us() - t0;
	return 0;
}

static void dm_close(struct xen *x)
{
	qmp_close(x->qmp);
	x->qmp = NULL;
}

/*
 * Let QEMU run again if it may be stopped, on this checkpoint's session,
 * or on a new one if that broke.  0 or -errno (logged).
 */
static int dm_cont(struct xen *x)
{
	char err[400] = "";
	int rc = -ENOTCONN;

	if (!x->dm_stopped)
		return 0;
	if (x->qmp) {
		rc = dmstate_cont(x->qmp, DM_TIMEOUT_MS, err, sizeof(err));
		if (rc && rc != -EREMOTEIO)
			dm_close(x);	/* broken: try once more on a new session */
	}
	if (rc && rc != -EREMOTEIO) {
		rc = dm_open(x, &x->qmp);
		if (!rc)
			rc = dmstate_cont(x->qmp, DM_TIMEOUT_MS, err, sizeof(err));
	}
	if (rc) {
		log_error("guest '%s': its device model (QEMU) may still be stopped, so its emulated "
			  "devices do not answer: %s; `xl qemu-monitor-command %s cont` lets it run",
			  x->name, err[0] ? err : "no QMP session", x->name);
		return rc;
	}
	x->dm_stopped = false;
	return 0;
}

/*
 * The device model's physmap keys, packed as EMULATOR_XENSTORE_DATA's
 * body, as libxl_dom_save.c:libxl__save_emulator_xenstore_data reads
 * them: start_addr, size and name of each entry under
 * /local/domain/0/device-model/<domid>/physmap (QEMU writes them for VRAM
 * it relocates, hw/i386/xen/xen-hvm.c:xen_save_physmap).  None: *out NULL.
 */
static int dm_physmap(struct xen *x, char **out, size_t *len)
{
	static const char *const sub[] = { "start_addr", "size", "name" };
	char dir[128];
	char **ents;
	unsigned n = 0;
	int rc = 0;

	*out = NULL;
	*len = 0;
	snprintf(dir, sizeof(dir), "/local/domain/0/device-model/%u/physmap", x->domid);
	ents = xs_directory(x->xsh, XBT_NULL, dir, &n);
	if (!ents)
		return 0;	/* no physmap: no record, as libxl */
	for (unsigned i = 0; i < n && !rc; i++) {
		for (size_t j = 0; j < ARRAY_SIZE(sub) && !rc; j++) {
			char path[384], key[256];
			unsigned vlen = 0;
			char *v;

			snprintf(path, sizeof(path), "%s/%s/%s", dir, ents[i], sub[j]);
			snprintf(key, sizeof(key), "physmap/%s/%s", ents[i], sub[j]);
			v = xs_read(x->xsh, XBT_NULL, path, &vlen);
			if (!v) {
				log_error("guest '%s': cannot read %s: %s", x->name, path,
					  strerror(errno));
				rc = -EIO;
				break;
			}
			rc = dmstate_xs_pack(out, len, key, v);
			if (rc)
				log_error("guest '%s': cannot carry the device model's key %s: %s",
					  x->name, key, strerror(-rc));
			free(v);
		}
	}
	free(ents);
	if (rc) {
		free(*out);
		*out = NULL;
		*len = 0;
	}
	return rc;
}

/* In the pause, once the guest is suspended: QEMU stopped, its state and
 * physmap kept for the drain to append at this checkpoint's cut. */
static int dm_save(struct xen *x)
{
	struct dmstate_stats st = { 0 };
	uint8_t *state = NULL;
	char *xs = NULL, err[400];
	size_t len = 0, xs_len = 0;
	int rc;

	x->dm_stopped = true;	/* from `stop` on, whatever comes of it */
	rc = dmstate_save(x->qmp, DM_TIMEOUT_MS, &state, &len, &st, err, sizeof(err));
	if (rc) {
		log_error("guest '%s': checkpoint abandoned, its device model's state could not be "
			  "saved: %s", x->name, err);
		return rc;
	}
	rc = dm_physmap(x, &xs, &xs_len);
	if (rc) {
		free(state);
		return rc;
	}
	pthread_mutex_lock(&x->lock);
	free(x->dm_state);
	free(x->dm_xs);
	x->dm_state = state;
	x->dm_len = len;
	x->dm_xs = xs;
	x->dm_xs_len = xs_len;
	x->dm_st = st;
	x->dm_st_xs = xs_len;
	x->dm_saves++;
	pthread_mutex_unlock(&x->lock);
	log_debug("guest '%s': device model: %zu bytes of state, %zu of physmap keys; QMP open "
		  "%" PRIu64 " us (before the suspend), stop %" PRIu64 " us, save %" PRIu64 " us",
		  x->name, len, xs_len, x->dm_open_us, st.stop_us, st.save_us);
	testlog("dmstate bytes=%zu physmap_bytes=%zu open_us=%" PRIu64 " stop_us=%" PRIu64
		" save_us=%" PRIu64 " read_us=%" PRIu64, len, xs_len, x->dm_open_us, st.stop_us,
		st.save_us, st.read_us);
	return 0;
}

/* One emulator record onto the drain buffer (lock held). */
static int append_emulator(struct xen *x, uint32_t type, const void *body, size_t n)
{
	size_t total = xenstream_libxl_emulator_len(n);
	uint8_t *rec = total ? malloc(total) : NULL;
	int rc;

	if (!rec)
		return total ? -ENOMEM : -EMSGSIZE;
	xenstream_libxl_emulator_record(rec, type, XL_EMULATOR_QEMU_UPSTREAM, 0, body, n);
	rc = buf_append(x, rec, total);
	free(rec);
	return rc;
}

/* The device model's saved state is spent (carried, or a new protection). */
static void dm_drop(struct xen *x)
{
	free(x->dm_state);
	free(x->dm_xs);
	x->dm_state = NULL;
	x->dm_xs = NULL;
	x->dm_len = x->dm_xs_len = 0;
}

/*
 * At a cut, before CHECKPOINT_END (lock held): this checkpoint's
 * EMULATOR_XENSTORE_DATA (if any keys) and EMULATOR_CONTEXT, in libxl's
 * order (libxl_stream_write.c: write_emulator_xenstore_record, then
 * write_emulator_context_record, then write_checkpoint_end_record).  A
 * cut without a saved state marks the stream wrong: capture fails.
 */
static void append_dm_records(struct xen *x)
{
	int rc = 0;

	if (!x->dm_state) {
		log_error("guest '%s': checkpoint %" PRIu64 " has no device-model state to carry; "
			  "it is not shipped and protection stops", x->name, x->cut.checkpoints);
		x->dm_missing = true;
		return;
	}
	if (x->dm_xs_len)
		rc = append_emulator(x, XL_REC_EMULATOR_XENSTORE_DATA, x->dm_xs, x->dm_xs_len);
	if (!rc)
		rc = append_emulator(x, XL_REC_EMULATOR_CONTEXT, x->dm_state, x->dm_len);
	if (rc) {
		log_error("guest '%s': cannot add the device model's state to checkpoint %" PRIu64
			  ": %s", x->name, x->cut.checkpoints, strerror(-rc));
		x->dm_missing = true;
	}
	dm_drop(x);
}

/* Poll until the guest is suspended or `end` (ms) passes.  Stops early,
 * with x->ended set, when the guest shut itself down or is gone. */
static bool wait_suspended(struct xen *x, uint64_t end)
{
	useconds_t nap = 50;

	for (;;) {
		if (is_suspended(x))
			return true;
		if (guest_ended(x, x->ended, sizeof(x->ended)))
			return false;
		if (now_ms() > end)
			return false;
		/* Poll fast at first, then back off to 2 ms: the guest shares the
		 * host's CPUs with this loop while it suspends. */
		usleep(nap);
		nap = MIN(nap * 2, 2000);
	}
}

/*
 * Withdraw an unanswered suspend request.  The guest takes a request by
 * clearing control/shutdown, and once it has, it suspends whatever we write
 * later: so read and clear in one transaction.  Returns true if withdrawn,
 * false if the guest took it at the last minute (or xenstore failed).
 */
static bool withdraw_suspend(struct xen *x, const char *path)
{
	for (;;) {
		xs_transaction_t t = xs_transaction_start(x->xsh);
		unsigned len = 0;
		char *v;
		bool taken;

		if (t == XBT_NULL)
			return false;
		v = xs_read(x->xsh, t, path, &len);
		taken = !v || strcmp(v, "suspend") != 0;
		free(v);
		if (taken) {
			xs_transaction_end(x->xsh, t, true);
			return false;
		}
		if (!xs_write(x->xsh, t, path, "", 0)) {
			xs_transaction_end(x->xsh, t, true);
			return false;
		}
		if (xs_transaction_end(x->xsh, t, false))
			return true;
		if (errno != EAGAIN)
			return false;
	}
}

/*
 * Ask the guest to suspend through xenstore and wait until it has.  Two
 * bounds: the guest must take the request within SUSPEND_ACK_TIMEOUT_MS
 * (SUSPEND_ACK_TIMEOUT_HVM_MS for an HVM guest; else it is withdrawn and
 * the guest keeps running), and once it has
 * taken it, it must be suspended within SUSPEND_DONE_TIMEOUT_MS (a guest
 * that took it suspends even if late: never give up on it early and leave
 * it suspended behind our back).
 */
static int list_vifs(unsigned domid, char *buf, size_t len);

static int suspend_guest(struct xen *x)
{
	char path[128];
	uint64_t t0;
	int ack_ms = x->hvm ? SUSPEND_ACK_TIMEOUT_HVM_MS : SUSPEND_ACK_TIMEOUT_MS;

	cap_lift(x);
	t0 = now_ms();

	if (x->hvm) {
		/* libxl_dom_suspend.c:domain_suspend_callback_common: an HVM
		 * guest without PV drivers (no callback IRQ), or in an ACPI
		 * sleep state, is suspended by Xen without its cooperation.
		 * EXPERIMENTAL, unproven (see the HVM section above). */
		uint64_t cbirq = 0, s_state = 0;

		int how;

		xc_hvm_param_get(x->xch, x->domid, HVM_PARAM_CALLBACK_IRQ, &cbirq);
		xc_hvm_param_get(x->xch, x->domid, HVM_PARAM_ACPI_S_STATE, &s_state);
		how = !cbirq || s_state ? 2 : 1;
		if (how != x->hvm_suspend_how) {	/* the lab's evidence: which path, once */
			char ifs[256], why[600];

			x->hvm_suspend_how = how;
			if (list_vifs(x->domid, ifs, sizeof(ifs)) == 0 &&
			    xen_hvm_nic_at_risk(how == 1, ifs, why, sizeof(why)))
				log_warn("guest '%s': %s", x->name, why);
			log_debug("guest '%s' (HVM): suspended %s (HVM_PARAM_CALLBACK_IRQ %#" PRIx64
				  ", ACPI S%" PRIu64 ")", x->name, how == 2 ?
				  "by Xen (xc_domain_shutdown), no PV drivers to ask" :
				  "by its PV drivers (xenstore control/shutdown)", cbirq, s_state);
		}
		if (how == 2) {
			if (xc_domain_shutdown(x->xch, x->domid, SHUTDOWN_suspend)) {
				log_error("guest '%s': xc_domain_shutdown(suspend) failed: %s", x->name,
					  strerror(errno));
				return -EIO;
			}
			if (wait_suspended(x, t0 + SUSPEND_ACK_TIMEOUT_MS))
				return 0;
			if (x->ended[0]) {
				log_error("guest '%s' ended under protection: %s", x->name, x->ended);
				return -ESHUTDOWN;
			}
			log_error("guest '%s' (HVM, no PV drivers) is not suspended %d ms after Xen was "
				  "asked to; checkpoint abandoned", x->name, SUSPEND_ACK_TIMEOUT_MS);
			return -ETIMEDOUT;
		}
	}
	snprintf(path, sizeof(path), "/local/domain/%u/control/shutdown", x->domid);
	if (!xs_write(x->xsh, XBT_NULL, path, "suspend", 7)) {
		log_error("cannot write %s: %s", path, strerror(errno));
		return -EIO;
	}
	if (wait_suspended(x, t0 + (uint64_t)ack_ms))
		return 0;
	if (x->ended[0]) {
		xs_write(x->xsh, XBT_NULL, path, "", 0);
		log_error("guest '%s' ended under protection: %s", x->name, x->ended);
		return -ESHUTDOWN;
	}
	if (withdraw_suspend(x, path)) {
		log_error("guest '%s' did not answer the suspend request within %d ms: request "
			  "withdrawn, guest left running, checkpoint abandoned", x->name, ack_ms);
		return -ETIMEDOUT;
	}
	/* It will suspend, however late (a paused or starved guest): wait for
	 * it; if that takes too long, protection stops and stop_protection
	 * waits once more to resume it, so that it is not left suspended. */
	x->suspend_taken = true;
	log_warn("guest '%s' took the suspend request but is not suspended after %d ms; "
		 "waiting up to %d s more", x->name, ack_ms, SUSPEND_DONE_TIMEOUT_MS / 1000);
	if (wait_suspended(x, now_ms() + SUSPEND_DONE_TIMEOUT_MS)) {
		x->suspend_taken = false;
		log_info("guest '%s' suspended after %" PRIu64 " ms", x->name, now_ms() - t0);
		return 0;
	}
	if (x->ended[0]) {
		x->suspend_taken = false;
		log_error("guest '%s' ended under protection: %s", x->name, x->ended);
		return -ESHUTDOWN;
	}
	log_error("guest '%s' took the suspend request but did not suspend within %d s; "
		  "checkpoint abandoned, protection stops", x->name,
		  (ack_ms + SUSPEND_DONE_TIMEOUT_MS) / 1000);
	return -ETIMEDOUT;
}

static int cb_suspend(void *data)
{
	struct xen *x = data;
	int rc;

	pthread_mutex_lock(&x->lock);
	x->phase = XP_WANT_SUSPEND;
	pthread_cond_broadcast(&x->cond);
	while (!x->go_suspend && !x->stopping)
		pthread_cond_wait(&x->cond, &x->lock);
	x->go_suspend = false;
	if (x->stopping) {
		pthread_mutex_unlock(&x->lock);
		return 0;
	}
	pthread_mutex_unlock(&x->lock);
	/* HVM: the QMP session first, while the guest still runs; then, once
	 * the guest is suspended, QEMU stopped and its state saved (as libxl:
	 * the device model after the guest), before libxc reads the dirty
	 * pages; the oracle's first pass after QEMU stopped writing. */
	rc = x->hvm ? dm_open(x, &x->qmp) : 0;
	if (rc == 0) {
		rc = suspend_guest(x);
		if (rc)
			cap_restore(x);	/* left running */
	}
	if (rc == 0 && x->hvm)
		rc = dm_save(x);
	if (rc && x->hvm && !x->dm_stopped)
		dm_close(x);	/* QEMU untouched: let libxl's lock go at once */
	if (rc == 0 && x->v_space_n)
		verify_pass1(x);
	pthread_mutex_lock(&x->lock);
	x->suspend_rc = rc;
	x->phase = XP_SUSPENDED;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
	return rc == 0;
}

/* libxenguest has written this checkpoint (CHECKPOINT record included). */
static int cb_postcopy(void *data)
{
	struct xen *x = data;
	int rc, dm_rc;

	pthread_mutex_lock(&x->lock);
	x->phase = XP_CAPTURED;
	pthread_cond_broadcast(&x->cond);
	while (!x->go_resume && !x->stopping)
		pthread_cond_wait(&x->cond, &x->lock);
	x->go_resume = false;
	pthread_mutex_unlock(&x->lock);
	/* HVM: QEMU runs first (its ioreq server is off while it is stopped),
	 * then the guest, then the session ends (libxl's lock released).  A
	 * QEMU that did not run again stops protection; leave_running tries
	 * once more. */
	dm_rc = x->hvm ? dm_cont(x) : 0;
	if (x->pre_slowed) {	/* the stop-and-copy is done: full speed again */
		x->pre_slowed = false;
		if (xen_set_speed(x->d, 100) == 0)
			log_info("guest '%s': the live copy's stop-and-copy is done; the guest runs "
				 "at full speed again", x->name);
	}
	rc = resume_guest(x);
	cap_restore(x);
	if (x->hvm)
		dm_close(x);
	pthread_mutex_lock(&x->lock);
	x->phase = XP_RUNNING;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
	return rc == 0 && dm_rc == 0;
}

/*
 * libxenguest asks every HVM-container guest to switch the device model's
 * dirty logging, on in its setup, off in its cleanup (xg_sr_save_x86_hvm.c).
 * A PVH guest has no device model: nothing to do (libxl skips PVH too).
 * An HVM guest's QEMU (EXPERIMENTAL): `xen-set-global-dirty-log` on a
 * session of its own, so QEMU's writes to guest memory (DMA emulation)
 * land in Xen's log-dirty bitmap and travel with the next checkpoint.
 * libxc wants 0 for success.
 */
static int cb_qemu_logdirty(uint32_t domid, unsigned enable, void *data)
{
	struct xen *x = data;
	struct qmp *q = NULL;
	char err[400];
	int rc;

	(void)domid;
	if (!x->hvm)
		return 0;
	rc = dm_open(x, &q);
	if (!rc) {
		rc = dmstate_dirty_log(q, enable, DM_TIMEOUT_MS, err, sizeof(err));
		if (rc)
			log_error("guest '%s': %s", x->name, err);
	}
	qmp_close(q);
	if (!rc)
		log_info("guest '%s': QEMU's dirty log %s", x->name, enable ?
			 "on: its writes to guest memory go into the checkpoints" : "off");
	return rc ? -1 : 0;
}

static int cb_checkpoint(void *data)
{
	struct xen *x = data;
	int more;

	pthread_mutex_lock(&x->lock);
	more = !x->stopping;
	pthread_mutex_unlock(&x->lock);
	return more;
}

/*
 * libxenguest's question, twice a round of the live copy: go on, or stop
 * and copy (precopy.h).  Slows the guest through the scheduler's cap
 * while rounds do not converge; cb_postcopy gives it its speed back.
 */
static int cb_precopy_policy(struct precopy_stats st, void *data)
{
	struct xen *x = data;
	long before = x->pre.last_dirty;
	enum precopy_decision dec;
	unsigned pct;
	bool stopping;

	pthread_mutex_lock(&x->lock);
	stopping = x->stopping;
	pthread_mutex_unlock(&x->lock);
	if (stopping)
		return XGS_POLICY_ABORT;	/* protection is being stopped: no suspend */
	dec = precopy_decide(&x->pre, st.iteration, st.dirty_count, &pct);
	if (pct) {
		log_warn("guest '%s': the live copy does not converge (round %u: %ld dirty pages, "
			 "the round before %ld): slowing the guest to %u%% (the scheduler's cap) "
			 "until it does", x->name, st.iteration, st.dirty_count, before, pct);
		if (xen_set_speed(x->d, pct) == 0)
			x->pre_slowed = true;
	}
	if (dec != PRECOPY_STOP)
		return XGS_POLICY_CONTINUE_PRECOPY;
	if (x->pre.converged)
		log_info("guest '%s': live copy: %ld pages dirty after %u rounds (budget %" PRIu64
			 "): the last round, then the stop-and-copy", x->name, st.dirty_count,
			 st.iteration, x->pre.target_pages);
	else
		log_warn("guest '%s': the live copy did not converge in %u rounds: %ld pages dirty "
			 "(budget %" PRIu64 "); the last round, then the stop-and-copy", x->name,
			 st.iteration, st.dirty_count, x->pre.target_pages);
	testlog("precopy stop rounds=%u dirty=%ld budget=%" PRIu64 " converged=%d pct=%u",
		st.iteration, st.dirty_count, x->pre.target_pages, x->pre.converged, x->pre.pct);
	return XGS_POLICY_STOP_AND_COPY;
}

static void *save_main(void *arg)
{
	struct domain *d = arg;
	struct xen *x = X(d);
	struct save_callbacks cb = {
		.suspend = cb_suspend,
		.precopy_policy = cb_precopy_policy,
		.postcopy = cb_postcopy,
		.checkpoint = cb_checkpoint,
		.switch_qemu_logdirty = cb_qemu_logdirty,
		.data = x,
	};
	int rc;

	rc = xc_domain_save(x->xch, x->io_wr, x->domid, XCFLAGS_LIVE, &cb, XC_STREAM_REMUS, -1);
	if (rc && !x->stopping && x->ended[0])
		log_info("xc_domain_save of domain %u ended: the guest ended (%s)", x->domid,
			 x->ended);
	else if (rc && !x->stopping && x->suspend_rc)
		log_error("xc_domain_save of domain %u ended: the guest was not suspended; "
			  "protection stops (log-dirty off, guest running)", x->domid);
	else if (rc && !x->stopping)
		log_error("xc_domain_save of domain %u ended: %s (log-dirty unavailable? a PV guest "
			  "on a Xen without shadow paging fails here)", x->domid, strerror(errno));
	close(x->io_wr);
	pthread_mutex_lock(&x->lock);
	x->save_failed = rc != 0 && !x->stopping;
	x->phase = XP_DONE;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
	return NULL;
}

/* Append to the drain buffer (lock held). */
static int buf_append(struct xen *x, const void *p, size_t n)
{
	if (x->len + n > x->cap) {
		size_t cap = x->cap ? x->cap : (4u << 20);
		uint8_t *nb;
		while (cap < x->len + n)
			cap *= 2;
		nb = realloc(x->buf, cap);
		if (!nb)
			return -ENOMEM;
		x->buf = nb;
		x->cap = cap;
	}
	memcpy(x->buf + x->len, p, n);
	x->len += n;
	return 0;
}

/* The drain thread: pipe -> memory, cutting after each CHECKPOINT record. */
static void *drain_main(void *arg)
{
	struct xen *x = arg;
	size_t chunk = 1u << 20;
	uint8_t *tmp = malloc(chunk);

	while (tmp) {
		ssize_t r;
		size_t off = 0;

		/* Backpressure during the live copy: let the pipe fill and
		 * block libxenguest until the link has taken a piece.  Never
		 * during a checkpoint: its bytes drain at memory speed. */
		pthread_mutex_lock(&x->lock);
		while (x->phase == XP_PRECOPY && x->len >= x->piece_max && !x->stopping)
			pthread_cond_wait(&x->cond, &x->lock);
		pthread_mutex_unlock(&x->lock);
		r = read(x->io_rd, tmp, chunk);

		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			break;
		}
		pthread_mutex_lock(&x->lock);
		while (off < (size_t)r) {
			long used = xenstream_feed(&x->cut, tmp + off, (size_t)r - off);
			if (used < 0) {
				log_error("malformed libxc stream from xc_domain_save");
				x->save_failed = true;
				break;
			}
			buf_append(x, tmp + off, (size_t)used);
			off += (size_t)used;
			if (x->cut.checkpoints > x->cut_ckpts) {
				uint8_t end[8];

				if (x->hvm)
					append_dm_records(x);
				buf_append(x, end, xenstream_libxl_checkpoint_end(end));
				x->cut_ckpts = x->cut.checkpoints;
				x->cut_len = x->len;
			}
		}
		pthread_cond_broadcast(&x->cond);
		pthread_mutex_unlock(&x->lock);
	}
	free(tmp);
	return NULL;
}

/* Hand the first n bytes of the drain buffer to c (lock held). */
static int take_bytes(struct xen *x, struct ckpt *c, size_t n)
{
	int rc = ckpt_append_blob(c, x->buf, n);

	if (!rc) {
		memmove(x->buf, x->buf + n, x->len - n);
		x->len -= n;
		x->cut_len -= MIN(x->cut_len, n);
		pthread_cond_broadcast(&x->cond);	/* the drain may read again */
	}
	return rc;
}

static int xen_start_protection(struct domain *d, const struct domain_sink *sink)
{
	struct xen *x = X(d);
	libxl_domain_config cfg;
	struct ckpt *c = ckpt_new(0);
	int fds[2], rc = 0;
	unsigned round = 0;

	if (!c)
		return -ENOMEM;
	/* A new stream: the first, or after a failed or abandoned one (the
	 * engine stopped protection first, so no thread of the last runs). */
	if (x->io_rd >= 0)
		close(x->io_rd);
	x->io_rd = x->io_wr = -1;
	x->stopping = x->save_failed = x->go_suspend = x->go_resume = false;
	x->suspend_taken = false;
	x->suspend_rc = 0;
	x->ended[0] = '\0';
	x->dm_missing = false;
	dm_drop(x);
	memset(&x->cut, 0, sizeof(x->cut));
	x->len = x->cut_len = 0;
	x->cut_ckpts = x->taken_ckpts = 0;
	x->piece_max = MIN((size_t)PIECE_MAX, (size_t)(d->cfg->staging_limit / 4));
	/* the stop-and-copy's budget: what one piece holds */
	precopy_init(&x->pre, x->piece_max / 4096, PRECOPY_MAX_ROUNDS);
	x->d = d;
	x->pre_slowed = false;
	free(x->config_json);
	x->config_json = NULL;
	__atomic_store_n(&x->quiet, false, __ATOMIC_RELAXED);
	/* A guest that ended (its last copy failed with it, or it shut down
	 * since) is not copied again: domain.h, -ESHUTDOWN. */
	if (guest_ended(x, x->ended, sizeof(x->ended))) {
		log_error("guest '%s' ended: %s", x->name, x->ended);
		ckpt_free(c);
		return -ESHUTDOWN;
	}
	/* The guest's libxl configuration, for the backup to create its twin. */
	libxl_domain_config_init(&cfg);
	if (libxl_retrieve_domain_configuration(x->ctx, x->domid, &cfg, NULL)) {
		log_error("cannot read the libxl configuration of domain %u", x->domid);
		libxl_domain_config_dispose(&cfg);
		ckpt_free(c);
		return guest_ended(x, x->ended, sizeof(x->ended)) ? -ESHUTDOWN : -EIO;
	}
	x->config_json = libxl_domain_config_to_json(x->ctx, &cfg);
	libxl_domain_config_dispose(&cfg);
	if (!x->config_json || strlen(x->config_json) >= WIRE_STATE_MAX) {
		ckpt_free(c);
		return -EIO;
	}
	x->v_space_n = 0;
	if (d->cfg->verify && (rc = verify_scan(d)) != 0) {
		log_warn("checkpoint oracle: cannot list the pages of guest '%s': %s; checkpoints "
			 "go unverified", x->name, strerror(-rc));
		x->v_space_n = 0;
		rc = 0;
	}
	if (pipe2(fds, O_CLOEXEC) < 0) {
		ckpt_free(c);
		return -errno;
	}
	fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
	x->io_rd = fds[0];
	x->io_wr = fds[1];
	{
		uint8_t pro[32];
		buf_append(x, pro, xenstream_libxl_prologue(pro));
	}
	x->phase = XP_PRECOPY;
	pthread_create(&x->drain_thr, NULL, drain_main, x);
	pthread_create(&x->save_thr, NULL, save_main, d);
	pthread_setname_np(x->drain_thr, "tandem-drain");
	pthread_setname_np(x->save_thr, "tandem-xcsave");
	x->save_started = true;

	/* Deliver the live precopy in pieces until libxenguest wants to suspend. */
	pthread_mutex_lock(&x->lock);
	for (;;) {
		bool last;
		int avail = 0;

		while (x->len < MIN((size_t)8u << 20, x->piece_max) && x->phase == XP_PRECOPY)
			pthread_cond_wait(&x->cond, &x->lock);
		if (x->phase == XP_DONE) {
			rc = -EIO;
			break;
		}
		last = x->phase == XP_WANT_SUSPEND;
		if (last) {
			/* all precopy writes have returned: wait until the pipe is empty */
			pthread_mutex_unlock(&x->lock);
			while (ioctl(x->io_rd, FIONREAD, &avail) == 0 && avail > 0)
				usleep(100);
			pthread_mutex_lock(&x->lock);
		}
		ckpt_reset(c, 0);
		if (round == 0)
			ckpt_set_state(c, STATE_DEVICE, x->config_json, (uint32_t)strlen(x->config_json) + 1);
		/* the last piece takes everything; the others at most piece_max */
		take_bytes(x, c, last ? x->len : MIN(x->len, x->piece_max));
		pthread_mutex_unlock(&x->lock);
		rc = sink->deliver(sink->arg, c, last);
		if (sink->progress) {
			struct domain_progress pr = { round + 1, last ? round + 1 : round + 2, round };
			sink->progress(sink->arg, &pr);
		}
		round++;
		pthread_mutex_lock(&x->lock);
		if (rc || last)
			break;
	}
	pthread_mutex_unlock(&x->lock);
	ckpt_free(c);
	if (!rc)
		log_info("guest '%s': live copy done in %u pieces; checkpoints start", x->name, round);
	else if (rc != -ESHUTDOWN && guest_ended(x, x->ended, sizeof(x->ended))) {
		log_error("guest '%s' ended during its live copy: %s", x->name, x->ended);
		rc = -ESHUTDOWN;
	}
	return rc;
}

/* Pages dirtied since libxc's last CLEAN (the last checkpoint): Xen's
 * log-dirty count, read without clearing it.  Xen pauses the whole domain
 * for it (paging_log_dirty_op: domain_pause for a PEEK as for a CLEAN),
 * so a running vCPU is forced out and back in at each look. */
static int xen_dirty_pages(struct domain *d, uint64_t *pages)
{
	struct xen *x = X(d);
	xc_shadow_op_stats_t stats = { 0 };

	if (xc_logdirty_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_PEEK, NULL, 0, 0,
				&stats) < 0)
		return -errno ? -errno : -EIO;
	*pages = stats.dirty_count;
	return 0;
}

static int xen_throttle(struct domain *d, bool pause)
{
	struct xen *x = X(d);

	if (pause == x->throttled)
		return 0;
	if (pause ? xc_domain_pause(x->xch, x->domid) : xc_domain_unpause(x->xch, x->domid)) {
		int rc = -errno ? -errno : -EIO;

		log_error("cannot %s guest '%s': %s", pause ? "pause" : "unpause", x->name,
			  strerror(-rc));
		return rc;
	}
	x->throttled = pause;
	return 0;
}

/*
 * The added-latency budget's brake: the scheduler's cap for the guest,
 * pct percent of each of its vCPUs (cap is in percent of one physical
 * CPU, summed over the domain's vCPUs; 0 = none).  At 100 the guest's own
 * cap comes back.
 */
static int sched_get(struct xen *x, uint16_t *weight, uint16_t *cap)
{
	struct xen_domctl_sched_credit2 c2;
	struct xen_domctl_sched_credit c1;

	if (xc_sched_credit2_domain_get(x->xch, x->domid, &c2) == 0) {
		x->credit1 = false;
		*weight = c2.weight;
		*cap = c2.cap;
		return 0;
	}
	if (xc_sched_credit_domain_get(x->xch, x->domid, &c1) == 0) {
		x->credit1 = true;
		*weight = c1.weight;
		*cap = c1.cap;
		return 0;
	}
	return -(errno ? errno : EIO);
}

static int sched_set(struct xen *x, uint16_t weight, uint16_t cap)
{
	int r;

	if (x->credit1) {
		struct xen_domctl_sched_credit c1 = { .weight = weight, .cap = cap };

		r = xc_sched_credit_domain_set(x->xch, x->domid, &c1);
	} else {
		struct xen_domctl_sched_credit2 c2 = { .weight = weight, .cap = cap };

		r = xc_sched_credit2_domain_set(x->xch, x->domid, &c2);
	}
	return r ? -(errno ? errno : EIO) : 0;
}

static int set_speed_locked(struct xen *x, unsigned pct)
{
	xc_dominfo_t info;
	uint16_t cap;
	int rc;

	if (!x->capped) {
		if (pct >= 100)
			return 0;
		if ((rc = sched_get(x, &x->own_weight, &x->own_cap))) {
			log_error("cannot read guest '%s''s scheduler cap (credit2 or credit "
				  "scheduler needed): %s", x->name, strerror(-rc));
			return rc;
		}
	}
	if (pct >= 100) {
		cap = x->own_cap;
	} else {
		if (xc_domain_getinfo(x->xch, x->domid, 1, &info) != 1 || info.domid != x->domid)
			return -ESRCH;
		cap = (uint16_t)MIN(65535u, pct * (info.max_vcpu_id + 1));
		if (x->own_cap && x->own_cap < cap)
			cap = x->own_cap;	/* never looser than the guest's own */
	}
	/* lifted for a suspend: the new cap applies when the guest runs again */
	if (!(x->cap_lifted && pct < 100) && (rc = sched_set(x, x->own_weight, cap))) {
		if (rc == -ESRCH)	/* the guest is gone: said where that is found */
			log_debug("guest '%s''s scheduler cap not set to %u%%: its domain is gone",
				  x->name, cap);
		else
			log_error("cannot set guest '%s''s scheduler cap to %u%%: %s", x->name,
				  cap, strerror(-rc));
		return rc;
	}
	x->set_cap = cap;
	x->capped = pct < 100;
	return 0;
}

static int xen_set_speed(struct domain *d, unsigned pct)
{
	struct xen *x = X(d);
	int rc;

	if (pct < 1 || pct > 100)
		return -EINVAL;
	pthread_mutex_lock(&x->cap_lock);
	rc = set_speed_locked(x, pct);
	pthread_mutex_unlock(&x->cap_lock);
	return rc;
}

/* The guest's own cap while it takes a suspend request (see cap_lock). */
static void cap_lift(struct xen *x)
{
	int rc;

	pthread_mutex_lock(&x->cap_lock);
	if (x->capped && !x->cap_lifted) {
		if ((rc = sched_set(x, x->own_weight, x->own_cap)) == 0) {
			x->cap_lifted = true;
			log_debug("guest '%s': its cap of %u%% lifted for the suspend", x->name,
				  x->set_cap);
		} else {
			log_warn("guest '%s': cannot lift its cap of %u%% for the suspend (%s): it "
				 "may take the request late", x->name, x->set_cap, strerror(-rc));
		}
	}
	pthread_mutex_unlock(&x->cap_lock);
}

/* The guest runs again (resumed, or never suspended): set_speed()'s cap back. */
static void cap_restore(struct xen *x)
{
	int rc;

	pthread_mutex_lock(&x->cap_lock);
	if (x->cap_lifted) {
		x->cap_lifted = false;
		if (x->capped && (rc = sched_set(x, x->own_weight, x->set_cap)))
			log_error("guest '%s': cannot put its cap of %u%% back after the suspend: "
				  "%s", x->name, x->set_cap, strerror(-rc));
	}
	pthread_mutex_unlock(&x->cap_lock);
}

static int xen_suspend(struct domain *d)
{
	struct xen *x = X(d);
	int rc;

	/* a guest paused by throttle() must run to take the suspend request */
	if (x->throttled && (rc = xen_throttle(d, false)) != 0)
		return rc;

	pthread_mutex_lock(&x->lock);
	while (x->phase != XP_WANT_SUSPEND && x->phase != XP_DONE)
		pthread_cond_wait(&x->cond, &x->lock);
	if (x->phase != XP_DONE) {
		x->go_suspend = true;
		pthread_cond_broadcast(&x->cond);
		while (x->phase == XP_WANT_SUSPEND)
			pthread_cond_wait(&x->cond, &x->lock);
	}
	/* A guest that ended in the request makes libxc's save fail at once:
	 * the save thread may be done before this wakes, and the guest's end
	 * (-ESHUTDOWN: protection ends, exit 6) must not read as a failed
	 * checkpoint of a guest that runs on (the lab, session 27) */
	rc = x->ended[0] ? -ESHUTDOWN : x->phase == XP_DONE ? -EIO : x->suspend_rc;
	pthread_mutex_unlock(&x->lock);
	return rc;
}

static int xen_capture(struct domain *d, struct ckpt *c)
{
	struct xen *x = X(d);
	uint64_t want;
	int rc;

	pthread_mutex_lock(&x->lock);
	want = x->taken_ckpts + 1;
	while (!(x->phase == XP_CAPTURED && x->cut_ckpts >= want) && x->phase != XP_DONE)
		pthread_cond_wait(&x->cond, &x->lock);
	if (x->cut_ckpts < want || x->dm_missing) {
		pthread_mutex_unlock(&x->lock);
		return -EIO;
	}
	rc = take_bytes(x, c, x->cut_len);
	x->taken_ckpts = want;
	pthread_mutex_unlock(&x->lock);
	/* the oracle's negative control: one byte of one shipped page altered
	 * (a dropped page could be one the standby already holds) */
	if (!rc && d->drop_page && xenstream_alter_page(c->blob, c->blob_len, &d->dropped_pfn) == 0)
		d->dropped = true;
	d->drop_page = false;
	return rc;
}

static int xen_resume(struct domain *d)
{
	struct xen *x = X(d);

	pthread_mutex_lock(&x->lock);
	if (x->phase == XP_SUSPENDED) {
		/* suspend succeeded but capture failed: still let postcopy resume */
		while (x->phase == XP_SUSPENDED)
			pthread_cond_wait(&x->cond, &x->lock);
	}
	if (x->phase == XP_CAPTURED) {
		x->go_resume = true;
		pthread_cond_broadcast(&x->cond);
		while (x->phase == XP_CAPTURED)
			pthread_cond_wait(&x->cond, &x->lock);
	}
	pthread_mutex_unlock(&x->lock);
	if (x->phase != XP_DONE || !x->save_failed)
		return 0;
	/* (the save thread is done: x->ended is this thread's now) */
	if (x->ended[0] || guest_ended(x, x->ended, sizeof(x->ended))) {
		log_error("guest '%s' ended while suspended for a checkpoint: %s", x->name,
			  x->ended);
		return -ESHUTDOWN;	/* protection ends: exit 6, not a failed resume */
	}
	return -EIO;
}

/*
 * The guest shut itself down under protection.  xl stops watching a domain
 * once it has seen it suspend (the first checkpoint), so the action the
 * guest's configuration names for this shutdown (on_poweroff, on_reboot,
 * on_crash, on_watchdog) is tandem's to apply, as xl would have: destroy,
 * restart (destroy, then create it again from the same configuration,
 * unprotected), coredump-destroy / -restart (the dump under
 * /var/lib/xen/dump, as xl), preserve (leave it).  rename-restart and
 * soft-reset are left to the operator, said so.
 */
static void apply_shutdown_action(struct xen *x)
{
	static const char *const action_names[] = {
		[LIBXL_ACTION_ON_SHUTDOWN_DESTROY] = "destroy",
		[LIBXL_ACTION_ON_SHUTDOWN_RESTART] = "restart",
		[LIBXL_ACTION_ON_SHUTDOWN_RESTART_RENAME] = "rename-restart",
		[LIBXL_ACTION_ON_SHUTDOWN_PRESERVE] = "preserve",
		[LIBXL_ACTION_ON_SHUTDOWN_COREDUMP_DESTROY] = "coredump-destroy",
		[LIBXL_ACTION_ON_SHUTDOWN_COREDUMP_RESTART] = "coredump-restart",
		[LIBXL_ACTION_ON_SHUTDOWN_SOFT_RESET] = "soft-reset",
	};
	libxl_domain_config cfg;
	libxl_action_on_shutdown act;
	xc_dominfo_t info;
	const char *key;
	char dump[300];
	uint32_t newid = (uint32_t)INVALID_DOMID;
	int rc;

	if (xc_domain_getinfo(x->xch, x->domid, 1, &info) != 1 || info.domid != x->domid ||
	    info.dying || !(info.shutdown || info.crashed) || !x->config_json)
		return;		/* gone already (xl destroy), or no configuration to act on */
	libxl_domain_config_init(&cfg);
	if (libxl_domain_config_from_json(x->ctx, &cfg, x->config_json)) {
		log_error("guest '%s': cannot read its configuration to apply its shutdown action; "
			  "it stays shut down (xl destroy %s, or xl create it again)", x->name, x->name);
		libxl_domain_config_dispose(&cfg);
		return;
	}
	switch (info.shutdown_reason) {
	case SHUTDOWN_poweroff: act = cfg.on_poweroff; key = "on_poweroff"; break;
	case SHUTDOWN_reboot: act = cfg.on_reboot; key = "on_reboot"; break;
	case SHUTDOWN_watchdog: act = cfg.on_watchdog; key = "on_watchdog"; break;
	case SHUTDOWN_soft_reset: act = cfg.on_soft_reset; key = "on_soft_reset"; break;
	default: act = cfg.on_crash; key = "on_crash"; break;
	}
	if (act < LIBXL_ACTION_ON_SHUTDOWN_DESTROY || act > LIBXL_ACTION_ON_SHUTDOWN_SOFT_RESET)
		act = LIBXL_ACTION_ON_SHUTDOWN_DESTROY;
	log_info("guest '%s' %s: applying its %s = %s (xl no longer watches a domain once it has "
		 "suspended)", x->name, xen_shutdown_reason_name(info.shutdown_reason), key,
		 action_names[act]);
	switch (act) {
	case LIBXL_ACTION_ON_SHUTDOWN_COREDUMP_DESTROY:
	case LIBXL_ACTION_ON_SHUTDOWN_COREDUMP_RESTART:
		snprintf(dump, sizeof(dump), "/var/lib/xen/dump/%s.%u.core", x->name, x->domid);
		if (libxl_domain_core_dump(x->ctx, x->domid, dump, NULL))
			log_error("guest '%s': core dump to %s failed", x->name, dump);
		else
			log_info("guest '%s': core dumped to %s", x->name, dump);
		/* fall through */
	case LIBXL_ACTION_ON_SHUTDOWN_DESTROY:
	case LIBXL_ACTION_ON_SHUTDOWN_RESTART:
		rc = libxl_domain_destroy(x->ctx, x->domid, NULL);
		if (rc) {
			log_error("guest '%s': cannot destroy domain %u (libxl error %d); it stays shut "
				  "down", x->name, x->domid, rc);
			break;
		}
		if (act == LIBXL_ACTION_ON_SHUTDOWN_DESTROY ||
		    act == LIBXL_ACTION_ON_SHUTDOWN_COREDUMP_DESTROY) {
			log_info("guest '%s': domain %u destroyed", x->name, x->domid);
			break;
		}
		rc = libxl_domain_create_new(x->ctx, &cfg, &newid, NULL, NULL);
		if (!rc)
			rc = libxl_domain_unpause(x->ctx, newid, NULL);
		if (rc)
			log_error("guest '%s': restarting it failed (libxl error %d): xl create it "
				  "again by hand", x->name, rc);
		else
			log_warn("guest '%s' restarted as domain %u, UNPROTECTED: start tandem "
				 "primary again to protect it", x->name, newid);
		break;
	case LIBXL_ACTION_ON_SHUTDOWN_PRESERVE:
		log_info("guest '%s': preserved, shut down, as domain %u (xl destroy %s when done "
			 "with it)", x->name, x->domid, x->name);
		break;
	default:
		log_warn("guest '%s': %s = %s is not applied by tandem; the domain stays shut down "
			 "(xl destroy %s, then xl create)", x->name, key, action_names[act], x->name);
		break;
	}
	libxl_domain_config_dispose(&cfg);
}

static void xen_stop_protection(struct domain *d)
{
	struct xen *x = X(d);

	if (x && x->capped)
		xen_set_speed(d, 100);
	if (!x || !x->save_started)
		return;
	pthread_mutex_lock(&x->lock);
	x->stopping = true;
	__atomic_store_n(&x->quiet, true, __ATOMIC_RELAXED);
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
	if (x->throttled)
		xen_throttle(d, false);
	pthread_join(x->save_thr, NULL);	/* log-dirty is off when it returns */
	pthread_join(x->drain_thr, NULL);
	x->save_started = false;
	leave_running(x);
	if (x->ended[0]) {
		log_info("guest '%s' ended (%s): nothing left to resume", x->name, x->ended);
		apply_shutdown_action(x);
	} else
		log_info("guest '%s' left running; log-dirty mode off", x->name);
}

/*
 * The backup runs the guest now: pause this copy (it stays, paused, for an
 * operator to look at and `xl destroy`) or destroy it.
 */
static int xen_halt(struct domain *d, bool destroy)
{
	struct xen *x = X(d);
	int rc;

	if (destroy) {
		rc = libxl_domain_destroy(x->ctx, x->domid, NULL);
		if (rc) {
			log_error("cannot destroy guest '%s' (domain %u): libxl error %d; pausing it",
				  x->name, x->domid, rc);
			destroy = false;
		} else {
			log_warn("guest '%s' (domain %u) destroyed: the backup runs it now", x->name,
				 x->domid);
			return 0;
		}
	}
	if (xc_domain_pause(x->xch, x->domid)) {
		rc = -errno;
		log_error("cannot pause guest '%s' (domain %u): %s", x->name, x->domid, strerror(errno));
		return rc;
	}
	log_warn("guest '%s' (domain %u) paused: the backup runs it now; `xl destroy %s` once "
		 "you no longer need this copy", x->name, x->domid, x->name);
	return 0;
}

/*
 * After a stop or a failed suspend: a suspend request that was never
 * answered must not linger, and the guest must not be left suspended.
 */
static void leave_running(struct xen *x)
{
	char path[128];

	snprintf(path, sizeof(path), "/local/domain/%u/control/shutdown", x->domid);
	xs_write(x->xsh, XBT_NULL, path, "", 0);
	if (x->suspend_taken) {
		/* A request the guest took ends in a suspend: wait for it. */
		log_warn("guest '%s' took a suspend request and is not suspended yet; waiting "
			 "up to %d s to resume it", x->name, SUSPEND_DONE_TIMEOUT_MS / 1000);
		if (!wait_suspended(x, now_ms() + SUSPEND_DONE_TIMEOUT_MS))
			log_error("guest '%s' took a suspend request and did not suspend: if it "
				  "does later, it stays suspended (`xl list` shows it)", x->name);
	}
	dm_cont(x);		/* HVM: QEMU before the guest, if it may be stopped */
	if (is_suspended(x))
		resume_guest(x);
	dm_close(x);
	x->suspend_taken = false;
}

/*
 * `tandem probe`: one suspend as a checkpoint's, then the fast resume at
 * once, with log-dirty off and nothing copied: the part of every pause
 * that is the guest's own suspend path (and xenstore's round trip); for
 * an HVM guest also its device model's stop, save and cont, timed apart.
 */
static int xen_probe(struct domain *d, bool log_dirty, struct domain_probe_cycle *out)
{
	struct xen *x = X(d);
	xc_shadow_op_stats_t stats = { 0 };
	bool first = !x->probe_logdirty;
	uint64_t t0, t1, t2 = 0, dm_ns = 0;
	int rc, dm_rc = 0;

	*out = (struct domain_probe_cycle){ .dirty_pages = UINT64_MAX };
	if (log_dirty && !x->probe_logdirty) {
		if (xc_shadow_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_ENABLE_LOGDIRTY, NULL, 0)) {
			rc = -errno;
			log_error("cannot turn log-dirty mode on for guest '%s': %s", x->name, strerror(errno));
			return rc;
		}
		x->probe_logdirty = true;
	}
	/* HVM: as a checkpoint, the QMP session before the suspend, QEMU
	 * stopped and saved once the guest is, and running before it is */
	if (x->hvm && (rc = dm_open(x, &x->qmp)))
		return rc;
	t0 = now_ns();
	rc = suspend_guest(x);
	if (!rc && x->hvm) {
		t2 = now_ns();
		rc = dm_save(x);
		dm_ns = now_ns() - t2;
		if (!rc)
			out->dm_bytes = x->dm_len;
		dm_drop(x);
	}
	t1 = now_ns();
	if (rc) {
		leave_running(x);	/* QEMU too, and the session closed */
		return rc;
	}
	/* As a checkpoint: clean the dirty bitmap while suspended (no copy). */
	if (log_dirty && xc_logdirty_control(x->xch, x->domid, XEN_DOMCTL_SHADOW_OP_CLEAN, NULL, 0, 0,
					     &stats) < 0)
		log_warn("cannot clean the dirty bitmap of guest '%s': %s", x->name, strerror(errno));
	else if (log_dirty && !first)
		out->dirty_pages = stats.dirty_count;	/* since the last clean: one cycle */
	if (x->hvm) {
		t2 = now_ns();
		dm_rc = dm_cont(x);
		dm_ns += now_ns() - t2;
	}
	rc = resume_guest(x);
	cap_restore(x);
	if (x->hvm)
		dm_close(x);
	if (rc || dm_rc)
		return rc ? rc : dm_rc;
	out->suspend_us = (t1 - t0) / 1000;
	out->resume_us = (now_ns() - t1) / 1000;
	out->dm_us = dm_ns / 1000;
	return 0;
}


/* ---- the checkpoint oracle (config `verify`, domain/verify.h) ---------------- */

#define VERIFY_MAP_BATCH 1024u

/* Hash n pages of domain domid, as they are now (VERIFY_ABSENT: unmappable). */
static int hash_pfns(struct xen *x, uint32_t domid, const xen_pfn_t *pfns, uint32_t n,
		     uint64_t *out)
{
	int err[VERIFY_MAP_BATCH];

	for (uint32_t i = 0; i < n; i += VERIFY_MAP_BATCH) {
		uint32_t k = MIN(n - i, VERIFY_MAP_BATCH);
		uint8_t *m = xc_map_foreign_bulk(x->xch, domid, PROT_READ, pfns + i, err, k);

		if (!m)
			return -errno ? -errno : -EIO;
		for (uint32_t j = 0; j < k; j++)
			out[i + j] = err[j] ? VERIFY_ABSENT : verify_page_hash(m + (size_t)j * 4096);
		munmap(m, (size_t)k * 4096);
	}
	return 0;
}

/* Exported by libxenctrl 4.17 (VERS_4.17.0) but declared only in its
 * private xc_private.h: each gfn in arr becomes its XEN_DOMCTL_PFINFO_*
 * type (XEN_DOMCTL_getpageframeinfo3, at most 1024 a call). */
int xc_get_pfn_type_batch(xc_interface *xch, uint32_t dom, unsigned int num, xen_pfn_t *arr);

/*
 * Which pfns the oracle rotates over: every populated pfn up to the
 * guest's highest, less the special pages that libxc's restore rewrites
 * at each checkpoint (xenstore ring, console ring, ioreq pages: see
 * handle_hvm_params in libxc's restore), which would differ by design,
 * and less the frames Xen owns that the guest mapped into its physmap
 * (shared info, grant-table frames): Xen's getpageframeinfo3 reports a
 * special page as XTAB (xen/arch/x86/domctl.c), libxc's save ships no
 * data for it, and the standby's pfn is another Xen page.  Only the pfns
 * that map are asked their type: a PVH guest's range up to its highest
 * pfn is mostly the hole below the console and xenstore pages (1 Mi pfns
 * against 64 Ki of RAM for 256 MiB); in the lab (TCG, a loaded machine)
 * asking all of them took the scan to 156 s, asking the mapped ones 38 s.
 * Run once per stream, while the guest runs, before its first copy.
 */
static int verify_scan(struct domain *d)
{
	static const int special[] = { HVM_PARAM_STORE_PFN, HVM_PARAM_CONSOLE_PFN,
				       HVM_PARAM_IOREQ_PFN, HVM_PARAM_BUFIOREQ_PFN };
	struct xen *x = X(d);
	uint64_t skip[4] = { 0 }, t0 = now_ms(), xen_owned = 0;
	xen_pfn_t max = 0, *batch, types[VERIFY_MAP_BATCH];
	int err[VERIFY_MAP_BATCH];
	uint64_t cap = 0, want = d->cfg->verify / 4096 ? d->cfg->verify / 4096 : 1;

	_Static_assert(sizeof(xen_pfn_t) == sizeof(uint64_t), "xen_pfn_t is 64-bit on x86-64");
	free(x->v_space);
	x->v_space = NULL;
	x->v_space_n = x->v_cursor = 0;
	if (xc_domain_maximum_gpfn(x->xch, x->domid, &max) < 0)
		return -errno ? -errno : -EIO;
	for (size_t i = 0; i < ARRAY_SIZE(special); i++)
		xc_hvm_param_get(x->xch, x->domid, special[i], &skip[i]);
	batch = malloc(VERIFY_MAP_BATCH * sizeof(*batch));
	if (!batch)
		return -ENOMEM;
	for (xen_pfn_t base = 0; base <= max; base += VERIFY_MAP_BATCH) {
		uint32_t k = (uint32_t)MIN((xen_pfn_t)VERIFY_MAP_BATCH, max + 1 - base), mapped = 0;
		void *m;
		bool typed;

		for (uint32_t j = 0; j < k; j++)
			batch[j] = base + j;
		m = xc_map_foreign_bulk(x->xch, x->domid, PROT_READ, batch, err, k);
		if (!m)
			continue;
		munmap(m, (size_t)k * 4096);
		for (uint32_t j = 0; j < k; j++)
			if (!err[j])
				types[mapped++] = batch[j];
		if (!mapped)
			continue;
		/* unknown (the call failed): keep them all */
		typed = xc_get_pfn_type_batch(x->xch, x->domid, mapped, types) == 0;
		if (x->v_space_n + k > cap) {
			uint64_t ncap = cap ? cap * 2 : 65536;
			xen_pfn_t *n;

			while (ncap < x->v_space_n + k)
				ncap *= 2;
			n = realloc(x->v_space, ncap * sizeof(*n));
			if (!n) {
				free(batch);
				return -ENOMEM;
			}
			x->v_space = n;
			cap = ncap;
		}
		x->v_space_n += xenstream_oracle_pick(batch, err, k, typed ? types : NULL, skip,
						      ARRAY_SIZE(skip), x->v_space + x->v_space_n,
						      &xen_owned);
	}
	free(batch);
	want = MIN(want, (uint64_t)VERIFY_MAX_PAGES);
	if (x->v_win_cap < want) {
		free(x->v_win);
		free(x->v_pass1);
		free(x->v_pass2);
		x->v_win = calloc(want, sizeof(*x->v_win));
		x->v_pass1 = calloc(want, sizeof(*x->v_pass1));
		x->v_pass2 = calloc(want, sizeof(*x->v_pass2));
		if (!x->v_win || !x->v_pass1 || !x->v_pass2) {
			x->v_win_cap = 0;
			x->v_space_n = 0;
			return -ENOMEM;
		}
		x->v_win_cap = (uint32_t)want;
	}
	log_info("checkpoint oracle: %" PRIu64 " pages of guest '%s' in rotation (highest pfn "
		 "%#lx; xenstore, console and ioreq pages left out, and %" PRIu64 " frames Xen owns "
		 "(shared info, grant table: no data in libxc's stream)), %" PRIu64 " a checkpoint; "
		 "scanned in %" PRIu64 " ms", x->v_space_n, x->name, (unsigned long)max, xen_owned,
		 MIN(want, x->v_space_n), now_ms() - t0);
	return 0;
}

/* In the suspend callback, before libxc reads the dirty pages: the
 * window's first hashes.  A page that changes before verify_capture's
 * second pass was written while the guest was suspended (a backend, the
 * hypervisor): what libxc shipped of it is not known, so it is not compared. */
static void verify_pass1(struct xen *x)
{
	uint32_t n = (uint32_t)MIN((uint64_t)x->v_win_cap, x->v_space_n);
	uint64_t t0 = now_ns();

	for (uint32_t i = 0; i < n; i++) {
		if (x->v_cursor >= x->v_space_n)
			x->v_cursor = 0;
		x->v_win[i] = x->v_space[x->v_cursor++];
	}
	x->v_win_n = n;
	if (hash_pfns(x, x->domid, x->v_win, n, x->v_pass1))
		x->v_win_n = 0;
	x->v_pass1_ns = now_ns() - t0;
}

static int xen_verify_capture(struct domain *d, struct verify_set *v)
{
	struct xen *x = X(d);
	uint8_t *ctx;
	int len, rc;
	uint32_t hashed = x->v_win_n;
	uint64_t t0 = now_ns();

	if (d->dropped) {
		xen_pfn_t pfn = d->dropped_pfn;
		int i = verify_set_add(v, pfn);

		if (i >= 0 && hash_pfns(x, x->domid, &pfn, 1, &v->hashes[i]))
			v->n--;
	}
	if (x->v_win_n) {
		rc = hash_pfns(x, x->domid, x->v_win, x->v_win_n, x->v_pass2);
		if (rc)
			return rc;
		for (uint32_t i = 0; i < x->v_win_n; i++) {
			int k = verify_set_add(v, x->v_win[i]);

			if (k < 0)
				break;
			v->hashes[k] = x->v_pass1[i] == x->v_pass2[i] ? x->v_pass2[i] : VERIFY_UNSTABLE;
		}
		x->v_win_n = 0;
	}
	/* the vCPUs' registers as the guest will resume with them */
	len = xc_domain_hvm_getcontext(x->xch, x->domid, NULL, 0);
	if (len <= 0)
		return 0;
	ctx = malloc((size_t)len);
	if (!ctx)
		return -ENOMEM;
	len = xc_domain_hvm_getcontext(x->xch, x->domid, ctx, (uint32_t)len);
	if (len > 0 && xenstream_vcpu_hash(ctx, (size_t)len, offsetof(struct hvm_hw_cpu, tsc),
					   v->vcpu) > 0)
		v->has_vcpu = true;
	free(ctx);
	/* where an oracle checkpoint's time goes (docs/lab.md): both passes
	 * are inside the guest's pause */
	log_debug("checkpoint oracle: %u pages hashed in the pause: pass 1 %.1f ms (in the suspend), "
		  "pass 2 and vCPU %.1f ms (in the capture)", hashed, (double)x->v_pass1_ns / 1e6,
		  (double)(now_ns() - t0) / 1e6);
	return 0;
}

/*
 * Backup: the standby's pages now (commit() waited for libxc to apply the
 * checkpoint: xen_commit's barrier), and its vCPU state, which libxc holds
 * from the checkpoint's HVM_CONTEXT record until a failover sets it.
 */
static int xen_verify_standby(struct domain *d, const struct ckpt *c, const struct verify_set *v,
			      uint64_t *got, uint8_t got_vcpu[32], bool *has_vcpu)
{
	struct xen *x = X(d);
	xen_pfn_t *pfns;
	size_t body;
	uint32_t blen;
	int rc;

	if (x->standby_domid == (uint32_t)INVALID_DOMID &&
	    libxl_name_to_domid(x->ctx, x->name, &x->standby_domid)) {
		x->standby_domid = (uint32_t)INVALID_DOMID;
		return -ENOENT;
	}
	pfns = malloc((v->n ? v->n : 1) * sizeof(*pfns));
	if (!pfns)
		return -ENOMEM;
	for (uint32_t i = 0; i < v->n; i++)
		pfns[i] = v->pfns[i];
	rc = hash_pfns(x, x->standby_domid, pfns, v->n, got);
	free(pfns);
	if (rc)
		return rc;
	*has_vcpu = false;
	if (xenstream_find_record(c->blob, c->blob_len, XS_REC_HVM_CONTEXT, &body, &blen) == 0 &&
	    xenstream_vcpu_hash(c->blob + body, blen, offsetof(struct hvm_hw_cpu, tsc),
				got_vcpu) > 0)
		*has_vcpu = true;
	if (v->has_vcpu) {
		memcpy(x->last_vcpu, v->vcpu, 32);
		x->have_last_vcpu = true;
	}
	return 0;
}

/* ---- backup ---------------------------------------------------------------- */

static void *restore_main(void *arg)
{
	struct domain *d = arg;
	struct xen *x = X(d);
	libxl_domain_restore_params params;
	uint32_t domid = INVALID_DOMID;
	int rc;

	libxl_domain_restore_params_init(&params);
	params.checkpointed_stream = LIBXL_CHECKPOINTED_STREAM_REMUS;
	params.stream_version = 2;
	rc = libxl_domain_create_restore(x->ctx, &x->d_config, &domid, x->rs_rd, -1, &params,
					 NULL, NULL);
	libxl_domain_restore_params_dispose(&params);
	pthread_mutex_lock(&x->lock);
	x->restore_rc = rc;
	x->new_domid = domid;
	x->restore_done = true;
	pthread_cond_broadcast(&x->cond);
	pthread_mutex_unlock(&x->lock);
	return NULL;
}

/* A new stream from a primary: forget the last one (its version check, a
 * restore that ended, quiet after a discard); the standby itself is
 * created from the first round's configuration. */
static int xen_prepare_standby(struct domain *d)
{
	struct xen *x = X(d);

	if (x->restore_started)
		return -EBUSY;	/* the engine discards before a new stream */
	memset(&x->rcut, 0, sizeof(x->rcut));
	x->restore_done = false;
	x->restore_rc = 0;
	x->new_domid = INVALID_DOMID;
	x->standby_domid = (uint32_t)INVALID_DOMID;
	x->have_last_vcpu = false;
	__atomic_store_n(&x->quiet, false, __ATOMIC_RELAXED);
	return 0;
}

/*
 * A protected disk's device (`disks` RESOURCE:DEVICE, tdm-NAME-guest)
 * exists on this host only once the activation has promoted DRBD and
 * created it (disk.c: a Secondary cannot be opened), but libxl stats a
 * phy disk's path when the restore begins ("failed to stat", and the
 * standby is never created).  With a hotplug script named, libxl takes
 * the phy backend without that stat and runs the script when it attaches
 * the disk, at the end of the restore, after the activation: so name
 * "block", the script libxl runs for a phy disk anyway.
 */
static void standby_disks(struct domain *d)
{
	struct xen *x = X(d);

	for (int i = 0; i < x->d_config.num_disks; i++) {
		libxl_device_disk *dk = &x->d_config.disks[i];
		bool ours = false;

		if (!dk->pdev_path || dk->script || dk->backend_domid != 0 ||
		    (dk->backend != LIBXL_DISK_BACKEND_UNKNOWN &&
		     dk->backend != LIBXL_DISK_BACKEND_PHY))
			continue;
		for (unsigned j = 0; j < d->cfg->disks.n; j++)
			ours |= !strcmp(dk->pdev_path, d->cfg->disks.d[j].device);
		if (!ours || access(dk->pdev_path, F_OK) == 0)
			continue;
		dk->script = strdup("block");
		dk->backend = LIBXL_DISK_BACKEND_PHY;
		log_info("disk %s (%s): not on this host until the activation creates it; the "
			 "standby attaches it then (script block)", dk->vdev ? dk->vdev : "?",
			 dk->pdev_path);
	}
}

/* First round: create the standby domain from the primary's configuration. */
static int start_restore(struct domain *d, const struct ckpt *c)
{
	struct xen *x = X(d);
	xc_physinfo_t phys = { 0 };
	uint64_t need_kb, free_kb;
	uint8_t pro[32];
	size_t pro_len = xenstream_libxl_prologue(pro);
	int sv[2];

	if (c->state_kind != STATE_DEVICE || !c->state_len || c->state[c->state_len - 1]) {
		log_error("the first round carries no guest configuration");
		return -EINVAL;
	}
	if (c->blob_len < pro_len || memcmp(c->blob, pro, pro_len)) {
		refuse(d, "the primary's stream does not begin with libxl's stream header");
		return -EPROTO;
	}
	if (x->have_config) {	/* an earlier attempt was refused */
		libxl_domain_config_dispose(&x->d_config);
		x->have_config = false;
	}
	libxl_domain_config_init(&x->d_config);
	if (libxl_domain_config_from_json(x->ctx, &x->d_config, (const char *)c->state)) {
		refuse(d, "cannot parse the guest configuration sent by the primary");
		return -EINVAL;
	}
	x->have_config = true;
	standby_disks(d);
	need_kb = x->d_config.b_info.max_memkb;
	if (xc_physinfo(x->xch, &phys) == 0) {
		free_kb = (uint64_t)phys.free_pages * 4;
		if (need_kb > free_kb) {
			refuse(d, "not enough memory on the backup for '%s': it needs %" PRIu64 " MiB, "
			       "this host has %" PRIu64 " MiB free", x->name, need_kb / 1024,
			       free_kb / 1024);
			return -ENOMEM;
		}
	}
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return -errno;
	x->rs_wr = sv[0];
	x->rs_rd = sv[1];
	/* libxl's stream header and LIBXC_CONTEXT record first, at once: once
	 * libxl has read them its save helper runs, and only then can the
	 * stream end without crashing libxl (settle_restore_stream). */
	x->rs_skip = pro_len;
	if (write_full(x->rs_wr, pro, pro_len)) {
		close(x->rs_wr);
		close(x->rs_rd);
		x->rs_wr = x->rs_rd = -1;
		return -EIO;
	}
	x->rs_sent = x->rs_skip;
	pthread_create(&x->restore_thr, NULL, restore_main, d);
	pthread_setname_np(x->restore_thr, "tandem-restore");
	x->restore_started = true;
	log_info("standby for '%s' being created (%" PRIu64 " MiB)", x->name, need_kb / 1024);
	return 0;
}

static int xen_commit(struct domain *d, const struct ckpt *c)
{
	struct xen *x = X(d);
	uint64_t end;
	bool barrier = false;
	int rc;

	/* Check the primary's Xen version from the libxc domain header, before
	 * libxl starts a restore: a restore whose stream ends while libxl still
	 * builds the domain crashed libxl's thread and left a shell domain. */
	if (x->rcut.stage < 2 && c->blob_len > XENSTREAM_PROLOGUE_LEN) {
		long used = xenstream_feed(&x->rcut, c->blob + XENSTREAM_PROLOGUE_LEN,
					   c->blob_len - XENSTREAM_PROLOGUE_LEN);
		if (used >= 0 && x->rcut.stage >= 2) {
			int v;

			if (!x->own_version) {	/* a host's Xen changes only with a reboot */
				x->own_version = xc_version(x->xch, XENVER_version, NULL);
				if (x->own_version > 0 && fault_hit("xen-version-differs"))
					x->own_version += 1;	/* for the lab: as if this host
								 * ran the next minor, for good */
			}
			v = x->own_version;
			if (v < 0) {
				refuse(d, "cannot read this backup's Xen version (xc_version: %s)",
				       strerror(errno));
				x->own_version = 0;	/* read again for the next stream */
				return -EIO;
			}
			if ((uint32_t)(v >> 16) != x->rcut.xen_major ||
			    (uint32_t)(v & 0xffff) != x->rcut.xen_minor) {
				refuse(d, "the primary runs Xen %u.%u, this backup Xen %d.%d: tandem "
				       "needs the same Xen version on both hosts", x->rcut.xen_major,
				       x->rcut.xen_minor, v >> 16, v & 0xffff);
				return -EPROTO;
			}
		}
	}
	if (!x->restore_started) {
		rc = start_restore(d, c);
		if (rc)
			return rc;
		if (fault_hit("restore-ends-early")) {
			refuse(d, "fault point 'restore-ends-early': the standby's stream ends before "
			       "libxl has read from it");
			return -EIO;
		}
	}
	/* An HVM guest's checkpoint must carry its device model's state, or
	 * libxl would pair these pages with the previous checkpoint's QEMU
	 * state in qemu-resume.<domid> at a failover: refuse it.  The first
	 * checkpoint may not begin on a record (the live copy's last piece
	 * ends where the drain was), so a walk that fails proves nothing. */
	if (!(c->flags & CKPT_F_INITIAL) && x->have_config &&
	    x->d_config.c_info.type == LIBXL_DOMAIN_TYPE_HVM) {
		struct xenstream_emu e;
		int n = xenstream_libxl_emulator_find(c->blob, c->blob_len, &e);

		if (n >= 1 && !e.contexts) {
			refuse(d, "a checkpoint of HVM guest '%s' carries no device-model state "
			       "(EMULATOR_CONTEXT): not applied; is the primary's tandem older, or "
			       "run without " XEN_HVM_SWITCH "=1?", x->name);
			return -EPROTO;
		}
		if (n >= 1)
			log_debug("checkpoint: device-model state %u bytes, physmap keys %u bytes",
				  e.ctx_len, e.xs_len);
		else
			log_debug("checkpoint: emulator records not checked (walk: %d)", n);
	}
	/* Bounded by progress: libxl reading slowly under load is fine, libxl
	 * that stopped reading (initial rounds included) must not hold this
	 * thread, and with it the primary's send, forever. */
	rc = send_full_bounded(x->rs_wr, c->blob + x->rs_skip, c->blob_len - x->rs_skip,
			       COMMIT_TIMEOUT_MS);
	if (rc) {
		if (x->restore_done)
			refuse(d, "the standby's restore ended early (libxl error %d; see the backup's "
			       "log)", x->restore_rc);
		else if (rc == -ETIMEDOUT)
			log_error("the standby's restore stream broke: libxl read nothing for %d s",
				  COMMIT_TIMEOUT_MS / 1000);
		else
			log_error("the standby's restore stream broke: %s", strerror(-rc));
		return -EIO;
	}
	x->rs_sent += c->blob_len - x->rs_skip;
	x->rs_skip = 0;
	if (c->flags & CKPT_F_INITIAL)
		return 0;
	/* Applied once libxl has read it all, through CHECKPOINT_END.  The
	 * poll backs off to 1 ms so that it does not take the CPU libxl needs. */
	end = now_ms() + COMMIT_TIMEOUT_MS;
	for (useconds_t nap = 50;; nap = MIN(nap * 2, 1000)) {
		int unread = 0;
		if (ioctl(x->rs_wr, SIOCOUTQ, &unread) < 0)
			return -errno;
		if (unread == 0 && c->has_verify && !barrier) {
			/* the oracle needs checkpoint c applied, which libxc does
			 * after libxl read CHECKPOINT_END: it has once it reads on */
			uint8_t b[XENSTREAM_BARRIER_LEN];

			if (write_full(x->rs_wr, b, xenstream_barrier(b)))
				return -EIO;
			x->rs_sent += XENSTREAM_BARRIER_LEN;
			barrier = true;
			continue;
		}
		if (unread == 0)
			return 0;
		if (x->restore_done) {
			refuse(d, "the standby's restore ended early (libxl error %d; see the backup's "
			       "log)", x->restore_rc);
			return -EIO;
		}
		if (now_ms() > end)
			return -ETIMEDOUT;
		usleep(nap);
	}
}

/*
 * The checkpoint oracle at failover: the vCPUs libxc set in the restored
 * domain, before it runs, against what the primary captured at the last
 * verified checkpoint (the last committed one when every checkpoint is
 * verified).  Logged; the guest runs either way.
 */
static void verify_activated_vcpus(struct xen *x, uint32_t domid)
{
	uint8_t h[32];
	int len = xc_domain_hvm_getcontext(x->xch, domid, NULL, 0);
	uint8_t *ctx = len > 0 ? malloc((size_t)len) : NULL;

	if (!ctx)
		return;
	len = xc_domain_hvm_getcontext(x->xch, domid, ctx, (uint32_t)len);
	if (len > 0 && xenstream_vcpu_hash(ctx, (size_t)len, offsetof(struct hvm_hw_cpu, tsc), h) > 0) {
		if (memcmp(h, x->last_vcpu, 32))
			log_warn("checkpoint oracle: the activated guest's vCPU registers differ from "
				 "those the primary captured at the last verified checkpoint (expected "
				 "if later checkpoints were committed unverified)");
		else
			log_info("checkpoint oracle: the activated guest's vCPU registers equal those "
				 "the primary captured");
		testlog("verify activated vcpu=%s", memcmp(h, x->last_vcpu, 32) ? "differs" : "equal");
	}
	free(ctx);
}

/*
 * The libxl save helper that runs libxc's restore for this process (a
 * child whose name begins "libxl-save-hel"), or 0.  Scans /proc: a dom0
 * runs few processes.
 */
static pid_t find_restore_helper(void)
{
	DIR *dir = opendir("/proc");
	struct dirent *e;
	pid_t me = getpid(), found = 0;

	if (!dir)
		return 0;
	while (!found && (e = readdir(dir))) {
		char path[300], buf[256], *close_paren;
		int ppid = 0;
		FILE *f;

		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
		if (!(f = fopen(path, "r")))
			continue;
		if (fgets(buf, sizeof(buf), f) && (close_paren = strrchr(buf, ')')) &&
		    sscanf(close_paren + 1, " %*c %d", &ppid) == 1 && ppid == me &&
		    strstr(buf, "(libxl-save-hel"))
			found = (pid_t)atoi(e->d_name);
		fclose(f);
	}
	closedir(dir);
	return found;
}

/* The helper has finished (exited, or a zombie libxl has not reaped yet). */
static bool helper_finished(pid_t pid)
{
	char path[64], buf[256], *close_paren;
	bool done = true;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (!(f = fopen(path, "r")))
		return true;
	if (fgets(buf, sizeof(buf), f) && (close_paren = strrchr(buf, ')')))
		done = close_paren[2] == 'Z' || close_paren[2] == 'X';
	fclose(f);
	return done;
}

static int xen_activate(struct domain *d)
{
	struct xen *x = X(d);
	uint64_t t0 = now_ns(), t_libxc = 0, t_libxl, t_run;
	pid_t helper = find_restore_helper();
	uint32_t domid;
	int rc;

	if (!x->restore_started)
		return -EINVAL;
	/* End of stream after a complete checkpoint: libxc fails over to it. */
	log_info("ending the restore stream of '%s': libxc reports the end of the stream "
		 "('Failed to read Record Header') and completes the standby from the last "
		 "complete checkpoint", x->name);
	shutdown(x->rs_wr, SHUT_WR);
	pthread_mutex_lock(&x->lock);
	while (!x->restore_done) {
		/* the timeline: when libxc's restore (the helper) ends, libxl
		 * goes on to the devices */
		if (helper > 0 && !t_libxc && helper_finished(helper))
			t_libxc = now_ns();
		cond_wait_ns(&x->cond, &x->lock, 2000000ull);
	}
	t_libxl = now_ns();
	if (!t_libxc)
		t_libxc = t_libxl;
	rc = x->restore_rc;
	domid = x->new_domid;
	pthread_mutex_unlock(&x->lock);
	if (rc) {
		log_error("libxl could not complete the standby of '%s' (error %d)", x->name, rc);
		return -EIO;
	}
	if (x->have_last_vcpu)
		verify_activated_vcpus(x, domid);
	rc = libxl_domain_unpause(x->ctx, domid, NULL);
	if (rc) {
		log_error("cannot unpause domain %u (error %d)", domid, rc);
		return -EIO;
	}
	t_run = now_ns();
	x->domid = domid;
	log_info("guest '%s' running here as domain %u", x->name, domid);
	log_info("activation timeline: libxc completed the standby %.1f ms after the stream "
		 "ended%s, libxl set up its devices in %.1f ms more, unpause took %.1f ms",
		 (double)(t_libxc - t0) / 1e6, helper > 0 ? "" : " (helper not found: with libxl)",
		 (double)(t_libxl - t_libxc) / 1e6, (double)(t_run - t_libxl) / 1e6);
	testlog("activation libxc_ms=%.1f libxl_devices_ms=%.1f unpause_ms=%.1f",
		(double)(t_libxc - t0) / 1e6, (double)(t_libxl - t_libxc) / 1e6,
		(double)(t_run - t_libxl) / 1e6);
	return 0;
}

/*
 * Before the standby's stream ends on purpose (discard, close): libxl
 * (4.17, and upstream at the time of writing) calls a NULL completion
 * callback when a restore stream fails before libxl has read the
 * LIBXC_CONTEXT record, because its save helper was never started
 * (libxl_save_callout.c: helper_stop -> helper_failed -> helper_done);
 * that killed the backup (lab: fault point restore-ends-early).  So let
 * libxl read the prologue first, which starts the helper; bounded.
 */
static void settle_restore_stream(struct xen *x)
{
	uint64_t end = now_ms() + PROLOGUE_WAIT_MS;

	for (useconds_t nap = 100;; nap = MIN(nap * 2, 100000)) {
		int unread = 0;

		if (__atomic_load_n(&x->restore_done, __ATOMIC_ACQUIRE) ||
		    ioctl(x->rs_wr, SIOCOUTQ, &unread) < 0 ||
		    x->rs_sent >= (uint64_t)unread + XENSTREAM_PROLOGUE_LEN)
			return;
		if (now_ms() > end) {
			log_warn("libxl has not read the standby's stream %d s after the restore "
				 "began; ending it anyway", PROLOGUE_WAIT_MS / 1000);
			return;
		}
		usleep(nap);
	}
}

static void xen_discard(struct domain *d)
{
	struct xen *x = X(d);
	uint32_t domid;

	if (!x || !x->restore_started)
		return;
	__atomic_store_n(&x->quiet, true, __ATOMIC_RELAXED);
	settle_restore_stream(x);
	if (libxl_name_to_domid(x->ctx, x->name, &domid) == 0)
		libxl_domain_destroy(x->ctx, domid, NULL);
	close(x->rs_wr);
	x->rs_wr = -1;
	pthread_join(x->restore_thr, NULL);
	close(x->rs_rd);
	x->rs_rd = -1;
	x->restore_started = false;
}

/*
 * become_primary: the guest this backup activated runs on as the primary's
 * guest (re-protection after a failover; this host's end of a switchover).
 * Nothing of the backup's state is needed any more (the restore is over,
 * its stream ended): the driver closes it and opens the running guest by
 * its name as a primary does at start, with the same checks (guest type,
 * HAP or shadow paging for log-dirty, what cannot be checkpointed).  The
 * guest is not touched.
 */
static int xen_become_primary(struct domain *d)
{
	struct xen *x = X(d);
	uint32_t domid;

	if (!x || !x->restore_started || !x->domid) {
		log_error("xen: no guest activated here to protect");
		return -EINVAL;
	}
	domid = x->domid;
	xen_close(d);
	d->role = ROLE_PRIMARY;
	if (xen_open(d)) {
		log_error("cannot open guest '%s' (domain %u), which runs here, as a primary",
			  guest_name(d), domid);
		xen_close(d);
		return -EIO;
	}
	if (X(d)->domid != domid)
		log_warn("guest '%s' was domain %u when it was activated and is domain %u now",
			 guest_name(d), domid, X(d)->domid);
	return 0;
}

/* Every interface the guest sends through, as dom0 names them: netback's
 * vif<domid>.<devid> and, for an HVM guest's emulated NIC, QEMU's tap
 * vif<domid>.<devid>-emu; comma-separated, sorted. */
static int list_vifs(unsigned domid, char *buf, size_t len)
{
	struct dirent **names = NULL;
	char prefix[32];
	size_t n = 0;
	int count;

	snprintf(prefix, sizeof(prefix), "vif%u.", domid);
	count = scandir("/sys/class/net", &names, NULL, alphasort);
	buf[0] = '\0';
	for (int i = 0; i < count; i++) {
		if (!strncmp(names[i]->d_name, prefix, strlen(prefix)) && n < len)
			n += (size_t)snprintf(buf + n, len - n, "%s%s", n ? "," : "",
					      names[i]->d_name);
		free(names[i]);
	}
	free(names);
	if (!buf[0])	/* not up yet: the first, as netback will name it */
		snprintf(buf, len, "vif%u.0", domid);
	return n < len ? 0 : -ENAMETOOLONG;
}

static int xen_default_vif(struct domain *d, char *buf, size_t len)
{
	struct xen *x = X(d);

	if (!x || !x->domid)
		return -ENODEV;
	return list_vifs(x->domid, buf, len);
}

static void xen_describe(struct domain *d, char *buf, size_t len)
{
	struct xen *x = X(d);

	if (!x)
		snprintf(buf, len, "xen guest (not open)");
	else if (x->domid == 0)	/* a backup before activation: domain 0 is dom0 */
		snprintf(buf, len, "xen guest '%s', %s", x->name,
			 x->restore_started ? "standby paused, taking checkpoints" : "no standby yet");
	else
		snprintf(buf, len, "xen guest '%s', domain %u", x->name, x->domid);
}

/* An HVM guest's device model figures (status); nothing for PVH. */
static void xen_status_figures(struct domain *d, bool json, char *buf, size_t len)
{
	struct xen *x = X(d);
	struct dmstate_stats st;
	uint64_t saves, open_us;
	size_t xs;

	buf[0] = '\0';
	if (!x || !x->hvm || d->role != ROLE_PRIMARY)
		return;
	pthread_mutex_lock(&x->lock);
	st = x->dm_st;
	xs = x->dm_st_xs;
	saves = x->dm_saves;
	open_us = x->dm_open_us;
	pthread_mutex_unlock(&x->lock);
	dmstate_status(&st, xs, open_us, saves, json, buf, len);
}

const struct domain_ops xen_ops = {
	.name = "xen",
	.open = xen_open,
	.close = xen_close,
	.start_protection = xen_start_protection,
	.suspend = xen_suspend,
	.capture = xen_capture,
	.resume = xen_resume,
	.stop_protection = xen_stop_protection,
	.halt = xen_halt,
	.prepare_standby = xen_prepare_standby,
	.commit = xen_commit,
	.activate = xen_activate,
	.discard = xen_discard,
	.become_primary = xen_become_primary,
	.probe = xen_probe,
	.guest_hash = NULL,
	.dirty_pages = xen_dirty_pages,
	.throttle = xen_throttle,
	.set_speed = xen_set_speed,
	.verify_capture = xen_verify_capture,
	.verify_standby = xen_verify_standby,
	.describe = xen_describe,
	.status_figures = xen_status_figures,
	.default_vif = xen_default_vif,
};
