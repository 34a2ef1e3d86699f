#!/bin/bash
# SPDX-License-Identifier: MIT
#
# QEMU's image locks, both ways, with qemu-io and qemu-img as the referee.
# A holder keeps an image open in one mode (qemu-io or qcow-tool io:
# read-write, -r, -r -U); then probes try it (a writer, a reader, a reader
# with -U), each once as qemu-io/qemu-img and once as qcow-tool:
#   - our probe must succeed or fail exactly as qemu's does under the same
#     holder, and a refusal must name the lock as QEMU names it ("Failed to
#     get "write" lock", "Failed to get shared "write" lock");
#   - qemu's probe must get the same answer whether the holder is qemu-io
#     or qcow-tool in the same mode (we take the bytes QEMU takes);
#   - every qcow-tool command that writes (io, snapshot -c, resize, commit,
#     rebase, check -r) is refused under a qemu-io writer and a read-only
#     qemu-io, and -U where qemu-img refuses it (a writing command);
#   - a backing chain: a qcow2 base held by a qemu-io writer refuses our
#     reader of the overlay as it refuses qemu's (and -U lets both through);
#     a raw base shares everything, as in QEMU; our overlay reader keeps
#     qemu-io from writing a qcow2 base.
# Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

IMG=$TMP/img.qcow2
qemu-img create -q -f qcow2 "$IMG" 4M

# lock_seen FILE: someone holds an OFD lock on byte 100 of FILE (every
# mode of QEMU's protocol does).
lock_seen() {
	local ino
	ino=$(stat -c %i "$1")
	awk -v ino="$ino" '$2 == "OFDLCK" && $6 ~ (":" ino "$") && $7 <= 100 && $8 >= 100 \
		{ found = 1 } END { exit !found }' /proc/locks
}

# hold FILE PROGRAM ARGS...: start PROGRAM (qemu-io or qcow-tool io, which
# read commands from stdin) on FILE and wait until its locks are taken.
HOLDER=""
hold() {
	local file="$1" _
	shift
	rm -f "$TMP/fifo"
	mkfifo "$TMP/fifo"
	"$@" "$file" <"$TMP/fifo" >"$TMP/holder.out" 2>&1 &
	HOLDER=$!
	exec 9>"$TMP/fifo"
	for _ in $(seq 200); do
		lock_seen "$file" && return 0
		kill -0 "$HOLDER" 2>/dev/null || break
		sleep 0.05
	done
	fail "holder $* did not lock $file: $(cat "$TMP/holder.out")"
}

release() {
	exec 9>&-
	wait "$HOLDER" || true
	HOLDER=""
}

# The probes: "qemu" and "ours" of each kind, on $1.
probe() {
	local who="$1" kind="$2" img="$3"
	case $who-$kind in
	qemu-write) qemu-io -f qcow2 -c 'write -q -P 7 0 4k' "$img" ;;
	qemu-read) qemu-img info -f qcow2 "$img" ;;
	qemu-share) qemu-img info -U -f qcow2 "$img" ;;
	qemu-chainread) qemu-io -r -f qcow2 -c 'read -q 0 4k' "$img" ;;
	qemu-chainshare) qemu-io -r -U -f qcow2 -c 'read -q 0 4k' "$img" ;;
	ours-write) "$QCOW_TOOL" io -f qcow2 -c 'write -q -P 7 0 4k' "$img" ;;
	ours-read) "$QCOW_TOOL" info -f qcow2 "$img" ;;
	ours-share) "$QCOW_TOOL" info -U -f qcow2 "$img" ;;
	ours-chainread) "$QCOW_TOOL" io -r -f qcow2 -c 'read -q 0 4k' "$img" ;;
	ours-chainshare) "$QCOW_TOOL" io -r -U -f qcow2 -c 'read -q 0 4k' "$img" ;;
	esac
}

# The lock a refusal names, as QEMU words it ("" when none).
lock_named() {
	grep -o 'Failed to get \(shared \)\?"[a-z ]*" lock' "$1" | head -1 || true
}

# agree LABEL KIND IMG: qemu's probe and ours, same exit status (0 or not)
# and the same lock named; records qemu's answer in QANS.
agree() {
	local label="$1" kind="$2" img="$3" q=0 o=0
	probe qemu "$kind" "$img" >"$TMP/q.out" 2>&1 || q=1
	probe ours "$kind" "$img" >"$TMP/o.out" 2>&1 || o=1
	CHECKS=$((CHECKS + 1))
	if [ "$q" != "$o" ]; then
		fail "$label: $kind probe: qemu exit $q, ours $o"
		sed 's/^/    qemu | /' "$TMP/q.out" | head -3 >&2
		sed 's/^/    ours | /' "$TMP/o.out" | head -3 >&2
	elif [ "$(lock_named "$TMP/q.out")" != "$(lock_named "$TMP/o.out")" ]; then
		fail "$label: $kind probe: qemu names '$(lock_named "$TMP/q.out")', we name" \
			"'$(lock_named "$TMP/o.out")'"
	fi
	QANS=$q
}

# ------------------------------------------------------------ one image
echo "  holders and probes"
declare -A ANSWER
for mode in rw ro ro-share; do
	case $mode in
	rw) args=() ;;
	ro) args=(-r) ;;
	ro-share) args=(-r -U) ;;
	esac
	for holder in qemu ours; do
		if [ $holder = qemu ]; then
			hold "$IMG" qemu-io -f qcow2 "${args[@]}"
		else
			hold "$IMG" "$QCOW_TOOL" io -f qcow2 "${args[@]}"
		fi
		for kind in write read share; do
			agree "$holder holds $mode" "$kind" "$IMG"
			key=$mode-$kind
			if [ $holder = qemu ]; then
				ANSWER[$key]=$QANS
			else
				CHECKS=$((CHECKS + 1))
				[ "${ANSWER[$key]}" = "$QANS" ] ||
					fail "qemu's $kind probe: exit ${ANSWER[$key]} under qemu-io" \
						"holding $mode, $QANS under qcow-tool io holding $mode"
			fi
		done
		release
	done
done
# what QEMU's protocol says, so that the matrix cannot pass vacuously
CHECKS=$((CHECKS + 1))
want="rw-write=1 rw-read=1 rw-share=0 ro-write=1 ro-read=0 ro-share=0"
want+=" ro-share-write=0 ro-share-read=0 ro-share-share=0"
got=""
for key in rw-write rw-read rw-share ro-write ro-read ro-share ro-share-write ro-share-read \
	ro-share-share; do
	got+="${got:+ }$key=${ANSWER[$key]}"
done
[ "$got" = "$want" ] || fail "qemu's answers: $got, want $want"

# ------------------------------------------------------------ every writer
echo "  commands that write, under QEMU"
qemu-img create -q -f qcow2 "$TMP/base.qcow2" 4M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$TMP/top.qcow2"
# writer NAME IMG: the qcow-tool command NAME, which writes IMG
writer() {
	case $1 in
	io) "$QCOW_TOOL" io -c 'write -q 0 4k' "$2" ;;
	snapshot) "$QCOW_TOOL" snapshot -c s1 "$2" ;;
	resize) "$QCOW_TOOL" resize "$2" 8M ;;
	commit) "$QCOW_TOOL" commit "$2" ;;
	rebase) "$QCOW_TOOL" rebase -u -b '' "$2" ;;
	check) "$QCOW_TOOL" check -r all "$2" ;;
	esac
}
for mode in rw ro; do
	[ $mode = rw ] && args=() || args=(-r)
	hold "$TMP/top.qcow2" qemu-io -f qcow2 "${args[@]}"
	for cmd in io snapshot resize commit rebase check; do
		CHECKS=$((CHECKS + 1))
		rc=0
		writer $cmd "$TMP/top.qcow2" >"$TMP/w.out" 2>&1 || rc=$?
		if [ "$rc" = 0 ] || ! grep -q 'Failed to get "write" lock' "$TMP/w.out"; then
			fail "qcow-tool $cmd under a qemu-io $mode holder: exit $rc"
			sed 's/^/    | /' "$TMP/w.out" | head -3 >&2
		fi
	done
	release
done
# -U is for reading: qemu-img refuses it where the image is written
for cmd in "check -U -r all" "snapshot -U -c s2"; do
	# shellcheck disable=SC2086 # the options, split into words
	q=$(rc_of qemu-img $cmd "$TMP/top.qcow2")
	# shellcheck disable=SC2086
	o=$(rc_of "$QCOW_TOOL" $cmd "$TMP/top.qcow2")
	CHECKS=$((CHECKS + 1))
	[ "$q$o" = 11 ] || fail "$cmd: qemu-img exit $q, ours $o (want 1)"
done
expect_rc 0 "qemu-img check after all that" qemu-img check "$TMP/top.qcow2"

# ------------------------------------------------------------ chains
echo "  backing chains"
rm -f "$TMP/top.qcow2"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$TMP/top.qcow2"
truncate -s 4M "$TMP/base.raw"
qemu-img create -q -f qcow2 -b base.raw -F raw "$TMP/rtop.qcow2"
# a writer on the base: a qcow2 base refuses readers of the chain
hold "$TMP/base.qcow2" qemu-io -f qcow2
agree "qemu-io writes the qcow2 base" chainread "$TMP/top.qcow2"
CHECKS=$((CHECKS + 1))
[ "$QANS" = 1 ] || fail "qemu-io read the overlay of a base qemu-io writes"
grep -q 'base.qcow2' "$TMP/o.out" || fail "the refusal does not name the backing file"
agree "qemu-io writes the qcow2 base, -U" chainshare "$TMP/top.qcow2"
release
# a raw base is shared for writing, as QEMU's raw backing files are
hold "$TMP/base.raw" qemu-io -f raw
agree "qemu-io writes the raw base" chainread "$TMP/rtop.qcow2"
CHECKS=$((CHECKS + 1))
[ "$QANS" = 0 ] || fail "qemu-io refused the overlay of a raw base qemu-io writes"
release
# and the other way: our reader of the overlay holds the qcow2 base
for holder in qemu ours; do
	if [ $holder = qemu ]; then
		hold "$TMP/top.qcow2" qemu-io -r -f qcow2
	else
		hold "$TMP/top.qcow2" "$QCOW_TOOL" io -r -f qcow2
	fi
	rc=$(rc_of qemu-io -f qcow2 -c 'write -q 0 4k' "$TMP/base.qcow2")
	CHECKS=$((CHECKS + 1))
	[ "$rc" = 1 ] || fail "qemu-io wrote a base that $holder's overlay reader holds"
	release
done

finish
