/* SPDX-License-Identifier: MIT */
/*
 * The guest-to-host map: the L1 table (whole, in memory, host byte order)
 * and the L2 tables (through the L2 cache, in on-disk byte order), and every
 * change to it: allocation for writes with copy-on-write, zeroing, discard,
 * and growing or shrinking the L1 table.
 *
 * Entries come from the file, so each one is validated when it is used:
 * reserved bits, alignment, a host offset of 0 with flags set, data inside
 * the header cluster. A bad entry marks the image corrupt
 * (qcow_signal_corruption) and fails the request; it is not rejected at
 * open, because the rest of such an image is still readable and check
 * reports the entry.
 *
 * The ordering rules of internal.h shape the code:
 *  - a new mapping is published (qcow_write_end) only after the guest data
 *    and the copy-on-write fill are written; before that the new clusters are
 *    referenced by nothing but their refcount, so a crash merely leaks them;
 *  - host clusters that lose a reference are released with
 *    qcow_free_deferred(), applied after the new tables are durable;
 *  - a table shared with a snapshot (no COPIED flag) is never modified: the
 *    L1 entry gets a private copy first.
 */
#include <stdlib.h>

#include "internal.h"

/* One L2 entry, validated and decoded. */
struct l2_info {
	enum qcow_extent_kind kind;
	uint64_t host;                /* DATA, ZERO: host cluster (0: none); COMPRESSED: byte offset */
	uint64_t clen;                /* COMPRESSED: bytes that may hold the stream */
	bool copied;
};

enum clear_mode {
	CLEAR_DEALLOC,                /* entry 0: unallocated */
	CLEAR_ZERO,                   /* zero flag, a private host cluster stays preallocated */
	CLEAR_ZERO_UNMAP,             /* zero flag, host cluster released */
};

#define ULL(x) ((unsigned long long)(x))

/* ------------------------------------------------------------ validation */

static int check_writable(struct qcow_image *img)
{
	if (img->read_only)
		return qcow_set_error(img, -EROFS, "image is opened read-only");
	if (img->incompatible_features & QCOW_INCOMPAT_CORRUPT)
		return qcow_set_error(img, -EIO, "image is marked corrupt; writes are refused");
	/* refuse before allocating anything: no write can become durable now */
	return qcow_refuse_if_failed(img);
}

int qcow_check_guest_range(struct qcow_image *img, uint64_t off, uint64_t len, const char *what)
{
	if (off > img->size || len > img->size - off)
		return qcow_set_error(img, -EINVAL,
				      "%s of %llu bytes at offset %llu is past the virtual size %llu",
				      what, ULL(len), ULL(off), ULL(img->size));
	return 0;
}

/*
 * Writable image and a range inside the disk. Every write, zero write and
 * discard (synchronous or nowait) passes here with the caller's range
 * before it changes anything, so here the persistent bitmaps get its bits,
 * as QEMU marks every request whatever it changes; a call repeated after
 * -EAGAIN or -EBUSY marks them again, which changes nothing.
 */
static int check_write(struct qcow_image *img, uint64_t off, uint64_t len, const char *what)
{
	int ret = check_writable(img);

	if (ret == 0)
		ret = qcow_check_guest_range(img, off, len, what);
	if (ret == 0)
		ret = qcow_bitmaps_mark(img, off, len);
	return ret;
}

/* Host offset of the L2 table of L1 entry l1i (0: none), or -EIO if the entry is bad. */
static int l1_lookup(struct qcow_image *img, uint64_t l1i, uint64_t *l2_offset)
{
	uint64_t e, off;

	*l2_offset = 0;
	if (l1i >= img->l1_size)
		return 0;
	e = img->l1_table[l1i];
	off = e & QCOW_L1E_OFFSET_MASK;
	if (e & QCOW_L1E_RESERVED_MASK)
		return qcow_signal_corruption(img, "L1 entry %llu (0x%llx) has reserved bits set",
					      ULL(l1i), ULL(e));
	if (off & (img->cluster_size - 1))
		return qcow_signal_corruption(img, "L1 entry %llu: L2 table offset 0x%llx is not "
					      "cluster aligned", ULL(l1i), ULL(off));
	if (!off && e)
		return qcow_signal_corruption(img, "L1 entry %llu (0x%llx) has flags but no L2 table",
					      ULL(l1i), ULL(e));
	*l2_offset = off;
	return 0;
}

/* Decode an L2 entry; returns what is wrong with it, or NULL. */
static const char *l2_parse(const struct qcow_image *img, uint64_t e, struct l2_info *info)
{
	memset(info, 0, sizeof(*info));
	if (e & QCOW_OFLAG_COMPRESSED) {
		if (e & QCOW_OFLAG_COPIED)
			return "compressed cluster with the COPIED flag";
		qcow_decode_compressed(img, e, &info->host, &info->clen);
		if (info->host < img->cluster_size)
			return "compressed data inside the header cluster";
		info->kind = QCOW_EXTENT_COMPRESSED;
		return NULL;
	}
	if (e & QCOW_L2E_RESERVED_MASK)
		return "reserved bits set";
	info->host = e & QCOW_L2E_OFFSET_MASK;
	info->copied = !!(e & QCOW_OFLAG_COPIED);
	if (info->host & (img->cluster_size - 1))
		return "host offset not cluster aligned";
	if (!info->host && info->copied)
		return "COPIED flag without a host cluster";
	if (e & QCOW_OFLAG_ZERO)
		info->kind = QCOW_EXTENT_ZERO;
	else
		info->kind = info->host ? QCOW_EXTENT_DATA : QCOW_EXTENT_UNALLOCATED;
	return NULL;
}

/* Decode entry l2i of table, the one of guest cluster gc; bad entries are corruption. */
static int l2_get(struct qcow_image *img, const uint64_t *table, uint64_t l2i, uint64_t gc,
		  struct l2_info *info)
{
	uint64_t e = be64toh(table[l2i]);
	const char *why = l2_parse(img, e, info);

	if (why)
		return qcow_signal_corruption(img, "L2 entry of guest offset 0x%llx (0x%llx): %s",
					      ULL(gc << img->cluster_bits), ULL(e), why);
	return 0;
}

/* ------------------------------------------------------------- L1 table */

static void l1_mark_dirty(struct qcow_image *img, uint64_t l1i)
{
	img->l1_dirty[l1i] = 1;
	img->l1_any_dirty = true;
}

int qcow_l1_init(struct qcow_image *img)
{
	uint64_t need = qcow_l1_entries_for(img, img->size);
	uint64_t bytes = (uint64_t)img->l1_size * sizeof(uint64_t), i;
	int ret;

	if (bytes > QCOW_MAX_L1_BYTES)
		return qcow_set_error(img, -EFBIG, "L1 table of %u entries is larger than %llu bytes",
				      img->l1_size, ULL(QCOW_MAX_L1_BYTES));
	if (img->l1_size < need)
		return qcow_set_error(img, -EINVAL, "L1 table has %u entries, the virtual size "
				      "needs %llu", img->l1_size, ULL(need));
	if (img->l1_size && (img->l1_table_offset < img->cluster_size ||
			     (img->l1_table_offset & (img->cluster_size - 1)) ||
			     img->l1_table_offset > QCOW_MAX_HOST_OFFSET - bytes))
		return qcow_set_error(img, -EINVAL, "invalid L1 table offset 0x%llx",
				      ULL(img->l1_table_offset));
	img->l1_table = calloc(img->l1_size ? img->l1_size : 1, sizeof(uint64_t));
	img->l1_dirty = calloc(img->l1_size ? img->l1_size : 1, 1);
	img->l1_any_dirty = false;
	if (!img->l1_table || !img->l1_dirty) {
		qcow_l1_free(img);
		return qcow_set_error(img, -ENOMEM, "no memory for the L1 table");
	}
	ret = bytes ? qcow_pread(img, img->l1_table, bytes, img->l1_table_offset) : 0;
	if (ret < 0) {
		qcow_l1_free(img);
		return ret;
	}
	for (i = 0; i < img->l1_size; i++)
		img->l1_table[i] = be64toh(img->l1_table[i]);
	return 0;
}

void qcow_l1_free(struct qcow_image *img)
{
	free(img->l1_table);
	free(img->l1_dirty);
	img->l1_table = NULL;
	img->l1_dirty = NULL;
	img->l1_any_dirty = false;
}

#define L1_PER_SECTOR 64U             /* entries in one 512-byte sector */
#define L1_WRITE_SECTORS 8U           /* sectors per write: a 4 KiB stack buffer */

/* Write a whole L1 table (host order) to len bytes at off, zero padded. */
static int l1_write_new(struct qcow_image *img, const uint64_t *table, uint64_t entries,
			uint64_t off, uint64_t len)
{
	uint64_t buf[L1_PER_SECTOR * L1_WRITE_SECTORS], pos, n, i;
	int ret;

	for (pos = 0; pos < len; pos += n * sizeof(uint64_t)) {
		n = QCOW_MIN((uint64_t)(sizeof(buf) / sizeof(buf[0])), (len - pos) / sizeof(uint64_t));
		for (i = 0; i < n; i++) {
			uint64_t idx = pos / sizeof(uint64_t) + i;

			buf[i] = idx < entries ? htobe64(table[idx]) : 0;
		}
		ret = qcow_pwrite(img, buf, n * sizeof(uint64_t), off + pos);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Drop one reference to host bytes [off, off+len) once the metadata that
 * stopped using them is durable. Failing only leaks the clusters. */
static void release(struct qcow_image *img, uint64_t off, uint64_t len)
{
	int ret = qcow_free_deferred(img, off, len);

	if (ret < 0)
		qcow_set_error(img, ret, "leaking host clusters at 0x%llx: %s", ULL(off),
			       strerror(-ret));
}

/*
 * Install a new, larger L1 table (already written and durable at off). On
 * failure before the header is written nothing changes and the caller
 * releases the new table; once the header is written the switch stands
 * (*committed), even if the final fsync fails, and the old table leaks.
 */
static int l1_switch(struct qcow_image *img, uint64_t *table, uint8_t *dirty,
		     uint64_t entries, uint64_t off, bool *committed)
{
	uint64_t *old_table = img->l1_table, old_off = img->l1_table_offset;
	uint8_t *old_dirty = img->l1_dirty;
	uint32_t old_size = img->l1_size;
	int ret;

	img->l1_table = table;
	img->l1_dirty = dirty;
	img->l1_size = (uint32_t)entries;
	img->l1_table_offset = off;
	ret = qcow_header_write(img);
	if (ret < 0) {
		img->l1_table = old_table;
		img->l1_dirty = old_dirty;
		img->l1_size = old_size;
		img->l1_table_offset = old_off;
		return ret;
	}
	*committed = true;
	free(old_table);
	free(old_dirty);
	ret = qcow_fsync(img);
	if (ret == 0 && old_off && old_size)
		release(img, old_off, (uint64_t)old_size * sizeof(uint64_t));
	return ret;
}

int qcow_l1_grow(struct qcow_image *img, uint64_t new_size)
{
	uint64_t need = qcow_l1_entries_for(img, new_size), bytes;
	uint64_t *table;
	uint8_t *dirty;
	bool committed = false;
	int64_t off;
	int ret;

	if (need <= img->l1_size)
		return 0;
	if (need > QCOW_MAX_L1_BYTES / sizeof(uint64_t))
		return qcow_set_error(img, -EFBIG, "size %llu needs an L1 table larger than %llu bytes",
				      ULL(new_size), ULL(QCOW_MAX_L1_BYTES));
	/* every L2 table the copied entries point at must be durable first */
	ret = qcow_flush(img);
	if (ret < 0)
		return ret;
	bytes = QCOW_ALIGN_UP(need * sizeof(uint64_t), img->cluster_size);
	table = calloc(need, sizeof(uint64_t));
	dirty = calloc(need, 1);
	if (!table || !dirty) {
		ret = qcow_set_error(img, -ENOMEM, "no memory for a new L1 table");
		goto fail;
	}
	memcpy(table, img->l1_table, (size_t)img->l1_size * sizeof(uint64_t));
	off = qcow_alloc_clusters(img, bytes >> img->cluster_bits);
	if (off < 0) {
		ret = (int)off;
		goto fail;
	}
	/* table and its refcounts durable before the header points at it */
	ret = l1_write_new(img, table, need, (uint64_t)off, bytes);
	if (ret == 0)
		ret = qcow_prepare_l2_writeback(img);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret == 0)
		ret = l1_switch(img, table, dirty, need, (uint64_t)off, &committed);
	if (committed)
		return ret;
	release(img, (uint64_t)off, bytes);
fail:
	free(table);
	free(dirty);
	return ret;
}

int qcow_range_has_allocation(struct qcow_image *img, uint64_t from, bool *allocated)
{
	uint64_t first = QCOW_DIV_ROUND_UP(from, img->cluster_size);
	uint64_t l1i = first >> img->l2_bits, i, *table;
	int ret;

	*allocated = false;
	for (; l1i < img->l1_size && !*allocated; l1i++) {
		uint64_t e = img->l1_table[l1i], off = e & QCOW_L1E_OFFSET_MASK;

		if (!e)
			continue;
		/* a bad entry may hide anything: count it as allocated */
		if (!off || (e & QCOW_L1E_RESERVED_MASK) || (off & (img->cluster_size - 1))) {
			*allocated = true;
			break;
		}
		ret = qcow_cache_get(img->l2_cache, off, (void **)&table);
		if (ret < 0)
			return ret;
		i = (l1i == first >> img->l2_bits) ? first & (img->l2_size - 1) : 0;
		for (; i < img->l2_size; i++) {
			/* only a plain zero flag leaves nothing behind */
			if (be64toh(table[i]) & ~QCOW_OFLAG_ZERO) {
				*allocated = true;
				break;
			}
		}
		qcow_cache_put(img->l2_cache, table);
	}
	return 0;
}

int qcow_l1_shrink(struct qcow_image *img, uint64_t new_size)
{
	uint64_t i = qcow_l1_entries_for(img, new_size);

	for (; i < img->l1_size; i++) {
		uint64_t e = img->l1_table[i], off = e & QCOW_L1E_OFFSET_MASK;

		if (!e)
			continue;
		img->l1_table[i] = 0;
		l1_mark_dirty(img, i);
		/* a malformed entry is dropped without touching refcounts */
		if (!off || (e & QCOW_L1E_RESERVED_MASK) || (off & (img->cluster_size - 1)))
			continue;
		qcow_cache_forget(img->l2_cache, off);
		release(img, off, img->cluster_size);
	}
	return 0;
}

/* ------------------------------------------------------------- mapping */

/* Describe the run of same-kind clusters at off (max bytes, inside the table). */
static int map_run(struct qcow_image *img, const uint64_t *table, uint64_t off, uint64_t max,
		   struct qcow_extent *ext)
{
	uint64_t cs = img->cluster_size, in = off & (cs - 1);
	uint64_t l2i = qcow_offset_to_l2_index(img, off);
	uint64_t n = QCOW_DIV_ROUND_UP(in + max, cs), i;
	struct l2_info first, next;
	int ret;

	ret = l2_get(img, table, l2i, off >> img->cluster_bits, &first);
	if (ret < 0)
		return ret;
	ext->kind = first.kind;
	if (first.kind == QCOW_EXTENT_COMPRESSED) {
		ext->compressed_offset = first.host;
		ext->compressed_length = first.clen;
		ext->length = QCOW_MIN(max, cs - in);
		return 0;
	}
	/* a bad entry ends the run; it is reported when a request starts there */
	for (i = 1; i < n; i++) {
		if (l2_parse(img, be64toh(table[l2i + i]), &next) || next.kind != first.kind)
			break;
		/* data, and zeros with a cluster kept (preallocated), run on
		 * while the host clusters follow each other, as qemu-img map
		 * reports them; zeros without one never join those */
		if ((first.host || next.host) && next.host != first.host + i * cs)
			break;
	}
	ext->length = QCOW_MIN(max, i * cs - in);
	if (first.host)
		ext->host_offset = first.host + in;
	return 0;
}

static int map_common(struct qcow_image *img, uint64_t off, uint64_t len,
		      struct qcow_extent *ext, struct qcow_meta_read *need)
{
	uint64_t l2_offset, max, *table;
	uint64_t in_table = img->l2_size - qcow_offset_to_l2_index(img, off);
	int ret;

	/* a check open of such an image shows its header, never its data */
	if (img->unservable)
		return qcow_set_error(img, -ENOTSUP, "unsupported feature: %s", img->unservable);
	if (!len || off >= img->size)
		return qcow_set_error(img, -EINVAL, "map of %llu bytes at offset %llu: outside the "
				      "virtual size %llu", ULL(len), ULL(off), ULL(img->size));
	max = QCOW_MIN(len, img->size - off);
	if (img->raw)
		return qcow_raw_map(img, off, max, ext);
	max = QCOW_MIN(max, (in_table << img->cluster_bits) - (off & (img->cluster_size - 1)));
	ret = l1_lookup(img, qcow_offset_to_l1_index(img, off), &l2_offset);
	if (ret < 0)
		return ret;
	memset(ext, 0, sizeof(*ext));
	ext->guest_offset = off;
	ext->kind = QCOW_EXTENT_UNALLOCATED;
	ext->length = max;
	if (l2_offset) {
		if (need)
			ret = qcow_cache_get_nowait(img->l2_cache, l2_offset, (void **)&table, need);
		else
			ret = qcow_cache_get(img->l2_cache, l2_offset, (void **)&table);
		if (ret < 0)
			return ret;
		ret = map_run(img, table, off, max, ext);
		qcow_cache_put(img->l2_cache, table);
	}
	if (ret == 0 && ext->kind == QCOW_EXTENT_UNALLOCATED && img->backing)
		ret = qcow_backing_map(img, ext, need);
	return ret;
}

int qcow_map_layer(struct qcow_image *img, uint64_t off, uint64_t len,
		   struct qcow_extent *ext, struct qcow_meta_read *need)
{
	return map_common(img, off, len, ext, need);
}

int qcow_map(struct qcow_image *img, uint64_t off, uint64_t len, struct qcow_extent *ext)
{
	return map_common(img, off, len, ext, NULL);
}

int qcow_map_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
		    struct qcow_extent *ext, struct qcow_meta_read *need)
{
	if (!need)
		return qcow_set_error(img, -EINVAL, "qcow_map_nowait needs a qcow_meta_read");
	return map_common(img, off, len, ext, need);
}

int qcow_meta_read_done(struct qcow_image *img, const struct qcow_meta_read *done, int result)
{
	struct qcow_image *layer = done ? qcow_layer(img, done->depth) : img;

	if (!layer)
		return qcow_set_error(img, -EINVAL, "metadata read completion of no layer");
	img = layer;
	if (done && done->cache == QCOW_TABLE_REFCOUNT)
		return qcow_cache_load_done(img->refcount_cache, done, result);
	if (done && done->cache != QCOW_TABLE_L2)
		return qcow_set_error(img, -EINVAL, "metadata read completion of no cache");
	return qcow_cache_load_done(img->l2_cache, done, result);
}

/* ------------------------------------------------- in-flight allocations */

/* Clusters at the start of [first, first+nb) that no in-flight allocation touches. */
static uint64_t inflight_free_prefix(const struct qcow_image *img, uint64_t first, uint64_t nb)
{
	unsigned i;

	for (i = 0; i < img->nr_inflight; i++) {
		const struct qcow_inflight *f = &img->inflight[img->inflight_live[i]];

		if (f->first_cluster <= first && first < f->first_cluster + f->nb_clusters)
			return 0;
		if (f->first_cluster > first && f->first_cluster < first + nb)
			nb = f->first_cluster - first;
	}
	return nb;
}

static int inflight_reserve(struct qcow_image *img, uint64_t first, uint64_t nb)
{
	struct qcow_inflight *f;
	unsigned i;

	for (i = 0; i < QCOW_MAX_INFLIGHT && img->inflight[i].used; i++)
		;
	if (i == QCOW_MAX_INFLIGHT)
		return qcow_busy(img, QCOW_WAIT_WRITE, "%u cluster allocations in flight already",
				 QCOW_MAX_INFLIGHT);
	f = &img->inflight[i];
	f->first_cluster = first;
	f->nb_clusters = nb;
	f->used = true;
	f->live_at = (uint16_t)img->nr_inflight;
	img->inflight_live[img->nr_inflight++] = (uint16_t)i;
	return (int)i;
}

static void inflight_drop(struct qcow_image *img, unsigned slot)
{
	struct qcow_inflight *f = &img->inflight[slot];
	uint16_t last = img->inflight_live[--img->nr_inflight];

	img->inflight_live[f->live_at] = last;
	img->inflight[last].live_at = f->live_at;
	f->used = false;
}

static struct qcow_inflight *inflight_of_plan(struct qcow_image *img,
					      const struct qcow_write_plan *plan)
{
	struct qcow_inflight *f;

	if (plan->inflight_slot >= QCOW_MAX_INFLIGHT)
		return NULL;
	f = &img->inflight[plan->inflight_slot];
	if (!f->used || f->first_cluster != plan->first_cluster ||
	    f->nb_clusters != plan->nb_clusters)
		return NULL;
	return f;
}

static int busy(struct qcow_image *img, uint64_t first)
{
	return qcow_busy(img, QCOW_WAIT_WRITE, "guest offset 0x%llx: cluster allocation in flight",
			 ULL(first << img->cluster_bits));
}

/* ------------------------------------------------- L2 tables for writing */

/* Give L1 entry l1i a table of its own: empty, or a copy of the shared one at old. */
static int l2_table_new(struct qcow_image *img, uint64_t l1i, uint64_t old, uint64_t **table)
{
	struct qcow_cache *c = img->l2_cache;
	void *src;
	int64_t off;
	int ret;

	/*
	 * The shared table first, pinned, so that claiming the new table's
	 * slot cannot evict it: an async caller has just loaded it, and with
	 * every other slot loading, evicting it here would make the caller
	 * load it again, and again (a livelock under cache pressure).
	 */
	if (old) {
		ret = qcow_cache_pin(c, old, &src);
		if (ret < 0)
			return ret;
	}
	off = qcow_alloc_clusters(img, 1);
	if (old && off >= 0 && (uint64_t)off == old) {
		/* old had refcount 0: the allocation gave it the 1 its L1 entry
		 * needs; keep that, and let the next write unshare it for real */
		qcow_cache_put(c, src);
		return qcow_set_error(img, -EIO, "L2 table at 0x%llx had refcount 0 (repair "
				      "with: qcow-tool check -r all)", ULL(old));
	}
	ret = off < 0 ? (int)off : qcow_cache_get_empty(c, (uint64_t)off, (void **)table);
	if (ret == 0 && old)
		memcpy(*table, src, img->cluster_size);
	if (old)
		qcow_cache_put(c, src);
	if (ret < 0) {
		if (off >= 0) {
			qcow_cache_forget(c, (uint64_t)off);
			release(img, (uint64_t)off, img->cluster_size);
		}
		return ret;
	}
	img->l1_table[l1i] = (uint64_t)off | QCOW_OFLAG_COPIED;
	l1_mark_dirty(img, l1i);
	if (old) {
		/* the snapshot keeps the old table; our cached copy must not outlive
		 * its last reference */
		qcow_cache_forget(c, old);
		release(img, old, img->cluster_size);
	}
	return 0;
}

/* Pin the L2 table of L1 entry l1i for modification, creating or unsharing it. */
static int l2_get_writable(struct qcow_image *img, uint64_t l1i, uint64_t **table)
{
	uint64_t off;
	int ret;

	if (l1i >= img->l1_size)
		return qcow_set_error(img, -EIO, "L1 index %llu past the L1 table (%u entries)",
				      ULL(l1i), img->l1_size);
	ret = l1_lookup(img, l1i, &off);
	if (ret < 0)
		return ret;
	if (off && (img->l1_table[l1i] & QCOW_OFLAG_COPIED))
		return qcow_cache_pin(img->l2_cache, off, (void **)table);
	return l2_table_new(img, l1i, off, table);
}

/* ------------------------------------------------------- copy-on-write */

/* Part p: len bytes at byte in of guest cluster guest and of new host cluster dst. */
static void cow_part_set(struct qcow_cow_part *p, enum qcow_cow_kind kind,
			 const struct l2_info *old, uint64_t guest, uint64_t dst, uint64_t in,
			 uint64_t len)
{
	p->kind = (uint8_t)kind;
	p->guest = guest + in;
	p->dst = dst + in;
	p->len = len;
	p->src = kind == QCOW_COW_COPY ? old->host + in : kind == QCOW_COW_INFLATE ? old->host : 0;
	/* BACKING: the chain's bytes at p->guest; nothing to say about src */
	p->src_len = kind == QCOW_COW_INFLATE ? old->clen : 0;
}

/*
 * What the new host cluster dst of guest cluster gc needs besides the guest
 * bytes [skip_start, skip_end): the old contents before them (plan->cow[0])
 * and after them (plan->cow[1]). An unallocated cluster of an image with a
 * backing file keeps the chain's bytes. Old contents that read as zeros
 * (zero clusters, unallocated ones with no backing file) are not copied:
 * nothing at all where the file reads as zeros already (at or past
 * zero_from), else zeros.
 */
static int cow_plan_cluster(struct qcow_image *img, const uint64_t *table, uint64_t gc,
			    uint64_t dst, uint64_t skip_start, uint64_t skip_end,
			    struct qcow_write_plan *plan)
{
	uint64_t cs = img->cluster_size, guest = gc << img->cluster_bits;
	enum qcow_cow_kind kind;
	struct l2_info old;
	int ret;

	if (skip_start == 0 && skip_end == cs)
		return 0;
	ret = l2_get(img, table, gc & (img->l2_size - 1), gc, &old);
	if (ret < 0)
		return ret;
	if (old.kind == QCOW_EXTENT_DATA)
		kind = QCOW_COW_COPY;
	else if (old.kind == QCOW_EXTENT_COMPRESSED)
		kind = QCOW_COW_INFLATE;
	else if (old.kind == QCOW_EXTENT_UNALLOCATED && img->backing)
		kind = QCOW_COW_BACKING;
	else
		kind = dst >= img->zero_from ? QCOW_COW_NONE : QCOW_COW_ZEROS;
	if (kind >= QCOW_COW_COPY)
		img->cow_copies++;
	if (skip_start)
		cow_part_set(&plan->cow[0], kind, &old, guest, dst, 0, skip_start);
	if (skip_end < cs)
		cow_part_set(&plan->cow[1], kind, &old, guest, dst, skip_end, cs - skip_end);
	return 0;
}

/* Plan what the guest write [off, end) leaves of the n new clusters at dst. */
static int cow_plan(struct qcow_image *img, const uint64_t *table, uint64_t off, uint64_t end,
		    uint64_t n, uint64_t dst, struct qcow_write_plan *plan)
{
	uint64_t cs = img->cluster_size, first = off >> img->cluster_bits;
	uint64_t last = first + n - 1;
	uint64_t head = off & (cs - 1), tail = end - (last << img->cluster_bits);
	int ret;

	if (n == 1)
		return cow_plan_cluster(img, table, first, dst, head, tail, plan);
	ret = cow_plan_cluster(img, table, first, dst, head, cs, plan);
	if (ret == 0)
		ret = cow_plan_cluster(img, table, last, dst + (n - 1) * cs, 0, tail, plan);
	return ret;
}

int qcow_cow_read(struct qcow_image *img, const struct qcow_cow_part *p, void *buf)
{
	struct qcow_extent ext = { .kind = QCOW_EXTENT_COMPRESSED };
	int ret;

	switch (p->kind) {
	case QCOW_COW_COPY:
		return qcow_pread(img, buf, p->len, p->src);
	case QCOW_COW_INFLATE:
		ext.guest_offset = p->guest;
		ext.compressed_offset = p->src;
		ext.compressed_length = p->src_len;
		ret = qcow_read_compressed_cluster(img, &ext, img->decompressed);
		if (ret == 0)
			memcpy(buf, img->decompressed + (p->dst & (img->cluster_size - 1)), p->len);
		return ret;
	case QCOW_COW_ZEROS:
		memset(buf, 0, p->len);
		return 0;
	case QCOW_COW_BACKING:
		return qcow_backing_read(img, buf, p->guest, p->len);
	default:
		return 0;
	}
}

/* The synchronous caller's copy-on-write: the plan's parts, read and written here. */
static int cow_write(struct qcow_image *img, const struct qcow_write_plan *plan)
{
	unsigned i;
	int ret = 0;

	for (i = 0; i < 2 && ret == 0; i++) {
		const struct qcow_cow_part *p = &plan->cow[i];

		if (p->kind == QCOW_COW_NONE)
			continue;
		if (p->kind == QCOW_COW_ZEROS) {
			ret = qcow_pwrite(img, img->zero_cluster, p->len, p->dst);
			continue;
		}
		ret = qcow_cow_read(img, p, img->cow_buf);
		if (ret == 0)
			ret = qcow_pwrite(img, img->cow_buf, p->len, p->dst);
	}
	return ret;
}

/* ------------------------------------------------------------- writes */

static void plan_set(struct qcow_write_plan *plan, uint64_t off, uint64_t len, uint64_t host,
		     uint64_t first, uint64_t nb)
{
	plan->guest_offset = off;
	plan->length = len;
	plan->host_offset = host;
	plan->first_cluster = first;
	plan->nb_clusters = nb;
	plan->new_host_cluster = 0;
	plan->inflight_slot = UINT32_MAX;
	plan->fresh = false;
	plan->cow[0].kind = plan->cow[1].kind = QCOW_COW_NONE;
}

/* The run starting at a COPIED data cluster: written where it is. */
static int plan_in_place(struct qcow_image *img, const uint64_t *table, uint64_t off,
			 uint64_t len, uint64_t nb, const struct l2_info *first,
			 struct qcow_write_plan *plan)
{
	uint64_t cs = img->cluster_size, in = off & (cs - 1);
	uint64_t l2i = qcow_offset_to_l2_index(img, off), i;
	struct l2_info next;
	int ret;

	for (i = 1; i < nb; i++) {
		if (l2_parse(img, be64toh(table[l2i + i]), &next) ||
		    next.kind != QCOW_EXTENT_DATA || !next.copied || next.host != first->host + i * cs)
			break;
	}
	plan_set(plan, off, QCOW_MIN(len, i * cs - in), first->host + in,
		 off >> img->cluster_bits, i);
	ret = qcow_check_metadata_overlap(img, plan->host_offset, plan->length);
	if (ret == 0)
		qcow_note_write(img, plan->host_offset, plan->length);
	return ret;
}

/* The run of clusters that need new host clusters: allocate, fill around. */
static int plan_alloc(struct qcow_image *img, const uint64_t *table, uint64_t off,
		      uint64_t len, uint64_t nb, struct qcow_write_plan *plan)
{
	uint64_t cs = img->cluster_size, first = off >> img->cluster_bits;
	uint64_t l2i = qcow_offset_to_l2_index(img, off), n, end;
	struct l2_info next;
	int64_t host;
	int slot, ret;

	for (n = 1; n < nb; n++) {
		if (l2_parse(img, be64toh(table[l2i + n]), &next) ||
		    (next.kind == QCOW_EXTENT_DATA && next.copied))
			break;
	}
	slot = inflight_reserve(img, first, n);
	if (slot < 0)
		return slot;
	host = qcow_alloc_clusters(img, n);
	if (host < 0) {
		inflight_drop(img, (unsigned)slot);
		return (int)host;
	}
	end = QCOW_MIN(off + len, (first + n) << img->cluster_bits);
	plan_set(plan, off, end - off, (uint64_t)host + (off & (cs - 1)), first, n);
	ret = qcow_check_metadata_overlap(img, (uint64_t)host, n * cs);
	if (ret == 0)
		ret = cow_plan(img, table, off, end, n, (uint64_t)host, plan);
	if (ret < 0) {
		release(img, (uint64_t)host, n * cs);
		inflight_drop(img, (unsigned)slot);
		return ret;
	}
	qcow_sync_owed(img, QCOW_SYNC_DATA);
	qcow_grow_for(img, (uint64_t)host + n * cs);
	plan->fresh = (uint64_t)host >= img->zero_from;
	qcow_note_write(img, (uint64_t)host, n * cs);
	plan->new_host_cluster = (uint64_t)host;
	plan->inflight_slot = (uint32_t)slot;
	img->inflight[slot].table = (uint64_t *)table;	/* write_begin's pin, kept */
	return 0;
}

/* Clusters of [off, off+len) inside the L2 table of off. */
static uint64_t clusters_in_table(const struct qcow_image *img, uint64_t off, uint64_t len)
{
	uint64_t first = off >> img->cluster_bits;
	uint64_t last = (off + len - 1) >> img->cluster_bits;
	uint64_t table_left = img->l2_size - (first & (img->l2_size - 1));

	return QCOW_MIN(last - first + 1, table_left);
}

static int write_begin(struct qcow_image *img, uint64_t off, uint64_t len,
		       struct qcow_write_plan *plan)
{
	uint64_t first = off >> img->cluster_bits, nb, *table;
	struct l2_info info;
	int ret;

	ret = check_write(img, off, len, "write");
	if (ret < 0)
		return ret;
	if (!len)
		return qcow_set_error(img, -EINVAL, "empty write at offset %llu", ULL(off));
	nb = inflight_free_prefix(img, first, clusters_in_table(img, off, len));
	if (!nb)
		return busy(img, first);
	ret = l2_get_writable(img, qcow_offset_to_l1_index(img, off), &table);
	if (ret < 0)
		return ret;
	ret = l2_get(img, table, qcow_offset_to_l2_index(img, off), first, &info);
	if (ret == 0 && info.kind == QCOW_EXTENT_DATA && info.copied)
		ret = plan_in_place(img, table, off, len, nb, &info, plan);
	else if (ret == 0)
		ret = plan_alloc(img, table, off, len, nb, plan);
	/* an allocation keeps the table pinned for its publication */
	if (ret < 0 || !plan->new_host_cluster)
		qcow_cache_put(img->l2_cache, table);
	return ret;
}

/* A nowait call begins: the table reads it cannot do go to need (qcow_cache_pin). */
static int nowait_enter(struct qcow_image *img, struct qcow_meta_read *need, const char *fn)
{
	if (!need)
		return qcow_set_error(img, -EINVAL, "%s needs a qcow_meta_read", fn);
	img->need = need;
	img->rc_load_left = true;
	return 0;
}

static int nowait_leave(struct qcow_image *img, int ret)
{
	img->need = NULL;
	img->rc_load_left = false;
	return ret;
}

int qcow_write_begin_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			    struct qcow_write_plan *plan, struct qcow_meta_read *need)
{
	int ret = nowait_enter(img, need, __func__);

	return ret < 0 ? ret : nowait_leave(img, write_begin(img, off, len, plan));
}

int qcow_write_begin(struct qcow_image *img, uint64_t off, uint64_t len,
		     struct qcow_write_plan *plan)
{
	int ret = write_begin(img, off, len, plan);

	if (ret == 0 && plan->new_host_cluster) {
		ret = cow_write(img, plan);
		if (ret < 0)
			qcow_write_end(img, plan, ret);
		plan->cow[0].kind = plan->cow[1].kind = QCOW_COW_NONE;
	}
	return ret;
}

/* Point the planned clusters at their new host clusters, releasing the old ones. */
static void publish(struct qcow_image *img, uint64_t *table, const struct qcow_write_plan *plan)
{
	uint64_t l2i = plan->first_cluster & (img->l2_size - 1), i;
	struct l2_info old;

	for (i = 0; i < plan->nb_clusters; i++) {
		/* validated at write_begin; a malformed entry is leaked, never freed */
		bool bad = l2_parse(img, be64toh(table[l2i + i]), &old) != NULL;

		table[l2i + i] = htobe64((plan->new_host_cluster + i * img->cluster_size) |
					 QCOW_OFLAG_COPIED);
		if (bad)
			continue;
		if (old.kind == QCOW_EXTENT_COMPRESSED)
			release(img, old.host, old.clen);
		else if (old.host)
			release(img, old.host, img->cluster_size);
	}
	qcow_cache_mark_dirty(img->l2_cache, table);
}

int qcow_write_end(struct qcow_image *img, struct qcow_write_plan *plan, int result)
{
	struct qcow_inflight *f;

	if (!plan->new_host_cluster) {
		if (result == 0)
			qcow_sync_owed(img, QCOW_SYNC_DATA);
		return result;
	}
	f = inflight_of_plan(img, plan);
	if (!f)
		return qcow_set_error(img, -EINVAL, "write completion for an unknown allocation");
	if (result == 0) {
		publish(img, f->table, plan);
		qcow_sync_owed(img, QCOW_SYNC_DATA);
	} else {
		release(img, plan->new_host_cluster, plan->nb_clusters * img->cluster_size);
	}
	qcow_cache_put(img->l2_cache, f->table);
	f->table = NULL;
	inflight_drop(img, plan->inflight_slot);
	plan->new_host_cluster = 0;
	return result;
}

/* ------------------------------------------------------ zero and discard */

/* Without a backing file an unallocated cluster already reads as zero, so
 * unmapping zero writes leave it alone (no L2 table gets allocated for it). */
static bool unalloc_reads_zero(const struct qcow_image *img, enum clear_mode mode)
{
	return mode == CLEAR_DEALLOC || (mode == CLEAR_ZERO_UNMAP && !img->backing);
}

/* The entry a cleared cluster gets; *drop: its old host bytes lose a reference. */
static uint64_t clear_entry(const struct qcow_image *img, enum clear_mode mode,
			    uint64_t e, const struct l2_info *old, bool *drop)
{
	*drop = old->kind == QCOW_EXTENT_COMPRESSED || old->host;
	if (mode == CLEAR_DEALLOC || (e == 0 && unalloc_reads_zero(img, mode)))
		return 0;
	if (mode == CLEAR_ZERO && old->kind != QCOW_EXTENT_COMPRESSED && old->host &&
	    old->copied) {
		*drop = false;
		return old->host | QCOW_OFLAG_COPIED | QCOW_OFLAG_ZERO;
	}
	return QCOW_OFLAG_ZERO;
}

/* Validate the entries of [first, first+nb) and tell whether any would change. */
static int clear_scan(struct qcow_image *img, const uint64_t *table, uint64_t first,
		      uint64_t nb, enum clear_mode mode, bool *changes)
{
	uint64_t l2i = first & (img->l2_size - 1), i;
	struct l2_info old;
	bool drop;
	int ret;

	*changes = false;
	for (i = 0; i < nb; i++) {
		ret = l2_get(img, table, l2i + i, first + i, &old);
		if (ret < 0)
			return ret;
		if (clear_entry(img, mode, be64toh(table[l2i + i]), &old, &drop) !=
		    be64toh(table[l2i + i]))
			*changes = true;
	}
	return 0;
}

static void clear_apply(struct qcow_image *img, uint64_t *table, uint64_t first, uint64_t nb,
			enum clear_mode mode)
{
	uint64_t l2i = first & (img->l2_size - 1), i, e, ne;
	struct l2_info old;
	bool drop, changed = false;

	for (i = 0; i < nb; i++) {
		e = be64toh(table[l2i + i]);
		if (l2_parse(img, e, &old))
			continue;
		ne = clear_entry(img, mode, e, &old, &drop);
		if (ne == e)
			continue;
		table[l2i + i] = htobe64(ne);
		changed = true;
		if (drop && old.kind == QCOW_EXTENT_COMPRESSED)
			release(img, old.host, old.clen);
		else if (drop)
			release(img, old.host, img->cluster_size);
	}
	if (changed)
		qcow_cache_mark_dirty(img->l2_cache, table);
}

/* Clear nb whole clusters from guest cluster first, all in one L2 table. */
static int clear_in_table(struct qcow_image *img, uint64_t first, uint64_t nb,
			  enum clear_mode mode)
{
	uint64_t l1i = first >> img->l2_bits, l2_offset, *table;
	bool changes = true;
	int ret;

	if (inflight_free_prefix(img, first, nb) < nb)
		return busy(img, first);
	ret = l1_lookup(img, l1i, &l2_offset);
	if (ret < 0)
		return ret;
	if (!l2_offset && unalloc_reads_zero(img, mode))
		return 0;
	if (l2_offset) {
		/* look first: unsharing or allocating a table for no change is waste */
		ret = qcow_cache_pin(img->l2_cache, l2_offset, (void **)&table);
		if (ret < 0)
			return ret;
		ret = clear_scan(img, table, first, nb, mode, &changes);
		qcow_cache_put(img->l2_cache, table);
		if (ret < 0 || !changes)
			return ret;
	}
	ret = l2_get_writable(img, l1i, &table);
	if (ret < 0)
		return ret;
	clear_apply(img, table, first, nb, mode);
	qcow_cache_put(img->l2_cache, table);
	return 0;
}

static int clear_clusters(struct qcow_image *img, uint64_t first, uint64_t end,
			  enum clear_mode mode)
{
	uint64_t nb;
	int ret;

	while (first < end) {
		nb = QCOW_MIN(end - first, img->l2_size - (first & (img->l2_size - 1)));
		ret = clear_in_table(img, first, nb, mode);
		if (ret < 0)
			return ret;
		first += nb;
	}
	return 0;
}

/* Whole clusters of [off, end): a cluster cut by the end of the disk counts
 * as whole when the range reaches the end. */
static void whole_clusters(const struct qcow_image *img, uint64_t off, uint64_t end,
			   uint64_t *first, uint64_t *last_end)
{
	*first = QCOW_DIV_ROUND_UP(off, img->cluster_size);
	if (end == img->size)
		*last_end = QCOW_DIV_ROUND_UP(end, img->cluster_size);
	else
		*last_end = end >> img->cluster_bits;
}

uint64_t qcow_clear_piece(const struct qcow_image *img, uint64_t off, uint64_t len,
			  bool *partial)
{
	uint64_t cs = img->cluster_size, end = off + len, first, last_end, span;

	whole_clusters(img, off, end, &first, &last_end);
	/* no entry can say "zero" in a v2 image over a backing file (and none
	 * may let the base show through): every cluster goes as a partial one */
	*partial = first >= last_end || off < (first << img->cluster_bits) ||
		   off >= (last_end << img->cluster_bits) || (img->version < 3 && img->backing);
	if (*partial)
		return QCOW_MIN(end, QCOW_ALIGN_DOWN(off, cs) + cs) - off;
	span = cs << img->l2_bits;
	return QCOW_MIN(QCOW_MIN(end, last_end << img->cluster_bits),
			QCOW_ALIGN_DOWN(off, span) + span) - off;
}

/* Must the partial piece [off, off+len) get explicit zeros (1), or does it
 * read as zeros already (0)? */
static int partial_needs_zeros(struct qcow_image *img, uint64_t off, uint64_t len)
{
	struct qcow_extent ext;
	int ret = map_common(img, off, len, &ext, img->need);

	if (ret < 0)
		return ret;
	return ext.kind != QCOW_EXTENT_ZERO && ext.kind != QCOW_EXTENT_UNALLOCATED;
}

static enum clear_mode zero_mode(const struct qcow_image *img, unsigned flags)
{
	/* v2 has no zero flag; without a backing file unallocated reads as zero
	 * (with one, qcow_clear_piece has every cluster zeroed by its data) */
	if (img->version < 3)
		return CLEAR_DEALLOC;
	return (flags & QCOW_ZERO_MAY_UNMAP) ? CLEAR_ZERO_UNMAP : CLEAR_ZERO;
}

/* A discard must not let a backing file's bytes show again: over a backing
 * file it zeroes (v3), or leaves the clusters as they are (v2, where
 * qcow_clear_piece makes every cluster a partial one: the data is kept,
 * which a discard may do). */
static enum clear_mode discard_mode(const struct qcow_image *img)
{
	return img->backing ? CLEAR_ZERO_UNMAP : CLEAR_DEALLOC;
}

/*
 * Clear [off, off+len) piece by piece (qcow_clear_piece): whole clusters in
 * mode; partial ones get explicit zeros (written) or are left (nothing
 * written) or refused (nowait: the caller's write).
 */
enum partial_action { PARTIAL_WRITE, PARTIAL_LEAVE, PARTIAL_REFUSE };

static int clear_range(struct qcow_image *img, uint64_t off, uint64_t len,
		       enum clear_mode mode, enum partial_action action)
{
	uint64_t end = off + len, n;
	bool partial;
	int ret = 0;

	for (; off < end && ret >= 0; off += n) {
		n = qcow_clear_piece(img, off, end - off, &partial);
		if (!partial)
			ret = clear_clusters(img, off >> img->cluster_bits,
					     QCOW_DIV_ROUND_UP(off + n, img->cluster_size), mode);
		else if (action == PARTIAL_REFUSE)
			ret = qcow_set_error(img, -EINVAL, "zeroing part of the cluster at "
					     "0x%llx is the caller's write", ULL(off));
		else if (action == PARTIAL_WRITE)
			ret = partial_needs_zeros(img, off, n);
		if (ret > 0)
			ret = qcow_write(img, img->zero_cluster, off, n);
	}
	return ret < 0 ? ret : 0;
}

int qcow_write_zeroes(struct qcow_image *img, uint64_t off, uint64_t len, unsigned flags)
{
	int ret = check_write(img, off, len, "write zeroes");

	return ret < 0 ? ret : clear_range(img, off, len, zero_mode(img, flags), PARTIAL_WRITE);
}

int qcow_discard(struct qcow_image *img, uint64_t off, uint64_t len)
{
	int ret = check_write(img, off, len, "discard");

	return ret < 0 ? ret : clear_range(img, off, len, discard_mode(img), PARTIAL_LEAVE);
}

int qcow_write_compressed(struct qcow_image *img, uint64_t off, const void *stream, size_t len)
{
	uint64_t gc = off >> img->cluster_bits, l2i = gc & (img->l2_size - 1), *table, nsec;
	unsigned x = 62 - (img->cluster_bits - 8);
	struct l2_info old;
	int64_t host;
	int ret = 0;

	if ((off & (img->cluster_size - 1)) || !len || len >= img->cluster_size)
		ret = qcow_set_error(img, -EINVAL, "compressed write of %zu bytes at 0x%llx: a "
				     "cluster's stream is shorter than a cluster and starts it", len,
				     ULL(off));
	/* The whole cluster (the disk's last may be shorter) is what changes. */
	if (ret == 0)
		ret = check_write(img, off, QCOW_MIN(img->cluster_size, img->size - off),
				  "compressed write");
	if (ret == 0 && !inflight_free_prefix(img, gc, 1))
		ret = busy(img, gc);
	if (ret == 0)
		ret = l2_get_writable(img, gc >> img->l2_bits, &table);
	if (ret < 0)
		return ret;
	ret = l2_get(img, table, l2i, gc, &old);
	if (ret == 0 && old.kind != QCOW_EXTENT_UNALLOCATED &&
	    !(old.kind == QCOW_EXTENT_ZERO && !old.host))
		ret = qcow_set_error(img, -EINVAL, "guest cluster at 0x%llx is allocated: a "
				     "compressed cluster goes where there is none", ULL(off));
	host = ret < 0 ? ret : qcow_alloc_bytes(img, len);
	ret = host < 0 ? (int)host : qcow_check_metadata_overlap(img, (uint64_t)host, len);
	if (ret == 0) {
		qcow_note_write(img, (uint64_t)host, len);
		ret = qcow_pwrite(img, stream, len, (uint64_t)host);
		if (ret < 0)
			release(img, (uint64_t)host, len);
	}
	if (ret == 0) {
		/* the data first (flush step 1), then the entry that points at it */
		qcow_sync_owed(img, QCOW_SYNC_DATA);
		nsec = (((uint64_t)host + len - 1) >> 9) - ((uint64_t)host >> 9);
		table[l2i] = htobe64(QCOW_OFLAG_COMPRESSED | nsec << x | (uint64_t)host);
		qcow_cache_mark_dirty(img->l2_cache, table);
	}
	qcow_cache_put(img->l2_cache, table);
	return ret;
}

int qcow_make_empty(struct qcow_image *img)
{
	int ret = check_writable(img);

	return ret < 0 ? ret : clear_range(img, 0, img->size, CLEAR_DEALLOC, PARTIAL_LEAVE);
}

int qcow_write_zeroes_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			     unsigned flags, struct qcow_meta_read *need)
{
	int ret = nowait_enter(img, need, __func__);

	if (ret == 0)
		ret = check_write(img, off, len, "write zeroes");
	if (ret == 0)
		ret = clear_range(img, off, len, zero_mode(img, flags), PARTIAL_REFUSE);
	return nowait_leave(img, ret);
}

int qcow_discard_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			struct qcow_meta_read *need)
{
	int ret = nowait_enter(img, need, __func__);

	return ret < 0 ? ret : nowait_leave(img, qcow_discard(img, off, len));
}

int qcow_partial_zeroes_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			       struct qcow_meta_read *need)
{
	bool partial;
	int ret = nowait_enter(img, need, __func__);

	if (ret == 0)
		ret = check_write(img, off, len, "write zeroes");
	if (ret == 0 && (!len || qcow_clear_piece(img, off, len, &partial) != len || !partial))
		ret = qcow_set_error(img, -EINVAL, "0x%llx+%llu is not part of one cluster",
				     ULL(off), ULL(len));
	if (ret == 0)
		ret = partial_needs_zeros(img, off, len);
	return nowait_leave(img, ret);
}
