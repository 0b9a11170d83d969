"""The crew on a phone: shifts (who staffs which unit) and taps (steps sent from the phone).

Owned by the EMS silo; nothing here commits.

* A crew member (role ``crew``, bound to an agency) starts a shift by picking one of the
  agency's active units; the shift lasts ``MEDPORT_CREW_SHIFT_HOURS`` (default 12) unless
  ended before.  A crew member sees and moves only the trips (stops) of that unit.
* A tap is a crew step or an undo, sent by the phone with an idempotency key and the time it
  was tapped (the phone may have been out of coverage: taps wait on the phone and arrive
  later, in order).  The step is recorded at the tap's time, bounded: not more than
  ``MEDPORT_CREW_CLOCK_SKEW_SECONDS`` (default 120) ahead of the server's clock (400), not
  older than ``MEDPORT_CREW_TAP_MAX_AGE_HOURS`` (default 14, a shift and its margin; 400),
  and not before the trip's previous step (409).  The step itself is
  :func:`dashboard.services.route_steps.advance` or :func:`~dashboard.services.route_steps.undo`,
  with their refusals (409 for a trip cancelled, taken back or moved on meanwhile).
* A tap that was recorded is kept by its key (``crew_taps``): the same key sent again gets
  the same answer and changes nothing.  A refused tap keeps nothing (a refusal has no
  effect): sent again, it is checked again, and what refused it (a trip cancelled, taken
  back or moved on, a time out of bounds) refuses it again.
"""
import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import IntegrityError

from ..events.outbox import Actor, emit
from ..extensions import db
from ..localtime import to_local
from ..models.base import utcnow
from ..models.ems import CrewShift, CrewTap, EmsRoute, Unit
from ..models.hospital import TransportRequest
from ..models.vocabulary import CREW_STEP_LABELS
from . import bidding, degraded, route_steps, trips
from .refusals import Refused
from .trips import CREW_STEPS, STEP_STATUS

#: What a phone may send as a tap's idempotency key (a UUID, or any such token).
KEY_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,64}")
PUBLIC_ID_PATTERN = re.compile(r"[0-9a-fA-F-]{8,36}")
TAP_ACTIONS = ("advance", "undo")
#: A stop the relay ended meanwhile, in the crew's words (the same as while the relay has not
#: caught up: ``bidding`` reads the hospital's trip then).
ENDED_STOPS = {"cancelled": "The hospital cancelled this trip.",
               "handed_back": "This trip is no longer assigned to this unit."}


class CrewRefused(Refused):
    """A shift or tap the rules do not allow; ``message`` is for the crew, ``status`` the HTTP
    status (400 bad input, 404 not this unit's, 409 conflict)."""


def _setting(name, default):
    try:
        return current_app.config.get(name, default)
    except RuntimeError:  # outside an app (unit tests of the rules)
        return default


# --- shifts ---------------------------------------------------------------------------------

def open_shift(user_id, now=None):
    """The crew member's shift now: not ended and not past its planned end; else None."""
    now = now or utcnow()
    return db.session.scalar(
        sa.select(CrewShift).where(CrewShift.user_id == user_id, CrewShift.ended_at.is_(None),
                                   CrewShift.ends_at > now).limit(1))


def staffable_units(agency_id):
    """The agency's active units a crew may staff, by number."""
    return list(db.session.scalars(
        sa.select(Unit).where(Unit.agency_id == agency_id, Unit.active.is_(True)).order_by(Unit.number)))


def staffing(agency_id=None, now=None):
    """``{unit id: [crew member's name, ...]}`` of the shifts open now (of one agency, or of
    every agency), names in the order they started."""
    now = now or utcnow()
    query = (sa.select(CrewShift.unit_id, CrewShift.crew_name)
             .where(CrewShift.ended_at.is_(None), CrewShift.ends_at > now)
             .order_by(CrewShift.started_at, CrewShift.id))
    if agency_id is not None:
        query = query.where(CrewShift.agency_id == agency_id)
    found = {}
    for unit_id, name in db.session.execute(query):
        found.setdefault(unit_id, []).append(name)
    return found


def _close_open_shifts(user_id, now, actor):
    """End every shift of the user still open (one whose planned end passed is ended then)."""
    for shift in db.session.scalars(
            sa.select(CrewShift).where(CrewShift.user_id == user_id, CrewShift.ended_at.is_(None))):
        shift.ended_at = min(now, shift.ends_at)
        emit("ems", "unit.shift_ended", "unit", shift.unit.public_id,
             {"unit_id": shift.unit_id, "agency_id": shift.agency_id, "user_id": shift.user_id}, actor=actor)


def start_shift(user_id, crew_name, agency_id, unit_public_id, now=None, *, actor):
    """Start the crew member's shift on a unit of their agency (ending any shift they had
    open); emits ``unit.shift_started`` so the dispatcher's units page shows who staffs it.

    Returns the :class:`~dashboard.models.ems.CrewShift`.  Raises :class:`CrewRefused` 400
    when ``unit_public_id`` names no active unit of the agency.
    """
    now = now or utcnow()
    unit = db.session.scalar(sa.select(Unit).where(Unit.public_id == str(unit_public_id or "")))
    if unit is None or unit.agency_id != agency_id or not unit.active:
        raise CrewRefused("Choose one of your agency's units.", status=400)
    _close_open_shifts(user_id, now, actor)
    db.session.flush()
    hours = float(_setting("MEDPORT_CREW_SHIFT_HOURS", 12))
    shift = CrewShift(unit_id=unit.id, agency_id=agency_id, user_id=user_id, crew_name=crew_name[:120],
                      started_at=now, ends_at=now + timedelta(hours=hours))
    db.session.add(shift)
    db.session.flush()
    emit("ems", "unit.shift_started", "unit", unit.public_id,
         {"unit_id": unit.id, "agency_id": agency_id, "user_id": user_id}, actor=actor)
    return shift


def end_shift(user_id, now=None, *, actor):
    """End the crew member's open shift(s); returns how many were open."""
    now = now or utcnow()
    count = db.session.scalar(sa.select(sa.func.count()).select_from(CrewShift).where(
        CrewShift.user_id == user_id, CrewShift.ended_at.is_(None)))
    _close_open_shifts(user_id, now, actor)
    return count


# --- the unit's trips -----------------------------------------------------------------------

def unit_routes(unit_id, limit=6):
    """The unit's active stops: the current one first (under way, else the next planned by
    window), then its next planned ones; at most ``limit``."""
    return list(db.session.scalars(
        sa.select(EmsRoute).where(EmsRoute.unit_id == unit_id,
                                  EmsRoute.status.in_(bidding.ACTIVE_ROUTE_STATUSES))
        .order_by(*route_steps.current_route_order()).limit(limit)))


def unit_route(unit_id, trip_public_id):
    """The unit's stop for a trip (by the trip's public id): the active one, else the latest;
    None when the unit never had the trip."""
    return db.session.scalar(
        sa.select(EmsRoute).where(EmsRoute.unit_id == unit_id, EmsRoute.trip_public_id == trip_public_id)
        .order_by(sa.case((EmsRoute.status.in_(bidding.ACTIVE_ROUTE_STATUSES), 0), else_=1),
                  EmsRoute.id.desc()).limit(1))


def route_trips(trip_ids):
    """``{trip id: TransportRequest}`` of ``trip_ids`` read from the hospital silo (for stops
    that carry no copy of the trip's facts); ``{}`` for none."""
    trip_ids = list(trip_ids)
    if not trip_ids:
        return {}
    return {trip.id: trip for trip in db.session.scalars(
        sa.select(TransportRequest).where(TransportRequest.id.in_(trip_ids)))}


# --- taps -----------------------------------------------------------------------------------

def parse_tap_time(raw, now=None):
    """The tap's time from the phone (ISO 8601 with an offset or ``Z``, or milliseconds since
    the epoch) as naive UTC, or ``now`` when none is given (a form sent without the script).

    Raises :class:`CrewRefused` 400 for a time that cannot be read, lies more than
    ``MEDPORT_CREW_CLOCK_SKEW_SECONDS`` ahead of ``now``, or more than
    ``MEDPORT_CREW_TAP_MAX_AGE_HOURS`` behind it.
    """
    now = now or utcnow()
    raw = str(raw or "").strip()
    if not raw:
        return now
    try:
        if re.fullmatch(r"[0-9]{10,15}", raw):
            at = datetime.fromtimestamp(int(raw) / 1000, UTC)
        else:
            at = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            if at.tzinfo is None:
                raise ValueError(raw)
        at = at.astimezone(UTC).replace(tzinfo=None)
    except (ValueError, OverflowError, OSError):
        raise CrewRefused("The tap's time could not be read; tap again.", status=400) from None
    skew = timedelta(seconds=int(_setting("MEDPORT_CREW_CLOCK_SKEW_SECONDS", 120)))
    if at > now + skew:
        raise CrewRefused("The tap's time is ahead of the server's clock; check the phone's clock "
                          "and tap again.", status=400)
    max_age = timedelta(hours=float(_setting("MEDPORT_CREW_TAP_MAX_AGE_HOURS", 14)))
    if at < now - max_age:
        raise CrewRefused(f"The tap is older than {max_age.total_seconds() / 3600:g} hours; call "
                          "dispatch to record the step.", status=400)
    return at


def _previous_step_time(route, action, step):
    """The time the tap may not precede: for a step, the trip's last step before it; for an
    undo, the step being undone.  None when there is none (or its time was not kept)."""
    if action == "undo":
        return getattr(route, f"{step}_at", None) if step in STEP_STATUS else None
    index = CREW_STEPS.index(step)
    return getattr(route, f"{CREW_STEPS[index - 1]}_at") if index > 0 else None


def check_tap(key, trip_public_id, action, step):
    """Refuse (400) a tap whose key, trip id, action or step is not one the page sends."""
    if not KEY_PATTERN.fullmatch(str(key or "")):
        raise CrewRefused("The tap carries no valid key; reload the page and tap again.", status=400)
    if not PUBLIC_ID_PATTERN.fullmatch(str(trip_public_id or "")):
        raise CrewRefused("Choose the trip from its button.", status=400)
    if action not in TAP_ACTIONS:
        raise CrewRefused("Tap the step button or its undo.", status=400)
    if step not in CREW_STEPS:
        raise CrewRefused("Choose the step from the trip's button.", status=400)


def stored_answer(key, user_id, trip_public_id, action, step):
    """``(status, message)`` of the tap recorded under this key, or None for a new key.  A key used for
    another tap (another user, trip, action or step) is refused (409)."""
    tap = db.session.scalar(sa.select(CrewTap).where(CrewTap.key == key))
    if tap is None:
        return None
    if (tap.user_id, tap.trip_public_id, tap.action, tap.step) != (user_id, trip_public_id, action, step):
        raise CrewRefused("This tap's key was used for another tap; reload the page and tap again.")
    return tap.status, tap.message


def take_tap(shift, key, trip_public_id, action, step, tapped_at, trip=None, now=None, *, actor):
    """Apply one tap of the crew on ``shift``'s unit; a recorded tap is kept under ``key``.

    ``tapped_at`` is naive UTC, already bounded by :func:`parse_tap_time`; ``trip`` is the
    hospital's trip when it could be read (else None: the stop alone is checked).  Returns
    ``(status, message)``: 200 with what was recorded, or a refusal's status (404 not this
    unit's trip, 409 the tap's time is before the previous step, or the trip was cancelled,
    taken back or moved on meanwhile).  On a refusal the session is rolled back and nothing is
    kept.  The caller commits (and, on an IntegrityError of the key, reads the answer a
    concurrent send stored).
    """
    route = unit_route(shift.unit_id, trip_public_id)
    reference = route.trip_reference if route is not None else "This trip"
    try:
        if route is None:
            raise CrewRefused("No such trip on your unit.", status=404)
        if route.status in ENDED_STOPS:
            raise CrewRefused(ENDED_STOPS[route.status])
        floor = _previous_step_time(route, action, step)
        if floor is not None and tapped_at < floor:
            raise CrewRefused(
                f"The tap ({_clock(tapped_at)}) is before the trip's previous step ({_clock(floor)}); "
                "check the phone's clock.")
        act = route_steps.advance if action == "advance" else route_steps.undo
        act(route, step, trip=trip, now=tapped_at, actor=Actor(shift.user_id, actor.ip, actor.label))
        done = " undone" if action == "undo" else ""
        status, message = 200, f"{reference}: {CREW_STEP_LABELS[step]}{done} at {_clock(tapped_at)}."
    except (CrewRefused, bidding.BidRefused) as refused:
        db.session.rollback()
        return refused.status, f"{reference}: {refused.message}"
    db.session.add(CrewTap(key=key, user_id=shift.user_id, unit_id=shift.unit_id,
                           trip_public_id=trip_public_id, action=action, step=step,
                           tapped_at=tapped_at, received_at=now or utcnow(), status=status,
                           message=message[:400]))
    return status, message


def tap(shift, key, trip_public_id, action, step, tapped_at_raw, *, actor):
    """One tap of the crew member ``actor`` (an :class:`Actor`: ``user_id``, the address and the
    name shown in the trip's timeline) on ``shift``'s unit, from the phone's fields (strings);
    returns ``(status, message, replayed)``.

    A key sent before gets its first answer (``replayed`` True) and no second effect; a new
    key is checked (:func:`parse_tap_time`) and taken (:func:`take_tap`: 200, or the status
    of its refusal with nothing kept).  The tap is flushed here: the same key arriving twice at
    once gets the answer the first one stored.  Raises :class:`CrewRefused`: 409 without a
    shift or for a key used for another tap; 400 for a key, trip, action, step or tap time the
    page does not send.  The caller commits.
    """
    if shift is None:
        raise CrewRefused("Your shift has ended; pick your unit again, then tap.")
    check_tap(key, trip_public_id, action, step)
    answer = stored_answer(key, actor.user_id, trip_public_id, action, step)
    if answer is not None:
        return (*answer, True)
    tapped_at = parse_tap_time(tapped_at_raw)
    trip = degraded.optional("hospital", lambda: trips.get_by_public_id(trip_public_id))
    label = f"{shift.unit.number}, {actor.label}"
    answer = take_tap(shift, key, trip_public_id, action, step, tapped_at, trip=trip, actor=actor._replace(label=label))
    try:
        db.session.flush()
    except IntegrityError:  # the same key arrived twice at once: the first one's answer
        db.session.rollback()
        answer = stored_answer(key, actor.user_id, trip_public_id, action, step)
        if answer is None:
            raise
        return (*answer, True)
    return (*answer, False)


def _clock(value):
    return to_local(value).strftime("%H:%M:%S")
