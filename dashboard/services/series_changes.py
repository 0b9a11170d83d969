"""Recurring series, changed: a date skipped or moved (its occurrence follows), "this and later"
(:func:`change_from`: the series ends the day before and continues, changed, as a new series;
occurrences of those dates not yet awarded are replaced) and the series cancelled
(:func:`cancel`: its occurrences still ahead, open or awarded, cancelled with the reason; past
and running ones stand).

Functions here write the hospital silo only and add the matching outbox events; the caller commits.
``actor`` (keyword, a :class:`dashboard.events.outbox.Actor`) is who acts: its ``user_id``
and ``label`` go on the request's timeline, its ``user_id`` and ``ip`` on the outbox event.
"""
from datetime import timedelta

import sqlalchemy as sa

from ..events.outbox import emit
from ..extensions import db
from ..localtime import local_today
from ..models.base import utcnow
from ..models.hospital import (
    SeriesException,
    TransportRequest,
    TransportSeries,
)
from . import scheduling, trip_posting, trips
from .series import (
    check_care,
    check_rule,
    occurrences,
    resolve_local,
    series_payload,
    weekday_list,
)
from .trips import TransitionRefused

#: What "this and later" may change.
CHANGEABLE = ("pickup_time", "window_minutes", "fold", "weekdays", "interval", "pickup_location", "mobility",
              "weight_kg", "isolation", "oxygen_lpm", "cardiac_monitor", "iv_pump", "ventilator",
              "other_needs", "notes")


def _rule_dates(series, day):
    """Whether ``day`` is one of the rule's dates (before exceptions)."""
    return any(o.day == day for o in occurrences(series, day, day, exceptions={}))


def _occurrence_of(series, day):
    return db.session.scalar(sa.select(TransportRequest).where(
        TransportRequest.series_id == series.id, TransportRequest.series_date == day))


def skip(series, day, note, *, actor):
    """Skip the occurrence of ``day`` (a date of the rule); one already created and not yet
    picked up is cancelled ("not needed").  Raises :class:`TransitionRefused` (400 not a date of
    the series, 409 series cancelled or the occurrence under way)."""
    _check_active(series)
    if not _rule_dates(series, day):
        raise TransitionRefused(f"{day:%a %d %b %Y} is not a date of this series.", status=400)
    existing = _occurrence_of(series, day)
    if existing is not None and existing.status not in ("open", "awarded", "cancelled"):
        raise TransitionRefused(f"The occurrence of {day:%a %d %b} is under way; it cannot be skipped.")
    _set_exception(series, day, "skip", None, 0, note, actor.user_id)
    if existing is not None and existing.status != "cancelled":
        trips.cancel(existing, "not_needed", f"Series date skipped. {note}".strip(), actor=actor)
    emit("hospital", "series.changed", "series", series.public_id,
         series_payload(series, skipped=day.isoformat()), actor=actor)


def move(series, day, local, fold, note, *, actor):
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
    _set_exception(series, day, "move", local.replace(fold=0), fold, note, actor.user_id)
    if existing is not None and existing.status == "open":
        length = existing.window_end - existing.window_start
        trip_posting.edit(existing, {"window_start": start, "window_end": start + length}, actor=actor)
    emit("hospital", "series.changed", "series", series.public_id,
         series_payload(series, moved=day.isoformat()), actor=actor)


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


def _replaceable(series, from_day):
    """The series' occurrences from ``from_day`` on that are still open (not awarded)."""
    return list(db.session.scalars(sa.select(TransportRequest).where(
        TransportRequest.series_id == series.id, TransportRequest.series_date >= from_day,
        TransportRequest.status == "open")))


def change_from(series, from_day, changes, expected_version=None, *, actor):
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
    problems = check_rule(dict(values, weekdays=weekday_list(values["weekdays"])))
    if problems:
        raise TransitionRefused(" ".join(problems.values()), status=400)
    check_care(values)
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
    successor = TransportSeries(status="active", continues_id=series.id, created_by_user_id=actor.user_id,
                                created_at=now, updated_at=now, **values)
    db.session.add(successor)
    db.session.flush()
    for exception in kept:
        db.session.add(SeriesException(series_id=successor.id, day=exception.day, kind=exception.kind,
                                       moved_to=exception.moved_to, moved_fold=exception.moved_fold,
                                       note=exception.note, created_by_user_id=exception.created_by_user_id))
    for trip in _replaceable(series, from_day):
        trips.cancel(trip, "not_needed", f"Series changed from {from_day:%a %d %b}: replaced",
                     actor=actor)
    # Occurrences the agencies already hold stand: the new series does not create those dates again.
    held = db.session.scalars(sa.select(TransportRequest.series_date).where(
        TransportRequest.series_id == series.id, TransportRequest.series_date >= from_day,
        TransportRequest.status != "cancelled"))
    kept_days = {e.day for e in kept}
    for day in held:
        if day not in kept_days:
            db.session.add(SeriesException(series_id=successor.id, day=day, kind="skip",
                                           note="Kept on the earlier series (awarded)",
                                           created_by_user_id=actor.user_id))
    emit("hospital", "series.changed", "series", series.public_id,
         series_payload(series, continued_by=successor.public_id, from_day=from_day.isoformat()), actor=actor)
    emit("hospital", "series.created", "series", successor.public_id, series_payload(successor), actor=actor)
    return successor


def cancel(series, reason, note, expected_version=None, *, actor):
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
        trips.cancel(trip, reason, f"Series cancelled. {note or ''}".strip(), actor=actor)
    emit("hospital", "series.cancelled", "series", series.public_id,
         series_payload(series, reason=reason, cancelled_occurrences=len(future)), actor=actor)
    return len(future)
