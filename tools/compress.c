// SPDX-License-Identifier: MIT
/*
 * The compression pool of compress.h: a ring of depth slots, each FREE,
 * QUEUED (handed over, waiting for a worker), BUSY (a worker deflates it)
 * or DONE.  The caller fills slots at head and takes them back at tail, in
 * order; workers take the oldest QUEUED slot.  One mutex guards the
 * states, two condition variables say "work queued" and "a slot is done".
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compress.h"

enum cslot_state { CSLOT_FREE, CSLOT_QUEUED, CSLOT_BUSY, CSLOT_DONE };

struct cpool {
	const struct qcow_image *img;
	size_t cluster;
	unsigned depth, head, tail, used;
	struct cjob *jobs;
	enum cslot_state *state;
	pthread_t *threads;
	unsigned nthreads;
	pthread_mutex_t lock;
	pthread_cond_t queued, done;
	bool stop;
};

/* The oldest QUEUED slot, or -1. */
static int next_queued(const struct cpool *p)
{
	unsigned i, s;

	for (i = 0; i < p->used; i++) {
		s = (p->tail + i) % p->depth;
		if (p->state[s] == CSLOT_QUEUED)
			return (int)s;
	}
	return -1;
}

static void *worker(void *arg)
{
	struct cpool *p = arg;
	int s;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->stop && (s = next_queued(p)) < 0)
			pthread_cond_wait(&p->queued, &p->lock);
		if (p->stop)
			break;
		p->state[s] = CSLOT_BUSY;
		pthread_mutex_unlock(&p->lock);
		/* QEMU's cap: a stream must save at least a byte */
		p->jobs[s].out_len = qcow_deflate_cluster(p->img, p->jobs[s].in, p->jobs[s].out,
							   p->cluster - 1);
		pthread_mutex_lock(&p->lock);
		p->state[s] = CSLOT_DONE;
		pthread_cond_broadcast(&p->done);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

void cpool_free(struct cpool *p)
{
	unsigned i;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->queued);
	pthread_mutex_unlock(&p->lock);
	for (i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	for (i = 0; p->jobs && i < p->depth; i++) {
		free(p->jobs[i].in);
		free(p->jobs[i].out);
	}
	pthread_mutex_destroy(&p->lock);
	pthread_cond_destroy(&p->queued);
	pthread_cond_destroy(&p->done);
	free(p->jobs);
	free(p->state);
	free(p->threads);
	free(p);
}

static bool cpool_alloc(struct cpool *p)
{
	unsigned i;

	p->jobs = calloc(p->depth, sizeof(*p->jobs));
	p->state = calloc(p->depth, sizeof(*p->state));
	p->threads = calloc(p->nthreads, sizeof(*p->threads));
	if (!p->jobs || !p->state || !p->threads)
		return false;
	for (i = 0; i < p->depth; i++) {
		p->jobs[i].in = malloc(p->cluster);
		p->jobs[i].out = malloc(p->cluster);
		if (!p->jobs[i].in || !p->jobs[i].out)
			return false;
	}
	return true;
}

struct cpool *cpool_new(const struct qcow_image *img, unsigned threads)
{
	struct cpool *p = calloc(1, sizeof(*p));
	struct qcow_info info;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned i;

	if (!p)
		return NULL;
	qcow_get_info(img, &info);
	p->img = img;
	p->cluster = info.cluster_size;
	p->nthreads = threads ? threads : cpus > 0 ? (unsigned)cpus : 1;
	/* four clusters a worker: enough to keep every one busy */
	p->depth = 4 * p->nthreads;
	pthread_mutex_init(&p->lock, NULL);
	pthread_cond_init(&p->queued, NULL);
	pthread_cond_init(&p->done, NULL);
	if (!cpool_alloc(p)) {
		p->nthreads = 0;
		cpool_free(p);
		return NULL;
	}
	for (i = 0; i < p->nthreads; i++) {
		if (pthread_create(&p->threads[i], NULL, worker, p)) {
			p->nthreads = i;
			if (!i) {
				cpool_free(p);
				return NULL;
			}
			break;
		}
	}
	return p;
}

bool cpool_full(const struct cpool *p)
{
	return p->used == p->depth;
}

bool cpool_empty(const struct cpool *p)
{
	return !p->used;
}

struct cjob *cpool_next(struct cpool *p)
{
	return &p->jobs[p->head];
}

void cpool_submit(struct cpool *p, uint64_t off)
{
	pthread_mutex_lock(&p->lock);
	p->jobs[p->head].off = off;
	p->state[p->head] = CSLOT_QUEUED;
	p->head = (p->head + 1) % p->depth;
	p->used++;
	pthread_cond_signal(&p->queued);
	pthread_mutex_unlock(&p->lock);
}

struct cjob *cpool_oldest(struct cpool *p)
{
	pthread_mutex_lock(&p->lock);
	while (p->state[p->tail] != CSLOT_DONE)
		pthread_cond_wait(&p->done, &p->lock);
	pthread_mutex_unlock(&p->lock);
	return &p->jobs[p->tail];
}

void cpool_release(struct cpool *p)
{
	pthread_mutex_lock(&p->lock);
	p->state[p->tail] = CSLOT_FREE;
	p->tail = (p->tail + 1) % p->depth;
	p->used--;
	pthread_mutex_unlock(&p->lock);
}
