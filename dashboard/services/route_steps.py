"""A unit's stops and the crew's steps on them, owned by the EMS silo: a step taken (one at a
time, in :data:`ROUTE_ORDER`), the last one undone within :data:`UNDO_WINDOW`, a trip handed
back before pickup, and the unit's status that follows.

The EMS side reads the hospital silo (the trip as it is now) and writes only the EMS silo; the
hospital learns of crew progress through events.  Functions here do not commit.
``actor`` (keyword, a :class:`dashboard.events.outbox.Actor`) is who acts: its ``label`` goes
with the step to the request's timeline, its ``user_id`` and ``ip`` on the outbox event.
"""
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..events.outbox import emit
from ..extensions import db
from ..models.base import utcnow
from ..models.ems import EmsRoute, TransportBid, Unit
from ..models.vocabulary import IN_PROGRESS_ROUTE_STATUSES
from .bidding import ACTIVE_ROUTE_STATUSES, BidRefused
from .trips import CREW_STEPS, STEP_STATUS, UNDO_TO

#: How long after a crew step it may be undone (a tap on the wrong trip or too early).
UNDO_WINDOW = timedelta(minutes=2)


#: A stop's statuses in the order the crew's steps take it through.
ROUTE_ORDER = ("planned",) + tuple(STEP_STATUS[step] for step in CREW_STEPS)


def route_by_trip_public_id(trip_public_id, agency_id):
    """This agency's stop for a trip by the trip's public id, read from the EMS silo alone:
    the active one, else the latest; None for no stop (or one from before stops kept the id)."""
    return db.session.scalar(
        sa.select(EmsRoute)
        .where(EmsRoute.trip_public_id == trip_public_id, EmsRoute.agency_id == agency_id)
        .order_by(sa.case((EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES), 0), else_=1), EmsRoute.id.desc())
        .limit(1)
    )


def route_for(trip_id, agency_id):
    """This agency's stop for a trip: the active one, else the latest (a trip handed
    back and awarded again to another unit of the agency has two)."""
    return db.session.scalar(
        sa.select(EmsRoute)
        .where(EmsRoute.trip_id == trip_id, EmsRoute.agency_id == agency_id)
        .order_by(sa.case((EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES), 0), else_=1), EmsRoute.id.desc())
        .limit(1)
    )


def current_route_order():
    """ORDER BY terms that put a unit's stop under way first, then its planned stops by
    window start: the unit's current trip is the first of its active stops in this order."""
    return (sa.case((EmsRoute.status.in_(IN_PROGRESS_ROUTE_STATUSES), 0), else_=1),
            EmsRoute.window_start, EmsRoute.id)


def current_route(unit_id):
    """The unit's current stop: the one under way, else its next planned one by window start
    (None when it has no active stop)."""
    return db.session.scalar(
        sa.select(EmsRoute).where(EmsRoute.unit_id == unit_id,
                                  EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))
        .order_by(*current_route_order()).limit(1))


def refresh_unit_status(unit):
    """Keep ``unit.current_trip_id`` and its status true after its stops changed.

    The current trip is the one under way, else the next planned one by window start
    (:func:`current_route`): an award of another trip never replaces the trip the crew is
    driving.  With an active stop the unit is assigned, without one available; a unit on
    break or out of service keeps that status.  Returns True when anything changed.
    """
    following = current_route(unit.id)
    before = (unit.status, unit.current_trip_id)
    if following is not None:
        unit.current_trip_id = following.trip_id
        if unit.status == "available":
            unit.status = "assigned"
    else:
        unit.current_trip_id = None
        if unit.status == "assigned":
            unit.status = "available"
    if (unit.status, unit.current_trip_id) != before:
        unit.updated_at = utcnow()
        return True
    return False


def _move_route(route, from_status, to_status, **values):
    """Set the route's status (and ``values``) only if it is still ``from_status`` (one
    UPDATE), else refuse.

    The relay may have ended the route meanwhile (the trip cancelled or re-opened).  A
    second stop of the unit under way at once breaks the unit's unique index: refused too.
    """
    try:
        result = db.session.execute(
            sa.update(EmsRoute).where(EmsRoute.id == route.id, EmsRoute.status == from_status)
            .values(status=to_status, **values).execution_options(synchronize_session=False)
        )
    except IntegrityError:
        db.session.rollback()
        raise BidRefused("The unit is already under way on another trip; reload the page.") from None
    if result.rowcount != 1:
        raise BidRefused("This trip changed meanwhile (cancelled or taken back); reload the page.")
    db.session.refresh(route)


def _check_one_place(route):
    """Refuse (409) to put the unit under way on ``route`` while another of its stops is.

    A unit is in one place at a time (DESIGN: request lifecycle).  On PostgreSQL the unit's
    row is locked until commit, so two such steps of one unit take turns and the second
    sees the first; the unit's unique index on stops under way backs this up.
    """
    db.session.execute(sa.select(Unit.id).where(Unit.id == route.unit_id).with_for_update())
    other = db.session.scalar(
        sa.select(EmsRoute).where(EmsRoute.unit_id == route.unit_id, EmsRoute.id != route.id,
                                  EmsRoute.status.in_(IN_PROGRESS_ROUTE_STATUSES))
        .order_by(EmsRoute.window_start).limit(1))
    if other is not None:
        raise BidRefused(
            f"{route.unit.number} is {other.status.replace('_', ' ')} on {other.trip_reference}; "
            f"a unit is on one trip at a time. Finish that trip (back in service), hand it back "
            f"or undo its last step before starting {route.trip_reference}.")


def _check_still_ours(route, trip):
    """Refuse a crew action on a trip the hospital side has cancelled or taken back already."""
    if trip is None:
        return
    if trip.status == "cancelled":
        raise BidRefused("The hospital cancelled this trip.")
    if trip.awarded_agency_id != route.agency_id or trip.awarded_unit_id != route.unit_id:
        raise BidRefused("This trip is no longer assigned to this unit.")


def _step_label(step):
    return str(step).replace("_", " ")


def advance(route, step, trip=None, now=None, *, actor):
    """The crew's next step (one tap); emits ``trip.status_changed`` from the EMS silo.

    ``step`` is the next of :data:`~dashboard.services.trips.CREW_STEPS` for the route's
    status; the route moves to its status (:data:`~dashboard.services.trips.STEP_STATUS`)
    and keeps the time (``<step>_at``, ``now`` or the clock, naive UTC).  ``trip`` (the
    hospital's trip, read) lets a step on a trip cancelled or re-opened there be refused
    before the relay has caught up.  Raises :class:`BidRefused`: 404 (no route), 409 (not
    the next step, the trip no longer this unit's, or "en route" while the unit is under
    way on another trip).
    """
    if route is None:
        raise BidRefused("No such trip.", status=404)
    if route.status not in ROUTE_ORDER:
        raise BidRefused("This trip is no longer yours to progress.")
    position = ROUTE_ORDER.index(route.status)
    expected = CREW_STEPS[position] if position < len(CREW_STEPS) else None
    if step != expected:
        if expected is None:
            raise BidRefused("This trip is already completed: the unit is back in service.")
        raise BidRefused(
            f"The next step is {_step_label(expected)}, not {_step_label(step)}.", status=409
        )
    _check_still_ours(route, trip)
    if route.status == "planned":
        _check_one_place(route)
    now = now or utcnow()
    _move_route(route, route.status, STEP_STATUS[step], **{f"{step}_at": now})
    unit = route.unit
    db.session.flush()
    unit_changed = refresh_unit_status(unit)
    db.session.flush()
    emit("ems", "trip.status_changed", "trip", str(route.trip_id),
         {"trip_id": route.trip_id, "step": step, "at": now.isoformat(), "agency_id": route.agency_id,
          "unit_id": route.unit_id, "user_label": actor.label, "route_id": route.id}, actor=actor)
    if unit_changed:
        emit("ems", "unit.status_changed", "unit", unit.public_id,
             {"unit_id": unit.id, "agency_id": unit.agency_id, "status": unit.status}, actor=actor)
    return route


def last_step(route, now=None):
    """``(step, until)`` of the route's last crew step while it may still be undone (``until``
    naive UTC), else None: no step taken, its time not kept, or :data:`UNDO_WINDOW` over."""
    if route is None or route.status not in ROUTE_ORDER[1:]:
        return None
    step = CREW_STEPS[ROUTE_ORDER.index(route.status) - 1]
    taken = getattr(route, f"{step}_at")
    if taken is None:
        return None
    until = taken + UNDO_WINDOW
    return (step, until) if (now or utcnow()) < until else None


def undo(route, step, trip=None, now=None, *, actor):
    """Undo the crew's last step on ``route`` within :data:`UNDO_WINDOW` of taking it.

    The route goes back one status and the step's time is cleared; the unit's current trip
    and status follow; ``trip.step_undone`` (audited, and applied to the hospital's trip by
    the relay) is emitted from the EMS silo.  Raises :class:`BidRefused`: 404 (no route),
    400 (not a crew step), 409 (a later step was taken or the step is not the last, the
    window is over, the step's time was not kept, the trip is no longer this unit's, or
    undoing "back in service" would put the unit under way on a second trip or on a trip
    while it is on break or out of service).
    """
    if route is None:
        raise BidRefused("No such trip.", status=404)
    if step not in STEP_STATUS:
        raise BidRefused("Choose the step to undo from the trip's button.", status=400)
    status = STEP_STATUS[step]
    if route.status != status:
        if route.status in ROUTE_ORDER and ROUTE_ORDER.index(route.status) > ROUTE_ORDER.index(status):
            raise BidRefused(f"A later step was taken since {_step_label(step)}; only the last step "
                             "can be undone.")
        raise BidRefused(f"This trip is not at {_step_label(step)}; there is nothing to undo.")
    now = now or utcnow()
    taken = getattr(route, f"{step}_at")
    if taken is None:
        raise BidRefused(f"The time of {_step_label(step)} was not kept, so it cannot be undone.")
    if now >= taken + UNDO_WINDOW:
        raise BidRefused(f"{_step_label(step).capitalize()} can no longer be undone: a step can be "
                         f"undone within {int(UNDO_WINDOW.total_seconds() // 60)} minutes of taking it.")
    _check_still_ours(route, trip)
    unit = route.unit
    back_to = UNDO_TO[status] if status != "en_route" else "planned"
    if status == "completed":
        if unit.status in ("on_break", "out_of_service"):
            raise BidRefused(f"{unit.number} is {unit.status.replace('_', ' ')} now; set it available "
                             "before undoing back in service.")
        _check_one_place(route)
    _move_route(route, status, back_to, **{f"{step}_at": None})
    db.session.flush()
    unit_changed = refresh_unit_status(unit)
    db.session.flush()
    emit("ems", "trip.step_undone", "trip", str(route.trip_id),
         {"trip_id": route.trip_id, "step": step, "at": now.isoformat(), "step_at": taken.isoformat(),
          "agency_id": route.agency_id, "unit_id": route.unit_id, "user_label": actor.label,
          "route_id": route.id}, actor=actor)
    if unit_changed:
        emit("ems", "unit.status_changed", "unit", unit.public_id,
             {"unit_id": unit.id, "agency_id": unit.agency_id, "status": unit.status}, actor=actor)
    return route


def hand_back(route, reason, trip=None, *, actor):
    """Give an awarded trip back before pickup; emits ``trip.handed_back`` from the EMS silo."""
    if route is None:
        raise BidRefused("No such trip.", status=404)
    if route.status not in ("planned", "en_route"):
        raise BidRefused("A trip can only be handed back before pickup.")
    reason = (reason or "").strip()
    if not reason:
        raise BidRefused("Say why the trip is handed back.", status=400)
    _check_still_ours(route, trip)
    now = utcnow()
    _move_route(route, route.status, "handed_back")
    unit = route.unit
    db.session.flush()
    refresh_unit_status(unit)
    accepted = db.session.scalar(
        sa.select(TransportBid).where(TransportBid.trip_id == route.trip_id,
                                      TransportBid.agency_id == route.agency_id,
                                      TransportBid.status == "accepted"))
    if accepted is not None:
        accepted.status = "closed"
        accepted.decided_at = now
    db.session.flush()
    emit("ems", "trip.handed_back", "trip", str(route.trip_id),
         {"trip_id": route.trip_id, "agency_id": route.agency_id, "unit_id": route.unit_id,
          "reason": reason[:300], "user_label": actor.label, "at": now.isoformat()}, actor=actor)
    emit("ems", "unit.status_changed", "unit", unit.public_id,
         {"unit_id": unit.id, "agency_id": unit.agency_id, "status": unit.status}, actor=actor)
    return route

