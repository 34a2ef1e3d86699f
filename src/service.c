/* SPDX-License-Identifier: MIT */
/*
 * "ublk-qcow service NAME": serve what CONF_DIR/NAME.conf describes, in the
 * foreground, for a service manager (the unit ublk-qcow@NAME.service).
 *
 * The device named as the file says may be left over from a daemon that
 * died (a crash, SIGKILL, a unit restarted on failure):
 *   - opened --recoverable: "recover" it, so the device and the IO waiting
 *     on it survive (the options come from its state file, as recover's);
 *   - otherwise, or when the device itself is gone (the state file
 *     outlived it): remove what the dead daemon left (as "close" does),
 *     then open anew.
 * A device of that name whose daemon is alive is left alone: open refuses
 * the name, naming the device.  Readiness (READY=1) and STOPPING=1 go to
 * $NOTIFY_SOCKET from the daemon's own start-up and shutdown (daemon.c).
 */
#include <stdio.h>
#include <string.h>

#include "ublk-qcow.h"
#include "shared/conf.h"

#define LEFTOVER_CLOSE_TIMEOUT_S 60

static int service_args(int argc, char **argv, const char **name)
{
	int i = 1;

	if (argc > 1 && (!strcmp(argv[1], "-v") || !strcmp(argv[1], "--verbose"))) {
		uq_verbose = true;
		i++;
	}
	if (argc > i && (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help"))) {
		uq_usage(stdout, "service");
		return UQ_EXIT_OK;
	}
	if (argc - i != 1 || argv[i][0] == '-') {
		uq_usage(stderr, "service");
		return UQ_EXIT_USAGE;
	}
	*name = argv[i];
	return -1;
}

/*
 * Whether the kernel still holds device id for a new server of the dead
 * daemon's: not when the device is gone (deleted behind our back: the
 * state file outlived it) or serves another live server under that id.
 * When the kernel cannot be asked, recover says why.
 */
static bool device_awaits_recovery(unsigned id, pid_t dead_pid)
{
	struct uq_ctrl c;
	int ret;

	if (uq_ctrl_open(&c) < 0)
		return true;
	ret = uq_ctrl_left_by(&c, id, dead_pid);
	uq_ctrl_close(&c);
	return ret != 0;
}

/*
 * What a dead daemon left under name: recover it (its exit status), or
 * remove it (-1: open anew).  -1 too when there is nothing of name's, or
 * its daemon lives (open says the name is taken).
 */
static int take_over_leftover(const char *name)
{
	struct uq_state s;

	if (uq_state_by_name(name, &s) < 0 || uq_daemon_alive(s.pid))
		return -1;
	if (s.opt.recoverable && !device_awaits_recovery(s.id, s.pid)) {
		uq_warn("%s: device %u's daemon (pid %d) died and the device is gone: "
			"opening anew", name, s.id, s.pid);
		uq_close_device(s.id, LEFTOVER_CLOSE_TIMEOUT_S);
		return -1;
	}
	if (s.opt.recoverable) {
		uq_warn("%s: device %u's daemon (pid %d) died: recovering it", name, s.id, s.pid);
		return uq_recover_serve(s.id, true);
	}
	uq_warn("%s: device %u's daemon (pid %d) died without --recoverable: removing it",
		name, s.id, s.pid);
	uq_close_device(s.id, LEFTOVER_CLOSE_TIMEOUT_S);
	return -1;
}

int uq_cmd_service(int argc, char **argv)
{
	static struct uq_conf conf;	/* two paths: not on the stack */
	const char *name = NULL;
	char why[1200];
	int ret;

	ret = service_args(argc, argv, &name);
	if (ret >= 0)
		return ret;
	if (uq_conf_load(uq_conf_dir(), name, &conf, why, sizeof(why)) < 0) {
		fprintf(stderr, "%s: %s\n", UQ_PROG, why);
		return UQ_EXIT_USAGE;
	}
	conf.opt.foreground = true;
	if (conf.opt.verbose)		/* recover too, which takes no options of ours */
		uq_verbose = true;
	ret = take_over_leftover(conf.opt.name);
	return ret >= 0 ? ret : uq_open_serve(&conf.opt);
}
