"""Crashes lose nothing: a relay or a web worker killed (SIGKILL) in the middle of its work.

On PostgreSQL, against the test databases, with real processes:

* the relay (``flask medport relay``) is held in the middle of an event's delivery
  (the center's live-signal table locked, so the follow-up in the EMS silo has
  committed and the center's record waits), killed there, and started again: every
  event ends delivered, each follow-up applied exactly once (inbox rows, bids,
  routes), one audit entry per event;
* a gunicorn worker is killed while its request waits inside the write (the trip's
  row locked): nothing of the write stays, neither the change nor its event; the
  same request on the respawned worker then commits the change with its one event.

What is "in the middle" is seen in the database (``pg_stat_activity``), with
bounded polling loops; every wait has a limit.
"""
import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa

from dashboard.events.relay import LEASE_SECONDS
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import AuditLog, LiveSignal
from dashboard.models.ems import EmsRoute, TransportBid
from dashboard.models.hospital import TransportRequest, TransportRequestEvent
from dashboard.models.outbox import INBOX_BY_SILO, OUTBOX_BY_SILO
from tests.helpers import ROOT, Client, Server, assert_consistent, award, place_bid, post_trip, seed_region

WAIT_SECONDS = 30


@pytest.fixture
def postgres(backend):
    """Skip on SQLite: the processes share the PostgreSQL test databases."""
    if backend != "postgres":
        pytest.skip("processes are killed against the PostgreSQL test databases")


@pytest.fixture
def region(app):
    """The demo region without its history of trips."""
    return seed_region(app)


def silo_url(app, silo):
    """The test database URL of a silo."""
    return app.config["SQLALCHEMY_DATABASE_URI"] if silo == "center" else app.config["SQLALCHEMY_BINDS"][silo]["url"]


def silo_env(app):
    """The environment of a process that works on the test databases."""
    env = dict(os.environ)
    env.update({
        "MEDPORT_CENTER_DATABASE_URL": silo_url(app, "center"),
        "MEDPORT_HOSPITAL_DATABASE_URL": silo_url(app, "hospital"),
        "MEDPORT_EMS_DATABASE_URL": silo_url(app, "ems"),
        "MEDPORT_SIGNAL_BACKEND": "postgres",
        "SECRET_KEY": "crash-safety-test-secret-key-0123456789",
    })
    return env


def poll(check, process, what, seconds=WAIT_SECONDS):
    """Call ``check`` until it returns something true (returned); the process must stay up.

    Between tries it waits on the process itself, so a process that dies ends the wait.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        try:
            process.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            continue
        raise AssertionError(f"the process ended while waiting for {what}")
    raise AssertionError(f"gave up waiting for {what}")


def waiting_on_a_lock(engine):
    """Backends of this database blocked on a lock (other than ours), by pid."""
    with engine.connect() as conn:
        return list(conn.execute(sa.text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")).scalars())


def terminate(engine, pids):
    """End the server side of a killed process's connections (as the server does once it notices)."""
    with engine.connect() as conn:
        for pid in pids:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        conn.commit()


@contextmanager
def engines(app):
    """Engines of the test's own (one per silo), apart from the app's."""
    made = {silo: sa.create_engine(silo_url(app, silo)) for silo in OUTBOX_BY_SILO}
    try:
        yield made
    finally:
        for engine in made.values():
            engine.dispose()


class RelayProcess:
    """``flask medport relay`` against the test databases."""

    def __init__(self, app, tmp_path, name):
        """Start it; its output goes to a log file in ``tmp_path``."""
        self.log_path = tmp_path / f"relay-{name}.log"
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flask", "--app", "wsgi", "medport", "relay", "--poll", "0.5"],
                cwd=ROOT, env=silo_env(app), stdout=log, stderr=subprocess.STDOUT)

    def kill(self):
        """SIGKILL: no clean-up, no finishing the pass under way."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self):
        """End it (it is idle by then), killing it if it does not stop."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def counts(app):
    """Delivered and not yet delivered events, over the three outboxes."""
    with app.app_context():
        done = left = 0
        for model in OUTBOX_BY_SILO.values():
            done += db.session.scalar(sa.select(sa.func.count(model.id)).where(model.status == "delivered"))
            left += db.session.scalar(sa.select(sa.func.count(model.id)).where(model.status != "delivered"))
        db.session.commit()
        return done, left


def test_a_relay_killed_in_the_middle_of_a_delivery_loses_nothing(postgres, app, region, tmp_path):
    with app.app_context():
        trip_ids = [post_trip(code) for code in ("ALT", "MNV", "TYR", "JVM")]
        bids = {trip_id: [place_bid(trip_id, code, eta) for code, eta in (("AEMS", 20), ("CMT", 25))]
                for trip_id in trip_ids}
    relays = [RelayProcess(app, tmp_path, "first")]
    try:
        # The first batch: delivered while the relay runs undisturbed.
        poll(lambda: counts(app)[1] == 0, relays[0].process, "the first events to be delivered")
        with engines(app) as silo_engines, silo_engines["center"].connect() as center:
            center.execute(sa.text(f'LOCK TABLE "{LiveSignal.__tablename__}" IN EXCLUSIVE MODE'))
            for trip_id in trip_ids:  # the second batch: awards, each with an EMS follow-up
                with app.app_context():
                    award(trip_id, bids[trip_id][0])
            stuck = poll(lambda: waiting_on_a_lock(silo_engines["center"]), relays[0].process,
                         "the relay to wait on the center's record")
            done, left = counts(app)
            assert done > 0 and left >= len(trip_ids)  # some delivered, not all
            with app.app_context():
                hospital_outbox, ems_inbox = OUTBOX_BY_SILO["hospital"], INBOX_BY_SILO["ems"]
                claimed = db.session.scalars(sa.select(hospital_outbox.event_id).where(
                    hospital_outbox.claimed_until.is_not(None), hospital_outbox.status == "pending")).all()
                assert len(claimed) == 1  # the relay holds one event ...
                applied = db.session.scalar(sa.select(sa.func.count(ems_inbox.id)).where(
                    ems_inbox.event_id == claimed[0]))
                assert applied == 1  # ... whose EMS follow-up has committed, its record not
                assert db.session.scalar(sa.select(AuditLog.id).where(AuditLog.event_id == claimed[0])) is None
                db.session.commit()
            relays[0].kill()
            terminate(silo_engines["center"], stuck)
            center.rollback()
        with app.app_context():
            # The killed relay's lease runs out (LEASE_SECONDS), as if that time had passed.
            db.session.execute(sa.update(hospital_outbox).where(hospital_outbox.claimed_until.is_not(None))
                               .values(claimed_until=utcnow() - timedelta(seconds=LEASE_SECONDS)))
            db.session.commit()
        relays.append(RelayProcess(app, tmp_path, "restarted"))
        poll(lambda: counts(app)[1] == 0, relays[1].process, "every event to be delivered after the restart")
    finally:
        for relay in relays:
            relay.stop()
    with app.app_context():
        events = []
        for silo in ("hospital", "ems"):
            model = OUTBOX_BY_SILO[silo]
            events += db.session.scalars(sa.select(model.event_id)).all()
        audited = db.session.scalars(sa.select(AuditLog.event_id).where(AuditLog.event_id.is_not(None))).all()
        assert sorted(audited) == sorted(events), "one audit entry per event"
        for silo, inbox in INBOX_BY_SILO.items():
            pairs = db.session.execute(sa.select(inbox.event_id, inbox.handler)).all()
            assert len(pairs) == len(set(pairs)), f"a follow-up applied twice in {silo}"
        awards_applied = db.session.scalar(sa.select(sa.func.count(INBOX_BY_SILO["ems"].id)).where(
            INBOX_BY_SILO["ems"].handler == "ems_apply_award"))
        assert awards_applied == len(trip_ids)
        for trip_id in trip_ids:
            trip = assert_consistent(trip_id)
            winner, loser = bids[trip_id]
            assert trip.awarded_bid_id == winner
            assert (db.session.get(TransportBid, winner).status,
                    db.session.get(TransportBid, loser).status) == ("accepted", "declined")
            assert db.session.scalar(sa.select(sa.func.count(EmsRoute.id)).where(EmsRoute.trip_id == trip_id)) == 1


def worker_pids(server):
    """The gunicorn master's worker processes."""
    master = server.process.pid
    with open(f"/proc/{master}/task/{master}/children") as children:
        return [int(pid) for pid in children.read().split()]


def send(client, path, form, outcome):
    """POST in a thread: the answer's status, or the error of a connection that was cut."""
    conn = http.client.HTTPConnection("127.0.0.1", client.server.port, timeout=WAIT_SECONDS)
    try:
        conn.request("POST", path, body=urlencode(form), headers={
            "Cookie": "; ".join(f"{k}={m.value}" for k, m in client.cookies.items()),
            "Content-Type": "application/x-www-form-urlencoded"})
        outcome.append(conn.getresponse().status)
    except (OSError, http.client.HTTPException) as exc:
        outcome.append(exc)
    finally:
        conn.close()


def trip_record(app, trip_id):
    """The trip's status and version, its history actions and its outbox event types."""
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        history = db.session.scalars(sa.select(TransportRequestEvent.action).where(
            TransportRequestEvent.trip_id == trip_id).order_by(TransportRequestEvent.id)).all()
        model = OUTBOX_BY_SILO["hospital"]
        events = db.session.execute(sa.select(model.type, model.payload).where(
            model.entity_id == trip.public_id).order_by(model.id)).all()
        record = (trip.status, trip.version, history, [(t, p["version"]) for t, p in events])
        db.session.commit()
        return record


@pytest.fixture
def server(postgres, app, region, tmp_path):
    """gunicorn (``gunicorn.conf.py``) with one worker and no relay, on the test databases."""
    started = Server(app, tmp_path, "crash", workers=1, relay=False)
    try:
        started.wait_until_up()
        yield started
    finally:
        started.terminate()
        started.stop()


def test_a_worker_killed_inside_a_write_leaves_all_of_it_or_none(server, app, tmp_path):
    with app.app_context():
        trip_id = post_trip("ALT")
        public_id = db.session.get(TransportRequest, trip_id).public_id
    before = trip_record(app, trip_id)
    assert before[0] == "open" and before[3] == [("trip.posted", 1)]
    client = Client(server)
    client.login("nurse@altoona.medport.test")
    path = f"/hospital/requests/{public_id}/cancel"
    _, _, page = client.request("GET", path)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    form = {"csrf_token": token, "reason": "not_needed", "note": "", "version": before[1]}
    worker = worker_pids(server)
    assert len(worker) == 1
    outcome = []
    with engines(app) as silo_engines, silo_engines["hospital"].connect() as hospital:
        hospital.execute(sa.select(TransportRequest.id).where(TransportRequest.id == trip_id).with_for_update())
        request = threading.Thread(target=send, args=(client, path, form, outcome), daemon=True)
        request.start()
        stuck = poll(lambda: waiting_on_a_lock(silo_engines["hospital"]) or outcome, server.process,
                     "the worker's write to wait on the trip's row")
        assert not outcome, f"the request was answered ({outcome}) instead of waiting"
        os.kill(worker[0], signal.SIGKILL)
        request.join(WAIT_SECONDS)
        assert not request.is_alive()
        terminate(silo_engines["hospital"], stuck)
        hospital.rollback()
    assert outcome and isinstance(outcome[0], Exception), outcome  # the connection was cut
    assert trip_record(app, trip_id) == before  # none of the write: no change, no history, no event
    # The master starts a new worker; the same request now goes through, all of it.
    poll(lambda: worker_pids(server) and worker_pids(server) != worker, server.process, "a new worker")
    server.wait_until_up()
    status, _, _ = client.request("POST", path, form)
    assert status == 302
    status, version, history, events = trip_record(app, trip_id)
    assert (status, version) == ("cancelled", before[1] + 1)
    assert history == ["posted", "cancelled"]
    assert events == [("trip.posted", 1), ("trip.cancelled", before[1] + 1)]
