#!/bin/bash
# SPDX-License-Identifier: MIT
#
# qcow-tool bitmap against qemu-img bitmap: each action sequence runs on
# twins, qemu-img on one, qcow-tool on the other: same exit status and
# message (after the program's name), then the same bitmaps in qemu-img
# info, qemu-img check clean, and the same dirty ranges (qemu-nbd -B +
# nbdinfo --map). Covers add, writes, merge into a second bitmap, disable
# then writes, clear, removing every bitmap (the extension goes), merge
# from another image with -b, and the error cases.
# On the old code the command does not exist: every qcow-tool run fails.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu qemu-nbd nbdinfo qemu-io
require_tool
setup

# both TWINARGS...: qemu-img bitmap ARGS q.qcow2 and qcow-tool bitmap ARGS
# o.qcow2 (the image is the next to last argument): same status, message.
both() {
	local n=$# bm="${*: -1}" args=("${@:1:$(($# - 1))}") qrc=0 orc=0
	qemu-img bitmap "${args[@]}" "$TMP/q.qcow2" "$bm" >"$TMP/q.out" 2>&1 || qrc=$?
	"$QCOW_TOOL" bitmap "${args[@]}" "$TMP/o.qcow2" "$bm" >"$TMP/o.out" 2>&1 || orc=$?
	CHECKS=$((CHECKS + 1))
	[ "$qrc" = "$orc" ] || fail "bitmap $*: exit $orc, qemu-img $qrc"
	sed -i 's/^[^:]*: //' "$TMP/q.out" "$TMP/o.out"
	CHECKS=$((CHECKS + 1))
	cmp -s "$TMP/q.out" "$TMP/o.out" ||
		fail "bitmap $*: message '$(cat "$TMP/o.out")', qemu-img '$(cat "$TMP/q.out")'"
	: "$n"
}

io() {
	local op
	for op in "$@"; do
		qemu-io -f qcow2 -c "$op" "$TMP/q.qcow2" >/dev/null
		qemu-io -f qcow2 -c "$op" "$TMP/o.qcow2" >/dev/null
	done
}

compare() {
	local name="$1" q="$TMP/q.qcow2" o="$TMP/o.qcow2" b
	shift
	expect_rc 0 "$name: qemu-img check" qemu-img check -f qcow2 "$o"
	CHECKS=$((CHECKS + 1))
	[ "$(bitmaps_of "$q")" = "$(bitmaps_of "$o")" ] ||
		fail "$name: bitmaps differ: qemu $(bitmaps_of "$q"), ours $(bitmaps_of "$o")"
	[ $# -gt 0 ] || return 0
	dirty_maps "$q" "$TMP/qm" "$@"
	dirty_maps "$o" "$TMP/om" "$@"
	for b in "$@"; do
		CHECKS=$((CHECKS + 1))
		cmp -s "$TMP/qm.$b" "$TMP/om.$b" || fail "$name: bitmap $b: dirty ranges differ"
		grep -Eq ' (clean|dirty)$' "$TMP/om.$b" || fail "$name: bitmap $b: no map"
	done
}

qemu-img create -q -f qcow2 "$TMP/q.qcow2" 64M
cp "$TMP/q.qcow2" "$TMP/o.qcow2"

both b                               # no action
both --add b
both --add b                         # exists
both --add -g 1000 c                 # bad granularity
both --add -g 256 c
both -g 4k --clear b                 # -g without --add
both --remove zz
both --clear zz
both --enable zz
both --merge zz b
both --add -g 4k c
both --add -g 512 --disable off
compare add b c off
io 'write -P 1 0 4k' 'write -P 2 1M 200k' 'write -z 8M 64k' 'discard 16M 1M' 'write 40M 3M'
compare writes b c off
both --add --merge b m
both --merge c m
compare merge b c m off
both --disable b
io 'write -P 3 50M 1M'
compare disabled b c m
both --enable --clear c
io 'write -P 4 60M 4k'
compare clear b c m
both --remove b
both --remove off
compare remove c m
both --remove c
both --remove m
compare remove-all
CHECKS=$((CHECKS + 1))
[ -z "$(qemu-img info --output=json "$TMP/o.qcow2" | jq '."format-specific".data.bitmaps // empty')" ] ||
	fail "remove-all: bitmaps left"
both --add --remove --add -g 128k x
compare re-add x

# merge from another image with -b
qemu-img create -q -f qcow2 "$TMP/src.qcow2" 64M
qemu-img bitmap --add -g 4k "$TMP/src.qcow2" s
qemu-io -f qcow2 -c 'write 5M 100k' -c 'write 30M 4k' "$TMP/src.qcow2" >/dev/null
both -b "$TMP/src.qcow2" --merge zz x
both -b "$TMP/src.qcow2" -F qcow2 --merge s x
compare merge-b x

# the default granularity follows the cluster size, within 4k..64k
for cs in 512 4096 2M; do
	qemu-img create -q -f qcow2 -o cluster_size=$cs "$TMP/q.qcow2" 64M
	cp "$TMP/q.qcow2" "$TMP/o.qcow2"
	both --add g
	compare "default granularity, cluster $cs" g
done
finish
