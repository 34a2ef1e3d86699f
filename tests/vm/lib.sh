# shellcheck shell=bash
# SPDX-License-Identifier: MIT
#
# lib.sh: the host side of the daemon's VM tests (sourced by tests/vm/test-*.sh).
#
# Each test boots Debian's 6.12 kernel under qemu once (fetch-kernel.sh,
# run-vm.sh) with one shared initramfs: busybox, ublk-qcow, qcow-tool, fio,
# the ext4 tools and blkdiscard.  The test's guest half is a script the host writes
# into the 9p share together with guest-lib.sh; the initramfs's /test.sh
# only runs /share/guest.sh.  Images are prepared on the host with qemu-img
# and qemu-io, served in the guest by the real ublk driver, and checked on
# the host again with qemu-img after the guest powered off.
#
# Every check prints one line, "vm: PASS name" or "vm: FAIL name: why",
# guest side and host side alike; vm_finish exits 1 if any failed.
#
#   vm_init                    skip rules, kernel, scratch dir $WORK, share $SHARE
#   vm_fio_job NAME OPT=VAL... the fio verify job both sides run ($SHARE/job.fio)
#   vm_guest <<'EOF' ... EOF   the guest half (sh, guest-lib.sh already sourced)
#   vm_run                     boot, run it, print its result lines ($VM_APPEND:
#                              more kernel command line; VM_QEMU_ARGS: an
#                              array of more qemu arguments, disks say)
#   host_check NAME CMD...     a host-side check
#   host_fio_verify IMAGE      fio --verify_only of the job on qemu-img's raw conversion
#   host_sum / host_unchanged  a file is byte-identical after the VM ran
#   vm_finish                  exit status from every result line
#   share_udev                 udevadm, its libraries and our udev rules into $SHARE/udev
#
# Variant: TEST_VARIANT (run-tests.sh sets it from "test-x.sh@VARIANT") is
# KERNEL or KERNEL-DATA: KERNEL is 6.12 or new (fetch-kernel.sh), DATA is the
# data mode every open in the guest asks for: none (the kernel's best:
# copy on 6.12, auto-buf-reg on new), copy (--zero-copy=off) or zero-copy
# (--zero-copy=register: zero copy with a REGISTER_IO_BUF per request).
# uq_open in the guest checks that the device runs in the expected mode,
# and every result line ends with "[KERNEL-VERSION MODE]".  Without
# TEST_VARIANT: $VM_KERNEL, else 6.12.
#
# Environment: UBLK_QCOW (the daemon, default src/ublk-qcow), UBLK_QCOW_ASAN
# (its sanitizer build, default tests/build/asan/ublk-qcow-asan), QCOW_TOOL_FAST
# (default tools/qcow-tool), UBLK_QCOW_VM_TIMEOUT (seconds, default 300),
# VM_TESTS_REQUIRED=1 or CI=true (a VM that cannot run is a failure, not a
# skip), KEEP_TMP=1 (keep $WORK).

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	echo "lib.sh is sourced by the VM tests, not a test itself"
	exit 77
fi
set -uo pipefail
# mkfs.ext4, e2fsck and blkdiscard live in sbin
export PATH=$PATH:/usr/sbin:/sbin

VM_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRC_ROOT=$(cd "$VM_DIR/../.." && pwd)
TEST_NAME=$(basename "$0" .sh)
UBLK_QCOW=${UBLK_QCOW:-$SRC_ROOT/src/ublk-qcow}
# the ASan+UBSan build of the daemon (make check builds it), when there is one
UBLK_QCOW_ASAN=${UBLK_QCOW_ASAN:-$SRC_ROOT/tests/build/asan/ublk-qcow-asan}
QCOW_TOOL_FAST=${QCOW_TOOL_FAST:-$SRC_ROOT/tools/qcow-tool}
VM_FAILS=0
VM_PASSES=0
VM_QEMU_ARGS=()

VM_VARIANT=${TEST_VARIANT:-${VM_KERNEL:-6.12}}
VM_KERNEL=${VM_VARIANT%%-*}
VM_DATA=
[ "$VM_VARIANT" = "$VM_KERNEL" ] || VM_DATA=${VM_VARIANT#*-}
# vm_variant: the open option and the mode the daemon must report.
vm_variant() {
	case $VM_KERNEL in 6.12|new) ;; *) echo "vm: FAIL setup: unknown kernel in variant '$VM_VARIANT'"; exit 1 ;; esac
	case $VM_KERNEL-$VM_DATA in
	6.12-|6.12-copy) VM_OPEN_ARGS=; VM_MODE=copy ;;
	new-) VM_OPEN_ARGS=; VM_MODE=auto-buf-reg ;;
	new-copy) VM_OPEN_ARGS=--zero-copy=off; VM_MODE=copy ;;
	new-zero-copy) VM_OPEN_ARGS=--zero-copy=register; VM_MODE=zero-copy ;;
	*) echo "vm: FAIL setup: variant '$VM_VARIANT' is not one the tests know"; exit 1 ;;
	esac
}
vm_variant

# What the guest can run besides busybox: the daemon and the tools the
# tests drive the device with.
VM_BINARIES=(fio mkfs.ext4 e2fsck blkdiscard blockdev qemu-io qemu-img)

vm_skip() {
	if [ "${VM_TESTS_REQUIRED:-0}" = 1 ] || [ "${CI:-}" = true ]; then
		echo "vm: FAIL setup: $* (VM tests are required here)"
		exit 1
	fi
	echo "SKIP: $TEST_NAME needs a ublk-capable test VM: $*"
	exit 77
}

vm_init() {
	local missing="" b
	command -v qemu-system-x86_64 >/dev/null || missing+=" qemu-system-x86"
	command -v qemu-img >/dev/null || missing+=" qemu-utils"
	command -v cpio >/dev/null || missing+=" cpio"
	command -v xz >/dev/null || missing+=" xz-utils"
	for b in "${VM_BINARIES[@]}"; do
		PATH=$PATH:/usr/sbin:/sbin command -v "$b" >/dev/null || missing+=" ($b)"
	done
	[ -z "$missing" ] || vm_skip "missing packages:$missing"
	[ -x "$UBLK_QCOW" ] || { echo "vm: FAIL setup: $UBLK_QCOW not built (run make)"; exit 1; }
	KDIR=$("$VM_DIR/fetch-kernel.sh" "$VM_KERNEL") ||
		vm_skip "fetch-kernel.sh could not get the $VM_KERNEL kernel"
	VM_LABEL="$(cat "$KDIR/version" | cut -d+ -f1) $VM_MODE"
	WORK=$(mktemp -d "${TMPDIR:-/tmp}/ublk-qcow-$TEST_NAME.XXXXXX")
	SHARE=$WORK/share
	mkdir "$SHARE"
	printf 'UQ_OPEN_ARGS="%s"\nUQ_MODE="%s"\n' "$VM_OPEN_ARGS" "$VM_MODE" >"$SHARE/variant.sh"
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		echo "scratch directory: $WORK"
	else
		trap 'rm -rf "$WORK"' EXIT
	fi
}

# The shared initramfs, rebuilt only when something that goes in changes.
vm_initramfs() {
	local cache=$SRC_ROOT/tests/build/vm key stub b paths=("$UBLK_QCOW" "$QCOW_TOOL_FAST")
	[ -x "$UBLK_QCOW_ASAN" ] && paths+=("$UBLK_QCOW_ASAN")
	# the guest-side helpers make check builds from tests/vm/*.c
	for b in "$SRC_ROOT"/tests/build/vm-bin/*; do
		[ -x "$b" ] && paths+=("$b")
	done
	for b in "${VM_BINARIES[@]}"; do
		paths+=("$(PATH=$PATH:/usr/sbin:/sbin command -v "$b")")
	done
	# the names too: the guest runs each by its file name
	key=$({ cat "${paths[@]}" "$VM_DIR/guest-init.sh" "$VM_DIR/build-initramfs.sh" \
		"$KDIR/modules.load"; printf '%s\n' "${paths[@]##*/}"; } | sha256sum | cut -c1-16)
	INITRAMFS=$cache/initramfs-$VM_KERNEL-$key.gz
	[ -f "$INITRAMFS" ] && return 0
	mkdir -p "$cache"
	rm -f "$cache/initramfs-$VM_KERNEL-"*.gz
	stub=$cache/test-stub.sh
	printf '#!/bin/sh\n# the test itself comes in through the share\nexec /bin/sh /share/guest.sh\n' >"$stub"
	"$VM_DIR/build-initramfs.sh" -k "$KDIR" -t "$stub" "$INITRAMFS.tmp" "${paths[@]}" \
		2>&1 | tail -n 3 >&2
	[ -f "$INITRAMFS.tmp" ] || { echo "vm: FAIL setup: build-initramfs.sh failed"; exit 1; }
	mv "$INITRAMFS.tmp" "$INITRAMFS"
}

# The guest half, from stdin.
vm_guest() {
	{
		echo ". /share/guest-lib.sh"
		cat
		echo "guest_finish"
	} >"$SHARE/guest.sh"
	cp "$VM_DIR/guest-lib.sh" "$SHARE/guest-lib.sh"
}

# Boot the VM, run guest.sh, print its "vm:" lines. Returns the guest's exit code.
vm_run() {
	local rc log=$WORK/console.log start=$EPOCHREALTIME
	vm_initramfs
	"$VM_DIR/run-vm.sh" -q -k "$KDIR" -s "$SHARE" -T "${UBLK_QCOW_VM_TIMEOUT:-300}" \
		-a "${VM_APPEND:-}" -l "$log" "$INITRAMFS" -- "${VM_QEMU_ARGS[@]}"
	rc=$?
	# -o: the first line can carry the firmware's screen-clearing escapes.
	grep -a -o 'vm: .*' "$log" | sed "s/\$/ [$VM_LABEL]/" | tee "$WORK/results" || true
	VM_PASSES=$((VM_PASSES + $(grep -c '^vm: PASS' "$WORK/results")))
	VM_FAILS=$((VM_FAILS + $(grep -c '^vm: FAIL' "$WORK/results")))
	if [ "$rc" != 0 ]; then
		echo "vm: FAIL guest (exit $rc) [$VM_LABEL]; console log tail:"
		grep -a -v '^vm: ' "$log" | tail -n 60 | sed 's/^/    /'
		VM_FAILS=$((VM_FAILS + 1))
	fi
	echo "vm: ran in $(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }') s"
	return "$rc"
}

# vm_fio_job NAME OPTION=VALUE...: $SHARE/job.fio, a random-write job that
# verifies with crc32c, seeded by $SEED, for the guest (FILE=/dev/ublkbN,
# ENGINE=io_uring) and later the host (FILE=a raw conversion, ENGINE=psync,
# fio --verify_only) alike. No verify state files are left behind.
vm_fio_job() {
	local name=$1 opt
	shift
	{
		echo "[$name]"
		# shellcheck disable=SC2016 # fio expands these, from the environment
		printf '%s\n' 'filename=${FILE}' 'ioengine=${ENGINE}'
		echo "direct=1"
		echo "rw=randwrite"
		echo "randseed=$SEED"
		echo "verify=crc32c"
		echo "verify_fatal=1"
		echo "verify_dump=0"
		echo "verify_state_save=0"
		for opt in "$@"; do echo "$opt"; done
	} >"$SHARE/job.fio"
}

host_pass() { echo "vm: PASS host:$1 [$VM_LABEL]"; VM_PASSES=$((VM_PASSES + 1)); }
host_fail() { echo "vm: FAIL host:$1: $2 [$VM_LABEL]"; VM_FAILS=$((VM_FAILS + 1)); }

# host_check NAME CMD...: the command must succeed; its output is shown on failure.
host_check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		host_pass "$name"
	else
		host_fail "$name" "$* failed"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
	fi
}

# qemu-img check: no corruption; leaks (exit 3) allowed only with "leaks-ok".
host_qemu_check() {
	local name=$1 img=$2 allow=${3:-} out rc
	out=$(qemu-img check "$img" 2>&1)
	rc=$?
	if [ "$rc" = 0 ] || { [ "$rc" = 3 ] && [ "$allow" = leaks-ok ]; }; then
		host_pass "$name"
	else
		host_fail "$name" "qemu-img check $(basename "$img") exited $rc"
		printf '%s\n' "$out" | tail -n 20 | sed 's/^/    /'
	fi
}

# Persistent dirty bitmaps, as qemu's own tools see them.
# host_bitmap_in_use IMG: 0 a bitmap is in use, 1 none is, 2 no answer;
# shows the flags.
host_bitmap_in_use() {
	local info
	info=$(qemu-img info --output=json "$1") || return 2
	echo "$info" | grep -A 4 '"flags"'
	echo "$info" | grep -q '"in-use"'
}
host_bitmap_not_in_use() {
	host_bitmap_in_use "$1"
	[ $? = 1 ]
}
# host_dirty_map IMG BITMAP: the bitmap's dirty ranges, as qemu exports them
host_dirty_map() {
	local sock=$WORK/nbd.sock pid=$WORK/nbd.pid out rc=0
	rm -f "$sock" "$pid"
	qemu-nbd --fork --pid-file="$pid" -t -r -k "$sock" -B "$2" -f qcow2 "$1" || return 1
	out=$(nbdinfo --map="qemu:dirty-bitmap:$2" "nbd+unix:///?socket=$sock") || rc=1
	kill "$(cat "$pid")" 2>/dev/null
	echo "$out"
	return $rc
}
# host_same_map IMG TWIN BITMAP: the bitmap's dirty ranges in IMG are those
# in TWIN (which qemu-io wrote), and not empty
host_same_map() {
	local ours theirs
	ours=$(host_dirty_map "$1" "$3") && theirs=$(host_dirty_map "$2" "$3") || return 1
	echo "ours:"; echo "$ours"; echo "qemu's:"; echo "$theirs"
	[ -n "$ours" ] && [ "$ours" = "$theirs" ]
}

# host_sum FILE / host_unchanged NAME FILE SUM: FILE is byte for byte what
# it was when host_sum printed SUM (an image served read-only).
host_sum() { sha256sum <"$1"; }
host_unchanged() {
	if [ "$(host_sum "$2")" = "$3" ]; then
		host_pass "$1"
	else
		host_fail "$1" "$(basename "$2") changed while served read-only"
	fi
}

# host_fio_verify IMAGE: QEMU's reader sees what the guest's vm_fio_job wrote
# (fio --verify_only on qemu-img's raw conversion of IMAGE).
host_fio_verify() {
	if qemu-img convert -O raw "$1" "$WORK/fio-verify.raw"; then
		host_check fio-verify-qemu-raw env FILE="$WORK/fio-verify.raw" ENGINE=psync \
			fio --verify_only "$SHARE/job.fio"
	else
		host_fail qemu-img-convert "qemu-img convert -O raw $(basename "$1") failed"
	fi
	rm -f "$WORK/fio-verify.raw"
}

vm_finish() {
	if [ "$VM_FAILS" -ne 0 ]; then
		echo "$TEST_NAME [$VM_LABEL]: $VM_FAILS check(s) failed, $VM_PASSES passed"
		exit 1
	fi
	if [ "$VM_PASSES" -eq 0 ]; then
		echo "$TEST_NAME [$VM_LABEL]: no checks ran"
		exit 1
	fi
	echo "$TEST_NAME [$VM_LABEL]: all $VM_PASSES checks passed"
	exit 0
}

# udevadm and the libraries it needs into $SHARE/udev (bin, lib), and the
# rules (src/system/*.rules.in, optional/ too) with the guest's daemon path:
# 0, or 1 when there is no udevadm (test-names, test-unprivileged).
share_udev() {
	local udevadm=${UDEVADM:-} cache=$SRC_ROOT/tests/build/udev lib rule
	[ -n "$udevadm" ] || udevadm=$(PATH=$PATH:/usr/sbin:/sbin:/lib/systemd command -v udevadm)
	if [ -z "$udevadm" ] && [ ! -x "$cache/root/bin/udevadm" ]; then
		mkdir -p "$cache"
		(cd "$cache" && apt-get download udev >/dev/null 2>&1 &&
			dpkg-deb -x udev_*.deb root) || true
	fi
	[ -n "$udevadm" ] || udevadm=$cache/root/bin/udevadm
	[ -x "$udevadm" ] || return 1
	mkdir -p "$SHARE/udev/bin" "$SHARE/udev/lib"
	cp -L "$udevadm" "$SHARE/udev/bin/udevadm"
	for lib in $(ldd "$udevadm" | grep -o '/[^ ]*'); do
		cp -L "$lib" "$SHARE/udev/lib/"
	done
	for rule in "$SRC_ROOT"/src/system/*.rules.in "$SRC_ROOT"/src/system/optional/*.rules.in; do
		sed 's|@SBINDIR@|/usr/bin|g' "$rule" >"$SHARE/udev/$(basename "$rule" .in)"
	done
}
