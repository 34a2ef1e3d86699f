/* SPDX-License-Identifier: MIT */
/*
 * The on-disk map of a qcow2-lite image: every structure the engine reads or
 * writes, in file order, as packed big-endian structs with their sizes pinned
 * by static asserts. doc/qcow2-lite.md says the same thing in prose.
 *
 * All multi-byte fields are big-endian on disk; convert with be64toh() and
 * friends at the boundary, never store a host-order value in these structs.
 */
#ifndef QCOW_FORMAT_H
#define QCOW_FORMAT_H

#include <stdint.h>

#define QCOW_MAGIC              0x514649fbU     /* "QFI\xfb" */

/* Cluster sizes the format allows; qcow2-lite supports all of them. */
#define QCOW_MIN_CLUSTER_BITS   9               /* 512 B */
#define QCOW_MAX_CLUSTER_BITS   21              /* 2 MiB */
#define QCOW_DEFAULT_CLUSTER_BITS 16            /* 64 KiB, as qemu-img */

/* refcount_bits = 1 << refcount_order; orders 0 (1 bit) .. 6 (64 bits). */
#define QCOW_MAX_REFCOUNT_ORDER 6
#define QCOW_DEFAULT_REFCOUNT_ORDER 4           /* 16 bits, as qemu-img */

/*
 * Version 2 header (compat=0.10): the first 72 bytes of every image.
 */
struct qcow_header_v2 {
	uint32_t magic;
	uint32_t version;                 /* 2 or 3 */
	uint64_t backing_file_offset;     /* 0: no backing file */
	uint32_t backing_file_size;       /* bytes, no NUL; at most 1023 */
	uint32_t cluster_bits;
	uint64_t size;                    /* virtual disk size in bytes */
	uint32_t crypt_method;            /* 0 only: encryption is refused */
	uint32_t l1_size;                 /* entries in the active L1 table */
	uint64_t l1_table_offset;         /* cluster aligned */
	uint64_t refcount_table_offset;   /* cluster aligned */
	uint32_t refcount_table_clusters;
	uint32_t nb_snapshots;
	uint64_t snapshots_offset;        /* cluster aligned, 0 when nb_snapshots 0 */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow_header_v2) == 72, "qcow2 v2 header is 72 bytes");

/*
 * Version 3 header (compat=1.1): the v2 fields, then these. header_length
 * says how much of it the writer knew; fields past it read as zero.
 */
struct qcow_header_v3 {
	struct qcow_header_v2 v2;
	uint64_t incompatible_features;   /* QCOW_INCOMPAT_* */
	uint64_t compatible_features;     /* QCOW_COMPAT_* */
	uint64_t autoclear_features;      /* QCOW_AUTOCLEAR_* */
	uint32_t refcount_order;
	uint32_t header_length;           /* 104 or 112 (with compression_type) */
	uint8_t  compression_type;        /* 0 zlib, 1 zstd (with incompatible bit 3) */
	uint8_t  padding[7];              /* pads header_length to a multiple of 8 */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow_header_v3) == 112, "qcow2 v3 header is 112 bytes");
#define QCOW_V3_MIN_HEADER_LENGTH 104

/* Incompatible feature bits: an unknown bit set means "do not open". */
#define QCOW_INCOMPAT_DIRTY        (1ULL << 0) /* refcounts may be stale (lazy refcounts or crash) */
#define QCOW_INCOMPAT_CORRUPT      (1ULL << 1) /* metadata known corrupt: writes refused */
#define QCOW_INCOMPAT_DATA_FILE    (1ULL << 2) /* external data file: refused */
#define QCOW_INCOMPAT_COMPRESSION  (1ULL << 3) /* compression_type is not zlib (zstd) */
#define QCOW_INCOMPAT_EXTL2        (1ULL << 4) /* extended L2 entries (subclusters): refused */
#define QCOW_INCOMPAT_KNOWN        (QCOW_INCOMPAT_DIRTY | QCOW_INCOMPAT_CORRUPT | \
				    QCOW_INCOMPAT_DATA_FILE | QCOW_INCOMPAT_COMPRESSION | \
				    QCOW_INCOMPAT_EXTL2)

/* Compatible feature bits: safe to ignore when unknown. */
#define QCOW_COMPAT_LAZY_REFCOUNTS (1ULL << 0) /* refcounts updated lazily; dirty bit guards them */

/* Autoclear bits: a writer that does not understand one must clear it. */
#define QCOW_AUTOCLEAR_BITMAPS     (1ULL << 0) /* persistent dirty bitmaps extension is consistent */
#define QCOW_AUTOCLEAR_DATA_FILE_RAW (1ULL << 1) /* external data file is raw: only with DATA_FILE */

#define QCOW_COMPRESSION_ZLIB      0
#define QCOW_COMPRESSION_ZSTD      1               /* zstd frames, as QEMU writes them */

#define QCOW_CRYPT_NONE            0
#define QCOW_CRYPT_AES             1               /* refused */
#define QCOW_CRYPT_LUKS            2               /* refused */

/*
 * Header extensions follow the header (at header_length for v3, 72 for v2),
 * each 8-byte aligned, until an END extension. They must all lie inside the
 * first cluster.
 */
struct qcow_ext_header {
	uint32_t type;                    /* QCOW_EXT_* */
	uint32_t length;                  /* payload bytes, padding not included */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow_ext_header) == 8, "extension header is 8 bytes");

#define QCOW_EXT_END               0x00000000U /* end of the extension area */
#define QCOW_EXT_BACKING_FORMAT    0xe2792acaU /* backing file format name, e.g. "qcow2" */
#define QCOW_EXT_FEATURE_TABLE     0x6803f857U /* feature name table (informational) */
#define QCOW_EXT_BITMAPS           0x23852875U /* persistent bitmaps: maintained (bitmap.c) */
#define QCOW_EXT_CRYPTO            0x0537be77U /* full disk encryption header: refused */
#define QCOW_EXT_DATA_FILE         0x44415441U /* external data file name: refused */

/* One entry of the feature name table extension. */
struct qcow_feature_name {
	uint8_t type;                     /* QCOW_FEAT_TYPE_* */
	uint8_t bit;                      /* bit number within that feature field */
	char    name[46];                 /* NUL padded, not necessarily terminated */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow_feature_name) == 48, "feature name entry is 48 bytes");
#define QCOW_FEAT_TYPE_INCOMPAT    0
#define QCOW_FEAT_TYPE_COMPAT      1
#define QCOW_FEAT_TYPE_AUTOCLEAR   2

#define QCOW_MAX_BACKING_FILE_NAME 1023

/*
 * L1 table entry (64 bits): where an L2 table lives.
 *   bits  0..8   reserved, must be zero
 *   bits  9..55  host offset of the L2 table (cluster aligned); 0: unallocated
 *   bits 56..62  reserved, must be zero
 *   bit  63      COPIED: the L2 table's refcount is exactly 1 (writable in place)
 */
#define QCOW_L1E_OFFSET_MASK       0x00fffffffffffe00ULL
#define QCOW_L1E_RESERVED_MASK     0x7f000000000001ffULL
#define QCOW_OFLAG_COPIED          (1ULL << 63)

/*
 * L2 table entry (64 bits), standard cluster:
 *   bit  0       ZERO (v3 only): the cluster reads as zeros
 *   bits  1..8   reserved, must be zero
 *   bits  9..55  host offset of the data cluster (cluster aligned); 0: none
 *   bits 56..61  reserved, must be zero
 *   bit  62      COMPRESSED: 0 here
 *   bit  63      COPIED: the data cluster's refcount is exactly 1
 *
 * Compressed cluster (bit 62 set), with x = 62 - (cluster_bits - 8):
 *   bits  0..x-1   host byte offset of the compressed data (not aligned)
 *   bits  x..61    number of additional 512-byte sectors the data touches
 *                  (the data ends within the sector after the last counted)
 *   bit  63        always 0 for compressed clusters
 */
#define QCOW_OFLAG_COMPRESSED      (1ULL << 62)
#define QCOW_OFLAG_ZERO            (1ULL << 0)
#define QCOW_L2E_OFFSET_MASK       0x00fffffffffffe00ULL
#define QCOW_L2E_RESERVED_MASK     0x3f000000000001feULL
#define QCOW_COMPRESSED_SECTOR_SIZE 512ULL

/* Refcount table entry: host offset of a refcount block (bits 9..63), 0: none. */
#define QCOW_REFT_OFFSET_MASK      0xfffffffffffffe00ULL
#define QCOW_REFT_RESERVED_MASK    0x00000000000001ffULL

/* The largest offset an L1/L2 entry can express (bits 9..55). */
#define QCOW_MAX_HOST_OFFSET       (1ULL << 56)

/* Sanity limits the engine enforces on hostile headers (as QEMU does). */
#define QCOW_MAX_L1_BYTES          (32ULL << 20)   /* 32 MiB of L1 table */
#define QCOW_MAX_REFTABLE_BYTES    (8ULL << 20)    /* 8 MiB of refcount table */
#define QCOW_MAX_SNAPSHOTS         65536

/*
 * Snapshot table entry header; followed by extra_data_size bytes of extra
 * data, the id string, the name string, padding to 8 bytes.
 */
struct qcow_snapshot_header {
	uint64_t l1_table_offset;
	uint32_t l1_size;
	uint16_t id_str_size;
	uint16_t name_size;
	uint32_t date_sec;
	uint32_t date_nsec;
	uint64_t vm_clock_nsec;
	uint32_t vm_state_size;           /* 32-bit copy; extra data has 64 bits */
	uint32_t extra_data_size;
} __attribute__((packed));
_Static_assert(sizeof(struct qcow_snapshot_header) == 40, "snapshot header is 40 bytes");

struct qcow_snapshot_extra {
	uint64_t vm_state_size_large;
	uint64_t disk_size;               /* virtual size when the snapshot was taken */
	uint64_t icount;                  /* -1: unknown */
} __attribute__((packed));
_Static_assert(sizeof(struct qcow_snapshot_extra) == 24, "snapshot extra is 24 bytes");

#endif /* QCOW_FORMAT_H */
