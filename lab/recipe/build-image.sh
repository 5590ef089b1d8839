#!/bin/bash
# Turn the dom0 rootfs tarball into everything a lab host boots:
#   OUTDIR/xen          Xen hypervisor (multiboot ELF for QEMU -kernel)
#   OUTDIR/vmlinuz      dom0 kernel (also the PVH guest's kernel)
#   OUTDIR/initrd.img   dom0 initrd
#   OUTDIR/dom0.img     dom0 root disk (ext4, made without loop mounts)
#   OUTDIR/seqcli       test client for the lab netns
# The guest (kernel, initramfs with busybox + seqsrv, xl config) is placed in
# the dom0 image under /var/lib/tandem-lab/guest.
# Usage: build-image.sh ROOTFS.tar OUTDIR
set -euo pipefail
tarball="$1"; out="$2"
here="$(cd "$(dirname "$0")" && pwd)"
guestsrc="$here/../guest"
GUEST_IP=10.70.0.100/24
GUEST_MAC=00:16:3e:70:00:64
GUESTDIR=/var/lib/tandem-lab/guest

work="$(mktemp -d /var/tmp/tandem-lab-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
root="$work/root"
mkdir -p "$root" "$out"
tar -xpf "$tarball" -C "$root" --numeric-owner

kver="$(ls "$root/lib/modules" | sort -V | tail -n1)"
xengz="$(ls "$root"/boot/xen-*-amd64.gz | sort -V | tail -n1)"
echo "build-image: kernel $kver, hypervisor $(basename "$xengz")"
zcat "$xengz" > "$out/xen"
cp "$root/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$out/initrd.img"

# Guest service and client.
gcc -O2 -Wall -Wextra -static -o "$work/seqsrv" "$guestsrc/seqsrv.c"
gcc -O2 -Wall -Wextra -static -o "$work/dirtier" "$guestsrc/dirtier.c"
gcc -O2 -Wall -Wextra -o "$out/seqcli" "$guestsrc/seqcli.c"
install -m 0755 "$out/seqcli" "$root/usr/local/bin/seqcli"

# Guest initramfs: static busybox, seqsrv, dirtier, netfront (+ its module deps).
ird="$work/guest-initramfs"
mkdir -p "$ird"/{bin,proc,sys,dev,lib/modules}
busybox_bin="$(command -v busybox)"
if ldd "$busybox_bin" >/dev/null 2>&1; then
  echo "build-image: $busybox_bin is not static (install busybox-static)" >&2
  exit 1
fi
cp "$busybox_bin" "$ird/bin/busybox"
cp "$work/seqsrv" "$ird/bin/seqsrv"
cp "$work/dirtier" "$ird/bin/dirtier"
install -m 0755 "$guestsrc/init" "$ird/init"
add_module() { # name: copy the module and its dependencies, dependencies first
  local name="$1" path dep
  path="$(modinfo -b "$root" -k "$kver" -n "$name")"
  case "$path" in /*) ;; *) echo "build-image: module $name: $path" >&2; return 0;; esac
  for dep in $(modinfo -b "$root" -k "$kver" -F depends "$name" | tr ',' ' '); do
    add_module "$dep"
  done
  local n; n=$(ls "$ird/lib/modules" | wc -l)
  local base; base="$(basename "$path")"
  ls "$ird"/lib/modules/*-"${base%%.ko*}.ko" >/dev/null 2>&1 && return 0
  case "$path" in
    *.ko) cp "$path" "$ird/lib/modules/$(printf %02d "$n")-$base" ;;
    *.ko.xz) xz -dc "$path" > "$ird/lib/modules/$(printf %02d "$n")-${base%.xz}" ;;
    *.ko.zst) zstd -qdc "$path" > "$ird/lib/modules/$(printf %02d "$n")-${base%.zst}" ;;
  esac
}
add_module xen-netfront
# the disk guest (g1-disk.cfg): its VBD and ext4 (crc32c for the metadata checksums)
add_module xen-blkfront
add_module crc32c_generic
add_module ext4
ls "$ird/lib/modules"
mkdir -p "$root$GUESTDIR"
(cd "$ird" && find . | sort | cpio -o -H newc --quiet | gzip -9) > "$root$GUESTDIR/initrd.img"
cp "$out/vmlinuz" "$root$GUESTDIR/vmlinuz"
sed -e "s|@GUESTDIR@|$GUESTDIR|g" -e "s|@GUEST_IP@|$GUEST_IP|g" -e "s|@GUEST_MAC@|$GUEST_MAC|g" \
  "$guestsrc/g1.cfg.in" > "$root$GUESTDIR/g1.cfg"
sed -e "s|@GUESTDIR@|$GUESTDIR|g" -e "s|@GUEST_IP@|$GUEST_IP|g" -e "s|@GUEST_MAC@|$GUEST_MAC|g" \
  "$guestsrc/g1-disk.cfg.in" > "$root$GUESTDIR/g1-disk.cfg"

rm -f "$out/dom0.img"
mke2fs -q -t ext4 -L dom0 -d "$root" "$out/dom0.img" 4G
echo "build-image: done in $out"
