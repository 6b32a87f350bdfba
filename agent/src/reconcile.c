/*
 * reconcile.c — make Docker look like the deployment, and keep it so.
 *
 * Level-triggered: agent_reconcile reads the owned containers (list by the
 * perch.owner label, inspect each) and acts on the difference, in
 * startupOrder: remove owned containers of modules no longer deployed;
 * recreate a container whose perch.hash differs; pull (asynchronously) an
 * absent image; create and start a missing container; restart an exited
 * one as its restartPolicy says, with backoff (restart.c); stop a module
 * whose status is stopped. It runs when an event says something changed
 * (die, health, destroy, the events stream (re)connecting), when a
 * deployment is applied, when a backoff or pull retry is due, and every
 * 10 s as a safety net. Containers without perch.owner=perch-agent are never
 * touched.
 *
 * Stops are graceful: a container that is replaced (settings changed), dropped
 * from the deployment or set to status: stopped gets POST /stop (SIGTERM, then
 * SIGKILL after agent.stop_grace_ms), asynchronously, so a module that takes
 * its time to flush never delays the others; it is removed (or recreated)
 * once it has exited.
 *
 * Crash points (a test hook): with PERCH_AGENT_CRASHPOINT=NAME in its
 * environment the agent kills itself with SIGKILL at that step, so tests can
 * check it converges after a crash at exactly that moment: "pulled" (image
 * pulled, container not created), "created" (created, not started),
 * "old-stopped" (the replaced container stopped, not removed), "old-removed"
 * (removed, the new one not created).
 *
 * Deployments: a manifest text that parses becomes the applied deployment
 * and is stored (state.c); one that does not is refused as a whole, each
 * error logged with its JSON path, and the applied one stays. An applied
 * deployment also gives each new module a generation id (state.c), a
 * workload socket (workload.c), and is written to the hub deployment file
 * (identity.c). Every container gets its module's identity: the IOTEDGE_*
 * variables and its workload socket directory, bind-mounted (no key).
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <mbedtls/sha256.h>

#include "agent.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define RESYNC_MS 10000 /* safety-net reconcile period */
/* A module whose container exited after the events stream was lost (or
 * shortly before: dockerd closes its API, then stops the containers, but
 * clocks and ordering are loose) went down with the engine: when the engine
 * is back it is started again whatever its restart policy says (a daemon
 * shutdown stops containers with SIGTERM, so they exit 0 or 143, which
 * on-failure would otherwise leave stopped). */
#define ENGINE_DOWN_WINDOW_MS 10000
#define PULL_TIMEOUTMS        600000

typedef struct pull_ctx {
	agent *a;
	char name[AGENT_MANIFEST_MAX_NAME + 1];
	char image[512];
} pull_ctx;

__attribute__((format(printf, 3, 4))) static void set_desc(agent_mod *m, agent_runtime rt,
                                                           const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(m->desc, sizeof m->desc, fmt, ap);
	va_end(ap);
	perch_log_redact(m->desc, sizeof m->desc);
	m->rt = rt;
}

/* crashpoint: the test hook described above. */
static void crashpoint(const char *name)
{
	const char *want = getenv("PERCH_AGENT_CRASHPOINT");
	if (want == NULL || strcmp(want, name) != 0)
		return;
	PERCH_WARN("agent", "crash point %s: killing myself (PERCH_AGENT_CRASHPOINT)", name);
	raise(SIGKILL);
}

agent_mod *agent_mod_find(agent *a, const char *name)
{
	for (size_t i = 0; i < a->n_mods; i++)
		if (strcmp(a->mods[i].name, name) == 0)
			return &a->mods[i];
	return NULL;
}

static void cancel_start(agent *a, agent_mod *m)
{
	if (m->start_op != NULL)
		agent_docker_cancel(a->docker, m->start_op);
	perch_free(m->start_ctx);
	m->start_op = NULL;
	m->start_ctx = NULL;
	m->starting = false;
}

static void cancel_pull(agent *a, agent_mod *m)
{
	if (m->pull_op != NULL)
		agent_docker_cancel(a->docker, m->pull_op);
	perch_free(m->pull_ctx);
	m->pull_op = NULL;
	m->pull_ctx = NULL;
	m->pulling = false;
}

void agent_mods_free(agent *a)
{
	for (size_t i = 0; i < a->n_mods; i++) {
		cancel_pull(a, &a->mods[i]);
		cancel_start(a, &a->mods[i]);
	}
	perch_free(a->mods);
	a->mods = NULL;
	a->n_mods = 0;
}

/* ---- images and registries --------------------------------------------------- */

/* split_ref cuts "host:5000/a/b:tag" into name and tag ("latest" when none;
 * a digest after '@' is the tag). */
static void split_ref(const char *ref, char *name, size_t ncap, char *tag, size_t tcap)
{
	const char *at = strchr(ref, '@');
	const char *slash = strrchr(ref, '/');
	const char *colon = strrchr(ref, ':');
	const char *cut = NULL;
	if (at != NULL)
		cut = at;
	else if (colon != NULL && (slash == NULL || colon > slash))
		cut = colon;
	if (cut == NULL) {
		snprintf(name, ncap, "%s", ref);
		snprintf(tag, tcap, "latest");
		return;
	}
	snprintf(name, ncap, "%.*s", (int)(cut - ref), ref);
	snprintf(tag, tcap, "%s", cut + 1);
}

/* registry_of writes the registry host of an image reference. */
static void registry_of(const char *ref, char *host, size_t cap)
{
	const char *slash = strchr(ref, '/');
	if (slash != NULL) {
		size_t n = (size_t)(slash - ref);
		if (memchr(ref, '.', n) != NULL || memchr(ref, ':', n) != NULL ||
		    (n == 9 && strncmp(ref, "localhost", 9) == 0)) {
			snprintf(host, cap, "%.*s", (int)n, ref);
			return;
		}
	}
	snprintf(host, cap, "docker.io");
}

static bool same_registry(const char *address, const char *host)
{
	const char *p = strstr(address, "://");
	p = p != NULL ? p + 3 : address;
	size_t n = strcspn(p, "/");
	if (strlen(host) == n && strncmp(p, host, n) == 0)
		return true;
	if (strcmp(host, "docker.io") == 0)
		return (n == 15 && strncmp(p, "index.docker.io", n) == 0) ||
		       (n == 20 && strncmp(p, "registry-1.docker.io", n) == 0);
	return false;
}

static const agent_registry_credential *cred_for(const agent *a, const char *image)
{
	char host[256];
	registry_of(image, host, sizeof host);
	for (size_t i = 0; i < a->dep.n_registries; i++)
		if (same_registry(a->dep.registries[i].address, host))
			return &a->dep.registries[i];
	return NULL;
}

static void on_progress(void *ud, const agent_docker_progress *p)
{
	pull_ctx *c = ud;
	agent_mod *m = agent_mod_find(c->a, c->name);
	if (m == NULL)
		return;
	if (p->total > 0)
		set_desc(m, AGENT_RT_UNKNOWN, "pulling %s: %s %s %lld/%lld bytes", c->image,
		         p->layer, p->status, p->current, p->total);
	else
		set_desc(m, AGENT_RT_UNKNOWN, "pulling %s: %s %s", c->image, p->layer, p->status);
	int64_t now = agent_now_ms();
	if (now - m->progress_log_ms >= 2000) {
		m->progress_log_ms = now;
		PERCH_INFO("agent", "module %s: %s", m->name, m->desc);
	}
}

static void on_pulled(void *ud, perch_err err, const char *msg)
{
	pull_ctx *c = ud;
	agent *a = c->a;
	agent_mod *m = agent_mod_find(a, c->name);
	if (m != NULL && m->pull_ctx == c) {
		m->pulling = false;
		m->pull_op = NULL;
		m->pull_ctx = NULL;
		if (err == PERCH_OK) {
			m->pull_failures = 0;
			m->pull_retry_ms = 0;
			PERCH_NOTICE("agent", "module %s: pulled %s", m->name, c->image);
			crashpoint("pulled");
		} else {
			m->pull_failures++;
			int64_t delay = agent_restart_delay_ms(&a->backoff, m->pull_failures);
			m->pull_retry_ms = agent_now_ms() + delay;
			set_desc(m, AGENT_RT_BACKOFF,
			         "pull of %s failed (%s): %s; retrying in %.1f s", c->image,
			         perch_strerror(err), msg, (double)delay / 1000.0);
			PERCH_ERROR("agent", "module %s: %s", m->name, m->desc);
		}
		a->dirty = true;
	}
	perch_free(c);
}

static void start_pull(agent *a, agent_mod *m)
{
	const agent_module *d = m->m;
	char name[512], tag[256];
	split_ref(d->image, name, sizeof name, tag, sizeof tag);
	const agent_registry_credential *cred = cred_for(a, d->image);
	pull_ctx *c = perch_calloc(1, sizeof *c);
	if (c == NULL)
		return;
	c->a = a;
	snprintf(c->name, sizeof c->name, "%s", m->name);
	snprintf(c->image, sizeof c->image, "%s", d->image);
	agent_docker_auth auth = {0};
	if (cred != NULL)
		auth = (agent_docker_auth){cred->username, cred->password, cred->address};
	perch_err err =
	        agent_docker_pull_start(a->docker, name, tag, cred != NULL ? &auth : NULL,
	                                PULL_TIMEOUTMS, on_progress, on_pulled, c, &m->pull_op);
	if (err != PERCH_OK) {
		perch_free(c);
		set_desc(m, AGENT_RT_FAILED, "cannot start the pull of %s: %s", d->image,
		         perch_strerror(err));
		return;
	}
	m->pulling = true;
	m->pull_ctx = c;
	set_desc(m, AGENT_RT_UNKNOWN, "pulling %s", d->image);
	PERCH_NOTICE("agent", "module %s: pulling %s%s%s", m->name, d->image,
	             cred != NULL ? " with the credentials of registry " : " anonymously",
	             cred != NULL ? cred->name : "");
}

/* ---- containers -------------------------------------------------------------- */

static json_t *obj_member(json_t *parent, const char *key)
{
	json_t *o = json_object_get(parent, key);
	if (!json_is_object(o)) {
		o = json_object();
		json_object_set_new(parent, key, o);
	}
	return o;
}

static json_t *arr_member(json_t *parent, const char *key)
{
	json_t *o = json_object_get(parent, key);
	if (!json_is_array(o)) {
		o = json_array();
		json_object_set_new(parent, key, o);
	}
	return o;
}

static void env_add(json_t *env, const char *k, const char *v)
{
	char *s = NULL;
	if (asprintf(&s, "%s=%s", k, v) < 0)
		return;
	json_array_append_new(env, json_string(s));
	free(s);
}

/* create_body returns a new reference: the ContainerCreate JSON of m. */
static json_t *create_body(const agent *a, const agent_mod *m)
{
	const agent_module *d = m->m;
	json_t *b = json_deep_copy(d->create_options);
	if (!json_is_object(b)) {
		json_decref(b);
		b = json_object();
	}
	if (b == NULL)
		return NULL;
	json_object_set_new(b, "Image", json_string(d->image));
	json_t *env = arr_member(b, "Env");
	for (size_t i = 0; i < d->n_env; i++)
		env_add(env, d->env[i].name, d->env[i].value);
	char port[16];
	snprintf(port, sizeof port, "%d", (int)a->cfg.hub_port);
	/* What the Azure IoT SDKs' ModuleClient.fromEnvironment reads; no key:
	 * the module asks its workload socket to sign. */
	env_add(env, "IOTEDGE_WORKLOADURI", AGENT_WL_URI);
	env_add(env, "IOTEDGE_DEVICEID", a->device_id);
	env_add(env, "IOTEDGE_MODULEID", d->name);
	env_add(env, "IOTEDGE_MODULEGENERATIONID", m->genid);
	env_add(env, "IOTEDGE_IOTHUBHOSTNAME", a->cfg.device.iothub_hostname);
	env_add(env, "IOTEDGE_GATEWAYHOSTNAME", a->cfg.device.gateway_hostname);
	env_add(env, "IOTEDGE_AUTHSCHEME", "sasToken");
	env_add(env, "IOTEDGE_APIVERSION", AGENT_WL_API_VERSION);
	env_add(env, "PERCH_HUB_HOST", "perch-hub");
	env_add(env, "PERCH_HUB_PORT", port);
	json_t *labels = obj_member(b, "Labels");
	json_object_set_new(labels, AGENT_OWNER_LABEL, json_string(AGENT_OWNER_VALUE));
	json_object_set_new(labels, AGENT_MODULE_LABEL, json_string(d->name));
	json_object_set_new(labels, AGENT_HASH_LABEL, json_string(m->hash));
	json_object_set_new(labels, AGENT_INST_LABEL, json_string(a->cfg.instance));
	json_t *hc = obj_member(b, "HostConfig");
	/* The hub is on the host: by the name perch-hub, and by the gateway
	 * host name (the one in its TLS certificate). */
	json_t *hosts = arr_member(hc, "ExtraHosts");
	json_array_append_new(hosts, json_string("perch-hub:host-gateway"));
	if (strcmp(a->cfg.device.gateway_hostname, "perch-hub") != 0) {
		char gw[300];
		snprintf(gw, sizeof gw, "%s:host-gateway", a->cfg.device.gateway_hostname);
		json_array_append_new(hosts, json_string(gw));
	}
	/* The module's own workload socket directory (added after the policy
	 * check of createOptions: the agent's bind, not the manifest's). */
	char dir[AGENT_PATH_MAX], bind[AGENT_PATH_MAX + 64];
	if (agent_workload_dir(a, d->name, dir, sizeof dir) == PERCH_OK) {
		snprintf(bind, sizeof bind, "%s:%s:ro", dir, AGENT_WL_MOUNT);
		json_array_append_new(arr_member(hc, "Binds"), json_string(bind));
	}
	if (!json_is_object(json_object_get(hc, "LogConfig"))) {
		if (a->dep.logging_options != NULL) {
			json_object_set_new(hc, "LogConfig",
			                    json_deep_copy(a->dep.logging_options));
		} else {
			char files[16];
			snprintf(files, sizeof files, "%d", (int)a->cfg.log_max_file);
			json_object_set_new(hc, "LogConfig",
			                    json_pack("{s:s, s:{s:s, s:s}}", "Type", "json-file",
			                              "Config", "max-size", a->cfg.log_max_size,
			                              "max-file", files));
		}
	}
	/* The agent restarts modules; Docker must not. */
	json_object_set_new(hc, "RestartPolicy", json_pack("{s:s}", "Name", "no"));
	if (json_string_value(json_object_get(hc, "NetworkMode")) == NULL)
		json_object_set_new(hc, "NetworkMode", json_string(a->cfg.network));
	return b;
}

static void note_image(agent *a, agent_mod *m, const char *ref)
{
	agent_docker_image img;
	if (agent_docker_image_inspect(a->docker, ref, &img) == PERCH_OK) {
		snprintf(m->image_id, sizeof m->image_id, "%s", img.id);
		snprintf(m->digest, sizeof m->digest, "%s", img.digest);
	}
}

/* stop_done ends a graceful stop (ud: its slot): the next reconcile removes
 * or recreates the container, or sees that it still runs (and tries again). */
static void stop_done(void *ud, perch_err err, long http, const json_t *resp, const char *msg)
{
	agent_stopping *slot = ud;
	(void)resp;
	(void)http;
	if (err != PERCH_OK)
		PERCH_WARN("agent", "stop of container %.12s failed: %s", slot->id, msg);
	slot->used = false;
	slot->a->dirty = true;
}

/* stopping finds the slot of a stop of id in flight, or NULL. */
static agent_stopping *stopping(agent *a, const char *id)
{
	for (size_t i = 0; i < AGENT_MAX_STOPPING; i++)
		if (a->stopping[i].used && strcmp(a->stopping[i].id, id) == 0)
			return &a->stopping[i];
	return NULL;
}

/* stop_async asks the engine to stop container id gracefully, without
 * waiting (a stop already in flight is left to finish). Returns false when
 * the stop could not be sent: the caller force-removes instead. */
static bool stop_async(agent *a, const char *id, const char *module, const char *why)
{
	if (stopping(a, id) != NULL)
		return true;
	agent_stopping *slot = NULL;
	for (size_t i = 0; i < AGENT_MAX_STOPPING && slot == NULL; i++)
		if (!a->stopping[i].used)
			slot = &a->stopping[i];
	if (slot == NULL)
		return false;
	char path[160];
	int grace_s = (int)((a->cfg.stop_grace_ms + 999) / 1000);
	snprintf(path, sizeof path, "/containers/%s/stop?t=%d", id, grace_s);
	slot->a = a;
	snprintf(slot->id, sizeof slot->id, "%s", id);
	if (agent_docker_call_async(a->docker, "POST", path, NULL, a->cfg.stop_grace_ms + 30000,
	                            stop_done, slot, NULL) != PERCH_OK)
		return false;
	slot->used = true;
	PERCH_NOTICE("agent", "module %s: stopping container %.12s (%s; SIGKILL after %d s)",
	             module, id, why, grace_s);
	return true;
}

/* retire_container makes way for a new container or none: a running one is
 * stopped gracefully first (returns false: not yet); a stopped one is
 * removed (returns true when it is gone). */
static bool retire_container(agent *a, const char *id, bool running, const char *module,
                             const char *why)
{
	if (running && stop_async(a, id, module, why))
		return false;
	if (stopping(a, id) != NULL)
		return false; /* exited, and the stop's answer is on its way */
	crashpoint("old-stopped");
	if (agent_docker_remove(a->docker, id, true) != PERCH_OK) {
		PERCH_WARN("agent", "module %s: remove %.12s: %s", module, id,
		           agent_docker_errmsg(a->docker));
		return false;
	}
	PERCH_INFO("agent", "module %s: removed container %.12s", module, id);
	crashpoint("old-removed");
	return true;
}

static bool summary_running(const json_t *c)
{
	const char *state = json_string_value(json_object_get(c, "State"));
	return state != NULL && (strcmp(state, "running") == 0 ||
	                         strcmp(state, "restarting") == 0 || strcmp(state, "paused") == 0);
}

/* start_container starts m's existing container; returns 0 or a retry wait. */
static int start_container(agent *a, agent_mod *m, const char *why)
{
	int64_t now = agent_now_ms();
	perch_err err = agent_docker_start(a->docker, m->id);
	if (err != PERCH_OK) {
		set_desc(m, AGENT_RT_FAILED, "start failed: %s", agent_docker_errmsg(a->docker));
		PERCH_ERROR("agent", "module %s: %s", m->name, m->desc);
		/* The engine failed to clean up the last run (containerd kept its
		 * task under load, or its shim directory across a dockerd restart)
		 * and will refuse every start of this container: a new container is
		 * the way out. */
		if (agent_docker_stale_task(agent_docker_errmsg(a->docker)) &&
		    agent_docker_remove(a->docker, m->id, true) == PERCH_OK) {
			PERCH_WARN("agent",
			           "module %s: the engine kept a stale task for container %.12s: "
			           "replaced by a new container",
			           m->name, m->id);
			m->id[0] = '\0';
			m->pid = 0;
			m->fresh = true;
			return 1; /* not started: the next pass (at once) creates it */
		}
		return 5000;
	}
	m->start_ms = now;
	m->fresh = false;
	set_desc(m, AGENT_RT_RUNNING, "running");
	PERCH_NOTICE("agent", "module %s: started (%s)", m->name, why);
	return 0;
}

/* create_container makes and starts m's container; returns a wait or -1. */
static int create_container(agent *a, agent_mod *m)
{
	const agent_module *d = m->m;
	int64_t now = agent_now_ms();
	if (m->pulling)
		return -1;
	agent_docker_image img;
	perch_err err = agent_docker_image_inspect(a->docker, d->image, &img);
	if (err == PERCH_ENOENT) {
		if (d->pull_policy == AGENT_PULL_NEVER) {
			set_desc(m, AGENT_RT_FAILED,
			         "image %s is not on the device and imagePullPolicy is never",
			         d->image);
			return 10000;
		}
		if (now < m->pull_retry_ms)
			return (int)(m->pull_retry_ms - now);
		start_pull(a, m);
		return -1;
	}
	if (err != PERCH_OK) {
		set_desc(m, AGENT_RT_UNKNOWN, "image inspect failed: %s",
		         agent_docker_errmsg(a->docker));
		return 2000;
	}
	snprintf(m->image_id, sizeof m->image_id, "%s", img.id);
	snprintf(m->digest, sizeof m->digest, "%s", img.digest);
	json_t *body = create_body(a, m);
	if (body == NULL)
		return 1000;
	err = agent_docker_create(a->docker, d->name, body, m->id);
	json_decref(body);
	if (err == PERCH_EEXIST) {
		set_desc(m, AGENT_RT_FAILED,
		         "a container named %s exists and is not owned by perch-agent (left alone)",
		         d->name);
		PERCH_ERROR("agent", "module %s: %s", m->name, m->desc);
		return 10000;
	}
	if (err != PERCH_OK) {
		set_desc(m, AGENT_RT_FAILED, "create failed: %s", agent_docker_errmsg(a->docker));
		PERCH_ERROR("agent", "module %s: %s", m->name, m->desc);
		m->id[0] = '\0';
		return 5000;
	}
	PERCH_INFO("agent", "module %s: created container %.12s (hash %.12s)", m->name, m->id,
	           m->hash);
	crashpoint("created");
	return start_container(a, m, "created");
}

static int min_wait(int a, int b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* quiet_and_running: the container summary c (from the list) shows m's
 * container running and healthy, and nothing about m is pending (it was
 * inspected since its last start, no restarts in a row to reset, no engine
 * restart to check). The safety pass then costs one list call, not an
 * inspect per module, so it holds up die events less. */
static bool quiet_and_running(const agent_mod *m, const json_t *c)
{
	const char *state = json_string_value(json_object_get(c, "State"));
	const char *status = json_string_value(json_object_get(c, "Status"));
	return m->m->status == AGENT_STATUS_RUNNING && m->rt == AGENT_RT_RUNNING && m->pid > 0 &&
	       m->backoff_n == 0 && !m->fresh && !m->engine_check && m->next_try_ms == 0 &&
	       state != NULL && strcmp(state, "running") == 0 &&
	       (status == NULL || strstr(status, "unhealthy") == NULL);
}

/* reconcile_one converges one module given its container summary (or
 * NULL); returns the ms until it wants another look, or -1. */
static int reconcile_one(agent *a, agent_mod *m, const json_t *c)
{
	const agent_module *d = m->m;
	if (m->starting)
		return 1000; /* a restart from a die event is on its way */
	int64_t now = agent_now_ms();
	agent_docker_state st;
	bool have = c != NULL;
	if (have) {
		const char *hash = json_string_value(
		        json_object_get(json_object_get(c, "Labels"), AGENT_HASH_LABEL));
		const char *cid = json_string_value(json_object_get(c, "Id"));
		snprintf(m->id, sizeof m->id, "%s", cid != NULL ? cid : "");
		if (hash == NULL || strcmp(hash, m->hash) != 0) {
			if (!retire_container(a, m->id, summary_running(c), m->name,
			                      "settings changed")) {
				set_desc(m, AGENT_RT_UNKNOWN,
				         "settings changed: stopping the old container %.12s",
				         m->id);
				return (int)a->cfg.stop_grace_ms + 5000;
			}
			PERCH_NOTICE("agent", "module %s: settings changed, recreating", m->name);
			have = false;
			m->fresh = true;
		}
	}
	if (have && quiet_and_running(m, c))
		return -1; /* the list says all there is to know: no inspect */
	if (have) {
		perch_err err = agent_docker_inspect(a->docker, m->id, &st, NULL);
		if (err == PERCH_ENOENT)
			have = false;
		else if (err != PERCH_OK)
			return 2000;
	}
	if (!have) {
		m->id[0] = '\0';
		m->pid = 0;
	}
	if (d->status == AGENT_STATUS_STOPPED) {
		m->fresh = true;
		m->next_try_ms = 0;
		if (have && st.running &&
		    !stop_async(a, m->id, m->name, "the deployment says status: stopped"))
			return 2000;
		set_desc(m, AGENT_RT_STOPPED, "stopped (the deployment says status: stopped)");
		return -1;
	}
	if (!have)
		return create_container(a, m);

	snprintf(m->image_id, sizeof m->image_id, "%s", st.image_id);
	m->pid = st.running ? st.pid : 0;
	if (m->digest[0] == '\0')
		note_image(a, m, st.image_id);
	int64_t started = agent_parse_rfc3339(st.started_at);
	int64_t finished = agent_parse_rfc3339(st.finished_at);
	if (started > 0)
		m->start_ms = started;
	if (finished > 0)
		m->exit_ms = finished;
	if (!st.running && finished > 0)
		m->exit_code = st.exit_code; /* a running container's says 0: keep the last */
	if (st.running) {
		bool unhealthy = strcmp(st.health, "unhealthy") == 0;
		m->fresh = false;
		m->engine_check = false;
		if (m->next_try_ms != 0) {
			m->next_try_ms = 0;
			m->dirty_state = true;
		}
		if (unhealthy && agent_restart_wanted(d->restart_policy, false, 0, true)) {
			PERCH_WARN("agent", "module %s: unhealthy, killing it to restart", m->name);
			set_desc(m, AGENT_RT_UNHEALTHY, "unhealthy: restarting");
			if (agent_docker_kill(a->docker, m->id, NULL) != PERCH_OK)
				return 2000;
			return -1;
		}
		if (unhealthy)
			set_desc(m, AGENT_RT_UNHEALTHY, "running, unhealthy (restartPolicy %s)",
			         agent_restart_policy_name(d->restart_policy));
		else
			set_desc(m, AGENT_RT_RUNNING, "running");
		if (m->backoff_n > 0) {
			if (agent_restart_reset(&a->backoff, now - m->start_ms)) {
				m->backoff_n = 0;
				m->dirty_state = true;
			} else {
				return (int)(m->start_ms + a->backoff.healthy_ms - now);
			}
		}
		return -1;
	}
	bool with_engine = m->engine_check && finished > 0 &&
	                   finished >= a->engine_lost_ms - ENGINE_DOWN_WINDOW_MS;
	m->engine_check = false;
	if (with_engine)
		return start_container(a, m, "it stopped with the Docker engine");
	if (strcmp(st.status, "created") == 0 || m->fresh)
		return start_container(a, m, m->fresh ? "deployed" : "created earlier");
	if (!agent_restart_wanted(d->restart_policy, true, st.exit_code, false)) {
		set_desc(m, st.exit_code == 0 ? AGENT_RT_STOPPED : AGENT_RT_FAILED,
		         "exited with code %d (restartPolicy %s)", st.exit_code,
		         agent_restart_policy_name(d->restart_policy));
		m->next_try_ms = 0;
		return -1;
	}
	if (agent_restart_gave_up(&a->backoff, m->backoff_n)) {
		set_desc(m, AGENT_RT_FAILED,
		         "exited with code %d; gave up after %u restarts in a row", st.exit_code,
		         m->backoff_n);
		return -1;
	}
	if (m->next_try_ms == 0) {
		if (m->backoff_n > 0 && agent_restart_reset(&a->backoff, m->exit_ms - m->start_ms))
			m->backoff_n = 0;
		m->next_try_ms = now + agent_restart_delay_ms(&a->backoff, m->backoff_n);
		m->dirty_state = true;
	}
	if (now < m->next_try_ms) {
		set_desc(m, AGENT_RT_BACKOFF, "exited with code %d; restart %u in %.1f s",
		         st.exit_code, m->backoff_n + 1, (double)(m->next_try_ms - now) / 1000.0);
		return (int)(m->next_try_ms - now);
	}
	int w = start_container(a, m, "restart");
	m->backoff_n++;
	m->dirty_state = true;
	if (w != 0) {
		m->next_try_ms = now + agent_restart_delay_ms(&a->backoff, m->backoff_n);
		return w;
	}
	m->restart_count++;
	m->restart_ms = now;
	m->next_try_ms = 0;
	PERCH_NOTICE("agent", "module %s: restarted after exit code %d (restart %u, %u in a row)",
	             m->name, st.exit_code, m->restart_count, m->backoff_n);
	return 0;
}

/* ours: do these labels (or event attributes) say this agent owns it? */
static bool ours(const agent *a, const json_t *labels)
{
	const char *owner = json_string_value(json_object_get(labels, AGENT_OWNER_LABEL));
	const char *inst = json_string_value(json_object_get(labels, AGENT_INST_LABEL));
	return owner != NULL && inst != NULL && strcmp(owner, AGENT_OWNER_VALUE) == 0 &&
	       strcmp(inst, a->cfg.instance) == 0;
}

static const char *module_label(const json_t *c)
{
	return json_string_value(json_object_get(json_object_get(c, "Labels"), AGENT_MODULE_LABEL));
}

int agent_reconcile(agent *a)
{
	a->dirty = false;
	if (!a->docker_up || !a->have_dep)
		return -1;
	if (!a->network_ok) {
		char nid[AGENT_DOCKER_ID_MAX];
		bool created = false;
		json_t *labels = json_pack("{s:s}", AGENT_OWNER_LABEL, AGENT_OWNER_VALUE);
		perch_err err = agent_docker_network_ensure(a->docker, a->cfg.network, labels, nid,
		                                            &created);
		json_decref(labels);
		if (err != PERCH_OK) {
			PERCH_ERROR("agent", "cannot ensure network %s: %s", a->cfg.network,
			            agent_docker_errmsg(a->docker));
			return 2000;
		}
		if (created)
			PERCH_NOTICE("agent", "created network %s", a->cfg.network);
		a->network_ok = true;
	}
	json_t *list = NULL;
	char filter[128];
	snprintf(filter, sizeof filter, "%s=%s", AGENT_INST_LABEL, a->cfg.instance);
	if (agent_docker_list(a->docker, filter, true, &list) != PERCH_OK) {
		PERCH_WARN("agent", "cannot list containers: %s", agent_docker_errmsg(a->docker));
		return 2000;
	}
	/* Keep only what this agent owns (both labels): never touch the rest. */
	for (size_t k = json_array_size(list); k-- > 0;) {
		if (!ours(a, json_object_get(json_array_get(list, k), "Labels")))
			json_array_remove(list, k);
	}
	size_t i;
	json_t *c;
	int dropped_wait = -1;
	json_array_foreach(list, i, c)
	{
		const char *mod = module_label(c);
		const char *id = json_string_value(json_object_get(c, "Id"));
		if (id == NULL || (mod != NULL && agent_mod_find(a, mod) != NULL))
			continue;
		if (stopping(a, id) == NULL)
			PERCH_NOTICE("agent", "module %s: container %.12s is not in the deployment",
			             mod != NULL ? mod : "?", id);
		if (!retire_container(a, id, summary_running(c), mod != NULL ? mod : "?",
		                      "not in the deployment"))
			dropped_wait = (int)a->cfg.stop_grace_ms + 5000;
	}
	int wait = min_wait(RESYNC_MS, dropped_wait);
	bool hub_wait = a->cfg.hub_enabled && !a->hub.ever_ready;
	for (size_t k = 0; k < a->n_mods; k++) {
		agent_mod *m = &a->mods[k];
		if (hub_wait) {
			set_desc(m, AGENT_RT_UNKNOWN,
			         "waiting for perch-hub to accept connections");
			continue;
		}
		const json_t *mine = NULL;
		json_array_foreach(list, i, c)
		{
			const char *mod = module_label(c);
			if (mod != NULL && strcmp(mod, m->name) == 0) {
				if (mine == NULL) {
					mine = c;
					continue;
				}
				const char *id = json_string_value(json_object_get(c, "Id"));
				PERCH_WARN("agent", "module %s: removing duplicate container %.12s",
				           m->name, id);
				if (id != NULL &&
				    agent_docker_remove(a->docker, id, true) != PERCH_OK)
					PERCH_WARN("agent", "remove: %s",
					           agent_docker_errmsg(a->docker));
			}
		}
		wait = min_wait(wait, reconcile_one(a, m, mine));
		if (m->dirty_state) {
			if (agent_state_save_mod(a, m) == PERCH_OK)
				m->dirty_state = false;
		}
	}
	json_decref(list);
	return wait;
}

/* The fast path of a restart: on a die event, when the policy wants a
 * restart and no backoff applies, POST /start at once, asynchronously,
 * without a full reconcile pass (which lists and inspects every container:
 * with many modules crashing together, restarts would queue behind it). */
typedef struct start_ctx {
	agent *a;
	char name[AGENT_MANIFEST_MAX_NAME + 1];
	int exit_code;
} start_ctx;

static void fast_started(void *ud, perch_err err, long http, const json_t *resp, const char *msg)
{
	start_ctx *c = ud;
	agent *a = c->a;
	(void)http;
	(void)resp;
	agent_mod *m = agent_mod_find(a, c->name);
	if (m != NULL && m->start_ctx == c) {
		m->starting = false;
		m->start_op = NULL;
		m->start_ctx = NULL;
		if (err == PERCH_OK) {
			int64_t now = agent_now_ms();
			m->start_ms = now;
			m->restart_ms = now;
			m->pid = 0; /* a new process: the next pass inspects it */
			m->restart_count++;
			m->backoff_n++;
			m->next_try_ms = 0;
			m->fresh = false;
			m->dirty_state = true;
			set_desc(m, AGENT_RT_RUNNING, "running");
			PERCH_NOTICE(
			        "agent",
			        "module %s: restarted after exit code %d (restart %u, %u in a row)",
			        m->name, c->exit_code, m->restart_count, m->backoff_n);
			if (agent_state_save_mod(a, m) == PERCH_OK)
				m->dirty_state = false;
		} else {
			PERCH_WARN("agent", "module %s: restart failed: %s (the next pass retries)",
			           m->name, msg);
			a->dirty = true;
		}
	}
	perch_free(c);
}

static bool fast_restart(agent *a, agent_mod *m, const agent_docker_event *ev)
{
	const agent_module *d = m->m;
	const char *hash = json_string_value(json_object_get(ev->attrs, AGENT_HASH_LABEL));
	if (!a->docker_up || d->status != AGENT_STATUS_RUNNING || m->starting || m->pulling ||
	    hash == NULL || strcmp(hash, m->hash) != 0 || strcmp(ev->id, m->id) != 0 ||
	    stopping(a, m->id) != NULL ||
	    !agent_restart_wanted(d->restart_policy, true, ev->exit_code, false))
		return false;
	uint32_t n = m->backoff_n;
	if (n > 0 && m->start_ms > 0 && agent_restart_reset(&a->backoff, m->exit_ms - m->start_ms))
		n = 0;
	if (agent_restart_delay_ms(&a->backoff, n) > 0 || agent_restart_gave_up(&a->backoff, n))
		return false; /* the reconcile pass schedules it */
	start_ctx *c = perch_calloc(1, sizeof *c);
	if (c == NULL)
		return false;
	c->a = a;
	c->exit_code = ev->exit_code;
	snprintf(c->name, sizeof c->name, "%s", m->name);
	char path[160];
	snprintf(path, sizeof path, "/containers/%s/start", m->id);
	if (agent_docker_call_async(a->docker, "POST", path, NULL, 0, fast_started, c,
	                            &m->start_op) != PERCH_OK) {
		perch_free(c);
		m->start_op = NULL;
		return false;
	}
	if (m->backoff_n != n) {
		m->backoff_n = n; /* a healthy run reset the count */
		m->dirty_state = true;
	}
	m->starting = true;
	m->start_ctx = c;
	set_desc(m, AGENT_RT_UNKNOWN, "exited with code %d; restarting", ev->exit_code);
	return true;
}

void agent_on_event(void *ud, const agent_docker_event *ev)
{
	agent *a = ud;
	if (ev->kind == AGENT_DOCKER_EV_CONNECTED) {
		PERCH_NOTICE("agent", "Docker events stream connected: re-reading the containers");
		a->docker_up = true;
		a->network_ok = false;
		a->dirty = true;
		return;
	}
	if (ev->kind == AGENT_DOCKER_EV_DISCONNECTED) {
		PERCH_WARN("agent", "Docker events stream lost (%s): %s", perch_strerror(ev->err),
		           ev->msg);
		a->docker_up = false;
		a->engine_lost_ms = agent_now_ms();
		for (size_t i = 0; i < a->n_mods; i++) {
			set_desc(&a->mods[i], AGENT_RT_UNKNOWN, "Docker engine not answering: %s",
			         ev->msg);
			a->mods[i].engine_check = true;
		}
		return;
	}
	if (!ours(a, ev->attrs))
		return;
	const char *name = json_string_value(json_object_get(ev->attrs, AGENT_MODULE_LABEL));
	agent_mod *m = name != NULL ? agent_mod_find(a, name) : NULL;
	switch (ev->action) {
	case AGENT_DOCKER_ACT_DIE:
		PERCH_NOTICE("agent", "module %s: container %.12s exited with code %d",
		             name != NULL ? name : "?", ev->id, ev->exit_code);
		if (m != NULL) {
			m->exit_code = ev->exit_code;
			m->exit_ms = ev->time_ns / 1000000;
			if (fast_restart(a, m, ev))
				break;
		}
		a->dirty = true;
		break;
	case AGENT_DOCKER_ACT_HEALTH:
		PERCH_INFO("agent", "module %s: health %s", name != NULL ? name : "?", ev->health);
		a->dirty = true;
		break;
	case AGENT_DOCKER_ACT_DESTROY: a->dirty = true; break;
	default: break;
	}
}

/* ---- deployments --------------------------------------------------------------- */

/* effective_hash fills m->hash: what the container is made of is the
 * module's settings (its settings hash, manifest.c) and what the agent adds
 * from its own configuration; a change in either recreates the container. */
static void effective_hash(const agent *a, agent_mod *m)
{
	char text[3072], dir[AGENT_PATH_MAX];
	if (agent_workload_dir(a, m->name, dir, sizeof dir) != PERCH_OK)
		dir[0] = '\0';
	int n = snprintf(text, sizeof text,
	                 "%s\ndevice=%s\nhub_port=%lld\nnetwork=%s\nlog=%s/%lld\ngenid=%s\n"
	                 "iothub=%s\ngateway=%s\nworkload=%s\napi=%s",
	                 m->m->settings_hash, a->device_id, (long long)a->cfg.hub_port,
	                 a->cfg.network, a->cfg.log_max_size, (long long)a->cfg.log_max_file,
	                 m->genid, a->cfg.device.iothub_hostname, a->cfg.device.gateway_hostname,
	                 dir, AGENT_WL_API_VERSION);
	unsigned char digest[32];
	if (n < 0 || (size_t)n >= sizeof text ||
	    mbedtls_sha256_ret((const unsigned char *)text, (size_t)n, digest, 0) != 0) {
		snprintf(m->hash, sizeof m->hash, "%s", m->m->settings_hash);
		return;
	}
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < sizeof digest; i++) {
		m->hash[2 * i] = hex[digest[i] >> 4];
		m->hash[2 * i + 1] = hex[digest[i] & 15];
	}
	m->hash[64] = '\0';
}

/* mods_rebuild makes the module records of nd, carrying over what the
 * agent knows of modules kept by name. */
static perch_err mods_rebuild(agent *a, const agent_deployment *nd)
{
	agent_mod *nm = perch_calloc(nd->n_modules > 0 ? nd->n_modules : 1, sizeof *nm);
	if (nm == NULL)
		return PERCH_ENOMEM;
	for (size_t i = 0; i < nd->n_modules; i++) {
		const agent_module *d = &nd->modules[i];
		agent_mod *old = agent_mod_find(a, d->name);
		if (old != NULL) {
			nm[i] = *old;
			if (old->m->status == AGENT_STATUS_STOPPED &&
			    d->status == AGENT_STATUS_RUNNING)
				nm[i].fresh = true;
			if (nm[i].pulling && strcmp(old->m->image, d->image) != 0) {
				cancel_pull(a, &nm[i]);
				nm[i].pull_retry_ms = 0;
				nm[i].pull_failures = 0;
			}
			/* The old record gives its pull and restart away. */
			old->pull_op = NULL;
			old->pull_ctx = NULL;
			old->pulling = false;
			old->start_op = NULL;
			old->start_ctx = NULL;
			old->starting = false;
		} else {
			snprintf(nm[i].name, sizeof nm[i].name, "%s", d->name);
			nm[i].fresh = true;
			agent_state_load_mod(a, &nm[i]);
			if (agent_state_genid(a, &nm[i]) != PERCH_OK)
				PERCH_WARN("agent",
				           "module %s: its generation id could not be stored: it "
				           "will change when the agent restarts",
				           d->name);
		}
		nm[i].m = d;
		effective_hash(a, &nm[i]);
	}
	agent_mods_free(a);
	a->mods = nm;
	a->n_mods = nd->n_modules;
	return PERCH_OK;
}

static perch_err apply_text(agent *a, const char *text, size_t len, const char *source,
                            bool from_store)
{
	agent_deployment nd;
	agent_manifest_issues errs, warns;
	memset(&nd, 0, sizeof nd);
	memset(&errs, 0, sizeof errs);
	memset(&warns, 0, sizeof warns);
	if (!from_store) {
		a->desired_version++;
		if (agent_state_save_version(a) != PERCH_OK)
			PERCH_WARN("agent", "cannot store lastDesiredVersion");
	}
	perch_err err = agent_manifest_parse(text, len, &a->cfg.policy, &nd, &errs, &warns);
	for (size_t i = 0; i < warns.n; i++)
		PERCH_WARN("agent", "manifest %s: %s", source, warns.msg[i]);
	if (err != PERCH_OK) {
		for (size_t i = 0; i < errs.n; i++)
			PERCH_ERROR("agent", "manifest %s: %s", source, errs.msg[i]);
		if (errs.dropped > 0)
			PERCH_ERROR("agent", "manifest %s: %zu more errors", source, errs.dropped);
		PERCH_ERROR("agent", "manifest %s refused (%s): %s", source, perch_strerror(err),
		            a->have_dep ? "the applied deployment stays" : "no deployment applied");
		if (!from_store) {
			a->desired_code = 400;
			snprintf(a->desired_desc, sizeof a->desired_desc, "%s%s",
			         errs.n > 0 ? errs.msg[0] : perch_strerror(err),
			         errs.n + errs.dropped > 1 ? " (and more: see the agent's log)"
			                                   : "");
		}
		goto out;
	}
	if (!from_store && agent_state_save_manifest(a, text, len) != PERCH_OK)
		PERCH_WARN("agent", "cannot store the deployment: it will not survive a restart");
	err = mods_rebuild(a, &nd);
	if (err != PERCH_OK) {
		agent_deployment_free(&nd);
		goto out;
	}
	agent_deployment_free(&a->dep);
	a->dep = nd;
	a->have_dep = true;
	a->dirty = true;
	a->desired_code = 200;
	snprintf(a->desired_desc, sizeof a->desired_desc, "%s",
	         from_store ? "stored deployment applied" : "");
	PERCH_NOTICE("agent", "deployment from %s applied: %zu modules", source, a->n_mods);
	if (agent_state_genid_prune(a) != PERCH_OK)
		PERCH_WARN("agent", "cannot forget the generation ids of removed modules");
	agent_workload_sync(a);
	(void)agent_identity_write_hub(a);
out:
	agent_manifest_issues_free(&errs);
	agent_manifest_issues_free(&warns);
	return err;
}

perch_err agent_apply_file(agent *a, const char *path)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		int e = errno;
		PERCH_ERROR("agent", "cannot read manifest %s: %s", path, strerror(e));
		return perch_err_from_errno(e);
	}
	char *buf = perch_malloc(AGENT_MANIFEST_MAX_BYTES + 2);
	perch_err err = PERCH_ENOMEM;
	if (buf != NULL) {
		size_t n = fread(buf, 1, AGENT_MANIFEST_MAX_BYTES + 1, f);
		if (ferror(f)) {
			PERCH_ERROR("agent", "cannot read manifest %s", path);
			err = PERCH_EIO;
		} else {
			buf[n] = '\0';
			err = apply_text(a, buf, n, path, false);
		}
	}
	fclose(f);
	perch_free(buf);
	return err;
}

perch_err agent_apply_stored(agent *a)
{
	char *text = NULL;
	size_t len = 0;
	perch_err err = agent_state_load_manifest(a, &text, &len);
	if (err == PERCH_ENOENT) {
		PERCH_WARN("agent",
		           "no stored deployment: nothing to run until a manifest arrives");
		return err;
	}
	if (err != PERCH_OK)
		return err;
	err = apply_text(a, text, len, "(stored)", true);
	perch_free(text);
	return err;
}
