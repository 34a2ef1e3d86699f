#!/bin/bash
# run-vm.sh: boot the test VM once and return the guest test's exit code.
#
# usage: run-vm.sh [-k KERNEL_DIR] [-s SHARE_DIR] [-T SECONDS] [-l LOG] [-q]
#                  [-a KERNEL_ARGS] INITRAMFS [-- QEMU_ARGS...]
#
#   INITRAMFS   from build-initramfs.sh
#   -k DIR      kernel dir from fetch-kernel.sh (default: run it)
#   -s DIR      host directory the guest mounts at /share over 9p (images
#               in, results out); default: none
#   -T SECONDS  wall-clock limit for the whole VM (default
#               $UBLK_QCOW_VM_TIMEOUT or 600)
#   -l LOG      console log (default: a temporary file, removed on success)
#   -q          do not copy the console to stdout (the log tail is still
#               printed on failure)
#   -a ARGS     extra kernel command line
#
# Exit status: the guest's /test.sh exit code, read from the
# "UBLK_QCOW_VM_EXIT=<n>" line that the guest's /init prints; 1 when that
# line is missing (boot failure, kernel panic, timeout), with the log tail.
#
# UBLK_QCOW_VM_MEM (MiB, default 2048) and UBLK_QCOW_VM_SMP (default 2)
# size the guest.
#
# Acceleration: software emulation (TCG) unless UBLK_QCOW_VM_ACCEL=kvm.
# KVM is not chosen just because /dev/kvm opens: on the project's machines
# /dev/kvm exists (nested) but qemu cannot run a guest on it, which
# shows up as a hang rather than an error.  UBLK_QCOW_VM_ACCEL=auto uses
# KVM when /dev/kvm is read-writable.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KDIR=""
SHARE=""
TIMEOUT=${UBLK_QCOW_VM_TIMEOUT:-600}
LOG=""
QUIET=0
APPEND=""
MARKER=UBLK_QCOW_VM_EXIT

log() { echo "run-vm: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '3,16p' "$0" >&2; exit 2; }

while getopts k:s:T:l:qa:h opt; do
	case $opt in
	k) KDIR=$OPTARG ;;
	s) SHARE=$OPTARG ;;
	T) TIMEOUT=$OPTARG ;;
	l) LOG=$OPTARG ;;
	q) QUIET=1 ;;
	a) APPEND=$OPTARG ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
INITRD=$1
shift
[ "${1:-}" = "--" ] && shift

command -v qemu-system-x86_64 >/dev/null ||
	die "qemu-system-x86_64 missing (apt-get install qemu-system-x86)"
[ -f "$INITRD" ] || die "initramfs $INITRD not found"
[ -n "$KDIR" ] || KDIR=$("$HERE/fetch-kernel.sh")
[ -f "$KDIR/vmlinuz" ] || die "no vmlinuz in $KDIR"

ACCEL=${UBLK_QCOW_VM_ACCEL:-tcg}
case $ACCEL in
auto)
	ACCEL=tcg
	if [ -r /dev/kvm ] && [ -w /dev/kvm ]; then ACCEL=kvm; fi
	;;
kvm|tcg) ;;
*) die "UBLK_QCOW_VM_ACCEL must be tcg, kvm or auto" ;;
esac
if [ "$ACCEL" = kvm ]; then
	accel=(-accel kvm -cpu host)
else
	accel=(-accel tcg -cpu max)
fi

KEEP_LOG=1
if [ -z "$LOG" ]; then
	LOG=$(mktemp "${TMPDIR:-/tmp}/ublk-qcow-vm.XXXXXX.log")
	KEEP_LOG=0
fi

qemu_args=(
	-machine q35 "${accel[@]}"
	-m "${UBLK_QCOW_VM_MEM:-2048}" -smp "${UBLK_QCOW_VM_SMP:-2}"
	-nographic -no-reboot
	# No NIC and no VGA: nothing uses them and their option ROMs and
	# probing cost boot time under emulation.
	-nic none -vga none
	-kernel "$KDIR/vmlinuz" -initrd "$INITRD"
	# panic=-1 reboots at once on a panic, and -no-reboot turns that
	# into qemu exiting: a crashed guest ends the run instead of
	# hanging until the timeout.  oops=panic does the same for oopses.
	-append "console=ttyS0 quiet panic=-1 oops=panic $APPEND"
)
if [ -n "$SHARE" ]; then
	[ -d "$SHARE" ] || die "share directory $SHARE not found"
	qemu_args+=(-virtfs "local,path=$SHARE,mount_tag=share,security_model=none")
fi

start=$EPOCHREALTIME
# A guest kernel that panics while it boots (seen rarely under software
# emulation, before any test ran) is booted again, up to twice; a run that
# got as far as the test is never repeated.
for boot in 1 2 3; do
	set +e
	# The serial console is qemu's stdout; strip the CRs so the log greps.
	timeout -k 10 "$TIMEOUT" qemu-system-x86_64 "${qemu_args[@]}" "$@" </dev/null 2>&1 |
		tr -d '\r' |
		if [ "$QUIET" = 1 ]; then cat >"$LOG"; else tee "$LOG"; fi
	qemu_rc=${PIPESTATUS[0]}
	set -e
	if grep -aq "UBLK_QCOW_VM_TEST_START" "$LOG" || ! grep -aq "Kernel panic" "$LOG"; then
		break
	fi
	log "the guest kernel panicked while booting (boot $boot of 3); booting again"
	grep -a -m 3 -e "RIP:" -e "Kernel panic" "$LOG" | sed 's/^/    /' >&2
done
elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')

rc=$(grep -a -o "^$MARKER=[0-9]*" "$LOG" | tail -n 1 | cut -d= -f2 || true)
if [ -z "$rc" ]; then
	if [ "$qemu_rc" = 124 ] || [ "$qemu_rc" = 137 ]; then
		log "timed out after $TIMEOUT s"
	else
		log "qemu exited with $qemu_rc"
	fi
	log "guest printed no $MARKER line; last lines of $LOG:"
	tail -n 40 "$LOG" | sed 's/^/    /' >&2
	exit 1
fi
log "guest test exit code $rc after ${elapsed} s"
[ "$KEEP_LOG" = 1 ] || [ "$rc" != 0 ] || rm -f "$LOG"
[ "$rc" = 0 ] || log "console log: $LOG"
exit "$rc"
