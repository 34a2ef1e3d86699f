/* SPDX-License-Identifier: MIT */
/*
 * Clusters compressed on every core for convert -c: the caller hands over
 * clusters in the order they are to be written, worker threads deflate
 * them (qcow_deflate_cluster: no engine state, no lock), and the caller
 * takes them back in the same order and writes them itself, so the engine
 * stays on one thread and the image is laid out as a sequential writer
 * lays it out.  Memory is bounded: at most depth clusters are in the pool.
 */
#ifndef QCOW_TOOL_COMPRESS_H
#define QCOW_TOOL_COMPRESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow/engine.h"

struct cpool;

struct cjob {
	uint64_t off;             /* guest offset of the cluster */
	uint8_t *in;              /* its bytes (a whole cluster, zero padded) */
	uint8_t *out;             /* the stream */
	int64_t out_len;          /* its length; 0: store uncompressed; < 0: -errno */
};

/* threads workers (0: one per online CPU). NULL when memory is short. */
struct cpool *cpool_new(const struct qcow_image *img, unsigned threads);
void cpool_free(struct cpool *p);
/* Is the pool full (take the oldest first)? Is it empty? */
bool cpool_full(const struct cpool *p);
bool cpool_empty(const struct cpool *p);
/* The slot the next cluster goes in: fill job->in, then cpool_submit. */
struct cjob *cpool_next(struct cpool *p);
void cpool_submit(struct cpool *p, uint64_t off);
/* The oldest cluster handed over, once compressed (waits); valid until
 * cpool_release. */
struct cjob *cpool_oldest(struct cpool *p);
void cpool_release(struct cpool *p);

#endif /* QCOW_TOOL_COMPRESS_H */
