// SPDX-License-Identifier: MIT
/*
 * The POSIX file backend: the qcow_file_ops every real image uses. Short
 * reads/writes and EINTR are retried here so the engine only ever sees
 * "all bytes moved" or an -errno.
 *
 * Direct IO (O_DIRECT, the daemon's --cache=none): the file system needs
 * buffers, offsets and lengths aligned (statx's STATX_DIOALIGN says how;
 * where it does not, a probe read finds the offset alignment).  The
 * engine's IO is not aligned (an L1 entry, a header field), so what is not
 * goes through an aligned buffer that covers whole blocks: read, or read,
 * patch and write back.  Such a write never shares a block with the
 * daemon's own IO as long as clusters are at least a block, which the
 * daemon checks before it uses direct IO.
 */
#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

struct posix_ctx {
	int fd;
	uint32_t mem_align;	/* direct IO: see struct qcow_file; 0 when buffered */
	uint32_t off_align;
};

/* All of len bytes at off, zeros past the end of the file. */
static int raw_pread(const struct posix_ctx *p, uint8_t *b, size_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t n = pread(p->fd, b, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		/* Past end of file (with direct IO a short read is the end):
		 * the engine treats it as zeros. */
		if (n == 0 || (p->off_align && (size_t)n < len)) {
			memset(b + n, 0, len - (size_t)n);
			return 0;
		}
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int raw_pwrite(const struct posix_ctx *p, const uint8_t *b, size_t len, uint64_t off)
{
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

static bool dio_aligned(const struct posix_ctx *p, const void *buf, size_t len, uint64_t off)
{
	return !p->off_align || ((uintptr_t)buf % p->mem_align == 0 && len % p->off_align == 0 &&
				 off % p->off_align == 0);
}

/*
 * Direct IO the caller did not align: through an aligned buffer covering
 * the blocks of [off, off + len); a write reads them first.  (A write past
 * the end of the file leaves it a block longer at most, with zeros: the
 * engine grows files by whole clusters anyway.)
 */
static int bounce(const struct posix_ctx *p, uint8_t *out, const uint8_t *in, size_t len,
		  uint64_t off)
{
	uint64_t a = p->off_align, start = off / a * a, end = (off + len + a - 1) / a * a;
	size_t blen = (size_t)(end - start);
	void *b;
	int ret;

	if (posix_memalign(&b, p->mem_align > a ? p->mem_align : a, blen))
		return -ENOMEM;
	ret = raw_pread(p, b, blen, start);
	if (ret == 0 && out) {
		memcpy(out, (uint8_t *)b + (off - start), len);
	} else if (ret == 0) {
		memcpy((uint8_t *)b + (off - start), in, len);
		ret = raw_pwrite(p, b, blen, start);
	}
	free(b);
	return ret;
}

static int posix_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct posix_ctx *p = ctx;

	if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EINVAL;
	if (!dio_aligned(p, buf, len, off))
		return bounce(p, buf, NULL, len, off);
	return raw_pread(p, buf, len, off);
}

static int posix_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct posix_ctx *p = ctx;

	if (off > (uint64_t)INT64_MAX || len > (uint64_t)INT64_MAX - off)
		return -EFBIG;
	if (!dio_aligned(p, buf, len, off))
		return bounce(p, NULL, buf, len, off);
	return raw_pwrite(p, buf, len, off);
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

static int posix_punch(void *ctx, uint64_t off, uint64_t len)
{
	struct posix_ctx *p = ctx;

	if (fallocate(p->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0)
		return -errno;
	return 0;
}

static const struct qcow_file_ops posix_ops = {
	.pread = posix_pread,
	.pwrite = posix_pwrite,
	.flush = posix_flush,
	.truncate = posix_truncate,
	.punch = posix_punch,
	.get_size = posix_get_size,
	.close = posix_close,
};

/*
 * Direct IO: the file system's alignments for fd, from statx, or where it
 * does not say (9p, tmpfs, kernels before 6.1) the smallest block a probe
 * read of the header accepts, for offsets and memory both.
 */
static void dio_alignment(int fd, uint32_t *mem, uint32_t *off)
{
	struct statx stx;
	uint32_t a;
	void *b;

	if (statx(fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
	    (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align &&
	    stx.stx_dio_mem_align) {
		*mem = stx.stx_dio_mem_align;
		*off = stx.stx_dio_offset_align;
		return;
	}
	*mem = *off = 4096;
	if (posix_memalign(&b, 4096, 4096))
		return;
	for (a = 512; a < 4096; a *= 2) {
		if (pread(fd, b, a, 0) >= 0 || errno != EINVAL) {
			*mem = *off = a;
			break;
		}
	}
	free(b);
}

int qcow_file_posix_buffered(struct qcow_file *f)
{
	struct posix_ctx *p = f->ctx;
	int fl;

	if (f->ops != &posix_ops)
		return -EINVAL;
	fl = fcntl(p->fd, F_GETFL);
	if (fl < 0 || fcntl(p->fd, F_SETFL, fl & ~O_DIRECT) < 0)
		return -errno;
	p->mem_align = p->off_align = 0;
	f->dio_mem_align = f->dio_off_align = 0;
	return 0;
}

int qcow_file_data_run(int fd, uint64_t off, uint64_t len, uint64_t *run)
{
	off_t data = lseek(fd, (off_t)off, SEEK_DATA), hole;

	*run = len;
	if (data < 0)
		return errno == ENXIO ? 0 : 1;	/* a hole to the end, or no answer */
	if ((uint64_t)data > off) {
		if ((uint64_t)data - off < len)
			*run = (uint64_t)data - off;
		return 0;
	}
	hole = lseek(fd, (off_t)off, SEEK_HOLE);
	if (hole > (off_t)off && (uint64_t)hole - off < len)
		*run = (uint64_t)hole - off;
	return 1;
}

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
	if (flags & O_DIRECT)
		dio_alignment(fd, &p->mem_align, &p->off_align);
	out->ops = &posix_ops;
	out->ctx = p;
	out->fd = fd;
	out->dio_mem_align = p->mem_align;
	out->dio_off_align = p->off_align;
	return 0;
}

/*
 * Who may use an image at the same time: QEMU's protocol (block/file-posix.c),
 * so that QEMU and we refuse each other exactly as two QEMU processes do.
 * OFD read locks, one byte per permission (bit i of consistent read, write,
 * write unchanged, resize):
 *
 *   byte 100 + i   held while this process has permission i;
 *   byte 200 + i   held while it refuses to share permission i.
 *
 * Taking permission i fails when anyone holds 200 + i; refusing to share it
 * fails when anyone holds 100 + i. The bytes are taken first and checked
 * after (as QEMU does), so two processes that start together cannot both
 * miss each other. A writer of a qcow2 image holds read, write and resize
 * and shares neither write nor resize; a reader holds read and refuses
 * writers and resizers (qemu-img info, a qcow2 backing file), unless it
 * shares everything (-U, --force-share; QEMU's raw backing files).
 *
 * One byte per snapshot id, far past those: ublk-qcow open --snapshot holds
 * it shared, beside a writer of the active image, so that no one deletes
 * the snapshot (freeing its clusters) under it; a deleter asks first.
 *
 * OFD locks belong to the open file description: they are seen from any
 * other descriptor, in this process or another, and go with the last close.
 */
#define QEMU_LOCK_PERM_BASE	100
#define QEMU_LOCK_SHARED_BASE	200
#define QCOW_LOCK_SNAPSHOT_BASE	(1LL << 50)

enum { PERM_CONSISTENT_READ, PERM_WRITE, PERM_WRITE_UNCHANGED, PERM_RESIZE, PERM_COUNT };

static const char *const perm_names[PERM_COUNT] = {
	"consistent read", "write", "write unchanged", "resize",
};

#define P(i) (1U << (i))
static const struct {
	unsigned held, unshared;
} access_perms[] = {
	[QCOW_ACCESS_WRITE] = { P(PERM_CONSISTENT_READ) | P(PERM_WRITE) | P(PERM_RESIZE),
				P(PERM_WRITE) | P(PERM_RESIZE) },
	[QCOW_ACCESS_READ] = { P(PERM_CONSISTENT_READ), P(PERM_WRITE) | P(PERM_RESIZE) },
	[QCOW_ACCESS_SHARE] = { P(PERM_CONSISTENT_READ), 0 },
};
#undef P

static off_t snapshot_lock_byte(const char *id)
{
	uint64_t h = 1469598103934665603ULL;	/* FNV-1a: ids are short strings */

	for (; *id; id++)
		h = (h ^ (unsigned char)*id) * 1099511628211ULL;
	return QCOW_LOCK_SNAPSHOT_BASE + (off_t)(h & ((1ULL << 40) - 1));
}

static int lock_bytes(int fd, off_t at, off_t len, short type)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = at, .l_len = len };

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

/* Does anyone else refuse what we hold, or hold what we refuse? */
static int access_conflict(int fd, unsigned held, unsigned unshared, char *why, size_t len)
{
	int i, r;

	for (i = 0; i < PERM_COUNT; i++) {
		r = held & (1U << i) ? byte_taken(fd, QEMU_LOCK_SHARED_BASE + i, F_WRLCK) : 0;
		if (r > 0)
			snprintf(why, len, "Failed to get \"%s\" lock", perm_names[i]);
		if (r)
			return r > 0 ? -EAGAIN : r;
	}
	for (i = 0; i < PERM_COUNT; i++) {
		r = unshared & (1U << i) ? byte_taken(fd, QEMU_LOCK_PERM_BASE + i, F_WRLCK) : 0;
		if (r > 0)
			snprintf(why, len, "Failed to get shared \"%s\" lock", perm_names[i]);
		if (r)
			return r > 0 ? -EAGAIN : r;
	}
	return 0;
}

int qcow_file_lock_image(int fd, enum qcow_access access, char *why, size_t len)
{
	unsigned held = access_perms[access].held, unshared = access_perms[access].unshared;
	int i, ret = 0;

	for (i = 0; i < PERM_COUNT && ret == 0; i++) {
		if (held & (1U << i))
			ret = lock_bytes(fd, QEMU_LOCK_PERM_BASE + i, 1, F_RDLCK);
		if (ret == 0 && (unshared & (1U << i)))
			ret = lock_bytes(fd, QEMU_LOCK_SHARED_BASE + i, 1, F_RDLCK);
	}
	if (ret == 0)
		ret = access_conflict(fd, held, unshared, why, len);
	else
		snprintf(why, len, "cannot lock the image: %s", strerror(-ret));
	if (ret < 0) {
		lock_bytes(fd, QEMU_LOCK_PERM_BASE, PERM_COUNT, F_UNLCK);
		lock_bytes(fd, QEMU_LOCK_SHARED_BASE, PERM_COUNT, F_UNLCK);
	}
	return ret;
}

int qcow_file_image_in_use(int fd)
{
	return byte_taken(fd, QEMU_LOCK_PERM_BASE + PERM_WRITE, F_WRLCK);
}

int qcow_file_snapshot_lock(int fd, const char *id)
{
	return lock_bytes(fd, snapshot_lock_byte(id), 1, F_RDLCK);
}

int qcow_file_snapshot_in_use(int fd, const char *id)
{
	return byte_taken(fd, snapshot_lock_byte(id), F_WRLCK);
}
