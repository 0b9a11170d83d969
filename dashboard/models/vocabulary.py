"""The one vocabulary of MedPort: statuses, the words the screens show for them, levels of care,
and the rule of where an open request stands (with its SQL twin).

Nothing here reads a database: the constants and :func:`dispatch_state` are plain Python, and
:func:`dispatch_condition` builds a SQLAlchemy expression over the hospital silo's requests
table (passed in, so this module imports no model).  ``tests/test_vocabulary.py`` holds the two
to the same answer on both databases, and every status to a label.
"""
import sqlalchemy as sa

from .base import utcnow

# --- levels of care ----------------------------------------------------------------------------

#: Levels of care, lowest first: a unit of a level may run a call of its level or lower.
LEVELS = ("BLS", "ALS", "CCT")
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}
LEVEL_LABELS = {"BLS": "BLS", "ALS": "ALS", "CCT": "CCT (critical care)"}


def servable_levels(agency_levels):
    """The levels of care (in :data:`LEVELS` order) an agency registered for ``agency_levels``
    may serve: its highest level and every lower one (a CCT unit may run an ALS or BLS call)."""
    top = max((LEVEL_RANK[level] for level in agency_levels if level in LEVEL_RANK), default=-1)
    return [level for level in LEVELS if LEVEL_RANK[level] <= top]


# --- request facts -----------------------------------------------------------------------------

MOBILITIES = {
    "ambulatory": "Ambulatory",
    "wheelchair": "Wheelchair",
    "stretcher": "Stretcher",
    "bariatric_stretcher": "Bariatric stretcher",
}
URGENCIES = {"routine": "Routine", "urgent": "Urgent", "emergent": "Emergent"}
URGENCY_RANK = {"emergent": 0, "urgent": 1, "routine": 2}
ROLES = {
    "hospital": "Hospital staff",
    "ems": "EMS dispatcher",
    "crew": "EMS crew member",
    "coordinator": "Transport-center coordinator",
    "admin": "Administrator",
}
CENTER_ROLES = ("coordinator", "admin")

#: The three silos -> their names on screens ("Hospital data is unavailable").
SILO_LABELS = {"center": "Center", "hospital": "Hospital", "ems": "EMS"}

# --- statuses and their labels -----------------------------------------------------------------

#: A request's status (hospital silo) -> the word the screens show.
TRIP_STATUS_LABELS = {
    "open": "Open",
    "awarded": "Awarded",
    "en_route": "En route",
    "at_pickup": "At pickup",
    "transporting": "Transporting",
    "at_destination": "At destination",
    "completed": "Completed",
    "cancelled": "Cancelled",
}
TRIP_STATUSES = tuple(TRIP_STATUS_LABELS)
#: Awarded and not yet ended: an agency and a unit hold it.
ACTIVE_STATUSES = ("awarded", "en_route", "at_pickup", "transporting", "at_destination")

#: A unit's status (EMS silo) -> its label.
UNIT_STATUSES = {
    "available": "Available",
    "assigned": "Assigned",
    "on_break": "On break",
    "out_of_service": "Out of service",
}

#: A bid's status (EMS silo) -> how the agency's history words its outcome.
BID_OUTCOMES = {
    "live": "Live",
    "accepted": "Won",
    "declined": "Lost",
    "withdrawn": "Withdrawn",
    "expired": "Expired",
    "closed": "Closed",
}
BID_STATUSES = tuple(BID_OUTCOMES)

#: A unit's stop on a trip (EMS silo) -> its label.
ROUTE_STATUS_LABELS = {
    "planned": "Planned",
    "en_route": "En route",
    "at_pickup": "At pickup",
    "transporting": "Transporting",
    "at_destination": "At destination",
    "completed": "Completed",
    "handed_back": "Handed back",
    "cancelled": "Cancelled",
}
#: The crew's steps (``services.trips.CREW_STEPS``) -> the words of their buttons and notices.
CREW_STEP_LABELS = {
    "en_route": "En route",
    "at_pickup": "At pickup",
    "transporting": "Transporting",
    "at_destination": "At destination",
    "back_in_service": "Back in service",
}
#: A stop's statuses while its unit is under way on it (left the base for it, not yet back in
#: service): a unit is in at most one of them at a time.
IN_PROGRESS_ROUTE_STATUSES = ("en_route", "at_pickup", "transporting", "at_destination")

# --- where an open request stands --------------------------------------------------------------

#: Where an ``open`` request stands, by :func:`dispatch_state`, with the words the screens use.
DISPATCH_STATES = {
    "will_call_waiting": "Will-call: waiting",
    "upcoming": "Upcoming",
    "bidding": "Taking bids",
    "awaiting_award": "Awaiting award",
    "unfilled": "Unfilled",
}

#: The dispatch states of a request whose bidding has opened (the agencies see it to bid, or
#: its deadline has passed): neither booked ahead nor a will-call waiting for its patient.
BIDDING_OPENED = ("bidding", "awaiting_award", "unfilled")


def dispatch_state(trip, has_live_bids, now=None):
    """Where an open request stands: the one rule every screen, the timer and analytics use.

    ``trip`` is a request (anything with ``status``, ``bid_deadline`` and
    ``bidding_opens_at``, naive UTC); ``has_live_bids`` says whether any bid on it is still
    live (the hospital silo keeps the count in ``bid_count``).  Returns ``None`` for a
    request that is not ``open``; ``"will_call_waiting"`` for a will-call return whose patient
    has not been marked ready (``released_at`` empty: not biddable, never late or unfilled; see
    ``services.returns``); ``"upcoming"`` for one booked ahead whose bidding has not
    opened yet (``bidding_opens_at`` after ``now``: no agency may bid, it is never at risk or
    unfilled; see ``services.scheduling``); ``"bidding"`` while its bidding deadline is ahead
    (after ``now``, default: the clock);
    once the deadline has passed, ``"awaiting_award"`` while it holds a live bid (the
    hospital or the center picks one) and ``"unfilled"`` when no agency can take it.
    Bids are refused after the deadline, so an awaiting request only becomes unfilled
    (its bids withdrawn), never the other way.  A request that went unfilled once keeps
    ``unfilled_at`` (history); it is not what this rule reads.  Its SQL twin is
    :func:`dispatch_condition`.
    """
    if trip.status != "open":
        return None
    now = now or utcnow()
    if getattr(trip, "will_call", False) and getattr(trip, "released_at", None) is None:
        return "will_call_waiting"
    opens = getattr(trip, "bidding_opens_at", None)
    if opens is not None and opens > now:
        return "upcoming"
    if trip.bid_deadline > now:
        return "bidding"
    return "awaiting_award" if has_live_bids else "unfilled"


def trip_dispatch_state(trip, now=None):
    """:func:`dispatch_state` of a hospital-silo request, its live bids read from ``bid_count``."""
    return dispatch_state(trip, bool(trip.bid_count), now)


def dispatch_condition(requests, states, now=None):
    """The SQL twin of :func:`trip_dispatch_state`: a SQLAlchemy condition true for the rows of
    ``requests`` (the hospital silo's ``TransportRequest`` model or an alias of it) whose
    dispatch state is ``states`` (one key of :data:`DISPATCH_STATES`, or an iterable of them)
    at ``now``.  Raises ``ValueError`` for an unknown state.

    ``now`` is a naive-UTC datetime (default: the clock, read when the condition is built) or a
    SQL expression standing for it, typically ``sa.bindparam("now")``: a statement built once
    (at import or on first use) then takes the time as a parameter of each execution
    (``session.execute(statement, {"now": utcnow()})``) and is never rebuilt per request.
    """
    T = requests
    if now is None:
        now = utcnow()
    wanted = (states,) if isinstance(states, str) else tuple(states)
    unknown = set(wanted) - set(DISPATCH_STATES)
    if unknown:
        raise ValueError(f"unknown dispatch states: {sorted(unknown)}")
    waiting = sa.and_(T.will_call.is_(True), T.released_at.is_(None))
    not_waiting = sa.or_(T.will_call.is_(False), T.released_at.is_not(None))
    opened = sa.and_(not_waiting, sa.or_(T.bidding_opens_at.is_(None), T.bidding_opens_at <= now))
    passed = sa.and_(opened, T.bid_deadline <= now)
    each = {
        "will_call_waiting": lambda: waiting,
        "upcoming": lambda: sa.and_(not_waiting, T.bidding_opens_at > now),
        "bidding": lambda: sa.and_(opened, T.bid_deadline > now),
        "awaiting_award": lambda: sa.and_(passed, T.bid_count > 0),
        "unfilled": lambda: sa.and_(passed, T.bid_count == 0),
    }
    return sa.and_(T.status == "open", sa.or_(*(each[state]() for state in wanted)))
