#!/usr/bin/env bash
# tests/vm61/selftest.sh — checks that tests/vm61/run.sh works: the 6.1
# kernel boots, exit statuses come back, and inside it the plug qdisc, ifb
# redirection, network namespaces + veth and a libnl-route-3 program work.
# Three boots. Ends with "N passed, N failed"; exits non-zero on a failure.
#
#   tests/vm61/selftest.sh            (on the host)
#   selftest.sh --guest [NLPROG]      (what it runs inside the VM)
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
pass=0 fail=0 skip=0
ok() { pass=$((pass + 1)); echo "ok   $*"; }
bad() { fail=$((fail + 1)); echo "FAIL $*"; }
skipped() { skip=$((skip + 1)); echo "skip $*"; }
check() { # check NAME CMD...: quiet unless it fails
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then ok "$name"; else
		bad "$name"
		printf '%s\n' "$out" | sed 's/^/     | /'
	fi
}
summary() {
	if [ "$skip" -gt 0 ]; then
		echo "vm61 selftest: $pass passed, $fail failed, $skip skipped"
	else
		echo "vm61 selftest: $pass passed, $fail failed"
	fi
	[ "$fail" = 0 ]
}

# ------------------------------------------------------------- in the guest
if [ "${1:-}" = --guest ]; then
	nlprog=${2:-}
	BB=/run/vm61/busybox
	[ "${TANDEM_VM61:-}" = 1 ] && ok "TANDEM_VM61=1" || bad "TANDEM_VM61 is '${TANDEM_VM61:-}'"
	case "$(uname -r)" in 6.1.0-*) ok "kernel $(uname -r)" ;; *) bad "kernel $(uname -r)" ;; esac

	check "plug qdisc on ifb (tc)" sh -ec '
		ip link add ifb9 type ifb
		ip link set ifb9 up
		tc qdisc add dev ifb9 root plug limit 10000
		tc qdisc show dev ifb9 | grep -q "qdisc plug"'

	check "ip netns + veth" sh -ec '
		ip netns add vm61a
		ip netns add vm61b
		ip netns list | grep -q vm61a
		ip link add va netns vm61a type veth peer name vb netns vm61b
		ip -n vm61a addr add 192.0.2.1/24 dev va
		ip -n vm61b addr add 192.0.2.2/24 dev vb
		ip -n vm61a link set va up
		ip -n vm61b link set vb up
		ip netns exec vm61a '"$BB"' ping -q -c1 -W5 192.0.2.2 >/dev/null'

	check "plug holds packets until released" sh -ec '
		ip netns exec vm61a tc qdisc add dev va root plug limit 100000
		ip netns exec vm61a tc qdisc change dev va root plug block
		if ip netns exec vm61a '"$BB"' ping -q -c1 -W1 192.0.2.2 >/dev/null; then
			echo "ping went through a blocked plug"; exit 1
		fi
		ip netns exec vm61a tc qdisc change dev va root plug release_indefinite
		ip netns exec vm61a '"$BB"' ping -q -c1 -W5 192.0.2.2 >/dev/null'

	check "ingress redirect to ifb (u32 + mirred) into plug" sh -ec '
		ip -n vm61b link add ifb0 type ifb
		ip -n vm61b link set ifb0 up
		ip netns exec vm61b tc qdisc add dev vb handle ffff: ingress
		ip netns exec vm61b tc filter add dev vb parent ffff: protocol all u32 match u32 0 0 \
			action mirred egress redirect dev ifb0
		ip netns exec vm61b tc qdisc add dev ifb0 root plug limit 100000
		ip netns exec vm61b tc qdisc change dev ifb0 root plug release_indefinite
		ip netns exec vm61a '"$BB"' ping -q -c1 -W5 192.0.2.2 >/dev/null
		ip netns exec vm61b tc -s qdisc show dev ifb0 | grep -q "Sent [1-9]"'

	check "module autoload (dummy, sch_netem)" sh -ec '
		ip link add vm61d type dummy
		tc qdisc add dev vm61d root netem delay 1ms'

	check "writable /tmp and /run" sh -ec '
		echo x >/tmp/vm61-selftest.$$ && rm /tmp/vm61-selftest.$$
		echo x >/run/vm61-selftest && rm /run/vm61-selftest'

	if [ -n "$nlprog" ]; then
		check "libnl-route-3 program (plug via libnl)" sh -ec '
			ip link add ifb8 type ifb
			'"$nlprog"' ifb8
			tc qdisc show dev ifb8 | grep -q "qdisc plug"'
	else
		skipped "libnl-route-3 program (no compiler or libnl-route-3-dev on the host)"
	fi
	summary
	exit
fi

# --------------------------------------------------------------- on the host
RUN=$HERE/run.sh
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vm61-selftest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

out=$("$RUN" --timeout 300 -- uname -r)
rc=$?
if [ "$rc" = 0 ] && [[ $out =~ ^6\.1\.0-[0-9]+-amd64$ ]]; then ok "run.sh -- uname -r: $out"; else
	bad "run.sh -- uname -r: rc=$rc out='$out'"
fi

"$RUN" --timeout 300 -- false
rc=$?
[ "$rc" = 1 ] && ok "run.sh -- false exits 1" || bad "run.sh -- false exited $rc"

nlprog=
if command -v cc >/dev/null && pkg-config --exists libnl-route-3.0 2>/dev/null; then
	# shellcheck disable=SC2046
	if cc -O1 -o "$tmp/selftest-nl" "$HERE/selftest-nl.c" $(pkg-config --cflags --libs libnl-route-3.0); then
		nlprog=$tmp/selftest-nl
	else
		bad "building selftest-nl.c"
	fi
fi

"$RUN" --timeout 300 -- bash "$HERE/selftest.sh" --guest "$nlprog" >"$tmp/guest.out"
rc=$?
cat "$tmp/guest.out"
g_pass=$(sed -n 's/^vm61 selftest: \([0-9]*\) passed.*/\1/p' "$tmp/guest.out")
g_fail=$(sed -n 's/^vm61 selftest: [0-9]* passed, \([0-9]*\) failed.*/\1/p' "$tmp/guest.out")
g_skip=$(sed -n 's/.* \([0-9]*\) skipped$/\1/p' "$tmp/guest.out")
if [ -z "$g_pass" ]; then
	bad "guest checks did not report (run.sh exit $rc)"
else
	pass=$((pass + g_pass)) fail=$((fail + g_fail)) skip=$((skip + ${g_skip:-0}))
	[ "$rc" = 0 ] || [ "$g_fail" != 0 ] || bad "guest checks exited $rc"
fi
summary
