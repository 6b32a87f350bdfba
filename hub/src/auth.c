/*
 * auth.c — perch-hub's identities at run time (docs/identity.md): reads the
 * device key file, the hub deployment file written by perch-agent and the
 * leaf devices file (at start, on SIGHUP, and when one changes: their mtimes
 * are looked at every second), checks each CONNECT (identity.c's rules,
 * plus the common name of a verified TLS client certificate), and stamps
 * $.cdid/$.cmid into telemetry topics from the authenticated identity (for
 * a child edge hub, from the module or leaf device the authorized topic
 * names).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/log.h"
#include "perch/props.h"

#define LOG_MOD        "hub.auth"
#define MAX_IDENT_FILE (4u << 20) /* bytes of the deployment or leaf file */
#define IDS_POLL_MS    1000
#define MTIME_MISSING  (-1)
#define MTIME_NEVER    (-2)

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mtime_of(const char *path)
{
	struct stat st;
	if (path == NULL || stat(path, &st) != 0)
		return MTIME_MISSING;
	return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec + (int64_t)st.st_size;
}

/* read_file reads path (at most MAX_IDENT_FILE bytes) into *out (perch_free).
 * private: refuse a file that group or others may read. */
static perch_err read_file(const char *path, bool private, char **out, size_t *len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return perch_err_from_errno(errno);
	struct stat st;
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return PERCH_EINVAL;
	}
	if (private && (st.st_mode & 077) != 0) {
		close(fd);
		return PERCH_EPERM;
	}
	if ((uint64_t)st.st_size > MAX_IDENT_FILE) {
		close(fd);
		return PERCH_ETOOBIG;
	}
	char *buf = perch_malloc((size_t)st.st_size + 1);
	if (buf == NULL) {
		close(fd);
		return PERCH_ENOMEM;
	}
	size_t n = 0;
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return PERCH_OK;
}

static bool load_key(hub *h)
{
	const char *path = h->cfg.device.key_file;
	char key[PERCH_DEVICE_KEY_MAX + 1] = "";
	perch_err err = perch_device_key_load(path, key, sizeof key);
	bool changed = strcmp(key, h->ids.device_key) != 0;
	switch (err) {
	case PERCH_OK:
		if (changed)
			PERCH_NOTICE(LOG_MOD, "device key read from %s", path);
		break;
	case PERCH_ENOENT:
		PERCH_NOTICE(LOG_MOD,
		             "no device key at %s yet (perch-agent makes it): the device and its "
		             "modules cannot authenticate until it is there",
		             path);
		break;
	case PERCH_EPERM:
		PERCH_ERROR(LOG_MOD, "device key %s is readable by others than its owner: not used",
		            path);
		break;
	default:
		PERCH_ERROR(LOG_MOD, "device key %s not used: %s", path,
		            err == PERCH_EINVAL ? "not a base64 key of 16 to 64 bytes"
		                                : perch_strerror(err));
		break;
	}
	hub_identities_set_key(&h->ids, key);
	memset(key, 0, sizeof key);
	return changed;
}

static bool load_deployment(hub *h)
{
	const char *path = h->cfg.device.deployment_file;
	char *text = NULL;
	size_t len = 0;
	perch_err err = read_file(path, false, &text, &len);
	if (err == PERCH_ENOENT) {
		PERCH_NOTICE(LOG_MOD,
		             "no hub deployment at %s yet: only the device, $edgeAgent and leaf "
		             "devices are known",
		             path);
		return false;
	}
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot read the hub deployment %s: %s", path,
		            perch_strerror(err));
		return false;
	}
	char why[300];
	err = hub_identities_load_deployment(&h->ids, text, len, why, sizeof why);
	perch_free(text);
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "hub deployment %s refused (%s): %s; the previous one stays",
		            path, perch_strerror(err), why);
		return false;
	}
	size_t n = 0, pos = 0;
	while (perch_map_next(&h->ids.modules, &pos) != NULL)
		n++;
	PERCH_NOTICE(LOG_MOD, "hub deployment %llu from %s: %zu modules",
	             (unsigned long long)h->ids.deployment, path, n);
	return true;
}

static bool load_leaves(hub *h)
{
	const char *path = h->cfg.leaf_devices;
	if (path == NULL)
		return false;
	char *text = NULL;
	size_t len = 0;
	perch_err err = read_file(path, true, &text, &len);
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "leaf devices file %s not used: %s", path,
		            err == PERCH_EPERM ? "readable by others than its owner (keys!)"
		                               : perch_strerror(err));
		return false;
	}
	char why[300];
	err = hub_identities_load_leaves(&h->ids, text, len, why, sizeof why);
	if (text != NULL)
		memset(text, 0, len);
	perch_free(text);
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "leaf devices file %s refused: %s; the previous list stays",
		            path, why);
		return false;
	}
	PERCH_NOTICE(LOG_MOD, "leaf devices read from %s", path);
	return true;
}

/* reload reads each file whose mtime changed (all when force); true when
 * the identities may have changed. */
static bool reload(hub *h, bool force)
{
	bool changed = false;
	int64_t t = mtime_of(h->cfg.device.key_file);
	if (force || t != h->key_mtime) {
		h->key_mtime = t;
		changed |= load_key(h);
	}
	t = mtime_of(h->cfg.device.deployment_file);
	if (force || t != h->deploy_mtime) {
		h->deploy_mtime = t;
		changed |= load_deployment(h);
	}
	t = mtime_of(h->cfg.leaf_devices);
	if (h->cfg.leaf_devices != NULL && (force || t != h->leaves_mtime)) {
		h->leaves_mtime = t;
		changed |= load_leaves(h);
	}
	return changed;
}

perch_err hub_auth_open(hub *h)
{
	char id[PERCH_DEVICE_ID_MAX + 1];
	if (perch_device_id(&h->cfg.device, id, sizeof id) != PERCH_OK) {
		PERCH_ERROR("hub",
		            "perch-hub cannot start: device.id '%s' is not a valid device id "
		            "(1-128 of A-Z a-z 0-9 - . + %% _ # * ? ! ( ) , : = @ $ ')",
		            h->cfg.device.id != NULL ? h->cfg.device.id : "(the host name)");
		return PERCH_EINVAL;
	}
	hub_identities_init(&h->ids, id, h->cfg.device.iothub_hostname,
	                    (uint64_t)h->cfg.auth_skew_ms / 1000,
	                    (uint64_t)h->cfg.auth_lifetime_ms / 1000);
	h->key_mtime = h->deploy_mtime = h->leaves_mtime = MTIME_NEVER;
	(void)reload(h, true);
	h->ids_poll_ms = mono_ms() + IDS_POLL_MS;
	PERCH_NOTICE(LOG_MOD, "device %s (IoT Hub host name %s)%s", id,
	             h->cfg.device.iothub_hostname,
	             h->cfg.allow_anonymous ? "; anonymous clients are allowed (--allow-anonymous)"
	                                    : "");
	return PERCH_OK;
}

void hub_auth_close(hub *h)
{
	hub_identities_fini(&h->ids);
}

bool hub_auth_tick(hub *h)
{
	int64_t now = mono_ms();
	if (!h->reload && now < h->ids_poll_ms)
		return false;
	bool force = h->reload != 0;
	h->reload = 0;
	h->ids_poll_ms = now + IDS_POLL_MS;
	if (force)
		PERCH_NOTICE(LOG_MOD, "SIGHUP: reading the identity files again");
	if (!reload(h, force))
		return false;
	hub_broker_identities_changed(h);
	return true;
}

/* cert_cn fills cn with the common name of c's verified client
 * certificate; false when there is none. */
static bool cert_cn(hub_conn *c, char *cn, size_t cap)
{
	if (!c->tls || c->wsi == NULL)
		return false;
	union {
		union lws_tls_cert_info_results r;
		char big[sizeof(union lws_tls_cert_info_results) + 256];
	} u;
	memset(&u, 0, sizeof u);
	if (lws_tls_peer_cert_info(c->wsi, LWS_TLS_CERT_INFO_VERIFIED, &u.r, 0) != 0 ||
	    !u.r.verified)
		return false;
	memset(&u, 0, sizeof u);
	size_t room = sizeof u.big - sizeof u.r + sizeof u.r.ns.name;
	if (lws_tls_peer_cert_info(c->wsi, LWS_TLS_CERT_INFO_COMMON_NAME, &u.r, room) != 0)
		return false;
	u.big[sizeof u.big - 1] = '\0';
	snprintf(cn, cap, "%s", u.r.ns.name);
	return cn[0] != '\0';
}

static const char *reason_text(hub_auth_reason r)
{
	switch (r) {
	case HUB_AUTH_NO_CREDENTIALS:
		return "no credentials (anonymous clients are refused; the hub accepts them only "
		       "with --allow-anonymous)";
	case HUB_AUTH_BAD_CLIENT_ID: return "the client id is not {device} or {device}/{module}";
	case HUB_AUTH_BAD_USERNAME:
		return "the user name is not "
		       "{iothub_hostname}/{device}[/{module}]/?api-version=... "
		       "for the client id's identity";
	case HUB_AUTH_UNKNOWN:
		return "unknown identity (not this device, a deployed module or a leaf device)";
	case HUB_AUTH_NO_KEY: return "the device key is not there yet (device.key_file)";
	case HUB_AUTH_TOKEN_MALFORMED: return "the password is not a valid SAS token";
	case HUB_AUTH_TOKEN_RESOURCE: return "the SAS token is for another identity";
	case HUB_AUTH_TOKEN_SIGNATURE: return "the SAS token's signature does not match the key";
	case HUB_AUTH_TOKEN_EXPIRED: return "the SAS token has expired";
	case HUB_AUTH_TOKEN_LIFETIME:
		return "the SAS token expires further ahead than hub.auth.max_token_lifetime";
	case HUB_AUTH_CERT_MISMATCH: return "the client certificate names another identity";
	default: return hub_auth_reason_str(r);
	}
}

uint8_t hub_auth_connect(hub_conn *c, const perch_mqtt_connect *p, const char **why)
{
	hub *h = c->hub;
	char cn[256];
	bool have_cn = cert_cn(c, cn, sizeof cn);
	hub_auth_request req = {
	        .client_id = p->client_id,
	        .username = p->has_username ? p->username : (perch_slice){"", 0},
	        .has_password = p->has_password,
	        .password = p->password,
	        .cert_cn = have_cn ? cn : NULL,
	        .allow_anonymous = h->cfg.allow_anonymous,
	        .now = (uint64_t)time(NULL),
	};
	uint8_t code = 0;
	hub_auth_reason r = hub_auth_check(&h->ids, &req, &c->ident, &code);
	if (r == HUB_AUTH_OK)
		return 0;
	hub_metrics_auth_refused(h->metrics, hub_auth_reason_str(r));
	*why = reason_text(r);
	return code;
}

bool hub_auth_stamp(const hub_identity *id, perch_slice topic, char *out, size_t cap,
                    size_t *out_len, perch_err *err)
{
	*err = PERCH_OK;
	if (id->kind == HUB_IDENT_ANONYMOUS)
		return false;
	perch_iothub_topic t;
	if (perch_iothub_topic_parse(topic, &t, NULL) != PERCH_OK ||
	    (t.kind != PERCH_IOTHUB_TELEMETRY && t.kind != PERCH_IOTHUB_MODULE_OUTPUT))
		return false;
	/* A child edge hub speaks for its modules and leaf devices: the origin
	 * comes from the topic, which hub_authz_publish has authorized against
	 * the registration (never from the property bag the child sent). */
	hub_identity origin;
	if (!hub_identity_origin(id, topic, &origin)) {
		*err = PERCH_EINVAL;
		return false;
	}
	id = &origin;
	perch_props *props = perch_malloc(sizeof *props);
	if (props == NULL) {
		*err = PERCH_ENOMEM;
		return false;
	}
	perch_err e = perch_props_parse(t.props, props, NULL);
	if (e == PERCH_OK) {
		(void)perch_props_remove(props, perch_slice_cstr("$.cdid"));
		(void)perch_props_remove(props, perch_slice_cstr("$.cmid"));
		e = perch_props_set(props, perch_slice_cstr("$.cdid"), perch_slice_cstr(id->device),
		                    NULL);
		if (e == PERCH_OK && id->module[0] != '\0')
			e = perch_props_set(props, perch_slice_cstr("$.cmid"),
			                    perch_slice_cstr(id->module), NULL);
	}
	/* The topic up to its property bag, then the stamped bag. */
	size_t head = t.props.len > 0 ? (size_t)(t.props.ptr - topic.ptr) : topic.len;
	bool slash = head > 0 && topic.ptr[head - 1] == '/';
	size_t n = 0;
	if (e == PERCH_OK && head + 1 < cap) {
		memcpy(out, topic.ptr, head);
		if (!slash)
			out[head++] = '/';
		e = perch_props_encode(props, out + head, cap - head, &n);
	} else if (e == PERCH_OK) {
		e = PERCH_ETOOBIG;
	}
	perch_free(props);
	if (e != PERCH_OK) {
		*err = e;
		return false;
	}
	*out_len = head + n;
	return true;
}
