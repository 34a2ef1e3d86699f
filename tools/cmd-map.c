// SPDX-License-Identifier: MIT
/*
 * qcow-tool map: where each guest range lives, as `qemu-img map`. Runs of
 * the same kind (and, for data, contiguous host offsets) are merged.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "disk.h"
#include "options.h"
#include "tool.h"

static void map_usage(void)
{
	printf("Usage: " TOOL_NAME " map [-f qcow2|raw] [--output=human|json]\n"
	       "                     [-s OFFSET] [-l LENGTH] [--snapshot=SNAPSHOT] IMAGE\n\n"
	       "Print how the guest ranges of IMAGE map to the file.\n"
	       "human: one line per range with data: guest offset, length, host\n"
	       "       offset, file (hex); fails on compressed clusters, which have\n"
	       "       no host offset of their own.\n"
	       "json:  one object per range: start, length, depth (0: IMAGE, 1: its\n"
	       "       backing file, ...), present, zero, data, and offset where the\n"
	       "       range has a host location.\n\n"
	       "  -f FMT              image format: qcow2 or raw (detected by default)\n"
	       "  --output=FMT        human (default) or json\n"
	       "  -s, --start-offset=OFFSET  first guest byte to describe (0)\n"
	       "  -l, --max-length=LENGTH    bytes to describe (to the end)\n"
	       "  --snapshot=SNAPSHOT the mapping of internal snapshot SNAPSHOT\n"
	       "                      (snapshot.name=NAME, snapshot.id=ID, or either)\n"
	       "  -U, --force-share   read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help          this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct map_entry {
	uint64_t start;
	uint64_t length;
	bool present, zero, data, has_offset;
	uint64_t offset;
	unsigned depth;           /* the layer of the backing chain */
};

struct map_args {
	enum output_format out;
	enum disk_format fmt;
	uint64_t start, max_length;
	const char *snapshot;     /* --snapshot */
	const char *path;
};

static void map_entry_from_extent(const struct disk *d, const struct qcow_extent *e,
				  struct map_entry *m)
{
	memset(m, 0, sizeof(*m));
	m->start = e->guest_offset;
	m->length = e->length;
	m->depth = e->depth;
	switch (e->kind) {
	case QCOW_EXTENT_UNALLOCATED:
		m->zero = true;
		/* A hole in a raw file is still the file's own (zero) bytes. */
		m->present = d->fmt == DISK_FMT_RAW;
		m->has_offset = d->fmt == DISK_FMT_RAW;
		m->offset = e->guest_offset;
		break;
	case QCOW_EXTENT_ZERO:
		m->present = m->zero = true;
		m->has_offset = e->host_offset != 0;
		m->offset = e->host_offset;
		break;
	case QCOW_EXTENT_DATA:
		m->present = m->data = m->has_offset = true;
		m->offset = e->host_offset;
		break;
	case QCOW_EXTENT_COMPRESSED:
		m->present = m->data = true;
		break;
	}
}

/*
 * qemu-img looks below qcow2 data ranges into the image file only when the
 * file is much sparser than its refcounts say ("metadata preallocation"):
 * more than max(10/9 of, 2 more than) the clusters the file really holds.
 * The clusters of the file's length stand in for the refcounted ones here.
 */
static bool map_file_is_sparse(const struct disk *d)
{
	const struct qcow_file *f = qcow_get_file(d->img);
	uint64_t cs, used, limit;
	struct qcow_info info;
	struct stat st;

	if (!f || f->fd < 0 || fstat(f->fd, &st) < 0)
		return false;
	qcow_get_info(d->img, &info);
	cs = info.cluster_size;
	used = (uint64_t)st.st_blocks * 512 / cs;
	limit = used * 10 / 9 > used + 2 ? used * 10 / 9 : used + 2;
	return ((uint64_t)st.st_size + cs - 1) / cs > limit;
}

/*
 * Then, where the file has a hole the guest data reads as zero, and the
 * range is cut at the file's data/hole boundary.
 */
static void map_refine_host(const struct disk *d, bool sparse, struct map_entry *m)
{
	const struct qcow_file *f = d->img ? qcow_get_file(d->img) : NULL;
	off_t data, hole;

	if (!sparse || !f || f->fd < 0 || !m->data || !m->has_offset || m->depth)
		return;
	data = lseek(f->fd, (off_t)m->offset, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO)     /* hole (or end of file) from here on */
			m->zero = true;
		return;
	}
	if ((uint64_t)data > m->offset) {
		m->zero = true;
		if ((uint64_t)data - m->offset < m->length)
			m->length = (uint64_t)data - m->offset;
		return;
	}
	hole = lseek(f->fd, (off_t)m->offset, SEEK_HOLE);
	if (hole > (off_t)m->offset && (uint64_t)hole - m->offset < m->length)
		m->length = (uint64_t)hole - m->offset;
}

static bool map_mergeable(const struct map_entry *cur, const struct map_entry *next)
{
	if (cur->present != next->present || cur->zero != next->zero || cur->depth != next->depth ||
	    cur->data != next->data || cur->has_offset != next->has_offset)
		return false;
	return !cur->has_offset || cur->offset + cur->length == next->offset;
}

static void map_print_json(const struct map_entry *m, bool last)
{
	printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %u, "
	       "\"present\": %s, \"zero\": %s, \"data\": %s",
	       m->start, m->length, m->depth, m->present ? "true" : "false",
	       m->zero ? "true" : "false", m->data ? "true" : "false");
	if (m->has_offset)
		printf(", \"offset\": %" PRIu64, m->offset);
	printf(last ? "}" : "},\n");
}

static int map_print_human(const struct disk *d, const struct map_entry *m, const char *path)
{
	if (d->img && m->depth)
		path = qcow_get_name(qcow_get_layer(d->img, m->depth));
	if (m->data && !m->has_offset) {
		tool_error("%s: File contains compressed clusters, which have no host "
			   "offset; use --output=json", path);
		return -1;
	}
	if (m->data && !m->zero)
		printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n",
		       m->start, m->length, m->offset, path);
	return 0;
}

static int map_emit(const struct disk *d, const struct map_args *a, const struct map_entry *m,
		    bool last)
{
	if (a->out == OUTPUT_JSON) {
		map_print_json(m, last);
		return 0;
	}
	return map_print_human(d, m, a->path);
}

static int map_walk(struct disk *d, const struct map_args *a)
{
	uint64_t off = a->start, end = d->size;
	struct map_entry cur, next;
	struct qcow_extent ext;
	bool have = false, sparse = d->img && map_file_is_sparse(d);

	if (a->max_length && a->max_length < end - off)
		end = off + a->max_length;
	while (off < end) {
		if (disk_map(d, off, end - off, &ext) < 0)
			return -1;
		map_entry_from_extent(d, &ext, &next);
		map_refine_host(d, sparse, &next);
		if (have && map_mergeable(&cur, &next)) {
			cur.length += next.length;
		} else {
			if (have && map_emit(d, a, &cur, false))
				return -1;
			cur = next;
			have = true;
		}
		off += next.length;
	}
	if (!have) {
		/* qemu-img prints one empty range for an empty image. */
		memset(&cur, 0, sizeof(cur));
		cur.start = a->start;
		have = true;
	}
	if (map_emit(d, a, &cur, true))
		return -1;
	return 0;
}

static int map_parse_number(const char *opt, const char *arg, uint64_t *out)
{
	if (uq_parse_size(arg, false, out) == 0)
		return 0;
	return tool_usage_error("map", "%s: invalid value '%s'", opt, arg);
}

static int map_parse_args(int argc, char **argv, struct map_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "output", required_argument, NULL, 'O' },
		{ "start-offset", required_argument, NULL, 's' },
		{ "max-length", required_argument, NULL, 'l' },
		{ "snapshot", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hUf:s:l:", longopts, NULL)) != -1) {
		switch (c) {
		case 'U':
			disk_force_share = true;
			break;
		case 'h':
			map_usage();
			return 1;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'O':
			if (parse_output_format("map", optarg, &a->out))
				return -1;
			break;
		case 's':
			if (map_parse_number("--start-offset", optarg, &a->start))
				return -1;
			break;
		case 'l':
			if (map_parse_number("--max-length", optarg, &a->max_length))
				return -1;
			break;
		case 'S':
			a->snapshot = optarg;
			break;
		default:
			tool_getopt_error("map", c, argv);
			return -1;
		}
	}
	return tool_image_arg("map", argc, argv, &a->path);
}

int cmd_map(int argc, char **argv)
{
	struct map_args a = { .out = OUTPUT_HUMAN, .fmt = DISK_FMT_AUTO };
	struct disk d;
	int ret;

	ret = map_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	if (disk_open(&d, a.path, a.fmt, true, DISK_OPEN_GUEST) < 0)
		return EXIT_ERROR;
	if (a.snapshot && tool_load_snapshot(&d, a.snapshot) < 0) {
		disk_close(&d);
		return EXIT_ERROR;
	}
	if (a.start > d.size)
		a.start = d.size;
	if (a.out == OUTPUT_JSON)
		printf("[");
	else
		printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
	ret = map_walk(&d, &a);
	if (a.out == OUTPUT_JSON)
		printf("]\n");
	if (disk_close(&d) < 0)
		ret = -1;
	return ret ? EXIT_ERROR : EXIT_OK;
}
