#!/bin/bash
# SPDX-License-Identifier: MIT
#
# What qcow-tool must refuse, repair or keep, on images made by qemu-img:
#   - an image with a backing file: convert, io -r and map read through
#     it; info still shows it, check still checks it;
#   - a dirty image (lazy refcounts, writer killed): refused by read-only
#     opens with the message pointing at `qcow-tool check -r all`; a
#     read-write open repairs it, and qemu-img check calls it clean after;
#   - unknown autoclear bits: kept by read-only opens, cleared by a
#     read-write open;
#   - an unknown header extension and the feature name table: kept across
#     header rewrites (resize, autoclear clearing);
#   - a header whose L1 table or refcount table lies past the end of the
#     file or in the header: check and check -r all exit as qemu-img check
#     does (2, or 0 after a refcount table rebuild), normal opens refuse;
#   - an L2 table with refcount 0 whose L1 entry lacks the COPIED flag (so
#     a write must unshare it): the write fails naming the problem, frees
#     nothing (the allocator gave the table the refcount it lacked), and
#     the next write unshares it for real: data intact, qemu-img check
#     clean.
# Run from the repository root. Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

# expect_msg DESCRIPTION TEXT: the last expect_rc output must contain TEXT.
expect_msg() {
	CHECKS=$((CHECKS + 1))
	if ! grep -qF -- "$2" "$TMP/last.out"; then
		fail "$1: output lacks '$2'"
		sed 's/^/    | /' "$TMP/last.out" | head -10 >&2
	fi
}

# ---------------------------------------------------------- header helpers
# (cluster_size_of, header_length_of and ext_list are in lib.sh)

# ext_payload FILE TYPE: the payload of the first extension of TYPE (hex).
ext_payload() {
	local line len off
	line=$(ext_list "$1" | awk -v t="$2" '$1 == t { print; exit }')
	[ -n "$line" ] || return 1
	read -r _ len off <<<"$line"
	dd if="$1" bs=1 skip="$off" count="$len" status=none
}

# add_ext FILE TYPE(hex) TEXT: append an extension before the end marker
# (qemu-img leaves the rest of the header cluster zero, so the new end
# marker is already there).
add_ext() {
	local f="$1" type="$2" text="$3" end len
	end=$(ext_list "$f" | awk '$1 == "end" { print $2 }')
	[ -n "$end" ] || die "no end marker in $f"
	len=${#text}
	write_be "$f" "$end" 4 $((16#$type))
	write_be "$f" $((end + 4)) 4 "$len"
	printf '%s' "$text" | dd of="$f" bs=1 seek=$((end + 8)) conv=notrunc status=none
	dd if=/dev/zero of="$f" bs=1 seek=$((end + 8 + len)) count=$(((len + 7) / 8 * 8 - len + 8)) \
		conv=notrunc status=none
}

# --------------------------------------------------------- backing file
BASE="$TMP/base.qcow2"
OV="$TMP/overlay.qcow2"
qemu-img create -q -f qcow2 "$BASE" 4M
qemu-io -f qcow2 -c 'write -q -P 0x77 0 1M' "$BASE" >/dev/null
# a relative backing name, as qemu-img writes it when asked so
(cd "$TMP" && qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2)
# once refused, now read through (tests/interop/backing.sh has the rest)
expect_rc 0 "convert of an image with a backing file" \
	"$QCOW_TOOL" convert -O raw "$OV" "$TMP/ov.raw"
expect_rc 0 "convert flattened the base's data" \
	qemu-io -f raw -r -c 'read -q -P 0x77 0 1M' -c 'read -q -P 0 1M 3M' "$TMP/ov.raw"
expect_rc 0 "io -r of an image with a backing file reads the base" \
	"$QCOW_TOOL" io -r -c 'read -q -P 0x77 0 64k' "$OV"
expect_rc 0 "map --output=json of an image with a backing file" \
	"$QCOW_TOOL" map --output=json "$OV"
expect_msg "map --output=json shows the base's range at depth 1" '"depth": 1'
expect_rc 0 "info of an image with a backing file" "$QCOW_TOOL" info "$OV"
expect_msg "info of an image with a backing file" "backing file: base.qcow2"
expect_msg "info of an image with a backing file" "backing file format: qcow2"
expect_rc "$(rc_of qemu-img check "$OV")" "check of an image with a backing file" \
	"$QCOW_TOOL" check "$OV"

# ----------------------------------------------------------- dirty image
# make_dirty PATH: lazy refcounts, data at 0, writer killed before cleanup.
make_dirty() {
	rm -f "$1"
	qemu-img create -q -f qcow2 -o lazy_refcounts=on "$1" 4M
	# (in a subshell that says nothing: qemu-io's abort is the point)
	(qemu-io -f qcow2 -c 'write -q -P 0x44 0 64k' -c abort "$1" >/dev/null 2>&1 || true) 2>/dev/null
	[ $(( $(read_be "$1" 72 8) & 1 )) = 1 ] || die "qemu-io abort left no dirty bit in $1"
}
DIRTY="$TMP/dirty.qcow2"
make_dirty "$DIRTY"
DIRTY_MSG="image is dirty (it was not closed cleanly); repair it with: qcow-tool check -r all"
expect_rc 1 "convert of a dirty image" "$QCOW_TOOL" convert -O raw "$DIRTY" "$TMP/dirty.raw"
expect_msg "convert of a dirty image" "$DIRTY_MSG"
expect_rc 1 "io -r of a dirty image" "$QCOW_TOOL" io -r -c 'read -q -P 0x44 0 64k' "$DIRTY"
expect_msg "io -r of a dirty image" "$DIRTY_MSG"
expect_rc 1 "map of a dirty image" "$QCOW_TOOL" map "$DIRTY"
expect_msg "map of a dirty image" "$DIRTY_MSG"
CHECKS=$((CHECKS + 1))
[ $(( $(read_be "$DIRTY" 72 8) & 1 )) = 1 ] || fail "a refused read-only open cleared the dirty bit"
expect_rc 0 "info of a dirty image" "$QCOW_TOOL" info "$DIRTY"
expect_msg "info of a dirty image" "dirty"
expect_rc "$(rc_of qemu-img check "$DIRTY")" "check of a dirty image: qemu-img check's exit status" \
	"$QCOW_TOOL" check "$DIRTY"
# a read-write open repairs it
expect_rc 0 "io write on a dirty image (repair on open)" \
	"$QCOW_TOOL" io -c 'write -q -P 0x55 1M 64k' "$DIRTY"
CHECKS=$((CHECKS + 1))
[ $(( $(read_be "$DIRTY" 72 8) & 1 )) = 0 ] || fail "dirty bit still set after a read-write open"
expect_rc 0 "qemu-img check after the read-write open" qemu-img check "$DIRTY"
expect_rc 0 "data after the repair" \
	qemu-io -f qcow2 -r -c 'read -q -P 0x44 0 64k' -c 'read -q -P 0x55 1M 64k' "$DIRTY"
expect_rc 0 "io -r after the repair" "$QCOW_TOOL" io -r -c 'read -q -P 0x44 0 64k' "$DIRTY"
# and the command the message names works
make_dirty "$DIRTY"
expect_rc 0 "check -r all on a dirty image" "$QCOW_TOOL" check -r all "$DIRTY"
expect_rc 0 "qemu-img check after check -r all" qemu-img check "$DIRTY"
expect_rc 0 "convert after check -r all" "$QCOW_TOOL" convert -O raw "$DIRTY" "$TMP/dirty.raw"

# ------------------------------------ autoclear bits, extensions, feature table
AC="$TMP/autoclear.qcow2"
qemu-img create -q -f qcow2 "$AC" 16M
qemu-io -f qcow2 -c 'write -q -P 0x21 0 128k' "$AC" >/dev/null
FT_BEFORE=$(ext_payload "$AC" 6803f857 | od -An -v -tx1 | tr -d ' \n')
CHECKS=$((CHECKS + 1))
[ -n "$FT_BEFORE" ] || fail "qemu-img wrote no feature name table (test premise)"
add_ext "$AC" 1234abcd "unknown extension payload"
expect_rc 0 "qemu-img check with the unknown extension (test sanity)" qemu-img check "$AC"
# unknown autoclear bits 5 and 40, at autoclear_features (offset 88)
write_be "$AC" 88 8 $(( (1 << 5) | (1 << 40) ))
expect_rc 0 "io -r with unknown autoclear bits" "$QCOW_TOOL" io -r -c 'read -q -P 0x21 0 128k' "$AC"
CHECKS=$((CHECKS + 1))
[ "$(read_be "$AC" 88 8)" = $(( (1 << 5) | (1 << 40) )) ] ||
	fail "a read-only open changed autoclear_features to $(read_be "$AC" 88 8)"
expect_rc 0 "io write with unknown autoclear bits" "$QCOW_TOOL" io -c 'write -q -P 0x22 1M 4k' "$AC"
CHECKS=$((CHECKS + 1))
[ "$(read_be "$AC" 88 8)" = 0 ] ||
	fail "a read-write open left autoclear_features at $(read_be "$AC" 88 8)"
CHECKS=$((CHECKS + 1))
[ "$(ext_payload "$AC" 1234abcd || true)" = "unknown extension payload" ] ||
	fail "unknown extension lost when the autoclear bits were cleared: $(ext_list "$AC" | tr '\n' ' ')"
expect_rc 0 "resize (a header rewrite)" "$QCOW_TOOL" resize "$AC" 64M
CHECKS=$((CHECKS + 1))
[ "$(ext_payload "$AC" 1234abcd || true)" = "unknown extension payload" ] ||
	fail "unknown extension lost across resize: $(ext_list "$AC" | tr '\n' ' ')"
FT_AFTER=$(ext_payload "$AC" 6803f857 | od -An -v -tx1 | tr -d ' \n' || true)
CHECKS=$((CHECKS + 1))
if [ -z "$FT_AFTER" ]; then
	fail "feature name table lost across resize: $(ext_list "$AC" | tr '\n' ' ')"
elif [ "${#FT_BEFORE}" = "${#FT_AFTER}" ] && [ "$FT_BEFORE" != "$FT_AFTER" ]; then
	# same number of entries as this qemu wrote: the same entries too
	fail "feature name table differs from qemu-img's after resize"
fi
CHECKS=$((CHECKS + 1))
ext_payload "$AC" 6803f857 | tr '\0' '\n' | grep -qx 'lazy refcounts' ||
	fail "feature name table after resize does not name lazy refcounts"
expect_rc 0 "qemu-img check after resize" qemu-img check "$AC"
expect_rc 0 "data after resize" qemu-io -f qcow2 -r -c 'read -q -P 0x21 0 128k' \
	-c 'read -q -P 0x22 1M 4k' "$AC"
CHECKS=$((CHECKS + 1))
[ "$(qemu-img info --output=json "$AC" | sed -n 's/.*"virtual-size": \([0-9]*\).*/\1/p')" = 67108864 ] ||
	fail "qemu-img info after resize does not say 64M"

# -------------------- header tables past EOF / in the header: qemu-img check's verdict
TBASE="$TMP/tables.qcow2"
qemu-img create -q -f qcow2 "$TBASE" 16M
qemu-io -f qcow2 -c 'write -q -P 0x5a 0 128k' "$TBASE" >/dev/null

# table_case NAME FIELD_OFFSET VALUE TABLE_WORD
table_case() {
	local name="$1" field="$2" val="$3" word="$4" img="$TMP/t-$1.qcow2" want got
	cp "$TBASE" "$img"
	write_be "$img" "$field" 8 "$val"
	cp "$img" "$img.orig"

	want=$(rc_of qemu-img check "$img")
	CHECKS=$((CHECKS + 1))
	[ "$want" = 2 ] || fail "$name: qemu-img check exits $want, not 2 (test premise)"
	expect_rc "$want" "$name: check (qemu-img check exits $want)" "$QCOW_TOOL" check "$img"
	expect_rc "$want" "$name: check --output=json" "$QCOW_TOOL" check --output=json "$img"
	check "$name: read-only check changed the file" cmp -s "$img" "$img.orig"
	# normal opens keep refusing
	expect_rc 1 "$name: convert refuses it" "$QCOW_TOOL" convert -O raw "$img" "$TMP/t.raw"
	expect_msg "$name: convert refuses it" "$word"
	expect_rc 1 "$name: io refuses it" "$QCOW_TOOL" io -c 'read -q 0 64k' "$img"

	cp "$img.orig" "$img.qemu"
	want=$(rc_of qemu-img check -r all "$img.qemu")
	expect_rc "$want" "$name: check -r all (qemu-img check -r all exits $want)" \
		"$QCOW_TOOL" check -r all "$img"
	got=$(rc_of qemu-img check "$img")
	CHECKS=$((CHECKS + 1))
	[ "$got" = "$want" ] ||
		fail "$name: qemu-img check exits $got after qcow-tool check -r all, $want after its own"
	if [ "$want" = 0 ]; then
		expect_rc 0 "$name: data after check -r all" \
			qemu-io -f qcow2 -r -c 'read -q -P 0x5a 0 128k' "$img"
		expect_rc 0 "$name: convert after check -r all" \
			"$QCOW_TOOL" convert -O raw "$img" "$TMP/t.raw"
	else
		# the L1 table is lost: nothing is freed, the file is as it was
		check "$name: check -r all changed an image it cannot repair" \
			cmp -s "$img" "$img.orig"
	fi
	rm -f "$img" "$img.orig" "$img.qemu"
}

# ------------------------------------- a shared-looking L2 table at refcount 0
img=$TMP/rc0.qcow2
qemu_create "$img" 16M 64k 16 1.1
qemu-io -f qcow2 -c 'write -q -P 0x5a 0 64k' "$img"
l1=$(read_be "$img" 40 8)
l2=$(( $(read_be "$img" "$l1" 8) & 0x00fffffffffffe00 ))
rb=$(read_be "$img" "$(read_be "$img" 48 8)" 8)
write_be "$img" $(( rb + 2 * (l2 >> 16) )) 2 0	# the table's refcount: 0
write_be "$img" "$l1" 8 "$l2"			# its L1 entry: not COPIED
expect_rc 1 "rc0-l2: the write that must unshare it fails" \
	"$QCOW_TOOL" io -c 'write -q -P 0x33 64k 4k' "$img"
expect_msg "rc0-l2: the write that must unshare it fails" "had refcount 0"
expect_rc 0 "rc0-l2: the next write" "$QCOW_TOOL" io -c 'write -q -P 0x33 64k 4k' "$img"
expect_rc 0 "rc0-l2: qemu-img check after" qemu-img check "$img"
expect_rc 0 "rc0-l2: data intact" \
	qemu-io -f qcow2 -r -c 'read -q -P 0x5a 0 64k' -c 'read -q -P 0x33 64k 4k' "$img"

table_case l1-past-eof 40 $((0x10000000)) "L1 table"
table_case l1-in-header 40 0 "L1 table"
table_case reftable-past-eof 48 $((0x10000000)) "refcount table"
table_case reftable-in-header 48 0 "refcount table"

finish
