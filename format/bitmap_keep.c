// SPDX-License-Identifier: MIT
/*
 * Persistent dirty bitmaps kept up to date by a read-write handle, as QEMU
 * keeps them: marked IN_USE while it may write, every write, zero write
 * and discard setting the bits of every enabled bitmap, written back and
 * IN_USE cleared at close.
 *
 * A read-write open (not a check open) of an image whose bitmaps autoclear
 * bit is set keeps every bitmap it must: enabled (AUTO), not IN_USE and
 * without extra data. A bitmap already IN_USE is inconsistent (a writer
 * died holding it) and stays so, untouched; one with extra data we do not
 * know is left as it is (the spec's rule); a disabled one never changes,
 * so it is neither kept nor marked. A kept bitmap is held in pieces
 * (bitmap.h): its table, and the bits set since the open in the pieces
 * they fall in, so that qcow_bitmaps_mark, called by every write, zero
 * write and discard with its guest range once it is validated, is a memory
 * operation that never does IO (the daemon calls it under the engine
 * lock). The bits already on disk are read only at close, one piece at a
 * time, for the pieces that changed. The pieces held are bounded by
 * mem_cap (QCOW_BITMAP_MEM_CAP): a bitmap that would need more is dropped
 * (its pieces freed, nothing more marked) and stays IN_USE at close, so
 * that QEMU treats it as inconsistent, as after a failure of its own;
 * tables count against the cap too, and an open whose tables alone pass
 * it fails, naming the bitmap.
 *
 * Crash ordering (doc/design.md 15b). The directory is only ever rewritten
 * in place, and each rewrite changes one kind of field of whole entries:
 * table offsets (8 bytes, 8-aligned) or flags (4 bytes at 12 mod 8): such a
 * field never straddles a 512-byte sector, so a torn rewrite leaves each
 * field old or new, never half of each. (A size change rewrites whole
 * directories instead: bitmap_edit.c.)
 *  B1. Open: the kept bitmaps get IN_USE in the directory, written in
 *      place, fsync, before the handle changes anything (the open returns
 *      only then). Crash right after: QEMU sees them IN_USE (inconsistent),
 *      as after its own crash; a torn write marks some, and nothing has
 *      changed yet, so the unmarked ones are still exact.
 *  B2. Close, after the final flush: each changed bitmap gets a new table
 *      in new clusters; its changed pieces get new clusters too (all-clear
 *      ones none: entry 0, as QEMU), the others keep theirs, so a kept
 *      cluster is named by the old and the new table. A flush makes them
 *      and their refcounts durable. Crash right after: the directory still
 *      names the old tables, IN_USE: the new clusters are leaks.
 *  B3. The directory with the new table offsets, IN_USE still set, in
 *      place, fsync. Crash right after (or torn): every entry names its old
 *      or its new table, whole and counted, and is IN_USE; a cluster both
 *      tables keep is named once, by the one its entry names: leaks only.
 *  B4. The directory with IN_USE cleared, in place, fsync. Crash right after
 *      (or torn): an entry without IN_USE names its new table (durable in
 *      B3), which holds every bit set before the close began; the others
 *      are still IN_USE.
 *  B5. The old tables and the old pieces the new tables do not keep are
 *      freed (deferred) and a flush applies the frees: nothing durable
 *      names them since B3. Crash before the frees land: leaks.
 * A failure anywhere leaves the bitmaps IN_USE, as a crash does.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "bitmap.h"

struct qcow_bitmaps {
	struct bitmap_dir d;          /* the directory, as last written */
	struct bitmap *v;
	uint32_t n;
	uint64_t mem;                 /* bytes of pieces held */
	uint64_t mem_cap;
};

void qcow_bitmaps_free(struct qcow_image *img)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;

	if (!bm)
		return;
	for (i = 0; i < bm->n; i++)
		bitmap_release(&bm->v[i]);
	free(bm->v);
	free(bm->d.buf);
	free(bm);
	img->bitmaps = NULL;
}

bool qcow_bitmaps_present(const struct qcow_image *img)
{
	return img->bitmaps != NULL;
}

void qcow_bitmaps_limit_pieces(struct qcow_image *img, uint64_t bytes)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;

	if (!bm)
		return;
	bm->mem_cap = bm->mem + bytes;
	for (i = 0; i < bm->n; i++)
		bm->v[i].mem_cap = bm->mem_cap;
}

/* Is this entry one a writer keeps: enabled, consistent, known? */
static bool to_keep(const struct qcow_bitmap_info *b, bool foreign)
{
	return !foreign && !(b->flags & QCOW_BITMAP_IN_USE) && (b->flags & QCOW_BITMAP_AUTO);
}

static int keep(struct qcow_image *img, struct qcow_bitmaps *bm,
		const struct qcow_bitmap_info *info, uint64_t at)
{
	struct bitmap *b = &bm->v[bm->n];
	int ret = bitmap_load(img, info, at, b);

	bm->n++;
	b->mem = &bm->mem;
	b->mem_cap = bm->mem_cap;
	if (ret == 0)
		bm->mem += (uint64_t)b->table_size * 8;
	if (ret == 0 && bm->mem > bm->mem_cap)
		ret = qcow_set_error(img, -ENOMEM, "bitmap '%s': the bitmap tables need more "
				     "than %" PRIu64 " MiB of memory; writing is refused", b->name,
				     bm->mem_cap >> 20);
	return ret;
}

/* Walk the directory, keeping the entries to_keep picks. */
static int pick(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	struct qcow_bitmap_info info;
	uint64_t off = 0, at;
	uint32_t seen = 0;
	bool foreign;
	int ret = 0;

	bm->v = calloc(bm->d.nb, sizeof(*bm->v));
	if (!bm->v)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	while (ret == 0 && off < bm->d.size) {
		if (seen == bm->d.nb)
			return qcow_set_error(img, -EINVAL, "more bitmaps in the directory than the "
					      "extension says (%" PRIu32 ")", bm->d.nb);
		memset(&info, 0, sizeof(info));
		ret = bitmap_dir_next(img, &bm->d, &off, &info, &at, &foreign);
		seen++;
		if (ret == 0 && to_keep(&info, foreign))
			ret = keep(img, bm, &info, at);
		free(info.name);
	}
	if (ret == 0 && seen != bm->d.nb)
		ret = qcow_set_error(img, -EINVAL, "fewer bitmaps in the directory (%" PRIu32
				     ") than the extension says (%" PRIu32 ")", seen, bm->d.nb);
	return ret;
}

static int write_dir(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	int ret = qcow_pwrite(img, bm->d.buf, bm->d.size, bm->d.offset);

	return ret < 0 ? ret : qcow_fsync(img);
}

static void set_flags(struct qcow_bitmaps *bm, const struct bitmap *b, bool in_use)
{
	uint32_t f;

	memcpy(&f, bm->d.buf + b->at + BITMAP_ENTRY_FLAGS, 4);
	f = be32toh(f);
	f = in_use ? f | QCOW_BITMAP_IN_USE : f & ~QCOW_BITMAP_IN_USE;
	f = htobe32(f);
	memcpy(bm->d.buf + b->at + BITMAP_ENTRY_FLAGS, &f, 4);
}

/* B1: IN_USE on every kept bitmap, durable before any change. */
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
	struct qcow_bitmaps *bm = calloc(1, sizeof(*bm));
	int ret;

	if (!bm)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmaps");
	bm->mem_cap = QCOW_BITMAP_MEM_CAP;
	ret = bitmap_dir_read(img, &bm->d);
	if (ret == -ENOENT) {
		free(bm);
		return 0;
	}
	img->bitmaps = bm;
	if (ret == 0)
		ret = pick(img, bm);
	if (ret == 0)
		ret = mark_in_use(img, bm);
	if (ret < 0)
		qcow_bitmaps_free(img);
	return ret;
}

/* A bitmap that cannot be kept whole any more: dropped, left IN_USE. */
static void drop(struct qcow_bitmaps *bm, uint32_t i)
{
	struct bitmap gone = bm->v[i];

	bm->v[i] = bm->v[--bm->n];
	bitmap_release(&gone);
}

void qcow_bitmaps_mark(struct qcow_image *img, uint64_t off, uint64_t len)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;

	if (!bm || !len)
		return;
	for (i = 0; i < bm->n; i++) {
		struct bitmap *b = &bm->v[i];

		if (bitmap_set(b, off >> b->gran_bits, (off + len - 1) >> b->gran_bits) < 0)
			drop(bm, i--);
	}
}

/* B2 and B3: the changed bitmaps' new tables, then the directory names them. */
static int store_changed(struct qcow_image *img, struct qcow_bitmaps *bm, bool *any)
{
	uint32_t i;
	int ret = 0;

	*any = false;
	for (i = 0; ret == 0 && i < bm->n; i++) {
		if (bitmap_changed(&bm->v[i])) {
			ret = bitmap_write(img, &bm->v[i]);
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
			memcpy(bm->d.buf + bm->v[i].at + BITMAP_ENTRY_TABLE_OFFSET, &t, 8);
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
			ret = bitmap_free_replaced(img, &bm->v[i]);
	}
	if (ret == 0 && any)
		ret = qcow_flush(img);
	/* stored: nothing is IN_USE any more, so nothing may be marked */
	for (i = 0; i < bm->n; i++)
		bitmap_release(&bm->v[i]);
	bm->n = 0;
	return ret;
}
