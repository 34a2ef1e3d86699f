#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-ext4: a filesystem lives on /dev/ublkbN across a close and a reopen.
#
#   guest: mkfs.ext4 on the device, mount, write a tree of files (sizes
#          from 0 bytes to several MiB, odd lengths, many small files, a
#          symlink), record their checksums, sync, umount, close; reopen,
#          e2fsck -fn reports a clean filesystem, mount, every checksum
#          matches, umount, close;
#   host:  qemu-img check: no errors, no leaks; e2fsck -fn on qemu-img's
#          raw conversion of the image is clean too.
. "$(dirname "$0")/lib.sh"

vm_init
qemu-img create -q -f qcow2 "$SHARE/fs.qcow2" 256M || exit 1

vm_guest <<'GUEST'
make_tree() {
	mkdir -p "$1/a/b/c" "$1/many" || return 1
	: >"$1/empty"
	head -c 1 /dev/urandom >"$1/one-byte"
	head -c 4097 /dev/urandom >"$1/a/page-plus-one"
	head -c 1048579 /dev/urandom >"$1/a/b/mib-plus-three"
	head -c 6000000 /dev/urandom >"$1/a/b/c/six-mb"
	cp /bin/busybox "$1/a/busybox-copy"
	i=0
	while [ $i -lt 200 ]; do
		head -c $((i * 37 + 1)) /dev/urandom >"$1/many/f$i"
		i=$((i + 1))
	done
	ln -s a/b/mib-plus-three "$1/link"
}

sums() {
	(cd "$1" && find . -type f | sort | xargs md5sum && readlink link)
}

mkdir -p /mnt /tmp/src
if uq_open fs.qcow2; then
	check mkfs quiet mkfs.ext4 -q -F "$DEV"
	# each step needs the one before: a tree written beside a failed
	# mount would land on the guest's rootfs and "pass"
	check mount mount -t ext4 "$DEV" /mnt && is_mounted /mnt &&
		check write-tree make_tree /mnt/tree
	sums /mnt/tree >/tmp/sums.want
	check sync sync
	check umount umount /mnt
	check close uq_close "$DEV"
fi
if uq_open fs.qcow2; then
	check fsck-clean quiet e2fsck -fn "$DEV"
	check remount mount -t ext4 -o ro "$DEV" /mnt && is_mounted /mnt &&
		sums /mnt/tree >/tmp/sums.got &&
		check files-equal cmp -s /tmp/sums.want /tmp/sums.got
	[ "$(wc -l </tmp/sums.want)" -gt 200 ] || fail checksum-list "only $(wc -l </tmp/sums.want) lines"
	check umount-again umount /mnt
	check close-again uq_close "$DEV"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_qemu_check qemu-img-check "$SHARE/fs.qcow2"
if qemu-img convert -O raw "$SHARE/fs.qcow2" "$WORK/fs.raw"; then
	host_check e2fsck-qemu-raw e2fsck -fn "$WORK/fs.raw"
else
	host_fail qemu-img-convert "qemu-img convert -O raw failed"
fi
vm_finish
