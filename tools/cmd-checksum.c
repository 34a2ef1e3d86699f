// SPDX-License-Identifier: MIT
/*
 * qcow-tool checksum: a digest of the guest-visible content of an image,
 * the same for any format and allocation that give the same bytes (a raw
 * file, a qcow2 image, the same after convert or convert -c). The exact
 * definition is doc/checksum.md: XXH3-128 of each 64 KiB block, then of
 * the size and the block digests in order.
 *
 * Ranges that read as zeros (holes in a raw file, unallocated and zero
 * clusters) are not read: every whole zero block has the same digest,
 * computed once, so a sparse image costs about the time of its data.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "disk.h"
#include "progress.h"
#include "tool.h"

#define SUM_BLOCK       (64u << 10)     /* bytes per block digest */
#define SUM_CHUNK_BLOCKS 16u            /* blocks read at once (1 MiB) */
#define SUM_BATCH       4096u           /* block digests combined at once */

static uint64_t min_u64(uint64_t a, uint64_t b)
{
	return a < b ? a : b;
}

static void checksum_usage(void)
{
	printf("Usage: " TOOL_NAME " checksum [-f qcow2|raw] [-l SNAPSHOT] [-p] IMAGE\n\n"
	       "Print a digest of the guest-visible content of IMAGE: the same for\n"
	       "every image that reads the same bytes, whatever its format and\n"
	       "allocation. XXH3-128 of each 64 KiB block, then of the virtual size\n"
	       "and the block digests in order (doc/checksum.md). Ranges that read\n"
	       "as zeros are not read.\n\n"
	       "  -f FMT              image format: qcow2 or raw (detected by default)\n"
	       "  -l, --snapshot=SNAPSHOT  the content of internal snapshot SNAPSHOT\n"
	       "                      (snapshot.name=NAME, snapshot.id=ID, or either)\n"
	       "  -p                  show progress on stderr\n"
	       "  -U, --force-share   read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help          this text\n\n"
	       "Output: the digest in 32 hex digits, two spaces, IMAGE.\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct checksum_args {
	enum disk_format fmt;
	const char *snapshot;
	const char *path;
	bool progress;
};

/* The combining digest, fed block digests in batches. */
struct sum_state {
	struct disk *d;
	XXH3_state_t *outer;
	XXH128_canonical_t batch[SUM_BATCH];
	unsigned nbatch;
	XXH128_canonical_t zero_block;  /* the digest of SUM_BLOCK zeros */
	uint8_t *buf;                   /* a chunk's bytes */
	struct qcow_extent ext;         /* the last extent mapped */
	uint64_t ext_end;               /* ... and where it ends (0: none yet) */
	struct progress progress;
};

static int add_block(struct sum_state *s, const XXH128_canonical_t *h)
{
	s->batch[s->nbatch++] = *h;
	if (s->nbatch < SUM_BATCH)
		return 0;
	s->nbatch = 0;
	return XXH3_128bits_update(s->outer, s->batch, sizeof(s->batch)) == XXH_OK ? 0 : -ENOMEM;
}

static void block_digest(const void *p, size_t len, XXH128_canonical_t *out)
{
	XXH128_canonicalFromHash(out, XXH3_128bits(p, len));
}

static bool reads_zero(const struct qcow_extent *e)
{
	return e->kind == QCOW_EXTENT_UNALLOCATED || e->kind == QCOW_EXTENT_ZERO;
}

/* Does [off, end) read as zeros by the image's map alone (nothing read)? */
static int range_is_zero(struct sum_state *s, uint64_t off, uint64_t end, bool *zero)
{
	*zero = true;
	while (off < end) {
		if (off >= s->ext_end || off < s->ext.guest_offset) {
			if (disk_map(s->d, off, s->d->size - off, &s->ext) < 0)
				return -EIO;
			if (!s->ext.length)
				return -EIO;
			s->ext_end = s->ext.guest_offset + s->ext.length;
		}
		if (!reads_zero(&s->ext)) {
			*zero = false;
			return 0;
		}
		off = s->ext_end;
	}
	return 0;
}

/* The blocks of one chunk [off, off + len): the data read in one go, from
 * its first block that is not zero by the map to its last. */
static int sum_chunk(struct sum_state *s, uint64_t off, uint64_t len)
{
	unsigned n = (unsigned)((len + SUM_BLOCK - 1) / SUM_BLOCK), i, first = n, last = 0;
	bool zero[SUM_CHUNK_BLOCKS];
	XXH128_canonical_t h;
	int ret;

	for (i = 0; i < n; i++) {
		uint64_t b = off + (uint64_t)i * SUM_BLOCK, e = min_u64(b + SUM_BLOCK, off + len);

		ret = range_is_zero(s, b, e, &zero[i]);
		if (ret < 0)
			return ret;
		if (!zero[i]) {
			first = (first < i ? first : i);
			last = i;
		}
	}
	if (first < n) {
		uint64_t from = off + (uint64_t)first * SUM_BLOCK;
		uint64_t to = min_u64(off + (uint64_t)(last + 1) * SUM_BLOCK, off + len);

		if (disk_read(s->d, s->buf + (size_t)first * SUM_BLOCK, from, to - from) < 0)
			return -EIO;
	}
	for (i = 0; i < n; i++) {
		uint64_t b = (uint64_t)i * SUM_BLOCK, blen = min_u64((uint64_t)SUM_BLOCK, len - b);

		if (zero[i] && blen == SUM_BLOCK) {
			h = s->zero_block;
		} else {
			if (zero[i])
				memset(s->buf + b, 0, blen);	/* the short last block */
			block_digest(s->buf + b, blen, &h);
		}
		ret = add_block(s, &h);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The digest of s->d's content into out. */
static int sum_image(struct sum_state *s, XXH128_canonical_t *out)
{
	uint64_t size = s->d->size, off, chunk = (uint64_t)SUM_BLOCK * SUM_CHUNK_BLOCKS;
	uint8_t le_size[8];
	unsigned i;
	int ret = 0;

	for (i = 0; i < 8; i++)
		le_size[i] = (uint8_t)(size >> (8 * i));
	if (XXH3_128bits_reset(s->outer) != XXH_OK ||
	    XXH3_128bits_update(s->outer, le_size, sizeof(le_size)) != XXH_OK)
		return -ENOMEM;
	memset(s->buf, 0, SUM_BLOCK);
	block_digest(s->buf, SUM_BLOCK, &s->zero_block);
	for (off = 0; off < size && ret == 0; off += chunk) {
		ret = sum_chunk(s, off, min_u64(chunk, size - off));
		progress_show(&s->progress, off, false);
	}
	if (ret < 0)
		return ret;
	progress_done(&s->progress);
	if (s->nbatch &&
	    XXH3_128bits_update(s->outer, s->batch, s->nbatch * sizeof(s->batch[0])) != XXH_OK)
		return -ENOMEM;
	XXH128_canonicalFromHash(out, XXH3_128bits_digest(s->outer));
	return 0;
}

static int checksum_parse_args(int argc, char **argv, struct checksum_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "snapshot", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hUf:l:p", longopts, NULL)) != -1) {
		switch (c) {
		case 'U':
			disk_force_share = true;
			break;
		case 'h':
			checksum_usage();
			return 1;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'l':
			a->snapshot = optarg;
			break;
		case 'p':
			a->progress = true;
			break;
		default:
			tool_getopt_error("checksum", c, argv);
			return -1;
		}
	}
	return tool_image_arg("checksum", argc, argv, &a->path);
}

int cmd_checksum(int argc, char **argv)
{
	struct checksum_args a = { .fmt = DISK_FMT_AUTO };
	struct sum_state *s;
	XXH128_canonical_t digest;
	struct disk d;
	int ret;

	ret = checksum_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	s = calloc(1, sizeof(*s));
	if (s) {
		s->outer = XXH3_createState();
		s->buf = malloc((size_t)SUM_BLOCK * SUM_CHUNK_BLOCKS);
	}
	if (!s || !s->outer || !s->buf) {
		tool_error("%s: out of memory", a.path);
		ret = -ENOMEM;
		goto out;
	}
	if (disk_open(&d, a.path, a.fmt, true, DISK_OPEN_GUEST) < 0) {
		ret = -EIO;
		goto out;
	}
	s->d = &d;
	ret = a.snapshot ? tool_load_snapshot(&d, a.snapshot) : 0;
	if (ret == 0) {
		progress_init(&s->progress, a.progress, d.size);
		ret = sum_image(s, &digest);
		if (ret == -ENOMEM)
			tool_error("%s: out of memory", a.path);
	}
	if (disk_close(&d) < 0 && ret == 0)
		ret = -EIO;
	if (ret == 0) {
		for (unsigned i = 0; i < sizeof(digest.digest); i++)
			printf("%02x", digest.digest[i]);
		printf("  %s\n", a.path);
	}
out:
	if (s) {
		XXH3_freeState(s->outer);
		free(s->buf);
		free(s);
	}
	return ret < 0 ? EXIT_ERROR : EXIT_OK;
}
