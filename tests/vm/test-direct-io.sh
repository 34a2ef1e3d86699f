#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-direct-io: --cache=none (the default) opens the image with O_DIRECT,
# and the device takes over what direct IO on the image's file system needs.
#
# The guest has a virtio disk with 4096-byte logical sectors, with ext4 on
# it holding the images:
#
#   guest: the default open runs with cache "none"; the device's logical
#          block size is the disk's 4096, and in the zero-copy modes its DMA
#          alignment and segment limits are the disk's (the request's pages
#          go to the disk as they are); fio writes and verifies with
#          512-byte-aligned buffers and mixed sizes; reading the device
#          leaves the image's mtime as it was, a write moves it (the daemon
#          sets it itself before writes); reopened with
#          --cache=writeback (512-byte blocks) fio verifies it all again;
#          an image with 512-byte clusters and one whose size is not a
#          multiple of 4096 fall back to the page cache by default
#          ("writeback-fallback") and refuse an explicit --cache=none,
#          saying why; on ramfs, which has no O_DIRECT, the same;
#   host:  the image, copied back to the share, passes qemu-img check and
#          holds what fio wrote (qemu-img convert, fio --verify_only).
. "$(dirname "$0")/lib.sh"

vm_init
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
truncate -s 512M "$WORK/disk4k.raw"
VM_QEMU_ARGS=(-drive "file=$WORK/disk4k.raw,if=none,id=d4k,format=raw,cache=unsafe"
	-device virtio-blk-pci,drive=d4k,logical_block_size=4096,physical_block_size=4096)
qemu-img create -q -f qcow2 "$SHARE/big.qcow2" 256M || exit 1
qemu-img create -q -f qcow2 -o cluster_size=512 "$SHARE/small.qcow2" 16M || exit 1
qemu-img create -q -f qcow2 "$SHARE/odd.qcow2" $((16 * 1024 * 1024 + 512)) || exit 1
vm_fio_job direct iodepth=16 bssplit=4k/40:12k/20:64k/20:1052672/20 iomem_align=512 size=48M

vm_guest <<'GUEST'
export ENGINE=io_uring
blk() { cat "/sys/block/$1/queue/$2"; }
# same_limit NAME: the device's queue limit NAME equals the disk's
same_limit() {
	[ "$(blk "${DEV#/dev/}" "$1")" = "$(blk vda "$1")" ] && return 0
	echo "    $1: device $(blk "${DEV#/dev/}" "$1"), disk $(blk vda "$1")"
	return 1
}
cache_is() {
	[ "$(dev_field "$DEV" cache)" = "$1" ] && return 0
	echo "    $DEV runs with cache '$(dev_field "$DEV" cache)', not '$1'"
	return 1
}
# falls_back IMAGE WHY: the default open falls back to the page cache,
# and --cache=none is refused with a message matching WHY
falls_back() {
	uq_open "$1" || return 1
	cache_is writeback-fallback || return 1
	uq_close "$DEV" || return 1
	refused 1 "$2" ublk-qcow open --cache=none "$1"
}

# The daemon sets the image's modification time itself before it issues
# writes (queue.c, stamp_image), and only then: reads through the device
# leave it alone, a write moves it.
mtime() { stat -c %y "$1"; }
reads_keep_mtime() {
	m=$(mtime "$1")
	sleep 1.1
	fio --name=r --filename="$DEV" --rw=randread --bs=4k --iodepth=16 --ioengine=io_uring \
		--direct=1 --runtime=1 --time_based >/dev/null 2>&1 || return 1
	[ "$(mtime "$1")" = "$m" ] && return 0
	echo "    reads moved the image's mtime from $m to $(mtime "$1")"
	return 1
}
write_moves_mtime() {
	m=$(mtime "$1")
	sleep 1.1
	# the block as it is, so that fio's data stays to be verified
	dd if="$DEV" of=/tmp/block bs=4k count=1 iflag=direct 2>/dev/null &&
		dd if=/tmp/block of="$DEV" bs=4k count=1 oflag=direct conv=notrunc 2>/dev/null ||
		return 1
	[ "$(mtime "$1")" != "$m" ] && return 0
	echo "    a write left the image's mtime at $m"
	return 1
}

mkdir -p /mnt4k /mntram
check disk-has-4k-sectors [ "$(blk vda logical_block_size)" = 4096 ]
check mkfs-on-4k-disk quiet mkfs.ext4 -q -F /dev/vda
check mount-4k-disk mount -t ext4 /dev/vda /mnt4k
cp big.qcow2 small.qcow2 odd.qcow2 /mnt4k/
if uq_open -q 2 /mnt4k/big.qcow2; then
	export FILE=$DEV
	check cache-none-by-default cache_is none
	check logical-block-size same_limit logical_block_size
	if [ "$UQ_MODE" != copy ]; then
		check dma-alignment same_limit dma_alignment
		check max-segments same_limit max_segments
		check max-segment-size same_limit max_segment_size
	fi
	check fio-write-verify-512-aligned-buffers quiet fio job.fio
	check reads-keep-image-mtime reads_keep_mtime /mnt4k/big.qcow2
	check write-moves-image-mtime write_moves_mtime /mnt4k/big.qcow2
	check close-none uq_close "$DEV"
fi
if uq_open --cache=writeback /mnt4k/big.qcow2; then
	export FILE=$DEV
	check cache-writeback cache_is writeback
	check writeback-512-byte-blocks [ "$(blk "${DEV#/dev/}" logical_block_size)" = 512 ]
	check fio-verify-writeback quiet fio --verify_only job.fio
	check close-writeback uq_close "$DEV"
fi
check small-clusters-fall-back falls_back /mnt4k/small.qcow2 "clusters are smaller"
check odd-size-falls-back falls_back /mnt4k/odd.qcow2 "not a multiple"
check mount-ramfs mount -t ramfs ram /mntram
cp big.qcow2 /mntram/
check ramfs-falls-back falls_back /mntram/big.qcow2 "refuses O_DIRECT"
check copy-to-share cp /mnt4k/big.qcow2 /share/big-after.qcow2
umount /mnt4k
check no-device-left no_ublk_devices
GUEST
vm_run

host_qemu_check qemu-img-check "$SHARE/big-after.qcow2"
host_fio_verify "$SHARE/big-after.qcow2"
vm_finish
