#!/bin/sh
# /init of the test VM (copied in by build-initramfs.sh; runs on busybox).
#
# Mounts the pseudo filesystems, loads the modules named in
# /lib/modules/modules.load, mounts the host's 9p share (tag "share") at
# /share when qemu offers one, runs /test.sh and prints
#     UBLK_QCOW_VM_EXIT=<exit code>
# on the console, which run-vm.sh parses.  Then powers off: an /init that
# returned would panic the kernel instead.
export PATH=/usr/bin:/bin
export HOME=/tmp TMPDIR=/tmp

mount -t proc proc /proc
mount -t sysfs sys /sys
# Without devtmpfs /dev/ublkcN and /dev/ublkbN never appear.
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run
ln -sf /proc/self/fd /dev/fd 2>/dev/null

load_modules() {
	local m
	while read -r m; do
		case $m in
		*.xz)
			xz -dc "/lib/modules/$m" >"/tmp/${m%.xz}"
			m=/tmp/${m%.xz}
			;;
		*) m=/lib/modules/$m ;;
		esac
		insmod "$m" || echo "init: insmod $m failed"
	done </lib/modules/modules.load
}

mount_share() {
	local t
	for t in /sys/bus/virtio/devices/*/mount_tag; do
		[ -e "$t" ] || continue
		# The tag file ends in a NUL, hence the tr.
		if [ "$(tr -d '\0' <"$t")" = share ]; then
			mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 share /share &&
				return 0
			echo "init: mounting the 9p share failed"
			return 1
		fi
	done
	return 0
}

load_modules
mount_share
cd /
# run-vm.sh retries a boot that died before this line (a guest kernel
# that crashed while booting under emulation), never one after it
echo "UBLK_QCOW_VM_TEST_START"
/bin/sh /test.sh
rc=$?
cd /
sync
umount /share 2>/dev/null
# A leading newline keeps the marker on its own line even when the test
# left a partial line behind.
echo
echo "UBLK_QCOW_VM_EXIT=$rc"
poweroff -f
