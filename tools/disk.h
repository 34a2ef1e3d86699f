/* SPDX-License-Identifier: MIT */
/*
 * One interface over the two image formats qcow-tool handles: qcow2 through
 * the engine (include/qcow/engine.h) and raw through plain POSIX calls.
 * Every function that fails prints "qcow-tool: <file>: <problem>" to stderr
 * itself and returns -errno, so commands only need to stop.
 */
#ifndef QCOW_TOOL_DISK_H
#define QCOW_TOOL_DISK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow/engine.h"

enum disk_format { DISK_FMT_AUTO, DISK_FMT_RAW, DISK_FMT_QCOW2 };

struct disk {
	enum disk_format fmt;
	const char *path;
	struct qcow_image *img;   /* qcow2 */
	int fd;                   /* raw */
	int lock_fd;              /* holds QEMU's image locks (disk_lock) */
	uint64_t size;            /* virtual size */
	bool read_only;
};

/* "raw" / "qcow2" -> format; -EINVAL (and a message) otherwise. */
int disk_parse_format(const char *name, enum disk_format *fmt);
const char *disk_format_name(enum disk_format fmt);
/* Look at the magic: qcow2 when it says so, raw otherwise. */
int disk_detect_format(const char *path, enum disk_format *fmt);

/* Create (or truncate) a sparse raw file of size bytes. */
int disk_create_raw(const char *path, uint64_t size);

/* How a qcow2 image is opened (qcow_open_opts). */
enum disk_open_mode {
	DISK_OPEN_GUEST,          /* the guest's view: through the backing chain */
	DISK_OPEN_CHECK,          /* for check: the file alone, dirty or corrupt too */
	DISK_OPEN_ALONE,          /* the file alone (no_backing): its own clusters */
};

/*
 * -U, --force-share (qemu-img's): read-only opens share the image with
 * writers. Set by the commands that take it, before they open.
 */
extern bool disk_force_share;
/*
 * Take QEMU's locks on fd for writing or reading (shared with writers when
 * disk_force_share), path naming the image: 0, or -EBUSY when another
 * process's use conflicts (printed: the lock QEMU would name, and the
 * ublk-qcow device serving it if one does) or -errno.
 */
int disk_lock(int fd, const char *path, bool writing);

/* Open with fmt (DISK_FMT_AUTO: detect). Locked with disk_lock first. */
int disk_open(struct disk *d, const char *path, enum disk_format fmt,
	      bool read_only, enum disk_open_mode mode);
/* Flush if writable and release; reports a failed flush. */
int disk_close(struct disk *d);

/* Requests must lie inside [0, size); checked here with a message. */
int disk_read(struct disk *d, void *buf, uint64_t off, size_t len);
int disk_write(struct disk *d, const void *buf, uint64_t off, size_t len);
/* flags: QCOW_ZERO_MAY_UNMAP */
int disk_write_zeroes(struct disk *d, uint64_t off, uint64_t len, unsigned flags);
int disk_discard(struct disk *d, uint64_t off, uint64_t len);
int disk_flush(struct disk *d);
/* Set the virtual size (qcow_resize's rules; a raw file is truncated). */
int disk_resize(struct disk *d, uint64_t size);
/*
 * What lies at off (as qcow_map). Raw files report holes (SEEK_HOLE) as
 * UNALLOCATED and the rest as DATA with host_offset == guest offset.
 */
int disk_map(struct disk *d, uint64_t off, uint64_t len, struct qcow_extent *ext);

/* Report a failed engine call on d: the engine's message, or strerror. */
int disk_fail(const struct disk *d, int err);

#endif /* QCOW_TOOL_DISK_H */
