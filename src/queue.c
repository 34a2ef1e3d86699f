/* SPDX-License-Identifier: MIT */
/*
 * Queue threads.  On 6.12 the task that issues a queue's FETCH_REQs is that
 * queue's daemon, and every later command for the queue must come from it,
 * so each queue gets one thread that owns one io_uring and does everything
 * for its tags:
 *
 *   setup:  with --pin-queues, pin to the queue's CPUs (choose_cpus); create the ring
 *           (SINGLE_ISSUER | DEFER_TASKRUN where the kernel has them),
 *           register the files [/dev/ublkcN, image] and the per-tag buffers
 *           (copy mode; a sparse table, one index per tag, in the zero-copy
 *           modes), map the descriptor array, queue one
 *           FETCH_REQ per tag, submit, report ready;
 *   loop:   io_uring_submit_and_wait(1), then handle every CQE; what the
 *           handlers queue (commits, image IO) goes out with the next submit;
 *   exit:   once a command came back -ENODEV (STOP_DEV) and neither ublk
 *           commands nor backend IO are outstanding; or at once on abort.
 *
 * The main thread waits until every queue has its fetches in before it
 * sends START_DEV.
 */
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "ublk-qcow.h"

/* A free SQE, flushing the queued ones to the kernel when the ring is full. */
struct io_uring_sqe *uq_get_sqe(struct uq_queue *q)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&q->ring);

	if (!sqe) {
		io_uring_submit(&q->ring);
		sqe = io_uring_get_sqe(&q->ring);
	}
	if (!sqe) {
		uq_err("queue %u: no free submission entry", q->id);
		q->fatal = true;
	}
	return sqe;
}

/* A uring_cmd on /dev/ublkcN (fixed file 0) carrying a struct ublksrv_io_cmd. */
static struct io_uring_sqe *queue_io_cmd(struct uq_queue *q, uint32_t op, unsigned tag,
					 int result, uint64_t addr, uint64_t ud)
{
	struct ublksrv_io_cmd cmd = {
		.q_id = (uint16_t)q->id,
		.tag = (uint16_t)tag,
		.result = result,
		.addr = addr,
	};
	struct io_uring_sqe *sqe = uq_get_sqe(q);

	if (!sqe)
		return NULL;
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, UQ_FIXED_CDEV, NULL, 0, 0);
	sqe->flags = IOSQE_FIXED_FILE;
	sqe->cmd_op = op;
	memcpy((uint8_t *)sqe + offsetof(struct io_uring_sqe, addr3), &cmd, sizeof(cmd));
	io_uring_sqe_set_data64(sqe, ud);
	return sqe;
}

/*
 * FETCH_REQ or COMMIT_AND_FETCH_REQ on t.  Copy mode names the tag's
 * buffer; auto registration asks, in the SQE's own addr, for the next
 * request's buffer at buffer index tag, and for the fallback (the request
 * comes flagged NEED_REG_BUF) should the driver not manage it.
 */
static int queue_fetch_cmd(struct uq_tag *t, uint32_t op, int result)
{
	struct uq_dev *dev = t->q->dev;
	uint64_t addr = dev->data_mode == UQ_DATA_COPY ? (uint64_t)(uintptr_t)t->buf : 0;
	struct io_uring_sqe *sqe;

	sqe = queue_io_cmd(t->q, op, t->tag, result, addr, uq_ud(UQ_UD_CMD, t->tag, 0));
	if (!sqe)
		return -EBUSY;
	if (dev->data_mode == UQ_DATA_AUTO_BUF_REG) {
		struct ublk_auto_buf_reg reg = { .index = t->tag,
						 .flags = UBLK_AUTO_BUF_REG_FALLBACK };

		memcpy(&sqe->addr, &reg, sizeof(reg));
	}
	t->q->cmds++;
	return 0;
}

/*
 * Complete the tag's request with result and ask for the next one.  A
 * buffer we registered is unregistered first, in the same submission and
 * linked to the commit: the driver takes UNREGISTER_IO_BUF only while the
 * request is still ours.  Its success posts nothing.
 */
void uq_queue_commit(struct uq_tag *t, int result)
{
	struct uq_queue *q = t->q;
	struct io_uring_sqe *sqe;

	t->op = 0xff;
	q->owned--;
	if (t->zc_reg) {
		t->zc_reg = false;
		sqe = queue_io_cmd(q, UBLK_U_IO_UNREGISTER_IO_BUF, t->tag, 0, t->tag,
				   uq_ud(UQ_UD_ZC, t->tag, 1));
		if (sqe)
			sqe->flags |= IOSQE_IO_HARDLINK | IOSQE_CQE_SKIP_SUCCESS;
	}
	queue_fetch_cmd(t, UBLK_U_IO_COMMIT_AND_FETCH_REQ, result);
}

/*
 * Zero copy: register the request's buffer at index tag.  The image IO
 * that uses it may be queued right behind it, in the same submission:
 * io_uring issues a submission's SQEs in order, and the registration is
 * done when its command is issued.
 */
int uq_queue_buf_register(struct uq_tag *t)
{
	struct io_uring_sqe *sqe;

	sqe = queue_io_cmd(t->q, UBLK_U_IO_REGISTER_IO_BUF, t->tag, 0, t->tag,
			   uq_ud(UQ_UD_ZC, t->tag, 0));
	if (!sqe)
		return -EBUSY;
	t->q->backend++;
	return 0;
}

void uq_queue_wake(struct uq_queue *q)
{
	uint64_t one = 1;

	if (q->efd >= 0 && write(q->efd, &one, sizeof(one)) < 0)
		uq_log_errno("eventfd write", -errno);
}

/* ----------------------------------------------------------- CQE handling */

static void handle_cmd_cqe(struct uq_queue *q, unsigned tag, int res)
{
	struct uq_tag *t = &q->tags[tag];

	q->cmds--;
	if (res == UBLK_IO_RES_OK) {
		q->owned++;
		uq_io_start(t, &q->descs[tag]);
		return;
	}
	if (res == UBLK_IO_RES_ABORT) {
		q->stopping = true;
		return;
	}
	/*
	 * A rejected FETCH leaves START_DEV waiting for it, a rejected COMMIT
	 * leaves its request unfinished: either way this queue cannot go on.
	 * Exiting the ring makes the kernel abort the device's requests.
	 */
	uq_err("queue %u tag %u: ublk command failed: %d (%s)", q->id, tag, res,
	       strerror(-res));
	q->fatal = true;
}

static void handle_event_cqe(struct uq_queue *q, int res)
{
	struct uq_dev *dev = q->dev;

	if (res < 0 && res != -EINTR && res != -EAGAIN)
		uq_log_errno("eventfd read", res);
	if (atomic_load(&dev->abort))
		return;
	uq_io_woken(q);
}

static void handle_cqe(struct uq_queue *q, uint64_t ud, int res)
{
	unsigned tag = uq_ud_tag(ud);
	enum uq_ud_kind kind = uq_ud_kind(ud);

	if (kind != UQ_UD_EVENT && tag >= q->dev->depth) {
		uq_err("queue %u: completion for tag %u out of range", q->id, tag);
		return;
	}
	/* every kind named, no default: a new kind must be routed here
	 * (-Wswitch), or its request would never complete */
	switch (kind) {
	case UQ_UD_CMD:
		handle_cmd_cqe(q, tag, res);
		return;
	case UQ_UD_ZC:
		if (uq_ud_extra(ud)) {
			/* an unregister failed: the buffer table is not what we think */
			uq_err("queue %u tag %u: UNREGISTER_IO_BUF failed: %d (%s)", q->id, tag,
			       res, strerror(-res));
			q->fatal = true;
			return;
		}
		uq_io_complete(q, ud, res);
		return;
	case UQ_UD_DATA:
	case UQ_UD_WRITE:
	case UQ_UD_OLD:
	case UQ_UD_STREAM:
	case UQ_UD_META:
	case UQ_UD_FILL:
	case UQ_UD_FLUSH:
	case UQ_UD_BASE:
	case UQ_UD_SYNC:
		uq_io_complete(q, ud, res);
		return;
	case UQ_UD_EVENT:
		handle_event_cqe(q, res);
		return;
	}
	uq_err("queue %u: completion of unknown kind %d", q->id, (int)kind);
}

static bool queue_done(const struct uq_queue *q)
{
	return q->fatal || atomic_load(&q->dev->abort) ||
	       (q->stopping && !q->cmds && !q->backend && !q->owned);
}

/* Handle every CQE already posted. */
static void reap(struct uq_queue *q)
{
	struct io_uring_cqe *cqe;

	while (io_uring_peek_cqe(&q->ring, &cqe) == 0) {
		uint64_t ud = cqe->user_data;
		int res = cqe->res;

		io_uring_cqe_seen(&q->ring, cqe);
		uq_count(q, UQ_QS_CQES, 1);
		handle_cqe(q, ud, res);
	}
}

/*
 * Before image writes go out, set the image's modification time once per
 * clock tick.  A write must update the file's timestamps when the clock
 * has moved on since the last update, and the file system refuses to do
 * that without blocking (kiocb_modified under IOCB_NOWAIT, seen on 7.3.4,
 * not on 6.12), so each write issued in that window goes to the io-wq
 * worker instead.  One futimens a tick on the queue thread does the update
 * first (a journal handle on ext4) and costs less (doc/design.md 16.2).
 * Only when writes are queued, so that reading the device leaves the
 * image's times alone; a failure changes nothing.
 */
static void stamp_image(struct uq_queue *q)
{
	static const struct timespec now_m[2] = { { 0, UTIME_OMIT }, { 0, UTIME_NOW } };
	struct timespec tick;

	q->writes_queued = false;
	if (clock_gettime(CLOCK_REALTIME_COARSE, &tick) < 0 ||
	    (tick.tv_sec == q->stamped.tv_sec && tick.tv_nsec == q->stamped.tv_nsec))
		return;
	q->stamped = tick;
	futimens(q->dev->img_fd, now_m);
}

static void queue_loop(struct uq_queue *q)
{
	int ret;

	while (!queue_done(q)) {
		if (q->writes_queued)
			stamp_image(q);
		ret = io_uring_submit_and_wait(&q->ring, 1);
		uq_count(q, UQ_QS_ROUNDS, 1);
		if (ret < 0 && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			uq_log_errno("io_uring_submit_and_wait", ret);
			q->fatal = true;
			break;
		}
		reap(q);
		if (q->retry)
			uq_io_retry_parked(q);
		uq_io_quiesce_step(q);
	}
}

/* ------------------------------------------------------------------ setup */

static int ring_init(struct uq_queue *q)
{
	int ret = uq_ring_init(&q->ring, q->dev->depth);

	if (ret < 0)
		return uq_log_errno("io_uring_queue_init_params", ret);
	q->ring_ok = true;
	return 0;
}

/* Copy mode: one buffer of buf_bytes per tag, locked, registered at index tag. */
static int buffers_init(struct uq_queue *q)
{
	struct uq_dev *dev = q->dev;
	struct iovec *iov;
	unsigned i;
	int ret;

	if (dev->data_mode != UQ_DATA_COPY) {
		ret = io_uring_register_buffers_sparse(&q->ring, dev->depth);
		return ret < 0 ? uq_log_errno("io_uring_register_buffers_sparse", ret) : 0;
	}
	q->bufs_len = (size_t)dev->depth * dev->buf_bytes;
	q->bufs = mmap(NULL, q->bufs_len, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (q->bufs == MAP_FAILED) {
		q->bufs = NULL;
		return uq_log_errno("mmap of the tag buffers", -errno);
	}
	if (!uq_unprivileged() && mlock(q->bufs, q->bufs_len) < 0)
		uq_warn("queue %u: cannot lock %zu bytes of tag buffers: %s", q->id,
			q->bufs_len, strerror(errno));
	iov = calloc(dev->depth, sizeof(*iov));
	if (!iov)
		return uq_log_errno("calloc", -ENOMEM);
	for (i = 0; i < dev->depth; i++) {
		q->tags[i].buf = q->bufs + (size_t)i * dev->buf_bytes;
		iov[i].iov_base = q->tags[i].buf;
		iov[i].iov_len = dev->buf_bytes;
	}
	ret = io_uring_register_buffers(&q->ring, iov, dev->depth);
	free(iov);
	return ret < 0 ? uq_log_errno("io_uring_register_buffers", ret) : 0;
}

static int descs_init(struct uq_queue *q)
{
	long page = sysconf(_SC_PAGESIZE);
	void *p;

	q->descs_len = ublk_desc_area_len(q->dev->depth, (uint64_t)page);
	p = mmap(NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE, q->dev->cdev_fd,
		 (off_t)ublk_desc_area_offset(q->id, (uint64_t)page));
	if (p == MAP_FAILED)
		return uq_log_errno("mmap of the descriptor array", -errno);
	q->descs = p;
	return 0;
}

static int tags_init(struct uq_queue *q)
{
	unsigned i;

	q->tags = calloc(q->dev->depth, sizeof(*q->tags));
	q->cbuf = malloc(q->dev->max_cluster);
	if (!q->tags || !q->cbuf)
		return uq_log_errno("allocating the tag state", -ENOMEM);
	if (!uq_unprivileged() && mlock(q->cbuf, q->dev->max_cluster) < 0)
		uq_warn("queue %u: cannot lock the cluster buffer: %s", q->id, strerror(errno));
	for (i = 0; i < q->dev->depth; i++) {
		q->tags[i].q = q;
		q->tags[i].tag = (uint16_t)i;
		q->tags[i].op = 0xff;
	}
	return 0;
}

static int queue_setup(struct uq_queue *q)
{
	struct uq_dev *dev = q->dev;
	unsigned i;
	int ret;

	ret = tags_init(q);
	if (ret == 0)
		ret = ring_init(q);
	if (ret == 0)
		ret = uq_ring_attach(&q->ring, dev, dev->cdev_fd);
	if (ret == 0)
		ret = buffers_init(q);
	if (ret == 0)
		ret = descs_init(q);
	if (ret < 0)
		return ret;
	uq_io_arm_wake(q);
	for (i = 0; i < dev->depth; i++)
		queue_fetch_cmd(&q->tags[i], UBLK_U_IO_FETCH_REQ, 0);
	ret = io_uring_submit(&q->ring);
	if (ret < 0)
		return uq_log_errno("submitting the FETCH_REQs", ret);
	/* a FETCH the driver refuses fails at submit: catch it before START_DEV */
	reap(q);
	return q->fatal ? -EIO : 0;
}

static void queue_teardown(struct uq_queue *q)
{
	if (q->ring_ok)
		io_uring_queue_exit(&q->ring);	/* cancels what is still in flight */
	q->ring_ok = false;
	if (q->descs)
		munmap((void *)q->descs, q->descs_len);
	q->descs = NULL;
	if (q->bufs)
		munmap(q->bufs, q->bufs_len);
	q->bufs = NULL;
	free(q->cbuf);
	q->cbuf = NULL;
	for (unsigned i = 0; q->tags && i < q->dev->depth; i++) {
		free(q->tags[i].bounce);
		free(q->tags[i].scratch);
		free(q->tags[i].stream);
	}
	free(q->tags);
	q->tags = NULL;
}

static void report_ready(struct uq_dev *dev, int err)
{
	pthread_mutex_lock(&dev->ready_lock);
	dev->nr_ready++;
	if (err < 0 && !dev->ready_err)
		dev->ready_err = err;
	pthread_cond_broadcast(&dev->ready_cond);
	pthread_mutex_unlock(&dev->ready_lock);
}

static void pin_thread(struct uq_queue *q)
{
	char name[16];

	snprintf(name, sizeof(name), "ublk-qcow-q%u", q->id);
	pthread_setname_np(pthread_self(), name);
	/* reclaim triggered here must not wait on writeback to our own device */
	prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0);
	if (q->pinned && pthread_setaffinity_np(pthread_self(), sizeof(q->cpus), &q->cpus) != 0)
		uq_warn("queue %u: cannot pin the thread to its %d CPUs", q->id,
			CPU_COUNT(&q->cpus));
}

/*
 * With --pin-queues, queue q's thread runs on the CPUs whose IO goes to q
 * (the whole mask the kernel reports), or anywhere when that mask holds
 * every CPU the daemon may use anyway.  Not by default: a client's requests
 * go to the queue of the CPU it runs on, so a pinned thread shares that CPU
 * with its busiest client while others idle; in the test VM's two CPUs a
 * single fio job on two pinned queues read about a third as fast as on two
 * free ones, and two jobs gained nothing from pinning (design.md 16.3).
 */
static void choose_cpus(struct uq_dev *dev, struct uq_queue *q)
{
	cpu_set_t allowed, both;

	q->pinned = false;
	if (!dev->opt.pin_queues ||
	    uq_ctrl_get_affinity(&dev->ctrl, dev->dev_id, q->id, &q->cpus) < 0 ||
	    sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		return;
	CPU_AND(&both, &q->cpus, &allowed);
	q->pinned = CPU_COUNT(&both) && CPU_COUNT(&both) < CPU_COUNT(&allowed);
	q->cpus = both;
}

static void *queue_thread(void *arg)
{
	struct uq_queue *q = arg;
	int ret;

	pin_thread(q);
	ret = queue_setup(q);
	report_ready(q->dev, ret);
	if (ret == 0)
		queue_loop(q);
	if (q->fatal && !atomic_load(&q->dev->abort)) {
		uq_err("queue %u: fatal error, stopping the device", q->id);
		atomic_store(&q->dev->queue_failed, true);
		kill(getpid(), SIGUSR1);
	}
	uq_info("queue %u: %llu requests, %llu failed, %llu L2 table reads, %llu waits, "
		"%llu completions in %llu rounds", q->id,
		(unsigned long long)uq_counter(q, UQ_QS_DONE),
		(unsigned long long)uq_counter(q, UQ_QS_ERRORS),
		(unsigned long long)uq_counter(q, UQ_QS_L2_READS),
		(unsigned long long)uq_counter(q, UQ_QS_WAITS),
		(unsigned long long)uq_counter(q, UQ_QS_CQES),
		(unsigned long long)uq_counter(q, UQ_QS_ROUNDS));
	queue_teardown(q);
	return NULL;
}

/* ------------------------------------------------------------ main thread */

static int wait_ready(struct uq_dev *dev, unsigned started)
{
	int ret;

	pthread_mutex_lock(&dev->ready_lock);
	while (dev->nr_ready < started)
		pthread_cond_wait(&dev->ready_cond, &dev->ready_lock);
	ret = dev->ready_err;
	pthread_mutex_unlock(&dev->ready_lock);
	return ret;
}

/* Start every queue thread; returns once each has its FETCH_REQs in (or failed). */
int uq_queues_start(struct uq_dev *dev)
{
	unsigned i, started = 0;
	int ret = 0;

	for (i = 0; i < dev->nr_queues; i++) {
		dev->queues[i].efd = eventfd(0, EFD_CLOEXEC);
		if (dev->queues[i].efd < 0)
			return uq_log_errno("eventfd", -errno);
	}
	for (i = 0; i < dev->nr_queues; i++) {
		struct uq_queue *q = &dev->queues[i];

		choose_cpus(dev, q);
		ret = -pthread_create(&q->thread, NULL, queue_thread, q);
		if (ret < 0) {
			uq_log_errno("pthread_create", ret);
			break;
		}
		q->thread_started = true;
		started++;
	}
	if (started) {
		int r = wait_ready(dev, started);

		if (ret == 0)
			ret = r;
	}
	return ret;
}

void uq_queues_abort(struct uq_dev *dev)
{
	unsigned i;

	atomic_store(&dev->abort, true);
	for (i = 0; i < dev->nr_queues; i++)
		uq_queue_wake(&dev->queues[i]);
}

void uq_queues_join(struct uq_dev *dev)
{
	unsigned i;

	for (i = 0; i < dev->nr_queues; i++) {
		struct uq_queue *q = &dev->queues[i];

		if (q->thread_started)
			pthread_join(q->thread, NULL);
		q->thread_started = false;
		if (q->efd >= 0)
			close(q->efd);
		q->efd = -1;
	}
}
