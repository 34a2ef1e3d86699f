/* SPDX-License-Identifier: MIT */
/*
 * Power-cut simulation of persistent dirty bitmaps kept by a writer
 * (format/bitmap_keep.c, doc/design.md 15b): a qemu-made image with
 * bitmaps (enabled at 64 KiB, 4 KiB and 512-byte granularity, one
 * disabled), which qemu-io wrote once so that they hold data clusters, is
 * opened read-write on the recording backend (B1 marks the enabled ones
 * IN_USE), gets random writes, zero writes and discards with two guest
 * flushes among them (each writes the bitmaps back in place and clears
 * IN_USE, B3-B4; the write after each sets it again first, B1), and is
 * closed (the same once more). Every other write goes the daemon's way
 * (t_nowait_write), whose allocations, a bitmap piece's first cluster
 * among them, reach the file only with the next flush. Its 512-byte clusters
 * split the 512-byte-granularity bitmap into eight pieces of 2 MiB each; the
 * requests stay in the first half, so the pieces of the second (one holding
 * data) keep their clusters across the store, named by the old and the new
 * table. Every crash state (crashfile.c: the file
 * at the last completed flush before the cut plus any subset of the later
 * writes, whole, dropped or torn) must:
 *   - pass qemu-img check (exit 0 or 3: leaks allowed, no errors) and open;
 *   - list the four bitmaps, the disabled one exactly as it was;
 *   - for each enabled bitmap, either be IN_USE (inconsistent: QEMU will not
 *     use it, as after its own crash), or hold exactly its bits before the
 *     workload plus every granule touched by an op issued before the cut
 *     (an op whose first file event was before it), and no others: a
 *     bitmap that claims to be consistent never misses a write that may
 *     have reached the disk; the one exception is the write right after a
 *     flush, cut while it sets IN_USE again (its first events): then its
 *     bits may be missing, and so must every byte of its data (a pattern
 *     no other op writes);
 *   - take a write and a close, and pass qemu-img check again (every 4th).
 * The last state (everything landed) must be clean, no bitmap IN_USE.
 * On the old code (bitmaps dropped on a read-write open) every state past
 * the open lists no bitmaps and leaks their clusters.
 *
 * Reproducible from SEED. Environment: SEED; BITMAP_STATES (default 500);
 * KEEP_TMP=1.
 */
#include "internal.h"
#include "crashfile.h"
#include "testlib.h"

#define DEFAULT_STATES 500ULL
#define DISK (16ULL << 20)
#define NOPS 24
#define NB_BITMAPS 4

static const struct {
	const char *name, *opts;
	unsigned gran_bits;
	bool enabled;
} bitmaps[NB_BITMAPS] = {
	{ "b64k", "-g 64k", 16, true },
	{ "off16k", "-g 16k --disable", 14, false },
	{ "b4k", "-g 4k", 12, true },
	{ "b512", "-g 512", 9, true },
};

struct op {
	int kind;                 /* 0 write, 1 zero write, 2 discard */
	uint64_t off, len;
	size_t ev_begin;
	bool after_flush;         /* the first op after a guest flush: a write */
};

static struct op ops[NOPS];
static unsigned g_nops;           /* ops of the workload that runs */
static bool *initial[NB_BITMAPS];
static uint64_t g_states, g_seed, g_consistent;
static const char *g_path;

static uint64_t nbits(unsigned g)
{
	return QCOW_DIV_ROUND_UP(DISK, 1ULL << g);
}

/* The bits of bitmap i in the image data (size bytes); NULL: not found or
 * unreadable. *flags gets its flags. */
static bool *read_bits(const uint8_t *data, uint64_t size, unsigned i, uint32_t *flags,
		       char *why, size_t whylen)
{
	struct qcow_open_opts ro = { .read_only = true, .no_backing = true };
	struct qcow_image *img = NULL;
	struct qcow_bitmap_info *v;
	uint32_t n, j;
	uint64_t cs, k, nb = nbits(bitmaps[i].gran_bits);
	bool *bits = NULL;
	char err[512] = "";

	if (qcow_open(g_path, &ro, &img, err, sizeof(err)) < 0) {
		snprintf(why, whylen, "open: %s", err);
		return NULL;
	}
	cs = img->cluster_size;
	if (qcow_bitmap_list(img, &v, &n) < 0) {
		snprintf(why, whylen, "bitmap list: %s", qcow_error(img));
		qcow_close(img);
		return NULL;
	}
	for (j = 0; j < n && strcmp(v[j].name, bitmaps[i].name); j++)
		;
	if (j == n) {
		snprintf(why, whylen, "bitmap %s is gone (%u listed)", bitmaps[i].name, n);
	} else {
		*flags = v[j].flags;
		if (v[j].granularity != 1ULL << bitmaps[i].gran_bits)
			snprintf(why, whylen, "bitmap %s: granularity %" PRIu64, bitmaps[i].name,
				 v[j].granularity);
		else
			bits = calloc(nb, sizeof(*bits));
		for (k = 0; bits && k < nb; k++) {
			uint64_t byte = k / 8, t = v[j].table_offset + byte / cs * 8, e = 0;

			if (t + 8 <= size) {
				memcpy(&e, data + t, 8);
				e = be64toh(e) & 0x00fffffffffffe00ULL;
			}
			if (e && e + byte % cs < size)
				bits[k] = (data[e + byte % cs] >> (k % 8)) & 1;
		}
	}
	qcow_bitmap_list_free(v, n);
	qcow_close(img);
	return bits;
}

/* Must bit k of bitmap i be set once ops [0, nops) were issued? */
static bool marked(unsigned i, uint64_t k, unsigned nops)
{
	unsigned g = bitmaps[i].gran_bits, o;

	if (initial[i][k])
		return true;
	for (o = 0; o < nops; o++) {
		if (k >= ops[o].off >> g && k <= (ops[o].off + ops[o].len - 1) >> g)
			return true;
	}
	return false;
}

/* Ops issued before cut k (their first event was). */
static unsigned ops_before(size_t k)
{
	unsigned n = 0;

	while (n < g_nops && ops[n].ev_begin < k)
		n++;
	return n;
}

/* Did any byte of op o's data reach the image at g_path? */
static bool landed(unsigned o)
{
	struct qcow_open_opts ro = { .read_only = true, .no_backing = true };
	struct qcow_image *img = NULL;
	static uint8_t buf[64 << 10];
	char err[512] = "";
	bool any = true;
	uint64_t j;

	if (qcow_open(g_path, &ro, &img, err, sizeof(err)) < 0)
		return true;
	if (qcow_read(img, buf, ops[o].off, ops[o].len) == 0) {
		for (j = 0, any = false; j < ops[o].len && !any; j++)
			any = buf[j] == (uint8_t)(o + 1);
	}
	qcow_close(img);
	return any;
}

/* Are bits those of the ops [0, nops)? */
static bool bits_are(const bool *bits, unsigned i, unsigned nops, uint64_t *bad)
{
	uint64_t b;

	for (b = 0; b < nbits(bitmaps[i].gran_bits); b++) {
		if (bits[b] != marked(i, b, nops)) {
			*bad = b;
			return false;
		}
	}
	return true;
}

static bool check_bitmap(const uint8_t *data, uint64_t size, unsigned i, size_t k, bool last,
			 char *why, size_t whylen)
{
	uint32_t flags = 0;
	bool *bits = read_bits(data, size, i, &flags, why, whylen), ok = true;
	unsigned nops = bitmaps[i].enabled ? ops_before(k) : 0;
	uint64_t b = 0, b2;

	if (!bits)
		return false;
	if (flags & QCOW_BITMAP_IN_USE) {
		free(bits);
		if (!bitmaps[i].enabled || last)
			snprintf(why, whylen, "bitmap %s is IN_USE", bitmaps[i].name);
		return bitmaps[i].enabled && !last;
	}
	if (!last && nops > 0 && nops < g_nops)
		g_consistent++;
	if (!bits_are(bits, i, nops, &b)) {
		ok = nops && ops[nops - 1].after_flush && bits_are(bits, i, nops - 1, &b2);
		if (!ok)
			snprintf(why, whylen, "bitmap %s: bit %" PRIu64 " is %d, want %d (%u ops "
				 "issued)", bitmaps[i].name, b, bits[b], !bits[b], nops);
		if (ok && landed(nops - 1)) {
			snprintf(why, whylen, "bitmap %s: consistent without op %u's bits, whose "
				 "data landed", bitmaps[i].name, nops - 1);
			ok = false;
		}
	}
	free(bits);
	return ok;
}

static void probe(void)
{
	struct qcow_image *img = NULL;
	char err[512] = "";
	uint8_t buf[4096];
	int r;

	memset(buf, 0x5a, sizeof(buf));
	r = qcow_open(g_path, NULL, &img, err, sizeof(err));
	CHECK(r == 0, "reopen read-write: %s", err);
	if (r < 0)
		return;
	CHECK(qcow_write(img, buf, t_rand_below(DISK / 4096) * 4096, sizeof(buf)) == 0,
	      "probe write: %s", qcow_error(img));
	CHECK(qcow_close(img) == 0, "probe close");
	r = t_qemu_check(g_path);
	CHECK(r == 0 || r == 3, "qemu-img check after the probe: %d", r);
}

static void check_state(const struct cf_replay *rp, size_t k, unsigned v, bool last)
{
	uint64_t seed = cf_mix(cf_mix(g_seed, k), v), size;
	uint8_t *data;
	char desc[320], why[256] = "";
	unsigned i;
	int r;

	REQUIRE(cf_replay_build(rp, last ? CF_FATE_ALL : cf_fate_of(seed), seed >> 3, &data,
				&size, desc, sizeof(desc)) == 0, "out of memory");
	REQUIRE(t_write_file(g_path, data, size) == 0, "write %s", g_path);
	if (last && getenv("BM_DUMP"))
		t_copy_file(g_path, getenv("BM_DUMP"));
	r = t_qemu_check(g_path);
	CHECK(last ? r == 0 : r == 0 || r == 3, "cut %zu: qemu-img check exits %d (%s)", k, r,
	      desc);
	for (i = 0; i < NB_BITMAPS; i++)
		CHECK(check_bitmap(data, size, i, k, last, why, sizeof(why)), "cut %zu: %s (%s)",
		      k, why, desc);
	free(data);
	if (v % 4 == 0)
		probe();
	g_states++;
}

/* The image: qemu's bitmaps, with data from one qemu-io write round. */
static struct crashfile *make_image(void)
{
	uint64_t size;
	uint8_t *d;
	size_t len;
	unsigned i;
	char why[256];
	struct crashfile *cf;

	REQUIRE(t_run(NULL, 0, "qemu-img create -q -f qcow2 -o cluster_size=512 '%s' %llu",
		      g_path, (unsigned long long)DISK) == 0, "qemu-img create");
	for (i = 0; i < NB_BITMAPS; i++)
		REQUIRE(t_run(NULL, 0, "qemu-img bitmap --add %s '%s' %s", bitmaps[i].opts,
			      g_path, bitmaps[i].name) == 0, "qemu-img bitmap --add");
	REQUIRE(t_run(NULL, 0, "qemu-io -f qcow2 -c 'write -P 1 0 100k' -c 'write -P 2 1M 3k' "
		      "-c 'discard 2M 64k' -c 'write -P 3 14M 4k' '%s' >/dev/null", g_path) == 0, "qemu-io");
	d = t_read_file(g_path, &len);
	REQUIRE(d, "read %s", g_path);
	for (i = 0; i < NB_BITMAPS; i++) {
		uint32_t flags;

		initial[i] = read_bits(d, len, i, &flags, why, sizeof(why));
		REQUIRE(initial[i], "%s", why);
	}
	cf = cf_new(d, len);
	REQUIRE(cf, "out of memory");
	free(d);
	(void)size;
	return cf;
}

static void workload(struct crashfile *cf)
{
	struct qcow_image *img = NULL;
	struct qcow_file f;
	char err[512] = "";
	static uint8_t buf[64 << 10];
	unsigned i;

	cf_record_start(cf);
	cf_get_file(cf, &f);
	REQUIRE(qcow_open_file(&f, "bitmaps", NULL, &img, err, sizeof(err)) == 0, "open: %s", err);
	g_nops = NOPS;
	for (i = 0; i < NOPS; i++) {
		struct op *o = &ops[i];

		o->kind = (int)t_rand_below(4) % 3;
		o->after_flush = i == NOPS / 3 + 1 || i == 2 * NOPS / 3 + 1;
		if (o->after_flush)
			o->kind = 0;
		o->len = 1 + t_rand_below(sizeof(buf));
		/* the first half: pieces of the second stay as they were */
		o->off = t_rand_below(DISK / 2 - o->len);
		o->ev_begin = cf_nevents(cf);
		memset(buf, (int)i + 1, o->len);
		if (o->kind == 0 && i % 2)	/* the daemon's way: allocations wait for a flush */
			REQUIRE(t_nowait_write(img, buf, o->off, o->len, NULL, NULL) == 0,
				"write: %s", qcow_error(img));
		else if (o->kind == 0)
			REQUIRE(qcow_write(img, buf, o->off, o->len) == 0, "write: %s",
				qcow_error(img));
		else if (o->kind == 1)
			REQUIRE(qcow_write_zeroes(img, o->off, o->len, QCOW_ZERO_MAY_UNMAP) == 0,
				"zero: %s", qcow_error(img));
		else
			REQUIRE(qcow_discard(img, o->off, o->len) == 0, "discard: %s",
				qcow_error(img));
		if (i == NOPS / 3 || i == 2 * NOPS / 3)
			REQUIRE(qcow_guest_flush(img) == 0, "flush: %s", qcow_error(img));
	}
	REQUIRE(qcow_close(img) == 0, "close");
}

/*
 * The write-back's own window, cut at every event many times: one write
 * the daemon's way into the half of the 512-byte-granularity bitmap that
 * has no piece yet (its first cluster allocated, its refcount in a block
 * the flush writes), a guest flush (pieces with step 1, the table naming
 * the new piece with step 2, the clear), the write after it, the close.
 */
static void workload_write_back(struct crashfile *cf)
{
	struct qcow_image *img = NULL;
	struct qcow_file f;
	char err[512] = "";
	static uint8_t buf[8192];
	unsigned i;

	cf_record_start(cf);
	cf_get_file(cf, &f);
	REQUIRE(qcow_open_file(&f, "bitmaps", NULL, &img, err, sizeof(err)) == 0, "open: %s", err);
	g_nops = 2;
	for (i = 0; i < g_nops; i++) {
		struct op *o = &ops[i];

		*o = (struct op){ .kind = 0, .off = (6ULL << 20) + i * (1ULL << 20) + 1000,
				  .len = sizeof(buf), .ev_begin = cf_nevents(cf),
				  .after_flush = i == 1 };
		memset(buf, (int)i + 1, sizeof(buf));
		REQUIRE(t_nowait_write(img, buf, o->off, o->len, NULL, NULL) == 0, "write: %s",
			qcow_error(img));
		if (i == 0)
			REQUIRE(qcow_guest_flush(img) == 0, "flush: %s", qcow_error(img));
	}
	REQUIRE(qcow_close(img) == 0, "close");
}

/* Run workload on a fresh image and check budget crash states across it. */
static void run(void (*workload_fn)(struct crashfile *), uint64_t budget)
{
	struct crashfile *cf = make_image();
	struct cf_replay *rp;
	size_t k, total;
	unsigned n, v;

	workload_fn(cf);
	total = cf_nevents(cf);
	rp = cf_replay_new(cf);
	REQUIRE(rp, "out of memory");
	printf("%zu events, %" PRIu64 " states\n", total, budget);
	for (k = 1; k <= total; k++) {
		n = (unsigned)(k * budget / total - (k - 1) * budget / total);
		cf_replay_seek(rp, k);
		for (v = 0; v < n; v++)
			check_state(rp, k, v, false);
	}
	check_state(rp, total, 0, true);
	cf_replay_free(rp);
	cf_free(cf);
	for (v = 0; v < NB_BITMAPS; v++)
		free(initial[v]);
}

int main(void)
{
	uint64_t budget;

	t_init("test-powercut-bitmaps");
	g_seed = t_rng_state;
	if (!t_want_qemu())
		return T_SKIP;
	budget = t_env_u64("BITMAP_STATES", DEFAULT_STATES);
	g_path = t_path("bitmaps.qcow2");
	run(workload, budget);
	run(workload_write_back, budget);
	printf("test-powercut-bitmaps: %" PRIu64 " crash states checked, %" PRIu64 " bitmaps "
	       "consistent mid-workload\n", g_states, g_consistent);
	/* the flushes' write-backs must have left some: else B4 went untested */
	CHECK(g_consistent > 0, "no crash state had a consistent bitmap mid-workload");
	if (t_nfail)
		fprintf(stderr, "replay: SEED=%" PRIu64 " BITMAP_STATES=%" PRIu64 "\n", g_seed,
			budget);
	return t_finish();
}
