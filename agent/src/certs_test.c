/*
 * certs_test.c — unit tests of certs.c in a temporary directory: the CA and
 * the hub's certificate are made on first call (keys mode 0600), the chain
 * verifies with mbedtls_x509_crt_verify for every name (and not for
 * others), the IP SAN is there; nothing is made again until due; with an
 * injected clock the server certificate is renewed when a third of its
 * lifetime is left, and the CA (with a new server certificate) once it
 * would expire before a new server certificate; changed names, a lost or
 * wrong key, a damaged CA each lead to the right new files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <mbedtls/x509_crt.h>

#include "certs.h"

#define DAY 86400LL

typedef struct fixture {
	char dir[64];
	agent_certs_cfg cfg;
} fixture;

static int setup(void **state)
{
	fixture *f = calloc(1, sizeof *f);
	snprintf(f->dir, sizeof f->dir, "/tmp/perch-certs-test.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return -1;
	}
	/* A directory that does not exist yet: made by ensure. */
	strcat(f->dir, "/certs");
	f->cfg = (agent_certs_cfg){.dir = f->dir, .device_id = "gw-1", .gateway = "perch-hub"};
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	fixture *f = *state;
	char cmd[128];
	char *slash = strrchr(f->dir, '/');
	*slash = '\0';
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
	if (system(cmd) != 0)
		return -1;
	free(f);
	return 0;
}

static void load(const fixture *f, const char *name, mbedtls_x509_crt *crt)
{
	char p[128];
	snprintf(p, sizeof p, "%s/%s", f->dir, name);
	mbedtls_x509_crt_init(crt);
	assert_int_equal(mbedtls_x509_crt_parse_file(crt, p), 0);
}

static mode_t mode_of(const fixture *f, const char *name)
{
	char p[128];
	struct stat st;
	snprintf(p, sizeof p, "%s/%s", f->dir, name);
	assert_int_equal(stat(p, &st), 0);
	return st.st_mode & 0777;
}

static void ensure(fixture *f, int64_t now, bool ca, bool server)
{
	agent_certs_result res;
	char err[300];
	perch_err e = agent_certs_ensure(&f->cfg, now, &res, err, sizeof err);
	if (e != PERCH_OK)
		fail_msg("ensure: %s", err);
	if (res.ca_made != ca || res.server_made != server)
		fail_msg("at +%lld s: ca_made %d server_made %d (%s), want %d %d",
		         (long long)(now - time(NULL)), res.ca_made, res.server_made, res.why, ca,
		         server);
	assert_true(res.server_renew_at < res.server_not_after);
}

static uint32_t verify(const mbedtls_x509_crt *srv, mbedtls_x509_crt *ca, const char *name)
{
	uint32_t flags = 0;
	(void)mbedtls_x509_crt_verify((mbedtls_x509_crt *)srv, ca, NULL, name, &flags, NULL, NULL);
	return flags;
}

static bool has_bytes(const mbedtls_x509_crt *c, const unsigned char *b, size_t n)
{
	for (size_t i = 0; i + n <= c->raw.len; i++)
		if (memcmp(c->raw.p + i, b, n) == 0)
			return true;
	return false;
}

static void test_first_start(void **state)
{
	fixture *f = *state;
	int64_t now = time(NULL);
	ensure(f, now, true, true);
	assert_int_equal(mode_of(f, "ca.key"), 0600);
	assert_int_equal(mode_of(f, "hub.key"), 0600);
	assert_int_equal(mode_of(f, "ca.pem"), 0644);
	mbedtls_x509_crt ca, srv;
	load(f, "ca.pem", &ca);
	load(f, "hub.pem", &srv);
	assert_true(ca.ca_istrue);
	assert_false(srv.ca_istrue);
	for (const char *const *n = (const char *const[]){"perch-hub", "gw-1", "localhost", NULL};
	     *n != NULL; n++)
		assert_int_equal(verify(&srv, &ca, *n), 0);
	assert_int_not_equal(verify(&srv, &ca, "evil.example"), 0);
	/* 127.0.0.1 as an iPAddress SAN: [7] 4 bytes. */
	static const unsigned char ip[] = {0x87, 0x04, 127, 0, 0, 1};
	assert_true(has_bytes(&srv, ip, sizeof ip));
	/* The CA lives a year, the server certificate 30 days. */
	struct tm tm = {0};
	tm.tm_year = ca.valid_to.year - 1900;
	tm.tm_mon = ca.valid_to.mon - 1;
	tm.tm_mday = ca.valid_to.day;
	int64_t ca_to = timegm(&tm);
	assert_true(ca_to >= now + 364 * DAY && ca_to <= now + 366 * DAY);
	mbedtls_x509_crt_free(&ca);
	mbedtls_x509_crt_free(&srv);
	/* Nothing to do right after. */
	ensure(f, now, false, false);
	ensure(f, now + 3600, false, false);
}

static void test_renewal_with_clock(void **state)
{
	fixture *f = *state;
	int64_t now = time(NULL);
	ensure(f, now, true, true);
	ensure(f, now + 19 * DAY, false, false); /* 11 days of 30 left: not yet */
	ensure(f, now + 21 * DAY, false, true);  /* 9 left: renewed */
	mbedtls_x509_crt ca, srv;
	load(f, "ca.pem", &ca);
	load(f, "hub.pem", &srv);
	assert_int_equal(verify(&srv, &ca, "perch-hub") & ~(uint32_t)MBEDTLS_X509_BADCERT_FUTURE,
	                 0);
	mbedtls_x509_crt_free(&srv);
	ensure(f, now + 22 * DAY, false, false);
	/* 340 days on, the CA has 25 days left: less than a new server
	 * certificate would live. Both are made again. */
	ensure(f, now + 340 * DAY, true, true);
	mbedtls_x509_crt ca2;
	load(f, "ca.pem", &ca2);
	assert_false(ca2.serial.len == ca.serial.len &&
	             memcmp(ca2.serial.p, ca.serial.p, ca.serial.len) == 0);
	mbedtls_x509_crt_free(&ca);
	mbedtls_x509_crt_free(&ca2);
}

static void test_due(void **state)
{
	(void)state;
	assert_false(agent_certs_due(0, 30, 0));
	assert_false(agent_certs_due(0, 30, 19));
	assert_true(agent_certs_due(0, 30, 20));
	assert_true(agent_certs_due(0, 30, 29));
	assert_true(agent_certs_due(0, 30, 30));
	assert_true(agent_certs_due(0, 30, 31));
	assert_true(agent_certs_due(10, 40, 5)); /* not valid yet */
}

static void test_changes(void **state)
{
	fixture *f = *state;
	int64_t now = time(NULL);
	ensure(f, now, true, true);
	/* Another gateway name: a new server certificate, same CA. */
	f->cfg.gateway = "gw.example.net";
	ensure(f, now, false, true);
	mbedtls_x509_crt ca, srv;
	load(f, "ca.pem", &ca);
	load(f, "hub.pem", &srv);
	assert_int_equal(verify(&srv, &ca, "gw.example.net"), 0);
	assert_int_not_equal(verify(&srv, &ca, "perch-hub"), 0);
	mbedtls_x509_crt_free(&srv);
	/* An IP address as the gateway name: an IP SAN. */
	f->cfg.gateway = "10.1.2.3";
	ensure(f, now, false, true);
	load(f, "hub.pem", &srv);
	static const unsigned char ip[] = {0x87, 0x04, 10, 1, 2, 3};
	assert_true(has_bytes(&srv, ip, sizeof ip));
	mbedtls_x509_crt_free(&srv);
	/* The server key lost: made again. */
	char p[128];
	snprintf(p, sizeof p, "%s/hub.key", f->dir);
	assert_int_equal(unlink(p), 0);
	ensure(f, now, false, true);
	/* A server key that is not the certificate's: made again. */
	char q[128];
	snprintf(q, sizeof q, "%s/ca.key", f->dir);
	char cmd[300];
	snprintf(cmd, sizeof cmd, "cp '%s' '%s'", q, p);
	assert_int_equal(system(cmd), 0);
	ensure(f, now, false, true);
	/* A damaged CA: both made again, and the old server certificate no
	 * longer verifies against the new CA. */
	load(f, "hub.pem", &srv);
	snprintf(p, sizeof p, "%s/ca.pem", f->dir);
	FILE *fp = fopen(p, "w");
	assert_non_null(fp);
	fputs("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n", fp);
	fclose(fp);
	ensure(f, now, true, true);
	mbedtls_x509_crt ca2;
	load(f, "ca.pem", &ca2);
	assert_int_not_equal(verify(&srv, &ca2, "10.1.2.3"), 0);
	mbedtls_x509_crt_free(&srv);
	load(f, "hub.pem", &srv);
	assert_int_equal(verify(&srv, &ca2, NULL), 0);
	mbedtls_x509_crt_free(&srv);
	mbedtls_x509_crt_free(&ca);
	mbedtls_x509_crt_free(&ca2);
}

static void test_unwritable(void **state)
{
	(void)state;
	agent_certs_cfg c = {.dir = "/proc/perch-no/certs", .device_id = "d", .gateway = "g"};
	agent_certs_result res;
	char err[300];
	assert_int_not_equal(agent_certs_ensure(&c, time(NULL), &res, err, sizeof err), PERCH_OK);
	assert_true(err[0] != '\0');
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test_setup_teardown(test_first_start, setup, teardown),
	        cmocka_unit_test_setup_teardown(test_renewal_with_clock, setup, teardown),
	        cmocka_unit_test(test_due),
	        cmocka_unit_test_setup_teardown(test_changes, setup, teardown),
	        cmocka_unit_test(test_unwritable),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
