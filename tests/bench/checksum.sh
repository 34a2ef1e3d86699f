#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/checksum: qcow-tool checksum of a 1 GiB qcow2 image full of random
# data, side by side with what else would compare such images: sha256sum of
# the same content as a raw file, and qemu-img convert of the image into
# nothing (its null-co driver: the cost of reading the image alone); then a
# sparse 1 TiB image, where ours reads nothing (qemu-img convert of a 16 GiB
# one is shown for scale: it walks the zeros). Ratios of medians, page
# cache warm for all.
#
#   ROUNDS (default 3), MIB (default 1024), QCOW_TOOL_FAST (tools/qcow-tool)
set -eu
cd "$(dirname "$0")/../.."
TOOL=${QCOW_TOOL_FAST:-$PWD/tools/qcow-tool}
ROUNDS=${ROUNDS:-3}
MIB=${MIB:-1024}
command -v qemu-img >/dev/null || { echo "bench/checksum: needs qemu-img"; exit 77; }
[ -x "$TOOL" ] || { echo "bench/checksum: build qcow-tool first (make)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qcow-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

head -c "$((MIB << 20))" /dev/urandom > "$TMP/in.raw"
qemu-img convert -f raw -O qcow2 "$TMP/in.raw" "$TMP/in.qcow2"
"$TOOL" create -q -f qcow2 "$TMP/sparse.qcow2" 1T
qemu-img create -q -f qcow2 "$TMP/sparse16.qcow2" 16G
echo "bench/checksum: ${MIB} MiB of random data in a qcow2 image, $ROUNDS rounds"
for ((r = 0; r < ROUNDS; r++)); do
	time_op "$TMP/tool" "$TOOL" checksum "$TMP/in.qcow2"
	time_op "$TMP/sha" sha256sum "$TMP/in.raw"
	time_op "$TMP/conv" qemu-img convert -n -f qcow2 "$TMP/in.qcow2" \
		--target-image-opts "driver=null-co,size=$((MIB << 20))"
	time_op "$TMP/tool-sparse" "$TOOL" checksum "$TMP/sparse.qcow2"
	time_op "$TMP/conv-sparse" qemu-img convert -n -f qcow2 "$TMP/sparse16.qcow2" \
		--target-image-opts "driver=null-co,size=$((16 << 30))"
done
[ "$("$TOOL" checksum "$TMP/in.qcow2" | cut -d' ' -f1)" = \
  "$("$TOOL" checksum -f raw "$TMP/in.raw" | cut -d' ' -f1)" ] ||
	{ echo "bench/checksum: the qcow2 image and its raw content disagree"; exit 1; }
ratio_line bench/checksum "1 GiB data" "$TMP/tool" "$TMP/sha" sha256sum
ratio_line bench/checksum "1 GiB data" "$TMP/tool" "$TMP/conv" "qemu-img convert"
ratio_line bench/checksum "1 TiB sparse" "$TMP/tool-sparse" "$TMP/conv-sparse" \
	"qemu-img convert of 16 GiB"
echo "bench/checksum: ours is qcow-tool checksum; ratio < 1: faster"
