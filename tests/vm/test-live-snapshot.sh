#!/bin/bash
# SPDX-License-Identifier: MIT
#
# test-live-snapshot: snapshots of an image while ublk-qcow serves it and
# fio writes to it.
#
#   guest: 8 MiB of data A written to the device; "qcow-tool snapshot -c"
#          (which goes through the daemon) takes after-a; fio writes with
#          crc32c verification elsewhere on the device while snapshots are
#          created and deleted over and over, the last rounds back to
#          back; data B over A's range; after-b; fio finishes with no
#          error and everything verified; applying a snapshot live is
#          refused, and so are offline writes; the active
#          image reads B; "open --snapshot after-a" serves A, read-only,
#          beside the active image (with a --name of its own: the image's
#          default name is the active device's) and alone, and while it
#          does, deleting
#          after-a is refused, live and offline;
#   host:  qemu-img check is clean; qemu-img convert -l shows A in after-a
#          and in the last churn snapshot (taken between A and B), B in
#          after-b; fio --verify_only on the active image finds what fio
#          wrote; only the last churn snapshot is left.
. "$(dirname "$0")/lib.sh"

vm_init
SEED=${SEED:-$RANDOM}
echo "SEED=$SEED"
M=$((1024 * 1024))
qemu-img create -q -f qcow2 "$SHARE/disk.qcow2" 64M || exit 1
head -c $((8 * M)) /dev/urandom >"$SHARE/a.bin"
head -c $((8 * M)) /dev/urandom >"$SHARE/b.bin"
vm_fio_job live iodepth=16 bssplit=4k/50:64k/50 offset=16M size=32M

vm_guest <<'GUEST'
export ENGINE=io_uring
M=1048576
region_is() {	# FILE: the first 8 MiB of the device hold it
	dd if="$DEV" bs=1M count=8 iflag=direct status=none | cmp - "$1"
}
# Twelve rounds of create churn-i, delete churn-(i-1): the first six with a
# pause between rounds, the last six back to back, so that a quiesce often
# begins while the queues still restart what the one before held (which
# once spun until the quiesce timed out).
churn() {
	i=1
	while [ $i -le 12 ]; do
		quiet qcow-tool snapshot -q -c "churn-$i" disk.qcow2 ||
			{ echo "    creating churn-$i failed"; return 1; }
		if [ $i -gt 1 ]; then
			quiet qcow-tool snapshot -q -d "churn-$((i - 1))" disk.qcow2 ||
				{ echo "    deleting churn-$((i - 1)) failed"; return 1; }
		fi
		[ $i -le 6 ] && sleep 0.2
		i=$((i + 1))
	done
	kill -0 "$fio_pid" 2>/dev/null || echo "    (fio had finished before the churn did)"
}
if uq_open -q 2 disk.qcow2; then
	export FILE=$DEV
	check write-a dd if=a.bin of="$DEV" bs=1M oflag=direct conv=notrunc status=none
	check snapshot-after-a quiet qcow-tool snapshot -c after-a disk.qcow2
	fio job.fio >/tmp/fio.out 2>&1 &
	fio_pid=$!
	sleep 0.5
	check snapshot-churn-under-fio churn
	check write-b dd if=b.bin of="$DEV" bs=1M oflag=direct conv=notrunc status=none
	check snapshot-after-b quiet qcow-tool snapshot -c after-b disk.qcow2
	wait $fio_pid
	rc=$?
	[ $rc = 0 ] || sed 's/^/    | /' /tmp/fio.out | tail -n 20
	check fio-verified [ $rc = 0 ]
	check live-apply-refused refused 1 "corrupt" qcow-tool snapshot -a after-a disk.qcow2
	check offline-write-refused refused 1 "served by ublk-qcow" \
		qcow-tool io -c "write 0 512" disk.qcow2
	check active-reads-b region_is b.bin
	# listing reads the file beside its writer: -U, as qemu-img needs it
	check list-needs-U refused 1 'Failed to get shared "write" lock' \
		qcow-tool snapshot -l disk.qcow2
	check list-beside-daemon sh -c "qcow-tool snapshot -l -U disk.qcow2 | grep -q after-b"
	active=$DEV
	if uq_open --snapshot after-a --name after-a disk.qcow2; then
		check snapshot-beside-active region_is a.bin
		check live-delete-of-served-snapshot-refused refused 1 "being served" \
			qcow-tool snapshot -d after-a disk.qcow2
		check close-snapshot-beside uq_close "$DEV"
	else
		fail snapshot-beside-active "open --snapshot beside the active image failed"
	fi
	DEV=$active
	check close uq_close "$DEV"
fi
if uq_open --snapshot after-a disk.qcow2; then
	check snapshot-served-read-only [ "$($BLOCKDEV --getro "$DEV")" = 1 ]
	check snapshot-reads-a region_is a.bin
	check offline-delete-of-served-snapshot-refused refused 1 "being served" \
		qcow-tool snapshot -d after-a disk.qcow2
	check close-snapshot uq_close "$DEV"
fi
check no-device-left no_ublk_devices
GUEST
vm_run

img=$SHARE/disk.qcow2
host_qemu_check qemu-img-check "$img"
region_of() {	# SNAPSHOT_PARAM FILE: the snapshot's first 8 MiB equal FILE
	qemu-img convert -O raw ${1:+-l "$1"} "$img" "$WORK/snap.raw" &&
		head -c $((8 * M)) "$WORK/snap.raw" | cmp - "$2"
}
host_check after-a-holds-a region_of snapshot.name=after-a "$SHARE/a.bin"
host_check churn-12-holds-a region_of snapshot.name=churn-12 "$SHARE/a.bin"
host_check after-b-holds-b region_of snapshot.name=after-b "$SHARE/b.bin"
host_check active-holds-b region_of "" "$SHARE/b.bin"
names=$(qemu-img info --output=json "$img" | jq -r '[.snapshots[].name] | join(" ")')
host_check snapshot-list sh -c "[ '$names' = 'after-a churn-12 after-b' ]"
host_fio_verify "$img"
vm_finish
