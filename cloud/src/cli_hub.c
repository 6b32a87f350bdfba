/*
 * cli_hub.c — the `perch` commands that talk to the local perch-hub's REST
 * endpoints (docs/hub.md "Direct methods", docs/leaf-devices.md), as the
 * edge device's own identity:
 *
 *   perch method TARGET METHOD   POST /twins/{d}[/modules/{m}]/methods
 *   perch c2d DEVICE             POST /devices/{d}/messages/devicebound
 *   perch twin TARGET            GET /twins/{d}[/modules/{m}]
 *   perch twin TARGET --desired  PATCH /twins/{d}[/modules/{m}]
 *
 * Each call signs a SAS token for {iothub_hostname}/devices/{device.id} with
 * the device key (device.key_file), valid for TOKEN_LIFETIME_S; the key and
 * the token live in stack buffers that are wiped before the function
 * returns, and neither is ever printed. Answers: a method's {"status",
 * "payload"} on stdout (exit 0 for a 2xx status, 1 for another); a C2D
 * message's id on stdout; a twin as indented JSON on stdout; the hub's
 * refusals as one line on stderr with its errorCode and message (exit 2).
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cli.h"
#include "perch/alloc.h"
#include "perch/sas.h"

#define TOKEN_LIFETIME_S   300          /* seconds a token of the CLI is valid */
#define CONNECT_MS         5000         /* the TCP connect (and TLS) must be done by then */
#define ANSWER_MARGIN_MS   10000        /* beyond the method's own timeouts */
#define C2D_TOTAL_MS       30000        /* a C2D request, start to end */
#define C2D_BODY_MAX       (64u << 10)  /* IoT Hub's limit on a C2D message */
#define C2D_PROPS_MAX      8192         /* bytes of the URL-encoded property bag */
#define METHOD_PAYLOAD_MAX (128u << 10) /* IoT Hub's limit on a method payload */
#define TWIN_TOTAL_MS      30000        /* a twin GET or PATCH, start to end */
#define TWIN_DESIRED_MAX   (128u << 10) /* bytes of --desired as given; the hub checks the rest */
#define TIMEOUT_DEFAULT_S  30
#define TIMEOUT_MIN_S      5
#define TIMEOUT_MAX_S      300
#define TTL_MAX_S          172800

/* ---- shared ------------------------------------------------------------------ */

perch_err cli_url_encode(const char *s, char *out, size_t cap, size_t *at)
{
	static const char hex[] = "0123456789ABCDEF";
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		bool keep = (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		            (ch >= '0' && ch <= '9') || strchr("-._~", ch) != NULL;
		size_t need = keep ? 1 : 3;
		if (*at + need >= cap)
			return PERCH_ETOOBIG;
		if (keep) {
			out[(*at)++] = (char)ch;
		} else {
			out[(*at)++] = '%';
			out[(*at)++] = hex[ch >> 4];
			out[(*at)++] = hex[ch & 15];
		}
	}
	out[*at] = '\0';
	return PERCH_OK;
}

/* auth_header writes "Authorization: SharedAccessSignature ..." for the edge
 * device into out, and the device id into dev. Errors are on stderr. */
static perch_err auth_header(const cli *c, char *out, size_t cap, char *dev, size_t dev_cap)
{
	const perch_device_settings *d = &c->cfg.device;
	perch_err err = perch_device_id(d, dev, dev_cap);
	if (err != PERCH_OK) {
		fprintf(stderr, "perch: no usable device id (device.id, or the host name)\n");
		return err;
	}
	char key[PERCH_DEVICE_KEY_MAX + 1];
	err = perch_device_key_load(d->key_file, key, sizeof key);
	if (err != PERCH_OK) {
		fprintf(stderr, "perch: cannot use the device key file %s: %s\n", d->key_file,
		        err == PERCH_ENOENT   ? "no such file"
		        : err == PERCH_EPERM  ? "permission denied, or readable by others than its "
		                                "owner (it must be mode 0600 or 0400)"
		        : err == PERCH_EINVAL ? "not a base64 key"
		                              : perch_strerror(err));
		explicit_bzero(key, sizeof key);
		return err;
	}
	char resource[PERCH_SAS_MAX_RESOURCE];
	int w = snprintf(resource, sizeof resource, "%s/devices/%s", d->iothub_hostname, dev);
	static const char prefix[] = "Authorization: ";
	size_t tok_len = 0;
	if (w < 0 || (size_t)w >= sizeof resource || cap < sizeof prefix) {
		err = PERCH_ETOOBIG;
	} else {
		memcpy(out, prefix, sizeof prefix - 1);
		err = perch_sas_sign((perch_slice){resource, (size_t)w}, (perch_slice){"", 0},
		                     (perch_slice){key, strlen(key)},
		                     (uint64_t)time(NULL) + TOKEN_LIFETIME_S,
		                     out + sizeof prefix - 1, cap - sizeof prefix, &tok_len);
	}
	explicit_bzero(key, sizeof key);
	if (err != PERCH_OK) {
		fprintf(stderr, "perch: cannot sign a token for %s: %s\n", resource,
		        perch_strerror(err));
		return err;
	}
	out[sizeof prefix - 1 + tok_len] = '\0';
	return PERCH_OK;
}

/* hub_refusal writes the hub's error answer as one line: what, status,
 * errorCode and message when the body has them. */
static void hub_refusal(const char *what, const cli_http_answer *a)
{
	json_t *j = a->len > 0 ? json_loadb(a->body, a->len, 0, NULL) : NULL;
	json_t *code = json_object_get(j, "errorCode");
	const char *msg = json_string_value(json_object_get(j, "message"));
	if (json_is_integer(code))
		fprintf(stderr, "perch: %s: perch-hub answered %d (errorCode %lld): %s\n", what,
		        a->status, (long long)json_integer_value(code), msg != NULL ? msg : "");
	else
		fprintf(stderr, "perch: %s: perch-hub answered %d%s%.200s\n", what, a->status,
		        msg != NULL || a->len > 0 ? ": " : "",
		        msg != NULL  ? msg
		        : a->len > 0 ? a->body
		                     : "");
	json_decref(j);
}

/* seconds parses a whole number of seconds in [lo, hi]. */
static bool seconds(const char *text, long lo, long hi, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 10);
	if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* usage_error writes "perch: " and the message, then the command's usage,
 * on stderr; returns CLI_EXIT_USAGE. */
__attribute__((format(printf, 2, 3))) static int usage_error(void (*usage)(FILE *), const char *fmt,
                                                             ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "perch: ");
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	va_end(ap);
	usage(stderr);
	return CLI_EXIT_USAGE;
}

/* operands takes what getopt left: one name (*name) and at most one "-"
 * (*from_stdin, counted in *sources). Returns the first argument too many,
 * or NULL. */
static const char *operands(int argc, char **argv, const char **name, bool *from_stdin,
                            int *sources)
{
	for (int i = optind; i < argc; i++) {
		if (strcmp(argv[i], "-") == 0 && !*from_stdin) {
			*from_stdin = true;
			(*sources)++;
		} else if (*name == NULL) {
			*name = argv[i];
		} else {
			return argv[i];
		}
	}
	return NULL;
}

/* split_target splits TARGET (DEVICE/MODULE, DEVICE/ for a device, or one
 * name) into dev and mod ("" for none), each PERCH_DEVICE_ID_MAX + 1 bytes;
 * *one_name when there was no '/'. false for an empty device, a second '/'
 * or a name over its bound. */
static bool split_target(const char *target, char *dev, char *mod, bool *one_name)
{
	const char *slash = strchr(target, '/');
	size_t dlen = slash == NULL ? strlen(target) : (size_t)(slash - target);
	if (dlen == 0 || dlen > PERCH_DEVICE_ID_MAX ||
	    (slash != NULL && (strlen(slash + 1) > PERCH_DEVICE_ID_MAX || strchr(slash + 1, '/'))))
		return false;
	memcpy(dev, target, dlen);
	dev[dlen] = '\0';
	snprintf(mod, PERCH_DEVICE_ID_MAX + 1, "%s", slash != NULL ? slash + 1 : "");
	*one_name = slash == NULL;
	return true;
}

/* twins_path writes "/twins/{dev}[/modules/{mod}]" and tail (a suffix such
 * as "/methods?api-version=...") into out, URL-encoded; PERCH_ETOOBIG when
 * it does not fit in cap bytes. */
static perch_err twins_path(const char *dev, const char *mod, const char *tail, char *out,
                            size_t cap)
{
	static const char twins[] = "/twins/", mods[] = "/modules/";
	size_t at = sizeof twins - 1, tl = strlen(tail);
	if (cap < sizeof twins)
		return PERCH_ETOOBIG;
	memcpy(out, twins, sizeof twins);
	perch_err err = cli_url_encode(dev, out, cap, &at);
	if (err == PERCH_OK && mod[0] != '\0') {
		if (at + sizeof mods >= cap)
			return PERCH_ETOOBIG;
		memcpy(out + at, mods, sizeof mods);
		at += sizeof mods - 1;
		err = cli_url_encode(mod, out, cap, &at);
	}
	if (err != PERCH_OK || at + tl >= cap)
		return PERCH_ETOOBIG;
	memcpy(out + at, tail, tl + 1);
	return PERCH_OK;
}

/* no_such_module: the hub's answer says there is no module by that name
 * (404, errorCode 404010), so a one-name TARGET may be a device. */
static bool no_such_module(const cli_http_answer *a)
{
	if (a->status != 404 || a->len == 0)
		return false;
	json_t *e = json_loadb(a->body, a->len, 0, NULL);
	bool nm = json_integer_value(json_object_get(e, "errorCode")) == 404010;
	json_decref(e);
	return nm;
}

/* ---- perch method -------------------------------------------------------------- */

void cli_usage_method(FILE *out)
{
	fputs("usage: perch method TARGET METHOD [--payload JSON] [--timeout SECONDS]\n"
	      "                    [--connect-timeout SECONDS]\n"
	      "\n"
	      "Invoke a direct method and print the answer, {\"status\": S, \"payload\": P}.\n"
	      "TARGET: MODULE (a module of this device), DEVICE/MODULE, or DEVICE (this\n"
	      "device or a leaf device; DEVICE/ when a module has that name too).\n"
	      "\n"
	      "  --payload JSON             the request's payload (default null)\n"
	      "  --timeout SECONDS          how long the target has to answer, 5-300 (30)\n"
	      "  --connect-timeout SECONDS  how long to wait for the target to connect, 0-300 (0)\n"
	      "\n"
	      "Exit: 0 the method answered 2xx; 1 it answered another status; 2 perch-hub\n"
	      "refused or failed the call (404 not connected, 504 timed out, 401 ...), or\n"
	      "could not be reached; 64 a bad command line.\n",
	      out);
}

/* method_call makes one call; returns an exit code, and *no_module when the
 * hub said there is no such module (404010) so the caller may try a device. */
static int method_call(const cli *c, const cli_hub *hub, const char *auth, const char *dev,
                       const char *mod, const char *body, size_t body_len, long total_ms,
                       bool quiet_no_module, bool *no_module)
{
	char target[1024], what[600];
	if (twins_path(dev, mod, "/methods?api-version=2021-04-12", target, sizeof target) !=
	    PERCH_OK) {
		fprintf(stderr, "perch: the target's name is too long\n");
		return CLI_EXIT_USAGE;
	}
	snprintf(what, sizeof what, "method on %s%s%s", dev, mod[0] != '\0' ? "/" : "", mod);
	(void)c;
	const char *hdrs[] = {auth, "Content-Type: application/json; charset=utf-8",
	                      "Connection: close"};
	cli_http_answer a;
	if (cli_http_request(hub, "POST", target, hdrs, 3, body, body_len, CONNECT_MS, total_ms,
	                     &a) != PERCH_OK)
		return CLI_EXIT_FAIL;
	int rc = CLI_EXIT_FAIL;
	json_t *j = NULL;
	if (a.status == 200) {
		j = json_loadb(a.body != NULL ? a.body : "", a.len, 0, NULL);
		json_t *st = json_object_get(j, "status");
		if (!json_is_integer(st)) {
			fprintf(stderr,
			        "perch: %s: perch-hub's answer is not {\"status\", \"payload\"}\n",
			        what);
		} else {
			char *text = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY);
			if (text != NULL)
				printf("%s\n", text);
			free(text);
			json_int_t s = json_integer_value(st);
			rc = s >= 200 && s <= 299 ? CLI_EXIT_OK : CLI_EXIT_METHOD;
			if (rc == CLI_EXIT_METHOD)
				fprintf(stderr, "perch: %s: the method answered status %lld\n",
				        what, (long long)s);
		}
	} else {
		bool nm = no_such_module(&a);
		if (no_module != NULL)
			*no_module = nm;
		if (!(nm && quiet_no_module))
			hub_refusal(what, &a);
	}
	json_decref(j);
	cli_http_answer_free(&a);
	return rc;
}

int cli_cmd_method(cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	        {"payload", required_argument, NULL, 'p'},
	        {"timeout", required_argument, NULL, 't'},
	        {"connect-timeout", required_argument, NULL, 'c'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *payload = NULL;
	long timeout = TIMEOUT_DEFAULT_S, connect_timeout = 0;
	int o;
	optind = 0; /* glibc: start afresh, after main's scan */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'p': payload = optarg; break;
		case 't':
			if (!seconds(optarg, TIMEOUT_MIN_S, TIMEOUT_MAX_S, &timeout))
				return usage_error(cli_usage_method,
				                   "--timeout %s: expected whole seconds, 5 to 300",
				                   optarg);
			break;
		case 'c':
			if (!seconds(optarg, 0, TIMEOUT_MAX_S, &connect_timeout))
				return usage_error(
				        cli_usage_method,
				        "--connect-timeout %s: expected whole seconds, 0 to 300",
				        optarg);
			break;
		case 'h': cli_usage_method(stdout); return CLI_EXIT_OK;
		default:
			return usage_error(cli_usage_method,
			                   "method: unknown or incomplete option %s",
			                   argv[optind - 1]);
		}
	}
	if (argc - optind != 2)
		return usage_error(cli_usage_method, "method: expected TARGET and METHOD");
	const char *target = argv[optind], *method = argv[optind + 1];
	size_t mlen = strlen(method);
	if (mlen == 0 || mlen > 128 || strpbrk(method, "/+#?&%") != NULL)
		return usage_error(
		        cli_usage_method,
		        "method: '%s': a method name is 1-128 printable ASCII characters "
		        "other than / + # ? & %%",
		        method);
	for (size_t i = 0; i < mlen; i++)
		if ((unsigned char)method[i] <= 0x20 || (unsigned char)method[i] >= 0x7f)
			return usage_error(cli_usage_method,
			                   "method: '%s': a method name is printable ASCII",
			                   method);
	json_error_t jerr;
	json_t *pj = payload != NULL ? json_loads(payload, JSON_DECODE_ANY, &jerr) : json_null();
	if (pj == NULL)
		return usage_error(cli_usage_method, "--payload: not JSON: %s", jerr.text);
	json_t *req = json_pack("{s:s, s:O, s:I, s:I}", "methodName", method, "payload", pj,
	                        "responseTimeoutInSeconds", (json_int_t)timeout,
	                        "connectTimeoutInSeconds", (json_int_t)connect_timeout);
	json_decref(pj);
	char *body = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (body == NULL) {
		fprintf(stderr, "perch: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	int rc = CLI_EXIT_FAIL;
	if (strlen(body) > METHOD_PAYLOAD_MAX + 4096) {
		fprintf(stderr, "perch: --payload: more than 128 KiB\n");
		rc = CLI_EXIT_USAGE;
		goto out;
	}
	char dev[PERCH_DEVICE_ID_MAX + 1], mod[PERCH_DEVICE_ID_MAX + 1];
	char self[PERCH_DEVICE_ID_MAX + 1];
	bool one_name;
	if (!split_target(target, dev, mod, &one_name)) {
		rc = usage_error(cli_usage_method,
		                 "method: TARGET '%s': expected MODULE, DEVICE, DEVICE/ or "
		                 "DEVICE/MODULE",
		                 target);
		goto out;
	}
	if (cli_load(c) != PERCH_OK)
		goto out;
	char auth[PERCH_SAS_MAX_TOKEN + 32];
	cli_hub hub;
	if (cli_hub_resolve(c, &hub) != PERCH_OK ||
	    auth_header(c, auth, sizeof auth, self, sizeof self) != PERCH_OK)
		goto out_wipe;
	long total_ms = (connect_timeout + timeout) * 1000 + ANSWER_MARGIN_MS;
	size_t blen = strlen(body);
	if (one_name && strcmp(dev, self) != 0) {
		/* a module of this device; when there is none by that name, a device */
		bool no_module = false;
		rc = method_call(c, &hub, auth, self, dev, body, blen, total_ms, true, &no_module);
		if (no_module)
			rc = method_call(c, &hub, auth, dev, "", body, blen, total_ms, false, NULL);
	} else {
		rc = method_call(c, &hub, auth, dev, mod, body, blen, total_ms, false, NULL);
	}
out_wipe:
	explicit_bzero(auth, sizeof auth);
out:
	free(body);
	return rc;
}

/* ---- perch c2d ----------------------------------------------------------------- */

void cli_usage_c2d(FILE *out)
{
	fputs("usage: perch c2d DEVICE [--body TEXT | --file PATH | -] [--property K=V]...\n"
	      "                 [--content-type T] [--content-encoding E] [--message-id ID]\n"
	      "                 [--correlation-id ID] [--ttl SECONDS]\n"
	      "\n"
	      "Send a cloud-to-device message to a leaf device (or this device) through\n"
	      "perch-hub, which keeps it until the device takes it. Prints the message id.\n"
	      "\n"
	      "  --body TEXT             the message (default: empty)\n"
	      "  --file PATH, -          the message from a file, or from standard input\n"
	      "                          (at most 64 KiB)\n"
	      "  --property K=V          an application property (repeatable)\n"
	      "  --content-type T        $.ct, e.g. application/json\n"
	      "  --content-encoding E    $.ce, e.g. utf-8\n"
	      "  --message-id ID         $.mid (default: a new UUID)\n"
	      "  --correlation-id ID     $.cid\n"
	      "  --ttl SECONDS           how long it waits for the device, 1-172800 (3600)\n"
	      "\n"
	      "Exit: 0 perch-hub stored the message; 2 it refused it (404 no such device,\n"
	      "403 the device's queue is full ...) or could not be reached; 64 a bad\n"
	      "command line.\n",
	      out);
}

/* read_body reads at most max bytes of f into *out (owned, NUL-terminated,
 * *len bytes without the NUL); more is a usage error that names limit
 * (e.g. "a C2D message's limit"). Returns an exit code. */
static int read_body(FILE *f, const char *name, size_t max, const char *limit, char **out,
                     size_t *len)
{
	char *buf = perch_malloc(max + 2);
	if (buf == NULL) {
		fprintf(stderr, "perch: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	size_t n = fread(buf, 1, max + 1, f);
	if (ferror(f)) {
		fprintf(stderr, "perch: cannot read %s: %s\n", name, strerror(errno));
		perch_free(buf);
		return CLI_EXIT_FAIL;
	}
	if (n > max) {
		fprintf(stderr, "perch: %s: more than %zu KiB (%s)\n", name, max >> 10, limit);
		perch_free(buf);
		return CLI_EXIT_USAGE;
	}
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return CLI_EXIT_OK;
}

static bool header_value_ok(const char *v)
{
	for (; *v != '\0'; v++)
		if ((unsigned char)*v < 0x20 || *v == 0x7f)
			return false;
	return true;
}

static void new_uuid(char out[37])
{
	unsigned char r[16] = {0};
	if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		memcpy(r, &ts, sizeof ts < sizeof r ? sizeof ts : sizeof r);
	}
	r[6] = (unsigned char)((r[6] & 0x0f) | 0x40);
	r[8] = (unsigned char)((r[8] & 0x3f) | 0x80);
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
	         r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12],
	         r[13], r[14], r[15]);
}

int cli_cmd_c2d(cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	        {"body", required_argument, NULL, 'b'},
	        {"file", required_argument, NULL, 'f'},
	        {"property", required_argument, NULL, 'P'},
	        {"content-type", required_argument, NULL, 'T'},
	        {"content-encoding", required_argument, NULL, 'E'},
	        {"message-id", required_argument, NULL, 'm'},
	        {"correlation-id", required_argument, NULL, 'r'},
	        {"ttl", required_argument, NULL, 'l'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *body_text = NULL, *file = NULL, *ctype = NULL, *cenc = NULL, *mid = NULL,
	           *cid = NULL;
	long ttl = -1;
	char props[C2D_PROPS_MAX] = "";
	size_t props_at = 0;
	int sources = 0, o;
	optind = 0; /* glibc: start afresh, after main's scan */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'b':
			body_text = optarg;
			sources++;
			break;
		case 'f':
			file = optarg;
			sources++;
			break;
		case 'P': {
			char *eq = strchr(optarg, '=');
			if (eq == NULL || eq == optarg)
				return usage_error(cli_usage_c2d,
				                   "--property %s: expected KEY=VALUE", optarg);
			*eq = '\0';
			perch_err err = PERCH_OK;
			if (props_at > 0 && props_at + 1 < sizeof props) {
				props[props_at++] = '&';
				props[props_at] = '\0';
			}
			err = cli_url_encode(optarg, props, sizeof props, &props_at);
			if (err == PERCH_OK && props_at + 1 < sizeof props) {
				props[props_at++] = '=';
				props[props_at] = '\0';
			}
			if (err == PERCH_OK)
				err = cli_url_encode(eq + 1, props, sizeof props, &props_at);
			*eq = '=';
			if (err != PERCH_OK)
				return usage_error(cli_usage_c2d,
				                   "--property: the properties are over 8 KiB");
			break;
		}
		case 'T': ctype = optarg; break;
		case 'E': cenc = optarg; break;
		case 'm': mid = optarg; break;
		case 'r': cid = optarg; break;
		case 'l':
			if (!seconds(optarg, 1, TTL_MAX_S, &ttl))
				return usage_error(cli_usage_c2d,
				                   "--ttl %s: expected whole seconds, 1 to 172800",
				                   optarg);
			break;
		case 'h': cli_usage_c2d(stdout); return CLI_EXIT_OK;
		default:
			return usage_error(cli_usage_c2d, "c2d: unknown or incomplete option %s",
			                   argv[optind - 1]);
		}
	}
	/* operands: DEVICE, and maybe "-" (the body from stdin) */
	const char *device = NULL;
	bool from_stdin = false;
	const char *extra = operands(argc, argv, &device, &from_stdin, &sources);
	if (extra != NULL)
		return usage_error(cli_usage_c2d, "c2d: unexpected argument %s", extra);
	if (device == NULL)
		return usage_error(cli_usage_c2d, "c2d: expected DEVICE");
	if (!perch_device_valid_id(device))
		return usage_error(cli_usage_c2d, "c2d: '%s' is not a device id", device);
	if (sources > 1)
		return usage_error(cli_usage_c2d, "c2d: give one of --body, --file and -");
	const char *const texts[] = {ctype, cenc, mid, cid};
	for (size_t i = 0; i < 4; i++)
		if (texts[i] != NULL && (!header_value_ok(texts[i]) || strlen(texts[i]) > 128))
			return usage_error(
			        cli_usage_c2d,
			        "c2d: '%s': at most 128 characters, no control characters",
			        texts[i]);
	char *body = NULL;
	size_t blen = 0;
	int rc;
	if (file != NULL) {
		FILE *f = fopen(file, "rb");
		if (f == NULL) {
			fprintf(stderr, "perch: cannot open %s: %s\n", file, strerror(errno));
			return CLI_EXIT_FAIL;
		}
		rc = read_body(f, file, C2D_BODY_MAX, "a C2D message's limit", &body, &blen);
		fclose(f);
		if (rc != CLI_EXIT_OK)
			return rc;
	} else if (from_stdin) {
		if ((rc = read_body(stdin, "standard input", C2D_BODY_MAX, "a C2D message's limit",
		                    &body, &blen)) != CLI_EXIT_OK)
			return rc;
	} else if (body_text != NULL) {
		if (strlen(body_text) > C2D_BODY_MAX)
			return usage_error(cli_usage_c2d, "--body: more than 64 KiB");
		body = perch_strdup(body_text);
		blen = body != NULL ? strlen(body) : 0;
		if (body == NULL) {
			fprintf(stderr, "perch: out of memory\n");
			return CLI_EXIT_FAIL;
		}
	}
	rc = CLI_EXIT_FAIL;
	char uuid[37];
	if (mid == NULL) {
		new_uuid(uuid);
		mid = uuid;
	}
	char auth[PERCH_SAS_MAX_TOKEN + 32], self[PERCH_DEVICE_ID_MAX + 1];
	char h_ct[160], h_ce[160], h_mid[160], h_cid[160], h_ttl[40], h_props[C2D_PROPS_MAX + 32];
	char target[600];
	size_t at = 0;
	static const char devices[] = "/devices/";
	memcpy(target, devices, sizeof devices);
	at = sizeof devices - 1;
	if (cli_url_encode(device, target, sizeof target, &at) != PERCH_OK)
		goto out;
	snprintf(target + at, sizeof target - at, "/messages/devicebound?api-version=2020-09-30");
	if (cli_load(c) != PERCH_OK)
		goto out;
	cli_hub hub;
	if (cli_hub_resolve(c, &hub) != PERCH_OK ||
	    auth_header(c, auth, sizeof auth, self, sizeof self) != PERCH_OK)
		goto out_wipe;
	const char *hdrs[8];
	size_t nh = 0;
	hdrs[nh++] = auth;
	hdrs[nh++] = "Connection: close";
	snprintf(h_mid, sizeof h_mid, "iothub-messageid: %s", mid);
	hdrs[nh++] = h_mid;
	if (ctype != NULL) {
		snprintf(h_ct, sizeof h_ct, "Content-Type: %s", ctype);
		hdrs[nh++] = h_ct;
	}
	if (cenc != NULL) {
		snprintf(h_ce, sizeof h_ce, "Content-Encoding: %s", cenc);
		hdrs[nh++] = h_ce;
	}
	if (cid != NULL) {
		snprintf(h_cid, sizeof h_cid, "iothub-correlationid: %s", cid);
		hdrs[nh++] = h_cid;
	}
	if (ttl > 0) {
		snprintf(h_ttl, sizeof h_ttl, "x-perch-ttl: %ld", ttl);
		hdrs[nh++] = h_ttl;
	}
	if (props_at > 0) {
		snprintf(h_props, sizeof h_props, "x-perch-properties: %s", props);
		hdrs[nh++] = h_props;
	}
	cli_http_answer a;
	char what[200];
	snprintf(what, sizeof what, "c2d to %s", device);
	if (cli_http_request(&hub, "POST", target, hdrs, nh, body != NULL ? body : "", blen,
	                     CONNECT_MS, C2D_TOTAL_MS, &a) != PERCH_OK)
		goto out_wipe;
	if (a.status >= 200 && a.status <= 299) {
		printf("%s\n", mid);
		rc = CLI_EXIT_OK;
	} else {
		hub_refusal(what, &a);
	}
	cli_http_answer_free(&a);
out_wipe:
	explicit_bzero(auth, sizeof auth);
out:
	perch_free(body);
	return rc;
}

/* ---- perch twin ---------------------------------------------------------------- */

void cli_usage_twin(FILE *out)
{
	fputs("usage: perch twin TARGET [--desired JSON | --file PATH | -]\n"
	      "\n"
	      "Print the twin of a module or a device, its desired and reported properties,\n"
	      "as perch-hub keeps it. With desired properties, patch them first (merged\n"
	      "over the deployment's; null deletes one) and print the twin that results;\n"
	      "the module or device gets the change at once, also behind a child edge hub.\n"
	      "TARGET: MODULE (a module of this device), DEVICE/MODULE, or DEVICE (this\n"
	      "device or a leaf device; DEVICE/ when a module has that name too).\n"
	      "\n"
	      "  --desired JSON   a JSON object of desired properties to patch\n"
	      "  --file PATH, -   the same from a file, or from standard input (128 KiB)\n"
	      "\n"
	      "Exit: 0 done; 2 perch-hub refused the request (404 no such twin here, 400 a\n"
	      "patch it does not take ...) or could not be reached; 64 a bad command line\n"
	      "(also --desired that is not a JSON object).\n",
	      out);
}

/* twin_call GETs (patch NULL) or PATCHes the twin of dev[/mod] and prints it;
 * returns an exit code, and *no_module as method_call does. */
static int twin_call(const cli_hub *hub, const char *auth, const char *dev, const char *mod,
                     const char *patch, bool quiet_no_module, bool *no_module)
{
	char target[1024], what[600];
	if (twins_path(dev, mod, "?api-version=2021-04-12", target, sizeof target) != PERCH_OK) {
		fprintf(stderr, "perch: the target's name is too long\n");
		return CLI_EXIT_USAGE;
	}
	snprintf(what, sizeof what, "twin of %s%s%s", dev, mod[0] != '\0' ? "/" : "", mod);
	const char *hdrs[] = {auth, "Connection: close",
	                      "Content-Type: application/json; charset=utf-8"};
	cli_http_answer a;
	if (cli_http_request(hub, patch != NULL ? "PATCH" : "GET", target, hdrs,
	                     patch != NULL ? 3 : 2, patch, patch != NULL ? strlen(patch) : 0,
	                     CONNECT_MS, TWIN_TOTAL_MS, &a) != PERCH_OK)
		return CLI_EXIT_FAIL;
	int rc = CLI_EXIT_FAIL;
	if (a.status == 200) {
		json_t *j = json_loadb(a.body != NULL ? a.body : "", a.len, 0, NULL);
		char *text = json_is_object(json_object_get(j, "properties"))
		                     ? json_dumps(j, JSON_INDENT(2))
		                     : NULL;
		if (text != NULL) {
			printf("%s\n", text);
			rc = CLI_EXIT_OK;
		} else {
			fprintf(stderr, "perch: %s: perch-hub's answer is not a twin\n", what);
		}
		free(text);
		json_decref(j);
	} else {
		bool nm = no_such_module(&a);
		if (no_module != NULL)
			*no_module = nm;
		if (!(nm && quiet_no_module))
			hub_refusal(what, &a);
	}
	cli_http_answer_free(&a);
	return rc;
}

/* desired_body reads the desired properties (text, a file, or stdin), checks
 * that they are a JSON object, and makes the PATCH's body of them in *out
 * (owned: free). Returns an exit code; errors are on stderr. */
static int desired_body(const char *text, const char *file, bool from_stdin, char **out)
{
	char *buf = NULL;
	size_t len = 0;
	const char *name = file != NULL ? file : from_stdin ? "standard input" : "--desired";
	int rc;
	if (file != NULL) {
		FILE *f = fopen(file, "rb");
		if (f == NULL) {
			fprintf(stderr, "perch: cannot open %s: %s\n", file, strerror(errno));
			return CLI_EXIT_FAIL;
		}
		rc = read_body(f, file, TWIN_DESIRED_MAX, "perch twin's limit", &buf, &len);
		fclose(f);
	} else if (from_stdin) {
		rc = read_body(stdin, name, TWIN_DESIRED_MAX, "perch twin's limit", &buf, &len);
	} else {
		text = text != NULL ? text : ""; /* (it is not NULL: --desired was given) */
		len = strlen(text);
		if (len > TWIN_DESIRED_MAX)
			return usage_error(cli_usage_twin, "--desired: more than 128 KiB");
		rc = CLI_EXIT_OK;
	}
	if (rc != CLI_EXIT_OK)
		return rc;
	json_error_t jerr;
	json_t *d = json_loadb(buf != NULL ? buf : text, len,
	                       JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
	perch_free(buf);
	if (d == NULL)
		return usage_error(cli_usage_twin, "%s: not JSON: %s (line %d, column %d)", name,
		                   jerr.text, jerr.line, jerr.column);
	if (!json_is_object(d)) {
		json_decref(d);
		return usage_error(cli_usage_twin,
		                   "%s: not a JSON object (desired properties are one, e.g. "
		                   "'{\"interval\": 5}')",
		                   name);
	}
	json_t *req = json_pack("{s:{s:o}}", "properties", "desired", d);
	*out = req != NULL ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (*out == NULL) {
		fprintf(stderr, "perch: out of memory\n");
		return CLI_EXIT_FAIL;
	}
	return CLI_EXIT_OK;
}

int cli_cmd_twin(cli *c, int argc, char **argv)
{
	static const struct option opts[] = {
	        {"desired", required_argument, NULL, 'd'},
	        {"file", required_argument, NULL, 'f'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	const char *desired = NULL, *file = NULL;
	int sources = 0, o;
	optind = 0; /* glibc: start afresh, after main's scan */
	opterr = 0;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'd':
			desired = optarg;
			sources++;
			break;
		case 'f':
			file = optarg;
			sources++;
			break;
		case 'h': cli_usage_twin(stdout); return CLI_EXIT_OK;
		default:
			return usage_error(cli_usage_twin, "twin: unknown or incomplete option %s",
			                   argv[optind - 1]);
		}
	}
	/* operands: TARGET, and maybe "-" (the desired properties from stdin) */
	const char *target = NULL;
	bool from_stdin = false;
	const char *extra = operands(argc, argv, &target, &from_stdin, &sources);
	if (extra != NULL)
		return usage_error(cli_usage_twin, "twin: unexpected argument %s", extra);
	if (target == NULL)
		return usage_error(cli_usage_twin, "twin: expected TARGET");
	char dev[PERCH_DEVICE_ID_MAX + 1], mod[PERCH_DEVICE_ID_MAX + 1];
	bool one_name;
	if (!split_target(target, dev, mod, &one_name))
		return usage_error(cli_usage_twin,
		                   "twin: TARGET '%s': expected MODULE, DEVICE, DEVICE/ or "
		                   "DEVICE/MODULE",
		                   target);
	if (sources > 1)
		return usage_error(cli_usage_twin, "twin: give one of --desired, --file and -");
	char *patch = NULL;
	int rc;
	if (sources == 1 && (rc = desired_body(desired, file, from_stdin, &patch)) != CLI_EXIT_OK)
		return rc;
	rc = CLI_EXIT_FAIL;
	if (cli_load(c) != PERCH_OK)
		goto out;
	char auth[PERCH_SAS_MAX_TOKEN + 32], self[PERCH_DEVICE_ID_MAX + 1];
	cli_hub hub;
	if (cli_hub_resolve(c, &hub) != PERCH_OK ||
	    auth_header(c, auth, sizeof auth, self, sizeof self) != PERCH_OK)
		goto out_wipe;
	if (one_name && strcmp(dev, self) != 0) {
		/* a module of this device; when there is none by that name, a device
		 * (a refused PATCH changed nothing, so it may go again) */
		bool no_module = false;
		rc = twin_call(&hub, auth, self, dev, patch, true, &no_module);
		if (no_module)
			rc = twin_call(&hub, auth, dev, "", patch, false, NULL);
	} else {
		rc = twin_call(&hub, auth, dev, mod, patch, false, NULL);
	}
out_wipe:
	explicit_bzero(auth, sizeof auth);
out:
	free(patch);
	return rc;
}
