# shellcheck shell=bash
# SPDX-License-Identifier: MIT
# Shared by the benchmarks (sourced): timing and medians.

now() { date +%s%N; }

# median < numbers, one a line
median() {
	sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# time_op FILE CMD...: append the command's wall time in ns to FILE.
time_op() {
	local out=$1 t0
	shift
	t0=$(now)
	"$@" >/dev/null
	echo $(( $(now) - t0 )) >>"$out"
}

# ratio_line BENCH WHAT TOOL_FILE PEER_FILE PEER: one result line from the medians.
ratio_line() {
	local t q
	t=$(median <"$3")
	q=$(median <"$4")
	awk -v b="$1" -v w="$2" -v t="$t" -v q="$q" -v p="$5" 'BEGIN {
		printf "%s: %-13s ours %9.2f ms   %s %9.2f ms   ratio ours/%s %.2f\n",
		       b, w, t / 1e6, p, q / 1e6, p, t / q }'
}

# vm_bench_per_kernel SCRIPT: without TEST_VARIANT, run SCRIPT once per
# kernel of BENCH_KERNELS (default "6.12 new") and exit with the verdict;
# with it (one such run), require the VM: a benchmark never skips quietly.
vm_bench_per_kernel() {
	local k rc=0
	if [ -z "${TEST_VARIANT:-}" ]; then
		for k in ${BENCH_KERNELS:-6.12 new}; do
			TEST_VARIANT=$k bash "$1" || rc=1
		done
		exit $rc
	fi
	VM_TESTS_REQUIRED=1
}

# vm_bench_run: vm_run, with its PASS lines left out (the table says what
# ran) and anything else, a failed check or the guest's exit, kept.
vm_bench_run() {
	local rc=0
	vm_run >"$WORK/vm-run.out" || rc=$?
	grep -a -v -e '^vm: PASS' -e '^vm: ran in' "$WORK/vm-run.out" || true
	return "$rc"
}

# vm_bench_header TITLE: after vm_run, the table's title line (KERNEL in it
# becomes the kernel's version), and a warning when the boot was spoiled.
vm_bench_header() {
	local kernel
	kernel=$(cut -d+ -f1 "$KDIR/version")
	echo "make bench: ${1//KERNEL/$kernel}"
	grep -a -q '^bench: spoiled' "$WORK/console.log" &&
		echo "  SPOILED: the guest's clock jumped during this boot; discard these figures"
	return 0
}
