# SPDX-License-Identifier: MIT
#
# guest-lib.sh: the guest side of the daemon's VM tests (busybox sh).
# lib.sh copies it into the share and every guest script starts with
# ". /share/guest-lib.sh"; the images are in /share.
#
#   pass NAME / fail NAME WHY    one result line each ("vm: PASS NAME")
#   check NAME CMD...            pass if CMD succeeds, else fail
#   uq_open [OPTIONS] IMAGE      ublk-qcow open $UQ_OPEN_ARGS (the test's
#                                variant); sets DEV=/dev/ublkbN, fails unless
#                                it is a real block device running in the
#                                variant's data mode $UQ_MODE
#   dev_field DEV KEY            a string field of DEV in "ublk-qcow list
#                                --output=json" (mode, cache, state, ...)
#   uq_close DEV                 ublk-qcow close; fails unless DEV is gone
#   is_mounted DIR               true when a filesystem is mounted on DIR
#   no_ublk_devices              true when no /dev/ublkb* / /dev/ublkc* exist
#   refused RC PATTERN CMD...    CMD fails with exit RC and a message
#                                matching PATTERN, adding no device
#   start_udevd [RULE...]        udevd with our rules from the share
#   link_to LEAF DEV / no_link LEAF   /dev/ublk-qcow/LEAF leads to DEV / is gone
#   guest_finish                 exit 1 if anything failed
#
# Once a device is live the daemon logs to syslog: a busybox syslogd keeps
# it in $DAEMON_LOG, and a failed check shows the warnings and errors the
# daemon logged since the last failure.
#
# Trap (shared/ref/test-vm.md): writing to /dev/ublkbN when the device does
# not exist creates a regular file in devtmpfs and "works", so every helper
# checks that DEV is a block device before it is used.

# Debian's busybox shell runs its own applets before anything on PATH, and
# its blkdiscard and blockdev lack options the tests need: use these.
BLKDISCARD=/usr/bin/blkdiscard
BLOCKDEV=/usr/bin/blockdev

GUEST_FAILS=0
GUEST_PASSES=0
cd /share || exit 1
UQ_OPEN_ARGS= UQ_MODE=
. /share/variant.sh
# e2fsck looks for mounted filesystems here
[ -e /etc/mtab ] || ln -s /proc/mounts /etc/mtab

pass() {
	echo "vm: PASS $1"
	GUEST_PASSES=$((GUEST_PASSES + 1))
}

fail() {
	echo "vm: FAIL $1: $2"
	GUEST_FAILS=$((GUEST_FAILS + 1))
	show_daemon_log
}

DAEMON_LOG=/tmp/daemon.log
DAEMON_LOG_SHOWN=0
[ -S /dev/log ] || syslogd -O "$DAEMON_LOG" || echo "    no syslogd: the daemon's log is lost"

# The warnings and errors logged since the last look, indented.
show_daemon_log() {
	[ -f "$DAEMON_LOG" ] || return 0
	n=$(wc -l <"$DAEMON_LOG")
	tail -n "+$((DAEMON_LOG_SHOWN + 1))" "$DAEMON_LOG" |
		grep -E 'daemon\.(warn|err|crit|alert|emerg)' | sed 's/^/    syslog| /'
	DAEMON_LOG_SHOWN=$n
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

dev_field() {
	ublk-qcow list --output=json | tr -d '\n' | sed 's/},/}\n/g' |
		grep "\"device\":\"$1\"" | sed -n "s/.*\"$2\":\"\([^\"]*\)\".*/\1/p"
}

uq_open() {
	# shellcheck disable=SC2086 # no option or one
	DEV=$(ublk-qcow open $UQ_OPEN_ARGS "$@" 2>/tmp/open.err)
	rc=$?
	if [ $rc != 0 ]; then
		echo "    ublk-qcow open $UQ_OPEN_ARGS $* exited $rc:"
		sed 's/^/    | /' /tmp/open.err
		DEV=
		return 1
	fi
	if ! [ -b "$DEV" ]; then
		echo "    ublk-qcow open $* printed '$DEV', which is not a block device"
		DEV=
		return 1
	fi
	mode=$(dev_field "$DEV" mode)
	if [ -n "$UQ_MODE" ] && [ "$mode" != "$UQ_MODE" ]; then
		echo "    $DEV runs in mode '$mode', not '$UQ_MODE' as this variant wants"
		ublk-qcow close "$DEV"
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

# without --recoverable the kernel removes the block device of a dead server
bdev_goes_away() {
	i=0
	while [ -b "$DEV" ] && [ $i -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	! [ -b "$DEV" ]
}

# queue_tid N: the thread id of the daemon's queue N thread (ublk-qcow-qN)
queue_tid() {
	for t in /proc/$(pidof ublk-qcow)/task/*; do
		[ "$(cat "$t/comm")" = "ublk-qcow-q$1" ] && echo "${t##*/}"
	done
}

# queue_cpus N: the CPUs queue N's thread may run on (Cpus_allowed_list)
queue_cpus() {
	tid=$(queue_tid "$1")
	[ -n "$tid" ] && awk '/^Cpus_allowed_list/ { print $2 }' "/proc/$tid/status"
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

# wait_for SECONDS CMD...: CMD succeeds within SECONDS (polled every 0.1 s).
wait_for() {
	n=$(($1 * 10))
	shift
	while [ $n -gt 0 ]; do
		"$@" 2>/dev/null && return 0
		sleep 0.1
		n=$((n - 1))
	done
	"$@"
}

# A benchmark's figures mean nothing once the guest's clock has leapt (seen
# under software emulation): say so in a line the host side looks for.
bench_clock_check() {
	if dmesg | grep -q -i -e 'clocksource.*unstable' -e 'rcu.*stall' -e 'timekeeping watchdog'; then
		echo "bench: spoiled (the guest's clock jumped)"
	fi
}

# bench_disk MIB: ext4 on a RAM disk of MIB MiB (brd) at /bench, where the
# benchmarks keep their images: a block device's file system, as a real
# image has, rather than the RAM file system, where io_uring hands every
# O_DIRECT read and write of the daemon (and loop's) to a worker thread.
# Mounted without discard: the discard of a deleted image frees its RAM
# disk pages in a kernel worker for seconds after the rm, taking a CPU from
# whatever is measured next (allocating writes fell from 3,614 to 940 IOPS
# right after a 1 GiB image was deleted).  The RAM disk's memory is bounded
# by MIB either way.
bench_disk() {
	rmmod brd 2>/dev/null
	insmod /lib/modules/brd.ko rd_nr=1 rd_size=$(($1 * 1024)) &&
		mkfs.ext4 -q -E nodiscard /dev/ram0 && mkdir -p /bench && mount /dev/ram0 /bench ||
		{ fail bench-disk "no ext4 on a $1 MiB brd RAM disk"; return 1; }
	echo "bench: note images on ext4 on a $1 MiB RAM disk (brd)"
}

guest_finish() {
	echo "guest: $GUEST_PASSES passed, $GUEST_FAILS failed"
	[ "$GUEST_FAILS" = 0 ]
	exit $?
}

ublk_devices() {
	ls -d /dev/ublkb* /dev/ublkc* 2>/dev/null
}

# refused RC PATTERN CMD...: CMD exits with RC (any non-zero when RC is "x"),
# its stderr matches PATTERN (grep -i -E), and it left no ublk device behind
# (the set of /dev/ublk[bc]* is what it was before).
refused() {
	want=$1 pattern=$2
	shift 2
	before=$(ublk_devices)
	"$@" >/tmp/refused.out 2>/tmp/refused.err
	rc=$?
	if [ $rc = 0 ] || { [ "$want" != x ] && [ $rc != "$want" ]; }; then
		echo "    \$ $*: exit $rc, wanted $want (x: any non-zero)"
		sed 's/^/    | /' /tmp/refused.err | tail -n 5
		return 1
	fi
	if ! grep -q -i -E "$pattern" /tmp/refused.err; then
		echo "    \$ $*: the message does not match '$pattern':"
		sed 's/^/    | /' /tmp/refused.err | tail -n 5
		return 1
	fi
	echo "    $* -> exit $rc: $(head -n 1 /tmp/refused.err)"
	if [ "$(ublk_devices)" != "$before" ]; then
		echo "    devices before: $before; after: $(ublk_devices)"
		return 1
	fi
}

# start_udevd [RULE...]: udevd from the share (lib.sh's share_udev), with
# only our rules (default 60-ublk-qcow.rules); its libraries from the share
# too; /tmp/udev/udevadm beside it.
start_udevd() {
	[ -x /share/udev/bin/udevadm ] || { echo "    no udevadm in the share"; return 1; }
	mkdir -p /etc/udev/rules.d /run/udev /tmp/udev
	[ $# -gt 0 ] || set -- 60-ublk-qcow.rules
	for rule in "$@"; do
		cp "/share/udev/$rule" /etc/udev/rules.d/ || return 1
	done
	cp /share/udev/bin/udevadm /tmp/udev/udevadm
	cp /share/udev/bin/udevadm /tmp/udev/systemd-udevd
	cp /share/udev/lib/* /tmp/udev/
	export LD_LIBRARY_PATH=/tmp/udev
	/tmp/udev/systemd-udevd --daemon >/tmp/udevd.log 2>&1 || {
		sed 's/^/    | /' /tmp/udevd.log | tail -n 5
		return 1
	}
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ -e /run/udev/control ] && return 0
		sleep 0.5
	done
	echo "    udevd made no /run/udev/control"
	return 1
}

# link_to LEAF DEV: /dev/ublk-qcow/LEAF (NAME, or @USER/NAME) leads to DEV, right now.
link_to() {
	target=$(readlink -f "/dev/ublk-qcow/$1")
	[ "$target" = "$2" ] || { echo "    /dev/ublk-qcow/$1 leads to '$target', not $2"; return 1; }
}
# no_link LEAF: gone within 5 s (udev removes it with the device).
no_link() {
	for i in 1 2 3 4 5 6 7 8 9 10; do
		[ -e "/dev/ublk-qcow/$1" ] || [ -L "/dev/ublk-qcow/$1" ] || return 0
		sleep 0.5
	done
	echo "    /dev/ublk-qcow/$1 still there"
	return 1
}
