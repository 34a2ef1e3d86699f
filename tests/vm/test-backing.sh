#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-backing: overlays served on the real driver, two at once over one
# golden image.
#
# The chain: base.raw (24 MiB of random data and a hole, its size not a
# multiple of the clusters), golden.qcow2 over it (16 KiB clusters: data,
# compressed clusters, zero clusters, a discard, written by qemu-io), and
# two overlays of golden: vm1.qcow2 made by qcow-tool create -b (64 KiB
# clusters, larger than golden's), vm2.qcow2 by qemu-img create -b (4 KiB
# clusters, smaller).  ref.raw is qemu's reading of golden.
#
#   guest: both served at once; each reads back as ref.raw in full; vm1 gets
#          sector writes inside, across and at the edges of its clusters
#          (copy-on-write of the rest from the chain), a discard and a
#          zeroing, then reads back as the host's expectation; vm2 gets fio
#          random writes of 512 B to 64 KiB with verification at queue
#          depth 16 (copy-on-write reads from the chain racing each other);
#          both closed;
#   host:  qemu-img check on both overlays; vm1 equals the same commands run
#          by qemu-io on an overlay qemu-img made (qemu-img compare); fio
#          --verify_only on qemu's raw conversion of vm2; base.raw and
#          golden.qcow2 byte for byte as they were.
. "$(dirname "$0")/lib.sh"

vm_init
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
M=$((1024 * 1024))
head -c $((24 * M)) /dev/urandom >"$SHARE/base.raw"
dd if=/dev/zero of="$SHARE/base.raw" bs=1M seek=6 count=2 conv=notrunc status=none
truncate -s $((24 * M + 3 * 512)) "$SHARE/base.raw"
fallocate -p -o $((6 * M)) -l $((2 * M)) "$SHARE/base.raw" 2>/dev/null || true
(cd "$SHARE" && qemu-img create -q -f qcow2 -o cluster_size=16k -b base.raw -F raw golden.qcow2 32M) ||
	exit 1
head -c $((2 * M)) /dev/urandom >"$WORK/rand"
qemu-io -f qcow2 -c "write -c -s $WORK/rand 1M 1M" -c "write -s $WORK/rand 3M 512k" \
	-c 'write -z 4M 256k' -c 'discard 5M 512k' -c "write -c -s $WORK/rand 26M 1M" \
	"$SHARE/golden.qcow2" >/dev/null || exit 1
qemu-img convert -O raw "$SHARE/golden.qcow2" "$SHARE/ref.raw" || exit 1
(cd "$SHARE" && "$QCOW_TOOL_FAST" create -q -b golden.qcow2 -F qcow2 vm1.qcow2 &&
	qemu-img create -q -f qcow2 -o cluster_size=4k -b golden.qcow2 -F qcow2 vm2.qcow2) || exit 1
base_sum=$(host_sum "$SHARE/base.raw")
golden_sum=$(host_sum "$SHARE/golden.qcow2")
head -c $M /dev/zero | tr '\0' '\132' >"$SHARE/patt.bin"	# 0x5a
# vm1's writes (start sector, sectors) and what they become in qemu-io
WRITES="1:1 127:2 128:1 255:1 2047:3 4096:128 10001:17 20479:1 53000:64 65535:1"
echo "$WRITES" >"$SHARE/writes"
vm_fio_job cow iodepth=16 bssplit=512/30:4k/40:64k/30 size=12M

vm_guest <<'GUEST'
M=1048576
write_all() {	# the sector writes of ./writes, from patt.bin
	for w in $(cat writes); do
		dd if=patt.bin of="$1" bs=512 seek="${w%:*}" count="${w#*:}" oflag=direct \
			conv=notrunc status=none || return 1
	done
}
if uq_open vm1.qcow2; then
	DEV1=$DEV
	if uq_open vm2.qcow2; then
		DEV2=$DEV
		check two-overlays-served [ "$DEV1" != "$DEV2" ]
		check vm1-reads-the-chain cmp "$DEV1" ref.raw
		check vm2-reads-the-chain cmp "$DEV2" ref.raw
		check vm1-partial-writes write_all "$DEV1"
		check vm1-discard quiet $BLKDISCARD -o $((2 * M)) -l $M "$DEV1"
		check vm1-write-zeroes quiet $BLKDISCARD -z -o $((7 * M + 4096)) -l $((64 * 1024)) "$DEV1"
		export FILE=$DEV2 ENGINE=io_uring
		check vm2-fio-write-verify quiet fio job.fio
		dd if="$DEV1" of=vm1-read.raw bs=1M iflag=direct status=none
		check vm2-close uq_close "$DEV2"
	fi
	check vm1-close uq_close "$DEV1"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

host_qemu_check qemu-img-check-vm1 "$SHARE/vm1.qcow2"
host_qemu_check qemu-img-check-vm2 "$SHARE/vm2.qcow2"
# vm1's expectation: the same writes by qemu-io on an overlay qemu-img made
ln -sf "$SHARE/golden.qcow2" "$WORK/golden.qcow2"
ln -sf "$SHARE/base.raw" "$WORK/base.raw"
qemu-img create -q -f qcow2 -b golden.qcow2 -F qcow2 "$WORK/expect1.qcow2"
args=()
for w in $WRITES; do
	args+=(-c "write -q -P 0x5a $((${w%:*} * 512)) $((${w#*:} * 512))")
done
args+=(-c "discard -q $((2 * M)) $M" -c "write -q -z $((7 * M + 4096)) 65536")
qemu-io -f qcow2 "${args[@]}" "$WORK/expect1.qcow2" >/dev/null
host_check vm1-as-qemu-io-writes-it qemu-img compare "$SHARE/vm1.qcow2" "$WORK/expect1.qcow2"
host_check vm1-read-in-the-guest qemu-img compare -f raw "$SHARE/vm1-read.raw" "$WORK/expect1.qcow2"
host_fio_verify "$SHARE/vm2.qcow2"
host_unchanged base-unchanged "$SHARE/base.raw" "$base_sum"
host_unchanged golden-unchanged "$SHARE/golden.qcow2" "$golden_sum"
vm_finish
