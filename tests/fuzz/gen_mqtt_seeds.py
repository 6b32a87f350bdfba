#!/usr/bin/env python3
"""gen_mqtt_seeds.py — writes the seed corpora of fuzz_mqtt_decode and fuzz_topic.

Each mqtt_decode seed is two control bytes (bit 0 of the first: 0 server side,
1 client side; bits 1-2 zero: whole input, else random cuts seeded by both
bytes) and then a byte stream. Run from the repository root:
    python3 tests/fuzz/gen_mqtt_seeds.py
"""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def rl(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        out += bytes([b | (0x80 if n else 0)])
        if not n:
            return out


def s(x):
    x = x.encode() if isinstance(x, str) else x
    return struct.pack(">H", len(x)) + x


def pkt(first, body):
    return bytes([first]) + rl(len(body)) + body


def connect(cid="d1", will=None, user=None, pw=None, clean=True, ka=60, level=4):
    flags = (2 if clean else 0)
    body_tail = s(cid)
    if will:
        topic, payload, qos, retain = will
        flags |= 4 | (qos << 3) | (0x20 if retain else 0)
        body_tail += s(topic) + s(payload)
    if user is not None:
        flags |= 0x80
        body_tail += s(user)
    if pw is not None:
        flags |= 0x40
        body_tail += s(pw)
    return pkt(0x10, s("MQTT") + bytes([level, flags]) + struct.pack(">H", ka) + body_tail)


def publish(topic, payload=b"", qos=0, pid=1, dup=False, retain=False):
    first = 0x30 | (8 if dup else 0) | (qos << 1) | (1 if retain else 0)
    body = s(topic) + (struct.pack(">H", pid) if qos else b"") + payload
    return pkt(first, body)


def ack(t, pid):
    return pkt(t, struct.pack(">H", pid))


def subscribe(pid, filters):
    return pkt(0x82, struct.pack(">H", pid) + b"".join(s(f) + bytes([q]) for f, q in filters))


def unsubscribe(pid, filters):
    return pkt(0xA2, struct.pack(">H", pid) + b"".join(s(f) for f in filters))


CONN = connect()
CONNACK = pkt(0x20, b"\x00\x00")
SRV_WHOLE, SRV_CUT, CLI_WHOLE, CLI_CUT = b"\x00\x00", b"\x02\x35", b"\x01\x00", b"\x03\x9a"

mqtt = {
    "connect_min": SRV_WHOLE + CONN,
    "connect_full": SRV_WHOLE + connect(
        "d1/m1", ("devices/d1/gone", b"bye", 1, True),
        "hub/d1/m1/?api-version=2021-04-12", b"SharedAccessSignature sr=x&sig=y&se=1", False, 240),
    "connect_level3": SRV_WHOLE + pkt(0x10, s("MQIsdp") + b"\x03\x02\x00\x3c" + s("x")),
    "connect_level5": SRV_WHOLE + connect(level=5),
    "connect_huge_claim": SRV_WHOLE + b"\x10\xff\xff\xff\x7f\x00\x04MQTT",
    "connect_cut": SRV_CUT + connect("abc", ("w/t", b"p", 2, False), "u", b"p"),
    "publish_qos0": SRV_WHOLE + CONN + publish("devices/d1/messages/events/", b'{"t":1}'),
    "publish_qos1": SRV_WHOLE + CONN + publish("a/b", b"x" * 20, 1, 7, retain=True),
    "publish_qos2_dup": SRV_WHOLE + CONN + publish("caf\u00e9", b"", 2, 65535, dup=True),
    "publish_big_cut": SRV_CUT + CONN + publish("big", bytes(range(256)) * 2, 1, 3),
    "publish_wildcard": SRV_WHOLE + CONN + publish("a/+", b"no"),
    "publish_bad_utf8": SRV_WHOLE + CONN + publish(b"\xed\xa0\x80", b""),
    "acks": SRV_CUT + CONN + ack(0x40, 1) + ack(0x50, 2) + ack(0x62, 3) + ack(0x70, 4),
    "subscribe": SRV_WHOLE + CONN + subscribe(9, [("devices/d1/messages/devicebound/#", 1),
                                                 ("$iothub/methods/POST/#", 0), ("+/+/x", 2)]),
    "subscribe_bad_qos": SRV_WHOLE + CONN + subscribe(9, [("a", 3)]),
    "unsubscribe": SRV_WHOLE + CONN + unsubscribe(10, ["a/#", "+"]),
    "ping_disconnect": SRV_WHOLE + CONN + pkt(0xC0, b"") + pkt(0xE0, b""),
    "remaining_5_bytes": SRV_WHOLE + CONN + b"\x30\xff\xff\xff\xff\x01",
    "second_connect": SRV_WHOLE + CONN + CONN,
    "server_session_cut": SRV_CUT + CONN + subscribe(1, [("t/#", 1)]) + publish("t/1", b"hi", 1, 2)
    + ack(0x40, 5) + pkt(0xC0, b"") + unsubscribe(3, ["t/#"]) + pkt(0xE0, b""),
    "connack": CLI_WHOLE + CONNACK,
    "connack_refused": CLI_WHOLE + pkt(0x20, b"\x00\x05"),
    "connack_bad": CLI_WHOLE + pkt(0x20, b"\x01\x02"),
    "suback": CLI_WHOLE + CONNACK + pkt(0x90, b"\x00\x09\x00\x01\x02\x80"),
    "unsuback": CLI_WHOLE + CONNACK + ack(0xB0, 10),
    "pingresp": CLI_WHOLE + CONNACK + pkt(0xD0, b""),
    "client_session_cut": CLI_CUT + CONNACK + pkt(0x90, b"\x00\x01\x01") + publish(
        "devices/d1/messages/devicebound/x", b"c2d", 1, 9) + ack(0x40, 1) + ack(0x50, 2)
    + ack(0x62, 2) + ack(0x70, 2) + pkt(0xD0, b""),
}

topic = {
    "exact": b"\x07sport/asport/a",
    "hash": b"\x07sport/#sport/tennis",
    "hash_parent": b"\x07sport/#sport",
    "plus": b"\x08sport/+/sport/x/y",
    "plus_empty": b"\x03+/+/finance",
    "sys_hash": b"\x01#$SYS/broker",
    "sys_plus": b"\x11+/monitor/Clients$SYS/monitor/Clients",
    "sys_exact": b"\x06$SYS/#$SYS/a",
    "bad_hash": b"\x0dsport/tennis#sport/tennis",
    "bad_plus": b"\x06sport+sport+",
    "utf8": "\x06caf\u00e9/#caf\u00e9/x".encode(),
    "bad_utf8": b"\x02a/a/\xc0\x80",
    "empty_levels": b"\x04a//#a//b",
    "iothub": b"\x17devices/d1/modules/m1/#devices/d1/modules/m1/inputs/in1/%24.ct=x",
}

for name, corpus in (("mqtt_decode", mqtt), ("topic", topic)):
    d = os.path.join(ROOT, name)
    os.makedirs(d, exist_ok=True)
    for k, v in corpus.items():
        with open(os.path.join(d, k), "wb") as f:
            f.write(v)
    print(f"{name}: {len(corpus)} seeds in {d}")
