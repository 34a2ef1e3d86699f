#!/bin/bash
# SPDX-License-Identifier: MIT
#
# qcow-tool compare against qemu-img compare as the referee: for every case
# both run on the same files and must agree on the exit status and on
# stdout ("Images are identical.", "Content mismatch at offset N!", the
# strict mode and size mismatch lines), and qemu-img's exit status must be
# the one the case is about. qemu makes the images:
#   - one content as raw, as qcow2 at cluster sizes 512, 64k and 2M, and
#     compressed (convert -c): identical to each other, -s as well;
#   - one byte changed at 0, 511, 512, 65535, 65536 and near the end, in the
#     raw file and in a qcow2 image: the sector of the mismatch;
#   - zero clusters made by qemu-io (write -z, write -z -u, discard) against
#     the same zeros in a raw file, sparse or written out;
#   - sizes that differ, the tail zero or not, with and without -s; a size
#     that is not a multiple of 512;
#   - errors (exit 2: a missing file, a bad -f / -F), bad usage (exit 1), -q
#     and -p;
#   - empty 1 TiB images, qcow2 and raw: each compare well under a second.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

# agree WANT WHAT ARGS...: `compare ARGS` must exit WANT under qemu-img, and
# qcow-tool must exit the same and print the same stdout, with nothing from
# the sanitizers on stderr.
agree() {
	local want="$1" what="$2" qrc=0 orc=0
	shift 2
	CHECKS=$((CHECKS + 1))
	qemu-img compare "$@" >"$TMP/q.out" 2>"$TMP/q.err" || qrc=$?
	"$QCOW_TOOL" compare "$@" >"$TMP/o.out" 2>"$TMP/o.err" || orc=$?
	if [ "$qrc" -ne "$want" ]; then
		fail "$what: qemu-img exits $qrc, the case wants $want (the test is wrong)"
	elif [ "$orc" -ne "$qrc" ] || ! cmp -s "$TMP/q.out" "$TMP/o.out" ||
	     grep -q 'Sanitizer\|runtime error' "$TMP/o.err"; then
		fail "$what: exit $orc, want $qrc"
		sed 's/^/    qemu-img  | /' "$TMP/q.out" "$TMP/q.err" >&2
		sed 's/^/    qcow-tool | /' "$TMP/o.out" "$TMP/o.err" | head -20 >&2
	fi
	return 0
}

# flip FILE OFFSET: change the byte at OFFSET of a raw file.
flip() {
	write_be "$1" "$2" 1 $(( ($(read_be "$1" "$2" 1) + 1) & 255 ))
}

# --- one content, many images -------------------------------------------------
RAW="$TMP/content.raw"
SIZE=$((5 * 1048576 + 3 * 65536 + 1000))    # not whole sectors: a short last one
truncate -s "$SIZE" "$RAW"
for i in 0 1 2 3 4 5; do
	rand $((SIZE / 512 - 300))
	seeded_bytes $(( (i + 1) * 7000 )) | dd of="$RAW" bs=512 seek="$R" conv=notrunc status=none
done
seeded_bytes 2000 | dd of="$RAW" bs=1 seek=0 conv=notrunc status=none
seeded_bytes 1000 | dd of="$RAW" bs=1 seek=$((SIZE - 1000)) conv=notrunc status=none
yes "a line of text, again" | head -c 300000 |
	dd of="$RAW" bs=1 seek=$((3 * 1048576 + 777)) conv=notrunc status=none

agree 0 "raw against itself" "$RAW" "$RAW"
for cs in 512 65536 2M; do
	qemu-img convert -q -f raw -O qcow2 -o cluster_size=$cs "$RAW" "$TMP/c$cs.qcow2"
	agree 0 "qcow2 cluster_size=$cs against raw" "$TMP/c$cs.qcow2" "$RAW"
done
agree 0 "raw against qcow2, -f raw -F qcow2" -f raw -F qcow2 "$RAW" "$TMP/c65536.qcow2"
agree 0 "qcow2 512 against qcow2 2M" "$TMP/c512.qcow2" "$TMP/c2M.qcow2"
agree 0 "-s: qcow2 against itself" -s "$TMP/c65536.qcow2" "$TMP/c65536.qcow2"
agree 1 "-s: qcow2 512 against qcow2 64k" -s "$TMP/c512.qcow2" "$TMP/c65536.qcow2"
agree 1 "-s: qcow2 against raw" -s "$TMP/c65536.qcow2" "$RAW"
qemu-img convert -q -c -f raw -O qcow2 "$RAW" "$TMP/z.qcow2"
agree 0 "compressed against raw" "$TMP/z.qcow2" "$RAW"
agree 0 "compressed against qcow2" "$TMP/c65536.qcow2" "$TMP/z.qcow2"
agree 1 "-s: compressed against qcow2" -s "$TMP/c65536.qcow2" "$TMP/z.qcow2"
agree 0 "-s: compressed against itself" -s "$TMP/z.qcow2" "$TMP/z.qcow2"

# --- one byte changed --------------------------------------------------------------
for off in 0 511 512 65535 65536 $((SIZE / 2 + 4321)) $((SIZE - 1000)) $((SIZE - 1)); do
	cp "$RAW" "$TMP/flip.raw"
	flip "$TMP/flip.raw" "$off"
	agree 1 "byte $off changed: raw against raw" "$RAW" "$TMP/flip.raw"
	agree 1 "byte $off changed: qcow2 against raw" "$TMP/c65536.qcow2" "$TMP/flip.raw"
	qemu-img convert -q -f raw -O qcow2 -o cluster_size=512 "$TMP/flip.raw" "$TMP/flip.qcow2"
	agree 1 "byte $off changed: qcow2 against changed qcow2" "$TMP/c65536.qcow2" "$TMP/flip.qcow2"
done
# a byte in a range that the other image leaves unallocated
truncate -s 8M "$TMP/hole.raw"
qemu-img create -q -f qcow2 "$TMP/hole.qcow2" 8M
flip "$TMP/hole.raw" $((6 * 1048576 + 1234))
agree 1 "a byte where qcow2 is unallocated" "$TMP/hole.qcow2" "$TMP/hole.raw"
agree 1 "... the other way round" "$TMP/hole.raw" "$TMP/hole.qcow2"

# --- zeros stored every way qemu stores them -----------------------------------------
IMG="$TMP/w.qcow2"
qemu_zeros_image "$IMG"
qemu-img convert -q -f qcow2 -O raw "$IMG" "$TMP/w.raw"
qemu-img convert -q -S 0 -f qcow2 -O raw "$IMG" "$TMP/w-full.raw"
agree 0 "qemu-io's zero clusters against sparse raw" "$IMG" "$TMP/w.raw"
agree 0 "qemu-io's zero clusters against written zeros" "$TMP/w-full.raw" "$IMG"
agree 1 "-s: zero clusters against sparse raw" -s "$IMG" "$TMP/w.raw"
agree 0 "-s: zero clusters against itself" -s "$IMG" "$IMG"
# the same, the cluster of written zeros made a zero cluster
qemu_zeros_image "$TMP/w2.qcow2" -c 'write -z -u 2560k 64k'
agree 0 "written zeros against a zero cluster" "$IMG" "$TMP/w2.qcow2"
agree 1 "-s: written zeros against a zero cluster" -s "$IMG" "$TMP/w2.qcow2"
qemu-io -f qcow2 -c 'write -P 1 1100k 1' "$TMP/w2.qcow2" >/dev/null
agree 1 "a byte in a former zero cluster" "$IMG" "$TMP/w2.qcow2"

# --- sizes -------------------------------------------------------------------------------
cp "$RAW" "$TMP/long.raw"
truncate -s $((SIZE + 3 * 1048576)) "$TMP/long.raw"
agree 0 "a longer raw file, zero tail" "$RAW" "$TMP/long.raw"
agree 0 "... the other way round" "$TMP/long.raw" "$RAW"
agree 1 "-s: a longer raw file" -s "$RAW" "$TMP/long.raw"
qemu-img convert -q -f raw -O qcow2 "$TMP/long.raw" "$TMP/long.qcow2"
agree 0 "a longer qcow2, zero tail" "$TMP/long.qcow2" "$TMP/c65536.qcow2"
flip "$TMP/long.raw" $((SIZE + 2 * 1048576 + 3))
agree 1 "a longer raw file, a byte in the tail" "$TMP/long.raw" "$RAW"
agree 1 "... against qcow2" "$TMP/c512.qcow2" "$TMP/long.raw"
qemu-img resize -q -f qcow2 "$TMP/long.qcow2" +1G
qemu-io -f qcow2 -c 'write -P 9 1000M 4k' "$TMP/long.qcow2" >/dev/null
agree 1 "a larger qcow2, data far in the tail" "$RAW" "$TMP/long.qcow2"
agree 1 "-q: a larger qcow2" -q "$RAW" "$TMP/long.qcow2"
head -c 1000 /dev/zero >"$TMP/z1000.raw"
head -c 1024 /dev/zero >"$TMP/z1024.raw"
agree 0 "1000 and 1024 zero bytes" "$TMP/z1000.raw" "$TMP/z1024.raw"
agree 1 "-s: 1000 and 1024 zero bytes" -s "$TMP/z1000.raw" "$TMP/z1024.raw"
printf x >"$TMP/x.raw"
agree 1 "one byte against 512 zeros" "$TMP/x.raw" "$TMP/z1024.raw"

# --- large and empty: nothing read ------------------------------------------------------
qemu-img create -q -f qcow2 "$TMP/big1.qcow2" 1T
"$QCOW_TOOL" create -q -f qcow2 "$TMP/big2.qcow2" 1T
truncate -s 1T "$TMP/big.raw"
for pair in "big1.qcow2 big2.qcow2" "big1.qcow2 big.raw" "big.raw big2.qcow2"; do
	a=${pair% *} b=${pair#* }
	agree 0 "empty 1 TiB: $a against $b" "$TMP/$a" "$TMP/$b"
	start=$(date +%s%N)
	"$QCOW_TOOL" compare -q "$TMP/$a" "$TMP/$b" || true
	ms=$(( ($(date +%s%N) - start) / 1000000 ))
	CHECKS=$((CHECKS + 1))
	[ "$ms" -lt 1000 ] || fail "empty 1 TiB: $a against $b took $ms ms"
done
agree 1 "-s: empty 1 TiB qcow2 against raw" -s "$TMP/big1.qcow2" "$TMP/big.raw"

# --- errors and the command line -------------------------------------------------------
agree 2 "a missing first file" "$TMP/nonexistent" "$RAW"
agree 2 "a missing second file" "$RAW" "$TMP/nonexistent"
agree 2 "-f vmdk" -f vmdk "$RAW" "$RAW"
agree 2 "-F qcow2 on a raw file" -F qcow2 "$RAW" "$RAW"
agree 2 "-f qcow2 on a raw file, -q" -q -f qcow2 "$RAW" "$TMP/c512.qcow2"
agree 1 "one image" "$RAW"
agree 1 "three images" "$RAW" "$RAW" "$RAW"
agree 1 "an unknown option" --frobnicate "$RAW" "$RAW"
agree 1 "-f without its argument" "$RAW" "$RAW" -f
agree 0 "-U" -U "$RAW" "$TMP/z.qcow2"
agree 0 "-q" -q "$RAW" "$TMP/z.qcow2"
expect_rc 0 "--help" "$QCOW_TOOL" compare --help
# -p: progress on stderr (qemu-img draws it on stdout), the verdict unchanged
OUT=$("$QCOW_TOOL" compare -p "$TMP/c2M.qcow2" "$RAW" 2>"$TMP/progress")
CHECKS=$((CHECKS + 1))
[ "$OUT" = "Images are identical." ] || fail "-p: stdout is '$OUT'"
CHECKS=$((CHECKS + 1))
grep -q '(100.00/100%)' "$TMP/progress" || fail "-p: no progress on stderr"

finish
