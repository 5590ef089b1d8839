#!/usr/bin/env bash
# make demo: protect a synthetic memdom guest over loopback, kill the
# primary with SIGKILL, watch the backup activate it, and check that the
# activated guest equals the last acknowledged checkpoint.
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

say "memdom is a SYNTHETIC guest: a process writing into 64 MiB of its own memory, not a real workload"
$T keygen "$dir/key" >/dev/null
port=$((17000 + RANDOM % 2000))
sed -e "s|^key-file = .*|key-file = $dir/key|" \
    -e "s|^replication = .*|replication = 127.0.0.1:$port|" \
    examples/memdom-loopback.cfg > "$dir/demo.cfg"
echo "run-dir = $dir/run" >> "$dir/demo.cfg"
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
	$T status --run-dir "$dir/run" demo
done

say "kill -9 the primary (pid $ppid): host loss"
kill -9 "$ppid"
for _ in $(seq 200); do [ "$(state backup)" = active ] && break; sleep 0.05; done
if [ "$(state backup)" != active ]; then
	echo "demo: the backup did not activate"; tail -20 "$dir/backup.log"; exit 1
fi
grep -E 'failover|guest running' "$dir/backup.log" | sed 's/^/  /'
say "tandem status after failover"
$T status --run-dir "$dir/run" demo
sleep 1
say "one second later: the guest continues on the backup"
$T status --run-dir "$dir/run" demo | grep guest

say "checking the invariants"
read -r _ act ahash < <(grep '^activated ' "$dir/backup.events")
phash=$(awk -v e="$act" '$1=="ckpt" && $2==e {print $3}' "$dir/primary.events")
maxack=$(awk '$1=="ack" && $2>m {m=$2} END {print m+0}' "$dir/primary.events")
ok=1
if [ -n "$phash" ] && [ "$phash" = "$ahash" ]; then
	echo "  ok: activated guest equals checkpoint $act as the primary captured it (sha256 ${ahash:0:16}...)"
else
	echo "  FAILED: activated guest ($ahash) differs from checkpoint $act ($phash)"; ok=0
fi
if [ "$maxack" -le "$act" ]; then
	echo "  ok: no acknowledged checkpoint lost (last ack the primary saw: $maxack, activated: $act)"
else
	echo "  FAILED: checkpoint $maxack was acknowledged but the backup activated $act"; ok=0
fi
kill "$bpid"; wait "$bpid" 2>/dev/null || true
[ $ok = 1 ] && say "demo passed" && exit 0
exit 1
