#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-bitmaps-flush: with --bitmaps=flush (the default) a guest FLUSH on
# an idle device leaves the image file's persistent dirty bitmaps
# consistent, so a copy of the file taken then serves an incremental
# backup; the next write marks them in use again before its data lands, and
# a crash leaves them in use.  --bitmaps=close keeps them in use until
# close, as QEMU.  qemu-img made the image with an enabled bitmap (64 KiB
# granularity) over some data.
#
#   guest: the guest has no qemu-img: it copies the image file while the
#          device is open (copy-N.qcow2 in the share), and the host checks
#          the copies afterwards:
#          copy-1  a 1 MiB write, fsync (the FLUSH);
#          copy-2  then a 4 KiB write, no flush;
#          copy-3  then fsync;
#          copy-4  then a write, no flush, SIGKILL of the daemon (close
#                  removes the dead device);
#          copy-5  a fresh copy of the original served --bitmaps=close:
#                  the 1 MiB write and fsync, then close;
#          list shows each device's mode; --bitmaps=bogus is refused (exit
#          2, naming the option) and adds no device;
#   host:  copy-1 and copy-3 pass qemu-img check, their bitmap is not in
#          use and its dirty ranges (qemu-nbd -B, nbdinfo --map) equal those
#          of a twin to which qemu-io did the same writes; copy-2, copy-4
#          and copy-5 have it in use (leaked clusters allowed); the closed
#          --bitmaps=close image has it consistent and equal to the twin's.
. "$(dirname "$0")/lib.sh"

command -v nbdinfo >/dev/null && command -v qemu-nbd >/dev/null ||
	vm_skip "missing packages: (nbdinfo: libnbd-bin) (qemu-nbd: qemu-utils)"
vm_init
M=$((1024 * 1024))
img=$SHARE/disk.qcow2
qemu-img create -q -f qcow2 "$img" 64M || exit 1
qemu-io -f qcow2 -c "write -q -P 0x11 0 8M" "$img" >/dev/null || exit 1
qemu-img bitmap --add -g 64K "$img" live || exit 1
cp "$img" "$SHARE/disk-close.qcow2"
# twin-1: the 1 MiB write (copy-1, and the --bitmaps=close image);
# twin-2: and the 4 KiB one (copy-3)
cp "$img" "$WORK/twin-1.qcow2"
qemu-io -f qcow2 -c "write -q -P 0x22 $((4 * M)) $M" "$WORK/twin-1.qcow2" >/dev/null || exit 1
cp "$WORK/twin-1.qcow2" "$WORK/twin-2.qcow2"
qemu-io -f qcow2 -c "write -q -P 0x33 $((20 * M)) 4096" "$WORK/twin-2.qcow2" >/dev/null ||
	exit 1

vm_guest <<'GUEST'
M=1048576
write_1m() {	# 0x22 over [4 MiB, 5 MiB)
	head -c $M /dev/zero | tr '\0' '\42' |
		dd of="$DEV" bs=1M seek=4 oflag=direct conv=notrunc status=none
}
write_4k() {	# 0x33 over [20 MiB, +4 KiB)
	head -c 4096 /dev/zero | tr '\0' '\63' |
		dd of="$DEV" bs=4096 seek=$((20 * 256)) oflag=direct conv=notrunc status=none
}
write_more() {	# 0x44 over [30 MiB, +64 KiB)
	head -c 65536 /dev/zero | tr '\0' '\104' |
		dd of="$DEV" bs=65536 seek=$((30 * 16)) oflag=direct conv=notrunc status=none
}
# fsync on the block device sends the FLUSH
flush() {
	dd if=/dev/null of="$DEV" conv=fsync,notrunc status=none
}
listed_as() {	# MODE: list shows the device live with --bitmaps=MODE
	[ "$(dev_field "$DEV" state)" = live ] && [ "$(dev_field "$DEV" bitmaps)" = "$1" ] || {
		echo "    list: $(ublk-qcow list --output=json)"
		return 1
	}
}

check bogus-mode-refused refused 2 "invalid --bitmaps 'bogus': want flush or close" \
	ublk-qcow open --bitmaps=bogus disk.qcow2
if uq_open disk.qcow2; then
	check listed-flush listed_as flush
	check write-1m write_1m
	check flush-1 flush
	check copy-1 cp disk.qcow2 copy-1.qcow2
	check write-4k write_4k
	check copy-2 cp disk.qcow2 copy-2.qcow2
	check flush-2 flush
	check copy-3 cp disk.qcow2 copy-3.qcow2
	check write-more write_more
	pid=$(pidof ublk-qcow)
	check sigkill kill -KILL $pid
	check block-device-goes-away bdev_goes_away
	check copy-4 cp disk.qcow2 copy-4.qcow2
	check close-cleans-up uq_close "$DEV"
fi
check no-device-left no_ublk_devices
if uq_open --bitmaps=close disk-close.qcow2; then
	check listed-close listed_as close
	check close-mode-write-1m write_1m
	check close-mode-flush flush
	check copy-5 cp disk-close.qcow2 copy-5.qcow2
	check close-mode-close uq_close "$DEV"
fi
check no-device-left-at-end no_ublk_devices
GUEST
vm_run

# consistent N IMG TWIN: what a FLUSH on an idle device leaves in the file
consistent() {
	host_qemu_check "$1-check" "$2"
	host_check "$1-not-in-use" host_bitmap_not_in_use "$2"
	host_check "$1-map-as-qemu" host_same_map "$2" "$3" live
	host_check "$1-same-content" qemu-img compare -q -f qcow2 -F qcow2 "$2" "$3"
}
# left_in_use N IMG: a copy no FLUSH covered (or --bitmaps=close's)
left_in_use() {
	host_qemu_check "$1-check" "$2" leaks-ok
	host_check "$1-in-use" host_bitmap_in_use "$2"
}
consistent copy-1 "$SHARE/copy-1.qcow2" "$WORK/twin-1.qcow2"
left_in_use copy-2 "$SHARE/copy-2.qcow2"
consistent copy-3 "$SHARE/copy-3.qcow2" "$WORK/twin-2.qcow2"
left_in_use copy-4 "$SHARE/copy-4.qcow2"
left_in_use copy-5 "$SHARE/copy-5.qcow2"
consistent close-mode-closed "$SHARE/disk-close.qcow2" "$WORK/twin-1.qcow2"
vm_finish
