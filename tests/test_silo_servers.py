"""Three PostgreSQL servers, one per silo, and one of them killed in the middle of a shift.

Each silo's database lives on its own server (Debian's ``initdb``/``pg_ctl``, under a
temporary directory, on its own loopback port).  A scripted shift runs through the app:
nurses post and award, dispatchers bid, crews move their trips on, everyone reloads their
boards.  After a few rounds one server's postmaster (and its backends) is killed with
``SIGKILL``; the shift goes on; the server is started again (crash recovery) and the shift
goes on again.  Then the relay drains the backlog.

What must hold, for each silo killed:
* every action acknowledged to a user (a redirect or a page, not a 503) is there after
  recovery: lost = 0;
* no answer is a 5xx other than the documented 503 naming the silo that is down;
* every event the hospital and EMS silos wrote has its audit entry in the center, once;
* every outbox drains to zero.

The figures of each run are printed (``pytest -s``) and the README quotes one run.
"""
import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import sqlalchemy as sa

from dashboard import create_app
from dashboard.config import SILOS, engine_options
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.center import Agency, AuditLog
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import HospitalFacility, TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import center_reads, session_trust
from tests.conftest import REQUIRE_PG, _wipe
from tests.helpers import local_time

ROUNDS = 9
KILL_AT, RESTART_AT = 3, 6
STEPS = ("en_route", "at_pickup", "transporting", "at_destination", "back_in_service")
#: The status each crew step brings the trip and its route to ("back in service" completes it).
STEPS_REACH = dict(zip(STEPS, ("en_route", "at_pickup", "transporting", "at_destination", "completed"), strict=True))
NURSE = "nurse@altoona.medport.test"
DISPATCHERS = {"AEMS": "dispatch@altoonaems.medport.test", "BCA": "dispatch@blaircounty.medport.test"}
COORDINATOR = "coordinator@medport.test"
LABELS = {"center": "Center", "hospital": "Hospital", "ems": "EMS"}
#: What the shift must get done while each silo's server is down.
WORKS_WHILE_DOWN = {
    "center": {"post", "bid", "award", "advance", "view /hospital/", "view /ems/", "view /center/"},
    "hospital": {"advance", "view /ems/trips", "view /center/units"},
    "ems": {"post", "view /hospital/", "view /center/"},
}


def _bin(name):
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def _as_postgres(args, **kwargs):
    """Run a PostgreSQL server command as the ``postgres`` user (initdb refuses root)."""
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120, **kwargs)


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One PostgreSQL server in a directory of its own, on a loopback port."""

    def __init__(self, root, name):
        self.name, self.port = name, _free_port()
        self.data = os.path.join(root, name)
        self.log = os.path.join(root, f"{name}.log")

    def init(self):
        _as_postgres([_bin("initdb"), "-D", self.data, "-A", "trust", "-U", "postgres", "-E", "UTF8",
                      "--no-sync"])

    def start(self):
        """Start the server as a child of this process (so a killed one is reaped here) and
        wait until it accepts connections (bounded)."""
        args = [_bin("postgres"), "-D", self.data, "-p", str(self.port), "-k", os.path.dirname(self.data),
                "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
                "-c", "max_connections=60"]
        if os.geteuid() == 0:
            args = ["runuser", "-u", "postgres", "--", *args]
        with open(self.log, "a") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                probe = sa.create_engine(self.url("postgres"), poolclass=sa.pool.NullPool)
                with probe.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                probe.dispose()
                return
            except (OSError, sa.exc.OperationalError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    with open(self.log) as handle:
                        tail = handle.read()[-2000:]
                    raise AssertionError(f"{self.name} server did not start:\n{tail}") from None
                time.sleep(0.1)

    def kill(self):
        """SIGKILL the postmaster and its backends, as a crashed server; wait until they are gone."""
        with open(os.path.join(self.data, "postmaster.pid")) as handle:
            pid = int(handle.readline())
        children = [int(entry) for entry in os.listdir("/proc") if entry.isdigit() and _parent(int(entry)) == pid]
        for victim in [pid, *children]:
            try:
                os.kill(victim, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)  # reaps the postmaster (or runuser, which reaps it)
        deadline = time.monotonic() + 30
        while any(os.path.exists(f"/proc/{p}") and _state(p) != "Z" for p in children):
            assert time.monotonic() < deadline, "the killed server's backends did not go away"
            time.sleep(0.05)

    def stop(self):
        """Stop at once (tear-down)."""
        process = getattr(self, "process", None)
        if process is not None and process.poll() is None:
            try:
                with open(os.path.join(self.data, "postmaster.pid")) as handle:
                    os.kill(int(handle.readline()), signal.SIGQUIT)  # PostgreSQL's immediate shutdown
            except (OSError, ValueError):
                process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)

    def url(self, database):
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/{database}"


def _parent(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _state(pid):
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


@pytest.fixture(scope="module")
def servers():
    reason = None
    if not _bin("initdb") or not _bin("pg_ctl"):
        reason = "PostgreSQL server programs (initdb, pg_ctl) are not installed"
    elif os.geteuid() == 0 and not shutil.which("runuser"):
        reason = "runuser is needed to start PostgreSQL as the postgres user"
    if reason:
        if REQUIRE_PG:
            pytest.fail(reason + " (MEDPORT_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    root = tempfile.mkdtemp(prefix="medport-silo-servers-")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    running = {silo: Server(root, silo) for silo in SILOS}
    try:
        for server in running.values():
            server.init()
            server.start()
            admin = sa.create_engine(server.url("postgres"), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "medport_{server.name}"'))
            admin.dispose()
        yield running
    finally:
        for server in running.values():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def shift_app(servers):
    from flask_migrate import upgrade

    from dashboard.seed import demo as demo_service

    urls = {silo: servers[silo].url(f"medport_{silo}") for silo in SILOS}
    config = {
        "TESTING": True, "SECRET_KEY": "test-secret-key", "WTF_CSRF_ENABLED": False,
        "MEDPORT_INPROCESS_RELAY": False, "MEDPORT_SIGNAL_BACKEND": "local",
        "SQLALCHEMY_DATABASE_URI": urls["center"],
        # The production engine options: pre-ping, connect timeout (a dead server fails fast).
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(urls["center"]),
        "SQLALCHEMY_BINDS": {silo: {"url": urls[silo], **engine_options(urls[silo])}
                             for silo in SILOS if silo != "center"},
    }
    center_reads.forget()
    session_trust.forget()
    app = create_app(config)
    with app.app_context():
        upgrade()
    _wipe(app)
    with app.app_context():
        demo_service.seed()
    yield app
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def _signed_in(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": "medport-demo"}).status_code == 302
    return client


class Shift:
    """The scripted shift: who does what, and what each answer was."""

    def __init__(self, app, down_label):
        self.app, self.down_label = app, down_label
        self.log = []  # (round, action, status, key)
        self.wrong = []  # answers that are neither acknowledged nor the documented 503

    def record(self, round_, action, response, key=None):
        status = response.status_code
        body = response.get_data(as_text=True)
        documented = status == 503 and "data is temporarily unavailable" in body
        if status >= 500 and not documented:
            self.wrong.append((round_, action, status))
        if 400 <= status < 500 and status not in (409,):
            self.wrong.append((round_, action, status))
        self.log.append((round_, action, status, key))
        return status < 400

    def acknowledged(self, action=None):
        return [entry for entry in self.log if entry[2] < 400 and (action is None or entry[1] == action)]


def _harness_read(app, fn):
    """A read the script itself makes (not a user's action); None when the silo is down."""
    try:
        with app.app_context():
            try:
                return fn()
            finally:
                db.session.remove()
    except sa.exc.OperationalError:
        return None


def _units(app, code, count):
    with app.app_context():
        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == code))
        made = []
        for i in range(count):
            unit = Unit(agency_id=agency_id, number=f"S{code[:2]}{i:02d}", level="ALS", status="available")
            db.session.add(unit)
            db.session.flush()
            made.append(unit.public_id)
        db.session.commit()
        return made


def _outbox_backlog(app):
    with app.app_context():
        try:
            return sum(db.session.scalar(sa.select(sa.func.count(m.id)).where(m.status != "delivered"))
                       for m in OUTBOX_BY_SILO.values())
        finally:
            db.session.remove()


@pytest.fixture
def postgres_run(backend):
    if backend != "postgres":
        pytest.skip("three PostgreSQL servers of its own: run once, with the PostgreSQL half")


@pytest.mark.parametrize("silo", SILOS)
def test_a_silo_server_killed_mid_shift_loses_nothing(postgres_run, shift_app, servers, silo):
    app = shift_app
    relay = Relay(app)
    nurse = _signed_in(app, NURSE)
    dispatchers = {code: _signed_in(app, email) for code, email in DISPATCHERS.items()}
    coordinator = _signed_in(app, COORDINATOR)
    units = {code: _units(app, code, ROUNDS) for code in DISPATCHERS}
    with app.app_context():
        origin = db.session.scalar(sa.select(HospitalFacility.public_id).where(
            HospitalFacility.name == "Altoona Regional Medical Center"))
        destination = db.session.scalar(sa.select(HospitalFacility.public_id).where(
            HospitalFacility.name == "Johnstown Memorial Hospital"))
        db.session.remove()
    shift = Shift(app, LABELS[silo])
    posted = {}  # round -> trip public id
    bids = {}  # round -> (trip public id, unit public id, agency code)
    awarded = {}  # round -> trip public id
    steps = {}  # trip public id -> last acknowledged step
    killed_at = restarted_at = None
    alphabet = "ACDEFHJKMNPRTUVWXY3479"

    def pass_relay():
        relay.run_once()

    for round_ in range(ROUNDS):
        if round_ == KILL_AT:
            servers[silo].kill()
            killed_at = time.monotonic()
        if round_ == RESTART_AT:
            servers[silo].start()
            restarted_at = time.monotonic()
        code = list(DISPATCHERS)[round_ % 2]
        # A nurse posts a request.
        form = dict(
            origin_facility=origin, pickup_location="4 West, room 412", destination_facility=destination,
            destination_address="", level_of_care="ALS", urgency="urgent", mobility="stretcher",
            window_start=local_time(app, 300), window_end=local_time(app, 420),
            patient_ref="P-" + alphabet[round_] * 6, age_group="older_adult", weight_kg="82",
            isolation="contact", oxygen_lpm="2.5", cardiac_monitor="y", other_needs="", notes="",
            bid_deadline_minutes="60", invite_mode="all", invite_all_after_minutes="")
        response = nurse.post("/hospital/requests/new", data=form)
        if shift.record(round_, "post", response, form["patient_ref"]):
            posted[round_] = response.headers["Location"].rsplit("/", 1)[1]
        pass_relay()
        # A dispatcher bids on it.
        if round_ in posted:
            unit = units[code][round_]
            response = dispatchers[code].post(f"/ems/requests/{posted[round_]}/bid",
                                              data={"unit": unit, "eta_minutes": "20", "note": ""})
            if shift.record(round_, "bid", response, (posted[round_], unit)):
                bids[round_] = (posted[round_], unit, code)
        pass_relay()
        # The nurse awards the bid of the round before (its bid has reached every silo).
        earlier = bids.get(round_ - 1)
        if earlier and round_ - 1 not in awarded:
            trip_public, unit_public, _ = earlier

            def offer(trip_public=trip_public, unit_public=unit_public):
                trip = db.session.scalar(sa.select(TransportRequest).where(
                    TransportRequest.public_id == trip_public))
                bid = db.session.scalar(sa.select(TransportBid).join(Unit, Unit.id == TransportBid.unit_id)
                                        .where(Unit.public_id == unit_public, TransportBid.trip_id == trip.id))
                return bid.public_id, trip.version

            found = _harness_read(app, offer)
            if found:
                response = nurse.post(f"/hospital/requests/{trip_public}/award",
                                      data={"bid": found[0], "version": str(found[1])})
                if shift.record(round_, "award", response, trip_public):
                    awarded[round_ - 1] = trip_public
        pass_relay()
        # Crews move their awarded trips on, one step a round.
        for trip_public in list(awarded.values()):
            done = steps.get(trip_public)
            if done == STEPS[-1]:
                continue
            step = STEPS[STEPS.index(done) + 1] if done else STEPS[0]
            agency = next(c for r, (t, _u, c) in bids.items() if t == trip_public)
            response = dispatchers[agency].post(f"/ems/trips/{trip_public}/advance", data={"step": step})
            if shift.record(round_, "advance", response, (trip_public, step)):
                steps[trip_public] = step
            pass_relay()
        # Everyone reloads their boards.
        for client, path in ((nurse, "/hospital/"), (dispatchers["AEMS"], "/ems/"),
                             (dispatchers["AEMS"], "/ems/trips"), (coordinator, "/center/"),
                             (coordinator, "/center/units"), (coordinator, "/center/audit")):
            shift.record(round_, "view " + path, client.get(path))

    # Recovery: the relay drains the backlog in real time (bounded).
    started = time.monotonic()
    deadline = started + 120
    while True:
        relay.run_once()
        backlog = _outbox_backlog(app)
        if backlog == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    drained = time.monotonic() - started

    # What was acknowledged is there.
    lost = []
    with app.app_context():
        for _r, _a, _s, ref in shift.acknowledged("post"):
            if db.session.scalar(sa.select(TransportRequest.id).where(TransportRequest.patient_ref == ref)) is None:
                lost.append(("post", ref))
        for _r, _a, _s, (trip_public, unit_public) in shift.acknowledged("bid"):
            found = db.session.scalar(sa.select(TransportBid.id).join(Unit, Unit.id == TransportBid.unit_id)
                                      .where(Unit.public_id == unit_public))
            if found is None:
                lost.append(("bid", trip_public))
        for _r, _a, _s, trip_public in shift.acknowledged("award"):
            trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == trip_public))
            if trip is None or trip.awarded_bid_id is None:
                lost.append(("award", trip_public))
        order = ("awarded", "en_route", "at_pickup", "transporting", "at_destination", "completed")
        for _r, _a, _s, (trip_public, step) in shift.acknowledged("advance"):
            trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == trip_public))
            route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_public_id == trip_public))
            reached = order.index(STEPS_REACH[step])
            if trip is None or order.index(trip.status) < reached or route is None \
                    or order.index(route.status if route.status != "planned" else "awarded") < reached:
                lost.append(("advance", trip_public, step))
        events = set()
        for name in ("hospital", "ems"):
            model = OUTBOX_BY_SILO[name]
            events.update(db.session.scalars(sa.select(model.event_id)))
        audited = db.session.execute(sa.select(AuditLog.event_id, sa.func.count(AuditLog.id))
                                     .where(AuditLog.event_id.in_(events)).group_by(AuditLog.event_id)).all()
        db.session.remove()
    acknowledged = len(shift.acknowledged())
    refused = sum(1 for entry in shift.log if entry[2] == 503)
    print(f"\n{silo} server killed (SIGKILL) at round {KILL_AT}, restarted at round {RESTART_AT} "
          f"after {restarted_at - killed_at:.1f} s: {len(shift.log)} actions attempted, {acknowledged} "
          f"acknowledged, {refused} answered 503 naming the silo, {len(lost)} lost, "
          f"{len(shift.wrong)} other errors; backlog drained in {drained:.1f} s; "
          f"{len(events)} hospital/EMS events, {len(audited)} audited")
    assert shift.wrong == []
    assert lost == []
    assert backlog == 0
    assert len(audited) == len(events) and all(count == 1 for _e, count in audited)
    assert refused > 0, "the killed silo was noticed"
    # Work that does not need the killed silo went on while it was down.
    during = {entry[1] for entry in shift.log if KILL_AT <= entry[0] < RESTART_AT and entry[2] < 400}
    assert WORKS_WHILE_DOWN[silo] <= during, (silo, sorted(during))
