/*
 * dmstate.h - the device model's (QEMU's) part of one checkpoint of an
 * HVM guest, on an open QMP session (qmp.h): pause QEMU, save its device
 * state into memory, and later let it run again (issue 21).
 *
 * What libxl does for `xl remus`, read in Xen 4.17 (RELEASE-4.17.7,
 * tools/libs/light/), and where tandem differs:
 *
 *  - libxl_dom_suspend.c:domain_suspend_common_guest_suspended: only once
 *    the guest is suspended, and only for HVM, libxl__domain_suspend_device_model
 *    -> libxl_qmp.c:libxl__qmp_suspend_save sends, on one connection:
 *    `stop` (dm_stopped), then `add-fd` with an fd of
 *    /var/lib/xen/qemu-save.<domid> opened O_WRONLY|O_CREAT passed by
 *    SCM_RIGHTS (dm_state_fd_ready reads "fdset-id" from the reply), then
 *    `xen-save-devices-state {"filename": "/dev/fdset/<id>", "live": L}`
 *    (dm_state_save_to_fdset; `live` only to QEMU >= 2.11).  libxl sends no
 *    `remove-fd`: it hangs up, and QEMU frees a set no monitor uses.
 *    libxl_stream_write.c:write_emulator_context_record later reopens the
 *    file and reads it whole into the EMULATOR_CONTEXT record.
 *    tandem instead passes a memfd, so the state never touches a disk on
 *    the pause path, sends `remove-fd` itself (its session may be reused)
 *    and reads the memfd back.  QEMU 7.2 closes its copy of a removed fd
 *    only while the VM runs (monitor/misc.c:monitor_fdset_cleanup checks
 *    runstate_is_running()), so it lets go of the memfd at the first
 *    cleanup after `cont`: at the latest when the session hangs up.
 *
 *  - `live`: libxl sets it for Remus (libxl_domain.c:libxl_domain_remus_start
 *    sets dss->live = 1).  QEMU's qmp_xen_save_devices_state (migration/
 *    savevm.c) then inactivates every block node when the VM was already
 *    stopped, and `cont` reopens them: a needless cost per checkpoint, so
 *    tandem sends live = false (libxl_domain_suspend_only sends false too).
 *
 *  - The fd's access mode: QEMU opens "/dev/fdset/<id>" O_WRONLY|O_CREAT|
 *    O_TRUNC (qmp_xen_save_devices_state) and takes from the set only an
 *    fd whose O_ACCMODE equals that (monitor/misc.c, monitor/fds.c in newer
 *    QEMU: monitor_fdset_dup_fd_add; else EACCES).  A memfd is O_RDWR, so
 *    tandem passes a second, O_WRONLY open of it through /proc/self/fd.
 *    With O_TRUNC QEMU truncates the file first (util/osdep.c:qemu_dup_flags).
 *
 *  - What QEMU writes (migration/savevm.c:qemu_save_device_state): the
 *    magic "QEVM" and version, every non-RAM section (guest RAM, VRAM
 *    included, travels as guest pages through libxc), then QEMU_VM_EOF.
 *
 *  - `cont`: libxl sends it on a new connection before xc_domain_resume
 *    (libxl_dom_suspend.c:libxl__domain_resume_deprecated ->
 *    libxl__qmp_resume): QEMU's ioreq server is off while it is stopped
 *    (hw/i386/xen/xen-hvm.c:xen_hvm_change_state_handler), so QEMU must run
 *    before the guest does.  Here it is dmstate_cont(), a separate call the
 *    caller makes just before it resumes the guest.
 *
 *  - The dirty log: libxc's save calls switch_qemu_logdirty(domid, 1) in
 *    x86_hvm_setup and (.., 0) in x86_hvm_cleanup (libs/guest/
 *    xg_sr_save_x86_hvm.c); libxl answers with `xen-set-global-dirty-log
 *    {"enable": b}` (libxl_dom_save.c:domain_suspend_switch_qemu_xen_logdirty,
 *    10 s timeout; skipped for PVH).  With it on, QEMU reports its own
 *    writes to guest RAM (DMA emulation) to Xen's log-dirty bitmap, so
 *    they travel with the next checkpoint's pages.
 *
 * Command names and arguments: QEMU's qapi/migration.json
 * (xen-save-devices-state {filename: str, *live: bool}, since 1.1, live
 * since 2.11; xen-set-global-dirty-log {enable: bool}, since 1.3) and
 * qapi/misc.json (add-fd -> AddfdInfo {fdset-id, fd}; remove-fd
 * {fdset-id}).
 *
 * Contract: 0 or a negative errno (qmp.h's, plus -ENOMEM, -EMSGSIZE for a
 * state larger than DMSTATE_MAX, -EBADMSG for a state that is empty or
 * not QEMU's); on error `err` says what failed in an operator's words.
 * Nothing is logged above debug level: the caller decides how loud.
 */
#ifndef TANDEM_DMSTATE_H
#define TANDEM_DMSTATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct qmp;

/* The largest device state carried (QEMU's is tens of KB for the usual
 * emulated devices; the bound is against a runaway, not a budget). */
#define DMSTATE_MAX (32u << 20)
#define DMSTATE_MAGIC "QEVM"		/* QEMU_VM_FILE_MAGIC, big-endian */

/* Where one save's time went, and its size. */
struct dmstate_stats {
	uint64_t stop_us;		/* `stop` */
	uint64_t save_us;		/* memfd, add-fd, xen-save-devices-state, remove-fd */
	uint64_t read_us;		/* reading the memfd back */
	size_t bytes;
};

/*
 * `stop`, then QEMU's device state into memory (memfd, add-fd,
 * xen-save-devices-state {"filename": "/dev/fdset/N", "live": false},
 * remove-fd, read back), every step within one deadline of timeout_ms.
 * On success *out is the state (malloc'd, the caller frees it), *len its
 * size, st (may be NULL) the figures.  On error *out is NULL and QEMU may
 * be left stopped: the caller still calls dmstate_cont() (on a new
 * session if this one broke: qmp.h's -ENOTCONN).
 */
int dmstate_save(struct qmp *q, unsigned timeout_ms, uint8_t **out, size_t *len,
		 struct dmstate_stats *st, char *err, size_t errlen);

/* `cont`: let QEMU run again, before the guest resumes.  QEMU answers
 * `cont` on a running VM with success, so it is safe to repeat. */
int dmstate_cont(struct qmp *q, unsigned timeout_ms, char *err, size_t errlen);

/* `xen-set-global-dirty-log {"enable": enable}`. */
int dmstate_dirty_log(struct qmp *q, bool enable, unsigned timeout_ms, char *err, size_t errlen);

/*
 * Append one xenstore (key, value) pair, each NUL-terminated, to the
 * packed buffer *buf of *len bytes (realloc'd): the body of libxl's
 * EMULATOR_XENSTORE_DATA record (libxl_dom_save.c:append_string, and
 * docs/specs/libxl-migration-stream.pandoc).  Keys are relative to the
 * device model's xenstore directory, e.g. "physmap/f0000000/size".
 * 0, -EINVAL (a key outside the spec's alphabet, empty, or absolute:
 * libxl's restore refuses those), -EMSGSIZE, -ENOMEM.
 */
int dmstate_xs_pack(char **buf, size_t *len, const char *key, const char *value);

/*
 * The device model's figures for `tandem status`: the last save's size
 * and times, after `saves` saves (0: none yet).  json: one member with
 * its trailing comma, `"device_model":{...},`; else one text line.  The
 * QMP session's open (connect, greeting, capabilities) happens before
 * the guest's suspend, so it is shown apart from the pause's share
 * (stop + save + read).
 */
void dmstate_status(const struct dmstate_stats *st, size_t physmap_bytes, uint64_t open_us,
		    uint64_t saves, bool json, char *buf, size_t len);

#endif
