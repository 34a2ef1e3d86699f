#!/bin/sh
# SPDX-License-Identifier: MIT
#
# demo-steps.sh UBLK_QCOW IMAGE MOUNTDIR: the steps of "make demo", on a
# machine with /dev/ublk-control (the host itself, or the test VM).
# POSIX sh, so it runs under busybox too. Prints each step; exit 0 when the
# file written before the close is there after the reopen.
set -u
uq=$1
img=$2
mnt=$3
msg="hello from ublk-qcow, written $(date -u '+%Y-%m-%d %H:%M:%S UTC')"

step() {
	echo
	echo "==> $*"
}

die() {
	echo "demo: FAILED: $*"
	[ -n "${dev:-}" ] && grep -q " $mnt " /proc/mounts && umount "$mnt"
	[ -n "${dev:-}" ] && "$uq" close "$dev"
	exit 1
}

open_dev() {
	step "$uq open $*"
	dev=$("$uq" open "$@") || die "ublk-qcow open failed"
	[ -b "$dev" ] || die "'$dev' is not a block device"
	echo "$dev"
	"$uq" list
}

close_dev() {
	step "$uq close $dev"
	"$uq" close "$dev" || die "ublk-qcow close failed"
	[ -e "$dev" ] && die "$dev still exists after close"
	echo "$dev is gone; the image holds everything"
	dev=
}

mkdir -p "$mnt" || die "cannot create $mnt"
open_dev "$img"
step "mkfs.ext4 $dev"
mkfs.ext4 -q -F "$dev" || die "mkfs.ext4 failed"
step "mount $dev $mnt; write hello.txt"
mount -t ext4 "$dev" "$mnt" || die "mount failed"
echo "$msg" >"$mnt/hello.txt" || die "writing $mnt/hello.txt failed"
cat "$mnt/hello.txt"
step "umount $mnt"
umount "$mnt" || die "umount failed"
close_dev

open_dev "$img"
step "mount $dev $mnt (read-only); read hello.txt back"
mount -t ext4 -o ro "$dev" "$mnt" || die "mount after reopen failed"
got=$(cat "$mnt/hello.txt") || die "hello.txt is missing after the reopen"
echo "$got"
umount "$mnt" || die "umount failed"
[ "$got" = "$msg" ] || die "hello.txt changed: wanted '$msg'"
close_dev
echo
echo "demo: OK: the file written before the close was there after the reopen"
