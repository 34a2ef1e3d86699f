// SPDX-License-Identifier: MIT
/*
 * qcow-tool bitmap: add, remove, clear, enable, disable and merge
 * persistent dirty bitmaps, as `qemu-img bitmap`: the actions run in the
 * order given, each one crash safe on its own (format/bitmap.c), and the
 * first that fails stops the command with qemu's message.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "disk.h"
#include "options.h"
#include "tool.h"

#define MAX_ACTIONS 64

static void bitmap_usage(void)
{
	printf("Usage: " TOOL_NAME " bitmap (--merge SOURCE | --add | --remove | --clear |\n"
	       "         --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]]\n"
	       "         [-g GRANULARITY] [--object OBJDEF] [-f FMT] FILENAME BITMAP\n\n"
	       "Change the persistent dirty bitmap BITMAP of FILENAME, as qemu-img bitmap.\n"
	       "Several actions run in order.\n\n"
	       "  --add           create BITMAP, empty and enabled\n"
	       "  --remove        delete BITMAP\n"
	       "  --clear         clear every bit of BITMAP\n"
	       "  --enable        BITMAP records writes again\n"
	       "  --disable       BITMAP stops recording writes\n"
	       "  --merge SOURCE  set every bit of bitmap SOURCE in BITMAP\n"
	       "  -b SOURCE_FILE  SOURCE is in this image (default: FILENAME)\n"
	       "  -F SOURCE_FMT   its format (qcow2)\n"
	       "  -g GRANULARITY  with --add: bytes per bit (default: the cluster size,\n"
	       "                  kept within 4 KiB..64 KiB, as qemu)\n"
	       "  -f FMT          image format (qcow2)\n"
	       "  -h, --help      this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct action {
	enum qcow_bitmap_action act;
	const char *src;
};

struct bitmap_args {
	struct action a[MAX_ACTIONS];
	unsigned n;
	enum disk_format fmt, src_fmt;
	const char *src_file;
	uint64_t granularity;
	const char *path, *name;
};

static const char *const act_name[] = {
	[QCOW_BITMAP_ADD] = "add", [QCOW_BITMAP_REMOVE] = "remove",
	[QCOW_BITMAP_CLEAR] = "clear", [QCOW_BITMAP_ENABLE] = "enable",
	[QCOW_BITMAP_DISABLE] = "disable", [QCOW_BITMAP_MERGE] = "merge",
};

static int push(struct bitmap_args *b, enum qcow_bitmap_action act, const char *src)
{
	if (b->n == MAX_ACTIONS) {
		tool_error("too many actions");
		return -1;
	}
	b->a[b->n].act = act;
	b->a[b->n++].src = src;
	return 0;
}

static int bitmap_option(struct bitmap_args *b, int c, char **argv)
{
	switch (c) {
	case 'A': return push(b, QCOW_BITMAP_ADD, NULL);
	case 'R': return push(b, QCOW_BITMAP_REMOVE, NULL);
	case 'C': return push(b, QCOW_BITMAP_CLEAR, NULL);
	case 'E': return push(b, QCOW_BITMAP_ENABLE, NULL);
	case 'D': return push(b, QCOW_BITMAP_DISABLE, NULL);
	case 'M': return push(b, QCOW_BITMAP_MERGE, optarg);
	case 'b': b->src_file = optarg; return 0;
	case 'F': return disk_parse_format(optarg, &b->src_fmt) ? -1 : 0;
	case 'f': return disk_parse_format(optarg, &b->fmt) ? -1 : 0;
	case 'O': return 0;   /* --object: no secrets are needed here */
	case 'g':
		if (uq_parse_size(optarg, false, &b->granularity) || !b->granularity) {
			tool_error("Invalid granularity specified");
			return -1;
		}
		return 0;
	default:
		tool_getopt_error("bitmap", c, argv);
		return -1;
	}
}

/* qemu-img's checks, in its order and words. */
static int bitmap_check_args(int argc, char **argv, struct bitmap_args *b)
{
	unsigned i;
	bool add = false;

	for (i = 0; i < b->n; i++)
		add |= b->a[i].act == QCOW_BITMAP_ADD;
	if (!b->n) {
		tool_error("Need at least one of --add, --remove, --clear, --enable, "
			   "--disable, or --merge");
		return -1;
	}
	if (b->granularity && !add) {
		tool_error("granularity only supported with --add");
		return -1;
	}
	if (b->src_fmt != DISK_FMT_AUTO && !b->src_file) {
		tool_error("-F only supported with -b");
		return -1;
	}
	if (optind != argc - 2) {
		tool_error("Expecting filename and bitmap name");
		return -1;
	}
	b->path = argv[optind];
	b->name = argv[optind + 1];
	return 0;
}

static int bitmap_parse_args(int argc, char **argv, struct bitmap_args *b)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "add", no_argument, NULL, 'A' },
		{ "remove", no_argument, NULL, 'R' },
		{ "clear", no_argument, NULL, 'C' },
		{ "enable", no_argument, NULL, 'E' },
		{ "disable", no_argument, NULL, 'D' },
		{ "merge", required_argument, NULL, 'M' },
		{ "object", required_argument, NULL, 'O' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hb:F:f:g:", longopts, NULL)) != -1) {
		if (c == 'h') {
			bitmap_usage();
			return 1;
		}
		if (bitmap_option(b, c, argv))
			return -1;
	}
	return bitmap_check_args(argc, argv, b);
}

/* qemu's words, without the image name the engine puts first. */
static const char *strip(const char *msg, const char *path)
{
	size_t pl = path ? strlen(path) : 0;

	return pl && !strncmp(msg, path, pl) && !strncmp(msg + pl, ": ", 2) ? msg + pl + 2 : msg;
}

/* qemu's default granularity: the cluster size, kept within 4 KiB..64 KiB. */
static uint64_t default_granularity(struct disk *d)
{
	struct qcow_info info;

	qcow_get_info(d->img, &info);
	return info.cluster_size < 4096 ? 4096 : info.cluster_size > 65536 ? 65536 :
	       info.cluster_size;
}

/* The actions in order; the first failure stops them, as in qemu-img. */
static int run_actions(struct disk *d, struct disk *src, const struct bitmap_args *b)
{
	uint64_t g = b->granularity ? b->granularity : default_granularity(d);
	unsigned i;

	for (i = 0; i < b->n; i++) {
		const struct action *a = &b->a[i];

		if (qcow_bitmap_edit(d->img, a->act, b->name, g, src ? src->img : NULL,
				     a->src) < 0) {
			const char *msg = strip(strip(qcow_error(d->img), b->path), b->src_file);

			tool_error("Operation %s on bitmap %s failed: %s", act_name[a->act],
				   b->name, msg);
			return -1;
		}
	}
	return 0;
}

int cmd_bitmap(int argc, char **argv)
{
	struct bitmap_args b = { .fmt = DISK_FMT_AUTO, .src_fmt = DISK_FMT_AUTO };
	struct disk d, src;
	bool have_src = false;
	int ret;

	ret = bitmap_parse_args(argc, argv, &b);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	if (disk_open(&d, b.path, b.fmt, false, DISK_OPEN_GUEST) < 0)
		return EXIT_ERROR;
	ret = 0;
	if (d.fmt != DISK_FMT_QCOW2) {
		tool_error("Operation %s on bitmap %s failed: Block format 'raw' used by "
			   "device '' does not support feature 'bitmaps'",
			   act_name[b.a[0].act], b.name);
		ret = -1;
	}
	if (!ret && b.src_file) {
		ret = disk_open(&src, b.src_file, b.src_fmt, true, DISK_OPEN_GUEST);
		have_src = ret == 0;
	}
	if (!ret)
		ret = run_actions(&d, have_src ? &src : NULL, &b);
	if (have_src)
		disk_close(&src);
	if (disk_close(&d) < 0)
		ret = -1;
	return ret ? EXIT_ERROR : EXIT_OK;
}
