"""Faults, races and real processes: a silo's database stopped, threads started together,
the cross-silo consistency checks, a gunicorn server and its HTTP client, a webhook receiver.
Every wait is bounded (``BARRIER_SECONDS``, ``STARTUP_SECONDS``).
"""
import http.client
import os
import re
import subprocess
import sys
import threading
import time
import traceback
from contextlib import contextmanager
from datetime import timedelta
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench.serving import free_port
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.models.vocabulary import ACTIVE_STATUSES, IN_PROGRESS_ROUTE_STATUSES, TRIP_STATUSES
from dashboard.seed import demo
from dashboard.services.bidding import ACTIVE_ROUTE_STATUSES
from tests.helpers.trips import pending

#: Static checks and the load test fail instead of skipping when their tool is missing (CI, or
#: MEDPORT_REQUIRE_STATIC_CHECKS=1).
REQUIRED = bool(os.environ.get("CI")) or os.environ.get("MEDPORT_REQUIRE_STATIC_CHECKS") == "1"
#: How long the first racer at the gate waits for the last (generous: a loaded machine is slow,
#: a racer that cannot arrive at all is a failure reported with where it was).
BARRIER_SECONDS = 120
#: The route status that goes with each trip status once the relay has delivered.
ROUTE_FOR_TRIP = {"awarded": "planned", "en_route": "en_route", "at_pickup": "at_pickup",
                  "transporting": "transporting", "at_destination": "at_destination",
                  "completed": "completed"}
STARTUP_SECONDS = 30
ROOT = Path(__file__).resolve().parents[2]  # the repository


def dispose_engines(app):
    """End the app context's session and close every silo's pooled connections."""
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@contextmanager
def silo_stopped(app, silo):
    """The silo's database refuses connections and its open sessions are ended."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"] if silo == "center"
                   else app.config["SQLALCHEMY_BINDS"][silo]["url"])
    name = url.database
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        dispose_engines(app)
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        dispose_engines(app)


def converge(app):
    """Once the silo is back: the relay, past every back-off, until nothing is pending."""
    Relay(app).drain(now=utcnow() + timedelta(minutes=10))
    with app.app_context():
        return {silo: pending(silo) for silo in OUTBOX_BY_SILO}


def assert_units_consistent():
    """Every unit's current trip is one of its active routes, the one under way if any (a unit is
    under way on one trip at most); a unit with none is not assigned."""
    active, under_way = {}, {}
    for unit_id, trip_id, status in db.session.execute(
            sa.select(EmsRoute.unit_id, EmsRoute.trip_id, EmsRoute.status).where(
                EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))):
        active.setdefault(unit_id, set()).add(trip_id)
        if status in IN_PROGRESS_ROUTE_STATUSES:
            under_way.setdefault(unit_id, []).append(trip_id)
    for unit in db.session.scalars(sa.select(Unit)):
        assert len(under_way.get(unit.id, [])) <= 1, f"unit {unit.number} is under way on two trips"
        if under_way.get(unit.id):
            assert unit.current_trip_id == under_way[unit.id][0], (
                f"unit {unit.number}'s current trip is not the one under way")
        if unit.current_trip_id is None:
            assert unit.id not in active, f"unit {unit.number} has active routes but no current trip"
            assert unit.status != "assigned", f"unit {unit.number} is assigned to nothing"
        else:
            assert unit.current_trip_id in active.get(unit.id, set()), (
                f"unit {unit.number}'s current trip {unit.current_trip_id} is not one of its active routes")


def assert_consistent(trip_id):
    """The hospital's trip and the EMS silo agree (call once the relay has delivered everything)."""
    db.session.expire_all()
    trip = db.session.get(TransportRequest, trip_id)
    assert trip.status in TRIP_STATUSES
    bids = list(db.session.scalars(sa.select(TransportBid).where(TransportBid.trip_id == trip_id)))
    live = [b for b in bids if b.status == "live"]
    accepted = [b.id for b in bids if b.status == "accepted"]
    assert len({b.agency_id for b in live}) == len(live), "two live bids of one agency"
    routes = list(db.session.scalars(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id)))
    active_routes = [r for r in routes if r.status in ACTIVE_ROUTE_STATUSES]
    if trip.status == "open":
        assert trip.awarded_agency_id is None and trip.awarded_unit_id is None
        assert accepted == [] and active_routes == []
    elif trip.status == "cancelled":
        assert live == [] and accepted == [] and active_routes == []
    else:
        assert trip.awarded_agency_id is not None and trip.awarded_unit_id is not None
        assert live == [], f"live bids on a {trip.status} trip"
        assert accepted == ([trip.awarded_bid_id] if trip.awarded_bid_id else []), (
            f"accepted bids {accepted}, awarded bid {trip.awarded_bid_id}")
        wanted = ROUTE_FOR_TRIP[trip.status]
        current = [r for r in routes if r.status == wanted and r.unit_id == trip.awarded_unit_id]
        assert len(current) == 1, f"{trip.status} trip: routes {[(r.unit_id, r.status) for r in routes]}"
        assert current[0].agency_id == trip.awarded_agency_id
        assert [r for r in active_routes if r is not current[0]] == [], "a second active route"
        if trip.status in ACTIVE_STATUSES:
            unit = db.session.get(Unit, trip.awarded_unit_id)
            assert unit.current_trip_id is not None
    assert_units_consistent()
    return trip


def outcome(result):
    """One racer's result in a line: the status it answered, or the exception it raised."""
    if isinstance(result, BaseException):
        return f"raised {type(result).__name__}: {result}"
    return f"answered {result[0]}" if isinstance(result, tuple) else repr(result)


class StartingLine:
    """Threads that each act once, released together from a gated point.

    :meth:`gate` wraps a function so the first call in each racing thread waits
    at the barrier (before the call, or right after it with ``after=True``).
    The barrier waits up to ``BARRIER_SECONDS`` for the last racer (a racer reaches
    its gate in well under a second on an idle machine, a few seconds on a loaded
    one); :meth:`run` waits for every racer against one deadline after that.  When the
    line breaks, the test fails saying what each racer did and where the racers that
    never arrived were at that moment, instead of failing later on a result it did not
    expect.
    """

    def __init__(self, monkeypatch, parties):
        """``parties`` threads will be released together."""
        self.monkeypatch = monkeypatch
        self.barrier = threading.Barrier(parties, timeout=BARRIER_SECONDS)
        self.local = threading.local()
        self.racers = {}  # thread ident -> racer index
        self.arrived = set()
        self.stragglers = []
        self.noting = threading.Lock()

    def _wait(self):
        """The barrier, once per racing thread (later calls in the thread pass straight on)."""
        if getattr(self.local, "armed", False):
            self.local.armed = False
            self.arrived.add(threading.get_ident())
            try:
                self.barrier.wait()
            except threading.BrokenBarrierError:
                self._note_stragglers()
                raise

    def _note_stragglers(self):
        """Where the racers that have not reached the gate are now (once, for the failure)."""
        with self.noting:
            if self.stragglers:
                return
            frames = sys._current_frames()
            me = threading.get_ident()
            for ident, index in sorted(self.racers.items(), key=lambda item: item[1]):
                if ident == me and ident not in self.arrived:
                    self.stragglers.append(f"racer {index} finished without reaching the gate")
                elif ident not in self.arrived and ident in frames:
                    stack = "".join(traceback.format_stack(frames[ident])[-8:])
                    self.stragglers.append(f"racer {index} had not reached the gate; it was at:\n{stack}")

    def gate(self, owner, name, after=False):
        """Make ``owner.name`` the point where each racing thread waits for the others."""
        original = getattr(owner, name)

        def gated(*args, **kwargs):
            if not after:
                self._wait()
            result = original(*args, **kwargs)
            if after:
                self._wait()
            return result

        self.monkeypatch.setattr(owner, name, gated)

    def run(self, *actions):
        """Run each action in its own thread; return their results, in order.

        Fails the test (naming each racer's outcome) when a racer raised, or did not
        finish within the barrier's timeout and a minute more.
        """
        results = [None] * len(actions)

        def run_one(index, action):
            self.racers[threading.get_ident()] = index
            self.local.armed = True
            try:
                results[index] = action()
            except Exception as exc:  # reported in the failure below
                results[index] = exc
            if self.local.armed:  # it never reached the gate: nobody waits for it
                self._note_stragglers()
                self.barrier.abort()

        threads = [threading.Thread(target=run_one, args=(i, a), daemon=True) for i, a in enumerate(actions)]
        try:
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + BARRIER_SECONDS + 60
            for thread in threads:
                thread.join(max(deadline - time.monotonic(), 0))
        finally:
            self.monkeypatch.undo()
        running = [i for i, thread in enumerate(threads) if thread.is_alive()]
        if running:
            self._note_stragglers()
        failed = [i for i, result in enumerate(results) if isinstance(result, BaseException)]
        if running or failed:
            outcomes = [f"racer {i}: " + ("still running" if i in running else outcome(result))
                        for i, result in enumerate(results)]
            pytest.fail("the race did not run to the end:\n" + "\n".join(outcomes + self.stragglers),
                        pytrace=False)
        return results


def seed_region(app):
    """The demo region's organisations, units and users, without its history of trips."""
    with app.app_context():
        return demo.seed(trips_per_day=0, days=0)


class Server:
    """A gunicorn process serving the app against the test databases."""

    def __init__(self, app, tmp_path, name, workers, relay):
        self.port = free_port()
        self.log_path = tmp_path / f"server-{name}.log"
        env = dict(os.environ)
        env.update({
            "MEDPORT_CENTER_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "MEDPORT_HOSPITAL_DATABASE_URL": app.config["SQLALCHEMY_BINDS"]["hospital"]["url"],
            "MEDPORT_EMS_DATABASE_URL": app.config["SQLALCHEMY_BINDS"]["ems"]["url"],
            "SECRET_KEY": "multi-worker-test-secret-key-0123456789",
            "MEDPORT_SIGNAL_BACKEND": "postgres",
            "MEDPORT_INPROCESS_RELAY": "1" if relay else "0",
            # The slow poll must not be what delivers within the test's wait.
            "MEDPORT_SIGNAL_POLL_SECONDS": "120",
            "MEDPORT_STREAM_KEEPALIVE_SECONDS": "1",
            "MEDPORT_ACCESS_LOG": "-",
        })
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", str(workers),
                 "-b", f"127.0.0.1:{self.port}", "wsgi:app"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_until_up(self):
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            try:
                status, _, _ = Client(self).request("GET", "/healthz")
                if status in (200, 503):
                    return
            except OSError:
                pass
            try:
                self.process.wait(timeout=0.2)  # doubles as a bounded pause between tries
            except subprocess.TimeoutExpired:
                continue
            break
        raise AssertionError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self):
        """Wait for the graceful shutdown asked by :meth:`terminate`; kill it if it hangs."""
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self):
        if self.process.poll() is None:
            self.process.terminate()


class Client:
    """A minimal HTTP client that keeps the session cookie."""

    def __init__(self, server):
        self.server = server
        self.cookies = SimpleCookie()

    def request(self, method, path, form=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        headers = {"Cookie": "; ".join(f"{k}={m.value}" for k, m in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookies.load(value)
        conn.close()
        return response.status, response.headers, text

    def login(self, email):
        _, _, page = self.request("GET", "/login")
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        status, _, _ = self.request("POST", "/login", {"csrf_token": token, "email": email,
                                                        "password": "medport-demo"})
        assert status == 302, f"login of {email} answered {status}"

    def open_stream(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=3)
        conn.request("GET", "/events", headers={
            "Cookie": "; ".join(f"{k}={m.value}" for k, m in self.cookies.items()),
            "Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200
        return conn, response


class Receiver:
    """An HTTP server on loopback recording each POST; ``answers`` says what to reply, in order
    (a status, or "stall": hold the request until the test ends), then 200."""

    def __init__(self):
        self.requests = []
        self.answers = []
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body.decode()))
                answer = receiver.answers.pop(0) if receiver.answers else 200
                if answer == "stall":
                    receiver.release.wait(30)
                    return
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/medport"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
