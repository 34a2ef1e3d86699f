#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-recover-snapshot: "recover" brings a device back with every option it
# was opened with, --snapshot included.
#
#   host:  an image whose snapshot snap-a holds 4 MiB of random data A and
#          whose active image holds a pattern over the same range;
#   guest: "open --recoverable --snapshot snap-a -q 2 --cache=writeback
#          --l2-cache 64k" reads A; twice: the daemon is killed with SIGKILL,
#          a read issued while no daemon serves waits, "recover" takes the
#          device over, and the waiting read, and a new one, return A (not
#          the active image), and "list --output=json" shows the device as it
#          was before the first kill (all but the pid); the device is still
#          read-only and the snapshot still cannot be deleted (the recovered
#          daemon holds its lock); close;
#   host:  the image is byte-identical (nothing wrote it) and qemu-img check
#          is clean.
#
# The image lives in the guest's RAM file system while its daemons are
# killed, as in test-recovery (shared/ref/test-vm.md: 9p and SIGKILL).
. "$(dirname "$0")/lib.sh"

vm_init
M=$((1024 * 1024))
head -c $((4 * M)) /dev/urandom >"$SHARE/a.bin"
cp "$SHARE/a.bin" "$WORK/raw" && truncate -s $((16 * M)) "$WORK/raw" &&
	qemu-img convert -q -f raw -O qcow2 "$WORK/raw" "$SHARE/disk.qcow2" &&
	qemu-img snapshot -c snap-a "$SHARE/disk.qcow2" &&
	qemu-io -f qcow2 -c "write -q -P 0xbb 0 4M" "$SHARE/disk.qcow2" >/dev/null || exit 1
sum=$(host_sum "$SHARE/disk.qcow2")

vm_guest <<'GUEST'
reads_a() {
	dd if="$DEV" bs=1M count=4 iflag=direct status=none | cmp - a.bin
}
# The device's entry in "list --output=json", without the daemon's pid.
listed() {
	ublk-qcow list --output=json | tr -d '\n' | sed 's/"pid":[0-9]*,//'
}
same_as_first() {
	listed >/tmp/list.now
	cmp -s /tmp/list.first /tmp/list.now && return 0
	echo "    first: $(cat /tmp/list.first)"
	echo "    now:   $(cat /tmp/list.now)"
	return 1
}
kill_and_recover() {
	pid=$(pidof ublk-qcow) || return 1
	kill -KILL $pid
	sleep 0.5
	[ -b "$DEV" ] || { echo "    $DEV went away with its daemon"; return 1; }
	# queued by the kernel until a daemon takes the device over
	dd if="$DEV" of=/tmp/waiting.bin bs=1M count=4 iflag=direct status=none &
	reader=$!
	sleep 0.3
	quiet ublk-qcow recover "$DEV" || return 1
	wait $reader || { echo "    the read issued while no daemon served failed"; return 1; }
}

cp disk.qcow2 /tmp/disk.qcow2 || fail copy-to-ram "cp disk.qcow2 /tmp failed"
if uq_open --recoverable --snapshot snap-a -q 2 --cache=writeback --l2-cache 64k \
	/tmp/disk.qcow2; then
	check snapshot-served reads_a
	listed >/tmp/list.first
	sed 's/^/    /' /tmp/list.first
	for round in 1 2; do
		check "kill-and-recover-$round" kill_and_recover
		check "waiting-read-got-snapshot-$round" cmp /tmp/waiting.bin a.bin
		check "snapshot-served-after-recover-$round" reads_a
		check "options-kept-$round" same_as_first
	done
	check still-read-only [ "$($BLOCKDEV --getro "$DEV")" = 1 ]
	check snapshot-still-locked refused 1 "being served" \
		qcow-tool snapshot -d snap-a /tmp/disk.qcow2
	check close uq_close "$DEV"
	check copy-to-share cp /tmp/disk.qcow2 disk.qcow2
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_unchanged image-unchanged "$SHARE/disk.qcow2" "$sum"
host_qemu_check qemu-img-check "$SHARE/disk.qcow2"
vm_finish
