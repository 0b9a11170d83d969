"""What the EMS dispatcher's pages read: a request the agency may see, its bids, its stops, its
bid history.  Reads only; nothing here writes or commits.

Every function is scoped to one agency (``agency_id``): another agency's bids and stops are
not found (None), as if they did not exist.  Trips are read from the hospital silo; stops,
bids and units from the EMS silo.
"""
import sqlalchemy as sa
from sqlalchemy.orm import selectinload

from ..extensions import db
from ..models.ems import EmsRoute, TransportBid
from ..models.hospital import TransportRequest
from . import paging, trips
from .bidding import ACTIVE_ROUTE_STATUSES
from .route_steps import current_route_order

#: Bid-history filters (``?outcome=``) -> the bid statuses they keep ("" keeps all).
HISTORY_STATUSES = {"live": ("live",), "accepted": ("accepted",), "declined": ("declined",),
                    "withdrawn": ("withdrawn",), "ended": ("expired", "closed")}


# --- requests and bids ----------------------------------------------------------------------

def trips_by_id(trip_ids):
    """``{trip id: TransportRequest}`` for ``trip_ids`` (an iterable of ints), with their
    pickup and destination facilities loaded; ``{}`` for none."""
    trip_ids = list(trip_ids)
    if not trip_ids:
        return {}
    return {trip.id: trip for trip in db.session.scalars(
        sa.select(TransportRequest).where(TransportRequest.id.in_(trip_ids))
        .options(selectinload(TransportRequest.origin), selectinload(TransportRequest.destination)))}


def visible_trip(public_id, agency_id, agency_levels):
    """The request ``public_id`` if agency ``agency_id`` may see it (invited at one of
    ``agency_levels``, awarded to it, or bid on by it), else None."""
    trip = trips.get_by_public_id(public_id)
    if trip is None:
        return None
    if trip.awarded_agency_id == agency_id or trips.agency_may_serve(trip, agency_id, agency_levels):
        return trip
    has_bid = db.session.scalar(sa.select(TransportBid.id).where(
        TransportBid.trip_id == trip.id, TransportBid.agency_id == agency_id).limit(1))
    return trip if has_bid is not None else None


def earlier_bids(trip_id, agency_id):
    """The agency's bids on a trip that are no longer live, newest first, units loaded."""
    return list(db.session.scalars(
        sa.select(TransportBid).where(TransportBid.trip_id == trip_id,
                                      TransportBid.agency_id == agency_id,
                                      TransportBid.status != "live")
        .order_by(TransportBid.created_at.desc()).options(selectinload(TransportBid.unit))))


def agency_bid(bid_public_id, agency_id):
    """``(bid, trip)`` of the agency's bid ``bid_public_id``, or None (another agency's bid,
    or a bid whose trip is gone, is not found)."""
    bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))
    if bid is None or bid.agency_id != agency_id:
        return None
    trip = db.session.get(TransportRequest, bid.trip_id)
    return (bid, trip) if trip is not None else None


def bid_history(agency_id, outcome="", after=None, size=paging.PAGE_SIZE):
    """One page (:class:`~.paging.Page`) of the agency's bids, newest first by (placed, id),
    units loaded; ``outcome`` a key of :data:`HISTORY_STATUSES` or "" for all.  Raises
    :class:`~.paging.CursorRefused` (400) for an ``after`` this list did not make."""
    query = (sa.select(TransportBid).where(TransportBid.agency_id == agency_id)
             .options(selectinload(TransportBid.unit)))
    if outcome in HISTORY_STATUSES:
        query = query.where(TransportBid.status.in_(HISTORY_STATUSES[outcome]))
    return paging.keyset(query, [TransportBid.created_at, TransportBid.id], after=after, size=size)


def trip_summaries(trip_ids):
    """``{trip id: row}`` of the trips ``trip_ids`` (rows with ``id, public_id, reference,
    status, level_of_care, urgency``: no patient data); ``{}`` for none."""
    trip_ids = list(trip_ids)
    if not trip_ids:
        return {}
    return {row.id: row for row in db.session.execute(
        sa.select(TransportRequest.id, TransportRequest.public_id, TransportRequest.reference,
                  TransportRequest.status, TransportRequest.level_of_care, TransportRequest.urgency)
        .where(TransportRequest.id.in_(trip_ids)))}


# --- the agency's stops ---------------------------------------------------------------------

def active_routes(agency_id):
    """The agency's stops not yet ended, by window start, units loaded."""
    return list(db.session.scalars(
        sa.select(EmsRoute).where(EmsRoute.agency_id == agency_id,
                                  EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))
        .order_by(EmsRoute.window_start, EmsRoute.id).options(selectinload(EmsRoute.unit))))


def completed_routes(agency_id, after=None, size=paging.PAGE_SIZE):
    """One page (:class:`~.paging.Page`) of the agency's completed stops, newest window first,
    units loaded.  Raises :class:`~.paging.CursorRefused` (400) for a cursor not of this list."""
    query = (sa.select(EmsRoute).where(EmsRoute.agency_id == agency_id, EmsRoute.status == "completed")
             .options(selectinload(EmsRoute.unit)))
    return paging.keyset(query, [EmsRoute.window_start, EmsRoute.id], after=after, size=size)


def current_routes(agency_id):
    """``{unit id: EmsRoute}``: each unit's current stop (the one under way, else the next
    planned one); units without an active stop are left out."""
    current = {}
    for route in db.session.scalars(
            sa.select(EmsRoute).where(EmsRoute.agency_id == agency_id,
                                      EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))
            .order_by(*current_route_order())):
        current.setdefault(route.unit_id, route)
    return current
