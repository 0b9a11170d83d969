"""Recurring series: one rule, ordinary requests for each occurrence, created ahead by the timer.

A series is a rule in iCalendar RRULE terms (RFC 5545), evaluated by ``dateutil.rrule``:
FREQ=WEEKLY with BYDAY (dialysis Monday, Wednesday, Friday) or FREQ=DAILY with an INTERVAL
(every 2 days), from a start date, ending UNTIL a date or after COUNT occurrences.  The rule
runs on the local wall clock (naive local datetimes), so a 06:30 pickup stays 06:30 local on
both sides of a daylight-saving change; each occurrence is then converted to UTC on its own
date:

* a time the clocks skip (02:30 on 2026-03-08 in New York) is moved forward by the gap
  (03:30), and the occurrence's history says so;
* a time that happens twice (01:30 on 2026-11-01) is the series' choice (``fold``: 0 the
  first, the default; 1 the second).

Exceptions: a date skipped has no occurrence; a date moved has its occurrence at the local
time given.  The relay's timer (:func:`generate`) creates the occurrences whose pickup falls
within ``series_generate_days`` (configuration, default 14) of today: ordinary requests,
linked to the series (``series_id``, ``series_date``), upcoming until their bidding lead
time (``services.scheduling``).  A date gets one occurrence, ever: the unique constraint
on (series, date) and ``INSERT ... ON CONFLICT DO NOTHING`` make two sweepers at once create
it once.

Editing "this one" is editing the occurrence (an ordinary request).  "This and later"
(:func:`change_from`) ends the series the day before and continues it as a new series from
that date; occurrences of those dates not yet awarded are replaced.  Cancelling a series
(:func:`cancel`) cancels its occurrences still ahead (open or awarded), with the reason;
past and running ones stand.

A standing order names an agency offered each occurrence first, for a head start, then every
agency able to serve the level of care (the "preferred first, then everyone" invitation
with that one agency as the preferred list).

Functions here write the hospital silo only; the caller commits (but :func:`generate`,
which commits per batch).
"""
import secrets
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from types import SimpleNamespace

import sqlalchemy as sa
from dateutil import rrule
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import selectinload

from ..events.outbox import emit
from ..extensions import db
from ..localtime import clock_change, local_today, local_zone
from ..models.base import new_public_id, utcnow
from ..models.hospital import (
    HospitalAgencyPreference,
    SeriesException,
    TransportRequest,
    TransportRequestEvent,
    TransportSeries,
)
from . import care_rules, configuration, scheduling, trips
from .trips import PATIENT_REF_ALPHABET, TransitionRefused

FREQUENCIES = {"weekly": "On days of the week", "daily": "Every n days"}
#: The most occurrences one series may have (a year of daily trips and some).
MAX_COUNT = 400
#: How far from its start a series may run.
MAX_SPAN = timedelta(days=366)
GENERATE_BATCH = 500
#: Rows per INSERT statement (about 45 values a row: within SQLite's 32,766 bound parameters).
INSERT_ROWS = 500
#: Fields an occurrence copies from its series, as the request's own columns.
COPIED = ("origin_facility_id", "pickup_location", "destination_facility_id", "destination_address",
          "level_of_care", "mobility", "urgency", "patient_ref", "age_group", "weight_kg", "isolation",
          "oxygen_lpm", "cardiac_monitor", "iv_pump", "ventilator", "other_needs", "notes")
#: What "this and later" may change.
CHANGEABLE = ("pickup_time", "window_minutes", "fold", "weekdays", "interval", "pickup_location", "mobility",
              "weight_kg", "isolation", "oxygen_lpm", "cardiac_monitor", "iv_pump", "ventilator",
              "other_needs", "notes")
_RRULE_FREQ = {"weekly": rrule.WEEKLY, "daily": rrule.DAILY}


@dataclass(frozen=True)
class Occurrence:
    """One date of a series: ``day`` (the rule's local date), ``local`` (the local wall-clock
    pickup, after a move or a clock change), ``start`` (naive UTC), ``note`` (why the time is
    not the rule's: a skipped clock hour or a move; "" otherwise)."""

    day: date
    local: datetime
    start: datetime
    note: str


def resolve_local(value, fold=0):
    """A naive local wall-clock time as ``(naive UTC, local time it stands for, note)``.

    A time the clocks skip is moved forward by the gap (the note says so); a repeated time is
    taken as ``fold`` says (0 the first, 1 the second; the note names the choice)."""
    zone = local_zone()
    change = clock_change(value)
    if change == "gap":
        # Read with the offset before the change, it is the same instant as gap-later local.
        instant = value.replace(tzinfo=zone, fold=0).astimezone(UTC)
        local = instant.astimezone(zone).replace(tzinfo=None)
        return (instant.replace(tzinfo=None), local,
                f"{value:%H:%M} does not exist on {value:%a %d %b %Y} (clocks go forward): "
                f"moved to {local:%H:%M}")
    instant = value.replace(tzinfo=zone, fold=fold if change == "fold" else 0).astimezone(UTC)
    note = ""
    if change == "fold":
        note = (f"{value:%H:%M} happens twice on {value:%a %d %b %Y} (clocks go back): the "
                f"{'second' if fold else 'first'} one")
    return instant.replace(tzinfo=None), value.replace(fold=0), note


def rule_of(series):
    """The series' ``dateutil.rrule.rrule`` over naive local datetimes."""
    start = datetime.combine(series.start_date, series.pickup_time)
    kwargs = {"dtstart": start, "interval": series.interval or 1}
    if series.frequency == "weekly":
        kwargs["byweekday"] = series.weekday_list
    if series.until_date is not None:
        kwargs["until"] = datetime.combine(series.until_date, time(23, 59, 59))
    if series.occurrence_count is not None:
        kwargs["count"] = series.occurrence_count
    return rrule.rrule(_RRULE_FREQ[series.frequency], **kwargs)


def occurrences(series, first_day, last_day, exceptions=None, cache=None):
    """The series' occurrences whose rule dates fall from ``first_day`` to ``last_day`` (local
    dates, inclusive), exceptions applied: a list of :class:`Occurrence` in date order.

    ``cache`` (a dict, optional) keeps the rule's dates per distinct rule and window and each
    local time's conversion to UTC, for many series evaluated together (:func:`generate`): series
    sharing a rule share its dates; the result is the same as without it."""
    if exceptions is None:
        exceptions = {e.day: e for e in series.exceptions}
    found = []
    for local in _rule_datetimes(series, first_day, last_day, cache):
        day = local.date()
        exception = exceptions.get(day)
        if exception is not None and exception.kind == "skip":
            continue
        fold, moved = series.fold, ""
        if exception is not None and exception.kind == "move":
            local, fold = exception.moved_to, exception.moved_fold
            moved = f"moved from {datetime.combine(day, series.pickup_time):%a %d %b %H:%M}"
        if cache is None:
            start, shown, note = resolve_local(local, fold)
        else:
            key = ("utc", local, fold)
            if key not in cache:
                cache[key] = resolve_local(local, fold)
            start, shown, note = cache[key]
        found.append(Occurrence(day, shown, start, "; ".join(x for x in (moved, note) if x)))
    return found


def _rule_datetimes(series, first_day, last_day, cache=None):
    """The rule's naive local datetimes from ``first_day`` to ``last_day`` (before exceptions);
    kept in ``cache`` per distinct rule and window."""
    key = ("rule", series.frequency, series.interval, series.weekdays, series.start_date,
           series.pickup_time, series.until_date, series.occurrence_count, first_day, last_day)
    if cache is not None and key in cache:
        return cache[key]
    found = rule_of(series).between(datetime.combine(first_day, time.min),
                                    datetime.combine(last_day, time.max), inc=True)
    if cache is not None:
        cache[key] = found
    return found


def preview(series, count=10, today=None):
    """The next ``count`` occurrences from ``today`` (local), exceptions applied."""
    today = today or local_today()
    last = min(series.until_date or date.max, today + MAX_SPAN)
    found = []
    day = today
    while len(found) < count and day <= last:
        chunk_end = min(day + timedelta(days=62), last)
        found.extend(occurrences(series, day, chunk_end))
        day = chunk_end + timedelta(days=1)
    return found[:count]


def check_rule(fields, today=None):
    """Messages by field name for a rule that cannot stand ({} when it can).

    ``fields`` holds ``frequency``, ``interval``, ``weekdays`` (list of 0..6), ``start_date``,
    ``until_date`` / ``occurrence_count`` (exactly one), ``pickup_time``."""
    today = today or local_today()
    errors = {}
    horizon = configuration.get("booking_horizon_days")
    if fields["frequency"] == "weekly" and not fields["weekdays"]:
        errors["weekdays"] = "Choose at least one day of the week."
    if fields["start_date"] < today:
        errors["start_date"] = "The series cannot start in the past."
    elif fields["start_date"] > today + timedelta(days=horizon):
        errors["start_date"] = f"A series can start at most {horizon} days ahead."
    until, count = fields.get("until_date"), fields.get("occurrence_count")
    if (until is None) == (count is None):
        errors["end"] = "End the series on a date or after a number of occurrences (one of the two)."
    elif until is not None and until < fields["start_date"]:
        errors["until_date"] = "The end date is before the start date."
    elif until is not None and until > fields["start_date"] + MAX_SPAN:
        errors["until_date"] = "A series may run at most a year; start a new one after."
    elif count is not None and not 1 <= count <= MAX_COUNT:
        errors["occurrence_count"] = f"Enter from 1 to {MAX_COUNT} occurrences."
    return errors


def _check_care(fields):
    """Refuse a series whose needs ask more than its level of care (:mod:`.care_rules`): a
    series keeps no override, so its occurrences must meet the table as they are.  Raises
    :class:`dashboard.services.trips.CareLevelRefused` (400)."""
    broken = care_rules.shortfalls(fields["level_of_care"], fields)
    if broken:
        needed = care_rules.required_level(fields)
        raise trips.CareLevelRefused(
            " ".join(rule.message(fields["level_of_care"]) for rule in broken)
            + f" A series keeps no override: book it at {needed}, or post single requests with an"
              " override and its reason.", rules=broken)


def create(hospital_id, hospital_code, fields, user_id):
    """A new active series from validated ``fields`` (the model's columns); emits
    ``series.created``.  Raises :class:`TransitionRefused` (400) for a rule that cannot stand
    (:func:`check_rule`), 400 for a preferred invitation without an active preferred agency."""
    problems = check_rule(dict(fields, weekdays=_weekday_list(fields.get("weekdays", ""))))
    if problems:
        raise TransitionRefused(" ".join(problems.values()), status=400)
    _check_care(fields)
    if fields.get("invite_mode", "all") != "all" and not fields.get("standing_agency_id") \
            and not trips.active_agency_ids(trips.preferred_agency_ids(hospital_id)):
        raise TransitionRefused("Your hospital has no active preferred agencies, so no agency could "
                                "bid. Add preferred agencies first or invite all agencies.", status=400)
    now = utcnow()
    series = TransportSeries(hospital_id=hospital_id, hospital_code=hospital_code, status="active",
                             created_by_user_id=user_id, created_at=now, updated_at=now, **fields)
    if not series.patient_ref:
        series.patient_ref = trips.new_patient_ref()
    db.session.add(series)
    db.session.flush()
    emit("hospital", "series.created", "series", series.public_id, series_payload(series))
    return series


def _weekday_list(value):
    if isinstance(value, str):
        return [int(x) for x in value.split(",") if x != ""]
    return list(value)


def series_payload(series, **extra):
    """What other silos learn of a series: ids and operational facts, no patient reference."""
    return dict(series_id=series.id, public_id=series.public_id, hospital_id=series.hospital_id,
                level_of_care=series.level_of_care, status=series.status,
                invite_mode="preferred_then_all" if series.standing_agency_id else series.invite_mode,
                invited_agency_ids=[series.standing_agency_id] if series.standing_agency_id else [],
                **extra)


def of_hospital(hospital_id):
    """The hospital's series, active first, then newest."""
    return list(db.session.scalars(
        sa.select(TransportSeries).where(TransportSeries.hospital_id == hospital_id)
        .options(selectinload(TransportSeries.origin), selectinload(TransportSeries.destination))
        .order_by(TransportSeries.status, TransportSeries.created_at.desc(), TransportSeries.id.desc())))


def get_for_hospital(public_id, hospital_id):
    """A series of this hospital, or None (another hospital's is not found)."""
    return db.session.scalar(sa.select(TransportSeries).where(
        TransportSeries.public_id == str(public_id), TransportSeries.hospital_id == hospital_id))


def occurrence_requests(series_id, limit=60):
    """The series' requests (its occurrences), soonest pickup first."""
    return list(db.session.scalars(
        sa.select(TransportRequest).where(TransportRequest.series_id == series_id)
        .order_by(TransportRequest.window_start).limit(limit)))


# --- exceptions --------------------------------------------------------------------------------

def _rule_dates(series, day):
    """Whether ``day`` is one of the rule's dates (before exceptions)."""
    return any(o.day == day for o in occurrences(series, day, day, exceptions={}))


def _occurrence_of(series, day):
    return db.session.scalar(sa.select(TransportRequest).where(
        TransportRequest.series_id == series.id, TransportRequest.series_date == day))


def skip(series, day, note, user_id, user_label):
    """Skip the occurrence of ``day`` (a date of the rule); one already created and not yet
    picked up is cancelled ("not needed").  Raises :class:`TransitionRefused` (400 not a date of
    the series, 409 series cancelled or the occurrence under way)."""
    _check_active(series)
    if not _rule_dates(series, day):
        raise TransitionRefused(f"{day:%a %d %b %Y} is not a date of this series.", status=400)
    existing = _occurrence_of(series, day)
    if existing is not None and existing.status not in ("open", "awarded", "cancelled"):
        raise TransitionRefused(f"The occurrence of {day:%a %d %b} is under way; it cannot be skipped.")
    _set_exception(series, day, "skip", None, 0, note, user_id)
    if existing is not None and existing.status != "cancelled":
        trips.cancel(existing, "not_needed", f"Series date skipped. {note}".strip(), user_id, user_label)
    emit("hospital", "series.changed", "series", series.public_id,
         series_payload(series, skipped=day.isoformat()))


def move(series, day, local, fold, note, user_id, user_label):
    """Move the occurrence of ``day`` to the local wall-clock time ``local`` (naive, ``fold``
    for a repeated hour); one already created and still open follows (its window keeps its
    length).  Raises :class:`TransitionRefused` (400 not a date of the series, a time past or
    past the horizon; 409 series cancelled or the occurrence awarded)."""
    _check_active(series)
    if not _rule_dates(series, day):
        raise TransitionRefused(f"{day:%a %d %b %Y} is not a date of this series.", status=400)
    start, _shown, _note = resolve_local(local, fold)
    now = utcnow()
    if start < now:
        raise TransitionRefused("The new pickup time is in the past.", status=400)
    if start > now + scheduling.horizon():
        raise TransitionRefused(f"The new pickup can be at most {scheduling.horizon().days} days ahead.",
                                status=400)
    existing = _occurrence_of(series, day)
    if existing is not None and existing.status not in ("open", "cancelled"):
        raise TransitionRefused(f"The occurrence of {day:%a %d %b} is already awarded; change it with "
                                "the agency, or cancel it and skip the date.")
    _set_exception(series, day, "move", local.replace(fold=0), fold, note, user_id)
    if existing is not None and existing.status == "open":
        length = existing.window_end - existing.window_start
        trips.edit(existing, {"window_start": start, "window_end": start + length}, user_id, user_label)
    emit("hospital", "series.changed", "series", series.public_id,
         series_payload(series, moved=day.isoformat()))


def _set_exception(series, day, kind, moved_to, fold, note, user_id):
    row = db.session.scalar(sa.select(SeriesException).where(
        SeriesException.series_id == series.id, SeriesException.day == day))
    if row is None:
        row = SeriesException(series_id=series.id, day=day)
        db.session.add(row)
    row.kind, row.moved_to, row.moved_fold = kind, moved_to, fold
    row.note, row.created_by_user_id, row.created_at = (note or "")[:200], user_id, utcnow()
    db.session.flush()
    db.session.expire(series, ["exceptions"])


def _check_active(series):
    if series.status != "active":
        raise TransitionRefused("This series is cancelled; nothing more can change on it.")


# --- this and later, cancel -------------------------------------------------------------------

def _replaceable(series, from_day):
    """The series' occurrences from ``from_day`` on that are still open (not awarded)."""
    return list(db.session.scalars(sa.select(TransportRequest).where(
        TransportRequest.series_id == series.id, TransportRequest.series_date >= from_day,
        TransportRequest.status == "open")))


def change_from(series, from_day, changes, user_id, user_label, expected_version=None):
    """"This and later": the series ends the day before ``from_day`` and continues, changed,
    as a new series from that date (same patient reference, exceptions from then on kept).

    Its open occurrences from ``from_day`` are cancelled ("series changed") and the new series
    creates them again; awarded ones stand (the agency has them: change them one by one).
    Returns the new series.  Raises :class:`TransitionRefused` (409 cancelled or stale,
    400 a date before today or past the series' end, or a rule that cannot stand).
    """
    _check_active(series)
    if expected_version is not None and expected_version != series.version:
        raise TransitionRefused(trips.STALE_MESSAGE)
    today = local_today()
    if from_day < today:
        raise TransitionRefused("Changes apply from today or a later date.", status=400)
    if series.until_date is not None and from_day > series.until_date:
        raise TransitionRefused("The series has ended by then.", status=400)
    columns = {c.name for c in TransportSeries.__table__.columns} - {
        "id", "public_id", "status", "version", "start_date", "generated_through", "cancelled_at",
        "cancel_reason", "cancel_note", "continues_id", "created_by_user_id", "created_at", "updated_at"}
    values = {name: getattr(series, name) for name in columns}
    values.update({k: v for k, v in changes.items() if k in CHANGEABLE})
    if series.occurrence_count is not None:  # what is left of the count continues
        done = len(occurrences(series, series.start_date, from_day - timedelta(days=1), exceptions={}))
        values["occurrence_count"] = max(series.occurrence_count - done, 1)
    values["start_date"] = from_day
    problems = check_rule(dict(values, weekdays=_weekday_list(values["weekdays"])))
    if problems:
        raise TransitionRefused(" ".join(problems.values()), status=400)
    _check_care(values)
    now = utcnow()
    result = db.session.execute(
        sa.update(TransportSeries).where(TransportSeries.id == series.id,
                                         TransportSeries.version == series.version,
                                         TransportSeries.status == "active")
        .values(until_date=from_day - timedelta(days=1), occurrence_count=None,
                version=series.version + 1, updated_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise TransitionRefused(trips.STALE_MESSAGE)
    kept = [e for e in series.exceptions if e.day >= from_day]
    db.session.refresh(series)
    successor = TransportSeries(status="active", continues_id=series.id, created_by_user_id=user_id,
                                created_at=now, updated_at=now, **values)
    db.session.add(successor)
    db.session.flush()
    for exception in kept:
        db.session.add(SeriesException(series_id=successor.id, day=exception.day, kind=exception.kind,
                                       moved_to=exception.moved_to, moved_fold=exception.moved_fold,
                                       note=exception.note, created_by_user_id=exception.created_by_user_id))
    for trip in _replaceable(series, from_day):
        trips.cancel(trip, "not_needed", f"Series changed from {from_day:%a %d %b}: replaced",
                     user_id, user_label)
    # Occurrences the agencies already hold stand: the new series does not create those dates again.
    held = db.session.scalars(sa.select(TransportRequest.series_date).where(
        TransportRequest.series_id == series.id, TransportRequest.series_date >= from_day,
        TransportRequest.status != "cancelled"))
    kept_days = {e.day for e in kept}
    for day in held:
        if day not in kept_days:
            db.session.add(SeriesException(series_id=successor.id, day=day, kind="skip",
                                           note="Kept on the earlier series (awarded)",
                                           created_by_user_id=user_id))
    emit("hospital", "series.changed", "series", series.public_id,
         series_payload(series, continued_by=successor.public_id, from_day=from_day.isoformat()))
    emit("hospital", "series.created", "series", successor.public_id, series_payload(successor))
    return successor


def cancel(series, reason, note, user_id, user_label, expected_version=None):
    """Cancel the series with a reason: its occurrences still ahead (pickup after now, open or
    awarded) are cancelled with the same reason; past and running ones stand.  Emits
    ``series.cancelled``.  Returns how many occurrences were cancelled.  Raises
    :class:`TransitionRefused` (409 already cancelled or stale)."""
    _check_active(series)
    if expected_version is not None and expected_version != series.version:
        raise TransitionRefused(trips.STALE_MESSAGE)
    now = utcnow()
    result = db.session.execute(
        sa.update(TransportSeries).where(TransportSeries.id == series.id,
                                         TransportSeries.version == series.version,
                                         TransportSeries.status == "active")
        .values(status="cancelled", cancelled_at=now, cancel_reason=reason,
                cancel_note=(note or "")[:300] or None, version=series.version + 1, updated_at=now)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise TransitionRefused(trips.STALE_MESSAGE)
    db.session.refresh(series)
    future = list(db.session.scalars(sa.select(TransportRequest).where(
        TransportRequest.series_id == series.id, TransportRequest.window_start > now,
        TransportRequest.status.in_(("open", "awarded")))))
    for trip in future:
        trips.cancel(trip, reason, f"Series cancelled. {note or ''}".strip(), user_id, user_label)
    emit("hospital", "series.cancelled", "series", series.public_id,
         series_payload(series, reason=reason, cancelled_occurrences=len(future)))
    return len(future)


# --- generation by the timer -------------------------------------------------------------------

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
#: Who the history line of a generated occurrence names.
_GENERATED_BY = "MedPort (series)"
_bulk_sql = None


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
    return [SimpleNamespace(**row._mapping, weekday_list=_weekday_list(row.weekdays),
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
             actor_user_id=None, actor_ip=None)
    db.session.execute(
        sa.update(TransportSeries).where(TransportSeries.id.in_([s.id for s in chunk]),
                                         sa.or_(TransportSeries.generated_through.is_(None),
                                                TransportSeries.generated_through < through))
        .values(generated_through=through).execution_options(synchronize_session=False))
    return len(inserted)
