#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-service: "ublk-qcow service NAME" (the systemd unit's command) with a
# service manager's notify socket (tests/vm/notify-listen.c).
#
#   guest: UBLK_QCOW_CONF_DIR=/tmp/conf; vm1.conf (image, queues=2, the
#          variant's zero-copy=): the first datagram is READY=1, sent only
#          once /dev/ublkbN is a block device a direct read works on, with
#          "STATUS=vm1: /dev/ublkbN serves IMAGE (MODE mode, 2 queues)" and
#          MAINPID the daemon's; written data reads back; SIGTERM: STOPPING=1
#          is the last datagram, the daemon exits 0, /dev/ublkcN and
#          /dev/ublkbN go (20 s at most);
#          rec.conf (recoverable=yes): data written, the daemon SIGKILLed, a
#          read issued while it is dead, "service rec" again: READY=1 with
#          "recovered" in STATUS, the same device, the waiting read completes
#          with the data, the data intact; SIGTERM closes it;
#          vm1.conf again, SIGKILLed (no --recoverable): "service vm1" again
#          removes the dead device and opens a new one that works; after
#          SIGTERM no /dev/ublkc* or /dev/ublkb* is left (20 s at most);
#          rec.conf again, SIGKILLed, its device then deleted with its state
#          file put back (a state file that outlived its device): "service
#          rec" says the device is gone and opens anew (not a recover that
#          fails and is restarted for ever), the data is there, the stale
#          state file goes;
#          a bad conf (a bad value, no '=', a missing image= line) exits 2
#          naming file:line, adding no device; a missing conf names the file.
#   host:  qemu-img check of both images after the clean closes.
. "$(dirname "$0")/lib.sh"

vm_init
qemu-img create -q -f qcow2 "$SHARE/vm1.qcow2" 16M || exit 1
qemu-img create -q -f qcow2 "$SHARE/rec.qcow2" 16M || exit 1

vm_guest <<'GUEST'
export UBLK_QCOW_CONF_DIR=/tmp/conf
mkdir -p /tmp/conf
# images the daemon is killed on live in RAM (shared/ref/test-vm.md)
cp vm1.qcow2 /tmp/vm1.qcow2 && cp rec.qcow2 /tmp/rec.qcow2
ZC=
case $UQ_OPEN_ARGS in --zero-copy=*) ZC="zero-copy=${UQ_OPEN_ARGS#--zero-copy=}" ;; esac
printf '# test-service\nimage = /tmp/vm1.qcow2\n\nqueues=2\n%s\n' "$ZC" >/tmp/conf/vm1.conf
printf 'image=/tmp/rec.qcow2\nrecoverable=yes\n%s\n' "$ZC" >/tmp/conf/rec.conf
dd if=/dev/urandom of=/tmp/pat bs=64k count=16 status=none

got() {	# PATTERN: the notify log has a line matching it
	grep -q -E "$1" /tmp/notify.log
}
# start NAME: the listener, then "service NAME" with NOTIFY_SOCKET; SPID, and
# DEV once READY=1 came (1 when it did not within 60 s).
start() {
	[ -n "${LPID:-}" ] && kill "$LPID" 2>/dev/null
	rm -f /tmp/notify.sock /tmp/notify.log
	notify-listen /tmp/notify.sock /tmp/notify.log &
	LPID=$!
	wait_for 5 [ -S /tmp/notify.sock ] || { echo "    no listener socket"; return 1; }
	NOTIFY_SOCKET=/tmp/notify.sock ublk-qcow service "$1" >/tmp/svc.out 2>/tmp/svc.err &
	SPID=$!
	DEV=
	if ! wait_for 60 got '^READY=1$'; then
		echo "    no READY=1 within 60 s; service said:"
		sed 's/^/    | /' /tmp/svc.err | tail -n 10
		return 1
	fi
	DEV=$(sed -n 's/^STATUS=[^ ]* \(\/dev\/ublkb[0-9]*\) .*/\1/p' /tmp/notify.log | head -n 1)
	[ -b "$DEV" ] || { echo "    STATUS names '$DEV', not a block device"; return 1; }
}
first_is_ready() {
	[ "$(head -n 1 /tmp/notify.log)" = READY=1 ] ||
		{ echo "    first datagram:"; sed 's/^/    | /' /tmp/notify.log; return 1; }
}
status_is() {	# the STATUS line, exactly
	grep -qxF "STATUS=$1" /tmp/notify.log ||
		{ echo "    want STATUS=$1; got:"; sed 's/^/    | /' /tmp/notify.log; return 1; }
}
device_was_ready() {
	grep -qxF "DEVICE-AT-READY $DEV ok" /tmp/notify.log ||
		{ grep DEVICE-AT-READY /tmp/notify.log | sed 's/^/    | /'; return 1; }
}
mode_of_variant() {
	[ -n "$UQ_MODE" ] && echo "$UQ_MODE" || dev_field "$DEV" mode
}
write_pat() {	# DEV OFFSET-IN-64K
	dd if=/tmp/pat of="$1" bs=64k seek="$2" oflag=direct conv=fsync status=none
}
read_pat() {	# DEV OFFSET-IN-64K OUT
	dd if="$1" of="$3" bs=64k skip="$2" count=16 iflag=direct status=none
}
pat_at() {	# DEV OFFSET-IN-64K
	read_pat "$1" "$2" /tmp/back && cmp -s /tmp/pat /tmp/back ||
		{ echo "    $1 at $2 x 64k does not read back the pattern"; return 1; }
}
gone() {	# DEV: /dev/ublkbN and /dev/ublkcN both gone
	[ ! -e "$1" ] && [ ! -e "/dev/ublkc${1#/dev/ublkb}" ]
}
# stop: SIGTERM to the service: it exits 0 and its device goes within 20 s.
stop() {
	kill -TERM "$SPID"
	wait "$SPID"
	rc=$?
	[ $rc = 0 ] || { echo "    service exited $rc"; sed 's/^/    | /' /tmp/svc.err | tail -n 10; }
	wait_for 20 gone "$DEV" || echo "    $DEV or its char device still there after 20 s"
	[ $rc = 0 ] && gone "$DEV"
}
last_is_stopping() {
	last=$(grep -v -e '^--$' -e '^DEVICE-AT-READY' /tmp/notify.log | grep -v '^STATUS=' | tail -n 1)
	[ "$last" = STOPPING=1 ] || { echo "    datagrams:"; sed 's/^/    | /' /tmp/notify.log; return 1; }
}
none_left() {
	wait_for 20 no_ublk_devices
}

# --- vm1: ready, status, data, SIGTERM
if check service-ready start vm1; then
	check ready-is-first-datagram first_is_ready
	check device-readable-at-ready device_was_ready
	check status-text status_is "vm1: $DEV serves /tmp/vm1.qcow2 ($(mode_of_variant) mode, 2 queues)"
	check mainpid-is-daemon got "^MAINPID=$SPID$"
	check prints-device [ "$(cat /tmp/svc.out)" = "$DEV" ]
	check list-names-vm1 [ "$(dev_field "$DEV" name)" = vm1 ]
	check write-read write_pat "$DEV" 8
	check data-reads-back pat_at "$DEV" 8
	check sigterm-closes stop
	check stopping-sent last_is_stopping
	check stopping-status got "^STATUS=vm1: closing $DEV$"
fi

# --- rec: SIGKILL, IO while dead, service again recovers
if check recoverable-ready start rec; then
	RDEV=$DEV
	check rec-write write_pat "$RDEV" 4
	kill -KILL "$SPID"
	wait "$SPID" 2>/dev/null
	check rec-device-stays-after-kill [ -b "$RDEV" ]
	read_pat "$RDEV" 4 /tmp/while-dead &
	DD=$!
	sleep 1
	check read-waits-while-dead kill -0 "$DD"
	if check service-recovers start rec; then
		check recovered-same-device [ "$DEV" = "$RDEV" ]
		check recovered-status status_is \
			"rec: $DEV serves /tmp/rec.qcow2 ($(mode_of_variant) mode, 1 queue, recovered)"
		check recovered-device-readable device_was_ready
		check read-issued-while-dead-completes wait_for 30 sh -c "! kill -0 $DD"
		wait "$DD"
		check read-while-dead-ok [ $? = 0 ]
		check read-while-dead-data cmp -s /tmp/pat /tmp/while-dead
		check recovered-data-intact pat_at "$DEV" 4
		check recovered-sigterm-closes stop
	fi
fi

# --- vm1 again: SIGKILL without --recoverable, service again opens anew
if check service-ready-again start vm1; then
	KDEV=$DEV
	kill -KILL "$SPID"
	# reaped, and started again at once (systemd waits RestartSec more)
	wait "$SPID" 2>/dev/null
	if check service-after-kill start vm1; then
		check dead-device-removed sh -c "[ '$DEV' = '$KDEV' ] || ! [ -e '$KDEV' ]"
		check removal-said grep -q "without --recoverable: removing it" /tmp/svc.err
		check new-device-works write_pat "$DEV" 2
		check new-device-data pat_at "$DEV" 2
		check new-sigterm-closes stop
	fi
	check no-device-left none_left
fi

# --- rec again: its daemon killed, then its device deleted behind our back
# (close, with the state file put back): service opens anew, no recover loop
if check rec-ready-again start rec; then
	KDEV=$DEV
	kill -KILL "$SPID"
	wait "$SPID" 2>/dev/null
	KSTATE=/run/ublk-qcow/${KDEV#/dev/ublkb}.json
	cp "$KSTATE" /tmp/kept-state.json
	check dead-rec-closed quiet ublk-qcow close rec
	cp /tmp/kept-state.json "$KSTATE"
	if check service-without-device start rec; then
		check device-gone-said grep -q "the device is gone: opening anew" /tmp/svc.err
		check not-recovered sh -c "! grep -q recovered /tmp/notify.log"
		check anew-data-kept pat_at "$DEV" 4
		check anew-sigterm-closes stop
	fi
	check stale-state-gone [ ! -e "$KSTATE" ]
	check no-device-left-rec none_left
fi
[ -n "${LPID:-}" ] && kill "$LPID"

# --- bad conf files
printf 'image=/tmp/vm1.qcow2\nqueues=lots\n' >/tmp/conf/badval.conf
printf '# x\nimage /tmp/vm1.qcow2\n' >/tmp/conf/noeq.conf
printf 'queues=2\n' >/tmp/conf/noimg.conf
check bad-value refused 2 "/tmp/conf/badval.conf:2: invalid queue count 'lots'" \
	ublk-qcow service badval
check no-equals refused 2 "/tmp/conf/noeq.conf:2: 'image /tmp/vm1.qcow2' is not key=value" \
	ublk-qcow service noeq
check no-image refused 2 "/tmp/conf/noimg.conf: no image=PATH line" ublk-qcow service noimg
check missing-conf refused 2 "/tmp/conf/absent.conf: No such file" ublk-qcow service absent
check copy-images-back sh -c "cp /tmp/vm1.qcow2 vm1.qcow2 && cp /tmp/rec.qcow2 rec.qcow2"
GUEST
vm_run
host_qemu_check qemu-img-check-vm1 "$SHARE/vm1.qcow2" leaks-ok
host_qemu_check qemu-img-check-rec "$SHARE/rec.qcow2" leaks-ok
vm_finish
