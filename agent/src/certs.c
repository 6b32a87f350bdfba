/*
 * certs.c — the device CA and the hub's server certificate (certs.h):
 * EC P-256 keys and X.509 v3 certificates written with mbedTLS's x509write,
 * checked on every call (parse, key pair, chain, names, expiry) and made
 * again when missing, unusable or due.
 *
 * mbedTLS 2.28 has no writer for subject alternative names or extended key
 * usage: both extensions are DER-encoded here with its asn1write functions.
 */
#include "certs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/asn1write.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/platform_util.h>
#include <mbedtls/x509_crt.h>

#define PEM_MAX  4096
#define CN_MAX   64 /* X.520 ub-common-name */
#define DAY_S    86400LL
#define CA_FILE  "ca.pem"
#define CA_KEY   "ca.key"
#define HUB_FILE "hub.pem"
#define HUB_KEY  "hub.key"

typedef struct rng {
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
} rng;

/* The names a server certificate is made for. */
typedef struct names {
	char dns[AGENT_CERT_MAX_NAMES][256];
	size_t ndns;
	unsigned char ip[AGENT_CERT_MAX_NAMES][16];
	size_t iplen[AGENT_CERT_MAX_NAMES];
	size_t nip;
	char cn[CN_MAX + 1];
} names;

bool agent_certs_due(int64_t not_before, int64_t not_after, int64_t now)
{
	if (now < not_before || now >= not_after)
		return true;
	return not_after - now <= (not_after - not_before) / 3;
}

static perch_err fail(char *err, size_t cap, perch_err e, const char *what, int rc)
{
	if (rc != 0)
		snprintf(err, cap, "%s: mbedTLS error -0x%04x", what, (unsigned)-rc);
	else
		snprintf(err, cap, "%s: %s", what, strerror(errno));
	return e;
}

/* --- files ------------------------------------------------------------------------- */

static void path_of(const char *dir, const char *name, char *out, size_t cap)
{
	snprintf(out, cap, "%s/%s", dir, name);
}

/* write_atomic replaces dir/name with len bytes of data, mode mode. */
static perch_err write_atomic(const char *dir, const char *name, const void *data, size_t len,
                              mode_t mode, char *err, size_t cap)
{
	char tmp[1100], final[1100];
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp.%ld", dir, name, (long)getpid());
	path_of(dir, name, final, sizeof final);
	unlink(tmp);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return fail(err, cap, perch_err_from_errno(errno), tmp, 0);
	bool ok = fchmod(fd, mode) == 0 && write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
	int e = errno;
	if (close(fd) != 0 || !ok || rename(tmp, final) != 0) {
		e = ok ? errno : e;
		unlink(tmp);
		errno = e;
		return fail(err, cap, perch_err_from_errno(e), final, 0);
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return PERCH_OK;
}

static perch_err mkdirs(const char *path, char *err, size_t cap)
{
	char dir[1024];
	if ((size_t)snprintf(dir, sizeof dir, "%s", path) >= sizeof dir) {
		snprintf(err, cap, "%s: path too long", path);
		return PERCH_ETOOBIG;
	}
	for (char *p = dir + 1;; p++) {
		if (*p != '/' && *p != '\0')
			continue;
		char c = *p;
		*p = '\0';
		if (mkdir(dir, 0755) != 0 && errno != EEXIST)
			return fail(err, cap, perch_err_from_errno(errno), dir, 0);
		*p = c;
		if (c == '\0')
			break;
	}
	return PERCH_OK;
}

/* --- names and times ---------------------------------------------------------------- */

static bool host_name(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > 253)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '.'))
			return false;
	}
	return true;
}

/* cn_text copies s into out keeping only characters safe in a DN string. */
static void cn_text(const char *s, char *out, size_t cap)
{
	size_t k = 0;
	for (; *s != '\0' && k + 1 < cap; s++) {
		char c = *s;
		bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		            (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' || c == ' ';
		out[k++] = (char)(safe ? c : '_');
	}
	out[k] = '\0';
}

static void add_dns(names *n, const char *s)
{
	for (size_t i = 0; i < n->ndns; i++)
		if (strcasecmp(n->dns[i], s) == 0)
			return;
	if (n->ndns < AGENT_CERT_MAX_NAMES)
		snprintf(n->dns[n->ndns++], sizeof n->dns[0], "%s", s);
}

static void add_ip(names *n, const unsigned char *ip, size_t len)
{
	for (size_t i = 0; i < n->nip; i++)
		if (n->iplen[i] == len && memcmp(n->ip[i], ip, len) == 0)
			return;
	if (n->nip < AGENT_CERT_MAX_NAMES) {
		memcpy(n->ip[n->nip], ip, len);
		n->iplen[n->nip++] = len;
	}
}

static void server_names(const agent_certs_cfg *c, names *n)
{
	memset(n, 0, sizeof *n);
	unsigned char ip[16];
	if (inet_pton(AF_INET, c->gateway, ip) == 1)
		add_ip(n, ip, 4);
	else if (inet_pton(AF_INET6, c->gateway, ip) == 1)
		add_ip(n, ip, 16);
	else if (host_name(c->gateway))
		add_dns(n, c->gateway);
	if (c->device_id != NULL && host_name(c->device_id))
		add_dns(n, c->device_id);
	add_dns(n, "localhost");
	static const unsigned char lo[4] = {127, 0, 0, 1};
	add_ip(n, lo, 4);
	cn_text(c->gateway, n->cn, sizeof n->cn);
}

static int64_t unix_of(const mbedtls_x509_time *t)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	tm.tm_year = t->year - 1900;
	tm.tm_mon = t->mon - 1;
	tm.tm_mday = t->day;
	tm.tm_hour = t->hour;
	tm.tm_min = t->min;
	tm.tm_sec = t->sec;
	return (int64_t)timegm(&tm);
}

static void x509_time(int64_t t, char *out, size_t cap)
{
	time_t tt = (time_t)t;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(out, cap, "%Y%m%d%H%M%S", &tm);
}

/* --- making ---------------------------------------------------------------------------- */

static perch_err rng_init(rng *r, char *err, size_t cap)
{
	static const char pers[] = "perch-agent certs";
	mbedtls_entropy_init(&r->entropy);
	mbedtls_ctr_drbg_init(&r->drbg);
	int rc = mbedtls_ctr_drbg_seed(&r->drbg, mbedtls_entropy_func, &r->entropy,
	                               (const unsigned char *)pers, sizeof pers - 1);
	return rc == 0 ? PERCH_OK : fail(err, cap, PERCH_EINTERNAL, "random generator", rc);
}

static void rng_free(rng *r)
{
	mbedtls_ctr_drbg_free(&r->drbg);
	mbedtls_entropy_free(&r->entropy);
}

static perch_err new_key(mbedtls_pk_context *pk, rng *r, char *err, size_t cap)
{
	int rc = mbedtls_pk_setup(pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY));
	if (rc == 0)
		rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(*pk),
		                         mbedtls_ctr_drbg_random, &r->drbg);
	return rc == 0 ? PERCH_OK : fail(err, cap, PERCH_EINTERNAL, "EC key", rc);
}

/* san_der writes the subjectAltName value for n at the end of buf; *out and
 * *len give it. */
static int san_der(const names *n, unsigned char *buf, size_t cap, unsigned char **out, size_t *len)
{
	unsigned char *p = buf + cap;
	size_t total = 0;
	int rc;
	for (size_t i = n->nip; i-- > 0;) {
		size_t k = 0;
		if ((rc = mbedtls_asn1_write_raw_buffer(&p, buf, n->ip[i], n->iplen[i])) < 0)
			return rc;
		k += (size_t)rc;
		if ((rc = mbedtls_asn1_write_len(&p, buf, k)) < 0)
			return rc;
		k += (size_t)rc;
		if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7)) < 0)
			return rc;
		total += k + (size_t)rc;
	}
	for (size_t i = n->ndns; i-- > 0;) {
		size_t k = 0;
		if ((rc = mbedtls_asn1_write_raw_buffer(&p, buf, (const unsigned char *)n->dns[i],
		                                        strlen(n->dns[i]))) < 0)
			return rc;
		k += (size_t)rc;
		if ((rc = mbedtls_asn1_write_len(&p, buf, k)) < 0)
			return rc;
		k += (size_t)rc;
		if ((rc = mbedtls_asn1_write_tag(&p, buf, MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2)) < 0)
			return rc;
		total += k + (size_t)rc;
	}
	if ((rc = mbedtls_asn1_write_len(&p, buf, total)) < 0)
		return rc;
	total += (size_t)rc;
	if ((rc = mbedtls_asn1_write_tag(&p, buf,
	                                 MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
		return rc;
	total += (size_t)rc;
	*out = p;
	*len = total;
	return 0;
}

/* eku_der: extendedKeyUsage = serverAuth. */
static int eku_der(unsigned char *buf, size_t cap, unsigned char **out, size_t *len)
{
	unsigned char *p = buf + cap;
	size_t total = 0;
	int rc;
	if ((rc = mbedtls_asn1_write_oid(&p, buf, MBEDTLS_OID_SERVER_AUTH,
	                                 MBEDTLS_OID_SIZE(MBEDTLS_OID_SERVER_AUTH))) < 0)
		return rc;
	total += (size_t)rc;
	if ((rc = mbedtls_asn1_write_len(&p, buf, total)) < 0)
		return rc;
	total += (size_t)rc;
	if ((rc = mbedtls_asn1_write_tag(&p, buf,
	                                 MBEDTLS_ASN1_CONSTRUCTED | MBEDTLS_ASN1_SEQUENCE)) < 0)
		return rc;
	total += (size_t)rc;
	*out = p;
	*len = total;
	return 0;
}

/* make_cert writes a certificate for subject_key named subject, issued by
 * issuer_key named issuer, valid [from, to], as PEM into pem. A CA when
 * server is NULL, else a server certificate for those names. */
static int make_cert(mbedtls_pk_context *subject_key, const char *subject,
                     mbedtls_pk_context *issuer_key, const char *issuer, int64_t from, int64_t to,
                     const names *server, rng *r, unsigned char *pem, size_t cap)
{
	mbedtls_x509write_cert w;
	mbedtls_mpi serial;
	unsigned char raw[16], ext[1200], *der = NULL;
	size_t der_len = 0;
	char nb[16], na[16];
	int rc;
	mbedtls_x509write_crt_init(&w);
	mbedtls_mpi_init(&serial);
	if ((rc = mbedtls_ctr_drbg_random(&r->drbg, raw, sizeof raw)) != 0)
		goto out;
	raw[0] = (unsigned char)((raw[0] & 0x7f) | 0x40); /* positive, 16 bytes */
	if ((rc = mbedtls_mpi_read_binary(&serial, raw, sizeof raw)) != 0)
		goto out;
	x509_time(from, nb, sizeof nb);
	x509_time(to, na, sizeof na);
	mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(&w, subject_key);
	mbedtls_x509write_crt_set_issuer_key(&w, issuer_key);
	if ((rc = mbedtls_x509write_crt_set_subject_name(&w, subject)) != 0 ||
	    (rc = mbedtls_x509write_crt_set_issuer_name(&w, issuer)) != 0 ||
	    (rc = mbedtls_x509write_crt_set_serial(&w, &serial)) != 0 ||
	    (rc = mbedtls_x509write_crt_set_validity(&w, nb, na)) != 0 ||
	    (rc = mbedtls_x509write_crt_set_basic_constraints(&w, server == NULL, 0)) != 0 ||
	    (rc = mbedtls_x509write_crt_set_subject_key_identifier(&w)) != 0 ||
	    (rc = mbedtls_x509write_crt_set_authority_key_identifier(&w)) != 0)
		goto out;
	if (server == NULL) {
		rc = mbedtls_x509write_crt_set_key_usage(&w, MBEDTLS_X509_KU_KEY_CERT_SIGN |
		                                                     MBEDTLS_X509_KU_CRL_SIGN);
		if (rc != 0)
			goto out;
	} else {
		if ((rc = mbedtls_x509write_crt_set_key_usage(
		             &w, MBEDTLS_X509_KU_DIGITAL_SIGNATURE)) != 0 ||
		    (rc = san_der(server, ext, sizeof ext, &der, &der_len)) != 0 ||
		    (rc = mbedtls_x509write_crt_set_extension(
		             &w, MBEDTLS_OID_SUBJECT_ALT_NAME,
		             MBEDTLS_OID_SIZE(MBEDTLS_OID_SUBJECT_ALT_NAME), 0, der, der_len)) !=
		            0 ||
		    (rc = eku_der(ext, sizeof ext, &der, &der_len)) != 0 ||
		    (rc = mbedtls_x509write_crt_set_extension(
		             &w, MBEDTLS_OID_EXTENDED_KEY_USAGE,
		             MBEDTLS_OID_SIZE(MBEDTLS_OID_EXTENDED_KEY_USAGE), 0, der, der_len)) !=
		            0)
			goto out;
	}
	rc = mbedtls_x509write_crt_pem(&w, pem, cap, mbedtls_ctr_drbg_random, &r->drbg);
out:
	mbedtls_x509write_crt_free(&w);
	mbedtls_mpi_free(&serial);
	return rc;
}

/* write_pair writes key then certificate (both PEM) under dir. */
static perch_err write_pair(const char *dir, const char *key_name, mbedtls_pk_context *key,
                            const char *crt_name, const unsigned char *crt_pem, char *err,
                            size_t cap)
{
	unsigned char kpem[PEM_MAX];
	int rc = mbedtls_pk_write_key_pem(key, kpem, sizeof kpem);
	if (rc != 0)
		return fail(err, cap, PERCH_EINTERNAL, "key PEM", rc);
	perch_err e = write_atomic(dir, key_name, kpem, strlen((char *)kpem), 0600, err, cap);
	mbedtls_platform_zeroize(kpem, sizeof kpem);
	if (e != PERCH_OK)
		return e;
	return write_atomic(dir, crt_name, crt_pem, strlen((const char *)crt_pem), 0644, err, cap);
}

/* --- checking ------------------------------------------------------------------------ */

/* load_pair reads dir/crt_name and dir/key_name; true when both parse and
 * the key is the certificate's. */
static bool load_pair(const char *dir, const char *crt_name, const char *key_name,
                      mbedtls_x509_crt *crt, mbedtls_pk_context *key)
{
	char p[1100];
	path_of(dir, crt_name, p, sizeof p);
	if (mbedtls_x509_crt_parse_file(crt, p) != 0)
		return false;
	path_of(dir, key_name, p, sizeof p);
	if (mbedtls_pk_parse_keyfile(key, p, NULL) != 0)
		return false;
	return mbedtls_pk_check_pair(&crt->pk, key) == 0;
}

/* names_match: the certificate's CN and DNS names are those of n. */
static bool names_match(const mbedtls_x509_crt *crt, const names *n)
{
	char dn[512], want[CN_MAX + 8];
	if (mbedtls_x509_dn_gets(dn, sizeof dn, &crt->subject) < 0)
		return false;
	snprintf(want, sizeof want, "CN=%s", n->cn);
	if (strcmp(dn, want) != 0)
		return false;
	size_t seen = 0;
	for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s != NULL; s = s->next) {
		if (s->buf.p == NULL || s->buf.tag != (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 2))
			continue;
		bool found = false;
		for (size_t i = 0; i < n->ndns && !found; i++)
			found = strlen(n->dns[i]) == s->buf.len &&
			        strncasecmp(n->dns[i], (const char *)s->buf.p, s->buf.len) == 0;
		if (!found)
			return false;
		seen++;
	}
	return seen == n->ndns;
}

perch_err agent_certs_ensure(const agent_certs_cfg *c, int64_t now, agent_certs_result *res,
                             char *err, size_t cap)
{
	memset(res, 0, sizeof *res);
	err[0] = '\0';
	int64_t ca_life = c->ca_lifetime_s > 0 ? c->ca_lifetime_s : AGENT_CERT_CA_DAYS * DAY_S;
	int64_t srv_life =
	        c->server_lifetime_s > 0 ? c->server_lifetime_s : AGENT_CERT_SERVER_DAYS * DAY_S;
	perch_err e = mkdirs(c->dir, err, cap);
	if (e != PERCH_OK)
		return e;
	mbedtls_x509_crt ca, srv;
	mbedtls_pk_context ca_key, srv_key;
	rng r;
	mbedtls_x509_crt_init(&ca);
	mbedtls_x509_crt_init(&srv);
	mbedtls_pk_init(&ca_key);
	mbedtls_pk_init(&srv_key);
	bool have_rng = false;
	unsigned char pem[PEM_MAX];
	char ca_name[CN_MAX + 32], id[CN_MAX];
	names n;
	server_names(c, &n);

	/* The CA: whole, and outliving a server certificate made now. */
	bool ca_ok = load_pair(c->dir, CA_FILE, CA_KEY, &ca, &ca_key) && ca.ca_istrue &&
	             now >= unix_of(&ca.valid_from) - AGENT_CERT_BACKDATE_S &&
	             unix_of(&ca.valid_to) >= now + srv_life;
	if (!ca_ok) {
		if ((e = rng_init(&r, err, cap)) != PERCH_OK)
			goto out;
		have_rng = true;
		mbedtls_x509_crt_free(&ca);
		mbedtls_x509_crt_init(&ca);
		mbedtls_pk_free(&ca_key);
		mbedtls_pk_init(&ca_key);
		cn_text(c->device_id != NULL ? c->device_id : "", id, sizeof id - 17);
		snprintf(ca_name, sizeof ca_name, "CN=Perch device CA %s", id);
		if ((e = new_key(&ca_key, &r, err, cap)) != PERCH_OK)
			goto out;
		int rc = make_cert(&ca_key, ca_name, &ca_key, ca_name, now - AGENT_CERT_BACKDATE_S,
		                   now + ca_life, NULL, &r, pem, sizeof pem);
		if (rc != 0) {
			e = fail(err, cap, PERCH_EINTERNAL, "device CA", rc);
			goto out;
		}
		if ((e = write_pair(c->dir, CA_KEY, &ca_key, CA_FILE, pem, err, cap)) != PERCH_OK)
			goto out;
		if ((rc = mbedtls_x509_crt_parse(&ca, pem, strlen((char *)pem) + 1)) != 0) {
			e = fail(err, cap, PERCH_EINTERNAL, "device CA", rc);
			goto out;
		}
		res->ca_made = true;
		snprintf(res->why, sizeof res->why, "device CA missing, unusable or expiring");
	}

	/* The server certificate. */
	bool srv_ok = !res->ca_made && load_pair(c->dir, HUB_FILE, HUB_KEY, &srv, &srv_key);
	if (srv_ok) {
		uint32_t flags = 0;
		(void)mbedtls_x509_crt_verify(&srv, &ca, NULL, NULL, &flags, NULL, NULL);
		flags &= ~(uint32_t)(MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE);
		if (flags != 0) {
			srv_ok = false;
			snprintf(res->why, sizeof res->why,
			         "server certificate not issued by the CA");
		} else if (!names_match(&srv, &n)) {
			srv_ok = false;
			snprintf(res->why, sizeof res->why, "server certificate names changed");
		} else if (agent_certs_due(unix_of(&srv.valid_from), unix_of(&srv.valid_to), now)) {
			srv_ok = false;
			snprintf(res->why, sizeof res->why, "server certificate due for renewal");
		}
	} else if (res->why[0] == '\0') {
		snprintf(res->why, sizeof res->why, "server certificate missing or unusable");
	}
	if (srv_ok) {
		res->why[0] = '\0';
		res->server_not_after = unix_of(&srv.valid_to);
		int64_t from = unix_of(&srv.valid_from);
		res->server_renew_at = res->server_not_after - (res->server_not_after - from) / 3;
		goto out;
	}
	if (!have_rng) {
		if ((e = rng_init(&r, err, cap)) != PERCH_OK)
			goto out;
		have_rng = true;
	}
	mbedtls_pk_free(&srv_key);
	mbedtls_pk_init(&srv_key);
	if ((e = new_key(&srv_key, &r, err, cap)) != PERCH_OK)
		goto out;
	char issuer[512], subject[CN_MAX + 16];
	if (mbedtls_x509_dn_gets(issuer, sizeof issuer, &ca.subject) < 0) {
		e = fail(err, cap, PERCH_EINTERNAL, "device CA name", -1);
		goto out;
	}
	snprintf(subject, sizeof subject, "CN=%s", n.cn);
	int64_t from = now - AGENT_CERT_BACKDATE_S, to = now + srv_life;
	int rc = make_cert(&srv_key, subject, &ca_key, issuer, from, to, &n, &r, pem, sizeof pem);
	if (rc != 0) {
		e = fail(err, cap, PERCH_EINTERNAL, "server certificate", rc);
		goto out;
	}
	if ((e = write_pair(c->dir, HUB_KEY, &srv_key, HUB_FILE, pem, err, cap)) != PERCH_OK)
		goto out;
	res->server_made = true;
	res->server_not_after = to;
	res->server_renew_at = to - (to - from) / 3;
out:
	if (have_rng)
		rng_free(&r);
	mbedtls_x509_crt_free(&ca);
	mbedtls_x509_crt_free(&srv);
	mbedtls_pk_free(&ca_key);
	mbedtls_pk_free(&srv_key);
	return e;
}
