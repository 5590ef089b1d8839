#!/bin/bash
# mmdebstrap --customize-hook for the dom0 root file system.
# $1 is the root directory of the new system. Runs on the build machine.
set -euo pipefail
root="$1"
here="$(cd "$(dirname "$0")" && pwd)"

echo lab-dom0 > "$root/etc/hostname"
cat > "$root/etc/hosts" <<'H'
127.0.0.1 localhost
10.70.2.11 A
10.70.2.12 B
10.70.1.11 A-repl
10.70.1.12 B-repl
H
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"

# Keep the lab closed and quiet: nothing that reaches out by itself, no getty
# on hvc0 (agetty's vhangup cuts off services writing to the console), no
# xendomains save/restore at shutdown, no periodic jobs.
for u in apt-daily.timer apt-daily-upgrade.timer systemd-timesyncd.service \
         serial-getty@hvc0.service getty@tty1.service xendomains.service \
         e2scrub_all.timer e2scrub_reap.service fstrim.timer man-db.timer \
         dpkg-db-backup.timer logrotate.timer systemd-networkd-wait-online.service \
         drbd.service getty-static.service systemd-binfmt.service \
         proc-sys-fs-binfmt_misc.automount sys-kernel-debug.mount \
         sys-kernel-tracing.mount systemd-pstore.service modprobe@drm.service \
         modprobe@efi_pstore.service modprobe@fuse.service modprobe@loop.service \
         modprobe@dm_mod.service; do
  ln -sf /dev/null "$root/etc/systemd/system/$u"
done
rm -f "$root"/etc/systemd/system/timers.target.wants/apt-daily*.timer

# Static addresses by systemd-networkd (files come from the per-host seed).
chroot "$root" systemctl enable systemd-networkd.service >/dev/null 2>&1
# No DHCP anywhere: no ifupdown config, no dhclient installed.
rm -f "$root/etc/network/interfaces.d/"* 2>/dev/null || true

# Per-host seed: lab.sh attaches a small tar as /dev/vdb; this unit applies it
# (hostname, addresses, ssh keys) before the network and sshd come up.
install -m 0755 "$here/lab-seed" "$root/usr/local/sbin/lab-seed"
cat > "$root/etc/systemd/system/lab-seed.service" <<'U'
[Unit]
Description=tandem lab: apply the per-host seed from /dev/vdb
DefaultDependencies=no
Requires=dev-vdb.device
After=dev-vdb.device local-fs.target
Before=network-pre.target systemd-networkd.service ssh.service sysinit.target
Wants=network-pre.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/lab-seed

[Install]
WantedBy=sysinit.target
U
chroot "$root" systemctl enable lab-seed.service >/dev/null 2>&1

# sshd: keys only, no DNS lookups (there is no resolver in the lab).
mkdir -p "$root/etc/ssh/sshd_config.d"
cat > "$root/etc/ssh/sshd_config.d/lab.conf" <<'S'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
S
: > "$root/etc/resolv.conf"

# Modules Remus and the lab use.
cat > "$root/etc/modules-load.d/tandem-lab.conf" <<'M'
xen-netback
xen-gntdev
xen-evtchn
ifb
sch_plug
xen-blkback
M

# xl: dom0 memory is fixed by dom0_mem; never balloon it.
sed -i 's/^#\?autoballoon=.*/autoballoon="off"/' "$root/etc/xen/xl.conf"
grep -q '^autoballoon' "$root/etc/xen/xl.conf" || echo 'autoballoon="off"' >> "$root/etc/xen/xl.conf"

# Small, quiet journal kept across boots (read it after a host is killed).
mkdir -p "$root/var/log/journal" "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=persistent\nSystemMaxUse=64M\n' > "$root/etc/systemd/journald.conf.d/lab.conf"

# A small dom0 initrd (only what mounting the virtio root needs): under TCG
# unpacking and probing the default MODULES=most initrd costs tens of seconds.
sed -i 's/^MODULES=.*/MODULES=list/' "$root/etc/initramfs-tools/initramfs.conf"
printf '%s\n' virtio_pci virtio_blk crc32c_generic ext4 >> "$root/etc/initramfs-tools/modules"
chroot "$root" update-initramfs -u -k all

# Do not keep the package cache in the image.
rm -rf "$root/var/cache/apt/archives/"*.deb "$root/var/lib/apt/lists/"* 2>/dev/null || true
