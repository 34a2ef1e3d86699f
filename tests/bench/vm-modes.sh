#!/bin/bash
# SPDX-License-Identifier: MIT
#
# vm-modes.sh (make bench): the daemon's data modes side by side, in one
# boot of each test kernel (BENCH_KERNELS, default "6.12 new").
#
# In the guest, a 256 MiB image on ext4 on a RAM disk (bench_disk in
# guest-lib.sh: the share's speed does not count) is filled once, then served in every mode the
# kernel offers (6.12: copy; the new kernel: copy, zero-copy with a
# REGISTER_IO_BUF per request, auto-buf-reg), with one and with two queues,
# and fio runs 4 KiB random read and write and 1 MiB sequential read and
# write, queue depth 32, io_uring, O_DIRECT, BENCH_SECONDS each (default 5).
# Printed: IOPS per run and each mode's ratio to copy mode with the same
# queues.  The guest runs under software emulation, so only the ratios of
# one boot mean anything; a boot whose kernel log shows clock trouble
# (the guest clock can leap under emulation) is marked spoiled.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
vm_bench_per_kernel "$0"
. "$HERE/../vm/lib.sh"

vm_init
SECONDS_EACH=${BENCH_SECONDS:-5}
case $VM_KERNEL in
6.12) modes="copy:off" ;;
*) modes="copy:off zero-copy:register auto-buf-reg:auto" ;;
esac
cat >"$SHARE/bench.conf" <<EOF
MODES="$modes"
SECS=$SECONDS_EACH
EOF

vm_guest <<'GUEST'
. ./bench.conf
run_fio() {	# name rw bs
	fio --name="$1" --filename="$DEV" --rw="$2" --bs="$3" --iodepth=32 \
		--ioengine=io_uring --direct=1 --time_based --runtime="$SECS" \
		--output-format=terse --terse-version=3 >/tmp/fio.terse 2>/tmp/fio.err ||
		{ sed 's/^/    | /' /tmp/fio.err; return 1; }
	# terse v3: field 8 read IOPS, field 49 write IOPS
	awk -F';' '{ print $8 + $49 }' /tmp/fio.terse
}
bench_disk 512 || exit 1
qcow-tool create /bench/bench.qcow2 256M >/dev/null
if UQ_MODE= uq_open /bench/bench.qcow2; then
	check fill quiet fio --name=fill --filename="$DEV" --rw=write --bs=1M --iodepth=8 \
		--ioengine=io_uring --direct=1
	uq_close "$DEV"
fi
for m in $MODES; do
	mode=${m%%:*} zc=${m#*:}
	for q in 1 2; do
		UQ_MODE=$mode uq_open --zero-copy="$zc" -q "$q" /bench/bench.qcow2 || { fail "open-$mode-q$q" "open failed"; continue; }
		for w in "randread 4k" "randwrite 4k" "read 1M" "write 1M"; do
			set -- $w
			iops=$(run_fio "$mode-q$q-$1" "$1" "$2") || { fail "fio-$mode-q$q-$1" "fio failed"; continue; }
			echo "bench: $mode $q $1-$2 $iops"
		done
		uq_close "$DEV"
	done
done
bench_clock_check
pass bench-ran
GUEST
vm_bench_run

log=$WORK/console.log
vm_bench_header "data modes on KERNEL (IOPS; ratio to copy mode with the same queues)"
grep -a -o '^bench: [a-z-]* [12] .*' "$log" | awk '
	{ mode = $2; q = $3; w = $4; v[mode, q, w] = $5; if (!(mode in seen)) { seen[mode] = 1; order[++n] = mode }
	  if (!(w in wseen)) { wseen[w] = 1; works[++nw] = w } }
	END {
		printf "  %-14s %-6s", "workload", "queues"
		for (i = 1; i <= n; i++) printf " %22s", order[i]
		printf "\n"
		for (j = 1; j <= nw; j++) for (q = 1; q <= 2; q++) {
			printf "  %-14s %-6s", works[j], q
			base = v["copy", q, works[j]]
			for (i = 1; i <= n; i++) {
				x = v[order[i], q, works[j]]
				if (base > 0) printf " %12.0f (%5.2fx)", x, x / base
				else printf " %22.0f", x
			}
			printf "\n"
		}
	}'
[ "$VM_FAILS" = 0 ]
