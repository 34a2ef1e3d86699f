// SPDX-License-Identifier: MIT
/*
 * In-memory sparse file for the fuzz targets: see memfile.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "memfile.h"

#define PAGE_SHIFT 12
#define PAGE_SIZE  (1U << PAGE_SHIFT)

struct memfile_page {
	uint64_t index;
	uint8_t data[PAGE_SIZE];
};

void memfile_init(struct memfile *m, const uint8_t *data, size_t len)
{
	memset(m, 0, sizeof(*m));
	m->base = data;
	m->base_valid = len;
	m->size = len;
	m->size_limit = MEMFILE_SIZE_LIMIT;
	m->overlay_limit = MEMFILE_OVERLAY_LIMIT;
}

void memfile_free(struct memfile *m)
{
	size_t i;

	for (i = 0; i < m->nb_slots; i++)
		free(m->slots[i]);
	free(m->slots);
	m->slots = NULL;
	m->nb_slots = m->nb_pages = 0;
}

static size_t slot_of(const struct memfile *m, uint64_t index)
{
	/* Fibonacci hashing; nb_slots is a power of two. */
	return (size_t)((index * 0x9e3779b97f4a7c15ULL) >> 32) & (m->nb_slots - 1);
}

static struct memfile_page *lookup(const struct memfile *m, uint64_t index)
{
	size_t i;

	if (!m->nb_slots)
		return NULL;
	for (i = slot_of(m, index); m->slots[i]; i = (i + 1) & (m->nb_slots - 1)) {
		if (m->slots[i]->index == index)
			return m->slots[i];
	}
	return NULL;
}

static void place(struct memfile *m, struct memfile_page *p)
{
	size_t i = slot_of(m, p->index);

	while (m->slots[i])
		i = (i + 1) & (m->nb_slots - 1);
	m->slots[i] = p;
}

/* Rehash into nb slots, leaving out pages at or past keep_below. */
static int rehash(struct memfile *m, size_t nb, uint64_t keep_below)
{
	struct memfile_page **old = m->slots;
	size_t old_nb = m->nb_slots, i;

	m->slots = calloc(nb, sizeof(*m->slots));
	if (!m->slots) {
		m->slots = old;
		return -ENOMEM;
	}
	m->nb_slots = nb;
	m->nb_pages = 0;
	for (i = 0; i < old_nb; i++) {
		if (!old[i])
			continue;
		if (old[i]->index >= keep_below) {
			free(old[i]);
			continue;
		}
		place(m, old[i]);
		m->nb_pages++;
	}
	free(old);
	return 0;
}

/* Bytes of the page at index as they read now (base, else zeros). */
static void fill_from_base(const struct memfile *m, uint64_t index, uint8_t *out)
{
	uint64_t start = index << PAGE_SHIFT;
	size_t n = 0;

	if (start < m->base_valid)
		n = (size_t)(m->base_valid - start < PAGE_SIZE ? m->base_valid - start : PAGE_SIZE);
	memcpy(out, m->base + start, n);
	memset(out + n, 0, PAGE_SIZE - n);
}

static struct memfile_page *get_page(struct memfile *m, uint64_t index)
{
	struct memfile_page *p = lookup(m, index);

	if (p)
		return p;
	if ((uint64_t)(m->nb_pages + 1) * PAGE_SIZE > m->overlay_limit)
		return NULL;
	if ((m->nb_pages + 1) * 2 > m->nb_slots &&
	    rehash(m, m->nb_slots ? m->nb_slots * 2 : 64, UINT64_MAX) < 0)
		return NULL;
	p = malloc(sizeof(*p));
	if (!p)
		return NULL;
	p->index = index;
	fill_from_base(m, index, p->data);
	place(m, p);
	m->nb_pages++;
	return p;
}

int memfile_pread(struct memfile *m, void *buf, size_t len, uint64_t off)
{
	uint8_t *b = buf;

	if (off > INT64_MAX || len > INT64_MAX - off)
		return -EINVAL;
	while (len) {
		uint64_t index = off >> PAGE_SHIFT;
		size_t in = (size_t)(off & (PAGE_SIZE - 1));
		size_t n = PAGE_SIZE - in < len ? PAGE_SIZE - in : len;
		const struct memfile_page *p;

		if (off >= m->size) {
			memset(b, 0, len);      /* past end of file: zeros */
			return 0;
		}
		p = lookup(m, index);
		if (p) {
			memcpy(b, p->data + in, n);
		} else {
			size_t from_base = 0;

			if (off < m->base_valid)
				from_base = (size_t)(m->base_valid - off < n ? m->base_valid - off : n);
			memcpy(b, m->base + off, from_base);
			memset(b + from_base, 0, n - from_base);
		}
		b += n;
		off += n;
		len -= n;
	}
	return 0;
}

static int count_op(struct memfile *m)
{
	m->nb_ops++;
	if (m->fail_at && m->nb_ops >= m->fail_at) {
		m->nb_failed++;
		return -EIO;
	}
	return 0;
}

int memfile_pwrite(struct memfile *m, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *b = buf;
	int ret = count_op(m);

	if (ret < 0)
		return ret;
	if (off > m->size_limit || len > m->size_limit - off)
		return -EFBIG;
	while (len) {
		size_t in = (size_t)(off & (PAGE_SIZE - 1));
		size_t n = PAGE_SIZE - in < len ? PAGE_SIZE - in : len;
		struct memfile_page *p = get_page(m, off >> PAGE_SHIFT);

		/* A partial write is allowed here: pwrite(2) on a full disk. */
		if (!p)
			return -ENOSPC;
		memcpy(p->data + in, b, n);
		b += n;
		off += n;
		len -= n;
		if (off > m->size)
			m->size = off;
	}
	return 0;
}

static int memfile_truncate(struct memfile *m, uint64_t size)
{
	int ret = count_op(m);
	struct memfile_page *p;

	if (ret < 0)
		return ret;
	if (size > m->size_limit)
		return -EFBIG;
	if (size < m->size) {
		uint64_t first_gone = (size + PAGE_SIZE - 1) >> PAGE_SHIFT;

		if (m->nb_slots && rehash(m, m->nb_slots, first_gone) < 0)
			return -ENOMEM;
		/* The page holding the new end keeps only the bytes before it. */
		p = lookup(m, size >> PAGE_SHIFT);
		if (p && (size & (PAGE_SIZE - 1)))
			memset(p->data + (size & (PAGE_SIZE - 1)), 0,
			       PAGE_SIZE - (size & (PAGE_SIZE - 1)));
		if (m->base_valid > size)
			m->base_valid = size;
	}
	m->size = size;
	return 0;
}

/* ------------------------------------------------------------ qcow_file_ops */

static int ops_pread(void *ctx, void *buf, size_t len, uint64_t off)
{
	return memfile_pread(ctx, buf, len, off);
}

static int ops_pwrite(void *ctx, const void *buf, size_t len, uint64_t off)
{
	return memfile_pwrite(ctx, buf, len, off);
}

static int ops_flush(void *ctx)
{
	return count_op(ctx);
}

static int ops_truncate(void *ctx, uint64_t size)
{
	return memfile_truncate(ctx, size);
}

static int ops_get_size(void *ctx, uint64_t *size)
{
	*size = ((struct memfile *)ctx)->size;
	return 0;
}

static const struct qcow_file_ops memfile_ops = {
	.pread = ops_pread,
	.pwrite = ops_pwrite,
	.flush = ops_flush,
	.truncate = ops_truncate,
	.get_size = ops_get_size,
	.close = NULL,
};

void memfile_as_qcow_file(struct memfile *m, struct qcow_file *f)
{
	f->ops = &memfile_ops;
	f->ctx = m;
	f->fd = -1;
}

int memfile_dump(struct memfile *m, const char *path)
{
	uint8_t buf[PAGE_SIZE];
	FILE *f = fopen(path, "wb");
	uint64_t off;
	int ret = 0;

	if (!f)
		return -errno;
	for (off = 0; off < m->size && ret == 0; off += PAGE_SIZE) {
		size_t n = m->size - off < PAGE_SIZE ? (size_t)(m->size - off) : PAGE_SIZE;

		memfile_pread(m, buf, n, off);
		if (fwrite(buf, 1, n, f) != n)
			ret = -EIO;
	}
	if (fclose(f) != 0 && ret == 0)
		ret = -errno;
	return ret;
}
