/* SPDX-License-Identifier: MIT */
/*
 * A device's name in the daemon (shared/names.h has the rules and the
 * name entries): taking it at start-up, giving it back at the end,
 * waiting for udev's /dev/ublk-qcow/NAME link before "open" returns, and
 * "ublk-qcow udev-name ublkbN", which the udev rule
 * (src/system/60-ublk-qcow.rules) runs to learn the link's name: NAME
 * for root's devices, @USER/NAME for a user's (unpriv.c), read from that
 * user's run directory.
 *
 * A name, given with --name, the default (the image's) or kept by a
 * device being recovered, is taken as is or not at all: names are unique
 * per host, so a second device for one image (two readers, a snapshot
 * beside its image) is opened with a --name of its own.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ublk-qcow.h"

#define UDEV_CONTROL		"/run/udev/control"
#define LINK_WAIT_MS		5000

int uq_dev_name_claim(struct uq_dev *dev)
{
	enum uq_name_origin origin = dev->opt.recover_id >= 0 ? UQ_NAME_KEPT :
				     dev->opt.name_given ? UQ_NAME_GIVEN : UQ_NAME_DEFAULT;
	char msg[UQ_DEV_NAME_MAX + PATH_MAX + 256];
	int ret, holder = 0;

	if (!dev->opt.name[0])
		return 0;		/* a device kept from before names */
	ret = uq_name_claim(dev->opt.name, getpid(), &holder);
	if (ret == -EEXIST) {
		uq_name_taken_msg(dev->opt.name, holder, origin, msg, sizeof(msg));
		uq_err("%s", msg);
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

/* Does UQ_LINK_DIR/leaf lead to device? */
static bool link_ready(const char *leaf, const char *device)
{
	char link[PATH_MAX], target[PATH_MAX];

	snprintf(link, sizeof(link), UQ_LINK_DIR "/%s", leaf);
	return realpath(link, target) && !strcmp(target, device);
}

void uq_wait_name_link(const struct uq_dev *dev, const char *device)
{
	char leaf[UQ_LINK_LEAF_MAX];
	unsigned waited_ms;

	if (!dev->opt.name[0] || access(UDEV_CONTROL, F_OK) < 0)
		return;		/* no udev running: nobody makes the link */
	if (uq_link_leaf(geteuid(), dev->opt.name, leaf, sizeof(leaf)) < 0)
		return;
	for (waited_ms = 0; waited_ms < LINK_WAIT_MS; waited_ms += 20) {
		if (link_ready(leaf, device))
			return;
		uq_sleep_ms(20);
	}
	uq_warn("%s/%s did not appear within %u s (is the udev rule 60-ublk-qcow.rules "
		"installed?)", UQ_LINK_DIR, leaf, LINK_WAIT_MS / 1000);
}

/* --------------------------------------------------------- udev-name */

int uq_udev_node_id(const char *arg, bool char_node_too, unsigned *id)
{
	const char *p = strrchr(arg, '/') ? strrchr(arg, '/') + 1 : arg;

	if (strncmp(p, "ublkb", 5) && (!char_node_too || strncmp(p, "ublkc", 5)))
		return -EINVAL;
	return uq_parse_uint(p + 5, 0, UQ_MAX_DEV_ID, id);
}

/* A live daemon's name, or a recoverable device's whose daemon died and
 * waits for "recover" (the link stays while it does). */
static bool state_names_link(const struct uq_state *s)
{
	return s->opt.name[0] && (uq_daemon_alive(s->pid) || s->opt.recoverable);
}

/* Root's device: its state in root's run directory, as ever. */
static bool root_state(unsigned id, struct uq_state *s)
{
	return uq_state_read(id, s) == 0 && state_names_link(s);
}

/* Not root's: a user's, whose owner the kernel knows; its state in that
 * user's run directory (logind's /run/user/UID: udev has no session).
 * Only a char node udev gave away is asked about: root's devices keep
 * theirs, and udev-name sends them no control command, as before. */
static bool user_state(unsigned id, unsigned *uid, struct uq_state *s)
{
	char dir[PATH_MAX], cdev[64];
	struct stat st;
	unsigned gid;
	bool unprivileged;

	snprintf(cdev, sizeof(cdev), "/dev/ublkc%u", id);
	if (stat(cdev, &st) < 0 || st.st_uid == 0)
		return false;
	if (uq_dev_owner(id, uid, &gid, &unprivileged) < 0 || !unprivileged ||
	    uq_user_run_dir(*uid, NULL, UQ_RUN_USER_DIR, dir, sizeof(dir)) < 0)
		return false;
	return uq_state_read_in(dir, id, s) == 0 && state_names_link(s);
}

int uq_cmd_udev_name(int argc, char **argv)
{
	char leaf[UQ_LINK_LEAF_MAX];
	struct uq_state *s;
	unsigned id, uid = 0;
	int rc = UQ_EXIT_FAIL;

	if (argc != 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		uq_usage(argc == 2 ? stdout : stderr, "udev-name");
		return argc == 2 ? UQ_EXIT_OK : UQ_EXIT_USAGE;
	}
	s = malloc(sizeof(*s));
	if (!s || uq_udev_node_id(argv[1], false, &id) < 0) {
		free(s);
		return UQ_EXIT_FAIL;	/* not ours: print nothing, udev makes no link */
	}
	if ((root_state(id, s) || user_state(id, &uid, s)) &&
	    uq_link_leaf(uid, s->opt.name, leaf, sizeof(leaf)) == 0) {
		printf("%s\n", leaf);
		rc = UQ_EXIT_OK;
	}
	free(s);
	return rc;
}
