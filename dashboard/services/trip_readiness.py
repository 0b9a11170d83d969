"""The patient's readiness on a request (hospital silo): a will-call return released with the
urgency chosen then, the patient ready, or not ready when the crew arrives (with a reason).

Functions here add the matching outbox event; the caller commits.  ``actor`` (keyword, a :class:`dashboard.events.outbox.Actor`) is who acts: its ``user_id``
and ``label`` go on the request's timeline, its ``user_id`` and ``ip`` on the outbox event.
"""
from datetime import timedelta

import sqlalchemy as sa

from ..events.outbox import emit
from ..extensions import db
from ..models.base import utcnow
from ..models.hospital import (
    TransportRequest,
)
from .trips import (
    TransitionRefused,
    compare_and_set,
    record_history,
    trip_payload,
)

#: The pickup window a released will-call return gets, by the urgency chosen at release (minutes).
RELEASE_WINDOW_MINUTES = {"emergent": 30, "urgent": 60, "routine": 120}


def release(trip, urgency, deadline_minutes, now=None, *, actor):
    """Release a will-call return: the patient is ready, bidding opens at once.

    The pickup window runs from now for :data:`RELEASE_WINDOW_MINUTES` of ``urgency`` (chosen
    now), bidding closes ``deadline_minutes`` from now (never after the window's end), and the
    patient is recorded ready now.  Emits ``trip.released``.  Raises
    :class:`TransitionRefused`: 409 when the trip is not a will-call return still waiting
    (released already, cancelled), 400 for an unknown urgency.
    """
    now = now or utcnow()
    if urgency not in RELEASE_WINDOW_MINUTES:
        raise TransitionRefused("Choose routine, urgent or emergent.", status=400)
    if not trip.will_call_waiting:
        raise TransitionRefused("This return is not waiting for the patient (released already, or "
                                "not a will-call return).")
    end = now + timedelta(minutes=RELEASE_WINDOW_MINUTES[urgency])
    values = dict(released_at=now, released_by=(actor.label or "")[:160], urgency=urgency,
                  window_start=now, window_end=end, patient_ready_at=now, bidding_opens_at=None,
                  bid_deadline=min(now + timedelta(minutes=deadline_minutes), end))
    if trip.invite_mode == "preferred_then_all":
        values["widen_invite_at"] = now + timedelta(minutes=trip.invite_all_after_minutes or 0)
    compare_and_set(trip, "open", values)
    record_history(trip, "released", "open", "open", actor.user_id, actor.label,
                   f"Patient ready: bidding opened ({urgency})", at=now)
    emit("hospital", "trip.released", "trip", trip.public_id, trip_payload(trip), actor=actor)
    return trip


#: Where a patient's readiness may be marked: before the crew leaves the pickup with them.
READY_STATUSES = ("open", "awarded", "en_route", "at_pickup")


def mark_patient_ready(trip, now=None, *, actor):
    """Record that the patient is ready for pickup (now).  A will-call return still waiting is
    released instead (:func:`release`, by the caller).  The trip's version is left alone (no
    open form goes stale).  Raises :class:`TransitionRefused` (409) for a will-call return still
    waiting (released with its urgency instead), once the crew has left with the patient or
    the trip is closed."""
    now = now or utcnow()
    if trip.will_call_waiting:
        raise TransitionRefused("Release this will-call return with its urgency (the button above).")
    if trip.status not in READY_STATUSES:
        raise TransitionRefused("The patient's readiness can only be marked before the crew leaves "
                                "the pickup.")
    db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip.id)
                       .values(patient_ready_at=now).execution_options(synchronize_session=False))
    db.session.refresh(trip)
    record_history(trip, "patient_ready", trip.status, trip.status, actor.user_id, actor.label, "Patient ready", at=now)
    emit("hospital", "trip.readiness", "trip", trip.public_id, dict(trip_payload(trip), ready=True), actor=actor)
    return trip


def mark_not_ready(trip, reason, now=None, *, actor):
    """Record that the patient was not ready when the crew arrived (the trip is at pickup), with a
    reason; a later :func:`mark_patient_ready` says when they were.  Raises
    :class:`TransitionRefused`: 409 unless the crew is at the pickup, 400 without a reason."""
    now = now or utcnow()
    reason = " ".join((reason or "").split())[:200]
    if not reason:
        raise TransitionRefused("Say why the patient is not ready.", status=400)
    if trip.status != "at_pickup":
        raise TransitionRefused("\"Not ready\" is marked when the crew is at the pickup.")
    db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip.id)
                       .values(not_ready_at=now, not_ready_reason=reason, patient_ready_at=None)
                       .execution_options(synchronize_session=False))
    db.session.refresh(trip)
    record_history(trip, "not_ready", trip.status, trip.status, actor.user_id, actor.label,
                   f"Patient not ready: {reason}", at=now)
    emit("hospital", "trip.readiness", "trip", trip.public_id, dict(trip_payload(trip), ready=False), actor=actor)
    return trip
