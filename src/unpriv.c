/* SPDX-License-Identifier: MIT */
/*
 * Unprivileged devices (UBLK_F_UNPRIVILEGED_DEV, Linux 6.3+): what a user
 * who is not root may open, the link name of a user's device, and
 * "ublk-qcow udev-owner ublkcN|ublkbN", which the optional udev rule
 * (src/system/optional/70-ublk-qcow-unprivileged.rules) runs as root to
 * give a user's device nodes to that user.
 *
 * The kernel gives zero copy and user copy to CAP_SYS_ADMIN only and turns
 * user recovery off for unprivileged devices, so a user's device is copy
 * mode only and never recoverable: asking for either is refused here,
 * before anything is added.  Its tag buffers are registered with io_uring,
 * which counts them against the user's RLIMIT_MEMLOCK, so the queue depth
 * is lowered to what that limit holds.
 */
#include <errno.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "ublk-qcow.h"

/* Depth that the registered tag buffers of every queue fit in limit bytes. */
static unsigned depth_within(rlim_t limit, unsigned queues)
{
	rlim_t per_tag = (rlim_t)queues * UQ_COPY_IO_BYTES;

	return limit / per_tag > UBLK_MAX_QUEUE_DEPTH ? UBLK_MAX_QUEUE_DEPTH
						      : (unsigned)(limit / per_tag);
}

static int fit_memlock(struct uq_open_opts *o)
{
	struct rlimit rl;
	unsigned fits;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY)
		return 0;
	fits = depth_within(rl.rlim_cur, o->queues);
	if (!fits) {
		uq_err("RLIMIT_MEMLOCK (%llu bytes) cannot hold one %u-byte tag buffer per "
		       "queue (%u queues): raise it (ulimit -l) or use fewer queues",
		       (unsigned long long)rl.rlim_cur, UQ_COPY_IO_BYTES, o->queues);
		return -ENOMEM;
	}
	if (o->depth > fits) {
		uq_info("queue depth %u: RLIMIT_MEMLOCK (%llu bytes) holds the buffers of %u",
			o->depth, (unsigned long long)rl.rlim_cur, fits);
		o->depth = fits;
	}
	return 0;
}

int uq_unpriv_open_check(struct uq_open_opts *o)
{
	if (!uq_unprivileged())
		return 0;
	if (o->zero_copy == UQ_ZC_ON || o->zero_copy == UQ_ZC_REGISTER) {
		uq_err("--zero-copy=%s: not for an unprivileged device (uid %u): the kernel "
		       "gives zero copy and user copy to CAP_SYS_ADMIN only; it is copy mode",
		       uq_zc_names[o->zero_copy], (unsigned)geteuid());
		return -EPERM;
	}
	if (o->recoverable) {
		uq_err("--recoverable: not for an unprivileged device (uid %u): the kernel "
		       "turns user recovery off for UBLK_F_UNPRIVILEGED_DEV",
		       (unsigned)geteuid());
		return -EPERM;
	}
	/* --zero-copy=auto stays as asked: ctrl_setup asks for copy mode */
	return fit_memlock(o);
}

int uq_link_leaf(unsigned uid, const char *name, char *out, size_t len)
{
	struct passwd *pw;
	int n;

	if (uid == 0) {
		n = snprintf(out, len, "%s", name);
	} else {
		/* a user's device: under @USER, so users' names never clash */
		pw = getpwuid(uid);
		if (pw)
			n = snprintf(out, len, "@%s/%s", pw->pw_name, name);
		else
			n = snprintf(out, len, "@%u/%s", uid, name);
	}
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int uq_dev_owner(unsigned id, unsigned *uid, unsigned *gid, bool *unprivileged)
{
	struct ublksrv_ctrl_dev_info info;
	struct uq_ctrl c;
	int ret;

	ret = uq_ctrl_open(&c);
	if (ret < 0)
		return ret;
	ret = uq_ctrl_get_info2(&c, id, &info);
	uq_ctrl_close(&c);
	if (ret < 0)
		return ret;
	*uid = info.owner_uid;
	*gid = info.owner_gid;
	*unprivileged = info.flags & UBLK_F_UNPRIVILEGED_DEV;
	return 0;
}

int uq_cmd_udev_owner(int argc, char **argv)
{
	unsigned id, uid, gid;
	bool unprivileged;

	if (argc != 2 || !strcmp(argv[1], "-h") || !strcmp(argv[1], "--help")) {
		uq_usage(argc == 2 ? stdout : stderr, "udev-owner");
		return argc == 2 ? UQ_EXIT_OK : UQ_EXIT_USAGE;
	}
	/* root's devices (and devices gone already): print nothing, udev keeps root */
	if (uq_udev_node_id(argv[1], true, &id) < 0 || uq_dev_owner(id, &uid, &gid, &unprivileged) < 0 ||
	    !unprivileged)
		return UQ_EXIT_FAIL;
	printf("UBLK_QCOW_OWNER_UID=%u\nUBLK_QCOW_OWNER_GID=%u\n", uid, gid);
	return UQ_EXIT_OK;
}
