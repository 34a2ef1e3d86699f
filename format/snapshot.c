/* SPDX-License-Identifier: MIT */
/*
 * Internal snapshots: list, create, apply, delete, and reading one.
 *
 * Every change is one metadata transaction that ends in a single header
 * write, so that a crash at any point leaves either the old image or the
 * new one, never a mix (at worst unreferenced clusters past the old end of
 * the file).  The fixed order of every operation (doc/design.md section 15):
 *
 *   1. flush: everything the active image has is on disk, no deferred frees;
 *   2. count, over the new image (the new active L1 and every snapshot that
 *      stays or comes), how many L1/L2 paths reach each host cluster;
 *   3. write the new structures past the end of everything that exists:
 *      the new snapshot's L1 copy, the active L2 tables whose COPIED flags
 *      must change (as copies: the old tables still belong to the old
 *      image), the new active L1 table, the new snapshot table;  fsync;
 *   4. point the in-memory image at them and rebuild the refcounts from
 *      the references (check.c, 12.3): new refcount structures past
 *      everything, fsync, then ONE header write carrying the new L1, the new
 *      snapshot table, the new refcount table and the virtual size, fsync.
 *
 * Until the header write the file's header still describes the old image,
 * whose clusters nothing above touched.  After it, the old L1 and L2 copies,
 * the old snapshot table and the old refcount structures are clusters with
 * refcount 0: free space, punched out of the file (as qemu gives a deleted
 * snapshot's clusters back).  COPIED flags in the active tables are always
 * exact (set iff the refcount is 1), so qemu-img check never sees a
 * mismatch, and a shared cluster can never be written in place.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"

#define SNAP_MAX_EXTRA		1024U			/* as qemu */
#define SNAP_MAX_TABLE_BYTES	(64ULL << 20)		/* as qemu */
#define SNAP_MAX_NAME		1024U

/* One snapshot table entry: what it says, and its bytes, kept for rewriting. */
struct snap {
	struct qcow_snapshot_info info;
	uint8_t *raw;
	size_t raw_len;
};

struct snap_table {
	struct snap *v;
	uint32_t n;
};

static void table_free(struct snap_table *t)
{
	uint32_t i;

	for (i = 0; i < t->n; i++) {
		free(t->v[i].raw);
		free(t->v[i].info.id);
		free(t->v[i].info.name);
	}
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

static uint64_t be64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return be64toh(v);
}

/* ------------------------------------------------------------ reading */

static char *dup_str(const uint8_t *p, size_t len)
{
	char *s = malloc(len + 1);

	if (s) {
		memcpy(s, p, len);
		s[len] = '\0';
	}
	return s;
}

/* Validate and decode the entry at raw[0..len). */
static int snap_decode(struct qcow_image *img, struct snap *s, uint32_t i)
{
	struct qcow_snapshot_header h;
	struct qcow_snapshot_info *in = &s->info;
	uint32_t extra;
	const uint8_t *x;

	memcpy(&h, s->raw, sizeof(h));
	extra = be32toh(h.extra_data_size);
	in->l1_table_offset = be64toh(h.l1_table_offset);
	in->l1_size = be32toh(h.l1_size);
	in->date_sec = be32toh(h.date_sec);
	in->date_nsec = be32toh(h.date_nsec);
	in->vm_clock_nsec = be64toh(h.vm_clock_nsec);
	in->vm_state_size = be32toh(h.vm_state_size);
	in->disk_size = img->size;
	in->icount = UINT64_MAX;
	x = s->raw + sizeof(h);
	if (extra >= 8)
		in->vm_state_size = be64_at(x);
	if (extra >= 16)
		in->disk_size = be64_at(x + 8);
	if (extra >= 24)
		in->icount = be64_at(x + 16);
	if (in->l1_table_offset & (img->cluster_size - 1))
		return qcow_signal_corruption(img, "snapshot %u: L1 table offset 0x%" PRIx64
					      " is not cluster aligned", i, in->l1_table_offset);
	if ((uint64_t)in->l1_size * 8 > QCOW_MAX_L1_BYTES)
		return qcow_signal_corruption(img, "snapshot %u: L1 table of %u entries is too large",
					      i, in->l1_size);
	if (in->l1_size < qcow_l1_entries_for(img, in->disk_size))
		return qcow_signal_corruption(img, "snapshot %u: L1 table of %u entries cannot map "
					      "its disk size %" PRIu64, i, in->l1_size,
					      in->disk_size);
	x += extra;
	in->id = dup_str(x, be16toh(h.id_str_size));
	in->name = dup_str(x + be16toh(h.id_str_size), be16toh(h.name_size));
	return in->id && in->name ? 0 : -ENOMEM;
}

/* Read entry i at *off (advanced past it, padding included). */
static int snap_read_one(struct qcow_image *img, struct snap *s, uint32_t i, uint64_t *off,
			 uint64_t end)
{
	struct qcow_snapshot_header h;
	size_t len;
	int ret;

	if (*off + sizeof(h) > end)
		return qcow_signal_corruption(img, "snapshot table entry %u is past the table's "
					      "limit", i);
	ret = qcow_pread(img, &h, sizeof(h), *off);
	if (ret < 0)
		return ret;
	if (be32toh(h.extra_data_size) > SNAP_MAX_EXTRA)
		return qcow_signal_corruption(img, "snapshot %u: %u bytes of extra data (at most %u)",
					      i, be32toh(h.extra_data_size), SNAP_MAX_EXTRA);
	len = sizeof(h) + be32toh(h.extra_data_size) + be16toh(h.id_str_size) +
	      be16toh(h.name_size);
	len = QCOW_ALIGN_UP(len, 8);
	if (*off + len > end)
		return qcow_signal_corruption(img, "snapshot table entry %u is past the table's "
					      "limit", i);
	s->raw = malloc(len);
	if (!s->raw)
		return -ENOMEM;
	s->raw_len = len;
	ret = qcow_pread(img, s->raw, len, *off);
	if (ret < 0)
		return ret;
	*off += len;
	return snap_decode(img, s, i);
}

static int table_read(struct qcow_image *img, struct snap_table *t)
{
	uint64_t off = img->snapshots_offset, end;
	uint32_t i;
	int ret = 0;

	t->v = NULL;
	t->n = 0;
	if (!img->nb_snapshots)
		return 0;
	end = off + SNAP_MAX_TABLE_BYTES;
	t->v = calloc(img->nb_snapshots, sizeof(*t->v));
	if (!t->v)
		return -ENOMEM;
	for (i = 0; i < img->nb_snapshots && ret == 0; i++) {
		t->n = i + 1;
		ret = snap_read_one(img, &t->v[i], i, &off, end);
	}
	if (ret < 0)
		table_free(t);
	return ret;
}

/* Index of the snapshot whose id is which, else whose name is, else -ENOENT. */
static int table_find(struct qcow_image *img, const struct snap_table *t, const char *which)
{
	uint32_t i;

	for (i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].info.id, which))
			return (int)i;
	for (i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].info.name, which))
			return (int)i;
	return qcow_set_error(img, -ENOENT, "no snapshot with the id or name '%s'", which);
}

int qcow_snapshot_id_of(struct qcow_image *img, const char *which, char *id, size_t len)
{
	struct snap_table t;
	int ret = table_read(img, &t), i;

	if (ret < 0)
		return ret;
	ret = i = table_find(img, &t, which);
	if (ret >= 0 && snprintf(id, len, "%s", t.v[i].info.id) >= (int)len)
		ret = -ENAMETOOLONG;
	table_free(&t);
	return ret < 0 ? ret : 0;
}

int qcow_snapshot_list(struct qcow_image *img, struct qcow_snapshot_info **out, uint32_t *n)
{
	struct snap_table t;
	uint32_t i;
	int ret;

	*out = NULL;
	*n = 0;
	ret = table_read(img, &t);
	if (ret < 0 || !t.n)
		return ret;
	*out = calloc(t.n, sizeof(**out));
	if (!*out) {
		table_free(&t);
		return -ENOMEM;
	}
	for (i = 0; i < t.n; i++) {
		(*out)[i] = t.v[i].info;
		t.v[i].info.id = t.v[i].info.name = NULL;	/* now the caller's */
	}
	*n = t.n;
	table_free(&t);
	return 0;
}

void qcow_snapshot_list_free(struct qcow_snapshot_info *v, uint32_t n)
{
	uint32_t i;

	for (i = 0; v && i < n; i++) {
		free(v[i].id);
		free(v[i].name);
	}
	free(v);
}

/* --------------------------------------------------------- counting */

/* Host clusters of the image as the transaction will leave it. */
struct snap_tx {
	struct qcow_image *img;
	struct snap_table tab;		/* the snapshots the new image has */
	uint64_t *l1;			/* the new active L1 (host order) */
	uint32_t l1_size;
	uint64_t size;			/* the new virtual size */
	uint32_t *refs;			/* L1/L2 paths reaching each host cluster */
	uint32_t *snap_table_refs;	/* snapshot L1s naming each cluster as an L2 table */
	uint64_t nb_clusters;
	uint64_t cursor;		/* next cluster to write new structures to */
	uint8_t *buf;			/* one cluster */
};

static int tx_count(struct snap_tx *tx, uint32_t *v, uint64_t off, uint64_t len)
{
	struct qcow_image *img = tx->img;
	uint64_t c = off >> img->cluster_bits, last = (off + len - 1) >> img->cluster_bits;

	if (!len)
		return 0;
	if (last >= tx->nb_clusters)
		return qcow_signal_corruption(img, "a snapshot operation found a reference to "
					      "0x%" PRIx64 ", past the end of the file", off);
	for (; c <= last; c++) {
		if (v[c] == UINT32_MAX)
			return qcow_set_error(img, -EOVERFLOW, "reference count overflow");
		v[c]++;
	}
	return 0;
}

/* The host bytes an L2 entry references (0 length for none). */
static int l2e_host(struct qcow_image *img, uint64_t e, uint64_t *off, uint64_t *len)
{
	*len = 0;
	if (e & QCOW_OFLAG_COMPRESSED) {
		qcow_decode_compressed(img, e, off, len);
		return 0;
	}
	*off = e & QCOW_L2E_OFFSET_MASK;
	if (!*off)
		return 0;
	if (*off & (img->cluster_size - 1))
		return qcow_signal_corruption(img, "L2 entry 0x%" PRIx64 " is not cluster aligned",
					      e);
	*len = img->cluster_size;
	return 0;
}

static int tx_read_l2(struct snap_tx *tx, uint64_t l2_off)
{
	struct qcow_image *img = tx->img;

	if (l2_off & (img->cluster_size - 1) || l2_off + img->cluster_size > tx->nb_clusters *
	    img->cluster_size)
		return qcow_signal_corruption(img, "L2 table offset 0x%" PRIx64 " is invalid",
					      l2_off);
	return qcow_pread(img, tx->buf, img->cluster_size, l2_off);
}

/* Count one L1 table's L2 tables and data. snap: it belongs to a snapshot. */
static int tx_count_l1(struct snap_tx *tx, const uint64_t *l1, uint32_t l1_size, bool snap)
{
	struct qcow_image *img = tx->img;
	uint64_t i, j, off, len, l2_off;
	int ret = 0;

	for (i = 0; i < l1_size && ret == 0; i++) {
		l2_off = l1[i] & QCOW_L1E_OFFSET_MASK;
		if (!l2_off)
			continue;
		ret = tx_read_l2(tx, l2_off);
		if (ret == 0)
			ret = tx_count(tx, tx->refs, l2_off, img->cluster_size);
		if (ret == 0 && snap)
			ret = tx_count(tx, tx->snap_table_refs, l2_off, img->cluster_size);
		for (j = 0; j < img->l2_size && ret == 0; j++) {
			ret = l2e_host(img, be64_at(tx->buf + j * 8), &off, &len);
			if (ret == 0)
				ret = tx_count(tx, tx->refs, off, len);
		}
	}
	return ret;
}

/* A snapshot's L1 table from the file, host order. */
static int read_l1(struct qcow_image *img, const struct qcow_snapshot_info *in, uint64_t **out)
{
	uint64_t *l1 = calloc(in->l1_size ? in->l1_size : 1, 8);
	uint32_t i;
	int ret;

	if (!l1)
		return -ENOMEM;
	ret = qcow_pread(img, l1, (size_t)in->l1_size * 8, in->l1_table_offset);
	for (i = 0; ret == 0 && i < in->l1_size; i++)
		l1[i] = be64toh(l1[i]);
	if (ret < 0) {
		free(l1);
		return ret;
	}
	*out = l1;
	return 0;
}

static int tx_count_all(struct snap_tx *tx)
{
	struct qcow_image *img = tx->img;
	uint64_t *l1, i, max = 0;
	uint32_t s;
	int ret;

	for (s = 0; s < tx->tab.n; s++) {
		ret = read_l1(img, &tx->tab.v[s].info, &l1);
		if (ret < 0)
			return ret;
		ret = tx_count_l1(tx, l1, tx->tab.v[s].info.l1_size, true);
		free(l1);
		if (ret < 0)
			return ret;
	}
	ret = tx_count_l1(tx, tx->l1, tx->l1_size, false);
	if (ret < 0)
		return ret;
	for (i = 0; i < tx->nb_clusters; i++)
		max = tx->refs[i] > max ? tx->refs[i] : max;
	if (max > qcow_refcount_max(img))
		return qcow_set_error(img, -EOVERFLOW, "clusters would be shared %" PRIu64 " times, "
				      "more than refcount_bits=%u can count", max,
				      img->refcount_bits);
	return 0;
}

/* ------------------------------------------------------------ writing */

/* Write len bytes (padded to clusters with zeros) at the cursor. */
static int tx_append(struct snap_tx *tx, const void *data, size_t len, uint64_t *where)
{
	struct qcow_image *img = tx->img;
	uint64_t padded = QCOW_ALIGN_UP(len ? len : 1, img->cluster_size);
	uint8_t *p = calloc(1, padded);
	int ret;

	if (!p)
		return -ENOMEM;
	memcpy(p, data, len);
	*where = tx->cursor;
	ret = qcow_pwrite(img, p, padded, tx->cursor);
	free(p);
	if (ret == 0)
		tx->cursor += padded;
	return ret;
}

/* Set COPIED on the entries of the table in tx->buf exactly where the
 * cluster's refcount will be 1; true if anything changed. */
static bool fix_copied(struct snap_tx *tx)
{
	struct qcow_image *img = tx->img;
	uint64_t j, e, ne, off, len;
	bool changed = false;

	for (j = 0; j < img->l2_size; j++) {
		e = be64_at(tx->buf + j * 8);
		if (e & QCOW_OFLAG_COMPRESSED || l2e_host(img, e, &off, &len) < 0 || !len)
			continue;
		ne = tx->refs[off >> img->cluster_bits] == 1 ? e | QCOW_OFLAG_COPIED
							     : e & ~QCOW_OFLAG_COPIED;
		if (ne != e) {
			ne = htobe64(ne);
			memcpy(tx->buf + j * 8, &ne, 8);
			changed = true;
		}
	}
	return changed;
}

/*
 * The active L1 entry for the L2 table at l2_off: the table itself when its
 * COPIED flags are already right (shared with a snapshot: COPIED clear in L1),
 * else a copy with the right flags, which only the active image uses.
 */
static int tx_active_entry(struct snap_tx *tx, uint64_t l2_off, uint64_t *entry)
{
	uint64_t copy;
	int ret;

	ret = tx_read_l2(tx, l2_off);
	if (ret < 0)
		return ret;
	if (!fix_copied(tx)) {
		bool shared = tx->snap_table_refs[l2_off >> tx->img->cluster_bits] > 0;

		*entry = shared ? l2_off : l2_off | QCOW_OFLAG_COPIED;
		return 0;
	}
	ret = tx_append(tx, tx->buf, tx->img->cluster_size, &copy);
	if (ret == 0)
		*entry = copy | QCOW_OFLAG_COPIED;
	return ret;
}

/* Write the new active L1 (its L2 tables as tx_active_entry says). */
static int tx_write_l1(struct snap_tx *tx, uint64_t *l1_off)
{
	uint64_t *be = calloc(tx->l1_size ? tx->l1_size : 1, 8), i, l2_off;
	int ret = 0;

	if (!be)
		return -ENOMEM;
	for (i = 0; i < tx->l1_size && ret == 0; i++) {
		l2_off = tx->l1[i] & QCOW_L1E_OFFSET_MASK;
		tx->l1[i] = 0;
		if (l2_off)
			ret = tx_active_entry(tx, l2_off, &tx->l1[i]);
		be[i] = htobe64(tx->l1[i]);
	}
	if (ret == 0)
		ret = tx_append(tx, be, (size_t)tx->l1_size * 8, l1_off);
	free(be);
	return ret;
}

static int tx_write_table(struct snap_tx *tx, uint64_t *table_off)
{
	size_t len = 0, at = 0;
	uint8_t *p;
	uint32_t i;
	int ret;

	*table_off = 0;
	if (!tx->tab.n)
		return 0;
	for (i = 0; i < tx->tab.n; i++)
		len += tx->tab.v[i].raw_len;
	if (len > SNAP_MAX_TABLE_BYTES)
		return qcow_set_error(tx->img, -EFBIG, "the snapshot table would exceed %llu bytes",
				      (unsigned long long)SNAP_MAX_TABLE_BYTES);
	p = malloc(len);
	if (!p)
		return -ENOMEM;
	for (i = 0; i < tx->tab.n; i++) {
		memcpy(p + at, tx->tab.v[i].raw, tx->tab.v[i].raw_len);
		at += tx->tab.v[i].raw_len;
	}
	ret = tx_append(tx, p, len, table_off);
	free(p);
	return ret;
}

/* ---------------------------------------------------------- the switch */

struct img_state {
	uint64_t *l1_table;
	uint8_t *l1_dirty;
	uint32_t l1_size;
	uint64_t l1_table_offset, size, snapshots_offset;
	uint32_t nb_snapshots;
};

static void state_save(const struct qcow_image *img, struct img_state *s)
{
	s->l1_table = img->l1_table;
	s->l1_dirty = img->l1_dirty;
	s->l1_size = img->l1_size;
	s->l1_table_offset = img->l1_table_offset;
	s->size = img->size;
	s->snapshots_offset = img->snapshots_offset;
	s->nb_snapshots = img->nb_snapshots;
}

static void state_restore(struct qcow_image *img, const struct img_state *s)
{
	img->l1_table = s->l1_table;
	img->l1_dirty = s->l1_dirty;
	img->l1_size = s->l1_size;
	img->l1_table_offset = s->l1_table_offset;
	img->size = s->size;
	img->snapshots_offset = s->snapshots_offset;
	img->nb_snapshots = s->nb_snapshots;
}

/* Step 4: the in-memory image becomes the new one, then the refcount
 * rebuild's single header write makes the file say so too. */
static int tx_switch(struct snap_tx *tx, uint64_t l1_off, uint64_t table_off)
{
	struct qcow_image *img = tx->img;
	struct img_state old;
	uint8_t *dirty = calloc(tx->l1_size ? tx->l1_size : 1, 1);
	int ret;

	if (!dirty)
		return -ENOMEM;
	ret = qcow_fsync(img);
	if (ret < 0) {
		free(dirty);
		return ret;
	}
	state_save(img, &old);
	img->l1_table = tx->l1;
	img->l1_dirty = dirty;
	img->l1_size = tx->l1_size;
	img->l1_table_offset = l1_off;
	img->size = tx->size;
	img->nb_snapshots = tx->tab.n;
	img->snapshots_offset = table_off;
	img->l1_any_dirty = false;
	ret = qcow_cache_invalidate(img->l2_cache);
	if (ret == 0)
		ret = qcow_rebuild_refcounts(img);
	if (ret < 0) {
		/* the header may not have been rewritten: go back to what it said */
		state_restore(img, &old);
		qcow_cache_invalidate(img->l2_cache);
		free(dirty);
		return ret;
	}
	tx->l1 = old.l1_table;	/* freed with the transaction */
	free(old.l1_dirty);
	return 0;
}

static int tx_init(struct snap_tx *tx, struct qcow_image *img)
{
	uint64_t file_size;
	int ret;

	memset(tx, 0, sizeof(*tx));
	tx->img = img;
	if (img->read_only)
		return qcow_set_error(img, -EROFS, "snapshot: the image is open read-only");
	/* an allocation between write_begin and write_end is counted by no L2
	 * entry yet: the rebuilt refcounts would free it under the write */
	if (img->nr_inflight)
		return qcow_set_error(img, -EBUSY, "snapshot: writes are in flight");
	ret = qcow_flush(img);			/* step 1 */
	if (ret == 0)
		ret = img->file.ops->get_size(img->file.ctx, &file_size);
	if (ret < 0)
		return ret;
	tx->cursor = QCOW_ALIGN_UP(file_size, img->cluster_size);
	tx->nb_clusters = tx->cursor >> img->cluster_bits;
	tx->refs = calloc(tx->nb_clusters ? tx->nb_clusters : 1, sizeof(*tx->refs));
	tx->snap_table_refs = calloc(tx->nb_clusters ? tx->nb_clusters : 1, sizeof(uint32_t));
	tx->buf = malloc(img->cluster_size);
	if (!tx->refs || !tx->snap_table_refs || !tx->buf)
		return qcow_set_error(img, -ENOMEM, "snapshot: out of memory");
	tx->size = img->size;
	return table_read(img, &tx->tab);
}

static void tx_fini(struct snap_tx *tx)
{
	table_free(&tx->tab);
	free(tx->l1);
	free(tx->refs);
	free(tx->snap_table_refs);
	free(tx->buf);
}

/* Steps 2 to 4 for the active L1 in tx->l1 and the snapshots in tx->tab. */
static int tx_commit(struct snap_tx *tx)
{
	uint64_t l1_off, table_off;
	int ret;

	ret = tx_count_all(tx);
	if (ret == 0)
		ret = tx_write_l1(tx, &l1_off);
	if (ret == 0)
		ret = tx_write_table(tx, &table_off);
	if (ret == 0)
		ret = tx_switch(tx, l1_off, table_off);
	/* what the old image alone used is free now, and durably so */
	if (ret == 0)
		qcow_punch_unused(tx->img);
	return ret;
}

/* The current active L1 as the transaction's starting point. */
static int tx_take_active_l1(struct snap_tx *tx)
{
	struct qcow_image *img = tx->img;

	tx->l1_size = img->l1_size;
	tx->l1 = calloc(img->l1_size ? img->l1_size : 1, 8);
	if (!tx->l1)
		return -ENOMEM;
	memcpy(tx->l1, img->l1_table, (size_t)img->l1_size * 8);
	return 0;
}

/* ------------------------------------------------------------ create */

static void put_be(uint8_t *p, uint64_t v, unsigned bytes)
{
	unsigned i;

	for (i = 0; i < bytes; i++)
		p[i] = (uint8_t)(v >> (8 * (bytes - 1 - i)));
}

/* The next id: one more than the largest numeric id (as qemu). */
static unsigned long next_id(const struct snap_table *t)
{
	unsigned long max = 0, v;
	uint32_t i;
	char *end;

	for (i = 0; i < t->n; i++) {
		v = strtoul(t->v[i].info.id, &end, 10);
		if (!*end && v > max)
			max = v;
	}
	return max + 1;
}

/* A new table entry for the current active image, its L1 copy at l1_off. */
static int new_entry(struct snap_tx *tx, const char *name, uint64_t l1_off, struct snap *s)
{
	struct timespec now;
	char id[32];
	size_t idl, nl = strlen(name), len;
	uint8_t *p;

	snprintf(id, sizeof(id), "%lu", next_id(&tx->tab));
	idl = strlen(id);
	len = QCOW_ALIGN_UP(40 + 24 + idl + nl, 8);
	p = calloc(1, len);
	if (!p)
		return -ENOMEM;
	clock_gettime(CLOCK_REALTIME, &now);
	put_be(p, l1_off, 8);
	put_be(p + 8, tx->img->l1_size, 4);
	put_be(p + 12, idl, 2);
	put_be(p + 14, nl, 2);
	put_be(p + 16, (uint64_t)now.tv_sec, 4);
	put_be(p + 20, (uint64_t)now.tv_nsec, 4);
	/* vm_clock_nsec, vm_state_size: 0 (a disk-only snapshot) */
	put_be(p + 36, 24, 4);			/* extra: state size, disk size, icount */
	put_be(p + 48, tx->img->size, 8);
	/* icount 0: no record/replay, as qemu-img writes it */
	memcpy(p + 64, id, idl);
	memcpy(p + 64 + idl, name, nl);
	s->raw = p;
	s->raw_len = len;
	return snap_decode(tx->img, s, tx->tab.n);
}

static int check_name(struct qcow_image *img, const struct snap_table *t, const char *name)
{
	uint32_t i;

	if (!*name || strlen(name) > SNAP_MAX_NAME)
		return qcow_set_error(img, -EINVAL, "snapshot name must be 1 to %u bytes",
				      SNAP_MAX_NAME);
	for (i = 0; i < t->n; i++)
		if (!strcmp(t->v[i].info.name, name) || !strcmp(t->v[i].info.id, name))
			return qcow_set_error(img, -EEXIST, "a snapshot named '%s' exists already "
					      "(id %s)", name, t->v[i].info.id);
	if (t->n >= QCOW_MAX_SNAPSHOTS)
		return qcow_set_error(img, -EFBIG, "the image has %u snapshots, the most qcow2 "
				      "allows", t->n);
	return 0;
}

int qcow_snapshot_create(struct qcow_image *img, const char *name)
{
	struct snap_tx tx;
	struct snap *grown;
	uint64_t *be = NULL, l1_off, i;
	int ret;

	ret = tx_init(&tx, img);
	if (ret == 0)
		ret = check_name(img, &tx.tab, name);
	if (ret == 0)
		ret = tx_take_active_l1(&tx);
	/* the snapshot's own L1: the active one as it is now, COPIED cleared */
	if (ret == 0 && !(be = calloc(img->l1_size ? img->l1_size : 1, 8)))
		ret = -ENOMEM;
	for (i = 0; ret == 0 && i < img->l1_size; i++)
		be[i] = htobe64(img->l1_table[i] & ~QCOW_OFLAG_COPIED);
	if (ret == 0)
		ret = tx_append(&tx, be, (size_t)img->l1_size * 8, &l1_off);
	free(be);
	if (ret == 0 && !(grown = realloc(tx.tab.v, (tx.tab.n + 1) * sizeof(*grown))))
		ret = -ENOMEM;
	if (ret == 0) {
		tx.tab.v = grown;
		memset(&tx.tab.v[tx.tab.n], 0, sizeof(*grown));
		ret = new_entry(&tx, name, l1_off, &tx.tab.v[tx.tab.n]);
		tx.tab.n++;
	}
	if (ret == 0)
		ret = tx_commit(&tx);
	tx_fini(&tx);
	return ret;
}

/* ------------------------------------------------------ apply, delete */

int qcow_snapshot_apply(struct qcow_image *img, const char *which, bool *had_vm_state)
{
	struct snap_tx tx;
	int ret, i = -1;

	*had_vm_state = false;
	ret = tx_init(&tx, img);
	if (ret == 0)
		ret = i = table_find(img, &tx.tab, which);
	if (ret >= 0) {
		const struct qcow_snapshot_info *in = &tx.tab.v[i].info;

		*had_vm_state = in->vm_state_size > 0;
		tx.l1_size = in->l1_size;
		tx.size = in->disk_size;
		ret = read_l1(img, in, &tx.l1);
	}
	if (ret >= 0)
		ret = tx_commit(&tx);
	tx_fini(&tx);
	return ret < 0 ? ret : 0;
}

int qcow_snapshot_delete(struct qcow_image *img, const char *which)
{
	struct snap_tx tx;
	int ret, i = -1;

	ret = tx_init(&tx, img);
	if (ret == 0)
		ret = i = table_find(img, &tx.tab, which);
	if (ret >= 0) {
		struct snap gone = tx.tab.v[i];

		memmove(&tx.tab.v[i], &tx.tab.v[i + 1], (tx.tab.n - (uint32_t)i - 1) *
			sizeof(tx.tab.v[0]));
		tx.tab.n--;
		free(gone.raw);
		free(gone.info.id);
		free(gone.info.name);
		ret = tx_take_active_l1(&tx);
	}
	if (ret >= 0)
		ret = tx_commit(&tx);
	tx_fini(&tx);
	return ret < 0 ? ret : 0;
}

/* ------------------------------------------------------------ reading */

/* The snapshot with this id and/or name (NULL: any); -ENOENT otherwise. */
static int table_find_exact(struct qcow_image *img, const struct snap_table *t, const char *id,
			    const char *name)
{
	uint32_t i;

	for (i = 0; i < t->n; i++)
		if ((!id || !strcmp(t->v[i].info.id, id)) &&
		    (!name || !strcmp(t->v[i].info.name, name)))
			return (int)i;
	return qcow_set_error(img, -ENOENT, "no snapshot with %s%s%s%s%s", id ? "id " : "",
			      id ? id : "", id && name ? " and " : "", name ? "name " : "",
			      name ? name : "");
}

int qcow_snapshot_load(struct qcow_image *img, const char *id, const char *name)
{
	struct snap_table t;
	uint64_t *l1 = NULL;
	uint8_t *dirty;
	int ret, i;

	if (!img->read_only)
		return qcow_set_error(img, -EINVAL, "a snapshot is read through a read-only open");
	if (img->unservable)
		return qcow_set_error(img, -ENOTSUP, "unsupported feature: %s", img->unservable);
	ret = table_read(img, &t);
	if (ret < 0)
		return ret;
	ret = i = id || name ? table_find_exact(img, &t, id, name) : -EINVAL;
	if (ret >= 0)
		ret = read_l1(img, &t.v[i].info, &l1);
	dirty = ret >= 0 ? calloc(t.v[i].info.l1_size ? t.v[i].info.l1_size : 1, 1) : NULL;
	if (ret >= 0 && !dirty)
		ret = -ENOMEM;
	if (ret >= 0) {
		free(img->l1_table);
		free(img->l1_dirty);
		img->l1_table = l1;
		img->l1_dirty = dirty;
		img->l1_size = t.v[i].info.l1_size;
		img->l1_table_offset = t.v[i].info.l1_table_offset;
		img->size = t.v[i].info.disk_size;
		ret = qcow_cache_invalidate(img->l2_cache);
	} else {
		free(l1);
	}
	table_free(&t);
	return ret < 0 ? ret : 0;
}
