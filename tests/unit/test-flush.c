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
 */
#include "crashfile.h"
#include "internal.h"
#include "testlib.h"

#define CS 65536ULL

static struct crashfile *cf;

static struct qcow_image *open_new(void)
{
	struct qcow_create_opts co = { .size = 64 << 20, .cluster_bits = 16, .version = 3 };
	struct qcow_image *img = NULL;
	struct qcow_file f;
	char err[512] = "";
	int r;

	cf = cf_new(NULL, 0);
	REQUIRE(cf, "cf_new");
	cf_get_file(cf, &f);
	r = qcow_create_file(&f, "cf", &co, err, sizeof(err));
	REQUIRE(r == 0, "create: %d %s", r, err);
	r = qcow_open_file(&f, "cf", NULL, &img, err, sizeof(err));
	REQUIRE(r == 0 && img, "open: %d %s", r, err);
	return img;
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

int main(void)
{
	t_init("test-flush");
	test_counts();
	return t_finish();
}
