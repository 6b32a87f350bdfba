/*
 * workload_http.c — the pure half of the workload API (workload.h): a
 * strict, bounded HTTP/1.1 request reader, the two routes, and the sign
 * computation. No I/O: workload.c feeds it bytes and writes its answers.
 */
#include "workload.h"

#include <string.h>

#include <jansson.h>
#include <mbedtls/base64.h>
#include <mbedtls/md.h>
#include <mbedtls/platform_util.h>

#include "perch/sas.h"

#define MAX_METHOD 8

/* A refusal: sets the answer and returns PERCH_EINVAL. */
static perch_err refuse(int *status, const char **why, int code, const char *text)
{
	*status = code;
	*why = text;
	return PERCH_EINVAL;
}

static bool is_tchar(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

/* find_crlf returns the offset of the first "\r\n" in p[0..n), or n. */
static size_t find_crlf(const char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (p[i] == '\r' && p[i + 1] == '\n')
			return i;
	return n;
}

static bool ieq(const char *a, size_t n, const char *lit)
{
	size_t k = strlen(lit);
	if (n != k)
		return false;
	for (size_t i = 0; i < n; i++) {
		char x = a[i], y = lit[i];
		if (x >= 'A' && x <= 'Z')
			x = (char)(x - 'A' + 'a');
		if (x != y)
			return false;
	}
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* pct_decode decodes a path segment (%XX) into out (cap bytes with the NUL);
 * false for a bad escape, a control character, a NUL, or a segment that is
 * empty or too long. */
static bool pct_decode(const char *s, size_t n, char *out, size_t cap)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '%') {
			if (i + 2 >= n)
				return false;
			int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return false;
			c = (unsigned char)(hi * 16 + lo);
			i += 2;
		}
		if (c < 0x20 || c == 0x7f || k + 1 >= cap)
			return false;
		out[k++] = (char)c;
	}
	if (k == 0)
		return false;
	out[k] = '\0';
	return true;
}

/* api_version_ok: YYYY-MM-DD, not before AGENT_WL_API_MIN. */
static bool api_version_ok(const char *v, size_t n)
{
	if (n != 10 || v[4] != '-' || v[7] != '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (i != 4 && i != 7 && (v[i] < '0' || v[i] > '9'))
			return false;
	return memcmp(v, AGENT_WL_API_MIN, 10) >= 0;
}

/* route reads the request target into out. */
static perch_err route(const char *method, const char *t, size_t n, agent_wl_request *out,
                       int *status, const char **why)
{
	const char *q = memchr(t, '?', n);
	size_t plen = q != NULL ? (size_t)(q - t) : n;
	bool have_version = false;
	if (q != NULL) {
		const char *p = q + 1, *end = t + n;
		while (p < end) {
			const char *amp = memchr(p, '&', (size_t)(end - p));
			const char *stop = amp != NULL ? amp : end;
			const char *eq = memchr(p, '=', (size_t)(stop - p));
			if (eq != NULL && (size_t)(eq - p) == 11 &&
			    memcmp(p, "api-version", 11) == 0) {
				size_t vn = (size_t)(stop - eq - 1);
				if (have_version)
					return refuse(status, why, 400, "api-version given twice");
				if (!api_version_ok(eq + 1, vn))
					return refuse(status, why, 400,
					              "api-version is not a supported version "
					              "(YYYY-MM-DD, 2018-06-28 or later)");
				memcpy(out->api_version, eq + 1, vn);
				out->api_version[vn] = '\0';
				have_version = true;
			}
			p = stop + 1;
		}
	}
	static const char tb[] = "/trust-bundle";
	if (plen == sizeof tb - 1 && memcmp(t, tb, plen) == 0) {
		if (strcmp(method, "GET") != 0)
			return refuse(status, why, 405, "/trust-bundle takes GET");
		out->op = AGENT_WL_TRUST_BUNDLE;
	} else {
		/* /modules/{m}/genid/{g}/sign */
		static const char pre[] = "/modules/";
		if (plen <= sizeof pre - 1 || memcmp(t, pre, sizeof pre - 1) != 0)
			return refuse(status, why, 404, "no such resource");
		const char *seg[4];
		size_t len[4], k = 0;
		const char *p = t + sizeof pre - 1, *end = t + plen;
		while (k < 4) {
			const char *slash = memchr(p, '/', (size_t)(end - p));
			const char *stop = slash != NULL ? slash : end;
			seg[k] = p;
			len[k++] = (size_t)(stop - p);
			if (slash == NULL)
				break;
			p = slash + 1;
		}
		if (k != 4 || p + len[3] != end || len[1] != 5 || memcmp(seg[1], "genid", 5) != 0 ||
		    len[3] != 4 || memcmp(seg[3], "sign", 4) != 0)
			return refuse(status, why, 404, "no such resource");
		if (!pct_decode(seg[0], len[0], out->module, sizeof out->module) ||
		    !pct_decode(seg[2], len[2], out->genid, sizeof out->genid))
			return refuse(status, why, 400, "bad module or generation id in the path");
		if (strcmp(method, "POST") != 0)
			return refuse(status, why, 405, "sign takes POST");
		out->op = AGENT_WL_SIGN;
	}
	if (!have_version)
		return refuse(status, why, 400, "api-version is missing");
	return PERCH_OK;
}

perch_err agent_wl_parse(const char *buf, size_t len, agent_wl_request *out, int *status,
                         const char **why)
{
	memset(out, 0, sizeof *out);
	*status = 0;
	*why = "";
	/* The head ends at the first empty line. */
	size_t head = 0;
	bool done = false;
	for (size_t i = 0; i + 3 < len && i + 4 <= AGENT_WL_MAX_HEAD; i++) {
		if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' &&
		    buf[i + 3] == '\n') {
			head = i + 4;
			done = true;
			break;
		}
	}
	if (!done) {
		if (len >= AGENT_WL_MAX_HEAD)
			return refuse(status, why, 431, "request head too large");
		/* Refuse early what can never become a request. */
		for (size_t i = 0; i < len; i++)
			if (buf[i] == '\0')
				return refuse(status, why, 400, "NUL in the request head");
		return PERCH_EAGAIN;
	}
	/* Request line: METHOD SP TARGET SP HTTP/1.x */
	size_t eol = find_crlf(buf, head);
	const char *line = buf;
	const char *sp1 = memchr(line, ' ', eol);
	if (sp1 == NULL || sp1 == line || (size_t)(sp1 - line) > MAX_METHOD)
		return refuse(status, why, 400, "bad request line");
	char method[MAX_METHOD + 1];
	size_t mlen = (size_t)(sp1 - line);
	for (size_t i = 0; i < mlen; i++)
		if (line[i] < 'A' || line[i] > 'Z')
			return refuse(status, why, 400, "bad request method");
	memcpy(method, line, mlen);
	method[mlen] = '\0';
	const char *target = sp1 + 1;
	const char *sp2 = memchr(target, ' ', eol - mlen - 1);
	if (sp2 == NULL || sp2 == target)
		return refuse(status, why, 400, "bad request line");
	size_t tlen = (size_t)(sp2 - target);
	if (tlen > AGENT_WL_MAX_TARGET)
		return refuse(status, why, 414, "request target too long");
	if (target[0] != '/')
		return refuse(status, why, 400, "request target must be a path");
	for (size_t i = 0; i < tlen; i++)
		if ((unsigned char)target[i] <= 0x20 || (unsigned char)target[i] >= 0x7f)
			return refuse(status, why, 400, "bad character in the request target");
	const char *ver = sp2 + 1;
	size_t vlen = (size_t)(line + eol - ver);
	if (vlen != 8 || memcmp(ver, "HTTP/", 5) != 0 || ver[5] < '0' || ver[5] > '9' ||
	    ver[6] != '.' || ver[7] < '0' || ver[7] > '9')
		return refuse(status, why, 400, "bad request line");
	if (ver[5] != '1' || ver[7] > '1')
		return refuse(status, why, 505, "only HTTP/1.0 and HTTP/1.1");
	/* Headers. */
	size_t pos = eol + 2, nheaders = 0;
	bool have_length = false;
	unsigned long length = 0;
	while (pos < head - 2) {
		size_t n = find_crlf(buf + pos, head - pos);
		const char *h = buf + pos;
		if (++nheaders > AGENT_WL_MAX_HEADERS)
			return refuse(status, why, 431, "too many headers");
		const char *colon = memchr(h, ':', n);
		if (colon == NULL || colon == h)
			return refuse(status, why, 400, "bad header line");
		size_t nlen = (size_t)(colon - h);
		for (size_t i = 0; i < nlen; i++)
			if (!is_tchar(h[i]))
				return refuse(status, why, 400, "bad header name");
		const char *v = colon + 1, *vend = h + n;
		while (v < vend && (*v == ' ' || *v == '\t'))
			v++;
		while (vend > v && (vend[-1] == ' ' || vend[-1] == '\t'))
			vend--;
		for (const char *c = v; c < vend; c++)
			if ((unsigned char)*c < 0x20 && *c != '\t')
				return refuse(status, why, 400, "control character in a header");
		if (ieq(h, nlen, "transfer-encoding"))
			return refuse(status, why, 501,
			              "chunked bodies are not supported: send "
			              "Content-Length");
		if (ieq(h, nlen, "content-length")) {
			unsigned long val = 0;
			if (v == vend)
				return refuse(status, why, 400, "bad Content-Length");
			for (const char *c = v; c < vend; c++) {
				if (*c < '0' || *c > '9')
					return refuse(status, why, 400, "bad Content-Length");
				val = val * 10 + (unsigned long)(*c - '0');
				if (val > AGENT_WL_MAX_BODY)
					return refuse(status, why, 413, "request body too large");
			}
			if (have_length && val != length)
				return refuse(status, why, 400, "conflicting Content-Length");
			have_length = true;
			length = val;
		}
		pos += n + 2;
	}
	perch_err err = route(method, target, tlen, out, status, why);
	if (err != PERCH_OK)
		return err;
	if (len - head < length)
		return PERCH_EAGAIN;
	out->body = (perch_slice){buf + head, length};
	out->total = head + length;
	return PERCH_OK;
}

perch_err agent_wl_sign(perch_slice device_key, const char *module, perch_slice body, char *digest,
                        size_t cap, int *status, const char **why)
{
	perch_err err = PERCH_OK;
	unsigned char data[AGENT_WL_MAX_DATA];
	unsigned char key[PERCH_SAS_MAX_KEY_BYTES];
	unsigned char mac[32];
	char key_b64[PERCH_SAS_KEY_B64_LEN + 1];
	size_t dlen = 0, klen = 0, kb64 = 0, olen = 0;
	json_error_t jerr;
	json_t *req = json_loadb(body.ptr != NULL ? body.ptr : "", body.len, JSON_REJECT_DUPLICATES,
	                         &jerr);
	const char *key_id = json_string_value(json_object_get(req, "keyId"));
	const char *algo = json_string_value(json_object_get(req, "algo"));
	const char *b64 = json_string_value(json_object_get(req, "data"));
	if (!json_is_object(req)) {
		err = refuse(status, why, 400, "the body is not a JSON object");
		goto out;
	}
	if (key_id == NULL || strcmp(key_id, "primary") != 0) {
		err = refuse(status, why, 400, "keyId must be \"primary\"");
		goto out;
	}
	if (algo == NULL || strcmp(algo, "HMACSHA256") != 0) {
		err = refuse(status, why, 400, "algo must be \"HMACSHA256\"");
		goto out;
	}
	if (b64 == NULL) {
		err = refuse(status, why, 400, "data is missing");
		goto out;
	}
	size_t blen = json_string_length(json_object_get(req, "data"));
	if (blen > ((size_t)AGENT_WL_MAX_DATA + 2) / 3 * 4) {
		err = refuse(status, why, 400, "data is too long");
		goto out;
	}
	if (mbedtls_base64_decode(data, sizeof data, &dlen, (const unsigned char *)b64, blen) !=
	    0) {
		err = refuse(status, why, 400, "data is not base64");
		goto out;
	}
	if (perch_sas_derive_module_key(device_key, perch_slice_cstr(module), key_b64,
	                                sizeof key_b64 - 1, &kb64) != PERCH_OK ||
	    mbedtls_base64_decode(key, sizeof key, &klen, (const unsigned char *)key_b64, kb64) !=
	            0 ||
	    mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), key, klen, data, dlen,
	                    mac) != 0) {
		*status = 500;
		*why = "the device key is unusable";
		err = PERCH_EINTERNAL;
		goto out;
	}
	if (cap < AGENT_WL_DIGEST_B64_LEN + 1 ||
	    mbedtls_base64_encode((unsigned char *)digest, cap, &olen, mac, sizeof mac) != 0) {
		*status = 500;
		*why = "internal error";
		err = PERCH_EINTERNAL;
		goto out;
	}
	digest[olen] = '\0';
out:
	json_decref(req);
	mbedtls_platform_zeroize(key, sizeof key);
	mbedtls_platform_zeroize(key_b64, sizeof key_b64);
	mbedtls_platform_zeroize(mac, sizeof mac);
	mbedtls_platform_zeroize(data, sizeof data);
	return err;
}

const char *agent_wl_status_text(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 413: return "Payload Too Large";
	case 414: return "URI Too Long";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}
