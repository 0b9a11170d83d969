"""A region's years of history, generated fast for benchmarks (``flask medport seed-scale``).

Two ways: a generated region of its own (30 hospitals, 40 agencies, 320 units) with its
history and, optionally, trips still live; or, with ``existing_region``, closed history only,
over the hospitals, facilities, agencies and units already registered (the demo region, say),
adding no organisation or unit and nothing live, so a copy of a region with and without
history differs in history alone.

Rows are built in Python in batches and written per silo: on PostgreSQL with ``COPY`` (text
format, psycopg2 ``copy_expert``) from a thread of its own per silo, so the server stores
one batch while the next is built; elsewhere with batched ``executemany``.  Both take the
same rows.  Ids are assigned here, so bids, history and routes can point at trips without
reading them back; PostgreSQL sequences are moved past them at the end.
"""
import io
import queue
import random
import threading
import uuid
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models.base import utcnow
from ..models.vocabulary import LEVEL_RANK, LEVELS
from ..services.silos import engine, metadata

HOSPITALS = 30
AGENCIES = 40
UNITS_PER_AGENCY = 8
STATES_RECENT = ("open", "awarded", "en_route", "at_pickup", "transporting")
#: With ``existing_region``, the newest generated request is posted this long before now: its
#: last step (at most about 3 h 10 min after posting) is then more than 24 hours old, so the
#: region's present (the boards' last 24 hours, today's counts) is the same with or without it.
HISTORY_ENDS_BEFORE = timedelta(hours=30)
#: ... and at least this long before the oldest request of the region still running (not
#: completed or cancelled), so every day the history touches is a closed day for analytics
#: (the days with a request running are computed live, and would hold the history too).
BEFORE_RUNNING = timedelta(days=1)
#: Patient reference of every generated request (benchmarks count and find them by it).
PATIENT_REF = "P-SCALE1"


class RegionMissing(Exception):
    """``existing_region`` was asked of databases without active hospitals, facilities,
    agencies or units to serve a level of care."""


def _scalar_default(column):
    default = column.default
    if default is None:
        return None
    if default.is_scalar:
        return default.arg
    if default.is_callable:
        return default.arg(None)
    return None


def _copy_text(value):
    """One value in PostgreSQL's COPY text format (``\\N`` for NULL, tabs and newlines escaped)."""
    if value is None:
        return "\\N"
    kind = type(value)
    if kind is str:
        if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
            return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
                    .replace("\r", "\\r"))
        return value
    if kind is bool:
        return "t" if value else "f"
    if kind is datetime:
        return value.isoformat(" ")
    if kind is date or kind is time:
        return value.isoformat()
    return str(value)


class _CopyLoader(threading.Thread):
    """Runs one silo's COPY batches, in order, on one connection; each batch is committed."""

    def __init__(self, silo_engine):
        super().__init__(daemon=True, name="seed-scale-copy")
        self.engine = silo_engine
        self.batches = queue.Queue(maxsize=2)  # at most two batches built ahead of the server
        self.error = None

    def run(self):
        raw = self.engine.raw_connection()
        try:
            while True:
                batch = self.batches.get()
                if batch is None:
                    break
                if self.error is not None:
                    continue  # drain what was queued after a failure
                try:
                    with raw.cursor() as cur:
                        # A bulk load: each batch's commit does not wait for the disk (the
                        # finishing transaction's does, and with it every earlier one's).
                        cur.execute("SET LOCAL synchronous_commit = off")
                        for name, columns, buffer in batch:
                            cur.copy_expert(f'COPY "{name}" ({", ".join(columns)}) FROM STDIN', buffer)
                    raw.commit()
                except Exception as exc:  # re-raised in the generating thread
                    self.error = exc
                    raw.rollback()
        finally:
            raw.close()

    def put(self, batch):
        if self.error is not None:
            raise self.error
        self.batches.put(batch)

    def close(self):
        self.batches.put(None)
        self.join()
        if self.error is not None:
            raise self.error


class SiloWriter:
    """Appends rows to one silo's tables, flushing every ``batch`` rows of a table.

    ``copy`` chooses the way rows are written: ``None`` (the default) uses COPY on
    PostgreSQL and ``executemany`` elsewhere; ``False`` forces ``executemany`` (the tests
    compare the two).
    """

    def __init__(self, silo, batch=20000, copy=None):
        self.silo = silo
        self.engine = engine(silo)
        self.tables = metadata(silo).tables
        self.order = [t.name for t in metadata(silo).sorted_tables]
        self.batch = batch
        self.pending = {}
        self.postgres = self.engine.dialect.name == "postgresql"
        self.copy = self.postgres if copy is None else (copy and self.postgres)
        self.max_ids = {}
        self._columns = {}
        self._loader = None

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

    def _layout(self, table):
        """``[(name, given, default)]`` per column: ``default`` is the value (or, with COPY, its
        text) a row without the column takes; ``None`` for a callable default, called per row."""
        layout = self._columns.get(table)
        if layout is None:
            layout = []
            for column in self.tables[table].columns:
                callable_default = column.default is not None and column.default.is_callable
                value = None if callable_default else _scalar_default(column)
                layout.append((column.name, column, _copy_text(value) if self.copy else value, callable_default))
            self._columns[table] = layout
        return layout

    def _complete(self, table, values):
        """The row in column order; columns not given take the model's default."""
        return [values[name] if name in values else (_scalar_default(column) if per_row else default)
                for name, column, default, per_row in self._layout(table)]

    def _copy_lines(self, table, rows):
        layout = self._layout(table)
        buffer = io.StringIO()
        write = buffer.write
        for values in rows:
            write("\t".join([
                _copy_text(values[name]) if name in values else (
                    _copy_text(_scalar_default(column)) if per_row else default)
                for name, column, default, per_row in layout]))
            write("\n")
        buffer.seek(0)
        return buffer

    def flush(self):
        """Write every pending row, parents before children (foreign keys within the silo)."""
        names = [name for name in sorted(self.pending, key=self.order.index) if self.pending[name]]
        if not names:
            return
        if self.copy:
            batch = []
            for name in names:
                rows = self.pending.pop(name)
                batch.append((name, [c.name for c in self.tables[name].columns], self._copy_lines(name, rows)))
            if self._loader is None:
                self._loader = _CopyLoader(self.engine)
                self._loader.start()
            self._loader.put(batch)
            return
        with self.engine.begin() as conn:
            for name in names:
                rows = self.pending.pop(name)
                columns = [c.name for c in self.tables[name].columns]
                conn.execute(self.tables[name].insert(),
                             [dict(zip(columns, self._complete(name, values), strict=True)) for values in rows])

    def finish(self):
        self.flush()
        if self._loader is not None:
            loader, self._loader = self._loader, None
            loader.close()
        if self.postgres:
            with self.engine.begin() as conn:
                for name in self.max_ids:
                    # The id sequence continues after the rows loaded with explicit ids.
                    table = self.tables[name]
                    conn.execute(sa.select(sa.func.setval(
                        sa.func.pg_get_serial_sequence(name, "id"),
                        sa.select(sa.func.coalesce(sa.func.max(table.c.id), 1)).scalar_subquery())))
                conn.execute(sa.text("ANALYZE"))


def _new_region(center, hospital, ems, rng, now):
    """Write a generated region; ``(hospitals, agencies)`` as ``_generate_trips`` takes them."""
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
            facilities.append(fid)
        hospitals.append((hid, facilities[0], facilities[1]))
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
            units.append((uid, level, "U"))
        agencies.append((aid, "Scale", units))
    center.finish()
    return hospitals, agencies


def _existing_region():
    """The active hospitals (with an origin and a destination facility each) and agencies
    (with their active units) already registered: ``(hospitals, agencies)`` as
    ``_generate_trips`` takes them.  Raises ``RegionMissing`` when there are none."""
    with engine("center").connect() as conn:
        hospital_ids = list(conn.execute(sa.text(
            "SELECT id FROM hospitals WHERE active ORDER BY id")).scalars())
        agency_names = dict(conn.execute(sa.text("SELECT id, name FROM agencies WHERE active ORDER BY id")).all())
    with engine("hospital").connect() as conn:
        facilities = conn.execute(sa.text(
            "SELECT id, hospital_id, kind FROM hospital_facilities WHERE active ORDER BY id")).all()
    with engine("ems").connect() as conn:
        unit_rows = conn.execute(sa.text(
            "SELECT id, agency_id, level, number FROM units WHERE active ORDER BY id")).all()
    every_facility = [f.id for f in facilities]
    hospitals = []
    for hid in hospital_ids:
        own = [f for f in facilities if f.hospital_id == hid]
        if not own:
            continue
        # The hospital's own campus is the pickup; the destination is another of its places,
        # else another hospital's (a transfer), as the demo's requests go.
        origin = next((f.id for f in own if f.kind == "hospital"), own[0].id)
        others = [f.id for f in own if f.id != origin] or [f for f in every_facility if f != origin]
        if others:
            hospitals.append((hid, origin, others))
    agencies = []
    for aid, name in agency_names.items():
        units = [(u.id, u.level, f"{u.number} ({u.level})") for u in unit_rows if u.agency_id == aid]
        if units:
            agencies.append((aid, name, units))
    if not hospitals or not agencies:
        raise RegionMissing("No active hospitals with facilities, or no active agencies with units, to add "
                            "history to: seed a region first (flask medport seed-demo).")
    return hospitals, agencies


def history_end(now):
    """When generated history over the existing region ends (naive UTC): ``HISTORY_ENDS_BEFORE``
    before ``now``, and ``BEFORE_RUNNING`` before the oldest request still running, if earlier."""
    trips = metadata("hospital").tables["transport_requests"]
    with engine("hospital").connect() as conn:
        oldest_running = conn.execute(sa.select(sa.func.min(trips.c.created_at)).where(
            trips.c.status.not_in(("completed", "cancelled")))).scalar()
    end = now - HISTORY_ENDS_BEFORE
    if oldest_running is not None:
        end = min(end, oldest_running - BEFORE_RUNNING)
    return end


def generate(trips, years=2.0, rng_seed=7, progress=None, now=None, live=None, existing_region=False,
             copy=None):
    """Add ``trips`` trips (2–5 bids each, fewer where fewer agencies serve the level); return
    counts ``{"trips", "bids", "history", "routes"}``.

    By default a generated region is added with them (30 hospitals, 40 agencies, 320 units).
    About 0.2 % of the trips are posted in the last four hours and still live (open, awarded or
    on the road); ``live`` makes that exactly ``live`` trips instead, so regions of different
    history sizes can share the same working set.  The others are closed (85 % completed,
    15 % cancelled), posted at a uniformly random moment of the last ``years`` years.

    With ``existing_region`` the trips are closed history only, over the active hospitals,
    facilities, agencies and units already in the databases; no organisation or unit is added,
    none is live, and every one is posted in the ``years`` years before :func:`history_end`:
    30 h before ``now`` (its last step is then over 24 hours old) or, if earlier, a day before
    the region's oldest request still running (every day it touches is closed).  ``live`` must then be None
    or 0 (``ValueError`` otherwise); ``RegionMissing`` when there is no region.

    ``copy`` is ``SiloWriter``'s (None: COPY on PostgreSQL).  The same ``rng_seed`` and ``now``
    give the same rows whichever way they are written, but for public ids and, without
    ``existing_region``, the generated region's names.
    """
    if existing_region and live:
        raise ValueError("history over an existing region adds no live trips")
    rng = random.Random(rng_seed)
    now = now or utcnow()
    center = SiloWriter("center", copy=copy)
    hospital, ems = SiloWriter("hospital", copy=copy), SiloWriter("ems", copy=copy)
    if existing_region:
        hospitals, agencies = _existing_region()
        live = 0
        span_end = history_end(now)
    else:
        hospitals, agencies = _new_region(center, hospital, ems, rng, now)
        hospitals = [(hid, origin, [destination]) for hid, origin, destination in hospitals]
        span_end = now
    counts = _generate_trips(hospital, ems, rng, trips, years, span_end, now, live, hospitals, agencies, progress)
    # The hospital silo first: trips exist before the bids that point at them.
    hospital.finish()
    ems.finish()
    db.session.remove()
    return counts


def _generate_trips(hospital, ems, rng, trips, years, span_end, now, live, hospitals, agencies, progress):
    capable_by_level = {
        level: [a for a in agencies if any(LEVEL_RANK[lv] >= LEVEL_RANK[level] for _, lv, _ in a[2])]
        for level in LEVELS
    }
    levels = [level for level in LEVELS if capable_by_level[level]]
    weights = [dict(zip(LEVELS, (6, 3, 1), strict=True))[level] for level in levels]
    span = timedelta(days=365 * years)
    tag = uuid.uuid4().hex[:4].upper()
    counts = {"trips": 0, "bids": 0, "history": 0, "routes": 0}
    for n in range(trips):
        recent = rng.random() < 0.002 if live is None else n < live
        created = now - timedelta(minutes=rng.randint(1, 240)) if recent else span_end - span * rng.random()
        hid, origin, destinations = hospitals[rng.randrange(len(hospitals))]
        destination = destinations[0] if len(destinations) == 1 else rng.choice(destinations)
        level = rng.choices(levels, weights=weights)[0]
        if recent:
            status = rng.choice(STATES_RECENT)
        else:
            status = "completed" if rng.random() < 0.85 else "cancelled"
        window_start = created + timedelta(minutes=rng.choice((30, 60, 90, 120)))
        trip_id = hospital.next_id("transport_requests")
        capable = capable_by_level[level]
        bidders = rng.sample(capable, min(rng.randint(2, 5), len(capable)))
        bids = []
        for aid, agency_name, units in bidders:
            unit_id, _, unit_label = rng.choice([u for u in units if LEVEL_RANK[u[1]] >= LEVEL_RANK[level]])
            bids.append((ems.next_id("transport_bids"), aid, unit_id, rng.randint(5, 90),
                         created + timedelta(minutes=rng.randint(1, 25)), agency_name, unit_label))
        bids.sort(key=lambda b: b[3])
        winner = bids[0] if status not in ("open", "cancelled") else None
        trip = dict(
            id=trip_id, public_id=str(uuid.uuid4()), reference=f"S{tag}-{trip_id:08d}", hospital_id=hid,
            status=status, version=1, origin_facility_id=origin, pickup_location="Room 1",
            destination_facility_id=destination, destination_address="", level_of_care=level,
            mobility="stretcher", urgency=rng.choices(("routine", "urgent", "emergent"), weights=(7, 2, 1))[0],
            window_start=window_start, window_end=window_start + timedelta(minutes=60),
            patient_ref=PATIENT_REF, age_group="adult", weight_kg=80, isolation="none", oxygen_lpm=0,
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
                        awarded_unit_label=winner[6], awarded_agency_name=winner[5],
                        awarded_eta_minutes=winner[3], awarded_at=at, award_source="hospital")
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
        for bid_id, aid, unit_id, eta, at, _, _ in bids:
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
    return counts
