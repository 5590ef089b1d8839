#!/bin/bash
# Build the dom0 root file system tarball from Debian bookworm packages.
# Usage: build-rootfs.sh OUT.tar
# Uses the mirror(s) this machine's apt is configured with (read at run time).
set -euo pipefail
out="$1"
here="$(cd "$(dirname "$0")" && pwd)"

pkgs="$(grep -v '^[[:space:]]*#' "$here/dom0-packages.txt" | awk 'NF{print $1}' | paste -sd, -)"

shopt -s nullglob
mirrors=()
for f in /etc/apt/sources.list.d/*.sources; do
  grep -q '^URIs:' "$f" && mirrors+=("$f")
done
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
  [ -s "$f" ] && grep -q '^deb ' "$f" && mirrors+=("$f")
done
if [ "${#mirrors[@]}" -eq 0 ]; then
  echo "build-rootfs: no apt sources configured on this machine" >&2
  exit 1
fi
echo "build-rootfs: apt sources from ${mirrors[*]}"

rm -f "$out.part"
mmdebstrap --variant=apt --format=tar \
  --include="$pkgs" \
  --customize-hook="\"$here/dom0-customize.sh\" \"\$1\"" \
  bookworm "$out.part" "${mirrors[@]}"
mv "$out.part" "$out"
