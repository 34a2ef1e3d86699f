/* SPDX-License-Identifier: MIT */
/*
 * Refcount blocks and the cluster allocator (white box, via internal.h):
 *  - qcow_refblock_get/set for every width 1..64 against an independent
 *    packer (entry i of width w < 8 at byte i*w/8, shifted (i*w)%8 from the
 *    LSB; wider entries big-endian), hand-made vectors, qcow_refcount_max;
 *  - allocation, deferred frees and reuse: a freed cluster comes back only
 *    after a flush, both through qcow_alloc_clusters and through guest
 *    writes/discards;
 *  - refcount limits: increments past the maximum and decrements below
 *    zero fail without changing the count;
 *  - refcount table growth on a 512-byte-cluster, 64-bit-refcount image
 *    written full of data, and one large contiguous allocation; qemu-img
 *    check must stay clean and the data must read back.
 */
#include "internal.h"
#include "testlib.h"

static bool have_qemu;

static struct qcow_image *make_image(const char *name, unsigned cb, unsigned rb,
				     uint64_t size)
{
	const char *path = t_path("%s", name);
	struct qcow_create_opts co = {
		.size = size, .cluster_bits = cb, .refcount_bits = rb, .version = 3,
	};

	return t_create_open(path, &co);
}

static uint64_t width_mask(unsigned w)
{
	return w == 64 ? UINT64_MAX : (1ULL << w) - 1;
}

/* The reference packer, written from the spec, not from the engine. */
static void ref_set(uint8_t *blk, unsigned w, uint64_t i, uint64_t v)
{
	if (w < 8) {
		uint64_t bit = i * w;
		uint8_t m = (uint8_t)(((1U << w) - 1) << (bit % 8));
		blk[bit / 8] = (uint8_t)((blk[bit / 8] & ~m) | ((v << (bit % 8)) & m));
		return;
	}
	for (unsigned b = 0; b < w / 8; b++)
		blk[i * (w / 8) + b] = (uint8_t)(v >> (w - 8 - 8 * b));
}

static uint64_t ref_get(const uint8_t *blk, unsigned w, uint64_t i)
{
	uint64_t v = 0;

	if (w < 8)
		return (blk[i * w / 8] >> ((i * w) % 8)) & ((1U << w) - 1);
	for (unsigned b = 0; b < w / 8; b++)
		v = (v << 8) | blk[i * (w / 8) + b];
	return v;
}

static void test_vectors(struct qcow_image *img, unsigned w, uint8_t *blk)
{
	uint64_t cs = img->cluster_size;

	memset(blk, 0, cs);
	switch (w) {
	case 1:
		blk[0] = 0x81;  /* entries 0 and 7 */
		blk[1] = 0x02;  /* entry 9 */
		CHECK(qcow_refblock_get(img, blk, 0) == 1 && qcow_refblock_get(img, blk, 7) == 1 &&
		      qcow_refblock_get(img, blk, 9) == 1 && qcow_refblock_get(img, blk, 1) == 0 &&
		      qcow_refblock_get(img, blk, 8) == 0, "1-bit vector");
		break;
	case 2:
		blk[0] = 0x1b;  /* 00 01 10 11 -> entries 3,2,1,0 = 0,1,2,3 */
		CHECK(qcow_refblock_get(img, blk, 0) == 3 && qcow_refblock_get(img, blk, 1) == 2 &&
		      qcow_refblock_get(img, blk, 2) == 1 && qcow_refblock_get(img, blk, 3) == 0,
		      "2-bit vector");
		break;
	case 4:
		blk[0] = 0x21;  /* entry 0 = 1, entry 1 = 2 */
		blk[1] = 0xf0;  /* entry 2 = 0, entry 3 = 15 */
		CHECK(qcow_refblock_get(img, blk, 0) == 1 && qcow_refblock_get(img, blk, 1) == 2 &&
		      qcow_refblock_get(img, blk, 2) == 0 && qcow_refblock_get(img, blk, 3) == 15,
		      "4-bit vector");
		break;
	default:
		/* big-endian: the last byte of entry 1 is its low byte */
		blk[2 * (w / 8) - 1] = 0x01;
		blk[w / 8] |= 0x80;   /* the same byte as the low one for w == 8 */
		CHECK(qcow_refblock_get(img, blk, 1) == ((1ULL << (w - 1)) | 1) &&
		      qcow_refblock_get(img, blk, 0) == 0 && qcow_refblock_get(img, blk, 2) == 0,
		      "%u-bit vector: entry 1 = %#" PRIx64, w, qcow_refblock_get(img, blk, 1));
	}
	memset(blk, 0, cs);
	qcow_refblock_set(img, blk, 1, 1);
	if (w < 8)
		CHECK(blk[0] == (uint8_t)(1U << w) && blk[1] == 0, "%u-bit set(1,1) byte %#x", w, blk[0]);
	else
		CHECK(blk[2 * (w / 8) - 1] == 1 && (w == 8 || blk[w / 8] == 0), "%u-bit set(1,1)", w);
}

static void test_pack_width(unsigned w)
{
	struct qcow_image *img = make_image("pack.qcow2", 12, w, 1 << 20);
	uint64_t cs = img->cluster_size;
	uint64_t n = cs * 8 / w;
	uint8_t *blk = calloc(1, cs), *ref = calloc(1, cs);

	REQUIRE(blk && ref, "oom");
	CHECK(img->refcount_bits == w, "refcount_bits %u want %u", img->refcount_bits, w);
	CHECK(qcow_refcount_max(img) == width_mask(w), "%u-bit max %#" PRIx64, w,
	      qcow_refcount_max(img));
	test_vectors(img, w, blk);

	memset(blk, 0, cs);
	for (unsigned k = 0; k < 20000; k++) {
		uint64_t i = t_rand_below(n);
		uint64_t v;
		switch (t_rand_below(4)) {
		case 0: v = 0; break;
		case 1: v = width_mask(w); break;
		default: v = t_rand() & width_mask(w);
		}
		qcow_refblock_set(img, blk, i, v);
		ref_set(ref, w, i, v);
		if (qcow_refblock_get(img, blk, i) != v) {
			CHECK(0, "%u-bit: get(%" PRIu64 ") after set %#" PRIx64 " = %#" PRIx64,
			      w, i, v, qcow_refblock_get(img, blk, i));
			break;
		}
	}
	{
		int64_t d = t_first_diff(blk, ref, cs);
		CHECK(d < 0, "%u-bit: block differs from the reference packing at byte %" PRId64
		      " (%#x vs %#x)", w, d, d < 0 ? 0 : blk[d], d < 0 ? 0 : ref[d]);
	}
	for (uint64_t i = 0; i < n; i++) {
		if (qcow_refblock_get(img, ref, i) != ref_get(ref, w, i)) {
			CHECK(0, "%u-bit: get(%" PRIu64 ") = %#" PRIx64 " want %#" PRIx64, w, i,
			      qcow_refblock_get(img, ref, i), ref_get(ref, w, i));
			break;
		}
	}
	free(blk);
	free(ref);
	qcow_close(img);
}

static uint64_t refcount_of(struct qcow_image *img, uint64_t host_off)
{
	uint64_t rc = 0xdeadbeef;
	int r = qcow_refcount_get(img, host_off >> img->cluster_bits, &rc);
	CHECK(r == 0, "refcount_get(%#" PRIx64 "): %d %s", host_off, r, qcow_error(img));
	return rc;
}

static bool is_metadata(struct qcow_image *img, uint64_t off)
{
	uint64_t cs = img->cluster_size;
	return off < cs ||
	       (off >= img->l1_table_offset &&
		off < QCOW_ALIGN_UP(img->l1_table_offset + img->l1_size * 8ULL, cs)) ||
	       (off >= img->refcount_table_offset &&
		off < img->refcount_table_offset + img->refcount_table_clusters * cs);
}

static void test_alloc_free(void)
{
	struct qcow_image *img = make_image("alloc.qcow2", 12, 16, 8 << 20);
	uint64_t cs = img->cluster_size;
	int64_t o1, o3, got[64];
	bool reused = false;
	int r;

	o1 = qcow_alloc_clusters(img, 1);
	REQUIRE(o1 > 0, "alloc 1: %" PRId64 " %s", o1, qcow_error(img));
	CHECK(o1 % (int64_t)cs == 0 && !is_metadata(img, o1), "alloc returned %#" PRIx64, o1);
	CHECK(refcount_of(img, o1) == 1, "fresh cluster refcount");
	o3 = qcow_alloc_clusters(img, 3);
	REQUIRE(o3 > 0, "alloc 3: %" PRId64, o3);
	CHECK(o3 % (int64_t)cs == 0 && (o3 + 3 * (int64_t)cs <= o1 || o3 >= o1 + (int64_t)cs),
	      "alloc 3 at %#" PRIx64 " overlaps %#" PRIx64, o3, o1);
	for (int i = 0; i < 3; i++) {
		CHECK(!is_metadata(img, o3 + i * cs), "alloc 3 hit metadata");
		CHECK(refcount_of(img, o3 + i * cs) == 1, "alloc 3: cluster %d refcount", i);
	}

	r = qcow_free_deferred(img, o1, cs);
	CHECK(r == 0, "free_deferred: %d", r);
	CHECK(refcount_of(img, o1) == 1, "deferred free applied before the flush");
	for (int i = 0; i < 16; i++) {
		got[i] = qcow_alloc_clusters(img, 1);
		CHECK(got[i] > 0, "alloc: %" PRId64, got[i]);
		CHECK(got[i] != o1, "cluster %#" PRIx64 " reused before the flush", o1);
	}
	r = qcow_flush(img);
	CHECK(r == 0, "flush: %d %s", r, qcow_error(img));
	CHECK(refcount_of(img, o1) == 0, "deferred free not applied by the flush");
	for (int i = 16; i < 64 && !reused; i++) {
		got[i] = qcow_alloc_clusters(img, 1);
		CHECK(got[i] > 0, "alloc: %" PRId64, got[i]);
		if (got[i] == o1)
			reused = true;
		else
			r = qcow_free_deferred(img, got[i], cs);
	}
	CHECK(reused, "freed cluster %#" PRIx64 " never reused after the flush", o1);

	/* give everything back; the image must end up clean */
	CHECK(qcow_free_deferred(img, o1, cs) == 0, "free o1");
	CHECK(qcow_free_deferred(img, o3, 3 * cs) == 0, "free o3 x3");
	for (int i = 0; i < 16; i++)
		CHECK(qcow_free_deferred(img, got[i], cs) == 0, "free got[%d]", i);
	CHECK(qcow_flush(img) == 0, "flush 2: %s", qcow_error(img));
	CHECK(refcount_of(img, o3 + 2 * cs) == 0, "range free missed the last cluster");
	for (int i = 0; i < 16; i++)
		CHECK(refcount_of(img, got[i]) == 0, "got[%d] still referenced", i);
	{
		uint64_t rc = 7;
		CHECK(qcow_refcount_get(img, 1ULL << 40, &rc) == 0 && rc == 0,
		      "refcount past the table: rc %" PRIu64, rc);
	}
	CHECK(qcow_close(img) == 0, "close");
	if (have_qemu)
		CHECK(t_qemu_check(t_path("alloc.qcow2")) == 0, "alloc image not clean");
}

static int64_t host_of(struct qcow_image *img, uint64_t guest)
{
	struct qcow_extent e;
	int r = qcow_map(img, guest, img->cluster_size, &e);
	CHECK(r >= 0, "map %#" PRIx64 ": %d", guest, r);
	if (r < 0 || e.kind != QCOW_EXTENT_DATA)
		return -1;
	return (int64_t)e.host_offset;
}

/* The same rule seen from the guest side: discard, then write elsewhere. */
static void test_reuse_via_guest(void)
{
	struct qcow_image *img = make_image("guest-reuse.qcow2", 12, 16, 8 << 20);
	uint64_t cs = img->cluster_size;
	uint8_t *buf = malloc(cs);
	int64_t h0, h;
	bool reused = false;

	REQUIRE(buf, "oom");
	memset(buf, 0x5a, cs);
	CHECK(qcow_write(img, buf, 0, cs) == 0, "write 0: %s", qcow_error(img));
	CHECK(qcow_flush(img) == 0, "flush");
	h0 = host_of(img, 0);
	REQUIRE(h0 > 0, "guest 0 not mapped after write");
	CHECK(qcow_discard(img, 0, cs) == 0, "discard: %s", qcow_error(img));
	{
		struct qcow_extent e;
		CHECK(qcow_map(img, 0, cs, &e) >= 0 && e.kind == QCOW_EXTENT_UNALLOCATED,
		      "discarded cluster still mapped (kind %d)", e.kind);
	}
	for (int i = 1; i <= 8; i++) {
		CHECK(qcow_write(img, buf, i * cs, cs) == 0, "write %d", i);
		h = host_of(img, i * cs);
		CHECK(h != h0, "discarded host cluster reused before the flush (guest %d)", i);
	}
	CHECK(qcow_flush(img) == 0, "flush");
	CHECK(refcount_of(img, h0) == 0, "discarded cluster refcount after flush");
	for (int i = 9; i <= 40 && !reused; i++) {
		CHECK(qcow_write(img, buf, i * cs, cs) == 0, "write %d", i);
		reused = host_of(img, i * cs) == h0;
	}
	CHECK(reused, "discarded host cluster never reused after the flush");
	free(buf);
	CHECK(qcow_close(img) == 0, "close");
	if (have_qemu)
		CHECK(t_qemu_check(t_path("guest-reuse.qcow2")) == 0, "guest-reuse not clean");
}

static void test_limits(unsigned w)
{
	struct qcow_image *img = make_image("limits.qcow2", 9, w, 1 << 20);
	uint64_t cs = img->cluster_size, max = width_mask(w);
	int64_t o = qcow_alloc_clusters(img, 1);
	int r;

	REQUIRE(o > 0, "alloc: %" PRId64, o);
	if (max > 1) {
		r = qcow_refcount_update(img, o, cs, (int64_t)(max - 1));
		CHECK(r == 0, "%u-bit: raise to max: %d %s", w, r, qcow_error(img));
	}
	CHECK(refcount_of(img, o) == max, "%u-bit: refcount %" PRIu64, w, refcount_of(img, o));
	r = qcow_refcount_update(img, o, cs, 1);
	CHECK(r < 0, "%u-bit: increment past max accepted", w);
	CHECK(refcount_of(img, o) == max, "%u-bit: failed increment changed the count to %" PRIu64,
	      w, refcount_of(img, o));
	r = qcow_refcount_update(img, o, cs, -(int64_t)max);
	CHECK(r == 0, "%u-bit: drop to 0: %d %s", w, r, qcow_error(img));
	CHECK(refcount_of(img, o) == 0, "%u-bit: refcount not 0", w);
	CHECK(qcow_flush(img) == 0, "flush");
	CHECK(qcow_close(img) == 0, "close");
	if (have_qemu)
		CHECK(t_qemu_check(t_path("limits.qcow2")) == 0, "%u-bit limits image not clean", w);

	/* below zero last: the engine may mark the image corrupt for it */
	img = NULL;
	{
		char err[512];
		r = qcow_open(t_path("limits.qcow2"), NULL, &img, err, sizeof(err));
		REQUIRE(r == 0, "reopen: %s", err);
	}
	r = qcow_refcount_update(img, o, cs, -1);
	CHECK(r < 0, "%u-bit: decrement below zero accepted", w);
	CHECK(refcount_of(img, o) == 0, "%u-bit: failed decrement changed the count", w);
	qcow_close(img);
}

/* 512-byte clusters, 64-bit refcounts: a refcount block covers 32 KiB and
 * one refcount table cluster 2 MiB, so 6 MiB of data must grow the table. */
static void test_table_growth(void)
{
	const char *path = t_path("grow.qcow2");
	struct qcow_image *img = make_image("grow.qcow2", 9, 64, 8 << 20);
	uint64_t size = 6 << 20, chunk = 64 << 10;
	uint8_t *model = malloc(size), *back = malloc(size);
	uint32_t rt0 = img->refcount_table_clusters;
	struct qcow_info info;
	char err[512];
	int r;

	REQUIRE(model && back, "oom");
	t_fill_random(model, size);
	for (uint64_t off = 0; off < size; off += chunk) {
		r = qcow_write(img, model + off, off, chunk);
		if (r) {
			CHECK(0, "write at %#" PRIx64 ": %d %s", off, r, qcow_error(img));
			break;
		}
	}
	qcow_get_info(img, &info);
	CHECK(info.refcount_table_clusters > rt0,
	      "refcount table did not grow (%u clusters)", info.refcount_table_clusters);
	for (uint64_t off = 0; off < size; off += img->cluster_size) {
		int64_t h = host_of(img, off);
		if (h <= 0 || refcount_of(img, h) != 1) {
			CHECK(0, "guest %#" PRIx64 ": host %" PRId64 " refcount %" PRIu64, off, h,
			      h > 0 ? refcount_of(img, h) : 0);
			break;
		}
	}
	CHECK(qcow_close(img) == 0, "close");

	img = NULL;
	r = qcow_open(path, NULL, &img, err, sizeof(err));
	REQUIRE(r == 0, "reopen grown image: %s", err);
	r = qcow_read(img, back, 0, size);
	CHECK(r == 0 && memcmp(back, model, size) == 0, "data after table growth (%d)", r);
	qcow_get_info(img, &info);
	CHECK(info.refcount_table_clusters > rt0, "grown table not persisted");
	qcow_close(img);
	if (have_qemu) {
		CHECK(t_qemu_check(path) == 0, "grown image not clean");
		REQUIRE(t_write_file(t_path("grow.model"), model, size) == 0, "model");
		r = t_run(NULL, 0, "qemu-img convert -f qcow2 -O raw '%s' '%s' && "
			  "cmp -n %" PRIu64 " '%s' '%s'", path, t_path("grow.raw"), size,
			  t_path("grow.raw"), t_path("grow.model"));
		CHECK(r == 0, "qemu-img sees different data in the grown image");
	}
	free(model);
	free(back);
}

/* One allocation spanning many refcount blocks. */
static void test_big_alloc(void)
{
	struct qcow_image *img = make_image("bigalloc.qcow2", 9, 32, 1 << 20);
	uint64_t cs = img->cluster_size, nb = 5000;
	int64_t o = qcow_alloc_clusters(img, nb);

	REQUIRE(o > 0, "alloc %" PRIu64 ": %" PRId64 " %s", nb, o, qcow_error(img));
	for (uint64_t i = 0; i < nb; i++) {
		if (is_metadata(img, o + i * cs) || refcount_of(img, o + i * cs) != 1) {
			CHECK(0, "cluster %" PRIu64 " of the big allocation", i);
			break;
		}
	}
	CHECK(qcow_free_deferred(img, o, nb * cs) == 0, "free big");
	CHECK(qcow_flush(img) == 0, "flush: %s", qcow_error(img));
	CHECK(refcount_of(img, o) == 0 && refcount_of(img, o + (nb - 1) * cs) == 0,
	      "big range not freed");
	CHECK(qcow_close(img) == 0, "close");
	if (have_qemu)
		CHECK(t_qemu_check(t_path("bigalloc.qcow2")) == 0, "bigalloc image not clean");
}

int main(void)
{
	t_init("refcount");
	have_qemu = t_want_qemu();
	for (unsigned w = 1; w <= 64; w *= 2)
		test_pack_width(w);
	test_alloc_free();
	test_reuse_via_guest();
	for (unsigned w = 1; w <= 32; w *= 2)
		test_limits(w);
	test_table_growth();
	test_big_alloc();
	return t_finish();
}
