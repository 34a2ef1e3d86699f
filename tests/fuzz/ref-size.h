/* SPDX-License-Identifier: MIT */
/*
 * The size grammar (src/shared/number.h: qemu's, for qcow-tool and
 * ublk-qcow alike) written a second time, independently, for the fuzz
 * targets that check a parser of it against this: fuzz-tool (qcow-tool's
 * parse_size) and fuzz-state (uq_parse_size).  Static: each target
 * includes it once.
 */
#ifndef FUZZ_REF_SIZE_H
#define FUZZ_REF_SIZE_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

static int digit(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : -1;
}

static int xdigit(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static unsigned shift_of(char c, bool sectors)
{
	static const char units[] = "bkmgtpe";
	const char *u;

	if (sectors && (c == 's' || c == 'S'))
		return 9;
	u = c ? strchr(units, c | 0x20) : NULL;
	return u ? 10 * (unsigned)(u - units) : ~0U;
}

/*
 * The reference: what parse_size must return, written independently. For
 * a fraction it gives a range [*lo, *hi]: exact to 18 digits, the
 * digits after those moving the result by at most one.
 */
static int ref_size(const char *s, bool sectors, uint64_t *lo, uint64_t *hi)
{
	unsigned __int128 v = 0, fnum = 0, fden = 1, mul;
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X'), frac = false, rest_zero = true;
	unsigned sh, nd = 0, nf = 0;
	const char *p = s + (hex ? 2 : 0);

	if (digit(s[0]) < 0)
		return -EINVAL;
	for (; hex ? xdigit(*p) >= 0 : digit(*p) >= 0; p++, nd++) {
		v = v * (hex ? 16 : 10) + (unsigned)(hex ? xdigit(*p) : digit(*p));
		if (v > UINT64_MAX)
			return -ERANGE;         /* strtoull overflows first */
	}
	if (hex && !nd)
		return -EINVAL;
	if (*p == '.' && !hex) {
		frac = true;
		for (p++; digit(*p) >= 0; p++, nf++) {
			if (nf < 18) {
				fnum = fnum * 10 + (unsigned)digit(*p);
				fden *= 10;
			} else if (*p != '0') {
				rest_zero = false;
			}
		}
		if (!nf)
			return -EINVAL;
	}
	if (!*p) {
		if (frac)
			return -EINVAL;     /* a fraction needs a unit */
		sh = 0;
	} else {
		sh = shift_of(*p, sectors);
		if (sh == ~0U || p[1] || (frac && sh == 0))
			return -EINVAL;
	}
	mul = (unsigned __int128)1 << sh;
	v *= mul;
	*lo = *hi = 0;
	if (frac) {
		unsigned __int128 f_lo = fnum * mul / fden;
		unsigned __int128 f_hi = rest_zero ? f_lo : (fnum + 1) * mul / fden;

		if (v + f_lo > UINT64_MAX)
			return -ERANGE;
		*lo = (uint64_t)(v + f_lo);
		*hi = v + f_hi > UINT64_MAX ? UINT64_MAX : (uint64_t)(v + f_hi);
		return 0;
	}
	if (v > UINT64_MAX)
		return -ERANGE;
	*lo = *hi = (uint64_t)v;
	return 0;
}

#endif /* FUZZ_REF_SIZE_H */
