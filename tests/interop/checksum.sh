#!/bin/bash
# SPDX-License-Identifier: MIT
#
# qcow-tool checksum against an independent referee: the Python program
# printed in doc/checksum.md (taken from the page itself, so the page is
# tested too), which reads every byte of a raw file. qemu makes the images:
#   - a raw file with data, holes and a short last block, as raw, and
#     converted by qemu-img to qcow2 at several cluster sizes, compressed
#     (-c) and by qcow-tool convert: one digest for all, the referee's;
#   - a qcow2 image written by qemu-io with data, zero clusters (write -z,
#     with and without -u) and discards, against the referee on its raw
#     conversion;
#   - an internal snapshot (-l) against the content when it was taken;
#   - a changed byte, and a larger size with the same bytes: other digests;
#   - an empty 64 GiB image (qcow2 and a sparse raw file), against the
#     definition worked out for zeros without reading anything;
#   - errors: a missing file, a wrong -f, bad options; -p keeps stdout clean.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

# A Python 3 with the xxhash module (Debian: python3-xxhash).
PY=
for p in python3 /usr/bin/python3; do
	if "$p" -c 'import xxhash' 2>/dev/null; then
		PY=$p
		break
	fi
done
if [ -z "$PY" ]; then
	if [ "${QEMU_TESTS_REQUIRED:-0}" = 1 ] || [ "${CI:-}" = true ]; then
		die "no python3 with the xxhash module (python3-xxhash)"
	fi
	skip "no python3 with the xxhash module (python3-xxhash)"
fi

# The referee: the program doc/checksum.md prints.
sed -n '/^```python$/,/^```$/p' doc/checksum.md | sed '1d;$d' > "$TMP/ref.py"
grep -q xxh3_128 "$TMP/ref.py" || die "no reference program found in doc/checksum.md"

ours() {
	"$QCOW_TOOL" checksum "$@" | awk '{ print $1 }'
}

ref() {
	"$PY" "$TMP/ref.py" "$1" | awk '{ print $1 }'
}

# same WHAT A B: two digests must be equal (and look like digests).
same() {
	CHECKS=$((CHECKS + 1))
	if [ "$2" != "$3" ] || ! [[ "$2" =~ ^[0-9a-f]{32}$ ]]; then
		fail "$1: '$2' vs '$3'"
	fi
}

differ() {
	CHECKS=$((CHECKS + 1))
	if [ "$2" = "$3" ] || ! [[ "$2" =~ ^[0-9a-f]{32}$ ]]; then
		fail "$1: both '$2'"
	fi
}

# --- one content, many images --------------------------------------------
RAW="$TMP/content.raw"
SIZE=$((5 * 1048576 + 3 * 65536 + 1536))    # not whole blocks: a short last block
truncate -s "$SIZE" "$RAW"
for i in 0 1 2 3 4 5 6 7; do
	rand $((SIZE / 512 - 300))
	seeded_bytes $(( (i + 1) * 9000 )) | dd of="$RAW" bs=512 seek="$R" conv=notrunc status=none
done
# text-like, compressible data as well, and the very last bytes
yes "line of a log file, again and again" | head -c 200000 |
	dd of="$RAW" bs=1 seek=$((2 * 1048576 + 777)) conv=notrunc status=none
seeded_bytes 1536 | dd of="$RAW" bs=1 seek=$((SIZE - 1536)) conv=notrunc status=none

WANT=$(ref "$RAW")
same "raw file" "$(ours -f raw "$RAW")" "$WANT"
same "raw file, format detected" "$(ours "$RAW")" "$WANT"
for cs in 512 65536 2M; do
	qemu-img convert -q -f raw -O qcow2 -o cluster_size=$cs "$RAW" "$TMP/c.qcow2"
	same "qemu-img convert, cluster_size=$cs" "$(ours "$TMP/c.qcow2")" "$WANT"
	qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=$cs "$RAW" "$TMP/z.qcow2"
	same "qemu-img convert -c, cluster_size=$cs" "$(ours -f qcow2 "$TMP/z.qcow2")" "$WANT"
done
"$QCOW_TOOL" convert -q -f raw -O qcow2 "$RAW" "$TMP/t.qcow2"
same "qcow-tool convert" "$(ours "$TMP/t.qcow2")" "$WANT"

# --- zeros stored every way qemu stores them -------------------------------
IMG="$TMP/w.qcow2"
qemu_zeros_image "$IMG"
qemu-img convert -q -f qcow2 -O raw "$IMG" "$TMP/w.raw"
W=$(ref "$TMP/w.raw")
same "qemu-io's zero clusters and discards" "$(ours "$IMG")" "$W"
same "... and its raw conversion" "$(ours "$TMP/w.raw")" "$W"

# --- a snapshot: the content when it was taken ------------------------------
qemu-img snapshot -c before "$IMG"
qemu-io -f qcow2 -c 'write -P 0x11 100k 8k' "$IMG" >/dev/null
same "-l SNAPSHOT" "$(ours -l before "$IMG")" "$W"
same "--snapshot=SNAPSHOT" "$(ours --snapshot=before "$IMG")" "$W"
differ "the active layer after a write" "$(ours "$IMG")" "$W"
qemu-img convert -q -f qcow2 -O raw "$IMG" "$TMP/w2.raw"
same "the active layer" "$(ours "$IMG")" "$(ref "$TMP/w2.raw")"

# --- what must change the digest --------------------------------------------
cp "$RAW" "$TMP/flip.raw"
printf '\xff' | dd of="$TMP/flip.raw" bs=1 seek=$((SIZE / 2)) conv=notrunc status=none
F=$(ours "$TMP/flip.raw")
differ "one byte changed" "$F" "$WANT"
same "one byte changed, the referee" "$F" "$(ref "$TMP/flip.raw")"
cp "$RAW" "$TMP/longer.raw"
truncate -s $((SIZE + 65536)) "$TMP/longer.raw"
L=$(ours "$TMP/longer.raw")
differ "the same bytes and zeros after them" "$L" "$WANT"
same "longer, the referee" "$L" "$(ref "$TMP/longer.raw")"
: > "$TMP/empty.raw"
same "an empty file" "$(ours -f raw "$TMP/empty.raw")" "$(ref "$TMP/empty.raw")"

# --- large and empty: nothing read, the definition worked out for zeros -----
BIG=$((64 << 30))
ZERO=$("$PY" -c '
import struct, sys, xxhash
size, block = int(sys.argv[1]), 65536
h = xxhash.xxh3_128(bytes(block)).digest()
outer = xxhash.xxh3_128(struct.pack("<Q", size))
chunk = h * 4096
for _ in range(size // block // 4096):
    outer.update(chunk)
print(outer.hexdigest())' "$BIG")
"$QCOW_TOOL" create -q -f qcow2 "$TMP/big.qcow2" 64G
same "an empty 64 GiB qcow2 image" "$(ours "$TMP/big.qcow2")" "$ZERO"
truncate -s 64G "$TMP/big.raw"
same "a sparse 64 GiB raw file" "$(ours -f raw "$TMP/big.raw")" "$ZERO"

# --- the command line -----------------------------------------------------------
OUT=$("$QCOW_TOOL" checksum -p "$RAW" 2>"$TMP/progress")
CHECKS=$((CHECKS + 1))
[ "$OUT" = "$WANT  $RAW" ] || fail "-p: stdout is '$OUT'"
CHECKS=$((CHECKS + 1))
grep -q '(100.00/100%)' "$TMP/progress" || fail "-p: no progress on stderr"
expect_rc 1 "a missing file" "$QCOW_TOOL" checksum "$TMP/nonexistent.qcow2"
CHECKS=$((CHECKS + 1))
grep -q "nonexistent.qcow2" "$TMP/last.out" || fail "a missing file: the message does not name it"
expect_rc 1 "-f qcow2 on a raw file" "$QCOW_TOOL" checksum -f qcow2 "$RAW"
expect_rc 1 "-f vmdk" "$QCOW_TOOL" checksum -f vmdk "$RAW"
expect_rc 1 "no image" "$QCOW_TOOL" checksum
expect_rc 1 "two images" "$QCOW_TOOL" checksum "$RAW" "$RAW"
expect_rc 1 "an unknown option" "$QCOW_TOOL" checksum --frobnicate "$RAW"
expect_rc 1 "a missing snapshot" "$QCOW_TOOL" checksum -l nosuch "$IMG"
expect_rc 0 "--help" "$QCOW_TOOL" checksum --help

finish
