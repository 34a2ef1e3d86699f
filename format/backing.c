/* SPDX-License-Identifier: MIT */
/*
 * The backing chain.  A cluster an image does not allocate reads from its
 * backing file (qcow2 or raw), which may have a backing file of its own;
 * the handles below an image are its layers, depth 1, 2, ... (the image
 * itself is depth 0).  This file opens them, maps through them and reads
 * from them:
 *  - each layer is opened read-only, with the image lock taken shared, so
 *    that a process writing it (which holds that lock exclusively) and the
 *    chain refuse each other; no write path reaches a layer;
 *  - a relative backing name is relative to the directory of the image
 *    that names it, as QEMU resolves it;
 *  - a raw backing file is a handle with no tables: each byte maps to
 *    itself; its size is the file's, rounded up to 512 bytes as QEMU sees
 *    it, and bytes past its end read as zeros;
 *  - a layer shorter than the image above reads as zeros past its end;
 *  - an image that appears twice in a chain (a loop) is refused at open.
 * Handles opened for check (info, check) or with no_backing leave the
 * chain closed: they look at one file, and must work when its base is
 * missing.  A backing name that leads to anything but a regular file or a
 * block device is refused (a FIFO would hang the open).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define ULL(x) ((unsigned long long)(x))

/* The name of img's backing file as a path to open (*path: malloc'd). */
static int backing_path(struct qcow_image *img, char **path)
{
	const char *slash = strrchr(img->name, '/');
	int dirlen = slash ? (int)(slash - img->name + 1) : 0;

	if (img->backing_file[0] == '/')
		dirlen = 0;
	if (asprintf(path, "%.*s%s", dirlen, img->name, img->backing_file) < 0) {
		*path = NULL;
		return qcow_set_error(img, -ENOMEM, "out of memory");
	}
	return 0;
}

/* Is the file of fd img's, or that of an image above it (a loop)? */
static bool in_chain(const struct qcow_image *img, int fd)
{
	const struct qcow_image *l;
	struct stat a, b;

	if (fstat(fd, &a) < 0)
		return false;
	for (l = img; l; l = l->above)
		if (l->file.fd >= 0 && fstat(l->file.fd, &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return true;
	return false;
}

static bool regular_or_block(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* raw or qcow2, from the header extension or else from the file's magic. */
static int backing_is_raw(struct qcow_image *img, const struct qcow_file *f, bool *raw)
{
	uint8_t magic[4] = { 0 };
	int ret;

	if (img->backing_format) {
		*raw = !strcmp(img->backing_format, "raw");
		if (*raw || !strcmp(img->backing_format, "qcow2"))
			return 0;
		return qcow_set_error(img, -ENOTSUP, "backing file format '%s' is not supported "
				      "(raw and qcow2 are)", img->backing_format);
	}
	ret = f->ops->pread(f->ctx, magic, sizeof(magic), 0);
	if (ret < 0)
		return qcow_set_error(img, ret, "cannot read backing file %s: %s",
				      img->backing_file, strerror(-ret));
	*raw = be32toh(*(uint32_t *)magic) != QCOW_MAGIC;
	return 0;
}

/* A raw layer over file f (which it owns from now on). */
static int open_raw(struct qcow_image *img, struct qcow_file *f, const char *path,
		    struct qcow_image **out)
{
	struct qcow_image *r = calloc(1, sizeof(*r));
	uint64_t size = 0;
	int ret;

	if (!r || !(r->name = strdup(path))) {
		free(r);
		f->ops->close(f->ctx);
		return qcow_set_error(img, -ENOMEM, "out of memory");
	}
	r->file = *f;
	r->raw = true;
	r->read_only = true;
	r->cluster_bits = 16;
	r->cluster_size = 1ULL << 16;
	ret = f->ops->get_size(f->ctx, &size);
	r->size = QCOW_ALIGN_UP(size, 512);
	if (ret < 0) {
		qcow_close(r);
		return qcow_set_error(img, ret, "backing file %s: cannot get its size: %s", path,
				      strerror(-ret));
	}
	*out = r;
	return 0;
}

int qcow_backing_open(struct qcow_image *img, const struct qcow_open_opts *opts)
{
	struct qcow_open_opts o = { .read_only = true };
	struct qcow_file f;
	char err[sizeof(img->errmsg)], *path;
	bool raw = false;
	int ret;

	if (!img->backing_file || img->for_check || (opts && opts->no_backing))
		return 0;
	ret = backing_path(img, &path);
	if (ret < 0)
		return ret;
	/* O_NONBLOCK: a name that leads to a FIFO must not hang the open */
	ret = qcow_file_open_posix(path, O_RDONLY | O_NONBLOCK, &f);
	if (ret < 0) {
		qcow_set_error(img, ret, "cannot open backing file %s: %s", path, strerror(-ret));
		free(path);
		return ret;
	}
	if (!regular_or_block(f.fd))
		ret = qcow_set_error(img, -EINVAL, "backing file %s is not a regular file or a "
				     "block device", path);
	else if (in_chain(img, f.fd))
		ret = qcow_set_error(img, -ELOOP, "backing file %s is already in the chain above "
				     "it (a loop)", path);
	else if (qcow_file_lock_image(f.fd, false) < 0)
		ret = qcow_set_error(img, -EAGAIN, "backing file %s is in use for writing by "
				     "another process (its image lock is held)", path);
	else
		ret = backing_is_raw(img, &f, &raw);
	if (ret < 0) {
		f.ops->close(f.ctx);
	} else if (raw) {
		ret = open_raw(img, &f, path, &img->backing);
	} else {
		o.l2_cache_bytes = opts ? opts->l2_cache_bytes : 0;
		ret = qcow_open_layer(&f, path, &o, img, &img->backing, err, sizeof(err));
		if (ret < 0)
			qcow_set_error(img, ret, "backing file: %s", err);
	}
	free(path);
	return ret;
}

struct qcow_image *qcow_layer(const struct qcow_image *img, unsigned depth)
{
	struct qcow_image *l = (struct qcow_image *)img;

	while (l && depth--)
		l = l->backing;
	return l;
}

int qcow_layer_failed(struct qcow_image *img, const struct qcow_image *layer, int err)
{
	char msg[sizeof(img->errmsg)];

	memcpy(msg, layer->errmsg, sizeof(msg));
	snprintf(img->errmsg, sizeof(img->errmsg), "%s", msg);
	img->busy_reason = err == -EBUSY ? layer->busy_reason : img->busy_reason;
	return err;
}

int qcow_backing_map(struct qcow_image *img, struct qcow_extent *ext,
		     struct qcow_meta_read *need)
{
	struct qcow_image *b = img->backing;
	uint64_t off = ext->guest_offset;
	int ret;

	if (off >= b->size)
		return 0;	/* past the end of the base: zeros */
	ret = qcow_map_layer(b, off, QCOW_MIN(ext->length, b->size - off), ext, need);
	if (ret == -EAGAIN && need)
		need->depth++;
	if (ret < 0)
		return qcow_layer_failed(img, b, ret);
	ext->depth++;
	return 0;
}

int qcow_backing_read(struct qcow_image *img, void *buf, uint64_t off, uint64_t len)
{
	struct qcow_image *b = img->backing;
	uint64_t in = 0;
	int ret;

	if (b && off < b->size) {
		in = QCOW_MIN(len, b->size - off);
		ret = qcow_read(b, buf, off, in);
		if (ret < 0)
			return qcow_layer_failed(img, b, ret);
	}
	memset((uint8_t *)buf + in, 0, len - in);
	return 0;
}

/* The raw layer's map: every byte is itself, and a hole in the file (or
 * the end of it) reads as zeros without being read, as QEMU maps it. */
int qcow_raw_map(const struct qcow_image *img, uint64_t off, uint64_t max,
		 struct qcow_extent *ext)
{
	memset(ext, 0, sizeof(*ext));
	ext->guest_offset = off;
	ext->kind = QCOW_EXTENT_DATA;
	ext->host_offset = off;
	ext->length = max;
	if (img->file.fd >= 0 && !qcow_file_data_run(img->file.fd, off, max, &ext->length))
		ext->kind = QCOW_EXTENT_ZERO;
	return 0;
}

unsigned qcow_chain_depth(const struct qcow_image *img)
{
	unsigned n = 0;

	for (img = img->backing; img; img = img->backing)
		n++;
	return n;
}

const struct qcow_file *qcow_get_layer_file(const struct qcow_image *img, unsigned depth)
{
	const struct qcow_image *l = qcow_layer(img, depth);

	return l ? &l->file : NULL;
}

const char *qcow_get_layer_name(const struct qcow_image *img, unsigned depth)
{
	const struct qcow_image *l = qcow_layer(img, depth);

	return l ? l->name : NULL;
}
