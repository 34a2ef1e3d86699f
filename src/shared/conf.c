/* SPDX-License-Identifier: MIT */
/*
 * A service's configuration file (conf.h): read line by line, each key
 * applied through uq_open_opt_apply, the function open's options go
 * through, so the file has no option mapping of its own.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf.h"
#include "openopt.h"

/* A slot per entry of uq_open_long, then one for image=. */
#define CONF_KEYS	(UQ_OPEN_LONG_MAX + 1)

/* What reading one file keeps: where we are, and the line each key came on. */
struct conf_reader {
	struct uq_conf *c;
	unsigned line;
	unsigned seen[CONF_KEYS];	/* by uq_open_long index; 0: not given */
	char *why;
	size_t why_len;
};

const char *uq_conf_dir(void)
{
	const char *d = getenv("UBLK_QCOW_CONF_DIR");

	return d && *d ? d : UQ_CONF_DIR;
}

/* A complaint about the current line: -EINVAL. */
static int line_error(struct conf_reader *r, const char *what)
{
	snprintf(r->why, r->why_len, "%s:%u: %s", r->c->path, r->line, what);
	return -EINVAL;
}

static char *trim(char *s)
{
	char *end = s + strlen(s);

	while (isspace((unsigned char)*s))
		s++;
	while (end > s && isspace((unsigned char)end[-1]))
		*--end = '\0';
	return s;
}

/* The slot of key in seen[], or -1 for a key open does not have. */
static int key_slot(const char *key)
{
	const struct option *p;

	if (!strcmp(key, "image"))
		return CONF_KEYS - 1;
	p = uq_open_opt_find(key);
	if (!p || p->val == 'h')
		return -1;
	return (int)(p - uq_open_long);
}

static int image_line(struct conf_reader *r, const char *value)
{
	if (value[0] != '/')
		return line_error(r, "image: want an absolute path");
	if (strlen(value) >= sizeof(r->c->image))
		return line_error(r, "image: the path is too long");
	strcpy(r->c->image, value);
	r->c->opt.image = r->c->image;
	return 0;
}

/* A flag (no argument on the command line): yes/true applies it, no/false leaves it off. */
static int flag_line(struct conf_reader *r, const struct option *p, const char *value)
{
	char why[256];

	if (!strcmp(value, "no") || !strcmp(value, "false"))
		return 0;
	if (strcmp(value, "yes") && strcmp(value, "true")) {
		snprintf(why, sizeof(why), "invalid %s '%s': want yes, no, true or false",
			 p->name, value);
		return line_error(r, why);
	}
	return uq_open_opt_apply(&r->c->opt, p->val, NULL, why, sizeof(why));
}

static int key_line(struct conf_reader *r, const char *key, const char *value)
{
	const struct option *p = &uq_open_long[0];
	char why[1200];
	int slot = key_slot(key);

	if (slot < 0) {
		snprintf(why, sizeof(why), "unknown key '%s' (the keys are image and open's "
			 "long options)", key);
		return line_error(r, why);
	}
	if (r->seen[slot]) {
		snprintf(why, sizeof(why), "'%s' given again (first on line %u)", key,
			 r->seen[slot]);
		return line_error(r, why);
	}
	r->seen[slot] = r->line;
	if (slot == CONF_KEYS - 1)
		return image_line(r, value);
	p += slot;
	if (p->has_arg == no_argument)
		return flag_line(r, p, value);
	if (uq_open_opt_apply(&r->c->opt, p->val, value, why, sizeof(why)) < 0)
		return line_error(r, why);
	return 0;
}

static int parse_line(struct conf_reader *r, char *text)
{
	char *s = trim(text), *eq;
	char why[600];

	if (!*s || *s == '#')
		return 0;
	eq = strchr(s, '=');
	if (!eq) {
		snprintf(why, sizeof(why), "'%.500s' is not key=value", s);
		return line_error(r, why);
	}
	*eq = '\0';
	return key_line(r, trim(s), trim(eq + 1));
}

static int read_lines(struct conf_reader *r, FILE *f)
{
	char *text = NULL;
	size_t cap = 0;
	int ret = 0;

	while (ret == 0 && getline(&text, &cap, f) >= 0) {
		r->line++;
		ret = parse_line(r, text);
	}
	free(text);
	if (ret == 0 && ferror(f)) {
		snprintf(r->why, r->why_len, "%s: read error", r->c->path);
		ret = -EIO;
	}
	return ret;
}

/* The name the file's NAME gives, before name= may replace it. */
static int default_name(struct conf_reader *r, const char *name)
{
	const struct option *p = uq_open_opt_find("name");
	char why[600];

	if (uq_open_opt_apply(&r->c->opt, p->val, name, why, sizeof(why)) < 0) {
		snprintf(r->why, r->why_len, "%s: the service name: %s", r->c->path, why);
		return -EINVAL;
	}
	return 0;
}

int uq_conf_load(const char *dir, const char *name, struct uq_conf *c, char *why,
		 size_t why_len)
{
	struct conf_reader r = { .c = c, .why = why, .why_len = why_len };
	FILE *f;
	int ret;

	memset(c, 0, sizeof(*c));
	uq_open_opts_init(&c->opt);
	snprintf(c->path, sizeof(c->path), "%s/%s.conf", dir, name);
	ret = default_name(&r, name);
	if (ret < 0)
		return ret;
	f = fopen(c->path, "re");
	if (!f) {
		ret = -errno;
		snprintf(why, why_len, "%s: %s", c->path, strerror(errno));
		return ret;
	}
	ret = read_lines(&r, f);
	fclose(f);
	if (ret == 0 && !c->opt.image) {
		snprintf(why, why_len, "%s: no image=PATH line (the image to serve)", c->path);
		ret = -EINVAL;
	}
	return ret;
}
