/*
 * mqtt_test.c — unit tests for the MQTT codec: round trips of every packet
 * type, one stream decoded under every split, in-place decoding, the size
 * limits checked before allocation, allocation failure while gathering, and
 * the encoder's own checks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "perch/alloc.h"
#include "perch/mqtt.h"

#define LIT(s) PERCH_SLICE_LIT(s)

static const uint8_t CONNECT_MIN[] = {0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0};
static const uint8_t CONNACK_OK[] = {0x20, 0x02, 0, 0};

static const perch_mqtt_filter sub_filters[] = {
        {LIT("devices/d1/messages/devicebound/#"), 1},
        {LIT("$iothub/methods/POST/#"), 0},
        {LIT("+/+/x"), 2},
};
static const uint8_t suback_codes[] = {0, 1, 2, 0x80};
static uint8_t big_payload[70000];

/* sample fills out[] with packets of every type (and several variants) that
 * side may receive, the first being CONNECT or CONNACK; returns the count. */
static size_t sample(perch_mqtt_side side, perch_mqtt_packet *out)
{
	size_t n = 0;
	perch_mqtt_packet p;
	for (size_t i = 0; i < sizeof big_payload; i++)
		big_payload[i] = (uint8_t)(i * 7 + 3);
	if (side == PERCH_MQTT_SERVER) {
		memset(&p, 0, sizeof p);
		p.type = PERCH_MQTT_CONNECT;
		p.connect = (perch_mqtt_connect){
		        .client_id = LIT("d1/m1"),
		        .will_topic = LIT("devices/d1/gone"),
		        .will_payload = LIT("bye\0bin"),
		        .username = LIT("hub.local/d1/m1/?api-version=2021-04-12"),
		        .password = LIT("SharedAccessSignature sr=x&sig=y&se=1"),
		        .keep_alive = 240,
		        .will_qos = 1,
		        .clean_session = true,
		        .has_will = true,
		        .will_retain = true,
		        .has_username = true,
		        .has_password = true};
		out[n++] = p;
	} else {
		memset(&p, 0, sizeof p);
		p.type = PERCH_MQTT_CONNACK;
		p.connack.session_present = true;
		out[n++] = p;
	}
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_PUBLISH;
	p.publish = (perch_mqtt_publish){.topic = LIT("devices/d1/messages/events/"),
	                                 .payload = LIT("{\"t\":21.5}")};
	out[n++] = p;
	p.publish =
	        (perch_mqtt_publish){.topic = LIT("a"), .qos = 1, .packet_id = 1, .retain = true};
	out[n++] = p;
	p.publish = (perch_mqtt_publish){.topic = LIT("caf\xc3\xa9/\xf0\x9f\x90\xa6"),
	                                 .payload = {(const char *)big_payload, 300},
	                                 .qos = 2,
	                                 .packet_id = 65535,
	                                 .dup = true};
	out[n++] = p;
	p.publish = (perch_mqtt_publish){.topic = LIT("big"),
	                                 .payload = {(const char *)big_payload, sizeof big_payload},
	                                 .qos = 1,
	                                 .packet_id = 7};
	out[n++] = p;
	static const perch_mqtt_type acks[] = {PERCH_MQTT_PUBACK, PERCH_MQTT_PUBREC,
	                                       PERCH_MQTT_PUBREL, PERCH_MQTT_PUBCOMP};
	for (size_t i = 0; i < 4; i++) {
		memset(&p, 0, sizeof p);
		p.type = acks[i];
		p.ack.packet_id = (uint16_t)(0x1234 + i);
		out[n++] = p;
	}
	memset(&p, 0, sizeof p);
	if (side == PERCH_MQTT_SERVER) {
		p.type = PERCH_MQTT_SUBSCRIBE;
		p.subscribe =
		        (perch_mqtt_subscribe){.packet_id = 9, .count = 3, .entries = sub_filters};
		out[n++] = p;
		p.type = PERCH_MQTT_UNSUBSCRIBE;
		p.subscribe =
		        (perch_mqtt_subscribe){.packet_id = 10, .count = 2, .entries = sub_filters};
		out[n++] = p;
		memset(&p, 0, sizeof p);
		p.type = PERCH_MQTT_PINGREQ;
		out[n++] = p;
	} else {
		p.type = PERCH_MQTT_SUBACK;
		p.suback = (perch_mqtt_suback){.packet_id = 9, .codes = suback_codes, .count = 4};
		out[n++] = p;
		memset(&p, 0, sizeof p);
		p.type = PERCH_MQTT_UNSUBACK;
		p.ack.packet_id = 10;
		out[n++] = p;
		memset(&p, 0, sizeof p);
		p.type = PERCH_MQTT_PINGRESP;
		out[n++] = p;
	}
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_DISCONNECT;
	out[n++] = p;
	return n;
}

/* encode_all appends the encoding of pkts[0..n) to a new buffer. */
static uint8_t *encode_all(const perch_mqtt_packet *pkts, size_t n, size_t *len)
{
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		size_t sz;
		assert_int_equal(perch_mqtt_encoded_size(&pkts[i], &sz), PERCH_OK);
		total += sz;
	}
	uint8_t *buf = malloc(total ? total : 1);
	assert_non_null(buf);
	size_t off = 0;
	for (size_t i = 0; i < n; i++) {
		size_t w;
		assert_int_equal(perch_mqtt_encode(&pkts[i], buf + off, total - off, &w), PERCH_OK);
		off += w;
	}
	*len = total;
	return buf;
}

/* The ways a stream can be cut into calls. */
enum split { WHOLE, BYTES, RANDOM, SEVENS };

/*
 * decode_stream decodes in[0..len) cut as asked, re-encoding every packet at
 * once (its slices die at the next call) into out[0..cap); returns the last
 * status (PERCH_EAGAIN when the stream ended cleanly between packets) and the
 * packet count in *npkts.
 */
static perch_err decode_stream(perch_mqtt_side side, const uint8_t *in, size_t len, enum split how,
                               unsigned seed, uint8_t *out, size_t cap, size_t *out_len,
                               size_t *npkts)
{
	perch_mqtt_decoder d;
	perch_mqtt_decoder_init(&d, side, 1 << 20, 0);
	size_t pos = 0, o = 0;
	perch_err err = PERCH_EAGAIN;
	*npkts = 0;
	srand(seed);
	while (pos < len) {
		size_t chunk = how == WHOLE    ? len - pos
		               : how == BYTES  ? 1
		               : how == SEVENS ? 7
		                               : 1 + (size_t)rand() % 600;
		if (chunk > len - pos)
			chunk = len - pos;
		const uint8_t *p = in + pos;
		size_t left = chunk;
		pos += chunk;
		for (;;) {
			perch_mqtt_packet pkt;
			size_t used;
			err = perch_mqtt_decode(&d, p, left, &used, &pkt);
			assert_true(used <= left);
			p += used;
			left -= used;
			if (err == PERCH_EAGAIN) {
				assert_int_equal(left, 0);
				break;
			}
			if (err != PERCH_OK)
				goto done;
			size_t w;
			assert_int_equal(perch_mqtt_encode(&pkt, out + o, cap - o, &w), PERCH_OK);
			o += w;
			(*npkts)++;
			if (left == 0) {
				err = PERCH_EAGAIN;
				break;
			}
		}
	}
done:
	*out_len = o;
	perch_mqtt_decoder_fini(&d);
	return err;
}

/* Round trip: encode each sample, decode it (after the opening packet), and
 * compare field by field. */
static void test_round_trip(void **state)
{
	(void)state;
	for (int s = 0; s < 2; s++) {
		perch_mqtt_side side = (perch_mqtt_side)s;
		perch_mqtt_packet pkts[16];
		size_t n = sample(side, pkts);
		for (size_t i = 0; i < n; i++) {
			size_t len, used;
			uint8_t *buf = encode_all(&pkts[i], 1, &len);
			perch_mqtt_decoder d;
			perch_mqtt_packet got;
			perch_mqtt_decoder_init(&d, side, 1 << 20, 0);
			if (i > 0) { /* open the connection first */
				assert_int_equal(
				        perch_mqtt_decode(
				                &d,
				                pkts[0].type == PERCH_MQTT_CONNECT ? CONNECT_MIN
				                                                   : CONNACK_OK,
				                side == PERCH_MQTT_SERVER ? sizeof CONNECT_MIN
				                                          : sizeof CONNACK_OK,
				                &used, &got),
				        PERCH_OK);
			}
			assert_int_equal(perch_mqtt_decode(&d, buf, len, &used, &got), PERCH_OK);
			assert_int_equal(used, len);
			if (!perch_mqtt_packet_equal(&pkts[i], &got))
				fail_msg("side %d: %s differs after a round trip", s,
				         perch_mqtt_type_str(pkts[i].type));
			perch_mqtt_decoder_fini(&d);
			free(buf);
		}
	}
}

/* The same stream gives the same packets whole, byte by byte, in sevens, and
 * in random cuts; and re-encoding reproduces the stream exactly. */
static void test_splits(void **state)
{
	(void)state;
	for (int s = 0; s < 2; s++) {
		perch_mqtt_side side = (perch_mqtt_side)s;
		perch_mqtt_packet one[16], pkts[16 * 5];
		size_t n1 = sample(side, one), n = 0;
		pkts[n++] = one[0];
		for (int rep = 0; rep < 5; rep++)
			for (size_t i = 1; i < n1 - 1; i++)
				pkts[n++] = one[i];
		pkts[n++] = one[n1 - 1];
		size_t len;
		uint8_t *in = encode_all(pkts, n, &len);
		uint8_t *out = malloc(len);
		assert_non_null(out);
		size_t b0 = perch_alloc_bytes();
		for (int how = WHOLE; how <= SEVENS; how++) {
			for (unsigned seed = 1; seed <= (how == RANDOM ? 20u : 1u); seed++) {
				size_t out_len, got;
				memset(out, 0, len);
				perch_err err = decode_stream(side, in, len, (enum split)how, seed,
				                              out, len, &out_len, &got);
				assert_int_equal(err, PERCH_EAGAIN);
				assert_int_equal(got, n);
				assert_int_equal(out_len, len);
				assert_memory_equal(out, in, len);
				assert_int_equal(perch_alloc_bytes(), b0);
			}
		}
		free(in);
		free(out);
	}
}

/* A packet whole in the input is decoded in place: no allocation, and its
 * slices point into the input. */
static void test_in_place(void **state)
{
	(void)state;
	uint8_t buf[64];
	memcpy(buf, CONNECT_MIN, sizeof CONNECT_MIN);
	perch_mqtt_packet pub = {.type = PERCH_MQTT_PUBLISH};
	pub.publish = (perch_mqtt_publish){.topic = LIT("t/1"), .payload = LIT("hello")};
	size_t w, used;
	assert_int_equal(perch_mqtt_encode(&pub, buf + sizeof CONNECT_MIN,
	                                   sizeof buf - sizeof CONNECT_MIN, &w),
	                 PERCH_OK);
	size_t len = sizeof CONNECT_MIN + w;
	perch_mqtt_decoder d;
	perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, 0, 0);
	size_t blocks = perch_alloc_blocks();
	perch_mqtt_packet got;
	assert_int_equal(perch_mqtt_decode(&d, buf, len, &used, &got), PERCH_OK);
	assert_int_equal(used, sizeof CONNECT_MIN);
	assert_int_equal(got.type, PERCH_MQTT_CONNECT);
	assert_int_equal(perch_mqtt_decode(&d, buf + used, len - used, &used, &got), PERCH_OK);
	assert_int_equal(got.type, PERCH_MQTT_PUBLISH);
	assert_ptr_equal(got.publish.payload.ptr, (const char *)buf + len - 5);
	assert_true(got.publish.topic.ptr > (const char *)buf &&
	            got.publish.topic.ptr < (const char *)buf + len);
	assert_int_equal(perch_alloc_blocks(), blocks);
	assert_int_equal(perch_mqtt_decoder_buffered(&d), 0);
	/* a split packet is gathered: buffered counts it */
	assert_int_equal(perch_mqtt_decode(&d, buf + sizeof CONNECT_MIN, 4, &used, &got),
	                 PERCH_EAGAIN);
	assert_int_equal(perch_mqtt_decoder_buffered(&d), 4);
	perch_mqtt_decoder_fini(&d);
	assert_int_equal(perch_alloc_blocks(), blocks);
}

/* A CONNECT claiming 268 MB is refused from its fixed header: nothing of
 * that size is allocated, even under a tight memory limit. */
static void test_huge_connect(void **state)
{
	(void)state;
	static const uint8_t claim[] = {0x10, 0xff, 0xff, 0xff, 0x7f, 0, 4, 'M', 'Q'};
	size_t b0 = perch_alloc_bytes(), f0 = perch_alloc_failures();
	perch_alloc_reset_peak();
	perch_alloc_set_limit(b0 + 4096);
	for (int bytewise = 0; bytewise < 2; bytewise++) {
		perch_mqtt_decoder d;
		perch_mqtt_packet pkt;
		size_t used;
		perch_err err = PERCH_EAGAIN;
		perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, PERCH_MQTT_MAX_PACKET, 0);
		if (bytewise) {
			for (size_t i = 0; i < sizeof claim && err == PERCH_EAGAIN; i++)
				err = perch_mqtt_decode(&d, claim + i, 1, &used, &pkt);
		} else {
			err = perch_mqtt_decode(&d, claim, sizeof claim, &used, &pkt);
		}
		assert_int_equal(err, PERCH_ETOOBIG);
		assert_int_equal(perch_mqtt_decoder_reason(&d), PERCH_MQTT_R_CONNECT_TOO_BIG);
		assert_int_equal(perch_alloc_bytes(), b0);
		/* sticky */
		assert_int_equal(perch_mqtt_decode(&d, claim, sizeof claim, &used, &pkt),
		                 PERCH_ETOOBIG);
		assert_int_equal(used, 0);
		perch_mqtt_decoder_fini(&d);
	}
	assert_int_equal(perch_alloc_failures(), f0);
	perch_alloc_set_limit(0);
	/* Without a limit either: at no moment was more than a few KiB live. */
	perch_alloc_reset_peak();
	for (size_t cut = 1; cut <= sizeof claim; cut++) {
		perch_mqtt_decoder d;
		perch_mqtt_packet pkt;
		size_t used;
		perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, PERCH_MQTT_MAX_PACKET, 0);
		perch_err err = perch_mqtt_decode(&d, claim, cut, &used, &pkt);
		if (err == PERCH_EAGAIN) {
			assert_int_equal(used, cut);
			err = perch_mqtt_decode(&d, claim + cut, sizeof claim - cut, &used, &pkt);
		}
		assert_int_equal(err, PERCH_ETOOBIG);
		perch_mqtt_decoder_fini(&d);
	}
	assert_true(perch_alloc_peak() <= b0 + 4096);
	assert_int_equal(perch_alloc_bytes(), b0);

	/* The general limit, after CONNECT, also holds before allocating. */
	perch_mqtt_decoder d;
	perch_mqtt_packet pkt;
	size_t used;
	static const uint8_t pub[] = {0x30, 0x81, 0x80, 0x40}; /* 1 MiB + 1 */
	perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, 1 << 20, 0);
	assert_int_equal(perch_mqtt_decode(&d, CONNECT_MIN, sizeof CONNECT_MIN, &used, &pkt),
	                 PERCH_OK);
	assert_int_equal(perch_mqtt_decode(&d, pub, 2, &used, &pkt), PERCH_EAGAIN);
	assert_int_equal(perch_mqtt_decode(&d, pub + 2, 2, &used, &pkt), PERCH_ETOOBIG);
	assert_int_equal(perch_mqtt_decoder_reason(&d), PERCH_MQTT_R_TOO_BIG);
	assert_int_equal(perch_alloc_bytes(), b0);
	perch_mqtt_decoder_fini(&d);

	/* max_connect is honoured exactly: 14 bytes pass a limit of 14, not 13 */
	for (size_t lim = 13; lim <= 14; lim++) {
		perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, 0, lim);
		perch_err want = lim == 14 ? PERCH_OK : PERCH_ETOOBIG;
		assert_int_equal(
		        perch_mqtt_decode(&d, CONNECT_MIN, sizeof CONNECT_MIN, &used, &pkt), want);
		perch_mqtt_decoder_fini(&d);
	}
}

/* Failing each allocation in turn while gathering split packets returns
 * PERCH_ENOMEM, sticks, and leaks nothing. */
static void test_alloc_failure(void **state)
{
	(void)state;
	perch_mqtt_packet pkts[16];
	size_t n = sample(PERCH_MQTT_SERVER, pkts), len;
	uint8_t *in = encode_all(pkts, n, &len);
	uint8_t *out = malloc(len ? len : 1);
	assert_non_null(out);
	size_t b0 = perch_alloc_bytes(), n0 = perch_alloc_blocks();
	int failed_runs = 0;
	for (long k = 0;; k++) {
		size_t out_len, got;
		perch_alloc_fail_after(k);
		size_t f0 = perch_alloc_failures();
		perch_err err = decode_stream(PERCH_MQTT_SERVER, in, len, SEVENS, 0, out, len,
		                              &out_len, &got);
		bool injected = perch_alloc_failures() != f0;
		perch_alloc_fail_after(-1);
		assert_int_equal(perch_alloc_bytes(), b0);
		assert_int_equal(perch_alloc_blocks(), n0);
		if (!injected) {
			assert_int_equal(err, PERCH_EAGAIN);
			assert_int_equal(got, n);
			assert_memory_equal(out, in, len);
			break;
		}
		assert_int_equal(err, PERCH_ENOMEM);
		assert_true(got < n);
		assert_memory_equal(out, in, out_len); /* what came before is intact */
		failed_runs++;
	}
	assert_true(failed_runs >= 3); /* several packets were gathered */
	free(in);
	free(out);
}

/* The remaining length is written in 1 to 4 bytes at the exact boundaries. */
static void test_length_boundaries(void **state)
{
	(void)state;
	static const struct {
		size_t rem, bytes;
	} cases[] = {{0, 1},     {127, 1},     {128, 2},     {16383, 2},
	             {16384, 3}, {2097151, 3}, {2097152, 4}, {268435455, 4}};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		perch_mqtt_packet p = {.type = PERCH_MQTT_PUBLISH};
		size_t rem = cases[i].rem < 3 ? 3 : cases[i].rem; /* topic "a" takes 3 */
		p.publish.topic = LIT("a");
		p.publish.payload = (perch_slice){(const char *)big_payload, rem - 3};
		size_t sz;
		assert_int_equal(perch_mqtt_encoded_size(&p, &sz), PERCH_OK);
		if (cases[i].rem >= 3)
			assert_int_equal(sz, 1 + cases[i].bytes + cases[i].rem);
	}
	perch_mqtt_packet p = {.type = PERCH_MQTT_PUBLISH};
	p.publish.topic = LIT("a");
	p.publish.payload = (perch_slice){(const char *)big_payload, PERCH_MQTT_MAX_REMAINING - 2};
	size_t sz;
	assert_int_equal(perch_mqtt_encoded_size(&p, &sz), PERCH_ETOOBIG);
	uint8_t hdr[8];
	assert_int_equal(perch_mqtt_encode_publish_header(&p.publish, hdr, sizeof hdr, &sz),
	                 PERCH_ETOOBIG);

	/* A 3-byte length decodes, whole and split. */
	size_t plen = 2097152 - 3;
	uint8_t *pay = calloc(1, plen);
	assert_non_null(pay);
	p.publish.payload = (perch_slice){(const char *)pay, plen};
	uint8_t *buf = malloc(sizeof CONNECT_MIN + 2097152 + 5);
	assert_non_null(buf);
	memcpy(buf, CONNECT_MIN, sizeof CONNECT_MIN);
	size_t w;
	assert_int_equal(perch_mqtt_encode(&p, buf + sizeof CONNECT_MIN, 2097152 + 5, &w),
	                 PERCH_OK);
	assert_int_equal(w, 2097152 + 5);
	size_t total = sizeof CONNECT_MIN + w;
	perch_mqtt_decoder d;
	perch_mqtt_packet got;
	size_t used;
	perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, 4u << 20, 0);
	assert_int_equal(perch_mqtt_decode(&d, buf, total, &used, &got), PERCH_OK);
	assert_int_equal(perch_mqtt_decode(&d, buf + used, 1000, &used, &got), PERCH_EAGAIN);
	assert_int_equal(perch_mqtt_decode(&d, buf + sizeof CONNECT_MIN + 1000,
	                                   total - sizeof CONNECT_MIN - 1000, &used, &got),
	                 PERCH_OK);
	assert_true(perch_mqtt_packet_equal(&p, &got));
	perch_mqtt_decoder_fini(&d);
	free(buf);
	free(pay);
}

/* The header-only PUBLISH writer plus the payload is the whole packet. */
static void test_publish_header(void **state)
{
	(void)state;
	perch_mqtt_packet p = {.type = PERCH_MQTT_PUBLISH};
	p.publish = (perch_mqtt_publish){.topic = LIT("devices/d1/modules/m1/inputs/in1/"),
	                                 .payload = {(const char *)big_payload, 20000},
	                                 .qos = 1,
	                                 .packet_id = 42,
	                                 .retain = true};
	uint8_t whole[20100], head[PERCH_MQTT_PUBLISH_HEADER_MAX];
	size_t wl, hl;
	assert_int_equal(perch_mqtt_encode(&p, whole, sizeof whole, &wl), PERCH_OK);
	assert_int_equal(perch_mqtt_encode_publish_header(&p.publish, head, sizeof head, &hl),
	                 PERCH_OK);
	assert_int_equal(hl + 20000, wl);
	assert_memory_equal(head, whole, hl);
	assert_int_equal(perch_mqtt_encode_publish_header(&p.publish, head, hl - 1, &hl),
	                 PERCH_ENOSPC);
}

/* The encoder refuses what it cannot write. */
static void test_encode_errors(void **state)
{
	(void)state;
	uint8_t buf[64];
	size_t w;
	perch_mqtt_packet p;
	memset(&p, 0, sizeof p);
	p.type = (perch_mqtt_type)0;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.type = (perch_mqtt_type)15;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.type = PERCH_MQTT_PUBLISH;
	p.publish = (perch_mqtt_publish){.topic = LIT("a"), .qos = 3, .packet_id = 1};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.publish = (perch_mqtt_publish){.topic = LIT("a"), .qos = 1};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.publish = (perch_mqtt_publish){.topic = LIT("a"), .dup = true};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.publish = (perch_mqtt_publish){.topic = {(const char *)big_payload, 65536}};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.publish = (perch_mqtt_publish){.topic = LIT("a"), .payload = LIT("0123456789")};
	assert_int_equal(perch_mqtt_encode(&p, buf, 14, &w), PERCH_ENOSPC);
	assert_int_equal(perch_mqtt_encode(&p, buf, 15, &w), PERCH_OK);
	assert_int_equal(w, 15);
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_PUBACK;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.type = PERCH_MQTT_CONNACK;
	p.connack.return_code = 6;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.connack = (perch_mqtt_connack){.session_present = true, .return_code = 5};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_CONNECT;
	p.connect.has_password = true;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.connect = (perch_mqtt_connect){.has_will = true, .will_qos = 3, .will_topic = LIT("a")};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_SUBSCRIBE;
	p.subscribe = (perch_mqtt_subscribe){.packet_id = 1, .count = 0, .entries = sub_filters};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.subscribe = (perch_mqtt_subscribe){.packet_id = 0, .count = 1, .entries = sub_filters};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	static const perch_mqtt_filter q3[] = {{LIT("a"), 3}};
	p.subscribe = (perch_mqtt_subscribe){.packet_id = 1, .count = 1, .entries = q3};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.type = PERCH_MQTT_UNSUBSCRIBE; /* QoS is not encoded in UNSUBSCRIBE */
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_OK);
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_SUBACK;
	static const uint8_t bad[] = {3};
	p.suback = (perch_mqtt_suback){.packet_id = 1, .codes = bad, .count = 1};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
	p.suback.count = 0;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_EINVAL);
}

/* Fixed encodings checked byte for byte against the spec. */
static void test_known_bytes(void **state)
{
	(void)state;
	uint8_t buf[64];
	size_t w;
	perch_mqtt_packet p;
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_PINGREQ;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_OK);
	assert_int_equal(w, 2);
	assert_memory_equal(buf, "\xc0\x00", 2);
	p.type = PERCH_MQTT_PUBREL;
	p.ack.packet_id = 0x0102;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_OK);
	assert_memory_equal(buf, "\x62\x02\x01\x02", 4);
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_CONNECT;
	p.connect.keep_alive = 60;
	p.connect.clean_session = true;
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_OK);
	assert_int_equal(w, sizeof CONNECT_MIN);
	assert_memory_equal(buf, CONNECT_MIN, sizeof CONNECT_MIN);
	memset(&p, 0, sizeof p);
	p.type = PERCH_MQTT_SUBSCRIBE;
	p.subscribe =
	        (perch_mqtt_subscribe){.packet_id = 10, .count = 1, .entries = sub_filters + 2};
	assert_int_equal(perch_mqtt_encode(&p, buf, sizeof buf, &w), PERCH_OK);
	assert_memory_equal(buf, "\x82\x0a\x00\x0a\x00\x05+/+/x\x02", 12);
	assert_string_equal(perch_mqtt_type_str(PERCH_MQTT_UNSUBACK), "UNSUBACK");
	assert_string_equal(perch_mqtt_type_str((perch_mqtt_type)0), "RESERVED");
}

/* The filter iterator walks both forms and stays in bounds on a bad raw list. */
static void test_filter_iter(void **state)
{
	(void)state;
	perch_mqtt_packet p = {.type = PERCH_MQTT_SUBSCRIBE};
	p.subscribe.packet_id = 1;
	p.subscribe.raw = (perch_slice){"\x00\x01"
	                                "a\x01\x00\x05"
	                                "ab",
	                                8};
	perch_mqtt_filter_iter it;
	perch_mqtt_filter f;
	perch_mqtt_filter_iter_init(&it, &p);
	assert_true(perch_mqtt_filter_next(&it, &f));
	assert_true(perch_slice_eq(f.filter, LIT("a")));
	assert_int_equal(f.qos, 1);
	assert_false(perch_mqtt_filter_next(&it, &f)); /* claims 5 bytes, has 2 */
	p.type = PERCH_MQTT_UNSUBSCRIBE;
	p.subscribe = (perch_mqtt_subscribe){.packet_id = 1, .count = 2, .entries = sub_filters};
	perch_mqtt_filter_iter_init(&it, &p);
	assert_true(perch_mqtt_filter_next(&it, &f));
	assert_int_equal(f.qos, 0);
	assert_true(perch_mqtt_filter_next(&it, &f));
	assert_false(perch_mqtt_filter_next(&it, &f));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_round_trip),     cmocka_unit_test(test_splits),
	        cmocka_unit_test(test_in_place),       cmocka_unit_test(test_huge_connect),
	        cmocka_unit_test(test_alloc_failure),  cmocka_unit_test(test_length_boundaries),
	        cmocka_unit_test(test_publish_header), cmocka_unit_test(test_encode_errors),
	        cmocka_unit_test(test_known_bytes),    cmocka_unit_test(test_filter_iter),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
