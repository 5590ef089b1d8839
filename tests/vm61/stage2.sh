#!/bin/sh
# tests/vm61/stage2.sh — stage 2 of the vm61 guest, PID 1 inside the host's
# root (run by /run/vm61/busybox sh). Copied into the initramfs by run.sh.
#
# Runs the job (/run/vm61/job.sh, made by run.sh) with its stdout/stderr on
# two virtio-serial ports; the job reports "START <uptime>" on the control
# port, this script "EXIT <status>". Then it reboots (QEMU runs with
# -no-reboot, so it exits).

BB=/run/vm61/busybox
{ read -r CTL; read -r OUT; read -r ERR; } </run/vm61/ports

say() { echo "vm61-stage2: $*" >/dev/console; }
finish() {
	echo "EXIT $1" >"$CTL"
	# QEMU runs with -no-reboot: a reboot ends it, with or without ACPI.
	$BB reboot -f
	$BB poweroff -f
}

DEBUG=
case " $(cat /proc/cmdline) " in *" vm61.debug "*) DEBUG=1 ;; esac
stamp() { [ -z "$DEBUG" ] || say "$(cut -d' ' -f1 /proc/uptime) $*"; }
stamp stage2 start

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$BB hostname vm61

$BB ip link set lo up 2>/dev/null || ip link set lo up

# job.sh reports "START <uptime>" on $CTL right before it execs CMD.
$BB env -i /bin/bash --noprofile --norc /run/vm61/job.sh "$CTL" </dev/null >"$OUT" 2>"$ERR"
finish $?
