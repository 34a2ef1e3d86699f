#!/bin/bash
# fetch-kernel.sh: get a ublk-capable kernel for the test VM.
#
# usage: fetch-kernel.sh [6.12|new]      (default: $VM_KERNEL, else 6.12)
#
# The host kernel has no ublk driver and cannot load modules, so the
# real-driver tests boot a Debian kernel under qemu.  Two kernels matter:
#
#   6.12  Debian 12's linux-image-6.12.*-amd64-unsigned, from the host's own
#         apt sources: copy mode only (GET_FEATURES 0x1fe).
#   new   the newest linux-binary-unsigned-*+deb13-amd64 and the matching
#         linux-modules-* from Debian 13's backports suite: zero copy, auto
#         buffer registration and every later ublk feature.  The suite is
#         read through the Debian mirror the host already uses (taken from
#         apt-cache policy), with a private apt state under the cache
#         directory: the host's apt configuration is never changed.
#
# Either way the package is extracted and only what the VM needs is kept:
# vmlinuz, the modules we insmod (decompressed, because busybox insmod does
# not read .ko.xz) and "modules.load", the load order with dependencies
# first.
#
# Prints the kernel directory on stdout; progress goes to stderr.
# Second and later runs reuse the cache and only print the path.
#
# Environment:
#   UBLK_QCOW_CACHE         cache dir (default ${XDG_CACHE_HOME:-$HOME/.cache}/ublk-qcow/kernel)
#   UBLK_QCOW_KERNEL_PKG    exact package name to use instead of the newest
#                           (for "new": the linux-binary-unsigned-* package)
#   UBLK_QCOW_EXTRA_MODULES extra module names to keep (space separated)
#   UBLK_QCOW_KERNEL_REFRESH=1  ask apt for a newer package even when a
#                           kernel is cached (by default a cached kernel is
#                           used without asking apt, so test runs do not
#                           start a 110 MB download when Debian publishes
#                           a new point release)
set -euo pipefail

KIND=${1:-${VM_KERNEL:-6.12}}
CACHE=${UBLK_QCOW_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/ublk-qcow/kernel}
# ublk_drv is the point of the exercise; the 9p modules give the guest a
# shared directory with the host; ext4 is modular in Debian's config and
# tests mount filesystems on /dev/ublkbN, and on a virtio disk (virtio_blk)
# with 4096-byte sectors.  On 6.12, ext4's metadata
# checksums need the crc32c crypto driver (a module too, which ext4's mount
# asks for by name rather than through a module dependency; later kernels
# use the crc32c library directly); virtio_pci is listed in case the config
# has it modular (it is skipped when built in); loop and nbd are the peers
# make bench compares with (tests/bench/vm-peers.sh), brd the RAM disk it
# keeps its images on.
case $KIND in
6.12)
	WANT_MODULES="ublk_drv netfs 9pnet 9pnet_virtio 9p ext4 crc32c_generic virtio_pci virtio_blk loop nbd brd"
	PKG_RE='^linux-image-6\.12\..*-amd64-unsigned$'
	CACHED_GLOB='linux-image-6.12.*'
	;;
new)
	WANT_MODULES="ublk_drv netfs 9pnet 9pnet_virtio 9p ext4 virtio_blk loop nbd brd"
	PKG_RE='^linux-binary-unsigned-[0-9.]*\+deb13-amd64$'
	CACHED_GLOB='linux-binary-unsigned-*'
	;;
*)
	echo "fetch-kernel: error: unknown kernel '$KIND' (6.12 or new)" >&2
	exit 2
	;;
esac
WANT_MODULES="$WANT_MODULES ${UBLK_QCOW_EXTRA_MODULES:-}"
# The "new" kernel's private apt state (sources list, lists, downloads).
APT_DIR=$CACHE/apt-trixie-backports

log() { echo "fetch-kernel: $*" >&2; }
die() { log "error: $*"; exit 1; }

newest_cached() {
	local d
	for d in "$CACHE"/$CACHED_GLOB/.ready; do
		if [ -e "$d" ]; then dirname "$d"; fi
	done | sort -V | tail -n 1
}

# apt-get / apt-cache with the options this kernel needs: none for 6.12
# (the host's own sources), the private backports state for "new".
apt_opts() {
	APT_OPTS=()
	# apt drops to user _apt, which cannot reach a cache under /root.
	if [ "$(id -u)" = 0 ]; then
		APT_OPTS+=(-o APT::Sandbox::User=root)
	fi
	if [ "$KIND" = new ]; then
		APT_OPTS+=(-o "Dir::Etc::sourcelist=$APT_DIR/sources.list"
			-o Dir::Etc::sourceparts=- -o "Dir::State::Lists=$APT_DIR/lists"
			-o "Dir::Cache=$APT_DIR/cache")
	fi
}

# The Debian archive the host already uses: the first "<uri> <suite>/main"
# line of apt-cache policy whose suite is a release, not -security.
host_mirror() {
	apt-cache policy 2>/dev/null |
		awk '$2 ~ /^https?:\/\// && $3 ~ /^[a-z]+(-updates)?\/main$/ { print $2; exit }'
}

# "new": a private sources list for trixie-backports, and its lists.
backports_update() {
	local mirror
	mirror=$(host_mirror)
	[ -n "$mirror" ] || die "no Debian mirror in the host's apt sources (apt-cache policy)"
	mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial"
	echo "deb $mirror trixie-backports main" >"$APT_DIR/sources.list"
	log "reading trixie-backports through the host's mirror"
	apt-get -q "${APT_OPTS[@]}" update >&2 || die "apt-get update of trixie-backports failed"
}

newest_in_apt() {
	apt-cache "${APT_OPTS[@]}" search --names-only "$PKG_RE" 2>/dev/null |
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
	if [ "$KIND" = new ]; then
		backports_update
		newest_in_apt
		return
	fi
	pkg=$(newest_in_apt)
	if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
		log "no 6.12 kernel in the apt lists; running apt-get update"
		apt-get update -qq >&2 || log "apt-get update failed"
		pkg=$(newest_in_apt)
	fi
	echo "$pkg"
}

# The packages that make up kernel package $1: one for 6.12; for "new" the
# image and its modules (linux-binary-unsigned-V -> linux-modules-V).
packages_of() {
	echo "$1"
	if [ "$KIND" = new ]; then
		echo "linux-modules-${1#linux-binary-unsigned-}"
	fi
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

# Built in: listed in modules.builtin; a package that ships no
# modules.builtin (the split "new" packages) builds in what it lacks.
builtin_module() {
	local builtin=$1/modules.builtin
	[ -f "$builtin" ] || return 0
	grep -Eq "/(${2}|${2//_/-})\.ko$" "$builtin"
}

extract() {
	local pkg=$1 dest=$CACHE/$1 deb moddir f base
	TMP_DIR=$(mktemp -d "$CACHE/.tmp.XXXXXX")
	local tmp=$TMP_DIR
	trap 'rm -rf "$TMP_DIR"' EXIT
	log "downloading $(packages_of "$pkg" | tr '\n' ' ')(about 120 MB)"
	# shellcheck disable=SC2046 # one word per package
	(cd "$tmp" && apt-get download -q "${APT_OPTS[@]}" $(packages_of "$pkg") >&2) ||
		die "apt-get download $pkg failed"
	log "extracting"
	for deb in "$tmp"/*.deb; do
		dpkg-deb -x "$deb" "$tmp/root"
		rm -f "$deb"
	done
	moddir=$(ls -d "$tmp"/root/lib/modules/* "$tmp"/root/usr/lib/modules/* 2>/dev/null | head -n 1 || true)
	[ -d "$moddir" ] || die "no lib/modules in $pkg"
	rm -rf "$dest"
	mkdir -p "$dest/modules"
	f=$(ls "$tmp"/root/boot/vmlinuz-* "$moddir"/vmlinuz* 2>/dev/null | head -n 1 || true)
	[ -n "$f" ] || die "no vmlinuz in $pkg"
	cp "$f" "$dest/vmlinuz"
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
	grep -qx 'ublk_drv.ko' "$dest/modules.load" || die "$pkg has no ublk_drv module"
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
	command -v apt-get >/dev/null || die "apt-get missing"
	command -v xz >/dev/null || die "xz (xz-utils) missing"
	apt_opts
	# one fetch at a time (apt's private state included)
	exec 9>"$CACHE/.lock"
	flock 9
	pkg=$(pick_package)
	if [ -z "$pkg" ]; then
		[ -n "$cached" ] || die "no $KIND kernel package ($PKG_RE) in apt and none cached"
		log "apt has no $KIND kernel; using cached $(basename "$cached")"
		echo "$cached"
		return
	fi
	is_ready "$CACHE/$pkg" || extract "$pkg"
	echo "$CACHE/$pkg"
}

main "$@"
