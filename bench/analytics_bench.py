"""Analytics benchmark: fill three PostgreSQL silos with N trips, time the pages, watch export memory.

    python bench/analytics_bench.py --trips 1000000

Creates (or, with ``--reuse``, keeps) the databases medport_bench_center,
medport_bench_hospital and medport_bench_ems on the server given by ``--server``
(default ``postgresql://postgres@127.0.0.1:5432``), builds them with the
migrations, loads a region (20 hospitals, 15 agencies, 150 units) and N trips
spread over ``--days`` days ending now, with about three bids per trip, through
COPY.  Then it prints:

- the time ``roll_up`` takes to store the closed days' analytics cells (what
  ``flask medport rollup`` does once, and the relay's timer as each day closes);
- the 30-day analytics page's server time: the first (cold) load of each
  period/filter, and the median of ``--runs`` warm loads, for the center, an
  agency and a hospital, and with a level filter (closed days are sums over
  the stored cells; today and days still running are computed live);
- with ``--page-computes``, the same first loads with no cells stored, where
  the page itself computes and stores the closed days (the fallback);
- the trips CSV export's memory while streaming (tracemalloc for today, the growth
  of the peak RSS for 7 and 30 days): flat memory means it does not grow with the
  number of rows.

Figures are printed, never asserted.
"""
import argparse
import io
import os
import random
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time

import sqlalchemy as sa

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir))

from dashboard import create_app  # noqa: E402
from dashboard.config import normalise_url  # noqa: E402
from dashboard.extensions import db  # noqa: E402

SILOS = ("center", "hospital", "ems")
PASSWORD = "bench-password"
HOSPITALS, AGENCIES, UNITS_PER_AGENCY = 20, 15, 10
LEVELS = ("BLS", "BLS", "BLS", "ALS", "ALS", "CCT")
URGENCIES = ("routine", "routine", "routine", "routine", "urgent", "urgent", "emergent")
REASONS = ("no_availability", "patient_not_stable", "not_needed", "other")
TRIP_COLUMNS = (
    "id", "public_id", "reference", "hospital_id", "status", "version", "origin_facility_id",
    "pickup_location", "destination_facility_id", "destination_address", "level_of_care", "mobility",
    "urgency", "window_start", "window_end", "patient_ref", "age_group", "weight_kg", "isolation",
    "oxygen_lpm", "cardiac_monitor", "iv_pump", "ventilator", "other_needs", "notes", "bid_deadline",
    "invite_mode", "invited_agency_ids", "unfilled_at", "bid_count", "best_eta_minutes", "first_bid_at",
    "awarded_bid_id", "awarded_agency_id", "awarded_unit_id", "awarded_unit_label",
    "awarded_agency_name", "awarded_eta_minutes", "awarded_at", "award_source", "en_route_at",
    "at_pickup_at", "transporting_at", "completed_at", "cancelled_at", "cancel_reason",
    "handed_back_count", "created_by_user_id", "created_at", "updated_at",
)
BID_COLUMNS = (
    "id", "public_id", "trip_id", "hospital_id", "agency_id", "unit_id", "eta_minutes", "note", "status",
    "window_start", "window_end", "created_at", "updated_at", "decided_at",
)
NULL = "\\N"


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, default=1_000_000, help="number of trips (default 1,000,000)")
    parser.add_argument("--days", type=int, default=365, help="days the trips are spread over")
    parser.add_argument("--runs", type=int, default=7, help="warm page loads per measurement")
    parser.add_argument("--server", default=os.environ.get("MEDPORT_BENCH_POSTGRES_URL",
                                                           "postgresql://postgres@127.0.0.1:5432"))
    parser.add_argument("--reuse", action="store_true",
                        help="keep the filled databases of an earlier run (stored cells are cleared)")
    parser.add_argument("--keep-cells", action="store_true",
                        help="with --reuse: keep the stored cells (the backfill then stores only missing days)")
    parser.add_argument("--page-computes", action="store_true",
                        help="also time first loads with no cells stored (the page computes them)")
    return parser.parse_args()


def bench_urls(server):
    server = normalise_url(server.rstrip("/"))
    return {silo: f"{server}/medport_bench_{silo}" for silo in SILOS}


def create_databases(server):
    """Drop and create the three bench databases."""
    engine = sa.create_engine(normalise_url(server.rstrip("/")) + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        for silo in SILOS:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "medport_bench_{silo}"'))
            conn.execute(sa.text(f'CREATE DATABASE "medport_bench_{silo}"'))
    engine.dispose()


def make_app(urls):
    return create_app({
        "TESTING": True, "SECRET_KEY": "bench", "MEDPORT_INPROCESS_RELAY": False,
        "MEDPORT_SIGNAL_BACKEND": "local", "WTF_CSRF_ENABLED": False,
        "SQLALCHEMY_DATABASE_URI": urls["center"], "SQLALCHEMY_ENGINE_OPTIONS": {},
        "SQLALCHEMY_BINDS": {"hospital": {"url": urls["hospital"]}, "ems": {"url": urls["ems"]}},
    })


def seed_region():
    """Registry, a coordinator, facilities, preferences, units; returns what the trips need."""
    from dashboard.models.center import Agency, Hospital, User
    from dashboard.models.ems import EmsAgency, Unit
    from dashboard.models.hospital import HospitalAgencyPreference, HospitalFacility

    hospitals = [Hospital(name=f"Bench Hospital {i:02d}", short_code=f"H{i:02d}") for i in range(1, HOSPITALS + 1)]
    agencies = [Agency(name=f"Bench Agency {i:02d}", short_code=f"A{i:02d}", levels="BLS,ALS,CCT")
                for i in range(1, AGENCIES + 1)]
    db.session.add_all(hospitals + agencies)
    db.session.flush()
    coordinator = User(email="coordinator@bench.test", display_name="Bench Coordinator", role="coordinator")
    nurse = User(email="nurse@bench.test", display_name="Bench Nurse", role="hospital",
                 hospital_id=hospitals[0].id)
    dispatcher = User(email="dispatch@bench.test", display_name="Bench Dispatcher", role="ems",
                      agency_id=agencies[0].id)
    for user in (coordinator, nurse, dispatcher):
        user.set_password(PASSWORD)
        db.session.add(user)
    db.session.commit()
    hospital_ids = [h.id for h in hospitals]
    agency_rows = [(a.id, a.name) for a in agencies]

    facilities = {}
    for h in hospital_ids:
        facility = HospitalFacility(hospital_id=h, name=f"Main campus {h}", kind="hospital")
        db.session.add(facility)
        facilities[h] = facility
        for rank in range(3):
            db.session.add(HospitalAgencyPreference(hospital_id=h, agency_id=agency_rows[(h + rank) % AGENCIES][0],
                                                    rank=rank + 1))
    db.session.commit()
    facility_ids = {h: f.id for h, f in facilities.items()}

    units = {}
    for number, (agency_id, name) in enumerate(agency_rows):
        db.session.add(EmsAgency(agency_id=agency_id, name=name, levels="BLS,ALS,CCT"))
        rows = []
        for u in range(UNITS_PER_AGENCY):
            day_shift = u % 2 == 0
            rows.append(Unit(agency_id=agency_id, number=f"U{number:02d}{u:02d}", level=LEVELS[u % len(LEVELS)],
                             shift_start=clock_time(7 if day_shift else 19), shift_end=clock_time(19 if day_shift else 7)))
        db.session.add_all(rows)
        units[agency_id] = rows
    db.session.commit()
    unit_ids = {a: [(u.id, u.label) for u in rows] for a, rows in units.items()}
    return hospital_ids, facility_ids, agency_rows, unit_ids


def _fake_uuid(rng):
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _fmt(value):
    if value is None:
        return NULL
    if value is True:
        return "t"
    if value is False:
        return "f"
    return str(value)


def generate(n_trips, days, region, now, rng):
    """Yield (trip rows, bid rows) batches of tab-separated text, in posting order."""
    hospital_ids, facility_ids, agency_rows, unit_ids = region
    agency_names = dict(agency_rows)
    agency_list = [a for a, _ in agency_rows]
    start = now - timedelta(days=days)
    span = (now - start).total_seconds()
    bid_id = 0
    batch = 50_000
    for first in range(1, n_trips + 1, batch):
        trip_buffer, bid_buffer = io.StringIO(), io.StringIO()
        for trip_id in range(first, min(first + batch, n_trips + 1)):
            created = start + timedelta(seconds=span * (trip_id - 0.5) / n_trips)
            hospital = hospital_ids[trip_id % len(hospital_ids)]
            window_start = created + timedelta(minutes=rng.choice((30, 60, 90, 120)))
            window_end = window_start + timedelta(minutes=60)
            age = (now - created).total_seconds()
            roll = rng.random()
            recent = age < 3 * 3600
            unfilled = roll > 0.95 and not recent
            n_bids = 0 if unfilled else rng.randint(1, 5) + (rng.random() < 0.2)
            bidders = rng.sample(agency_list, n_bids)
            bid_times = sorted(created + timedelta(minutes=rng.randint(1, 25)) for _ in bidders)
            etas = [rng.randint(8, 60) for _ in bidders]
            t = dict.fromkeys(TRIP_COLUMNS)
            t.update(id=trip_id, public_id=_fake_uuid(rng), reference=f"B-{trip_id}", hospital_id=hospital,
                     version=1, origin_facility_id=facility_ids[hospital], pickup_location="Bay",
                     destination_address="", level_of_care=rng.choice(LEVELS), mobility="stretcher",
                     urgency=rng.choice(URGENCIES), window_start=window_start, window_end=window_end,
                     patient_ref="P-ACDEFH", age_group="adult", weight_kg=80, isolation="none", oxygen_lpm=0,
                     cardiac_monitor=False, iv_pump=False, ventilator=False, other_needs="", notes="",
                     bid_deadline=created + timedelta(minutes=30), invite_mode="all", invited_agency_ids="",
                     bid_count=n_bids, handed_back_count=0, created_by_user_id=1, created_at=created,
                     updated_at=created)
            if bidders:
                t.update(first_bid_at=bid_times[0], best_eta_minutes=min(etas))
            winner = None
            if unfilled:
                t.update(status="cancelled", unfilled_at=created + timedelta(minutes=30),
                         cancelled_at=created + timedelta(minutes=45), cancel_reason="no_availability")
            elif recent and roll < 0.5:
                t.update(status="open")
            elif roll < 0.88 or recent:
                winner = 0
                awarded_at = bid_times[-1] + timedelta(minutes=rng.randint(1, 20))
                unit_id, label = rng.choice(unit_ids[bidders[0]])
                t.update(status="completed", awarded_bid_id=bid_id + 1, awarded_agency_id=bidders[0],
                         awarded_agency_name=agency_names[bidders[0]], awarded_unit_id=unit_id,
                         awarded_unit_label=label, awarded_eta_minutes=etas[0], awarded_at=awarded_at,
                         award_source="hospital", handed_back_count=int(roll > 0.85))
                pickup = max(awarded_at + timedelta(minutes=etas[0] + rng.randint(-5, 25)),
                             window_start - timedelta(minutes=rng.randint(0, 20)))
                t.update(en_route_at=awarded_at + timedelta(minutes=3), at_pickup_at=pickup,
                         transporting_at=pickup + timedelta(minutes=15),
                         completed_at=pickup + timedelta(minutes=rng.randint(30, 90)))
                if recent:
                    t.update(status="en_route", at_pickup_at=None, transporting_at=None, completed_at=None)
            else:
                t.update(status="cancelled", cancelled_at=created + timedelta(minutes=40),
                         cancel_reason=rng.choice(REASONS))
            trip_buffer.write("\t".join(_fmt(t[c]) for c in TRIP_COLUMNS) + "\n")
            for i, agency in enumerate(bidders):
                bid_id += 1
                status = ("accepted" if i == winner else "declined") if winner is not None else (
                    "live" if t["status"] == "open" else "closed")
                unit_id = rng.choice(unit_ids[agency])[0]
                bid_buffer.write("\t".join(_fmt(v) for v in (
                    bid_id, _fake_uuid(rng), trip_id, hospital, agency, unit_id, etas[i], "", status,
                    window_start, window_end, bid_times[i], bid_times[i],
                    None if status == "live" else bid_times[i] + timedelta(minutes=5))) + "\n")
        yield trip_buffer, bid_buffer


def load(app, n_trips, days, region, now):
    """COPY the trips into the hospital silo and the bids into the EMS silo."""
    rng = random.Random(2026)
    hospital = db.engines["hospital"].raw_connection()
    ems = db.engines["ems"].raw_connection()
    trips = bids = 0
    started = time.perf_counter()
    try:
        for trip_buffer, bid_buffer in generate(n_trips, days, region, now, rng):
            trips += trip_buffer.getvalue().count("\n")
            bids += bid_buffer.getvalue().count("\n")
            trip_buffer.seek(0)
            bid_buffer.seek(0)
            with hospital.cursor() as cur:
                cur.copy_expert(f"COPY transport_requests ({', '.join(TRIP_COLUMNS)}) FROM STDIN", trip_buffer)
            with ems.cursor() as cur:
                cur.copy_expert(f"COPY transport_bids ({', '.join(BID_COLUMNS)}) FROM STDIN", bid_buffer)
            hospital.commit()
            ems.commit()
            print(f"\r  loaded {trips:,} trips, {bids:,} bids ({time.perf_counter() - started:.0f} s)",
                  end="", flush=True)
        print()
        for conn, table in ((hospital, "transport_requests"), (ems, "transport_bids")):
            with conn.cursor() as cur:
                cur.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
            conn.commit()
    finally:
        hospital.close()
        ems.close()
    for key in (None, "hospital", "ems"):
        with db.engines[key].connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(sa.text("VACUUM ANALYZE"))
    return trips, bids


def timed_get(client, url):
    started = time.perf_counter()
    response = client.get(url)
    elapsed = (time.perf_counter() - started) * 1000
    if response.status_code != 200:
        raise SystemExit(f"{url} answered {response.status_code}: {response.get_data(as_text=True)[:300]}")
    return elapsed


def login(app, email):
    """A test client signed in as ``email``."""
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": PASSWORD})
    if response.status_code != 302:
        raise SystemExit(f"could not sign in as {email}: {response.status_code}")
    return client


def measure_page(app, email, url, runs):
    client = login(app, email)
    cold = timed_get(client, url)
    warm = [timed_get(client, url) for _ in range(runs)]
    return cold, statistics.median(warm), max(warm)


def _rss_peak_kb():
    """The process's peak resident memory (VmHWM) in kB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def _reset_rss_peak():
    """Start a new peak: writing 5 to clear_refs resets VmHWM to the current RSS (Linux)."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def measure_export(app, url, trace=False):
    """Stream the export: rows, bytes, seconds and how far memory rose above where it started.

    ``trace`` measures Python allocations with tracemalloc (exact, but much slower);
    otherwise the growth of the process's peak RSS is reported.
    """
    client = login(app, "coordinator@bench.test")
    if trace:
        tracemalloc.start()
    else:
        _reset_rss_peak()
    baseline = _rss_peak_kb()
    started = time.perf_counter()
    response = client.get(url, buffered=False)
    size = lines = 0
    for chunk in response.response:
        size += len(chunk)
        lines += chunk.count("\n") if isinstance(chunk, str) else chunk.count(b"\n")
    response.close()
    seconds = time.perf_counter() - started
    if trace:
        growth = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    else:
        growth = (_rss_peak_kb() - baseline) * 1024
    return lines - 1, size, growth, seconds


def clear_rollups():
    from dashboard.models.center import AnalyticsBidCell, AnalyticsCell, AnalyticsDay, AnalyticsUnitCell

    for model in (AnalyticsCell, AnalyticsUnitCell, AnalyticsBidCell, AnalyticsDay):
        db.session.execute(sa.delete(model))
    db.session.commit()


PAGES = (
    ("center, all filters open", "coordinator@bench.test", "/center/analytics?period=30d"),
    ("center, level ALS", "coordinator@bench.test", "/center/analytics?period=30d&level=ALS"),
    ("EMS user (own agency)", "dispatch@bench.test", "/ems/analytics?period=30d"),
    ("hospital user (own hospital)", "nurse@bench.test", "/hospital/analytics?period=30d"),
    ("center, today only", "coordinator@bench.test", "/center/analytics?period=today"),
)


def main():
    args = parse_args()
    urls = bench_urls(args.server)
    if not args.reuse:
        print(f"Creating medport_bench_* on {args.server} ...")
        create_databases(args.server)
    app = make_app(urls)
    with app.app_context():
        from flask_migrate import upgrade

        from dashboard.models.hospital import TransportRequest
        from dashboard.services.analytics.stored import roll_up

        upgrade()  # with --reuse too: newer migrations apply to the kept databases
        if not args.reuse:
            now = datetime.now(UTC).replace(tzinfo=None)
            region = seed_region()
            print(f"Loading {args.trips:,} trips over {args.days} days ...")
            started = time.perf_counter()
            trips, bids = load(app, args.trips, args.days, region, now)
            print(f"Loaded {trips:,} trips and {bids:,} bids in {time.perf_counter() - started:.0f} s")
        else:
            trips = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)))
            print(f"Reusing {trips:,} trips")
        if not args.keep_cells:
            clear_rollups()
        if args.page_computes:
            print("\nNo cells stored: first load of each page, which computes and stores the closed days:")
            for label, email, url in PAGES[:4]:
                clear_rollups()
                client = login(app, email)
                print(f"  {label:32s} first load {timed_get(client, url):8.0f} ms")
            clear_rollups()
        db.session.remove()
        started = time.perf_counter()
        stored = roll_up(days_back=args.days + 1)
        print(f"\nroll_up stored the cells of {stored} closed days in {time.perf_counter() - started:.1f} s")
        db.session.remove()

    print(f"\n30-day analytics page, server time (cold = first load of the period/filter; "
          f"warm = median of {args.runs}):")
    for label, email, url in PAGES:
        cold, warm, worst = measure_page(app, email, url, args.runs)
        print(f"  {label:32s} cold {cold:8.0f} ms   warm median {warm:6.0f} ms   warm max {worst:6.0f} ms")
    print(f"  load average: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\nTrips CSV export (streamed): memory growth while streaming "
          "(peak RSS above the start; 'traced' = tracemalloc peak of Python allocations):")
    for period, trace in (("today", True), ("7d", False), ("30d", False)):
        rows, size, growth, seconds = measure_export(
            app, f"/center/analytics?period={period}&format=csv&table=trips", trace=trace)
        kind = "traced" if trace else "RSS"
        print(f"  {period:6s} {rows:9,} rows  {size / 1e6:7.1f} MB written  {kind} +{growth / 1e6:6.2f} MB"
              f"  {seconds:5.1f} s")

if __name__ == "__main__":
    main()
