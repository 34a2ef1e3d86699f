// SPDX-License-Identifier: MIT
/*
 * qcow-tool convert: copy an image between raw and qcow2, as
 * `qemu-img convert`. Ranges that read as zero are not written: unallocated
 * and zero extents of the source are skipped without reading them, and data
 * is scanned for all-zero blocks (4 KiB by default, -S) that are skipped too.
 *
 * With -B the destination is an overlay of BACKING, and gets only the
 * blocks whose bytes differ from what BACKING has there (zeros written as
 * zero clusters): its guest content is the source's whatever BACKING
 * holds.  (qemu-img copies what the source's top image allocates instead,
 * which gives the source's content only when BACKING reads as the source's
 * own backing chain.)
 *
 * With -c every cluster with data is compressed (compress.c: on every
 * core, written back in order on this thread), or stored as it is where
 * compression does not save a byte, as QEMU does.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "compress.h"
#include "disk.h"
#include "options.h"
#include "progress.h"
#include "tool.h"

#define CONVERT_CHUNK (2U << 20)         /* bytes read per step */
#define CONVERT_DEFAULT_SPARSE 4096U

static void convert_usage(void)
{
	printf("Usage: " TOOL_NAME " convert [-p] [-q] [-n] [-f FMT] [-O FMT] [-o OPTIONS]\n"
	       "                         [-B BACKING -F FMT] [-S SIZE] [-l SNAPSHOT] SRC DST\n\n"
	       "Copy the guest data of SRC into DST (created or overwritten), converting\n"
	       "between raw and qcow2. Ranges that read as zero are not written, so DST\n"
	       "is sparse.\n\n"
	       "  -f FMT      source format: raw or qcow2 (detected by default)\n"
	       "  -O FMT      destination format: raw (default) or qcow2\n"
	       "  -B BACKING  make DST (qcow2) an overlay of BACKING holding only what\n"
	       "              differs from it (-o backing_file=BACKING is the same)\n"
	       "  -F FMT      BACKING's format: raw or qcow2 (required with -B)\n"
	       "  -c          compress DST's clusters (qcow2), on every core\n"
	       "  -o OPTIONS  creation options for DST, as for create; may be repeated\n"
	       "  -S SIZE     zero detection granularity, a multiple of 512 up to 2M\n"
	       "              (default 4k); 0 writes every byte\n"
	       "  -n          do not create DST: write into the existing image, zeroing\n"
	       "              ranges that are zero in SRC\n"
	       "  -l SNAPSHOT copy internal snapshot SNAPSHOT of SRC instead of its\n"
	       "              active image: snapshot.name=NAME, snapshot.id=ID, or either\n"
	       "  -p          show progress on stderr\n"
	       "  -q          quiet\n"
	       "  -U, --force-share  read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help  this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct convert_args {
	enum disk_format src_fmt, dst_fmt;
	const char **olists;
	int nb_olists;
	uint64_t sparse;          /* zero detection block; 0: off */
	bool progress, quiet, no_create, compress;
	const char *snapshot;     /* -l */
	const char *backing, *backing_fmt;  /* -B, -F */
	const char *src, *dst;
};

struct convert_state {
	struct disk src, dst;
	const struct convert_args *a;
	char *buf;
	char *ref;                /* -B: what DST reads through its backing file */
	bool backed;              /* DST has a backing file */
	struct cpool *pool;       /* -c */
	struct progress progress;
};

/* What a block of the source becomes in DST. */
enum convert_action {
	CONVERT_SKIP,             /* nothing: DST reads that already */
	CONVERT_ZEROS,            /* written as zeros (zero clusters) */
	CONVERT_DATA,             /* the bytes written */
};

static bool is_zero(const char *p, size_t len)
{
	return !len || (p[0] == 0 && !memcmp(p, p + 1, len - 1));
}

/*
 * A zero range of SRC: nothing to do on a fresh DST, explicit zeroes with
 * -n, and over a backing file where that does not read as zeros already.
 */
static int convert_zero(struct convert_state *s, uint64_t off, uint64_t len)
{
	struct qcow_extent ext;
	uint64_t end = off + len;
	int ret = 0;

	if (s->a->no_create)
		return disk_write_zeroes(&s->dst, off, len, 0);
	for (; s->backed && ret == 0 && off < end; off += ext.length) {
		ret = disk_map(&s->dst, off, end - off, &ext);
		if (ret == 0 && ext.kind != QCOW_EXTENT_ZERO && ext.kind != QCOW_EXTENT_UNALLOCATED)
			ret = disk_write_zeroes(&s->dst, off, ext.length, 0);
	}
	return ret;
}

/* Write out the run [start, start + len) of buf (guest bytes at off). */
static int convert_flush_run(struct convert_state *s, uint64_t off, size_t start,
			     size_t len, enum convert_action act)
{
	if (!len || act == CONVERT_SKIP)
		return 0;
	if (act == CONVERT_ZEROS)
		return disk_write_zeroes(&s->dst, off + start, len, 0);
	return disk_write(&s->dst, s->buf + start, off + start, len);
}

/* The block [pos, pos+n) of buf, and of ref (-B). */
static enum convert_action convert_block(const struct convert_state *s, size_t pos, size_t n)
{
	bool zero = s->a->sparse && is_zero(s->buf + pos, n);

	if (s->backed)
		return !memcmp(s->buf + pos, s->ref + pos, n) ? CONVERT_SKIP :
		       zero ? CONVERT_ZEROS : CONVERT_DATA;
	if (!zero)
		return CONVERT_DATA;
	return s->a->no_create ? CONVERT_ZEROS : CONVERT_SKIP;
}

/*
 * Write buf (guest bytes at off) to DST a block of the -S size at a time
 * (the whole of it with -S 0): all-zero blocks left out (or written as
 * zeros where DST would read something else), and over a backing file the
 * blocks it has already; neighbouring blocks of the same kind go out as
 * one request.
 */
static int convert_write(struct convert_state *s, uint64_t off, size_t len)
{
	uint64_t g = s->a->sparse ? s->a->sparse : len;
	size_t pos = 0, start = 0;
	enum convert_action run = CONVERT_SKIP, act;
	int ret;

	while (pos < len) {
		uint64_t to_blk_end = g - (off + pos) % g;
		size_t n = to_blk_end < len - pos ? (size_t)to_blk_end : len - pos;

		act = convert_block(s, pos, n);
		if (pos > start && act != run) {
			ret = convert_flush_run(s, off, start, pos - start, run);
			if (ret < 0)
				return ret;
			start = pos;
		}
		run = act;
		pos += n;
	}
	return convert_flush_run(s, off, start, pos - start, run);
}

static int convert_data(struct convert_state *s, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	int ret;

	while (off < end) {
		size_t n = end - off < CONVERT_CHUNK ? (size_t)(end - off) : CONVERT_CHUNK;

		ret = disk_read(&s->src, s->buf, off, n);
		if (ret >= 0 && s->backed)
			ret = disk_read(&s->dst, s->ref, off, n);	/* its backing file's */
		if (ret >= 0)
			ret = convert_write(s, off, n);
		if (ret < 0)
			return ret;
		off += n;
		progress_show(&s->progress, off, false);
	}
	return 0;
}

/* -c: the oldest cluster handed to the pool, written: compressed, or as
 * it is where that saves nothing. */
static int convert_write_oldest(struct convert_state *s, struct cpool *p, uint64_t cs)
{
	struct cjob *j = cpool_oldest(p);
	uint64_t len = s->src.size - j->off < cs ? s->src.size - j->off : cs;
	int ret;

	if (j->out_len < 0) {
		tool_error("%s: compressing the cluster at %llu failed", s->a->dst,
			   (unsigned long long)j->off);
		ret = (int)j->out_len;
	} else if (j->out_len > 0) {
		ret = qcow_write_compressed(s->dst.img, j->off, j->out, (size_t)j->out_len);
		if (ret < 0)
			disk_fail(&s->dst, ret);
	} else {
		ret = disk_write(&s->dst, j->in, j->off, len);
	}
	cpool_release(p);
	return ret;
}

/* -c: the cluster at off (len bytes of it in the disk) into the pool, or
 * nothing where DST reads those bytes already. */
static int convert_cluster(struct convert_state *s, struct cpool *p, uint64_t off,
			   uint64_t len, uint64_t cs)
{
	struct cjob *j;
	int ret = 0;

	if (cpool_full(p))
		ret = convert_write_oldest(s, p, cs);
	j = cpool_next(p);
	if (ret == 0)
		ret = disk_read(&s->src, j->in, off, len);
	if (ret == 0 && s->backed)
		ret = disk_read(&s->dst, s->ref, off, len);	/* its backing file's */
	if (ret < 0)
		return ret;
	memset(j->in + len, 0, cs - len);
	if (s->backed && !memcmp(j->in, s->ref, len))
		return 0;
	if (is_zero((char *)j->in, len))
		return s->backed ? disk_write_zeroes(&s->dst, off, len, 0) : 0;
	cpool_submit(p, off);
	return 0;
}

static int convert_compressed(struct convert_state *s, struct cpool *p)
{
	struct qcow_info info;
	struct qcow_extent ext;
	uint64_t off = 0, n, cs, size = s->src.size;
	int ret = 0;

	qcow_get_info(s->dst.img, &info);
	cs = info.cluster_size;
	while (ret == 0 && off < size) {
		ret = disk_map(&s->src, off, size - off, &ext);
		if (ret < 0)
			break;
		n = ext.length;
		if (ext.kind == QCOW_EXTENT_UNALLOCATED || ext.kind == QCOW_EXTENT_ZERO) {
			/* whole clusters of zeros: no cluster to write */
			if (off + n < size)
				n = n / cs * cs;
			if (n) {
				ret = convert_zero(s, off, n);
				off += n;
				continue;
			}
		}
		n = size - off < cs ? size - off : cs;
		ret = convert_cluster(s, p, off, n, cs);
		off += n;
		progress_show(&s->progress, off, false);
	}
	while (ret == 0 && !cpool_empty(p))
		ret = convert_write_oldest(s, p, cs);
	return ret;
}

static int convert_copy(struct convert_state *s)
{
	struct qcow_extent ext;
	uint64_t off = 0;
	int ret;

	progress_init(&s->progress, s->a->progress && !s->a->quiet, s->src.size);
	progress_show(&s->progress, 0, true);
	if (s->pool) {
		ret = convert_compressed(s, s->pool);
		if (ret < 0)
			return ret;
		off = s->src.size;
	}
	while (off < s->src.size) {
		ret = disk_map(&s->src, off, s->src.size - off, &ext);
		if (ret < 0)
			return ret;
		/* -S 0: no zero detection at all, DST ends up fully allocated. */
		if (s->a->sparse && (ext.kind == QCOW_EXTENT_UNALLOCATED ||
				     ext.kind == QCOW_EXTENT_ZERO))
			ret = convert_zero(s, off, ext.length);
		else
			ret = convert_data(s, off, ext.length);
		if (ret < 0)
			return ret;
		off += ext.length;
		progress_show(&s->progress, off, false);
	}
	progress_done(&s->progress);
	return disk_flush(&s->dst);
}

static int convert_parse_sparse(const char *arg, uint64_t *out)
{
	if (uq_parse_size(arg, false, out) || *out % 512 || *out > CONVERT_CHUNK)
		return tool_usage_error("convert", "-S: invalid sparse size '%s' (a multiple "
					"of 512 up to 2M, or 0)", arg);
	return 0;
}

static int convert_parse_opts(int argc, char **argv, struct convert_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "snapshot", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hUpqncf:O:o:S:l:B:F:", longopts, NULL)) != -1) {
		switch (c) {
		case 'U': disk_force_share = true; break;
		case 'h': convert_usage(); return 1;
		case 'l': a->snapshot = optarg; break;
		case 'p': a->progress = true; break;
		case 'q': a->quiet = true; break;
		case 'n': a->no_create = true; break;
		case 'c': a->compress = true; break;
		case 'f':
			if (disk_parse_format(optarg, &a->src_fmt))
				return -1;
			break;
		case 'O':
			if (disk_parse_format(optarg, &a->dst_fmt))
				return -1;
			break;
		case 'o': a->olists[a->nb_olists++] = optarg; break;
		case 'B': a->backing = optarg; break;
		case 'F': a->backing_fmt = optarg; break;
		case 'S':
			if (convert_parse_sparse(optarg, &a->sparse))
				return -1;
			break;
		default:
			tool_getopt_error("convert", c, argv);
			return -1;
		}
	}
	if (argc - optind != 2) {
		tool_usage_error("convert", "%s", argc - optind < 2 ?
				 "expecting source and destination file names" :
				 "too many arguments");
		return -1;
	}
	a->src = argv[optind];
	a->dst = argv[optind + 1];
	return 0;
}

/* Truncating DST must never destroy SRC. */
static int convert_same_file(const char *src, const char *dst)
{
	struct stat a, b;

	if (stat(src, &a) < 0 || stat(dst, &b) < 0)
		return 0;
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino)
		return 0;
	tool_error("%s: source and destination are the same file", dst);
	return -1;
}

/* -B/-F, or -o backing_file=/backing_fmt=: checked as qemu-img does. */
static int convert_backing(const struct convert_args *a, struct create_request *req)
{
	if ((a->backing && create_request_set(&req->backing_file, a->backing)) ||
	    (a->backing_fmt && create_request_set(&req->backing_fmt, a->backing_fmt))) {
		tool_error("out of memory");
		return -1;
	}
	if (!req->backing_file)
		return 0;
	if (!req->qcow2) {
		tool_error("%s: Backing file not supported for file format 'raw'", a->dst);
		return -1;
	}
	if (!req->backing_fmt) {
		tool_error("%s: Use of backing file requires explicit backing format (-F)", a->dst);
		return -1;
	}
	return 0;
}

static int convert_create_dst(const struct convert_args *a, uint64_t size)
{
	struct create_request req;
	char err[512] = "";
	int i, ret;

	create_request_init(&req, a->dst_fmt == DISK_FMT_QCOW2);
	for (i = 0; i < a->nb_olists; i++) {
		ret = create_request_parse(&req, a->olists[i], err, sizeof(err));
		if (ret) {
			if (ret > 0)
				snprintf(err, sizeof(err), "-o help is only available with create");
			tool_error("%s: %s", a->dst, err);
			create_request_free(&req);
			return -1;
		}
	}
	req.opts.size = size;
	ret = convert_backing(a, &req);
	if (ret == 0 && !req.qcow2)
		ret = disk_create_raw(a->dst, size) < 0 ? -1 : 0;
	if (ret < 0 || !req.qcow2) {
		create_request_free(&req);
		return ret;
	}
	req.opts.backing_file = req.backing_file;
	req.opts.backing_format = req.backing_fmt;
	ret = qcow_create(a->dst, &req.opts, true, err, sizeof(err));
	create_request_free(&req);
	if (ret < 0) {
		if (*err)
			tool_error("%s", err);
		else
			tool_error("%s: %s", a->dst, strerror(-ret));
		return -1;
	}
	return 0;
}

/* Options that do not go together, refused before anything is created. */
static int convert_check_args(const struct convert_args *a)
{
	if (a->no_create && (a->backing || a->compress)) {
		tool_error("%s cannot be used with -n", a->backing ? "-B" : "-c");
		return -1;
	}
	if (a->compress && a->dst_fmt != DISK_FMT_QCOW2) {
		tool_error("%s: Compression not supported for file format '%s'", a->dst,
			   disk_format_name(a->dst_fmt));
		return -1;
	}
	return 0;
}

static int convert_open(struct convert_state *s, const struct convert_args *a)
{
	if (convert_check_args(a) < 0)
		return -1;
	if (disk_open(&s->src, a->src, a->src_fmt, true, DISK_OPEN_GUEST) < 0)
		return -1;
	if (a->snapshot && tool_load_snapshot(&s->src, a->snapshot) < 0)
		return -1;
	if (!a->no_create && (convert_same_file(a->src, a->dst) ||
			      convert_create_dst(a, s->src.size)))
		return -1;
	/* -U is for the source, as in qemu-img: the target is written */
	disk_force_share = false;
	if (disk_open(&s->dst, a->dst, a->dst_fmt, false, DISK_OPEN_GUEST) < 0)
		return -1;
	s->backed = s->dst.img && !a->no_create && qcow_chain_depth(s->dst.img) > 0;
	if ((s->backed && !(s->ref = malloc(CONVERT_CHUNK))) ||
	    (a->compress && !(s->pool = cpool_new(s->dst.img, 0)))) {
		tool_error("out of memory");
		return -1;
	}
	if (s->dst.size < s->src.size) {
		tool_error("%s: destination is smaller than the source (%llu < %llu bytes)",
			   a->dst, (unsigned long long)s->dst.size,
			   (unsigned long long)s->src.size);
		return -1;
	}
	return 0;
}

int cmd_convert(int argc, char **argv)
{
	struct convert_args a = {
		.src_fmt = DISK_FMT_AUTO, .dst_fmt = DISK_FMT_RAW,
		.sparse = CONVERT_DEFAULT_SPARSE,
	};
	struct convert_state s = { .a = &a, .src.fd = -1, .dst.fd = -1,
				   .src.lock_fd = -1, .dst.lock_fd = -1 };
	int ret;

	a.olists = calloc((size_t)argc, sizeof(*a.olists));
	if (!a.olists) {
		tool_error("out of memory");
		return EXIT_ERROR;
	}
	ret = convert_parse_opts(argc, argv, &a);
	if (!ret) {
		s.buf = malloc(CONVERT_CHUNK);
		ret = s.buf ? convert_open(&s, &a) : -1;
		if (!s.buf)
			tool_error("out of memory");
	}
	if (!ret)
		ret = convert_copy(&s) < 0 ? -1 : 0;
	cpool_free(s.pool);	/* its threads are done with DST */
	if (disk_close(&s.dst) < 0)
		ret = -1;
	if (disk_close(&s.src) < 0)
		ret = -1;
	free(s.buf);
	free(s.ref);
	free(a.olists);
	return ret < 0 ? EXIT_ERROR : EXIT_OK;
}
