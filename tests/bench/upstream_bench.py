#!/usr/bin/python3
"""tests/bench/upstream_bench.py — perch-hub's upstream link, hub to hub: how
fast a backlog drains after an outage and how soon the first message goes.

    upstream_bench.py [--smoke] [--count N] [--window W] [--samples S] [--outage SECONDS]

A parent hub (device site, the child registered with "edge": true, a route
FROM /messages/* INTO $upstream so every forwarded message is committed to
its store) and a child hub (device gw1, FROM /messages/* INTO $upstream,
hub.upstream.url to the parent, the reconnect backoff at its defaults). With
the parent not running, a producer module publishes N QoS 1 messages of 256
bytes to the child (pipelined; each acknowledged once durable). Then the
parent starts, and from the child's /metrics (polled every 10 ms):

  first forward after link up  the child's perch_hub_upstream_first_forward_seconds:
                               CONNACK to the first PUBACK
  first forward after parent   parent ready (its "perch-hub ready" line) to the first
  ready                        message acknowledged; includes the child's reconnect
                               backoff
  drain rate                   N / (time of the last PUBACK - time of the first)

Then the worst case a user sees after a long outage, S times: the parent is
stopped for SECONDS (16 by default: far longer than the child's backoff
needs to reach its cap, hub.upstream.backoff_max), one message is queued at
the child, the parent starts, and the time from its ready line to the
child's first forward is taken (median and max), with the child's
connection attempts per second while the parent was away.

It reports (a Markdown table on stdout and in $O/bench/upstream.md); it does
not judge. Exit status non-zero only when the harness could not run or a
message was lost (the parent's queue must hold N at the end). --smoke: N =
2,000, one outage of 3 s (CI). Only loopback; only processes this script
started are signalled.
"""
import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from statistics import median

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "hub"))
import hubtest as h  # noqa: E402
from test_identity import DEV, DEVKEY, HOSTNAME, module_key, sas, write_private  # noqa: E402

PARENT, PARENT_HOST = "site", "site.example"
PARENT_KEY = "c2l0ZS1rZXktc2l0ZS1rZXktc2l0ZS1rZXktMTIzNDU="


def write_json(path, doc, private=False):
    text = json.dumps(doc)
    if private:
        write_private(path, text)
    else:
        with open(path, "w") as f:
            f.write(text)


def deployment(device, modules, routes):
    return {"version": 1, "deviceId": device, "deployment": 1,
            "modules": {m: {"generationId": "g"} for m in modules}, "twins": {},
            "edgeHub": {"schemaVersion": "1.1", "routes": routes}}


def produce(port, n, payload_len=256, window=2000):
    """Publish n QoS 1 messages pipelined; returns when all are acknowledged."""
    c = h.Raw(port, timeout=30)
    ack = c.connect(f"{DEV}/producer", clean=True,
                    user=f"{HOSTNAME}/{DEV}/producer/?api-version=2018-06-30",
                    password=sas(f"{HOSTNAME}/devices/{DEV}/modules/producer",
                                 module_key("producer")))
    assert ack.rc == 0
    topic = f"devices/{DEV}/modules/producer/messages/events/%24.on=o1"
    body = b"x" * payload_len
    sent = acked = 0
    end = time.monotonic() + max(60, n / 500)
    while acked < n:
        assert time.monotonic() < end, f"producing timed out at {acked}/{n}"
        batch = []
        while sent < n and sent - acked < window and len(batch) < 500:
            batch.append(h.publish_packet(topic, body, qos=1, pid=sent % 65535 + 1))
            sent += 1
        if batch:
            c.send(b"".join(batch))
        p = c.recv(timeout=10)
        assert p is not None, f"no PUBACK after {acked}"
        if p.type == h.PUBACK:
            acked += 1
    c.disconnect()


def long_outages(parent, child, samples, outage):
    """The parent away for outage seconds, samples times: returns the seconds
    from its ready line to the child's next forward, the child's CONNACK to
    first PUBACK, and its connection attempts per second while it was away."""
    waits, links, rates = [], [], []
    for i in range(samples):
        m = child.metrics()
        fwd0 = h.metric_sum(m, "perch_hub_upstream_forwarded_total")
        parent.stop()
        h.wait_until(lambda: h.metric_sum(child.metrics(), "perch_hub_upstream_connected") == 0,
                     30, what="the child's link down")
        t_down = time.monotonic()
        tries0 = h.metric_sum(child.metrics(), "perch_hub_upstream_connects_total")
        produce(child.ports["mqtt"], 1)
        time.sleep(max(0.0, t_down + outage - time.monotonic()))
        tries = h.metric_sum(child.metrics(), "perch_hub_upstream_connects_total") - tries0
        rates.append(tries / (time.monotonic() - t_down))
        parent.start(wait=False)
        t_ready = t_first = None
        end = time.monotonic() + 60
        while t_first is None or t_ready is None:
            assert time.monotonic() < end, "no forward within 60 s\n" + child.log_tail(10)
            now = time.monotonic()
            if t_ready is None and "perch-hub ready" in parent.log_since_start():
                t_ready = now
            if t_first is None and \
                    h.metric_sum(child.metrics(), "perch_hub_upstream_forwarded_total") > fwd0:
                t_first = now
            time.sleep(0.01)
        parent.wait_ready()
        waits.append(t_first - t_ready)
        links.append(h.metric_sum(child.metrics(), "perch_hub_upstream_first_forward_seconds"))
        print(f"outage {i + 1}/{samples}: {outage:.0f} s, {tries:.0f} attempts; first forward "
              f"{(t_first - t_ready) * 1000:.0f} ms after the parent was ready", file=sys.stderr)
    return waits, links, rates


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--count", type=int, default=0)
    ap.add_argument("--window", type=int, default=0, help="hub.upstream.window (default: the hub's)")
    ap.add_argument("--samples", type=int, default=0, help="long outages to time (5; 1 with --smoke)")
    ap.add_argument("--outage", type=float, default=0,
                    help="seconds each long outage lasts (16; 3 with --smoke)")
    args = ap.parse_args()
    n = args.count or (2000 if args.smoke else 100000)
    samples = args.samples or (1 if args.smoke else 5)
    outage = min(args.outage or (3 if args.smoke else 16), 300)
    out_dir = os.path.join(h.O if os.path.isabs(h.O) else os.path.join(h.ROOT, h.O), "bench")
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="perch-upbench-")
    brokers = []
    try:
        ids = os.path.join(work, "ids")
        os.makedirs(ids)
        pk, pd, pl = (os.path.join(ids, x) for x in ("p.key", "p.json", "p-leaves.json"))
        write_private(pk, PARENT_KEY)
        write_json(pd, deployment(PARENT, [], {"on": "FROM /messages/* INTO $upstream"}))
        write_json(pl, {DEV: {"primaryKey": DEVKEY, "edge": True}}, private=True)
        ck, cd = os.path.join(ids, "c.key"), os.path.join(ids, "c.json")
        write_private(ck, DEVKEY)
        write_json(cd, deployment(DEV, ["producer"], {"up": "FROM /messages/* INTO $upstream"}))
        os.makedirs(os.path.join(work, "parent"))
        os.makedirs(os.path.join(work, "child"))
        parent = h.Broker(os.path.join(work, "parent"), anonymous=False, listeners=("mqtt",),
                          extra_args=["--set", f"device.id={PARENT}",
                                      "--set", f"device.iothub_hostname={PARENT_HOST}",
                                      "--set", f"device.key_file={pk}",
                                      "--set", f"device.hub_deployment={pd}",
                                      "--set", f"hub.leaf_devices={pl}"])
        child = h.Broker(os.path.join(work, "child"), anonymous=False, listeners=("mqtt",),
                         extra_args=["--set", f"device.id={DEV}",
                                     "--set", f"device.iothub_hostname={HOSTNAME}",
                                     "--set", f"device.key_file={ck}",
                                     "--set", f"device.hub_deployment={cd}",
                                     "--upstream", f"mqtt://127.0.0.1:{parent.ports['mqtt']}",
                                     "--set", f"hub.upstream.hostname={PARENT_HOST}"]
                         + (["--set", f"hub.upstream.window={args.window}"] if args.window else []))
        brokers = [parent, child]
        child.start()
        t0 = time.monotonic()
        produce(child.ports["mqtt"], n)
        t_produce = time.monotonic() - t0
        depth = h.metric_sum(child.metrics(), "perch_hub_upstream_queue_messages")
        assert depth == n, f"child queue {depth}, want {n}"
        parent.start()
        t_ready = time.monotonic()
        t_first = t_last = None
        end = t_ready + max(60, n / 1000)
        while time.monotonic() < end:
            m = child.metrics()
            fwd = h.metric_sum(m, "perch_hub_upstream_forwarded_total") or 0
            now = time.monotonic()
            if fwd > 0 and t_first is None:
                t_first = now
            if fwd >= n:
                t_last = now
                break
            time.sleep(0.01)
        assert t_last is not None, f"not drained: {fwd}/{n}\n" + child.log_tail(10)
        m = child.metrics()
        ff_link = h.metric_sum(m, "perch_hub_upstream_first_forward_seconds")
        pm = parent.metrics()
        pdepth = h.metric_sum(pm, "perch_hub_upstream_queue_messages") or \
            h.metric_sum(pm, "perch_hub_queue_messages")
        assert pdepth is not None and pdepth >= n, f"parent holds {pdepth}, want {n}"
        drain_s = max(t_last - t_first, 1e-3)
        resent = h.metric_sum(m, "perch_hub_upstream_resent_total")
        waits, links, rates = long_outages(parent, child, samples, outage)
        rows = [
            ("messages (256-byte payloads)", f"{n}"),
            ("window (publishes in flight)", f"{args.window or 1024} (hub.upstream.window)"),
            ("queued at the child (producer, pipelined)", f"{t_produce:.2f} s ({n / t_produce:,.0f} msg/s)"),
            ("first forward after link up (CONNACK to first PUBACK)", f"{ff_link * 1000:.0f} ms"),
            (f"first forward after the parent is ready (outage {t_ready - t0:.1f} s while queueing)",
             f"{(t_first - t_ready) * 1000:.0f} ms (10 ms polling)"),
            ("drain rate, hub to hub, parent committing each message", f"{n / drain_s:,.0f} msg/s ({drain_s:.2f} s)"),
            ("duplicates at the parent (resent with DUP)", f"{resent:.0f}"),
            (f"first forward after the parent is ready, after an outage of {outage:.0f} s "
             f"({samples} sample{'s' if samples > 1 else ''}, default backoff)",
             f"median {median(waits) * 1000:.0f} ms, max {max(waits) * 1000:.0f} ms "
             f"({', '.join(f'{w * 1000:.0f}' for w in waits)} ms; 10 ms polling)"),
            ("of which CONNACK to first PUBACK", f"median {median(links) * 1000:.0f} ms, "
             f"max {max(links) * 1000:.0f} ms"),
            ("the child's connection attempts while the parent was away",
             f"{median(rates):.1f} per second (median)"),
        ]
        md = ["| upstream link | result |", "|---|---|"] + [f"| {a} | {b} |" for a, b in rows]
        text = "\n".join(md) + "\n"
        print(text)
        name = "upstream-smoke.md" if args.smoke else "upstream.md"
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(text)
        return 0
    finally:
        for b in brokers:
            b.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
