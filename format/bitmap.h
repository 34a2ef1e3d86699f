/* SPDX-License-Identifier: MIT */
/*
 * Persistent dirty bitmaps inside format/: the bitmap directory, and one
 * bitmap held in pieces, shared by bitmap.c (the directory, tables and
 * pieces), bitmap_keep.c (a writer keeping its bitmaps up to date) and
 * bitmap_edit.c (qcow-tool bitmap, resize).
 *
 * A bitmap is held as its table (read and checked whole: one 8-byte entry
 * per data cluster of bits, so a table is 1/cluster_size of its bitmap)
 * and, per piece (the bits one data cluster holds), only the bits set
 * since it was loaded (its delta; NULL where none). Nothing of the bits
 * already on disk is read until the bitmap is written back, one piece at a
 * time, and only the pieces that changed get new clusters: the others keep
 * the clusters they had. Memory is the tables plus the pieces touched,
 * whatever the disk's size.
 */
#ifndef QCOW_BITMAP_H
#define QCOW_BITMAP_H

#include "internal.h"

/* A directory entry (big-endian); extra data, the name and padding to 8
 * bytes follow. */
struct bitmap_dir_entry {
	uint64_t table_offset;
	uint32_t table_size;
	uint32_t flags;
	uint8_t type;
	uint8_t granularity_bits;
	uint16_t name_size;
	uint32_t extra_data_size;
} __attribute__((packed));
_Static_assert(sizeof(struct bitmap_dir_entry) == 24, "bitmap directory entry is 24 bytes");

/* qemu's limits (block/qcow2.h, qcow2-bitmap.c) */
#define BITMAP_MAX_BITMAPS           65535U
#define BITMAP_MAX_DIR_SIZE          (1024ULL * BITMAP_MAX_BITMAPS)
#define BITMAP_MAX_TABLE_SIZE        0x8000000U
#define BITMAP_MAX_PHYS_SIZE         0x20000000ULL
#define BITMAP_MIN_GRANULARITY_BITS  9
#define BITMAP_MAX_GRANULARITY_BITS  31
#define BITMAP_MAX_NAME_SIZE         1023
#define BITMAP_DIRTY_TRACKING        1
#define BITMAP_KNOWN_FLAGS           (QCOW_BITMAP_IN_USE | QCOW_BITMAP_AUTO)

/* The directory as read (or as to be written): buf holds size bytes. */
struct bitmap_dir {
	uint32_t nb;                  /* entries the extension announces */
	uint64_t size, offset;
	uint8_t *buf;
};

/* A table entry: the piece's cluster, or with no cluster all clear (0) or
 * all set (ALL_ONES). */
#define TABLE_RESERVED  0xff000000000001feULL
#define TABLE_OFFSET    0x00fffffffffffe00ULL
#define TABLE_ALL_ONES  1ULL

/* Where the fields an in-place rewrite changes lie in a directory entry. */
#define BITMAP_ENTRY_TABLE_OFFSET 0
#define BITMAP_ENTRY_FLAGS        12

struct bitmap {
	char *name;
	uint64_t at;                  /* its directory entry's offset (kept ones) */
	unsigned gran_bits;
	uint32_t flags;               /* QCOW_BITMAP_*, as in the directory */
	uint64_t nb_bits;             /* one per granule of the disk it is for */
	uint64_t old_nb_bits;         /* ... of the disk its table was for */
	uint64_t piece_bytes;         /* one data cluster */
	uint64_t table_offset;        /* the table the directory names */
	uint32_t table_size;
	uint64_t *table;              /* its entries, host order, checked */
	uint32_t new_size;            /* pieces of the disk it is for */
	uint8_t **delta;              /* new_size pieces: bits set since loaded */
	bool resized;                 /* new_size, nb_bits: for a new disk size */
	uint64_t *mem;                /* delta bytes held by its owner (or NULL) */
	uint64_t mem_cap;             /* the most *mem may reach; 0: no cap */
	bool table_dirty;             /* table has entries its clusters lack */
	uint8_t *fresh;               /* per piece: its cluster came since it was
				       * last written (nothing of it on disk) */
	uint64_t *new_entries;        /* bitmap_write's table, host order */
	uint64_t new_table;           /* its offset; 0: not written */
};

/* The extension's directory, read whole and bounded; -ENOENT: no extension. */
int bitmap_dir_read(struct qcow_image *img, struct bitmap_dir *d);
/* The extension and the autoclear bit, in memory, naming d (none when d
 * is empty); the caller writes the header. */
int bitmap_dir_set_ext(struct qcow_image *img, const struct bitmap_dir *d);

/* Walk the directory: the entry at *off into *info (its name, which the
 * caller frees, even on error), *off past it; *at the entry's offset and
 * *foreign whether it has extra data we do not know (then not checked). */
int bitmap_dir_next(struct qcow_image *img, const struct bitmap_dir *d, uint64_t *off,
		    struct qcow_bitmap_info *info, uint64_t *at, bool *foreign);

/* b from a directory entry, for the disk as it is: its table read and
 * checked (the table must be the size the disk needs), no bits yet. The
 * name is copied. */
int bitmap_load(struct qcow_image *img, const struct qcow_bitmap_info *info, uint64_t at,
		struct bitmap *b);
/* A new, empty bitmap (no table on disk) of granularity 2^gran_bits. */
int bitmap_new(struct qcow_image *img, const char *name, unsigned gran_bits, uint32_t flags,
	       struct bitmap *b);
/* From now on b is for a disk of size bytes (resize): pieces past its end
 * dropped, new ones clear. */
int bitmap_resize(struct qcow_image *img, struct bitmap *b, uint64_t size);
/* Granules first..last (past the disk's end: ignored) set. -ENOMEM: no
 * memory for a piece, or b->mem would pass b->mem_cap; b is unchanged. */
int bitmap_set(struct bitmap *b, uint64_t first, uint64_t last);
/* Does b have bits set since it was loaded (or a new size)? */
bool bitmap_changed(const struct bitmap *b);
/* Bits from bit limit on of piece buf (whose first bit is first) cleared. */
void bitmap_clear_from(uint8_t *buf, uint64_t cs, uint64_t first, uint64_t limit);
/* Let go of piece i's delta. */
void bitmap_drop_piece(struct bitmap *b, uint32_t i);
/* Piece i as it stands (the bits on disk, then the delta), bits past the
 * disk's end clear: cluster_size bytes into buf. */
int bitmap_piece(struct qcow_image *img, const struct bitmap *b, uint64_t i, uint8_t *buf);
/* Call fn for each run of set granules [first, last] of b, in order. */
int bitmap_for_each_run(struct qcow_image *img, const struct bitmap *b,
			int (*fn)(void *opaque, uint64_t first, uint64_t last), void *opaque);
/* Write b's bits to new clusters: each changed piece (a cluster; none when
 * all clear), the others keeping theirs, then the table (new_entries,
 * new_table). Durable only after a flush. */
int bitmap_write(struct qcow_image *img, struct bitmap *b);
/* Free (deferred) what b's old table owned and its new one does not:
 * every cluster when it was not written (removed, cleared). */
int bitmap_free_replaced(struct qcow_image *img, const struct bitmap *b);
void bitmap_release(struct bitmap *b);

#endif /* QCOW_BITMAP_H */
