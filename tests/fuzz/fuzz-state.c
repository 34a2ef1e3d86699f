// SPDX-License-Identifier: MIT
/*
 * Fuzz target "state": the daemon's parsers of text it reads back. The
 * first byte of the input picks the parser, the rest is the text:
 *
 *   j  uq_parse_state (src/state.c): a state file. Every field must come
 *      out terminated, and what parsed must survive a write (the daemon's
 *      JSON spelling, redone here) and a second parse unchanged.
 *   z  uq_parse_size (src/main.c: --l2-cache), against a reference
 *   u  uq_parse_uint (src/main.c: -q, -d, --timeout, device ids), against
 *      a reference, with the ranges the daemon uses
 *   anything else: all three on the whole input
 *
 * The text is copied into a buffer of exactly its length plus the NUL, so
 * that ASan sees any read past the terminator.
 */
#include <ctype.h>
#include <errno.h>
#include <stdbool.h>
#include <string.h>

#include "fuzz.h"
#include "src/ublk-qcow.h"

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

/* The daemon's json_state(), into a buffer. */
static size_t put_str(char *out, size_t pos, const char *s)
{
	out[pos++] = '"';
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			out[pos++] = '\\';
			out[pos++] = (char)c;
		} else if (c < 0x20) {
			pos += (size_t)sprintf(out + pos, "\\u%04x", c);
		} else {
			out[pos++] = (char)c;
		}
	}
	out[pos++] = '"';
	return pos;
}

static char *write_state(const struct uq_state *s)
{
	/* every byte of a string can take 6 to escape */
	size_t cap = 6 * sizeof(*s) + 512, pos = 0;
	char *out = malloc(cap);

	if (!out)
		abort();
	pos += (size_t)sprintf(out + pos, "{\"id\":%u,\"pid\":%d,\"device\":", s->id, s->pid);
	pos = put_str(out, pos, s->device);
	pos += (size_t)sprintf(out + pos, ",\"image\":");
	pos = put_str(out, pos, s->image);
	pos += (size_t)sprintf(out + pos, ",\"queues\":%u,\"depth\":%u,\"mode\":", s->queues,
			       s->depth);
	pos = put_str(out, pos, s->mode);
	pos += (size_t)sprintf(out + pos, ",\"read_only\":%s,\"state\":",
			       s->read_only ? "true" : "false");
	pos = put_str(out, pos, s->state);
	if (s->error[0]) {
		pos += (size_t)sprintf(out + pos, ",\"error\":");
		pos = put_str(out, pos, s->error);
	}
	out[pos++] = '}';
	out[pos] = '\0';
	return out;
}

static void fuzz_state(const char *text)
{
	struct uq_state *a = malloc(sizeof(*a)), *b = malloc(sizeof(*b));
	char *again;
	int ret;

	if (!a || !b)
		abort();
	memset(a, 0x5a, sizeof(*a));
	ret = uq_parse_state(text, a);
	FUZZ_ASSERT(ret == 0 || ret == -EINVAL, "uq_parse_state returned %d", ret);
	if (ret == 0) {
		FUZZ_ASSERT(terminated(a->device, sizeof(a->device)) &&
			    terminated(a->image, sizeof(a->image)) &&
			    terminated(a->mode, sizeof(a->mode)) &&
			    terminated(a->state, sizeof(a->state)) &&
			    terminated(a->error, sizeof(a->error)), "a field is not terminated");
		again = write_state(a);
		ret = uq_parse_state(again, b);
		FUZZ_ASSERT(ret == 0, "the daemon's own spelling does not parse: %s", again);
		FUZZ_ASSERT(a->id == b->id && a->pid == b->pid && a->queues == b->queues &&
			    a->depth == b->depth && a->read_only == b->read_only &&
			    !strcmp(a->device, b->device) && !strcmp(a->image, b->image) &&
			    !strcmp(a->mode, b->mode) && !strcmp(a->state, b->state) &&
			    !strcmp(a->error, b->error),
			    "parse, write, parse changed the state: %s", again);
		free(again);
	}
	free(a);
	free(b);
}

/* ----------------------------------------------------------- numbers */

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

/* What uq_parse_size must do, written independently. */
static int ref_size(const char *s, uint64_t *out)
{
	unsigned __int128 v;
	unsigned shift = 0;
	const char *p = s;

	if (ref_digits(&p, &v) < 0)
		return -EINVAL;
	if (*p) {
		switch (*p) {
		case 'k': case 'K': shift = 10; break;
		case 'm': case 'M': shift = 20; break;
		case 'g': case 'G': shift = 30; break;
		default: return -EINVAL;
		}
		p++;
		if (*p && strcasecmp(p, "iB") && strcasecmp(p, "B"))
			return -EINVAL;
	}
	v <<= shift;
	if (v > UINT64_MAX)
		return -EINVAL;
	*out = (uint64_t)v;
	return 0;
}

static void fuzz_size(const char *s)
{
	uint64_t got = 0, want = 0;
	int ret = uq_parse_size(s, &got), ref = ref_size(s, &want);

	FUZZ_ASSERT(ret == ref, "uq_parse_size(\"%s\") returned %d, expected %d", s, ret, ref);
	FUZZ_ASSERT(ret < 0 || got == want, "uq_parse_size(\"%s\") = %llu, expected %llu", s,
		    (unsigned long long)got, (unsigned long long)want);
}

static int ref_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	unsigned __int128 v;
	const char *p = s;

	if (ref_digits(&p, &v) < 0)
		return -EINVAL;
	if (*p || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static void fuzz_uint(const char *s)
{
	/* the ranges the daemon passes: -q, -d, --timeout, device ids, anything */
	static const unsigned ranges[][2] = {
		{ 1, 64 }, { 1, 4096 }, { 1, 86400 }, { 0, (1U << 20) - 1 }, { 0, UINT32_MAX },
	};
	unsigned i;

	for (i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		unsigned got = 0, want = 0;
		int ret = uq_parse_uint(s, ranges[i][0], ranges[i][1], &got);
		int ref = ref_uint(s, ranges[i][0], ranges[i][1], &want);

		FUZZ_ASSERT(ret == ref && (ret < 0 || got == want),
			    "uq_parse_uint(\"%s\", %u, %u) = %d (%u), expected %d (%u)", s,
			    ranges[i][0], ranges[i][1], ret, got, ref, want);
	}
	FUZZ_ASSERT(uq_parse_uint(NULL, 0, 1, &i) == -EINVAL, "NULL");
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
	case 'z': fuzz_size(s); break;
	case 'u': fuzz_uint(s); break;
	default:
		free(s);
		s = malloc(size + 1);
		if (!s)
			abort();
		memcpy(s, data, size);
		s[size] = '\0';
		fuzz_state(s);
		fuzz_size(s);
		fuzz_uint(s);
		break;
	}
	free(s);
	return 0;
}
