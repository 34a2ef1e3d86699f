/* SPDX-License-Identifier: MIT */
/*
 * Power-cut simulation of qcow-tool bitmap's edits (qcow_bitmap_edit,
 * format/bitmap.c "editing", doc/design.md 15b "Editing"): each action is
 * meant to be one switch (new tables, data and directory in new clusters,
 * flush, one header write, fsync, old clusters freed deferred, flush).
 *
 * Images made by qemu-img (create, bitmap --add, bitmap --disable) and
 * written by qemu-io so that their bitmaps hold data clusters: one without
 * bitmaps, one with a single bitmap, one with five (64 KiB clusters; enabled
 * and disabled, 64k/16k/16k/4k/512 granularity), a second image with a
 * bitmap to merge from (-b), and a 4 KiB-cluster 8 GiB one whose bitmaps
 * have long names (the directory spans two clusters) and whose 512-byte
 * bitmap's table spans two clusters. Each run opens one of them read-write
 * on the recording backend, as qcow-tool bitmap does, runs one action and
 * closes it: add the first bitmap (extension and autoclear bit appear), add
 * another, remove one, remove the last (extension and bit go), clear,
 * enable, disable, merge within the image (same and different granularity)
 * and from the second image; then add, remove, clear and merge on the small
 * cluster image. Every crash state (crashfile.c: the file at the last
 * completed flush before the cut plus any subset of the later writes,
 * whole, dropped or torn; and, at the cut right after the header write,
 * that write torn every way: each subset of the sectors it changes) must:
 *   - pass qemu-img check (exit 0 or 3: leaks allowed, no errors) and
 *     qcow_check (no errors; leaks exactly when qemu-img finds some);
 *   - list exactly the old bitmaps (names, flags, granularity) with exactly
 *     their old bits, or exactly the new ones with exactly the new bits
 *     (computed here from the old ones, not taken from the engine) - never
 *     a mix; the old list may also show enabled bitmaps IN_USE (the open's
 *     B1, undone by the edit's store) before the header write is issued,
 *     the new one after its fsync (kept again until the close); the old
 *     one only until the header write is issued, the new one only once the
 *     fsync after it completed;
 *   - list the same as qemu-img info --output=json (every 8th state);
 *   - open read-write, take a write and a close, and pass qemu-img check
 *     again (every 4th state).
 * The last state of each run (everything landed) must be the new list, and
 * clean for both checks (no leaks).
 *
 * Found with it: the header we wrote put the bitmaps extension after the
 * feature name table, its 8-byte header at 0x1f8 and its payload at 0x200,
 * across the first sector boundary, in one write of the whole cluster: a
 * torn write that added it (the first bitmap), dropped it (the last one)
 * or moved it (the first edit of a 4 KiB-cluster image, where qemu writes
 * no feature name table) left an extension of zero bitmaps that qemu-img
 * cannot open (12 failed checks). The header is now committed by one
 * sector write (header.c, H0-H3); the commit is its first write of the
 * first sector, and every write into the header area is torn every way.
 * After the edit the handle keeps the new bitmaps IN_USE until its close.
 *
 * Reproducible from SEED. Environment: SEED; BITMAP_EDIT_STATES (crash
 * states over all runs, default 1200); BITMAP_EDIT_RUN=label (one run only);
 * BITMAP_EDIT_KEEP=dir (failed states are copied there, 20 at most);
 * KEEP_TMP=1.
 */
#include "internal.h"
#include "crashfile.h"
#include "testlib.h"

#define DEFAULT_STATES 1200ULL
#define MAX_BM 8
#define DISK_BIG (64ULL << 20)
#define DISK_SMALL (8256ULL << 20)
#define PAD_LEN 1000
#define TABLE_OFFSET_MASK UINT64_C(0x00fffffffffffe00)

/* ----------------------------------------------------------- the images */

struct base {
	const char *file;
	unsigned cluster_bits;
	uint64_t disk;
	bool long_names;          /* every bitmap name gets "-" and PAD_LEN x */
	const char *bitmaps[MAX_BM]; /* "OPTS NAME" for qemu-img bitmap --add */
	const char *round1;       /* qemu-io -c commands */
	const char *disable;      /* disabled after round1 (short name) */
	const char *round2;
};

enum { B_NONE, B_ONE, B_BIG, B_SRC, B_SMALL, NB_BASES };

static const struct base bases[NB_BASES] = {
	[B_NONE] = { "none.qcow2", 16, DISK_BIG, false, { NULL },
		     "-c 'write -P 1 3k 100k'", NULL, NULL },
	[B_ONE] = { "one.qcow2", 16, DISK_BIG, false, { "-g 64k only", NULL },
		    "-c 'write -P 1 3k 100k' -c 'write -P 2 33M 1k'", NULL, NULL },
	[B_BIG] = { "big.qcow2", 16, DISK_BIG, false,
		    { "-g 64k b64k", "-g 16k off16k", "-g 16k b16k", "-g 4k b4k", "-g 512 b512",
		      NULL },
		    "-c 'write -P 1 3k 100k' -c 'write -P 2 1053696 3k' -c 'discard 2M 64k'",
		    "off16k",
		    "-c 'write -P 3 5243904 20k' -c 'write -P 4 40M 512' "
		    "-c 'write -z 10492928 9k'" },
	[B_SRC] = { "src.qcow2", 16, DISK_BIG, false, { "-g 16k src", NULL },
		    "-c 'write -P 5 7343104 50k' -c 'write -P 6 60M 1k'", NULL, NULL },
	[B_SMALL] = { "small.qcow2", 12, DISK_SMALL, true,
		      { "-g 512 s512", "-g 64k s64k", "-g 4k s4k", "-g 16k s16k", NULL },
		      "-c 'write -P 1 3k 100k' -c 'write -P 2 8590983168 10k'", "s64k",
		      "-c 'write -P 3 4294972416 7k' -c 'write -P 4 8598323200 3k'" },
};

struct run {
	const char *label;
	int base;
	enum qcow_bitmap_action act;
	const char *name;         /* short name */
	uint64_t gran;            /* add */
	int src_base;             /* merge: -1 the image itself */
	const char *src_name;
};

static const struct run runs[] = {
	{ "add-first", B_NONE, QCOW_BITMAP_ADD, "new", 65536, -1, NULL },
	{ "add", B_BIG, QCOW_BITMAP_ADD, "added", 32768, -1, NULL },
	{ "remove", B_BIG, QCOW_BITMAP_REMOVE, "off16k", 0, -1, NULL },
	{ "remove-last", B_ONE, QCOW_BITMAP_REMOVE, "only", 0, -1, NULL },
	{ "clear", B_BIG, QCOW_BITMAP_CLEAR, "b4k", 0, -1, NULL },
	{ "enable", B_BIG, QCOW_BITMAP_ENABLE, "off16k", 0, -1, NULL },
	{ "disable", B_BIG, QCOW_BITMAP_DISABLE, "b64k", 0, -1, NULL },
	{ "merge-same", B_BIG, QCOW_BITMAP_MERGE, "off16k", 0, -1, "b16k" },
	{ "merge-gran", B_BIG, QCOW_BITMAP_MERGE, "b512", 0, -1, "off16k" },
	{ "merge-other", B_BIG, QCOW_BITMAP_MERGE, "b64k", 0, B_SRC, "src" },
	{ "small-add", B_SMALL, QCOW_BITMAP_ADD, "sadd", 512, -1, NULL },
	{ "small-remove", B_SMALL, QCOW_BITMAP_REMOVE, "s512", 0, -1, NULL },
	{ "small-clear", B_SMALL, QCOW_BITMAP_CLEAR, "s512", 0, -1, NULL },
	{ "small-merge", B_SMALL, QCOW_BITMAP_MERGE, "s512", 0, -1, "s64k" },
};
#define NB_RUNS (sizeof(runs) / sizeof(runs[0]))

/* ---------------------------------------------------------- the bitmaps */

struct bm {
	char *name;
	uint64_t gran;
	uint32_t flags;
	uint8_t *bits;            /* as the data clusters hold them */
	uint64_t nbytes;
};

struct list {
	unsigned n;
	struct bm v[MAX_BM];
};

static uint64_t g_seed, g_states;
static const char *g_path;
static char g_pad[PAD_LEN + 1];
static char g_out[65536];
static uint8_t *g_base_data[NB_BASES];
static size_t g_base_len[NB_BASES];

/* The full name of short name s in base b. */
static char *full_name(const struct base *b, const char *s)
{
	char *n;

	REQUIRE(asprintf(&n, "%s%s%s", s, b->long_names ? "-" : "",
			 b->long_names ? g_pad : "") >= 0, "out of memory");
	return n;
}

static void list_free(struct list *l)
{
	unsigned i;

	for (i = 0; i < l->n; i++) {
		free(l->v[i].name);
		free(l->v[i].bits);
	}
	l->n = 0;
}

static void bm_copy(struct bm *to, const struct bm *from)
{
	*to = *from;
	to->name = strdup(from->name);
	to->bits = malloc(from->nbytes);
	REQUIRE(to->name && to->bits, "out of memory");
	memcpy(to->bits, from->bits, from->nbytes);
}

static void list_copy(struct list *to, const struct list *from)
{
	unsigned i;

	for (i = 0; i < from->n; i++)
		bm_copy(&to->v[i], &from->v[i]);
	to->n = from->n;
}

static uint64_t nbits(uint64_t disk, uint64_t gran)
{
	return QCOW_DIV_ROUND_UP(disk, gran);
}

static const char *short_of(const char *name)
{
	static char s[64];

	snprintf(s, sizeof(s), "%.*s", (int)strcspn(name, "-"), name);
	return s;
}

/* Bitmap b's bits, read from its table in the image data. */
static bool read_table(const uint8_t *data, uint64_t size, uint64_t cs,
		       const struct qcow_bitmap_info *b, struct bm *out, char *why, size_t wl)
{
	uint64_t c;

	for (c = 0; c * cs < out->nbytes; c++) {
		uint64_t t = b->table_offset + c * 8, e = 0, len = QCOW_MIN(cs, out->nbytes - c * cs);

		if (c >= b->table_size || t + 8 > size) {
			snprintf(why, wl, "bitmap %s: table entry %" PRIu64 " missing", short_of(b->name),
				 c);
			return false;
		}
		memcpy(&e, data + t, 8);
		e = be64toh(e);
		if (e & TABLE_OFFSET_MASK) {
			if ((e & TABLE_OFFSET_MASK) + cs > size) {
				snprintf(why, wl, "bitmap %s: data cluster 0x%" PRIx64 " past the end",
					 short_of(b->name), e & TABLE_OFFSET_MASK);
				return false;
			}
			memcpy(out->bits + c * cs, data + (e & TABLE_OFFSET_MASK), len);
		} else {
			memset(out->bits + c * cs, e & 1 ? 0xff : 0, len);
		}
	}
	return true;
}

/* The bitmaps of g_path (whose bytes are data), read-only. */
static bool read_list(const uint8_t *data, uint64_t size, struct list *l, char *why, size_t wl)
{
	struct qcow_open_opts ro = { .read_only = true, .no_backing = true };
	struct qcow_image *img = NULL;
	struct qcow_bitmap_info *v;
	uint32_t n, i;
	char err[512] = "";
	bool ok = true;

	l->n = 0;
	if (qcow_open(g_path, &ro, &img, err, sizeof(err)) < 0) {
		snprintf(why, wl, "read-only open: %s", err);
		return false;
	}
	if (qcow_bitmap_list(img, &v, &n) < 0) {
		snprintf(why, wl, "bitmap list: %s", qcow_error(img));
		qcow_close(img);
		return false;
	}
	if (n > MAX_BM) {
		snprintf(why, wl, "%u bitmaps listed", n);
		ok = false;
	}
	for (i = 0; ok && i < n; i++) {
		struct bm *b = &l->v[i];

		b->name = strdup(v[i].name);
		b->gran = v[i].granularity;
		b->flags = v[i].flags;
		b->nbytes = QCOW_DIV_ROUND_UP(nbits(img->size, b->gran), 8);
		b->bits = calloc(1, b->nbytes);
		REQUIRE(b->name && b->bits, "out of memory");
		l->n++;
		ok = read_table(data, size, img->cluster_size, &v[i], b, why, wl);
	}
	qcow_bitmap_list_free(v, n);
	qcow_close(img);
	if (!ok)
		list_free(l);
	return ok;
}

static int find(const struct list *l, const char *name)
{
	unsigned i;

	for (i = 0; i < l->n; i++) {
		if (!strcmp(l->v[i].name, name))
			return (int)i;
	}
	REQUIRE(0, "bitmap %s not in the list", short_of(name));
	return -1;
}

static void set_range(uint8_t *bits, uint64_t first, uint64_t last)
{
	uint64_t i;

	for (i = first; i <= last; i++)
		bits[i / 8] |= (uint8_t)(1U << (i % 8));
}

/* The list the action must leave, from the old one (and the source's). */
static void expect_new(const struct run *r, const struct list *old, const struct list *src,
		       uint64_t disk, struct list *nw)
{
	const struct base *b = &bases[r->base];
	char *name = full_name(b, r->name);
	struct bm *d;
	int i;

	list_copy(nw, old);
	if (r->act == QCOW_BITMAP_ADD) {
		d = &nw->v[nw->n++];
		d->name = name;
		d->gran = r->gran;
		d->flags = QCOW_BITMAP_AUTO;
		d->nbytes = QCOW_DIV_ROUND_UP(nbits(disk, r->gran), 8);
		d->bits = calloc(1, d->nbytes);
		REQUIRE(d->bits, "out of memory");
		return;
	}
	i = find(nw, name);
	free(name);
	d = &nw->v[i];
	if (r->act == QCOW_BITMAP_REMOVE) {
		free(d->name);
		free(d->bits);
		memmove(d, d + 1, (nw->n - (unsigned)i - 1) * sizeof(*d));
		nw->n--;
	} else if (r->act == QCOW_BITMAP_CLEAR) {
		memset(d->bits, 0, d->nbytes);
	} else if (r->act == QCOW_BITMAP_ENABLE) {
		d->flags |= QCOW_BITMAP_AUTO;
	} else if (r->act == QCOW_BITMAP_DISABLE) {
		d->flags &= ~QCOW_BITMAP_AUTO;
	} else {
		const struct base *sb = &bases[r->src_base < 0 ? r->base : r->src_base];
		char *sn = full_name(sb, r->src_name);
		const struct bm *s = &src->v[find(src, sn)];
		uint64_t k;

		free(sn);
		for (k = 0; k < nbits(disk, s->gran); k++) {
			uint64_t off = k * s->gran, end = QCOW_MIN(off + s->gran, disk);

			if (s->bits[k / 8] & (1U << (k % 8)))
				set_range(d->bits, off / d->gran, (end - 1) / d->gran);
		}
	}
}

/* ------------------------------------------------------ comparing lists */

enum match { M_NONE, M_OLD, M_OLD_IN_USE, M_NEW, M_NEW_IN_USE };

static const char *match_name[] = { "a mix", "the old list", "the old list (in use)",
				     "the new list", "the new list (in use)" };

/* Does got equal want (with in_use: but for IN_USE on enabled bitmaps)? */
static bool same(const struct list *got, const struct list *want, bool in_use, bool bits,
		 char *why, size_t wl)
{
	unsigned i;

	if (got->n != want->n) {
		snprintf(why, wl, "%u bitmaps, want %u", got->n, want->n);
		return false;
	}
	for (i = 0; i < got->n; i++) {
		const struct bm *g = &got->v[i], *w = &want->v[i];
		uint32_t f = g->flags;
		int64_t diff;

		if (in_use && (f & QCOW_BITMAP_IN_USE) && (w->flags & QCOW_BITMAP_AUTO))
			f &= ~QCOW_BITMAP_IN_USE;
		if (strcmp(g->name, w->name) || g->gran != w->gran || f != w->flags) {
			snprintf(why, wl, "bitmap %u: %s granularity %" PRIu64 " flags %#x, want %s "
				 "%" PRIu64 " %#x", i, short_of(g->name), g->gran, g->flags,
				 short_of(w->name), w->gran, w->flags);
			return false;
		}
		if (!bits)
			continue;
		diff = t_first_diff(g->bits, w->bits, g->nbytes);
		if (g->nbytes != w->nbytes || diff >= 0) {
			snprintf(why, wl, "bitmap %s: bits differ at byte %" PRId64 " (%" PRIu64
				 " bytes, want %" PRIu64 ")", short_of(g->name), diff, g->nbytes,
				 w->nbytes);
			return false;
		}
	}
	return true;
}

static enum match classify(const struct list *got, const struct list *old,
			   const struct list *nw, char *why, size_t wl)
{
	char w1[256] = "", w2[256] = "";

	if (same(got, nw, false, true, w2, sizeof(w2)))
		return M_NEW;
	if (same(got, old, false, true, w1, sizeof(w1)))
		return M_OLD;
	if (same(got, old, true, true, w1, sizeof(w1)))
		return M_OLD_IN_USE;
	if (same(got, nw, true, true, w2, sizeof(w2)))
		return M_NEW_IN_USE;
	snprintf(why, wl, "neither list: against the old, %s; against the new, %s", w1, w2);
	return M_NONE;
}

/* The bitmaps qemu-img info lists (names, granularity, flags). */
static bool qemu_list(struct list *l, char *why, size_t wl)
{
	const char *p;
	int r;

	l->n = 0;
	r = t_run(g_out, sizeof(g_out), "qemu-img info -f qcow2 --output=json '%s' 2>&1", g_path);
	if (r != 0) {
		snprintf(why, wl, "qemu-img info exits %d: %.200s", r, g_out);
		return false;
	}
	p = strstr(g_out, "\"bitmaps\": [");
	if (!p)
		return true;
	p += strlen("\"bitmaps\": [");
	for (;;) {
		const char *close, *n, *g;
		struct bm *b = &l->v[l->n];

		p += strspn(p, " \n,");
		if (*p != '{')
			break;
		close = strchr(p, '}');
		n = strstr(p, "\"name\": \"");
		g = strstr(p, "\"granularity\": ");
		if (!close || !n || !g || n > close || g > close || l->n == MAX_BM) {
			snprintf(why, wl, "qemu-img info: bitmap %u unreadable", l->n);
			list_free(l);
			return false;
		}
		n += strlen("\"name\": \"");
		memset(b, 0, sizeof(*b));
		b->name = strndup(n, strcspn(n, "\""));
		REQUIRE(b->name, "out of memory");
		b->gran = strtoull(g + strlen("\"granularity\": "), NULL, 10);
		if (memmem(p, (size_t)(close - p), "\"in-use\"", 8))
			b->flags |= QCOW_BITMAP_IN_USE;
		if (memmem(p, (size_t)(close - p), "\"auto\"", 6))
			b->flags |= QCOW_BITMAP_AUTO;
		l->n++;
		p = close + 1;
	}
	if (*p != ']') {
		snprintf(why, wl, "qemu-img info: the bitmap list does not end");
		list_free(l);
		return false;
	}
	return true;
}

/* ------------------------------------------------------------- a state */

struct ctx {
	unsigned run;
	const struct list *old, *nw;
	size_t hdr, hdr_flush;    /* the header's commit (its first write to the first
				   * sector); the first flush after it */
	uint64_t counts[5];       /* states per match */
	unsigned torn;            /* torn header states */
};

/* qemu-img check and qcow_check: no errors, leaks alike. Clean when last. */
static void check_checks(size_t k, bool last, const char *desc, const char *label)
{
	struct qcow_open_opts oo = { .read_only = true, .for_check = true };
	struct qcow_check_result res;
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r, q;

	r = t_run(g_out, sizeof(g_out), CF_QEMU_CHECK_CMD, g_path);
	CHECK(last ? r == 0 : r == 0 || r == 3, "%s cut %zu: qemu-img check exits %d (%s):\n%.2000s",
	      label, k, r, desc, g_out);
	q = qcow_open(g_path, &oo, &img, err, sizeof(err));
	CHECK(q == 0, "%s cut %zu: check open: %s (%s)", label, k, err, desc);
	if (q < 0)
		return;
	q = qcow_check(img, 0, &res, NULL, NULL);
	CHECK(q == 0 && !res.corruptions && !res.check_errors, "%s cut %zu: qcow_check %d: %" PRIu64
	      " corruptions, %" PRIu64 " check errors (%s)", label, k, q, res.corruptions,
	      res.check_errors, desc);
	CHECK(q < 0 || (r != 0 && r != 3) || (res.leaks > 0) == (r == 3),
	      "%s cut %zu: qcow_check finds %" PRIu64 " leaks, qemu-img check exits %d (%s)",
	      label, k, res.leaks, r, desc);
	qcow_close(img);
}

static void probe(size_t k, const char *label)
{
	struct qcow_image *img = NULL;
	char err[512] = "";
	uint8_t buf[4096];
	uint64_t size;
	int r;

	memset(buf, 0x5a, sizeof(buf));
	r = qcow_open(g_path, NULL, &img, err, sizeof(err));
	CHECK(r == 0, "%s cut %zu: reopen read-write: %s", label, k, err);
	if (r < 0)
		return;
	size = img->size;
	CHECK(qcow_write(img, buf, t_rand_below(size / 4096) * 4096, sizeof(buf)) == 0,
	      "%s cut %zu: probe write: %s", label, k, qcow_error(img));
	CHECK(qcow_close(img) == 0, "%s cut %zu: probe close", label, k);
	r = t_run(g_out, sizeof(g_out), CF_QEMU_CHECK_CMD, g_path);
	CHECK(r == 0 || r == 3, "%s cut %zu: qemu-img check after the probe: %d:\n%.2000s", label,
	      k, r, g_out);
}

/* A state that failed a check, kept as BITMAP_EDIT_KEEP/LABEL-cutK-V.qcow2 (20 at most). */
static void keep_failed(unsigned long nfail, const char *label, size_t k, unsigned v,
			const uint8_t *data, uint64_t size)
{
	static unsigned kept;
	const char *dir = getenv("BITMAP_EDIT_KEEP");
	char path[1024];

	if (!dir || !*dir || t_nfail == nfail || kept >= 20)
		return;
	snprintf(path, sizeof(path), "%s/%s-cut%zu-%u.qcow2", dir, label, k, v);
	CHECK(t_write_file(path, data, size) == 0, "write %s", path);
	printf("kept %s\n", path);
	kept++;
}

/* One crash state (data, size bytes) of cut k: v numbers it within the cut. */
static void check_data(struct ctx *c, size_t k, unsigned v, const uint8_t *data, uint64_t size,
		       const char *desc, bool last)
{
	const char *label = runs[c->run].label;
	unsigned long nfail = t_nfail;
	char why[640] = "";
	struct list got;
	enum match m;

	REQUIRE(t_write_file(g_path, data, size) == 0, "write %s", g_path);
	check_checks(k, last, desc, label);
	if (!read_list(data, size, &got, why, sizeof(why))) {
		CHECK(0, "%s cut %zu: %s (%s)", label, k, why, desc);
		c->counts[M_NONE]++;
		g_states++;
		keep_failed(nfail, label, k, v, data, size);
		return;
	}
	m = classify(&got, c->old, c->nw, why, sizeof(why));
	c->counts[m]++;
	CHECK(m != M_NONE, "%s cut %zu: %s (%s)", label, k, why, desc);
	CHECK(m == M_NONE || k > c->hdr || (m != M_NEW && m != M_NEW_IN_USE),
	      "%s cut %zu: the new list before the header write was issued (%s)", label, k, desc);
	CHECK(m == M_NONE || k <= c->hdr || m != M_OLD_IN_USE,
	      "%s cut %zu: bitmaps in use after the header write was issued (%s)", label, k, desc);
	CHECK(m == M_NONE || k <= c->hdr_flush || m == M_NEW || m == M_NEW_IN_USE,
	      "%s cut %zu: %s after the header's fsync (%s)", label, k, match_name[m], desc);
	/* the handle keeps the new bitmaps (IN_USE) after the edit, until its close */
	CHECK(m != M_NEW_IN_USE || k > c->hdr_flush,
	      "%s cut %zu: the new list in use before the header's fsync (%s)", label, k, desc);
	CHECK(!last || m == M_NEW, "%s: the last state holds %s", label, match_name[m]);
	if (v % 8 == 0 || last) {
		struct list q;

		CHECK(qemu_list(&q, why, sizeof(why)), "%s cut %zu: %s", label, k, why);
		CHECK(same(&q, &got, false, false, why, sizeof(why)),
		      "%s cut %zu: qemu-img info and qcow_bitmap_list differ: %s (%s)", label, k,
		      why, desc);
		list_free(&q);
	}
	list_free(&got);
	keep_failed(nfail, label, k, v, data, size);
	if (v % 4 == 0)
		probe(k, label);
	g_states++;
}

static void check_state(struct ctx *c, const struct cf_replay *rp, size_t k, unsigned v,
			bool last)
{
	uint64_t seed = cf_mix(cf_mix(cf_mix(g_seed, c->run), k), v), size;
	uint8_t *data;
	char desc[320];

	REQUIRE(cf_replay_build(rp, last ? CF_FATE_ALL : cf_fate_of(seed), seed >> 3, &data,
				&size, desc, sizeof(desc)) == 0, "out of memory");
	check_data(c, k, v, data, size, desc, last);
	free(data);
}

/*
 * The header write, torn every way: from the file just before it (every
 * earlier write landed) to the file just after it, every subset of the
 * sectors it changes lands (the random states find few of them). More than
 * MAX_TORN changed sectors: each one alone and each prefix.
 */
#define MAX_TORN 8
/* Writes into the header cluster's first 4 KiB (where it is laid out) are
 * header writes: each is torn every way. */
#define HEADER_AREA 4096
#define MAX_HEADER_WRITES 8
static void torn_header(struct ctx *c, const uint8_t *was, uint64_t sw,
			const struct cf_replay *rp, size_t k)
{
	uint8_t *now, *mix;
	uint64_t sn, sec[64], s, mask;
	unsigned ns = 0, v = 0, i;
	char desc[320], *p;

	REQUIRE(cf_replay_build(rp, CF_FATE_ALL, 0, &now, &sn, desc, sizeof(desc)) == 0,
		"out of memory");
	REQUIRE(sw == sn, "%s: the header write changes the file size", runs[c->run].label);
	for (s = 0; s * CF_SECTOR < sw && ns < 64; s++) {
		if (memcmp(was + s * CF_SECTOR, now + s * CF_SECTOR,
			   QCOW_MIN(CF_SECTOR, sw - s * CF_SECTOR)))
			sec[ns++] = s;
	}
	mix = malloc(sw);
	REQUIRE(mix, "out of memory");
	for (mask = 1; ns && mask < (ns <= MAX_TORN ? (1ULL << ns) - 1 : 2ULL * ns); mask++) {
		uint64_t m = ns <= MAX_TORN ? mask : mask <= ns ? 1ULL << (mask - 1) :
			     (1ULL << (mask - ns)) - 1;

		memcpy(mix, was, sw);
		p = desc + snprintf(desc, sizeof(desc), "the header write torn: of the %u sectors "
				    "it changes, only", ns);
		for (i = 0; i < ns; i++) {
			if (!(m >> i & 1))
				continue;
			memcpy(mix + sec[i] * CF_SECTOR, now + sec[i] * CF_SECTOR,
			       QCOW_MIN(CF_SECTOR, sw - sec[i] * CF_SECTOR));
			if (p < desc + sizeof(desc) - 32)
				p += sprintf(p, " %" PRIu64, sec[i]);
		}
		snprintf(p, (size_t)(desc + sizeof(desc) - p), " landed");
		check_data(c, k, v++, mix, sw, desc, false);
	}
	c->torn += v;
	free(mix);
	free(now);
}

/* ------------------------------------------------------------- the runs */

static void make_base(int i)
{
	const struct base *b = &bases[i];
	const char *path = t_path("%s", b->file);
	unsigned j;
	char *n;

	REQUIRE(t_run(NULL, 0, "qemu-img create -q -f qcow2 -o cluster_size=%u '%s' %" PRIu64,
		      1U << b->cluster_bits, path, b->disk) == 0, "qemu-img create %s", b->file);
	for (j = 0; b->bitmaps[j]; j++) {
		const char *sn = strrchr(b->bitmaps[j], ' ') + 1;

		n = full_name(b, sn);
		REQUIRE(t_run(NULL, 0, "qemu-img bitmap --add %.*s '%s' %s",
			      (int)(sn - b->bitmaps[j]), b->bitmaps[j], path, n) == 0,
			"qemu-img bitmap --add %s", sn);
		free(n);
	}
	REQUIRE(t_run(NULL, 0, "qemu-io -f qcow2 %s '%s' >/dev/null", b->round1, path) == 0,
		"qemu-io %s", b->file);
	if (b->disable) {
		n = full_name(b, b->disable);
		REQUIRE(t_run(NULL, 0, "qemu-img bitmap --disable '%s' %s", path, n) == 0,
			"qemu-img bitmap --disable");
		free(n);
		REQUIRE(t_run(NULL, 0, "qemu-io -f qcow2 %s '%s' >/dev/null", b->round2, path) == 0,
			"qemu-io %s", b->file);
	}
	REQUIRE(t_run(NULL, 0, "qemu-img check -q '%s'", path) == 0, "%s not clean", b->file);
	g_base_data[i] = t_read_file(path, &g_base_len[i]);
	REQUIRE(g_base_data[i], "read %s", path);
}

/* The base's list, read the way a state's is. */
static void base_list(int i, struct list *l)
{
	char why[640];

	REQUIRE(t_write_file(g_path, g_base_data[i], g_base_len[i]) == 0, "write %s", g_path);
	REQUIRE(read_list(g_base_data[i], g_base_len[i], l, why, sizeof(why)), "%s: %s",
		bases[i].file, why);
}

/* The action, as qcow-tool bitmap runs it: open, edit, close. */
static void edit(struct crashfile *cf, const struct run *r)
{
	const struct base *b = &bases[r->base];
	struct qcow_open_opts ro = { .read_only = true };
	struct qcow_image *img = NULL, *src = NULL;
	struct qcow_file f;
	char err[512] = "", *name = full_name(b, r->name), *sn = NULL;

	if (r->src_name)
		sn = full_name(&bases[r->src_base < 0 ? r->base : r->src_base], r->src_name);
	if (r->src_base >= 0)
		REQUIRE(qcow_open(t_path("%s", bases[r->src_base].file), &ro, &src, err,
				  sizeof(err)) == 0, "open the source: %s", err);
	cf_record_start(cf);
	cf_get_file(cf, &f);
	REQUIRE(qcow_open_file(&f, b->file, NULL, &img, err, sizeof(err)) == 0, "open: %s", err);
	REQUIRE(qcow_bitmap_edit(img, r->act, name, r->gran, src, sn) == 0, "%s: %s", r->label,
		qcow_error(img));
	REQUIRE(qcow_close(img) == 0, "%s: close", r->label);
	qcow_close(src);
	free(name);
	free(sn);
}

static void one_run(unsigned ri, uint64_t budget)
{
	const struct run *r = &runs[ri];
	struct list old, nw, src = { 0 };
	struct crashfile *cf;
	struct cf_replay *rp;
	struct ctx c = { .run = ri, .old = &old, .nw = &nw };
	size_t k, total, nhdr = 0, hw[MAX_HEADER_WRITES];
	unsigned n, v, h;
	uint8_t *was = NULL;
	uint64_t sw = 0;
	char desc[320];

	base_list(r->base, &old);
	if (r->act == QCOW_BITMAP_MERGE)
		base_list(r->src_base < 0 ? r->base : r->src_base, &src);
	expect_new(r, &old, &src, bases[r->base].disk, &nw);
	list_free(&src);
	{
		char why[256];

		REQUIRE(!same(&old, &nw, false, true, why, sizeof(why)),
			"%s: the action changes nothing", r->label);
	}
	cf = cf_new(g_base_data[r->base], g_base_len[r->base]);
	REQUIRE(cf, "out of memory");
	edit(cf, r);
	total = cf_nevents(cf);
	for (k = 0; k < total; k++) {
		if (!cf_event_is_write(cf, k) || !cf_event_writes_to(cf, k, 0, HEADER_AREA))
			continue;
		REQUIRE(nhdr < MAX_HEADER_WRITES, "%s: too many header writes", r->label);
		hw[nhdr++] = k;
		/* the first write of the first sector commits (header.c H1/H3) */
		if (!c.hdr && cf_event_writes_to(cf, k, 0, 1))
			c.hdr = k;
	}
	REQUIRE(nhdr >= 1 && c.hdr >= 1, "%s: %zu header writes", r->label, nhdr);
	for (c.hdr_flush = c.hdr; c.hdr_flush < total && !cf_event_is_flush(cf, c.hdr_flush);
	     c.hdr_flush++)
		;
	REQUIRE(c.hdr_flush < total, "%s: no flush after the header write", r->label);
	rp = cf_replay_new(cf);
	REQUIRE(rp, "out of memory");
	for (k = 1; k <= total; k++) {
		n = (unsigned)(k * budget / total - (k - 1) * budget / total);
		cf_replay_seek(rp, k);
		for (v = 0; v < n; v++)
			check_state(&c, rp, k, v, false);
		for (h = 0; h < nhdr; h++) {
			if (k == hw[h]) {
				free(was);
				REQUIRE(cf_replay_build(rp, CF_FATE_ALL, 0, &was, &sw, desc,
							sizeof(desc)) == 0, "out of memory");
			}
			if (k == hw[h] + 1)
				torn_header(&c, was, sw, rp, k);
		}
	}
	free(was);
	check_state(&c, rp, total, 0, true);
	printf("%-13s %3zu events, %zu header writes (%u torn states), the commit %zu, its "
	       "fsync %zu; states: %" PRIu64 " old, %" PRIu64 " old in use, %" PRIu64 " new, %"
	       PRIu64 " new in use, %" PRIu64 " bad\n", r->label, total, nhdr, c.torn, c.hdr,
	       c.hdr_flush, c.counts[M_OLD], c.counts[M_OLD_IN_USE], c.counts[M_NEW],
	       c.counts[M_NEW_IN_USE], c.counts[M_NONE]);
	cf_replay_free(rp);
	cf_free(cf);
	list_free(&old);
	list_free(&nw);
}

int main(void)
{
	const char *only = getenv("BITMAP_EDIT_RUN");
	uint64_t budget;
	unsigned i, nruns = 0;

	t_init("test-powercut-bitmap-edit");
	g_seed = t_rng_state;
	if (!t_want_qemu())
		return T_SKIP;
	budget = t_env_u64("BITMAP_EDIT_STATES", DEFAULT_STATES);
	memset(g_pad, 'x', PAD_LEN);
	g_path = t_path("state.qcow2");
	for (i = 0; i < NB_BASES; i++)
		make_base((int)i);
	for (i = 0; i < NB_RUNS; i++)
		nruns += !only || !strcmp(only, runs[i].label);
	REQUIRE(nruns, "no run named %s", only);
	for (i = 0; i < NB_RUNS; i++) {
		if (!only || !strcmp(only, runs[i].label))
			one_run(i, budget / nruns);
	}
	for (i = 0; i < NB_BASES; i++)
		free(g_base_data[i]);
	printf("test-powercut-bitmap-edit: %" PRIu64 " crash states checked\n", g_states);
	if (t_nfail)
		fprintf(stderr, "replay: SEED=%" PRIu64 " BITMAP_EDIT_STATES=%" PRIu64 "%s%s\n",
			g_seed, budget, only ? " BITMAP_EDIT_RUN=" : "", only ? only : "");
	return t_finish();
}
