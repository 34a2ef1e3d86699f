#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-unprivileged: a user who is not root serves an image it owns
# (UBLK_F_UNPRIVILEGED_DEV), where the host allows it through the optional
# udev rule 70-ublk-qcow-unprivileged.rules; root's devices are untouched.
#
#   guest: users uq (1000, in group ublk) and other (1001, not in it), run
#          through tests/vm/run-as.c; XDG_RUNTIME_DIR=/run/user/1000.
#          Before the rule: open as uq is refused naming /dev/ublk-control
#          and the permission, exit 1, no device, nothing in uq's run dir.
#          udevd with 60-ublk-qcow.rules and the optional rule:
#          /dev/ublk-control is group ublk, mode 0660; "other" is still
#          refused the same way; --zero-copy=on, --zero-copy=register and
#          --recoverable are refused saying why (CAP_SYS_ADMIN, user
#          recovery), adding no device.  uq opens its image (copy mode): the
#          daemon runs as uid 1000, /dev/ublkbN and /dev/ublkcN are uq's,
#          udev-owner prints the owner for both nodes, udev-name prints
#          @uq/NAME and /dev/ublk-qcow/@uq/NAME leads to the device; a
#          name rewritten by the user in its state file to one that leaves
#          /dev/ublk-qcow gives no udev-name and no link; 4 MiB
#          of random data written through it (O_DIRECT) reads back equal;
#          fio, as uq, writes 8 MiB past them with crc32c verify (io_uring);
#          uq's list shows it (and its state file is in uq's run dir), root's
#          list does not; stats by name; close by name: device, link and
#          state file gone; a user daemon killed with SIGKILL: close removes
#          its dead device and files; no ublk device left.  host: the image passes
#          qemu-img check and holds the data written; a root device opened meanwhile
#          keeps /dev/ublk-qcow/NAME and root's nodes; fio --verify_only of
#          the image's raw conversion finds what fio wrote as uq.
. "$(dirname "$0")/lib.sh"

vm_init
qemu-img create -q -f qcow2 "$SHARE/user.qcow2" 16M || exit 1
qemu-img create -q -f qcow2 "$SHARE/rootdev.qcow2" 16M || exit 1
share_udev || echo "no udevadm on the host: the udev checks will fail"
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
# past the 4 MiB the round trip writes, which the host compares too
vm_fio_job user iodepth=16 bssplit=512/20:4k/50:64k/30 offset=4M size=8M

vm_guest <<'GUEST'
printf 'root:x:0:0:root:/root:/bin/sh\nuq:x:1000:1000:uq:/tmp:/bin/sh\nother:x:1001:1001:other:/tmp:/bin/sh\n' >/etc/passwd
printf 'root:x:0:\nublk:x:900:uq\nuq:x:1000:\nother:x:1001:\n' >/etc/group
mkdir -p /run/user/1000 /run/user/1001
chown 1000:1000 /run/user/1000
chown 1001:1001 /run/user/1001
chmod 0700 /run/user/1000 /run/user/1001
export XDG_RUNTIME_DIR=/run/user/1000	# root ignores it: its run dir is /run/ublk-qcow
as_uq() { run-as 1000 1000,900 "$@"; }
as_other() { XDG_RUNTIME_DIR=/run/user/1001 run-as 1001 1001 "$@"; }
cp user.qcow2 /tmp/user.qcow2 && chown 1000:1000 /tmp/user.qcow2
cp user.qcow2 /tmp/other.qcow2 && chown 1001:1001 /tmp/other.qcow2

owned_by() {	# PATH UID
	[ "$(stat -c %u "$1")" = "$2" ] || { echo "    $1: owner $(stat -c %u "$1"), not $2"; return 1; }
}
nothing_in_run_dir() {	# DIR: no state file, no name entry
	left=$(ls "$1"/*.json "$1"/names/* 2>/dev/null)
	[ -z "$left" ] || { echo "    left in $1: $left"; return 1; }
}
control_mode() {
	[ "$(stat -c '%a %G' /dev/ublk-control)" = "660 ublk" ] ||
		{ echo "    /dev/ublk-control: $(stat -c '%a %G' /dev/ublk-control)"; return 1; }
}
data_round_trip() {	# DEV: 4 MiB written as uq with O_DIRECT read back equal
	dd if=/dev/urandom of=/tmp/rand bs=1M count=4 status=none && chmod 0644 /tmp/rand &&
	as_uq dd if=/tmp/rand of="$1" bs=64k oflag=direct conv=fsync status=none &&
	as_uq dd if="$1" of=/tmp/back bs=64k count=64 iflag=direct status=none &&
	cmp /tmp/rand /tmp/back
}
udev_owner_is() {	# NODE: udev-owner (as root) prints uq's ids
	out=$(ublk-qcow udev-owner "$1" | tr '\n' ' ')
	[ "$out" = "UBLK_QCOW_OWNER_UID=1000 UBLK_QCOW_OWNER_GID=1000 " ] ||
		{ echo "    udev-owner $1: '$out'"; return 1; }
}

daemon_pid() {	# ID: the pid in uq's state file of device ID
	sed 's/.*"pid":\([0-9]*\).*/\1/' "/run/user/1000/ublk-qcow/$1.json"
}
udev_owner_none() {	# NODE: root's device: nothing printed, exit 1
	out=$(ublk-qcow udev-owner "$1")
	rc=$?
	[ $rc = 1 ] && [ -z "$out" ] || { echo "    udev-owner $1: '$out', exit $rc"; return 1; }
}

# Without the optional rule the control node is root's alone.
check refused-without-rule refused 1 "/dev/ublk-control: permission denied.*uid 1000" \
	as_uq ublk-qcow open /tmp/user.qcow2
check refused-leaves-nothing nothing_in_run_dir /run/user/1000/ublk-qcow

check udevd-runs start_udevd 60-ublk-qcow.rules 70-ublk-qcow-unprivileged.rules
/tmp/udev/udevadm trigger --action=add --sysname-match=ublk-control
/tmp/udev/udevadm settle
check control-node-for-group control_mode
check refused-outside-group refused 1 "/dev/ublk-control: permission denied" \
	as_other ublk-qcow open /tmp/other.qcow2
check zero-copy-on-refused refused 1 "zero-copy=on.*unprivileged.*CAP_SYS_ADMIN" \
	as_uq ublk-qcow open --zero-copy=on /tmp/user.qcow2
check zero-copy-register-refused refused 1 "zero-copy=register.*unprivileged.*CAP_SYS_ADMIN" \
	as_uq ublk-qcow open --zero-copy=register /tmp/user.qcow2
check recoverable-refused refused 1 "recoverable: not for an unprivileged.*user recovery" \
	as_uq ublk-qcow open --recoverable /tmp/user.qcow2

# root's device beside the user's: unchanged
if uq_open --name rootdev rootdev.qcow2; then
	ROOTDEV=$DEV
	check root-link link_to rootdev "$ROOTDEV"
	check root-node-stays-root owned_by "$ROOTDEV" 0
	check udev-owner-root-device udev_owner_none "${ROOTDEV#/dev/}"
fi

DEV=$(as_uq ublk-qcow open /tmp/user.qcow2 2>/tmp/open.err)
if [ $? = 0 ] && [ -b "$DEV" ]; then
	id=${DEV#/dev/ublkb}
	pass user-opens
	check daemon-runs-as-user [ "$(stat -c %u "/proc/$(daemon_pid "$id")")" = 1000 ]
	check block-node-is-users owned_by "$DEV" 1000
	check char-node-is-users owned_by "/dev/ublkc$id" 1000
	check udev-owner-block udev_owner_is "ublkb$id"
	check udev-owner-char udev_owner_is "ublkc$id"
	check udev-name-user [ "$(ublk-qcow udev-name "ublkb$id")" = "@uq/user" ]
	check user-link link_to @uq/user "$DEV"
	# the user's state file is the user's to write: a name that leaves
	# /dev/ublk-qcow must not become a link (root's udev-name refuses the file)
	ST=/run/user/1000/ublk-qcow/$id.json
	cp "$ST" /tmp/state.keep
	as_uq sed -i 's|"name":"user"|"name":"../../disk/by-label/evil"|' "$ST"
	check hostile-name-written grep -q 'by-label/evil' "$ST"
	check hostile-name-no-udev-name sh -c "! ublk-qcow udev-name ublkb$id"
	/tmp/udev/udevadm trigger --action=change "$DEV"
	/tmp/udev/udevadm settle
	check hostile-name-no-link sh -c "[ ! -e /dev/disk/by-label/evil ] && [ ! -L /dev/disk/by-label/evil ]"
	as_uq cp /tmp/state.keep "$ST"
	/tmp/udev/udevadm trigger --action=change "$DEV"
	/tmp/udev/udevadm settle
	check user-link-back link_to @uq/user "$DEV"
	check data-round-trip data_round_trip "$DEV"
	check user-fio-verify quiet as_uq env FILE="$DEV" ENGINE=io_uring fio job.fio
	check user-list-shows-it quiet sh -c "run-as 1000 1000,900 ublk-qcow list | grep -q '^$id *$DEV *user '"
	check user-list-copy-mode quiet sh -c "run-as 1000 1000,900 ublk-qcow list --output=json | grep -q '\"mode\":\"copy\"'"
	check root-list-not-users quiet sh -c "! ublk-qcow list | grep -q '$DEV'"
	check user-stats quiet as_uq ublk-qcow stats user
	check user-close quiet as_uq ublk-qcow close user
	check user-device-gone [ ! -e "$DEV" ]
	check user-link-gone no_link @uq/user
	check user-run-dir-empty nothing_in_run_dir /run/user/1000/ublk-qcow
	cp /tmp/user.qcow2 /share/user-after.qcow2 && cp /tmp/rand /share/rand
else
	fail user-opens "exit status, or '$DEV' is no block device: $(cat /tmp/open.err)"
fi
# A user's daemon killed with SIGKILL: its close removes the dead device
# (GET_DEV_INFO and DEL_DEV with the path prefix) and what it left.
DEV=$(as_uq ublk-qcow open --name killed /tmp/user.qcow2 2>/tmp/open.err)
if [ $? = 0 ] && [ -b "$DEV" ]; then
	id=${DEV#/dev/ublkb}
	kill -KILL "$(daemon_pid "$id")"
	sleep 0.5
	check killed-user-close quiet as_uq ublk-qcow close killed
	check killed-user-device-gone sh -c "[ ! -e $DEV ] && [ ! -e /dev/ublkc$id ]"
	check killed-user-run-dir-empty nothing_in_run_dir /run/user/1000/ublk-qcow
else
	fail killed-user-opens "$(cat /tmp/open.err)"
fi
check root-link-kept link_to rootdev "$ROOTDEV"
check root-close uq_close "$ROOTDEV"
check no-device-left no_ublk_devices
GUEST

vm_run
if [ -f "$SHARE/user-after.qcow2" ]; then
	host_check image-consistent qemu-img check -q "$SHARE/user-after.qcow2"
	host_check image-holds-data bash -c "qemu-img convert -O raw '$SHARE/user-after.qcow2' \
		'$WORK/after.raw' && cmp -n 4194304 '$SHARE/rand' '$WORK/after.raw'"
	host_fio_verify "$SHARE/user-after.qcow2"
fi
vm_finish
