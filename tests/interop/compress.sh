#!/bin/bash
# SPDX-License-Identifier: MIT
#
# convert -c against qemu-img convert -c, with qemu as the referee:
#   - a source with compressible text, random data (stored uncompressed:
#     compression saves nothing there), zero ranges and a last cluster cut
#     short, at cluster sizes 512, 4k, 64k and 2M with zlib, and 512, 4k and
#     2M with zstd: qemu-img check clean,
#     qemu-img compare identical to the source, the same digest, and a file
#     no larger than qemu-img convert -c's;
#   - guest writes into the compressed clusters afterwards (partial writes,
#     zeroing, discards over clusters that share host clusters), by
#     qcow-tool and by qemu-io on qemu-img's conversion: the same content,
#     qemu-img check clean (the shared clusters' refcounts exact);
#   - zstd (compression_type=zstd): an image qemu-img made reads as its
#     source and info says what qemu-img's says; convert -c -o
#     compression_type=zstd writes what qemu-img check and compare accept,
#     no larger than qemu's; writes into those clusters as qemu-io's;
#     create -o compression_type=zstd, refused for version 2;
#   - convert -c -B: an overlay with compressed clusters, only where the
#     source differs from the base;
#   - refusals: -c to raw, -c with -n.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

sum() {
	"$QCOW_TOOL" checksum "$@" | awk '{ print $1 }'
}

same() {
	CHECKS=$((CHECKS + 1))
	if [ "$2" != "$3" ] || ! [[ "$2" =~ ^[0-9a-f]{32}$ ]]; then
		fail "$1: '$2' vs '$3'"
	fi
}

# The source: 12 MiB of words (compressible), 2 MiB of random bytes at
# 4 MiB, zeros from 14 MiB, and a size that cuts the last cluster short.
M=1048576
rand 1000000
LC_ALL=C awk -v seed="$R" 'BEGIN { srand(seed); split("alpha beta gamma delta qcow2 cluster", w, " ");
	while (n < 12 * 1048576) { s = w[int(rand() * 6) + 1] " "; printf "%s", s; n += length(s) } }' |
	head -c $((12 * M)) >"$TMP/src.raw"
seeded_bytes $((2 * M)) | dd of="$TMP/src.raw" bs=1M seek=4 conv=notrunc status=none
truncate -s $((20 * M + 1536)) "$TMP/src.raw"
src_sum=$(sum -f raw "$TMP/src.raw")

for run in 512:zlib 4k:zlib 64k:zlib 2M:zlib 512:zstd 4k:zstd 2M:zstd; do
	cs=${run%:*} ct=${run#*:}
	echo "  cluster size $cs, $ct"
	ours="$TMP/ours-$cs.qcow2" theirs="$TMP/qemu-$cs.qcow2"
	expect_rc 0 "$cs $ct: convert -c" "$QCOW_TOOL" convert -c -O qcow2 \
		-o cluster_size=$cs,compression_type=$ct "$TMP/src.raw" "$ours"
	qemu-img convert -c -O qcow2 -o cluster_size=$cs,compression_type=$ct "$TMP/src.raw" "$theirs"
	expect_rc 0 "$cs $ct: qemu-img check" qemu-img check "$ours"
	expect_rc 0 "$cs $ct: qemu-img compare with the source" qemu-img compare "$TMP/src.raw" "$ours"
	same "$cs $ct: digest" "$(sum "$ours")" "$src_sum"
	CHECKS=$((CHECKS + 1))
	qemu-img check "$ours" | grep -q "compressed clusters" &&
		! qemu-img check "$ours" | grep -q " 0.00% compressed" ||
		fail "$cs $ct: no compressed clusters"
	CHECKS=$((CHECKS + 1))
	[ "$(stat -c %s "$ours")" -le "$(stat -c %s "$theirs")" ] ||
		fail "$cs $ct: $(stat -c %s "$ours") bytes, qemu-img convert -c wrote $(stat -c %s "$theirs")"
	echo "    $(stat -c %s "$ours") bytes (qemu-img convert -c: $(stat -c %s "$theirs"))"

	# writes into compressed clusters, both sides
	c=$(( $(echo "$cs" | sed 's/k$/*1024/; s/M$/*1048576/') ))
	cmds=(-c "write -q -P 0x11 $((c / 2)) 700" -c "write -q -P 0x12 $((3 * c - 512)) 1024"
	      -c "write -q -z $((5 * c + 512)) $((2 * c))" -c "discard -q $((8 * c)) $((2 * c))"
	      -c "write -q -P 0x13 $((7 * M + 3)) 5000")
	expect_rc 0 "$cs $ct: writes into compressed clusters" "$QCOW_TOOL" io "${cmds[@]}" "$ours"
	qemu-io "${cmds[@]}" "$theirs" >/dev/null
	expect_rc 0 "$cs $ct: after the writes, qemu-img check" qemu-img check "$ours"
	expect_rc 0 "$cs $ct: after the writes, as qemu-io left qemu's" qemu-img compare "$ours" "$theirs"
	rm -f "$ours" "$theirs"
done

echo "  zstd"
qemu-img convert -q -c -O qcow2 -o compression_type=zstd "$TMP/src.raw" "$TMP/zq.qcow2"
same "zstd by qemu-img: read as the source" "$(sum "$TMP/zq.qcow2")" "$src_sum"
CHECKS=$((CHECKS + 1))
diff <(qemu-img info "$TMP/zq.qcow2" | grep -v "disk size") \
	<("$QCOW_TOOL" info "$TMP/zq.qcow2" | grep -v "disk size") >&2 ||
	fail "zstd: info differs from qemu-img's"
expect_rc 0 "zstd: convert -c -o compression_type=zstd" "$QCOW_TOOL" convert -c -O qcow2 \
	-o compression_type=zstd "$TMP/src.raw" "$TMP/zo.qcow2"
expect_rc 0 "zstd: qemu-img check" qemu-img check "$TMP/zo.qcow2"
expect_rc 0 "zstd: qemu-img compare with the source" qemu-img compare "$TMP/src.raw" "$TMP/zo.qcow2"
CHECKS=$((CHECKS + 1))
qemu-img info "$TMP/zo.qcow2" | grep -q "compression type: zstd" || fail "zstd: not recorded"
CHECKS=$((CHECKS + 1))
[ "$(stat -c %s "$TMP/zo.qcow2")" -le "$(stat -c %s "$TMP/zq.qcow2")" ] ||
	fail "zstd: $(stat -c %s "$TMP/zo.qcow2") bytes, qemu-img wrote $(stat -c %s "$TMP/zq.qcow2")"
echo "    $(stat -c %s "$TMP/zo.qcow2") bytes (qemu-img convert -c: $(stat -c %s "$TMP/zq.qcow2"))"
cmds=(-c "write -q -P 0x21 1000 3000" -c "write -q -z 200000 70000" -c "discard -q 655360 131072")
expect_rc 0 "zstd: writes into compressed clusters" "$QCOW_TOOL" io "${cmds[@]}" "$TMP/zo.qcow2"
qemu-io "${cmds[@]}" "$TMP/zq.qcow2" >/dev/null
expect_rc 0 "zstd: after the writes, qemu-img check" qemu-img check "$TMP/zo.qcow2"
expect_rc 0 "zstd: after the writes, as qemu-io left qemu's" \
	qemu-img compare "$TMP/zo.qcow2" "$TMP/zq.qcow2"
expect_rc 0 "zstd: create -o compression_type=zstd" "$QCOW_TOOL" create -q \
	-o compression_type=zstd "$TMP/zc.qcow2" 1M
CHECKS=$((CHECKS + 1))
qemu-img info "$TMP/zc.qcow2" | grep -q "compression type: zstd" || fail "zstd: create"
expect_rc 1 "zstd: refused on a version 2 image" "$QCOW_TOOL" create -q \
	-o compression_type=zstd,compat=0.10 "$TMP/zv2.qcow2" 1M

echo "  convert -c -B"
qemu-img create -q -f qcow2 "$TMP/base.qcow2" $((20 * M + 1536))
qemu-io -c "write -q -P 0x33 $((12 * M)) $((2 * M))" "$TMP/base.qcow2" >/dev/null
cp "$TMP/src.raw" "$TMP/src2.raw"
dd if=/dev/zero bs=1M count=1 2>/dev/null | tr '\0' '\063' |
	dd of="$TMP/src2.raw" bs=1M seek=12 conv=notrunc status=none
expect_rc 0 "convert -c -B" "$QCOW_TOOL" convert -c -O qcow2 -B base.qcow2 -F qcow2 \
	"$TMP/src2.raw" "$TMP/ov.qcow2"
expect_rc 0 "convert -c -B: qemu-img compare with the source" \
	qemu-img compare "$TMP/src2.raw" "$TMP/ov.qcow2"
expect_rc 0 "convert -c -B: qemu-img check" qemu-img check "$TMP/ov.qcow2"
CHECKS=$((CHECKS + 1))
qemu-img map --output=json "$TMP/ov.qcow2" |
	grep -q "\"start\": $((12 * M)), \"length\": $M, \"depth\": 1" ||
	fail "convert -c -B: the range equal to the base was written"

expect_rc 1 "convert -c to raw" "$QCOW_TOOL" convert -c -O raw "$TMP/src.raw" "$TMP/x.raw"
expect_rc 1 "convert -c -n" "$QCOW_TOOL" convert -c -n -O qcow2 "$TMP/src.raw" "$TMP/ov.qcow2"
finish
