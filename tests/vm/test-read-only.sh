#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-read-only: --read-only serves the image without ever writing it.
#
#   guest: the device is read-only (blockdev --getro, list says ro); reads
#          equal qemu-img's raw conversion; O_DIRECT and buffered writes,
#          discard and write-zeroes all fail; a second read-only open of
#          the same image under its default name is refused (the name is in
#          use: the message names the first device and --name), and with
#          --name works beside the first (shared lock); a read-write open
#          of it is refused while they run (the image's lock);
#          QEMU's locks (qemu-io and qemu-img run in the guest): beside a
#          read-only device qemu-io reads the image and cannot write it;
#          beside a read-write one qemu-io cannot open it, qemu-img info
#          only with -U (and qcow-tool info the same), each refusal naming
#          the lock as QEMU does; while qemu-io writes an image, open and
#          open --read-only are refused, naming the lock;
#   host:  the image file is byte-identical to what it was before.
. "$(dirname "$0")/lib.sh"

vm_init
img=$SHARE/ro.qcow2
qemu-img create -q -f qcow2 "$img" 32M || exit 1
qemu-io -f qcow2 -c "write -P 0x5a 0 4M" -c "write -z 8M 1M" -c "write -P 0x33 12M 64k" \
	"$img" >/dev/null || exit 1
qemu-img convert -O raw "$img" "$SHARE/ref.raw" || exit 1
qemu-img create -q -f qcow2 "$SHARE/rw.qcow2" 32M || exit 1
sha_before=$(host_sum "$img")

vm_guest <<'GUEST'
write_fails() {
	if dd if=/dev/zero of="$DEV" bs=4k count=1 seek=1 oflag=direct conv=notrunc \
		status=none 2>/dev/null; then
		echo "    an O_DIRECT write to $DEV succeeded"
		return 1
	fi
	if dd if=/dev/zero of="$DEV" bs=4k count=1 conv=notrunc,fsync status=none 2>/dev/null; then
		echo "    a buffered write to $DEV succeeded"
		return 1
	fi
	! $BLKDISCARD -o 0 -l 65536 "$DEV" 2>/dev/null &&
	! $BLKDISCARD -z -o 0 -l 65536 "$DEV" 2>/dev/null
}

if uq_open --read-only ro.qcow2; then
	first=$DEV
	check device-is-read-only [ "$($BLOCKDEV --getro "$DEV")" = 1 ]
	check list-says-ro sh -c "ublk-qcow list | grep '$DEV' | grep -q ' ro '"
	check reads-equal-qemu cmp "$DEV" ref.raw
	check writes-fail write_fails
	check still-equal cmp "$DEV" ref.raw
	# a second device for the image needs a name of its own
	check second-open-default-name-refused refused 1 \
		"name 'ro' is in use by $first \(pid [0-9]+\): open this image with --name" \
		ublk-qcow open --read-only ro.qcow2
	if uq_open --read-only --name ro-second ro.qcow2; then
		pass second-read-only-open
		check second-reads-equal cmp "$DEV" ref.raw
		check close-second uq_close "$DEV"
	else
		fail second-read-only-open "a second --read-only open was refused"
	fi
	check read-write-open-refused refused 1 "image is in use" \
		ublk-qcow open --name ro-rw ro.qcow2
	check qemu-reads-beside-read-only qemu-io -r -f qcow2 -c 'read -q 0 4k' ro.qcow2
	check qemu-write-refused refused 1 'Failed to get "write" lock' \
		qemu-io -f qcow2 -c 'write -q 0 4k' ro.qcow2
	check close uq_close "$first"
fi

if uq_open rw.qcow2; then
	check qemu-io-refused refused 1 'Failed to get "write" lock' \
		qemu-io -f qcow2 -c 'read -q 0 4k' rw.qcow2
	check qemu-img-info-refused refused 1 'Failed to get shared "write" lock' \
		qemu-img info rw.qcow2
	check qemu-img-info-U qemu-img info -U rw.qcow2
	check tool-info-refused refused 1 'Failed to get shared "write" lock' qcow-tool info rw.qcow2
	check tool-info-U qcow-tool info -U rw.qcow2
	check close-rw uq_close "$DEV"
fi

# qemu-io holds rw.qcow2 for writing until its stdin closes
mkfifo /tmp/qemu-in
qemu-io -f qcow2 rw.qcow2 </tmp/qemu-in >/tmp/qemu-io.out 2>&1 &
holder=$!
exec 8>/tmp/qemu-in
ino=$(stat -c %i rw.qcow2)
n=0
until awk -v ino="$ino" '$2 == "OFDLCK" && $6 ~ (":" ino "$") { f = 1 } END { exit !f }' \
	/proc/locks || [ $n -ge 600 ]; do
	sleep 0.1
	n=$((n + 1))
done
check open-refused-under-qemu refused 1 'Failed to get "write" lock' ublk-qcow open rw.qcow2
check read-only-open-refused-under-qemu refused 1 'Failed to get shared "write" lock' \
	ublk-qcow open --read-only rw.qcow2
exec 8>&-
wait $holder
check no-device-left no_ublk_devices
GUEST
vm_run

host_unchanged image-byte-identical "$img" "$sha_before"
vm_finish
