#!/usr/bin/env bash
# make demo: protect a synthetic memdom guest over loopback, kill the
# primary with SIGKILL, watch the backup activate it, and check that the
# activated guest is the last committed checkpoint, that the checkpoint
# oracle found the standby equal to the primary's guest page by page, and
# that no acknowledged checkpoint was lost.  The figures status shows are
# those a user gets: the oracle hashes 1 MiB a checkpoint (about 1 ms of each pause), not the guest.
set -euo pipefail
cd "$(dirname "$0")/.."
T=./tandem
dir=$(mktemp -d /tmp/tandem-demo.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
	rm -rf "$dir"
}
trap cleanup EXIT

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "memdom is a SYNTHETIC guest: a process writing into 32 MiB of its own memory, not a real workload"
$T keygen "$dir/key" >/dev/null
port=$((17000 + RANDOM % 2000))
sed -e "s|^key-file = .*|key-file = $dir/key|" \
    -e "s|^replication = .*|replication = 127.0.0.1:$port|" \
    examples/memdom-loopback.cfg > "$dir/demo.cfg"
echo "run-dir = $dir/run" >> "$dir/demo.cfg"
echo "verify = 1M" >> "$dir/demo.cfg"	# the checkpoint oracle: 1 MiB a checkpoint, in rotation
$T check-config "$dir/demo.cfg" | sed 's/^/  /'

say "starting the backup and the primary (logs in $dir)"
TANDEM_TEST_LOG="$dir/backup.events" $T backup "$dir/demo.cfg" 2>"$dir/backup.log" &
bpid=$!; pids+=("$bpid")
for _ in $(seq 100); do [ -S "$dir/run/demo.backup.sock" ] && break; sleep 0.05; done
TANDEM_TEST_LOG="$dir/primary.events" $T primary "$dir/demo.cfg" 2>"$dir/primary.log" &
ppid=$!; pids+=("$ppid")

state() { $T status --json --run-dir "$dir/run" demo 2>/dev/null | grep "\"role\":\"$1\"" | sed -n 's/.*"state":"\([a-z]*\)".*/\1/p'; }
for _ in $(seq 200); do [ "$(state primary)" = protecting ] && break; sleep 0.05; done
if [ "$(state primary)" != protecting ]; then
	echo "demo: the primary did not start protecting"; tail -20 "$dir/primary.log" "$dir/backup.log"; exit 1
fi
for i in 1 2 3; do
	sleep 1
	say "tandem status ($i s)"
	$T status --run-dir "$dir/run" demo || true	# it exits by health: UNSAFE is critical
done

say "kill -9 the primary (pid $ppid): host loss"
kill -9 "$ppid"
for _ in $(seq 200); do [ "$(state backup)" = active ] && break; sleep 0.05; done
if [ "$(state backup)" != active ]; then
	echo "demo: the backup did not activate"; tail -20 "$dir/backup.log"; exit 1
fi
grep -E 'failover|guest running' "$dir/backup.log" | sed 's/^/  /'
say "tandem status after failover"
$T status --run-dir "$dir/run" demo || true
sleep 1
say "one second later: the guest continues on the backup"
{ $T status --run-dir "$dir/run" demo || true; } | grep guest

say "checking the invariants"
read -r _ act ahash < <(grep '^activated ' "$dir/backup.events")
lastcommit=$(awk '$1=="commit" {c=$2} END {print c+0}' "$dir/backup.events")
maxack=$(awk '$1=="ack" && $2>m {m=$2} END {print m+0}' "$dir/primary.events")
verified=$(awk '$1=="verify" {n++} END {print n+0}' "$dir/backup.events")
mismatched=$(grep -c '^verify .* mismatched=[1-9]' "$dir/backup.events" || true)
ok=1
if [ "$act" = "$lastcommit" ]; then
	echo "  ok: the guest was activated from checkpoint $act, the last the backup committed (sha256 ${ahash:0:16}...)"
else
	echo "  FAILED: activated checkpoint $act, last committed $lastcommit"; ok=0
fi
if [ "$verified" -gt 0 ] && [ "$mismatched" = 0 ]; then
	echo "  ok: the checkpoint oracle compared $verified committed checkpoints with what the primary captured (1 MiB each, in rotation): no page differed"
else
	echo "  FAILED: the oracle compared $verified checkpoints, $mismatched with mismatches"; ok=0
fi
if [ "$maxack" -le "$act" ]; then
	echo "  ok: no acknowledged checkpoint lost (last ack the primary saw: $maxack, activated: $act)"
else
	echo "  FAILED: checkpoint $maxack was acknowledged but the backup activated $act"; ok=0
fi
kill "$bpid"; wait "$bpid" 2>/dev/null || true
[ $ok = 1 ] && say "demo passed" && exit 0
exit 1
