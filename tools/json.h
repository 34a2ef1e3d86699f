/* SPDX-License-Identifier: MIT */
/*
 * A tiny JSON object printer. Members are printed in the order qemu's QDict
 * iterates them (its hash buckets), so that `qemu-img ... --output=json` and
 * `qcow-tool ... --output=json` print identical text for identical data.
 * No allocation: objects live on the caller's stack, strings and child
 * objects are borrowed until printed, and a list's elements are made one at
 * a time as it is printed (so a list of any length costs nothing to hold).
 * The same tree prints as qemu's human text too (json_print_human).
 */
#ifndef QCOW_TOOL_JSON_H
#define QCOW_TOOL_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_MEMBERS 24

enum json_type { JSON_INT, JSON_UINT, JSON_BOOL, JSON_STRING, JSON_OBJECT, JSON_LIST };

struct json_obj;
struct json_member;

/*
 * Element i of a list, made when it is printed: fill *m (its key unused)
 * with json_set_* below; an object element is built in *scratch (empty,
 * the printer's, valid until the element is printed).
 */
typedef void (*json_elem_fn)(const void *ctx, unsigned i, struct json_member *m,
			     struct json_obj *scratch);

struct json_member {
	const char *key;
	enum json_type type;
	union {
		int64_t i;
		uint64_t u;
		bool b;
		const char *s;
		const struct json_obj *o;
		struct {
			json_elem_fn fn;
			const void *ctx;
			unsigned n;
		} l;
	} v;
};

struct json_obj {
	struct json_member m[JSON_MAX_MEMBERS];
	unsigned n;
};

void json_init(struct json_obj *o);
void json_add_int(struct json_obj *o, const char *key, int64_t v);
void json_add_uint(struct json_obj *o, const char *key, uint64_t v);
void json_add_bool(struct json_obj *o, const char *key, bool v);
void json_add_str(struct json_obj *o, const char *key, const char *v);
void json_add_obj(struct json_obj *o, const char *key, const struct json_obj *child);
/* A list of n elements, element i made by fn(ctx, i, ...) when printed. */
void json_add_list(struct json_obj *o, const char *key, unsigned n, json_elem_fn fn,
		   const void *ctx);
/* A list element's value (for json_elem_fn). */
void json_set_str(struct json_member *m, const char *v);
void json_set_obj(struct json_member *m, const struct json_obj *child);

/* Pretty print as qemu does (4-space indent), followed by a newline. */
void json_print(FILE *f, const struct json_obj *o);
/* The same as an element of an array printed one element at a time: the
 * first opens it, json_print_array_end closes it. */
void json_print_element(FILE *f, const struct json_obj *o, bool first);
void json_print_array_end(FILE *f);
/* A JSON string literal with escapes, as qemu writes it: quotes,
 * backslashes, control and non-ASCII characters escaped (\uXXXX, invalid
 * UTF-8 as U+FFFD). */
void json_print_string(FILE *f, const char *s);
/*
 * The members of o as qemu-img prints format specific information: one
 * "key: value" line each (dashes in keys as spaces), objects and lists
 * below their key indented by four more spaces per level, list elements
 * as "[i]:"; the first level indented by indent * 4 spaces.
 */
void json_print_human(FILE *f, const struct json_obj *o, unsigned indent);

#endif /* QCOW_TOOL_JSON_H */
