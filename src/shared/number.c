/* SPDX-License-Identifier: MIT */
/*
 * Counts and sizes (number.h has the grammar).  Sizes follow qemu's rules
 * (qemu_strtosz), so that a qemu-img command line, a qcow-tool one and
 * "ublk-qcow open --l2-cache" mean the same thing.
 */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>

#include "number.h"

int uq_parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	const char *p;
	char *end;

	if (!s || !*s)
		return -EINVAL;
	/* strtoull would take blanks, a sign and wrap "-1" around */
	for (p = s; *p; p++)
		if (!isdigit((unsigned char)*p))
			return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	*out = v;
	return 0;
}

int uq_parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	uint64_t v;

	if (uq_parse_u64(s, &v) < 0 || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* Multiplier for a size suffix, 0 when c is not one. */
static uint64_t suffix_multiplier(char c, bool sectors)
{
	switch (c) {
	case 'b': case 'B': return 1;
	case 'k': case 'K': return 1ULL << 10;
	case 'm': case 'M': return 1ULL << 20;
	case 'g': case 'G': return 1ULL << 30;
	case 't': case 'T': return 1ULL << 40;
	case 'p': case 'P': return 1ULL << 50;
	case 'e': case 'E': return 1ULL << 60;
	case 's': case 'S': return sectors ? 512 : 0;
	default: return 0;
	}
}

/* Decimal fraction digits at *p (after the dot) times mul, rounded down. */
static int parse_fraction(const char **p, uint64_t mul, uint64_t *out)
{
	const char *s = *p, *e;
	uint64_t carry = 0;

	if (*s < '0' || *s > '9')
		return -EINVAL;
	for (e = s; *e >= '0' && *e <= '9'; e++)
		;
	*p = e;
	/*
	 * Exact, whatever the number of digits: from the last digit up,
	 * carry = floor(mul * 0.d_k...d_n). carry < mul <= 2^60, so
	 * d * mul + carry < 10 * 2^60 never overflows. (Splitting num * mul
	 * as (mul / den) * num + (mul % den) * num / den did: "30.00400000001T"
	 * came out 369 MB short.)
	 */
	while (e-- > s)
		carry = ((uint64_t)(*e - '0') * mul + carry) / 10;
	*out = carry;
	return 0;
}

/* The unit after a fraction's digits at p, and the fraction times it. */
static int fraction_with_unit(const char *digits, bool sectors, uint64_t *mul, uint64_t *frac)
{
	const char *p = digits;

	while (*p >= '0' && *p <= '9')
		p++;
	/* A fraction needs a unit: "1.5" bytes is meaningless. */
	*mul = *p ? suffix_multiplier(*p, sectors) : 0;
	if (*mul <= 1 || p[1])
		return -EINVAL;
	return parse_fraction(&digits, *mul, frac);
}

int uq_parse_size(const char *s, bool sectors, uint64_t *out)
{
	const char *p = s;
	uint64_t val, mul = 1, frac = 0;
	bool hex;
	char *end;

	if (!s || *p < '0' || *p > '9')
		return -EINVAL;     /* no sign, no blanks */
	hex = p[0] == '0' && (p[1] == 'x' || p[1] == 'X');
	errno = 0;
	val = strtoull(p, &end, hex ? 16 : 10);
	if (errno || end == p + (hex ? 2 : 0))
		return errno == ERANGE ? -ERANGE : -EINVAL;
	p = end;
	if (*p == '.') {
		if (hex || fraction_with_unit(p + 1, sectors, &mul, &frac) < 0)
			return -EINVAL;
	} else if (*p) {
		mul = suffix_multiplier(*p, sectors);
		if (!mul || p[1])
			return -EINVAL;
	}
	if (val > (UINT64_MAX - frac) / mul)
		return -ERANGE;
	*out = val * mul + frac;
	return 0;
}
