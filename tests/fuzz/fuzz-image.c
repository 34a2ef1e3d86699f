// SPDX-License-Identifier: MIT
/*
 * Fuzz target "image": the input is an image file. It is opened through
 * the in-memory backend (memfile.c, no disk IO) and taken through the
 * passes below, each on a fresh copy of the input unless it says otherwise:
 *
 *   read        read-only open, qcow_get_info, walk the whole virtual disk
 *               with qcow_map and qcow_read (bounded), checking each extent
 *   nowait      the same walk through qcow_map_nowait / qcow_meta_read_done
 *               (the daemon's path): extents must equal the synchronous ones
 *   check       for_check read-only open, qcow_check without repair
 *   repair      qcow_check -r all on a writable for_check open; when it says
 *               nothing is left, a second check must find nothing either
 *   rebuild     qcow_rebuild_refcounts; on a clean image a check after it
 *               must find nothing, not even leaks
 *   write       read-write open, a fixed set of writes, zero writes,
 *               discards, an asynchronous write_begin/end, a resize and
 *               flushes; read back, close, reopen, read back, check
 *   crash       the same writes, with every file write from the Nth on
 *               failing (N from a hash of the input): the file then holds
 *               one state a crash can leave, which must check clean
 *
 * What the engine promises is asserted only where it is promised: read-back
 * and check results are compared only for images the check pass found free
 * of corruption (a corrupt image may legitimately map two guest clusters to
 * one host cluster). Everything else must merely not crash, leak or trip a
 * sanitizer. Work per input is bounded (MAX_MAP_CALLS, MAX_READ_BYTES, op
 * lengths, memfile limits) so that one input stays in the milliseconds.
 *
 * Adding a pass (a snapshot list walk once snapshots exist, say) is one
 * line in passes[] plus its function.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "memfile.h"
#include "qcow/engine.h"

#define MAX_MAP_CALLS   2048
#define MAX_READ_BYTES  (1U << 20)
#define READ_CHUNK      (64U << 10)
#define ZERO_PROBE      4096U            /* bytes read of each unallocated/zero extent */
#define VERIFY_WINDOW   (64U << 10)      /* bytes verified at each end of an op */
#define MAX_EXTENTS     MAX_MAP_CALLS

/* What the passes learn about one input, for the later ones. */
struct fuzz_ctx {
	const uint8_t *data;
	size_t size;
	uint64_t hash;
	bool opened;               /* the read-only open succeeded */
	struct qcow_info info;
	bool checked;              /* the check pass ran to completion */
	struct qcow_check_result check;
	uint64_t write_ops;        /* file ops the clean write pass made */
	unsigned ops_ok;           /* ops of the write pass that succeeded */
	unsigned verified;         /* read-backs that were compared */
	uint64_t crash_at;         /* file op the crash pass failed from */
	bool crash_checked;        /* ... and the state it left was checked */
	uint8_t *buf;              /* READ_CHUNK scratch */
	uint8_t *buf2;
};

static bool clean(const struct fuzz_ctx *fc)
{
	return fc->checked && !fc->check.corruptions && !fc->check.check_errors &&
	       !fc->info.corrupt;
}

static int open_mem(struct memfile *m, bool read_only, bool for_check, uint64_t l2_cache,
		    struct qcow_image **img)
{
	struct qcow_open_opts o = {
		.read_only = read_only,
		.for_check = for_check,
		.no_backing = true,	/* the input names files: look at it alone */
		.l2_cache_bytes = l2_cache,
		.refcount_cache_bytes = l2_cache,
	};
	struct qcow_file f;
	char err[256];
	int ret;

	memfile_as_qcow_file(m, &f);
	ret = qcow_open_file(&f, "fuzz.qcow2", &o, img, err, sizeof(err));
	FUZZ_ASSERT(ret <= 0, "qcow_open_file returned %d", ret);
	FUZZ_ASSERT((ret == 0) == (*img != NULL), "open %d but image %p", ret, (void *)*img);
	FUZZ_ASSERT(memchr(err, '\0', sizeof(err)), "error message not terminated");
	FUZZ_ASSERT(ret == 0 || err[0], "open failed (%d) without a message", ret);
	return ret;
}

static bool all_zero(const uint8_t *p, size_t len)
{
	return !len || (p[0] == 0 && !memcmp(p, p + 1, len - 1));
}

static void check_extent(const struct qcow_info *info, uint64_t off, uint64_t len,
			 const struct qcow_extent *e)
{
	uint64_t cs = info->cluster_size, l2_span = cs * (cs / 8);

	FUZZ_ASSERT(e->guest_offset == off, "extent at %llu for %llu",
		    (unsigned long long)e->guest_offset, (unsigned long long)off);
	FUZZ_ASSERT(e->length > 0 && e->length <= len, "extent length %llu of %llu",
		    (unsigned long long)e->length, (unsigned long long)len);
	FUZZ_ASSERT(off / l2_span == (off + e->length - 1) / l2_span,
		    "extent %llu+%llu crosses an L2 table", (unsigned long long)off,
		    (unsigned long long)e->length);
	switch (e->kind) {
	case QCOW_EXTENT_DATA:
		FUZZ_ASSERT((e->host_offset & (cs - 1)) == (off & (cs - 1)),
			    "host offset %llu for guest %llu", (unsigned long long)e->host_offset,
			    (unsigned long long)off);
		FUZZ_ASSERT(e->host_offset + e->length > e->host_offset, "host range wraps");
		break;
	case QCOW_EXTENT_COMPRESSED:
		FUZZ_ASSERT(off / cs == (off + e->length - 1) / cs, "compressed extent spans clusters");
		break;
	case QCOW_EXTENT_UNALLOCATED:
	case QCOW_EXTENT_ZERO:
		break;
	default:
		FUZZ_ASSERT(0, "extent kind %d", (int)e->kind);
	}
}

/* ----------------------------------------------------------------- read */

/*
 * Walk the virtual disk: map each extent, read (a bounded part of) it.
 * Returns the number of extents recorded in ext (map failures are recorded
 * with length 0 and skip one cluster).
 */
static unsigned walk(struct fuzz_ctx *fc, struct qcow_image *img, struct qcow_extent *ext)
{
	uint64_t vs = fc->info.virtual_size, cs = fc->info.cluster_size, off = 0;
	uint64_t read_budget = MAX_READ_BYTES;
	unsigned n = 0;

	while (off < vs && n < MAX_MAP_CALLS) {
		struct qcow_extent e;
		uint64_t len;
		int ret = qcow_map(img, off, vs - off, &e);

		if (ret < 0) {
			FUZZ_ASSERT(ret != -EAGAIN && ret != -EBUSY, "qcow_map: %d", ret);
			FUZZ_ASSERT(qcow_error(img)[0], "qcow_map failed without a message");
			/* the read must fail the same way, not crash */
			len = cs - (off & (cs - 1));
			if (len > vs - off)
				len = vs - off;
			if (len > READ_CHUNK)
				len = READ_CHUNK;
			FUZZ_ASSERT(qcow_read(img, fc->buf, off, (size_t)len) < 0,
				    "map at %llu failed, read did not", (unsigned long long)off);
			memset(&ext[n], 0, sizeof(ext[n]));
			ext[n++].guest_offset = off;
			off += cs - (off & (cs - 1));
			continue;
		}
		check_extent(&fc->info, off, vs - off, &e);
		ext[n++] = e;
		if (e.kind == QCOW_EXTENT_DATA || e.kind == QCOW_EXTENT_COMPRESSED) {
			uint64_t pos;

			for (pos = 0; pos < e.length && read_budget; ) {
				len = e.length - pos;
				if (len > READ_CHUNK)
					len = READ_CHUNK;
				if (len > read_budget)
					len = read_budget;
				read_budget -= len;
				/* a bad compressed stream or offset fails; fine */
				if (qcow_read(img, fc->buf, off + pos, (size_t)len) < 0)
					break;
				pos += len;
			}
		} else {
			len = e.length < ZERO_PROBE ? e.length : ZERO_PROBE;
			ret = qcow_read(img, fc->buf, off, (size_t)len);
			FUZZ_ASSERT(ret == 0, "read of a %s extent at %llu: %d (%s)",
				    e.kind == QCOW_EXTENT_ZERO ? "zero" : "unallocated",
				    (unsigned long long)off, ret, qcow_error(img));
			FUZZ_ASSERT(all_zero(fc->buf, (size_t)len), "%s extent at %llu reads non-zero",
				    e.kind == QCOW_EXTENT_ZERO ? "zero" : "unallocated",
				    (unsigned long long)off);
		}
		off += e.length;
	}
	return n;
}

static struct qcow_extent sync_ext[MAX_EXTENTS];
static unsigned nb_sync_ext;

static void pass_read(struct fuzz_ctx *fc)
{
	struct memfile m;
	struct qcow_image *img;

	memfile_init(&m, fc->data, fc->size);
	if (open_mem(&m, true, false, 0, &img) == 0) {
		qcow_get_info(img, &fc->info);
		fc->opened = true;
		FUZZ_ASSERT(fc->info.cluster_size == 1ULL << fc->info.cluster_bits &&
			    fc->info.cluster_bits >= 9 && fc->info.cluster_bits <= 21,
			    "cluster_bits %u", fc->info.cluster_bits);
		FUZZ_ASSERT(fc->info.version == 2 || fc->info.version == 3, "version %u",
			    fc->info.version);
		nb_sync_ext = walk(fc, img, sync_ext);
		/* out of range requests are refused, not performed */
		FUZZ_ASSERT(qcow_read(img, fc->buf, fc->info.virtual_size, 1) < 0,
			    "read past the end succeeded");
		FUZZ_ASSERT(qcow_write(img, fc->buf, 0, 1) < 0, "write on a read-only image");
		FUZZ_ASSERT(qcow_close(img) == 0, "read-only close failed");
	}
	memfile_free(&m);
}

/* The same walk through the non-blocking calls, metadata read by us. */
static void pass_nowait(struct fuzz_ctx *fc)
{
	struct memfile m;
	struct qcow_image *img;
	uint64_t vs, off = 0;
	unsigned n = 0;

	if (!fc->opened)
		return;
	memfile_init(&m, fc->data, fc->size);
	/* a tiny cache: loads evict each other */
	if (open_mem(&m, true, false, 1, &img) < 0) {
		memfile_free(&m);
		FUZZ_ASSERT(0, "second read-only open failed");
	}
	vs = fc->info.virtual_size;
	while (off < vs && n < nb_sync_ext) {
		const struct qcow_extent *want = &sync_ext[n++];
		struct qcow_meta_read need;
		struct qcow_extent e;
		int ret, tries = 0;

		for (;;) {
			const struct qcow_file *f = qcow_get_file(img);

			ret = qcow_map_nowait(img, off, vs - off, &e, &need);
			if (ret != -EAGAIN)
				break;
			FUZZ_ASSERT(++tries <= 2, "qcow_map_nowait keeps asking for 0x%llx",
				    (unsigned long long)need.offset);
			FUZZ_ASSERT(need.buf && need.len == fc->info.cluster_size,
				    "meta read of %zu bytes", need.len);
			ret = f->ops->pread(f->ctx, need.buf, need.len, need.offset);
			ret = qcow_meta_read_done(img, &need, ret);
			if (ret < 0)
				break;
		}
		FUZZ_ASSERT(ret != -EBUSY, "qcow_map_nowait busy with nothing in flight");
		if (want->length == 0) {
			FUZZ_ASSERT(ret < 0, "nowait map at %llu succeeded, sync map failed",
				    (unsigned long long)off);
			off += fc->info.cluster_size - (off & (fc->info.cluster_size - 1));
			continue;
		}
		FUZZ_ASSERT(ret == 0, "nowait map at %llu: %d (%s), sync map succeeded",
			    (unsigned long long)off, ret, qcow_error(img));
		FUZZ_ASSERT(e.kind == want->kind && e.length == want->length &&
			    (e.kind != QCOW_EXTENT_DATA || e.host_offset == want->host_offset) &&
			    (e.kind != QCOW_EXTENT_COMPRESSED ||
			     (e.compressed_offset == want->compressed_offset &&
			      e.compressed_length == want->compressed_length)),
			    "extent at %llu: nowait kind %d len %llu, sync kind %d len %llu",
			    (unsigned long long)off, (int)e.kind, (unsigned long long)e.length,
			    (int)want->kind, (unsigned long long)want->length);
		if (e.kind == QCOW_EXTENT_COMPRESSED)
			qcow_read_compressed_cluster(img, &e, fc->buf2);
		off += e.length;
	}
	FUZZ_ASSERT(qcow_close(img) == 0, "read-only close failed");
	memfile_free(&m);
}

/* ---------------------------------------------------------------- check */

static void count_report(void *opaque, const char *line)
{
	unsigned *n = opaque;

	FUZZ_ASSERT(line && strlen(line) < 4096, "report line");
	(*n)++;
}

static int check_mem(struct memfile *m, bool repair, struct qcow_check_result *res)
{
	struct qcow_image *img;
	unsigned lines = 0;
	int ret;

	ret = open_mem(m, !repair, true, 0, &img);
	if (ret < 0)
		return ret;
	memset(res, 0, sizeof(*res));
	ret = qcow_check(img, repair ? QCOW_CHECK_REPAIR_ALL : 0, res, count_report, &lines);
	qcow_close(img);
	return ret;
}

static void pass_check(struct fuzz_ctx *fc)
{
	struct memfile m;

	memfile_init(&m, fc->data, fc->size);
	if (check_mem(&m, false, &fc->check) == 0)
		fc->checked = true;
	memfile_free(&m);
}

static void pass_repair(struct fuzz_ctx *fc)
{
	struct qcow_check_result r1, r2;
	struct memfile m;
	int ret;

	memfile_init(&m, fc->data, fc->size);
	ret = check_mem(&m, true, &r1);
	if (ret == 0 && !r1.corruptions && !r1.leaks && !r1.check_errors) {
		ret = check_mem(&m, false, &r2);
		FUZZ_ASSERT(ret == 0, "check after a complete repair: %d", ret);
		FUZZ_ASSERT(!r2.corruptions && !r2.leaks,
			    "repair left nothing, then check found %llu corruptions, %llu leaks "
			    "(repair fixed %llu corruptions, %llu leaks)",
			    (unsigned long long)r2.corruptions, (unsigned long long)r2.leaks,
			    (unsigned long long)r1.corruptions_fixed,
			    (unsigned long long)r1.leaks_fixed);
	}
	memfile_free(&m);
}

/* Refcounts rebuilt from the metadata: on a clean image nothing is left. */
static void pass_rebuild(struct fuzz_ctx *fc)
{
	struct qcow_check_result r;
	struct qcow_image *img;
	struct memfile m;
	int ret;

	if (!fc->checked)
		return;
	memfile_init(&m, fc->data, fc->size);
	if (open_mem(&m, false, true, 0, &img) == 0) {
		ret = qcow_rebuild_refcounts(img);
		FUZZ_ASSERT(ret <= 0, "qcow_rebuild_refcounts returned %d", ret);
		ret = qcow_close(img) || ret;
		if (ret == 0 && clean(fc)) {
			ret = check_mem(&m, false, &r);
			FUZZ_ASSERT(ret == 0 && !r.corruptions && !r.leaks && !r.check_errors,
				    "check after a rebuild of a clean image: %d, %llu corruptions, "
				    "%llu leaks", ret, (unsigned long long)r.corruptions,
				    (unsigned long long)r.leaks);
		}
	}
	memfile_free(&m);
}

/* ---------------------------------------------------------------- write */

enum op_kind { OP_WRITE, OP_ASYNC_WRITE, OP_ZERO, OP_ZERO_UNMAP, OP_DISCARD, OP_FLUSH, OP_RESIZE };

struct op {
	enum op_kind kind;
	uint64_t off, len;         /* OP_RESIZE: off is the new size */
	uint8_t pat;
};

#define MAX_OPS 16

/* The writes, placed by virtual size and cluster size. */
static unsigned plan_ops(uint64_t vs, uint64_t cs, struct op *ops)
{
	unsigned n = 0;
	uint64_t q = (vs / 4) & ~(cs - 1), t = (vs / 3) & ~(cs - 1);

#define ADD(k, o, l, p) (ops[n++] = (struct op){ (k), (o), (l), (p) })
	ADD(OP_WRITE, 0, cs + 512, 0x11);                  /* a cluster and a bit */
	ADD(OP_WRITE, vs / 2 > 300 ? vs / 2 - 300 : 0, 700, 0x22); /* unaligned: COW */
	ADD(OP_ASYNC_WRITE, vs > 2 * cs + 100 ? vs - 2 * cs - 100 : 0, cs + 100, 0x33);
	ADD(OP_ZERO, cs / 2, cs, 0);                       /* partial clusters */
	ADD(OP_ZERO_UNMAP, t, 2 * cs, 0);
	ADD(OP_DISCARD, q > cs / 2 ? q - cs / 2 : 0, 3 * cs, 0); /* partial at both ends */
	ADD(OP_WRITE, q, 512, 0x44);                       /* into what was discarded */
	ADD(OP_FLUSH, 0, 0, 0);
	ADD(OP_WRITE, vs / 2 > 300 ? vs / 2 - 300 : 0, 100, 0x55); /* now in place */
	ADD(OP_ZERO, vs > cs ? vs - cs : 0, cs, 0);        /* the last cluster */
	ADD(OP_RESIZE, vs + 2 * cs + 4096, 0, 0);
	ADD(OP_WRITE, vs > 100 ? vs - 100 : 0, 300 + cs, 0x66); /* across the old end */
	ADD(OP_DISCARD, vs, 2 * cs + 4096, 0);             /* the new tail, to the end */
	ADD(OP_FLUSH, 0, 0, 0);
	ADD(OP_RESIZE, vs, 0, 0);                          /* back (refused if allocated) */
#undef ADD
	return n;
}

/* Clip an op to the disk; false if nothing is left of it. */
static bool clip(const struct op *op, uint64_t vs, uint64_t *off, uint64_t *len)
{
	*off = op->off;
	*len = op->len;
	if (*off >= vs)
		return false;
	if (*len > vs - *off)
		*len = vs - *off;
	return *len > 0;
}

static int async_write(struct qcow_image *img, const uint8_t *p, uint64_t off, uint64_t len)
{
	while (len) {
		struct qcow_write_plan plan;
		const struct qcow_file *f = qcow_get_file(img);
		int ret = qcow_write_begin(img, off, len, &plan);

		if (ret < 0)
			return ret;
		FUZZ_ASSERT(plan.length > 0 && plan.length <= len && plan.guest_offset == off,
			    "write plan %llu+%llu for %llu+%llu",
			    (unsigned long long)plan.guest_offset, (unsigned long long)plan.length,
			    (unsigned long long)off, (unsigned long long)len);
		ret = f->ops->pwrite(f->ctx, p, (size_t)plan.length, plan.host_offset);
		ret = qcow_write_end(img, &plan, ret);
		if (ret < 0)
			return ret;
		p += plan.length;
		off += plan.length;
		len -= plan.length;
	}
	return 0;
}

static int run_op(struct qcow_image *img, const struct op *op, uint64_t *vs, uint8_t *buf)
{
	uint64_t off, len, done;
	int ret = 0;

	if (op->kind == OP_FLUSH)
		return qcow_flush(img);
	if (op->kind == OP_RESIZE) {
		ret = qcow_resize(img, op->off);
		/* a shrink over allocated clusters is refused: a result too */
		if (ret == -ENOTSUP && op->off < *vs)
			return 0;
		if (ret == 0) {
			struct qcow_info info;

			qcow_get_info(img, &info);
			/* rounded up to a sector */
			FUZZ_ASSERT(info.virtual_size == ((op->off + 511) & ~511ULL),
				    "resize to %llu gave %llu", (unsigned long long)op->off,
				    (unsigned long long)info.virtual_size);
			*vs = info.virtual_size;
		}
		return ret;
	}
	if (!clip(op, *vs, &off, &len))
		return 0;
	switch (op->kind) {
	case OP_WRITE:
	case OP_ASYNC_WRITE:
		memset(buf, op->pat, READ_CHUNK);
		for (done = 0; done < len && ret == 0; ) {
			uint64_t n = len - done < READ_CHUNK ? len - done : READ_CHUNK;

			ret = op->kind == OP_WRITE ? qcow_write(img, buf, off + done, (size_t)n)
						   : async_write(img, buf, off + done, n);
			done += n;
		}
		return ret;
	case OP_ZERO:
		return qcow_write_zeroes(img, off, len, 0);
	case OP_ZERO_UNMAP:
		return qcow_write_zeroes(img, off, len, QCOW_ZERO_MAY_UNMAP);
	case OP_DISCARD:
		return qcow_discard(img, off, len);
	default:
		return 0;
	}
}

/* What byte b must read as after ops[0..n), or -1 when no op decides it. */
static int expected(const struct op *ops, unsigned n, uint64_t cs, uint64_t vs, uint64_t b)
{
	while (n--) {
		const struct op *op = &ops[n];
		uint64_t off, len, lo, hi;

		if (op->kind == OP_FLUSH || op->kind == OP_RESIZE || !clip(op, vs, &off, &len) ||
		    b < off || b >= off + len)
			continue;
		if (op->kind == OP_WRITE || op->kind == OP_ASYNC_WRITE)
			return op->pat;
		if (op->kind != OP_DISCARD)
			return 0;
		/* discard: whole clusters only (the last one is whole at the end) */
		lo = (off + cs - 1) & ~(cs - 1);
		hi = off + len == vs ? vs : (off + len) & ~(cs - 1);
		if (b >= lo && b < hi)
			return 0;
	}
	return -1;
}

/*
 * Read back [off, off+len) (at most READ_CHUNK bytes): only the runs of
 * bytes some op decided, since a byte no op decided (the partial cluster a
 * discard leaves) may sit in a compressed cluster whose stream the input
 * broke, which check does not look at.
 */
static void verify_range(struct qcow_image *img, const struct op *ops, unsigned n,
			 uint64_t cs, uint64_t vs, uint64_t off, uint64_t len, uint8_t *buf,
			 const char *when)
{
	static int16_t want[READ_CHUNK];
	uint64_t i, j, k;
	int ret;

	if (len > READ_CHUNK)
		len = READ_CHUNK;
	for (i = 0; i < len; i++)
		want[i] = (int16_t)expected(ops, n, cs, vs, off + i);
	for (i = 0; i < len; i = j) {
		if (want[i] < 0) {
			j = i + 1;
			continue;
		}
		for (j = i; j < len && want[j] >= 0; j++)
			;
		ret = qcow_read(img, buf, off + i, (size_t)(j - i));
		FUZZ_ASSERT(ret == 0, "%s: read back %llu+%llu: %d (%s)", when,
			    (unsigned long long)(off + i), (unsigned long long)(j - i), ret,
			    qcow_error(img));
		for (k = i; k < j; k++)
			FUZZ_ASSERT(buf[k - i] == want[k],
				    "%s: byte at %llu reads 0x%02x, expected 0x%02x", when,
				    (unsigned long long)(off + k), buf[k - i], want[k]);
	}
}

/* Read back both ends of every op's range. */
static void verify(struct fuzz_ctx *fc, struct qcow_image *img, const struct op *ops,
		   unsigned n, uint64_t cs, uint64_t vs, uint8_t *buf, const char *when)
{
	unsigned i;

	fc->verified++;
	for (i = 0; i < n; i++) {
		uint64_t off, len;

		if (ops[i].kind == OP_FLUSH || ops[i].kind == OP_RESIZE || !clip(&ops[i], vs, &off, &len))
			continue;
		verify_range(img, ops, n, cs, vs, off, len, buf, when);
		if (len > VERIFY_WINDOW)
			verify_range(img, ops, n, cs, vs, off + len - VERIFY_WINDOW, VERIFY_WINDOW,
				     buf, when);
	}
}

/*
 * The write workload on a fresh copy. fail_at 0: a normal run, verified on
 * clean images; else file op fail_at and later fail, then the file must
 * still check without corruption.
 */
static void run_writes(struct fuzz_ctx *fc, uint64_t fail_at)
{
	struct op ops[MAX_OPS];
	struct qcow_image *img;
	struct qcow_check_result r;
	struct qcow_info info;
	struct memfile m;
	uint64_t vs, cs;
	unsigned n, i;
	bool ok = true;
	int ret;

	memfile_init(&m, fc->data, fc->size);
	m.fail_at = fail_at;
	if (open_mem(&m, false, false, fail_at ? 1 : 0, &img) < 0) {
		/* read-only it opened: only a failing device stops read-write */
		FUZZ_ASSERT(fail_at || !fc->opened || !clean(fc),
			    "a clean image opens read-only but not read-write");
		if (fail_at)
			goto check;
		goto out;
	}
	qcow_get_info(img, &info);
	vs = info.virtual_size;
	cs = info.cluster_size;
	n = plan_ops(vs, cs, ops);
	for (i = 0; i < n && ok; i++) {
		ret = run_op(img, &ops[i], &vs, fc->buf);
		FUZZ_ASSERT(ret <= 0, "op %u returned %d", i, ret);
		if (ret < 0) {
			/* (an async write's own data write failing is our error, not
			 * the engine's: qcow_write_end passes it through unnamed) */
			FUZZ_ASSERT(qcow_error(img)[0] || ops[i].kind == OP_ASYNC_WRITE,
				    "op %u failed without a message", i);
			ok = false;
		} else if (!fail_at) {
			fc->ops_ok++;
		}
	}
	/* a resize that failed leaves the ops after it unplaced; keep the prefix */
	n = i;
	if (!fail_at && ok && clean(fc))
		verify(fc, img, ops, n, cs, vs, fc->buf2, "before close");
	ret = qcow_close(img);
	if (!fail_at) {
		fc->write_ops = m.nb_ops;
		if (!clean(fc) || !ok)
			goto out;
		FUZZ_ASSERT(ret == 0, "close after good writes: %d", ret);
		FUZZ_ASSERT(open_mem(&m, true, false, 0, &img) == 0, "reopen after writes");
		qcow_get_info(img, &info);
		FUZZ_ASSERT(info.virtual_size == vs, "virtual size %llu after resize to %llu",
			    (unsigned long long)info.virtual_size, (unsigned long long)vs);
		verify(fc, img, ops, n, cs, vs, fc->buf2, "after reopen");
		qcow_close(img);
	}
check:
	/* triage: FUZZ_DUMP=DIR keeps what the write and crash passes left */
	if (getenv("FUZZ_DUMP")) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/%s.qcow2", getenv("FUZZ_DUMP"),
			 fail_at ? "after-crash" : "after-write");
		memfile_dump(&m, path);
	}
	if (!clean(fc))
		goto out;
	/* the device is back: what is on it must be consistent */
	m.fail_at = 0;
	ret = check_mem(&m, false, &r);
	if (fail_at)
		fc->crash_checked = true;
	FUZZ_ASSERT(ret == 0, "check after %s: %d", fail_at ? "a crash" : "writes", ret);
	FUZZ_ASSERT(!r.corruptions && !r.check_errors,
		    "%llu corruptions, %llu check errors after %s (file op %llu failed first)",
		    (unsigned long long)r.corruptions, (unsigned long long)r.check_errors,
		    fail_at ? "a crash" : "clean writes and close", (unsigned long long)fail_at);
	/*
	 * Leaks are allowed, even new ones after clean writes: refcounts past
	 * the end of the input (which check cannot see) become leaks once the
	 * file grows over them, and clearing the bitmaps autoclear bit orphans
	 * the bitmap clusters.
	 */
out:
	memfile_free(&m);
}

static void pass_write(struct fuzz_ctx *fc)
{
	if (fc->opened || fc->checked)
		run_writes(fc, 0);
}

static void pass_crash(struct fuzz_ctx *fc)
{
	if (fc->write_ops) {
		fc->crash_at = 1 + fc->hash % fc->write_ops;
		run_writes(fc, fc->crash_at);
	}
}

/* ---------------------------------------------------------------- passes */

static const struct {
	const char *name;
	void (*run)(struct fuzz_ctx *fc);
} passes[] = {
	{ "read", pass_read },
	{ "nowait", pass_nowait },
	{ "check", pass_check },
	{ "repair", pass_repair },
	{ "rebuild", pass_rebuild },
	{ "write", pass_write },
	{ "crash", pass_crash },
	/* { "snapshots", pass_snapshots },  a qcow_snapshot_list() walk: next */
};

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	while (n--)
		h = (h ^ *p++) * 0x100000001b3ULL;
	return h;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_keep_stderr();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t *buf, *buf2;
	struct fuzz_ctx fc;
	size_t i;

	if (!buf) {
		buf = malloc(READ_CHUNK);
		buf2 = malloc(2U << 21);        /* a largest cluster, for compressed reads */
		if (!buf || !buf2)
			abort();
	}
	memset(&fc, 0, sizeof(fc));
	fc.data = data;
	fc.size = size;
	fc.hash = fnv1a(data, size);
	fc.buf = buf;
	fc.buf2 = buf2;
	for (i = 0; i < sizeof(passes) / sizeof(passes[0]); i++)
		passes[i].run(&fc);
	if (getenv("FUZZ_VERBOSE"))
		fprintf(stderr, "fuzz-image: open %d, check %d (%llu corruptions, %llu leaks), "
			"%u ops ok, %u read-backs, %llu file ops, crash at %llu%s\n",
			fc.opened, fc.checked, (unsigned long long)fc.check.corruptions,
			(unsigned long long)fc.check.leaks, fc.ops_ok, fc.verified,
			(unsigned long long)fc.write_ops, (unsigned long long)fc.crash_at,
			fc.crash_checked ? " (checked)" : "");
	return 0;
}
