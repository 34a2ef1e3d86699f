// SPDX-License-Identifier: MIT
/*
 * The image as a whole: open (with the policy for dirty, corrupt and
 * unsupported images), create, close, the flush that orders every metadata
 * write, resize, and the error/IO helpers the other engine files use.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* The most of the file read to parse the header: one largest cluster. */
#define HEADER_READ_MAX (1ULL << QCOW_MAX_CLUSTER_BITS)

/* ------------------------------------------------------------ errors, IO */

int qcow_set_error(struct qcow_image *img, int err, const char *fmt, ...)
{
	char msg[sizeof(img->errmsg)];
	const char *name = img->name ? img->name : "image";
	size_t n;
	va_list ap;

	msg[0] = '\0';
	va_start(ap, fmt);
	if (fmt)
		vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* Built by hand: msg may be a copy of errmsg itself. */
	n = strnlen(name, sizeof(img->errmsg) / 2);
	memcpy(img->errmsg, name, n);
	memcpy(img->errmsg + n, ": ", 2);
	n += 2;
	strncpy(img->errmsg + n, msg, sizeof(img->errmsg) - n - 1);
	img->errmsg[sizeof(img->errmsg) - 1] = '\0';
	/* a wait whose resource the caller did not name: any progress may end it */
	if (err == -EBUSY)
		img->busy_reason = QCOW_WAIT_ANY;
	return err;
}

const char *qcow_error(const struct qcow_image *img)
{
	return img ? img->errmsg : "";
}

enum qcow_wait qcow_busy_reason(const struct qcow_image *img)
{
	return img->busy_reason;
}

/* Set the corrupt bit on disk with the raw file ops: qcow_pwrite refuses
 * writes to a corrupt image, and this must get through. */
static void write_corrupt_bit(struct qcow_image *img)
{
	uint64_t v = htobe64(img->incompatible_features);

	if (img->file.ops->pwrite(img->file.ctx, &v, sizeof(v),
				  offsetof(struct qcow_header_v3, incompatible_features)) == 0)
		img->file.ops->flush(img->file.ctx);
}

int qcow_signal_corruption(struct qcow_image *img, const char *fmt, ...)
{
	bool already = img->incompatible_features & QCOW_INCOMPAT_CORRUPT;
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	img->incompatible_features |= QCOW_INCOMPAT_CORRUPT;
	/* check reports problems itself; it must not mark the image. */
	if (!img->for_check) {
		fprintf(stderr, "qcow: %s: metadata corruption: %s%s\n",
			img->name ? img->name : "image", msg,
			already || img->read_only ? "" : "; image marked corrupt, further writes refused");
		if (!already && !img->read_only && img->version >= 3)
			write_corrupt_bit(img);
	}
	return qcow_set_error(img, -EIO, "metadata corruption: %s", msg);
}

int qcow_pread(struct qcow_image *img, void *buf, size_t len, uint64_t off)
{
	int ret = img->file.ops->pread(img->file.ctx, buf, len, off);

	if (ret < 0)
		return qcow_set_error(img, ret, "read of %zu bytes at offset %" PRIu64 " failed: %s",
				      len, off, strerror(-ret));
	return 0;
}

int qcow_fail_handle(struct qcow_image *img, int err, const char *what)
{
	if (!img->fatal_error) {
		img->fatal_error = err;
		img->fatal_what = what;
	}
	return err;
}

int qcow_refuse_if_failed(struct qcow_image *img)
{
	if (!img->fatal_error)
		return 0;
	return qcow_set_error(img, img->fatal_error, "refused: an earlier %s failed (%s), so what "
			      "the file holds is uncertain; reopen the image", img->fatal_what,
			      strerror(-img->fatal_error));
}

int qcow_refuse_write(struct qcow_image *img)
{
	if (img->read_only)
		return qcow_set_error(img, -EROFS, "write refused: image is open read-only");
	if ((img->incompatible_features & QCOW_INCOMPAT_CORRUPT) && !img->for_check)
		return qcow_set_error(img, -EIO, "write refused: image is marked corrupt");
	return qcow_refuse_if_failed(img);
}

int qcow_pwrite(struct qcow_image *img, const void *buf, size_t len, uint64_t off)
{
	int ret = qcow_refuse_write(img);

	/* new refcount blocks first: what this write makes durable may use them */
	if (ret == 0 && img->rt_any_dirty && !img->rt_committing)
		ret = qcow_refcount_commit(img);
	if (ret < 0)
		return ret;
	qcow_note_write(img, off, len);
	ret = img->file.ops->pwrite(img->file.ctx, buf, len, off);
	if (ret < 0)
		return qcow_set_error(img, ret, "write of %zu bytes at offset %" PRIu64 " failed: %s",
				      len, off, strerror(-ret));
	return 0;
}

void qcow_get_stats(const struct qcow_image *img, struct qcow_stats *out)
{
	qcow_cache_counts(img->l2_cache, &out->l2_hits, &out->l2_misses);
	out->clusters_allocated = img->clusters_allocated;
	out->cow_copies = img->cow_copies;
	out->refcount_growths = img->refcount_growths;
}

void qcow_note_write(struct qcow_image *img, uint64_t off, uint64_t len)
{
	qcow_sync_owed(img, QCOW_SYNC_ANY);
	if (off + len > img->zero_from)
		img->zero_from = off + len;
	if (off + len > img->file_end)
		img->file_end = off + len;
}

/*
 * A write that extends the file is slow: with direct IO, ext4 and xfs
 * serialize extending writes and wait for each, so allocating writes at
 * the end of the file would go one at a time.  So the file grows ahead of
 * the data, in steps of an eighth of its size (at least a cluster, at most
 * QCOW_GROW_MAX), by ftruncate: no data written, the new tail reads as
 * zeros (zero_from is unchanged) and, holding no referenced cluster, is
 * free space to qemu-img check; a crash leaves it, harmlessly.
 */
void qcow_grow_for(struct qcow_image *img, uint64_t end)
{
	uint64_t step, target;

	if (end <= img->file_end || img->read_only || img->fatal_error)
		return;
	step = QCOW_MIN(QCOW_MAX(img->file_end / 8, img->cluster_size), QCOW_GROW_MAX);
	target = QCOW_ALIGN_UP(end + step, img->cluster_size);
	if (img->file.ops->truncate(img->file.ctx, target) == 0) {
		img->file_end = target;
		img->grown = true;
	}
}

/* A clean close gives back the tail grown ahead and never written. */
static void trim_grown_tail(struct qcow_image *img)
{
	if (img->grown && img->file_end > img->zero_from && !img->fatal_error &&
	    img->file.ops->truncate(img->file.ctx, img->zero_from) == 0)
		img->file_end = img->zero_from;
}

/*
 * A failed fsync is never retried as if nothing happened: the kernel may
 * have dropped the pages it could not write (and cleared their error), and
 * the caches already count the tables it covered as written. So the handle
 * fails: writes and flushes are refused from then on.
 */
int qcow_fsync(struct qcow_image *img)
{
	uint64_t covers[QCOW_SYNC_KINDS];
	int ret = qcow_refuse_if_failed(img);

	if (ret < 0)
		return ret;
	memcpy(covers, img->events, sizeof(covers));
	ret = img->file.ops->flush(img->file.ctx);
	if (ret < 0) {
		qcow_fail_handle(img, ret, "fsync");
		return qcow_set_error(img, ret, "fsync failed: %s; further writes and flushes are "
				      "refused until the image is reopened", strerror(-ret));
	}
	qcow_sync_covered(img, covers);
	return 0;
}

/* ---------------------------------------------------------------- flush */

/* Ordering steps 1-2: refcount blocks written, then one fsync covering them
 * and any guest data, before an L2 table may be written. */
int qcow_prepare_l2_writeback(struct qcow_image *img)
{
	bool need_sync = qcow_sync_needed(img, QCOW_SYNC_DATA);
	int ret = qcow_refuse_while_flushing(img);

	if (ret < 0)
		return ret;
	if (qcow_cache_has_dirty(img->refcount_cache)) {
		ret = qcow_cache_writeback(img->refcount_cache);
		if (ret < 0)
			return ret;
		need_sync = true;
	}
	return need_sync ? qcow_fsync(img) : 0;
}

bool qcow_metadata_unwritten(const struct qcow_image *img)
{
	return img->l1_any_dirty || img->rt_any_dirty || qcow_cache_has_dirty(img->l2_cache) ||
	       qcow_cache_has_dirty(img->refcount_cache);
}

/* ------------------------------------------------------------ overlap */

struct meta_area {
	uint64_t start, len;
	const char *what;
};

int qcow_check_metadata_overlap(struct qcow_image *img, uint64_t off, uint64_t len)
{
	struct meta_area a[4];
	unsigned n = 0, i;

	if (len == 0)
		return 0;
	if (off >= QCOW_MAX_HOST_OFFSET || len > QCOW_MAX_HOST_OFFSET - off)
		return qcow_signal_corruption(img, "write of %" PRIu64 " bytes at offset 0x%" PRIx64
					      " is beyond the maximum host offset", len, off);
	a[n++] = (struct meta_area){ 0, img->cluster_size, "header" };
	if (img->l1_size)
		a[n++] = (struct meta_area){ img->l1_table_offset,
			QCOW_ALIGN_UP((uint64_t)img->l1_size * 8, img->cluster_size), "active L1 table" };
	a[n++] = (struct meta_area){ img->refcount_table_offset,
		(uint64_t)img->refcount_table_clusters * img->cluster_size, "refcount table" };
	if (img->nb_snapshots)
		a[n++] = (struct meta_area){ img->snapshots_offset, img->cluster_size, "snapshot table" };
	for (i = 0; i < n; i++) {
		if (off < a[i].start + a[i].len && a[i].start < off + len)
			return qcow_signal_corruption(img, "write of %" PRIu64 " bytes at offset 0x%"
						      PRIx64 " would overwrite the %s", len, off,
						      a[i].what);
	}
	return 0;
}

/* ---------------------------------------------------------------- info */

void qcow_get_info(const struct qcow_image *img, struct qcow_info *info)
{
	memset(info, 0, sizeof(*info));
	info->virtual_size = img->size;
	info->cluster_size = img->cluster_size;
	info->cluster_bits = img->cluster_bits;
	info->version = img->version;
	info->refcount_bits = img->refcount_bits;
	if (img->file.ops->get_size(img->file.ctx, &info->file_size) < 0)
		info->file_size = 0;
	info->incompatible_features = img->incompatible_features;
	info->compatible_features = img->compatible_features;
	info->autoclear_features = img->autoclear_features;
	info->nb_snapshots = img->nb_snapshots;
	info->l1_size = img->l1_size;
	info->l1_table_offset = img->l1_table_offset;
	info->refcount_table_offset = img->refcount_table_offset;
	info->refcount_table_clusters = img->refcount_table_clusters;
	info->dirty = img->incompatible_features & QCOW_INCOMPAT_DIRTY;
	info->corrupt = img->incompatible_features & QCOW_INCOMPAT_CORRUPT;
	info->read_only = img->read_only;
	info->compression_type = img->compression_type;
	if (img->backing_file)
		snprintf(info->backing_file, sizeof(info->backing_file), "%s", img->backing_file);
	if (img->backing_format)
		snprintf(info->backing_format, sizeof(info->backing_format), "%s", img->backing_format);
}

int qcow_use_page_cache(struct qcow_image *img)
{
	return qcow_file_posix_buffered(&img->file);
}

const struct qcow_file *qcow_get_file(const struct qcow_image *img)
{
	return &img->file;
}

/* ------------------------------------------------------------ open/close */

static void free_header_fields(struct qcow_image *img)
{
	uint32_t i;

	free(img->backing_file);
	free(img->hdr_disk);
	free(img->backing_format);
	free(img->data_file);
	free(img->feature_table);
	for (i = 0; i < img->nb_unknown_exts; i++)
		free(img->unknown_exts[i].data);
	free(img->unknown_exts);
}

static void free_image(struct qcow_image *img)
{
	qcow_close(img->backing);
	qcow_bitmaps_free(img);
	qcow_flush_free(img);
	qcow_cache_free(img->l2_cache);
	qcow_cache_free(img->refcount_cache);
	img->l2_cache = NULL;
	img->refcount_cache = NULL;
	qcow_l1_free(img);
	qcow_refcount_free(img);
	free(img->compressed_in);
	free(img->decompressed);
	free(img->cow_buf);
	free(img->zero_cluster);
	free_header_fields(img);
	if (img->file.ops && img->file.ops->close)
		img->file.ops->close(img->file.ctx);
	free(img->name);
	free(img);
}

int qcow_close(struct qcow_image *img)
{
	int ret = 0;

	if (!img)
		return 0;
	if (!img->read_only)
		ret = qcow_guest_flush(img);
	if (ret == 0 && !img->read_only)
		ret = qcow_bitmaps_let_go(img);
	if (ret == 0)
		trim_grown_tail(img);
	free_image(img);
	return ret;
}

static int load_header(struct qcow_image *img)
{
	uint64_t file_size;
	uint8_t *buf;
	size_t n;
	int ret;

	ret = img->file.ops->get_size(img->file.ctx, &file_size);
	if (ret < 0)
		return qcow_set_error(img, ret, "cannot get the file size: %s", strerror(-ret));
	if (file_size < sizeof(struct qcow_header_v2))
		return qcow_set_error(img, -EINVAL, "not a qcow2 image (file too short)");
	img->zero_from = img->file_end = file_size;
	n = (size_t)QCOW_MIN(file_size, HEADER_READ_MAX);
	buf = malloc(n);
	if (!buf)
		return qcow_set_error(img, -ENOMEM, "out of memory reading the header");
	ret = qcow_pread(img, buf, n, 0);
	if (ret == 0)
		ret = qcow_header_parse(img, buf, n, file_size);
	free(buf);
	return ret;
}

/* What we refuse to open, or to open writable. */
static int open_policy(struct qcow_image *img)
{
	/* a check open gets past such a feature to show it: never to write */
	if (img->unservable && !img->read_only)
		return qcow_set_error(img, -ENOTSUP, "unsupported feature: %s", img->unservable);
	if (img->for_check)
		return 0;
	if ((img->incompatible_features & QCOW_INCOMPAT_CORRUPT) && !img->read_only)
		return qcow_set_error(img, -EACCES,
				      "image is marked corrupt; open it read-only or repair it with: "
				      "qcow-tool check -r all %s", img->name);
	if ((img->incompatible_features & QCOW_INCOMPAT_DIRTY) && img->read_only)
		return qcow_set_error(img, -EUCLEAN,
				      "image is dirty (it was not closed cleanly); repair it with: "
				      "qcow-tool check -r all %s", img->name);
	return 0;
}

static unsigned cache_slots(uint64_t bytes, uint64_t def, uint64_t cluster_size)
{
	uint64_t n = (bytes ? bytes : def) / cluster_size;

	if (n < 4)
		n = 4;
	if (n > (1U << 20))
		n = 1U << 20;
	return (unsigned)n;
}

/* A page-aligned buffer of len bytes, or NULL; freed with free(). */
static void *aligned_buf(size_t len)
{
	void *p;

	return posix_memalign(&p, 4096, len) ? NULL : p;
}

static int setup_tables(struct qcow_image *img, const struct qcow_open_opts *opts)
{
	int ret;

	img->l2_cache = qcow_cache_new(img, QCOW_TABLE_L2,
				       cache_slots(opts->l2_cache_bytes, QCOW_DEFAULT_L2_CACHE_BYTES,
						   img->cluster_size), img->cluster_size);
	img->refcount_cache = qcow_cache_new(img, QCOW_TABLE_REFCOUNT,
					     cache_slots(opts->refcount_cache_bytes,
							 QCOW_DEFAULT_REFCOUNT_CACHE_BYTES,
							 img->cluster_size), img->cluster_size);
	if (!img->l2_cache || !img->refcount_cache)
		return qcow_set_error(img, -ENOMEM, "out of memory for the metadata caches");
	/* page aligned: direct IO takes them as they are (file_posix.c) */
	img->compressed_in = aligned_buf(2 * img->cluster_size);
	img->decompressed = aligned_buf(img->cluster_size);
	img->cow_buf = aligned_buf(img->cluster_size);
	img->zero_cluster = aligned_buf(img->cluster_size);
	if (!img->compressed_in || !img->decompressed || !img->cow_buf || !img->zero_cluster)
		return qcow_set_error(img, -ENOMEM, "out of memory for the IO buffers");
	memset(img->zero_cluster, 0, img->cluster_size);
	ret = qcow_flush_init(img);
	if (ret < 0)
		return ret;
	ret = qcow_l1_init(img);
	if (ret < 0)
		return ret;
	return qcow_refcount_init(img);
}

/* Read-write open of a dirty image rebuilds the refcounts; the bitmaps are
 * loaded and marked IN_USE (bitmap.c), and autoclear bits we do not
 * maintain are cleared, as the spec asks (the bitmaps bit too when there
 * is no extension for it to vouch for). */
static int repair_on_open(struct qcow_image *img)
{
	uint64_t keep;
	bool rewrite = false;
	int ret;

	if (img->read_only || img->for_check)
		return 0;
	if (img->incompatible_features & QCOW_INCOMPAT_DIRTY) {
		ret = qcow_rebuild_refcounts(img);
		if (ret == 0)
			ret = qcow_flush(img);
		if (ret < 0)
			return ret;
		img->incompatible_features &= ~QCOW_INCOMPAT_DIRTY;
		rewrite = true;
	}
	if (img->autoclear_features & QCOW_AUTOCLEAR_BITMAPS) {
		ret = qcow_bitmaps_open(img);
		if (ret < 0)
			return ret;
	}
	keep = qcow_bitmaps_present(img) ? QCOW_AUTOCLEAR_BITMAPS : 0;
	if (img->autoclear_features & ~keep) {
		img->autoclear_features &= keep;
		rewrite = true;
	}
	if (!rewrite)
		return 0;
	ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	return ret;
}

static void copy_error(const struct qcow_image *img, int ret, const char *name, char *err,
		       size_t errlen)
{
	if (!err || !errlen)
		return;
	if (img && img->errmsg[0])
		snprintf(err, errlen, "%s", img->errmsg);
	else
		snprintf(err, errlen, "%s: %s", name ? name : "image", strerror(-ret));
}

int qcow_open_file(struct qcow_file *file, const char *name,
		   const struct qcow_open_opts *opts, struct qcow_image **out,
		   char *err, size_t errlen)
{
	return qcow_open_layer(file, name, opts, NULL, out, err, errlen);
}

int qcow_open_layer(struct qcow_file *file, const char *name, const struct qcow_open_opts *opts,
		    struct qcow_image *above, struct qcow_image **out, char *err, size_t errlen)
{
	static const struct qcow_open_opts defaults;
	struct qcow_image *img;
	int ret;

	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	if (!opts)
		opts = &defaults;
	img = calloc(1, sizeof(*img));
	if (!img || !(img->name = strdup(name ? name : "image"))) {
		free(img);
		if (file->ops && file->ops->close)
			file->ops->close(file->ctx);
		copy_error(NULL, -ENOMEM, name, err, errlen);
		return -ENOMEM;
	}
	img->file = *file;
	img->read_only = opts->read_only;
	img->for_check = opts->for_check;
	img->chain_wanted = !opts->for_check && !opts->no_backing;
	img->above = above;
	ret = load_header(img);
	if (ret == 0)
		ret = open_policy(img);
	if (ret == 0)
		ret = setup_tables(img, opts);
	if (ret == 0)
		ret = repair_on_open(img);
	if (ret == 0)
		ret = qcow_backing_open(img, opts);
	if (ret < 0) {
		copy_error(img, ret, name, err, errlen);
		free_image(img);
		return ret;
	}
	*out = img;
	return 0;
}

int qcow_open(const char *path, const struct qcow_open_opts *opts,
	      struct qcow_image **out, char *err, size_t errlen)
{
	struct qcow_file file;
	bool ro = opts && opts->read_only;
	int ret;

	*out = NULL;
	ret = qcow_file_open_posix(path, ro ? O_RDONLY : O_RDWR, &file);
	if (ret < 0) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot open: %s", path, strerror(-ret));
		return ret;
	}
	return qcow_open_file(&file, path, opts, out, err, errlen);
}

/* ---------------------------------------------------------------- create */

/* Where create puts things, in clusters: header, refcount table, refcount
 * blocks, L1 table, in that order. */
struct layout {
	uint64_t rt, rb, l1, total;
};

/* The blocks must cover every cluster, themselves and the table included:
 * iterate until the counts stop changing (they only grow, so this ends). */
static void create_layout(const struct qcow_image *img, struct layout *l)
{
	uint64_t pb = 1ULL << img->refcount_block_bits, rb = 1, rt = 1;

	l->l1 = QCOW_DIV_ROUND_UP((uint64_t)img->l1_size * 8, img->cluster_size);
	for (;;) {
		uint64_t total = 1 + rt + rb + l->l1;
		uint64_t nrb = QCOW_DIV_ROUND_UP(total, pb);
		uint64_t nrt = QCOW_DIV_ROUND_UP(nrb * 8, img->cluster_size);

		if (nrb == rb && nrt == rt)
			break;
		rb = QCOW_MAX(rb, nrb);
		rt = QCOW_MAX(rt, nrt);
	}
	l->rt = rt;
	l->rb = rb;
	l->total = 1 + rt + rb + l->l1;
}

static int create_opts_apply(struct qcow_image *img, const struct qcow_create_opts *o)
{
	unsigned cbits = o->cluster_bits ? o->cluster_bits : QCOW_DEFAULT_CLUSTER_BITS;
	unsigned rbits = o->refcount_bits ? o->refcount_bits : 16;
	unsigned version = o->version ? (unsigned)o->version : 3;

	if (cbits < QCOW_MIN_CLUSTER_BITS || cbits > QCOW_MAX_CLUSTER_BITS)
		return qcow_set_error(img, -EINVAL, "cluster size must be 512 bytes to 2 MiB (cluster_bits %u)",
				      cbits);
	if (rbits > 64 || (rbits & (rbits - 1)))
		return qcow_set_error(img, -EINVAL, "refcount_bits must be a power of two 1..64 (got %u)",
				      rbits);
	if (version != 2 && version != 3)
		return qcow_set_error(img, -EINVAL, "version must be 2 or 3 (got %d)", o->version);
	if (version == 2 && rbits != 16)
		return qcow_set_error(img, -EINVAL, "version 2 images require refcount_bits 16");
	if (o->compression_type > QCOW_COMPRESSION_ZSTD)
		return qcow_set_error(img, -EINVAL, "unknown compression type %u", o->compression_type);
	if (version == 2 && o->compression_type != QCOW_COMPRESSION_ZLIB)
		return qcow_set_error(img, -EINVAL, "compression type zstd needs version 3 "
				      "(compat=1.1)");
	if (o->lazy_refcounts)
		return qcow_set_error(img, -ENOTSUP, "lazy refcounts are not supported");
	if (o->backing_format && !o->backing_file)
		return qcow_set_error(img, -EINVAL, "a backing format needs a backing file");
	if (o->backing_file && (!o->backing_file[0] || strlen(o->backing_file) > 1023))
		return qcow_set_error(img, -EINVAL, "backing file name must be 1 to 1023 bytes");
	if (o->backing_format && strlen(o->backing_format) >= 64)
		return qcow_set_error(img, -EINVAL, "backing format name too long");
	img->version = version;
	img->compression_type = o->compression_type;
	if (o->compression_type != QCOW_COMPRESSION_ZLIB)
		img->incompatible_features |= QCOW_INCOMPAT_COMPRESSION;
	img->cluster_bits = cbits;
	img->cluster_size = 1ULL << cbits;
	img->l2_bits = cbits - 3;
	img->l2_size = 1ULL << img->l2_bits;
	img->refcount_order = (unsigned)__builtin_ctz(rbits);
	img->refcount_bits = rbits;
	img->refcount_block_bits = cbits + 3 - img->refcount_order;
	img->header_length = version == 2 ? sizeof(struct qcow_header_v2)
					  : sizeof(struct qcow_header_v3);
	if (o->size > (uint64_t)INT64_MAX - 511)
		return qcow_set_error(img, -EFBIG, "virtual size %" PRIu64 " too large", o->size);
	img->size = QCOW_ALIGN_UP(o->size, 512);
	if (qcow_l1_entries_for(img, img->size) > QCOW_MAX_L1_BYTES / 8)
		return qcow_set_error(img, -EFBIG, "virtual size %" PRIu64
				      " too large for %" PRIu64 "-byte clusters", img->size,
				      img->cluster_size);
	img->l1_size = (uint32_t)qcow_l1_entries_for(img, img->size);
	return 0;
}

/* Refcount table, blocks (every metadata cluster at refcount 1), zeroed L1. */
static int create_tables(struct qcow_image *img, const struct layout *l)
{
	uint64_t cs = img->cluster_size, pb = 1ULL << img->refcount_block_bits, i;
	uint8_t *buf, *blocks;
	uint64_t *table;
	int ret;

	buf = calloc(l->rt + l->rb + l->l1, cs);
	if (!buf)
		return qcow_set_error(img, -ENOMEM, "out of memory creating the image");
	table = (uint64_t *)buf;
	blocks = buf + l->rt * cs;
	for (i = 0; i < l->rb; i++)
		table[i] = htobe64((1 + l->rt + i) * cs);
	for (i = 0; i < l->total; i++)
		qcow_refblock_set(img, blocks + (i / pb) * cs, i % pb, 1);
	ret = qcow_pwrite(img, buf, (l->rt + l->rb + l->l1) * cs, cs);
	free(buf);
	return ret;
}

static int create_on(struct qcow_image *img, const struct qcow_create_opts *opts)
{
	struct layout l;
	uint64_t size;
	int ret;

	ret = create_opts_apply(img, opts);
	if (ret < 0)
		return ret;
	if (opts->backing_file && (!(img->backing_file = strdup(opts->backing_file)) ||
				   (opts->backing_format &&
				    !(img->backing_format = strdup(opts->backing_format)))))
		return qcow_set_error(img, -ENOMEM, "out of memory");
	ret = img->file.ops->get_size(img->file.ctx, &size);
	if (ret < 0)
		return qcow_set_error(img, ret, "cannot get the file size: %s", strerror(-ret));
	if (size)
		return qcow_set_error(img, -EEXIST, "file is not empty (%" PRIu64 " bytes)", size);
	create_layout(img, &l);
	if (l.rt * img->cluster_size > QCOW_MAX_REFTABLE_BYTES)
		return qcow_set_error(img, -EFBIG, "refcount table too large");
	img->refcount_table_offset = img->cluster_size;
	img->refcount_table_clusters = (uint32_t)l.rt;
	img->l1_table_offset = l.l1 ? (1 + l.rt + l.rb) * img->cluster_size : 0;
	ret = create_tables(img, &l);
	if (ret == 0)
		ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	return ret;
}

int qcow_create_file(struct qcow_file *file, const char *name,
		     const struct qcow_create_opts *opts, char *err, size_t errlen)
{
	struct qcow_image *img = calloc(1, sizeof(*img));
	int ret;

	if (err && errlen)
		err[0] = '\0';
	if (!img || !(img->name = strdup(name ? name : "image"))) {
		free(img);
		copy_error(NULL, -ENOMEM, name, err, errlen);
		return -ENOMEM;
	}
	img->file = *file;
	ret = create_on(img, opts);
	if (ret < 0)
		copy_error(img, ret, name, err, errlen);
	/* The caller still owns the file. */
	free_header_fields(img);
	free(img->name);
	free(img);
	return ret;
}

int qcow_create_check(const char *name, const struct qcow_create_opts *opts, char *err,
		      size_t errlen)
{
	struct qcow_image probe = { .name = (char *)name };
	int ret = create_opts_apply(&probe, opts);

	if (ret < 0)
		copy_error(&probe, ret, name, err, errlen);
	return ret;
}

int qcow_create(const char *path, const struct qcow_create_opts *opts, bool truncate,
		char *err, size_t errlen)
{
	struct qcow_file file;
	uint64_t size = 0;
	int ret;

	/* Refuse bad options before touching an existing file. */
	ret = qcow_create_check(path, opts, err, errlen);
	if (ret < 0)
		return ret;
	ret = qcow_file_open_posix(path, O_RDWR | O_CREAT, &file);
	if (ret < 0) {
		if (err && errlen)
			snprintf(err, errlen, "%s: cannot create: %s", path, strerror(-ret));
		return ret;
	}
	ret = file.ops->get_size(file.ctx, &size);
	if (ret == 0 && size && !truncate) {
		ret = -EEXIST;
		if (err && errlen)
			snprintf(err, errlen, "%s: file exists and is not empty; not overwriting it",
				 path);
	} else if (ret == 0 && size) {
		ret = file.ops->truncate(file.ctx, 0);
	}
	if (ret == 0)
		ret = qcow_create_file(&file, path, opts, err, errlen);
	else if (err && errlen && !err[0])
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
	file.ops->close(file.ctx);
	return ret;
}

/* ---------------------------------------------------------------- resize */

static int resize_header(struct qcow_image *img, uint64_t new_size)
{
	uint64_t old = img->size;
	int ret;

	img->size = new_size;
	ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret < 0)
		img->size = old;
	return ret;
}

/* The disk becomes new_size bytes (checked: nothing allocated past it). */
static int resize_disk(struct qcow_image *img, uint64_t new_size)
{
	int ret = new_size >= img->size ? qcow_l1_grow(img, new_size) :
					  qcow_l1_shrink(img, new_size);

	if (ret == 0)
		ret = qcow_flush(img);
	return ret < 0 ? ret : resize_header(img, new_size);
}

int qcow_resize(struct qcow_image *img, uint64_t new_size)
{
	bool allocated = false;
	int ret;

	if (img->read_only)
		return qcow_set_error(img, -EROFS, "cannot resize: image is open read-only");
	ret = qcow_refuse_if_failed(img);
	if (ret < 0)
		return ret;
	if (new_size > (uint64_t)INT64_MAX - 511)
		return qcow_set_error(img, -EFBIG, "size %" PRIu64 " too large", new_size);
	new_size = QCOW_ALIGN_UP(new_size, 512);
	if (qcow_l1_entries_for(img, new_size) > QCOW_MAX_L1_BYTES / 8)
		return qcow_set_error(img, -EFBIG, "size %" PRIu64 " too large for %" PRIu64
				      "-byte clusters", new_size, img->cluster_size);
	if (new_size < img->size)
		ret = qcow_range_has_allocation(img, new_size, &allocated);
	if (ret < 0)
		return ret;
	if (allocated)
		return qcow_set_error(img, -ENOTSUP, "cannot shrink to %" PRIu64
				      " bytes: data is allocated past that size", new_size);
	if (qcow_bitmaps_present(img))
		return qcow_bitmaps_resize(img, new_size, resize_disk);
	return resize_disk(img, new_size);
}
