/* SPDX-License-Identifier: MIT */
/*
 * crashfile: an in-memory qcow_file backend for crash and IO-error tests.
 *
 * It keeps the file's current contents in memory and, once recording is
 * started, logs every write, flush and truncate the engine issues. From
 * that log it can rebuild the files a power loss could have left at any
 * point ("cut") of the workload:
 *
 *   everything up to the last completed flush before the cut, plus any
 *   subset of the later writes, each applied whole, dropped, or torn at
 *   512-byte sector granularity (a torn write keeps some of its sectors).
 *
 * This is the storage model of doc/design.md section 9.1: a completed flush
 * makes every completed write durable; a sector is written entirely or not
 * at all; writes not separated by a flush may land in any combination. A
 * write that covers only part of a sector is one atomic piece of that
 * sector. A later write that lands wins over an earlier one at the same
 * bytes (the device keeps the newest data it was given).
 *
 * It can also fail the Nth read, write, flush or file-growing write with a
 * chosen errno, once or from then on (a full disk stays full), a failing
 * write optionally landing a prefix of its sectors first.
 *
 * Last, a guest model (cf_model_*) says what a guest may read back at any
 * cut, given the engine calls the test made and the file events each one
 * issued.
 *
 * All names start with cf_; the helper is linked into every unit test.
 */
#ifndef QCOW_TEST_CRASHFILE_H
#define QCOW_TEST_CRASHFILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow/engine.h"

#define CF_SECTOR 512U

/*
 * The qemu-img check command line for t_run() (one %s: the path). Its exit
 * status is qemu-img's (0 clean, 3 leaks only); the leak lines are left out
 * of the output, so the errors show in a failure message.
 */
#define CF_QEMU_CHECK_CMD \
	"out=$(qemu-img check -f qcow2 '%s' 2>&1); r=$?; " \
	"printf '%%s\\n' \"$out\" | grep -v '^Leaked cluster'; exit $r"

struct crashfile;

/* An empty file, or one holding a copy of len bytes of data. NULL: no memory. */
struct crashfile *cf_new(const void *data, uint64_t len);
void cf_free(struct crashfile *cf);

/*
 * A qcow_file whose ops work on cf (fd -1). Its close op does nothing: the
 * test still owns cf and frees it with cf_free().
 */
void cf_get_file(struct crashfile *cf, struct qcow_file *out);

/* The current contents (every completed write, durable or not). */
const uint8_t *cf_data(const struct crashfile *cf, uint64_t *size);

/* ------------------------------------------------------------ recording */

/* Forget the log; the current contents become the durable starting point. */
void cf_record_start(struct crashfile *cf);
/* Events (writes, flushes, truncates) logged since cf_record_start(). */
size_t cf_nevents(const struct crashfile *cf);
/* Is event i (0-based) a completed flush? A write? */
bool cf_event_is_flush(const struct crashfile *cf, size_t i);
bool cf_event_is_write(const struct crashfile *cf, size_t i);
/* Does event i write into [off, off + len)? */
bool cf_event_writes_to(const struct crashfile *cf, size_t i, uint64_t off, uint64_t len);

/* ------------------------------------------------------ crash states */

enum cf_fate {
	CF_FATE_ALL,     /* every write after the last flush landed whole */
	CF_FATE_NONE,    /* none of them landed */
	CF_FATE_RANDOM,  /* each one whole, dropped or torn, chosen at random */
	CF_FATE_DROP_ONE,/* all landed but one (the seed picks which) */
	CF_FATE_ONLY_ONE,/* only one landed (the seed picks which) */
};

/* Seeds of the crash states: a mixer, and the fate a seed picks (mostly
 * random mixes, some with all, none, all but one or only one landed). */
uint64_t cf_mix(uint64_t a, uint64_t b);
enum cf_fate cf_fate_of(uint64_t seed);

/*
 * Walks the log forward, keeping the durable contents at the last completed
 * flush before the current cut. A cut k means events [0, k) were issued.
 */
struct cf_replay;

struct cf_replay *cf_replay_new(const struct crashfile *cf);
void cf_replay_free(struct cf_replay *r);
/* Move the cut forward to k (k >= current cut, k <= cf_nevents()). */
void cf_replay_seek(struct cf_replay *r, size_t k);
/* Events between the last completed flush and the cut. */
size_t cf_replay_pending(const struct cf_replay *r);

/* Writes between the last completed flush and the cut. */
size_t cf_replay_pending_writes(const struct cf_replay *r);

/*
 * Build one crash state of the current cut: *out (malloc'd, caller frees)
 * and *size. Random choices come from seed alone, so a state is rebuilt
 * exactly from (cut, fate, seed). desc gets a one-line summary. 0 or -ENOMEM.
 * CF_FATE_DROP_ONE and CF_FATE_ONLY_ONE single out pending write number
 * seed % cf_replay_pending_writes(): they find every pair of writes that
 * must reach the disk in order but have no flush between them.
 */
int cf_replay_build(const struct cf_replay *r, enum cf_fate fate, uint64_t seed,
		    uint8_t **out, uint64_t *size, char *desc, size_t desclen);

/* ------------------------------------------------------ error injection */

enum cf_op {
	CF_OP_READ,
	CF_OP_WRITE,
	CF_OP_FLUSH,
	CF_OP_GROW,      /* a write that makes the file larger */
	CF_OP_COUNT
};

/*
 * Fail the nth (from 1) operation of kind op from now on with -err; with
 * sticky every later one of that kind fails too. Resets the counters. A
 * failed write changes nothing; a failed flush makes nothing durable.
 * nth 0 disarms.
 */
void cf_inject(struct crashfile *cf, enum cf_op op, uint64_t nth, int err, bool sticky);
/*
 * From now on a failed write first writes a prefix of its sectors (possibly
 * none, possibly all), as a write that fails part way does; the length
 * comes from seed and the write's position. Off by default.
 */
void cf_inject_partial(struct crashfile *cf, bool partial, uint64_t seed);
/* How many injected failures were returned since cf_inject(). */
uint64_t cf_injected(const struct crashfile *cf);
/* Operations of kind op seen since cf_inject() (or cf_new()). */
uint64_t cf_count(const struct crashfile *cf, enum cf_op op);

/* ------------------------------------------------------ guest model */

/*
 * What the guest may read back after a crash. The test logs each engine
 * call as a guest op with the range of file events it issued; the model
 * then says, for a cut, which bytes are certain and which may hold any of
 * several values:
 *
 *   - ops up to the last flush-type op (qcow_flush, a resize, a close, an
 *     fsync of the caller's own) that completed before the cut, in the
 *     order the ops started, are durable: their bytes read back exactly;
 *   - ops after it that had started by the cut (ev_begin < cut) may or may
 *     not have landed, byte by byte;
 *   - failed ops never become certain.
 *
 * Guest data is a pattern of (op id, guest offset), so data found at the
 * wrong offset, or from an op that never wrote there, is caught.
 */
enum cf_gop_kind {
	CF_G_WRITE,      /* [off, off+len) gets the pattern of id */
	CF_G_ZERO,       /* [off, off+len) reads as zeros (write_zeroes, discard) */
	CF_G_FLUSH,      /* a durability point when it succeeds */
	CF_G_RESIZE,     /* new virtual size; a durability point too (design 13) */
};

struct cf_gop {
	enum cf_gop_kind kind;
	uint64_t off, len;
	uint64_t size;                /* CF_G_RESIZE */
	uint32_t id;                  /* CF_G_WRITE pattern */
	size_t ev_begin, ev_end;      /* file events [ev_begin, ev_end) */
	bool failed;                  /* the call returned an error */
};

struct cf_model;

struct cf_model *cf_model_new(uint64_t initial_size, uint64_t max_size);
/* The guest bytes before the first op (a backing file's; default zeros). */
void cf_model_set_initial(struct cf_model *m, const uint8_t *buf, uint64_t len);
void cf_model_free(struct cf_model *m);
void cf_model_add(struct cf_model *m, const struct cf_gop *op);
size_t cf_model_nops(const struct cf_model *m);
/* Move to cut k (never backwards). */
void cf_model_seek(struct cf_model *m, size_t k);
/* Is size a virtual size the image may have at the current cut? */
bool cf_model_size_ok(const struct cf_model *m, uint64_t size);
/* Smallest virtual size possible at the current cut. */
uint64_t cf_model_min_size(const struct cf_model *m);
/*
 * Check guest contents buf[0, len) against the current cut. Returns the
 * number of bytes that no allowed value explains; why describes the first.
 */
uint64_t cf_model_compare(const struct cf_model *m, const uint8_t *buf, uint64_t len,
			  char *why, size_t whylen);

/* An op id with this bit writes a pattern deflate shrinks (compressed
 * clusters); without it the pattern does not compress. */
#define CF_ID_SQUEEZABLE (1u << 30)
/* The guest data pattern of op id at guest offset off, len bytes. */
void cf_pattern(uint32_t id, uint64_t off, uint8_t *buf, size_t len);
uint8_t cf_pattern_byte(uint32_t id, uint64_t off);

#endif /* QCOW_TEST_CRASHFILE_H */
