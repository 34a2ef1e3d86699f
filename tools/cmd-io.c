// SPDX-License-Identifier: MIT
/*
 * qcow-tool io: run guest IO commands on an image with qemu-io's spelling,
 * so that `qemu-io -c 'write -P 0xab 0 64k' img` works unchanged as
 * `qcow-tool io -c 'write -P 0xab 0 64k' img`. Large requests are split into
 * chunks so memory stays bounded.
 */
#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "disk.h"
#include "options.h"
#include "tool.h"

#define IO_CHUNK (1U << 20)
#define IO_MAX_ARGS 64
#define IO_DEFAULT_WRITE_PATTERN 0xcd

struct io_ctx {
	struct disk d;
	bool read_only;
	unsigned char *buf;       /* IO_CHUNK bytes */
};

/* Per-command options, qemu-io's letters. */
struct io_opts {
	bool quiet, verbose, zero, unmap, fua, has_pattern;
	unsigned char pattern;
};

typedef int (*io_fn)(struct io_ctx *c, int argc, char **argv);

struct io_command {
	const char *name;
	const char *alt;
	io_fn fn;
	const char *args;
	const char *help;
};

static const struct io_command io_commands[];

/* Result of a command: 0 done, IO_QUIT stop without error, <0 failed. */
#define IO_QUIT 1

static int io_parse_opts(const char *cmd, int argc, char **argv, const char *optstr,
			 struct io_opts *o)
{
	int c;

	memset(o, 0, sizeof(*o));
	optind = 0;             /* full re-initialisation of GNU getopt */
	opterr = 0;
	while ((c = getopt(argc, argv, optstr)) != -1) {
		switch (c) {
		case 'q': o->quiet = true; break;
		case 'v': o->verbose = true; break;
		case 'z': o->zero = true; break;
		case 'u': o->unmap = true; break;
		case 'f': o->fua = true; break;
		case 'P':
			if (parse_pattern(optarg, &o->pattern)) {
				tool_error("%s: %s is not a valid pattern byte", cmd, optarg);
				return -1;
			}
			o->has_pattern = true;
			break;
		case ':':
			tool_error("%s: option -%c requires an argument", cmd, optopt);
			return -1;
		default:
			tool_error("%s: invalid option -- '%c' (try 'help')", cmd, optopt);
			return -1;
		}
	}
	return 0;
}

/* The OFFSET LENGTH pair that ends read, write and discard. */
static int io_parse_range(const char *cmd, int argc, char **argv,
			  uint64_t *off, uint64_t *len)
{
	if (argc - optind != 2) {
		tool_error("%s: expecting OFFSET and LENGTH (try 'help')", cmd);
		return -1;
	}
	if (uq_parse_size(argv[optind], true, off)) {
		tool_error("%s: non-numeric offset argument -- %s", cmd, argv[optind]);
		return -1;
	}
	if (uq_parse_size(argv[optind + 1], true, len)) {
		tool_error("%s: non-numeric length argument -- %s", cmd, argv[optind + 1]);
		return -1;
	}
	return 0;
}

static int io_check_writable(struct io_ctx *c, const char *cmd)
{
	if (!c->read_only)
		return 0;
	tool_error("%s: %s: image is opened read-only (-r)", c->d.path, cmd);
	return -1;
}

static void io_report(const char *op, uint64_t off, uint64_t len)
{
	printf("%s %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n",
	       op, len, len, off);
}

/* qemu-io's hex dump: 16 bytes a line, then the printable characters. */
static void io_dump(const unsigned char *p, uint64_t off, size_t len)
{
	size_t i, j;

	for (i = 0; i < len; i += 16) {
		printf("%08" PRIx64 ":  ", off + i);
		for (j = i; j < i + 16 && j < len; j++)
			printf("%02x ", p[j]);
		printf(" ");
		for (j = i; j < i + 16 && j < len; j++)
			putchar(isalnum(p[j]) ? p[j] : '.');
		printf("\n");
	}
}

static bool io_all_equal(const unsigned char *p, size_t len, unsigned char v)
{
	return !len || (p[0] == v && !memcmp(p, p + 1, len - 1));
}

static int io_read(struct io_ctx *c, int argc, char **argv)
{
	uint64_t off, len, pos;
	struct io_opts o;
	bool bad = false;

	if (io_parse_opts("read", argc, argv, ":P:qv", &o) ||
	    io_parse_range("read", argc, argv, &off, &len))
		return -1;
	for (pos = 0; pos < len; ) {
		size_t n = len - pos < IO_CHUNK ? (size_t)(len - pos) : IO_CHUNK;

		if (disk_read(&c->d, c->buf, off + pos, n) < 0)
			return -1;
		if (o.has_pattern && !bad)
			bad = !io_all_equal(c->buf, n, o.pattern);
		if (o.verbose && !o.quiet)
			io_dump(c->buf, off + pos, n);
		pos += n;
	}
	/* Like qemu-io: the whole request is named, then still reported. */
	if (bad)
		printf("Pattern verification failed at offset %" PRIu64 ", %" PRIu64
		       " bytes\n", off, len);
	if (!o.quiet)
		io_report("read", off, len);
	return bad ? -1 : 0;
}

static int io_write_zeroes(struct io_ctx *c, const struct io_opts *o,
			   uint64_t off, uint64_t len)
{
	return disk_write_zeroes(&c->d, off, len, o->unmap ? QCOW_ZERO_MAY_UNMAP : 0);
}

static int io_write_data(struct io_ctx *c, const struct io_opts *o,
			 uint64_t off, uint64_t len)
{
	uint64_t pos;

	memset(c->buf, o->has_pattern ? o->pattern : IO_DEFAULT_WRITE_PATTERN, IO_CHUNK);
	for (pos = 0; pos < len; ) {
		size_t n = len - pos < IO_CHUNK ? (size_t)(len - pos) : IO_CHUNK;

		if (disk_write(&c->d, c->buf, off + pos, n) < 0)
			return -1;
		pos += n;
	}
	return 0;
}

static int io_write(struct io_ctx *c, int argc, char **argv)
{
	uint64_t off, len;
	struct io_opts o;
	int ret;

	if (io_parse_opts("write", argc, argv, ":P:qzuf", &o) ||
	    io_parse_range("write", argc, argv, &off, &len))
		return -1;
	if (o.zero && o.has_pattern) {
		tool_error("write: -z and -P cannot be specified at the same time");
		return -1;
	}
	if (o.unmap && !o.zero) {
		tool_error("write: -u requires -z to be specified");
		return -1;
	}
	if (io_check_writable(c, "write"))
		return -1;
	ret = o.zero ? io_write_zeroes(c, &o, off, len) : io_write_data(c, &o, off, len);
	/* -f (FUA): the data must be durable when the command completes. */
	if (!ret && o.fua)
		ret = disk_flush(&c->d);
	if (ret < 0)
		return -1;
	if (!o.quiet)
		io_report("wrote", off, len);
	return 0;
}

static int io_discard(struct io_ctx *c, int argc, char **argv)
{
	uint64_t off, len;
	struct io_opts o;

	if (io_parse_opts("discard", argc, argv, ":q", &o) ||
	    io_parse_range("discard", argc, argv, &off, &len) ||
	    io_check_writable(c, "discard"))
		return -1;
	if (disk_discard(&c->d, off, len) < 0)
		return -1;
	if (!o.quiet)
		io_report("discard", off, len);
	return 0;
}

static int io_flush(struct io_ctx *c, int argc, char **argv)
{
	(void)argv;
	if (argc != 1) {
		tool_error("flush: takes no arguments");
		return -1;
	}
	if (c->read_only)
		return 0;
	return disk_flush(&c->d) < 0 ? -1 : 0;
}

static int io_help(struct io_ctx *c, int argc, char **argv)
{
	const struct io_command *cmd;

	(void)c; (void)argc; (void)argv;
	for (cmd = io_commands; cmd->name; cmd++)
		printf("%s%s%s -- %s\n", cmd->name, *cmd->args ? " " : "", cmd->args,
		       cmd->help);
	return 0;
}

static int io_quit(struct io_ctx *c, int argc, char **argv)
{
	(void)c; (void)argc; (void)argv;
	return IO_QUIT;
}

static const struct io_command io_commands[] = {
	{ "read", "r", io_read, "[-P pattern] [-q] [-v] off len",
	  "read len bytes at off; -P: check every byte equals pattern, -v: hex dump" },
	{ "write", "w", io_write, "[-P pattern | -z [-u]] [-f] [-q] off len",
	  "write pattern (default 0xcd); -z: write zeroes, -u: may unmap, -f: flush" },
	{ "discard", "d", io_discard, "[-q] off len", "discard (deallocate) whole clusters" },
	{ "flush", "f", io_flush, "", "make completed writes durable" },
	{ "help", "?", io_help, "", "list the commands" },
	{ "quit", "q", io_quit, "", "stop" },
	{ NULL, NULL, NULL, NULL, NULL },
};

/* Split line at blanks (as qemu-io does: no quoting) and run it. */
static int io_run_line(struct io_ctx *c, char *line)
{
	const struct io_command *cmd;
	char *argv[IO_MAX_ARGS + 1], *save = NULL, *tok;
	int argc = 0;

	for (tok = strtok_r(line, " \t\r\n", &save); tok;
	     tok = strtok_r(NULL, " \t\r\n", &save)) {
		if (argc == IO_MAX_ARGS) {
			tool_error("too many arguments in command");
			return -1;
		}
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	if (!argc)
		return 0;
	for (cmd = io_commands; cmd->name; cmd++) {
		if (!strcmp(argv[0], cmd->name) || !strcmp(argv[0], cmd->alt))
			return cmd->fn(c, argc, argv);
	}
	tool_error("command \"%s\" not found (try 'help')", argv[0]);
	return -1;
}

static void io_usage(void)
{
	const struct io_command *cmd;

	printf("Usage: " TOOL_NAME " io [-f qcow2|raw] [-r] [-c CMD]... IMAGE\n\n"
	       "Run qemu-io style commands on IMAGE, in order, stopping at the first\n"
	       "that fails. Without -c, commands are read from standard input, one a\n"
	       "line. Offsets and lengths take the suffixes k, M, G, T, P, E (powers of\n"
	       "1024, any case), b (bytes) and s (512-byte sectors); patterns are\n"
	       "decimal, 0x hex or 0 octal bytes.\n\n"
	       "  -c CMD      a command to run; may be repeated\n"
	       "  -f FMT      image format: qcow2 or raw (detected by default)\n"
	       "  -r          open read-only\n"
	       "  --snapshot=SNAPSHOT  read internal snapshot SNAPSHOT (snapshot.name=NAME,\n"
	       "              snapshot.id=ID, or either) instead of the active image; implies -r\n"
	       "  -U, --force-share  read while another process writes the image (as\n"
	       "              qemu-io -U; needs -r)\n"
	       "  -n, -C, -m, -k, -t MODE, -d MODE, -i MODE\n"
	       "              accepted and ignored (qemu-io compatibility)\n"
	       "  -h, --help  this text\n\n"
	       "Commands (each prints what it did unless -q):\n");
	for (cmd = io_commands; cmd->name; cmd++)
		printf("  %s%s%s\n      %s\n", cmd->name, *cmd->args ? " " : "", cmd->args,
		       cmd->help);
	printf("\nExit status: 0 every command succeeded, 1 a command failed (including\n"
	       "a pattern mismatch) or bad usage.\n");
}

struct io_args {
	enum disk_format fmt;
	bool read_only;
	char **cmds;
	int nb_cmds;
	const char *snapshot;     /* --snapshot: read this snapshot */
	const char *path;
};

static int io_parse_args(int argc, char **argv, struct io_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "cmd", required_argument, NULL, 'c' },
		{ "read-only", no_argument, NULL, 'r' },
		{ "format", required_argument, NULL, 'f' },
		{ "nocache", no_argument, NULL, 'n' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "cache", required_argument, NULL, 't' },
		{ "discard", required_argument, NULL, 'd' },
		{ "copy-on-read", no_argument, NULL, 'C' },
		{ "misalign", no_argument, NULL, 'm' },
		{ "native-aio", no_argument, NULL, 'k' },
		{ "aio", required_argument, NULL, 'i' },
		{ "snapshot", required_argument, NULL, 'S' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hc:rf:nUt:d:Cmki:", longopts, NULL)) != -1) {
		switch (c) {
		case 'h': io_usage(); return 1;
		case 'c': a->cmds[a->nb_cmds++] = optarg; break;
		case 'r': a->read_only = true; break;
		case 'S': a->snapshot = optarg; a->read_only = true; break;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'U': disk_force_share = true; break;
		case 'n': case 't': case 'd': case 'C': case 'm':
		case 'k': case 'i':
			break;
		default:
			tool_getopt_error("io", c, argv);
			return -1;
		}
	}
	return tool_image_arg("io", argc, argv, &a->path);
}

static int io_run_stdin(struct io_ctx *c)
{
	char *line = NULL;
	size_t cap = 0;
	int ret = 0;

	while (!ret && getline(&line, &cap, stdin) >= 0)
		ret = io_run_line(c, line);
	free(line);
	return ret;
}

static int io_run(struct io_ctx *c, const struct io_args *a)
{
	char *line;
	int i, ret = 0;

	if (!a->nb_cmds)
		return io_run_stdin(c);
	for (i = 0; i < a->nb_cmds && !ret; i++) {
		/* strtok_r writes into the line: work on a copy. */
		line = strdup(a->cmds[i]);
		if (!line) {
			tool_error("out of memory");
			return -1;
		}
		ret = io_run_line(c, line);
		free(line);
	}
	return ret;
}

int cmd_io(int argc, char **argv)
{
	struct io_args a = { .fmt = DISK_FMT_AUTO };
	struct io_ctx c = { .d.fd = -1, .d.lock_fd = -1 };
	int ret;

	a.cmds = calloc((size_t)argc, sizeof(*a.cmds));
	c.buf = malloc(IO_CHUNK);
	if (!a.cmds || !c.buf) {
		tool_error("out of memory");
		ret = -1;
	} else {
		ret = io_parse_args(argc, argv, &a);
	}
	if (!ret) {
		c.read_only = a.read_only;
		ret = disk_open(&c.d, a.path, a.fmt, a.read_only, DISK_OPEN_GUEST) < 0 ? -1 : 0;
		if (!ret && a.snapshot && tool_load_snapshot(&c.d, a.snapshot) < 0) {
			disk_close(&c.d);
			ret = -1;
		}
		if (!ret) {
			ret = io_run(&c, &a);
			if (disk_close(&c.d) < 0)
				ret = -1;
		}
	}
	free(c.buf);
	free(a.cmds);
	return ret < 0 ? EXIT_ERROR : EXIT_OK;
}
