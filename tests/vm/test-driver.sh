#!/bin/bash
# test-driver.sh: prove the test VM can run the real ublk driver.
#
# Boots a Debian kernel under qemu (6.12, or the one TEST_VARIANT or
# VM_KERNEL names: see fetch-kernel.sh and lib.sh; run-vm.sh) and
# checks in the guest that ublk_drv is loaded and /dev/ublk-control is the
# misc char device (10:N); then the guest writes a file to the 9p share
# that the host checks, which is how later tests move images in and out.
#
# Exit 0 pass, 77 skip, anything else fail.  Skips only when qemu or the
# kernel package cannot be had, and never when VM_TESTS_REQUIRED=1 or
# CI=true: there a missing VM is a failure.
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KERNEL=${TEST_VARIANT:-${VM_KERNEL:-6.12}}
KERNEL=${KERNEL%%-*}

skip() {
	if [ "${VM_TESTS_REQUIRED:-0}" = 1 ] || [ "${CI:-}" = true ]; then
		echo "vm: FAIL setup: $* (VM tests are required here)"
		exit 1
	fi
	echo "SKIP: VM tests need qemu-system-x86_64 and Debian's $KERNEL kernel package: $*"
	exit 77
}

missing=""
command -v qemu-system-x86_64 >/dev/null || missing+=" qemu-system-x86"
command -v cpio >/dev/null || missing+=" cpio"
command -v xz >/dev/null || missing+=" xz-utils"
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || missing+=" busybox-static"
[ -z "$missing" ] || skip "missing packages:$missing"

start=$EPOCHREALTIME
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

KDIR=$("$HERE/fetch-kernel.sh" "$KERNEL") || skip "fetch-kernel.sh could not get the $KERNEL kernel"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ublk-qcow-vmtest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir "$WORK/share"
# A fresh token shows the guest read this run's share, not a stale file.
token=$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')
echo "$token" >"$WORK/share/token"

cat >"$WORK/guest.sh" <<'GUEST'
fail=0
check() {	# name, then the command that must succeed
	name=$1
	shift
	if "$@"; then
		echo "vm: PASS $name"
	else
		echo "vm: FAIL $name"
		fail=1
	fi
}
control_is_misc() {
	[ -c /dev/ublk-control ] || return 1
	# Misc devices are major 10; the minor is dynamic.
	dev=$(cat /sys/class/misc/ublk-control/dev) || return 1
	echo "ublk-control is char $dev"
	case $dev in 10:*) return 0 ;; esac
	return 1
}
write_share() {
	[ -f /share/token ] || return 1
	{ cat /share/token; uname -r; } >/share/from-guest
}
check driver-loads grep -q '^ublk_drv ' /proc/modules
check control-node control_is_misc
check share-write write_share
exit $fail
GUEST

kstart=$EPOCHREALTIME
"$HERE/build-initramfs.sh" -k "$KDIR" -t "$WORK/guest.sh" "$WORK/initramfs.gz" 2>/dev/null ||
	{ echo "vm: FAIL build-initramfs"; exit 1; }
bstart=$EPOCHREALTIME
"$HERE/run-vm.sh" -q -k "$KDIR" -s "$WORK/share" -T "${UBLK_QCOW_VM_TIMEOUT:-300}" \
	-l "$WORK/console.log" "$WORK/initramfs.gz"
rc=$?
boot=$(since "$bstart")
# -o: the first line can carry the firmware's screen-clearing escapes.
label="[$(cut -d+ -f1 "$KDIR/version")]"
grep -a -o 'vm: .*' "$WORK/console.log" | sed "s/\$/ $label/"
if [ "$rc" != 0 ]; then
	echo "vm: FAIL guest (exit $rc); console log follows"
	sed 's/^/    /' "$WORK/console.log" | tail -n 60
	exit 1
fi

# The guest's write must be visible on the host after poweroff.
want=$(printf '%s\n' "$token")
got=$(head -n 1 "$WORK/share/from-guest" 2>/dev/null)
if [ "$got" != "$want" ]; then
	echo "vm: FAIL share-read-back (host read '${got}', wanted '$want') $label"
	exit 1
fi
echo "vm: PASS share-read-back (guest kernel $(sed -n 2p "$WORK/share/from-guest")) $label"
echo "vm: timing: kernel fetch $(awk -v a="$start" -v b="$kstart" 'BEGIN { printf "%.1f", b - a }') s," \
	"initramfs $(awk -v a="$kstart" -v b="$bstart" 'BEGIN { printf "%.1f", b - a }') s," \
	"vm run $boot s, total $(since "$start") s"
exit 0
