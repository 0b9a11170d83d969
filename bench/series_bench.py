"""Recurring series benchmark: 5,000 active dialysis series in the demo region (six hospitals).

    python bench/series_bench.py [--series 5000] [--days 14] [--start-in 3] [--samples 15] [--server URL]

Uses three PostgreSQL databases ``medport_benchseries_{center,hospital,ems}`` on ``--server``
(default ``postgresql://postgres@127.0.0.1:5432``), dropped and built again each run (migrated,
demo region seeded).  Then, in one process (the app's own test client, times taken around each
request):

1. the boards without series: the hospital dashboard and its requests panel (the nurse of the
   hospital with the most series), the EMS board and its panel (a dispatcher serving every
   level), the center's regional board and its panel; ``--samples`` requests each after a
   warm-up, median and 90th percentile;
2. ``--series`` active series are stored (Monday/Wednesday/Friday or Tuesday/Thursday/Saturday,
   06:00 to 09:30 local, BLS, spread evenly over the six hospitals, a quarter long), starting
   ``--start-in`` days from today: with 3 (the default, past the 48 h BLS lead time) every
   occurrence created is upcoming, so step 4 measures what the series and their occurrences
   cost the boards, not the extra open work; with 0 the occurrences of the next two days are
   open for bids at once and the boards list them (thousands of biddable requests);
3. generating the next ``--days`` days of occurrences (``services.series.generate``, as the
   relay's timer runs it), timed, with the number of requests created; a second run (nothing
   left to create) is timed too;
4. the databases analysed (as autovacuum would after such an insert), the same boards again,
   with the series and their occurrences in place, and the ratio to step 1.

Figures are printed as a Markdown table, never asserted.
"""
import argparse
import os
import platform
import statistics
import sys
import time
from datetime import time as clock
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SILOS = ("center", "hospital", "ems")
PREFIX = "medport_benchseries"
DEMO_PASSWORD = "medport-demo"


def build(server):
    """Fresh databases, migrated; returns the app."""
    from dashboard.config import normalise_url

    engine = sa.create_engine(normalise_url(f"{server}/postgres"), isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for silo in SILOS:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{PREFIX}_{silo}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{PREFIX}_{silo}"'))
    engine.dispose()
    for silo in SILOS:
        os.environ[f"MEDPORT_{silo.upper()}_DATABASE_URL"] = f"{server}/{PREFIX}_{silo}"
    from flask_migrate import upgrade

    from dashboard import create_app

    app = create_app({"MEDPORT_INPROCESS_RELAY": False, "MEDPORT_SIGNAL_BACKEND": "local",
                      "WTF_CSRF_ENABLED": False, "SECRET_KEY": "bench-secret-key-not-for-production"})
    with app.app_context():
        upgrade()
        from dashboard.seed import demo

        demo.seed()
    return app


def add_series(app, count, start_in=3):
    """``count`` active dialysis series over the six demo hospitals, stored in one insert."""
    from dashboard.extensions import db
    from dashboard.localtime import local_today
    from dashboard.models.base import new_public_id, utcnow
    from dashboard.models.center import Hospital
    from dashboard.models.hospital import HospitalFacility, TransportSeries
    from dashboard.services.trips import new_patient_ref

    with app.app_context():
        hospitals = db.session.execute(sa.select(Hospital.id, Hospital.short_code).order_by(Hospital.id)).all()
        facilities = {h: db.session.scalars(sa.select(HospitalFacility.id).where(
            HospitalFacility.hospital_id == h).order_by(HospitalFacility.id)).all() for h, _code in hospitals}
        dialysis = db.session.scalar(sa.select(HospitalFacility.id).where(
            HospitalFacility.name == "Nittany Dialysis Center"))
        today, now = local_today(), utcnow()
        rows = []
        for i in range(count):
            hospital_id, code = hospitals[i % len(hospitals)]
            origin = facilities[hospital_id][0]
            rows.append(dict(
                public_id=new_public_id(), hospital_id=hospital_id, hospital_code=code, status="active",
                version=1, frequency="weekly", interval=1, weekdays="0,2,4" if i % 2 == 0 else "1,3,5",
                pickup_time=clock(6 + (i % 8) // 2, 30 * (i % 2)), window_minutes=60,
                start_date=today + timedelta(days=start_in), until_date=today + timedelta(days=91), occurrence_count=None, fold=0,
                origin_facility_id=origin, pickup_location=f"Room {100 + i % 300}",
                destination_facility_id=dialysis if dialysis != origin else facilities[hospital_id][-1],
                destination_address="", level_of_care="BLS", mobility="wheelchair", urgency="routine",
                patient_ref=new_patient_ref(), age_group="older_adult", weight_kg=70, isolation="none",
                oxygen_lpm=0, cardiac_monitor=False, iv_pump=False, ventilator=False, other_needs="",
                notes="", bid_deadline_minutes=30, invite_mode="all", invite_all_after_minutes=None,
                standing_agency_id=None, standing_order_minutes=None, generated_through=None,
                created_by_user_id=1, created_at=now, updated_at=now))
        db.session.execute(sa.insert(TransportSeries), rows)
        db.session.commit()
        busiest = hospitals[0][0]
    return busiest


def clients(app, hospital_id):
    from dashboard.extensions import db
    from dashboard.models.center import User

    with app.app_context():
        nurse = db.session.scalar(sa.select(User.email).where(User.hospital_id == hospital_id).limit(1))
    signed = {}
    for role, email in (("hospital", nurse), ("ems", "dispatch@altoonaems.medport.test"),
                        ("center", "coordinator@medport.test")):
        client = app.test_client()
        response = client.post("/login", data={"email": email, "password": DEMO_PASSWORD})
        assert response.status_code == 302, email
        signed[role] = client
    return signed


PAGES = (("hospital", "/hospital/"), ("hospital", "/hospital/requests/panel"), ("ems", "/ems/"),
         ("ems", "/ems/board/panel"), ("center", "/center/"), ("center", "/center/board/panel"))


def boards(signed, samples):
    """``{path: (median ms, p90 ms)}``."""
    found = {}
    for role, path in PAGES:
        client = signed[role]
        for _ in range(3):
            client.get(path)
        times = []
        for _ in range(samples):
            start = time.perf_counter()
            response = client.get(path)
            times.append((time.perf_counter() - start) * 1000)
            assert response.status_code == 200, (path, response.status_code)
        times.sort()
        found[path] = (statistics.median(times), times[int(0.9 * (len(times) - 1))])
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--start-in", type=int, default=3)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    args = parser.parse_args()
    load_before = os.getloadavg()
    app = build(args.server)
    signed = clients(app, 1)
    without = boards(signed, args.samples)
    busiest = add_series(app, args.series, args.start_in)
    from dashboard.extensions import db
    from dashboard.models.hospital import TransportRequest
    from dashboard.services import series

    with app.app_context():
        start, cpu = time.perf_counter(), time.process_time()
        created = series.generate(days=args.days)
        first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
        start = time.perf_counter()
        again = series.generate(days=args.days)
        second = time.perf_counter() - start
        total = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)))
        db.session.commit()
        # The planner's statistics after the bulk insert, as autovacuum's analyze gives them in a
        # deployment (25,000 rows are far past its 10 % threshold); without them it plans the
        # upcoming list for 2 rows.
        for bind in (None, "hospital", "ems"):
            with db.engines[bind].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))
    signed = clients(app, busiest)
    with_series = boards(signed, args.samples)
    print(f"\n## Recurring series ({args.series:,} active series starting in {args.start_in} days, "
          f"{platform.node()}, "
          f"load {load_before[0]:.1f} before, {os.getloadavg()[0]:.1f} after)\n")
    print(f"- generating the next {args.days} days: {first:.2f} s ({first_cpu:.2f} s of this process's CPU), "
          f"{created:,} requests created ({total:,} requests in the hospital silo after)")
    print(f"- a second run, nothing left to create: {second:.2f} s ({again} created)\n")
    print("| page | without series p50 / p90 (ms) | with series p50 / p90 (ms) | ratio (p50) |")
    print("|---|---|---|---|")
    for _role, path in PAGES:
        a, b = without[path], with_series[path]
        print(f"| `{path}` | {a[0]:.1f} / {a[1]:.1f} | {b[0]:.1f} / {b[1]:.1f} | {b[0] / a[0]:.2f} |")


if __name__ == "__main__":
    main()
