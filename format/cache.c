/* SPDX-License-Identifier: MIT */
/*
 * The bounded metadata table cache: a fixed set of slots, each holding one
 * cluster-sized table (an L2 table or a refcount block) in its on-disk,
 * big-endian form, found by host offset through a small hash.
 *
 * Everything is allocated when the cache is created, so serving a request
 * never allocates memory: a miss takes an empty slot or evicts the least
 * recently used slot that is neither pinned nor being loaded. When every
 * slot is in use a synchronous caller fails with -ENOMEM instead of growing,
 * and a nowait caller waits (-EBUSY) for a pin to go: a write plan holds
 * its L2 table pinned until qcow_write_end.
 *
 * A dirty L2 table may only reach the disk after the data and refcount
 * increments it depends on are durable (ordering rules 1-2 in internal.h),
 * so writing one back always goes through qcow_prepare_l2_writeback() first.
 * Every table write is checked against the fixed metadata areas.
 *
 * An asynchronous caller loads tables itself: qcow_cache_get_nowait() hands
 * out the slot's buffer in state "loading", and qcow_cache_load_done() makes
 * it usable. A loading slot is never evicted, written or handed to anyone.
 *
 * A flush (flush.c) writes tables while the engine goes on: it takes a
 * snapshot of each dirty table into the slot's flush copy, which is what
 * gets written, so the table itself may change meanwhile (and is dirty
 * again if it does). The slot stays pinned and "flushing" until that write
 * is over: evicted, it could be read back from the file before the write
 * lands; written back from the slot as well, the older copy could land last.
 */
#include <stdlib.h>

#include "internal.h"

/* Fewest slots a cache gets: table copy-on-write pins two L2 tables at once
 * and the allocator may pin several refcount blocks. */
#define QCOW_CACHE_MIN_SLOTS 4

enum slot_state { SLOT_EMPTY, SLOT_LOADING, SLOT_READY };

struct cache_slot {
	uint64_t offset;              /* host offset of the table */
	uint64_t last_used;           /* cache clock at the latest pin */
	uint32_t pins;
	int32_t hash_next;            /* next slot in the bucket, -1: end */
	uint8_t state;                /* enum slot_state */
	bool dirty;
	bool hashed;                  /* reachable by offset */
	bool orphan;                  /* forgotten while in use: empty it when released */
	bool flushing;                /* its flush copy is being written: pinned, never written */
};

struct qcow_cache {
	struct qcow_image *img;
	enum qcow_table_kind kind;
	unsigned nb_slots;
	size_t table_size;
	uint8_t *tables;              /* nb_slots * table_size, page aligned */
	uint8_t *copies;              /* the same again, for flush snapshots; NULL read-only */
	struct cache_slot *slots;
	int32_t *buckets;             /* first slot of each hash chain, -1: none */
	uint32_t bucket_mask;
	uint64_t clock;
	unsigned nb_dirty;
	unsigned nb_loading;          /* slots in state loading */
	uint64_t hits;                /* lookups that found the table */
	uint64_t misses;              /* table reads started */
};

static const char *cache_name(const struct qcow_cache *c)
{
	return c->kind == QCOW_TABLE_L2 ? "L2 table" : "refcount block";
}

static void *slot_table(const struct qcow_cache *c, unsigned idx)
{
	return c->tables + (size_t)idx * c->table_size;
}

static uint32_t hash_offset(const struct qcow_cache *c, uint64_t offset)
{
	return (uint32_t)(((offset >> 9) * 0x9e3779b97f4a7c15ULL) >> 32) & c->bucket_mask;
}

static int slot_find(const struct qcow_cache *c, uint64_t offset)
{
	int32_t i = c->buckets[hash_offset(c, offset)];

	while (i >= 0) {
		if (c->slots[i].offset == offset)
			return i;
		i = c->slots[i].hash_next;
	}
	return -1;
}

static void hash_insert(struct qcow_cache *c, unsigned idx)
{
	uint32_t b = hash_offset(c, c->slots[idx].offset);

	c->slots[idx].hash_next = c->buckets[b];
	c->buckets[b] = (int32_t)idx;
	c->slots[idx].hashed = true;
}

static void hash_remove(struct qcow_cache *c, unsigned idx)
{
	int32_t *link = &c->buckets[hash_offset(c, c->slots[idx].offset)];

	if (!c->slots[idx].hashed)
		return;
	while (*link >= 0) {
		if (*link == (int32_t)idx) {
			*link = c->slots[idx].hash_next;
			break;
		}
		link = &c->slots[*link].hash_next;
	}
	c->slots[idx].hashed = false;
	c->slots[idx].hash_next = -1;
}

static void slot_clear_dirty(struct qcow_cache *c, unsigned idx)
{
	if (c->slots[idx].dirty) {
		c->slots[idx].dirty = false;
		c->nb_dirty--;
	}
}

/* Return a slot to the empty state (it must not be pinned). */
static void slot_empty(struct qcow_cache *c, unsigned idx)
{
	hash_remove(c, idx);
	slot_clear_dirty(c, idx);
	c->slots[idx].state = SLOT_EMPTY;
	c->slots[idx].orphan = false;
	c->slots[idx].pins = 0;
	c->slots[idx].offset = 0;
}

/* Index of the slot whose buffer is table, or -1 for a foreign pointer. */
static int slot_of_table(const struct qcow_cache *c, const void *table)
{
	const uint8_t *p = table;
	size_t delta;

	if (!p || p < c->tables || p >= c->tables + (size_t)c->nb_slots * c->table_size)
		return -1;
	delta = (size_t)(p - c->tables);
	if (delta % c->table_size)
		return -1;
	return (int)(delta / c->table_size);
}

static unsigned bucket_count(unsigned nb_slots)
{
	unsigned n = 16;

	while (n < 2 * nb_slots)
		n <<= 1;
	return n;
}

struct qcow_cache *qcow_cache_new(struct qcow_image *img, enum qcow_table_kind kind,
				  unsigned nb_slots, size_t table_size)
{
	struct qcow_cache *c;
	unsigned nb_buckets, i;
	void *tables = NULL, *copies = NULL;

	if (nb_slots < QCOW_CACHE_MIN_SLOTS)
		nb_slots = QCOW_CACHE_MIN_SLOTS;
	if (nb_slots > (1U << 24) || table_size < 512 || (table_size & (table_size - 1)) ||
	    (size_t)nb_slots > SIZE_MAX / table_size)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	nb_buckets = bucket_count(nb_slots);
	c->slots = calloc(nb_slots, sizeof(*c->slots));
	c->buckets = malloc(nb_buckets * sizeof(*c->buckets));
	/* page aligned so a caller may read tables, and a flush write its
	 * copies, with O_DIRECT */
	if (!c->slots || !c->buckets ||
	    posix_memalign(&tables, 4096, (size_t)nb_slots * table_size) ||
	    (!img->read_only && posix_memalign(&copies, 4096, (size_t)nb_slots * table_size))) {
		free(tables);
		free(c->slots);
		free(c->buckets);
		free(c);
		return NULL;
	}
	c->tables = tables;
	c->copies = copies;
	c->img = img;
	c->kind = kind;
	c->nb_slots = nb_slots;
	c->table_size = table_size;
	c->bucket_mask = nb_buckets - 1;
	for (i = 0; i < nb_buckets; i++)
		c->buckets[i] = -1;
	for (i = 0; i < nb_slots; i++)
		c->slots[i].hash_next = -1;
	return c;
}

void qcow_cache_free(struct qcow_cache *c)
{
	if (!c)
		return;
	free(c->tables);
	free(c->copies);
	free(c->slots);
	free(c->buckets);
	free(c);
}

/* Write one dirty table (the caller has done any ordering work). */
static int slot_write(struct qcow_cache *c, unsigned idx)
{
	struct cache_slot *s = &c->slots[idx];
	int ret;

	if (s->flushing)
		return qcow_busy(c->img, QCOW_WAIT_FLUSH, "%s at 0x%llx is being flushed",
				 cache_name(c), (unsigned long long)s->offset);
	ret = qcow_check_metadata_overlap(c->img, s->offset, c->table_size);
	if (ret < 0)
		return ret;
	ret = qcow_pwrite(c->img, slot_table(c, idx), c->table_size, s->offset);
	if (ret < 0)
		return ret;
	slot_clear_dirty(c, idx);
	return 0;
}

/* Write back a dirty table that is about to be evicted. */
static int slot_evict_write(struct qcow_cache *c, unsigned idx)
{
	int ret;

	if (c->kind == QCOW_TABLE_L2) {
		ret = qcow_prepare_l2_writeback(c->img);
		if (ret < 0)
			return ret;
	}
	/* the hook must leave this cache alone; refuse rather than evict a slot in use */
	if (c->slots[idx].pins || c->slots[idx].state != SLOT_READY)
		return qcow_set_error(c->img, -EBUSY, "%s cache changed during writeback",
				      cache_name(c));
	if (!c->slots[idx].dirty)
		return 0;
	ret = slot_write(c, idx);
	/* durable only at the next fsync, which the next flush must not skip */
	if (ret == 0 && c->kind == QCOW_TABLE_L2)
		qcow_sync_owed(c->img, QCOW_SYNC_L2);
	return ret;
}

/*
 * Least recently used evictable slot: an empty one first, else a ready
 * unpinned one (only among the clean ones when clean_only).
 */
static int pick_victim(const struct qcow_cache *c, bool clean_only)
{
	int best = -1, best_clean = -1;
	unsigned i;

	for (i = 0; i < c->nb_slots; i++) {
		const struct cache_slot *s = &c->slots[i];

		if (s->state == SLOT_EMPTY)
			return (int)i;
		if (s->state != SLOT_READY || s->pins)
			continue;
		if (best < 0 || s->last_used < c->slots[best].last_used)
			best = (int)i;
		if (!s->dirty && (best_clean < 0 || s->last_used < c->slots[best_clean].last_used))
			best_clean = (int)i;
	}
	return clean_only ? best_clean : best;
}

/*
 * Free a slot for offset (not present in the cache) and give it that offset.
 * clean_only: never write a table back here; if only dirty ones could go,
 * -EBUSY (QCOW_WAIT_WRITEBACK): a flush writes them, without the lock.
 */
static int slot_claim(struct qcow_cache *c, uint64_t offset, bool clean_only)
{
	int idx, ret;

	idx = pick_victim(c, clean_only);
	if (idx < 0 && clean_only && pick_victim(c, false) >= 0)
		return qcow_busy(c->img, QCOW_WAIT_WRITEBACK, "%s cache: every table that could "
				 "make room is dirty", cache_name(c));
	/* a nowait caller waits for a pin to go: a write's end, a load's, a flush's */
	if (idx < 0 && (clean_only || c->img->need))
		return qcow_busy(c->img, QCOW_WAIT_ANY, "%s cache: all %u slots pinned or loading",
				 cache_name(c), c->nb_slots);
	if (idx < 0)
		return qcow_set_error(c->img, -ENOMEM,
				      "%s cache full: all %u slots pinned or loading",
				      cache_name(c), c->nb_slots);
	if (c->slots[idx].dirty) {
		ret = slot_evict_write(c, (unsigned)idx);
		if (ret < 0)
			return ret;
	}
	slot_empty(c, (unsigned)idx);
	c->slots[idx].offset = offset;
	hash_insert(c, (unsigned)idx);
	return idx;
}

static void slot_pin(struct qcow_cache *c, unsigned idx)
{
	c->slots[idx].pins++;
	c->slots[idx].last_used = ++c->clock;
}

static int check_offset(struct qcow_cache *c, uint64_t offset)
{
	if (offset == 0 || (offset & (c->table_size - 1)) || offset >= QCOW_MAX_HOST_OFFSET)
		return qcow_set_error(c->img, -EIO, "invalid %s offset 0x%llx",
				      cache_name(c), (unsigned long long)offset);
	return 0;
}

/* Look offset up; -EBUSY for a slot another caller is loading. */
static int lookup(struct qcow_cache *c, uint64_t offset)
{
	int idx = slot_find(c, offset);

	if (idx >= 0 && c->slots[idx].state == SLOT_LOADING)
		return qcow_busy(c->img, QCOW_WAIT_LOAD, "%s at 0x%llx is being loaded",
				 cache_name(c), (unsigned long long)offset);
	if (idx >= 0)
		c->hits++;
	return idx;
}

int qcow_cache_get(struct qcow_cache *c, uint64_t offset, void **table)
{
	int idx, ret;

	ret = check_offset(c, offset);
	if (ret < 0)
		return ret;
	idx = lookup(c, offset);
	if (idx == -EBUSY)
		return idx;
	if (idx < 0) {
		idx = slot_claim(c, offset, false);
		if (idx < 0)
			return idx;
		c->misses++;
		ret = qcow_pread(c->img, slot_table(c, (unsigned)idx), c->table_size, offset);
		if (ret < 0) {
			slot_empty(c, (unsigned)idx);
			return ret;
		}
		c->slots[idx].state = SLOT_READY;
	}
	slot_pin(c, (unsigned)idx);
	*table = slot_table(c, (unsigned)idx);
	return 0;
}

int qcow_cache_get_empty(struct qcow_cache *c, uint64_t offset, void **table)
{
	int idx, ret;

	ret = check_offset(c, offset);
	if (ret < 0)
		return ret;
	idx = lookup(c, offset);
	if (idx == -EBUSY)
		return idx;
	if (idx >= 0 && c->slots[idx].pins)
		return qcow_set_error(c->img, -EBUSY, "%s at 0x%llx reused while still in use",
				      cache_name(c), (unsigned long long)offset);
	if (idx < 0) {
		/* a new table in a nowait call: no write-back under the lock */
		idx = slot_claim(c, offset, c->img->need != NULL);
		if (idx < 0)
			return idx;
	}
	memset(slot_table(c, (unsigned)idx), 0, c->table_size);
	c->slots[idx].state = SLOT_READY;
	if (!c->slots[idx].dirty) {
		c->slots[idx].dirty = true;
		c->nb_dirty++;
	}
	slot_pin(c, (unsigned)idx);
	*table = slot_table(c, (unsigned)idx);
	return 0;
}

int qcow_cache_get_nowait(struct qcow_cache *c, uint64_t offset, void **table,
			  struct qcow_meta_read *need)
{
	int idx, ret;

	ret = check_offset(c, offset);
	if (ret < 0)
		return ret;
	idx = lookup(c, offset);
	if (idx == -EBUSY)
		return idx;
	if (idx >= 0) {
		slot_pin(c, (unsigned)idx);
		*table = slot_table(c, (unsigned)idx);
		return 0;
	}
	/*
	 * Two slots always stay out of loading: the most one call pins at once
	 * (table copy-on-write).  A caller whose load completes then always
	 * gets on with it; with every slot loading it would find no room for
	 * its copy, wait, and have its loaded table evicted by the next load,
	 * over and over (a livelock under cache pressure).
	 */
	if (c->nb_loading + 2 >= c->nb_slots)
		return qcow_busy(c->img, QCOW_WAIT_LOAD, "%s cache: %u table loads in flight already",
				 cache_name(c), c->nb_loading);
	/* a dirty victim would need a synchronous write (and fsync) here */
	idx = slot_claim(c, offset, true);
	if (idx < 0)
		return idx;
	c->slots[idx].state = SLOT_LOADING;
	c->nb_loading++;
	c->misses++;
	need->offset = offset;
	need->len = c->table_size;
	need->buf = slot_table(c, (unsigned)idx);
	need->slot = (uint32_t)idx;
	need->cache = (uint8_t)c->kind;
	need->depth = 0;
	return -EAGAIN;
}

void *qcow_cache_peek(struct qcow_cache *c, uint64_t offset)
{
	int idx = slot_find(c, offset);

	if (idx < 0 || c->slots[idx].state != SLOT_READY)
		return NULL;
	slot_pin(c, (unsigned)idx);
	return slot_table(c, (unsigned)idx);
}

int qcow_cache_pin(struct qcow_cache *c, uint64_t offset, void **table)
{
	if (c->img->need)
		return qcow_cache_get_nowait(c, offset, table, c->img->need);
	return qcow_cache_get(c, offset, table);
}

int qcow_cache_load_done(struct qcow_cache *c, const struct qcow_meta_read *done, int result)
{
	struct cache_slot *s;

	if (!done || done->slot >= c->nb_slots)
		return qcow_set_error(c->img, -EINVAL, "%s load completion for unknown slot",
				      cache_name(c));
	s = &c->slots[done->slot];
	if (s->state != SLOT_LOADING || s->offset != done->offset ||
	    done->buf != slot_table(c, done->slot) || done->len != c->table_size)
		return qcow_set_error(c->img, -EINVAL,
				      "%s load completion does not match a load in flight",
				      cache_name(c));
	c->nb_loading--;
	if (result < 0 || s->orphan) {
		slot_empty(c, done->slot);
		if (result < 0)
			return qcow_set_error(c->img, result, "reading %s at 0x%llx: %s",
					      cache_name(c), (unsigned long long)done->offset,
					      strerror(-result));
		return 0;
	}
	s->state = SLOT_READY;
	s->last_used = ++c->clock;
	return 0;
}

void qcow_cache_put(struct qcow_cache *c, void *table)
{
	int idx = slot_of_table(c, table);

	if (idx < 0 || !c->slots[idx].pins)
		return;
	if (--c->slots[idx].pins == 0 && c->slots[idx].orphan)
		slot_empty(c, (unsigned)idx);
}

void qcow_cache_mark_dirty(struct qcow_cache *c, void *table)
{
	int idx = slot_of_table(c, table);

	if (idx < 0 || c->slots[idx].state != SLOT_READY || c->slots[idx].orphan ||
	    c->slots[idx].dirty)
		return;
	c->slots[idx].dirty = true;
	c->nb_dirty++;
}

int qcow_cache_writeback(struct qcow_cache *c)
{
	unsigned i;
	int ret;

	if (!c || !c->nb_dirty)
		return 0;
	ret = qcow_refuse_while_flushing(c->img);
	if (ret < 0)
		return ret;
	if (c->kind == QCOW_TABLE_L2) {
		ret = qcow_prepare_l2_writeback(c->img);
		if (ret < 0)
			return ret;
	}
	for (i = 0; i < c->nb_slots && c->nb_dirty; i++) {
		if (!c->slots[i].dirty || c->slots[i].state != SLOT_READY)
			continue;
		ret = slot_write(c, i);
		if (ret < 0)
			return ret;
	}
	return 0;
}

bool qcow_cache_has_dirty(const struct qcow_cache *c)
{
	return c && c->nb_dirty > 0;
}

void qcow_cache_forget(struct qcow_cache *c, uint64_t offset)
{
	int idx;

	if (!c)
		return;
	idx = slot_find(c, offset);
	if (idx < 0)
		return;
	/* the table is gone: its contents must never be written back */
	slot_clear_dirty(c, (unsigned)idx);
	if (c->slots[idx].pins || c->slots[idx].state == SLOT_LOADING) {
		hash_remove(c, (unsigned)idx);
		c->slots[idx].orphan = true;
		return;
	}
	slot_empty(c, (unsigned)idx);
}

void qcow_cache_counts(const struct qcow_cache *c, uint64_t *hits, uint64_t *misses)
{
	*hits = c ? c->hits : 0;	/* a raw layer has no cache */
	*misses = c ? c->misses : 0;
}

int qcow_cache_invalidate(struct qcow_cache *c)
{
	unsigned i;

	if (!c)
		return 0;
	for (i = 0; i < c->nb_slots; i++) {
		if (c->slots[i].dirty || c->slots[i].pins || c->slots[i].state == SLOT_LOADING ||
		    c->slots[i].flushing)
			return qcow_set_error(c->img, -EBUSY,
					      "%s cache still has tables in use or unwritten",
					      cache_name(c));
	}
	for (i = 0; i < c->nb_slots; i++)
		slot_empty(c, i);
	return 0;
}

/* ------------------------------------------------------- flush snapshots */

unsigned qcow_cache_snapshot(struct qcow_cache *c, uint32_t *idx)
{
	unsigned i, n = 0;

	if (!c || !c->copies)
		return 0;
	for (i = 0; i < c->nb_slots && c->nb_dirty; i++) {
		struct cache_slot *s = &c->slots[i];

		if (!s->dirty || s->state != SLOT_READY || s->flushing)
			continue;
		memcpy(c->copies + (size_t)i * c->table_size, slot_table(c, i), c->table_size);
		slot_clear_dirty(c, i);
		slot_pin(c, i);
		s->flushing = true;
		idx[n++] = i;
	}
	return n;
}

int qcow_cache_snapshot_io(struct qcow_cache *c, uint32_t idx, struct qcow_io *io)
{
	int ret = qcow_check_metadata_overlap(c->img, c->slots[idx].offset, c->table_size);

	if (ret < 0)
		return ret;
	io->op = QCOW_IO_WRITE;
	io->buf = c->copies + (size_t)idx * c->table_size;
	io->len = c->table_size;
	io->offset = c->slots[idx].offset;
	return 0;
}

void qcow_cache_snapshot_done(struct qcow_cache *c, uint32_t idx, bool written)
{
	struct cache_slot *s = &c->slots[idx];

	s->flushing = false;
	/* not written: the table still needs writing, unless it was forgotten */
	if (!written && !s->orphan && s->state == SLOT_READY && !s->dirty) {
		s->dirty = true;
		c->nb_dirty++;
	}
	qcow_cache_put(c, slot_table(c, idx));
}

unsigned qcow_cache_slots(const struct qcow_cache *c)
{
	return c ? c->nb_slots : 0;
}
