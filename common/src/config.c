/*
 * config.c — the table-driven YAML configuration loader (see config.h).
 *
 * The file is read with libyaml's event parser, not its document loader, so
 * that aliases can be refused before they are expanded and memory stays
 * proportional to the file. A mapping is walked recursively: a key either
 * names a row of the table (the value is parsed by the row's type), or is a
 * prefix of some row's name (the value must be a mapping: descend), or is a
 * foreign top-level section (skipped), or is an error.
 */
#include "perch/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "perch/alloc.h"

#define PATH_MAX_LEN 256

/* One load: the parser and where errors go. */
struct load {
	const perch_cfg_key *tbl;
	size_t n;
	const char *const *foreign;
	const char *name; /* file name for messages */
	void *out;
	perch_cfg_errors *errs;
	yaml_parser_t parser;
	perch_err status; /* PERCH_OK, PERCH_ECONFIG, or PERCH_ENOMEM */
	bool fatal;       /* the event stream cannot be followed further */
};

__attribute__((format(printf, 4, 5))) static void
add_error(perch_cfg_errors *errs, const char *name, const yaml_mark_t *mark, const char *fmt, ...)
{
	if (errs->n >= PERCH_CFG_MAX_ERRORS) {
		errs->dropped++;
		return;
	}
	char text[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	char line[768];
	if (mark != NULL)
		snprintf(line, sizeof line, "%s:%zu:%zu: %s", name, mark->line + 1,
		         mark->column + 1, text);
	else
		snprintf(line, sizeof line, "%s: %s", name, text);
	char *m = perch_strdup(line);
	if (m == NULL) {
		errs->dropped++;
		return;
	}
	errs->msg[errs->n++] = m;
}

void perch_cfg_errors_free(perch_cfg_errors *errs)
{
	for (size_t i = 0; i < errs->n; i++)
		perch_free(errs->msg[i]);
	memset(errs, 0, sizeof *errs);
}

/* --- value parsers -------------------------------------------------------- */

perch_err perch_parse_bool(const char *text, bool *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"};
	static const char *const no[] = {"false", "no", "off", "0"};
	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(text, yes[i]) == 0) {
			*out = true;
			return PERCH_OK;
		}
		if (strcasecmp(text, no[i]) == 0) {
			*out = false;
			return PERCH_OK;
		}
	}
	return PERCH_EINVAL;
}

/* parse_num reads a decimal integer prefix; *end gets the rest. */
static perch_err parse_num(const char *text, int64_t *out, const char **end)
{
	if (text[0] == '\0' || text[0] == ' ' || text[0] == '+')
		return PERCH_EINVAL;
	errno = 0;
	char *e;
	long long v = strtoll(text, &e, 10);
	if (e == text)
		return PERCH_EINVAL;
	if (errno == ERANGE)
		return PERCH_ERANGE;
	*out = (int64_t)v;
	*end = e;
	return PERCH_OK;
}

perch_err perch_parse_int(const char *text, int64_t *out)
{
	const char *end;
	perch_err err = parse_num(text, out, &end);
	if (err == PERCH_OK && *end != '\0')
		return PERCH_EINVAL;
	return err;
}

/* A unit suffix and its multiplier. */
struct unit {
	const char *suffix;
	int64_t mult;
};

static perch_err parse_with_units(const char *text, const struct unit *units, size_t nunits,
                                  int64_t bare_mult, int64_t *out)
{
	int64_t v;
	const char *end;
	perch_err err = parse_num(text, &v, &end);
	if (err != PERCH_OK)
		return err;
	if (v < 0)
		return PERCH_ERANGE;
	while (*end == ' ')
		end++;
	int64_t mult = bare_mult;
	if (*end != '\0') {
		size_t i;
		for (i = 0; i < nunits; i++)
			if (strcmp(end, units[i].suffix) == 0)
				break;
		if (i == nunits)
			return PERCH_EINVAL;
		mult = units[i].mult;
	}
	if (v > INT64_MAX / mult)
		return PERCH_ERANGE;
	*out = v * mult;
	return PERCH_OK;
}

perch_err perch_parse_size(const char *text, uint64_t *out)
{
	static const struct unit units[] = {
	        {"B", 1},
	        {"k", 1000},
	        {"K", 1024},
	        {"KB", 1024},
	        {"KiB", 1024},
	        {"M", INT64_C(1) << 20},
	        {"MB", INT64_C(1) << 20},
	        {"MiB", INT64_C(1) << 20},
	        {"G", INT64_C(1) << 30},
	        {"GB", INT64_C(1) << 30},
	        {"GiB", INT64_C(1) << 30},
	};
	int64_t v;
	perch_err err = parse_with_units(text, units, sizeof units / sizeof units[0], 1, &v);
	if (err == PERCH_OK)
		*out = (uint64_t)v;
	return err;
}

perch_err perch_parse_duration_ms(const char *text, int64_t *out)
{
	static const struct unit units[] = {
	        {"ms", 1},      {"s", 1000},    {"m", 60000},
	        {"min", 60000}, {"h", 3600000}, {"d", 86400000},
	};
	return parse_with_units(text, units, sizeof units / sizeof units[0], 1000, out);
}

/* --- fields --------------------------------------------------------------- */

static void *field(void *out, const perch_cfg_key *k)
{
	return (char *)out + k->offset;
}

static void free_field(void *out, const perch_cfg_key *k)
{
	if (k->type == PERCH_CFG_STRING) {
		char **s = field(out, k);
		perch_free(*s);
		*s = NULL;
	} else if (k->type == PERCH_CFG_STRLIST) {
		perch_strlist *l = field(out, k);
		for (size_t i = 0; i < l->n; i++)
			perch_free(l->items[i]);
		perch_free(l->items);
		l->items = NULL;
		l->n = 0;
	}
}

void perch_cfg_free(const perch_cfg_key *tbl, size_t n, void *out)
{
	for (size_t i = 0; i < n; i++)
		free_field(out, &tbl[i]);
}

static int64_t range_min(const perch_cfg_key *k)
{
	return k->min == 0 && k->max == 0 ? 0 : k->min;
}

static int64_t range_max(const perch_cfg_key *k)
{
	if (k->min != 0 || k->max != 0)
		return k->max;
	switch (k->type) {
	case PERCH_CFG_STRING: return PERCH_CFG_MAX_STRING;
	case PERCH_CFG_STRLIST: return PERCH_CFG_MAX_LIST;
	default: return INT64_MAX;
	}
}

static perch_err append_item(perch_strlist *l, const char *text)
{
	char **items = perch_realloc(l->items, (l->n + 1) * sizeof *items);
	if (items == NULL)
		return PERCH_ENOMEM;
	l->items = items;
	items[l->n] = perch_strdup(text);
	if (items[l->n] == NULL)
		return PERCH_ENOMEM;
	l->n++;
	return PERCH_OK;
}

/*
 * set_value parses text for row k into out. append: for STRLIST, add to the
 * list (flags) rather than replace it (a file's scalar value).
 */
static perch_err set_value(const perch_cfg_key *k, const char *text, void *out, bool append,
                           char *why, size_t cap)
{
	perch_err err = PERCH_OK;
	int64_t v = 0;
	switch (k->type) {
	case PERCH_CFG_BOOL:
		err = perch_parse_bool(text, field(out, k));
		if (err != PERCH_OK)
			snprintf(why, cap, "expected true or false");
		return err;
	case PERCH_CFG_INT: err = perch_parse_int(text, &v); break;
	case PERCH_CFG_SIZE: {
		uint64_t u = 0;
		err = perch_parse_size(text, &u);
		v = (int64_t)u;
		break;
	}
	case PERCH_CFG_DURATION: err = perch_parse_duration_ms(text, &v); break;
	case PERCH_CFG_STRING: {
		size_t len = strlen(text);
		if ((int64_t)len < range_min(k) || (int64_t)len > range_max(k)) {
			snprintf(why, cap, "length %zu is outside %lld..%lld", len,
			         (long long)range_min(k), (long long)range_max(k));
			return PERCH_ERANGE;
		}
		char *s = perch_strdup(text);
		if (s == NULL)
			return PERCH_ENOMEM;
		char **f = field(out, k);
		perch_free(*f);
		*f = s;
		return PERCH_OK;
	}
	case PERCH_CFG_ENUM: {
		for (int i = 0; k->choices != NULL && k->choices[i] != NULL; i++) {
			if (strcmp(text, k->choices[i]) == 0) {
				*(int *)field(out, k) = i;
				return PERCH_OK;
			}
		}
		size_t used = (size_t)snprintf(why, cap, "expected one of:");
		for (int i = 0; k->choices != NULL && k->choices[i] != NULL && used < cap; i++)
			used += (size_t)snprintf(why + used, cap - used, " %s", k->choices[i]);
		return PERCH_EINVAL;
	}
	case PERCH_CFG_STRLIST: {
		perch_strlist *l = field(out, k);
		if (!append)
			free_field(out, k);
		if ((int64_t)l->n >= range_max(k)) {
			snprintf(why, cap, "more than %lld items", (long long)range_max(k));
			return PERCH_ERANGE;
		}
		if (strlen(text) > PERCH_CFG_MAX_STRING) {
			snprintf(why, cap, "item longer than %d bytes", PERCH_CFG_MAX_STRING);
			return PERCH_ERANGE;
		}
		return append_item(l, text);
	}
	}
	if (err == PERCH_EINVAL) {
		static const char *const expect[] = {
		        [PERCH_CFG_INT] = "expected an integer",
		        [PERCH_CFG_SIZE] = "expected a size such as 512, 64k, 16MiB or 2G",
		        [PERCH_CFG_DURATION] =
		                "expected a duration such as 250ms, 30s, 5m, 2h or 1d",
		};
		snprintf(why, cap, "%s", expect[k->type]);
		return err;
	}
	if (err == PERCH_OK && (v < range_min(k) || v > range_max(k)))
		err = PERCH_ERANGE;
	if (err == PERCH_ERANGE) {
		snprintf(why, cap, "out of range %lld..%lld%s", (long long)range_min(k),
		         (long long)range_max(k), k->type == PERCH_CFG_DURATION ? " ms" : "");
		return err;
	}
	if (err != PERCH_OK)
		return err;
	switch (k->type) {
	case PERCH_CFG_INT:
	case PERCH_CFG_DURATION: *(int64_t *)field(out, k) = v; break;
	case PERCH_CFG_SIZE: *(uint64_t *)field(out, k) = (uint64_t)v; break;
	default: return PERCH_EINTERNAL;
	}
	return PERCH_OK;
}

const perch_cfg_key *perch_cfg_find(const perch_cfg_key *tbl, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(tbl[i].name, name) == 0)
			return &tbl[i];
	return NULL;
}

perch_err perch_cfg_defaults(const perch_cfg_key *tbl, size_t n, void *out)
{
	for (size_t i = 0; i < n; i++) {
		const perch_cfg_key *k = &tbl[i];
		free_field(out, k);
		if (k->def == NULL) {
			switch (k->type) {
			case PERCH_CFG_BOOL: *(bool *)field(out, k) = false; break;
			case PERCH_CFG_INT:
			case PERCH_CFG_DURATION: *(int64_t *)field(out, k) = 0; break;
			case PERCH_CFG_SIZE: *(uint64_t *)field(out, k) = 0; break;
			case PERCH_CFG_ENUM: *(int *)field(out, k) = 0; break;
			case PERCH_CFG_STRING:
			case PERCH_CFG_STRLIST: break;
			}
			continue;
		}
		char why[256];
		perch_err err = set_value(k, k->def, out, false, why, sizeof why);
		if (err == PERCH_ENOMEM)
			return err;
		if (err != PERCH_OK)
			return PERCH_EINTERNAL;
	}
	return PERCH_OK;
}

perch_err perch_cfg_set(const perch_cfg_key *tbl, size_t n, const char *name, const char *value,
                        void *out, char *err, size_t cap)
{
	const perch_cfg_key *k = perch_cfg_find(tbl, n, name);
	if (k == NULL) {
		snprintf(err, cap, "unknown setting '%s'", name);
		return PERCH_ENOENT;
	}
	char why[256] = "";
	perch_err e = set_value(k, value, out, true, why, sizeof why);
	if (e != PERCH_OK)
		snprintf(err, cap, "%s: %s", name, e == PERCH_ENOMEM ? "out of memory" : why);
	return e;
}

/* --- YAML walk ------------------------------------------------------------ */

static bool next_event(struct load *ld, yaml_event_t *ev)
{
	if (ld->fatal)
		return false;
	if (!yaml_parser_parse(&ld->parser, ev)) {
		const char *problem = ld->parser.problem ? ld->parser.problem : "YAML syntax error";
		if (ld->parser.error == YAML_MEMORY_ERROR)
			ld->status = PERCH_ENOMEM;
		else
			ld->status = PERCH_ECONFIG;
		add_error(ld->errs, ld->name, &ld->parser.problem_mark, "%s%s%s", problem,
		          ld->parser.context ? " " : "",
		          ld->parser.context ? ld->parser.context : "");
		ld->fatal = true;
		return false;
	}
	if (ev->type == YAML_ALIAS_EVENT) {
		add_error(ld->errs, ld->name, &ev->start_mark,
		          "YAML aliases are not supported in Perch configuration");
		ld->status = PERCH_ECONFIG;
		ld->fatal = true;
		yaml_event_delete(ev);
		return false;
	}
	return true;
}

__attribute__((format(printf, 3, 4))) static void fail(struct load *ld, const yaml_mark_t *mark,
                                                       const char *fmt, ...)
{
	char text[PATH_MAX_LEN + 320];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(text, sizeof text, fmt, ap);
	va_end(ap);
	add_error(ld->errs, ld->name, mark, "%s", text);
	if (ld->status == PERCH_OK)
		ld->status = PERCH_ECONFIG;
}

/* skip_rest consumes the events of the node whose start event is ev. */
static void skip_node(struct load *ld, const yaml_event_t *start)
{
	if (start->type != YAML_MAPPING_START_EVENT && start->type != YAML_SEQUENCE_START_EVENT)
		return;
	int depth = 1;
	yaml_event_t ev;
	while (depth > 0 && next_event(ld, &ev)) {
		if (ev.type == YAML_MAPPING_START_EVENT || ev.type == YAML_SEQUENCE_START_EVENT)
			depth++;
		else if (ev.type == YAML_MAPPING_END_EVENT || ev.type == YAML_SEQUENCE_END_EVENT)
			depth--;
		yaml_event_delete(&ev);
	}
}

static bool is_prefix_of_some_key(const struct load *ld, const char *path)
{
	size_t len = strlen(path);
	for (size_t i = 0; i < ld->n; i++)
		if (strncmp(ld->tbl[i].name, path, len) == 0 && ld->tbl[i].name[len] == '.')
			return true;
	return false;
}

static bool is_foreign(const struct load *ld, const char *key)
{
	for (size_t i = 0; ld->foreign != NULL && ld->foreign[i] != NULL; i++)
		if (strcmp(ld->foreign[i], key) == 0)
			return true;
	return false;
}

static const char *scalar_text(const yaml_event_t *ev)
{
	return (const char *)ev->data.scalar.value;
}

/* A plain, empty or "~"/"null" scalar is YAML's null. */
static bool scalar_is_null(const yaml_event_t *ev)
{
	if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *t = scalar_text(ev);
	return t[0] == '\0' || strcmp(t, "~") == 0 || strcmp(t, "null") == 0 ||
	       strcmp(t, "Null") == 0 || strcmp(t, "NULL") == 0;
}

static void set_from_scalar(struct load *ld, const perch_cfg_key *k, const yaml_event_t *ev,
                            const char *path)
{
	if (scalar_is_null(ev) && k->type != PERCH_CFG_STRING) {
		fail(ld, &ev->start_mark, "%s: missing value", path);
		return;
	}
	if (strlen(scalar_text(ev)) != ev->data.scalar.length) {
		fail(ld, &ev->start_mark, "%s: value contains a NUL character", path);
		return;
	}
	char why[256] = "";
	perch_err err = set_value(k, scalar_is_null(ev) ? "" : scalar_text(ev), ld->out, false, why,
	                          sizeof why);
	if (err == PERCH_ENOMEM)
		ld->status = PERCH_ENOMEM;
	else if (err != PERCH_OK)
		fail(ld, &ev->start_mark, "%s: %s", path, why);
}

static void set_from_sequence(struct load *ld, const perch_cfg_key *k, const char *path)
{
	free_field(ld->out, k);
	yaml_event_t ev;
	while (next_event(ld, &ev)) {
		if (ev.type == YAML_SEQUENCE_END_EVENT) {
			yaml_event_delete(&ev);
			return;
		}
		if (ev.type != YAML_SCALAR_EVENT) {
			fail(ld, &ev.start_mark, "%s: list items must be strings", path);
			skip_node(ld, &ev);
		} else {
			char why[256] = "";
			perch_err err =
			        set_value(k, scalar_text(&ev), ld->out, true, why, sizeof why);
			if (err == PERCH_ENOMEM)
				ld->status = PERCH_ENOMEM;
			else if (err != PERCH_OK)
				fail(ld, &ev.start_mark, "%s: %s", path, why);
		}
		yaml_event_delete(&ev);
	}
}

static void walk_mapping(struct load *ld, const char *prefix, int depth);

/* walk_value handles the value node (its first event is ev) of key path. */
static void walk_value(struct load *ld, const char *path, bool top, const yaml_event_t *key_ev,
                       const yaml_event_t *ev, int depth)
{
	const perch_cfg_key *k = perch_cfg_find(ld->tbl, ld->n, path);
	if (k != NULL) {
		if (ev->type == YAML_SCALAR_EVENT) {
			set_from_scalar(ld, k, ev, path);
		} else if (ev->type == YAML_SEQUENCE_START_EVENT && k->type == PERCH_CFG_STRLIST) {
			set_from_sequence(ld, k, path);
		} else {
			fail(ld, &ev->start_mark, "%s: expected a %s", path,
			     k->type == PERCH_CFG_STRLIST ? "list of strings" : "single value");
			skip_node(ld, ev);
		}
		return;
	}
	if (is_prefix_of_some_key(ld, path)) {
		if (ev->type == YAML_MAPPING_START_EVENT) {
			walk_mapping(ld, path, depth + 1);
		} else if (ev->type == YAML_SCALAR_EVENT && scalar_is_null(ev)) {
			/* "hub:" with nothing under it: an empty section. */
		} else {
			fail(ld, &ev->start_mark, "%s: expected a section (a mapping)", path);
			skip_node(ld, ev);
		}
		return;
	}
	if (top && is_foreign(ld, path)) {
		skip_node(ld, ev);
		return;
	}
	fail(ld, &key_ev->start_mark, "unknown key '%s'", path);
	skip_node(ld, ev);
}

static void walk_mapping(struct load *ld, const char *prefix, int depth)
{
	if (depth > PERCH_CFG_MAX_DEPTH) {
		fail(ld, &ld->parser.mark, "%s: nested too deeply", prefix);
		yaml_event_t start = {.type = YAML_MAPPING_START_EVENT};
		skip_node(ld, &start);
		return;
	}
	/* Keys seen in this mapping, to refuse duplicates (bounded by the table). */
	char *seen[64];
	size_t nseen = 0;
	yaml_event_t kev;
	while (next_event(ld, &kev)) {
		if (kev.type == YAML_MAPPING_END_EVENT) {
			yaml_event_delete(&kev);
			break;
		}
		yaml_event_t vev;
		if (kev.type != YAML_SCALAR_EVENT) {
			fail(ld, &kev.start_mark, "%s: keys must be plain strings",
			     prefix[0] ? prefix : "(top)");
			skip_node(ld, &kev);
			yaml_event_delete(&kev);
			if (next_event(ld, &vev)) {
				skip_node(ld, &vev);
				yaml_event_delete(&vev);
			}
			continue;
		}
		char path[PATH_MAX_LEN];
		int w = snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "",
		                 scalar_text(&kev));
		if (!next_event(ld, &vev)) {
			yaml_event_delete(&kev);
			break;
		}
		if (w < 0 || (size_t)w >= sizeof path) {
			fail(ld, &kev.start_mark, "%s: key too long", prefix);
			skip_node(ld, &vev);
		} else {
			bool dup = false;
			for (size_t i = 0; i < nseen; i++)
				dup = dup || strcmp(seen[i], path) == 0;
			if (dup) {
				fail(ld, &kev.start_mark, "duplicate key '%s'", path);
				skip_node(ld, &vev);
			} else {
				if (nseen < sizeof seen / sizeof seen[0]) {
					seen[nseen] = perch_strdup(path);
					if (seen[nseen] != NULL)
						nseen++;
				}
				walk_value(ld, path, depth == 0, &kev, &vev, depth);
			}
		}
		yaml_event_delete(&vev);
		yaml_event_delete(&kev);
	}
	for (size_t i = 0; i < nseen; i++)
		perch_free(seen[i]);
}

perch_err perch_cfg_load_buffer(const perch_cfg_key *tbl, size_t n, const char *const *foreign,
                                const char *name, const char *data, size_t len, void *out,
                                perch_cfg_errors *errs)
{
	struct load ld = {
	        .tbl = tbl, .n = n, .foreign = foreign, .name = name, .out = out, .errs = errs};
	if (len > PERCH_CFG_MAX_FILE) {
		add_error(errs, name, NULL, "file larger than %u bytes", PERCH_CFG_MAX_FILE);
		return PERCH_ETOOBIG;
	}
	if (!yaml_parser_initialize(&ld.parser))
		return PERCH_ENOMEM;
	yaml_parser_set_input_string(&ld.parser, (const unsigned char *)data, len);
	yaml_event_t ev;
	bool seen_doc = false;
	while (next_event(&ld, &ev)) {
		yaml_event_type_t t = ev.type;
		if (t == YAML_STREAM_END_EVENT) {
			yaml_event_delete(&ev);
			break;
		}
		if (t == YAML_DOCUMENT_START_EVENT) {
			if (seen_doc) {
				fail(&ld, &ev.start_mark, "only one YAML document is allowed");
				yaml_event_delete(&ev);
				break;
			}
			seen_doc = true;
		} else if (t == YAML_MAPPING_START_EVENT) {
			walk_mapping(&ld, "", 0);
		} else if (t == YAML_SCALAR_EVENT && scalar_is_null(&ev)) {
			/* An empty document: every setting keeps its default. */
		} else if (t == YAML_SCALAR_EVENT || t == YAML_SEQUENCE_START_EVENT) {
			fail(&ld, &ev.start_mark, "the top level must be a mapping of settings");
			skip_node(&ld, &ev);
		}
		yaml_event_delete(&ev);
	}
	yaml_parser_delete(&ld.parser);
	return ld.status;
}

perch_err perch_cfg_load_file(const perch_cfg_key *tbl, size_t n, const char *const *foreign,
                              const char *path, void *out, perch_cfg_errors *errs)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		perch_err err = perch_err_from_errno(errno);
		add_error(errs, path, NULL, "cannot open: %s", strerror(errno));
		return err;
	}
	perch_err err = PERCH_OK;
	char *buf = NULL;
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		add_error(errs, path, NULL, "not a regular file");
		err = PERCH_EIO;
		goto close_fd;
	}
	if ((uint64_t)st.st_size > PERCH_CFG_MAX_FILE) {
		add_error(errs, path, NULL, "file larger than %u bytes", PERCH_CFG_MAX_FILE);
		err = PERCH_ETOOBIG;
		goto close_fd;
	}
	size_t size = (size_t)st.st_size, got = 0;
	buf = perch_malloc(size + 1);
	if (buf == NULL) {
		err = PERCH_ENOMEM;
		goto close_fd;
	}
	while (got < size) {
		ssize_t r = read(fd, buf + got, size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			add_error(errs, path, NULL, "read failed: %s",
			          r < 0 ? strerror(errno) : "file shrank");
			err = PERCH_EIO;
			goto free_buf;
		}
		got += (size_t)r;
	}
	err = perch_cfg_load_buffer(tbl, n, foreign, path, buf, size, out, errs);
free_buf:
	perch_free(buf);
close_fd:
	close(fd);
	return err;
}
