#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Images written by qemu-img/qemu-io, read by qcow-tool. For each image of
# the matrix (every cluster size with 16-bit refcounts, every refcount width
# with 64 KiB clusters, compat 0.10 and 1.1, preallocation=metadata, an odd
# virtual size, compressed images from `qemu-img convert -c`), a seeded
# workload of pattern writes at odd offsets, write -z (with and without -u)
# and discards is applied with qemu-io; then
#   - `qcow-tool convert -O raw` must equal `qemu-img convert -O raw` (cmp),
#   - `qcow-tool check` must exit as `qemu-img check` does (0 here),
#   - `qcow-tool info` must succeed,
#   - `qcow-tool map --output=json` must agree with qemu-img map (data/present),
#   - `qcow-tool io -r` reads with -P of a known pattern must pass.
# Run from the repository root. Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup
command -v jq >/dev/null 2>&1 || echo "jq not found: map comparisons skipped"

# qemu_workload IMG SIZE CLUSTER COMPAT: random IO through qemu-io.
qemu_workload() {
	local img="$1" size="$2" cs="$3" compat="$4" i off len pat args=()

	for ((i = 0; i < 30; i++)); do
		rand 4
		case $R in
		0) rand "$size"; off=$R ;;                             # any byte
		1) rand $((size / 512)); off=$((R * 512)) ;;           # sector
		2) rand $((size / cs)); off=$((R * cs)) ;;             # cluster
		3) rand "$size"; off=$((R | 1)) ;;                     # odd
		esac
		rand $((3 * cs + 8192)); len=$((R + 1))
		[ $((off + len)) -le "$size" ] || len=$((size - off))
		[ "$len" -gt 0 ] || continue
		rand 255; pat=$((R + 1))
		args+=(-c "write -q -P $pat $off $len")
	done
	for ((i = 0; i < 6; i++)); do
		rand "$size"; off=$R
		rand $((2 * cs + 4096)); len=$((R + 1))
		[ $((off + len)) -le "$size" ] || len=$((size - off))
		[ "$len" -gt 0 ] || continue
		args+=(-c "write -q -z $off $len")
	done
	if [ "$compat" = 1.1 ]; then
		for ((i = 0; i < 3; i++)); do
			rand $((size / cs)); off=$((R * cs))
			len=$cs
			args+=(-c "write -q -z -u $off $len")
		done
	fi
	for ((i = 0; i < 4; i++)); do
		rand $((size / cs)); off=$((R * cs))
		rand 4; len=$(((R + 1) * cs))
		[ $((off + len)) -le "$size" ] || len=$((size - off))
		[ "$len" -gt 0 ] || continue
		args+=(-c "discard -q $off $len")
	done
	# a known pattern at a known odd place, verified through qcow-tool io
	args+=(-c "write -q -P 0x5a 12345 7777")
	qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null
}

# map_cmp NAME IMG: qcow-tool map --output=json against qemu-img map on the
# same image, as data/present runs. ("zero" is left out here: for data
# clusters qemu-img also asks the host file system, which reports holes where
# qemu wrote copy-on-write zeros or preallocated; tool-cli.sh compares it on
# whole-cluster images.)
# shellcheck disable=SC2016 # jq program, not shell
MERGE='[.[] | {s: .start, e: (.start + .length), d: .data, p: .present}]
	| reduce .[] as $x ([];
		if length > 0 and .[-1].e == $x.s and .[-1].d == $x.d and .[-1].p == $x.p
		then .[-1].e = $x.e else . + [$x] end)
	| .[] | "\(.s) \(.e) data=\(.d) present=\(.p)"'
map_cmp() {
	local name="$1" img="$2"

	command -v jq >/dev/null 2>&1 || return 0
	qemu-img map -f qcow2 --output=json "$img" | jq -r "$MERGE" >"$TMP/q.map"
	expect_rc 0 "$name: qcow-tool map --output=json" "$QCOW_TOOL" map --output=json "$img"
	CHECKS=$((CHECKS + 1))
	if ! jq -r "$MERGE" "$TMP/last.out" >"$TMP/t.map" 2>/dev/null; then
		fail "$name: qcow-tool map --output=json is not a JSON list of ranges"
	elif ! cmp -s "$TMP/q.map" "$TMP/t.map"; then
		fail "$name: map differs from qemu-img map (data/present)"
		diff "$TMP/q.map" "$TMP/t.map" | head -10 | sed 's/^/    | /' >&2
	fi
}

# verify NAME IMG [nopattern]: qcow-tool must read what qemu reads.
verify() {
	local name="$1" img="$2" qrc trc

	rm -f "$TMP/ref.raw" "$TMP/out.raw"
	qemu-img convert -f qcow2 -O raw "$img" "$TMP/ref.raw"
	expect_rc 0 "$name: qcow-tool convert -O raw" \
		"$QCOW_TOOL" convert -f qcow2 -O raw "$img" "$TMP/out.raw"
	if [ -f "$TMP/out.raw" ]; then
		check "$name: qcow-tool convert output differs from qemu-img's" \
			cmp "$TMP/ref.raw" "$TMP/out.raw"
	fi
	qrc=$(rc_of qemu-img check -f qcow2 "$img")
	trc=$(rc_of "$QCOW_TOOL" check -f qcow2 "$img")
	CHECKS=$((CHECKS + 1))
	[ "$qrc" = "$trc" ] || fail "$name: qcow-tool check exit $trc, qemu-img check exit $qrc"
	[ "$qrc" = 0 ] || fail "$name: qemu-img check exit $qrc on a qemu-made image"
	expect_rc 0 "$name: qcow-tool info" "$QCOW_TOOL" info "$img"
	map_cmp "$name" "$img"
	if [ "${3:-}" != nopattern ]; then
		expect_rc 0 "$name: qcow-tool io read -P" \
			"$QCOW_TOOL" io -r -c "read -q -P 0x5a 12345 7777" "$img"
	fi
	rm -f "$TMP/ref.raw" "$TMP/out.raw"
}

# plain NAME CLUSTER REFBITS COMPAT SIZE [EXTRA -o]
plain() {
	local name="$1" cs="$2" rb="$3" compat="$4" size="$5" extra="${6:-}"
	local img="$TMP/$name.qcow2" vsize

	echo "  $name: cluster $cs refcount $rb compat $compat size $size ${extra}"
	qemu_create "$img" "$size" "$cs" "$rb" "$compat" "$extra"
	vsize=$(qemu-img info -f qcow2 "$img" | sed -n 's/^virtual size: .*(\([0-9]*\) bytes)$/\1/p')
	[ -n "$vsize" ] || die "cannot read virtual size of $img"
	qemu_workload "$img" "$vsize" "$cs" "$compat"
	verify "$name" "$img"
	rm -f "$img"
}

# compressed NAME CLUSTER: a converted -c image, then overwritten in places.
compressed() {
	local name="$1" cs="$2" img="$TMP/$1.qcow2" src="$TMP/src.raw"

	echo "  $name: compressed, cluster $cs"
	truncate -s 16M "$src"
	# incompressible, compressible and zero regions, some unaligned
	seeded_bytes 1048576 |
		dd of="$src" bs=65536 iflag=fullblock oflag=seek_bytes seek=4097 conv=notrunc status=none
	yes "qcow2 compressed cluster test line" | head -c 3000000 |
		dd of="$src" bs=4096 seek=1024 conv=notrunc status=none
	printf 'tail' | dd of="$src" bs=1 seek=$((16 * 1048576 - 4)) conv=notrunc status=none
	qemu-img convert -q -c -f raw -O qcow2 -o "cluster_size=$cs" "$src" "$img"
	verify "$name (as converted)" "$img" nopattern
	qemu_workload "$img" $((16 * 1048576)) "$cs" 1.1
	verify "$name (overwritten)" "$img"
	rm -f "$img" "$src"
}

for cs in 512 4096 65536 2097152; do
	plain "cluster-$cs" "$cs" 16 1.1 $((cs >= 65536 ? 96 : 24))M
done
for rb in 1 2 4 8 32 64; do
	plain "refbits-$rb" 65536 "$rb" 1.1 64M
done
plain "v2-cluster-512" 512 16 0.10 16M
plain "v2-cluster-4096" 4096 16 0.10 48M
plain "v2-cluster-65536" 65536 16 0.10 64M
plain "prealloc-65536" 65536 16 1.1 64M preallocation=metadata
plain "prealloc-v2-4096" 4096 16 0.10 32M preallocation=metadata
plain "odd-size" 65536 16 1.1 100000000
plain "refbits-1-cluster-4096" 4096 1 1.1 40M
compressed "compressed-65536" 65536
compressed "compressed-4096" 4096

finish
