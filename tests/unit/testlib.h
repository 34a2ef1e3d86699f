/* SPDX-License-Identifier: MIT */
/*
 * Tiny shared helpers for the unit tests: checks that count failures, a
 * seeded PRNG (SEED env overrides, the seed is always printed so a failure
 * can be replayed), a private scratch directory removed at exit, and small
 * file and subprocess helpers.
 *
 * Every test is one program: exit 0 pass, 77 skip, anything else fail.
 * Everything is static so each test includes this header exactly once.
 */
#ifndef QCOW_TESTLIB_H
#define QCOW_TESTLIB_H

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "qcow/engine.h"

#define T_SKIP 77

static unsigned long t_nfail;
static unsigned long t_nchecks;
static char t_dir[1024];
static uint64_t t_rng_state;

/* Non-fatal check: report and keep going so one run shows every failure. */
#define CHECK(cond, ...) do { \
	t_nchecks++; \
	if (!(cond)) { \
		fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		t_fail_hook(); \
	} \
} while (0)

/* CHECK that also clears the bool *ok (one run's verdict) when it fails. */
#define CHECK_OK(ok, cond, ...) do { \
	bool c_ = (cond); \
	CHECK(c_, __VA_ARGS__); \
	if (!c_) \
		*(ok) = false; \
} while (0)

/* Fatal check: nothing after it makes sense when it fails. */
#define REQUIRE(cond, ...) do { \
	t_nchecks++; \
	if (!(cond)) { \
		fprintf(stderr, "FATAL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		t_nfail++; \
		exit(t_finish()); \
	} \
} while (0)

static inline void t_fail_hook(void)
{
	t_nfail++;
	/* A broken engine can fail thousands of checks; keep the log readable. */
	if (t_nfail >= 200) {
		fprintf(stderr, "too many failures, giving up\n");
		exit(1);
	}
}

static inline int t_rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb; (void)flag; (void)ftw;
	return remove(path);
}

static char **t_paths;
static size_t t_npaths;

static inline void t_cleanup(void)
{
	if (t_dir[0] && !getenv("KEEP_TMP"))
		nftw(t_dir, t_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	for (size_t i = 0; i < t_npaths; i++)
		free(t_paths[i]);
	free(t_paths);
	t_paths = NULL;
	t_npaths = 0;
}

/* Print the summary; returns the exit status the test should use. */
static inline int t_finish(void)
{
	if (t_nfail) {
		fprintf(stderr, "%lu of %lu checks failed\n", t_nfail, t_nchecks);
		return 1;
	}
	if (t_nchecks == 0) {
		/* Nothing was asserted: never report a vacuous pass. */
		fprintf(stderr, "no checks ran\n");
		return 1;
	}
	printf("ok: %lu checks passed\n", t_nchecks);
	return 0;
}

static inline uint64_t t_rand(void)
{
	/* splitmix64: tiny, good enough, and reproducible from the seed. */
	uint64_t z = (t_rng_state += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* An unsigned number from the environment (0x and 0 prefixes work), def when unset or empty. */
static inline uint64_t t_env_u64(const char *name, uint64_t def)
{
	const char *s = getenv(name);

	return s && *s ? strtoull(s, NULL, 0) : def;
}

/* Uniform in [0, n); n > 0. */
static inline uint64_t t_rand_below(uint64_t n)
{
	return t_rand() % n;
}

static inline void t_fill_random(void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len >= 8) {
		uint64_t v = t_rand();
		memcpy(p, &v, 8);
		p += 8;
		len -= 8;
	}
	while (len--)
		*p++ = (uint8_t)t_rand();
}

/* Seed the PRNG (SEED env wins) and create the scratch directory. */
static inline void t_init(const char *name)
{
	const char *s = getenv("SEED");
	uint64_t seed;
	const char *tmp = getenv("TMPDIR");

	/* line buffered: a crash must not eat the progress lines before it */
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (s && *s)
		seed = strtoull(s, NULL, 0);
	else
		seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);
	t_rng_state = seed;
	printf("%s: SEED=%" PRIu64 "\n", name, seed);
	fflush(stdout);

	snprintf(t_dir, sizeof(t_dir), "%s/qcow-%s.XXXXXX", tmp && *tmp ? tmp : "/tmp", name);
	if (!mkdtemp(t_dir)) {
		fprintf(stderr, "mkdtemp %s: %s\n", t_dir, strerror(errno));
		exit(1);
	}
	atexit(t_cleanup);
}

/* Path of a file in the scratch directory. Each call returns a new string
 * that stays valid until exit (freed by t_cleanup). */

static inline const char *t_path(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline const char *t_path(const char *fmt, ...)
{
	char name[256];
	char *b, **grown;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	grown = realloc(t_paths, (t_npaths + 1) * sizeof(*t_paths));
	if (!grown || asprintf(&b, "%s/%s", t_dir, name) < 0) {
		fprintf(stderr, "t_path: out of memory\n");
		exit(1);
	}
	t_paths = grown;
	t_paths[t_npaths++] = b;
	return b;
}

static inline bool t_have_prog(const char *prog)
{
	const char *path = getenv("PATH");
	char buf[4096];

	if (!path)
		return false;
	while (*path) {
		const char *colon = strchr(path, ':');
		size_t n = colon ? (size_t)(colon - path) : strlen(path);
		snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, path, prog);
		if (n && access(buf, X_OK) == 0)
			return true;
		path += n + (colon ? 1 : 0);
	}
	return false;
}

/* Run a shell command, return its exit status (or -1 / 128+signal). When
 * out is given, stdout (truncated to outlen-1) lands there. */
static inline int t_run(char *out, size_t outlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static inline int t_run(char *out, size_t outlen, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	FILE *f;
	size_t n = 0;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	fflush(stdout);
	fflush(stderr);
	f = popen(cmd, "r");
	if (!f)
		return -1;
	if (out && outlen) {
		n = fread(out, 1, outlen - 1, f);
		out[n] = '\0';
	}
	{
		char sink[4096];
		while (fread(sink, 1, sizeof(sink), f) > 0)
			;
	}
	st = pclose(f);
	if (st == -1)
		return -1;
	if (WIFEXITED(st))
		return WEXITSTATUS(st);
	return 128 + WTERMSIG(st);
}

/* Create an image at path (replacing any file there) and open it read-write. */
static inline struct qcow_image *t_create_open(const char *path, const struct qcow_create_opts *co)
{
	struct qcow_image *img = NULL;
	char err[512] = "";
	int r;

	r = qcow_create(path, co, true, err, sizeof(err));
	REQUIRE(r == 0, "create %s: %d %s", path, r, err);
	r = qcow_open(path, NULL, &img, err, sizeof(err));
	REQUIRE(r == 0 && img, "open %s: %d %s", path, r, err);
	return img;
}

/* Read a whole file; *len gets its size. Caller frees. NULL on error. */
static inline uint8_t *t_read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	struct stat st;
	uint8_t *buf;
	size_t done = 0;

	if (fd < 0 || fstat(fd, &st) < 0) {
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	buf = malloc(st.st_size ? st.st_size : 1);
	while (buf && done < (size_t)st.st_size) {
		ssize_t r = pread(fd, buf + done, st.st_size - done, done);
		if (r <= 0) {
			free(buf);
			buf = NULL;
			break;
		}
		done += r;
	}
	close(fd);
	*len = st.st_size;
	return buf;
}

static inline int t_write_file(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	size_t done = 0;

	if (fd < 0)
		return -errno;
	while (done < len) {
		ssize_t r = pwrite(fd, (const uint8_t *)buf + done, len - done, done);
		if (r <= 0) {
			close(fd);
			return -EIO;
		}
		done += r;
	}
	close(fd);
	return 0;
}

static inline int t_copy_file(const char *from, const char *to)
{
	size_t len;
	uint8_t *buf = t_read_file(from, &len);
	int r;

	if (!buf)
		return -EIO;
	r = t_write_file(to, buf, len);
	free(buf);
	return r;
}

/* Patch bytes in place at off (the file grows if needed). */
static inline int t_patch(const char *path, uint64_t off, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY);
	ssize_t r;

	if (fd < 0)
		return -errno;
	r = pwrite(fd, buf, len, off);
	close(fd);
	return r == (ssize_t)len ? 0 : -EIO;
}

static inline int t_patch_be64(const char *path, uint64_t off, uint64_t v)
{
	uint64_t be = htobe64(v);
	return t_patch(path, off, &be, 8);
}

static inline int t_patch_be32(const char *path, uint64_t off, uint32_t v)
{
	uint32_t be = htobe32(v);
	return t_patch(path, off, &be, 4);
}

static inline int t_read_at(const char *path, uint64_t off, void *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	ssize_t r;

	if (fd < 0)
		return -errno;
	r = pread(fd, buf, len, off);
	close(fd);
	return r == (ssize_t)len ? 0 : -EIO;
}

static inline uint64_t t_be64_at(const char *path, uint64_t off)
{
	uint64_t v = 0;
	t_read_at(path, off, &v, 8);
	return be64toh(v);
}

static inline uint32_t t_be32_at(const char *path, uint64_t off)
{
	uint32_t v = 0;
	t_read_at(path, off, &v, 4);
	return be32toh(v);
}

static inline uint64_t t_file_size(const char *path)
{
	struct stat st;
	return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

/* Case-insensitive: does msg contain any of the '|'-separated words? */
static inline bool t_msg_has(const char *msg, const char *words)
{
	char w[128];

	while (*words) {
		const char *bar = strchr(words, '|');
		size_t n = bar ? (size_t)(bar - words) : strlen(words);
		snprintf(w, sizeof(w), "%.*s", (int)n, words);
		if (n && strcasestr(msg, w))
			return true;
		words += n + (bar ? 1 : 0);
	}
	return false;
}

/* First differing offset of two buffers, or -1. */
static inline int64_t t_first_diff(const void *a, const void *b, size_t len)
{
	const uint8_t *x = a, *y = b;
	for (size_t i = 0; i < len; i++)
		if (x[i] != y[i])
			return (int64_t)i;
	return -1;
}

/*
 * Is qemu-img there for the cross-checks? Without it the qemu parts of a test
 * are skipped (and said so), unless QEMU_TESTS_REQUIRED=1 or CI=true, where
 * a missing qemu-img is a failure.
 */
static inline bool t_want_qemu(void)
{
	const char *req = getenv("QEMU_TESTS_REQUIRED"), *ci = getenv("CI");

	if (t_have_prog("qemu-img") && t_have_prog("qemu-io"))
		return true;
	if ((req && !strcmp(req, "1")) || (ci && !strcmp(ci, "true"))) {
		fprintf(stderr, "FATAL: qemu-img/qemu-io not found (QEMU_TESTS_REQUIRED/CI set)\n");
		exit(1);
	}
	printf("qemu-img/qemu-io not found: skipping the qemu cross-checks\n");
	return false;
}

/* qemu-img check status (0 clean, 2 corrupt, 3 leaks, ...), -2 if no qemu-img. */
static inline int t_qemu_check(const char *path)
{
	char out[8192];
	int r;

	if (!t_have_prog("qemu-img"))
		return -2;
	r = t_run(out, sizeof(out), "qemu-img check -f qcow2 '%s' 2>&1", path);
	if (r != 0)
		fprintf(stderr, "qemu-img check %s exited %d:\n%s\n", path, r, out);
	return r;
}

/*
 * One write the way the daemon does it, on the image's own file ops:
 * qcow_write_begin_nowait, the table reads it asks for, a flush where dirty
 * tables are in the way (qcow_flush: -EBUSY while another runs), the
 * copy-on-write parts (qcow_cow_read) and the data written, qcow_write_end.
 * io_count, when given, counts file IOs so far: *engine_io gets the ones
 * the engine calls made themselves. 0 or the first -errno.
 */
static inline int t_nowait_write(struct qcow_image *img, const uint8_t *buf, uint64_t off,
				 uint64_t len, size_t (*io_count)(void), size_t *engine_io)
{
	const struct qcow_file *f = qcow_get_file(img);
	struct qcow_write_plan plan;
	struct qcow_meta_read need;
	uint8_t part[65536 * 32];	/* up to 2 MiB clusters */
	uint64_t done = 0;
	size_t ev = 0;
	unsigned i;
	int r;

	while (done < len) {
		ev = io_count ? io_count() : 0;
		r = qcow_write_begin_nowait(img, off + done, len - done, &plan, &need);
		if (io_count)
			*engine_io += io_count() - ev;
		if (r == -EAGAIN) {
			r = f->ops->pread(f->ctx, need.buf, need.len, need.offset);
			r = qcow_meta_read_done(img, &need, r);
			if (r < 0)
				return r;
			continue;
		}
		if (r == -EBUSY && qcow_busy_reason(img) == QCOW_WAIT_WRITEBACK) {
			r = qcow_flush(img);
			if (r < 0)
				return r;
			continue;
		}
		if (r < 0)
			return r;
		for (i = 0; r == 0 && i < 2; i++) {
			const struct qcow_cow_part *c = &plan.cow[i];

			if (c->kind == QCOW_COW_NONE)
				continue;
			r = c->len <= sizeof(part) ? qcow_cow_read(img, c, part) : -EFBIG;
			if (r == 0)
				r = f->ops->pwrite(f->ctx, part, c->len, c->dst);
		}
		if (r == 0)
			r = f->ops->pwrite(f->ctx, buf + done, plan.length, plan.host_offset);
		ev = io_count ? io_count() : 0;
		r = qcow_write_end(img, &plan, r);
		if (io_count)
			*engine_io += io_count() - ev;
		if (r < 0)
			return r;
		done += plan.length;
	}
	return 0;
}

#endif /* QCOW_TESTLIB_H */
