// SPDX-License-Identifier: MIT
/*
 * Persistent dirty bitmaps: the bitmaps header extension and the bitmap
 * directory it points at, listed for qcow-tool info as qemu-img info lists
 * them, and kept up to date by a read-write handle as QEMU keeps them.
 *
 * The extension and the directory come from a file we do not trust: the
 * directory's size is bounded before it is read, and every entry is
 * checked (as qemu checks it, block/qcow2-bitmap.c) before any of it is
 * used, so a hostile directory gives an error naming what is wrong (and a
 * read-write open fails with it, as QEMU's does).
 *
 * A read-write open (not a check open) of an image whose bitmaps autoclear
 * bit is set loads every bitmap it must keep: enabled (AUTO), not IN_USE
 * and without extra data. A bitmap already IN_USE is inconsistent (a
 * writer died holding it) and stays so, untouched; one with extra data we
 * do not know is left as it is (the spec's rule); a disabled one never
 * changes, so it is neither loaded nor marked. The loaded bitmaps are held
 * whole in memory, at most QCOW_BITMAP_MEM_CAP bytes together (a read-write
 * open needing more fails, naming the bitmap), so that setting bits is a
 * memory operation: qcow_bitmaps_mark, called by every write, zero write
 * and discard with its guest range once it is validated, never does IO
 * and never allocates (the daemon calls it under the engine lock).
 *
 * Crash ordering (doc/design.md 15b). The directory is only ever rewritten
 * in place, and each rewrite changes one kind of field of whole entries:
 * table offsets (8 bytes, 8-aligned) or flags (4 bytes at 12 mod 8): such a
 * field never straddles a 512-byte sector, so a torn rewrite leaves each
 * field old or new, never half of each.
 *  B1. Open: the loaded bitmaps get IN_USE in the directory, written in
 *      place, fsync, before the handle changes anything (the open returns
 *      only then). Crash right after: QEMU sees them IN_USE (inconsistent),
 *      as after its own crash; a torn write marks some, and nothing has
 *      changed yet, so the unmarked ones are still exact.
 *  B2. Close, after the final flush: each changed bitmap gets new data
 *      clusters (all-zero ones none: entry 0, as QEMU) and a new table, in
 *      clusters allocated now, never those the durable directory points
 *      at; a flush makes them and their refcounts durable. Crash right
 *      after: the directory still names the old tables, IN_USE: the new
 *      clusters are leaks.
 *  B3. The directory with the new table offsets, IN_USE still set, in
 *      place, fsync. Crash right after (or torn): every entry names its old
 *      or its new table, both whole and counted, and is IN_USE: leaks only.
 *  B4. The directory with IN_USE cleared, in place, fsync. Crash right after
 *      (or torn): an entry without IN_USE names its new table (durable in
 *      B3), which holds every bit set before the close began; the others
 *      are still IN_USE.
 *  B5. The old tables and data clusters of the changed bitmaps are freed
 *      (deferred) and a flush applies the frees: nothing durable names them
 *      since B3. Crash before the frees land: leaks.
 * A failure anywhere leaves the bitmaps IN_USE, as a crash does.
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

/* What a walk learns of an entry besides its info. */
struct entry_pos {
	uint64_t at;                  /* the entry's offset in the directory */
	bool foreign;                 /* extra data we do not know: left as it is */
};

/* The entry at *off into *b (its name even when it is invalid, for the
 * message and for the caller to free); *off moves past it. With pos NULL
 * (info, as qemu) extra data is an error; else such an entry is foreign:
 * kept, not used, not checked further. */
static int next_entry(struct qcow_image *img, const struct dir *d, uint64_t *off,
		      struct qcow_bitmap_info *b, struct entry_pos *pos)
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
	if (e.extra_data_size && !pos)
		return qcow_set_error(img, -EINVAL, "bitmap extra data is not supported");
	b->name = strndup((const char *)d->buf + *off + sizeof(e) + e.extra_data_size,
			  e.name_size);
	if (!b->name)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap directory");
	if (pos) {
		pos->at = *off;
		pos->foreign = e.extra_data_size != 0;
	}
	*off += len;
	if (!(pos && pos->foreign) && !entry_valid(img, &e))
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
		ret = next_entry(img, d, &off, &v[*n], NULL);
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

/* ------------------------------------------------ bitmaps kept up to date */

/* Bitmap table entries (qemu's BME_TABLE_ENTRY_*). */
#define TABLE_RESERVED  0xff000000000001feULL
#define TABLE_OFFSET    0x00fffffffffffe00ULL
#define TABLE_ALL_ONES  1ULL

/* Where the fields a store rewrites lie in an entry. */
#define ENTRY_TABLE_OFFSET 0
#define ENTRY_FLAGS        12

/* A bitmap this handle keeps up to date. */
struct loaded {
	char *name;
	uint64_t at;                  /* its entry's offset in the directory */
	unsigned gran_bits;
	uint64_t nb_bits;             /* one per granule of the disk */
	uint64_t table_offset;        /* the durable table */
	uint32_t table_size;
	uint64_t *table;              /* its entries, host order (freed by a store) */
	uint8_t *bits;                /* table_size clusters, bit n in byte n / 8 */
	uint64_t new_table;           /* B2's table; 0: none */
	bool changed;                 /* a bit was set since open */
};

struct qcow_bitmaps {
	struct dir d;                 /* the directory, as last written */
	struct loaded *v;
	uint32_t n;
	uint64_t mem;                 /* bytes of bits held */
};

static void loaded_free(struct loaded *b)
{
	free(b->name);
	free(b->table);
	free(b->bits);
}

void qcow_bitmaps_free(struct qcow_image *img)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;

	if (!bm)
		return;
	for (i = 0; i < bm->n; i++)
		loaded_free(&bm->v[i]);
	free(bm->v);
	free(bm->d.buf);
	free(bm);
	img->bitmaps = NULL;
}

bool qcow_bitmaps_present(const struct qcow_image *img)
{
	return img->bitmaps != NULL;
}

/* Is entry i (info b) one a writer keeps: enabled, consistent, known? */
static bool to_keep(const struct qcow_bitmap_info *b, const struct entry_pos *pos)
{
	return !pos->foreign && !(b->flags & QCOW_BITMAP_IN_USE) && (b->flags & QCOW_BITMAP_AUTO);
}

/* Take entry b into bm->v (its name moves there), sized as qemu sizes it. */
static int keep(struct qcow_image *img, struct qcow_bitmaps *bm, struct qcow_bitmap_info *b,
		uint64_t at)
{
	struct loaded *l = &bm->v[bm->n];
	unsigned g = (unsigned)__builtin_ctzll(b->granularity);
	uint64_t nb_bits = QCOW_DIV_ROUND_UP(img->size, b->granularity);
	uint64_t need = QCOW_DIV_ROUND_UP(QCOW_DIV_ROUND_UP(nb_bits, 8), img->cluster_size);

	l->name = b->name;
	b->name = NULL;
	l->at = at;
	l->gran_bits = g;
	l->nb_bits = nb_bits;
	l->table_offset = b->table_offset;
	l->table_size = b->table_size;
	bm->n++;
	if (b->table_size != need)
		return qcow_set_error(img, -EINVAL, "bitmap '%s': table of %" PRIu32 " entries "
				      "(the disk needs %" PRIu64 ")", l->name, b->table_size, need);
	bm->mem += (uint64_t)l->table_size * img->cluster_size;
	if (bm->mem > QCOW_BITMAP_MEM_CAP)
		return qcow_set_error(img, -ENOMEM, "bitmap '%s': the enabled bitmaps need more "
				      "than %llu MiB of memory to be kept up to date; writing is "
				      "refused", l->name, QCOW_BITMAP_MEM_CAP >> 20);
	return 0;
}

/* Walk the directory, keeping the entries to_keep picks. */
static int pick(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	struct qcow_bitmap_info b;
	struct entry_pos pos;
	uint64_t off = 0;
	uint32_t seen = 0;
	int ret = 0;

	bm->v = calloc(bm->d.nb, sizeof(*bm->v));
	if (!bm->v)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	while (ret == 0 && off < bm->d.size) {
		if (seen == bm->d.nb)
			return qcow_set_error(img, -EINVAL, "more bitmaps in the directory than the "
					      "extension says (%" PRIu32 ")", bm->d.nb);
		memset(&b, 0, sizeof(b));
		ret = next_entry(img, &bm->d, &off, &b, &pos);
		seen++;
		if (ret == 0 && to_keep(&b, &pos))
			ret = keep(img, bm, &b, pos.at);
		free(b.name);
	}
	if (ret == 0 && seen != bm->d.nb)
		ret = qcow_set_error(img, -EINVAL, "fewer bitmaps in the directory (%" PRIu32
				     ") than the extension says (%" PRIu32 ")", seen, bm->d.nb);
	return ret;
}

static int table_entry_check(struct qcow_image *img, const struct loaded *l, uint64_t e,
			     uint64_t file_size)
{
	uint64_t off = e & TABLE_OFFSET;

	if ((e & TABLE_RESERVED) || (off && ((e & TABLE_ALL_ONES) ||
					     (off & (img->cluster_size - 1)) || off >= file_size)))
		return qcow_set_error(img, -EINVAL, "bitmap '%s': bad table entry 0x%" PRIx64,
				      l->name, e);
	return 0;
}

/* Bits past the disk's end stay clear (an all-ones cluster sets them). */
static void clear_tail(struct loaded *l, uint64_t bytes)
{
	uint64_t n = l->nb_bits;

	if (n & 7)
		l->bits[n / 8] &= (uint8_t)((1U << (n & 7)) - 1);
	memset(l->bits + QCOW_DIV_ROUND_UP(n, 8), 0, bytes - QCOW_DIV_ROUND_UP(n, 8));
}

/* The table and the data of l, every entry checked. */
static int load_one(struct qcow_image *img, struct loaded *l, uint64_t file_size)
{
	uint64_t cs = img->cluster_size, tbytes = (uint64_t)l->table_size * 8, i;
	uint64_t bytes = (uint64_t)l->table_size * cs;
	int ret;

	if (l->table_offset >= file_size || tbytes > file_size - l->table_offset)
		return qcow_set_error(img, -EINVAL, "bitmap '%s': table lies outside the file",
				      l->name);
	l->table = malloc(tbytes);
	l->bits = calloc(1, bytes);
	if (!l->table || !l->bits)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", l->name);
	ret = qcow_pread(img, l->table, tbytes, l->table_offset);
	for (i = 0; ret == 0 && i < l->table_size; i++) {
		uint64_t e = be64toh(l->table[i]);

		l->table[i] = e;
		ret = table_entry_check(img, l, e, file_size);
		if (ret == 0 && (e & TABLE_OFFSET))
			ret = qcow_pread(img, l->bits + i * cs, cs, e & TABLE_OFFSET);
		else if (ret == 0 && (e & TABLE_ALL_ONES))
			memset(l->bits + i * cs, 0xff, cs);
	}
	if (ret == 0)
		clear_tail(l, bytes);
	return ret;
}

static int write_dir(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	int ret = qcow_pwrite(img, bm->d.buf, bm->d.size, bm->d.offset);

	return ret < 0 ? ret : qcow_fsync(img);
}

static void set_flags(struct qcow_bitmaps *bm, const struct loaded *l, bool in_use)
{
	uint32_t f;

	memcpy(&f, bm->d.buf + l->at + ENTRY_FLAGS, 4);
	f = be32toh(f);
	f = in_use ? f | QCOW_BITMAP_IN_USE : f & ~QCOW_BITMAP_IN_USE;
	f = htobe32(f);
	memcpy(bm->d.buf + l->at + ENTRY_FLAGS, &f, 4);
}

/* B1: IN_USE on every loaded bitmap, durable before any change. */
static int mark_in_use(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	uint32_t i;

	if (!bm->n)
		return 0;
	for (i = 0; i < bm->n; i++)
		set_flags(bm, &bm->v[i], true);
	return write_dir(img, bm);
}

int qcow_bitmaps_open(struct qcow_image *img)
{
	const struct qcow_raw_ext *e = find_ext(img);
	struct qcow_bitmaps *bm;
	uint64_t file_size;
	uint32_t i;
	int ret;

	if (!e)
		return 0;
	bm = calloc(1, sizeof(*bm));
	if (!bm)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	img->bitmaps = bm;
	ret = parse_ext(img, e, &bm->d);
	if (ret == 0)
		ret = read_dir(img, &bm->d);
	if (ret == 0)
		ret = pick(img, bm);
	if (ret == 0)
		ret = img->file.ops->get_size(img->file.ctx, &file_size);
	for (i = 0; ret == 0 && i < bm->n; i++)
		ret = load_one(img, &bm->v[i], file_size);
	if (ret == 0)
		ret = mark_in_use(img, bm);
	if (ret < 0)
		qcow_bitmaps_free(img);
	return ret;
}

/* Bits first..last of l. */
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

void qcow_bitmaps_mark(struct qcow_image *img, uint64_t off, uint64_t len)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;

	if (!bm || !len)
		return;
	for (i = 0; i < bm->n; i++) {
		struct loaded *l = &bm->v[i];

		set_bits(l->bits, off >> l->gran_bits, (off + len - 1) >> l->gran_bits);
		l->changed = true;
	}
}

static bool all_zero(const uint8_t *p, uint64_t n)
{
	return !p[0] && !memcmp(p, p + 1, n - 1);
}

/* One data cluster of l: written to a new cluster unless all zero. */
static int write_piece(struct qcow_image *img, const struct loaded *l, uint64_t i,
		       uint64_t *entry)
{
	const uint8_t *p = l->bits + i * img->cluster_size;
	int64_t host;

	*entry = 0;
	if (all_zero(p, img->cluster_size))
		return 0;
	host = qcow_alloc_clusters(img, 1);
	if (host < 0)
		return (int)host;
	*entry = htobe64((uint64_t)host);
	return qcow_pwrite(img, p, img->cluster_size, (uint64_t)host);
}

/* B2 for l: its data clusters, then its table, all in new clusters. */
static int write_bitmap(struct qcow_image *img, struct loaded *l)
{
	uint64_t cs = img->cluster_size;
	uint64_t nc = QCOW_DIV_ROUND_UP((uint64_t)l->table_size * 8, cs), i;
	uint64_t *t = calloc(nc, cs);
	int64_t host;
	int ret = t ? 0 : qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", l->name);

	for (i = 0; ret == 0 && i < l->table_size; i++)
		ret = write_piece(img, l, i, &t[i]);
	host = ret < 0 ? ret : qcow_alloc_clusters(img, nc);
	if (host >= 0)
		ret = qcow_pwrite(img, t, nc * cs, (uint64_t)host);
	else
		ret = (int)host;
	if (ret == 0)
		l->new_table = (uint64_t)host;
	free(t);
	return ret;
}

/* B5 for l: its old table and data clusters lose their reference. */
static int free_old(struct qcow_image *img, const struct loaded *l)
{
	uint64_t i;
	int ret = 0;

	for (i = 0; ret == 0 && i < l->table_size; i++) {
		if (l->table[i] & TABLE_OFFSET)
			ret = qcow_free_deferred(img, l->table[i] & TABLE_OFFSET, img->cluster_size);
	}
	if (ret == 0)
		ret = qcow_free_deferred(img, l->table_offset, (uint64_t)l->table_size * 8);
	return ret;
}

/* B2 and B3: the changed bitmaps' new tables, then the directory names them. */
static int store_changed(struct qcow_image *img, struct qcow_bitmaps *bm, bool *any)
{
	uint32_t i;
	int ret = 0;

	*any = false;
	for (i = 0; ret == 0 && i < bm->n; i++) {
		if (bm->v[i].changed) {
			ret = write_bitmap(img, &bm->v[i]);
			*any = true;
		}
	}
	if (ret < 0 || !*any)
		return ret;
	qcow_sync_owed(img, QCOW_SYNC_DATA);
	ret = qcow_flush(img);
	for (i = 0; ret == 0 && i < bm->n; i++) {
		uint64_t t = htobe64(bm->v[i].new_table);

		if (bm->v[i].new_table)
			memcpy(bm->d.buf + bm->v[i].at + ENTRY_TABLE_OFFSET, &t, 8);
	}
	return ret < 0 ? ret : write_dir(img, bm);
}

int qcow_bitmaps_store(struct qcow_image *img)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;
	bool any;
	int ret;

	if (!bm || !bm->n)
		return 0;
	ret = store_changed(img, bm, &any);
	if (ret < 0)
		return ret;
	for (i = 0; i < bm->n; i++)
		set_flags(bm, &bm->v[i], false);
	ret = write_dir(img, bm);
	for (i = 0; ret == 0 && i < bm->n; i++) {
		if (bm->v[i].new_table)
			ret = free_old(img, &bm->v[i]);
	}
	if (ret == 0 && any)
		ret = qcow_flush(img);
	/* stored: nothing is IN_USE any more, so nothing may be marked */
	for (i = 0; i < bm->n; i++)
		loaded_free(&bm->v[i]);
	bm->n = 0;
	return ret;
}

/* ---------------------------------------------- editing (qcow-tool bitmap)
 *
 * Each action is one switch (design 15b, "Editing"): the bitmaps it
 * changes get new tables and data in new clusters, a whole new directory
 * goes to new clusters, a flush makes all of it and its refcounts durable;
 * then one header write points the extension at the new directory (and
 * sets the autoclear bit with the first bitmap, or drops extension and bit
 * with the last, as qemu); only then are the old directory and the old
 * tables freed (deferred). Crash before the header: the old directory
 * stands, the new clusters leak. After: the new one stands, the old
 * clusters leak until the frees land. Nothing durable ever names a freed
 * cluster, and no bitmap is ever half edited.
 */

/* An edit runs with nothing kept: store what the open loaded (IN_USE off). */
static int edit_begin(struct qcow_image *img, struct qcow_bitmap_info **v, uint32_t *n)
{
	int ret;

	if (img->read_only)
		return qcow_set_error(img, -EROFS, "image is open read-only");
	ret = qcow_refuse_if_failed(img);
	if (ret == 0)
		ret = qcow_flush(img);
	if (ret == 0)
		ret = qcow_bitmaps_store(img);
	return ret < 0 ? ret : qcow_bitmap_list(img, v, n);
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

/* A bitmap of the directory, loaded whole (table and bits). */
static int load_info(struct qcow_image *img, const struct qcow_bitmap_info *b,
		     struct loaded *l)
{
	uint64_t file_size;
	int ret;

	memset(l, 0, sizeof(*l));
	if (b->flags & QCOW_BITMAP_IN_USE)
		return qcow_set_error(img, -EBUSY, "Bitmap '%s' is inconsistent and cannot be "
				      "used", b->name);
	l->name = strdup(b->name);
	if (!l->name)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
	l->gran_bits = (unsigned)__builtin_ctzll(b->granularity);
	l->nb_bits = QCOW_DIV_ROUND_UP(img->size, b->granularity);
	l->table_offset = b->table_offset;
	l->table_size = b->table_size;
	ret = img->file.ops->get_size(img->file.ctx, &file_size);
	return ret < 0 ? ret : load_one(img, l, file_size);
}

/* The directory of v[0..n) in new clusters, durable with everything before. */
static int write_new_dir(struct qcow_image *img, const struct qcow_bitmap_info *v, uint32_t n,
			 struct dir *d)
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
			.type = DIRTY_TRACKING_BITMAP,
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

/* The extension (and autoclear bit) in memory name d; none when d is empty. */
static int set_ext(struct qcow_image *img, const struct dir *d)
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

/* The switch: new directory, header, then the old clusters (old may be NULL). */
static int edit_commit(struct qcow_image *img, const struct qcow_bitmap_info *v, uint32_t n,
		       const struct loaded *old)
{
	const struct qcow_raw_ext *e = find_ext(img);
	struct dir was = { 0 }, d = { 0 };
	int ret = e ? parse_ext(img, e, &was) : 0;

	if (ret == 0)
		ret = write_new_dir(img, v, n, &d);
	if (ret == 0)
		ret = set_ext(img, &d);
	if (ret == 0)
		ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret == 0 && was.offset)
		ret = qcow_free_deferred(img, was.offset,
					 QCOW_ALIGN_UP(was.size, img->cluster_size));
	if (ret == 0 && old)
		ret = free_old(img, old);
	if (ret == 0)
		ret = qcow_flush(img);
	free(d.buf);
	return ret;
}

/* A new table for b holding bits (NULL: all clear), in new clusters. */
static int new_table(struct qcow_image *img, struct qcow_bitmap_info *b, uint8_t *bits)
{
	uint64_t nb_bits = QCOW_DIV_ROUND_UP(img->size, b->granularity);
	struct loaded l = {
		.name = b->name,
		.table_size = (uint32_t)QCOW_DIV_ROUND_UP(QCOW_DIV_ROUND_UP(nb_bits, 8),
							  img->cluster_size),
	};
	int ret;

	l.bits = bits ? bits : calloc(l.table_size, img->cluster_size);
	if (!l.bits)
		return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'", b->name);
	ret = write_bitmap(img, &l);
	if (ret == 0) {
		b->table_offset = l.new_table;
		b->table_size = l.table_size;
	}
	if (!bits)
		free(l.bits);
	return ret;
}

static int edit_add(struct qcow_image *img, struct qcow_bitmap_info **v, uint32_t *n,
		    const char *name, uint64_t granularity)
{
	struct qcow_bitmap_info *nv, b = { .granularity = granularity, .flags = QCOW_BITMAP_AUTO };
	int ret;

	if (granularity < 512 || granularity > (1ULL << MAX_GRANULARITY_BITS) ||
	    (granularity & (granularity - 1)))
		return qcow_set_error(img, -EINVAL, "Granularity must be power of 2 and at least "
				      "512");
	if (find_bitmap(img, *v, *n, name, false) >= 0)
		return qcow_set_error(img, -EEXIST, "Bitmap already exists: %s", name);
	if (strlen(name) > MAX_NAME_SIZE)
		return qcow_set_error(img, -EINVAL, "Bitmap name is too long");
	if (*n >= MAX_BITMAPS)
		return qcow_set_error(img, -ENOSPC, "too many bitmaps");
	nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	*v = nv;
	b.name = strdup(name);
	if (!b.name)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	nv[(*n)++] = b;
	ret = new_table(img, &nv[*n - 1], NULL);
	return ret < 0 ? ret : edit_commit(img, nv, *n, NULL);
}

/* clear, remove, enable, disable: one bitmap i of v. */
static int edit_one(struct qcow_image *img, struct qcow_bitmap_info *v, const uint32_t *n, int i,
		    enum qcow_bitmap_action act)
{
	struct loaded old;
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
		ret = new_table(img, &v[i], NULL);
	if (ret == 0 && act == QCOW_BITMAP_REMOVE) {
		struct qcow_bitmap_info gone = v[i];

		/* moved last and left out of the directory; freed with the list */
		memmove(&v[i], &v[i + 1], (*n - (uint32_t)i - 1) * sizeof(*v));
		v[*n - 1] = gone;
		ret = edit_commit(img, v, *n - 1, free_it ? &old : NULL);
	} else if (ret == 0) {
		ret = edit_commit(img, v, *n, free_it ? &old : NULL);
	}
	loaded_free(&old);
	return ret;
}

/* Every granule set in s is set in d (granularities may differ). */
static void merge_bits(struct loaded *d, const struct loaded *s)
{
	uint64_t i;

	for (i = 0; i < s->nb_bits; i++) {
		uint64_t off = i << s->gran_bits, end = off + (1ULL << s->gran_bits);

		if (!(s->bits[i / 8] & (1U << (i & 7))))
			continue;
		if (off >> d->gran_bits >= d->nb_bits)
			break;
		end = QCOW_MIN(end, d->nb_bits << d->gran_bits);
		set_bits(d->bits, off >> d->gran_bits, (end - 1) >> d->gran_bits);
	}
}

/* The bits of bitmap name in img (an edit's image, or another one). */
static int load_source(struct qcow_image *img, struct qcow_image *src, const char *name,
		       struct loaded *l)
{
	struct qcow_bitmap_info *v;
	uint32_t n;
	int i, ret = qcow_bitmap_list(src, &v, &n);

	i = ret < 0 ? ret : find_bitmap(src, v, n, name, true);
	if (i >= 0)
		ret = load_info(src, &v[i], l);
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
	struct loaded s, d;
	int ret;

	memset(&s, 0, sizeof(s));
	memset(&d, 0, sizeof(d));
	ret = load_source(img, src ? src : img, src_name, &s);
	if (ret == 0)
		ret = load_info(img, &v[i], &d);
	if (ret == 0) {
		merge_bits(&d, &s);
		ret = new_table(img, &v[i], d.bits);
	}
	if (ret == 0)
		ret = edit_commit(img, v, n, &d);
	loaded_free(&s);
	loaded_free(&d);
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
	return ret;
}
