/*
 * modclient.c — the sample modules' MQTT client: settings from the
 * environment, a SAS token signed by the workload API (a small HTTP/1.1
 * request over the unix socket perch-agent mounts in the container), a
 * non-blocking TCP connection driven by poll(2), CONNECT, SUBSCRIBE, QoS 1
 * PUBLISH with an in-flight window, PUBACK, keepalive, and reconnection
 * with backoff. See modclient.h for the contract.
 */
#include "modclient.h"

#include <errno.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/log.h"

#define LOG_MOD            "modclient"
#define CONNECT_TIMEOUT_MS 5000  /* TCP connect */
#define WRITE_TIMEOUT_MS   10000 /* a write that cannot proceed */
#define POLL_SLICE_MS      250   /* longest wait before looking at the stop flag */
#define READ_CHUNK         16384

int64_t modclient_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* --- settings -------------------------------------------------------------- */

/* env returns the value of name when set and non-empty, else NULL. */
static const char *env(const char *name)
{
	const char *v = getenv(name);
	return v != NULL && v[0] != '\0' ? v : NULL;
}

/* copy_setting copies value into out (cap bytes with the NUL). */
static perch_err copy_setting(const char *name, const char *value, char *out, size_t cap)
{
	size_t n = strlen(value);
	if (n >= cap) {
		PERCH_ERROR(LOG_MOD, "%s is longer than %zu bytes", name, cap - 1);
		return PERCH_ETOOBIG;
	}
	memcpy(out, value, n + 1);
	return PERCH_OK;
}

/* check_id refuses an id that cannot be a topic segment. */
static perch_err check_id(const char *name, const char *id)
{
	if (id[0] == '\0' || strpbrk(id, "/+#") != NULL) {
		PERCH_ERROR(LOG_MOD, "%s '%s' is empty or contains '/', '+' or '#'", name, id);
		return PERCH_EINVAL;
	}
	return PERCH_OK;
}

perch_err modclient_config_from_env(modclient_config *cfg, const char *default_module)
{
	perch_err err;
	const char *host = env("PERCH_HUB_HOST");
	const char *port = env("PERCH_HUB_PORT");
	const char *device = env("IOTEDGE_DEVICEID");
	const char *module = env("IOTEDGE_MODULEID");
	const char *iothub = env("IOTEDGE_IOTHUBHOSTNAME");
	const char *password = env("PERCH_HUB_PASSWORD");
	const char *workload = env("IOTEDGE_WORKLOADURI");
	const char *genid = env("IOTEDGE_MODULEGENERATIONID");
	const char *api = env("IOTEDGE_APIVERSION");

	memset(cfg, 0, sizeof *cfg);
	if (host == NULL)
		host = env("IOTEDGE_GATEWAYHOSTNAME");
	if (host == NULL)
		host = "perch-hub";
	if ((err = copy_setting("PERCH_HUB_HOST", host, cfg->host, sizeof cfg->host)) != PERCH_OK)
		return err;

	cfg->port = 1883;
	if (port != NULL) {
		char *end = NULL;
		errno = 0;
		long p = strtol(port, &end, 10);
		if (errno != 0 || end == port || *end != '\0' || p < 1 || p > 65535) {
			PERCH_ERROR(LOG_MOD, "PERCH_HUB_PORT '%s' is not a port number", port);
			return PERCH_EINVAL;
		}
		cfg->port = (uint16_t)p;
	}

	err = copy_setting("IOTEDGE_DEVICEID", device != NULL ? device : "perch-device",
	                   cfg->device_id, sizeof cfg->device_id);
	if (err == PERCH_OK)
		err = copy_setting("IOTEDGE_MODULEID", module != NULL ? module : default_module,
		                   cfg->module_id, sizeof cfg->module_id);
	if (err == PERCH_OK)
		err = copy_setting("IOTEDGE_IOTHUBHOSTNAME", iothub != NULL ? iothub : cfg->host,
		                   cfg->iothub_host, sizeof cfg->iothub_host);
	if (err == PERCH_OK && password != NULL)
		err = copy_setting("PERCH_HUB_PASSWORD", password, cfg->password,
		                   sizeof cfg->password);
	if (err == PERCH_OK)
		err = check_id("IOTEDGE_DEVICEID", cfg->device_id);
	if (err == PERCH_OK)
		err = check_id("IOTEDGE_MODULEID", cfg->module_id);
	if (err == PERCH_OK && workload != NULL && password == NULL) {
		static const char scheme[] = "unix://";
		if (strncmp(workload, scheme, sizeof scheme - 1) != 0) {
			PERCH_ERROR(LOG_MOD, "IOTEDGE_WORKLOADURI '%s' is not unix:///PATH",
			            workload);
			return PERCH_EINVAL;
		}
		if (genid == NULL) {
			PERCH_ERROR(LOG_MOD,
			            "IOTEDGE_WORKLOADURI is set, IOTEDGE_MODULEGENERATIONID "
			            "is not");
			return PERCH_EINVAL;
		}
		err = copy_setting("IOTEDGE_WORKLOADURI", workload + sizeof scheme - 1,
		                   cfg->workload_path, sizeof cfg->workload_path);
		if (err == PERCH_OK)
			err = copy_setting("IOTEDGE_MODULEGENERATIONID", genid, cfg->generation_id,
			                   sizeof cfg->generation_id);
		if (err == PERCH_OK)
			err = copy_setting("IOTEDGE_APIVERSION", api != NULL ? api : "2019-01-30",
			                   cfg->workload_api, sizeof cfg->workload_api);
	}
	return err;
}

/* --- SAS tokens from the workload API --------------------------------------- */

/* url_encode appends s to out (cap bytes, NUL kept) with every byte but
 * A-Z a-z 0-9 - _ . ~ percent-encoded (encodeURIComponent, strict). */
static bool url_encode(const char *s, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t k = strlen(out);
	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;
		bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		             (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
		if (k + (plain ? 1 : 3) >= cap)
			return false;
		if (plain) {
			out[k++] = (char)c;
		} else {
			out[k++] = '%';
			out[k++] = hex[c >> 4];
			out[k++] = hex[c & 15];
		}
	}
	out[k] = '\0';
	return true;
}

static bool base64(const unsigned char *in, size_t n, char *out, size_t cap)
{
	static const char tbl[] =
	        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t k = 0;
	if ((n + 2) / 3 * 4 + 1 > cap)
		return false;
	for (size_t i = 0; i < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16;
		if (i + 1 < n)
			v |= (uint32_t)in[i + 1] << 8;
		if (i + 2 < n)
			v |= in[i + 2];
		out[k++] = tbl[(v >> 18) & 63];
		out[k++] = tbl[(v >> 12) & 63];
		out[k++] = (char)(i + 1 < n ? tbl[(v >> 6) & 63] : '=');
		out[k++] = (char)(i + 2 < n ? tbl[v & 63] : '=');
	}
	out[k] = '\0';
	return true;
}

/* exchange sends req on a new connection to path and reads the whole answer
 * into resp (cap bytes, NUL-terminated), within MODCLIENT_WORKLOAD_TIMEOUT_MS. */
static perch_err exchange(const char *path, const char *req, size_t len, char *resp, size_t cap,
                          char *why, size_t wcap)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(why, wcap, "workload socket path too long");
		return PERCH_ETOOBIG;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		snprintf(why, wcap, "workload socket %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return PERCH_EIO;
	}
	int64_t deadline = modclient_now_ms() + MODCLIENT_WORKLOAD_TIMEOUT_MS;
	size_t off = 0, got = 0;
	perch_err err = PERCH_OK;
	for (;;) {
		int64_t left = deadline - modclient_now_ms();
		if (left <= 0) {
			snprintf(why, wcap, "workload API: no answer in time");
			err = PERCH_EIO;
			break;
		}
		struct pollfd p = {.fd = fd, .events = off < len ? POLLOUT : POLLIN};
		if (poll(&p, 1, (int)left) <= 0)
			continue;
		if (off < len) {
			ssize_t w = send(fd, req + off, len - off, MSG_NOSIGNAL);
			if (w < 0 && errno != EAGAIN && errno != EINTR) {
				snprintf(why, wcap, "workload API: %s", strerror(errno));
				err = PERCH_EIO;
				break;
			}
			off += w > 0 ? (size_t)w : 0;
			continue;
		}
		ssize_t r = recv(fd, resp + got, cap - 1 - got, 0);
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (r <= 0 || got + (size_t)r >= cap - 1) {
			got += r > 0 ? (size_t)r : 0;
			break;
		}
		got += (size_t)r;
	}
	close(fd);
	resp[got] = '\0';
	return err;
}

/* json_field finds "key":"value" in text and copies value (no escapes). */
static bool json_field(const char *text, const char *key, char *out, size_t cap)
{
	char pat[64];
	snprintf(pat, sizeof pat, "\"%s\"", key);
	const char *p = strstr(text, pat);
	if (p == NULL)
		return false;
	p += strlen(pat);
	while (*p == ' ' || *p == ':')
		p++;
	if (*p++ != '"')
		return false;
	const char *end = strchr(p, '"');
	if (end == NULL || (size_t)(end - p) >= cap)
		return false;
	memcpy(out, p, (size_t)(end - p));
	out[end - p] = '\0';
	return true;
}

perch_err modclient_workload_token(const modclient_config *cfg, uint64_t expiry, char *out,
                                   size_t cap, char *why, size_t wcap)
{
	char resource[MODCLIENT_MAX_HOST + 2 * MODCLIENT_MAX_ID + 32];
	char sr[3 * sizeof resource] = "", to_sign[sizeof sr + 32], data[sizeof to_sign * 2];
	char path[3 * 2 * MODCLIENT_MAX_ID + 32], body[sizeof data + 96];
	char req[sizeof path + sizeof body + 256], resp[4096];
	char digest[128], sig[3 * sizeof digest] = "", message[256];

	snprintf(resource, sizeof resource, "%s/devices/%s/modules/%s", cfg->iothub_host,
	         cfg->device_id, cfg->module_id);
	if (!url_encode(resource, sr, sizeof sr)) {
		snprintf(why, wcap, "resource too long");
		return PERCH_ETOOBIG;
	}
	int n = snprintf(to_sign, sizeof to_sign, "%s\n%llu", sr, (unsigned long long)expiry);
	if (n < 0 || (size_t)n >= sizeof to_sign ||
	    !base64((const unsigned char *)to_sign, (size_t)n, data, sizeof data)) {
		snprintf(why, wcap, "resource too long");
		return PERCH_ETOOBIG;
	}
	char mod_enc[3 * MODCLIENT_MAX_ID + 1] = "", gen_enc[3 * MODCLIENT_MAX_ID + 1] = "";
	if (!url_encode(cfg->module_id, mod_enc, sizeof mod_enc) ||
	    !url_encode(cfg->generation_id, gen_enc, sizeof gen_enc)) {
		snprintf(why, wcap, "module or generation id too long");
		return PERCH_ETOOBIG;
	}
	snprintf(path, sizeof path, "/modules/%s/genid/%s", mod_enc, gen_enc);
	snprintf(body, sizeof body,
	         "{\"keyId\":\"primary\",\"algo\":\"HMACSHA256\",\"data\":\"%s\"}", data);
	n = snprintf(req, sizeof req,
	             "POST %s/sign?api-version=%s HTTP/1.1\r\nHost: localhost\r\n"
	             "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	             "Connection: close\r\n\r\n%s",
	             path, cfg->workload_api, strlen(body), body);
	if (n < 0 || (size_t)n >= sizeof req) {
		snprintf(why, wcap, "request too long");
		return PERCH_ETOOBIG;
	}
	perch_err err = exchange(cfg->workload_path, req, (size_t)n, resp, sizeof resp, why, wcap);
	if (err != PERCH_OK)
		return err;
	/* "HTTP/1.x NNN ..." */
	char *end = NULL;
	long status = 0;
	if (strlen(resp) >= 12 && strncmp(resp, "HTTP/1.", 7) == 0 && resp[8] == ' ')
		status = strtol(resp + 9, &end, 10);
	if (end == NULL || end != resp + 12 || status < 100 || status > 599) {
		snprintf(why, wcap, "workload API: not an HTTP answer");
		return PERCH_EPROTO;
	}
	const char *json = strstr(resp, "\r\n\r\n");
	json = json != NULL ? json + 4 : "";
	if (status != 200) {
		if (!json_field(json, "message", message, sizeof message))
			snprintf(message, sizeof message, "(no message)");
		snprintf(why, wcap, "workload API refused to sign (HTTP %ld): %s", status, message);
		return PERCH_EPERM;
	}
	if (!json_field(json, "digest", digest, sizeof digest) ||
	    !url_encode(digest, sig, sizeof sig)) {
		snprintf(why, wcap, "workload API: no digest in its answer");
		return PERCH_EPROTO;
	}
	n = snprintf(out, cap, "SharedAccessSignature sr=%s&sig=%s&se=%llu", sr, sig,
	             (unsigned long long)expiry);
	if (n < 0 || (size_t)n >= cap) {
		snprintf(why, wcap, "token too long");
		return PERCH_ETOOBIG;
	}
	return PERCH_OK;
}

perch_err modclient_env_double(const char *name, double def, double *out)
{
	const char *v = env(name);
	*out = def;
	if (v == NULL)
		return PERCH_OK;
	char *end = NULL;
	errno = 0;
	double d = strtod(v, &end);
	if (errno != 0 || end == v || *end != '\0' || !isfinite(d)) {
		PERCH_ERROR(LOG_MOD, "%s '%s' is not a number", name, v);
		return PERCH_EINVAL;
	}
	*out = d;
	return PERCH_OK;
}

/* --- setup ------------------------------------------------------------------- */

void modclient_init(modclient *c, const modclient_config *cfg, const volatile sig_atomic_t *stop)
{
	memset(c, 0, sizeof *c);
	c->cfg = *cfg;
	c->stop = stop;
	c->fd = -1;
	c->next_id = 1;
	c->backoff_ms = MODCLIENT_BACKOFF_MIN_MS;
	c->rng = (uint64_t)modclient_now_ms() ^ ((uint64_t)getpid() << 32) ^ 0x9e3779b97f4a7c15u;
}

void modclient_set_handler(modclient *c, modclient_on_message cb, void *arg)
{
	c->on_message = cb;
	c->on_message_arg = arg;
}

perch_err modclient_subscribe(modclient *c, const char *filter)
{
	size_t n = strlen(filter);
	if (n == 0)
		return PERCH_EINVAL;
	if (n > MODCLIENT_MAX_FILTER)
		return PERCH_ETOOBIG;
	if (c->nsubs >= MODCLIENT_MAX_SUBS)
		return PERCH_ENOSPC;
	memcpy(c->subs[c->nsubs++], filter, n + 1);
	return PERCH_OK;
}

perch_err modclient_inputs_filter(const modclient *c, char *out, size_t cap)
{
	int n = snprintf(out, cap, "devices/%s/modules/%s/#", c->cfg.device_id, c->cfg.module_id);
	return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
}

bool modclient_connected(const modclient *c)
{
	return c->fd >= 0 && c->ready;
}

size_t modclient_pending(const modclient *c)
{
	return c->ninflight;
}

/* --- connection ------------------------------------------------------------------ */

/* jitter returns ms scaled by a random factor in [0.75, 1.25). */
static int jitter(modclient *c, int ms)
{
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return (int)((double)ms * (0.75 + (double)(c->rng % 1000) / 2000.0));
}

/* drop closes the connection (if any) and schedules the next attempt;
 * in-flight messages stay and are sent again after the next CONNACK. */
static void drop(modclient *c, const char *why)
{
	int delay = jitter(c, c->backoff_ms);
	if (c->fd >= 0) {
		close(c->fd);
		c->fd = -1;
	}
	perch_mqtt_decoder_fini(&c->dec);
	c->ready = false;
	c->sub_packet_id = 0;
	for (size_t i = 0; i < MODCLIENT_MAX_INFLIGHT; i++)
		c->inflight[i].sent = false;
	c->attempts++;
	c->retry_at_ms = modclient_now_ms() + delay;
	c->backoff_ms = c->backoff_ms >= MODCLIENT_BACKOFF_MAX_MS / 2 ? MODCLIENT_BACKOFF_MAX_MS
	                                                              : c->backoff_ms * 2;
	perch_log(c->attempts > 1 ? PERCH_LOG_INFO : PERCH_LOG_WARN, LOG_MOD,
	          "%s/%s: hub %s:%u: %s; retrying in %d.%01ds (attempt %u)", c->cfg.device_id,
	          c->cfg.module_id, c->cfg.host, (unsigned)c->cfg.port, why, delay / 1000,
	          (delay % 1000) / 100, c->attempts);
}

/* send_all writes len bytes, waiting (bounded) while the socket is full. */
static perch_err send_all(modclient *c, const uint8_t *buf, size_t len)
{
	int64_t deadline = modclient_now_ms() + WRITE_TIMEOUT_MS;
	while (len > 0) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int64_t left = deadline - modclient_now_ms();
			if (left <= 0)
				return PERCH_ETIMEDOUT;
			struct pollfd p = {.fd = c->fd, .events = POLLOUT};
			(void)poll(&p, 1, (int)(left < POLL_SLICE_MS ? left : POLL_SLICE_MS));
			continue;
		}
		return PERCH_EIO;
	}
	c->last_send_ms = modclient_now_ms();
	return PERCH_OK;
}

/* send_packet encodes pkt on the stack (small control packets) and sends it. */
static perch_err send_packet(modclient *c, const perch_mqtt_packet *pkt)
{
	uint8_t buf[MODCLIENT_MAX_PASSWORD + 1024];
	size_t len = 0;
	perch_err err = perch_mqtt_encode(pkt, buf, sizeof buf, &len);
	if (err == PERCH_OK)
		err = send_all(c, buf, len);
	return err;
}

/* tcp_connect opens a non-blocking TCP connection to the hub, or fails with
 * a reason in why. */
static int tcp_connect(modclient *c, char *why, size_t cap)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	struct addrinfo *res = NULL;
	char port[8];
	int fd = -1;

	snprintf(port, sizeof port, "%u", (unsigned)c->cfg.port);
	int gai = getaddrinfo(c->cfg.host, port, &hints, &res);
	if (gai != 0) {
		snprintf(why, cap, "cannot resolve: %s", gai_strerror(gai));
		return -1;
	}
	snprintf(why, cap, "no address");
	for (struct addrinfo *ai = res; ai != NULL && fd < 0; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		            ai->ai_protocol);
		if (fd < 0) {
			snprintf(why, cap, "socket: %s", strerror(errno));
			continue;
		}
		int rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
		if (rc < 0 && errno == EINPROGRESS) {
			struct pollfd p = {.fd = fd, .events = POLLOUT};
			int soerr = 0;
			socklen_t sl = sizeof soerr;
			rc = poll(&p, 1, CONNECT_TIMEOUT_MS);
			if (rc == 0) {
				errno = ETIMEDOUT;
				rc = -1;
			} else if (rc > 0 &&
			           getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0) {
				errno = soerr;
				rc = soerr == 0 ? 0 : -1;
			} else {
				rc = -1;
			}
		}
		if (rc < 0) {
			snprintf(why, cap, "cannot connect: %s", strerror(errno));
			close(fd);
			fd = -1;
		}
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	}
	return fd;
}

/* start_connect opens the socket and sends CONNECT. */
static void start_connect(modclient *c)
{
	char why[256];
	char client_id[2 * MODCLIENT_MAX_ID + 2];
	char username[MODCLIENT_MAX_HOST + 2 * MODCLIENT_MAX_ID + 64];

	c->fd = tcp_connect(c, why, sizeof why);
	if (c->fd < 0) {
		drop(c, why);
		return;
	}
	perch_mqtt_decoder_init(&c->dec, PERCH_MQTT_CLIENT, MODCLIENT_MAX_PACKET, 0);
	snprintf(client_id, sizeof client_id, "%s/%s", c->cfg.device_id, c->cfg.module_id);
	snprintf(username, sizeof username, "%s/%s/%s/?api-version=%s", c->cfg.iothub_host,
	         c->cfg.device_id, c->cfg.module_id, MODCLIENT_API_VERSION);

	perch_mqtt_packet pkt = {.type = PERCH_MQTT_CONNECT};
	pkt.connect.client_id = perch_slice_cstr(client_id);
	pkt.connect.username = perch_slice_cstr(username);
	pkt.connect.has_username = true;
	/* The password: PERCH_HUB_PASSWORD as given, else a SAS token signed
	 * by the workload API now (renewed by reconnecting), else none. */
	char token[MODCLIENT_MAX_PASSWORD + 1];
	c->token_expiry = 0;
	if (c->cfg.password[0] != '\0') {
		pkt.connect.password = perch_slice_cstr(c->cfg.password);
		pkt.connect.has_password = true;
	} else if (c->cfg.workload_path[0] != '\0') {
		uint64_t expiry = (uint64_t)time(NULL) + MODCLIENT_TOKEN_LIFETIME_S;
		if (modclient_workload_token(&c->cfg, expiry, token, sizeof token, why,
		                             sizeof why) != PERCH_OK) {
			drop(c, why);
			return;
		}
		pkt.connect.password = perch_slice_cstr(token);
		pkt.connect.has_password = true;
		c->token_expiry = (int64_t)expiry;
	}
	pkt.connect.keep_alive = MODCLIENT_KEEPALIVE_S;
	pkt.connect.clean_session = false;

	c->connect_ms = c->last_recv_ms = modclient_now_ms();
	if (send_packet(c, &pkt) != PERCH_OK)
		drop(c, "cannot send CONNECT");
}

/* next_packet_id returns an id in use neither by an in-flight message nor by
 * the pending SUBSCRIBE. */
static uint16_t next_packet_id(modclient *c)
{
	for (;;) {
		uint16_t id = c->next_id;
		c->next_id = (uint16_t)(c->next_id == 65535 ? 1 : c->next_id + 1);
		bool used = id == c->sub_packet_id;
		for (size_t i = 0; i < MODCLIENT_MAX_INFLIGHT && !used; i++)
			used = c->inflight[i].packet != NULL && c->inflight[i].packet_id == id;
		if (!used)
			return id;
	}
}

/* flush_inflight writes every in-flight message not yet written on this
 * connection, with DUP set when it was written before. */
static perch_err flush_inflight(modclient *c)
{
	for (size_t i = 0; i < MODCLIENT_MAX_INFLIGHT; i++) {
		modclient_inflight *m = &c->inflight[i];
		if (m->packet == NULL || m->sent)
			continue;
		perch_err err = send_all(c, m->packet, m->len);
		if (err != PERCH_OK)
			return err;
		m->sent = true;
		m->sent_ms = modclient_now_ms();
		m->packet[0] |= 0x08; /* DUP from now on: a later copy is a resend */
	}
	return PERCH_OK;
}

static void became_ready(modclient *c)
{
	c->ready = true;
	PERCH_NOTICE(LOG_MOD, "%s/%s: connected to hub %s:%u%s", c->cfg.device_id, c->cfg.module_id,
	             c->cfg.host, (unsigned)c->cfg.port,
	             c->ninflight > 0 ? " (resending unacknowledged messages)" : "");
	c->attempts = 0;
	c->backoff_ms = MODCLIENT_BACKOFF_MIN_MS;
}

static perch_err on_connack(modclient *c, const perch_mqtt_connack *ack)
{
	if (ack->return_code != PERCH_MQTT_CONNACK_ACCEPTED) {
		char why[192];
		snprintf(why, sizeof why, "login refused (CONNACK %u%s)", ack->return_code,
		         ack->return_code == PERCH_MQTT_CONNACK_NOT_AUTHORIZED
		                 ? ": not authorized; does the hub know this module (its "
		                   "deployment file), or is it run with --allow-anonymous?"
		                 : "");
		drop(c, why);
		return PERCH_EPERM;
	}
	if (c->nsubs > 0) {
		perch_mqtt_filter filters[MODCLIENT_MAX_SUBS];
		for (size_t i = 0; i < c->nsubs; i++)
			filters[i] = (perch_mqtt_filter){perch_slice_cstr(c->subs[i]), 1};
		c->sub_packet_id = next_packet_id(c);
		perch_mqtt_packet sub = {.type = PERCH_MQTT_SUBSCRIBE};
		sub.subscribe.packet_id = c->sub_packet_id;
		sub.subscribe.count = c->nsubs;
		sub.subscribe.entries = filters;
		perch_err err = send_packet(c, &sub);
		if (err != PERCH_OK)
			return err;
	} else {
		became_ready(c);
	}
	return flush_inflight(c);
}

static perch_err on_suback(modclient *c, const perch_mqtt_suback *ack)
{
	if (ack->packet_id != c->sub_packet_id)
		return PERCH_OK;
	for (size_t i = 0; i < ack->count && i < c->nsubs; i++)
		if (ack->codes[i] == PERCH_MQTT_SUBACK_FAILURE)
			PERCH_ERROR(LOG_MOD, "%s/%s: the hub refused the subscription to '%s'",
			            c->cfg.device_id, c->cfg.module_id, c->subs[i]);
	c->sub_packet_id = 0;
	became_ready(c);
	return PERCH_OK;
}

static void on_puback(modclient *c, uint16_t id)
{
	for (size_t i = 0; i < MODCLIENT_MAX_INFLIGHT; i++) {
		modclient_inflight *m = &c->inflight[i];
		if (m->packet != NULL && m->packet_id == id) {
			perch_free(m->packet);
			memset(m, 0, sizeof *m);
			c->ninflight--;
			c->published++;
			return;
		}
	}
}

static perch_err on_publish(modclient *c, const perch_mqtt_publish *pub)
{
	modclient_message msg = {.topic = pub->topic, .body = pub->payload};
	perch_iothub_topic t;
	if (perch_iothub_topic_parse(pub->topic, &t, NULL) == PERCH_OK) {
		if (t.kind == PERCH_IOTHUB_MODULE_INPUT)
			msg.input = t.input;
		if (t.kind == PERCH_IOTHUB_MODULE_INPUT || t.kind == PERCH_IOTHUB_MODULE_OUTPUT ||
		    t.kind == PERCH_IOTHUB_TELEMETRY || t.kind == PERCH_IOTHUB_C2D)
			msg.props = t.props;
	}
	if (c->on_message != NULL) {
		perch_err err = c->on_message(c->on_message_arg, &msg);
		if (err != PERCH_OK) {
			if (c->fd >= 0)
				drop(c, "message not handled; the hub will deliver it again");
			return err;
		}
		if (c->fd < 0)
			return PERCH_ECLOSED; /* lost while the callback published */
	}
	c->received++;
	if (pub->qos == 0)
		return PERCH_OK;
	perch_mqtt_packet ack = {.type = PERCH_MQTT_PUBACK};
	ack.ack.packet_id = pub->packet_id;
	return send_packet(c, &ack);
}

/* handle acts on one packet from the hub. An error means the connection is
 * gone (dropped here or to be dropped by the caller). */
static perch_err handle(modclient *c, const perch_mqtt_packet *pkt)
{
	switch (pkt->type) {
	case PERCH_MQTT_CONNACK: return on_connack(c, &pkt->connack);
	case PERCH_MQTT_SUBACK: return on_suback(c, &pkt->suback);
	case PERCH_MQTT_PUBACK: on_puback(c, pkt->ack.packet_id); return PERCH_OK;
	case PERCH_MQTT_PUBLISH: return on_publish(c, &pkt->publish);
	case PERCH_MQTT_PINGRESP: return PERCH_OK;
	default:
		/* PUBREC/PUBCOMP/UNSUBACK: nothing here asks for them. */
		return PERCH_OK;
	}
}

/* read_some reads what the socket has and handles every whole packet. */
static void read_some(modclient *c)
{
	uint8_t buf[READ_CHUNK];
	ssize_t n = recv(c->fd, buf, sizeof buf, 0);
	if (n == 0) {
		drop(c, "connection closed by the hub");
		return;
	}
	if (n < 0) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			char why[128];
			snprintf(why, sizeof why, "read: %s", strerror(errno));
			drop(c, why);
		}
		return;
	}
	c->last_recv_ms = modclient_now_ms();
	const uint8_t *p = buf;
	size_t left = (size_t)n;
	while (left > 0 && c->fd >= 0) {
		perch_mqtt_packet pkt;
		size_t used = 0;
		perch_err err = perch_mqtt_decode(&c->dec, p, left, &used, &pkt);
		p += used;
		left -= used;
		if (err == PERCH_EAGAIN)
			break;
		if (err != PERCH_OK) {
			char why[160];
			snprintf(why, sizeof why, "protocol error from the hub: %s",
			         perch_mqtt_reason_str(perch_mqtt_decoder_reason(&c->dec)));
			drop(c, why);
			return;
		}
		/* handle() drops the connection itself when it cannot go on,
		 * except for a failed write: drop here for that. */
		if (handle(c, &pkt) != PERCH_OK && c->fd >= 0)
			drop(c, "cannot write to the hub");
	}
}

/* check_timers enforces the CONNACK/SUBACK/PUBACK waits and keepalive. */
static void check_timers(modclient *c)
{
	int64_t now = modclient_now_ms();
	if (!c->ready && now - c->connect_ms > MODCLIENT_ACK_TIMEOUT_MS) {
		drop(c, "no CONNACK or SUBACK in time");
		return;
	}
	for (size_t i = 0; i < MODCLIENT_MAX_INFLIGHT; i++) {
		const modclient_inflight *m = &c->inflight[i];
		if (m->packet != NULL && m->sent && now - m->sent_ms > MODCLIENT_ACK_TIMEOUT_MS) {
			drop(c, "no PUBACK in time");
			return;
		}
	}
	if (now - c->last_recv_ms > (int64_t)MODCLIENT_KEEPALIVE_S * 1500) {
		drop(c, "the hub went silent (keepalive)");
		return;
	}
	if (now - c->last_send_ms >= (int64_t)MODCLIENT_KEEPALIVE_S * 500) {
		perch_mqtt_packet ping = {.type = PERCH_MQTT_PINGREQ};
		if (send_packet(c, &ping) != PERCH_OK)
			drop(c, "cannot send PINGREQ");
	}
}

perch_err modclient_run(modclient *c, int timeout_ms)
{
	int64_t deadline = modclient_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
	for (;;) {
		if (c->stop != NULL && *c->stop)
			return PERCH_ECLOSED;
		int64_t now = modclient_now_ms();
		if (c->fd < 0 && now >= c->retry_at_ms)
			start_connect(c);
		if (c->fd >= 0 && c->ready && flush_inflight(c) != PERCH_OK)
			drop(c, "cannot write to the hub");
		if (c->fd >= 0 && c->ready && c->token_expiry != 0 &&
		    (int64_t)time(NULL) >= c->token_expiry - MODCLIENT_TOKEN_RENEW_S) {
			c->backoff_ms = MODCLIENT_BACKOFF_MIN_MS;
			drop(c, "SAS token about to expire: reconnecting with a new one");
		}

		now = modclient_now_ms();
		int64_t wait = deadline - now;
		if (c->fd < 0 && c->retry_at_ms - now < wait)
			wait = c->retry_at_ms - now;
		if (wait > POLL_SLICE_MS)
			wait = POLL_SLICE_MS;
		if (wait < 0)
			wait = 0;

		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int rc = poll(&p, c->fd >= 0 ? 1 : 0, (int)wait);
		bool got = false;
		if (rc > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
			read_some(c);
			got = true;
		}
		if (c->fd >= 0)
			check_timers(c);
		if (got || modclient_now_ms() >= deadline)
			return c->stop != NULL && *c->stop ? PERCH_ECLOSED : PERCH_OK;
	}
}

/* --- publishing -------------------------------------------------------------- */

perch_err modclient_publish_output(modclient *c, const char *output, const perch_props *props,
                                   perch_slice body)
{
	static const char events[] = "/messages/events/";
	perch_props bag;
	perch_err err;
	char enc[PERCH_PROPS_MAX_ENCODED];
	size_t enc_len = 0;
	char topic[PERCH_IOTHUB_MAX_TOPIC];
	size_t slot = MODCLIENT_MAX_INFLIGHT;

	if (output == NULL || output[0] == '\0' || strpbrk(output, "/+#") != NULL)
		return PERCH_EINVAL;
	if (c->ninflight >= MODCLIENT_MAX_INFLIGHT)
		return PERCH_ENOSPC;
	for (size_t i = 0; i < MODCLIENT_MAX_INFLIGHT && slot == MODCLIENT_MAX_INFLIGHT; i++)
		if (c->inflight[i].packet == NULL)
			slot = i;
	if (slot == MODCLIENT_MAX_INFLIGHT)
		return PERCH_EINTERNAL;

	/* Application properties first, then the system ones (replacing any
	 * the caller passed), in the order the Azure IoT C SDK writes them. */
	if (props != NULL)
		bag = *props;
	else
		perch_props_init(&bag);
	err = perch_props_set(&bag, PERCH_SLICE_LIT("$.ct"), PERCH_SLICE_LIT("application/json"),
	                      NULL);
	if (err == PERCH_OK)
		err = perch_props_set(&bag, PERCH_SLICE_LIT("$.ce"), PERCH_SLICE_LIT("utf-8"),
		                      NULL);
	if (err == PERCH_OK)
		err = perch_props_set(&bag, PERCH_SLICE_LIT("$.on"), perch_slice_cstr(output),
		                      NULL);
	if (err == PERCH_OK)
		err = perch_props_encode(&bag, enc, sizeof enc, &enc_len);
	if (err != PERCH_OK)
		return err;

	int n = snprintf(topic, sizeof topic, "devices/%s/modules/%s%s%.*s", c->cfg.device_id,
	                 c->cfg.module_id, events, (int)enc_len, enc);
	if (n < 0 || (size_t)n >= sizeof topic)
		return PERCH_ETOOBIG;

	perch_mqtt_packet pkt = {.type = PERCH_MQTT_PUBLISH};
	pkt.publish.topic = (perch_slice){topic, (size_t)n};
	pkt.publish.payload = body;
	pkt.publish.qos = 1;
	pkt.publish.packet_id = next_packet_id(c);
	size_t size = 0;
	if ((err = perch_mqtt_encoded_size(&pkt, &size)) != PERCH_OK)
		return err;
	if (size > MODCLIENT_MAX_PACKET)
		return PERCH_ETOOBIG;
	uint8_t *buf = perch_malloc(size);
	if (buf == NULL)
		return PERCH_ENOMEM;
	size_t len = 0;
	if ((err = perch_mqtt_encode(&pkt, buf, size, &len)) != PERCH_OK) {
		perch_free(buf);
		return err;
	}
	c->inflight[slot] =
	        (modclient_inflight){.packet = buf, .len = len, .packet_id = pkt.publish.packet_id};
	c->ninflight++;
	if (c->fd >= 0 && c->ready && flush_inflight(c) != PERCH_OK)
		drop(c, "cannot write to the hub");
	return PERCH_OK;
}

void modclient_fini(modclient *c)
{
	if (c->fd >= 0) {
		if (c->ready) {
			perch_mqtt_packet bye = {.type = PERCH_MQTT_DISCONNECT};
			(void)send_packet(c, &bye);
		}
		close(c->fd);
	}
	c->fd = -1;
	c->ready = false;
	perch_mqtt_decoder_fini(&c->dec);
	for (size_t i = 0; i < MODCLIENT_MAX_INFLIGHT; i++) {
		perch_free(c->inflight[i].packet);
		memset(&c->inflight[i], 0, sizeof c->inflight[i]);
	}
	c->ninflight = 0;
}
