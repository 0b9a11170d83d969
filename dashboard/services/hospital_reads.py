"""What the hospital's pages read: facilities, the requests board, one request's panels.

Reads of the hospital and EMS silos (and the center registry through :mod:`.oversight`) for
``dashboard.hospital`` and ``dashboard.series``; nothing here writes.  Every function takes the
hospital's id (center registry id) where the read is scoped to one hospital.
"""
from datetime import timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import aliased, joinedload

from ..extensions import db
from ..localtime import local_midnight, local_today
from ..models.base import utcnow
from ..models.ems import TransportBid
from ..models.hospital import (
    HospitalFacility,
    HospitalUser,
    TransportRequest,
    TransportRequestEvent,
)
from ..models.vocabulary import ACTIVE_STATUSES, BIDDING_OPENED, dispatch_condition
from . import boards, configuration, oversight
from .statements import NOW, Bound, built_once
from .text_search import like_contains

#: Bid statuses the request page shows, in the order it shows them.
SHOWN_BID_STATUSES = ("live", "accepted", "declined")
#: Sort keys of the hospital's own (besides the boards' shared sorts).
OWN_SORTS = ("reference", "created")
#: The upcoming and cancelled tabs' counts show at most this many, then "99+" (:func:`tab_counts`).
UPCOMING_COUNT_CAP = 99


# --- facilities -----------------------------------------------------------------------------

def own_facilities(hospital_id):
    """The hospital's active facilities, by name: where a patient may leave from."""
    return list(db.session.scalars(
        sa.select(HospitalFacility)
        .where(HospitalFacility.hospital_id == hospital_id, HospitalFacility.active.is_(True))
        .order_by(HospitalFacility.name)
    ))


def all_facilities():
    """Every active facility of the region, by city and name: where a patient may go."""
    return list(db.session.scalars(
        sa.select(HospitalFacility).where(HospitalFacility.active.is_(True))
        .order_by(HospitalFacility.city, HospitalFacility.name)
    ))


def default_facility_id(user_id):
    """The facility id of the staff member's profile (their usual facility), or None."""
    profile = db.session.scalar(sa.select(HospitalUser).where(HospitalUser.user_id == user_id))
    return profile.default_facility_id if profile is not None else None


# --- the requests board -----------------------------------------------------------------------

def _today_utc():
    """The region's current local day as a naive-UTC [start, end) range."""
    day = local_today()
    return local_midnight(day), local_midnight(day + timedelta(days=1))


def _not_bidding_yet(T=TransportRequest, now=None):
    """Open requests no agency can bid on yet: booked ahead (upcoming) or will-call waiting
    (``T`` the requests table or an alias of it; ``now`` naive UTC or a bound parameter,
    default the clock)."""
    return dispatch_condition(T, ("will_call_waiting", "upcoming"), now)


#: The completed tab's day as bound parameters (naive UTC, [start, end)).
_DAY_START, _DAY_END = Bound("day_start", sa.DateTime), Bound("day_end", sa.DateTime)
_HOSPITAL = Bound("hospital_id", sa.Integer)


def tab_filter(tab, now=None, day=None):
    """The condition that puts a request in a dashboard tab: "upcoming" holds the open requests
    not taking bids yet (booked ahead, will-call waiting), "open" the others; then "active",
    "completed" (today, local) and "cancelled".  ``now`` (naive UTC or a bound parameter,
    default the clock) and ``day`` (the completed tab's ``(start, end)``, default today's local
    day) may be bound parameters of a statement built once."""
    if tab == "open":
        return dispatch_condition(TransportRequest, BIDDING_OPENED, now)
    if tab == "upcoming":
        return _not_bidding_yet(now=now)
    if tab == "active":
        return TransportRequest.status.in_(ACTIVE_STATUSES)
    if tab == "completed":
        start, end = day or _today_utc()
        return sa.and_(TransportRequest.status == "completed", TransportRequest.completed_at >= start,
                       TransportRequest.completed_at < end)
    return TransportRequest.status == "cancelled"


def _search_filter(q):
    """Reference or patient reference containing ``q`` (LIKE wildcards taken literally)."""
    return sa.or_(like_contains(TransportRequest.reference, q),
                  like_contains(TransportRequest.patient_ref, q))


def _order(sort, now):
    """``ORDER BY`` of a dashboard sort: the boards' shared sorts (``services.boards``), or by
    reference or posting time (:data:`OWN_SORTS`), then the pickup window.  ``now`` (naive UTC)
    is read by the at-risk sort alone."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    if key in boards.SORTS:
        risk = None
        if key == "risk":
            risk = oversight.risk_condition(now, configuration.get_all(),
                                            oversight.deactivated_agency_ids(oversight.registry_names()[1]))
        return boards.order_by(sort, risk)
    column = {"reference": TransportRequest.reference, "created": TransportRequest.created_at}[key]
    return [column.desc() if descending else column.asc(), TransportRequest.window_start.asc(),
            TransportRequest.id.desc() if descending else TransportRequest.id.asc()]


@built_once
def _tab_counts_statement():
    """:func:`tab_counts`' statement; bound: ``hospital_id``, ``now``, ``day_start``,
    ``day_end``, ``cap`` (the upcoming and cancelled counts' limit)."""
    T = TransportRequest
    ahead, dropped = aliased(TransportRequest), aliased(TransportRequest)
    cap = sa.bindparam("cap", type_=sa.Integer)
    upcoming = (sa.select(ahead.id).where(ahead.hospital_id == _HOSPITAL, _not_bidding_yet(ahead, NOW))
                .limit(cap).subquery())
    # Every request a hospital ever cancelled stays in the cancelled tab: years of them, so they
    # are counted apart and capped like the upcoming ones (the hospital/status index, at most
    # ``cap`` entries), never in the statement over the rows of the day.
    cancelled = (sa.select(dropped.id).where(dropped.hospital_id == _HOSPITAL, dropped.status == "cancelled")
                 .limit(cap).subquery())
    # Today's completed requests: the status/completed-at index, today's rows alone.
    done = aliased(TransportRequest)
    completed = sa.select(sa.func.count()).where(
        done.status == "completed", done.completed_at >= _DAY_START, done.completed_at < _DAY_END,
        done.hospital_id == _HOSPITAL).scalar_subquery()
    # The open and active rows: the hospital/status index, a range per status. (One condition
    # over every tab's rows, with the completed and cancelled ones OR-ed in, left SQLite only
    # the hospital to look up: it read every request the hospital ever posted.)
    return (
        sa.select(
            sa.func.count().filter(dispatch_condition(T, BIDDING_OPENED, NOW)),
            sa.func.count().filter(T.status.in_(ACTIVE_STATUSES)),
            completed,
            sa.select(sa.func.count()).select_from(cancelled).scalar_subquery(),
            sa.select(sa.func.count()).select_from(upcoming).scalar_subquery())
        .where(T.hospital_id == _HOSPITAL, T.status.in_(("open",) + ACTIVE_STATUSES))
    )


def tab_counts(hospital_id, now=None):
    """How many requests each tab holds (before any search): ``{tab: count}`` (ints), read in
    one statement.  The upcoming and cancelled counts stop at ``UPCOMING_COUNT_CAP + 1`` (shown
    "99+"): a hospital's series may hold thousands of occurrences ahead, and years of history
    thousands of cancelled requests; the tab says only that there are many, and the cancelled
    tab, when shown, counts its own rows.  The others are counted over the open and active
    rows and today's completed ones alone, each through an index, so the cost does not grow
    with the history."""
    start, end = _today_utc()
    row = db.session.execute(_tab_counts_statement(), {
        "hospital_id": hospital_id, "now": now or utcnow(), "day_start": start, "day_end": end,
        "cap": UPCOMING_COUNT_CAP + 1}).one()
    return dict(zip(("open", "active", "completed", "cancelled", "upcoming"), row, strict=True))


class BoardPage(NamedTuple):
    """One page of the hospital's requests board: its ``rows``, ``page`` (a
    :class:`boards.Page`) and ``now`` (naive UTC, when it was read)."""

    rows: list
    page: boards.Page
    now: object


def _rows_of(query):
    """The board's rows statement from its filtered ``query``: requests with their pickup and
    destination facilities."""
    return query.options(joinedload(TransportRequest.origin), joinedload(TransportRequest.destination))


@built_once
def _board_statements(tab, sort):
    """``(count, rows)``: the statements of one tab in one sort (not the at-risk sort, whose
    condition is built per request) without a search; bound: ``hospital_id``, ``now``,
    ``day_start``, ``day_end``, ``offset``, ``limit``."""
    conditions = [TransportRequest.hospital_id == _HOSPITAL, tab_filter(tab, NOW, (_DAY_START, _DAY_END))]
    rows = (_rows_of(sa.select(TransportRequest)).where(*conditions).order_by(*_order(sort, None))
            .offset(sa.bindparam("offset", type_=sa.Integer)).limit(sa.bindparam("limit", type_=sa.Integer)))
    return sa.select(sa.func.count()).where(*conditions), rows


def requests_page(hospital_id, tab, sort, q, number, size, now=None, counts=None):
    """Page ``number`` (moved within the pages there are) of the hospital's requests in ``tab``,
    sorted by ``sort`` (a board sort or one of :data:`OWN_SORTS`, ``-`` for descending) and
    filtered by the search ``q`` (may be empty), ``size`` rows a page, at ``now`` (naive UTC,
    default the clock).

    ``counts``: :func:`tab_counts` read at the same ``now``, when the caller has them: without
    a search they are the tab's total (for every tab but "upcoming" and "cancelled", whose
    counts stop at their cap), so the rows are not counted again.  The statements of a tab and sort are built once
    (:func:`_board_statements`); a search or the at-risk sort builds its own."""
    now = now or utcnow()
    start, end = _today_utc() if tab == "completed" else (None, None)
    values = {"hospital_id": hospital_id, "now": now, "day_start": start, "day_end": end}
    if q or sort.removeprefix("-") == "risk":
        conditions = [TransportRequest.hospital_id == hospital_id, tab_filter(tab, now, (start, end))]
        if q:
            conditions.append(_search_filter(q))
        count = sa.select(sa.func.count()).where(*conditions)
        rows = (_rows_of(sa.select(TransportRequest)).where(*conditions).order_by(*_order(sort, now))
                .offset(sa.bindparam("offset", type_=sa.Integer)).limit(sa.bindparam("limit", type_=sa.Integer)))
    else:
        count, rows = _board_statements(tab, sort)
    if counts is not None and not q and tab not in ("upcoming", "cancelled"):
        total = counts[tab]
    else:
        total = db.session.scalar(count, values)
    shown = boards.page_of(number, total, size)
    return BoardPage(list(db.session.scalars(rows, dict(values, offset=shown.offset, limit=size))), shown, now)


# --- one request ------------------------------------------------------------------------------

@built_once
def _request_statement(detail):
    """The hospital's request by public id; bound: ``public_id``, ``hospital_id``.  ``detail``
    loads what the request page shows of its relatives too (its facilities and its return leg;
    its outbound leg, rarer, is read by its id when there is one) in the same statement."""
    query = sa.select(TransportRequest).where(
        TransportRequest.public_id == sa.bindparam("public_id", type_=sa.String),
        TransportRequest.hospital_id == _HOSPITAL)
    if detail:
        query = query.options(joinedload(TransportRequest.origin), joinedload(TransportRequest.destination),
                              joinedload(TransportRequest.return_leg))
    return query


def request_for_hospital(public_id, hospital_id, detail=False):
    """The hospital's request ``public_id`` (a str), or None: another hospital's request is
    not found (as ``trips.get_for_hospital``).  With ``detail`` its pickup and destination
    facilities and its return leg come in the same read (the request page shows them)."""
    return db.session.scalar(_request_statement(bool(detail)), {"public_id": public_id, "hospital_id": hospital_id})


@built_once
def _bids_statement():
    """:func:`shown_bids`' statement; bound: ``trip_id``."""
    return (sa.select(TransportBid).options(joinedload(TransportBid.unit))
            .where(TransportBid.trip_id == sa.bindparam("trip_id", type_=sa.Integer),
                   TransportBid.status.in_(SHOWN_BID_STATUSES)))


def shown_bids(trip):
    """Bids received for the trip (EMS silo), live ones first, best ETA first, units loaded."""
    bids = list(db.session.scalars(_bids_statement(), {"trip_id": trip.id}))
    rank = {status: i for i, status in enumerate(SHOWN_BID_STATUSES)}
    bids.sort(key=lambda b: (rank[b.status], b.eta_minutes, b.created_at, b.id))
    return bids


@built_once
def _timeline_statement():
    """:func:`timeline`'s statement; bound: ``trip_id``."""
    return (sa.select(TransportRequestEvent)
            .where(TransportRequestEvent.trip_id == sa.bindparam("trip_id", type_=sa.Integer))
            .order_by(TransportRequestEvent.at, TransportRequestEvent.id))


def timeline(trip):
    """Every status change of the trip (:class:`TransportRequestEvent`), oldest first."""
    return list(db.session.scalars(_timeline_statement(), {"trip_id": trip.id}))


@built_once
def _relatives_statement():
    """:func:`repost_relatives`' statement; bound: ``trip_id``, ``source_id``.  It names no
    hospital: with one, SQLite's planner took the hospital's index and read every request the
    hospital ever posted, where the two keys alone are one primary-key and one partial-index
    lookup; the hospital is checked on the rows found."""
    return sa.select(TransportRequest).where(
        sa.or_(TransportRequest.id == sa.bindparam("source_id", type_=sa.Integer),
               TransportRequest.reposted_from_id == sa.bindparam("trip_id", type_=sa.Integer)))


def repost_relatives(trip):
    """The request ``trip`` re-posts and those re-posting it (the same hospital's only)."""
    found = db.session.scalars(_relatives_statement(), {"trip_id": trip.id, "source_id": trip.reposted_from_id})
    return [relative for relative in found if relative.hospital_id == trip.hospital_id]


def same_patient_references(trip, source=None, limit=5):
    """References of the hospital's other active requests for ``trip``'s patient reference
    (a re-posted request's ``source`` excluded), oldest first, at most ``limit``."""
    query = sa.select(TransportRequest.reference).where(
        TransportRequest.hospital_id == trip.hospital_id,
        TransportRequest.patient_ref == trip.patient_ref,
        TransportRequest.status.in_(("open",) + ACTIVE_STATUSES),
        TransportRequest.id != trip.id)
    if source is not None:
        query = query.where(TransportRequest.id != source.id)
    return list(db.session.scalars(query.order_by(TransportRequest.created_at).limit(limit)))
