#!/bin/sh
# tests/vm61/stage2.sh — stage 2 of the vm61 guest, PID 1 inside the host's
# root (run by /run/vm61/busybox sh). Copied into the initramfs by run.sh.
#
# Runs the job (/run/vm61/job.sh, made by
# run.sh) with its stdout/stderr on two virtio-serial ports, and reports
# "START <uptime>" and "EXIT <status>" on the control port, then powers off.

BB=/run/vm61/busybox
{ read -r CTL; read -r OUT; read -r ERR; } </run/vm61/ports
KVER=$(cat /run/vm61/kver)

say() { echo "vm61-stage2: $*" >/dev/console; }
finish() {
	echo "EXIT $1" >"$CTL"
	$BB poweroff -f
	$BB reboot -f
}

DEBUG=
case " $(cat /proc/cmdline) " in *" vm61.debug "*) DEBUG=1 ;; esac
stamp() { [ -z "$DEBUG" ] || say "$(cut -d' ' -f1 /proc/uptime) $*"; }
stamp stage2 start

export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$BB hostname vm61

$BB ip link set lo up 2>/dev/null || ip link set lo up

read -r up _ </proc/uptime
echo "START $up" >"$CTL"

$BB env -i /bin/bash --noprofile --norc /run/vm61/job.sh </dev/null >"$OUT" 2>"$ERR"
finish $?
