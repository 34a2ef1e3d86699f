// SPDX-License-Identifier: MIT
/*
 * Persistent dirty bitmaps: the bitmaps header extension and the bitmap
 * directory it points at (listed for qcow-tool info as qemu-img info lists
 * them), and one bitmap's table and pieces (bitmap.h), which
 * bitmap_keep.c (a writer keeping its bitmaps up to date) and
 * bitmap_edit.c (qcow-tool bitmap, resize) build on.
 *
 * The extension, the directory and the tables come from a file we do not
 * trust: the directory's size is bounded before it is read, every entry is
 * checked (as qemu checks it, block/qcow2-bitmap.c) before any of it is
 * used, and every table entry before it is followed, so a hostile bitmap
 * gives an error naming what is wrong (and a read-write open fails with
 * it, as QEMU's does).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "bitmap.h"

/* The extension's payload (big-endian). */
struct bitmaps_ext {
	uint32_t nb_bitmaps;
	uint32_t reserved;
	uint64_t dir_size;
	uint64_t dir_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct bitmaps_ext) == 24, "bitmaps extension is 24 bytes");



static const struct qcow_raw_ext *find_ext(const struct qcow_image *img)
{
	uint32_t i;

	for (i = 0; i < img->nb_unknown_exts; i++) {
		if (img->unknown_exts[i].type == QCOW_EXT_BITMAPS)
			return &img->unknown_exts[i];
	}
	return NULL;
}

static int parse_ext(struct qcow_image *img, const struct qcow_raw_ext *e, struct bitmap_dir *d)
{
	struct bitmaps_ext x;

	if (e->length != sizeof(x))
		return qcow_set_error(img, -EINVAL, "bitmaps extension of %u bytes (must be %zu)",
				      e->length, sizeof(x));
	memcpy(&x, e->data, sizeof(x));
	d->nb = be32toh(x.nb_bitmaps);
	d->size = be64toh(x.dir_size);
	d->offset = be64toh(x.dir_offset);
	if (x.reserved)
		return qcow_set_error(img, -EINVAL, "bitmaps extension: reserved field is not zero");
	if (d->nb == 0 || d->nb > BITMAP_MAX_BITMAPS)
		return qcow_set_error(img, -EINVAL, "bitmaps extension: %" PRIu32 " bitmaps (must "
				      "be 1..%u)", d->nb, BITMAP_MAX_BITMAPS);
	if (d->offset & (img->cluster_size - 1))
		return qcow_set_error(img, -EINVAL, "bitmap directory offset 0x%" PRIx64
				      " is not cluster aligned", d->offset);
	if (d->size == 0 || d->size > BITMAP_MAX_DIR_SIZE)
		return qcow_set_error(img, -EINVAL, "bitmap directory size %" PRIu64 " (must be "
				      "1..%llu)", d->size, BITMAP_MAX_DIR_SIZE);
	return 0;
}

static int read_dir(struct qcow_image *img, struct bitmap_dir *d)
{
	uint64_t file_size;
	int ret = img->file.ops->get_size(img->file.ctx, &file_size);

	if (ret < 0)
		return qcow_set_error(img, ret, "cannot get the file size: %s", strerror(-ret));
	if (d->offset >= file_size || d->size > file_size - d->offset)
		return qcow_set_error(img, -EINVAL, "bitmap directory at offset 0x%" PRIx64
				      " (%" PRIu64 " bytes) lies outside the file", d->offset,
				      d->size);
	d->buf = malloc(d->size);
	if (!d->buf)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap directory");
	return qcow_pread(img, d->buf, d->size, d->offset);
}

/* As qemu's check_dir_entry: a table that can hold the bitmap, sane sizes. */
static bool entry_valid(const struct qcow_image *img, const struct bitmap_dir_entry *e)
{
	uint64_t phys = (uint64_t)e->table_size * img->cluster_size;

	if (!e->table_size || !e->table_offset || (e->table_offset & (img->cluster_size - 1)) ||
	    e->table_size > BITMAP_MAX_TABLE_SIZE || e->granularity_bits < BITMAP_MIN_GRANULARITY_BITS ||
	    e->granularity_bits > BITMAP_MAX_GRANULARITY_BITS || (e->flags & ~BITMAP_KNOWN_FLAGS) ||
	    e->name_size > BITMAP_MAX_NAME_SIZE || e->type != BITMAP_DIRTY_TRACKING ||
	    phys > BITMAP_MAX_PHYS_SIZE)
		return false;
	/* a bitmap in use may have missed a resize; a saved one must cover the disk */
	return (e->flags & QCOW_BITMAP_IN_USE) ||
	       img->size <= (phys * 8) << e->granularity_bits;
}

/* With at NULL (info, as qemu) extra data is an error. */
int bitmap_dir_next(struct qcow_image *img, const struct bitmap_dir *d, uint64_t *off,
		    struct qcow_bitmap_info *b, uint64_t *at, bool *foreign)
{
	struct bitmap_dir_entry e;
	uint64_t len;

	if (d->size - *off < sizeof(e))
		return qcow_set_error(img, -EINVAL, "broken bitmap directory (entry at %" PRIu64
				      " cut short)", *off);
	memcpy(&e, d->buf + *off, sizeof(e));
	e.table_offset = be64toh(e.table_offset);
	e.table_size = be32toh(e.table_size);
	e.flags = be32toh(e.flags);
	e.name_size = be16toh(e.name_size);
	e.extra_data_size = be32toh(e.extra_data_size);
	len = QCOW_ALIGN_UP(sizeof(e) + (uint64_t)e.extra_data_size + e.name_size, 8);
	if (len > d->size - *off)
		return qcow_set_error(img, -EINVAL, "broken bitmap directory (entry at %" PRIu64
				      " runs past its end)", *off);
	if (e.extra_data_size && !at)
		return qcow_set_error(img, -EINVAL, "bitmap extra data is not supported");
	b->name = strndup((const char *)d->buf + *off + sizeof(e) + e.extra_data_size,
			  e.name_size);
	if (!b->name)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap directory");
	if (at) {
		*at = *off;
		*foreign = e.extra_data_size != 0;
	}
	*off += len;
	if (!(at && *foreign) && !entry_valid(img, &e))
		return qcow_set_error(img, -EINVAL, "bitmap '%s' does not satisfy the constraints",
				      b->name);
	b->granularity = 1ULL << e.granularity_bits;
	b->flags = e.flags;
	b->table_offset = e.table_offset;
	b->table_size = e.table_size;
	return 0;
}

/* Every entry, exactly as many as the extension announces. */
static int walk_dir(struct qcow_image *img, const struct bitmap_dir *d, struct qcow_bitmap_info *v,
		    uint32_t *n)
{
	uint64_t off = 0;
	int ret;

	while (off < d->size) {
		if (*n == d->nb)
			return qcow_set_error(img, -EINVAL, "more bitmaps in the directory than the "
					      "extension says (%" PRIu32 ")", d->nb);
		ret = bitmap_dir_next(img, d, &off, &v[*n], NULL, NULL);
		if (v[*n].name)
			(*n)++;
		if (ret < 0)
			return ret;
	}
	if (*n != d->nb)
		return qcow_set_error(img, -EINVAL, "fewer bitmaps in the directory (%" PRIu32
				      ") than the extension says (%" PRIu32 ")", *n, d->nb);
	return 0;
}

int qcow_bitmap_list(struct qcow_image *img, struct qcow_bitmap_info **out, uint32_t *n)
{
	const struct qcow_raw_ext *e = find_ext(img);
	struct bitmap_dir d = { 0 };
	int ret;

	*out = NULL;
	*n = 0;
	if (!e || !(img->autoclear_features & QCOW_AUTOCLEAR_BITMAPS))
		return 0;
	ret = parse_ext(img, e, &d);
	if (ret == 0)
		ret = read_dir(img, &d);
	if (ret == 0 && !(*out = calloc(d.nb, sizeof(**out))))
		ret = qcow_set_error(img, -ENOMEM, "out of memory for the bitmap list");
	if (ret == 0)
		ret = walk_dir(img, &d, *out, n);
	free(d.buf);
	if (ret < 0) {
		qcow_bitmap_list_free(*out, *n);
		*out = NULL;
		*n = 0;
	}
	return ret;
}

void qcow_bitmap_list_free(struct qcow_bitmap_info *v, uint32_t n)
{
	uint32_t i;

	for (i = 0; v && i < n; i++)
		free(v[i].name);
	free(v);
}


int bitmap_dir_read(struct qcow_image *img, struct bitmap_dir *d)
{
	const struct qcow_raw_ext *e = find_ext(img);
	int ret;

	memset(d, 0, sizeof(*d));
	if (!e)
		return -ENOENT;
	ret = parse_ext(img, e, d);
	return ret < 0 ? ret : read_dir(img, d);
}

int bitmap_dir_set_ext(struct qcow_image *img, const struct bitmap_dir *d)
{
	struct qcow_raw_ext *e = (struct qcow_raw_ext *)find_ext(img);
	struct bitmaps_ext x = { htobe32(d->nb), 0, htobe64(d->size), htobe64(d->offset) };

	if (!d->nb) {
		if (e) {
			free(e->data);
			*e = img->unknown_exts[--img->nb_unknown_exts];
		}
		img->autoclear_features &= ~QCOW_AUTOCLEAR_BITMAPS;
		return 0;
	}
	if (!e) {
		e = realloc(img->unknown_exts, (img->nb_unknown_exts + 1) * sizeof(*e));
		if (!e)
			return qcow_set_error(img, -ENOMEM, "out of memory for the header");
		img->unknown_exts = e;
		e = &e[img->nb_unknown_exts++];
		e->type = QCOW_EXT_BITMAPS;
		e->length = sizeof(x);
		e->data = malloc(sizeof(x));
		if (!e->data) {
			img->nb_unknown_exts--;
			return qcow_set_error(img, -ENOMEM, "out of memory for the header");
		}
	}
	memcpy(e->data, &x, sizeof(x));
	img->autoclear_features |= QCOW_AUTOCLEAR_BITMAPS;
	return 0;
}

/* ------------------------------------------------- one bitmap, in pieces */

/* Bitmap table entries (qemu's BME_TABLE_ENTRY_*). */

/* Pieces a disk of nb_bits granules needs. */
static uint32_t pieces_for(const struct qcow_image *img, uint64_t nb_bits)
{
	return (uint32_t)QCOW_DIV_ROUND_UP(QCOW_DIV_ROUND_UP(nb_bits, 8), img->cluster_size);
}

static int table_entry_check(struct qcow_image *img, const struct bitmap *b, uint64_t e,
			     uint64_t file_size)
{
	uint64_t off = e & TABLE_OFFSET;

	if ((e & TABLE_RESERVED) || (off && ((e & TABLE_ALL_ONES) ||
					     (off & (img->cluster_size - 1)) || off >= file_size)))
		return qcow_set_error(img, -EINVAL, "bitmap '%s': bad table entry 0x%" PRIx64,
				      b->name, e);
	return 0;
}

/* The durable table of b, every entry checked. */
static int load_table(struct qcow_image *img, struct bitmap *b)
{
	uint64_t tbytes = (uint64_t)b->table_size * 8, file_size, i;
	int ret = img->file.ops->get_size(img->file.ctx, &file_size);

	if (ret < 0)
		return qcow_set_error(img, ret, "cannot get the file size: %s", strerror(-ret));
	if (b->table_offset >= file_size || tbytes > file_size - b->table_offset)
		return qcow_set_error(img, -EINVAL, "bitmap '%s': table lies outside the file",
				      b->name);
	b->table = malloc(tbytes);
	if (!b->table)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
	ret = qcow_pread(img, b->table, tbytes, b->table_offset);
	for (i = 0; ret == 0 && i < b->table_size; i++) {
		b->table[i] = be64toh(b->table[i]);
		ret = table_entry_check(img, b, b->table[i], file_size);
	}
	return ret;
}

static int alloc_delta(struct qcow_image *img, struct bitmap *b)
{
	b->delta = calloc(b->new_size ? b->new_size : 1, sizeof(*b->delta));
	if (!b->delta)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
	return 0;
}

int bitmap_load(struct qcow_image *img, const struct qcow_bitmap_info *info, uint64_t at,
		struct bitmap *b)
{
	int ret;

	memset(b, 0, sizeof(*b));
	b->name = strdup(info->name);
	if (!b->name)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", info->name);
	b->at = at;
	b->gran_bits = (unsigned)__builtin_ctzll(info->granularity);
	b->flags = info->flags;
	b->nb_bits = QCOW_DIV_ROUND_UP(img->size, info->granularity);
	b->old_nb_bits = b->nb_bits;
	b->piece_bytes = img->cluster_size;
	b->table_offset = info->table_offset;
	b->table_size = info->table_size;
	b->new_size = pieces_for(img, b->nb_bits);
	if (b->table_size != b->new_size)
		return qcow_set_error(img, -EINVAL, "bitmap '%s': table of %" PRIu32 " entries "
				      "(the disk needs %" PRIu32 ")", b->name, b->table_size,
				      b->new_size);
	ret = load_table(img, b);
	return ret < 0 ? ret : alloc_delta(img, b);
}

int bitmap_new(struct qcow_image *img, const char *name, unsigned gran_bits, uint32_t flags,
	       struct bitmap *b)
{
	memset(b, 0, sizeof(*b));
	b->name = strdup(name);
	if (!b->name)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", name);
	b->gran_bits = gran_bits;
	b->flags = flags;
	b->nb_bits = QCOW_DIV_ROUND_UP(img->size, 1ULL << gran_bits);
	b->piece_bytes = img->cluster_size;
	b->new_size = pieces_for(img, b->nb_bits);
	b->resized = true;            /* no table to keep: every piece is new */
	return alloc_delta(img, b);
}

void bitmap_drop_piece(struct bitmap *b, uint32_t i)
{
	if (!b->delta[i])
		return;
	free(b->delta[i]);
	b->delta[i] = NULL;
	if (b->mem)
		*b->mem -= b->piece_bytes;
}

int bitmap_resize(struct qcow_image *img, struct bitmap *b, uint64_t size)
{
	uint64_t nb_bits = QCOW_DIV_ROUND_UP(size, 1ULL << b->gran_bits);
	uint32_t n = pieces_for(img, nb_bits), i;
	uint8_t **d;

	for (i = n; i < b->new_size; i++)
		bitmap_drop_piece(b, i);
	d = realloc(b->delta, (n ? n : 1) * sizeof(*d));
	if (!d)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
	for (i = b->new_size; i < n; i++)
		d[i] = NULL;
	b->delta = d;
	b->new_size = n;
	b->nb_bits = nb_bits;
	b->resized = true;
	return 0;
}

/* Bits first..last of p. */
static void set_bits(uint8_t *p, uint64_t first, uint64_t last)
{
	uint64_t fb = first / 8, lb = last / 8;
	uint8_t fm = (uint8_t)(0xff << (first & 7)), lm = (uint8_t)(0xff >> (7 - (last & 7)));

	if (fb == lb) {
		p[fb] |= fm & lm;
		return;
	}
	p[fb] |= fm;
	memset(p + fb + 1, 0xff, lb - fb - 1);
	p[lb] |= lm;
}

/* Every piece first..last has its delta. */
static int pieces_ready(struct bitmap *b, uint64_t first, uint64_t last)
{
	uint64_t cs = b->piece_bytes, i;

	for (i = first; i <= last; i++) {
		if (b->delta[i])
			continue;
		if (b->mem && b->mem_cap && *b->mem + cs > b->mem_cap)
			return -ENOMEM;
		b->delta[i] = calloc(1, cs);
		if (!b->delta[i])
			return -ENOMEM;
		if (b->mem)
			*b->mem += cs;
	}
	return 0;
}

int bitmap_set(struct bitmap *b, uint64_t first, uint64_t last)
{
	uint64_t per = b->piece_bytes * 8, i;
	int ret;

	if (first >= b->nb_bits)
		return 0;
	last = QCOW_MIN(last, b->nb_bits - 1);
	ret = pieces_ready(b, first / per, last / per);
	for (i = first / per; ret == 0 && i <= last / per; i++) {
		uint64_t lo = QCOW_MAX(first, i * per), hi = QCOW_MIN(last, i * per + per - 1);

		set_bits(b->delta[i], lo - i * per, hi - i * per);
	}
	return ret;
}

bool bitmap_changed(const struct bitmap *b)
{
	uint32_t i;

	if (b->resized)
		return true;
	for (i = 0; i < b->new_size; i++) {
		if (b->delta[i])
			return true;
	}
	return false;
}

void bitmap_clear_from(uint8_t *buf, uint64_t cs, uint64_t first, uint64_t limit)
{
	uint64_t n = limit > first ? limit - first : 0;

	if (n >= cs * 8)
		return;
	if (n & 7)
		buf[n / 8] &= (uint8_t)((1U << (n & 7)) - 1);
	memset(buf + QCOW_DIV_ROUND_UP(n, 8), 0, cs - QCOW_DIV_ROUND_UP(n, 8));
}

int bitmap_piece(struct qcow_image *img, const struct bitmap *b, uint64_t i, uint8_t *buf)
{
	uint64_t cs = img->cluster_size, e = i < b->table_size ? b->table[i] : 0, j;
	int ret = 0;

	if (e & TABLE_OFFSET)
		ret = qcow_pread(img, buf, cs, e & TABLE_OFFSET);
	else
		memset(buf, (e & TABLE_ALL_ONES) ? 0xff : 0, cs);
	if (ret < 0)
		return ret;
	/* what lay past the old disk's end is not the new disk's */
	bitmap_clear_from(buf, cs, i * cs * 8, b->old_nb_bits);
	for (j = 0; i < b->new_size && b->delta[i] && j < cs; j++)
		buf[j] |= b->delta[i][j];
	bitmap_clear_from(buf, cs, i * cs * 8, b->nb_bits);
	return 0;
}

/* The runs of set bits of one piece (bits base.. of the bitmap). */
static int piece_runs(const uint8_t *p, uint64_t nbits, uint64_t base,
		      int (*fn)(void *, uint64_t, uint64_t), void *opaque)
{
	uint64_t k = 0, start;
	int ret;

	while (k < nbits) {
		if (!(k & 7) && !p[k / 8]) {
			k += 8;
			continue;
		}
		if (!(p[k / 8] & (1U << (k & 7)))) {
			k++;
			continue;
		}
		start = k;
		while (k < nbits && (p[k / 8] & (1U << (k & 7))))
			k++;
		ret = fn(opaque, base + start, base + k - 1);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int bitmap_for_each_run(struct qcow_image *img, const struct bitmap *b,
			int (*fn)(void *opaque, uint64_t first, uint64_t last), void *opaque)
{
	uint64_t cs = img->cluster_size, per = cs * 8, i;
	uint8_t *buf = malloc(cs);
	int ret = buf ? 0 : qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);

	for (i = 0; ret == 0 && i < b->new_size; i++) {
		ret = bitmap_piece(img, b, i, buf);
		if (ret == 0)
			ret = piece_runs(buf, QCOW_MIN(per, b->nb_bits - i * per), i * per, fn,
					 opaque);
	}
	free(buf);
	return ret;
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	return !p[0] && !memcmp(p, p + 1, n - 1);
}

/* Does piece i keep the cluster (or table value) it has? */
static bool piece_kept(const struct bitmap *b, uint32_t i)
{
	if (b->delta[i] || i >= b->table_size)
		return false;
	/* a new size moves the disk's end: the pieces it was and is in are
	 * rewritten, their bits past it cleared */
	return !(b->resized && (i == b->new_size - 1 || i == b->table_size - 1));
}

/* Piece i into new_entries[i]: kept, or written to a new cluster unless
 * all clear (entry 0, as qemu). */
static int write_piece(struct qcow_image *img, struct bitmap *b, uint32_t i, uint8_t *buf)
{
	int64_t host;
	int ret;

	b->new_entries[i] = 0;
	if (piece_kept(b, i)) {
		b->new_entries[i] = b->table[i];
		return 0;
	}
	if (!b->delta[i] && (i >= b->table_size || !b->table[i]))
		return 0;
	ret = bitmap_piece(img, b, i, buf);
	if (ret < 0 || all_zero(buf, img->cluster_size))
		return ret;
	host = qcow_alloc_clusters(img, 1);
	if (host < 0)
		return (int)host;
	b->new_entries[i] = (uint64_t)host;
	return qcow_pwrite(img, buf, img->cluster_size, (uint64_t)host);
}

/* The table itself, big-endian, in new clusters. */
static int write_table(struct qcow_image *img, struct bitmap *b)
{
	uint64_t cs = img->cluster_size;
	uint64_t nc = QCOW_DIV_ROUND_UP((uint64_t)b->new_size * 8, cs), i;
	uint64_t *t = calloc(nc, cs);
	int64_t host;
	int ret;

	if (!t)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
	for (i = 0; i < b->new_size; i++)
		t[i] = htobe64(b->new_entries[i]);
	host = qcow_alloc_clusters(img, nc);
	ret = host < 0 ? (int)host : qcow_pwrite(img, t, nc * cs, (uint64_t)host);
	if (ret == 0)
		b->new_table = (uint64_t)host;
	free(t);
	return ret;
}

int bitmap_write(struct qcow_image *img, struct bitmap *b)
{
	uint8_t *buf = malloc(img->cluster_size);
	uint32_t i;
	int ret = 0;

	free(b->new_entries);
	b->new_entries = calloc(b->new_size ? b->new_size : 1, sizeof(*b->new_entries));
	if (!buf || !b->new_entries)
		ret = qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
	for (i = 0; ret == 0 && i < b->new_size; i++)
		ret = write_piece(img, b, i, buf);
	free(buf);
	return ret < 0 ? ret : write_table(img, b);
}

int bitmap_free_replaced(struct qcow_image *img, const struct bitmap *b)
{
	uint64_t i;
	int ret = 0;

	for (i = 0; ret == 0 && i < b->table_size; i++) {
		uint64_t off = b->table[i] & TABLE_OFFSET;
		bool kept = b->new_table && i < b->new_size && b->new_entries[i] == b->table[i];

		if (off && !kept)
			ret = qcow_free_deferred(img, off, img->cluster_size);
	}
	if (ret == 0 && b->table_offset)
		ret = qcow_free_deferred(img, b->table_offset, (uint64_t)b->table_size * 8);
	return ret;
}

void bitmap_release(struct bitmap *b)
{
	uint32_t i;

	for (i = 0; b->delta && i < b->new_size; i++)
		bitmap_drop_piece(b, i);
	free(b->name);
	free(b->table);
	free(b->fresh);
	free(b->new_entries);
	free(b->delta);
	memset(b, 0, sizeof(*b));
}
