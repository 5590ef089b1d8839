/*
 * device.h - the guest's external devices (its disks) behind one ops table.
 *
 * Memory is the domain driver's (domain/domain.h); everything else the
 * guest keeps state in must be cut at the same instant, or a failover
 * hands the guest a device that is ahead of or behind its memory.  The
 * steps are the four of the 2006 external-device migration RFC
 * (docs/design.md, "Devices"), plus the backup's two:
 *
 *   primary: test -> { before_suspend -> [suspend] -> while_suspended
 *            -> [capture] -> sync -> [resume] }*
 *   backup:  test -> { commit }* -> activate
 *
 * while_suspended starts the device's cut beside the memory capture (a
 * disk issues its marker write there); sync waits for it before the guest
 * resumes and gives the device's verdict on checkpoint N.  Every verdict
 * travels in the checkpoint (CKPT_DEVICES, docs/protocol.md).  The backup
 * commits N only when memory N is complete and every device's commit()
 * says N is complete on this side too.
 *
 * The engine knows devices only through this table: devices_open() builds
 * it from the configuration (the disks first), and the devices_*() calls
 * run one step on every member.  Return values: 0 or a negative errno,
 * with the device's own words in its error[].
 *
 * Members that may be NULL: before_suspend, ready (always ready), diverged,
 * status, status_text, close.
 */
#ifndef TANDEM_DEVICE_H
#define TANDEM_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../config/config.h"

#define DEVICES_MAX 8
#define DEVICE_SESSION_LEN 16

enum device_role { DEVICE_PRIMARY, DEVICE_BACKUP };

/* A device's verdict on one checkpoint (CKPT_DEVICES, per device). */
enum {
	DEV_V_OK = 1u << 0,		/* this checkpoint's cut is complete on the primary */
	DEV_V_FENCED = 1u << 1,		/* the device lost its peer since the last good cut */
	DEV_V_CUT_FAILED = 1u << 2,	/* the cut (marker write) failed or timed out */
	DEV_V_ALL = DEV_V_OK | DEV_V_FENCED | DEV_V_CUT_FAILED,
};

struct device;

struct device_ops {
	const char *kind;		/* "disk" */

	/* Both roles, at start: can this device be protected here at all?
	 * Fails with a message an operator can act on. */
	int (*test)(struct device *dv, enum device_role role);

	/* ---- primary, once per checkpoint ---- */
	int (*before_suspend)(struct device *dv, uint64_t epoch);
	/* The guest is suspended: start the cut (it runs beside the memory
	 * capture; must not block for long). */
	int (*while_suspended)(struct device *dv, uint64_t epoch);
	/* Wait, bounded, for the cut; set *verdict (DEV_V_*).  Returns 0
	 * whenever a verdict was reached, even a bad one; -errno only when
	 * the device can no longer work at all (protection must end). */
	int (*sync)(struct device *dv, uint64_t epoch, uint32_t *verdict);
	/* Would a cut now be complete (the fence is down again)?  Asked while
	 * checkpoints with bad verdicts wait. */
	bool (*ready)(struct device *dv);

	/* ---- backup ---- */
	/* May checkpoint `epoch`, whose primary-side verdict is `verdict`,
	 * commit?  0 yes (and the device commits its side of it); -EAGAIN
	 * not this one (the reason in error[]: the checkpoint waits for a
	 * later one that commits); other -errno: the device failed. */
	int (*commit)(struct device *dv, uint64_t epoch, uint32_t verdict);
	/* Failover from committed checkpoint `epoch`: the device's state
	 * becomes that checkpoint's. */
	int (*activate)(struct device *dv, uint64_t epoch);
	/* The guest ran on another host since this side last held a
	 * standby (why says how it is known): this side's copy may hold
	 * writes the primary's never had, in places no bitmap knows of.  It
	 * must be rebuilt from the primary in full before anything commits.
	 * Must not block (a disk only marks it; its watch does it). */
	void (*diverged)(struct device *dv, const char *why);

	/* One JSON object's members (no braces) for status, e.g.
	 * "\"kind\":\"disk\",...". */
	void (*status)(struct device *dv, char *buf, size_t len);
	/* One line (no newline) for `tandem status`'s text. */
	void (*status_text)(struct device *dv, char *buf, size_t len);
	void (*close)(struct device *dv);
};

struct device {
	const struct device_ops *ops;
	const struct tandem_config *cfg;
	unsigned index;			/* in the table, and in CKPT_DEVICES */
	char name[80];			/* for messages: "disk r0" */
	uint8_t session[DEVICE_SESSION_LEN];	/* the primary's protection session */
	char error[512];
	void *priv;
};

struct devices {
	unsigned n;
	struct device d[DEVICES_MAX];
};

/*
 * Build the table from the configuration (one entry per disk) and run each
 * device's test() for `role`.  Returns 0, or the first failure's -errno
 * with "NAME: why" in err; on failure nothing stays open.
 */
int devices_open(struct devices *ds, const struct tandem_config *cfg, enum device_role role,
		 char *err, size_t errlen);
void devices_close(struct devices *ds);

/* A new protection session (each initial copy): a fresh random session
 * id for the cuts that follow (the backup learns it from CKPT_DEVICES). */
void devices_new_session(struct devices *ds);
void devices_set_session(struct devices *ds, const uint8_t session[DEVICE_SESSION_LEN]);

/* Primary steps on every device, in table order.  devices_sync() fills
 * verdicts[i] for each device (DEVICES_MAX entries) and returns 0, or the
 * first -errno of a device that can no longer work. */
int devices_before_suspend(struct devices *ds, uint64_t epoch);
int devices_while_suspended(struct devices *ds, uint64_t epoch);
int devices_sync(struct devices *ds, uint64_t epoch, uint32_t *verdicts);

/* True when no device knows of a reason its next cut would be bad. */
bool devices_ready(struct devices *ds);

/* True when every verdict says OK and nothing else. */
bool devices_all_ok(const struct devices *ds, const uint32_t *verdicts);

/* Backup: commit `epoch` on every device; 0, -EAGAIN with why in err (the
 * first device that says not yet), or another -errno. */
int devices_commit(struct devices *ds, uint64_t epoch, const uint32_t *verdicts, char *err,
		   size_t errlen);
int devices_activate(struct devices *ds, uint64_t epoch, char *err, size_t errlen);
/* Backup: every device's copy may have diverged from the primary's. */
void devices_diverged(struct devices *ds, const char *why);

/* "[{...},{...}]" for status. */
void devices_status_json(struct devices *ds, char *buf, size_t len);
/* "  NAME: ...\n" per device, for status text ("" without devices). */
void devices_status_text(struct devices *ds, char *buf, size_t len);

/* Words for a verdict: "ok", "fenced", "cut failed", "fenced, cut failed". */
const char *device_verdict_str(uint32_t verdict, char *buf, size_t len);

#endif
