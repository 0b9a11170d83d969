"""The trip lifecycle, owned by the hospital silo.  Every transition is checked here, once.

``open`` → ``awarded`` → ``en_route`` → ``at_pickup`` → ``transporting`` →
``at_destination`` → ``completed``; ``cancelled`` from ``open`` or ``awarded``; an
``open`` trip past its deadline is awaiting award while it holds a live bid, and unfilled
when it holds none (it stays ``open``; :func:`dashboard.models.vocabulary.dispatch_state` is the
rule).  ``unfilled_at`` keeps when a trip first went unfilled: an award, an extension or a
re-opening does not clear it.  Every change is a compare-and-set on the trip's ``version``,
so of two awards arriving at once exactly one wins and the other gets
:class:`TransitionRefused` with a clear message.

The crew's steps (:data:`CREW_STEPS`, taken in the EMS silo and applied here by the
relay) are ``en_route``, ``at_pickup``, ``transporting``, ``at_destination`` and
``back_in_service``.  "Back in service" is the last: the unit is free again and the trip
is ``completed`` (:data:`STEP_STATUS`); the patient was handed over at the destination,
and the trip keeps each step's time (``<step>_at``; ``completed_at`` is the back in
service time).  A crew may undo its last step within ``route_steps.UNDO_WINDOW``: the trip
goes back one status (:data:`UNDO_TO`) and the step's time is cleared, with a history line.

Functions here write the hospital silo only and add the matching outbox event;
the caller commits.  ``actor`` (keyword, a :class:`dashboard.events.outbox.Actor`) is who acts: its ``user_id``
and ``label`` go on the request's timeline, its ``user_id`` and ``ip`` on the outbox event.
"""
from datetime import timedelta

import sqlalchemy as sa

from ..events.outbox import emit
from ..extensions import db
from ..models.base import utcnow
from ..models.hospital import (
    TransportRequest,
    TransportRequestEvent,
)
from ..models.vocabulary import ACTIVE_STATUSES, LEVEL_RANK
from . import center_reads
from .refusals import Refused

#: from status -> statuses a trip may move to.
TRANSITIONS = {
    "open": {"awarded", "cancelled"},
    "awarded": {"en_route", "cancelled", "open"},
    "en_route": {"at_pickup", "open"},
    "at_pickup": {"transporting"},
    # ``completed`` straight from ``transporting``: a step reported before "at destination" existed.
    "transporting": {"at_destination", "completed"},
    "at_destination": {"completed"},
    "completed": set(),
    "cancelled": set(),
}
#: The crew's steps in order (the EMS silo's ``route_steps.advance`` takes them one at a time).
CREW_STEPS = ("en_route", "at_pickup", "transporting", "at_destination", "back_in_service")
#: The status a crew step puts the trip (and the unit's stop) in: the step's own name but for
#: the last, "back in service", which completes the trip.
STEP_STATUS = {step: step for step in CREW_STEPS} | {"back_in_service": "completed"}
#: Crew steps by the status they lead to (``completed`` as reported before "back in service").
STATUS_STEP = {status: step for step, status in STEP_STATUS.items()}
#: A crew's last step undone: the status the trip goes back to.  Only the relay's
#: :func:`undo_crew_step` moves a trip backwards.
UNDO_TO = {"en_route": "awarded", "at_pickup": "en_route", "transporting": "at_pickup",
           "at_destination": "transporting", "completed": "at_destination"}
HAND_BACK_FROM = ("awarded", "en_route")
PATIENT_REF_ALPHABET = "ACDEFHJKMNPRTUVWXY3479"
PATIENT_REF_PATTERN = "^P-[" + PATIENT_REF_ALPHABET + "]{6}$"
REFERENCE_ATTEMPTS = 8
STALE_MESSAGE = (
    "This request changed while you were looking at it (another user or the center acted). "
    "Reload to see its current state; nothing was saved."
)


#: First key of the PostgreSQL advisory lock that makes bookings of one unit take turns.
UNIT_BOOKING_LOCK = 7301


class TransitionRefused(Refused):
    """An illegal or stale change; ``message`` is for the user, ``status`` for HTTP."""


class CareLevelRefused(TransitionRefused):
    """A request whose needs ask more than its level of care (:mod:`.care_rules`), without an
    override and its reason: 400.  ``rules`` are the broken rules of the table."""

    def __init__(self, message, rules=()):
        super().__init__(message, status=400)
        self.rules = tuple(rules)


class UnitBooked(TransitionRefused):
    """The unit is awarded another request of an overlapping window: award another bid instead."""


class AgencyDeactivated(UnitBooked):
    """The bid's agency is deactivated in the registry: award another bid instead."""


def active_agency_ids(agency_ids):
    """``agency_ids`` without those the center registry lists as deactivated, in their order.

    Read through :func:`dashboard.services.center_reads.registry_names`, so posting and
    awarding go on while the center is unreachable (with the registry as read last)."""
    if not agency_ids:
        return []
    agencies = center_reads.registry_names()[1]
    return [agency_id for agency_id in agency_ids
            if agency_id not in agencies or agencies[agency_id].active]


def trip_payload(trip):
    """What other silos learn of a trip: operational facts, no patient reference."""
    return {
        "trip_id": trip.id,
        "public_id": trip.public_id,
        "reference": trip.reference,
        "hospital_id": trip.hospital_id,
        "status": trip.status,
        "level_of_care": trip.level_of_care,
        "urgency": trip.urgency,
        "invite_mode": trip.invite_mode,
        "invited_agency_ids": sorted(trip.invited_ids),
        "awarded_agency_id": trip.awarded_agency_id,
        "awarded_unit_id": trip.awarded_unit_id,
        "awarded_bid_id": trip.awarded_bid_id,
        "window_start": trip.window_start.isoformat(),
        "window_end": trip.window_end.isoformat(),
        "version": trip.version,
    }


def record_history(trip, action, from_status, to_status, user_id, user_label, note="", detail=None, at=None):
    """Add a line to the trip's timeline (``at`` naive UTC, now by default); the caller commits."""
    db.session.add(
        TransportRequestEvent(
            trip_id=trip.id, action=action, from_status=from_status, to_status=to_status,
            at=at or utcnow(), user_id=user_id, user_label=user_label or "", note=(note or "")[:300],
            detail=detail,
        )
    )


def compare_and_set(trip, expected_status, values, expected_version=None):
    """Apply ``values`` only if the trip is still in ``expected_status`` (and version).

    One UPDATE with the old state in its WHERE: of two racing writers, one
    matches and the other finds zero rows and is refused.
    """
    version = trip.version if expected_version is None else expected_version
    values = dict(values, version=version + 1, updated_at=utcnow())
    result = db.session.execute(
        sa.update(TransportRequest)
        .where(
            TransportRequest.id == trip.id,
            TransportRequest.status == expected_status,
            TransportRequest.version == version,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise TransitionRefused(STALE_MESSAGE)
    db.session.refresh(trip)


def _check(trip, to_status):
    if to_status not in TRANSITIONS.get(trip.status, set()):
        raise TransitionRefused(
            f"A request that is {trip.status.replace('_', ' ')} cannot become "
            f"{to_status.replace('_', ' ')}."
        )


def check_unit_free(trip, agency_id, unit_id, unit_number):
    """Refuse a unit this silo has already awarded another trip of an overlapping window.

    The EMS silo learns of an award (and books the unit's route) only when the
    relay delivers it, so an assignment that names its unit checks the awards
    themselves too.  On PostgreSQL a transaction-level advisory lock on the unit,
    held until the caller commits, makes two such bookings take turns: the second
    one reads the first one's award and is refused.
    """
    if db.session.get_bind(mapper=TransportRequest).dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(UNIT_BOOKING_LOCK, unit_id)),
                           bind_arguments={"mapper": TransportRequest})
    clash = db.session.scalar(sa.select(TransportRequest.reference).where(
        TransportRequest.awarded_agency_id == agency_id,
        TransportRequest.status.in_(ACTIVE_STATUSES),
        TransportRequest.awarded_unit_id == unit_id,
        TransportRequest.id != trip.id,
        TransportRequest.window_start < trip.window_end,
        TransportRequest.window_end > trip.window_start,
    ).limit(1))
    if clash is not None:
        raise UnitBooked(f"{unit_number} is already booked for {clash}, an overlapping pickup window.")


def award(trip, bid, source="hospital", note="", expected_version=None, *, actor):
    """Award ``bid`` (a live EMS bid, read from the EMS silo) and emit ``trip.awarded``.

    ``bid`` is a mapping with ``id``, ``agency_id``, ``agency_name``, ``unit_id``,
    ``unit_label``, ``eta_minutes`` (or ``bid_id=None`` for a center assignment).
    """
    _check(trip, "awarded")
    if bid.get("trip_id") not in (None, trip.id):
        raise TransitionRefused("That bid belongs to another request.", status=400)
    if not active_agency_ids([bid["agency_id"]]):
        raise AgencyDeactivated(
            f"{bid['agency_name'] or 'This agency'} is deactivated in MedPort's registry; "
            "award another bid.")
    # A bid's unit was free when it bid, but the center may have assigned it to an
    # overlapping trip since (or be doing so now): bookings of one unit take turns here.
    check_unit_free(trip, bid["agency_id"], bid["unit_id"], bid["unit_label"])
    compare_and_set(
        trip,
        "open",
        dict(
            status="awarded",
            awarded_bid_id=bid.get("id"),
            awarded_agency_id=bid["agency_id"],
            awarded_agency_name=bid["agency_name"],
            awarded_unit_id=bid["unit_id"],
            awarded_unit_label=bid["unit_label"],
            awarded_eta_minutes=bid["eta_minutes"],
            awarded_at=utcnow(),
            award_source=source,
            award_note=(note or "")[:300] or None,
            widen_invite_at=None,  # nothing left to announce; a reopening sets it again
        ),
        expected_version,
    )
    summary = f"{bid['agency_name']}, {bid['unit_label']}, ETA {bid['eta_minutes']} min"
    if source == "center":
        summary = "Center assignment: " + summary + (f". Reason: {note}" if note else "")
    elif source == "auto":
        summary = "Auto-award: " + summary
    record_history(trip, "awarded", "open", "awarded", actor.user_id, actor.label, summary)
    payload = trip_payload(trip)
    payload.update(
        source=source,
        eta_minutes=bid["eta_minutes"],
        pickup_facility_id=trip.origin_facility_id,
        window_start=trip.window_start.isoformat(),
        window_end=trip.window_end.isoformat(),
    )
    emit("hospital", "trip.awarded", "trip", trip.public_id, payload, actor=actor)
    return trip


def cancel(trip, reason, note, expected_version=None, *, actor):
    """Cancel an open or awarded trip with a reason; emit ``trip.cancelled``."""
    _check(trip, "cancelled")
    previous = trip.status
    compare_and_set(
        trip, previous,
        dict(status="cancelled", cancel_reason=reason, cancel_note=(note or "")[:300] or None,
             cancelled_at=utcnow(), widen_invite_at=None),
        expected_version,
    )
    record_history(trip, "cancelled", previous, "cancelled", actor.user_id, actor.label,
                   note or reason.replace("_", " "))
    emit("hospital", "trip.cancelled", "trip", trip.public_id,
         dict(trip_payload(trip), reason=reason, previous_status=previous), actor=actor)
    return trip


def extend_deadline(trip, new_deadline, note="", *, actor):
    """Give an open trip more bidding time (``new_deadline``, naive UTC, in the future).

    Its ``unfilled_at``, if it went unfilled, is kept: that is history.  Raises
    :class:`TransitionRefused` (409 not open, 400 a deadline not in the future)."""
    if trip.status != "open":
        raise TransitionRefused("Only an open request's deadline can be extended.")
    if new_deadline <= utcnow():
        raise TransitionRefused("The new deadline must be in the future.", status=400)
    compare_and_set(trip, "open", dict(bid_deadline=new_deadline))
    record_history(trip, "deadline_extended", "open", "open", actor.user_id, actor.label,
                   note or "Bidding deadline extended")
    emit("hospital", "trip.changed", "trip", trip.public_id,
         dict(trip_payload(trip), changed=["bid_deadline"]), actor=actor)
    return trip


def _reopen_values(trip, deadline_minutes):
    now = utcnow()
    widens = widen_invite_at(trip)
    return dict(
        status="open", awarded_bid_id=None, awarded_agency_id=None, awarded_agency_name=None,
        awarded_unit_id=None, awarded_unit_label=None, awarded_eta_minutes=None, awarded_at=None,
        award_source=None, award_note=None, en_route_at=None,
        bid_count=0, best_eta_minutes=None,  # a new round of bids: the earlier ones are over
        bid_deadline=now + timedelta(minutes=deadline_minutes),
        # Re-opened inside the preferred agencies' head start: its end is still to be
        # announced.  After it, the re-opening itself reaches every agency's board.
        widen_invite_at=widens if widens is not None and widens > now else None,
    )


def reopen(trip, reason, deadline_minutes, event_type="trip.reopened", action="reopened",
           expected_version=None, *, actor):
    """Take an awarded (not yet picked up) trip back to ``open`` for new bids."""
    if trip.status not in HAND_BACK_FROM:
        raise TransitionRefused("Only a request that is awarded or en route (before pickup) can be re-opened.")
    previous = trip.status
    released = dict(agency_id=trip.awarded_agency_id, unit_id=trip.awarded_unit_id,
                    bid_id=trip.awarded_bid_id)
    values = _reopen_values(trip, deadline_minutes)
    if event_type == "trip.handed_back":
        values["handed_back_count"] = trip.handed_back_count + 1
    compare_and_set(trip, previous, values, expected_version)
    record_history(trip, action, previous, "open", actor.user_id, actor.label, reason)
    emit("hospital", event_type, "trip", trip.public_id,
         dict(trip_payload(trip), released=released, reason=reason, previous_status=previous), actor=actor)
    return trip


def apply_crew_step(trip, step, at, agency_id, unit_id=None, *, actor):
    """Apply a crew's progress (reported through the EMS silo) to the trip.

    ``step`` is one of :data:`CREW_STEPS` (or ``completed``, as reported before "back in
    service" existed); ``at`` is when the crew took it (naive UTC), kept in ``<step>_at``
    (and ``completed_at`` for the last step).  Idempotent: a step already applied (or
    passed) is a no-op, and so is a late step of a unit the trip has since been taken
    from.  Returns True when applied; raises :class:`TransitionRefused` for a step the
    state machine does not allow from the trip's status.
    """
    if trip.awarded_agency_id != agency_id or unit_id not in (None, trip.awarded_unit_id):
        return False
    if step == "completed":
        step = "back_in_service"
    if step not in STEP_STATUS:
        raise TransitionRefused(f"{step!r} is not a crew step.", status=400)
    status = STEP_STATUS[step]
    order = ("awarded",) + tuple(STEP_STATUS[s] for s in CREW_STEPS)
    if trip.status not in order or order.index(trip.status) >= order.index(status):
        return False
    _check(trip, status)
    previous = trip.status
    values = {"status": status, f"{step}_at": at}
    if status == "completed":
        values["completed_at"] = at
    compare_and_set(trip, previous, values)
    record_history(trip, step, previous, status, None, actor.label, at=at)
    emit("hospital", "trip.status_changed", "trip", trip.public_id,
         dict(trip_payload(trip), previous_status=previous), actor=actor)
    return True


def undo_crew_step(trip, step, at, agency_id, unit_id=None, *, actor):
    """Take back a crew's last step (undone in the EMS silo) on the trip.

    The trip goes back to the status before ``step`` (:data:`UNDO_TO`), the step's time is
    cleared, and a ``step_undone`` history line says which step, by whom, at ``at`` (when it
    was undone, naive UTC).  A no-op (False) when the trip is not at that step: taken from the
    unit since, or the step never reached the hospital silo.  Returns True when applied.
    """
    if trip.awarded_agency_id != agency_id or unit_id not in (None, trip.awarded_unit_id):
        return False
    status = STEP_STATUS.get(step)
    if status is None or trip.status != status:
        return False
    previous = UNDO_TO[status]
    values = {"status": previous, f"{step}_at": None}
    if status == "completed":
        values["completed_at"] = None
    compare_and_set(trip, status, values)
    record_history(trip, "step_undone", status, previous, None, actor.label,
                   note=f"Undid {step.replace('_', ' ')}", detail={"step": step}, at=at)
    emit("hospital", "trip.status_changed", "trip", trip.public_id,
         dict(trip_payload(trip), previous_status=status, undone_step=step), actor=actor)
    return True


def widen_invite_at(trip, invite_mode=None, after_minutes=None):
    """When a preferred-then-all invitation opens to every agency (None for other modes): the
    head start counts from when bidding opens (posting, or the opening of one booked ahead)."""
    invite_mode = invite_mode or trip.invite_mode
    if invite_mode != "preferred_then_all":
        return None
    if after_minutes is None:
        after_minutes = trip.invite_all_after_minutes
    return trip.bidding_start + timedelta(minutes=after_minutes or 0)


def agency_may_serve(trip, agency_id, agency_levels, now=None):
    """Whether the agency is invited to ``trip`` and has the level of care for it."""
    now = now or utcnow()
    if not any(LEVEL_RANK[level] >= LEVEL_RANK[trip.level_of_care] for level in agency_levels):
        return False
    if trip.invite_mode == "all":
        return True
    if agency_id in trip.invited_ids:
        return True
    if trip.invite_mode == "preferred_then_all":
        return now >= trip.bidding_start + timedelta(minutes=trip.invite_all_after_minutes or 0)
    return False


def get_for_hospital(public_id, hospital_id):
    """A trip of this hospital, or None (another hospital's trip is not found, not forbidden)."""
    return db.session.scalar(
        sa.select(TransportRequest).where(
            TransportRequest.public_id == public_id, TransportRequest.hospital_id == hospital_id
        )
    )


def get_by_public_id(public_id):
    return db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == public_id))
