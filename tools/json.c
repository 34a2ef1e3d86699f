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

void json_print_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		switch (c) {
		case '"': fputs("\\\"", f); break;
		case '\\': fputs("\\\\", f); break;
		case '\b': fputs("\\b", f); break;
		case '\f': fputs("\\f", f); break;
		case '\n': fputs("\\n", f); break;
		case '\r': fputs("\\r", f); break;
		case '\t': fputs("\\t", f); break;
		default:
			if (c < 0x20 || c == 0x7f)
				fprintf(f, "\\u%04X", c);
			else
				fputc(c, f);
		}
	}
	fputc('"', f);
}

static void json_print_obj(FILE *f, const struct json_obj *o, unsigned depth);

static void json_print_value(FILE *f, const struct json_member *m, unsigned depth)
{
	switch (m->type) {
	case JSON_INT: fprintf(f, "%lld", (long long)m->v.i); break;
	case JSON_UINT: fprintf(f, "%llu", (unsigned long long)m->v.u); break;
	case JSON_BOOL: fputs(m->v.b ? "true" : "false", f); break;
	case JSON_STRING: json_print_string(f, m->v.s); break;
	case JSON_OBJECT: json_print_obj(f, m->v.o, depth + 1); break;
	}
}

static void json_indent(FILE *f, unsigned depth)
{
	fprintf(f, "%*s", (int)(depth * 4), "");
}

static void json_print_obj(FILE *f, const struct json_obj *o, unsigned depth)
{
	unsigned order[JSON_MAX_MEMBERS];
	unsigned i;

	if (!o->n) {
		fputs("{}", f);
		return;
	}
	qdict_order(o, order);
	fputs("{\n", f);
	for (i = 0; i < o->n; i++) {
		const struct json_member *m = &o->m[order[i]];

		json_indent(f, depth + 1);
		json_print_string(f, m->key);
		fputs(": ", f);
		json_print_value(f, m, depth);
		fputs(i + 1 < o->n ? ",\n" : "\n", f);
	}
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
