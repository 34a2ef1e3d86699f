#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-bitmaps: a served device keeps the image's persistent dirty bitmaps,
# as a QEMU guest would: qemu-img made the image with an enabled bitmap (64
# KiB granularity) and a disabled one.
#
#   guest: a write of 1 MiB, an unaligned 4 KiB write, a discard and a
#          zeroing through the device, then close;
#   host:  qemu-io does the same requests on a twin image; qemu-img check
#          is clean, no bitmap is left in use, the disabled one is
#          unchanged, and each bitmap's dirty ranges (qemu-nbd -B and
#          nbdinfo --map) equal the twin's.
. "$(dirname "$0")/lib.sh"

command -v nbdinfo >/dev/null && command -v qemu-nbd >/dev/null ||
	vm_skip "missing packages: (nbdinfo: libnbd-bin) (qemu-nbd: qemu-utils)"
vm_init
M=$((1024 * 1024))
img=$SHARE/disk.qcow2
twin=$WORK/twin.qcow2
qemu-img create -q -f qcow2 "$img" 64M || exit 1
qemu-io -f qcow2 -c "write -q -P 0x11 0 8M" "$img" >/dev/null || exit 1
qemu-img bitmap --add -g 64K "$img" live || exit 1
qemu-img bitmap --add -g 1M "$img" frozen || exit 1
qemu-img bitmap --disable "$img" frozen || exit 1
cp "$img" "$twin"
qemu-io -f qcow2 -c "write -q -P 0x22 $((4 * M)) $M" -c "write -q -P 0x33 $((20 * M + 512)) 4096" \
	-c "discard -q $((30 * M)) $M" -c "write -q -z $((40 * M)) 65536" "$twin" >/dev/null || exit 1

vm_guest <<'GUEST'
M=1048576
if uq_open disk.qcow2; then
	check write-1M sh -c "head -c $M /dev/zero | tr '\0' '\42' |
		dd of=$DEV bs=1M seek=4 oflag=direct conv=notrunc status=none"
	check write-unaligned sh -c "head -c 4096 /dev/zero | tr '\0' '\63' |
		dd of=$DEV bs=512 seek=$((20 * 2048 + 1)) oflag=direct conv=notrunc status=none"
	check discard quiet $BLKDISCARD -o $((30 * M)) -l $M "$DEV"
	check write-zeroes quiet $BLKDISCARD -z -o $((40 * M)) -l 65536 "$DEV"
	check close uq_close "$DEV"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_qemu_check qemu-img-check "$img"
host_check same-content qemu-img compare -q -f qcow2 -F qcow2 "$img" "$twin"
host_check no-bitmap-in-use host_bitmap_not_in_use "$img"
for b in live frozen; do
	host_check "bitmap-$b-as-qemu" host_same_map "$img" "$twin" "$b"
done
vm_finish
