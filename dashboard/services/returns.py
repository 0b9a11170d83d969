"""Return legs, will-call release and the patient's readiness at pickup.

A request may have one return leg (``return_of_id`` on the return): the patient is brought
back from the outbound's destination facility to its origin, by the same hospital, at a fixed
time (an ordinary request: booked ahead, it is upcoming until its lead time) or *will-call*:
the return waits, not biddable, never late or unfilled (``dispatch_state``
``will_call_waiting``), until the patient is marked ready (:func:`dashboard.services.trip_readiness.release`):
bidding opens at once, with the urgency chosen then.  The hospital that booked it, the staff of
the hospital whose facility the patient is at (the outbound's destination) and the transport
center may release it (:func:`may_release`).

Waiting at pickup is split between "crew late" and "patient not ready" from the times kept
(:func:`waiting`); ``services.analytics.scheduled`` sums them per hospital and per agency.
"""
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models.base import utcnow
from ..models.hospital import HospitalFacility, TransportRequest
from ..models.vocabulary import CENTER_ROLES
from . import trip_posting, trips
from .trips import TransitionRefused

RETURN_KINDS = {"fixed": "At a fixed time", "will_call": "Will-call (when the patient is ready)"}
#: Copied from the outbound to its return (the patient and the needs are the same).
COPIED = ("level_of_care", "mobility", "patient_ref", "age_group", "weight_kg", "isolation", "oxygen_lpm",
          "cardiac_monitor", "iv_pump", "ventilator", "other_needs", "invite_mode", "invite_all_after_minutes")
#: A will-call return's placeholder window (no one bids on it until release, which sets the real one).
WILL_CALL_HOLD = timedelta(hours=12)


def add_return(outbound, kind, window, deadline_minutes, hospital_code, now=None, *, actor):
    """Post the return leg of ``outbound``: from its destination facility back to its origin.

    ``kind`` is ``fixed`` (``window`` = (start, end), naive UTC, after the outbound's window
    starts) or ``will_call`` (``window`` ignored).  Returns the new request.  Raises
    :class:`TransitionRefused`: 409 when the outbound already has a return or is closed, 400
    when its destination is a typed address (a return starts at a registered facility), for a
    fixed window before the outbound's pickup, or an unknown kind.
    """
    now = now or utcnow()
    if kind not in RETURN_KINDS:
        raise TransitionRefused("Choose a fixed time or will-call.", status=400)
    if outbound.return_of_id is not None:
        raise TransitionRefused("This request is itself a return leg.", status=400)
    if outbound.return_leg is not None:
        raise TransitionRefused(f"This request has a return already: {outbound.return_leg.reference}.")
    if outbound.status in ("completed", "cancelled"):
        raise TransitionRefused("A return is added to a request that is not completed or cancelled.")
    if outbound.destination_facility_id is None:
        raise TransitionRefused("A return starts at a registered facility; this request goes to an "
                                "address. Post the return as a new request.", status=400)
    if kind == "fixed":
        start, end = window
        if start is None or end is None or end <= start:
            raise TransitionRefused("Give the return's pickup window (latest after earliest).", status=400)
        if start < outbound.window_start:
            raise TransitionRefused("The return's pickup is before the outbound pickup.", status=400)
    else:
        start = max(outbound.window_end, now)
        end = start + WILL_CALL_HOLD
    destination = outbound.destination
    fields = {name: getattr(outbound, name) for name in COPIED}
    fields.update(
        origin_facility_id=outbound.destination_facility_id,
        pickup_location=f"Return from {destination.name}"[:120] if destination else "Return",
        destination_facility_id=outbound.origin_facility_id, destination_address="",
        urgency="routine", window_start=start, window_end=end,
        bid_deadline=(now + timedelta(minutes=deadline_minutes)) if kind == "fixed" else end,
        will_call=kind == "will_call", return_of_id=outbound.id,
        notes=f"Return leg of {outbound.reference}.")
    # The return carries the same patient: an override of the level of care on the outbound
    # holds for it too (recorded on the return's own timeline).
    return trip_posting.post(outbound.hospital_id, hospital_code, fields,
                             care_override=outbound.care_override_reason,
                             actor=actor)


def facility_hospital_id(facility_id):
    return db.session.scalar(sa.select(HospitalFacility.hospital_id).where(HospitalFacility.id == facility_id))


def may_release(trip, user):
    """Whether ``user`` may mark a will-call return's patient ready: the center, the hospital that
    booked it, or staff of the hospital whose facility the patient is at."""
    if user.role in CENTER_ROLES:
        return True
    if user.role != "hospital":
        return False
    return user.hospital_id in (trip.hospital_id, facility_hospital_id(trip.origin_facility_id))


def waiting_at_facilities(hospital_id, limit=100):
    """Will-call returns still waiting whose patient is at one of this hospital's facilities or
    that this hospital booked, oldest first."""
    T = TransportRequest
    own = sa.select(HospitalFacility.id).where(HospitalFacility.hospital_id == hospital_id)
    return list(db.session.scalars(
        sa.select(T).where(T.status == "open", T.will_call.is_(True), T.released_at.is_(None),
                           sa.or_(T.hospital_id == hospital_id, T.origin_facility_id.in_(own)))
        .options(selectinload(T.origin), selectinload(T.destination))
        .order_by(T.created_at, T.id).limit(limit)))


def get_releasable(public_id, user):
    """A will-call return ``user`` may release, or None (not found for them)."""
    trip = trips.get_by_public_id(str(public_id))
    if trip is None or not trip.will_call or not may_release(trip, user):
        return None
    return trip


@dataclass(frozen=True)
class Waiting:
    """Minutes of waiting at pickup: ``crew_late`` (the patient ready, the crew not there yet)
    and ``not_ready`` (the crew there, the patient not ready)."""

    crew_late: float
    not_ready: float


def waiting(trip):
    """The :class:`Waiting` of a trip whose crew reached the pickup, else None.

    From the times kept (naive UTC): the booked pickup is the window's start (a released
    will-call's is its release); the patient is ready at ``patient_ready_at``, or, marked not
    ready and never marked ready, when the crew left with them (``transporting_at``), or else
    at the booked pickup.  Crew late: from when the patient was ready (not before the booked
    pickup) to the crew's arrival.  Not ready: from the crew's arrival (not before the booked
    pickup) to when the patient was ready (not after the crew left)."""
    arrival = trip.at_pickup_at
    if arrival is None:
        return None
    booked = trip.window_start
    ready = trip.patient_ready_at
    if ready is None:
        ready = trip.transporting_at if trip.not_ready_at is not None and trip.transporting_at else booked
    ready = max(ready, booked)
    late = max((arrival - ready).total_seconds() / 60, 0.0)
    until = min(ready, trip.transporting_at) if trip.transporting_at else ready
    not_ready = max((until - max(arrival, booked)).total_seconds() / 60, 0.0)
    return Waiting(round(late, 1), round(not_ready, 1))
