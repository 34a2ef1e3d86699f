#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Persistent dirty bitmaps kept up to date, as qemu keeps them: images with
# bitmaps made by qemu-img bitmap --add (enabled and disabled, granularities
# 512 bytes to 1 MiB, several at once, cluster sizes 64k and 512) get the
# same writes, zero writes and discards through qcow-tool io on one twin
# and qemu-io on the other, twice over (the second round sets bits already
# set, and frees the clusters the first round's bitmaps took). Then:
#   - qemu-img info lists the same bitmaps with the same flags on both;
#   - qemu-img check finds ours clean (exit 0: no leak either);
#   - each bitmap's dirty ranges, read through qemu itself (qemu-nbd -B
#     NAME exporting qemu:dirty-bitmap:NAME, read with nbdinfo --map), are
#     the same on both: every granularity-aligned chunk a request touches;
#   - a bitmap a writer left in use (qemu-io aborted) stays in use, the
#     others are kept; a resize is refused meanwhile, as qemu refuses it;
#   - a 2 TiB disk with a 512-byte-granularity bitmap (512 MiB of bits) is
#     written in under 64 MiB of memory, its bits exactly qemu's;
#   - commit marks the base's bitmaps and not the emptied overlay's.
# On the old code (which cleared the bitmaps autoclear bit on a read-write
# open) qemu-img info listed no bitmaps after our writes and check exited 3.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu qemu-nbd nbdinfo
require_tool
setup


ROUND1=('write -P 1 0 4k' 'write -P 2 1M 200k' 'write -P 3 3000 5000'
	'write -z 8M 64k' 'write -z -u 9M 100k' 'discard 16M 1M' 'discard 17M 1000'
	'write -P 4 63M 1k' 'write -P 5 40M 3M')
ROUND2=('write -P 6 0 4k' 'write -P 7 20M 70k' 'discard 40M 1M' 'write -z 44M 512')

# one image: its bitmaps, both rounds, compared after each
scenario() {
	local name="$1" opts="$2" q o
	shift 2
	q=$TMP/$name-qemu.qcow2
	o=$TMP/$name-ours.qcow2
	qemu-img create -q -f qcow2 -o "$opts" "$q" 64M
	qemu-img bitmap --add "$q" b64k
	qemu-img bitmap --add -g 1M --disable "$q" off1m
	qemu-img bitmap --add -g 4k "$q" b4k
	qemu-img bitmap --add -g 512 "$q" b512
	qemu-img bitmap --add -g 2M "$q" b2m
	cp "$q" "$o"
	twin_io "$q" "$o" "${ROUND1[@]}"
	twin_bitmaps_compare "$name round 1" "$q" "$o" b64k off1m b4k b512 b2m
	twin_io "$q" "$o" "${ROUND2[@]}"
	twin_bitmaps_compare "$name round 2" "$q" "$o" b64k off1m b4k b512 b2m
	# disabled on both, then written: it must not change
	qemu-img bitmap --disable "$q" b4k
	qemu-img bitmap --disable "$o" b4k
	twin_io "$q" "$o" 'write -P 8 30M 64k'
	twin_bitmaps_compare "$name disabled later" "$q" "$o" b4k b64k
}

scenario c64k cluster_size=65536
scenario c512 cluster_size=512

# a bitmap left in use by a writer that died: it stays in use (qemu does
# not export it), the others are kept
q=$TMP/inuse-qemu.qcow2
o=$TMP/inuse-ours.qcow2
qemu-img create -q -f qcow2 "$q" 16M
qemu-img bitmap --add "$q" dead
(qemu-io -f qcow2 -c 'write -q -P 8 1M 64k' -c abort "$q" >/dev/null 2>&1 || true) 2>/dev/null
qemu-img bitmap --add "$q" alive
cp "$q" "$o"
CHECKS=$((CHECKS + 1))
bitmaps_of "$q" | grep -q '"dead",\["in-use","auto"\]' || fail "inuse: qemu left no in-use bitmap"
twin_io "$q" "$o" 'write -P 1 2M 64k' 'discard 4M 1M'
twin_bitmaps_compare inuse "$q" "$o" alive
# qemu refuses to resize while a bitmap is inconsistent; so do we, with
# its words, before anything changes
before=$(md5sum <"$o")
expect_rc 1 "resize with an in-use bitmap is refused" "$QCOW_TOOL" resize "$o" 32M
CHECKS=$((CHECKS + 1))
grep -q "Bitmap 'dead' is inconsistent and cannot be used" "$TMP/last.out" ||
	fail "resize: not qemu's reason: $(cat "$TMP/last.out")"
CHECKS=$((CHECKS + 1))
[ "$(md5sum <"$o")" = "$before" ] || fail "a refused resize changed the file"
expect_rc 1 "qemu-img resize is refused too" qemu-img resize "$q" 32M

# a disk whose bitmap is too big to hold (2 TiB at 512-byte granularity:
# 512 MiB of bits, qemu's largest): it is kept in pieces, so a writer
# serves it (the old code refused a read-write open past 256 MiB) in
# little memory, and the bits it sets are exactly qemu's
q=$TMP/huge-qemu.qcow2
o=$TMP/huge-ours.qcow2
qemu-img create -q -f qcow2 "$q" 2T
qemu-img bitmap --add -g 512 "$q" b512
qemu-img bitmap --add "$q" b64k
cp "$q" "$o"
HUGE=('write -P 1 0 4k' 'write -P 2 1099511630848 5000' 'discard 1T 1M'
	'write -z 2199023251456 4k')
twin_io "$q" "$o" "${HUGE[@]}"
twin_bitmaps_compare huge "$q" "$o" b512 b64k
args=()
for op in "${HUGE[@]}"; do
	args+=(-c "$op")
done
/usr/bin/time -f %M -o "$TMP/huge.rss" "$QCOW_TOOL_FAST" io -f qcow2 "${args[@]}" "$o" \
	>/dev/null 2>&1 || fail "huge: qcow-tool io failed"
CHECKS=$((CHECKS + 1))
[ "$(cat "$TMP/huge.rss")" -lt 65536 ] ||
	fail "huge: qcow-tool io took $(cat "$TMP/huge.rss") KiB (a bitmap of 512 MiB held whole?)"

# commit marks the base's bitmaps with what it copies, and leaves the
# overlay's as they were (emptying changes nothing a reader sees), as qemu
for who in qemu ours; do
	qemu-img create -q -f qcow2 "$TMP/base-$who.qcow2" 8M
	qemu-img create -q -f qcow2 -b "$TMP/base-$who.qcow2" -F qcow2 "$TMP/top-$who.qcow2"
	qemu-io -f qcow2 -c 'write -P 5 64k 128k' -c 'write -P 6 5M 4k' "$TMP/top-$who.qcow2" \
		>/dev/null
	qemu-img bitmap --add "$TMP/base-$who.qcow2" bb
	qemu-img bitmap --add -g 4k "$TMP/top-$who.qcow2" bt
done
qemu-img commit -q "$TMP/top-qemu.qcow2"
expect_rc 0 "commit" "$QCOW_TOOL" commit -q "$TMP/top-ours.qcow2"
twin_bitmaps_compare "commit base" "$TMP/base-qemu.qcow2" "$TMP/base-ours.qcow2" bb
twin_bitmaps_compare "commit top" "$TMP/top-qemu.qcow2" "$TMP/top-ours.qcow2" bt

# read-only use changes nothing: the bitmap directory stays where it is
o=$TMP/c64k-ours.qcow2
before=$(md5sum <"$o")
expect_rc 0 "read-only io" "$QCOW_TOOL" io -r -c 'read 0 64k' "$o"
CHECKS=$((CHECKS + 1))
[ "$(md5sum <"$o")" = "$before" ] || fail "a read-only open changed the file"

finish
