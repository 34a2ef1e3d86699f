/* SPDX-License-Identifier: MIT */
/*
 * Direct IO (format/file_posix.c): an image opened with O_DIRECT, as the
 * daemon opens it by default (--cache=none), takes the engine's IO as a
 * buffered one does.  The engine's IO is mostly unaligned (an L1 entry, a
 * refcount, a header field, a guest write of a few bytes), and goes
 * through the backend's aligned bounce buffer.
 *
 * Two images, one opened with O_DIRECT and one buffered, get the same
 * random writes (any byte offset and length), zeroing, discards, flushes
 * and reads, checked against a model; after a close both files must be
 * byte for byte the same (the same engine on the same operations: a
 * bounce that wrote a wrong byte shows here), except that the direct one
 * may run on to the end of its last block, with zeros,
 * and qemu-img check finds them clean.  Then direct IO turned off on an
 * open image (qcow_use_page_cache, the daemon's fallback) keeps working.
 *
 * Skips where the scratch directory's file system refuses O_DIRECT.
 */
#include <fcntl.h>

#include "internal.h"
#include "testlib.h"

#define DISK (24u << 20)
#define MAX_IO (200u << 10)

struct side {
	const char *path;
	struct qcow_image *img;
};

static void open_side(struct side *s, int flags, unsigned cluster_bits)
{
	struct qcow_open_opts oo = { .l2_cache_bytes = 2ull << cluster_bits };
	struct qcow_file file;
	char err[512] = "";
	int r;

	r = qcow_file_open_posix(s->path, O_RDWR | flags, &file);
	if (r == -EINVAL && (flags & O_DIRECT)) {
		printf("SKIP: the file system of %s refuses O_DIRECT\n", s->path);
		exit(T_SKIP);
	}
	REQUIRE(r == 0, "open %s: %d", s->path, r);
	if (flags & O_DIRECT)
		CHECK(file.dio_off_align >= 512 && file.dio_mem_align >= 1,
		      "O_DIRECT file without its alignment: %u %u", file.dio_off_align,
		      file.dio_mem_align);
	else
		CHECK(!file.dio_off_align, "buffered file with a direct IO alignment");
	r = qcow_open_file(&file, s->path, &oo, &s->img, err, sizeof(err));
	REQUIRE(r == 0, "engine open %s: %d %s", s->path, r, err);
}

/* One random operation on both images; the model follows. */
static void random_op(struct side *sides, uint8_t *model, uint8_t *buf, uint8_t *back)
{
	unsigned pick = (unsigned)t_rand_below(10), i;
	uint64_t off = t_rand_below(DISK - 1), len = 1 + t_rand_below(MAX_IO);
	int r[2];

	if (len > DISK - off)
		len = DISK - off;
	if (pick < 5) {
		t_fill_random(buf, len);
		for (i = 0; i < 2; i++)
			r[i] = qcow_write(sides[i].img, buf, off, len);
		memcpy(model + off, buf, len);
	} else if (pick < 6) {
		for (i = 0; i < 2; i++)
			r[i] = qcow_write_zeroes(sides[i].img, off, len, QCOW_ZERO_MAY_UNMAP);
		memset(model + off, 0, len);
	} else if (pick < 7) {
		/* whole clusters read as zeros afterwards, partial ones may not:
		 * read the model back from the engine, which the other checks trust */
		for (i = 0; i < 2; i++)
			r[i] = qcow_discard(sides[i].img, off, len);
		CHECK(qcow_read(sides[1].img, model + off, off, len) == 0, "read after discard");
	} else if (pick < 8) {
		for (i = 0; i < 2; i++)
			r[i] = qcow_flush(sides[i].img);
	} else {
		for (i = 0; i < 2; i++) {
			r[i] = qcow_read(sides[i].img, back, off, len);
			CHECK(r[i] != 0 || t_first_diff(back, model + off, len) < 0,
			      "%s: read of %llu bytes at %llu differs from the model at +%lld",
			      sides[i].path, (unsigned long long)len, (unsigned long long)off,
			      (long long)t_first_diff(back, model + off, len));
		}
	}
	CHECK(r[0] == 0 && r[1] == 0, "op %u at %llu+%llu: direct %d, buffered %d", pick,
	      (unsigned long long)off, (unsigned long long)len, r[0], r[1]);
}

static bool all_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

static void run(unsigned cluster_bits, unsigned ops)
{
	struct qcow_create_opts co = { .size = DISK, .cluster_bits = cluster_bits };
	struct side sides[2] = { { t_path("direct-%u.qcow2", cluster_bits), NULL },
				 { t_path("buffered-%u.qcow2", cluster_bits), NULL } };
	uint8_t *model = calloc(1, DISK), *buf = malloc(MAX_IO), *back = malloc(MAX_IO);
	uint8_t *a, *b;
	size_t na, nb;
	char err[512] = "";
	unsigned i, blk;

	REQUIRE(model && buf && back, "malloc");
	for (i = 0; i < 2; i++)
		REQUIRE(qcow_create(sides[i].path, &co, true, err, sizeof(err)) == 0, "create: %s",
			err);
	open_side(&sides[0], O_DIRECT, cluster_bits);
	open_side(&sides[1], 0, cluster_bits);
	for (i = 0; i < ops; i++)
		random_op(sides, model, buf, back);
	blk = sides[0].img->file.dio_off_align;
	for (i = 0; i < 2; i++)
		CHECK(qcow_close(sides[i].img) == 0, "close %s", sides[i].path);
	a = t_read_file(sides[0].path, &na);
	b = t_read_file(sides[1].path, &nb);
	REQUIRE(a && b, "reading the files back");
	/* A file ends where its last write did, and a direct write covers whole
	 * blocks: the direct file may be longer by less than a block, with
	 * zeros, which is what the buffered file reads past its end. */
	CHECK(na >= nb && na - nb < blk && t_first_diff(a, b, nb) < 0 && all_zero(a + nb, na - nb),
	      "%u-byte clusters: the direct file (%zu bytes) differs from the buffered one (%zu "
	      "bytes) at %lld", 1u << cluster_bits, na, nb, (long long)t_first_diff(a, b, nb));
	if (t_want_qemu())
		CHECK(t_qemu_check(sides[0].path) == 0, "qemu-img check %s", sides[0].path);
	printf("%u-byte clusters: %u operations, direct and buffered files equal (%zu bytes)\n",
	       1u << cluster_bits, ops, na);
	free(a);
	free(b);
	free(model);
	free(buf);
	free(back);
}

/* The daemon's fallback: direct IO turned off on an open image. */
static void page_cache_fallback(void)
{
	struct qcow_create_opts co = { .size = DISK, .cluster_bits = 16 };
	struct side s = { t_path("fallback.qcow2"), NULL };
	uint8_t data[3000], back[3000];
	char err[512] = "";

	REQUIRE(qcow_create(s.path, &co, true, err, sizeof(err)) == 0, "create: %s", err);
	open_side(&s, O_DIRECT, 16);
	CHECK(qcow_use_page_cache(s.img) == 0, "qcow_use_page_cache");
	CHECK(!qcow_get_file(s.img)->dio_off_align, "alignment still set after the fallback");
	CHECK(!(fcntl(qcow_get_file(s.img)->fd, F_GETFL) & O_DIRECT), "O_DIRECT still set");
	t_fill_random(data, sizeof(data));
	CHECK(qcow_write(s.img, data, 12345, sizeof(data)) == 0 &&
	      qcow_read(s.img, back, 12345, sizeof(back)) == 0 && !memcmp(data, back, sizeof(data)),
	      "IO after the fallback");
	CHECK(qcow_close(s.img) == 0, "close");
}

int main(void)
{
	unsigned ops = (unsigned)t_env_u64("DIRECT_IO_OPS", 1500);

	t_init("direct-io");
	run(16, ops);
	run(12, ops);
	page_cache_fallback();
	return t_finish();
}
