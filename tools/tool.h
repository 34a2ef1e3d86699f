/* SPDX-License-Identifier: MIT */
/*
 * qcow-tool: shared declarations between the command files. Each command is
 * a function taking (argc, argv) with argv[0] the command name and returning
 * the process exit status.
 */
#ifndef QCOW_TOOL_H
#define QCOW_TOOL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#define TOOL_NAME "qcow-tool"
#ifndef QCOW_TOOL_VERSION
#define QCOW_TOOL_VERSION "0.1"
#endif

/* Exit statuses; check uses the extra ones the way qemu-img does. */
#define EXIT_OK           0
#define EXIT_ERROR        1
#define EXIT_CHECK_CORRUPT 2
#define EXIT_CHECK_LEAKS  3

enum output_format { OUTPUT_HUMAN, OUTPUT_JSON };

/* "qcow-tool: <message>\n" on stderr. */
void tool_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* tool_error() plus the hint to --help for cmd; returns EXIT_ERROR. */
int tool_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * Report what getopt_long rejected. Commands call it with opterr = 0 and an
 * optstring starting with ':' so that c is ':' (missing argument) or '?'.
 * Returns EXIT_ERROR.
 */
int tool_getopt_error(const char *cmd, int c, char **argv);
/* The one image name left after the options (argv[optind]) into *path,
 * else qemu-img's usage error (none, or more than one): 0 or -1. */
int tool_image_arg(const char *cmd, int argc, char **argv, const char **path);
/* Parse "human" / "json" for --output. */
int parse_output_format(const char *cmd, const char *arg, enum output_format *out);

int cmd_create(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_check(int argc, char **argv);
int cmd_map(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_resize(int argc, char **argv);
int cmd_bitmap(int argc, char **argv);
int cmd_io(int argc, char **argv);
int cmd_snapshot(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_checksum(int argc, char **argv);
int cmd_compare(int argc, char **argv);
int cmd_rebase(int argc, char **argv);
int cmd_commit(int argc, char **argv);

struct disk;
/* convert/map/io -l: read snapshot PARAM of d (open read-only) instead. */
int tool_load_snapshot(struct disk *d, const char *param);

#endif /* QCOW_TOOL_H */
