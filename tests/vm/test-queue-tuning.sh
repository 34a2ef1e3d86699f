#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-queue-tuning: the block device's I/O scheduler (--io-scheduler) and
# where the queue threads run (--pin-queues), on the real driver.
#
#   guest (2 CPUs): one queue by default: the device's queue/scheduler is
#          "none" (the kernel alone gives a one-queue ublk device
#          mq-deadline) and the queue thread may run on both CPUs;
#          --io-scheduler=kernel leaves mq-deadline; --io-scheduler=
#          mq-deadline on two queues (where the kernel gives none) sets it;
#          a name the kernel does not have still opens, with a warning that
#          names the sysfs file and the name, and the kernel's scheduler
#          stays; two queues run anywhere by default and on one CPU each
#          with --pin-queues (one CPU each, whichever the kernel maps to
#          which queue), which list --output=json shows kept;
#          reads through each device come back as the host wrote them;
#          with the image on ext4 (a RAM disk), 4 KiB allocating writes at
#          depth 32 get one io-wq worker for the queue's ring (ring.c; at
#          most 2 threads: io-wq keeps an idle one besides, and without
#          the bound there are 9), and open -v says so; with
#          --cache=writeback on ext4 (a buffered write always needs a
#          worker) and on tmpfs (every write needs one) it says the
#          kernel's default stays.
. "$(dirname "$0")/lib.sh"

vm_init
qemu-img create -q -f qcow2 "$SHARE/disk.qcow2" 16M || exit 1
qemu-io -f qcow2 -c 'write -P 0x5a 0 1M' "$SHARE/disk.qcow2" >/dev/null || exit 1

vm_guest <<'GUEST'
# sched DEV: the scheduler in use ([name] in queue/scheduler)
sched() { sed -n 's/.*\[\([^]]*\)\].*/\1/p' "/sys/block/${1#/dev/}/queue/scheduler"; }
is_sched() {	# DEV WANT
	[ "$(sched "$1")" = "$2" ] ||
		{ echo "    $1: scheduler '$(sched "$1")' ($(cat "/sys/block/${1#/dev/}/queue/scheduler")), wanted '$2'"; return 1; }
}
cpus_are() {	# WANT_Q0 [WANT_Q1]: either way round (the kernel's map of CPUs to queues)
	got="$(queue_cpus 0)${2:+/$(queue_cpus 1)}"
	[ "$got" = "$1${2:+/$2}" ] || [ "$got" = "${2:+$2/}$1" ] ||
		{ echo "    queue CPUs '$got', wanted '$1${2:+/$2}'"; return 1; }
}
head -c 1048576 /dev/zero | tr '\0' 'Z' >/tmp/want	# the host's first MiB: 0x5a
reads_back() {	# DEV
	dd if="$1" of=/tmp/got bs=1M count=1 iflag=direct 2>/dev/null &&
		cmp /tmp/want /tmp/got || { echo "    $1 does not read back the host's 0x5a bytes"; return 1; }
}
listed() {	# KEY VALUE: in list --output=json
	ublk-qcow list --output=json | tr -d '\n' | grep -q "\"$1\":$2" ||
		{ echo "    list --output=json has no \"$1\":$2"; ublk-qcow list --output=json | sed 's/^/    | /'; return 1; }
}

if uq_open disk.qcow2; then
	check default-scheduler-none is_sched "$DEV" none
	check one-queue-runs-anywhere cpus_are 0-1
	check default-reads reads_back "$DEV"
	check close-default uq_close "$DEV"
fi
if uq_open --io-scheduler=kernel disk.qcow2; then
	check kernel-keeps-mq-deadline is_sched "$DEV" mq-deadline
	check close-kernel uq_close "$DEV"
fi
if uq_open -q 2 --io-scheduler=mq-deadline disk.qcow2; then
	check asked-mq-deadline is_sched "$DEV" mq-deadline
	check two-queues-run-anywhere cpus_are 0-1 0-1
	check not-pinned-listed listed pin_queues false
	check close-asked uq_close "$DEV"
fi
if uq_open -q 2 --io-scheduler=nosuch disk.qcow2; then
	check unknown-scheduler-warns grep -q "/sys/block/${DEV#/dev/}/queue/scheduler: cannot set the I/O scheduler 'nosuch'" /tmp/open.err
	check unknown-scheduler-kernel-stays is_sched "$DEV" none
	check unknown-scheduler-reads reads_back "$DEV"
	check close-unknown uq_close "$DEV"
fi
if uq_open -q 2 --pin-queues disk.qcow2; then
	check pinned-one-cpu-each cpus_are 0 1
	check pinned-listed listed pin_queues true
	check pinned-reads reads_back "$DEV"
	check close-pinned uq_close "$DEV"
fi
# q0_workers: the io-wq workers of queue 0's thread (named iou-wrk-TID)
q0_workers() {
	n=0 qtid=$(queue_tid 0)
	for t in /proc/$(pidof ublk-qcow)/task/*; do
		[ "$(cat "$t/comm")" = "iou-wrk-$qtid" ] && n=$((n + 1))
	done
	echo "$n"
}
# workers_when_allocating DIR [OPTION...]: queue 0's workers, 2 s into 4 KiB
# random writes at depth 32 to a new image in DIR (io-wq lets idle workers
# go after 5 s), opened with -v and the options: /tmp/open.err has the line
# that says how the rings were set up
workers_when_allocating() {
	dir=$1
	shift
	qcow-tool create "$dir/empty.qcow2" 1G >/dev/null && uq_open -v "$@" "$dir/empty.qcow2" || return 1
	fio --name=alloc --filename="$DEV" --rw=randwrite --bs=4k --iodepth=32 --ioengine=io_uring \
		--direct=1 --runtime=3 --time_based >/dev/null 2>&1 &
	sleep 2
	WORKERS=$(q0_workers)
	wait
	uq_close "$DEV"
	rm -f "$dir/empty.qcow2"
}
at_most() { [ "$2" -le "$3" ] || { echo "    $1: $2 workers, wanted at most $3"; return 1; }; }
said() { grep -q "$1" /tmp/open.err || { echo "    open -v did not say '$1':"; sed 's/^/    | /' /tmp/open.err; return 1; }; }
if bench_disk 256 && workers_when_allocating /bench; then
	check ext4-one-worker at_most ext4 "$WORKERS" 2
	check ext4-says-one-worker said "one io-wq worker a queue"
fi
# buffered writes to ext4 all go to io-wq: one worker would serve them one
# at a time
if workers_when_allocating /bench --cache=writeback; then
	check ext4-writeback-says-kernel-workers said "io-wq workers as the kernel sets"
fi
mkdir -p /tmp/fs && mount -t tmpfs -o size=256m tmpfs /tmp/fs
if workers_when_allocating /tmp/fs; then
	check tmpfs-says-kernel-workers said "io-wq workers as the kernel sets"
fi
check no-device-left no_ublk_devices
GUEST
vm_run
vm_finish
