"""Alerts in a burst with a slow SMTP server: posting a request must not slow down, and every
email must arrive.

    python bench/alerts_bench.py [--recipients 1000] [--smtp-delay-ms 20] [--posts 20]
                                 [--postgres postgresql://postgres@127.0.0.1:5432]

Builds three SQLite silos in a temporary folder (the embedded default: relay and sender in
threads of this process), or with ``--postgres`` three databases ``medport_alertsbench_*`` on
that server (production: ``flask medport relay`` in a process of its own, its sender a thread
of it), with the migrations and the demo region, adds ``--recipients`` EMS dispatchers spread over the demo agencies, every one
wanting "new request" alerts of BLS requests by email, and starts an SMTP server (aiosmtpd) on
a loopback port that takes ``--smtp-delay-ms`` per message.

1. No alerts: ``--posts`` ALS requests (no recipient wants ALS), each post timed: the posting
   use case as the view runs it (``trip_posting.post`` and its commit, outbox row included).
2. The burst: one BLS request, which the relay turns into one alert per recipient and the sender
   into one email each; then ``--posts`` ALS requests timed the same way while the relay writes
   the alerts, and ``--posts`` more once they are written, while the slow server takes the emails.
Prints the medians and their ratios to the first, how long the relay took to write the alerts, and how long
until the SMTP server had the last email.  Figures are printed, never asserted.
"""
import argparse
import asyncio
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from dashboard.events.outbox import Actor

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa  # noqa: E402
from aiosmtpd.controller import Controller  # noqa: E402
from flask_migrate import upgrade  # noqa: E402
from serving import free_port  # noqa: E402

from dashboard import create_app  # noqa: E402
from dashboard.config import normalise_url  # noqa: E402
from dashboard.events.relay import Relay  # noqa: E402
from dashboard.extensions import db  # noqa: E402
from dashboard.models.base import utcnow  # noqa: E402
from dashboard.models.center import Agency, Alert, AlertSetting, Hospital, User  # noqa: E402
from dashboard.models.hospital import HospitalFacility  # noqa: E402
from dashboard.seed import demo  # noqa: E402
from dashboard.services import trip_posting  # noqa: E402
from dashboard.services.alerts import kinds as alert_kinds  # noqa: E402
from dashboard.services.alerts import settings as alert_settings  # noqa: E402
from dashboard.services.deliveries.sender import Sender  # noqa: E402


class SlowInbox:
    """The SMTP server's handler: ``delay`` seconds per message, counted in shared memory."""

    def __init__(self, delay, count, last_at):
        self.delay, self.count, self.last_at = delay, count, last_at

    async def handle_DATA(self, server, session, envelope):
        await asyncio.sleep(self.delay)
        with self.count.get_lock():
            self.count.value += 1
            self.last_at.value = time.time()
        return "250 OK"


def serve_smtp(port, delay, count, last_at, stop):
    """The slow SMTP server, in a process of its own (as a real one would be)."""
    controller = Controller(SlowInbox(delay, count, last_at), hostname="127.0.0.1", port=port)
    controller.start()
    stop.wait()
    controller.stop()


def add_recipients(count):
    """``count`` EMS dispatchers over the demo agencies, each wanting BLS new requests by email."""
    agencies = db.session.scalars(sa.select(Agency).order_by(Agency.id)).all()
    password_hash = db.session.scalar(sa.select(User.password_hash).limit(1))
    users = [User(email=f"dispatch{i}@bench.medport.test", display_name=f"Dispatcher {i}", role="ems",
                  agency_id=agencies[i % len(agencies)].id, password_hash=password_hash) for i in range(count)]
    db.session.add_all(users)
    db.session.flush()
    kinds = [kind for kind, _label in alert_kinds.KINDS["ems"]]
    db.session.add_all([AlertSetting(scope=alert_settings.user_scope(user.id), kind=kind, enabled=True,
                                     email=kind == alert_kinds.NEW_REQUEST,
                                     levels="BLS" if kind == alert_kinds.NEW_REQUEST else "")
                        for user in users for kind in kinds])
    db.session.commit()


def post(level):
    """Post one request of the demo's first hospital, as the view does; returns seconds."""
    hospital = db.session.scalar(sa.select(Hospital).order_by(Hospital.id).limit(1))
    origin = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == hospital.id)
                               .order_by(HospitalFacility.id).limit(1))
    destination = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id != hospital.id)
                                    .order_by(HospitalFacility.id).limit(1))
    nurse = db.session.scalar(sa.select(User.id).where(User.hospital_id == hospital.id).limit(1))
    db.session.commit()
    now = utcnow()
    fields = dict(origin_facility_id=origin.id, pickup_location="4 West", destination_facility_id=destination.id,
                  level_of_care=level, mobility="stretcher", urgency="routine",
                  window_start=now + timedelta(hours=6), window_end=now + timedelta(hours=7), age_group="adult",
                  weight_kg=80, bid_deadline=now + timedelta(minutes=30), invite_mode="all",
                  invite_all_after_minutes=None)
    started = time.perf_counter()
    trip_posting.post(hospital.id, hospital.short_code, fields, actor=Actor(nurse, None, "Bench Nurse"))
    db.session.commit()
    return time.perf_counter() - started


def fresh_postgres(base):
    """Three empty bench databases on the server at ``base``; returns their URLs."""
    engine = sa.create_engine(f"{base}/postgres", isolation_level="AUTOCOMMIT")
    urls = {}
    with engine.connect() as conn:
        for silo in ("center", "hospital", "ems"):
            name = f"medport_alertsbench_{silo}"
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            urls[silo] = f"{base}/{name}"
    engine.dispose()
    return urls


def timed_posts(app, count, level="ALS"):
    with app.app_context():
        values = [post(level) for _ in range(count)]
        db.session.remove()
    return values


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=1000)
    parser.add_argument("--smtp-delay-ms", type=float, default=20.0)
    parser.add_argument("--posts", type=int, default=20)
    parser.add_argument("--postgres", help="server URL: run on PostgreSQL, the relay in its own process")
    args = parser.parse_args()

    port = free_port()
    count, last_at, stop = multiprocessing.Value("i", 0), multiprocessing.Value("d", 0.0), multiprocessing.Event()
    smtp = multiprocessing.Process(target=serve_smtp, args=(port, args.smtp_delay_ms / 1000, count, last_at, stop),
                                   daemon=True)
    smtp.start()
    if args.postgres:
        urls = fresh_postgres(normalise_url(args.postgres.rstrip("/")))
    else:
        folder = tempfile.mkdtemp(prefix="medport-alerts-bench-")
        urls = {silo: f"sqlite:///{folder}/medport_{silo}.sqlite3" for silo in ("center", "hospital", "ems")}
    app = create_app({
        "TESTING": True, "SECRET_KEY": "bench", "MEDPORT_INPROCESS_RELAY": False, "MEDPORT_SIGNAL_BACKEND": "local",
        "SQLALCHEMY_DATABASE_URI": urls["center"], "SQLALCHEMY_ENGINE_OPTIONS": {},
        "SQLALCHEMY_BINDS": {"hospital": {"url": urls["hospital"]}, "ems": {"url": urls["ems"]}},
        "MEDPORT_SMTP_URL": f"smtp://127.0.0.1:{port}", "MEDPORT_BASE_URL": "https://medport.test",
    })
    with app.app_context():
        upgrade()
        demo.seed()
        add_recipients(args.recipients)
    relay, sender = Relay(app), Sender(app, poll_seconds=0.5)
    relay.drain()  # the demo's backlog, before anything is timed
    process = None
    if args.postgres:
        env = dict(os.environ, MEDPORT_CENTER_DATABASE_URL=urls["center"], MEDPORT_HOSPITAL_DATABASE_URL=urls["hospital"],
                   MEDPORT_EMS_DATABASE_URL=urls["ems"], SECRET_KEY="bench-secret-key-for-the-relay",
                   MEDPORT_SMTP_URL=f"smtp://127.0.0.1:{port}", MEDPORT_BASE_URL="https://medport.test")
        process = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "medport", "relay", "--poll", "0.5"],
                                   cwd=Path(__file__).resolve().parent.parent, env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        for target, kwargs in ((relay.run_forever, {"poll_seconds": 0.5}), (sender.run_forever, {})):
            threading.Thread(target=target, kwargs=kwargs, daemon=True).start()
    try:
        quiet = timed_posts(app, args.posts)
        with app.app_context():
            before = db.session.scalar(sa.select(sa.func.count(Alert.id)))
            db.session.commit()
        burst_started = time.time()
        with app.app_context():
            post("BLS")
            db.session.remove()
        busy = timed_posts(app, args.posts)
        written_at = sending = None
        deadline = time.time() + 900
        while time.time() < deadline:
            with app.app_context():
                written = db.session.scalar(sa.select(sa.func.count(Alert.id))) - before
                db.session.remove()
            if written_at is None and written >= args.recipients:
                written_at = time.time()
                # The alerts are written; the slow server is still taking their emails.
                sending = timed_posts(app, args.posts)
                sent_meanwhile = count.value
            if count.value >= args.recipients:
                break
            time.sleep(0.2)
    finally:
        relay.stop()
        sender.stop()
        if process is not None:
            process.terminate()
            process.wait(10)
        stop.set()
        smtp.join(10)
    where = ("PostgreSQL, relay and sender in their own process" if args.postgres
             else "SQLite, relay and sender threads in this process")
    print(f"recipients {args.recipients}, SMTP server {args.smtp_delay_ms:.0f} ms per message, "
          f"{args.posts} posts timed per phase ({where})")
    print(f"post a request, no alerts:        median {statistics.median(quiet) * 1000:6.1f} ms  "
          f"max {max(quiet) * 1000:6.1f} ms")
    print(f"post a request, during the burst: median {statistics.median(busy) * 1000:6.1f} ms  "
          f"max {max(busy) * 1000:6.1f} ms")
    print(f"ratio (burst / none, medians): {statistics.median(busy) / statistics.median(quiet):.2f}")
    if sending:
        print(f"post a request, while the emails go out ({sent_meanwhile} of {args.recipients} sent then): "
              f"median {statistics.median(sending) * 1000:6.1f} ms  max {max(sending) * 1000:6.1f} ms  "
              f"ratio {statistics.median(sending) / statistics.median(quiet):.2f}")
    if written_at is not None:
        print(f"alerts written by the relay: {written_at - burst_started:.1f} s after the post")
    if count.value:
        print(f"emails received: {count.value} of {args.recipients}; the last {last_at.value - burst_started:.1f} s "
              f"after the post")


if __name__ == "__main__":
    main()
