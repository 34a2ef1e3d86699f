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
# queues at once).  BENCH_ROUNDS rounds (default 3), each running every
# target in turn, so that the drift of a boot touches all alike; printed are
# the medians: one table of IOPS (mean latency for QD1) with ratios to
# ublk-qcow -q 1 and the server's CPU time per request (utime + stime from
# /proc; the loop device works in kernel threads, so it has none), and one
# of how busy the guest's CPUs were and the server's context switches per
# request (what sharing the CPUs with the client costs it).  The guest runs
# under software emulation, so only ratios of one boot mean anything; a
# boot whose kernel log shows clock trouble is marked spoiled.
HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/lib.sh"
vm_bench_per_kernel "$0"
. "$HERE/../vm/lib.sh"
VM_BINARIES+=(qemu-nbd losetup)

# the RAM disk holds up to 1.5 GiB of images besides the guest's own memory:
# the 256 MiB image, its raw copy, and an empty 8 GiB image that qemu-nbd's
# allocating writes give whole clusters (a 1 GiB disk ran out of space in a
# third round on 6.12: fio failed with ENOSPC from nbd0)
export UBLK_QCOW_VM_MEM=${UBLK_QCOW_VM_MEM:-4096}
ROUNDS=${BENCH_ROUNDS:-3} SECS=${BENCH_SECONDS:-5}
# a round takes about 4 minutes with 5-second runs
export UBLK_QCOW_VM_TIMEOUT=${UBLK_QCOW_VM_TIMEOUT:-$((120 + ROUNDS * SECS * 60))}
vm_init
cat >"$SHARE/bench.conf" <<EOF
SECS=$SECS
ROUNDS=$ROUNDS
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
switches() {	# PID: context switches of all its threads so far
	if [ -n "$1" ]; then
		cat "/proc/$1/task/"*/status | awk '/ctxt_switches/ { n += $2 } END { print n }'
	else echo 0; fi
}
cpu_busy() {	# clock ticks of all CPUs so far: "BUSY IDLE" (iowait is idle)
	awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $5 + $6 }' /proc/stat
}
# bench TARGET DEV PID WORKLOAD RW BS DEPTH JOBS FSYNC [BYTES]: prints
# "bench: TARGET WORKLOAD IOPS LAT_US CPU_US CSW BUSY%" (per request: the
# server's CPU time and context switches; "-" with no PID)
bench() {
	local t0 t1 c0 c1 b0 b1 out
	t0=$(cpu_ticks "$3") c0=$(switches "$3") b0=$(cpu_busy)
	out=$(run_fio "$1-$4" "$2" "$5" "$6" "$7" "$8" "$9" "${10:-}") ||
		{ fail "fio-$1-$4" "fio failed"; return; }
	t1=$(cpu_ticks "$3") c1=$(switches "$3") b1=$(cpu_busy)
	set -- "$1" "$4" $out "$((t1 - t0))" "$((c1 - c0))" "$3" $b0 $b1
	# ticks are 10 ms (CLK_TCK 100)
	awk -v t="$1" -v w="$2" -v iops="$3" -v lat="$4" -v ms="$5" -v ticks="$6" -v csw="$7" \
		-v pid="$8" -v b0="$9" -v i0="${10}" -v b1="${11}" -v i1="${12}" \
		'BEGIN { n = iops * ms / 1000; none = pid == "" || n == 0
			 cpu = none ? "-" : sprintf("%.1f", ticks * 10000 / n)
			 sw = none ? "-" : sprintf("%.3f", csw / n)
			 all = b1 - b0 + i1 - i0
			 printf "bench: %s %s %.0f %.1f %s %s %.0f\n", t, w, iops, lat, cpu, sw,
				(all > 0 ? 100 * (b1 - b0) / all : 0) }'
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

bench_disk 1536 || exit 1
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

# loop: direct IO where the RAM file system takes it
loop_attach() {	# FILE: sets LOOP and LOOP_DIO
	LOOP=$(/usr/bin/losetup --direct-io=on -f --show "$1" 2>/tmp/losetup.err) ||
		LOOP=$(/usr/bin/losetup -f --show "$1") || return 1
	LOOP_DIO=$(cat "/sys/block/${LOOP#/dev/}/loop/dio" 2>/dev/null)
}
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

ublk_round() {
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
}
loop_round() {
	loop_attach /bench/full.raw || { fail loop-attach "$(cat /tmp/losetup.err)"; return; }
	[ "$1" = 1 ] && echo "bench: note loop direct-io=$LOOP_DIO"
	run_all loop "$LOOP" ""
	/usr/bin/losetup -d "$LOOP"
	truncate -s 8G /bench/empty.raw
	loop_attach /bench/empty.raw && bench loop "$LOOP" "" empty-write randwrite 4k 32 1 0 256M
	/usr/bin/losetup -d "$LOOP"
	rm -f /bench/empty.raw
}
nbd_round() {
	if ! [ -b /dev/nbd0 ] || ! nbd_attach /bench/full.qcow2; then
		fail nbd-attach "no /dev/nbd0, or qemu-nbd failed: $(cat /tmp/nbd.err 2>/dev/null)"
		return
	fi
	[ "$1" = 1 ] && echo "bench: note qemu-nbd cache=$NBD_CACHE"
	run_all qemu-nbd /dev/nbd0 "$NBD_PID"
	nbd_detach
	qcow-tool create /bench/empty.qcow2 8G >/dev/null
	nbd_attach /bench/empty.qcow2 && bench qemu-nbd /dev/nbd0 "$NBD_PID" empty-write randwrite 4k 32 1 0 256M
	nbd_detach
	rm -f /bench/empty.qcow2
}
round=1
while [ $round -le "$ROUNDS" ]; do
	ublk_round
	loop_round $round
	nbd_round $round
	round=$((round + 1))
done
rm -f /bench/full.raw
bench_clock_check
pass bench-ran
GUEST
vm_bench_run

log=$WORK/console.log
vm_bench_header "peers on KERNEL, $VM_MODE mode (medians of $ROUNDS rounds: IOPS, QD1: mean latency in us; ratio to ublk-qcow -q 1; server CPU us per request)"
grep -a -o '^bench: note .*' "$log" | sed 's/^bench: note /  /'
grep -a -o '^bench: [a-z0-9-]* [A-Za-z0-9-]* [0-9.]* [0-9.]* [0-9.-]* [0-9.-]* [0-9]*' "$log" | awk '
	function median(list,   a, n, i, j, v) {
		n = split(list, a, " ")
		if (n == 0 || a[1] == "-") return "-"
		for (i = 2; i <= n; i++) {
			v = a[i] + 0
			for (j = i - 1; j >= 1 && a[j] + 0 > v; j--) a[j + 1] = a[j]
			a[j + 1] = v
		}
		return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	function spread(list,   a, n, i, lo, hi) {
		n = split(list, a, " ")
		lo = hi = a[1] + 0
		for (i = 2; i <= n; i++) { if (a[i] + 0 < lo) lo = a[i] + 0; if (a[i] + 0 > hi) hi = a[i] + 0 }
		return lo > 0 ? sprintf("%.2f", hi / lo) : "-"
	}
	{ t = $2; w = $3; iops[t, w] = iops[t, w] " " $4; lat[t, w] = lat[t, w] " " $5
	  cpu[t, w] = cpu[t, w] " " $6; sw[t, w] = sw[t, w] " " $7; busy[t, w] = busy[t, w] " " $8
	  if (!(t in ts)) { ts[t] = 1; order[++n] = t }
	  if (!(w in ws)) { ws[w] = 1; works[++nw] = w } }
	END {
		printf "  %-12s", "workload"
		for (i = 1; i <= n; i++) printf " %24s", order[i]
		printf "\n"
		for (j = 1; j <= nw; j++) {
			w = works[j]; lower = w == "qd1-read"
			printf "  %-12s", w
			base = median(lower ? lat["ublk-qcow-q1", w] : iops["ublk-qcow-q1", w])
			for (i = 1; i <= n; i++) {
				x = median(lower ? lat[order[i], w] : iops[order[i], w])
				if (x == "-") { printf " %24s", "-"; continue }
				r = base > 0 ? sprintf("(%.2fx)", lower ? base / x : x / base) : ""
				c = median(cpu[order[i], w])
				printf " %9.0f %-7s cpu %5s", x, r, c == "-" ? c : sprintf("%.1f", c)
			}
			printf "\n"
		}
		print "  (QD1 ratio: ublk-qcow -q 1 latency / this latency; above 1 is faster)"
		print "  guest CPUs busy (% of all), server context switches per request, IOPS spread (largest / smallest round):"
		for (j = 1; j <= nw; j++) {
			w = works[j]; lower = w == "qd1-read"
			printf "  %-12s", w
			for (i = 1; i <= n; i++) {
				t = order[i]
				if (iops[t, w] == "") { printf " %24s", "-"; continue }
				c = median(sw[t, w])
				printf "   busy %3.0f%% sw %5s x%4s", median(busy[t, w]),
					c == "-" ? c : sprintf("%.3f", c), spread(lower ? lat[t, w] : iops[t, w])
			}
			printf "\n"
		}
	}'
[ "$VM_FAILS" = 0 ]
