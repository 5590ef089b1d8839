#!/bin/bash
# bench/disk.sh - `make bench`'s disk lines: tandem's disk protection
# (the backup's overlay under DRBD's secondary, a marker written and
# waited for in every pause) against plain DRBD protocol C, side by side
# in one run under Debian's 6.1 kernel (tests/vm61), which has DRBD 8.4.
# The measurement is tests/test_disk_cut.c, disk_bench_run.
set -u
cd "$(dirname "$0")/.."
if [ ! -x /lib/drbd/drbdsetup-84 ]; then
	echo "bench disk: not run: no /lib/drbd/drbdsetup-84 (apt-get install drbd-utils)"
	exit 0
fi
make -s tests/tandem-test || exit 1
out=$(VM61_MODS='drbd nbd brd' tests/vm61/run.sh --timeout 900 -- \
	./tests/tandem-test disk_bench_run 2>&1)
rc=$?
if ! printf '%s\n' "$out" | grep '^bench disk:'; then
	printf '%s\n' "$out" | tail -20
	echo "bench disk: FAILED (exit $rc)"
	exit 1
fi
