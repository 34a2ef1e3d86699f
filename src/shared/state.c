/* SPDX-License-Identifier: MIT */
/*
 * The state file's text (state.h has its format): one table, made from
 * UQ_STATE_FIELDS and UQ_KEPT_OPTS, says for every field its key, where it
 * is in struct uq_state and how it is spelt; the writer and the parser
 * both walk it, so whatever one of them carries, the other does too.
 *
 * The parser reads text that may have been damaged or written by another
 * version: it accepts exactly one flat object, takes each value only in
 * its own spelling (strings quoted, counts bare decimals, booleans true or
 * false, names from the field's list), refuses a value too long for its
 * field rather than cut it (a cut path would name another file), and
 * skips keys it does not know.  tests/fuzz/fuzz-state.c fuzzes it.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <string.h>

#include "names.h"
#include "number.h"
#include "state.h"

const char *const uq_life_names[] = {
	[UQ_LIFE_STARTING] = "starting", [UQ_LIFE_LIVE] = "live",
	[UQ_LIFE_STOPPING] = "stopping", [UQ_LIFE_FAILED] = "failed", NULL,
};

/* F_DEVNAME: a string that must pass names.h's rules (or be empty): a
 * user's state file is the user's to write, and root's udev-name prints its
 * name into a /dev link. */
enum field_kind { F_STR, F_DEVNAME, F_UINT, F_PID, F_U64, F_BOOL, F_ENUM };

struct field {
	const char *key;
	enum field_kind kind;
	size_t off;
	size_t size;
	const char *const *names;	/* F_ENUM: the names of its values, by value */
};

/* How each type of UQ_DECL_ is spelt. */
#define KIND_PATH		F_STR, NULL
#define KIND_NAME		F_STR, NULL
#define KIND_DEVNAME		F_DEVNAME, NULL
#define KIND_IOSCHED		F_STR, NULL
#define KIND_DEVICE		F_STR, NULL
#define KIND_ERROR		F_STR, NULL
#define KIND_UINT		F_UINT, NULL
#define KIND_PID		F_PID, NULL
#define KIND_U64		F_U64, NULL
#define KIND_BOOL		F_BOOL, NULL
#define KIND_ZC			F_ENUM, uq_zc_names
#define KIND_CACHE		F_ENUM, uq_cache_opt_names
#define KIND_BITMAPS		F_ENUM, uq_bitmaps_names
#define KIND_CACHE_MODE		F_ENUM, uq_cache_mode_names
#define KIND_DATA		F_ENUM, uq_data_mode_names
#define KIND_LIFE		F_ENUM, uq_life_names

#define FIELD_(key, member, kind, names)					\
	{ key, kind, offsetof(struct uq_state, member),				\
	  sizeof(((struct uq_state *)0)->member), names },
#define FIELD(key, member, ...)		FIELD_(key, member, __VA_ARGS__)
#define STATE_FIELD(type, f, key)	FIELD(key, f, KIND_##type)
#define OPT_FIELD(type, f, key)		FIELD(key, opt.f, KIND_##type)

static const struct field fields[] = {
	UQ_STATE_FIELDS(STATE_FIELD)
	UQ_KEPT_OPTS(OPT_FIELD)
};

#define NB_FIELDS (sizeof(fields) / sizeof(fields[0]))

/* Named values are stored as enums: read and written as unsigned. */
_Static_assert(sizeof(enum uq_zc_mode) == sizeof(unsigned) &&
	       sizeof(enum uq_cache_opt) == sizeof(unsigned) &&
	       sizeof(enum uq_bitmaps_mode) == sizeof(unsigned) &&
	       sizeof(enum uq_cache_mode) == sizeof(unsigned) &&
	       sizeof(enum uq_data_mode) == sizeof(unsigned) &&
	       sizeof(enum uq_life) == sizeof(unsigned), "an enum is not an unsigned");

/* The longest string any field holds, with its NUL. */
#define VALUE_MAX PATH_MAX

/* ------------------------------------------------------------ writing */

static void print_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

/* names[v], or "" past their end (which no parser takes back). */
static const char *name_of(const char *const *names, unsigned v)
{
	unsigned i;

	for (i = 0; i < v && names[i]; i++)
		;
	return names[i] ? names[i] : "";
}

/* "\"key\":value", after a comma unless first: false for an empty string,
 * which is left out. */
static bool print_field(FILE *f, const struct field *fd, const void *at, bool first)
{
	unsigned u;
	int pid;

	if ((fd->kind == F_STR || fd->kind == F_DEVNAME) && !*(const char *)at)
		return false;
	fprintf(f, "%s\"%s\":", first ? "" : ",", fd->key);
	switch (fd->kind) {
	case F_STR:
	case F_DEVNAME:
		print_str(f, at);
		break;
	case F_UINT:
		memcpy(&u, at, sizeof(u));
		fprintf(f, "%u", u);
		break;
	case F_PID:
		memcpy(&pid, at, sizeof(pid));
		fprintf(f, "%d", pid);
		break;
	case F_U64:
		fprintf(f, "%llu", (unsigned long long)*(const uint64_t *)at);
		break;
	case F_BOOL:
		fputs(*(const bool *)at ? "true" : "false", f);
		break;
	case F_ENUM:
		memcpy(&u, at, sizeof(u));
		print_str(f, name_of(fd->names, u));
		break;
	}
	return true;
}

int uq_state_print(FILE *f, const struct uq_state *s)
{
	bool first = true;
	size_t i;

	fputc('{', f);
	for (i = 0; i < NB_FIELDS; i++)
		if (print_field(f, &fields[i], (const char *)s + fields[i].off, first))
			first = false;
	fputc('}', f);
	return ferror(f) ? -EIO : 0;
}

/* ------------------------------------------------------------ reading */

struct json_in {
	const char *p;
};

static void skip_ws(struct json_in *in)
{
	while (isspace((unsigned char)*in->p))
		in->p++;
}

/* Exactly four hex digits at p (sscanf("%4x") took fewer, or a sign or
 * blanks, and the p += 4 then skipped the closing quote or even the
 * terminating NUL): their value, or -1. */
static int hex4(const char *p)
{
	int v = 0, i;

	for (i = 0; i < 4; i++) {
		unsigned char h = (unsigned char)p[i];

		if (!isxdigit(h))
			return -1;
		v = v << 4 | (isdigit(h) ? h - '0' : (h | 0x20) - 'a' + 10);
	}
	return v;
}

/* The character an escape stands for (in->p after the backslash); \uXXXX
 * above 0x7f becomes '?'.  0 for a malformed one. */
static char unescape(struct json_in *in)
{
	char c = *in->p++;
	int v;

	if (c == 'u') {
		v = hex4(in->p);
		if (v <= 0)
			return 0;
		in->p += 4;
		return v < 0x80 ? (char)v : '?';
	}
	return c == 'n' ? '\n' : c == 't' ? '\t' : c;
}

/* A string into out: 0, or -EINVAL when malformed or longer than outlen - 1. */
static int parse_str(struct json_in *in, char *out, size_t outlen)
{
	size_t n = 0;
	char c;

	if (*in->p++ != '"')
		return -EINVAL;
	while ((c = *in->p++) != '"') {
		if (c == '\\')
			c = unescape(in);
		if (!c || n + 1 >= outlen)
			return -EINVAL;
		out[n++] = c;
	}
	out[n] = '\0';
	return 0;
}

/* A bare scalar (a count, true, false): letters, digits and '-'. */
static int parse_bare(struct json_in *in, char *out, size_t outlen)
{
	size_t n = 0;

	while (isalnum((unsigned char)*in->p) || *in->p == '-') {
		if (n + 1 >= outlen)
			return -EINVAL;
		out[n++] = *in->p++;
	}
	out[n] = '\0';
	return n ? 0 : -EINVAL;
}

static const struct field *field_of(const char *key)
{
	size_t i;

	for (i = 0; i < NB_FIELDS; i++)
		if (!strcmp(fields[i].key, key))
			return &fields[i];
	return NULL;
}

/* A bare value val into the field at at. */
static int set_bare(const struct field *fd, void *at, const char *val)
{
	unsigned u;

	switch (fd->kind) {
	case F_UINT:
	case F_PID:
		if (uq_parse_uint(val, 0, fd->kind == F_PID ? INT_MAX : UINT_MAX, &u) < 0)
			return -EINVAL;
		memcpy(at, &u, sizeof(u));	/* an int pid below INT_MAX: the same bits */
		return 0;
	case F_U64:
		return uq_parse_u64(val, at);
	case F_BOOL:
		if (strcmp(val, "true") && strcmp(val, "false"))
			return -EINVAL;
		*(bool *)at = !strcmp(val, "true");
		return 0;
	default:
		return -EINVAL;		/* a string or name, unquoted */
	}
}

/* A quoted value val into the field at at. */
static int set_quoted(const struct field *fd, void *at, const char *val)
{
	char why[128];
	int v;

	if (fd->kind == F_STR || fd->kind == F_DEVNAME) {
		if (strlen(val) >= fd->size)
			return -EINVAL;
		if (fd->kind == F_DEVNAME && *val && uq_name_check(val, why, sizeof(why)) < 0)
			return -EINVAL;
		strcpy(at, val);
		return 0;
	}
	if (fd->kind != F_ENUM)
		return -EINVAL;
	v = uq_name_index(fd->names, val);
	if (v < 0)
		return -EINVAL;
	memcpy(at, &(unsigned){ (unsigned)v }, sizeof(unsigned));
	return 0;
}

/* One "key":value pair, into s when the key is known. */
static int parse_pair(struct json_in *in, struct uq_state *s, char *val)
{
	const struct field *fd;
	char key[32];
	bool quoted;

	if (parse_str(in, key, sizeof(key)) < 0)
		return -EINVAL;
	skip_ws(in);
	if (*in->p++ != ':')
		return -EINVAL;
	skip_ws(in);
	quoted = *in->p == '"';
	if ((quoted ? parse_str(in, val, VALUE_MAX) : parse_bare(in, val, VALUE_MAX)) < 0)
		return -EINVAL;
	fd = field_of(key);
	if (!fd)
		return 0;
	return (quoted ? set_quoted : set_bare)(fd, (char *)s + fd->off, val);
}

static int parse_object(struct json_in *in, struct uq_state *s, char *val)
{
	skip_ws(in);
	if (*in->p++ != '{')
		return -EINVAL;
	skip_ws(in);
	if (*in->p == '}')
		return 0;
	for (;;) {
		if (parse_pair(in, s, val) < 0)
			return -EINVAL;
		skip_ws(in);
		if (*in->p == '}')
			return 0;
		if (*in->p++ != ',')
			return -EINVAL;
		skip_ws(in);
	}
}

int uq_state_parse(const char *text, struct uq_state *s)
{
	struct json_in in = { text };
	char val[VALUE_MAX];

	memset(s, 0, sizeof(*s));
	return parse_object(&in, s, val);
}
