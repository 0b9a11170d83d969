"""What the EMS dispatcher's pages read: a request the agency may see, its bids, its stops, its
bid history.  Reads only; nothing here writes or commits.

Every function is scoped to one agency (``agency_id``): another agency's bids and stops are
not found (None), as if they did not exist.  Trips are read from the hospital silo; stops,
bids and units from the EMS silo.
"""
import sqlalchemy as sa
from sqlalchemy.orm import joinedload

from ..extensions import db
from ..models.ems import EmsRoute, TransportBid
from ..models.hospital import TransportRequest
from . import paging, trips
from .bidding import ACTIVE_ROUTE_STATUSES
from .route_steps import current_route_order
from .statements import built_once

#: Bid-history filters (``?outcome=``) -> the bid statuses they keep ("" keeps all).
HISTORY_STATUSES = {"live": ("live",), "accepted": ("accepted",), "declined": ("declined",),
                    "withdrawn": ("withdrawn",), "ended": ("expired", "closed")}


# --- requests and bids ----------------------------------------------------------------------

@built_once
def _trips_by_id_statement():
    """:func:`trips_by_id`' statement; bound: ``trip_ids`` (a list)."""
    return sa.select(TransportRequest).where(TransportRequest.id.in_(sa.bindparam("trip_ids", expanding=True)))


def trips_by_id(trip_ids):
    """``{trip id: TransportRequest}`` for ``trip_ids`` (an iterable of ints), the requests
    alone (a relationship, e.g. a facility, is read when first used); ``{}`` for none."""
    trip_ids = list(trip_ids)
    if not trip_ids:
        return {}
    return {trip.id: trip for trip in db.session.scalars(_trips_by_id_statement(), {"trip_ids": trip_ids})}


@built_once
def _visible_trip_statement():
    """A request by public id, with its facilities and its return leg (the request page shows
    them; its outbound leg, rarer, is read by its id when there is one); bound: ``public_id``."""
    T = TransportRequest
    return sa.select(T).where(T.public_id == sa.bindparam("public_id", type_=sa.String)).options(
        joinedload(T.origin), joinedload(T.destination), joinedload(T.return_leg))


@built_once
def _has_bid_statement():
    """Whether an agency has a bid on a trip; bound: ``trip_id``, ``agency_id``."""
    return sa.select(TransportBid.id).where(
        TransportBid.trip_id == sa.bindparam("trip_id", type_=sa.Integer),
        TransportBid.agency_id == sa.bindparam("agency_id", type_=sa.Integer)).limit(1)


def visible_trip(public_id, agency_id, agency_levels):
    """The request ``public_id`` if agency ``agency_id`` may see it (invited at one of
    ``agency_levels``, awarded to it, or bid on by it), else None.  Its pickup and destination
    facilities and its return leg are read with it."""
    trip = db.session.scalar(_visible_trip_statement(), {"public_id": public_id})
    if trip is None:
        return None
    if trip.awarded_agency_id == agency_id or trips.agency_may_serve(trip, agency_id, agency_levels):
        return trip
    has_bid = db.session.scalar(_has_bid_statement(), {"trip_id": trip.id, "agency_id": agency_id})
    return trip if has_bid is not None else None


@built_once
def _agency_bids_statement():
    """An agency's bids on a trip, newest first, units loaded; bound: ``trip_id``, ``agency_id``."""
    return (sa.select(TransportBid)
            .where(TransportBid.trip_id == sa.bindparam("trip_id", type_=sa.Integer),
                   TransportBid.agency_id == sa.bindparam("agency_id", type_=sa.Integer))
            .order_by(TransportBid.created_at.desc(), TransportBid.id.desc())
            .options(joinedload(TransportBid.unit)))


def bids_on_trip(trip_id, agency_id):
    """``(live bid or None, [earlier bids])`` of the agency on a trip, in one read: its live
    bid (:func:`bidding.live_bid`) and its bids no longer live, newest first, units loaded."""
    bids = list(db.session.scalars(_agency_bids_statement(), {"trip_id": trip_id, "agency_id": agency_id}))
    live = next((bid for bid in bids if bid.status == "live"), None)
    return live, [bid for bid in bids if bid.status != "live"]


def agency_bid(bid_public_id, agency_id):
    """``(bid, trip)`` of the agency's bid ``bid_public_id``, or None (another agency's bid,
    or a bid whose trip is gone, is not found)."""
    bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))
    if bid is None or bid.agency_id != agency_id:
        return None
    trip = db.session.get(TransportRequest, bid.trip_id)
    return (bid, trip) if trip is not None else None


@built_once
def _bid_history_query(outcome):
    """The agency's bids (of the outcome's statuses, all for ""), units loaded, unordered (the
    pager orders and cuts them); bound: ``agency_id``."""
    query = (sa.select(TransportBid).where(TransportBid.agency_id == sa.bindparam("agency_id", type_=sa.Integer))
             .options(joinedload(TransportBid.unit)))
    if outcome in HISTORY_STATUSES:
        query = query.where(TransportBid.status.in_(HISTORY_STATUSES[outcome]))
    return query


def bid_history(agency_id, outcome="", after=None, size=paging.PAGE_SIZE):
    """One page (:class:`~.paging.Page`) of the agency's bids, newest first by (placed, id),
    units loaded; ``outcome`` a key of :data:`HISTORY_STATUSES` or "" for all.  Raises
    :class:`~.paging.CursorRefused` (400) for an ``after`` this list did not make."""
    query = _bid_history_query(outcome if outcome in HISTORY_STATUSES else "")
    return paging.keyset(query, [TransportBid.created_at, TransportBid.id], after=after, size=size,
                         params={"agency_id": agency_id})


@built_once
def _trip_summaries_statement():
    """:func:`trip_summaries`' statement; bound: ``trip_ids`` (a list)."""
    T = TransportRequest
    return (sa.select(T.id, T.public_id, T.reference, T.status, T.level_of_care, T.urgency)
            .where(T.id.in_(sa.bindparam("trip_ids", expanding=True))))


def trip_summaries(trip_ids):
    """``{trip id: row}`` of the trips ``trip_ids`` (rows with ``id, public_id, reference,
    status, level_of_care, urgency``: no patient data); ``{}`` for none."""
    trip_ids = list(trip_ids)
    if not trip_ids:
        return {}
    return {row.id: row for row in db.session.execute(_trip_summaries_statement(), {"trip_ids": trip_ids})}


# --- the agency's stops ---------------------------------------------------------------------

@built_once
def _active_routes_statement():
    """:func:`active_routes`' statement; bound: ``agency_id``."""
    return (sa.select(EmsRoute)
            .where(EmsRoute.agency_id == sa.bindparam("agency_id", type_=sa.Integer),
                   EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))
            .order_by(EmsRoute.window_start, EmsRoute.id).options(joinedload(EmsRoute.unit)))


def active_routes(agency_id):
    """The agency's stops not yet ended, by window start, units loaded."""
    return list(db.session.scalars(_active_routes_statement(), {"agency_id": agency_id}))


@built_once
def _completed_routes_query():
    """The agency's completed stops, units loaded, unordered (the pager orders and cuts them);
    bound: ``agency_id``."""
    return (sa.select(EmsRoute)
            .where(EmsRoute.agency_id == sa.bindparam("agency_id", type_=sa.Integer),
                   EmsRoute.status == "completed")
            .options(joinedload(EmsRoute.unit)))


def completed_routes(agency_id, after=None, size=paging.PAGE_SIZE):
    """One page (:class:`~.paging.Page`) of the agency's completed stops, newest window first,
    units loaded.  Raises :class:`~.paging.CursorRefused` (400) for a cursor not of this list."""
    return paging.keyset(_completed_routes_query(), [EmsRoute.window_start, EmsRoute.id], after=after, size=size,
                         params={"agency_id": agency_id})


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
