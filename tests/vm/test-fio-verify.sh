#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-fio-verify: fio random writes with crc32c verification through
# /dev/ublkbN on the real driver, then the data checked three ways.
#
# Image: 96 MiB of 4 KiB clusters, so one 4 KiB L2 table maps 2 MiB; the
# daemon runs with a 16 KiB L2 cache (4 tables, 8 MiB) and fio writes 64 MiB,
# so tables are evicted and re-read through the ring all the time.  Blocks of
# 512 B, 4 KiB, 64 KiB and 1 MiB + 7 sectors (larger than one request: the
# block layer splits it, into requests of 1 MiB, the largest the device takes
# in the zero-copy modes, or of 512 KiB in copy mode), queue depth 32, 2
# queues (--pin-queues).
#
#   guest: the device's largest request is 1 MiB in the zero-copy modes
#          and 512 KiB in copy mode;
#          each of the 2 queues' threads runs on its own CPU (the guest
#          has 2); fio writes and verifies (the data read back through the
#          daemon right after writing); close; reopen with the default cache
#          and 1 queue, whose thread may run on both CPUs; fio --verify_only
#          reads all of it again;
#   host:  qemu-img check finds no errors and no leaks; qemu-img convert
#          -O raw, and fio --verify_only on that raw file: QEMU's reader
#          sees exactly the data fio wrote.
. "$(dirname "$0")/lib.sh"

vm_init
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
qemu-img create -q -f qcow2 -o cluster_size=4k "$SHARE/disk.qcow2" 96M || exit 1
vm_fio_job verify iodepth=32 bssplit=512/25:4k/25:64k/25:1052160/25 size=64M

vm_guest <<'GUEST'
export ENGINE=io_uring
# the guest has 2 CPUs: with a queue each, each thread runs on its own
# CPU; one queue for both runs on either
pinned_one_each() {
	echo "    queue 0: CPUs $(queue_cpus 0), queue 1: CPUs $(queue_cpus 1)"
	case $(queue_cpus 0)/$(queue_cpus 1) in 0/1|1/0) return 0 ;; esac
	return 1
}
# the largest request: a buffer per tag in copy mode, the request's own
# pages in the zero-copy modes
largest_request_kb() {
	kb=$(cat "/sys/block/${DEV#/dev/}/queue/max_hw_sectors_kb")
	[ "$kb" = "$1" ] && return 0
	echo "    max_hw_sectors_kb is $kb, wanted $1"
	return 1
}
if uq_open -q 2 --pin-queues --l2-cache 16k disk.qcow2; then
	export FILE=$DEV
	if [ "$(dev_field "$DEV" mode)" = copy ]; then
		check largest-request-copy largest_request_kb 512
	else
		check largest-request-zero-copy largest_request_kb 1024
	fi
	check two-queues-one-cpu-each pinned_one_each
	check fio-write-verify quiet fio job.fio
	check close-after-write uq_close "$DEV"
fi
if uq_open disk.qcow2; then
	export FILE=$DEV
	check one-queue-not-pinned [ "$(queue_cpus 0)" = 0-1 ]
	check fio-verify-after-reopen quiet fio --verify_only job.fio
	check close-after-verify uq_close "$DEV"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_qemu_check qemu-img-check "$SHARE/disk.qcow2"
host_fio_verify "$SHARE/disk.qcow2"
vm_finish
