// SPDX-License-Identifier: MIT
/*
 * Fuzz target "tool": qcow-tool's parsers, called directly with fuzzed
 * strings. The first byte of the input picks the parser, the rest is the
 * string (up to a NUL):
 *
 *   s  uq_parse_size(str, false)      checked against an exact reference
 *   S  uq_parse_size(str, true)       the same, 's' meaning 512-byte sectors
 *   p  parse_pattern(str)          checked against strtol
 *   o  create_request_parse(qcow2) then, when the request is sane, the
 *                                  image it asks for is created (in memory)
 *                                  and opened, and must match the request
 *   r  create_request_parse(raw)
 *   f  disk_parse_format, parse_output_format
 *   i  qcow-tool io: each line one -c command (qemu-io syntax: read, write
 *      -P/-z/-u/-f/-q, discard, flush, help, quit) run by cmd_io on a fresh
 *      256 KiB image in a memfd, so the whole command line path runs
 *   anything else: s, S, p and f on the whole input
 *
 * The program's standard output (banners, hex dumps) goes to /dev/null.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "ref-size.h"
#include "qcow/format.h"
#include "tools/disk.h"
#include "tools/options.h"
#include "tools/tool.h"

#define MAX_STR       4096
#define MAX_IO_CMDS   16
#define IO_IMAGE_SIZE (256U << 10)

static int devnull = -1;
static int io_fd = -1;
static char io_path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_keep_stderr();
	devnull = open("/dev/null", O_WRONLY);
	io_fd = memfd_create("fuzz-tool-image", 0);
	if (devnull < 0 || io_fd < 0)
		abort();
	snprintf(io_path, sizeof(io_path), "/proc/self/fd/%d", io_fd);
	return 0;
}

/*
 * Run fn with stdout on /dev/null. (stderr stays: the tool's one-line
 * errors are few, and a sanitizer report or a failed invariant must show.)
 */
static int quietly(int (*fn)(void *), void *arg)
{
	int out, ret;

	fflush(stdout);
	out = dup(1);
	dup2(devnull, 1);
	ret = fn(arg);
	fflush(stdout);
	dup2(out, 1);
	close(out);
	return ret;
}

/* ------------------------------------------------------------- sizes */

static void fuzz_size(const char *s, bool sectors)
{
	uint64_t got = 0x5a5a5a5a5a5a5a5aULL, lo, hi;
	int ret = uq_parse_size(s, sectors, &got), want = ref_size(s, sectors, &lo, &hi);
	char human[64];

	FUZZ_ASSERT(ret == want, "uq_parse_size(\"%s\", %d) returned %d, expected %d", s, sectors,
		    ret, want);
	if (ret == 0) {
		FUZZ_ASSERT(got >= lo && got <= hi,
			    "uq_parse_size(\"%s\", %d) = %llu, expected %llu..%llu", s, sectors,
			    (unsigned long long)got, (unsigned long long)lo, (unsigned long long)hi);
		format_size_human(got, human, sizeof(human));
		FUZZ_ASSERT(memchr(human, '\0', sizeof(human)) && human[0], "format_size_human");
		format_size_human(got, human, 4);       /* truncation must be safe */
	}
}

static void fuzz_pattern(const char *s)
{
	unsigned char got = 0;
	int ret = parse_pattern(s, &got);
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || end == s || *end || v < 0 || v > 255)
		FUZZ_ASSERT(ret == -EINVAL, "parse_pattern(\"%s\") = %d", s, ret);
	else
		FUZZ_ASSERT(ret == 0 && got == v, "parse_pattern(\"%s\") = %d, %u", s, ret, got);
}

/* ----------------------------------------------------------- -o lists */

struct create_arg {
	const struct create_request *req;
	const char *list;
};

static int banner(void *arg)
{
	const struct create_arg *a = arg;

	create_request_banner(a->req, "fuzz.img");
	create_request_help(a->req->qcow2);
	return 0;
}

/* Create what the request asks for in memory and check it comes back. */
static void create_and_open(const struct create_request *req)
{
	const struct qcow_create_opts *o = &req->opts;
	struct qcow_file file;
	struct qcow_image *img;
	struct qcow_info info;
	char err[256];
	int fd, ret;

	/* keep it fast: no more than 64 MiB of virtual disk per cluster KiB */
	if (o->size > ((64ULL << 20) << (o->cluster_bits ? o->cluster_bits : 16)) >> 10)
		return;
	fd = memfd_create("fuzz-tool-create", 0);
	FUZZ_ASSERT(fd >= 0, "memfd_create");
	snprintf(err, sizeof(err), "/proc/self/fd/%d", fd);
	ret = qcow_file_open_posix(err, O_RDWR, &file);
	close(fd);
	FUZZ_ASSERT(ret == 0, "reopen of the memfd: %d", ret);
	ret = qcow_create_file(&file, "fuzz.img", o, err, sizeof(err));
	if (ret < 0) {
		/* only what the engine refuses by design */
		FUZZ_ASSERT(o->lazy_refcounts || (o->version == 2 && o->refcount_bits &&
						 o->refcount_bits != 16) ||
			    ret == -EFBIG, "create refused %d: %s", ret, err);
		file.ops->close(file.ctx);
		return;
	}
	ret = qcow_open_file(&file, "fuzz.img", NULL, &img, err, sizeof(err));
	FUZZ_ASSERT(ret == 0, "open of a new image: %s", err);
	qcow_get_info(img, &info);
	FUZZ_ASSERT(info.cluster_bits == (o->cluster_bits ? o->cluster_bits : 16) &&
		    info.refcount_bits == (o->refcount_bits ? o->refcount_bits : 16) &&
		    info.version == (unsigned)(o->version ? o->version : 3) &&
		    info.virtual_size == ((o->size + 511) & ~511ULL),
		    "created cluster_bits %u refcount_bits %u version %u size %llu",
		    info.cluster_bits, info.refcount_bits, info.version,
		    (unsigned long long)info.virtual_size);
	FUZZ_ASSERT(qcow_close(img) == 0, "close of a new image");
}

static void fuzz_create_opts(const char *list, bool qcow2)
{
	struct create_request req;
	struct create_arg a = { &req, list };
	char err[128];
	int ret;

	create_request_init(&req, qcow2);
	memset(err, 0x5a, sizeof(err));
	ret = create_request_parse(&req, list, err, sizeof(err));
	FUZZ_ASSERT(ret >= -EINVAL && ret <= 1 && (ret >= 0 || ret == -EINVAL),
		    "create_request_parse returned %d", ret);
	if (ret < 0) {
		FUZZ_ASSERT(memchr(err, '\0', sizeof(err)) && err[0], "error message");
		return;
	}
	FUZZ_ASSERT(!req.opts.cluster_bits ||
		    (req.opts.cluster_bits >= QCOW_MIN_CLUSTER_BITS &&
		     req.opts.cluster_bits <= QCOW_MAX_CLUSTER_BITS),
		    "cluster_bits %u", req.opts.cluster_bits);
	FUZZ_ASSERT(req.opts.refcount_bits <= 64 &&
		    !(req.opts.refcount_bits & (req.opts.refcount_bits - 1)),
		    "refcount_bits %u", req.opts.refcount_bits);
	FUZZ_ASSERT(req.opts.version == 0 || req.opts.version == 2 || req.opts.version == 3,
		    "version %d", req.opts.version);
	FUZZ_ASSERT(qcow2 || (!req.opts.cluster_bits && !req.opts.refcount_bits &&
			      !req.opts.version && !req.opts.lazy_refcounts),
		    "raw took a qcow2 option");
	quietly(banner, &a);
	if (qcow2)
		create_and_open(&req);
}

/* -------------------------------------------------------------- names */

static int names(void *arg)
{
	const char *s = arg;
	enum disk_format fmt = DISK_FMT_AUTO;
	enum output_format of = OUTPUT_HUMAN;
	int ret;

	ret = disk_parse_format(s, &fmt);
	FUZZ_ASSERT((ret == 0) == (!strcmp(s, "raw") || !strcmp(s, "qcow2")),
		    "disk_parse_format(\"%s\") = %d", s, ret);
	FUZZ_ASSERT(ret < 0 || fmt == (!strcmp(s, "raw") ? DISK_FMT_RAW : DISK_FMT_QCOW2),
		    "format of \"%s\"", s);
	ret = parse_output_format("fuzz", s, &of);
	FUZZ_ASSERT((ret == 0) == (!strcmp(s, "human") || !strcmp(s, "json")),
		    "parse_output_format(\"%s\") = %d", s, ret);
	return 0;
}

/* ----------------------------------------------------------------- io */

struct io_arg {
	char *cmds;         /* '\n'-separated, writable */
	bool read_only;
};

static int run_io(void *arg)
{
	struct io_arg *a = arg;
	char *argv[2 * MAX_IO_CMDS + 8], *save = NULL, *line;
	char s_io[] = "io", s_f[] = "-f", s_qcow2[] = "qcow2", s_r[] = "-r", s_c[] = "-c";
	int argc = 0, ret;

	argv[argc++] = s_io;
	argv[argc++] = s_f;
	argv[argc++] = s_qcow2;
	if (a->read_only)
		argv[argc++] = s_r;
	for (line = strtok_r(a->cmds, "\n", &save); line && argc < 2 * MAX_IO_CMDS + 4;
	     line = strtok_r(NULL, "\n", &save)) {
		argv[argc++] = s_c;
		argv[argc++] = line;
	}
	argv[argc++] = io_path;
	argv[argc] = NULL;
	optind = 0;             /* a fresh getopt for every command line */
	ret = cmd_io(argc, argv);
	FUZZ_ASSERT(ret == EXIT_OK || ret == EXIT_ERROR, "cmd_io returned %d", ret);
	return ret;
}

static void fuzz_io(char *cmds, bool read_only)
{
	struct qcow_create_opts o = { .size = IO_IMAGE_SIZE, .cluster_bits = 12 };
	struct io_arg a = { cmds, read_only };
	char err[256];
	int ret;

	/* a fresh image every time: the outcome depends on this input only */
	FUZZ_ASSERT(ftruncate(io_fd, 0) == 0, "ftruncate");
	ret = qcow_create(io_path, &o, true, err, sizeof(err));
	FUZZ_ASSERT(ret == 0, "create: %s", err);
	quietly(run_io, &a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char s[MAX_STR + 1];
	size_t n;

	if (io_fd < 0)
		LLVMFuzzerInitialize(NULL, NULL);
	if (!size)
		return 0;
	n = size - 1 < MAX_STR ? size - 1 : MAX_STR;
	memcpy(s, data + 1, n);
	s[n] = '\0';
	switch (data[0]) {
	case 's': fuzz_size(s, false); break;
	case 'S': fuzz_size(s, true); break;
	case 'p': fuzz_pattern(s); break;
	case 'o': fuzz_create_opts(s, true); break;
	case 'r': fuzz_create_opts(s, false); break;
	case 'f': quietly(names, s); break;
	case 'i': fuzz_io(s, false); break;
	case 'I': fuzz_io(s, true); break;
	default:
		n = size < MAX_STR ? size : MAX_STR;
		memcpy(s, data, n);
		s[n] = '\0';
		fuzz_size(s, false);
		fuzz_size(s, true);
		fuzz_pattern(s);
		quietly(names, s);
		break;
	}
	return 0;
}
