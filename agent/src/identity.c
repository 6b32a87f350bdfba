/*
 * identity.c — the agent's side of identity (docs/identity.md): the device
 * id, the device key (made on first start), the device CA and the hub's
 * server certificate (certs.c; made at start, renewed when due, checked
 * daily), and the hub deployment file, through which perch-hub learns the
 * module identities, the $edgeHub routes and the desired twins after every
 * deployment the agent applies.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/platform_util.h>

#include "agent.h"
#include "certs.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define LOG_MOD          "agent.identity"
#define CERT_CHECK_MS    (24LL * 3600 * 1000) /* the certificates are looked at daily */
#define CERT_RETRY_MS    (3600LL * 1000)      /* after a failure */
#define TRUST_BUNDLE_MAX (64u << 10)
#define HUB_FILE_MODE    0640

perch_err agent_identity_id(agent *a)
{
	const char *old = a->cfg.device_id;
	if (old != NULL && old[0] != '\0') {
		if (a->cfg.device.id != NULL && a->cfg.device.id[0] != '\0' &&
		    strcmp(a->cfg.device.id, old) != 0)
			PERCH_WARN(LOG_MOD,
			           "agent.device_id (%s) overrides device.id (%s); agent.device_id "
			           "is deprecated: set device.id only",
			           old, a->cfg.device.id);
		else
			PERCH_NOTICE(LOG_MOD, "agent.device_id is deprecated: use device.id");
		if (!perch_device_valid_id(old) || strlen(old) >= sizeof a->device_id) {
			PERCH_ERROR(LOG_MOD, "agent.device_id '%s' is not a valid device id", old);
			return PERCH_EINVAL;
		}
		snprintf(a->device_id, sizeof a->device_id, "%s", old);
		return PERCH_OK;
	}
	perch_err err = perch_device_id(&a->cfg.device, a->device_id, sizeof a->device_id);
	if (err != PERCH_OK)
		PERCH_ERROR(LOG_MOD,
		            "the device id (device.id, else the host name) is not valid: "
		            "set device.id to 1-128 letters, digits or - . + %% _ # * ? ! ( ) "
		            ", : = @ $ '");
	return err;
}

/* load_bundle reads ca.pem into a->trust_bundle. */
static void load_bundle(agent *a)
{
	char path[AGENT_PATH_MAX + 16];
	snprintf(path, sizeof path, "%s/ca.pem", a->cfg.device.certs_dir);
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return;
	char *buf = perch_malloc(TRUST_BUNDLE_MAX + 1);
	if (buf != NULL) {
		size_t n = fread(buf, 1, TRUST_BUNDLE_MAX, f);
		buf[n] = '\0';
		if (n > 0 && strstr(buf, "-----BEGIN CERTIFICATE-----") != NULL) {
			perch_free(a->trust_bundle);
			a->trust_bundle = buf;
			buf = NULL;
		}
	}
	perch_free(buf);
	fclose(f);
}

/* certs_check makes or renews the certificates; schedules the next look. */
static void certs_check(agent *a)
{
	agent_certs_cfg c = {.dir = a->cfg.device.certs_dir,
	                     .device_id = a->device_id,
	                     .gateway = a->cfg.device.gateway_hostname};
	agent_certs_result res;
	char err[300];
	int64_t now = agent_now_ms();
	perch_err e = agent_certs_ensure(&c, now / 1000, &res, err, sizeof err);
	if (e != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "certificates in %s: %s (%s); trying again in an hour", c.dir,
		            err, perch_strerror(e));
		a->next_cert_check_ms = now + CERT_RETRY_MS;
		if (a->trust_bundle == NULL)
			load_bundle(a);
		return;
	}
	char until[40];
	agent_rfc3339(res.server_not_after * 1000, until, sizeof until);
	if (res.ca_made)
		PERCH_NOTICE(LOG_MOD,
		             "made a new device CA in %s/ca.pem (%s): modules get it from the "
		             "workload API's trust bundle when they (re)start",
		             c.dir, res.why);
	if (res.server_made) {
		PERCH_NOTICE(LOG_MOD,
		             "made the hub's server certificate %s/hub.pem for %s (%s), "
		             "valid until %s",
		             c.dir, c.gateway, res.why, until);
		agent_hub_reload(a, "server certificate renewed");
	}
	if (res.ca_made || a->trust_bundle == NULL)
		load_bundle(a);
	int64_t next = now + CERT_CHECK_MS;
	if (res.server_renew_at * 1000 > now && res.server_renew_at * 1000 < next)
		next = res.server_renew_at * 1000;
	a->next_cert_check_ms = next;
}

perch_err agent_identity_start(agent *a)
{
	bool created = false;
	perch_err err = perch_device_key_ensure(a->cfg.device.key_file, a->device_key,
	                                        sizeof a->device_key, &created);
	if (err != PERCH_OK) {
		a->device_key[0] = '\0';
		if (err == PERCH_EPERM)
			PERCH_ERROR(LOG_MOD, "device key %s is readable by others: chmod 600 it",
			            a->cfg.device.key_file);
		else
			PERCH_ERROR(LOG_MOD, "device key %s: %s", a->cfg.device.key_file,
			            perch_strerror(err));
		return err;
	}
	if (created)
		PERCH_NOTICE(LOG_MOD, "made a new device key in %s (mode 0600)",
		             a->cfg.device.key_file);
	certs_check(a);
	return PERCH_OK;
}

int agent_identity_tick(agent *a)
{
	int64_t now = agent_now_ms();
	if (a->next_cert_check_ms == 0)
		return -1;
	if (now >= a->next_cert_check_ms)
		certs_check(a);
	int64_t left = a->next_cert_check_ms - agent_now_ms();
	return left < 0 ? 0 : (int)(left > 60000 ? 60000 : left);
}

void agent_identity_stop(agent *a)
{
	mbedtls_platform_zeroize(a->device_key, sizeof a->device_key);
	perch_free(a->trust_bundle);
	a->trust_bundle = NULL;
}

/* --- the hub deployment file ------------------------------------------------------ */

/* hub_doc returns a new reference: what the agent tells the hub. */
static json_t *hub_doc(const agent *a)
{
	json_t *mods = json_object();
	json_t *hub = json_object();
	json_t *twins = a->dep.twins != NULL ? json_deep_copy(a->dep.twins) : json_object();
	json_t *doc = json_object();
	bool ok = mods != NULL && hub != NULL && twins != NULL && doc != NULL;
	for (size_t i = 0; ok && i < a->n_mods; i++)
		ok = json_object_set_new(mods, a->mods[i].name,
		                         json_pack("{s:s}", "generationId", a->mods[i].genid)) == 0;
	if (ok && a->dep.hub_schema_version != NULL)
		ok = json_object_set_new(hub, "schemaVersion",
		                         json_string(a->dep.hub_schema_version)) == 0;
	if (ok)
		ok = json_object_set_new(hub, "routes",
		                         a->dep.routes != NULL ? json_deep_copy(a->dep.routes)
		                                               : json_object()) == 0;
	if (ok && a->dep.store_and_forward != NULL)
		ok = json_object_set_new(hub, "storeAndForwardConfiguration",
		                         json_deep_copy(a->dep.store_and_forward)) == 0;
	if (ok)
		ok = json_object_set_new(doc, "version", json_integer(1)) == 0 &&
		     json_object_set_new(doc, "deviceId", json_string(a->device_id)) == 0 &&
		     json_object_set_new(doc, "deployment", json_integer(a->desired_version)) == 0;
	/* json_object_set_new takes the reference even when it fails. */
	if (ok) {
		ok = json_object_set_new(doc, "modules", mods) == 0;
		mods = NULL;
	}
	if (ok) {
		ok = json_object_set_new(doc, "edgeHub", hub) == 0;
		hub = NULL;
	}
	if (ok) {
		ok = json_object_set_new(doc, "twins", twins) == 0;
		twins = NULL;
	}
	json_decref(mods);
	json_decref(hub);
	json_decref(twins);
	if (!ok) {
		json_decref(doc);
		return NULL;
	}
	return doc;
}

/* parent_dirs makes the directories above path (0755). */
static void parent_dirs(const char *path)
{
	char dir[AGENT_PATH_MAX];
	snprintf(dir, sizeof dir, "%s", path);
	for (char *p = dir + 1; *p != '\0'; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		(void)mkdir(dir, 0755);
		*p = '/';
	}
}

perch_err agent_identity_write_hub(agent *a)
{
	const char *path = a->cfg.device.deployment_file;
	if (!a->have_dep || path == NULL)
		return PERCH_OK;
	json_t *doc = hub_doc(a);
	char *text = doc != NULL ? json_dumps(doc, JSON_INDENT(2) | JSON_SORT_KEYS) : NULL;
	json_decref(doc);
	if (text == NULL) {
		PERCH_ERROR(LOG_MOD, "cannot write %s: out of memory", path);
		return PERCH_ENOMEM;
	}
	perch_err err = PERCH_OK;
	char tmp[AGENT_PATH_MAX + 32];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	parent_dirs(path);
	unlink(tmp);
	size_t len = strlen(text);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, HUB_FILE_MODE);
	bool ok = fd >= 0 && fchmod(fd, HUB_FILE_MODE) == 0 &&
	          write(fd, text, len) == (ssize_t)len && write(fd, "\n", 1) == 1 && fsync(fd) == 0;
	int e = errno;
	if (fd >= 0 && close(fd) != 0 && ok) {
		ok = false;
		e = errno;
	}
	if (ok && rename(tmp, path) != 0) {
		ok = false;
		e = errno;
	}
	if (!ok) {
		unlink(tmp);
		PERCH_ERROR(LOG_MOD, "cannot write the hub deployment file %s: %s", path,
		            strerror(e));
		err = perch_err_from_errno(e);
	} else {
		char dir[AGENT_PATH_MAX];
		snprintf(dir, sizeof dir, "%s", path);
		char *slash = strrchr(dir, '/');
		if (slash != NULL && slash != dir) {
			*slash = '\0';
			int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (dfd >= 0) {
				(void)fsync(dfd);
				close(dfd);
			}
		}
		PERCH_INFO(LOG_MOD, "wrote %s: deployment %lld, %zu modules", path,
		           (long long)a->desired_version, a->n_mods);
		agent_hub_reload(a, "hub deployment file written");
	}
	json_free_t jfree;
	json_malloc_t jmalloc;
	json_get_alloc_funcs(&jmalloc, &jfree);
	jfree(text);
	return err;
}
