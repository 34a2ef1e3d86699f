/* SPDX-License-Identifier: MIT */
/*
 * crashfile: the in-memory, recording, fault-injecting qcow_file backend of
 * the crash and IO-error tests. See crashfile.h for the storage model.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crashfile.h"

/* Larger files are refused (-EFBIG): a runaway engine must not eat memory. */
#define CF_MAX_SIZE (1ULL << 30)

enum cf_ev_kind { CF_EV_WRITE, CF_EV_FLUSH, CF_EV_TRUNCATE };

struct cf_event {
	enum cf_ev_kind kind;
	uint64_t off;                 /* write offset; truncate: the new size */
	uint64_t len;
	uint8_t *data;                /* the bytes written (a copy) */
};

struct crashfile {
	uint8_t *data;
	uint64_t size, cap;

	uint8_t *start;               /* contents at cf_record_start() */
	uint64_t start_size;
	struct cf_event *ev;
	size_t nev, evcap;

	enum cf_op inj_op;
	uint64_t inj_nth;
	int inj_err;
	bool inj_sticky;
	bool inj_partial;
	uint64_t inj_seed;
	uint64_t injected;
	uint64_t count[CF_OP_COUNT];
};

struct cf_replay {
	const struct crashfile *cf;
	uint8_t *base;                /* durable contents at the last flush before the cut */
	uint64_t base_size, base_cap;
	size_t cut;
	size_t first_pending;
};

/* ---------------------------------------------------------- buffers */

/* Make *buf hold at least need bytes, new bytes zeroed. */
static int cf_reserve(uint8_t **buf, uint64_t *cap, uint64_t need)
{
	uint64_t ncap = *cap ? *cap : 65536;
	uint8_t *p;

	if (need <= *cap)
		return 0;
	if (need > CF_MAX_SIZE)
		return -EFBIG;
	while (ncap < need)
		ncap *= 2;
	p = realloc(*buf, ncap);
	if (!p)
		return -ENOMEM;
	memset(p + *cap, 0, ncap - *cap);
	*buf = p;
	*cap = ncap;
	return 0;
}

/* Write len bytes at off into a buffer of *size valid bytes (zeros beyond). */
static int cf_apply_write(uint8_t **buf, uint64_t *size, uint64_t *cap, const uint8_t *src,
			  uint64_t off, uint64_t len)
{
	int ret = cf_reserve(buf, cap, off + len);

	if (ret < 0)
		return ret;
	memcpy(*buf + off, src, len);
	if (off + len > *size)
		*size = off + len;
	return 0;
}

static int cf_apply_truncate(uint8_t **buf, uint64_t *size, uint64_t *cap, uint64_t new_size)
{
	int ret = cf_reserve(buf, cap, new_size);

	if (ret < 0)
		return ret;
	/* bytes past the new end read as zeros if the file grows again */
	if (new_size < *size)
		memset(*buf + new_size, 0, *size - new_size);
	*size = new_size;
	return 0;
}

/* ---------------------------------------------------------- the log */

static int cf_log(struct crashfile *cf, enum cf_ev_kind kind, const void *data, uint64_t off,
		  uint64_t len)
{
	struct cf_event *e;

	if (cf->nev == cf->evcap) {
		size_t ncap = cf->evcap ? cf->evcap * 2 : 1024;
		struct cf_event *p = realloc(cf->ev, ncap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		cf->ev = p;
		cf->evcap = ncap;
	}
	e = &cf->ev[cf->nev];
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->off = off;
	e->len = len;
	if (kind == CF_EV_WRITE) {
		e->data = malloc(len ? len : 1);
		if (!e->data)
			return -ENOMEM;
		memcpy(e->data, data, len);
	}
	cf->nev++;
	return 0;
}

static void cf_log_clear(struct crashfile *cf)
{
	size_t i;

	for (i = 0; i < cf->nev; i++)
		free(cf->ev[i].data);
	cf->nev = 0;
}

/* ---------------------------------------------------------- injection */

/* Count one operation of kind op; true if it is to fail. */
static bool cf_fails(struct crashfile *cf, enum cf_op op)
{
	uint64_t n = ++cf->count[op];

	if (!cf->inj_nth || cf->inj_op != op)
		return false;
	if (n == cf->inj_nth || (cf->inj_sticky && n > cf->inj_nth)) {
		cf->injected++;
		return true;
	}
	return false;
}

static uint64_t cf_rand(uint64_t *s);

/* Bytes of a failing write that land first: whole sectors from its start. */
static uint64_t cf_partial_len(struct crashfile *cf, uint64_t off, uint64_t len)
{
	uint64_t s = cf->inj_seed ^ (cf->count[CF_OP_WRITE] << 20) ^ off;
	uint64_t end = off + len, sectors = (end + CF_SECTOR - 1) / CF_SECTOR - off / CF_SECTOR;
	uint64_t keep = cf_rand(&s) % (sectors + 1), stop;

	stop = (off / CF_SECTOR + keep) * CF_SECTOR;
	return stop <= off ? 0 : (stop < end ? stop : end) - off;
}

/* ---------------------------------------------------------- file ops */

static int cf_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	struct crashfile *cf = ctx;
	uint64_t n = 0;

	if (cf_fails(cf, CF_OP_READ))
		return -cf->inj_err;
	if (off < cf->size) {
		n = len < cf->size - off ? len : cf->size - off;
		memcpy(buf, cf->data + off, n);
	}
	/* past the end of the file reads as zeros */
	memset((uint8_t *)buf + n, 0, len - n);
	return 0;
}

static int cf_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	struct crashfile *cf = ctx;
	bool grows, fail;
	int ret;

	if (off > CF_MAX_SIZE || len > CF_MAX_SIZE - off)
		return -EFBIG;
	grows = off + len > cf->size;
	/* both counters move, whichever kind is armed */
	fail = cf_fails(cf, CF_OP_WRITE);
	if (grows && cf_fails(cf, CF_OP_GROW))
		fail = true;
	/* a failed write changes nothing, or (partial) lands a prefix */
	if (fail)
		len = cf->inj_partial ? cf_partial_len(cf, off, len) : 0;
	ret = len ? cf_apply_write(&cf->data, &cf->size, &cf->cap, buf, off, len) : 0;
	if (ret == 0 && len && cf->start)
		ret = cf_log(cf, CF_EV_WRITE, buf, off, len);
	return fail ? -cf->inj_err : ret;
}

static int cf_flush(void *ctx)
{
	struct crashfile *cf = ctx;

	if (cf_fails(cf, CF_OP_FLUSH))
		return -cf->inj_err;
	return cf->start ? cf_log(cf, CF_EV_FLUSH, NULL, 0, 0) : 0;
}

static int cf_truncate(void *ctx, uint64_t size)
{
	struct crashfile *cf = ctx;
	int ret;

	if (size > CF_MAX_SIZE)
		return -EFBIG;
	ret = cf_apply_truncate(&cf->data, &cf->size, &cf->cap, size);
	if (ret == 0 && cf->start)
		ret = cf_log(cf, CF_EV_TRUNCATE, NULL, size, 0);
	return ret;
}

static int cf_get_size(void *ctx, uint64_t *size)
{
	struct crashfile *cf = ctx;

	*size = cf->size;
	return 0;
}

/* The test owns the crashfile: closing the image leaves it alone. */
static void cf_close(void *ctx)
{
	(void)ctx;
}

/* A punch reads back as zeros afterwards: recorded as a write of zeros,
 * so that crash states hold it or not like any other write. Never an
 * injected failure: the engine ignores a failed punch (it is advisory),
 * so one would hide the write failure a test means to inject. Inside the
 * file only, as punches are (KEEP_SIZE). */
static int cf_punch(void *ctx, uint64_t off, uint64_t len)
{
	struct crashfile *cf = ctx;
	uint8_t *zeros;
	int ret;

	if (off >= cf->size)
		return 0;
	if (len > cf->size - off)
		len = cf->size - off;
	zeros = calloc(1, len ? len : 1);
	if (!zeros)
		return -ENOMEM;
	ret = cf_apply_write(&cf->data, &cf->size, &cf->cap, zeros, off, len);
	if (ret == 0 && cf->start)
		ret = cf_log(cf, CF_EV_WRITE, zeros, off, len);
	free(zeros);
	return ret;
}

static const struct qcow_file_ops cf_ops = {
	.pread = cf_pread,
	.pwrite = cf_pwrite,
	.flush = cf_flush,
	.truncate = cf_truncate,
	.punch = cf_punch,
	.get_size = cf_get_size,
	.close = cf_close,
};

/* ---------------------------------------------------------- public */

struct crashfile *cf_new(const void *data, uint64_t len)
{
	struct crashfile *cf = calloc(1, sizeof(*cf));

	if (!cf)
		return NULL;
	if (len && cf_apply_write(&cf->data, &cf->size, &cf->cap, data, 0, len) < 0) {
		free(cf);
		return NULL;
	}
	return cf;
}

void cf_free(struct crashfile *cf)
{
	if (!cf)
		return;
	cf_log_clear(cf);
	free(cf->ev);
	free(cf->start);
	free(cf->data);
	free(cf);
}

void cf_get_file(struct crashfile *cf, struct qcow_file *out)
{
	out->ops = &cf_ops;
	out->ctx = cf;
	out->fd = -1;
}

const uint8_t *cf_data(const struct crashfile *cf, uint64_t *size)
{
	*size = cf->size;
	return cf->data;
}

void cf_record_start(struct crashfile *cf)
{
	cf_log_clear(cf);
	free(cf->start);
	cf->start_size = cf->size;
	cf->start = malloc(cf->size ? cf->size : 1);
	if (!cf->start) {
		fprintf(stderr, "crashfile: out of memory\n");
		abort();
	}
	if (cf->size)
		memcpy(cf->start, cf->data, cf->size);
}

size_t cf_nevents(const struct crashfile *cf)
{
	return cf->nev;
}

bool cf_event_is_flush(const struct crashfile *cf, size_t i)
{
	return i < cf->nev && cf->ev[i].kind == CF_EV_FLUSH;
}

bool cf_event_is_write(const struct crashfile *cf, size_t i)
{
	return i < cf->nev && cf->ev[i].kind == CF_EV_WRITE;
}

bool cf_event_writes_to(const struct crashfile *cf, size_t i, uint64_t off, uint64_t len)
{
	const struct cf_event *e = &cf->ev[i];

	return cf_event_is_write(cf, i) && e->off < off + len && off < e->off + e->len;
}

void cf_inject(struct crashfile *cf, enum cf_op op, uint64_t nth, int err, bool sticky)
{
	cf->inj_op = op;
	cf->inj_nth = nth;
	cf->inj_err = err;
	cf->inj_sticky = sticky;
	cf->injected = 0;
	memset(cf->count, 0, sizeof(cf->count));
}

void cf_inject_partial(struct crashfile *cf, bool partial, uint64_t seed)
{
	cf->inj_partial = partial;
	cf->inj_seed = seed;
}

uint64_t cf_injected(const struct crashfile *cf)
{
	return cf->injected;
}

uint64_t cf_count(const struct crashfile *cf, enum cf_op op)
{
	return op < CF_OP_COUNT ? cf->count[op] : 0;
}

/* ---------------------------------------------------------- replay */

uint64_t cf_mix(uint64_t a, uint64_t b)
{
	uint64_t z = a ^ (b + 0x9e3779b97f4a7c15ULL + (a << 6) + (a >> 2));

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

enum cf_fate cf_fate_of(uint64_t seed)
{
	switch (seed % 8) {
	case 0: return CF_FATE_ALL;
	case 1: return CF_FATE_NONE;
	case 2: return CF_FATE_ONLY_ONE;
	case 3: return CF_FATE_DROP_ONE;
	default: return CF_FATE_RANDOM;
	}
}

struct cf_replay *cf_replay_new(const struct crashfile *cf)
{
	struct cf_replay *r = calloc(1, sizeof(*r));

	if (!r || (cf->start_size &&
		   cf_apply_write(&r->base, &r->base_size, &r->base_cap, cf->start, 0,
				  cf->start_size) < 0)) {
		fprintf(stderr, "crashfile: out of memory\n");
		abort();
	}
	r->cf = cf;
	return r;
}

void cf_replay_free(struct cf_replay *r)
{
	if (!r)
		return;
	free(r->base);
	free(r);
}

static void cf_replay_apply(struct cf_replay *r, const struct cf_event *e)
{
	int ret = 0;

	if (e->kind == CF_EV_WRITE)
		ret = cf_apply_write(&r->base, &r->base_size, &r->base_cap, e->data, e->off, e->len);
	else if (e->kind == CF_EV_TRUNCATE)
		ret = cf_apply_truncate(&r->base, &r->base_size, &r->base_cap, e->off);
	if (ret < 0) {
		fprintf(stderr, "crashfile: replay failed: %s\n", strerror(-ret));
		abort();
	}
}

void cf_replay_seek(struct cf_replay *r, size_t k)
{
	const struct crashfile *cf = r->cf;
	size_t i, j;

	if (k > cf->nev)
		k = cf->nev;
	for (i = r->cut; i < k; i++) {
		if (cf->ev[i].kind != CF_EV_FLUSH)
			continue;
		/* a completed flush: everything issued before it is durable */
		for (j = r->first_pending; j < i; j++)
			cf_replay_apply(r, &cf->ev[j]);
		r->first_pending = i + 1;
	}
	if (k > r->cut)
		r->cut = k;
}

size_t cf_replay_pending(const struct cf_replay *r)
{
	return r->cut - r->first_pending;
}

static uint64_t cf_rand(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

struct cf_tally {
	unsigned whole, dropped, torn, trunc;
};

/* Which sector pieces of a write land: all, none, a prefix or any subset. */
enum cf_write_fate { CF_W_WHOLE, CF_W_DROP, CF_W_PREFIX, CF_W_SUBSET };

/* The fate of pending write number nth (chosen: the singled-out one). */
static enum cf_write_fate cf_pick(enum cf_fate fate, bool chosen, uint64_t *rng)
{
	if (fate == CF_FATE_ALL || (fate == CF_FATE_DROP_ONE && !chosen) ||
	    (fate == CF_FATE_ONLY_ONE && chosen))
		return CF_W_WHOLE;
	if (fate != CF_FATE_RANDOM)
		return CF_W_DROP;
	switch (cf_rand(rng) % 6) {
	case 0: case 1: return CF_W_WHOLE;
	case 2: case 3: return CF_W_DROP;
	case 4: return CF_W_PREFIX;
	default: return CF_W_SUBSET;
	}
}

/* Apply the pieces of write e (split at sector boundaries) that land. */
static void cf_state_write(const struct cf_event *e, enum cf_write_fate wf, uint64_t *rng,
			   uint8_t *out, uint64_t *size, struct cf_tally *t)
{
	uint64_t first = e->off / CF_SECTOR, last = (e->off + e->len - 1) / CF_SECTOR;
	uint64_t n = last - first + 1, keep_prefix = n > 1 ? 1 + cf_rand(rng) % (n - 1) : 0;
	uint64_t s, kept = 0, end = 0;

	if (e->len == 0)
		return;
	for (s = 0; s < n; s++) {
		uint64_t from = (first + s) * CF_SECTOR, to = from + CF_SECTOR;
		bool land = wf == CF_W_WHOLE || (wf == CF_W_PREFIX && s < keep_prefix) ||
			    (wf == CF_W_SUBSET && (cf_rand(rng) & 1));

		if (!land)
			continue;
		from = from < e->off ? e->off : from;
		to = to > e->off + e->len ? e->off + e->len : to;
		memcpy(out + from, e->data + (from - e->off), to - from);
		end = to;
		kept++;
	}
	if (end > *size)
		*size = end;
	/* the size may have grown while the data did not land: zeros */
	if (kept < n && e->off + e->len > *size && (cf_rand(rng) & 1))
		*size = e->off + e->len;
	if (kept == n)
		t->whole++;
	else if (kept == 0)
		t->dropped++;
	else
		t->torn++;
}

size_t cf_replay_pending_writes(const struct cf_replay *r)
{
	size_t i, n = 0;

	for (i = r->first_pending; i < r->cut; i++)
		n += r->cf->ev[i].kind == CF_EV_WRITE;
	return n;
}

static void cf_describe(const struct cf_replay *r, enum cf_fate fate, size_t chosen,
			const struct cf_tally *t, char *desc, size_t len)
{
	static const char *const names[] = { "all landed", "none landed", "random",
					     "all but one landed", "only one landed" };
	int n = snprintf(desc, len, "cut %zu, %zu events after the last flush (events %zu..): "
			 "%s: %u writes whole, %u dropped, %u torn, %u truncates", r->cut,
			 r->cut - r->first_pending, r->first_pending, names[fate], t->whole,
			 t->dropped, t->torn, t->trunc);

	if (n > 0 && (size_t)n < len && (fate == CF_FATE_DROP_ONE || fate == CF_FATE_ONLY_ONE))
		snprintf(desc + n, len - (size_t)n, " (the one: pending write #%zu)", chosen);
}

int cf_replay_build(const struct cf_replay *r, enum cf_fate fate, uint64_t seed,
		    uint8_t **out, uint64_t *size, char *desc, size_t desclen)
{
	const struct crashfile *cf = r->cf;
	uint64_t need = r->base_size, cur = r->base_size, rng = seed;
	size_t nw = cf_replay_pending_writes(r), chosen = nw ? seed % nw : 0, w = 0;
	struct cf_tally t = { 0 };
	uint8_t *buf;
	size_t i;

	for (i = r->first_pending; i < r->cut; i++) {
		const struct cf_event *e = &cf->ev[i];
		uint64_t end = e->kind == CF_EV_TRUNCATE ? e->off : e->off + e->len;

		need = end > need ? end : need;
	}
	buf = calloc(1, need ? need : 1);
	if (!buf)
		return -ENOMEM;
	memcpy(buf, r->base, r->base_size);
	for (i = r->first_pending; i < r->cut; i++) {
		const struct cf_event *e = &cf->ev[i];

		if (e->kind == CF_EV_WRITE) {
			cf_state_write(e, cf_pick(fate, w++ == chosen, &rng), &rng, buf, &cur, &t);
		} else if (e->kind == CF_EV_TRUNCATE &&
			   (fate == CF_FATE_ALL || (fate == CF_FATE_RANDOM && (cf_rand(&rng) & 1)))) {
			if (e->off < cur)
				memset(buf + e->off, 0, cur - e->off);
			cur = e->off;
			t.trunc++;
		}
	}
	if (desc && desclen)
		cf_describe(r, fate, chosen, &t, desc, desclen);
	*out = buf;
	*size = cur;
	return 0;
}

/* ---------------------------------------------------------- guest model */

struct cf_model {
	struct cf_gop *ops;
	size_t nops, cap;
	uint8_t *fl;                  /* guest contents at the last durability point */
	uint64_t fl_size;             /* virtual size then */
	uint64_t max_size;            /* fl holds this many bytes */
	size_t folded;                /* ops [0, folded) are in fl (or in unsure) */
	size_t *unsure;               /* folded ops that failed: they stay possible */
	size_t nunsure;
	size_t cut;
	size_t *pend;                 /* ops that may have landed at the cut */
	size_t npend;
};

static void *cf_xalloc(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	if (!p) {
		fprintf(stderr, "crashfile: out of memory\n");
		abort();
	}
	return p;
}

uint8_t cf_pattern_byte(uint32_t id, uint64_t off)
{
	uint64_t s = ((uint64_t)id << 40) ^ (off >> 3);

	if (id & CF_ID_SQUEEZABLE)	/* one value per 256 bytes */
		return (uint8_t)(id * 131 + (off >> 8) * 7 + 1);

	return (uint8_t)(cf_rand(&s) >> (8 * (off & 7)));
}

void cf_pattern(uint32_t id, uint64_t off, uint8_t *buf, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		buf[i] = cf_pattern_byte(id, off + i);
}

struct cf_model *cf_model_new(uint64_t initial_size, uint64_t max_size)
{
	struct cf_model *m = cf_xalloc(sizeof(*m));

	m->max_size = max_size > initial_size ? max_size : initial_size;
	m->fl = cf_xalloc(m->max_size);
	m->fl_size = initial_size;
	return m;
}

void cf_model_set_initial(struct cf_model *m, const uint8_t *buf, uint64_t len)
{
	memcpy(m->fl, buf, len < m->fl_size ? len : m->fl_size);
}

void cf_model_free(struct cf_model *m)
{
	if (!m)
		return;
	free(m->ops);
	free(m->fl);
	free(m->unsure);
	free(m->pend);
	free(m);
}

void cf_model_add(struct cf_model *m, const struct cf_gop *op)
{
	if (m->nops == m->cap) {
		size_t ncap = m->cap ? m->cap * 2 : 256;
		struct cf_gop *p = realloc(m->ops, ncap * sizeof(*p));
		size_t *u = realloc(m->unsure, ncap * sizeof(*u));
		size_t *q = realloc(m->pend, ncap * sizeof(*q));

		if (!p || !u || !q) {
			fprintf(stderr, "crashfile: out of memory\n");
			abort();
		}
		m->ops = p;
		m->unsure = u;
		m->pend = q;
		m->cap = ncap;
	}
	m->ops[m->nops++] = *op;
}

size_t cf_model_nops(const struct cf_model *m)
{
	return m->nops;
}

static bool cf_is_durability_point(const struct cf_gop *op)
{
	return !op->failed && (op->kind == CF_G_FLUSH || op->kind == CF_G_RESIZE);
}

/* Bring op i into fl: its effect is now certain (unless it failed). */
static void cf_model_fold(struct cf_model *m, size_t i)
{
	const struct cf_gop *op = &m->ops[i];
	uint64_t end = op->off + op->len;

	if (op->failed) {
		if (op->kind != CF_G_FLUSH)
			m->unsure[m->nunsure++] = i;
		return;
	}
	end = end < m->max_size ? end : m->max_size;
	if (op->kind == CF_G_WRITE && op->off < end)
		cf_pattern(op->id, op->off, m->fl + op->off, end - op->off);
	else if (op->kind == CF_G_ZERO && op->off < end)
		memset(m->fl + op->off, 0, end - op->off);
	else if (op->kind == CF_G_RESIZE)
		m->fl_size = op->size;
}

void cf_model_seek(struct cf_model *m, size_t k)
{
	size_t i, last = m->folded;
	bool found = false;

	/* ops are in the order they started; one may end before an op
	 * before it (an fsync of its own beside a running flush) */
	for (i = m->folded; i < m->nops && m->ops[i].ev_begin <= k; i++) {
		if (m->ops[i].ev_end <= k && cf_is_durability_point(&m->ops[i])) {
			last = i;
			found = true;
		}
	}
	for (i = m->folded; found && i <= last; i++)
		cf_model_fold(m, i);
	if (found)
		m->folded = last + 1;
	m->cut = k;
	m->npend = 0;
	for (i = 0; i < m->nunsure; i++)
		m->pend[m->npend++] = m->unsure[i];
	for (i = m->folded; i < m->nops && m->ops[i].ev_begin < k; i++) {
		if (m->ops[i].kind != CF_G_FLUSH)
			m->pend[m->npend++] = i;
	}
}

bool cf_model_size_ok(const struct cf_model *m, uint64_t size)
{
	size_t i;

	if (size == m->fl_size)
		return true;
	for (i = 0; i < m->npend; i++) {
		const struct cf_gop *op = &m->ops[m->pend[i]];

		if (op->kind == CF_G_RESIZE && op->size == size)
			return true;
	}
	return false;
}

uint64_t cf_model_min_size(const struct cf_model *m)
{
	uint64_t s = m->fl_size;
	size_t i;

	for (i = 0; i < m->npend; i++) {
		const struct cf_gop *op = &m->ops[m->pend[i]];

		if (op->kind == CF_G_RESIZE && op->size < s)
			s = op->size;
	}
	return s;
}

/* Could op have left byte v at guest offset o? */
static bool cf_op_explains(const struct cf_gop *op, uint64_t o, uint8_t v)
{
	if (o < op->off || o - op->off >= op->len)
		return false;
	if (op->kind == CF_G_WRITE)
		return cf_pattern_byte(op->id, o) == v;
	return op->kind == CF_G_ZERO && v == 0;
}

static bool cf_byte_ok(const struct cf_model *m, uint64_t o, uint8_t v)
{
	size_t i;

	if (v == (o < m->max_size ? m->fl[o] : 0))
		return true;
	/* newest first: the likeliest to match */
	for (i = m->npend; i > 0; i--) {
		if (cf_op_explains(&m->ops[m->pend[i - 1]], o, v))
			return true;
	}
	return false;
}

/* Describe why byte o (value v) is wrong: what was allowed, whose data it is. */
static void cf_explain(const struct cf_model *m, uint64_t o, uint8_t v, char *why, size_t len)
{
	size_t i, n;
	long owner = -1;

	for (i = 0; i < m->nops; i++) {
		const struct cf_gop *op = &m->ops[i];

		if (op->kind == CF_G_WRITE && cf_op_explains(op, o, v))
			owner = (long)i;
	}
	n = (size_t)snprintf(why, len, "guest offset %llu reads 0x%02x; value at the last flush "
			     "0x%02x; %zu ops may have landed;",
			     (unsigned long long)o, v, o < m->max_size ? m->fl[o] : 0, m->npend);
	for (i = 0; i < m->npend && n < len; i++) {
		const struct cf_gop *op = &m->ops[m->pend[i]];

		if (o >= op->off && o - op->off < op->len)
			n += (size_t)snprintf(why + n, len - n, " op %zu (%s) covers it;", m->pend[i],
					      op->kind == CF_G_WRITE ? "write" : "zero");
	}
	if (n < len && owner >= 0)
		snprintf(why + n, len - n, " the value matches op %ld's data there", owner);
	else if (n < len)
		snprintf(why + n, len - n, " no op ever wrote this value there (stale or foreign data)");
}

uint64_t cf_model_compare(const struct cf_model *m, const uint8_t *buf, uint64_t len,
			  char *why, size_t whylen)
{
	uint64_t o, bad = 0;

	if (why && whylen)
		why[0] = '\0';
	for (o = 0; o < len; o++) {
		if (cf_byte_ok(m, o, buf[o]))
			continue;
		if (!bad && why && whylen)
			cf_explain(m, o, buf[o], why, whylen);
		bad++;
	}
	return bad;
}
