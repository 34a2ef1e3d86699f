// SPDX-License-Identifier: MIT
/*
 * qcow-tool: offline qcow2 image utility with qemu-img's command line
 * conventions. This file dispatches to the commands (tools/cmd-*.c); it
 * holds main() and nothing else a command or a fuzzer links with.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tool.h"

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *synopsis;
};

static const struct command commands[] = {
	{ "create", cmd_create,
	  "create [-q] [-f FMT] [-b BACKING [-F FMT] [-u]] [-o OPTIONS] IMAGE [SIZE]" },
	{ "info", cmd_info, "info [--backing-chain] [--output=human|json] IMAGE" },
	{ "check", cmd_check,
	  "check [-q] [-r leaks|all] [--output=human|json] IMAGE" },
	{ "map", cmd_map, "map [--output=human|json] IMAGE" },
	{ "convert", cmd_convert,
	  "convert [-p] [-q] [-c] [-f FMT] [-O FMT] [-o OPTIONS] [-B BACKING -F FMT] [-S SIZE] SRC DST" },
	{ "bitmap", cmd_bitmap, "bitmap (--add|--remove|--clear|--enable|--disable|--merge SRC)... [-g G] [-b FILE] IMAGE BITMAP" },
	{ "resize", cmd_resize, "resize [-q] [-f FMT] IMAGE [+|-]SIZE" },
	{ "io", cmd_io, "io [-f FMT] [-r] -c CMD [-c CMD ...] IMAGE" },
	{ "snapshot", cmd_snapshot,
	  "snapshot [-q] [-l | -c NAME | -a SNAPSHOT | -d SNAPSHOT] [--output=FMT] IMAGE" },
	{ "checksum", cmd_checksum, "checksum [-f FMT] [-l SNAPSHOT] [-p] IMAGE" },
	{ "rebase", cmd_rebase, "rebase [-q] [-p] [-u] -b BACKING [-F FMT] IMAGE" },
	{ "commit", cmd_commit, "commit [-q] [-p] [-d] IMAGE" },
	{ "compare", cmd_compare, "compare [-f FMT] [-F FMT] [-p] [-q] [-s] [-U] IMAGE1 IMAGE2" },
	{ "bench", cmd_bench,
	  "bench [-c COUNT] [-d DEPTH] [-o OFFSET] [-s SIZE] [-S STEP] [-t CACHE] [-w] IMAGE" },
};

#define NB_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(void)
{
	size_t i;

	printf("Usage: " TOOL_NAME " COMMAND [OPTIONS] ARGS...\n"
	       "       " TOOL_NAME " --help | --version\n\n"
	       "Offline tool for qcow2 images (qemu-img conventions).\n\n"
	       "Commands:\n");
	for (i = 0; i < NB_COMMANDS; i++)
		printf("  %s\n", commands[i].synopsis);
	printf("\n'" TOOL_NAME " COMMAND --help' describes a command.\n"
	       "Sizes take the suffixes k, M, G, T, P, E (powers of 1024).\n\n"
	       "Exit status: 0 success, 1 error or bad usage; check: 0 clean,\n"
	       "1 check could not run, 2 corruptions found, 3 only leaks found.\n");
}

int main(int argc, char **argv)
{
	const char *name;
	size_t i;

	if (argc < 2)
		return tool_usage_error(NULL, "missing command");
	name = argv[1];
	if (!strcmp(name, "--help") || !strcmp(name, "-h") || !strcmp(name, "help")) {
		usage();
		return EXIT_OK;
	}
	if (!strcmp(name, "--version") || !strcmp(name, "-V")) {
		printf(TOOL_NAME " version " QCOW_TOOL_VERSION "\n");
		return EXIT_OK;
	}
	for (i = 0; i < NB_COMMANDS; i++) {
		if (!strcmp(name, commands[i].name))
			return commands[i].fn(argc - 1, argv + 1);
	}
	return tool_usage_error(NULL, "unknown command '%s'", name);
}
