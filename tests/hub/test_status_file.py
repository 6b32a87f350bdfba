"""perch-hub's status file (docs/hub.md "The status file", hub.status_file):
the upstream link's state and numbers as JSON, for perch-agent's report.
Two real hubs (test_upstream.Pair). Checked: the file is there from the
start, mode 0644, always a whole JSON document (every read parses; it is
replaced by rename); it says up with the time it came up; an idle link does
not rewrite it; the parent stopped -> down, then the messages produced
meanwhile appear in the queued totals and per priority; the parent back ->
up, the queue empty, the messages counted as forwarded. A hub without
hub.upstream.url says only "configured": false."""
import json
import os
import stat
import time

import pytest

import hubtest as h
from test_upstream import Pair, produce

pytestmark = pytest.mark.perch_only("the status file is Perch's")


def read(path):
    """The document, or None while the file does not exist yet. A partial
    document fails the test (json raises)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    return json.loads(text)


def wait_doc(path, pred, what, timeout=20):
    got = {}

    def ok():
        d = read(path)
        got["d"] = d
        return d is not None and pred(d["upstream"])
    h.wait_until(ok, timeout, interval=0.05, what=f"{what}; last: {got.get('d')}")
    return got["d"]["upstream"]


def test_status_file_follows_the_link(make_broker, workdir):
    path = os.path.join(workdir, "hub-status.json")
    routes = {"up": {"route": "FROM /messages/* INTO $upstream", "priority": 3}}
    pair = Pair(make_broker, workdir, child_routes=routes,
                child_args=["--set", f"hub.status_file={path}"])
    pair.wait_up()
    up = wait_doc(path, lambda u: u["state"] == "up", "status file says up")
    assert up["configured"] is True and up["since"].endswith("Z"), up
    assert up["offlineSeconds"] == 0 and up["queued"]["messages"] == 0, up
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert not os.path.exists(path + ".tmp")

    # Idle: not rewritten (more than the 5 s between two writes).
    before = os.stat(path).st_mtime_ns
    time.sleep(6)
    assert os.stat(path).st_mtime_ns == before, "rewritten while nothing changed"

    pair.parent.stop()
    down = wait_doc(path, lambda u: u["state"] == "down", "status file says down")
    assert down["reconnects"] >= 1 and down["since"] >= up["since"], down
    prod = pair.producer()
    produce(prod, range(50))
    q = wait_doc(path, lambda u: u["queued"]["messages"] >= 50, "50 queued in the status file")
    assert q["queues"]["3"]["messages"] == q["queued"]["messages"], q
    assert q["queued"]["bytes"] > 0 and q["queued"]["oldestAgeSeconds"] >= 0, q
    prod.close()

    pair.parent.start()
    back = wait_doc(path, lambda u: u["state"] == "up" and u["queued"]["messages"] == 0,
                    "up again, queue drained", timeout=30)
    assert back["forwarded"] >= 50 and back["queues"] == {}, back
    assert back["since"] > down["since"], back


def test_status_file_without_upstream(make_broker, workdir):
    path = os.path.join(workdir, "st.json")
    make_broker(extra_args=["--set", f"hub.status_file={path}"])
    h.wait_until(lambda: read(path) is not None, 10, what="status file written")
    assert read(path)["upstream"] == {"configured": False}
