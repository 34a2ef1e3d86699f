// SPDX-License-Identifier: MIT
/*
 * The image header and its extensions: parse and validate everything the
 * first cluster says before any of it is used, and write it back. For
 * info, also what an image we do not serve says of itself: the external
 * data file's name, and the LUKS header an encrypted image points at.
 *
 * Every number read here comes from a file we do not trust, so each one is
 * checked against the format's limits and against the file itself, and
 * every refusal names the field and the value.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "internal.h"

#define V2_HEADER_LEN   ((uint32_t)sizeof(struct qcow_header_v2))
#define V3_HEADER_LEN   ((uint32_t)sizeof(struct qcow_header_v3))

/* The feature name table we write for v3 images, as qemu-img does. */
static const struct {
	uint8_t type;
	uint8_t bit;
	const char *name;
} our_features[] = {
	{ QCOW_FEAT_TYPE_INCOMPAT, 0, "dirty bit" },
	{ QCOW_FEAT_TYPE_INCOMPAT, 1, "corrupt bit" },
	{ QCOW_FEAT_TYPE_INCOMPAT, 2, "external data file" },
	{ QCOW_FEAT_TYPE_INCOMPAT, 3, "compression type" },
	{ QCOW_FEAT_TYPE_INCOMPAT, 4, "extended L2 entries" },
	{ QCOW_FEAT_TYPE_COMPAT, 0, "lazy refcounts" },
	{ QCOW_FEAT_TYPE_AUTOCLEAR, 0, "bitmaps" },
	{ QCOW_FEAT_TYPE_AUTOCLEAR, 1, "raw external data" },
};
#define NB_OUR_FEATURES (sizeof(our_features) / sizeof(our_features[0]))

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static uint64_t get_be64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

const char *qcow_incompat_feature_name(const struct qcow_image *img, unsigned bit)
{
	/* The table's names are not NUL terminated; copy into our own buffer. */
	static __thread char name[sizeof(((struct qcow_feature_name *)0)->name) + 1];
	uint32_t i;

	for (i = 0; i < NB_OUR_FEATURES; i++) {
		if (our_features[i].type == QCOW_FEAT_TYPE_INCOMPAT && our_features[i].bit == bit)
			return our_features[i].name;
	}
	for (i = 0; img && i < img->nb_feature_names; i++) {
		const struct qcow_feature_name *f = &img->feature_table[i];

		if (f->type == QCOW_FEAT_TYPE_INCOMPAT && f->bit == bit) {
			memcpy(name, f->name, sizeof(f->name));
			name[sizeof(f->name)] = '\0';
			return name;
		}
	}
	return NULL;
}

/* ---------------------------------------------------------------- parsing */

static int parse_basic(struct qcow_image *img, const struct qcow_header_v2 *h)
{
	uint32_t magic = be32toh(h->magic);
	uint32_t version = be32toh(h->version);
	uint32_t cbits = be32toh(h->cluster_bits);

	if (magic != QCOW_MAGIC)
		return qcow_set_error(img, -EINVAL, "not a qcow2 image (bad magic 0x%08x)", magic);
	if (version != 2 && version != 3)
		return qcow_set_error(img, -ENOTSUP,
				      "unsupported qcow2 version %u (only 2 and 3)", version);
	if (cbits < QCOW_MIN_CLUSTER_BITS || cbits > QCOW_MAX_CLUSTER_BITS)
		return qcow_set_error(img, -EINVAL, "invalid cluster_bits %u (must be %d..%d)",
				      cbits, QCOW_MIN_CLUSTER_BITS, QCOW_MAX_CLUSTER_BITS);
	img->version = version;
	img->cluster_bits = cbits;
	img->cluster_size = 1ULL << cbits;
	img->l2_bits = cbits - 3;
	img->l2_size = 1ULL << img->l2_bits;
	img->size = be64toh(h->size);
	img->l1_size = be32toh(h->l1_size);
	img->l1_table_offset = be64toh(h->l1_table_offset);
	img->refcount_table_offset = be64toh(h->refcount_table_offset);
	img->refcount_table_clusters = be32toh(h->refcount_table_clusters);
	img->nb_snapshots = be32toh(h->nb_snapshots);
	img->snapshots_offset = be64toh(h->snapshots_offset);
	img->backing_file_offset = be64toh(h->backing_file_offset);
	img->backing_file_size = be32toh(h->backing_file_size);
	img->crypt_method = be32toh(h->crypt_method);
	return 0;
}

/* v3 fields; v2 gets their implied values. *compression_type is returned
 * separately: check_features decides whether it is one we know. */
static int parse_v3(struct qcow_image *img, const uint8_t *buf, size_t len,
		    uint8_t *compression_type)
{
	struct qcow_header_v3 h;
	uint32_t hlen;

	*compression_type = 0;
	if (img->version == 2) {
		img->header_length = V2_HEADER_LEN;
		img->refcount_order = 4;
		img->incompatible_features = 0;
		img->compatible_features = 0;
		img->autoclear_features = 0;
		goto derived;
	}
	if (len < QCOW_V3_MIN_HEADER_LENGTH)
		return qcow_set_error(img, -EINVAL, "not a qcow2 image (file too short for a v3 header)");
	hlen = get_be32(buf + offsetof(struct qcow_header_v3, header_length));
	if (hlen < QCOW_V3_MIN_HEADER_LENGTH || hlen % 8 != 0 || hlen > img->cluster_size)
		return qcow_set_error(img, -EINVAL,
				      "invalid header_length %u (must be a multiple of 8, %d..%" PRIu64 ")",
				      hlen, QCOW_V3_MIN_HEADER_LENGTH, img->cluster_size);
	if (hlen > len)
		return qcow_set_error(img, -EINVAL, "header_length %u runs past the end of the file", hlen);
	/* Fields past header_length read as zero. */
	memset(&h, 0, sizeof(h));
	memcpy(&h, buf, QCOW_MIN(hlen, V3_HEADER_LEN));
	img->header_length = hlen;
	img->incompatible_features = be64toh(h.incompatible_features);
	img->compatible_features = be64toh(h.compatible_features);
	img->autoclear_features = be64toh(h.autoclear_features);
	img->refcount_order = be32toh(h.refcount_order);
	*compression_type = h.compression_type;
	if (img->refcount_order > QCOW_MAX_REFCOUNT_ORDER)
		return qcow_set_error(img, -EINVAL, "invalid refcount_order %u (must be 0..%d)",
				      img->refcount_order, QCOW_MAX_REFCOUNT_ORDER);
derived:
	img->refcount_bits = 1U << img->refcount_order;
	img->refcount_block_bits = img->cluster_bits + 3 - img->refcount_order;
	return 0;
}

static int keep_unknown_ext(struct qcow_image *img, uint32_t type, const uint8_t *data,
			    uint32_t length)
{
	struct qcow_raw_ext *exts, *e;

	exts = realloc(img->unknown_exts, (img->nb_unknown_exts + 1) * sizeof(*exts));
	if (!exts)
		return -ENOMEM;
	img->unknown_exts = exts;
	e = &exts[img->nb_unknown_exts];
	e->type = type;
	e->length = length;
	e->data = malloc(length ? length : 1);
	if (!e->data)
		return -ENOMEM;
	memcpy(e->data, data, length);
	img->nb_unknown_exts++;
	return 0;
}

static int refuse_feature(struct qcow_image *img, const char *what)
{
	return qcow_set_error(img, -ENOTSUP, "unsupported feature: %s", what);
}

/*
 * A feature that stops the image being served: refused, except by a check
 * open, which notes it (the first one found) and goes on, so that info and
 * check can show the image as qemu-img does. image.c keeps such a handle
 * read-only.
 */
static int unservable(struct qcow_image *img, const char *what)
{
	if (!img->for_check)
		return refuse_feature(img, what);
	if (!img->unservable)
		img->unservable = what;
	return 0;
}

/* Where the LUKS header lies (a check open reads it for info only). */
static int parse_crypto_ext(struct qcow_image *img, const uint8_t *data, uint32_t length)
{
	int ret = unservable(img, "encryption");

	if (ret < 0)
		return ret;
	if (img->crypt_method != QCOW_CRYPT_LUKS)
		return qcow_set_error(img, -EINVAL, "encryption header extension without LUKS "
				      "encryption (crypt_method %u)", img->crypt_method);
	if (length != 16)
		return qcow_set_error(img, -EINVAL, "encryption header extension of %u bytes "
				      "(must be 16)", length);
	img->crypto_offset = get_be64(data);
	img->crypto_length = get_be64(data + 8);
	if (img->crypto_offset & (img->cluster_size - 1))
		return qcow_set_error(img, -EINVAL, "encryption header offset 0x%" PRIx64
				      " is not cluster aligned", img->crypto_offset);
	return 0;
}

static int parse_data_file_ext(struct qcow_image *img, const uint8_t *data, uint32_t length)
{
	int ret = unservable(img, "external data file");

	if (ret < 0)
		return ret;
	free(img->data_file);
	img->data_file = strndup((const char *)data, length);
	return img->data_file ? 0 : -ENOMEM;
}

static int parse_one_ext(struct qcow_image *img, uint32_t type, const uint8_t *data,
			 uint32_t length)
{
	switch (type) {
	case QCOW_EXT_BACKING_FORMAT:
		if (length >= sizeof(((struct qcow_info *)0)->backing_format))
			return qcow_set_error(img, -EINVAL,
					      "backing format extension too long (%u bytes)", length);
		free(img->backing_format);
		img->backing_format = strndup((const char *)data, length);
		return img->backing_format ? 0 : -ENOMEM;
	case QCOW_EXT_FEATURE_TABLE: {
		uint32_t n = length / sizeof(struct qcow_feature_name);

		free(img->feature_table);
		img->nb_feature_names = 0;
		img->feature_table = malloc(n ? n * sizeof(struct qcow_feature_name) : 1);
		if (!img->feature_table)
			return -ENOMEM;
		memcpy(img->feature_table, data, n * sizeof(struct qcow_feature_name));
		img->nb_feature_names = n;
		return 0;
	}
	case QCOW_EXT_CRYPTO:
		return parse_crypto_ext(img, data, length);
	case QCOW_EXT_DATA_FILE:
		return parse_data_file_ext(img, data, length);
	default:
		/* Bitmaps (whose directory bitmap.c rewrites in place, never
		 * the extension) and extensions we do not know: kept verbatim. */
		return keep_unknown_ext(img, type, data, length);
	}
}

static int parse_extensions(struct qcow_image *img, const uint8_t *buf, size_t len)
{
	uint64_t limit = QCOW_MIN((uint64_t)len, img->cluster_size);
	uint64_t off = img->header_length;
	int ret;

	/* The backing file name, when present, follows the extension area. */
	if (img->backing_file_offset && img->backing_file_offset < limit)
		limit = img->backing_file_offset;
	while (off + sizeof(struct qcow_ext_header) <= limit) {
		uint32_t type = get_be32(buf + off);
		uint32_t length = get_be32(buf + off + 4);

		off += sizeof(struct qcow_ext_header);
		img->hdr_used = off;
		if (type == QCOW_EXT_END)
			return 0;
		if (length > limit - off)
			return qcow_set_error(img, -EINVAL,
					      "header extension 0x%08x at offset %" PRIu64
					      ": length %u runs past the header area",
					      type, off - sizeof(struct qcow_ext_header), length);
		ret = parse_one_ext(img, type, buf + off, length);
		if (ret < 0)
			return ret;
		off += QCOW_ALIGN_UP((uint64_t)length, 8);
		img->hdr_used = off;
	}
	return 0;
}

static int check_features(struct qcow_image *img, uint32_t crypt_method, uint8_t ctype)
{
	uint64_t unknown = img->incompatible_features & ~QCOW_INCOMPAT_KNOWN;
	int ret = 0;

	if (crypt_method > QCOW_CRYPT_LUKS)
		return qcow_set_error(img, -ENOTSUP, "unsupported feature: encryption (unknown "
				      "method %u)", crypt_method);
	if (crypt_method != QCOW_CRYPT_NONE)
		ret = unservable(img, "encryption");
	if (ret < 0)
		return ret;
	if (unknown) {
		unsigned bit = (unsigned)__builtin_ctzll(unknown);
		const char *name = qcow_incompat_feature_name(img, bit);

		if (name && name[0])
			return qcow_set_error(img, -ENOTSUP,
					      "unsupported feature: unknown incompatible feature bit %u (%s)",
					      bit, name);
		return qcow_set_error(img, -ENOTSUP,
				      "unsupported feature: unknown incompatible feature bit %u", bit);
	}
	if (img->incompatible_features & QCOW_INCOMPAT_EXTL2)
		ret = unservable(img, "extended L2 entries");
	if (ret == 0 && (img->incompatible_features & QCOW_INCOMPAT_DATA_FILE))
		ret = unservable(img, "external data file");
	if (ret < 0)
		return ret;
	if (ctype == QCOW_COMPRESSION_ZLIB) {
		/* As qemu: the bit announces a non-default type, so with zlib it
		 * contradicts the field (a writer we do not understand set it). */
		if (img->incompatible_features & QCOW_INCOMPAT_COMPRESSION)
			return qcow_set_error(img, -EINVAL,
					      "compression type feature bit (incompatible bit 3) set "
					      "with compression_type 0 (zlib); the bit must not be set "
					      "for zlib");
	} else {
		if (!(img->incompatible_features & QCOW_INCOMPAT_COMPRESSION))
			return qcow_set_error(img, -EINVAL,
					      "compression_type %u without the compression type feature bit",
					      ctype);
		if (ctype != QCOW_COMPRESSION_ZSTD)
			return qcow_set_error(img, -ENOTSUP, "unsupported feature: compression "
					      "type %u", ctype);
	}
	img->compression_type = ctype;
	return 0;
}

/*
 * A table of len bytes at off: cluster aligned, past the header, inside the file.
 *
 * lenient (check opens, for the L1 and refcount tables): a table that lies
 * past the end of the file or in the header is accepted, as qemu-img check
 * accepts it, so that the check can report it as a corruption (and rebuild
 * a lost refcount table) instead of refusing to run. Such a table reads as
 * zeros past end of file, or as the header. Misalignment and offsets the
 * format cannot address are refused in every mode (so does qemu).
 */
static int check_table(struct qcow_image *img, const char *what, uint64_t off, uint64_t len,
		       uint64_t file_size, bool lenient)
{
	if (off & (img->cluster_size - 1))
		return qcow_set_error(img, -EINVAL, "%s offset 0x%" PRIx64 " is not cluster aligned",
				      what, off);
	if (lenient) {
		if (off >= QCOW_MAX_HOST_OFFSET || len > QCOW_MAX_HOST_OFFSET - off)
			return qcow_set_error(img, -EINVAL,
					      "%s at offset 0x%" PRIx64 " (%" PRIu64 " bytes) lies "
					      "beyond the largest host offset", what, off, len);
		return 0;
	}
	if (off == 0)
		return qcow_set_error(img, -EINVAL, "%s offset 0 overlaps the header", what);
	if (off >= QCOW_MAX_HOST_OFFSET || off >= file_size ||
	    len > QCOW_ALIGN_UP(file_size, img->cluster_size) - off)
		return qcow_set_error(img, -EINVAL,
				      "%s at offset 0x%" PRIx64 " (%" PRIu64 " bytes) lies outside the file (%"
				      PRIu64 " bytes)", what, off, len, file_size);
	return 0;
}

static int check_sizes(struct qcow_image *img)
{
	uint64_t need;

	if ((uint64_t)img->l1_size * 8 > QCOW_MAX_L1_BYTES)
		return qcow_set_error(img, -EINVAL, "l1_size %u too large (at most %llu entries)",
				      img->l1_size, QCOW_MAX_L1_BYTES / 8);
	if (img->size > (uint64_t)INT64_MAX)
		return qcow_set_error(img, -EINVAL, "virtual size %" PRIu64 " too large", img->size);
	need = qcow_l1_entries_for(img, img->size);
	if (need > img->l1_size)
		return qcow_set_error(img, -EINVAL,
				      "l1_size %u too small for virtual size %" PRIu64 " (needs %" PRIu64 ")",
				      img->l1_size, img->size, need);
	if (img->refcount_table_clusters == 0)
		return qcow_set_error(img, -EINVAL, "refcount_table_clusters is 0");
	if ((uint64_t)img->refcount_table_clusters * img->cluster_size > QCOW_MAX_REFTABLE_BYTES)
		return qcow_set_error(img, -EINVAL, "refcount_table_clusters %u too large",
				      img->refcount_table_clusters);
	if (img->nb_snapshots > QCOW_MAX_SNAPSHOTS)
		return qcow_set_error(img, -EINVAL, "nb_snapshots %u too large (at most %d)",
				      img->nb_snapshots, QCOW_MAX_SNAPSHOTS);
	img->refcount_table_size = (uint64_t)img->refcount_table_clusters * img->cluster_size / 8;
	return 0;
}

/*
 * Where a check open keeps an L1 table that the header puts in the header
 * cluster: the L1 loader refuses offsets inside the header, so the engine
 * gets a stand-in that reads as zeros (past any real end of file; a write
 * through it fails). check.c reads the L1 geometry from the file itself and
 * reports the real offset; nothing writes the header while the L1 table is
 * lost (check.c), so the stand-in never reaches the disk.
 */
static uint64_t lost_l1_standin(const struct qcow_image *img, uint64_t l1_bytes)
{
	return QCOW_MAX_HOST_OFFSET - QCOW_ALIGN_UP(l1_bytes, img->cluster_size);
}

static int check_tables(struct qcow_image *img, uint64_t file_size)
{
	uint64_t l1_bytes = (uint64_t)img->l1_size * 8;
	uint64_t rt_bytes = (uint64_t)img->refcount_table_clusters * img->cluster_size;
	bool lenient = img->for_check;
	int ret = check_sizes(img);

	if (ret < 0)
		return ret;
	if (img->l1_size) {
		ret = check_table(img, "L1 table", img->l1_table_offset, l1_bytes, file_size, lenient);
	} else if (img->l1_table_offset & (img->cluster_size - 1)) {
		ret = qcow_set_error(img, -EINVAL, "L1 table offset 0x%" PRIx64 " is not cluster aligned",
				     img->l1_table_offset);
	}
	if (ret < 0)
		return ret;
	ret = check_table(img, "refcount table", img->refcount_table_offset, rt_bytes, file_size,
			  lenient);
	if (ret < 0)
		return ret;
	if (img->l1_size && img->l1_table_offset < img->refcount_table_offset + rt_bytes &&
	    img->refcount_table_offset < img->l1_table_offset + l1_bytes)
		return qcow_set_error(img, -EINVAL, "L1 table and refcount table overlap");
	if (lenient && img->l1_size && img->l1_table_offset < img->cluster_size)
		img->l1_table_offset = lost_l1_standin(img, l1_bytes);
	if (img->nb_snapshots)
		return check_table(img, "snapshot table", img->snapshots_offset, 0, file_size, false);
	if (img->snapshots_offset & (img->cluster_size - 1))
		return qcow_set_error(img, -EINVAL, "snapshots_offset 0x%" PRIx64 " is not cluster aligned",
				      img->snapshots_offset);
	return 0;
}

static int read_backing_name(struct qcow_image *img, const uint8_t *buf, size_t len)
{
	uint64_t limit = QCOW_MIN((uint64_t)len, img->cluster_size);
	uint64_t off = img->backing_file_offset;
	uint32_t size = img->backing_file_size;

	/* As qemu: whatever the size, the name cannot start past the first
	 * cluster (an offset there is damage, not "no backing file"). */
	if (off > img->cluster_size)
		return qcow_set_error(img, -EINVAL,
				      "invalid backing_file_offset 0x%" PRIx64 ": past the end of the "
				      "header cluster (%" PRIu64 " bytes)", off, img->cluster_size);
	if (off == 0 || size == 0) {
		img->backing_file_offset = 0;
		img->backing_file_size = 0;
		return 0;
	}
	if (size > QCOW_MAX_BACKING_FILE_NAME)
		return qcow_set_error(img, -EINVAL, "backing_file_size %u too large (at most %d)",
				      size, QCOW_MAX_BACKING_FILE_NAME);
	if (off < img->header_length || off >= limit || size > limit - off)
		return qcow_set_error(img, -EINVAL,
				      "backing file name at offset %" PRIu64 " (%u bytes) lies outside the header cluster",
				      off, size);
	free(img->backing_file);
	img->backing_file = strndup((const char *)buf + off, size);
	img->hdr_used = QCOW_MAX(img->hdr_used, off + size);
	return img->backing_file ? 0 : -ENOMEM;
}

/* The durable header is buf's first used bytes now. */
static int remember(struct qcow_image *img, const uint8_t *buf, size_t used)
{
	uint8_t *copy = malloc(used);

	if (!copy)
		return -ENOMEM;
	memcpy(copy, buf, used);
	free(img->hdr_disk);
	img->hdr_disk = copy;
	img->hdr_used = used;
	return 0;
}

int qcow_header_parse(struct qcow_image *img, const uint8_t *buf, size_t len,
		      uint64_t file_size)
{
	struct qcow_header_v2 h;
	uint8_t ctype;
	int ret;

	if (len < V2_HEADER_LEN)
		return qcow_set_error(img, -EINVAL, "not a qcow2 image (file too short)");
	memcpy(&h, buf, sizeof(h));
	ret = parse_basic(img, &h);
	if (ret < 0)
		return ret;
	ret = parse_v3(img, buf, len, &ctype);
	if (ret < 0)
		return ret;
	if (img->version == 2 && img->refcount_order != 4)
		return qcow_set_error(img, -EINVAL, "version 2 image with refcount_order %u",
				      img->refcount_order);
	img->hdr_used = img->header_length;
	ret = parse_extensions(img, buf, len);
	if (ret < 0)
		return ret;
	ret = check_features(img, be32toh(h.crypt_method), ctype);
	if (ret < 0)
		return ret;
	ret = check_tables(img, file_size);
	if (ret < 0)
		return ret;
	ret = read_backing_name(img, buf, len);
	if (ret == 0 && remember(img, buf, QCOW_MIN(img->hdr_used, len)) < 0)
		ret = -ENOMEM;
	return ret;
}

/* ---------------------------------------------------------------- writing */

/* What a power cut lands whole or not at all. */
#define HEADER_SECTOR 512U

struct hbuf {
	uint8_t *buf;
	size_t cap;
	size_t off;
};

static bool put_bytes(struct hbuf *b, const void *data, size_t len, size_t align)
{
	size_t padded = QCOW_ALIGN_UP(len, align);

	if (padded > b->cap - b->off)
		return false;
	memcpy(b->buf + b->off, data, len);
	memset(b->buf + b->off + len, 0, padded - len);
	b->off += padded;
	return true;
}

static bool put_ext(struct hbuf *b, uint32_t type, const void *data, uint32_t len)
{
	struct qcow_ext_header e = { htobe32(type), htobe32(len) };

	if (sizeof(e) + QCOW_ALIGN_UP((uint64_t)len, 8) > b->cap - b->off)
		return false;
	put_bytes(b, &e, sizeof(e), 1);
	return put_bytes(b, data, len, 8);
}

static bool put_feature_table(struct hbuf *b)
{
	struct qcow_feature_name t[NB_OUR_FEATURES];
	size_t i;

	memset(t, 0, sizeof(t));
	for (i = 0; i < NB_OUR_FEATURES; i++) {
		t[i].type = our_features[i].type;
		t[i].bit = our_features[i].bit;
		strncpy(t[i].name, our_features[i].name, sizeof(t[i].name));
	}
	return put_ext(b, QCOW_EXT_FEATURE_TABLE, t, sizeof(t));
}

static void fill_header(const struct qcow_image *img, struct qcow_header_v3 *h)
{
	memset(h, 0, sizeof(*h));
	h->v2.magic = htobe32(QCOW_MAGIC);
	h->v2.version = htobe32(img->version);
	h->v2.cluster_bits = htobe32(img->cluster_bits);
	h->v2.size = htobe64(img->size);
	h->v2.crypt_method = htobe32(QCOW_CRYPT_NONE);
	h->v2.l1_size = htobe32(img->l1_size);
	h->v2.l1_table_offset = htobe64(img->l1_table_offset);
	h->v2.refcount_table_offset = htobe64(img->refcount_table_offset);
	h->v2.refcount_table_clusters = htobe32(img->refcount_table_clusters);
	h->v2.nb_snapshots = htobe32(img->nb_snapshots);
	h->v2.snapshots_offset = htobe64(img->snapshots_offset);
	h->incompatible_features = htobe64(img->incompatible_features);
	h->compatible_features = htobe64(img->compatible_features);
	h->autoclear_features = htobe64(img->autoclear_features);
	h->refcount_order = htobe32(img->refcount_order);
	h->header_length = htobe32(V3_HEADER_LEN);
	h->compression_type = img->compression_type;
}

/* Lay out the whole header cluster; false if it does not fit. */
static bool serialise(const struct qcow_image *img, struct hbuf *b, bool feature_table,
		      uint64_t *backing_off)
{
	static const uint8_t end[8];
	struct qcow_header_v3 h;
	uint32_t i;

	fill_header(img, &h);
	memset(b->buf, 0, b->cap);
	b->off = 0;
	if (!put_bytes(b, &h, img->version == 2 ? V2_HEADER_LEN : V3_HEADER_LEN, 8))
		return false;
	if (img->backing_format &&
	    !put_ext(b, QCOW_EXT_BACKING_FORMAT, img->backing_format,
		     (uint32_t)strlen(img->backing_format)))
		return false;
	if (feature_table && !put_feature_table(b))
		return false;
	for (i = 0; i < img->nb_unknown_exts; i++) {
		const struct qcow_raw_ext *e = &img->unknown_exts[i];

		if (!put_ext(b, e->type, e->data, e->length))
			return false;
	}
	if (!put_bytes(b, end, sizeof(end), 8))
		return false;
	*backing_off = b->off;
	if (img->backing_file &&
	    !put_bytes(b, img->backing_file, strlen(img->backing_file), 1))
		return false;
	return true;
}

/* The whole header cluster laid out in b, the backing file name's offset
 * set; *used: the bytes it refers to. The feature name table is only
 * informational: left out where space is short, or when !table. */
static int lay_out(struct qcow_image *img, struct hbuf *b, bool table, size_t *used,
		   uint64_t *backing_off_out)
{
	uint64_t backing_off = 0;

	while (!serialise(img, b, table, &backing_off)) {
		if (!table)
			return qcow_set_error(img, -ENOSPC,
					      "header and extensions do not fit in the first cluster");
		table = false;
	}
	if (img->backing_file) {
		uint64_t boff = htobe64(backing_off);
		uint32_t bsize = htobe32((uint32_t)strlen(img->backing_file));

		memcpy(b->buf + offsetof(struct qcow_header_v2, backing_file_offset), &boff, 8);
		memcpy(b->buf + offsetof(struct qcow_header_v2, backing_file_size), &bsize, 4);
	}
	*used = b->off;
	if (backing_off_out)
		*backing_off_out = backing_off;
	return 0;
}

/* Bytes [from, to) of b to the header cluster. */
static int put_sectors(struct qcow_image *img, const struct hbuf *b, size_t from, size_t to)
{
	return qcow_pwrite(img, b->buf + from, to - from, from);
}

/* Does the durable header hold b's bytes past the first sector already? */
static bool tail_on_disk(const struct qcow_image *img, const struct hbuf *b, size_t used)
{
	return img->hdr_disk && img->hdr_used >= used &&
	       !memcmp(img->hdr_disk + HEADER_SECTOR, b->buf + HEADER_SECTOR,
		       used - HEADER_SECTOR);
}

/* H1: the header without the feature name table, when that fits in the
 * first sector: written alone, synced. -ENOSPC when it does not fit. */
static int commit_first_sector(struct qcow_image *img)
{
	struct hbuf b = { .cap = img->cluster_size };
	size_t used;
	int ret;

	b.buf = malloc(b.cap);
	if (!b.buf)
		return qcow_set_error(img, -ENOMEM, "out of memory writing the header");
	ret = lay_out(img, &b, false, &used, NULL);
	if (ret == 0 && used > HEADER_SECTOR)
		ret = -ENOSPC;
	if (ret == 0)
		ret = put_sectors(img, &b, 0, HEADER_SECTOR);
	if (ret == 0)
		ret = qcow_fsync(img);
	if (ret == 0)
		ret = remember(img, b.buf, used);
	free(b.buf);
	return ret;
}

/*
 * The header is one sector write wherever it can be: a power cut lands a
 * 512-byte sector whole or not at all, but a write of several sectors may
 * land in part. So the first sector is the commit point:
 *  H0. A header that fits in the first sector, or whose bytes past it the
 *      durable header holds already: that sector alone.
 *  H1. Else, if the durable header refers to bytes past the first sector,
 *      the new header without the (only informational) feature name table
 *      is the commit, when it fits in the first sector: written alone,
 *      synced. Crash right after: the new header, without the table; the
 *      first sector refers to nothing past it.
 *  H2. The new bytes past the first sector, synced: nothing durable refers
 *      to them (the old header does not reach past the first sector, or
 *      H1's does not). Crash right after: the old header (or H1's), intact.
 *  H3. The first sector: the commit, unless H1 made it. Crash right after:
 *      the new header whole.
 * A header whose extensions and backing file name need more than a sector
 * even without the feature table (a backing file name of hundreds of bytes,
 * or unknown extensions) while the durable one does too is written in one
 * write, as before: a tear there can mix the two.
 */
static int commit(struct qcow_image *img, const struct hbuf *b, size_t used)
{
	int ret;

	if (used <= HEADER_SECTOR || tail_on_disk(img, b, used))
		return put_sectors(img, b, 0, HEADER_SECTOR);
	ret = img->hdr_used > HEADER_SECTOR ? commit_first_sector(img) : 0;
	if (ret == -ENOSPC)
		return put_sectors(img, b, 0, used);
	if (ret == 0)
		ret = put_sectors(img, b, HEADER_SECTOR, used);
	if (ret == 0)
		ret = qcow_fsync(img);
	return ret < 0 ? ret : put_sectors(img, b, 0, HEADER_SECTOR);
}

int qcow_header_write(struct qcow_image *img)
{
	struct hbuf b = { .cap = img->cluster_size };
	uint64_t backing_off = 0;
	size_t used = 0;
	int ret;

	b.buf = malloc(b.cap);
	if (!b.buf)
		return qcow_set_error(img, -ENOMEM, "out of memory writing the header");
	ret = lay_out(img, &b, img->version >= 3, &used, &backing_off);
	if (ret == -ENOSPC) {
		free(b.buf);
		return ret;
	}
	if (ret == 0)
		ret = commit(img, &b, used);
	if (ret == 0)
		ret = remember(img, b.buf, used);
	free(b.buf);
	/*
	 * A write that failed may still have reached the disk, whole or in
	 * part: the file's root may now point at the new L1 or refcount table
	 * while memory keeps the old one (and would soon free the new one's
	 * clusters for reuse). Both are valid on disk, but this handle can no
	 * longer tell which one is live, so it stops writing.
	 */
	if (ret < 0 && ret != -EROFS && !img->fatal_error)
		return qcow_fail_handle(img, ret, "header write");
	if (ret < 0)
		return ret;
	if (img->version >= 3)
		img->header_length = V3_HEADER_LEN;
	if (img->backing_file) {
		img->backing_file_offset = backing_off;
		img->backing_file_size = (uint32_t)strlen(img->backing_file);
	}
	return 0;
}

/* ------------------------------------------------- what info shows of them */

const char *qcow_unsupported_feature(const struct qcow_image *img)
{
	return img->unservable;
}

const char *qcow_data_file(const struct qcow_image *img)
{
	return img->data_file;
}

/*
 * The LUKS (version 1) header an encrypted image keeps where its encryption
 * header extension says; big-endian, strings NUL padded. Read for info only:
 * without the key nothing else of it can be used.
 */
struct luks_slot {
	uint32_t active;
	uint32_t iterations;
	uint8_t salt[32];
	uint32_t key_offset;              /* sectors */
	uint32_t stripes;
} __attribute__((packed));

struct luks_header {
	char magic[6];
	uint16_t version;
	char cipher_name[32];
	char cipher_mode[32];             /* "xts-plain64", "cbc-essiv:sha256" */
	char hash_spec[32];
	uint32_t payload_offset;          /* sectors */
	uint32_t key_bytes;
	uint8_t mk_digest[20];
	uint8_t mk_salt[32];
	uint32_t mk_iterations;
	char uuid[40];
	struct luks_slot slots[QCOW_LUKS_SLOTS];
} __attribute__((packed));
_Static_assert(sizeof(struct luks_header) == 592, "LUKS header is 592 bytes");

#define LUKS_SECTOR 512U
#define LUKS_SLOT_ENABLED 0x00AC71F3U
#define LUKS_SLOT_DISABLED 0x0000DEADU
#define LUKS_STRIPES 4000U
#define LUKS_HEADER_SECTORS (4096U / LUKS_SECTOR)   /* the key slots start after it */

/* qemu's names (its QAPI enums) for what a LUKS header may name. */
static const char *const luks_modes[] = { "ecb", "cbc", "xts", "ctr" };
static const char *const luks_ivgens[] = { "plain", "plain64", "essiv" };
static const struct {
	const char *name;
	unsigned digest_bytes;
} luks_hashes[] = {
	{ "md5", 16 }, { "sha1", 20 }, { "sha224", 28 }, { "sha256", 32 },
	{ "sha384", 48 }, { "sha512", 64 }, { "ripemd160", 20 },
};
static const struct {
	const char *name;
	unsigned key_bytes;
	const char *alg;
} luks_ciphers[] = {
	{ "aes", 16, "aes-128" }, { "aes", 24, "aes-192" }, { "aes", 32, "aes-256" },
	{ "cast5", 16, "cast5-128" },
	{ "serpent", 16, "serpent-128" }, { "serpent", 24, "serpent-192" },
	{ "serpent", 32, "serpent-256" },
	{ "twofish", 16, "twofish-128" }, { "twofish", 24, "twofish-192" },
	{ "twofish", 32, "twofish-256" },
	{ "sm4", 16, "sm4" },
};
#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static const char *luks_lookup(const char *const *names, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (!strcmp(names[i], name))
			return names[i];
	}
	return NULL;
}

static int luks_hash(const char *name, unsigned *digest_bytes)
{
	size_t i;

	for (i = 0; i < NELEMS(luks_hashes); i++) {
		if (!strcmp(luks_hashes[i].name, name)) {
			*digest_bytes = luks_hashes[i].digest_bytes;
			return (int)i;
		}
	}
	return -1;
}

static const char *luks_cipher(const char *name, unsigned key_bytes)
{
	size_t i;

	for (i = 0; i < NELEMS(luks_ciphers); i++) {
		if (!strcmp(luks_ciphers[i].name, name) && luks_ciphers[i].key_bytes == key_bytes)
			return luks_ciphers[i].alg;
	}
	return NULL;
}

/* Every string field NUL terminated, the key slots where they may be. */
static int luks_check(struct qcow_image *img, const struct luks_header *h)
{
	uint32_t payload = be32toh(h->payload_offset);
	uint64_t key_bytes = be32toh(h->key_bytes);
	unsigned i, j;

	if (memcmp(h->magic, "LUKS\xba\xbe", 6))
		return qcow_set_error(img, -EINVAL, "encryption header: not in LUKS format");
	if (be16toh(h->version) != 1)
		return qcow_set_error(img, -EINVAL, "encryption header: LUKS version %u is not "
				      "supported", be16toh(h->version));
	if (!memchr(h->cipher_name, 0, sizeof(h->cipher_name)) ||
	    !memchr(h->cipher_mode, 0, sizeof(h->cipher_mode)) ||
	    !memchr(h->hash_spec, 0, sizeof(h->hash_spec)))
		return qcow_set_error(img, -EINVAL, "encryption header: a LUKS name is not NUL "
				      "terminated");
	if (payload < LUKS_HEADER_SECTORS)
		return qcow_set_error(img, -EINVAL, "encryption header: LUKS payload at sector %u "
				      "overlaps the header", payload);
	if (!be32toh(h->mk_iterations))
		return qcow_set_error(img, -EINVAL, "encryption header: LUKS key iteration count "
				      "is zero");
	for (i = 0; i < QCOW_LUKS_SLOTS; i++) {
		const struct luks_slot *s = &h->slots[i];
		uint32_t active = be32toh(s->active), start = be32toh(s->key_offset);
		uint64_t len = QCOW_DIV_ROUND_UP(key_bytes * be32toh(s->stripes), LUKS_SECTOR);

		if (be32toh(s->stripes) != LUKS_STRIPES ||
		    (active != LUKS_SLOT_ENABLED && active != LUKS_SLOT_DISABLED) ||
		    (active == LUKS_SLOT_ENABLED && !be32toh(s->iterations)) ||
		    start < LUKS_HEADER_SECTORS || start + len > payload)
			return qcow_set_error(img, -EINVAL, "encryption header: LUKS key slot %u "
					      "is corrupted", i);
		for (j = i + 1; j < QCOW_LUKS_SLOTS; j++) {
			uint32_t s2 = be32toh(h->slots[j].key_offset);

			if (start < (uint64_t)s2 + len && s2 < start + len)
				return qcow_set_error(img, -EINVAL, "encryption header: LUKS key "
						      "slots %u and %u overlap", i, j);
		}
	}
	return 0;
}

/* "mode-ivgen[:hash]" and the cipher, in qemu's names. */
static int luks_names(struct qcow_image *img, const struct luks_header *h,
		      struct qcow_crypto_info *out)
{
	char mode[sizeof(h->cipher_mode)], *ivgen, *ivhash;
	unsigned key_bytes = be32toh(h->key_bytes), digest = 0, ivdigest = 0;
	int hash, ivh = -1;

	memcpy(mode, h->cipher_mode, sizeof(mode));
	ivgen = strchr(mode, '-');
	if (!ivgen)
		return qcow_set_error(img, -EINVAL, "encryption header: unexpected LUKS cipher "
				      "mode '%s'", mode);
	*ivgen++ = '\0';
	ivhash = strchr(ivgen, ':');
	if (ivhash)
		*ivhash++ = '\0';
	if (ivhash && (ivh = luks_hash(ivhash, &ivdigest)) < 0)
		return qcow_set_error(img, -EINVAL, "encryption header: hash '%s' not supported",
				      ivhash);
	out->cipher_mode = luks_lookup(luks_modes, NELEMS(luks_modes), mode);
	out->cipher_alg = luks_cipher(h->cipher_name, !strcmp(mode, "xts") ? key_bytes / 2
								     : key_bytes);
	hash = luks_hash(h->hash_spec, &digest);
	out->ivgen_alg = luks_lookup(luks_ivgens, NELEMS(luks_ivgens), ivgen);
	if (!out->cipher_mode || !out->cipher_alg || hash < 0 || !out->ivgen_alg)
		return qcow_set_error(img, -EINVAL, "encryption header: LUKS cipher '%s', mode "
				      "'%s-%s' or hash '%s' not supported", h->cipher_name, mode,
				      ivgen, h->hash_spec);
	out->hash_alg = luks_hashes[hash].name;
	if (strcmp(out->ivgen_alg, "essiv"))
		return 0;
	/* essiv keys a cipher of the same family with the hash's digest */
	if (ivh < 0 || !luks_cipher(h->cipher_name, ivdigest))
		return qcow_set_error(img, -EINVAL, "encryption header: essiv with cipher '%s' "
				      "and hash '%s' not supported", h->cipher_name,
				      ivhash ? ivhash : "(none)");
	out->ivgen_hash_alg = luks_hashes[ivh].name;
	return 0;
}

static int read_luks(struct qcow_image *img, struct qcow_crypto_info *out)
{
	struct luks_header h;
	unsigned i;
	int ret;

	if (img->crypto_length < sizeof(h))
		return qcow_set_error(img, -EINVAL, "LUKS encryption without an encryption header "
				      "extension of at least %zu bytes", sizeof(h));
	if (img->crypto_offset >= QCOW_MAX_HOST_OFFSET)
		return qcow_set_error(img, -EINVAL, "encryption header offset 0x%" PRIx64
				      " is beyond the largest host offset", img->crypto_offset);
	ret = qcow_pread(img, &h, sizeof(h), img->crypto_offset);
	if (ret == 0)
		ret = luks_check(img, &h);
	if (ret == 0)
		ret = luks_names(img, &h, out);
	if (ret < 0)
		return ret;
	memcpy(out->uuid, h.uuid, sizeof(h.uuid));
	out->payload_offset = (uint64_t)be32toh(h.payload_offset) * LUKS_SECTOR;
	out->master_key_iters = be32toh(h.mk_iterations);
	for (i = 0; i < QCOW_LUKS_SLOTS; i++) {
		out->slots[i].active = be32toh(h.slots[i].active) == LUKS_SLOT_ENABLED;
		out->slots[i].iters = be32toh(h.slots[i].iterations);
		out->slots[i].stripes = be32toh(h.slots[i].stripes);
		out->slots[i].key_offset = (uint64_t)be32toh(h.slots[i].key_offset) * LUKS_SECTOR;
	}
	return 0;
}

int qcow_get_crypto_info(struct qcow_image *img, struct qcow_crypto_info *out)
{
	memset(out, 0, sizeof(*out));
	out->method = img->crypt_method;
	return out->method == QCOW_CRYPT_LUKS ? read_luks(img, out) : 0;
}
