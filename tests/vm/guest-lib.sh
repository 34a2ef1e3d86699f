# SPDX-License-Identifier: MIT
#
# guest-lib.sh: the guest side of the daemon's VM tests (busybox sh).
# lib.sh copies it into the share and every guest script starts with
# ". /share/guest-lib.sh"; the images are in /share.
#
#   pass NAME / fail NAME WHY    one result line each ("vm: PASS NAME")
#   check NAME CMD...            pass if CMD succeeds, else fail
#   uq_open [OPTIONS] IMAGE      ublk-qcow open; sets DEV=/dev/ublkbN, fails
#                                unless it is a real block device
#   uq_close DEV                 ublk-qcow close; fails unless DEV is gone
#   is_mounted DIR               true when a filesystem is mounted on DIR
#   no_ublk_devices              true when no /dev/ublkb* / /dev/ublkc* exist
#   guest_finish                 exit 1 if anything failed
#
# Trap (shared/ref/test-vm.md): writing to /dev/ublkbN when the device does
# not exist creates a regular file in devtmpfs and "works", so every helper
# checks that DEV is a block device before it is used.

GUEST_FAILS=0
GUEST_PASSES=0
cd /share || exit 1
# e2fsck looks for mounted filesystems here
[ -e /etc/mtab ] || ln -s /proc/mounts /etc/mtab

pass() {
	echo "vm: PASS $1"
	GUEST_PASSES=$((GUEST_PASSES + 1))
}

fail() {
	echo "vm: FAIL $1: $2"
	GUEST_FAILS=$((GUEST_FAILS + 1))
}

# Seconds since boot, with hundredths.
uptime_s() {
	cut -d' ' -f1 /proc/uptime
}

check() {
	name=$1
	shift
	t0=$(uptime_s)
	if "$@"; then
		pass "$name ($(awk -v a="$t0" -v b="$(uptime_s)" 'BEGIN { printf "%.1f s", b - a }'))"
	else
		fail "$name" "$* failed"
	fi
}

# Run a command, keeping its output in /tmp/out for a later look.
quiet() {
	"$@" >/tmp/out 2>&1
	rc=$?
	[ $rc = 0 ] || { echo "    \$ $*"; sed 's/^/    | /' /tmp/out | tail -n 20; }
	return $rc
}

uq_open() {
	DEV=$(ublk-qcow open "$@" 2>/tmp/open.err)
	rc=$?
	if [ $rc != 0 ]; then
		echo "    ublk-qcow open $* exited $rc:"
		sed 's/^/    | /' /tmp/open.err
		DEV=
		return 1
	fi
	if ! [ -b "$DEV" ]; then
		echo "    ublk-qcow open $* printed '$DEV', which is not a block device"
		DEV=
		return 1
	fi
	return 0
}

uq_close() {
	quiet ublk-qcow close "$1" || return 1
	if [ -e "$1" ]; then
		echo "    $1 still exists after close"
		return 1
	fi
	return 0
}

# busybox has no mountpoint(1)
is_mounted() {
	grep -q " $1 " /proc/mounts
}

no_ublk_devices() {
	for d in /dev/ublkb* /dev/ublkc*; do
		[ -e "$d" ] && { echo "    left behind: $d"; return 1; }
	done
	return 0
}

guest_finish() {
	echo "guest: $GUEST_PASSES passed, $GUEST_FAILS failed"
	[ "$GUEST_FAILS" = 0 ]
	exit $?
}
