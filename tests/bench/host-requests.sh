#!/bin/bash
# SPDX-License-Identifier: MIT
#
# bench/host-requests: the daemon's request path at native speed, without
# the driver: qcow-tool bench (src/io.c served from user space, one thread,
# one io_uring) side by side with qemu-img bench and with fio on a raw copy,
# all with direct IO at queue depth 32, as ratios of medians of ROUNDS runs:
#
#   4K read            a 1 GiB image, every cluster allocated
#   4K overwrite       the same image
#   4K allocating      an empty 8 GiB image, one request per 64 KiB cluster
#                      (step 64K): every write allocates
#   4K copy-on-write   the 1 GiB image after an internal snapshot, one
#                      request per cluster (16384 of them): every write
#                      copies the other 60 KiB of its cluster
#   4K read, 3-deep    an empty overlay over an empty overlay over the
#                      1 GiB image: every read maps through two layers
#                      (and the cost of depth: against the flat read)
#   4K CoW from base   an empty overlay of the 1 GiB image, one request per
#                      cluster: every write copies 60 KiB from the base
# These two run with the page cache (-t writeback), for both programs and
# the flat read they are weighed against: ublk-qcow reads backing files
# through the page cache whatever the image's cache mode (one golden
# image's pages serve every overlay), qemu-img with the image's, so -t none
# would compare two different things.
#
# Two queues against one: qcow-tool bench --queues=2 (two threads, each with
# its ring, one engine and its lock, as the daemon's -q 2) against one
# queue, beside fio with two jobs against one on the raw file (each half
# of the requests, the second starting where the first ends, as our second
# queue does), for 4K reads from the page cache (no device time: what the
# request path and the engine lock cost), and direct reads, overwrites and
# allocating writes.
#
# Then user-space instructions per request, counted by callgrind for
# qcow-tool bench and qemu-img bench (-i io_uring): the difference between
# a run of 2N and one of N requests, over N, so start-up does not count.
#
#   ROUNDS (default 3), COUNT (requests per timed run, default 100000),
#   QCOW_TOOL_FAST (tools/qcow-tool)
set -eu
cd "$(dirname "$0")/../.."
TOOL=${QCOW_TOOL_FAST:-$PWD/tools/qcow-tool}
ROUNDS=${ROUNDS:-3}
COUNT=${COUNT:-100000}
for p in qemu-img fio; do
	command -v $p >/dev/null || { echo "bench/host-requests: needs $p"; exit 77; }
done
[ -x "$TOOL" ] || { echo "bench/host-requests: build qcow-tool first (make)"; exit 1; }
TMP=$(mktemp -d "${TMPDIR:-/tmp}/qcow-bench.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# shellcheck source=tests/bench/lib.sh
. tests/bench/lib.sh

qemu-img create -q -f qcow2 "$TMP/full.qcow2" 1G
qemu-img bench -q -w -t none -s 512k -c 2048 -d 4 --pattern=1 "$TMP/full.qcow2" >/dev/null
qemu-img convert -O raw "$TMP/full.qcow2" "$TMP/full.raw"
if ! "$TOOL" bench -q -c 1 -t none "$TMP/full.qcow2" 2>/dev/null; then
	echo "bench/host-requests: $TMP's file system refuses O_DIRECT; set TMPDIR"
	exit 77
fi

# seconds CMD...: the run's time from its "Run completed in X seconds" line
seconds() { "$@" | sed -n 's/^Run completed in \([0-9.]*\) seconds\./\1/p'; }
# fio_seconds FILE RW [OPTIONS]: COUNT requests of 4K at depth 32 (wrapping
# at the end of the file), direct IO unless OPTIONS say --direct=0; split
# between JOBS (default 1) jobs, the second starting STRIDE bytes (for each
# request) after the first
fio_seconds() {
	local f=$1 rw=$2 jobs=${JOBS:-1} per inc
	shift 2
	per=$((COUNT / jobs))
	inc=$((per * ${STRIDE:-4096} % $(stat -c %s "$f")))
	fio --name=b --filename="$f" --rw="$rw" --bs=4k --iodepth=32 --ioengine=io_uring \
		--direct=1 --numjobs="$jobs" --group_reporting --number_ios="$per" \
		--io_size=$((per * 4096)) \
		--offset_increment="$inc" "$@" \
		--output-format=terse --terse-version=3 |
		awk -F';' '{ ms = $9 > $50 ? $9 : $50; print ms / 1000 }'
}
# fresh: an empty 8 GiB image (and raw file) for allocating writes
fresh() {
	rm -f "$TMP/empty.qcow2" "$TMP/empty.raw"
	qemu-img create -q -f qcow2 "$TMP/empty.qcow2" 8G
	truncate -s 8G "$TMP/empty.raw"
}
# fresh_cow: the full image with a snapshot taken, every cluster shared
fresh_cow() {
	cp "$TMP/full.qcow2" "$TMP/cow.qcow2"
	qemu-img snapshot -c base "$TMP/cow.qcow2"
}
COW_COUNT=16384
# the chain: full.qcow2 <- mid.qcow2 <- top.qcow2, both overlays empty
qemu-img create -q -f qcow2 -b full.qcow2 -F qcow2 "$TMP/mid.qcow2"
fresh_top() {
	rm -f "$TMP/top.qcow2"
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 "$TMP/top.qcow2"
}
fresh_top

ALLOC="-w -S 64k"
run_round() {
	local r=$1 a=(-c "$COUNT" -d 32 -t none)
	seconds "$TOOL" bench "${a[@]}" "$TMP/full.qcow2" >>"$TMP/read.ours"
	seconds qemu-img bench "${a[@]}" -n -i io_uring "$TMP/full.qcow2" >>"$TMP/read.qemu"
	fio_seconds "$TMP/full.raw" read >>"$TMP/read.fio"
	seconds "$TOOL" bench "${a[@]}" -w --pattern=$r "$TMP/full.qcow2" >>"$TMP/over.ours"
	seconds qemu-img bench "${a[@]}" -n -i io_uring -w --pattern=$r "$TMP/full.qcow2" >>"$TMP/over.qemu"
	fio_seconds "$TMP/full.raw" write >>"$TMP/over.fio"
	fresh
	# shellcheck disable=SC2086 # ALLOC is two options
	seconds "$TOOL" bench "${a[@]}" $ALLOC "$TMP/empty.qcow2" >>"$TMP/alloc.ours"
	fresh
	# shellcheck disable=SC2086
	seconds qemu-img bench "${a[@]}" -n -i io_uring $ALLOC "$TMP/empty.qcow2" >>"$TMP/alloc.qemu"
	fio_seconds "$TMP/empty.raw" write:60k >>"$TMP/alloc.fio"
	fresh_cow
	# shellcheck disable=SC2086
	seconds "$TOOL" bench -c $COW_COUNT -d 32 -t none $ALLOC "$TMP/cow.qcow2" >>"$TMP/cow.ours"
	fresh_cow
	# shellcheck disable=SC2086
	seconds qemu-img bench -c $COW_COUNT -d 32 -t none -n -i io_uring $ALLOC \
		"$TMP/cow.qcow2" >>"$TMP/cow.qemu"
	local wb=(-c "$COUNT" -d 32 -t writeback)
	seconds "$TOOL" bench "${wb[@]}" "$TMP/full.qcow2" >>"$TMP/flat.ours"
	seconds qemu-img bench "${wb[@]}" -i io_uring "$TMP/full.qcow2" >>"$TMP/flat.qemu"
	seconds "$TOOL" bench "${wb[@]}" "$TMP/top.qcow2" >>"$TMP/chain.ours"
	seconds qemu-img bench "${wb[@]}" -i io_uring "$TMP/top.qcow2" >>"$TMP/chain.qemu"
	fresh_top
	# shellcheck disable=SC2086
	seconds "$TOOL" bench -c $COW_COUNT -d 32 -t writeback $ALLOC "$TMP/top.qcow2" >>"$TMP/bcow.ours"
	fresh_top
	# shellcheck disable=SC2086
	seconds qemu-img bench -c $COW_COUNT -d 32 -t writeback -i io_uring $ALLOC \
		"$TMP/top.qcow2" >>"$TMP/bcow.qemu"
	fresh_top
}
# two queues against one, and fio's two jobs against one
run_queues_round() {
	local r=$1 q a=(-c "$COUNT" -d 32)
	# the cached reads first, with nothing between them that writes (a
	# direct write drops the pages it covers), and ten times as many: a
	# run of COUNT would be over in tens of milliseconds
	"$TOOL" bench -q "${a[@]}" -t writeback "$TMP/full.qcow2"
	cat "$TMP/full.raw" >/dev/null
	for q in 1 2; do
		seconds "$TOOL" bench -c $((COUNT * 10)) -d 32 --queues=$q -t writeback \
			"$TMP/full.qcow2" >>"$TMP/cread.q$q"
		COUNT=$((COUNT * 10)) JOBS=$q fio_seconds "$TMP/full.raw" read --direct=0 \
			>>"$TMP/cread.j$q"
	done
	# direct IO with two: run_round's rows are the one queue and one job
	seconds "$TOOL" bench "${a[@]}" --queues=2 -t none "$TMP/full.qcow2" >>"$TMP/read.q2"
	seconds "$TOOL" bench "${a[@]}" --queues=2 -t none -w --pattern="$r" "$TMP/full.qcow2" \
		>>"$TMP/over.q2"
	fresh
	# shellcheck disable=SC2086
	seconds "$TOOL" bench "${a[@]}" --queues=2 -t none $ALLOC "$TMP/empty.qcow2" >>"$TMP/alloc.q2"
	JOBS=2 fio_seconds "$TMP/full.raw" read >>"$TMP/read.j2"
	JOBS=2 fio_seconds "$TMP/full.raw" write >>"$TMP/over.j2"
	fresh
	JOBS=2 STRIDE=65536 fio_seconds "$TMP/empty.raw" write:60k >>"$TMP/alloc.j2"
}
for ((r = 1; r <= ROUNDS; r++)); do
	run_round "$r"
	run_queues_round "$r"
done

echo "make bench: the request path on the host, no driver ($COUNT requests of 4K, depth 32, direct IO;"
echo "  requests per second, medians of $ROUNDS; ours = qcow-tool bench, ublk-qcow's request path)"
printf "  %-22s %12s %12s %12s %10s %10s\n" workload ours qemu-img "fio raw" ours/qemu ours/fio
for w in read:"4K read" over:"4K overwrite" alloc:"4K allocating"; do
	k=${w%%:*}
	o=$(median <"$TMP/$k.ours") q=$(median <"$TMP/$k.qemu") f=$(median <"$TMP/$k.fio")
	awk -v w="${w#*:}" -v n="$COUNT" -v o="$o" -v q="$q" -v f="$f" 'BEGIN {
		printf "  %-22s %12.0f %12.0f %12.0f %9.2fx %9.2fx\n", w, n / o, n / q, n / f, q / o, f / o }'
done
for w in cow:"4K copy-on-write":$COW_COUNT flat:"4K read, cached":$COUNT \
	 chain:"4K read 3-deep, cached":$COUNT bcow:"4K CoW from base, cached":$COW_COUNT; do
	k=${w%%:*} rest=${w#*:}
	o=$(median <"$TMP/$k.ours") q=$(median <"$TMP/$k.qemu")
	awk -v w="${rest%:*}" -v n="${rest##*:}" -v o="$o" -v q="$q" 'BEGIN {
		printf "  %-26s %8.0f %12.0f %12s %9.2fx %10s\n", w, n / o, n / q, "-", q / o, "-" }'
done
awk -v f="$(median <"$TMP/flat.ours")" -v c="$(median <"$TMP/chain.ours")" \
    -v qf="$(median <"$TMP/flat.qemu")" -v qc="$(median <"$TMP/chain.qemu")" 'BEGIN {
	printf "  the cost of depth: a 3-deep read takes %.2fx the flat read\x27s time (qemu-img: %.2fx)\n", c / f, qc / qf }'

echo "  two queues against one (qcow-tool bench --queues=2), fio's two jobs against one:"
printf "  %-22s %12s %12s %9s %12s %12s %9s\n" workload "ours -q 1" "ours -q 2" "2 / 1" \
	"fio 1 job" "fio 2 jobs" "2 / 1"
for w in cread:"4K read, cached" read:"4K read" over:"4K overwrite" alloc:"4K allocating"; do
	k=${w%%:*} n=$COUNT one=ours fio=fio
	[ "$k" = cread ] && n=$((COUNT * 10)) one=q1 fio=j1
	awk -v w="${w#*:}" -v n="$n" -v a="$(median <"$TMP/$k.$one")" -v b="$(median <"$TMP/$k.q2")" \
	    -v c="$(median <"$TMP/$k.$fio")" -v d="$(median <"$TMP/$k.j2")" 'BEGIN {
		printf "  %-22s %12.0f %12.0f %8.2fx %12.0f %12.0f %8.2fx\n", w, n / a, n / b, a / b,
		       n / c, n / d, c / d }'
done

if ! command -v valgrind >/dev/null; then
	echo "  (no valgrind: instructions per request not counted)"
	exit 0
fi
# instructions CMD...: callgrind's total for the command
instructions() {
	valgrind --tool=callgrind --callgrind-out-file="$TMP/cg.out" "$@" >/dev/null 2>&1
	sed -n 's/^summary: //p' "$TMP/cg.out"
}
# per_request N IMG CMD...: instructions of CMD -c 2N IMG minus CMD -c N IMG,
# over N (FRESH: a command that makes IMG afresh before each run)
per_request() {
	local n=$1 img=$2 one two
	shift 2
	${FRESH:-:}
	one=$(instructions "$@" -c "$n" "$img")
	${FRESH:-:}
	two=$(instructions "$@" -c $((2 * n)) "$img")
	awk -v a="$one" -v b="$two" -v n="$n" 'BEGIN { printf "%.0f", (b - a) / n }'
}
N=5000
echo "  user-space instructions per request (callgrind, 2x$N minus $N requests):"
printf "  %-22s %12s %12s %10s\n" workload ours qemu-img ours/qemu
for w in read over alloc cow; do
	case $w in
	read) name="4K read"; img=$TMP/full.qcow2; extra=(); FRESH= ;;
	over) name="4K overwrite"; img=$TMP/full.qcow2; extra=(-w); FRESH= ;;
	alloc) name="4K allocating"; img=$TMP/empty.qcow2; extra=(-w -S 64k); FRESH=fresh ;;
	cow) name="4K copy-on-write"; img=$TMP/cow.qcow2; extra=(-w -S 64k); FRESH=fresh_cow ;;
	esac
	o=$(per_request $N "$img" "$TOOL" bench -q -d 32 -t none "${extra[@]}")
	q=$(per_request $N "$img" qemu-img bench -q -d 32 -t none -n -i io_uring "${extra[@]}")
	awk -v w="$name" -v o="$o" -v q="$q" 'BEGIN {
		printf "  %-22s %12d %12d %9.2fx\n", w, o, q, o / q }'
done
