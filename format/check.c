// SPDX-License-Identifier: MIT
/*
 * Consistency check, repair and refcount rebuild.
 *
 * The check does not trust the engine's caches or in-memory tables: it reads
 * every structure from the file, counts how often each host cluster is
 * referenced (the "expected" refcount) and compares that with the refcounts
 * stored in the image. Its verdicts follow qemu-img check's rules (see
 * qemu's block/qcow2-refcount.c), so both tools call the same images clean,
 * corrupt or leaking.
 *
 * Hostile images cannot make it crash, allocate without bound or loop for
 * ever:
 *  - memory is two 32-bit counters and four bits per cluster of the file;
 *  - every distinct L2 table is read once per pass however many L1 entries
 *    point at it: its references are applied with a multiplicity instead
 *    (at most 65535 per table; more are reported, not followed);
 *  - the L1 and bitmap tables read in one pass may add up to at most the
 *    file size plus one maximal L1 table; anything beyond is reported, and
 *    refcounts are then left alone (unread tables may own clusters);
 *  - a table is rewritten only where no header, refcount, snapshot or
 *    bitmap structure shares its clusters.
 *
 * A repair runs as a sequence of passes: count (report what is wrong); fix
 * bad L1/L2 entries (reserved bits, misaligned or past end of file, or
 * pointing into metadata: dropped); fix refcounts (leak repair in place, or
 * a complete rebuild when a refcount is too low or the refcount structure is
 * broken); fix COPIED flags; and a final count that says what is left.
 * Not repaired: snapshot table entries, refcount overflows (as qemu-img).
 *
 * The active L1 table's place is read from the header on disk, not from
 * the engine: a check open accepts a header whose L1 table lies past the
 * end of the file or in the header cluster (format/header.c), and the check
 * reports it (qemu-img check's verdict). Such an L1 table is lost: the L2
 * tables and data it should lead to look leaked, and freeing them would
 * destroy what a manual recovery could still find. So a repair then writes
 * nothing at all, and the image stays corrupt (exit 2 in qcow-tool).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define CHK_CHUNK_ENTRIES      8192U            /* table entries per read */
#define CHK_WALK_MAX           0xffffU          /* references counted per L2 table */
#define CHK_MAX_CLUSTERS       (1ULL << 31)     /* as qemu: larger files are refused */
#define CHK_MAX_SNAPSHOT_EXTRA 1024U            /* as qemu */
#define CHK_MAX_SNAPSHOTS_SIZE (1024ULL * QCOW_MAX_SNAPSHOTS)
#define CHK_MAX_BITMAP_DIR     (64ULL << 20)
#define CHK_BME_OFFSET_MASK    0x00fffffffffffe00ULL
#define CHK_BME_RESERVED_MASK  0xff000000000001feULL
#define CHK_BME_ALL_ONES       1ULL
#define CHK_BITMAP_ENTRY_LEN   24U

enum chk_mode {
	CHK_COUNT,      /* count references and report problems */
	CHK_FIX,        /* rewrite the bad entries the last count found */
	CHK_REBUILD,    /* count references, refcount structures excluded */
};

struct chk {
	struct qcow_image *img;
	qcow_check_report_fn report;
	void *opaque;
	bool quiet;                 /* no report lines (recounts during repair) */
	enum chk_mode mode;
	struct qcow_check_result r; /* counts of the current pass */
	uint64_t file_size;
	uint64_t nb_clusters;       /* clusters of the file, last one partial */
	uint64_t nb_alloc;          /* entries of the per-cluster arrays */
	uint64_t nb_used;           /* clusters compared (nb_clusters or one more) */
	uint32_t *expected;         /* references found per host cluster */
	uint32_t *walks;            /* per L2 table: low 16 bits all refs, high 16 active */
	uint8_t *stored_one;        /* bit per cluster: stored refcount is 1 */
	uint8_t *meta;              /* bit per cluster: header, L1, refcount, snapshot
				     * or bitmap structures live there */
	uint8_t *meta_other;        /* bit per cluster: one that is not an L1 table does */
	uint8_t *overflowed;        /* bit per cluster: refcount overflow reported */
	uint32_t cap;               /* largest count an expected entry holds */
	uint64_t budget;            /* L1/bitmap table bytes left to read this pass */
	bool refstruct_bad;         /* refcount table or a block is unusable */
	bool refcount_low;          /* a stored refcount is below its references */
	bool changed;               /* a repair wrote to the image */
	bool may_set_copied;        /* stored refcounts are trusted for COPIED repair */
	uint64_t walk_errors;       /* check errors while reading the metadata */
	uint64_t skipped;           /* tables not walked (work bound reached) */
	uint64_t fixable;           /* entries a fix pass would rewrite */
	uint64_t fixed;             /* entries a fix pass rewrote */
	uint64_t *reftable;         /* stored refcount table, host order */
	uint64_t reftable_size;
	uint8_t *blk;               /* one refcount block */
	uint64_t blk_index;         /* reftable index held in blk, UINT64_MAX: none */
	bool blk_valid;             /* false: blk reads as zeros */
	uint64_t *tbl;              /* one L2 table */
	uint64_t *chunk;            /* part of an L1 or bitmap table */
	uint64_t l1_off;            /* the active L1 table, as the header on disk says */
	uint32_t l1_size;
	bool l1_lost;               /* it lies outside the file or in the header */
};

/* ------------------------------------------------------------ reporting */

static void chk_say(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void chk_say(struct chk *c, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	if (c->quiet || !c->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->report(c->opaque, line);
}

/* A corruption found by counting: reported once, counted mult times (once
 * per reference, as qemu counts it). Fix passes only repair, they do not
 * report the problem again. */
static void chk_err(struct chk *c, uint32_t mult, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void chk_err(struct chk *c, uint32_t mult, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	c->r.corruptions += mult;
	if (c->mode == CHK_FIX || c->quiet || !c->report)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->report(c->opaque, line);
}

static int chk_io_error(struct chk *c, int ret, const char *what, uint64_t off)
{
	c->r.check_errors++;
	chk_say(c, "ERROR: cannot read %s at 0x%" PRIx64 ": %s", what, off, strerror(-ret));
	return ret;
}

/* ------------------------------------------------------------- counting */

/* qemu's rule: a reference may reach into the cluster after end of file (the
 * last cluster may be written only partly) but not a whole cluster past it. */
static bool chk_beyond_eof(const struct chk *c, uint64_t off, uint64_t len)
{
	if (len > UINT64_MAX - off)
		return true;
	return off + len >= c->file_size + c->img->cluster_size;
}

static bool chk_bit(const uint8_t *map, uint64_t k)
{
	return map[k / 8] & (1U << (k % 8));
}

static void chk_set_bit(uint8_t *map, uint64_t k)
{
	map[k / 8] |= 1U << (k % 8);
}

static void chk_add(struct chk *c, uint64_t k, uint32_t mult)
{
	uint32_t cur = c->expected[k];

	if (mult <= c->cap - cur) {
		c->expected[k] = cur + mult;
		return;
	}
	/* Counted per failed increment like qemu, said once per cluster. */
	if (!chk_bit(c->overflowed, k))
		chk_err(c, mult - (c->cap - cur), "ERROR: overflow cluster offset=0x%" PRIx64,
			k << c->img->cluster_bits);
	else
		c->r.corruptions += mult - (c->cap - cur);
	chk_set_bit(c->overflowed, k);
	c->expected[k] = c->cap;
}

/*
 * Count mult more references to every cluster touching [off, off+len).
 * Returns false when the range lies past end of file: reported (in counting
 * passes) and not counted, the caller drops the reference when fixing.
 */
static bool chk_inc(struct chk *c, uint64_t off, uint64_t len, uint32_t mult)
{
	unsigned cb = c->img->cluster_bits;
	uint64_t k, last;

	if (len == 0 || mult == 0)
		return true;
	if (chk_beyond_eof(c, off, len)) {
		chk_err(c, mult, "ERROR: counting reference for region exceeding the end of "
			"the file by one cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
			off, len);
		return false;
	}
	if (c->mode == CHK_FIX)
		return true;
	/* off + len < file_size + cluster_size, so last <= nb_clusters. */
	last = (off + len - 1) >> cb;
	for (k = off >> cb; k <= last; k++)
		chk_add(c, k, mult);
	c->nb_used = QCOW_MAX(c->nb_used, last + 1);
	return true;
}

/* chk_inc for the structures the header leads to directly (and refcount
 * blocks, bitmap data): an L1 or L2 entry pointing into them is bogus, and
 * fix passes drop it instead of letting two users share the cluster. */
static bool chk_inc_meta(struct chk *c, uint64_t off, uint64_t len, bool l1)
{
	unsigned cb = c->img->cluster_bits;
	uint64_t k;

	if (!chk_inc(c, off, len, 1))
		return false;
	if (c->mode == CHK_FIX || len == 0)
		return true;
	for (k = off >> cb; k <= (off + len - 1) >> cb; k++) {
		chk_set_bit(c->meta, k);
		if (!l1)
			chk_set_bit(c->meta_other, k);
	}
	return true;
}

/* Does [off, off+len) touch such a structure (as of the last count)? Only
 * asked in fix passes, for ranges chk_inc accepted. */
static bool chk_hits_meta(const struct chk *c, uint64_t off, uint64_t len)
{
	unsigned cb = c->img->cluster_bits;
	uint64_t k;

	for (k = off >> cb; k <= (off + len - 1) >> cb; k++) {
		if (k < c->nb_alloc && chk_bit(c->meta, k))
			return true;
	}
	return false;
}

/* Does a data reference to [off, off+len) land on metadata: a top-level
 * structure or an L2 table? Such a reference is bogus (data is never
 * shared with metadata) and fix passes drop it. */
static bool chk_data_hits_meta(const struct chk *c, uint64_t off, uint64_t len)
{
	unsigned cb = c->img->cluster_bits;
	uint64_t k;

	if (c->mode != CHK_FIX)
		return false;
	for (k = off >> cb; k <= (off + len - 1) >> cb; k++) {
		if (k < c->nb_alloc && (chk_bit(c->meta, k) || c->walks[k]))
			return true;
	}
	return false;
}

/* May the L1 table at [off, off+len) be rewritten? Its place comes from the
 * header or snapshot table, so it wins against L2 tables or data that share
 * its clusters (those references are dropped), not against the header,
 * refcount, snapshot or bitmap structures. Two L1 tables sharing clusters
 * have the same entries, and the repairs (drop a bad entry, fix COPIED,
 * which only the active table uses) are right for both. */
static bool chk_l1_writable(const struct chk *c, uint64_t off, uint64_t len)
{
	unsigned cb = c->img->cluster_bits;
	uint64_t k;

	if (len == 0 || chk_beyond_eof(c, off, len))
		return false;
	for (k = off >> cb; k <= (off + len - 1) >> cb; k++) {
		if (k >= c->nb_alloc || chk_bit(c->meta_other, k))
			return false;
	}
	return true;
}

/* May the L2 table at off be rewritten? Not where a top-level structure
 * lives (the L1 entry pointing there is bogus and gets dropped). Sharing
 * with data or other L2 references is fine: the table's entries are what
 * every user sees, and only bad entries or COPIED flags are changed. */
static bool chk_l2_writable(const struct chk *c, uint64_t off)
{
	return !chk_hits_meta(c, off, c->img->cluster_size);
}

/* Entries of a table of `entries` at off that lie inside the file (the rest
 * reads as zero), charged against the pass's read budget. */
static void chk_table_in_file(struct chk *c, const char *what, uint64_t off,
			      uint64_t entries, uint64_t *in_file)
{
	uint64_t n = 0;

	if (off < c->file_size)
		n = QCOW_MIN(entries, QCOW_DIV_ROUND_UP(c->file_size - off, 8));
	if (n * 8 > c->budget) {
		chk_err(c, 1, "ERROR %s at 0x%" PRIx64 ": tables add up to more than the "
			"image file holds; not checked", what, off);
		c->skipped++;
		n = 0;
	}
	c->budget -= n * 8;
	*in_file = n;
}

static int chk_write(struct chk *c, const void *buf, size_t len, uint64_t off)
{
	int ret = qcow_pwrite(c->img, buf, len, off);

	if (ret < 0) {
		c->r.check_errors++;
		chk_say(c, "ERROR: cannot write at 0x%" PRIx64 ": %s", off, strerror(-ret));
		return ret;
	}
	c->changed = true;
	return 0;
}

/* ------------------------------------------------------ L1 and L2 tables */

static void chk_walk_add(struct chk *c, uint64_t l2, bool active)
{
	uint64_t k = l2 >> c->img->cluster_bits;
	uint32_t w = c->walks[k];

	/* Bounded work: further references are counted as corruptions only
	 * (said once per table). */
	if ((w & CHK_WALK_MAX) == CHK_WALK_MAX) {
		c->r.corruptions++;
		return;
	}
	c->walks[k] = w + 1 + (active ? 1U << 16 : 0);
	if ((w & CHK_WALK_MAX) == CHK_WALK_MAX - 1)
		chk_err(c, 0, "ERROR l2_offset=%" PRIx64 ": L2 table referenced %u times; "
			"further references are not followed", l2, CHK_WALK_MAX);
}

/* One L1 entry: count the L2 table it points at. Returns the entry as it
 * should be (bad parts dropped). */
static uint64_t chk_l1_entry(struct chk *c, uint64_t e, bool active)
{
	uint64_t cs = c->img->cluster_size, l2 = e & QCOW_L1E_OFFSET_MASK, good = e;

	if (e & QCOW_L1E_RESERVED_MASK) {
		chk_err(c, 1, "ERROR found L1 entry with reserved bits set: %" PRIx64, e);
		good &= ~QCOW_L1E_RESERVED_MASK;
	}
	if (!l2) {
		/* qemu's check walks such an entry as an L2 table at offset 0
		 * (the header): a corruption either way. */
		if (good)
			chk_err(c, 1, "ERROR L1 entry %" PRIx64 " has flags but no L2 table "
				"offset", e);
		return 0;
	}
	if (!chk_inc(c, l2, cs, 1))
		return 0;
	if (c->mode == CHK_FIX && chk_hits_meta(c, l2, cs))
		return 0;
	if (l2 & (cs - 1)) {
		/* qemu walks the misaligned table anyway; its contents are
		 * garbage, so only the corruption is counted here. */
		chk_err(c, 1, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; "
			"L1 entry corrupted", l2);
		return 0;
	}
	if (c->mode != CHK_FIX)
		chk_walk_add(c, l2, active);
	return good;
}

static void chk_l1_store(struct chk *c, uint64_t *raw, uint64_t idx, uint64_t val, bool active)
{
	struct qcow_image *img = c->img;

	chk_say(c, "Repairing L1 entry %" PRIu64 ": %" PRIx64 " -> %" PRIx64, idx,
		be64toh(*raw), val);
	*raw = htobe64(val);
	if (active && img->l1_table && idx < img->l1_size)
		img->l1_table[idx] = val;
}

/* Check (or in CHK_FIX mode repair) one chunk of an L1 table. */
static int chk_l1_chunk(struct chk *c, uint64_t l1_off, uint64_t first, uint64_t n,
			bool active, bool writable)
{
	uint64_t j, e, good;
	bool dirty = false;
	int ret;

	ret = qcow_pread(c->img, c->chunk, n * 8, l1_off + first * 8);
	if (ret < 0)
		return chk_io_error(c, ret, "L1 table", l1_off + first * 8);
	for (j = 0; j < n; j++) {
		e = be64toh(c->chunk[j]);
		good = chk_l1_entry(c, e, active);
		if (good == e)
			continue;
		c->fixable++;
		if (c->mode == CHK_FIX && writable) {
			chk_l1_store(c, &c->chunk[j], first + j, good, active);
			c->fixed++;
			dirty = true;
		}
	}
	if (!dirty)
		return 0;
	return chk_write(c, c->chunk, n * 8, l1_off + first * 8);
}

/* The active L1 table cannot be the real one (see the top of this file).
 * Counted like a table left unread: refcounts are then left alone. */
static void chk_l1_lost(struct chk *c, uint64_t off, const char *where)
{
	c->l1_lost = true;
	c->skipped++;
	if (c->mode != CHK_FIX)
		chk_say(c, "The active L1 table (offset 0x%" PRIx64 ", l1_size %" PRIu32 ") %s: "
			"the L2 tables and data it should reference cannot be found", off,
			c->l1_size, where);
}

/* Phase A: an L1 table and the L2 tables it points at (their entries are
 * walked later, once per distinct table). */
static int chk_l1(struct chk *c, uint64_t l1_off, uint32_t l1_size, bool active)
{
	uint64_t bytes = (uint64_t)l1_size * 8, in_file, i, n;
	bool writable;
	int ret;

	if (!chk_inc_meta(c, l1_off, bytes, true)) {
		if (active)
			chk_l1_lost(c, l1_off, "lies outside the file");
		return 0;
	}
	/* As qemu: the header is walked as if it were the table (its entries
	 * are garbage, and reported); nothing is repaired then. */
	if (active && l1_size && l1_off < c->img->cluster_size)
		chk_l1_lost(c, l1_off, "lies in the image header");
	chk_table_in_file(c, "L1 table", l1_off, l1_size, &in_file);
	writable = c->mode == CHK_FIX && chk_l1_writable(c, l1_off, bytes);
	for (i = 0; i < in_file; i += n) {
		n = QCOW_MIN((uint64_t)CHK_CHUNK_ENTRIES, in_file - i);
		ret = chk_l1_chunk(c, l1_off, i, n, active, writable);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Allocation statistics as qemu-img gathers them (active L1 only). */
static void chk_frag(struct chk *c, uint64_t off, uint32_t amult, uint64_t *next)
{
	if (!amult)
		return;
	c->r.allocated_clusters += amult;
	if (*next && off != *next)
		c->r.fragmented_clusters += amult;
	*next = off + c->img->cluster_size;
}

static uint64_t chk_l2_compressed(struct chk *c, uint64_t e, uint32_t mult, uint32_t amult)
{
	uint64_t good = e, coff, clen;

	if (e & QCOW_OFLAG_COPIED) {
		good &= ~QCOW_OFLAG_COPIED;
		qcow_decode_compressed(c->img, good, &coff, &clen);
		chk_err(c, mult, "ERROR: coffset=0x%" PRIx64 ": copied flag must never be "
			"set for compressed clusters", coff);
	}
	qcow_decode_compressed(c->img, good, &coff, &clen);
	if (!chk_inc(c, coff, clen, mult) || chk_data_hits_meta(c, coff, clen))
		good = 0;
	/* Compressed clusters count as fragmented, as in qemu-img. */
	c->r.allocated_clusters += amult;
	c->r.compressed_clusters += amult;
	c->r.fragmented_clusters += amult;
	return good;
}

/* One L2 entry, referenced mult times (amult of them from the active L1).
 * Returns the entry as it should be. */
static uint64_t chk_l2_entry(struct chk *c, uint64_t e, uint32_t mult, uint32_t amult,
			     uint64_t *next)
{
	uint64_t cs = c->img->cluster_size, off, good = e, drop;
	bool zero = e & QCOW_OFLAG_ZERO;

	if (e & QCOW_OFLAG_COMPRESSED)
		return chk_l2_compressed(c, e, mult, amult);
	if (e & QCOW_L2E_RESERVED_MASK) {
		chk_err(c, mult, "ERROR found l2 entry with reserved bits set: %" PRIx64, e);
		good &= ~QCOW_L2E_RESERVED_MASK;
	}
	off = e & QCOW_L2E_OFFSET_MASK;
	if (!off)
		return good;
	/* A dropped zero cluster keeps reading as zeros where v3 allows it. */
	drop = zero && c->img->version >= 3 ? QCOW_OFLAG_ZERO : 0;
	if (off & (cs - 1)) {
		chk_err(c, mult, "ERROR offset=%" PRIx64 ": %s cluster is not properly "
			"aligned; L2 entry corrupted.", off, zero ? "Preallocated" : "Data");
		good = drop;
	}
	chk_frag(c, off, amult, next);
	if (!chk_inc(c, off, cs, mult) || chk_data_hits_meta(c, off, cs))
		good = drop;
	return good;
}

/* Phase B: the entries of the L2 table at cluster k. */
static int chk_l2(struct chk *c, uint64_t k, uint32_t mult, uint32_t amult)
{
	struct qcow_image *img = c->img;
	uint64_t off = k << img->cluster_bits, next = 0, j, e, good, dirty = 0;
	bool writable = c->mode == CHK_FIX && chk_l2_writable(c, off);
	int ret;

	ret = qcow_pread(img, c->tbl, img->cluster_size, off);
	if (ret < 0)
		return chk_io_error(c, ret, "L2 table", off);
	for (j = 0; j < img->l2_size; j++) {
		e = be64toh(c->tbl[j]);
		good = chk_l2_entry(c, e, mult, amult, &next);
		if (good == e)
			continue;
		c->fixable++;
		if (!writable)
			continue;
		chk_say(c, "Repairing L2 entry %" PRIu64 " of table 0x%" PRIx64 ": %" PRIx64
			" -> %" PRIx64, j, off, e, good);
		c->tbl[j] = htobe64(good);
		dirty++;
	}
	c->fixed += dirty;
	if (!dirty)
		return 0;
	return chk_write(c, c->tbl, img->cluster_size, off);
}

static int chk_l2_tables(struct chk *c)
{
	uint64_t k;
	uint32_t w;
	int ret;

	for (k = 0; k < c->nb_alloc; k++) {
		w = c->walks[k];
		if (!w)
			continue;
		ret = chk_l2(c, k, w & CHK_WALK_MAX, w >> 16);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ------------------------------------------------------------ snapshots */

/* Read up to 63 bytes of a name for messages; problems leave it empty. */
static void chk_read_name(struct chk *c, char *out, size_t outlen, uint64_t off, uint16_t len)
{
	size_t n = QCOW_MIN((size_t)len, outlen - 1);

	out[0] = 0;
	if (off >= c->file_size || qcow_pread(c->img, out, n, off) < 0)
		return;
	out[n] = 0;
}

/* A snapshot table qemu cannot read: it stops the check there with a check
 * error. Counting stops too, and so does any repair that would free
 * clusters (a rebuild or leak repair could free what later entries use). */
static int chk_snaptable_error(struct chk *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static int chk_snaptable_error(struct chk *c, const char *fmt, ...)
{
	char line[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	c->r.check_errors++;
	chk_say(c, "ERROR failed to read the snapshot table: %s", line);
	return 1;
}

/* Validate the snapshot entry h (index i, names id and name) and walk its
 * L1 table. */
static int chk_snapshot_l1(struct chk *c, const struct qcow_snapshot_header *h, uint32_t i,
			   const char *id, const char *name)
{
	uint64_t l1_off = be64toh(h->l1_table_offset);
	uint32_t l1_size = be32toh(h->l1_size);

	/* Version 3 wants the extra data up to the disk size field. */
	if (c->img->version >= 3 && be32toh(h->extra_data_size) < 16)
		chk_err(c, 1, "ERROR snapshot table entry %u is incomplete", i);
	if (l1_off & (c->img->cluster_size - 1)) {
		chk_err(c, 1, "ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": L1 table is not "
			"cluster aligned; snapshot table entry corrupted", id, name, l1_off);
		return 0;
	}
	if ((uint64_t)l1_size * 8 > QCOW_MAX_L1_BYTES) {
		chk_err(c, 1, "ERROR snapshot %s (%s) l1_size=%#" PRIx32 ": L1 table is too "
			"large; snapshot table entry corrupted", id, name, l1_size);
		return 0;
	}
	return chk_l1(c, l1_off, l1_size, false);
}

/* One snapshot table entry at *off: validate, walk its L1 table (if walk),
 * advance. Returns 1 when the table cannot be read. */
static int chk_snapshot(struct chk *c, uint32_t i, uint64_t start, uint64_t *off, bool walk)
{
	struct qcow_snapshot_header h;
	uint64_t p = *off;
	uint32_t extra;
	uint16_t id_len, name_len;
	char id[64], name[64];
	int ret;

	ret = qcow_pread(c->img, &h, sizeof(h), p);
	if (ret < 0)
		return chk_io_error(c, ret, "snapshot table", p);
	extra = be32toh(h.extra_data_size);
	id_len = be16toh(h.id_str_size);
	name_len = be16toh(h.name_size);
	if (extra > CHK_MAX_SNAPSHOT_EXTRA)
		return chk_snaptable_error(c, "Too much extra metadata in snapshot table "
					   "entry %u", i);
	p += sizeof(h) + extra;
	chk_read_name(c, id, sizeof(id), p, id_len);
	chk_read_name(c, name, sizeof(name), p + id_len, name_len);
	*off = p + id_len + name_len;
	if (*off - start > CHK_MAX_SNAPSHOTS_SIZE)
		return chk_snaptable_error(c, "Snapshot table is too big");
	return walk ? chk_snapshot_l1(c, &h, i, id, name) : 0;
}

static int chk_snapshots(struct chk *c)
{
	struct qcow_image *img = c->img;
	uint64_t start = img->snapshots_offset, off;
	uint32_t i;
	int pass, ret = 0;

	if (!img->nb_snapshots)
		return 0;
	/* As qemu: the whole table must parse before any snapshot is walked.
	 * Entries past end of file read as zeros; the size limit (checked
	 * per entry) bounds the work. */
	for (pass = 0; pass < 2; pass++) {
		for (i = 0, off = start; i < img->nb_snapshots; i++) {
			off = QCOW_ALIGN_UP(off, 8);
			ret = chk_snapshot(c, i, start, &off, pass == 1);
			if (ret)
				return ret < 0 ? ret : 0;
		}
	}
	chk_inc_meta(c, start, off - start, false);
	return 0;
}

/* -------------------------------------------------------------- bitmaps */

static const struct qcow_raw_ext *chk_find_ext(const struct qcow_image *img, uint32_t type)
{
	uint32_t i;

	for (i = 0; i < img->nb_unknown_exts; i++) {
		if (img->unknown_exts[i].type == type)
			return &img->unknown_exts[i];
	}
	return NULL;
}

static void chk_bitmap_entry(struct chk *c, uint64_t e)
{
	uint64_t off = e & CHK_BME_OFFSET_MASK;

	if ((e & CHK_BME_RESERVED_MASK) || (off && (e & CHK_BME_ALL_ONES)) ||
	    (off & (c->img->cluster_size - 1))) {
		chk_err(c, 1, "ERROR bitmap table entry %" PRIx64 " is invalid", e);
		return;
	}
	if (off)
		chk_inc_meta(c, off, c->img->cluster_size, false);
}

static int chk_bitmap_table(struct chk *c, uint64_t t_off, uint32_t t_size)
{
	uint64_t in_file, i, j, n;
	int ret;

	if (t_off & (c->img->cluster_size - 1)) {
		chk_err(c, 1, "ERROR bitmap table at 0x%" PRIx64 " is not cluster aligned", t_off);
		return 0;
	}
	if (!chk_inc_meta(c, t_off, (uint64_t)t_size * 8, false))
		return 0;
	chk_table_in_file(c, "bitmap table", t_off, t_size, &in_file);
	for (i = 0; i < in_file; i += n) {
		n = QCOW_MIN((uint64_t)CHK_CHUNK_ENTRIES, in_file - i);
		ret = qcow_pread(c->img, c->chunk, n * 8, t_off + i * 8);
		if (ret < 0)
			return chk_io_error(c, ret, "bitmap table", t_off + i * 8);
		for (j = 0; j < n; j++)
			chk_bitmap_entry(c, be64toh(c->chunk[j]));
	}
	return 0;
}

/* Walk the bitmap directory dir (len bytes) for nb bitmaps. */
static int chk_bitmap_dir(struct chk *c, const uint8_t *dir, uint64_t len, uint32_t nb)
{
	uint64_t p = 0, t_off, ent;
	uint32_t i, t_size, extra;
	uint16_t name_len;
	int ret;

	for (i = 0; i < nb; i++) {
		if (len - p < CHK_BITMAP_ENTRY_LEN) {
			chk_err(c, 1, "ERROR bitmap directory truncated after %u of %u entries",
				i, nb);
			return 0;
		}
		memcpy(&t_off, dir + p, 8);
		memcpy(&t_size, dir + p + 8, 4);
		memcpy(&name_len, dir + p + 18, 2);
		memcpy(&extra, dir + p + 20, 4);
		ent = QCOW_ALIGN_UP(CHK_BITMAP_ENTRY_LEN + (uint64_t)be32toh(extra) +
				    be16toh(name_len), 8);
		ret = chk_bitmap_table(c, be64toh(t_off), be32toh(t_size));
		if (ret < 0)
			return ret;
		if (ent > len - p)
			ent = len - p;
		p += ent;
	}
	return 0;
}

/* Persistent bitmaps (kept verbatim as an unknown extension) own clusters
 * too; qemu counts them only while the bitmaps autoclear bit is set. */
static int chk_bitmaps(struct chk *c)
{
	const struct qcow_raw_ext *x = chk_find_ext(c->img, QCOW_EXT_BITMAPS);
	uint64_t d_size, d_off, in_file;
	uint32_t nb;
	uint8_t *dir;
	int ret;

	if (!x || x->length < 24 || !(c->img->autoclear_features & QCOW_AUTOCLEAR_BITMAPS) ||
	    c->mode == CHK_FIX)
		return 0;
	memcpy(&nb, x->data, 4);
	memcpy(&d_size, x->data + 8, 8);
	memcpy(&d_off, x->data + 16, 8);
	nb = be32toh(nb);
	d_size = be64toh(d_size);
	d_off = be64toh(d_off);
	if (!nb || !chk_inc_meta(c, d_off, d_size, false))
		return 0;
	if (d_size > CHK_MAX_BITMAP_DIR) {
		chk_err(c, 1, "ERROR bitmap directory too large (%" PRIu64 " bytes)", d_size);
		return 0;
	}
	chk_table_in_file(c, "bitmap directory", d_off, QCOW_DIV_ROUND_UP(d_size, 8), &in_file);
	dir = calloc(1, d_size + 1);
	if (!dir) {
		c->r.check_errors++;
		return -ENOMEM;
	}
	ret = in_file ? qcow_pread(c->img, dir, QCOW_MIN(d_size, in_file * 8), d_off) : 0;
	if (ret < 0)
		ret = chk_io_error(c, ret, "bitmap directory", d_off);
	else if (in_file)
		ret = chk_bitmap_dir(c, dir, d_size, nb);
	free(dir);
	return ret;
}

/* ---------------------------------------------------- refcount structure */

static int chk_load_reftable(struct chk *c)
{
	struct qcow_image *img = c->img;
	uint64_t entries = (uint64_t)img->refcount_table_clusters * img->cluster_size / 8;
	uint64_t off = img->refcount_table_offset, in_file = 0, i;
	int ret;

	entries = QCOW_MIN(entries, QCOW_MAX_REFTABLE_BYTES / 8);
	free(c->reftable);
	c->reftable = calloc(entries ? entries : 1, 8);
	c->reftable_size = entries;
	c->blk_index = UINT64_MAX;
	if (!c->reftable)
		return -ENOMEM;
	if (off < c->file_size)
		in_file = QCOW_MIN(entries * 8, c->file_size - off);
	ret = in_file ? qcow_pread(img, c->reftable, in_file, off) : 0;
	if (ret < 0)
		return chk_io_error(c, ret, "refcount table", off);
	for (i = 0; i < entries; i++)
		c->reftable[i] = be64toh(c->reftable[i]);
	return 0;
}

/* Make blk hold the refcount block of reftable index bi (zeros when none). */
static int chk_load_refblock(struct chk *c, uint64_t bi)
{
	uint64_t off, cs = c->img->cluster_size;
	int ret;

	if (bi == c->blk_index)
		return 0;
	c->blk_index = bi;
	c->blk_valid = false;
	if (bi >= c->reftable_size)
		return 0;
	off = c->reftable[bi] & QCOW_REFT_OFFSET_MASK;
	/* As qemu: an unaligned block cannot be read (the clusters it covers
	 * become check errors), one past end of file reads as zeros. */
	if (off & (cs - 1)) {
		c->blk_index = UINT64_MAX;
		return -EIO;
	}
	if (!off || off >= c->file_size)
		return 0;
	ret = qcow_pread(c->img, c->blk, cs, off);
	if (ret < 0) {
		c->blk_index = UINT64_MAX;
		return ret;
	}
	c->blk_valid = true;
	return 0;
}

static int chk_stored(struct chk *c, uint64_t k, uint64_t *val)
{
	unsigned bits = c->img->refcount_block_bits;
	int ret = chk_load_refblock(c, k >> bits);

	if (ret < 0)
		return ret;
	*val = c->blk_valid ? qcow_refblock_get(c->img, c->blk, k & ((1ULL << bits) - 1)) : 0;
	return 0;
}

/* The refcount table and blocks reference themselves (qemu's check_refblocks). */
static void chk_refstruct(struct chk *c)
{
	struct qcow_image *img = c->img;
	uint64_t cs = img->cluster_size, i, e, off;

	chk_inc_meta(c, img->refcount_table_offset, (uint64_t)img->refcount_table_clusters * cs,
		     false);
	for (i = 0; i < c->reftable_size; i++) {
		e = c->reftable[i];
		off = e & QCOW_REFT_OFFSET_MASK;
		if (e & QCOW_REFT_RESERVED_MASK) {
			chk_err(c, 1, "ERROR refcount table entry %" PRIu64 " has reserved bits set",
				i);
		} else if (off & (cs - 1)) {
			chk_err(c, 1, "ERROR refcount block %" PRIu64 " is not cluster aligned; "
				"refcount table entry corrupted", i);
		} else if ((off >> img->cluster_bits) >= c->nb_used) {
			chk_err(c, 1, "ERROR refcount block %" PRIu64 " is outside image", i);
		} else if (off) {
			chk_inc_meta(c, off, cs, false);
			if (c->expected[off >> img->cluster_bits] == 1)
				continue;
			chk_err(c, 1, "ERROR refcount block %" PRIu64 " refcount=%" PRIu32, i,
				c->expected[off >> img->cluster_bits]);
		} else {
			continue;
		}
		c->refstruct_bad = true;
	}
}

static void chk_compare_one(struct chk *c, uint64_t k, uint64_t stored)
{
	uint32_t exp = c->expected[k];

	if (stored == 1)
		chk_set_bit(c->stored_one, k);
	if (stored == exp || (exp == UINT32_MAX && stored > exp))
		return;
	if (stored < exp) {
		chk_err(c, 1, "ERROR cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu32,
			k, stored, exp);
		c->refcount_low = true;
		return;
	}
	chk_say(c, "Leaked cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu32,
		k, stored, exp);
	c->r.leaks++;
}

/* Compare stored and expected refcounts of every cluster of the file. */
static void chk_compare(struct chk *c)
{
	uint64_t k, end, stored, highest = 0, per = 1ULL << c->img->refcount_block_bits;
	int ret;

	for (k = 0; k < c->nb_used; k++) {
		ret = chk_stored(c, k, &stored);
		if (ret < 0) {
			/* Counted per cluster, as qemu does; said once per block. */
			end = QCOW_MIN(QCOW_ALIGN_UP(k + 1, per), c->nb_used);
			c->r.check_errors += end - k;
			chk_say(c, "Can't get refcount for clusters %" PRIu64 "-%" PRIu64 ": %s",
				k, end - 1, strerror(-ret));
			c->blk_index = UINT64_MAX;
			k = end - 1;
			continue;
		}
		if (stored || c->expected[k])
			highest = k;
		chk_compare_one(c, k, stored);
	}
	c->r.image_end_offset = (highest + 1) << c->img->cluster_bits;
}

/* --------------------------------------------------------- COPIED flags */

/* Is the stored refcount of cluster k exactly 1? *val gets it when known. */
static bool chk_is_one(struct chk *c, uint64_t k, uint64_t *val)
{
	if (k < c->nb_used && chk_bit(c->stored_one, k)) {
		*val = 1;
		return true;
	}
	if (chk_stored(c, k, val) < 0)
		*val = UINT64_MAX;  /* unreadable: qemu skips the entry */
	return *val == 1;
}

static uint64_t chk_copied_entry(struct chk *c, uint64_t e, uint64_t off, bool l2,
				 uint64_t idx)
{
	uint64_t rc;
	bool one = chk_is_one(c, off >> c->img->cluster_bits, &rc);

	if (rc == UINT64_MAX || one == !!(e & QCOW_OFLAG_COPIED))
		return e;
	if (l2)
		chk_err(c, 1, "ERROR OFLAG_COPIED data cluster: l2_entry=%" PRIx64
			" refcount=%" PRIu64, e, rc);
	else
		chk_err(c, 1, "ERROR OFLAG_COPIED L2 cluster: l1_index=%" PRIu64
			" l1_entry=%" PRIx64 " refcount=%" PRIu64, idx, e, rc);
	/* Clearing COPIED only costs a copy on write; setting it allows writes
	 * in place, so only when the refcounts are known to be right. */
	if (one && !c->may_set_copied)
		return e;
	return one ? e | QCOW_OFLAG_COPIED : e & ~QCOW_OFLAG_COPIED;
}

static int chk_copied_l1_chunk(struct chk *c, uint64_t first, uint64_t n, bool fix)
{
	uint64_t l1_off = c->l1_off, j, e, good;
	bool dirty = false;
	int ret;

	ret = qcow_pread(c->img, c->chunk, n * 8, l1_off + first * 8);
	if (ret < 0)
		return chk_io_error(c, ret, "L1 table", l1_off + first * 8);
	for (j = 0; j < n; j++) {
		e = be64toh(c->chunk[j]);
		if (!(e & QCOW_L1E_OFFSET_MASK))
			continue;
		good = chk_copied_entry(c, e, e & QCOW_L1E_OFFSET_MASK, false, first + j);
		if (good != e && fix) {
			chk_l1_store(c, &c->chunk[j], first + j, good, true);
			dirty = true;
		}
	}
	return dirty ? chk_write(c, c->chunk, n * 8, l1_off + first * 8) : 0;
}

static bool chk_is_standard(uint64_t e)
{
	return !(e & QCOW_OFLAG_COMPRESSED) && (e & QCOW_L2E_OFFSET_MASK);
}

static int chk_copied_l2(struct chk *c, uint64_t k, uint32_t amult, bool fix)
{
	struct qcow_image *img = c->img;
	uint64_t off = k << img->cluster_bits, j, e, good, dirty = 0;
	int ret;

	fix = fix && chk_l2_writable(c, off);
	ret = qcow_pread(img, c->tbl, img->cluster_size, off);
	if (ret < 0)
		return chk_io_error(c, ret, "L2 table", off);
	for (j = 0; j < img->l2_size; j++) {
		e = be64toh(c->tbl[j]);
		if (!chk_is_standard(e))
			continue;
		good = chk_copied_entry(c, e, e & QCOW_L2E_OFFSET_MASK, true, j);
		c->r.corruptions += (uint64_t)(amult - 1) * (good != e);
		if (good != e && fix) {
			chk_say(c, "Repairing OFLAG_COPIED in L2 entry %" PRIu64 " of table 0x%"
				PRIx64, j, off);
			c->tbl[j] = htobe64(good);
			dirty++;
		}
	}
	return dirty ? chk_write(c, c->tbl, img->cluster_size, off) : 0;
}

/* Phase C: COPIED must be set exactly where the stored refcount is 1, in
 * the active L1 table and its L2 tables. Needs a counting pass before. */
static int chk_copied(struct chk *c, bool fix)
{
	uint64_t bytes = (uint64_t)c->l1_size * 8, in_file = 0, i, n, k;
	bool l1_fix = fix && chk_l1_writable(c, c->l1_off, bytes);
	int ret;

	c->may_set_copied = !c->walk_errors && !c->refcount_low && !c->refstruct_bad &&
			    !c->r.check_errors;

	if (c->l1_off < c->file_size)
		in_file = QCOW_MIN((uint64_t)c->l1_size,
				   QCOW_DIV_ROUND_UP(c->file_size - c->l1_off, 8));
	for (i = 0; i < in_file; i += n) {
		n = QCOW_MIN((uint64_t)CHK_CHUNK_ENTRIES, in_file - i);
		ret = chk_copied_l1_chunk(c, i, n, l1_fix);
		if (ret < 0)
			return ret;
	}
	for (k = 0; k < c->nb_alloc; k++) {
		if (!(c->walks[k] >> 16))
			continue;
		ret = chk_copied_l2(c, k, c->walks[k] >> 16, fix);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* ---------------------------------------------------------------- passes */

static void chk_free_arrays(struct chk *c)
{
	free(c->expected);
	free(c->walks);
	free(c->stored_one);
	free(c->meta);
	free(c->meta_other);
	free(c->overflowed);
	c->expected = NULL;
	c->walks = NULL;
	c->stored_one = NULL;
	c->meta = NULL;
	c->meta_other = NULL;
	c->overflowed = NULL;
	c->nb_alloc = 0;
}

/* Size the per-cluster arrays by the current file size, zeroed. */
static int chk_setup(struct chk *c)
{
	struct qcow_image *img = c->img;
	int ret = img->file.ops->get_size(img->file.ctx, &c->file_size);

	if (ret < 0)
		return chk_io_error(c, ret, "image size", 0);
	chk_free_arrays(c);
	c->nb_clusters = QCOW_DIV_ROUND_UP(c->file_size, img->cluster_size);
	if (c->nb_clusters > CHK_MAX_CLUSTERS) {
		c->r.check_errors++;
		return qcow_set_error(img, -EFBIG, "image file too large to check (%" PRIu64
				      " clusters)", c->nb_clusters);
	}
	/* One more: a reference may reach into the cluster past end of file. */
	c->nb_alloc = c->nb_clusters + 1;
	c->nb_used = c->nb_clusters;
	c->expected = calloc(c->nb_alloc, sizeof(*c->expected));
	c->walks = calloc(c->nb_alloc, sizeof(*c->walks));
	c->stored_one = calloc(c->nb_alloc / 8 + 1, 1);
	c->meta = calloc(c->nb_alloc / 8 + 1, 1);
	c->meta_other = calloc(c->nb_alloc / 8 + 1, 1);
	c->overflowed = calloc(c->nb_alloc / 8 + 1, 1);
	if (!c->expected || !c->walks || !c->stored_one || !c->meta || !c->meta_other ||
	    !c->overflowed) {
		chk_free_arrays(c);
		c->r.check_errors++;
		return qcow_set_error(img, -ENOMEM, "out of memory checking %" PRIu64 " clusters",
				      c->nb_clusters);
	}
	return 0;
}

/* Phases A and B: everything reachable from the header but the refcounts. */
static int chk_walk(struct chk *c)
{
	struct qcow_image *img = c->img;
	int ret;

	c->budget = c->file_size + QCOW_MAX_L1_BYTES;
	c->fixable = 0;
	c->skipped = 0;
	chk_inc_meta(c, 0, img->cluster_size, false);
	ret = chk_l1(c, c->l1_off, c->l1_size, true);
	if (ret < 0)
		return ret;
	ret = chk_snapshots(c);
	if (ret < 0)
		return ret;
	ret = chk_bitmaps(c);
	if (ret < 0)
		return ret;
	return chk_l2_tables(c);
}

/* A counting pass (CHK_COUNT or CHK_REBUILD): fills expected, compares. */
static int chk_count(struct chk *c, enum chk_mode mode, bool quiet)
{
	struct qcow_image *img = c->img;
	int ret;

	memset(&c->r, 0, sizeof(c->r));
	c->mode = mode;
	c->quiet = quiet;
	c->refstruct_bad = false;
	c->refcount_low = false;
	c->r.total_clusters = QCOW_DIV_ROUND_UP(img->size, img->cluster_size);
	ret = chk_setup(c);
	if (ret < 0)
		return ret;
	ret = chk_load_reftable(c);
	if (ret < 0)
		return ret;
	ret = chk_walk(c);
	/* Tables left unread may own clusters nobody counted. */
	c->walk_errors = c->r.check_errors + c->skipped;
	if (ret < 0 || mode == CHK_REBUILD)
		return ret;
	chk_refstruct(c);
	chk_compare(c);
	return 0;
}

/* Rewrite the bad L1/L2 entries the last counting pass found. */
static int chk_fix_entries(struct chk *c)
{
	struct qcow_check_result saved = c->r;
	int ret;

	c->mode = CHK_FIX;
	c->quiet = false;
	c->fixed = 0;
	ret = chk_walk(c);
	/* The walk recounted problems into c->r; only its IO errors matter. */
	saved.check_errors = c->r.check_errors;
	c->r = saved;
	if (c->fixable > c->fixed)
		chk_say(c, "%" PRIu64 " bad entries not repaired: their tables share clusters "
			"with other metadata", c->fixable - c->fixed);
	if (ret == 0 && c->changed)
		ret = qcow_fsync(c->img);
	return ret;
}

/* ------------------------------------------------------------ leak repair */

/* Repair steps report what they change, even after a quiet recount; their
 * problem lines (chk_err) stay silent, they were reported by the first pass. */
static void chk_loud(struct chk *c)
{
	c->quiet = false;
	c->mode = CHK_FIX;
}

/* Lower the stored refcounts of the leaked clusters in refcount block bi. */
static int chk_fix_leaks_block(struct chk *c, uint64_t bi, uint64_t *lowest)
{
	struct qcow_image *img = c->img;
	uint64_t per = 1ULL << img->refcount_block_bits, k, end, stored, n = 0;
	int ret = chk_load_refblock(c, bi);

	if (ret < 0 || !c->blk_valid)
		return ret;
	end = QCOW_MIN((bi + 1) * per, c->nb_used);
	for (k = bi * per; k < end; k++) {
		stored = qcow_refblock_get(img, c->blk, k - bi * per);
		if (stored <= c->expected[k])
			continue;
		chk_say(c, "Repairing cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu32,
			k, stored, c->expected[k]);
		qcow_refblock_set(img, c->blk, k - bi * per, c->expected[k]);
		*lowest = QCOW_MIN(*lowest, k);
		n++;
	}
	if (!n)
		return 0;
	return chk_write(c, c->blk, img->cluster_size, c->reftable[bi] & QCOW_REFT_OFFSET_MASK);
}

/* Leak repair in place; only called when the refcount structure is sound
 * (every block aligned, inside the file, used by nothing else). */
static int chk_fix_leaks(struct chk *c)
{
	struct qcow_image *img = c->img;
	uint64_t per = 1ULL << img->refcount_block_bits, bi, lowest = UINT64_MAX;
	int ret = 0;

	chk_loud(c);
	for (bi = 0; bi < QCOW_DIV_ROUND_UP(c->nb_used, per) && ret == 0; bi++)
		ret = chk_fix_leaks_block(c, bi, &lowest);
	c->blk_index = UINT64_MAX;
	if (ret == 0 && c->changed)
		ret = qcow_fsync(img);
	if (ret == 0 && img->refcount_cache)
		ret = qcow_cache_invalidate(img->refcount_cache);
	if (lowest != UINT64_MAX && lowest < img->free_cluster_index)
		img->free_cluster_index = lowest;
	return ret;
}

/* ---------------------------------------------------------------- rebuild */

/* First cluster past everything in use and past the old refcount structures
 * (they stay intact until the header points at the new ones). */
static uint64_t chk_rebuild_start(struct chk *c)
{
	struct qcow_image *img = c->img;
	uint64_t start = 0, k, i, off, cb = img->cluster_bits;

	for (k = c->nb_alloc; k > 0; k--) {
		if (c->expected[k - 1]) {
			start = k;
			break;
		}
	}
	off = img->refcount_table_offset;
	if (off < c->file_size)
		start = QCOW_MAX(start, QCOW_MIN(c->nb_clusters, (off >> cb) +
				 img->refcount_table_clusters));
	for (i = 0; i < c->reftable_size; i++) {
		off = c->reftable[i] & QCOW_REFT_OFFSET_MASK;
		if (off && off < c->file_size)
			start = QCOW_MAX(start, (off >> cb) + 1);
	}
	return start;
}

/* Refcount table clusters (*nt) and blocks (*nb) to describe every cluster
 * up to and including themselves, placed from cluster start on. */
static void chk_rebuild_layout(const struct chk *c, uint64_t start, uint64_t *nt, uint64_t *nb)
{
	uint64_t per = 1ULL << c->img->refcount_block_bits, prev;

	*nt = 0;
	*nb = 0;
	do {
		prev = *nt + *nb;
		*nb = QCOW_DIV_ROUND_UP(start + *nt + *nb, per);
		*nt = QCOW_DIV_ROUND_UP(*nb * 8, c->img->cluster_size);
	} while (*nt + *nb != prev);
}

static int chk_rebuild_blocks(struct chk *c, uint64_t start, uint64_t nt, uint64_t nb,
			      uint64_t *table)
{
	struct qcow_image *img = c->img;
	uint64_t per = 1ULL << img->refcount_block_bits, cs = img->cluster_size;
	uint64_t end = start + nt + nb, b, k, v, off;
	int ret;

	for (b = 0; b < nb; b++) {
		memset(c->blk, 0, cs);
		for (k = b * per; k < QCOW_MIN((b + 1) * per, end); k++) {
			v = k >= start ? 1 : k < c->nb_alloc ? c->expected[k] : 0;
			if (v)
				qcow_refblock_set(img, c->blk, k - b * per, v);
		}
		off = (start + nt + b) * cs;
		ret = qcow_pwrite(img, c->blk, cs, off);
		if (ret < 0)
			return ret;
		table[b] = htobe64(off);
	}
	c->blk_index = UINT64_MAX;
	return 0;
}

/* Point the header at the new table; on failure the old one stays. */
static int chk_rebuild_switch(struct chk *c, uint64_t table_off, uint64_t nt)
{
	struct qcow_image *img = c->img;
	uint64_t old_off = img->refcount_table_offset, old_size = img->refcount_table_size;
	uint32_t old_nt = img->refcount_table_clusters;
	int ret;

	img->refcount_table_offset = table_off;
	img->refcount_table_clusters = (uint32_t)nt;
	img->refcount_table_size = nt * img->cluster_size / 8;
	ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret < 0) {
		img->refcount_table_offset = old_off;
		img->refcount_table_clusters = old_nt;
		img->refcount_table_size = old_size;
		return ret;
	}
	c->changed = true;
	if (img->refcount_cache) {
		ret = qcow_cache_invalidate(img->refcount_cache);
		if (ret < 0)
			return ret;
	}
	qcow_refcount_free(img);
	ret = qcow_refcount_init(img);
	img->free_cluster_index = 0;
	return ret;
}

static int chk_rebuild(struct chk *c)
{
	struct qcow_image *img = c->img;
	uint64_t start, nt, nb, *table;
	int ret = chk_count(c, CHK_REBUILD, true);

	if (ret < 0)
		return ret;
	if (c->walk_errors)
		return qcow_set_error(img, -EIO,
				      "refcount rebuild: not all metadata could be read");
	start = chk_rebuild_start(c);
	chk_rebuild_layout(c, start, &nt, &nb);
	if (nt * img->cluster_size > QCOW_MAX_REFTABLE_BYTES)
		return qcow_set_error(img, -EFBIG, "refcount rebuild: table of %" PRIu64
				      " clusters too large", nt);
	table = calloc(nt, img->cluster_size);
	if (!table)
		return -ENOMEM;
	ret = chk_rebuild_blocks(c, start, nt, nb, table);
	if (ret == 0)
		ret = qcow_pwrite(img, table, nt * img->cluster_size, start * img->cluster_size);
	free(table);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret == 0)
		ret = chk_rebuild_switch(c, start * img->cluster_size, nt);
	if (ret < 0)
		return qcow_set_error(img, ret, "refcount rebuild failed: %s", strerror(-ret));
	return 0;
}

/* ------------------------------------------------------------ public API */

static int chk_init(struct chk *c, struct qcow_image *img, qcow_check_report_fn report,
		    void *opaque)
{
	memset(c, 0, sizeof(*c));
	c->img = img;
	c->report = report;
	c->opaque = opaque;
	c->blk_index = UINT64_MAX;
	c->cap = (uint32_t)QCOW_MIN(qcow_refcount_max(img), (uint64_t)UINT32_MAX);
	c->blk = malloc(img->cluster_size);
	c->tbl = malloc(img->cluster_size);
	c->chunk = malloc(CHK_CHUNK_ENTRIES * 8);
	if (!c->blk || !c->tbl || !c->chunk)
		return qcow_set_error(img, -ENOMEM, "out of memory");
	return 0;
}

/* The active L1 table's place, from the header on disk (the engine may hold
 * a stand-in, format/header.c). After chk_sync_engine: the engine writes
 * every header change straight through. */
static int chk_read_l1_geometry(struct chk *c)
{
	struct qcow_header_v2 h;
	int ret = qcow_pread(c->img, &h, sizeof(h), 0);

	if (ret < 0)
		return chk_io_error(c, ret, "image header", 0);
	c->l1_off = be64toh(h.l1_table_offset);
	c->l1_size = be32toh(h.l1_size);
	return 0;
}

static void chk_fini(struct chk *c)
{
	chk_free_arrays(c);
	free(c->reftable);
	free(c->blk);
	free(c->tbl);
	free(c->chunk);
}

/* The caches must hold nothing the file lacks before the file is read. */
static int chk_sync_engine(struct qcow_image *img)
{
	if (img->read_only)
		return 0;
	return qcow_flush(img);
}

int qcow_rebuild_refcounts(struct qcow_image *img)
{
	struct chk c;
	int ret;

	if (img->read_only)
		return qcow_set_error(img, -EROFS, "cannot rebuild refcounts: image is read-only");
	ret = chk_sync_engine(img);
	if (ret < 0)
		return ret;
	ret = chk_init(&c, img, NULL, NULL);
	/* A check open counts the L1 table the file's header names; an engine
	 * that is switching to a new one (snapshot.c) counts its own. */
	if (ret == 0 && img->for_check) {
		ret = chk_read_l1_geometry(&c);
	} else if (ret == 0) {
		c.l1_off = img->l1_table_offset;
		c.l1_size = img->l1_size;
	}
	if (ret == 0)
		ret = chk_rebuild(&c);
	chk_fini(&c);
	return ret;
}

/* Refcounts: rebuild when any is too low or the structure is broken, else
 * repair leaks in place. Leaves c after a fresh quiet count. */
static int chk_repair_refcounts(struct chk *c, unsigned flags)
{
	int ret;

	/* Unread metadata may own clusters: freeing anything would be a guess. */
	if (c->walk_errors && (c->refstruct_bad || c->refcount_low || c->r.leaks)) {
		chk_say(c, "Refcounts not repaired: parts of the metadata could not be read");
		return 0;
	}
	if ((flags & QCOW_CHECK_REPAIR_ERRORS) && (c->refstruct_bad || c->refcount_low)) {
		chk_loud(c);
		chk_say(c, "Rebuilding refcount structure");
		ret = chk_rebuild(c);
	} else if ((flags & QCOW_CHECK_REPAIR_LEAKS) && c->r.leaks && !c->refstruct_bad) {
		ret = chk_fix_leaks(c);
	} else {
		return 0;
	}
	if (ret < 0)
		return ret;
	return chk_count(c, CHK_COUNT, true);
}

static int chk_repair(struct chk *c, unsigned flags)
{
	struct qcow_image *img = c->img;
	int ret = 0;

	/* Entries pointing into metadata are only recognised by a fix pass. */
	if ((flags & QCOW_CHECK_REPAIR_ERRORS) && (c->fixable || c->r.corruptions)) {
		ret = chk_fix_entries(c);
		if (ret == 0 && c->changed)
			ret = chk_count(c, CHK_COUNT, true);
	}
	if (ret == 0)
		ret = chk_repair_refcounts(c, flags);
	/* As qemu: with leak repair only, COPIED is fixed once all else is clean. */
	if (ret == 0 && ((flags & QCOW_CHECK_REPAIR_ERRORS) ||
			 (!c->r.corruptions && !c->r.leaks && !c->r.check_errors))) {
		chk_loud(c);
		ret = chk_copied(c, true);
	}
	if (ret == 0 && c->changed)
		ret = qcow_fsync(img);
	if (c->changed && img->l2_cache) {
		int r2 = qcow_cache_invalidate(img->l2_cache);

		ret = ret ? ret : r2;
	}
	return ret;
}

static int chk_mark_clean(struct qcow_image *img)
{
	uint64_t bits = QCOW_INCOMPAT_DIRTY | QCOW_INCOMPAT_CORRUPT;
	int ret;

	if (!(img->incompatible_features & bits))
		return 0;
	img->incompatible_features &= ~bits;
	ret = qcow_header_write(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	return ret;
}

static void chk_result(struct qcow_check_result *res, const struct qcow_check_result *first,
		       const struct qcow_check_result *final)
{
	*res = *final;
	if (first->corruptions > final->corruptions)
		res->corruptions_fixed = first->corruptions - final->corruptions;
	if (first->leaks > final->leaks)
		res->leaks_fixed = first->leaks - final->leaks;
}

/* Count, report, and copied-flag check: one complete check. */
static int chk_full(struct chk *c, bool quiet)
{
	int ret = chk_count(c, CHK_COUNT, quiet);

	if (ret == 0)
		ret = chk_copied(c, false);
	return ret;
}

int qcow_check(struct qcow_image *img, unsigned repair_flags, struct qcow_check_result *res,
	       qcow_check_report_fn report, void *opaque)
{
	struct qcow_check_result first;
	struct chk c;
	int ret, rret;

	memset(res, 0, sizeof(*res));
	if (img->unservable)	/* its tables are not the ones walked here */
		return qcow_set_error(img, -ENOTSUP, "unsupported feature: %s", img->unservable);
	repair_flags &= QCOW_CHECK_REPAIR_ALL;
	if (repair_flags && img->read_only)
		return qcow_set_error(img, -EROFS, "cannot repair: image opened read-only");
	ret = chk_init(&c, img, report, opaque);
	if (ret == 0)
		ret = chk_sync_engine(img);
	if (ret == 0)
		ret = chk_read_l1_geometry(&c);
	if (ret == 0)
		ret = chk_full(&c, false);
	first = c.r;
	if (ret == 0 && repair_flags && c.l1_lost) {
		chk_say(&c, "Not repaired: the active L1 table is lost; repairing refcounts would "
			"free the clusters it should reference");
	} else if (ret == 0 && repair_flags && (first.corruptions || first.leaks)) {
		rret = chk_repair(&c, repair_flags);
		/* Report what is left; an unchanged image keeps the first verdict. */
		if (c.changed)
			ret = chk_full(&c, false);
		else
			c.r = first;
		if (rret < 0) {
			c.r.check_errors++;
			ret = ret ? ret : rret;
		}
	}
	chk_result(res, &first, &c.r);
	if (ret < 0 && !res->check_errors)
		res->check_errors++;
	if (ret == 0 && repair_flags && !res->corruptions && !res->check_errors && !c.l1_lost)
		ret = chk_mark_clean(img);
	chk_fini(&c);
	return ret;
}
