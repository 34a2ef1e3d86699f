/* SPDX-License-Identifier: MIT */
/*
 * The request's flush stage (the request machine is io.c's): a FLUSH, the
 * end of a FUA write, and with --recoverable the end of a write, discard or
 * zeroing while metadata is unwritten, run the engine's flush
 * (qcow_flush_start/next/io_done) on the request's ring: its table writes
 * and fsyncs (and the punches that give freed clusters back to the file
 * system) are queued batch by batch, and the engine lock is held only to
 * report a batch and ask for the next.  One flush runs at a time; a request
 * that finds one running waits for its end and asks again (usually nothing
 * is left to do: it was covered), unless all it needs is an fsync: the
 * running flush has written its tables and nothing else is unwritten
 * (qcow_sync_begin).  Then it issues an fsync of its own on its ring and
 * is done when that is (the block layer sends a queue one FLUSH at a time,
 * so this is how two queues' FLUSHes overlap: design 16.3).  A request
 * whose load finds only dirty tables to evict runs one too (io.c,
 * park_locked), then goes on.  A driving request never fails itself
 * mid-flush (what it cannot queue fails the batch), so the engine's flush
 * always ends.  A FLUSH's flush also writes the persistent bitmaps back
 * (tag.c, flush_flags; not --bitmaps=close).
 */
#include <errno.h>
#include <linux/falloc.h>

#include "io.h"

#define UQ_FLUSH_BATCH 16
/* a punch's user data: no length a table write has */
#define UQ_FLUSH_PUNCH ((1ULL << UQ_UD_EXTRA_BITS) - 1)

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
enum uq_flush_stage flush_wanted(const struct uq_tag *t)
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
	int ret = drive_start_locked(t);

	if (ret == -EBUSY)
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
		else if (ios[i].op == QCOW_IO_PUNCH)
			io_uring_prep_fallocate(sqe, UQ_FIXED_IMAGE,
						FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						ios[i].offset, ios[i].len);
		else if (ios[i].op == QCOW_IO_READ)
			io_uring_prep_read(sqe, UQ_FIXED_IMAGE, ios[i].buf, (unsigned)ios[i].len,
					   ios[i].offset);
		else
			io_uring_prep_write(sqe, UQ_FIXED_IMAGE, ios[i].buf, (unsigned)ios[i].len,
					    ios[i].offset);
		sqe->flags |= IOSQE_FIXED_FILE;
		io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_FLUSH, t->tag,
						   ios[i].op == QCOW_IO_FSYNC ? 0 :
						   ios[i].op == QCOW_IO_PUNCH ? UQ_FLUSH_PUNCH :
						   ios[i].len));
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
	/* refcount blocks it read are loaded (a request may wait for one:
	 * LOAD), and its slots are free again (that wakes the waits with no
	 * name, as every event does) */
	engine_event_locked(t->q, QCOW_WAIT_LOAD);
	eng_unlock(dev);
	t->flush_result = 0;
}

/*
 * Drive the flush t started, batch after batch: true while it goes on (its
 * IO in flight), false once it is over (t failed if it did).
 */
bool flush_drive(struct uq_tag *t)
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
			if (n == 0 && dev->flushes_done < t->drive_gen)
				dev->flushes_done = t->drive_gen;
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

/* t's own fsync, beside the running flush (own_sync_begin_locked). */
static void issue_own_sync(struct uq_tag *t)
{
	struct io_uring_sqe *sqe = uq_get_sqe(t->q);

	if (!sqe) {
		tag_error(t, -EIO);
		return;
	}
	io_uring_prep_fsync(sqe, UQ_FIXED_IMAGE, IORING_FSYNC_DATASYNC);
	sqe->flags |= IOSQE_FIXED_FILE;
	queued(t, sqe, uq_ud(UQ_UD_SYNC, t->tag, 0));
	uq_count(t->q, UQ_QS_OWN_SYNCS, 1);
}

void uq_io_sync_done(struct uq_tag *t, int res)
{
	struct uq_dev *dev = t->q->dev;
	int ret;

	t->ops--;
	eng_lock(dev);
	ret = qcow_sync_end(dev->img, &t->sync, res < 0 ? res : 0);
	if (ret < 0)
		eng_log_locked(t, "fsync", ret);
	eng_unlock(dev);
	if (ret < 0)
		tag_error(t, io_errno(ret));
}

/*
 * The request's flush stage, at its end: start a flush, or wait for the one
 * running to end; uq_io_advance drives the one it starts and comes back
 * here once it is over.  A flush started after the stage began covers it
 * (it snapshots everything completed before its start), so a request that
 * waited is done once such a flush has succeeded, whoever ran it: FLUSHes
 * that arrive while one runs join the next (by generation), they do not
 * each start their own; or, when an fsync is all they need, they issue
 * one of their own and do not wait.
 */
void flush_step(struct uq_tag *t)
{
	struct uq_dev *dev = t->q->dev;
	struct qcow_image *img = dev->img;
	bool own = false;
	int ret = 1;

	if (t->ops)
		return;
	if (t->flush != UQ_FLUSH_NONE) {	/* most requests: no lock taken */
		eng_lock(dev);
		if (t->flush_gen && dev->flushes_done >= t->flush_gen) {
			uq_count(t->q, UQ_QS_FLUSH_JOINS, 1);
		} else if (own_sync_begin_locked(t)) {
			own = true;
		} else if (t->flush == UQ_FLUSH_ALL || qcow_flush_running(img) ||
			   qcow_metadata_unwritten(img)) {
			if (!t->flush_gen)
				t->flush_gen = dev->flushes_started + 1;
			ret = flush_start_locked(t);
		}
		eng_unlock(dev);
		if (t->parked)
			return;
		t->flush = UQ_FLUSH_NONE;
		if (own)
			issue_own_sync(t);
		if (ret < 0)
			tag_error(t, io_errno(ret));
		if (t->driving)
			return;
	}
	t->issued_all = true;
}

/* A table write or read, the fsync or a punch of the engine's flush; the
 * batch reported after its last. A punch that fails (a file system that
 * cannot) only keeps the bytes. */
void uq_io_flush_done(struct uq_tag *t, uint64_t len, int res)
{
	t->ops--;
	if (len == UQ_FLUSH_PUNCH) {
		/* advisory */
	} else if (res < 0 || (uint64_t)res != len) {
		tag_log(t, len ? "metadata IO of the flush" : "fsync", res < 0 ? res : -EIO,
			res >= 0 ? "short" : NULL);
		if (!t->flush_result)
			t->flush_result = res < 0 ? res : -EIO;
	}
	if (!t->ops)
		flush_batch_done(t);
}

