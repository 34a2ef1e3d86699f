// SPDX-License-Identifier: MIT
/*
 * The POSIX file backend: the qcow_file_ops every real image uses. Short
 * reads/writes and EINTR are retried here so the engine only ever sees
 * "all bytes moved" or an -errno.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct posix_ctx {
	int fd;
};

static int posix_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct posix_ctx *p = ctx;
	uint8_t *b = buf;

	if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	while (len > 0) {
		ssize_t n = pread(p->fd, b, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			/* Past end of file: the engine treats it as zeros. */
			memset(b, 0, len);
			return 0;
		}
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int posix_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct posix_ctx *p = ctx;
	const uint8_t *b = buf;

	if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EFBIG;
	while (len > 0) {
		ssize_t n = pwrite(p->fd, b, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;    /* no progress and no error: give up */
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int posix_flush(void *ctx)
{
	struct posix_ctx *p = ctx;

	while (fdatasync(p->fd) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int posix_truncate(void *ctx, uint64_t size)
{
	struct posix_ctx *p = ctx;

	if (size > (uint64_t)INT64_MAX)
		return -EFBIG;
	while (ftruncate(p->fd, (off_t)size) < 0) {
		if (errno != EINTR)
			return -errno;
	}
	return 0;
}

static int posix_get_size(void *ctx, uint64_t *size)
{
	struct posix_ctx *p = ctx;
	struct stat st;

	if (fstat(p->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

static void posix_close(void *ctx)
{
	struct posix_ctx *p = ctx;

	if (!p)
		return;
	close(p->fd);
	free(p);
}

static const struct qcow_file_ops posix_ops = {
	.pread = posix_pread,
	.pwrite = posix_pwrite,
	.flush = posix_flush,
	.truncate = posix_truncate,
	.get_size = posix_get_size,
	.close = posix_close,
};

int qcow_file_open_posix(const char *path, int flags, struct qcow_file *out)
{
	struct posix_ctx *p;
	int fd;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	fd = open(path, flags | O_CLOEXEC, 0644);
	if (fd < 0) {
		int err = -errno;

		free(p);
		return err;
	}
	p->fd = fd;
	out->ops = &posix_ops;
	out->ctx = p;
	out->fd = fd;
	return 0;
}

/*
 * Who may use an image at the same time, with OFD byte-range locks on bytes
 * far past any data (flock would be simpler, but 9p and NFS turn it into a
 * whole-file POSIX lock, which would make the locks below collide):
 *
 *   the image byte       writers (ublk-qcow read-write, qcow-tool commands
 *                        that write) hold it exclusively, readers that must
 *                        not see a writer (ublk-qcow --read-only) shared;
 *   one byte per         ublk-qcow open --snapshot holds it shared, beside a
 *   snapshot id          writer of the active image, so that no one deletes
 *                        the snapshot (freeing its clusters) under it; a
 *                        deleter asks first.
 *
 * OFD locks belong to the open file description: they are seen from any
 * other descriptor, in this process or another, and go with the last close.
 */
#define QCOW_LOCK_IMAGE_BYTE	((1LL << 50) - 1)
#define QCOW_LOCK_SNAPSHOT_BASE	(1LL << 50)

static off_t snapshot_lock_byte(const char *id)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a: ids are short strings */

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ULL;
	return QCOW_LOCK_SNAPSHOT_BASE + (off_t)(h & ((1ULL << 40) - 1));
}

static int lock_byte(int fd, off_t at, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1 };

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* 1 when another descriptor holds a lock on byte at that conflicts with type. */
static int byte_taken(int fd, off_t at, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = 1 };

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	return fl.l_type != F_UNLCK;
}

int qcow_file_lock_image(int fd, bool exclusive)
{
	int ret = lock_byte(fd, QCOW_LOCK_IMAGE_BYTE, exclusive ? F_WRLCK : F_RDLCK);

	return ret == -EACCES ? -EAGAIN : ret;	/* POSIX allows either for "held" */
}

int qcow_file_image_in_use(int fd)
{
	return byte_taken(fd, QCOW_LOCK_IMAGE_BYTE, F_WRLCK);
}

int qcow_file_snapshot_lock(int fd, const char *id)
{
	return lock_byte(fd, snapshot_lock_byte(id), F_RDLCK);
}

int qcow_file_snapshot_in_use(int fd, const char *id)
{
	return byte_taken(fd, snapshot_lock_byte(id), F_WRLCK);
}
