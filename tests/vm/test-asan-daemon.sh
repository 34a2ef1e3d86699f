#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-asan-daemon: the daemon built with AddressSanitizer and UBSan serves
# a mixed workload on the real driver and shuts down cleanly, with no
# sanitizer report (leaks included, checked at exit).
#
#   guest: ublk-qcow-asan open --foreground, 2 queues, a 16 KiB L2 cache
#          over 4 KiB clusters (tables evicted and re-read all the time), on
#          an overlay of a qcow2 base that has data under fio's region;
#          fio random reads and writes with crc32c verification (copy-on-
#          write from the base); discard and write-zeroes; reads of
#          compressed (zstd in the base, zlib in the overlay), zero and unallocated
#          clusters compared with qemu-img's raw conversion; SIGTERM; the
#          daemon exits 0;
#   host:  its standard error holds no sanitizer report; qemu-img check is
#          clean.
. "$(dirname "$0")/lib.sh"

[ -x "$UBLK_QCOW_ASAN" ] || { echo "vm: FAIL setup: $UBLK_QCOW_ASAN not built (make check builds it)"; exit 1; }
vm_init
M=$((1024 * 1024))
img=$SHARE/disk.qcow2
head -c $M /dev/urandom >"$WORK/rand"
# the base's compressed clusters are zstd ones, the overlay's zlib
qemu-img create -q -f qcow2 -o cluster_size=4k,compression_type=zstd "$SHARE/base.qcow2" 64M ||
	exit 1
args=()
for ((i = 0; i < 8; i++)); do args+=(-c "write -s $WORK/rand ${i}M 1M"); done
qemu-io -f qcow2 "${args[@]}" -c "write -c -s $WORK/rand 40M 1M" "$SHARE/base.qcow2" >/dev/null ||
	exit 1
(cd "$SHARE" && qemu-img create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 disk.qcow2) ||
	exit 1
# 40M..48M: compressed (in the base, and in the overlay), zero and
# unallocated clusters for the read checks
qemu-io -f qcow2 -c "write -s $WORK/rand 42M 1M" -c "write -z 42M 512k" \
	-c "write -c -s $WORK/rand 44M 256k" "$img" >/dev/null || exit 1
qemu-img convert -O raw "$img" "$WORK/ref.raw" || exit 1
dd if="$WORK/ref.raw" of="$SHARE/ref-40M.raw" bs=1M skip=40 count=8 status=none

vm_guest <<'GUEST'
export ASAN_OPTIONS=detect_leaks=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
start_daemon() {
	# shellcheck disable=SC2086 # the variant's option, or none
	ublk-qcow-asan open $UQ_OPEN_ARGS --foreground -v -q 2 --l2-cache 16k disk.qcow2 \
		>/tmp/dev 2>/share/daemon.err &
	daemon=$!
	i=0
	while [ $i -lt 600 ] && ! [ -s /tmp/dev ]; do
		kill -0 $daemon 2>/dev/null || return 1
		sleep 0.1
		i=$((i + 1))
	done
	DEV=$(cat /tmp/dev)
	[ -b "$DEV" ]
}

stop_daemon() {
	kill -TERM $daemon
	wait $daemon
	rc=$?
	[ $rc = 0 ] || { echo "    the daemon exited $rc"; return 1; }
	! [ -e "$DEV" ]
}

if check start start_daemon; then
	check fio-randrw-verify quiet fio --name=rw --filename="$DEV" --direct=1 \
		--ioengine=io_uring --iodepth=32 --rw=randrw --bssplit=512/20:4k/30:64k/30:1052160/20 \
		--size=32M --verify=crc32c --verify_fatal=1 --verify_dump=0
	check discard quiet $BLKDISCARD -o 16777216 -l 4194304 "$DEV"
	check write-zeroes quiet $BLKDISCARD -z -o 20971520 -l 4194304 "$DEV"
	check discard-zeroes-read-zero sh -c "dd if=$DEV bs=1M skip=16 count=8 iflag=direct status=none |
		cmp - /dev/zero 2>&1 | grep -q EOF"
	check compressed-zero-holes-equal-qemu sh -c "dd if=$DEV bs=64k skip=640 count=128 \
		iflag=direct status=none | cmp - ref-40M.raw"
	check sigterm-exit-0 stop_daemon
fi
check no-device-left no_ublk_devices
GUEST
vm_run

if [ -f "$SHARE/daemon.err" ] &&
   ! grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:|SUMMARY: ' "$SHARE/daemon.err"; then
	host_pass no-sanitizer-report
else
	host_fail no-sanitizer-report "the daemon's stderr has a sanitizer report (or is missing)"
fi
[ -f "$SHARE/daemon.err" ] && sed 's/^/    daemon: /' "$SHARE/daemon.err" | head -n 60
# -v: each queue reports its counters as it exits; both must have served IO
host_check both-queues-served sh -c "[ \$(grep -c -E 'queue [01]: [1-9][0-9]* requests' '$SHARE/daemon.err') = 2 ]"
host_qemu_check qemu-img-check "$img"
vm_finish
