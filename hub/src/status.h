/*
 * status.h — perch-hub's status file (hub.status_file, docs/hub.md): a small
 * JSON document saying how the upstream link is doing, for perch-agent's
 * report (and anyone else on the device) without scraping /metrics. It is
 * rewritten atomically (a temporary file in the same directory, then
 * rename) at once when the link goes up or down, and otherwise at most
 * every HUB_STATUS_MIN_INTERVAL_MS and only when a number changed, so an
 * idle device does not write to its flash.
 */
#ifndef HUB_STATUS_H
#define HUB_STATUS_H

#include <stddef.h>
#include <stdint.h>

#include "hub.h"
#include "upstream.h"

#define HUB_STATUS_MIN_INTERVAL_MS 5000 /* between two writes without a state change */
#define HUB_STATUS_MAX_BYTES       4096 /* the whole document */

/*
 * hub_status_json writes the document for the link's stats u, and
 * dropped_oldest (queued $upstream messages dropped to make room,
 * hub.upstream.full_policy drop_oldest), at the wall time now_ms (Unix ms)
 * into out (cap bytes, NUL-terminated) and returns its length, or 0 when it
 * does not fit. Pure; any thread.
 */
size_t hub_status_json(const hub_upstream_stats *u, uint64_t dropped_oldest, int64_t now_ms,
                       char *out, size_t cap);

/* hub_status_tick writes the status file when it is due (see above); nothing
 * when hub.status_file is not set. Loop thread, once per iteration. */
void hub_status_tick(hub *h);

#endif /* HUB_STATUS_H */
