/*
 * cli_http.c — one blocking HTTP/1.1 exchange of the `perch` command line
 * with perch-hub: a TCP connection (non-blocking underneath, so that every
 * wait is a poll with the time left), TLS over it with mbedTLS for wss://
 * listeners (the hub's certificate verified against the CA file and the
 * expected name; nothing is sent on a connection that fails that), the
 * request written by perch_http_request, the answer read by the streaming
 * parser of perch/http_wire.h (Content-Length, chunked or until close),
 * its body kept up to CLI_HTTP_ANSWER_MAX bytes. One request a connection:
 * "Connection: close" is sent and the connection closed afterwards.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/ssl.h>
#include <mbedtls/x509_crt.h>

#include "cli.h"
#include "perch/alloc.h"
#include "perch/http_wire.h"

typedef struct conn {
	int fd;
	long long deadline; /* monotonic ms: the current phase must end by then */
	bool timed_out;     /* a wait ran out of time */
	bool tls;
	mbedtls_ssl_context ssl;
	mbedtls_ssl_config conf;
	mbedtls_x509_crt ca;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
} conn;

static long long now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* wait_fd polls fd for events until c->deadline: 1 ready, 0 out of time,
 * -1 poll failed. */
static int wait_fd(conn *c, short events)
{
	for (;;) {
		long long left = c->deadline - now_ms();
		if (left <= 0) {
			c->timed_out = true;
			return 0;
		}
		struct pollfd p = {.fd = c->fd, .events = events};
		int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

/* raw_send / raw_recv: bytes on the socket within the deadline; -1 with
 * errno on failure (ETIMEDOUT when out of time), 0 from recv at EOF. */
static ssize_t raw_send(conn *c, const unsigned char *buf, size_t len)
{
	for (;;) {
		ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		int w = wait_fd(c, POLLOUT);
		if (w <= 0) {
			errno = w == 0 ? ETIMEDOUT : errno;
			return -1;
		}
	}
}

static ssize_t raw_recv(conn *c, unsigned char *buf, size_t len)
{
	for (;;) {
		ssize_t n = recv(c->fd, buf, len, 0);
		if (n >= 0)
			return n;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -1;
		int w = wait_fd(c, POLLIN);
		if (w <= 0) {
			errno = w == 0 ? ETIMEDOUT : errno;
			return -1;
		}
	}
}

/* mbedTLS's bio callbacks over raw_send / raw_recv. */
static int bio_send(void *ctx, const unsigned char *buf, size_t len)
{
	ssize_t n = raw_send(ctx, buf, len);
	if (n < 0)
		return errno == ETIMEDOUT ? MBEDTLS_ERR_SSL_TIMEOUT : MBEDTLS_ERR_NET_SEND_FAILED;
	return (int)n;
}

static int bio_recv(void *ctx, unsigned char *buf, size_t len)
{
	ssize_t n = raw_recv(ctx, buf, len);
	if (n < 0)
		return errno == ETIMEDOUT ? MBEDTLS_ERR_SSL_TIMEOUT : MBEDTLS_ERR_NET_RECV_FAILED;
	return (int)n;
}

/* conn_connect opens a TCP connection to the hub within connect_ms. */
static perch_err conn_connect(conn *c, const cli_hub *hub, long connect_ms)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
	int gai = getaddrinfo(hub->host, hub->port, &hints, &ai);
	if (gai != 0) {
		fprintf(stderr, "perch: cannot resolve the hub's address %s: %s\n", hub->host,
		        gai_strerror(gai));
		return PERCH_ENOENT;
	}
	perch_err err = PERCH_ECLOSED;
	int last = 0;
	long long total = c->deadline;
	long long by = now_ms() + connect_ms;
	c->deadline = by < total ? by : total;
	for (struct addrinfo *a = ai; a != NULL && !c->timed_out; a = a->ai_next) {
		c->fd = socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		               a->ai_protocol);
		if (c->fd < 0) {
			last = errno;
			continue;
		}
		if (connect(c->fd, a->ai_addr, a->ai_addrlen) == 0) {
			err = PERCH_OK;
			break;
		}
		if (errno == EINPROGRESS) {
			int w = wait_fd(c, POLLOUT);
			int soerr = 0;
			socklen_t sl = sizeof soerr;
			if (w > 0 && getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 &&
			    soerr == 0) {
				err = PERCH_OK;
				break;
			}
			last = w == 0 ? ETIMEDOUT : soerr != 0 ? soerr : errno;
		} else {
			last = errno;
		}
		close(c->fd);
		c->fd = -1;
	}
	freeaddrinfo(ai);
	c->deadline = total;
	if (err != PERCH_OK) {
		fprintf(stderr, "perch: cannot connect to perch-hub at %s port %s: %s\n", hub->host,
		        hub->port, c->timed_out ? "timed out" : strerror(last));
		err = c->timed_out ? PERCH_ETIMEDOUT : PERCH_ECLOSED;
	}
	return err;
}

static void tls_error(const cli_hub *hub, const char *what, int ret)
{
	char buf[160];
	mbedtls_strerror(ret, buf, sizeof buf);
	fprintf(stderr, "perch: TLS with perch-hub at %s port %s: %s: %s\n", hub->host, hub->port,
	        what, buf);
}

/* conn_tls runs the TLS handshake and verifies the hub's certificate. */
static perch_err conn_tls(conn *c, const cli_hub *hub)
{
	c->tls = true;
	mbedtls_ssl_init(&c->ssl);
	mbedtls_ssl_config_init(&c->conf);
	mbedtls_x509_crt_init(&c->ca);
	mbedtls_entropy_init(&c->entropy);
	mbedtls_ctr_drbg_init(&c->drbg);
	int ret = mbedtls_x509_crt_parse_file(&c->ca, hub->ca);
	if (ret != 0) {
		char buf[160];
		mbedtls_strerror(ret, buf, sizeof buf);
		fprintf(stderr,
		        "perch: cannot read the CA file %s (to verify perch-hub's wss:// "
		        "certificate): %s\n",
		        hub->ca, buf);
		return PERCH_ENOENT;
	}
	static const unsigned char pers[] = "perch-cli";
	if ((ret = mbedtls_ctr_drbg_seed(&c->drbg, mbedtls_entropy_func, &c->entropy, pers,
	                                 sizeof pers - 1)) != 0 ||
	    (ret = mbedtls_ssl_config_defaults(&c->conf, MBEDTLS_SSL_IS_CLIENT,
	                                       MBEDTLS_SSL_TRANSPORT_STREAM,
	                                       MBEDTLS_SSL_PRESET_DEFAULT)) != 0) {
		tls_error(hub, "setup", ret);
		return PERCH_EIO;
	}
	mbedtls_ssl_conf_min_version(&c->conf, MBEDTLS_SSL_MAJOR_VERSION_3,
	                             MBEDTLS_SSL_MINOR_VERSION_3); /* TLS 1.2 */
	mbedtls_ssl_conf_authmode(&c->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
	mbedtls_ssl_conf_ca_chain(&c->conf, &c->ca, NULL);
	mbedtls_ssl_conf_rng(&c->conf, mbedtls_ctr_drbg_random, &c->drbg);
	if ((ret = mbedtls_ssl_setup(&c->ssl, &c->conf)) != 0 ||
	    (ret = mbedtls_ssl_set_hostname(&c->ssl, hub->tls_name)) != 0) {
		tls_error(hub, "setup", ret);
		return PERCH_EIO;
	}
	mbedtls_ssl_set_bio(&c->ssl, c, bio_send, bio_recv, NULL);
	ret = mbedtls_ssl_handshake(&c->ssl);
	if (ret == 0)
		return PERCH_OK;
	uint32_t flags = mbedtls_ssl_get_verify_result(&c->ssl);
	if (ret == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED || (flags != 0 && flags != (uint32_t)-1)) {
		char info[512];
		mbedtls_x509_crt_verify_info(info, sizeof info, "", flags);
		info[strcspn(info, "\n")] = '\0';
		fprintf(stderr,
		        "perch: perch-hub's certificate at %s port %s is not trusted (CA file %s, "
		        "name %s): %s\n",
		        hub->host, hub->port, hub->ca, hub->tls_name, info);
		return PERCH_EPERM;
	}
	if (ret == MBEDTLS_ERR_SSL_TIMEOUT) {
		fprintf(stderr, "perch: TLS with perch-hub at %s port %s: timed out\n", hub->host,
		        hub->port);
		return PERCH_ETIMEDOUT;
	}
	tls_error(hub, "handshake", ret);
	return PERCH_EPROTO;
}

static void conn_close(conn *c)
{
	if (c->tls) {
		mbedtls_ssl_free(&c->ssl);
		mbedtls_ssl_config_free(&c->conf);
		mbedtls_x509_crt_free(&c->ca);
		mbedtls_ctr_drbg_free(&c->drbg);
		mbedtls_entropy_free(&c->entropy);
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* conn_write sends all of buf; -1 with errno on failure. */
static int conn_write(conn *c, const char *buf, size_t len)
{
	size_t off = 0;
	while (off < len) {
		if (c->tls) {
			int n = mbedtls_ssl_write(&c->ssl, (const unsigned char *)buf + off,
			                          len - off);
			if (n == MBEDTLS_ERR_SSL_WANT_WRITE || n == MBEDTLS_ERR_SSL_WANT_READ)
				continue;
			if (n < 0) {
				errno = n == MBEDTLS_ERR_SSL_TIMEOUT ? ETIMEDOUT : EIO;
				return -1;
			}
			off += (size_t)n;
		} else {
			ssize_t n = raw_send(c, (const unsigned char *)buf + off, len - off);
			if (n < 0)
				return -1;
			off += (size_t)n;
		}
	}
	return 0;
}

/* conn_read: > 0 bytes, 0 at the peer's close, -1 with errno. */
static ssize_t conn_read(conn *c, char *buf, size_t cap)
{
	if (!c->tls)
		return raw_recv(c, (unsigned char *)buf, cap);
	for (;;) {
		int n = mbedtls_ssl_read(&c->ssl, (unsigned char *)buf, cap);
		if (n >= 0)
			return n;
		if (n == MBEDTLS_ERR_SSL_WANT_READ || n == MBEDTLS_ERR_SSL_WANT_WRITE)
			continue;
		if (n == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || n == MBEDTLS_ERR_NET_CONN_RESET)
			return 0;
		errno = n == MBEDTLS_ERR_SSL_TIMEOUT ? ETIMEDOUT : EIO;
		return -1;
	}
}

static perch_err on_body(void *ud, const char *data, size_t n)
{
	cli_http_answer *a = ud;
	if (a->len + n > CLI_HTTP_ANSWER_MAX)
		return PERCH_ETOOBIG;
	char *b = perch_realloc(a->body, a->len + n + 1);
	if (b == NULL)
		return PERCH_ENOMEM;
	memcpy(b + a->len, data, n);
	a->len += n;
	b[a->len] = '\0';
	a->body = b;
	return PERCH_OK;
}

void cli_http_answer_free(cli_http_answer *ans)
{
	perch_free(ans->body);
	*ans = (cli_http_answer){0};
}

perch_err cli_http_request(const cli_hub *hub, const char *method, const char *target,
                           const char *const *hdrs, size_t nh, const char *body, size_t len,
                           long connect_ms, long total_ms, cli_http_answer *ans)
{
	*ans = (cli_http_answer){0};
	conn c = {.fd = -1, .deadline = now_ms() + total_ms};
	char host[CLI_HOST_MAX + 8];
	snprintf(host, sizeof host, "%s", hub->tls ? hub->tls_name : hub->host);
	char *req = NULL;
	size_t req_len = 0;
	static perch_http_parser parser; /* 8 KiB line buffer: not on the stack */
	perch_err err =
	        perch_http_request(method, target, host, hdrs, nh, body, len, &req, &req_len);
	if (err != PERCH_OK) {
		fprintf(stderr, "perch: cannot make the request: %s\n", perch_strerror(err));
		return err;
	}
	err = conn_connect(&c, hub, connect_ms);
	if (err == PERCH_OK && hub->tls)
		err = conn_tls(&c, hub);
	if (err != PERCH_OK)
		goto out;
	if (conn_write(&c, req, req_len) != 0) {
		err = errno == ETIMEDOUT ? PERCH_ETIMEDOUT : PERCH_EIO;
		fprintf(stderr, "perch: sending to perch-hub at %s port %s: %s\n", hub->host,
		        hub->port, errno == ETIMEDOUT ? "timed out" : strerror(errno));
		goto out;
	}
	perch_http_parser_init(&parser);
	perch_http_sink sink = {.head = NULL, .body = on_body, .ud = ans};
	char buf[16384];
	while (parser.state != PERCH_HTTP_S_DONE) {
		ssize_t n = conn_read(&c, buf, sizeof buf);
		if (n < 0) {
			err = errno == ETIMEDOUT ? PERCH_ETIMEDOUT : PERCH_EIO;
			fprintf(stderr, "perch: no answer from perch-hub at %s port %s: %s\n",
			        hub->host, hub->port,
			        errno == ETIMEDOUT ? "timed out" : strerror(errno));
			goto out;
		}
		if (n == 0) {
			err = perch_http_parse_eof(&parser);
			if (err != PERCH_OK) {
				fprintf(stderr,
				        "perch: perch-hub at %s port %s closed the connection "
				        "before "
				        "its answer was complete (%s)\n",
				        hub->host, hub->port, parser.why != NULL ? parser.why : "");
				goto out;
			}
			break;
		}
		err = perch_http_parse(&parser, buf, (size_t)n, NULL, &sink);
		if (err != PERCH_OK) {
			fprintf(stderr, "perch: a bad answer from perch-hub at %s port %s: %s\n",
			        hub->host, hub->port,
			        err == PERCH_EPROTO && parser.why != NULL ? parser.why
			                                                  : perch_strerror(err));
			goto out;
		}
	}
	ans->status = parser.status;
out:
	if (c.tls && err == PERCH_OK)
		(void)mbedtls_ssl_close_notify(&c.ssl);
	conn_close(&c);
	perch_http_request_free(req, req_len);
	if (err != PERCH_OK)
		cli_http_answer_free(ans);
	return err;
}
