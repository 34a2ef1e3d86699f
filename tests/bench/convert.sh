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
#   raw -> qcow2 -c CMIB (default 192) MiB, in MiB pieces of random bytes,
#                   text, zeros and repeated lines, zlib and zstd (the sizes
#                   of both outputs too)
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
# mixed: MiB pieces of random bytes, text, zeros and repeated lines in turn
CMIB=${CMIB:-192}
LC_ALL=C awk 'BEGIN { srand(7); split("alpha beta gamma delta qcow2 cluster", w, " ");
	while (n < 1048576) { s = w[int(rand() * 6) + 1] " "; printf "%s", s; n += length(s) } }' |
	head -c 1048576 >"$TMP/text"
yes "the same line, again and again, as logs have it" | head -c 1048576 >"$TMP/lines"
head -c 1048576 /dev/zero >"$TMP/zeros"
for ((i = 0; i < CMIB; i++)); do
	case $((i % 4)) in
	0) head -c 1048576 /dev/urandom ;;
	1) cat "$TMP/text" ;;
	2) cat "$TMP/zeros" ;;
	3) cat "$TMP/lines" ;;
	esac
done >"$TMP/c.raw"
declare -A sizes
for ((r = 0; r < ROUNDS; r++)); do
	for ct in zlib zstd; do
		rm -f "$TMP"/c-*
		time_op "$TMP/qemu-c-$ct" qemu-img convert -t writeback -c -O qcow2 \
			-o compression_type=$ct "$TMP/c.raw" "$TMP/c-q-$ct.qcow2"
		time_op "$TMP/tool-c-$ct" "$TOOL" convert -c -O qcow2 -o compression_type=$ct \
			"$TMP/c.raw" "$TMP/c-t-$ct.qcow2"
		qemu-img compare -q "$TMP/c-t-$ct.qcow2" "$TMP/c.raw" ||
			{ echo "bench/convert: -c $ct output differs"; exit 1; }
		sizes[$ct]="$(stat -c %s "$TMP/c-t-$ct.qcow2") bytes (qemu-img: $(stat -c %s "$TMP/c-q-$ct.qcow2"))"
	done
done
cmp -s "$TMP/o-t.raw" "$TMP/in.raw" || { echo "bench/convert: qcow-tool's output differs"; exit 1; }
qemu-img compare -q "$TMP/o-t.qcow2" "$TMP/in.raw" || { echo "bench/convert: qcow2 output differs"; exit 1; }
for op in r2q q2r q2q; do
	case $op in r2q) what="raw->qcow2" ;; q2r) what="qcow2->raw" ;; *) what="qcow2->qcow2" ;; esac
	ratio_line bench/convert "$what" "$TMP/tool-$op" "$TMP/qemu-$op" qemu-img
done
for ct in zlib zstd; do
	ratio_line bench/convert "raw->qcow2 -c $ct, $CMIB MiB" "$TMP/tool-c-$ct" "$TMP/qemu-c-$ct" qemu-img
	echo "bench/convert:   -c $ct output: ${sizes[$ct]}"
done
echo "bench/convert: ours is qcow-tool convert (-c: on $(nproc) CPUs); ratio < 1: faster"
