#!/bin/bash
# SPDX-License-Identifier: MIT
#
# qcow-tool's command line against qemu-img:
#   - create, then info --output=json versus qemu-img info --output=json
#     (virtual-size, cluster-size, format-specific compat / refcount-bits);
#   - map --output=json versus qemu-img map --output=json on the same image
#     (start/length/zero/data/present after merging neighbours with equal flags);
#   - convert raw -> qcow2 -> raw round trip; qemu-img check and compare;
#   - resize grow (absolute and +N) and shrink, checked with qemu-img info;
#     a smaller size (absolute or -N, qcow2 or raw) needs --shrink, as with
#     qemu-img, and is refused without it;
#   - check exit codes 0 / 2 / 3 on clean, corrupted and leaky images (made
#     by editing a refcount block entry found from the header and the map),
#     agreeing with qemu-img check, and -r leaks / -r all repairing them;
#   - io: -P verification failing exits non-zero, matching exits 0;
#   - --help of every subcommand exits 0; unknown options and commands exit 1.
# Run from the repository root. Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

JSON_OK=1
have_jq || { JSON_OK=0; echo "jq not found: JSON field comparisons skipped"; }

# jfield FILE FILTER: one value from a JSON file.
jfield() {
	jq -r "$2" "$1"
}

# ------------------------------------------------------------ create + info
info_cmp() {
	local cs="$1" rb="$2" compat="$3" size="$4" img="$TMP/info.qcow2" f
	local name="create/info cluster $cs refcount $rb compat $compat"

	local qimg="$TMP/info-qemu.qcow2" opts="cluster_size=$cs,refcount_bits=$rb,compat=$compat"

	rm -f "$img" "$qimg"
	# the "Formatting ..." line must read as qemu-img's (file name aside)
	expect_rc 0 "$name: create" "$QCOW_TOOL" create -f qcow2 -o "$opts" "$img" "$size"
	sed "s|$img|IMG|" "$TMP/last.out" >"$TMP/t.banner"
	qemu-img create -f qcow2 -o "$opts" "$qimg" "$size" | sed "s|$qimg|IMG|" >"$TMP/q.banner"
	CHECKS=$((CHECKS + 1))
	cmp -s "$TMP/t.banner" "$TMP/q.banner" ||
		fail "$name: create printed '$(cat "$TMP/t.banner")', qemu-img '$(cat "$TMP/q.banner")'"
	[ -f "$img" ] || return 0
	expect_rc 0 "$name: qemu-img check" qemu-img check -f qcow2 "$img"
	[ "$JSON_OK" = 1 ] || return 0
	qemu-img info -f qcow2 --output=json "$img" >"$TMP/q.json"
	# and qemu-img must see the same image it would have made itself
	qemu-img info -f qcow2 --output=json "$qimg" >"$TMP/qq.json"
	for f in '."virtual-size"' '."cluster-size"' '."format-specific".data.compat' \
		 '."format-specific".data."refcount-bits"'; do
		CHECKS=$((CHECKS + 1))
		[ "$(jfield "$TMP/q.json" "$f")" = "$(jfield "$TMP/qq.json" "$f")" ] ||
			fail "$name: $f of the qcow-tool image '$(jfield "$TMP/q.json" "$f")'," \
			     "of qemu-img's '$(jfield "$TMP/qq.json" "$f")'"
	done
	expect_rc 0 "$name: info --output=json" "$QCOW_TOOL" info --output=json "$img"
	cp "$TMP/last.out" "$TMP/t.json"
	if ! jq -e . "$TMP/t.json" >/dev/null 2>&1; then
		fail "$name: qcow-tool info --output=json is not JSON"
		return 0
	fi
	for f in '."virtual-size"' '."cluster-size"' '.format' \
		 '."format-specific".type' '."format-specific".data.compat' \
		 '."format-specific".data."refcount-bits"' '."format-specific".data.corrupt' \
		 '."format-specific".data."lazy-refcounts"'; do
		CHECKS=$((CHECKS + 1))
		[ "$(jfield "$TMP/q.json" "$f")" = "$(jfield "$TMP/t.json" "$f")" ] ||
			fail "$name: info $f: qcow-tool '$(jfield "$TMP/t.json" "$f")'" \
			     "qemu-img '$(jfield "$TMP/q.json" "$f")'"
	done
}

info_cmp 65536 16 1.1 $((100 * 1048576))
info_cmp 4096 8 1.1 $((10 * 1048576 + 512))
info_cmp 512 64 1.1 1048576
info_cmp 2097152 1 1.1 $((3 * 1073741824))
info_cmp 65536 16 0.10 $((50 * 1048576))
info_cmp 65536 16 1.1 1000
info_cmp 512 2 1.1 $((1048576 + 3))

# ----------------------------------------------------------------- map json
# shellcheck disable=SC2016 # jq program, not shell
MERGE='[.[] | {s: .start, e: (.start + .length), z: .zero, d: .data, p: .present}]
	| reduce .[] as $x ([];
		if length > 0 and .[-1].e == $x.s and .[-1].z == $x.z and .[-1].d == $x.d
		   and .[-1].p == $x.p
		then .[-1].e = $x.e else . + [$x] end)
	| .[] | "\(.s) \(.e) zero=\(.z) data=\(.d) present=\(.p)"'

map_cmp() {
	local img="$1" name="$2"

	[ "$JSON_OK" = 1 ] || return 0
	qemu-img map -f qcow2 --output=json "$img" | jq -r "$MERGE" >"$TMP/q.map"
	expect_rc 0 "$name: map --output=json" "$QCOW_TOOL" map --output=json "$img"
	if ! jq -r "$MERGE" "$TMP/last.out" >"$TMP/t.map" 2>/dev/null; then
		fail "$name: qcow-tool map --output=json is not a JSON list of ranges"
		return 0
	fi
	CHECKS=$((CHECKS + 1))
	if ! cmp -s "$TMP/q.map" "$TMP/t.map"; then
		fail "$name: map differs from qemu-img map"
		diff "$TMP/q.map" "$TMP/t.map" | head -20 | sed 's/^/    | /' >&2
	fi
}

MAPIMG="$TMP/map.qcow2"
for compat in 1.1 0.10; do
	rm -f "$MAPIMG"
	qemu_create "$MAPIMG" 64M 65536 16 "$compat"
	# whole clusters only: how qemu fills partial ones varies with the host
	# file system (holes make qemu-img map report zero=true for data)
	qemu-io -f qcow2 -c 'write -q -P 1 0 128k' -c 'write -q -P 2 1M 64k' \
		-c 'write -q -P 3 3M 64k' -c 'write -q -z 1M 64k' -c 'write -q -P 4 8M 256k' \
		-c 'discard -q 8M 64k' -c 'write -q -z 16M 128k' -c 'write -q -P 5 63M 1M' \
		"$MAPIMG" >/dev/null
	map_cmp "$MAPIMG" "map compat $compat"
done
# Whole clusters only: the JSON must be qemu-img's, byte for byte, offsets
# included. Zero clusters that keep a host cluster (write -z) and those that
# do not (write -z -u) are separate ranges, as qemu reports them.
map_exact() {
	local img="$1" name="$2"

	CHECKS=$((CHECKS + 1))
	if ! diff <(qemu-img map -f qcow2 --output=json "$img") \
		<("$QCOW_TOOL" map --output=json "$img") >"$TMP/map.diff"; then
		fail "$name: map --output=json differs from qemu-img's"
		head -20 "$TMP/map.diff" | sed 's/^/    | /' >&2
	fi
}
rm -f "$MAPIMG"
qemu_create "$MAPIMG" 1M 65536 16 1.1
qemu-io -f qcow2 -c 'write -q -P 1 0 128k' -c 'write -q -z 0 64k' -c 'write -q -z -u 64k 64k' \
	"$MAPIMG" >/dev/null
map_exact "$MAPIMG" "zero clusters with and without a host cluster"
for compat in 1.1 0.10; do
	rm -f "$MAPIMG"
	qemu_create "$MAPIMG" 64M 65536 16 "$compat"
	qemu-io -f qcow2 -c 'write -q -P 1 0 128k' -c 'write -q -P 2 1M 64k' \
		-c 'write -q -P 3 3M 192k' -c 'write -q -z 1M 64k' -c 'write -q -z -u 3M 64k' \
		-c 'write -q -P 4 8M 256k' -c 'discard -q 8M 64k' -c 'write -q -z 16M 128k' \
		-c 'write -q -P 5 63M 1M' "$MAPIMG" >/dev/null
	map_exact "$MAPIMG" "map compat $compat, exactly"
done

# the same layout written by qcow-tool, mapped by both
rm -f "$MAPIMG"
tool_create "$MAPIMG" 64M 4096 16 1.1
"$QCOW_TOOL" io -c 'write -q -P 1 0 128k' -c 'write -q -P 2 1M 64k' -c 'write -q -z 1M 4k' \
	-c 'write -q -P 4 8M 256k' -c 'discard -q 8M 64k' -c 'write -q -P 5 63M 1M' \
	"$MAPIMG" >/dev/null || fail "qcow-tool io for the map image"
map_cmp "$MAPIMG" "map of a qcow-tool-written image"

# ---------------------------------------------------------- convert round trip
RAW="$TMP/src.raw"
truncate -s 20M "$RAW"
seeded_bytes 3000000 |
	dd of="$RAW" bs=65536 iflag=fullblock oflag=seek_bytes seek=777 conv=notrunc status=none
yes 'convert round trip' | head -c 1048576 | dd of="$RAW" bs=4096 seek=2048 conv=notrunc status=none
printf 'end' | dd of="$RAW" bs=1 seek=$((20 * 1048576 - 3)) conv=notrunc status=none
for o in "" "-o cluster_size=4096,refcount_bits=4" "-o compat=0.10,cluster_size=512"; do
	rm -f "$TMP/rt.qcow2" "$TMP/rt.raw"
	# shellcheck disable=SC2086
	expect_rc 0 "convert raw->qcow2 $o" "$QCOW_TOOL" convert -f raw -O qcow2 $o "$RAW" "$TMP/rt.qcow2"
	[ -f "$TMP/rt.qcow2" ] || continue
	expect_rc 0 "convert $o: qemu-img check" qemu-img check -f qcow2 "$TMP/rt.qcow2"
	expect_rc 0 "convert $o: qemu-img compare" qemu-img compare -f raw -F qcow2 "$RAW" "$TMP/rt.qcow2"
	expect_rc 0 "convert qcow2->raw $o" "$QCOW_TOOL" convert -f qcow2 -O raw "$TMP/rt.qcow2" "$TMP/rt.raw"
	check "convert $o: round trip differs" cmp "$RAW" "$TMP/rt.raw"
done

# ------------------------------------------------------------------- resize
vsize_of() {
	qemu-img info -f qcow2 "$1" | sed -n 's/^virtual size: .*(\([0-9]*\) bytes)$/\1/p'
}
RIMG="$TMP/resize.qcow2"
rm -f "$RIMG"
tool_create "$RIMG" 10M 65536 16 1.1
"$QCOW_TOOL" io -c 'write -q -P 7 1M 64k' "$RIMG" >/dev/null || fail "io on resize image"
expect_rc 0 "resize to 200M" "$QCOW_TOOL" resize "$RIMG" 200M
CHECKS=$((CHECKS + 1))
[ "$(vsize_of "$RIMG")" = 209715200 ] || fail "after resize 200M qemu-img says $(vsize_of "$RIMG")"
expect_rc 0 "resize +1G" "$QCOW_TOOL" resize "$RIMG" +1G
CHECKS=$((CHECKS + 1))
[ "$(vsize_of "$RIMG")" = $((209715200 + 1073741824)) ] || fail "after +1G: $(vsize_of "$RIMG")"
expect_rc 0 "io write past the old end" "$QCOW_TOOL" io -c 'write -q -P 9 1G 64k' "$RIMG"
expect_rc 0 "resize: qemu-img check" qemu-img check -f qcow2 "$RIMG"
expect_rc 0 "resize: qemu-io reads the data" \
	qemu-io -f qcow2 -c 'read -q -P 9 1G 64k' -c 'read -q -P 7 1M 64k' "$RIMG"
CHECKS=$((CHECKS + 1))
[ "$(rc_of "$QCOW_TOOL" resize "$RIMG" 512M)" != 0 ] ||
	fail "shrink over data at 1G (without --shrink) succeeded"
CHECKS=$((CHECKS + 1))
[ "$(rc_of "$QCOW_TOOL" resize --shrink "$RIMG" 512M)" != 0 ] ||
	fail "shrink over allocated data at 1G succeeded"
expect_rc 0 "shrink over an unallocated tail" "$QCOW_TOOL" resize --shrink "$RIMG" $((1073741824 + 65536))
CHECKS=$((CHECKS + 1))
[ "$(vsize_of "$RIMG")" = $((1073741824 + 65536)) ] || fail "after shrink: $(vsize_of "$RIMG")"
expect_rc 0 "shrink: qemu-img check" qemu-img check -f qcow2 "$RIMG"

# shrinking needs --shrink, as in qemu-img (which refuses the same commands)
SIMG="$TMP/shrink.qcow2"
rm -f "$SIMG"
tool_create "$SIMG" 10M 65536 16 1.1
cp "$SIMG" "$TMP/shrink-qemu.qcow2"
expect_rc 1 "qemu-img resize to a smaller size without --shrink (test sanity)" \
	qemu-img resize -f qcow2 "$TMP/shrink-qemu.qcow2" 5M
for target in 5M -512 $((10 * 1048576 - 1)); do
	expect_rc 1 "resize $target (smaller) without --shrink" "$QCOW_TOOL" resize "$SIMG" "$target"
	CHECKS=$((CHECKS + 1))
	grep -q -- '--shrink' "$TMP/last.out" || fail "resize $target: the message does not mention --shrink"
	CHECKS=$((CHECKS + 1))
	[ "$(vsize_of "$SIMG")" = 10485760 ] || fail "resize $target without --shrink changed the size"
done
expect_rc 0 "resize to the same size without --shrink" "$QCOW_TOOL" resize "$SIMG" 10M
expect_rc 0 "resize -512 with --shrink" "$QCOW_TOOL" resize --shrink "$SIMG" -512
CHECKS=$((CHECKS + 1))
[ "$(vsize_of "$SIMG")" = $((10 * 1048576 - 512)) ] || fail "after --shrink -512: $(vsize_of "$SIMG")"
expect_rc 0 "resize 5M with --shrink" "$QCOW_TOOL" resize "$SIMG" --shrink 5M
CHECKS=$((CHECKS + 1))
[ "$(vsize_of "$SIMG")" = 5242880 ] || fail "after --shrink 5M: $(vsize_of "$SIMG")"
expect_rc 0 "shrunk image: qemu-img check" qemu-img check -f qcow2 "$SIMG"
SRAW="$TMP/shrink.raw"
truncate -s 10M "$SRAW"
expect_rc 1 "raw resize 5M without --shrink" "$QCOW_TOOL" resize -f raw "$SRAW" 5M
CHECKS=$((CHECKS + 1))
[ "$(stat -c %s "$SRAW")" = 10485760 ] || fail "raw resize without --shrink truncated the file"
expect_rc 0 "raw resize 5M with --shrink" "$QCOW_TOOL" resize -f raw --shrink "$SRAW" 5M
CHECKS=$((CHECKS + 1))
[ "$(stat -c %s "$SRAW")" = 5242880 ] || fail "raw resize --shrink: $(stat -c %s "$SRAW") bytes"
expect_rc 0 "resize --help mentions --shrink" "$QCOW_TOOL" resize --help
CHECKS=$((CHECKS + 1))
grep -q -- '--shrink' "$TMP/last.out" || fail "resize --help does not describe --shrink"

# ------------------------------------------------------- check exit statuses
# An image with data. Leak: append a cluster and give it refcount 1 in
# refcount block 0 (found through the header). Corruption: set the refcount
# of guest cluster 0's host cluster (found through qemu-img map) to 0.
CIMG="$TMP/check.qcow2"
rm -f "$CIMG"
qemu_create "$CIMG" 64M 65536 16 1.1
qemu-io -f qcow2 -c 'write -q -P 0x33 0 192k' "$CIMG" >/dev/null
refblock0() {
	local rt
	rt=$(read_be "$1" 48 8)
	echo $(( $(read_be "$1" "$rt" 8) & ~511 ))
}
expect_rc 0 "check clean" "$QCOW_TOOL" check "$CIMG"
expect_rc 0 "check clean --output=json" "$QCOW_TOOL" check --output=json "$CIMG"
RB=$(refblock0 "$CIMG")

LIMG="$TMP/leak.qcow2"
cp "$CIMG" "$LIMG"
IDX=$(( ($(stat -c %s "$LIMG") + 65535) / 65536 ))
truncate -s $(( (IDX + 1) * 65536 )) "$LIMG"
write_be "$LIMG" $((RB + 2 * IDX)) 2 1
expect_rc 3 "qemu-img check on the leaky image (test sanity)" qemu-img check "$LIMG"
expect_rc 3 "check on a leaky image" "$QCOW_TOOL" check "$LIMG"
expect_rc 3 "check -q on a leaky image" "$QCOW_TOOL" check -q "$LIMG"
expect_rc 0 "check -r leaks" "$QCOW_TOOL" check -r leaks "$LIMG"
expect_rc 0 "qemu-img check after -r leaks" qemu-img check "$LIMG"
expect_rc 0 "data intact after -r leaks" qemu-io -f qcow2 -c 'read -q -P 0x33 0 192k' "$LIMG"

if [ "$JSON_OK" = 1 ]; then
	KIMG="$TMP/corrupt.qcow2"
	cp "$CIMG" "$KIMG"
	HOST=$(qemu-img map -f qcow2 --output=json "$KIMG" | jq -r '[.[] | select(.data)][0].offset')
	ENT=$((RB + 2 * (HOST / 65536)))
	CHECKS=$((CHECKS + 1))
	[ "$(read_be "$KIMG" "$ENT" 2)" = 1 ] || die "refcount entry at $ENT is not 1: test bug"
	write_be "$KIMG" "$ENT" 2 0
	expect_rc 2 "qemu-img check on the corrupt image (test sanity)" qemu-img check "$KIMG"
	expect_rc 2 "check on a corrupt image" "$QCOW_TOOL" check "$KIMG"
	cp "$KIMG" "$TMP/corrupt2.qcow2"
	expect_rc 2 "check -r leaks leaves the corruption" \
		"$QCOW_TOOL" check -r leaks "$TMP/corrupt2.qcow2"
	expect_rc 0 "check -r all" "$QCOW_TOOL" check -r all "$KIMG"
	expect_rc 0 "qemu-img check after -r all" qemu-img check "$KIMG"
	expect_rc 0 "data intact after -r all" qemu-io -f qcow2 -c 'read -q -P 0x33 0 192k' "$KIMG"
fi
expect_rc 1 "check on a missing file" "$QCOW_TOOL" check "$TMP/nonexistent.qcow2"

# ------------------------------------------------------------------------ io
IOIMG="$TMP/io.qcow2"
rm -f "$IOIMG"
tool_create "$IOIMG" 4M 65536 16 1.1
expect_rc 0 "io write" "$QCOW_TOOL" io -c 'write -q -P 0x11 1000 5000' "$IOIMG"
expect_rc 0 "io read -P matching" "$QCOW_TOOL" io -c 'read -q -P 0x11 1000 5000' "$IOIMG"
CHECKS=$((CHECKS + 1))
[ "$(rc_of "$QCOW_TOOL" io -c 'read -q -P 0x22 1000 5000' "$IOIMG")" != 0 ] ||
	fail "io read -P with the wrong pattern exited 0"
CHECKS=$((CHECKS + 1))
[ "$(rc_of "$QCOW_TOOL" io -c 'read -q -P 0x11 999 2' "$IOIMG")" != 0 ] ||
	fail "io read -P over a byte that is zero exited 0"
CHECKS=$((CHECKS + 1))
[ "$(rc_of "$QCOW_TOOL" io -c 'write -q -P 1 4M 1' "$IOIMG")" != 0 ] ||
	fail "io write past the end exited 0"
CHECKS=$((CHECKS + 1))
[ "$(rc_of "$QCOW_TOOL" io -r -c 'write -q -P 1 0 512' "$IOIMG")" != 0 ] ||
	fail "io write on a read-only open exited 0"
expect_rc 0 "qemu-io agrees" qemu-io -f qcow2 -c 'read -q -P 0x11 1000 5000' "$IOIMG"

# ------------------------------------------------------------------ usage
for cmd in create info check map convert resize io; do
	expect_rc 0 "$cmd --help" "$QCOW_TOOL" "$cmd" --help
	CHECKS=$((CHECKS + 1))
	grep -qi usage "$TMP/last.out" || fail "$cmd --help prints no usage"
	expect_rc 1 "$cmd --no-such-option" "$QCOW_TOOL" "$cmd" --no-such-option "$IOIMG"
done
# No image, or two: qemu-img's message and exit status, command by command.
for cmd in info check map commit rebase; do
	for args in "" "$IOIMG $IOIMG"; do
		# shellcheck disable=SC2086 # $args is zero or two words
		want=$(qemu-img "$cmd" $args 2>&1 | head -1 | sed 's/^qemu-img: //')
		# shellcheck disable=SC2086
		got=$("$QCOW_TOOL" "$cmd" $args 2>&1 | head -1 | sed 's/^qcow-tool: //')
		check "$cmd with ${args:+two images}${args:-no image}: '$got' (qemu-img: '$want')" \
			[ "$got" = "$want" ]
		# shellcheck disable=SC2086
		expect_rc "$(rc_of qemu-img "$cmd" $args)" "$cmd ${args:+two images}${args:-no image}" \
			"$QCOW_TOOL" "$cmd" $args
	done
done
expect_rc 0 "--help" "$QCOW_TOOL" --help
expect_rc 1 "unknown command" "$QCOW_TOOL" no-such-command
expect_rc 1 "no command" "$QCOW_TOOL"

finish
