// SPDX-License-Identifier: MIT
/*
 * Editing persistent dirty bitmaps (qcow-tool bitmap, as qemu-img bitmap)
 * and resizing them with the disk (qcow-tool resize, as qemu-img resize).
 *
 * Each edit is one switch (doc/design.md 15b, "Editing"): the bitmaps it
 * changes get new tables in new clusters (their changed pieces too, the
 * others keeping theirs, bitmap.h), a whole new directory goes to new
 * clusters, a flush makes all of it and its refcounts durable; then one
 * header write points the extension at the new directory (and sets the
 * autoclear bit with the first bitmap, or drops extension and bit with the
 * last, as qemu); only then are the old directory, the old tables and the
 * pieces the new tables do not keep freed (deferred). Crash before the
 * header: the old directory stands, the new clusters leak. After: the new
 * one stands, the old clusters leak until the frees land. Nothing durable
 * ever names a freed cluster, and no bitmap is ever half edited.
 *
 * A resize changes every bitmap's size, and a bitmap's table size must
 * match the disk unless it is IN_USE, so (as QEMU, which holds every bitmap
 * IN_USE while it resizes one):
 *  R1. Every bitmap gets IN_USE in the directory, in place, fsync (as B1,
 *      bitmap_keep.c). Crash right after: inconsistent bitmaps, nothing
 *      else changed.
 *  R2. The disk changes size (image.c). Crash right after: the bitmaps are
 *      IN_USE, which lets their tables be for the old size.
 *  R3. Each bitmap is rewritten for the new size (new tables; the pieces
 *      the old and new ends fall in rewritten, bits past the end clear;
 *      new pieces clear, as qemu), and R4 switches to a directory naming
 *      them without IN_USE, as an edit does. Crash before the header:
 *      inconsistent bitmaps; after: the resized ones.
 * Bitmaps that are inconsistent already, or carry extra data we do not
 * know, stop a resize before anything changes (qemu's refusal).
 *
 * An edit or a resize first stores the bitmaps the handle keeps (IN_USE
 * cleared, bitmap_keep.c) and keeps them again afterwards (B1 anew), so
 * the handle goes on marking every write it takes.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "bitmap.h"

/* An edit runs with nothing kept: what the open loaded written back (IN_USE off), let go. */
static int edit_begin(struct qcow_image *img, struct qcow_bitmap_info **v, uint32_t *n)
{
	int ret;

	*v = NULL;
	*n = 0;
	if (img->read_only)
		return qcow_set_error(img, -EROFS, "image is open read-only");
	ret = qcow_refuse_if_failed(img);
	if (ret == 0)
		ret = qcow_guest_flush(img);
	if (ret == 0)
		ret = qcow_bitmaps_let_go(img);
	return ret < 0 ? ret : qcow_bitmap_list(img, v, n);
}

/* Keep the bitmaps again, as they stand after the edit (B1), failed or
 * not; a handle that cannot keep them must not write any more. */
static int edit_end(struct qcow_image *img, int ret)
{
	int r = 0;

	qcow_bitmaps_free(img);
	if (img->autoclear_features & QCOW_AUTOCLEAR_BITMAPS)
		r = qcow_bitmaps_open(img);
	if (r < 0)
		qcow_fail_handle(img, r, "bitmap update");
	return ret < 0 ? ret : r;
}

static int find_bitmap(struct qcow_image *img, const struct qcow_bitmap_info *v, uint32_t n,
		       const char *name, bool report)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		if (!strcmp(v[i].name, name))
			return (int)i;
	}
	return report ? qcow_set_error(img, -ENOENT, "Dirty bitmap '%s' not found", name) :
			-ENOENT;
}

static int inconsistent(struct qcow_image *img, const char *name)
{
	return qcow_set_error(img, -EBUSY, "Bitmap '%s' is inconsistent and cannot be used",
			      name);
}

/* A bitmap of the directory, its table loaded (not IN_USE: trusted). */
static int load_info(struct qcow_image *img, const struct qcow_bitmap_info *info,
		     struct bitmap *b)
{
	memset(b, 0, sizeof(*b));
	if (info->flags & QCOW_BITMAP_IN_USE)
		return inconsistent(img, info->name);
	return bitmap_load(img, info, 0, b);
}

/* The directory of v[0..n) in new clusters, durable with everything before. */
static int write_new_dir(struct qcow_image *img, const struct qcow_bitmap_info *v, uint32_t n,
			 struct bitmap_dir *d)
{
	uint64_t off = 0;
	int64_t host;
	uint32_t i;
	int ret;

	d->nb = n;
	for (i = 0, d->size = 0; i < n; i++)
		d->size += QCOW_ALIGN_UP(sizeof(struct bitmap_dir_entry) + strlen(v[i].name), 8);
	d->buf = n ? calloc(1, d->size) : NULL;
	if (n && !d->buf)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap directory");
	for (i = 0; i < n; i++) {
		struct bitmap_dir_entry e = {
			.table_offset = htobe64(v[i].table_offset),
			.table_size = htobe32(v[i].table_size),
			.flags = htobe32(v[i].flags),
			.type = BITMAP_DIRTY_TRACKING,
			.granularity_bits = (uint8_t)__builtin_ctzll(v[i].granularity),
			.name_size = htobe16((uint16_t)strlen(v[i].name)),
		};

		memcpy(d->buf + off, &e, sizeof(e));
		memcpy(d->buf + off + sizeof(e), v[i].name, strlen(v[i].name));
		off += QCOW_ALIGN_UP(sizeof(e) + strlen(v[i].name), 8);
	}
	host = n ? qcow_alloc_clusters(img, QCOW_DIV_ROUND_UP(d->size, img->cluster_size)) : 0;
	if (host < 0)
		return (int)host;
	d->offset = (uint64_t)host;
	ret = n ? qcow_pwrite(img, d->buf, d->size, d->offset) : 0;
	if (ret < 0)
		return ret;
	qcow_sync_owed(img, QCOW_SYNC_DATA);
	return qcow_flush(img);
}

/* The switch: new directory, header, then the old clusters of the bitmaps
 * in old[0..n_old) (what their new tables do not keep). */
static int edit_commit(struct qcow_image *img, const struct qcow_bitmap_info *v, uint32_t n,
		       const struct bitmap *old, uint32_t n_old)
{
	struct bitmap_dir was, d = { 0 };
	int ret = bitmap_dir_read(img, &was);
	uint32_t i;

	if (ret == -ENOENT)
		ret = 0;
	if (ret == 0)
		ret = write_new_dir(img, v, n, &d);
	if (ret == 0)
		ret = bitmap_dir_set_ext(img, &d);
	if (ret == 0)
		ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret == 0 && was.offset)
		ret = qcow_free_deferred(img, was.offset,
					 QCOW_ALIGN_UP(was.size, img->cluster_size));
	for (i = 0; ret == 0 && i < n_old; i++)
		ret = bitmap_free_replaced(img, &old[i]);
	if (ret == 0)
		ret = qcow_flush(img);
	free(was.buf);
	free(d.buf);
	return ret;
}

/* info gets a new, all-clear table. */
static int fresh_table(struct qcow_image *img, struct qcow_bitmap_info *info)
{
	struct bitmap b;
	int ret = bitmap_new(img, info->name, (unsigned)__builtin_ctzll(info->granularity),
			     info->flags, &b);

	if (ret == 0)
		ret = bitmap_write(img, &b);
	if (ret == 0) {
		info->table_offset = b.new_table;
		info->table_size = b.new_size;
	}
	bitmap_release(&b);
	return ret;
}

static int edit_add(struct qcow_image *img, struct qcow_bitmap_info **v, uint32_t *n,
		    const char *name, uint64_t granularity)
{
	struct qcow_bitmap_info *nv, b = { .granularity = granularity, .flags = QCOW_BITMAP_AUTO };
	int ret;

	if (granularity < 512 || granularity > (1ULL << BITMAP_MAX_GRANULARITY_BITS) ||
	    (granularity & (granularity - 1)))
		return qcow_set_error(img, -EINVAL, "Granularity must be power of 2 and at least "
				      "512");
	if (find_bitmap(img, *v, *n, name, false) >= 0)
		return qcow_set_error(img, -EEXIST, "Bitmap already exists: %s", name);
	if (strlen(name) > BITMAP_MAX_NAME_SIZE)
		return qcow_set_error(img, -EINVAL, "Bitmap name is too long");
	if (*n >= BITMAP_MAX_BITMAPS)
		return qcow_set_error(img, -ENOSPC, "too many bitmaps");
	nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	*v = nv;
	b.name = strdup(name);
	if (!b.name)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	nv[(*n)++] = b;
	ret = fresh_table(img, &nv[*n - 1]);
	return ret < 0 ? ret : edit_commit(img, nv, *n, NULL, 0);
}

/* clear, remove, enable, disable: one bitmap i of v. */
static int edit_one(struct qcow_image *img, struct qcow_bitmap_info *v, const uint32_t *n, int i,
		    enum qcow_bitmap_action act)
{
	struct bitmap old;
	bool free_it = act == QCOW_BITMAP_CLEAR || act == QCOW_BITMAP_REMOVE;
	int ret = 0;

	memset(&old, 0, sizeof(old));
	if (act == QCOW_BITMAP_ENABLE)
		v[i].flags |= QCOW_BITMAP_AUTO;
	else if (act == QCOW_BITMAP_DISABLE)
		v[i].flags &= ~QCOW_BITMAP_AUTO;
	if (act == QCOW_BITMAP_REMOVE && (v[i].flags & QCOW_BITMAP_IN_USE))
		free_it = false;      /* its table is not trusted: leaked, as qemu */
	if (free_it)
		ret = load_info(img, &v[i], &old);
	if (ret == 0 && act == QCOW_BITMAP_CLEAR)
		ret = fresh_table(img, &v[i]);
	if (ret == 0 && act == QCOW_BITMAP_REMOVE) {
		struct qcow_bitmap_info gone = v[i];

		/* moved last and left out of the directory; freed with the list */
		memmove(&v[i], &v[i + 1], (*n - (uint32_t)i - 1) * sizeof(*v));
		v[*n - 1] = gone;
		ret = edit_commit(img, v, *n - 1, &old, free_it);
	} else if (ret == 0) {
		ret = edit_commit(img, v, *n, &old, free_it);
	}
	bitmap_release(&old);
	return ret;
}

struct merge {
	struct bitmap *d;
	unsigned src_gran_bits;
};

/* Source granules first..last, as granules of the destination. */
static int merge_run(void *opaque, uint64_t first, uint64_t last)
{
	struct merge *m = opaque;
	uint64_t off = first << m->src_gran_bits, end = (last + 1) << m->src_gran_bits;

	if (bitmap_set(m->d, off >> m->d->gran_bits, (end - 1) >> m->d->gran_bits) < 0)
		return -ENOMEM;
	return 0;
}

/* The bits of bitmap name in src (an edit's image, or another one). */
static int load_source(struct qcow_image *img, struct qcow_image *src, const char *name,
		       struct bitmap *b)
{
	struct qcow_bitmap_info *v;
	uint32_t n;
	int i, ret = qcow_bitmap_list(src, &v, &n);

	i = ret < 0 ? ret : find_bitmap(src, v, n, name, true);
	if (i >= 0)
		ret = load_info(src, &v[i], b);
	else
		ret = i;
	if (ret < 0 && src != img)
		qcow_set_error(img, ret, "%s", qcow_error(src));
	qcow_bitmap_list_free(v, n);
	return ret;
}

static int edit_merge(struct qcow_image *img, struct qcow_bitmap_info *v, uint32_t n, int i,
		      struct qcow_image *src, const char *src_name)
{
	struct bitmap s, d;
	struct merge m = { &d, 0 };
	int ret;

	memset(&s, 0, sizeof(s));
	memset(&d, 0, sizeof(d));
	src = src ? src : img;
	ret = load_source(img, src, src_name, &s);
	if (ret == 0)
		ret = load_info(img, &v[i], &d);
	m.src_gran_bits = s.gran_bits;
	if (ret == 0)
		ret = bitmap_for_each_run(src, &s, merge_run, &m);
	if (ret == -ENOMEM)
		qcow_set_error(img, ret, "out of memory for bitmap '%s'", v[i].name);
	else if (ret < 0 && src != img)
		qcow_set_error(img, ret, "%s", qcow_error(src));
	if (ret == 0)
		ret = bitmap_write(img, &d);
	if (ret == 0) {
		v[i].table_offset = d.new_table;
		ret = edit_commit(img, v, n, &d, 1);
	}
	bitmap_release(&s);
	bitmap_release(&d);
	return ret;
}

int qcow_bitmap_edit(struct qcow_image *img, enum qcow_bitmap_action act, const char *name,
		     uint64_t granularity, struct qcow_image *src, const char *src_name)
{
	struct qcow_bitmap_info *v = NULL;
	uint32_t n = 0;
	int i, ret = edit_begin(img, &v, &n);

	if (ret == 0 && act == QCOW_BITMAP_ADD)
		ret = edit_add(img, &v, &n, name, granularity);
	else if (ret == 0) {
		i = find_bitmap(img, v, n, name, true);
		if (i < 0)
			ret = i;
		else if (act == QCOW_BITMAP_MERGE)
			ret = edit_merge(img, v, n, i, src, src_name);
		else
			ret = edit_one(img, v, &n, i, act);
	}
	qcow_bitmap_list_free(v, n);
	return edit_end(img, ret);
}

/* ----------------------------------------------------------------- resize */

/* R1: every bitmap loaded (b[0..n), v's order) and IN_USE on disk. */
static int resize_hold(struct qcow_image *img, const struct qcow_bitmap_info *v, uint32_t n,
		       struct bitmap *b)
{
	struct qcow_bitmap_info info;
	struct bitmap_dir d;
	uint64_t off = 0, at;
	uint32_t i, f;
	bool foreign;
	int ret = bitmap_dir_read(img, &d);

	for (i = 0; ret == 0 && i < n; i++) {
		memset(&info, 0, sizeof(info));
		/* foreign is false: edit_begin's list refused extra data. */
		ret = bitmap_dir_next(img, &d, &off, &info, &at, &foreign);
		free(info.name);
		if (ret == 0)
			ret = load_info(img, &v[i], &b[i]);
		if (ret < 0)
			break;
		memcpy(&f, d.buf + at + BITMAP_ENTRY_FLAGS, 4);
		f = htobe32(be32toh(f) | QCOW_BITMAP_IN_USE);
		memcpy(d.buf + at + BITMAP_ENTRY_FLAGS, &f, 4);
	}
	if (ret == 0)
		ret = qcow_pwrite(img, d.buf, d.size, d.offset);
	if (ret == 0)
		ret = qcow_fsync(img);
	free(d.buf);
	return ret;
}

/* R3 and R4: every bitmap for the new size, and the switch. */
static int resize_store(struct qcow_image *img, struct qcow_bitmap_info *v, uint32_t n,
			struct bitmap *b)
{
	uint32_t i;
	int ret = 0;

	for (i = 0; ret == 0 && i < n; i++) {
		ret = bitmap_resize(img, &b[i], img->size);
		if (ret == 0)
			ret = bitmap_write(img, &b[i]);
		v[i].table_offset = b[i].new_table;
		v[i].table_size = b[i].new_size;
	}
	return ret < 0 ? ret : edit_commit(img, v, n, b, n);
}

int qcow_bitmaps_resize(struct qcow_image *img, uint64_t new_size,
			int (*resize)(struct qcow_image *img, uint64_t new_size))
{
	struct qcow_bitmap_info *v = NULL;
	struct bitmap *b = NULL;
	uint32_t n = 0, i;
	int ret = edit_begin(img, &v, &n);

	for (i = 0; ret == 0 && i < n; i++) {
		if (v[i].flags & QCOW_BITMAP_IN_USE)
			ret = inconsistent(img, v[i].name);
	}
	if (ret == 0 && n && !(b = calloc(n, sizeof(*b))))
		ret = qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	if (ret == 0 && n)
		ret = resize_hold(img, v, n, b);
	if (ret == 0)
		ret = resize(img, new_size);
	if (ret == 0 && n)
		ret = resize_store(img, v, n, b);
	for (i = 0; b && i < n; i++)
		bitmap_release(&b[i]);
	free(b);
	qcow_bitmap_list_free(v, n);
	return edit_end(img, ret);
}
