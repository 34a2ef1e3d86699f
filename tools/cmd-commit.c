// SPDX-License-Identifier: MIT
/*
 * qcow-tool commit: write what an image allocates into its backing file,
 * as `qemu-img commit`, then empty the image (unless -d) so that it reads
 * through to the backing file again.
 *
 * The image is opened alone (its chain closed: the backing file is opened
 * for writing instead, which the chain's shared lock would refuse); the
 * backing file is grown first if the image is larger; then qcow_commit
 * copies, flushes and empties in the order its crash argument needs.
 * Other images over the same backing file see the change, as with
 * qemu-img.
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

static void commit_usage(void)
{
	printf("Usage: " TOOL_NAME " commit [-q] [-p] [-d] [-f qcow2] IMAGE\n\n"
	       "Write the clusters IMAGE allocates into its backing file, then empty\n"
	       "IMAGE so that it reads the same through the backing file.\n\n"
	       "  -d          do not empty IMAGE afterwards\n"
	       "  -f FMT      IMAGE's format: qcow2\n"
	       "  -p          show progress\n"
	       "  -q          quiet: do not print 'Image committed.'\n"
	       "  -h, --help  this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct commit_args {
	enum disk_format fmt;
	bool keep, progress, quiet;
	const char *path;
};

static int commit_parse_args(int argc, char **argv, struct commit_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hqpdf:t:r:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			commit_usage();
			return 1;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'd':
			a->keep = true;
			break;
		case 'p':
			a->progress = true;
			break;
		case 'q':
			a->quiet = true;
			break;
		case 't': case 'r':
			break;		/* qemu-img's cache mode and rate limit */
		default:
			tool_getopt_error("commit", c, argv);
			return -1;
		}
	}
	return tool_image_arg("commit", argc, argv, &a->path);
}

/* The backing file, opened for writing and at least as large as d. */
static int commit_open_base(struct disk *d, struct disk *base, char **path)
{
	enum disk_format fmt = DISK_FMT_AUTO;
	struct qcow_info info;

	qcow_get_info(d->img, &info);
	if (!info.backing_file[0]) {
		tool_error("Image does not have a backing file");
		return -1;
	}
	if (info.backing_format[0] && disk_parse_format(info.backing_format, &fmt))
		return -1;
	if (qcow_backing_path(d->path, info.backing_file, path) < 0) {
		tool_error("out of memory");
		return -1;
	}
	if (disk_open(base, *path, fmt, false, DISK_OPEN_GUEST) < 0)
		return -1;
	if (base->size >= d->size || disk_resize(base, d->size) == 0)
		return 0;
	disk_close(base);
	return -1;
}

/* The engine writes the backing file through the disk layer, which prints
 * its own errors; a failure of img's is printed by commit_run. */
struct commit_base {
	struct disk *disk;
	bool failed;
};

static int base_write(void *opaque, const void *buf, uint64_t off, size_t len)
{
	struct commit_base *b = opaque;
	int ret = disk_write(b->disk, buf, off, len);

	b->failed |= ret < 0;
	return ret;
}

static int base_write_zeroes(void *opaque, uint64_t off, uint64_t len)
{
	struct commit_base *b = opaque;
	int ret = disk_write_zeroes(b->disk, off, len, 0);

	b->failed |= ret < 0;
	return ret;
}

static int base_flush(void *opaque)
{
	struct commit_base *b = opaque;
	int ret = disk_flush(b->disk);

	b->failed |= ret < 0;
	return ret;
}

static void commit_progress(void *opaque, uint64_t done, uint64_t total)
{
	(void)total;
	progress_show(opaque, done, false);
}

static int commit_run(const struct commit_args *a, struct disk *d)
{
	struct disk base;
	struct commit_base cb = { .disk = &base };
	const struct qcow_commit_target target = {
		&cb, base_write, base_write_zeroes, base_flush,
	};
	struct progress p;
	char *path = NULL;
	int ret;

	ret = commit_open_base(d, &base, &path);
	free(path);
	if (ret < 0)
		return ret;
	progress_init(&p, a->progress, d->size);
	ret = qcow_commit(d->img, &target, a->keep, commit_progress, &p);
	if (ret < 0 && !cb.failed)
		disk_fail(d, ret);
	if (disk_close(&base) < 0)
		ret = -1;
	if (ret == 0)
		progress_done(&p);
	return ret;
}

int cmd_commit(int argc, char **argv)
{
	struct commit_args a = { .fmt = DISK_FMT_AUTO };
	struct disk d;
	int ret;

	ret = commit_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	/* alone: the chain would hold the backing file's lock shared */
	if (disk_open(&d, a.path, a.fmt, a.keep, DISK_OPEN_ALONE) < 0)
		return EXIT_ERROR;
	if (!d.img) {
		tool_error("Image does not have a backing file");
		disk_close(&d);
		return EXIT_ERROR;
	}
	ret = commit_run(&a, &d);
	if (disk_close(&d) < 0)
		ret = -1;
	if (ret == 0 && !a.quiet)
		printf("Image committed.\n");
	return ret < 0 ? EXIT_ERROR : EXIT_OK;
}
