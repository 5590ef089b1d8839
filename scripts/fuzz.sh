#!/usr/bin/env bash
# Run every libFuzzer harness in fuzz/bin for $1 seconds over its corpus,
# adding what it finds to fuzz/corpus/NAME.  Fails on any crash.
set -uo pipefail
secs=${1:-60}
status=0
for bin in fuzz/bin/fuzz-*; do
	name=${bin##*/fuzz-}
	mkdir -p "fuzz/corpus/$name" fuzz/crashes
	log=$(mktemp)
	"$bin" -max_total_time="$secs" -print_final_stats=1 -artifact_prefix=fuzz/crashes/ \
		"fuzz/corpus/$name" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
	new=$(sed -n 's/^stat::new_units_added: *//p' "$log")
	echo "fuzz $name: seconds=$secs executions=${execs:-?} new_units=${new:-?} exit=$rc"
	if [ $rc -ne 0 ]; then
		grep -E 'ERROR|SUMMARY|==' "$log" | head -20
		status=1
	fi
	rm -f "$log"
done
exit $status
