/* SPDX-License-Identifier: MIT */
/*
 * Power-cut simulation (doc/design.md sections 4 and 9).
 *
 * Each workload runs the engine on the recording backend (crashfile.c):
 * writes that allocate clusters and L2 tables (some through the nowait
 * calls, as the daemon makes them), overwrites, discards, zero
 * writes with and without unmap, flushes, a close and reopen, and resizes
 * that grow the L1 table, on images whose small clusters and wide refcounts
 * make refcount blocks and the refcount table grow within a few hundred
 * writes. Small caches force evictions in the middle of operations. One
 * image is an overlay of a raw backing file: its partial writes copy the
 * rest of their clusters from the base, and no crash may expose a cluster
 * half copied (the model starts from the base's bytes); two thirds in, it
 * is rebased onto another base (qcow_rebase: the guest content stays, so
 * every crash state must read as the model whichever base its header
 * names).
 *
 * Then, at cuts spread over every file event of the workload, crash states
 * are built: the file at the last completed flush plus any subset of the
 * later writes, each whole, dropped or torn at sector granularity. Each
 * state is written to a real file and must:
 *   - pass qemu-img check and qcow_check (leaks allowed, nothing else);
 *   - open the normal way (qcow_open, read-write) with a virtual size the
 *     workload had at a durability point or was resizing to;
 *   - read back, byte for byte, what the guest model allows: data written
 *     before the last completed flush exactly, any other byte either as it
 *     was then or as some later write or zeroing put it at that same guest
 *     offset (never stale data from a freed or reused cluster);
 *   - stay writable: a write, a flush and a close, then both checks again
 *     and the new data read back;
 *   - (every 4th state) be repaired by qcow_check -r all to an image that
 *     qemu-img check calls clean, leaks included.
 *
 * Reproducible: the workloads and every state derive from SEED. A failure
 * prints the command that replays just that state.
 *
 * Environment: SEED; POWERCUT_STATES (total states, default 1200);
 * POWERCUT_ONLY=workload:cut:variant (one state); POWERCUT_QEMU_EVERY=N
 * (qemu-img check on every Nth state, default 1); POWERCUT_WORKLOAD=i
 * (only workload i); KEEP_TMP=1 keeps the failing state files.
 */
#include "internal.h"
#include "crashfile.h"
#include "testlib.h"

#define DEFAULT_STATES 1200ULL

struct wl_cfg {
	const char *name;
	unsigned cb, rb;
	int version;
	uint64_t size;            /* initial virtual size */
	uint64_t grow1, grow2;    /* resize targets, 0: none */
	unsigned l2_tables;       /* L2 cache size in tables, 0: default */
	unsigned rc_tables;       /* refcount cache size in blocks, 0: default */
	unsigned nops;
	uint64_t max_write;       /* longest random write */
	uint64_t fill_len;        /* sequential fill writes: they make the file grow */
	unsigned fill_pct;        /* percentage of ops that are fill writes */
	uint64_t base_len;        /* bytes of a raw backing file, 0: none */
};

/*
 * 512 B clusters with 64-bit refcounts: a refcount block covers 64 clusters
 * and the first refcount table 2 MiB of file, so the fill writes grow the
 * table. 4 KiB / 64-bit: a new refcount block every 2 MiB, L2 tables of
 * 2 MiB, L1 growth on resize. v2: discard and zeroing deallocate.
 * 64 KiB: the default geometry, with copy-on-write of large clusters.
 */
static const struct wl_cfg configs[] = {
	{ "512B-rb64", 9, 64, 3, 2ULL << 20, 3ULL << 20, 0, 4, 4, 170, 16 << 10, 64 << 10, 25, 0 },
	{ "4K-rb64", 12, 64, 3, 3ULL << 20, 5ULL << 20, 7ULL << 20, 4, 4, 130, 96 << 10,
	  256 << 10, 12, 0 },
	{ "512B-v2", 9, 16, 2, 1ULL << 20, 2ULL << 20, 0, 4, 4, 130, 16 << 10, 32 << 10, 10, 0 },
	{ "64K-rb16", 16, 16, 3, 8ULL << 20, 12ULL << 20, 0, 0, 0, 70, 256 << 10, 512 << 10, 8, 0 },
	/* an overlay: copy-on-write from a raw base shorter than the disk */
	{ "4K-backing", 12, 16, 3, 3ULL << 20, 4ULL << 20, 0, 4, 4, 120, 48 << 10, 128 << 10, 8,
	  (2ULL << 20) + 1536 },
};
#define NB_CONFIGS (sizeof(configs) / sizeof(configs[0]))

struct workload {
	const struct wl_cfg *cfg;
	unsigned index;
	struct crashfile *cf;
	struct cf_model *model;
	struct qcow_image *img;
	uint64_t size;            /* current virtual size while running */
	uint64_t max_size;
	uint64_t fill_pos;
	uint8_t *buf;
	uint8_t *live;            /* what the running image must read back */
	uint64_t req_off, req_len;/* the discard as asked (the op holds its effect) */
	unsigned zero_flags;
	/* during an asynchronous flush: the guest ops run meanwhile, added to
	 * the model after the flush (which covers none of them) */
	struct cf_gop during[64];
	unsigned zero_flags_of[64];
	uint64_t req_of[64][2];       /* a discard's req_off, req_len */
	unsigned nb_during;
	bool in_flush;
	bool syncs_only;              /* this flush: only own fsyncs run during it */
	unsigned async_flushes, ops_during, ops_refused;   /* for the summary */
	unsigned own_syncs;
	unsigned nowait_growths;      /* refcount blocks a nowait write added */
	unsigned compressed;          /* compressed clusters written */
	const char *base1, *base2;    /* backing workloads: the base, the one rebased onto */
};

static bool have_qemu;
static uint64_t g_seed;
static uint64_t g_states, g_qemu_checks, g_budget;
static unsigned g_nowait_growths;   /* over the workloads run */
static unsigned g_own_syncs;
static unsigned g_qemu_every = 1;
static bool g_only;
static unsigned g_only_w;
static size_t g_only_k;
static unsigned g_only_v;
static const char *g_argv0;
static int g_workload = -1;     /* POWERCUT_WORKLOAD: run only this one */

/* ------------------------------------------------------------ the workload */

static void wl_open(struct workload *w)
{
	struct qcow_open_opts oo = {
		.l2_cache_bytes = (uint64_t)w->cfg->l2_tables << w->cfg->cb,
		.refcount_cache_bytes = (uint64_t)w->cfg->rc_tables << w->cfg->cb,
	};
	struct qcow_file f;
	char err[512] = "";
	int r;

	cf_get_file(w->cf, &f);
	r = qcow_open_file(&f, w->cfg->name, &oo, &w->img, err, sizeof(err));
	REQUIRE(r == 0, "%s: open: %d %s", w->cfg->name, r, err);
}

/* The pattern of the backing file's bytes (an id no op has). */
#define BASE_ID 0xba5e0000u

/* A raw backing file of len bytes with pattern id in every byte; its path
 * is absolute, as the crash states are opened from elsewhere. */
static const char *wl_write_base(struct workload *w, unsigned n, uint32_t id, uint64_t len,
				 uint8_t **bytes)
{
	const char *path = strdup(t_path("base-%u-%u.raw", w->index, n));
	uint8_t *b = malloc(len);

	REQUIRE(b && path, "out of memory");
	cf_pattern(id, 0, b, len);
	REQUIRE(t_write_file(path, b, len) == 0, "write %s", path);
	*bytes = b;
	return path;
}

/* The workload's base (the guest bytes before the first op) and the one it
 * is rebased onto: another pattern, another length. */
static const char *wl_make_bases(struct workload *w)
{
	uint8_t *b;
	const char *path = wl_write_base(w, 1, BASE_ID, w->cfg->base_len, &b);

	cf_model_set_initial(w->model, b, w->cfg->base_len);
	memcpy(w->live, b, w->cfg->base_len);
	free(b);
	w->base2 = wl_write_base(w, 2, BASE_ID + 1, w->cfg->base_len * 3 / 2 + 512, &b);
	free(b);
	return path;
}

static void wl_create(struct workload *w)
{
	const struct wl_cfg *c = w->cfg;
	struct qcow_create_opts co = {
		.size = c->size, .cluster_bits = c->cb, .refcount_bits = c->rb, .version = c->version,
	};
	struct qcow_file f;
	char err[512] = "";
	int r;

	w->size = c->size;
	w->max_size = QCOW_MAX(c->size, QCOW_MAX(c->grow1, c->grow2));
	w->model = cf_model_new(c->size, w->max_size);
	w->buf = malloc(QCOW_MAX(c->max_write, c->fill_len));
	w->live = calloc(1, w->max_size);
	REQUIRE(w->buf && w->live, "out of memory");
	if (c->base_len) {
		co.backing_file = w->base1 = wl_make_bases(w);
		co.backing_format = "raw";
	}
	w->cf = cf_new(NULL, 0);
	REQUIRE(w->cf, "out of memory");
	cf_get_file(w->cf, &f);
	r = qcow_create_file(&f, c->name, &co, err, sizeof(err));
	REQUIRE(r == 0, "%s: create: %d %s", c->name, r, err);
	/* a crash during create leaves no image at all (design 14): start here */
	cf_record_start(w->cf);
	wl_open(w);
}

/* A random guest range inside the disk: offsets unaligned, sector or
 * cluster aligned; lengths from one byte to max. */
static void pick_range(struct workload *w, uint64_t max, uint64_t *off, uint64_t *len)
{
	uint64_t cs = 1ULL << w->cfg->cb;

	*off = t_rand_below(w->size);
	switch (t_rand_below(3)) {
	case 0: break;
	case 1: *off = QCOW_ALIGN_DOWN(*off, 512); break;
	default: *off = QCOW_ALIGN_DOWN(*off, cs); break;
	}
	switch (t_rand_below(3)) {
	case 0: *len = 1 + t_rand_below(1024); break;
	case 1: *len = 1 + t_rand_below(3 * cs); break;
	default: *len = 1 + t_rand_below(max); break;
	}
	if (t_rand_below(3) == 0)
		*len = QCOW_ALIGN_UP(*len, 512);
	*len = QCOW_MIN(*len, w->size - *off);
}

/* Run one engine call as guest op g (events and result recorded). */
static int wl_call(struct workload *w, struct cf_gop *g, int (*fn)(struct workload *, struct cf_gop *))
{
	int r;

	g->ev_begin = cf_nevents(w->cf);
	r = fn(w, g);
	g->ev_end = cf_nevents(w->cf);
	g->failed = r < 0;
	if (w->in_flush) {
		w->zero_flags_of[w->nb_during] = w->zero_flags;
		w->req_of[w->nb_during][0] = w->req_off;
		w->req_of[w->nb_during][1] = w->req_len;
		w->during[w->nb_during++] = *g;
	} else {
		cf_model_add(w->model, g);
	}
	if (r == 0 && g->kind == CF_G_WRITE)
		cf_pattern(g->id, g->off, w->live + g->off, g->len);
	else if (r == 0 && g->kind == CF_G_ZERO)
		memset(w->live + g->off, 0, g->len);
	return r;
}

static int do_write(struct workload *w, struct cf_gop *g)
{
	cf_pattern(g->id, g->off, w->buf, g->len);
	return qcow_write(w->img, w->buf, g->off, g->len);
}

/* The same write as the daemon makes it (testlib.h): a new refcount block it
 * needs is written by the next flush, its table entry after it. */
static int do_write_nowait(struct workload *w, struct cf_gop *g)
{
	struct qcow_stats before, after;
	int r;

	cf_pattern(g->id, g->off, w->buf, g->len);
	qcow_get_stats(w->img, &before);
	r = t_nowait_write(w->img, w->buf, g->off, g->len, NULL, NULL);
	qcow_get_stats(w->img, &after);
	w->nowait_growths += (unsigned)(after.refcount_growths - before.refcount_growths);
	return r;
}

static int do_flush(struct workload *w, struct cf_gop *g)
{
	(void)g;
	return qcow_flush(w->img);
}

static int do_reopen(struct workload *w, struct cf_gop *g)
{
	int r = qcow_close(w->img);

	(void)g;
	w->img = NULL;
	wl_open(w);
	return r;
}

/* Rebase onto the other base: the guest content stays (a flush too). */
static int do_rebase(struct workload *w, struct cf_gop *g)
{
	(void)g;
	return qcow_rebase(w->img, w->base2, "raw", NULL, NULL);
}

static int do_resize(struct workload *w, struct cf_gop *g)
{
	int r = qcow_resize(w->img, g->size);

	if (r == 0)
		w->size = g->size;
	return r;
}

static int do_zero(struct workload *w, struct cf_gop *g)
{
	return qcow_write_zeroes(w->img, g->off, g->len, w->zero_flags);
}

static int do_discard(struct workload *w, struct cf_gop *g)
{
	(void)g;
	return qcow_discard(w->img, w->req_off, w->req_len);
}

/* The clusters discard really drops: whole ones, a last one cut short by
 * the end of the disk counting as whole (cluster.c whole_clusters). */
static void discard_range(struct workload *w, uint64_t off, uint64_t len, struct cf_gop *g)
{
	uint64_t cs = 1ULL << w->cfg->cb, end = off + len;
	uint64_t first = QCOW_DIV_ROUND_UP(off, cs);
	uint64_t last_end = end == w->size ? QCOW_DIV_ROUND_UP(end, cs) : end / cs;

	g->kind = CF_G_ZERO;
	g->off = first * cs;
	g->len = last_end > first ? QCOW_MIN(last_end * cs, w->size) - g->off : 0;
}

/* A guest read; it must see what the guest wrote. */
static void wl_read_at(struct workload *w, uint64_t off, uint64_t len)
{
	int r = qcow_read(w->img, w->buf, off, len);

	REQUIRE(r == 0, "%s: read: %d %s", w->cfg->name, r, qcow_error(w->img));
	CHECK(!memcmp(w->buf, w->live + off, len), "%s: read of %" PRIu64 " bytes at %" PRIu64
	      " differs from what was written", w->cfg->name, len, off);
}

static void wl_read(struct workload *w)
{
	uint64_t off, len;

	pick_range(w, w->cfg->max_write, &off, &len);
	wl_read_at(w, off, len);
}

/*
 * Read a sector in every L2 table's range, as a guest reading the whole
 * disk would: with a small cache this evicts (writes back) every dirty L2
 * table outside any flush, which the next flush must order exactly like
 * the table writes it does itself.
 */
static void wl_scan(struct workload *w)
{
	uint64_t span = 1ULL << (2 * w->cfg->cb - 3), off;

	for (off = t_rand_below(span / 512) * 512; off < w->size; off += span)
		wl_read_at(w, off, QCOW_MIN(512, w->size - off));
}

/* The random ops: each fills in g from the RNG and runs it. */
static int op_flush(struct workload *w, struct cf_gop *g)
{
	g->kind = CF_G_FLUSH;
	return wl_call(w, g, do_flush);
}

/* Sequential writes through the disk: the file grows, so refcount blocks
 * and (at 512-byte clusters) the refcount table must grow too; half of them
 * as the daemon writes, its new refcount blocks left to the flushes. */
static int op_fill(struct workload *w, struct cf_gop *g)
{
	if (w->fill_pos >= w->size)
		w->fill_pos = 0;
	g->kind = CF_G_WRITE;
	g->off = w->fill_pos;
	g->len = QCOW_MIN(w->cfg->fill_len, w->size - w->fill_pos);
	w->fill_pos += g->len;
	return wl_call(w, g, t_rand_below(2) ? do_write_nowait : do_write);
}

static int op_write(struct workload *w, struct cf_gop *g)
{
	pick_range(w, w->cfg->max_write, &g->off, &g->len);
	g->kind = CF_G_WRITE;
	return wl_call(w, g, do_write);
}

/* A compressed cluster (as convert -c writes them), of a pattern deflate
 * shrinks: packed beside the others, sharing host clusters. */
static int do_compress(struct workload *w, struct cf_gop *g)
{
	uint64_t cs = 1ULL << w->cfg->cb;
	uint8_t *out = malloc(cs);
	int64_t n;
	int r;

	REQUIRE(out, "out of memory");
	cf_pattern(g->id, g->off, w->buf, cs);
	n = qcow_deflate_cluster(w->img, w->buf, out, cs - 1);
	REQUIRE(n > 0, "%s: the pattern does not compress (%" PRId64 ")", w->cfg->name, n);
	r = qcow_write_compressed(w->img, g->off, out, (size_t)n);
	free(out);
	return r;
}

/* Where the image has no cluster of its own: a compressed one; else (or
 * during a flush run step by step) a write. */
static int op_compress(struct workload *w, struct cf_gop *g)
{
	uint64_t cs = 1ULL << w->cfg->cb, off;
	struct qcow_extent ext;
	unsigned tries;

	for (tries = 0; tries < 8 && !w->in_flush && w->size >= cs; tries++) {
		off = t_rand_below(w->size / cs) * cs;
		REQUIRE(qcow_map(w->img, off, cs, &ext) == 0, "%s: map", w->cfg->name);
		if (ext.depth == 0 && ext.kind != QCOW_EXTENT_UNALLOCATED &&
		    !(ext.kind == QCOW_EXTENT_ZERO && !ext.host_offset))
			continue;
		g->kind = CF_G_WRITE;
		g->id |= CF_ID_SQUEEZABLE;
		g->off = off;
		g->len = cs;
		w->compressed++;
		return wl_call(w, g, do_compress);
	}
	return op_write(w, g);
}

static int op_zero(struct workload *w, struct cf_gop *g)
{
	pick_range(w, 4ULL << w->cfg->cb, &g->off, &g->len);
	g->kind = CF_G_ZERO;
	w->req_len = 0;
	w->zero_flags = t_rand_below(2) ? QCOW_ZERO_MAY_UNMAP : 0;
	return wl_call(w, g, do_zero);
}

static int op_discard(struct workload *w, struct cf_gop *g)
{
	pick_range(w, 8ULL << w->cfg->cb, &w->req_off, &w->req_len);
	discard_range(w, w->req_off, w->req_len, g);
	return wl_call(w, g, do_discard);
}

static int op_read(struct workload *w, struct cf_gop *g)
{
	(void)g;
	wl_read(w);
	return 0;
}

/* A scan, often right before a flush: tables evicted, and then the flush
 * has no table of its own to write. */
static int op_scan(struct workload *w, struct cf_gop *g)
{
	wl_scan(w);
	return t_rand_below(2) ? 0 : op_flush(w, g);
}

/* A guest trims, reads the disk, syncs: the table that dropped the
 * clusters is evicted, and the flush has nothing left to write but the
 * refcount decrements. */
static int op_trim_scan_flush(struct workload *w, struct cf_gop *g)
{
	int ret = t_rand_below(2) ? op_discard(w, g) : op_zero(w, g);

	if (ret < 0)
		return ret;
	wl_scan(w);
	*g = (struct cf_gop){ .id = g->id };
	return op_flush(w, g);
}

/*
 * A flush as the daemon runs it (flush.c, qcow_flush_start/next/io_done):
 * each batch's writes in a random order, and guest writes, zeroings and
 * discards run between them, as a server's requests go on while the
 * flush's IO is in flight. The flush covers what completed before it started: it goes into
 * the model first, with the events of its whole run, and the ops run
 * meanwhile after it, never durable through it. One refused with -EBUSY (a
 * table write that must wait for the flush) or -ENOMEM (every cache slot
 * pinned by it) may have done part of its work: it counts as failed, and
 * is done again once the flush is over. A guest flush that finds nothing
 * but an fsync to do may issue its own (qcow_sync_begin, as the daemon
 * does): a durability point for everything before it, the flush's ops
 * and those run meanwhile, even while the flush's own fsyncs are to come.
 * Those are rare beside ops that dirty tables, so some flushes run only
 * them.
 */
static void during_flush(struct workload *w)
{
	const struct qcow_io fsync = { .op = QCOW_IO_FSYNC };
	struct cf_gop g = { .id = 0 };
	struct qcow_sync s;
	int r;

	if (w->nb_during == sizeof(w->during) / sizeof(w->during[0]))
		return;
	g.id = 100000 + (uint32_t)cf_model_nops(w->model) * 64 + w->nb_during;
	if ((w->syncs_only || t_rand_below(2) == 0) && qcow_sync_begin(w->img, 0, &s)) {
		g.kind = CF_G_FLUSH;
		g.ev_begin = cf_nevents(w->cf);
		r = qcow_sync_end(w->img, &s, qcow_io_do(w->img, &fsync));
		CHECK(r == 0, "%s: own fsync: %d %s", w->cfg->name, r, qcow_error(w->img));
		g.ev_end = cf_nevents(w->cf);
		g.failed = r < 0;
		w->during[w->nb_during++] = g;
		w->own_syncs++;
		return;
	}
	if (w->syncs_only || t_rand_below(2))
		return;
	switch (t_rand_below(4)) {
	case 0:
		r = op_zero(w, &g);
		break;
	case 1:
		r = op_discard(w, &g);
		break;
	default:
		r = op_write(w, &g);
		break;
	}
	/* -ENOMEM: every cache slot is pinned by the flush's writes */
	CHECK(r == 0 || r == -EBUSY || r == -ENOMEM, "%s: op during a flush: %d %s",
	      w->cfg->name, r, qcow_error(w->img));
}

static void run_flush_batch(struct workload *w, struct qcow_io *ios, int n)
{
	int i, r, result = 0;

	for (i = n - 1; i > 0; i--) {
		unsigned j = (unsigned)t_rand_below((uint64_t)i + 1);
		struct qcow_io tmp = ios[i];

		ios[i] = ios[j];
		ios[j] = tmp;
	}
	for (i = 0; i < n; i++) {
		during_flush(w);
		r = qcow_io_do(w->img, &ios[i]);
		if (r < 0 && !result)
			result = r;
	}
	during_flush(w);
	qcow_flush_io_done(w->img, result);
}

static int op_async_flush(struct workload *w, struct cf_gop *g)
{
	struct qcow_io ios[4];
	unsigned i;
	int r, n;

	g->kind = CF_G_FLUSH;
	g->ev_begin = cf_nevents(w->cf);
	r = qcow_flush_start(w->img, 0);
	if (r < 0)
		return r;
	w->in_flush = true;
	w->syncs_only = t_rand_below(3) == 0;
	w->nb_during = 0;
	while (r == 0 && (n = qcow_flush_next(w->img, ios, 1 + (unsigned)t_rand_below(4))) != 0) {
		if (n < 0) {
			r = n;
			break;
		}
		run_flush_batch(w, ios, n);
	}
	w->in_flush = false;
	w->async_flushes++;
	w->ops_during += w->nb_during;
	g->ev_end = cf_nevents(w->cf);
	g->failed = r < 0;
	cf_model_add(w->model, g);
	for (i = 0; i < w->nb_during; i++)
		cf_model_add(w->model, &w->during[i]);
	for (i = 0; i < w->nb_during; i++) {
		struct cf_gop redo = w->during[i];

		if (!w->during[i].failed || redo.kind == CF_G_FLUSH)
			continue;
		w->ops_refused++;
		w->zero_flags = w->zero_flags_of[i];
		w->req_off = w->req_of[i][0];
		w->req_len = w->req_of[i][1];
		if (redo.kind == CF_G_WRITE)
			r = wl_call(w, &redo, do_write);
		else if (w->req_len)
			r = wl_call(w, &redo, do_discard);
		else
			r = wl_call(w, &redo, do_zero);
		if (r < 0)
			return r;
	}
	return r < 0 ? r : 0;
}

struct random_op {
	unsigned weight;              /* percent; the fill writes get the config's */
	int (*run)(struct workload *w, struct cf_gop *g);
};

static const struct random_op random_ops[] = {
	{ 4, op_flush }, { 8, op_async_flush }, { 0, op_fill }, { 8, op_zero }, { 8, op_discard },
	{ 6, op_read }, { 5, op_scan }, { 5, op_trim_scan_flush }, { 5, op_compress },
	{ 100, op_write },
};

static int run_random_op(struct workload *w, struct cf_gop *g)
{
	unsigned r = (unsigned)t_rand_below(100), i;

	for (i = 0; i < sizeof(random_ops) / sizeof(random_ops[0]) - 1; i++) {
		unsigned weight = random_ops[i].run == op_fill ? w->cfg->fill_pct
							       : random_ops[i].weight;

		if (r < weight)
			break;
		r -= weight;
	}
	return random_ops[i].run(w, g);
}

/* Op i: the resizes and the reopen at fixed points, else a random one. */
static void wl_step(struct workload *w, unsigned i)
{
	const struct wl_cfg *c = w->cfg;
	struct cf_gop g = { .id = i + 1, .kind = CF_G_RESIZE };
	int ret;

	if (i == c->nops / 3 && c->grow1) {
		g.size = c->grow1;
		ret = wl_call(w, &g, do_resize);
	} else if (i == 2 * c->nops / 3 && c->grow2) {
		g.size = c->grow2;
		ret = wl_call(w, &g, do_resize);
	} else if (i == 2 * c->nops / 3 && c->base_len) {
		g.kind = CF_G_FLUSH;
		ret = wl_call(w, &g, do_rebase);
	} else if (i == c->nops / 2) {
		g.kind = CF_G_FLUSH;
		ret = wl_call(w, &g, do_reopen);
	} else {
		ret = run_random_op(w, &g);
	}
	REQUIRE(ret == 0, "%s: op %u (kind %d, off %" PRIu64 " len %" PRIu64 "): %d %s",
		c->name, i, g.kind, g.off, g.len, ret, w->img ? qcow_error(w->img) : "");
}

/* The running image must read back every op exactly, before any crash. */
static void wl_verify_live(struct workload *w)
{
	uint8_t *rd = malloc(w->size);
	int64_t d;
	int r;

	REQUIRE(rd, "out of memory");
	r = qcow_read(w->img, rd, 0, w->size);
	REQUIRE(r == 0, "%s: read back: %d %s", w->cfg->name, r, qcow_error(w->img));
	d = t_first_diff(rd, w->live, w->size);
	CHECK(d < 0, "%s: the running image reads back wrong at guest offset %" PRId64,
	      w->cfg->name, d);
	free(rd);
}

/* What the workload grew: proof that the growth paths ran. */
static void wl_describe(struct workload *w)
{
	struct qcow_info info;

	qcow_get_info(w->img, &info);
	printf("%s: file %" PRIu64 " bytes, L1 %u entries at 0x%" PRIx64 ", refcount table %u "
	       "clusters at 0x%" PRIx64 "\n", w->cfg->name, info.file_size, info.l1_size,
	       info.l1_table_offset, info.refcount_table_clusters, info.refcount_table_offset);
	printf("%s: %u flushes run step by step, %u guest ops during them (%u refused until "
	       "they ended, %u own fsyncs), %u refcount blocks added by nowait writes, %u "
	       "compressed clusters\n", w->cfg->name, w->async_flushes, w->ops_during,
	       w->ops_refused, w->own_syncs, w->nowait_growths, w->compressed);
	g_nowait_growths += w->nowait_growths;
	g_own_syncs += w->own_syncs;
}

static void wl_run(struct workload *w)
{
	struct cf_gop g = { .kind = CF_G_FLUSH };
	unsigned i;

	t_rng_state = cf_mix(g_seed, w->index);
	wl_create(w);
	for (i = 0; i < w->cfg->nops; i++)
		wl_step(w, i);
	wl_verify_live(w);
	wl_describe(w);
	g.ev_begin = cf_nevents(w->cf);
	REQUIRE(qcow_close(w->img) == 0, "%s: close", w->cfg->name);
	w->img = NULL;
	g.ev_end = cf_nevents(w->cf);
	cf_model_add(w->model, &g);
}

static void wl_free(struct workload *w)
{
	free((void *)w->base1);
	free((void *)w->base2);
	cf_free(w->cf);
	cf_model_free(w->model);
	free(w->buf);
	free(w->live);
}

/* ------------------------------------------------------------ one state */

struct report_buf {
	char text[2048];
	size_t len;
	unsigned lines;
};

static void collect(void *opaque, const char *line)
{
	struct report_buf *rb = opaque;
	int n;

	/* the errors are what a failure must show; leaks are allowed */
	if (!strncmp(line, "Leaked", 6) || rb->lines++ >= 8 || rb->len >= sizeof(rb->text) - 1)
		return;
	n = snprintf(rb->text + rb->len, sizeof(rb->text) - rb->len, "    %s\n", line);
	if (n > 0)
		rb->len = QCOW_MIN(rb->len + (size_t)n, sizeof(rb->text) - 1);
}

struct state_ctx {
	struct workload *w;
	size_t cut;
	unsigned variant;
	const char *desc;
	const char *path;
	uint64_t seed;
	bool ok;
};

static void state_qemu_check(struct state_ctx *s, const char *when)
{
	char out[4096];
	int r;

	if (!have_qemu || (g_qemu_every > 1 && g_states % g_qemu_every))
		return;
	r = t_run(out, sizeof(out), CF_QEMU_CHECK_CMD, s->path);
	g_qemu_checks++;
	/* 0: clean, 3: leaked clusters only */
	CHECK_OK(&s->ok, r == 0 || r == 3, "%s: qemu-img check %s exited %d:\n%s", s->w->cfg->name, when,
	       r, out);
}

static void state_our_check(struct state_ctx *s, const char *when)
{
	struct qcow_open_opts oo = { .read_only = true, .for_check = true };
	struct qcow_check_result res;
	struct report_buf rb = { .len = 0 };
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r;

	r = qcow_open(s->path, &oo, &img, err, sizeof(err));
	CHECK_OK(&s->ok, r == 0, "%s: check open %s: %d %s", s->w->cfg->name, when, r, err);
	if (r < 0)
		return;
	r = qcow_check(img, 0, &res, collect, &rb);
	CHECK_OK(&s->ok, r == 0 && res.corruptions == 0 && res.check_errors == 0,
	       "%s: qcow_check %s: %d, %" PRIu64 " corruptions, %" PRIu64 " check errors:\n%s",
	       s->w->cfg->name, when, r, res.corruptions, res.check_errors, rb.text);
	qcow_close(img);
}

/* What a user does after a crash, on every 4th state: qcow_check -r all.
 * It must leave nothing behind, by qemu-img's judgement too. */
static void state_repair(struct state_ctx *s)
{
	struct qcow_open_opts oo = { .for_check = true };
	struct qcow_check_result res;
	struct report_buf rb = { .len = 0 };
	struct qcow_image *img = NULL;
	char err[512] = "", out[4096];
	int r;

	if (s->seed % 4)
		return;
	r = qcow_open(s->path, &oo, &img, err, sizeof(err));
	CHECK_OK(&s->ok, r == 0, "%s: repair open: %d %s", s->w->cfg->name, r, err);
	if (r < 0)
		return;
	r = qcow_check(img, QCOW_CHECK_REPAIR_ALL, &res, collect, &rb);
	CHECK_OK(&s->ok, r == 0 && !res.corruptions && !res.leaks && !res.check_errors,
	       "%s: qcow_check -r all: %d, left %" PRIu64 " corruptions, %" PRIu64 " leaks, %"
	       PRIu64 " check errors:\n%s", s->w->cfg->name, r, res.corruptions, res.leaks,
	       res.check_errors, rb.text);
	r = qcow_close(img);
	CHECK_OK(&s->ok, r == 0, "%s: close after the repair: %d", s->w->cfg->name, r);
	if (!have_qemu)
		return;
	r = t_run(out, sizeof(out), CF_QEMU_CHECK_CMD, s->path);
	g_qemu_checks++;
	CHECK_OK(&s->ok, r == 0, "%s: qemu-img check after the repair exited %d:\n%s", s->w->cfg->name,
	       r, out);
}

/* Open the normal way and compare the whole disk with the model. */
static struct qcow_image *state_verify_data(struct state_ctx *s)
{
	struct cf_model *m = s->w->model;
	struct qcow_image *img = NULL;
	struct qcow_info info;
	char err[512] = "", why[768];
	uint8_t *rd;
	uint64_t bad;
	int r;

	r = qcow_open(s->path, NULL, &img, err, sizeof(err));
	CHECK_OK(&s->ok, r == 0, "%s: open: %d %s", s->w->cfg->name, r, err);
	if (r < 0)
		return NULL;
	qcow_get_info(img, &info);
	CHECK_OK(&s->ok, cf_model_size_ok(m, info.virtual_size), "%s: virtual size %" PRIu64
	       " was never durable nor being resized to", s->w->cfg->name, info.virtual_size);
	rd = malloc(info.virtual_size ? info.virtual_size : 1);
	REQUIRE(rd, "out of memory");
	r = qcow_read(img, rd, 0, info.virtual_size);
	CHECK_OK(&s->ok, r == 0, "%s: read: %d %s", s->w->cfg->name, r, qcow_error(img));
	if (r == 0) {
		bad = cf_model_compare(m, rd, info.virtual_size, why, sizeof(why));
		CHECK_OK(&s->ok, bad == 0, "%s: %" PRIu64 " bytes read back wrong: %s", s->w->cfg->name,
		       bad, why);
	}
	free(rd);
	return img;
}

/* The image must take a new write, flush and close cleanly after the crash. */
static void state_write_probe(struct state_ctx *s, struct qcow_image *img)
{
	uint64_t cs = 1ULL << s->w->cfg->cb, size = cf_model_min_size(s->w->model);
	uint64_t off = cf_mix(s->seed, 1) % size, len;
	uint8_t *want, *got;
	int r;

	len = QCOW_MIN(1 + cf_mix(s->seed, 2) % (4 * cs), size - off);
	want = malloc(len);
	got = malloc(len);
	REQUIRE(want && got, "out of memory");
	cf_pattern(0xfffffff, off, want, len);
	r = qcow_write(img, want, off, len);
	CHECK_OK(&s->ok, r == 0, "%s: probe write: %d %s", s->w->cfg->name, r, qcow_error(img));
	if (r == 0)
		r = qcow_flush(img);
	CHECK_OK(&s->ok, r == 0, "%s: probe flush: %d %s", s->w->cfg->name, r, qcow_error(img));
	if (r == 0)
		r = qcow_read(img, got, off, len);
	CHECK_OK(&s->ok, r == 0 && !memcmp(want, got, len), "%s: probe read back: %d", s->w->cfg->name,
	       r);
	r = qcow_close(img);
	CHECK_OK(&s->ok, r == 0, "%s: close after the probe: %d", s->w->cfg->name, r);
	free(want);
	free(got);
}

static void state_report_failure(struct state_ctx *s, const uint8_t *data, uint64_t size)
{
	const char *keep = t_path("failed-w%u-c%zu-v%u.qcow2", s->w->index, s->cut, s->variant);

	t_write_file(keep, data, size);
	fprintf(stderr, "  state: workload %u (%s), %s\n", s->w->index, s->w->cfg->name, s->desc);
	fprintf(stderr, "  replay: SEED=%" PRIu64 " POWERCUT_STATES=%" PRIu64
		" POWERCUT_ONLY=%u:%zu:%u %s\n", g_seed, g_budget, s->w->index, s->cut,
		s->variant, g_argv0);
	fprintf(stderr, "  the crash state is %s (KEEP_TMP=1 keeps it)\n", keep);
}

static const char *g_state_path;

static void check_state(struct workload *w, size_t cut, unsigned variant, uint64_t seed,
			const uint8_t *data, uint64_t size, const char *desc)
{
	struct state_ctx s = { w, cut, variant, desc, g_state_path, seed, true };
	struct qcow_image *img;

	REQUIRE(t_write_file(s.path, data, size) == 0, "write %s", s.path);
	state_qemu_check(&s, "after the crash");
	state_our_check(&s, "after the crash");
	img = state_verify_data(&s);
	if (img)
		state_write_probe(&s, img);
	state_our_check(&s, "after the probe write");
	state_qemu_check(&s, "after the probe write");
	state_repair(&s);
	g_states++;
	if (!s.ok)
		state_report_failure(&s, data, size);
}

/* ------------------------------------------------------------ the states */

/* The states planned at one cut: first drops (one write left out each),
 * then random ones. */
struct cut_plan {
	unsigned drops, randoms;
	unsigned writes;          /* writes pending at the cut */
};

/* State v of cut k: its seed, and for a drop, which write it leaves out
 * (spread over the pending writes, from an offset the seed picks). */
static void run_state(struct workload *w, struct cf_replay *rp, size_t k, unsigned v,
		      const struct cut_plan *p)
{
	uint64_t seed = cf_mix(cf_mix(cf_mix(g_seed, w->index), k), v), size;
	enum cf_fate fate = cf_fate_of(seed);
	char desc[320];
	uint8_t *data;

	if (v < p->drops) {
		uint64_t j = ((uint64_t)v * p->writes / p->drops + seed % p->writes) % p->writes;

		fate = CF_FATE_DROP_ONE;
		/* cf_replay_build leaves out pending write seed % writes */
		seed = j + p->writes * (seed >> 16);
	}
	REQUIRE(cf_replay_build(rp, fate, seed, &data, &size, desc, sizeof(desc)) == 0,
		"out of memory");
	check_state(w, k, v, seed, data, size, desc);
	free(data);
}

/* Spread budget evenly over the n slots listed (a slot names its cut),
 * adding to count[cut]; the offset from the seed makes different seeds
 * visit different slots. */
static void spread(const size_t *slots, size_t n, uint64_t budget, uint64_t off,
		   unsigned *count)
{
	size_t i;

	for (i = 1; i <= n; i++)
		count[slots[i - 1]] += (unsigned)(((i + off) * budget) / n -
						 ((i + off - 1) * budget) / n);
}

/* Writes pending at each cut (since the last flush before it); *root[k]:
 * one of them writes the header cluster (a switch to a new L1 or refcount
 * table, a new size). */
static unsigned *pending_writes(const struct workload *w, bool **root)
{
	size_t e = cf_nevents(w->cf), k;
	unsigned *n = calloc(e + 1, sizeof(*n));

	*root = calloc(e + 1, sizeof(**root));
	REQUIRE(n && *root, "out of memory");
	for (k = 1; k <= e; k++) {
		if (cf_event_is_flush(w->cf, k - 1))
			continue;
		n[k] = n[k - 1] + cf_event_is_write(w->cf, k - 1);
		(*root)[k] = (*root)[k - 1] ||
			     cf_event_writes_to(w->cf, k - 1, 0, 1ULL << w->cfg->cb);
	}
	return n;
}

/* A flush interval that switches the root is rare and decisive: every one
 * of its writes is left out once, and a few random mixes on top. */
static void plan_root(struct cut_plan *p)
{
	if (p->writes >= 2) {
		p->drops = QCOW_MAX(p->drops, p->writes);
		p->randoms += 4;
	}
}

/*
 * Half the budget: "all but one write landed" states at the cuts right
 * before a flush, spread evenly over every (flush interval, write) pair of
 * the intervals with two writes or more. Such a state is what a missing
 * ordering fsync between two writes leaves, and these cuts have every
 * write of the interval pending. The other half: random states spread over
 * all cuts, those in the middle of a step and those right after a flush
 * (nothing pending: every byte must read back exactly) included. On top,
 * the intervals that write the header get every drop (plan_root).
 */
static struct cut_plan *plan_states(const struct workload *w, uint64_t budget)
{
	size_t e = cf_nevents(w->cf), k, npairs = 0, nall = 0, i;
	bool *root;
	unsigned *writes = pending_writes(w, &root), *drops = calloc(e + 1, sizeof(*drops));
	unsigned *randoms = calloc(e + 1, sizeof(*randoms));
	size_t *pairs = NULL, *all = malloc((e + 1) * sizeof(*all));
	struct cut_plan *plan = calloc(e + 1, sizeof(*plan));
	uint64_t off = cf_mix(g_seed, 77 + w->index);

	for (k = 1; k <= e; k++)
		if (writes[k] >= 2 && (k == e || cf_event_is_flush(w->cf, k)))
			npairs += writes[k];
	pairs = malloc((npairs + 1) * sizeof(*pairs));
	REQUIRE(drops && randoms && pairs && all && plan, "out of memory");
	for (k = 1, npairs = 0; k <= e; k++) {
		all[nall++] = k;
		if (writes[k] >= 2 && (k == e || cf_event_is_flush(w->cf, k)))
			for (i = 0; i < writes[k]; i++)
				pairs[npairs++] = k;
	}
	if (npairs)
		spread(pairs, npairs, budget / 2, off % npairs, drops);
	spread(all, nall, budget - (npairs ? budget / 2 : 0), off % nall, randoms);
	for (k = 1; k <= e; k++) {
		plan[k] = (struct cut_plan){ drops[k], randoms[k], writes[k] };
		if (root[k] && (k == e || cf_event_is_flush(w->cf, k)))
			plan_root(&plan[k]);
	}
	free(root);
	free(writes);
	free(drops);
	free(randoms);
	free(pairs);
	free(all);
	return plan;
}

static void wl_states(struct workload *w, uint64_t budget)
{
	size_t e = cf_nevents(w->cf), k;
	struct cut_plan *plan = plan_states(w, budget);
	struct cf_replay *rp = cf_replay_new(w->cf);
	unsigned n, v;

	printf("%s: %zu ops, %zu file events, %" PRIu64 " states\n", w->cfg->name,
	       cf_model_nops(w->model), e, g_only ? 1 : budget);
	for (k = 1; k <= e; k++) {
		n = plan[k].drops + plan[k].randoms;
		if (g_only)
			n = k == g_only_k ? g_only_v + 1 : 0;
		if (!n)
			continue;
		cf_replay_seek(rp, k);
		cf_model_seek(w->model, k);
		for (v = g_only ? g_only_v : 0; v < n; v++)
			run_state(w, rp, k, v, &plan[k]);
	}
	cf_replay_free(rp);
	free(plan);
}

static void parse_only(void)
{
	const char *s = getenv("POWERCUT_ONLY");

	if (!s || !*s)
		return;
	REQUIRE(sscanf(s, "%u:%zu:%u", &g_only_w, &g_only_k, &g_only_v) == 3,
		"POWERCUT_ONLY=workload:cut:variant, got %s", s);
	g_only = true;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	double t0 = now();
	unsigned i;

	(void)argc;
	g_argv0 = argv[0];
	t_init("test-powercut");
	g_seed = t_rng_state;
	g_state_path = t_path("state.qcow2");
	have_qemu = t_want_qemu();
	g_budget = t_env_u64("POWERCUT_STATES", DEFAULT_STATES);
	g_qemu_every = (unsigned)t_env_u64("POWERCUT_QEMU_EVERY", 1);
	if (!g_qemu_every)
		g_qemu_every = 1;
	parse_only();
	g_workload = (int)t_env_u64("POWERCUT_WORKLOAD", (uint64_t)-1);
	for (i = 0; i < NB_CONFIGS; i++) {
		struct workload w = { .cfg = &configs[i], .index = i };

		if ((g_only && i != g_only_w) || (g_workload >= 0 && (int)i != g_workload))
			continue;
		wl_run(&w);
		wl_states(&w, QCOW_MAX(g_budget / NB_CONFIGS, 1));
		wl_free(&w);
	}
	printf("test-powercut: %" PRIu64 " crash states checked (%" PRIu64
	       " qemu-img checks) in %.1f s\n", g_states, g_qemu_checks, now() - t0);
	/* the growth a flush writes (step 1b) must be among the states */
	CHECK(g_nowait_growths > 0 || g_only || g_workload >= 0,
	      "no nowait write added a refcount block");
	CHECK(g_own_syncs > 0 || g_only || g_workload >= 0,
	      "no guest flush issued an fsync of its own beside a running flush");
	if (t_nfail)
		fprintf(stderr, "replay the whole run: SEED=%" PRIu64 " POWERCUT_STATES=%" PRIu64
			" %s\n", g_seed, g_budget, g_argv0);
	return t_finish();
}
