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
#     others are kept; a resize is refused while bitmaps are kept.
# On the old code (which cleared the bitmaps autoclear bit on a read-write
# open) qemu-img info listed no bitmaps after our writes and check exited 3.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu qemu-nbd nbdinfo
require_tool
setup


# ops ARGS...: -c arguments, shared by both tools.
run_twin() {
	local q="$1" o="$2"
	shift 2
	local args=() op
	for op in "$@"; do
		args+=(-c "$op")
	done
	qemu-io -f qcow2 "${args[@]}" "$q" >/dev/null
	expect_rc 0 "$(basename "$o"): qcow-tool io" "$QCOW_TOOL" io -f qcow2 "${args[@]}" "$o"
}

# compare NAME Q O MAPPED...: both twins hold the same bitmaps; the named
# ones (enabled, or disabled but consistent) export the same dirty ranges.
compare() {
	local name="$1" q="$2" o="$3" b
	shift 3
	expect_rc 0 "$name: qemu-img check" qemu-img check -f qcow2 "$o"
	CHECKS=$((CHECKS + 1))
	[ "$(bitmaps_of "$q")" = "$(bitmaps_of "$o")" ] ||
		fail "$name: bitmaps differ: qemu $(bitmaps_of "$q"), ours $(bitmaps_of "$o")"
	dirty_maps "$q" "$TMP/q" "$@" &
	dirty_maps "$o" "$TMP/o" "$@"
	wait
	for b in "$@"; do
		CHECKS=$((CHECKS + 1))
		if ! cmp -s "$TMP/q.$b" "$TMP/o.$b"; then
			fail "$name: bitmap $b: dirty ranges differ (qemu, then ours)"
			diff "$TMP/q.$b" "$TMP/o.$b" | head -20 >&2 || true
		fi
		CHECKS=$((CHECKS + 1))
		grep -Eq ' (clean|dirty)$' "$TMP/o.$b" || fail "$name: bitmap $b: no map"
	done
}

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
	run_twin "$q" "$o" "${ROUND1[@]}"
	compare "$name round 1" "$q" "$o" b64k off1m b4k b512 b2m
	run_twin "$q" "$o" "${ROUND2[@]}"
	compare "$name round 2" "$q" "$o" b64k off1m b4k b512 b2m
	# disabled on both, then written: it must not change
	qemu-img bitmap --disable "$q" b4k
	qemu-img bitmap --disable "$o" b4k
	run_twin "$q" "$o" 'write -P 8 30M 64k'
	compare "$name disabled later" "$q" "$o" b4k b64k
}

scenario c64k cluster_size=65536
scenario c512 cluster_size=512

# a bitmap left in use by a writer that died: it stays in use (qemu does
# not export it), the others are kept; and a resize is refused meanwhile
q=$TMP/inuse-qemu.qcow2
o=$TMP/inuse-ours.qcow2
qemu-img create -q -f qcow2 "$q" 16M
qemu-img bitmap --add "$q" dead
(qemu-io -f qcow2 -c 'write -q -P 8 1M 64k' -c abort "$q" >/dev/null 2>&1 || true) 2>/dev/null
qemu-img bitmap --add "$q" alive
cp "$q" "$o"
CHECKS=$((CHECKS + 1))
bitmaps_of "$q" | grep -q '"dead",\["in-use","auto"\]' || fail "inuse: qemu left no in-use bitmap"
run_twin "$q" "$o" 'write -P 1 2M 64k' 'discard 4M 1M'
compare inuse "$q" "$o" alive
expect_rc 1 "resize with bitmaps is refused" "$QCOW_TOOL" resize "$o" 32M
CHECKS=$((CHECKS + 1))
grep -q 'persistent dirty bitmaps' "$TMP/last.out" || fail "resize: no reason given"

# read-only use changes nothing: the bitmap directory stays where it is
o=$TMP/c64k-ours.qcow2
before=$(md5sum <"$o")
expect_rc 0 "read-only io" "$QCOW_TOOL" io -r -c 'read 0 64k' "$o"
CHECKS=$((CHECKS + 1))
[ "$(md5sum <"$o")" = "$before" ] || fail "a read-only open changed the file"

finish
