/* SPDX-License-Identifier: MIT */
/*
 * The daemon's per-tag IO state machine (src/io.c) on the host, without the
 * kernel: this test plays the two sides io.c talks to.
 *
 *   - the ublk driver: it hands io.c request descriptors (copy mode: write
 *     data already in the tag's buffer, read buffers full of garbage) and
 *     takes the COMMIT results through a fake uq_queue_commit();
 *   - io_uring: the SQEs io.c queues (READ_FIXED / WRITE_FIXED on the image,
 *     L2 table reads) land in a fake submission queue, and the test executes
 *     them with pread/pwrite in random order, delivering each completion the
 *     way queue.c does; it can also fail one or cut it short.
 *
 * Checked against a model of the disk: random mixes of READ, WRITE, DISCARD,
 * WRITE_ZEROES and FLUSH, up to a full queue of non-overlapping requests in
 * flight, with a one-table L2 cache so L2 misses, parking and retries happen
 * all the time; every read equals the model in full (holes zero-filled over
 * the garbage); every request commits exactly once, with its full length or
 * 0; injected IO errors commit -EIO and change nothing; hostile descriptors
 * (past the end, across the end, empty, larger than the buffer, unknown
 * ops) commit a negative errno without touching the image. Afterwards the
 * image passes qemu-img check and reads back equal to the model.
 *
 * SEED replays a run; IO_PATH_ROUNDS sets its length; IO_PATH_OPS (letters
 * r w d z f) limits the mix and IO_PATH_TRACE=1 prints every start and
 * commit, for chasing a failure.
 */
#include "src/io.c"
#include "src/log.c"

#include "testlib.h"

#define DEPTH		8
#define BUF_BYTES	(64u << 10)
#define DISK_BYTES	(64u << 20)
#define MAX_SQES	1024

static struct uq_dev dev;
static struct uq_queue queue;
static struct uq_tag tags[DEPTH];
static uint8_t *bufs;
static uint8_t *model;

/* ------------------------------------------- the fake submission queue */

static struct io_uring_sqe sq[MAX_SQES];
static unsigned sq_len;

/* Per tag: what the driver side knows about the request on it. */
struct slot {
	bool busy;
	unsigned commits;
	int result;
	uint8_t op;
	uint64_t off, len;
	bool expect_fail;
};
static struct slot slots[DEPTH];

/* Fault injection: the next data completion of this kind fails or is cut short. */
static int fail_next_read, fail_next_write, fail_next_meta;

struct io_uring_sqe *uq_get_sqe(struct uq_queue *q)
{
	(void)q;
	REQUIRE(sq_len < MAX_SQES, "fake submission queue full");
	memset(&sq[sq_len], 0, sizeof(sq[0]));
	return &sq[sq_len++];
}

void uq_queue_commit(struct uq_tag *t, int result)
{
	struct slot *s = &slots[t->tag];

	if (getenv("IO_PATH_TRACE"))
		printf("commit tag %u result %d\n", t->tag, result);
	t->op = 0xff;
	s->commits++;
	s->result = result;
	s->busy = false;
	/* now, before anything else starts: a later write may overlap this range */
	if (s->op == UBLK_IO_OP_READ && result > 0) {
		int64_t d = t_first_diff(t->buf, model + s->off, s->len);

		CHECK(d < 0, "read of %llu+%llu differs from the model at +%lld",
		      (unsigned long long)s->off, (unsigned long long)s->len, (long long)d);
	}
}

int uq_queue_zc_cmd(struct uq_tag *t, bool reg)
{
	(void)t;
	(void)reg;
	CHECK(false, "zero-copy command in copy mode");
	return -EIO;
}

void uq_queue_wake(struct uq_queue *q)
{
	(void)q;	/* one queue: nobody else to wake */
}

/* Run one queued SQE with pread/pwrite; return the CQE result. */
static int execute(const struct io_uring_sqe *e)
{
	int fd = dev.img_fd;
	void *addr = (void *)(uintptr_t)e->addr;
	ssize_t n;

	CHECK(e->flags & IOSQE_FIXED_FILE, "SQE without the registered image file");
	CHECK(e->fd == UQ_FIXED_IMAGE, "SQE on file index %d", e->fd);
	switch (e->opcode) {
	case IORING_OP_READ_FIXED:
	case IORING_OP_READ:
		n = pread(fd, addr, e->len, (off_t)e->off);
		break;
	case IORING_OP_WRITE_FIXED:
		n = pwrite(fd, addr, e->len, (off_t)e->off);
		break;
	default:
		CHECK(false, "unexpected opcode %u", e->opcode);
		return -EINVAL;
	}
	return n < 0 ? -errno : (int)n;
}

/* An injected failure for this completion, or 0. */
static int injected(const struct io_uring_sqe *e, enum uq_ud_kind kind)
{
	int *which = kind == UQ_UD_META ? &fail_next_meta :
		     e->opcode == IORING_OP_WRITE_FIXED ? &fail_next_write : &fail_next_read;
	int err = *which;

	*which = 0;
	return err;
}

/* Complete one queued SQE, picked at random: completions come in any order. */
static void complete_one(void)
{
	unsigned i = (unsigned)t_rand_below(sq_len);
	struct io_uring_sqe e = sq[i];
	enum uq_ud_kind kind = uq_ud_kind(e.user_data);
	struct uq_tag *t = &tags[uq_ud_tag(e.user_data)];
	int res, err;

	sq[i] = sq[--sq_len];
	err = injected(&e, kind);
	res = err ? err : execute(&e);
	queue.backend--;
	if (kind == UQ_UD_DATA)
		uq_io_data_done(t, uq_ud_extra(e.user_data), res);
	else if (kind == UQ_UD_META)
		uq_io_meta_done(t, res);
	else
		CHECK(false, "completion of kind %d", (int)kind);
	if (queue.retry_parked) {
		queue.retry_parked = false;
		uq_io_retry_parked(&queue);
	}
}

/* Run everything in flight to completion. */
static void drain(void)
{
	unsigned rounds = 0;

	while (sq_len) {
		complete_one();
		REQUIRE(++rounds < 1000000, "requests never finish");
	}
	if (queue.retry_parked || queue.parked_head) {
		queue.retry_parked = false;
		uq_io_retry_parked(&queue);
		if (sq_len)
			drain();
	}
}

/* -------------------------------------------------------- the driver side */

static void start(unsigned tag, uint8_t op, uint32_t flags, uint64_t sector, uint32_t sectors)
{
	struct ublksrv_io_desc d = {
		.op_flags = op | flags,
		.nr_sectors = sectors,
		.start_sector = sector,
	};
	struct slot *s = &slots[tag];

	REQUIRE(!s->busy, "tag %u reused while busy", tag);
	s->busy = true;
	s->commits = 0;
	s->result = 1;
	s->op = op;
	s->off = sector << 9;
	s->len = (uint64_t)sectors << 9;
	if (getenv("IO_PATH_TRACE"))
		printf("start tag %u op %u flags %#x %llu+%llu\n", tag, op, flags,
		       (unsigned long long)s->off, (unsigned long long)s->len);
	queue.owned++;
	uq_io_start(&tags[tag], &d);
}

/* The result a request must commit: its length for data, 0 for the rest. */
static int want_result(const struct slot *s)
{
	if (s->expect_fail)
		return -EIO;
	return s->op == UBLK_IO_OP_READ || s->op == UBLK_IO_OP_WRITE ? (int)s->len : 0;
}

static void check_done(unsigned tag)
{
	struct slot *s = &slots[tag];

	CHECK(s->commits == 1, "tag %u: %u commits", tag, s->commits);
	CHECK(s->result == want_result(s), "tag %u op %u at %llu+%llu: result %d, want %d", tag,
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
		for (i = 0; i < DEPTH; i++) {
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
		memset(tags[tag].buf, 0xa5, BUF_BYTES);	/* garbage a hole must not show */
	} else if (op == UBLK_IO_OP_WRITE) {
		t_fill_random(tags[tag].buf, len);
		memcpy(model + off, tags[tag].buf, len);
		flags = t_rand_below(8) == 0 ? UBLK_IO_F_FUA : 0;
	} else if (op == UBLK_IO_OP_WRITE_ZEROES) {
		memset(model + off, 0, len);
		flags = t_rand_below(2) ? UBLK_IO_F_NOUNMAP : 0;
	}
	start(tag, op, flags, sector, sectors);
}

/* ------------------------------------------------------------------ setup */

static void setup(const char *path, unsigned l2_tables)
{
	struct qcow_create_opts co = { .size = DISK_BYTES, .cluster_bits = 12 };
	struct qcow_open_opts oo = { .l2_cache_bytes = (uint64_t)l2_tables << 12 };
	char err[512] = "";
	unsigned i;
	int r;

	r = qcow_create(path, &co, true, err, sizeof(err));
	REQUIRE(r == 0, "create %s: %d %s", path, r, err);
	memset(&dev, 0, sizeof(dev));
	memset(&queue, 0, sizeof(queue));
	r = qcow_open(path, &oo, &dev.img, err, sizeof(err));
	REQUIRE(r == 0, "open %s: %d %s", path, r, err);
	dev.img_fd = qcow_get_file(dev.img)->fd;
	qcow_get_info(dev.img, &dev.info);
	dev.buf_bytes = BUF_BYTES;
	dev.depth = DEPTH;
	dev.nr_queues = 1;
	dev.dev_bytes = DISK_BYTES;
	dev.queues = &queue;
	pthread_mutex_init(&dev.engine_lock, NULL);
	queue.dev = &dev;
	queue.efd = -1;
	queue.cbuf = malloc(dev.info.cluster_size);
	REQUIRE(queue.cbuf, "malloc");
	for (i = 0; i < DEPTH; i++) {
		memset(&tags[i], 0, sizeof(tags[i]));
		tags[i].q = &queue;
		tags[i].tag = (uint16_t)i;
		tags[i].op = 0xff;
		tags[i].buf = bufs + (size_t)i * BUF_BYTES;
		slots[i].busy = false;
	}
	memset(model, 0, DISK_BYTES);
	fail_next_read = fail_next_write = fail_next_meta = 0;
}

static void teardown(const char *path)
{
	uint8_t *back = malloc(DISK_BYTES);
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r;

	REQUIRE(back, "malloc");
	r = qcow_close(dev.img);
	CHECK(r == 0, "close: %d", r);
	free(queue.cbuf);
	CHECK(t_qemu_check(path) == 0 || t_qemu_check(path) == -2, "qemu-img check %s", path);
	r = qcow_open(path, &(struct qcow_open_opts){ .read_only = true }, &img, err, sizeof(err));
	REQUIRE(r == 0, "reopen: %d %s", r, err);
	r = qcow_read(img, back, 0, DISK_BYTES);
	CHECK(r == 0, "read back: %d", r);
	CHECK(t_first_diff(back, model, DISK_BYTES) < 0, "image differs from the model at %lld",
	      (long long)t_first_diff(back, model, DISK_BYTES));
	qcow_close(img);
	free(back);
}

/* -------------------------------------------------------------- the tests */

static void test_random_workload(unsigned rounds)
{
	const char *path = t_path("random.qcow2");
	unsigned r, i;

	setup(path, 1);
	for (r = 0; r < rounds; r++) {
		for (i = 0; i < DEPTH; i++) {
			if (!slots[i].busy && t_rand_below(3))
				random_request(i);
		}
		/* complete some, not all: new requests start beside old ones */
		for (i = (unsigned)t_rand_below(sq_len + 1); i && sq_len; i--)
			complete_one();
		for (i = 0; i < DEPTH; i++) {
			if (!slots[i].busy && slots[i].commits) {
				check_done(i);
				slots[i].commits = 0;
			}
		}
	}
	drain();
	for (i = 0; i < DEPTH; i++)
		if (slots[i].commits)
			check_done(i);
	printf("random workload: %llu requests, %llu L2 table reads, %llu parks\n",
	       (unsigned long long)queue.nr_requests, (unsigned long long)queue.nr_meta_reads,
	       (unsigned long long)queue.nr_parks);
	CHECK(queue.nr_meta_reads > 0, "no L2 table was ever read through the ring");
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

static void test_hostile_descriptors(void)
{
	const char *path = t_path("hostile.qcow2");
	uint64_t end = DISK_BYTES / 512;
	int r;

	setup(path, 4);
	t_fill_random(tags[0].buf, BUF_BYTES);
	memcpy(model, tags[0].buf, BUF_BYTES);
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
	memset(tags[0].buf, 0xa5, BUF_BYTES);
	r = one(UBLK_IO_OP_READ, 0, 0, BUF_BYTES / 512);
	CHECK(r == (int)BUF_BYTES && !memcmp(tags[0].buf, model, BUF_BYTES),
	      "data intact after the refused requests: %d", r);
	teardown(path);
}

/* Injected IO errors: the request fails with -EIO, nothing else changes. */
static void test_injected_errors(void)
{
	const char *path = t_path("errors.qcow2");
	int r;

	setup(path, 1);
	t_fill_random(tags[0].buf, BUF_BYTES);
	memcpy(model, tags[0].buf, BUF_BYTES);
	CHECK(one(UBLK_IO_OP_WRITE, 0, 0, BUF_BYTES / 512) == (int)BUF_BYTES, "first write");

	/* a failed allocating write is rolled back: the range still reads as zero */
	t_fill_random(tags[0].buf, BUF_BYTES);
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
		t_fill_random(tags[0].buf, 4096);
		memcpy(model + ((uint64_t)mib << 20), tags[0].buf, 4096);
		r = one(UBLK_IO_OP_WRITE, 0, ((uint64_t)mib << 20) >> 9, 8);
		CHECK(r == 4096, "write at %u MiB: %d", mib, r);
	}
	fail_next_meta = -EIO;
	r = one(UBLK_IO_OP_READ, 0, 0, 16);
	CHECK(r == -EIO, "read needing a failed L2 load: %d", r);
	CHECK(!fail_next_meta, "no L2 table was read: the injection did not happen");
	memset(tags[0].buf, 0xa5, BUF_BYTES);
	r = one(UBLK_IO_OP_READ, 0, (4u << 20) >> 9, BUF_BYTES / 512);
	CHECK(r == (int)BUF_BYTES && !memcmp(tags[0].buf, model + (4u << 20), BUF_BYTES),
	      "rolled-back write left data behind: %d", r);
	memset(tags[0].buf, 0xa5, BUF_BYTES);
	r = one(UBLK_IO_OP_READ, 0, 0, BUF_BYTES / 512);
	CHECK(r == (int)BUF_BYTES && !memcmp(tags[0].buf, model, BUF_BYTES),
	      "first write lost after the errors: %d", r);
	teardown(path);
}

int main(void)
{
	unsigned rounds = getenv("IO_PATH_ROUNDS") ? (unsigned)atoi(getenv("IO_PATH_ROUNDS")) : 3000;

	t_init("io-path");
	bufs = malloc((size_t)DEPTH * BUF_BYTES);
	model = malloc(DISK_BYTES);
	REQUIRE(bufs && model, "malloc");
	test_hostile_descriptors();
	test_injected_errors();
	test_random_workload(rounds);
	free(bufs);
	free(model);
	return t_finish();
}
