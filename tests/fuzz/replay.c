// SPDX-License-Identifier: MIT
/*
 * Replay driver: runs a fuzz target's LLVMFuzzerTestOneInput on saved inputs,
 * without libFuzzer (so gcc + ASan/UBSan can build it for `make check`).
 *
 *   replay-TARGET [FILE|DIR]...
 *
 * Without arguments it replays the directories compiled in as
 * FUZZ_REPLAY_DIRS (colon separated: the target's seed corpus and its
 * crash regressions), or those in $FUZZ_REPLAY_DIRS when set. Directory
 * entries are taken in name order; names starting with '.' and README* are
 * skipped. A directory that does not exist is an error only when it is the
 * first one (the corpus); an empty crash directory is fine.
 *
 * A failure is a sanitizer report or an abort() from the target: the
 * process dies there and the log's last "replay:" line names the input.
 * Exit status 0 when every input ran, 1 when no input was found.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

#ifndef FUZZ_REPLAY_DIRS
#define FUZZ_REPLAY_DIRS ""
#endif

/* A target need not define it. */
__attribute__((weak)) int LLVMFuzzerInitialize(int *argc, char ***argv);

static unsigned nb_inputs;

static int run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	long len;

	if (!f) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (fseek(f, 0, SEEK_END) < 0 || (len = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) < 0) {
		fprintf(stderr, "replay: %s: cannot size it\n", path);
		fclose(f);
		return -1;
	}
	/* libFuzzer passes a buffer of exactly the input's length: so do we,
	 * so that ASan catches a read one past the end. */
	buf = malloc(len ? (size_t)len : 1);
	if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) {
		fprintf(stderr, "replay: %s: cannot read it\n", path);
		free(buf);
		fclose(f);
		return -1;
	}
	fclose(f);
	printf("replay: %s (%ld bytes)\n", path, len);
	fflush(stdout);
	LLVMFuzzerTestOneInput(buf, (size_t)len);
	free(buf);
	nb_inputs++;
	return 0;
}

static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Every plain file in dir, in name order. missing_ok: ENOENT is not an error. */
static int run_dir(const char *dir, bool missing_ok)
{
	char **names = NULL, path[4096];
	size_t n = 0, i;
	struct dirent *e;
	int ret = 0;
	DIR *d = opendir(dir);

	if (!d) {
		if (missing_ok && errno == ENOENT)
			return 0;
		fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		char **nn;

		if (e->d_name[0] == '.' || !strncmp(e->d_name, "README", 6))
			continue;
		nn = realloc(names, (n + 1) * sizeof(*names));
		if (!nn || !(nn[n] = strdup(e->d_name))) {
			fprintf(stderr, "replay: out of memory\n");
			free(nn ? nn : names);
			closedir(d);
			return -1;
		}
		names = nn;
		n++;
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), name_cmp);
	for (i = 0; i < n; i++) {
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (ret == 0 && stat(path, &st) == 0 && S_ISREG(st.st_mode))
			ret = run_file(path);
		free(names[i]);
	}
	free(names);
	return ret;
}

static int run_path(const char *path, bool missing_ok)
{
	struct stat st;

	if (stat(path, &st) < 0) {
		if (missing_ok && errno == ENOENT)
			return 0;
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return S_ISDIR(st.st_mode) ? run_dir(path, missing_ok) : run_file(path);
}

int main(int argc, char **argv)
{
	const char *env = getenv("FUZZ_REPLAY_DIRS");
	char *dirs, *save = NULL, *dir;
	bool first = true;
	int i, ret = 0;

	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1) {
		for (i = 1; i < argc && ret == 0; i++)
			ret = run_path(argv[i], false);
	} else {
		dirs = strdup(env && *env ? env : FUZZ_REPLAY_DIRS);
		if (!dirs)
			return 1;
		for (dir = strtok_r(dirs, ":", &save); dir && ret == 0;
		     dir = strtok_r(NULL, ":", &save)) {
			ret = run_path(dir, !first);
			first = false;
		}
		free(dirs);
	}
	if (ret < 0)
		return 1;
	if (!nb_inputs) {
		fprintf(stderr, "replay: no inputs (give files or directories, or set "
			"FUZZ_REPLAY_DIRS)\n");
		return 1;
	}
	printf("replay: %u inputs, no failure\n", nb_inputs);
	return 0;
}
