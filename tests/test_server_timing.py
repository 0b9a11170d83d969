"""The ``Server-Timing`` header: on every kind of answer, well formed, with each silo's database
time for the silos a request used (dashboard/server_timing.py)."""
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from dashboard import server_timing
from dashboard.extensions import db
from tests.helpers import Stream, signed_in

# One metric of the header (W3C Server Timing): a token name, then ;dur=<ms> and optional ;desc="...".
METRIC = re.compile(r'^(?P<name>[A-Za-z0-9!#$%&\'*+.^_`|~-]+);dur=(?P<dur>\d+\.\d{2})'
                    r'(?:;desc="(?P<desc>[^"\\]*)")?$')


def timing(response):
    """``{name: (ms, desc)}`` of a response's Server-Timing header; fails on a malformed one."""
    value = response.headers.get("Server-Timing")
    assert value, f"no Server-Timing header on {response.status_code} {response.request.path}"
    metrics = {}
    for part in value.split(", "):
        match = METRIC.match(part)
        assert match, f"malformed Server-Timing metric {part!r} in {value!r}"
        assert match["name"] not in metrics, value
        metrics[match["name"]] = (float(match["dur"]), match["desc"])
    assert list(metrics)[0] == "app", value
    return metrics


def statements(desc):
    match = re.fullmatch(r"(center|hospital|ems): (\d+) quer(y|ies)", desc)
    assert match, desc
    return int(match[2])


def test_a_page_names_the_silos_it_read(app, demo):
    client = signed_in(app, "nurse@altoona.medport.test")
    metrics = timing(client.get("/hospital/"))
    assert {"app", "db-hospital", "db-center"} <= set(metrics)
    assert "db-ems" not in metrics or statements(metrics["db-ems"][1]) >= 1
    assert statements(metrics["db-hospital"][1]) >= 1
    # The database time is part of the app's time.
    assert sum(ms for name, (ms, _) in metrics.items() if name.startswith("db-")) <= metrics["app"][0]


def test_json_and_every_silo(client, demo):
    response = client.get("/healthz")
    assert response.is_json
    metrics = timing(response)
    assert {"db-center", "db-hospital", "db-ems"} <= set(metrics)


def test_errors_carry_it_too(app, client, demo):
    not_found = client.get("/no/such/page")
    assert not_found.status_code == 404
    assert set(timing(not_found)) == {"app"}  # nothing read before the page was not found
    refused = client.get("/login?next=%00")
    assert refused.status_code == 400
    assert "app" in timing(refused)
    signed = signed_in(app, "nurse@altoona.medport.test")
    missing = signed.get("/hospital/requests/NO-SUCH-REQUEST")
    assert missing.status_code == 404
    assert "db-hospital" in timing(missing)


def test_a_live_stream_carries_its_start(app, demo):
    client = signed_in(app, "dispatch@altoonaems.medport.test")
    stream = Stream(client)
    try:
        assert stream.response.status_code == 200
        assert "app" in timing(stream.response)
    finally:
        stream.response.close()


def test_counts_each_statement_of_its_own_request_only(app):
    with app.app_context():
        engine = db.engines["hospital"]
        outside = threading.Event()
        with engine.connect() as conn:  # the dialect's first-connect statements, before the count
            conn.execute(sa.text("SELECT 1"))

        def elsewhere():  # another thread, no collector: not counted
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            outside.set()

        collector = server_timing.Collector()
        token = server_timing._current.set(collector)
        try:
            with engine.connect() as conn:
                for _ in range(3):
                    conn.execute(sa.text("SELECT 1"))
            thread = threading.Thread(target=elsewhere)
            thread.start()
            thread.join(timeout=30)
            assert outside.is_set()
            carried = threading.Thread(target=server_timing.carry(elsewhere))
            carried.start()
            carried.join(timeout=30)
        finally:
            server_timing._current.reset(token)
        with engine.connect() as conn:  # after the request: not counted
            conn.execute(sa.text("SELECT 1"))
    assert list(collector.silos) == ["hospital"]
    seconds, count = collector.silos["hospital"]
    assert count == 4 and seconds > 0
    header = collector.header()
    assert re.fullmatch(r'app;dur=\d+\.\d{2}, db-hospital;dur=\d+\.\d{2};desc="hospital: 4 queries"', header), header


UNDER_GEVENT = r'''
from gevent import monkey
monkey.patch_all()
import json, sys
import gevent
import pytest
import sqlalchemy as sa
from sqlalchemy import event
sys.path.insert(0, sys.argv[1])
from dashboard import server_timing

engine = sa.create_engine("sqlite://")
server_timing._ENGINE_SILOS[engine] = "hospital"
event.listen(engine, "before_cursor_execute", server_timing._before_cursor_execute)
event.listen(engine, "after_cursor_execute", server_timing._after_cursor_execute)

def request(statements):  # one greenlet per request, as gunicorn's gevent worker runs them
    collector = server_timing.Collector()
    token = server_timing._current.set(collector)
    try:
        for _ in range(statements):
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            gevent.sleep(0)  # let the other requests run in between
        return collector.silos.get("hospital", [0, 0])[1]
    finally:
        server_timing._current.reset(token)

jobs = [gevent.spawn(request, n) for n in (1, 2, 3, 4, 5)]
gevent.joinall(jobs, timeout=60)
print(json.dumps([job.value for job in jobs]))
'''


def test_each_greenlet_counts_its_own_statements():
    """Under gevent (gunicorn's worker) requests interleave in one thread: each counts its own."""
    pytest.importorskip("gevent")
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-c", UNDER_GEVENT, str(root)], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [1, 2, 3, 4, 5]
