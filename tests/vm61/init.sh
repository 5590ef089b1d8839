#!/bin/busybox sh
# tests/vm61/init.sh — /init of the vm61 initramfs (stage 1, runs as PID 1 on
# the initramfs). Copied into the initramfs by run.sh; not meant to be run on
# the host.
#
# Loads the few modules needed to see the host, mounts the host's root
# (virtio-9p, read-only) under a tmpfs overlay, moves it to / and hands over
# to stage2.sh, still as PID 1.

export PATH=/bin # busybox and its applet links (made by run.sh)

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1

say() { echo "vm61-init: $*" >/dev/console; }
DEBUG=
case " $(cat /proc/cmdline) " in *" vm61.debug "*) DEBUG=1 ;; esac
stamp() { [ -z "$DEBUG" ] || say "$(cut -d' ' -f1 /proc/uptime) $*"; }
stamp start
die() {
	say "FATAL: $*"
	[ -n "$CTL" ] && echo "FAIL $*" >"$CTL"
	reboot -f
	poweroff -f
}

KVER=$(cat /kver)

# Modules needed before the host root is reachable, in dependency order
# ("path options..." per line, computed on the host by run.sh).
while read -r ko opts; do
	[ -n "$ko" ] || continue
	# shellcheck disable=SC2086
	insmod "/modules/$ko" $opts || die "insmod $ko failed"
	stamp "insmod $ko"
done </modules.list

stamp modules loaded
# Find our virtio-serial ports by name (no udev here).
CTL='' OUT='' ERR=''
for d in /sys/class/virtio-ports/vport*; do
	[ -e "$d/name" ] || continue
	case "$(cat "$d/name")" in
	vm61.ctl) CTL=/dev/${d##*/} ;;
	vm61.out) OUT=/dev/${d##*/} ;;
	vm61.err) ERR=/dev/${d##*/} ;;
	esac
done
[ -n "$CTL" ] && [ -n "$OUT" ] && [ -n "$ERR" ] || die "virtio-serial ports not found"

mkdir -p /lower /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower ||
	die "cannot mount host root over 9p"
stamp 9p mounted
mount -t tmpfs -o mode=755 tmpfs /rw
mkdir -p /rw/upper /rw/work
OVERLAY=1
if ! mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot; then
	say "overlayfs failed; using the read-only 9p root with tmpfs on /run /tmp /var/tmp"
	mount --bind /lower /newroot
	OVERLAY=
fi

stamp overlay mounted
N=/newroot
mount -t proc proc $N/proc
mount -t sysfs sysfs $N/sys
mount -t devtmpfs devtmpfs $N/dev
mkdir -p $N/dev/pts $N/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $N/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $N/dev/shm
mount -t tmpfs -o mode=755 tmpfs $N/run
# With the overlay, the host's /tmp stays visible (writes go to the overlay);
# /run is always fresh (the host's holds its own pid files, netns, sockets).
if [ -z "$OVERLAY" ]; then
	mount -t tmpfs -o mode=1777 tmpfs $N/tmp
	mount -t tmpfs -o mode=1777 tmpfs $N/var/tmp 2>/dev/null
fi
mount -t tracefs tracefs $N/sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs $N/sys/kernel/debug 2>/dev/null
mount -t cgroup2 cgroup2 $N/sys/fs/cgroup 2>/dev/null
mkdir -p $N/run/lock $N/run/netns $N/run/vm61

stamp "submounts mounted"
# The unpacked kernel's module tree (in the host's cache dir, seen through
# 9p) appears at its usual place, so that the host's own modprobe, and the
# kernel's module autoloading, work inside.
MODDIR=$(cat /moddir)
if [ -d "$N$MODDIR" ]; then
	mkdir -p "$N/lib/modules/$KVER" 2>/dev/null &&
		mount --bind "$N$MODDIR" "$N/lib/modules/$KVER" ||
		say "cannot bind $MODDIR to /lib/modules/$KVER"
fi

# Optional read-write shares of host directories (run.sh --rw DIR).
i=0
while read -r dir; do
	[ -n "$dir" ] || continue
	mount -t 9p -o trans=virtio,version=9p2000.L,cache=none,msize=262144 "rw$i" "$N$dir" ||
		die "cannot mount read-write share $dir"
	i=$((i + 1))
done </job/rw.list

stamp "module tree bound"
cp /bin/busybox /job/job.sh /stage2.sh /kver $N/run/vm61/ || die "cannot populate /run/vm61"
printf '%s\n%s\n%s\n' "$CTL" "$OUT" "$ERR" >$N/run/vm61/ports

stamp "stage 1 finished"
cd $N || die "cd $N"
mount --move . / || die "cannot move the new root to /"
exec chroot . /run/vm61/busybox sh /run/vm61/stage2.sh
die "exec stage2 failed"
