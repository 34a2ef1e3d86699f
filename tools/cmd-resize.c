// SPDX-License-Identifier: MIT
/*
 * qcow-tool resize: change the virtual size, as `qemu-img resize`.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "disk.h"
#include "options.h"
#include "tool.h"

static void resize_usage(void)
{
	printf("Usage: " TOOL_NAME " resize [-q] [-f qcow2|raw] [--shrink] IMAGE [+|-]SIZE\n\n"
	       "Set the virtual size of IMAGE to SIZE, or grow (+) or shrink (-) it by\n"
	       "SIZE. Making the image smaller needs --shrink, as in qemu-img; a qcow2\n"
	       "image only shrinks when nothing is allocated past the new end, a raw\n"
	       "image loses everything past it.\n\n"
	       "  -f FMT      image format: qcow2 or raw (detected by default)\n"
	       "  --shrink    allow the new size to be smaller than the current one\n"
	       "  -q          quiet: do not print 'Image resized.'\n"
	       "  -h, --help  this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

/* "+N" / "-N" relative to cur, or an absolute "N". */
static int resize_target(const char *arg, uint64_t cur, uint64_t *out)
{
	uint64_t n;
	int sign = 0;

	if (*arg == '+' || *arg == '-')
		sign = *arg++ == '+' ? 1 : -1;
	if (uq_parse_size(arg, false, &n))
		return tool_usage_error("resize", "Invalid image size specified: '%s'", arg);
	if (sign < 0 && n > cur) {
		tool_error("New image size must be positive");
		return -1;
	}
	if (sign > 0 && n > UINT64_MAX - cur) {
		tool_error("New image size is too large");
		return -1;
	}
	*out = sign > 0 ? cur + n : sign < 0 ? cur - n : n;
	return 0;
}

struct resize_args {
	enum disk_format fmt;
	bool quiet;
	bool shrink;
	const char *path;
	const char *size;
};

static int resize_parse_args(int argc, char **argv, struct resize_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "shrink", no_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	/* "-1G" is a size, not an option: take the last argument first. */
	if (argc > 1 && strcmp(argv[argc - 1], "-h") && strcmp(argv[argc - 1], "--help"))
		a->size = argv[--argc];
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hqf:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h': resize_usage(); return 1;
		case 'q': a->quiet = true; break;
		case 'S': a->shrink = true; break;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		default:
			tool_getopt_error("resize", c, argv);
			return -1;
		}
	}
	if (!a->size || optind != argc - 1) {
		tool_usage_error("resize", "%s", optind >= argc || !a->size ?
				 "expecting image file name and size" : "too many arguments");
		return -1;
	}
	a->path = argv[optind];
	return 0;
}

int cmd_resize(int argc, char **argv)
{
	struct resize_args a = { .fmt = DISK_FMT_AUTO };
	uint64_t size = 0;
	struct disk d;
	int ret;

	ret = resize_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	if (disk_open(&d, a.path, a.fmt, false, DISK_OPEN_GUEST) < 0)
		return EXIT_ERROR;
	ret = resize_target(a.size, d.size, &size);
	/* As qemu-img: compared before any rounding, so 10M-1 is a shrink too. */
	if (!ret && size < d.size && !a.shrink) {
		tool_error("Use the --shrink option to perform a shrink operation.");
		tool_error("%s: the new size (%llu bytes) is smaller than the current one "
			   "(%llu bytes); the size was not changed", a.path,
			   (unsigned long long)size, (unsigned long long)d.size);
		ret = -1;
	}
	if (!ret)
		ret = disk_resize(&d, size);
	if (disk_close(&d) < 0)
		ret = -1;
	if (ret)
		return EXIT_ERROR;
	if (!a.quiet)
		printf("Image resized.\n");
	return EXIT_OK;
}
