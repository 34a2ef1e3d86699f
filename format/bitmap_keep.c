// SPDX-License-Identifier: MIT
/*
 * Persistent dirty bitmaps kept up to date by a read-write handle: marked
 * IN_USE while it may write, every write, zero write and discard setting
 * the bits of every enabled bitmap, and written back by a flush that asks
 * for it (QCOW_FLUSH_BITMAPS: a guest's flush, a tool's, the close), which
 * leaves them consistent, IN_USE cleared, when nothing was written
 * meanwhile, until the next write sets IN_USE again. QEMU writes them back
 * only at close; here a copy of the file taken after a guest's flush on an
 * idle device holds bitmaps as good as a closed image's.
 *
 * A read-write open (not a check open) of an image whose bitmaps autoclear
 * bit is set keeps every bitmap it must: enabled (AUTO), not IN_USE and
 * without extra data. A bitmap already IN_USE is inconsistent (a writer
 * died holding it) and stays so, untouched; one with extra data we do not
 * know is left as it is (the spec's rule); a disabled one never changes,
 * so it is neither kept nor marked. A kept bitmap is held in pieces
 * (bitmap.h): its table, and the bits set since its last write-back in the
 * pieces they fall in, so that qcow_bitmaps_mark, called by every write,
 * zero write and discard with its guest range once it is validated, is a
 * memory operation (bar a piece's first cluster, below) and never waits
 * for IO of its own. The pieces held are bounded by mem_cap
 * (QCOW_BITMAP_MEM_CAP) between two write-backs: a bitmap that would need
 * more is dropped (its pieces freed, nothing more marked or written) and
 * stays IN_USE, so that QEMU treats it as inconsistent, as after a failure
 * of its own; tables count against the cap too, and an open whose tables
 * alone pass it fails, naming the bitmap.
 *
 * Written back in place. Nobody trusts the bits of a bitmap that is IN_USE
 * on disk, so while it is, its pieces and table may be rewritten where
 * they are, in any order, torn or not: only clearing IN_USE makes them
 * count, and that comes after they are durable. A piece with no cluster
 * (all clear: entry 0) gets one when a write first sets a bit in it, as a
 * data cluster is allocated, by the write's own call; so a write-back
 * allocates nothing and frees nothing, and a flush runs it as IO handed
 * out like its own, sharing its fsyncs where the order allows (flush.c:
 * MARK and READS before its step 1, the pieces with step 1's refcount
 * blocks, the tables with step 2's L2 tables, CLEAR after step 5), with
 * the server's lock held only between batches.
 *
 * What the directory on disk says of the kept bitmaps is one of four
 * states (enum bitmaps_disk); a write may mark, and so change anything,
 * only in IN_USE.
 *
 * Crash ordering (doc/design.md 15b). The directory is only ever rewritten
 * in place, flags only (4 bytes at 12 mod 8 of an entry: never straddling
 * a sector, so a torn rewrite leaves each entry's flags old or new).
 *  B1. The open, and the first write after B4: the kept bitmaps get IN_USE
 *      in the directory, in place, fsync, before the handle changes
 *      anything (the open returns, the write goes on, only then; a
 *      server's write waits with QCOW_WAIT_WRITEBACK while the flush it
 *      runs does it, the MARK step). Crash right after: QEMU sees them
 *      IN_USE (inconsistent), as after its own crash; a torn write marks
 *      some, and nothing has changed yet, so the others are still exact.
 *  B2. A write marks its range; a piece without a cluster gets one, its
 *      refcount raised as a data cluster's is (durable by step 1 of the
 *      next flush, which starts after it). Crash right after: a leak.
 *  B3. A flush asked to write back takes, at its start, the pieces marked
 *      so far (their bits leave the handle) and the tables with new
 *      entries; before its step 1 it reads the old bits of each piece that
 *      had some on disk, only the blocks around those that changed, and
 *      adds the new; it writes those blocks (a new piece whole) in place
 *      with step 1 (its fsync), the tables with step 2, after step 1's
 *      fsync (and step 2's fsync). Crash anywhere in it (or torn): the
 *      bitmaps are IN_USE, trusted by nobody; every cluster a table names
 *      is counted (step 1 made the new pieces' refcounts durable, B2,
 *      before any table names them).
 *  B4. Unless something was marked since the start, or a bit could not be
 *      written (a piece without a cluster), or a write waits to mark: the
 *      directory with IN_USE cleared, in place, fsync; writes wait
 *      meanwhile (CLEARING). Crash right after (or torn): an entry without
 *      IN_USE names a table whose bits, durable since B3, hold every write
 *      marked before the start, and nothing marked after it (none was, and
 *      none may be before B1) has changed the file.
 * A failure anywhere fails the handle and leaves the bitmaps IN_USE, as a
 * crash does. Close is a flush that writes back, then nothing more.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "bitmap.h"

/* What the directory on disk says of the kept bitmaps. */
enum bitmaps_disk {
	DISK_IN_USE,                  /* IN_USE, durable: writes mark and go on */
	DISK_CLEARING,                /* a flush clears it (B4): writes wait for its end */
	DISK_CLEAN,                   /* consistent: a write waits for B1 first */
	DISK_MARKING,                 /* a flush sets it again (B1): writes wait for its end */
};

/* A changed piece a write-back writes (B3). */
struct wb_piece {
	uint8_t *buf;                 /* the piece as written: a cluster, aligned */
	uint8_t *delta;               /* the bits set since the last write-back */
	uint64_t host;                /* its cluster */
	uint64_t valid;               /* bits of it that are the disk's */
	uint64_t from, len;           /* the bytes of it read and written: whole
				       * blocks around the changed ones (in place, a
				       * piece is written only where it changed) */
	bool merge;                   /* bits on disk to read and keep */
};

/* A table with new entries, as a write-back writes it. */
struct wb_table {
	uint8_t *buf;
	size_t len;
	uint64_t offset;
};

struct qcow_bitmaps {
	struct bitmap_dir d;          /* the directory, as last written */
	struct bitmap *v;
	uint32_t n;
	uint64_t mem;                 /* bytes of pieces held */
	uint64_t mem_cap;
	enum bitmaps_disk disk;
	bool wb_owed;                 /* a write-back was asked for, not yet started */
	bool mark_owed;               /* a write waits for B1 */
	uint64_t marks;               /* marking calls so far */

	/* the running flush's part */
	bool wb;                      /* it writes back (B3, B4) */
	bool unwritten;               /* a bit it could not write: no B4 */
	uint64_t wb_marks;            /* marks at its start */
	struct wb_piece *p;           /* pieces to merge first, [0, nmerge) */
	uint32_t np, nmerge, pcap;
	struct wb_table *t;
	uint32_t nt, tcap;
	uint8_t *dir_buf;             /* the directory as MARK or CLEAR writes it */
	size_t dir_len;
};

static void wb_release(struct qcow_bitmaps *bm);

void qcow_bitmaps_free(struct qcow_image *img)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;

	if (!bm)
		return;
	wb_release(bm);
	for (i = 0; i < bm->n; i++)
		bitmap_release(&bm->v[i]);
	free(bm->v);
	free(bm->p);
	free(bm->t);
	free(bm->dir_buf);
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

static void set_flags(struct qcow_bitmaps *bm, bool in_use)
{
	uint32_t i, f;

	for (i = 0; i < bm->n; i++) {
		uint8_t *at = bm->d.buf + bm->v[i].at + BITMAP_ENTRY_FLAGS;

		memcpy(&f, at, 4);
		f = be32toh(f);
		f = in_use ? f | QCOW_BITMAP_IN_USE : f & ~QCOW_BITMAP_IN_USE;
		f = htobe32(f);
		memcpy(at, &f, 4);
	}
}

/* A page-aligned buffer of len bytes, or NULL. */
static void *aligned(size_t len)
{
	void *p;

	return posix_memalign(&p, 4096, len) ? NULL : p;
}

/* The block a table or the directory is written in: a sector, or what
 * direct IO needs, never more than the cluster it lies in. */
static uint64_t write_block(const struct qcow_image *img)
{
	return QCOW_MIN(QCOW_MAX(512U, img->file.dio_off_align), img->cluster_size);
}

/* Room for the directory as the flush writes it (MARK, CLEAR): whole
 * blocks, the tail zero; the directory's size never changes while kept. */
static int dir_room(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	bm->dir_len = QCOW_ALIGN_UP(bm->d.size, write_block(img));
	bm->dir_buf = aligned(bm->dir_len);
	if (!bm->dir_buf)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap directory");
	memset(bm->dir_buf, 0, bm->dir_len);
	return 0;
}

/* B1, synchronously: IN_USE on every kept bitmap, durable before any change. */
static int mark_in_use(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	int ret;

	if (!bm->n)
		return 0;
	set_flags(bm, true);
	ret = qcow_pwrite(img, bm->d.buf, bm->d.size, bm->d.offset);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret == 0)
		bm->disk = DISK_IN_USE;
	return ret;
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
		ret = dir_room(img, bm);
	if (ret == 0)
		ret = mark_in_use(img, bm);
	if (ret < 0)
		qcow_bitmaps_free(img);
	return ret;
}

/* A bitmap that cannot be kept whole any more: dropped, left IN_USE. The
 * clusters B2 gave it since its last write-back are named by nothing
 * durable (a write-back takes a table with the pieces it names), so they
 * are freed as any cluster is (deferred; a failure only leaks them). */
static void drop(struct qcow_image *img, struct qcow_bitmaps *bm, uint32_t i)
{
	struct bitmap gone = bm->v[i];
	uint32_t j;

	for (j = 0; gone.fresh && j < gone.table_size; j++) {
		if (gone.fresh[j])
			qcow_free_deferred(img, gone.table[j] & TABLE_OFFSET, img->cluster_size);
	}
	bm->v[i] = bm->v[--bm->n];
	bitmap_release(&gone);
}

/* B2: pieces first..last of b that have no cluster get one. */
static int give_clusters(struct qcow_image *img, struct bitmap *b, uint64_t first,
			 uint64_t last)
{
	uint64_t i;
	int64_t host;

	for (i = first; i <= last && i < b->table_size; i++) {
		if (b->table[i])	/* a cluster, or all set already */
			continue;
		if (!b->fresh)
			b->fresh = calloc(b->table_size, 1);
		if (!b->fresh)
			return qcow_set_error(img, -ENOMEM, "out of memory for bitmap '%s'",
					      b->name);
		host = qcow_alloc_clusters(img, 1);
		if (host < 0)
			return (int)host;
		b->table[i] = (uint64_t)host;
		b->fresh[i] = 1;
		b->table_dirty = true;
	}
	return 0;
}

/* May a write mark now? 0 yes; -EBUSY with what it waits for; a
 * synchronous caller does B1 itself. */
static int may_mark(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	switch (bm->disk) {
	case DISK_IN_USE:
		return 0;
	case DISK_CLEAN:
		if (!img->need)
			return mark_in_use(img, bm);
		bm->mark_owed = true;
		return qcow_busy(img, QCOW_WAIT_WRITEBACK, "the persistent bitmaps are "
				 "consistent on disk: a flush marks them in use before a write");
	default:
		return qcow_busy(img, QCOW_WAIT_FLUSH, "the persistent bitmaps are being "
				 "written: writes wait for the flush");
	}
}

int qcow_bitmaps_mark(struct qcow_image *img, uint64_t off, uint64_t len)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;
	int ret;

	if (!bm || !bm->n || !len)
		return 0;
	ret = may_mark(img, bm);
	if (ret < 0)
		return ret;
	bm->marks++;
	for (i = 0; i < bm->n; i++) {
		struct bitmap *b = &bm->v[i];
		uint64_t first = off >> b->gran_bits, last = (off + len - 1) >> b->gran_bits;
		uint64_t per = img->cluster_size * 8;

		if (bitmap_set(b, first, last) < 0) {
			drop(img, bm, i--);
			continue;
		}
		ret = give_clusters(img, b, first / per, last / per);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ------------------------------------------------- the flush's steps */

static void wb_release(struct qcow_bitmaps *bm)
{
	uint32_t i;

	for (i = 0; i < bm->np; i++) {
		free(bm->p[i].buf);
		free(bm->p[i].delta);
	}
	for (i = 0; i < bm->nt; i++)
		free(bm->t[i].buf);
	bm->np = bm->nmerge = bm->nt = 0;
	bm->wb = bm->unwritten = false;
}

static int grow(struct qcow_image *img, void **v, uint32_t *cap, uint32_t need, size_t size)
{
	uint32_t n = *cap ? *cap : 16;
	void *p;

	if (need <= *cap)
		return 0;
	while (n < need)
		n *= 2;
	p = realloc(*v, (size_t)n * size);
	if (!p)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap write-back");
	*v = p;
	*cap = n;
	return 0;
}

/* The blocks of p to read and write: around its changed bytes; all of a
 * new piece's cluster, which holds nothing of it yet. */
static void changed_span(const struct qcow_image *img, struct wb_piece *p)
{
	uint64_t cs = img->cluster_size, blk = write_block(img), first = 0, last = cs - 1;

	if (p->merge) {
		while (first < last && !p->delta[first])
			first++;
		while (last > first && !p->delta[last])
			last--;
	}
	p->from = first / blk * blk;
	p->len = QCOW_ALIGN_UP(last + 1, blk) - p->from;
}

/* B3's start: piece i of b leaves the handle for the write-back. */
static int take_piece(struct qcow_image *img, struct qcow_bitmaps *bm, struct bitmap *b,
		      uint32_t i)
{
	uint64_t cs = img->cluster_size, e = b->table[i];
	struct wb_piece *p;
	int ret;

	if (!(e & TABLE_OFFSET)) {
		if (e & TABLE_ALL_ONES)
			bitmap_drop_piece(b, i);	/* every bit set already */
		else
			bm->unwritten = true;		/* B2 failed: kept for later */
		return 0;
	}
	ret = grow(img, (void **)&bm->p, &bm->pcap, bm->np + 1, sizeof(*bm->p));
	if (ret < 0)
		return ret;
	p = &bm->p[bm->np];
	p->buf = aligned(cs);
	if (!p->buf)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap write-back");
	bm->np++;
	p->delta = b->delta[i];
	b->delta[i] = NULL;
	*b->mem -= cs;
	p->host = e & TABLE_OFFSET;
	p->valid = QCOW_MIN(cs * 8, b->nb_bits - (uint64_t)i * cs * 8);
	p->merge = !(b->fresh && b->fresh[i]);
	if (b->fresh)
		b->fresh[i] = 0;
	changed_span(img, p);
	return 0;
}

/* B3's start: b's table, when it has new entries. */
static int take_table(struct qcow_image *img, struct qcow_bitmaps *bm, struct bitmap *b)
{
	size_t len = QCOW_ALIGN_UP((size_t)b->table_size * 8, write_block(img));
	struct wb_table *t;
	uint64_t *e;
	uint32_t i;
	int ret;

	if (!b->table_dirty)
		return 0;
	ret = grow(img, (void **)&bm->t, &bm->tcap, bm->nt + 1, sizeof(*bm->t));
	if (ret < 0)
		return ret;
	t = &bm->t[bm->nt];
	t->buf = aligned(len);
	if (!t->buf)
		return qcow_set_error(img, -ENOMEM, "out of memory for the bitmap write-back");
	bm->nt++;
	memset(t->buf, 0, len);
	e = (uint64_t *)t->buf;
	for (i = 0; i < b->table_size; i++)
		e[i] = htobe64(b->table[i]);
	t->len = len;
	t->offset = b->table_offset;
	b->table_dirty = false;
	return 0;
}

/* The pieces that merge go first: READS hands out [0, nmerge). */
static void merges_first(struct qcow_bitmaps *bm)
{
	uint32_t i;

	bm->nmerge = 0;
	for (i = 0; i < bm->np; i++) {
		if (bm->p[i].merge) {
			struct wb_piece tmp = bm->p[bm->nmerge];

			bm->p[bm->nmerge++] = bm->p[i];
			bm->p[i] = tmp;
		}
	}
}

/* B3's start, under the caller's lock: everything marked so far. */
static int wb_take(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	uint32_t i, j;
	int ret = 0;

	bm->wb = true;
	bm->wb_marks = bm->marks;
	for (i = 0; ret == 0 && i < bm->n; i++) {
		struct bitmap *b = &bm->v[i];

		for (j = 0; ret == 0 && j < b->new_size; j++) {
			if (b->delta[j])
				ret = take_piece(img, bm, b, j);
		}
		if (ret == 0)
			ret = take_table(img, bm, b);
	}
	merges_first(bm);
	return ret;
}

void qcow_bitmaps_ask(struct qcow_image *img, unsigned flags)
{
	if (img->bitmaps && (flags & QCOW_FLUSH_BITMAPS))
		img->bitmaps->wb_owed = true;
}

int qcow_bitmaps_flush_start(struct qcow_image *img)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	int ret;

	if (!bm)
		return 0;
	if (!bm->n || bm->disk == DISK_CLEAN) {
		bm->wb_owed = false;	/* nothing kept, or consistent already */
		return bm->n && bm->mark_owed;
	}
	if (!bm->wb_owed)
		return 0;
	bm->wb_owed = false;
	ret = wb_take(img, bm);
	return ret < 0 ? ret : 1;
}

bool qcow_bitmaps_settled(const struct qcow_image *img)
{
	const struct qcow_bitmaps *bm = img->bitmaps;

	return !bm || !bm->n || (bm->disk == DISK_CLEAN && !bm->mark_owed);
}

/* B4 now? Only when nothing can be missing from what B3 wrote. */
static bool may_clear(const struct qcow_bitmaps *bm)
{
	return bm->wb && !bm->unwritten && !bm->mark_owed && bm->marks == bm->wb_marks &&
	       bm->disk == DISK_IN_USE && bm->n;
}

/* B3 after the reads: the new bits over the old, bits past the disk clear. */
static void merge(struct qcow_image *img, struct qcow_bitmaps *bm)
{
	uint64_t cs = img->cluster_size, j;
	uint32_t i;

	for (i = 0; i < bm->np; i++) {
		struct wb_piece *p = &bm->p[i];

		if (!p->merge)
			memset(p->buf, 0, cs);
		for (j = p->from; j < p->from + p->len; j++)
			p->buf[j] |= p->delta[j];
		bitmap_clear_from(p->buf, cs, 0, p->valid);
		free(p->delta);
		p->delta = NULL;
	}
}

unsigned qcow_bitmaps_step_begin(struct qcow_image *img, enum qcow_bitmaps_step s)
{
	struct qcow_bitmaps *bm = img->bitmaps;

	if (!bm)
		return 0;
	switch (s) {
	case QCOW_BITMAPS_MARK:
		if (bm->disk != DISK_CLEAN || !bm->mark_owed || !bm->n)
			return 0;
		set_flags(bm, true);
		bm->disk = DISK_MARKING;
		break;
	case QCOW_BITMAPS_READS:
		return bm->wb ? bm->nmerge : 0;
	case QCOW_BITMAPS_PIECES:
		if (!bm->wb)
			return 0;
		merge(img, bm);
		return bm->np;
	case QCOW_BITMAPS_TABLES:
		return bm->wb ? bm->nt : 0;
	default:
		if (!may_clear(bm))
			return 0;
		set_flags(bm, false);
		bm->disk = DISK_CLEARING;
		break;
	}
	memcpy(bm->dir_buf, bm->d.buf, bm->d.size);
	return 1;
}

void qcow_bitmaps_step_io(struct qcow_image *img, enum qcow_bitmaps_step s, unsigned i,
			  struct qcow_io *io)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	const struct wb_piece *p;

	if (s == QCOW_BITMAPS_MARK || s == QCOW_BITMAPS_CLEAR) {
		*io = (struct qcow_io){ QCOW_IO_WRITE, bm->dir_buf, bm->dir_len, bm->d.offset };
	} else if (s == QCOW_BITMAPS_READS || s == QCOW_BITMAPS_PIECES) {
		p = &bm->p[i];
		*io = (struct qcow_io){ s == QCOW_BITMAPS_READS ? QCOW_IO_READ : QCOW_IO_WRITE,
					p->buf + p->from, p->len, p->host + p->from };
	} else {
		*io = (struct qcow_io){ QCOW_IO_WRITE, bm->t[i].buf, bm->t[i].len, bm->t[i].offset };
	}
}

void qcow_bitmaps_step_end(struct qcow_image *img, enum qcow_bitmaps_step s)
{
	struct qcow_bitmaps *bm = img->bitmaps;

	if (!bm)
		return;
	if (s == QCOW_BITMAPS_MARK && bm->disk == DISK_MARKING) {
		bm->disk = DISK_IN_USE;
		bm->mark_owed = false;
	} else if (s == QCOW_BITMAPS_CLEAR && bm->disk == DISK_CLEARING) {
		bm->disk = DISK_CLEAN;
	}
}

void qcow_bitmaps_flush_end(struct qcow_image *img)
{
	if (img->bitmaps)
		wb_release(img->bitmaps);
}

/* Close, or an edit: the bitmaps let go, consistent on disk (B4 done). */
int qcow_bitmaps_let_go(struct qcow_image *img)
{
	struct qcow_bitmaps *bm = img->bitmaps;
	uint32_t i;
	int ret = 0;

	if (!bm || !bm->n)
		return 0;
	if (bm->disk != DISK_CLEAN)
		ret = qcow_set_error(img, -EIO, "the persistent bitmaps were not written back; "
				     "they stay in use (inconsistent)");
	/* stored: nothing is IN_USE any more, so nothing may be marked */
	for (i = 0; i < bm->n; i++)
		bitmap_release(&bm->v[i]);
	bm->n = 0;
	return ret;
}
