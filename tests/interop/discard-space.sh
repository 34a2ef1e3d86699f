#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Discard gives host space back, as qemu does: the same operations through
# qcow-tool io and qemu-io on twin images must leave the same guest content
# (qemu-img compare), clean images (qemu-img check, no leaks), and ours
# must use no more disk than qemu's, give or take a few clusters of
# metadata:
#   - 32 MiB written then discarded whole, half, and in scattered pieces,
#     at cluster sizes 64k, 512 and 2M, v3 and v2 (where a discard frees
#     the clusters too);
#   - write -z -u (zeroing that may unmap) frees clusters; write -z keeps
#     them allocated and uses the space;
#   - a discard under an internal snapshot keeps every shared cluster
#     (the snapshot still reads its data) and gives nothing back.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

kib() { echo $(($(stat -c %b "$1") * $(stat -c %B "$1") / 1024)); }

# twin NAME CREATE_OPTS OPS...: the ops on two copies of one new image,
# qemu-io on one and qcow-tool io on the other; then compared.
twin() {
	local name="$1" opts="$2" q o slack
	shift 2
	q=$TMP/$name-qemu.qcow2
	o=$TMP/$name-ours.qcow2
	qemu-img create -q -f qcow2 -o "$opts" "$q" 64M
	cp "$q" "$o"
	local args=()
	for op in "$@"; do
		args+=(-c "$op")
	done
	qemu-io -f qcow2 "${args[@]}" "$q" >/dev/null
	expect_rc 0 "$name: qcow-tool io" "$QCOW_TOOL" io -f qcow2 "${args[@]}" "$o"
	expect_rc 0 "$name: same guest content" qemu-img compare -f qcow2 -F qcow2 "$q" "$o"
	expect_rc 0 "$name: qemu-img check" qemu-img check -f qcow2 "$o"
	# a few clusters of metadata either way (qemu frees old tables differently)
	cs=$(qemu-img info --output=json "$o" | sed -n 's/.*"cluster-size": \([0-9]*\).*/\1/p')
	slack=$(( (4 * cs + 65536) / 1024 ))
	CHECKS=$((CHECKS + 1))
	if [ "$(kib "$o")" -gt $(($(kib "$q") + slack)) ]; then
		fail "$name: ours uses $(kib "$o") KiB on disk, qemu's $(kib "$q") KiB"
	fi
	echo "  $name: ours $(kib "$o") KiB, qemu's $(kib "$q") KiB"
	OURS_KIB=$(kib "$o")
}

for opts in cluster_size=65536 cluster_size=512 cluster_size=2M compat=0.10; do
	tag=${opts//[=.]/-}
	twin "all-$tag" "$opts" 'write -P 1 0 32M' 'discard 0 32M'
	# what is left: tables (4 MiB of them at 512-byte clusters, as qemu's)
	CHECKS=$((CHECKS + 1))
	[ "$OURS_KIB" -lt $((5 * cs / 1024 + 6144)) ] ||
		fail "all-$tag: $OURS_KIB KiB left after discarding it all"
	twin "half-$tag" "$opts" 'write -P 1 0 32M' 'discard 16M 16M'
	twin "pieces-$tag" "$opts" 'write -P 1 0 32M' 'discard 1M 3M' 'discard 9M 5M' \
		'write -P 2 10M 1M' 'discard 20M 12M'
done
twin zero-unmap cluster_size=65536 'write -P 1 0 32M' 'write -z -u 0 32M'
CHECKS=$((CHECKS + 1))
[ "$OURS_KIB" -lt 4096 ] || fail "zero-unmap: $OURS_KIB KiB left after write -z -u"
twin zero-keep cluster_size=65536 'write -P 1 0 32M' 'write -z 0 32M'
CHECKS=$((CHECKS + 1))
[ "$OURS_KIB" -gt 30000 ] || fail "zero-keep: write -z gave the space back ($OURS_KIB KiB)"

# under a snapshot: every discarded cluster is still the snapshot's
S=$TMP/snap.qcow2
qemu-img create -q -f qcow2 "$S" 64M
qemu-io -f qcow2 -c 'write -P 7 0 16M' "$S" >/dev/null
qemu-img snapshot -c keep "$S"
before=$(kib "$S")
expect_rc 0 "discard under a snapshot" "$QCOW_TOOL" io -c 'discard 0 16M' "$S"
CHECKS=$((CHECKS + 1))
[ "$(kib "$S")" -ge $((before - 512)) ] ||
	fail "a discard under a snapshot gave back shared clusters ($before -> $(kib "$S") KiB)"
qemu-img convert -l snapshot.name=keep -O raw "$S" "$TMP/keep.raw"
expect_rc 0 "the snapshot still reads its data" qemu-io -f raw -r -c 'read -q -P 7 0 16M' \
	"$TMP/keep.raw"
expect_rc 0 "qemu-img check under a snapshot" qemu-img check "$S"
# once the snapshot goes, its clusters are freed and given back too
expect_rc 0 "delete the snapshot" "$QCOW_TOOL" snapshot -d keep "$S"
CHECKS=$((CHECKS + 1))
[ "$(kib "$S")" -lt 4096 ] || fail "deleting the snapshot kept $(kib "$S") KiB"
expect_rc 0 "qemu-img check after the delete" qemu-img check "$S"

finish
