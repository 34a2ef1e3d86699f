/* SPDX-License-Identifier: MIT */
/*
 * qcow-tool option parsing: sizes with suffixes, io patterns, the -o list of
 * creation options, and human size formatting.
 */
#ifndef QCOW_TOOL_OPTIONS_H
#define QCOW_TOOL_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow/engine.h"
#include "src/shared/number.h"     /* sizes: uq_parse_size */

/* A pattern byte: decimal, 0x hex or 0 octal, 0..255. 0 or -EINVAL. */
int parse_pattern(const char *str, unsigned char *out);

/* "1 GiB", "452 KiB", "3 B": three significant digits, as qemu-img prints. */
void format_size_human(uint64_t val, char *buf, size_t len);

/* What -o lists (any number of them) asked for. */
struct create_request {
	struct qcow_create_opts opts;
	bool qcow2;               /* qcow2 options allowed; else raw's only */
	bool size_given;          /* size=... seen */
	const char *compat;       /* as spelled by the user, for the banner */
	const char *prealloc;     /* as spelled by the user, for the banner */
	char *backing_file;       /* backing_file=, -b (malloc'd: create_request_free) */
	char *backing_fmt;        /* backing_fmt=, -F (malloc'd) */
};

void create_request_init(struct create_request *req, bool qcow2);
void create_request_free(struct create_request *req);
/* Set *field (backing_file or backing_fmt) to a copy of val. 0 or -ENOMEM. */
int create_request_set(char **field, const char *val);
/*
 * Apply one comma-separated -o list. Returns 0, 1 when the list asks for
 * "help", or -EINVAL with err naming the bad option.
 */
int create_request_parse(struct create_request *req, const char *list,
			 char *err, size_t errlen);
/* Print the options -o accepts for the format. */
void create_request_help(bool qcow2);
/* "Formatting 'path', fmt=qcow2 cluster_size=65536 ... size=N ..." line. */
void create_request_banner(const struct create_request *req, const char *path);

#endif /* QCOW_TOOL_OPTIONS_H */
