"""pytest fixtures for perch-hub's integration tests (see hubtest.py, run.sh)."""
import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import hubtest  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "perch_only(why): Perch-only behaviour; n/a for mosquitto")


def pytest_runtest_setup(item):
    m = item.get_closest_marker("perch_only")
    if m and not hubtest.is_perch():
        pytest.skip("n/a for mosquitto: " + (m.args[0] if m.args else "Perch-only behaviour"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


@pytest.fixture
def workdir(request):
    base = os.environ.get("PERCH_HUB_TEST_TMP") or None
    d = tempfile.mkdtemp(prefix="hubtest-", dir=base)
    yield d
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.passed or rep.skipped:
        import shutil
        shutil.rmtree(d, ignore_errors=True)
    else:
        print(f"\n[kept work dir {d}]")


@pytest.fixture(scope="session")
def tls_files():
    d = tempfile.mkdtemp(prefix="hubtest-tls-")
    return hubtest.make_cert(d)


@pytest.fixture
def make_broker(workdir, request):
    """Factory: make_broker(**Broker kwargs) -> started Broker; all are stopped at
    teardown with SIGTERM and their exit code must be 0."""
    made = []

    def make(start=True, **kw):
        sub = os.path.join(workdir, f"b{len(made)}")
        os.makedirs(sub, exist_ok=True)
        b = hubtest.Broker(sub, **kw)
        made.append(b)
        if start:
            b.start()
        return b

    yield make
    problems = []
    for b in made:
        if b.proc is None:
            continue
        was_alive = b.alive()
        rc = b.stop()
        if was_alive and rc != 0:
            problems.append(f"{b.kind} exited {rc} on SIGTERM (want 0)")
    rep = getattr(request.node, "rep_call", None)
    if problems or (rep is not None and rep.failed):
        for b in made:
            print(f"\n----- last lines of {b.log_path}\n{b.log_tail(40)}")
    assert not problems, "; ".join(problems)


@pytest.fixture
def broker(make_broker):
    return make_broker()
