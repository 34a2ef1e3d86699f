#!/bin/bash
# build-initramfs.sh: pack the test VM's root filesystem.
#
# usage: build-initramfs.sh [-k KERNEL_DIR] [-t TEST_SCRIPT] [-f SRC[:DEST]]...
#                           OUTPUT [BINARY...]
#
#   OUTPUT        the gzip'd newc cpio to write
#   BINARY        programs to copy to /usr/bin (a name on PATH, /sbin or
#                 /usr/sbin, or a path), each with the shared libraries ldd
#                 lists, so dynamically linked Debian tools run in the guest
#   -k DIR        kernel dir from fetch-kernel.sh (default: run it)
#   -t SCRIPT     the guest test, installed as /test.sh (default: a no-op)
#   -f SRC[:DEST] an extra file, at DEST (default /files/<name of SRC>)
#
# The guest gets static busybox (applets linked in /bin), the modules listed
# in KERNEL_DIR/modules.load under /lib/modules, and an /init that mounts
# proc, sys, devtmpfs and the 9p share, loads the modules, runs /test.sh
# and powers off; see the marker format in run-vm.sh.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
KDIR=""
TEST=""
EXTRA=()

log() { echo "build-initramfs: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '3,13p' "$0" >&2; exit 2; }

while getopts k:t:f:h opt; do
	case $opt in
	k) KDIR=$OPTARG ;;
	t) TEST=$OPTARG ;;
	f) EXTRA+=("$OPTARG") ;;
	*) usage ;;
	esac
done
shift $((OPTIND - 1))
[ $# -ge 1 ] || usage
OUT=$1
shift

find_busybox() {
	local b
	for b in /bin/busybox /usr/bin/busybox /usr/lib/busybox-static/busybox; do
		# Only a static busybox runs without copying libc in.
		if [ -x "$b" ] && ! ldd "$b" >/dev/null 2>&1; then
			echo "$b"
			return
		fi
	done
	die "no static busybox (apt-get install busybox-static)"
}

find_binary() {
	local p
	case $1 in
	*/*) [ -x "$1" ] && { echo "$1"; return; } ;;
	*)
		p=$(PATH=$PATH:/usr/sbin:/sbin command -v "$1" || true)
		[ -n "$p" ] && { echo "$p"; return; }
		;;
	esac
	die "binary $1 not found"
}

# Copy a file to the same path under the root, following symlinks so the
# guest gets the real contents under the name the loader asks for.
copy_as() {
	mkdir -p "$ROOT$(dirname "$2")"
	cp -L "$1" "$ROOT$2"
}

copy_libs() {
	local lib
	# ldd prints "name => /path (addr)" or "/path (addr)" for the loader.
	for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*' || true); do
		[ -e "$ROOT$lib" ] || copy_as "$lib" "$lib"
	done
}

add_binary() {
	local src name
	src=$(find_binary "$1")
	name=$(basename "$1")
	copy_as "$src" "/usr/bin/$name"
	chmod 755 "$ROOT/usr/bin/$name"
	copy_libs "$src"
	# mke2fs reads its defaults from here; without it the guest's mkfs
	# would silently differ from the host's.
	case $name in
	mkfs.ext*|mke2fs) [ -e /etc/mke2fs.conf ] && copy_as /etc/mke2fs.conf /etc/mke2fs.conf ;;
	esac
	return 0
}

add_busybox() {
	local bb applet
	bb=$(find_busybox)
	mkdir -p "$ROOT/bin"
	cp "$bb" "$ROOT/bin/busybox"
	for applet in $("$bb" --list); do
		[ -e "$ROOT/bin/$applet" ] || ln -s busybox "$ROOT/bin/$applet"
	done
	ln -s bin "$ROOT/sbin"
}

add_modules() {
	local m
	mkdir -p "$ROOT/lib/modules"
	cp "$KDIR/modules.load" "$ROOT/lib/modules/"
	while read -r m; do
		cp "$KDIR/modules/$m" "$ROOT/lib/modules/"
	done <"$KDIR/modules.load"
}

add_extra() {
	local spec src dest
	for spec in ${EXTRA[@]+"${EXTRA[@]}"}; do
		src=${spec%%:*}
		dest=${spec#*:}
		[ "$dest" = "$spec" ] && dest=/files/$(basename "$src")
		[ -e "$src" ] || die "extra file $src not found"
		copy_as "$src" "$dest"
	done
}

add_test() {
	if [ -n "$TEST" ]; then
		[ -f "$TEST" ] || die "test script $TEST not found"
		cp "$TEST" "$ROOT/test.sh"
	else
		printf '#!/bin/sh\necho "no test script"\n' >"$ROOT/test.sh"
	fi
	chmod 755 "$ROOT/test.sh"
}

[ -n "$KDIR" ] || KDIR=$("$HERE/fetch-kernel.sh")
[ -f "$KDIR/modules.load" ] || die "$KDIR is not a kernel dir from fetch-kernel.sh"
command -v cpio >/dev/null || die "cpio missing (apt-get install cpio)"

ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ublk-qcow-initramfs.XXXXXX")
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT"/{proc,sys,dev,tmp,run,share,etc,usr/bin}
add_busybox
add_modules
for b in "$@"; do
	add_binary "$b"
done
add_extra
add_test
cp "$HERE/guest-init.sh" "$ROOT/init"
chmod 755 "$ROOT/init"

# gzip -1: the guest inflates this under software emulation, where the
# size difference against -9 costs less than the host's compression time.
(cd "$ROOT" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --quiet -R 0:0) |
	gzip -1 >"$OUT.tmp"
mv "$OUT.tmp" "$OUT"
log "wrote $OUT ($(du -h "$OUT" | cut -f1))"
