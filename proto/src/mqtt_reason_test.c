/*
 * mqtt_reason_test.c — one input per rejection reason of the MQTT decoder,
 * each checked to produce exactly that reason (and its error code), whether
 * fed in one chunk or byte by byte; and a check that the table covers every
 * reason the enum declares.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "perch/alloc.h"
#include "perch/mqtt.h"

#define SRV   PERCH_MQTT_SERVER
#define CLI   PERCH_MQTT_CLIENT
#define OPEN  true  /* send CONNECT (server) or CONNACK (client) first */
#define FRESH false /* the bytes are the first of the connection */

static const char CONNECT_MIN[] = "\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00";
static const char CONNACK_OK[] = "\x20\x02\x00\x00";

struct reason_case {
	perch_mqtt_side side;
	bool open;
	const char *bytes;
	size_t len;
	perch_mqtt_reason want;
};

#define R(side, open, lit, reason)                                                                 \
	{                                                                                          \
		side, open, lit, sizeof(lit) - 1, PERCH_MQTT_R_##reason                            \
	}
/* A CONNECT with the given flags byte, empty client id, and tail after it;
 * rem is its remaining length. */
#define CONN(rem, flags, tail) "\x10" rem "\x00\x04MQTT\x04" flags "\x00\x3c\x00\x00" tail

static const struct reason_case cases[] = {
        R(SRV, FRESH, "\x00\x00", RESERVED_TYPE),
        R(SRV, OPEN, "\xf0\x00", RESERVED_TYPE),
        R(SRV, OPEN, "\x20\x02\x00\x00", NOT_FROM_CLIENT),
        R(SRV, OPEN, "\x90", NOT_FROM_CLIENT),
        R(SRV, OPEN, "\xb0", NOT_FROM_CLIENT),
        R(SRV, OPEN, "\xd0", NOT_FROM_CLIENT),
        R(CLI, OPEN, "\x10\x00", NOT_FROM_SERVER),
        R(CLI, OPEN, "\x82", NOT_FROM_SERVER),
        R(CLI, OPEN, "\xa2", NOT_FROM_SERVER),
        R(CLI, OPEN, "\xc0", NOT_FROM_SERVER),
        R(SRV, FRESH, "\x30", FIRST_NOT_CONNECT), /* at the first byte */
        R(SRV, FRESH, "\xe0\x00", FIRST_NOT_CONNECT),
        R(SRV, OPEN, CONNECT_MIN, SECOND_CONNECT),
        R(CLI, FRESH, "\x30", FIRST_NOT_CONNACK),
        R(CLI, OPEN, CONNACK_OK, SECOND_CONNACK),
        R(SRV, OPEN, "\x30\xff\xff\xff\xff", REMAINING_LENGTH),
        R(SRV, FRESH, "\x10\x80\x80\x80\x80\x01", REMAINING_LENGTH),
        R(SRV, OPEN, "\x30\xff\xff\xff\x7f", TOO_BIG),
        R(SRV, OPEN, "\x30\x81\x80\x40", TOO_BIG), /* 1 MiB + 1 of body */
        R(SRV, FRESH, "\x10\xff\xff\xff\x7f", CONNECT_TOO_BIG),
        R(SRV, FRESH, "\x10\x80\x80\x04", CONNECT_TOO_BIG), /* just over 64 KiB */
        R(SRV, FRESH, "\x11", CONNECT_FLAGS),
        R(CLI, FRESH, "\x28", CONNACK_FLAGS),
        R(SRV, OPEN, "\x42", PUBACK_FLAGS),
        R(SRV, OPEN, "\x51", PUBREC_FLAGS),
        R(SRV, OPEN, "\x60", PUBREL_FLAGS),
        R(CLI, OPEN, "\x63", PUBREL_FLAGS),
        R(SRV, OPEN, "\x72", PUBCOMP_FLAGS),
        R(SRV, OPEN, "\x80", SUBSCRIBE_FLAGS),
        R(SRV, OPEN, "\x83", SUBSCRIBE_FLAGS),
        R(CLI, OPEN, "\x92", SUBACK_FLAGS),
        R(SRV, OPEN, "\xa0", UNSUBSCRIBE_FLAGS),
        R(CLI, OPEN, "\xb2", UNSUBACK_FLAGS),
        R(SRV, OPEN, "\xc1", PINGREQ_FLAGS),
        R(CLI, OPEN, "\xd4", PINGRESP_FLAGS),
        R(SRV, OPEN, "\xe8", DISCONNECT_FLAGS),
        R(CLI, FRESH, "\x20\x03\x00\x00\x00", CONNACK_LENGTH),
        R(CLI, FRESH, "\x20\x01\x00", CONNACK_LENGTH),
        R(SRV, OPEN, "\x40\x03\x00\x01\x00", PUBACK_LENGTH),
        R(SRV, OPEN, "\x50\x01\x00", PUBREC_LENGTH),
        R(SRV, OPEN, "\x62\x00", PUBREL_LENGTH),
        R(SRV, OPEN, "\x70\x04", PUBCOMP_LENGTH),
        R(CLI, OPEN, "\xb0\x03\x00\x01\x00", UNSUBACK_LENGTH),
        R(SRV, OPEN, "\xc0\x01\x00", PINGREQ_LENGTH),
        R(CLI, OPEN, "\xd0\x01\x00", PINGRESP_LENGTH),
        R(SRV, OPEN, "\xe0\x01\x00", DISCONNECT_LENGTH),
        R(SRV, OPEN, "\x40\x02\x00\x00", PUBACK_PACKET_ID_ZERO),
        R(CLI, OPEN, "\x50\x02\x00\x00", PUBREC_PACKET_ID_ZERO),
        R(SRV, OPEN, "\x62\x02\x00\x00", PUBREL_PACKET_ID_ZERO),
        R(SRV, OPEN, "\x70\x02\x00\x00", PUBCOMP_PACKET_ID_ZERO),
        R(CLI, OPEN, "\xb0\x02\x00\x00", UNSUBACK_PACKET_ID_ZERO),
        R(SRV, FRESH, "\x10\x02\x00\x04", CONNECT_TRUNCATED),
        R(SRV, FRESH, "\x10\x00", CONNECT_TRUNCATED),
        R(SRV, FRESH, "\x10\x0b\x00\x04MQTT\x04\x02\x00\x3c\x00", CONNECT_TRUNCATED),
        R(SRV, FRESH, CONN("\x0e", "\x82", "\x00\x02u"), CONNECT_TRUNCATED),
        R(SRV, FRESH, CONN("\x0d", "\x02", "\x00"), CONNECT_TRAILING),
        R(SRV, FRESH, "\x10\x0e\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x00", CONNECT_PROTOCOL_NAME),
        R(SRV, FRESH, "\x10\x0c\x00\x04mqtt\x04\x02\x00\x3c\x00\x00", CONNECT_PROTOCOL_NAME),
        R(SRV, FRESH, "\x10\x0c\x00\x04MQTT\x05\x02\x00\x3c\x00\x00", CONNECT_PROTOCOL_LEVEL),
        R(SRV, FRESH, "\x10\x0c\x00\x04MQTT\x03\x02\x00\x3c\x00\x00", CONNECT_PROTOCOL_LEVEL),
        R(SRV, FRESH, CONN("\x0c", "\x03", ""), CONNECT_RESERVED_FLAG),
        R(SRV, FRESH, CONN("\x0c", "\x1e", ""), CONNECT_WILL_QOS3),
        R(SRV, FRESH, CONN("\x0c", "\x0a", ""), CONNECT_WILL_QOS_WITHOUT_WILL),
        R(SRV, FRESH, CONN("\x0c", "\x22", ""), CONNECT_WILL_RETAIN_WITHOUT_WILL),
        R(SRV, FRESH, CONN("\x0c", "\x42", ""), CONNECT_PASSWORD_WITHOUT_USERNAME),
        R(SRV, FRESH, "\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01\xff", CONNECT_CLIENT_ID_UTF8),
        R(SRV, FRESH, "\x10\x0e\x00\x04MQTT\x04\x02\x00\x3c\x00\x02\xc0\x80",
          CONNECT_CLIENT_ID_UTF8),
        R(SRV, FRESH, CONN("\x13", "\x06", "\x00\x03\xed\xa0\x80\x00\x00"),
          CONNECT_WILL_TOPIC_UTF8),
        R(SRV, FRESH, CONN("\x10", "\x06", "\x00\x00\x00\x00"), CONNECT_WILL_TOPIC_EMPTY),
        R(SRV, FRESH,
          CONN("\x13", "\x06",
               "\x00\x03"
               "a/#\x00\x00"),
          CONNECT_WILL_TOPIC_WILDCARD),
        R(SRV, FRESH, CONN("\x0f", "\x82", "\x00\x01\x00"), CONNECT_USERNAME_UTF8),
        R(CLI, FRESH, "\x20\x02\x02\x00", CONNACK_ACK_FLAGS),
        R(CLI, FRESH, "\x20\x02\x80\x00", CONNACK_ACK_FLAGS),
        R(CLI, FRESH, "\x20\x02\x00\x06", CONNACK_RETURN_CODE),
        R(CLI, FRESH, "\x20\x02\x01\x05", CONNACK_SESSION_PRESENT),
        R(SRV, OPEN, "\x36", PUBLISH_QOS3),
        R(CLI, OPEN, "\x3f", PUBLISH_QOS3),
        R(SRV, OPEN, "\x38", PUBLISH_DUP_QOS0),
        R(SRV, OPEN, "\x30\x01\x00", PUBLISH_TRUNCATED),
        R(SRV, OPEN, "\x30\x00", PUBLISH_TRUNCATED),
        R(SRV, OPEN,
          "\x30\x04\x00\x05"
          "ab",
          PUBLISH_TRUNCATED),
        R(SRV, OPEN,
          "\x32\x04\x00\x01"
          "a\x01",
          PUBLISH_TRUNCATED),
        R(SRV, OPEN, "\x30\x03\x00\x01\x80", PUBLISH_TOPIC_UTF8),
        R(SRV, OPEN, "\x30\x03\x00\x01\x00", PUBLISH_TOPIC_UTF8),
        R(SRV, OPEN, "\x30\x02\x00\x00", PUBLISH_TOPIC_EMPTY),
        R(SRV, OPEN,
          "\x30\x05\x00\x03"
          "a/+",
          PUBLISH_TOPIC_WILDCARD),
        R(CLI, OPEN,
          "\x30\x05\x00\x03"
          "a#b",
          PUBLISH_TOPIC_WILDCARD),
        R(SRV, OPEN,
          "\x32\x05\x00\x01"
          "a\x00\x00",
          PUBLISH_PACKET_ID_ZERO),
        R(SRV, OPEN,
          "\x3c\x07\x00\x01"
          "a\x00\x00xy",
          PUBLISH_PACKET_ID_ZERO),
        R(SRV, OPEN, "\x82\x01\x00", SUBSCRIBE_TRUNCATED),
        R(SRV, OPEN,
          "\x82\x05\x00\x01\x00\x01"
          "a",
          SUBSCRIBE_TRUNCATED),
        R(SRV, OPEN,
          "\x82\x05\x00\x01\x00\x05"
          "a",
          SUBSCRIBE_TRUNCATED),
        R(SRV, OPEN,
          "\x82\x06\x00\x00\x00\x01"
          "a\x00",
          SUBSCRIBE_PACKET_ID_ZERO),
        R(SRV, OPEN, "\x82\x02\x00\x01", SUBSCRIBE_NO_FILTERS),
        R(SRV, OPEN, "\x82\x06\x00\x01\x00\x01\xfe\x00", SUBSCRIBE_FILTER_UTF8),
        R(SRV, OPEN, "\x82\x05\x00\x01\x00\x00\x00", SUBSCRIBE_FILTER_EMPTY),
        R(SRV, OPEN,
          "\x82\x07\x00\x01\x00\x02"
          "a+\x00",
          SUBSCRIBE_FILTER_PLUS),
        R(SRV, OPEN, "\x82\x08\x00\x01\x00\x03#/a\x00", SUBSCRIBE_FILTER_HASH),
        R(SRV, OPEN,
          "\x82\x06\x00\x01\x00\x01"
          "a\x04",
          SUBSCRIBE_QOS_RESERVED),
        R(SRV, OPEN,
          "\x82\x06\x00\x01\x00\x01"
          "a\x81",
          SUBSCRIBE_QOS_RESERVED),
        R(SRV, OPEN,
          "\x82\x06\x00\x01\x00\x01"
          "a\x03",
          SUBSCRIBE_QOS3),
        R(SRV, OPEN,
          "\x82\x0a\x00\x01\x00\x01"
          "a\x00\x00\x01"
          "b\x03",
          SUBSCRIBE_QOS3),
        R(CLI, OPEN, "\x90\x01\x00", SUBACK_TRUNCATED),
        R(CLI, OPEN, "\x90\x03\x00\x00\x00", SUBACK_PACKET_ID_ZERO),
        R(CLI, OPEN, "\x90\x02\x00\x01", SUBACK_NO_CODES),
        R(CLI, OPEN, "\x90\x03\x00\x01\x03", SUBACK_RETURN_CODE),
        R(CLI, OPEN, "\x90\x04\x00\x01\x80\x81", SUBACK_RETURN_CODE),
        R(SRV, OPEN, "\xa2\x04\x00\x01\x00\x05", UNSUBSCRIBE_TRUNCATED),
        R(SRV, OPEN, "\xa2\x00", UNSUBSCRIBE_TRUNCATED),
        R(SRV, OPEN,
          "\xa2\x05\x00\x00\x00\x01"
          "a",
          UNSUBSCRIBE_PACKET_ID_ZERO),
        R(SRV, OPEN, "\xa2\x02\x00\x01", UNSUBSCRIBE_NO_FILTERS),
        R(SRV, OPEN, "\xa2\x05\x00\x01\x00\x01\xc1", UNSUBSCRIBE_FILTER_UTF8),
        R(SRV, OPEN, "\xa2\x04\x00\x01\x00\x00", UNSUBSCRIBE_FILTER_EMPTY),
        R(SRV, OPEN, "\xa2\x06\x00\x01\x00\x02+a", UNSUBSCRIBE_FILTER_PLUS),
        R(SRV, OPEN,
          "\xa2\x06\x00\x01\x00\x02"
          "a#",
          UNSUBSCRIBE_FILTER_HASH),
};

/* run decodes the case's bytes (after the opening packet when asked), whole
 * or one byte per call, and returns the first status other than OK/EAGAIN. */
static perch_err run(const struct reason_case *c, bool bytewise, perch_mqtt_reason *why)
{
	perch_mqtt_decoder d;
	perch_mqtt_packet pkt;
	size_t used;
	perch_err err = PERCH_EAGAIN;
	perch_mqtt_decoder_init(&d, c->side, 1 << 20, 0);
	if (c->open) {
		const char *o = c->side == SRV ? CONNECT_MIN : CONNACK_OK;
		size_t ol = c->side == SRV ? sizeof CONNECT_MIN - 1 : sizeof CONNACK_OK - 1;
		assert_int_equal(perch_mqtt_decode(&d, (const uint8_t *)o, ol, &used, &pkt),
		                 PERCH_OK);
	}
	const uint8_t *p = (const uint8_t *)c->bytes;
	size_t left = c->len;
	while (left > 0) {
		size_t n = bytewise ? 1 : left;
		err = perch_mqtt_decode(&d, p, n, &used, &pkt);
		if (err != PERCH_OK && err != PERCH_EAGAIN)
			break;
		p += used;
		left -= used;
	}
	*why = perch_mqtt_decoder_reason(&d);
	/* errors are sticky */
	if (err != PERCH_OK && err != PERCH_EAGAIN)
		assert_int_equal(perch_mqtt_decode(&d, (const uint8_t *)CONNACK_OK, 4, &used, &pkt),
		                 err);
	perch_mqtt_decoder_fini(&d);
	return err;
}

static void test_each_reason(void **state)
{
	(void)state;
	size_t b0 = perch_alloc_bytes();
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		const struct reason_case *c = &cases[i];
		for (int bytewise = 0; bytewise < 2; bytewise++) {
			perch_mqtt_reason why;
			perch_err err = run(c, bytewise, &why);
			if (why != c->want || err != perch_mqtt_reason_err(c->want))
				fail_msg("case %zu (%s, %s): got \"%s\" (%s), want \"%s\"", i,
				         c->side == SRV ? "server" : "client",
				         bytewise ? "bytewise" : "whole",
				         perch_mqtt_reason_str(why), perch_strerror(err),
				         perch_mqtt_reason_str(c->want));
		}
	}
	assert_int_equal(perch_alloc_bytes(), b0);
}

/* Every reason of the enum has at least one case above, and a text. */
static void test_coverage(void **state)
{
	(void)state;
	bool seen[PERCH_MQTT_R_COUNT] = {false};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
		seen[cases[i].want] = true;
	for (int r = 1; r < PERCH_MQTT_R_COUNT; r++) {
		if (!seen[r])
			fail_msg("no case for reason %d \"%s\"", r,
			         perch_mqtt_reason_str((perch_mqtt_reason)r));
		assert_string_not_equal(perch_mqtt_reason_str((perch_mqtt_reason)r),
		                        "unknown MQTT reason");
	}
	assert_string_equal(perch_mqtt_reason_str(PERCH_MQTT_R_PUBLISH_TOPIC_WILDCARD),
	                    "PUBLISH topic name contains a wildcard");
	assert_string_equal(perch_mqtt_reason_str(PERCH_MQTT_R_COUNT), "unknown MQTT reason");
	assert_int_equal(perch_mqtt_reason_err(PERCH_MQTT_R_OK), PERCH_OK);
}

/* Packets each side may receive are accepted: the direction rules do not
 * over-reach (DISCONNECT and PUBLISH are accepted on both sides). */
static void test_direction_accepts(void **state)
{
	(void)state;
	static const char srv_ok[] = "\x30\x03\x00\x01"
	                             "a"
	                             "\x40\x02\x00\x01"
	                             "\x62\x02\x00\x01"
	                             "\x82\x06\x00\x01\x00\x01"
	                             "a\x01"
	                             "\xa2\x05\x00\x01\x00\x01"
	                             "a"
	                             "\xc0\x00"
	                             "\xe0\x00";
	static const char cli_ok[] = "\x30\x03\x00\x01"
	                             "a"
	                             "\x90\x03\x00\x01\x80"
	                             "\xb0\x02\x00\x01"
	                             "\xd0\x00"
	                             "\xe0\x00";
	const struct {
		perch_mqtt_side side;
		const char *s;
		size_t len, count;
	} runs[] = {{SRV, srv_ok, sizeof srv_ok - 1, 7}, {CLI, cli_ok, sizeof cli_ok - 1, 5}};
	for (size_t k = 0; k < 2; k++) {
		perch_mqtt_decoder d;
		perch_mqtt_packet pkt;
		size_t used, n = 0;
		perch_mqtt_decoder_init(&d, runs[k].side, 0, 0);
		const char *o = runs[k].side == SRV ? CONNECT_MIN : CONNACK_OK;
		size_t ol = runs[k].side == SRV ? sizeof CONNECT_MIN - 1 : sizeof CONNACK_OK - 1;
		assert_int_equal(perch_mqtt_decode(&d, (const uint8_t *)o, ol, &used, &pkt),
		                 PERCH_OK);
		const uint8_t *p = (const uint8_t *)runs[k].s;
		size_t left = runs[k].len;
		while (left > 0) {
			assert_int_equal(perch_mqtt_decode(&d, p, left, &used, &pkt), PERCH_OK);
			p += used;
			left -= used;
			n++;
		}
		assert_int_equal(n, runs[k].count);
		perch_mqtt_decoder_fini(&d);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_each_reason),
	        cmocka_unit_test(test_coverage),
	        cmocka_unit_test(test_direction_accepts),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
