/*
 * sas.c — SAS tokens: sign, parse, verify; module key derivation.
 *
 * HMAC-SHA256 is built here on mbedTLS's SHA-256 context (RFC 2104), which
 * keeps everything on the stack: no allocation outside perch_malloc, no
 * mbedTLS error paths beyond the hash calls. Key material, inner hashes and
 * MACs are wiped with mbedtls_platform_zeroize before each function returns.
 */
#include "outbuf.h"
#include "perch/sas.h"

#include <ctype.h>
#include <string.h>

#include <mbedtls/base64.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/sha256.h>

#include "perch/props.h"

#define SAS_PREFIX     "SharedAccessSignature "
#define MAC_LEN        32
#define MAC_B64_LEN    44
#define SHA256_BLOCK   64
#define MAX_MODULE_ID  128
#define MAX_SR_ENCODED (3 * PERCH_SAS_MAX_RESOURCE)

/* HMAC-SHA256 of the concatenation of parts[0..n) under key (<= 64 bytes). */
static int hmac_sha256(const unsigned char *key, size_t key_len, const perch_slice *parts, size_t n,
                       unsigned char mac[MAC_LEN])
{
	unsigned char pad[SHA256_BLOCK];
	unsigned char inner[MAC_LEN];
	mbedtls_sha256_context ctx;
	int rc = 0;

	mbedtls_sha256_init(&ctx);
	memset(pad, 0x36, sizeof pad);
	for (size_t i = 0; i < key_len; i++)
		pad[i] = (unsigned char)(key[i] ^ 0x36);
	rc |= mbedtls_sha256_starts_ret(&ctx, 0);
	rc |= mbedtls_sha256_update_ret(&ctx, pad, sizeof pad);
	for (size_t i = 0; i < n; i++)
		rc |= mbedtls_sha256_update_ret(&ctx, (const unsigned char *)parts[i].ptr,
		                                parts[i].len);
	rc |= mbedtls_sha256_finish_ret(&ctx, inner);

	memset(pad, 0x5c, sizeof pad);
	for (size_t i = 0; i < key_len; i++)
		pad[i] = (unsigned char)(key[i] ^ 0x5c);
	rc |= mbedtls_sha256_starts_ret(&ctx, 0);
	rc |= mbedtls_sha256_update_ret(&ctx, pad, sizeof pad);
	rc |= mbedtls_sha256_update_ret(&ctx, inner, sizeof inner);
	rc |= mbedtls_sha256_finish_ret(&ctx, mac);

	mbedtls_sha256_free(&ctx);
	mbedtls_platform_zeroize(pad, sizeof pad);
	mbedtls_platform_zeroize(inner, sizeof inner);
	return rc;
}

static bool is_b64_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '+' || c == '/';
}

/*
 * Decodes canonical, padded base64 of 1..cap bytes into out. False for
 * anything else (wrong characters or padding, whitespace, leftover bits).
 */
static bool b64_decode(perch_slice in, unsigned char *out, size_t cap, size_t *out_len)
{
	if (in.len == 0 || in.len % 4 != 0 || in.len / 4 * 3 > cap + 2)
		return false;
	size_t pad = 0;
	if (in.ptr[in.len - 1] == '=')
		pad = in.ptr[in.len - 2] == '=' ? 2 : 1;
	for (size_t i = 0; i < in.len - pad; i++) {
		if (!is_b64_char(in.ptr[i]))
			return false;
	}
	size_t n = 0;
	if (mbedtls_base64_decode(out, cap, &n, (const unsigned char *)in.ptr, in.len) != 0 ||
	    n == 0)
		return false;
	/* Canonical: the unused low bits of the last character are zero. */
	char last = in.ptr[in.len - pad - 1];
	int v = last >= 'A' && last <= 'Z'   ? last - 'A'
	        : last >= 'a' && last <= 'z' ? last - 'a' + 26
	        : last >= '0' && last <= '9' ? last - '0' + 52
	        : last == '+'                ? 62
	                                     : 63;
	if ((pad == 1 && (v & 0x3) != 0) || (pad == 2 && (v & 0xF) != 0)) {
		mbedtls_platform_zeroize(out, cap);
		return false;
	}
	*out_len = n;
	return true;
}

bool perch_sas_key_valid(perch_slice key)
{
	unsigned char raw[PERCH_SAS_MAX_KEY_BYTES];
	size_t n = 0;
	bool ok = key.len <= PERCH_SAS_MAX_KEY_B64 && b64_decode(key, raw, sizeof raw, &n);
	mbedtls_platform_zeroize(raw, sizeof raw);
	return ok;
}

/* Writes v in decimal into buf (>= 20 bytes); returns the length. */
static size_t format_u64(uint64_t v, char *buf)
{
	char tmp[PERCH_SAS_MAX_EXPIRY_DIGITS];
	size_t n = 0;
	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v > 0);
	for (size_t i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

static void put_js_encoded(outbuf *w, perch_slice s)
{
	size_t len;
	if (w->overflow ||
	    perch_props_url_encode_js(s, w->out + w->n, w->cap - w->n, &len) != PERCH_OK) {
		w->overflow = true;
		return;
	}
	w->n += len;
}

perch_err perch_sas_sign(perch_slice resource, perch_slice key_name, perch_slice key,
                         uint64_t expiry, char *out, size_t cap, size_t *out_len)
{
	unsigned char raw_key[PERCH_SAS_MAX_KEY_BYTES];
	unsigned char mac[MAC_LEN];
	unsigned char mac_b64[MAC_B64_LEN + 1];
	char sr[MAX_SR_ENCODED];
	char se[PERCH_SAS_MAX_EXPIRY_DIGITS];
	size_t key_len = 0, sr_len = 0, b64_len = 0;
	perch_err err = PERCH_OK;

	if (resource.len == 0 || expiry == 0 || key.len > PERCH_SAS_MAX_KEY_B64) {
		err = key.len > PERCH_SAS_MAX_KEY_B64 ? PERCH_ETOOBIG : PERCH_EINVAL;
		goto out;
	}
	if (resource.len > PERCH_SAS_MAX_RESOURCE || key_name.len > PERCH_SAS_MAX_KEY_NAME) {
		err = PERCH_ETOOBIG;
		goto out;
	}
	if (!b64_decode(key, raw_key, sizeof raw_key, &key_len)) {
		err = PERCH_EINVAL;
		goto out;
	}
	if (perch_props_url_encode_js(resource, sr, sizeof sr, &sr_len) != PERCH_OK) {
		err = PERCH_EINTERNAL; /* cannot happen: sr has room for 3 * max */
		goto out;
	}
	size_t se_len = format_u64(expiry, se);
	perch_slice parts[3] = {{sr, sr_len}, PERCH_SLICE_LIT("\n"), {se, se_len}};
	if (hmac_sha256(raw_key, key_len, parts, 3, mac) != 0 ||
	    mbedtls_base64_encode(mac_b64, sizeof mac_b64, &b64_len, mac, sizeof mac) != 0) {
		err = PERCH_EINTERNAL;
		goto out;
	}
	/* The order of azure-iot-common's toString: sr, sig, skn, se. */
	outbuf w = {out, cap, 0, false};
	outbuf_put(&w, PERCH_SLICE_LIT(SAS_PREFIX "sr="));
	outbuf_put(&w, (perch_slice){sr, sr_len});
	outbuf_put(&w, PERCH_SLICE_LIT("&sig="));
	put_js_encoded(&w, (perch_slice){(const char *)mac_b64, b64_len});
	if (key_name.len > 0) {
		outbuf_put(&w, PERCH_SLICE_LIT("&skn="));
		put_js_encoded(&w, key_name);
	}
	outbuf_put(&w, PERCH_SLICE_LIT("&se="));
	outbuf_put(&w, (perch_slice){se, se_len});
	if (w.overflow) {
		err = PERCH_ETOOBIG;
		goto out;
	}
	*out_len = w.n;
out:
	mbedtls_platform_zeroize(raw_key, sizeof raw_key);
	mbedtls_platform_zeroize(mac, sizeof mac);
	mbedtls_platform_zeroize(mac_b64, sizeof mac_b64);
	return err;
}

static perch_err fail_with(perch_sas_reason *why, perch_sas_reason reason, perch_err err)
{
	if (why != NULL)
		*why = reason;
	return err;
}

perch_err perch_sas_parse(perch_slice token, perch_sas_token *out, perch_sas_reason *why)
{
	memset(out, 0, sizeof *out);
	if (why != NULL)
		*why = PERCH_SAS_OK;
	if (token.len > PERCH_SAS_MAX_TOKEN)
		return fail_with(why, PERCH_SAS_MALFORMED, PERCH_ETOOBIG);
	if (!perch_slice_starts(token, SAS_PREFIX))
		return fail_with(why, PERCH_SAS_MALFORMED, PERCH_EINVAL);
	size_t pos = strlen(SAS_PREFIX);
	bool seen_skn = false;
	while (pos <= token.len) {
		size_t end = pos;
		while (end < token.len && token.ptr[end] != '&')
			end++;
		perch_slice field = {token.ptr + pos, end - pos};
		pos = end + 1;
		const char *eq = field.len > 0 ? memchr(field.ptr, '=', field.len) : NULL;
		if (eq == NULL)
			return fail_with(why, PERCH_SAS_MALFORMED, PERCH_EINVAL);
		perch_slice name = {field.ptr, (size_t)(eq - field.ptr)};
		perch_slice value = {eq + 1, field.len - name.len - 1};
		perch_slice *slot;
		if (perch_slice_eq_cstr(name, "sr"))
			slot = &out->sr;
		else if (perch_slice_eq_cstr(name, "sig"))
			slot = &out->sig;
		else if (perch_slice_eq_cstr(name, "se"))
			slot = &out->se;
		else if (perch_slice_eq_cstr(name, "skn"))
			slot = &out->skn;
		else
			return fail_with(why, PERCH_SAS_MALFORMED, PERCH_EINVAL);
		bool dup = slot == &out->skn ? seen_skn : slot->len > 0;
		if (dup || value.len == 0)
			return fail_with(why, PERCH_SAS_MALFORMED, PERCH_EINVAL);
		if (slot == &out->skn)
			seen_skn = true;
		*slot = value;
	}
	if (out->sr.len == 0 || out->sig.len == 0 || out->se.len == 0 ||
	    out->se.len > PERCH_SAS_MAX_EXPIRY_DIGITS)
		goto malformed;
	uint64_t v = 0;
	for (size_t i = 0; i < out->se.len; i++) {
		char c = out->se.ptr[i];
		if (c < '0' || c > '9')
			goto malformed;
		unsigned d = (unsigned)(c - '0');
		if (v > (UINT64_MAX - d) / 10)
			goto malformed;
		v = v * 10 + d;
	}
	out->expiry = v;
	return PERCH_OK;
malformed:
	memset(out, 0, sizeof *out);
	return fail_with(why, PERCH_SAS_MALFORMED, PERCH_EINVAL);
}

static char lower(char c)
{
	return (char)tolower((unsigned char)c);
}

/* Decoded sr equals want, the host part (up to the first `/`) ignoring case. */
static bool resource_matches(perch_slice sr, perch_slice want)
{
	char dec[PERCH_SAS_MAX_RESOURCE];
	size_t n = 0;
	if (perch_props_url_decode(sr, dec, sizeof dec, &n, NULL) != PERCH_OK || n != want.len)
		return false;
	bool in_host = true;
	for (size_t i = 0; i < n; i++) {
		if (want.ptr[i] == '/')
			in_host = false;
		if (in_host ? lower(dec[i]) != lower(want.ptr[i]) : dec[i] != want.ptr[i])
			return false;
	}
	return true;
}

/* Compares n bytes in time that depends on n only. */
static bool equal_const_time(const unsigned char *a, const unsigned char *b, size_t n)
{
	volatile unsigned char diff = 0;
	for (size_t i = 0; i < n; i++)
		diff = (unsigned char)(diff | (a[i] ^ b[i]));
	return diff == 0;
}

perch_err perch_sas_verify(perch_slice token, const perch_sas_check *check, perch_sas_token *parsed,
                           perch_sas_reason *why)
{
	perch_sas_token t;
	unsigned char raw_key[PERCH_SAS_MAX_KEY_BYTES];
	unsigned char want[MAC_LEN];
	unsigned char got[MAC_LEN + 3];
	char sig_b64[MAC_B64_LEN];
	size_t key_len = 0, sig_len = 0, got_len = 0;
	perch_sas_reason reason = PERCH_SAS_OK;
	perch_err err = perch_sas_parse(token, &t, why);

	memset(raw_key, 0, sizeof raw_key);
	memset(want, 0, sizeof want);
	memset(got, 0, sizeof got);
	if (err != PERCH_OK)
		return err;
	if (parsed != NULL)
		*parsed = t;
	/* The signature: URL-decoded, then canonical base64 of exactly 32 bytes. */
	if (perch_props_url_decode(t.sig, sig_b64, sizeof sig_b64, &sig_len, NULL) != PERCH_OK ||
	    sig_len != MAC_B64_LEN ||
	    !b64_decode((perch_slice){sig_b64, sig_len}, got, sizeof got, &got_len) ||
	    got_len != MAC_LEN) {
		reason = PERCH_SAS_BAD_BASE64;
		err = PERCH_EINVAL;
		goto out;
	}
	if (!resource_matches(t.sr, check->resource)) {
		reason = PERCH_SAS_RESOURCE_MISMATCH;
		err = PERCH_EPERM;
		goto out;
	}
	if (check->key.len > PERCH_SAS_MAX_KEY_B64 ||
	    !b64_decode(check->key, raw_key, sizeof raw_key, &key_len)) {
		reason = PERCH_SAS_BAD_KEY;
		err = PERCH_EINVAL;
		goto out;
	}
	/* Signed text: sr and se exactly as they are in the token. */
	perch_slice parts[3] = {t.sr, PERCH_SLICE_LIT("\n"), t.se};
	if (hmac_sha256(raw_key, key_len, parts, 3, want) != 0) {
		err = PERCH_EINTERNAL;
		goto out;
	}
	if (!equal_const_time(want, got, MAC_LEN)) {
		reason = PERCH_SAS_WRONG_SIGNATURE;
		err = PERCH_EPERM;
		goto out;
	}
	/* Written to avoid overflow: se + skew < now, se > now + lifetime + skew. */
	if (t.expiry < check->now && check->now - t.expiry > check->skew) {
		reason = PERCH_SAS_EXPIRED;
		err = PERCH_EEXPIRED;
		goto out;
	}
	if (check->max_lifetime > 0 && t.expiry > check->now &&
	    t.expiry - check->now > check->max_lifetime &&
	    t.expiry - check->now - check->max_lifetime > check->skew) {
		reason = PERCH_SAS_LIFETIME_TOO_LONG;
		err = PERCH_ERANGE;
		goto out;
	}
out:
	mbedtls_platform_zeroize(raw_key, sizeof raw_key);
	mbedtls_platform_zeroize(want, sizeof want);
	mbedtls_platform_zeroize(got, sizeof got);
	if (why != NULL)
		*why = reason;
	return err;
}

perch_err perch_sas_derive_module_key(perch_slice device_key, perch_slice module_id, char *out,
                                      size_t cap, size_t *out_len)
{
	unsigned char raw_key[PERCH_SAS_MAX_KEY_BYTES];
	unsigned char mac[MAC_LEN];
	unsigned char b64[MAC_B64_LEN + 1];
	size_t key_len = 0, b64_len = 0;
	perch_err err = PERCH_OK;

	memset(raw_key, 0, sizeof raw_key);
	memset(mac, 0, sizeof mac);
	memset(b64, 0, sizeof b64);
	if (module_id.len > MAX_MODULE_ID || device_key.len > PERCH_SAS_MAX_KEY_B64) {
		err = module_id.len > MAX_MODULE_ID ? PERCH_ETOOBIG : PERCH_EINVAL;
		goto out;
	}
	if (module_id.len == 0 || !b64_decode(device_key, raw_key, sizeof raw_key, &key_len)) {
		err = PERCH_EINVAL;
		goto out;
	}
	if (hmac_sha256(raw_key, key_len, &module_id, 1, mac) != 0 ||
	    mbedtls_base64_encode(b64, sizeof b64, &b64_len, mac, sizeof mac) != 0) {
		err = PERCH_EINTERNAL;
		goto out;
	}
	if (cap < b64_len) {
		err = PERCH_ETOOBIG;
		goto out;
	}
	memcpy(out, b64, b64_len);
	*out_len = b64_len;
out:
	mbedtls_platform_zeroize(raw_key, sizeof raw_key);
	mbedtls_platform_zeroize(mac, sizeof mac);
	mbedtls_platform_zeroize(b64, sizeof b64);
	return err;
}

const char *perch_sas_reason_str(perch_sas_reason reason)
{
	switch (reason) {
	case PERCH_SAS_OK: return "ok";
	case PERCH_SAS_MALFORMED: return "malformed token";
	case PERCH_SAS_BAD_BASE64: return "signature is not base64 of a SHA-256 MAC";
	case PERCH_SAS_BAD_KEY: return "key is not base64";
	case PERCH_SAS_RESOURCE_MISMATCH: return "resource mismatch";
	case PERCH_SAS_WRONG_SIGNATURE: return "wrong signature";
	case PERCH_SAS_EXPIRED: return "expired";
	case PERCH_SAS_LIFETIME_TOO_LONG: return "lifetime too long";
	case PERCH_SAS_REASON_COUNT: break;
	}
	return "unknown reason";
}
