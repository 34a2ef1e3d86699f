#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Backing chains, with qemu-img and qemu-io as referees and qcow-tool
# checksum to compare guest contents:
#   - chains qemu makes (raw <- qcow2 <- qcow2, bases shorter than their
#     overlays, a raw base whose size is not a multiple of 512, zero
#     clusters and discards in the middle, mixed cluster sizes) read as
#     qemu reads them (the digest of qemu-img convert's raw output), and
#     qcow-tool map says what qemu-img map says, depth included;
#   - seeded random writes into overlays (pattern writes over base data at
#     byte, sector and cluster alignment, write -z with and without -u,
#     discards; across cluster and L2 boundaries), the same commands by
#     qemu-io into an overlay qemu-img made of the same base: the same guest
#     content after every round, qemu-img check clean, and the bases byte
#     for byte as they were;
#   - create -b: -F and -o backing_file/backing_fmt written as qemu-img
#     writes them, the size taken from the base, a relative name resolved
#     against the overlay's directory, a missing -F probed with a warning;
#     and its refusals (a missing base, a raw overlay, -F alone);
#   - opening: a loop in the chain is refused with a message naming it;
#     info and check work when the base is missing; convert flattens the
#     chain (locks on the chain: locking.sh);
#   - info --backing-chain as qemu-img prints it; rebase (safe: the same
#     content over the new base; -b "": flattened; -u: the name alone, as
#     qemu-img leaves it) and its refusals; commit (the base as qemu-img
#     commit leaves it, the image reading the same, emptied unless -d);
#     convert -B (the source's content, smaller than a full copy) and its
#     refusals.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

ROUNDS=${ROUNDS:-3}
OPS=${OPS:-30}

sum() {
	"$QCOW_TOOL" checksum "$@" | awk '{ print $1 }'
}

# qemu's view of IMAGE's guest content: its raw conversion's digest.
qemu_sum() {
	rm -f "$TMP/flat.raw"
	qemu-img convert -O raw "$1" "$TMP/flat.raw"
	sum -f raw "$TMP/flat.raw"
}

# same WHAT A B
same() {
	CHECKS=$((CHECKS + 1))
	if [ "$2" != "$3" ] || ! [[ "$2" =~ ^[0-9a-f]{32}$ ]]; then
		fail "$1: '$2' vs '$3'"
	fi
}

# expect_out WHAT PATTERN CMD...: the command fails (exit 1) and its
# stderr matches PATTERN.
expect_err() {
	local what="$1" pat="$2" rc=0
	shift 2
	CHECKS=$((CHECKS + 1))
	"$@" >"$TMP/err.out" 2>&1 || rc=$?
	if [ "$rc" != 1 ] || ! grep -q -- "$pat" "$TMP/err.out"; then
		fail "$what: exit $rc, want 1 and '$pat'"
		sed 's/^/    | /' "$TMP/err.out" | head -5 >&2
	fi
}

# A raw base of SIZE bytes: seeded data with holes.
make_raw_base() {
	local f="$1" size="$2" off
	truncate -s "$size" "$f"
	for ((off = 0; off < size; off += 196608)); do
		rand 3
		# (a hole at 0 would map with no offset: data there)
		[ "$R" = 0 ] && [ "$off" != 0 ] && continue
		seeded_bytes 70000 | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
	done
	truncate -s "$size" "$f"
}

# ------------------------------------------------------------ chains by qemu
echo "  chains made by qemu"
make_raw_base "$TMP/base.raw" $((3 * 1048576 + 100))
qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.raw -F raw "$TMP/mid.qcow2" 4M
qemu-io -c 'write -q -P 0x22 60k 72k' -c 'write -q -z 512k 64k' -c 'discard -q 1M 128k' \
	-c 'write -q -P 0x23 3M 1M' "$TMP/mid.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$TMP/top.qcow2" 6M
qemu-io -c 'write -q -P 0x33 4k 4k' -c 'write -q -z -u 1056k 64k' -c 'write -q -P 0x34 5M 64k' \
	"$TMP/top.qcow2" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=2M -b top.qcow2 -F qcow2 "$TMP/top2.qcow2" 8M
qemu-io -c 'write -q -P 0x44 100k 3' "$TMP/top2.qcow2" >/dev/null
qemu-img convert -q -c -O qcow2 "$TMP/mid.qcow2" "$TMP/midc.qcow2"
qemu-img create -q -f qcow2 -b midc.qcow2 -F qcow2 "$TMP/overc.qcow2"
for img in mid top top2 overc; do
	same "$img: digest against qemu's reading" "$(sum "$TMP/$img.qcow2")" \
		"$(qemu_sum "$TMP/$img.qcow2")"
	for out in json human; do
		CHECKS=$((CHECKS + 1))
		if ! diff <(cd "$TMP" && qemu-img map --output=$out "$img.qcow2") \
			<(cd "$TMP" && "$QCOW_TOOL" map --output=$out "$img.qcow2") >&2; then
			fail "$img: map --output=$out differs from qemu-img's"
		fi
	done
done
expect_rc 0 "io -r reads the base through two overlays" "$QCOW_TOOL" io -r \
	-c 'read -P 0x22 60k 4k' -c 'read -P 0x44 100k 3' -c 'read -P 0 7M 1M' "$TMP/top2.qcow2"
cp "$TMP/top2.qcow2" "$TMP/flatten-src.qcow2"
expect_rc 0 "convert flattens the chain" "$QCOW_TOOL" convert -O qcow2 "$TMP/top2.qcow2" \
	"$TMP/flat.qcow2"
same "convert: same content, no backing file" "$(sum "$TMP/flat.qcow2")" "$(sum "$TMP/top2.qcow2")"
CHECKS=$((CHECKS + 1))
qemu-img info "$TMP/flat.qcow2" | grep -q "backing file" && fail "convert kept a backing file"

# ------------------------------------------------------------ chain commands
echo "  info --backing-chain, rebase, commit, convert -B"
CHECKS=$((CHECKS + 1))
diff <(cd "$TMP" && qemu-img info --backing-chain top2.qcow2) \
	<(cd "$TMP" && "$QCOW_TOOL" info --backing-chain top2.qcow2) >&2 ||
	fail "info --backing-chain differs from qemu-img's"
CHECKS=$((CHECKS + 1))
diff <(cd "$TMP" && qemu-img info --backing-chain --output=json top2.qcow2) \
	<(cd "$TMP" && "$QCOW_TOOL" info --backing-chain --output=json top2.qcow2) >&2 ||
	fail "info --backing-chain --output=json differs from qemu-img's"
top_sum=$(sum "$TMP/top.qcow2")
for how in safe flatten unsafe; do
	cp "$TMP/top.qcow2" "$TMP/rb.qcow2"
	case $how in
	safe)	expect_rc 0 "rebase onto the raw base" "$QCOW_TOOL" rebase -b base.raw -F raw \
			"$TMP/rb.qcow2"
		same "rebase: the same content over the new base" "$(sum "$TMP/rb.qcow2")" "$top_sum"
		expect_rc 0 "rebase: qemu-img reads the new chain the same" \
			qemu-img compare "$TMP/rb.qcow2" "$TMP/top.qcow2" ;;
	flatten) expect_rc 0 "rebase -b '' (flatten)" "$QCOW_TOOL" rebase -b "" "$TMP/rb.qcow2"
		same "rebase -b '': the same content, no backing file" "$(sum "$TMP/rb.qcow2")" \
			"$top_sum"
		CHECKS=$((CHECKS + 1))
		qemu-img info "$TMP/rb.qcow2" | grep -q "backing file" &&
			fail "rebase -b '' kept a backing file" ;;
	unsafe)	expect_rc 0 "rebase -u (name only)" "$QCOW_TOOL" rebase -u -b base.raw -F raw \
			"$TMP/rb.qcow2"
		cp "$TMP/top.qcow2" "$TMP/rbq.qcow2"
		qemu-img rebase -u -b base.raw -F raw "$TMP/rbq.qcow2"
		expect_rc 0 "rebase -u: as qemu-img rebase -u leaves it" \
			qemu-img compare "$TMP/rb.qcow2" "$TMP/rbq.qcow2"
		expect_rc 0 "rebase -u: the image's own clusters untouched" \
			qemu-img compare "$TMP/rb.qcow2" "$TMP/rbq.qcow2" ;;
	esac
	expect_rc 0 "rebase $how: qemu-img check" qemu-img check "$TMP/rb.qcow2"
done
expect_err "rebase without -F" "backing format must be specified" \
	"$QCOW_TOOL" rebase -b base.raw "$TMP/rb.qcow2"
expect_err "rebase onto a missing file" "cannot open backing file" \
	"$QCOW_TOOL" rebase -b nothere.raw -F raw "$TMP/rb.qcow2"
expect_err "rebase onto itself" "loop" "$QCOW_TOOL" rebase -b rb.qcow2 -F qcow2 "$TMP/rb.qcow2"

# commit: into copies of the chain, ours and qemu-img's side by side
for keep in "" -d; do
	for who in ours qemu; do
		cp "$TMP/base.raw" "$TMP/cb-$who.raw"
		cp "$TMP/mid.qcow2" "$TMP/cm-$who.qcow2"
		qemu-img rebase -q -u -b "cb-$who.raw" -F raw "$TMP/cm-$who.qcow2"
	done
	before=$(sum "$TMP/cm-ours.qcow2")
	expect_rc 0 "commit $keep" "$QCOW_TOOL" commit $keep "$TMP/cm-ours.qcow2"
	qemu-img commit -q $keep "$TMP/cm-qemu.qcow2"
	CHECKS=$((CHECKS + 1))
	cmp -s "$TMP/cb-ours.raw" "$TMP/cb-qemu.raw" || fail "commit $keep: the base differs from qemu-img commit's"
	same "commit $keep: the image reads the same" "$(sum "$TMP/cm-ours.qcow2")" "$before"
	expect_rc 0 "commit $keep: qemu-img check" qemu-img check "$TMP/cm-ours.qcow2"
	CHECKS=$((CHECKS + 1))
	n=$(qemu-img map --output=json "$TMP/cm-ours.qcow2" | grep -c '"depth": 0, "present": true' || true)
	if [ -z "$keep" ] && [ "$n" != 0 ]; then
		fail "commit: the image still allocates $n ranges"
	elif [ -n "$keep" ] && [ "$n" = 0 ]; then
		fail "commit -d: the image was emptied"
	fi
done
expect_err "commit of an image without a backing file" "does not have a backing file" \
	"$QCOW_TOOL" commit "$TMP/flat.qcow2"

# convert -B: only what differs from the backing file
expect_rc 0 "convert -B" "$QCOW_TOOL" convert -O qcow2 -B base.raw -F raw "$TMP/top2.qcow2" \
	"$TMP/cvb.qcow2"
same "convert -B: the source's content" "$(sum "$TMP/cvb.qcow2")" "$(sum "$TMP/top2.qcow2")"
expect_rc 0 "convert -B: qemu-img compare" qemu-img compare "$TMP/cvb.qcow2" "$TMP/top2.qcow2"
expect_rc 0 "convert -B: qemu-img check" qemu-img check "$TMP/cvb.qcow2"
CHECKS=$((CHECKS + 1))
[ "$(stat -c %s "$TMP/cvb.qcow2")" -lt "$(stat -c %s "$TMP/flat.qcow2")" ] ||
	fail "convert -B wrote as much as a full convert"
expect_rc 0 "convert -o backing_file=,backing_fmt=" "$QCOW_TOOL" convert -O qcow2 \
	-o backing_file=mid.qcow2,backing_fmt=qcow2 "$TMP/top2.qcow2" "$TMP/cvo.qcow2"
same "convert -o backing_file: the source's content" "$(sum "$TMP/cvo.qcow2")" \
	"$(sum "$TMP/top2.qcow2")"
expect_err "convert -B without -F" "explicit backing format" \
	"$QCOW_TOOL" convert -O qcow2 -B base.raw "$TMP/top2.qcow2" "$TMP/cvx.qcow2"
expect_err "convert -B to raw" "not supported for file format 'raw'" \
	"$QCOW_TOOL" convert -O raw -B base.raw -F raw "$TMP/top2.qcow2" "$TMP/cvx.raw"

# ------------------------------------------------------------ random writes
# pick OFF LEN for an overlay of SIZE bytes and cluster CS
pick() {
	local size="$1" cs="$2"
	rand 4
	case $R in
	0) rand "$size"; OFF=$R ;;
	1) rand $((size / 512)); OFF=$((R * 512)) ;;
	2) rand $((size / cs)); OFF=$((R * cs)) ;;
	3) rand $((size / cs)); OFF=$((R * cs + cs - 1 - R % 900)); [ "$OFF" -ge 0 ] || OFF=0 ;;
	esac
	rand 3
	case $R in
	0) rand $((3 * cs + 9000)); LEN=$((R + 1)) ;;
	1) rand 64; LEN=$(((R + 1) * 512)) ;;
	2) rand 3; LEN=$(((R + 1) * cs)) ;;
	esac
	[ $((OFF + LEN)) -le "$size" ] || LEN=$((size - OFF))
	[ "$LEN" -gt 0 ] || { OFF=0; LEN=1; }
}

# overlay_cfg NAME BASE BASEFMT CLUSTER COMPAT SIZE
overlay_cfg() {
	local name="$1" base="$2" bfmt="$3" cs="$4" compat="$5" size="$6" r i pat
	local ours="$TMP/$name-ours.qcow2" theirs="$TMP/$name-qemu.qcow2"
	local before

	echo "  overlay $name: cluster $cs compat $compat over $bfmt, size $size"
	before=$(sha256sum < "$base")
	expect_rc 0 "$name: qcow-tool create -b" "$QCOW_TOOL" create -q -F "$bfmt" \
		-b "$(basename "$base")" -o "cluster_size=$cs,compat=$compat" "$ours" "$size"
	qemu-img create -q -f qcow2 -F "$bfmt" -b "$(basename "$base")" \
		-o "cluster_size=$cs,compat=$compat" "$theirs" "$size"
	for ((r = 1; r <= ROUNDS; r++)); do
		local targs=() qargs=()
		for ((i = 0; i < OPS; i++)); do
			pick "$size" "$cs"
			rand 100
			if [ "$R" -lt 65 ]; then
				rand 255; pat=$((R + 1))
				targs+=(-c "write -q -P $pat $OFF $LEN")
				qargs+=(-c "write -q -P $pat $OFF $LEN")
			elif [ "$R" -lt 80 ]; then
				if [ $((R % 2)) = 0 ]; then
					targs+=(-c "write -q -z -u $OFF $LEN")
					qargs+=(-c "write -q -z -u $OFF $LEN")
				else
					targs+=(-c "write -q -z $OFF $LEN")
					qargs+=(-c "write -q -z $OFF $LEN")
				fi
			elif [ "$compat" = 1.1 ]; then
				# v3: a discarded cluster reads as zeros in both
				OFF=$((OFF / cs * cs))
				[ $((OFF + LEN)) -le "$size" ] || LEN=$((size - OFF))
				targs+=(-c "discard -q $OFF $LEN")
				qargs+=(-c "discard -q $OFF $LEN")
			fi
		done
		expect_rc 0 "$name round $r: qcow-tool io" "$QCOW_TOOL" io "${targs[@]}" "$ours"
		qemu-io "${qargs[@]}" "$theirs" >/dev/null
		same "$name round $r: content as qemu-io's" "$(sum "$ours")" "$(sum "$theirs")"
		expect_rc 0 "$name round $r: qemu-img compare" qemu-img compare "$ours" "$theirs"
		expect_rc 0 "$name round $r: qemu-img check" qemu-img check "$ours"
		[ "$FAILS" = 0 ] || break
	done
	if [ "$compat" = 0.10 ]; then
		# v2 has no zero flag: a discard keeps the data (the base's must
		# not show through)
		before_sum=$(sum "$ours")
		expect_rc 0 "$name: discard everything" "$QCOW_TOOL" io -c "discard -q 0 $size" "$ours"
		same "$name: v2 discard keeps the content" "$(sum "$ours")" "$before_sum"
	else
		expect_rc 0 "$name: discard everything" "$QCOW_TOOL" io -c "discard -q 0 $size" "$ours"
		expect_rc 0 "$name: all zeros after it" "$QCOW_TOOL" io -r \
			-c "read -q -P 0 0 $size" "$ours"
		expect_rc 0 "$name: qemu-img check after it" qemu-img check "$ours"
	fi
	CHECKS=$((CHECKS + 1))
	[ "$(sha256sum < "$base")" = "$before" ] || fail "$name: the base changed"
	rm -f "$ours" "$theirs"
}

make_raw_base "$TMP/b1.raw" $((5 * 1048576))
qemu-img convert -q -O qcow2 -o cluster_size=4096 -f raw "$TMP/b1.raw" "$TMP/b1.qcow2"
qemu-io -c 'write -q -z 1M 256k' -c 'discard -q 2M 512k' "$TMP/b1.qcow2" >/dev/null
qemu-img convert -q -c -O qcow2 -f raw "$TMP/b1.raw" "$TMP/b1c.qcow2"
overlay_cfg raw64k "$TMP/b1.raw" raw 65536 1.1 $((6 * 1048576))
overlay_cfg raw512 "$TMP/b1.raw" raw 512 1.1 $((5 * 1048576))
overlay_cfg qcow4k "$TMP/b1.qcow2" qcow2 65536 1.1 $((5 * 1048576))
overlay_cfg qcowv2 "$TMP/b1.qcow2" qcow2 4096 0.10 $((4 * 1048576))
overlay_cfg short2m "$TMP/b1.qcow2" qcow2 2097152 1.1 $((9 * 1048576))
overlay_cfg compr "$TMP/b1c.qcow2" qcow2 65536 1.1 $((5 * 1048576))

# ------------------------------------------------------------ create -b
echo "  create -b"
mkdir -p "$TMP/d"
cp "$TMP/b1.raw" "$TMP/d/base.raw"
qemu-img create -q -f qcow2 -b base.raw -F raw "$TMP/d/q.qcow2"
expect_rc 0 "create -b -F: relative base next to the overlay" \
	"$QCOW_TOOL" create -q -b base.raw -F raw "$TMP/d/o.qcow2"
CHECKS=$((CHECKS + 1))
diff <(qemu-img info --output=json "$TMP/d/o.qcow2" | grep -E '"(virtual-size|backing-filename|backing-filename-format|full-backing-filename)"') \
	<(qemu-img info --output=json "$TMP/d/q.qcow2" | grep -E '"(virtual-size|backing-filename|backing-filename-format|full-backing-filename)"') >&2 ||
	fail "create -b: info differs from qemu-img create -b's"
same "create -b: reads as the base" "$(sum "$TMP/d/o.qcow2")" "$(sum -f raw "$TMP/d/base.raw")"
expect_rc 0 "create -o backing_file=,backing_fmt=" "$QCOW_TOOL" create -q \
	-o backing_file=base.raw,backing_fmt=raw "$TMP/d/o2.qcow2" 7M
expect_rc 0 "a base shorter than the overlay reads zeros past its end" "$QCOW_TOOL" io -r \
	-c 'read -q -P 0 5M 2M' "$TMP/d/o2.qcow2"
"$QCOW_TOOL" create -q -b base.raw "$TMP/d/o3.qcow2" 2> "$TMP/warn.out" || true
CHECKS=$((CHECKS + 1))
grep -q "warning.*probed as raw" "$TMP/warn.out" || fail "create -b without -F: no warning"
CHECKS=$((CHECKS + 1))
qemu-img info "$TMP/d/o3.qcow2" | grep -q "backing file format: raw" ||
	fail "create -b without -F: the probed format is not recorded"
expect_err "create -b with a missing base" "Could not open backing image" \
	"$QCOW_TOOL" create -q -b nonexistent.qcow2 -F qcow2 "$TMP/d/o4.qcow2"
expect_rc 0 "create -u: the base need not exist" "$QCOW_TOOL" create -q -u -b later.raw -F raw \
	"$TMP/d/u.qcow2" 1M
expect_err "create -u without a size" "needs a size" \
	"$QCOW_TOOL" create -q -u -b later.raw -F raw "$TMP/d/u2.qcow2"
expect_err "create -f raw -b" "not supported for file format 'raw'" \
	"$QCOW_TOOL" create -q -f raw -b base.raw "$TMP/d/o5.raw" 1M
expect_err "create -F alone" "without backing file" \
	"$QCOW_TOOL" create -q -F raw "$TMP/d/o6.qcow2" 1M
expect_err "create -b -F of the wrong format" "not a qcow2 image" \
	"$QCOW_TOOL" create -q -b base.raw -F qcow2 "$TMP/d/o7.qcow2"

# ------------------------------------------------------------ opening
echo "  opening chains"
mv "$TMP/d/base.raw" "$TMP/d/moved.raw"
expect_err "a missing base" "cannot open backing file" \
	"$QCOW_TOOL" io -r -c 'read -q 0 512' "$TMP/d/o.qcow2"
expect_rc 0 "info works without the base" "$QCOW_TOOL" info "$TMP/d/o.qcow2"
expect_rc 0 "check works without the base" "$QCOW_TOOL" check "$TMP/d/o.qcow2"
mv "$TMP/d/moved.raw" "$TMP/d/base.raw"
qemu-img create -q -f qcow2 "$TMP/l1.qcow2" 1M
qemu-img create -q -f qcow2 -b l1.qcow2 -F qcow2 "$TMP/l2.qcow2"
qemu-img rebase -q -u -b l2.qcow2 -F qcow2 "$TMP/l1.qcow2"
expect_err "a loop in the chain" "loop" "$QCOW_TOOL" io -r -c 'read -q 0 512' "$TMP/l2.qcow2"

finish
