/* SPDX-License-Identifier: MIT */
/*
 * Internal interfaces of the metadata engine, shared by the files of format/:
 *
 *   file_posix.c  the POSIX qcow_file backend
 *   header.c      header + extensions: parse, validate, write back
 *   image.c       open/create/close, fsync accounting, resize, info, errors
 *   flush.c       the flush: write-back in order, as a state machine handing out its IO
 *   refcount.c    refcount table and blocks, the cluster allocator, deferred frees
 *   cache.c       the bounded metadata table cache (L2 tables, refcount blocks)
 *   cluster.c     L1/L2 mapping, allocation for writes, copy-on-write, zero, discard
 *   data.c        synchronous guest read/write, compressed clusters
 *   backing.c     the backing chain: open, map through, read from
 *   check.c       consistency check, leak repair, refcount rebuild
 *   snapshot.c    internal snapshots
 *   bitmap.c      persistent dirty bitmaps: the directory, one bitmap in pieces (bitmap.h)
 *   bitmap_keep.c ... kept up to date by a read-write handle
 *   bitmap_edit.c ... edited (qcow-tool bitmap) and resized
 *
 * Write ordering (the crash-safety contract, see doc/design.md):
 *   1. guest data and COW fills are written to newly allocated clusters
 *      before any L2 entry points at them, and are made durable (fsync)
 *      before that L2 table is written;
 *   2. refcount increments are written and made durable before an L2 table
 *      or L1 entry that depends on them is written;
 *   3. an L2 table is durable before the L1 entry that points at it;
 *   4. refcount decrements (frees) are applied only after the metadata that
 *      stopped referencing the cluster is durable, and a freed cluster is not
 *      reused before its decrement is applied; a crash in between leaks it.
 * A flush (flush.c) performs the whole sequence; evicting a dirty L2 table
 * from the cache performs steps 1-2 first.
 */
#ifndef QCOW_INTERNAL_H
#define QCOW_INTERNAL_H

#include <endian.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "qcow/engine.h"
#include "qcow/format.h"

#define QCOW_ALIGN_UP(x, a)   (((x) + (a) - 1) & ~((uint64_t)(a) - 1))
#define QCOW_ALIGN_DOWN(x, a) ((x) & ~((uint64_t)(a) - 1))
#define QCOW_DIV_ROUND_UP(x, y) (((x) + (y) - 1) / (y))
#define QCOW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define QCOW_MAX(a, b) ((a) > (b) ? (a) : (b))

/* ---------------------------------------------------------------- cache.c */

/*
 * A fixed number of slots, each holding one table (an L2 table or a refcount
 * block) of entry_size bytes, looked up by host offset. Tables are pinned
 * while a caller holds them (get/put). Dirty tables are written back by
 * qcow_cache_writeback(); when a dirty table must be evicted, the cache calls
 * its before_writeback hook first (which enforces the ordering rules above).
 */
struct qcow_cache;


struct qcow_cache *qcow_cache_new(struct qcow_image *img, enum qcow_table_kind kind,
				  unsigned nb_slots, size_t table_size);
void qcow_cache_free(struct qcow_cache *c);
/* Load (reading the file if needed) and pin the table at offset. */
int qcow_cache_get(struct qcow_cache *c, uint64_t offset, void **table);
/* Pin a table at offset without reading it: contents zero-filled, marked dirty. */
int qcow_cache_get_empty(struct qcow_cache *c, uint64_t offset, void **table);
/* Non-blocking get: -EAGAIN + *need (slot reserved, state loading), -EBUSY if
 * that table is loading already, 0 + *table pinned on a hit. */
int qcow_cache_get_nowait(struct qcow_cache *c, uint64_t offset, void **table,
			  struct qcow_meta_read *need);
/* Host offset of refcount block ti: 0 none, < 0 a bad table entry (the
 * image is marked corrupt). */
int64_t qcow_refblock_offset(struct qcow_image *img, uint64_t ti);
/* The table at offset if the cache holds it ready (pinned: put it back),
 * else NULL; never loads, never waits. */
void *qcow_cache_peek(struct qcow_cache *c, uint64_t offset);
/* qcow_cache_get, or qcow_cache_get_nowait into img->need while a nowait
 * call runs (-EAGAIN: a read for the caller, -EBUSY: see get_nowait). */
int qcow_cache_pin(struct qcow_cache *c, uint64_t offset, void **table);
/* Finish a load started by get_nowait; on error the slot is freed. */
int qcow_cache_load_done(struct qcow_cache *c, const struct qcow_meta_read *done, int result);
void qcow_cache_put(struct qcow_cache *c, void *table);
void qcow_cache_mark_dirty(struct qcow_cache *c, void *table);
/* Write every dirty table (no fsync). */
int qcow_cache_writeback(struct qcow_cache *c);
bool qcow_cache_has_dirty(const struct qcow_cache *c);
/* Forget the table at offset (it was freed); must not be pinned. */
void qcow_cache_forget(struct qcow_cache *c, uint64_t offset);
/* Drop everything (after a refcount rebuild); fails if anything is dirty/pinned. */
int qcow_cache_invalidate(struct qcow_cache *c);
/* Lookups that found their table, and table reads started, since creation. */
void qcow_cache_counts(const struct qcow_cache *c, uint64_t *hits, uint64_t *misses);
/*
 * Flush snapshots (the comment at the top of cache.c): copy every dirty
 * table not already being flushed, mark it clean, pin it; the slot indices
 * go to idx (room for every slot). Returns how many.
 */
unsigned qcow_cache_snapshot(struct qcow_cache *c, uint32_t *idx);
/* The write of slot idx's copy; -EIO if it would hit fixed metadata. */
int qcow_cache_snapshot_io(struct qcow_cache *c, uint32_t idx, struct qcow_io *io);
/* Its write is over: unpin; not written, the table is dirty again. */
void qcow_cache_snapshot_done(struct qcow_cache *c, uint32_t idx, bool written);
/* Slots of a cache (the size of an idx array for qcow_cache_snapshot). */
unsigned qcow_cache_slots(const struct qcow_cache *c);

/* --------------------------------------------------------------- image.c */

/* An unknown header extension kept verbatim so a header rewrite preserves it. */
struct qcow_raw_ext {
	uint32_t type;
	uint32_t length;
	uint8_t *data;
};

/* Events an fsync makes durable (qcow_image.events). */
enum qcow_sync_kind { QCOW_SYNC_ANY, QCOW_SYNC_DATA, QCOW_SYNC_L2, QCOW_SYNC_KINDS };

/* A guest range whose allocation is between write_begin and write_end. */
struct qcow_inflight {
	uint64_t first_cluster;
	uint64_t nb_clusters;
	/* the plan's L2 table, pinned from qcow_write_begin to qcow_write_end
	 * so that publishing needs no load (nor a write-back to make room) */
	uint64_t *table;
	bool used;
	uint16_t live_at;	/* its index in qcow_image.inflight_live */
};
#define QCOW_MAX_INFLIGHT 256
/* The most the file grows by ahead of data writes at once (image.c). */
#define QCOW_GROW_MAX (64ULL << 20)

struct qcow_image {
	struct qcow_file file;
	char *name;                   /* path, for messages */
	bool read_only;
	bool for_check;
	char errmsg[512];

	/* header, host byte order */
	unsigned version;
	unsigned cluster_bits;
	uint64_t cluster_size;
	unsigned l2_bits;             /* entries per L2 table = 1 << l2_bits */
	uint64_t l2_size;             /* entries per L2 table */
	unsigned refcount_order;
	unsigned refcount_bits;
	unsigned refcount_block_bits; /* entries per refcount block = 1 << this */
	uint64_t size;                /* virtual size */
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t header_length;       /* v3: bytes of header proper */
	uint64_t backing_file_offset;
	uint32_t backing_file_size;
	/* the header cluster's bytes the durable header refers to (up to its
	 * end-of-extensions marker and its backing file name), as they are on
	 * disk: what a new header changes beyond the first sector (header.c) */
	uint8_t *hdr_disk;
	size_t hdr_used;
	uint8_t compression_type;     /* QCOW_COMPRESSION_ZLIB or _ZSTD */
	/*
	 * Features outside qcow2-lite that only a check open gets past
	 * (header.c): the first one found, which stops the image being served
	 * (NULL: none; such a handle stays read-only, image.c), and what info
	 * shows of them.
	 */
	const char *unservable;
	uint32_t crypt_method;        /* QCOW_CRYPT_* */
	uint64_t crypto_offset;       /* LUKS: the encryption header's place */
	uint64_t crypto_length;       /* 0: no encryption header extension */
	char *data_file;              /* the external data file's name; NULL: none */
	char *backing_file;           /* NULL when none */
	char *backing_format;         /* NULL when none */
	/* the backing chain (backing.c): the layer below, NULL when none or
	 * not opened (for_check); the image that opened this one as its
	 * backing file, NULL at the top; a raw layer has no tables */
	struct qcow_image *backing;
	struct qcow_image *above;
	bool raw;
	bool chain_wanted;            /* opened to read through its chain (not for
				       * check, not no_backing) */
	struct qcow_feature_name *feature_table;
	uint32_t nb_feature_names;
	struct qcow_raw_ext *unknown_exts;
	uint32_t nb_unknown_exts;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;

	/* L1 table, host byte order, whole table in memory */
	uint64_t l1_table_offset;
	uint32_t l1_size;             /* entries */
	uint64_t *l1_table;
	uint8_t *l1_dirty;            /* one byte per L1 entry: needs writing */
	bool l1_any_dirty;

	/* refcount table, host byte order, whole table in memory */
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	uint64_t refcount_table_size; /* entries = clusters * cluster_size / 8 */
	uint64_t *refcount_table;
	/* one byte per entry: set in memory, not written yet (a nowait call's
	 * new refcount blocks: the next flush writes them, or any synchronous
	 * write first, qcow_refcount_commit) */
	uint8_t *rt_dirty;
	bool rt_any_dirty;
	bool rt_committing;           /* qcow_refcount_commit is running */
	bool rc_load_left;            /* a nowait call may still leave a refcount
				       * block to its caller to load (refcount.c) */

	struct qcow_cache *l2_cache;
	struct qcow_cache *refcount_cache;
	/* set while a nowait call runs: a table it finds not cached is left
	 * here for the caller to read (qcow_cache_pin) */
	struct qcow_meta_read *need;

	/* allocator state */
	uint64_t free_cluster_index;  /* lowest host cluster that may be free */
	/* where the next compressed cluster's bytes may go, packed after the
	 * last one's (qcow_alloc_bytes); 0: a new cluster.  Forgotten whenever
	 * frees are applied, as the cluster may be free and reused then. */
	uint64_t free_byte_offset;
	uint64_t *pending_free;       /* host cluster offsets whose refcount drops at flush */
	size_t nb_pending_free, pending_free_cap;

	/*
	 * What an fsync must cover, as counts of events: each rises when such
	 * an event happens, and an fsync that completes raises synced to the
	 * counts it saw when it was issued (an asynchronous flush's fsync
	 * covers nothing that happened after that). Kinds:
	 *  - QCOW_SYNC_ANY: anything was written, or planned for a caller, or
	 *    a caller's write ended: a flush with nothing to write back fsyncs
	 *    only then;
	 *  - QCOW_SYNC_DATA: data an L2 entry may point at was written (and
	 *    refcount table entries): step 1 fsyncs before L2 tables then;
	 *  - QCOW_SYNC_L2: an L2 table was written outside a flush (evicted
	 *    from the cache). The next flush may have no dirty table left, and
	 *    so no fsync of its own after step 2, yet its L1 entries (step 3)
	 *    and refcount decrements (step 4) depend on that table: it owes one.
	 */
	uint64_t events[QCOW_SYNC_KINDS];
	uint64_t synced[QCOW_SYNC_KINDS];

	/* the flush in progress (flush.c) */
	struct qcow_flush *flush;

	/*
	 * The file reads as zeros from this offset on: nothing has been written
	 * at or past it since open. It starts at the file size and rises with
	 * every write the engine issues (qcow_pwrite) or plans for its caller
	 * (qcow_write_begin), before the write, so it is never too low. A new
	 * cluster at or past it needs no zero fill (cluster.c).
	 */
	uint64_t zero_from;

	/*
	 * How far the file reaches, as far as the engine knows: the size at
	 * open, raised by every write noted (qcow_note_write) and by growing
	 * it ahead of data writes (qcow_grow_for). grown: the engine grew it,
	 * so a clean close gives the unused tail back.
	 */
	uint64_t file_end;
	bool grown;

	/* counters for qcow_get_stats (the L2 cache counts its own) */
	uint64_t clusters_allocated;
	uint64_t cow_copies;
	uint64_t refcount_growths;

	/*
	 * Set (to the -errno) once a failure leaves the file in a state this
	 * handle cannot know (design 9.7):
	 *  - a failed fsync: Linux may drop the dirty pages of a failed
	 *    fdatasync, so a later fsync that succeeds proves nothing about the
	 *    writes before it, and the caches already count them as written;
	 *  - a failed qcow_flush (whatever failed in it): its caller was told
	 *    that nothing since the last good flush is known to be durable;
	 *  - a failed write of the header or of the refcount table pointer: the
	 *    disk may hold the old or the new root, while memory has the old one.
	 * Every further write and flush on the handle fails with this error
	 * until the image is reopened. 0: none.
	 */
	int fatal_error;
	const char *fatal_what;       /* "fsync", "flush", "header write" */

	/* what the latest -EBUSY waits for (qcow_busy) */
	enum qcow_wait busy_reason;

	/*
	 * Scratch buffers allocated once at open, so that serving IO never
	 * allocates (a daemon allocating while it serves its own block device
	 * can deadlock under memory reclaim). The engine is single-threaded per
	 * image, so one set suffices; each has exactly one user:
	 */
	uint8_t *compressed_in;       /* 2 clusters: deflate input (data.c) */
	uint8_t *decompressed;        /* 1 cluster: qcow_read's compressed extents */
	uint8_t *cow_buf;             /* 1 cluster: copy-on-write fills (cluster.c) */
	uint8_t *zero_cluster;        /* 1 cluster of zeros, never written */

	struct qcow_inflight inflight[QCOW_MAX_INFLIGHT];
	/* the used slots, the first nr_inflight: every write checks them, and
	 * most of the time there are none or a few */
	uint16_t inflight_live[QCOW_MAX_INFLIGHT];
	unsigned nr_inflight;

	/* the persistent bitmaps a read-write handle keeps (bitmap.c); NULL:
	 * none, or the image has no valid bitmaps extension */
	struct qcow_bitmaps *bitmaps;
};

/* Record a message for qcow_error() and return err (a -errno) unchanged.
 * The message gets the image name prefixed. */
int qcow_set_error(struct qcow_image *img, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* -EBUSY with a message, waiting for why (engine.h, enum qcow_wait). */
#define qcow_busy(img, why, ...) \
	(qcow_set_error((img), -EBUSY, __VA_ARGS__), (img)->busy_reason = (why), -EBUSY)
/* Mark the image corrupt (sets the header's corrupt bit if writable) after a
 * metadata inconsistency; returns -EIO. Further writes fail. */
int qcow_signal_corruption(struct qcow_image *img, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* File IO on the image with errors recorded in img->errmsg. Once the handle
 * has failed (fatal_error), qcow_pwrite and qcow_fsync refuse. */
int qcow_pread(struct qcow_image *img, void *buf, size_t len, uint64_t off);
int qcow_pwrite(struct qcow_image *img, const void *buf, size_t len, uint64_t off);
/* A write to [off, off+len) is about to be issued: raise zero_from past it. */
void qcow_note_write(struct qcow_image *img, uint64_t off, uint64_t len);
/* Data goes up to end next: grow the file ahead so the write does not
 * extend it (image.c says why). Never fails: a write can extend it too. */
void qcow_grow_for(struct qcow_image *img, uint64_t end);
int qcow_fsync(struct qcow_image *img);
/* An event of kind happened that the next fsync must cover. */
static inline void qcow_sync_owed(struct qcow_image *img, enum qcow_sync_kind kind)
{
	img->events[kind]++;
	if (kind != QCOW_SYNC_ANY)
		img->events[QCOW_SYNC_ANY]++;
}
/* An fsync issued when events were covers is over: what it covers is
 * durable. Fsyncs in flight together may end in any order, so an older
 * one's counts never lower what a newer one made durable. */
static inline void qcow_sync_covered(struct qcow_image *img, const uint64_t *covers)
{
	for (int k = 0; k < QCOW_SYNC_KINDS; k++)
		if (covers[k] > img->synced[k])
			img->synced[k] = covers[k];
}
/* Has an event of kind happened since the last fsync was issued? */
static inline bool qcow_sync_needed(const struct qcow_image *img, enum qcow_sync_kind kind)
{
	return img->events[kind] != img->synced[kind];
}
/* Fail the handle after err (see fatal_error); returns err. */
int qcow_fail_handle(struct qcow_image *img, int err, const char *what);
/* fatal_error with a message once the handle has failed, else 0. */
int qcow_refuse_if_failed(struct qcow_image *img);
/* That, or -EIO once the image is marked corrupt: may the engine write? */
int qcow_refuse_write(struct qcow_image *img);

/* Steps 1-2 of the ordering: fsync data, write refcount blocks, fsync.
 * Called by the L2 cache before it writes a dirty L2 table. */
int qcow_prepare_l2_writeback(struct qcow_image *img);

/* --------------------------------------------------------------- flush.c */

/* Allocate the flush state at open (writable images); free it at close. */
int qcow_flush_init(struct qcow_image *img);
void qcow_flush_free(struct qcow_image *img);
/*
 * Table writes outside a flush (cache eviction, refcount block creation)
 * are refused with -EBUSY while a flush runs: its writes are in flight
 * unordered with them. The caller waits for the flush to end.
 */
int qcow_refuse_while_flushing(struct qcow_image *img);

/* Refuse (-EIO, image marked corrupt) a write of [off, off+len) that would
 * land on the header, the L1 table, the refcount table or the snapshot table:
 * called before every data and L2 table write. */
int qcow_check_metadata_overlap(struct qcow_image *img, uint64_t off, uint64_t len);

/* -------------------------------------------------------------- header.c */

/* Parse and validate the header cluster (buf holds min(cluster, file) bytes,
 * at least 72). Fills img's header fields, extensions included. */
int qcow_header_parse(struct qcow_image *img, const uint8_t *buf, size_t len,
		      uint64_t file_size);
/* Serialise the header and extensions into the first cluster and write it.
 * Fails with -ENOSPC if they do not fit. */
int qcow_header_write(struct qcow_image *img);
/* Human name of an incompatible feature bit ("external data file", ...). */
const char *qcow_incompat_feature_name(const struct qcow_image *img, unsigned bit);

/* ------------------------------------------------------------ refcount.c */

/* Load the refcount table into memory (header fields already parsed). */
int qcow_refcount_init(struct qcow_image *img);
void qcow_refcount_free(struct qcow_image *img);
/* Write the refcount table entries a nowait call left unwritten (rt_dirty),
 * after the refcount blocks they point at are durable; qcow_pwrite does it
 * before any synchronous write. */
int qcow_refcount_commit(struct qcow_image *img);
/* Refcount of one host cluster (by index); 0 for clusters past the table. */
int qcow_refcount_get(struct qcow_image *img, uint64_t cluster_index, uint64_t *refcount);
/* Add addend to the refcount of every cluster touching [offset, offset+length).
 * Allocates refcount blocks/grows the table as needed. Increments only reach
 * the cache here; decrements should normally go through qcow_free_deferred. */
int qcow_refcount_update(struct qcow_image *img, uint64_t offset, uint64_t length,
			 int64_t addend);
/* Allocate nb contiguous free clusters (refcount 0 -> 1); returns the host
 * offset or -errno. Never returns clusters with a pending free. */
int64_t qcow_alloc_clusters(struct qcow_image *img, uint64_t nb);
/* size bytes (at most a cluster) for a compressed cluster, packed after the
 * previous ones where they fit (spanning into the next cluster when that is
 * free), as QEMU packs them: every cluster they touch gets one reference
 * more.  Returns the host byte offset or -errno. */
int64_t qcow_alloc_bytes(struct qcow_image *img, uint64_t size);
/* Queue a refcount decrement of each cluster touching [offset, offset+length)
 * for the next flush (after the metadata that dropped the reference is durable). */
int qcow_free_deferred(struct qcow_image *img, uint64_t offset, uint64_t length);
/*
 * Give the space of every cluster with refcount 0 in the file back to the
 * file system (advisory). Only when nothing durable refers to a free
 * cluster and no free is queued: right after a snapshot transaction, whose
 * refcounts are rebuilt from the references and durable with the header
 * that uses them.
 */
void qcow_punch_unused(struct qcow_image *img);
/* Apply the first n queued decrements (a flush, once the metadata that
 * dropped those references is durable); the rest stay queued. */
int qcow_apply_deferred_frees(struct qcow_image *img, size_t n);
/* Decode / encode one refcount entry of a refcount block. */
uint64_t qcow_refblock_get(const struct qcow_image *img, const void *block, uint64_t index);
void qcow_refblock_set(const struct qcow_image *img, void *block, uint64_t index, uint64_t value);
uint64_t qcow_refcount_max(const struct qcow_image *img);

/* ------------------------------------------------------------- cluster.c */

/* -EINVAL with a message naming what ("read", "write", ...) unless
 * [off, off+len) lies inside the virtual disk. */
int qcow_check_guest_range(struct qcow_image *img, uint64_t off, uint64_t len, const char *what);
/* Load the L1 table into memory. */
int qcow_l1_init(struct qcow_image *img);
void qcow_l1_free(struct qcow_image *img);
/* Grow the L1 table to cover new_size (used by resize): writes the new table
 * to fresh clusters, updates the header, frees the old one deferred. */
int qcow_l1_grow(struct qcow_image *img, uint64_t new_size);
/* Is any guest cluster at or past guest offset from allocated (or zero with
 * a host cluster)? Used by resize shrink. */
int qcow_range_has_allocation(struct qcow_image *img, uint64_t from, bool *allocated);
/* Drop L2 entries past new_size (shrink after qcow_range_has_allocation
 * said nothing is there) and L1 entries past it. */
int qcow_l1_shrink(struct qcow_image *img, uint64_t new_size);

/* ------------------------------------------------------------- backing.c */

/* Open img's backing chain (nothing when it has none, or opened for check). */
int qcow_backing_open(struct qcow_image *img, const struct qcow_open_opts *opts);
/* An extent of img that is unallocated: what img's backing chain has there
 * (ext->depth counts the layers down; need->depth, a table to load). */
int qcow_backing_map(struct qcow_image *img, struct qcow_extent *ext,
		     struct qcow_meta_read *need);
/* Guest bytes [off, off+len) of img's backing chain (zeros where it has none). */
int qcow_backing_read(struct qcow_image *img, void *buf, uint64_t off, uint64_t len);
/* Layer depth of img's chain (0: img), NULL below the last (qcow_get_layer). */
struct qcow_image *qcow_layer(const struct qcow_image *img, unsigned depth);
/* A layer's failure, as img's: its message (which names the layer's
 * file), and what an -EBUSY waits for; returns err. */
int qcow_layer_failed(struct qcow_image *img, const struct qcow_image *layer, int err);
/* A raw layer's map of [off, off+max). */
int qcow_raw_map(const struct qcow_image *img, uint64_t off, uint64_t max,
		 struct qcow_extent *ext);
/* image.c: open a layer of the chain below above (NULL: the top). */
int qcow_open_layer(struct qcow_file *file, const char *name, const struct qcow_open_opts *opts,
		    struct qcow_image *above, struct qcow_image **out, char *err, size_t errlen);
/* cluster.c: qcow_map / qcow_map_nowait (need NULL: synchronous). */
int qcow_map_layer(struct qcow_image *img, uint64_t off, uint64_t len,
		   struct qcow_extent *ext, struct qcow_meta_read *need);

/* ---------------------------------------------------------------- data.c */

/* Inflate one compressed cluster stream (raw deflate, no zlib header). */
int qcow_decompress_cluster(struct qcow_image *img, const void *in, size_t in_len,
			    void *out, size_t out_len);

/* ------------------------------------------- bitmap_keep.c, bitmap_edit.c */

/* The most memory the bitmaps a read-write handle keeps may take together:
 * their tables, and the pieces of bits set since the open (bitmap.h); a
 * bitmap that would pass it is dropped and left IN_USE (inconsistent).
 * 256 MiB of pieces is 1 TiB of disk written at 512-byte granularity, 128
 * TiB at qemu's default 64 KiB. */
#define QCOW_BITMAP_MEM_CAP (256ULL << 20)
struct qcow_bitmaps;
/* Read-write open (the bitmaps autoclear bit set): keep the bitmaps to
 * keep and mark them IN_USE on disk (rule B1). Fails on a damaged
 * directory, or tables past the cap. No extension: nothing. */
int qcow_bitmaps_open(struct qcow_image *img);
/* Does the handle keep a bitmaps extension (so the autoclear bit stays)? */
bool qcow_bitmaps_present(const struct qcow_image *img);
/* Tests: from now on, at most bytes more of pieces (then bitmaps drop). */
void qcow_bitmaps_limit_pieces(struct qcow_image *img, uint64_t bytes);
/* A write, zero write or discard of [off, off+len), before it changes
 * anything: set the bits of every kept bitmap (B2: a piece's first bit
 * takes a cluster, so -EAGAIN with img->need as any allocation). Once a
 * write-back left them consistent, a nowait caller gets -EBUSY
 * (QCOW_WAIT_WRITEBACK: the flush it runs marks them IN_USE again, B1), a
 * synchronous one does B1 itself; -EBUSY (QCOW_WAIT_FLUSH) while a flush
 * writes the directory. */
int qcow_bitmaps_mark(struct qcow_image *img, uint64_t off, uint64_t len);
/* Close or an edit, after a flush that wrote the bitmaps back: let go of
 * them (-EIO if they are not consistent on disk: they stay IN_USE).
 * Nothing may be marked after it. */
int qcow_bitmaps_let_go(struct qcow_image *img);
/*
 * The bitmap steps of a flush (bitmap_keep.c B1, B3, B4; flush.c runs
 * them). qcow_bitmaps_ask: a flush was asked for with these flags (a
 * write-back asked for is owed until a flush starts it).
 * qcow_bitmaps_flush_start, at the flush's start under the caller's lock:
 * 1 if a step will have IO, 0 if none, -errno (the handle must fail: bits
 * were taken). Then per step, in this order: qcow_bitmaps_step_begin
 * says how many IOs it has (READS: reads; the others writes, made durable
 * by the fsync of the flush step they ride with), qcow_bitmaps_step_io
 * gives IO i, and qcow_bitmaps_step_end comes once they and that fsync
 * are over. qcow_bitmaps_flush_end at the flush's end, failed or not.
 */
enum qcow_bitmaps_step {
	QCOW_BITMAPS_MARK,            /* B1: the directory with IN_USE, for a write that waits */
	QCOW_BITMAPS_READS,           /* B3: the old bits of the changed pieces */
	QCOW_BITMAPS_PIECES,          /* B3: the pieces, in place, with the flush's step 1 */
	QCOW_BITMAPS_TABLES,          /* B3: the tables, in place, with its step 2 */
	QCOW_BITMAPS_CLEAR,           /* B4: the directory without IN_USE */
};
void qcow_bitmaps_ask(struct qcow_image *img, unsigned flags);
int qcow_bitmaps_flush_start(struct qcow_image *img);
/* Would a flush with QCOW_FLUSH_BITMAPS now have no bitmap step with IO
 * (none kept, or all consistent on disk and none marked since)? */
bool qcow_bitmaps_settled(const struct qcow_image *img);
unsigned qcow_bitmaps_step_begin(struct qcow_image *img, enum qcow_bitmaps_step s);
void qcow_bitmaps_step_io(struct qcow_image *img, enum qcow_bitmaps_step s, unsigned i,
			  struct qcow_io *io);
void qcow_bitmaps_step_end(struct qcow_image *img, enum qcow_bitmaps_step s);
void qcow_bitmaps_flush_end(struct qcow_image *img);
void qcow_bitmaps_free(struct qcow_image *img);
/* Resize an image that has bitmaps (rules R1-R4, bitmap_edit.c): resize()
 * changes the disk's size, every bitmap follows. Refused before anything
 * changes when a bitmap is inconsistent, as qemu refuses it. */
int qcow_bitmaps_resize(struct qcow_image *img, uint64_t new_size,
			int (*resize)(struct qcow_image *img, uint64_t new_size));

/* ------------------------------------------------------------- helpers */

static inline uint64_t qcow_offset_to_l1_index(const struct qcow_image *img, uint64_t off)
{
	return off >> (img->l2_bits + img->cluster_bits);
}

static inline uint64_t qcow_offset_to_l2_index(const struct qcow_image *img, uint64_t off)
{
	return (off >> img->cluster_bits) & (img->l2_size - 1);
}

static inline uint64_t qcow_l1_entries_for(const struct qcow_image *img, uint64_t size)
{
	uint64_t per_l2_bytes = 1ULL << (img->l2_bits + img->cluster_bits);
	return QCOW_DIV_ROUND_UP(size, per_l2_bytes);
}

/* Decode a compressed L2 entry into host offset and byte length that may hold the data. */
static inline void qcow_decode_compressed(const struct qcow_image *img, uint64_t l2e,
					  uint64_t *offset, uint64_t *length)
{
	unsigned x = 62 - (img->cluster_bits - 8);
	uint64_t off = l2e & ((1ULL << x) - 1);
	uint64_t nb_sectors = ((l2e & ~QCOW_OFLAG_COPIED & ~QCOW_OFLAG_COMPRESSED) >> x) + 1;
	*offset = off;
	*length = nb_sectors * QCOW_COMPRESSED_SECTOR_SIZE - (off & (QCOW_COMPRESSED_SECTOR_SIZE - 1));
}

/* file_posix.c: turn direct IO off on a POSIX file; -EINVAL for another backend. */
int qcow_file_posix_buffered(struct qcow_file *f);

#endif /* QCOW_INTERNAL_H */
