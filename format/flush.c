// SPDX-License-Identifier: MIT
/*
 * Flush: everything written so far made durable in the crash-safe order
 * (rules 1-4 in internal.h, doc/design.md 9.3), as a state machine that
 * hands out its IO instead of doing it (engine.h), so that a server runs it
 * on its ring without holding its lock across a write or an fsync.
 * qcow_flush() runs the same machine with the file ops.
 *
 * qcow_flush_start() takes a snapshot, under the caller's lock: the dirty
 * refcount blocks and L2 tables (copied and pinned, cache.c), the dirty L1
 * sectors (copied), how many frees are queued, which fsyncs are owed, and
 * with QCOW_FLUSH_BITMAPS the bitmap pieces marked so far (bitmap_keep.c).
 * The snapshot is consistent: every L2 entry in it was published after its
 * data write completed (rule 1) and after its refcount increment reached a
 * refcount block, which is in the same snapshot (rule 2). Then, each step
 * its writes (any order among them) and then its fsync:
 *
 *   0 MARK       a write waits for the persistent bitmaps to be IN_USE
 *                again (bitmap_keep.c B1): the directory; fsync.
 *   0b READS     with QCOW_FLUSH_BITMAPS, the old bits of the bitmap
 *                pieces marked since the last write-back (B3); no fsync.
 *   1 REFCOUNTS  the refcount block copies, and the bitmap pieces (B3,
 *                in place: they are IN_USE); fsync if there were any, if
 *                data was written since the last fsync, or if step 1b has
 *                entries to write.
 *                Crash right after: blocks hold extra increments, and
 *                clusters nothing points at yet leak; no decrement is
 *                among them (decrements are written only in step 4). A new
 *                block no table entry points at yet is a leaked cluster.
 *   1b REFTABLE  the refcount table entries of new refcount blocks a
 *                nowait call made (rt_dirty), whole sectors; fsync.
 *                Every such block was dirty at the start (new blocks are
 *                made only between flushes), so step 1 made it durable.
 *                Crash right after: the entries point at durable blocks;
 *                nothing durable uses the clusters they describe yet.
 *   2 L2         the L2 table copies, and the bitmap tables with new
 *                entries (B3: the pieces those name are counted durably
 *                now); fsync if there were any or an L2 table evicted
 *                since the last fsync owes one.
 *                Crash right after: any subset of the tables landed; each
 *                entry points at data and refcounts that are durable, and
 *                the clusters the old entries used are not freed yet.
 *   3 L1         the dirty L1 sectors, whole sectors; fsync.
 *                Crash right after: the entries point at durable tables.
 *   4 FREES      the refcount blocks these frees change and the cache
 *                lacks are read (a batch of reads, no lock held); the
 *                clusters the frees leave unused are punched out of the
 *                file (advisory; frees_punches has the argument); then
 *                the frees queued before the start are applied (what
 *                dropped those references was in the snapshot, durable
 *                now: rule 4) and the refcount blocks copied and written
 *                again; fsync. Crash right after: decrements lost leak.
 *   5 LAST       no fsync yet, and something written since the last one
 *                (an in-place write): fsync.
 *   6 CLEAR      with QCOW_FLUSH_BITMAPS, when nothing was marked since
 *                the start, the bitmap directory without IN_USE (B4):
 *                pieces and tables are durable since steps 1 and 2; fsync.
 *
 * Meanwhile requests go on. What they change is newer than the snapshot
 * and waits for the next flush: a table changed while its copy is written
 * is dirty again, a free queued now is applied by the next flush. They
 * write only data to clusters no durable metadata points at, or in place
 * where the guest owns the data. Table writes of their own could land in
 * either order with the flush's, so they are refused with -EBUSY until the
 * flush ends (qcow_refuse_while_flushing): evictions of dirty tables and
 * new refcount blocks. Pinned copies also keep a slot from being evicted
 * and read back from the file before its write lands.
 *
 * An fsync covers only what happened before it was issued: it records the
 * event counts then (internal.h, events), and they become the synced
 * counts when it completes.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

enum flush_step {
	FLUSH_IDLE,                   /* no flush running */
	FLUSH_BITMAPS_MARK,
	FLUSH_BITMAPS_READS,
	FLUSH_REFCOUNTS,
	FLUSH_REFTABLE,
	FLUSH_L2,
	FLUSH_L1,
	FLUSH_FREES,
	FLUSH_LAST,
	FLUSH_BITMAPS_CLEAR,
	FLUSH_OVER,                   /* every step done: next() ends it */
};

/* What was handed out and not yet reported. */
enum flush_batch { BATCH_NONE, BATCH_WRITES, BATCH_FSYNC, BATCH_LOADS, BATCH_PUNCHES };

/* Where step 4 is before its writes. */
enum frees_phase { FREES_LOAD, FREES_PUNCH, FREES_APPLY, FREES_APPLIED };

struct table_run {
	uint64_t start, len;          /* bytes into the table */
};

/*
 * A flush's copy of the dirty entries of a table kept whole in memory (the
 * L1 table, the refcount table): whole blocks (sectors, or what direct IO
 * needs) so that a torn write cannot mix old and new halves of one, and
 * the runs of blocks to write.
 */
struct table_copy {
	uint8_t *buf;                 /* big-endian, whole clusters */
	size_t len;
	uint64_t offset;              /* the table's, at the start */
	struct table_run *runs;
	unsigned nb_runs;
};

/* A table in memory: its entries (host order), which need writing, where. */
struct table_view {
	const uint64_t *entries;
	uint8_t *dirty;
	bool *any_dirty;
	uint64_t size;                /* entries */
	uint64_t offset;              /* in the file */
	const char *name;
};

struct qcow_flush {
	enum flush_step step;
	enum flush_batch batch;
	unsigned cursor;              /* the step's writes handed out so far */
	unsigned batch_n;             /* writes of the batch: [cursor - batch_n, cursor) */
	bool step_synced;             /* this step's fsync is over */
	bool synced;                  /* some fsync of this flush is over */
	bool owed_any, owed_data;     /* at the start: something / data unsynced */
	size_t nb_frees;              /* frees queued before the start */
	size_t punch_pos;             /* step 4's punches: frees looked at so far */
	unsigned bitmap_ios;          /* the bitmaps' part of the step (bitmap_keep.c) */
	enum frees_phase frees;
	struct qcow_meta_read *loads; /* step 4's batch of block reads */
	unsigned nb_loads;
	uint64_t covers[QCOW_SYNC_KINDS]; /* the fsync in flight: events then */
	int error;

	/* the snapshot */
	uint32_t *rc, *l2;            /* slots of the two caches */
	unsigned nb_rc, nb_l2;
	struct table_copy rt, l1;
};

int qcow_flush_init(struct qcow_image *img)
{
	struct qcow_flush *fl;

	if (img->read_only)
		return 0;
	fl = calloc(1, sizeof(*fl));
	if (fl) {
		fl->rc = calloc(qcow_cache_slots(img->refcount_cache) + 1, sizeof(uint32_t));
		fl->l2 = calloc(qcow_cache_slots(img->l2_cache) + 1, sizeof(uint32_t));
		fl->loads = calloc(qcow_cache_slots(img->refcount_cache) + 1, sizeof(*fl->loads));
	}
	img->flush = fl;
	if (!fl || !fl->rc || !fl->l2 || !fl->loads)
		return qcow_set_error(img, -ENOMEM, "out of memory for the flush state");
	return 0;
}

void qcow_flush_free(struct qcow_image *img)
{
	struct qcow_flush *fl = img->flush;

	if (!fl)
		return;
	free(fl->rc);
	free(fl->l2);
	free(fl->loads);
	free(fl->rt.buf);
	free(fl->rt.runs);
	free(fl->l1.buf);
	free(fl->l1.runs);
	free(fl);
	img->flush = NULL;
}

bool qcow_flush_running(const struct qcow_image *img)
{
	return img->flush && img->flush->step != FLUSH_IDLE;
}

int qcow_refuse_while_flushing(struct qcow_image *img)
{
	if (!qcow_flush_running(img))
		return 0;
	return qcow_busy(img, QCOW_WAIT_FLUSH, "metadata write-back waits for the flush in progress");
}

/* ------------------------------------------------- L1 and refcount table */

static struct table_view l1_view(struct qcow_image *img)
{
	return (struct table_view){ img->l1_table, img->l1_dirty, &img->l1_any_dirty,
				    img->l1_size, img->l1_table_offset, "L1 table" };
}

static struct table_view rt_view(struct qcow_image *img)
{
	return (struct table_view){ img->refcount_table, img->rt_dirty, &img->rt_any_dirty,
				    img->refcount_table_size, img->refcount_table_offset,
				    "refcount table" };
}

/* Room for a copy of the whole table: allocated again only after the table
 * grew, never while serving (a refcount table grows synchronously). */
static int copy_room(struct qcow_image *img, struct table_copy *tc, const struct table_view *v)
{
	size_t len = QCOW_ALIGN_UP(v->size * 8, img->cluster_size);
	size_t sectors = len / 512;
	void *p;

	if (len <= tc->len)
		return 0;
	if (posix_memalign(&p, 4096, len))
		return qcow_set_error(img, -ENOMEM, "out of memory for the %s's flush copy", v->name);
	free(tc->buf);
	free(tc->runs);
	tc->buf = p;
	tc->len = 0;
	tc->runs = calloc(sectors, sizeof(*tc->runs));
	if (!tc->runs)
		return qcow_set_error(img, -ENOMEM, "out of memory for the %s's flush copy", v->name);
	tc->len = len;
	return 0;
}

/* Is any entry in block b (block entries each) dirty? */
static bool block_dirty(const struct table_view *v, uint64_t b, uint64_t entries)
{
	uint64_t i = b * entries, end = QCOW_MIN(i + entries, v->size);

	for (; i < end; i++)
		if (v->dirty[i])
			return true;
	return false;
}

/* Copy the dirty entries, whole blocks, zeros past the last entry, and note
 * the runs of blocks to write. */
static int copy_snapshot(struct qcow_image *img, struct table_copy *tc, const struct table_view *v)
{
	uint64_t block = QCOW_MIN(QCOW_MAX(512U, img->file.dio_off_align), img->cluster_size);
	uint64_t per = block / 8, nb = QCOW_DIV_ROUND_UP(v->size, per), b, i;
	uint64_t *copy;
	int ret;

	tc->nb_runs = 0;
	tc->offset = v->offset;
	if (!*v->any_dirty)
		return 0;
	ret = copy_room(img, tc, v);
	if (ret < 0)
		return ret;
	copy = (uint64_t *)tc->buf;
	for (b = 0; b < nb; b++) {
		struct table_run *r = tc->nb_runs ? &tc->runs[tc->nb_runs - 1] : NULL;

		if (!block_dirty(v, b, per))
			continue;
		for (i = b * per; i < (b + 1) * per; i++)
			copy[i] = i < v->size ? htobe64(v->entries[i]) : 0;
		if (r && r->start + r->len == b * block)
			r->len += block;
		else
			tc->runs[tc->nb_runs++] = (struct table_run){ b * block, block };
	}
	memset(v->dirty, 0, v->size);
	*v->any_dirty = false;
	return 0;
}

/* Runs from `from` on not written: their entries are dirty again (the
 * handle has failed, but what memory says must not claim otherwise). */
static void copy_unwritten(const struct table_copy *tc, const struct table_view *v, unsigned from)
{
	unsigned r;

	for (r = from; r < tc->nb_runs; r++) {
		uint64_t i = tc->runs[r].start / 8;
		uint64_t end = QCOW_MIN(i + tc->runs[r].len / 8, v->size);

		if (i < end) {
			memset(v->dirty + i, 1, end - i);
			*v->any_dirty = true;
		}
	}
}

static void copy_io(const struct table_copy *tc, unsigned i, struct qcow_io *io)
{
	io->op = QCOW_IO_WRITE;
	io->buf = tc->buf + tc->runs[i].start;
	io->len = tc->runs[i].len;
	io->offset = tc->offset + tc->runs[i].start;
}

/* ------------------------------------------------------------- the steps */

/* Step s's own writes: its tables (step 4's once its frees are applied). */
static unsigned tables_of(const struct qcow_flush *fl, enum flush_step s)
{
	switch (s) {
	case FLUSH_REFCOUNTS:
	case FLUSH_FREES:
		return fl->nb_rc;
	case FLUSH_REFTABLE:
		return fl->rt.nb_runs;
	case FLUSH_L2:
		return fl->nb_l2;
	case FLUSH_L1:
		return fl->l1.nb_runs;
	default:
		return 0;
	}
}

/* The current step's own writes. */
static unsigned own_writes(const struct qcow_flush *fl)
{
	return tables_of(fl, fl->step);
}

/* The current step's IOs: its own, then the bitmaps' part of it. */
static unsigned step_writes(const struct qcow_flush *fl)
{
	return own_writes(fl) + fl->bitmap_ios;
}

/* The bitmaps' part of step s (bitmap_keep.c B1, B3, B4), if any. */
static bool bitmap_part(enum flush_step s, enum qcow_bitmaps_step *b)
{
	switch (s) {
	case FLUSH_BITMAPS_MARK:
		*b = QCOW_BITMAPS_MARK;
		return true;
	case FLUSH_BITMAPS_READS:
		*b = QCOW_BITMAPS_READS;
		return true;
	case FLUSH_REFCOUNTS:
		*b = QCOW_BITMAPS_PIECES;
		return true;
	case FLUSH_L2:
		*b = QCOW_BITMAPS_TABLES;
		return true;
	case FLUSH_BITMAPS_CLEAR:
		*b = QCOW_BITMAPS_CLEAR;
		return true;
	default:
		return false;
	}
}

static bool step_needs_fsync(struct qcow_image *img, const struct qcow_flush *fl)
{
	bool bitmap_writes = fl->bitmap_ios > 0 && fl->step != FLUSH_BITMAPS_READS;

	switch (fl->step) {
	case FLUSH_REFCOUNTS:
		return fl->nb_rc || fl->owed_data || fl->rt.nb_runs || bitmap_writes;
	case FLUSH_REFTABLE:
		return fl->rt.nb_runs > 0;
	case FLUSH_L2:
		return fl->nb_l2 || qcow_sync_needed(img, QCOW_SYNC_L2) || bitmap_writes;
	case FLUSH_L1:
		return fl->l1.nb_runs > 0;
	case FLUSH_FREES:
		return fl->nb_frees > 0;
	case FLUSH_LAST:
		return !fl->synced && fl->owed_any;
	default:
		return bitmap_writes;
	}
}

/* IO i of the current step. */
static int step_io(struct qcow_image *img, struct qcow_flush *fl, unsigned i, struct qcow_io *io)
{
	unsigned own = own_writes(fl);
	enum qcow_bitmaps_step b;

	if (i >= own && bitmap_part(fl->step, &b)) {
		qcow_bitmaps_step_io(img, b, i - own, io);
		return 0;
	}
	switch (fl->step) {
	case FLUSH_REFCOUNTS:
	case FLUSH_FREES:
		return qcow_cache_snapshot_io(img->refcount_cache, fl->rc[i], io);
	case FLUSH_L2:
		return qcow_cache_snapshot_io(img->l2_cache, fl->l2[i], io);
	case FLUSH_REFTABLE:
		copy_io(&fl->rt, i, io);
		return 0;
	default:
		copy_io(&fl->l1, i, io);
		return 0;
	}
}

/* Writes [from, to) of the current step are over (written or not). */
static void step_release(struct qcow_image *img, struct qcow_flush *fl, unsigned from,
			 unsigned to, bool written)
{
	unsigned i;

	to = QCOW_MIN(to, own_writes(fl));	/* the bitmaps' IOs hold nothing */
	for (i = from; i < to; i++) {
		if (fl->step == FLUSH_REFCOUNTS || fl->step == FLUSH_FREES)
			qcow_cache_snapshot_done(img->refcount_cache, fl->rc[i], written);
		else if (fl->step == FLUSH_L2)
			qcow_cache_snapshot_done(img->l2_cache, fl->l2[i], written);
	}
	if (fl->step == FLUSH_REFTABLE && !written) {
		struct table_view v = rt_view(img);

		copy_unwritten(&fl->rt, &v, from);
	}
	if (fl->step == FLUSH_L1 && !written) {
		struct table_view v = l1_view(img);

		copy_unwritten(&fl->l1, &v, from);
	}
}

/*
 * Step 4's reads: the refcount blocks the frees change that the cache
 * lacks, as many as it can load at once (at most max). A block it cannot
 * take now (being loaded, no clean slot) is left to the apply, which reads
 * it itself or leaves its frees for the next flush.
 */
static unsigned frees_loads(struct qcow_image *img, struct qcow_flush *fl, struct qcow_io *ios,
			    unsigned max)
{
	uint64_t prev = UINT64_MAX;
	size_t i;
	void *blk;

	fl->nb_loads = 0;
	for (i = 0; i < fl->nb_frees && fl->nb_loads < max; i++) {
		uint64_t ti = (img->pending_free[i] >> img->cluster_bits) >> img->refcount_block_bits;
		struct qcow_meta_read *ld = &fl->loads[fl->nb_loads];
		int64_t off;
		int ret;

		if (ti == prev)
			continue;
		prev = ti;
		off = qcow_refblock_offset(img, ti);
		if (off <= 0)
			continue;
		ret = qcow_cache_get_nowait(img->refcount_cache, (uint64_t)off, &blk, ld);
		if (ret == 0)
			qcow_cache_put(img->refcount_cache, blk);
		if (ret != -EAGAIN)
			continue;
		ios[fl->nb_loads++] = (struct qcow_io){ .op = QCOW_IO_READ, .buf = ld->buf,
							 .len = ld->len, .offset = ld->offset };
	}
	if (fl->nb_loads)
		fl->batch = BATCH_LOADS;
	return fl->nb_loads;
}

static void frees_loaded(struct qcow_image *img, struct qcow_flush *fl, int result)
{
	unsigned i;

	for (i = 0; i < fl->nb_loads; i++)
		qcow_cache_load_done(img->refcount_cache, &fl->loads[i], result);
	if (result < 0)
		fl->error = qcow_set_error(img, result, "reading refcount blocks failed: %s",
					   strerror(-result));
	fl->nb_loads = 0;
}

/* Will the free of the cluster at off leave it unused (refcount 1 now)?
 * Only a block the cache holds is looked at (the loads just ran). */
static bool unused_after_free(struct qcow_image *img, uint64_t off)
{
	uint64_t c = off >> img->cluster_bits, ti = c >> img->refcount_block_bits;
	int64_t blk_off = qcow_refblock_offset(img, ti);
	void *blk = blk_off > 0 ? qcow_cache_peek(img->refcount_cache, (uint64_t)blk_off) : NULL;
	bool one;

	if (!blk)
		return false;
	one = qcow_refblock_get(img, blk, c & ((1ULL << img->refcount_block_bits) - 1)) == 1;
	qcow_cache_put(img->refcount_cache, blk);
	return one;
}

/*
 * Step 4's punches, before the frees are applied: the clusters these frees
 * leave unused go back to the file system (as qemu does for a discard).
 * Steps 2 and 3 made durable the metadata that dropped their last
 * reference, and they keep refcount 1 until the apply, so nothing
 * allocates them meanwhile (nor packs a compressed stream into one: the
 * packing cluster is dropped first). Crash right after a punch: a cluster
 * of zeros that nothing uses leaks. Consecutive clusters go in one punch;
 * a file system that cannot punch keeps the bytes.
 */
static unsigned frees_punches(struct qcow_image *img, struct qcow_flush *fl, struct qcow_io *ios,
			      unsigned max)
{
	uint64_t cs = img->cluster_size, off;
	unsigned n = 0;

	if (!img->file.ops->punch)
		return 0;
	img->free_byte_offset = 0;
	while (fl->punch_pos < fl->nb_frees && n < max) {
		off = img->pending_free[fl->punch_pos++];
		if (!unused_after_free(img, off))
			continue;
		if (n && ios[n - 1].offset + ios[n - 1].len == off) {
			ios[n - 1].len += cs;
			continue;
		}
		ios[n++] = (struct qcow_io){ .op = QCOW_IO_PUNCH, .offset = off, .len = cs };
	}
	if (n)
		fl->batch = BATCH_PUNCHES;
	return n;
}

/* Step 4's writes begin: apply the frees queued before the start, copy the blocks. */
static int frees_apply(struct qcow_image *img, struct qcow_flush *fl)
{
	int ret;

	fl->frees = FREES_APPLIED;
	fl->nb_rc = 0;
	if (!fl->nb_frees)
		return 0;
	ret = qcow_apply_deferred_frees(img, fl->nb_frees);
	/* a block a request is loading: what it would decrement stays queued
	 * for the next flush (a free applied late only leaks meanwhile) */
	if (ret < 0 && ret != -EBUSY)
		return ret;
	fl->nb_rc = qcow_cache_snapshot(img->refcount_cache, fl->rc);
	return 0;
}

/* Step s begins. */
static void step_begin(struct qcow_image *img, struct qcow_flush *fl, enum flush_step s)
{
	enum qcow_bitmaps_step b;

	fl->step = s;
	fl->cursor = 0;
	fl->step_synced = false;
	if (s == FLUSH_FREES) {
		fl->frees = fl->nb_frees ? FREES_LOAD : FREES_APPLIED;
		fl->nb_rc = 0;
	}
	fl->bitmap_ios = bitmap_part(s, &b) ? qcow_bitmaps_step_begin(img, b) : 0;
}

/* The step is over, its writes and fsync done: the next begins. */
static void step_next(struct qcow_image *img, struct qcow_flush *fl)
{
	enum qcow_bitmaps_step b;

	if (bitmap_part(fl->step, &b))
		qcow_bitmaps_step_end(img, b);
	step_begin(img, fl, fl->step + 1);
}

/* Give back everything the snapshot still holds, unwritten. */
static void release_all(struct qcow_image *img, struct qcow_flush *fl)
{
	struct table_view rt = rt_view(img), l1 = l1_view(img);
	unsigned i;

	step_release(img, fl, fl->cursor, step_writes(fl), false);
	if (fl->step < FLUSH_REFCOUNTS) {
		for (i = 0; i < fl->nb_rc; i++)
			qcow_cache_snapshot_done(img->refcount_cache, fl->rc[i], false);
	}
	if (fl->step < FLUSH_REFTABLE)
		copy_unwritten(&fl->rt, &rt, 0);
	if (fl->step < FLUSH_L2) {
		for (i = 0; i < fl->nb_l2; i++)
			qcow_cache_snapshot_done(img->l2_cache, fl->l2[i], false);
	}
	if (fl->step < FLUSH_L1)
		copy_unwritten(&fl->l1, &l1, 0);
}

/* The flush is over: 0, or its error (the handle fails). */
static int flush_end(struct qcow_image *img, struct qcow_flush *fl)
{
	int err = fl->error;

	if (err)
		release_all(img, fl);
	qcow_bitmaps_flush_end(img);
	fl->step = FLUSH_IDLE;
	fl->batch = BATCH_NONE;
	fl->error = 0;
	return err ? qcow_fail_handle(img, err, "flush") : 0;
}

/* ----------------------------------------------------------------- API */

int qcow_flush_start(struct qcow_image *img, unsigned flags)
{
	struct qcow_flush *fl = img->flush;
	struct table_view rt, l1;
	int ret, bitmaps;

	if (img->read_only)
		return 1;
	ret = qcow_refuse_if_failed(img);
	if (ret < 0)
		return ret;
	if (!fl)
		return qcow_set_error(img, -EINVAL, "flush on an image opened without flush state");
	qcow_bitmaps_ask(img, flags);
	if (fl->step != FLUSH_IDLE)
		return qcow_busy(img, QCOW_WAIT_FLUSH, "a flush is in progress already");
	bitmaps = qcow_bitmaps_flush_start(img);
	if (bitmaps < 0) {
		qcow_bitmaps_flush_end(img);
		return qcow_fail_handle(img, bitmaps, "flush");
	}
	rt = rt_view(img);
	l1 = l1_view(img);
	ret = copy_snapshot(img, &fl->rt, &rt);
	if (ret == 0)
		ret = copy_snapshot(img, &fl->l1, &l1);
	if (ret < 0)
		return qcow_fail_handle(img, ret, "flush");
	fl->nb_rc = qcow_cache_snapshot(img->refcount_cache, fl->rc);
	fl->nb_l2 = qcow_cache_snapshot(img->l2_cache, fl->l2);
	fl->nb_frees = img->nb_pending_free;
	fl->owed_any = qcow_sync_needed(img, QCOW_SYNC_ANY);
	fl->owed_data = qcow_sync_needed(img, QCOW_SYNC_DATA);
	fl->synced = false;
	fl->error = 0;
	fl->batch = BATCH_NONE;
	if (!fl->nb_rc && !fl->rt.nb_runs && !fl->nb_l2 && !fl->l1.nb_runs && !fl->nb_frees &&
	    !fl->owed_any && !bitmaps)
		return 1;
	step_begin(img, fl, FLUSH_BITMAPS_MARK);
	return 0;
}

/* Hand out up to max of the step's remaining writes. */
static int hand_out_writes(struct qcow_image *img, struct qcow_flush *fl, struct qcow_io *ios,
			   unsigned max)
{
	unsigned n = QCOW_MIN(max, step_writes(fl) - fl->cursor), i;
	int ret = qcow_refuse_write(img);

	for (i = 0; ret == 0 && i < n; i++) {
		ret = step_io(img, fl, fl->cursor + i, &ios[i]);
		if (ret == 0 && ios[i].op == QCOW_IO_WRITE)
			qcow_note_write(img, ios[i].offset, ios[i].len);
	}
	if (ret < 0) {
		fl->error = ret;
		return ret;
	}
	fl->cursor += n;
	fl->batch_n = n;
	fl->batch = BATCH_WRITES;
	return (int)n;
}

int qcow_flush_next(struct qcow_image *img, struct qcow_io *ios, unsigned max)
{
	struct qcow_flush *fl = img->flush;
	int ret;

	if (!qcow_flush_running(img) || fl->batch != BATCH_NONE || !max)
		return qcow_set_error(img, -EINVAL, "flush step asked for out of turn");
	for (;;) {
		if (fl->error || fl->step == FLUSH_OVER)
			return flush_end(img, fl);
		if (fl->step == FLUSH_FREES && fl->frees == FREES_LOAD) {
			fl->frees = FREES_PUNCH;
			fl->punch_pos = 0;
			if (frees_loads(img, fl, ios, max))
				return (int)fl->nb_loads;
		}
		if (fl->step == FLUSH_FREES && fl->frees == FREES_PUNCH) {
			ret = (int)frees_punches(img, fl, ios, max);
			if (ret)
				return ret;
			fl->frees = FREES_APPLY;
		}
		if (fl->step == FLUSH_FREES && fl->frees == FREES_APPLY) {
			ret = frees_apply(img, fl);
			if (ret < 0)
				fl->error = ret;
			continue;
		}
		if (fl->cursor < step_writes(fl)) {
			ret = hand_out_writes(img, fl, ios, max);
			if (ret < 0)
				continue;
			return ret;
		}
		if (!fl->step_synced && step_needs_fsync(img, fl)) {
			memcpy(fl->covers, img->events, sizeof(fl->covers));
			ios[0] = (struct qcow_io){ .op = QCOW_IO_FSYNC };
			fl->batch = BATCH_FSYNC;
			return 1;
		}
		step_next(img, fl);
	}
}

void qcow_flush_io_done(struct qcow_image *img, int result)
{
	struct qcow_flush *fl = img->flush;

	if (!qcow_flush_running(img))
		return;
	if (fl->batch == BATCH_LOADS) {
		frees_loaded(img, fl, result);
	} else if (fl->batch == BATCH_PUNCHES) {
		/* advisory: the clusters are free either way */
	} else if (fl->batch == BATCH_WRITES) {
		step_release(img, fl, fl->cursor - fl->batch_n, fl->cursor, result == 0);
		if (result < 0) {
			fl->error = qcow_set_error(img, result, "%s metadata failed: %s",
						   fl->step == FLUSH_BITMAPS_READS ? "reading" :
						   "writing", strerror(-result));
		}
	} else if (fl->batch == BATCH_FSYNC && result == 0) {
		qcow_sync_covered(img, fl->covers);
		fl->synced = fl->step_synced = true;
	} else if (fl->batch == BATCH_FSYNC) {
		/* design 9.7: the kernel may have dropped what it could not write */
		qcow_fail_handle(img, result, "fsync");
		fl->error = qcow_set_error(img, result, "fsync failed: %s; further writes and "
					   "flushes are refused until the image is reopened",
					   strerror(-result));
	}
	fl->batch = BATCH_NONE;
}

/* ------------------------------------------------ an fsync of one's own */

_Static_assert(sizeof(((struct qcow_sync *)0)->covers) == QCOW_SYNC_KINDS * sizeof(uint64_t),
	       "an own fsync records every kind of event");

/*
 * Has the running flush written every table of steps 1-3 (refcount
 * blocks, refcount table entries, L2 tables, L1 sectors), none of those
 * writes in flight, none left to hand out? Step 4's writes only apply
 * frees, which nothing waits for.
 */
static bool tables_written(const struct qcow_flush *fl)
{
	enum flush_step s;

	if (fl->step > FLUSH_L1)
		return true;
	if (fl->step < FLUSH_REFCOUNTS || fl->batch == BATCH_WRITES || fl->cursor < step_writes(fl))
		return false;
	for (s = fl->step + 1; s <= FLUSH_L1; s++)
		if (tables_of(fl, s))
			return false;
	return true;
}

/*
 * What a new flush would make durable is in the file already, only not
 * synced, when nothing is dirty (what requests changed since the running
 * flush's start would be dirty) and the running flush's tables are
 * written: the tables it snapshotted, in its order, and every older one
 * before them. An fsync issued now covers it all, so the caller need not
 * wait for the running flush's end, and then a flush of its own. Frees
 * queued meanwhile are not its concern: what dropped those references
 * is dirty, or was evicted (refused while a flush runs).
 */
bool qcow_sync_begin(struct qcow_image *img, unsigned flags, struct qcow_sync *s)
{
	if (!qcow_flush_running(img) || img->fatal_error || !tables_written(img->flush) ||
	    qcow_metadata_unwritten(img))
		return false;
	if ((flags & QCOW_FLUSH_BITMAPS) && !qcow_bitmaps_settled(img))
		return false;
	memcpy(s->covers, img->events, sizeof(s->covers));
	return true;
}

int qcow_sync_end(struct qcow_image *img, const struct qcow_sync *s, int result)
{
	if (result == 0) {
		qcow_sync_covered(img, s->covers);
		return 0;
	}
	/* design 9.7: the kernel may have dropped what it could not write */
	qcow_fail_handle(img, result, "fsync");
	return qcow_set_error(img, result, "fsync failed: %s; further writes and flushes are "
			      "refused until the image is reopened", strerror(-result));
}

/* ------------------------------------------------------- the sync flush */

int qcow_io_do(struct qcow_image *img, const struct qcow_io *io)
{
	switch (io->op) {
	case QCOW_IO_FSYNC:
		return img->file.ops->flush(img->file.ctx);
	case QCOW_IO_READ:
		return img->file.ops->pread(img->file.ctx, io->buf, io->len, io->offset);
	case QCOW_IO_PUNCH:
		return img->file.ops->punch ? img->file.ops->punch(img->file.ctx, io->offset, io->len)
					    : 0;
	default:
		return img->file.ops->pwrite(img->file.ctx, io->buf, io->len, io->offset);
	}
}

/* One batch with the file ops: 0 or the first failure. */
static int run_batch(struct qcow_image *img, const struct qcow_io *ios, int n)
{
	int i, ret = 0;

	for (i = 0; ret == 0 && i < n; i++)
		ret = qcow_io_do(img, &ios[i]);
	return ret;
}

static int flush_sync(struct qcow_image *img, unsigned flags)
{
	struct qcow_io ios[16];
	int ret, n;

	ret = qcow_flush_start(img, flags);
	if (ret == 1)
		return 0;
	if (ret < 0)
		return ret;
	while ((n = qcow_flush_next(img, ios, 16)) > 0)
		qcow_flush_io_done(img, run_batch(img, ios, n));
	return n;
}

int qcow_flush(struct qcow_image *img)
{
	return flush_sync(img, 0);
}

int qcow_guest_flush(struct qcow_image *img)
{
	return flush_sync(img, QCOW_FLUSH_BITMAPS);
}
