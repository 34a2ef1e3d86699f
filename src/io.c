/* SPDX-License-Identifier: MIT */
/*
 * Serving one request: a small state machine per tag, driven from the
 * queue thread's CQE loop.
 *
 *   READ   walks the request with qcow_map_nowait.  DATA extents become
 *          READ_FIXED from the image into the tag's buffer (all in flight
 *          at once); holes and zero clusters are zero-filled explicitly;
 *          compressed clusters are inflated synchronously (rare).  An L2
 *          miss (-EAGAIN) sends the table read through the ring and the walk
 *          goes on when it completes.
 *   WRITE  the L2 table loaded through the ring like a READ's, then
 *          qcow_write_begin_nowait (allocation, no IO), the old bytes its
 *          copy-on-write keeps read through the ring, the guest bytes and
 *          those parts written (one vectored write in copy mode), then
 *          qcow_write_end publishes the mapping; repeated until the whole
 *          request is written.  FUA adds a flush at the end.
 *   DISCARD, WRITE_ZEROES: one engine call per L2 table's span, its table
 *          loaded through the ring like a READ's.
 *   FLUSH  the engine's flush machine (qcow_flush_start/next/io_done): its
 *          table writes and fsyncs go through the ring, and the engine lock
 *          is held only between batches.  One flush runs at a time; a
 *          request that finds one running waits for its end and asks again
 *          (usually nothing is left to do: it was covered).  FUA writes end
 *          with the same flush, and with --recoverable writes, discards and
 *          zeroings end with it whenever metadata is unwritten.
 *
 * -EBUSY from the engine (an overlapping allocation, an L2 table another
 * request is loading, the flush in progress; -ENOMEM while every cache slot
 * is loading or held by the flush) parks the request on the list of what
 * it waits for (enum qcow_wait, from the engine): an overlapping
 * allocation's waiters are retried when a write ends, a load's when a
 * metadata read completes, the flush's when it ends, and those whose wait
 * has no name after any of these; on this queue or, through its eventfd,
 * on any other.  The request is committed once, after its last piece: the full
 * length, or a negative errno (never a short count, never stale bytes).
 *
 * Data modes (enum uq_data_mode):
 *   copy          image IO reads into and writes from the tag's registered
 *                 buffer; the driver copies between it and the request;
 *   zero-copy     the request's own pages, registered in the ring's buffer
 *                 table at index tag (REGISTER_IO_BUF) in the submission of
 *                 the first image IO that needs them, and unregistered in
 *                 the submission of the commit (queue.c);
 *   auto-buf-reg  the driver registers them at index tag before it hands
 *                 the request over, and unregisters them at the commit; a
 *                 request it could not register comes flagged NEED_REG_BUF
 *                 and is served as in zero-copy mode.
 * Image IO addresses request pages by byte offset.  Bytes the server makes
 * up itself (zeros, inflated clusters, the tail of a read past the end of
 * the file) go in through the ring too: a write to /dev/ublkcN at the
 * request's user-copy offset, counted like any image IO, so the commit
 * waits for them.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ublk-qcow.h"

/* user_data extra bits of a data op: buffer offset and length, 20 bits each */
#define UQ_EXTRA_SHIFT 20
#define UQ_EXTRA_MASK ((1ULL << UQ_EXTRA_SHIFT) - 1)

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

static void eng_lock(struct uq_dev *dev)
{
	pthread_mutex_lock(&dev->engine_lock);
}

static void eng_unlock(struct uq_dev *dev)
{
	pthread_mutex_unlock(&dev->engine_lock);
}

/* The errno a failed request reports: the block layer knows ENOSPC and
 * EOPNOTSUPP; everything else from the image is an IO error. */
static int io_errno(int err)
{
	if (err == -ENOSPC || err == -EDQUOT)
		return -ENOSPC;
	if (err == -EOPNOTSUPP)
		return err;
	return -EIO;
}

/* After an engine call: does t wait (parked), or run the flush it needs? */
static bool waits(const struct uq_tag *t)
{
	return t->parked || t->driving;
}

static void tag_error(struct uq_tag *t, int err)
{
	if (!t->error)
		t->error = err;
}

/* Log a failure of the tag's request: "func: -errno (strerror)" plus context. */
static void tag_log(const struct uq_tag *t, const char *what, int err, const char *detail)
{
	uq_err("queue %u tag %u: %s of %llu bytes at %llu: %s: %d (%s)%s%s", t->q->id,
	       t->tag, op_name(t->op), (unsigned long long)t->len,
	       (unsigned long long)t->off, what, err, strerror(-err),
	       detail && *detail ? ": " : "", detail ? detail : "");
}

/* Under the engine lock: log an engine failure with the engine's message. */
static void eng_log_locked(const struct uq_tag *t, const char *what, int err)
{
	tag_log(t, what, err, qcow_error(t->q->dev->img));
}

/* Under the engine lock: is err a wait for another request's progress? */
static bool parkable(const struct uq_dev *dev, int err)
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
static void park_locked(struct uq_tag *t, int err)
{
	struct uq_queue *q = t->q;
	enum qcow_wait why = err == -EBUSY ? qcow_busy_reason(q->dev->img) : QCOW_WAIT_ANY;
	struct uq_wait_list *l;
	int ret;

	if (why == QCOW_WAIT_WRITEBACK) {
		ret = qcow_flush_start(q->dev->img);
		if (ret == 0) {
			t->driving = true;
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
	l = &q->parked[why < QCOW_WAIT_KINDS ? why : QCOW_WAIT_ANY];
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

	for (k = 0; k < QCOW_WAIT_KINDS; k++)
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
static void engine_event_locked(struct uq_queue *self, enum qcow_wait what)
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
 * Run one synchronous engine call for t: park on a transient -EBUSY, log a
 * real failure.  Returns the call's result; waits(t) tells the caller to
 * stop here.
 */
static int eng_call(struct uq_tag *t, int (*fn)(struct uq_tag *), const char *what)
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

static void write_step(struct uq_tag *t);
static void flush_step(struct uq_tag *t);

/* ------------------------------------------------ bytes we make up ourselves */

static bool zero_copy(const struct uq_tag *t)
{
	return t->q->dev->data_mode != UQ_DATA_COPY;
}

/*
 * Zero copy: queue the write of len bytes from src into the request at
 * byte pos, through user copy on /dev/ublkcN; src must stay as it is until
 * the write completes (the zero buffer, or the tag's bounce buffer).
 */
static void issue_fill(struct uq_tag *t, uint64_t pos, const uint8_t *src, uint64_t len)
{
	struct uq_queue *q = t->q;
	struct io_uring_sqe *sqe = uq_get_sqe(q);

	if (!sqe) {
		tag_error(t, -EIO);
		return;
	}
	io_uring_prep_write(sqe, UQ_FIXED_CDEV, src, (unsigned)len,
			    ublk_user_copy_pos(q->id, t->tag, pos));
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_FILL, t->tag, pos | (len << UQ_EXTRA_SHIFT)));
	t->ops++;
	q->backend++;
}

static void fill_zero(struct uq_tag *t, uint64_t pos, uint64_t len)
{
	if (!zero_copy(t))
		memset(t->buf + pos, 0, len);
	else
		issue_fill(t, pos, t->q->dev->zero_buf, len);
}

/* Bytes we made up (an inflated cluster's) into the request at pos. */
static void copy_in(struct uq_tag *t, uint64_t pos, const uint8_t *src, uint64_t len)
{
	if (!zero_copy(t)) {
		memcpy(t->buf + pos, src, len);
		return;
	}
	if (!t->bounce)
		t->bounce = malloc(t->q->dev->buf_bytes);
	if (!t->bounce) {
		tag_log(t, "bounce buffer", -ENOMEM, NULL);
		tag_error(t, -EIO);
		return;
	}
	memcpy(t->bounce + pos, src, len);
	issue_fill(t, pos, t->bounce + pos, len);
}

/* ------------------------------------------------------------ image IO */

/* An SQE for a READ_FIXED or WRITE_FIXED of len bytes at request byte pos,
 * registering the request's memory first where we must; NULL on failure. */
static struct io_uring_sqe *prep_fixed(struct uq_tag *t, bool write, uint64_t pos, uint64_t len,
				       uint64_t host)
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
		io_uring_prep_read_fixed(sqe, UQ_FIXED_IMAGE, addr, (unsigned)len, host, t->tag);
	sqe->flags |= IOSQE_FIXED_FILE;
	return sqe;
}

/* Count a queued image op of t's with user data ud. */
static void queued(struct uq_tag *t, struct io_uring_sqe *sqe, uint64_t ud)
{
	io_uring_sqe_set_data64(sqe, ud);
	t->ops++;
	t->q->backend++;
}

/* Queue a READ_FIXED of len bytes of the image at host into request byte pos. */
static int issue_read(struct uq_tag *t, uint64_t pos, uint64_t len, uint64_t host)
{
	struct io_uring_sqe *sqe = prep_fixed(t, false, pos, len, host);

	if (!sqe)
		return -EIO;
	queued(t, sqe, uq_ud(UQ_UD_DATA, t->tag, pos | (len << UQ_EXTRA_SHIFT)));
	return 0;
}

/* Queue the table read the engine asked for in t->need. */
static void issue_meta(struct uq_tag *t)
{
	struct uq_queue *q = t->q;
	struct uq_dev *dev = q->dev;
	struct io_uring_sqe *sqe = uq_get_sqe(q);

	if (!sqe) {
		eng_lock(dev);
		qcow_meta_read_done(dev->img, &t->need, -EIO);
		dev->meta_inflight--;
		engine_event_locked(q, QCOW_WAIT_LOAD);
		eng_unlock(dev);
		tag_error(t, -EIO);
		return;
	}
	io_uring_prep_read(sqe, UQ_FIXED_IMAGE, t->need.buf, (unsigned)t->need.len,
			   t->need.offset);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_META, t->tag, 0));
	t->wait_meta = true;
	q->backend++;
	uq_count(q, t->need.cache == QCOW_TABLE_REFCOUNT ? UQ_QS_REFCOUNT_READS : UQ_QS_L2_READS, 1);
}

/* ------------------------------------------------------------------ READ */

static void read_compressed(struct uq_tag *t, const struct qcow_extent *ext)
{
	struct uq_dev *dev = t->q->dev;
	uint64_t in = ext->guest_offset & (dev->info.cluster_size - 1);
	int ret;

	eng_lock(dev);
	ret = qcow_read_compressed_cluster(dev->img, ext, t->q->cbuf);
	if (ret < 0)
		eng_log_locked(t, "qcow_read_compressed_cluster", ret);
	eng_unlock(dev);
	if (ret < 0)
		tag_error(t, io_errno(ret));
	else
		copy_in(t, t->pos, t->q->cbuf + in, ext->length);
}

static void read_extent(struct uq_tag *t, const struct qcow_extent *ext)
{
	switch (ext->kind) {
	case QCOW_EXTENT_DATA:
		if (issue_read(t, t->pos, ext->length, ext->host_offset) < 0)
			tag_error(t, -EIO);
		break;
	case QCOW_EXTENT_COMPRESSED:
		read_compressed(t, ext);
		break;
	default:
		/* unallocated (no backing file) and zero clusters read as zeros */
		fill_zero(t, t->pos, ext->length);
		break;
	}
	t->pos += ext->length;
}

/* Map one extent at t->pos: 0 (ext valid), -EAGAIN (meta read issued), else stop. */
static int read_map(struct uq_tag *t, struct qcow_extent *ext)
{
	struct uq_dev *dev = t->q->dev;
	int ret;

	eng_lock(dev);
	ret = qcow_map_nowait(dev->img, t->off + t->pos, t->len - t->pos, ext, &t->need);
	if (ret == -EAGAIN)
		dev->meta_inflight++;
	else if (ret < 0 && parkable(dev, ret))
		park_locked(t, ret);
	else if (ret < 0)
		eng_log_locked(t, "qcow_map_nowait", ret);
	eng_unlock(dev);
	if (ret == -EAGAIN)
		issue_meta(t);
	else if (ret < 0 && !waits(t))
		tag_error(t, io_errno(ret));
	else if (ret >= 0 && (!ext->length || ext->length > t->len - t->pos)) {
		tag_log(t, "qcow_map_nowait", -EIO, "extent outside the request");
		tag_error(t, -EIO);
		ret = -EIO;
	}
	return ret < 0 ? ret : 0;
}

static void read_step(struct uq_tag *t)
{
	struct qcow_extent ext;

	while (t->pos < t->len && !t->error) {
		if (read_map(t, &ext) < 0)
			return;
		read_extent(t, &ext);
	}
	t->issued_all = true;
}

/* ----------------------------------------------------------------- WRITE */

/*
 * One plan at a time (enum uq_write_stage): qcow_write_begin_nowait, after
 * the tables it needs (L2 table, refcount block) are loaded through the
 * ring like a READ's (the engine would read them synchronously, holding up
 * every request on every queue);
 * then the old bytes its copy-on-write parts keep, read through the ring
 * into t->cow (an inflated cluster's under the lock, as a READ's); then the
 * writes: in copy mode one vectored write of parts and guest bytes (the new
 * clusters are contiguous), in the zero-copy modes up to three (the guest
 * bytes are reachable only by WRITE_FIXED; the pieces do not overlap, so
 * their order does not matter); qcow_write_end after the last.  A failure
 * at any stage ends the plan with qcow_write_end(error), which gives the
 * new clusters back, and fails the request.
 */
static int do_write_begin(struct uq_tag *t)
{
	return qcow_write_begin_nowait(t->q->dev->img, t->off + t->pos, t->len - t->pos,
				       &t->plan, &t->need);
}

static bool part_used(const struct qcow_write_plan *p, unsigned i)
{
	return p->cow[i].kind != QCOW_COW_NONE;
}

/* Does the plan cover the next bytes of the request, its parts around them? */
static bool plan_fits(const struct uq_tag *t)
{
	const struct qcow_write_plan *p = &t->plan;
	uint64_t cs = t->q->dev->info.cluster_size;

	if (p->guest_offset != t->off + t->pos || !p->length || p->length > t->len - t->pos)
		return false;
	if (part_used(p, 0) && (p->cow[0].len >= cs || p->cow[0].dst + p->cow[0].len != p->host_offset))
		return false;
	return !part_used(p, 1) || (p->cow[1].len < cs &&
				    p->cow[1].dst == p->host_offset + p->length);
}

/* The plan is over: give its clusters back after err, and fail the request. */
static void write_abort(struct uq_tag *t, int err)
{
	struct uq_dev *dev = t->q->dev;

	eng_lock(dev);
	qcow_write_end(dev->img, &t->plan, err);
	engine_event_locked(t->q, QCOW_WAIT_WRITE);
	eng_unlock(dev);
	t->write = UQ_WRITE_PLAN;
	tag_error(t, -EIO);
}

/* Where part i's bytes are (once read). */
static uint8_t *part_bytes(struct uq_tag *t, unsigned i)
{
	if (t->plan.cow[i].kind == QCOW_COW_ZEROS)
		return t->q->dev->zero_buf;
	return t->cow + i * t->q->dev->info.cluster_size;
}

/* Queue the read of part i's old bytes into t->cow. */
static int issue_old_read(struct uq_tag *t, unsigned i)
{
	const struct qcow_cow_part *c = &t->plan.cow[i];
	struct io_uring_sqe *sqe = uq_get_sqe(t->q);

	if (!sqe)
		return -EIO;
	io_uring_prep_read(sqe, UQ_FIXED_IMAGE, part_bytes(t, i), (unsigned)c->len, c->src);
	sqe->flags |= IOSQE_FIXED_FILE;
	queued(t, sqe, uq_ud(UQ_UD_OLD, t->tag, i));
	return 0;
}

/* The old bytes the parts keep: copies through the ring, inflated ones here. */
static int write_old(struct uq_tag *t)
{
	struct uq_dev *dev = t->q->dev;
	unsigned i;
	int ret = 0;

	if (!t->cow && posix_memalign((void **)&t->cow, UQ_BUF_ALIGN, 2 * dev->info.cluster_size)) {
		t->cow = NULL;
		tag_log(t, "copy-on-write buffer", -ENOMEM, NULL);
		return -ENOMEM;
	}
	for (i = 0; i < 2 && ret == 0; i++) {
		const struct qcow_cow_part *c = &t->plan.cow[i];

		if (c->kind == QCOW_COW_COPY) {
			ret = issue_old_read(t, i);
		} else if (c->kind == QCOW_COW_INFLATE) {
			eng_lock(dev);
			ret = qcow_cow_read(dev->img, c, part_bytes(t, i));
			if (ret < 0)
				eng_log_locked(t, "qcow_cow_read", ret);
			eng_unlock(dev);
		}
	}
	return ret;
}

static bool needs_old(const struct qcow_write_plan *p)
{
	return p->cow[0].kind >= QCOW_COW_COPY || p->cow[1].kind >= QCOW_COW_COPY;
}

/* Queue an image write of len bytes, counted as a piece of the plan. */
static void write_queued(struct uq_tag *t, struct io_uring_sqe *sqe, uint64_t len)
{
	sqe->flags |= IOSQE_FIXED_FILE;
	queued(t, sqe, uq_ud(UQ_UD_WRITE, t->tag, len));
	t->pieces++;
}

/* Copy mode: parts and guest bytes in one vectored write. */
static int issue_merged(struct uq_tag *t)
{
	const struct qcow_write_plan *p = &t->plan;
	struct io_uring_sqe *sqe = uq_get_sqe(t->q);
	uint64_t start = part_used(p, 0) ? p->cow[0].dst : p->host_offset, len = 0;
	unsigned n = 0, i;

	if (!sqe)
		return -EIO;
	for (i = 0; i < 2; i++) {
		if (i == 1)
			t->iov[n++] = (struct iovec){ t->buf + t->pos, p->length };
		if (part_used(p, i))
			t->iov[n++] = (struct iovec){ part_bytes(t, i), p->cow[i].len };
	}
	for (i = 0; i < n; i++)
		len += t->iov[i].iov_len;
	io_uring_prep_writev(sqe, UQ_FIXED_IMAGE, t->iov, n, start);
	write_queued(t, sqe, len);
	return 0;
}

/* Zero-copy modes: the guest bytes by WRITE_FIXED, each part by a WRITE. */
static int issue_pieces(struct uq_tag *t)
{
	const struct qcow_write_plan *p = &t->plan;
	struct io_uring_sqe *sqe;
	unsigned i;

	sqe = prep_fixed(t, true, t->pos, p->length, p->host_offset);
	if (!sqe)
		return -EIO;
	write_queued(t, sqe, p->length);
	for (i = 0; i < 2; i++) {
		if (!part_used(p, i))
			continue;
		sqe = uq_get_sqe(t->q);
		if (!sqe)
			return -EIO;
		io_uring_prep_write(sqe, UQ_FIXED_IMAGE, part_bytes(t, i), (unsigned)p->cow[i].len,
				    p->cow[i].dst);
		write_queued(t, sqe, p->cow[i].len);
	}
	return 0;
}

static void write_issue(struct uq_tag *t)
{
	int ret;

	t->write = UQ_WRITE_DATA;
	t->pieces = 0;
	if (!part_used(&t->plan, 0) && !part_used(&t->plan, 1))
		ret = issue_pieces(t);		/* the guest bytes alone */
	else if (!zero_copy(t))
		ret = issue_merged(t);
	else
		ret = issue_pieces(t);
	if (ret < 0 && !t->pieces)
		write_abort(t, ret);
	else if (ret < 0 && !t->write_result)
		t->write_result = ret;		/* write_done ends the plan */
}

/* A plan from the engine: read what its parts keep, or write at once. */
static void write_planned(struct uq_tag *t)
{
	int ret;

	t->write_result = 0;
	if (!plan_fits(t)) {
		tag_log(t, "qcow_write_begin_nowait", -EIO, "plan outside the request");
		write_abort(t, -EIO);
		return;
	}
	if (!needs_old(&t->plan)) {
		write_issue(t);
		return;
	}
	t->write = UQ_WRITE_OLD;
	ret = write_old(t);
	if (ret < 0)
		t->write_result = ret;
	if (!t->ops)
		write_step(t);
}

static void write_step(struct uq_tag *t)
{
	int ret;

	if (t->ops)
		return;			/* one stage at a time */
	if (t->write == UQ_WRITE_OLD) {
		if (t->write_result < 0)
			write_abort(t, t->write_result);
		else
			write_issue(t);
		return;
	}
	if (t->pos < t->len) {
		ret = eng_call(t, do_write_begin, "qcow_write_begin_nowait");
		if (ret == -EAGAIN)
			issue_meta(t);
		else if (ret < 0 && !waits(t))
			tag_error(t, io_errno(ret));
		else if (ret >= 0)
			write_planned(t);
		return;
	}
	flush_step(t);
}

/* Part i's old bytes are read (a short read: past the end of the file, zeros). */
static void old_read_done(struct uq_tag *t, unsigned i, int res)
{
	const struct qcow_cow_part *c = &t->plan.cow[i & 1];

	t->ops--;
	if (res < 0) {
		tag_log(t, "copy-on-write read", res, NULL);
		if (!t->write_result)
			t->write_result = res;
	} else if ((uint64_t)res < c->len) {
		memset(part_bytes(t, i & 1) + res, 0, c->len - (uint64_t)res);
	}
	uq_io_advance(t);
}

/* One of the plan's writes is done; after the last, publish or roll back. */
static void write_done(struct uq_tag *t, uint64_t len, int res)
{
	struct uq_dev *dev = t->q->dev;
	int result, ret;

	t->ops--;
	if ((uint64_t)res != len) {
		tag_log(t, "image write", res < 0 ? res : -EIO, res >= 0 ? "short write" : NULL);
		if (!t->write_result)
			t->write_result = res < 0 ? res : -EIO;
	}
	if (--t->pieces) {
		uq_io_advance(t);
		return;
	}
	result = t->write_result;
	t->write = UQ_WRITE_PLAN;
	eng_lock(dev);
	ret = qcow_write_end(dev->img, &t->plan, result);
	engine_event_locked(t->q, QCOW_WAIT_WRITE);
	/* publication found its table busy: the allocation was rolled back, redo it */
	if (result == 0 && ret < 0 && parkable(dev, ret))
		park_locked(t, ret);
	else if (result == 0 && ret < 0)
		eng_log_locked(t, "qcow_write_end", ret);
	eng_unlock(dev);
	if (!waits(t) && (result < 0 || ret < 0))
		tag_error(t, io_errno(result < 0 ? result : ret));
	else if (result == 0 && ret == 0)
		t->pos += t->plan.length;
	uq_io_advance(t);
}

/* ---------------------------------------------------------------- FLUSH */

#define UQ_FLUSH_BATCH 16

/*
 * What the request's flush stage asks for (uq_io_start sets it):
 *  - UQ_FLUSH_ALL: FLUSH, and a write with FUA;
 *  - UQ_FLUSH_METADATA, with --recoverable: after the daemon dies the
 *    kernel resends only the requests it has not seen complete, and the
 *    dead daemon's metadata caches die with it.  So a write, discard or
 *    zeroing completes only once the metadata it depends on is in the
 *    file, in the engine's crash-safe order: its own allocations, and also
 *    those of another request whose cluster it wrote into in place
 *    (published, but not yet flushed, when it mapped; without this, that
 *    request would be redone after a recovery into a new cluster, and the
 *    completed overwrite lost).  Nothing unwritten, nothing to do.
 */
static enum uq_flush_stage flush_wanted(const struct uq_tag *t)
{
	bool recoverable = t->q->dev->opt.recoverable;

	switch (t->op) {
	case UBLK_IO_OP_FLUSH:
		return UQ_FLUSH_ALL;
	case UBLK_IO_OP_WRITE:
		return t->fua ? UQ_FLUSH_ALL : recoverable ? UQ_FLUSH_METADATA : UQ_FLUSH_NONE;
	case UBLK_IO_OP_DISCARD:
	case UBLK_IO_OP_WRITE_ZEROES:
		return recoverable ? UQ_FLUSH_METADATA : UQ_FLUSH_NONE;
	default:
		return UQ_FLUSH_NONE;
	}
}

/*
 * Under the engine lock: start the engine's flush, with t driving it.
 * 0 started, 1 nothing to make durable, -EBUSY one is running (t parked
 * until it ends), else -errno.
 */
static int flush_start_locked(struct uq_tag *t)
{
	int ret = qcow_flush_start(t->q->dev->img);

	if (ret == 0)
		t->driving = true;
	else if (ret == -EBUSY)
		park_locked(t, ret);
	else if (ret < 0)
		eng_log_locked(t, "qcow_flush_start", ret);
	return ret;
}

/*
 * Queue a batch of the flush.  Never fails the tag itself: a driving tag
 * must report every batch, or the engine's flush would never end; what
 * could not be queued fails the batch.
 */
static void issue_flush_io(struct uq_tag *t, const struct qcow_io *ios, int n)
{
	struct uq_queue *q = t->q;
	int i;

	for (i = 0; i < n; i++) {
		struct io_uring_sqe *sqe = uq_get_sqe(q);

		if (!sqe) {
			t->flush_result = -EIO;
			break;
		}
		if (ios[i].op == QCOW_IO_FSYNC)
			io_uring_prep_fsync(sqe, UQ_FIXED_IMAGE, IORING_FSYNC_DATASYNC);
		else
			io_uring_prep_write(sqe, UQ_FIXED_IMAGE, ios[i].buf, (unsigned)ios[i].len,
					    ios[i].offset);
		sqe->flags |= IOSQE_FIXED_FILE;
		io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_FLUSH, t->tag,
						   ios[i].op == QCOW_IO_FSYNC ? 0 : ios[i].len));
		t->ops++;
		q->backend++;
	}
}

/* Every IO of the batch is over: tell the engine. */
static void flush_batch_done(struct uq_tag *t)
{
	struct uq_dev *dev = t->q->dev;

	eng_lock(dev);
	qcow_flush_io_done(dev->img, t->flush_result);
	engine_event_locked(t->q, QCOW_WAIT_ANY);	/* its slots are free again */
	eng_unlock(dev);
	t->flush_result = 0;
}

/*
 * Drive the flush t started, batch after batch: true while it goes on (its
 * IO in flight), false once it is over (t failed if it did).
 */
static bool flush_drive(struct uq_tag *t)
{
	struct uq_dev *dev = t->q->dev;
	struct qcow_io ios[UQ_FLUSH_BATCH];
	int n;

	for (;;) {
		eng_lock(dev);
		n = qcow_flush_next(dev->img, ios, UQ_FLUSH_BATCH);
		if (n <= 0) {
			/* over: its waiters, and table writes it held up, go on */
			t->driving = false;
			engine_event_locked(t->q, QCOW_WAIT_FLUSH);
			if (n < 0)
				eng_log_locked(t, "flush", n);
		}
		eng_unlock(dev);
		if (n < 0)
			tag_error(t, io_errno(n));
		if (n <= 0)
			return false;
		issue_flush_io(t, ios, n);
		if (t->ops)
			return true;
		flush_batch_done(t);	/* nothing could be queued */
	}
}

/* The request's flush stage, at its end: start one (or wait for the one
 * running); uq_io_advance drives it and comes back here once it is over. */
static void flush_step(struct uq_tag *t)
{
	struct uq_dev *dev = t->q->dev;
	int ret = 1;

	if (t->ops)
		return;
	if (t->flush != UQ_FLUSH_NONE) {	/* most requests: no lock taken */
		eng_lock(dev);
		if (t->flush == UQ_FLUSH_ALL || qcow_flush_running(dev->img) ||
		    qcow_metadata_unwritten(dev->img))
			ret = flush_start_locked(t);
		eng_unlock(dev);
		if (t->parked)
			return;
		t->flush = UQ_FLUSH_NONE;
		if (ret < 0)
			tag_error(t, io_errno(ret));
		if (t->driving)
			return;
	}
	t->issued_all = true;
}

/* ------------------------------------------------- FLUSH, DISCARD, ZEROES */

/* Bytes from t->pos to the end of the request or of the L2 table's span. */
static uint64_t change_piece(const struct uq_tag *t)
{
	uint64_t cs = t->q->dev->info.cluster_size, span = cs * (cs / 8);
	uint64_t at = t->off + t->pos;

	uint64_t left = t->len - t->pos, to_span_end = span - at % span;

	return left < to_span_end ? left : to_span_end;
}

static int do_discard(struct uq_tag *t)
{
	return qcow_discard_nowait(t->q->dev->img, t->off + t->pos, change_piece(t), &t->need);
}

static int do_write_zeroes(struct uq_tag *t)
{
	return qcow_write_zeroes_nowait(t->q->dev->img, t->off + t->pos, change_piece(t),
					t->nounmap ? 0 : QCOW_ZERO_MAY_UNMAP, &t->need);
}

/*
 * DISCARD, WRITE_ZEROES: one engine call per L2 table's span, its table
 * read through the ring first when it is not cached (a piece cut short by
 * -EAGAIN or -EBUSY is redone, harmlessly); then the flush stage.
 */
static void change_step(struct uq_tag *t, int (*fn)(struct uq_tag *), const char *what)
{
	uint64_t piece;
	int ret;

	while (t->pos < t->len) {
		piece = change_piece(t);
		ret = eng_call(t, fn, what);
		if (ret == -EAGAIN) {
			issue_meta(t);
			return;
		}
		if (waits(t))
			return;
		if (ret < 0) {
			tag_error(t, io_errno(ret));
			return;
		}
		t->pos += piece;
	}
	flush_step(t);
}

static void op_step(struct uq_tag *t)
{
	switch (t->op) {
	case UBLK_IO_OP_READ:
		read_step(t);
		break;
	case UBLK_IO_OP_WRITE:
		write_step(t);
		break;
	case UBLK_IO_OP_FLUSH:
		flush_step(t);
		break;
	case UBLK_IO_OP_DISCARD:
		change_step(t, do_discard, "qcow_discard");
		break;
	case UBLK_IO_OP_WRITE_ZEROES:
		change_step(t, do_write_zeroes, "qcow_write_zeroes");
		break;
	default:
		tag_error(t, -EOPNOTSUPP);
		break;
	}
}

/* ----------------------------------------------------------- the machine */

static bool has_data(const struct uq_tag *t)
{
	return t->op == UBLK_IO_OP_READ || t->op == UBLK_IO_OP_WRITE;
}

static bool op_known(unsigned op)
{
	return op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE || op == UBLK_IO_OP_FLUSH ||
	       op == UBLK_IO_OP_DISCARD || op == UBLK_IO_OP_WRITE_ZEROES;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void count_flush(struct uq_tag *t)
{
	uint64_t ns = now_ns() - t->start_ns;

	uq_count(t->q, UQ_QS_FLUSH_NS, ns);
	uq_count_max(t->q, UQ_QS_FLUSH_MAX_NS, ns);
}

/* A request of a known operation arrived: count it by kind, and its bytes. */
static void count_start(struct uq_tag *t)
{
	static const enum uq_qstat by_op[] = {
		[UBLK_IO_OP_READ] = UQ_QS_READS, [UBLK_IO_OP_WRITE] = UQ_QS_WRITES,
		[UBLK_IO_OP_FLUSH] = UQ_QS_FLUSHES, [UBLK_IO_OP_DISCARD] = UQ_QS_DISCARDS,
		[UBLK_IO_OP_WRITE_ZEROES] = UQ_QS_WRITE_ZEROES,
	};

	uq_count(t->q, by_op[t->op], 1);
	if (t->op == UBLK_IO_OP_READ)
		uq_count(t->q, UQ_QS_READ_BYTES, t->len);
	else if (t->op == UBLK_IO_OP_WRITE)
		uq_count(t->q, UQ_QS_WRITE_BYTES, t->len);
	else if (t->op == UBLK_IO_OP_FLUSH)
		t->start_ns = now_ns();
}

static void finish(struct uq_tag *t)
{
	int result;

	result = t->error ? t->error : (has_data(t) ? (int)t->len : 0);
	if (t->error)
		uq_count(t->q, UQ_QS_ERRORS, 1);
	if (t->op == UBLK_IO_OP_FLUSH)
		count_flush(t);
	uq_count(t->q, UQ_QS_DONE, 1);
	uq_queue_commit(t, result);
}

/*
 * Take t as far as it can go now; commit when everything is done.  A flush
 * t runs (its own at the end, or one to write back the tables in its way)
 * comes first, and the request goes on where it was once it is over.
 */
void uq_io_advance(struct uq_tag *t)
{
	for (;;) {
		if (t->parked || t->wait_meta)
			return;
		if (t->driving) {
			if (t->ops || flush_drive(t))
				return;
			continue;	/* over: t goes on */
		}
		if (t->error || t->issued_all)
			break;
		op_step(t);
		if (!t->driving)
			break;
	}
	if ((t->error || t->issued_all) && !t->ops)
		finish(t);
}

/* Is the request inside the device and, with data, inside the tag buffer? */
static int io_check(struct uq_tag *t, const struct ublksrv_io_desc *d)
{
	struct uq_dev *dev = t->q->dev;
	uint64_t dev_sectors = dev->dev_bytes >> 9;

	if (t->op != UBLK_IO_OP_READ && t->op != UBLK_IO_OP_WRITE &&
	    t->op != UBLK_IO_OP_DISCARD && t->op != UBLK_IO_OP_WRITE_ZEROES)
		return 0;
	if (d->start_sector > dev_sectors || d->nr_sectors > dev_sectors - d->start_sector) {
		tag_log(t, "request check", -EINVAL, "past the end of the device");
		return -EINVAL;
	}
	if (has_data(t) && !t->len) {
		tag_log(t, "request check", -EINVAL, "no sectors");
		return -EINVAL;
	}
	if (has_data(t) && t->len > dev->buf_bytes) {
		tag_log(t, "request check", -EINVAL, "larger than the request buffer");
		return -EINVAL;
	}
	return 0;
}

/* The device is quiesced (control.c): keep t's request, unstarted, for later. */
static void hold(struct uq_tag *t)
{
	struct uq_queue *q = t->q;

	t->next_held = NULL;
	if (q->held_tail)
		q->held_tail->next_held = t;
	else
		q->held_head = t;
	q->held_tail = t;
	q->nr_held++;
}

/*
 * Called by the queue loop after each batch of completions: while the
 * device is quiesced, say so once nothing but held requests is ours; once
 * it is not, start what was held (its descriptor is still the tag's: the
 * kernel writes a new one only after our commit).
 */
void uq_io_quiesce_step(struct uq_queue *q)
{
	/* the generation first: quiesce still set after it means this session
	 * (or a later one, which a stale answer does not satisfy) */
	unsigned gen = atomic_load(&q->dev->quiesce_gen);
	struct uq_tag *t;

	if (atomic_load(&q->dev->quiesce)) {
		if (q->owned == q->nr_held)
			atomic_store(&q->quiet_gen, gen);
		return;
	}
	/* the list is taken whole first: should the next quiesce begin while
	 * these start, uq_io_start() holds them again on a new list, which
	 * this loop must not chase forever */
	t = q->held_head;
	q->held_head = q->held_tail = NULL;
	q->nr_held = 0;
	while (t) {
		struct uq_tag *next = t->next_held;

		t->next_held = NULL;
		uq_io_start(t, &q->descs[t->tag]);
		t = next;
	}
}

/* A request arrived on t: copy what we need out of the descriptor and go. */
void uq_io_start(struct uq_tag *t, const struct ublksrv_io_desc *desc)
{
	struct ublksrv_io_desc d = *desc;	/* the next request overwrites it */

	if (atomic_load(&t->q->dev->quiesce)) {
		hold(t);
		return;
	}
	t->op = (uint8_t)ublk_io_op(&d);
	t->fua = d.op_flags & UBLK_IO_F_FUA;
	t->nounmap = d.op_flags & UBLK_IO_F_NOUNMAP;
	t->issued_all = t->wait_meta = t->parked = false;
	/* auto-buf-reg: the driver registered it, unless it says it could not */
	t->buf_ready = t->q->dev->data_mode == UQ_DATA_COPY ||
		       (t->q->dev->data_mode == UQ_DATA_AUTO_BUF_REG &&
			!(d.op_flags & UBLK_IO_F_NEED_REG_BUF));
	t->zc_reg = false;
	t->ops = 0;
	t->error = 0;
	t->off = d.start_sector << 9;
	t->len = (uint64_t)d.nr_sectors << 9;
	t->pos = 0;
	t->next_parked = NULL;
	t->flush = (uint8_t)flush_wanted(t);
	t->driving = false;
	t->flush_result = 0;
	if (!op_known(t->op)) {
		uq_err("queue %u tag %u: unsupported operation %u", t->q->id, t->tag, t->op);
		t->error = -EOPNOTSUPP;
	} else {
		count_start(t);
		t->error = io_check(t, &d);
	}
	uq_io_advance(t);
}

static void uq_io_read_done(struct uq_tag *t, uint64_t extra, int res)
{
	uint64_t pos = extra & UQ_EXTRA_MASK, len = extra >> UQ_EXTRA_SHIFT;

	t->ops--;
	if (res < 0) {
		tag_log(t, "image read", res, NULL);
		tag_error(t, -EIO);
	} else if ((uint64_t)res < len) {
		/* only at the end of the file: bytes past it read as zero */
		fill_zero(t, pos + (uint64_t)res, len - (uint64_t)res);
	}
	uq_io_advance(t);
}

static void uq_io_meta_done(struct uq_tag *t, int res)
{
	struct uq_dev *dev = t->q->dev;
	int result = (uint64_t)res == t->need.len ? 0 : (res < 0 ? res : -EIO);
	int ret;

	if (result < 0)
		tag_log(t, "metadata read", result, res >= 0 ? "short read" : NULL);
	eng_lock(dev);
	ret = qcow_meta_read_done(dev->img, &t->need, result);
	dev->meta_inflight--;
	engine_event_locked(t->q, QCOW_WAIT_LOAD);
	if (ret < 0 && result == 0)
		eng_log_locked(t, "qcow_meta_read_done", ret);
	eng_unlock(dev);
	t->wait_meta = false;
	if (result < 0 || ret < 0)
		tag_error(t, -EIO);
	uq_io_advance(t);
}

static void uq_io_register_done(struct uq_tag *t, int res)
{
	t->ops--;
	if (res < 0) {
		/* the image IO queued behind it fails too (no buffer at the index) */
		tag_log(t, "REGISTER_IO_BUF", res, NULL);
		tag_error(t, -EIO);
		t->zc_reg = false;
	}
	uq_io_advance(t);
}

/* A write of bytes we made up into the request: all of it, or the request fails. */
static void uq_io_fill_done(struct uq_tag *t, uint64_t extra, int res)
{
	uint64_t len = extra >> UQ_EXTRA_SHIFT;

	t->ops--;
	if ((uint64_t)res != len) {
		tag_log(t, "write into the request (user copy)", res < 0 ? res : -EIO,
			res >= 0 ? "short write" : NULL);
		tag_error(t, -EIO);
	}
	uq_io_advance(t);
}

/* A write or fsync of the engine's flush; the batch reported after its last. */
static void uq_io_flush_done(struct uq_tag *t, uint64_t len, int res)
{
	t->ops--;
	if (res < 0 || (uint64_t)res != len) {
		tag_log(t, len ? "metadata write" : "fsync", res < 0 ? res : -EIO,
			res >= 0 ? "short write" : NULL);
		if (!t->flush_result)
			t->flush_result = res < 0 ? res : -EIO;
	}
	if (!t->ops)
		flush_batch_done(t);
	uq_io_advance(t);
}

void uq_io_complete(struct uq_queue *q, uint64_t ud, int res)
{
	struct uq_tag *t = &q->tags[uq_ud_tag(ud)];

	q->backend--;
	switch (uq_ud_kind(ud)) {
	case UQ_UD_DATA:
		uq_io_read_done(t, uq_ud_extra(ud), res);
		break;
	case UQ_UD_WRITE:
		write_done(t, uq_ud_extra(ud), res);
		break;
	case UQ_UD_OLD:
		old_read_done(t, (unsigned)uq_ud_extra(ud), res);
		break;
	case UQ_UD_META:
		uq_io_meta_done(t, res);
		break;
	case UQ_UD_ZC:
		uq_io_register_done(t, res);
		break;
	case UQ_UD_FLUSH:
		uq_io_flush_done(t, uq_ud_extra(ud), res);
		break;
	default:
		uq_io_fill_done(t, uq_ud_extra(ud), res);
		break;
	}
}

int uq_io_zero_buf_alloc(struct uq_dev *dev)
{
	size_t len = dev->buf_bytes > dev->info.cluster_size ? dev->buf_bytes
							      : dev->info.cluster_size;
	void *p;

	if (posix_memalign(&p, UQ_BUF_ALIGN, len))
		return uq_log_errno("allocating the zero buffer", -ENOMEM);
	memset(p, 0, len);
	dev->zero_buf = p;
	return 0;
}

void uq_io_woken(struct uq_queue *q)
{
	pthread_mutex_lock(&q->dev->engine_lock);
	q->wake_sent = false;
	q->retry |= q->wake_mask;
	q->wake_mask = 0;
	pthread_mutex_unlock(&q->dev->engine_lock);
}

void uq_io_retry_parked(struct uq_queue *q)
{
	struct uq_tag *t = NULL, *tail = NULL, *next;
	unsigned k;

	pthread_mutex_lock(&q->dev->engine_lock);
	for (k = 0; k < QCOW_WAIT_KINDS; k++) {
		struct uq_wait_list *l = &q->parked[k];

		if (!(q->retry & 1U << k) || !l->head)
			continue;
		if (tail)
			tail->next_parked = l->head;
		else
			t = l->head;
		tail = l->tail;
		l->head = l->tail = NULL;
	}
	q->retry = 0;
	for (next = t; next; next = next->next_parked)
		q->nr_parked--;
	pthread_mutex_unlock(&q->dev->engine_lock);
	for (; t; t = next) {
		next = t->next_parked;
		t->next_parked = NULL;
		t->parked = false;
		uq_io_advance(t);
	}
}
