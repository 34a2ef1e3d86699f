// SPDX-License-Identifier: MIT
/*
 * qcow-tool info: describe an image, as `qemu-img info`. The image is opened
 * read-only for checking, so dirty or corrupt images can still be inspected.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "qcow/format.h"
#include "disk.h"
#include "json.h"
#include "options.h"
#include "tool.h"

static void info_usage(void)
{
	printf("Usage: " TOOL_NAME " info [-f qcow2|raw] [--backing-chain] [--output=human|json]\n"
	       "                      IMAGE\n\n"
	       "Print the virtual size, disk usage, cluster size and format specific\n"
	       "details (compat level, refcount width, dirty/corrupt flags) of IMAGE.\n"
	       "The format is detected when -f is not given.\n\n"
	       "  -f FMT          image format: qcow2 or raw\n"
	       "  --backing-chain the same for every image of IMAGE's backing chain, in\n"
	       "                  order (json: an array)\n"
	       "  --output=FMT    human (default) or json (qemu-img's keys)\n"
	       "  -U, --force-share  read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help      this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct info_view {
	const char *path;
	enum disk_format fmt;
	uint64_t virtual_size;
	uint64_t actual_size;     /* allocated bytes of the file */
	struct qcow_info q;       /* qcow2 only */
	char *full_backing;       /* the backing file's path (malloc'd), NULL: none */
};

static bool info_v3(const struct info_view *v)
{
	return v->fmt == DISK_FMT_QCOW2 && v->q.version >= 3;
}

static const char *info_compression(const struct qcow_info *q)
{
	return q->compression_type == QCOW_COMPRESSION_ZSTD ? "zstd" : "zlib";
}

static void info_print_specific(const struct info_view *v)
{
	const struct qcow_info *q = &v->q;

	printf("Format specific information:\n");
	printf("    compat: %s\n", q->version >= 3 ? "1.1" : "0.10");
	printf("    compression type: %s\n", info_compression(q));
	if (info_v3(v))
		printf("    lazy refcounts: %s\n",
		       q->compatible_features & QCOW_COMPAT_LAZY_REFCOUNTS ? "true" : "false");
	printf("    refcount bits: %u\n", q->refcount_bits);
	if (info_v3(v)) {
		printf("    corrupt: %s\n", q->corrupt ? "true" : "false");
		printf("    extended l2: %s\n",
		       q->incompatible_features & QCOW_INCOMPAT_EXTL2 ? "true" : "false");
	}
}

static void info_print_human(const struct info_view *v)
{
	char vsize[32], dsize[32];

	format_size_human(v->virtual_size, vsize, sizeof(vsize));
	format_size_human(v->actual_size, dsize, sizeof(dsize));
	printf("image: %s\nfile format: %s\n", v->path, disk_format_name(v->fmt));
	printf("virtual size: %s (%" PRIu64 " bytes)\n", vsize, v->virtual_size);
	printf("disk size: %s\n", dsize);
	if (v->fmt != DISK_FMT_QCOW2)
		return;
	printf("cluster_size: %" PRIu64 "\n", v->q.cluster_size);
	if (v->q.backing_file[0]) {
		printf("backing file: %s", v->q.backing_file);
		if (strcmp(v->full_backing, v->q.backing_file))
			printf(" (actual path: %s)", v->full_backing);
		printf("\n");
	}
	if (v->q.backing_format[0])
		printf("backing file format: %s\n", v->q.backing_format);
	/* Not in qemu-img's text; printed only when they say something. */
	if (v->q.nb_snapshots)
		printf("snapshots: %" PRIu32 "\n", v->q.nb_snapshots);
	if (v->q.dirty)
		printf("dirty flag: true\n");
	info_print_specific(v);
}

static void info_add_specific(const struct info_view *v, struct json_obj *data)
{
	const struct qcow_info *q = &v->q;

	json_add_str(data, "compat", q->version >= 3 ? "1.1" : "0.10");
	json_add_str(data, "compression-type", info_compression(q));
	if (info_v3(v))
		json_add_bool(data, "lazy-refcounts",
			      q->compatible_features & QCOW_COMPAT_LAZY_REFCOUNTS);
	json_add_uint(data, "refcount-bits", q->refcount_bits);
	if (info_v3(v)) {
		json_add_bool(data, "corrupt", q->corrupt);
		json_add_bool(data, "extended-l2",
			      q->incompatible_features & QCOW_INCOMPAT_EXTL2);
	}
}

/* element: print as an element of the --backing-chain array, first or not */
static void info_print_json(const struct info_view *v, int element)
{
	struct json_obj top, spec, data;
	bool qcow2 = v->fmt == DISK_FMT_QCOW2;

	json_init(&top);
	json_init(&spec);
	json_init(&data);
	json_add_uint(&top, "virtual-size", v->virtual_size);
	json_add_str(&top, "filename", v->path);
	if (qcow2)
		json_add_uint(&top, "cluster-size", v->q.cluster_size);
	json_add_str(&top, "format", disk_format_name(v->fmt));
	json_add_uint(&top, "actual-size", v->actual_size);
	if (qcow2 && v->q.backing_file[0]) {
		json_add_str(&top, "backing-filename", v->q.backing_file);
		json_add_str(&top, "full-backing-filename", v->full_backing);
	}
	if (qcow2 && v->q.backing_format[0])
		json_add_str(&top, "backing-filename-format", v->q.backing_format);
	if (qcow2) {
		info_add_specific(v, &data);
		json_add_str(&spec, "type", "qcow2");
		json_add_obj(&spec, "data", &data);
		json_add_obj(&top, "format-specific", &spec);
		json_add_uint(&top, "snapshots-count", v->q.nb_snapshots);
	}
	json_add_bool(&top, "dirty-flag", qcow2 && v->q.dirty);
	if (element < 0)
		json_print(stdout, &top);
	else
		json_print_element(stdout, &top, element == 0);
}

static int info_collect(struct info_view *v, enum disk_format fmt)
{
	struct disk d;
	struct stat st;

	if (disk_open(&d, v->path, fmt, true, DISK_OPEN_CHECK) < 0)
		return -1;
	v->fmt = d.fmt;
	/* a raw file's size in whole sectors, as QEMU's block layer sees it */
	v->virtual_size = d.img ? d.size : (d.size + 511) & ~511ULL;
	if (d.img) {
		qcow_get_info(d.img, &v->q);
		if (v->q.backing_file[0] &&
		    qcow_backing_path(v->path, v->q.backing_file, &v->full_backing) < 0) {
			tool_error("out of memory");
			disk_close(&d);
			return -1;
		}
	}
	if (disk_close(&d) < 0)
		return -1;
	if (stat(v->path, &st) < 0) {
		tool_error("%s: %m", v->path);
		return -1;
	}
	v->actual_size = (uint64_t)st.st_blocks * 512;
	return 0;
}

struct info_args {
	enum output_format out;
	enum disk_format fmt;
	bool chain;               /* --backing-chain */
	const char *path;
};

static int info_parse_args(int argc, char **argv, struct info_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "output", required_argument, NULL, 'O' },
		{ "backing-chain", no_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hUf:", longopts, NULL)) != -1) {
		switch (c) {
		case 'U':
			disk_force_share = true;
			break;
		case 'h':
			info_usage();
			return 1;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'O':
			if (parse_output_format("info", optarg, &a->out))
				return -1;
			break;
		case 'B':
			a->chain = true;
			break;
		default:
			tool_getopt_error("info", c, argv);
			return -1;
		}
	}
	if (optind != argc - 1) {
		tool_usage_error("info", "%s", optind >= argc ?
				 "expecting image file name" : "too many arguments");
		return -1;
	}
	a->path = argv[optind];
	return 0;
}

/*
 * Image n of the chain (0: IMAGE itself; -1: IMAGE alone), printed; then
 * *next is its backing file's path (malloc'd, NULL: none) and *fmt its
 * format as the image records it (else detected).
 */
static int info_one(const char *path, enum disk_format *fmt, const struct info_args *a, int n,
		    char **next)
{
	/* Large (a qcow_info with two name buffers): keep it off the stack. */
	struct info_view *v = calloc(1, sizeof(*v));
	int ret;

	*next = NULL;
	if (!v) {
		tool_error("out of memory");
		return -1;
	}
	v->path = path;
	ret = info_collect(v, *fmt);
	if (!ret && a->out == OUTPUT_JSON)
		info_print_json(v, n);
	else if (!ret) {
		if (n > 0)
			printf("\n");
		info_print_human(v);
	}
	*fmt = DISK_FMT_AUTO;
	if (!ret && v->q.backing_format[0] && disk_parse_format(v->q.backing_format, fmt) < 0)
		ret = -1;
	*next = ret ? NULL : v->full_backing;
	if (ret)
		free(v->full_backing);
	free(v);
	return ret;
}

/* --backing-chain: IMAGE, its backing file, its backing file's, ... */
static int info_chain(const struct info_args *a)
{
	enum disk_format fmt = a->fmt;
	char *path = NULL, *next;
	int n, ret = 0;

	for (n = 0; n == 0 || path; n++) {
		if (n > QCOW_MAX_CHAIN) {
			tool_error("%s: backing chain deeper than %d images (a loop?)", a->path,
				   QCOW_MAX_CHAIN);
			ret = -1;
			break;
		}
		ret = info_one(n ? path : a->path, &fmt, a, n, &next);
		free(path);
		path = next;
		if (ret)
			break;
	}
	free(path);
	if (a->out == OUTPUT_JSON && n > 0)
		json_print_array_end(stdout);	/* the array was opened */
	return ret;
}

int cmd_info(int argc, char **argv)
{
	struct info_args a = { .out = OUTPUT_HUMAN, .fmt = DISK_FMT_AUTO };
	enum disk_format fmt;
	char *next = NULL;
	int ret;

	ret = info_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	fmt = a.fmt;
	if (a.chain)
		ret = info_chain(&a);
	else
		ret = info_one(a.path, &fmt, &a, -1, &next);
	free(next);
	return ret ? EXIT_ERROR : EXIT_OK;
}
