// SPDX-License-Identifier: MIT
/*
 * JSON output in qemu's member order; see json.h.
 */
#include <stdlib.h>
#include <string.h>

#include "json.h"

void json_init(struct json_obj *o)
{
	o->n = 0;
}

/* Members beyond the fixed capacity are a programming error, not input. */
static struct json_member *json_add(struct json_obj *o, const char *key,
				    enum json_type type)
{
	struct json_member *m;

	if (o->n >= JSON_MAX_MEMBERS)
		abort();
	m = &o->m[o->n++];
	m->key = key;
	m->type = type;
	return m;
}

void json_add_int(struct json_obj *o, const char *key, int64_t v)
{
	json_add(o, key, JSON_INT)->v.i = v;
}

void json_add_uint(struct json_obj *o, const char *key, uint64_t v)
{
	json_add(o, key, JSON_UINT)->v.u = v;
}

void json_add_bool(struct json_obj *o, const char *key, bool v)
{
	json_add(o, key, JSON_BOOL)->v.b = v;
}

void json_add_str(struct json_obj *o, const char *key, const char *v)
{
	json_add(o, key, JSON_STRING)->v.s = v;
}

void json_add_obj(struct json_obj *o, const char *key, const struct json_obj *child)
{
	json_add(o, key, JSON_OBJECT)->v.o = child;
}

void json_add_list(struct json_obj *o, const char *key, unsigned n, json_elem_fn fn,
		   const void *ctx)
{
	struct json_member *m = json_add(o, key, JSON_LIST);

	m->v.l.fn = fn;
	m->v.l.ctx = ctx;
	m->v.l.n = n;
}

void json_set_str(struct json_member *m, const char *v)
{
	m->type = JSON_STRING;
	m->v.s = v;
}

void json_set_obj(struct json_member *m, const struct json_obj *child)
{
	m->type = JSON_OBJECT;
	m->v.o = child;
}

/* Element i of list l into *m, an object element built in *scratch. */
static void json_elem(const struct json_member *l, unsigned i, struct json_member *m,
		      struct json_obj *scratch)
{
	json_init(scratch);
	m->key = NULL;
	json_set_str(m, "");
	l->v.l.fn(l->v.l.ctx, i, m, scratch);
}

/* The bucket qemu's QDict puts key in (its tdb-derived hash, 512 buckets). */
static unsigned qdict_bucket(const char *key)
{
	uint32_t value = 0x238F13AFu * (uint32_t)strlen(key);
	unsigned i;

	for (i = 0; key[i]; i++)
		value += (uint32_t)(unsigned char)key[i] << (i * 5 % 24);
	return (1103515243u * value + 12345u) % 512;
}

/*
 * QDict walks buckets upwards and, inside a bucket, newest insertion first.
 * Fill order[] with member indexes in that order (insertion sort: n is tiny).
 */
static void qdict_order(const struct json_obj *o, unsigned *order)
{
	unsigned bucket[JSON_MAX_MEMBERS];
	unsigned i, j;

	for (i = 0; i < o->n; i++) {
		bucket[i] = qdict_bucket(o->m[i].key);
		/* ">=": within a bucket the newer member (i) goes first */
		for (j = i; j > 0 && bucket[order[j - 1]] >= bucket[i]; j--)
			order[j] = order[j - 1];
		order[j] = i;
	}
}

/*
 * The code point of the (modified) UTF-8 sequence at s, as qemu decodes it
 * (util/unicode.c): -1 for an invalid sequence, overlong forms, surrogates
 * and noncharacters; *end past what was consumed. s[0] is not NUL.
 */
static int32_t utf8_next(const unsigned char *s, const unsigned char **end)
{
	static const int32_t min_cp[5] = { 0x80, 0x800, 0x10000, 0x200000, 0x4000000 };
	unsigned byte = *s++, len = 0, mask, i;
	int32_t cp;

	*end = s;
	if (byte < 0x80)
		return (int32_t)byte;
	if (byte >= 0xfe || !(byte & 0x40))
		return -1;                      /* 0xfe, 0xff, a stray continuation */
	for (mask = 0x80; byte & mask; mask >>= 1)
		len++;
	cp = (int32_t)(byte & (mask - 1));
	for (i = 1; i < len; i++, s++) {
		if ((*s & 0xc0) != 0x80) {
			*end = s;
			return -1;              /* a continuation byte missing */
		}
		cp = (cp << 6) | (*s & 0x3f);
	}
	*end = s;
	if (cp > 0x10ffff || (cp >= 0xfdd0 && cp <= 0xfdef) || (cp & 0xfffe) == 0xfffe ||
	    (cp >= 0xd800 && cp <= 0xdfff) || (cp < min_cp[len - 2] && !(cp == 0 && len == 2)))
		return -1;
	return cp;
}

static void json_print_codepoint(FILE *f, int32_t cp)
{
	if (cp < 0)
		cp = 0xfffd;                    /* the replacement character */
	if (cp > 0xffff)
		fprintf(f, "\\u%04X\\u%04X", (unsigned)(0xd800 + ((cp - 0x10000) >> 10)),
			(unsigned)(0xdc00 + ((cp - 0x10000) & 0x3ff)));
	else if (cp < 0x20 || cp >= 0x7f)
		fprintf(f, "\\u%04X", (unsigned)cp);
	else
		fputc(cp, f);
}

void json_print_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s, *next;
	int32_t cp;

	fputc('"', f);
	for (; *p; p = next) {
		cp = utf8_next(p, &next);
		switch (cp) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\b': fputs("\\b", f); break;
		case '\f': fputs("\\f", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default: json_print_codepoint(f, cp);
		}
	}
	fputc('"', f);
}

static void json_print_obj(FILE *f, const struct json_obj *o, unsigned depth);
static void json_print_list(FILE *f, const struct json_member *l, unsigned depth);

/* m's value, a member of an object at depth (so the value is at depth + 1). */
static void json_print_value(FILE *f, const struct json_member *m, unsigned depth)
{
	switch (m->type) {
	case JSON_INT: fprintf(f, "%lld", (long long)m->v.i); break;
	case JSON_UINT: fprintf(f, "%llu", (unsigned long long)m->v.u); break;
	case JSON_BOOL: fputs(m->v.b ? "true" : "false", f); break;
	case JSON_STRING: json_print_string(f, m->v.s); break;
	case JSON_OBJECT: json_print_obj(f, m->v.o, depth + 1); break;
	case JSON_LIST: json_print_list(f, m, depth + 1); break;
	}
}

static void json_indent(FILE *f, unsigned depth)
{
	fprintf(f, "%*s", (int)(depth * 4), "");
}

/* As qemu: each element on its own line; an empty list is "[", "]" too. */
static void json_print_list(FILE *f, const struct json_member *l, unsigned depth)
{
	struct json_obj scratch;
	struct json_member m;
	unsigned i;

	fputc('[', f);
	for (i = 0; i < l->v.l.n; i++) {
		json_elem(l, i, &m, &scratch);
		fputs(i ? ",\n" : "\n", f);
		json_indent(f, depth + 1);
		json_print_value(f, &m, depth);
	}
	fputc('\n', f);
	json_indent(f, depth);
	fputc(']', f);
}

static void json_print_obj(FILE *f, const struct json_obj *o, unsigned depth)
{
	unsigned order[JSON_MAX_MEMBERS];
	unsigned i;

	qdict_order(o, order);
	fputc('{', f);
	for (i = 0; i < o->n; i++) {
		const struct json_member *m = &o->m[order[i]];

		fputs(i ? ",\n" : "\n", f);
		json_indent(f, depth + 1);
		json_print_string(f, m->key);
		fputs(": ", f);
		json_print_value(f, m, depth);
	}
	fputc('\n', f);
	json_indent(f, depth);
	fputc('}', f);
}

void json_print(FILE *f, const struct json_obj *o)
{
	json_print_obj(f, o, 0);
	fputc('\n', f);
}

void json_print_element(FILE *f, const struct json_obj *o, bool first)
{
	fputs(first ? "[\n" : ",\n", f);
	json_indent(f, 1);
	json_print_obj(f, o, 1);
}

void json_print_array_end(FILE *f)
{
	fputs("\n]\n", f);
}

/* ------------------------------------------------------- human text */

static void human_value(FILE *f, const struct json_member *m, unsigned indent);

static bool human_composite(const struct json_member *m)
{
	return m->type == JSON_OBJECT || m->type == JSON_LIST;
}

/* A composite value goes on the lines below its label, a scalar after it. */
static void human_labelled(FILE *f, const struct json_member *m, unsigned indent)
{
	fputc(human_composite(m) ? '\n' : ' ', f);
	human_value(f, m, indent + 1);
	if (!human_composite(m))
		fputc('\n', f);
}

static void human_obj(FILE *f, const struct json_obj *o, unsigned indent)
{
	unsigned order[JSON_MAX_MEMBERS];
	const char *k;
	unsigned i;

	qdict_order(o, order);
	for (i = 0; i < o->n; i++) {
		json_indent(f, indent);
		for (k = o->m[order[i]].key; *k; k++)
			fputc(*k == '-' ? ' ' : *k, f);
		fputc(':', f);
		human_labelled(f, &o->m[order[i]], indent);
	}
}

static void human_list(FILE *f, const struct json_member *l, unsigned indent)
{
	struct json_obj scratch;
	struct json_member m;
	unsigned i;

	for (i = 0; i < l->v.l.n; i++) {
		json_elem(l, i, &m, &scratch);
		json_indent(f, indent);
		fprintf(f, "[%u]:", i);
		human_labelled(f, &m, indent);
	}
}

static void human_value(FILE *f, const struct json_member *m, unsigned indent)
{
	switch (m->type) {
	case JSON_INT: fprintf(f, "%lld", (long long)m->v.i); break;
	case JSON_UINT: fprintf(f, "%llu", (unsigned long long)m->v.u); break;
	case JSON_BOOL: fputs(m->v.b ? "true" : "false", f); break;
	case JSON_STRING: fputs(m->v.s, f); break;
	case JSON_OBJECT: human_obj(f, m->v.o, indent); break;
	case JSON_LIST: human_list(f, m, indent); break;
	}
}

void json_print_human(FILE *f, const struct json_obj *o, unsigned indent)
{
	human_obj(f, o, indent);
}
