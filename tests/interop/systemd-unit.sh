#!/bin/bash
# SPDX-License-Identifier: MIT
#
# systemd-unit: the systemd template unit src/system/ublk-qcow@.service.
#
#   - the unit made from the .in file (the daemon's path put in) passes
#     "systemd-analyze verify" as an instance, ublk-qcow@vm1.service, with
#     not one warning, and says what the service is: Type=notify,
#     NotifyAccess=main, "ExecStart=SBINDIR/ublk-qcow service %i",
#     Restart=on-failure, a stop timeout, WantedBy=multi-user.target; a unit
#     whose ExecStart is not there fails verify (the check can fail);
#   - make install DESTDIR=D PREFIX=P puts it in D/P/lib/systemd/system with
#     P/sbin/ublk-qcow in ExecStart (and the udev rule in D/P/lib/udev/rules.d);
#     without PREFIX it goes to configure's directory (config-host.mak);
#     with configure's --systemdunitdir (SYSTEMDUNITDIR_GIVEN) PREFIX does
#     not move it; make uninstall removes it; nothing enables it; the
#     optional unprivileged-device rule goes to P/share/doc/ublk-qcow/optional
#     (with P/sbin/ublk-qcow in it), never into rules.d, and goes with uninstall;
#   - configure --systemdunitdir=DIR is what config-host.mak says, and
#     without it, pkg-config's systemdsystemunitdir or /usr/lib/systemd/system.
#
# Without systemd-analyze (package systemd, in configure's test packages)
# the verify checks are skipped; the install checks always run.
. "$(dirname "$0")/lib.sh"
setup

UNIT_IN='src/system/ublk-qcow@.service.in'
[ -f "$UNIT_IN" ] || die "$UNIT_IN missing"
[ -x src/ublk-qcow ] || die "src/ublk-qcow not built (run make)"

# has FILE LINE: FILE has exactly that line.
has() {
	grep -qxF -- "$2" "$1" || { echo "    $1 lacks '$2'" >&2; return 1; }
}

# verify_clean DIR: systemd-analyze verify of DIR/ublk-qcow@vm1.service, no output at all.
verify_clean() {
	local out
	out=$(cd "$1" && systemd-analyze verify --man=no "$1/ublk-qcow@vm1.service" 2>&1) ||
		{ echo "$out" | sed 's/^/    | /' >&2; return 1; }
	[ -z "$out" ] || { echo "$out" | sed 's/^/    | /' >&2; return 1; }
}

# ---- the unit itself, with the built daemon's path so verify finds it
mkdir -p "$TMP/unit"
sed "s|@SBINDIR@|$PWD/src|g" "$UNIT_IN" >"$TMP/unit/ublk-qcow@.service"
u=$TMP/unit/ublk-qcow@.service
check "Type=notify" has "$u" "Type=notify"
check "NotifyAccess=main" has "$u" "NotifyAccess=main"
check "ExecStart" has "$u" "ExecStart=$PWD/src/ublk-qcow service %i"
check "Restart=on-failure" has "$u" "Restart=on-failure"
check "a bad conf is not restarted" has "$u" "RestartPreventExitStatus=2"
check "a stop timeout" grep -qE '^TimeoutStopSec=[0-9]+$' "$u"
check "WantedBy" has "$u" "WantedBy=multi-user.target"
check "no @ left" bash -c "! grep -q '@[A-Z]*@' '$u'"
if command -v systemd-analyze >/dev/null 2>&1; then
	check "systemd-analyze verify" verify_clean "$TMP/unit"
	mkdir -p "$TMP/broken"
	sed "s|@SBINDIR@|/nonexistent|g" "$UNIT_IN" >"$TMP/broken/ublk-qcow@.service"
	check "verify fails a unit whose daemon is missing" bash -c "\
		cd '$TMP/broken' && ! systemd-analyze verify --man=no \
		'$TMP/broken/ublk-qcow@vm1.service' >/dev/null 2>&1"
else
	echo "no systemd-analyze (apt-get install systemd): verify checks skipped"
fi

# ---- make install / uninstall
mk() {
	make -s --no-print-directory "$@" >"$TMP/make.out" 2>&1 ||
		{ sed 's/^/    | /' "$TMP/make.out" >&2; return 1; }
}
conf_var() {
	sed -n "s/^$1 = //p" config-host.mak
}
D=$TMP/dest
check "install PREFIX=/opt/uq" mk install DESTDIR="$D" PREFIX=/opt/uq
check "unit under PREFIX/lib/systemd/system" has "$D/opt/uq/lib/systemd/system/ublk-qcow@.service" \
	"ExecStart=/opt/uq/sbin/ublk-qcow service %i"
check "daemon under PREFIX/sbin" test -x "$D/opt/uq/sbin/ublk-qcow"
check "udev rule under PREFIX/lib/udev" test -f "$D/opt/uq/lib/udev/rules.d/60-ublk-qcow.rules"
check "not enabled" bash -c "! find '$D' -name '*.wants' | grep -q ."
OPT_RULE=$D/opt/uq/share/doc/ublk-qcow/optional/70-ublk-qcow-unprivileged.rules
check "optional rule beside the docs" has "$OPT_RULE" \
	'KERNEL=="ublk-control", GROUP="ublk", MODE="0660"'
check "optional rule runs PREFIX/sbin/ublk-qcow" grep -qF '/opt/uq/sbin/ublk-qcow udev-owner' "$OPT_RULE"
check "optional rule not in rules.d" bash -c "! find '$D' -path '*rules.d*' -name '70-*' | grep -q ."
check "uninstall PREFIX=/opt/uq" mk uninstall DESTDIR="$D" PREFIX=/opt/uq
check "uninstall removes the unit" test ! -e "$D/opt/uq/lib/systemd/system/ublk-qcow@.service"
check "uninstall removes the optional rule" test ! -e "$OPT_RULE"

unitdir=$(conf_var systemdunitdir)
check "configure found a unit directory" test -n "$unitdir"
if [ "$(conf_var SYSTEMDUNITDIR_GIVEN)" != y ]; then
	check "install without PREFIX" mk install DESTDIR="$D/plain"
	check "unit in configure's directory ($unitdir)" \
		test -f "$D/plain$unitdir/ublk-qcow@.service"
fi
check "install, --systemdunitdir given, PREFIX" \
	mk install DESTDIR="$D/given" PREFIX=/opt/p SYSTEMDUNITDIR_GIVEN=y systemdunitdir=/srv/units
check "a given directory is kept under PREFIX" has "$D/given/srv/units/ublk-qcow@.service" \
	"ExecStart=/opt/p/sbin/ublk-qcow service %i"
# the tree's own unit back to the configured sbindir
mk all

# ---- configure: --systemdunitdir, and the default
cp configure Makefile.in "$TMP/"
check "configure --systemdunitdir" bash -c "'$TMP/configure' --systemdunitdir=/srv/units \
	>/dev/null 2>&1 && grep -qx 'systemdunitdir = /srv/units' '$TMP/config-host.mak' && \
	grep -qx 'SYSTEMDUNITDIR_GIVEN = y' '$TMP/config-host.mak'"
want=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null)
want=${want:-/usr/lib/systemd/system}
check "configure's default unit directory ($want)" bash -c "'$TMP/configure' >/dev/null 2>&1 && \
	grep -qx 'systemdunitdir = $want' '$TMP/config-host.mak' && \
	grep -qx 'SYSTEMDUNITDIR_GIVEN = n' '$TMP/config-host.mak'"
finish
