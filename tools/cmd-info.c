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
	printf("Usage: " TOOL_NAME " info [-f qcow2|raw] [--output=human|json] IMAGE\n\n"
	       "Print the virtual size, disk usage, cluster size and format specific\n"
	       "details (compat level, refcount width, dirty/corrupt flags) of IMAGE.\n"
	       "The format is detected when -f is not given.\n\n"
	       "  -f FMT          image format: qcow2 or raw\n"
	       "  --output=FMT    human (default) or json (qemu-img's keys)\n"
	       "  -h, --help      this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct info_view {
	const char *path;
	enum disk_format fmt;
	uint64_t virtual_size;
	uint64_t actual_size;     /* allocated bytes of the file */
	struct qcow_info q;       /* qcow2 only */
	char full_backing[4096];
};

static bool info_v3(const struct info_view *v)
{
	return v->fmt == DISK_FMT_QCOW2 && v->q.version >= 3;
}

static void info_print_specific(const struct info_view *v)
{
	const struct qcow_info *q = &v->q;

	printf("Format specific information:\n");
	printf("    compat: %s\n", q->version >= 3 ? "1.1" : "0.10");
	printf("    compression type: zlib\n");
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
	json_add_str(data, "compression-type", "zlib");
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

static void info_print_json(const struct info_view *v)
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
	json_print(stdout, &top);
}

/* A relative backing file name is relative to the image's directory. */
static void info_resolve_backing(struct info_view *v)
{
	const char *slash = strrchr(v->path, '/');
	int dirlen = slash ? (int)(slash - v->path + 1) : 0;

	if (v->q.backing_file[0] == '/' || !dirlen)
		snprintf(v->full_backing, sizeof(v->full_backing), "%s", v->q.backing_file);
	else
		snprintf(v->full_backing, sizeof(v->full_backing), "%.*s%s",
			 dirlen, v->path, v->q.backing_file);
}

static int info_collect(struct info_view *v, enum disk_format fmt)
{
	struct disk d;
	struct stat st;

	if (disk_open(&d, v->path, fmt, true, true) < 0)
		return -1;
	v->fmt = d.fmt;
	v->virtual_size = d.size;
	if (d.img) {
		qcow_get_info(d.img, &v->q);
		info_resolve_backing(v);
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
	const char *path;
};

static int info_parse_args(int argc, char **argv, struct info_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "output", required_argument, NULL, 'O' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hf:", longopts, NULL)) != -1) {
		switch (c) {
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

int cmd_info(int argc, char **argv)
{
	struct info_args a = { .out = OUTPUT_HUMAN, .fmt = DISK_FMT_AUTO };
	struct info_view *v;
	int ret;

	ret = info_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	/* Large (a 4 KiB path buffer, a qcow_info): keep it off the stack. */
	v = calloc(1, sizeof(*v));
	if (!v) {
		tool_error("out of memory");
		return EXIT_ERROR;
	}
	v->path = a.path;
	ret = info_collect(v, a.fmt);
	if (!ret && a.out == OUTPUT_JSON)
		info_print_json(v);
	else if (!ret)
		info_print_human(v);
	free(v);
	return ret ? EXIT_ERROR : EXIT_OK;
}
