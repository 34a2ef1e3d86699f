/* SPDX-License-Identifier: MIT */
/*
 * qcow_create for every cluster size (512 B .. 2 MiB) x refcount width
 * (1 .. 64 bits) x version (2, 3), with virtual sizes that are not cluster
 * multiples; then reopen and check qcow_get_info, the raw header bytes, a
 * first and last sector write, and (when qemu-img exists) that qemu-img
 * check is clean and qemu-img info agrees. Also: option validation, the
 * overwrite rules, defaults, and open errors.
 */
#include "qcow/engine.h"
#include "qcow/format.h"
#include "testlib.h"

static bool have_qemu;

static uint64_t align_up(uint64_t x, uint64_t a)
{
	return (x + a - 1) / a * a;
}

/* A spread of sizes; most are not multiples of the cluster size. */
static uint64_t pick_size(unsigned idx, unsigned cluster_bits)
{
	uint64_t cs = 1ULL << cluster_bits;
	uint64_t l2cov = cs / 8 * cs;

	switch (idx % 6) {
	case 0: return 1;                          /* rounds up to 512 */
	case 1: return 1000;                       /* rounds up to 1024 */
	case 2: return cs * 5 + 512 + 3;           /* partial last cluster */
	case 3: return l2cov * 2 + 3 * 512 + 7;    /* spans L2 tables, partial */
	case 4: return (1ULL << 30) + 4096 + 512;  /* 1 GiB and a bit */
	default:
		/* large, but keep the L1 table at most 1 MiB */
		{
		uint64_t big = l2cov * (1ULL << 17);
		return (big < (1ULL << 44) ? big : (1ULL << 44)) - 512;
	}
	}
}

/* Check the header bytes on disk independently of the engine. */
static void check_raw_header(const char *path, unsigned cb, unsigned rb, int ver,
			     uint64_t vsize)
{
	uint64_t cs = 1ULL << cb;
	uint64_t l2cov = cs / 8 * cs;
	uint32_t l1_size = t_be32_at(path, 36);
	uint64_t l1_off = t_be64_at(path, 40);
	uint64_t rt_off = t_be64_at(path, 48);
	uint32_t rt_clusters = t_be32_at(path, 56);
	uint64_t fsize = t_file_size(path);

	CHECK(t_be32_at(path, 0) == QCOW_MAGIC, "%s: magic", path);
	CHECK(t_be32_at(path, 4) == (uint32_t)ver, "%s: version %u", path, t_be32_at(path, 4));
	CHECK(t_be64_at(path, 8) == 0, "%s: backing offset", path);
	CHECK(t_be32_at(path, 20) == cb, "%s: cluster_bits %u", path, t_be32_at(path, 20));
	CHECK(t_be64_at(path, 24) == vsize, "%s: size %" PRIu64, path, t_be64_at(path, 24));
	CHECK(t_be32_at(path, 32) == 0, "%s: crypt_method", path);
	CHECK(l1_size >= (vsize + l2cov - 1) / l2cov, "%s: l1_size %u too small", path, l1_size);
	CHECK(l1_off && l1_off % cs == 0 && l1_off + l1_size * 8ULL <= align_up(fsize, cs),
	      "%s: l1 offset %#" PRIx64 " (file %" PRIu64 ")", path, l1_off, fsize);
	CHECK(rt_off && rt_off % cs == 0 && rt_off + rt_clusters * cs <= align_up(fsize, cs),
	      "%s: refcount table offset %#" PRIx64, path, rt_off);
	CHECK(rt_clusters >= 1, "%s: refcount_table_clusters 0", path);
	CHECK(t_be32_at(path, 60) == 0, "%s: nb_snapshots", path);
	if (ver == 3) {
		uint32_t hl = t_be32_at(path, 100);
		CHECK(t_be64_at(path, 72) == 0, "%s: incompatible features %#" PRIx64,
		      path, t_be64_at(path, 72));
		CHECK(t_be32_at(path, 96) == (uint32_t)__builtin_ctz(rb),
		      "%s: refcount_order %u", path, t_be32_at(path, 96));
		CHECK(hl == 104 || hl == 112, "%s: header_length %u", path, hl);
	}
}

static void check_info(struct qcow_image *img, const char *path, unsigned cb, unsigned rb,
		       int ver, uint64_t vsize, bool ro)
{
	struct qcow_info info;
	uint64_t cs = 1ULL << cb;
	uint64_t l2cov = cs / 8 * cs;

	memset(&info, 0xa5, sizeof(info));
	qcow_get_info(img, &info);
	CHECK(info.virtual_size == vsize, "%s: virtual_size %" PRIu64 " want %" PRIu64,
	      path, info.virtual_size, vsize);
	CHECK(info.cluster_size == cs, "%s: cluster_size %" PRIu64, path, info.cluster_size);
	CHECK(info.cluster_bits == cb, "%s: cluster_bits %u", path, info.cluster_bits);
	CHECK(info.version == (unsigned)ver, "%s: version %u", path, info.version);
	CHECK(info.refcount_bits == rb, "%s: refcount_bits %u", path, info.refcount_bits);
	CHECK(info.file_size == t_file_size(path), "%s: file_size %" PRIu64 " vs stat %" PRIu64,
	      path, info.file_size, t_file_size(path));
	CHECK(info.incompatible_features == 0, "%s: incompat %#" PRIx64, path,
	      info.incompatible_features);
	CHECK(info.compatible_features == 0, "%s: compat %#" PRIx64, path, info.compatible_features);
	CHECK(info.autoclear_features == 0, "%s: autoclear", path);
	CHECK(info.nb_snapshots == 0, "%s: nb_snapshots", path);
	CHECK(info.l1_size >= (vsize + l2cov - 1) / l2cov, "%s: l1_size %u", path, info.l1_size);
	CHECK(info.l1_table_offset == t_be64_at(path, 40), "%s: l1_table_offset", path);
	CHECK(info.refcount_table_offset == t_be64_at(path, 48), "%s: refcount_table_offset", path);
	CHECK(info.refcount_table_clusters == t_be32_at(path, 56), "%s: refcount_table_clusters",
	      path);
	CHECK(!info.dirty && !info.corrupt, "%s: dirty %d corrupt %d", path, info.dirty,
	      info.corrupt);
	CHECK(info.read_only == ro, "%s: read_only %d", path, info.read_only);
	CHECK(info.backing_file[0] == '\0' && info.backing_format[0] == '\0',
	      "%s: backing file", path);
}

/* qemu-img info --output=json must agree with what we asked for. */
static void check_qemu_info(const char *path, unsigned cb, unsigned rb, int ver,
			    uint64_t vsize)
{
	char out[16384], want[128];
	int r;

	r = t_run(out, sizeof(out), "qemu-img info -f qcow2 --output=json '%s' 2>&1", path);
	CHECK(r == 0, "qemu-img info %s: %d %s", path, r, out);
	snprintf(want, sizeof(want), "\"virtual-size\": %" PRIu64 ",", vsize);
	CHECK(strstr(out, want), "%s: qemu-img info lacks %s:\n%s", path, want, out);
	snprintf(want, sizeof(want), "\"cluster-size\": %llu,", 1ULL << cb);
	CHECK(strstr(out, want), "%s: qemu-img info lacks %s", path, want);
	snprintf(want, sizeof(want), "\"refcount-bits\": %u", rb);
	CHECK(strstr(out, want), "%s: qemu-img info lacks %s", path, want);
	snprintf(want, sizeof(want), "\"compat\": \"%s\"", ver == 3 ? "1.1" : "0.10");
	CHECK(strstr(out, want), "%s: qemu-img info lacks %s", path, want);
	CHECK(!strstr(out, "\"corrupt\": true"), "%s: qemu-img says corrupt", path);
}

/* First and last sector of the disk: write, reread after reopen. */
static void write_edges(struct qcow_image *img, const char *path, uint64_t vsize, uint8_t tag)
{
	uint8_t buf[512], back[512];
	int r;

	memset(buf, tag, sizeof(buf));
	r = qcow_write(img, buf, 0, 512);
	CHECK(r == 0, "%s: write at 0: %d %s", path, r, qcow_error(img));
	memset(buf, tag ^ 0xff, sizeof(buf));
	r = qcow_write(img, buf, vsize - 512, 512);
	CHECK(r == 0, "%s: write last sector: %d %s", path, r, qcow_error(img));
	/* one byte past the end must be refused */
	r = qcow_write(img, buf, vsize - 511, 512);
	CHECK(r < 0, "%s: write past the end returned %d", path, r);
	r = qcow_read(img, back, vsize, 1);
	CHECK(r < 0, "%s: read past the end returned %d", path, r);
	r = qcow_read(img, back, vsize - 512, 512);
	CHECK(r == 0 && memcmp(back, buf, 512) == 0, "%s: readback last sector %d", path, r);
}

static void verify_edges(struct qcow_image *img, const char *path, uint64_t vsize, uint8_t tag)
{
	uint8_t buf[512], back[512];
	int r;

	memset(buf, tag, sizeof(buf));
	r = qcow_read(img, back, 0, 512);
	/* with a one-sector disk the last-sector write replaced sector 0 */
	CHECK(r == 0 && (vsize == 512 || memcmp(back, buf, 512) == 0),
	      "%s: sector 0 after reopen (%d)", path, r);
	memset(buf, tag ^ 0xff, sizeof(buf));
	r = qcow_read(img, back, vsize - 512, 512);
	CHECK(r == 0 && memcmp(back, buf, 512) == 0, "%s: last sector after reopen (%d)", path, r);
	if (vsize > 1024) {
		memset(buf, 0, sizeof(buf));
		r = qcow_read(img, back, 512, 512);
		CHECK(r == 0 && memcmp(back, buf, 512) == 0, "%s: sector 1 not zero (%d)", path, r);
	}
}

static void one_combo(unsigned cb, unsigned rb, int ver, uint64_t size)
{
	const char *path = t_path("c%u-r%u-v%d.qcow2", cb, rb, ver);
	struct qcow_create_opts co = {
		.size = size, .cluster_bits = cb, .refcount_bits = rb, .version = ver,
	};
	struct qcow_open_opts oo = { 0 };
	struct qcow_image *img = NULL;
	uint64_t vsize = align_up(size, 512);
	char err[512] = "";
	uint8_t tag = (uint8_t)(t_rand() | 1);
	int r;

	r = qcow_create(path, &co, false, err, sizeof(err));
	if (ver == 2 && rb != 16) {
		/* v2 headers have no refcount_order: only 16-bit refcounts exist */
		CHECK(r < 0, "%s: v2 with refcount_bits %u was accepted", path, rb);
		CHECK(err[0] != '\0', "%s: refusal without a message", path);
		unlink(path);
		return;
	}
	CHECK(r == 0, "%s: create: %d %s", path, r, err);
	if (r)
		return;
	check_raw_header(path, cb, rb, ver, vsize);

	r = qcow_open(path, &oo, &img, err, sizeof(err));
	CHECK(r == 0 && img, "%s: open: %d %s", path, r, err);
	if (r || !img)
		return;
	check_info(img, path, cb, rb, ver, vsize, false);
	write_edges(img, path, vsize, tag);
	r = qcow_close(img);
	CHECK(r == 0, "%s: close: %d", path, r);

	oo.read_only = true;
	img = NULL;
	r = qcow_open(path, &oo, &img, err, sizeof(err));
	CHECK(r == 0 && img, "%s: reopen ro: %d %s", path, r, err);
	if (r || !img)
		return;
	check_info(img, path, cb, rb, ver, vsize, true);
	verify_edges(img, path, vsize, tag);
	{
		uint8_t b[512] = { 1 };
		r = qcow_write(img, b, 0, 512);
		CHECK(r < 0, "%s: write on a read-only image returned %d", path, r);
	}
	CHECK(qcow_close(img) == 0, "%s: close ro", path);

	if (have_qemu) {
		CHECK(t_qemu_check(path) == 0, "%s: qemu-img check not clean", path);
		check_qemu_info(path, cb, rb, ver, vsize);
	}
	unlink(path);
}

static void test_matrix(void)
{
	static const unsigned widths[] = { 1, 2, 4, 8, 16, 32, 64 };
	unsigned idx = (unsigned)t_rand_below(6);

	for (unsigned cb = QCOW_MIN_CLUSTER_BITS; cb <= QCOW_MAX_CLUSTER_BITS; cb++)
		for (unsigned w = 0; w < 7; w++)
			for (int ver = 2; ver <= 3; ver++)
				one_combo(cb, widths[w], ver, pick_size(idx++, cb));
}

static void expect_create_fails(const char *what, const struct qcow_create_opts *co,
				const char *words)
{
	const char *path = t_path("bad-%s.qcow2", what);
	char err[512] = "";
	int r;

	unlink(path);
	r = qcow_create(path, co, false, err, sizeof(err));
	CHECK(r < 0, "create with %s accepted", what);
	CHECK(err[0] && t_msg_has(err, words), "create with %s: message \"%s\" lacks %s",
	      what, err, words);
	unlink(path);
}

static void test_bad_options(void)
{
	struct qcow_create_opts co = { .size = 1 << 20 };

	co.cluster_bits = 8;
	expect_create_fails("cluster_bits-8", &co, "cluster");
	co.cluster_bits = 22;
	expect_create_fails("cluster_bits-22", &co, "cluster");
	co.cluster_bits = 0;
	co.refcount_bits = 3;
	expect_create_fails("refcount_bits-3", &co, "refcount");
	co.refcount_bits = 128;
	expect_create_fails("refcount_bits-128", &co, "refcount");
	co.refcount_bits = 0;
	co.version = 1;
	expect_create_fails("version-1", &co, "version|compat");
	co.version = 4;
	expect_create_fails("version-4", &co, "version|compat");
	co.version = 0;
	co.size = 1ULL << 63;
	expect_create_fails("size-2^63", &co, "size|large|big");
	co.size = 1 << 20;
	co.lazy_refcounts = true;
	expect_create_fails("lazy-refcounts", &co, "lazy");
}

static void test_defaults(void)
{
	const char *path = t_path("defaults.qcow2");
	struct qcow_create_opts co = { .size = 10 * 1000 * 1000 + 1 };
	struct qcow_image *img = NULL;
	char err[512];
	int r;

	r = qcow_create(path, &co, false, err, sizeof(err));
	REQUIRE(r == 0, "default create: %d %s", r, err);
	r = qcow_open(path, NULL, &img, err, sizeof(err));
	CHECK(r == 0 && img, "open with NULL opts: %d %s", r, err);
	if (img) {
		check_info(img, path, QCOW_DEFAULT_CLUSTER_BITS, 16, 3,
			   align_up(co.size, 512), false);
		qcow_close(img);
	}
}

static void test_overwrite_rules(void)
{
	const char *path = t_path("existing.img");
	struct qcow_create_opts co = { .size = 1 << 20, .cluster_bits = 12 };
	uint8_t junk[3000], *after;
	size_t len;
	char err[512] = "";
	int r;

	t_fill_random(junk, sizeof(junk));
	REQUIRE(t_write_file(path, junk, sizeof(junk)) == 0, "write %s", path);
	r = qcow_create(path, &co, false, err, sizeof(err));
	CHECK(r < 0, "create over a non-empty file without truncate succeeded");
	CHECK(err[0], "no message for refusing to overwrite");
	after = t_read_file(path, &len);
	CHECK(after && len == sizeof(junk) && memcmp(after, junk, len) == 0,
	      "refused create modified the file");
	free(after);

	err[0] = '\0';
	r = qcow_create(path, &co, true, err, sizeof(err));
	CHECK(r == 0, "create with truncate: %d %s", r, err);
	CHECK(t_be32_at(path, 0) == QCOW_MAGIC, "truncating create wrote no header");

	/* an existing empty file may be used without truncate */
	REQUIRE(t_write_file(path, junk, 0) == 0, "empty %s", path);
	r = qcow_create(path, &co, false, err, sizeof(err));
	CHECK(r == 0, "create on an empty file: %d %s", r, err);
	if (have_qemu)
		CHECK(t_qemu_check(path) == 0, "create on empty file: qemu-img check");
}

static void test_create_file(void)
{
	const char *path = t_path("via-file.qcow2");
	struct qcow_create_opts co = { .size = 3 << 20, .cluster_bits = 9, .refcount_bits = 1 };
	struct qcow_file f;
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r;

	r = qcow_file_open_posix(path, O_RDWR | O_CREAT | O_EXCL, &f);
	REQUIRE(r == 0, "qcow_file_open_posix: %d", r);
	CHECK(f.fd >= 0, "posix backend without fd");
	r = qcow_create_file(&f, "via-file", &co, err, sizeof(err));
	CHECK(r == 0, "qcow_create_file: %d %s", r, err);
	/* the image takes ownership of the file on open */
	r = qcow_open_file(&f, path, NULL, &img, err, sizeof(err));
	CHECK(r == 0 && img, "qcow_open_file: %d %s", r, err);
	if (img) {
		check_info(img, path, 9, 1, 3, 3 << 20, false);
		CHECK(qcow_get_file(img) && qcow_get_file(img)->fd >= 0, "qcow_get_file");
		qcow_close(img);
	}
	if (have_qemu)
		CHECK(t_qemu_check(path) == 0, "qcow_create_file image not clean");
}

static void test_open_errors(void)
{
	struct qcow_image *img = (struct qcow_image *)0x1;
	char err[512] = "";
	const char *path = t_path("does-not-exist.qcow2");
	int r;

	r = qcow_open(path, NULL, &img, err, sizeof(err));
	CHECK(r == -ENOENT, "open missing file: %d", r);
	CHECK(img == NULL, "*out not NULL after failed open");
	CHECK(strstr(err, "does-not-exist"), "message \"%s\" does not name the file", err);

	/* a raw file full of zeros is not an image */
	path = t_path("zeros.raw");
	{
		static uint8_t z[65536];
		REQUIRE(t_write_file(path, z, sizeof(z)) == 0, "write zeros");
	}
	img = NULL;
	err[0] = '\0';
	r = qcow_open(path, NULL, &img, err, sizeof(err));
	CHECK(r < 0 && !img, "open of a zero-filled file: %d", r);
	CHECK(err[0] && strstr(err, "zeros.raw"), "message \"%s\"", err);

	/* a tiny errlen must not overflow */
	{
		char small[8];
		memset(small, 'x', sizeof(small));
		r = qcow_open(path, NULL, &img, small, 4);
		CHECK(r < 0, "second open of zeros");
		CHECK(memchr(small, '\0', 4) && small[4] == 'x', "errlen not respected");
	}
}

int main(void)
{
	t_init("create-open");
	have_qemu = t_want_qemu();
	test_bad_options();
	test_defaults();
	test_overwrite_rules();
	test_create_file();
	test_open_errors();
	test_matrix();
	return t_finish();
}
