/* SPDX-License-Identifier: MIT */
/*
 * The run directory and the state files in it: one writer and one parser
 * for the daemon (which keeps its own file), "list", "close", "recover",
 * "stats" and qcow-tool (which find a daemon through them).
 *
 * RUN_DIR is $UBLK_QCOW_RUN_DIR, or /run/ublk-qcow for root; a user's
 * daemons (unprivileged devices) keep theirs in $XDG_RUNTIME_DIR/ublk-qcow
 * or /run/user/UID/ublk-qcow, where udev-name finds them.  Each daemon keeps
 * RUN_DIR/ID.json, one flat JSON object of strings, counts and booleans:
 * what the device got (UQ_STATE_FIELDS) and the options it was opened with
 * (UQ_KEPT_OPTS, opts.h), for instance
 *
 *   {"id":0,"pid":123,"device":"/dev/ublkb0","queues":1,"depth":64,
 *    "mode":"copy","cache":"none","state":"live","name":"vm","image":"/srv/vm.qcow2",
 *    "image_path":"/srv/vm.qcow2","read_only":false,"recoverable":false,
 *    "l2_cache":0,"zero_copy":"auto","cache_option":"default","bitmaps":"flush",
 *    "queues_option":1,"depth_option":64}
 *
 * An empty string is left out ("snapshot" for the active image, "error"
 * but after a failed shutdown); a key the parser does not know is skipped.
 * state is starting, live or stopping; a daemon whose shutdown failed
 * leaves "failed" with an "error" string for "close" to report.  The file
 * is written to ID.json.tmp and renamed, so readers never see half of it.
 * A file whose pid is gone (or is no longer ublk-qcow) is stale: "list"
 * skips it, "close" cleans it up.
 */
#ifndef UQ_SHARED_STATE_H
#define UQ_SHARED_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "opts.h"

#define UQ_DEFAULT_RUN_DIR	"/run/ublk-qcow"
/* Where logind makes each user's runtime directory, UID under it. */
#define UQ_RUN_USER_DIR		"/run/user"

/* Where a daemon is in its life: the state file's "state". */
enum uq_life {
	UQ_LIFE_STARTING,
	UQ_LIFE_LIVE,
	UQ_LIFE_STOPPING,
	UQ_LIFE_FAILED,			/* its shutdown failed: "error" says how */
};

extern const char *const uq_life_names[];

/* X(TYPE, field, "key") for what a device got, as UQ_KEPT_OPTS. */
#define UQ_STATE_FIELDS(X)						\
	X(UINT, id, "id")							\
	X(PID, pid, "pid")							\
	X(DEVICE, device, "device")	/* /dev/ublkbN */			\
	X(UINT, queues, "queues")	/* what ADD_DEV granted */		\
	X(UINT, depth, "depth")							\
	X(DATA, mode, "mode")							\
	X(CACHE_MODE, cache, "cache")						\
	X(LIFE, state, "state")							\
	X(ERROR, error, "error")	/* "failed" only */

#define UQ_DECL_PID(f)		int f
#define UQ_DECL_DEVICE(f)	char f[64]
#define UQ_DECL_DATA(f)		enum uq_data_mode f
#define UQ_DECL_CACHE_MODE(f)	enum uq_cache_mode f
#define UQ_DECL_LIFE(f)		enum uq_life f
#define UQ_DECL_ERROR(f)	char f[512]

struct uq_state {
	UQ_STATE_FIELDS(UQ_DECL)
	/* The options it was opened with: UQ_KEPT_OPTS; the command's own
	 * fields (image, snapshot, ...) stay zero. */
	struct uq_open_opts opt;
};

/* RUN_DIR: $UBLK_QCOW_RUN_DIR, else root's /run/ublk-qcow, else (not
 * root) the user's own, uq_user_run_dir's; "" when the user has none. */
const char *uq_run_dir(void);
/* Has this user a run directory (uq_run_dir not "")? */
bool uq_run_dir_usable(void);
/* A user's run directory into out: XDG/ublk-qcow where xdg (the user's
 * $XDG_RUNTIME_DIR) is absolute, else RUN_USER/UID/ublk-qcow where the
 * user owns RUN_USER/UID (run_user: UQ_RUN_USER_DIR but in tests):
 * 0, -ENOENT (neither) or -ENAMETOOLONG. */
int uq_user_run_dir(unsigned uid, const char *xdg, const char *run_user, char *out,
		    size_t len);
/* RUN_DIR/ID.ext into out: 0 or -ENAMETOOLONG. */
int uq_run_path(unsigned id, const char *ext, char *out, size_t len);
/* DIR/ID.ext into out, for another run directory than this user's. */
int uq_run_path_in(const char *dir, unsigned id, const char *ext, char *out, size_t len);

/* *s as the state file spells it (one line, no newline): 0 or -EIO. */
int uq_state_print(FILE *f, const struct uq_state *s);
/* Parse one state file's text (NUL terminated) into *s: 0 or -EINVAL. */
int uq_state_parse(const char *text, struct uq_state *s);

/* Write s as RUN_DIR/ID.json (RUN_DIR created), whole or not at all; its
 * path into path.  0 or -errno. */
int uq_state_store(const struct uq_state *s, char *path, size_t len);
/* Read RUN_DIR/ID.json: 0, -ENOENT, -EBADMSG (not a state file) or -errno. */
int uq_state_read(unsigned id, struct uq_state *s);
/* The same from DIR/ID.json (udev-name reading a user's run directory). */
int uq_state_read_in(const char *dir, unsigned id, struct uq_state *s);
/* Every running daemon's state, sorted by id, in *out (malloc'ed, *count
 * entries; NULL when none): 0 (also when RUN_DIR does not exist) or -errno. */
int uq_state_collect(struct uq_state **out, size_t *count);
/* The state file whose "name" is name, a running daemon's before a dead
 * one's, in *s: 0, -ENOENT (none) or -errno. */
int uq_state_by_name(const char *name, struct uq_state *s);
/* Is pid a running (not zombie) ublk-qcow daemon? */
bool uq_daemon_alive(int pid);

#endif /* UQ_SHARED_STATE_H */
