/* SPDX-License-Identifier: MIT */
/*
 * A new cluster gets zeros written only where the file does not give them
 * already (cluster.c cow_plan_cluster, image.c zero_from):
 *
 *  fresh   a partial write into an empty image allocates past the end of
 *          the file: no write event touches the rest of the new cluster,
 *          and it still reads as zeros;
 *  reuse   a partial write into a cluster freed earlier (inside the file,
 *          still holding the old bytes) reads zeros around the guest data,
 *          written there, through the POSIX file and the crashfile;
 *  tail    a cluster the image references but whose bytes lie past the end
 *          of the file at open: an in-place write there, planned with
 *          qcow_write_begin and written by the caller as a server does,
 *          counts as written, so once freed and reused it is zeroed.
 *  grow    allocating writes at the end of the file do not extend it one
 *          by one (each would be a slow, serialized write with direct IO):
 *          the engine grows the file ahead, and a clean close gives back
 *          what was not used, so the file ends with the last cluster and
 *          qemu-img check finds it clean.
 *  stats   qcow_get_stats counts what happened: clusters allocated, a
 *          copy-on-write after a snapshot, L2 table reads and cache hits.
 *  plan    a plan says fresh (the file system must allocate: the daemon
 *          sends the write straight to a worker) for new clusters where the
 *          file was never written, and for nothing else: not a write in
 *          place, not a freed cluster inside the file.
 *
 * Each case checks the guest bytes of the whole cluster, and the POSIX
 * image passes qemu-img check.
 */
#include "crashfile.h"
#include "internal.h"
#include "testlib.h"

#define CB 16
#define CS (1ULL << CB)
#define KB 1024ULL

static struct qcow_image *open_cf(struct crashfile *cf)
{
	struct qcow_image *img = NULL;
	struct qcow_file f;
	char err[512] = "";
	int r;

	cf_get_file(cf, &f);
	r = qcow_open_file(&f, "cf", NULL, &img, err, sizeof(err));
	REQUIRE(r == 0 && img, "open crashfile image: %d %s", r, err);
	return img;
}

static struct crashfile *new_cf_image(void)
{
	struct qcow_create_opts co = { .size = 64 << 20, .cluster_bits = CB, .version = 3 };
	struct crashfile *cf = cf_new(NULL, 0);
	struct qcow_file f;
	char err[512] = "";
	int r;

	REQUIRE(cf, "cf_new");
	cf_get_file(cf, &f);
	r = qcow_create_file(&f, "cf", &co, err, sizeof(err));
	REQUIRE(r == 0, "create crashfile image: %d %s", r, err);
	return cf;
}

static uint64_t host_of(struct qcow_image *img, uint64_t guest)
{
	struct qcow_extent ext;
	int r = qcow_map(img, guest, 512, &ext);

	REQUIRE(r == 0 && ext.kind == QCOW_EXTENT_DATA, "map 0x%" PRIx64 ": %d kind %d", guest,
		r, r == 0 ? (int)ext.kind : -1);
	return ext.host_offset - (guest & (CS - 1));
}

static void write_fill(struct qcow_image *img, uint64_t off, uint64_t len, uint8_t byte)
{
	uint8_t *b = malloc(len);
	int r;

	REQUIRE(b, "malloc");
	memset(b, byte, len);
	r = qcow_write(img, b, off, len);
	REQUIRE(r == 0, "write 0x%" PRIx64 "+%" PRIu64 ": %d %s", off, len, r, qcow_error(img));
	free(b);
}

/* The same as a server does it: plan, data straight to the file, end. */
static void write_split(struct qcow_image *img, struct crashfile *cf, uint64_t off, uint64_t len,
			uint8_t byte)
{
	struct qcow_write_plan plan;
	struct qcow_file f;
	uint8_t *b = malloc(len);
	int r;

	REQUIRE(b, "malloc");
	memset(b, byte, len);
	cf_get_file(cf, &f);
	r = qcow_write_begin(img, off, len, &plan);
	REQUIRE(r == 0 && plan.length == len, "write_begin: %d %s", r, qcow_error(img));
	r = f.ops->pwrite(f.ctx, b, len, plan.host_offset);
	r = qcow_write_end(img, &plan, r);
	REQUIRE(r == 0, "write_end: %d %s", r, qcow_error(img));
	free(b);
}

/* Guest cluster gc reads byte at [in, in+len) and zeros everywhere else. */
static void expect_cluster(struct qcow_image *img, uint64_t gc, uint64_t in, uint64_t len,
			   uint8_t byte, const char *what)
{
	uint8_t *b = malloc(CS);
	uint64_t i, bad = CS;
	int r;

	REQUIRE(b, "malloc");
	r = qcow_read(img, b, gc * CS, CS);
	REQUIRE(r == 0, "%s: read: %d %s", what, r, qcow_error(img));
	for (i = 0; i < CS && bad == CS; i++) {
		uint8_t want = i >= in && i < in + len ? byte : 0;
		if (b[i] != want)
			bad = i;
	}
	CHECK(bad == CS, "%s: cluster byte %" PRIu64 " reads 0x%02x, wanted %s", what, bad,
	      bad < CS ? b[bad] : 0, bad >= in && bad < in + len ? "the guest data" : "zero");
	free(b);
}

static void must(struct qcow_image *img, int r, const char *what)
{
	REQUIRE(r == 0, "%s: %d %s", what, r, qcow_error(img));
}

static void test_fresh(void)
{
	struct crashfile *cf = new_cf_image();
	struct qcow_image *img = open_cf(cf);
	uint64_t host, size, i, n, touched = 0;

	must(img, qcow_flush(img), "flush");
	cf_data(cf, &size);
	cf_record_start(cf);
	write_fill(img, 8 * KB, 4 * KB, 0x5a);
	host = host_of(img, 0);
	CHECK(host >= size, "fresh: new cluster at 0x%" PRIx64 " inside the file (%" PRIu64
	      " bytes): the test needs one past its end", host, size);
	n = cf_nevents(cf);
	for (i = 0; i < n; i++) {
		if (cf_event_is_write(cf, i) && (cf_event_writes_to(cf, i, host, 8 * KB) ||
						 cf_event_writes_to(cf, i, host + 12 * KB,
								    CS - 12 * KB)))
			touched++;
	}
	CHECK(touched == 0, "fresh: %" PRIu64 " write(s) filled the rest of a new cluster past the "
	      "end of the file, which reads as zeros already", touched);
	expect_cluster(img, 0, 8 * KB, 4 * KB, 0x5a, "fresh");
	must(img, qcow_close(img), "close");
	img = open_cf(cf);
	expect_cluster(img, 0, 8 * KB, 4 * KB, 0x5a, "fresh, reopened");
	must(img, qcow_close(img), "close");
	cf_free(cf);
}

/* Free guest cluster 0 (full of 0xaa) and write 4K into guest cluster 5,
 * which must get the freed host cluster back. */
static void reuse(struct qcow_image *img, const char *what)
{
	uint64_t old, now;

	write_fill(img, 0, CS, 0xaa);
	old = host_of(img, 0);
	must(img, qcow_flush(img), "flush");
	must(img, qcow_discard(img, 0, CS), "discard");
	must(img, qcow_flush(img), "flush");
	write_fill(img, 5 * CS + 16 * KB, 4 * KB, 0x33);
	now = host_of(img, 5 * CS);
	REQUIRE(now == old, "%s: the allocator gave 0x%" PRIx64 ", not the freed 0x%" PRIx64
		": this test no longer covers reuse", what, now, old);
	expect_cluster(img, 5, 16 * KB, 4 * KB, 0x33, what);
}

static void test_reuse(void)
{
	struct qcow_create_opts co = { .size = 64 << 20, .cluster_bits = CB, .version = 3 };
	const char *path = t_path("reuse.qcow2");
	struct crashfile *cf = new_cf_image();
	struct qcow_image *img = open_cf(cf);

	reuse(img, "reuse, crashfile");
	must(img, qcow_close(img), "close");
	cf_free(cf);

	img = t_create_open(path, &co);
	reuse(img, "reuse, POSIX file");
	must(img, qcow_close(img), "close");
	img = NULL;
	if (t_have_prog("qemu-img"))
		CHECK(t_qemu_check(path) == 0, "reuse: qemu-img check %s", path);
}

static void test_tail(void)
{
	struct crashfile *cf = new_cf_image(), *cut;
	struct qcow_image *img = open_cf(cf);
	const uint8_t *data;
	uint64_t h1, size;

	/* guest clusters 0 and 1 get host clusters h0 and h1 = h0 + CS, the
	 * last ones in the file; dropping the file from h1 on leaves guest
	 * cluster 1 mapped to bytes past the end (reading as zeros) */
	write_fill(img, 0, 4 * KB, 0x11);
	write_fill(img, CS, 4 * KB, 0x22);
	h1 = host_of(img, CS);
	must(img, qcow_close(img), "close");
	data = cf_data(cf, &size);
	REQUIRE(size > h1 && size <= h1 + CS, "tail: file of %" PRIu64 " bytes, wanted the second "
		"cluster last (at 0x%" PRIx64 ")", size, h1);
	cut = cf_new(data, h1);
	REQUIRE(cut, "cf_new");
	cf_free(cf);

	img = open_cf(cut);
	expect_cluster(img, 1, 0, 0, 0, "tail, cut");
	write_split(img, cut, CS + 40 * KB, 4 * KB, 0x44);    /* in place, past the end */
	must(img, qcow_flush(img), "flush");
	must(img, qcow_discard(img, CS, CS), "discard");
	must(img, qcow_flush(img), "flush");
	write_fill(img, 7 * CS, 4 * KB, 0x77);
	REQUIRE(host_of(img, 7 * CS) == h1, "tail: the freed cluster was not reused");
	expect_cluster(img, 7, 0, 4 * KB, 0x77, "tail");
	must(img, qcow_close(img), "close");
	cf_free(cut);
}

#define GROW_WRITES 256

static void test_grow(void)
{
	struct qcow_create_opts co = { .size = 64 << 20, .cluster_bits = CB, .version = 3 };
	const char *path = t_path("grow.qcow2");
	struct crashfile *cf = new_cf_image();
	struct qcow_image *img = open_cf(cf);
	uint64_t i, grew, last = 0, size;
	struct stat st;

	cf_inject(cf, CF_OP_WRITE, 0, 0, false);	/* resets the counters */
	for (i = 0; i < GROW_WRITES; i++)
		write_fill(img, i * CS, 4 * KB, (uint8_t)i);
	grew = cf_count(cf, CF_OP_GROW);
	CHECK(grew < GROW_WRITES / 8, "grow: %" PRIu64 " of %u allocating writes extended the "
	      "file", grew, GROW_WRITES);
	must(img, qcow_close(img), "close");
	cf_free(cf);

	img = t_create_open(path, &co);
	for (i = 0; i < GROW_WRITES; i++) {
		write_fill(img, i * CS, 4 * KB, (uint8_t)i);
		last = QCOW_MAX(last, host_of(img, i * CS) + CS);
	}
	must(img, qcow_close(img), "close");
	REQUIRE(stat(path, &st) == 0, "stat %s", path);
	size = (uint64_t)st.st_size;
	CHECK(size == last, "grow: the closed file has %" PRIu64 " bytes, wanted %" PRIu64
	      " (the end of the last cluster)", size, last);
	if (t_have_prog("qemu-img"))
		CHECK(t_qemu_check(path) == 0, "grow: qemu-img check %s", path);
}

static void test_stats(void)
{
	struct crashfile *cf = new_cf_image();
	struct qcow_image *img = open_cf(cf);
	struct qcow_stats st, st2;
	uint8_t b[512];

	write_fill(img, 8 * KB, 4 * KB, 0x61);
	qcow_get_stats(img, &st);
	CHECK(st.clusters_allocated == 2 && st.cow_copies == 0 && st.l2_misses == 0,
	      "stats: a first write: %" PRIu64 " clusters allocated (wanted 2: L2 table and data), "
	      "%" PRIu64 " copies, %" PRIu64 " L2 reads", st.clusters_allocated, st.cow_copies,
	      st.l2_misses);
	must(img, qcow_snapshot_create(img, "s"), "snapshot");
	write_fill(img, 0, 4 * KB, 0x62);
	qcow_get_stats(img, &st);
	CHECK(st.cow_copies == 1, "stats: %" PRIu64 " copy-on-write copies after a partial write "
	      "into a snapshot's cluster, wanted 1", st.cow_copies);
	must(img, qcow_close(img), "close");
	img = open_cf(cf);
	must(img, qcow_read(img, b, 0, sizeof(b)), "read");
	qcow_get_stats(img, &st);
	must(img, qcow_read(img, b, 512, sizeof(b)), "read");
	qcow_get_stats(img, &st2);
	CHECK(st.l2_misses == 1 && st2.l2_misses == 1 && st2.l2_hits > st.l2_hits,
	      "stats: reopened, two reads: %" PRIu64 " then %" PRIu64 " L2 reads (wanted 1), hits "
	      "%" PRIu64 " then %" PRIu64, st.l2_misses, st2.l2_misses, st.l2_hits, st2.l2_hits);
	must(img, qcow_close(img), "close");
	cf_free(cf);
}

/* Plan a write of 4 KiB at off, check plan.fresh, write it as a server does. */
static uint64_t plan_fresh_is(struct qcow_image *img, struct crashfile *cf, uint64_t off,
			      bool want, const char *what)
{
	struct qcow_write_plan plan;
	struct qcow_file f;
	uint8_t b[4 * KB];
	int r;

	memset(b, 0x3c, sizeof(b));
	cf_get_file(cf, &f);
	r = qcow_write_begin(img, off, sizeof(b), &plan);
	REQUIRE(r == 0, "plan, %s: write_begin: %d %s", what, r, qcow_error(img));
	CHECK(plan.fresh == want, "plan, %s: fresh is %d, wanted %d", what, plan.fresh, want);
	r = f.ops->pwrite(f.ctx, b, sizeof(b), plan.host_offset);
	must(img, qcow_write_end(img, &plan, r), "write_end");
	return host_of(img, off);
}

static void test_plan(void)
{
	struct crashfile *cf = new_cf_image();
	struct qcow_image *img = open_cf(cf);
	uint64_t freed;

	freed = plan_fresh_is(img, cf, 0, true, "a new cluster past the end of the file");
	plan_fresh_is(img, cf, 16 * KB, false, "in place");
	must(img, qcow_flush(img), "flush");
	must(img, qcow_discard(img, 0, CS), "discard");
	must(img, qcow_flush(img), "flush");
	REQUIRE(plan_fresh_is(img, cf, 3 * CS, false, "a freed cluster inside the file") == freed,
		"plan: the freed cluster was not reused: this case no longer covers reuse");
	plan_fresh_is(img, cf, 9 * CS, true, "the next new cluster past the end");
	must(img, qcow_close(img), "close");
	cf_free(cf);
}

int main(void)
{
	t_init("test-alloc");
	test_fresh();
	test_reuse();
	test_tail();
	test_grow();
	test_stats();
	test_plan();
	return t_finish();
}
