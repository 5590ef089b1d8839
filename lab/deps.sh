#!/bin/bash
# Install the host packages the Xen lab needs, only when missing (idempotent).
# Called by `lab/lab.sh deps` and by every lab.sh subcommand that needs them.
set -euo pipefail

# package name -> why
PKGS=(
  qemu-system-x86        # emulated hosts A and B (TCG)
  qemu-utils             # qemu-img: per-host copy-on-write overlays
  mmdebstrap             # dom0 root file system from Debian packages
  debian-archive-keyring # mmdebstrap verifies the mirror with it
  e2fsprogs              # mke2fs -d: disk image without loop mounts; debugfs
  busybox-static         # the PVH guest's initramfs userland
  cpio                   # packs the guest initramfs
  gzip
  zstd                   # unpacking modules (.ko.xz/.zst) if needed
  xz-utils
  gcc                    # guest server and client (static)
  libc6-dev              # static libc for them
  openssh-client         # control path over mgmt
  iproute2               # netns, bridges, taps
  tar
  tcpdump                # baseline: watch ARP on the public bridge
  coreutils              # timeout, sha256sum, seq, paste...
  procps                 # sysctl in the netns (compare's ARP retries)
  kmod                   # modinfo: the guest's netfront and its dependencies
  libc-bin               # ldd (busybox must be static), getconf
  findutils              # find: the guest initramfs
  mawk                   # awk with mktime (xl remus log timestamps)
  util-linux             # taskset, nsenter: pinning and entering the netns by hand
  # for a person debugging a run (lab.sh netns CMD...):
  iputils-ping           # ping the guest or a dom0 from the netns
  netcat-openbsd         # nc: talk to seqsrv (7000) or dirtier (7001) by hand
  strace                 # what a stuck QEMU or client is waiting for
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  [ "${1:-}" = "-q" ] || echo "lab deps: all ${#PKGS[@]} packages present"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "lab deps: missing ${missing[*]}; run as root to install them" >&2
  exit 1
fi
echo "lab deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
