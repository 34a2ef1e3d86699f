// SPDX-License-Identifier: MIT
/*
 * What every qcow-tool command reports with (tool.h): its error messages,
 * getopt's complaints, and --output's values. Apart from main()
 * (tools/qcow-tool.c), so that tests/fuzz/fuzz-tool.c links the commands
 * as they are.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "tool.h"

void tool_error(const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);     /* keep stdout and stderr in order on a terminal */
	fprintf(stderr, TOOL_NAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

int tool_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, TOOL_NAME ": ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry '" TOOL_NAME "%s%s --help' for more information.\n",
		cmd ? " " : "", cmd ? cmd : "");
	return EXIT_ERROR;
}

int tool_getopt_error(const char *cmd, int c, char **argv)
{
	const char *arg = optind > 0 ? argv[optind - 1] : "";

	if (c == ':')
		return tool_usage_error(cmd, "option '%s' requires an argument", arg);
	if (optopt && strncmp(arg, "--", 2))
		return tool_usage_error(cmd, "invalid option -- '%c'", optopt);
	return tool_usage_error(cmd, "unrecognized option '%s'", arg);
}

int tool_image_arg(const char *cmd, int argc, char **argv, const char **path)
{
	if (optind != argc - 1) {
		tool_usage_error(cmd, "Expecting one image file name");	/* qemu-img's words */
		return -1;
	}
	*path = argv[optind];
	return 0;
}

int parse_output_format(const char *cmd, const char *arg, enum output_format *out)
{
	if (!strcmp(arg, "human")) {
		*out = OUTPUT_HUMAN;
		return 0;
	}
	if (!strcmp(arg, "json")) {
		*out = OUTPUT_JSON;
		return 0;
	}
	tool_usage_error(cmd, "--output: unknown format '%s' (use human or json)", arg);
	return -1;
}
