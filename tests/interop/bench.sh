#!/bin/bash
# SPDX-License-Identifier: MIT
#
# qcow-tool bench against qemu-img bench, its model: the same options on two
# copies of one image must leave the same guest content (qemu-img compare),
# print the same "Sending ..." lines, and leave an image qemu-img check
# finds clean. Workloads: reads and writes, offsets and steps that are not
# the buffer size, a start near the end so the offsets wrap, flushes with and
# without draining, direct IO, patterns, cluster sizes from 4K to 2M, an
# image with data, holes and zero clusters to start from. With --queues
# (ours only: QUEUES=N same ...), several queues on threads of their own
# must leave what qemu-img's one queue leaves; on an empty image their runs
# wrap over each other's clusters while allocating them, so requests wait
# for another queue's allocation and are woken from that queue's thread.
# Then the refusals: bad numbers, unaligned requests, another format, a
# missing image, a request past the end, each with exit status 1 and a
# message, and the image unchanged.
# Run from the repository root. Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

# base IMG CLUSTER: a 64 MiB image with random data, zeros and holes.
base() {
	local img=$1 cs=$2 i cmds=()
	qemu-img create -q -f qcow2 -o "cluster_size=$cs" "$img" 64M
	for i in 0 1 2 3 4 5 6 7 8 9; do
		rand 16000
		cmds+=(-c "write -P $((i + 1)) $((R * 4096)) $((4096 * (1 + i % 5)))")
	done
	cmds+=(-c "write -z 0 1M" -c "write -P 9 32M 3M" -c "write -z -u 33M 1M")
	qemu-io -f qcow2 "${cmds[@]}" "$img" >/dev/null
}

# same WHAT BENCH_ARGS...: both benches on copies of $BASE, then compare;
# ours with --queues=$QUEUES when set.
same() {
	local what=$1 ours theirs
	shift
	cp "$BASE" "$TMP/ours.qcow2"
	cp "$BASE" "$TMP/theirs.qcow2"
	CHECKS=$((CHECKS + 1))
	if ! ours=$("$QCOW_TOOL" bench ${QUEUES:+"--queues=$QUEUES"} "$@" "$TMP/ours.qcow2" 2>&1); then
		fail "$what: qcow-tool bench $* failed"
		printf '%s\n' "$ours" | sed 's/^/    | /' >&2
		return 0
	fi
	theirs=$(qemu-img bench "$@" "$TMP/theirs.qcow2" 2>&1) ||
		{ fail "$what: qemu-img bench $* failed: $theirs"; return 0; }
	check "$what: same lines as qemu-img" [ "$(printf '%s\n' "$ours" | grep -v '^Run completed')" = \
		"$(printf '%s\n' "$theirs" | grep -v '^Run completed')" ]
	check "$what: a 'Run completed' line" grep -q '^Run completed in [0-9.]* seconds\.$' <<<"$ours"
	check "$what: same content as qemu-img's" qemu-img compare -q "$TMP/ours.qcow2" "$TMP/theirs.qcow2"
	check "$what: qemu-img check" qemu-img check -q "$TMP/ours.qcow2"
}

for cs in 4096 65536 2097152; do
	BASE=$TMP/base-$cs.qcow2
	base "$BASE" "$cs"
	same "cs=$cs read" -c 3000 -d 16
	same "cs=$cs write" -w -c 3000 -d 32 --pattern=0xa5
	same "cs=$cs write, offset and step" -w -c 2000 -s 8k -S 12k -o 512 --pattern=17
	same "cs=$cs write, wrapping" -w -c 600 -s 64k -S 1M -o 60M --pattern=3
	same "cs=$cs write, step 0" -w -c 50 -s 4k -S 0 -o 1M --pattern=4
	same "cs=$cs write, 512-byte requests" -w -c 2000 -s 512 -d 7 --pattern=5
	same "cs=$cs write, flushes" -w -c 1000 -d 8 --flush-interval=100 --pattern=6
	same "cs=$cs write, flushes, no drain" -w -c 1000 -d 8 --flush-interval=64 --no-drain --pattern=7
	same "cs=$cs write, 512K requests" -w -c 200 -s 512k -d 4 --pattern=8
	# the largest request: reads of the 3 MiB written in one piece at 32M,
	# and writes into new clusters, each 1 MiB in one image IO
	same "cs=$cs read, 1M requests" -c 200 -s 1M -d 4
	same "cs=$cs write, 1M requests" -w -c 100 -s 1M -d 4 --pattern=11
	same "cs=$cs read, 1M requests, direct IO" -t none -c 200 -s 1M -d 4
	same "cs=$cs read, direct IO" -t none -c 1000 -d 8
	same "cs=$cs write, direct IO" -t none -w -c 1000 -d 8 -S 20k --pattern=9
	QUEUES=3 same "cs=$cs read, 3 queues" -c 3000 -d 16
	QUEUES=3 same "cs=$cs write, 3 queues" -w -c 3001 -d 32 -S 12k --pattern=0xa5
	QUEUES=2 same "cs=$cs write, 2 queues, flushes" -w -c 1000 -d 8 --flush-interval=100 \
		--pattern=6
	QUEUES=2 same "cs=$cs write, 2 queues, direct IO" -t none -w -c 2000 -d 8 -S 20k \
		--pattern=10
	BASE_SAVED=$BASE
	BASE=$TMP/empty-$cs.qcow2
	qemu-img create -q -f qcow2 -o "cluster_size=$cs" "$BASE" 8M
	QUEUES=4 same "cs=$cs empty, 4 queues allocating the same clusters" -w -c 20000 -d 16 \
		-S 12k --pattern=0x5a
	QUEUES=4 same "cs=$cs empty, 4 queues allocating, direct IO" -t none -w -c 8000 -d 16 \
		-s 8k --pattern=0x3c
	BASE=$BASE_SAVED
done

BASE=$TMP/base-65536.qcow2
cp "$BASE" "$TMP/x.qcow2"
expect_rc 1 "count 0" "$QCOW_TOOL" bench -c 0 "$TMP/x.qcow2"
expect_rc 1 "depth past the limit" "$QCOW_TOOL" bench -d 100000 "$TMP/x.qcow2"
expect_rc 1 "a buffer larger than a request" "$QCOW_TOOL" bench -s 2M "$TMP/x.qcow2"
expect_rc 1 "an unaligned buffer size" "$QCOW_TOOL" bench -s 1000 "$TMP/x.qcow2"
check "which says why" grep -q 'multiples of 512' "$TMP/last.out"
expect_rc 1 "an unaligned offset" "$QCOW_TOOL" bench -o 100 "$TMP/x.qcow2"
expect_rc 1 "a raw image" "$QCOW_TOOL" bench -f raw "$TMP/x.qcow2"
expect_rc 1 "flushes in a read test" "$QCOW_TOOL" bench --flush-interval=10 "$TMP/x.qcow2"
expect_rc 1 "a bad cache mode" "$QCOW_TOOL" bench -t unsafe "$TMP/x.qcow2"
expect_rc 1 "no queues" "$QCOW_TOOL" bench --queues=0 "$TMP/x.qcow2"
expect_rc 1 "queues past the limit" "$QCOW_TOOL" bench --queues=65 "$TMP/x.qcow2"
check "which says so" grep -q 'Invalid number of queues' "$TMP/last.out"
expect_rc 1 "no image" "$QCOW_TOOL" bench
expect_rc 1 "a missing image" "$QCOW_TOOL" bench "$TMP/missing.qcow2"
check "which names it" grep -q 'missing.qcow2' "$TMP/last.out"
expect_rc 1 "a request past the end" "$QCOW_TOOL" bench -w -c 2 -s 4k -o 64M "$TMP/x.qcow2"
check "x.qcow2 unchanged by refusals" qemu-img compare -q "$BASE" "$TMP/x.qcow2"
# the other queues' writes may land before the failure stops them
expect_rc 1 "a request past the end, 3 queues" "$QCOW_TOOL" bench -w -c 200 -s 4k -o 64M \
	--queues=3 "$TMP/x.qcow2"
check "which names the queue and the request" grep -q 'queue 0: write of 4096 bytes at offset 67108864' \
	"$TMP/last.out"
check "x.qcow2 clean after it" qemu-img check -q "$TMP/x.qcow2"
expect_rc 0 "--help" "$QCOW_TOOL" bench --help
check "--help shows the options" grep -q -- '--flush-interval' "$TMP/last.out"

finish
