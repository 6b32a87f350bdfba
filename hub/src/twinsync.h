/*
 * twinsync.h — the child side of twins and direct methods over the upstream
 * link (twinsync.c, docs/hub.md "Twins over the link"). upstream.c calls in
 * when the link comes up or goes down, for each $edgehub/... publish from
 * the parent and for the PUBACK of a reported patch; iothub.c after each
 * reported change here. Loop thread only.
 */
#ifndef HUB_TWINSYNC_H
#define HUB_TWINSYNC_H

#include "hub.h"
#include "perch/iothub_topic.h"

typedef struct hub_twinsync hub_twinsync;

/* hub_twinsync_open: h->twinsync, for a hub with an upstream link. */
PERCH_MUST_USE perch_err hub_twinsync_open(hub *h);
/* hub_twinsync_close cancels the method calls from the parent still
 * running here (before the methods close) and frees the state. */
void hub_twinsync_close(hub *h);

/* The link is up (subscribed): every identity's twin is asked for. */
void hub_twinsync_up(hub *h);
/* The identities changed (a deployment, the leaf devices): new ones are
 * asked for. */
void hub_twinsync_identities_changed(hub *h);
/* Once per loop iteration: GETs that failed or went unanswered are asked
 * again (every 10 s, after 30 s). Cheap. */
void hub_twinsync_tick(hub *h);
/* The link is down: what was in flight is asked for again next time. */
void hub_twinsync_down(hub *h);
/* A $edgehub/... publish from the parent (t parsed from its topic). */
void hub_twinsync_publish(hub *h, const perch_iothub_topic *t, perch_slice payload);
/* The parent acknowledged the reported patch in flight. */
void hub_twinsync_acked(hub *h);
/* Identity name's reported properties changed here (no-op without a link). */
void hub_twinsync_reported(hub *h, const char *name);

#endif /* HUB_TWINSYNC_H */
