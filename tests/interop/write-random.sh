#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Seeded random workloads written by qcow-tool, checked by qemu. For several
# cluster sizes, refcount widths and both compat levels, a fresh image made
# by `qcow-tool create` gets rounds of commands through `qcow-tool io -c ...`
# (pattern writes at byte, sector, 4k and cluster alignment, overwrites,
# write -z with and without -u, whole-cluster discards, flushes) and between
# rounds a `qcow-tool resize` grow. The same commands go to a raw file through
# `qemu-io -f raw` (a qcow2 discard becomes write -z there: discarded clusters
# read as zero; resize via qemu-img resize -f raw). After every round:
#   qemu-img compare -f raw -F qcow2 raw img   identical
#   qemu-img check img                          exit 0 (no errors, no leaks)
#   qcow-tool check img                         exit 0
# Run from the repository root. Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

ROUNDS=${ROUNDS:-4}
OPS=${OPS:-40}

# pick_off SIZE CLUSTER: sets OFF with a random alignment class.
pick_off() {
	local size="$1" cs="$2"
	rand 5
	case $R in
	0) rand "$size"; OFF=$R ;;
	1) rand $((size / 512)); OFF=$((R * 512)) ;;
	2) rand $((size / 4096)); OFF=$((R * 4096)) ;;
	3) rand $((size / cs)); OFF=$((R * cs)) ;;
	4) rand $((size / cs)); OFF=$((R * cs + cs - 1 - R % 700)); [ "$OFF" -ge 0 ] || OFF=0 ;;
	esac
}

# pick_len CLUSTER: sets LEN with a random alignment class.
pick_len() {
	local cs="$1" max=$((3 * $1 + 8192))
	rand 4
	case $R in
	0) rand "$max"; LEN=$((R + 1)) ;;
	1) rand $((max / 512)); LEN=$(((R + 1) * 512)) ;;
	2) rand 3; LEN=$(((R + 1) * cs)) ;;
	3) rand 64; LEN=$((R + 1)) ;;
	esac
}

# One round: build matching command lists for qcow-tool and qemu-io.
round() {
	local img="$1" raw="$2" size="$3" cs="$4" compat="$5" i pat ends
	local targs=() rargs=()

	for ((i = 0; i < OPS; i++)); do
		pick_off "$size" "$cs"
		pick_len "$cs"
		[ "$OFF" -lt "$size" ] || OFF=$((size - 1))
		[ $((OFF + LEN)) -le "$size" ] || LEN=$((size - OFF))
		rand 100
		if [ "$R" -lt 62 ]; then
			rand 255; pat=$((R + 1))
			targs+=(-c "write -q -P $pat $OFF $LEN")
			rargs+=(-c "write -q -P $pat $OFF $LEN")
		elif [ "$R" -lt 75 ]; then
			if [ "$compat" = 1.1 ] && [ $((R % 2)) = 0 ]; then
				targs+=(-c "write -q -z -u $OFF $LEN")
			else
				targs+=(-c "write -q -z $OFF $LEN")
			fi
			rargs+=(-c "write -q -z $OFF $LEN")
		elif [ "$R" -lt 87 ]; then
			# whole clusters only, never the partial last one
			ends=$((size / cs))
			rand "$ends"; OFF=$((R * cs))
			rand 4; LEN=$(((R + 1) * cs))
			[ $((OFF + LEN)) -le $((ends * cs)) ] || LEN=$((ends * cs - OFF))
			[ "$LEN" -gt 0 ] || continue
			targs+=(-c "discard -q $OFF $LEN")
			rargs+=(-c "write -q -z $OFF $LEN")
		elif [ "$R" -lt 92 ]; then
			targs+=(-c "flush")
		else
			# read back through qcow-tool what the raw side has
			rand 255; pat=$((R + 1))
			targs+=(-c "write -q -P $pat $OFF $LEN" -c "read -q -P $pat $OFF $LEN")
			rargs+=(-c "write -q -P $pat $OFF $LEN")
		fi
	done
	expect_rc 0 "qcow-tool io round on $img" "$QCOW_TOOL" io "${targs[@]}" "$img"
	qemu-io -f raw "${rargs[@]}" "$raw" >/dev/null
}

# run_cfg CLUSTER REFBITS COMPAT SIZE
run_cfg() {
	local cs="$1" rb="$2" compat="$3" size="$4" r grow
	local img="$TMP/w-$cs-$rb-$compat.qcow2" raw="$TMP/w-$cs-$rb-$compat.raw"
	local name="cluster $cs refcount $rb compat $compat"

	echo "  $name, size $size"
	rm -f "$img" "$raw"
	expect_rc 0 "$name: qcow-tool create" tool_create "$img" "$size" "$cs" "$rb" "$compat"
	[ -f "$img" ] || return 0
	truncate -s "$size" "$raw"
	for ((r = 1; r <= ROUNDS; r++)); do
		round "$img" "$raw" "$size" "$cs" "$compat"
		if [ "$r" -lt "$ROUNDS" ] && [ $((r % 2)) = 1 ]; then
			# grow by a random amount (sector multiple, not always clusters)
			rand 64; grow=$(((R + 1) * 512 * 97))
			size=$((size + grow))
			expect_rc 0 "$name: qcow-tool resize +$grow" "$QCOW_TOOL" resize -q "$img" "$size"
			qemu-img resize -q -f raw "$raw" "$size"
		fi
		expect_rc 0 "$name round $r: qemu-img compare" \
			qemu-img compare -f raw -F qcow2 "$raw" "$img"
		expect_rc 0 "$name round $r: qemu-img check" qemu-img check -f qcow2 "$img"
		expect_rc 0 "$name round $r: qcow-tool check" "$QCOW_TOOL" check "$img"
		[ "$FAILS" = 0 ] || break
	done
	rm -f "$img" "$raw"
}

run_cfg 512 16 1.1 $((8 * 1048576))
run_cfg 4096 1 1.1 $((24 * 1048576))
run_cfg 4096 16 0.10 $((24 * 1048576 + 512))
run_cfg 65536 16 1.1 $((64 * 1048576))
run_cfg 65536 64 1.1 $((40 * 1048576))
run_cfg 65536 16 0.10 $((32 * 1048576))
run_cfg 2097152 8 1.1 $((64 * 1048576))
run_cfg 1024 4 1.1 $((6 * 1048576 + 3584))

finish
