"""What the relay's timer writes on requests (hospital silo), each once however many relays run:
a deadline passed unfilled or awaiting award, a preferred agencies' head start over, the
bidding of a request booked ahead opened.

Functions here add the matching outbox event; the caller commits.
"""

import sqlalchemy as sa

from ..events.outbox import SYSTEM, emit
from ..extensions import db
from ..models.base import utcnow
from ..models.hospital import (
    TransportRequest,
    TransportRequestEvent,
)
from ..models.vocabulary import dispatch_state
from .trips import (
    compare_and_set,
    record_history,
    trip_payload,
)

#: History actions the deadline timer writes, once per deadline and state.
DEADLINE_ACTIONS = ("unfilled", "awaiting_award")


def deadline_recorded(trip, action):
    """Whether the timer has written ``action`` (one of :data:`DEADLINE_ACTIONS`) since the
    trip's current bidding deadline (an extension or a re-opening sets a new one)."""
    return db.session.scalar(sa.select(sa.exists().where(
        TransportRequestEvent.trip_id == trip.id, TransportRequestEvent.action == action,
        TransportRequestEvent.at >= trip.bid_deadline)),
        bind_arguments={"mapper": TransportRequestEvent}) or False


def mark_unfilled(trip, now=None):
    """Flag an open trip past its deadline with no live bid as unfilled (it stays open for the
    center) and emit ``trip.unfilled``; once per deadline.  ``unfilled_at`` keeps the first
    time it went unfilled.  Returns False when the trip is not unfilled or already marked."""
    now = now or utcnow()
    if dispatch_state(trip, bool(trip.bid_count), now) != "unfilled" or deadline_recorded(trip, "unfilled"):
        return False
    compare_and_set(trip, "open", dict(unfilled_at=trip.unfilled_at or now))
    record_history(trip, "unfilled", "open", "open", None, "MedPort", "Bidding deadline passed unfilled", at=now)
    emit("hospital", "trip.unfilled", "trip", trip.public_id, trip_payload(trip), actor=SYSTEM)
    return True


def mark_awaiting_award(trip, now=None):
    """Tell the hospital and the center that an open trip's bidding closed with live bids: one of
    them awards one.  Writes the timeline entry and emits ``trip.awaiting_award``, once per
    deadline; the trip's ``version`` is left alone, so an award form already open still posts.
    Returns False when the trip is not awaiting award or was already announced."""
    now = now or utcnow()
    if dispatch_state(trip, bool(trip.bid_count), now) != "awaiting_award":
        return False
    # Two relays may sweep at once: the row lock (PostgreSQL) makes them take turns.
    db.session.execute(sa.select(TransportRequest.id).where(TransportRequest.id == trip.id)
                       .with_for_update())
    if deadline_recorded(trip, "awaiting_award"):
        return False
    bids = f"{trip.bid_count} live bid{'s' if trip.bid_count != 1 else ''}"
    record_history(trip, "awaiting_award", "open", "open", None, "MedPort",
                   f"Bidding closed with {bids}: award one", at=now)
    emit("hospital", "trip.awaiting_award", "trip", trip.public_id, trip_payload(trip), actor=SYSTEM)
    return True


def announce_widened_invites(now=None, limit=200):
    """Tell every agency's board about the requests whose invitation has just widened.

    Each is announced once: the timer clears ``widen_invite_at`` with a conditional update
    (two relays racing announce it once) and emits ``trip.invite_widened`` in the same
    transaction.  The trip's version is left alone, so no open form goes stale.  The caller
    commits.  Returns how many were announced.
    """
    now = now or utcnow()
    due = list(db.session.scalars(
        sa.select(TransportRequest).where(TransportRequest.status == "open",
                                          TransportRequest.widen_invite_at <= now)
        .order_by(TransportRequest.widen_invite_at).limit(limit)))
    announced = 0
    for trip in due:
        claimed = db.session.execute(
            sa.update(TransportRequest)
            .where(TransportRequest.id == trip.id, TransportRequest.widen_invite_at.is_not(None),
                   TransportRequest.widen_invite_at <= now)
            .values(widen_invite_at=None).execution_options(synchronize_session=False)).rowcount
        if not claimed:
            continue
        record_history(trip, "invite_widened", "open", "open", None, "MedPort",
                       "Opened to every agency after the preferred agencies' head start", at=now)
        emit("hospital", "trip.invite_widened", "trip", trip.public_id, trip_payload(trip), actor=SYSTEM)
        announced += 1
    return announced


def announce_openings(now=None, limit=200):
    """Tell the boards about the requests booked ahead whose bidding has just opened.

    Each is announced once: the timer sets ``opening_announced_at`` with a conditional update
    (two relays racing announce it once), writes a ``bidding_opened`` history line and emits
    ``trip.bidding_opened`` in the same transaction.  Bidding itself opened at
    ``bidding_opens_at`` whether announced or not (the clock is the rule); the trip's version
    is left alone, so no open form goes stale.  The caller commits.  Returns how many were
    announced.
    """
    now = now or utcnow()
    T = TransportRequest
    due = list(db.session.scalars(
        sa.select(T).where(T.opening_announced_at.is_(None), T.bidding_opens_at.is_not(None),
                           T.will_call.is_(False),
                           T.bidding_opens_at <= now, T.status == "open")
        .order_by(T.bidding_opens_at).limit(limit)))
    announced = 0
    for trip in due:
        claimed = db.session.execute(
            sa.update(T).where(T.id == trip.id, T.opening_announced_at.is_(None))
            .values(opening_announced_at=now).execution_options(synchronize_session=False)).rowcount
        if not claimed:
            continue
        record_history(trip, "bidding_opened", "open", "open", None, "MedPort",
                       "Bidding opened (booked ahead)", at=now)
        emit("hospital", "trip.bidding_opened", "trip", trip.public_id, trip_payload(trip), actor=SYSTEM)
        announced += 1
    return announced
