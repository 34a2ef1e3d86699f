#!/bin/bash
# SPDX-License-Identifier: MIT
#
# demo.sh ("make demo"): serve a fresh qcow2 image as /dev/ublkbN, put ext4
# on it, write a file, close, reopen, and show the file is still there.
#
# On a host that has /dev/ublk-control (or can modprobe ublk_drv) the steps
# run right here, as root. Otherwise they run inside the test VM: Debian's
# 6.12 kernel booted under qemu with the real ublk driver, the image shared
# with the host over 9p. Either way the image ends up in DEMO_DIR
# (default tests/build/demo/demo.qcow2), and qemu-img checks it at the end.
VM_TESTS_REQUIRED=1		# the demo fails loudly rather than skipping
. "$(dirname "$0")/lib.sh"

DEMO_DIR=${DEMO_DIR:-$SRC_ROOT/tests/build/demo}
img=$DEMO_DIR/demo.qcow2

say() { echo "demo: $*"; }

host_has_ublk() {
	[ -c /dev/ublk-control ] && return 0
	[ "$(id -u)" = 0 ] && modprobe ublk_drv 2>/dev/null && [ -c /dev/ublk-control ]
}

mkdir -p "$DEMO_DIR" || exit 1
rm -f "$img"
say "creating a 1 GiB image: qcow-tool create $img 1G"
"$QCOW_TOOL_FAST" create "$img" 1G >/dev/null || exit 1

if host_has_ublk; then
	say "this host has /dev/ublk-control (kernel $(uname -r)): running natively"
	[ "$(id -u)" = 0 ] || { say "ublk devices need root: run 'sudo make demo'"; exit 1; }
	"$VM_DIR/demo-steps.sh" "$UBLK_QCOW" "$img" "$DEMO_DIR/mnt" || exit 1
else
	say "no ublk driver on this host (kernel $(uname -r), /dev/ublk-control missing)"
	vm_init
	say "running inside the test VM: Debian's $(cat "$KDIR/version") kernel under qemu, with ublk_drv loaded"
	cp "$img" "$SHARE/demo.qcow2"
	cp "$VM_DIR/demo-steps.sh" "$SHARE/"
	echo 'exec /bin/sh /share/demo-steps.sh ublk-qcow /share/demo.qcow2 /mnt' >"$SHARE/guest.sh"
	vm_initramfs
	say "booting the VM (software emulation: a few seconds)"
	"$VM_DIR/run-vm.sh" -k "$KDIR" -s "$SHARE" -T "${UBLK_QCOW_VM_TIMEOUT:-300}" "$INITRAMFS" |
		grep -a -v -e '^\[' -e 'SeaBIOS' -e 'Booting from' -e '^UBLK_QCOW_VM_EXIT=' -e $'\e'
	rc=${PIPESTATUS[0]}
	cp "$SHARE/demo.qcow2" "$img"
	[ "$rc" = 0 ] || { say "FAILED inside the VM (exit $rc)"; exit 1; }
fi

echo
say "back on the host: qemu-img check $img"
qemu-img check "$img" || { say "FAILED: qemu-img check"; exit 1; }
qemu-img info "$img" | sed -n '1,6p'
say "done; the image stays in $img"
