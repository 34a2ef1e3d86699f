#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-zero-fill: reads through /dev/ublkbN return exactly what qemu-img
# says the image holds, at every kind of cluster boundary, and a hole never
# shows bytes another request left in a tag buffer.
#
# The image (8 KiB clusters, a virtual size that ends 1.5 KiB into its last
# cluster) is written by qemu-io: random data; zero clusters that keep their
# host cluster (write -z: the old data is still in the file and must not be
# read); zero clusters without one (write -z -u); discarded and never
# written ranges; compressed clusters (write -c); writes that start and end
# inside clusters; alternating data / hole / zero clusters; data in the
# partial last cluster.  The reference is qemu-img convert -O raw of it.
#
#   guest: the whole device read with O_DIRECT at 512 B, 7 sectors, 64 KiB +
#          1 sector and 1 MiB + 7 sectors (split by the block layer), and
#          buffered, each equal to the reference; 200 reads of random
#          position and length (1 to 2055 sectors) equal to the reference;
#          then, while fio keeps every tag busy reading random data, the
#          holes read back 200 times, each equal to the reference (zeros);
#   host:  the image is byte-identical afterwards (served read-only).
. "$(dirname "$0")/lib.sh"

vm_init
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
RANDOM=$SEED
img=$SHARE/holes.qcow2
size=$((16 * 1024 * 1024 + 1536))
qemu-img create -q -f qcow2 -o cluster_size=8k "$img" "$size" || exit 1
head -c $((2 * 1024 * 1024)) /dev/urandom >"$WORK/rand"

K=1024
cmds=(
	"write -s $WORK/rand 0 1M"				# plain data
	"write -s $WORK/rand 1M 512k" "write -z 1M 512k"	# zero, host cluster kept
	"write -s $WORK/rand 1536k 512k" "write -z -u 1536k 512k"	# zero, unmapped
	"write -s $WORK/rand 2M 512k" "discard 2M 512k"		# discarded
	# 2560k..3M: never written
	"write -c -s $WORK/rand 3M 256k"			# compressed
	"write -s $WORK/rand $((3584 * K + 1536)) 5120"		# inside one cluster
	"write -s $WORK/rand $((4 * 1024 * K - 512)) 1024"	# across a boundary
	"write -s $WORK/rand $((size - 4096 - 1536)) $((4096 + 1536))"	# the partial last cluster
)
# 5M..8M: data, hole, zero, compressed, data, hole, ... one cluster each
for ((i = 0; i < 96; i++)); do
	off=$((5 * 1024 * K + i * 32 * K))
	cmds+=("write -s $WORK/rand $off 8k")
	cmds+=("write -s $WORK/rand $((off + 16 * K)) 8k" "write -z $((off + 16 * K)) 8k")
	cmds+=("write -c -s $WORK/rand $((off + 24 * K)) 8k")
done
args=()
for c in "${cmds[@]}"; do args+=(-c "$c"); done
qemu-io -f qcow2 "${args[@]}" "$img" >/dev/null || { echo "qemu-io failed"; exit 1; }
qemu-img convert -O raw "$img" "$SHARE/ref.raw" || exit 1
sha_before=$(host_sum "$img")

# Random reads (start sector, sectors), the same list for every run of a seed.
sectors=$((size / 512))
for ((i = 0; i < 200; i++)); do
	n=$((RANDOM % 2055 + 1))
	s=$(( (RANDOM * 32768 + RANDOM) % (sectors - n + 1) ))
	echo "$s $n"
done >"$SHARE/reads"

vm_guest <<'GUEST'
# read_equal START_SECTOR SECTORS: one O_DIRECT read of the device vs the reference
read_equal() {
	dd if="$DEV" bs=$(($2 * 512)) skip=$(($1 * 512)) count=1 iflag=direct,skip_bytes \
		status=none >/tmp/got || return 1
	dd if=/tmp/ref.raw bs=$(($2 * 512)) skip=$(($1 * 512)) count=1 iflag=skip_bytes \
		status=none >/tmp/want || return 1
	cmp -s /tmp/got /tmp/want
}

random_reads() {
	bad=0
	while read -r s n; do
		read_equal "$s" "$n" || { echo "    mismatch: $n sectors at sector $s"; bad=$((bad + 1)); }
	done <reads
	[ $bad = 0 ]
}

# The holes of the image, as (start sector, sectors): zero clusters with
# and without a host cluster, discarded, never written, the small holes.
holes_while_busy() {
	fio --name=busy --filename="$DEV" --rw=randread --bs=64k --offset=0 --size=1M \
		--iodepth=32 --ioengine=io_uring --direct=1 --time_based --runtime=600 \
		>/tmp/fio.out 2>&1 &
	fio_pid=$!
	sleep 1
	bad=0
	i=0
	while [ $i -lt 10 ]; do
		for r in "2048 1024" "3072 1024" "4096 1024" "5120 1024" "10256 32" "10320 32"; do
			read_equal $r || { echo "    stale or wrong bytes in hole $r"; bad=$((bad + 1)); }
		done
		i=$((i + 1))
	done
	kill "$fio_pid"
	wait "$fio_pid"
	[ $bad = 0 ]
}

# the reference from tmpfs: small reads over 9p cost more than the test
cp ref.raw /tmp/ref.raw
if uq_open --read-only -q 2 holes.qcow2; then
	for bs in 512 3584 66048 1052160; do
		check "full-read-bs-$bs" sh -c "dd if=$DEV bs=$bs iflag=direct status=none | cmp - /tmp/ref.raw"
	done
	check full-read-buffered cmp "$DEV" /tmp/ref.raw
	check random-reads random_reads
	check holes-while-tags-busy holes_while_busy
	check close uq_close "$DEV"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_unchanged image-unchanged "$img" "$sha_before"
host_qemu_check qemu-img-check "$img"
vm_finish
