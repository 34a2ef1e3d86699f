#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/convert: the engine's synchronous data path, qcow-tool convert side
# by side with qemu-img convert on the same input, as ratios of medians.
# qemu-img runs with -t writeback, which flushes the output at the end as
# qcow-tool does (its default for convert, unsafe, never makes the output
# durable and is not the same job).
#
#   raw -> qcow2    256 MiB: random data with holes and zero runs
#   qcow2 -> raw    the qcow2 image the first step made
#   qcow2 -> qcow2
#
#   ROUNDS (default 5), MIB (default 256), QCOW_TOOL_FAST (tools/qcow-tool)
set -eu
cd "$(dirname "$0")/../.."
TOOL=${QCOW_TOOL_FAST:-$PWD/tools/qcow-tool}
ROUNDS=${ROUNDS:-5}
MIB=${MIB:-256}
command -v qemu-img >/dev/null || { echo "bench/convert: needs qemu-img"; exit 77; }
[ -x "$TOOL" ] || { echo "bench/convert: build qcow-tool first (make)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qcow-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT

# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

# The input: 1 MiB chunks, in a pattern of 5 data, 2 zero, 1 hole.
truncate -s "${MIB}M" "$TMP/in.raw"
for ((i = 0; i < MIB; i++)); do
	case $((i % 8)) in
	5|6) dd if=/dev/zero of="$TMP/in.raw" bs=1M seek=$i count=1 conv=notrunc status=none ;;
	7) ;;
	*) head -c 1048576 /dev/urandom | dd of="$TMP/in.raw" bs=1M seek=$i conv=notrunc status=none ;;
	esac
done
qemu-img convert -f raw -O qcow2 "$TMP/in.raw" "$TMP/in.qcow2"
echo "bench/convert: ${MIB} MiB, 5/8 random data, $ROUNDS rounds (page cache warm for both)"
for ((r = 0; r < ROUNDS; r++)); do
	rm -f "$TMP"/o-*
	time_op "$TMP/qemu-r2q" qemu-img convert -t writeback -f raw -O qcow2 "$TMP/in.raw" "$TMP/o-q.qcow2"
	time_op "$TMP/tool-r2q" "$TOOL" convert -f raw -O qcow2 "$TMP/in.raw" "$TMP/o-t.qcow2"
	time_op "$TMP/tool-q2r" "$TOOL" convert -O raw "$TMP/in.qcow2" "$TMP/o-t.raw"
	time_op "$TMP/qemu-q2r" qemu-img convert -t writeback -O raw "$TMP/in.qcow2" "$TMP/o-q.raw"
	time_op "$TMP/qemu-q2q" qemu-img convert -t writeback -O qcow2 "$TMP/in.qcow2" "$TMP/o-q2.qcow2"
	time_op "$TMP/tool-q2q" "$TOOL" convert -O qcow2 "$TMP/in.qcow2" "$TMP/o-t2.qcow2"
done
cmp -s "$TMP/o-t.raw" "$TMP/in.raw" || { echo "bench/convert: qcow-tool's output differs"; exit 1; }
qemu-img compare -q "$TMP/o-t.qcow2" "$TMP/in.raw" || { echo "bench/convert: qcow2 output differs"; exit 1; }
for op in r2q q2r q2q; do
	case $op in r2q) what="raw->qcow2" ;; q2r) what="qcow2->raw" ;; *) what="qcow2->qcow2" ;; esac
	ratio_line bench/convert "$what" "$TMP/tool-$op" "$TMP/qemu-$op" qemu-img
done
echo "bench/convert: ours is qcow-tool convert; ratio < 1: faster"
