/* SPDX-License-Identifier: MIT */
/*
 * The run directory of a user's daemons (src/shared/rundir.c,
 * uq_user_run_dir), where their state files, names and control sockets
 * live and where udev-name (as root) reads them back:
 *
 *  - an absolute $XDG_RUNTIME_DIR wins: XDG/ublk-qcow;
 *  - without it (unset, empty or relative), RUN_USER/UID/ublk-qcow, but
 *    only where RUN_USER/UID is a directory the user owns;
 *  - else -ENOENT (the caller's clear error), and a path too long for the
 *    buffer is -ENAMETOOLONG, never a cut path;
 *  - $UBLK_QCOW_RUN_DIR still overrides uq_run_dir for everyone.
 */
#include <sys/stat.h>
#include <unistd.h>

#include "src/shared/state.h"
#include "testlib.h"

static void test_xdg(void)
{
	char out[PATH_MAX];

	CHECK(uq_user_run_dir(1000, "/run/user/1000", "/nonexistent", out, sizeof(out)) == 0 &&
	      !strcmp(out, "/run/user/1000/ublk-qcow"), "XDG: '%s'", out);
	CHECK(uq_user_run_dir(1000, "/x", "/nonexistent", out, 6) == -ENAMETOOLONG,
	      "XDG too long for the buffer");
}

static void test_run_user(void)
{
	unsigned me = (unsigned)geteuid();
	char out[PATH_MAX], want[PATH_MAX];
	const char *base = t_path("run-user");

	mkdir(base, 0755);
	CHECK(uq_user_run_dir(me, NULL, base, out, sizeof(out)) == -ENOENT,
	      "no RUN_USER/UID: -ENOENT");
	CHECK(mkdir(t_path("run-user/%u", me), 0700) == 0, "mkdir: %s", strerror(errno));
	snprintf(want, sizeof(want), "%s/%u/ublk-qcow", base, me);
	CHECK(uq_user_run_dir(me, NULL, base, out, sizeof(out)) == 0 && !strcmp(out, want),
	      "RUN_USER/UID: '%s'", out);
	CHECK(uq_user_run_dir(me, "", base, out, sizeof(out)) == 0 && !strcmp(out, want),
	      "an empty XDG is not used: '%s'", out);
	CHECK(uq_user_run_dir(me, "relative", base, out, sizeof(out)) == 0 &&
	      !strcmp(out, want), "a relative XDG is not used: '%s'", out);
	/* another user's directory (owned by me, not by uid me + 1) is not theirs */
	CHECK(mkdir(t_path("run-user/%u", me + 1), 0700) == 0, "mkdir: %s", strerror(errno));
	CHECK(uq_user_run_dir(me + 1, NULL, base, out, sizeof(out)) == -ENOENT,
	      "a RUN_USER/UID the user does not own is not used");
}

static void test_override(void)
{
	setenv("UBLK_QCOW_RUN_DIR", "/somewhere", 1);
	CHECK(!strcmp(uq_run_dir(), "/somewhere") && uq_run_dir_usable(),
	      "UBLK_QCOW_RUN_DIR: '%s'", uq_run_dir());
	unsetenv("UBLK_QCOW_RUN_DIR");
	if (geteuid() == 0)
		CHECK(!strcmp(uq_run_dir(), UQ_DEFAULT_RUN_DIR), "root: '%s'", uq_run_dir());
}

int main(void)
{
	t_init("rundir");
	test_xdg();
	test_run_user();
	test_override();
	return t_finish();
}
