/*
 * upstream_tls.c — the TLS client of the upstream link's mqtts:// transport,
 * with mbedTLS over a non-blocking socket that the hub's lws loop watches
 * (adopted as a raw descriptor). libwebsockets 4.1's own raw-socket client
 * cannot do TLS (it starts the handshake before the socket exists), so this
 * file does TCP connect, the handshake, certificate verification and
 * record I/O itself; wss:// stays with lws's WebSocket client.
 *
 * Verification is always on: the parent's chain must verify against
 * hub.upstream.ca (or the system's CAs), and its certificate must name the
 * URL's host — a DNS name through mbedTLS, an IP address by an iPAddress
 * subjectAltName checked here (mbedTLS 2.28 compares DNS names only).
 * The address to connect to comes from the caller (resolve.c looks a host
 * name up off the loop thread); the checks are always against the URL's
 * host, never the address it resolved to. Everything runs on the loop thread.
 */
#include "upstream_tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "perch/alloc.h"

#define SYSTEM_CAS "/etc/ssl/certs/ca-certificates.crt"

struct hub_up_tls {
	mbedtls_ssl_config conf;
	mbedtls_x509_crt ca;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	mbedtls_ssl_context ssl;
	bool ssl_live; /* ssl is set up for a connection */
	int fd;        /* the connection's socket, -1 when none */
	char host[256];
	bool ip;          /* host is an IP literal */
	uint8_t addr[16]; /* its bytes */
	size_t addr_len;
};

static void errtext(int rc, char *why, size_t cap)
{
	char buf[160];
	mbedtls_strerror(rc, buf, sizeof buf);
	snprintf(why, cap, "%s", buf);
}

perch_err hub_up_tls_new(const char *ca_file, const char *host, hub_up_tls **out, char *why,
                         size_t cap)
{
	hub_up_tls *t = perch_calloc(1, sizeof *t);
	if (t == NULL)
		return PERCH_ENOMEM;
	t->fd = -1;
	snprintf(t->host, sizeof t->host, "%s", host);
	if (inet_pton(AF_INET, host, t->addr) == 1) {
		t->ip = true;
		t->addr_len = 4;
	} else if (inet_pton(AF_INET6, host, t->addr) == 1) {
		t->ip = true;
		t->addr_len = 16;
	}
	mbedtls_ssl_config_init(&t->conf);
	mbedtls_x509_crt_init(&t->ca);
	mbedtls_entropy_init(&t->entropy);
	mbedtls_ctr_drbg_init(&t->drbg);
	mbedtls_ssl_init(&t->ssl);
	const char *path = ca_file != NULL ? ca_file : SYSTEM_CAS;
	int rc = mbedtls_x509_crt_parse_file(&t->ca, path);
	if (rc < 0) {
		char e[160];
		errtext(rc, e, sizeof e);
		snprintf(why, cap, "cannot read the CA file %s: %s", path, e);
		hub_up_tls_free(t);
		return PERCH_EINVAL;
	}
	static const unsigned char pers[] = "perch-hub upstream";
	if ((rc = mbedtls_ctr_drbg_seed(&t->drbg, mbedtls_entropy_func, &t->entropy, pers,
	                                sizeof pers - 1)) != 0 ||
	    (rc = mbedtls_ssl_config_defaults(&t->conf, MBEDTLS_SSL_IS_CLIENT,
	                                      MBEDTLS_SSL_TRANSPORT_STREAM,
	                                      MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
		errtext(rc, why, cap);
		hub_up_tls_free(t);
		return PERCH_EIO;
	}
	mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
	mbedtls_ssl_conf_rng(&t->conf, mbedtls_ctr_drbg_random, &t->drbg);
	mbedtls_ssl_conf_min_version(&t->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
	                             MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
	*out = t;
	return PERCH_OK;
}

void hub_up_tls_free(hub_up_tls *t)
{
	if (t == NULL)
		return;
	hub_up_tls_reset(t);
	mbedtls_ssl_free(&t->ssl);
	mbedtls_ssl_config_free(&t->conf);
	mbedtls_x509_crt_free(&t->ca);
	mbedtls_ctr_drbg_free(&t->drbg);
	mbedtls_entropy_free(&t->entropy);
	perch_free(t);
}

void hub_up_tls_reset(hub_up_tls *t)
{
	if (t->ssl_live) {
		mbedtls_ssl_free(&t->ssl);
		mbedtls_ssl_init(&t->ssl);
		t->ssl_live = false;
	}
	t->fd = -1; /* lws closes the descriptor it adopted */
}

static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	int fd = *(int *)ctx;
	ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
	if (n >= 0)
		return (int)n;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_WRITE;
	return MBEDTLS_ERR_NET_SEND_FAILED;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	int fd = *(int *)ctx;
	ssize_t n = recv(fd, buf, len, 0);
	if (n >= 0)
		return (int)n; /* 0: the peer closed */
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return MBEDTLS_ERR_SSL_WANT_READ;
	return MBEDTLS_ERR_NET_RECV_FAILED;
}

int hub_up_tls_connect(hub_up_tls *t, const struct sockaddr *to, socklen_t to_len, char *why,
                       size_t cap)
{
	int fd = socket(to->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || (connect(fd, to, to_len) != 0 && errno != EINPROGRESS)) {
		snprintf(why, cap, "%s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	hub_up_tls_reset(t);
	t->fd = fd;
	return fd;
}

int hub_up_tls_connected(hub_up_tls *t, char *why, size_t cap)
{
	int err = 0;
	socklen_t len = sizeof err;
	if (getsockopt(t->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
		err = errno;
	if (err != 0) {
		snprintf(why, cap, "%s", strerror(err));
		return -1;
	}
	int rc = mbedtls_ssl_setup(&t->ssl, &t->conf);
	if (rc == 0)
		rc = mbedtls_ssl_set_hostname(&t->ssl, t->ip ? NULL : t->host);
	if (rc != 0) {
		errtext(rc, why, cap);
		return -1;
	}
	t->ssl_live = true;
	mbedtls_ssl_set_bio(&t->ssl, &t->fd, bio_send, bio_recv, NULL);
	return 0;
}

/* ip_named: does the peer certificate carry an iPAddress SAN equal to t's? */
static bool ip_named(hub_up_tls *t)
{
	const mbedtls_x509_crt *crt = mbedtls_ssl_get_peer_cert(&t->ssl);
	if (crt == NULL)
		return false;
	for (const mbedtls_x509_sequence *s = &crt->subject_alt_names; s != NULL && s->buf.p;
	     s = s->next)
		if (s->buf.tag == (MBEDTLS_ASN1_CONTEXT_SPECIFIC | 7) &&
		    s->buf.len == t->addr_len && memcmp(s->buf.p, t->addr, t->addr_len) == 0)
			return true;
	return false;
}

hub_up_tls_io hub_up_tls_handshake(hub_up_tls *t, char *why, size_t cap)
{
	int rc = mbedtls_ssl_handshake(&t->ssl);
	if (rc == MBEDTLS_ERR_SSL_WANT_READ)
		return HUB_UP_TLS_WANT_READ;
	if (rc == MBEDTLS_ERR_SSL_WANT_WRITE)
		return HUB_UP_TLS_WANT_WRITE;
	if (rc != 0) {
		uint32_t flags = mbedtls_ssl_get_verify_result(&t->ssl);
		if (rc == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED && flags != 0) {
			char info[200];
			int n = mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
			while (n > 0 && (info[n - 1] == '\n' || info[n - 1] == ' '))
				info[--n] = '\0';
			snprintf(why, cap, "TLS: the parent's certificate does not verify: %s",
			         n > 0 ? info : "verification failed");
		} else {
			char e[160];
			errtext(rc, e, sizeof e);
			snprintf(why, cap, "TLS handshake failed: %s", e);
		}
		bool io = rc == MBEDTLS_ERR_NET_SEND_FAILED || rc == MBEDTLS_ERR_NET_RECV_FAILED ||
		          rc == MBEDTLS_ERR_NET_CONN_RESET || rc == MBEDTLS_ERR_SSL_CONN_EOF;
		return io ? HUB_UP_TLS_ERROR : HUB_UP_TLS_REFUSED;
	}
	if (t->ip && !ip_named(t)) {
		snprintf(why, cap,
		         "TLS: the parent's certificate does not name %s (no such IP address "
		         "subjectAltName)",
		         t->host);
		return HUB_UP_TLS_REFUSED;
	}
	return HUB_UP_TLS_OK;
}

long hub_up_tls_read(hub_up_tls *t, uint8_t *buf, size_t cap)
{
	int rc = mbedtls_ssl_read(&t->ssl, buf, cap);
	if (rc > 0)
		return rc;
	if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
		return HUB_UP_TLS_AGAIN;
	return HUB_UP_TLS_CLOSED; /* 0, close_notify, or an error */
}

long hub_up_tls_write(hub_up_tls *t, const uint8_t *buf, size_t len)
{
	int rc = mbedtls_ssl_write(&t->ssl, buf, len);
	if (rc >= 0)
		return rc;
	if (rc == MBEDTLS_ERR_SSL_WANT_READ || rc == MBEDTLS_ERR_SSL_WANT_WRITE)
		return HUB_UP_TLS_AGAIN;
	return HUB_UP_TLS_CLOSED;
}

size_t hub_up_tls_pending(hub_up_tls *t)
{
	return t->ssl_live ? mbedtls_ssl_get_bytes_avail(&t->ssl) : 0;
}
