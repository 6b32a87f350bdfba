/*
 * mqtt_encode.c — the MQTT 3.1.1 encoder: sizes first, then bytes into the
 * caller's buffer, with no allocation.
 *
 * body_size both measures a packet and checks that it can be encoded; the
 * writers then trust that check. PUBLISH has a header-only writer so that a
 * broker can fan one payload out behind per-subscriber headers.
 */
#include "perch/mqtt.h"

#include <string.h>

#define FIELD_MAX 65535u

/* A cursor over a buffer already known to be large enough. */
struct writer {
	uint8_t *p;
};

static void put_u8(struct writer *w, unsigned v)
{
	*w->p++ = (uint8_t)v;
}

static void put_u16(struct writer *w, unsigned v)
{
	w->p[0] = (uint8_t)(v >> 8);
	w->p[1] = (uint8_t)v;
	w->p += 2;
}

static void put_bytes(struct writer *w, const void *s, size_t n)
{
	if (n > 0)
		memcpy(w->p, s, n);
	w->p += n;
}

static void put_field(struct writer *w, perch_slice s)
{
	put_u16(w, (unsigned)s.len);
	put_bytes(w, s.ptr, s.len);
}

static void put_length(struct writer *w, size_t rem)
{
	do {
		unsigned b = (unsigned)(rem & 0x7Fu);
		rem >>= 7;
		put_u8(w, rem ? b | 0x80u : b);
	} while (rem > 0);
}

static size_t length_size(size_t rem)
{
	return rem < 128u ? 1 : rem < 16384u ? 2 : rem < 2097152u ? 3 : 4;
}

static bool field_ok(perch_slice s)
{
	return s.len <= FIELD_MAX && (s.len == 0 || s.ptr != NULL);
}

static perch_err connect_size(const perch_mqtt_connect *c, uint64_t *rem)
{
	uint64_t n = 6 + 1 + 1 + 2 + 2 + (uint64_t)c->client_id.len;
	if (!field_ok(c->client_id) || (c->has_password && !c->has_username))
		return PERCH_EINVAL;
	if (c->has_will) {
		if (c->will_qos > 2 || !field_ok(c->will_topic) || !field_ok(c->will_payload))
			return PERCH_EINVAL;
		n += 4 + (uint64_t)c->will_topic.len + c->will_payload.len;
	}
	if (c->has_username) {
		if (!field_ok(c->username))
			return PERCH_EINVAL;
		n += 2 + (uint64_t)c->username.len;
	}
	if (c->has_password) {
		if (!field_ok(c->password))
			return PERCH_EINVAL;
		n += 2 + (uint64_t)c->password.len;
	}
	*rem = n;
	return PERCH_OK;
}

/* publish_head_size measures a PUBLISH's variable header (topic and id). */
static perch_err publish_head_size(const perch_mqtt_publish *p, uint64_t *head)
{
	if (p->qos > 2 || !field_ok(p->topic) || (p->payload.len > 0 && p->payload.ptr == NULL))
		return PERCH_EINVAL;
	if (p->qos > 0 ? p->packet_id == 0 : p->dup)
		return PERCH_EINVAL;
	*head = 2 + (uint64_t)p->topic.len + (p->qos > 0 ? 2u : 0u);
	return PERCH_OK;
}

static perch_err subscribe_size(const perch_mqtt_subscribe *s, bool with_qos, uint64_t *rem)
{
	uint64_t n = 2;
	if (s->packet_id == 0)
		return PERCH_EINVAL;
	if (s->entries == NULL) {
		if (s->raw.len == 0 || s->raw.ptr == NULL)
			return PERCH_EINVAL;
		*rem = n + s->raw.len;
		return PERCH_OK;
	}
	if (s->count == 0)
		return PERCH_EINVAL;
	for (size_t i = 0; i < s->count; i++) {
		const perch_mqtt_filter *f = &s->entries[i];
		if (!field_ok(f->filter) || (with_qos && f->qos > 2))
			return PERCH_EINVAL;
		n += 2 + (uint64_t)f->filter.len + (with_qos ? 1u : 0u);
		if (n > PERCH_MQTT_MAX_REMAINING)
			return PERCH_ETOOBIG;
	}
	*rem = n;
	return PERCH_OK;
}

static bool ack_type(perch_mqtt_type t)
{
	return t == PERCH_MQTT_PUBACK || t == PERCH_MQTT_PUBREC || t == PERCH_MQTT_PUBREL ||
	       t == PERCH_MQTT_PUBCOMP || t == PERCH_MQTT_UNSUBACK;
}

/* body_size checks pkt and measures its remaining length. */
static perch_err body_size(const perch_mqtt_packet *pkt, size_t *rem)
{
	uint64_t n = 0;
	perch_err err = PERCH_OK;
	switch (pkt->type) {
	case PERCH_MQTT_CONNECT: err = connect_size(&pkt->connect, &n); break;
	case PERCH_MQTT_CONNACK:
		if (pkt->connack.return_code > 5 ||
		    (pkt->connack.session_present && pkt->connack.return_code != 0))
			return PERCH_EINVAL;
		n = 2;
		break;
	case PERCH_MQTT_PUBLISH:
		err = publish_head_size(&pkt->publish, &n);
		n += pkt->publish.payload.len;
		break;
	case PERCH_MQTT_PUBACK:
	case PERCH_MQTT_PUBREC:
	case PERCH_MQTT_PUBREL:
	case PERCH_MQTT_PUBCOMP:
	case PERCH_MQTT_UNSUBACK:
		if (pkt->ack.packet_id == 0)
			return PERCH_EINVAL;
		n = 2;
		break;
	case PERCH_MQTT_SUBSCRIBE: err = subscribe_size(&pkt->subscribe, true, &n); break;
	case PERCH_MQTT_UNSUBSCRIBE: err = subscribe_size(&pkt->subscribe, false, &n); break;
	case PERCH_MQTT_SUBACK: {
		const perch_mqtt_suback *s = &pkt->suback;
		if (s->packet_id == 0 || s->count == 0 || s->codes == NULL)
			return PERCH_EINVAL;
		for (size_t i = 0; i < s->count; i++)
			if (s->codes[i] > 2 && s->codes[i] != PERCH_MQTT_SUBACK_FAILURE)
				return PERCH_EINVAL;
		n = 2 + (uint64_t)s->count;
		break;
	}
	case PERCH_MQTT_PINGREQ:
	case PERCH_MQTT_PINGRESP:
	case PERCH_MQTT_DISCONNECT: n = 0; break;
	default: return PERCH_EINVAL;
	}
	if (err != PERCH_OK)
		return err;
	if (n > PERCH_MQTT_MAX_REMAINING)
		return PERCH_ETOOBIG;
	*rem = (size_t)n;
	return PERCH_OK;
}

perch_err perch_mqtt_encoded_size(const perch_mqtt_packet *pkt, size_t *size)
{
	size_t rem;
	perch_err err = body_size(pkt, &rem);
	if (err != PERCH_OK)
		return err;
	*size = 1 + length_size(rem) + rem;
	return PERCH_OK;
}

static unsigned publish_flags(const perch_mqtt_publish *p)
{
	return (p->dup ? 8u : 0u) | (unsigned)p->qos << 1 | (p->retain ? 1u : 0u);
}

static void put_publish_head(struct writer *w, const perch_mqtt_publish *p, size_t rem)
{
	put_u8(w, PERCH_MQTT_PUBLISH << 4 | publish_flags(p));
	put_length(w, rem);
	put_field(w, p->topic);
	if (p->qos > 0)
		put_u16(w, p->packet_id);
}

static void put_connect(struct writer *w, const perch_mqtt_connect *c)
{
	unsigned flags = (c->clean_session ? 0x02u : 0u) | (c->has_username ? 0x80u : 0u) |
	                 (c->has_password ? 0x40u : 0u);
	if (c->has_will)
		flags |= 0x04u | (unsigned)c->will_qos << 3 | (c->will_retain ? 0x20u : 0u);
	put_field(w, PERCH_SLICE_LIT("MQTT"));
	put_u8(w, 4);
	put_u8(w, flags);
	put_u16(w, c->keep_alive);
	put_field(w, c->client_id);
	if (c->has_will) {
		put_field(w, c->will_topic);
		put_field(w, c->will_payload);
	}
	if (c->has_username)
		put_field(w, c->username);
	if (c->has_password)
		put_field(w, c->password);
}

static void put_subscribe(struct writer *w, const perch_mqtt_subscribe *s, bool with_qos)
{
	put_u16(w, s->packet_id);
	if (s->entries == NULL) {
		put_bytes(w, s->raw.ptr, s->raw.len);
		return;
	}
	for (size_t i = 0; i < s->count; i++) {
		put_field(w, s->entries[i].filter);
		if (with_qos)
			put_u8(w, s->entries[i].qos);
	}
}

perch_err perch_mqtt_encode(const perch_mqtt_packet *pkt, uint8_t *buf, size_t cap, size_t *len)
{
	size_t rem;
	perch_err err = body_size(pkt, &rem);
	if (err != PERCH_OK)
		return err;
	size_t total = 1 + length_size(rem) + rem;
	if (total > cap)
		return PERCH_ENOSPC;
	struct writer w = {buf};
	if (pkt->type == PERCH_MQTT_PUBLISH) {
		put_publish_head(&w, &pkt->publish, rem);
		put_bytes(&w, pkt->publish.payload.ptr, pkt->publish.payload.len);
		*len = total;
		return PERCH_OK;
	}
	unsigned flags = pkt->type == PERCH_MQTT_PUBREL || pkt->type == PERCH_MQTT_SUBSCRIBE ||
	                                 pkt->type == PERCH_MQTT_UNSUBSCRIBE
	                         ? 2u
	                         : 0u;
	put_u8(&w, (unsigned)pkt->type << 4 | flags);
	put_length(&w, rem);
	if (ack_type(pkt->type)) {
		put_u16(&w, pkt->ack.packet_id);
	} else {
		switch (pkt->type) {
		case PERCH_MQTT_CONNECT: put_connect(&w, &pkt->connect); break;
		case PERCH_MQTT_CONNACK:
			put_u8(&w, pkt->connack.session_present ? 1u : 0u);
			put_u8(&w, pkt->connack.return_code);
			break;
		case PERCH_MQTT_SUBSCRIBE: put_subscribe(&w, &pkt->subscribe, true); break;
		case PERCH_MQTT_UNSUBSCRIBE: put_subscribe(&w, &pkt->subscribe, false); break;
		case PERCH_MQTT_SUBACK:
			put_u16(&w, pkt->suback.packet_id);
			put_bytes(&w, pkt->suback.codes, pkt->suback.count);
			break;
		default: break; /* PINGREQ, PINGRESP, DISCONNECT: no body */
		}
	}
	*len = total;
	return PERCH_OK;
}

perch_err perch_mqtt_encode_publish_header(const perch_mqtt_publish *pub, uint8_t *buf, size_t cap,
                                           size_t *len)
{
	uint64_t head;
	perch_err err = publish_head_size(pub, &head);
	if (err != PERCH_OK)
		return err;
	uint64_t rem = head + pub->payload.len;
	if (rem > PERCH_MQTT_MAX_REMAINING)
		return PERCH_ETOOBIG;
	size_t n = 1 + length_size((size_t)rem) + (size_t)head;
	if (n > cap)
		return PERCH_ENOSPC;
	struct writer w = {buf};
	put_publish_head(&w, pub, (size_t)rem);
	*len = n;
	return PERCH_OK;
}
