/* SPDX-License-Identifier: MIT */
/*
 * libqcowfmt: the qcow2-lite metadata engine. It maps guest offsets to host
 * offsets in an image file, allocates clusters, keeps refcounts, and orders
 * its metadata writes so that a crash at any point leaves a consistent image
 * (at worst with leaked clusters).
 *
 * Two ways in:
 *  - the synchronous calls (qcow_read, qcow_write, ...) used by qcow-tool;
 *  - the split calls (qcow_map_nowait, qcow_write_begin/end, ...) used by an
 *    asynchronous server: the engine tells the caller which metadata it must
 *    read, or where the guest data goes, and the caller moves the bytes with
 *    its own IO machinery (io_uring) without blocking other requests.
 *
 * Every call returns 0 (or a non-negative count) on success and -errno on
 * failure; qcow_error(img) then describes the failure in words.
 * An image handle is not thread safe: one thread drives it at a time.
 */
#ifndef QCOW_ENGINE_H
#define QCOW_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct qcow_image;

/* ------------------------------------------------------------------------
 * The narrow file interface. All engine IO on the image file goes through
 * one of these, so tests can record, drop, tear or fail individual writes.
 * ------------------------------------------------------------------------ */
struct qcow_file_ops {
	/* Read len bytes at off. Bytes past end of file read as zero. 0 or -errno. */
	int (*pread)(void *ctx, void *buf, size_t len, uint64_t off);
	/* Write all len bytes at off (extending the file as needed). 0 or -errno. */
	int (*pwrite)(void *ctx, const void *buf, size_t len, uint64_t off);
	/* Make every completed write durable (fdatasync). 0 or -errno. */
	int (*flush)(void *ctx);
	/* Set the file size. 0 or -errno. */
	int (*truncate)(void *ctx, uint64_t size);
	/* Current file size in bytes. 0 or -errno. */
	int (*get_size)(void *ctx, uint64_t *size);
	/* Release ctx. May be NULL. */
	void (*close)(void *ctx);
	/*
	 * Give back the space of [off, off+len), which then reads as zeros
	 * (FALLOC_FL_PUNCH_HOLE); the size stays. May be NULL. Advisory: a
	 * failure (a file system that cannot punch) changes nothing.
	 */
	int (*punch)(void *ctx, uint64_t off, uint64_t len);
};

struct qcow_file {
	const struct qcow_file_ops *ops;
	void *ctx;
	int fd;         /* the POSIX descriptor when there is one (for io_uring), else -1 */
	/*
	 * Direct IO (O_DIRECT): the alignment, in bytes, the file needs of IO
	 * buffers and of file offsets and lengths; 0 when it uses the page
	 * cache.  The POSIX backend aligns the engine's own IO itself (through
	 * an aligned bounce buffer); IO issued on fd directly must be aligned.
	 */
	uint32_t dio_mem_align;
	uint32_t dio_off_align;
};

/*
 * Open path as a POSIX file backend. flags: O_RDONLY or O_RDWR, optionally
 * O_CREAT|O_EXCL, and O_DIRECT (-EINVAL where the file system refuses it).
 */
int qcow_file_open_posix(const char *path, int flags, struct qcow_file *out);

/*
 * Does [off, off+len) of the file at fd start with data (1) or a hole (0,
 * which reads as zeros; so does the end of the file), and for how many
 * bytes (*run, at most len)?  All data where the file system cannot say.
 */
int qcow_file_data_run(int fd, uint64_t off, uint64_t len, uint64_t *run);

/*
 * Locks that say who uses an image, QEMU's own (format/file_posix.c): a
 * process and QEMU refuse each other as two QEMU processes would. Held
 * until fd is closed. qcow_file_lock_image: -EAGAIN when another process's
 * use conflicts, why then naming the lock as QEMU does ("Failed to get
 * shared "write" lock"); other -errno when the file cannot be locked.
 * qcow_file_image_in_use: 1 when another process holds the image for
 * writing. A snapshot's reader lock keeps that snapshot from being
 * deleted; qcow_file_snapshot_in_use says 1 when another holds it.
 */
enum qcow_access {
	QCOW_ACCESS_WRITE,      /* read-write (a guest disk, a tool that writes) */
	QCOW_ACCESS_READ,       /* read-only, no writer meanwhile (qemu-img info) */
	QCOW_ACCESS_SHARE,      /* read-only, sharing everything (-U, --force-share) */
};
int qcow_file_lock_image(int fd, enum qcow_access access, char *why, size_t len);
int qcow_file_image_in_use(int fd);
int qcow_file_snapshot_lock(int fd, const char *id);
int qcow_file_snapshot_in_use(int fd, const char *id);

/* ------------------------------------------------------------------------
 * Open, create, close
 * ------------------------------------------------------------------------ */

#define QCOW_DEFAULT_L2_CACHE_BYTES       (1ULL << 20)  /* 1 MiB: 8 GiB of disk at 64 KiB clusters */
#define QCOW_DEFAULT_REFCOUNT_CACHE_BYTES (256ULL << 10)

struct qcow_open_opts {
	bool read_only;
	/* Bytes of L2 tables kept in memory; 0 means QCOW_DEFAULT_L2_CACHE_BYTES. */
	uint64_t l2_cache_bytes;
	/* Bytes of refcount blocks kept in memory; 0 means the default. */
	uint64_t refcount_cache_bytes;
	/*
	 * For check: open without repairing a dirty image, without clearing
	 * autoclear bits and without refusing a corrupt one; writes still refused
	 * unless read_only is false and the caller repairs.
	 */
	bool for_check;
	/*
	 * Leave the backing chain closed (as for_check does): clusters the
	 * image does not allocate read as zeros.  For callers that look at one
	 * file alone (fuzzers); never for a writer of an image that has one.
	 */
	bool no_backing;
	/*
	 * Lock the backing chain's layers sharing everything (qemu-img -U),
	 * not refusing writers as QEMU's qcow2 backing files do.  Raw layers
	 * share everything anyway, as in QEMU.
	 */
	bool force_share;
};

/*
 * Open an image file. On failure *out is NULL, -errno is returned and err
 * (if not NULL) holds a message that names the file and the problem, e.g.
 * "vm.img: unsupported feature: external data file".
 */
int qcow_open(const char *path, const struct qcow_open_opts *opts,
	      struct qcow_image **out, char *err, size_t errlen);

/* The same over an already opened file; the image owns file afterwards. */
int qcow_open_file(struct qcow_file *file, const char *name,
		   const struct qcow_open_opts *opts, struct qcow_image **out,
		   char *err, size_t errlen);

struct qcow_create_opts {
	uint64_t size;             /* virtual size in bytes, rounded up to 512 */
	unsigned cluster_bits;     /* 0: QCOW_DEFAULT_CLUSTER_BITS */
	unsigned refcount_bits;    /* 0: 16; else a power of two 1..64 */
	int version;               /* 0: 3 (compat 1.1); or 2 (compat 0.10) */
	bool lazy_refcounts;       /* refused for now; kept for the option parser */
	uint8_t compression_type;  /* QCOW_COMPRESSION_ZLIB (0) or _ZSTD (version 3) */
	/* the backing file's name as the header keeps it (relative to the
	 * image's directory unless absolute), and its format ("raw" or
	 * "qcow2"); NULL: none.  Create does not open it. */
	const char *backing_file;
	const char *backing_format;
};

/* Create a new image at path (refuses to overwrite unless the file is empty
 * or truncate is true). */
int qcow_create(const char *path, const struct qcow_create_opts *opts, bool truncate,
		char *err, size_t errlen);
/* Whether qcow_create would take opts, touching no file: 0, or its -errno
 * with err naming name and what is wrong (as qcow_create words it). */
int qcow_create_check(const char *name, const struct qcow_create_opts *opts, char *err,
		      size_t errlen);
/* The same onto an open, empty file (used by crash tests). */
int qcow_create_file(struct qcow_file *file, const char *name,
		     const struct qcow_create_opts *opts, char *err, size_t errlen);

/* Flush (if writable) and free everything. Returns the flush result (an
 * error on a handle that failed, see qcow_flush). */
int qcow_close(struct qcow_image *img);

/* Message describing the most recent failure on img ("" if none). */
const char *qcow_error(const struct qcow_image *img);

/*
 * What a call that returned -EBUSY waits for, so that an asynchronous
 * caller retries it only when that happens (valid until the next -EBUSY).
 */
enum qcow_wait {
	QCOW_WAIT_ANY,                /* any of the below (retry after each) */
	QCOW_WAIT_LOAD,               /* a table load: qcow_meta_read_done() */
	QCOW_WAIT_WRITE,              /* an overlapping allocation: qcow_write_end() */
	QCOW_WAIT_FLUSH,              /* the flush in progress: its end */
	QCOW_WAIT_WRITEBACK,          /* dirty tables in the way: a flush to start, then its end */
	QCOW_WAIT_KINDS
};
enum qcow_wait qcow_busy_reason(const struct qcow_image *img);

/* ------------------------------------------------------------------------
 * Information
 * ------------------------------------------------------------------------ */
struct qcow_info {
	uint64_t virtual_size;
	uint64_t cluster_size;
	unsigned cluster_bits;
	unsigned version;             /* 2 or 3 */
	unsigned refcount_bits;
	uint64_t file_size;           /* bytes of the image file */
	uint64_t incompatible_features;
	uint64_t compatible_features;
	uint64_t autoclear_features;
	uint32_t nb_snapshots;
	uint32_t l1_size;
	uint64_t l1_table_offset;
	uint64_t refcount_table_offset;
	uint32_t refcount_table_clusters;
	bool dirty;
	bool corrupt;
	bool read_only;
	uint8_t compression_type;     /* QCOW_COMPRESSION_ZLIB or _ZSTD */
	char backing_file[1024];      /* "" when none */
	char backing_format[64];      /* "" when none */
};
void qcow_get_info(const struct qcow_image *img, struct qcow_info *info);

/* ------------------------------------------------------------------------
 * Mapping: what is at a guest offset
 * ------------------------------------------------------------------------ */
enum qcow_extent_kind {
	QCOW_EXTENT_UNALLOCATED = 0,  /* allocated nowhere in the chain: reads as zeros */
	QCOW_EXTENT_ZERO,             /* zero cluster (v3 flag); host_offset set if preallocated */
	QCOW_EXTENT_DATA,             /* data at host_offset.. (contiguous for length bytes) */
	QCOW_EXTENT_COMPRESSED,       /* one compressed cluster; see compressed_* */
};

struct qcow_extent {
	uint64_t guest_offset;
	uint64_t length;              /* > 0; never crosses an L2 table boundary */
	enum qcow_extent_kind kind;
	uint64_t host_offset;         /* DATA: host byte of guest_offset; ZERO: cluster or 0 */
	uint64_t compressed_offset;   /* COMPRESSED: host byte where the deflate stream starts */
	uint64_t compressed_length;   /* COMPRESSED: bytes that may hold it */
	/* the layer of the backing chain the extent is from: 0 the image
	 * itself, 1 its backing file, ...; host and compressed offsets are in
	 * that layer's file (qcow_get_layer) */
	unsigned depth;
};

/*
 * Describe the longest run starting at off (up to len bytes, clipped to the
 * virtual size) whose clusters share one kind and, for DATA, are contiguous
 * on the host. Loads L2 tables synchronously.  Clusters the image does not
 * allocate are described by its backing chain (ext->depth says which layer).
 */
int qcow_map(struct qcow_image *img, uint64_t off, uint64_t len, struct qcow_extent *ext);

/* The tables the engine caches (qcow_meta_read.cache). */
enum qcow_table_kind { QCOW_TABLE_L2, QCOW_TABLE_REFCOUNT };

/*
 * A metadata read the caller must perform before the engine can go on.
 * The caller reads len bytes at offset of the image file into buf, then
 * reports the result with qcow_meta_read_done(). buf belongs to the engine's
 * cache and stays valid until then.
 */
struct qcow_meta_read {
	uint64_t offset;
	size_t len;
	void *buf;
	uint32_t slot;                /* engine's cookie */
	uint8_t cache;                /* enum qcow_table_kind: what it reads */
	uint8_t depth;                /* the layer whose file it reads (qcow_get_layer) */
};

/*
 * Non-blocking qcow_map: returns -EAGAIN with *need filled when the L2 table
 * is not cached (a read the caller must issue), -EBUSY when a read of it is
 * already in flight (retry after any qcow_meta_read_done), or when room for
 * it would need a dirty table written (QCOW_WAIT_WRITEBACK: a flush writes
 * them, so run one, qcow_flush_start, and retry once it is over); else as
 * qcow_map.
 */
int qcow_map_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
		    struct qcow_extent *ext, struct qcow_meta_read *need);
/*
 * What img's backing chain has at [off, off+len), whatever img has there:
 * the old bytes of a copy-on-write part (QCOW_COW_BACKING), for a caller
 * that reads them itself.  Depths count from img, as qcow_map_nowait's;
 * past the end of the chain (or without one) UNALLOCATED: zeros.  Returns
 * as qcow_map_nowait.
 */
int qcow_map_backing_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			    struct qcow_extent *ext, struct qcow_meta_read *need);
/* result: 0 when all len bytes were read, else -errno. */
int qcow_meta_read_done(struct qcow_image *img, const struct qcow_meta_read *done, int result);

/* ------------------------------------------------------------------------
 * Guest IO, synchronous
 * ------------------------------------------------------------------------ */
int qcow_read(struct qcow_image *img, void *buf, uint64_t off, size_t len);
int qcow_write(struct qcow_image *img, const void *buf, uint64_t off, size_t len);

#define QCOW_ZERO_MAY_UNMAP  (1U << 0)  /* zeroed clusters may be deallocated */
/* Make [off, off+len) read as zero: zero flag (v3), deallocation (MAY_UNMAP,
 * no backing) or explicit zero data for partial clusters. */
int qcow_write_zeroes(struct qcow_image *img, uint64_t off, uint64_t len, unsigned flags);
/* Deallocate whole clusters in [off, off+len); partial clusters are left as
 * they are. Discarded ranges read as zero. */
int qcow_discard(struct qcow_image *img, uint64_t off, uint64_t len);
/*
 * One compressed cluster: stream (raw deflate, a 4 KiB window; len bytes,
 * fewer than a cluster's) for the guest cluster at off, which must have no
 * data (unallocated, or a zero cluster without a host cluster: a new
 * image, as convert -c fills it).  The bytes are packed after the previous
 * compressed cluster's, as QEMU packs them.  Synchronous callers only.
 */
int qcow_write_compressed(struct qcow_image *img, uint64_t off, const void *stream, size_t len);
/*
 * Compress one cluster (cluster_size bytes at in) as QEMU does (deflate or
 * zstd, the image's compression type), into out:
 * the stream's length; 0 when it does not fit in cap bytes (QEMU's cap is
 * a cluster less one byte: then the cluster is stored uncompressed); or
 * -errno.  Touches nothing of img but its geometry: no lock, any thread.
 */
int64_t qcow_deflate_cluster(const struct qcow_image *img, const void *in, void *out, size_t cap);
/* Deallocate every cluster (entries 0, with or without a backing file, so
 * that the backing chain shows through again), as qemu-img commit leaves
 * the image it committed. */
int qcow_make_empty(struct qcow_image *img);
/*
 * The next piece of a zeroing or discard of [off, off+len), and its length:
 * bytes of one cluster the range covers only in part (*partial: a zeroing
 * writes zeros there, a discard leaves them), or whole clusters up to the
 * end of an L2 table's span.  Pieces cover the range in order.  In a v2
 * image with a backing file every cluster is a partial piece (no entry
 * there can say "zero" without letting the base show through).
 */
uint64_t qcow_clear_piece(const struct qcow_image *img, uint64_t off, uint64_t len,
			  bool *partial);
/*
 * The same for an asynchronous caller, a piece at a time: an L2 table they
 * need and find not cached comes back as -EAGAIN with *need (read it,
 * qcow_meta_read_done, call again: what was done stays done, and doing it
 * again changes nothing); -EBUSY as qcow_write_begin_nowait's.  Zeroing
 * and discard take whole clusters; for a partial piece of a zeroing,
 * qcow_partial_zeroes_nowait says whether the caller must write zeros there
 * (1: with a write plan, qcow_write_begin_nowait) or it reads as zeros
 * already (0).
 */
int qcow_write_zeroes_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			     unsigned flags, struct qcow_meta_read *need);
int qcow_discard_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			struct qcow_meta_read *need);
int qcow_partial_zeroes_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			       struct qcow_meta_read *need);

/*
 * Write back all dirty metadata in dependency order and make it durable.
 * If it fails, nothing since the last successful flush is known to be
 * durable, and the handle has failed: every later write, zero write,
 * discard, resize and flush returns the error (reads may still work) until
 * the image is closed and reopened. A failed header write does the same.
 */
int qcow_flush(struct qcow_image *img);
/* The flush a user asks for (a tool's flush, a close): qcow_flush, and the
 * persistent bitmaps written back and left consistent (not IN_USE) until
 * the next write (QCOW_FLUSH_BITMAPS, below). */
int qcow_guest_flush(struct qcow_image *img);

/* ------------------------------------------------------------------------
 * Flush, step by step, for a caller that does the IO itself (an io_uring
 * server). The same machine runs qcow_flush(), with pwrite and fdatasync.
 *
 *   qcow_flush_start()    snapshots what the flush makes durable: every
 *                         write completed, every mapping published and every
 *                         change made before it;
 *   qcow_flush_next()     hands out the next batch of IO: table writes in
 *                         any order among themselves, or one fsync, or
 *                         reads of the refcount blocks that queued frees
 *                         change and the cache lacks; 0 once the flush is
 *                         complete;
 *   qcow_flush_io_done()  reports the batch, once every IO of it is over.
 *
 * The caller need not hold its lock between the calls: reads, writes and
 * allocations go on meanwhile, and what they change waits for the next
 * flush. Table writes that would race the flush's (evictions of dirty
 * tables, new refcount blocks) return -EBUSY until it ends. One flush runs
 * at a time. A failed flush fails the handle, as qcow_flush() does.
 * ------------------------------------------------------------------------ */
/* PUNCH: free clusters whose space goes back to the file system
 * (fallocate PUNCH_HOLE | KEEP_SIZE); advisory, its failure is no error. */
enum qcow_io_op { QCOW_IO_WRITE, QCOW_IO_FSYNC, QCOW_IO_READ, QCOW_IO_PUNCH };

struct qcow_io {
	enum qcow_io_op op;
	void *buf;                    /* WRITE, READ: engine memory, page aligned, valid until io_done */
	size_t len;                   /* WRITE, READ, PUNCH: bytes, whole blocks of a direct IO file */
	uint64_t offset;              /* WRITE, READ, PUNCH: file offset, block aligned */
};
/* One IO of a batch with the image's file ops, as qcow_flush() does it:
 * 0 or -errno (a short read is an error). */
int qcow_io_do(struct qcow_image *img, const struct qcow_io *io);

/*
 * flags: QCOW_FLUSH_BITMAPS, the flush a guest asked for: the persistent
 * bitmaps' changes are written back too and, when nothing was written
 * meanwhile, the bitmaps left consistent (not IN_USE) until the next write
 * (bitmap_keep.c); an asked write-back not yet done is owed, and the next
 * flush that starts does it.  0: only the metadata (a flush that makes room
 * in a cache, or that --recoverable needs).
 * 0: started; 1: nothing to make durable (done, no IO); -EBUSY: a flush is
 * running (start again once it is over); else -errno.
 */
#define QCOW_FLUSH_BITMAPS (1U << 0)
int qcow_flush_start(struct qcow_image *img, unsigned flags);
/* > 0: the batch, that many IOs in ios (max >= 1); 0: the flush is over and
 * everything it covers durable; -errno: it failed. */
int qcow_flush_next(struct qcow_image *img, struct qcow_io *ios, unsigned max);
/* result: 0 if every IO of the batch succeeded in full, else an -errno. */
void qcow_flush_io_done(struct qcow_image *img, int result);
/* Is a flush between qcow_flush_start and its end? */
bool qcow_flush_running(const struct qcow_image *img);

/*
 * A flush asked for (with qcow_flush_start's flags) while one is running
 * need not wait for its end when everything it would make durable is
 * written already, only not synced: qcow_sync_begin says so (true, and s
 * records what an fsync issued from now on covers), and the caller issues
 * an fdatasync of its own; false: start a flush as usual (-EBUSY, wait).
 * qcow_sync_end reports that fsync: 0, or its failure, which fails the
 * handle as a flush's does. Any number may be in flight, beside the flush,
 * where the file's writes bypass the page cache (direct IO): through it, a
 * writeback error is reported to one fsync of a file description only.
 */
struct qcow_sync {
	uint64_t covers[3];
};
bool qcow_sync_begin(struct qcow_image *img, unsigned flags, struct qcow_sync *s);
int qcow_sync_end(struct qcow_image *img, const struct qcow_sync *s, int result);

/*
 * True while the engine holds metadata changes (L1 entries, L2 tables,
 * refcount blocks) that are not yet written to the file: a process that
 * died now would lose them.  Data and fsyncs are not its concern.  While a
 * flush runs, its tables may still be on their way: ask once it is over.
 */
bool qcow_metadata_unwritten(const struct qcow_image *img);

/* Grow the virtual size; shrinking is refused (-ENOTSUP) unless every
 * cluster past the new end is unallocated. */
int qcow_resize(struct qcow_image *img, uint64_t new_size);

/* ------------------------------------------------------------------------
 * Guest writes, split for an asynchronous caller
 *
 *   qcow_write_begin()  allocates the clusters for the first run of the
 *                       range, fills what the guest write leaves of them
 *                       (copy-on-write) and says where its bytes go;
 *   the caller writes plan.length bytes at plan.host_offset;
 *   qcow_write_end()    publishes the new mapping (or rolls it back on error).
 *
 * qcow_write_begin_nowait() leaves the fill to the caller, as the plan's
 * cow[] parts (below), to be written, like the guest bytes, before
 * qcow_write_end(). The old clusters they copy from stay as they are until
 * then (the allocation holds their guest clusters). The tables it needs and
 * finds not cached it leaves to the caller to read, as qcow_map_nowait
 * does; its only IO is the rare growth of the refcount structures (a new
 * refcount block every few GiB of allocation, written with its fsyncs).
 *
 * Only a prefix of [off, off+len) may be covered; call again for the rest.
 * Returns -EBUSY when an overlapping allocation is in flight: retry after
 * any qcow_write_end(). -EBUSY also comes back (from these and from the
 * synchronous calls) while an L2 table they need is being loaded through
 * qcow_map_nowait(): retry after qcow_meta_read_done(); and while a flush
 * run step by step is in progress and they would write a table: retry once
 * it is over.
 * ------------------------------------------------------------------------ */
enum qcow_cow_kind {
	QCOW_COW_NONE,                /* nothing: the file reads as zeros there already */
	QCOW_COW_ZEROS,               /* write zeros */
	QCOW_COW_COPY,                /* copy len bytes from the old data at src */
	QCOW_COW_INFLATE,             /* the old cluster is compressed: qcow_cow_read() */
	QCOW_COW_BACKING,             /* the backing chain's guest bytes there: qcow_cow_read() */
};
/* Bytes of a new cluster that the guest write leaves, and where they come from. */
struct qcow_cow_part {
	uint8_t kind;                 /* enum qcow_cow_kind */
	uint64_t guest;               /* guest offset of the bytes */
	uint64_t dst;                 /* host offset they go to */
	uint64_t len;
	uint64_t src;                 /* COPY: host offset of the old bytes; INFLATE: of the stream */
	uint64_t src_len;             /* INFLATE: bytes that may hold the stream */
};
struct qcow_write_plan {
	uint64_t guest_offset;
	uint64_t length;
	uint64_t host_offset;
	/* cow[0] ends at host_offset, cow[1] starts at host_offset + length;
	 * both QCOW_COW_NONE for a write in place or from qcow_write_begin() */
	struct qcow_cow_part cow[2];
	/* engine-private */
	uint64_t first_cluster;       /* guest cluster index */
	uint64_t nb_clusters;
	uint64_t new_host_cluster;    /* 0: written in place, nothing to publish */
	uint32_t inflight_slot;
	/* the new clusters lie where the file was never written: a write
	 * there makes the file system allocate blocks, which blocks */
	bool fresh;
};
int qcow_write_begin(struct qcow_image *img, uint64_t off, uint64_t len,
		     struct qcow_write_plan *plan);
/* -EAGAIN with *need: an L2 table or refcount block to read first (then
 * qcow_meta_read_done, and call again); -EBUSY as qcow_map_nowait's too. */
int qcow_write_begin_nowait(struct qcow_image *img, uint64_t off, uint64_t len,
			    struct qcow_write_plan *plan, struct qcow_meta_read *need);
/* The bytes of part p (p->len) into buf, synchronously: a read of the old
 * data, an inflated cluster's, or zeros. 0 or -errno. */
int qcow_cow_read(struct qcow_image *img, const struct qcow_cow_part *p, void *buf);
/* result: 0 if the data write succeeded, else its -errno. */
int qcow_write_end(struct qcow_image *img, struct qcow_write_plan *plan, int result);

/* The image file, for a caller that moves data itself (io_uring). */
const struct qcow_file *qcow_get_file(const struct qcow_image *img);
/*
 * Layer depth of img's backing chain (0: img itself, 1: its backing file,
 * ...), NULL below the last: a read-only handle that img owns (never close
 * it), for what concerns that layer alone: its file (qcow_get_file), its
 * geometry (qcow_get_info), its compressed clusters (qcow_compressed_span,
 * qcow_inflate_cluster).  How many layers lie below img: 0 without a
 * backing file, or for an image opened for check (its chain stays closed).
 */
struct qcow_image *qcow_get_layer(const struct qcow_image *img, unsigned depth);
/* The path backing file name backing, found in the image opened as
 * image_path, refers to: relative to that image's directory unless
 * absolute, as QEMU resolves it.  *out is malloc'd: 0 or -ENOMEM. */
int qcow_backing_path(const char *image_path, const char *backing, char **out);
#define QCOW_MAX_CHAIN 64             /* layers below an image, at most */
unsigned qcow_chain_depth(const struct qcow_image *img);
/*
 * Make name (format "raw" or "qcow2") img's backing file, or none (name
 * NULL or ""), with one header write after a flush; nothing in the image
 * changes but that (rebase -u: keeping the guest content is the caller's
 * business).  The old chain is closed, and the new one opened as an open
 * with opts would (not at all for a handle that leaves its chain closed);
 * a failure there fails the handle.
 */
int qcow_set_backing(struct qcow_image *img, const char *name, const char *format,
		     const struct qcow_open_opts *opts);
/* Progress of a long call: done of total bytes (maybe 0, never total). */
typedef void (*qcow_progress_fn)(void *opaque, uint64_t done, uint64_t total);
/*
 * The same keeping the guest content (rebase): wherever img does not
 * allocate a range and its old chain reads differently from the new one,
 * the old chain's bytes are written into img first; then the header names
 * the new backing file, after a flush.  A crash leaves the old backing
 * file with some redundant data in img, or the new one with all it needs.
 * img must have its chain open.
 */
int qcow_rebase(struct qcow_image *img, const char *name, const char *format,
		qcow_progress_fn progress, void *opaque);
/* Where qcow_commit writes: img's backing file, opened for writing by the
 * caller (a qcow2 image through its own handle, a raw file as it is).  Each
 * op returns 0 or -errno. */
struct qcow_commit_target {
	void *opaque;
	int (*write)(void *opaque, const void *buf, uint64_t off, size_t len);
	int (*write_zeroes)(void *opaque, uint64_t off, uint64_t len);
	int (*flush)(void *opaque);
};
/*
 * Commit (qemu-img commit): every range img allocates itself (data,
 * compressed or zero clusters) is written into its backing file through
 * base, at least as large as img already; base is flushed; then, unless
 * keep, img is emptied so that it reads through to the backing file.
 * img is opened with its chain closed (no_backing: the backing file is
 * open for writing instead).  A crash before the flush leaves img whole
 * (the backing file holds some of its data: redundant, and only other
 * images over it see it); one while img empties leaves clusters that read
 * the same bytes as the durable backing file under them.
 */
int qcow_commit(struct qcow_image *img, const struct qcow_commit_target *base, bool keep,
		qcow_progress_fn progress, void *opaque);
/* The path the image was opened by (a backing file's: its name joined to
 * the directory of the image naming it). */
const char *qcow_get_name(const struct qcow_image *img);

/* What the engine did since open (ublk-qcow stats). */
struct qcow_stats {
	uint64_t l2_hits;             /* L2 table lookups the cache answered */
	uint64_t l2_misses;           /* L2 table reads started */
	uint64_t clusters_allocated;  /* host clusters, for data and metadata */
	uint64_t cow_copies;          /* new clusters given old data around a partial write */
	uint64_t refcount_growths;    /* refcount blocks and tables added (written at
				       * once, even in a nowait call: design.md 17) */
};
void qcow_get_stats(const struct qcow_image *img, struct qcow_stats *out);
/* Turn direct IO off on img's POSIX file (opened with O_DIRECT): 0 or -errno. */
int qcow_use_page_cache(struct qcow_image *img);

/* Read one compressed cluster's data: out gets cluster_size bytes. */
int qcow_read_compressed_cluster(struct qcow_image *img, const struct qcow_extent *ext,
				 void *out);
/* The same in two halves for a caller that reads the file itself:
 * qcow_compressed_span() says which bytes hold the stream (checked against
 * the file), qcow_inflate_cluster() inflates them into cluster_size bytes
 * at out. The latter touches nothing of img but its geometry, so it needs no
 * lock; 0 or -EIO for a stream that does not inflate to a whole cluster. */
int qcow_compressed_span(struct qcow_image *img, const struct qcow_extent *ext,
			 uint64_t *offset, size_t *len);
int qcow_inflate_cluster(const struct qcow_image *img, const void *in, size_t in_len, void *out);

/* ------------------------------------------------------------------------
 * Consistency check and repair (format/check.c)
 * ------------------------------------------------------------------------ */
#define QCOW_CHECK_REPAIR_LEAKS  (1U << 0)
#define QCOW_CHECK_REPAIR_ERRORS (1U << 1)
#define QCOW_CHECK_REPAIR_ALL    (QCOW_CHECK_REPAIR_LEAKS | QCOW_CHECK_REPAIR_ERRORS)

struct qcow_check_result {
	uint64_t corruptions;         /* errors left after any repair */
	uint64_t leaks;               /* leaked clusters left after any repair */
	uint64_t check_errors;        /* internal failures (IO errors) */
	uint64_t corruptions_fixed;
	uint64_t leaks_fixed;
	uint64_t allocated_clusters;  /* guest clusters with data */
	uint64_t total_clusters;      /* guest clusters in the virtual disk */
	uint64_t fragmented_clusters;
	uint64_t compressed_clusters;
	uint64_t image_end_offset;    /* highest used host byte + 1 */
};

/*
 * Report callback for each problem found: level "ERROR" or "Leaked cluster" etc.
 * as one human-readable line without trailing newline. May be NULL.
 */
typedef void (*qcow_check_report_fn)(void *opaque, const char *line);

/* Open the image for checking (opts.for_check) before calling this. With
 * repair flags the image must be writable. */
int qcow_check(struct qcow_image *img, unsigned repair_flags,
	       struct qcow_check_result *res, qcow_check_report_fn report, void *opaque);

/* Rebuild every refcount from the metadata (used for dirty images and -r all). */
int qcow_rebuild_refcounts(struct qcow_image *img);

/* ------------------------------------------------------------------------
 * Internal snapshots (format/snapshot.c)
 *
 * create, apply and delete are transactions: they flush, write every new
 * structure past the end of the file, and switch with one header write, so
 * a crash leaves the old image or the new one (doc/design.md section 15).
 * The image must be open read-write and have no write in flight.
 * ------------------------------------------------------------------------ */
struct qcow_snapshot_info {
	char *id;                     /* "1", "2", ... */
	char *name;
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint32_t date_sec, date_nsec; /* wall clock when taken */
	uint64_t vm_clock_nsec;       /* guest clock (0 for disk-only snapshots) */
	uint64_t vm_state_size;       /* bytes of saved VM state (QEMU savevm) */
	uint64_t disk_size;           /* virtual size when taken */
	uint64_t icount;              /* UINT64_MAX: unknown */
};
/* Every snapshot, in table order; free with qcow_snapshot_list_free. */
int qcow_snapshot_list(struct qcow_image *img, struct qcow_snapshot_info **out, uint32_t *n);
void qcow_snapshot_list_free(struct qcow_snapshot_info *v, uint32_t n);
/* The id of snapshot which (an id, else a name) into id; -ENOENT if none. */
int qcow_snapshot_id_of(struct qcow_image *img, const char *which, char *id, size_t len);
/* A disk-only snapshot of the active image. -EEXIST: the name is taken. */
int qcow_snapshot_create(struct qcow_image *img, const char *name);
/* Revert the active image to snapshot which (an id, else a name); the
 * virtual size becomes the snapshot's. *had_vm_state: it has VM state,
 * which is kept but not used. -ENOENT: no such snapshot. */
int qcow_snapshot_apply(struct qcow_image *img, const char *which, bool *had_vm_state);
int qcow_snapshot_delete(struct qcow_image *img, const char *which);
/* Read-only opens: reads and maps now show the snapshot with this id and/or
 * name (either may be NULL, not both), its virtual size included. */
int qcow_snapshot_load(struct qcow_image *img, const char *id, const char *name);

/* ------------------------------------------------------------------------
 * What info shows beyond qcow_get_info
 *
 * An image using a feature outside qcow2-lite (encryption, extended L2
 * entries, an external data file: doc/qcow2-lite.md section 4) is refused
 * by every open but a read-only check open (for_check), which goes on so
 * that info can describe it. Such a handle is for its header alone
 * (qcow_get_info, the calls below, qcow_snapshot_list): its tables mean
 * what the engine does not read, so a caller asks qcow_unsupported_feature
 * before it reads, maps or checks anything through it (qcow_snapshot_load
 * refuses by itself). Nothing can be written to it: a writable open is
 * refused, for_check or not.
 * ------------------------------------------------------------------------ */
/* The feature that stops img being served ("encryption", "extended L2
 * entries", "external data file"); NULL: none. */
const char *qcow_unsupported_feature(const struct qcow_image *img);
/* The external data file's name as the header keeps it; NULL: none. */
const char *qcow_data_file(const struct qcow_image *img);

#define QCOW_LUKS_SLOTS 8
/* Encryption, as far as the headers tell without the key (qemu's names). */
struct qcow_crypto_info {
	uint32_t method;              /* QCOW_CRYPT_NONE, _AES or _LUKS (format.h) */
	/* LUKS only: */
	const char *cipher_alg;       /* "aes-256", ... */
	const char *cipher_mode;      /* "xts", ... */
	const char *ivgen_alg;        /* "plain64", ... */
	const char *ivgen_hash_alg;   /* with "essiv" only, else NULL */
	const char *hash_alg;         /* "sha256", ... */
	char uuid[41];
	uint64_t payload_offset;      /* bytes */
	uint32_t master_key_iters;
	struct {
		bool active;
		uint32_t iters, stripes;  /* active slots only */
		uint64_t key_offset;      /* bytes */
	} slots[QCOW_LUKS_SLOTS];
};
/* Fill *out; a LUKS header is read and checked as qemu checks it (-EINVAL
 * naming what is wrong). */
int qcow_get_crypto_info(struct qcow_image *img, struct qcow_crypto_info *out);

/* Persistent dirty bitmaps (format/bitmap.c): listed here; a read-write
 * handle keeps them up to date by itself (doc/design.md 15b). */
#define QCOW_BITMAP_IN_USE (1U << 0)  /* not saved since a writer opened it */
#define QCOW_BITMAP_AUTO   (1U << 1)  /* enabled: tracks writes */
struct qcow_bitmap_info {
	char *name;
	uint64_t granularity;         /* bytes of guest data per bit */
	uint32_t flags;               /* QCOW_BITMAP_* */
	uint64_t table_offset;        /* the bitmap table */
	uint32_t table_size;          /* its entries */
};
/*
 * The bitmap directory, in its order: none unless the header's bitmaps
 * autoclear bit vouches for it (a writer that does not keep bitmaps clears
 * the bit; qemu ignores them then too). -EINVAL naming what is wrong with a
 * damaged extension or directory. Free with qcow_bitmap_list_free.
 */
int qcow_bitmap_list(struct qcow_image *img, struct qcow_bitmap_info **out, uint32_t *n);
void qcow_bitmap_list_free(struct qcow_bitmap_info *v, uint32_t n);

/* qcow-tool bitmap, as qemu-img bitmap: one action on bitmap name of a
 * read-write image, crash safe (design 15b, "Editing"). ADD creates an
 * empty enabled bitmap of the given granularity; MERGE sets every bit of
 * bitmap src_name of src (NULL: img itself) into name. Errors carry qemu's
 * words in qcow_error(): -EEXIST, -ENOENT, -EINVAL (granularity), -EBUSY
 * (a bitmap in use cannot be read). */
enum qcow_bitmap_action {
	QCOW_BITMAP_ADD, QCOW_BITMAP_REMOVE, QCOW_BITMAP_CLEAR,
	QCOW_BITMAP_ENABLE, QCOW_BITMAP_DISABLE, QCOW_BITMAP_MERGE,
};
int qcow_bitmap_edit(struct qcow_image *img, enum qcow_bitmap_action act, const char *name,
		     uint64_t granularity, struct qcow_image *src, const char *src_name);

#endif /* QCOW_ENGINE_H */
