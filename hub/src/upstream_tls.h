/*
 * upstream_tls.h — the upstream link's own TLS client for mqtts:// (mbedTLS
 * over a non-blocking socket; see upstream_tls.c for why not lws's). The
 * caller (upstream.c) owns the loop: it hands the socket to lws as a raw
 * descriptor and calls these from the readable and writeable callbacks.
 * Loop thread only.
 */
#ifndef HUB_UPSTREAM_TLS_H
#define HUB_UPSTREAM_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "perch/err.h"

typedef struct hub_up_tls hub_up_tls;

typedef enum hub_up_tls_io {
	HUB_UP_TLS_OK = 0,
	HUB_UP_TLS_WANT_READ,
	HUB_UP_TLS_WANT_WRITE,
	HUB_UP_TLS_ERROR,   /* I/O: the connection failed or was cut */
	HUB_UP_TLS_REFUSED, /* the parent answered, and not as it must: its certificate
	                       does not verify or name the host, an alert, bad records */
} hub_up_tls_io;

#define HUB_UP_TLS_AGAIN  (-1L) /* read/write: try again when the socket is ready */
#define HUB_UP_TLS_CLOSED (-2L) /* read/write: the connection is over */

/* hub_up_tls_new reads the CA file (NULL: the system's CAs) and prepares a
 * client for host (a DNS name or an IP literal). On error why (cap bytes)
 * says what: PERCH_EINVAL (unreadable CA), PERCH_EIO, PERCH_ENOMEM. */
PERCH_MUST_USE perch_err hub_up_tls_new(const char *ca_file, const char *host, hub_up_tls **out,
                                        char *why, size_t cap);
void hub_up_tls_free(hub_up_tls *t);
/* hub_up_tls_reset forgets the current connection (its socket is lws's). */
void hub_up_tls_reset(hub_up_tls *t);
/* hub_up_tls_connect starts a non-blocking TCP connect to the address to
 * (to_len bytes, the port included: the host's, looked up by the caller);
 * the certificate is still checked against the host given to hub_up_tls_new.
 * Returns the socket (the caller hands it to lws, which closes it) or -1
 * with why set. */
int hub_up_tls_connect(hub_up_tls *t, const struct sockaddr *to, socklen_t to_len, char *why,
                       size_t cap);
/* hub_up_tls_connected: the socket became writeable; 0 when the TCP
 * connection is up (TLS set up), -1 with why otherwise. */
int hub_up_tls_connected(hub_up_tls *t, char *why, size_t cap);
/* hub_up_tls_handshake advances the handshake; on HUB_UP_TLS_ERROR (I/O)
 * and HUB_UP_TLS_REFUSED (certificate verification, host name, protocol)
 * why names the reason. */
hub_up_tls_io hub_up_tls_handshake(hub_up_tls *t, char *why, size_t cap);
/* Bytes read or written (> 0, or >= 0 for write), HUB_UP_TLS_AGAIN or
 * HUB_UP_TLS_CLOSED. */
long hub_up_tls_read(hub_up_tls *t, uint8_t *buf, size_t cap);
long hub_up_tls_write(hub_up_tls *t, const uint8_t *buf, size_t len);
/* Decrypted bytes buffered inside TLS, waiting to be read. */
size_t hub_up_tls_pending(hub_up_tls *t);

#endif /* HUB_UPSTREAM_TLS_H */
