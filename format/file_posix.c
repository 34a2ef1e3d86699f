// SPDX-License-Identifier: MIT
/*
 * The POSIX file backend: the qcow_file_ops every real image uses. Short
 * reads/writes and EINTR are retried here so the engine only ever sees
 * "all bytes moved" or an -errno.
 */
#include <errno.h>
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
