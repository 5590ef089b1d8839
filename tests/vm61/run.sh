#!/usr/bin/env bash
# tests/vm61/run.sh — run a command inside Debian bookworm's 6.1 kernel,
# booted under QEMU (TCG, no KVM), with the host's root file system as the
# guest's (read-only 9p + tmpfs overlay). See tests/vm61/README.md.
#
#   tests/vm61/run.sh [--timeout SEC] [--rw DIR]... -- CMD [ARGS...]
#
# CMD runs as root in the current directory with TANDEM_VM61=1 and the
# caller's environment; its stdout/stderr stream to run.sh's stdout/stderr
# and run.sh exits with CMD's status (124 on timeout, 125 on a harness
# failure).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROG=vm61

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
	log "error: $*"
	exit 125
}
usage() {
	cat >&2 <<'EOF'
usage: tests/vm61/run.sh [options] -- CMD [ARGS...]
  --timeout SEC   kill the VM and exit 124 after SEC seconds (default 600,
                  or $VM61_TIMEOUT); counts boot time too
  --rw DIR        share host directory DIR read-write (default: everything
                  is read-only, writes go to a throw-away tmpfs overlay)
  --verbose       print the guest's kernel console log to stderr afterwards
Environment: VM61_KERNEL (e.g. 6.1.0-56-amd64; default: the cached one, or
the newest Debian ships), VM61_CACHE (default ~/.cache/tandem-vm61),
VM61_MEM (MiB, default 1024), VM61_SMP (default 1), VM61_TIMEOUT,
VM61_MACHINE (pc or microvm), VM61_APPEND (kernel parameters), VM61_KEEP=1,
VM61_MODS (extra modules insmod-ed at boot, e.g. "drbd nbd brd").
See tests/vm61/README.md.
EOF
	exit 125
}

timeout_s=${VM61_TIMEOUT:-600}
verbose=${VM61_VERBOSE:-0}
rw_dirs=()
while [ $# -gt 0 ]; do
	case "$1" in
	--timeout) [ $# -ge 2 ] || usage; timeout_s=$2; shift 2 ;;
	--timeout=*) timeout_s=${1#*=}; shift ;;
	--rw) [ $# -ge 2 ] || usage; rw_dirs+=("$2"); shift 2 ;;
	--rw=*) rw_dirs+=("${1#*=}"); shift ;;
	--verbose | -v) verbose=1; shift ;;
	--) shift; break ;;
	-h | --help) usage ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || usage
[[ $timeout_s =~ ^[0-9]+$ ]] && [ "$timeout_s" -gt 0 ] || die "bad --timeout: $timeout_s"

MEM=${VM61_MEM:-1024}
SMP=${VM61_SMP:-1}
MACHINE=${VM61_MACHINE:-pc}
CACHE_ROOT=${VM61_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/tandem-vm61}
case "$CACHE_ROOT" in /*) ;; *) CACHE_ROOT=$PWD/$CACHE_ROOT ;; esac

# Modules insmod-ed by the initramfs, in dependency order: what it takes to
# reach the host's root, then what tandem's tests need (sch_plug, ifb
# redirection, veth). Anything else autoloads inside through the host's
# /sbin/modprobe and the bind-mounted /lib/modules/$KVER.
BOOT_MODS="virtio_pci virtio_mmio virtio_console 9pnet_virtio 9p overlay"
TEST_MODS="sch_plug ifb act_mirred cls_u32 sch_ingress veth"
# Extra modules a test asks for (VM61_MODS, e.g. "drbd nbd brd" for the
# disk's cut test), insmod-ed at boot with their dependencies, so that only
# the runs that need them pay for them. Module options come from the host's
# /etc/modprobe.d as modprobe prints them; the kernel's defaults otherwise.
EXTRA_MODS=${VM61_MODS:-}
[[ $EXTRA_MODS =~ ^[A-Za-z0-9_\ -]*$ ]] || { printf 'vm61: error: bad VM61_MODS: %s\n' "$EXTRA_MODS" >&2; exit 125; }

# ---------------------------------------------------------------- packages
apt_updated=0
apt_update_once() {
	[ "$apt_updated" = 1 ] && return 0
	log "apt-get update"
	apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || die "apt-get update failed"
	apt_updated=1
}

ensure_packages() {
	local p st need=() pkgs=(qemu-system-x86 busybox-static kmod cpio xz-utils iproute2)
	st=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' "${pkgs[@]}" 2>/dev/null || true)
	for p in "${pkgs[@]}"; do
		grep -q "^$p ii" <<<"$st" || need+=("$p")
	done
	[ ${#need[@]} -eq 0 ] && return 0
	[ "$(id -u)" = 0 ] || die "missing packages: ${need[*]} (install them as root)"
	apt_update_once
	log "installing ${need[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=600 \
		install --no-install-recommends "${need[@]}" >&2 || die "apt-get install ${need[*]} failed"
}

# ------------------------------------------------------------------ kernel
# Print the newest linux-image-6.1.0-N-amd64 known to apt (empty if none).
apt_kernel() {
	local v
	v=$(apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: linux-image-\(6\.1\.0-[0-9]*-amd64\)$/\1/p' | head -n1)
	if [ -z "$v" ]; then
		v=$(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null |
			sed -n 's/^linux-image-\(6\.1\.0-[0-9]*-amd64\)\(-unsigned\)\{0,1\}$/\1/p' |
			sort -uV | tail -n1)
	fi
	printf '%s' "$v"
}

pick_kernel() {
	if [ -n "${VM61_KERNEL:-}" ]; then
		KVER=${VM61_KERNEL#linux-image-}
	else
		# Stick to what is cached (stable across runs); else ask apt.
		KVER=$(find "$CACHE_ROOT" -mindepth 2 -maxdepth 2 -name .ready 2>/dev/null |
			sed 's#.*/\([^/]*\)/\.ready$#\1#' | grep -E '^6\.1\.0-[0-9]+-amd64$' | sort -V | tail -n1 || true)
		if [ -z "$KVER" ]; then
			KVER=$(apt_kernel)
			if [ -z "$KVER" ]; then
				apt_update_once
				KVER=$(apt_kernel)
			fi
		fi
	fi
	[[ $KVER =~ ^6\.1\.0-[0-9]+-amd64$ ]] || die "no Debian 6.1 kernel found (got '${KVER}')"
	KDIR=$CACHE_ROOT/$KVER
}

# Unpacked kernel: $KDIR/vmlinuz and $KDIR/root/lib/modules/$KVER (with
# modules.dep). Irrelevant driver trees are left out to save disk space.
prepare_kernel() {
	[ -f "$KDIR/.ready" ] && return 0
	mkdir -p "$CACHE_ROOT"
	exec 8>"$CACHE_ROOT/.lock"
	flock 8
	if [ ! -f "$KDIR/.ready" ]; then
		local t0=$SECONDS tmp deb pkg
		rm -rf "$CACHE_ROOT"/.tmp.* # left by an interrupted run (we hold the lock)
		tmp=$(mktemp -d "$CACHE_ROOT/.tmp.XXXXXX")
		for pkg in "linux-image-$KVER" "linux-image-$KVER-unsigned" ""; do
			[ -n "$pkg" ] || { rm -rf "$tmp"; die "cannot apt-get download linux-image-$KVER"; }
			log "fetching $pkg (apt-get download)"
			if (cd "$tmp" && apt-get -q download "$pkg" >&2 2>/dev/null); then break; fi
			apt_update_once
			if (cd "$tmp" && apt-get -q download "$pkg" >&2); then break; fi
		done
		deb=$(ls "$tmp"/*.deb)
		mkdir "$tmp/root"
		local m=./lib/modules/$KVER/kernel
		dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$tmp/root" \
			--exclude="$m/sound" --exclude="$m/drivers/gpu" --exclude="$m/drivers/media" \
			--exclude="$m/drivers/net/wireless" --exclude="$m/drivers/net/ethernet" \
			--exclude="$m/drivers/infiniband" --exclude="$m/drivers/staging" \
			--exclude="$m/drivers/iio" --exclude="$m/drivers/usb" \
			--exclude="./usr/share/doc" ||
			{ rm -rf "$tmp"; die "cannot unpack $deb"; }
		rm -f "$deb"
		[ -f "$tmp/root/boot/vmlinuz-$KVER" ] || { rm -rf "$tmp"; die "no vmlinuz in $deb"; }
		mv "$tmp/root/boot/vmlinuz-$KVER" "$tmp/vmlinuz"
		depmod -b "$tmp/root" "$KVER" 2>/dev/null || { rm -rf "$tmp"; die "depmod failed"; }
		touch "$tmp/.ready"
		rm -rf "$KDIR"
		mv "$tmp" "$KDIR"
		log "kernel $KVER unpacked into $KDIR in $((SECONDS - t0))s"
	fi
	flock -u 8
	exec 8>&-
}

# The bzImage is xz-compressed; decompressing it under TCG takes ~3 s per
# boot. The kernel has CONFIG_PVH, so QEMU can boot the plain vmlinux ELF
# directly: extract it once (like the kernel's scripts/extract-vmlinux).
prepare_vmlinux() {
	KIMAGE=$KDIR/vmlinux
	[ -f "$KIMAGE" ] && return 0
	local off tmp
	off=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$KDIR/vmlinuz" | head -n1 | cut -d: -f1 || true)
	if [ -n "$off" ]; then
		tmp=$(mktemp "$KDIR/.vmlinux.XXXXXX")
		tail -c "+$((off + 1))" "$KDIR/vmlinuz" | xz -dcq >"$tmp" 2>/dev/null || true
		if [ "$(head -c 4 "$tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
			mv "$tmp" "$KIMAGE"
			return 0
		fi
		rm -f "$tmp"
	fi
	log "cannot extract vmlinux from $KDIR/vmlinuz; booting the bzImage (slower)"
	KIMAGE=$KDIR/vmlinuz
}

# --------------------------------------------------------------- initramfs
# The base initramfs (busybox, the two stage scripts, the modules) is cached
# next to the kernel, keyed by its inputs; each run appends a small second
# cpio archive with the job (the kernel unpacks concatenated archives).
build_initramfs() {
	local key base d line ko opts n=0
	local -A seen=()
	key=$({ printf '%s\n' "$KVER" "$KDIR" "$BOOT_MODS $TEST_MODS $EXTRA_MODS"; cat "$HERE/run.sh" "$HERE/init.sh" "$HERE/stage2.sh" /bin/busybox; } | md5sum)
	base=$KDIR/initramfs-${key%% *}.cpio
	if [ ! -f "$base" ]; then
		d=$WORK/base
		mkdir -p "$d"/{bin,modules,proc,sys,dev,lower,rw,newroot}
		cp /bin/busybox "$d/bin/busybox"
		for a in $(/bin/busybox --list); do
			[ "$a" = busybox ] || ln -s busybox "$d/bin/$a"
		done
		cp "$HERE/init.sh" "$d/init"
		cp "$HERE/stage2.sh" "$d/stage2.sh"
		chmod 755 "$d/init"
		printf '%s\n' "$KVER" >"$d/kver"
		printf '%s\n' "$KDIR/root/lib/modules/$KVER" >"$d/moddir"
		# shellcheck disable=SC2086
		modprobe -d "$KDIR/root" -S "$KVER" -a --show-depends $BOOT_MODS $TEST_MODS $EXTRA_MODS >"$WORK/deps" ||
			die "cannot resolve modules ($BOOT_MODS $TEST_MODS $EXTRA_MODS)"
		: >"$d/modules.list"
		while read -r line; do
			[[ $line == insmod\ * ]] || continue
			line=${line#insmod }
			ko=${line%% *}
			opts=
			[[ $line == *\ * ]] && opts=${line#* }
			[ -z "${seen[$ko]:-}" ] || continue
			# CPU-accelerated crypto (crc32c-intel for drbd's libcrc32c) needs
			# instructions TCG may not emulate; the generic module follows.
			case "$ko" in */arch/x86/crypto/*) continue ;; esac
			seen[$ko]=1
			n=$((n + 1))
			cp "$ko" "$d/modules/"
			printf '%s %s\n' "${ko##*/}" "$opts" >>"$d/modules.list"
		done <"$WORK/deps"
		[ "$n" -gt 0 ] || die "no modules found"
		(cd "$d" && find . | cpio -o -H newc -R 0:0 --quiet) >"$base.$$" || die "cpio failed"
		mv "$base.$$" "$base"
		# Drop stale ones (other inputs), not those that concurrent runs may use.
		find "$KDIR" -maxdepth 1 -name 'initramfs-*.cpio*' -mmin +120 -delete 2>/dev/null || true
	fi
	cat "$base" >"$WORK/initrd.cpio" || die "cannot read $base"
	d=$WORK/jobroot
	mkdir -p "$d/job"
	write_job "$d/job" "$@"
	(cd "$d" && printf '%s\n' job job/job.sh job/rw.list | cpio -o -H newc -R 0:0 --quiet) >>"$WORK/initrd.cpio" ||
		die "cpio failed"
}

# job.sh: the caller's environment, TANDEM_VM61=1, cd, exec CMD.
write_job() {
	local j=$1 name dir
	shift
	{
		echo '# generated by tests/vm61/run.sh'
		while read -r name; do
			case "$name" in
			PWD | OLDPWD | SHLVL | _ | MAKEFLAGS | MFLAGS | MAKELEVEL | MAKEOVERRIDES | \
				MAKE_TERMOUT | MAKE_TERMERR | DISPLAY | WAYLAND_DISPLAY | XDG_RUNTIME_DIR | \
				DBUS_SESSION_BUS_ADDRESS | SSH_AUTH_SOCK | SSH_AGENT_PID | TANDEM_VM61 | BASH_ENV | ENV)
				continue ;;
			esac
			[[ $name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
			printf 'export %s=%q\n' "$name" "${!name}"
		done < <(compgen -e)
		echo 'export TANDEM_VM61=1'
		printf 'cd -- %q || { echo "vm61: cannot cd to %q inside the VM" >&2; exit 125; }\n' "$CWD" "$CWD"
		printf 'export PWD=%q\n' "$CWD"
		# $1: the control port; "START" marks the end of the boot.
		# shellcheck disable=SC2016
		echo 'read -r _vm61_up _ </proc/uptime; echo "START $_vm61_up" >"$1"; unset _vm61_up'
		printf 'exec'
		printf ' %q' "$@"
		printf '\n'
	} >"$j/job.sh"
	: >"$j/rw.list"
	for dir in "${rw_dirs[@]}"; do
		printf '%s\n' "$dir" >>"$j/rw.list"
	done
}

# ------------------------------------------------------------------- main
CWD=$(pwd -P)
for i in "${!rw_dirs[@]}"; do
	[ -d "${rw_dirs[$i]}" ] || die "--rw ${rw_dirs[$i]}: not a directory"
	rw_dirs[$i]=$(cd "${rw_dirs[$i]}" && pwd -P)
	[[ ${rw_dirs[$i]} != *[[:space:]]* ]] || die "--rw path with white space: ${rw_dirs[$i]}"
	[[ ${rw_dirs[$i]} != *,* ]] || die "--rw path with a comma: ${rw_dirs[$i]}"
done

ensure_packages
pick_kernel
prepare_kernel
prepare_vmlinux

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vm61.XXXXXX")
qpid='' readers=()
cleanup() {
	local p
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
	for p in "${readers[@]}"; do kill "$p" 2>/dev/null; done
	if [ "${VM61_KEEP:-0}" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

build_initramfs "$@"

# Guest -> host channels: FIFOs read by us (QEMU's pipe chardev writes
# NAME.out and reads NAME.in).
for c in ctl out err; do mkfifo "$WORK/$c.in" "$WORK/$c.out"; done
cat "$WORK/out.out" &
outpid=$!
readers+=("$outpid")
cat "$WORK/err.out" >&2 &
readers+=($!)

# No network device at all (-nodefaults, no -nic/-netdev).
# cryptomgr.notests: skip the crypto self-tests (~0.3 s under TCG).
append="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init mitigations=off cryptomgr.notests"
append+=" tsc=reliable no_timer_check i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
# Machine: "pc" (i440fx + virtio-pci, default) or "microvm" (virtio-mmio).
case "$MACHINE" in
pc)
	# pci=noacpi: routing PCI interrupts through ACPI's interrupt links costs
	# ~0.3 s under TCG; the BIOS's PIR table does the same job. ACPI itself
	# stays: without it there is no HPET to calibrate the TSC against, and
	# the guest falls back to the coarse jiffies clock.
	append+=" pci=noacpi"
	vdev=pci
	qemu_args=(-M pc)
	;;
microvm)
	# No PIT/HPET/PM timer to calibrate the TSC against: tell the kernel the
	# TSC rate, which under TCG is the host's own.
	khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
	[ -n "$khz" ] && [ "$khz" -gt 0 ] || die "microvm: cannot read the host's TSC rate"
	append+=" tsc_early_khz=$khz"
	vdev=device
	qemu_args=(-M microvm,x-option-roms=off,isa-serial=on)
	;;
*) die "VM61_MACHINE must be pc or microvm" ;;
esac
append+=${VM61_APPEND:+ $VM61_APPEND}
qemu_args+=(
	-accel tcg -nodefaults -nographic -no-reboot
	-m "$MEM" -smp "$SMP"
	-kernel "$KIMAGE" -initrd "$WORK/initrd.cpio" -append "$append"
	-serial "file:$WORK/console.log" -monitor none -pidfile "$WORK/qemu.pid"
	-fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
	-device "virtio-9p-$vdev,fsdev=hostroot,mount_tag=hostroot"
	-device "virtio-serial-$vdev,id=vser0"
	-chardev "pipe,id=ctl,path=$WORK/ctl" -device virtserialport,bus=vser0.0,chardev=ctl,name=vm61.ctl
	-chardev "pipe,id=out,path=$WORK/out" -device virtserialport,bus=vser0.0,chardev=out,name=vm61.out
	-chardev "pipe,id=err,path=$WORK/err" -device virtserialport,bus=vser0.0,chardev=err,name=vm61.err
)
for i in "${!rw_dirs[@]}"; do
	qemu_args+=(-fsdev "local,id=rw$i,path=${rw_dirs[$i]},security_model=none,multidevs=remap"
		-device "virtio-9p-$vdev,fsdev=rw$i,mount_tag=rw$i")
done

now_us() { local t=$EPOCHREALTIME; echo $((10#${t/./})); }
T0=$(now_us)
{
	# Control channel: timestamps the start of CMD, records its status.
	# Also reports QEMU's CPU time so far: unlike the wall-clock boot time
	# it hardly depends on what else the machine is doing.
	# Started before QEMU, like the cats above, so that it has the FIFO open
	# before QEMU can write (and exit).
	set +e # must not die before EXIT has been read (QEMU may be gone by then)
	while IFS= read -r line; do
		case "$line" in
		START*)
			t=$(now_us)
			cpu=
			kid=$(cat "$WORK/qemu.pid" 2>/dev/null) && [ -n "$kid" ] &&
				cpu=$(awk -v hz="$(getconf CLK_TCK)" '{ sub(/.*\) /, ""); printf ", QEMU CPU %.2fs", ($12 + $13) / hz }' \
					/proc/"$kid"/stat 2>/dev/null || true)
			printf '%d.%02d\n' $(((t - T0) / 1000000)) $(((t - T0) % 1000000 / 10000)) >"$WORK/boot"
			printf '%s: boot %d.%02ds (QEMU start to CMD start%s), kernel %s, %s\n' "$PROG" \
				$(((t - T0) / 1000000)) $(((t - T0) % 1000000 / 10000)) "$cpu" "$KVER" "$MACHINE" >&2
			;;
		EXIT\ *) printf '%s\n' "${line#EXIT }" >"$WORK/rc" ;;
		FAIL\ *) log "guest: ${line#FAIL }" ;;
		esac
	done <"$WORK/ctl.out"
} &
readers+=($!)

# timeout(1) runs QEMU as its child and kills it (by PID) when time is up.
timeout -k 5 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$WORK/qemu.log" 2>&1 &
qpid=$!
# Wait for QEMU; if our stdout goes away first (run.sh ... | head), stop the
# VM, as a pipeline would stop CMD with SIGPIPE.
set +e
qrc='' stdout_gone=''
while [ -z "$qrc" ]; do
	if [ -n "$outpid" ]; then
		wait -n -p done_pid "$qpid" "$outpid"
		st=$?
	else
		wait "$qpid"
		st=$?
		done_pid=$qpid
	fi
	if [ "${done_pid:-}" = "$qpid" ]; then
		qrc=$st
	elif [ "${done_pid:-}" = "$outpid" ]; then
		outpid=
		if [ "$st" != 0 ]; then
			stdout_gone=1
			kill "$qpid" 2>/dev/null
		fi
	fi
done
set -e
qpid=

# Let the readers drain; unblock any FIFO that QEMU never opened.
for c in ctl out err; do
	exec 9<>"$WORK/$c.out"
	exec 9>&-
done
for p in "${readers[@]}"; do wait "$p" 2>/dev/null || true; done
readers=()

show_console() { # strip the firmware's terminal escapes and CRs
	sed 's/\x1b\[[0-9;?]*[A-Za-z]//g; s/\x1bc//g; s/\r//g' "$WORK/console.log" 2>/dev/null
}
if [ "$verbose" = 1 ]; then
	log "---- guest console ----"
	show_console >&2 || true
fi
if [ -s "$WORK/qemu.log" ]; then
	sed "s/^/$PROG: qemu: /" "$WORK/qemu.log" >&2
fi

if [ -n "$stdout_gone" ]; then
	log "stdout closed; stopped the VM"
	exit 141
fi
if [ -s "$WORK/rc" ]; then
	rc=$(cat "$WORK/rc")
	[[ $rc =~ ^[0-9]+$ ]] || die "bad status from the guest: $rc"
	[ "$qrc" = 0 ] || log "warning: QEMU exited with $qrc after CMD ended"
	exit "$rc"
fi
if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	if [ -s "$WORK/boot" ]; then
		log "TIMEOUT: CMD still running after ${timeout_s}s (boot took $(cat "$WORK/boot")s); killed the VM"
	else
		log "TIMEOUT: the VM did not start CMD within ${timeout_s}s; killed it. Console tail:"
		show_console | tail -n 20 | sed "s/^/$PROG: console: /" >&2 || true
	fi
	exit 124
fi
log "the VM stopped without reporting CMD's status (qemu exit $qrc); console tail:"
show_console | tail -n 40 | sed "s/^/$PROG: console: /" >&2 || true
exit 125
