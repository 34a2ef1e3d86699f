#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-demo: "make demo" (tests/vm/demo.sh) does what the README says: the
# file written on /dev/ublkbN is there after a close and a reopen, and the
# image it leaves checks clean with qemu-img.
. "$(dirname "$0")/lib.sh"

vm_init
out=$WORK/demo.out
DEMO_DIR=$WORK/demo bash "$VM_DIR/demo.sh" >"$out" 2>&1
rc=$?
sed 's/^/    | /' "$out"
if [ "$rc" = 0 ] && grep -q '^demo: OK' "$out"; then
	host_pass demo-runs
else
	host_fail demo-runs "demo.sh exited $rc"
fi
host_check demo-file-read-back grep -q '^hello from ublk-qcow' "$out"
host_qemu_check demo-image-check "$WORK/demo/demo.qcow2"
vm_finish
