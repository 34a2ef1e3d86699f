/* SPDX-License-Identifier: MIT */
/*
 * Serving one request: a small state machine per tag, driven from the
 * queue thread's CQE loop.  This file is the machine (start, advance,
 * completions, waits retried), READ, DISCARD and WRITE_ZEROES; WRITE is
 * write.c's, the flush stage flush.c's, and what they all use tag.c's.
 *
 *   READ   walks the request with qcow_map_nowait.  DATA extents become
 *          READ_FIXED from the image, or from the layer of its backing
 *          chain they are in, into the tag's buffer (all in flight at
 *          once); holes and zero clusters are zero-filled explicitly;
 *          a compressed cluster's stream is read through the ring and
 *          inflated when it completes, without the engine lock (one at a
 *          time per request).  An L2 miss (-EAGAIN) sends the table read
 *          through the ring and the walk goes on when it completes.
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
 * has no name after any of these; on this queue or, through its eventfd
 * (uq_queue_wake; a read of it stays armed on each queue's ring,
 * uq_io_arm_wake), on any other.  The request is committed once, after its
 * last piece: the full length, or a negative errno (never a short count,
 * never stale bytes).
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

#include "io.h"

/* ------------------------------------------------ bytes we make up ourselves */

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
	io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_FILL, t->tag, uq_extra_pair(pos, len)));
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

/* Queue a READ_FIXED of len bytes at host of layer depth (0: the image)
 * into request byte pos. */
static int issue_read(struct uq_tag *t, uint64_t pos, uint64_t len, uint64_t host,
		      unsigned depth)
{
	struct io_uring_sqe *sqe = prep_fixed(t, false, pos, len, host, depth);

	if (!sqe)
		return -EIO;
	queued(t, sqe, uq_ud(UQ_UD_DATA, t->tag, uq_extra_pair(pos, len)));
	return 0;
}

/* ------------------------------------------------------------------ READ */

/*
 * A compressed cluster: its stream read through the ring into the tag's
 * scratch buffer (whole blocks around it, for direct IO), inflated when the
 * read completes, without the engine lock (stream_read_done).  One at a
 * time per request: read_step waits for it before it maps further.
 */
static void read_compressed(struct uq_tag *t, const struct qcow_extent *ext)
{
	struct uq_dev *dev = t->q->dev;
	const struct uq_layer *l = &dev->layers[ext->depth];
	struct io_uring_sqe *sqe;
	uint64_t off, from, to;
	size_t len;
	int ret;

	eng_lock(dev);
	ret = qcow_compressed_span(l->img, ext, &off, &len);
	if (ret < 0)
		tag_log(t, "qcow_compressed_span", ret, qcow_error(l->img));
	eng_unlock(dev);
	if (ret < 0 || !tag_scratch(t) || !(sqe = uq_get_sqe(t->q))) {
		tag_error(t, ret < 0 ? io_errno(ret) : -EIO);
		return;
	}
	from = off & ~(uint64_t)(UQ_BUF_ALIGN - 1);
	to = (off + len + UQ_BUF_ALIGN - 1) & ~(uint64_t)(UQ_BUF_ALIGN - 1);
	t->z.pos = t->pos;
	t->z.len = ext->length;
	t->z.in = (uint32_t)(ext->guest_offset & (l->cluster_size - 1));
	t->z.skip = (uint32_t)(off - from);
	t->z.stream = (uint32_t)len;
	t->z.depth = (uint8_t)ext->depth;
	t->inflating = true;
	io_uring_prep_read(sqe, UQ_FIXED_IMAGE + (int)ext->depth, t->scratch, (unsigned)(to - from),
			   from);
	sqe->flags |= IOSQE_FIXED_FILE;
	queued(t, sqe, uq_ud(UQ_UD_STREAM, t->tag, to - from));
}

/* The stream is read: inflate it (no lock: qcow_inflate_cluster) and copy
 * the extent's bytes into the request. */
static void stream_read_done(struct uq_tag *t, int res)
{
	struct uq_dev *dev = t->q->dev;

	t->ops--;
	t->inflating = false;
	if (t->error)
		return;
	if (res < 0 || (uint64_t)res < (uint64_t)t->z.skip + t->z.stream) {
		tag_log(t, "compressed cluster read", res < 0 ? res : -EIO,
			res >= 0 ? "short read" : NULL);
		tag_error(t, -EIO);
		return;
	}
	if (qcow_inflate_cluster(dev->layers[t->z.depth].img, t->scratch + t->z.skip, t->z.stream,
				 t->q->cbuf) < 0) {
		tag_log(t, "compressed cluster", -EIO, "its stream does not inflate to a cluster");
		tag_error(t, -EIO);
		return;
	}
	copy_in(t, t->z.pos, t->q->cbuf + t->z.in, t->z.len);
}

static void read_extent(struct uq_tag *t, const struct qcow_extent *ext)
{
	switch (ext->kind) {
	case QCOW_EXTENT_DATA:
		if (issue_read(t, t->pos, ext->length, ext->host_offset, ext->depth) < 0)
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

static int do_map(struct uq_tag *t)
{
	return qcow_map_nowait(t->q->dev->img, t->off + t->pos, t->len - t->pos, &t->ext,
			       &t->need);
}

/* Map one extent at t->pos: 0 (t->ext valid), -EAGAIN (meta read issued), else stop. */
static int read_map(struct uq_tag *t)
{
	const struct qcow_extent *ext = &t->ext;
	int ret = eng_call(t, do_map, "qcow_map_nowait");

	if (ret == -EAGAIN)
		issue_meta(t);
	else if (ret < 0 && !waits(t))
		tag_error(t, io_errno(ret));
	else if (ret >= 0 && (!ext->length || ext->length > t->len - t->pos ||
			      ext->depth >= t->q->dev->nr_layers)) {
		tag_log(t, "qcow_map_nowait", -EIO, "extent outside the request or the chain");
		tag_error(t, -EIO);
		ret = -EIO;
	}
	return ret < 0 ? ret : 0;
}

static void read_step(struct uq_tag *t)
{
	while (t->pos < t->len && !t->error) {
		if (t->inflating)
			return;
		if (read_map(t) < 0)
			return;
		read_extent(t, &t->ext);
	}
	if (!t->inflating)
		t->issued_all = true;
}

/* ------------------------------------------------- FLUSH, DISCARD, ZEROES */

/* The next piece of a DISCARD or WRITE_ZEROES at t->pos (qcow_clear_piece). */
static uint64_t change_piece(const struct uq_tag *t, bool *partial)
{
	return qcow_clear_piece(t->q->dev->img, t->off + t->pos, t->len - t->pos, partial);
}

/* Its length alone, for the engine calls below. */
static uint64_t piece_len(const struct uq_tag *t)
{
	bool partial;

	return change_piece(t, &partial);
}

static int do_discard(struct uq_tag *t)
{
	return qcow_discard_nowait(t->q->dev->img, t->off + t->pos, piece_len(t), &t->need);
}

static int do_write_zeroes(struct uq_tag *t)
{
	return qcow_write_zeroes_nowait(t->q->dev->img, t->off + t->pos, piece_len(t),
					t->nounmap ? 0 : QCOW_ZERO_MAY_UNMAP, &t->need);
}

static int do_partial_zeroes(struct uq_tag *t)
{
	return qcow_partial_zeroes_nowait(t->q->dev->img, t->off + t->pos, piece_len(t),
					  &t->need);
}

/*
 * DISCARD, WRITE_ZEROES: a piece at a time (change_piece), then the flush
 * stage.  Whole clusters take one engine call per L2 table's span, its
 * table read through the ring first when it is not cached (a piece cut
 * short by -EAGAIN or -EBUSY is redone, harmlessly).  A cluster covered in
 * part: a discard leaves it; a zeroing writes zeros there (write.c) unless
 * it reads as zeros already.
 */
static void change_step(struct uq_tag *t, int (*fn)(struct uq_tag *), const char *what)
{
	uint64_t piece;
	bool partial;
	int ret;

	while (t->pos < t->len) {
		if (t->pos < t->write_end && !write_run(t))
			return;			/* zeros being written */
		if (t->pos >= t->len)
			break;
		piece = change_piece(t, &partial);
		if (partial && t->op == UBLK_IO_OP_DISCARD) {
			t->pos += piece;
			continue;
		}
		if (partial)
			ret = eng_call(t, do_partial_zeroes, "qcow_partial_zeroes_nowait");
		else
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
		if (ret > 0)
			t->write_end = t->pos + piece;	/* zeros to write */
		else
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
	t->issued_all = t->wait_meta = t->parked = t->inflating = false;
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
	t->write = UQ_WRITE_PLAN;
	t->write_end = t->op == UBLK_IO_OP_WRITE ? t->len : 0;
	t->next_parked = NULL;
	t->flush = (uint8_t)flush_wanted(t);
	t->driving = false;
	t->flush_gen = 0;
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
	uint64_t pos = uq_extra_pos(extra), len = uq_extra_len(extra);

	t->ops--;
	if (res < 0) {
		tag_log(t, "image read", res, NULL);
		tag_error(t, -EIO);
	} else if ((uint64_t)res < len) {
		/* only at the end of the file: bytes past it read as zero */
		fill_zero(t, pos + (uint64_t)res, len - (uint64_t)res);
	}
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
		meta_failed(t);
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
}

/* A write of bytes we made up into the request: all of it, or the request fails. */
static void uq_io_fill_done(struct uq_tag *t, uint64_t extra, int res)
{
	uint64_t len = uq_extra_len(extra);

	t->ops--;
	if ((uint64_t)res != len) {
		tag_log(t, "write into the request (user copy)", res < 0 ? res : -EIO,
			res >= 0 ? "short write" : NULL);
		tag_error(t, -EIO);
	}
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
	case UQ_UD_STREAM:
		stream_read_done(t, res);
		break;
	case UQ_UD_META:
		uq_io_meta_done(t, res);
		break;
	case UQ_UD_BASE:
		base_read_done(t, uq_ud_extra(ud), res);
		break;
	case UQ_UD_ZC:
		uq_io_register_done(t, res);
		break;
	case UQ_UD_FLUSH:
		uq_io_flush_done(t, uq_ud_extra(ud), res);
		break;
	case UQ_UD_SYNC:
		uq_io_sync_done(t, res);
		break;
	case UQ_UD_FILL:
		uq_io_fill_done(t, uq_ud_extra(ud), res);
		break;
	case UQ_UD_CMD:
	case UQ_UD_EVENT:
		return;		/* the queue's own (queue.c): never routed here */
	}
	uq_io_advance(t);
}

int uq_io_layers_init(struct uq_dev *dev)
{
	unsigned d, n = 1 + qcow_chain_depth(dev->img);
	struct qcow_info info;

	dev->layers = calloc(n, sizeof(*dev->layers));
	if (!dev->layers)
		return uq_log_errno("allocating the layer table", -ENOMEM);
	dev->nr_layers = n;
	dev->max_cluster = 0;
	for (d = 0; d < n; d++) {
		struct uq_layer *l = &dev->layers[d];

		l->img = qcow_get_layer(dev->img, d);
		l->fd = qcow_get_file(l->img)->fd;
		qcow_get_info(l->img, &info);
		l->cluster_size = info.cluster_size;
		if (l->cluster_size > dev->max_cluster)
			dev->max_cluster = l->cluster_size;
	}
	return 0;
}

void uq_io_layers_free(struct uq_dev *dev)
{
	free(dev->layers);
	dev->layers = NULL;
	dev->nr_layers = 0;
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

void uq_io_arm_wake(struct uq_queue *q)
{
	struct io_uring_sqe *sqe;

	if (q->efd < 0)
		return;
	sqe = uq_get_sqe(q);
	if (!sqe)
		return;
	io_uring_prep_read(sqe, q->efd, &q->efd_val, sizeof(q->efd_val), 0);
	io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_EVENT, 0, 0));
}

void uq_io_woken(struct uq_queue *q)
{
	pthread_mutex_lock(&q->dev->engine_lock);
	q->wake_sent = false;
	q->retry |= q->wake_mask;
	q->wake_mask = 0;
	pthread_mutex_unlock(&q->dev->engine_lock);
	uq_io_arm_wake(q);
}

void uq_io_retry_parked(struct uq_queue *q)
{
	struct uq_tag *t = NULL, *tail = NULL, *next;
	unsigned k;

	pthread_mutex_lock(&q->dev->engine_lock);
	for (k = 0; k < UQ_PARK_LISTS; k++) {
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
