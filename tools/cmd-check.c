// SPDX-License-Identifier: MIT
/*
 * qcow-tool check: consistency check and repair, as `qemu-img check`, with
 * the same summary text, JSON keys and exit statuses (63 for a raw image,
 * which has nothing to check). An image using a feature we do not serve
 * (encryption, extended L2 entries, an external data file) is not checked:
 * its tables mean what the engine does not read, so a check would report
 * nonsense. That is said, naming the feature, with qemu-img's status for a
 * check it could not do (1); a repair is refused by the open itself.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "disk.h"
#include "json.h"
#include "tool.h"

/* qemu-img check's status for a format without checks (raw). */
#define EXIT_CHECK_UNSUPPORTED 63

static void check_usage(void)
{
	printf("Usage: " TOOL_NAME " check [-q] [-f qcow2] [-r leaks|all] [--output=human|json] IMAGE\n\n"
	       "Check the metadata of IMAGE for consistency: every reference inside the\n"
	       "file, every refcount, overlaps. Each problem is reported on one line on\n"
	       "stderr, then a summary on stdout.\n\n"
	       "  -r leaks      repair leaked clusters (refcount too high: wasted space)\n"
	       "  -r all        repair leaks and errors (rebuilds refcounts)\n"
	       "  --output=FMT  human (default) or json (qemu-img's keys)\n"
	       "  -q            quiet: print no summary and no problem lines\n"
	       "  -U, --force-share  read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help    this text\n\n"
	       "Exit status:\n"
	       "  0  the check completed and the image is clean (or was repaired)\n"
	       "  1  the check could not be done (bad usage, IO error, unreadable image,\n"
	       "     a feature qcow-tool does not serve: encryption, extended L2 entries,\n"
	       "     an external data file)\n"
	       "  2  corruptions were found (data may be damaged)\n"
	       "  3  only leaked clusters were found (wasted space, no harm to data)\n"
	       "  63 the image format (raw) has no checks\n");
}

struct check_args {
	enum output_format out;
	enum disk_format fmt;
	unsigned repair;
	bool quiet;
	const char *path;
};

/* Where the engine's per-problem lines go. */
struct check_report_ctx {
	FILE *f;                  /* NULL: quiet */
};

static void check_report(void *opaque, const char *line)
{
	struct check_report_ctx *ctx = opaque;

	if (ctx->f)
		fprintf(ctx->f, "%s\n", line);
}

static void check_print_human(const struct qcow_check_result *r)
{
	if (!r->corruptions && !r->leaks && !r->check_errors) {
		printf("No errors were found on the image.\n");
	} else {
		if (r->corruptions)
			printf("\n%" PRIu64 " errors were found on the image.\n"
			       "Data may be corrupted, or further writes to the image "
			       "may corrupt it.\n", r->corruptions);
		if (r->leaks)
			printf("\n%" PRIu64 " leaked clusters were found on the image.\n"
			       "This means waste of disk space, but no harm to data.\n",
			       r->leaks);
		if (r->check_errors)
			printf("\n%" PRIu64 " internal errors have occurred during the "
			       "check.\n", r->check_errors);
	}
	if (r->total_clusters && r->allocated_clusters)
		printf("%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, "
		       "%0.2f%% compressed clusters\n",
		       r->allocated_clusters, r->total_clusters,
		       (double)r->allocated_clusters * 100.0 / (double)r->total_clusters,
		       (double)r->fragmented_clusters * 100.0 / (double)r->allocated_clusters,
		       (double)r->compressed_clusters * 100.0 / (double)r->allocated_clusters);
	if (r->image_end_offset)
		printf("Image end offset: %" PRIu64 "\n", r->image_end_offset);
}

/* qemu-img leaves out every count that is zero, except check-errors. */
static void json_add_nonzero(struct json_obj *o, const char *key, uint64_t v)
{
	if (v)
		json_add_uint(o, key, v);
}

static void check_print_json(const struct qcow_check_result *r, const char *path)
{
	struct json_obj o;

	json_init(&o);
	json_add_str(&o, "filename", path);
	json_add_str(&o, "format", "qcow2");
	json_add_uint(&o, "check-errors", r->check_errors);
	json_add_nonzero(&o, "image-end-offset", r->image_end_offset);
	json_add_nonzero(&o, "corruptions", r->corruptions);
	json_add_nonzero(&o, "leaks", r->leaks);
	json_add_nonzero(&o, "corruptions-fixed", r->corruptions_fixed);
	json_add_nonzero(&o, "leaks-fixed", r->leaks_fixed);
	json_add_nonzero(&o, "total-clusters", r->total_clusters);
	json_add_nonzero(&o, "allocated-clusters", r->allocated_clusters);
	json_add_nonzero(&o, "fragmented-clusters", r->fragmented_clusters);
	json_add_nonzero(&o, "compressed-clusters", r->compressed_clusters);
	json_print(stdout, &o);
}

static int check_parse_repair(const char *arg, unsigned *flags)
{
	if (!strcmp(arg, "leaks"))
		*flags = QCOW_CHECK_REPAIR_LEAKS;
	else if (!strcmp(arg, "all"))
		*flags = QCOW_CHECK_REPAIR_ALL;
	else
		return tool_usage_error("check", "-r: unknown mode '%s' (use leaks or all)", arg);
	return 0;
}

static int check_parse_args(int argc, char **argv, struct check_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "output", required_argument, NULL, 'O' },
		{ "repair", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hUqr:f:", longopts, NULL)) != -1) {
		switch (c) {
		case 'U':
			disk_force_share = true;
			break;
		case 'h':
			check_usage();
			return 1;
		case 'q':
			a->quiet = true;
			break;
		case 'r':
			if (check_parse_repair(optarg, &a->repair))
				return -1;
			break;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'O':
			if (parse_output_format("check", optarg, &a->out))
				return -1;
			break;
		default:
			tool_getopt_error("check", c, argv);
			return -1;
		}
	}
	return tool_image_arg("check", argc, argv, &a->path);
}

/*
 * Check (and repair), then, when something was repaired, check again without
 * repairing so that the summary describes the image as it is now.
 */
static int check_run(struct disk *d, const struct check_args *a,
		     struct check_report_ctx *ctx, struct qcow_check_result *res)
{
	struct qcow_check_result fixed;
	int ret;

	memset(res, 0, sizeof(*res));
	ret = qcow_check(d->img, a->repair, res, check_report, ctx);
	if (ret < 0)
		return disk_fail(d, ret);
	if (!res->corruptions_fixed && !res->leaks_fixed)
		return 0;
	if (a->out == OUTPUT_HUMAN && !a->quiet)
		printf("The following inconsistencies were found and repaired:\n\n"
		       "    %" PRIu64 " leaked clusters\n"
		       "    %" PRIu64 " corruptions\n\n"
		       "Double checking the fixed image now...\n",
		       res->leaks_fixed, res->corruptions_fixed);
	fixed = *res;
	memset(res, 0, sizeof(*res));
	ret = qcow_check(d->img, 0, res, check_report, ctx);
	if (ret < 0)
		return disk_fail(d, ret);
	res->leaks_fixed = fixed.leaks_fixed;
	res->corruptions_fixed = fixed.corruptions_fixed;
	return 0;
}

static int check_status(const struct qcow_check_result *r)
{
	if (r->check_errors) {
		tool_error("Check failed");
		return EXIT_ERROR;
	}
	if (r->corruptions)
		return EXIT_CHECK_CORRUPT;
	return r->leaks ? EXIT_CHECK_LEAKS : EXIT_OK;
}

/* EXIT_OK, or the status for an image check does not look at (said why). */
static int check_refused(const struct disk *d)
{
	const char *feature;

	if (d->fmt != DISK_FMT_QCOW2) {
		tool_error("This image format does not support checks");
		return EXIT_CHECK_UNSUPPORTED;
	}
	feature = qcow_unsupported_feature(d->img);
	if (feature) {
		tool_error("%s: cannot check: unsupported feature: %s", d->path, feature);
		return EXIT_ERROR;
	}
	return EXIT_OK;
}

int cmd_check(int argc, char **argv)
{
	struct check_args a = { .out = OUTPUT_HUMAN, .fmt = DISK_FMT_AUTO };
	struct check_report_ctx ctx;
	struct qcow_check_result res;
	struct disk d;
	int ret;

	ret = check_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	if (disk_open(&d, a.path, a.fmt, !a.repair, DISK_OPEN_CHECK) < 0)
		return EXIT_ERROR;
	ret = check_refused(&d);
	if (ret != EXIT_OK) {
		disk_close(&d);
		return ret;
	}
	/* As qemu-img: problem lines on stderr, so stdout has the summary only
	 * (and JSON stays parseable); none at all with -q. */
	ctx.f = a.quiet ? NULL : stderr;
	ret = check_run(&d, &a, &ctx, &res);
	if (disk_close(&d) < 0 || ret < 0)
		return EXIT_ERROR;
	if (a.out == OUTPUT_JSON && !a.quiet)
		check_print_json(&res, a.path);
	else if (!a.quiet)
		check_print_human(&res);
	return check_status(&res);
}
