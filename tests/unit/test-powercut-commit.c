/* SPDX-License-Identifier: MIT */
/*
 * Power-cut simulation of commit (qcow_commit, doc/design.md 16a): an
 * overlay's own clusters are written into its backing file, the backing
 * file is flushed, then the overlay is emptied.  Two files change, so a
 * crash state is a pair: each file at its last completed flush before the
 * cut plus any subset of its later writes (crashfile.c), the two files'
 * events taken in the order they were issued.
 *
 * Each workload builds a real chain first (a qcow2 or raw backing file, an
 * overlay with data, zero, discarded and compressed clusters written
 * through the chain, so partial writes copied from the base), records
 * what the guest reads through it, then runs the commit on the recording
 * backend: the backing file grown to the overlay's size where it is
 * shorter, qcow_commit, both closed.  Every crash state, written to real
 * files, must:
 *   - pass qemu-img check and qcow_check, both files (leaks allowed);
 *   - read through the chain exactly what the guest read before the commit
 *     (commit may leave the overlay redundant, never lose data), by our
 *     reading and (every 4th state) by qemu-img compare;
 *   - have a backing file whose every byte is its old one or the overlay's
 *     (commit writes nothing else), with a size it had or was growing to;
 *   - take a write, a flush and a close in the overlay, and pass qemu-img
 *     check again.
 * After the whole run the overlay allocates nothing and the backing file
 * holds the guest content.
 *
 * Reproducible from SEED. Environment: SEED; COMMIT_STATES (total states,
 * default 600); COMMIT_ONLY=workload:cut:variant (one state); KEEP_TMP=1.
 */
#include "internal.h"
#include "crashfile.h"
#include "testlib.h"

#define DEFAULT_STATES 600ULL

struct commit_cfg {
	const char *name;
	bool raw_base;
	unsigned base_cb;         /* qcow2 base: cluster bits */
	unsigned cb;              /* the overlay's cluster bits */
	int version;              /* both images' */
	uint64_t base_size, size; /* the base's virtual size, the overlay's */
	unsigned nops;            /* guest ops on the overlay before the commit */
	uint64_t max_write;
};

/*
 * Smaller and larger clusters in the base than in the overlay (the commit's
 * writes are then partial base clusters, or allocate many), a raw base
 * shorter than the overlay (grown by truncate, sized to 512 B as QEMU sees
 * it), and v2 images, where zeroing writes zeros.
 */
static const struct commit_cfg configs[] = {
	{ "qcow2-64K-under-4K", false, 16, 12, 3, 3ULL << 20, 4ULL << 20, 60, 40 << 10 },
	{ "qcow2-512B-under-64K", false, 9, 16, 3, 2ULL << 20, 2ULL << 20, 30, 160 << 10 },
	{ "raw-under-4K", true, 0, 12, 3, (3ULL << 19) + 1536, 3ULL << 20, 60, 40 << 10 },
	{ "v2-4K-under-4K", false, 12, 12, 2, 2ULL << 20, 2ULL << 20, 50, 24 << 10 },
};
#define NB_CONFIGS (sizeof(configs) / sizeof(configs[0]))

#define BASE_ID 0xba5e0000u

struct workload {
	const struct commit_cfg *cfg;
	unsigned index;
	const char *base_path, *top_path, *expected_path;
	uint8_t *base_old;        /* the base's guest bytes before the commit */
	uint8_t *expected;        /* the guest's bytes through the chain */
	bool *own;                /* per 512 B sector: the overlay allocates it */
	struct crashfile *cf_top, *cf_base;
	/* the events in issue order: base [0, base1), top [0, top_n), base [base1, base_n) */
	size_t base1, base_n, top_n;
	size_t top_at_base_flush; /* top events when the base's flush returned */
	bool base_flushed;
};

static bool have_qemu;
static uint64_t g_seed, g_states, g_budget;
static bool g_only;
static unsigned g_only_w, g_only_v;
static size_t g_only_k;
static const char *g_argv0;

/* ------------------------------------------------------------ the chain */

/* The base: pattern data over most of it; the rest unallocated or (a
 * qcow2 base) zeroed, so that the commit both overwrites and allocates. */
static void make_base(struct workload *w)
{
	const struct commit_cfg *c = w->cfg;
	struct qcow_create_opts co = {
		.size = c->base_size, .cluster_bits = c->base_cb, .version = c->version,
	};
	struct qcow_image *img = NULL;
	uint64_t off, len;
	unsigned kind;
	int r = 0;

	w->base_old = calloc(1, c->base_size);
	REQUIRE(w->base_old, "out of memory");
	if (!c->raw_base)
		img = t_create_open(w->base_path, &co);
	for (off = 0; off < c->base_size && r == 0; off += len) {
		len = (1 + t_rand_below(64)) << 12;
		len = QCOW_MIN(c->base_size - off, len);
		kind = (unsigned)t_rand_below(4);
		if (kind >= 2)
			cf_pattern(BASE_ID, off, w->base_old + off, len);
		if (img && kind >= 2)
			r = qcow_write(img, w->base_old + off, off, len);
		else if (img && kind == 1)
			r = qcow_write_zeroes(img, off, len, 0);
	}
	if (img) {
		REQUIRE(r == 0, "base write: %d %s", r, qcow_error(img));
		REQUIRE(qcow_close(img) == 0, "base close");
	} else {
		REQUIRE(t_write_file(w->base_path, w->base_old, c->base_size) == 0, "write base");
	}
}

/* A cluster deflate shrinks, where the overlay has none of its own yet. */
static void compressed_cluster(struct qcow_image *img, uint64_t cs, uint64_t off, uint32_t id)
{
	struct qcow_extent ext;
	uint8_t *in = malloc(cs), *out = malloc(cs);
	int64_t n;

	REQUIRE(in && out, "out of memory");
	REQUIRE(qcow_map(img, off, cs, &ext) == 0, "map");
	if (ext.depth > 0 || ext.kind == QCOW_EXTENT_UNALLOCATED) {
		cf_pattern(id, off, in, cs);
		memset(in + cs / 2, 0, cs / 2);
		n = qcow_deflate_cluster(img, in, out, cs - 1);
		REQUIRE(n > 0, "deflate: %" PRId64, n);
		REQUIRE(qcow_write_compressed(img, off, out, (size_t)n) == 0, "compressed write: %s",
			qcow_error(img));
	}
	free(in);
	free(out);
}

/* The overlay's guest ops, through the chain: partial writes copy the rest
 * of their clusters from the base. */
static void overlay_ops(struct workload *w, struct qcow_image *img)
{
	const struct commit_cfg *c = w->cfg;
	uint64_t cs = 1ULL << c->cb, off, len;
	uint8_t *buf = malloc(c->max_write);
	unsigned i;
	int r = 0;

	REQUIRE(buf, "out of memory");
	for (i = 0; i < c->nops && r == 0; i++) {
		unsigned kind = (unsigned)t_rand_below(10);

		off = t_rand_below(c->size / 512) * 512;
		len = (1 + t_rand_below(c->max_write / 512)) * 512;
		len = QCOW_MIN(len, c->size - off);
		if (kind < 6) {
			cf_pattern(i + 1, off, buf, len);
			r = qcow_write(img, buf, off, len);
		} else if (kind < 8) {
			r = qcow_write_zeroes(img, off, len, kind == 7 ? QCOW_ZERO_MAY_UNMAP : 0);
		} else if (kind == 8) {
			r = qcow_discard(img, off, len);
		} else {
			compressed_cluster(img, cs, off / cs * cs, i + 1);
		}
	}
	REQUIRE(r == 0, "%s: overlay op %u: %d %s", c->name, i, r, qcow_error(img));
	free(buf);
}

/* What the guest reads through the chain, and which sectors the overlay
 * allocates itself. */
static void record_expected(struct workload *w)
{
	struct qcow_open_opts alone = { .read_only = true, .no_backing = true };
	const struct commit_cfg *c = w->cfg;
	struct qcow_image *img = NULL;
	struct qcow_extent ext;
	char err[512] = "", out[4096];
	uint64_t off, s;
	int r;

	w->expected = malloc(c->size);
	w->own = calloc(c->size / 512, sizeof(*w->own));
	REQUIRE(w->expected && w->own, "out of memory");
	r = qcow_open(w->top_path, NULL, &img, err, sizeof(err));
	REQUIRE(r == 0, "open %s: %s", w->top_path, err);
	REQUIRE(qcow_read(img, w->expected, 0, c->size) == 0, "read: %s", qcow_error(img));
	qcow_close(img);
	REQUIRE(t_write_file(w->expected_path, w->expected, c->size) == 0, "write expected");
	if (have_qemu) {
		r = t_run(out, sizeof(out), "qemu-img compare -f qcow2 -F raw '%s' '%s' 2>&1",
			  w->top_path, w->expected_path);
		REQUIRE(r == 0, "%s: qemu reads the chain otherwise than we do (%d): %s", c->name, r,
			out);
	}
	r = qcow_open(w->top_path, &alone, &img, err, sizeof(err));
	REQUIRE(r == 0, "open %s alone: %s", w->top_path, err);
	for (off = 0; off < c->size; off += ext.length) {
		REQUIRE(qcow_map(img, off, c->size - off, &ext) == 0, "map");
		for (s = off / 512; ext.kind != QCOW_EXTENT_UNALLOCATED &&
		     s < (off + ext.length) / 512; s++)
			w->own[s] = true;
	}
	qcow_close(img);
}

static void make_chain(struct workload *w)
{
	const struct commit_cfg *c = w->cfg;
	struct qcow_create_opts co = {
		.size = c->size, .cluster_bits = c->cb, .version = c->version,
		.backing_file = c->raw_base ? "base.raw" : "base.qcow2",
		.backing_format = c->raw_base ? "raw" : "qcow2",
	};
	struct qcow_image *img;

	w->base_path = strdup(t_path("%s", co.backing_file));
	w->top_path = t_path("top.qcow2");
	w->expected_path = t_path("expected.raw");
	REQUIRE(w->base_path, "out of memory");
	make_base(w);
	img = t_create_open(w->top_path, &co);
	overlay_ops(w, img);
	REQUIRE(qcow_close(img) == 0, "overlay close");
	record_expected(w);
}

/* ------------------------------------------------------------ the commit */

/* The backing file as qcow_commit's target: a qcow2 handle or the raw file. */
struct target {
	struct workload *w;
	struct qcow_image *img;
	struct qcow_file raw;
	uint8_t *zeros;
};

static int t_write(void *opaque, const void *buf, uint64_t off, size_t len)
{
	struct target *t = opaque;

	if (t->img)
		return qcow_write(t->img, buf, off, len);
	return t->raw.ops->pwrite(t->raw.ctx, buf, len, off);
}

static int t_write_zeroes(void *opaque, uint64_t off, uint64_t len)
{
	struct target *t = opaque;
	uint64_t n;
	int r = 0;

	if (t->img)
		return qcow_write_zeroes(t->img, off, len, 0);
	for (; r == 0 && len; off += n, len -= n) {
		n = QCOW_MIN(len, 1ULL << 20);
		r = t->raw.ops->pwrite(t->raw.ctx, t->zeros, n, off);
	}
	return r;
}

static int t_flush(void *opaque)
{
	struct target *t = opaque;
	int r = t->img ? qcow_flush(t->img) : t->raw.ops->flush(t->raw.ctx);

	/* the overlay must not have changed yet (qcow_commit's order) */
	t->w->top_at_base_flush = cf_nevents(t->w->cf_top);
	t->w->base_flushed = true;
	return r;
}

static struct crashfile *load(const char *path)
{
	size_t len;
	uint8_t *b = t_read_file(path, &len);
	struct crashfile *cf;

	REQUIRE(b, "read %s", path);
	cf = cf_new(b, len);
	REQUIRE(cf, "out of memory");
	free(b);
	return cf;
}

/* The base opened for writing on its recording file, grown as commit does. */
static void open_target(struct workload *w, struct target *t)
{
	const struct commit_cfg *c = w->cfg;
	struct qcow_file f;
	char err[512] = "";
	int r;

	t->w = w;
	t->zeros = calloc(1, 1U << 20);
	REQUIRE(t->zeros, "out of memory");
	cf_get_file(w->cf_base, &f);
	if (c->raw_base) {
		t->raw = f;
		cf_record_start(w->cf_base);
		r = f.ops->truncate(f.ctx, c->size);
		REQUIRE(r == 0, "truncate the raw base: %d", r);
		return;
	}
	r = qcow_open_file(&f, w->base_path, NULL, &t->img, err, sizeof(err));
	REQUIRE(r == 0, "open the base: %s", err);
	cf_record_start(w->cf_base);
	if (c->size > c->base_size) {
		r = qcow_resize(t->img, c->size);
		REQUIRE(r == 0, "grow the base: %s", qcow_error(t->img));
	}
}

static void run_commit(struct workload *w)
{
	struct qcow_open_opts alone = { .no_backing = true };
	struct qcow_commit_target ops = { NULL, t_write, t_write_zeroes, t_flush };
	struct target t = { NULL };
	struct qcow_file f;
	struct qcow_image *top = NULL;
	char err[512] = "";
	int r;

	w->cf_top = load(w->top_path);
	w->cf_base = load(w->base_path);
	cf_get_file(w->cf_top, &f);
	r = qcow_open_file(&f, w->top_path, &alone, &top, err, sizeof(err));
	REQUIRE(r == 0, "open the overlay: %s", err);
	cf_record_start(w->cf_top);
	open_target(w, &t);
	ops.opaque = &t;
	r = qcow_commit(top, &ops, false, NULL, NULL);
	REQUIRE(r == 0, "%s: commit: %d %s", w->cfg->name, r, qcow_error(top));
	/* (the states below show what a missing or late flush loses) */
	CHECK(w->base_flushed, "%s: the base was never flushed", w->cfg->name);
	CHECK(!w->base_flushed || w->top_at_base_flush == 0,
	      "%s: the overlay changed (%zu events) before the base's flush", w->cfg->name,
	      w->top_at_base_flush);
	w->base1 = cf_nevents(w->cf_base);
	REQUIRE(qcow_close(top) == 0, "close the overlay");
	w->top_n = cf_nevents(w->cf_top);
	REQUIRE(!t.img || qcow_close(t.img) == 0, "close the base");
	w->base_n = cf_nevents(w->cf_base);
	free(t.zeros);
}

/* ------------------------------------------------------------ the states */

struct state {
	struct workload *w;
	size_t cut;
	unsigned variant;
	char desc[720];
	bool ok;
};

static void qemu_check(struct state *s, const char *path, const char *when)
{
	char out[4096];
	int r;

	if (!have_qemu)
		return;
	r = t_run(out, sizeof(out), CF_QEMU_CHECK_CMD, path);
	CHECK_OK(&s->ok, r == 0 || r == 3, "%s: qemu-img check %s %s exited %d:\n%s",
		 s->w->cfg->name, path, when, r, out);
}

static void our_check(struct state *s, const char *path)
{
	struct qcow_open_opts oo = { .read_only = true, .for_check = true };
	struct qcow_check_result res;
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r;

	r = qcow_open(path, &oo, &img, err, sizeof(err));
	CHECK_OK(&s->ok, r == 0, "%s: check open %s: %s", s->w->cfg->name, path, err);
	if (r < 0)
		return;
	r = qcow_check(img, 0, &res, NULL, NULL);
	CHECK_OK(&s->ok, r == 0 && !res.corruptions && !res.check_errors,
		 "%s: qcow_check %s: %d, %" PRIu64 " corruptions", s->w->cfg->name, path, r,
		 res.corruptions);
	qcow_close(img);
}

/* Through the chain: exactly the guest's bytes before the commit. */
static struct qcow_image *verify_chain(struct state *s)
{
	const struct commit_cfg *c = s->w->cfg;
	struct qcow_image *img = NULL;
	struct qcow_info info;
	char err[512] = "", out[4096];
	uint8_t *rd = malloc(c->size);
	int64_t d;
	int r;

	REQUIRE(rd, "out of memory");
	r = qcow_open(s->w->top_path, NULL, &img, err, sizeof(err));
	CHECK_OK(&s->ok, r == 0, "%s: open the overlay: %s", c->name, err);
	if (r == 0) {
		qcow_get_info(img, &info);
		CHECK_OK(&s->ok, info.virtual_size == c->size, "%s: size %" PRIu64, c->name,
			 info.virtual_size);
		r = qcow_read(img, rd, 0, c->size);
		CHECK_OK(&s->ok, r == 0, "%s: read: %s", c->name, qcow_error(img));
		d = r == 0 ? t_first_diff(rd, s->w->expected, c->size) : -1;
		CHECK_OK(&s->ok, d < 0, "%s: the chain reads otherwise at %" PRId64
			 " (overlay's own sector: %d): 0x%02x, was 0x%02x", c->name, d,
			 d >= 0 ? s->w->own[d / 512] : -1, d >= 0 ? rd[d] : 0,
			 d >= 0 ? s->w->expected[d] : 0);
	}
	if (have_qemu && s->variant % 4 == 0) {
		r = t_run(out, sizeof(out), "qemu-img compare -f qcow2 -F raw '%s' '%s' 2>&1",
			  s->w->top_path, s->w->expected_path);
		CHECK_OK(&s->ok, r == 0, "%s: qemu-img compare exited %d: %s", c->name, r, out);
	}
	free(rd);
	return img;
}

/* Each byte of the base: its old one, the overlay's, or (past the old
 * end) a zero. */
static void verify_base(struct state *s)
{
	struct qcow_open_opts oo = { .read_only = true };
	const struct workload *w = s->w;
	const struct commit_cfg *c = w->cfg;
	struct qcow_image *img = NULL;
	struct qcow_info info;
	uint64_t size = 0, o;
	uint8_t *rd = NULL;
	char err[512] = "";
	size_t len;
	int r;

	if (c->raw_base) {
		rd = t_read_file(w->base_path, &len);
		size = len;
	} else {
		r = qcow_open(w->base_path, &oo, &img, err, sizeof(err));
		CHECK_OK(&s->ok, r == 0, "%s: open the base: %s", c->name, err);
		if (r < 0)
			return;
		qcow_get_info(img, &info);
		size = info.virtual_size;
		rd = malloc(size ? size : 1);
		REQUIRE(rd, "out of memory");
		CHECK_OK(&s->ok, qcow_read(img, rd, 0, size) == 0, "%s: read the base: %s", c->name,
			 qcow_error(img));
		qcow_close(img);
	}
	/* a raw file's size is where its last landed write ends, once grown */
	CHECK_OK(&s->ok, size == c->base_size || size == c->size ||
		 (c->raw_base && size > c->base_size && size < c->size),
		 "%s: base size %" PRIu64, c->name, size);
	for (o = 0; rd && o < QCOW_MIN(size, c->size); o++) {
		uint8_t v = rd[o];

		if ((o < c->base_size && v == w->base_old[o]) ||
		    (w->own[o / 512] && v == w->expected[o]) || (o >= c->base_size && !v))
			continue;
		CHECK_OK(&s->ok, false, "%s: base byte %" PRIu64 " is 0x%02x: neither its old one"
			 " nor the overlay's", c->name, o, v);
		break;
	}
	free(rd);
}

/* The overlay takes a write, a flush and a close after the crash. */
static void write_probe(struct state *s, struct qcow_image *img, uint64_t seed)
{
	uint64_t size = s->w->cfg->size, off = cf_mix(seed, 1) % size;
	uint64_t len = QCOW_MIN(1 + cf_mix(seed, 2) % (64 << 10), size - off);
	uint8_t *want = malloc(len), *got = malloc(len);
	int r;

	REQUIRE(want && got, "out of memory");
	cf_pattern(0xfffffff, off, want, len);
	r = qcow_write(img, want, off, len);
	if (r == 0)
		r = qcow_flush(img);
	if (r == 0)
		r = qcow_read(img, got, off, len);
	CHECK_OK(&s->ok, r == 0 && !memcmp(want, got, len), "%s: probe write: %d %s",
		 s->w->cfg->name, r, qcow_error(img));
	CHECK_OK(&s->ok, qcow_close(img) == 0, "%s: close after the probe", s->w->cfg->name);
	free(want);
	free(got);
}

static void build(struct state *s, const struct cf_replay *rp, uint64_t seed, const char *path,
		  const char *who)
{
	size_t n = strlen(s->desc);
	uint8_t *data;
	uint64_t size;
	char d[320];

	REQUIRE(cf_replay_build(rp, cf_fate_of(seed), seed >> 3, &data, &size, d, sizeof(d)) == 0,
		"out of memory");
	snprintf(s->desc + n, sizeof(s->desc) - n, "%s%s: %s", n ? "; " : "", who, d);
	REQUIRE(t_write_file(path, data, size) == 0, "write %s", path);
	free(data);
}

static void check_state(struct workload *w, const struct cf_replay *top,
			const struct cf_replay *base, size_t cut, unsigned v)
{
	uint64_t seed = cf_mix(cf_mix(cf_mix(g_seed, w->index), cut), v);
	struct state s = { .w = w, .cut = cut, .variant = v, .ok = true };
	struct qcow_image *img;

	build(&s, base, cf_mix(seed, 11), w->base_path, "base");
	build(&s, top, cf_mix(seed, 12), w->top_path, "overlay");
	qemu_check(&s, w->top_path, "after the crash");
	if (!w->cfg->raw_base) {
		qemu_check(&s, w->base_path, "after the crash");
		our_check(&s, w->base_path);
	}
	our_check(&s, w->top_path);
	verify_base(&s);
	img = verify_chain(&s);
	if (img)
		write_probe(&s, img, seed);
	qemu_check(&s, w->top_path, "after the probe write");
	g_states++;
	if (s.ok)
		return;
	fprintf(stderr, "  state: workload %u (%s), cut %zu: %s\n", w->index, w->cfg->name, cut,
		s.desc);
	fprintf(stderr, "  replay: SEED=%" PRIu64 " COMMIT_STATES=%" PRIu64
		" COMMIT_ONLY=%u:%zu:%u %s\n", g_seed, g_budget, w->index, cut, v, g_argv0);
}

/*
 * Cut k of the timeline (base events up to its flush, the overlay's, the
 * base's close): how many events of each file were issued.
 */
static void split_cut(const struct workload *w, size_t k, size_t *top, size_t *base)
{
	*base = QCOW_MIN(k, w->base1);
	*top = k > w->base1 ? QCOW_MIN(k - w->base1, w->top_n) : 0;
	if (k > w->base1 + w->top_n)
		*base += k - w->base1 - w->top_n;
}

static void run_states(struct workload *w, uint64_t budget)
{
	size_t total = w->base1 + w->top_n + (w->base_n - w->base1), k, kt, kb;
	struct cf_replay *top = cf_replay_new(w->cf_top), *base = cf_replay_new(w->cf_base);
	unsigned n, v;

	REQUIRE(top && base, "out of memory");
	printf("%s: %zu base events, %zu overlay events, %" PRIu64 " states\n", w->cfg->name,
	       w->base_n, w->top_n, g_only ? 1 : budget);
	for (k = 1; k <= total; k++) {
		/* spread evenly, the last cut (everything landed) always */
		n = (unsigned)(k * budget / total - (k - 1) * budget / total);
		if (k == total && !n)
			n = 1;
		if (g_only)
			n = k == g_only_k ? g_only_v + 1 : 0;
		if (!n)
			continue;
		split_cut(w, k, &kt, &kb);
		cf_replay_seek(top, kt);
		cf_replay_seek(base, kb);
		for (v = g_only ? g_only_v : 0; v < n; v++)
			check_state(w, top, base, k, v);
	}
	cf_replay_free(top);
	cf_replay_free(base);
}

/* The commit's result, with nothing lost: the overlay allocates nothing,
 * the base reads the guest content, qemu-img check clean. */
static void check_result(struct workload *w)
{
	struct qcow_open_opts alone = { .read_only = true, .no_backing = true };
	struct qcow_image *img = NULL;
	struct qcow_extent ext;
	uint64_t size, off;
	const uint8_t *d;
	char err[512] = "";
	int r;

	d = cf_data(w->cf_top, &size);
	REQUIRE(t_write_file(w->top_path, d, size) == 0, "write");
	d = cf_data(w->cf_base, &size);
	REQUIRE(t_write_file(w->base_path, d, size) == 0, "write");
	r = qcow_open(w->top_path, &alone, &img, err, sizeof(err));
	REQUIRE(r == 0, "open: %s", err);
	for (off = 0; off < w->cfg->size; off += ext.length) {
		REQUIRE(qcow_map(img, off, w->cfg->size - off, &ext) == 0, "map");
		CHECK(ext.kind == QCOW_EXTENT_UNALLOCATED, "%s: the overlay still allocates 0x%"
		      PRIx64 "+%" PRIu64, w->cfg->name, off, ext.length);
	}
	qcow_close(img);
	if (have_qemu) {
		CHECK(t_qemu_check(w->top_path) == 0, "%s: overlay not clean", w->cfg->name);
		CHECK(w->cfg->raw_base || t_qemu_check(w->base_path) == 0, "%s: base not clean",
		      w->cfg->name);
		CHECK(t_run(NULL, 0, "qemu-img compare -f %s -F raw '%s' '%s'",
			    w->cfg->raw_base ? "raw" : "qcow2", w->base_path, w->expected_path) == 0,
		      "%s: the base does not read as the guest did", w->cfg->name);
	}
}

static void wl_free(struct workload *w)
{
	cf_free(w->cf_top);
	cf_free(w->cf_base);
	free(w->base_old);
	free(w->expected);
	free(w->own);
	free((void *)w->base_path);
}

int main(int argc, char **argv)
{
	const char *only = getenv("COMMIT_ONLY");
	unsigned i;

	(void)argc;
	g_argv0 = argv[0];
	t_init("test-powercut-commit");
	g_seed = t_rng_state;
	have_qemu = t_want_qemu();
	g_budget = t_env_u64("COMMIT_STATES", DEFAULT_STATES);
	if (only && *only) {
		REQUIRE(sscanf(only, "%u:%zu:%u", &g_only_w, &g_only_k, &g_only_v) == 3,
			"COMMIT_ONLY=workload:cut:variant, got %s", only);
		g_only = true;
	}
	for (i = 0; i < NB_CONFIGS; i++) {
		struct workload w = { .cfg = &configs[i], .index = i };

		/* every workload draws its own chain from the seed */
		t_rng_state = cf_mix(g_seed, i);
		if (g_only && i != g_only_w)
			continue;
		make_chain(&w);
		run_commit(&w);
		run_states(&w, QCOW_MAX(g_budget / NB_CONFIGS, 1));
		if (!g_only)
			check_result(&w);
		wl_free(&w);
	}
	printf("test-powercut-commit: %" PRIu64 " crash states checked\n", g_states);
	if (t_nfail)
		fprintf(stderr, "replay the whole run: SEED=%" PRIu64 " COMMIT_STATES=%" PRIu64
			" %s\n", g_seed, g_budget, argv[0]);
	return t_finish();
}
