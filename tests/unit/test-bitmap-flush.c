/* SPDX-License-Identifier: MIT */
/*
 * Persistent bitmaps written back by a flush, as a server runs it
 * (format/bitmap_keep.c B1-B4, flush.c's bitmap steps): a qemu-made image
 * with two enabled bitmaps (64 KiB granularity, and 512 bytes, whose piece
 * then changes in several blocks at once) takes writes the daemon's way
 * (t_nowait_write) and flushes driven batch by batch; after each step a
 * copy of the file, as a backup tool would take it, is looked at with
 * qemu-img (check, info) and its bits read back:
 *   - a flush asked to write back (QCOW_FLUSH_BITMAPS) leaves the bitmap
 *     consistent, holding exactly the granules written, qemu-img check
 *     clean, the handle still open;
 *   - the next write waits (-EBUSY, QCOW_WAIT_WRITEBACK) until a flush has
 *     set IN_USE again; only then does it go on, and the copy is IN_USE;
 *   - a flush not asked to write back (a cache's, --recoverable's) leaves
 *     the bitmap IN_USE; a write-back asked for while another flush runs
 *     is owed, and the next flush does it;
 *   - a write marked after a write-back began keeps the bitmap IN_USE;
 *   - while the directory without IN_USE is being written, a write waits
 *     for the flush's end (QCOW_WAIT_FLUSH);
 *   - the close leaves it consistent with every write.
 * Exit 0 pass, 77 skip (no qemu-img), else fail.
 */
#include "internal.h"
#include "testlib.h"

#define DISK (16ULL << 20)
#define MAX_BITS (DISK / 512)
#define MAX_WRITES 16
#define BITMAPS_EXT 0x23852875U

static const struct {
	const char *name;
	uint64_t gran;
} bitmaps[] = { { "b", 64 << 10 }, { "fine", 512 } };
#define NB_BITMAPS (sizeof(bitmaps) / sizeof(bitmaps[0]))

static const char *g_path;
static struct { uint64_t off, len; } g_writes[MAX_WRITES];
static unsigned g_nwrites, g_copies;

/* The bitmap directory's offset, from the header's bitmaps extension. */
static uint64_t dir_offset(void)
{
	uint64_t off = t_be32_at(g_path, 100);  /* header_length */

	for (;;) {
		uint32_t magic = t_be32_at(g_path, off), len = t_be32_at(g_path, off + 4);

		if (!magic)
			return 0;
		if (magic == BITMAPS_EXT)
			return t_be64_at(g_path, off + 8 + 16);
		off += 8 + QCOW_ALIGN_UP(len, 8);
	}
}

/* A write the daemon's way; its granules are wanted from now on. */
static void write_at(struct qcow_image *img, uint64_t off, uint64_t len)
{
	static uint8_t buf[256 << 10];

	memset(buf, 0x5c, len);
	REQUIRE(t_nowait_write(img, buf, off, len, NULL, NULL) == 0, "write at %" PRIu64 ": %s",
		off, qcow_error(img));
	REQUIRE(g_nwrites < MAX_WRITES, "too many writes");
	g_writes[g_nwrites].off = off;
	g_writes[g_nwrites++].len = len;
}

/* Must granule k of a bitmap of granularity gran be set? */
static bool wanted(uint64_t gran, uint64_t k)
{
	unsigned w;

	for (w = 0; w < g_nwrites; w++) {
		if (k >= g_writes[w].off / gran &&
		    k <= (g_writes[w].off + g_writes[w].len - 1) / gran)
			return true;
	}
	return false;
}

/* One batch with the file ops, as the daemon's ring would do it. */
static void run_batch(struct qcow_image *img, const struct qcow_io *ios, int n)
{
	int i, r = 0;

	for (i = 0; r == 0 && i < n; i++)
		r = qcow_io_do(img, &ios[i]);
	qcow_flush_io_done(img, r);
}

/* A flush started with flags, driven to its end; 1: nothing to do. */
static int flush_run(struct qcow_image *img, unsigned flags)
{
	struct qcow_io ios[16];
	int r = qcow_flush_start(img, flags), n;

	if (r != 0)
		return r;
	while ((n = qcow_flush_next(img, ios, 16)) > 0)
		run_batch(img, ios, n);
	return n;
}

/* Bitmap b of the file at path: its bits into bits, its flags. */
static bool read_bits(const char *path, unsigned b, bool *bits, uint32_t *flags)
{
	struct qcow_open_opts ro = { .read_only = true, .no_backing = true };
	struct qcow_image *img = NULL;
	struct qcow_bitmap_info *v = NULL;
	static uint8_t piece[64 << 10];
	uint64_t e = 0, nbits = DISK / bitmaps[b].gran, k;
	uint32_t n = 0, j = 0;
	char err[512] = "";
	bool ok;

	if (qcow_open(path, &ro, &img, err, sizeof(err)) < 0) {
		CHECK(0, "open %s: %s", path, err);
		return false;
	}
	ok = qcow_bitmap_list(img, &v, &n) == 0 && n == NB_BITMAPS;
	for (j = 0; ok && j < n && strcmp(v[j].name, bitmaps[b].name); j++)
		;
	ok = ok && j < n && v[j].table_size == 1;
	CHECK(ok, "%s: bitmap %s of one piece among %u: %s", path, bitmaps[b].name, n,
	      qcow_error(img));
	if (ok) {
		*flags = v[j].flags;
		e = t_be64_at(path, v[j].table_offset) & 0x00fffffffffffe00ULL;
		memset(piece, 0, sizeof(piece));
		if (e)
			ok = t_read_at(path, e, piece, nbits / 8) == 0;
		for (k = 0; k < nbits; k++)
			bits[k] = piece[k / 8] >> (k % 8) & 1;
	}
	qcow_bitmap_list_free(v, n);
	qcow_close(img);
	return ok;
}

/*
 * A copy of the file now, as a backup tool takes it: consistent (bitmap
 * not IN_USE, exactly the granules written, qemu-img check clean) or not
 * (IN_USE, and qemu-img check finds no error).
 */
static void copy_is(const char *what, bool consistent)
{
	const char *copy = t_path("copy-%u.qcow2", ++g_copies);
	static bool bits[MAX_BITS];
	uint32_t flags = 0;
	unsigned b;
	uint64_t k, bad;
	int r;

	REQUIRE(t_copy_file(g_path, copy) == 0, "copy %s", copy);
	r = t_qemu_check(copy);
	CHECK(consistent ? r == 0 : r == 0 || r == 3, "%s: qemu-img check exits %d", what, r);
	for (b = 0; b < NB_BITMAPS; b++) {
		if (!read_bits(copy, b, bits, &flags))
			return;
		CHECK(!(flags & QCOW_BITMAP_IN_USE) == consistent, "%s: bitmap %s is %sin use",
		      what, bitmaps[b].name, flags & QCOW_BITMAP_IN_USE ? "" : "not ");
		for (k = 0, bad = 0; consistent && k < DISK / bitmaps[b].gran; k++)
			bad += bits[k] != wanted(bitmaps[b].gran, k);
		CHECK(!bad, "%s: bitmap %s has %" PRIu64 " granules wrong", what,
		      bitmaps[b].name, bad);
	}
}

/* A write now: -EBUSY waiting for why, nothing else. */
static void write_waits(struct qcow_image *img, enum qcow_wait why, const char *what)
{
	struct qcow_write_plan plan;
	struct qcow_meta_read need;
	int r = qcow_write_begin_nowait(img, 10 << 20, 4096, &plan, &need);

	CHECK(r == -EBUSY && qcow_busy_reason(img) == why, "%s: a write got %d (wait %d), "
	      "want -EBUSY waiting for %d", what, r, qcow_busy_reason(img), why);
	if (r == 0)
		qcow_write_end(img, &plan, -EIO);
}

/* A write-back during which a write is marked: IN_USE stays. */
static void write_during_writeback(struct qcow_image *img)
{
	struct qcow_io ios[16];
	int n;

	REQUIRE(qcow_flush_start(img, QCOW_FLUSH_BITMAPS) == 0, "start: %s", qcow_error(img));
	n = qcow_flush_next(img, ios, 16);
	REQUIRE(n > 0, "a first batch: %d", n);
	write_at(img, 7 << 20, 4096);	/* marked after the start */
	run_batch(img, ios, n);
	while ((n = qcow_flush_next(img, ios, 16)) > 0)
		run_batch(img, ios, n);
	CHECK(n == 0, "the flush ends: %s", qcow_error(img));
	copy_is("a write marked during the write-back", false);
}

/* While the directory without IN_USE is on its way, writes wait. */
static void write_during_clear(struct qcow_image *img)
{
	uint64_t dir = dir_offset();
	struct qcow_io ios[16];
	bool seen = false;
	int n;

	REQUIRE(dir, "the bitmaps extension names a directory");
	REQUIRE(qcow_flush_start(img, QCOW_FLUSH_BITMAPS) == 0, "start: %s", qcow_error(img));
	while ((n = qcow_flush_next(img, ios, 16)) > 0) {
		if (n == 1 && ios[0].op == QCOW_IO_WRITE && ios[0].offset == dir) {
			seen = true;
			write_waits(img, QCOW_WAIT_FLUSH, "during the clear");
		}
		run_batch(img, ios, n);
	}
	CHECK(n == 0 && seen, "the flush ends (%d), having written the directory (%d)", n, seen);
	copy_is("after the clear", true);
	write_waits(img, QCOW_WAIT_WRITEBACK, "after the clear");
}

static void scenario(void)
{
	struct qcow_image *img = NULL;
	char err[512] = "";
	struct qcow_io ios[16];
	int r, n;

	REQUIRE(qcow_open(g_path, NULL, &img, err, sizeof(err)) == 0, "open: %s", err);
	copy_is("opened", false);
	write_at(img, 1 << 20, 64 << 10);
	write_at(img, (3 << 20) + 100, 4000);
	CHECK(flush_run(img, QCOW_FLUSH_BITMAPS) == 0, "guest flush: %s", qcow_error(img));
	copy_is("after a guest flush", true);

	write_waits(img, QCOW_WAIT_WRITEBACK, "after the write-back");
	copy_is("a write waiting", true);
	write_at(img, 5 << 20, 200 << 10);	/* runs the flush that sets IN_USE */
	copy_is("after the next write", false);
	CHECK(flush_run(img, 0) == 0, "a metadata flush: %s", qcow_error(img));
	copy_is("after a flush that does not write back", false);

	/* owed: asked for while another flush runs */
	write_at(img, 6 << 20, 4096);
	REQUIRE(qcow_flush_start(img, 0) == 0, "start: %s", qcow_error(img));
	r = qcow_flush_start(img, QCOW_FLUSH_BITMAPS);
	CHECK(r == -EBUSY, "a second start: %d", r);
	while ((n = qcow_flush_next(img, ios, 16)) > 0)
		run_batch(img, ios, n);
	copy_is("the first flush over", false);
	CHECK(flush_run(img, 0) == 0, "the next flush: %s", qcow_error(img));
	copy_is("the owed write-back", true);

	write_at(img, 9 << 20, 4096);
	write_during_writeback(img);
	write_during_clear(img);
	write_at(img, 12 << 20, 8192);
	CHECK(qcow_close(img) == 0, "close");
	copy_is("closed", true);
}

int main(void)
{
	t_init("test-bitmap-flush");
	if (!t_want_qemu())
		return T_SKIP;
	g_path = t_path("flushed.qcow2");
	REQUIRE(t_run(NULL, 0, "qemu-img create -q -f qcow2 '%s' %llu", g_path,
		      (unsigned long long)DISK) == 0, "qemu-img create");
	REQUIRE(t_run(NULL, 0, "qemu-io -f qcow2 -c 'write -q -P 1 0 256k' '%s'", g_path) == 0,
		"qemu-io");
	REQUIRE(t_run(NULL, 0, "qemu-img bitmap --add -g 64k '%s' b", g_path) == 0 &&
		t_run(NULL, 0, "qemu-img bitmap --add -g 512 '%s' fine", g_path) == 0,
		"qemu-img bitmap");
	scenario();
	return t_finish();
}
