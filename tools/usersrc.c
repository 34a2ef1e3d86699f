// SPDX-License-Identifier: MIT
/*
 * qcow-tool bench's request source (usersrc.h): the daemon's request path
 * with the part that talks to the driver (src/queue.c) replaced.  src/io.c
 * serves each request exactly as in the daemon: it gets a descriptor through
 * uq_io_start(), queues image IO with uq_get_sqe() on a ring set up as the
 * daemon's (uq_ring_init), and reports the end with uq_queue_commit(), which
 * here frees the tag for the next request instead of sending a COMMIT.
 *
 *   setup  queues in copy mode, as the daemon's: each with depth tags, each
 *          tag with a buffer registered with the queue's ring; the image at
 *          fixed file 1 (slot 0, the daemon's /dev/ublkcN, holds the image
 *          too: copy mode never uses it); one engine, one engine lock;
 *   loop   per queue, on a thread of its own when there are several: start
 *          requests on the free tags; submit, and wait for one completion
 *          when anything is in flight; hand every completion to io.c; retry
 *          parked requests; until every request of the queue has committed.
 *
 * With several queues, the job's sequence is cut into N runs of requests in
 * a row, one per queue, so that together they cover what one queue would
 * and each queue's requests are as contiguous as one queue's; a request
 * that waits for another queue's allocation or metadata load is woken
 * through its queue's eventfd, as in the daemon (engine_event_locked).
 * A flush (flush_interval) is a FLUSH request, as the driver sends it; each
 * queue counts its own requests for it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../src/ublk-qcow.h"
#include "usersrc.h"

/* one queue's share of the job, and where it stands */
struct usersrc_queue {
	struct uq_queue *q;
	struct ublksrv_io_desc *descs;
	unsigned *free_tags;
	unsigned nr_free;
	uint64_t count;			/* this queue's requests */
	uint64_t started;		/* reads and writes started */
	uint64_t next_off;
	uint64_t flushed_at;		/* started, when the last flush began */
	bool flush_running;
	int error;
	char err[256];
};

struct usersrc {
	const struct usersrc_job *job;
	struct uq_dev dev;		/* of_dev finds us from q->dev */
	struct usersrc_queue *qs;	/* one per dev.queues[] */
	atomic_int first_failed;	/* the queue whose error is reported, or -1 */
};

static struct usersrc *of_dev(struct uq_dev *dev)
{
	return (struct usersrc *)((char *)dev - offsetof(struct usersrc, dev));
}

static struct usersrc_queue *of_queue(struct uq_queue *q)
{
	return &of_dev(q->dev)->qs[q->id];
}

/*
 * u failed with ret: keep u's first error, stop every queue, and report u's
 * error unless another queue failed first (the others may then stall,
 * waiting for it).
 */
static int queue_fail(struct usersrc_queue *u, int ret, const char *what)
{
	int none = -1;

	if (!u->error) {
		u->error = ret;
		snprintf(u->err, sizeof(u->err), "%s", what);
	}
	atomic_compare_exchange_strong(&of_dev(u->q->dev)->first_failed, &none, (int)u->q->id);
	atomic_store(&u->q->dev->abort, true);
	return ret;
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
	struct usersrc_queue *u = of_queue(t->q);
	bool flush = t->op == UBLK_IO_OP_FLUSH;

	if (result < 0) {
		char what[sizeof(u->err)];

		snprintf(what, sizeof(what), "%s of %llu bytes at offset %llu failed: %s",
			 flush ? "flush" : t->op == UBLK_IO_OP_WRITE ? "write" : "read",
			 (unsigned long long)t->len, (unsigned long long)t->off,
			 strerror(-result));
		queue_fail(u, result, what);
	}
	if (flush)
		u->flush_running = false;
	t->op = 0xff;
	t->q->owned--;
	u->free_tags[u->nr_free++] = t->tag;
}

int uq_queue_buf_register(struct uq_tag *t)
{
	(void)t;
	return -EOPNOTSUPP;	/* copy mode: the tags' buffers are registered */
}

/* Another queue's request ended what one of q's waits for. A wake that
 * cannot be sent is not lost quietly: q's wait for it times out (STALLED). */
void uq_queue_wake(struct uq_queue *q)
{
	uint64_t one = 1;
	ssize_t n = q->efd >= 0 ? write(q->efd, &one, sizeof(one)) : 0;

	(void)n;
}

/* ------------------------------------------------------------- requests */

static void start(struct usersrc_queue *u, unsigned op, uint64_t off, uint64_t len)
{
	unsigned tag = u->free_tags[--u->nr_free];
	struct ublksrv_io_desc *d = &u->descs[tag];

	d->op_flags = op;
	d->nr_sectors = (uint32_t)(len >> 9);
	d->start_sector = off >> 9;
	d->addr = (uint64_t)(uintptr_t)u->q->tags[tag].buf;
	u->q->owned++;
	uq_io_start(&u->q->tags[tag], d);
}

/*
 * qemu-img bench's flushes: when the requests left are a multiple of the
 * interval, a flush, after the writes in flight (drain) or beside them.
 * True while new writes must wait.
 */
static bool flush_due(struct usersrc_queue *u, const struct usersrc_job *j)
{
	if (!j->write || !j->flush_interval || !u->started || u->started == u->count ||
	    (u->count - u->started) % j->flush_interval || u->flushed_at == u->started)
		return u->flush_running && j->drain;
	if (j->drain && u->q->owned)
		return true;
	u->flushed_at = u->started;
	u->flush_running = true;
	start(u, UBLK_IO_OP_FLUSH, 0, 0);
	return u->flush_running && j->drain;
}

static void start_requests(struct usersrc_queue *u, const struct usersrc_job *j)
{
	while (u->nr_free && !atomic_load(&u->q->dev->abort) && u->started < u->count &&
	       !flush_due(u, j)) {
		if (!u->nr_free)	/* flush_due took the last tag */
			break;
		u->started++;
		start(u, j->write ? UBLK_IO_OP_WRITE : UBLK_IO_OP_READ, u->next_off, j->bufsize);
		u->next_off = (u->next_off + j->step) % u->q->dev->dev_bytes;
	}
}

static int reap(struct uq_queue *q)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&q->ring, &cqe) == 0) {
		uint64_t ud = cqe->user_data;
		int res = cqe->res;

		io_uring_cqe_seen(&q->ring, cqe);
		if (uq_ud_kind(ud) == UQ_UD_EVENT) {
			uq_io_woken(q);
			continue;
		}
		if (uq_ud_tag(ud) >= q->dev->depth)
			return -EIO;
		uq_io_complete(q, ud, res);
	}
	return 0;
}

#define STALLED "request path stalled: requests wait with nothing in flight"
#define WAKE_WAIT_S 30

/*
 * Submit, and wait for a completion when anything is in flight. Requests
 * that only wait for other queues wait WAKE_WAIT_S at most for their wake:
 * the allocations and loads they wait for take milliseconds, a flush a
 * slow disk's seconds, and a lost wake would otherwise hang the run.
 */
static int wait_events(struct uq_queue *q)
{
	struct __kernel_timespec ts = { .tv_sec = WAKE_WAIT_S };
	struct io_uring_cqe *cqe;

	if (q->backend)
		return io_uring_submit_and_wait(&q->ring, 1);
	if (q->efd < 0 || q->retry)
		return io_uring_submit(&q->ring);
	return io_uring_submit_and_wait_timeout(&q->ring, &cqe, 1, &ts, NULL);
}

static int run_queue(struct usersrc_queue *u, const struct usersrc_job *j)
{
	struct uq_queue *q = u->q;
	int ret;

	for (;;) {
		start_requests(u, j);
		if (!q->owned && (atomic_load(&q->dev->abort) || u->started == u->count))
			return u->error;
		/* one queue has nobody to wake it; with several, another's
		 * event (an allocation it waits for ended) may, and soon */
		if (!q->backend && !q->retry && q->efd < 0)
			return queue_fail(u, -EIO, STALLED);
		ret = wait_events(q);
		if (ret == -ETIME)
			return queue_fail(u, -EIO, STALLED);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY)
			return queue_fail(u, ret, "io_uring_submit_and_wait failed");
		if (reap(q) < 0)
			return queue_fail(u, -EIO, "a completion for an unknown tag");
		if (q->retry)
			uq_io_retry_parked(q);
	}
}

/* ---------------------------------------------------------------- setup */

static int setup_buffers(struct uq_queue *q, uint8_t pattern)
{
	struct uq_dev *dev = q->dev;
	struct iovec *iov = calloc(dev->depth, sizeof(*iov));
	unsigned i;
	int ret;

	q->bufs_len = (size_t)dev->depth * dev->buf_bytes;
	q->bufs = aligned_alloc(4096, q->bufs_len);
	if (!iov || !q->bufs) {
		free(iov);
		return -ENOMEM;
	}
	/* writes write the pattern; reads overwrite it */
	memset(q->bufs, pattern, q->bufs_len);
	for (i = 0; i < dev->depth; i++) {
		q->tags[i].buf = q->bufs + (size_t)i * dev->buf_bytes;
		iov[i].iov_base = q->tags[i].buf;
		iov[i].iov_len = dev->buf_bytes;
	}
	ret = io_uring_register_buffers(&q->ring, iov, dev->depth);
	free(iov);
	return ret;
}

/* Queue k's tags, eventfd and share of the requests, before any thread runs. */
static int setup_queue(struct usersrc *s, unsigned k)
{
	const struct usersrc_job *j = s->job;
	struct uq_dev *dev = &s->dev;
	struct uq_queue *q = &dev->queues[k];
	struct usersrc_queue *u = &s->qs[k];
	uint64_t per = j->count / j->queues, more = j->count % j->queues;
	uint64_t first = k * per + (k < more ? k : more);	/* in the sequence */
	unsigned i;

	u->q = q;
	u->count = per + (k < more);
	/* where one queue would be: the first request at the offset as given
	 * (past the end, it fails), the next ones wrapped */
	u->next_off = first ? (uint64_t)(((unsigned __int128)first * j->step + j->offset) %
					 dev->dev_bytes) : j->offset;
	u->flushed_at = UINT64_MAX;
	q->tags = calloc(j->depth, sizeof(*q->tags));
	q->cbuf = malloc(dev->max_cluster);
	u->descs = calloc(j->depth, sizeof(*u->descs));
	u->free_tags = calloc(j->depth, sizeof(*u->free_tags));
	if (!q->tags || !q->cbuf || !u->descs || !u->free_tags)
		return -ENOMEM;
	for (i = 0; i < j->depth; i++) {
		q->tags[i].q = q;
		q->tags[i].tag = (uint16_t)i;
		q->tags[i].op = 0xff;
		u->free_tags[u->nr_free++] = j->depth - 1 - i;
	}
	if (j->queues > 1) {
		q->efd = eventfd(0, EFD_CLOEXEC);
		if (q->efd < 0)
			return -errno;
	}
	return 0;
}

/*
 * Queue q's ring, on the thread that will use it: the ring allows one
 * submitter (IORING_SETUP_SINGLE_ISSUER), the task that created it.
 */
static int ring_setup(struct uq_queue *q, uint8_t pattern)
{
	int ret = uq_ring_init(&q->ring, q->dev->depth + 1);	/* + the eventfd's read */

	if (ret < 0)
		return ret;
	q->ring_ok = true;
	/* no /dev/ublkcN: its slot holds the image, never used */
	ret = uq_ring_attach(&q->ring, q->dev, q->dev->img_fd);
	if (!ret)
		ret = setup_buffers(q, pattern);
	if (!ret && q->efd >= 0)
		uq_io_arm_wake(q);
	return ret;
}

/* The ring's own reference to the image goes first, on its thread: the
 * ring is torn down in the background, and the image lock would outlive us. */
static void ring_teardown(struct uq_queue *q)
{
	if (!q->ring_ok)
		return;
	io_uring_unregister_files(&q->ring);
	io_uring_queue_exit(&q->ring);
	q->ring_ok = false;
}

/* Queue u from its ring's set-up to its teardown; its error in u. */
static void serve_queue(struct usersrc_queue *u, const struct usersrc_job *j)
{
	int ret = ring_setup(u->q, j->pattern);

	if (ret < 0) {
		char what[sizeof(u->err)];

		snprintf(what, sizeof(what), "setting up the request path: %s", strerror(-ret));
		queue_fail(u, ret, what);
	} else {
		run_queue(u, j);
	}
	ring_teardown(u->q);
}

static int setup(struct usersrc *s)
{
	const struct usersrc_job *j = s->job;
	struct uq_dev *dev = &s->dev;
	unsigned k;
	int ret;

	dev->img = j->img;
	dev->img_fd = qcow_get_file(j->img)->fd;
	qcow_get_info(j->img, &dev->info);
	pthread_mutex_init(&dev->engine_lock, NULL);
	dev->queues = calloc(j->queues, sizeof(*dev->queues));
	s->qs = calloc(j->queues, sizeof(*s->qs));
	if (!dev->queues || !s->qs || uq_io_layers_init(dev) < 0)
		return -ENOMEM;
	dev->data_mode = UQ_DATA_COPY;
	dev->block_bytes = j->block_bytes;
	dev->buf_bytes = (uint32_t)((j->bufsize + 4095) & ~4095ULL);
	dev->nr_queues = j->queues;
	dev->depth = j->depth;
	dev->dev_bytes = dev->info.virtual_size;
	if (uq_io_zero_buf_alloc(dev) < 0)
		return -ENOMEM;
	for (k = 0; k < j->queues; k++) {	/* wakes look at every queue's efd */
		dev->queues[k].dev = dev;
		dev->queues[k].id = k;
		dev->queues[k].efd = -1;
	}
	for (k = 0; k < j->queues; k++) {
		ret = setup_queue(s, k);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static void *queue_thread(void *arg)
{
	struct usersrc_queue *u = arg;

	serve_queue(u, of_dev(u->q->dev)->job);
	return NULL;
}

static void teardown_queue(struct usersrc_queue *u)
{
	struct uq_queue *q = u->q;

	if (!q)
		return;
	if (q->efd >= 0)
		close(q->efd);
	free(q->bufs);
	for (unsigned i = 0; q->tags && i < q->dev->depth; i++)
		free(q->tags[i].scratch);
	free(q->tags);
	free(q->cbuf);
	free(u->descs);
	free(u->free_tags);
}

static void teardown(struct usersrc *s)
{
	for (unsigned k = 0; s->qs && k < s->job->queues; k++)
		teardown_queue(&s->qs[k]);
	pthread_mutex_destroy(&s->dev.engine_lock);
	free(s->dev.zero_buf);
	uq_io_layers_free(&s->dev);
	free(s->dev.queues);
	free(s->qs);
}

/* Every queue to the end; the error of the queue that failed first, if any. */
static int run(struct usersrc *s, char *err, size_t errlen)
{
	unsigned k, nr = s->job->queues, started = 0;
	pthread_t *threads = nr > 1 ? calloc(nr, sizeof(*threads)) : NULL;

	if (nr == 1)
		serve_queue(&s->qs[0], s->job);
	else if (!threads)
		return -ENOMEM;
	for (k = 0; nr > 1 && k < nr; k++, started++)
		if (pthread_create(&threads[k], NULL, queue_thread, &s->qs[k])) {
			queue_fail(&s->qs[k], -EAGAIN, "cannot start the queue's thread");
			break;
		}
	for (k = 0; k < started; k++)
		pthread_join(threads[k], NULL);
	free(threads);
	k = (unsigned)atomic_load(&s->first_failed);
	if (k >= nr)
		return 0;
	if (nr > 1)
		snprintf(err, errlen, "queue %u: %s", k, s->qs[k].err);
	else
		snprintf(err, errlen, "%s", s->qs[k].err);
	return s->qs[k].error;
}

uint32_t usersrc_max_request(void)
{
	return UQ_MAX_IO_BYTES;
}

int usersrc_run(const struct usersrc_job *job, char *err, size_t errlen)
{
	struct usersrc s;
	int ret;

	memset(&s, 0, sizeof(s));
	s.job = job;
	atomic_init(&s.first_failed, -1);
	err[0] = '\0';
	ret = setup(&s);
	if (ret < 0)
		snprintf(err, errlen, "setting up the request path: %s", strerror(-ret));
	else
		ret = run(&s, err, errlen);
	teardown(&s);
	return ret;
}
