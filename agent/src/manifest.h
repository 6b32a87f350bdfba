/*
 * manifest.h — the IoT Edge deployment manifest, read into what the agent's
 * reconciler needs.
 *
 * A manifest is the document IoT Edge users already have (deployment.json):
 * `modulesContent.$edgeAgent["properties.desired"]` (schemaVersion, runtime
 * settings and registry credentials, systemModules, modules),
 * `modulesContent.$edgeHub["properties.desired"]` (routes, store and forward)
 * and the desired properties of module twins. It is accepted as JSON or as
 * the same structure in YAML, in its full form `{"modulesContent": {...}}`,
 * bare (the modulesContent object itself) or wrapped as `{"content":
 * {"modulesContent": ...}}` (the shape `az iot edge deployment` uses).
 *
 * Reading never stops at the first problem: every error is collected with
 * its JSON path ("modulesContent.$edgeAgent.properties.desired.modules.
 * filter.settings.image: missing") and the manifest is refused as a whole.
 * What Perch safely ignores (fields it does not use, systemModules settings
 * that do not apply to perch-hub) is reported as a warning, with its path.
 * createOptions, which is untrusted, is checked against the local policy
 * (policy.h) while reading.
 *
 * Each module gets a settings hash: hex SHA-256 over a canonical JSON of
 * what the container is created from (see agent_module.settings_hash). The
 * reconciler labels containers with it; a different hash means recreate.
 *
 * jansson: call agent_manifest_init() once, before any other jansson use in
 * the process, so that jansson allocates through perch_malloc (counted,
 * limited, fault-injectable). From then on, text that jansson returns
 * (json_dumps) is freed with perch_free, never free().
 *
 * Not thread-safe per object; the agent's main thread parses and owns the
 * deployment. Different deployments may be parsed on different threads.
 */
#ifndef AGENT_MANIFEST_H
#define AGENT_MANIFEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "perch/err.h"

struct agent_policy; /* policy.h */

#define AGENT_MANIFEST_MAX_BYTES          524288u /* manifest text (512 KiB), JSON or YAML */
#define AGENT_MANIFEST_MAX_DEPTH          32      /* nesting of objects and arrays */
#define AGENT_MANIFEST_MAX_NODES          65536   /* YAML nodes in one manifest */
#define AGENT_MANIFEST_MAX_ISSUES         64      /* errors (or warnings) kept per list */
#define AGENT_MANIFEST_MAX_MODULES        64      /* modules in one deployment */
#define AGENT_MANIFEST_MAX_ENV            256     /* env variables per module */
#define AGENT_MANIFEST_MAX_NAME           64      /* module name, bytes */
#define AGENT_MANIFEST_MAX_CREATE_OPTIONS 65536u  /* createOptions text after joining (64 KiB) */
#define AGENT_MANIFEST_MAX_PIECES         99      /* createOptions01..createOptions99 */
#define AGENT_MANIFEST_DEFAULT_ORDER      4294967295u /* startupOrder when absent (IoT Edge) */
#define AGENT_MANIFEST_HASH_HEX           65          /* 64 hex digits and a NUL */

/* A bounded list of problems, each one line "path: reason" (owned). Zero it
 * before first use; free with agent_manifest_issues_free. */
typedef struct agent_manifest_issues {
	char *msg[AGENT_MANIFEST_MAX_ISSUES];
	size_t n;       /* messages kept, <= AGENT_MANIFEST_MAX_ISSUES */
	size_t dropped; /* problems beyond the cap (or whose text could not be allocated) */
} agent_manifest_issues;

typedef enum agent_module_status {
	AGENT_STATUS_RUNNING = 0, /* default */
	AGENT_STATUS_STOPPED,
} agent_module_status;

typedef enum agent_restart_policy {
	AGENT_RESTART_NEVER = 0,
	AGENT_RESTART_ON_FAILURE,
	AGENT_RESTART_ON_UNHEALTHY,
	AGENT_RESTART_ALWAYS, /* default */
} agent_restart_policy;

typedef enum agent_pull_policy {
	AGENT_PULL_ON_CREATE = 0, /* default: pull when the container is (re)created */
	AGENT_PULL_NEVER,         /* the image must already be on the device */
} agent_pull_policy;

typedef struct agent_env_var {
	char *name;  /* non-empty, no '=' */
	char *value; /* the manifest's value as text (numbers and booleans spelled as JSON) */
} agent_env_var;

typedef struct agent_registry_credential {
	char *name;     /* the key under registryCredentials */
	char *username; /* all three present and non-empty */
	char *password; /* secret: never logged, never in a dump or a hash */
	char *address;  /* "host[:port]" as written */
} agent_registry_credential;

typedef struct agent_module {
	char *name;             /* [A-Za-z0-9][A-Za-z0-9_.-]*, <= MAX_NAME bytes */
	char *version;          /* "" when absent */
	char *image;            /* settings.image, non-empty */
	json_t *create_options; /* object (owned reference); {} when absent or "" */
	agent_env_var *env;     /* n_env variables, sorted by name */
	size_t n_env;
	agent_module_status status;          /* default running */
	agent_restart_policy restart_policy; /* default always */
	agent_pull_policy pull_policy;       /* default on-create */
	uint32_t startup_order;              /* default AGENT_MANIFEST_DEFAULT_ORDER */
	/* Hex SHA-256 of "perch-settings-v1\n" followed by the compact, key-sorted
	 * JSON {"createOptions","env","image","loggingOptions","version"}: what
	 * the container is created from. Status, restartPolicy, imagePullPolicy,
	 * startupOrder and registry credentials are not in it (changing them
	 * never recreates a container). */
	char settings_hash[AGENT_MANIFEST_HASH_HEX];
} agent_module;

/* systemModules.edgeAgent / edgeHub as read. Perch runs itself and its own
 * perch-hub, so only `present` and `status` matter; the rest is kept for
 * reports and each field that does not apply is listed as a warning. */
typedef struct agent_system_module {
	bool present;
	char *image;                /* as written; not used (NULL when absent) */
	agent_module_status status; /* edgeHub: stopped is refused (use --no-hub) */
} agent_system_module;

typedef struct agent_deployment {
	char *schema_version;     /* $edgeAgent schemaVersion: "1.0" or "1.1" */
	char *min_docker_version; /* runtime.settings.minDockerVersion, or NULL */
	json_t *logging_options;  /* runtime.settings.loggingOptions as a Docker LogConfig object
	                             (owned), or NULL: the agent's bounded default applies */
	agent_registry_credential *registries; /* n_registries, sorted by name */
	size_t n_registries;
	agent_module *modules; /* n_modules, sorted by startup_order then name */
	size_t n_modules;
	agent_system_module edge_agent;
	agent_system_module edge_hub;
	char *hub_schema_version;  /* $edgeHub schemaVersion: "1.0" or "1.1" */
	json_t *routes;            /* $edgeHub routes object (owned; {} when absent): name ->
	                               "FROM ... INTO ..." or {"route", "priority", "timeToLiveSecs"} */
	json_t *store_and_forward; /* $edgeHub storeAndForwardConfiguration object (owned) or NULL */
	json_t *twins;             /* object (owned): module name -> its desired properties */
} agent_deployment;

/*
 * agent_manifest_init routes jansson's allocations through perch_malloc and
 * perch_free (json_set_alloc_funcs), so that allocation counting, limits and
 * fault injection cover jansson too. Call it once at start-up, before any
 * jansson value exists (a value allocated before would be freed with the
 * wrong function). Idempotent. Main thread, before other threads start.
 */
void agent_manifest_init(void);

/*
 * agent_manifest_parse reads len bytes of manifest text (JSON when the first
 * non-blank character is '{' or '[', YAML otherwise) into out, which the
 * caller zeroes first. policy (borrowed) checks every module's createOptions;
 * NULL means the default policy, which refuses everything privileged.
 * Every error is appended to errs, every warning to warns (zeroed by the
 * caller, freed with agent_manifest_issues_free; warns may be NULL).
 * Returns PERCH_OK (out filled; free it with agent_deployment_free),
 * PERCH_ECONFIG (errors listed; out left zeroed), PERCH_ETOOBIG (more than
 * AGENT_MANIFEST_MAX_BYTES; also listed) or PERCH_ENOMEM (out left zeroed).
 */
PERCH_MUST_USE perch_err agent_manifest_parse(const char *data, size_t len,
                                              const struct agent_policy *policy,
                                              agent_deployment *out, agent_manifest_issues *errs,
                                              agent_manifest_issues *warns);

/*
 * agent_manifest_from_json is agent_manifest_parse for a document already
 * decoded (root is borrowed; nothing of it is kept: what out holds are deep
 * copies). Same results and errors, except PERCH_ETOOBIG.
 */
PERCH_MUST_USE perch_err agent_manifest_from_json(const json_t *root,
                                                  const struct agent_policy *policy,
                                                  agent_deployment *out,
                                                  agent_manifest_issues *errs,
                                                  agent_manifest_issues *warns);

/*
 * agent_manifest_load_file reads the file at path and parses it like
 * agent_manifest_parse. Also returns PERCH_ENOENT, PERCH_EPERM or PERCH_EIO
 * when the file cannot be read (the reason is in errs).
 */
PERCH_MUST_USE perch_err agent_manifest_load_file(const char *path,
                                                  const struct agent_policy *policy,
                                                  agent_deployment *out,
                                                  agent_manifest_issues *errs,
                                                  agent_manifest_issues *warns);

/*
 * agent_manifest_yaml_to_json converts YAML text to a jansson value (*out: a
 * new reference). Scalars: quoted, block and !!str scalars stay strings;
 * plain ones follow the YAML 1.2 core schema (null, ~ and empty -> null;
 * true/false -> booleans; decimal integers and floats -> numbers; anything
 * else -> string). Refused: aliases and anchors, tags other than the
 * standard ones, more than one document, complex or duplicate keys, NUL
 * characters, .inf/.nan, integers beyond int64, nesting deeper than
 * AGENT_MANIFEST_MAX_DEPTH, more than AGENT_MANIFEST_MAX_NODES nodes.
 * Returns PERCH_OK, PERCH_EINVAL (err gets "line L column C: reason", at
 * most cap bytes), PERCH_ETOOBIG or PERCH_ENOMEM (*out stays NULL).
 */
PERCH_MUST_USE perch_err agent_manifest_yaml_to_json(const char *data, size_t len, json_t **out,
                                                     char *err, size_t cap);

/*
 * agent_module_settings_json returns a new reference to the canonical object
 * the settings hash of m covers (loggingOptions borrowed from d), or NULL
 * when memory is refused. For diagnostics and tests.
 */
json_t *agent_module_settings_json(const agent_deployment *d, const agent_module *m);

/*
 * agent_deployment_to_json returns a new reference to a summary of d for
 * status output and logs: runtime settings, modules with their effective
 * values and hashes, routes and twins. Registry passwords are left out.
 * NULL when memory is refused.
 */
json_t *agent_deployment_to_json(const agent_deployment *d);

/* agent_deployment_find returns the module named name, or NULL (borrowed). */
const agent_module *agent_deployment_find(const agent_deployment *d, const char *name);

/* agent_deployment_free frees everything d owns and zeroes it. Safe on a
 * zeroed or half-built deployment, and twice. */
void agent_deployment_free(agent_deployment *d);

/* agent_manifest_issue_add appends "path: reason" to list (reason from fmt).
 * When the list is full, or the text cannot be allocated, the problem is
 * only counted in dropped; the latter returns PERCH_ENOMEM. */
__attribute__((format(printf, 3, 4))) PERCH_MUST_USE perch_err
agent_manifest_issue_add(agent_manifest_issues *list, const char *path, const char *fmt, ...);

/* agent_manifest_issues_free frees the messages and zeroes list. */
void agent_manifest_issues_free(agent_manifest_issues *list);

/* Names as the manifest spells them ("running", "on-failure", "on-create"). */
const char *agent_module_status_name(agent_module_status s);
const char *agent_restart_policy_name(agent_restart_policy p);
const char *agent_pull_policy_name(agent_pull_policy p);

#endif /* AGENT_MANIFEST_H */
