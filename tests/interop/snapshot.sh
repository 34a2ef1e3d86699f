#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Internal snapshots both ways with qemu-img, for several cluster sizes,
# refcount widths and both compat levels:
#
#   qemu makes them, qcow-tool works on them: snapshots from
#   `qemu-img snapshot -c` between rounds of qemu-io writes (patterns, zero
#   writes, discards, compressed clusters) are listed by qcow-tool with the
#   ids and names qemu-img info reports; `qcow-tool convert -l` of each equals
#   `qemu-img convert -l`; qcow-tool applies one, writes over the active image,
#   deletes them one by one;
#   qcow-tool makes them, qemu works on them: snapshots from
#   `qcow-tool snapshot -c` between rounds of qcow-tool writes are listed by
#   qemu-img, read back by `qemu-img convert -l` as what the image held when
#   each was taken, applied and deleted by `qemu-img snapshot`.
#
# After every step qemu-img check and qcow-tool check report no errors and
# no leaks, and every snapshot still holds what it held. Also: a snapshot
# with VM state (QEMU's savevm, when qemu-system-x86_64 is there) is listed,
# applied with a note and deleted; refcount_bits=1 and duplicate names are
# refused; a missing snapshot is an error.
# Run from the repository root. Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup
have_jq || die "jq is needed (apt-get install jq)"

# clean IMG WHEN: both checkers say no errors, no leaks.
clean() {
	expect_rc 0 "qemu-img check after $2" qemu-img check "$1"
	expect_rc 0 "qcow-tool check after $2" "$QCOW_TOOL" check "$1"
}

# same_as RAW WHEN CMD...: the raw image CMD writes to $TMP/got.raw equals RAW.
same_as() {
	local want="$1" what="$2"
	shift 2
	rm -f "$TMP/got.raw"
	CHECKS=$((CHECKS + 1))
	if ! "$@" "$TMP/got.raw" >"$TMP/last.out" 2>&1; then
		fail "$what: $* failed"
		sed 's/^/    | /' "$TMP/last.out" | head >&2
	elif ! cmp -s "$TMP/got.raw" "$want"; then
		fail "$what: content differs from $(basename "$want")"
	fi
}

qemu_raw() { qemu-img convert -O raw "$@"; }
tool_raw() { "$QCOW_TOOL_FAST" convert -O raw "$@"; }

# names IMG: the snapshots' "id:name" list as qemu-img info sees it.
qemu_names() {
	qemu-img info --output=json "$1" | jq -r '[.snapshots // [] | .[] | "\(.id):\(.name)"] | join(" ")'
}
tool_names() {
	"$QCOW_TOOL" snapshot -l --output=json "$1" | jq -r '[.[] | "\(.id):\(.name)"] | join(" ")'
}

# gen_writes SIZE CS ROUND: WRITES gets a few seeded writes of every kind
# (qemu-io spelling, which qcow-tool io speaks too), kept out of the last 8
# clusters: those are for qemu's compressed writes (it compresses only into
# unallocated clusters), one per round.
gen_writes() {
	local size="$1" cs="$2" round="$3" i use=$(($1 - 8 * $2))
	WRITES=()
	for ((i = 0; i < 6; i++)); do
		rand $((use / 512 - 16))
		WRITES+=(-c "write -P $((round * 16 + i)) $((R * 512)) $((512 * (1 + R % 16)))")
	done
	rand $((use / cs)); WRITES+=(-c "write -z $((R * cs)) $cs")
	rand $((use / cs)); WRITES+=(-c "discard $((R * cs)) $cs")
}

# qemu_writes IMG SIZE CS ROUND: gen_writes plus a compressed cluster, by qemu-io.
qemu_writes() {
	gen_writes "$2" "$3" "$4"
	qemu-io -f qcow2 "${WRITES[@]}" -c "write -c -P $(($4 + 100)) $(($2 - $4 * $3)) $3" \
		"$1" >/dev/null
}

# tool_writes IMG SIZE CS ROUND: gen_writes through qcow-tool io.
tool_writes() {
	gen_writes "$2" "$3" "$4"
	"$QCOW_TOOL_FAST" io "${WRITES[@]}" "$1" >/dev/null
}

# qemu makes the snapshots, qcow-tool reads, applies and deletes them.
qemu_to_tool() {
	local cs="$1" rb="$2" compat="$3" img="$TMP/q.qcow2" size=$((2 * 1024 * 1024)) r
	rm -f "$img" "$TMP"/q-*.raw
	qemu_create "$img" "$size" "$cs" "$rb" "$compat"
	for r in 1 2 3; do
		qemu_writes "$img" "$size" "$cs" "$r"
		qemu-img snapshot -c "s$r" "$img"
		qemu_raw -l "snapshot.name=s$r" "$img" "$TMP/q-s$r.raw"
	done
	qemu_writes "$img" "$size" "$cs" 4
	qemu_raw "$img" "$TMP/q-active.raw"
	local where="qemu snapshots cs=$cs rb=$rb compat=$compat"
	CHECKS=$((CHECKS + 1))
	[ "$(tool_names "$img")" = "$(qemu_names "$img")" ] ||
		fail "$where: qcow-tool lists '$(tool_names "$img")', qemu '$(qemu_names "$img")'"
	same_as "$TMP/q-s1.raw" "$where: convert -l s1" tool_raw -l snapshot.name=s1 "$img"
	same_as "$TMP/q-s2.raw" "$where: convert -l id 2" tool_raw -l snapshot.id=2 "$img"
	same_as "$TMP/q-active.raw" "$where: active" tool_raw "$img"
	expect_rc 0 "$where: apply s2" "$QCOW_TOOL" snapshot -a s2 "$img"
	clean "$img" "$where: apply"
	same_as "$TMP/q-s2.raw" "$where: active after apply" qemu_raw "$img"
	tool_writes "$img" "$size" "$cs" 5
	clean "$img" "$where: writes after apply"
	for r in 1 2 3; do
		same_as "$TMP/q-s$r.raw" "$where: s$r kept" qemu_raw -l "snapshot.name=s$r" "$img"
	done
	expect_rc 0 "$where: delete s2" "$QCOW_TOOL" snapshot -d s2 "$img"
	clean "$img" "$where: delete s2"
	same_as "$TMP/q-s1.raw" "$where: s1 after deleting s2" qemu_raw -l snapshot.name=s1 "$img"
	same_as "$TMP/q-s3.raw" "$where: s3 after deleting s2" qemu_raw -l snapshot.name=s3 "$img"
	expect_rc 0 "$where: delete s1" "$QCOW_TOOL" snapshot delete 1 "$img"
	expect_rc 0 "$where: delete s3" "$QCOW_TOOL" snapshot delete s3 "$img"
	clean "$img" "$where: delete all"
	CHECKS=$((CHECKS + 1))
	[ -z "$(qemu_names "$img")" ] || fail "$where: snapshots left: $(qemu_names "$img")"
}

# qcow-tool makes the snapshots, qemu reads, applies and deletes them.
tool_to_qemu() {
	local cs="$1" rb="$2" compat="$3" img="$TMP/t.qcow2" size=$((2 * 1024 * 1024)) r
	local where="qcow-tool snapshots cs=$cs rb=$rb compat=$compat"
	rm -f "$img" "$TMP"/t-*.raw
	tool_create "$img" "$size" "$cs" "$rb" "$compat"
	for r in 1 2 3; do
		tool_writes "$img" "$size" "$cs" "$r"
		qemu_raw "$img" "$TMP/t-t$r.raw"
		expect_rc 0 "$where: create t$r" "$QCOW_TOOL" snapshot -c "t$r" "$img"
		clean "$img" "$where: create t$r"
	done
	tool_writes "$img" "$size" "$cs" 4
	CHECKS=$((CHECKS + 1))
	[ "$(qemu_names "$img")" = "1:t1 2:t2 3:t3" ] ||
		fail "$where: qemu lists '$(qemu_names "$img")'"
	for r in 1 2 3; do
		same_as "$TMP/t-t$r.raw" "$where: qemu reads t$r" qemu_raw -l "snapshot.name=t$r" "$img"
	done
	expect_rc 0 "$where: qemu applies t2" qemu-img snapshot -a t2 "$img"
	same_as "$TMP/t-t2.raw" "$where: active after qemu's apply" tool_raw "$img"
	clean "$img" "$where: qemu apply"
	expect_rc 0 "$where: qemu deletes t1" qemu-img snapshot -d t1 "$img"
	clean "$img" "$where: qemu delete"
	same_as "$TMP/t-t3.raw" "$where: t3 after qemu's delete" tool_raw -l snapshot.name=t3 "$img"
}

vm_state() {
	local img="$TMP/vm.qcow2" where="savevm snapshot"
	command -v qemu-system-x86_64 >/dev/null 2>&1 || { echo "no qemu-system-x86_64: VM state case skipped"; return 0; }
	rm -f "$img"
	qemu_create "$img" 4M 65536 16 1.1
	qemu-io -c 'write -P 0x44 0 64k' "$img" >/dev/null
	qemu_raw "$img" "$TMP/vm-disk.raw"
	printf 'savevm vm1\nquit\n' | timeout 60 qemu-system-x86_64 -M none -nodefaults \
		-display none -monitor stdio -drive "file=$img,if=none,id=d0,format=qcow2" \
		>/dev/null 2>&1 || { fail "$where: qemu-system savevm failed"; return 0; }
	qemu-io -c 'write -P 0x55 0 64k' "$img" >/dev/null
	CHECKS=$((CHECKS + 1))
	[ "$("$QCOW_TOOL" snapshot -l --output=json "$img" | jq '.[0]["vm-state-size"]')" -gt 0 ] ||
		fail "$where: qcow-tool does not report the VM state size"
	expect_rc 0 "$where: apply" "$QCOW_TOOL" snapshot -a vm1 "$img"
	CHECKS=$((CHECKS + 1))
	grep -q "VM state" "$TMP/last.out" || fail "$where: apply did not say the VM state is unused"
	same_as "$TMP/vm-disk.raw" "$where: disk after apply" qemu_raw "$img"
	clean "$img" "$where: apply"
	expect_rc 0 "$where: delete" "$QCOW_TOOL" snapshot -d vm1 "$img"
	clean "$img" "$where: delete (VM state clusters freed)"
}

refusals() {
	local img="$TMP/r.qcow2"
	rm -f "$img"
	qemu_create "$img" 1M 65536 1 1.1
	qemu-io -c 'write 0 64k' "$img" >/dev/null
	expect_rc 1 "refcount_bits=1 cannot share clusters" "$QCOW_TOOL" snapshot -c x "$img"
	CHECKS=$((CHECKS + 1))
	grep -q "refcount_bits" "$TMP/last.out" || fail "refcount_bits=1: message does not say why"
	clean "$img" "refused snapshot"
	rm -f "$img"
	qemu_create "$img" 1M 65536 16 1.1
	expect_rc 0 "first create" "$QCOW_TOOL" snapshot -c same "$img"
	expect_rc 1 "duplicate name" "$QCOW_TOOL" snapshot -c same "$img"
	expect_rc 1 "apply a missing snapshot" "$QCOW_TOOL" snapshot -a nope "$img"
	expect_rc 1 "delete a missing snapshot" "$QCOW_TOOL" snapshot -d nope "$img"
	expect_rc 1 "convert -l a missing snapshot" "$QCOW_TOOL" convert -l snapshot.name=nope \
		"$img" "$TMP/x.raw"
	clean "$img" "refusals"
}

for cfg in "512 16 1.1" "4096 64 1.1" "65536 16 1.1" "65536 16 0.10" "4096 4 1.1" "16384 16 0.10"; do
	# shellcheck disable=SC2086 # word splitting of the triple is intended
	qemu_to_tool $cfg
	# shellcheck disable=SC2086
	tool_to_qemu $cfg
done
vm_state
refusals
finish
