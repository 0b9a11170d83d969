"""Awarding a bid: the one set of checks, for the hospital and for the center on its behalf.

The hospital awards from its request page; the transport center awards on the hospital's
behalf (:func:`dashboard.services.intervention.award_bid`).  Both come here, so the same
bid, state and level-of-care checks apply before :func:`trips.award` writes the award
(compare-and-set on the request's version).  The two pages word some refusals differently;
``by`` says who acts.  Nothing here commits.
"""
import sqlalchemy as sa

from ..extensions import db
from ..models.ems import TransportBid
from ..models.vocabulary import LEVEL_RANK
from . import deadlines, trips
from .trips import TransitionRefused

#: Who may award: the hospital itself, or the center on its behalf.
AWARDED_BY = ("hospital", "center")
#: How the hospital's page names a request's state when it is no longer open.
STATUS_WORDS = {"awarded": "awarded", "en_route": "awarded (the crew is en route)",
                "at_pickup": "awarded (the crew is at pickup)", "transporting": "awarded (transporting)",
                "at_destination": "awarded (the crew is at the destination)",
                "completed": "completed", "cancelled": "cancelled"}
STALE = trips.STALE_MESSAGE


def bid_by_public_id(bid_public_id):
    """The EMS silo's bid with this public id, or None."""
    if not bid_public_id:
        return None
    return db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))


def award_bid(trip, bid_public_id, expected_version, by="hospital", *, actor):
    """Award the live bid ``bid_public_id`` of ``trip``; returns the trip, awarded.

    ``by`` is ``"hospital"`` (source "hospital") or ``"center"`` (source "center", the
    version checked first).  Raises :class:`TransitionRefused`: 404 a bid not on this request;
    409 the request not open (or a stale ``expected_version``), the bid no longer live, the
    unit booked or the agency deactivated (:func:`trips.award`); 400 a unit below the
    request's level of care.
    """
    if by not in AWARDED_BY:
        raise ValueError(f"unknown awarding side {by!r}")
    center = by == "center"
    if center and expected_version is not None and trip.version != expected_version:
        raise TransitionRefused(STALE)
    bid = bid_by_public_id(bid_public_id)
    if bid is None or bid.trip_id != trip.id:
        raise TransitionRefused("That bid is not on this request.", status=404)
    if not center and trip.status != "open":
        taken = f" to {trip.awarded_agency_name}" if trip.awarded_agency_name else ""
        raise TransitionRefused(f"{trip.reference} was already {STATUS_WORDS.get(trip.status, trip.status)}"
                                f"{taken}; nothing was saved.")
    if bid.status != "live":
        raise TransitionRefused(
            "That bid is no longer live (withdrawn, declined or closed)." if center else
            f"That bid is no longer live (it was {bid.status}). Choose another bid; nothing was saved.")
    offer = deadlines.bid_for_award(bid)
    if offer["unit_level"] is None or LEVEL_RANK[offer["unit_level"]] < LEVEL_RANK[trip.level_of_care]:
        raise TransitionRefused(
            f"The bid's unit is {offer['unit_level'] or 'unknown'}; this request needs "
            f"{trip.level_of_care} or higher.", status=400)
    return trips.award(trip, offer, source=by, expected_version=expected_version, actor=actor)
