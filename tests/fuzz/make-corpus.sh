#!/bin/bash
# SPDX-License-Identifier: MIT
#
# make-corpus.sh [TARGET...]: regenerate the seed corpora under
# tests/fuzz/corpus/<target>/ (default: all of image, tool, state).
# Run from the repository root; the image seeds need qemu-img and qemu-io
# (the same ones the interop tests use) and tools/qcow-tool (make).
#
# image: small qcow2 files in the interop matrix style: cluster sizes 512 B
#        to 64 KiB, refcount widths 1..64, compat 0.10 and 1.1, data, zero
#        clusters (-z, -z -u), compressed clusters (write -c), discards,
#        preallocated metadata, internal snapshots; plus the odd ones: dirty (lazy refcounts and
#        an abort), the corrupt bit, a backing file, a bitmap, extended L2,
#        an external data file, zstd, truncated files, a bare header, junk.
#        Virtual sizes stay small so each file is a few KiB to ~200 KiB.
# tool:  strings for the qcow-tool parsers (see fuzz-tool.c for the format).
# state: daemon state files and numbers (see fuzz-state.c).
#
# Existing seeds of a regenerated target are removed first. Everything is
# deterministic: the same qemu gives the same files.
set -euo pipefail

cd "$(dirname "$0")/../.."
CORPUS=tests/fuzz/corpus
QCOW_TOOL=${QCOW_TOOL:-tools/qcow-tool}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(image tool state)

# ------------------------------------------------------------------ image

tmp=
cleanup() { [ -z "$tmp" ] || rm -rf "$tmp"; }
trap cleanup EXIT

# qio IMG CMD...: each CMD one qemu-io -c
qio() {
	local img=$1 a=()
	shift
	for c in "$@"; do a+=(-c "$c"); done
	qemu-io -f qcow2 "${a[@]}" "$img" >/dev/null
}

# mk NAME SIZE OPTS: a new image in $tmp (qemu-img create -o OPTS)
mk() {
	qemu-img create -q -f qcow2 -o "$3" "$tmp/$1" "$2"
}

# keep NAME: move $tmp/NAME into the corpus
keep() {
	cp "$tmp/$1" "$CORPUS/image/$1"
}

# mixed IMG CS SIZE COMPAT: data, partial writes, zeroes, compressed, discards
mixed() {
	local img=$1 cs=$2 size=$3 compat=$4 cmds=()
	cmds+=("write -P 0x11 0 $((cs * 2))")                   # two clusters
	cmds+=("write -P 0x22 $((cs * 3 + 100)) 300")           # a partial cluster (COW)
	cmds+=("write -P 0x33 $((size / 2 - 700)) 1400")        # across a cluster boundary
	cmds+=("write -c -P 0x44 $((cs * 6)) $cs")              # a compressed cluster
	# (one compressed cluster a command: qemu-io compresses the clusters of
	# one request in parallel, so their order on disk would vary)
	cmds+=("write -c -P 0x45 $((cs * 8)) $cs")              # two compressed clusters
	cmds+=("write -c -P 0x46 $((cs * 9)) $cs")
	cmds+=("write -z $((cs * 10)) $((cs * 2))")             # zero clusters (v3: flag)
	cmds+=("write -P 0x55 $((size - cs)) $cs")              # the last cluster
	cmds+=("discard $((cs * 1)) $cs")                       # a hole in the first write
	if [ "$compat" = 1.1 ]; then
		cmds+=("write -P 0x66 $((cs * 12)) $cs")
		cmds+=("write -z -u $((cs * 12)) $cs")          # zero, unmapped
		cmds+=("write -P 0x77 $((cs * 13)) $cs")
		cmds+=("write -z $((cs * 13)) $cs")             # zero flag, preallocated
	fi
	qio "$img" "${cmds[@]}"
}

# be FILE OFFSET LEN: a big-endian unsigned number from FILE
be() {
	od -A n -t u1 -j "$2" -N "$3" "$1" | awk '{ for (i = 1; i <= NF; i++) v = v * 256 + $i }
		END { printf "%d", v }'
}

# undate IMG: zero the date of every snapshot (qemu-img snapshot -c records
# the time), so that the seeds come out the same every time
undate() {
	local img=$1 n off i extra id name len
	n=$(be "$img" 60 4)
	off=$(be "$img" 64 8)
	for ((i = 0; i < n; i++)); do
		id=$(be "$img" $((off + 12)) 2)
		name=$(be "$img" $((off + 14)) 2)
		extra=$(be "$img" $((off + 36)) 4)
		dd if=/dev/zero of="$img" bs=1 seek=$((off + 16)) count=8 conv=notrunc status=none
		len=$((40 + extra + id + name))
		off=$((off + (len + 7) / 8 * 8))
	done
}

gen_image() {
	local cs rb compat name
	tmp=$(mktemp -d)
	rm -rf "${CORPUS:?}/image"
	mkdir -p "$CORPUS/image"

	# The matrix: cluster size x refcount width x compat, with mixed IO.
	for cs in 512 4096 16384; do
		for compat in 0.10 1.1; do
			for rb in 1 16 64; do
				[ "$compat" = 0.10 ] && [ "$rb" != 16 ] && continue
				# keep the number of files down: not every width everywhere
				[ "$cs" = 16384 ] && [ "$rb" = 1 ] && continue
				name=c$cs-r$rb-v${compat/0.10/2}
				name=${name/v1.1/v3}-mixed.qcow2
				mk "$name" $((cs * 32)) "cluster_size=$cs,refcount_bits=$rb,compat=$compat"
				mixed "$tmp/$name" $cs $((cs * 32)) $compat
				keep "$name"
			done
		done
	done
	# other widths, one each
	for rb in 2 4 8 32; do
		mk c1024-r$rb-v3-mixed.qcow2 32k "cluster_size=1024,refcount_bits=$rb"
		mixed "$tmp/c1024-r$rb-v3-mixed.qcow2" 1024 32768 1.1
		keep c1024-r$rb-v3-mixed.qcow2
	done

	# Empty images: the header and tables alone.
	mk c512-v3-empty.qcow2 1M cluster_size=512
	keep c512-v3-empty.qcow2
	mk c4096-v2-empty.qcow2 1M cluster_size=4096,compat=0.10
	keep c4096-v2-empty.qcow2
	mk c65536-v3-empty.qcow2 1M cluster_size=65536
	keep c65536-v3-empty.qcow2
	mk c32768-v3-compressed.qcow2 1M cluster_size=32768
	qio "$tmp/c32768-v3-compressed.qcow2" "write -c -P 0x5a 0 32k" "write -z 64k 32k"
	keep c32768-v3-compressed.qcow2

	# Many small L2 tables (512 B clusters: one L2 table per 32 KiB).
	mk c512-v3-l2tables.qcow2 256k cluster_size=512
	qio "$tmp/c512-v3-l2tables.qcow2" "write -P 1 0 512" "write -P 2 40k 1k" \
		"write -P 3 100k 512" "write -c -P 4 150k 512" "write -z 200k 4k" \
		"write -P 5 255k 1k"
	keep c512-v3-l2tables.qcow2

	# Compressed throughout, as convert -c writes it.
	head -c 65536 /dev/zero | tr '\0' 'A' >"$tmp/raw"
	printf 'qcow2 fuzz seed %s\n' {1..600} | head -c 65536 >>"$tmp/raw"
	qemu-img convert -q -c -f raw -O qcow2 -o cluster_size=4096 "$tmp/raw" \
		"$tmp/c4096-v3-convert-c.qcow2"
	keep c4096-v3-convert-c.qcow2

	# Preallocated metadata: every cluster allocated, never written.
	mk c4096-v3-prealloc-meta.qcow2 64k cluster_size=4096,preallocation=metadata
	keep c4096-v3-prealloc-meta.qcow2

	# Internal snapshots: the snapshot table, shared clusters (refcount 2),
	# COPIED flags cleared; one with a snapshot that has a different size.
	mk c4096-v3-snapshots.qcow2 128k cluster_size=4096
	qio "$tmp/c4096-v3-snapshots.qcow2" "write -P 0x91 0 8k" "write -c -P 0x92 64k 4k"
	qemu-img snapshot -c first "$tmp/c4096-v3-snapshots.qcow2"
	qio "$tmp/c4096-v3-snapshots.qcow2" "write -P 0x93 4k 8k" "write -z 64k 4k"
	qemu-img snapshot -c second "$tmp/c4096-v3-snapshots.qcow2"
	undate "$tmp/c4096-v3-snapshots.qcow2"
	keep c4096-v3-snapshots.qcow2
	mk c512-v3-snapshot-resized.qcow2 16k cluster_size=512
	qio "$tmp/c512-v3-snapshot-resized.qcow2" "write -P 0x94 0 2k"
	qemu-img snapshot -c s "$tmp/c512-v3-snapshot-resized.qcow2"
	qemu-img resize -q "$tmp/c512-v3-snapshot-resized.qcow2" 24k
	qio "$tmp/c512-v3-snapshot-resized.qcow2" "write -P 0x95 1k 20k"
	undate "$tmp/c512-v3-snapshot-resized.qcow2"
	keep c512-v3-snapshot-resized.qcow2

	# Dirty: lazy refcounts and an abort before the refcounts are written.
	mk c4096-v3-dirty.qcow2 128k cluster_size=4096,lazy_refcounts=on
	qio "$tmp/c4096-v3-dirty.qcow2" "write -P 0x21 0 8k" "write -P 0x22 64k 4k" "abort" \
		2>/dev/null || true
	keep c4096-v3-dirty.qcow2

	# The corrupt bit (incompatible_features bit 1, byte 79 of the header).
	mk c4096-v3-corrupt-bit.qcow2 128k cluster_size=4096
	qio "$tmp/c4096-v3-corrupt-bit.qcow2" "write -P 0x31 0 8k"
	printf '\002' | dd of="$tmp/c4096-v3-corrupt-bit.qcow2" bs=1 seek=79 conv=notrunc status=none
	keep c4096-v3-corrupt-bit.qcow2

	# A backing file (name and format extension; refused for IO, checked).
	mk base.qcow2 128k cluster_size=4096
	qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 \
		"$tmp/c4096-v3-backing.qcow2"
	qio "$tmp/c4096-v3-backing.qcow2" "write -P 0x41 4k 4k" 2>/dev/null || true
	keep c4096-v3-backing.qcow2

	# A persistent bitmap: the bitmaps extension and autoclear bit.
	mk c4096-v3-bitmap.qcow2 128k cluster_size=4096
	qio "$tmp/c4096-v3-bitmap.qcow2" "write -P 0x51 0 8k"
	if qemu-img bitmap --add "$tmp/c4096-v3-bitmap.qcow2" b0 2>/dev/null; then
		keep c4096-v3-bitmap.qcow2
	fi

	# Refused features, for the header parser.
	if mk c16384-v3-extl2.qcow2 256k cluster_size=16384,extended_l2=on 2>/dev/null; then
		qio "$tmp/c16384-v3-extl2.qcow2" "write -P 0x61 0 4k" 2>/dev/null || true
		keep c16384-v3-extl2.qcow2
	fi
	if mk c4096-v3-zstd.qcow2 64k cluster_size=4096,compression_type=zstd 2>/dev/null; then
		qio "$tmp/c4096-v3-zstd.qcow2" "write -c -P 0x71 0 4k" 2>/dev/null || true
		keep c4096-v3-zstd.qcow2
	fi
	if (cd "$tmp" && qemu-img create -q -f qcow2 -o cluster_size=4096,data_file=data.raw \
		c4096-v3-datafile.qcow2 64k) 2>/dev/null; then
		keep c4096-v3-datafile.qcow2
	fi

	# Written by qcow-tool itself (its own header layout and feature table).
	if [ -x "$QCOW_TOOL" ]; then
		"$QCOW_TOOL" create -q -f qcow2 -o cluster_size=2048 "$tmp/c2048-v3-qcowtool.qcow2" 64k
		"$QCOW_TOOL" io -c "write -P 0x81 0 3k" -c "write -z 8k 4k" -c "discard 2k 2k" \
			-c "write -P 0x82 60k 4k" "$tmp/c2048-v3-qcowtool.qcow2" >/dev/null
		keep c2048-v3-qcowtool.qcow2
		"$QCOW_TOOL" create -q -f qcow2 -o cluster_size=512,compat=0.10 \
			"$tmp/c512-v2-qcowtool.qcow2" 16k
		"$QCOW_TOOL" io -c "write -P 0x83 0 1k" -c "write -z 2k 1k" \
			"$tmp/c512-v2-qcowtool.qcow2" >/dev/null
		keep c512-v2-qcowtool.qcow2
	fi

	# Cut short: tables and data past the end of the file.
	cp "$tmp/c4096-r16-v3-mixed.qcow2" "$tmp/t"
	head -c $(($(stat -c %s "$tmp/t") / 2)) "$tmp/t" >"$tmp/c4096-v3-truncated.qcow2"
	keep c4096-v3-truncated.qcow2
	head -c 4096 "$tmp/c512-r16-v3-mixed.qcow2" >"$tmp/c512-v3-truncated.qcow2"
	keep c512-v3-truncated.qcow2
	# The header cluster only, and the first 104 bytes only.
	head -c 512 "$tmp/c512-v3-empty.qcow2" >"$tmp/c512-v3-header-only.qcow2"
	keep c512-v3-header-only.qcow2
	head -c 104 "$tmp/c512-v3-empty.qcow2" >"$tmp/header-104.qcow2"
	keep header-104.qcow2
	# Not an image at all.
	printf 'QFI\373 this is not an image\n' >"$CORPUS/image/junk-magic"
	head -c 1024 /dev/zero >"$CORPUS/image/zeros-1k"
	rm -rf "$tmp"
	tmp=
}

# ------------------------------------------------------------------- tool

# seed DIR NAME: stdin into DIR/NAME, exactly (no trailing newline added)
seed() {
	cat >"$CORPUS/$1/$2"
}

gen_tool() {
	local d=tool
	rm -rf "${CORPUS:?}/$d"
	mkdir -p "$CORPUS/$d"
	# s: parse_size (bytes), S: parse_size (sectors allowed), p: parse_pattern,
	# o: -o list for qcow2, r: -o list for raw, f: format names,
	# i: qcow-tool io commands, one a line, on a small image
	local i=0 v
	for v in 0 1 512 64k 1.5G 0x1000 1e 16E 18446744073709551615 \
		18446744073709551616 0.5k 1.25M 3.0000000000000000001T 0x 1.5 12S; do
		i=$((i + 1))
		printf 's%s' "$v" | seed $d size-$i
	done
	printf 'S32s' | seed $d sectors-0
	printf 'S1.5s' | seed $d sectors-1
	for v in 0 255 0xab 0377 256 -1 0x; do
		i=$((i + 1))
		printf 'p%s' "$v" | seed $d pattern-$i
	done
	printf 'ocluster_size=64k,refcount_bits=16,compat=1.1,size=1G' | seed $d opts-0
	printf 'ocompat=0.10,lazy_refcounts=off,preallocation=off,compression_type=zlib' | seed $d opts-1
	printf 'oextended_l2=off,cluster_size=2M,,size=1.5M,help' | seed $d opts-2
	printf 'ocluster_size=1000,refcount_bits=3' | seed $d opts-3
	printf 'o?' | seed $d opts-4
	printf 'rsize=10M,preallocation=off' | seed $d opts-raw-0
	printf 'rcluster_size=64k' | seed $d opts-raw-1
	printf 'fqcow2' | seed $d format-0
	printf 'fraw' | seed $d format-1
	printf 'fjson' | seed $d format-2
	printf 'iwrite -P 0xab 0 64k\nread -P 0xab 0 64k\nread -v 0 64\n' | seed $d io-0
	printf 'iwrite -z 4k 8k\nwrite -z -u 16k 4k\ndiscard 0 1M\nflush\n' | seed $d io-1
	printf 'iw -q -f 1s 2s\nr -q 0 1k\nd 0 4k\nhelp\nquit\nread 0 1\n' | seed $d io-2
	printf 'iwrite -P 300 0 1\nread 1M 1\nwrite 0\nfoo\n' | seed $d io-3
}

# ------------------------------------------------------------------ state

gen_state() {
	local d=state
	rm -rf "${CORPUS:?}/$d"
	mkdir -p "$CORPUS/$d"
	# j: a state file (uq_state_parse); z: uq_parse_size; u: uq_parse_uint
	printf 'j{"id":0,"pid":123,"device":"/dev/ublkb0","image":"/abs/vm.qcow2","queues":1,"depth":64,"mode":"copy","read_only":false,"state":"live"}\n' \
		| seed $d state-live
	printf 'j{"id":3,"pid":4242,"device":"/dev/ublkb3","queues":2,"depth":64,"mode":"auto-buf-reg","cache":"writeback","state":"live","image":"/tmp/disk.qcow2","image_path":"/tmp/link.qcow2","snapshot":"snap-a","read_only":true,"recoverable":true,"l2_cache":65536,"zero_copy":"register","cache_option":"writeback","bitmaps":"close","queues_option":2,"depth_option":64}\n' \
		| seed $d state-every-key
	printf 'j{"id":7,"pid":99,"device":"/dev/ublkb7","image":"/a \\"b\\"\\\\c\\u0001\\u00e9","queues":4,"depth":128,"mode":"zero-copy","read_only":true,"state":"failed","error":"DEL_DEV: -16 (Device or resource busy)\\nx\\ty"}' \
		| seed $d state-failed
	printf 'j  { "id" : 1 , "pid":-1,"extra":null,"queues":"x" }  ' | seed $d state-spaces
	printf 'j{}' | seed $d state-empty
	printf 'j{"id":' | seed $d state-cut
	printf 'j{"\\u12' | seed $d state-cut-escape
	local i=0 v
	for v in 0 4096 1K 2M 3G 1KiB 1kb 18446744073709551615 17179869184G 1T -1 ' 1' \
		1.5G 0x1000 4s 16E; do
		i=$((i + 1))
		printf 'z%s' "$v" | seed $d size-$i
	done
	for v in 0 1 64 4294967295 4294967296 +1 1x; do
		i=$((i + 1))
		printf 'u%s' "$v" | seed $d uint-$i
	done
}

for t in "${targets[@]}"; do
	case $t in
	image) gen_image ;;
	tool) gen_tool ;;
	state) gen_state ;;
	*) echo "make-corpus.sh: unknown target $t" >&2; exit 1 ;;
	esac
	echo "$CORPUS/$t: $(find "$CORPUS/$t" -type f | wc -l) files, $(du -sk "$CORPUS/$t" | cut -f1) KiB"
done
