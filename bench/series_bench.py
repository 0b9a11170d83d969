"""Recurring series benchmark: 5,000 active dialysis series in the demo region (six hospitals).

    python bench/series_bench.py [--series 5000] [--days 14] [--start-in 3] [--samples 21]
                                 [--server URL] [--profile]

Builds two identical demo regions on PostgreSQL (``--server``, default
``postgresql://postgres@127.0.0.1:5432``): databases ``medport_benchseries_h_with_{center,hospital,ems}``
and ``medport_benchseries_h_without_...``, dropped and built again each run (migrated, demo
region seeded with its fixed random seed).  Then, in one process (the app's own test client):

1. ``--series`` active series are stored in the first region (Monday/Wednesday/Friday or
   Tuesday/Thursday/Saturday, 06:00 to 09:30 local, BLS, spread evenly over the six hospitals,
   a quarter long), starting ``--start-in`` days from today: with 3 (the default, past the
   48 h BLS lead time) every occurrence created is upcoming, so the boards measure what the
   series and their occurrences cost, not the extra open work; with 0 the occurrences of the
   next two days are open for bids at once and the boards list them;
2. generating the next ``--days`` days of occurrences (``services.series_generation.generate``, as the
   relay's timer runs it): wall time, this process's CPU time (``time.process_time``: the
   Python side; PostgreSQL's work is the rest), the statements sent (round trips) and their
   time; a second run (nothing left to create) is timed too.  ``--profile`` runs the first
   generation under cProfile and prints its top functions (the wall time then includes the
   profiler's overhead);
3. both regions' databases analysed (as autovacuum would after such an insert);
4. the boards, region with series against region without, samples interleaved (with, without,
   then without, with, ...) so both see the same moments of a loaded machine: the hospital
   dashboard and its requests panel (the nurse of the hospital with the most series), the EMS
   board and its panel (a dispatcher serving every level), the center's regional board and its
   panel; ``--samples`` requests each after warm-ups; median and 90th percentile of the wall
   time and of the process CPU time around each request (the app's own work; the database
   server's is not in it), ratios of the medians, and the load average around each page.

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
PREFIX = "medport_benchseries_h"
DEMO_PASSWORD = "medport-demo"


def build(server, region):
    """Fresh databases ``{PREFIX}_{region}_{silo}``, migrated, the demo region seeded; returns the app."""
    from dashboard.config import normalise_url

    engine = sa.create_engine(normalise_url(f"{server}/postgres"), isolation_level="AUTOCOMMIT")
    names = {silo: f"{PREFIX}_{region}_{silo}" for silo in SILOS}
    with engine.connect() as conn:
        for name in names.values():
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    from flask_migrate import upgrade

    from dashboard import create_app

    for silo, name in names.items():  # read by create_app, as a deployment configures it
        os.environ[f"MEDPORT_{silo.upper()}_DATABASE_URL"] = f"{server}/{name}"
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
    from dashboard.services.trip_posting import new_patient_ref

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


def _request(client, path):
    """(wall ms, process CPU ms) of one request."""
    start, cpu = time.perf_counter(), time.process_time()
    response = client.get(path)
    wall, used = (time.perf_counter() - start) * 1000, (time.process_time() - cpu) * 1000
    assert response.status_code == 200, (path, response.status_code)
    return wall, used


def _spread(values):
    values = sorted(values)
    return statistics.median(values), values[int(0.9 * (len(values) - 1))]


def boards(with_series, without, samples):
    """``{path: {"with": ((wall p50, p90), (cpu p50, p90)), "without": ..., "load": (before, after)}}``
    (ms), the two regions' requests interleaved, the order swapped every sample."""
    found = {}
    for role, path in PAGES:
        pair = {"with": with_series[role], "without": without[role]}
        for client in pair.values():
            for _ in range(3):
                client.get(path)
        times = {"with": [], "without": []}
        load_before = os.getloadavg()[0]
        for i in range(samples):
            for side in (("with", "without") if i % 2 == 0 else ("without", "with")):
                times[side].append(_request(pair[side], path))
        found[path] = {side: (_spread([w for w, _c in got]), _spread([c for _w, c in got]))
                       for side, got in times.items()}
        found[path]["load"] = (load_before, os.getloadavg()[0])
    return found


class Statements:
    """Counts the statements a block sends (round trips) and the time spent in them, per kind."""

    def __init__(self, engines):
        self.engines, self.by_kind = list(engines), {}

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        conn.info["bench_started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany):
        words = statement.split()
        kind = " ".join(words[:3]) if words[0].upper() != "SELECT" else "SELECT ... " + (
            words[words.index("FROM") + 1] if "FROM" in words else "")
        count, spent = self.by_kind.get(kind, (0, 0.0))
        self.by_kind[kind] = (count + 1, spent + time.perf_counter() - conn.info.pop("bench_started"))

    def __enter__(self):
        for engine in self.engines:
            sa.event.listen(engine, "before_cursor_execute", self._before)
            sa.event.listen(engine, "after_cursor_execute", self._after)
        return self

    def __exit__(self, *exc):
        for engine in self.engines:
            sa.event.remove(engine, "before_cursor_execute", self._before)
            sa.event.remove(engine, "after_cursor_execute", self._after)


def analyse(app):
    """ANALYZE each silo, as autovacuum's analyze would after the bulk insert (without it the
    planner plans the upcoming list for 2 rows)."""
    from dashboard.extensions import db

    with app.app_context():
        for bind in (None, "hospital", "ems"):
            with db.engines[bind].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("ANALYZE"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=5000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--samples", type=int, default=21)
    parser.add_argument("--start-in", type=int, default=3)
    parser.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432")
    parser.add_argument("--profile", action="store_true", help="run the first generation under cProfile")
    args = parser.parse_args()
    load_start = os.getloadavg()
    app = build(args.server, "with")
    plain = build(args.server, "without")
    busiest = add_series(app, args.series, args.start_in)
    from dashboard.extensions import db
    from dashboard.models.hospital import TransportRequest
    from dashboard.services import series_generation

    with app.app_context():
        profiler = None
        if args.profile:
            import cProfile

            profiler = cProfile.Profile()
        load_generation = os.getloadavg()[0]
        with Statements(db.engines.values()) as sent:
            if profiler:
                profiler.enable()
            start, cpu = time.perf_counter(), time.process_time()
            created = series_generation.generate(days=args.days)
            first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
            if profiler:
                profiler.disable()
        load_generated = os.getloadavg()[0]
        start = time.perf_counter()
        again = series_generation.generate(days=args.days)
        second = time.perf_counter() - start
        total = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)))
        db.session.commit()
    analyse(app)
    analyse(plain)
    measured = boards(clients(app, busiest), clients(plain, busiest), args.samples)
    print(f"\n## Recurring series ({args.series:,} active series starting in {args.start_in} days, "
          f"{platform.node()}, load {load_start[0]:.1f} at the start, {os.getloadavg()[0]:.1f} at the end)\n")
    print(f"- generating the next {args.days} days (load {load_generation:.1f} before, {load_generated:.1f} after): "
          f"{first:.2f} s{' under cProfile' if profiler else ''} ({first_cpu:.2f} s of this process's CPU), "
          f"{created:,} requests created ({total:,} requests in the hospital silo after)")
    print(f"- a second run, nothing left to create: {second:.2f} s ({again} created)")
    print(f"- statements sent: {sum(n for n, _t in sent.by_kind.values())}, "
          f"{sum(t for _n, t in sent.by_kind.values()):.2f} s waiting on them; by kind: "
          + "; ".join(f"`{kind}` {n} ({t:.2f} s)" for kind, (n, t) in
                      sorted(sent.by_kind.items(), key=lambda item: -item[1][1])) + "\n")
    print("| page | load before / after | wall p50 / p90 with (ms) | without | ratio (p50) "
          "| CPU p50 / p90 with (ms) | without | ratio (p50) |")
    print("|---|---|---|---|---|---|---|---|")
    for _role, path in PAGES:
        got = measured[path]
        (w_wall, w_cpu), (o_wall, o_cpu) = got["with"], got["without"]
        print(f"| `{path}` | {got['load'][0]:.1f} / {got['load'][1]:.1f} "
              f"| {w_wall[0]:.1f} / {w_wall[1]:.1f} | {o_wall[0]:.1f} / {o_wall[1]:.1f} | {w_wall[0] / o_wall[0]:.2f} "
              f"| {w_cpu[0]:.1f} / {w_cpu[1]:.1f} | {o_cpu[0]:.1f} / {o_cpu[1]:.1f} | {w_cpu[0] / o_cpu[0]:.2f} |")
    if profiler:
        import pstats

        print("\n```")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(25)
        print("```")


if __name__ == "__main__":
    main()
