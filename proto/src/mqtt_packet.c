/*
 * mqtt_packet.c — helpers over decoded or built packets: walking the filter
 * list of a SUBSCRIBE or UNSUBSCRIBE, and comparing two packets.
 */
#include "perch/mqtt.h"

void perch_mqtt_filter_iter_init(perch_mqtt_filter_iter *it, const perch_mqtt_packet *pkt)
{
	it->sub = &pkt->subscribe;
	it->with_qos = pkt->type == PERCH_MQTT_SUBSCRIBE;
	it->index = 0;
	it->off = 0;
}

bool perch_mqtt_filter_next(perch_mqtt_filter_iter *it, perch_mqtt_filter *out)
{
	const perch_mqtt_subscribe *s = it->sub;
	if (s->entries != NULL) {
		if (it->index >= s->count)
			return false;
		*out = s->entries[it->index++];
		if (!it->with_qos)
			out->qos = 0;
		return true;
	}
	/* raw form: a validated list, but stay in bounds whatever it holds */
	const unsigned char *p = (const unsigned char *)s->raw.ptr;
	size_t n = s->raw.len, off = it->off;
	if (off + 2 > n)
		return false;
	size_t flen = (size_t)p[off] << 8 | p[off + 1];
	size_t need = 2 + flen + (it->with_qos ? 1u : 0u);
	if (need > n - off)
		return false;
	out->filter.ptr = s->raw.ptr + off + 2;
	out->filter.len = flen;
	out->qos = it->with_qos ? p[off + 2 + flen] : 0;
	it->off = off + need;
	it->index++;
	return true;
}

static bool filters_equal(const perch_mqtt_packet *a, const perch_mqtt_packet *b)
{
	perch_mqtt_filter_iter ia, ib;
	perch_mqtt_filter fa, fb;
	perch_mqtt_filter_iter_init(&ia, a);
	perch_mqtt_filter_iter_init(&ib, b);
	for (;;) {
		bool ha = perch_mqtt_filter_next(&ia, &fa), hb = perch_mqtt_filter_next(&ib, &fb);
		if (ha != hb)
			return false;
		if (!ha)
			return true;
		if (!perch_slice_eq(fa.filter, fb.filter) || fa.qos != fb.qos)
			return false;
	}
}

bool perch_mqtt_packet_equal(const perch_mqtt_packet *a, const perch_mqtt_packet *b)
{
	if (a->type != b->type)
		return false;
	switch (a->type) {
	case PERCH_MQTT_CONNECT: {
		const perch_mqtt_connect *x = &a->connect, *y = &b->connect;
		if (x->keep_alive != y->keep_alive || x->clean_session != y->clean_session ||
		    x->has_will != y->has_will || x->has_username != y->has_username ||
		    x->has_password != y->has_password ||
		    !perch_slice_eq(x->client_id, y->client_id))
			return false;
		if (x->has_will &&
		    (x->will_qos != y->will_qos || x->will_retain != y->will_retain ||
		     !perch_slice_eq(x->will_topic, y->will_topic) ||
		     !perch_slice_eq(x->will_payload, y->will_payload)))
			return false;
		if (x->has_username && !perch_slice_eq(x->username, y->username))
			return false;
		return !x->has_password || perch_slice_eq(x->password, y->password);
	}
	case PERCH_MQTT_CONNACK:
		return a->connack.session_present == b->connack.session_present &&
		       a->connack.return_code == b->connack.return_code;
	case PERCH_MQTT_PUBLISH: {
		const perch_mqtt_publish *x = &a->publish, *y = &b->publish;
		return x->qos == y->qos && x->dup == y->dup && x->retain == y->retain &&
		       (x->qos == 0 || x->packet_id == y->packet_id) &&
		       perch_slice_eq(x->topic, y->topic) && perch_slice_eq(x->payload, y->payload);
	}
	case PERCH_MQTT_PUBACK:
	case PERCH_MQTT_PUBREC:
	case PERCH_MQTT_PUBREL:
	case PERCH_MQTT_PUBCOMP:
	case PERCH_MQTT_UNSUBACK: return a->ack.packet_id == b->ack.packet_id;
	case PERCH_MQTT_SUBSCRIBE:
	case PERCH_MQTT_UNSUBSCRIBE:
		return a->subscribe.packet_id == b->subscribe.packet_id && filters_equal(a, b);
	case PERCH_MQTT_SUBACK:
		return a->suback.packet_id == b->suback.packet_id &&
		       a->suback.count == b->suback.count &&
		       (a->suback.count == 0 ||
		        memcmp(a->suback.codes, b->suback.codes, a->suback.count) == 0);
	default: return true;
	}
}
