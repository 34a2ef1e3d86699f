/* SPDX-License-Identifier: MIT */
/*
 * The backing chain.  A cluster an image does not allocate reads from its
 * backing file (qcow2 or raw), which may have a backing file of its own;
 * the handles below an image are its layers, depth 1, 2, ... (the image
 * itself is depth 0).  This file opens them, maps through them and reads
 * from them:
 *  - each layer is opened read-only and locked as QEMU locks backing files
 *    (file_posix.c): a qcow2 layer refuses writers (QEMU or ours) and they
 *    refuse it, unless the chain is opened force_share; a raw layer shares
 *    everything; no write path reaches a layer;
 *  - a relative backing name is relative to the directory of the image
 *    that names it, as QEMU resolves it;
 *  - a raw backing file is a handle with no tables: each byte maps to
 *    itself; its size is the file's, rounded up to 512 bytes as QEMU sees
 *    it, and bytes past its end read as zeros;
 *  - a layer shorter than the image above reads as zeros past its end;
 *  - an image that appears twice in a chain (a loop) is refused at open,
 *    and so is a chain deeper than QCOW_MAX_CHAIN.
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

int qcow_backing_path(const char *image_path, const char *backing, char **out)
{
	const char *slash = strrchr(image_path, '/');
	int dirlen = slash && backing[0] != '/' ? (int)(slash - image_path + 1) : 0;

	if (asprintf(out, "%.*s%s", dirlen, image_path, backing) < 0) {
		*out = NULL;
		return -ENOMEM;
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

/* How far below the top img lies. */
static unsigned layer_depth(const struct qcow_image *img)
{
	unsigned n = 0;

	for (img = img->above; img; img = img->above)
		n++;
	return n;
}

static bool regular_or_block(int fd)
{
	struct stat st;

	return fstat(fd, &st) == 0 && (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode));
}

/* A layer is read while the image above is open: locked as QEMU locks
 * backing files, a qcow2 one refusing writers unless share (-U). */
static int lock_layer(struct qcow_image *img, const struct qcow_file *f, const char *path,
		      bool share)
{
	char why[128] = "";
	int ret = qcow_file_lock_image(f->fd, share ? QCOW_ACCESS_SHARE : QCOW_ACCESS_READ,
				       why, sizeof(why));

	if (ret == -EAGAIN)
		return qcow_set_error(img, ret, "backing file %s: %s: is another process "
				      "writing it?", path, why);
	return ret < 0 ? qcow_set_error(img, ret, "backing file %s: %s", path, why) : 0;
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

	if (!img->backing_file || !img->chain_wanted)
		return 0;
	if (layer_depth(img) >= QCOW_MAX_CHAIN)
		return qcow_set_error(img, -ELOOP, "backing chain deeper than %d images",
				      QCOW_MAX_CHAIN);
	if (qcow_backing_path(img->name, img->backing_file, &path) < 0)
		return qcow_set_error(img, -ENOMEM, "out of memory");
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
	else
		ret = backing_is_raw(img, &f, &raw);
	if (ret == 0)
		ret = lock_layer(img, &f, path, raw || (opts && opts->force_share));
	if (ret < 0) {
		f.ops->close(f.ctx);
	} else if (raw) {
		ret = open_raw(img, &f, path, &img->backing);
	} else {
		o.l2_cache_bytes = opts ? opts->l2_cache_bytes : 0;
		o.force_share = opts && opts->force_share;
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

int qcow_map_backing_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			    struct qcow_extent *ext, struct qcow_meta_read *need)
{
	if (!need)
		return qcow_set_error(img, -EINVAL, "qcow_map_backing_nowait needs a qcow_meta_read");
	if (!len)
		return qcow_set_error(img, -EINVAL, "map of 0 bytes of the backing chain");
	memset(ext, 0, sizeof(*ext));
	ext->guest_offset = off;
	ext->kind = QCOW_EXTENT_UNALLOCATED;
	ext->length = len;
	return img->backing ? qcow_backing_map(img, ext, need) : 0;
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

/* name and format as the header will keep them: checked, copied. */
static int backing_names(struct qcow_image *img, const char *name, const char *format,
			 char **n, char **f)
{
	*n = *f = NULL;
	if (!name || !name[0])
		return format ? qcow_set_error(img, -EINVAL, "a backing format needs a backing "
						 "file") : 0;
	if (strlen(name) > 1023)
		return qcow_set_error(img, -EINVAL, "backing file name longer than 1023 bytes");
	if (!format || (strcmp(format, "raw") && strcmp(format, "qcow2")))
		return qcow_set_error(img, -EINVAL, "backing format must be raw or qcow2");
	*n = strdup(name);
	*f = strdup(format);
	if (*n && *f)
		return 0;
	free(*n);
	free(*f);
	return qcow_set_error(img, -ENOMEM, "out of memory");
}

/*
 * Name n (format f; both malloc'd, taken over) in the header after a flush
 * (everything under the old root durable first), durable, and chain in
 * place of the old one (NULL: opened now, as opts say).
 */
static int switch_backing(struct qcow_image *img, char *n, char *f, struct qcow_image *chain,
			  const struct qcow_open_opts *opts)
{
	char *old_n = img->backing_file, *old_f = img->backing_format;
	int ret = qcow_flush(img);

	if (ret < 0) {
		free(n);
		free(f);
		qcow_close(chain);
		return ret;
	}
	img->backing_file = n;
	img->backing_format = f;
	if (!n)
		img->backing_file_offset = img->backing_file_size = 0;
	ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret < 0) {
		free(n);
		free(f);
		img->backing_file = old_n;
		img->backing_format = old_f;
		qcow_close(chain);
		return ret;
	}
	free(old_n);
	free(old_f);
	qcow_close(img->backing);
	img->backing = chain;
	if (chain) {
		chain->above = img;
		return 0;
	}
	ret = qcow_backing_open(img, opts);
	return ret < 0 ? qcow_fail_handle(img, ret, "backing file open") : 0;
}

int qcow_set_backing(struct qcow_image *img, const char *name, const char *format,
		     const struct qcow_open_opts *opts)
{
	char *n, *f;
	int ret;

	if (img->read_only)
		return qcow_set_error(img, -EROFS, "image is opened read-only");
	ret = backing_names(img, name, format, &n, &f);
	return ret < 0 ? ret : switch_backing(img, n, f, NULL, opts);
}

/* The chain backing file name (format) would give img, opened (*chain
 * NULL: none), through a stand-in that names it. */
static int open_chain_of(struct qcow_image *img, const char *name, const char *format,
			 struct qcow_image **chain)
{
	struct qcow_image *s;
	int ret;

	*chain = NULL;
	if (!name)
		return 0;
	s = calloc(1, sizeof(*s));
	if (!s)
		return qcow_set_error(img, -ENOMEM, "out of memory");
	s->name = img->name;
	s->file.fd = -1;
	s->backing_file = (char *)name;
	s->backing_format = (char *)format;
	s->chain_wanted = true;
	s->above = img;
	ret = qcow_backing_open(s, NULL);
	if (ret < 0)
		qcow_layer_failed(img, s, ret);
	*chain = s->backing;
	free(s);
	return ret;
}

/* Guest bytes [off, off+len) of chain b (NULL: none): zeros past its end. */
static int chain_read(struct qcow_image *img, struct qcow_image *b, void *buf, uint64_t off,
		      uint64_t len)
{
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

int qcow_backing_read(struct qcow_image *img, void *buf, uint64_t off, uint64_t len)
{
	return chain_read(img, img->backing, buf, off, len);
}

#define COPY_CHUNK (1U << 20)

typedef int (*extent_fn)(struct qcow_image *img, const struct qcow_extent *ext, void *ctx);

/* Each extent of img, at most COPY_CHUNK long, to visit in order, with
 * progress: rebase and commit copy a chunk at a time. */
static int walk_extents(struct qcow_image *img, extent_fn visit, void *ctx,
			qcow_progress_fn progress, void *opaque)
{
	struct qcow_extent ext;
	uint64_t off;
	int ret = 0;

	for (off = 0; ret == 0 && off < img->size; off += ext.length) {
		if (progress)
			progress(opaque, off, img->size);
		ret = qcow_map(img, off, QCOW_MIN(COPY_CHUNK, img->size - off), &ext);
		if (ret == 0)
			ret = visit(img, &ext, ctx);
	}
	return ret;
}

struct rebase_ctx {
	struct qcow_image *chain;
	uint8_t *old, *new;
};

/* Write into img what it does not allocate and its chain has otherwise
 * than chain: the chain's bytes, so that its guest content stays. */
static int rebase_extent(struct qcow_image *img, const struct qcow_extent *ext, void *ctx)
{
	struct rebase_ctx *r = ctx;
	uint64_t off = ext->guest_offset, n = ext->length;
	int ret = 0;

	if (ext->depth == 0 && ext->kind != QCOW_EXTENT_UNALLOCATED)
		return 0;	/* the image's own: kept */
	if (ext->kind == QCOW_EXTENT_ZERO || ext->kind == QCOW_EXTENT_UNALLOCATED)
		memset(r->old, 0, n);
	else
		ret = qcow_read(img, r->old, off, n);
	if (ret == 0)
		ret = chain_read(img, r->chain, r->new, off, n);
	if (ret == 0 && memcmp(r->old, r->new, n))
		ret = qcow_write(img, r->old, off, n);
	return ret;
}

int qcow_rebase(struct qcow_image *img, const char *name, const char *format,
		qcow_progress_fn progress, void *opaque)
{
	struct rebase_ctx r = { NULL, NULL, NULL };
	char *n = NULL, *f = NULL;
	int ret;

	if (img->read_only)
		return qcow_set_error(img, -EROFS, "image is opened read-only");
	if (!img->chain_wanted)
		return qcow_set_error(img, -EINVAL, "rebase needs the image's backing chain open");
	ret = backing_names(img, name, format, &n, &f);
	if (ret == 0)
		ret = open_chain_of(img, n, f, &r.chain);
	if (ret == 0 && (!(r.old = malloc(COPY_CHUNK)) || !(r.new = malloc(COPY_CHUNK))))
		ret = qcow_set_error(img, -ENOMEM, "out of memory");
	if (ret == 0)
		ret = walk_extents(img, rebase_extent, &r, progress, opaque);
	free(r.old);
	free(r.new);
	if (ret == 0)
		return switch_backing(img, n, f, r.chain, NULL);
	qcow_close(r.chain);
	free(n);
	free(f);
	return ret;
}

struct commit_ctx {
	const struct qcow_commit_target *base;
	uint8_t *buf;
};

/* img's own ranges into the base. */
static int commit_extent(struct qcow_image *img, const struct qcow_extent *ext, void *ctx)
{
	struct commit_ctx *c = ctx;
	uint64_t off = ext->guest_offset, n = ext->length;
	int ret;

	if (ext->depth > 0 || ext->kind == QCOW_EXTENT_UNALLOCATED)
		return 0;	/* the backing file's already */
	if (ext->kind == QCOW_EXTENT_ZERO)
		return c->base->write_zeroes(c->base->opaque, off, n);
	ret = qcow_read(img, c->buf, off, n);
	return ret < 0 ? ret : c->base->write(c->base->opaque, c->buf, off, n);
}

int qcow_commit(struct qcow_image *img, const struct qcow_commit_target *base, bool keep,
		qcow_progress_fn progress, void *opaque)
{
	struct commit_ctx c = { base, NULL };
	int ret;

	if (!keep && img->read_only)
		return qcow_set_error(img, -EROFS, "image is opened read-only");
	c.buf = malloc(COPY_CHUNK);
	if (!c.buf)
		return qcow_set_error(img, -ENOMEM, "out of memory");
	ret = walk_extents(img, commit_extent, &c, progress, opaque);
	free(c.buf);
	/* the backing file durable before the first cluster of img goes */
	if (ret == 0)
		ret = base->flush(base->opaque);
	if (ret == 0 && !keep)
		ret = qcow_make_empty(img);
	return ret;
}

struct qcow_image *qcow_get_layer(const struct qcow_image *img, unsigned depth)
{
	return qcow_layer(img, depth);
}

const char *qcow_get_name(const struct qcow_image *img)
{
	return img->name;
}
