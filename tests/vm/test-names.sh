#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-names: devices have names (open --name, the image's by default) and
# numbers asked for (--id); every command takes a name where it takes a
# device; udev gives each device the link /dev/ublk-qcow/NAME.
#
#   guest: udevd runs with src/system/60-ublk-qcow.rules (the host's udevadm,
#          or Debian's udev package unpacked, with their libraries, through
#          the share); vm1.qcow2 opens as "vm1" (the default), vm2.qcow2 as
#          "web" (--name), vm3.qcow2 as "seven" on /dev/ublkb7 (--id 7); list
#          shows the names; /dev/ublk-qcow/NAME leads to each device as soon
#          as open returned; udev-name prints a device's name and nothing
#          (exit 1) for a device it does not serve; a name in use (given with
#          --name, or the default of another image called vm1.qcow2: no vm1-2,
#          the message names the holder and --name), a device number in use
#          and a bad name are clear errors that add no device; that other
#          vm1.qcow2 opens with --name; stats and close by name; a closed
#          device's name and link are gone and the name is free again; a
#          non-recoverable daemon killed with SIGKILL leaves a stale name
#          entry that does not block a new open; a --recoverable daemon killed
#          with SIGKILL is recovered by name, keeps its name, device and link,
#          and closes by the link's path; a recoverable device whose name
#          another open took while its daemon was dead: recover is refused
#          naming the taker's device, and works once that one is closed.
#
# Without udevadm (UDEVADM=path, PATH, or tests/build/udev from "apt-get
# download udev") the link checks fail with a message saying so.
. "$(dirname "$0")/lib.sh"

vm_init
for img in vm1 vm2 vm3 other plain rec; do
	qemu-img create -q -f qcow2 "$SHARE/$img.qcow2" 16M || exit 1
done
share_udev || echo "no udevadm on the host: the link checks will fail"

vm_guest <<'GUEST'
name_of() {
	dev_field "$1" name
}
listed_as() {	# DEV NAME: the human list's row for DEV names it NAME
	ublk-qcow list | grep -q "^[0-9]* *$1 *$2 " ||
		{ echo "    list:"; ublk-qcow list | sed 's/^/    | /'; return 1; }
}
udev_name_is() {	# KERNEL-NAME NAME
	out=$(ublk-qcow udev-name "$1")
	rc=$?
	[ $rc = 0 ] && [ "$out" = "$2" ] || { echo "    udev-name $1: '$out', exit $rc"; return 1; }
}
udev_name_none() {
	out=$(ublk-qcow udev-name "$1")
	rc=$?
	[ $rc = 1 ] && [ -z "$out" ] || { echo "    udev-name $1: '$out', exit $rc"; return 1; }
}

check udevd-runs start_udevd
if uq_open vm1.qcow2; then
	DEV1=$DEV
	check link-when-open-returns-default link_to vm1 "$DEV1"
fi
if uq_open --name web vm2.qcow2; then
	DEV2=$DEV
	check link-when-open-returns-named link_to web "$DEV2"
fi
if uq_open --id 7 --name seven vm3.qcow2; then
	DEV3=$DEV
	check id-asked-for [ "$DEV3" = /dev/ublkb7 ]
fi
check default-name [ "$(name_of "$DEV1")" = vm1 ]
check given-name [ "$(name_of "$DEV2")" = web ]
check list-shows-vm1 listed_as "$DEV1" vm1
check list-shows-web listed_as "$DEV2" web
check list-shows-seven listed_as "$DEV3" seven
check udev-name-prints-name udev_name_is ublkb7 seven
check udev-name-not-ours udev_name_none ublkb99
check name-in-use refused 1 "name 'web' is in use by $DEV2" \
	ublk-qcow open --name web other.qcow2
# another image whose default name is vm1's: refused like a --name clash,
# naming the holder and --name; no device added, vm1 keeps its name
cp other.qcow2 /tmp/vm1.qcow2
check default-name-in-use refused 1 \
	"name 'vm1' is in use by $DEV1 \(pid [0-9]+\): open this image with --name NAME" \
	ublk-qcow open /tmp/vm1.qcow2
check default-clash-keeps-name [ "$(name_of "$DEV1")" = vm1 ]
check default-clash-keeps-link link_to vm1 "$DEV1"
if uq_open --name vm1-copy /tmp/vm1.qcow2; then
	check default-clash-opens-with-name [ "$(name_of "$DEV")" = vm1-copy ]
	check close-default-clash-named uq_close "$DEV"
fi
check id-in-use refused 1 "device 7 is in use" ublk-qcow open --id 7 --name x other.qcow2
check bad-name refused 2 "invalid --name '\.x'" ublk-qcow open --name .x other.qcow2
check id-like-name refused 2 "look like a device id" ublk-qcow open --name 12 other.qcow2
check stats-by-name quiet sh -c "ublk-qcow stats web | grep -q '^$DEV2 (device'"
check stats-unknown-name refused 1 "no ublk-qcow device named 'nobody'" ublk-qcow stats nobody
check close-by-name quiet ublk-qcow close web
check closed-device-gone [ ! -e "$DEV2" ]
check closed-link-gone no_link web
check closed-name-unknown refused 1 "no ublk-qcow device named 'web'" ublk-qcow close web
if uq_open --name web other.qcow2; then
	check name-free-after-close link_to web "$DEV"
	check close-reused-name uq_close "$DEV"
fi
check close-default-name quiet ublk-qcow close vm1
check close-id-named quiet ublk-qcow close seven

# A daemon killed without --recoverable: its stale name entry blocks nothing.
if uq_open --name gone plain.qcow2; then
	dead=$DEV
	kill -KILL "$(pidof ublk-qcow)"
	sleep 0.5
	if uq_open --name gone other.qcow2; then
		check stale-name-taken-over [ "$(name_of "$DEV")" = gone ]
		check close-stale-taker uq_close "$DEV"
	else
		fail stale-name-taken-over "open --name gone failed after its holder was killed"
	fi
	check close-dead-by-id quiet ublk-qcow close "$dead"
fi

# --recoverable: killed, recovered by name, same name, device and link.
if cp rec.qcow2 /tmp/rec.qcow2 && uq_open --recoverable --name keep /tmp/rec.qcow2; then
	pid=$(pidof ublk-qcow)
	kill -KILL "$pid"
	sleep 0.5
	check device-stays-after-kill [ -b "$DEV" ]
	check recover-by-name quiet ublk-qcow recover keep
	new=$(pidof ublk-qcow)
	check recovered-by-new-daemon [ -n "$new" -a "$new" != "$pid" ]
	check recovered-keeps-name [ "$(name_of "$DEV")" = keep ]
	check recovered-keeps-link link_to keep "$DEV"
	check recovered-serves dd if="$DEV" of=/dev/null bs=4k count=16 iflag=direct status=none
	check recover-live-refused refused 1 "being served" ublk-qcow recover keep
	check close-by-link-path uq_close /dev/ublk-qcow/keep
	check recovered-link-gone no_link keep
fi

# A recoverable device whose name another device took while its daemon was
# dead: recover by id is refused, naming the taker; once that closes, it works.
if uq_open --recoverable --name shared /tmp/rec.qcow2; then
	dead=$DEV
	kill -KILL "$(pidof ublk-qcow)"
	sleep 0.5
	if uq_open --name shared other.qcow2; then
		taker=$DEV
		check recover-refused-name-taken refused 1 "name 'shared' is in use by $taker" \
			ublk-qcow recover "$dead"
		check close-taker uq_close "$taker"
	fi
	check recover-after-taker-closed quiet ublk-qcow recover "$dead"
	check recovered-has-name [ "$(name_of "$dead")" = shared ]
	check recovered-link link_to shared "$dead"
	check close-recovered uq_close "$dead"
fi
check no-device-left no_ublk_devices
GUEST
vm_run
vm_finish
