"""Helpers shared by the three silos' models."""
import json
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.types import Text, TypeDecorator


def utcnow():
    """Naive UTC now: every timestamp in every silo is stored as naive UTC."""
    return datetime.now(UTC).replace(tzinfo=None)


def new_public_id():
    """A non-guessable id for anything a URL shows."""
    return str(uuid.uuid4())


#: The largest value of an ``Integer`` id column (PostgreSQL's ``integer``).
MAX_ROW_ID = 2**31 - 1


def row_id(value):
    """A row id from a form or URL, or None when it is not one (not a number, or out of range:
    SQLite cannot even bind an integer past 2**63)."""
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if 0 < number <= MAX_ROW_ID else None


class SubmissionMixin:
    """Columns of a used one-time form token and what its submission created (one table per
    silo; see ``services.submissions``)."""

    id = sa.Column(sa.Integer, primary_key=True)
    token = sa.Column(sa.String(64), nullable=False, unique=True)
    kind = sa.Column(sa.String(30), nullable=False)
    # What it created: its public id (its row id where it has none), set in the same transaction.
    created_id = sa.Column(sa.String(36))
    user_id = sa.Column(sa.Integer)
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow, index=True)


class JSONText(TypeDecorator):
    """JSON stored as text, so SQLite and PostgreSQL hold it alike."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, default=str)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return json.loads(value)


# Vocabulary shared by the silos.  Order matters for levels of care.
LEVELS = ("BLS", "ALS", "CCT")
LEVEL_RANK = {level: rank for rank, level in enumerate(LEVELS)}


def servable_levels(agency_levels):
    """The levels of care (in :data:`LEVELS` order) an agency registered for ``agency_levels``
    may serve: its highest level and every lower one (a CCT unit may run an ALS or BLS call)."""
    top = max((LEVEL_RANK[level] for level in agency_levels if level in LEVEL_RANK), default=-1)
    return [level for level in LEVELS if LEVEL_RANK[level] <= top]
LEVEL_LABELS = {"BLS": "BLS", "ALS": "ALS", "CCT": "CCT (critical care)"}
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

#: Where an ``open`` request stands, by :func:`dispatch_state`, with the words the screens use.
DISPATCH_STATES = {
    "will_call_waiting": "Will-call: waiting",
    "upcoming": "Upcoming",
    "bidding": "Taking bids",
    "awaiting_award": "Awaiting award",
    "unfilled": "Unfilled",
}


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
    ``unfilled_at`` (history); it is not what this rule reads.
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
