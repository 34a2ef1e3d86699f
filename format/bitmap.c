// SPDX-License-Identifier: MIT
/*
 * Persistent dirty bitmaps, read only: the bitmaps header extension and the
 * bitmap directory it points at, listed for qcow-tool info as qemu-img info
 * lists them. Nothing here writes; the extension stays one of those
 * header.c keeps verbatim.
 *
 * The extension and the directory come from a file we do not trust: the
 * directory's size is bounded before it is read, and every entry is
 * checked (as qemu checks it, block/qcow2-bitmap.c) before any of it is
 * used, so a hostile directory gives an error naming what is wrong.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

/* The extension's payload (big-endian). */
struct bitmaps_ext {
	uint32_t nb_bitmaps;
	uint32_t reserved;
	uint64_t dir_size;
	uint64_t dir_offset;
} __attribute__((packed));
_Static_assert(sizeof(struct bitmaps_ext) == 24, "bitmaps extension is 24 bytes");

/* A directory entry; extra data, the name and padding to 8 bytes follow. */
struct bitmap_dir_entry {
	uint64_t table_offset;
	uint32_t table_size;
	uint32_t flags;
	uint8_t type;
	uint8_t granularity_bits;
	uint16_t name_size;
	uint32_t extra_data_size;
} __attribute__((packed));
_Static_assert(sizeof(struct bitmap_dir_entry) == 24, "bitmap directory entry is 24 bytes");

/* qemu's limits (block/qcow2.h, qcow2-bitmap.c) */
#define MAX_BITMAPS             65535U
#define MAX_DIR_SIZE            (1024ULL * MAX_BITMAPS)
#define MAX_TABLE_SIZE          0x8000000U
#define MAX_PHYS_SIZE           0x20000000ULL
#define MIN_GRANULARITY_BITS    9
#define MAX_GRANULARITY_BITS    31
#define MAX_NAME_SIZE           1023
#define DIRTY_TRACKING_BITMAP   1
#define KNOWN_FLAGS             (QCOW_BITMAP_IN_USE | QCOW_BITMAP_AUTO)

struct dir {
	uint32_t nb;                  /* entries the extension announces */
	uint64_t size, offset;
	uint8_t *buf;
};

static const struct qcow_raw_ext *find_ext(const struct qcow_image *img)
{
	uint32_t i;

	for (i = 0; i < img->nb_unknown_exts; i++) {
		if (img->unknown_exts[i].type == QCOW_EXT_BITMAPS)
			return &img->unknown_exts[i];
	}
	return NULL;
}

static int parse_ext(struct qcow_image *img, const struct qcow_raw_ext *e, struct dir *d)
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
	if (d->nb == 0 || d->nb > MAX_BITMAPS)
		return qcow_set_error(img, -EINVAL, "bitmaps extension: %" PRIu32 " bitmaps (must "
				      "be 1..%u)", d->nb, MAX_BITMAPS);
	if (d->offset & (img->cluster_size - 1))
		return qcow_set_error(img, -EINVAL, "bitmap directory offset 0x%" PRIx64
				      " is not cluster aligned", d->offset);
	if (d->size == 0 || d->size > MAX_DIR_SIZE)
		return qcow_set_error(img, -EINVAL, "bitmap directory size %" PRIu64 " (must be "
				      "1..%llu)", d->size, MAX_DIR_SIZE);
	return 0;
}

static int read_dir(struct qcow_image *img, struct dir *d)
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
	    e->table_size > MAX_TABLE_SIZE || e->granularity_bits < MIN_GRANULARITY_BITS ||
	    e->granularity_bits > MAX_GRANULARITY_BITS || (e->flags & ~KNOWN_FLAGS) ||
	    e->name_size > MAX_NAME_SIZE || e->type != DIRTY_TRACKING_BITMAP ||
	    phys > MAX_PHYS_SIZE)
		return false;
	/* a bitmap in use may have missed a resize; a saved one must cover the disk */
	return (e->flags & QCOW_BITMAP_IN_USE) ||
	       img->size <= (phys * 8) << e->granularity_bits;
}

/* The entry at *off into *b (its name even when it is invalid, for the
 * message and for the caller to free); *off moves past it. */
static int next_entry(struct qcow_image *img, const struct dir *d, uint64_t *off,
		      struct qcow_bitmap_info *b)
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
	if (e.extra_data_size)
		return qcow_set_error(img, -EINVAL, "bitmap extra data is not supported");
	b->name = strndup((const char *)d->buf + *off + sizeof(e), e.name_size);
	if (!b->name)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap directory");
	*off += len;
	if (!entry_valid(img, &e))
		return qcow_set_error(img, -EINVAL, "bitmap '%s' does not satisfy the constraints",
				      b->name);
	b->granularity = 1ULL << e.granularity_bits;
	b->flags = e.flags;
	b->table_offset = e.table_offset;
	b->table_size = e.table_size;
	return 0;
}

/* Every entry, exactly as many as the extension announces. */
static int walk_dir(struct qcow_image *img, const struct dir *d, struct qcow_bitmap_info *v,
		    uint32_t *n)
{
	uint64_t off = 0;
	int ret;

	while (off < d->size) {
		if (*n == d->nb)
			return qcow_set_error(img, -EINVAL, "more bitmaps in the directory than the "
					      "extension says (%" PRIu32 ")", d->nb);
		ret = next_entry(img, d, &off, &v[*n]);
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
	struct dir d = { 0 };
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
