#!/bin/bash
# tandem's emulated two-host Xen lab.  See docs/lab.md.
#
#   lab/lab.sh deps                 install the host packages (lab/deps.sh)
#   lab/lab.sh build                build the images that are missing
#   lab/lab.sh up                   netns + bridges, boot hosts A and B, wait for ssh and xl
#   lab/lab.sh status               what runs
#   lab/lab.sh ssh A|B CMD...       run a command in a dom0 (over mgmt)
#   lab/lab.sh shell A|B            interactive shell in a dom0
#   lab/lab.sh copy-in A|B FILE... DEST   scp files into a dom0
#   lab/lab.sh copy-out A|B FILE DEST     scp a file out of a dom0
#   lab/lab.sh guest-up             create the PVH guest g1 on A, check TCP from the client
#   lab/lab.sh client ARGS...       run seqcli inside the lab netns
#   lab/lab.sh netns CMD...         run any command inside the lab netns
#   lab/lab.sh kill-host A|B        kill -9 that host's QEMU (host loss)
#   lab/lab.sh cut A|B public|repl|mgmt      detach that host's port from the bridge
#   lab/lab.sh restore A|B public|repl|mgmt  reattach it
#   lab/lab.sh baseline             build, up, guest-up, xl remus A->B, kill A, report
#   lab/lab.sh down                 stop our QEMUs (by pidfile) and delete the netns
#
# Environment: TANDEM_LAB_CACHE (default ~/.cache/tandem-lab),
# TANDEM_LAB_RUN (default $TANDEM_LAB_CACHE/run), TANDEM_LAB_NETNS
# (default tandem-lab), LAB_HOST_MEM_MB (2560), LAB_HOST_CPUS (2),
# LAB_DOM0_MEM_MB (1024); baseline: LAB_REMUS_INTERVAL_MS (100),
# LAB_CHECKPOINTS (20), LAB_REMUS_FLAGS ("-n -F"), LAB_FAILOVER_WAIT_S (300), LAB_TCP_WAIT_S (120).
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${TANDEM_LAB_CACHE:-$HOME/.cache/tandem-lab}"
RUN="${TANDEM_LAB_RUN:-$CACHE/run}"
NS="${TANDEM_LAB_NETNS:-tandem-lab}"
HOST_MEM_MB="${LAB_HOST_MEM_MB:-2560}"
HOST_CPUS="${LAB_HOST_CPUS:-2}"
DOM0_MEM_MB="${LAB_DOM0_MEM_MB:-1024}"

# Timeouts, sized from times measured on a 2-core TCG machine (docs/lab.md):
# both hosts reach ssh in about 2 min when booted together; a guest is up in
# well under a minute.  Each limit is several times the measured time.
BOOT_TIMEOUT_S="${LAB_BOOT_TIMEOUT_S:-900}"
GUEST_TIMEOUT_S="${LAB_GUEST_TIMEOUT_S:-300}"

GUEST_IP=10.70.0.100
GUEST_PORT=7000
GUEST_CFG=/var/lib/tandem-lab/guest/g1.cfg
NETS=(public repl mgmt)

log() { printf 'lab: %s\n' "$*" >&2; }
die() { printf 'lab: error: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N | cut -c1-14; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

host_idx() {
  case "$1" in
    A) echo 1 ;;
    B) echo 2 ;;
    *) die "unknown host '$1' (A or B)" ;;
  esac
}
net_idx() {
  case "$1" in
    public) echo 0 ;;
    repl) echo 1 ;;
    mgmt) echo 2 ;;
    *) die "unknown network '$1' (public, repl or mgmt)" ;;
  esac
}
host_ip() { echo "10.70.$(net_idx "$2").1$(host_idx "$1")"; }   # host_ip A mgmt
host_mac() { echo "52:54:00:70:0$(net_idx "$2"):1$(host_idx "$1")"; }
tap_name() { echo "$1-$2"; }

in_ns() { ip netns exec "$NS" "$@"; }
ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$NS"; }

# ---------------------------------------------------------------- build ----
recipe_key() { # files... -> short hash of their names and contents
  local f
  for f in "$@"; do printf '%s\n' "${f#"$LAB_DIR"/}"; cat "$f"; done | sha256sum | cut -c1-16
}
rootfs_key() {
  recipe_key "$LAB_DIR"/recipe/dom0-packages.txt "$LAB_DIR"/recipe/dom0-customize.sh \
    "$LAB_DIR"/recipe/lab-seed "$LAB_DIR"/recipe/build-rootfs.sh
}
image_key() {
  { rootfs_key; recipe_key "$LAB_DIR"/recipe/build-image.sh "$LAB_DIR"/guest/*; } | sha256sum | cut -c1-16
}
image_dir() { echo "$CACHE/image-$(image_key)"; }

cmd_deps() { "$LAB_DIR/deps.sh" "$@"; }

cmd_build() {
  [ "$(id -u)" -eq 0 ] || die "the lab needs root (mmdebstrap, netns, taps)"
  cmd_deps -q
  local rdir idir t0
  rdir="$CACHE/rootfs-$(rootfs_key)"
  idir="$(image_dir)"
  mkdir -p "$CACHE"
  if [ ! -f "$rdir/rootfs.tar" ]; then
    log "building dom0 root file system into $rdir (mmdebstrap; a few minutes)"
    t0="$(now)"
    mkdir -p "$rdir"
    "$LAB_DIR/recipe/build-rootfs.sh" "$rdir/rootfs.tar" > "$rdir/build.log" 2>&1 \
      || { tail -n 30 "$rdir/build.log" >&2; die "rootfs build failed (log: $rdir/build.log)"; }
    log "rootfs built in $(elapsed "$t0") s"
  fi
  if [ ! -f "$idir/done" ]; then
    log "building host images into $idir"
    t0="$(now)"
    rm -rf "$idir"; mkdir -p "$idir"
    "$LAB_DIR/recipe/build-image.sh" "$rdir/rootfs.tar" "$idir" > "$idir/build.log" 2>&1 \
      || { tail -n 30 "$idir/build.log" >&2; die "image build failed (log: $idir/build.log)"; }
    date -u +%FT%TZ > "$idir/done"
    log "images built in $(elapsed "$t0") s"
  fi
  # Drop cache entries of older recipes.
  local d
  for d in "$CACHE"/rootfs-* "$CACHE"/image-*; do
    [ -d "$d" ] || continue
    [ "$d" = "$rdir" ] || [ "$d" = "$idir" ] || { log "removing stale cache $d"; rm -rf "$d"; }
  done
  log "images ready: $idir"
}

# ------------------------------------------------------------- control ----
SSH_OPTS=(-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR
          -o BatchMode=yes -o ConnectTimeout=30 -o ServerAliveInterval=5 -o ServerAliveCountMax=6)

lab_ssh() { # host [ssh options --] cmd...
  local h="$1"; shift
  in_ns ssh -i "$RUN/id_lab" "${SSH_OPTS[@]}" "root@$(host_ip "$h" mgmt)" "$@"
}

cmd_ssh() {
  [ $# -ge 2 ] || die "usage: lab.sh ssh A|B CMD..."
  local h="$1"; shift
  lab_ssh "$h" "$@"
}

cmd_shell() {
  [ $# -eq 1 ] || die "usage: lab.sh shell A|B"
  in_ns ssh -t -i "$RUN/id_lab" "${SSH_OPTS[@]}" "root@$(host_ip "$1" mgmt)"
}

cmd_copy_in() {
  [ $# -ge 3 ] || die "usage: lab.sh copy-in A|B FILE... DEST"
  local h="$1"; shift
  local dest="${*: -1}"
  local files=("${@:1:$#-1}")
  in_ns scp -q -i "$RUN/id_lab" "${SSH_OPTS[@]}" "${files[@]}" "root@$(host_ip "$h" mgmt):$dest"
}

cmd_copy_out() {
  [ $# -eq 3 ] || die "usage: lab.sh copy-out A|B REMOTE_FILE DEST"
  in_ns scp -q -i "$RUN/id_lab" "${SSH_OPTS[@]}" "root@$(host_ip "$1" mgmt):$2" "$3"
}

cmd_netns() { in_ns "$@"; }

cmd_client() { in_ns "$(image_dir)/seqcli" "$@"; }

# Poll CMD until it succeeds or TIMEOUT seconds pass.  wait_for DESC TIMEOUT CMD...
wait_for() {
  local desc="$1" timeout="$2"; shift 2
  local t0 last=0 e
  t0="$(now)"
  while :; do
    if "$@" >/dev/null 2>&1; then
      log "$desc: ok after $(elapsed "$t0") s"
      return 0
    fi
    e="$(elapsed "$t0")"; e="${e%.*}"
    if [ "$e" -ge "$timeout" ]; then
      log "$desc: not after ${timeout} s"
      return 1
    fi
    if [ $((e - last)) -ge 30 ]; then log "$desc: waiting ($e s)"; last=$e; fi
    sleep 1
  done
}

# ---------------------------------------------------------------- hosts ----
qemu_pid() { # host -> pid of our QEMU if it runs
  local f="$RUN/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q -- "-name lab-$1" || return 1
  echo "$pid"
}

make_seed() { # host -> $RUN/$host-seed.tar
  local h="$1" i s
  i="$(host_idx "$h")"
  s="$RUN/seed-$h"
  rm -rf "$s"; mkdir -p "$s/network"
  echo "$h" > "$s/hostname"
  cp "$RUN/id_lab.pub" "$s/authorized_keys"
  cp "$RUN/id_lab" "$s/id_lab"
  cat > "$s/ssh_config" <<EOF
Host *
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
  BatchMode yes
  IdentityFile /root/.ssh/id_ed25519
  # the cheapest cipher under TCG (AES-NI is emulated; chacha20 is not)
  Ciphers aes128-gcm@openssh.com,chacha20-poly1305@openssh.com
EOF
  cat > "$s/network/10-xenbr0.netdev" <<EOF
[NetDev]
Name=xenbr0
Kind=bridge
MACAddress=52:54:00:70:10:1$i

[Bridge]
STP=no
ForwardDelaySec=0
EOF
  cat > "$s/network/20-public.network" <<EOF
[Match]
MACAddress=$(host_mac "$h" public)
Type=ether

[Network]
Bridge=xenbr0
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
  cat > "$s/network/30-xenbr0.network" <<EOF
[Match]
Name=xenbr0

[Network]
Address=$(host_ip "$h" public)/24
LinkLocalAddressing=no
IPv6AcceptRA=no
ConfigureWithoutCarrier=yes
EOF
  local n
  for n in repl mgmt; do
    cat > "$s/network/20-$n.network" <<EOF
[Match]
MACAddress=$(host_mac "$h" "$n")
Type=ether

[Network]
Address=$(host_ip "$h" "$n")/24
LinkLocalAddressing=no
IPv6AcceptRA=no
ConfigureWithoutCarrier=yes
EOF
  done
  # sshd notices a dead client within a few seconds: without this, B's
  # `xl migrate-receive` (fed by sshd) never sees the stream break when host
  # A vanishes (no FIN, no RST) and Remus does not fail over for hours.
  cat > "$s/hook" <<EOF
#!/bin/sh
cat > /etc/ssh/sshd_config.d/lab-alive.conf <<X
ClientAliveInterval ${LAB_SSHD_ALIVE_S:-1}
ClientAliveCountMax 3
X
[ "${LAB_SSHD_ALIVE_S:-1}" = 0 ] && rm -f /etc/ssh/sshd_config.d/lab-alive.conf
exit 0
EOF
  chmod +x "$s/hook"
  tar -cf "$RUN/$h-seed.tar" -C "$s" .
}

start_host() {
  local h="$1" idir xen_args dom0_args net netargs=()
  idir="$(image_dir)"
  rm -f "$RUN/$h.qcow2" "$RUN/$h.serial.log" "$RUN/$h.pid"
  qemu-img create -q -f qcow2 -F raw -b "$idir/dom0.img" "$RUN/$h.qcow2"
  make_seed "$h"
  for net in "${NETS[@]}"; do
    netargs+=(-netdev "tap,id=$net,ifname=$(tap_name "$h" "$net"),script=no,downscript=no"
              -device "virtio-net-pci,netdev=$net,mac=$(host_mac "$h" "$net")")
  done
  xen_args="console=com1 com1=115200 dom0_mem=${DOM0_MEM_MB}M,max:${DOM0_MEM_MB}M noreboot"
  dom0_args="root=/dev/vda rw console=hvc0 earlyprintk=xen net.ifnames=0"
  in_ns qemu-system-x86_64 -name "lab-$h" -accel tcg \
    -cpu qemu64,+svm,+npt,+sse4.1,+sse4.2,+popcnt,+ssse3,+lahf_lm,+aes,+pclmulqdq \
    -smp "$HOST_CPUS" -m "$HOST_MEM_MB" -display none -no-reboot \
    -kernel "$idir/xen" -append "$xen_args" \
    -initrd "$idir/vmlinuz $dom0_args,$idir/initrd.img" \
    -drive "file=$RUN/$h.qcow2,format=qcow2,if=virtio" \
    -drive "file=$RUN/$h-seed.tar,format=raw,if=virtio,readonly=on" \
    "${netargs[@]}" \
    -serial "file:$RUN/$h.serial.log" \
    -monitor "unix:$RUN/$h.monitor,server,nowait" \
    -pidfile "$RUN/$h.pid" -daemonize
  log "host $h: QEMU pid $(cat "$RUN/$h.pid"), serial log $RUN/$h.serial.log"
}

ssh_ok() { lab_ssh "$1" true; }
xl_ok() { lab_ssh "$1" xl info; }
host_alive_or_die() { qemu_pid "$1" >/dev/null || { tail -n 40 "$RUN/$1.serial.log" >&2; die "host $1: QEMU exited"; }; }
ssh_ok_checked() { host_alive_or_die "$1"; ssh_ok "$1"; }

cmd_up() {
  [ "$(id -u)" -eq 0 ] || die "the lab needs root"
  cmd_build
  mkdir -p "$RUN"
  if qemu_pid A >/dev/null || qemu_pid B >/dev/null; then
    die "the lab is already up (lab.sh down first)"
  fi
  ns_exists && ip netns del "$NS"
  log "creating netns $NS with bridges ${NETS[*]}"
  ip netns add "$NS"
  in_ns ip link set lo up
  local net h t0
  for net in "${NETS[@]}"; do
    in_ns ip link add "$net" type bridge stp_state 0 forward_delay 0
    in_ns ip link set "$net" up
  done
  # The client lives on public; the lab's control path is mgmt.  No route out.
  in_ns ip addr add 10.70.0.1/24 dev public
  in_ns ip addr add 10.70.2.1/24 dev mgmt
  for h in A B; do
    for net in "${NETS[@]}"; do
      in_ns ip tuntap add dev "$(tap_name "$h" "$net")" mode tap
      in_ns ip link set "$(tap_name "$h" "$net")" master "$net" up
    done
  done
  if [ ! -f "$RUN/id_lab" ]; then
    ssh-keygen -q -t ed25519 -N '' -C "tandem-lab" -f "$RUN/id_lab"
  fi
  t0="$(now)"
  for h in A B; do start_host "$h"; done
  for h in A B; do
    wait_for "host $h: ssh over mgmt" "$BOOT_TIMEOUT_S" ssh_ok_checked "$h" || die "host $h did not come up (serial log $RUN/$h.serial.log)"
  done
  for h in A B; do
    wait_for "host $h: xl info" 120 xl_ok "$h" || die "host $h: xl info fails"
  done
  lab_ssh A ssh "$(host_ip B repl)" true || die "A cannot ssh to B over repl"
  lab_ssh B ssh "$(host_ip A repl)" true || die "B cannot ssh to A over repl"
  echo "$(elapsed "$t0")" > "$RUN/boot_seconds"
  log "lab up: hosts A and B answer ssh and xl info ($(cat "$RUN/boot_seconds") s from QEMU start)"
}

cmd_status() {
  local h pid
  ns_exists && echo "netns $NS: present" || echo "netns $NS: absent"
  for h in A B; do
    if pid="$(qemu_pid "$h")"; then
      echo "host $h: QEMU pid $pid"
      lab_ssh "$h" xl list 2>/dev/null | sed "s/^/  $h: /" || echo "  $h: no ssh"
    else
      echo "host $h: not running"
    fi
  done
}

stop_pidfile() { # file desc : TERM, poll, then KILL, only our recorded pid
  local f="$1" pid i
  [ -f "$f" ] || return 0
  pid="$(cat "$f")"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for i in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

cmd_down() {
  local h
  stop_pidfile "$RUN/client.pid"
  stop_pidfile "$RUN/tcpdump.pid"
  for h in A B; do
    if qemu_pid "$h" >/dev/null; then
      log "stopping host $h (QEMU pid $(cat "$RUN/$h.pid"))"
      stop_pidfile "$RUN/$h.pid"
    fi
    rm -f "$RUN/$h.pid"
  done
  if ns_exists; then
    ip netns del "$NS"
    log "netns $NS deleted"
  fi
}

cmd_kill_host() {
  [ $# -eq 1 ] || die "usage: lab.sh kill-host A|B"
  local pid
  pid="$(qemu_pid "$1")" || die "host $1 is not running"
  kill -9 "$pid"
  log "host $1: QEMU pid $pid killed (SIGKILL)"
}

cmd_cut() {
  [ $# -eq 2 ] || die "usage: lab.sh cut A|B public|repl|mgmt"
  net_idx "$2" >/dev/null; host_idx "$1" >/dev/null
  in_ns ip link set "$(tap_name "$1" "$2")" nomaster
  log "host $1 cut from $2"
}

cmd_restore() {
  [ $# -eq 2 ] || die "usage: lab.sh restore A|B public|repl|mgmt"
  net_idx "$2" >/dev/null; host_idx "$1" >/dev/null
  in_ns ip link set "$(tap_name "$1" "$2")" master "$2"
  log "host $1 restored on $2"
}

# ---------------------------------------------------------------- guest ----
guest_probe() { in_ns "$(image_dir)/seqcli" -1 "$GUEST_IP" "$GUEST_PORT"; }
guest_listed() { lab_ssh "$1" xl domid g1; }

cmd_guest_up() {
  local t0
  qemu_pid A >/dev/null || die "host A is not running (lab.sh up)"
  if guest_listed A >/dev/null 2>&1; then
    log "g1 already exists on A"
  else
    t0="$(now)"
    lab_ssh A xl create "$GUEST_CFG" >&2
    wait_for "guest g1 listed on A" 60 guest_listed A || die "g1 not created"
  fi
  t0="${t0:-$(now)}"
  wait_for "guest g1 answers TCP on $GUEST_IP:$GUEST_PORT" "$GUEST_TIMEOUT_S" guest_probe \
    || { lab_ssh A "xl list; tail -n 20 /var/log/xen/*g1*.log" >&2 || true; die "guest does not answer"; }
  echo "$(elapsed "$t0")" > "$RUN/guest_seconds"
  log "guest g1 on A serves TCP (domid $(lab_ssh A xl domid g1), $(cat "$RUN/guest_seconds") s from xl create)"
}

# ------------------------------------------------------------- baseline ----
client_status() { # key -> value from the client's status file
  sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" "$RUN/client.status" 2>/dev/null
}
client_ok_at_least() { local v; v="$(client_status ok)"; [ -n "$v" ] && [ "$v" -ge "$1" ]; }
client_ok_after() { # epoch: client got an answer after that time
  local v; v="$(client_status last_ok)"
  [ -n "$v" ] && awk -v a="$v" -v b="$1" 'BEGIN{exit !(a>b)}'
}
remus_log_has() { lab_ssh A "grep -q -- '$1' /root/remus.log"; }

# Checkpoints taken so far: each checkpoint starts with libxl's debug line
# "guest has suspended" in A's `xl -vvv -T remus` output (the first one ends
# the live first copy).
remus_checkpoints() {
  lab_ssh A "grep -c 'guest has suspended' /root/remus.log 2>/dev/null || true" 2>/dev/null | tail -n1
}
checkpoints_at_least() { local c; c="$(remus_checkpoints)"; [ -n "$c" ] && [ "$c" -ge "$1" ]; }
b_guest_running() { # g1 exists on B under its own name and is not paused
  local line
  line="$(lab_ssh B "xl list g1 2>/dev/null | tail -n +2")" || return 1
  [ -n "$line" ] && ! awk '{print $5}' <<<"$line" | grep -q p
}

# Summarise an `xl -vvv -T remus` log (second-resolution timestamps):
# first copy duration, epoch length, suspended time per checkpoint (from
# "guest has suspended" to "Checkpointed save"), dirty pages per checkpoint.
remus_stats() {
  tr '\r' '\n' < "$1" | awk '
    function ts(   t) { t = $1 " " $2; gsub(/[-:]/, " ", t); return mktime(t) }
    /Saving domain/ && !start { start = ts() }
    /guest has suspended/ { n++; s = ts(); if (n == 1) first = s; last = s; susp = s; insusp = 1 }
    /Checkpointed save:/ && insusp { p += ts() - susp; np++; insusp = 0
      split($0, a, "Checkpointed save: "); split(a[2], b, "/"); pages[np] = b[1] + 0 }
    END {
      printf "checkpoints=%d", n
      if (start && first) printf " first_copy_s=%d", first - start
      if (n > 1) printf " epoch_s=%.2f", (last - first) / (n - 1)
      if (np) printf " suspended_s_per_checkpoint=%.2f", p / np
      if (np) {
        for (i = 2; i <= np; i++) { v = pages[i]; for (j = i - 1; j >= 1 && pages[j] > v; j--) pages[j + 1] = pages[j]; pages[j + 1] = v }
        printf " dirty_pages_median=%d dirty_pages_max=%d", pages[int((np + 1) / 2)], pages[np]
      }
      printf "\n"
    }'
}

cmd_baseline() {
  local interval="${LAB_REMUS_INTERVAL_MS:-100}" want="${LAB_CHECKPOINTS:-20}"
  # Debian's libxl has no network buffering ("No support for network
  # buffering"), and -n needs -F (unsafe mode): see docs/lab.md.
  local flags="${LAB_REMUS_FLAGS:--n -F}" fwait="${LAB_FAILOVER_WAIT_S:-300}"
  local t_start t_kill t_b_run t_tcp ok_before stats
  t_start="$(now)"
  cmd_build
  cmd_down
  cmd_up
  cmd_guest_up

  # Watch ARP on the public bridge (does the guest announce itself on B?).
  # (`ip netns exec` execs its command, so $! is the pid of tcpdump/seqcli
  # themselves; a shell function here would record a subshell's pid.)
  ip netns exec "$NS" tcpdump -i public -n -e -l -tt arp > "$RUN/arp.log" 2>/dev/null &
  echo $! > "$RUN/tcpdump.pid"

  # Continuous request/response from the public network.  The client gives
  # up on a connection only after 900 s without an answer, so whether TCP
  # survives is decided by TCP, not by the client.
  rm -f "$RUN/client.status" "$RUN/client.log"
  ip netns exec "$NS" "$(image_dir)/seqcli" -i 20 -t 900 -s "$RUN/client.status" "$GUEST_IP" "$GUEST_PORT" \
    > "$RUN/client.log" 2>&1 &
  echo $! > "$RUN/client.pid"
  wait_for "client: 20 answers" 120 client_ok_at_least 20 || die "client does not get answers"

  # Real two-host Remus: A's xl runs `ssh 10.70.1.12 xl migrate-receive -r` over repl.
  log "starting on A: xl -vvv -T remus -i $interval $flags g1 $(host_ip B repl)"
  lab_ssh A "nohup xl -vvv -T remus -i $interval $flags g1 $(host_ip B repl) > /root/remus.log 2>&1 < /dev/null & echo \$! > /root/remus.pid"
  wait_for "B: incoming copy of g1" 300 lab_ssh B "xl list | grep -q g1--incoming" \
    || { lab_ssh A "tail -n 30 /root/remus.log" >&2; die "no incoming domain on B"; }
  # The first (live) copy of 256 MiB crawls through ssh under TCG: minutes.
  wait_for "remus: first copy done, $want checkpoints" 2400 checkpoints_at_least "$want" \
    || { lab_ssh A "tail -c 3000 /root/remus.log" >&2; die "remus took no $want checkpoints"; }
  lab_ssh A "xl list" >&2 || true
  lab_ssh B "xl list" >&2 || true
  cmd_copy_out A /root/remus.log "$RUN/remus-A.log" || true
  stats="$(remus_stats "$RUN/remus-A.log")"
  ok_before="$(client_status ok)"

  t_kill="$(now)"
  cmd_kill_host A
  # (answers counted as "after the kill" must arrive 2 s or more after it,
  # so that nothing A sent just before it died is counted)
  if wait_for "B: g1 running after failover" "$fwait" b_guest_running; then
    t_b_run="$(now)"
  else
    t_b_run=""
  fi
  # The client's connection survived if an answer arrives on it.  Without
  # network buffering it may hang instead (no reset, no answer): then make
  # the client reconnect, which shows in HELLO whether the guest on B lost
  # answers the client had already seen (a rollback).
  local t_re="" tcp
  if wait_for "client: answer after the kill on the same connection" "${LAB_TCP_WAIT_S:-120}" client_ok_after "$(awk -v t="$t_kill" 'BEGIN{printf "%.3f", t + 2}')"; then
    t_tcp="$(now)"
  else
    t_tcp=""
  fi
  if [ -n "$t_tcp" ] && [ "$(client_status conns)" = 1 ] && [ "$(client_status resets)" = 0 ]; then
    tcp=yes
    wait_for "client: 20 more answers" 120 client_ok_at_least $(( $(client_status ok) + 20 )) || true
  else
    if [ "$(client_status connected)" = 1 ] && [ -z "$t_tcp" ]; then tcp=no-hung; else tcp=no-reset; fi
    local t_force
    t_force="$(now)"
    kill -USR1 "$(cat "$RUN/client.pid")" 2>/dev/null || true
    if wait_for "client: answer on a new connection" 120 client_ok_after "$t_force"; then
      t_re="$(now)"
      [ -z "$t_tcp" ] && t_tcp="$t_re"
    fi
  fi
  stop_pidfile "$RUN/client.pid"
  stop_pidfile "$RUN/tcpdump.pid"
  lab_ssh B "xl list; ls /var/log/xen; tail -n 20 /var/log/xen/xl-g1*.log" > "$RUN/B-after.log" 2>&1 || true

  local conns resets gaps repeats rollbacks reboots stall garp
  conns="$(client_status conns)"; resets="$(client_status resets)"
  gaps="$(client_status gaps)"; repeats="$(client_status repeats)"
  rollbacks="$(client_status rollbacks)"; reboots="$(client_status reboots)"
  stall="$(client_status max_stall_ms)"
  # An ARP from the guest's MAC about its own address, after the kill.
  garp="$(awk -v t="$t_kill" '$1 > t && $2 == "00:16:3e:70:00:64" && /tell 10.70.0.100|Reply 10.70.0.100/ {n++} END {print (n ? "yes" : "no")}' "$RUN/arp.log")"
  echo "lab baseline: $stats interval_ms=$interval remus_flags='$flags'"
  echo "lab baseline: boot_s=$(cat "$RUN/boot_seconds") guest_create_s=$(cat "$RUN/guest_seconds")"
  echo "lab baseline: failover_s=$( [ -n "$t_b_run" ] && awk -v a="$t_kill" -v b="$t_b_run" 'BEGIN{printf "%.1f", b-a}' || echo never) guest_on_B=$( [ -n "$t_b_run" ] && echo running || echo no) guest_arp_after_kill=$garp"
  echo "lab baseline: tcp_survived=$tcp client_answered_after_kill_s=$( [ -n "$t_tcp" ] && awk -v a="$t_kill" -v b="$t_tcp" 'BEGIN{printf "%.1f", b-a}' || echo never) reconnected=$( [ -n "$t_re" ] && echo yes || echo no) max_stall_ms=$stall answers_before_kill=$ok_before answers_total=$(client_status ok)"
  echo "lab baseline: client conns=$conns resets=$resets forced_reconnects=$(client_status forced) gaps=$gaps repeats=$repeats rollbacks=$rollbacks answers_lost=$(awk -F'lost=' '/event=rollback/ {n += $2} END {print n + 0}' "$RUN/client.log") reboots=$reboots"
  echo "lab baseline: total_s=$(elapsed "$t_start")"
  log "logs: $RUN/client.log $RUN/remus-A.log $RUN/arp.log $RUN/B-after.log"
}

# ----------------------------------------------------------------- main ----
main() {
  local cmd="${1:-}"
  [ $# -gt 0 ] && shift
  case "$cmd" in
    deps) cmd_deps "$@" ;;
    build) cmd_build ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    ssh) cmd_ssh "$@" ;;
    shell) cmd_shell "$@" ;;
    copy-in) cmd_copy_in "$@" ;;
    copy-out) cmd_copy_out "$@" ;;
    netns) cmd_netns "$@" ;;
    client) cmd_client "$@" ;;
    guest-up) cmd_guest_up ;;
    kill-host) cmd_kill_host "$@" ;;
    cut) cmd_cut "$@" ;;
    restore) cmd_restore "$@" ;;
    baseline) cmd_baseline ;;
    ""|-h|--help|help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' ;;
    *) die "unknown command '$cmd' (lab.sh help)" ;;
  esac
}
main "$@"
