#!/bin/bash
# SPDX-License-Identifier: MIT
#
# vm-peers.sh (make bench): ublk-qcow against the block devices a user could
# serve the same disk with, end to end through the real drivers, in one boot
# of each test kernel (BENCH_KERNELS, default "6.12 new").
#
#   ublk-qcow -q 1 and -q 2   the kernel's best data mode, the defaults
#                             otherwise (I/O scheduler none)
#   loop                      the kernel loop device on a raw copy, direct IO
#                             where the file system takes it (the ceiling);
#                             its scheduler is none by default
#   qemu-nbd                  qemu-nbd --connect with nbd.ko, --cache=none
#                             --aio=native where the file system takes it,
#                             and nbd0's scheduler set to none (its best)
#
# Images live on ext4 on a RAM disk in the guest (bench_disk), so the
# share's speed does not count.  Workloads (fio, io_uring, O_DIRECT, BENCH_SECONDS each, default 5):
# 4 KiB random read and write at queue depth 32 on an allocated 256 MiB
# image; 4 KiB random write at depth 32 on an empty 8 GiB image (every write
# allocates; a sparse raw file for loop; at most 256 MiB written); 1 MiB sequential read and write at
# depth 8; 4 KiB random read at depth 1 (latency); 2 jobs x depth 16 random
# read; 4 KiB random write at depth 32 with an fdatasync every 8 writes, one
# job and 2 jobs x depth 16 (what a flush costs, and flushes from two
# queues at once).  Printed: one table of IOPS (mean latency for QD1) with ratios to
# ublk-qcow -q 1, and the server's CPU time per request (utime + stime from
# /proc; the loop device works in kernel threads, so it has none).  The
# guest runs under software emulation, so only ratios of one boot mean
# anything; a boot whose kernel log shows clock trouble is marked spoiled.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
vm_bench_per_kernel "$0"
. "$HERE/../vm/lib.sh"
VM_BINARIES+=(qemu-nbd losetup)

# the RAM disk holds up to 1 GiB of images besides the guest's own memory
export UBLK_QCOW_VM_MEM=${UBLK_QCOW_VM_MEM:-3072}
vm_init
cat >"$SHARE/bench.conf" <<EOF
SECS=${BENCH_SECONDS:-5}
EOF

vm_guest <<'GUEST'
. ./bench.conf
# run_fio NAME DEV RW BS DEPTH JOBS FSYNC [BYTES]: prints "IOPS LAT_US
# RUNTIME_MS" (mean total latency). SECS seconds; FSYNC: an fdatasync every
# that many writes (0: none); with BYTES, at most that much IO (the RAM file
# system must hold what allocating writes add).
run_fio() {
	if [ -n "${8:-}" ]; then limit=--io_size=$8; else limit=--time_based; fi
	fio --name="$1" --filename="$2" --rw="$3" --bs="$4" --iodepth="$5" --numjobs="$6" \
		--fdatasync="$7" --group_reporting --ioengine=io_uring --direct=1 --runtime="$SECS" "$limit" \
		--output-format=terse --terse-version=3 >/tmp/fio.terse 2>/tmp/fio.err ||
		{ sed 's/^/    | /' /tmp/fio.err >&2; return 1; }
	# terse v3: read 8 IOPS, 9 runtime, 40 mean latency; write 49, 50, 81
	awk -F';' '{ print $8 + $49, $40 + $81, ($9 > $50 ? $9 : $50) }' /tmp/fio.terse
}
cpu_ticks() {	# PID: user + system clock ticks so far
	if [ -n "$1" ]; then awk '{ print $14 + $15 }' "/proc/$1/stat"; else echo 0; fi
}
# bench TARGET DEV PID WORKLOAD RW BS DEPTH JOBS FSYNC [BYTES]
bench() {
	local t0 t1 out
	t0=$(cpu_ticks "$3")
	out=$(run_fio "$1-$4" "$2" "$5" "$6" "$7" "$8" "$9" "${10:-}") ||
		{ fail "fio-$1-$4" "fio failed"; return; }
	t1=$(cpu_ticks "$3")
	set -- "$1" "$4" $out "$((t1 - t0))" "$3"
	# CPU microseconds per request: ticks are 10 ms (CLK_TCK 100)
	awk -v t="$1" -v w="$2" -v iops="$3" -v lat="$4" -v ms="$5" -v ticks="$6" -v pid="$7" \
		'BEGIN { n = iops * ms / 1000
			 cpu = pid == "" || n == 0 ? "-" : sprintf("%.1f", ticks * 10000 / n)
			 printf "bench: %s %s %.0f %.1f %s\n", t, w, iops, lat, cpu }'
}
WORKLOADS="randread:randread:4k:32:1:0 randwrite:randwrite:4k:32:1:0 read-1M:read:1M:8:1:0
write-1M:write:1M:8:1:0 qd1-read:randread:4k:1:1:0 2jobs-read:randread:4k:16:2:0
sync-write:randwrite:4k:32:1:8 2jobs-sync:randwrite:4k:16:2:8"
run_all() {	# TARGET DEV PID
	for w in $WORKLOADS; do
		IFS=: read -r name rw bs depth jobs fsync <<EOF
$w
EOF
		bench "$1" "$2" "$3" "$name" "$rw" "$bs" "$depth" "$jobs" "$fsync"
	done
}
uq_pid() {
	ublk-qcow list --output=json | tr -d '\n' | sed 's/},/}\n/g' |
		grep "\"device\":\"$1\"" | sed -n 's/.*"pid":\([0-9]*\).*/\1/p'
}

bench_disk 1024 || exit 1
cd /bench
qcow-tool create /bench/full.qcow2 256M >/dev/null
if uq_open /bench/full.qcow2; then
	check fill quiet fio --name=fill --filename="$DEV" --rw=write --bs=1M --iodepth=8 \
		--ioengine=io_uring --direct=1
	uq_close "$DEV"
fi
check raw-copy quiet qcow-tool convert -O raw /bench/full.qcow2 /bench/full.raw
# The convert left both files in the page cache, and a direct write drops
# the cached pages it covers: the first 4 KiB random writes after it ran at
# half the rate of the next ones (6.12: 34,930 against 64,301 IOPS).
sync && echo 3 >/proc/sys/vm/drop_caches

for q in 1 2; do
	uq_open -q "$q" /bench/full.qcow2 || { fail "open-q$q" "open failed"; continue; }
	run_all "ublk-qcow-q$q" "$DEV" "$(uq_pid "$DEV")"
	uq_close "$DEV"
	qcow-tool create /bench/empty.qcow2 8G >/dev/null
	uq_open -q "$q" /bench/empty.qcow2 || { fail "open-empty-q$q" "open failed"; continue; }
	bench "ublk-qcow-q$q" "$DEV" "$(uq_pid "$DEV")" empty-write randwrite 4k 32 1 0 256M
	uq_close "$DEV"
	rm -f /bench/empty.qcow2
done

# loop: direct IO where the RAM file system takes it
loop_attach() {	# FILE: sets LOOP and LOOP_DIO
	LOOP=$(/usr/bin/losetup --direct-io=on -f --show "$1" 2>/tmp/losetup.err) ||
		LOOP=$(/usr/bin/losetup -f --show "$1") || return 1
	LOOP_DIO=$(cat "/sys/block/${LOOP#/dev/}/loop/dio" 2>/dev/null)
}
if loop_attach /bench/full.raw; then
	echo "bench: note loop direct-io=$LOOP_DIO"
	run_all loop "$LOOP" ""
	/usr/bin/losetup -d "$LOOP"
	rm -f /bench/full.raw
	truncate -s 8G /bench/empty.raw
	loop_attach /bench/empty.raw && bench loop "$LOOP" "" empty-write randwrite 4k 32 1 0 256M
	/usr/bin/losetup -d "$LOOP"
	rm -f /bench/empty.raw
else
	fail loop-attach "$(cat /tmp/losetup.err)"
fi
rm -f /bench/full.raw

# qemu-nbd: --cache=none --aio=native where the file system takes O_DIRECT
nbd_attach() {	# FILE: sets NBD_PID and NBD_CACHE
	for NBD_CACHE in "none --aio=native" "writeback"; do
		# shellcheck disable=SC2086 # two words
		qemu-nbd --connect=/dev/nbd0 -f qcow2 --cache=$NBD_CACHE --fork "$1" 2>/tmp/nbd.err &&
			break
		NBD_CACHE=
	done
	[ -n "$NBD_CACHE" ] || return 1
	echo none >/sys/block/nbd0/queue/scheduler
	NBD_PID=
	for p in /proc/[0-9]*; do	# busybox has no pgrep
		grep -q 'qemu-nbd' "$p/cmdline" 2>/dev/null && NBD_PID=${p#/proc/}
	done
	i=0
	while [ "$(cat /sys/block/nbd0/size)" = 0 ] && [ $i -lt 50 ]; do
		sleep 0.1; i=$((i + 1))
	done
}
nbd_detach() {
	qemu-nbd --disconnect /dev/nbd0 >/dev/null 2>&1
	i=0
	while [ -d "/proc/$NBD_PID" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
}
mkdir -p /var/lock	# qemu-nbd's socket
if [ -b /dev/nbd0 ] && nbd_attach /bench/full.qcow2; then
	echo "bench: note qemu-nbd cache=$NBD_CACHE"
	run_all qemu-nbd /dev/nbd0 "$NBD_PID"
	nbd_detach
	qcow-tool create /bench/empty.qcow2 8G >/dev/null
	nbd_attach /bench/empty.qcow2 && bench qemu-nbd /dev/nbd0 "$NBD_PID" empty-write randwrite 4k 32 1 0 256M
	nbd_detach
	rm -f /bench/empty.qcow2
else
	fail nbd-attach "no /dev/nbd0, or qemu-nbd failed: $(cat /tmp/nbd.err 2>/dev/null)"
fi
bench_clock_check
pass bench-ran
GUEST
vm_run >/dev/null

log=$WORK/console.log
vm_bench_header "peers on KERNEL, $VM_MODE mode (IOPS, QD1: mean latency in us; ratio to ublk-qcow -q 1; server CPU us per request)"
grep -a -o '^bench: note .*' "$log" | sed 's/^bench: note /  /'
grep -a -o '^bench: [a-z0-9-]* [A-Za-z0-9-]* [0-9.]* [0-9.]* [0-9.-]*' "$log" | awk '
	{ t = $2; w = $3; iops[t, w] = $4; lat[t, w] = $5; cpu[t, w] = $6
	  if (!(t in ts)) { ts[t] = 1; order[++n] = t }
	  if (!(w in ws)) { ws[w] = 1; works[++nw] = w } }
	END {
		printf "  %-12s", "workload"
		for (i = 1; i <= n; i++) printf " %24s", order[i]
		printf "\n"
		for (j = 1; j <= nw; j++) {
			w = works[j]; lower = w == "qd1-read"
			printf "  %-12s", w
			base = lower ? lat["ublk-qcow-q1", w] : iops["ublk-qcow-q1", w]
			for (i = 1; i <= n; i++) {
				x = lower ? lat[order[i], w] : iops[order[i], w]
				if (x == "") { printf " %24s", "-"; continue }
				r = base > 0 ? sprintf("(%.2fx)", lower ? base / x : x / base) : ""
				printf " %9.0f %-7s cpu %5s", x, r, cpu[order[i], w]
			}
			printf "\n"
		}
		print "  (QD1 ratio: ublk-qcow -q 1 latency / this latency; above 1 is faster)"
	}'
[ "$VM_FAILS" = 0 ]
