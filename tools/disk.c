// SPDX-License-Identifier: MIT
/*
 * qcow-tool's format-neutral image access: qcow2 via the engine, raw via
 * POSIX. Errors are printed here so that every command names the file the
 * same way.
 */
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qcow/format.h"
#include "disk.h"
#include "live.h"
#include "tool.h"

int disk_parse_format(const char *name, enum disk_format *fmt)
{
	if (!strcmp(name, "raw")) {
		*fmt = DISK_FMT_RAW;
		return 0;
	}
	if (!strcmp(name, "qcow2")) {
		*fmt = DISK_FMT_QCOW2;
		return 0;
	}
	tool_error("Unknown or unsupported format '%s' (use raw or qcow2)", name);
	return -EINVAL;
}

const char *disk_format_name(enum disk_format fmt)
{
	return fmt == DISK_FMT_QCOW2 ? "qcow2" : "raw";
}

int disk_fail(const struct disk *d, int err)
{
	const char *msg = d->img ? qcow_error(d->img) : "";

	if (msg && *msg)
		tool_error("%s", msg);
	else
		tool_error("%s: %s", d->path, strerror(err < 0 ? -err : err));
	return err < 0 ? err : -err;
}

int disk_detect_format(const char *path, enum disk_format *fmt)
{
	uint32_t magic = 0;
	ssize_t n;
	int fd, err;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err = errno;
		tool_error("%s: %s", path, strerror(err));
		return -err;
	}
	n = pread(fd, &magic, sizeof(magic), 0);
	err = errno;
	close(fd);
	if (n < 0) {
		tool_error("%s: %s", path, strerror(err));
		return -err;
	}
	*fmt = n == sizeof(magic) && be32toh(magic) == QCOW_MAGIC ?
		DISK_FMT_QCOW2 : DISK_FMT_RAW;
	return 0;
}

int disk_create_raw(const char *path, uint64_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int err = 0;

	if (fd < 0) {
		err = errno;
		tool_error("%s: %s", path, strerror(err));
		return -err;
	}
	if (ftruncate(fd, (off_t)size) < 0)
		err = errno;
	if (close(fd) < 0 && !err)
		err = errno;
	if (err) {
		tool_error("%s: %s", path, strerror(err));
		return -err;
	}
	return 0;
}

static int open_qcow2(struct disk *d, bool read_only, enum disk_open_mode mode)
{
	/*
	 * for_check only where the caller asked for it (check, info): it
	 * leaves the backing chain closed and lifts the engine's refusal of
	 * dirty images opened read-only. A reader (convert, map, io -r) must
	 * not have it, or it would return data as if the backing file did not
	 * exist, or trust refcounts that may be stale (doc/qcow2-lite.md
	 * section 14). Corrupt images still open read-only without it.
	 */
	struct qcow_open_opts opts = {
		.read_only = read_only,
		.for_check = mode == DISK_OPEN_CHECK,
		.no_backing = mode == DISK_OPEN_ALONE,
		.force_share = disk_force_share,
	};
	struct qcow_info info;
	char err[512] = "";
	int ret;

	ret = qcow_open(d->path, &opts, &d->img, err, sizeof(err));
	if (ret < 0) {
		d->img = NULL;
		if (*err)
			tool_error("%s", err);
		else
			tool_error("%s: %s", d->path, strerror(-ret));
		return ret;
	}
	qcow_get_info(d->img, &info);
	d->size = info.virtual_size;
	return 0;
}

bool disk_force_share;

int disk_lock(int fd, const char *path, bool writing)
{
	enum qcow_access access = writing ? QCOW_ACCESS_WRITE :
				  disk_force_share ? QCOW_ACCESS_SHARE : QCOW_ACCESS_READ;
	const char *hint = writing ? "" : " (-U reads it anyway)";
	struct live_device dev;
	char why[128] = "";
	int ret;

	if (writing && disk_force_share) {
		tool_error("Could not open '%s': force-share=on can only be used with read-only "
			   "images", path);
		return -EINVAL;
	}
	ret = qcow_file_lock_image(fd, access, why, sizeof(why));
	if (ret == 0)
		return 0;
	if (ret != -EAGAIN) {
		tool_error("%s: %s", path, why);
		return ret;
	}
	if (live_find(path, &dev))
		tool_error("%s: %s: the image is served by ublk-qcow as %s%s", path, why, dev.device,
			   writing ? " (close the device first; 'snapshot -c/-d' works on it live)"
				   : hint);
	else
		tool_error("%s: %s: is another process (QEMU, ublk-qcow) using the image?%s", path,
			   why, hint);
	return -EBUSY;
}

/*
 * QEMU's locks, for as long as the disk is open: a writer refuses other
 * writers and readers (neither writes the image behind the other's back: a
 * second engine would allocate the same clusters), a reader refuses writers
 * unless -U. On a descriptor of its own, taken before the engine opens (and
 * maybe repairs) the image.
 */
static int lock_image(struct disk *d, bool read_only)
{
	d->lock_fd = open(d->path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (d->lock_fd < 0)
		return 0;	/* the open proper reports what is wrong */
	if (disk_lock(d->lock_fd, d->path, !read_only) == 0)
		return 0;
	close(d->lock_fd);
	d->lock_fd = -1;
	return -EBUSY;
}

static int open_raw(struct disk *d, bool read_only)
{
	off_t end;
	int err;

	d->fd = open(d->path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC);
	if (d->fd < 0)
		return disk_fail(d, -errno);
	/* SEEK_END also gives the size of block devices. */
	end = lseek(d->fd, 0, SEEK_END);
	if (end < 0) {
		err = disk_fail(d, -errno);
		close(d->fd);
		d->fd = -1;
		return err;
	}
	d->size = (uint64_t)end;
	return 0;
}

int disk_open(struct disk *d, const char *path, enum disk_format fmt,
	      bool read_only, enum disk_open_mode mode)
{
	int ret;

	memset(d, 0, sizeof(*d));
	d->path = path;
	d->fd = -1;
	d->lock_fd = -1;
	d->read_only = read_only;
	if (fmt == DISK_FMT_AUTO) {
		ret = disk_detect_format(path, &fmt);
		if (ret < 0)
			return ret;
	}
	d->fmt = fmt;
	ret = lock_image(d, read_only);
	if (ret < 0)
		return ret;
	ret = fmt == DISK_FMT_QCOW2 ? open_qcow2(d, read_only, mode) : open_raw(d, read_only);
	if (ret < 0 && d->lock_fd >= 0) {
		close(d->lock_fd);
		d->lock_fd = -1;
	}
	return ret;
}

int disk_close(struct disk *d)
{
	int ret = 0;

	if (d->img) {
		ret = qcow_close(d->img);
		if (ret < 0) {
			/* The handle is gone: its message cannot be asked for. */
			tool_error("%s: %s", d->path, strerror(-ret));
		}
		d->img = NULL;
	}
	if (d->fd >= 0) {
		if (!d->read_only && fdatasync(d->fd) < 0 && errno != EINVAL)
			ret = disk_fail(d, -errno);
		if (close(d->fd) < 0 && !ret)
			ret = disk_fail(d, -errno);
		d->fd = -1;
	}
	if (d->lock_fd >= 0)
		close(d->lock_fd);	/* after the last write is durable */
	d->lock_fd = -1;
	return ret;
}

/* Requests past the end are refused before they reach the engine or file. */
static int check_range(const struct disk *d, uint64_t off, uint64_t len)
{
	if (off > d->size || len > d->size - off) {
		tool_error("%s: request at offset %llu, %llu bytes lies beyond the end "
			   "of the image (%llu bytes)", d->path,
			   (unsigned long long)off, (unsigned long long)len,
			   (unsigned long long)d->size);
		return -EINVAL;
	}
	return 0;
}

static int raw_pread_all(struct disk *d, void *buf, uint64_t off, size_t len)
{
	char *p = buf;

	while (len) {
		ssize_t n = pread(d->fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return disk_fail(d, -errno);
		if (n == 0) {
			/* The file shrank under us: what is missing reads as zero. */
			memset(p, 0, len);
			return 0;
		}
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int raw_pwrite_all(struct disk *d, const void *buf, uint64_t off, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = pwrite(d->fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return disk_fail(d, n < 0 ? -errno : -EIO);
		p += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

int disk_read(struct disk *d, void *buf, uint64_t off, size_t len)
{
	int ret = check_range(d, off, len);

	if (ret < 0)
		return ret;
	if (d->img) {
		ret = qcow_read(d->img, buf, off, len);
		return ret < 0 ? disk_fail(d, ret) : 0;
	}
	return raw_pread_all(d, buf, off, len);
}

int disk_write(struct disk *d, const void *buf, uint64_t off, size_t len)
{
	int ret = check_range(d, off, len);

	if (ret < 0)
		return ret;
	if (d->img) {
		ret = qcow_write(d->img, buf, off, len);
		return ret < 0 ? disk_fail(d, ret) : 0;
	}
	return raw_pwrite_all(d, buf, off, len);
}

/* Plain zero writes, for files that cannot fallocate. */
static int raw_write_zero_buffer(struct disk *d, uint64_t off, uint64_t len)
{
	const size_t chunk = 1 << 20;
	void *zero = calloc(1, chunk);
	int ret = 0;

	if (!zero)
		return disk_fail(d, -ENOMEM);
	while (len && !ret) {
		size_t n = len < chunk ? (size_t)len : chunk;

		ret = raw_pwrite_all(d, zero, off, n);
		off += n;
		len -= n;
	}
	free(zero);
	return ret;
}

static int raw_write_zeroes(struct disk *d, uint64_t off, uint64_t len, unsigned flags)
{
	int mode = (flags & QCOW_ZERO_MAY_UNMAP) ?
		FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE :
		FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

	if (fallocate(d->fd, mode, (off_t)off, (off_t)len) == 0)
		return 0;
	if (errno != EOPNOTSUPP && errno != ENODEV && errno != EINVAL)
		return disk_fail(d, -errno);
	return raw_write_zero_buffer(d, off, len);
}

int disk_write_zeroes(struct disk *d, uint64_t off, uint64_t len, unsigned flags)
{
	int ret = check_range(d, off, len);

	if (ret < 0 || !len)
		return ret;
	if (d->img) {
		ret = qcow_write_zeroes(d->img, off, len, flags);
		return ret < 0 ? disk_fail(d, ret) : 0;
	}
	return raw_write_zeroes(d, off, len, flags);
}

int disk_discard(struct disk *d, uint64_t off, uint64_t len)
{
	int ret = check_range(d, off, len);

	if (ret < 0 || !len)
		return ret;
	if (d->img) {
		ret = qcow_discard(d->img, off, len);
		return ret < 0 ? disk_fail(d, ret) : 0;
	}
	/* Discard is advisory: a file that cannot punch holes keeps its data. */
	if (fallocate(d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) < 0 &&
	    errno != EOPNOTSUPP && errno != ENODEV)
		return disk_fail(d, -errno);
	return 0;
}

int disk_resize(struct disk *d, uint64_t size)
{
	int ret;

	if (d->img) {
		ret = qcow_resize(d->img, size);
		if (ret < 0)
			return disk_fail(d, ret);
	} else if (ftruncate(d->fd, (off_t)size) < 0) {
		return disk_fail(d, -errno);
	}
	d->size = size;
	return 0;
}

int disk_flush(struct disk *d)
{
	int ret;

	if (d->img) {
		ret = qcow_guest_flush(d->img);
		return ret < 0 ? disk_fail(d, ret) : 0;
	}
	if (fdatasync(d->fd) < 0 && errno != EINVAL)
		return disk_fail(d, -errno);
	return 0;
}

/* Holes of a raw file via SEEK_DATA/SEEK_HOLE; all data where unsupported. */
static int raw_map(struct disk *d, uint64_t off, uint64_t len, struct qcow_extent *ext)
{
	memset(ext, 0, sizeof(*ext));
	ext->guest_offset = off;
	ext->kind = QCOW_EXTENT_UNALLOCATED;
	if (qcow_file_data_run(d->fd, off, len, &ext->length)) {
		ext->kind = QCOW_EXTENT_DATA;
		ext->host_offset = off;
	}
	return 0;
}

int disk_map(struct disk *d, uint64_t off, uint64_t len, struct qcow_extent *ext)
{
	int ret;

	if (off >= d->size || !len)
		return check_range(d, off, len ? len : 1);
	if (len > d->size - off)
		len = d->size - off;
	if (d->img) {
		ret = qcow_map(d->img, off, len, ext);
		if (ret < 0)
			return disk_fail(d, ret);
		if (!ext->length || ext->guest_offset != off || ext->length > len) {
			tool_error("%s: engine returned a bad extent at offset %llu",
				   d->path, (unsigned long long)off);
			return -EIO;
		}
		return 0;
	}
	return raw_map(d, off, len, ext);
}
