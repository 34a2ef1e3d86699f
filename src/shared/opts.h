/* SPDX-License-Identifier: MIT */
/*
 * What "ublk-qcow open" is asked for and what a device got: the option
 * types and their names (the words of the command line, of "list" and of
 * the state file), and struct uq_open_opts.
 *
 * The options a device keeps for its life are one list, UQ_KEPT_OPTS.  It
 * makes both the fields of struct uq_open_opts and the state file's table
 * (state.c), so an option cannot be written without being read back, or
 * read back without being written: "recover" reopens a device with
 * exactly the options its dead daemon had.  A new option that a device
 * keeps goes into the list, nowhere else.
 */
#ifndef UQ_SHARED_OPTS_H
#define UQ_SHARED_OPTS_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

/* --zero-copy: what open asks the kernel for. */
enum uq_zc_mode {
	UQ_ZC_AUTO,			/* the best the kernel offers */
	UQ_ZC_ON,			/* zero copy (auto registration if offered), or fail */
	UQ_ZC_OFF,			/* copy mode */
	UQ_ZC_REGISTER,			/* zero copy, a REGISTER_IO_BUF per request */
};

/* --cache, with qemu's names: how the image file is opened. */
enum uq_cache_opt {
	UQ_CACHE_OPT_DEFAULT,		/* none where direct IO works, else writeback */
	UQ_CACHE_OPT_NONE,		/* O_DIRECT, or fail */
	UQ_CACHE_OPT_WRITEBACK,		/* the page cache */
};

/*
 * --bitmaps: when the persistent dirty bitmaps are written back.  FLUSH
 * (the default, 0: a state file from before the option reads as it): at
 * every guest FLUSH too, which leaves them consistent in the file while the
 * device is idle; CLOSE: only at close, as QEMU (each write-back costs
 * fsyncs, for guests that flush very often).
 */
enum uq_bitmaps_mode {
	UQ_BITMAPS_FLUSH,
	UQ_BITMAPS_CLOSE,
};

/* What the device got: list and the state file show these names. */
enum uq_cache_mode {
	UQ_CACHE_NONE,			/* O_DIRECT */
	UQ_CACHE_WRITEBACK,		/* asked for */
	UQ_CACHE_WRITEBACK_FALLBACK,	/* the default, where direct IO does not work */
};

/*
 * How request data moves between the kernel and the image: what the device
 * got from ADD_DEV, and the names list and the state file show.
 */
enum uq_data_mode {
	UQ_DATA_COPY,			/* per-tag buffers registered with io_uring */
	UQ_DATA_ZERO_COPY,		/* request pages, REGISTER_IO_BUF per request */
	UQ_DATA_AUTO_BUF_REG,		/* request pages, registered by the driver */
};

/* The names of each enum's values, by value, NULL-terminated. */
extern const char *const uq_zc_names[];
extern const char *const uq_cache_opt_names[];
extern const char *const uq_bitmaps_names[];
extern const char *const uq_cache_mode_names[];
extern const char *const uq_data_mode_names[];

/* The value whose name is s in names (above): its index, or -EINVAL. */
int uq_name_index(const char *const *names, const char *s);

static inline const char *uq_cache_mode_name(enum uq_cache_mode m)
{
	return uq_cache_mode_names[m];
}

static inline const char *uq_data_mode_name(enum uq_data_mode m)
{
	return uq_data_mode_names[m];
}

#define UQ_DEFAULT_QUEUES	1
#define UQ_DEFAULT_DEPTH	64

/* The longest --snapshot name a device keeps (qcow2 allows 65535 bytes). */
#define UQ_SNAPSHOT_NAME_MAX	1023
/* The longest device name (--name; shared/names.h has its rules). */
#define UQ_DEV_NAME_MAX		64
/* The longest --io-scheduler name (the kernel's ELV_NAME_MAX is 16 with its NUL). */
#define UQ_IOSCHED_NAME_MAX	15

/*
 * X(TYPE, field, "state file key") for each option a device keeps.  TYPE
 * is one of the UQ_DECL_ below (state.c's KIND_ says how it is spelt).
 * Keys that "list" also shows for what the device got end in _option here.
 * image_path is the engine's name for the image, against whose directory
 * a relative backing file name resolves (as QEMU's).
 */
#define UQ_KEPT_OPTS(X)							\
	X(DEVNAME, name, "name")		/* --name, or the image's; "": none */	\
	X(PATH, image_abs, "image")		/* resolved: the daemon chdirs to / */	\
	X(PATH, image_path, "image_path")	/* absolute, symlinks kept (above) */	 \
	X(NAME, snapshot_name, "snapshot")	/* --snapshot; "": the active image */	\
	X(BOOL, read_only, "read_only")						\
	X(BOOL, recoverable, "recoverable")	/* ADD_DEV with USER_RECOVERY */	\
	X(U64, l2_cache, "l2_cache")		/* 0: the engine's default */		\
	X(ZC, zero_copy, "zero_copy")							\
	X(CACHE, cache, "cache_option")		/* list's "cache": what it got */	\
	X(BITMAPS, bitmaps, "bitmaps")							\
	X(IOSCHED, io_scheduler, "io_scheduler")	/* "": none, not asked for */	\
	X(BOOL, pin_queues, "pin_queues")	/* --pin-queues */			\
	X(UINT, queues, "queues_option")	/* list's "queues": what ADD_DEV granted */ \
	X(UINT, depth, "depth_option")		/* list's "depth": the same */

#define UQ_DECL_PATH(f)	char f[PATH_MAX]
#define UQ_DECL_NAME(f)	char f[UQ_SNAPSHOT_NAME_MAX + 1]
#define UQ_DECL_DEVNAME(f)	char f[UQ_DEV_NAME_MAX + 1]
#define UQ_DECL_IOSCHED(f)	char f[UQ_IOSCHED_NAME_MAX + 1]
#define UQ_DECL_BOOL(f)	bool f
#define UQ_DECL_UINT(f)	unsigned f
#define UQ_DECL_U64(f)	uint64_t f
#define UQ_DECL_ZC(f)	enum uq_zc_mode f
#define UQ_DECL_CACHE(f)	enum uq_cache_opt f
#define UQ_DECL_BITMAPS(f)	enum uq_bitmaps_mode f
#define UQ_DECL(type, field, key)	UQ_DECL_##type(field);

struct uq_open_opts {
	UQ_KEPT_OPTS(UQ_DECL)
	/* The command's own, not kept with the device (tests/unit/test-state.c
	 * lists them too, and fails on a field that is in neither place): */
	const char *image;		/* as given on the command line, for messages */
	const char *snapshot;		/* snapshot_name, or NULL: uq_open_opts_bind */
	bool foreground;
	bool verbose;			/* -v: log what each step does */
	bool name_given;		/* --name (or recover): not the default name */
	int want_id;			/* --id: the device number to ask for; -1: any */
	int recover_id;			/* "recover": the device to take over; -1 for "open" */
	enum uq_cache_mode recover_cache;	/* "recover": the cache mode the device
						 * was set up for (its blocks) */
};

/* The defaults of "open": one queue, depth 64, --zero-copy=auto, ... */
void uq_open_opts_init(struct uq_open_opts *o);
/* Point o->snapshot at o's own snapshot_name (NULL when empty): after o is
 * filled or copied. */
void uq_open_opts_bind(struct uq_open_opts *o);

#endif /* UQ_SHARED_OPTS_H */
