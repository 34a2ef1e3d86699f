/* SPDX-License-Identifier: MIT */
/*
 * A device's name in the daemon (shared/names.h has the rules and the
 * name entries): taking it at start-up, giving it back at the end,
 * waiting for udev's /dev/ublk-qcow/NAME link before "open" returns, and
 * "ublk-qcow udev-name ublkbN", which the udev rule
 * (src/system/60-ublk-qcow.rules) runs to learn the link's name.
 *
 * A name given with --name (or kept by a device being recovered) is taken
 * as is or not at all; the default name (the image's) becomes NAME-2,
 * NAME-3, ... when another daemon holds it, so that two readers of one
 * image, or a snapshot beside its image, still open.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ublk-qcow.h"

#define UDEV_CONTROL		"/run/udev/control"
#define LINK_WAIT_MS		5000
#define DEFAULT_NAME_TRIES	99

/* The error for a name held by the daemon of pid holder ("recover" has
 * no --name to choose another with). */
static void name_taken(const char *name, int holder, bool recovering)
{
	const char *hint = recovering ? "" : ": choose another with --name";
	struct uq_state *s = malloc(sizeof(*s));

	if (s && uq_state_by_name(name, s) == 0 && s->pid == holder)
		uq_err("the name '%s' is in use by %s (pid %d)%s", name, s->device, holder, hint);
	else
		uq_err("the name '%s' is in use by the ublk-qcow daemon pid %d%s", name, holder,
		       hint);
	free(s);
}

/* NAME-k for the k-th try of a default name, cut to fit. */
static void numbered_name(const char *base, unsigned k, char *out, size_t len)
{
	char suffix[16];
	int n = snprintf(suffix, sizeof(suffix), "-%u", k);

	snprintf(out, len, "%.*s%s", UQ_DEV_NAME_MAX - n, base, suffix);
}

int uq_dev_name_claim(struct uq_dev *dev)
{
	char base[UQ_DEV_NAME_MAX + 1], *name = dev->opt.name;
	unsigned k, tries = dev->opt.name_given ? 1 : DEFAULT_NAME_TRIES;
	int ret = 0, holder = 0;

	if (!name[0])
		return 0;		/* a device kept from before names */
	snprintf(base, sizeof(base), "%s", name);
	for (k = 1; k <= tries; k++) {
		if (k > 1)
			numbered_name(base, k, name, sizeof(dev->opt.name));
		ret = uq_name_claim(name, getpid(), &holder);
		if (ret != -EEXIST)
			break;
	}
	if (ret == -EEXIST) {
		name_taken(dev->opt.name_given ? name : base, holder, dev->opt.recover_id >= 0);
		return ret;
	}
	if (ret < 0)
		return uq_log_errno("the run directory's name entries", ret);
	dev->name_claimed = true;
	return 0;
}

void uq_dev_name_release(struct uq_dev *dev)
{
	if (dev->name_claimed)
		uq_name_release(dev->opt.name, getpid());
	dev->name_claimed = false;
}

/* Does UQ_LINK_DIR/name lead to device? */
static bool link_ready(const char *name, const char *device)
{
	char link[PATH_MAX], target[PATH_MAX];

	snprintf(link, sizeof(link), UQ_LINK_DIR "/%s", name);
	return realpath(link, target) && !strcmp(target, device);
}

void uq_wait_name_link(const struct uq_dev *dev, const char *device)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	unsigned waited_ms;

	if (!dev->opt.name[0] || access(UDEV_CONTROL, F_OK) < 0)
		return;		/* no udev running: nobody makes the link */
	for (waited_ms = 0; waited_ms < LINK_WAIT_MS; waited_ms += 20) {
		if (link_ready(dev->opt.name, device))
			return;
		nanosleep(&ts, NULL);
	}
	uq_warn("%s/%s did not appear within %u s (is the udev rule 60-ublk-qcow.rules "
		"installed?)", UQ_LINK_DIR, dev->opt.name, LINK_WAIT_MS / 1000);
}

/* --------------------------------------------------------- udev-name */

/* ublkbN (udev's %k), or a path to it: the device id. */
static int kernel_name_id(const char *arg, unsigned *id)
{
	const char *p = strrchr(arg, '/') ? strrchr(arg, '/') + 1 : arg;

	if (strncmp(p, "ublkb", 5))
		return -EINVAL;
	return uq_parse_uint(p + 5, 0, UQ_MAX_DEV_ID, id);
}

int uq_cmd_udev_name(int argc, char **argv)
{
	struct uq_state *s;
	unsigned id;
	int rc = UQ_EXIT_FAIL;

	if (argc != 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		fprintf(argc == 2 ? stdout : stderr, "usage: %s udev-name ublkbN\n", UQ_PROG);
		return argc == 2 ? UQ_EXIT_OK : UQ_EXIT_USAGE;
	}
	s = malloc(sizeof(*s));
	if (!s || kernel_name_id(argv[1], &id) < 0 || uq_state_read(id, s) < 0) {
		free(s);
		return UQ_EXIT_FAIL;	/* not ours: print nothing, udev makes no link */
	}
	/* a live daemon's, or a recoverable device's whose daemon died and
	 * waits for "recover" (the link stays while it does) */
	if (s->opt.name[0] && (uq_daemon_alive(s->pid) || s->opt.recoverable)) {
		printf("%s\n", s->opt.name);
		rc = UQ_EXIT_OK;
	}
	free(s);
	return rc;
}
