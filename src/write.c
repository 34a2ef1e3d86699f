/* SPDX-License-Identifier: MIT */
/*
 * Writes (the request machine is io.c's): a WRITE's guest bytes, and the
 * zeros a WRITE_ZEROES writes into a cluster it covers only in part (from
 * the device's zero buffer), up to t->write_end, one plan at a time (enum
 * uq_write_stage):
 *   PLAN  qcow_write_begin_nowait, once the tables it needs (L2 table,
 *         refcount block) are loaded through the ring like a READ's (the
 *         engine would read them synchronously, holding up every request
 *         on every queue);
 *   OLD   the old bytes its copy-on-write parts keep, read through the
 *         ring into t's scratch buffer; from a compressed cluster, its
 *         stream read into t->stream and inflated when the read completes,
 *         without the engine lock (one stream at a time: two parts from
 *         one cluster share it, two clusters' streams go one after the
 *         other); from the backing chain (a cluster the image does not
 *         allocate), mapped piece by piece (qcow_map_backing_nowait, a
 *         layer's L2 table read through the ring like the image's), each
 *         piece read from its layer's file, zero-filled, or inflated;
 *   DATA  the writes: in copy mode one vectored write of parts and guest
 *         bytes (the new clusters are contiguous), in the zero-copy modes
 *         up to three (the guest bytes are reachable only by WRITE_FIXED;
 *         the pieces do not overlap, so their order does not matter);
 *         qcow_write_end after the last.
 * A failure at any stage ends the plan with qcow_write_end(error), which
 * gives the new clusters back, and fails the request.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "io.h"

static int do_backing_map(struct uq_tag *t)
{
	const struct qcow_cow_part *c = &t->plan.cow[t->old_part];
	uint32_t done = t->old_pos[t->old_part];

	return qcow_map_backing_nowait(t->q->dev->img, c->guest + done, c->len - done, &t->ext,
				       &t->need);
}

static int do_write_begin(struct uq_tag *t)
{
	return qcow_write_begin_nowait(t->q->dev->img, t->off + t->pos, t->write_end - t->pos,
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

	if (p->guest_offset != t->off + t->pos || !p->length || p->length > t->write_end - t->pos)
		return false;
	if (part_used(p, 0) &&
	    (p->cow[0].len >= cs || p->cow[0].dst + p->cow[0].len != p->host_offset))
		return false;
	return !part_used(p, 1) || (p->cow[1].len < cs &&
				    p->cow[1].dst == p->host_offset + p->length);
}

/* The OLD stage is over: the plan's stream buffer goes. */
static void old_over(struct uq_tag *t)
{
	free(t->stream);
	t->stream = NULL;
}

/* The plan is over: give its clusters back after err, and fail the request. */
static void write_abort(struct uq_tag *t, int err)
{
	struct uq_dev *dev = t->q->dev;

	old_over(t);
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
	return t->scratch + i * t->q->dev->info.cluster_size;
}

/* Queue the read of part i's old bytes into t's scratch buffer. */
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

/* Do parts i and j come from one compressed cluster? */
static bool same_stream(const struct qcow_write_plan *p, unsigned i, unsigned j)
{
	return p->cow[i].kind == QCOW_COW_INFLATE && p->cow[j].kind == QCOW_COW_INFLATE &&
	       p->cow[i].src == p->cow[j].src && p->cow[i].src_len == p->cow[j].src_len;
}

/* Queue the read of the compressed stream of extent ext (of layer
 * ext->depth; whole blocks around it, for direct IO) into t->stream,
 * allocated for the plan, for part i's old bytes. */
static int issue_stream_read(struct uq_tag *t, unsigned i, const struct qcow_extent *ext)
{
	struct uq_dev *dev = t->q->dev;
	const struct uq_layer *l = &dev->layers[ext->depth];
	size_t len, size = 2 * (size_t)dev->max_cluster + 2 * UQ_BUF_ALIGN;
	struct io_uring_sqe *sqe;
	uint64_t off, from, to;
	int ret;

	eng_lock(dev);
	ret = qcow_compressed_span(l->img, ext, &off, &len);
	if (ret < 0)
		tag_log(t, "qcow_compressed_span", ret, qcow_error(l->img));
	eng_unlock(dev);
	if (ret < 0)
		return ret;
	if (!t->stream && posix_memalign((void **)&t->stream, UQ_BUF_ALIGN, size)) {
		t->stream = NULL;
		tag_log(t, "stream buffer", -ENOMEM, NULL);
		return -ENOMEM;
	}
	sqe = uq_get_sqe(t->q);
	if (!sqe)
		return -EIO;
	from = off & ~(uint64_t)(UQ_BUF_ALIGN - 1);
	to = (off + len + UQ_BUF_ALIGN - 1) & ~(uint64_t)(UQ_BUF_ALIGN - 1);
	t->z.skip = (uint32_t)(off - from);
	t->z.stream = (uint32_t)len;
	t->z.depth = (uint8_t)ext->depth;
	io_uring_prep_read(sqe, UQ_FIXED_IMAGE + (int)ext->depth, t->stream, (unsigned)(to - from),
			   from);
	sqe->flags |= IOSQE_FIXED_FILE;
	queued(t, sqe, uq_ud(UQ_UD_OLD, t->tag, i | UQ_OLD_STREAM));
	return 0;
}

/* Part i's compressed cluster in the image: its stream. */
static int issue_part_stream_read(struct uq_tag *t, unsigned i)
{
	const struct qcow_cow_part *c = &t->plan.cow[i];
	struct qcow_extent ext = { .kind = QCOW_EXTENT_COMPRESSED, .guest_offset = c->guest,
				   .compressed_offset = c->src, .compressed_length = c->src_len };

	return issue_stream_read(t, i, &ext);
}

/* ----------------------------------------------- from the backing chain */

/* A piece of BACKING part i mapped to ext: queue its read (DATA), inflate
 * its cluster (COMPRESSED: one stream at a time), or fill zeros. */
static int backing_piece(struct uq_tag *t, unsigned i, const struct qcow_extent *ext)
{
	uint32_t at = t->old_pos[i];
	uint8_t *dst = part_bytes(t, i) + at;
	uint64_t sect = (uint64_t)(dst - t->scratch) >> 9;
	struct io_uring_sqe *sqe;
	int ret;

	switch (ext->kind) {
	case QCOW_EXTENT_DATA:
		if (((dst - t->scratch) | ext->length) & 511)
			return -EINVAL;		/* requests come in sectors */
		sqe = uq_get_sqe(t->q);
		if (!sqe)
			return -EIO;
		io_uring_prep_read(sqe, UQ_FIXED_IMAGE + (int)ext->depth, dst,
				   (unsigned)ext->length, ext->host_offset);
		sqe->flags |= IOSQE_FIXED_FILE;
		queued(t, sqe, uq_ud(UQ_UD_BASE, t->tag, uq_extra_pair(sect, ext->length >> 9)));
		return 0;
	case QCOW_EXTENT_COMPRESSED:
		t->z.pos = at;
		t->z.len = ext->length;
		t->z.in = (uint32_t)(ext->guest_offset &
				     (t->q->dev->layers[ext->depth].cluster_size - 1));
		ret = issue_stream_read(t, i, ext);
		t->inflating = ret == 0;
		return ret;
	default:
		memset(dst, 0, ext->length);
		return 0;
	}
}

/*
 * Map BACKING part i from where it got to, and ask for each piece, until
 * it is all asked for, a layer's table must be read first (issue_meta), t
 * waits (parked, or driving a flush), or a compressed piece is being read.
 */
static int backing_old(struct uq_tag *t, unsigned i)
{
	const struct qcow_cow_part *c = &t->plan.cow[i];
	const struct qcow_extent *ext = &t->ext;
	int ret;

	while (t->old_pos[i] < c->len) {
		if (t->inflating)
			return 0;
		t->old_part = (uint8_t)i;
		ret = eng_call(t, do_backing_map, "qcow_map_backing_nowait");
		if (ret == -EAGAIN) {
			issue_meta(t);
			return 0;
		}
		if (ret < 0)
			return waits(t) ? 0 : ret;
		if (!ext->length || ext->length > c->len - t->old_pos[i] ||
		    ext->depth >= t->q->dev->nr_layers) {
			tag_log(t, "qcow_map_backing_nowait", -EIO, "extent outside the part");
			return -EIO;
		}
		ret = backing_piece(t, i, ext);
		if (ret < 0)
			return ret;
		t->old_pos[i] += (uint32_t)ext->length;
	}
	t->old_asked |= 1U << i;
	return 0;
}

/* A piece of a BACKING part is read: sectors of the scratch buffer, and
 * how many (a short read: past the end of a raw base's file, zeros). */
void base_read_done(struct uq_tag *t, uint64_t extra, int res)
{
	uint64_t at = uq_extra_pos(extra) << 9, len = uq_extra_len(extra) << 9;

	t->ops--;
	if (res < 0) {
		tag_log(t, "copy-on-write read from the backing file", res, NULL);
		if (!t->write_result)
			t->write_result = res;
	} else if ((uint64_t)res < len) {
		memset(t->scratch + at + res, 0, len - (uint64_t)res);
	}
}

/* The parts whose old bytes are not asked for yet (bit i: part i). */
static unsigned old_left(const struct uq_tag *t)
{
	unsigned i, left = 0;

	for (i = 0; i < 2; i++)
		if (t->plan.cow[i].kind >= QCOW_COW_COPY && !(t->old_asked & 1U << i))
			left |= 1U << i;
	return left;
}

/* Is t stopped for something other than its reads (a table read, a
 * wait)? */
static bool old_stalled(const struct uq_tag *t)
{
	return t->wait_meta || waits(t);
}

/* Ask for the old bytes the parts keep: copies at once, the next compressed
 * stream (and the parts it serves) if none is being read, the backing
 * chain's as far as its map goes now. */
static int write_old(struct uq_tag *t)
{
	unsigned i, j, left = old_left(t);
	int ret = 0;

	if (!tag_scratch(t))
		return -ENOMEM;
	for (i = 0; i < 2 && ret == 0 && !old_stalled(t); i++) {
		if (!(left & 1U << i))
			continue;
		if (t->plan.cow[i].kind == QCOW_COW_COPY) {
			ret = issue_old_read(t, i);
			t->old_asked |= 1U << i;
		} else if (t->plan.cow[i].kind == QCOW_COW_BACKING) {
			ret = backing_old(t, i);
		} else if (!t->inflating) {
			ret = issue_part_stream_read(t, i);
			t->inflating = ret == 0;
			for (j = i; j < 2; j++)
				if (same_stream(&t->plan, i, j))
					t->old_asked |= 1U << j;
		}
	}
	return ret;
}

static bool needs_old(const struct qcow_write_plan *p)
{
	return p->cow[0].kind >= QCOW_COW_COPY || p->cow[1].kind >= QCOW_COW_COPY;
}

/* Queue an image write of len bytes, counted as a piece of the plan.  A
 * write into fresh clusters cannot complete without blocking (the file
 * system allocates), so it goes to the ring's worker (ring.c) at once
 * rather than being tried on the queue thread first. */
static void write_queued(struct uq_tag *t, struct io_uring_sqe *sqe, uint64_t len)
{
	sqe->flags |= IOSQE_FIXED_FILE | (t->plan.fresh ? IOSQE_ASYNC : 0);
	t->q->writes_queued = true;
	queued(t, sqe, uq_ud(UQ_UD_WRITE, t->tag, len));
	t->pieces++;
}

/* The guest bytes in our memory: a WRITE's in copy mode, a WRITE_ZEROES's
 * zeros; NULL where only WRITE_FIXED reaches them. */
static uint8_t *guest_bytes(const struct uq_tag *t)
{
	if (t->op == UBLK_IO_OP_WRITE_ZEROES)
		return t->q->dev->zero_buf;
	return zero_copy(t) ? NULL : t->buf + t->pos;
}

/* Parts and guest bytes in one vectored write (the bytes in our memory). */
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
			t->iov[n++] = (struct iovec){ guest_bytes(t), p->length };
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

	sqe = prep_fixed(t, true, t->pos, p->length, p->host_offset, 0);
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
	if (t->op == UBLK_IO_OP_WRITE_ZEROES)
		ret = issue_merged(t);
	else if (!part_used(&t->plan, 0) && !part_used(&t->plan, 1))
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
	t->old_asked = 0;
	t->old_pos[0] = t->old_pos[1] = 0;
	ret = write_old(t);
	if (ret < 0)
		t->write_result = ret;
	if (!t->ops && !old_stalled(t))
		write_run(t);		/* nothing in flight: failed, or all zeros */
}

bool write_run(struct uq_tag *t)
{
	int ret;

	if (t->ops)
		return false;		/* one stage at a time */
	if (t->write == UQ_WRITE_OLD) {
		ret = t->write_result;
		if (ret == 0 && old_left(t))
			ret = write_old(t);	/* the next stream, the chain's map */
		if (old_stalled(t) && ret == 0)
			return false;		/* a table read or a wait: back then */
		if (ret < 0 && !t->ops && !old_stalled(t))
			write_abort(t, ret);
		else if (ret < 0)
			t->write_result = ret;	/* abort once the reads are back */
		else if (!t->ops && !old_left(t)) {
			old_over(t);
			write_issue(t);
		}
		return false;
	}
	if (t->pos >= t->write_end)
		return true;
	ret = eng_call(t, do_write_begin, "qcow_write_begin_nowait");
	if (ret == -EAGAIN)
		issue_meta(t);
	else if (ret < 0 && !waits(t))
		tag_error(t, io_errno(ret));
	else if (ret >= 0)
		write_planned(t);
	return false;
}

void write_step(struct uq_tag *t)
{
	if (write_run(t))
		flush_step(t);
}

/* A compressed stream is read: inflate it (no lock: qcow_inflate_cluster)
 * and copy out the old bytes of the parts it serves. */
static void stream_done(struct uq_tag *t, unsigned i, int res)
{
	uint64_t cs = t->q->dev->info.cluster_size;
	unsigned j;

	t->inflating = false;
	if (res < 0 || (uint64_t)res < (uint64_t)t->z.skip + t->z.stream) {
		tag_log(t, "copy-on-write: compressed cluster read", res < 0 ? res : -EIO,
			res >= 0 ? "short read" : NULL);
		if (!t->write_result)
			t->write_result = res < 0 ? res : -EIO;
		return;
	}
	if (qcow_inflate_cluster(t->q->dev->layers[t->z.depth].img, t->stream + t->z.skip,
				 t->z.stream, t->q->cbuf) < 0) {
		tag_log(t, "copy-on-write: compressed cluster", -EIO,
			"its stream does not inflate to a cluster");
		if (!t->write_result)
			t->write_result = -EIO;
		return;
	}
	if (t->plan.cow[i].kind == QCOW_COW_BACKING) {
		memcpy(part_bytes(t, i) + t->z.pos, t->q->cbuf + t->z.in, t->z.len);
		return;
	}
	for (j = i; j < 2; j++) {
		const struct qcow_cow_part *c = &t->plan.cow[j];

		if (same_stream(&t->plan, i, j))
			memcpy(part_bytes(t, j), t->q->cbuf + (c->dst & (cs - 1)), c->len);
	}
}

/* Part i's old bytes are read (a short read: past the end of the file,
 * zeros), or with UQ_OLD_STREAM the compressed stream they are in. */
void old_read_done(struct uq_tag *t, unsigned i, int res)
{
	const struct qcow_cow_part *c = &t->plan.cow[i & 1];

	t->ops--;
	if (i & UQ_OLD_STREAM) {
		stream_done(t, i & 1, res);
		return;
	}
	if (res < 0) {
		tag_log(t, "copy-on-write read", res, NULL);
		if (!t->write_result)
			t->write_result = res;
	} else if ((uint64_t)res < c->len) {
		memset(part_bytes(t, i & 1) + res, 0, c->len - (uint64_t)res);
	}
}

/* One of the plan's writes is done; after the last, publish or roll back. */
void write_done(struct uq_tag *t, uint64_t len, int res)
{
	struct uq_dev *dev = t->q->dev;
	int result, ret;

	t->ops--;
	if ((uint64_t)res != len) {
		tag_log(t, "image write", res < 0 ? res : -EIO, res >= 0 ? "short write" : NULL);
		if (!t->write_result)
			t->write_result = res < 0 ? res : -EIO;
	}
	if (--t->pieces)
		return;
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
}
