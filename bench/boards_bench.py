"""Busy boards benchmark: each open-request board rendered with 100 and with 1,000 open requests,
in one run, and the ratio.

    python bench/boards_bench.py                      # the embedded default (SQLite files)
    python bench/boards_bench.py --database postgres  # three PostgreSQL databases

Builds three fresh silos (SQLite files under a temporary folder, or ``medport_benchboards_*`` on
``--server``) with the migrations, seeds the demo region, then tops the region up to 100 open
requests (posted through ``trip_posting.post`` at Altoona Regional, open to every agency, of every
urgency, deadline and pickup window) and times every board; then to 1,000 open requests and
times them again.  The boards are the hospital's requests (the Altoona nurse), the EMS board
(Altoona EMS, which serves every level) and the regional board (the coordinator), each as the
full page and as the live panel htmx fetches, in their default order and sorted at risk first.

Each figure is the median over ``--samples`` requests after ``--warmup`` unmeasured ones, through
the Flask test client in this process: CPU ms (``time.process_time``: the app, the templates and,
on SQLite, the database's own work) and wall ms.  The ratio is the 1,000-request figure divided
by the 100-request one (the target is at most 1.5×).  Figures are printed, never asserted.
"""
import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import timedelta

import sqlalchemy as sa

from dashboard.events.outbox import Actor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from dashboard import create_app  # noqa: E402
from dashboard.config import normalise_url  # noqa: E402
from dashboard.extensions import db  # noqa: E402

SILOS = ("center", "hospital", "ems")
NURSE, DISPATCHER, COORDINATOR = ("nurse@altoona.medport.test", "dispatch@altoonaems.medport.test",
                                  "coordinator@medport.test")
DEMO_PASSWORD = "medport-demo"
PAGES = [  # (label, who, path)
    ("hospital requests", NURSE, "/hospital/"),
    ("hospital requests panel (htmx)", NURSE, "/hospital/requests/panel"),
    ("hospital requests, at risk first", NURSE, "/hospital/?sort=risk"),
    ("EMS board", DISPATCHER, "/ems/"),
    ("EMS board panel (htmx)", DISPATCHER, "/ems/board/panel"),
    ("EMS board, at risk first", DISPATCHER, "/ems/?sort=risk"),
    ("regional board", COORDINATOR, "/center/"),
    ("regional board panel (htmx)", COORDINATOR, "/center/board/panel"),
    ("regional board, by deadline", COORDINATOR, "/center/?sort=deadline"),
]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432",
                        help="PostgreSQL server (with --database postgres)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000],
                        help="open requests in the region at each measuring (default 100 1000)")
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    return parser.parse_args()


def database_urls(args, folder):
    if args.database == "sqlite":
        return {silo: f"sqlite:///{folder}/medport_{silo}.sqlite3" for silo in SILOS}
    server = normalise_url(args.server.rstrip("/"))
    engine = sa.create_engine(server + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for silo in SILOS:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "medport_benchboards_{silo}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "medport_benchboards_{silo}"'))
    engine.dispose()
    return {silo: f"{server}/medport_benchboards_{silo}" for silo in SILOS}


def make_app(urls):
    return create_app({
        "SECRET_KEY": "bench-boards", "MEDPORT_INPROCESS_RELAY": False, "MEDPORT_SIGNAL_BACKEND": "local",
        "WTF_CSRF_ENABLED": False, "SQLALCHEMY_DATABASE_URI": urls["center"], "SQLALCHEMY_ENGINE_OPTIONS": {},
        "SQLALCHEMY_BINDS": {"hospital": {"url": urls["hospital"]}, "ems": {"url": urls["ems"]}},
    })


def build(app):
    """Schema by the migrations, then the demo region (the code of ``flask medport seed-demo``)."""
    from flask_migrate import upgrade

    from dashboard.seed import demo

    with app.app_context():
        upgrade()
        demo.seed()


def open_count(app):
    from dashboard.models.hospital import TransportRequest

    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(TransportRequest)
                                 .where(TransportRequest.status == "open"))


def top_up(app, target):
    """Post open requests at Altoona until the region holds ``target`` open ones."""
    from dashboard.models.base import utcnow
    from dashboard.models.center import Hospital
    from dashboard.models.hospital import HospitalFacility
    from dashboard.services import trip_posting

    missing = target - open_count(app)
    with app.app_context():
        hospital = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
        origin = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == hospital.id))
        now = utcnow()
        for i in range(max(0, missing)):
            trip_posting.post(hospital.id, "ALT", dict(
                origin_facility_id=origin.id, pickup_location=f"4 West, room {i % 500}",
                destination_address="12 Home Street, Altoona, PA", level_of_care=("BLS", "ALS", "CCT")[i % 3],
                mobility="stretcher", urgency=("routine", "routine", "urgent", "emergent")[i % 4],
                window_start=now + timedelta(minutes=120 + (i * 37) % 900),
                window_end=now + timedelta(minutes=180 + (i * 37) % 900), patient_ref="", age_group="adult",
                weight_kg=80, bid_deadline=now + timedelta(minutes=30 + (i * 53) % 80), invite_mode="all"),
                              actor=Actor(1, None, "Bench"))
            if i % 100 == 99:
                db.session.commit()
        db.session.commit()
    return open_count(app)


def signed_in(app, email):
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": DEMO_PASSWORD})
    if response.status_code != 302:
        raise SystemExit(f"could not sign in as {email}: {response.status_code}")
    return client


def measure(clients, samples, warmup):
    """``{label: (cpu ms median, wall ms median, rows on the page)}``: the pages fetched in turn."""
    cpu, wall, rows = {}, {}, {}
    for round_ in range(warmup + samples):
        for label, who, path in PAGES:
            client = clients[who]
            started_cpu, started = time.process_time(), time.perf_counter()
            response = client.get(path, headers={"HX-Request": "true"} if "panel" in path else {})
            body = response.get_data()
            elapsed_cpu, elapsed = time.process_time() - started_cpu, time.perf_counter() - started
            if response.status_code != 200:
                raise SystemExit(f"{path} answered {response.status_code}")
            if round_ >= warmup:
                cpu.setdefault(label, []).append(elapsed_cpu * 1000)
                wall.setdefault(label, []).append(elapsed * 1000)
            rows[label] = body.count(b"<tr") - body.count(b"<thead")
    return {label: (statistics.median(cpu[label]), statistics.median(wall[label]), rows[label])
            for label, _who, _path in PAGES}


def load_average():
    try:
        return " ".join(f"{value:.2f}" for value in os.getloadavg())
    except OSError:
        return "unknown"


def main():
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="medport-boards-", ignore_cleanup_errors=True) as folder:
        urls = database_urls(args, folder)
        app = make_app(urls)
        print(f"Building the silos ({args.database}) and the demo region...", flush=True)
        build(app)
        clients = {who: signed_in(app, who) for who in (NURSE, DISPATCHER, COORDINATOR)}
        results = {}
        for size in args.sizes:
            reached = top_up(app, size)
            print(f"{reached:,} open requests; load average {load_average()}; measuring...", flush=True)
            results[size] = measure(clients, args.samples, args.warmup)
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()
    small, large = args.sizes[0], args.sizes[-1]
    print()
    print(f"Boards with {small:,} and {large:,} open requests ({args.database}, {args.samples} samples, "
          f"median; Python {platform.python_version()}, {os.cpu_count()} CPUs, load average {load_average()})")
    print()
    print(f"| page | rows shown | CPU ms at {small:,} | CPU ms at {large:,} | CPU × | wall ms at {small:,} "
          f"| wall ms at {large:,} | wall × |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, _who, _path in PAGES:
        cpu_a, wall_a, rows_a = results[small][label]
        cpu_b, wall_b, rows_b = results[large][label]
        print(f"| {label} | {rows_a} / {rows_b} | {cpu_a:.1f} | {cpu_b:.1f} | {cpu_b / cpu_a:.2f} "
              f"| {wall_a:.1f} | {wall_b:.1f} | {wall_b / wall_a:.2f} |")


if __name__ == "__main__":
    main()
