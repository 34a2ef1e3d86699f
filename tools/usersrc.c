// SPDX-License-Identifier: MIT
/*
 * qcow-tool bench's request source (usersrc.h): the daemon's request path
 * with the part that talks to the driver (src/queue.c) replaced.  src/io.c
 * serves each request exactly as in the daemon: it gets a descriptor through
 * uq_io_start(), queues image IO with uq_get_sqe() on a ring set up as the
 * daemon's (uq_ring_init), and reports the end with uq_queue_commit(), which
 * here frees the tag for the next request instead of sending a COMMIT.
 *
 *   setup  one queue in copy mode: depth tags, each with a buffer
 *          registered with the ring; the image at fixed file 1, as in the
 *          daemon (slot 0, the daemon's /dev/ublkcN, holds the image too:
 *          copy mode never uses it);
 *   loop   start requests on the free tags; submit, and wait for one
 *          completion when anything is in flight; hand every completion to
 *          io.c; retry parked requests; until every request has committed.
 *
 * A flush (flush_interval) is a FLUSH request, as the driver sends it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>

#include "../src/ublk-qcow.h"
#include "usersrc.h"

struct usersrc {
	const struct usersrc_job *job;
	struct uq_dev dev;
	struct uq_queue q;
	struct ublksrv_io_desc *descs;
	unsigned *free_tags;
	unsigned nr_free;
	uint64_t started;		/* reads and writes started */
	uint64_t committed;		/* reads and writes done */
	uint64_t next_off;
	uint64_t flushed_at;		/* started, when the last flush began */
	bool flush_running;
	int error;
	char *err;
	size_t errlen;
};

static struct usersrc *of_queue(struct uq_queue *q)
{
	return (struct usersrc *)((char *)q - offsetof(struct usersrc, q));
}

/* ------------------------------------------------ what io.c calls back */

struct io_uring_sqe *uq_get_sqe(struct uq_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe) {
		io_uring_submit(&q->ring);
		sqe = io_uring_get_sqe(&q->ring);
	}
	return sqe;
}

void uq_queue_commit(struct uq_tag *t, int result)
{
	struct usersrc *s = of_queue(t->q);
	bool flush = t->op == UBLK_IO_OP_FLUSH;

	if (result < 0 && !s->error) {
		s->error = result;
		snprintf(s->err, s->errlen, "%s of %llu bytes at offset %llu failed: %s",
			 flush ? "flush" : t->op == UBLK_IO_OP_WRITE ? "write" : "read",
			 (unsigned long long)t->len, (unsigned long long)t->off,
			 strerror(-result));
	}
	if (flush)
		s->flush_running = false;
	else
		s->committed++;
	t->op = 0xff;
	t->q->owned--;
	s->free_tags[s->nr_free++] = t->tag;
}

int uq_queue_buf_register(struct uq_tag *t)
{
	(void)t;
	return -EOPNOTSUPP;	/* copy mode: the tags' buffers are registered */
}

void uq_queue_wake(struct uq_queue *q)
{
	(void)q;		/* one queue: nobody else to wake */
}

/* ------------------------------------------------------------- requests */

static void start(struct usersrc *s, unsigned op, uint64_t off, uint64_t len)
{
	unsigned tag = s->free_tags[--s->nr_free];
	struct ublksrv_io_desc *d = &s->descs[tag];

	d->op_flags = op;
	d->nr_sectors = (uint32_t)(len >> 9);
	d->start_sector = off >> 9;
	d->addr = (uint64_t)(uintptr_t)s->q.tags[tag].buf;
	s->q.owned++;
	uq_io_start(&s->q.tags[tag], d);
}

/*
 * qemu-img bench's flushes: when the requests left are a multiple of the
 * interval, a flush, after the writes in flight (drain) or beside them.
 * True while new writes must wait.
 */
static bool flush_due(struct usersrc *s)
{
	const struct usersrc_job *j = s->job;

	if (!j->write || !j->flush_interval || !s->started || s->started == j->count ||
	    (j->count - s->started) % j->flush_interval || s->flushed_at == s->started)
		return s->flush_running && j->drain;
	if (j->drain && s->q.owned)
		return true;
	s->flushed_at = s->started;
	s->flush_running = true;
	start(s, UBLK_IO_OP_FLUSH, 0, 0);
	return s->flush_running && j->drain;
}

static void start_requests(struct usersrc *s)
{
	const struct usersrc_job *j = s->job;

	while (s->nr_free && !s->error && s->started < j->count && !flush_due(s)) {
		if (!s->nr_free)	/* flush_due took the last tag */
			break;
		s->started++;
		start(s, j->write ? UBLK_IO_OP_WRITE : UBLK_IO_OP_READ, s->next_off, j->bufsize);
		s->next_off = (s->next_off + j->step) % s->dev.dev_bytes;
	}
}

static int reap(struct usersrc *s)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&s->q.ring, &cqe) == 0) {
		uint64_t ud = cqe->user_data;
		int res = cqe->res;

		io_uring_cqe_seen(&s->q.ring, cqe);
		if (uq_ud_tag(ud) >= s->dev.depth)
			return -EIO;
		uq_io_complete(&s->q, ud, res);
	}
	return 0;
}

static int run_loop(struct usersrc *s)
{
	int ret;

	for (;;) {
		start_requests(s);
		if (!s->q.owned && (s->error || s->started == s->job->count))
			return s->error;
		if (!s->q.backend && !s->q.retry) {
			snprintf(s->err, s->errlen, "request path stalled: %u requests wait with "
				 "nothing in flight", s->q.owned);
			return -EIO;
		}
		ret = io_uring_submit_and_wait(&s->q.ring, s->q.backend ? 1 : 0);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			snprintf(s->err, s->errlen, "io_uring_submit_and_wait: %s", strerror(-ret));
			return ret;
		}
		if (reap(s) < 0) {
			snprintf(s->err, s->errlen, "a completion for an unknown tag");
			return -EIO;
		}
		if (s->q.retry)
			uq_io_retry_parked(&s->q);
	}
}

/* ---------------------------------------------------------------- setup */

static int setup_buffers(struct usersrc *s)
{
	struct uq_dev *dev = &s->dev;
	struct iovec *iov = calloc(dev->depth, sizeof(*iov));
	unsigned i;
	int ret;

	s->q.bufs_len = (size_t)dev->depth * dev->buf_bytes;
	s->q.bufs = aligned_alloc(4096, s->q.bufs_len);
	if (!iov || !s->q.bufs) {
		free(iov);
		return -ENOMEM;
	}
	/* writes write the pattern; reads overwrite it */
	memset(s->q.bufs, s->job->pattern, s->q.bufs_len);
	for (i = 0; i < dev->depth; i++) {
		s->q.tags[i].buf = s->q.bufs + (size_t)i * dev->buf_bytes;
		iov[i].iov_base = s->q.tags[i].buf;
		iov[i].iov_len = dev->buf_bytes;
	}
	ret = io_uring_register_buffers(&s->q.ring, iov, dev->depth);
	free(iov);
	return ret;
}

static int setup(struct usersrc *s)
{
	const struct usersrc_job *j = s->job;
	struct uq_dev *dev = &s->dev;
	struct uq_queue *q = &s->q;
	const struct qcow_file *f = qcow_get_file(j->img);
	unsigned i;
	int ret;

	dev->img = j->img;
	dev->img_fd = f->fd;
	qcow_get_info(j->img, &dev->info);
	if (uq_io_layers_init(dev) < 0)
		return -ENOMEM;
	dev->data_mode = UQ_DATA_COPY;
	dev->block_bytes = j->block_bytes;
	dev->buf_bytes = (uint32_t)((j->bufsize + 4095) & ~4095ULL);
	dev->nr_queues = 1;
	dev->depth = j->depth;
	dev->dev_bytes = dev->info.virtual_size;
	dev->queues = q;
	pthread_mutex_init(&dev->engine_lock, NULL);
	q->dev = dev;
	q->efd = -1;
	q->tags = calloc(j->depth, sizeof(*q->tags));
	q->cbuf = malloc(dev->max_cluster);
	s->descs = calloc(j->depth, sizeof(*s->descs));
	s->free_tags = calloc(j->depth, sizeof(*s->free_tags));
	if (!q->tags || !q->cbuf || !s->descs || !s->free_tags || uq_io_zero_buf_alloc(dev) < 0)
		return -ENOMEM;
	for (i = 0; i < j->depth; i++) {
		q->tags[i].q = q;
		q->tags[i].tag = (uint16_t)i;
		q->tags[i].op = 0xff;
		s->free_tags[s->nr_free++] = j->depth - 1 - i;
	}
	ret = uq_ring_init(&q->ring, j->depth);
	if (ret < 0)
		return ret;
	q->ring_ok = true;
	/* no /dev/ublkcN: its slot holds the image, never used */
	ret = uq_ring_attach(&q->ring, dev, f->fd);
	return ret < 0 ? ret : setup_buffers(s);
}

static void teardown(struct usersrc *s)
{
	/* the ring's own reference to the image goes first: the ring is torn
	 * down in the background, and the image lock would outlive us */
	if (s->q.ring_ok) {
		io_uring_unregister_files(&s->q.ring);
		io_uring_queue_exit(&s->q.ring);
	}
	pthread_mutex_destroy(&s->dev.engine_lock);
	free(s->q.bufs);
	for (unsigned i = 0; s->q.tags && i < s->dev.depth; i++)
		free(s->q.tags[i].scratch);
	free(s->q.tags);
	free(s->dev.zero_buf);
	free(s->q.cbuf);
	uq_io_layers_free(&s->dev);
	free(s->descs);
	free(s->free_tags);
}

int usersrc_run(const struct usersrc_job *job, char *err, size_t errlen)
{
	struct usersrc s;
	int ret;

	memset(&s, 0, sizeof(s));
	s.job = job;
	s.err = err;
	s.errlen = errlen;
	s.next_off = job->offset;
	s.flushed_at = UINT64_MAX;
	err[0] = '\0';
	ret = setup(&s);
	if (ret < 0)
		snprintf(err, errlen, "setting up the request path: %s", strerror(-ret));
	else
		ret = run_loop(&s);
	teardown(&s);
	return ret;
}
