/* SPDX-License-Identifier: MIT */
/*
 * ublk-qcow: serve qcow2 images as Linux block devices (/dev/ublkbN)
 * through the ublk driver.
 *
 *   ublk-qcow open [options] IMAGE     create the device, serve it (daemon)
 *   ublk-qcow list [--output=human|json]
 *   ublk-qcow close DEVICE             stop the daemon serving a device
 *   ublk-qcow recover DEVICE           take over a device whose daemon died
 *   ublk-qcow stats DEVICE             what a daemon has done
 *   ublk-qcow udev-name ublkbN         a device's name, for the udev rule
 *   ublk-qcow service NAME             serve /etc/ublk-qcow/NAME.conf in the
 *                                      foreground (the systemd unit's command)
 *   ublk-qcow udev-owner ublkcN|ublkbN an unprivileged device's owner, for udev
 *
 * DEVICE is an id, /dev/ublkbN, or the device's name (open --name).
 *
 * See ublk-qcow(8).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ublk-qcow.h"
#include "shared/conf.h"
#include "shared/notify.h"

#ifndef UQ_VERSION
#define UQ_VERSION "0.1"
#endif

/*
 * Each command's synopsis, said once: the program's usage lists them all,
 * and a command's own usage prints its line (uq_usage). Continuation lines
 * line up under "usage: ublk-qcow open ".
 */
static const struct {
	const char *cmd, *synopsis;
} synopses[] = {
	{ "open", "[--name NAME] [--id N] [-q QUEUES] [-d DEPTH]\n"
		  "                      [--zero-copy=auto|on|off|register]\n"
		  "                      [--cache=none|writeback] [--bitmaps=flush|close] [--read-only]\n"
		  "                      [--recoverable] [--snapshot NAME] [--foreground]\n"
		  "                      [--l2-cache BYTES] [--io-scheduler=none|kernel|NAME]\n"
		  "                      [--pin-queues] [-v] IMAGE" },
	{ "list", "[--output=human|json]" },
	{ "close", "[--timeout SECONDS] ID|/dev/ublkbN|NAME" },
	{ "recover", "[--foreground] [-v] ID|/dev/ublkbN|NAME" },
	{ "stats", "[--output=human|json] ID|/dev/ublkbN|NAME" },
	{ "udev-name", "ublkbN" },
	{ "service", "[-v] NAME   (serves " UQ_CONF_DIR "/NAME.conf; ublk-qcow@NAME)" },
	{ "udev-owner", "ublkcN|ublkbN" },
};

void uq_usage(FILE *f, const char *cmd)
{
	size_t i;

	for (i = 0; i < sizeof(synopses) / sizeof(synopses[0]); i++)
		if (!strcmp(cmd, synopses[i].cmd))
			fprintf(f, "usage: %s %s %s\n", UQ_PROG, cmd, synopses[i].synopsis);
}

static void usage(FILE *f)
{
	size_t i;

	for (i = 0; i < sizeof(synopses) / sizeof(synopses[0]); i++)
		fprintf(f, "%s %s %s %s\n", i ? "      " : "usage:", UQ_PROG, synopses[i].cmd,
			synopses[i].synopsis);
	fprintf(f, "       %s --help | --version\n"
		"\n"
		"Serve a qcow2 image as the block device /dev/ublkbN through the kernel's ublk\n"
		"driver (modprobe ublk_drv; root, or a user where the host allows unprivileged\n"
		"devices). See ublk-qcow(8).\n", UQ_PROG);
}

/* A command that keeps or reads daemons' files, asked for more than its help. */
static bool needs_run_dir(const char *cmd, int argc, char **argv)
{
	static const char *const cmds[] = { "open", "list", "close", "recover", "stats",
					    "service" };
	size_t i;
	int a;

	for (a = 2; a < argc; a++)
		if (!strcmp(argv[a], "-h") || !strcmp(argv[a], "--help"))
			return false;
	for (i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		if (!strcmp(cmd, cmds[i]))
			return true;
	return false;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;
	char name[64];

	if (getenv("UBLK_QCOW_VERBOSE"))
		uq_verbose = true;
	/* taken out of the environment: nothing we start notifies in our name */
	uq_notify_init();
	if (!cmd) {
		usage(stderr);
		return UQ_EXIT_USAGE;
	}
	/* getopt's own messages name the program by argv[0]: "ublk-qcow open: ..." */
	snprintf(name, sizeof(name), "%s %s", UQ_PROG, cmd);
	argv[1] = name;
	if (needs_run_dir(cmd, argc, argv) && !uq_run_dir_usable()) {
		/* a user's daemons keep their files in the user's own run directory */
		uq_err("no run directory for uid %u: set XDG_RUNTIME_DIR (or have %s/%u, "
		       "as logind makes it)", (unsigned)geteuid(), UQ_RUN_USER_DIR,
		       (unsigned)geteuid());
		return UQ_EXIT_FAIL;
	}
	if (!strcmp(cmd, "open"))
		return uq_cmd_open(argc - 1, argv + 1);
	if (!strcmp(cmd, "list"))
		return uq_cmd_list(argc - 1, argv + 1);
	if (!strcmp(cmd, "close"))
		return uq_cmd_close(argc - 1, argv + 1);
	if (!strcmp(cmd, "recover"))
		return uq_cmd_recover(argc - 1, argv + 1);
	if (!strcmp(cmd, "stats"))
		return uq_cmd_stats(argc - 1, argv + 1);
	if (!strcmp(cmd, "service"))
		return uq_cmd_service(argc - 1, argv + 1);
	if (!strcmp(cmd, "udev-name"))
		return uq_cmd_udev_name(argc - 1, argv + 1);
	if (!strcmp(cmd, "udev-owner"))
		return uq_cmd_udev_owner(argc - 1, argv + 1);
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return UQ_EXIT_OK;
	}
	if (!strcmp(cmd, "--version")) {
		printf("%s %s\n", UQ_PROG, UQ_VERSION);
		return UQ_EXIT_OK;
	}
	fprintf(stderr, "%s: unknown command '%s'\n", UQ_PROG, cmd);
	usage(stderr);
	return UQ_EXIT_USAGE;
}
