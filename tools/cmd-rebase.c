// SPDX-License-Identifier: MIT
/*
 * qcow-tool rebase: give an image another backing file, as `qemu-img
 * rebase`.  Safe mode keeps the guest content (qcow_rebase: what the image
 * does not allocate and reads differently through the new backing file is
 * copied in first, then one header write names it); -u (unsafe) only
 * rewrites the name (qcow_set_backing), for a backing file that was moved
 * or copied.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk.h"
#include "options.h"
#include "progress.h"
#include "tool.h"

static void rebase_usage(void)
{
	printf("Usage: " TOOL_NAME " rebase [-q] [-p] [-u] [-f qcow2] -b BACKING [-F FMT] IMAGE\n\n"
	       "Make BACKING the backing file of IMAGE (\"\" for none). Without -u the\n"
	       "guest content of IMAGE stays as it is: what IMAGE does not allocate and\n"
	       "reads differently through BACKING is copied into IMAGE first. A relative\n"
	       "BACKING is relative to IMAGE's directory.\n\n"
	       "  -b BACKING  the new backing file, \"\" for none\n"
	       "  -F FMT      its format: raw or qcow2 (required with a backing file)\n"
	       "  -u          unsafe: only rewrite the name (BACKING need not exist)\n"
	       "  -f FMT      IMAGE's format: qcow2\n"
	       "  -p          show progress\n"
	       "  -q          quiet\n"
	       "  -h, --help  this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct rebase_args {
	enum disk_format fmt;
	const char *backing;      /* -b */
	const char *backing_fmt;  /* -F */
	bool unsafe, progress;
	const char *path;
};

static int rebase_parse_args(int argc, char **argv, struct rebase_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hqpuUf:b:F:t:T:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			rebase_usage();
			return 1;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'b':
			a->backing = optarg;
			break;
		case 'F':
			a->backing_fmt = optarg;
			break;
		case 'u':
			a->unsafe = true;
			break;
		case 'p':
			a->progress = true;
			break;
		case 'q': case 'U': case 't': case 'T':
			break;		/* qemu-img's; nothing to do here */
		default:
			tool_getopt_error("rebase", c, argv);
			return -1;
		}
	}
	if (tool_image_arg("rebase", argc, argv, &a->path))
		return -1;
	if (!a->backing) {
		tool_usage_error("rebase", "Must specify backing file (-b)");
		return -1;
	}
	return 0;
}

static void rebase_progress(void *opaque, uint64_t done, uint64_t total)
{
	(void)total;
	progress_show(opaque, done, false);
}

static int rebase_run(const struct rebase_args *a, struct disk *d)
{
	const char *name = a->backing[0] ? a->backing : NULL;
	const char *fmt = name ? a->backing_fmt : NULL;
	struct progress p;
	int ret;

	if (a->unsafe) {
		ret = qcow_set_backing(d->img, name, fmt, NULL);
	} else {
		progress_init(&p, a->progress, d->size);
		ret = qcow_rebase(d->img, name, fmt, rebase_progress, &p);
		if (ret == 0)
			progress_done(&p);
	}
	return ret < 0 ? disk_fail(d, ret) : 0;
}

int cmd_rebase(int argc, char **argv)
{
	struct rebase_args a = { .fmt = DISK_FMT_AUTO };
	struct disk d;
	int ret;

	ret = rebase_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	if (a.backing[0] && !a.backing_fmt) {
		tool_error("Could not change the backing file to '%s': backing format must be "
			   "specified", a.backing);
		return EXIT_ERROR;
	}
	/* unsafe: the old chain need not open (it may be what is being fixed) */
	if (disk_open(&d, a.path, a.fmt, false, a.unsafe ? DISK_OPEN_ALONE : DISK_OPEN_GUEST) < 0)
		return EXIT_ERROR;
	if (!d.img) {
		tool_error("%s: a raw image has no backing file", a.path);
		disk_close(&d);
		return EXIT_ERROR;
	}
	ret = rebase_run(&a, &d);
	if (disk_close(&d) < 0)
		ret = -1;
	return ret < 0 ? EXIT_ERROR : EXIT_OK;
}
