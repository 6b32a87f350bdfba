/*
 * connstr.c — IoT Hub connection strings: a table of known keys drives both
 * the parser and the writer; the rules live in one checker that both share.
 */
#include "perch/connstr.h"

#include <stddef.h>
#include <string.h>

#include "perch/sas.h"

/* One known key: its name, where it goes, and its value limit. */
typedef struct field_def {
	const char *name;
	size_t offset; /* of its perch_slice in perch_connstr; x509 is handled apart */
	size_t max;
} field_def;

#define X509_FIELD SIZE_MAX

/* In the order perch_connstr_write uses. */
static const field_def FIELDS[] = {
        {"HostName", offsetof(perch_connstr, host_name), PERCH_CONNSTR_MAX_HOST},
        {"DeviceId", offsetof(perch_connstr, device_id), PERCH_CONNSTR_MAX_ID},
        {"ModuleId", offsetof(perch_connstr, module_id), PERCH_CONNSTR_MAX_ID},
        {"SharedAccessKeyName", offsetof(perch_connstr, shared_access_key_name),
         PERCH_CONNSTR_MAX_ID},
        {"SharedAccessKey", offsetof(perch_connstr, shared_access_key), PERCH_SAS_MAX_KEY_B64},
        {"SharedAccessSignature", offsetof(perch_connstr, shared_access_signature),
         PERCH_SAS_MAX_TOKEN},
        {"x509", X509_FIELD, 4},
        {"GatewayHostName", offsetof(perch_connstr, gateway_host_name), PERCH_CONNSTR_MAX_HOST},
};
#define FIELD_COUNT (sizeof FIELDS / sizeof FIELDS[0])

static perch_slice *field_slot(perch_connstr *cs, const field_def *f)
{
	return (perch_slice *)(void *)((char *)cs + f->offset);
}

static perch_slice field_get(const perch_connstr *cs, const field_def *f)
{
	return *(const perch_slice *)(const void *)((const char *)cs + f->offset);
}

static perch_err set_fail(perch_connstr_fail *fail, perch_connstr_reason reason, size_t offset,
                          perch_slice key)
{
	if (fail != NULL) {
		fail->reason = reason;
		fail->offset = offset;
		fail->key = key;
	}
	if (reason == PERCH_CONNSTR_OK)
		return PERCH_OK;
	return reason == PERCH_CONNSTR_TOO_LONG || reason == PERCH_CONNSTR_NO_SPACE ? PERCH_ETOOBIG
	                                                                            : PERCH_EINVAL;
}

static bool value_chars_ok(perch_slice v)
{
	for (size_t i = 0; i < v.len; i++) {
		unsigned char c = (unsigned char)v.ptr[i];
		if (c < 0x20 || c == 0x7F || c == ';')
			return false;
	}
	return true;
}

static bool eq_ignore_case(perch_slice a, const char *b)
{
	size_t n = strlen(b);
	if (a.len != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = a.ptr[i];
		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (c != b[i])
			return false;
	}
	return true;
}

perch_err perch_connstr_check(const perch_connstr *cs, perch_connstr_fail *fail)
{
	perch_slice none = {NULL, 0};
	for (size_t i = 0; i < FIELD_COUNT; i++) {
		const field_def *f = &FIELDS[i];
		if (f->offset == X509_FIELD)
			continue;
		perch_slice v = field_get(cs, f);
		perch_slice key = perch_slice_cstr(f->name);
		if (v.len > f->max)
			return set_fail(fail, PERCH_CONNSTR_TOO_LONG, 0, key);
		if (!value_chars_ok(v))
			return set_fail(fail, PERCH_CONNSTR_BAD_VALUE, 0, key);
	}
	if (cs->host_name.len == 0)
		return set_fail(fail, PERCH_CONNSTR_MISSING_HOST, 0, none);
	int creds = (cs->shared_access_key.len > 0) + (cs->shared_access_signature.len > 0) +
	            (cs->x509 ? 1 : 0);
	if (creds == 0)
		return set_fail(fail, PERCH_CONNSTR_MISSING_CREDENTIAL, 0, none);
	if (creds > 1)
		return set_fail(fail, PERCH_CONNSTR_CONFLICT, 0, none);
	if (cs->device_id.len == 0 && cs->shared_access_key_name.len == 0)
		return set_fail(fail, PERCH_CONNSTR_MISSING_DEVICE, 0, none);
	if (cs->module_id.len > 0 && cs->device_id.len == 0)
		return set_fail(fail, PERCH_CONNSTR_CONFLICT, 0, PERCH_SLICE_LIT("ModuleId"));
	if (cs->shared_access_key_name.len > 0 && cs->shared_access_key.len == 0)
		return set_fail(fail, PERCH_CONNSTR_CONFLICT, 0,
		                PERCH_SLICE_LIT("SharedAccessKeyName"));
	if (cs->shared_access_key.len > 0 && !perch_sas_key_valid(cs->shared_access_key))
		return set_fail(fail, PERCH_CONNSTR_BAD_VALUE, 0,
		                PERCH_SLICE_LIT("SharedAccessKey"));
	return set_fail(fail, PERCH_CONNSTR_OK, 0, none);
}

/* Reads the fields of s into *out (zeroed by the caller), without the rules. */
static perch_err read_fields(perch_slice s, perch_connstr *out, perch_connstr_fail *fail)
{
	perch_slice none = {NULL, 0};
	bool seen[FIELD_COUNT] = {false};
	if (s.len > PERCH_CONNSTR_MAX)
		return set_fail(fail, PERCH_CONNSTR_TOO_LONG, PERCH_CONNSTR_MAX, none);
	size_t pos = 0;
	while (pos < s.len) {
		size_t end = pos;
		while (end < s.len && s.ptr[end] != ';')
			end++;
		perch_slice field = {s.ptr + pos, end - pos};
		size_t at = pos;
		pos = end + 1;
		if (field.len == 0) /* (one trailing `;` ends the loop before this) */
			return set_fail(fail, PERCH_CONNSTR_EMPTY_FIELD, at, none);
		const char *eq = memchr(field.ptr, '=', field.len);
		if (eq == NULL)
			return set_fail(fail, PERCH_CONNSTR_NO_EQUALS, at, field);
		perch_slice key = {field.ptr, (size_t)(eq - field.ptr)};
		perch_slice value = {eq + 1, field.len - key.len - 1};
		size_t i;
		for (i = 0; i < FIELD_COUNT; i++) {
			if (perch_slice_eq_cstr(key, FIELDS[i].name))
				break;
		}
		if (i == FIELD_COUNT)
			return set_fail(fail, PERCH_CONNSTR_UNKNOWN_KEY, at, key);
		if (seen[i])
			return set_fail(fail, PERCH_CONNSTR_DUPLICATE_KEY, at, key);
		seen[i] = true;
		if (value.len == 0)
			return set_fail(fail, PERCH_CONNSTR_EMPTY_VALUE, at, key);
		if (value.len > FIELDS[i].max && FIELDS[i].offset != X509_FIELD)
			return set_fail(fail, PERCH_CONNSTR_TOO_LONG, at, key);
		if (!value_chars_ok(value))
			return set_fail(fail, PERCH_CONNSTR_BAD_VALUE, at, key);
		if (FIELDS[i].offset == X509_FIELD) {
			if (!eq_ignore_case(value, "true"))
				return set_fail(fail, PERCH_CONNSTR_BAD_VALUE, at, key);
			out->x509 = true;
		} else {
			*field_slot(out, &FIELDS[i]) = value;
		}
	}
	return PERCH_OK;
}

perch_err perch_connstr_parse(perch_slice s, perch_connstr *out, perch_connstr_fail *fail)
{
	memset(out, 0, sizeof *out);
	perch_err err = read_fields(s, out, fail);
	if (err == PERCH_OK)
		err = perch_connstr_check(out, fail);
	if (err != PERCH_OK)
		memset(out, 0, sizeof *out);
	return err;
}

perch_err perch_connstr_write(const perch_connstr *cs, char *out, size_t cap, size_t *out_len,
                              perch_connstr_fail *fail)
{
	perch_err err = perch_connstr_check(cs, fail);
	if (err != PERCH_OK)
		return err;
	size_t n = 0;
	for (size_t i = 0; i < FIELD_COUNT; i++) {
		const field_def *f = &FIELDS[i];
		perch_slice v = f->offset == X509_FIELD ? (cs->x509 ? PERCH_SLICE_LIT("true")
		                                                    : (perch_slice){NULL, 0})
		                                        : field_get(cs, f);
		if (v.len == 0)
			continue;
		size_t klen = strlen(f->name);
		size_t need = (n > 0 ? 1 : 0) + klen + 1 + v.len;
		if (cap - n < need)
			return set_fail(fail, PERCH_CONNSTR_NO_SPACE, n, (perch_slice){NULL, 0});
		if (n > 0)
			out[n++] = ';';
		memcpy(out + n, f->name, klen);
		n += klen;
		out[n++] = '=';
		memcpy(out + n, v.ptr, v.len);
		n += v.len;
	}
	*out_len = n;
	return PERCH_OK;
}

const char *perch_connstr_reason_str(perch_connstr_reason reason)
{
	switch (reason) {
	case PERCH_CONNSTR_OK: return "ok";
	case PERCH_CONNSTR_TOO_LONG: return "too long";
	case PERCH_CONNSTR_EMPTY_FIELD: return "empty field";
	case PERCH_CONNSTR_NO_EQUALS: return "field without '='";
	case PERCH_CONNSTR_UNKNOWN_KEY: return "unknown key";
	case PERCH_CONNSTR_DUPLICATE_KEY: return "duplicate key";
	case PERCH_CONNSTR_EMPTY_VALUE: return "empty value";
	case PERCH_CONNSTR_BAD_VALUE: return "bad value";
	case PERCH_CONNSTR_MISSING_HOST: return "missing HostName";
	case PERCH_CONNSTR_MISSING_DEVICE: return "missing DeviceId";
	case PERCH_CONNSTR_MISSING_CREDENTIAL:
		return "missing credential (SharedAccessKey, SharedAccessSignature or x509=true)";
	case PERCH_CONNSTR_CONFLICT: return "conflicting fields";
	case PERCH_CONNSTR_NO_SPACE: return "output buffer too small";
	case PERCH_CONNSTR_REASON_COUNT: break;
	}
	return "unknown reason";
}
