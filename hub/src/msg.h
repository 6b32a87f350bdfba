/*
 * msg.h — the hub's message: one immutable body, shared by reference.
 *
 * A hub_msg holds everything a PUBLISH carries that outlives the packet:
 * topic, payload, QoS, the retain flag, the IoT Hub property bag (opaque
 * bytes here), the time it was created and the time it expires. Topic,
 * payload and properties live in the same allocation as the struct, so a
 * message is one block. Fan-out is a reference, not a copy: every queue,
 * inflight window and retained slot that holds a message holds one reference,
 * and the last hub_msg_unref frees it.
 *
 * The reference count is not atomic: messages belong to the loop thread. The
 * store's writer thread reads the immutable fields of a message while the
 * batch that names it holds a reference; that reference is dropped on the
 * loop thread when the batch comes back.
 */
#ifndef HUB_MSG_H
#define HUB_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "perch/err.h"
#include "perch/slice.h"

/* Bytes counted for a message beyond its topic, payload and properties: the
 * row and index overhead it costs in the store (a round estimate). */
#define HUB_MSG_OVERHEAD 64

/* Longest topic and property bag the store accepts (MQTT limits topics to
 * 65,535 bytes; the property bag travels in the topic). */
#define HUB_MSG_MAX_TOPIC 65535u

/* Store bookkeeping kept on the message: private to store.c. */
struct hub_msg_store {
	uint64_t ins_gen;   /* batch generation of the pending insert op */
	uint32_t ins_op;    /* index of that op in its batch */
	uint32_t live_refs; /* uncancelled references recorded in batch ins_gen */
	uint8_t state;      /* store.c's enum msg_state */
	bool pinned;        /* held by a retained slot: never elided */
};

typedef struct hub_msg {
	uint32_t refs;           /* references held; freed when it drops to 0 */
	uint8_t qos;             /* 0 or 1 */
	bool retain;             /* the PUBLISH carried RETAIN */
	int64_t id;              /* store row id; 0 until the store assigns one; then fixed */
	int64_t created_ms;      /* Unix time in ms */
	int64_t expiry_ms;       /* Unix time in ms after which it is dropped; 0: never */
	perch_slice topic;       /* into this block, NUL-terminated after len */
	perch_slice payload;     /* into this block */
	perch_slice props;       /* into this block: the IoT Hub property bag, opaque */
	size_t size;             /* topic + payload + props + HUB_MSG_OVERHEAD */
	struct hub_msg_store st; /* store.c only */
} hub_msg;

/*
 * hub_msg_new copies topic, payload and props into a new message with one
 * reference, owned by the caller, and stores it in *out. qos above 1 is
 * stored as 1. Returns PERCH_OK, PERCH_ENOMEM, or PERCH_ETOOBIG (a topic
 * longer than HUB_MSG_MAX_TOPIC). Loop thread.
 */
PERCH_MUST_USE perch_err hub_msg_new(perch_slice topic, perch_slice payload, perch_slice props,
                                     uint8_t qos, bool retain, int64_t created_ms,
                                     int64_t expiry_ms, hub_msg **out);

/* hub_msg_ref adds a reference and returns m (NULL is fine). Loop thread. */
hub_msg *hub_msg_ref(hub_msg *m);

/* hub_msg_unref drops a reference, freeing m at the last (NULL is fine).
 * Loop thread. */
void hub_msg_unref(hub_msg *m);

/* hub_msg_expired says whether m has expired at now_ms. */
static inline bool hub_msg_expired(const hub_msg *m, int64_t now_ms)
{
	return m->expiry_ms != 0 && m->expiry_ms <= now_ms;
}

#endif /* HUB_MSG_H */
