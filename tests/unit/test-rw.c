/* SPDX-License-Identifier: MIT */
/*
 * Guest IO against an in-memory model: write (byte, sector and cluster
 * alignment), overwrite, partial clusters, writes across L2 table
 * boundaries, write_zeroes (with and without MAY_UNMAP), discard (whole
 * clusters only change), reads, flushes and close/reopen, all with an L2
 * cache of one or two tables so tables are evicted constantly. After each
 * configuration: full compare, a walk of qcow_map over the disk checking
 * every DATA extent's host bytes against the model, qemu-img check, and
 * qemu-img convert -O raw compared with the model.
 * Then resize: grow (past the L1 table's capacity), write past the old end;
 * shrink refused while the tail is allocated, allowed once it is not.
 */
#include "internal.h"
#include "testlib.h"

static bool have_qemu;

struct cfg {
	unsigned cb, rb;
	int version;
	uint64_t size;
	unsigned l2_tables;     /* L2 cache size in tables */
	unsigned ops;
};

struct state {
	const struct cfg *c;
	const char *path;
	struct qcow_image *img;
	uint8_t *model;
	uint64_t size, cs;
	uint8_t *buf, *back;
	size_t buflen;
};

static void st_open(struct state *s)
{
	struct qcow_open_opts oo = { .l2_cache_bytes = (uint64_t)s->c->l2_tables << s->c->cb,
				     .refcount_cache_bytes = 1ULL << s->c->cb };
	char err[512] = "";
	int r;

	s->img = NULL;
	r = qcow_open(s->path, &oo, &s->img, err, sizeof(err));
	REQUIRE(r == 0 && s->img, "open %s: %d %s", s->path, r, err);
}

static void st_reopen(struct state *s)
{
	int r = qcow_close(s->img);
	CHECK(r == 0, "close: %d", r);
	st_open(s);
}

/* qcow_map must stay inside the range it was asked about. */
static bool map_within(struct state *s, uint64_t off, uint64_t len, const char *when)
{
	uint64_t end = off + len;

	while (off < end) {
		struct qcow_extent e;
		int r = qcow_map(s->img, off, end - off, &e);
		if (r < 0 || e.guest_offset != off || e.length == 0 || e.length > end - off) {
			CHECK(0, "%s: %s: qcow_map(%#" PRIx64 ", %#" PRIx64 ") = %d: guest %#" PRIx64
			      " length %#" PRIx64 " kind %d", s->path, when, off, end - off, r,
			      e.guest_offset, e.length, e.kind);
			return false;
		}
		off += e.length;
	}
	return true;
}

static bool compare_chunk(struct state *s, uint64_t off, uint64_t len, const char *when)
{
	int r;
	int64_t d;

	if (!map_within(s, off, len, when))
		return false;       /* reading would overrun the buffer */
	r = qcow_read(s->img, s->back, off, len);
	if (r) {
		CHECK(0, "%s: read [%#" PRIx64 "+%#" PRIx64 "]: %d %s", when, off, len, r,
		      qcow_error(s->img));
		return false;
	}
	d = t_first_diff(s->back, s->model + off, len);
	CHECK(d < 0, "%s: %s: byte %#" PRIx64 " is %#x, model %#x", s->path, when,
	      off + (uint64_t)d, d < 0 ? 0 : s->back[d], d < 0 ? 0 : s->model[off + d]);
	return d < 0;
}

/* Compare in buffer-sized pieces. */
static bool compare_range(struct state *s, uint64_t off, uint64_t len, const char *when)
{
	for (uint64_t done = 0; done < len; done += s->buflen)
		if (!compare_chunk(s, off + done, QCOW_MIN(s->buflen, len - done), when))
			return false;
	return true;
}

static bool compare_all(struct state *s, const char *when)
{
	return compare_range(s, 0, s->size, when);
}

static void do_write(struct state *s, uint64_t off, uint64_t len)
{
	int r;

	t_fill_random(s->buf, len);
	r = qcow_write(s->img, s->buf, off, len);
	CHECK(r == 0, "write [%#" PRIx64 "+%#" PRIx64 "]: %d %s", off, len, r, qcow_error(s->img));
	if (r == 0)
		memcpy(s->model + off, s->buf, len);
}

static void do_zeroes(struct state *s, uint64_t off, uint64_t len, unsigned flags)
{
	int r = qcow_write_zeroes(s->img, off, len, flags);
	CHECK(r == 0, "write_zeroes [%#" PRIx64 "+%#" PRIx64 "] %u: %d %s", off, len, flags, r,
	      qcow_error(s->img));
	if (r == 0)
		memset(s->model + off, 0, len);
}

static void do_discard(struct state *s, uint64_t off, uint64_t len)
{
	uint64_t start = QCOW_ALIGN_UP(off, s->cs);
	uint64_t end = QCOW_ALIGN_DOWN(off + len, s->cs);
	int r;

	/*
	 * Whether a partial last cluster of a disk whose size is not a cluster
	 * multiple counts as "whole" is left open by the API: never discard it.
	 */
	if (off + len == s->size && s->size % s->cs) {
		len = QCOW_ALIGN_DOWN(s->size, s->cs) - QCOW_MIN(off, QCOW_ALIGN_DOWN(s->size, s->cs));
		if (len == 0)
			return;
	}
	r = qcow_discard(s->img, off, len);
	CHECK(r == 0, "discard [%#" PRIx64 "+%#" PRIx64 "]: %d %s", off, len, r, qcow_error(s->img));
	if (r == 0 && end > start)
		memset(s->model + start, 0, end - start);
}

/* Pick a range: byte-granular, sector-aligned or cluster-aligned. */
static void pick_range(struct state *s, uint64_t *off, uint64_t *len, bool bytes_ok)
{
	uint64_t maxlen = QCOW_MIN(s->buflen, 3 * s->cs + 4096);
	unsigned kind = (unsigned)t_rand_below(bytes_ok ? 3 : 2);
	uint64_t o, l;

	if (kind == 2) {
		o = t_rand_below(s->size);
		l = 1 + t_rand_below(maxlen);
	} else if (kind == 1) {
		o = t_rand_below(s->size / 512) * 512;
		l = (1 + t_rand_below(maxlen / 512)) * 512;
	} else {
		o = t_rand_below(QCOW_DIV_ROUND_UP(s->size, s->cs)) * s->cs;
		l = (1 + t_rand_below(QCOW_MAX(maxlen / s->cs, 1))) * s->cs;
	}
	if (o >= s->size)
		o = s->size - 1;
	if (l > s->size - o)
		l = s->size - o;
	*off = o;
	*len = l;
}

static void random_ops(struct state *s)
{
	/* OPS_SCALE=N runs N times the operations (for soak runs by hand) */
	const char *scale_env = getenv("OPS_SCALE");
	unsigned scale = scale_env ? (unsigned)strtoul(scale_env, NULL, 0) : 1;
	unsigned nops = s->c->ops * (scale ? scale : 1);

	for (unsigned i = 0; i < nops && t_nfail == 0; i++) {
		uint64_t off, len;
		unsigned op = (unsigned)t_rand_below(100);

		if (op < 45) {
			pick_range(s, &off, &len, true);
			do_write(s, off, len);
		} else if (op < 55) {
			pick_range(s, &off, &len, true);
			do_zeroes(s, off, len, t_rand_below(2) ? QCOW_ZERO_MAY_UNMAP : 0);
		} else if (op < 63) {
			pick_range(s, &off, &len, true);
			do_discard(s, off, len);
		} else if (op < 93) {
			pick_range(s, &off, &len, true);
			compare_range(s, off, len, "random read");
		} else if (op < 98) {
			int r = qcow_flush(s->img);
			CHECK(r == 0, "flush: %d %s", r, qcow_error(s->img));
		} else {
			st_reopen(s);
		}
	}
}

/* Fixed cases first, so a failure names the feature. */
static void directed_ops(struct state *s)
{
	uint64_t cs = s->cs, l2cov = (cs / 8) * cs;
	struct qcow_extent e;

	/* partial cluster into an unallocated cluster: the rest reads zero */
	do_write(s, cs + 100, 200);
	compare_range(s, cs, cs, "partial cluster");
	/* overwrite part of it */
	do_write(s, cs + 150, 10);
	compare_range(s, cs, cs, "overwrite inside a cluster");
	/* a write straddling an L2 table boundary */
	if (s->size > l2cov + 2 * cs) {
		do_write(s, l2cov - 700, cs + 2000);
		compare_range(s, l2cov - cs, 3 * cs, "across an L2 boundary");
		CHECK(qcow_map(s->img, l2cov - 700, cs + 2000, &e) >= 0 &&
		      e.guest_offset == l2cov - 700 && e.length <= 700,
		      "extent crosses the L2 boundary: len %" PRIu64, e.length);
	}
	/* the last byte of the disk */
	do_write(s, s->size - 1, 1);
	compare_range(s, s->size - cs / 2, cs / 2, "last byte");
	/* past the end is refused and changes nothing */
	CHECK(qcow_write(s->img, s->buf, s->size - 10, 11) < 0, "write past the end accepted");
	CHECK(qcow_write(s->img, s->buf, UINT64_MAX - 5, 10) < 0, "write at 2^64-6 accepted");
	CHECK(qcow_read(s->img, s->back, s->size, 1) < 0, "read past the end accepted");
	/* zeroes over data: whole clusters and a partial one */
	do_write(s, 4 * cs, 3 * cs);
	do_zeroes(s, 4 * cs, cs, 0);
	do_zeroes(s, 5 * cs + 17, 100, QCOW_ZERO_MAY_UNMAP);
	do_zeroes(s, 6 * cs, cs, QCOW_ZERO_MAY_UNMAP);
	compare_range(s, 3 * cs, 5 * cs, "write_zeroes");
	/* v2 has no zero flag and may write explicit zeros without MAY_UNMAP */
	CHECK(s->c->version == 2 ||
	      (qcow_map(s->img, 4 * cs, cs, &e) >= 0 && e.kind != QCOW_EXTENT_DATA),
	      "zeroed cluster still DATA");
	CHECK(qcow_map(s->img, 6 * cs, cs, &e) >= 0 &&
	      (e.kind == QCOW_EXTENT_UNALLOCATED || e.kind == QCOW_EXTENT_ZERO),
	      "MAY_UNMAP zeroed cluster kind %d", e.kind);
	/* discard: partial clusters untouched, whole ones gone */
	do_write(s, 8 * cs, 3 * cs);
	do_discard(s, 8 * cs + 1, 2 * cs);
	compare_range(s, 8 * cs, 3 * cs, "discard");
	CHECK(qcow_map(s->img, 9 * cs, cs, &e) >= 0 && e.kind != QCOW_EXTENT_DATA,
	      "discarded cluster still DATA");
	CHECK(qcow_map(s->img, 8 * cs, cs, &e) >= 0 && e.kind == QCOW_EXTENT_DATA,
	      "partially discarded cluster lost its data");
	/* flush and reopen: everything still there */
	CHECK(qcow_flush(s->img) == 0, "flush: %s", qcow_error(s->img));
	st_reopen(s);
	compare_range(s, 0, QCOW_MIN(s->size, 12 * cs), "after reopen");
}

/* Walk the whole disk with qcow_map; check extents and their host bytes. */
static void check_map(struct state *s)
{
	uint64_t off = 0, l2cov = (s->cs / 8) * s->cs;
	int fd = open(s->path, O_RDONLY);

	REQUIRE(fd >= 0, "open %s", s->path);
	while (off < s->size) {
		struct qcow_extent e;
		int r = qcow_map(s->img, off, s->size - off, &e);
		if (r < 0 || e.guest_offset != off || e.length == 0 ||
		    e.length > s->size - off) {
			CHECK(0, "map at %#" PRIx64 ": %d guest %#" PRIx64 " len %" PRIu64,
			      off, r, e.guest_offset, e.length);
			break;
		}
		CHECK(off / l2cov == (off + e.length - 1) / l2cov,
		      "extent [%#" PRIx64 "+%#" PRIx64 "] crosses an L2 table", off, e.length);
		CHECK(s->c->version == 3 || e.kind != QCOW_EXTENT_ZERO, "zero extent in a v2 image");
		CHECK(e.kind != QCOW_EXTENT_COMPRESSED, "compressed extent from plain writes");
		if (e.kind == QCOW_EXTENT_DATA) {
			uint64_t done = 0;
			CHECK(e.host_offset % s->cs == off % s->cs, "host offset misaligned");
			while (done < e.length) {
				size_t n = QCOW_MIN(s->buflen, e.length - done);
				ssize_t got = pread(fd, s->back, n, e.host_offset + done);
				/* a new cluster's tail past the end of the file reads as zeros */
				if (got >= 0 && (size_t)got < n)
					memset(s->back + got, 0, n - (size_t)got);
				if (got < 0 ||
				    memcmp(s->back, s->model + off + done, n) != 0) {
					CHECK(0, "host bytes of [%#" PRIx64 "+%zu] at %#" PRIx64
					      " differ from the model", off + done, n,
					      e.host_offset + done);
					break;
				}
				done += n;
			}
		} else {
			static const uint8_t zero[4096];
			for (uint64_t d = 0; d < e.length; d += sizeof(zero)) {
				size_t n = QCOW_MIN(sizeof(zero), e.length - d);
				if (memcmp(s->model + off + d, zero, n)) {
					CHECK(0, "extent kind %d at %#" PRIx64 " but the model has data",
					      e.kind, off + d);
					break;
				}
			}
		}
		off += e.length;
	}
	close(fd);
}

static void check_with_qemu(struct state *s)
{
	const char *raw = t_path("model.raw"), *conv = t_path("conv.raw");
	int r;

	if (!have_qemu)
		return;
	CHECK(t_qemu_check(s->path) == 0, "%s: qemu-img check not clean", s->path);
	REQUIRE(t_write_file(raw, s->model, s->size) == 0, "write model");
	r = t_run(NULL, 0, "qemu-img convert -f qcow2 -O raw '%s' '%s' && cmp '%s' '%s' >&2",
		  s->path, conv, conv, raw);
	CHECK(r == 0, "%s: qemu-img convert -O raw differs from the model", s->path);
	unlink(raw);
	unlink(conv);
}

static void run_cfg(const struct cfg *c, unsigned idx)
{
	struct qcow_create_opts co = {
		.size = c->size, .cluster_bits = c->cb, .refcount_bits = c->rb,
		.version = c->version,
	};
	struct state s = { .c = c, .cs = 1ULL << c->cb };
	char err[512] = "";
	int r;

	printf("config %u: cluster %llu refcount %u v%d size %" PRIu64 " cache %u tables\n",
	       idx, 1ULL << c->cb, c->rb, c->version, c->size, c->l2_tables);
	s.path = t_path("rw%u.qcow2", idx);
	s.size = QCOW_ALIGN_UP(c->size, 512);
	s.buflen = QCOW_MAX(4 * s.cs, 256 << 10);
	s.model = calloc(1, s.size);
	s.buf = malloc(s.buflen);
	s.back = malloc(s.buflen);
	REQUIRE(s.model && s.buf && s.back, "oom");
	r = qcow_create(s.path, &co, false, err, sizeof(err));
	REQUIRE(r == 0, "create: %d %s", r, err);
	st_open(&s);
	directed_ops(&s);
	random_ops(&s);
	compare_all(&s, "final");
	check_map(&s);
	CHECK(qcow_close(s.img) == 0, "close");
	st_open(&s);
	compare_all(&s, "final after reopen");
	check_map(&s);
	CHECK(qcow_close(s.img) == 0, "close");
	check_with_qemu(&s);
	unlink(s.path);
	free(s.model);
	free(s.buf);
	free(s.back);
}

static void test_resize(int version)
{
	const char *path = t_path("resize-v%d.qcow2", version);
	struct qcow_create_opts co = { .size = 1 << 20, .cluster_bits = 9, .version = version };
	uint64_t old = 1 << 20, big = 64 << 20, small = 32 << 20;
	struct qcow_image *img = NULL;
	struct qcow_info info;
	uint8_t a[4096], b[4096], z[4096] = { 0 };
	char err[512] = "";
	int r;

	REQUIRE(qcow_create(path, &co, false, err, sizeof(err)) == 0, "create: %s", err);
	REQUIRE(qcow_open(path, NULL, &img, err, sizeof(err)) == 0, "open: %s", err);
	qcow_get_info(img, &info);
	uint32_t l1_before = info.l1_size;
	t_fill_random(a, sizeof(a));
	CHECK(qcow_write(img, a, old - 4096, 4096) == 0, "write before the old end");
	CHECK(qcow_write(img, a, old, 512) < 0, "write past the end before growing");

	r = qcow_resize(img, big);
	CHECK(r == 0, "grow to %" PRIu64 ": %d %s", big, r, qcow_error(img));
	qcow_get_info(img, &info);
	CHECK(info.virtual_size == big, "size after grow %" PRIu64, info.virtual_size);
	CHECK(info.l1_size > l1_before && info.l1_size >= big / (64 * 512),
	      "L1 not grown: %u entries", info.l1_size);
	CHECK(qcow_read(img, b, old - 4096, 4096) == 0 && !memcmp(a, b, 4096),
	      "data before the old end lost by grow");
	CHECK(qcow_read(img, b, old, 4096) == 0 && !memcmp(b, z, 4096),
	      "space past the old end is not zero");
	t_fill_random(a, sizeof(a));
	CHECK(qcow_write(img, a, old + 100, 1000) == 0, "write just past the old end: %s",
	      qcow_error(img));
	CHECK(qcow_write(img, a, big - 4096, 4096) == 0, "write at the new end: %s",
	      qcow_error(img));
	CHECK(qcow_close(img) == 0, "close");

	img = NULL;
	REQUIRE(qcow_open(path, NULL, &img, err, sizeof(err)) == 0, "reopen: %s", err);
	qcow_get_info(img, &info);
	CHECK(info.virtual_size == big, "grown size not persisted: %" PRIu64, info.virtual_size);
	CHECK(qcow_read(img, b, old + 100, 1000) == 0 && !memcmp(a, b, 1000),
	      "data past the old end after reopen");
	CHECK(qcow_read(img, b, big - 4096, 4096) == 0 && !memcmp(a, b, 4096),
	      "data at the new end after reopen");

	/* the tail [small, big) holds data: shrinking must be refused */
	r = qcow_resize(img, small);
	CHECK(r == -ENOTSUP, "shrink over data returned %d", r);
	qcow_get_info(img, &info);
	CHECK(info.virtual_size == big, "refused shrink changed the size");
	CHECK(qcow_read(img, b, big - 4096, 4096) == 0 && !memcmp(a, b, 4096),
	      "refused shrink lost data");

	CHECK(qcow_discard(img, big - 4096, 4096) == 0, "discard the tail: %s", qcow_error(img));
	CHECK(qcow_flush(img) == 0, "flush");
	r = qcow_resize(img, small);
	CHECK(r == 0, "shrink over an unallocated tail: %d %s", r, qcow_error(img));
	qcow_get_info(img, &info);
	CHECK(info.virtual_size == small, "size after shrink %" PRIu64, info.virtual_size);
	CHECK(qcow_read(img, b, small, 512) < 0, "read past the shrunk end accepted");
	CHECK(qcow_read(img, b, old + 100, 1000) == 0 && !memcmp(a, b, 1000),
	      "shrink lost data below the new end");
	CHECK(qcow_close(img) == 0, "close");

	if (have_qemu) {
		char out[8192], want[64];
		CHECK(t_qemu_check(path) == 0, "resized v%d image not clean", version);
		t_run(out, sizeof(out), "qemu-img info --output=json '%s'", path);
		snprintf(want, sizeof(want), "\"virtual-size\": %" PRIu64 ",", small);
		CHECK(strstr(out, want), "qemu-img info size after shrink:\n%s", out);
	}
}

int main(void)
{
	/*
	 * The engine keeps at least 4 L2 tables whatever the option says, so the
	 * small-cluster configurations span well over 4 tables (eviction); the
	 * 64 KiB / 2 MiB ones cover the other geometries.
	 */
	static const struct cfg cfgs[] = {
		{ .cb = 9,  .rb = 16, .version = 3, .size = (3 << 20) + 1536, .l2_tables = 1, .ops = 1500 },
		{ .cb = 12, .rb = 1,  .version = 3, .size = (20 << 20) + 1536, .l2_tables = 2, .ops = 1200 },
		{ .cb = 12, .rb = 16, .version = 2, .size = (16 << 20) + 512, .l2_tables = 1, .ops = 1200 },
		{ .cb = 16, .rb = 64, .version = 3, .size = (24 << 20) + 512, .l2_tables = 1, .ops = 800 },
		{ .cb = 10, .rb = 16, .version = 2, .size = (2 << 20) + 3584, .l2_tables = 1, .ops = 1200 },
		{ .cb = 21, .rb = 8,  .version = 3, .size = (30 << 20) + 512, .l2_tables = 1, .ops = 200 },
	};

	t_init("rw");
	have_qemu = t_want_qemu();
	for (unsigned i = 0; i < sizeof(cfgs) / sizeof(cfgs[0]); i++)
		run_cfg(&cfgs[i], i);
	test_resize(3);
	test_resize(2);
	return t_finish();
}
