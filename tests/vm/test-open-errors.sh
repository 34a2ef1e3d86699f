#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-open-errors: every way "open" can be refused gives a clear message
# and a non-zero exit, leaves no device behind and writes nothing.
#
#   guest: a missing image; an image whose header is corrupt (cluster_bits
#          31); an image using a feature outside the subset (extended L2);
#          a file that is not qcow2 at all; an image already served
#          read-write (opened again with a --name of its own, so that the
#          image's lock, not the name, refuses it); bad options (queues, depth, --zero-copy, --l2-cache,
#          unknown option, no image, two images); --zero-copy=on and
#          =register on a kernel without zero copy (6.12), and on one with
#          it, the mode each --zero-copy value gives; a caller who is not root (no
#          access to /dev/ublk-control; no run directory of its own); close of a
#          device that does not exist and of something that is not a
#          device; after all that, list shows only the one good device;
#          and last, with ublk_drv unloaded, a message saying what to load;
#   host:  none of the refused images changed.
. "$(dirname "$0")/lib.sh"

vm_init
qemu-img create -q -f qcow2 "$SHARE/good.qcow2" 16M || exit 1
qemu-img create -q -f qcow2 "$SHARE/corrupt.qcow2" 16M || exit 1
# cluster_bits (big-endian u32 at byte 20) = 31
printf '\x00\x00\x00\x1f' | dd of="$SHARE/corrupt.qcow2" bs=1 seek=20 conv=notrunc status=none
qemu-img create -q -f qcow2 -o extended_l2=on "$SHARE/extl2.qcow2" 16M || exit 1
head -c 1M /dev/urandom >"$SHARE/not-qcow2.img"
sums() { (cd "$SHARE" && sha256sum corrupt.qcow2 extl2.qcow2 not-qcow2.img); }
sums_before=$(sums)

vm_guest <<'GUEST'
check missing-image refused 1 "missing\.qcow2.*(no such file|not found)" ublk-qcow open missing.qcow2
check corrupt-header refused 1 "corrupt\.qcow2.*cluster" ublk-qcow open corrupt.qcow2
check unsupported-feature refused 1 "extl2\.qcow2.*extended L2" ublk-qcow open extl2.qcow2
check not-qcow2 refused 1 "not-qcow2\.img.*(qcow2|magic)" ublk-qcow open not-qcow2.img
# --zero-copy: refused where the kernel has none (6.12); elsewhere each
# value gives the mode it names
open_in_mode() {	# --zero-copy value, the mode list must show
	UQ_MODE= uq_open --zero-copy="$1" good.qcow2 || return 1
	mode=$(dev_field "$DEV" mode)
	echo "    --zero-copy=$1: $DEV runs in mode $mode"
	uq_close "$DEV" || return 1
	[ "$mode" = "$2" ]
}
case $(uname -r) in
6.12.*)
	check zero-copy-on-6.12 refused 1 "zero.copy" ublk-qcow open --zero-copy=on good.qcow2
	check zero-copy-register-on-6.12 refused 1 "zero.copy" \
		ublk-qcow open --zero-copy=register good.qcow2
	check zero-copy-auto-on-6.12 open_in_mode auto copy
	;;
*)
	check zero-copy-on open_in_mode on auto-buf-reg
	check zero-copy-auto open_in_mode auto auto-buf-reg
	check zero-copy-register open_in_mode register zero-copy
	check zero-copy-off open_in_mode off copy
	;;
esac
check zero-queues refused 2 "queue" ublk-qcow open -q 0 good.qcow2
check huge-depth refused 2 "depth" ublk-qcow open -d 5000 good.qcow2
check bad-zero-copy-mode refused 2 "zero-copy" ublk-qcow open --zero-copy=maybe good.qcow2
check bad-l2-cache refused 2 "l2-cache" ublk-qcow open --l2-cache=lots good.qcow2
check unknown-option refused 2 "usage" ublk-qcow open --frobnicate good.qcow2
check no-image refused 2 "IMAGE" ublk-qcow open
check two-images refused 2 "IMAGE" ublk-qcow open good.qcow2 good.qcow2
check unknown-command refused 2 "unknown command" ublk-qcow frobnicate

# not root: the image is readable, /dev/ublk-control is not
echo "tester:x:1000:1000::/tmp:/bin/sh" >>/etc/passwd
echo "tester:x:1000:" >>/etc/group
# (unprivileged devices: test-unprivileged): refused naming the node and the
# permission; without a run directory of its own, refused saying so first
mkdir -p /tmp/tester-run && chown 1000:1000 /tmp/tester-run
check not-root refused 1 "/dev/ublk-control: permission denied.*uid 1000" su tester -c \
	"XDG_RUNTIME_DIR=/tmp/tester-run ublk-qcow open --read-only /share/good.qcow2"
check not-root-no-run-dir refused 1 "no run directory for uid 1000" su tester -c \
	"unset XDG_RUNTIME_DIR; ublk-qcow open --read-only /share/good.qcow2"

if uq_open good.qcow2; then
	check already-open refused 1 "image is in use" ublk-qcow open --name good-2 good.qcow2
	check already-open-read-only refused 1 "image is in use" \
		ublk-qcow open --read-only --name good-2 good.qcow2
	check list-shows-one sh -c "[ \$(ublk-qcow list --output=json | grep -c '\"device\"') = 1 ]"
	check close-unknown-id refused 1 "no ublk-qcow device 7" ublk-qcow close 7
	check close-not-a-device refused 2 "not a device" ublk-qcow close /dev/sda
	check close-good uq_close "$DEV"
fi
check no-device-left no_ublk_devices
# last: without the driver
if rmmod ublk_drv; then
	check no-driver refused 1 "driver not loaded.*modprobe ublk_drv" ublk-qcow open good.qcow2
else
	fail no-driver "rmmod ublk_drv failed"
fi
GUEST
vm_run

if [ "$(sums)" = "$sums_before" ]; then
	host_pass refused-images-unchanged
else
	host_fail refused-images-unchanged "a refused image changed"
fi
host_qemu_check good-image-check "$SHARE/good.qcow2"
vm_finish
