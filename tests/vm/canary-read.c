/* SPDX-License-Identifier: MIT */
/*
 * canary-read: read a block device into memory that already holds a
 * pattern, and compare every byte with a reference file.  The guest half
 * of tests/vm/test-canary.sh.
 *
 *   canary-read direct DEV REF      O_DIRECT reads of many sizes and
 *                                   offsets into one buffer that is filled
 *                                   with the canary pattern before each read
 *   canary-read buffered DEV REF    first fill most free memory with the
 *                                   pattern and free it again, drop the
 *                                   page cache, then read DEV buffered (its
 *                                   new page-cache pages are likely those
 *                                   recycled pages; boot with
 *                                   init_on_alloc=0 so nothing zeroes them)
 *
 * A server that reports bytes it never wrote (a hole not zero-filled, a
 * short read counted in full) leaves the canary, or whatever the pages
 * held, where the reference has other bytes.  Prints the first mismatch of
 * each bad read and whether it holds the canary; exit 0 when every byte
 * matched, 1 otherwise, 2 on a usage or setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define CANARY(i) ((uint8_t)(0xc5 ^ ((i) * 131)))

static uint8_t *ref;
static size_t ref_len;
static unsigned bad_reads;

static void fill_canary(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = CANARY(i);
}

/* Compare got (len bytes read at off) with the reference; report a mismatch. */
static void compare(const char *how, const uint8_t *got, size_t len, size_t off)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (got[i] != ref[off + i])
			break;
	if (i == len)
		return;
	bad_reads++;
	if (bad_reads <= 10)
		printf("  %s read of %zu bytes at %zu: byte %zu is 0x%02x, want 0x%02x%s\n", how,
		       len, off, i, got[i], ref[off + i],
		       got[i] == CANARY(i) ? " (the canary: never written)" : "");
}

static int read_full(int fd, uint8_t *buf, size_t len, size_t off)
{
	size_t done = 0;

	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			printf("  read of %zu bytes at %zu: %s\n", len, off + done,
			       n < 0 ? strerror(errno) : "end of device");
			return -1;
		}
		done += (size_t)n;
	}
	return 0;
}

static int run_direct(const char *dev)
{
	static const size_t sizes[] = { 512, 3584, 4096, 66048, 131072, 1052160 };
	size_t max = 2u << 20, off, s;
	uint8_t *buf;
	int fd = open(dev, O_RDONLY | O_DIRECT);

	if (fd < 0 || posix_memalign((void **)&buf, 4096, max)) {
		perror(dev);
		return 2;
	}
	for (s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
		size_t bs = sizes[s], step = bs > 65536 ? bs : 65536 + 512;

		for (off = 0; off + bs <= ref_len; off += step) {
			fill_canary(buf, bs);
			if (read_full(fd, buf, bs, off) < 0)
				return 1;
			compare("O_DIRECT", buf, bs, off);
		}
		/* and the very end, whatever the alignment of the steps */
		fill_canary(buf, bs);
		if (bs <= ref_len && read_full(fd, buf, bs, ref_len - bs) == 0)
			compare("O_DIRECT", buf, bs, ref_len - bs);
	}
	close(fd);
	free(buf);
	return 0;
}

/* Fill about three quarters of the free memory with the canary, then free it. */
static void poison_free_memory(void)
{
	long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
	size_t len = (size_t)pages / 4 * 3 * (size_t)page;
	uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		return;
	fill_canary(p, len);
	munmap(p, len);
}

static void drop_caches(int fd)
{
	int d = open("/proc/sys/vm/drop_caches", O_WRONLY);

	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (d >= 0) {
		if (write(d, "3\n", 2) < 0)
			perror("drop_caches");
		close(d);
	}
}

static int run_buffered(const char *dev)
{
	size_t chunk = 1u << 20, off;
	uint8_t *buf = malloc(chunk);
	int fd = open(dev, O_RDONLY), round;

	if (fd < 0 || !buf) {
		perror(dev);
		return 2;
	}
	for (round = 0; round < 3; round++) {
		drop_caches(fd);
		poison_free_memory();
		for (off = 0; off < ref_len; off += chunk) {
			size_t n = ref_len - off < chunk ? ref_len - off : chunk;

			if (read_full(fd, buf, n, off) < 0)
				return 1;
			compare("buffered", buf, n, off);
		}
	}
	close(fd);
	free(buf);
	return 0;
}

int main(int argc, char **argv)
{
	struct stat st;
	int fd, ret;

	if (argc != 4 || (strcmp(argv[1], "direct") && strcmp(argv[1], "buffered"))) {
		fprintf(stderr, "usage: canary-read direct|buffered DEV REF\n");
		return 2;
	}
	fd = open(argv[3], O_RDONLY);
	if (fd < 0 || fstat(fd, &st) < 0) {
		perror(argv[3]);
		return 2;
	}
	ref_len = (size_t)st.st_size;
	ref = mmap(NULL, ref_len, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
	if (ref == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	ret = !strcmp(argv[1], "direct") ? run_direct(argv[2]) : run_buffered(argv[2]);
	if (ret)
		return ret;
	if (bad_reads)
		printf("canary-read %s: %u reads differ from the reference\n", argv[1], bad_reads);
	return bad_reads ? 1 : 0;
}
