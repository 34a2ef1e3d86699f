// SPDX-License-Identifier: MIT
/*
 * qcow-tool bench: qemu-img bench's sequential workload, with its options
 * and output, served by the daemon's own request path (src/io.c, through
 * the user-space request source of usersrc.c) on a real io_uring, so the
 * figures are the daemon's minus the driver and the client.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "disk.h"
#include "options.h"
#include "tool.h"
#include "usersrc.h"

#define BENCH_MAX_DEPTH 1024
#define BENCH_MAX_QUEUES 64

static void bench_usage(void)
{
	printf("Usage: " TOOL_NAME " bench [-c COUNT] [-d DEPTH] [-f qcow2] "
	       "[--flush-interval=N] [-n] [--no-drain]\n"
	       "       [-o OFFSET] [--pattern=PATTERN] [-q] [--queues=N] [-s BUFFER_SIZE]\n"
	       "       [-S STEP_SIZE] [-t none|writeback] [-w] IMAGE\n\n"
	       "Run qemu-img bench's sequential benchmark on IMAGE through ublk-qcow's request\n"
	       "path: COUNT requests of BUFFER_SIZE bytes, DEPTH at a time, the first at\n"
	       "OFFSET and each next one STEP_SIZE further on, wrapping at the end of the\n"
	       "image. Reads unless -w. One thread, one io_uring, copy mode, as one queue\n"
	       "of the daemon serves them; or --queues of them, sharing the image.\n\n"
	       "  -c COUNT             requests in all (default 75000)\n"
	       "  -d DEPTH             requests in flight per queue (default 64, at most %u)\n"
	       "  -f FMT               image format: qcow2 (the daemon serves nothing else)\n"
	       "  --flush-interval=N   writes: flush whenever the requests left are a\n"
	       "                       multiple of N, after the writes in flight complete\n"
	       "  --no-drain           ... without waiting for them\n"
	       "  -n                   accepted for qemu-img's sake: requests always go\n"
	       "                       through io_uring\n"
	       "  -o OFFSET            offset of the first request (default 0)\n"
	       "  --pattern=PATTERN    the byte writes write (default 0)\n"
	       "  -q                   quiet: print nothing but errors\n"
	       "  --queues=N           N queues, each on a thread and io_uring of its own, as\n"
	       "                       the daemon's -q N (default 1, at most %u): the\n"
	       "                       sequence is cut into N runs in a row, one per queue,\n"
	       "                       and each queue flushes after its own share of them\n"
	       "  -s BUFFER_SIZE       bytes per request (default 4K, at most 1M)\n"
	       "  -S STEP_SIZE         from one request to the next (default, and for 0:\n"
	       "                       BUFFER_SIZE)\n"
	       "  -t CACHE             none (O_DIRECT) or writeback (default), as qemu-img\n"
	       "  -w                   write instead of read\n"
	       "  -U, --force-share    read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help           this text\n\n"
	       "Offsets and sizes are multiples of 512 bytes, or of the file's direct IO\n"
	       "block with -t none: the requests of a block device.\n\n"
	       "Exit status: 0 success, 1 error.\n", BENCH_MAX_DEPTH, BENCH_MAX_QUEUES);
}

struct bench_args {
	struct usersrc_job job;
	bool direct;
	bool quiet;
	const char *path;
};

static int bench_number(const char *what, const char *arg, uint64_t min, uint64_t max,
			uint64_t *out)
{
	if (uq_parse_size(arg, false, out) || *out < min || *out > max) {
		tool_usage_error("bench", "Invalid %s specified: '%s'", what, arg);
		return -1;
	}
	return 0;
}

enum { OPT_FLUSH_INTERVAL = 256, OPT_NO_DRAIN, OPT_PATTERN, OPT_QUEUES };

static int bench_option(struct bench_args *a, int c, char **argv)
{
	struct usersrc_job *j = &a->job;
	uint64_t v;

	switch (c) {
	case 'c': return bench_number("request count", optarg, 1, INT32_MAX, &j->count);
	case 'd':
		if (bench_number("queue depth", optarg, 1, BENCH_MAX_DEPTH, &v))
			return -1;
		j->depth = (unsigned)v;
		return 0;
	case 'f':
		if (!strcmp(optarg, "qcow2"))
			return 0;
		tool_usage_error("bench", "format '%s': bench serves qcow2 images only, as the "
				 "daemon does", optarg);
		return -1;
	case 'n': return 0;
	case 'o': return bench_number("offset", optarg, 0, INT64_MAX, &j->offset);
	case 'q': a->quiet = true; return 0;
	case 's': return bench_number("buffer size", optarg, 1, usersrc_max_request(), &j->bufsize);
	case 'S': return bench_number("step size", optarg, 0, INT64_MAX, &j->step);
	case 't':
		if (strcmp(optarg, "none") && strcmp(optarg, "writeback")) {
			tool_usage_error("bench", "Invalid cache mode '%s' (none or writeback)",
					 optarg);
			return -1;
		}
		a->direct = !strcmp(optarg, "none");
		return 0;
	case 'w': j->write = true; return 0;
	case OPT_FLUSH_INTERVAL:
		return bench_number("flush interval", optarg, 0, INT32_MAX, &j->flush_interval);
	case OPT_NO_DRAIN: j->drain = false; return 0;
	case OPT_QUEUES:
		if (bench_number("number of queues", optarg, 1, BENCH_MAX_QUEUES, &v))
			return -1;
		j->queues = (unsigned)v;
		return 0;
	case OPT_PATTERN:
		if (!parse_pattern(optarg, &j->pattern))
			return 0;
		tool_usage_error("bench", "Invalid pattern byte specified: '%s'", optarg);
		return -1;
	case 'U': disk_force_share = true; return 0;
	case 'h': bench_usage(); return 1;
	default:
		tool_getopt_error("bench", c, argv);
		return -1;
	}
}

static int bench_parse_args(int argc, char **argv, struct bench_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "flush-interval", required_argument, NULL, OPT_FLUSH_INTERVAL },
		{ "no-drain", no_argument, NULL, OPT_NO_DRAIN },
		{ "pattern", required_argument, NULL, OPT_PATTERN },
		{ "queues", required_argument, NULL, OPT_QUEUES },
		{ NULL, 0, NULL, 0 },
	};
	int c, ret;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hUc:d:f:no:qs:S:t:w", longopts, NULL)) != -1) {
		ret = bench_option(a, c, argv);
		if (ret)
			return ret < 0 ? -1 : 1;
	}
	if (optind != argc - 1) {
		tool_usage_error("bench", "%s", optind >= argc ? "Expecting one image file name"
				 : "too many arguments");
		return -1;
	}
	if (!a->job.step)		/* as qemu-img: 0 is the default */
		a->job.step = a->job.bufsize;
	if (a->job.flush_interval && !a->job.write) {
		tool_usage_error("bench", "--flush-interval is only available in write tests");
		return -1;
	}
	a->path = argv[optind];
	return 0;
}

/* The file, with direct IO for -t none, locked as a served image is. */
static int bench_open(const struct bench_args *a, struct qcow_image **img)
{
	struct qcow_file file;
	char err[512] = "";
	int ret;

	ret = qcow_file_open_posix(a->path, (a->job.write ? O_RDWR : O_RDONLY) |
				   (a->direct ? O_DIRECT : 0), &file);
	if (ret < 0) {
		tool_error("%s: %s%s", a->path, strerror(-ret), ret == -EINVAL && a->direct ?
			   " (the file system refuses O_DIRECT: try -t writeback)" : "");
		return ret;
	}
	ret = disk_lock(file.fd, a->path, a->job.write);
	if (ret < 0) {
		file.ops->close(file.ctx);
		return ret;
	}
	ret = qcow_open_file(&file, a->path, NULL, img, err, sizeof(err));
	if (ret < 0)
		tool_error("%s", err[0] ? err : strerror(-ret));
	return ret;
}

/* Requests reach a block device in whole blocks: say so rather than fail each. */
static int bench_check(const struct bench_args *a, uint32_t block)
{
	const struct usersrc_job *j = &a->job;

	if (j->offset % block || j->bufsize % block || j->step % block) {
		tool_error("%s: offset, buffer size and step must be multiples of %u bytes%s",
			   a->path, block, a->direct ? " (the file's direct IO block)" : "");
		return -EINVAL;
	}
	return 0;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int cmd_bench(int argc, char **argv)
{
	struct bench_args a = { .job = { .queues = 1, .depth = 64, .count = 75000,
					 .bufsize = 4096, .drain = true } };
	struct qcow_image *img = NULL;
	char err[512];
	uint32_t block;
	double t0;
	int ret;

	ret = bench_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	if (bench_open(&a, &img) < 0)
		return EXIT_ERROR;
	block = qcow_get_file(img)->dio_off_align;
	a.job.img = img;
	a.job.block_bytes = block > 512 ? block : 512;
	ret = bench_check(&a, a.job.block_bytes);
	if (!ret && !a.quiet) {
		printf("Sending %llu %s requests, %llu bytes each, %u in parallel (starting at "
		       "offset %llu, step size %llu)\n", (unsigned long long)a.job.count,
		       a.job.write ? "write" : "read", (unsigned long long)a.job.bufsize,
		       a.job.depth, (unsigned long long)a.job.offset,
		       (unsigned long long)a.job.step);
		if (a.job.flush_interval)
			printf("Sending flush every %llu requests\n",
			       (unsigned long long)a.job.flush_interval);
		fflush(stdout);
	}
	t0 = now();
	if (!ret) {
		ret = usersrc_run(&a.job, err, sizeof(err));
		if (ret < 0)
			tool_error("%s: %s", a.path, err);
	}
	if (!ret && !a.quiet)
		printf("Run completed in %.3f seconds.\n", now() - t0);
	if (qcow_close(img) < 0 && !ret) {
		tool_error("%s: flush at close failed", a.path);
		ret = -EIO;
	}
	return ret ? EXIT_ERROR : EXIT_OK;
}
