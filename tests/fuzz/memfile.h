/* SPDX-License-Identifier: MIT */
/*
 * An in-memory, sparse qcow_file backend for the fuzz targets: the fuzzer's
 * input is the initial file content (never copied, never modified), writes
 * go to an overlay of 4 KiB pages, so a hostile image that makes the engine
 * write at 2^50 costs one page, not 2^50 bytes.
 *
 * Limits keep one input fast and bounded: a write past size_limit fails
 * with -EFBIG, more than overlay_limit bytes of written pages with -ENOSPC
 * (both as a real file system would). Fault injection: with fail_at = N,
 * the Nth pwrite/flush/truncate and every one after it fail with -EIO (a
 * device that went away: the file then holds exactly the writes before N,
 * in order, which is one of the states a crash can leave).
 */
#ifndef FUZZ_MEMFILE_H
#define FUZZ_MEMFILE_H

#include <stddef.h>
#include <stdint.h>

#include "qcow/engine.h"

struct memfile_page;

struct memfile {
	const uint8_t *base;            /* initial content: the fuzz input */
	uint64_t base_valid;            /* bytes of base still visible (truncate lowers it) */
	uint64_t size;                  /* logical file size */
	struct memfile_page **slots;    /* open addressing by page index */
	size_t nb_slots, nb_pages;
	uint64_t size_limit;            /* writes/truncates past this: -EFBIG */
	uint64_t overlay_limit;         /* bytes of written pages: past this -ENOSPC */
	uint64_t nb_ops;                /* pwrite/flush/truncate calls so far */
	uint64_t fail_at;               /* 0: never; else fail op number fail_at and later */
	unsigned nb_failed;
};

/* Defaults: 1 GiB file, 32 MiB written. */
#define MEMFILE_SIZE_LIMIT    (1ULL << 30)
#define MEMFILE_OVERLAY_LIMIT (32ULL << 20)

void memfile_init(struct memfile *m, const uint8_t *data, size_t len);
void memfile_free(struct memfile *m);
/*
 * A qcow_file over m. Its close does not free m: one memfile outlives
 * several opens, so a pass can reopen what the previous open left behind.
 */
void memfile_as_qcow_file(struct memfile *m, struct qcow_file *f);

/* Direct access, for the harness (the same semantics as the ops). */
int memfile_pread(struct memfile *m, void *buf, size_t len, uint64_t off);
int memfile_pwrite(struct memfile *m, const void *buf, size_t len, uint64_t off);

/* Write the file's current content to path (triage). 0 or -errno. */
int memfile_dump(struct memfile *m, const char *path);

#endif /* FUZZ_MEMFILE_H */
