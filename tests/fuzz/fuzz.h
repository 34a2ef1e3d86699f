/* SPDX-License-Identifier: MIT */
/*
 * Shared by the fuzz targets and the replay driver. A target defines
 * LLVMFuzzerTestOneInput (and optionally LLVMFuzzerInitialize); it is linked
 * either with libFuzzer (clang -fsanitize=fuzzer, `make fuzz`) or with
 * replay.c (gcc + ASan/UBSan, `make check`).
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdarg.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/*
 * Where failed invariants are reported: stderr as it was when the target
 * started (libFuzzer's -close_fd_mask=2 closes fd 2 later, after
 * LLVMFuzzerInitialize, which calls fuzz_keep_stderr()).
 */
static int fuzz_err_fd = 2;

static inline void fuzz_keep_stderr(void)
{
	int fd = dup(2);

	if (fd >= 0)
		fuzz_err_fd = fd;
}

__attribute__((format(printf, 4, 5), noreturn, unused))
static void fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	dprintf(fuzz_err_fd, "%s:%d: invariant failed: %s: %s\n", file, line, cond, msg);
	abort();
}

/*
 * An invariant of the code under test: when it does not hold, say where
 * and abort(), which libFuzzer and the replay both report as a crash.
 */
#define FUZZ_ASSERT(cond, ...)                                              \
	do {                                                                \
		if (!(cond))                                                \
			fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);  \
	} while (0)

#endif /* FUZZ_H */
