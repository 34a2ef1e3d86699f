/* SPDX-License-Identifier: MIT */
/*
 * IO-error injection (doc/design.md sections 4, 9.3 and 11).
 *
 * Each configuration prepares an image without errors (prefilled so that
 * the workload soon needs a new refcount table, new refcount blocks and new
 * L2 tables), then replays one fixed workload through the fault-injecting
 * backend (crashfile.c) over and over: open, writes, overwrites, reads,
 * zero writes, discards, flushes, a resize that moves the L1 table, a scan
 * that evicts every dirty table, close. Run N fails the Nth read, write or
 * flush of the image file with EIO, or the Nth write that grows the file
 * with ENOSPC (and every one after it: a full disk stays full), for
 * N = 1, 2, ... until the workload completes without reaching N. The write
 * modes run twice: the failing write changes nothing, or it lands a prefix
 * of its sectors first (a failed write may still have reached the disk).
 *
 * The workload goes on after the failure, as a guest would. Each run must
 * show:
 *   - every engine call during which an injected failure happened returns
 *     that negative errno (no failure is swallowed), and no call fails
 *     without one; the process never crashes (ASan/UBSan) or hangs;
 *   - after a transient error the engine keeps working: later calls succeed
 *     and reads return what the guest wrote;
 *   - after a failed flush the handle refuses writes, zero writes, discards,
 *     resizes and flushes until it is reopened, and close reports failure
 *     (so does it after a failed header write, when the engine cannot know
 *     which root the disk holds);
 *   - the file as left (all completed writes) and the file as a power cut
 *     right after the failure would leave it (only what was flushed) both
 *     pass qemu-img check and qcow_check (leaks allowed), open the normal
 *     way, and read back what the guest model allows: data flushed before
 *     the failure exactly; and stay writable.
 *
 * Environment: SEED; IOERROR_QEMU_EVERY=N runs qemu-img check on the
 * power-cut variant of every Nth run only (default 4; the as-left file is
 * always checked); IOERROR_ONLY=config:mode:N runs just that one (a failure
 * prints it).
 */
#include "internal.h"
#include "crashfile.h"
#include "testlib.h"

struct mode {
	const char *name;
	enum cf_op op;
	int err;
	bool sticky;
	bool partial;             /* the failing write lands a prefix of its sectors */
};

static const struct mode modes[] = {
	{ "read EIO", CF_OP_READ, EIO, false, false },
	{ "write EIO", CF_OP_WRITE, EIO, false, false },
	{ "write EIO after a prefix", CF_OP_WRITE, EIO, false, true },
	{ "flush EIO", CF_OP_FLUSH, EIO, false, false },
	{ "growing write ENOSPC", CF_OP_GROW, ENOSPC, true, false },
	{ "growing write ENOSPC after a prefix", CF_OP_GROW, ENOSPC, true, true },
};
#define NB_MODES (sizeof(modes) / sizeof(modes[0]))

struct cfg {
	const char *name;
	unsigned cb, rb;
	int version;
	uint64_t size;            /* virtual size */
	uint64_t prefill;         /* bytes written (sequentially) before the runs */
	uint64_t grow;            /* the workload resizes to this */
	unsigned nops;
	uint64_t max_write;
};

/*
 * 512 B clusters, 64-bit refcounts: the first refcount table covers 2 MiB of
 * file, so the prefill leaves the workload right below a table growth.
 * 4 KiB / 16-bit: new L2 tables and copy-on-write of partial clusters.
 * v2: zero writes deallocate.
 */
static const struct cfg configs[] = {
	{ "512B-rb64", 9, 64, 3, 2560 << 10, 1900 << 10, 3 << 20, 40, 24 << 10 },
	{ "4K-rb16", 12, 16, 3, 4 << 20, 1 << 20, 6 << 20, 40, 64 << 10 },
	{ "512B-v2", 9, 16, 2, 1 << 20, 256 << 10, 1280 << 10, 30, 16 << 10 },
};
#define NB_CONFIGS (sizeof(configs) / sizeof(configs[0]))

enum op_kind { OP_WRITE, OP_READ, OP_ZERO, OP_DISCARD, OP_FLUSH, OP_RESIZE, OP_SCAN };

struct op {
	enum op_kind kind;
	uint64_t off, len;
	unsigned flags;           /* OP_ZERO */
};

/* One configuration: the prepared image and the workload replayed on it. */
struct setup {
	const struct cfg *c;
	uint8_t *image;
	uint64_t image_len;
	uint8_t *prefill;         /* guest contents after the prefill */
	struct op *ops;
	unsigned nops;
};

/* One run: the workload with one injected failure. */
struct run {
	const struct setup *s;
	const struct mode *mode;
	uint64_t nth;
	struct crashfile *cf;
	struct cf_model *model;
	struct qcow_image *img;
	uint8_t *live;            /* what the guest wrote (successful ops) */
	uint8_t *unsure;          /* per byte: a failed op may or may not have changed it */
	uint8_t *buf;
	uint64_t size;
	bool failed;              /* an engine call returned an error */
	const char *failed_call;  /* the first one */
	bool poisoned;            /* the handle failed (a flush or a header write
				   * failed): writes must fail from now on */
	bool ok;
};

static bool have_qemu;
static uint64_t g_seed;
static unsigned g_qemu_every = 4;
static uint64_t g_runs, g_qemu_checks;
static const char *g_path;

/* ------------------------------------------------------------ setup */

static struct qcow_image *open_cf(struct crashfile *cf, const struct cfg *c, int *ret)
{
	struct qcow_open_opts oo = { .l2_cache_bytes = 4ULL << c->cb,
				     .refcount_cache_bytes = 4ULL << c->cb };
	struct qcow_image *img = NULL;
	struct qcow_file f;
	char err[512];

	cf_get_file(cf, &f);
	*ret = qcow_open_file(&f, c->name, &oo, &img, err, sizeof(err));
	return img;
}

/* Create, prefill and close the image, without errors; keep its bytes. */
static void setup_image(struct setup *s)
{
	const struct cfg *c = s->c;
	struct qcow_create_opts co = { .size = c->size, .cluster_bits = c->cb,
				       .refcount_bits = c->rb, .version = c->version };
	struct crashfile *cf = cf_new(NULL, 0);
	struct qcow_image *img;
	struct qcow_file f;
	const uint8_t *data;
	char err[512] = "";
	int r;

	REQUIRE(cf, "out of memory");
	cf_get_file(cf, &f);
	r = qcow_create_file(&f, c->name, &co, err, sizeof(err));
	REQUIRE(r == 0, "%s: create: %d %s", c->name, r, err);
	img = open_cf(cf, c, &r);
	REQUIRE(r == 0, "%s: open: %d", c->name, r);
	s->prefill = calloc(1, c->grow);
	REQUIRE(s->prefill, "out of memory");
	cf_pattern(1, 0, s->prefill, c->prefill);
	REQUIRE(qcow_write(img, s->prefill, 0, c->prefill) == 0, "%s: prefill: %s", c->name,
		qcow_error(img));
	REQUIRE(qcow_close(img) == 0, "%s: close after the prefill", c->name);
	data = cf_data(cf, &s->image_len);
	s->image = malloc(s->image_len);
	REQUIRE(s->image, "out of memory");
	memcpy(s->image, data, s->image_len);
	cf_free(cf);
}

/* A random range: unaligned, sector or cluster aligned, clipped to size. */
static void pick_range(const struct cfg *c, uint64_t size, uint64_t max, struct op *o)
{
	uint64_t cs = 1ULL << c->cb;

	o->off = t_rand_below(size);
	if (t_rand_below(2))
		o->off = QCOW_ALIGN_DOWN(o->off, t_rand_below(2) ? 512 : cs);
	o->len = 1 + t_rand_below(t_rand_below(2) ? 2 * cs : max);
	o->len = QCOW_MIN(o->len, size - o->off);
}

/* The fixed workload: mostly past the prefill, so it allocates. */
static void setup_ops(struct setup *s)
{
	const struct cfg *c = s->c;
	uint64_t size = c->size;
	unsigned i, r;

	s->nops = c->nops;
	s->ops = calloc(s->nops, sizeof(*s->ops));
	REQUIRE(s->ops, "out of memory");
	for (i = 0; i < s->nops; i++) {
		struct op *o = &s->ops[i];

		r = (unsigned)t_rand_below(100);
		if (i == s->nops / 2) {
			o->kind = OP_RESIZE;
			o->len = c->grow;
			size = c->grow;
			continue;
		}
		/* a scan then a flush: tables evicted, then written by nobody */
		if (i == 3 * s->nops / 4 || i == 3 * s->nops / 4 + 1) {
			o->kind = i == 3 * s->nops / 4 ? OP_SCAN : OP_FLUSH;
			continue;
		}
		o->kind = r < 12 ? OP_FLUSH : r < 30 ? OP_READ : r < 38 ? OP_ZERO :
			  r < 46 ? OP_DISCARD : OP_WRITE;
		pick_range(c, size, c->max_write, o);
		/* most writes go past the prefill: new clusters, tables, blocks */
		if (o->kind == OP_WRITE && r < 85 && c->prefill < size) {
			o->off = c->prefill + t_rand_below(size - c->prefill);
			o->len = QCOW_MIN(o->len, size - o->off);
		}
		o->flags = t_rand_below(2) ? QCOW_ZERO_MAY_UNMAP : 0;
	}
}

/* ------------------------------------------------------------ one run */

/* The range discard really drops: whole clusters (cluster.c whole_clusters). */
static void discard_effect(const struct run *r, const struct op *o, struct cf_gop *g)
{
	uint64_t cs = 1ULL << r->s->c->cb, end = o->off + o->len;
	uint64_t first = QCOW_DIV_ROUND_UP(o->off, cs);
	uint64_t last_end = end == r->size ? QCOW_DIV_ROUND_UP(end, cs) : end / cs;

	g->kind = CF_G_ZERO;
	g->off = first * cs;
	g->len = last_end > first ? QCOW_MIN(last_end * cs, r->size) - g->off : 0;
}

static int exec_op(struct run *r, const struct op *o, unsigned i, struct cf_gop *g)
{
	g->id = i + 2;
	g->off = o->off;
	g->len = o->len;
	switch (o->kind) {
	case OP_WRITE:
		g->kind = CF_G_WRITE;
		cf_pattern(g->id, o->off, r->buf, o->len);
		return qcow_write(r->img, r->buf, o->off, o->len);
	case OP_ZERO:
		g->kind = CF_G_ZERO;
		return qcow_write_zeroes(r->img, o->off, o->len, o->flags);
	case OP_DISCARD:
		discard_effect(r, o, g);
		return qcow_discard(r->img, o->off, o->len);
	case OP_FLUSH:
		g->kind = CF_G_FLUSH;
		return qcow_flush(r->img);
	case OP_RESIZE:
		g->kind = CF_G_RESIZE;
		g->size = o->len;
		g->len = 0;
		return qcow_resize(r->img, o->len);
	default:
		return -EINVAL;
	}
}

/* Apply an op to the live copy (what reads must return): a failed one
 * leaves its range unknown until a successful op rewrites it. */
static void live_apply(struct run *r, const struct cf_gop *g, bool failed)
{
	if (g->kind != CF_G_WRITE && g->kind != CF_G_ZERO) {
		if (g->kind == CF_G_RESIZE && !failed)
			r->size = g->size;
		return;
	}
	memset(r->unsure + g->off, failed, g->len);
	if (failed)
		return;
	if (g->kind == CF_G_WRITE)
		cf_pattern(g->id, g->off, r->live + g->off, g->len);
	else
		memset(r->live + g->off, 0, g->len);
}

/* A read in the workload: the bytes no failed op touched must be exactly
 * what the guest wrote. */
static int exec_read(struct run *r, const struct op *o)
{
	int ret = qcow_read(r->img, r->buf, o->off, o->len);
	uint64_t i;

	for (i = 0; ret == 0 && i < o->len; i++) {
		if (r->unsure[o->off + i] || r->buf[i] == r->live[o->off + i])
			continue;
		CHECK_OK(&r->ok, false, "%s/%s N=%" PRIu64 ": read at %" PRIu64 " returned wrong data at "
		       "guest offset %" PRIu64, r->s->c->name, r->mode->name, r->nth, o->off,
		       o->off + i);
		break;
	}
	return ret;
}

/*
 * Did the call that just returned ret handle injected failures right? It
 * must fail exactly when an injected failure happened during it (with that
 * errno), except that after a failed flush every call that writes must fail
 * and reads may.
 */
static void judge_call(struct run *r, const char *call, int ret, uint64_t fired_before,
		       bool writes)
{
	bool fired = cf_injected(r->cf) > fired_before;
	const char *who = r->s->c->name, *mode = r->mode->name, *msg;

	msg = r->img ? qcow_error(r->img) : "";
	if (r->poisoned && writes)
		CHECK_OK(&r->ok, ret < 0, "%s/%s N=%" PRIu64 ": %s succeeded after a failed flush", who,
		       mode, r->nth, call);
	else if (ret < 0 && !r->poisoned)
		CHECK_OK(&r->ok, fired, "%s/%s N=%" PRIu64 ": %s failed (%d: %s) with no injected error "
		       "during it", who, mode, r->nth, call, ret, msg);
	else if (ret == 0)
		CHECK_OK(&r->ok, !fired, "%s/%s N=%" PRIu64 ": %s succeeded although an injected %s "
		       "failed during it", who, mode, r->nth, call, mode);
	if (fired)
		CHECK_OK(&r->ok, ret == -r->mode->err, "%s/%s N=%" PRIu64 ": %s returned %d, not the "
		       "injected -%d (%s)", who, mode, r->nth, call, ret, r->mode->err, msg);
	if (ret < 0 && !r->failed) {
		r->failed = true;
		r->failed_call = call;
	}
	/* every fsync failure and every failed qcow_flush must fail the handle
	 * (design 9.7); a failed header write may (white box: the engine says) */
	if ((fired && r->mode->op == CF_OP_FLUSH) || (ret < 0 && !strcmp(call, "qcow_flush")))
		r->poisoned = true;
	if (r->img && r->img->fatal_error)
		r->poisoned = true;
	CHECK_OK(&r->ok, !r->poisoned || !r->img || r->img->fatal_error, "%s/%s N=%" PRIu64 ": %s: "
	       "the handle was not failed after a failed flush", who, mode, r->nth, call);
}

static const char *op_name(enum op_kind k)
{
	static const char *const names[] = { "qcow_write", "qcow_read", "qcow_write_zeroes",
					     "qcow_discard", "qcow_flush", "qcow_resize",
					     "qcow_read (scan)" };

	return names[k];
}

/* A sector read in every L2 table's range: evicts every dirty table. */
static void run_scan(struct run *r)
{
	uint64_t span = 1ULL << (2 * r->s->c->cb - 3);
	struct op o = { .kind = OP_READ, .len = 512 };

	for (; o.off < r->size; o.off += span) {
		uint64_t before = cf_injected(r->cf);

		judge_call(r, op_name(OP_SCAN), exec_read(r, &o), before, false);
	}
}

/* One op of the workload, logged in the model and judged. */
static void run_op(struct run *r, const struct op *o, unsigned i)
{
	uint64_t before = cf_injected(r->cf);
	struct cf_gop g = { .kind = CF_G_FLUSH };
	int ret;

	if (o->kind == OP_SCAN) {
		run_scan(r);
		return;
	}
	g.ev_begin = cf_nevents(r->cf);
	ret = o->kind == OP_READ ? exec_read(r, o) : exec_op(r, o, i, &g);
	g.ev_end = cf_nevents(r->cf);
	g.failed = ret < 0;
	if (o->kind != OP_READ) {
		cf_model_add(r->model, &g);
		live_apply(r, &g, ret < 0);
	}
	judge_call(r, op_name(o->kind), ret, before, o->kind != OP_READ);
}

/*
 * The whole workload, going on after failures: the engine must keep
 * working after a transient error (and keep refusing after a failed flush).
 * Ops past the end of a disk whose resize failed are skipped.
 */
static void run_workload(struct run *r)
{
	uint64_t before = cf_injected(r->cf);
	unsigned i;
	int ret;

	r->img = open_cf(r->cf, r->s->c, &ret);
	judge_call(r, "qcow_open_file", ret, before, false);
	for (i = 0; r->img && i < r->s->nops; i++) {
		const struct op *o = &r->s->ops[i];

		if (o->kind == OP_RESIZE || o->off + o->len <= r->size)
			run_op(r, o, i);
	}
}

/* After a failed flush nothing may claim durability until a reopen. */
static void check_poisoned(struct run *r)
{
	uint64_t cs = 1ULL << r->s->c->cb;
	const char *who = r->s->c->name;

	CHECK_OK(&r->ok, qcow_write(r->img, r->buf, 0, 512) < 0, "%s: write after a failed flush "
	       "succeeded", who);
	CHECK_OK(&r->ok, qcow_write_zeroes(r->img, 0, cs, 0) < 0, "%s: zero write after a failed flush "
	       "succeeded", who);
	CHECK_OK(&r->ok, qcow_discard(r->img, 0, cs) < 0, "%s: discard after a failed flush succeeded",
	       who);
	CHECK_OK(&r->ok, qcow_resize(r->img, r->size + cs) < 0, "%s: resize after a failed flush "
	       "succeeded", who);
	CHECK_OK(&r->ok, qcow_flush(r->img) < 0, "%s: flush after a failed flush succeeded", who);
	/* reads may work or not; they must not crash */
	qcow_read(r->img, r->buf, 0, 512);
}

/* Close the image; a successful close is a durability point of the model. */
static void close_image(struct run *r)
{
	struct cf_gop g = { .kind = CF_G_FLUSH };
	uint64_t before = cf_injected(r->cf);
	int ret;

	if (!r->img)
		return;
	if (r->poisoned)
		check_poisoned(r);
	g.ev_begin = cf_nevents(r->cf);
	ret = qcow_close(r->img);
	r->img = NULL;
	g.ev_end = cf_nevents(r->cf);
	g.failed = ret < 0;
	cf_model_add(r->model, &g);
	judge_call(r, "qcow_close", ret, before, true);
}

/* ------------------------------------------------------------ verification */

static void collect(void *opaque, const char *line)
{
	char *text = opaque;
	size_t n = strlen(text);

	/* the errors are what a failure must show; leaks are allowed */
	if (n < 1500 && strncmp(line, "Leaked", 6))
		snprintf(text + n, 2048 - n, "    %s\n", line);
}

static void verify_check(struct run *r, const char *what, bool qemu)
{
	struct qcow_open_opts oo = { .read_only = true, .for_check = true };
	struct qcow_check_result res;
	struct qcow_image *img = NULL;
	char err[512] = "", lines[2048] = "", out[4096];
	int ret;

	if (qemu && have_qemu) {
		ret = t_run(out, sizeof(out), CF_QEMU_CHECK_CMD, g_path);
		g_qemu_checks++;
		CHECK_OK(&r->ok, ret == 0 || ret == 3, "%s: qemu-img check exited %d:\n%s", what, ret, out);
	}
	ret = qcow_open(g_path, &oo, &img, err, sizeof(err));
	CHECK_OK(&r->ok, ret == 0, "%s: check open: %d %s", what, ret, err);
	if (ret < 0)
		return;
	ret = qcow_check(img, 0, &res, collect, lines);
	CHECK_OK(&r->ok, ret == 0 && !res.corruptions && !res.check_errors, "%s: qcow_check: %d, %"
	       PRIu64 " corruptions, %" PRIu64 " check errors\n%s", what, ret, res.corruptions,
	       res.check_errors, lines);
	qcow_close(img);
}

/* Normal open: the data the model allows, then a write, flush and close. */
static void verify_data(struct run *r, const char *what)
{
	struct qcow_image *img = NULL;
	struct qcow_info info;
	char err[512] = "", why[768];
	uint8_t *rd;
	uint64_t bad;
	int ret;

	ret = qcow_open(g_path, NULL, &img, err, sizeof(err));
	CHECK_OK(&r->ok, ret == 0, "%s: open: %d %s", what, ret, err);
	if (ret < 0)
		return;
	qcow_get_info(img, &info);
	CHECK_OK(&r->ok, cf_model_size_ok(r->model, info.virtual_size), "%s: virtual size %" PRIu64
	       " unexpected", what, info.virtual_size);
	rd = malloc(info.virtual_size);
	REQUIRE(rd, "out of memory");
	ret = qcow_read(img, rd, 0, info.virtual_size);
	CHECK_OK(&r->ok, ret == 0, "%s: read: %d %s", what, ret, qcow_error(img));
	bad = ret == 0 ? cf_model_compare(r->model, rd, info.virtual_size, why, sizeof(why)) : 0;
	CHECK_OK(&r->ok, bad == 0, "%s: %" PRIu64 " bytes read back wrong: %s", what, bad, why);
	cf_pattern(0xffffff, 0, rd, 4096);
	ret = qcow_write(img, rd, info.virtual_size / 2, 4096);
	CHECK_OK(&r->ok, ret == 0, "%s: write after reopening: %d %s", what, ret, qcow_error(img));
	free(rd);
	ret = qcow_close(img);
	CHECK_OK(&r->ok, ret == 0, "%s: close after reopening: %d", what, ret);
}

static void verify_file(struct run *r, const uint8_t *data, uint64_t len, const char *label,
			bool qemu)
{
	char what[256];

	snprintf(what, sizeof(what), "%s/%s N=%" PRIu64 " (%s, failed call %s), %s",
		 r->s->c->name, r->mode->name, r->nth, r->failed ? "failed" : "no failure",
		 r->failed_call ? r->failed_call : "-", label);
	REQUIRE(t_write_file(g_path, data, len) == 0, "write %s", g_path);
	verify_check(r, what, qemu);
	verify_data(r, what);
	verify_check(r, what, false);
}

static void verify_run(struct run *r)
{
	struct cf_replay *rp = cf_replay_new(r->cf);
	const uint8_t *data;
	uint8_t *durable;
	uint64_t len;
	size_t k = cf_nevents(r->cf);

	cf_model_seek(r->model, k);
	data = cf_data(r->cf, &len);
	verify_file(r, data, len, "file as left", true);
	/* a power cut right after: only what was flushed survives */
	cf_replay_seek(rp, k);
	REQUIRE(cf_replay_build(rp, CF_FATE_NONE, 0, &durable, &len, NULL, 0) == 0,
		"out of memory");
	verify_file(r, durable, len, "power cut after it", g_runs % g_qemu_every == 0);
	free(durable);
	cf_replay_free(rp);
}

static void run_init(struct run *r, const struct setup *s, const struct mode *m, uint64_t nth)
{
	*r = (struct run){ .s = s, .mode = m, .nth = nth, .ok = true };
	r->cf = cf_new(s->image, s->image_len);
	r->model = cf_model_new(s->c->size, s->c->grow);
	r->live = malloc(s->c->grow);
	r->unsure = calloc(1, s->c->grow);
	r->buf = malloc(QCOW_MAX(s->c->max_write, 4096));
	REQUIRE(r->cf && r->live && r->unsure && r->buf, "out of memory");
	memcpy(r->live, s->prefill, s->c->grow);
	r->size = s->c->size;
	/* the prefill is durable: the model starts from it */
	cf_model_add(r->model, &(struct cf_gop){ .kind = CF_G_WRITE, .id = 1,
						 .len = s->c->prefill });
	cf_model_add(r->model, &(struct cf_gop){ .kind = CF_G_FLUSH });
	cf_record_start(r->cf);
	cf_inject(r->cf, m->op, nth, m->err, m->sticky);
	cf_inject_partial(r->cf, m->partial, g_seed + nth);
}

static void run_fini(struct run *r)
{
	cf_free(r->cf);
	cf_model_free(r->model);
	free(r->live);
	free(r->unsure);
	free(r->buf);
}

/* Run N of mode m on config ci; false once the workload no longer reaches N. */
static bool one_run(const struct setup *s, unsigned ci, unsigned mi, uint64_t nth)
{
	const struct mode *m = &modes[mi];
	struct run r;
	bool hit;

	run_init(&r, s, m, nth);
	run_workload(&r);
	close_image(&r);
	hit = cf_injected(r.cf) > 0;
	if (!hit)
		CHECK_OK(&r.ok, !r.failed, "%s/%s N=%" PRIu64 ": %s failed without an injected error",
		       s->c->name, m->name, nth, r.failed_call);
	if (hit) {
		verify_run(&r);
		g_runs++;
	}
	if (!r.ok)
		fprintf(stderr, "  replay: SEED=%" PRIu64 " IOERROR_ONLY=%u:%u:%" PRIu64
			" tests/build/asan/unit/test-ioerror\n", g_seed, ci, mi, nth);
	run_fini(&r);
	return hit;
}

static bool g_only;
static unsigned g_only_c, g_only_m;
static uint64_t g_only_n;

static void run_config(const struct cfg *c, unsigned ci)
{
	struct setup s = { .c = c };
	unsigned mi;
	uint64_t n;

	t_rng_state = g_seed + ci;
	setup_image(&s);
	setup_ops(&s);
	for (mi = 0; mi < NB_MODES; mi++) {
		if (g_only) {
			if (mi == g_only_m)
				one_run(&s, ci, mi, g_only_n);
			continue;
		}
		for (n = 1; one_run(&s, ci, mi, n); n++)
			;
		printf("%s: %s: failures injected at N = 1..%" PRIu64 "\n", c->name,
		       modes[mi].name, n - 1);
	}
	free(s.image);
	free(s.prefill);
	free(s.ops);
}

static void parse_only(void)
{
	const char *s = getenv("IOERROR_ONLY");

	if (!s || !*s)
		return;
	REQUIRE(sscanf(s, "%u:%u:%" SCNu64, &g_only_c, &g_only_m, &g_only_n) == 3 &&
		g_only_m < NB_MODES, "IOERROR_ONLY=config:mode:N, got %s", s);
	g_only = true;
}

int main(void)
{
	unsigned i;

	t_init("test-ioerror");
	g_seed = t_rng_state;
	g_path = t_path("image.qcow2");
	have_qemu = t_want_qemu();
	g_qemu_every = (unsigned)t_env_u64("IOERROR_QEMU_EVERY", 4);
	if (!g_qemu_every)
		g_qemu_every = 1;
	parse_only();
	for (i = 0; i < NB_CONFIGS; i++)
		if (!g_only || i == g_only_c)
			run_config(&configs[i], i);
	printf("test-ioerror: %" PRIu64 " runs with an injected error, %" PRIu64
	       " qemu-img checks\n", g_runs, g_qemu_checks);
	return t_finish();
}
