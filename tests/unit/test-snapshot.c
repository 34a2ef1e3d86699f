/* SPDX-License-Identifier: MIT */
/*
 * Internal snapshots against a model, and a power cut at every write of
 * every snapshot operation.
 *
 * Model: long seeded sequences of guest writes, zero writes, discards,
 * grows, reopens and snapshot create / apply / delete on an in-memory image
 * (tests/unit/crashfile.c). After every snapshot operation the engine's
 * check finds no corruption and no leak, the active image reads as the
 * model says, and so does every snapshot (read through a read-only open and
 * qcow_snapshot_load); qemu-img check agrees on samples.
 *
 * Power cuts: an image with data and two snapshots, then each operation
 * (create, apply, delete) recorded; for every prefix of its writes and
 * flushes, each way the unflushed writes may have landed (all, none, a
 * random mix with torn sectors, all but one, only one): the state opens
 * read-write, checks with no corruption (leaks allowed), is exactly the old
 * image or exactly the new one (active content, snapshot list and every
 * snapshot's content), and stays writable.
 *
 * SEED replays a run; SNAPSHOT_ROUNDS sets the model sequence length.
 */
#include "crashfile.h"
#include "testlib.h"

#define CB		12			/* 4 KiB clusters: many L2 tables */
#define CS		(1u << CB)
#define START_SIZE	(3u << 20)
#define MAX_SNAPS	6

static bool have_qemu;

struct snapshot_model {
	char name[16];
	uint8_t *data;
	uint64_t size;
};

struct world {
	struct crashfile *cf;
	struct qcow_image *img;
	uint8_t *active;		/* model of the active image */
	uint64_t size;
	struct snapshot_model snaps[MAX_SNAPS];
	unsigned nsnaps, next_name;
	uint8_t *buf;
};

#define MAX_BYTES (8u << 20)

/* ------------------------------------------------------------ helpers */

static int open_cf(const uint8_t *data, uint64_t len, struct crashfile **cf,
		   const struct qcow_open_opts *oo, struct qcow_image **img)
{
	struct qcow_file f;
	char err[512] = "";
	int r;

	if (!*cf)
		*cf = cf_new(data, len);
	REQUIRE(*cf, "cf_new");
	cf_get_file(*cf, &f);
	r = qcow_open_file(&f, "snap.qcow2", oo, img, err, sizeof(err));
	if (r < 0)
		printf("open: %d %s\n", r, err);
	return r;
}

/* Engine check of the bytes in data: corruptions (and leaks, through *leaks). */
static uint64_t check_bytes(const uint8_t *data, uint64_t len, uint64_t *leaks)
{
	struct qcow_open_opts oo = { .read_only = true, .for_check = true };
	struct qcow_check_result res;
	struct crashfile *cf = NULL;
	struct qcow_image *img = NULL;
	uint64_t bad;

	if (open_cf(data, len, &cf, &oo, &img) < 0) {
		cf_free(cf);
		return 1;
	}
	memset(&res, 0, sizeof(res));
	bad = qcow_check(img, 0, &res, NULL, NULL) < 0 ? 1 : res.corruptions + res.check_errors;
	*leaks = res.leaks;
	qcow_close(img);
	cf_free(cf);
	return bad;
}

static int qemu_check_bytes(const uint8_t *data, uint64_t len)
{
	const char *p = t_path("qemu-check.qcow2");

	REQUIRE(t_write_file(p, data, len) == 0, "write %s", p);
	return t_qemu_check(p);
}

/* Does image img (as opened) read as want over size bytes? */
static bool reads_as(struct qcow_image *img, const uint8_t *want, uint64_t size, uint8_t *buf)
{
	struct qcow_info info;

	qcow_get_info(img, &info);
	if (info.virtual_size != size)
		return false;
	return qcow_read(img, buf, 0, size) == 0 && !memcmp(buf, want, size);
}

/* Does snapshot name of the image in data read as want? */
static bool snapshot_reads_as(const uint8_t *data, uint64_t len, const char *name,
			      const uint8_t *want, uint64_t size, uint8_t *buf)
{
	struct qcow_open_opts oo = { .read_only = true };
	struct crashfile *cf = NULL;
	struct qcow_image *img = NULL;
	bool ok;

	if (open_cf(data, len, &cf, &oo, &img) < 0) {
		cf_free(cf);
		return false;
	}
	ok = qcow_snapshot_load(img, NULL, name) == 0 && reads_as(img, want, size, buf);
	qcow_close(img);
	cf_free(cf);
	return ok;
}

/* The snapshots' names, space separated, in table order. */
static void list_names(struct qcow_image *img, char *out, size_t len)
{
	struct qcow_snapshot_info *v;
	uint32_t n, i;

	out[0] = '\0';
	if (qcow_snapshot_list(img, &v, &n) < 0) {
		snprintf(out, len, "<list failed>");
		return;
	}
	for (i = 0; i < n; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? " " : "", v[i].name);
	qcow_snapshot_list_free(v, n);
}

static void model_names(const struct world *w, char *out, size_t len)
{
	unsigned i;

	out[0] = '\0';
	for (i = 0; i < w->nsnaps; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s%s", i ? " " : "",
			 w->snaps[i].name);
}

/* --------------------------------------------------------- the model */

static void world_open(struct world *w)
{
	struct qcow_open_opts oo = { .l2_cache_bytes = 4 * CS, .refcount_cache_bytes = 4 * CS };

	w->img = NULL;
	REQUIRE(open_cf(NULL, 0, &w->cf, &oo, &w->img) == 0, "open the image");
}

static void world_init(struct world *w)
{
	struct qcow_create_opts co = { .size = START_SIZE, .cluster_bits = CB };
	struct qcow_file f;
	char err[512] = "";

	memset(w, 0, sizeof(*w));
	w->cf = cf_new(NULL, 0);
	w->active = calloc(1, MAX_BYTES);
	w->buf = malloc(MAX_BYTES);
	REQUIRE(w->cf && w->active && w->buf, "malloc");
	cf_get_file(w->cf, &f);
	REQUIRE(qcow_create_file(&f, "snap.qcow2", &co, err, sizeof(err)) == 0, "create: %s", err);
	w->size = START_SIZE;
	world_open(w);
}

static void world_free(struct world *w)
{
	unsigned i;

	if (w->img)
		qcow_close(w->img);
	for (i = 0; i < w->nsnaps; i++)
		free(w->snaps[i].data);
	cf_free(w->cf);
	free(w->active);
	free(w->buf);
}

/* Everything the model says, checked on the image as it is on "disk". */
static void world_verify(struct world *w, const char *after)
{
	const uint8_t *data;
	uint64_t len, leaks = 0, bad;
	char got[256], want[256];
	unsigned i;

	REQUIRE(qcow_flush(w->img) == 0, "flush after %s", after);
	CHECK(reads_as(w->img, w->active, w->size, w->buf), "active image wrong after %s", after);
	list_names(w->img, got, sizeof(got));
	model_names(w, want, sizeof(want));
	CHECK(!strcmp(got, want), "after %s: snapshots '%s', want '%s'", after, got, want);
	data = cf_data(w->cf, &len);
	bad = check_bytes(data, len, &leaks);
	CHECK(bad == 0 && leaks == 0, "after %s: %llu corruptions, %llu leaks", after,
	      (unsigned long long)bad, (unsigned long long)leaks);
	for (i = 0; i < w->nsnaps; i++)
		CHECK(snapshot_reads_as(data, len, w->snaps[i].name, w->snaps[i].data,
					w->snaps[i].size, w->buf),
		      "after %s: snapshot %s reads wrong", after, w->snaps[i].name);
	if (have_qemu && t_rand_below(8) == 0)
		CHECK(qemu_check_bytes(data, len) == 0, "after %s: qemu-img check", after);
}

static void op_write(struct world *w)
{
	uint64_t len = 1 + t_rand_below(3 * CS), off = t_rand_below(w->size - len + 1);

	if (t_rand_below(2))
		off &= ~511ull, len = (len + 511) & ~511ull;
	if (off + len > w->size)
		len = w->size - off;
	t_fill_random(w->buf, len);
	REQUIRE(qcow_write(w->img, w->buf, off, len) == 0, "write: %s", qcow_error(w->img));
	memcpy(w->active + off, w->buf, len);
}

static void op_zero_or_discard(struct world *w)
{
	uint64_t first = t_rand_below(w->size / CS), n = 1 + t_rand_below(8), off, len;

	if (first + n > w->size / CS)
		n = w->size / CS - first;
	off = first * CS;
	len = n * CS;
	if (t_rand_below(2))
		REQUIRE(qcow_write_zeroes(w->img, off, len, t_rand_below(2) ? QCOW_ZERO_MAY_UNMAP : 0)
			== 0, "zero: %s", qcow_error(w->img));
	else
		REQUIRE(qcow_discard(w->img, off, len) == 0, "discard: %s", qcow_error(w->img));
	memset(w->active + off, 0, len);
}

static void op_create(struct world *w)
{
	struct snapshot_model *s;

	if (w->nsnaps == MAX_SNAPS)
		return;
	s = &w->snaps[w->nsnaps];
	snprintf(s->name, sizeof(s->name), "s%u", w->next_name++);
	s->size = w->size;
	s->data = malloc(w->size);
	REQUIRE(s->data, "malloc");
	memcpy(s->data, w->active, w->size);
	REQUIRE(qcow_snapshot_create(w->img, s->name) == 0, "create %s: %s", s->name,
		qcow_error(w->img));
	w->nsnaps++;
	world_verify(w, "create");
}

static void op_apply(struct world *w)
{
	struct snapshot_model *s;
	bool vm;

	if (!w->nsnaps)
		return;
	s = &w->snaps[t_rand_below(w->nsnaps)];
	REQUIRE(qcow_snapshot_apply(w->img, s->name, &vm) == 0, "apply %s: %s", s->name,
		qcow_error(w->img));
	memset(w->active, 0, MAX_BYTES);
	memcpy(w->active, s->data, s->size);
	w->size = s->size;
	world_verify(w, "apply");
}

static void op_delete(struct world *w)
{
	unsigned i;

	if (!w->nsnaps)
		return;
	i = (unsigned)t_rand_below(w->nsnaps);
	REQUIRE(qcow_snapshot_delete(w->img, w->snaps[i].name) == 0, "delete %s: %s",
		w->snaps[i].name, qcow_error(w->img));
	free(w->snaps[i].data);
	memmove(&w->snaps[i], &w->snaps[i + 1], (w->nsnaps - i - 1) * sizeof(w->snaps[0]));
	w->nsnaps--;
	world_verify(w, "delete");
}

static void op_grow(struct world *w)
{
	uint64_t size = w->size + CS * (1 + t_rand_below(64));

	if (size > MAX_BYTES)
		return;
	REQUIRE(qcow_resize(w->img, size) == 0, "resize: %s", qcow_error(w->img));
	w->size = size;
}

static void test_model(unsigned rounds)
{
	struct world w;
	unsigned i, r;

	world_init(&w);
	for (i = 0; i < rounds; i++) {
		r = (unsigned)t_rand_below(100);
		if (r < 45)
			op_write(&w);
		else if (r < 60)
			op_zero_or_discard(&w);
		else if (r < 75)
			op_create(&w);
		else if (r < 83)
			op_apply(&w);
		else if (r < 93)
			op_delete(&w);
		else if (r < 96)
			op_grow(&w);
		else {
			REQUIRE(qcow_close(w.img) == 0, "close");
			world_open(&w);
		}
	}
	world_verify(&w, "the whole sequence");
	printf("model: %u operations, %u snapshots at the end\n", rounds, w.nsnaps);
	world_free(&w);
}

/* -------------------------------------------------------- power cuts */

/* What the image was before the operation and is meant to be after it. */
struct side {
	char names[256];
	uint8_t *active;
	uint64_t size;
	uint8_t *snap[MAX_SNAPS];
	uint64_t snap_size[MAX_SNAPS];
	char snap_name[MAX_SNAPS][16];
	unsigned n;
};

static void side_take(struct side *s, const struct world *w)
{
	unsigned i;

	model_names(w, s->names, sizeof(s->names));
	s->active = malloc(w->size);
	REQUIRE(s->active, "malloc");
	memcpy(s->active, w->active, w->size);
	s->size = w->size;
	s->n = w->nsnaps;
	for (i = 0; i < w->nsnaps; i++) {
		s->snap[i] = w->snaps[i].data;	/* the world keeps them alive */
		s->snap_size[i] = w->snaps[i].size;
		snprintf(s->snap_name[i], sizeof(s->snap_name[i]), "%s", w->snaps[i].name);
	}
}

/* Is the image img (opened from data) exactly side s? */
static bool is_side(struct qcow_image *img, const uint8_t *data, uint64_t len,
		    const struct side *s, uint8_t *buf)
{
	char names[256];
	unsigned i;

	list_names(img, names, sizeof(names));
	if (strcmp(names, s->names) || !reads_as(img, s->active, s->size, buf))
		return false;
	for (i = 0; i < s->n; i++)
		if (!snapshot_reads_as(data, len, s->snap_name[i], s->snap[i], s->snap_size[i], buf))
			return false;
	return true;
}

struct cut_stats {
	unsigned states, old_side, new_side, qemu_checked;
};

/* One crash state: no corruption, old or new image, still writable. */
static void check_state(const uint8_t *data, uint64_t len, const struct side *old_s,
			const struct side *new_s, const char *what, struct cut_stats *st)
{
	struct qcow_open_opts oo = { 0 };
	struct crashfile *cf = NULL;
	struct qcow_image *img = NULL;
	uint64_t leaks, bad = check_bytes(data, len, &leaks);
	uint8_t *buf = malloc(MAX_BYTES);
	bool o, n;

	REQUIRE(buf, "malloc");
	st->states++;
	CHECK(bad == 0, "%s: %llu corruptions", what, (unsigned long long)bad);
	if (have_qemu && st->states % 7 == 0) {
		st->qemu_checked++;
		CHECK(qemu_check_bytes(data, len) % 3 == 0, "%s: qemu-img check finds corruption",
		      what);
	}
	if (open_cf(data, len, &cf, &oo, &img) == 0) {
		o = is_side(img, data, len, old_s, buf);
		n = !o && is_side(img, data, len, new_s, buf);
		st->old_side += o;
		st->new_side += n;
		CHECK(o || n, "%s: neither the old image nor the new one", what);
		t_fill_random(buf, 3 * CS);
		CHECK(qcow_write(img, buf, 5 * CS + 17, 3 * CS) == 0 && qcow_flush(img) == 0,
		      "%s: not writable: %s", what, qcow_error(img));
		qcow_close(img);
	} else {
		CHECK(false, "%s: does not open read-write", what);
	}
	cf_free(cf);
	free(buf);
}

static void cut_everywhere(struct world *w, const struct side *old_s, const struct side *new_s,
			   const char *op, struct cut_stats *st)
{
	static const enum cf_fate fates[] = { CF_FATE_ALL, CF_FATE_NONE, CF_FATE_RANDOM,
					      CF_FATE_DROP_ONE, CF_FATE_ONLY_ONE };
	struct cf_replay *r = cf_replay_new(w->cf);
	size_t k, n = cf_nevents(w->cf), f;
	char what[256], desc[160];
	uint8_t *data;
	uint64_t len, seed;

	REQUIRE(r, "cf_replay_new");
	for (k = 0; k <= n; k++) {
		cf_replay_seek(r, k);
		for (f = 0; f < sizeof(fates) / sizeof(fates[0]); f++) {
			if (fates[f] != CF_FATE_ALL && !cf_replay_pending_writes(r))
				continue;
			seed = t_rand();
			REQUIRE(cf_replay_build(r, fates[f], seed, &data, &len, desc, sizeof(desc)) == 0,
				"cf_replay_build");
			snprintf(what, sizeof(what), "%s cut at event %zu/%zu (%s)", op, k, n, desc);
			check_state(data, len, old_s, new_s, what, st);
			free(data);
		}
	}
	cf_replay_free(r);
}

static void test_power_cuts(void)
{
	struct cut_stats st = { 0 };
	struct side before, after;
	struct world w;
	unsigned i, op;
	bool vm;

	for (op = 0; op < 3; op++) {
		world_init(&w);
		for (i = 0; i < 30; i++)
			op_write(&w);
		op_create(&w);
		for (i = 0; i < 20; i++)
			op_write(&w);
		op_zero_or_discard(&w);
		op_create(&w);
		for (i = 0; i < 20; i++)
			op_write(&w);
		REQUIRE(qcow_flush(w.img) == 0, "flush");
		side_take(&before, &w);
		cf_record_start(w.cf);
		if (op == 0) {
			op_create(&w);
		} else if (op == 1) {
			REQUIRE(qcow_snapshot_apply(w.img, "s0", &vm) == 0, "apply");
			memcpy(w.active, w.snaps[0].data, w.snaps[0].size);
			w.size = w.snaps[0].size;
		} else {
			REQUIRE(qcow_snapshot_delete(w.img, "s0") == 0, "delete");
		}
		side_take(&after, &w);
		if (op == 2) {
			/* the model drops s0 after the states are taken */
			memmove(&after.snap[0], &after.snap[1], (after.n - 1) * sizeof(after.snap[0]));
			memmove(&after.snap_size[0], &after.snap_size[1], (after.n - 1) * 8);
			memmove(&after.snap_name[0], &after.snap_name[1], (after.n - 1) * 16);
			after.n--;
			snprintf(after.names, sizeof(after.names), "s1");
		}
		cut_everywhere(&w, &before, &after, op == 0 ? "create" : op == 1 ? "apply" :
			       "delete", &st);
		free(before.active);
		free(after.active);
		world_free(&w);
	}
	printf("power cuts: %u states (%u old image, %u new image), %u checked by qemu-img\n",
	       st.states, st.old_side, st.new_side, st.qemu_checked);
	CHECK(st.old_side > 0 && st.new_side > 0, "cuts never produced both sides");
}

int main(void)
{
	const char *r = getenv("SNAPSHOT_ROUNDS");

	t_init("snapshot");
	have_qemu = t_want_qemu();
	test_model(r ? (unsigned)atoi(r) : 400);
	test_power_cuts();
	return t_finish();
}
