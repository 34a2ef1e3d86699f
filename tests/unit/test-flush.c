/* SPDX-License-Identifier: MIT */
/*
 * What a flush costs, in fsyncs counted on the crash-test backend
 * (design.md 9.3), and that it never costs too few:
 *
 *  - an allocating write then a flush: one fsync per ordering step that
 *    has something to write (refcounts with data, L2 table, L1 entry);
 *  - a second flush with nothing written since: none (a guest's FLUSH
 *    after a FLUSH, or two queues' FLUSHes one after the other);
 *  - an in-place write, through qcow_write or planned with write_begin and
 *    written by the caller as the daemon does: exactly one;
 *  - a write planned before a flush and ended after it: the next flush
 *    still fsyncs (its data was not covered);
 *  - a write that failed: the next flush fsyncs all the same (the failed
 *    write may have landed in part, the allocation was given back).
 *
 * Then the flush run step by step, as the daemon runs it (flush.c), with
 * other work done while a batch's IO is "in flight":
 *  - no table is written behind its back: a write that would evict a dirty
 *    table or write refcount blocks waits (-EBUSY), and nothing but the
 *    flush writes the refcount block it is writing;
 *  - a free queued after the start is not applied by this flush, only by
 *    the next one (what dropped the reference was not in its snapshot);
 *  - a write that ends after the flush's fsync was issued is not counted
 *    as synced by it: the next flush still fsyncs;
 *  - one flush at a time: a second start, or qcow_flush(), gets -EBUSY and
 *    the handle goes on;
 *  - a failed table write fails the flush and the handle, and gives back
 *    what the flush held (the tables count as unwritten again);
 *  - frees whose refcount blocks are not cached: the flush reads them as a
 *    batch of its own before applying them;
 *  - a new refcount block a nowait write needs costs that write no IO: the
 *    flush writes the block, fsyncs, then writes its refcount table entry
 *    (whole sectors), fsyncs, and only then the L2 tables that use it;
 *  - an fsync of a caller's own beside the running flush (qcow_sync_begin)
 *    only once the flush's tables are written and nothing else is dirty;
 *    the flush's older fsync ending after it takes nothing back.
 */
#include "crashfile.h"
#include "internal.h"
#include "testlib.h"

#define CS 65536ULL

static struct crashfile *cf;

static struct qcow_image *open_geometry(unsigned cluster_bits, unsigned l2_tables)
{
	struct qcow_create_opts co = { .size = 64 << 20, .cluster_bits = cluster_bits,
				       .version = 3 };
	struct qcow_open_opts oo = { .l2_cache_bytes = (uint64_t)l2_tables << cluster_bits };
	struct qcow_image *img = NULL;
	struct qcow_file f;
	char err[512] = "";
	int r;

	cf = cf_new(NULL, 0);
	REQUIRE(cf, "cf_new");
	cf_get_file(cf, &f);
	r = qcow_create_file(&f, "cf", &co, err, sizeof(err));
	REQUIRE(r == 0, "create: %d %s", r, err);
	r = qcow_open_file(&f, "cf", &oo, &img, err, sizeof(err));
	REQUIRE(r == 0 && img, "open: %d %s", r, err);
	return img;
}

static struct qcow_image *open_new(void)
{
	return open_geometry(16, 0);
}

/* fsyncs issued by fn's flush */
static uint64_t fsyncs_of_flush(struct qcow_image *img)
{
	int r;

	cf_inject(cf, CF_OP_FLUSH, 0, 0, false);	/* resets the counters */
	r = qcow_flush(img);
	REQUIRE(r == 0, "flush: %d %s", r, qcow_error(img));
	return cf_count(cf, CF_OP_FLUSH);
}

static void write_4k(struct qcow_image *img, uint64_t off, uint8_t byte)
{
	uint8_t b[4096];
	int r;

	memset(b, byte, sizeof(b));
	r = qcow_write(img, b, off, sizeof(b));
	REQUIRE(r == 0, "write: %d %s", r, qcow_error(img));
}

static void test_counts(void)
{
	struct qcow_image *img = open_new();
	struct qcow_write_plan plan;
	struct qcow_file f;
	uint8_t b[4096];
	uint64_t n;
	int r;

	cf_get_file(cf, &f);
	fsyncs_of_flush(img);
	write_4k(img, 0, 1);
	n = fsyncs_of_flush(img);
	CHECK(n == 3, "allocating write: %" PRIu64 " fsyncs, wanted 3 (refcounts and data, L2 "
	      "table, L1 entry)", n);
	n = fsyncs_of_flush(img);
	CHECK(n == 0, "flush after flush: %" PRIu64 " fsyncs, wanted none", n);
	write_4k(img, 8192, 2);
	n = fsyncs_of_flush(img);
	CHECK(n == 1, "in-place write: %" PRIu64 " fsyncs, wanted 1", n);

	/* as the daemon writes: plan, data straight to the file, end */
	memset(b, 3, sizeof(b));
	r = qcow_write_begin(img, 16384, sizeof(b), &plan);
	REQUIRE(r == 0, "write_begin: %d %s", r, qcow_error(img));
	r = qcow_write_end(img, &plan, f.ops->pwrite(f.ctx, b, sizeof(b), plan.host_offset));
	REQUIRE(r == 0, "write_end: %d %s", r, qcow_error(img));
	n = fsyncs_of_flush(img);
	CHECK(n == 1, "a server's in-place write: %" PRIu64 " fsyncs, wanted 1", n);

	/* planned before a flush, written and ended after it */
	r = qcow_write_begin(img, 20480, sizeof(b), &plan);
	REQUIRE(r == 0, "write_begin: %d %s", r, qcow_error(img));
	fsyncs_of_flush(img);
	r = qcow_write_end(img, &plan, f.ops->pwrite(f.ctx, b, sizeof(b), plan.host_offset));
	REQUIRE(r == 0, "write_end: %d %s", r, qcow_error(img));
	n = fsyncs_of_flush(img);
	CHECK(n == 1, "a write ended after a flush: %" PRIu64 " fsyncs, wanted 1", n);

	/* a failed allocating write, given back */
	r = qcow_write_begin(img, 5 * CS, sizeof(b), &plan);
	REQUIRE(r == 0, "write_begin: %d %s", r, qcow_error(img));
	r = qcow_write_end(img, &plan, -EIO);
	CHECK(r == -EIO, "write_end of a failed write: %d", r);
	n = fsyncs_of_flush(img);
	CHECK(n >= 1, "after a failed write: %" PRIu64 " fsyncs, wanted at least 1", n);
	n = fsyncs_of_flush(img);
	CHECK(n == 0, "and then a flush after the flush: %" PRIu64 " fsyncs, wanted none", n);

	r = qcow_close(img);
	CHECK(r == 0, "close: %d", r);
	cf_free(cf);
}

/* ------------------------------------------------- the flush step by step */

/* Do a batch's IO on the crash-test file, as a server's ring would. */
static int do_batch(struct qcow_image *img, const struct qcow_io *ios, int n)
{
	int i, r = 0;

	for (i = 0; r == 0 && i < n; i++)
		r = qcow_io_do(img, &ios[i]);
	return r;
}

/* Run the started flush to its end; its result. */
static int finish_flush(struct qcow_image *img)
{
	struct qcow_io ios[8];
	int n;

	while ((n = qcow_flush_next(img, ios, 8)) > 0)
		qcow_flush_io_done(img, do_batch(img, ios, n));
	return n;
}

static int try_write_4k(struct qcow_image *img, uint64_t off, uint8_t byte)
{
	uint8_t b[4096];

	memset(b, byte, sizeof(b));
	return qcow_write(img, b, off, sizeof(b));
}

/* The image as it is now passes qemu-img check (leaks allowed: none expected). */
static void qemu_check_now(const char *what)
{
	const uint8_t *data;
	uint64_t size;
	const char *path = t_path("%s.qcow2", what);
	int r;

	if (!t_want_qemu())
		return;
	data = cf_data(cf, &size);
	REQUIRE(t_write_file(path, data, size) == 0, "write %s", path);
	r = t_qemu_check(path);
	CHECK(r == 0, "%s: qemu-img check exited %d", what, r);
}

static void test_no_table_write_behind(void)
{
	struct qcow_image *img = open_geometry(12, 4);	/* 2 MiB per L2 table, 4 slots */
	struct qcow_io ios[8];
	uint64_t block, i, busy = 0, done = 0;
	size_t ev0, e;
	int n, r;

	try_write_4k(img, 0, 1);
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	n = qcow_flush_next(img, ios, 8);
	REQUIRE(n == 1 && ios[0].op == QCOW_IO_WRITE, "first batch: %d IOs", n);
	block = ios[0].offset;			/* the refcount block's copy, in flight */
	cf_record_start(cf);
	ev0 = cf_nevents(cf);
	/* new L2 tables, each allocation changing that block again, until a
	 * dirty table would have to be evicted */
	for (i = 1; i <= 8; i++) {
		r = try_write_4k(img, i * (2 << 20), (uint8_t)i);
		CHECK(r == 0 || r == -EBUSY || r == -ENOMEM, "write during the flush: %d %s", r,
		      qcow_error(img));
		busy += r == -EBUSY || r == -ENOMEM;
		done += r == 0;
	}
	CHECK(busy > 0 && done > 0, "during the flush: %" PRIu64 " writes done, %" PRIu64
	      " waiting, wanted some of each", done, busy);
	for (e = ev0; e < cf_nevents(cf); e++)
		CHECK(!cf_event_writes_to(cf, e, block, 4096),
		      "event %zu wrote the refcount block the flush is writing", e);
	qcow_flush_io_done(img, do_batch(img, ios, n));
	r = finish_flush(img);
	CHECK(r == 0, "flush: %d %s", r, qcow_error(img));
	for (i = 1; i <= 8; i++)
		CHECK(try_write_4k(img, i * (2 << 20), (uint8_t)i) == 0, "write after the flush: %s",
		      qcow_error(img));
	CHECK(qcow_flush(img) == 0, "flush: %s", qcow_error(img));
	qemu_check_now("behind");
	CHECK(qcow_close(img) == 0, "close");
	cf_free(cf);
}

static uint64_t host_of(struct qcow_image *img, uint64_t off)
{
	struct qcow_extent ext;
	int r = qcow_map(img, off, 4096, &ext);

	REQUIRE(r == 0 && ext.kind == QCOW_EXTENT_DATA, "map %" PRIu64 ": %d", off, r);
	return ext.host_offset;
}

static uint64_t refcount_of(struct qcow_image *img, uint64_t host)
{
	uint64_t rc = 0;
	int r = qcow_refcount_get(img, host / CS, &rc);

	REQUIRE(r == 0, "refcount: %d %s", r, qcow_error(img));
	return rc;
}

static void test_frees_after_start(void)
{
	struct qcow_image *img = open_new();
	uint64_t c0, c1;
	int r;

	write_4k(img, 0, 1);
	write_4k(img, CS, 2);
	REQUIRE(qcow_flush(img) == 0, "flush");
	c0 = host_of(img, 0);
	c1 = host_of(img, CS);
	REQUIRE(qcow_discard(img, 0, CS) == 0, "discard");
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	REQUIRE(qcow_discard(img, CS, CS) == 0, "discard during the flush: %s", qcow_error(img));
	r = finish_flush(img);
	CHECK(r == 0, "flush: %d %s", r, qcow_error(img));
	CHECK(refcount_of(img, c0) == 0, "a free queued before the start: refcount %" PRIu64
	      ", wanted 0", refcount_of(img, c0));
	CHECK(refcount_of(img, c1) == 1, "a free queued after the start was applied: refcount %"
	      PRIu64 ", wanted 1 until the next flush", refcount_of(img, c1));
	REQUIRE(qcow_flush(img) == 0, "flush");
	CHECK(refcount_of(img, c1) == 0, "the next flush: refcount %" PRIu64 ", wanted 0",
	      refcount_of(img, c1));
	qemu_check_now("frees");
	CHECK(qcow_close(img) == 0, "close");
	cf_free(cf);
}

static void test_fsync_covers_only_before(void)
{
	struct qcow_image *img = open_new();
	struct qcow_io ios[8];
	uint64_t n;
	int k, r;

	write_4k(img, 0, 1);
	REQUIRE(qcow_flush(img) == 0, "flush");
	write_4k(img, 0, 2);			/* in place */
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	k = qcow_flush_next(img, ios, 8);
	REQUIRE(k == 1 && ios[0].op == QCOW_IO_FSYNC, "an in-place write's flush: %d IOs", k);
	write_4k(img, 0, 3);			/* ends while the fsync is in flight */
	qcow_flush_io_done(img, do_batch(img, ios, k));
	r = finish_flush(img);
	CHECK(r == 0, "flush: %d %s", r, qcow_error(img));
	n = fsyncs_of_flush(img);
	CHECK(n == 1, "a write that ended during the fsync: the next flush did %" PRIu64
	      " fsyncs, wanted 1", n);
	CHECK(qcow_close(img) == 0, "close");
	cf_free(cf);
}

/* An fsync of the caller's own, as the daemon issues one: its result. */
static int own_sync(struct qcow_image *img, const struct qcow_sync *s)
{
	const struct qcow_io fsync = { .op = QCOW_IO_FSYNC };

	return qcow_sync_end(img, s, qcow_io_do(img, &fsync));
}

static void test_own_sync(void)
{
	struct qcow_image *img = open_new();
	struct qcow_io ios[8];
	struct qcow_sync s;
	unsigned fsyncs = 0, given = 0, given_at = 0;
	uint64_t n;
	int k, r;

	CHECK(!qcow_sync_begin(img, 0, &s), "an own fsync with no flush running");
	write_4k(img, 0, 1);		/* refcounts, L2 table and L1 entry to write */
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	while ((k = qcow_flush_next(img, ios, 8)) > 0) {
		fsyncs += ios[0].op == QCOW_IO_FSYNC;
		if (qcow_sync_begin(img, 0, &s)) {
			given++;
			given_at = fsyncs;
			CHECK(own_sync(img, &s) == 0, "own fsync: %s", qcow_error(img));
		}
		qcow_flush_io_done(img, do_batch(img, ios, k));
	}
	CHECK(k == 0, "flush: %d %s", k, qcow_error(img));
	CHECK(fsyncs == 3 && given == 1 && given_at == 3, "%u own fsyncs given, the last at the "
	      "flush's fsync %u of %u: wanted one, at its last (after the L1 entry)", given,
	      given_at, fsyncs);

	/* a table dirty: the next flush must write it first */
	write_4k(img, 0, 2);		/* in place: the flush is an fsync alone */
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	k = qcow_flush_next(img, ios, 8);
	REQUIRE(k == 1 && ios[0].op == QCOW_IO_FSYNC, "an in-place write's flush: %d IOs", k);
	write_4k(img, CS, 3);		/* allocates */
	CHECK(!qcow_sync_begin(img, 0, &s), "an own fsync with an L2 table dirty");
	qcow_flush_io_done(img, do_batch(img, ios, k));
	REQUIRE(finish_flush(img) == 0, "flush: %s", qcow_error(img));
	REQUIRE(qcow_flush(img) == 0, "flush: %s", qcow_error(img));

	/* the own fsync ends first and covers more than the flush's */
	write_4k(img, 0, 4);
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	k = qcow_flush_next(img, ios, 8);
	REQUIRE(k == 1 && ios[0].op == QCOW_IO_FSYNC, "an in-place write's flush: %d IOs", k);
	write_4k(img, 0, 5);		/* after the flush's fsync was issued */
	REQUIRE(qcow_sync_begin(img, 0, &s), "no own fsync beside an fsync alone");
	CHECK(own_sync(img, &s) == 0, "own fsync: %s", qcow_error(img));
	qcow_flush_io_done(img, do_batch(img, ios, k));
	REQUIRE(finish_flush(img) == 0, "flush: %s", qcow_error(img));
	n = fsyncs_of_flush(img);
	CHECK(n == 0, "the flush's older fsync, ending last, took back what the own one "
	      "covered: the next flush did %" PRIu64 " fsyncs", n);

	/* an own fsync that fails fails the handle */
	write_4k(img, 0, 6);
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	k = qcow_flush_next(img, ios, 8);
	REQUIRE(qcow_sync_begin(img, 0, &s), "no own fsync");
	r = qcow_sync_end(img, &s, -EIO);
	CHECK(r == -EIO && t_msg_has(qcow_error(img), "fsync failed"), "a failed own fsync: %d %s",
	      r, qcow_error(img));
	qcow_flush_io_done(img, do_batch(img, ios, k));
	finish_flush(img);
	r = try_write_4k(img, CS, 7);
	CHECK(r == -EIO, "a write after a failed own fsync: %d", r);
	CHECK(qcow_close(img) == -EIO, "close after a failed own fsync");
	cf_free(cf);
}

static void test_one_at_a_time(void)
{
	struct qcow_image *img = open_new();
	int r;

	write_4k(img, 0, 1);
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	CHECK(qcow_flush_running(img), "not running after a start");
	r = qcow_flush_start(img, 0);
	CHECK(r == -EBUSY, "a second start: %d, wanted -EBUSY", r);
	r = qcow_flush(img);
	CHECK(r == -EBUSY, "qcow_flush during a flush: %d, wanted -EBUSY", r);
	r = finish_flush(img);
	CHECK(r == 0 && !qcow_flush_running(img), "flush: %d %s", r, qcow_error(img));
	CHECK(try_write_4k(img, CS, 2) == 0, "the handle goes on: %s", qcow_error(img));
	CHECK(qcow_flush_start(img, 0) == 0, "the next flush starts: %s", qcow_error(img));
	CHECK(finish_flush(img) == 0, "and ends: %s", qcow_error(img));
	CHECK(qcow_flush_start(img, 0) == 1, "nothing left: start says so");
	CHECK(qcow_close(img) == 0, "close");
	cf_free(cf);
}

static void test_failed_batch(void)
{
	struct qcow_image *img = open_new();
	struct qcow_io ios[8];
	int n, r;

	write_4k(img, 0, 1);
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	n = qcow_flush_next(img, ios, 8);
	REQUIRE(n > 0, "a batch: %d", n);
	qcow_flush_io_done(img, -EIO);
	r = qcow_flush_next(img, ios, 8);
	CHECK(r == -EIO, "after a failed batch: %d, wanted -EIO", r);
	CHECK(!qcow_flush_running(img), "still running after failing");
	CHECK(qcow_metadata_unwritten(img), "the tables it did not write count as written");
	r = try_write_4k(img, CS, 2);
	CHECK(r < 0 && t_msg_has(qcow_error(img), "flush failed"),
	      "a write after the failed flush: %d %s", r, qcow_error(img));
	r = qcow_flush_start(img, 0);
	CHECK(r == -EIO, "a start after the failed flush: %d", r);
	r = qcow_close(img);
	CHECK(r == -EIO, "close after the failed flush: %d", r);
	cf_free(cf);
}

/*
 * Frees whose refcount blocks the cache lacks: the flush hands out their
 * reads as a batch (the daemon's ring does them, no lock held) before it
 * applies the frees, and the image ends exact.
 */
static void test_frees_read_blocks(void)
{
	struct qcow_create_opts co = { .size = 4 << 20, .cluster_bits = 9, .version = 3 };
	/* 512-byte clusters: a refcount block covers 128 KiB; 4 of them cached */
	struct qcow_open_opts oo = { .refcount_cache_bytes = 512 };
	size_t len = 3 << 19;
	uint8_t *data = malloc(len);
	struct qcow_image *img = NULL;
	struct qcow_io ios[8];
	unsigned reads = 0;
	struct qcow_file f;
	char err[512] = "";
	int n, i;

	REQUIRE(data, "malloc");
	memset(data, 0x77, len);
	cf = cf_new(NULL, 0);
	REQUIRE(cf, "cf_new");
	cf_get_file(cf, &f);
	REQUIRE(qcow_create_file(&f, "cf", &co, err, sizeof(err)) == 0, "create: %s", err);
	REQUIRE(qcow_open_file(&f, "cf", &oo, &img, err, sizeof(err)) == 0, "open: %s", err);
	REQUIRE(qcow_write(img, data, 0, len) == 0, "write: %s", qcow_error(img));
	REQUIRE(qcow_flush(img) == 0, "flush: %s", qcow_error(img));
	/* 3072 clusters over some 13 blocks: discarded, their frees queued */
	REQUIRE(qcow_discard(img, 0, len) == 0, "discard: %s", qcow_error(img));
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	while ((n = qcow_flush_next(img, ios, 8)) > 0) {
		for (i = 0; i < n; i++)
			reads += ios[i].op == QCOW_IO_READ;
		qcow_flush_io_done(img, do_batch(img, ios, n));
	}
	CHECK(n == 0, "flush: %d %s", n, qcow_error(img));
	CHECK(reads > 0, "no refcount block was read as part of the flush");
	/* frees it could not apply (no room to load their blocks) go next time */
	REQUIRE(qcow_flush(img) == 0, "flush: %s", qcow_error(img));
	CHECK(img->nb_pending_free == 0, "%zu frees still queued", img->nb_pending_free);
	qemu_check_now("frees-read");
	CHECK(qcow_close(img) == 0, "close");
	cf_free(cf);
	free(data);
}

/* Writes and fsyncs on the crash-test file so far (its growth ahead of
 * the data, a truncate, is no IO). */
static size_t io_events(void)
{
	size_t n = 0, ev;

	for (ev = 0; ev < cf_nevents(cf); ev++)
		n += cf_event_is_write(cf, ev) || cf_event_is_flush(cf, ev);
	return n;
}

static bool in_range(uint64_t off, uint64_t start, uint64_t len)
{
	return off >= start && off < start + len;
}

static void test_nowait_growth(void)
{
	struct qcow_image *img = open_geometry(9, 8);	/* 512-byte clusters: a block per 128 KiB */
	struct qcow_io ios[8];
	struct qcow_stats st;
	uint64_t off = 0, ti, block = 0, rt_start, rt_len;
	int blk_at = -1, blk_sync = -1, rt_at = -1, rt_sync = -1, l2_at = -1, at = 0, n, i;
	size_t engine = 0;

	cf_record_start(cf);
	do {
		uint8_t b[4096];

		memset(b, (uint8_t)(1 + off / 4096), sizeof(b));
		REQUIRE(t_nowait_write(img, b, off, sizeof(b), io_events, &engine) == 0,
			"nowait write: %s", qcow_error(img));
		off += 4096;
		qcow_get_stats(img, &st);
	} while (!st.refcount_growths && off < (8 << 20));
	CHECK(st.refcount_growths > 0, "no refcount block was added in %" PRIu64 " bytes", off);
	CHECK(engine == 0, "the nowait writes did %zu IOs themselves", engine);
	for (ti = 0; ti < img->refcount_table_size && !block; ti++)
		if (img->rt_dirty[ti])
			block = img->refcount_table[ti];
	REQUIRE(block, "no table entry waits for the flush");
	rt_start = img->refcount_table_offset;
	rt_len = (uint64_t)img->refcount_table_clusters << 9;
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	while ((n = qcow_flush_next(img, ios, 8)) > 0) {
		for (i = 0; i < n; i++, at++) {
			if (ios[i].op == QCOW_IO_FSYNC) {
				if (blk_at >= 0 && blk_sync < 0)
					blk_sync = at;
				if (rt_at >= 0 && rt_sync < 0)
					rt_sync = at;
			} else if (ios[i].op == QCOW_IO_WRITE && ios[i].offset == block) {
				blk_at = at;
			} else if (ios[i].op == QCOW_IO_WRITE &&
				   in_range(ios[i].offset, rt_start, rt_len)) {
				rt_at = at;
				CHECK(ios[i].len % 512 == 0 && ios[i].offset % 512 == 0,
				      "refcount table write of %zu bytes at 0x%" PRIx64 ": not sectors",
				      ios[i].len, ios[i].offset);
			} else if (ios[i].op == QCOW_IO_WRITE && l2_at < 0 && rt_at >= 0) {
				l2_at = at;
			}
		}
		qcow_flush_io_done(img, do_batch(img, ios, n));
	}
	CHECK(n == 0, "flush: %d %s", n, qcow_error(img));
	CHECK(blk_at >= 0 && blk_sync > blk_at, "the new block (0x%" PRIx64 ") was not written "
	      "and synced (write %d, fsync %d)", block, blk_at, blk_sync);
	CHECK(rt_at > blk_sync, "its table entry was written at %d, before the block's fsync at %d",
	      rt_at, blk_sync);
	CHECK(rt_sync > rt_at && (l2_at < 0 || l2_at > rt_sync), "the entry (write %d, fsync %d) "
	      "was not durable before the L2 tables (first write %d)", rt_at, rt_sync, l2_at);
	CHECK(!img->rt_any_dirty, "entries still wait after the flush");
	qemu_check_now("nowait-growth");
	CHECK(qcow_close(img) == 0, "close");
	cf_free(cf);
}

int main(void)
{
	t_init("test-flush");
	test_counts();
	test_no_table_write_behind();
	test_frees_after_start();
	test_fsync_covers_only_before();
	test_one_at_a_time();
	test_failed_batch();
	test_frees_read_blocks();
	test_nowait_growth();
	test_own_sync();
	return t_finish();
}
