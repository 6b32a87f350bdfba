/*
 * mqtt_codec_bench.c — microbenchmark of the MQTT codec: decodes a stream
 * of typical hub traffic (QoS 0 and 1 telemetry PUBLISHes of 64..1024 bytes
 * with their PUBACKs) in 16 KiB reads, as a socket would deliver it, and
 * encodes PUBLISH headers as the fan-out path does; prints packets per
 * second and MB/s for each.
 *
 * Usage: mqtt_codec_bench [seconds-per-case, default 1]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "perch/mqtt.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint8_t *make_stream(size_t payload, size_t *len, size_t *npkts)
{
	static const uint8_t connect[] = {0x10, 0x0c, 0, 4, 'M', 'Q', 'T', 'T', 4, 2, 0, 60, 0, 0};
	static char body[1024];
	memset(body, 'x', sizeof body);
	size_t cap = 4u << 20, off = 0, n = 0;
	uint8_t *buf = malloc(cap);
	if (buf == NULL)
		exit(1);
	memcpy(buf, connect, sizeof connect);
	off = sizeof connect;
	for (uint16_t id = 1; off + 2 * payload + 200 < cap; id++) {
		perch_mqtt_packet p = {.type = PERCH_MQTT_PUBLISH};
		p.publish = (perch_mqtt_publish){
		        .topic = PERCH_SLICE_LIT(
		                "devices/sensor-0042/messages/events/%24.ct=application%2Fjson"),
		        .payload = {body, payload},
		        .qos = (uint8_t)(id & 1),
		        .packet_id = (id & 1) ? id : 0};
		size_t w;
		if (perch_mqtt_encode(&p, buf + off, cap - off, &w) != PERCH_OK)
			exit(1);
		off += w;
		n++;
		perch_mqtt_packet a = {.type = PERCH_MQTT_PUBACK};
		a.ack.packet_id = id;
		if (perch_mqtt_encode(&a, buf + off, cap - off, &w) != PERCH_OK)
			exit(1);
		off += w;
		n++;
		if (id == 65535)
			id = 0;
	}
	*len = off;
	*npkts = n;
	return buf;
}

static void bench_decode(size_t payload, double secs)
{
	size_t len, npkts, total = 0;
	uint8_t *buf = make_stream(payload, &len, &npkts);
	double t0 = now(), t;
	size_t bytes = 0;
	do {
		perch_mqtt_decoder d;
		perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, 0, 0);
		for (size_t pos = 0; pos < len;) {
			size_t chunk = len - pos < 16384 ? len - pos : 16384;
			const uint8_t *p = buf + pos;
			size_t left = chunk;
			pos += chunk;
			while (left > 0) {
				perch_mqtt_packet pkt;
				size_t used;
				perch_err err = perch_mqtt_decode(&d, p, left, &used, &pkt);
				p += used;
				left -= used;
				if (err == PERCH_OK)
					total++;
				else if (err != PERCH_EAGAIN)
					exit(2);
			}
		}
		perch_mqtt_decoder_fini(&d);
		bytes += len;
		t = now() - t0;
	} while (t < secs);
	printf("decode  payload %4zu: %8.2f M packets/s  %7.1f MB/s\n", payload,
	       (double)total / t / 1e6, (double)bytes / t / 1e6);
	free(buf);
}

static void bench_encode_header(double secs)
{
	perch_mqtt_publish p = {
	        .topic = PERCH_SLICE_LIT(
	                "devices/sensor-0042/modules/filter/inputs/input1/%24.ct=x"),
	        .payload = {"x", 1},
	        .qos = 1};
	uint8_t out[256];
	size_t n = 0, w, sink = 0;
	double t0 = now(), t;
	do {
		for (int i = 0; i < 100000; i++) {
			p.packet_id = (uint16_t)(i | 1);
			p.payload.len = 200 + (size_t)(i & 255);
			if (perch_mqtt_encode_publish_header(&p, out, sizeof out, &w) != PERCH_OK)
				exit(3);
			sink += out[w - 1];
		}
		n += 100000;
		t = now() - t0;
	} while (t < secs);
	printf("encode  PUBLISH header:  %8.2f M headers/s (%zu)\n", (double)n / t / 1e6, sink & 1);
}

int main(int argc, char **argv)
{
	double secs = argc > 1 ? strtod(argv[1], NULL) : 1.0;
	if (secs <= 0)
		secs = 1.0;
	bench_decode(64, secs);
	bench_decode(256, secs);
	bench_decode(1024, secs);
	bench_encode_header(secs);
	return 0;
}
