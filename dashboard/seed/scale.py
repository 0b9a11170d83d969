"""A region's years of history, generated fast for benchmarks (``flask medport seed-scale``).

Rows are built in Python in batches and written per silo: with PostgreSQL's
``COPY`` (psycopg2 ``copy_expert``), elsewhere with batched ``executemany``.
Ids are assigned here, so bids, history and routes can point at trips without
reading them back; PostgreSQL sequences are moved past them at the end.
"""
import csv
import io
import random
import uuid
from datetime import datetime, time, timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models.base import utcnow
from ..models.vocabulary import LEVEL_RANK, LEVELS
from ..services.silos import engine, metadata

HOSPITALS = 30
AGENCIES = 40
UNITS_PER_AGENCY = 8
STATES_RECENT = ("open", "awarded", "en_route", "at_pickup", "transporting")


def _scalar_default(column):
    default = column.default
    if default is None:
        return None
    if default.is_scalar:
        return default.arg
    if default.is_callable:
        return default.arg(None)
    return None


class SiloWriter:
    """Appends rows to one silo's tables, flushing every ``batch`` rows."""

    def __init__(self, silo, batch=20000):
        self.silo = silo
        self.engine = engine(silo)
        self.tables = metadata(silo).tables
        self.batch = batch
        self.pending = {}
        self.postgres = self.engine.dialect.name == "postgresql"
        self.max_ids = {}
        self._columns = {}

    def next_id(self, table):
        if table not in self.max_ids:
            with self.engine.connect() as conn:
                self.max_ids[table] = conn.execute(
                    sa.select(sa.func.coalesce(sa.func.max(self.tables[table].c.id), 0))).scalar()
        self.max_ids[table] += 1
        return self.max_ids[table]

    def add(self, table, values):
        rows = self.pending.setdefault(table, [])
        rows.append(values)
        if len(rows) >= self.batch:
            self.flush()

    def _complete(self, table, values):
        """The row in column order; columns not given take the model's default."""
        columns = self._columns.get(table)
        if columns is None:
            columns = self._columns[table] = [(c.name, c) for c in self.tables[table].columns]
        return [values[name] if name in values else _scalar_default(column) for name, column in columns]

    def flush(self):
        """Write every pending row, parents before children (foreign keys within the silo)."""
        order = [t.name for t in metadata(self.silo).sorted_tables]
        for name in sorted(self.pending, key=order.index):
            rows = self.pending.pop(name, [])
            if not rows:
                continue
            columns = [c.name for c in self.tables[name].columns]
            if self.postgres:
                buffer = io.StringIO()
                # PostgreSQL's COPY input, not an export: values go exactly as they are
                # (services.csvout would add a byte-order mark and quote "-" cells).
                writer = csv.writer(buffer)
                for values in rows:
                    writer.writerow(["\\N" if v is None else _csv_value(v) for v in self._complete(name, values)])
                buffer.seek(0)
                raw = self.engine.raw_connection()
                try:
                    with raw.cursor() as cur:
                        cur.copy_expert(
                            f'COPY "{name}" ({", ".join(columns)}) FROM STDIN WITH (FORMAT csv, NULL \'\\N\')',
                            buffer)
                    raw.commit()
                finally:
                    raw.close()
            else:
                table_obj = self.tables[name]
                full = [dict(zip(columns, self._complete(name, values), strict=True)) for values in rows]
                with self.engine.begin() as conn:
                    conn.execute(table_obj.insert(), full)

    def finish(self):
        self.flush()
        if self.postgres:
            with self.engine.begin() as conn:
                for name in self.max_ids:
                    # The id sequence continues after the rows loaded with explicit ids.
                    table = self.tables[name]
                    conn.execute(sa.select(sa.func.setval(
                        sa.func.pg_get_serial_sequence(name, "id"),
                        sa.select(sa.func.coalesce(sa.func.max(table.c.id), 1)).scalar_subquery())))
                conn.execute(sa.text("ANALYZE"))


def _csv_value(value):
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    return value


def generate(trips, years=2.0, rng_seed=7, progress=None, now=None, live=None):
    """Add ``trips`` trips (2–5 bids each) with their registry; return counts.

    About 0.2 % of the trips are posted in the last four hours and still live
    (open, awarded or on the road); ``live`` makes that exactly ``live`` trips instead, so
    regions of different history sizes can share the same working set.
    """
    rng = random.Random(rng_seed)
    now = now or utcnow()
    center, hospital, ems = SiloWriter("center"), SiloWriter("hospital"), SiloWriter("ems")
    tag = uuid.uuid4().hex[:4].upper()

    hospitals, agencies = [], []
    for i in range(HOSPITALS):
        hid = center.next_id("hospitals")
        center.add("hospitals", dict(id=hid, public_id=str(uuid.uuid4()), name=f"Scale Hospital {tag}-{i}",
                                     short_code=f"S{tag}{i:02d}", city=f"Town {i}", region="Scale",
                                     phone="", active=True, created_at=now))
        lat, lon = 39.5 + rng.random() * 2.5, -80.0 + rng.random() * 3.0
        facilities = []
        for kind in ("hospital", "rehabilitation"):
            fid = hospital.next_id("hospital_facilities")
            hospital.add("hospital_facilities", dict(
                id=fid, public_id=str(uuid.uuid4()), hospital_id=hid, name=f"Scale Hospital {tag}-{i} {kind}",
                kind=kind, address="", city=f"Town {i}", lat=lat + rng.random() * 0.05,
                lon=lon + rng.random() * 0.05, active=True, created_at=now))
            facilities.append((fid, lat, lon))
        hospitals.append((hid, facilities))
    for i in range(AGENCIES):
        aid = center.next_id("agencies")
        levels = ["BLS", "BLS,ALS", "BLS,ALS,CCT", "ALS,CCT"][i % 4]
        center.add("agencies", dict(id=aid, public_id=str(uuid.uuid4()), name=f"Scale Agency {tag}-{i}",
                                    short_code=f"A{tag}{i:02d}", levels=levels, service_area="Scale",
                                    service_radius_km=90, phone="", active=True, created_at=now))
        ems.add("ems_agencies", dict(id=ems.next_id("ems_agencies"), agency_id=aid, name=f"Scale Agency {tag}-{i}",
                                     levels=levels, dispatch_phone="", service_radius_km=90, active=True,
                                     created_at=now))
        units = []
        for u in range(UNITS_PER_AGENCY):
            level = levels.split(",")[u % len(levels.split(","))]
            uid = ems.next_id("units")
            ems.add("units", dict(id=uid, public_id=str(uuid.uuid4()), agency_id=aid, number=f"U{u + 1}",
                                  level=level, base_station="Station", status="available",
                                  shift_start=time(7), shift_end=time(19), active=True, updated_at=now))
            units.append((uid, level))
        agencies.append((aid, units))
    center.finish()

    capable_by_level = {
        level: [a for a in agencies if any(LEVEL_RANK[lv] >= LEVEL_RANK[level] for _, lv in a[1])]
        for level in LEVELS
    }
    span = timedelta(days=365 * years)
    counts = {"trips": 0, "bids": 0, "history": 0, "routes": 0}
    for n in range(trips):
        recent = rng.random() < 0.002 if live is None else n < live
        created = now - (timedelta(minutes=rng.randint(1, 240)) if recent else span * rng.random())
        hid, facilities = hospitals[rng.randrange(HOSPITALS)]
        origin = facilities[0]
        level = rng.choices(LEVELS, weights=(6, 3, 1))[0]
        if recent:
            status = rng.choice(STATES_RECENT)
        else:
            status = "completed" if rng.random() < 0.85 else "cancelled"
        window_start = created + timedelta(minutes=rng.choice((30, 60, 90, 120)))
        trip_id = hospital.next_id("transport_requests")
        bidders = rng.sample(capable_by_level[level], rng.randint(2, 5))
        bids = []
        for aid, units in bidders:
            unit_id, _ = rng.choice([u for u in units if LEVEL_RANK[u[1]] >= LEVEL_RANK[level]])
            bids.append((ems.next_id("transport_bids"), aid, unit_id, rng.randint(5, 90),
                         created + timedelta(minutes=rng.randint(1, 25))))
        bids.sort(key=lambda b: b[3])
        winner = bids[0] if status not in ("open", "cancelled") else None
        trip = dict(
            id=trip_id, public_id=str(uuid.uuid4()), reference=f"S{tag}-{trip_id:08d}", hospital_id=hid,
            status=status, version=1, origin_facility_id=origin[0], pickup_location="Room 1",
            destination_facility_id=facilities[1][0], destination_address="", level_of_care=level,
            mobility="stretcher", urgency=rng.choices(("routine", "urgent", "emergent"), weights=(7, 2, 1))[0],
            window_start=window_start, window_end=window_start + timedelta(minutes=60),
            patient_ref="P-SCALE1", age_group="adult", weight_kg=80, isolation="none", oxygen_lpm=0,
            cardiac_monitor=False, iv_pump=False, ventilator=False, other_needs="", notes="",
            bid_deadline=created + timedelta(minutes=30), invite_mode="all", invited_agency_ids="",
            bid_count=len(bids) if status == "open" else 0,
            best_eta_minutes=bids[0][3] if status == "open" else None,
            first_bid_at=min(b[4] for b in bids), handed_back_count=0, created_by_user_id=1,
            created_at=created, updated_at=created)
        history = [("posted", None, "open", created)]
        if winner:
            at = max(b[4] for b in bids) + timedelta(minutes=2)
            trip.update(awarded_bid_id=winner[0], awarded_agency_id=winner[1], awarded_unit_id=winner[2],
                        awarded_unit_label="U", awarded_agency_name="Scale", awarded_eta_minutes=winner[3],
                        awarded_at=at, award_source="hospital")
            history.append(("awarded", "open", "awarded", at))
            previous = "awarded"
            order = ("en_route", "at_pickup", "transporting", "completed")
            for step in order[: order.index(status) + 1] if status in order else ():
                at = at + timedelta(minutes=rng.randint(5, 40))
                trip[f"{step}_at"] = at
                history.append((step, previous, step, at))
                previous = step
            trip["updated_at"] = at
            counts["routes"] += 1
            ems.add("ems_routes", dict(
                id=ems.next_id("ems_routes"), unit_id=winner[2], agency_id=winner[1], trip_id=trip_id,
                trip_reference=trip["reference"], service_date=window_start.date(), position=1,
                pickup_label="Room 1", dropoff_label="", window_start=window_start,
                window_end=trip["window_end"], status="completed" if status == "completed" else (
                    "planned" if status == "awarded" else status), created_at=at))
        elif status == "cancelled":
            at = created + timedelta(minutes=35)
            trip.update(cancelled_at=at, cancel_reason="no_availability", updated_at=at)
            history.append(("cancelled", "open", "cancelled", at))
        hospital.add("transport_requests", trip)
        for action, before, after, at in history:
            hospital.add("transport_request_events", dict(
                id=hospital.next_id("transport_request_events"), trip_id=trip_id, action=action,
                from_status=before, to_status=after, at=at, user_label="Scale", note=""))
        for bid_id, aid, unit_id, eta, at in bids:
            if winner:
                bid_status = "accepted" if bid_id == winner[0] else "declined"
            else:
                bid_status = "live" if status == "open" else "closed"
            ems.add("transport_bids", dict(
                id=bid_id, public_id=str(uuid.uuid4()), trip_id=trip_id, hospital_id=hid, agency_id=aid,
                unit_id=unit_id, eta_minutes=eta, note="", status=bid_status, window_start=window_start,
                window_end=trip["window_end"], created_at=at, updated_at=at,
                decided_at=None if bid_status == "live" else at))
        counts["trips"] += 1
        counts["bids"] += len(bids)
        counts["history"] += len(history)
        if progress is not None and n % 1000 == 999:
            progress(1000)
    # The hospital silo first: trips exist before the bids that point at them.
    hospital.finish()
    ems.finish()
    db.session.remove()
    return counts
