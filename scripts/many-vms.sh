#!/usr/bin/env bash
# How many memdom VMs one host pair protects at 100 ms before an epoch
# stretches (issue "Run it as a service", item 6).  Two network
# namespaces this script creates (tdm-mv-a, tdm-mv-b, a veth between them)
# stand for the two hosts; every VM gets its own file that includes one
# defaults file, and its own replication port (7400 + its number).  For
# each count in COUNTS (default "2 4 8 16 32"): start that many backups
# in B and primaries in A, wait until all protect, watch WATCH_S (20)
# seconds, and count the VMs whose epochs never stretched (the lowest
# achieved rate seen is printed too: on a loaded machine it dips without
# a stretch).  One line per count:
#   many-vms: vms=N protecting=N steady=N stretched=N min_hz=... median_pause_ms=... load=...
# Needs root (network namespaces).  Stops only the processes it started.
set -euo pipefail
cd "$(dirname "$0")/.."
T=$PWD/tandem
COUNTS="${COUNTS:-2 4 8 16 32}"
WATCH_S="${WATCH_S:-20}"
dir=$(mktemp -d /tmp/tandem-manyvms.XXXXXX)
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	sleep 1
	for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	ip netns del tdm-mv-a 2>/dev/null || true
	ip netns del tdm-mv-b 2>/dev/null || true
	rm -rf "$dir"
}
trap cleanup EXIT

ip netns add tdm-mv-a
ip netns add tdm-mv-b
ip link add mv-a type veth peer name mv-b
ip link set mv-a netns tdm-mv-a
ip link set mv-b netns tdm-mv-b
ip -n tdm-mv-a addr add 10.77.0.1/24 dev mv-a
ip -n tdm-mv-b addr add 10.77.0.2/24 dev mv-b
for n in a b; do ip -n tdm-mv-$n link set lo up; ip -n tdm-mv-$n link set mv-$n up; done
"$T" keygen "$dir/key" > /dev/null
cat > "$dir/defaults.cfg" <<EOC
# shared by every VM of this host pair
domain = memdom
key-file = $dir/key
interval = 100ms
timeout = 2s
heartbeat-interval = 200ms
memory = 64M
workload-rate = 2000
workload-pattern = random
netbuf = none
allow-unsafe-no-buffering = yes
on-peer-loss = manual
EOC

status_json() { TANDEM_RUN_DIR="$dir/run-$1" "$T" status --json 2>/dev/null || true; }

for count in $COUNTS; do
	for i in $(seq 1 "$count"); do
		cat > "$dir/vm$i.cfg" <<EOC
include = defaults.cfg
name = vm$i
replication = 10.77.0.2:$((7400 + i))
EOC
		mkdir -p "$dir/run-a" "$dir/run-b"; chmod 700 "$dir/run-a" "$dir/run-b"
		sed "s|^name = .*|&\nrun-dir = $dir/run-b|" "$dir/vm$i.cfg" > "$dir/vm$i-b.cfg"
		sed "s|^name = .*|&\nrun-dir = $dir/run-a|" "$dir/vm$i.cfg" > "$dir/vm$i-a.cfg"
		ip netns exec tdm-mv-b "$T" backup "$dir/vm$i-b.cfg" 2> "$dir/vm$i-b.log" &
		pids+=($!)
	done
	sleep 1
	for i in $(seq 1 "$count"); do
		ip netns exec tdm-mv-a "$T" primary "$dir/vm$i-a.cfg" 2> "$dir/vm$i-a.log" &
		pids+=($!)
	done
	for _ in $(seq 120); do
		[ "$(status_json a | grep -c '"state":"protecting"')" -ge "$count" ] && break
		sleep 1
	done
	protecting=$(status_json a | grep -c '"state":"protecting"' || true)
	stretched_any=""
	min_hz=1000
	pauses=()
	declare -A vm_min=()
	t_end=$((SECONDS + WATCH_S))
	while [ $SECONDS -lt $t_end ]; do
		while read -r line; do
			vm=$(sed -n 's/.*"vm":"\([^"]*\)".*/\1/p' <<<"$line")
			hz=$(sed -n 's/.*"achieved_hz":\([0-9.]*\).*/\1/p' <<<"$line")
			st=$(sed -n 's/.*"stretched":\([a-z]*\).*/\1/p' <<<"$line")
			p50=$(sed -n 's/.*"pause_ms_p50":\([0-9.]*\).*/\1/p' <<<"$line")
			[ "$st" = true ] && stretched_any="$stretched_any $vm"
			awk -v h="$hz" -v m="$min_hz" 'BEGIN{exit !(h < m)}' && min_hz=$hz
			awk -v h="$hz" -v m="${vm_min[$vm]:-1000}" 'BEGIN{exit !(h < m)}' && vm_min[$vm]=$hz
			pauses+=("$p50")
		done < <(status_json a | grep '"role":"primary"')
		sleep 2
	done
	stretched=$(tr ' ' '\n' <<<"$stretched_any" | sort -u | grep -c . || true)
	steady=0
	for vm in "${!vm_min[@]}"; do
		case " $stretched_any " in *" $vm "*) continue ;; esac
		steady=$((steady + 1))
	done
	unset vm_min
	med=$(printf '%s\n' "${pauses[@]}" | sort -n | awk '{a[NR]=$1} END{ if (NR) print a[int((NR+1)/2)]; else print "nan" }')
	echo "many-vms: vms=$count protecting=$protecting steady=$steady stretched=$stretched" \
	     "min_hz=$min_hz median_pause_ms=$med load=$(cut -d' ' -f1 /proc/loadavg)"
	# stop this round's daemons
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do while kill -0 "$p" 2>/dev/null; do sleep 0.2; done; done
	pids=()
	[ "$steady" -lt "$count" ] || [ "$protecting" -lt "$count" ] && break
done
