#!/bin/bash
# SPDX-License-Identifier: MIT
#
# qemu-img parity: on every kind of image qemu-img and qemu-io make (v3 and
# v2; 512 B, 64 KiB and 2 MiB clusters; zero, preallocated and compressed
# clusters, zlib and zstd; internal snapshots; persistent dirty bitmaps,
# saved and in use; backing chains, qcow2 and raw, relative and absolute;
# lazy refcounts, dirty, corrupt; raw files) qcow-tool's
#   - info --output=json and info print byte for byte what qemu-img info
#     prints (info --backing-chain too);
#   - check, check --output=json and map --output=json print what qemu-img's
#     print, and exit alike (check of a raw file: 63);
# on images using a feature we do not serve (extended L2 entries, an
# external data file, AES and LUKS encryption):
#   - info still prints what qemu-img info prints (extended l2, data file,
#     encrypt with the LUKS header's parameters);
#   - check, check -r all, map, io, convert, resize and snapshot -c refuse,
#     exit 1 and name the feature, and the file stays as it was;
# on damaged bitmap directories and LUKS headers, info fails as qemu-img
# info does (exit 1, naming what is wrong; never a crash); and create -o
# lazy_refcounts=on, which we refuse, prints nothing but the error and
# leaves no file.
#
# Nothing is normalised: both programs run in the same directory on the
# same (unchanging) files with the same arguments, so even "actual-size",
# which each computes from the host file system, must agree.
# Run from the repository root. Exit 0 pass, 77 skip, 1 fail.
set -eu
# shellcheck source=tests/interop/lib.sh
. "$(dirname "$0")/lib.sh"

require_qemu
require_tool
setup

# the commands run inside $TMP, so the file names both print are the same
QT="$(cd "$(dirname "$QCOW_TOOL")" && pwd)/$(basename "$QCOW_TOOL")"
cd "$TMP"

# same NAME ARGS...: `qcow-tool ARGS` and `qemu-img ARGS` print the same on
# stdout and exit with the same status.
same() {
	local name="$1" qrc=0 trc=0
	shift
	CHECKS=$((CHECKS + 1))
	qemu-img "$@" >q.out 2>q.err || qrc=$?
	"$QT" "$@" >t.out 2>t.err || trc=$?
	if [ "$qrc" != "$trc" ]; then
		fail "$name: '$*' exits $trc, qemu-img $qrc"
		sed 's/^/    | /' t.err q.err | head -6 >&2
	elif ! cmp -s q.out t.out; then
		fail "$name: '$*' prints other than qemu-img ('<' qemu-img, '>' qcow-tool)"
		diff q.out t.out | head -20 | sed 's/^/    | /' >&2
	fi
	return 0
}

# refused NAME FEATURE ARGS...: `qcow-tool ARGS` exits 1 naming FEATURE.
refused() {
	local name="$1" feature="$2"
	shift 2
	expect_rc 1 "$name: '$*'" "$QT" "$@"
	CHECKS=$((CHECKS + 1))
	grep -qF "unsupported feature: $feature" last.out ||
		fail "$name: '$*' does not name '$feature': $(head -2 last.out)"
}

# served IMG: everything matches qemu-img's.
served() {
	same "$1" info --output=json "$1"
	same "$1" info "$1"
	same "$1" check "$1"
	same "$1" check --output=json "$1"
	same "$1" map --output=json "$1"
}

# unserved IMG FEATURE: info as qemu-img's; the rest refused, nothing written.
unserved() {
	local img="$1" feature="$2"

	same "$img" info --output=json "$img"
	same "$img" info "$img"
	cp "$img" "$img.orig"
	refused "$img" "$feature" check "$img"
	refused "$img" "$feature" check --output=json "$img"
	refused "$img" "$feature" check -r all "$img"
	refused "$img" "$feature" map --output=json "$img"
	refused "$img" "$feature" io -r -c 'read 0 4k' "$img"
	refused "$img" "$feature" io -c 'write -P 9 0 4k' "$img"
	refused "$img" "$feature" convert -O raw "$img" out.raw
	refused "$img" "$feature" resize "$img" 32M
	refused "$img" "$feature" snapshot -c s9 "$img"
	check "$img: a refused command changed the file" cmp -s "$img" "$img.orig"
	rm -f "$img.orig" out.raw
}

# ------------------------------------------------------ images we serve
echo "  images qcow-tool serves"
qemu_zeros_image v3.qcow2
served v3.qcow2

qemu_create v2.qcow2 16M 65536 16 0.10
qemu-io -f qcow2 -c 'write -q -P 1 0 1M' -c 'write -q -z 2M 128k' -c 'discard -q 512k 64k' \
	v2.qcow2
served v2.qcow2

qemu_create c512.qcow2 4M 512 64 1.1
qemu-io -f qcow2 -c 'write -q -P 2 0 100k' -c 'write -q -z 1M 3k' c512.qcow2
served c512.qcow2

qemu_create c2m.qcow2 64M 2097152 1 1.1
qemu-io -f qcow2 -c 'write -q -P 3 3M 5M' -c 'write -q -z 20M 4M' c2m.qcow2
served c2m.qcow2

qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 4M
served prealloc.qcow2

qemu-img convert -c -O qcow2 v3.qcow2 zlib-c.qcow2
served zlib-c.qcow2
qemu-img create -q -f qcow2 -o compression_type=zstd zstd.qcow2 16M
qemu-io -f qcow2 -c 'write -q -c -P 4 0 64k' -c 'write -q -P 5 1M 64k' zstd.qcow2
served zstd.qcow2

# snapshots, one of them named in UTF-8 with a quote (JSON escapes both)
cp v3.qcow2 snap.qcow2
qemu-img snapshot -c first snap.qcow2
qemu-io -f qcow2 -c 'write -q -P 6 0 64k' snap.qcow2
qemu-img snapshot -c "$(printf 'sn\303\251 "two" \360\237\230\200')" snap.qcow2
served snap.qcow2

# bitmaps: enabled, disabled with another granularity, a UTF-8 name;
# written through (saved), then one left in use by a writer that died
qemu-img create -q -f qcow2 bitmaps.qcow2 16M
qemu-img bitmap --add bitmaps.qcow2 b0
qemu-img bitmap --add -g 1M --disable bitmaps.qcow2 b1
qemu-img bitmap --add bitmaps.qcow2 "$(printf 'b\303\251')"
qemu-io -f qcow2 -c 'write -q -P 7 0 128k' bitmaps.qcow2
served bitmaps.qcow2
cp bitmaps.qcow2 inuse.qcow2
(qemu-io -f qcow2 -c 'write -q -P 8 1M 64k' -c abort inuse.qcow2 >/dev/null 2>&1 || true) \
	2>/dev/null
served inuse.qcow2

# backing chains: relative qcow2 names two deep, a raw base, an absolute name
qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -f qcow2 -c 'write -q -P 9 0 1M' base.qcow2
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2
qemu-io -f qcow2 -c 'write -q -P 10 512k 64k' mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
qemu-io -f qcow2 -c 'write -q -z 0 64k' top.qcow2
served top.qcow2
same top.qcow2 info --backing-chain top.qcow2
same top.qcow2 info --backing-chain --output=json top.qcow2
qemu-img create -q -f raw base.raw 8M
qemu-io -f raw -c 'write -q -P 11 64k 64k' base.raw
qemu-img create -q -f qcow2 -b base.raw -F raw ovraw.qcow2
served ovraw.qcow2
qemu-img create -q -f qcow2 -b "$TMP/base.qcow2" -F qcow2 abs.qcow2
served abs.qcow2

# lazy refcounts: clean, then dirty (the writer killed), then corrupt
qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 4M
served lazy.qcow2
cp lazy.qcow2 dirty.qcow2
(qemu-io -f qcow2 -c 'write -q -P 12 0 64k' -c abort dirty.qcow2 >/dev/null 2>&1 || true) \
	2>/dev/null
same dirty.qcow2 info --output=json dirty.qcow2
same dirty.qcow2 info dirty.qcow2
same dirty.qcow2 check dirty.qcow2
cp v3.qcow2 corrupt.qcow2
write_be corrupt.qcow2 72 8 2
same corrupt.qcow2 info --output=json corrupt.qcow2
same corrupt.qcow2 info corrupt.qcow2
same corrupt.qcow2 check corrupt.qcow2

# raw: check has nothing to check (63, as qemu-img)
qemu-img create -q -f raw raw.img 3M
qemu-io -f raw -c 'write -q -P 13 1M 64k' raw.img
served raw.img

# ------------------------------------------------- images we do not serve
echo "  images qcow-tool does not serve"
qemu-img create -q -f qcow2 -o extended_l2=on xl2.qcow2 16M
qemu-io -f qcow2 -c 'write -q -P 14 0 8k' -c 'write -q -z 64k 64k' xl2.qcow2
unserved xl2.qcow2 "extended L2 entries"

qemu-img create -q -f qcow2 -o data_file=df.data df.qcow2 16M
qemu-io -f qcow2 -c 'write -q -P 15 0 64k' df.qcow2
unserved df.qcow2 "external data file"
qemu-img create -q -f qcow2 -o data_file=dfr.data,data_file_raw=on dfr.qcow2 16M
unserved dfr.qcow2 "external data file"

SECRET=(--object "secret,id=sec0,data=123456")
qemu-img create -q -f qcow2 "${SECRET[@]}" -o encrypt.format=aes,encrypt.key-secret=sec0 \
	aes.qcow2 4M
unserved aes.qcow2 encryption
# qemu-img check needs the key as well: it exits 1 too
same aes.qcow2 check aes.qcow2

# LUKS: qemu-img's key-slot benchmark fails at random on a coarse CPU clock
# ("Unable to get accurate CPU usage"); a few tries make it.
LUKS=0
for _ in $(seq 20); do
	if qemu-img create -q -f qcow2 "${SECRET[@]}" \
		-o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10 \
		luks.qcow2 4M 2>/dev/null; then
		LUKS=1
		break
	fi
done
if [ "$LUKS" = 1 ]; then
	unserved luks.qcow2 encryption
	same luks.qcow2 check luks.qcow2
else
	echo "  (qemu-img could not create a LUKS image in 20 tries: LUKS cases skipped)"
fi

# ------------------------------------------------------ damaged headers
# damaged NAME BASE OFFSET BYTES VALUE WORD: BASE with a field overwritten;
# info exits as qemu-img info does (1, refusing it), naming WORD.
damaged() {
	local name="$1" img="bad-$1.qcow2"
	cp "$2" "$img"
	write_be "$img" "$3" "$4" "$5"
	same "$name" info "$img"
	CHECKS=$((CHECKS + 1))
	[ "$(rc_of qemu-img info "$img")" = 1 ] || fail "$name: qemu-img info accepts it (premise)"
	CHECKS=$((CHECKS + 1))
	grep -qi -- "$6" t.err || fail "$name: info does not name '$6': $(head -1 t.err)"
	rm -f "$img"
}

# valid NAME BASE OFFSET STRING: a LUKS name field replaced by another that
# qemu accepts too: the same JSON.
valid() {
	local img="ok-$1.qcow2"
	cp "$2" "$img"
	printf '%s\0' "$4" | dd of="$img" bs=1 seek="$3" conv=notrunc status=none
	same "$1" info --output=json "$img"
	rm -f "$img"
}

echo "  damaged bitmap directories and LUKS headers"
x=$(ext_offset bitmaps.qcow2 23852875) || die "no bitmaps extension in bitmaps.qcow2"
dir=$(read_be bitmaps.qcow2 $((x + 16)) 8)
damaged bm-nb0 bitmaps.qcow2 "$x" 4 0 bitmap
damaged bm-nb-huge bitmaps.qcow2 "$x" 4 70000 bitmap
damaged bm-reserved bitmaps.qcow2 $((x + 4)) 4 1 bitmap
damaged bm-nb-fewer bitmaps.qcow2 "$x" 4 2 bitmap
damaged bm-nb-more bitmaps.qcow2 "$x" 4 4 bitmap
damaged bm-dir-cut bitmaps.qcow2 $((x + 8)) 8 8 bitmap
damaged bm-dir-huge bitmaps.qcow2 $((x + 8)) 8 $((1 << 40)) bitmap
damaged bm-dir-misaligned bitmaps.qcow2 $((x + 16)) 8 $((dir + 8)) bitmap
damaged bm-dir-past-eof bitmaps.qcow2 $((x + 16)) 8 $((1 << 30)) bitmap
damaged bm-table-size-0 bitmaps.qcow2 $((dir + 8)) 4 0 bitmap
damaged bm-table-offset-0 bitmaps.qcow2 "$dir" 8 0 bitmap
damaged bm-table-huge bitmaps.qcow2 $((dir + 8)) 4 $((0x8000001)) bitmap
damaged bm-flags bitmaps.qcow2 $((dir + 12)) 4 4 bitmap
damaged bm-type bitmaps.qcow2 $((dir + 16)) 1 2 bitmap
damaged bm-granularity bitmaps.qcow2 $((dir + 17)) 1 40 bitmap
damaged bm-name-size bitmaps.qcow2 $((dir + 18)) 2 65535 bitmap
damaged bm-extra-data bitmaps.qcow2 $((dir + 20)) 4 8 bitmap

if [ "$LUKS" = 1 ]; then
	x=$(ext_offset luks.qcow2 0537be77) || die "no encryption header extension in luks.qcow2"
	hdr=$(read_be luks.qcow2 "$x" 8)
	slot0=$((hdr + 208))
	damaged luks-magic luks.qcow2 "$hdr" 1 0 LUKS
	damaged luks-version luks.qcow2 $((hdr + 6)) 2 2 LUKS
	damaged luks-cipher luks.qcow2 $((hdr + 8)) 4 $((0x666f6f00)) "not supported"
	damaged luks-payload luks.qcow2 $((hdr + 104)) 4 0 LUKS
	damaged luks-mk-iterations luks.qcow2 $((hdr + 164)) 4 0 LUKS
	damaged luks-slot-active luks.qcow2 "$slot0" 4 1 "key slot"
	damaged luks-slot-iterations luks.qcow2 $((slot0 + 4)) 4 0 "key slot"
	damaged luks-slot-offset luks.qcow2 $((slot0 + 40)) 4 0 "key slot"
	damaged luks-slot-stripes luks.qcow2 $((slot0 + 44)) 4 3999 "key slot"
	damaged luks-slots-overlap luks.qcow2 $((slot0 + 48 + 40)) 4 8 "key slot"
	damaged luks-ext-short luks.qcow2 $((x + 8)) 8 100 "encryption header"
	damaged luks-ext-misaligned luks.qcow2 "$x" 8 $((hdr + 512)) "encryption header"
	damaged luks-ext-past-eof luks.qcow2 "$x" 8 $((1 << 40)) LUKS
	damaged luks-method-aes luks.qcow2 32 4 1 encryption
	damaged luks-method-3 luks.qcow2 32 4 3 encryption
	valid luks-serpent luks.qcow2 $((hdr + 8)) serpent
	valid luks-sha1 luks.qcow2 $((hdr + 72)) sha1
	valid luks-plain64-hash luks.qcow2 $((hdr + 40)) xts-plain64:sha1
	valid luks-essiv luks.qcow2 $((hdr + 40)) xts-essiv:sha256
fi

# ------------------------------------------------------------------ create
echo "  create options qcow-tool refuses"
expect_rc 1 "create -o lazy_refcounts=on is refused" \
	"$QT" create -f qcow2 -o lazy_refcounts=on lazy2.qcow2 1M
CHECKS=$((CHECKS + 1))
"$QT" create -f qcow2 -o lazy_refcounts=on lazy2.qcow2 1M >t.out 2>/dev/null || true
[ ! -s t.out ] || fail "create -o lazy_refcounts=on printed '$(cat t.out)' before refusing"
CHECKS=$((CHECKS + 1))
grep -q "lazy refcounts" last.out || fail "create -o lazy_refcounts=on: '$(cat last.out)'"
check "create -o lazy_refcounts=on left a file behind" test ! -e lazy2.qcow2

finish
