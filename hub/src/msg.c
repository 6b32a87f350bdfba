/*
 * msg.c — the refcounted, single-block hub message (see msg.h).
 */
#include "msg.h"

#include <string.h>

#include "perch/alloc.h"

perch_err hub_msg_new(perch_slice topic, perch_slice payload, perch_slice props, uint8_t qos,
                      bool retain, int64_t created_ms, int64_t expiry_ms, hub_msg **out)
{
	*out = NULL;
	if (topic.len > HUB_MSG_MAX_TOPIC)
		return PERCH_ETOOBIG;
	size_t body = topic.len + 1 + payload.len + props.len;
	if (payload.len > SIZE_MAX / 2 || props.len > SIZE_MAX / 4)
		return PERCH_ETOOBIG;
	hub_msg *m = perch_malloc(sizeof *m + body);
	if (m == NULL)
		return PERCH_ENOMEM;
	memset(m, 0, sizeof *m);
	char *p = (char *)(m + 1);
	if (topic.len > 0)
		memcpy(p, topic.ptr, topic.len);
	p[topic.len] = '\0';
	m->topic = (perch_slice){p, topic.len};
	p += topic.len + 1;
	if (payload.len > 0)
		memcpy(p, payload.ptr, payload.len);
	m->payload = (perch_slice){p, payload.len};
	p += payload.len;
	if (props.len > 0)
		memcpy(p, props.ptr, props.len);
	m->props = (perch_slice){p, props.len};
	m->refs = 1;
	m->qos = qos > 1 ? 1 : qos;
	m->retain = retain;
	m->created_ms = created_ms;
	m->expiry_ms = expiry_ms;
	m->size = topic.len + payload.len + props.len + HUB_MSG_OVERHEAD;
	*out = m;
	return PERCH_OK;
}

hub_msg *hub_msg_ref(hub_msg *m)
{
	if (m != NULL)
		m->refs++;
	return m;
}

void hub_msg_unref(hub_msg *m)
{
	if (m == NULL)
		return;
	if (--m->refs == 0)
		perch_free(m);
}
