// SPDX-License-Identifier: MIT
/*
 * Fuzz target "state": the shared layer's parsers of text that the daemon
 * and qcow-tool read back or are given (src/shared/). The first byte of
 * the input picks the parser, the rest is the text:
 *
 *   j  uq_state_parse (src/shared/state.c): a state file. Every string
 *      field must come out terminated, and what parsed must survive the
 *      writer (uq_state_print) and a second parse unchanged, field for
 *      field: both printed the same.
 *   z  uq_parse_size (src/shared/number.c: --l2-cache; qemu's grammar),
 *      with and without sectors, against ref-size.h
 *   u  uq_parse_uint (-q, -d, --timeout, device ids, state file counts),
 *      with the ranges the daemon uses, and uq_parse_u64, against a
 *      reference
 *   anything else: all three on the whole input
 *
 * The text is copied into a buffer of exactly its length plus the NUL, so
 * that ASan sees any read past the terminator.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fuzz.h"
#include "ref-size.h"
#include "src/shared/number.h"
#include "src/shared/state.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_keep_stderr();
	return 0;
}

/* ------------------------------------------------------------ state */

static bool terminated(const char *s, size_t len)
{
	return memchr(s, '\0', len) != NULL;
}

/* The field types that are strings (char arrays): the rest are numbers. */
static bool is_string_type(const char *type)
{
	return !strcmp(type, "PATH") || !strcmp(type, "NAME") || !strcmp(type, "DEVICE") ||
	       !strcmp(type, "ERROR");
}

#define TERMINATED(type, member)					\
	ok = ok && (!is_string_type(#type) ||				\
		    terminated((const char *)&s->member, sizeof(s->member)));
#define STATE_TERMINATED(type, f, key)	TERMINATED(type, f)
#define OPT_TERMINATED(type, f, key)	TERMINATED(type, opt.f)

/* Every string field of s, from the same lists the parser's table is made of. */
static bool all_terminated(const struct uq_state *s)
{
	bool ok = true;

	UQ_STATE_FIELDS(STATE_TERMINATED)
	UQ_KEPT_OPTS(OPT_TERMINATED)
	return ok;
}

/* The writer's text of s (malloc'ed). */
static char *print_state(const struct uq_state *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		abort();
	FUZZ_ASSERT(uq_state_print(f, s) == 0, "uq_state_print failed");
	if (fclose(f) != 0)
		abort();
	FUZZ_ASSERT(strlen(text) == len && !strchr(text, '\n'), "not one line: %s", text);
	return text;
}

static void fuzz_state(const char *text)
{
	struct uq_state *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	char *once, *twice;
	int ret;

	if (!a || !b)
		abort();
	memset(a, 0x5a, sizeof(*a));
	ret = uq_state_parse(text, a);
	FUZZ_ASSERT(ret == 0 || ret == -EINVAL, "uq_state_parse returned %d", ret);
	if (ret == 0) {
		FUZZ_ASSERT(all_terminated(a), "a field is not terminated");
		once = print_state(a);
		ret = uq_state_parse(once, b);
		FUZZ_ASSERT(ret == 0, "the writer's own text does not parse: %s", once);
		twice = print_state(b);
		FUZZ_ASSERT(!strcmp(once, twice), "parse, write, parse changed the state: %s, "
			    "then %s", once, twice);
		free(once);
		free(twice);
	}
	free(a);
	free(b);
}

/* ----------------------------------------------------------- numbers */

static void fuzz_size(const char *s, bool sectors)
{
	uint64_t got = 0x5a5a5a5a5a5a5a5aULL, lo, hi;
	int ret = uq_parse_size(s, sectors, &got), want = ref_size(s, sectors, &lo, &hi);

	FUZZ_ASSERT(ret == want, "uq_parse_size(\"%s\", %d) returned %d, expected %d", s,
		    sectors, ret, want);
	FUZZ_ASSERT(ret < 0 || (got >= lo && got <= hi),
		    "uq_parse_size(\"%s\", %d) = %llu, expected %llu..%llu", s, sectors,
		    (unsigned long long)got, (unsigned long long)lo, (unsigned long long)hi);
}

/* At least one decimal digit at *p, read into *v and skipped: 0, or
 * -EINVAL for none or a value past UINT64_MAX. */
static int ref_digits(const char **p, unsigned __int128 *v)
{
	*v = 0;
	if (!isdigit((unsigned char)**p))
		return -EINVAL;
	for (; isdigit((unsigned char)**p); (*p)++) {
		*v = *v * 10 + (unsigned)(**p - '0');
		if (*v > UINT64_MAX)
			return -EINVAL;
	}
	return 0;
}

/* A count in [min, max], as uq_parse_uint and uq_parse_u64 must read it. */
static int ref_count(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	unsigned __int128 v;
	const char *p = s;

	if (ref_digits(&p, &v) < 0)
		return -EINVAL;
	if (*p || v < min || v > max)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

static void fuzz_uint(const char *s)
{
	/* the ranges the daemon passes: -q, -d, --timeout, device ids, anything */
	static const unsigned ranges[][2] = {
		{ 1, 64 }, { 1, 4096 }, { 1, 86400 }, { 0, (1U << 20) - 1 }, { 0, UINT32_MAX },
	};
	uint64_t got64 = 0, want = 0;
	unsigned i;
	int ret, ref;

	for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		unsigned got = 0;

		ret = uq_parse_uint(s, ranges[i][0], ranges[i][1], &got);
		ref = ref_count(s, ranges[i][0], ranges[i][1], &want);
		FUZZ_ASSERT(ret == ref && (ret < 0 || got == want),
			    "uq_parse_uint(\"%s\", %u, %u) = %d (%u), expected %d (%llu)", s,
			    ranges[i][0], ranges[i][1], ret, got, ref, (unsigned long long)want);
	}
	ret = uq_parse_u64(s, &got64);
	ref = ref_count(s, 0, UINT64_MAX, &want);
	FUZZ_ASSERT(ret == ref && (ret < 0 || got64 == want),
		    "uq_parse_u64(\"%s\") = %d (%llu), expected %d (%llu)", s, ret,
		    (unsigned long long)got64, ref, (unsigned long long)want);
	FUZZ_ASSERT(uq_parse_uint(NULL, 0, 1, &i) == -EINVAL, "NULL");
}

static void fuzz_sizes(const char *s)
{
	fuzz_size(s, false);
	fuzz_size(s, true);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *s;

	if (!size)
		return 0;
	/* exactly the text and its NUL: a read past it is an ASan report */
	s = malloc(size);
	if (!s)
		abort();
	memcpy(s, data + 1, size - 1);
	s[size - 1] = '\0';
	switch (data[0]) {
	case 'j': fuzz_state(s); break;
	case 'z': fuzz_sizes(s); break;
	case 'u': fuzz_uint(s); break;
	default:
		free(s);
		s = malloc(size + 1);
		if (!s)
			abort();
		memcpy(s, data, size);
		s[size] = '\0';
		fuzz_state(s);
		fuzz_sizes(s);
		fuzz_uint(s);
		break;
	}
	free(s);
	return 0;
}
