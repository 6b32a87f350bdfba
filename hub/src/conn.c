/*
 * conn.c — one client connection, independent of its transport: bytes in
 * through the streaming MQTT decoder to the broker, encoded packets out
 * through a send buffer written only from the writeable callback, and one
 * log line saying why the connection ended.
 *
 * The send buffer keeps LWS_PRE bytes of headroom before its first pending
 * byte, so a WebSocket frame header can be written in place: whatever was
 * already sent is overwritten. Several packets go out in one write (and, over
 * WebSocket, in one binary frame).
 */
#include <linux/sockios.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>

#include "hub.h"
#include "metrics.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define LOG_MOD         "hub.conn"
#define WRITE_CHUNK_MAX ((size_t)256 * 1024) /* bytes per lws_write */
#define TX_INITIAL      ((size_t)16 * 1024)

int64_t hub_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void set_timeout_s(hub_conn *c, int64_t ms)
{
	int secs = (int)((ms + 999) / 1000);
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, secs > 0 ? secs : 1);
}

/* peer_name writes "ip:port" ("[ip6]:port") of wsi's peer: the port tells
 * apart the log lines of clients on one host. Numeric only: a reverse DNS
 * lookup here (lws_get_peer_addresses) blocks the loop for seconds when no
 * resolver answers. */
static void peer_name(struct lws *wsi, char *out, size_t cap)
{
	struct sockaddr_storage sa = {0};
	socklen_t len = sizeof sa;
	char ip[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	int fd = lws_get_socket_fd(wsi);
	if (fd < 0 || getpeername(fd, (struct sockaddr *)&sa, &len) != 0) {
		snprintf(out, cap, "?");
		return;
	}
	if (sa.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&sa;
		inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
		port = ntohs(in->sin_port);
	} else if (sa.ss_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&sa;
		inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
		port = ntohs(in6->sin6_port);
	}
	const char *p = ip;
	if (strncmp(p, "::ffff:", 7) == 0 && strchr(p + 7, '.') != NULL)
		p += 7; /* an IPv4 peer on a dual-stack socket */
	if (strchr(p, ':') != NULL)
		snprintf(out, cap, "[%s]:%d", p, port);
	else
		snprintf(out, cap, "%s:%d", p, port);
}

int hub_conn_opened(hub *h, hub_conn *c, struct lws *wsi, bool ws)
{
	memset(c, 0, sizeof *c);
	c->wsi = wsi;
	c->hub = h;
	c->ws = ws;
	c->tls = lws_is_ssl(wsi) != 0;
	c->last_rx_ms = hub_now_ms();
	c->tx_progress_ms = c->last_rx_ms;
	peer_name(wsi, c->peer, sizeof c->peer);
	/* Small MQTT packets must not wait for Nagle's algorithm. */
	int one = 1;
	(void)setsockopt(lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	perch_mqtt_decoder_init(&c->dec, PERCH_MQTT_SERVER, (size_t)h->cfg.max_packet_size,
	                        (size_t)h->cfg.max_connect_size);
	if ((int64_t)h->nconns >= h->cfg.max_connections) {
		hub_metrics_protocol_error(h->metrics, "too_many_connections");
		PERCH_WARN(LOG_MOD, "refused %s: %zu connections is the limit (max_connections)",
		           c->peer, h->nconns);
		c->state = HUB_CONN_CLOSING;
		return -1;
	}
	h->nconns++;
	c->counted = true;
	hub_metrics_conn_opened(h->metrics);
	set_timeout_s(c, h->cfg.connect_timeout_ms);
	return 0;
}

size_t hub_conn_pending(const hub_conn *c)
{
	return c->tx_len - c->tx_head;
}

perch_err hub_conn_send(hub_conn *c, const void *a, size_t alen, const void *b, size_t blen,
                        bool force)
{
	size_t add = alen + blen;
	if (c->state == HUB_CONN_CLOSING && !force)
		return PERCH_ECLOSED;
	if (!force && hub_conn_pending(c) + add > c->hub->cfg.max_tx_bytes)
		return PERCH_ENOSPC;
	if (c->tx == NULL) {
		size_t cap = LWS_PRE + (add > TX_INITIAL ? add : TX_INITIAL);
		c->tx = perch_malloc(cap);
		if (c->tx == NULL)
			return PERCH_ENOMEM;
		c->tx_cap = cap;
		c->tx_head = c->tx_len = LWS_PRE;
	}
	if (c->tx_len + add > c->tx_cap) {
		/* Slide pending bytes back to the headroom first; grow if still short. */
		size_t pend = hub_conn_pending(c);
		if (c->tx_head > LWS_PRE) {
			memmove(c->tx + LWS_PRE, c->tx + c->tx_head, pend);
			c->tx_head = LWS_PRE;
			c->tx_len = LWS_PRE + pend;
		}
		if (c->tx_len + add > c->tx_cap) {
			size_t cap = c->tx_cap * 2;
			while (cap < c->tx_len + add)
				cap *= 2;
			uint8_t *nb = perch_realloc(c->tx, cap);
			if (nb == NULL)
				return PERCH_ENOMEM;
			c->tx = nb;
			c->tx_cap = cap;
		}
	}
	if (alen)
		memcpy(c->tx + c->tx_len, a, alen);
	if (blen)
		memcpy(c->tx + c->tx_len + alen, b, blen);
	c->tx_len += add;
	lws_callback_on_writable(c->wsi);
	return PERCH_OK;
}

perch_err hub_conn_send_packet(hub_conn *c, const perch_mqtt_packet *pkt)
{
	uint8_t small[256];
	size_t size;
	perch_err err = perch_mqtt_encoded_size(pkt, &size);
	if (err != PERCH_OK)
		return err;
	uint8_t *buf = size <= sizeof small ? small : perch_malloc(size);
	if (buf == NULL)
		return PERCH_ENOMEM;
	size_t len;
	err = perch_mqtt_encode(pkt, buf, size, &len);
	if (err == PERCH_OK)
		err = hub_conn_send(c, buf, len, NULL, 0, true);
	if (buf != small)
		perch_free(buf);
	return err;
}

void hub_conn_close_soon(hub_conn *c, const char *reason, const char *detail)
{
	if (c->close_reason == NULL) {
		c->close_reason = reason;
		snprintf(c->close_detail, sizeof c->close_detail, "%s", detail ? detail : "");
	}
	if (c->state != HUB_CONN_CLOSING) {
		c->state =
		        HUB_CONN_CLOSING; /* Input is ignored from now on; close once the queue is written
		 * (or in 5 s, for a peer that does not read). */
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 5);
		lws_callback_on_writable(c->wsi);
	}
}

void hub_conn_check_stalled(hub_conn *c, int64_t now)
{
	if (c->state != HUB_CONN_ACTIVE)
		return;
	/* Nothing waiting here or in the kernel at the last look, and nothing
	 * written since: still nothing there, no system call needed (most
	 * connections, most seconds). */
	if (hub_conn_pending(c) == 0 && c->tx_outq == 0 && !c->tx_wrote) {
		c->tx_progress_ms = now;
		return;
	}
	/* Bytes the kernel holds that the peer has not acknowledged yet: they
	 * go down only when the peer reads (a window of 0 stops them). A write
	 * since the last look means the kernel took bytes: the peer made room. */
	int outq = 0;
	int fd = lws_get_socket_fd(c->wsi);
	if (fd < 0 || ioctl(fd, SIOCOUTQ, &outq) != 0 || outq < 0)
		outq = 0;
	bool taken = (size_t)outq < c->tx_outq || c->tx_wrote;
	c->tx_outq = (size_t)outq;
	c->tx_wrote = false;
	if ((hub_conn_pending(c) == 0 && outq == 0) || taken) {
		c->tx_progress_ms = now;
		return;
	}
	if (now - c->tx_progress_ms < c->hub->cfg.send_timeout_ms)
		return;
	char detail[96];
	snprintf(detail, sizeof detail, "%zu bytes unsent, none taken for %lld s",
	         hub_conn_pending(c) + (size_t)outq, (long long)((now - c->tx_progress_ms) / 1000));
	hub_metrics_protocol_error(c->hub->metrics, "peer_not_reading");
	hub_conn_close_soon(c, "peer does not read what it is sent", detail);
}

/* protocol_error closes c for a violation found by the decoder or broker. */
static int protocol_error(hub_conn *c, perch_err err)
{
	perch_mqtt_reason r = perch_mqtt_decoder_reason(&c->dec);
	const char *why = err == PERCH_ENOMEM ? "out of memory" : perch_mqtt_reason_str(r);
	hub_metrics_protocol_error(c->hub->metrics, err == PERCH_ENOMEM
	                                                    ? "out_of_memory"
	                                                    : hub_metrics_reason_label(r));
	if (r == PERCH_MQTT_R_CONNECT_PROTOCOL_LEVEL) {
		/* MQTT-3.1.2-2: answer CONNACK 0x01 before closing. */
		perch_mqtt_packet ack = {
		        .type = PERCH_MQTT_CONNACK,
		        .connack = {.return_code = PERCH_MQTT_CONNACK_BAD_PROTOCOL}};
		if (hub_conn_send_packet(c, &ack) == PERCH_OK) {
			hub_conn_close_soon(c, "protocol error", why);
			return 0;
		}
	}
	c->close_reason = "protocol error";
	snprintf(c->close_detail, sizeof c->close_detail, "%s", why);
	return -1;
}

int hub_conn_rx(hub_conn *c, const uint8_t *in, size_t len)
{
	if (c->state == HUB_CONN_CLOSING)
		return 0; /* draining what we send; ignore what comes */
	c->last_rx_ms = hub_now_ms();
	hub_metrics_rx_bytes(c->hub->metrics, len);
	while (len > 0) {
		perch_mqtt_packet pkt;
		size_t used = 0;
		perch_err err = perch_mqtt_decode(&c->dec, in, len, &used, &pkt);
		in += used;
		len -= used;
		if (err == PERCH_EAGAIN)
			break;
		if (err != PERCH_OK)
			return protocol_error(c, err);
		if (hub_broker_packet(c, &pkt) != 0)
			return -1;
		if (c->state == HUB_CONN_CLOSING)
			return 0;
	}
	if (c->state == HUB_CONN_ACTIVE && c->keepalive > 0)
		set_timeout_s(c, (int64_t)c->keepalive * 1500);
	if (c->state == HUB_CONN_ACTIVE)
		hub_broker_rx_done(c);
	/* Replies (PUBACK, PINGRESP, ...) are never refused, so a peer that
	 * sends without reading is not read either until it catches up; if it
	 * never does, it is closed. */
	if (!c->tx_full && hub_conn_pending(c) > c->hub->cfg.max_tx_bytes) {
		c->tx_full = true;
		lws_rx_flow_control(c->wsi, 0);
		set_timeout_s(c, c->hub->cfg.send_timeout_ms);
	}
	return 0;
}

int hub_conn_writeable(hub_conn *c)
{
	size_t pend = hub_conn_pending(c);
	if (pend > 0) {
		size_t n = pend > WRITE_CHUNK_MAX ? WRITE_CHUNK_MAX : pend;
		int w = lws_write(c->wsi, c->tx + c->tx_head, n,
		                  c->ws ? LWS_WRITE_BINARY : LWS_WRITE_RAW);
		if (w < 0) {
			if (c->close_reason == NULL)
				c->close_reason = "write failed";
			return -1;
		}
		hub_metrics_tx_bytes(c->hub->metrics, n);
		c->tx_wrote = true; /* progress, for hub_conn_check_stalled */
		c->tx_head += n;
		if (c->tx_head == c->tx_len)
			c->tx_head = c->tx_len = LWS_PRE;
	}
	if (c->tx_full && hub_conn_pending(c) <= c->hub->cfg.max_tx_bytes / 2 &&
	    c->state == HUB_CONN_ACTIVE) {
		c->tx_full = false;
		if (!c->paused)
			lws_rx_flow_control(c->wsi, 1);
		lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
		                c->keepalive ? (c->keepalive * 3 + 1) / 2 : 0);
	}
	if (hub_conn_pending(c) > 0) {
		lws_callback_on_writable(c->wsi);
		return 0;
	}
	if (c->state == HUB_CONN_CLOSING)
		return -1;
	if (c->session != NULL)
		hub_broker_drained(c);
	return 0;
}

void hub_conn_closed(hub_conn *c)
{
	hub *h = c->hub;
	if (h == NULL)
		return; /* refused before it was set up */
	const char *reason = c->close_reason;
	bool abnormal = true;
	if (reason == NULL) {
		int64_t idle = hub_now_ms() - c->last_rx_ms;
		if (c->tx_full)
			reason = "peer does not read what it is sent (send buffer full)";
		else if (c->state == HUB_CONN_NEW && idle >= h->cfg.connect_timeout_ms)
			reason = "no CONNECT in time";
		else if (c->keepalive > 0 && idle >= (int64_t)c->keepalive * 1500)
			reason = "keepalive timeout";
		else
			reason = "connection lost";
	} else if (strcmp(reason, "client disconnected") == 0 ||
	           strcmp(reason, "session taken over") == 0) {
		abnormal = strcmp(reason, "session taken over") == 0;
	}
	hub_broker_forget(c);
	if (c->session != NULL)
		hub_broker_disconnected(c, abnormal);
	PERCH_INFO(LOG_MOD, "closed %s%s%s%s: %s%s%s", c->peer, c->client_id[0] ? " (" : "",
	           c->client_id, c->client_id[0] ? ")" : "", reason, c->close_detail[0] ? ": " : "",
	           c->close_detail);
	perch_mqtt_decoder_fini(&c->dec);
	perch_free(c->tx);
	c->tx = NULL;
	if (c->counted && h->nconns > 0) {
		h->nconns--;
		hub_metrics_conn_closed(h->metrics);
	}
	c->hub = NULL;
}
