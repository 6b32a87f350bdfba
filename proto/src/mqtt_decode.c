/*
 * mqtt_decode.c — the streaming MQTT 3.1.1 decoder.
 *
 * Two paths. The fast path takes a packet that lies whole in the caller's
 * input and decodes it in place: the packet's slices point into that input,
 * nothing is copied or allocated. The slow path gathers a packet split across
 * calls: its fixed header (at most five bytes) into the decoder, its body into
 * a buffer allocated once the remaining length is known and has passed the
 * size limits. Both end in decode_body, which validates one whole body.
 *
 * Everything that can be judged from the first byte (type, direction, first
 * packet, flags) is judged there, before a length is read; everything that
 * can be judged from the fixed header (sizes, fixed lengths) before a byte of
 * the body is buffered.
 */
#include "perch/mqtt.h"

#include <string.h>

#include "perch/alloc.h"
#include "perch/topic.h"
#include "perch/utf8.h"

#define FROM_CLIENT 1u
#define FROM_SERVER 2u
#define VAR_LEN     (-1)

/* What the fixed header of each packet type must look like. */
struct type_rule {
	uint8_t from;     /* FROM_CLIENT | FROM_SERVER: who may send it */
	uint8_t flags;    /* the required low nibble (not for PUBLISH) */
	int8_t fixed_len; /* the required remaining length, or VAR_LEN */
	perch_mqtt_reason bad_flags;
	perch_mqtt_reason bad_len;
	perch_mqtt_reason id_zero; /* for the packet-id-only acks */
};

static const struct type_rule rules[16] = {
        [PERCH_MQTT_CONNECT] = {FROM_CLIENT, 0, VAR_LEN, PERCH_MQTT_R_CONNECT_FLAGS, 0, 0},
        [PERCH_MQTT_CONNACK] = {FROM_SERVER, 0, 2, PERCH_MQTT_R_CONNACK_FLAGS,
                                PERCH_MQTT_R_CONNACK_LENGTH, 0},
        [PERCH_MQTT_PUBLISH] = {FROM_CLIENT | FROM_SERVER, 0, VAR_LEN, 0, 0, 0},
        [PERCH_MQTT_PUBACK] = {FROM_CLIENT | FROM_SERVER, 0, 2, PERCH_MQTT_R_PUBACK_FLAGS,
                               PERCH_MQTT_R_PUBACK_LENGTH, PERCH_MQTT_R_PUBACK_PACKET_ID_ZERO},
        [PERCH_MQTT_PUBREC] = {FROM_CLIENT | FROM_SERVER, 0, 2, PERCH_MQTT_R_PUBREC_FLAGS,
                               PERCH_MQTT_R_PUBREC_LENGTH, PERCH_MQTT_R_PUBREC_PACKET_ID_ZERO},
        [PERCH_MQTT_PUBREL] = {FROM_CLIENT | FROM_SERVER, 2, 2, PERCH_MQTT_R_PUBREL_FLAGS,
                               PERCH_MQTT_R_PUBREL_LENGTH, PERCH_MQTT_R_PUBREL_PACKET_ID_ZERO},
        [PERCH_MQTT_PUBCOMP] = {FROM_CLIENT | FROM_SERVER, 0, 2, PERCH_MQTT_R_PUBCOMP_FLAGS,
                                PERCH_MQTT_R_PUBCOMP_LENGTH, PERCH_MQTT_R_PUBCOMP_PACKET_ID_ZERO},
        [PERCH_MQTT_SUBSCRIBE] = {FROM_CLIENT, 2, VAR_LEN, PERCH_MQTT_R_SUBSCRIBE_FLAGS, 0, 0},
        [PERCH_MQTT_SUBACK] = {FROM_SERVER, 0, VAR_LEN, PERCH_MQTT_R_SUBACK_FLAGS, 0, 0},
        [PERCH_MQTT_UNSUBSCRIBE] = {FROM_CLIENT, 2, VAR_LEN, PERCH_MQTT_R_UNSUBSCRIBE_FLAGS, 0, 0},
        [PERCH_MQTT_UNSUBACK] = {FROM_SERVER, 0, 2, PERCH_MQTT_R_UNSUBACK_FLAGS,
                                 PERCH_MQTT_R_UNSUBACK_LENGTH,
                                 PERCH_MQTT_R_UNSUBACK_PACKET_ID_ZERO},
        [PERCH_MQTT_PINGREQ] = {FROM_CLIENT, 0, 0, PERCH_MQTT_R_PINGREQ_FLAGS,
                                PERCH_MQTT_R_PINGREQ_LENGTH, 0},
        [PERCH_MQTT_PINGRESP] = {FROM_SERVER, 0, 0, PERCH_MQTT_R_PINGRESP_FLAGS,
                                 PERCH_MQTT_R_PINGRESP_LENGTH, 0},
        /* 3.1.1 has only clients send DISCONNECT; Perch's client side tolerates
	 * one from a server (MQTT 5 servers send it) and treats it as a close. */
        [PERCH_MQTT_DISCONNECT] = {FROM_CLIENT | FROM_SERVER, 0, 0, PERCH_MQTT_R_DISCONNECT_FLAGS,
                                   PERCH_MQTT_R_DISCONNECT_LENGTH, 0},
};

void perch_mqtt_decoder_init(perch_mqtt_decoder *d, perch_mqtt_side side, size_t max_packet,
                             size_t max_connect)
{
	memset(d, 0, sizeof *d);
	d->side = side;
	if (max_packet == 0)
		max_packet = PERCH_MQTT_MAX_PACKET_DEFAULT;
	if (max_packet > PERCH_MQTT_MAX_PACKET)
		max_packet = PERCH_MQTT_MAX_PACKET;
	if (max_connect == 0)
		max_connect = PERCH_MQTT_MAX_CONNECT_DEFAULT;
	if (max_connect > max_packet)
		max_connect = max_packet;
	d->max_packet = (uint32_t)max_packet;
	d->max_connect = (uint32_t)max_connect;
}

void perch_mqtt_decoder_fini(perch_mqtt_decoder *d)
{
	perch_free(d->body);
	perch_free(d->spent);
	d->body = NULL;
	d->spent = NULL;
	d->in_body = false;
	d->hdr_len = 0;
}

perch_mqtt_reason perch_mqtt_decoder_reason(const perch_mqtt_decoder *d)
{
	return d->reason;
}

size_t perch_mqtt_decoder_buffered(const perch_mqtt_decoder *d)
{
	return d->in_body ? (size_t)d->hdr_len + d->body_have : d->hdr_len;
}

/* check_first_byte judges a packet by its first byte. */
static perch_mqtt_reason check_first_byte(const perch_mqtt_decoder *d, uint8_t b)
{
	unsigned type = b >> 4, flags = b & 0x0Fu;
	if (type == 0 || type == 15)
		return PERCH_MQTT_R_RESERVED_TYPE;
	const struct type_rule *r = &rules[type];
	if (d->side == PERCH_MQTT_SERVER) {
		if (!(r->from & FROM_CLIENT))
			return PERCH_MQTT_R_NOT_FROM_CLIENT;
		if (!d->seen_first && type != PERCH_MQTT_CONNECT)
			return PERCH_MQTT_R_FIRST_NOT_CONNECT;
		if (d->seen_first && type == PERCH_MQTT_CONNECT)
			return PERCH_MQTT_R_SECOND_CONNECT;
	} else {
		if (!(r->from & FROM_SERVER))
			return PERCH_MQTT_R_NOT_FROM_SERVER;
		if (!d->seen_first && type != PERCH_MQTT_CONNACK)
			return PERCH_MQTT_R_FIRST_NOT_CONNACK;
		if (d->seen_first && type == PERCH_MQTT_CONNACK)
			return PERCH_MQTT_R_SECOND_CONNACK;
	}
	if (type == PERCH_MQTT_PUBLISH) {
		unsigned qos = (flags >> 1) & 3u;
		if (qos == 3)
			return PERCH_MQTT_R_PUBLISH_QOS3;
		if ((flags & 8u) && qos == 0)
			return PERCH_MQTT_R_PUBLISH_DUP_QOS0;
	} else if (flags != r->flags) {
		return r->bad_flags;
	}
	return PERCH_MQTT_R_OK;
}

/* parse_length reads a remaining length from p[0..n): 1 and *rem, *used when
 * complete, 0 when more bytes are needed, -1 when malformed (a fourth byte
 * with its continuation bit set). */
static int parse_length(const uint8_t *p, size_t n, uint32_t *rem, size_t *used)
{
	uint32_t v = 0;
	for (size_t i = 0; i < 4; i++) {
		if (i == n)
			return 0;
		v |= (uint32_t)(p[i] & 0x7Fu) << (7 * i);
		if (!(p[i] & 0x80u)) {
			*rem = v;
			*used = i + 1;
			return 1;
		}
	}
	return -1;
}

/* check_length judges a packet by its fixed header: type byte b, remaining
 * length rem written in nlen bytes. */
static perch_mqtt_reason check_length(const perch_mqtt_decoder *d, uint8_t b, uint32_t rem,
                                      size_t nlen)
{
	unsigned type = b >> 4;
	uint64_t total = 1u + nlen + (uint64_t)rem;
	if (type == PERCH_MQTT_CONNECT && total > d->max_connect)
		return PERCH_MQTT_R_CONNECT_TOO_BIG;
	if (total > d->max_packet)
		return PERCH_MQTT_R_TOO_BIG;
	if (rules[type].fixed_len != VAR_LEN && rem != (uint32_t)rules[type].fixed_len)
		return rules[type].bad_len;
	return PERCH_MQTT_R_OK;
}

/* A bounds-checked reader over one packet body. */
struct reader {
	const uint8_t *p;
	const uint8_t *end;
};

static bool read_u8(struct reader *r, uint8_t *v)
{
	if (r->p == r->end)
		return false;
	*v = *r->p++;
	return true;
}

static bool read_u16(struct reader *r, uint16_t *v)
{
	if (r->end - r->p < 2)
		return false;
	*v = (uint16_t)(r->p[0] << 8 | r->p[1]);
	r->p += 2;
	return true;
}

/* read_field reads a two-byte length and that many bytes (a UTF-8 string or
 * binary data; the caller validates strings). */
static bool read_field(struct reader *r, perch_slice *s)
{
	uint16_t n;
	if (!read_u16(r, &n) || r->end - r->p < n)
		return false;
	s->ptr = (const char *)r->p;
	s->len = n;
	r->p += n;
	return true;
}

static perch_mqtt_reason topic_reason(perch_topic_status st, perch_mqtt_reason utf8,
                                      perch_mqtt_reason empty, perch_mqtt_reason wild)
{
	switch (st) {
	case PERCH_TOPIC_OK: return PERCH_MQTT_R_OK;
	case PERCH_TOPIC_EMPTY: return empty;
	case PERCH_TOPIC_WILDCARD: return wild;
	default: return utf8; /* BAD_UTF8; TOO_LONG cannot happen in a 16-bit field */
	}
}

static perch_mqtt_reason decode_connect(struct reader *r, perch_mqtt_connect *c)
{
	perch_slice name;
	uint8_t level, flags;
	memset(c, 0, sizeof *c);
	if (!read_field(r, &name))
		return PERCH_MQTT_R_CONNECT_TRUNCATED;
	if (!perch_slice_eq(name, PERCH_SLICE_LIT("MQTT")))
		return PERCH_MQTT_R_CONNECT_PROTOCOL_NAME;
	if (!read_u8(r, &level))
		return PERCH_MQTT_R_CONNECT_TRUNCATED;
	if (level != 4)
		return PERCH_MQTT_R_CONNECT_PROTOCOL_LEVEL;
	if (!read_u8(r, &flags))
		return PERCH_MQTT_R_CONNECT_TRUNCATED;
	if (flags & 0x01u)
		return PERCH_MQTT_R_CONNECT_RESERVED_FLAG;
	c->clean_session = flags & 0x02u;
	c->has_will = flags & 0x04u;
	c->will_qos = (uint8_t)((flags >> 3) & 3u);
	c->will_retain = flags & 0x20u;
	c->has_password = flags & 0x40u;
	c->has_username = flags & 0x80u;
	if (c->will_qos == 3)
		return PERCH_MQTT_R_CONNECT_WILL_QOS3;
	if (!c->has_will && c->will_qos != 0)
		return PERCH_MQTT_R_CONNECT_WILL_QOS_WITHOUT_WILL;
	if (!c->has_will && c->will_retain)
		return PERCH_MQTT_R_CONNECT_WILL_RETAIN_WITHOUT_WILL;
	if (c->has_password && !c->has_username)
		return PERCH_MQTT_R_CONNECT_PASSWORD_WITHOUT_USERNAME;
	if (!read_u16(r, &c->keep_alive) || !read_field(r, &c->client_id))
		return PERCH_MQTT_R_CONNECT_TRUNCATED;
	if (perch_utf8_check(c->client_id.ptr, c->client_id.len) != PERCH_UTF8_OK)
		return PERCH_MQTT_R_CONNECT_CLIENT_ID_UTF8;
	if (c->has_will) {
		if (!read_field(r, &c->will_topic))
			return PERCH_MQTT_R_CONNECT_TRUNCATED;
		perch_mqtt_reason why = topic_reason(perch_topic_check_name(c->will_topic),
		                                     PERCH_MQTT_R_CONNECT_WILL_TOPIC_UTF8,
		                                     PERCH_MQTT_R_CONNECT_WILL_TOPIC_EMPTY,
		                                     PERCH_MQTT_R_CONNECT_WILL_TOPIC_WILDCARD);
		if (why != PERCH_MQTT_R_OK)
			return why;
		if (!read_field(r, &c->will_payload))
			return PERCH_MQTT_R_CONNECT_TRUNCATED;
	}
	if (c->has_username) {
		if (!read_field(r, &c->username))
			return PERCH_MQTT_R_CONNECT_TRUNCATED;
		if (perch_utf8_check(c->username.ptr, c->username.len) != PERCH_UTF8_OK)
			return PERCH_MQTT_R_CONNECT_USERNAME_UTF8;
	}
	if (c->has_password && !read_field(r, &c->password))
		return PERCH_MQTT_R_CONNECT_TRUNCATED;
	if (r->p != r->end)
		return PERCH_MQTT_R_CONNECT_TRAILING;
	return PERCH_MQTT_R_OK;
}

static perch_mqtt_reason decode_publish(struct reader *r, unsigned flags, perch_mqtt_publish *p)
{
	p->dup = flags & 8u;
	p->qos = (uint8_t)((flags >> 1) & 3u);
	p->retain = flags & 1u;
	p->packet_id = 0;
	if (!read_field(r, &p->topic))
		return PERCH_MQTT_R_PUBLISH_TRUNCATED;
	perch_mqtt_reason why =
	        topic_reason(perch_topic_check_name(p->topic), PERCH_MQTT_R_PUBLISH_TOPIC_UTF8,
	                     PERCH_MQTT_R_PUBLISH_TOPIC_EMPTY, PERCH_MQTT_R_PUBLISH_TOPIC_WILDCARD);
	if (why != PERCH_MQTT_R_OK)
		return why;
	if (p->qos > 0) {
		if (!read_u16(r, &p->packet_id))
			return PERCH_MQTT_R_PUBLISH_TRUNCATED;
		if (p->packet_id == 0)
			return PERCH_MQTT_R_PUBLISH_PACKET_ID_ZERO;
	}
	p->payload.ptr = (const char *)r->p;
	p->payload.len = (size_t)(r->end - r->p);
	return PERCH_MQTT_R_OK;
}

/* The reasons of SUBSCRIBE, and the same for UNSUBSCRIBE. */
struct sub_reasons {
	perch_mqtt_reason truncated, id_zero, none, utf8, empty, plus, hash;
};
static const struct sub_reasons sub_why = {
        PERCH_MQTT_R_SUBSCRIBE_TRUNCATED,    PERCH_MQTT_R_SUBSCRIBE_PACKET_ID_ZERO,
        PERCH_MQTT_R_SUBSCRIBE_NO_FILTERS,   PERCH_MQTT_R_SUBSCRIBE_FILTER_UTF8,
        PERCH_MQTT_R_SUBSCRIBE_FILTER_EMPTY, PERCH_MQTT_R_SUBSCRIBE_FILTER_PLUS,
        PERCH_MQTT_R_SUBSCRIBE_FILTER_HASH,
};
static const struct sub_reasons unsub_why = {
        PERCH_MQTT_R_UNSUBSCRIBE_TRUNCATED,    PERCH_MQTT_R_UNSUBSCRIBE_PACKET_ID_ZERO,
        PERCH_MQTT_R_UNSUBSCRIBE_NO_FILTERS,   PERCH_MQTT_R_UNSUBSCRIBE_FILTER_UTF8,
        PERCH_MQTT_R_UNSUBSCRIBE_FILTER_EMPTY, PERCH_MQTT_R_UNSUBSCRIBE_FILTER_PLUS,
        PERCH_MQTT_R_UNSUBSCRIBE_FILTER_HASH,
};

static perch_mqtt_reason decode_subscribe(struct reader *r, bool with_qos, perch_mqtt_subscribe *s)
{
	const struct sub_reasons *why = with_qos ? &sub_why : &unsub_why;
	memset(s, 0, sizeof *s);
	if (!read_u16(r, &s->packet_id))
		return why->truncated;
	if (s->packet_id == 0)
		return why->id_zero;
	if (r->p == r->end)
		return why->none;
	s->raw.ptr = (const char *)r->p;
	s->raw.len = (size_t)(r->end - r->p);
	while (r->p != r->end) {
		perch_slice f;
		if (!read_field(r, &f))
			return why->truncated;
		switch (perch_topic_check_filter(f)) {
		case PERCH_TOPIC_OK: break;
		case PERCH_TOPIC_EMPTY: return why->empty;
		case PERCH_TOPIC_BAD_PLUS: return why->plus;
		case PERCH_TOPIC_BAD_HASH: return why->hash;
		default: return why->utf8;
		}
		if (with_qos) {
			uint8_t q;
			if (!read_u8(r, &q))
				return why->truncated;
			if (q & 0xFCu)
				return PERCH_MQTT_R_SUBSCRIBE_QOS_RESERVED;
			if (q == 3)
				return PERCH_MQTT_R_SUBSCRIBE_QOS3;
		}
		s->count++;
	}
	return PERCH_MQTT_R_OK;
}

static perch_mqtt_reason decode_suback(struct reader *r, perch_mqtt_suback *s)
{
	if (!read_u16(r, &s->packet_id))
		return PERCH_MQTT_R_SUBACK_TRUNCATED;
	if (s->packet_id == 0)
		return PERCH_MQTT_R_SUBACK_PACKET_ID_ZERO;
	if (r->p == r->end)
		return PERCH_MQTT_R_SUBACK_NO_CODES;
	s->codes = r->p;
	s->count = (size_t)(r->end - r->p);
	for (size_t i = 0; i < s->count; i++) {
		uint8_t c = s->codes[i];
		if (c > 2 && c != PERCH_MQTT_SUBACK_FAILURE)
			return PERCH_MQTT_R_SUBACK_RETURN_CODE;
	}
	return PERCH_MQTT_R_OK;
}

/* decode_body decodes the body p[0..len) of a packet whose first byte b has
 * passed check_first_byte and whose length has passed check_length. */
static perch_mqtt_reason decode_body(uint8_t b, const uint8_t *p, size_t len,
                                     perch_mqtt_packet *pkt)
{
	struct reader r = {p, p + len};
	unsigned type = b >> 4;
	pkt->type = (perch_mqtt_type)type;
	switch (type) {
	case PERCH_MQTT_CONNECT: return decode_connect(&r, &pkt->connect);
	case PERCH_MQTT_CONNACK: {
		uint8_t f = p[0], code = p[1];
		if (f & 0xFEu)
			return PERCH_MQTT_R_CONNACK_ACK_FLAGS;
		if (code > 5)
			return PERCH_MQTT_R_CONNACK_RETURN_CODE;
		if (f && code != 0)
			return PERCH_MQTT_R_CONNACK_SESSION_PRESENT;
		pkt->connack.session_present = f;
		pkt->connack.return_code = code;
		return PERCH_MQTT_R_OK;
	}
	case PERCH_MQTT_PUBLISH: return decode_publish(&r, b & 0x0Fu, &pkt->publish);
	case PERCH_MQTT_PUBACK:
	case PERCH_MQTT_PUBREC:
	case PERCH_MQTT_PUBREL:
	case PERCH_MQTT_PUBCOMP:
	case PERCH_MQTT_UNSUBACK:
		pkt->ack.packet_id = (uint16_t)(p[0] << 8 | p[1]);
		return pkt->ack.packet_id == 0 ? rules[type].id_zero : PERCH_MQTT_R_OK;
	case PERCH_MQTT_SUBSCRIBE: return decode_subscribe(&r, true, &pkt->subscribe);
	case PERCH_MQTT_UNSUBSCRIBE: return decode_subscribe(&r, false, &pkt->subscribe);
	case PERCH_MQTT_SUBACK: return decode_suback(&r, &pkt->suback);
	default: return PERCH_MQTT_R_OK; /* PINGREQ, PINGRESP, DISCONNECT: length 0 */
	}
}

static perch_err fail(perch_mqtt_decoder *d, perch_mqtt_reason why)
{
	d->reason = why;
	d->err = perch_mqtt_reason_err(why);
	return d->err;
}

/* finish decodes a whole packet and updates the sequence state. */
static perch_err finish(perch_mqtt_decoder *d, uint8_t b, const uint8_t *body, size_t len,
                        perch_mqtt_packet *pkt)
{
	perch_mqtt_reason why = decode_body(b, body, len, pkt);
	if (why != PERCH_MQTT_R_OK)
		return fail(d, why);
	d->seen_first = true;
	return PERCH_OK;
}

perch_err perch_mqtt_decode(perch_mqtt_decoder *d, const uint8_t *in, size_t len, size_t *used,
                            perch_mqtt_packet *pkt)
{
	perch_mqtt_reason why;
	size_t pos = 0;
	*used = 0;
	if (d->err != PERCH_OK)
		return d->err;
	if (d->spent != NULL) {
		perch_free(d->spent);
		d->spent = NULL;
	}

	/* Fast path: a whole packet at the start of in, decoded in place. */
	if (!d->in_body && d->hdr_len == 0 && len >= 2) {
		uint32_t rem;
		size_t nlen;
		why = check_first_byte(d, in[0]);
		if (why != PERCH_MQTT_R_OK)
			return fail(d, why);
		int st = parse_length(in + 1, len - 1, &rem, &nlen);
		if (st < 0)
			return fail(d, PERCH_MQTT_R_REMAINING_LENGTH);
		if (st > 0) {
			why = check_length(d, in[0], rem, nlen);
			if (why != PERCH_MQTT_R_OK)
				return fail(d, why);
			if (len - 1 - nlen >= rem) {
				*used = 1 + nlen + rem;
				return finish(d, in[0], in + 1 + nlen, rem, pkt);
			}
		}
	}

	/* Slow path: gather the fixed header byte by byte. */
	while (!d->in_body) {
		if (pos == len) {
			*used = len;
			return PERCH_EAGAIN;
		}
		uint8_t c = in[pos++];
		if (d->hdr_len == 0) {
			why = check_first_byte(d, c);
			if (why != PERCH_MQTT_R_OK)
				return fail(d, why);
		}
		d->hdr[d->hdr_len++] = c;
		if (d->hdr_len < 2)
			continue;
		uint32_t rem;
		size_t nlen;
		int st = parse_length(d->hdr + 1, d->hdr_len - 1u, &rem, &nlen);
		if (st < 0)
			return fail(d, PERCH_MQTT_R_REMAINING_LENGTH);
		if (st == 0)
			continue;
		why = check_length(d, d->hdr[0], rem, nlen);
		if (why != PERCH_MQTT_R_OK)
			return fail(d, why);
		if (rem == 0) {
			d->hdr_len = 0;
			*used = pos;
			/* an empty body; any non-NULL pointer will do (NULL + 0 is UB) */
			return finish(d, d->hdr[0], d->hdr, 0, pkt);
		}
		/* Size known and within the limits: now, and only now, allocate. */
		d->body = perch_malloc(rem);
		if (d->body == NULL) {
			d->err = PERCH_ENOMEM;
			return d->err;
		}
		d->body_len = rem;
		d->body_have = 0;
		d->in_body = true;
	}

	/* Gather the body. */
	size_t want = d->body_len - d->body_have, have = len - pos;
	size_t take = have < want ? have : want;
	if (take > 0)
		memcpy(d->body + d->body_have, in + pos, take);
	d->body_have += (uint32_t)take;
	pos += take;
	*used = pos;
	if (d->body_have < d->body_len)
		return PERCH_EAGAIN;
	d->spent = d->body;
	d->body = NULL;
	d->in_body = false;
	d->hdr_len = 0;
	return finish(d, d->hdr[0], d->spent, d->body_len, pkt);
}
