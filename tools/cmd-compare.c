// SPDX-License-Identifier: MIT
/*
 * qcow-tool compare: do two images read the same, as `qemu-img compare`?
 * The walk is qemu-img's, so that every message names the same offset:
 *
 *   - both images are mapped from the same offset and the shorter extent is
 *     the step; each extent has the block status qemu would give it
 *     (cmp_status), so that -s fails at the first offset where the statuses
 *     differ, as qemu's does;
 *   - a step where both sides read as zeros by the map is skipped unread
 *     (two empty 1 TiB images cost a few map calls); otherwise up to 2 MiB
 *     is read from each side that is not zero by the map and compared in
 *     512-byte sectors from the start of the step: a mismatch is reported
 *     at the start of its first differing sector;
 *   - past the end of the smaller image the larger one must read as zeros
 *     (without -s, after "Warning: Image size mismatch!").
 *
 * Sizes are those qemu sees: rounded up to whole 512-byte sectors, the
 * tail of a file that is not a multiple of 512 bytes reading as a hole.
 *
 * Exit status, as qemu-img's: 0 identical, 1 different (or bad usage),
 * 2 an image could not be opened, 3 mapping failed, 4 reading failed.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk.h"
#include "progress.h"
#include "tool.h"

#define CMP_SECTOR      512u
#define CMP_BUF         (2u << 20)      /* the most read from a side at once */

#define CMP_SAME        0
#define CMP_DIFFERENT   1
#define CMP_ERR_OPEN    2
#define CMP_ERR_MAP     3
#define CMP_ERR_READ    4

/* qemu's block status bits (BDRV_BLOCK_*), compared as a whole by -s. */
#define ST_DATA         0x01u
#define ST_ZERO         0x02u
#define ST_OFFSET_VALID 0x04u
#define ST_ALLOCATED    0x10u
#define ST_EOF          0x20u

static void compare_usage(void)
{
	printf("Usage: " TOOL_NAME " compare [-f FMT] [-F FMT] [-p] [-q] [-s] [-U] IMAGE1 IMAGE2\n\n"
	       "Check that IMAGE1 and IMAGE2 have the same guest-visible content,\n"
	       "whatever their formats and allocation. Without -s, images of different\n"
	       "sizes compare equal when the extra part of the larger one reads as\n"
	       "zeros. Ranges that both images map as zeros are not read.\n\n"
	       "  -f FMT      format of IMAGE1: qcow2 or raw (detected by default)\n"
	       "  -F FMT      format of IMAGE2: qcow2 or raw (detected by default)\n"
	       "  -s          strict: a different size or block status is a mismatch\n"
	       "  -p          show progress on stderr\n"
	       "  -q          quiet: no message, only the exit status\n"
	       "  -U, --force-share  read while another process writes the images (as qemu-img -U)\n"
	       "  -h, --help  this text\n\n"
	       "Output: \"Images are identical.\" or \"Content mismatch at offset N!\"\n"
	       "(N the start of the first differing 512-byte sector).\n"
	       "Exit status: 0 identical, 1 different or bad usage, 2 an image could\n"
	       "not be opened, 3 mapping failed, 4 reading failed.\n");
}

struct compare_args {
	enum disk_format fmt[2];
	const char *path[2];
	bool strict, quiet, progress;
};

struct cmp_side {
	struct disk d;
	uint64_t size;          /* as qemu sees it: d.size in whole sectors */
	uint8_t *buf;
};

struct cmp_state {
	struct cmp_side side[2];
	const uint8_t *zeros;   /* CMP_BUF zero bytes */
	bool quiet;
	struct progress progress;
};

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

/* printf for the verdict lines, which -q silences. */
static void __attribute__((format(printf, 2, 3)))
cmp_say(const struct cmp_state *s, const char *fmt, ...)
{
	va_list ap;

	if (s->quiet)
		return;
	if (s->progress.on)
		fputc('\n', stderr);      /* end the progress line first */
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
}

/* The block status qemu gives an extent of the side's image. */
static unsigned cmp_status(const struct cmp_side *sd, const struct qcow_extent *e)
{
	if (sd->d.fmt == DISK_FMT_RAW)  /* file-posix: holes read as zeros */
		return e->kind == QCOW_EXTENT_UNALLOCATED ?
			ST_ZERO | ST_OFFSET_VALID | ST_ALLOCATED :
			ST_DATA | ST_OFFSET_VALID | ST_ALLOCATED;
	switch (e->kind) {
	case QCOW_EXTENT_DATA:
		return ST_DATA | ST_OFFSET_VALID | ST_ALLOCATED;
	case QCOW_EXTENT_COMPRESSED:
		return ST_DATA | ST_ALLOCATED;
	case QCOW_EXTENT_ZERO:
		return ST_ZERO | ST_ALLOCATED | (e->host_offset ? ST_OFFSET_VALID : 0);
	default:        /* allocated nowhere: zeros, from no layer */
		return ST_ZERO;
	}
}

/*
 * The status of the side's run at off (< end) into *status and its length
 * into *len. The sector-rounding tail past the end of the file is a hole,
 * and so is one that a hole reaching the end of the file runs into. Past
 * the side's size (the other image is larger) it reads as zeros up to end.
 */
static int cmp_map(struct cmp_side *sd, uint64_t off, uint64_t end, uint64_t *len,
		   unsigned *status)
{
	struct qcow_extent e = { .guest_offset = off, .kind = QCOW_EXTENT_UNALLOCATED };

	if (off >= sd->size) {
		*len = end - off;
		*status = ST_ZERO;
		return 0;
	}
	if (off < sd->d.size) {
		if (disk_map(&sd->d, off, sd->d.size - off, &e) < 0)
			return -EIO;
		*len = e.length;
	}
	*status = cmp_status(sd, &e);
	if (off >= sd->d.size || ((*status & ST_ZERO) && off + e.length == sd->d.size))
		*len = sd->size - off;
	if (off + *len == sd->size)
		*status |= ST_EOF;
	return 0;
}

/* The side's bytes [off, off + len) (len <= CMP_BUF): zeros by the map are
 * not read. */
static int cmp_bytes(struct cmp_state *s, struct cmp_side *sd, unsigned status,
		     uint64_t off, size_t len, const uint8_t **out)
{
	if (status & ST_ZERO) {
		*out = s->zeros;
		return 0;
	}
	if (disk_read(&sd->d, sd->buf, off, len) < 0)
		return -EIO;
	*out = sd->buf;
	return 0;
}

/* The first 512-byte sector (counted from a) where a and b differ: its
 * byte index, or -1 when they are the same. */
static int64_t first_diff_sector(const uint8_t *a, const uint8_t *b, size_t len)
{
	size_t i, n;

	if (!memcmp(a, b, len))
		return -1;
	for (i = 0; i < len; i += n) {
		n = min_u64(CMP_SECTOR, len - i);
		if (memcmp(a + i, b + i, n))
			return (int64_t)i;
	}
	return -1;
}

/* Compare [off, off + len) of sd[0] and sd[1], statuses st; CMP_*. */
static int cmp_step(struct cmp_state *s, struct cmp_side *const sd[2], const unsigned st[2],
		    uint64_t off, size_t len)
{
	const uint8_t *p[2];
	int64_t diff;
	int i;

	for (i = 0; i < 2; i++)
		if (cmp_bytes(s, sd[i], st[i], off, len, &p[i]) < 0)
			return CMP_ERR_READ;
	diff = first_diff_sector(p[0], p[1], len);
	if (diff < 0)
		return CMP_SAME;
	cmp_say(s, "Content mismatch at offset %" PRIu64 "!\n", off + (uint64_t)diff);
	return CMP_DIFFERENT;
}

/*
 * [off, end): both sides, step by step. Past the end of the smaller image
 * (end the larger size, not strict) its side reads as zeros, so that the
 * larger one's data is compared against them.
 */
static int cmp_range(struct cmp_state *s, bool strict, uint64_t off, uint64_t end)
{
	struct cmp_side *const sd[2] = { &s->side[0], &s->side[1] };
	uint64_t len[2], step;
	unsigned st[2];
	int i, ret;

	while (off < end) {
		for (i = 0; i < 2; i++)
			if (cmp_map(sd[i], off, end, &len[i], &st[i]) < 0)
				return CMP_ERR_MAP;
		step = min_u64(len[0], len[1]);
		if (strict && st[0] != st[1]) {
			cmp_say(s, "Strict mode: Offset %" PRIu64 " block status mismatch!\n", off);
			return CMP_DIFFERENT;
		}
		if (!(st[0] & st[1] & ST_ZERO)) {
			step = min_u64(step, CMP_BUF);
			ret = cmp_step(s, sd, st, off, (size_t)step);
			if (ret != CMP_SAME)
				return ret;
		}
		off += step;
		progress_show(&s->progress, off, false);
	}
	return CMP_SAME;
}

static int cmp_images(struct cmp_state *s, bool strict)
{
	uint64_t size0 = s->side[0].size, size1 = s->side[1].size;
	uint64_t small = min_u64(size0, size1);
	int ret;

	progress_show(&s->progress, 0, true);
	if (strict && size0 != size1) {
		cmp_say(s, "Strict mode: Image size mismatch!\n");
		return CMP_DIFFERENT;
	}
	ret = cmp_range(s, strict, 0, small);
	if (ret == CMP_SAME && size0 != size1) {
		cmp_say(s, "Warning: Image size mismatch!\n");
		ret = cmp_range(s, false, small, size0 + size1 - small);
	}
	if (ret != CMP_SAME)
		return ret;
	progress_show(&s->progress, s->progress.total, true);
	cmp_say(s, "Images are identical.\n");
	return CMP_SAME;
}

/* 0 to go on, -1 after --help, or the exit status of bad usage. */
static int compare_parse_args(int argc, char **argv, struct compare_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:F:pqsU", longopts, NULL)) != -1) {
		switch (c) {
		case 'h': compare_usage(); return -1;
		case 'p': a->progress = true; break;
		case 'q': a->quiet = true; break;
		case 's': a->strict = true; break;
		case 'U':
			disk_force_share = true;
			break;
		case 'f':
		case 'F':
			/* qemu-img fails to open the image: exit 2, not a usage error */
			if (disk_parse_format(optarg, &a->fmt[c == 'F']))
				return CMP_ERR_OPEN;
			break;
		default:
			return tool_getopt_error("compare", c, argv);
		}
	}
	if (argc - optind != 2)
		return tool_usage_error("compare", "expecting two image file names");
	a->path[0] = argv[optind];
	a->path[1] = argv[optind + 1];
	return 0;
}

static int cmp_open(struct cmp_state *s, const struct compare_args *a)
{
	int i;

	for (i = 0; i < 2; i++) {
		struct cmp_side *sd = &s->side[i];

		if (disk_open(&sd->d, a->path[i], a->fmt[i], true, DISK_OPEN_GUEST) < 0)
			return CMP_ERR_OPEN;
		sd->size = (sd->d.size + CMP_SECTOR - 1) / CMP_SECTOR * CMP_SECTOR;
	}
	return CMP_SAME;
}

int cmd_compare(int argc, char **argv)
{
	struct compare_args a = { .fmt = { DISK_FMT_AUTO, DISK_FMT_AUTO } };
	struct cmp_state s = { .quiet = false };
	uint8_t *zeros = NULL;
	int i, ret;

	ret = compare_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_OK : ret;
	s.quiet = a.quiet;
	for (i = 0; i < 2; i++) {
		s.side[i].d.fd = -1;
		s.side[i].d.lock_fd = -1;
	}
	zeros = calloc(1, CMP_BUF);
	s.side[0].buf = malloc(CMP_BUF);
	s.side[1].buf = malloc(CMP_BUF);
	if (!zeros || !s.side[0].buf || !s.side[1].buf) {
		tool_error("out of memory");
		ret = CMP_ERR_OPEN;
		goto out;
	}
	s.zeros = zeros;
	ret = cmp_open(&s, &a);
	if (ret == CMP_SAME) {
		progress_init(&s.progress, a.progress && !a.quiet,
			      s.side[0].size > s.side[1].size ? s.side[0].size : s.side[1].size);
		ret = cmp_images(&s, a.strict);
	}
out:
	for (i = 0; i < 2; i++) {
		disk_close(&s.side[i].d);
		free(s.side[i].buf);
	}
	free(zeros);
	return ret;
}
