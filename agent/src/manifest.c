/*
 * manifest.c — reads an IoT Edge deployment manifest (JSON, or YAML via
 * manifest_yaml.c) into an agent_deployment, checking every field and
 * collecting every problem with its JSON path.
 *
 * The walk follows the manifest's own shape: $edgeAgent (schemaVersion,
 * runtime, systemModules, modules), $edgeHub (routes, store and forward),
 * then the module twins. It builds into a local deployment and hands it to
 * the caller only when no error was found, so a refused manifest leaves
 * nothing behind. Finally each module's settings hash is computed over the
 * canonical JSON of what its container is created from.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mbedtls/sha256.h>

#include "manifest.h"
#include "perch/alloc.h"
#include "policy.h"

#define PATH_CAP 512 /* longer paths are cut, which only shortens a message */

static const char HASH_PREFIX[] = "perch-settings-v1\n";

struct mwalk {
	agent_manifest_issues *errs;
	agent_manifest_issues *warns; /* may be NULL: warnings are then dropped */
	const agent_policy *policy;   /* NULL: the default policy */
	bool oom;                     /* an allocation failed somewhere */
};

/* --- issues ----------------------------------------------------------------- */

perch_err agent_manifest_issue_add(agent_manifest_issues *list, const char *path, const char *fmt,
                                   ...)
{
	if (list->n >= AGENT_MANIFEST_MAX_ISSUES) {
		list->dropped++;
		return PERCH_OK;
	}
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	size_t need = strlen(path) + 2 + strlen(reason) + 1;
	char *m = perch_malloc(need);
	if (m == NULL) {
		list->dropped++;
		return PERCH_ENOMEM;
	}
	snprintf(m, need, "%s: %s", path, reason);
	list->msg[list->n++] = m;
	return PERCH_OK;
}

void agent_manifest_issues_free(agent_manifest_issues *list)
{
	if (list == NULL)
		return;
	for (size_t i = 0; i < list->n; i++)
		perch_free(list->msg[i]);
	memset(list, 0, sizeof *list);
}

__attribute__((format(printf, 3, 4))) static void merr(struct mwalk *w, const char *path,
                                                       const char *fmt, ...)
{
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	if (agent_manifest_issue_add(w->errs, path, "%s", reason) != PERCH_OK)
		w->oom = true;
}

__attribute__((format(printf, 3, 4))) static void mwarn(struct mwalk *w, const char *path,
                                                        const char *fmt, ...)
{
	if (w->warns == NULL)
		return;
	char reason[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(reason, sizeof reason, fmt, ap);
	va_end(ap);
	if (agent_manifest_issue_add(w->warns, path, "%s", reason) != PERCH_OK)
		w->oom = true;
}

/* --- small helpers ---------------------------------------------------------- */

/* dst = parent "." key (or key alone when parent is empty). */
static void join(char *dst, size_t cap, const char *parent, const char *key)
{
	int n = parent[0] == '\0' ? snprintf(dst, cap, "%s", key)
	                          : snprintf(dst, cap, "%s.%s", parent, key);
	if ((n < 0 || (size_t)n >= cap) && cap > 4)
		memcpy(dst + cap - 4, "...", 4); /* cut: say so */
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER:
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "something else";
}

/* Frees what jansson allocated (json_dumps), with jansson's own free. */
static void jfree(void *p)
{
	json_malloc_t m;
	json_free_t f;
	json_get_alloc_funcs(&m, &f);
	f(p);
}

/* True when a jansson decode failed for want of memory. jansson does not
 * always say so (a failed first allocation leaves no message; one inside a
 * string is reported as a NUL byte), so a refused allocation during the
 * call (failures counted before it in `failures`) counts as well. */
static bool jansson_oom(const json_error_t *jerr, size_t failures)
{
	return json_error_code(jerr) == json_error_out_of_memory || jerr->text[0] == '\0' ||
	       perch_alloc_failures() != failures;
}

/*
 * decode runs json_loadb with a guard. jansson 2.14's lexer ignores a failed
 * growth of its token buffer and then reads and writes past it (upstream
 * akheron/jansson#362, fix pending): an allocation refused inside
 * json_loadb can corrupt the heap. The token buffer never exceeds the
 * input, so checking first that twice the input still fits under the
 * memory limit turns a real shortage into a clean PERCH_ENOMEM (*oom).
 * Injected failures (perch_alloc_fail_after) can still hit the lexer: the
 * fault-injection tests decode JSON before they start injecting.
 */
static json_t *decode(const char *text, size_t n, json_error_t *jerr, bool *oom)
{
	void *probe = perch_malloc(2 * n + 64);
	if (probe == NULL) {
		*oom = true;
		return NULL;
	}
	perch_free(probe);
	size_t failures = perch_alloc_failures();
	json_t *v = json_loadb(text, n, JSON_REJECT_DUPLICATES, jerr);
	*oom = v == NULL && jansson_oom(jerr, failures);
	return v;
}

static bool depth_ok(const json_t *v, int depth)
{
	if (depth > AGENT_MANIFEST_MAX_DEPTH)
		return false;
	if (json_is_object(v)) {
		const char *k;
		const json_t *x;
		json_object_foreach((json_t *)v, k, x) if (!depth_ok(x, depth + 1)) return false;
	} else if (json_is_array(v)) {
		size_t i;
		const json_t *x;
		json_array_foreach(v, i, x) if (!depth_ok(x, depth + 1)) return false;
	}
	return true;
}

/* A copy of the string value at path, or NULL (error reported). */
static char *get_text(struct mwalk *w, const json_t *v, const char *path, bool allow_empty)
{
	if (!json_is_string(v)) {
		if (json_is_number(v))
			merr(w, path, "expected a string, found a number (in YAML, quote it)");
		else
			merr(w, path, "expected a string, found %s", type_name(v));
		return NULL;
	}
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	if (memchr(s, '\0', n) != NULL) {
		merr(w, path, "contains a NUL character");
		return NULL;
	}
	if (n == 0 && !allow_empty) {
		merr(w, path, "must not be empty");
		return NULL;
	}
	char *copy = perch_memdup0(s, n);
	if (copy == NULL)
		w->oom = true;
	return copy;
}

/* Looks up key in obj; reports it missing when required. */
static const json_t *field(struct mwalk *w, const json_t *obj, const char *key, const char *parent,
                           bool required)
{
	const json_t *v = json_object_get(obj, key);
	if (v == NULL && required) {
		char p[PATH_CAP];
		join(p, sizeof p, parent, key);
		merr(w, p, "missing");
	}
	return v;
}

/* The object at obj[key], or NULL (reported when required or mistyped). */
static const json_t *field_object(struct mwalk *w, const json_t *obj, const char *key,
                                  const char *parent, bool required)
{
	const json_t *v = field(w, obj, key, parent, required);
	if (v != NULL && !json_is_object(v)) {
		char p[PATH_CAP];
		join(p, sizeof p, parent, key);
		merr(w, p, "expected an object, found %s", type_name(v));
		return NULL;
	}
	return v;
}

static bool in_list(const char *key, const char *const *list)
{
	for (; *list != NULL; list++)
		if (strcmp(key, *list) == 0)
			return true;
	return false;
}

/* Warns about every key of obj that Perch does not read. */
static void warn_unknown(struct mwalk *w, const json_t *obj, const char *parent,
                         const char *const *known)
{
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)obj, k, v)
	{
		(void)v;
		if (in_list(k, known))
			continue;
		char p[PATH_CAP];
		join(p, sizeof p, parent, k);
		mwarn(w, p, "ignored: not a field Perch reads");
	}
}

/* Reads an enum spelled as one of names[]; returns false (reported) if not. */
static bool get_enum(struct mwalk *w, const json_t *v, const char *path, const char *const *names,
                     int *out)
{
	if (!json_is_string(v)) {
		merr(w, path, "expected a string, found %s", type_name(v));
		return false;
	}
	const char *s = json_string_value(v);
	for (int i = 0; names[i] != NULL; i++) {
		if (strcmp(s, names[i]) == 0) {
			*out = i;
			return true;
		}
	}
	char expected[128] = "";
	for (int i = 0; names[i] != NULL; i++) {
		size_t used = strlen(expected);
		snprintf(expected + used, sizeof expected - used, "%s%s", i ? ", " : "", names[i]);
	}
	merr(w, path, "unsupported value \"%.64s\" (expected one of: %s)", s, expected);
	return false;
}

static const char *const status_names[] = {"running", "stopped", NULL};
static const char *const restart_names[] = {"never", "on-failure", "on-unhealthy", "always", NULL};
static const char *const pull_names[] = {"on-create", "never", NULL};

const char *agent_module_status_name(agent_module_status s)
{
	return (unsigned)s < 2 ? status_names[s] : "unknown";
}

const char *agent_restart_policy_name(agent_restart_policy p)
{
	return (unsigned)p < 4 ? restart_names[p] : "unknown";
}

const char *agent_pull_policy_name(agent_pull_policy p)
{
	return (unsigned)p < 2 ? pull_names[p] : "unknown";
}

/* Parses JSON text that must hold an object (createOptions, loggingOptions).
 * Empty text gives {} when empty_ok, NULL otherwise. */
static json_t *parse_object_text(struct mwalk *w, const char *text, size_t n, const char *path,
                                 bool empty_ok)
{
	size_t i = 0;
	while (i < n && (text[i] == ' ' || text[i] == '\t' || text[i] == '\n' || text[i] == '\r'))
		i++;
	if (i == n) {
		if (!empty_ok)
			return NULL;
		json_t *o = json_object();
		if (o == NULL)
			w->oom = true;
		return o;
	}
	json_error_t jerr;
	bool oom;
	json_t *v = decode(text, n, &jerr, &oom);
	if (v == NULL) {
		if (oom)
			w->oom = true;
		else
			merr(w, path, "not valid JSON: %s (at character %d)", jerr.text,
			     jerr.position);
		return NULL;
	}
	if (!json_is_object(v)) {
		merr(w, path, "expected a JSON object, found %s", type_name(v));
		json_decref(v);
		return NULL;
	}
	if (!depth_ok(v, 1)) {
		merr(w, path, "nested deeper than %d levels", AGENT_MANIFEST_MAX_DEPTH);
		json_decref(v);
		return NULL;
	}
	return v;
}

/* True when a system module's createOptions says nothing ("", "{}", {}). */
static bool options_trivial(const json_t *v)
{
	if (v == NULL || json_is_null(v))
		return true;
	if (json_is_object(v))
		return json_object_size(v) == 0;
	if (!json_is_string(v))
		return false;
	const char *s = json_string_value(v);
	size_t n = json_string_length(v), j = 0;
	char compact[3];
	for (size_t i = 0; i < n; i++) {
		if (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
			continue;
		if (j == 2)
			return false;
		compact[j++] = s[i];
	}
	return j == 0 || (j == 2 && compact[0] == '{' && compact[1] == '}');
}

/* --- createOptions ---------------------------------------------------------- */

/* Returns the piece number of a settings key that starts "createOptions":
 * 0 for createOptions, 1..99 for createOptions01..99, -1 for a bad name,
 * -2 for keys that are no piece at all. */
static int piece_number(const char *key)
{
	static const char base[] = "createOptions";
	if (strncmp(key, base, sizeof base - 1) != 0)
		return -2;
	const char *s = key + sizeof base - 1;
	if (s[0] == '\0')
		return 0;
	if (s[0] >= '0' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9' && s[2] == '\0') {
		int n = (s[0] - '0') * 10 + (s[1] - '0');
		return n > 0 ? n : -1;
	}
	return -1;
}

/* Reads createOptions, joined from its pieces, as an object (new reference),
 * or NULL (reported). */
static json_t *read_create_options(struct mwalk *w, const json_t *settings, const char *spath)
{
	const json_t *piece[AGENT_MANIFEST_MAX_PIECES + 1] = {0};
	int max = 0;
	bool bad = false;
	const char *k;
	const json_t *v;
	char p[PATH_CAP];
	json_object_foreach((json_t *)settings, k, v)
	{
		int n = piece_number(k);
		if (n == -2)
			continue;
		if (n < 0) {
			join(p, sizeof p, spath, k);
			merr(w, p,
			     "not a createOptions piece (createOptions01 to createOptions99 "
			     "continue createOptions)");
			bad = true;
			continue;
		}
		piece[n] = v;
		if (n > max)
			max = n;
	}
	char cpath[PATH_CAP];
	join(cpath, sizeof cpath, spath, "createOptions");
	if (max == 0 && !bad) {
		v = piece[0];
		if (v == NULL || json_is_null(v)) {
			json_t *o = json_object();
			if (o == NULL)
				w->oom = true;
			return o;
		}
		if (json_is_object(v)) {
			if (!depth_ok(v, 1)) {
				merr(w, cpath, "nested deeper than %d levels",
				     AGENT_MANIFEST_MAX_DEPTH);
				return NULL;
			}
			json_t *o = json_deep_copy(v);
			if (o == NULL)
				w->oom = true;
			return o;
		}
	}
	size_t total = 0;
	for (int i = 0; i <= max; i++) {
		char name[32];
		snprintf(name, sizeof name, i == 0 ? "createOptions" : "createOptions%02d", i);
		join(p, sizeof p, spath, name);
		if (piece[i] == NULL) {
			merr(w, p,
			     "missing (the pieces run createOptions, createOptions01, ... up to "
			     "createOptions%02d without gaps)",
			     max);
			bad = true;
		} else if (!json_is_string(piece[i])) {
			merr(w, p, "expected a string, found %s", type_name(piece[i]));
			bad = true;
		} else {
			total += json_string_length(piece[i]);
		}
	}
	if (bad)
		return NULL;
	if (total > AGENT_MANIFEST_MAX_CREATE_OPTIONS) {
		merr(w, cpath, "longer than %u bytes", AGENT_MANIFEST_MAX_CREATE_OPTIONS);
		return NULL;
	}
	char *text = perch_malloc(total + 1);
	if (text == NULL) {
		w->oom = true;
		return NULL;
	}
	size_t used = 0;
	for (int i = 0; i <= max; i++) {
		size_t n = json_string_length(piece[i]);
		memcpy(text + used, json_string_value(piece[i]), n);
		used += n;
	}
	text[used] = '\0';
	json_t *o = parse_object_text(w, text, used, cpath, true);
	perch_free(text);
	return o;
}

/* --- modules ---------------------------------------------------------------- */

static bool module_name_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > AGENT_MANIFEST_MAX_NAME)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		bool alnum =
		        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
			return false;
	}
	return true;
}

static int env_cmp(const void *a, const void *b)
{
	return strcmp(((const agent_env_var *)a)->name, ((const agent_env_var *)b)->name);
}

/* The text of an env value: strings as they are, numbers and booleans as
 * JSON spells them. */
static char *env_text(struct mwalk *w, const json_t *v, const char *path)
{
	if (json_is_string(v))
		return get_text(w, v, path, true);
	if (json_is_boolean(v)) {
		char *s = perch_strdup(json_is_true(v) ? "true" : "false");
		if (s == NULL)
			w->oom = true;
		return s;
	}
	if (json_is_number(v)) {
		char *dump = json_dumps(v, JSON_ENCODE_ANY);
		if (dump == NULL) {
			w->oom = true;
			return NULL;
		}
		char *s = perch_strdup(dump);
		jfree(dump);
		if (s == NULL)
			w->oom = true;
		return s;
	}
	merr(w, path, "expected a string, found %s", type_name(v));
	return NULL;
}

static void read_env(struct mwalk *w, const json_t *env, const char *epath, agent_module *m)
{
	if (json_is_null(env))
		return;
	if (!json_is_object(env)) {
		merr(w, epath, "expected an object, found %s", type_name(env));
		return;
	}
	size_t count = json_object_size(env);
	if (count > AGENT_MANIFEST_MAX_ENV) {
		merr(w, epath, "more than %d variables", AGENT_MANIFEST_MAX_ENV);
		return;
	}
	if (count == 0)
		return;
	m->env = perch_calloc(count, sizeof *m->env);
	if (m->env == NULL) {
		w->oom = true;
		return;
	}
	static const char *const known[] = {"value", NULL};
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)env, k, v)
	{
		char p[PATH_CAP], vp[PATH_CAP];
		join(p, sizeof p, epath, k);
		if (k[0] == '\0' || strchr(k, '=') != NULL) {
			merr(w, p, "invalid variable name (not empty, no '=')");
			continue;
		}
		if (!json_is_object(v)) {
			merr(w, p, "expected an object {\"value\": ...}, found %s", type_name(v));
			continue;
		}
		warn_unknown(w, v, p, known);
		const json_t *val = field(w, v, "value", p, true);
		if (val == NULL)
			continue;
		join(vp, sizeof vp, p, "value");
		char *text = env_text(w, val, vp);
		if (text == NULL)
			continue;
		char *name = perch_strdup(k);
		if (name == NULL) {
			perch_free(text);
			w->oom = true;
			continue;
		}
		m->env[m->n_env++] = (agent_env_var){name, text};
	}
	qsort(m->env, m->n_env, sizeof *m->env, env_cmp);
}

static void read_module(struct mwalk *w, const char *name, const json_t *obj, const char *mpath,
                        agent_module *m)
{
	static const char *const known[] = {
	        "version", "type",     "status", "restartPolicy", "imagePullPolicy", "startupOrder",
	        "env",     "settings", NULL};
	static const char *const settings_known[] = {"image", NULL};
	char p[PATH_CAP];
	m->startup_order = AGENT_MANIFEST_DEFAULT_ORDER;
	m->status = AGENT_STATUS_RUNNING;
	m->restart_policy = AGENT_RESTART_ALWAYS;
	m->pull_policy = AGENT_PULL_ON_CREATE;
	if (!module_name_ok(name)) {
		merr(w, mpath,
		     "invalid module name (1 to %d letters, digits, '_', '.' or '-', starting with "
		     "a "
		     "letter or digit)",
		     AGENT_MANIFEST_MAX_NAME);
		return;
	}
	if (strcmp(name, "edgeAgent") == 0 || strcmp(name, "edgeHub") == 0) {
		merr(w, mpath, "the name %s is reserved for systemModules", name);
		return;
	}
	if (!json_is_object(obj)) {
		merr(w, mpath, "expected an object, found %s", type_name(obj));
		return;
	}
	m->name = perch_strdup(name);
	if (m->name == NULL) {
		w->oom = true;
		return;
	}
	warn_unknown(w, obj, mpath, known);

	const json_t *v = field(w, obj, "type", mpath, true);
	join(p, sizeof p, mpath, "type");
	if (v != NULL && !json_is_string(v))
		merr(w, p, "expected a string, found %s", type_name(v));
	else if (v != NULL && strcmp(json_string_value(v), "docker") != 0)
		merr(w, p, "unsupported module type \"%.64s\" (Perch runs docker modules)",
		     json_string_value(v));

	v = field(w, obj, "version", mpath, false);
	join(p, sizeof p, mpath, "version");
	m->version = v != NULL ? get_text(w, v, p, true) : perch_strdup("");
	if (v == NULL && m->version == NULL)
		w->oom = true;

	int e;
	if ((v = field(w, obj, "status", mpath, false)) != NULL) {
		join(p, sizeof p, mpath, "status");
		if (get_enum(w, v, p, status_names, &e))
			m->status = (agent_module_status)e;
	}
	if ((v = field(w, obj, "restartPolicy", mpath, false)) != NULL) {
		join(p, sizeof p, mpath, "restartPolicy");
		if (get_enum(w, v, p, restart_names, &e))
			m->restart_policy = (agent_restart_policy)e;
	}
	if ((v = field(w, obj, "imagePullPolicy", mpath, false)) != NULL) {
		join(p, sizeof p, mpath, "imagePullPolicy");
		if (get_enum(w, v, p, pull_names, &e))
			m->pull_policy = (agent_pull_policy)e;
	}
	if ((v = field(w, obj, "startupOrder", mpath, false)) != NULL) {
		join(p, sizeof p, mpath, "startupOrder");
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > (json_int_t)AGENT_MANIFEST_DEFAULT_ORDER)
			merr(w, p, "expected an integer from 0 to %u",
			     AGENT_MANIFEST_DEFAULT_ORDER);
		else
			m->startup_order = (uint32_t)json_integer_value(v);
	}
	if ((v = field(w, obj, "env", mpath, false)) != NULL) {
		join(p, sizeof p, mpath, "env");
		read_env(w, v, p, m);
	}

	char spath[PATH_CAP];
	join(spath, sizeof spath, mpath, "settings");
	const json_t *settings = field_object(w, obj, "settings", mpath, true);
	if (settings == NULL)
		return;
	const char *k;
	json_object_foreach((json_t *)settings, k, v)
	{
		if (in_list(k, settings_known) || piece_number(k) != -2)
			continue;
		join(p, sizeof p, spath, k);
		mwarn(w, p, "ignored: not a field Perch reads");
	}
	if ((v = field(w, settings, "image", spath, true)) != NULL) {
		join(p, sizeof p, spath, "image");
		m->image = get_text(w, v, p, false);
	}
	m->create_options = read_create_options(w, settings, spath);
	if (m->create_options != NULL) {
		perch_err pe = agent_policy_check(w->policy, name, m->create_options, w->errs);
		if (pe == PERCH_ENOMEM)
			w->oom = true;
	}
}

static int module_cmp(const void *a, const void *b)
{
	const agent_module *x = a, *y = b;
	if (x->startup_order != y->startup_order)
		return x->startup_order < y->startup_order ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* --- system modules --------------------------------------------------------- */

static void read_system_module(struct mwalk *w, const json_t *obj, const char *path, bool hub,
                               agent_system_module *sm)
{
	static const char *const known[] = {"type", "status",   "restartPolicy", "startupOrder",
	                                    "env",  "settings", "version",       "imagePullPolicy",
	                                    NULL};
	const char *what = hub ? "Perch runs its own perch-hub, not an edgeHub container"
	                       : "perch-agent itself plays the part of edgeAgent";
	char p[PATH_CAP];
	if (!json_is_object(obj)) {
		merr(w, path, "expected an object, found %s", type_name(obj));
		return;
	}
	sm->present = true;
	warn_unknown(w, obj, path, known);
	const json_t *v = json_object_get(obj, "type");
	join(p, sizeof p, path, "type");
	if (v != NULL && (!json_is_string(v) || strcmp(json_string_value(v), "docker") != 0))
		mwarn(w, p, "ignored: only docker is meaningful here");
	int e;
	if ((v = json_object_get(obj, "status")) != NULL) {
		join(p, sizeof p, path, "status");
		if (!hub)
			mwarn(w, p, "ignored: %s", what);
		else if (get_enum(w, v, p, status_names, &e))
			sm->status = (agent_module_status)e;
		if (hub && sm->status == AGENT_STATUS_STOPPED)
			merr(w, p,
			     "perch-hub cannot be stopped by a deployment (start perch-agent "
			     "with --no-hub instead)");
	}
	if ((v = json_object_get(obj, "restartPolicy")) != NULL) {
		join(p, sizeof p, path, "restartPolicy");
		if (!json_is_string(v) || strcmp(json_string_value(v), "always") != 0 || !hub)
			mwarn(w, p, "ignored: perch-agent always restarts %s",
			      hub ? "perch-hub" : "itself through systemd");
	}
	if ((v = json_object_get(obj, "startupOrder")) != NULL) {
		join(p, sizeof p, path, "startupOrder");
		if (!hub || !json_is_integer(v) || json_integer_value(v) != 0)
			mwarn(w, p, "ignored: %s",
			      hub ? "perch-hub always starts before every module"
			          : "perch-agent always starts first");
	}
	if (json_object_get(obj, "imagePullPolicy") != NULL) {
		join(p, sizeof p, path, "imagePullPolicy");
		mwarn(w, p, "ignored: %s", what);
	}
	if ((v = json_object_get(obj, "env")) != NULL && json_is_object(v)) {
		const char *k;
		const json_t *x;
		char ep[PATH_CAP];
		join(ep, sizeof ep, path, "env");
		json_object_foreach((json_t *)v, k, x)
		{
			(void)x;
			join(p, sizeof p, ep, k);
			mwarn(w, p, "ignored: %s (it is configured in config.yaml)",
			      hub ? "perch-hub" : "perch-agent");
		}
	}
	char spath[PATH_CAP];
	join(spath, sizeof spath, path, "settings");
	const json_t *settings = field_object(w, obj, "settings", path, false);
	if (settings == NULL)
		return;
	const char *k;
	json_object_foreach((json_t *)settings, k, v)
	{
		join(p, sizeof p, spath, k);
		if (strcmp(k, "image") == 0) {
			if (json_is_string(v)) {
				perch_free(sm->image);
				sm->image = perch_strdup(json_string_value(v));
				if (sm->image == NULL)
					w->oom = true;
			}
			mwarn(w, p, "ignored: %s", what);
		} else if (piece_number(k) >= 0) {
			if (!options_trivial(v) || piece_number(k) > 0)
				mwarn(w, p, "ignored: %s%s", what,
				      hub ? "; its listeners and port bindings come from "
				            "config.yaml"
				          : "");
		} else {
			mwarn(w, p, "ignored: not a field Perch reads");
		}
	}
}

/* --- runtime ---------------------------------------------------------------- */

static int registry_cmp(const void *a, const void *b)
{
	return strcmp(((const agent_registry_credential *)a)->name,
	              ((const agent_registry_credential *)b)->name);
}

static void read_registries(struct mwalk *w, const json_t *regs, const char *rpath,
                            agent_deployment *d)
{
	size_t count = json_object_size(regs);
	if (count == 0)
		return;
	if (count > AGENT_MANIFEST_MAX_MODULES) {
		merr(w, rpath, "more than %d registries", AGENT_MANIFEST_MAX_MODULES);
		return;
	}
	d->registries = perch_calloc(count, sizeof *d->registries);
	if (d->registries == NULL) {
		w->oom = true;
		return;
	}
	static const char *const known[] = {"username", "password", "address", NULL};
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)regs, k, v)
	{
		char p[PATH_CAP], fp[PATH_CAP];
		join(p, sizeof p, rpath, k);
		if (!json_is_object(v)) {
			merr(w, p, "expected an object, found %s", type_name(v));
			continue;
		}
		warn_unknown(w, v, p, known);
		agent_registry_credential *r = &d->registries[d->n_registries++];
		r->name = perch_strdup(k);
		if (r->name == NULL)
			w->oom = true;
		char **dst[] = {&r->username, &r->password, &r->address};
		for (size_t i = 0; i < 3; i++) {
			const json_t *f = field(w, v, known[i], p, true);
			if (f == NULL)
				continue;
			join(fp, sizeof fp, p, known[i]);
			*dst[i] = get_text(w, f, fp, false);
		}
	}
	for (size_t i = 0; i < d->n_registries; i++)
		if (d->registries[i].name == NULL)
			return; /* out of memory: the walk fails anyway; do not sort */
	qsort(d->registries, d->n_registries, sizeof *d->registries, registry_cmp);
}

static void read_runtime(struct mwalk *w, const json_t *rt, const char *path, agent_deployment *d)
{
	static const char *const known[] = {"type", "settings", NULL};
	static const char *const settings_known[] = {"minDockerVersion", "loggingOptions",
	                                             "registryCredentials", NULL};
	char p[PATH_CAP];
	warn_unknown(w, rt, path, known);
	const json_t *v = field(w, rt, "type", path, true);
	join(p, sizeof p, path, "type");
	if (v != NULL && !json_is_string(v))
		merr(w, p, "expected a string, found %s", type_name(v));
	else if (v != NULL && strcmp(json_string_value(v), "docker") != 0)
		merr(w, p, "unsupported runtime type \"%.64s\" (Perch runs docker)",
		     json_string_value(v));
	char spath[PATH_CAP];
	join(spath, sizeof spath, path, "settings");
	const json_t *settings = field_object(w, rt, "settings", path, false);
	if (settings == NULL)
		return;
	warn_unknown(w, settings, spath, settings_known);
	if ((v = json_object_get(settings, "minDockerVersion")) != NULL) {
		join(p, sizeof p, spath, "minDockerVersion");
		d->min_docker_version = get_text(w, v, p, true);
	}
	if ((v = json_object_get(settings, "loggingOptions")) != NULL && !json_is_null(v)) {
		join(p, sizeof p, spath, "loggingOptions");
		if (json_is_string(v)) {
			d->logging_options = parse_object_text(w, json_string_value(v),
			                                       json_string_length(v), p, false);
		} else if (json_is_object(v)) {
			if (!depth_ok(v, 1))
				merr(w, p, "nested deeper than %d levels",
				     AGENT_MANIFEST_MAX_DEPTH);
			else if (json_object_size(v) > 0 &&
			         (d->logging_options = json_deep_copy(v)) == NULL)
				w->oom = true;
		} else {
			merr(w, p, "expected a string or an object, found %s", type_name(v));
		}
		if (d->logging_options != NULL) {
			const json_t *t = json_object_get(d->logging_options, "Type");
			if (t == NULL || !json_is_string(t))
				merr(w, p,
				     "expected a Docker LogConfig {\"Type\": \"json-file\", "
				     "\"Config\": {...}}");
		}
	}
	const json_t *regs = field_object(w, settings, "registryCredentials", spath, false);
	if (regs != NULL) {
		join(p, sizeof p, spath, "registryCredentials");
		read_registries(w, regs, p, d);
	}
}

static bool schema_version_ok(struct mwalk *w, const json_t *desired, const char *path, char **out)
{
	const json_t *v = field(w, desired, "schemaVersion", path, true);
	if (v == NULL)
		return false;
	char p[PATH_CAP];
	join(p, sizeof p, path, "schemaVersion");
	char *s = get_text(w, v, p, false);
	if (s == NULL)
		return false;
	if (strcmp(s, "1.0") != 0 && strcmp(s, "1.1") != 0) {
		merr(w, p, "unsupported schemaVersion \"%.32s\" (Perch reads 1.0 and 1.1)", s);
		perch_free(s);
		return false;
	}
	*out = s;
	return true;
}

/* The "properties.desired" object of a twin section, or NULL (reported). */
static const json_t *desired_of(struct mwalk *w, const json_t *twin, const char *path, char *dpath,
                                size_t cap)
{
	static const char *const known[] = {"properties.desired", NULL};
	if (!json_is_object(twin)) {
		merr(w, path, "expected an object, found %s", type_name(twin));
		return NULL;
	}
	warn_unknown(w, twin, path, known);
	join(dpath, cap, path, "properties.desired");
	return field_object(w, twin, "properties.desired", path, true);
}

static void read_edge_agent(struct mwalk *w, const json_t *desired, const char *dpath,
                            agent_deployment *d)
{
	static const char *const known[] = {"schemaVersion", "runtime", "systemModules", "modules",
	                                    NULL};
	char p[PATH_CAP];
	warn_unknown(w, desired, dpath, known);
	(void)schema_version_ok(w, desired, dpath, &d->schema_version);
	const json_t *rt = field_object(w, desired, "runtime", dpath, true);
	if (rt != NULL) {
		join(p, sizeof p, dpath, "runtime");
		read_runtime(w, rt, p, d);
	}
	const json_t *sys = field_object(w, desired, "systemModules", dpath, false);
	if (sys != NULL) {
		char spath[PATH_CAP];
		join(spath, sizeof spath, dpath, "systemModules");
		const char *k;
		const json_t *v;
		json_object_foreach((json_t *)sys, k, v)
		{
			join(p, sizeof p, spath, k);
			if (strcmp(k, "edgeAgent") == 0)
				read_system_module(w, v, p, false, &d->edge_agent);
			else if (strcmp(k, "edgeHub") == 0)
				read_system_module(w, v, p, true, &d->edge_hub);
			else
				mwarn(w, p, "ignored: not a system module Perch knows");
		}
	}
	const json_t *mods = field_object(w, desired, "modules", dpath, false);
	if (mods == NULL)
		return;
	char mpath[PATH_CAP];
	join(mpath, sizeof mpath, dpath, "modules");
	size_t count = json_object_size(mods);
	if (count > AGENT_MANIFEST_MAX_MODULES) {
		merr(w, mpath, "more than %d modules", AGENT_MANIFEST_MAX_MODULES);
		return;
	}
	if (count == 0)
		return;
	d->modules = perch_calloc(count, sizeof *d->modules);
	if (d->modules == NULL) {
		w->oom = true;
		return;
	}
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)mods, k, v)
	{
		join(p, sizeof p, mpath, k);
		read_module(w, k, v, p, &d->modules[d->n_modules++]);
	}
}

/* --- $edgeHub --------------------------------------------------------------- */

static void read_route(struct mwalk *w, const json_t *r, const char *path, bool v11)
{
	static const char *const known[] = {"route", "priority", "timeToLiveSecs", NULL};
	char p[PATH_CAP];
	if (json_is_string(r)) {
		if (json_string_length(r) == 0)
			merr(w, path, "must not be empty");
		return;
	}
	if (!json_is_object(r)) {
		merr(w, path, "expected a route string or object, found %s", type_name(r));
		return;
	}
	if (!v11)
		merr(w, path,
		     "route objects (with priority and timeToLiveSecs) need $edgeHub "
		     "schemaVersion 1.1");
	warn_unknown(w, r, path, known);
	const json_t *v = field(w, r, "route", path, true);
	join(p, sizeof p, path, "route");
	if (v != NULL && (!json_is_string(v) || json_string_length(v) == 0))
		merr(w, p, "expected a non-empty string");
	if ((v = json_object_get(r, "priority")) != NULL) {
		join(p, sizeof p, path, "priority");
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > 9)
			merr(w, p, "expected an integer from 0 to 9");
	}
	if ((v = json_object_get(r, "timeToLiveSecs")) != NULL) {
		join(p, sizeof p, path, "timeToLiveSecs");
		if (!json_is_integer(v) || json_integer_value(v) < 0 ||
		    json_integer_value(v) > 0xffffffffLL)
			merr(w, p, "expected an integer from 0 to 4294967295");
	}
}

static void read_edge_hub(struct mwalk *w, const json_t *desired, const char *dpath,
                          agent_deployment *d)
{
	static const char *const known[] = {"schemaVersion", "routes",
	                                    "storeAndForwardConfiguration", NULL};
	char p[PATH_CAP];
	warn_unknown(w, desired, dpath, known);
	bool ok = schema_version_ok(w, desired, dpath, &d->hub_schema_version);
	bool v11 = ok && strcmp(d->hub_schema_version, "1.1") == 0;
	const json_t *routes = field_object(w, desired, "routes", dpath, false);
	if (routes != NULL) {
		char rpath[PATH_CAP];
		join(rpath, sizeof rpath, dpath, "routes");
		const char *k;
		const json_t *v;
		json_object_foreach((json_t *)routes, k, v)
		{
			join(p, sizeof p, rpath, k);
			read_route(w, v, p, v11 || !ok);
		}
		if (!depth_ok(routes, 1))
			merr(w, rpath, "nested deeper than %d levels", AGENT_MANIFEST_MAX_DEPTH);
		else if ((d->routes = json_deep_copy(routes)) == NULL)
			w->oom = true;
	}
	const json_t *sf = field_object(w, desired, "storeAndForwardConfiguration", dpath, false);
	if (sf != NULL) {
		char sp[PATH_CAP];
		join(sp, sizeof sp, dpath, "storeAndForwardConfiguration");
		static const char *const sf_known[] = {"timeToLiveSecs", NULL};
		warn_unknown(w, sf, sp, sf_known);
		const json_t *ttl = json_object_get(sf, "timeToLiveSecs");
		join(p, sizeof p, sp, "timeToLiveSecs");
		if (ttl != NULL && (!json_is_integer(ttl) || json_integer_value(ttl) < 0 ||
		                    json_integer_value(ttl) > 0xffffffffLL))
			merr(w, p, "expected an integer from 0 to 4294967295");
		if (!depth_ok(sf, 1))
			merr(w, sp, "nested deeper than %d levels", AGENT_MANIFEST_MAX_DEPTH);
		else if ((d->store_and_forward = json_deep_copy(sf)) == NULL)
			w->oom = true;
	}
}

/* --- the whole manifest ----------------------------------------------------- */

static bool has_module(const agent_deployment *d, const char *name)
{
	for (size_t i = 0; i < d->n_modules; i++)
		if (d->modules[i].name != NULL && strcmp(d->modules[i].name, name) == 0)
			return true;
	return false;
}

static void read_content(struct mwalk *w, const json_t *content, const char *base,
                         agent_deployment *d)
{
	char p[PATH_CAP], dpath[PATH_CAP];
	const json_t *twin = field(w, content, "$edgeAgent", base, true);
	if (twin != NULL) {
		join(p, sizeof p, base, "$edgeAgent");
		const json_t *desired = desired_of(w, twin, p, dpath, sizeof dpath);
		if (desired != NULL)
			read_edge_agent(w, desired, dpath, d);
	}
	twin = field(w, content, "$edgeHub", base, true);
	if (twin != NULL) {
		join(p, sizeof p, base, "$edgeHub");
		const json_t *desired = desired_of(w, twin, p, dpath, sizeof dpath);
		if (desired != NULL)
			read_edge_hub(w, desired, dpath, d);
	}
	d->twins = json_object();
	if (d->twins == NULL) {
		w->oom = true;
		return;
	}
	if (d->routes == NULL && (d->routes = json_object()) == NULL) {
		w->oom = true;
		return;
	}
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)content, k, v)
	{
		if (strcmp(k, "$edgeAgent") == 0 || strcmp(k, "$edgeHub") == 0)
			continue;
		join(p, sizeof p, base, k);
		if (k[0] == '$') {
			mwarn(w, p, "ignored: not a system module twin Perch knows");
			continue;
		}
		const json_t *desired = desired_of(w, v, p, dpath, sizeof dpath);
		if (desired == NULL)
			continue;
		if (!depth_ok(desired, 1)) {
			merr(w, dpath, "nested deeper than %d levels", AGENT_MANIFEST_MAX_DEPTH);
			continue;
		}
		if (!has_module(d, k))
			mwarn(w, p, "kept, but no module of this deployment is named %s", k);
		if (json_object_set_new(d->twins, k, json_deep_copy(desired)) != 0)
			w->oom = true;
	}
}

static void read_root(struct mwalk *w, const json_t *root, agent_deployment *d)
{
	if (!json_is_object(root)) {
		merr(w, "(input)", "expected an object at the top, found %s", type_name(root));
		return;
	}
	const json_t *content = json_object_get(root, "modulesContent");
	const char *base = "modulesContent";
	const json_t *wrap = json_object_get(root, "content");
	if (content == NULL && json_is_object(wrap) &&
	    (content = json_object_get(wrap, "modulesContent")) != NULL)
		base = "content.modulesContent";
	if (content != NULL) {
		const char *k;
		const json_t *v;
		json_object_foreach((json_t *)root, k, v)
		{
			(void)v;
			if (strcmp(k, base[0] == 'c' ? "content" : "modulesContent") != 0)
				mwarn(w, k, "ignored: not part of modulesContent");
		}
		if (!json_is_object(content)) {
			merr(w, base, "expected an object, found %s", type_name(content));
			return;
		}
	} else if (json_object_get(root, "$edgeAgent") != NULL) {
		content = root; /* the bare modulesContent object */
		base = "";
	} else {
		merr(w, "modulesContent", "missing");
		return;
	}
	read_content(w, content, base, d);
}

json_t *agent_module_settings_json(const agent_deployment *d, const agent_module *m)
{
	json_t *o = json_object(), *env = json_object();
	bool ok = o != NULL && env != NULL;
	for (size_t i = 0; ok && i < m->n_env; i++)
		ok = json_object_set_new(env, m->env[i].name, json_string(m->env[i].value)) == 0;
	ok = ok && json_object_set_new(o, "image", json_string(m->image)) == 0 &&
	     json_object_set_new(o, "version", json_string(m->version)) == 0 &&
	     json_object_set(o, "createOptions", m->create_options) == 0 &&
	     json_object_set(o, "env", env) == 0 &&
	     json_object_set_new(o, "loggingOptions",
	                         d->logging_options != NULL ? json_incref(d->logging_options)
	                                                    : json_null()) == 0;
	json_decref(env);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

static perch_err module_hash(const agent_deployment *d, agent_module *m)
{
	json_t *o = agent_module_settings_json(d, m);
	if (o == NULL)
		return PERCH_ENOMEM;
	char *text = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
	json_decref(o);
	if (text == NULL)
		return PERCH_ENOMEM;
	unsigned char digest[32];
	mbedtls_sha256_context ctx;
	mbedtls_sha256_init(&ctx);
	int rc = mbedtls_sha256_starts_ret(&ctx, 0);
	rc = rc ? rc
	        : mbedtls_sha256_update_ret(&ctx, (const unsigned char *)HASH_PREFIX,
	                                    sizeof HASH_PREFIX - 1);
	rc = rc ? rc : mbedtls_sha256_update_ret(&ctx, (const unsigned char *)text, strlen(text));
	rc = rc ? rc : mbedtls_sha256_finish_ret(&ctx, digest);
	mbedtls_sha256_free(&ctx);
	jfree(text);
	if (rc != 0)
		return PERCH_EINTERNAL;
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < sizeof digest; i++) {
		m->settings_hash[2 * i] = hex[digest[i] >> 4];
		m->settings_hash[2 * i + 1] = hex[digest[i] & 15];
	}
	m->settings_hash[64] = '\0';
	return PERCH_OK;
}

perch_err agent_manifest_from_json(const json_t *root, const agent_policy *policy,
                                   agent_deployment *out, agent_manifest_issues *errs,
                                   agent_manifest_issues *warns)
{
	agent_deployment d = {0};
	struct mwalk w = {errs, warns, policy, false};
	size_t before = errs->n + errs->dropped;
	read_root(&w, root, &d);
	perch_err e = PERCH_OK;
	if (w.oom)
		e = PERCH_ENOMEM;
	else if (errs->n + errs->dropped != before)
		e = PERCH_ECONFIG;
	for (size_t i = 0; e == PERCH_OK && i < d.n_modules; i++)
		e = module_hash(&d, &d.modules[i]);
	if (e != PERCH_OK) {
		agent_deployment_free(&d);
		return e;
	}
	if (d.n_modules > 1)
		qsort(d.modules, d.n_modules, sizeof *d.modules, module_cmp);
	*out = d;
	return PERCH_OK;
}

perch_err agent_manifest_parse(const char *data, size_t len, const agent_policy *policy,
                               agent_deployment *out, agent_manifest_issues *errs,
                               agent_manifest_issues *warns)
{
	if (len > AGENT_MANIFEST_MAX_BYTES) {
		perch_err e = agent_manifest_issue_add(errs, "(input)", "larger than %u bytes",
		                                       AGENT_MANIFEST_MAX_BYTES);
		return e == PERCH_OK ? PERCH_ETOOBIG : e;
	}
	size_t i = 0;
	if (len >= 3 && memcmp(data, "\xef\xbb\xbf", 3) == 0)
		i = 3;
	while (i < len && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r'))
		i++;
	json_t *root = NULL;
	perch_err e;
	if (i < len && (data[i] == '{' || data[i] == '[')) {
		json_error_t jerr;
		bool oom;
		root = decode(data + i, len - i, &jerr, &oom);
		if (root == NULL) {
			if (oom)
				return PERCH_ENOMEM;
			e = agent_manifest_issue_add(errs, "(input)", "line %d column %d: %s",
			                             jerr.line, jerr.column, jerr.text);
			return e == PERCH_OK ? PERCH_ECONFIG : e;
		}
		if (!depth_ok(root, 1)) {
			json_decref(root);
			e = agent_manifest_issue_add(errs, "(input)",
			                             "nested deeper than %d levels",
			                             AGENT_MANIFEST_MAX_DEPTH);
			return e == PERCH_OK ? PERCH_ECONFIG : e;
		}
	} else {
		char why[256];
		e = agent_manifest_yaml_to_json(data, len, &root, why, sizeof why);
		if (e == PERCH_EINVAL) {
			e = agent_manifest_issue_add(errs, "(input)", "%s", why);
			return e == PERCH_OK ? PERCH_ECONFIG : e;
		}
		if (e != PERCH_OK)
			return e;
	}
	e = agent_manifest_from_json(root, policy, out, errs, warns);
	json_decref(root);
	return e;
}

perch_err agent_manifest_load_file(const char *path, const agent_policy *policy,
                                   agent_deployment *out, agent_manifest_issues *errs,
                                   agent_manifest_issues *warns)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	perch_err e;
	if (fd < 0) {
		int err = errno;
		e = agent_manifest_issue_add(errs, path, "cannot open: %s", strerror(err));
		return e == PERCH_OK ? perch_err_from_errno(err) : e;
	}
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		e = agent_manifest_issue_add(errs, path, "not a regular file");
		return e == PERCH_OK ? PERCH_EIO : e;
	}
	if ((unsigned long long)st.st_size > AGENT_MANIFEST_MAX_BYTES) {
		close(fd);
		e = agent_manifest_issue_add(errs, path, "larger than %u bytes",
		                             AGENT_MANIFEST_MAX_BYTES);
		return e == PERCH_OK ? PERCH_ETOOBIG : e;
	}
	size_t cap = (size_t)st.st_size + 1, len = 0;
	char *buf = perch_malloc(cap);
	if (buf == NULL) {
		close(fd);
		return PERCH_ENOMEM;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int err = errno;
			close(fd);
			perch_free(buf);
			e = agent_manifest_issue_add(errs, path, "cannot read: %s", strerror(err));
			return e == PERCH_OK ? PERCH_EIO : e;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len == cap) { /* the file grew while we read it: take what fits */
			break;
		}
	}
	close(fd);
	e = agent_manifest_parse(buf, len, policy, out, errs, warns);
	perch_free(buf);
	return e;
}

/* --- output and cleanup ----------------------------------------------------- */

static json_t *module_json(const agent_module *m)
{
	json_t *o = json_object(), *env = json_object();
	bool ok = o != NULL && env != NULL;
	for (size_t i = 0; ok && i < m->n_env; i++)
		ok = json_object_set_new(env, m->env[i].name, json_string(m->env[i].value)) == 0;
	ok = ok && json_object_set_new(o, "version", json_string(m->version)) == 0 &&
	     json_object_set_new(o, "type", json_string("docker")) == 0 &&
	     json_object_set_new(o, "status", json_string(agent_module_status_name(m->status))) ==
	             0 &&
	     json_object_set_new(o, "restartPolicy",
	                         json_string(agent_restart_policy_name(m->restart_policy))) == 0 &&
	     json_object_set_new(o, "imagePullPolicy",
	                         json_string(agent_pull_policy_name(m->pull_policy))) == 0 &&
	     json_object_set_new(o, "startupOrder", json_integer(m->startup_order)) == 0 &&
	     json_object_set_new(o, "image", json_string(m->image)) == 0 &&
	     json_object_set(o, "createOptions", m->create_options) == 0 &&
	     json_object_set(o, "env", env) == 0 &&
	     json_object_set_new(o, "settingsHash", json_string(m->settings_hash)) == 0;
	json_decref(env);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

json_t *agent_deployment_to_json(const agent_deployment *d)
{
	json_t *o = json_object(), *regs = json_object(), *mods = json_object();
	bool ok = o != NULL && regs != NULL && mods != NULL;
	for (size_t i = 0; ok && i < d->n_registries; i++) {
		const agent_registry_credential *r = &d->registries[i];
		json_t *x = json_pack("{s:s?, s:s?}", "username", r->username, "address",
		                      r->address); /* never the password */
		ok = x != NULL && json_object_set_new(regs, r->name, x) == 0;
	}
	for (size_t i = 0; ok && i < d->n_modules; i++)
		ok = json_object_set_new(mods, d->modules[i].name, module_json(&d->modules[i])) ==
		     0;
	json_t *rt =
	        ok ? json_pack("{s:s?, s:O?, s:O}", "minDockerVersion", d->min_docker_version,
	                       "loggingOptions", d->logging_options, "registryCredentials", regs)
	           : NULL;
	ok = ok && rt != NULL && json_object_set_new(o, "runtime", rt) == 0 &&
	     json_object_set_new(o, "schemaVersion", json_string(d->schema_version)) == 0 &&
	     json_object_set(o, "modules", mods) == 0 &&
	     json_object_set_new(o, "edgeHub",
	                         json_pack("{s:b, s:s?}", "present", d->edge_hub.present, "image",
	                                   d->edge_hub.image)) == 0 &&
	     json_object_set(o, "routes", d->routes) == 0 &&
	     json_object_set_new(o, "storeAndForwardConfiguration",
	                         d->store_and_forward != NULL ? json_incref(d->store_and_forward)
	                                                      : json_null()) == 0 &&
	     json_object_set(o, "twins", d->twins) == 0;
	json_decref(regs);
	json_decref(mods);
	if (!ok) {
		json_decref(o);
		return NULL;
	}
	return o;
}

const agent_module *agent_deployment_find(const agent_deployment *d, const char *name)
{
	for (size_t i = 0; i < d->n_modules; i++)
		if (d->modules[i].name != NULL && strcmp(d->modules[i].name, name) == 0)
			return &d->modules[i];
	return NULL;
}

static void module_free(agent_module *m)
{
	perch_free(m->name);
	perch_free(m->version);
	perch_free(m->image);
	json_decref(m->create_options);
	for (size_t i = 0; i < m->n_env; i++) {
		perch_free(m->env[i].name);
		perch_free(m->env[i].value);
	}
	perch_free(m->env);
}

void agent_deployment_free(agent_deployment *d)
{
	if (d == NULL)
		return;
	for (size_t i = 0; i < d->n_modules; i++)
		module_free(&d->modules[i]);
	perch_free(d->modules);
	for (size_t i = 0; i < d->n_registries; i++) {
		agent_registry_credential *r = &d->registries[i];
		perch_free(r->name);
		perch_free(r->username);
		if (r->password != NULL) /* wipe the secret before the block is reused */
			memset(r->password, 0, strlen(r->password));
		perch_free(r->password);
		perch_free(r->address);
	}
	perch_free(d->registries);
	perch_free(d->schema_version);
	perch_free(d->min_docker_version);
	perch_free(d->hub_schema_version);
	perch_free(d->edge_agent.image);
	perch_free(d->edge_hub.image);
	json_decref(d->logging_options);
	json_decref(d->routes);
	json_decref(d->store_and_forward);
	json_decref(d->twins);
	memset(d, 0, sizeof *d);
}

void agent_manifest_init(void)
{
	json_set_alloc_funcs(perch_malloc, perch_free);
}
