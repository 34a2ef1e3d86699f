#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-read-only: --read-only serves the image without ever writing it.
#
#   guest: the device is read-only (blockdev --getro, list says ro); reads
#          equal qemu-img's raw conversion; O_DIRECT and buffered writes,
#          discard and write-zeroes all fail; a second read-only open of
#          the same image works beside the first (shared lock); a read-write
#          open of it is refused while they run;
#   host:  the image file is byte-identical to what it was before.
. "$(dirname "$0")/lib.sh"

vm_init
img=$SHARE/ro.qcow2
qemu-img create -q -f qcow2 "$img" 32M || exit 1
qemu-io -f qcow2 -c "write -P 0x5a 0 4M" -c "write -z 8M 1M" -c "write -P 0x33 12M 64k" \
	"$img" >/dev/null || exit 1
qemu-img convert -O raw "$img" "$SHARE/ref.raw" || exit 1
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
	if uq_open --read-only ro.qcow2; then
		pass second-read-only-open
		check second-reads-equal cmp "$DEV" ref.raw
		check close-second uq_close "$DEV"
	else
		fail second-read-only-open "a second --read-only open was refused"
	fi
	check read-write-open-refused refused 1 "in use" ublk-qcow open ro.qcow2
	check close uq_close "$first"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_unchanged image-byte-identical "$img" "$sha_before"
vm_finish
