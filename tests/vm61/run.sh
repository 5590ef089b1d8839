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
VM61_MEM (MiB, default 1024), VM61_SMP (default 1), VM61_TIMEOUT.
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
CACHE_ROOT=${VM61_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tandem-vm61}
case "$CACHE_ROOT" in /*) ;; *) CACHE_ROOT=$PWD/$CACHE_ROOT ;; esac

# Modules insmod-ed by the initramfs, in dependency order: what it takes to
# reach the host's root, then what tandem's tests need (sch_plug, ifb
# redirection, veth). Anything else autoloads inside through the host's
# /sbin/modprobe and the bind-mounted /lib/modules/$KVER.
BOOT_MODS="virtio_pci virtio_mmio virtio_console 9pnet_virtio 9p overlay"
TEST_MODS="sch_plug ifb act_mirred cls_u32 sch_ingress veth"

# ---------------------------------------------------------------- packages
apt_updated=0
apt_update_once() {
	[ "$apt_updated" = 1 ] && return 0
	log "apt-get update"
	apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || die "apt-get update failed"
	apt_updated=1
}

ensure_packages() {
	local p need=()
	for p in qemu-system-x86 busybox-static kmod cpio xz-utils iproute2; do
		dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || need+=("$p")
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
# Busybox, the two stage scripts, the boot modules and the job.
build_initramfs() {
	local d=$WORK/initramfs line ko opts n=0
	mkdir -p "$d"/{bin,modules,job,proc,sys,dev,lower,rw,newroot}
	cp /bin/busybox "$d/bin/busybox"
	cp "$HERE/init.sh" "$d/init"
	cp "$HERE/stage2.sh" "$d/stage2.sh"
	chmod 755 "$d/init"
	printf '%s\n' "$KVER" >"$d/kver"
	printf '%s\n' "$KDIR/root/lib/modules/$KVER" >"$d/moddir"
	# shellcheck disable=SC2086
	modprobe -d "$KDIR/root" -S "$KVER" -a --show-depends $BOOT_MODS $TEST_MODS >"$WORK/deps" ||
		die "cannot resolve modules ($BOOT_MODS $TEST_MODS)"
	: >"$d/modules.list"
	while read -r line; do
		[[ $line == insmod\ * ]] || continue
		line=${line#insmod }
		ko=${line%% *}
		opts=
		[[ $line == *\ * ]] && opts=${line#* }
		grep -q "/${ko##*/} " "$d/modules.list.paths" 2>/dev/null && continue
		echo "/${ko##*/} " >>"$d/modules.list.paths"
		n=$((n + 1))
		cp "$ko" "$d/modules/"
		printf '%s %s\n' "${ko##*/}" "$opts" >>"$d/modules.list"
	done <"$WORK/deps"
	rm -f "$d/modules.list.paths"
	[ "$n" -gt 0 ] || die "no boot modules found"
	write_job "$d/job" "$@"
	(cd "$d" && find . | cpio -o -H newc -R 0:0 --quiet) >"$WORK/initrd.cpio" || die "cpio failed"
}

# job.sh: the caller's environment, TANDEM_VM61=1, cd, exec CMD.
write_job() {
	local j=$1 name dir
	shift
	{
		echo '# generated by tests/vm61/run.sh'
		while read -r name; do
			case "$name" in
			PWD | OLDPWD | SHLVL | _ | TMPDIR | MAKEFLAGS | MFLAGS | MAKELEVEL | MAKEOVERRIDES | \
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
qpid= readers=()
cleanup() {
	local p
	[ -n "$qpid" ] && kill "$qpid" 2>/dev/null
	for p in "${readers[@]}"; do kill "$p" 2>/dev/null; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM HUP

build_initramfs "$@"

# Guest -> host channels: FIFOs read by us (qemu's pipe chardev writes
# NAME.out and reads NAME.in).
for c in ctl out err; do mkfifo "$WORK/$c.in" "$WORK/$c.out"; done
cat "$WORK/out.out" &
readers+=($!)
cat "$WORK/err.out" >&2 &
readers+=($!)

now_us() { local t=$EPOCHREALTIME; echo $((${t/./} )); }
T0=$(now_us)
{
	# Control channel: timestamps the start of CMD, records its status.
	while IFS= read -r line; do
		case "$line" in
		START*)
			t=$(now_us)
			up=${line#START }
			printf '%s: boot %d.%02ds (QEMU start to CMD start; guest kernel uptime %ss), kernel %s\n' \
				"$PROG" $(((t - T0) / 1000000)) $(((t - T0) % 1000000 / 10000)) "$up" "$KVER" >&2
			;;
		EXIT\ *) printf '%s\n' "${line#EXIT }" >"$WORK/rc" ;;
		FAIL\ *) log "guest: ${line#FAIL }" ;;
		esac
	done <"$WORK/ctl.out"
} &
readers+=($!)

# No network device at all (-nodefaults, no -nic/-netdev).
append="console=ttyS0 quiet loglevel=4 panic=-1 rdinit=/init mitigations=off"
append+=" tsc=reliable no_timer_check i8042.noaux i8042.nomux i8042.nopnp i8042.dumbkbd"
append+=${VM61_APPEND:+ $VM61_APPEND}
# Machine: "pc" (i440fx + virtio-pci, default) or "microvm" (virtio-mmio).
case "$MACHINE" in
pc)
	vdev=pci
	qemu_args=(-M pc)
	;;
microvm)
	vdev=device
	qemu_args=(-M microvm,x-option-roms=off,pit=off,pic=off,rtc=off,isa-serial=on)
	;;
*) die "VM61_MACHINE must be pc or microvm" ;;
esac
qemu_args+=(
	-accel tcg -nodefaults -nographic -no-reboot
	-m "$MEM" -smp "$SMP"
	-kernel "$KIMAGE" -initrd "$WORK/initrd.cpio" -append "$append"
	-serial "file:$WORK/console.log" -monitor none
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

# timeout(1) runs QEMU as its child and kills it (by PID) when time is up.
timeout -k 5 "$timeout_s" qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$WORK/qemu.log" 2>&1 &
qpid=$!
set +e
wait "$qpid"
qrc=$?
set -e
qpid=

# Let the readers drain; unblock any FIFO that QEMU never opened.
for c in ctl out err; do
	exec 9<>"$WORK/$c.in"
	exec 9>&-
	exec 9<>"$WORK/$c.out"
	exec 9>&-
done
for p in "${readers[@]}"; do wait "$p" 2>/dev/null || true; done
readers=()

if [ "$verbose" = 1 ]; then
	log "---- guest console ----"
	cat "$WORK/console.log" >&2 2>/dev/null || true
fi
if [ -s "$WORK/qemu.log" ]; then
	sed "s/^/$PROG: qemu: /" "$WORK/qemu.log" >&2
fi

if [ "$qrc" = 124 ] || [ "$qrc" = 137 ]; then
	log "TIMEOUT: killed the VM after ${timeout_s}s"
	exit 124
fi
if [ -s "$WORK/rc" ]; then
	rc=$(cat "$WORK/rc")
	[[ $rc =~ ^[0-9]+$ ]] || die "bad status from the guest: $rc"
	exit "$rc"
fi
log "the VM stopped without reporting CMD's status (qemu exit $qrc); console tail:"
tail -n 40 "$WORK/console.log" 2>/dev/null | sed "s/^/$PROG: console: /" >&2 || true
exit 125
