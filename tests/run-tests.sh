#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run-tests.sh TEST...: run unit test programs and test scripts one by one.
#
# TEST@VARIANT runs TEST with TEST_VARIANT=VARIANT in its environment and
# reports it as <dir>/<name>@VARIANT (the VM tests take the kernel and the
# data mode from it; see tests/vm/lib.sh).
#
# A test's exit status: 0 pass, 77 skip (its last line of output says why),
# anything else fail. Each test runs from the current directory with stdin
# from /dev/null, under a timeout, its output in LOG_DIR/<dir>/<name>.log.
# The last line printed is "N passed, N failed, N skipped"; the exit status
# is 1 if any test failed.
#
# Environment: TEST_TIMEOUT  seconds per test (default 600)
#              TEST_LOG_DIR  where logs go (default tests/build/logs)

timeout_s=${TEST_TIMEOUT:-600}
log_dir=${TEST_LOG_DIR:-tests/build/logs}
passed=0
failed=0
skipped=0
skip_list=
fail_list=
child=

# On ^C or TERM stop the running test too: timeout(1) passes the signal on
# to the test's whole process group.
trap '[ -n "$child" ] && kill -TERM "$child" 2>/dev/null; exit 130' INT TERM

now_ns() {
	date +%s%N
}

# tests/build/asan/unit/test-foo -> unit/test-foo; tests/interop/bar.sh -> interop/bar
test_name() {
	echo "$(basename "$(dirname "$1")")/$(basename "$1" .sh)"
}

# The last non-empty line of a file.
last_line() {
	awk 'NF { line = $0 } END { print line }' "$1"
}

show_tail() {
	tail -n 40 "$1" | sed 's/^/    | /'
}

run_one() {
	t=${1%@*}
	variant=
	[ "$t" = "$1" ] || variant=${1##*@}
	name=$(test_name "$t")${variant:+@$variant}
	log=$log_dir/$name.log
	mkdir -p "$(dirname "$log")"

	if [ ! -f "$t" ]; then
		echo "FAIL  $name (no such test: $t)"
		failed=$((failed + 1))
		fail_list="$fail_list $name"
		return
	fi
	case $t in
	*/*) ;;
	*) t=./$t ;;
	esac
	set -- "$t"
	# A script without the execute bit runs under its #! interpreter (or sh).
	if [ ! -x "$t" ]; then
		interp="sh"
		first=
		IFS= read -r first <"$t"
		case $first in
		'#!'*) interp=${first#??} ;;
		esac
		# shellcheck disable=SC2086
		set -- $interp "$t"
	fi

	start=$(now_ns)
	TEST_VARIANT=$variant timeout -k 10 "$timeout_s" "$@" >"$log" 2>&1 </dev/null &
	child=$!
	wait "$child" 2>/dev/null
	rc=$?
	child=
	end=$(now_ns)
	secs=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", (e - s) / 1e9 }')

	case $rc in
	0)
		echo "PASS  $name (${secs}s)"
		passed=$((passed + 1))
		;;
	77)
		reason=$(last_line "$log")
		echo "SKIP  $name: ${reason:-no reason given}"
		skipped=$((skipped + 1))
		skip_list="$skip_list $name"
		;;
	*)
		if [ "$rc" = 124 ]; then
			why="timed out after ${timeout_s}s"
		else
			why="exit $rc after ${secs}s"
		fi
		echo "FAIL  $name ($why; see log $log)"
		show_tail "$log"
		failed=$((failed + 1))
		fail_list="$fail_list $name"
		;;
	esac
}

for t in "$@"; do
	run_one "$t"
done

if [ -n "$skip_list" ]; then
	echo "SKIPPED:$skip_list"
fi
if [ -n "$fail_list" ]; then
	echo "FAILED:$fail_list"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" = 0 ]
