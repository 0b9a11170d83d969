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
time given.  The relay's timer (:func:`.series_generation.generate`) creates the occurrences whose pickup falls
within ``series_generate_days`` (configuration, default 14) of today: ordinary requests,
linked to the series (``series_id``, ``series_date``), upcoming until their bidding lead
time (``services.scheduling``).  A date gets one occurrence, ever: the unique constraint
on (series, date) and ``INSERT ... ON CONFLICT DO NOTHING`` make two sweepers at once create
it once.

Editing "this one" is editing the occurrence (an ordinary request).  "This and later"
(:func:`.series_changes.change_from`) ends the series the day before and continues it as a new series from
that date; occurrences of those dates not yet awarded are replaced.  Cancelling a series
(:func:`.series_changes.cancel`) cancels its occurrences still ahead (open or awarded), with the reason;
past and running ones stand.

A standing order names an agency offered each occurrence first, for a head start, then every
agency able to serve the level of care (the "preferred first, then everyone" invitation
with that one agency as the preferred list).

Functions here write the hospital silo only; the caller commits (but :func:`.series_generation.generate`,
which commits per batch).
"""
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import sqlalchemy as sa
from dateutil import rrule
from sqlalchemy.orm import selectinload

from ..events.outbox import emit
from ..extensions import db
from ..localtime import clock_change, local_today, local_zone
from ..models.base import utcnow
from ..models.hospital import (
    TransportRequest,
    TransportSeries,
)
from . import care_rules, configuration, trip_posting, trips
from .trips import TransitionRefused

FREQUENCIES = {"weekly": "On days of the week", "daily": "Every n days"}
#: The most occurrences one series may have (a year of daily trips and some).
MAX_COUNT = 400
#: How far from its start a series may run.
MAX_SPAN = timedelta(days=366)
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


def check_care(fields):
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


def create(hospital_id, hospital_code, fields, *, actor):
    """A new active series from validated ``fields`` (the model's columns); emits
    ``series.created``.  Raises :class:`TransitionRefused` (400) for a rule that cannot stand
    (:func:`check_rule`), 400 for a preferred invitation without an active preferred agency."""
    problems = check_rule(dict(fields, weekdays=weekday_list(fields.get("weekdays", ""))))
    if problems:
        raise TransitionRefused(" ".join(problems.values()), status=400)
    check_care(fields)
    if fields.get("invite_mode", "all") != "all" and not fields.get("standing_agency_id") \
            and not trips.active_agency_ids(trip_posting.preferred_agency_ids(hospital_id)):
        raise TransitionRefused("Your hospital has no active preferred agencies, so no agency could "
                                "bid. Add preferred agencies first or invite all agencies.", status=400)
    now = utcnow()
    series = TransportSeries(hospital_id=hospital_id, hospital_code=hospital_code, status="active",
                             created_by_user_id=actor.user_id, created_at=now, updated_at=now, **fields)
    if not series.patient_ref:
        series.patient_ref = trip_posting.new_patient_ref()
    db.session.add(series)
    db.session.flush()
    emit("hospital", "series.created", "series", series.public_id, series_payload(series), actor=actor)
    return series


def weekday_list(value):
    """A series' weekdays as a list of ints (Monday 0), from its stored "0,2,4" or a list."""
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
