#!/bin/bash
# SPDX-License-Identifier: MIT
#
# daemon-cli: ublk-qcow's command line where no driver is needed.
#
#   - --help of every command exits 0 and prints its usage, also for a user
#     who has no run directory (no XDG_RUNTIME_DIR, no /run/user/UID): help
#     asks nothing of the host; the program's own usage gives each command's
#     synopsis exactly as the command's usage does;
#   - for that user, the commands that keep or read daemons' files (open,
#     list, close, recover, stats, service) exit 1 naming the missing run
#     directory and XDG_RUNTIME_DIR;
#   - an unknown command and no command exit 2 with the usage.
# The user is uid/gid 65534 through setpriv, so this needs root (else skip).
. "$(dirname "$0")/lib.sh"
setup

DAEMON=${UBLK_QCOW:-$PWD/src/ublk-qcow}
[ -x "$DAEMON" ] || die "$DAEMON not built (run make)"
[ "$(id -u)" = 0 ] || skip "not root: cannot run as a user without a run directory"
command -v setpriv >/dev/null || skip "no setpriv (util-linux)"
[ ! -e /run/user/65534 ] || skip "/run/user/65534 exists"

# The daemon where uid 65534 can run it.
cp "$DAEMON" "$TMP/ublk-qcow"
chmod 755 "$TMP" "$TMP/ublk-qcow"

# as_user ARGS...: the daemon as uid 65534 without XDG_RUNTIME_DIR, in /.
as_user() {
	(cd / && env -u XDG_RUNTIME_DIR -u UBLK_QCOW_RUN_DIR setpriv --reuid=65534 \
		--regid=65534 --clear-groups "$TMP/ublk-qcow" "$@")
}

# in_program_usage: every line of $TMP/synopsis is a line of the program's usage
in_program_usage() {
	[ -s "$TMP/synopsis" ] && ! grep -vFx -f "$TMP/program-usage" "$TMP/synopsis"
}
"$DAEMON" --help | sed 's/^usage: //; s/^       \(ublk-qcow \)/\1/' >"$TMP/program-usage"
for cmd in open list close recover stats service udev-name udev-owner; do
	expect_rc 0 "$cmd --help as a user without a run directory" as_user "$cmd" --help
	check "$cmd --help prints its usage" grep -q "usage: ublk-qcow $cmd" "$TMP/last.out"
	sed -n '/^usage: /,/^$/{/^$/d; s/^usage: //; p}' "$TMP/last.out" >"$TMP/synopsis"
	check "ublk-qcow --help gives $cmd's synopsis as $cmd --help does" in_program_usage
done
for args in "open /nonexistent.qcow2" "list" "close 0" "recover 0" "stats 0" "service vm1"; do
	# shellcheck disable=SC2086 # a command and its argument
	expect_rc 1 "$args as a user without a run directory" as_user $args
	check "$args names the missing run directory" \
		grep -q "no run directory for uid 65534: set XDG_RUNTIME_DIR" "$TMP/last.out"
done
expect_rc 2 "unknown command" "$DAEMON" no-such-command
check "unknown command: usage" grep -q "^usage: " "$TMP/last.out"
expect_rc 2 "no command" "$DAEMON"
finish
