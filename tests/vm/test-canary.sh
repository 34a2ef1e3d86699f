#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-canary: a read never reports a byte the daemon did not write.  In
# zero-copy modes the request's pages are the reader's own: an O_DIRECT
# buffer, or page-cache pages that held anything before; a hole the daemon
# forgets to zero-fill, or a short read it counts in full, hands the reader
# whatever those pages held.  So every read here goes into memory that
# already holds a pattern (tests/vm/canary-read.c), and every byte must
# equal qemu-img convert -O raw of the image.
#
# The image (64 KiB clusters) holds every kind of cluster, written by
# qemu-io: data; zero clusters with and without a host cluster; discarded
# and never-written ranges; compressed clusters; a run that alternates data,
# hole, zero and compressed clusters; and, last, a data cluster at the end
# of the file that the file cuts short 3000 bytes into it (the rest reads
# as zeros, as QEMU reads it).
#
#   guest: O_DIRECT reads of 512 B to 1 MiB + 7 sectors at many offsets
#          into a buffer refilled with the canary before each read; then
#          buffered reads of the whole device, three times, each after
#          most free memory was filled with the canary and freed and the
#          page cache dropped (booted with init_on_alloc=0, so recycled
#          pages keep what they held);
#   host:  the image is byte-identical afterwards (served read-only).
. "$(dirname "$0")/lib.sh"

vm_init
img=$SHARE/canary.qcow2
M=$((1024 * 1024))
qemu-img create -q -f qcow2 "$img" 24M || exit 1
head -c $((4 * M)) /dev/urandom >"$WORK/rand"
cmds=(
	"write -s $WORK/rand 0 2M"				# data
	"write -s $WORK/rand 2M 1M" "write -z 2M 1M"		# zero, host cluster kept
	"write -s $WORK/rand 3M 1M" "write -z -u 3M 1M"		# zero, unmapped
	"write -s $WORK/rand 4M 1M" "discard 4M 1M"		# discarded
	# 5M..6M: never written
	"write -c -s $WORK/rand 6M 1M"				# compressed
)
# 8M..12M: data, hole, zero, compressed, one 64 KiB cluster each
for ((off = 8 * M; off < 12 * M; off += 256 * 1024)); do
	cmds+=("write -s $WORK/rand $off 64k")
	cmds+=("write -s $WORK/rand $((off + 128 * 1024)) 64k" "write -z $((off + 128 * 1024)) 64k")
	cmds+=("write -c -s $WORK/rand $((off + 192 * 1024)) 64k")
done
cmds+=("write -s $WORK/rand 23M 64k")			# last: the file's last cluster
args=()
for c in "${cmds[@]}"; do args+=(-c "$c"); done
qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null || { echo "qemu-io failed"; exit 1; }
# cut that last cluster short: it must be the end of the file
host_off=$(qemu-img map --output=json "$img" |
	sed -n "s/.*\"start\": $((23 * M)),.*\"offset\": \([0-9]*\).*/\1/p")
file_size=$(stat -c %s "$img")
if [ "$host_off" != $((file_size - 65536)) ]; then
	echo "vm: FAIL setup: guest 23M is at host offset '$host_off', not the last cluster of $file_size bytes"
	exit 1
fi
truncate -s $((file_size - 65536 + 3000)) "$img"
qemu-img convert -O raw "$img" "$SHARE/ref.raw" || exit 1
sha_before=$(host_sum "$img")

VM_APPEND=init_on_alloc=0
vm_guest <<'GUEST'
cp ref.raw /tmp/ref.raw
if uq_open --read-only -q 2 canary.qcow2; then
	check direct-reads-into-canary quiet canary-read direct "$DEV" /tmp/ref.raw
	check buffered-reads-into-recycled-pages quiet canary-read buffered "$DEV" /tmp/ref.raw
	check close uq_close "$DEV"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_unchanged image-unchanged "$img" "$sha_before"
vm_finish
