#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-flush-kill: what a FLUSH acknowledged is in the image even when the
# daemon is killed with SIGKILL right after, and a dead daemon leaves no
# stuck device.
#
#   guest: 4 MiB of random data written in 64 KiB O_DIRECT writes spread
#          over fresh clusters, then fsync (a FLUSH request); more writes
#          without a flush; SIGKILL the daemon; IO on the device now fails
#          (it does not hang) and the block device goes away; list no longer shows the device; close
#          removes what the dead daemon left; the killed image is copied
#          out; killed again while another process holds its /dev/ublkcN
#          for 2 s, close right away still removes the device; reopened,
#          the flushed data reads back through the daemon;
#   host:  the image as the kill left it passes qemu-img check (leaked
#          clusters allowed, nothing else) and qemu-img convert shows the
#          flushed data; after the guest's reopen and clean close, qemu-img
#          check finds nothing at all.
. "$(dirname "$0")/lib.sh"

vm_init
qemu-img create -q -f qcow2 -o cluster_size=64k "$SHARE/disk.qcow2" 128M || exit 1
head -c $((4 * 1024 * 1024)) /dev/urandom >"$SHARE/flushed.bin"
head -c $((2 * 1024 * 1024)) /dev/urandom >"$SHARE/unflushed.bin"

vm_guest <<'GUEST'
# flushed.bin goes to 1 MiB + (chunk * 192 KiB): 64 KiB chunks with gaps, so
# each write allocates a cluster of its own and L2 entries are spread out.
write_flushed() {
	i=0
	while [ $i -lt 64 ]; do
		dd if=flushed.bin of="$DEV" bs=64k skip=$i seek=$((16 + i * 3)) count=1 \
			oflag=direct conv=notrunc status=none || return 1
		i=$((i + 1))
	done
	# fsync on the block device sends the FLUSH
	dd if=/dev/null of="$DEV" conv=fsync,notrunc status=none
}

read_flushed() {
	i=0
	while [ $i -lt 64 ]; do
		dd if="$DEV" bs=64k skip=$((16 + i * 3)) count=1 iflag=direct status=none
		i=$((i + 1))
	done | cmp - flushed.bin
}

io_fails() {
	# a dead server's device must fail IO, not hang it
	if timeout 30 dd if="$DEV" of=/dev/null bs=4k count=1 iflag=direct status=none \
		2>/dev/null; then
		echo "    a read after the kill succeeded"
		return 1
	fi
	[ $? != 124 ] || { echo "    a read after the kill hung"; return 1; }
}


not_listed() {
	! ublk-qcow list | grep -q "$DEV"
}

if uq_open disk.qcow2; then
	check write-and-flush write_flushed
	check write-unflushed dd if=unflushed.bin of="$DEV" bs=64k seek=1024 oflag=direct \
		conv=notrunc status=none
	pid=$(pidof ublk-qcow)
	check sigkill kill -KILL $pid
	sleep 1
	check io-fails-after-kill io_fails
	check block-device-goes-away bdev_goes_away
	check list-drops-dead-device not_listed
	check close-cleans-up uq_close "$DEV"
	check copy-killed-image cp disk.qcow2 killed.qcow2
fi
check no-device-left no_ublk_devices
# close at once after a kill, while the dead daemon's /dev/ublkcN stays open
# 2 s more (the kernel tears a dead process's rings down after it is gone,
# and sees the server go only then; meanwhile 7.x reports the device live
# with no server): close waits for the kernel and removes the device
if uq_open disk.qcow2; then
	pid=$(pidof ublk-qcow)
	hold-fd "$pid" "/dev/ublkc${DEV#/dev/ublkb}" 2 >/tmp/held &
	check holder-has-cdev wait_for 10 grep -q held /tmp/held
	kill -KILL "$pid"
	check killed-daemon-gone wait_for 10 sh -c "! pidof ublk-qcow"
	check close-while-held quiet ublk-qcow close "$DEV"
	check no-device-after-held-close no_ublk_devices
	wait
fi
if uq_open disk.qcow2; then
	check flushed-data-after-reopen read_flushed
	check close-after-reopen uq_close "$DEV"
fi
GUEST
vm_run

host_qemu_check killed-image-check "$SHARE/killed.qcow2" leaks-ok
if qemu-img convert -O raw "$SHARE/killed.qcow2" "$WORK/killed.raw"; then
	for ((i = 0; i < 64; i++)); do
		dd if="$WORK/killed.raw" bs=64k skip=$((16 + i * 3)) count=1 status=none
	done >"$WORK/got.bin"
	host_check flushed-data-in-killed-image cmp "$WORK/got.bin" "$SHARE/flushed.bin"
else
	host_fail qemu-img-convert "qemu-img convert -O raw killed.qcow2 failed"
fi
host_qemu_check image-check-after-reopen "$SHARE/disk.qcow2"
vm_finish
