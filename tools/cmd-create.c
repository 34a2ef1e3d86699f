// SPDX-License-Identifier: MIT
/*
 * qcow-tool create: make a new qcow2 (or raw) image, as `qemu-img create`.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk.h"
#include "options.h"
#include "tool.h"

static void create_usage(void)
{
	printf("Usage: " TOOL_NAME " create [-q] [-f qcow2|raw] [-b BACKING [-F FMT] [-u]]\n"
	       "                        [-o OPTIONS] IMAGE [SIZE]\n\n"
	       "Create IMAGE (overwriting an existing file) with a virtual size of SIZE\n"
	       "bytes. SIZE takes the suffixes k, M, G, T, P, E (powers of 1024); with a\n"
	       "backing file it defaults to the backing file's virtual size.\n\n"
	       "  -f FMT       image format: qcow2 (default) or raw\n"
	       "  -b BACKING   a copy-on-write overlay of BACKING: what IMAGE does not\n"
	       "               allocate reads from it (a relative name is relative to\n"
	       "               IMAGE's directory); same as -o backing_file=BACKING\n"
	       "  -F FMT       BACKING's format, raw or qcow2 (-o backing_fmt=FMT);\n"
	       "               probed with a warning when not given\n"
	       "  -u           do not open BACKING (it need not exist; SIZE required)\n"
	       "  -o OPTIONS   comma-separated creation options; may be repeated:\n"
	       "                 cluster_size=SIZE   512 .. 2M, a power of two (64k)\n"
	       "                 refcount_bits=N     1, 2, 4, 8, 16, 32 or 64 (16)\n"
	       "                 compat=0.10|1.1|v2|v3  image version (1.1)\n"
	       "                 lazy_refcounts=on|off, extended_l2=off,\n"
	       "                 compression_type=zlib|zstd, preallocation=off, size=SIZE\n"
	       "               '-o help' lists them\n"
	       "  -q           quiet: do not print the 'Formatting ...' line\n"
	       "  -h, --help   this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct create_args {
	enum disk_format fmt;
	bool quiet;
	bool unsafe;              /* -u */
	const char *backing_file, *backing_fmt;  /* -b, -F */
	const char **olists;      /* the -o arguments, in order */
	int nb_olists;
	const char *path;
	const char *size;
};

static int create_parse_args(int argc, char **argv, struct create_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hqf:o:b:F:u", longopts, NULL)) != -1) {
		switch (c) {
		case 'h':
			create_usage();
			exit(EXIT_OK);
		case 'q':
			a->quiet = true;
			break;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'o':
			a->olists[a->nb_olists++] = optarg;
			break;
		case 'b':
			a->backing_file = optarg;
			break;
		case 'F':
			a->backing_fmt = optarg;
			break;
		case 'u':
			a->unsafe = true;
			break;
		default:
			tool_getopt_error("create", c, argv);
			return -1;
		}
	}
	/* No IMAGE is fine for '-o help'; create_build_request() decides. */
	if (optind < argc)
		a->path = argv[optind++];
	if (optind < argc)
		a->size = argv[optind++];
	if (optind < argc) {
		tool_usage_error("create", "unexpected argument '%s'", argv[optind]);
		return -1;
	}
	return 0;
}

/* Apply every -o list, then the SIZE argument (which wins over size=). */
static int create_build_request(const struct create_args *a, struct create_request *req)
{
	char err[512];
	int i, ret, help = 0;

	create_request_init(req, a->fmt == DISK_FMT_QCOW2);
	for (i = 0; i < a->nb_olists; i++) {
		ret = create_request_parse(req, a->olists[i], err, sizeof(err));
		if (ret < 0) {
			if (a->path)
				tool_error("%s: %s", a->path, err);
			else
				tool_error("%s", err);
			return -1;
		}
		help |= ret;
	}
	if (help) {
		create_request_help(req->qcow2);
		return 1;
	}
	if ((a->backing_file && create_request_set(&req->backing_file, a->backing_file)) ||
	    (a->backing_fmt && create_request_set(&req->backing_fmt, a->backing_fmt))) {
		tool_error("out of memory");
		return -1;
	}
	if (!a->path) {
		tool_usage_error("create", "expecting image file name");
		return -1;
	}
	if (a->size && req->size_given) {
		tool_error("%s: The image size must be specified only once", a->path);
		return -1;
	}
	if (a->size) {
		if (uq_parse_size(a->size, false, &req->opts.size)) {
			tool_error("Invalid image size specified: '%s'. You may use k, M, G, "
				   "T, P or E suffixes (powers of 1024).", a->size);
			return -1;
		}
		req->size_given = true;
	}
	if (!req->size_given && (!req->backing_file || a->unsafe)) {
		tool_error("%s: Image creation needs a size parameter", a->path);
		return -1;
	}
	return 0;
}

/*
 * The backing file: its format (probed with a warning when not given), and
 * the size it gives the new image when SIZE is not; opened as the image
 * will open it, so that a missing or broken base is refused now.
 */
static int create_check_backing(const struct create_args *a, struct create_request *req)
{
	enum disk_format fmt = DISK_FMT_AUTO;
	char *path;
	struct disk b;
	int ret;

	if (!req->backing_file) {
		if (!req->backing_fmt)
			return 0;
		tool_error("%s: Backing format cannot be used without backing file", a->path);
		return -1;
	}
	if (!req->qcow2) {
		tool_error("%s: Backing file not supported for file format 'raw'", a->path);
		return -1;
	}
	if (req->backing_fmt && disk_parse_format(req->backing_fmt, &fmt))
		return -1;
	if (a->unsafe && !req->backing_fmt) {
		tool_error("%s: -u needs the backing file's format (-F)", a->path);
		return -1;
	}
	if (a->unsafe)
		return 0;
	if (qcow_backing_path(a->path, req->backing_file, &path) < 0) {
		tool_error("out of memory");
		return -1;
	}
	ret = fmt == DISK_FMT_AUTO ? disk_detect_format(path, &fmt) : 0;
	if (ret == 0 && !req->backing_fmt) {
		fprintf(stderr, TOOL_NAME ": warning: %s: no format given for backing file %s "
			"(-F); probed as %s\n", a->path, req->backing_file, disk_format_name(fmt));
		if (create_request_set(&req->backing_fmt, disk_format_name(fmt)))
			ret = -ENOMEM;
	}
	if (ret == 0)
		ret = disk_open(&b, path, fmt, true, DISK_OPEN_GUEST);
	if (ret == 0) {
		if (!req->size_given)
			req->opts.size = b.size;
		req->size_given = true;
		ret = disk_close(&b);
	}
	if (ret < 0)
		tool_error("%s: Could not open backing image %s", a->path, path);
	free(path);
	return ret < 0 ? -1 : 0;
}

static void create_error(const char *path, const char *err, int ret)
{
	if (*err)
		tool_error("%s", err);
	else
		tool_error("%s: %s", path, strerror(-ret));
}

/*
 * Options the engine refuses are refused before the Formatting line, so
 * that a refused create prints nothing but the error and leaves no file.
 */
static int create_make(const struct create_args *a, struct create_request *req)
{
	char err[512] = "";
	int ret;

	req->opts.backing_file = req->backing_file;
	req->opts.backing_format = req->backing_fmt;
	ret = req->qcow2 ? qcow_create_check(a->path, &req->opts, err, sizeof(err)) : 0;
	if (ret < 0) {
		create_error(a->path, err, ret);
		return ret;
	}
	if (!a->quiet)
		create_request_banner(req, a->path);
	if (!req->qcow2)
		return disk_create_raw(a->path, req->opts.size);
	ret = qcow_create(a->path, &req->opts, true, err, sizeof(err));
	if (ret < 0)
		create_error(a->path, err, ret);
	return ret;
}

int cmd_create(int argc, char **argv)
{
	struct create_args a = { .fmt = DISK_FMT_QCOW2 };
	struct create_request req;
	int ret;

	a.olists = calloc((size_t)argc, sizeof(*a.olists));
	if (!a.olists) {
		tool_error("out of memory");
		return EXIT_ERROR;
	}
	create_request_init(&req, true);
	ret = create_parse_args(argc, argv, &a);
	if (!ret)
		ret = create_build_request(&a, &req);
	if (!ret)
		ret = create_check_backing(&a, &req);
	free(a.olists);
	if (!ret)
		ret = create_make(&a, &req);
	create_request_free(&req);
	return ret < 0 ? EXIT_ERROR : EXIT_OK;
}
