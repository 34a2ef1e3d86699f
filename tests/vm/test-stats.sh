#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-stats: ublk-qcow stats counts what the device was asked, read from a
# live daemon through its control socket.
#
#   guest: a fresh 64 MiB image (64 KiB clusters) served with two queues;
#          100 direct 4 KiB writes (one request each: dd writes one block at
#          a time), 50 direct 4 KiB reads, and an fsync (a FLUSH); then
#          two fio jobs, one on each CPU (so each queue gets requests),
#          overwriting those clusters with an fdatasync every 4 writes for
#          3 seconds: a FLUSH that finds the other queue's flush at its
#          fsync issues one of its own (own_syncs, at least one), and every
#          FLUSH completes; then
#          stats --output=json must show, in total, at least those requests
#          and bytes, a flush with a time, requests done equal to requests
#          counted in (nothing in flight, nothing waiting, no errors), at
#          least 7 clusters allocated (the data alone needs 7) and L2 cache
#          hits; the two queues' figures add up to the total; the human
#          output names the device; a device that does not exist, or a
#          malformed one, is an error (exit 1, or 2 for usage).
. "$(dirname "$0")/lib.sh"

vm_init
qemu-img create -q -f qcow2 -o cluster_size=64k "$SHARE/disk.qcow2" 64M || exit 1

vm_guest <<'GUEST'
# total KEY / queue N KEY: a number from the saved JSON
total() { sed -n "s/.*\"total\":{\([^}]*\)}.*/\1/p" /tmp/stats.json | tr ',' '\n' |
	sed -n "s/^\"$1\"://p"; }
queue() { sed -n "s/.*{\"queue\":$1,\([^}]*\)}.*/\1/p" /tmp/stats.json | tr ',' '\n' |
	sed -n "s/^\"$2\"://p"; }
engine() { sed -n "s/.*\"engine\":{\([^}]*\)}.*/\1/p" /tmp/stats.json | tr ',' '\n' |
	sed -n "s/^\"$1\"://p"; }
at_least() {	# KEY VALUE MIN
	[ -n "$2" ] && [ "$2" -ge "$3" ] || { echo "    $1 is '$2', wanted at least $3"; return 1; }
}
equal() {	# WHAT A B
	[ -n "$2" ] && [ "$2" = "$3" ] || { echo "    $1: '$2' is not '$3'"; return 1; }
}
queues_add_up() {
	for k in reads writes flushes read_bytes write_bytes done; do
		equal "$k of queues 0 and 1" "$(( $(queue 0 $k) + $(queue 1 $k) ))" "$(total $k)" ||
			return 1
	done
}
expect_exit() {	# CODE CMD...
	want=$1
	shift
	"$@" >/tmp/out 2>&1
	rc=$?
	[ $rc = "$want" ] || { echo "    $* exited $rc, wanted $want"; sed 's/^/    | /' /tmp/out; }
	[ $rc = "$want" ]
}
if uq_open -q 2 disk.qcow2; then
	check write-100 dd if=/dev/urandom of="$DEV" bs=4k count=100 oflag=direct status=none
	check read-50 dd if="$DEV" of=/dev/null bs=4k count=50 iflag=direct status=none
	check fsync dd if=/dev/urandom of="$DEV" bs=4k count=1 seek=200 oflag=direct conv=fsync \
		status=none
	check flushes-on-both-queues quiet fio --name=flushes --filename="$DEV" --rw=randwrite \
		--bs=4k --size=400k --iodepth=16 --numjobs=2 --cpus_allowed=0-1 \
		--cpus_allowed_policy=split --fdatasync=4 --ioengine=io_uring --direct=1 \
		--runtime=3 --time_based
	check stats-json quiet sh -c "ublk-qcow stats --output=json $DEV >/tmp/stats.json"
	sed 's/^/    /' /tmp/stats.json
	check writes at_least writes "$(total writes)" 101
	check write-bytes at_least write_bytes "$(total write_bytes)" $((101 * 4096))
	check reads at_least reads "$(total reads)" 50
	check read-bytes at_least read_bytes "$(total read_bytes)" $((50 * 4096))
	check flushes at_least flushes "$(total flushes)" 1
	check flush-time at_least flush_ns "$(total flush_ns)" 1
	check own-syncs at_least own_syncs "$(total own_syncs)" 1
	check all-done equal "done vs counted in" "$(total done)" "$(( $(total reads) + \
		$(total writes) + $(total flushes) + $(total discards) + $(total write_zeroes) ))"
	check nothing-in-flight equal in_flight "$(total in_flight)" 0
	check nothing-waiting equal waiting "$(total waiting)" 0
	check no-errors equal errors "$(total errors)" 0
	check clusters at_least clusters_allocated "$(engine clusters_allocated)" 7
	check l2-hits at_least l2_hits "$(engine l2_hits)" 1
	# a 64 MiB file needs no refcount block past the first
	check refcount-growths equal refcount_growths "$(engine refcount_growths)" 0
	check queues-add-up queues_add_up
	check stats-human quiet sh -c "ublk-qcow stats $DEV | grep -q '^$DEV (device'"
	SERVED=$DEV
	check close uq_close "$DEV"
	check closed-device-is-an-error expect_exit 1 ublk-qcow stats "$SERVED"
fi
check no-such-device-is-an-error expect_exit 1 ublk-qcow stats 77
check malformed-target-is-usage expect_exit 2 ublk-qcow stats /dev/sda
check no-device-left no_ublk_devices
GUEST
vm_run
host_check image-clean qemu-img check -q "$SHARE/disk.qcow2"
vm_finish
