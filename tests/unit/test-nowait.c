/* SPDX-License-Identifier: MIT */
/*
 * The split API for asynchronous callers:
 *  - qcow_map_nowait on a cold cache returns -EAGAIN and names the L2 table
 *    read; a second miss on the same table gives -EBUSY; a table whose L1
 *    entry is empty needs no read; after qcow_meta_read_done the answer
 *    matches qcow_map on an independent handle; a failed read frees the
 *    slot (the next call asks again instead of -EBUSY); with every slot
 *    dirty it writes none back but asks for a flush (QCOW_WAIT_WRITEBACK);
 *  - qcow_write_begin_nowait, qcow_discard_nowait, qcow_write_zeroes_nowait
 *    on a cold cache: the L2 table (and refcount block) reads asked for,
 *    then the plan or the change;
 *  - qcow_write_begin/qcow_write_end: the plan, -EBUSY for an overlapping
 *    begin (also with another plan ended before it), in-place rewrites,
 *    rollback on a failed data write, partial clusters, multi-run ranges,
 *    several plans in flight at once;
 *    qemu-img check clean at the end.
 */
#include "internal.h"
#include "testlib.h"

#define CB 9
#define CS (1ULL << CB)
#define L2COV (CS / 8 * CS)      /* 32 KiB of guest per L2 table */
#define SIZE (1ULL << 20)

static bool have_qemu;

static struct qcow_image *open_img(const char *path, bool ro, uint64_t l2_cache)
{
	struct qcow_open_opts oo = { .read_only = ro, .l2_cache_bytes = l2_cache };
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r = qcow_open(path, &oo, &img, err, sizeof(err));

	REQUIRE(r == 0 && img, "open %s: %d %s", path, r, err);
	return img;
}

/* Serve a meta read the way an io_uring caller would: through the file. */
static int serve(struct qcow_image *img, const struct qcow_meta_read *need)
{
	const struct qcow_file *f = qcow_get_file(img);
	return f->ops->pread(f->ctx, need->buf, need->len, need->offset);
}

static bool same_extent(const struct qcow_extent *a, const struct qcow_extent *b)
{
	if (a->guest_offset != b->guest_offset || a->length != b->length || a->kind != b->kind)
		return false;
	if (a->kind == QCOW_EXTENT_DATA)
		return a->host_offset == b->host_offset;
	return true;
}

/* map_nowait until it answers, serving reads; counts the reads served. */
static int map_served(struct qcow_image *img, uint64_t off, uint64_t len,
		      struct qcow_extent *e, unsigned *reads)
{
	for (int tries = 0; tries < 8; tries++) {
		struct qcow_meta_read need = { 0 };
		int r = qcow_map_nowait(img, off, len, e, &need);
		if (r != -EAGAIN)
			return r;
		(*reads)++;
		r = serve(img, &need);
		CHECK(r == 0, "pread for meta read: %d", r);
		r = qcow_meta_read_done(img, &need, r);
		CHECK(r == 0, "meta_read_done: %d %s", r, qcow_error(img));
	}
	return -ELOOP;
}

static void make_data_image(const char *path, uint8_t *model)
{
	struct qcow_create_opts co = { .size = SIZE, .cluster_bits = CB };
	struct qcow_image *img;
	char err[512];

	REQUIRE(qcow_create(path, &co, false, err, sizeof(err)) == 0, "create: %s", err);
	img = open_img(path, false, 0);
	/* data in L2 tables 0..11 (not all clusters), nothing in 12.. */
	for (uint64_t t = 0; t < 12; t++) {
		uint64_t off = t * L2COV + (t % 4 + 1) * CS;
		t_fill_random(model + off, 3 * CS + 77);
		CHECK(qcow_write(img, model + off, off, 3 * CS + 77) == 0, "write: %s",
		      qcow_error(img));
	}
	CHECK(qcow_close(img) == 0, "close");
}

static void test_map_nowait(void)
{
	const char *path = t_path("nowait.qcow2");
	uint8_t *model = calloc(1, SIZE);
	struct qcow_image *img, *ref;
	struct qcow_meta_read need = { 0 }, need2 = { 0 }, need3 = { 0 };
	struct qcow_extent e, re;
	unsigned reads = 0;
	int r;

	REQUIRE(model, "oom");
	make_data_image(path, model);
	img = open_img(path, false, 0);
	ref = open_img(path, true, 0);

	r = qcow_map_nowait(img, CS + 10, 100, &e, &need);
	CHECK(r == -EAGAIN, "cold map_nowait returned %d, want -EAGAIN", r);
	CHECK(need.len == CS && need.buf != NULL, "meta read len %zu buf %p", need.len, need.buf);
	CHECK(need.offset == (img->l1_table[0] & QCOW_L1E_OFFSET_MASK),
	      "meta read at %#" PRIx64 ", L1[0] says %#" PRIx64, need.offset,
	      (uint64_t)(img->l1_table[0] & QCOW_L1E_OFFSET_MASK));

	r = qcow_map_nowait(img, 2 * CS, 100, &e, &need3);
	CHECK(r == -EBUSY, "second miss on the same table returned %d, want -EBUSY", r);

	r = qcow_map_nowait(img, L2COV + 5 * CS, 100, &e, &need2);
	CHECK(r == -EAGAIN, "miss on another table returned %d", r);
	CHECK(r != -EAGAIN || need2.offset != need.offset, "two tables, one read offset");

	/* L1 entry 25 is empty: nothing to read, unallocated */
	memset(&need3, 0, sizeof(need3));
	r = qcow_map_nowait(img, 25 * L2COV + 3, 1000, &e, &need3);
	CHECK(r >= 0 && e.kind == QCOW_EXTENT_UNALLOCATED && e.guest_offset == 25 * L2COV + 3 &&
	      e.length == 1000, "map of an empty L1 entry: %d kind %d len %" PRIu64,
	      r, e.kind, e.length);

	r = serve(img, &need);
	REQUIRE(r == 0, "pread: %d", r);
	r = qcow_meta_read_done(img, &need, 0);
	CHECK(r == 0, "meta_read_done: %d %s", r, qcow_error(img));
	r = qcow_map_nowait(img, CS + 10, 100, &e, &need3);
	CHECK(r >= 0, "map_nowait after the read: %d", r);
	CHECK(qcow_map(ref, CS + 10, 100, &re) >= 0 && same_extent(&e, &re),
	      "nowait kind %d len %" PRIu64 " host %#" PRIx64 " vs map kind %d len %" PRIu64
	      " host %#" PRIx64, e.kind, e.length, e.host_offset, re.kind, re.length,
	      re.host_offset);

	/* a failed read releases the slot: the next call asks again */
	if (need2.buf) {
		r = qcow_meta_read_done(img, &need2, -EIO);
		CHECK(r <= 0, "meta_read_done(-EIO) returned %d", r);
		memset(&need2, 0, sizeof(need2));
		r = qcow_map_nowait(img, L2COV + 5 * CS, 100, &e, &need2);
		CHECK(r == -EAGAIN, "after a failed read map_nowait returned %d, want -EAGAIN", r);
		if (r == -EAGAIN) {
			CHECK(serve(img, &need2) == 0, "pread");
			CHECK(qcow_meta_read_done(img, &need2, 0) == 0, "done");
		}
	}

	/* every offset: nowait (served) agrees with the synchronous map */
	for (int i = 0; i < 400; i++) {
		uint64_t off = t_rand_below(SIZE), len = 1 + t_rand_below(3 * L2COV);
		if (len > SIZE - off)
			len = SIZE - off;
		r = map_served(img, off, len, &e, &reads);
		CHECK(r >= 0, "map_served(%#" PRIx64 "): %d", off, r);
		CHECK(qcow_map(ref, off, len, &re) >= 0, "map");
		if (r >= 0 && !same_extent(&e, &re)) {
			CHECK(0, "at %#" PRIx64 ": nowait kind %d len %" PRIu64 " vs map kind %d len %"
			      PRIu64, off, e.kind, e.length, re.kind, re.length);
			break;
		}
	}
	CHECK(reads <= 12, "%u meta reads for 12 L2 tables with a big cache", reads);
	qcow_close(ref);
	qcow_close(img);

	/* a one-table cache: every table switch is a read, answers stay right */
	img = open_img(path, true, CS);
	ref = open_img(path, true, 0);
	reads = 0;
	for (int i = 0; i < 200; i++) {
		uint64_t off = (t_rand_below(12) * L2COV) + t_rand_below(L2COV);
		r = map_served(img, off, CS, &e, &reads);
		CHECK(r >= 0 && qcow_map(ref, off, CS, &re) >= 0 && same_extent(&e, &re),
		      "1-slot cache at %#" PRIx64 ": %d", off, r);
	}
	CHECK(reads > 12, "a one-table cache never evicted (%u reads)", reads);
	qcow_close(ref);
	qcow_close(img);
	free(model);
}

static int pwrite_file(struct qcow_image *img, const void *buf, uint64_t len, uint64_t off)
{
	const struct qcow_file *f = qcow_get_file(img);
	return f->ops->pwrite(f->ctx, buf, len, off);
}

/* Write [off, off+len) through begin/end, run by run. */
static int split_write(struct qcow_image *img, const uint8_t *buf, uint64_t off, uint64_t len)
{
	uint64_t done = 0;

	while (done < len) {
		struct qcow_write_plan p;
		int r = qcow_write_begin(img, off + done, len - done, &p);
		if (r)
			return r;
		CHECK(p.guest_offset == off + done && p.length > 0 && p.length <= len - done,
		      "plan guest %#" PRIx64 " len %" PRIu64 " for [%#" PRIx64 "+%" PRIu64 "]",
		      p.guest_offset, p.length, off + done, len - done);
		if (p.length == 0 || p.length > len - done)
			return -EIO;
		r = pwrite_file(img, buf + done, p.length, p.host_offset);
		r = qcow_write_end(img, &p, r);
		if (r)
			return r;
		done += p.length;
	}
	return 0;
}

static void test_write_split(void)
{
	const char *path = t_path("split.qcow2");
	struct qcow_create_opts co = { .size = SIZE, .cluster_bits = CB };
	uint8_t *model = calloc(1, SIZE), *back = malloc(SIZE);
	struct qcow_write_plan p1 = { 0 }, p2 = { 0 }, p3 = { 0 }, px;
	struct qcow_image *img;
	struct qcow_extent e;
	uint8_t data[4096];
	char err[512];
	int r;

	REQUIRE(model && back, "oom");
	REQUIRE(qcow_create(path, &co, false, err, sizeof(err)) == 0, "create: %s", err);
	img = open_img(path, false, 0);

	r = qcow_write_begin(img, 0, 4096, &p1);
	REQUIRE(r == 0, "write_begin: %d %s", r, qcow_error(img));
	CHECK(p1.guest_offset == 0 && p1.length > 0 && p1.length <= 4096,
	      "plan: guest %#" PRIx64 " len %" PRIu64, p1.guest_offset, p1.length);
	CHECK(p1.host_offset % CS == 0 && p1.host_offset >= CS &&
	      p1.host_offset != img->l1_table_offset && p1.host_offset != img->refcount_table_offset,
	      "plan host offset %#" PRIx64, p1.host_offset);

	px = p1;
	r = qcow_write_begin(img, 0, 512, &px);
	CHECK(r == -EBUSY, "overlapping write_begin returned %d, want -EBUSY", r);
	r = qcow_write_begin(img, p1.length - 1, 2, &px);
	CHECK(r == -EBUSY, "write_begin overlapping the tail of a plan returned %d", r);

	r = qcow_write_begin(img, 64 << 10, 512, &p2);
	CHECK(r == 0, "disjoint write_begin: %d %s", r, qcow_error(img));
	CHECK(r != 0 || p2.host_offset + p2.length <= p1.host_offset ||
	      p2.host_offset >= p1.host_offset + p1.length, "two plans share host space");

	/* finish p1 with data */
	t_fill_random(data, sizeof(data));
	CHECK(pwrite_file(img, data, p1.length, p1.host_offset) == 0, "pwrite");
	r = qcow_write_end(img, &p1, 0);
	CHECK(r == 0, "write_end: %d %s", r, qcow_error(img));
	/* p1 was the first of the two in flight: p2's range is still taken */
	r = qcow_write_begin(img, 64 << 10, 512, &px);
	CHECK(r == -EBUSY, "write_begin over p2 after p1 ended returned %d, want -EBUSY", r);
	memcpy(model, data, p1.length);
	CHECK(qcow_read(img, back, 0, 4096) == 0 && !memcmp(back, model, 4096),
	      "data written through the plan");

	/* the same range again: in place, no new cluster */
	r = qcow_write_begin(img, 0, 512, &p3);
	CHECK(r == 0, "write_begin after write_end: %d", r);
	if (r == 0) {
		CHECK(p3.host_offset == p1.host_offset && p3.new_host_cluster == 0,
		      "rewrite not in place: %#" PRIx64 " vs %#" PRIx64, p3.host_offset,
		      p1.host_offset);
		t_fill_random(data, 512);
		CHECK(pwrite_file(img, data, 512, p3.host_offset) == 0, "pwrite");
		CHECK(qcow_write_end(img, &p3, 0) == 0, "write_end in place");
		memcpy(model, data, 512);
	}

	/* p2's data write failed: nothing may be published */
	if (p2.length) {
		r = qcow_write_end(img, &p2, -EIO);
		CHECK(qcow_map(img, 64 << 10, 512, &e) >= 0 && e.kind != QCOW_EXTENT_DATA,
		      "failed write published a mapping (kind %d)", e.kind);
		CHECK(qcow_read(img, back, 64 << 10, 512) == 0 && !memcmp(back, model + (64 << 10), 512),
		      "failed write changed the guest data");
	}

	/* partial cluster: the rest of the cluster reads zero */
	t_fill_random(data, 50);
	CHECK(split_write(img, data, 200 * 1024 + 100, 50) == 0, "partial split write: %s",
	      qcow_error(img));
	memcpy(model + 200 * 1024 + 100, data, 50);
	/* unaligned multi-run range across L2 tables */
	{
		static uint8_t big[3 * L2COV];
		uint64_t off = 9 * L2COV - 1234;
		t_fill_random(big, sizeof(big));
		CHECK(split_write(img, big, off, sizeof(big) - 99) == 0, "multi-run write: %s",
		      qcow_error(img));
		memcpy(model + off, big, sizeof(big) - 99);
	}
	/* several plans in flight, ended in reverse order */
	{
		struct qcow_write_plan ps[8];
		uint8_t bufs[8][CS];
		int n = 0;
		for (int i = 0; i < 8; i++) {
			uint64_t off = 20 * L2COV + (uint64_t)i * 3 * CS;
			r = qcow_write_begin(img, off, CS, &ps[n]);
			CHECK(r == 0, "in-flight plan %d: %d", i, r);
			if (r)
				continue;
			t_fill_random(bufs[n], CS);
			CHECK(pwrite_file(img, bufs[n], ps[n].length, ps[n].host_offset) == 0, "pw");
			n++;
		}
		for (int i = n - 1; i >= 0; i--) {
			CHECK(qcow_write_end(img, &ps[i], 0) == 0, "end %d", i);
			memcpy(model + ps[i].guest_offset, bufs[i], ps[i].length);
		}
	}
	CHECK(qcow_read(img, back, 0, SIZE) == 0 && t_first_diff(back, model, SIZE) < 0,
	      "split writes: data differs at %" PRId64, t_first_diff(back, model, SIZE));
	CHECK(qcow_close(img) == 0, "close");

	img = open_img(path, true, 0);
	CHECK(qcow_read(img, back, 0, SIZE) == 0 && t_first_diff(back, model, SIZE) < 0,
	      "split writes after reopen: differs at %" PRId64, t_first_diff(back, model, SIZE));
	qcow_close(img);
	if (have_qemu)
		CHECK(t_qemu_check(path) == 0, "split-write image not clean");
	free(model);
	free(back);
}

/*
 * A cache whose every slot holds a dirty table: map_nowait does not write one
 * back under the caller's lock; it says a flush must make room
 * (QCOW_WAIT_WRITEBACK), the tables stay unwritten, and after the flush the
 * load goes ahead.
 */
static void test_writeback(void)
{
	const char *path = t_path("writeback.qcow2");
	struct qcow_create_opts co = { .size = SIZE, .cluster_bits = CB };
	struct qcow_meta_read need = { 0 };
	struct qcow_image *img, *ref;
	struct qcow_extent e, re;
	uint8_t data[512];
	char err[512];
	int r, t;

	REQUIRE(qcow_create(path, &co, false, err, sizeof(err)) == 0, "create: %s", err);
	img = open_img(path, false, CS);	/* the fewest slots: 4 */
	memset(data, 0x5c, sizeof(data));
	for (t = 0; t < 6; t++)
		REQUIRE(qcow_write(img, data, (uint64_t)t * L2COV, 512) == 0, "write: %s",
			qcow_error(img));
	REQUIRE(qcow_flush(img) == 0, "flush: %s", qcow_error(img));
	for (t = 0; t < 4; t++)		/* four tables dirty: a new cluster each */
		REQUIRE(qcow_write(img, data, (uint64_t)t * L2COV + CS, 512) == 0, "write: %s",
			qcow_error(img));
	r = qcow_map_nowait(img, 5 * L2COV, 512, &e, &need);
	CHECK(r == -EBUSY && qcow_busy_reason(img) == QCOW_WAIT_WRITEBACK,
	      "map_nowait with every slot dirty: %d (wait %d), wanted -EBUSY for a write-back",
	      r, r == -EBUSY ? (int)qcow_busy_reason(img) : -1);
	CHECK(qcow_metadata_unwritten(img), "the dirty tables were written back under the lock");
	REQUIRE(qcow_flush(img) == 0, "flush: %s", qcow_error(img));
	r = qcow_map_nowait(img, 5 * L2COV, 512, &e, &need);
	CHECK(r == -EAGAIN, "map_nowait after the flush: %d, wanted a load", r);
	if (r == -EAGAIN) {
		CHECK(serve(img, &need) == 0, "pread");
		CHECK(qcow_meta_read_done(img, &need, 0) == 0, "done");
		r = qcow_map_nowait(img, 5 * L2COV, 512, &e, &need);
		ref = open_img(path, true, 0);
		CHECK(r == 0 && qcow_map(ref, 5 * L2COV, 512, &re) == 0 && same_extent(&e, &re),
		      "map after the load: %d", r);
		qcow_close(ref);
	}
	CHECK(qcow_close(img) == 0, "close");
	if (have_qemu)
		CHECK(t_qemu_check(path) == 0, "qemu-img check %s", path);
}

/*
 * write_begin_nowait on a cold cache leaves every table read to the caller:
 * the L2 table, then the refcount block the allocator searches (the image
 * has more blocks than the cache holds); once they are served the plan is
 * the same as the synchronous call's would be, and the write reads back.
 */
static void test_nowait_alloc(void)
{
	const char *path = t_path("alloc.qcow2");
	struct qcow_create_opts co = { .size = SIZE, .cluster_bits = CB };
	struct qcow_open_opts oo = { .l2_cache_bytes = CS, .refcount_cache_bytes = CS };
	struct qcow_meta_read need;
	struct qcow_write_plan p;
	struct qcow_image *img;
	uint8_t *data = malloc(SIZE), back[512];
	unsigned l2_reads = 0, rc_reads = 0, tries;
	char err[512];
	int r;

	REQUIRE(data, "oom");
	REQUIRE(qcow_create(path, &co, false, err, sizeof(err)) == 0, "create: %s", err);
	img = open_img(path, false, 0);
	memset(data, 0x3c, SIZE);
	/* 7/8 of the guest but its last cluster: some 1800 clusters, 8
	 * refcount blocks of 256; that cluster's L2 table exists */
	REQUIRE(qcow_write(img, data, 0, SIZE / 8 * 7 - CS) == 0, "write: %s", qcow_error(img));
	REQUIRE(qcow_close(img) == 0, "close");
	r = qcow_open(path, &oo, &img, err, sizeof(err));
	REQUIRE(r == 0, "open: %s", err);
	for (tries = 0; tries < 10; tries++) {
		memset(&need, 0, sizeof(need));
		r = qcow_write_begin_nowait(img, SIZE / 8 * 7 - CS, 512, &p, &need);
		if (r != -EAGAIN)
			break;
		l2_reads += need.cache == QCOW_TABLE_L2;
		rc_reads += need.cache == QCOW_TABLE_REFCOUNT;
		CHECK(serve(img, &need) == 0, "pread");
		CHECK(qcow_meta_read_done(img, &need, 0) == 0, "meta_read_done: %s", qcow_error(img));
	}
	REQUIRE(r == 0, "write_begin_nowait after %u reads: %d %s", tries, r, qcow_error(img));
	CHECK(l2_reads == 1 && rc_reads >= 1, "reads asked for: %u L2 tables, %u refcount blocks; "
	      "wanted 1 and at least 1", l2_reads, rc_reads);
	CHECK(p.cow[0].kind == QCOW_COW_NONE && p.cow[1].kind == QCOW_COW_NONE,
	      "a whole-cluster write into an empty cluster has copy-on-write parts");
	memset(back, 0xc3, sizeof(back));
	r = pwrite_file(img, back, 512, p.host_offset);
	CHECK(qcow_write_end(img, &p, r) == 0, "write_end: %s", qcow_error(img));
	memset(back, 0, sizeof(back));
	CHECK(qcow_read(img, back, SIZE / 8 * 7 - CS, 512) == 0 && back[0] == 0xc3 &&
	      back[511] == 0xc3,
	      "the nowait write does not read back");
	/* discard and zeroing on a cold cache: the table read first, then done */
	CHECK(qcow_close(img) == 0, "close");
	r = qcow_open(path, &oo, &img, err, sizeof(err));
	REQUIRE(r == 0, "open: %s", err);
	for (int op = 0; op < 2; op++) {
		uint64_t at = (op ? 3 : 1) * L2COV;
		unsigned reads = 0;

		do {
			memset(&need, 0, sizeof(need));
			r = op ? qcow_write_zeroes_nowait(img, at, L2COV, QCOW_ZERO_MAY_UNMAP, &need)
			       : qcow_discard_nowait(img, at, L2COV, &need);
			if (r == -EAGAIN) {
				reads++;
				CHECK(need.cache == QCOW_TABLE_L2 && serve(img, &need) == 0, "read");
				CHECK(qcow_meta_read_done(img, &need, 0) == 0, "meta_read_done");
			}
		} while (r == -EAGAIN && reads < 5);
		CHECK(r == 0 && reads == 1, "%s on a cold cache: %d after %u reads, wanted 0 after 1",
		      op ? "write_zeroes_nowait" : "discard_nowait", r, reads);
		CHECK(qcow_read(img, data, at, L2COV) == 0 && data[0] == 0 &&
		      !memcmp(data, data + 1, L2COV - 1), "%s range does not read as zeros",
		      op ? "zeroed" : "discarded");
	}
	CHECK(qcow_close(img) == 0, "close");
	if (have_qemu)
		CHECK(t_qemu_check(path) == 0, "qemu-img check %s", path);
	free(data);
}

int main(void)
{
	t_init("nowait");
	have_qemu = t_want_qemu();
	test_map_nowait();
	test_write_split();
	test_writeback();
	test_nowait_alloc();
	return t_finish();
}
