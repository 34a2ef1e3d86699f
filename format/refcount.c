// SPDX-License-Identifier: MIT
/*
 * Refcounts and the cluster allocator.
 *
 * The refcount table lives in memory (host order); refcount blocks go
 * through img->refcount_cache in their on-disk form. A cluster whose
 * refcount block does not exist yet has refcount 0.
 *
 * Ordering rules kept here (see internal.h):
 *  - a new refcount block is written and made durable before the table
 *    entry that points at it is written; a nowait call (img->need) writes
 *    neither: the entry is marked (rt_dirty) and the next flush writes
 *    the block in its step 1 and the entry in step 1b (flush.c), or the
 *    next synchronous write commits them first (qcow_refcount_commit);
 *  - a grown refcount table (with the blocks that describe it) is written
 *    and made durable before the header points at it, and the header is
 *    durable before the old table is freed (deferred, at the next flush);
 *  - decrements normally arrive through qcow_free_deferred() and are only
 *    applied by a flush once the metadata that dropped the reference
 *    is durable. Until then the cluster keeps a non-zero refcount, which is
 *    what stops the allocator from handing it out again.
 */
#include <inttypes.h>
#include <stdlib.h>

#include "internal.h"

/* Table indices whose entries were set in memory but not yet written. */
struct new_blocks {
	uint64_t *ti;
	size_t n, cap;
};

static uint64_t blk_entries(const struct qcow_image *img)
{
	return 1ULL << img->refcount_block_bits;
}

static uint64_t max_clusters(const struct qcow_image *img)
{
	return QCOW_MAX_HOST_OFFSET >> img->cluster_bits;
}

uint64_t qcow_refcount_max(const struct qcow_image *img)
{
	if (img->refcount_bits >= 64)
		return UINT64_MAX;
	return (1ULL << img->refcount_bits) - 1;
}

uint64_t qcow_refblock_get(const struct qcow_image *img, const void *block, uint64_t index)
{
	const uint8_t *b = block;
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;

	switch (img->refcount_order) {
	case 0: case 1: case 2: {
		/* Sub-byte widths are packed from the least significant bit. */
		uint64_t bit = index << img->refcount_order;

		return (b[bit / 8] >> (bit % 8)) & ((1U << img->refcount_bits) - 1);
	}
	case 3:
		return b[index];
	case 4:
		memcpy(&v16, b + index * 2, 2);
		return be16toh(v16);
	case 5:
		memcpy(&v32, b + index * 4, 4);
		return be32toh(v32);
	default:
		memcpy(&v64, b + index * 8, 8);
		return be64toh(v64);
	}
}

void qcow_refblock_set(const struct qcow_image *img, void *block, uint64_t index, uint64_t value)
{
	uint8_t *b = block;
	uint16_t v16;
	uint32_t v32;
	uint64_t v64;

	switch (img->refcount_order) {
	case 0: case 1: case 2: {
		uint64_t bit = index << img->refcount_order;
		unsigned mask = ((1U << img->refcount_bits) - 1) << (bit % 8);

		b[bit / 8] = (uint8_t)((b[bit / 8] & ~mask) | (((unsigned)value << (bit % 8)) & mask));
		return;
	}
	case 3:
		b[index] = (uint8_t)value;
		return;
	case 4:
		v16 = htobe16((uint16_t)value);
		memcpy(b + index * 2, &v16, 2);
		return;
	case 5:
		v32 = htobe32((uint32_t)value);
		memcpy(b + index * 4, &v32, 4);
		return;
	default:
		v64 = htobe64(value);
		memcpy(b + index * 8, &v64, 8);
		return;
	}
}

/* ------------------------------------------------------------ the table */

int qcow_refcount_init(struct qcow_image *img)
{
	uint64_t bytes = img->refcount_table_size * 8;
	uint64_t i;
	int ret;

	img->refcount_table = calloc(img->refcount_table_size ? img->refcount_table_size : 1, 8);
	img->rt_dirty = calloc(img->refcount_table_size ? img->refcount_table_size : 1, 1);
	img->rt_any_dirty = false;
	if (!img->refcount_table || !img->rt_dirty)
		return qcow_set_error(img, -ENOMEM, "out of memory for the refcount table");
	ret = qcow_pread(img, img->refcount_table, bytes, img->refcount_table_offset);
	if (ret < 0)
		return ret;
	for (i = 0; i < img->refcount_table_size; i++)
		img->refcount_table[i] = be64toh(img->refcount_table[i]);
	img->free_cluster_index = 0;
	return 0;
}

void qcow_refcount_free(struct qcow_image *img)
{
	free(img->refcount_table);
	img->refcount_table = NULL;
	free(img->rt_dirty);
	img->rt_dirty = NULL;
	img->rt_any_dirty = false;
	free(img->pending_free);
	img->pending_free = NULL;
	img->nb_pending_free = 0;
	img->pending_free_cap = 0;
}

/* Offset of the refcount block for table index ti: 0 when there is none,
 * -EIO when the entry is not a valid offset (checked before any use). */
int64_t qcow_refblock_offset(struct qcow_image *img, uint64_t ti)
{
	uint64_t e;

	if (ti >= img->refcount_table_size)
		return 0;
	e = img->refcount_table[ti];
	if (!e)
		return 0;
	if ((e & QCOW_REFT_RESERVED_MASK) || e >= QCOW_MAX_HOST_OFFSET ||
	    (e & (img->cluster_size - 1)))
		return qcow_signal_corruption(img, "refcount table entry %" PRIu64
					      " holds an invalid offset 0x%" PRIx64, ti, e);
	return (int64_t)e;
}

int qcow_refcount_get(struct qcow_image *img, uint64_t cluster_index, uint64_t *refcount)
{
	uint64_t ti = cluster_index >> img->refcount_block_bits;
	int64_t off = qcow_refblock_offset(img, ti);
	void *blk;
	int ret;

	*refcount = 0;
	if (off <= 0)
		return (int)off;
	ret = qcow_cache_get(img->refcount_cache, (uint64_t)off, &blk);
	if (ret < 0)
		return ret;
	*refcount = qcow_refblock_get(img, blk, cluster_index & (blk_entries(img) - 1));
	qcow_cache_put(img->refcount_cache, blk);
	return 0;
}

/* ------------------------------------------------------- free space search */

/*
 * Find nb contiguous clusters with refcount 0 at or after start. Clusters
 * without a refcount block count as free. *first_free gets the first free
 * cluster seen (so the caller can keep free_cluster_index tight).
 *
 * In a nowait call only the first block is left to the caller to load: a
 * search through more blocks than the cache holds would otherwise evict,
 * with each load, a block the next try starts with, and never end.
 */
static int find_free_range(struct qcow_image *img, uint64_t start, uint64_t nb,
			   uint64_t *out, uint64_t *first_free)
{
	uint64_t ci = start, run_start = start, run = 0, limit = max_clusters(img);
	uint64_t mask = blk_entries(img) - 1;
	int ret = 0;

	*first_free = UINT64_MAX;
	while (run < nb) {
		uint64_t ti = ci >> img->refcount_block_bits, blk_end, n;
		int64_t off;
		void *blk;

		if (ci >= limit || nb - run > limit - ci)
			return qcow_set_error(img, -ENOSPC, "no room for %" PRIu64
					      " clusters below the maximum host offset", nb);
		off = qcow_refblock_offset(img, ti);
		if (off < 0)
			return (int)off;
		blk_end = (ti + 1) << img->refcount_block_bits;
		n = blk_end - ci;
		if (off == 0) {
			n = QCOW_MIN(n, nb - run);
			/* No block: everything it would describe is free. */
			if (*first_free == UINT64_MAX)
				*first_free = ci;
			run += n;
			ci += n;
			continue;
		}
		/*
		 * A nowait call leaves its first block to the caller, and reads
		 * any other itself: left to the caller, a search through more
		 * blocks than the cache holds, or a second search in one call (a
		 * new refcount block's home), would evict with every load the
		 * block the next try starts from, and never end.
		 */
		if (img->rc_load_left) {
			img->rc_load_left = false;
			ret = qcow_cache_pin(img->refcount_cache, (uint64_t)off, &blk);
		} else {
			ret = qcow_cache_get(img->refcount_cache, (uint64_t)off, &blk);
		}
		if (ret < 0)
			return ret;
		for (; n > 0 && run < nb; n--, ci++) {
			if (qcow_refblock_get(img, blk, ci & mask) == 0) {
				if (*first_free == UINT64_MAX)
					*first_free = ci;
				run++;
			} else {
				run = 0;
				run_start = ci + 1;
			}
		}
		qcow_cache_put(img->refcount_cache, blk);
	}
	*out = run_start;
	return 0;
}

/* --------------------------------------------------------- table growth */

/* Clusters for a table of entries entries and the blocks covering
 * [first, first + table + blocks): the blocks are part of what they cover. */
static void growth_layout(const struct qcow_image *img, uint64_t entries,
			  uint64_t *t_clusters, uint64_t *b_clusters)
{
	uint64_t pb = blk_entries(img), t, b = 0, nb;

	t = QCOW_DIV_ROUND_UP(entries * 8, img->cluster_size);
	for (;;) {
		nb = QCOW_DIV_ROUND_UP(t + b, pb);
		if (nb == b)
			break;
		b = nb;
	}
	*t_clusters = t;
	*b_clusters = b;
}

/* Size a new table with at least want entries that also has entries for its
 * own blocks starting at index first_ti. Returns entries, 0 if too large. */
static uint64_t growth_size(const struct qcow_image *img, uint64_t want, uint64_t first_ti,
			    uint64_t *t, uint64_t *b)
{
	uint64_t max_entries = QCOW_MAX_REFTABLE_BYTES / 8;

	for (;;) {
		if (want > max_entries)
			return 0;
		growth_layout(img, want, t, b);
		if (first_ti + *b <= *t * img->cluster_size / 8)
			return *t * img->cluster_size / 8;
		want = first_ti + *b;
	}
}

/* The new table (old entries + entries for the new blocks) and the new
 * blocks, laid out contiguously from cluster p. */
static void build_growth(struct qcow_image *img, uint8_t *buf, uint64_t p, uint64_t t,
			 uint64_t b)
{
	uint64_t pb = blk_entries(img), first_ti = p >> img->refcount_block_bits, i;
	uint64_t *table = (uint64_t *)buf;

	for (i = 0; i < img->refcount_table_size; i++)
		table[i] = htobe64(img->refcount_table[i]);
	for (i = 0; i < b; i++)
		table[first_ti + i] = htobe64((p + t + i) << img->cluster_bits);
	for (i = 0; i < t + b; i++) {
		uint8_t *blk = buf + (t + i / pb) * img->cluster_size;

		qcow_refblock_set(img, blk, i % pb, 1);
	}
}

static int write_reftable_header(struct qcow_image *img, uint64_t offset, uint32_t clusters)
{
	int ret;
	uint8_t buf[12];
	uint64_t o = htobe64(offset);
	uint32_t c = htobe32(clusters);

	memcpy(buf, &o, 8);
	memcpy(buf + 8, &c, 4);
	/* One small write inside the first sector: atomic on any disk. */
	ret = qcow_pwrite(img, buf, sizeof(buf),
			  offsetof(struct qcow_header_v2, refcount_table_offset));
	/* failed, it may still have landed: which table is live is unknown now
	 * (see qcow_header_write) */
	if (ret < 0 && !img->fatal_error)
		qcow_fail_handle(img, ret, "header write");
	return ret;
}

/* The in-memory copy of the grown table, made before anything is written so
 * that running out of memory cannot leave memory and disk disagreeing. */
static uint64_t *new_table(const struct qcow_image *img, uint64_t p, uint64_t t, uint64_t b,
			   uint64_t entries)
{
	uint64_t first_ti = p >> img->refcount_block_bits, i;
	uint64_t *nt = calloc(entries, 8);

	if (!nt)
		return NULL;
	memcpy(nt, img->refcount_table, img->refcount_table_size * 8);
	for (i = 0; i < b; i++)
		nt[first_ti + i] = (p + t + i) << img->cluster_bits;
	return nt;
}

/* Switch to the new table in memory; the old table's clusters are freed at
 * the next flush, once the header pointing away from them is durable. */
static void install_table(struct qcow_image *img, uint64_t *nt, uint8_t *nd, uint64_t p,
			  uint64_t t, uint64_t entries)
{
	uint64_t old_off = img->refcount_table_offset;
	uint64_t old_bytes = (uint64_t)img->refcount_table_clusters * img->cluster_size;

	free(img->refcount_table);
	free(img->rt_dirty);
	img->refcount_table = nt;
	img->rt_dirty = nd;		/* all of it written: nothing dirty */
	img->rt_any_dirty = false;
	img->refcount_table_size = entries;
	img->refcount_table_offset = p << img->cluster_bits;
	img->refcount_table_clusters = (uint32_t)t;
	/* Failing to queue the free only leaks the old table. */
	qcow_free_deferred(img, old_off, old_bytes);
}

/*
 * Grow the refcount table so it has an entry need_ti. The new table and the
 * blocks describing it go to fresh clusters past everything the current table
 * can describe (and past min_cluster), so nothing in use can be there.
 */
static int grow_reftable(struct qcow_image *img, uint64_t need_ti, uint64_t min_cluster)
{
	uint64_t pb = blk_entries(img), t, b, entries, want, p, *nt;
	uint8_t *buf, *nd;
	int ret = qcow_refuse_while_flushing(img);

	if (ret < 0)
		return ret;
	p = QCOW_MAX(img->refcount_table_size << img->refcount_block_bits,
		     QCOW_ALIGN_UP(min_cluster, pb));
	if (p >= max_clusters(img) || need_ti >= max_clusters(img))
		return qcow_set_error(img, -ENOSPC, "image too large for its refcount table");
	want = QCOW_MAX(need_ti + 1, img->refcount_table_size + img->refcount_table_size / 2);
	entries = growth_size(img, want, p >> img->refcount_block_bits, &t, &b);
	if (!entries)
		entries = growth_size(img, need_ti + 1, p >> img->refcount_block_bits, &t, &b);
	if (!entries || p + t + b > max_clusters(img))
		return qcow_set_error(img, -EFBIG, "refcount table would exceed %llu bytes",
				      QCOW_MAX_REFTABLE_BYTES);
	buf = calloc(t + b, img->cluster_size);
	nt = new_table(img, p, t, b, entries);
	nd = calloc(entries, 1);
	if (!buf || !nt || !nd) {
		free(buf);
		free(nt);
		free(nd);
		return qcow_set_error(img, -ENOMEM, "out of memory growing the refcount table");
	}
	build_growth(img, buf, p, t, b);
	/* (entries a nowait call left unwritten are committed first: qcow_pwrite) */
	ret = qcow_pwrite(img, buf, (t + b) * img->cluster_size, p << img->cluster_bits);
	free(buf);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret == 0)
		ret = write_reftable_header(img, p << img->cluster_bits, (uint32_t)t);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret < 0) {
		free(nt);
		free(nd);
		return ret;
	}
	install_table(img, nt, nd, p, t, entries);
	img->refcount_growths++;
	return 0;
}

/* ------------------------------------------------------ new refcount blocks */

static int record_new(struct new_blocks *nbk, uint64_t ti)
{
	if (nbk->n == nbk->cap) {
		size_t cap = nbk->cap ? nbk->cap * 2 : 8;
		uint64_t *p = realloc(nbk->ti, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		nbk->ti = p;
		nbk->cap = cap;
	}
	nbk->ti[nbk->n++] = ti;
	return 0;
}

/* Undo the in-memory side of blocks whose table entries never got written.
 * Increments they caused in other blocks stay: leaked clusters, not errors. */
static void revert_new(struct qcow_image *img, struct new_blocks *nbk)
{
	size_t i;

	for (i = 0; i < nbk->n; i++) {
		uint64_t off = img->refcount_table[nbk->ti[i]];

		img->refcount_table[nbk->ti[i]] = 0;
		img->rt_dirty[nbk->ti[i]] = 0;
		qcow_cache_forget(img->refcount_cache, off);
	}
	nbk->n = 0;
}

/* One pass: write the entries whose blocks lie in ranges already
 * described on disk (all that are left, when none does: no order can
 * help then). How many were written, or -errno. */
static int commit_pass(struct qcow_image *img, bool all)
{
	uint64_t ti, home, e;
	int n = 0, ret = 0;

	for (ti = 0; ret == 0 && ti < img->refcount_table_size; ti++) {
		if (img->rt_dirty[ti] != 1)
			continue;
		home = (img->refcount_table[ti] >> img->cluster_bits) >> img->refcount_block_bits;
		if (!all && home != ti && home < img->refcount_table_size && img->rt_dirty[home])
			continue;	/* a later pass */
		e = htobe64(img->refcount_table[ti]);
		ret = qcow_pwrite(img, &e, 8, img->refcount_table_offset + ti * 8);
		if (ret == 0) {
			img->rt_dirty[ti] = 2;	/* written in this pass */
			n++;
		}
	}
	for (ti = 0; ti < img->refcount_table_size; ti++)
		if (img->rt_dirty[ti] == 2)
			img->rt_dirty[ti] = 0;
	return ret < 0 ? ret : n;
}

int qcow_refcount_commit(struct qcow_image *img)
{
	int ret;

	if (!img->rt_any_dirty)
		return 0;
	img->rt_committing = true;
	/* blocks durable first, then the table entries pointing at them */
	ret = qcow_cache_writeback(img->refcount_cache);
	if (ret == 0)
		ret = qcow_fsync(img);
	/*
	 * Then the entries, in passes, each made durable before the next: an
	 * entry whose block lies in another new block's range goes only once
	 * that one's entry is durable (the power-cut test found both landing
	 * out of order: the second block's cluster in use with refcount 0).
	 * The last fsync comes before anything else is written: called from
	 * qcow_pwrite, the write that follows may be the L2 table that uses
	 * the block's clusters, its own fsync done already.
	 */
	while (ret == 0 && memchr(img->rt_dirty, 1, img->refcount_table_size)) {
		ret = commit_pass(img, false);
		if (ret == 0)
			ret = commit_pass(img, true);
		if (ret >= 0)
			ret = qcow_fsync(img);
	}
	img->rt_committing = false;
	if (ret < 0)
		return ret;
	img->rt_any_dirty = false;
	return 0;
}

/*
 * The new blocks' table entries: written now (blocks durable first), or in
 * a nowait call only marked, for the next flush or synchronous write.
 */
static int commit_new(struct qcow_image *img, struct new_blocks *nbk)
{
	size_t i;
	int ret = 0;

	if (!nbk->n)
		return 0;
	for (i = 0; i < nbk->n; i++)
		img->rt_dirty[nbk->ti[i]] = 1;
	img->rt_any_dirty = true;
	if (!img->need)
		ret = qcow_refcount_commit(img);
	if (ret < 0) {
		revert_new(img, nbk);
		return ret;
	}
	img->refcount_growths += nbk->n;
	nbk->n = 0;
	return 0;
}

/* Put a block for table index ti at cluster c (self: c is covered by it). */
static int new_block(struct qcow_image *img, uint64_t ti, uint64_t c, bool self,
		     struct new_blocks *nbk)
{
	uint64_t off = c << img->cluster_bits;
	void *blk;
	int ret;

	ret = record_new(nbk, ti);
	if (ret < 0)
		return qcow_set_error(img, ret, "out of memory allocating a refcount block");
	ret = qcow_cache_get_empty(img->refcount_cache, off, &blk);
	if (ret < 0) {
		nbk->n--;
		return ret;
	}
	if (self)
		qcow_refblock_set(img, blk, c & (blk_entries(img) - 1), 1);
	qcow_cache_mark_dirty(img->refcount_cache, blk);
	qcow_cache_put(img->refcount_cache, blk);
	img->refcount_table[ti] = off;
	if (c == img->free_cluster_index)
		img->free_cluster_index = c + 1;
	return 0;
}

static int update_range(struct qcow_image *img, uint64_t start, uint64_t nb, int64_t addend);

/* Is table index tj's block new, its entry not written yet? */
static bool block_is_new(const struct qcow_image *img, const struct new_blocks *nbk, uint64_t tj)
{
	size_t i;

	for (i = 0; i < nbk->n; i++)
		if (nbk->ti[i] == tj)
			return true;
	return img->rt_dirty[tj] != 0;
}

/*
 * Find a home for the block of table index ti, never inside [lo, hi) (the
 * clusters the caller is about to use). Returns 1 with *grow_ti set when
 * the only free cluster is beyond the table: the caller grows it. (Not
 * -EAGAIN: in a nowait call that is a refcount block for the caller to
 * load, and taken for this it left the load hanging.) Returns 2 in a
 * nowait call when the only home is described by another new block: its
 * entry must be durable before this one's, which only a flush between the
 * two can promise (qcow_refcount_commit orders them itself).
 */
static int place_block(struct qcow_image *img, uint64_t ti, uint64_t lo, uint64_t hi,
		       struct new_blocks *nbk, uint64_t *grow_ti)
{
	for (;;) {
		uint64_t c, ff, tj;
		int64_t off;
		int ret;

		ret = find_free_range(img, img->free_cluster_index, 1, &c, &ff);
		if (ret == 0 && c >= lo && c < hi)
			ret = find_free_range(img, hi, 1, &c, &ff);
		if (ret < 0)
			return ret;
		tj = c >> img->refcount_block_bits;
		if (tj >= img->refcount_table_size) {
			*grow_ti = tj;
			return 1;
		}
		off = qcow_refblock_offset(img, tj);
		if (off < 0)
			return (int)off;
		if (off == 0) {
			/* c is not covered yet: a block for its own range goes there. */
			ret = new_block(img, tj, c, true, nbk);
			if (ret < 0 || tj == ti)
				return ret;
			continue;
		}
		if (img->need && block_is_new(img, nbk, tj))
			return 2;
		ret = update_range(img, c, 1, 1);
		if (ret < 0)
			return ret;
		return new_block(img, ti, c, false, nbk);
	}
}

/* Make sure table indices first..last (all inside the table) have blocks. */
static int create_blocks(struct qcow_image *img, uint64_t first, uint64_t last,
			 uint64_t lo, uint64_t hi)
{
	struct new_blocks nbk = { 0 };
	uint64_t ti = first, grow_ti = 0;
	int ret = qcow_refuse_while_flushing(img);

	if (ret < 0)
		return ret;

	while (ti <= last) {
		int64_t off = qcow_refblock_offset(img, ti);

		if (off < 0) {
			ret = (int)off;
			break;
		}
		if (off > 0) {
			ti++;
			continue;
		}
		ret = place_block(img, ti, lo, hi, &nbk, &grow_ti);
		if (ret == 2) {
			/* keep what is made, for the flush to write; then again */
			ret = commit_new(img, &nbk);
			if (ret == 0)
				ret = qcow_busy(img, QCOW_WAIT_WRITEBACK, "refcount block for table "
						"index %llu: its home is described by a block the "
						"next flush writes", (unsigned long long)ti);
			break;
		}
		if (ret == 1) {
			/* The new table must not reference blocks not yet on disk
			 * (in a nowait call grow_reftable's first write commits them). */
			ret = commit_new(img, &nbk);
			if (ret == 0)
				ret = grow_reftable(img, grow_ti, hi);
		}
		if (ret < 0)
			break;
	}
	if (ret == 0)
		ret = commit_new(img, &nbk);
	else
		revert_new(img, &nbk);
	free(nbk.ti);
	return ret;
}

/* --------------------------------------------------------------- updates */

/* A cluster's refcount reached 0: forget any cached L2 table there and let
 * the allocator look at it again. */
static void cluster_freed(struct qcow_image *img, uint64_t ci)
{
	if (img->l2_cache)
		qcow_cache_forget(img->l2_cache, ci << img->cluster_bits);
	if (ci < img->free_cluster_index)
		img->free_cluster_index = ci;
}

/* Apply addend to the entries of one block; stops at the first entry that
 * would overflow/underflow. Returns entries done, and *err. */
static uint64_t update_block(struct qcow_image *img, void *blk, uint64_t ci, uint64_t n,
			     int64_t addend, int *err)
{
	uint64_t mask = blk_entries(img) - 1, max = qcow_refcount_max(img);
	uint64_t mag = addend < 0 ? -(uint64_t)addend : (uint64_t)addend, i;

	*err = 0;
	for (i = 0; i < n; i++) {
		uint64_t old = qcow_refblock_get(img, blk, (ci + i) & mask), val;

		if (addend > 0 && old > max - mag) {
			*err = qcow_set_error(img, -ERANGE, "refcount of cluster %" PRIu64
					      " would exceed %" PRIu64, ci + i, max);
			break;
		}
		if (addend < 0 && old < mag) {
			*err = qcow_signal_corruption(img, "refcount of cluster %" PRIu64
						      " would drop below 0 (is %" PRIu64 ")",
						      ci + i, old);
			break;
		}
		val = addend > 0 ? old + mag : old - mag;
		qcow_refblock_set(img, blk, (ci + i) & mask, val);
		if (val == 0)
			cluster_freed(img, ci + i);
	}
	if (i > 0)
		qcow_cache_mark_dirty(img->refcount_cache, blk);
	return i;
}

/* A block for table index ti, never placed inside [lo, hi). */
static int ensure_block(struct qcow_image *img, uint64_t ti, uint64_t lo, uint64_t hi)
{
	int ret;

	if (ti >= img->refcount_table_size) {
		ret = grow_reftable(img, ti, hi);
		if (ret < 0)
			return ret;
	}
	return create_blocks(img, ti, ti, lo, hi);
}

/*
 * Add addend to the refcounts of clusters [start, start + nb). All or
 * nothing: on failure the part already done is undone. Missing blocks are
 * created outside the range (its clusters are about to be used).
 */
static int update_range(struct qcow_image *img, uint64_t start, uint64_t nb, int64_t addend)
{
	uint64_t ci = start, end = start + nb;
	int ret = 0;

	while (ci < end) {
		uint64_t ti = ci >> img->refcount_block_bits;
		int64_t off = qcow_refblock_offset(img, ti);
		uint64_t n, done;
		void *blk;

		if (off == 0 && addend < 0) {
			ret = qcow_signal_corruption(img, "refcount of cluster %" PRIu64
						     " would drop below 0 (no refcount block)", ci);
			break;
		}
		if (off == 0) {
			ret = ensure_block(img, ti, start, end);
			if (ret < 0)
				break;
			continue;
		}
		if (off < 0) {
			ret = (int)off;
			break;
		}
		ret = qcow_cache_get(img->refcount_cache, (uint64_t)off, &blk);
		if (ret < 0)
			break;
		n = QCOW_MIN(end, (ti + 1) << img->refcount_block_bits) - ci;
		done = update_block(img, blk, ci, n, addend, &ret);
		qcow_cache_put(img->refcount_cache, blk);
		ci += done;
		if (ret < 0)
			break;
	}
	if (ret < 0 && ci > start)
		update_range(img, start, ci - start, -addend);
	return ret;
}

/* Cluster range touching [offset, offset + length), checked for overflow. */
static int byte_range(struct qcow_image *img, uint64_t offset, uint64_t length,
		      uint64_t *first, uint64_t *nb)
{
	if (offset >= QCOW_MAX_HOST_OFFSET || length > QCOW_MAX_HOST_OFFSET - offset)
		return qcow_set_error(img, -EINVAL, "refcount update of %" PRIu64
				      " bytes at offset 0x%" PRIx64 " is out of range", length, offset);
	*first = offset >> img->cluster_bits;
	*nb = QCOW_DIV_ROUND_UP(offset + length, img->cluster_size) - *first;
	return 0;
}

int qcow_refcount_update(struct qcow_image *img, uint64_t offset, uint64_t length,
			 int64_t addend)
{
	uint64_t first = 0, nb = 0;
	int ret;

	if (length == 0 || addend == 0)
		return 0;
	ret = byte_range(img, offset, length, &first, &nb);
	if (ret < 0)
		return ret;
	return update_range(img, first, nb, addend);
}

/* ------------------------------------------------------------ allocation */

/* Blocks for every cluster of [c, c + nb). *changed: new clusters were taken
 * (for blocks or a table), so the caller must search again. */
static int cover_range(struct qcow_image *img, uint64_t c, uint64_t nb, bool *changed)
{
	uint64_t first = c >> img->refcount_block_bits;
	uint64_t last = (c + nb - 1) >> img->refcount_block_bits, ti;
	int ret;

	*changed = false;
	if (last >= img->refcount_table_size) {
		*changed = true;
		return grow_reftable(img, last, 0);
	}
	for (ti = first; ti <= last; ti++) {
		int64_t off = qcow_refblock_offset(img, ti);

		if (off < 0)
			return (int)off;
		if (off == 0)
			break;
	}
	if (ti > last)
		return 0;
	*changed = true;
	ret = create_blocks(img, ti, last, 0, 0);
	return ret;
}

int64_t qcow_alloc_clusters(struct qcow_image *img, uint64_t nb)
{
	uint64_t c = 0, ff = 0;
	unsigned tries;
	bool changed = true;
	int ret;

	if (nb == 0 || nb > max_clusters(img))
		return qcow_set_error(img, -EINVAL, "cannot allocate %" PRIu64 " clusters", nb);
	/* Each round adds blocks or table space, which only shrinks what the
	 * next round can need; a handful of rounds always suffices. */
	for (tries = 0; changed; tries++) {
		if (tries > 1000)
			return qcow_set_error(img, -EIO, "cluster allocator did not converge");
		ret = find_free_range(img, img->free_cluster_index, nb, &c, &ff);
		if (ret == 0)
			ret = cover_range(img, c, nb, &changed);
		if (ret < 0)
			return ret;
	}
	ret = update_range(img, c, nb, 1);
	if (ret < 0)
		return ret;
	img->free_cluster_index = ff == c ? c + nb : ff;
	img->clusters_allocated += nb;
	return (int64_t)(c << img->cluster_bits);
}

/* Can size bytes go at off, the free byte after the last compressed
 * cluster: in the rest of its cluster, or spanning into the next one if
 * that is free?  Its cluster must take one reference more. */
static bool bytes_fit(struct qcow_image *img, uint64_t off, uint64_t size)
{
	uint64_t cs = img->cluster_size, rc = 0, next = QCOW_ALIGN_UP(off, cs);

	if (qcow_refcount_get(img, off >> img->cluster_bits, &rc) < 0 || !rc ||
	    rc >= qcow_refcount_max(img))
		return false;
	if ((off & (cs - 1)) + size <= cs)
		return true;
	return next >> img->cluster_bits < max_clusters(img) &&
	       qcow_refcount_get(img, next >> img->cluster_bits, &rc) == 0 && !rc;
}

int64_t qcow_alloc_bytes(struct qcow_image *img, uint64_t size)
{
	uint64_t cs = img->cluster_size, off = img->free_byte_offset;
	int64_t c;
	int ret;

	if (!size || size > cs)
		return qcow_set_error(img, -EINVAL, "cannot allocate %" PRIu64 " bytes", size);
	if (off && bytes_fit(img, off, size)) {
		ret = qcow_refcount_update(img, off, size, 1);
		if (ret < 0)
			return ret;
		if (QCOW_ALIGN_UP(off, cs) < off + size)
			img->clusters_allocated++;	/* the next one, taken */
	} else {
		c = qcow_alloc_clusters(img, 1);
		if (c < 0)
			return c;
		off = (uint64_t)c;
	}
	img->free_byte_offset = (off + size) & (cs - 1) ? off + size : 0;
	return (int64_t)off;
}

/* ---------------------------------------------------------------- punches */

/* Punch [first, first + nb) clusters; advisory. */
static void punch_run(struct qcow_image *img, uint64_t first, uint64_t nb)
{
	if (nb)
		img->file.ops->punch(img->file.ctx, first << img->cluster_bits,
				     nb << img->cluster_bits);
}

void qcow_punch_unused(struct qcow_image *img)
{
	uint64_t size, end, c, rc, run = 0;

	if (!img->file.ops->punch || img->file.ops->get_size(img->file.ctx, &size) < 0)
		return;
	end = size >> img->cluster_bits;
	for (c = 1; c < end; c++) {
		if (qcow_refcount_get(img, c, &rc) < 0)
			return;
		if (rc == 0) {
			run++;
			continue;
		}
		punch_run(img, c - run, run);
		run = 0;
	}
	punch_run(img, c - run, run);
}

/* -------------------------------------------------------- deferred frees */

int qcow_free_deferred(struct qcow_image *img, uint64_t offset, uint64_t length)
{
	uint64_t first = 0, nb = 0, i;
	int ret;

	if (length == 0)
		return 0;
	ret = byte_range(img, offset, length, &first, &nb);
	if (ret < 0)
		return ret;
	if (nb > SIZE_MAX / 16 - img->nb_pending_free)
		return qcow_set_error(img, -ENOMEM, "too many pending frees");
	if (img->nb_pending_free + nb > img->pending_free_cap) {
		size_t cap = QCOW_MAX(img->pending_free_cap * 2, img->nb_pending_free + nb);
		uint64_t *p = realloc(img->pending_free, cap * sizeof(*p));

		if (!p)
			return qcow_set_error(img, -ENOMEM, "out of memory queueing frees");
		img->pending_free = p;
		img->pending_free_cap = cap;
	}
	for (i = 0; i < nb; i++)
		img->pending_free[img->nb_pending_free++] = (first + i) << img->cluster_bits;
	return 0;
}

int qcow_apply_deferred_frees(struct qcow_image *img, size_t n)
{
	size_t i = 0, j, all = img->nb_pending_free;
	int ret = 0;

	img->free_byte_offset = 0;	/* its cluster may be freed now */
	if (n > all)
		n = all;
	while (i < n) {
		/* Consecutive clusters go in one update. */
		for (j = i + 1; j < n && img->pending_free[j] ==
		     img->pending_free[j - 1] + img->cluster_size; j++)
			;
		ret = update_range(img, img->pending_free[i] >> img->cluster_bits, j - i, -1);
		if (ret < 0)
			break;
		i = j;
	}
	/* Keep what was not applied for the next try. */
	memmove(img->pending_free, img->pending_free + i, (all - i) * sizeof(uint64_t));
	img->nb_pending_free = all - i;
	return ret;
}
