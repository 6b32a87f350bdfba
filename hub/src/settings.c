/*
 * settings.c — perch-hub's settings: the table that drives both the `hub:`
 * section of /etc/perch/config.yaml and the command-line flags. Each row's
 * help text is what `perch-hub --help` and docs/hub.md show.
 */
#include <stddef.h>

#include "hub.h"

static const char *const sync_modes[] = {"full", "normal", "off", NULL};
static const char *const full_policies[] = {"refuse", "drop_oldest", NULL};

#define F(x) offsetof(hub_settings, x)
const perch_cfg_key hub_settings_table[] = {
        {"hub.listen", PERCH_CFG_STRLIST, 0, 32, NULL, F(listen), NULL,
         "listener URL: ws://, wss://, mqtt:// or mqtts://HOST:PORT (repeatable)"},
        {"hub.data_dir", PERCH_CFG_STRING, 1, 1024, "/var/lib/perch/hub", F(data_dir), NULL,
         "directory of the SQLite store"},
        {"hub.allow_anonymous", PERCH_CFG_BOOL, 0, 0, "false", F(allow_anonymous), NULL,
         "accept clients without credentials (off by default: everyone is refused)"},
        {"hub.metrics", PERCH_CFG_STRING, 0, 256, NULL, F(metrics), NULL,
         "HOST:PORT to serve Prometheus metrics at /metrics"},
        {"hub.log_level", PERCH_CFG_STRING, 1, 16, "info", F(log_level), NULL,
         "error, warn, notice, info or debug"},
        {"hub.tls.cert", PERCH_CFG_STRING, 0, 1024, NULL, F(tls_cert), NULL,
         "PEM server certificate for wss:// and mqtts:// listeners"},
        {"hub.tls.key", PERCH_CFG_STRING, 0, 1024, NULL, F(tls_key), NULL, "PEM private key"},
        {"hub.tls.client_ca", PERCH_CFG_STRING, 0, 1024, NULL, F(tls_client_ca), NULL,
         "PEM CA bundle: ask clients for certificates (optional for them)"},
        {"hub.max_packet_size", PERCH_CFG_SIZE, 64, 268435460, "256KiB", F(max_packet_size), NULL,
         "largest MQTT packet accepted"},
        {"hub.max_connect_size", PERCH_CFG_SIZE, 64, 1048576, "64KiB", F(max_connect_size), NULL,
         "largest CONNECT packet accepted (before authentication)"},
        {"hub.max_inflight", PERCH_CFG_INT, 1, 65535, "100", F(max_inflight), NULL,
         "unacknowledged QoS 1 messages in flight to one client"},
        {"hub.max_queued_messages", PERCH_CFG_INT, 1, 100000000, "1000000", F(max_queued_messages),
         NULL, "messages queued for one persistent session"},
        {"hub.max_queued_bytes", PERCH_CFG_SIZE, 1024, INT64_MAX, "1GiB", F(max_queued_bytes), NULL,
         "bytes queued for one persistent session"},
        {"hub.max_memory_queued_bytes", PERCH_CFG_SIZE, 1024, INT64_MAX, "16MiB",
         F(max_memory_queued_bytes), NULL,
         "bytes queued in memory for one clean session (a slow QoS 1 reader)"},
        {"hub.max_connections", PERCH_CFG_INT, 1, 1000000, "10000", F(max_connections), NULL,
         "simultaneous client connections"},
        {"hub.max_subscriptions", PERCH_CFG_INT, 1, 100000, "1000", F(max_subscriptions), NULL,
         "subscriptions per client"},
        {"hub.max_store_bytes", PERCH_CFG_SIZE, 65536, INT64_MAX, "2GiB", F(max_store_bytes), NULL,
         "size of the message store; at the limit new QoS 1 messages are refused"},
        {"hub.max_tx_bytes", PERCH_CFG_SIZE, 65536, 1073741824, "4MiB", F(max_tx_bytes), NULL,
         "unsent bytes buffered for one connection (a slow reader)"},
        {"hub.connect_timeout", PERCH_CFG_DURATION, 100, 3600000, "10s", F(connect_timeout_ms),
         NULL, "time a new connection has to send CONNECT"},
        {"hub.send_timeout", PERCH_CFG_DURATION, 1000, 3600000, "60s", F(send_timeout_ms), NULL,
         "a connection with bytes waiting to be sent that takes none of them for this long is "
         "closed (a client that never reads its socket)"},
        {"hub.commit_delay_us", PERCH_CFG_INT, 0, 100000, "1000", F(commit_delay_us), NULL,
         "microseconds a commit waits, while the store's writer is idle, for acks that "
         "spare it writing messages already delivered; 0: commit at once"},
        {"hub.sync", PERCH_CFG_ENUM, 0, 0, "full", F(sync), sync_modes,
         "store durability: full (fsync at every commit), normal, off (tests only)"},
        {"hub.auth.clock_skew", PERCH_CFG_DURATION, 0, 86400000, "5m", F(auth_skew_ms), NULL,
         "clock difference tolerated when checking SAS token expiry"},
        {"hub.auth.max_token_lifetime", PERCH_CFG_DURATION, 60000, 31536000000, "1d",
         F(auth_lifetime_ms), NULL, "SAS tokens expiring further ahead are refused"},
        {"hub.status_file", PERCH_CFG_STRING, 0, 1024, NULL, F(status_file), NULL,
         "JSON file the hub keeps its upstream link's status in (rewritten on a change, at "
         "most every 5 s); none by default"},
        {"hub.leaf_devices", PERCH_CFG_STRING, 0, 1024, NULL, F(leaf_devices), NULL,
         "JSON file of leaf devices: {\"id\": {\"primaryKey\": \"base64\"}} (mode 0600)"},
        {"hub.upstream.url", PERCH_CFG_STRING, 0, 600, NULL, F(upstream_url), NULL,
         "the parent: mqtts://HOST[:PORT] or wss://HOST[:PORT][/PATH] (mqtt://, ws:// are "
         "unencrypted: loopback and tests only)"},
        {"hub.upstream.ca", PERCH_CFG_STRING, 0, 1024, NULL, F(upstream_ca), NULL,
         "PEM CA bundle that verifies the parent's certificate (default: the system's)"},
        {"hub.upstream.hostname", PERCH_CFG_STRING, 0, 255, NULL, F(upstream_hostname), NULL,
         "IoT hub host name in the user name and SAS token (default: the URL's host)"},
        {"hub.upstream.keepalive", PERCH_CFG_DURATION, 2000, 65535000, "60s",
         F(upstream_keepalive_ms), NULL,
         "MQTT keepalive of the link; a dead link is noticed within it"},
        {"hub.upstream.window", PERCH_CFG_INT, 1, 65535, "1024", F(upstream_window), NULL,
         "unacknowledged QoS 1 publishes in flight to the parent"},
        {"hub.upstream.backoff_first", PERCH_CFG_DURATION, 10, 60000, "200ms",
         F(upstream_backoff_first_ms), NULL,
         "first reconnect delay; doubles per failed attempt, jittered to [d/2, d]"},
        {"hub.upstream.backoff_max", PERCH_CFG_DURATION, 100, 300000, "500ms",
         F(upstream_backoff_max_ms), NULL,
         "longest reconnect delay while the parent is unreachable (connection refused or "
         "timed out, closed before CONNACK): draining starts this soon after it returns"},
        {"hub.upstream.refused_backoff_max", PERCH_CFG_DURATION, 1000, 3600000, "60s",
         F(upstream_refused_max_ms), NULL,
         "longest reconnect delay after the parent refused (CONNACK 1-5, its TLS "
         "certificate does not verify); from twice hub.upstream.backoff_max, doubling"},
        {"hub.upstream.token_lifetime", PERCH_CFG_DURATION, 10000, 86400000, "1h",
         F(upstream_token_lifetime_ms), NULL,
         "lifetime of the link's SAS token; the link reconnects with a new one at 80%"},
        {"hub.upstream.full_policy", PERCH_CFG_ENUM, 0, 0, "refuse", F(upstream_full_policy),
         full_policies,
         "store full (hub.max_store_bytes) and a message for $upstream does not fit: refuse it "
         "(no PUBACK) or drop_oldest (drop queued $upstream messages of its priority or lower, "
         "oldest first)"},
        PERCH_DEVICE_CFG_ROWS(hub_settings, device),
};
const size_t hub_settings_count = sizeof hub_settings_table / sizeof hub_settings_table[0];

const char *const hub_foreign_sections[] = {"agent", "cloud", "upstream", NULL};
