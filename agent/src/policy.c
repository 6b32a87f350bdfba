/*
 * policy.c — checks a module's Docker createOptions against the local
 * policy, and reads that policy from the agent's configuration.
 *
 * The check looks only at what can give a container power over the host
 * (policy.h lists it), under HostConfig. Docker decodes createOptions with
 * Go's encoding/json, which matches keys case-insensitively, so every key
 * here is matched the same way and every spelling present is checked: a
 * manifest cannot slip "privileged" past a check for "Privileged".
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "perch/alloc.h"
#include "policy.h"

#define PPATH_CAP 512

static const agent_policy default_policy; /* all refused */

struct pcheck {
	const agent_policy *pol;
	agent_manifest_issues *errs;
	bool refused;
	bool oom;
};

__attribute__((format(printf, 4, 5))) static void refuse(struct pcheck *c, const char *path,
                                                         const char *key, const char *fmt, ...)
{
	char what[256] = "";
	if (fmt != NULL) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(what, sizeof what, fmt, ap);
		va_end(ap);
	}
	c->refused = true;
	if (agent_manifest_issue_add(c->errs, path, "%s%srefused by local policy (agent.policy.%s)",
	                             what, what[0] ? " " : "", key) != PERCH_OK)
		c->oom = true;
}

static void cut(char *dst, size_t cap, int n)
{
	if ((n < 0 || (size_t)n >= cap) && cap > 4)
		memcpy(dst + cap - 4, "...", 4); /* cut: say so */
}

static void pjoin(char *dst, size_t cap, const char *parent, const char *key)
{
	cut(dst, cap, snprintf(dst, cap, "%s.%s", parent, key));
}

static void pindex(char *dst, size_t cap, const char *parent, size_t i)
{
	cut(dst, cap, snprintf(dst, cap, "%s[%zu]", parent, i));
}

/* A value Docker would read as "something set": not null, false, "", 0, [] or {}. */
static bool is_set(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_NULL:
	case JSON_FALSE: return false;
	case JSON_STRING: return json_string_length(v) > 0;
	case JSON_ARRAY: return json_array_size(v) > 0;
	case JSON_OBJECT: return json_object_size(v) > 0;
	case JSON_INTEGER: return json_integer_value(v) != 0;
	default: return true;
	}
}

/* --- namespaces --------------------------------------------------------------- */

static void check_mode(struct pcheck *c, const char *path, const json_t *v, bool allow_host,
                       const char *host_key)
{
	if (!json_is_string(v))
		return; /* Docker refuses the container itself */
	const char *s = json_string_value(v);
	if (strcasecmp(s, "host") == 0 && !allow_host)
		refuse(c, path, host_key, "\"%s\"", s);
	else if (strncasecmp(s, "container:", 10) == 0 && !c->pol->allow_shared_namespaces)
		refuse(c, path, "allow_shared_namespaces", "\"%.64s\"", s);
}

/* --- capabilities and devices ------------------------------------------------ */

/* Upper-cases a capability name and drops a "CAP_" prefix, as Docker does. */
static void cap_normalise(const char *in, char *out, size_t cap)
{
	if (strncasecmp(in, "CAP_", 4) == 0)
		in += 4;
	size_t i = 0;
	for (; in[i] != '\0' && i + 1 < cap; i++)
		out[i] = (char)toupper((unsigned char)in[i]);
	out[i] = '\0';
}

static bool listed(char *const *list, size_t n, const char *s)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(list[i], s) == 0)
			return true;
	return false;
}

static void check_cap(struct pcheck *c, const char *path, const json_t *v)
{
	char norm[64];
	if (!json_is_string(v))
		return;
	cap_normalise(json_string_value(v), norm, sizeof norm);
	if (!listed(c->pol->cap_add, c->pol->n_cap_add, norm))
		refuse(c, path, "cap_add", "capability %s", norm);
}

static void check_caps(struct pcheck *c, const char *path, const json_t *v)
{
	if (json_is_string(v)) { /* Docker's StrSlice takes one string too */
		check_cap(c, path, v);
		return;
	}
	size_t i;
	const json_t *x;
	char p[PPATH_CAP];
	json_array_foreach(v, i, x)
	{
		pindex(p, sizeof p, path, i);
		check_cap(c, p, x);
	}
}

static const json_t *get_ci(const json_t *obj, const char *key, const char **spelled)
{
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)obj, k, v)
	{
		if (strcasecmp(k, key) == 0) {
			*spelled = k;
			return v;
		}
	}
	return NULL;
}

static void check_devices(struct pcheck *c, const char *path, const json_t *v)
{
	size_t i;
	const json_t *x;
	char p[PPATH_CAP], pp[PPATH_CAP];
	json_array_foreach(v, i, x)
	{
		pindex(p, sizeof p, path, i);
		if (!json_is_object(x))
			continue;
		const char *spelled = NULL;
		const json_t *host = get_ci(x, "PathOnHost", &spelled);
		if (host == NULL || !json_is_string(host)) {
			refuse(c, p, "devices", "a device without PathOnHost");
			continue;
		}
		pjoin(pp, sizeof pp, p, spelled);
		if (!listed(c->pol->devices, c->pol->n_devices, json_string_value(host)))
			refuse(c, pp, "devices", "device %.200s", json_string_value(host));
	}
}

/* --- bind sources ------------------------------------------------------------- */

/* True when the host path src lies under one of the allowed prefixes, by
 * whole path components. Relative paths and ".." are never allowed. */
static bool bind_allowed(const agent_policy *pol, const char *src)
{
	if (src[0] != '/')
		return false;
	for (const char *s = src; (s = strstr(s, "..")) != NULL; s += 2) {
		bool start = s == src || s[-1] == '/';
		bool end = s[2] == '\0' || s[2] == '/';
		if (start && end)
			return false;
	}
	for (size_t i = 0; i < pol->n_bind_sources; i++) {
		const char *pre = pol->bind_sources[i];
		size_t n = strlen(pre);
		while (n > 1 && pre[n - 1] == '/')
			n--; /* "/data/" means "/data" */
		if (n == 1 && pre[0] == '/')
			return true;
		if (strncmp(src, pre, n) == 0 && (src[n] == '\0' || src[n] == '/'))
			return true;
	}
	return false;
}

static void check_source(struct pcheck *c, const char *path, const char *src)
{
	if (!bind_allowed(c->pol, src))
		refuse(c, path, "bind_sources", "host path %.200s", src);
}

/* A Binds source that is a named volume (Docker's volume name rules) is no
 * host path. */
static bool volume_name(const char *s, size_t n)
{
	if (n == 0 || !isalnum((unsigned char)s[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '_' && s[i] != '.' && s[i] != '-')
			return false;
	return true;
}

static void check_binds(struct pcheck *c, const char *path, const json_t *v)
{
	size_t i;
	const json_t *x;
	char p[PPATH_CAP];
	json_array_foreach(v, i, x)
	{
		pindex(p, sizeof p, path, i);
		if (!json_is_string(x))
			continue;
		const char *s = json_string_value(x);
		const char *colon = strchr(s, ':');
		if (colon == NULL)
			continue; /* "/data" alone: an anonymous volume */
		size_t n = (size_t)(colon - s);
		if (volume_name(s, n))
			continue;
		char src[PPATH_CAP];
		snprintf(src, sizeof src, "%.*s", (int)(n < sizeof src ? n : sizeof src - 1), s);
		check_source(c, p, src);
	}
}

static void check_mounts(struct pcheck *c, const char *path, const json_t *v)
{
	size_t i;
	const json_t *x;
	char p[PPATH_CAP], fp[PPATH_CAP];
	json_array_foreach(v, i, x)
	{
		pindex(p, sizeof p, path, i);
		if (!json_is_object(x))
			continue;
		const char *spelled = "Type";
		const json_t *type = get_ci(x, "Type", &spelled);
		const char *t = json_is_string(type) ? json_string_value(type) : "";
		pjoin(fp, sizeof fp, p, spelled);
		if (strcasecmp(t, "bind") == 0) {
			const json_t *src = get_ci(x, "Source", &spelled);
			pjoin(fp, sizeof fp, p, src != NULL ? spelled : "Source");
			check_source(c, fp, json_is_string(src) ? json_string_value(src) : "");
		} else if (strcasecmp(t, "volume") == 0) {
			/* The local driver binds a host path with o=bind,device=/path. */
			const json_t *vo = get_ci(x, "VolumeOptions", &spelled);
			const json_t *dc =
			        json_is_object(vo) ? get_ci(vo, "DriverConfig", &spelled) : NULL;
			const json_t *opts =
			        json_is_object(dc) ? get_ci(dc, "Options", &spelled) : NULL;
			const json_t *dev =
			        json_is_object(opts) ? json_object_get(opts, "device") : NULL;
			if (json_is_string(dev) && json_string_value(dev)[0] == '/') {
				pjoin(fp, sizeof fp, p,
				      "VolumeOptions.DriverConfig.Options.device");
				check_source(c, fp, json_string_value(dev));
			}
		} else if (strcasecmp(t, "tmpfs") != 0) {
			refuse(c, fp, "bind_sources", "mount type \"%.32s\"", t);
		}
	}
}

/* --- security options ----------------------------------------------------------- */

static void check_security_opt(struct pcheck *c, const char *path, const json_t *v)
{
	size_t i;
	const json_t *x;
	char p[PPATH_CAP];
	json_array_foreach(v, i, x)
	{
		if (!json_is_string(x))
			continue;
		const char *s = json_string_value(x);
		char lower[128];
		size_t j = 0;
		for (; s[j] != '\0' && j + 1 < sizeof lower; j++)
			lower[j] = (char)tolower((unsigned char)s[j]);
		lower[j] = '\0';
		if (strstr(lower, "unconfined") != NULL || strcmp(lower, "label=disable") == 0 ||
		    strcmp(lower, "label:disable") == 0) {
			pindex(p, sizeof p, path, i);
			refuse(c, p, "allow_unconfined", "\"%.64s\"", s);
		}
	}
}

/* --- HostConfig ------------------------------------------------------------------- */

static void check_host_config(struct pcheck *c, const char *hpath, const json_t *hc)
{
	const agent_policy *pol = c->pol;
	const char *k;
	const json_t *v;
	char p[PPATH_CAP];
	json_object_foreach((json_t *)hc, k, v)
	{
		pjoin(p, sizeof p, hpath, k);
		if (strcasecmp(k, "Privileged") == 0) {
			if (is_set(v) && !pol->allow_privileged)
				refuse(c, p, "allow_privileged", NULL);
		} else if (strcasecmp(k, "CapAdd") == 0) {
			check_caps(c, p, v);
		} else if (strcasecmp(k, "NetworkMode") == 0) {
			check_mode(c, p, v, pol->allow_host_network, "allow_host_network");
		} else if (strcasecmp(k, "PidMode") == 0) {
			check_mode(c, p, v, pol->allow_host_pid, "allow_host_pid");
		} else if (strcasecmp(k, "IpcMode") == 0) {
			check_mode(c, p, v, pol->allow_host_ipc, "allow_host_ipc");
		} else if (strcasecmp(k, "UsernsMode") == 0) {
			check_mode(c, p, v, pol->allow_host_userns, "allow_host_userns");
		} else if (strcasecmp(k, "UTSMode") == 0) {
			check_mode(c, p, v, pol->allow_host_uts, "allow_host_uts");
		} else if (strcasecmp(k, "CgroupnsMode") == 0) {
			check_mode(c, p, v, pol->allow_host_cgroupns, "allow_host_cgroupns");
		} else if (strcasecmp(k, "Devices") == 0) {
			check_devices(c, p, v);
		} else if (strcasecmp(k, "DeviceCgroupRules") == 0) {
			if (is_set(v) && !pol->allow_device_cgroup_rules)
				refuse(c, p, "allow_device_cgroup_rules", NULL);
		} else if (strcasecmp(k, "DeviceRequests") == 0) {
			if (is_set(v) && !pol->allow_device_requests)
				refuse(c, p, "allow_device_requests", NULL);
		} else if (strcasecmp(k, "Binds") == 0) {
			check_binds(c, p, v);
		} else if (strcasecmp(k, "Mounts") == 0) {
			check_mounts(c, p, v);
		} else if (strcasecmp(k, "VolumesFrom") == 0) {
			if (is_set(v) && !pol->allow_volumes_from)
				refuse(c, p, "allow_volumes_from", NULL);
		} else if (strcasecmp(k, "SecurityOpt") == 0) {
			if (!pol->allow_unconfined)
				check_security_opt(c, p, v);
		} else if (strcasecmp(k, "CgroupParent") == 0) {
			if (is_set(v) && !pol->allow_cgroup_parent)
				refuse(c, p, "allow_cgroup_parent", NULL);
		}
	}
}

perch_err agent_policy_check(const agent_policy *policy, const char *module,
                             const json_t *create_options, agent_manifest_issues *errs)
{
	struct pcheck c = {policy != NULL ? policy : &default_policy, errs, false, false};
	char base[PPATH_CAP], p[PPATH_CAP];
	cut(base, sizeof base,
	    snprintf(base, sizeof base, "modules.%s.settings.createOptions", module));
	if (!json_is_object(create_options))
		return PERCH_OK;
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)create_options, k, v)
	{
		if (strcasecmp(k, "HostConfig") != 0 || !json_is_object(v))
			continue;
		pjoin(p, sizeof p, base, k);
		check_host_config(&c, p, v);
	}
	if (c.oom)
		return PERCH_ENOMEM;
	return c.refused ? PERCH_EPERM : PERCH_OK;
}

/* --- reading a policy --------------------------------------------------------------- */

struct bool_key {
	const char *name;
	size_t offset;
};

#define B(f)                                                                                       \
	{                                                                                          \
#f, offsetof(agent_policy, f)                                                      \
	}
static const struct bool_key bool_keys[] = {
        B(allow_privileged),      B(allow_host_network),      B(allow_host_pid),
        B(allow_host_ipc),        B(allow_host_userns),       B(allow_host_uts),
        B(allow_host_cgroupns),   B(allow_shared_namespaces), B(allow_device_cgroup_rules),
        B(allow_device_requests), B(allow_volumes_from),      B(allow_unconfined),
        B(allow_cgroup_parent),
};
#undef B

static perch_err read_list(const json_t *v, const char *path, bool caps, char ***items, size_t *n,
                           agent_manifest_issues *errs, bool *bad)
{
	char p[PPATH_CAP];
	if (!json_is_array(v)) {
		*bad = true;
		return agent_manifest_issue_add(errs, path, "expected a list of strings");
	}
	if (json_array_size(v) > AGENT_POLICY_MAX_LIST) {
		*bad = true;
		return agent_manifest_issue_add(errs, path, "more than %d entries",
		                                AGENT_POLICY_MAX_LIST);
	}
	if (json_array_size(v) == 0)
		return PERCH_OK;
	*items = perch_calloc(json_array_size(v), sizeof **items);
	if (*items == NULL)
		return PERCH_ENOMEM;
	size_t i;
	const json_t *x;
	json_array_foreach(v, i, x)
	{
		pindex(p, sizeof p, path, i);
		if (!json_is_string(x) || json_string_length(x) == 0) {
			*bad = true;
			perch_err e =
			        agent_manifest_issue_add(errs, p, "expected a non-empty string");
			if (e != PERCH_OK)
				return e;
			continue;
		}
		const char *s = json_string_value(x);
		if (!caps && s[0] != '/') {
			*bad = true;
			perch_err e =
			        agent_manifest_issue_add(errs, p, "expected an absolute path");
			if (e != PERCH_OK)
				return e;
			continue;
		}
		char norm[64];
		if (caps)
			cap_normalise(s, norm, sizeof norm);
		char *copy = perch_strdup(caps ? norm : s);
		if (copy == NULL)
			return PERCH_ENOMEM;
		(*items)[(*n)++] = copy;
	}
	return PERCH_OK;
}

perch_err agent_policy_from_json(const json_t *obj, agent_policy *out, agent_manifest_issues *errs)
{
	agent_policy p = {0};
	perch_err e = PERCH_OK;
	bool bad = false;
	char path[PPATH_CAP];
	if (!json_is_object(obj)) {
		e = agent_manifest_issue_add(errs, "agent.policy", "expected an object");
		return e == PERCH_OK ? PERCH_ECONFIG : e;
	}
	const char *k;
	const json_t *v;
	json_object_foreach((json_t *)obj, k, v)
	{
		cut(path, sizeof path, snprintf(path, sizeof path, "agent.policy.%s", k));
		size_t i = 0, nb = sizeof bool_keys / sizeof bool_keys[0];
		while (i < nb && strcmp(bool_keys[i].name, k) != 0)
			i++;
		if (i < nb) {
			if (json_is_boolean(v)) {
				*(bool *)((char *)&p + bool_keys[i].offset) = json_is_true(v);
			} else {
				bad = true;
				e = agent_manifest_issue_add(errs, path, "expected true or false");
			}
		} else if (strcmp(k, "cap_add") == 0) {
			e = read_list(v, path, true, &p.cap_add, &p.n_cap_add, errs, &bad);
		} else if (strcmp(k, "devices") == 0) {
			e = read_list(v, path, false, &p.devices, &p.n_devices, errs, &bad);
		} else if (strcmp(k, "bind_sources") == 0) {
			e = read_list(v, path, false, &p.bind_sources, &p.n_bind_sources, errs,
			              &bad);
		} else {
			bad = true;
			e = agent_manifest_issue_add(errs, path, "unknown policy key");
		}
		if (e != PERCH_OK)
			break;
	}
	if (e == PERCH_OK && bad)
		e = PERCH_ECONFIG;
	if (e != PERCH_OK) {
		agent_policy_free(&p);
		return e;
	}
	*out = p;
	return PERCH_OK;
}

static void free_list(char **items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		perch_free(items[i]);
	perch_free(items);
}

void agent_policy_free(agent_policy *p)
{
	if (p == NULL)
		return;
	free_list(p->cap_add, p->n_cap_add);
	free_list(p->devices, p->n_devices);
	free_list(p->bind_sources, p->n_bind_sources);
	memset(p, 0, sizeof *p);
}
