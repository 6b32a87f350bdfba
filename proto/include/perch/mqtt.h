/*
 * mqtt.h — the MQTT 3.1.1 packet codec: a streaming decoder and an encoder
 * for all fourteen control packets, with a precise reason for every packet
 * the decoder rejects.
 *
 * Pure: no I/O, no logging, no globals. Every allocation goes through
 * perch/alloc.h, and the decoder allocates only to gather a packet that
 * arrives split across calls, once the packet's size is known and has passed
 * the limits. Nothing here is thread-safe per object: one decoder belongs to
 * one connection and is used by one thread at a time; different decoders may
 * be used from different threads.
 *
 * Decoding, in short:
 *
 *	perch_mqtt_decoder d;
 *	perch_mqtt_decoder_init(&d, PERCH_MQTT_SERVER, max_packet, 0);
 *	while (len > 0) {
 *		perch_mqtt_packet pkt;
 *		size_t used;
 *		perch_err err = perch_mqtt_decode(&d, buf, len, &used, &pkt);
 *		buf += used, len -= used;
 *		if (err == PERCH_EAGAIN) break;    // all consumed; wait for more
 *		if (err != PERCH_OK) close(perch_mqtt_reason_str(perch_mqtt_decoder_reason(&d)));
 *		handle(&pkt);                      // slices valid until the next decode call
 *	}
 *	perch_mqtt_decoder_fini(&d);
 *
 * Encoding: perch_mqtt_encoded_size, then perch_mqtt_encode into a buffer of
 * that size; for fan-out of one PUBLISH to many subscribers,
 * perch_mqtt_encode_publish_header writes only the header (it differs per
 * subscriber: QoS, packet id, DUP, RETAIN) and the shared payload follows it.
 */
#ifndef PERCH_MQTT_H
#define PERCH_MQTT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/slice.h"

/* Limits. Sizes count the whole packet: fixed header, variable header and payload. */
#define PERCH_MQTT_MAX_REMAINING       268435455u /* largest remaining length (4 bytes) */
#define PERCH_MQTT_MAX_PACKET          (PERCH_MQTT_MAX_REMAINING + 5u)
#define PERCH_MQTT_MAX_PACKET_DEFAULT  1048576u /* decoder default */
#define PERCH_MQTT_MAX_CONNECT_DEFAULT 65536u   /* decoder default for CONNECT */
/* Largest header perch_mqtt_encode_publish_header can write. */
#define PERCH_MQTT_PUBLISH_HEADER_MAX (1u + 4u + 2u + 65535u + 2u)

/* Control packet types, numbered as on the wire (0 and 15 are reserved). */
typedef enum perch_mqtt_type {
	PERCH_MQTT_CONNECT = 1,
	PERCH_MQTT_CONNACK = 2,
	PERCH_MQTT_PUBLISH = 3,
	PERCH_MQTT_PUBACK = 4,
	PERCH_MQTT_PUBREC = 5,
	PERCH_MQTT_PUBREL = 6,
	PERCH_MQTT_PUBCOMP = 7,
	PERCH_MQTT_SUBSCRIBE = 8,
	PERCH_MQTT_SUBACK = 9,
	PERCH_MQTT_UNSUBSCRIBE = 10,
	PERCH_MQTT_UNSUBACK = 11,
	PERCH_MQTT_PINGREQ = 12,
	PERCH_MQTT_PINGRESP = 13,
	PERCH_MQTT_DISCONNECT = 14,
} perch_mqtt_type;

/* Which end of the connection a decoder sits at. A SERVER decoder reads what
 * clients send, and rejects CONNACK, SUBACK, UNSUBACK and PINGRESP; a CLIENT
 * decoder reads what servers send, and rejects CONNECT, SUBSCRIBE,
 * UNSUBSCRIBE and PINGREQ. */
typedef enum perch_mqtt_side {
	PERCH_MQTT_SERVER = 0,
	PERCH_MQTT_CLIENT = 1,
} perch_mqtt_side;

/* CONNACK return codes (section 3.2.2.3). */
typedef enum perch_mqtt_connack_code {
	PERCH_MQTT_CONNACK_ACCEPTED = 0,
	PERCH_MQTT_CONNACK_BAD_PROTOCOL = 1, /* unacceptable protocol level */
	PERCH_MQTT_CONNACK_ID_REJECTED = 2,
	PERCH_MQTT_CONNACK_UNAVAILABLE = 3,
	PERCH_MQTT_CONNACK_BAD_LOGIN = 4, /* bad user name or password */
	PERCH_MQTT_CONNACK_NOT_AUTHORIZED = 5,
} perch_mqtt_connack_code;

#define PERCH_MQTT_SUBACK_FAILURE 0x80 /* SUBACK return code for a refused filter */

/*
 * Why the decoder rejected its input. Each rejection has exactly one reason;
 * perch_mqtt_reason_str gives its text. TOO_BIG and CONNECT_TOO_BIG come with
 * PERCH_ETOOBIG, all others with PERCH_EPROTO. On CONNECT_PROTOCOL_LEVEL a
 * server should answer CONNACK 0x01 (PERCH_MQTT_CONNACK_BAD_PROTOCOL) before
 * closing (MQTT-3.1.2-2); on any other reason it just closes.
 */
typedef enum perch_mqtt_reason {
	PERCH_MQTT_R_OK = 0,
	/* fixed header, direction and sequence */
	PERCH_MQTT_R_RESERVED_TYPE,
	PERCH_MQTT_R_NOT_FROM_CLIENT,
	PERCH_MQTT_R_NOT_FROM_SERVER,
	PERCH_MQTT_R_FIRST_NOT_CONNECT,
	PERCH_MQTT_R_SECOND_CONNECT,
	PERCH_MQTT_R_FIRST_NOT_CONNACK,
	PERCH_MQTT_R_SECOND_CONNACK,
	PERCH_MQTT_R_REMAINING_LENGTH,
	PERCH_MQTT_R_TOO_BIG,
	PERCH_MQTT_R_CONNECT_TOO_BIG,
	/* reserved fixed-header flags, one per type (PUBLISH has its own rules) */
	PERCH_MQTT_R_CONNECT_FLAGS,
	PERCH_MQTT_R_CONNACK_FLAGS,
	PERCH_MQTT_R_PUBACK_FLAGS,
	PERCH_MQTT_R_PUBREC_FLAGS,
	PERCH_MQTT_R_PUBREL_FLAGS,
	PERCH_MQTT_R_PUBCOMP_FLAGS,
	PERCH_MQTT_R_SUBSCRIBE_FLAGS,
	PERCH_MQTT_R_SUBACK_FLAGS,
	PERCH_MQTT_R_UNSUBSCRIBE_FLAGS,
	PERCH_MQTT_R_UNSUBACK_FLAGS,
	PERCH_MQTT_R_PINGREQ_FLAGS,
	PERCH_MQTT_R_PINGRESP_FLAGS,
	PERCH_MQTT_R_DISCONNECT_FLAGS,
	/* fixed remaining lengths */
	PERCH_MQTT_R_CONNACK_LENGTH,
	PERCH_MQTT_R_PUBACK_LENGTH,
	PERCH_MQTT_R_PUBREC_LENGTH,
	PERCH_MQTT_R_PUBREL_LENGTH,
	PERCH_MQTT_R_PUBCOMP_LENGTH,
	PERCH_MQTT_R_UNSUBACK_LENGTH,
	PERCH_MQTT_R_PINGREQ_LENGTH,
	PERCH_MQTT_R_PINGRESP_LENGTH,
	PERCH_MQTT_R_DISCONNECT_LENGTH,
	/* packet identifiers that must not be zero */
	PERCH_MQTT_R_PUBACK_PACKET_ID_ZERO,
	PERCH_MQTT_R_PUBREC_PACKET_ID_ZERO,
	PERCH_MQTT_R_PUBREL_PACKET_ID_ZERO,
	PERCH_MQTT_R_PUBCOMP_PACKET_ID_ZERO,
	PERCH_MQTT_R_UNSUBACK_PACKET_ID_ZERO,
	/* CONNECT */
	PERCH_MQTT_R_CONNECT_TRUNCATED,
	PERCH_MQTT_R_CONNECT_TRAILING,
	PERCH_MQTT_R_CONNECT_PROTOCOL_NAME,
	PERCH_MQTT_R_CONNECT_PROTOCOL_LEVEL,
	PERCH_MQTT_R_CONNECT_RESERVED_FLAG,
	PERCH_MQTT_R_CONNECT_WILL_QOS3,
	PERCH_MQTT_R_CONNECT_WILL_QOS_WITHOUT_WILL,
	PERCH_MQTT_R_CONNECT_WILL_RETAIN_WITHOUT_WILL,
	PERCH_MQTT_R_CONNECT_PASSWORD_WITHOUT_USERNAME,
	PERCH_MQTT_R_CONNECT_CLIENT_ID_UTF8,
	PERCH_MQTT_R_CONNECT_WILL_TOPIC_UTF8,
	PERCH_MQTT_R_CONNECT_WILL_TOPIC_EMPTY,
	PERCH_MQTT_R_CONNECT_WILL_TOPIC_WILDCARD,
	PERCH_MQTT_R_CONNECT_USERNAME_UTF8,
	/* CONNACK */
	PERCH_MQTT_R_CONNACK_ACK_FLAGS,
	PERCH_MQTT_R_CONNACK_RETURN_CODE,
	PERCH_MQTT_R_CONNACK_SESSION_PRESENT,
	/* PUBLISH */
	PERCH_MQTT_R_PUBLISH_QOS3,
	PERCH_MQTT_R_PUBLISH_DUP_QOS0,
	PERCH_MQTT_R_PUBLISH_TRUNCATED,
	PERCH_MQTT_R_PUBLISH_TOPIC_UTF8,
	PERCH_MQTT_R_PUBLISH_TOPIC_EMPTY,
	PERCH_MQTT_R_PUBLISH_TOPIC_WILDCARD,
	PERCH_MQTT_R_PUBLISH_PACKET_ID_ZERO,
	/* SUBSCRIBE */
	PERCH_MQTT_R_SUBSCRIBE_TRUNCATED,
	PERCH_MQTT_R_SUBSCRIBE_PACKET_ID_ZERO,
	PERCH_MQTT_R_SUBSCRIBE_NO_FILTERS,
	PERCH_MQTT_R_SUBSCRIBE_FILTER_UTF8,
	PERCH_MQTT_R_SUBSCRIBE_FILTER_EMPTY,
	PERCH_MQTT_R_SUBSCRIBE_FILTER_PLUS,
	PERCH_MQTT_R_SUBSCRIBE_FILTER_HASH,
	PERCH_MQTT_R_SUBSCRIBE_QOS_RESERVED,
	PERCH_MQTT_R_SUBSCRIBE_QOS3,
	/* SUBACK */
	PERCH_MQTT_R_SUBACK_TRUNCATED,
	PERCH_MQTT_R_SUBACK_PACKET_ID_ZERO,
	PERCH_MQTT_R_SUBACK_NO_CODES,
	PERCH_MQTT_R_SUBACK_RETURN_CODE,
	/* UNSUBSCRIBE */
	PERCH_MQTT_R_UNSUBSCRIBE_TRUNCATED,
	PERCH_MQTT_R_UNSUBSCRIBE_PACKET_ID_ZERO,
	PERCH_MQTT_R_UNSUBSCRIBE_NO_FILTERS,
	PERCH_MQTT_R_UNSUBSCRIBE_FILTER_UTF8,
	PERCH_MQTT_R_UNSUBSCRIBE_FILTER_EMPTY,
	PERCH_MQTT_R_UNSUBSCRIBE_FILTER_PLUS,
	PERCH_MQTT_R_UNSUBSCRIBE_FILTER_HASH,
	PERCH_MQTT_R_COUNT /* not a reason: the number of values */
} perch_mqtt_reason;

/* CONNECT. Slices of absent fields are empty; will_qos/will_retain are 0
 * when has_will is false. The protocol is always "MQTT", level 4. */
typedef struct perch_mqtt_connect {
	perch_slice client_id;    /* UTF-8, may be empty */
	perch_slice will_topic;   /* valid topic name when has_will */
	perch_slice will_payload; /* binary, <= 65535 bytes */
	perch_slice username;     /* UTF-8, when has_username */
	perch_slice password;     /* binary, when has_password (implies has_username) */
	uint16_t keep_alive;      /* seconds, 0: none */
	uint8_t will_qos;         /* 0..2 */
	bool clean_session;
	bool has_will;
	bool will_retain;
	bool has_username;
	bool has_password;
} perch_mqtt_connect;

typedef struct perch_mqtt_connack {
	bool session_present; /* false unless return_code is 0 */
	uint8_t return_code;  /* a perch_mqtt_connack_code, 0..5 */
} perch_mqtt_connack;

typedef struct perch_mqtt_publish {
	perch_slice topic;   /* valid topic name */
	perch_slice payload; /* binary, may be empty */
	uint16_t packet_id;  /* non-zero when qos > 0; 0 (and absent) when qos == 0 */
	uint8_t qos;         /* 0..2 */
	bool dup;            /* only with qos > 0 */
	bool retain;
} perch_mqtt_publish;

/* PUBACK, PUBREC, PUBREL, PUBCOMP and UNSUBACK: just a packet id. */
typedef struct perch_mqtt_ack {
	uint16_t packet_id; /* non-zero */
} perch_mqtt_ack;

/* One entry of a SUBSCRIBE (filter and requested QoS) or of an UNSUBSCRIBE
 * (filter only; qos is 0). */
typedef struct perch_mqtt_filter {
	perch_slice filter;
	uint8_t qos;
} perch_mqtt_filter;

/*
 * SUBSCRIBE and UNSUBSCRIBE. The list of filters has two forms, so that the
 * decoder needs no allocation however many filters a packet carries:
 * - to encode, set entries to an array of count filters (the caller keeps it);
 * - the decoder sets entries to NULL, count to the number of filters, and raw
 *   to the validated encoded list (after the packet id) in the packet body.
 * Walk either form with perch_mqtt_filter_iter. The encoder uses entries when
 * not NULL, otherwise copies raw (which must then be a valid encoded list).
 */
typedef struct perch_mqtt_subscribe {
	uint16_t packet_id;               /* non-zero */
	size_t count;                     /* >= 1 */
	const perch_mqtt_filter *entries; /* see above */
	perch_slice raw;                  /* see above */
} perch_mqtt_subscribe;

typedef struct perch_mqtt_suback {
	uint16_t packet_id;   /* non-zero */
	const uint8_t *codes; /* count return codes: 0, 1, 2 or 0x80 */
	size_t count;         /* >= 1 */
} perch_mqtt_suback;

/* One packet. type selects the union member: connect, connack, publish,
 * ack (PUBACK, PUBREC, PUBREL, PUBCOMP, UNSUBACK), subscribe (SUBSCRIBE and
 * UNSUBSCRIBE), suback; PINGREQ, PINGRESP and DISCONNECT use none. */
typedef struct perch_mqtt_packet {
	perch_mqtt_type type;
	union {
		perch_mqtt_connect connect;
		perch_mqtt_connack connack;
		perch_mqtt_publish publish;
		perch_mqtt_ack ack;
		perch_mqtt_subscribe subscribe;
		perch_mqtt_suback suback;
	};
} perch_mqtt_packet;

/* Walks the filters of a SUBSCRIBE or UNSUBSCRIBE in either form. */
typedef struct perch_mqtt_filter_iter {
	const perch_mqtt_subscribe *sub; /* the packet walked */
	bool with_qos;                   /* SUBSCRIBE (a QoS byte after each filter) */
	size_t index;                    /* entries walked so far */
	size_t off;                      /* read offset in sub->raw */
} perch_mqtt_filter_iter;

/* perch_mqtt_filter_iter_init starts a walk over the filters of pkt, which
 * must be a SUBSCRIBE or an UNSUBSCRIBE and outlive the walk. */
void perch_mqtt_filter_iter_init(perch_mqtt_filter_iter *it, const perch_mqtt_packet *pkt);

/* perch_mqtt_filter_next stores the next filter in *out (its slice borrows
 * from the packet) and returns true, or returns false at the end. */
bool perch_mqtt_filter_next(perch_mqtt_filter_iter *it, perch_mqtt_filter *out);

/*
 * The streaming decoder. Embed it in a connection; its fields are private.
 * Safe to fini when zeroed (after memset 0) or half-used.
 */
typedef struct perch_mqtt_decoder {
	perch_mqtt_side side;     /* which packets are acceptable */
	uint32_t max_packet;      /* largest whole packet accepted, bytes */
	uint32_t max_connect;     /* largest CONNECT accepted, bytes (<= max_packet) */
	perch_err err;            /* sticky: PERCH_OK until the first failure */
	perch_mqtt_reason reason; /* why err, for PERCH_EPROTO/PERCH_ETOOBIG */
	bool seen_first;          /* a CONNECT (server) or CONNACK (client) was decoded */
	bool in_body;             /* gathering a body (else a fixed header) */
	uint8_t hdr_len;          /* fixed-header bytes in hdr, 0..5 */
	uint8_t hdr[5];           /* the fixed header of a packet split across calls */
	uint32_t body_len;        /* remaining length of the packet being gathered */
	uint32_t body_have;       /* bytes of it in body so far */
	uint8_t *body;            /* owned, body_len bytes while in_body (NULL if 0) */
	uint8_t *spent;           /* owned body of the last packet returned; freed next call */
} perch_mqtt_decoder;

/*
 * perch_mqtt_decoder_init prepares d for one connection on the given side.
 * max_packet is the largest whole packet accepted (0: the default,
 * PERCH_MQTT_MAX_PACKET_DEFAULT; values above PERCH_MQTT_MAX_PACKET are
 * clamped). max_connect is the largest CONNECT accepted on the server side
 * (0: PERCH_MQTT_MAX_CONNECT_DEFAULT; never more than max_packet), so that an
 * unauthenticated client cannot make the server buffer much. Allocates
 * nothing and cannot fail.
 */
void perch_mqtt_decoder_init(perch_mqtt_decoder *d, perch_mqtt_side side, size_t max_packet,
                             size_t max_connect);

/* perch_mqtt_decoder_fini frees what d holds; slices of the last packet
 * become invalid. d may be zeroed or failed; it may be initialised again. */
void perch_mqtt_decoder_fini(perch_mqtt_decoder *d);

/*
 * perch_mqtt_decode reads bytes from in[0..len) and returns at most one
 * packet. *used is set to the bytes consumed; the caller then calls again
 * with the rest (in + *used) until it gets PERCH_EAGAIN.
 *
 * Returns:
 *  PERCH_OK      a packet is in *pkt; *used <= len bytes were consumed.
 *  PERCH_EAGAIN  all len bytes were consumed (*used == len) and kept (only the
 *                bytes of an incomplete packet are copied); no packet yet.
 *  PERCH_EPROTO  the input breaks the protocol; perch_mqtt_decoder_reason
 *                says how. The connection must be closed.
 *  PERCH_ETOOBIG the packet is larger than max_packet (or max_connect), as
 *                known from its fixed header, before anything was allocated.
 *  PERCH_ENOMEM  gathering a split packet needed memory that was refused.
 * Every error is sticky: later calls return it again and consume nothing.
 *
 * Slice lifetime: the slices (and suback codes) in *pkt point either into
 * in — when the whole packet was in this call's input, the common case: no
 * copy — or into a buffer owned by d. Either way they stay valid until the
 * next call of perch_mqtt_decode or perch_mqtt_decoder_fini on d, provided
 * the caller leaves in unchanged until then. Copy what must live longer.
 *
 * The decoder checks syntax and the rules of section 3 that a single packet
 * can break; session semantics (e.g. an empty client id with clean session
 * 0, answered with CONNACK 0x02) are the caller's.
 */
PERCH_MUST_USE perch_err perch_mqtt_decode(perch_mqtt_decoder *d, const uint8_t *in, size_t len,
                                           size_t *used, perch_mqtt_packet *pkt);

/* perch_mqtt_decoder_reason returns why d failed (PERCH_MQTT_R_OK if it
 * has not, or failed only for lack of memory). */
perch_mqtt_reason perch_mqtt_decoder_reason(const perch_mqtt_decoder *d);

/* perch_mqtt_decoder_buffered returns the bytes d holds of a split packet. */
size_t perch_mqtt_decoder_buffered(const perch_mqtt_decoder *d);

/* perch_mqtt_reason_str returns a short static text for r, such as
 * "PUBLISH topic name contains a wildcard" (never NULL). */
const char *perch_mqtt_reason_str(perch_mqtt_reason r);

/* perch_mqtt_reason_err returns the perch_err that comes with r:
 * PERCH_ETOOBIG for the size limits, PERCH_EPROTO otherwise, PERCH_OK for OK. */
perch_err perch_mqtt_reason_err(perch_mqtt_reason r);

/* perch_mqtt_type_str returns the packet type's name, e.g. "PUBLISH". */
const char *perch_mqtt_type_str(perch_mqtt_type t);

/*
 * perch_mqtt_encoded_size computes in *size the bytes perch_mqtt_encode would
 * write for pkt. Returns PERCH_EINVAL for a packet that cannot be encoded (an
 * unknown type, QoS above 2, a string or binary field over 65535 bytes, a
 * packet id 0 where one is required, an empty filter or code list),
 * PERCH_ETOOBIG when the remaining length would exceed
 * PERCH_MQTT_MAX_REMAINING. The encoder checks sizes and ranges only, not
 * UTF-8 or the topic grammar: callers encode what they have validated.
 */
PERCH_MUST_USE perch_err perch_mqtt_encoded_size(const perch_mqtt_packet *pkt, size_t *size);

/*
 * perch_mqtt_encode writes pkt into buf[0..cap) and sets *len to the bytes
 * written. Allocates nothing; the caller keeps pkt and buf. Returns the
 * errors of perch_mqtt_encoded_size, or PERCH_ENOSPC when cap is too small
 * (nothing useful is written then).
 */
PERCH_MUST_USE perch_err perch_mqtt_encode(const perch_mqtt_packet *pkt, uint8_t *buf, size_t cap,
                                           size_t *len);

/*
 * perch_mqtt_encode_publish_header writes the fixed and variable header of
 * the PUBLISH pub — everything but the payload, with a remaining length that
 * counts pub->payload.len — into buf[0..cap), and sets *len. The packet on
 * the wire is these bytes followed by the payload, so a broker can send one
 * shared payload after a per-subscriber header. A buffer of
 * PERCH_MQTT_PUBLISH_HEADER_MAX bytes always suffices. Errors as
 * perch_mqtt_encode.
 */
PERCH_MUST_USE perch_err perch_mqtt_encode_publish_header(const perch_mqtt_publish *pub,
                                                          uint8_t *buf, size_t cap, size_t *len);

/* perch_mqtt_packet_equal tells whether a and b are the same packet: same
 * type and fields, slices compared by content, filter lists in either form. */
bool perch_mqtt_packet_equal(const perch_mqtt_packet *a, const perch_mqtt_packet *b);

#endif /* PERCH_MQTT_H */
