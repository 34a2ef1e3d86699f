/* SPDX-License-Identifier: MIT */
/*
 * Inside the request machine: what its files share with each other, and
 * nothing outside them uses.
 *   tag.c    what every stage uses: engine lock, errors, waits, image IO;
 *   write.c  WRITE requests;
 *   flush.c  the flush stage;
 *   io.c     the machine itself (start, advance, completions), READ,
 *            DISCARD and WRITE_ZEROES; its entry points are ublk-qcow.h's.
 */
#ifndef UQ_IO_H
#define UQ_IO_H

#include "qcow/format.h"
#include "ublk-qcow.h"

/* user_data extra bits of a read or a fill (UQ_UD_DATA, UQ_UD_FILL): the
 * offset in the request and the length, in bytes; of a backing piece
 * (UQ_UD_BASE): its place in the scratch buffer and length, in sectors.
 * 21 bits each (a length of the largest request takes 21). */
#define UQ_EXTRA_SHIFT 21
#define UQ_EXTRA_MASK ((1ULL << UQ_EXTRA_SHIFT) - 1)
_Static_assert(UQ_MAX_IO_BYTES <= UQ_EXTRA_MASK && 2 * UQ_EXTRA_SHIFT <= UQ_UD_EXTRA_BITS,
	       "a request's offsets and lengths fit a user_data");
_Static_assert(((2ULL << QCOW_MAX_CLUSTER_BITS) + 2 * UQ_BUF_ALIGN) >> 9 <= UQ_EXTRA_MASK,
	       "a scratch buffer's sectors fit a user_data");
static inline uint64_t uq_extra_pair(uint64_t pos, uint64_t len)
{
	return pos | len << UQ_EXTRA_SHIFT;
}
static inline uint64_t uq_extra_pos(uint64_t extra)
{
	return extra & UQ_EXTRA_MASK;
}
static inline uint64_t uq_extra_len(uint64_t extra)
{
	return extra >> UQ_EXTRA_SHIFT;
}
/* user_data extra of a copy-on-write read: the part, | this for its
 * compressed stream */
#define UQ_OLD_STREAM 2u

/* tag.c: the engine lock, errors, waits */
void eng_lock(struct uq_dev *dev);
void eng_unlock(struct uq_dev *dev);
/* The errno a request commits for an engine or image error. */
int io_errno(int err);
/* After an engine call: does t wait (parked), or run the flush it needs? */
bool waits(const struct uq_tag *t);
void tag_error(struct uq_tag *t, int err);
void tag_log(const struct uq_tag *t, const char *what, int err, const char *detail);
void eng_log_locked(const struct uq_tag *t, const char *what, int err);
bool parkable(const struct uq_dev *dev, int err);
void park_locked(struct uq_tag *t, int err);
/* Start the engine's flush with t driving it (a guest FLUSH's writes the
 * persistent bitmaps back too, unless --bitmaps=close): qcow_flush_start's
 * result. */
int drive_start_locked(struct uq_tag *t);
/* A flush stage that wants everything durable, while the engine's flush
 * runs: may it issue an fsync of its own instead (qcow_sync_begin)? */
bool own_sync_begin_locked(struct uq_tag *t);
void engine_event_locked(struct uq_queue *self, enum qcow_wait what);
/* One engine call for t under the lock: -EAGAIN a table read for t to
 * issue (issue_meta), a wait parks t, a failure is logged. */
int eng_call(struct uq_tag *t, int (*fn)(struct uq_tag *), const char *what);

/* tag.c: image IO */
bool zero_copy(const struct uq_tag *t);
/* t's scratch buffer (2 clusters and 2 alignment units), allocated on first
 * use and kept; NULL (logged) when memory is short. */
uint8_t *tag_scratch(struct uq_tag *t);
struct io_uring_sqe *prep_fixed(struct uq_tag *t, bool write, uint64_t pos, uint64_t len,
				uint64_t host, unsigned depth);
void queued(struct uq_tag *t, struct io_uring_sqe *sqe, uint64_t ud);
void issue_meta(struct uq_tag *t);
/* A metadata read of t's failed: a plan reading its old bytes ends with the
 * error (write_run gives its clusters back); anything else fails t. */
void meta_failed(struct uq_tag *t);

/* write.c */
/* Take t's writes up to t->write_end as far as they go now: true once all
 * of them are done (t->pos == t->write_end). */
bool write_run(struct uq_tag *t);
void write_step(struct uq_tag *t);
void write_done(struct uq_tag *t, uint64_t len, int res);
void old_read_done(struct uq_tag *t, unsigned i, int res);
void base_read_done(struct uq_tag *t, uint64_t extra, int res);

/* flush.c */
enum uq_flush_stage flush_wanted(const struct uq_tag *t);
void flush_step(struct uq_tag *t);
bool flush_drive(struct uq_tag *t);
void uq_io_flush_done(struct uq_tag *t, uint64_t len, int res);
void uq_io_sync_done(struct uq_tag *t, int res);

#endif
