/*
 * fuzz_mqtt_decode.c — libFuzzer target for the MQTT decoder, the one input
 * a hub takes from anyone who can reach its port.
 *
 * Input: byte 0 picks the side (bit 0) and, with byte 1, the way the rest
 * is cut into calls (whole, or pseudo-random chunks of 1..64 bytes). Every
 * packet decoded is encoded again and the encoding decoded by a fresh
 * decoder: it must decode, in one call, to an equal packet (round trip);
 * for PUBLISH the header-only encoding must be a prefix of the whole one.
 * At the end no allocation may be left behind.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perch/alloc.h"
#include "perch/mqtt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond))                                                                       \
			abort();                                                                   \
	} while (0)

static const uint8_t CONNECT_MIN[] = {0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0};
static const uint8_t CONNACK_OK[] = {0x20, 0x02, 0, 0};

static void round_trip(perch_mqtt_side side, const perch_mqtt_packet *pkt)
{
	size_t size, len, used;
	CHECK(perch_mqtt_encoded_size(pkt, &size) == PERCH_OK);
	uint8_t *buf = malloc(size);
	CHECK(buf != NULL);
	CHECK(perch_mqtt_encode(pkt, buf, size, &len) == PERCH_OK);
	CHECK(len == size);
	if (pkt->type == PERCH_MQTT_PUBLISH) {
		uint8_t head[PERCH_MQTT_PUBLISH_HEADER_MAX];
		size_t hl;
		CHECK(perch_mqtt_encode_publish_header(&pkt->publish, head, sizeof head, &hl) ==
		      PERCH_OK);
		CHECK(hl + pkt->publish.payload.len == len && memcmp(head, buf, hl) == 0);
	}
	perch_mqtt_decoder d;
	perch_mqtt_packet again;
	perch_mqtt_decoder_init(&d, side, PERCH_MQTT_MAX_PACKET, PERCH_MQTT_MAX_PACKET);
	if (pkt->type != PERCH_MQTT_CONNECT && pkt->type != PERCH_MQTT_CONNACK) {
		if (side == PERCH_MQTT_SERVER)
			CHECK(perch_mqtt_decode(&d, CONNECT_MIN, sizeof CONNECT_MIN, &used,
			                        &again) == PERCH_OK);
		else
			CHECK(perch_mqtt_decode(&d, CONNACK_OK, sizeof CONNACK_OK, &used, &again) ==
			      PERCH_OK);
	}
	CHECK(perch_mqtt_decode(&d, buf, len, &used, &again) == PERCH_OK);
	CHECK(used == len);
	CHECK(perch_mqtt_packet_equal(pkt, &again));
	perch_mqtt_decoder_fini(&d);
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 2)
		return 0;
	perch_mqtt_side side = (data[0] & 1) ? PERCH_MQTT_CLIENT : PERCH_MQTT_SERVER;
	uint32_t rng = (uint32_t)data[0] << 8 | data[1];
	bool whole = (data[0] & 6) == 0;
	data += 2;
	size -= 2;
	size_t b0 = perch_alloc_bytes();
	perch_mqtt_decoder d;
	perch_mqtt_decoder_init(&d, side, 1u << 16, 1u << 12);
	size_t pos = 0;
	while (pos < size) {
		size_t chunk = size - pos;
		if (!whole) {
			rng = rng * 1103515245u + 12345u;
			size_t c = 1 + (rng >> 16) % 64;
			if (c < chunk)
				chunk = c;
		}
		const uint8_t *p = data + pos;
		size_t left = chunk;
		pos += chunk;
		for (;;) {
			perch_mqtt_packet pkt;
			size_t used;
			perch_err err = perch_mqtt_decode(&d, p, left, &used, &pkt);
			CHECK(used <= left);
			p += used;
			left -= used;
			if (err == PERCH_EAGAIN) {
				CHECK(left == 0);
				break;
			}
			if (err != PERCH_OK) {
				CHECK(err == PERCH_ENOMEM ||
				      perch_mqtt_reason_err(perch_mqtt_decoder_reason(&d)) == err);
				goto done;
			}
			round_trip(side, &pkt);
			if (left == 0)
				break;
		}
	}
done:
	perch_mqtt_decoder_fini(&d);
	CHECK(perch_alloc_bytes() == b0);
	return 0;
}
