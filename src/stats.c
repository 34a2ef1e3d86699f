/* SPDX-License-Identifier: MIT */
/*
 * ublk-qcow stats ID|/dev/ublkbN|NAME [--output=human|json]: what a serving
 * daemon has done, per queue and in total, and what its engine did.
 *
 * The daemon answers "stats" on its control socket (control.c stats_line):
 * "ok NQ NC", then for each queue the requests waiting now and its NC
 * counters in enum uq_qstat order, then the engine's four (struct
 * qcow_stats order).  The names below are the JSON keys, one per counter.
 * Requests in flight are those counted in and not yet done.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ublk-qcow.h"

#define STATS_TIMEOUT_MS 5000
#define ENGINE_STATS	5

static const char *const qstat_names[UQ_QS_COUNT] = {
	[UQ_QS_READS] = "reads",
	[UQ_QS_WRITES] = "writes",
	[UQ_QS_FLUSHES] = "flushes",
	[UQ_QS_DISCARDS] = "discards",
	[UQ_QS_WRITE_ZEROES] = "write_zeroes",
	[UQ_QS_READ_BYTES] = "read_bytes",
	[UQ_QS_WRITE_BYTES] = "write_bytes",
	[UQ_QS_DONE] = "done",
	[UQ_QS_ERRORS] = "errors",
	[UQ_QS_L2_READS] = "l2_reads",
	[UQ_QS_REFCOUNT_READS] = "refcount_reads",
	[UQ_QS_WAITS] = "waits",
	[UQ_QS_WRITEBACKS] = "writebacks",
	[UQ_QS_FLUSH_JOINS] = "flush_joins",
	[UQ_QS_OWN_SYNCS] = "own_syncs",
	[UQ_QS_FLUSH_NS] = "flush_ns",
	[UQ_QS_FLUSH_MAX_NS] = "flush_max_ns",
	[UQ_QS_CQES] = "completions",
	[UQ_QS_ROUNDS] = "rounds",
};

static const char *const engine_names[ENGINE_STATS] = {
	"l2_hits", "l2_misses", "clusters_allocated", "cow_copies", "refcount_growths",
};

/* One queue's figures, or their sum. */
struct qfig {
	uint64_t waiting;
	uint64_t c[UQ_QS_COUNT];
};

struct stats {
	unsigned nq;
	struct qfig *q;
	struct qfig total;
	uint64_t engine[ENGINE_STATS];
};

static uint64_t in_flight(const struct qfig *f)
{
	uint64_t in = f->c[UQ_QS_READS] + f->c[UQ_QS_WRITES] + f->c[UQ_QS_FLUSHES] +
		      f->c[UQ_QS_DISCARDS] + f->c[UQ_QS_WRITE_ZEROES];

	return in > f->c[UQ_QS_DONE] ? in - f->c[UQ_QS_DONE] : 0;
}

/* ------------------------------------------------------------ asking */

static int next_u64(char **p, uint64_t *v)
{
	char *end;

	errno = 0;
	*v = strtoull(*p, &end, 10);
	if (end == *p || errno || (*end != ' ' && *end != '\n' && *end))
		return -EINVAL;
	*p = end;
	return 0;
}

/* The reply after "ok ", into st (st->q allocated). */
static int parse(char *p, struct stats *st)
{
	uint64_t nq, nc, v;
	unsigned i, k;

	if (next_u64(&p, &nq) || next_u64(&p, &nc) || nq == 0 || nq > 4096 || nc != UQ_QS_COUNT)
		return -EPROTO;
	st->nq = (unsigned)nq;
	st->q = calloc(st->nq, sizeof(*st->q));
	if (!st->q)
		return -ENOMEM;
	memset(&st->total, 0, sizeof(st->total));
	for (i = 0; i < st->nq; i++) {
		if (next_u64(&p, &st->q[i].waiting))
			return -EPROTO;
		st->total.waiting += st->q[i].waiting;
		for (k = 0; k < UQ_QS_COUNT; k++) {
			if (next_u64(&p, &v))
				return -EPROTO;
			st->q[i].c[k] = v;
			if (k == UQ_QS_FLUSH_MAX_NS)
				st->total.c[k] = v > st->total.c[k] ? v : st->total.c[k];
			else
				st->total.c[k] += v;
		}
	}
	for (k = 0; k < ENGINE_STATS; k++)
		if (next_u64(&p, &st->engine[k]))
			return -EPROTO;
	return 0;
}

/* ------------------------------------------------------------ printing */

static void json_fig(const struct qfig *f)
{
	unsigned k;

	printf("\"in_flight\":%llu,\"waiting\":%llu", (unsigned long long)in_flight(f),
	       (unsigned long long)f->waiting);
	for (k = 0; k < UQ_QS_COUNT; k++)
		printf(",\"%s\":%llu", qstat_names[k], (unsigned long long)f->c[k]);
}

static void print_json(const struct uq_state *s, const struct stats *st)
{
	unsigned i, k;

	printf("{\"id\":%u,\"device\":\"%s\",\"queues\":[", s->id, s->device);
	for (i = 0; i < st->nq; i++) {
		printf("%s{\"queue\":%u,", i ? "," : "", i);
		json_fig(&st->q[i]);
		printf("}");
	}
	printf("],\"total\":{");
	json_fig(&st->total);
	printf("},\"engine\":{");
	for (k = 0; k < ENGINE_STATS; k++)
		printf("%s\"%s\":%llu", k ? "," : "", engine_names[k],
		       (unsigned long long)st->engine[k]);
	printf("}}\n");
}

static void human_row(const char *name, const struct qfig *f)
{
	const uint64_t *c = f->c;

	printf("%-6s %10llu %10llu %8llu %8llu %8llu %12llu %12llu %6llu %6llu %6llu\n", name,
	       (unsigned long long)c[UQ_QS_READS], (unsigned long long)c[UQ_QS_WRITES],
	       (unsigned long long)c[UQ_QS_FLUSHES], (unsigned long long)c[UQ_QS_DISCARDS],
	       (unsigned long long)c[UQ_QS_WRITE_ZEROES], (unsigned long long)c[UQ_QS_READ_BYTES],
	       (unsigned long long)c[UQ_QS_WRITE_BYTES], (unsigned long long)in_flight(f),
	       (unsigned long long)f->waiting, (unsigned long long)c[UQ_QS_ERRORS]);
}

static void print_human(const struct uq_state *s, const struct stats *st)
{
	const uint64_t *t = st->total.c;
	char name[16];
	unsigned i;

	printf("%s (device %u): %s, %u queue%s\n", s->device, s->id, s->opt.image_abs, st->nq,
	       st->nq == 1 ? "" : "s");
	printf("%-6s %10s %10s %8s %8s %8s %12s %12s %6s %6s %6s\n", "queue", "reads", "writes",
	       "flushes", "discards", "zeroes", "read bytes", "written", "flight", "wait",
	       "errors");
	for (i = 0; i < st->nq; i++) {
		snprintf(name, sizeof(name), "%u", i);
		human_row(name, &st->q[i]);
	}
	if (st->nq > 1)
		human_row("total", &st->total);
	printf("flushes: %llu, mean %.3f ms, longest %.3f ms; %llu covered by another's flush, "
	       "%llu by an fsync of their own beside one\n", (unsigned long long)t[UQ_QS_FLUSHES],
	       t[UQ_QS_FLUSHES] ? (double)t[UQ_QS_FLUSH_NS] / 1e6 / (double)t[UQ_QS_FLUSHES] : 0.0,
	       (double)t[UQ_QS_FLUSH_MAX_NS] / 1e6, (unsigned long long)t[UQ_QS_FLUSH_JOINS],
	       (unsigned long long)t[UQ_QS_OWN_SYNCS]);
	printf("L2 cache: %llu hits, %llu misses (%llu tables read through the ring, %llu "
	       "flushes to make room); %llu waits for another request\n",
	       (unsigned long long)st->engine[0], (unsigned long long)st->engine[1],
	       (unsigned long long)t[UQ_QS_L2_READS], (unsigned long long)t[UQ_QS_WRITEBACKS],
	       (unsigned long long)t[UQ_QS_WAITS]);
	printf("clusters allocated: %llu (%llu refcount blocks read through the ring, %llu "
	       "refcount blocks and tables added); copy-on-write copies: %llu\n",
	       (unsigned long long)st->engine[2], (unsigned long long)t[UQ_QS_REFCOUNT_READS],
	       (unsigned long long)st->engine[4], (unsigned long long)st->engine[3]);
}

/* ------------------------------------------------------------ command */

static int stats_of(unsigned id, bool json)
{
	static char reply[UQ_CTL_ANSWER_MAX];
	struct stats st = { 0 };
	struct uq_state s;
	int ret;

	if (uq_state_load(id, &s) < 0)
		return UQ_EXIT_FAIL;
	if (!uq_daemon_alive(s.pid)) {
		uq_err("device %u: its daemon (pid %d) is not running", id, s.pid);
		return UQ_EXIT_FAIL;
	}
	ret = uq_control_request(id, UQ_CTL_STATS, reply, sizeof(reply), STATS_TIMEOUT_MS);
	if (ret < 0) {
		uq_err("device %u: control socket: %s", id, strerror(-ret));
		return UQ_EXIT_FAIL;
	}
	if (strncmp(reply, UQ_CTL_OK " ", strlen(UQ_CTL_OK " "))) {
		uq_err("device %u: %s", id, !strncmp(reply, UQ_CTL_ERROR, strlen(UQ_CTL_ERROR)) ?
		       reply + strlen(UQ_CTL_ERROR) : reply);
		return UQ_EXIT_FAIL;
	}
	ret = parse(reply + strlen(UQ_CTL_OK " "), &st);
	if (ret < 0)
		uq_err("device %u: the daemon's answer is not what this ublk-qcow reads (%s)",
		       id, ret == -ENOMEM ? "out of memory" : "another version?");
	else if (json)
		print_json(&s, &st);
	else
		print_human(&s, &st);
	free(st.q);
	return ret < 0 ? UQ_EXIT_FAIL : UQ_EXIT_OK;
}

int uq_cmd_stats(int argc, char **argv)
{
	bool json;
	unsigned id;
	int ret;

	ret = uq_output_opts(argc, argv, "stats", &json);
	if (ret >= 0)
		return ret;
	ret = uq_target_arg(argc, argv, "stats", &id);
	if (ret >= 0)
		return ret;
	return stats_of(id, json);
}
