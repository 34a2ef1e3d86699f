/* SPDX-License-Identifier: MIT */
/*
 * The daemon's per-tag IO state machine (src/io.c) on the host, without the
 * kernel: this test plays the two sides io.c talks to.
 *
 *   - the ublk driver: it hands io.c request descriptors (write data
 *     already in the request's memory, read memory full of garbage) and
 *     takes the COMMIT results through a fake uq_queue_commit();
 *   - io_uring: the SQEs io.c queues (READ_FIXED / WRITE_FIXED on the image,
 *     L2 table reads, REGISTER_IO_BUF, user-copy writes into a request)
 *     land in a fake submission queue, and the test executes them with
 *     pread/pwrite in random order, delivering each completion the way
 *     queue.c does; it can also fail one or cut it short.
 *
 * In each data mode: copy (the request's memory is the tag's buffer),
 * zero-copy (io.c must register the request's memory in the fake buffer
 * table before image IO uses it; its unregistering at the commit is
 * queue.c's, which the fake commit mirrors) and auto-buf-reg (the fake
 * driver registers it before handing the request over, except now and then,
 * when it flags the request NEED_REG_BUF instead).  In the zero-copy modes
 * image IO finds the request's memory only through the table, by byte
 * offset, and every byte io.c makes up must arrive by a user-copy write:
 * a hole left unfilled shows the garbage.
 *
 * Two queues share the engine, as two queue threads do in the daemon, and
 * wake each other through fake eventfds.  One thread runs it all, but every
 * engine unlock in io.c is a point where the other queue may run: the test
 * often delivers one of the other queue's completions right there (between
 * a write's qcow_write_end() and its flush, say).  A request left parked
 * with nothing in flight to wake it fails the test (a lost wake-up).
 *
 * Checked against a model of the disk: random mixes of READ, WRITE, DISCARD,
 * WRITE_ZEROES and FLUSH, up to a full queue of non-overlapping requests in
 * flight on each queue, with a one-table L2 cache so L2 misses, parking and retries happen
 * all the time; every read equals the model in full (holes zero-filled over
 * the garbage); every request commits exactly once, with its full length or
 * 0; injected IO errors commit -EIO and change nothing; hostile descriptors
 * (past the end, across the end, empty, larger than the buffer, unknown
 * ops) commit a negative errno without touching the image. Afterwards the
 * image passes qemu-img check and reads back equal to the model.
 *
 * Then the same daemon in the situations that need more than one request:
 *   --recoverable  every write, discard and zeroing, once completed, is
 *                  in the file: an image opened apart from the engine
 *                  reads it back (a new daemon after a kill sees no more);
 *   kills          the daemon killed at random points (a forked child
 *                  _exit()s with IO queued, some of it done), a new one
 *                  redoes what the dead one had not completed, as the
 *                  driver's REISSUE does: the image equals the model, and
 *                  qemu-img check finds at most leaks;
 *   quiesce        live snapshots: the queue is quiesced at random points,
 *                  and everything started must finish by completions alone
 *                  (no new traffic to wake a parked request), snapshots are
 *                  taken and deleted, and sometimes the next quiesce begins
 *                  while the held requests restart.
 *
 * SEED replays a run; IO_PATH_ROUNDS sets its length and IO_PATH_KILLS the
 * number of kills; IO_PATH_OPS (letters r w d z f) limits the mix,
 * IO_PATH_TRACE=1 prints every start and commit and IO_PATH_TRACE_STALL=1
 * what is in flight when a quiesce stalls, for chasing a failure.
 */
#include <execinfo.h>
#include <pthread.h>

/*
 * Every engine unlock in io.c is a point where, in the daemon, another
 * queue's thread may take the lock and run: the test delivers a completion
 * of the other queue there now and then (see engine_unlock below).
 */
static int engine_unlock(pthread_mutex_t *m);
#define pthread_mutex_unlock engine_unlock
#include "src/io.c"
#include "src/tag.c"
#include "src/write.c"
#include "src/flush.c"
#undef pthread_mutex_unlock
#include "src/log.c"

#include "testlib.h"

#define NQ		2		/* queues */
#define DEPTH		8		/* tags per queue */
#define NT		(NQ * DEPTH)	/* request slots: slot g is tag g % DEPTH of queue g / DEPTH */
#define BUF_BYTES	(64u << 10)
#define DISK_BYTES	(64u << 20)
#define MAX_SQES	1024

static struct uq_dev dev;
static struct uq_queue queues[NQ];
static struct uq_tag tags[NT];
static struct ublksrv_io_desc descs[NQ][DEPTH];	/* the driver's descriptor arrays */
static uint8_t *bufs;			/* the requests' memory, BUF_BYTES a slot */
static uint8_t *model;
static enum uq_data_mode data_mode;	/* the mode serve() sets up */
static uint8_t *buf_table[NQ][DEPTH];	/* zero copy: each ring's buffer table */
static bool auto_reg[NT];		/* the driver registered this slot's request */
static int fail_next_register;		/* the next REGISTER_IO_BUF fails with this */

/* Slot g's request memory: its pages, or in copy mode the tag's buffer. */
static uint8_t *req_mem(unsigned g)
{
	return bufs + (size_t)g * BUF_BYTES;
}
static const char *served_path;

/* ------------------------------------------- the fake submission queue */

static struct io_uring_sqe sq[MAX_SQES];
static unsigned sq_q[MAX_SQES];		/* the queue whose ring each SQE is on */
static unsigned sq_len;
static bool ev_pending[NQ];		/* a queue's eventfd was written */

static unsigned q_index(const struct uq_queue *q)
{
	return (unsigned)(q - queues);
}

static unsigned slot_of(const struct uq_tag *t)
{
	return q_index(t->q) * DEPTH + t->tag;
}

/* Per tag: what the driver side knows about the request on it. */
struct slot {
	bool busy;
	unsigned commits;
	int result;
	uint8_t op;
	uint32_t flags;
	uint64_t off, len;
	bool expect_fail;
};
static struct slot slots[NT];

/* Fault injection: the next data completion of this kind fails or is cut short. */
static int fail_next_read, fail_next_write, fail_next_meta, fail_next_flush;

/* test_quiesce: the next quiesce begins while held requests are started */
static bool requiesce_armed;

static void maybe_requiesce(void)
{
	if (requiesce_armed) {
		requiesce_armed = false;
		atomic_store(&dev.quiesce, true);
	}
}

struct io_uring_sqe *uq_get_sqe(struct uq_queue *q)
{
	maybe_requiesce();
	REQUIRE(sq_len < MAX_SQES, "fake submission queue full");
	memset(&sq[sq_len], 0, sizeof(sq[0]));
	sq_q[sq_len] = q_index(q);
	return &sq[sq_len++];
}

/*
 * --recoverable: a completed write, discard or zeroing must survive the
 * daemon's death right now.  A new daemon would see what the file says, so
 * open the file afresh, apart from the engine serving it, and read the
 * range back: it must hold what the request wrote (the model: nothing
 * overlapping it started since).
 */
static void check_survives_death(const struct slot *s)
{
	struct qcow_open_opts oo = { .read_only = true };
	struct qcow_image *img = NULL;
	char err[512] = "";
	uint8_t *back;
	int r;

	if (s->op != UBLK_IO_OP_WRITE && s->op != UBLK_IO_OP_DISCARD &&
	    s->op != UBLK_IO_OP_WRITE_ZEROES)
		return;
	back = malloc(s->len);
	REQUIRE(back, "malloc");
	r = qcow_open(served_path, &oo, &img, err, sizeof(err));
	REQUIRE(r == 0, "opening %s beside the daemon: %d %s", served_path, r, err);
	r = qcow_read(img, back, s->off, s->len);
	CHECK(r == 0 && t_first_diff(back, model + s->off, s->len) < 0,
	      "op %u at %llu+%llu completed, but the file does not hold it (read %d, first "
	      "difference at +%lld)", s->op, (unsigned long long)s->off,
	      (unsigned long long)s->len, r, (long long)t_first_diff(back, model + s->off, s->len));
	qcow_close(img);
	free(back);
}

void uq_queue_commit(struct uq_tag *t, int result)
{
	struct slot *s = &slots[slot_of(t)];

	if (getenv("IO_PATH_TRACE"))
		printf("commit queue %u tag %u result %d\n", q_index(t->q), t->tag, result);
	CHECK(t->ops == 0, "queue %u tag %u committed with %u ops in flight", q_index(t->q),
	      t->tag, t->ops);
	/* queue.c: unregister what io.c registered; the driver: what it did */
	if (t->zc_reg || auto_reg[slot_of(t)]) {
		CHECK(buf_table[q_index(t->q)][t->tag] == req_mem(slot_of(t)),
		      "queue %u tag %u: the buffer table does not hold the request", q_index(t->q),
		      t->tag);
		buf_table[q_index(t->q)][t->tag] = NULL;
	}
	CHECK(!buf_table[q_index(t->q)][t->tag], "queue %u tag %u: committed with a buffer "
	      "registered that nobody unregisters", q_index(t->q), t->tag);
	t->zc_reg = false;
	auto_reg[slot_of(t)] = false;
	t->op = 0xff;
	t->q->owned--;
	maybe_requiesce();
	s->commits++;
	s->result = result;
	s->busy = false;
	/* now, before anything else starts: a later write may overlap this range */
	if (s->op == UBLK_IO_OP_READ && result > 0) {
		int64_t d = t_first_diff(req_mem(slot_of(t)), model + s->off, s->len);

		CHECK(d < 0, "read of %llu+%llu differs from the model at +%lld",
		      (unsigned long long)s->off, (unsigned long long)s->len, (long long)d);
	}
	if (dev.opt.recoverable && result >= 0)
		check_survives_death(s);
}

/*
 * REGISTER_IO_BUF: io_uring issues a submission's SQEs in order, so the
 * registration is in the table for every SQE queued after it; its
 * completion (carrying an injected failure in the SQE's off) comes later.
 */
int uq_queue_buf_register(struct uq_tag *t)
{
	struct io_uring_sqe *sqe;
	unsigned qi = q_index(t->q);

	CHECK(data_mode != UQ_DATA_COPY, "REGISTER_IO_BUF in copy mode");
	CHECK(!buf_table[qi][t->tag], "queue %u tag %u: REGISTER_IO_BUF over a registered "
	      "buffer", qi, t->tag);
	sqe = uq_get_sqe(t->q);
	io_uring_prep_rw(IORING_OP_URING_CMD, sqe, UQ_FIXED_CDEV, NULL, 0, 0);
	sqe->flags = IOSQE_FIXED_FILE;
	sqe->off = (uint64_t)(int64_t)fail_next_register;
	io_uring_sqe_set_data64(sqe, uq_ud(UQ_UD_ZC, t->tag, 0));
	if (!fail_next_register)
		buf_table[qi][t->tag] = req_mem(slot_of(t));
	fail_next_register = 0;
	t->q->backend++;
	return 0;
}

void uq_queue_wake(struct uq_queue *q)
{
	ev_pending[q_index(q)] = true;
}

/*
 * Where image IO on queue qi reads into or writes from: copy mode, the
 * address itself (inside the tag's buffer); zero copy, the request memory
 * registered at buf_index plus the byte offset in addr; NULL when nothing
 * is registered there (the kernel fails the SQE).
 */
static uint8_t *io_memory(unsigned qi, const struct io_uring_sqe *e)
{
	unsigned tag = uq_ud_tag(e->user_data);
	uint8_t *base;

	if (data_mode == UQ_DATA_COPY) {
		base = req_mem(qi * DEPTH + tag);
		CHECK(e->buf_index == tag && (uint8_t *)(uintptr_t)e->addr >= base &&
		      (uint8_t *)(uintptr_t)e->addr + e->len <= base + dev.buf_bytes,
		      "queue %u tag %u: fixed buffer IO outside the tag's buffer", qi, tag);
		return (uint8_t *)(uintptr_t)e->addr;
	}
	base = buf_table[qi][e->buf_index];
	if (!base)
		return NULL;
	CHECK(e->buf_index == tag && e->addr + e->len <= slots[qi * DEPTH + tag].len,
	      "queue %u tag %u: IO at %llu+%u of a %llu-byte request", qi, tag,
	      (unsigned long long)e->addr, e->len,
	      (unsigned long long)slots[qi * DEPTH + tag].len);
	return base + e->addr;
}

/* A user-copy write into a request: the driver copies it into the request's pages. */
static int user_copy_write(unsigned qi, const struct io_uring_sqe *e)
{
	unsigned tag = uq_ud_tag(e->user_data);
	uint64_t pos = e->off - ublk_user_copy_pos(qi, tag, 0);
	struct slot *s = &slots[qi * DEPTH + tag];

	CHECK(data_mode != UQ_DATA_COPY, "user-copy write in copy mode");
	CHECK(e->off >= ublk_user_copy_pos(qi, tag, 0) && s->busy && s->op == UBLK_IO_OP_READ &&
	      pos + e->len <= s->len, "queue %u tag %u: user-copy write at %llu+%u does not fit "
	      "the request", qi, tag, (unsigned long long)pos, e->len);
	memcpy(req_mem(qi * DEPTH + tag) + pos, (void *)(uintptr_t)e->addr, e->len);
	return (int)e->len;
}

/* Run one queued SQE with pread/pwrite; return the CQE result. */
static int execute(unsigned qi, const struct io_uring_sqe *e)
{
	unsigned layer = (unsigned)(e->fd - UQ_FIXED_IMAGE);
	void *addr = (void *)(uintptr_t)e->addr;
	ssize_t n;
	int fd;

	CHECK(e->flags & IOSQE_FIXED_FILE, "SQE without a registered file");
	if (e->opcode == IORING_OP_URING_CMD)	/* REGISTER_IO_BUF: done when queued */
		return (int)(int64_t)e->off;
	if (e->fd == UQ_FIXED_CDEV && e->opcode == IORING_OP_WRITE)
		return user_copy_write(qi, e);
	/* the image, or a layer of its backing chain (read only) */
	CHECK(e->fd >= UQ_FIXED_IMAGE && layer < dev.nr_layers, "SQE on file index %d", e->fd);
	if (layer >= dev.nr_layers)
		return -EBADF;
	fd = dev.layers[layer].fd;
	CHECK(!layer || e->opcode == IORING_OP_READ || e->opcode == IORING_OP_READ_FIXED,
	      "opcode %u on backing file %u", e->opcode, layer);
	if (e->opcode == IORING_OP_READ_FIXED || e->opcode == IORING_OP_WRITE_FIXED) {
		addr = io_memory(qi, e);
		if (!addr)
			return -EFAULT;
	}
	switch (e->opcode) {
	case IORING_OP_READ_FIXED:
	case IORING_OP_READ:
		n = pread(fd, addr, e->len, (off_t)e->off);
		break;
	case IORING_OP_WRITE_FIXED:
	case IORING_OP_WRITE:		/* the engine's flush; copy-on-write parts */
		n = pwrite(fd, addr, e->len, (off_t)e->off);
		break;
	case IORING_OP_WRITEV:		/* parts and guest bytes (copy mode), zeros */
		for (unsigned v = 0; data_mode != UQ_DATA_COPY && v < e->len; v++) {
			const uint8_t *base = ((const struct iovec *)addr)[v].iov_base;

			/* zero copy: a request's bytes are reachable only by WRITE_FIXED */
			CHECK(base < bufs || base >= bufs + (size_t)NT * BUF_BYTES,
			      "vectored write from request memory in a zero-copy mode");
		}
		n = pwritev(fd, addr, (int)e->len, (off_t)e->off);
		break;
	case IORING_OP_FSYNC:
		CHECK(e->fsync_flags == IORING_FSYNC_DATASYNC, "fsync flags %u", e->fsync_flags);
		n = fdatasync(fd);
		break;
	case IORING_OP_FALLOCATE:	/* the flush's punches: mode in len, length in addr */
		CHECK(e->len == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE), "fallocate mode %u",
		      e->len);
		n = fallocate(fd, (int)e->len, (off_t)e->off, (off_t)e->addr);
		break;
	default:
		CHECK(false, "unexpected opcode %u", e->opcode);
		return -EINVAL;
	}
	return n < 0 ? -errno : (int)n;
}

/* An injected failure for this completion, or 0. */
static int injected(enum uq_ud_kind kind)
{
	if (kind == UQ_UD_ZC)
		return 0;	/* fail_next_register, when queued */
	int *which = kind == UQ_UD_META ? &fail_next_meta :
		     kind == UQ_UD_FLUSH || kind == UQ_UD_SYNC ? &fail_next_flush :
		     kind == UQ_UD_WRITE ? &fail_next_write : &fail_next_read;
	int err = *which;

	*which = 0;
	return err;
}

/* What a queue's loop does after each batch of completions (queue.c). */
static void loop_tail(struct uq_queue *q)
{
	if (q->retry)
		uq_io_retry_parked(q);
	uq_io_quiesce_step(q);
}

/* The queue whose completion is being handled, -1 for none; and whether
 * engine_unlock() is already running another queue's inside it. */
static int running_q = -1;
static bool preempting;

/* Seen: copy-on-write's old bytes read, vectored writes (copy mode),
 * compressed streams read; from the backing chain: copy-on-write pieces,
 * the request's data and table reads. */
static unsigned long long old_reads, merged_writes, stream_reads;
static unsigned long long base_reads, layer_data_reads, layer_meta_reads, layer_streams;

static void deliver_sqe(unsigned i)
{
	struct io_uring_sqe e = sq[i];
	unsigned qi = sq_q[i];
	enum uq_ud_kind kind = uq_ud_kind(e.user_data);
	int res, err;

	sq[i] = sq[sq_len - 1];
	sq_q[i] = sq_q[sq_len - 1];
	sq_len--;
	err = injected(kind);
	res = err ? err : execute(qi, &e);
	old_reads += kind == UQ_UD_OLD;
	stream_reads += kind == UQ_UD_STREAM;
	merged_writes += e.opcode == IORING_OP_WRITEV;
	base_reads += kind == UQ_UD_BASE;
	layer_data_reads += kind == UQ_UD_DATA && e.fd > UQ_FIXED_IMAGE;
	layer_meta_reads += kind == UQ_UD_META && e.fd > UQ_FIXED_IMAGE;
	layer_streams += (kind == UQ_UD_STREAM || kind == UQ_UD_OLD) && e.fd > UQ_FIXED_IMAGE;
	CHECK(kind == UQ_UD_DATA || kind == UQ_UD_WRITE || kind == UQ_UD_OLD || kind == UQ_UD_STREAM ||
	      kind == UQ_UD_META || kind == UQ_UD_ZC || kind == UQ_UD_FILL ||
	      kind == UQ_UD_FLUSH || kind == UQ_UD_BASE || kind == UQ_UD_SYNC,
	      "completion of kind %d", (int)kind);
	/* what an IO's user_data says matches the IO: a write is a write, a
	 * read of a request's bytes or a fill names its length, a backing
	 * piece its place in the scratch buffer and its length */
	CHECK(kind != UQ_UD_WRITE || e.opcode == IORING_OP_WRITE_FIXED ||
	      e.opcode == IORING_OP_WRITE || e.opcode == IORING_OP_WRITEV,
	      "queue %u tag %u: opcode %u completes as an image write", qi,
	      uq_ud_tag(e.user_data), e.opcode);
	if (kind == UQ_UD_DATA || kind == UQ_UD_FILL)
		CHECK(uq_extra_len(uq_ud_extra(e.user_data)) == e.len,
		      "queue %u tag %u: a %u-byte IO's user_data says %llu bytes", qi,
		      uq_ud_tag(e.user_data), e.len,
		      (unsigned long long)uq_extra_len(uq_ud_extra(e.user_data)));
	if (kind == UQ_UD_BASE) {
		const struct uq_tag *bt = &tags[qi * DEPTH + uq_ud_tag(e.user_data)];
		uint64_t x = uq_ud_extra(e.user_data);

		CHECK(uq_extra_len(x) << 9 == e.len &&
		      bt->scratch + (uq_extra_pos(x) << 9) == (uint8_t *)(uintptr_t)e.addr,
		      "queue %u tag %u: a backing piece's user_data says %llu sectors at sector "
		      "%llu of the scratch buffer, the read is %u bytes at +%lld", qi,
		      uq_ud_tag(e.user_data), (unsigned long long)uq_extra_len(x),
		      (unsigned long long)uq_extra_pos(x), e.len,
		      (long long)((uint8_t *)(uintptr_t)e.addr - bt->scratch));
	}
	uq_io_complete(&queues[qi], e.user_data, res);
}

/* The eventfd read completing: queue.c's handle_event_cqe(). */
static void deliver_event(unsigned qi)
{
	ev_pending[qi] = false;
	uq_io_woken(&queues[qi]);
}

/*
 * Complete one queued SQE or wake-up, picked at random (completions come in
 * any order), on any queue but not_q; false when there is none.
 */
static bool complete_one_of(int not_q)
{
	unsigned n = 0, pick, i, qi;
	int was = running_q;

	for (i = 0; i < sq_len; i++)
		n += (int)sq_q[i] != not_q;
	for (qi = 0; qi < NQ; qi++)
		n += ev_pending[qi] && (int)qi != not_q;
	if (!n)
		return false;
	pick = (unsigned)t_rand_below(n);
	for (i = 0; i < sq_len; i++) {
		if ((int)sq_q[i] != not_q && pick-- == 0)
			break;
	}
	if (i < sq_len) {
		qi = sq_q[i];
		running_q = (int)qi;
		deliver_sqe(i);
	} else {
		for (qi = 0; qi < NQ; qi++) {
			if (ev_pending[qi] && (int)qi != not_q && pick-- == 0)
				break;
		}
		running_q = (int)qi;
		deliver_event(qi);
	}
	loop_tail(&queues[qi]);
	running_q = was;
	return true;
}

static void complete_one(void)
{
	complete_one_of(-1);
}

/*
 * io.c's engine unlock: in the daemon, the other queue's thread may run
 * right here, between two engine calls of this one (between a write's
 * qcow_write_end() and its flush, say).  So, now and then, deliver one of
 * its completions before going on.
 */
static int engine_unlock(pthread_mutex_t *m)
{
	int r = pthread_mutex_unlock(m);

	if (running_q >= 0 && !preempting && t_rand_below(3) == 0) {
		preempting = true;
		complete_one_of(running_q);
		preempting = false;
	}
	return r;
}

static bool anything_pending(void)
{
	for (unsigned qi = 0; qi < NQ; qi++)
		if (ev_pending[qi])
			return true;
	return sq_len != 0;
}

/* Run everything in flight to completion: nobody may be left parked. */
static void drain(void)
{
	unsigned rounds = 0;

	while (anything_pending()) {
		complete_one();
		REQUIRE(++rounds < 1000000, "requests never finish");
	}
	for (unsigned qi = 0; qi < NQ; qi++)
		REQUIRE(!queues[qi].nr_parked, "queue %u: %u requests parked with nothing in "
			"flight to wake them (a lost wake-up)", qi, queues[qi].nr_parked);
}

/* -------------------------------------------------------- the driver side */

static void start(unsigned g, uint8_t op, uint32_t flags, uint64_t sector, uint32_t sectors)
{
	unsigned qi = g / DEPTH, tag = g % DEPTH;
	int was = running_q;
	struct ublksrv_io_desc d = {
		.op_flags = op | flags,
		.nr_sectors = sectors,
		.start_sector = sector,
	};
	struct slot *s = &slots[g];

	REQUIRE(!s->busy, "queue %u tag %u reused while busy", qi, tag);
	s->busy = true;
	s->commits = 0;
	s->result = 1;
	s->op = op;
	s->flags = flags;
	s->off = sector << 9;
	s->len = (uint64_t)sectors << 9;
	if (getenv("IO_PATH_TRACE"))
		printf("start queue %u tag %u op %u flags %#x %llu+%llu\n", qi, tag, op, flags,
		       (unsigned long long)s->off, (unsigned long long)s->len);
	/* auto-buf-reg: the driver registers the buffer of a request with
	 * data, or now and then fails to and flags it (the fallback) */
	if (data_mode == UQ_DATA_AUTO_BUF_REG &&
	    (op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE) && sectors) {
		if (t_rand_below(8) == 0) {
			d.op_flags |= UBLK_IO_F_NEED_REG_BUF;
		} else {
			REQUIRE(!buf_table[qi][tag], "queue %u tag %u: slot busy", qi, tag);
			buf_table[qi][tag] = req_mem(g);
			auto_reg[g] = true;
		}
	}
	queues[qi].owned++;
	descs[qi][tag] = d;	/* where a held request is started from later */
	running_q = (int)qi;
	uq_io_start(&tags[g], &descs[qi][tag]);
	running_q = was;
}

/* The result a request must commit: its length for data, 0 for the rest. */
static int want_result(const struct slot *s)
{
	if (s->expect_fail)
		return -EIO;
	return s->op == UBLK_IO_OP_READ || s->op == UBLK_IO_OP_WRITE ? (int)s->len : 0;
}

static void check_done(unsigned g)
{
	struct slot *s = &slots[g];

	CHECK(s->commits == 1, "slot %u: %u commits", g, s->commits);
	CHECK(s->result == want_result(s), "slot %u op %u at %llu+%llu: result %d, want %d", g,
	      s->op, (unsigned long long)s->off, (unsigned long long)s->len, s->result,
	      want_result(s));
	s->expect_fail = false;
}

/* A random request on tag that overlaps none of the busy ones. */
static bool pick_range(uint64_t *sector, uint32_t *sectors, uint32_t max_sectors)
{
	unsigned tries, i;

	for (tries = 0; tries < 50; tries++) {
		uint64_t len = 1 + t_rand_below(max_sectors), s;
		bool clash = false;

		if (t_rand_below(4) == 0)
			len = max_sectors;
		s = t_rand_below(DISK_BYTES / 512 - len + 1);
		for (i = 0; i < NT; i++) {
			if (slots[i].busy && (s << 9) < slots[i].off + slots[i].len &&
			    slots[i].off < (s + len) << 9)
				clash = true;
		}
		if (!clash) {
			*sector = s;
			*sectors = (uint32_t)len;
			return true;
		}
	}
	return false;
}

/* Issue one random request on tag, updating the model as it will end up. */
static void random_request(unsigned tag)
{
	static const uint8_t ops[] = { UBLK_IO_OP_READ, UBLK_IO_OP_READ, UBLK_IO_OP_WRITE,
				       UBLK_IO_OP_WRITE, UBLK_IO_OP_WRITE, UBLK_IO_OP_DISCARD,
				       UBLK_IO_OP_WRITE_ZEROES, UBLK_IO_OP_FLUSH };
	unsigned pick = (unsigned)t_rand_below(sizeof(ops));
	uint8_t op = ops[pick];
	/* debugging: IO_PATH_OPS=rwd limits the mix to reads, writes, discards */
	const char *only = getenv("IO_PATH_OPS");

	if (only && !strchr(only, "rrwwwdzf"[pick]))
		return;
	uint32_t sectors = 0, flags = 0;
	uint64_t sector = 0, off, len;

	if (op == UBLK_IO_OP_FLUSH) {
		start(tag, op, 0, 0, 0);
		return;
	}
	if (!pick_range(&sector, &sectors, op == UBLK_IO_OP_READ || op == UBLK_IO_OP_WRITE ?
					   BUF_BYTES / 512 : 4096))
		return;
	if (op == UBLK_IO_OP_DISCARD) {
		/* whole 4 KiB clusters, which then read as zeros; partial
		 * clusters may keep their data, so the model could not say */
		uint64_t first = (sector + 7) & ~7ull, end = (sector + sectors) & ~7ull;

		if (end <= first)
			return;
		sector = first;		/* inside the range pick_range cleared */
		sectors = (uint32_t)(end - first);
		memset(model + (sector << 9), 0, (uint64_t)sectors << 9);
	}
	off = sector << 9;
	len = (uint64_t)sectors << 9;
	if (op == UBLK_IO_OP_READ) {
		memset(req_mem(tag), 0xa5, BUF_BYTES);	/* garbage a hole must not show */
	} else if (op == UBLK_IO_OP_WRITE) {
		t_fill_random(req_mem(tag), len);
		memcpy(model + off, req_mem(tag), len);
		flags = t_rand_below(8) == 0 ? UBLK_IO_F_FUA : 0;
	} else if (op == UBLK_IO_OP_WRITE_ZEROES) {
		memset(model + off, 0, len);
		flags = t_rand_below(2) ? UBLK_IO_F_NOUNMAP : 0;
	}
	start(tag, op, flags, sector, sectors);
}

/* ------------------------------------------------------------------ setup */

/*
 * The engine's own file IO: what it reads, writes or syncs itself instead of
 * handing it to the ring, on the queue thread and under the engine lock.
 * Opening and closing the image do some; serving should do none.
 * IO_PATH_TRACE_SYNC=1 prints where each one comes from.
 */
static struct qcow_file_ops posix_ops;
static unsigned long long engine_io;
static bool engine_io_counted;

static void engine_io_seen(const char *what, uint64_t off)
{
	if (!engine_io_counted)
		return;
	engine_io++;
	if (getenv("IO_PATH_TRACE_SYNC")) {
		void *frames[16];
		int n = backtrace(frames, 16);

		fprintf(stderr, "engine %s at 0x%llx:\n", what, (unsigned long long)off);
		backtrace_symbols_fd(frames, n, 2);
	}
}

static int counted_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	engine_io_seen("read", off);
	return posix_ops.pread(ctx, buf, len, off);
}

static int counted_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	engine_io_seen("write", off);
	return posix_ops.pwrite(ctx, buf, len, off);
}

static int counted_flush(void *ctx)
{
	engine_io_seen("flush", 0);
	return posix_ops.flush(ctx);
}

static struct qcow_file_ops counted_ops;

/* Open path as the daemon does, the engine's own IO counted. */
static int open_counted(const char *path, const struct qcow_open_opts *oo,
			struct qcow_image **img, char *err, size_t errlen)
{
	struct qcow_file f;
	int r = qcow_file_open_posix(path, O_RDWR, &f);

	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	posix_ops = *f.ops;
	counted_ops = posix_ops;
	counted_ops.pread = counted_pread;
	counted_ops.pwrite = counted_pwrite;
	counted_ops.flush = counted_flush;
	f.ops = &counted_ops;
	return qcow_open_file(&f, path, oo, img, err, errlen);
}

/* Serve path (created first when create): the state a daemon starts in. */
static void serve(const char *path, unsigned l2_tables, bool create)
{
	struct qcow_create_opts co = { .size = DISK_BYTES, .cluster_bits = 12 };
	/* refcount blocks: the fewest slots (4) for some 9 blocks of 8 MiB */
	struct qcow_open_opts oo = { .l2_cache_bytes = (uint64_t)l2_tables << 12,
				     .refcount_cache_bytes = 4096 };
	char err[512] = "";
	unsigned i;
	int r;

	served_path = path;
	if (create) {
		r = qcow_create(path, &co, true, err, sizeof(err));
		REQUIRE(r == 0, "create %s: %d %s", path, r, err);
	}
	memset(&dev, 0, sizeof(dev));
	memset(queues, 0, sizeof(queues));
	r = open_counted(path, &oo, &dev.img, err, sizeof(err));
	REQUIRE(r == 0, "open %s: %d %s", path, r, err);
	dev.img_fd = qcow_get_file(dev.img)->fd;
	qcow_get_info(dev.img, &dev.info);
	REQUIRE(uq_io_layers_init(&dev) == 0, "layers");
	dev.buf_bytes = BUF_BYTES;
	dev.data_mode = data_mode;
	REQUIRE(uq_io_zero_buf_alloc(&dev) == 0, "zero buffer");
	memset(buf_table, 0, sizeof(buf_table));
	fail_next_register = 0;
	dev.depth = DEPTH;
	dev.nr_queues = NQ;
	dev.dev_bytes = DISK_BYTES;
	dev.queues = queues;
	pthread_mutex_init(&dev.engine_lock, NULL);
	for (i = 0; i < NQ; i++) {
		queues[i].dev = &dev;
		queues[i].id = i;
		queues[i].efd = -1;
		queues[i].descs = descs[i];
		queues[i].tags = &tags[i * DEPTH];
		queues[i].cbuf = malloc(dev.max_cluster);
		REQUIRE(queues[i].cbuf, "malloc");
		ev_pending[i] = false;
	}
	for (i = 0; i < NT; i++) {
		memset(&tags[i], 0, sizeof(tags[i]));
		tags[i].q = &queues[i / DEPTH];
		tags[i].tag = (uint16_t)(i % DEPTH);
		tags[i].op = 0xff;
		/* copy mode: the tag's buffer, which the driver copies from and
		 * to; zero copy: none, the request's pages are in the ring's
		 * buffer table */
		tags[i].buf = data_mode == UQ_DATA_COPY ? req_mem(i) : NULL;
		tags[i].bounce = NULL;
		tags[i].scratch = NULL;
		tags[i].stream = NULL;
		auto_reg[i] = false;
		slots[i].busy = false;
	}
	fail_next_read = fail_next_write = fail_next_meta = fail_next_flush = 0;
	sq_len = 0;
}

static void setup(const char *path, unsigned l2_tables)
{
	serve(path, l2_tables, true);
	memset(model, 0, DISK_BYTES);
}

/* Close, qemu-img check (leaks allowed when leaks_ok), compare with the model. */
/* Close the image (want: what the close returns), free what setup() took,
 * and have qemu-img check the image (leaks_ok: leaks are expected). */
static void close_dev(const char *path, int want, bool leaks_ok)
{
	int r = qcow_close(dev.img);

	CHECK(r == want, "close: %d, wanted %d", r, want);
	dev.img = NULL;
	uq_io_layers_free(&dev);
	for (unsigned i = 0; i < NQ; i++)
		free(queues[i].cbuf);
	for (unsigned i = 0; i < NT; i++) {
		free(tags[i].bounce);
		free(tags[i].scratch);
		free(tags[i].stream);
	}
	free(dev.zero_buf);
	if (leaks_ok && t_have_prog("qemu-img")) {
		/* leaks are expected here: only say more about anything worse */
		char out[8192];

		r = t_run(out, sizeof(out), "qemu-img check -f qcow2 '%s' 2>&1", path);
		CHECK(r == 0 || r == 3, "qemu-img check %s exited %d:\n%s", path, r, out);
	} else {
		r = t_qemu_check(path);
		CHECK(r == 0 || r == -2, "qemu-img check %s: %d", path, r);
	}
}

static void teardown_check(const char *path, bool leaks_ok)
{
	uint8_t *back = malloc(DISK_BYTES);
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r;

	REQUIRE(back, "malloc");
	close_dev(path, 0, leaks_ok);
	r = qcow_open(path, &(struct qcow_open_opts){ .read_only = true }, &img, err, sizeof(err));
	REQUIRE(r == 0, "reopen: %d %s", r, err);
	r = qcow_read(img, back, 0, DISK_BYTES);
	CHECK(r == 0, "read back: %d", r);
	CHECK(t_first_diff(back, model, DISK_BYTES) < 0, "image differs from the model at %lld",
	      (long long)t_first_diff(back, model, DISK_BYTES));
	qcow_close(img);
	free(back);
}

static void teardown(const char *path)
{
	teardown_check(path, false);
}

/* -------------------------------------------------------------- the tests */

/* A counter of struct uq_queue summed over the queues. */
#define COUNTER(s) ({ unsigned long long sum_ = 0; \
	for (unsigned q_ = 0; q_ < NQ; q_++) { sum_ += uq_counter(&queues[q_], s); } \
	sum_; })
#define SUM(field) ({ unsigned long long sum_ = 0; \
	for (unsigned q_ = 0; q_ < NQ; q_++) { sum_ += queues[q_].field; } \
	sum_; })

/* rounds of: start requests on some idle tags, complete some of what is queued */
static void run_rounds(unsigned rounds)
{
	unsigned r, i;

	for (r = 0; r < rounds; r++) {
		for (i = 0; i < NT; i++) {
			if (!slots[i].busy && t_rand_below(3))
				random_request(i);
		}
		/* complete some, not all: new requests start beside old ones */
		for (i = (unsigned)t_rand_below(sq_len + 1); i && sq_len; i--)
			complete_one();
		for (i = 0; i < NT; i++) {
			if (!slots[i].busy && slots[i].commits) {
				check_done(i);
				slots[i].commits = 0;
			}
		}
	}
}

static void test_random_workload(unsigned rounds)
{
	const char *path = t_path("random.qcow2");
	struct qcow_stats es;
	unsigned i;

	setup(path, 1);
	merged_writes = 0;
	engine_io = 0;
	engine_io_counted = true;
	run_rounds(rounds);
	drain();
	engine_io_counted = false;
	for (i = 0; i < NT; i++)
		if (slots[i].commits)
			check_done(i);
	qcow_get_stats(dev.img, &es);
	printf("random workload: %llu requests, %llu L2 table and %llu refcount block reads, "
	       "%llu parks, %llu flushes to make room, %llu vectored writes, "
	       "%llu refcount blocks added, %llu IOs by the engine itself\n",
	       COUNTER(UQ_QS_DONE), COUNTER(UQ_QS_L2_READS), COUNTER(UQ_QS_REFCOUNT_READS),
	       COUNTER(UQ_QS_WAITS), COUNTER(UQ_QS_WRITEBACKS), merged_writes,
	       (unsigned long long)es.refcount_growths, engine_io);
	CHECK(COUNTER(UQ_QS_L2_READS) > 0, "no L2 table was ever read through the ring");
	/* everything goes through the ring: the engine reads, writes and syncs
	 * nothing itself (IO_PATH_TRACE_SYNC=1 says where one comes from),
	 * new refcount blocks included (a longer run's file outgrows the
	 * first block's 8 MiB: SEED=4 IO_PATH_ROUNDS=5000) */
	CHECK(engine_io == 0, "the engine did %llu IOs itself, under its lock", engine_io);
	/* the cache holds 4 tables, the workload writes into 16 (some 30 such
	 * flushes in copy mode's longer run, a handful in the shorter ones) */
	CHECK(data_mode != UQ_DATA_COPY || COUNTER(UQ_QS_WRITEBACKS) > 0,
	      "no flush ever made room in the L2 cache");
	/* partial writes into discarded clusters reused below the file's end */
	CHECK(data_mode != UQ_DATA_COPY || merged_writes > 0,
	      "no write ever merged zeros around the guest bytes");
	teardown(path);
}

/*
 * An overlay served: its chain made by qemu (a raw base shorter than the
 * disk, under a qcow2 of 8 KiB clusters, twice the overlay's, with data,
 * compressed and zero clusters and discards), the model what qemu reads
 * there.  Reads of what the overlay does not allocate and the old bytes of
 * its copy-on-write come from the layers' files through the ring, the
 * layers' L2 tables too; the engine does no IO itself (its layers' table
 * loads all came through the ring: as many as it started); the layers stay
 * as they were.
 */
static void test_overlay_workload(unsigned rounds)
{
	const char *top = t_path("overlay.qcow2");
	uint64_t base_len = DISK_BYTES / 2 + 1000, misses = 0;
	struct qcow_create_opts co = { .size = DISK_BYTES, .cluster_bits = 12,
				       .backing_file = "mid.qcow2", .backing_format = "qcow2" };
	struct qcow_stats ls;
	char err[512] = "", out[4096];
	uint8_t *b, *ref;
	size_t ref_len = 0;
	unsigned d;
	int r;

	if (!t_have_prog("qemu-img") || !t_have_prog("qemu-io")) {
		printf("overlay workload: skipped (no qemu-img/qemu-io)\n");
		return;
	}
	b = malloc(base_len);
	REQUIRE(b, "malloc");
	t_fill_random(b, base_len);
	REQUIRE(t_write_file(t_path("base.raw"), b, base_len) == 0, "write the base");
	free(b);
	r = t_run(out, sizeof(out), "cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=8k "
		  "-b base.raw -F raw mid.qcow2 48M && qemu-io -c 'write -c -P 0x11 1M 4M' "
		  "-c 'write -P 0x22 5M 100k' -c 'write -z 8M 64k' -c 'discard 12M 128k' "
		  "-c 'write -c -P 0x33 30M 4M' -c 'write -P 0x44 40M 64k' mid.qcow2 && "
		  "qemu-img convert -O raw mid.qcow2 ref.raw && cp base.raw base.orig && "
		  "cp mid.qcow2 mid.orig", t_dir);
	REQUIRE(r == 0, "making the chain: %s", out);
	r = qcow_create(top, &co, true, err, sizeof(err));
	REQUIRE(r == 0, "create %s: %d %s", top, r, err);
	serve(top, 1, false);
	ref = t_read_file(t_path("ref.raw"), &ref_len);
	REQUIRE(ref && ref_len <= DISK_BYTES, "reading ref.raw");
	memset(model, 0, DISK_BYTES);
	memcpy(model, ref, ref_len);
	free(ref);
	base_reads = layer_data_reads = layer_meta_reads = layer_streams = 0;
	engine_io = 0;
	engine_io_counted = true;
	run_rounds(rounds);
	drain();
	engine_io_counted = false;
	for (unsigned i = 0; i < NT; i++)
		if (slots[i].commits)
			check_done(i);
	for (d = 1; d < dev.nr_layers; d++) {
		qcow_get_stats(dev.layers[d].img, &ls);
		misses += ls.l2_misses;
	}
	printf("overlay workload: %llu requests, %llu reads and %llu copy-on-write pieces from "
	       "the backing chain, %llu of its compressed clusters, %llu of its tables read "
	       "through the ring (%llu loads), %llu IOs by the engine itself\n",
	       COUNTER(UQ_QS_DONE), layer_data_reads, base_reads, layer_streams,
	       layer_meta_reads, (unsigned long long)misses, engine_io);
	CHECK(dev.nr_layers == 3, "%u layers, want the overlay, mid.qcow2 and base.raw",
	      dev.nr_layers);
	CHECK(layer_data_reads > 0 && base_reads > 0 && layer_meta_reads > 0 && layer_streams > 0,
	      "the backing chain was not read through the ring");
	CHECK(layer_meta_reads == misses, "%llu layer table loads, %llu through the ring",
	      (unsigned long long)misses, layer_meta_reads);
	CHECK(engine_io == 0, "the engine did %llu IOs itself, under its lock", engine_io);
	teardown(top);
	r = t_run(out, sizeof(out), "cd '%s' && cmp base.raw base.orig && cmp mid.qcow2 mid.orig",
		  t_dir);
	CHECK(r == 0, "the backing chain changed: %s", out);
}

/* The same with --recoverable: every completion checked against the file. */
static void test_recoverable_workload(unsigned rounds)
{
	const char *path = t_path("recoverable.qcow2");
	unsigned i;

	setup(path, 1);
	dev.opt.recoverable = true;
	run_rounds(rounds);
	drain();
	for (i = 0; i < NT; i++)
		if (slots[i].commits)
			check_done(i);
	printf("recoverable workload: %llu requests, %llu parks\n",
	       COUNTER(UQ_QS_DONE), COUNTER(UQ_QS_WAITS));
	teardown(path);
}

/* One request, run to completion: its commit result. */
static int one(uint8_t op, uint32_t flags, uint64_t sector, uint32_t sectors)
{
	start(0, op, flags, sector, sectors);
	drain();
	CHECK(slots[0].commits == 1, "op %u: %u commits", op, slots[0].commits);
	slots[0].commits = 0;
	return slots[0].result;
}

/*
 * Copy-on-write through the ring: a snapshot shares every cluster, so a
 * write of 1 KiB into the middle of one allocates a new cluster and keeps
 * the old bytes around the guest's (read through the ring, then written
 * with them); a failed read of the old bytes, and a failed write, fail the
 * request and leave the image as it was, nothing leaked. Then the same into
 * a compressed cluster (made by qemu-img), whose bytes are inflated.
 */
static void cow_write(uint64_t off, int fail_read, int fail_write, int want, bool reads_old)
{
	uint64_t reads = old_reads;
	int r;

	t_fill_random(req_mem(0), 1024);
	fail_next_read = fail_read;
	fail_next_write = fail_write;
	r = one(UBLK_IO_OP_WRITE, 0, off >> 9, 2);
	CHECK(r == want, "partial write at %llu into a shared cluster (read failure %d, write "
	      "failure %d): %d, wanted %d", (unsigned long long)off, fail_read, fail_write, r,
	      want);
	CHECK(!fail_next_read && !fail_next_write, "an injected failure did not happen");
	if (r == want && want > 0)
		memcpy(model + off, req_mem(0), 1024);
	CHECK(!reads_old || old_reads > reads, "no old bytes were read for the copy-on-write "
	      "at %llu", (unsigned long long)off);
}

static void expect_model(uint64_t off, uint64_t len, const char *what)
{
	memset(req_mem(0), 0xa5, len);
	CHECK(one(UBLK_IO_OP_READ, 0, off >> 9, (uint32_t)(len >> 9)) == (int)len &&
	      !memcmp(req_mem(0), model + off, len), "%s: reads back wrong", what);
}

static void test_copy_on_write(void)
{
	const char *path = t_path("cow.qcow2"), *zpath = t_path("cow-compressed.qcow2");
	unsigned long long reads;
	char out[4096];
	int r;

	setup(path, 1);
	/* compressible, so that qemu-img convert -c below compresses it */
	for (unsigned i = 0; i < 64 << 10; i++)
		model[i] = (uint8_t)(i / 700 + (i % 7 == 0));
	memcpy(req_mem(0), model, 64 << 10);
	CHECK(one(UBLK_IO_OP_WRITE, 0, 0, 128) == 64 << 10, "first write");
	r = qcow_snapshot_create(dev.img, "s1");
	CHECK(r == 0, "snapshot: %d %s", r, qcow_error(dev.img));
	cow_write(5120, 0, 0, 1024, true);
	cow_write(9216, -EIO, 0, -EIO, true);
	cow_write(13312, 0, -EIO, -EIO, true);
	expect_model(0, 64 << 10, "after copy-on-write");
	teardown(path);		/* qemu-img check: no leak either */

	if (!t_have_prog("qemu-img"))
		return;
	r = t_run(out, sizeof(out), "qemu-img convert -c -f qcow2 -O qcow2 -o cluster_size=4096 "
		  "'%s' '%s' 2>&1", path, zpath);
	REQUIRE(r == 0, "qemu-img convert -c: %d %s", r, out);
	serve(zpath, 1, false);
	reads = stream_reads;
	expect_model(0, 64 << 10, "the compressed image");
	expect_model(28672 + 1536, 1024, "the middle of a compressed cluster");
	CHECK(stream_reads > reads, "no compressed cluster was read: qemu-img did not compress?");
	engine_io = 0;
	engine_io_counted = true;
	/* the compressed stream read through the ring and inflated there */
	cow_write(20480 + 1024, 0, 0, 1024, true);
	cow_write(24576 + 1024, -EIO, 0, -EIO, true);	/* its read fails: nothing changes */
	/* a write across two compressed clusters: two streams, one after the other */
	t_fill_random(req_mem(0), 2048);
	CHECK(one(UBLK_IO_OP_WRITE, 0, (36864 - 1024) >> 9, 4) == 2048, "write across two "
	      "compressed clusters");
	memcpy(model + 36864 - 1024, req_mem(0), 2048);
	/* zeros into part of one: the rest copied on write like a WRITE's */
	CHECK(one(UBLK_IO_OP_WRITE_ZEROES, 0, (45056 + 512) >> 9, 2) == 0, "zeros into part "
	      "of a compressed cluster");
	memset(model + 45056 + 512, 0, 1024);
	engine_io_counted = false;
	CHECK(engine_io == 0, "copy-on-write of compressed clusters: the engine did %llu IOs "
	      "itself", engine_io);
	expect_model(0, 64 << 10, "after copy-on-write of compressed clusters");
	CHECK(qcow_snapshot_create(dev.img, "s2") == 0, "snapshot of the converted image");
	teardown(zpath);
}

static void test_hostile_descriptors(void)
{
	const char *path = t_path("hostile.qcow2");
	uint64_t end = DISK_BYTES / 512;
	int r;

	setup(path, 4);
	t_fill_random(req_mem(0), BUF_BYTES);
	memcpy(model, req_mem(0), BUF_BYTES);
	CHECK(one(UBLK_IO_OP_WRITE, 0, 0, BUF_BYTES / 512) == (int)BUF_BYTES, "plain write");
	r = one(UBLK_IO_OP_READ, 0, end, 8);
	CHECK(r == -EINVAL, "read past the end: %d", r);
	r = one(UBLK_IO_OP_WRITE, 0, end - 4, 8);
	CHECK(r == -EINVAL, "write across the end: %d", r);
	r = one(UBLK_IO_OP_WRITE, 0, UINT64_MAX - 3, 8);
	CHECK(r == -EINVAL, "write at a wrapping sector: %d", r);
	r = one(UBLK_IO_OP_DISCARD, 0, end - 1, 0xffffffffu);
	CHECK(r == -EINVAL, "discard of 2 TiB at the end: %d", r);
	r = one(UBLK_IO_OP_READ, 0, 0, 0);
	CHECK(r == -EINVAL, "empty read: %d", r);
	r = one(UBLK_IO_OP_WRITE, 0, 0, BUF_BYTES / 512 + 1);
	CHECK(r == -EINVAL, "write larger than the tag buffer: %d", r);
	r = one(99, 0, 0, 8);
	CHECK(r == -EOPNOTSUPP, "unknown op: %d", r);
	r = one(UBLK_IO_OP_FLUSH, 0xffff00u, 0, 0);
	CHECK(r == 0, "flush with unknown flags: %d", r);
	CHECK(sq_len == 0, "a refused request queued IO");
	memset(req_mem(0), 0xa5, BUF_BYTES);
	r = one(UBLK_IO_OP_READ, 0, 0, BUF_BYTES / 512);
	CHECK(r == (int)BUF_BYTES && !memcmp(req_mem(0), model, BUF_BYTES),
	      "data intact after the refused requests: %d", r);
	teardown(path);
}

/*
 * The largest request the daemon takes (UQ_MAX_IO_BYTES) in slot 0, alone
 * (its memory runs over the other slots'): a read of a hole (zero copy: the
 * whole request zero-filled by one user-copy write), a write into new
 * clusters, and a read of them, which lie in one piece of the file.  The
 * offset and length of each IO come back in its completion's user_data.
 */
static void test_largest_request(void)
{
	const char *path = t_path("largest.qcow2");
	uint32_t bytes = UQ_MAX_IO_BYTES, sectors = bytes >> 9;
	uint64_t at = 3u << 20;
	int r;

	setup(path, 4);
	dev.buf_bytes = bytes;
	free(dev.zero_buf);
	REQUIRE(uq_io_zero_buf_alloc(&dev) == 0, "zero buffer");
	memset(req_mem(0), 0xa5, bytes);
	r = one(UBLK_IO_OP_READ, 0, at >> 9, sectors);
	CHECK(r == (int)bytes, "read of a %u-byte hole: %d", bytes, r);
	t_fill_random(req_mem(0), bytes);
	memcpy(model + at, req_mem(0), bytes);
	r = one(UBLK_IO_OP_WRITE, 0, at >> 9, sectors);
	CHECK(r == (int)bytes, "write of %u bytes: %d", bytes, r);
	memset(req_mem(0), 0xa5, bytes);
	r = one(UBLK_IO_OP_READ, 0, at >> 9, sectors);
	CHECK(r == (int)bytes, "read of the %u bytes written: %d", bytes, r);
	r = one(UBLK_IO_OP_READ, 0, at >> 9, sectors + 1);
	CHECK(r == -EINVAL, "read one sector larger: %d", r);
	teardown(path);
}

/* Injected IO errors: the request fails with -EIO, nothing else changes. */
static void test_injected_errors(void)
{
	const char *path = t_path("errors.qcow2");
	int r;

	setup(path, 1);
	t_fill_random(req_mem(0), BUF_BYTES);
	memcpy(model, req_mem(0), BUF_BYTES);
	CHECK(one(UBLK_IO_OP_WRITE, 0, 0, BUF_BYTES / 512) == (int)BUF_BYTES, "first write");

	/* a failed allocating write is rolled back: the range still reads as zero */
	t_fill_random(req_mem(0), BUF_BYTES);
	fail_next_write = -EIO;
	r = one(UBLK_IO_OP_WRITE, 0, (4u << 20) >> 9, BUF_BYTES / 512);
	CHECK(r == -EIO, "failed allocating write: %d", r);
	/* a failed overwrite: the request fails (the bytes on disk are undefined
	 * for the guest, as on a real disk, so the model is not consulted) */
	fail_next_read = -EIO;
	r = one(UBLK_IO_OP_READ, 0, 0, 16);
	CHECK(r == -EIO, "failed data read: %d", r);
	/* an L2 table read that fails: evict table 0 first by reading through
	 * more tables than the cache holds (the engine keeps at least 4) */
	for (unsigned mib = 10; mib <= 20; mib += 2) {
		t_fill_random(req_mem(0), 4096);
		memcpy(model + ((uint64_t)mib << 20), req_mem(0), 4096);
		r = one(UBLK_IO_OP_WRITE, 0, ((uint64_t)mib << 20) >> 9, 8);
		CHECK(r == 4096, "write at %u MiB: %d", mib, r);
	}
	fail_next_meta = -EIO;
	r = one(UBLK_IO_OP_READ, 0, 0, 16);
	CHECK(r == -EIO, "read needing a failed L2 load: %d", r);
	CHECK(!fail_next_meta, "no L2 table was read: the injection did not happen");
	memset(req_mem(0), 0xa5, BUF_BYTES);
	r = one(UBLK_IO_OP_READ, 0, (4u << 20) >> 9, BUF_BYTES / 512);
	CHECK(r == (int)BUF_BYTES && !memcmp(req_mem(0), model + (4u << 20), BUF_BYTES),
	      "rolled-back write left data behind: %d", r);
	memset(req_mem(0), 0xa5, BUF_BYTES);
	r = one(UBLK_IO_OP_READ, 0, 0, BUF_BYTES / 512);
	CHECK(r == (int)BUF_BYTES && !memcmp(req_mem(0), model, BUF_BYTES),
	      "first write lost after the errors: %d", r);
	if (data_mode == UQ_DATA_ZERO_COPY) {
		/* a registration that fails: the image IO behind it finds no buffer */
		fail_next_register = -EBUSY;
		r = one(UBLK_IO_OP_READ, 0, 0, 16);
		CHECK(r == -EIO, "read whose REGISTER_IO_BUF failed: %d", r);
		memset(req_mem(0), 0xa5, BUF_BYTES);
		r = one(UBLK_IO_OP_READ, 0, 0, BUF_BYTES / 512);
		CHECK(r == (int)BUF_BYTES && !memcmp(req_mem(0), model, BUF_BYTES),
		      "read after a failed registration: %d", r);
	}
	teardown(path);
}

/*
 * A flush whose table write or fsync fails: the FLUSH fails, and so does
 * every later write and flush (design 9.7), while reads go on; the image
 * left behind is consistent (at most leaks).
 */
static void test_failed_flush(void)
{
	const char *path = t_path("failed-flush.qcow2");
	int r;

	setup(path, 1);
	t_fill_random(req_mem(0), BUF_BYTES);
	memcpy(model, req_mem(0), BUF_BYTES);
	CHECK(one(UBLK_IO_OP_WRITE, 0, 0, BUF_BYTES / 512) == (int)BUF_BYTES, "first write");
	CHECK(one(UBLK_IO_OP_FLUSH, 0, 0, 0) == 0, "first flush");
	t_fill_random(req_mem(0), 4096);
	CHECK(one(UBLK_IO_OP_WRITE, 0, (30u << 20) >> 9, 8) == 4096, "write before the flush");
	fail_next_flush = -EIO;
	r = one(UBLK_IO_OP_FLUSH, 0, 0, 0);
	CHECK(r == -EIO, "FLUSH whose IO failed: %d", r);
	CHECK(!fail_next_flush, "the FLUSH issued no IO: the injection did not happen");
	r = one(UBLK_IO_OP_WRITE, 0, (32u << 20) >> 9, 8);
	CHECK(r == -EIO, "write after a failed FLUSH: %d", r);
	r = one(UBLK_IO_OP_FLUSH, 0, 0, 0);
	CHECK(r == -EIO, "FLUSH after a failed FLUSH: %d", r);
	memset(req_mem(0), 0xa5, BUF_BYTES);
	r = one(UBLK_IO_OP_READ, 0, 0, BUF_BYTES / 512);
	CHECK(r == (int)BUF_BYTES && !memcmp(req_mem(0), model, BUF_BYTES),
	      "read after a failed FLUSH: %d", r);
	close_dev(path, -EIO, true);	/* what the failed flush held is leaked */
}

/* Where slot g's first queued IO of kind is in sq (any kind: 0); -1: none. */
static int queued_of(unsigned g, enum uq_ud_kind kind)
{
	unsigned qi = g / DEPTH, tag = g % DEPTH, i;

	for (i = 0; i < sq_len; i++)
		if (sq_q[i] == qi && uq_ud_tag(sq[i].user_data) == tag &&
		    (!kind || uq_ud_kind(sq[i].user_data) == kind))
			return (int)i;
	return -1;
}

/* Complete sq[i] as its queue's loop does. */
static void deliver_on_queue(unsigned i)
{
	unsigned qi = sq_q[i];

	running_q = (int)qi;
	deliver_sqe(i);
	loop_tail(&queues[qi]);
	running_q = -1;
}

/* Deliver only slot g's IO until its request commits. */
static void finish_slot(unsigned g)
{
	unsigned steps = 0;
	int i;

	while (!slots[g].commits) {
		i = queued_of(g, 0);
		REQUIRE(i >= 0, "slot %u waits for something but its own IO", g);
		REQUIRE(++steps < 10000, "slot %u never commits", g);
		deliver_on_queue((unsigned)i);
	}
}

/* An allocating write of 4 KiB on slot g at off, into the model too. */
static void start_write(unsigned g, uint64_t off)
{
	t_fill_random(req_mem(g), 4096);
	memcpy(model + off, req_mem(g), 4096);
	start(g, UBLK_IO_OP_WRITE, 0, off >> 9, 8);
}

/*
 * FLUSHes that arrive while a flush runs join the next one: two of them
 * wait during flush 1 (a write completes meanwhile, so flush 2 has work);
 * one runs flush 2, and the other is covered by it, even though a third
 * write completed while flush 2 ran (without generations it would start a
 * flush 3 for that write, which it does not need to cover).
 */
static void test_flush_joins(void)
{
	const char *path = t_path("joins.qcow2");
	unsigned g;

	setup(path, 1);
	start_write(0, 0);
	finish_slot(0);
	start(0, UBLK_IO_OP_FLUSH, 0, 0, 0);
	CHECK(tags[0].driving, "the first FLUSH does not run the flush");
	start(1, UBLK_IO_OP_FLUSH, 0, 0, 0);
	start(3, UBLK_IO_OP_FLUSH, 0, 0, 0);
	CHECK(tags[1].parked && tags[3].parked, "FLUSHes arriving during a flush do not wait");
	start_write(2, 64 << 10);
	finish_slot(2);
	while (dev.flushes_started == 1 && anything_pending())
		complete_one();
	CHECK(dev.flushes_started == 2, "%llu flushes started after the first ended, wanted 2",
	      (unsigned long long)dev.flushes_started);
	start_write(4, 128 << 10);
	finish_slot(4);
	drain();
	for (g = 0; g <= 4; g++)
		CHECK(slots[g].commits == 1 && slots[g].result == (g == 2 || g == 4 ? 4096 : 0),
		      "slot %u: %u commits, result %d", g, slots[g].commits, slots[g].result);
	CHECK(dev.flushes_started == 2, "%llu flushes for three FLUSHes: the two that waited "
	      "did not share the next one", (unsigned long long)dev.flushes_started);
	CHECK(COUNTER(UQ_QS_FLUSH_JOINS) == 1, "%llu flush stages joined another's flush, wanted 1",
	      COUNTER(UQ_QS_FLUSH_JOINS));
	teardown(path);
}

/*
 * A FLUSH that finds the running flush past its table writes, with nothing
 * left unwritten, issues an fsync of its own and commits once that is
 * over, before the running flush ends; at the running flush's earlier
 * fsyncs (its L2 or L1 writes still to come), or with a table dirty, it
 * waits for the flush.  An own fsync that fails fails its FLUSH and the
 * handle.  Everything on one queue, so that no completion comes unasked.
 */
static void test_own_sync(void)
{
	const char *path = t_path("own-sync.qcow2");
	unsigned g = 1, s;
	int i;

	setup(path, 1);
	start_write(0, 0);
	finish_slot(0);
	start(0, UBLK_IO_OP_FLUSH, 0, 0, 0);	/* refcounts, L2 and L1 to write */
	REQUIRE(tags[0].driving, "the FLUSH does not run the flush");
	while (!slots[0].commits) {
		i = queued_of(0, UQ_UD_FLUSH);
		REQUIRE(i >= 0 && g < DEPTH, "the flush stalls (%d) or has %u fsyncs", i, g);
		if (sq[i].opcode == IORING_OP_FSYNC) {
			start(g, UBLK_IO_OP_FLUSH, 0, 0, 0);
			g++;
		}
		deliver_on_queue((unsigned)i);
	}
	/* the last FLUSH came at the flush's last fsync: its own went first */
	drain();
	for (s = 0; s < g; s++)
		CHECK(slots[s].commits == 1 && slots[s].result == 0,
		      "slot %u: %u commits, result %d", s, slots[s].commits, slots[s].result);
	CHECK(g >= 3 && COUNTER(UQ_QS_OWN_SYNCS) == 1, "%u FLUSHes at the flush's fsyncs, %llu "
	      "fsyncs of their own, wanted only the last one's", g - 1, COUNTER(UQ_QS_OWN_SYNCS));

	/* an overwrite: the flush is an fsync alone, tables written */
	start_write(1, 0);
	finish_slot(1);
	start(0, UBLK_IO_OP_FLUSH, 0, 0, 0);
	start(2, UBLK_IO_OP_FLUSH, 0, 0, 0);
	i = queued_of(2, UQ_UD_SYNC);
	REQUIRE(i >= 0 && !tags[2].parked, "a FLUSH beside an fsync-only flush waits");
	deliver_on_queue((unsigned)i);
	CHECK(slots[2].commits == 1 && slots[2].result == 0 && !slots[0].commits,
	      "the FLUSH with its own fsync did not commit first: %u commits, result %d",
	      slots[2].commits, slots[2].result);
	/* an allocation completes: now a FLUSH needs the L2 table written */
	start_write(3, 8192);
	finish_slot(3);
	start(4, UBLK_IO_OP_FLUSH, 0, 0, 0);
	CHECK(tags[4].parked && queued_of(4, 0) < 0, "a FLUSH with a dirty table did not wait");
	drain();
	CHECK(slots[0].result == 0 && slots[4].result == 0, "FLUSHes: %d %d", slots[0].result,
	      slots[4].result);

	/* an own fsync fails: its FLUSH and later writes fail */
	start_write(1, 0);
	finish_slot(1);
	start(0, UBLK_IO_OP_FLUSH, 0, 0, 0);
	start(2, UBLK_IO_OP_FLUSH, 0, 0, 0);
	i = queued_of(2, UQ_UD_SYNC);
	REQUIRE(i >= 0, "no own fsync to fail");
	fail_next_flush = -EIO;
	deliver_on_queue((unsigned)i);
	CHECK(slots[2].commits == 1 && slots[2].result == -EIO, "FLUSH whose fsync failed: %d",
	      slots[2].result);
	slots[2].commits = 0;	/* checked: the next test's check_done must not see it */
	drain();
	CHECK(one(UBLK_IO_OP_WRITE, 1, (64u << 10) >> 9, 8) == -EIO,
	      "a write after a failed fsync did not fail");
	CHECK(COUNTER(UQ_QS_OWN_SYNCS) == 3, "%llu fsyncs of their own, wanted 3",
	      COUNTER(UQ_QS_OWN_SYNCS));
	close_dev(path, -EIO, true);
}

/*
 * Live snapshots (src/control.c): the device is quiesced at random points.
 * Requests arriving meanwhile are held, unstarted; everything already
 * started must finish by itself (completions alone, no new requests: a
 * parked request whose wake-up depends on new traffic would hang the
 * snapshot) until the queue reports quiet.  Then a snapshot is taken,
 * which later writes must copy on write around, and the held requests go.
 */
static bool all_quiet(unsigned gen)
{
	for (unsigned qi = 0; qi < NQ; qi++)
		if (atomic_load(&queues[qi].quiet_gen) != gen)
			return false;
	return true;
}

static void print_stall(void)
{
	for (unsigned k = 0; k < sq_len; k++)
		printf("  sqe %u: queue %u op %u tag %u kind %d off %llu len %u\n", k, sq_q[k],
		       sq[k].opcode, uq_ud_tag(sq[k].user_data), (int)uq_ud_kind(sq[k].user_data),
		       (unsigned long long)sq[k].off, sq[k].len);
	for (unsigned k = 0; k < NT; k++)
		printf("  slot %u: busy %d op %u %llu+%llu pos %llu parked %d wait_meta %d ops %u\n",
		       k, slots[k].busy, slots[k].op, (unsigned long long)slots[k].off,
		       (unsigned long long)slots[k].len, (unsigned long long)tags[k].pos,
		       tags[k].parked, tags[k].wait_meta, tags[k].ops);
	printf("  engine: %s\n", qcow_error(dev.img));
}

static void quiesce_until_quiet(unsigned gen)
{
	unsigned steps = 0, qi;

	atomic_store(&dev.quiesce_gen, gen);
	atomic_store(&dev.quiesce, true);
	for (unsigned i = 0; i < NT; i++)
		if (!slots[i].busy && t_rand_below(2))
			random_request(i);	/* held */
	for (qi = 0; qi < NQ; qi++)
		uq_queue_wake(&queues[qi]);	/* control.c wakes every queue */
	while (!all_quiet(gen)) {
		REQUIRE(anything_pending(), "quiesce %u stalls: %llu requests owned, %llu held, "
			"%llu parked, nothing in flight", gen, SUM(owned), SUM(nr_held),
			SUM(nr_parked));
		if (++steps >= 100000 - 20 && getenv("IO_PATH_TRACE_STALL"))
			print_stall();
		complete_one();
		REQUIRE(steps < 100000, "quiesce %u never ends", gen);
	}
	for (qi = 0; qi < NQ; qi++) {
		const struct uq_queue *q = &queues[qi];

		CHECK(q->owned == q->nr_held && !q->backend,
		      "queue %u quiet with %u owned, %u held, %u image IOs in flight", qi, q->owned,
		      q->nr_held, q->backend);
	}
}

/* The snapshot is done: let every queue start what it held. */
static void resume_all(void)
{
	atomic_store(&dev.quiesce, false);
	for (unsigned qi = 0; qi < NQ; qi++) {
		int was = running_q;

		running_q = (int)qi;
		uq_io_quiesce_step(&queues[qi]);	/* starts the held requests */
		running_q = was;
	}
}

static void test_quiesce(unsigned rounds)
{
	const char *path = t_path("quiesce.qcow2");
	unsigned gen, snapshots = 0, deletes = 0, nb_live = 0, live[4] = { 0 }, requiesces = 0, i;
	char name[32];
	int r;

	setup(path, 1);
	for (gen = 1; gen <= rounds; gen++) {
		/* a spin in io.c would hang the test instead of failing it: one
		 * round takes well under a second, SIGALRM ends it after 60 */
		alarm(60);
		run_rounds(1 + (unsigned)t_rand_below(20));
		quiesce_until_quiet(gen);
		if (t_rand_below(3) == 0) {
			snprintf(name, sizeof(name), "s%u", gen);
			r = qcow_snapshot_create(dev.img, name);
			CHECK(r == 0, "snapshot %s of the quiesced image: %d %s", name, r,
			      qcow_error(dev.img));
			if (r == 0)
				live[nb_live++ % 4] = gen;
			snapshots++;
		} else if (nb_live > 2 && t_rand_below(2) == 0) {
			/* the churn of test-live-snapshot: delete an older one */
			snprintf(name, sizeof(name), "s%u", live[(nb_live - 2) % 4]);
			r = qcow_snapshot_delete(dev.img, name);
			CHECK(r == 0 || r == -ENOENT, "deleting snapshot %s: %d %s", name, r,
			      qcow_error(dev.img));
			deletes += r == 0;
		}
		/* sometimes the next snapshot's quiesce comes while they start */
		requiesce_armed = SUM(nr_held) > 1 && t_rand_below(4) == 0;
		if (requiesce_armed)
			requiesces++;
		resume_all();
		if (atomic_load(&dev.quiesce)) {
			quiesce_until_quiet(++gen);
			resume_all();
		}
		requiesce_armed = false;
		CHECK(SUM(nr_held) == 0, "%llu requests still held after the resume",
		      SUM(nr_held));
	}
	alarm(0);
	drain();
	for (i = 0; i < NT; i++)
		if (slots[i].commits)
			check_done(i);
	printf("quiesce: %u quiesces (%u begun while held requests started), %u snapshots "
	       "taken, %u deleted, %llu requests\n", gen - 1, requiesces, snapshots, deletes,
	       COUNTER(UQ_QS_DONE));
	teardown(path);
}

/* ------------------------------------------------- kill and recover */

/*
 * --recoverable (src/io.c must_write_back): the daemon is killed at a
 * random point and "recover" starts a new one on the same file.  A kill
 * loses the engine's memory (caches, allocations in flight) but nothing the
 * process already wrote: the page cache keeps every completed pwrite.  Of
 * the image IO still queued in the ring, some reached the file and some did
 * not.  The driver (USER_RECOVERY_REISSUE) hands every request the dead
 * daemon had not committed to the new one, unchanged.
 *
 * So a committed request must survive the kill whole, and once the
 * reissued ones are done the image must equal the model of every request
 * started, with no corruption (leaks allowed).  The child process is the
 * daemon that dies: it _exit()s at the kill point, the parent recovers.
 */
struct killed_request {
	uint8_t busy, op;
	uint32_t flags;
	uint64_t off, len;
};

/* In the dying daemon: what the ring got done before the process went. */
static void ring_at_death(void)
{
	unsigned i;

	for (i = 0; i < sq_len; i++) {
		struct io_uring_sqe *e = &sq[i];

		if (uq_ud_kind(e->user_data) != UQ_UD_WRITE || !t_rand_below(2))
			continue;
		if (e->opcode == IORING_OP_WRITEV) {
			execute(sq_q[i], e);	/* all of it */
			continue;
		}
		/* a prefix of it, possibly all */
		e->len = (uint32_t)(t_rand_below(e->len / 512 + 1) * 512);
		if (e->len)
			execute(sq_q[i], e);
	}
}

static void die_at_random(const char *path, unsigned l2_tables, unsigned rounds)
{
	struct killed_request kr[NT];
	unsigned i;

	setup(path, l2_tables);
	dev.opt.recoverable = true;
	run_rounds(rounds);
	ring_at_death();
	for (i = 0; i < NT; i++) {
		kr[i] = (struct killed_request){ slots[i].busy, slots[i].op, slots[i].flags,
						 slots[i].off, slots[i].len };
	}
	REQUIRE(t_write_file(t_path("model"), model, DISK_BYTES) == 0, "saving the model");
	REQUIRE(t_write_file(t_path("killed"), kr, sizeof(kr)) == 0, "saving the requests");
	REQUIRE(t_write_file(t_path("bufs"), bufs, (size_t)NT * BUF_BYTES) == 0,
		"saving the buffers");
	fflush(NULL);
	_exit(t_nfail ? 1 : 0);	/* SIGKILL: no close, no flush, no atexit */
}

/* The new daemon: the reissued requests, then a little more. */
static unsigned recover_and_check(const char *path, unsigned l2_tables)
{
	struct killed_request *kr;
	uint8_t *m, *b;
	size_t n = 0, nm = 0, nb = 0;
	unsigned i, reissued = 0;

	kr = (struct killed_request *)t_read_file(t_path("killed"), &n);
	m = t_read_file(t_path("model"), &nm);
	b = t_read_file(t_path("bufs"), &nb);
	REQUIRE(kr && m && b && n == NT * sizeof(*kr) && nm == DISK_BYTES &&
		nb == (size_t)NT * BUF_BYTES, "reading what the dead daemon left");
	serve(path, l2_tables, false);
	dev.opt.recoverable = true;
	memcpy(model, m, DISK_BYTES);
	for (i = 0; i < NT; i++) {
		if (!kr[i].busy)
			continue;
		if (kr[i].op == UBLK_IO_OP_WRITE)
			memcpy(req_mem(i), b + (size_t)i * BUF_BYTES, kr[i].len);
		else if (kr[i].op == UBLK_IO_OP_READ)
			memset(req_mem(i), 0xa5, BUF_BYTES);
		start(i, kr[i].op, kr[i].flags, kr[i].off >> 9, (uint32_t)(kr[i].len >> 9));
		reissued++;
	}
	drain();
	for (i = 0; i < NT; i++)
		if (slots[i].commits)
			check_done(i);
	free(kr);
	free(m);
	free(b);
	return reissued;
}

static void test_kill_and_recover(unsigned kills)
{
	const char *path = t_path("killed.qcow2");
	unsigned k, reissued = 0;

	for (k = 0; k < kills && !t_nfail; k++) {
		unsigned l2_tables = t_rand_below(2) ? 1 : 8;
		unsigned rounds = 1 + (unsigned)t_rand_below(300);
		uint64_t seed = t_rand();
		int status = 0;
		pid_t pid;

		fflush(NULL);
		pid = fork();
		REQUIRE(pid >= 0, "fork: %s", strerror(errno));
		if (pid == 0) {
			t_rng_state = seed;
			die_at_random(path, l2_tables, rounds);
		}
		REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "kill %u: the daemon failed before its death (status %#x)", k, status);
		reissued += recover_and_check(path, l2_tables);
		teardown_check(path, true);
	}
	printf("kill and recover: %u kills, %u requests reissued\n", k, reissued);
}

int main(void)
{
	unsigned rounds = (unsigned)t_env_u64("IO_PATH_ROUNDS", 2000);

	t_init("io-path");
	/* test_largest_request's one request needs UQ_MAX_IO_BYTES */
	_Static_assert((size_t)NT * BUF_BYTES >= UQ_MAX_IO_BYTES, "slot 0 holds the largest request");
	bufs = malloc((size_t)NT * BUF_BYTES);
	model = malloc(DISK_BYTES);
	REQUIRE(bufs && model, "malloc");
	/* every mode: what the data path itself does; copy mode alone: the
	 * situations that are about the engine's ordering, not the buffers */
	for (data_mode = UQ_DATA_COPY; data_mode <= UQ_DATA_AUTO_BUF_REG; data_mode++) {
		printf("data mode %s\n", uq_data_mode_name(data_mode));
		test_hostile_descriptors();
		test_largest_request();
		test_injected_errors();
		test_failed_flush();
		test_copy_on_write();
		test_random_workload(data_mode == UQ_DATA_COPY ? rounds : rounds / 2);
		test_overlay_workload(data_mode == UQ_DATA_COPY ? rounds : rounds / 2);
	}
	data_mode = UQ_DATA_COPY;
	test_flush_joins();
	test_own_sync();
	test_recoverable_workload(rounds / 3);
	test_quiesce(rounds / 10);
	test_kill_and_recover((unsigned)t_env_u64("IO_PATH_KILLS", 30));
	free(bufs);
	free(model);
	return t_finish();
}
