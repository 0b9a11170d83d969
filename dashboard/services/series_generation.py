"""Recurring series, generation by the relay's timer: the occurrences whose pickup falls within
``series_generate_days`` (configuration, default 14) of today, created as ordinary requests
linked to their series (``series_id``, ``series_date``), upcoming until their bidding lead
time (``services.scheduling``).

A date gets one occurrence, ever: the unique constraint on (series, date) and
``INSERT ... ON CONFLICT DO NOTHING`` make two sweepers at once create it once.  On PostgreSQL
the rows go in one bulk statement per batch (:func:`_bulk_statement`); elsewhere, row by row
in batches of :data:`INSERT_ROWS` (:func:`_insert`).  :func:`generate` commits per batch.
"""
import secrets
from datetime import date, timedelta
from types import SimpleNamespace

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ..events.outbox import SYSTEM, emit
from ..extensions import db
from ..localtime import local_today
from ..models.base import new_public_id, utcnow
from ..models.hospital import (
    HospitalAgencyPreference,
    SeriesException,
    TransportRequest,
    TransportRequestEvent,
    TransportSeries,
)
from . import configuration, scheduling, trips
from .series import (
    occurrences,
    series_payload,
    weekday_list,
)
from .trips import PATIENT_REF_ALPHABET, TransitionRefused

#: Requests per batch of series read (each batch commits).
GENERATE_BATCH = 500
#: Rows per INSERT statement (about 45 values a row: within SQLite's 32,766 bound parameters).
INSERT_ROWS = 500
#: Fields an occurrence copies from its series, as the request's own columns.
COPIED = ("origin_facility_id", "pickup_location", "destination_facility_id", "destination_address",
          "level_of_care", "mobility", "urgency", "patient_ref", "age_group", "weight_kg", "isolation",
          "oxygen_lpm", "cardiac_monitor", "iv_pump", "ventilator", "other_needs", "notes")


def _insert(rows):
    """Insert occurrence rows (SQLite and any database without the bulk path), skipping a
    (series, date) that exists already (another sweeper created it); returns
    ``[(id, series_id, series_date)]`` of those inserted."""
    table = TransportRequest.__table__
    connection = db.session.connection(bind_arguments={"mapper": TransportRequest})
    make = postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert
    # One statement compiled once, its rows sent in batches (executemany with RETURNING).
    stmt = (make(table).on_conflict_do_nothing(index_elements=["series_id", "series_date"])
            .returning(table.c.id, table.c.series_id, table.c.series_date))
    return connection.execute(stmt, rows).all()


#: The values that differ between the occurrences of one series, with their PostgreSQL array
#: types (the bulk path sends one array per value); ``note`` is the history line's.
_VARYING = (("series_id", "integer"), ("series_date", "date"), ("reference", "text"),
            ("window_start", "timestamp"), ("window_end", "timestamp"), ("bid_deadline", "timestamp"),
            ("bidding_opens_at", "timestamp"), ("invite_mode", "text"), ("invite_all_after_minutes", "integer"),
            ("invited_agency_ids", "text"), ("widen_invite_at", "timestamp"), ("note", "text"))


#: The bulk statement, built once (:func:`_bulk_statement`).
_bulk_sql = None
#: Who the history line of a generated occurrence names.
_GENERATED_BY = "MedPort (series)"


def _bulk_statement():
    """The PostgreSQL statement inserting a batch of occurrences and their history lines in one
    round trip: the planned values arrive as arrays (``unnest``), the fields the occurrence copies
    come from its series row, ``ON CONFLICT DO NOTHING`` on (series, date) skips a date another
    sweeper created, and the history lines are written from the ``RETURNING`` ids."""
    global _bulk_sql
    if _bulk_sql is None:
        varying = [name for name, _type in _VARYING if name != "note"]
        copied = ["hospital_id", "created_by_user_id", *COPIED]
        _bulk_sql = sa.text(f"""
WITH planned AS (
    SELECT * FROM unnest({", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _VARYING)})
        WITH ORDINALITY AS p({", ".join(name for name, _kind in _VARYING)}, position)
), inserted AS (
    INSERT INTO transport_requests (public_id, status, version, will_call, bid_count, handed_back_count,
                                    created_at, updated_at, {", ".join(copied)}, {", ".join(varying)})
    SELECT CAST(gen_random_uuid() AS text), 'open', 1, false, 0, 0, :now, :now,
           {", ".join(f"s.{name}" for name in copied)}, {", ".join(f"p.{name}" for name in varying)}
    FROM planned p JOIN transport_series s ON s.id = p.series_id
    ORDER BY p.position
    ON CONFLICT (series_id, series_date) DO NOTHING
    RETURNING id, series_id, series_date
), history AS (
    INSERT INTO transport_request_events (trip_id, action, from_status, to_status, at, user_id,
                                          user_label, note, detail)
    SELECT i.id, 'posted', NULL, 'open', :now, NULL, :label, p.note, NULL
    FROM inserted i JOIN planned p ON p.series_id = i.series_id AND p.series_date = i.series_date
    ORDER BY i.id
)
SELECT id, series_id, series_date FROM inserted ORDER BY id""")  # nosec B608 - only the module's own column names are formatted in; values are bound
    return _bulk_sql


def _bulk(connection):
    """Whether occurrences go in through :func:`_bulk_statement` (PostgreSQL) rather than
    :func:`_insert` and an executemany of history lines."""
    return connection.dialect.name == "postgresql"


def _random_suffixes(count, length=4):
    """``count`` strings of ``length`` characters of the reference alphabet (cryptographic
    randomness, drawn in one call: each byte below the largest multiple of the alphabet's size
    is one character, so every character is equally likely)."""
    size = len(PATIENT_REF_ALPHABET)
    bound = 256 - 256 % size
    chars = []
    while len(chars) < count * length:
        chars.extend(PATIENT_REF_ALPHABET[b % size] for b in secrets.token_bytes(2 * count * length + 16)
                     if b < bound)
    return ["".join(chars[i:i + length]) for i in range(0, count * length, length)]


def _taken_references(wanted):
    """Which of the ``wanted`` references exist already (one query on PostgreSQL, per 1,000
    elsewhere)."""
    connection = db.session.connection(bind_arguments={"mapper": TransportRequest})
    if connection.dialect.name == "postgresql":
        return set(connection.execute(sa.text(
            "SELECT reference FROM transport_requests WHERE reference = ANY(CAST(:wanted AS text[]))"),
            {"wanted": wanted}).scalars())
    taken = set()
    for start in range(0, len(wanted), 1000):
        taken |= set(db.session.scalars(sa.select(TransportRequest.reference).where(
            TransportRequest.reference.in_(wanted[start:start + 1000]))))
    return taken


def _references(codes_and_days):
    """A reference per (hospital code, pickup day) given, none already taken (``CODE-YYMMDD-XXXX``).
    Raises :class:`TransitionRefused` (503) when clashes persist after ``REFERENCE_ATTEMPTS``."""
    prefixes, known = [], {}
    for code, day in codes_and_days:
        prefix = known.get((code, day))
        if prefix is None:
            prefix = known[(code, day)] = f"{code}-{day:%y%m%d}-"
        prefixes.append(prefix)
    wanted = [prefix + suffix for prefix, suffix in zip(prefixes, _random_suffixes(len(prefixes)), strict=True)]
    drawn = range(len(wanted))  # the positions whose reference is not known to be free
    for _ in range(trips.REFERENCE_ATTEMPTS):
        taken = _taken_references([wanted[i] for i in drawn]) if drawn else set()
        kept = {wanted[i] for i in set(range(len(wanted))) - set(drawn)} if len(drawn) < len(wanted) else set()
        clash = []
        for i in drawn:
            ref = wanted[i]
            if ref in taken or ref in kept:
                clash.append(i)
            kept.add(ref)
        if not clash:
            return wanted
        for i, suffix in zip(clash, _random_suffixes(len(clash)), strict=True):
            wanted[i] = prefixes[i] + suffix
        drawn = clash
    raise TransitionRefused("Could not allocate request references; the timer tries again.", status=503)


def generate(now=None, days=None, batch=GENERATE_BATCH):
    """Create the occurrences of every active series whose pickup falls from now to
    ``days`` (default ``series_generate_days``) local days ahead; commits per batch of series.

    Idempotent: each series remembers how far it was generated (``generated_through``) and a
    (series, date) pair is inserted once (``ON CONFLICT DO NOTHING`` on its unique
    constraint), also under two sweepers at once.  An occurrence whose pickup has passed is
    not created.  Each created request gets its history line ("posted").  On PostgreSQL
    (13 or later: ``gen_random_uuid``) a batch is one statement (arrays of the planned values,
    the requests and their history lines); elsewhere an executemany of each.  Series sharing a
    rule share its dates (:func:`occurrences` with a cache).  One ``series.generated`` event
    per level of care and invitation of each batch (the agencies' upcoming lists refresh).
    Returns how many requests were created.  Raises :class:`TransitionRefused` (503) when no
    free references could be drawn (the timer tries again).
    """
    now = now or utcnow()
    settings = configuration.get_all()
    db.session.commit()  # end the center read before writing the hospital silo
    through = local_today(now) + timedelta(days=days or settings["series_generate_days"])
    today = local_today(now)
    created = 0
    last_id = 0
    cache = {}
    while True:
        chunk = _due(last_id, through, batch)
        if not chunk:
            break
        last_id = chunk[-1].id
        created += _generate_chunk(chunk, today, through, now, settings, cache)
        db.session.commit()
    return created


def _due(after_id, through, batch):
    """The next ``batch`` active series (by id, after ``after_id``) not yet generated through
    ``through``, as plain values rather than ORM objects (thousands a run): each has the
    series' columns as attributes, ``weekday_list`` and ``exceptions`` (rows with ``day``,
    ``kind``, ``moved_to``, ``moved_fold``), what :func:`occurrences` and
    :func:`series_payload` read."""
    table, excepted = TransportSeries.__table__, SeriesException.__table__
    rows = db.session.execute(
        sa.select(table).where(table.c.status == "active", table.c.id > after_id,
                               sa.or_(table.c.generated_through.is_(None), table.c.generated_through < through))
        .order_by(table.c.id).limit(batch), bind_arguments={"mapper": TransportSeries}).all()
    if not rows:
        return []
    exceptions = {}
    for row in db.session.execute(sa.select(excepted).where(
            excepted.c.series_id.between(rows[0].id, rows[-1].id)).order_by(excepted.c.id),
            bind_arguments={"mapper": TransportSeries}):
        exceptions.setdefault(row.series_id, []).append(row)
    return [SimpleNamespace(**row._mapping, weekday_list=weekday_list(row.weekdays),
                            exceptions=exceptions.get(row.id, [])) for row in rows]


def _invitations(chunk):
    """``{hospital id: [preferred agency ids by rank]}`` and the set of active agencies among
    them and the chunk's standing agencies."""
    hospital_ids = {s.hospital_id for s in chunk}
    preferred = {}
    for hospital_id, agency_id in db.session.execute(
            sa.select(HospitalAgencyPreference.hospital_id, HospitalAgencyPreference.agency_id)
            .where(HospitalAgencyPreference.hospital_id.in_(hospital_ids))
            .order_by(HospitalAgencyPreference.hospital_id, HospitalAgencyPreference.rank)):
        preferred.setdefault(hospital_id, []).append(agency_id)
    active = set(trips.active_agency_ids(sorted({a for ids in preferred.values() for a in ids}
                                                | {s.standing_agency_id for s in chunk
                                                   if s.standing_agency_id})))
    return preferred, active


def _planned(chunk, today, through, now, settings, cache):
    """The occurrences to create for a batch of series: a list of dicts of the :data:`_VARYING`
    values (reference included), in series then date order."""
    preferred, active = _invitations(chunk)
    planned, codes_and_days = [], []
    for series in chunk:
        first = max(series.start_date, today,
                    (series.generated_through + timedelta(days=1)) if series.generated_through else date.min)
        last = min(through, series.until_date or through)
        if first > last:
            continue
        found = [o for o in occurrences(series, first, last, cache=cache) if o.start >= now]
        if not found:
            continue
        # What every occurrence of the series shares.
        if series.standing_agency_id:
            invite_mode, after = "preferred_then_all", series.standing_order_minutes or 0
            invited = [series.standing_agency_id] if series.standing_agency_id in active else []
        else:
            invite_mode, after = series.invite_mode, series.invite_all_after_minutes
            invited = [a for a in preferred.get(series.hospital_id, []) if a in active]
        invited = "," + ",".join(str(a) for a in invited) + ","
        window = timedelta(minutes=series.window_minutes)
        posted_deadline = now + timedelta(minutes=series.bid_deadline_minutes)
        level = series.level_of_care
        widen = timedelta(minutes=after or 0) if invite_mode == "preferred_then_all" else None
        for occurrence in found:
            start = occurrence.start
            end = start + window
            booking, problem = scheduling.plan({"level_of_care": level, "window_start": start,
                                                "window_end": end, "bid_deadline": posted_deadline},
                                               now, settings)
            if problem:  # bidding would close after the pickup: bidding closes at pickup instead
                opens = scheduling.opening_for(level, start, now, settings)
                booking = {"bidding_opens_at": opens, "bid_deadline": min(end, max(start, now))}
            opens = booking.get("bidding_opens_at")
            planned.append({
                "series_id": series.id, "series_date": occurrence.day, "reference": None,
                "window_start": start, "window_end": end,
                "bid_deadline": booking.get("bid_deadline", posted_deadline), "bidding_opens_at": opens,
                "invite_mode": invite_mode, "invite_all_after_minutes": after, "invited_agency_ids": invited,
                "widen_invite_at": (opens or now) + widen if widen is not None else None,
                "note": ("Series occurrence. " + occurrence.note).strip()[:300]})
            codes_and_days.append((series.hospital_code, occurrence.local.date()))
    for row, reference in zip(planned, _references(codes_and_days), strict=True):
        row["reference"] = reference
    return planned


def _generate_chunk(chunk, today, through, now, settings, cache=None):
    """Create a batch's occurrences, their history lines and outbox events, and move the
    batch's ``generated_through``; returns how many requests were created."""
    planned = _planned(chunk, today, through, now, settings, {} if cache is None else cache)
    connection = db.session.connection(bind_arguments={"mapper": TransportRequest})
    inserted = []
    if planned and _bulk(connection):
        params = {name: [row[name] for row in planned] for name, _kind in _VARYING}
        inserted = connection.execute(_bulk_statement(), dict(params, now=now, label=_GENERATED_BY)).all()
    elif planned:
        by_id = {s.id: s for s in chunk}
        copied = {}
        for series_id in {row["series_id"] for row in planned}:
            found = by_id[series_id]
            copied[series_id] = {name: getattr(found, name) for name in COPIED}
            copied[series_id].update(hospital_id=found.hospital_id, created_by_user_id=found.created_by_user_id)
        rows = [dict(copied[row["series_id"]], **row, public_id=new_public_id(), status="open", version=1,
                     bid_count=0, handed_back_count=0, created_at=now, updated_at=now)
                for row in planned]
        for row in rows:
            del row["note"]
        notes = {(row["series_id"], row["series_date"]): row["note"] for row in planned}
        for start in range(0, len(rows), INSERT_ROWS):
            inserted.extend(_insert(rows[start:start + INSERT_ROWS]))
        if inserted:
            db.session.connection(bind_arguments={"mapper": TransportRequestEvent}).execute(
                sa.insert(TransportRequestEvent.__table__), [
                    dict(trip_id=trip_id, action="posted", from_status=None, to_status="open", at=now,
                         user_id=None, user_label=_GENERATED_BY, note=notes[(series_id, day)], detail=None)
                    for trip_id, series_id, day in inserted])
    # One event per level of care and invitation of the batch (not one per series): the agencies
    # able to serve it hear that their upcoming lists changed, the audit keeps which series grew.
    per_series = {}
    for _trip_id, series_id, _day in inserted:
        per_series[series_id] = per_series.get(series_id, 0) + 1
    groups = {}
    for found in chunk:
        if found.id not in per_series:
            continue
        payload = series_payload(found)
        key = (payload["level_of_care"], payload["invite_mode"], tuple(payload["invited_agency_ids"]))
        group = groups.setdefault(key, {"series": {}, "payload": payload})
        group["series"][found.public_id] = per_series[found.id]
    for (level, _mode, _invited), group in groups.items():
        created = group["series"]
        emit("hospital", "series.generated", "series", f"{level}-{through.isoformat()}-{min(created)}",
             dict(group["payload"], series_id=None, public_id=None, hospital_id=None,
                  created=sum(created.values()), series=created),
             actor=SYSTEM)
    db.session.execute(
        sa.update(TransportSeries).where(TransportSeries.id.in_([s.id for s in chunk]),
                                         sa.or_(TransportSeries.generated_through.is_(None),
                                                TransportSeries.generated_through < through))
        .values(generated_through=through).execution_options(synchronize_session=False))
    return len(inserted)
