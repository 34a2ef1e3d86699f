#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-recovery: "open --recoverable" survives the daemon's death; "recover"
# takes the device over with the IO the kernel held for it.
#
#   guest: fio writes 96 MiB at random with crc32c verification (QD 16,
#          2 queues), four times over (so that it still runs at the third
#          kill however fast the device serves), while the daemon is killed
#          with SIGKILL three times;
#          each time /dev/ublkbN stays, "recover" starts a new daemon, and
#          fio goes on; fio ends with no IO error and every block verified;
#          recover refuses a live device and a device opened without
#          --recoverable; close;
#   host:  qemu-img check finds no corruption (clusters the killed daemons
#          had allocated may leak) and fio --verify_only on qemu-img's raw
#          conversion finds exactly what fio wrote.
#
# The killed image lives in the guest's RAM filesystem, not on the 9p share,
# and is copied to the share after the clean close.  On the 9p share a
# pwrite that SIGKILL interrupts can leave zeros in the range it was
# writing, which no local filesystem does (an interrupted write leaves old
# or new bytes): with the image there, a daemon killed while it wrote an L2
# table or a refcount block lost the whole table, and this test failed one
# run in five or so on the guest kernel's behaviour, not the daemon's.
. "$(dirname "$0")/lib.sh"

vm_init
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
qemu-img create -q -f qcow2 "$SHARE/disk.qcow2" 128M || exit 1
qemu-img create -q -f qcow2 "$SHARE/plain.qcow2" 16M || exit 1
vm_fio_job recovery iodepth=16 bssplit=4k/40:64k/40:256k/20 size=96M loops=4

vm_guest <<'GUEST'
export ENGINE=io_uring
kill_and_recover() {
	kill -0 "$fio_pid" 2>/dev/null || { echo "    fio had already finished"; return 1; }
	pid=$(pidof ublk-qcow) || return 1
	kill -KILL $pid
	sleep 0.5
	[ -b "$DEV" ] || { echo "    $DEV went away with its daemon"; return 1; }
	quiet ublk-qcow recover "$DEV" || return 1
	new=$(pidof ublk-qcow)
	[ -n "$new" ] && [ "$new" != "$pid" ] || return 1
	# the new daemon serves in the mode the device was created with
	mode=$(dev_field "$DEV" mode)
	[ -z "$UQ_MODE" ] || [ "$mode" = "$UQ_MODE" ] ||
		{ echo "    recovered in mode '$mode', not '$UQ_MODE'"; return 1; }
}

if cp disk.qcow2 /tmp/disk.qcow2 && uq_open --recoverable -q 2 /tmp/disk.qcow2; then
	export FILE=$DEV
	fio job.fio >/tmp/fio.out 2>&1 &
	fio_pid=$!
	for round in 1 2 3; do
		sleep 1
		check "kill-and-recover-$round" kill_and_recover
	done
	wait $fio_pid
	rc=$?
	[ $rc = 0 ] || grep -a -i "verify\|err=" /tmp/fio.out | head -n 5 | sed 's/^/    | /'
	check fio-verified-through-kills [ $rc = 0 ]
	check recover-refuses-live-device refused 1 "being served" ublk-qcow recover "$DEV"
	check list-shows-recovered sh -c "ublk-qcow list | grep -q '$DEV.*live'"
	check close uq_close "$DEV"
	check copy-to-share cp /tmp/disk.qcow2 disk.qcow2
fi
if uq_open plain.qcow2; then
	kill -KILL $(pidof ublk-qcow)
	sleep 0.5
	check recover-refuses-unrecoverable refused 1 "not opened with --recoverable" \
		ublk-qcow recover "$DEV"
	check close-unrecoverable uq_close "$DEV"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_qemu_check qemu-img-check "$SHARE/disk.qcow2" leaks-ok
host_fio_verify "$SHARE/disk.qcow2"
vm_finish
