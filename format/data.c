/* SPDX-License-Identifier: MIT */
/*
 * Synchronous guest IO on top of the mapping (cluster.c): qcow_read walks
 * the extents qcow_map reports, qcow_write drives the same split
 * write_begin / data write / write_end sequence an asynchronous caller uses,
 * so both paths share one allocation and publication logic.
 *
 * Compressed clusters are, by the image's compression type, raw deflate
 * streams (no zlib header, 4 KiB window) or zstd frames, and must expand to
 * exactly one cluster. Their stored length is only known to 512-byte
 * precision, so trailing input is allowed; missing output is not.
 */
#include <stdlib.h>
#include <zlib.h>
#include <zstd.h>

#include "internal.h"

#define ULL(x) ((unsigned long long)(x))

/* Raw deflate with the 4 KiB window qcow2 writers use. */
#define QCOW_DEFLATE_WINDOW_BITS (-12)

/* 0, or the zlib code of a stream that does not fill out (*done bytes). */
static int inflate_raw(const void *in, size_t in_len, void *out, size_t out_len, size_t *done)
{
	z_stream zs;
	int zr;
	bool ok;

	memset(&zs, 0, sizeof(zs));
	*done = 0;
	if (in_len > UINT32_MAX || out_len > UINT32_MAX)
		return Z_BUF_ERROR;
	if (inflateInit2(&zs, QCOW_DEFLATE_WINDOW_BITS) != Z_OK)
		return Z_MEM_ERROR;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)in_len;
	zs.next_out = out;
	zs.avail_out = (uInt)out_len;
	zr = inflate(&zs, Z_FINISH);
	/* input may run on past the stream (sector granularity): only a full
	 * output buffer counts */
	ok = (zr == Z_STREAM_END || zr == Z_BUF_ERROR || zr == Z_OK) && zs.avail_out == 0;
	*done = out_len - zs.avail_out;
	inflateEnd(&zs);
	return ok ? 0 : (zr == Z_OK || zr == Z_STREAM_END ? Z_DATA_ERROR : zr);
}

/*
 * zstd, as QEMU reads it: streamed until the output is full (what follows
 * the frames is the next cluster's bytes); 0, -ENOMEM, or -EIO for a
 * stream that errs or stops short (*done bytes).
 */
static int zstd_expand(const void *in, size_t in_len, void *out, size_t out_len, size_t *done)
{
	ZSTD_DCtx *d = ZSTD_createDCtx();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, out_len, 0 };
	size_t r, last_in, last_out;
	int ret = 0;

	if (!d)
		return -ENOMEM;
	while (ob.pos < ob.size) {
		last_in = ib.pos;
		last_out = ob.pos;
		r = ZSTD_decompressStream(d, &ob, &ib);
		if (ZSTD_isError(r) || (ib.pos == last_in && ob.pos == last_out)) {
			ret = -EIO;
			break;
		}
	}
	*done = ob.pos;
	ZSTD_freeDCtx(d);
	return ret;
}

/* zstd, as QEMU writes it (its default level): the length, 0 when it does
 * not fit in cap, or -errno. */
static int64_t zstd_shrink(const void *in, size_t in_len, void *out, size_t cap)
{
	ZSTD_CCtx *c = ZSTD_createCCtx();
	ZSTD_inBuffer ib = { in, in_len, 0 };
	ZSTD_outBuffer ob = { out, cap, 0 };
	int64_t ret = 0;
	size_t r;

	if (!c)
		return -ENOMEM;
	do {
		r = ZSTD_compressStream2(c, &ob, &ib, ZSTD_e_end);
		if (ZSTD_isError(r)) {
			ret = -EIO;
			break;
		}
		if (r > ob.size - ob.pos)
			break;		/* what is left cannot fit: too big (0) */
	} while (r);
	if (!ZSTD_isError(r) && !r)
		ret = (int64_t)ob.pos;
	ZSTD_freeCCtx(c);
	return ret;
}

/* One cluster's stream, by the image's compression type, into out_len bytes. */
static int expand(const struct qcow_image *img, const void *in, size_t in_len, void *out,
		  size_t out_len, size_t *done, int *code)
{
	if (img->compression_type == QCOW_COMPRESSION_ZSTD) {
		*code = zstd_expand(in, in_len, out, out_len, done);
		return *code;
	}
	*code = inflate_raw(in, in_len, out, out_len, done);
	return *code == Z_MEM_ERROR ? -ENOMEM : *code ? -EIO : 0;
}

int qcow_decompress_cluster(struct qcow_image *img, const void *in, size_t in_len,
			    void *out, size_t out_len)
{
	size_t done;
	int code, ret = expand(img, in, in_len, out, out_len, &done, &code);
	const char *kind = img->compression_type == QCOW_COMPRESSION_ZSTD ? "zstd" : "zlib";

	if (ret == -ENOMEM)
		return qcow_set_error(img, -ENOMEM, "cannot initialise %s", kind);
	if (ret)
		return qcow_set_error(img, -EIO, "corrupt compressed cluster: expands to %zu of "
				      "%zu bytes (%s %d)", done, out_len, kind, code);
	return 0;
}

int qcow_inflate_cluster(const struct qcow_image *img, const void *in, size_t in_len, void *out)
{
	size_t done;
	int code;

	return expand(img, in, in_len, out, img->cluster_size, &done, &code) ? -EIO : 0;
}

int64_t qcow_deflate_cluster(const struct qcow_image *img, const void *in, void *out, size_t cap)
{
	z_stream zs;
	int zr;

	if (img->compression_type == QCOW_COMPRESSION_ZSTD)
		return zstd_shrink(in, img->cluster_size, out, cap);
	memset(&zs, 0, sizeof(zs));
	if (cap > UINT32_MAX || img->cluster_size > UINT32_MAX)
		return -EINVAL;
	/* what QEMU writes: its level, window and memory level */
	if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, QCOW_DEFLATE_WINDOW_BITS, 9,
			 Z_DEFAULT_STRATEGY) != Z_OK)
		return -ENOMEM;
	zs.next_in = (Bytef *)in;
	zs.avail_in = (uInt)img->cluster_size;
	zs.next_out = out;
	zs.avail_out = (uInt)cap;
	zr = deflate(&zs, Z_FINISH);
	deflateEnd(&zs);
	if (zr == Z_STREAM_END)
		return (int64_t)(cap - zs.avail_out);
	return zr == Z_OK || zr == Z_BUF_ERROR ? 0 : -EIO;
}

int qcow_compressed_span(struct qcow_image *img, const struct qcow_extent *ext,
			 uint64_t *offset, size_t *len)
{
	uint64_t off = ext->compressed_offset, n = ext->compressed_length, file_size;
	int ret;

	if (ext->kind != QCOW_EXTENT_COMPRESSED)
		return qcow_set_error(img, -EINVAL, "extent at guest offset 0x%llx is not compressed",
				      ULL(ext->guest_offset));
	ret = img->file.ops->get_size(img->file.ctx, &file_size);
	if (ret < 0)
		return qcow_set_error(img, ret, "cannot get the file size: %s", strerror(-ret));
	if (off < img->cluster_size || off >= file_size || !n)
		return qcow_set_error(img, -EIO, "compressed cluster of guest offset 0x%llx: data "
				      "at 0x%llx is outside the file", ULL(ext->guest_offset),
				      ULL(off));
	/* the entry format cannot describe more than two clusters of input */
	n = QCOW_MIN(n, 2 * img->cluster_size);
	*offset = off;
	*len = QCOW_MIN(n, file_size - off);
	return 0;
}

int qcow_read_compressed_cluster(struct qcow_image *img, const struct qcow_extent *ext,
				 void *out)
{
	uint64_t off;
	size_t len;
	int ret;

	ret = qcow_compressed_span(img, ext, &off, &len);
	if (ret == 0)
		ret = qcow_pread(img, img->compressed_in, len, off);
	if (ret == 0)
		ret = qcow_decompress_cluster(img, img->compressed_in, len, out, img->cluster_size);
	return ret;
}

/* Copy one extent of guest data into p (ext->length bytes). */
static int read_layer_extent(struct qcow_image *img, const struct qcow_extent *ext, uint8_t *p)
{
	int ret;

	switch (ext->kind) {
	case QCOW_EXTENT_DATA:
		return qcow_pread(img, p, ext->length, ext->host_offset);
	case QCOW_EXTENT_COMPRESSED:
		ret = qcow_read_compressed_cluster(img, ext, img->decompressed);
		if (ret < 0)
			return ret;
		memcpy(p, img->decompressed + (ext->guest_offset & (img->cluster_size - 1)), ext->length);
		return 0;
	default:
		/* zero flag, preallocated zero and unallocated all read as zeros */
		memset(p, 0, ext->length);
		return 0;
	}
}

/* The same from the layer of the chain the extent is in (its buffers, its
 * geometry), its failure reported as img's. */
static int read_extent(struct qcow_image *img, const struct qcow_extent *ext, uint8_t *p)
{
	struct qcow_image *layer = qcow_layer(img, ext->depth);
	int ret;

	if (!layer)
		return qcow_set_error(img, -EIO, "extent of a layer below the backing chain");
	ret = read_layer_extent(layer, ext, p);
	return ret < 0 && layer != img ? qcow_layer_failed(img, layer, ret) : ret;
}

int qcow_read(struct qcow_image *img, void *buf, uint64_t off, size_t len)
{
	struct qcow_extent ext;
	uint8_t *p = buf;
	int ret;

	ret = qcow_check_guest_range(img, off, len, "read");
	while (ret == 0 && len) {
		ret = qcow_map(img, off, len, &ext);
		if (ret == 0)
			ret = read_extent(img, &ext, p);

		if (ret == 0) {
			p += ext.length;
			off += ext.length;
			len -= ext.length;
		}
	}
	return ret;
}

int qcow_write(struct qcow_image *img, const void *buf, uint64_t off, size_t len)
{
	struct qcow_write_plan plan;
	const uint8_t *p = buf;
	int ret;

	if (img->read_only)
		return qcow_set_error(img, -EROFS, "image is opened read-only");
	ret = qcow_check_guest_range(img, off, len, "write");
	while (ret == 0 && len) {
		ret = qcow_write_begin(img, off, len, &plan);
		if (ret < 0)
			break;
		ret = qcow_check_metadata_overlap(img, plan.host_offset, plan.length);
		if (ret == 0)
			ret = qcow_pwrite(img, p, plan.length, plan.host_offset);
		ret = qcow_write_end(img, &plan, ret);
		if (ret == 0) {
			p += plan.length;
			off += plan.length;
			len -= plan.length;
		}
	}
	return ret;
}
