/* SPDX-License-Identifier: MIT */
/*
 * A tiny JSON object printer. Members are printed in the order qemu's QDict
 * iterates them (its hash buckets), so that `qemu-img ... --output=json` and
 * `qcow-tool ... --output=json` print identical text for identical data.
 * No allocation: objects live on the caller's stack, strings and child
 * objects are borrowed until printed.
 */
#ifndef QCOW_TOOL_JSON_H
#define QCOW_TOOL_JSON_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define JSON_MAX_MEMBERS 24

enum json_type { JSON_INT, JSON_UINT, JSON_BOOL, JSON_STRING, JSON_OBJECT };

struct json_obj;

struct json_member {
	const char *key;
	enum json_type type;
	union {
		int64_t i;
		uint64_t u;
		bool b;
		const char *s;
		const struct json_obj *o;
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

/* Pretty print as qemu does (4-space indent), followed by a newline. */
void json_print(FILE *f, const struct json_obj *o);
/* The same as an element of an array printed one element at a time: the
 * first opens it, json_print_array_end closes it. */
void json_print_element(FILE *f, const struct json_obj *o, bool first);
void json_print_array_end(FILE *f);
/* A JSON string literal with escapes. */
void json_print_string(FILE *f, const char *s);

#endif /* QCOW_TOOL_JSON_H */
