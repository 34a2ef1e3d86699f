#!/bin/sh
# SPDX-License-Identifier: MIT
#
# run-fuzz.sh FUZZER TARGET SECONDS [LIBFUZZER-FLAG...]: what `make fuzz`
# runs for each target. Run from the repository root.
#
# New inputs go to a scratch corpus, tests/build/fuzz/corpus-TARGET (kept
# between runs); the committed seeds (tests/fuzz/corpus/TARGET) and crash
# regressions (tests/fuzz/crashes/TARGET) are read, never written, except
# that a crash found is saved as tests/fuzz/crashes/TARGET/crash-<sha1>
# (leak-, timeout-, oom- likewise): minimise it, fix the bug, keep the file.
# The log is tests/build/fuzz/TARGET.log; the last line printed sums it up.
set -u

fuzzer=$1
target=$2
seconds=$3
shift 3

scratch=tests/build/fuzz/corpus-$target
crashes=tests/fuzz/crashes/$target
log=tests/build/fuzz/$target.log
mkdir -p "$scratch" "$crashes"

# Per target: the largest input worth trying (image seeds reach ~200 KiB).
case $target in
image) max_len=262144 ;;
*) max_len=4096 ;;
esac
dict=
[ -f "tests/fuzz/$target.dict" ] && dict=-dict=tests/fuzz/$target.dict

start=$(date +%s)
# -close_fd_mask=3: the targets' own chatter (corruption messages, qcow-tool
# output) stays out of the way; libFuzzer and sanitizer reports still show.
"$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
	-max_len="$max_len" $dict -close_fd_mask=3 -print_final_stats=1 \
	-artifact_prefix="$crashes/" "$@" "$scratch" "tests/fuzz/corpus/$target" "$crashes" \
	>"$log" 2>&1
rc=$?
end=$(date +%s)

execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)
saved=$(sed -n "s/.*Test unit written to //p" "$log")
tail -n 5 "$log" | sed 's/^/    /'
echo "fuzz $target: ${execs:-?} executions in $((end - start)) s (${rate:-?}/s), $(find "$scratch" -type f | wc -l) inputs in $scratch, exit $rc${saved:+, saved $saved}"
[ "$rc" -eq 0 ] || { echo "fuzz $target: FAILED, see $log" >&2; exit 1; }
