/*
 * sastool.c — a small command line around proto's SAS tokens and connection
 * strings, for integration tests and for people poking at tokens by hand.
 *
 *   sastool sign   --resource URI --expiry SECS [--key-name NAME] [--key-file F]
 *   sastool verify --resource URI [--now SECS] [--skew SECS] [--max-lifetime SECS]
 *                  (--key-file F | --token-file F)
 *   sastool derive --module ID [--key-file F]
 *   sastool connstr [--field NAME]
 *
 * Secrets never come from the command line: a key is read from --key-file or
 * else from stdin; verify reads the token from stdin when the key comes from a
 * file, or from --token-file when the key comes from stdin; connstr reads the
 * connection string from stdin and prints it in canonical form (or one field).
 * Trailing newlines of what is read are dropped.
 *
 * Exit status: 0 done / token valid, 1 token or connection string refused
 * (the reason on stdout, as "invalid: REASON"), 2 usage or I/O error.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mbedtls/platform_util.h>

#include "perch/connstr.h"
#include "perch/sas.h"

#define SASTOOL_MAX_INPUT 8192

static void usage(void)
{
	fputs("usage: sastool sign --resource URI --expiry SECS [--key-name NAME] [--key-file F]\n"
	      "       sastool verify --resource URI [--now SECS] [--skew SECS]\n"
	      "                      [--max-lifetime SECS] (--key-file F | --token-file F)\n"
	      "       sastool derive --module ID [--key-file F]\n"
	      "       sastool connstr [--field NAME]\n"
	      "keys and tokens are read from files or stdin, never from arguments\n",
	      stderr);
}

/* Reads all of path ("-" or NULL: stdin) into buf, without trailing CR/LF. */
static int read_input(const char *path, char *buf, size_t cap, size_t *len)
{
	FILE *f = stdin;
	if (path != NULL && strcmp(path, "-") != 0) {
		f = fopen(path, "rb");
		if (f == NULL) {
			fprintf(stderr, "sastool: %s: %s\n", path, strerror(errno));
			return -1;
		}
	}
	size_t n = fread(buf, 1, cap, f);
	int extra = fgetc(f);
	if (f != stdin)
		fclose(f);
	if (extra != EOF) {
		fprintf(stderr, "sastool: input over %zu bytes\n", cap);
		return -1;
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	*len = n;
	return 0;
}

static int parse_u64_arg(const char *s, uint64_t *out)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || s[0] == '-') {
		fprintf(stderr, "sastool: not a number: %s\n", s);
		return -1;
	}
	*out = (uint64_t)v;
	return 0;
}

/* Options shared by all commands; NULL or 0 when not given. */
typedef struct options {
	const char *resource;
	const char *key_name;
	const char *key_file;
	const char *token_file;
	const char *module;
	const char *field;
	uint64_t expiry, now, skew, max_lifetime;
	int have_now;
} options;

static int parse_options(int argc, char **argv, options *o)
{
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL) {
			fprintf(stderr, "sastool: %s needs a value\n", a);
			return -1;
		}
		i++;
		if (strcmp(a, "--resource") == 0)
			o->resource = v;
		else if (strcmp(a, "--key-name") == 0)
			o->key_name = v;
		else if (strcmp(a, "--key-file") == 0)
			o->key_file = v;
		else if (strcmp(a, "--token-file") == 0)
			o->token_file = v;
		else if (strcmp(a, "--module") == 0)
			o->module = v;
		else if (strcmp(a, "--field") == 0)
			o->field = v;
		else if (strcmp(a, "--expiry") == 0) {
			if (parse_u64_arg(v, &o->expiry) != 0)
				return -1;
		} else if (strcmp(a, "--now") == 0) {
			if (parse_u64_arg(v, &o->now) != 0)
				return -1;
			o->have_now = 1;
		} else if (strcmp(a, "--skew") == 0) {
			if (parse_u64_arg(v, &o->skew) != 0)
				return -1;
		} else if (strcmp(a, "--max-lifetime") == 0) {
			if (parse_u64_arg(v, &o->max_lifetime) != 0)
				return -1;
		} else {
			fprintf(stderr, "sastool: unknown option %s\n", a);
			return -1;
		}
	}
	return 0;
}

static int cmd_sign(const options *o, char *key, size_t key_cap)
{
	size_t key_len, len;
	char token[PERCH_SAS_MAX_TOKEN];
	if (o->resource == NULL || o->expiry == 0) {
		usage();
		return 2;
	}
	if (read_input(o->key_file, key, key_cap, &key_len) != 0)
		return 2;
	perch_err err =
	        perch_sas_sign(perch_slice_cstr(o->resource), perch_slice_cstr(o->key_name),
	                       (perch_slice){key, key_len}, o->expiry, token, sizeof token, &len);
	if (err != PERCH_OK) {
		fprintf(stderr, "sastool: sign: %s\n", perch_strerror(err));
		return 2;
	}
	printf("%.*s\n", (int)len, token);
	return 0;
}

static int cmd_verify(const options *o, char *key, size_t key_cap)
{
	char token[SASTOOL_MAX_INPUT];
	size_t key_len, token_len;
	if (o->resource == NULL || (o->key_file == NULL) == (o->token_file == NULL)) {
		usage();
		return 2;
	}
	if (read_input(o->key_file, key, key_cap, &key_len) != 0 ||
	    read_input(o->token_file, token, sizeof token, &token_len) != 0)
		return 2;
	perch_sas_check check = {
	        .resource = perch_slice_cstr(o->resource),
	        .key = {key, key_len},
	        .now = o->have_now ? o->now : (uint64_t)time(NULL),
	        .skew = o->skew,
	        .max_lifetime = o->max_lifetime,
	};
	perch_sas_reason why;
	perch_err err = perch_sas_verify((perch_slice){token, token_len}, &check, NULL, &why);
	if (err != PERCH_OK) {
		printf("invalid: %s\n", perch_sas_reason_str(why));
		return 1;
	}
	puts("valid");
	return 0;
}

static int cmd_derive(const options *o, char *key, size_t key_cap)
{
	char out[PERCH_SAS_KEY_B64_LEN];
	size_t key_len, len;
	if (o->module == NULL) {
		usage();
		return 2;
	}
	if (read_input(o->key_file, key, key_cap, &key_len) != 0)
		return 2;
	perch_err err = perch_sas_derive_module_key(
	        (perch_slice){key, key_len}, perch_slice_cstr(o->module), out, sizeof out, &len);
	if (err != PERCH_OK) {
		fprintf(stderr, "sastool: derive: %s\n", perch_strerror(err));
		return 2;
	}
	printf("%.*s\n", (int)len, out);
	mbedtls_platform_zeroize(out, sizeof out);
	return 0;
}

static int cmd_connstr(const options *o, char *in, size_t cap)
{
	char out[PERCH_CONNSTR_MAX];
	size_t len, out_len;
	perch_connstr cs;
	perch_connstr_fail fail;
	if (read_input(NULL, in, cap, &len) != 0)
		return 2;
	if (perch_connstr_parse((perch_slice){in, len}, &cs, &fail) != PERCH_OK) {
		printf("invalid: %s", perch_connstr_reason_str(fail.reason));
		if (fail.key.len > 0)
			printf(" (%.*s)", (int)fail.key.len, fail.key.ptr);
		printf(" at %zu\n", fail.offset);
		return 1;
	}
	if (o->field != NULL) {
		const struct {
			const char *name;
			perch_slice v;
		} f[] = {{"HostName", cs.host_name},
		         {"DeviceId", cs.device_id},
		         {"ModuleId", cs.module_id},
		         {"SharedAccessKey", cs.shared_access_key},
		         {"SharedAccessKeyName", cs.shared_access_key_name},
		         {"SharedAccessSignature", cs.shared_access_signature},
		         {"GatewayHostName", cs.gateway_host_name},
		         {"x509", cs.x509 ? PERCH_SLICE_LIT("true") : PERCH_SLICE_LIT("")}};
		for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
			if (strcmp(o->field, f[i].name) == 0) {
				printf("%.*s\n", (int)f[i].v.len, f[i].v.ptr ? f[i].v.ptr : "");
				return 0;
			}
		}
		fprintf(stderr, "sastool: unknown field %s\n", o->field);
		return 2;
	}
	if (perch_connstr_write(&cs, out, sizeof out, &out_len, &fail) != PERCH_OK) {
		printf("invalid: %s\n", perch_connstr_reason_str(fail.reason));
		return 1;
	}
	printf("%.*s\n", (int)out_len, out);
	return 0;
}

int main(int argc, char **argv)
{
	options o = {0};
	static char secret[SASTOOL_MAX_INPUT]; /* key or connection string; wiped at exit */
	int rc = 2;
	if (argc < 2 || parse_options(argc, argv, &o) != 0) {
		usage();
		return 2;
	}
	if (strcmp(argv[1], "sign") == 0)
		rc = cmd_sign(&o, secret, sizeof secret);
	else if (strcmp(argv[1], "verify") == 0)
		rc = cmd_verify(&o, secret, sizeof secret);
	else if (strcmp(argv[1], "derive") == 0)
		rc = cmd_derive(&o, secret, sizeof secret);
	else if (strcmp(argv[1], "connstr") == 0)
		rc = cmd_connstr(&o, secret, sizeof secret);
	else
		usage();
	mbedtls_platform_zeroize(secret, sizeof secret);
	return rc;
}
