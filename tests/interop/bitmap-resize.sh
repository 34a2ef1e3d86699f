#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Resizing an image with persistent dirty bitmaps, as qemu-img resize does
# it: twins made by qemu-img (bitmaps enabled at 64 KiB and 4 KiB, one at
# 512 bytes (one disabled after being written); 64 KiB and 4 KiB clusters,
# so that a 512-byte-granularity bitmap spans several pieces), written by
# qemu-io, then resized by qemu-img on one and qcow-tool on the other:
#   - grown across piece boundaries, then written near the new end by
#     qemu-io and qcow-tool io;
#   - shrunk (--shrink) to a size that cuts a piece, with bits set past the
#     new end by writes that were discarded again, then grown back: the
#     bits past the old end must not come back;
# after each step qemu-img check finds ours clean, qemu-img info lists the
# same bitmaps, and every bitmap's dirty ranges (qemu-nbd -B + nbdinfo)
# equal qemu's. A bitmap in use stops both resizes, with qemu's message,
# before anything changes. The old code refused every resize of an image
# with bitmaps.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu qemu-nbd nbdinfo
require_tool
setup

NAMES=(b64k b4k off512 b512)

# make_twins NAME CLUSTER SIZE: the twins, bitmaps holding data.
make_twins() {
	q=$TMP/$1-qemu.qcow2
	o=$TMP/$1-ours.qcow2
	qemu-img create -q -f qcow2 -o "cluster_size=$2" "$q" "$3"
	qemu-img bitmap --add "$q" b64k
	qemu-img bitmap --add -g 4k "$q" b4k
	qemu-img bitmap --add -g 512 "$q" off512
	qemu-img bitmap --add -g 512 "$q" b512
	qemu-io -f qcow2 -c 'write -P 1 0 64k' -c 'write -P 2 3M 100k' \
		-c 'write -P 3 14M 512' -c 'write -P 4 15M 512k' "$q" >/dev/null
	qemu-img bitmap --disable "$q" off512
	cp "$q" "$o"
}

# resize_twins NAME [--shrink] SIZE: qemu-img resize and qcow-tool resize.
resize_twins() {
	local name="$1" size="${*: -1}"
	shift
	local opts=("${@:1:$#-1}")
	qemu-img resize -q -f qcow2 "${opts[@]}" "$q" "$size" >/dev/null 2>&1 ||
		fail "$name: qemu-img resize failed"
	expect_rc 0 "$name: qcow-tool resize" "$QCOW_TOOL" resize -q -f qcow2 "${opts[@]}" "$o" "$size"
	CHECKS=$((CHECKS + 1))
	[ "$(qemu-img info -U --output=json "$q" | jq '."virtual-size"')" = \
	  "$(qemu-img info -U --output=json "$o" | jq '."virtual-size"')" ] ||
		fail "$name: sizes differ"
	twin_bitmaps_compare "$name" "$q" "$o" "${NAMES[@]}"
}

for c in 65536 4096; do
	make_twins "grow$c" "$c" "$((16 * 1024 * 1024 - 512))"
	resize_twins "grow$c" 40M
	twin_io "$q" "$o" 'write -P 5 39M 64k' 'write -P 6 16M 4k' 'discard 20M 1M'
	twin_bitmaps_compare "grow$c written" "$q" "$o" "${NAMES[@]}"

	make_twins "shrink$c" "$c" 40M
	twin_io "$q" "$o" 'write -P 7 30M 64k' 'discard 30M 64k' \
		'discard 20476k 8k'
	twin_bitmaps_compare "shrink$c before" "$q" "$o" "${NAMES[@]}"
	resize_twins "shrink$c" --shrink "$((20 * 1024 * 1024 - 1536))"
	resize_twins "shrink$c grown back" 40M
done

# a bitmap in use (a writer died): qemu refuses, so do we, untouched
make_twins inuse 65536 16M
(qemu-io -f qcow2 -c 'write -q -P 8 1M 64k' -c abort "$q" >/dev/null 2>&1 || true) 2>/dev/null
cp "$q" "$o"
before=$(md5sum <"$o")
qemu_rc=$(rc_of qemu-img resize -f qcow2 "$q" 32M)
qemu_msg=$(qemu-img resize -f qcow2 "$q" 32M 2>&1 | head -1 | sed 's/^qemu-img: //')
expect_rc "$qemu_rc" "in use: qcow-tool resize" "$QCOW_TOOL" resize -f qcow2 "$o" 32M
CHECKS=$((CHECKS + 1))
grep -qF "$qemu_msg" "$TMP/last.out" ||
	fail "in use: qemu said '$qemu_msg', we said '$(cat "$TMP/last.out")'"
CHECKS=$((CHECKS + 1))
[ "$(md5sum <"$o")" = "$before" ] || fail "in use: the refused resize changed the file"

finish
