#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-discard-zeroes: DISCARD frees clusters and WRITE_ZEROES reads back
# as zeros, through blkdiscard on the real driver.
#
#   guest: 8 MiB of random data written; blkdiscard of [1 MiB, 3 MiB);
#          blkdiscard -z (BLKZEROOUT: WRITE_ZEROES with NOUNMAP) of
#          [4 MiB, 6 MiB) and of 4 KiB at 6 MiB + 512 (not cluster-aligned:
#          the cluster's other bytes must survive); the discarded and
#          zeroed ranges read back as zeros, the rest as written;
#          space: on an image in the guest's RAM (tmpfs punches holes; 9p
#          does not), 24 MiB written then discarded with blkdiscard, and a
#          file system's 24 MiB file removed and fstrim'd, give the space
#          back to the file system by the close (at least 20 MiB of it),
#          and qcow-tool check finds no errors;
#   host:  qemu-img map shows no data in the discarded range and zeros in
#          the zeroed one; qemu-img compare against the expected raw image
#          says identical; qemu-img check finds no errors and no leaks.
. "$(dirname "$0")/lib.sh"

vm_init
M=$((1024 * 1024))
qemu-img create -q -f qcow2 -o cluster_size=64k "$SHARE/disk.qcow2" 64M || exit 1
head -c $((8 * M)) /dev/urandom >"$SHARE/data.bin"
# What the device must hold afterwards.
cp "$SHARE/data.bin" "$WORK/expect.raw"
truncate -s 64M "$WORK/expect.raw"
dd if=/dev/zero of="$WORK/expect.raw" bs=1M seek=1 count=2 conv=notrunc status=none
dd if=/dev/zero of="$WORK/expect.raw" bs=1M seek=4 count=2 conv=notrunc status=none
dd if=/dev/zero of="$WORK/expect.raw" bs=512 seek=$((6 * 2048 + 1)) count=8 conv=notrunc status=none
cp "$WORK/expect.raw" "$SHARE/expect.raw"

vm_guest <<'GUEST'
M=1048576
range_equal() {	# OFFSET LENGTH (bytes): device vs expect.raw
	dd if="$DEV" bs=512 skip=$(($1 / 512)) count=$(($2 / 512)) iflag=direct status=none >/tmp/got &&
	dd if=expect.raw bs=512 skip=$(($1 / 512)) count=$(($2 / 512)) status=none >/tmp/want &&
	cmp -s /tmp/got /tmp/want
}
if uq_open disk.qcow2; then
	check write-data dd if=data.bin of="$DEV" bs=1M oflag=direct conv=notrunc status=none
	check discard quiet $BLKDISCARD -o $M -l $((2 * M)) "$DEV"
	check write-zeroes quiet $BLKDISCARD -z -o $((4 * M)) -l $((2 * M)) "$DEV"
	check write-zeroes-unaligned quiet $BLKDISCARD -z -o $((6 * M + 512)) -l 4096 "$DEV"
	check discarded-reads-zero range_equal $M $((2 * M))
	check zeroed-reads-zero range_equal $((4 * M)) $((2 * M))
	check unaligned-zeroes-and-neighbours range_equal $((6 * M - 65536)) $((3 * 65536))
	check whole-device-as-expected cmp "$DEV" expect.raw
	check close uq_close "$DEV"
fi

# KiB the file takes on its file system
kib() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1") / 1024)); }
space_back() {	# IMAGE BEFORE_KIB: at least 20 of the 24 MiB given back
	echo "    $1: $2 KiB before the discard, $(kib "$1") KiB after"
	[ $(($(kib "$1") + 20480)) -le "$2" ]
}
qcow-tool create -q -f qcow2 /tmp/space.qcow2 64M
if uq_open /tmp/space.qcow2; then
	check write-24M dd if=/dev/urandom of="$DEV" bs=1M count=24 oflag=direct status=none
	check close-written uq_close "$DEV"
	before=$(kib /tmp/space.qcow2)
	if uq_open /tmp/space.qcow2; then
		check discard-24M quiet $BLKDISCARD -o 0 -l $((24 * M)) "$DEV"
		check close-discarded uq_close "$DEV"
		check discard-gives-space-back space_back /tmp/space.qcow2 "$before"
	fi
fi
check space-image-clean quiet qcow-tool check /tmp/space.qcow2
qcow-tool create -q -f qcow2 /tmp/fs.qcow2 128M
mkdir -p /mnt
if uq_open /tmp/fs.qcow2; then
	before=
	check mkfs quiet mkfs.ext4 -q -F -E nodiscard "$DEV"
	# each step needs the one before: a file written beside a failed
	# mount would land on the guest's rootfs
	if check mount mount -t ext4 "$DEV" /mnt && is_mounted /mnt; then
		check write-file dd if=/dev/urandom of=/mnt/file bs=1M count=24 conv=fsync \
			status=none
		check sync sync
		before=$(kib /tmp/fs.qcow2)
		check remove-file rm /mnt/file
		# ext4 frees the blocks when the journal commits the removal
		check sync-removal sync
		check fstrim quiet fstrim -v /mnt
		check umount umount /mnt
	fi
	check close-fs uq_close "$DEV"
	if [ -n "$before" ]; then
		check fstrim-gives-space-back space_back /tmp/fs.qcow2 "$before"
	else
		fail fstrim-gives-space-back "the file system was not mounted"
	fi
fi
check fs-image-clean quiet qcow-tool check /tmp/fs.qcow2
check no-device-left no_ublk_devices
GUEST
vm_run

img=$SHARE/disk.qcow2
map=$(qemu-img map --output=json "$img")
echo "$map" | sed 's/^/    map: /'
# Every map entry inside [lo, hi) must have the given "data" value and, for
# the zeroed range, "zero": true.
range_map_is() {
	local lo=$1 hi=$2 want_data=$3 want_zero=$4
	echo "$map" | jq -e --argjson lo "$lo" --argjson hi "$hi" --argjson d "$want_data" \
		--argjson z "$want_zero" \
		'[.[] | select(.start < $hi and .start + .length > $lo)] |
		 length > 0 and all(.data == $d and (if $z then .zero == true else true end))' >/dev/null
}
host_check discarded-range-unallocated range_map_is $M $((3 * M)) false false
host_check zeroed-range-reads-zero range_map_is $((4 * M)) $((6 * M)) false true
host_check data-range-allocated range_map_is 0 $M true false
host_check qemu-img-compare qemu-img compare -q -f qcow2 -F raw "$img" "$WORK/expect.raw"
host_qemu_check qemu-img-check "$img"
vm_finish
