/* SPDX-License-Identifier: MIT */
/*
 * Device names (open --name): their rules, the default one, the name
 * entries in the run directory that keep a name unique per host, and the
 * one resolver of a command's device argument (an id, /dev/ublkbN,
 * /dev/ublk-qcow/NAME or a name).
 *
 * A name is 1..UQ_DEV_NAME_MAX bytes of letters, digits, '.', '_' and
 * '-', does not start with '.' or '-', and is not itself a device
 * argument (all digits, or ublkbN): it names a file in the run directory
 * and the link /dev/ublk-qcow/NAME.
 *
 * RUN_DIR/names/NAME is a symlink whose target is the pid of the daemon
 * that holds the name.  It is made and replaced only under an flock of
 * RUN_DIR/names/.lock, so two daemons never both take one name; an entry
 * whose pid is no running ublk-qcow is stale and is taken over (a
 * "recover" takes its dead daemon's name back that way).
 */
#ifndef UQ_SHARED_NAMES_H
#define UQ_SHARED_NAMES_H

#include <stddef.h>

#include "state.h"

/* The highest device number the driver gives (its minors: 1 << 20). */
#define UQ_MAX_DEV_ID	((1U << 20) - 1)

/* Where the udev rule puts a device's link: UQ_LINK_DIR/NAME. */
#define UQ_LINK_DIR	"/dev/ublk-qcow"

/* Is name a valid device name?  0, or -EINVAL with the rule it breaks
 * in why. */
int uq_name_check(const char *name, char *why, size_t why_len);

/* The default name of a device serving image: its file name without the
 * last extension, made valid (other bytes become '_', a leading '.' or
 * '-' is dropped, cut to UQ_DEV_NAME_MAX, "image-" put before one that
 * looks like a device id; "image" when nothing is left). */
void uq_name_default(const char *image, char *out, size_t len);

/* Take name for pid: 0; -EEXIST with the running holder's pid in *holder;
 * or -errno (the run directory). */
int uq_name_claim(const char *name, int pid, int *holder);
/* Give name back if pid holds it (a stale entry of pid goes too). */
void uq_name_release(const char *name, int pid);

/* Where a device's name came from, for the hint after a clash. */
enum uq_name_origin {
	UQ_NAME_DEFAULT,	/* the image's file name: choose one with --name */
	UQ_NAME_GIVEN,		/* --name: choose another */
	UQ_NAME_KEPT,		/* "recover": the device's own, no other to choose */
};

/* The error for name, held by the running daemon of pid holder: the
 * device that has it (from its state file) and what to do instead. */
void uq_name_taken_msg(const char *name, int holder, enum uq_name_origin origin, char *out,
		       size_t len);

/*
 * The device a command's argument names: a number, /dev/ublkbN, ublkbN,
 * /dev/ublk-qcow/NAME or NAME (the state file whose "name" it is, the one
 * of a running daemon first).  0 with *id; -EINVAL when arg is none of
 * these; -ENOENT when no state file has that name.
 */
int uq_target_resolve(const char *arg, unsigned *id);

#endif /* UQ_SHARED_NAMES_H */
