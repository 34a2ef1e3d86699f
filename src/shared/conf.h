/* SPDX-License-Identifier: MIT */
/*
 * A service's configuration file, CONF_DIR/NAME.conf ("ublk-qcow service
 * NAME", the systemd unit ublk-qcow@NAME): what "open" is asked for, one
 * "key=value" a line.  The keys are open's long option names, each applied
 * through the same function as the option (openopt.h), plus image=PATH
 * (required, absolute).  A flag option's value is yes/no or true/false.
 * '#' starts a comment line; blank lines are skipped; spaces around the key
 * and the value are dropped.  The device's name is NAME unless name= says
 * otherwise.
 */
#ifndef UQ_SHARED_CONF_H
#define UQ_SHARED_CONF_H

#include <limits.h>
#include <stddef.h>

#include "opts.h"

/* Where the files are: $UBLK_QCOW_CONF_DIR, else this. */
#define UQ_CONF_DIR	"/etc/ublk-qcow"

struct uq_conf {
	struct uq_open_opts opt;	/* opt.image points at image */
	char image[PATH_MAX];
	char path[PATH_MAX];		/* the file read, for messages */
};

/* $UBLK_QCOW_CONF_DIR, or UQ_CONF_DIR. */
const char *uq_conf_dir(void);

/*
 * Read dir/name.conf into c: open's defaults, the name, then every line.
 * 0; or -errno with why saying what is wrong, naming the file and, for a
 * bad line, its number ("/etc/ublk-qcow/vm1.conf:3: ...").
 */
int uq_conf_load(const char *dir, const char *name, struct uq_conf *c, char *why,
		 size_t why_len);

#endif /* UQ_SHARED_CONF_H */
