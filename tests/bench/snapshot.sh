#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/snapshot: snapshot create and delete on an image with 4 GiB
# allocated, qcow-tool side by side with qemu-img, as ratios (the machines
# are noisy: absolute times mean little, the ratio of two runs taken in
# turns on the same image does).
#
# The image: 4 GiB, 64 KiB clusters, every cluster allocated
# (preallocation=metadata: 65536 data clusters and their L2 tables, the
# data itself sparse), plus ROUNDS of alternating create/delete. Each round
# copies the image for both tools, times "snapshot -c" then "snapshot -d"
# for each (in alternating order), and the medians are compared.
#
#   ROUNDS (default 15), SIZE (default 4G), QCOW_TOOL_FAST (tools/qcow-tool)
set -eu
cd "$(dirname "$0")/../.."
TOOL=${QCOW_TOOL_FAST:-$PWD/tools/qcow-tool}
ROUNDS=${ROUNDS:-15}
SIZE=${SIZE:-4G}
command -v qemu-img >/dev/null || { echo "bench/snapshot: needs qemu-img"; exit 77; }
[ -x "$TOOL" ] || { echo "bench/snapshot: build qcow-tool first (make)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qcow-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

qemu-img create -q -f qcow2 -o cluster_size=64k,preallocation=metadata "$TMP/base.qcow2" "$SIZE"
echo "bench/snapshot: $SIZE image, all clusters allocated ($(qemu-img check "$TMP/base.qcow2" |
	sed -n 's/ allocated.*//p' | tail -1)), $ROUNDS rounds"
for ((r = 0; r < ROUNDS; r++)); do
	cp --sparse=always "$TMP/base.qcow2" "$TMP/q.qcow2"
	cp --sparse=always "$TMP/base.qcow2" "$TMP/t.qcow2"
	for who in $( ((r % 2)) && echo "tool qemu" || echo "qemu tool"); do
		if [ "$who" = qemu ]; then
			time_op "$TMP/qemu-create" qemu-img snapshot -c snap "$TMP/q.qcow2"
			time_op "$TMP/qemu-delete" qemu-img snapshot -d snap "$TMP/q.qcow2"
		else
			time_op "$TMP/tool-create" "$TOOL" snapshot -q -c snap "$TMP/t.qcow2"
			time_op "$TMP/tool-delete" "$TOOL" snapshot -q -d snap "$TMP/t.qcow2"
		fi
	done
done
# both images must still be sound
qemu-img check -q "$TMP/t.qcow2" || { echo "bench/snapshot: qcow-tool's image does not check clean"; exit 1; }
for op in create delete; do
	ratio_line bench/snapshot "$op" "$TMP/tool-$op" "$TMP/qemu-$op" qemu-img
done
echo "bench/snapshot: ours is qcow-tool; ratio < 1: faster; both include process start and image open"
