#!/bin/bash
# fetch-kernel.sh: get a ublk-capable kernel for the test VM.
#
# The host kernel has no ublk driver and cannot load modules, so the
# real-driver tests boot Debian's 6.12 kernel (CONFIG_BLK_DEV_UBLK=m) under
# qemu.  This script downloads the newest linux-image-6.12.*-amd64-unsigned
# package, extracts it and keeps only what the VM needs: vmlinuz, the kernel
# config and the modules we insmod (decompressed, because busybox insmod does
# not read .ko.xz), plus "modules.load", the load order with dependencies
# first.
#
# Prints the kernel directory on stdout; progress goes to stderr.
# Second and later runs reuse the cache and only print the path.
#
# Environment:
#   UBLK_QCOW_CACHE         cache dir (default ${XDG_CACHE_HOME:-$HOME/.cache}/ublk-qcow/kernel)
#   UBLK_QCOW_KERNEL_PKG    exact package name to use instead of the newest
#   UBLK_QCOW_EXTRA_MODULES extra module names to keep (space separated)
#   UBLK_QCOW_KERNEL_REFRESH=1  ask apt for a newer package even when a
#                           kernel is cached (by default a cached kernel is
#                           used without asking apt, so test runs do not
#                           start a 110 MB download when Debian publishes
#                           a new point release)
set -euo pipefail

CACHE=${UBLK_QCOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ublk-qcow/kernel}
# ublk_drv is the point of the exercise; the 9p modules give the guest a
# shared directory with the host; ext4 is modular in Debian's config and
# tests mount filesystems on /dev/ublkbN, and ext4's metadata checksums need
# the crc32c crypto driver (a module too, which ext4's mount asks for by
# name rather than through a module dependency); virtio_pci is listed in
# case the config has it modular (it is skipped when built in).
WANT_MODULES="ublk_drv netfs 9pnet 9pnet_virtio 9p ext4 crc32c_generic virtio_pci ${UBLK_QCOW_EXTRA_MODULES:-}"
PKG_RE='^linux-image-6\.12\..*-amd64-unsigned$'

log() { echo "fetch-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

newest_cached() {
	local d
	for d in "$CACHE"/*/.ready; do
		if [ -e "$d" ]; then dirname "$d"; fi
	done | sort -V | tail -n 1
}

newest_in_apt() {
	apt-cache search --names-only "$PKG_RE" 2>/dev/null |
		awk '{print $1}' | grep -v -e cloud -e '-rt-' |
		sort -V | tail -n 1
}

pick_package() {
	local pkg
	if [ -n "${UBLK_QCOW_KERNEL_PKG:-}" ]; then
		echo "$UBLK_QCOW_KERNEL_PKG"
		return
	fi
	command -v apt-cache >/dev/null || return 0
	pkg=$(newest_in_apt)
	if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
		log "no 6.12 kernel in the apt lists; running apt-get update"
		apt-get update -qq >&2 || log "apt-get update failed"
		pkg=$(newest_in_apt)
	fi
	echo "$pkg"
}

# Print the modules needed for "$@", dependencies before dependents,
# using the "depends" field of each .ko in the extracted tree.
resolve_order() {
	local moddir=$1 m
	shift
	declare -gA SEEN=()
	ORDER=()
	for m in "$@"; do
		visit "$moddir" "$m"
	done
}

visit() {
	local moddir=$1 name=${2//-/_} f deps d
	[ -n "${SEEN[$name]:-}" ] && return 0
	SEEN[$name]=1
	f=$(find_module "$moddir" "$name")
	if [ -z "$f" ]; then
		if builtin_module "$moddir" "$name"; then
			log "$name is built in"
			return 0
		fi
		die "module $name not found in the package"
	fi
	deps=$(module_depends "$f")
	for d in ${deps//,/ }; do
		visit "$moddir" "$d"
	done
	ORDER+=("$f")
}

# The "depends=" string of the module's .modinfo section.  Read directly so
# that kmod's modinfo is not needed on the host.
module_depends() {
	local cat=cat
	case $1 in
	*.xz) cat="xz -dc" ;;
	*.zst) cat="zstd -qdc" ;;
	esac
	$cat "$1" | tr '\0' '\n' | sed -n 's/^depends=//p' | head -n 1
}

find_module() {
	find "$1" -type f \( -name "$2.ko" -o -name "$2.ko.xz" -o -name "$2.ko.zst" \
		-o -name "${2//_/-}.ko" -o -name "${2//_/-}.ko.xz" \) | head -n 1
}

builtin_module() {
	local builtin=$1/modules.builtin
	[ -f "$builtin" ] && grep -Eq "/(${2}|${2//_/-})\.ko$" "$builtin"
}

extract() {
	local pkg=$1 dest=$CACHE/$1 tmp deb moddir f base sandbox=
	tmp=$(mktemp -d "$CACHE/.tmp.XXXXXX")
	# apt drops to user _apt, which cannot reach a cache under /root.
	if [ "$(id -u)" = 0 ]; then
		sandbox="-o APT::Sandbox::User=root"
	fi
	trap 'rm -rf "$tmp"' EXIT
	log "downloading $pkg (about 110 MB)"
	(cd "$tmp" && apt-get download -q $sandbox "$pkg" >&2) || die "apt-get download $pkg failed"
	deb=$(ls "$tmp"/*.deb)
	log "extracting"
	dpkg-deb -x "$deb" "$tmp/root"
	rm -f "$deb"
	moddir=$(ls -d "$tmp"/root/lib/modules/* | head -n 1)
	[ -d "$moddir" ] || die "no lib/modules in $pkg"
	rm -rf "$dest"
	mkdir -p "$dest/modules"
	cp "$tmp"/root/boot/vmlinuz-* "$dest/vmlinuz"
	cp "$tmp"/root/boot/config-* "$dest/config"
	basename "$moddir" >"$dest/version"
	resolve_order "$moddir" $WANT_MODULES
	: >"$dest/modules.load"
	for f in "${ORDER[@]}"; do
		base=$(basename "$f")
		case $base in
		*.xz) xz -dc "$f" >"$dest/modules/${base%.xz}"; base=${base%.xz} ;;
		*.zst) zstd -qdc "$f" >"$dest/modules/${base%.zst}"; base=${base%.zst} ;;
		*) cp "$f" "$dest/modules/$base" ;;
		esac
		echo "$base" >>"$dest/modules.load"
	done
	grep -q '^CONFIG_BLK_DEV_UBLK=[my]' "$dest/config" ||
		die "$pkg has no CONFIG_BLK_DEV_UBLK"
	echo "$WANT_MODULES" | tr ' ' '\n' | sed '/^$/d' | sort -u >"$dest/wanted"
	touch "$dest/.ready"
	rm -rf "$tmp"
	trap - EXIT
	log "kernel $(cat "$dest/version") ready: modules $(tr '\n' ' ' <"$dest/modules.load")"
}

# Ready means extracted completely with at least the modules asked for now
# (UBLK_QCOW_EXTRA_MODULES may grow between runs).
is_ready() {
	local m
	[ -e "$1/.ready" ] || return 1
	for m in $WANT_MODULES; do
		grep -qsx "$m" "$1/wanted" || return 1
	done
}

main() {
	local pkg cached
	mkdir -p "$CACHE"
	cached=$(newest_cached)
	if [ -n "$cached" ] && [ -z "${UBLK_QCOW_KERNEL_PKG:-}" ] &&
	   [ "${UBLK_QCOW_KERNEL_REFRESH:-0}" != 1 ] && is_ready "$cached"; then
		echo "$cached"
		return
	fi
	pkg=$(pick_package)
	if [ -z "$pkg" ]; then
		[ -n "$cached" ] || die "no linux-image-6.12.*-amd64-unsigned in apt and none cached"
		log "apt has no 6.12 kernel; using cached $(basename "$cached")"
		echo "$cached"
		return
	fi
	if ! is_ready "$CACHE/$pkg"; then
		command -v apt-get >/dev/null || die "apt-get missing"
		command -v xz >/dev/null || die "xz (xz-utils) missing"
		exec 9>"$CACHE/.lock"
		flock 9
		is_ready "$CACHE/$pkg" || extract "$pkg"
	fi
	echo "$CACHE/$pkg"
}

main "$@"
