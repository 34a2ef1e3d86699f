# shellcheck shell=bash
# SPDX-License-Identifier: MIT
# Shared helpers for the interop scripts (sourced, bash). Run from the repo root.
#
#   QCOW_TOOL              qcow-tool to test (default tools/qcow-tool)
#   SEED                   PRNG seed (default: time); always printed
#   QEMU_TESTS_REQUIRED=1  or CI=true: missing qemu-img/qemu-io is a failure, not a skip
#   KEEP_TMP=1             keep the scratch directory

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
	echo "lib.sh is sourced by the interop tests, not a test itself"
	exit 77
fi

QCOW_TOOL="${QCOW_TOOL:-tools/qcow-tool}"
FAILS=0
TEST_NAME="$(basename "$0" .sh)"

skip() {
	echo "SKIP $TEST_NAME: $*"
	exit 77
}

die() {
	echo "FAIL $TEST_NAME: $*" >&2
	exit 1
}

# Record a failure and keep going, so one run shows every mismatch.
fail() {
	echo "FAIL: $*" >&2
	FAILS=$((FAILS + 1))
	if [ "$FAILS" -ge 50 ]; then
		die "too many failures"
	fi
}

finish() {
	if [ "$FAILS" -ne 0 ]; then
		echo "$TEST_NAME: $FAILS failure(s) (SEED=$SEED)" >&2
		exit 1
	fi
	if [ "${CHECKS:-0}" -eq 0 ]; then
		die "no checks ran"
	fi
	echo "$TEST_NAME: ok ($CHECKS checks, SEED=$SEED)"
	exit 0
}

CHECKS=0
# check DESCRIPTION CMD... : the command must succeed.
check() {
	local what="$1"
	shift
	CHECKS=$((CHECKS + 1))
	if ! "$@"; then
		fail "$what"
	fi
	return 0        # never trip set -e: failures are counted
}

# expect_rc WANT DESCRIPTION CMD... : the command must exit with WANT.
expect_rc() {
	local want="$1" what="$2" rc=0
	shift 2
	CHECKS=$((CHECKS + 1))
	"$@" >"$TMP/last.out" 2>&1 || rc=$?
	if [ "$rc" -ne "$want" ]; then
		fail "$what: exit $rc, want $want"
		sed 's/^/    | /' "$TMP/last.out" | head -20 >&2
	fi
	return 0
}

# shellcheck disable=SC2120 # extra programs to require are optional
require_qemu() {
	local p
	for p in qemu-img qemu-io "$@"; do
		if ! command -v "$p" >/dev/null 2>&1; then
			if [ "${QEMU_TESTS_REQUIRED:-0}" = 1 ] || [ "${CI:-}" = true ]; then
				die "$p not found (QEMU_TESTS_REQUIRED/CI set)"
			fi
			skip "$p not found"
		fi
	done
}

require_tool() {
	[ -x "$QCOW_TOOL" ] || die "qcow-tool not found at '$QCOW_TOOL' (build it or set QCOW_TOOL)"
}

setup() {
	SEED="${SEED:-$(( $(date +%s) % 1000000007 ))}"
	RANDOM=$SEED
	echo "$TEST_NAME: SEED=$SEED QCOW_TOOL=$QCOW_TOOL"
	TMP="$(mktemp -d "${TMPDIR:-/tmp}/qcow-$TEST_NAME.XXXXXX")"
	if [ "${KEEP_TMP:-0}" = 1 ]; then
		trap 'echo "kept $TMP"' EXIT
	else
		trap 'rm -rf "$TMP"' EXIT
	fi
}

# rand N: sets R to a number in [0, N), N < 2^30, from the seeded bash
# PRNG (a variable, not output: $(...) would run it in a subshell and the
# parent's sequence would never advance).
rand() {
	R=$(( ((RANDOM << 15) | RANDOM) % $1 ))
}

# create_img PATH SIZE CLUSTER_SIZE REFCOUNT_BITS COMPAT: with qcow-tool.
tool_create() {
	"$QCOW_TOOL" create -q -f qcow2 -o "cluster_size=$3,refcount_bits=$4,compat=$5" "$1" "$2"
}

qemu_create() {
	qemu-img create -q -f qcow2 -o "cluster_size=$3,refcount_bits=$4,compat=$5${6:+,$6}" "$1" "$2"
}

# qemu_zeros_image IMG [QEMU-IO-ARGS...]: a 16 MiB qcow2 image (64k clusters)
# of data and zeros stored every way qemu-io stores them: zero clusters
# (write -z, with and without -u), a discard, written zeros, a short write in
# a fresh cluster and a zero write of less than a cluster; then the extra
# qemu-io arguments (more -c commands).
qemu_zeros_image() {
	local img="$1"
	shift
	qemu-img create -q -f qcow2 -o cluster_size=65536 "$img" 16M
	qemu-io -f qcow2 -c 'write -P 0x5a 0 3M' -c 'write -z 64k 128k' -c 'write -z -u 1M 192k' \
		-c 'discard 2M 64k' -c 'write -P 0 2560k 64k' -c 'write -P 7 12345k 7k' \
		-c 'write -z 15M 1536' "$@" "$img" >/dev/null
}

# Exit status of a command, without tripping set -e.
rc_of() {
	local rc=0
	"$@" >/dev/null 2>&1 || rc=$?
	echo "$rc"
}

have_jq() {
	command -v jq >/dev/null 2>&1
}

# Big-endian unsigned integer of N bytes at OFFSET of FILE.
read_be() {
	local file="$1" off="$2" n="$3" hex
	hex=$(od -An -v -tx1 -j "$off" -N "$n" "$file" | tr -d ' \n')
	echo $(( 16#${hex:-0} ))
}

# Write VALUE as an N-byte big-endian integer at OFFSET of FILE.
write_be() {
	local file="$1" off="$2" n="$3" val="$4" i esc=""
	for ((i = n - 1; i >= 0; i--)); do
		esc+=$(printf '\\x%02x' $(( (val >> (8 * i)) & 255 )))
	done
	printf '%b' "$esc" | dd of="$file" bs=1 seek="$off" conv=notrunc status=none
}

# seeded_bytes N: N pseudo-random bytes on stdout, reproducible from SEED.
# (Used on the left of a pipe, i.e. in a subshell: the bytes follow from the
# PRNG state at the call, which the call does not advance for its caller.)
seeded_bytes() {
	rand 1000000000
	LC_ALL=C awk -v seed="$R" -v n="$1" \
		'BEGIN { srand(seed); for (i = 0; i < n; i++) printf "%c", int(rand() * 256) }'
}

# Header fields of a qcow2 FILE, read from the file itself.
cluster_size_of() {
	echo $(( 1 << $(read_be "$1" 20 4) ))
}

header_length_of() {
	if [ "$(read_be "$1" 4 4)" -ge 3 ]; then
		read_be "$1" 100 4
	else
		echo 72
	fi
}

# ext_list FILE: one line per header extension, "TYPE(hex) LENGTH PAYLOAD_OFFSET",
# then "end OFFSET" for the end marker.
ext_list() {
	local f="$1" off t len cs
	cs=$(cluster_size_of "$f")
	off=$(header_length_of "$f")
	while [ $((off + 8)) -le "$cs" ]; do
		t=$(read_be "$f" "$off" 4)
		len=$(read_be "$f" $((off + 4)) 4)
		if [ "$t" -eq 0 ]; then
			echo "end $off"
			return 0
		fi
		printf '%08x %d %d\n' "$t" "$len" $((off + 8))
		off=$((off + 8 + (len + 7) / 8 * 8))
	done
}

# ext_offset FILE TYPE(hex): where the payload of the first extension of
# TYPE starts (fails when there is none).
ext_offset() {
	local off
	off=$(ext_list "$1" | awk -v t="$2" '$1 == t { print $3; exit }')
	[ -n "$off" ] && echo "$off"
}

# Persistent dirty bitmaps, read through qemu (bitmaps.sh, bitmap-cmd.sh).
# dirty_maps IMG OUT NAME...: the dirty ranges of each bitmap NAME, as
# qemu exports them, into OUT.NAME (one qemu-nbd serving them all).
dirty_maps() {
	local img="$1" out="$2" sock="$2.sock" pid="$2.pid" b
	shift 2
	local args=()
	for b in "$@"; do
		args+=(-B "$b")
	done
	rm -f "$sock" "$pid"
	# --fork returns once it serves
	qemu-nbd --fork --pid-file="$pid" -t -r -k "$sock" "${args[@]}" -f qcow2 "$img" ||
		{ echo "qemu-nbd failed on $img"; return 0; }
	for b in "$@"; do
		nbdinfo --map="qemu:dirty-bitmap:$b" "nbd+unix:///?socket=$sock" >"$out.$b" ||
			echo "nbdinfo failed" >"$out.$b"
	done
	# gone before the next writer opens the image (it holds qemu's lock)
	kill "$(cat "$pid")" 2>/dev/null || true
	for _ in $(seq 100); do
		kill -0 "$(cat "$pid")" 2>/dev/null || break
		sleep 0.05
	done
}

# bitmaps_of IMG: name and flags of each bitmap, in directory order.
bitmaps_of() {
	qemu-img info -U --output=json "$1" |
		jq -c '[."format-specific".data.bitmaps // [] | .[] | [.name, .flags, .granularity]]'
}

# twin_io Q O OPS...: the same qemu-io -c commands through qemu-io on Q and
# qcow-tool io on O.
twin_io() {
	local q="$1" o="$2"
	shift 2
	local args=() op
	for op in "$@"; do
		args+=(-c "$op")
	done
	qemu-io -f qcow2 "${args[@]}" "$q" >/dev/null
	expect_rc 0 "$(basename "$o"): qcow-tool io" "$QCOW_TOOL" io -f qcow2 "${args[@]}" "$o"
}

# twin_bitmaps_compare NAME Q O MAPPED...: both twins hold the same bitmaps; the named
# ones (enabled, or disabled but consistent) export the same dirty ranges.
twin_bitmaps_compare() {
	local name="$1" q="$2" o="$3" b
	shift 3
	expect_rc 0 "$name: qemu-img check" qemu-img check -f qcow2 "$o"
	CHECKS=$((CHECKS + 1))
	[ "$(bitmaps_of "$q")" = "$(bitmaps_of "$o")" ] ||
		fail "$name: bitmaps differ: qemu $(bitmaps_of "$q"), ours $(bitmaps_of "$o")"
	dirty_maps "$q" "$TMP/q" "$@" &
	dirty_maps "$o" "$TMP/o" "$@"
	wait
	for b in "$@"; do
		CHECKS=$((CHECKS + 1))
		if ! cmp -s "$TMP/q.$b" "$TMP/o.$b"; then
			fail "$name: bitmap $b: dirty ranges differ (qemu, then ours)"
			diff "$TMP/q.$b" "$TMP/o.$b" | head -20 >&2 || true
		fi
		CHECKS=$((CHECKS + 1))
		grep -Eq ' (clean|dirty)$' "$TMP/o.$b" || fail "$name: bitmap $b: no map"
	done
}
