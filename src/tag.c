/* SPDX-License-Identifier: MIT */
/*
 * What every stage of a request uses (io.c's machine, write.c, flush.c):
 * the engine lock, a request's errors and their log lines, waiting (a
 * request parked on the list of what it waits for, and woken, here or on
 * another queue, when that happens), one engine call, and image IO queued
 * on the ring.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

static const char *op_name(unsigned op)
{
	switch (op) {
	case UBLK_IO_OP_READ:
		return "READ";
	case UBLK_IO_OP_WRITE:
		return "WRITE";
	case UBLK_IO_OP_FLUSH:
		return "FLUSH";
	case UBLK_IO_OP_DISCARD:
		return "DISCARD";
	case UBLK_IO_OP_WRITE_ZEROES:
		return "WRITE_ZEROES";
	default:
		return "op";
	}
}

void eng_lock(struct uq_dev *dev)
{
	pthread_mutex_lock(&dev->engine_lock);
}

void eng_unlock(struct uq_dev *dev)
{
	pthread_mutex_unlock(&dev->engine_lock);
}

/* The errno a failed request reports: the block layer knows ENOSPC and
 * EOPNOTSUPP; everything else from the image is an IO error. */
int io_errno(int err)
{
	if (err == -ENOSPC || err == -EDQUOT)
		return -ENOSPC;
	if (err == -EOPNOTSUPP)
		return err;
	return -EIO;
}

/* After an engine call: does t wait (parked), or run the flush it needs? */
bool waits(const struct uq_tag *t)
{
	return t->parked || t->driving;
}

void tag_error(struct uq_tag *t, int err)
{
	if (!t->error)
		t->error = err;
}

/* Log a failure of the tag's request: "func: -errno (strerror)" plus context. */
void tag_log(const struct uq_tag *t, const char *what, int err, const char *detail)
{
	uq_err("queue %u tag %u: %s of %llu bytes at %llu: %s: %d (%s)%s%s", t->q->id,
	       t->tag, op_name(t->op), (unsigned long long)t->len,
	       (unsigned long long)t->off, what, err, strerror(-err),
	       detail && *detail ? ": " : "", detail ? detail : "");
}

/* Under the engine lock: log an engine failure with the engine's message. */
void eng_log_locked(const struct uq_tag *t, const char *what, int err)
{
	tag_log(t, what, err, qcow_error(t->q->dev->img));
}

/* Under the engine lock: is err a wait for another request's progress? */
bool parkable(const struct uq_dev *dev, int err)
{
	return err == -EBUSY ||
	       (err == -ENOMEM && (dev->meta_inflight > 0 || qcow_flush_running(dev->img)));
}

/*
 * Under the engine lock, after err: park t on the list of what it waits for;
 * or, when dirty tables are in the way, have t run the flush that writes
 * them (t->driving; uq_io_advance drives it, then t goes on), or wait for
 * the end of the one running.
 */
void park_locked(struct uq_tag *t, int err)
{
	struct uq_queue *q = t->q;
	enum qcow_wait why = err == -EBUSY ? qcow_busy_reason(q->dev->img) : QCOW_WAIT_ANY;
	struct uq_wait_list *l;
	int ret;

	if (why == QCOW_WAIT_WRITEBACK) {
		ret = drive_start_locked(t);
		if (ret == 0) {
			uq_count(q, UQ_QS_WRITEBACKS, 1);
			return;
		}
		if (ret < 0 && ret != -EBUSY) {
			eng_log_locked(t, "qcow_flush_start", ret);
			return;		/* not waiting: the caller fails t */
		}
		/* 1 cannot be (dirty tables, no flush running): retry on anything */
		why = ret == -EBUSY ? QCOW_WAIT_FLUSH : QCOW_WAIT_ANY;
	}
	l = &q->parked[why < UQ_PARK_LISTS ? why : QCOW_WAIT_ANY];
	t->parked = true;
	t->next_parked = NULL;
	uq_count(q, UQ_QS_WAITS, 1);
	if (l->tail)
		l->tail->next_parked = t;
	else
		l->head = t;
	l->tail = t;
	q->nr_parked++;
}

/* Lists a what-event wakes: its own, and the waits with no name. */
static unsigned wakes(enum qcow_wait what)
{
	return 1U << what | 1U << QCOW_WAIT_ANY;
}

static bool waiting_on(const struct uq_queue *q, unsigned mask)
{
	unsigned k;

	for (k = 0; k < UQ_PARK_LISTS; k++)
		if ((mask & 1U << k) && q->parked[k].head)
			return true;
	return false;
}

/*
 * Under the engine lock, after what happened (a metadata read completed:
 * LOAD; a write ended: WRITE; the flush ended: FLUSH; the flush released
 * its slots: ANY): the requests waiting for it may go on now, here and on
 * the other queues.
 */
void engine_event_locked(struct uq_queue *self, enum qcow_wait what)
{
	struct uq_dev *dev = self->dev;
	unsigned i, mask = wakes(what);

	self->retry |= mask;
	for (i = 0; i < dev->nr_queues; i++) {
		struct uq_queue *o = &dev->queues[i];

		if (o == self || !waiting_on(o, mask))
			continue;
		o->wake_mask |= mask;
		if (o->wake_sent)
			continue;
		o->wake_sent = true;
		uq_queue_wake(o);
	}
}

/*
 * The engine flush's flags for t: a guest's FLUSH writes the persistent
 * bitmaps back too, unless --bitmaps=close keeps them for close (as QEMU).
 * Every other flush (a FUA write's, --recoverable's metadata, one that
 * makes room in the caches) writes only metadata: a bitmap write-back costs
 * fsyncs, and only a FLUSH says the guest wants a consistent image.
 */
static unsigned flush_flags(const struct uq_tag *t)
{
	bool bitmaps = t->q->dev->opt.bitmaps == UQ_BITMAPS_FLUSH;

	return t->op == UBLK_IO_OP_FLUSH && bitmaps ? QCOW_FLUSH_BITMAPS : 0;
}

/*
 * Only with direct IO: through the page cache, a writeback error is
 * reported to one fsync of a file description, and another in flight
 * beside it could succeed over data that was lost.
 */
bool own_sync_begin_locked(struct uq_tag *t)
{
	struct uq_dev *dev = t->q->dev;

	return t->flush == UQ_FLUSH_ALL && dev->cache == UQ_CACHE_NONE &&
	       qcow_sync_begin(dev->img, flush_flags(t), &t->sync);
}

int drive_start_locked(struct uq_tag *t)
{
	struct uq_dev *dev = t->q->dev;
	int ret = qcow_flush_start(dev->img, flush_flags(t));

	if (ret == 0) {
		t->driving = true;
		t->drive_gen = ++dev->flushes_started;
	}
	return ret;
}

/*
 * Run one synchronous engine call for t: park on a transient -EBUSY, log a
 * real failure.  Returns the call's result; waits(t) tells the caller to
 * stop here.
 */
int eng_call(struct uq_tag *t, int (*fn)(struct uq_tag *), const char *what)
{
	struct uq_dev *dev = t->q->dev;
	int ret;

	eng_lock(dev);
	ret = fn(t);
	if (ret == -EAGAIN)			/* a table read for t to issue */
		dev->meta_inflight++;
	else if (ret < 0 && parkable(dev, ret))
		park_locked(t, ret);
	else if (ret < 0)
		eng_log_locked(t, what, ret);
	eng_unlock(dev);
	return ret;
}

/* ------------------------------------------------------------ image IO */

bool zero_copy(const struct uq_tag *t)
{
	return t->q->dev->data_mode != UQ_DATA_COPY;
}

uint8_t *tag_scratch(struct uq_tag *t)
{
	size_t len = 2 * (size_t)t->q->dev->max_cluster + 2 * UQ_BUF_ALIGN;

	if (!t->scratch && posix_memalign((void **)&t->scratch, UQ_BUF_ALIGN, len)) {
		t->scratch = NULL;
		tag_log(t, "scratch buffer", -ENOMEM, NULL);
	}
	return t->scratch;
}

/* An SQE for a READ_FIXED or WRITE_FIXED of len bytes at request byte pos,
 * at host of layer depth's file (writes: 0, the image), registering the
 * request's memory first where we must; NULL on failure. */
struct io_uring_sqe *prep_fixed(struct uq_tag *t, bool write, uint64_t pos, uint64_t len,
				uint64_t host, unsigned depth)
{
	struct uq_queue *q = t->q;
	struct io_uring_sqe *sqe;
	void *addr = zero_copy(t) ? (void *)(uintptr_t)pos : t->buf + pos;

	if (!t->buf_ready) {
		/* zero copy: the registration goes first in the same submission */
		if (uq_queue_buf_register(t) < 0)
			return NULL;
		t->ops++;
		t->buf_ready = t->zc_reg = true;
	}
	sqe = uq_get_sqe(q);
	if (!sqe)
		return NULL;
	if (write)
		io_uring_prep_write_fixed(sqe, UQ_FIXED_IMAGE, addr, (unsigned)len, host, t->tag);
	else
		io_uring_prep_read_fixed(sqe, UQ_FIXED_IMAGE + (int)depth, addr, (unsigned)len, host,
					 t->tag);
	sqe->flags |= IOSQE_FIXED_FILE;
	return sqe;
}

/* Count a queued image op of t's with user data ud. */
void queued(struct uq_tag *t, struct io_uring_sqe *sqe, uint64_t ud)
{
	io_uring_sqe_set_data64(sqe, ud);
	t->ops++;
	t->q->backend++;
}

void meta_failed(struct uq_tag *t)
{
	if (t->write != UQ_WRITE_OLD)
		tag_error(t, -EIO);
	else if (!t->write_result)
		t->write_result = -EIO;
}

/* Queue the table read the engine asked for in t->need (from the file of
 * the layer it belongs to). */
void issue_meta(struct uq_tag *t)
{
	struct uq_queue *q = t->q;
	struct uq_dev *dev = q->dev;
	struct io_uring_sqe *sqe = t->need.depth < dev->nr_layers ? uq_get_sqe(q) : NULL;

	if (!sqe) {
		eng_lock(dev);
		qcow_meta_read_done(dev->img, &t->need, -EIO);
		dev->meta_inflight--;
		engine_event_locked(q, QCOW_WAIT_LOAD);
		eng_unlock(dev);
		meta_failed(t);
		return;
	}
	io_uring_prep_read(sqe, UQ_FIXED_IMAGE + t->need.depth, t->need.buf,
			   (unsigned)t->need.len, t->need.offset);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_META, t->tag, 0));
	t->wait_meta = true;
	q->backend++;
	uq_count(q, t->need.cache == QCOW_TABLE_REFCOUNT ? UQ_QS_REFCOUNT_READS : UQ_QS_L2_READS, 1);
}
