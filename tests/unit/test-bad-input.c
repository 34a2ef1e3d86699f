/* SPDX-License-Identifier: MIT */
/*
 * Hostile images. Starting from valid images (one made by qcow_create and
 * written by the engine, one made by qemu-img/qemu-io when available), patch
 * bytes in a copy and:
 *  - header damage: open (read-write and read-only) must fail with a message
 *    that names the file and the problem, and the file must be byte-for-byte
 *    unchanged afterwards (a for_check open must not crash or write either);
 *  - table damage that open may legally accept (L1/L2/refcount entries past
 *    EOF, into the header, misaligned, pointing at the L1 table, the
 *    refcount table or themselves, bad compressed entries): reads, writes,
 *    flush and close must not crash and must not overwrite the header, the
 *    L1 table, the refcount table or the L2 table, and qcow_check must report
 *    the problem;
 *  - header damage that qemu-img check reports instead of refusing (the L1
 *    or refcount table past EOF or in the header): normal opens refuse it,
 *    a check open accepts it, qcow_check reports corruption, and a repair
 *    rebuilds a lost refcount table but writes nothing when the L1 table
 *    is lost (its L2 tables and data would look leaked).
 */
#include "internal.h"
#include "testlib.h"

struct layout {
	uint64_t cs, fsize, size;
	unsigned cb;
	uint32_t hl, l1_size, rt_clusters;
	uint64_t l1_off, rt_off, l2_off, data_off, rb_off;
};

static void read_layout(const char *path, struct layout *L)
{
	memset(L, 0, sizeof(*L));
	L->cb = t_be32_at(path, 20);
	REQUIRE(L->cb >= 9 && L->cb <= 21, "base image cluster_bits %u", L->cb);
	L->cs = 1ULL << L->cb;
	L->fsize = t_file_size(path);
	L->size = t_be64_at(path, 24);
	L->l1_size = t_be32_at(path, 36);
	L->l1_off = t_be64_at(path, 40);
	L->rt_off = t_be64_at(path, 48);
	L->rt_clusters = t_be32_at(path, 56);
	L->hl = t_be32_at(path, 4) >= 3 ? t_be32_at(path, 100) : 72;
	L->l2_off = t_be64_at(path, L->l1_off) & QCOW_L1E_OFFSET_MASK;
	REQUIRE(L->l2_off, "%s: no L2 table for guest 0", path);
	L->data_off = t_be64_at(path, L->l2_off) & QCOW_L2E_OFFSET_MASK;
	REQUIRE(L->data_off, "%s: guest cluster 0 not allocated", path);
	L->rb_off = t_be64_at(path, L->rt_off) & QCOW_REFT_OFFSET_MASK;
	REQUIRE(L->rb_off, "%s: no refcount block 0", path);
}

/* ------------------------------------------------------------ header damage */

enum hcase {
	H_TRUNC0, H_TRUNC10, H_TRUNC71, H_TRUNC_HALF, H_MAGIC, H_VERSION1, H_VERSION4,
	H_CB8, H_CB22, H_CB255, H_RORDER7, H_HLEN100, H_HLEN_ODD, H_HLEN_HUGE,
	H_L1SIZE_HUGE, H_L1SIZE_SMALL, H_L1_MISALIGNED, H_L1_PAST_EOF, H_L1_ZERO,
	H_RT_MISALIGNED, H_RT_PAST_EOF, H_RT_ZERO, H_RTC_ZERO, H_RTC_HUGE, H_SIZE_2_63,
	H_CRYPT_AES, H_CRYPT_LUKS, H_DATA_FILE, H_EXTL2, H_CTYPE2, H_CTYPE_NO_BIT,
	H_UNKNOWN_BIT7, H_BACKING_PAST_CLUSTER, H_BACKING_5000, H_EXT_PAST_CLUSTER,
	H_EXT_HUGE, H_NB_SNAP_HUGE, H_SNAP_PAST_EOF, H_CTYPE_BIT_ZLIB, H_CTYPE_BIT_HLEN104,
	H_BACKING_FAR_SIZE0, H_BACKING_CLUSTER_END_SIZE0, H_NCASES
};

static const struct {
	const char *name;
	const char *words;      /* the message must contain one of these */
} hcases[H_NCASES] = {
	[H_TRUNC0] = { "truncated-0", "short|trunc|small|empty|end of file|header" },
	[H_TRUNC10] = { "truncated-10", "short|trunc|small|end of file|header" },
	[H_TRUNC71] = { "truncated-71", "short|trunc|small|end of file|header" },
	[H_TRUNC_HALF] = { "truncated-half-cluster",
			   "end of file|past|beyond|outside|trunc|short|L1|refcount" },
	[H_MAGIC] = { "bad-magic", "magic|not a qcow" },
	[H_VERSION1] = { "version-1", "version" },
	[H_VERSION4] = { "version-4", "version" },
	[H_CB8] = { "cluster_bits-8", "cluster" },
	[H_CB22] = { "cluster_bits-22", "cluster" },
	[H_CB255] = { "cluster_bits-255", "cluster" },
	[H_RORDER7] = { "refcount_order-7", "refcount" },
	[H_HLEN100] = { "header_length-100", "header" },
	[H_HLEN_ODD] = { "header_length-odd", "header" },
	[H_HLEN_HUGE] = { "header_length-huge", "header" },
	[H_L1SIZE_HUGE] = { "l1_size-huge", "L1" },
	[H_L1SIZE_SMALL] = { "l1_size-too-small", "L1" },
	[H_L1_MISALIGNED] = { "l1-offset-misaligned", "L1" },
	[H_L1_PAST_EOF] = { "l1-offset-past-eof", "L1" },
	[H_L1_ZERO] = { "l1-offset-0", "L1" },
	[H_RT_MISALIGNED] = { "reftable-offset-misaligned", "refcount" },
	[H_RT_PAST_EOF] = { "reftable-offset-past-eof", "refcount" },
	[H_RT_ZERO] = { "reftable-offset-0", "refcount" },
	[H_RTC_ZERO] = { "refcount_table_clusters-0", "refcount" },
	[H_RTC_HUGE] = { "refcount_table_clusters-huge", "refcount" },
	[H_SIZE_2_63] = { "size-2^63", "size" },
	[H_CRYPT_AES] = { "crypt-aes", "encrypt" },
	[H_CRYPT_LUKS] = { "crypt-luks", "encrypt" },
	[H_DATA_FILE] = { "incompat-data-file", "data file|data-file|data_file" },
	[H_EXTL2] = { "incompat-extended-l2", "extended L2|extended_l2|extended-l2|subcluster" },
	[H_CTYPE2] = { "compression-type-2", "compression type 2" },
	[H_CTYPE_NO_BIT] = { "compression-type-without-bit", "compression" },
	[H_UNKNOWN_BIT7] = { "incompat-unknown-bit-7", "bit 7|unknown" },
	[H_BACKING_PAST_CLUSTER] = { "backing-offset-past-cluster", "backing" },
	[H_BACKING_5000] = { "backing-length-5000", "backing" },
	[H_EXT_PAST_CLUSTER] = { "extension-past-cluster", "extension" },
	[H_EXT_HUGE] = { "extension-length-huge", "extension" },
	[H_NB_SNAP_HUGE] = { "nb_snapshots-huge", "snapshot" },
	[H_SNAP_PAST_EOF] = { "snapshots-past-eof", "snapshot" },
	/* qemu: "Compression type incompatible feature bit must not be set" */
	[H_CTYPE_BIT_ZLIB] = { "compression-bit-with-zlib", "compression type feature bit" },
	[H_CTYPE_BIT_HLEN104] = { "compression-bit-104-byte-header",
				  "compression type feature bit" },
	/* qemu: "Invalid backing file offset", whatever backing_file_size says */
	[H_BACKING_FAR_SIZE0] = { "backing-offset-0x10000000-size-0", "backing_file_offset" },
	[H_BACKING_CLUSTER_END_SIZE0] = { "backing-offset-past-cluster-size-0",
					  "backing_file_offset" },
};

/* Give the header a compression_type byte (header_length 112) if it lacks one. */
static int ensure_hlen_112(const char *path, const struct layout *L)
{
	uint8_t *area;
	int r;

	if (L->hl >= 112)
		return 0;
	if (L->hl != 104)
		return -1;
	area = calloc(1, L->cs);
	if (!area)
		return -1;
	t_read_at(path, 104, area, L->cs - 112);
	r = t_patch(path, 112, area, L->cs - 112);
	memset(area, 0, 8);
	r |= t_patch(path, 104, area, 8);
	r |= t_patch_be32(path, 100, 112);
	free(area);
	return r ? -1 : 0;
}

/* Apply case c to path; returns -1 when the case cannot apply to this base. */
static int apply_hcase(enum hcase c, const char *path, const struct layout *L)
{
	uint64_t past = QCOW_ALIGN_UP(L->fsize, L->cs) + 64 * L->cs;
	uint64_t incompat = t_be64_at(path, 72);
	uint64_t l2cov = L->cs / 8 * L->cs;
	bool v3 = t_be32_at(path, 4) >= 3;

	switch (c) {
	case H_TRUNC0: return truncate(path, 0);
	case H_TRUNC10: return truncate(path, 10);
	case H_TRUNC71: return truncate(path, 71);
	case H_TRUNC_HALF: return truncate(path, L->cs / 2);
	case H_MAGIC: return t_patch_be32(path, 0, 0x514649fa);
	case H_VERSION1: return t_patch_be32(path, 4, 1);
	case H_VERSION4: return t_patch_be32(path, 4, 4);
	case H_CB8: return t_patch_be32(path, 20, 8);
	case H_CB22: return t_patch_be32(path, 20, 22);
	case H_CB255: return t_patch_be32(path, 20, 255);
	case H_RORDER7: return v3 ? t_patch_be32(path, 96, 7) : -1;
	case H_HLEN100: return v3 ? t_patch_be32(path, 100, 100) : -1;
	case H_HLEN_ODD: return v3 ? t_patch_be32(path, 100, 105) : -1;
	case H_HLEN_HUGE: return v3 ? t_patch_be32(path, 100, 0x7ffffff8) : -1;
	case H_L1SIZE_HUGE: return t_patch_be32(path, 36, 0x7fffffff);
	case H_L1SIZE_SMALL:
		return t_patch_be32(path, 36, (uint32_t)(QCOW_DIV_ROUND_UP(L->size, l2cov) - 1));
	case H_L1_MISALIGNED: return t_patch_be64(path, 40, L->l1_off + 512);
	case H_L1_PAST_EOF: return t_patch_be64(path, 40, past);
	case H_L1_ZERO: return t_patch_be64(path, 40, 0);
	case H_RT_MISALIGNED: return t_patch_be64(path, 48, L->rt_off + 512);
	case H_RT_PAST_EOF: return t_patch_be64(path, 48, past);
	case H_RT_ZERO: return t_patch_be64(path, 48, 0);
	case H_RTC_ZERO: return t_patch_be32(path, 56, 0);
	case H_RTC_HUGE: return t_patch_be32(path, 56, 0xffffffff);
	case H_SIZE_2_63: return t_patch_be64(path, 24, 1ULL << 63);
	case H_CRYPT_AES: return t_patch_be32(path, 32, 1);
	case H_CRYPT_LUKS: return t_patch_be32(path, 32, 2);
	case H_DATA_FILE: return v3 ? t_patch_be64(path, 72, incompat | QCOW_INCOMPAT_DATA_FILE) : -1;
	case H_EXTL2: return v3 ? t_patch_be64(path, 72, incompat | QCOW_INCOMPAT_EXTL2) : -1;
	case H_CTYPE2:
		if (!v3 || ensure_hlen_112(path, L))
			return -1;
		return t_patch_be64(path, 72, incompat | QCOW_INCOMPAT_COMPRESSION) |
		       t_patch(path, 104, "\x02", 1);
	case H_CTYPE_NO_BIT:
		if (!v3 || ensure_hlen_112(path, L))
			return -1;
		return t_patch(path, 104, "\x01", 1);
	case H_UNKNOWN_BIT7: return v3 ? t_patch_be64(path, 72, incompat | (1ULL << 7)) : -1;
	case H_BACKING_PAST_CLUSTER:
		return t_patch_be64(path, 8, L->cs + 16) | t_patch_be32(path, 16, 8);
	case H_BACKING_5000:
		if (L->cs < 8192)
			return -1;
		return t_patch_be64(path, 8, 2048) | t_patch_be32(path, 16, 5000);
	case H_EXT_PAST_CLUSTER:
		return t_patch_be32(path, L->hl, 0x12345678) |
		       t_patch_be32(path, L->hl + 4, (uint32_t)L->cs);
	case H_EXT_HUGE:
		return t_patch_be32(path, L->hl, 0x12345678) |
		       t_patch_be32(path, L->hl + 4, 0xfffffff8);
	case H_NB_SNAP_HUGE:
		return t_patch_be32(path, 60, 0xffffffff) | t_patch_be64(path, 64, L->l1_off);
	case H_SNAP_PAST_EOF:
		return t_patch_be32(path, 60, 1) | t_patch_be64(path, 64, past);
	case H_CTYPE_BIT_ZLIB:
		if (!v3 || ensure_hlen_112(path, L))
			return -1;
		return t_patch_be64(path, 72, incompat | QCOW_INCOMPAT_COMPRESSION) |
		       t_patch(path, 104, "\0", 1);
	case H_CTYPE_BIT_HLEN104:
		/* bytes 104.. become the extension area: an end marker (zeros) */
		if (!v3)
			return -1;
		return t_patch_be64(path, 72, incompat | QCOW_INCOMPAT_COMPRESSION) |
		       t_patch_be32(path, 100, 104) | t_patch(path, 104, "\0\0\0\0\0\0\0\0", 8);
	case H_BACKING_FAR_SIZE0:
		return t_patch_be64(path, 8, 0x10000000) | t_patch_be32(path, 16, 0);
	case H_BACKING_CLUSTER_END_SIZE0:
		return t_patch_be64(path, 8, L->cs + 8) | t_patch_be32(path, 16, 0);
	default:
		return -1;
	}
}

static void expect_refused(const char *base, const char *tag, enum hcase c)
{
	const char *path = t_path("%s-%s.qcow2", tag, hcases[c].name);
	const char *fname = strrchr(path, '/') + 1;
	struct layout L;
	struct qcow_image *img;
	struct qcow_open_opts ro = { .read_only = true }, chk = { .read_only = true, .for_check = true };
	uint8_t *before, *after;
	size_t blen, alen;
	char err[512];
	int r;

	REQUIRE(t_copy_file(base, path) == 0, "copy %s", base);
	read_layout(path, &L);
	if (apply_hcase(c, path, &L)) {
		printf("  %s/%s: does not apply to this base, skipped\n", tag, hcases[c].name);
		unlink(path);
		return;
	}
	before = t_read_file(path, &blen);
	REQUIRE(before, "read %s", path);

	for (int mode = 0; mode < 2; mode++) {
		img = NULL;
		memset(err, 0, sizeof(err));
		r = qcow_open(path, mode ? &ro : NULL, &img, err, sizeof(err));
		CHECK(r < 0 && img == NULL, "%s/%s: %s open accepted the image", tag,
		      hcases[c].name, mode ? "read-only" : "read-write");
		if (img) {
			qcow_close(img);
			continue;
		}
		if (mode == 0)
			printf("  %s/%s: %s\n", tag, hcases[c].name, err);
		CHECK(t_msg_has(err, hcases[c].words), "%s/%s: message \"%s\" lacks any of \"%s\"",
		      tag, hcases[c].name, err, hcases[c].words);
		CHECK(strstr(err, fname), "%s/%s: message \"%s\" does not name the file", tag,
		      hcases[c].name, err);
	}
	/* a check-mode open may be more lenient but must stay safe */
	img = NULL;
	if (qcow_open(path, &chk, &img, err, sizeof(err)) == 0 && img) {
		struct qcow_check_result res;
		memset(&res, 0, sizeof(res));
		qcow_check(img, 0, &res, NULL, NULL);
		qcow_close(img);
	}
	after = t_read_file(path, &alen);
	CHECK(after && alen == blen && memcmp(before, after, blen) == 0,
	      "%s/%s: refusing the image modified the file", tag, hcases[c].name);
	free(before);
	free(after);
	unlink(path);
}

/* ------------------------------------------- header damage a check reports */

/*
 * qemu-img check opens these and reports corruption (exit 2); so must a
 * check open. Normal opens still refuse them (expect_refused). -r all
 * rebuilds a refcount table that is gone; with the L1 table gone nothing
 * can be repaired safely and the file must stay as it was.
 */
static void expect_check_reports(const char *base, const char *tag, enum hcase c)
{
	const char *path = t_path("%s-check-%s.qcow2", tag, hcases[c].name);
	struct qcow_open_opts ro = { .read_only = true, .for_check = true };
	struct qcow_open_opts rw = { .for_check = true };
	bool l1_case = c == H_L1_PAST_EOF || c == H_L1_ZERO;
	struct qcow_check_result res;
	struct qcow_image *img = NULL;
	uint8_t *before, *after, *data;
	size_t blen, alen;
	struct layout L;
	char err[512] = "";
	int r;

	REQUIRE(t_copy_file(base, path) == 0, "copy %s", base);
	read_layout(path, &L);
	REQUIRE(apply_hcase(c, path, &L) == 0, "patch %s", path);
	before = t_read_file(path, &blen);
	REQUIRE(before, "read %s", path);

	/* read-only check: corruption reported, no check error, nothing written */
	r = qcow_open(path, &ro, &img, err, sizeof(err));
	CHECK(r == 0 && img, "%s/%s: check open refused: %s", tag, hcases[c].name, err);
	if (img) {
		memset(&res, 0, sizeof(res));
		r = qcow_check(img, 0, &res, NULL, NULL);
		printf("  %s/check-%s: rc %d corruptions %" PRIu64 " leaks %" PRIu64
		       " check errors %" PRIu64 "\n", tag, hcases[c].name, r, res.corruptions,
		       res.leaks, res.check_errors);
		CHECK(r == 0 && res.corruptions > 0 && res.check_errors == 0,
		      "%s/%s: check: rc %d, %" PRIu64 " corruptions, %" PRIu64 " check errors", tag,
		      hcases[c].name, r, res.corruptions, res.check_errors);
		qcow_close(img);
	}
	if (t_have_prog("qemu-img"))
		CHECK(t_run(NULL, 0, "qemu-img check -f qcow2 '%s' >/dev/null 2>&1", path) == 2,
		      "%s/%s: qemu-img check does not say corrupt (test premise)", tag,
		      hcases[c].name);
	after = t_read_file(path, &alen);
	CHECK(after && alen == blen && !memcmp(before, after, blen),
	      "%s/%s: read-only check modified the file", tag, hcases[c].name);
	free(after);

	/* repair */
	img = NULL;
	r = qcow_open(path, &rw, &img, err, sizeof(err));
	CHECK(r == 0 && img, "%s/%s: writable check open refused: %s", tag, hcases[c].name, err);
	if (img) {
		memset(&res, 0, sizeof(res));
		r = qcow_check(img, QCOW_CHECK_REPAIR_ALL, &res, NULL, NULL);
		printf("  %s/check-%s -r all: rc %d corruptions %" PRIu64 " fixed %" PRIu64 "\n",
		       tag, hcases[c].name, r, res.corruptions, res.corruptions_fixed);
		if (l1_case)
			CHECK(r == 0 && res.corruptions > 0 && !res.corruptions_fixed &&
			      !res.leaks_fixed,
			      "%s/%s: repair with the L1 table lost: rc %d, %" PRIu64 " corruptions left, "
			      "%" PRIu64 " fixed", tag, hcases[c].name, r, res.corruptions,
			      res.corruptions_fixed);
		else
			CHECK(r == 0 && res.corruptions == 0 && res.leaks == 0 &&
			      res.check_errors == 0,
			      "%s/%s: repair: rc %d, %" PRIu64 " corruptions, %" PRIu64 " leaks left", tag,
			      hcases[c].name, r, res.corruptions, res.leaks);
		CHECK(qcow_close(img) == 0, "%s/%s: close after repair", tag, hcases[c].name);
	}
	after = t_read_file(path, &alen);
	REQUIRE(after, "read back %s", path);
	if (l1_case) {
		CHECK(alen == blen && !memcmp(before, after, blen),
		      "%s/%s: repair with the L1 table lost modified the file", tag, hcases[c].name);
	} else {
		/* the rebuilt image opens normally, with its data */
		img = NULL;
		r = qcow_open(path, NULL, &img, err, sizeof(err));
		CHECK(r == 0, "%s/%s: open after repair: %s", tag, hcases[c].name, err);
		data = malloc(128 << 10);
		REQUIRE(data, "oom");
		if (img) {
			CHECK(qcow_read(img, data, 0, 128 << 10) == 0, "%s/%s: read after repair",
			      tag, hcases[c].name);
			for (size_t i = 0; i < (128 << 10); i++) {
				if (data[i] != 0x11) {
					CHECK(0, "%s/%s: byte %zu is 0x%02x after repair", tag,
					      hcases[c].name, i, data[i]);
					break;
				}
			}
			qcow_close(img);
		}
		free(data);
		if (t_have_prog("qemu-img"))
			CHECK(t_qemu_check(path) == 0, "%s/%s: qemu-img check after repair", tag,
			      hcases[c].name);
	}
	free(after);
	free(before);
	unlink(path);
}

/* ------------------------------------------------------------ table damage */

enum tcase {
	T_L1_PAST_EOF, T_L1_HEADER, T_L1_SELF, T_L1_REFTABLE, T_L1_RESERVED,
	T_L2_PAST_EOF, T_L2_MISALIGNED, T_L2_HEADER, T_L2_L1, T_L2_REFTABLE, T_L2_SELF,
	T_L2_RESERVED, T_L2_COMP_PAST_EOF, T_L2_COMP_HEADER,
	T_RT_SELF, T_RT_PAST_EOF, T_RT_MISALIGNED, T_RT_ZERO, T_RT_L1, T_NTCASES
};

static const char *const tnames[T_NTCASES] = {
	[T_L1_PAST_EOF] = "l1e-past-eof", [T_L1_HEADER] = "l1e-into-header",
	[T_L1_SELF] = "l1e-at-l1-table", [T_L1_REFTABLE] = "l1e-at-reftable",
	[T_L1_RESERVED] = "l1e-reserved-bits",
	[T_L2_PAST_EOF] = "l2e-past-eof", [T_L2_MISALIGNED] = "l2e-misaligned",
	[T_L2_HEADER] = "l2e-into-header", [T_L2_L1] = "l2e-at-l1-table",
	[T_L2_REFTABLE] = "l2e-at-reftable", [T_L2_SELF] = "l2e-at-own-l2-table",
	[T_L2_RESERVED] = "l2e-reserved-bits",
	[T_L2_COMP_PAST_EOF] = "l2e-compressed-past-eof",
	[T_L2_COMP_HEADER] = "l2e-compressed-in-header",
	[T_RT_SELF] = "reft-at-reftable", [T_RT_PAST_EOF] = "reft-past-eof",
	[T_RT_MISALIGNED] = "reft-misaligned", [T_RT_ZERO] = "reft-zero",
	[T_RT_L1] = "reft-at-l1-table",
};

static uint64_t compressed_entry(const struct layout *L, uint64_t off, uint64_t nsect)
{
	unsigned x = 62 - (L->cb - 8);
	return QCOW_OFLAG_COMPRESSED | (nsect << x) | (off & ((1ULL << x) - 1));
}

static void apply_tcase(enum tcase c, const char *path, const struct layout *L)
{
	uint64_t past = QCOW_ALIGN_UP(L->fsize, L->cs) + 64 * L->cs;
	const uint64_t cp = QCOW_OFLAG_COPIED;
	uint64_t l1e = t_be64_at(path, L->l1_off), l2e = t_be64_at(path, L->l2_off);
	uint64_t rte = t_be64_at(path, L->rt_off);
	int r = 0;

	switch (c) {
	case T_L1_PAST_EOF: r = t_patch_be64(path, L->l1_off, cp | past); break;
	case T_L1_HEADER: r = t_patch_be64(path, L->l1_off, cp | 512); break;
	case T_L1_SELF: r = t_patch_be64(path, L->l1_off, cp | L->l1_off); break;
	case T_L1_REFTABLE: r = t_patch_be64(path, L->l1_off, cp | L->rt_off); break;
	case T_L1_RESERVED: r = t_patch_be64(path, L->l1_off, l1e | (1ULL << 58)); break;
	case T_L2_PAST_EOF: r = t_patch_be64(path, L->l2_off, cp | past); break;
	case T_L2_MISALIGNED: r = t_patch_be64(path, L->l2_off, cp | (L->data_off + 512)); break;
	case T_L2_HEADER: r = t_patch_be64(path, L->l2_off, cp | 512); break;
	case T_L2_L1: r = t_patch_be64(path, L->l2_off, cp | L->l1_off); break;
	case T_L2_REFTABLE: r = t_patch_be64(path, L->l2_off, cp | L->rt_off); break;
	case T_L2_SELF: r = t_patch_be64(path, L->l2_off, cp | L->l2_off); break;
	case T_L2_RESERVED: r = t_patch_be64(path, L->l2_off, l2e | (1ULL << 57) | 2); break;
	case T_L2_COMP_PAST_EOF:
		r = t_patch_be64(path, L->l2_off, compressed_entry(L, past + 100, 3));
		break;
	case T_L2_COMP_HEADER:
		r = t_patch_be64(path, L->l2_off, compressed_entry(L, 8, 255));
		break;
	case T_RT_SELF: r = t_patch_be64(path, L->rt_off, L->rt_off); break;
	case T_RT_PAST_EOF: r = t_patch_be64(path, L->rt_off, past); break;
	case T_RT_MISALIGNED: r = t_patch_be64(path, L->rt_off, rte + 512); break;
	case T_RT_ZERO: r = t_patch_be64(path, L->rt_off, 0); break;
	case T_RT_L1: r = t_patch_be64(path, L->rt_off, L->l1_off); break;
	default: break;
	}
	REQUIRE(r == 0, "patch %s", path);
}

/* Bytes of [off, off+len) that must not change, except 8-byte entries in skip[]. */
static void check_region(const char *what, const char *name, const uint8_t *before,
			 const uint8_t *after, size_t alen, uint64_t off, uint64_t len,
			 const uint64_t *skip, int nskip)
{
	for (uint64_t i = 0; i < len; i += 8) {
		bool skipped = false;
		for (int k = 0; k < nskip; k++)
			skipped |= (i / 8 == skip[k]);
		if (skipped)
			continue;
		if (off + i + 8 > alen || memcmp(before + off + i, after + off + i, 8)) {
			CHECK(0, "%s: %s overwritten at byte %#" PRIx64, name, what, off + i);
			return;
		}
	}
}

static void expect_survives(const char *base, const char *tag, enum tcase c)
{
	const char *path = t_path("%s-%s.qcow2", tag, tnames[c]);
	struct qcow_open_opts chk = { .read_only = true, .for_check = true };
	struct qcow_image *img = NULL;
	struct layout L;
	uint8_t *before, *after, *buf;
	size_t blen, alen;
	uint64_t l2_new = 0;
	char err[512] = "";
	int r;

	REQUIRE(t_copy_file(base, path) == 0, "copy");
	read_layout(path, &L);
	apply_tcase(c, path, &L);
	before = t_read_file(path, &blen);
	buf = malloc(1 << 20);
	REQUIRE(before && buf, "oom");
	l2_new = (40ULL << 20) >> L.cb;  /* the L2 entry the second write allocates */

	r = qcow_open(path, NULL, &img, err, sizeof(err));
	if (r < 0) {
		/* refusing at open is fine: say why, write nothing */
		printf("  %s/%s: refused at open: %s\n", tag, tnames[c], err);
		CHECK(err[0], "%s/%s: open failed (%d) without a message", tag, tnames[c], r);
		after = t_read_file(path, &alen);
		CHECK(after && alen == blen && !memcmp(before, after, blen),
		      "%s/%s: failed open modified the file", tag, tnames[c]);
		free(after);
		goto out;
	}
	{
		int rr = 0, rw1, rw2, rz, rd, rf, rc;
		for (uint64_t off = 0; off < L.size; off += 1 << 20)
			rr |= qcow_read(img, buf, off, QCOW_MIN(1ULL << 20, L.size - off));
		memset(buf, 0xe7, 8192);
		rw1 = qcow_write(img, buf, 0, 4096);          /* the damaged cluster */
		rw2 = qcow_write(img, buf, 40 << 20, 8192);   /* a fresh allocation */
		rz = qcow_write_zeroes(img, 4096, 4096, 0);
		rd = qcow_discard(img, 64 << 10, 64 << 10);
		rf = qcow_flush(img);
		rc = qcow_close(img);
		printf("  %s/%s: opened; read %d write %d/%d zero %d discard %d flush %d close %d\n",
		       tag, tnames[c], rr, rw1, rw2, rz, rd, rf, rc);
	}

	after = t_read_file(path, &alen);
	REQUIRE(after, "read back");
	{
		uint64_t l1skip[] = { 0 }, rtskip[] = { 0 };
		uint64_t l2skip[] = { 0, 1, l2_new, l2_new + 1 };
		bool l1_case = c <= T_L1_RESERVED, rt_case = c >= T_RT_SELF;
		check_region("the header", tnames[c], before, after, alen, 0, 72, NULL, 0);
		check_region("the L1 table", tnames[c], before, after, alen, L.l1_off,
			     L.l1_size * 8ULL, l1skip, l1_case ? 1 : 0);
		check_region("the refcount table", tnames[c], before, after, alen, L.rt_off,
			     L.rt_clusters * L.cs, rtskip, rt_case ? 1 : 0);
		/* with L1[0] redirected the old L2 table is unreferenced: allow reuse */
		if (!l1_case)
			check_region("the L2 table", tnames[c], before, after, alen, L.l2_off,
				     L.cs, l2skip, 4);
	}
	free(after);

	/* the checker must see the damage */
	img = NULL;
	r = qcow_open(path, &chk, &img, err, sizeof(err));
	if (r == 0 && img) {
		struct qcow_check_result res;
		memset(&res, 0, sizeof(res));
		r = qcow_check(img, 0, &res, NULL, NULL);
		printf("  %s/%s: check rc %d corruptions %" PRIu64 " leaks %" PRIu64 "\n", tag,
		       tnames[c], r, res.corruptions, res.leaks);
		CHECK(r < 0 || res.corruptions > 0 || res.check_errors > 0,
		      "%s/%s: check found nothing (rc %d, %" PRIu64 " leaks)", tag, tnames[c], r,
		      res.leaks);
		qcow_close(img);
	} else {
		CHECK(err[0], "%s/%s: check open failed without a message", tag, tnames[c]);
	}
out:
	free(before);
	free(buf);
	unlink(path);
}

/* ------------------------------------------------------------ base images */

static void make_engine_base(const char *path, int version)
{
	struct qcow_create_opts co = { .size = 64 << 20, .version = version };
	struct qcow_image *img = NULL;
	static uint8_t buf[128 << 10];
	char err[512];

	REQUIRE(qcow_create(path, &co, false, err, sizeof(err)) == 0, "create: %s", err);
	REQUIRE(qcow_open(path, NULL, &img, err, sizeof(err)) == 0, "open: %s", err);
	memset(buf, 0x11, sizeof(buf));
	REQUIRE(qcow_write(img, buf, 0, sizeof(buf)) == 0, "write: %s", qcow_error(img));
	memset(buf, 0x22, sizeof(buf));
	REQUIRE(qcow_write(img, buf, 32 << 20, 65536) == 0, "write: %s", qcow_error(img));
	REQUIRE(qcow_close(img) == 0, "close");
}

static bool make_qemu_base(const char *path)
{
	int r;

	if (!t_want_qemu())
		return false;
	r = t_run(NULL, 0, "qemu-img create -q -f qcow2 '%s' 64M && "
		  "qemu-io -f qcow2 -c 'write -q -P 0x11 0 128k' -c 'write -q -P 0x22 32M 64k' '%s'",
		  path, path);
	REQUIRE(r == 0, "qemu-img/qemu-io base image: %d", r);
	return true;
}

static void run_base(const char *base, const char *tag)
{
	printf("base %s\n", tag);
	fflush(stdout);
	for (int c = 0; c < H_NCASES; c++)
		expect_refused(base, tag, (enum hcase)c);
	expect_check_reports(base, tag, H_L1_PAST_EOF);
	expect_check_reports(base, tag, H_L1_ZERO);
	expect_check_reports(base, tag, H_RT_PAST_EOF);
	expect_check_reports(base, tag, H_RT_ZERO);
	for (int c = 0; c < T_NTCASES; c++)
		expect_survives(base, tag, (enum tcase)c);
}

int main(void)
{
	const char *eng3, *eng2, *qemu;

	t_init("bad-input");
	eng3 = t_path("base-engine-v3.qcow2");
	eng2 = t_path("base-engine-v2.qcow2");
	qemu = t_path("base-qemu.qcow2");
	make_engine_base(eng3, 3);
	make_engine_base(eng2, 2);
	run_base(eng3, "engine-v3");
	run_base(eng2, "engine-v2");
	if (make_qemu_base(qemu))
		run_base(qemu, "qemu");
	else
		printf("qemu-img/qemu-io not found: qemu-made base skipped\n");
	return t_finish();
}
