"""Bids, owned by the EMS silo: the requests an agency may bid on, a bid placed (alone or as an
outbound and return pair), changed or withdrawn, with its unit and agency checked.  The crew's
steps on a unit's stops are in :mod:`.route_steps`.

The EMS side reads the hospital silo (the trip as it is now) and writes only
the EMS silo; the hospital learns of bids through events.
Functions here do not commit.  ``actor`` (keyword, a :class:`dashboard.events.outbox.Actor`) is who acts: its ``user_id``
and ``ip`` go on the outbox event.
"""
from datetime import timedelta
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import joinedload

from ..events.outbox import emit
from ..extensions import db, engine
from ..localtime import to_local
from ..models.base import utcnow
from ..models.ems import EmsAgency, EmsRoute, TransportBid, Unit
from ..models.hospital import TransportRequest
from ..models.vocabulary import IN_PROGRESS_ROUTE_STATUSES, LEVEL_RANK, URGENCY_RANK, servable_levels
from . import boards, center_reads, scheduling
from .refusals import Refused
from .statements import NOW, Bound, built_once
from .trips import agency_may_serve

MAX_ETA_MINUTES = 24 * 60
#: A unit's stops that are still its own: planned, or under way.
ACTIVE_ROUTE_STATUSES = ("planned",) + IN_PROGRESS_ROUTE_STATUSES


class BidRefused(Refused):
    """A bid or crew action the rules do not allow; ``message`` is for the user."""


def bid_payload(bid, agency_name=None):
    return {
        "bid_id": bid.id,
        "public_id": bid.public_id,
        "trip_id": bid.trip_id,
        "hospital_id": bid.hospital_id,
        "agency_id": bid.agency_id,
        "agency_name": agency_name,
        "unit_id": bid.unit_id,
        "eta_minutes": bid.eta_minutes,
        "status": bid.status,
    }


def eta_passed(bid, now=None):
    """Whether ``bid`` is live and the arrival it promised (``updated_at``, naive UTC, plus
    ``eta_minutes``) is before ``now`` (naive UTC, default the current time): the unit did not
    come in that time, so the bid no longer says when it will."""
    if bid.status != "live" or bid.updated_at is None or bid.eta_minutes is None:
        return False
    return bid.updated_at + timedelta(minutes=bid.eta_minutes) < (now or utcnow())


def best_bid(bids, now=None):
    """The bid the pages mark "Best" among ``bids``: the live one with the shortest ETA (the
    earliest placed on a tie) whose arrival has not passed (:func:`eta_passed`); None when no
    bid is such."""
    now = now or utcnow()
    candidates = [bid for bid in bids or () if bid.status == "live" and not eta_passed(bid, now)]
    return min(candidates, key=lambda bid: (bid.eta_minutes, bid.created_at, bid.id), default=None)


def live_bid(trip_id, agency_id):
    return db.session.scalar(
        sa.select(TransportBid).where(
            TransportBid.trip_id == trip_id,
            TransportBid.agency_id == agency_id,
            TransportBid.status == "live",
        )
    )


def invites_preferred_only(p, at):
    """Whether, at ``at`` (naive UTC), only the invited (preferred) agencies could see the trip of
    event payload ``p`` (its ``invite_mode`` and ``trip_id``); a read of the hospital silo when
    the invitation widens after a head start."""
    if p.get("invite_mode") == "preferred":
        return True
    if p.get("invite_mode") != "preferred_then_all":
        return False
    trip = db.session.get(TransportRequest, p["trip_id"])
    return trip is not None and at < trip.bidding_start + timedelta(minutes=trip.invite_all_after_minutes or 0)


@built_once
def _live_bids_statement():
    """:func:`live_bids_by_trip`'s statement; bound: ``agency_id``, ``trip_ids`` (a list)."""
    return (sa.select(TransportBid)
            .where(TransportBid.agency_id == sa.bindparam("agency_id", type_=sa.Integer),
                   TransportBid.status == "live",
                   TransportBid.trip_id.in_(sa.bindparam("trip_ids", expanding=True)))
            .options(joinedload(TransportBid.unit)))


def live_bids_by_trip(agency_id, trip_ids):
    """This agency's live bids on the given trips (ids), by trip id, units loaded: ``{trip
    id: TransportBid}``; ``{}`` for no trips."""
    if not trip_ids:
        return {}
    return {bid.trip_id: bid for bid in db.session.scalars(
        _live_bids_statement(), {"agency_id": agency_id, "trip_ids": list(trip_ids)})}


@built_once
def _agency_live_bids_statement():
    """:func:`agency_live_bids`' statement; bound: ``agency_id``."""
    return (sa.select(TransportBid.trip_id, TransportBid.eta_minutes, Unit.number.label("unit_number"))
            .join(Unit, Unit.id == TransportBid.unit_id)
            .where(TransportBid.agency_id == sa.bindparam("agency_id", type_=sa.Integer),
                   TransportBid.status == "live"))


def agency_live_bids(agency_id):
    """Every live bid of the agency, as the board shows it: ``{trip id: row}``, a row with
    ``trip_id``, ``eta_minutes`` and ``unit_number`` (columns, not bid objects); one read for
    both the board's conditions (:func:`open_requests_page`'s ``live_bid_trip_ids``) and its
    "Your bid" column."""
    return {row.trip_id: row for row in db.session.execute(_agency_live_bids_statement(), {"agency_id": agency_id})}


def _invited(pattern, now, dialect):
    """SQL: the request invites the agency whose invitation ``pattern`` is given (``",<agency
    id>,"``, or a bound parameter) at ``now`` (:func:`trips.agency_may_serve`'s invitation
    rule): everyone, this agency by name, or everyone once a preferred-then-all request's head
    start (``invite_all_after_minutes`` after bidding opened: posting, the opening of one
    booked ahead or the release of a will-call return) has run out.  ``dialect`` is the
    hospital silo's dialect name (the interval arithmetic differs)."""
    T = TransportRequest
    minutes = sa.func.coalesce(T.invite_all_after_minutes, 0)
    start = sa.func.coalesce(T.bidding_opens_at, T.released_at, T.created_at)
    if dialect == "postgresql":
        widened = start + sa.func.make_interval(0, 0, 0, 0, 0, minutes) <= now
    else:
        moment = now if isinstance(now, Bound) else sa.literal(now, sa.DateTime)
        widened = sa.func.julianday(start) + minutes / 1440.0 <= sa.func.julianday(moment)
    return sa.or_(T.invite_mode == "all",
                  T.invited_agency_ids.contains(pattern),
                  sa.and_(T.invite_mode == "preferred_then_all", widened))


def _open_conditions(now, levels, pattern, my_bid_trip_ids, urgency, pickup_before, dialect):
    """The conditions of :func:`open_requests_conditions` from their values (each a value or a
    bound parameter; ``my_bid_trip_ids``, ``urgency``, ``pickup_before`` None to leave out)."""
    T = TransportRequest
    deadline_ok = T.bid_deadline > now
    if my_bid_trip_ids is not None:
        deadline_ok = sa.or_(deadline_ok, T.id.in_(my_bid_trip_ids))
    conditions = [T.status == "open", T.level_of_care.in_(levels), _invited(pattern, now, dialect), deadline_ok,
                  sa.or_(T.bidding_opens_at.is_(None), T.bidding_opens_at <= now),
                  sa.or_(T.will_call.is_(False), T.released_at.is_not(None))]
    if urgency is not None:
        conditions.append(T.urgency == urgency)
    if pickup_before is not None:
        conditions.append(T.window_start < pickup_before)
    return conditions


class _OpenQuery(NamedTuple):
    """What an agency's open requests are read with: ``values`` (the bound parameters of
    :func:`_open_statements`) and the shape of their conditions."""

    values: dict
    holds_bids: bool
    by_urgency: bool
    by_pickup: bool
    dialect: str

    def conditions(self):
        """The conditions with the values written in (for a statement built per request)."""
        v = self.values
        return _open_conditions(v["now"], v["levels"], v["invited_pattern"],
                                v["my_bid_trip_ids"] if self.holds_bids else None,
                                v["urgency"] if self.by_urgency else None,
                                v["pickup_before"] if self.by_pickup else None, self.dialect)


def _open_query(agency_id, agency_levels, level, urgency, pickup_before, now, my_bid_trip_ids=None):
    """The :class:`_OpenQuery` of an agency's open requests, or None when it serves no level
    asked for.  ``my_bid_trip_ids`` are the trips of the agency's live bids (past its deadline
    a request stays on the board of an agency holding a live bid on it); read when None."""
    levels = servable_levels(agency_levels)
    if level:
        levels = [lv for lv in levels if lv == level]
    if not levels:
        return None
    my_bid_trip_ids = list(agency_live_bids(agency_id) if my_bid_trip_ids is None else my_bid_trip_ids)
    values = {"now": now or utcnow(), "levels": levels, "invited_pattern": f",{agency_id},",
              "my_bid_trip_ids": my_bid_trip_ids, "urgency": urgency, "pickup_before": pickup_before}
    return _OpenQuery(values, bool(my_bid_trip_ids), bool(urgency), pickup_before is not None,
                      engine("hospital").dialect.name)


def open_requests_conditions(agency_id, agency_levels, level=None, urgency=None, pickup_before=None,
                             now=None):
    """The SQL conditions of the open requests this agency may serve, or None when it serves
    no level asked for.

    Open, of a level the agency covers (``level``: that one only), inviting it
    (:func:`_invited`), bidding still open, or past the deadline while this agency holds a
    live bid on it; ``urgency`` and ``pickup_before`` (naive UTC: pickup window starting
    before it) narrow them.  One booked ahead whose bidding has not opened, or a will-call
    return still waiting for its patient, is not among them (``scheduling.upcoming_requests``
    lists the former)."""
    query = _open_query(agency_id, agency_levels, level, urgency, pickup_before, now)
    return None if query is None else query.conditions()


def _with_places(query):
    """``query`` loading the requests' pickup and destination facilities."""
    return query.options(joinedload(TransportRequest.origin), joinedload(TransportRequest.destination))


def open_requests(agency_id, agency_levels, level=None, urgency=None, pickup_before=None, now=None):
    """Every open request this agency may serve (:func:`open_requests_conditions`), emergent
    first, then newest."""
    conditions = open_requests_conditions(agency_id, agency_levels, level, urgency, pickup_before, now)
    if conditions is None:
        return []
    return list(db.session.scalars(
        _with_places(sa.select(TransportRequest)).where(*conditions)
        .order_by(sa.case(URGENCY_RANK, value=TransportRequest.urgency, else_=len(URGENCY_RANK)),
                  TransportRequest.created_at.desc(), TransportRequest.id.desc())))


def _open_page_statements(conditions, order):
    """``(count, rows)`` of one board page: the count reads the agency's upcoming requests'
    bounded count too (:func:`scheduling.upcoming_count_column`, bound ``upcoming_cap``);
    rows bound: ``offset``, ``limit``."""
    count = (sa.select(sa.func.count(), scheduling.upcoming_count_column())
             .select_from(TransportRequest).where(*conditions))
    rows = (_with_places(sa.select(TransportRequest)).where(*conditions).order_by(*order)
            .limit(sa.bindparam("limit", type_=sa.Integer)).offset(sa.bindparam("offset", type_=sa.Integer)))
    return count, rows


@built_once
def _open_statements(holds_bids, by_urgency, by_pickup, dialect, sort):
    """:func:`_open_page_statements` of one shape of conditions and one sort (not the at-risk
    sort, whose condition is built per request), with bound parameters: ``now``, ``levels``
    (a list), ``invited_pattern``, ``my_bid_trip_ids`` (a list), ``urgency``,
    ``pickup_before``, ``offset`` and ``limit``."""
    conditions = _open_conditions(
        NOW, sa.bindparam("levels", expanding=True), Bound("invited_pattern", sa.String),
        sa.bindparam("my_bid_trip_ids", expanding=True) if holds_bids else None,
        Bound("urgency", sa.String) if by_urgency else None,
        Bound("pickup_before", sa.DateTime) if by_pickup else None, dialect)
    return _open_page_statements(conditions, boards.order_by(sort))


def board_page(agency_id, agency_levels, sort, page, risk, upcoming_cap, level=None, urgency=None,
               pickup_before=None, now=None, live_bid_trip_ids=None):
    """One page of the agency's board and its upcoming count: ``(rows, boards.Page, upcoming)``.

    ``sort`` is a :data:`boards.SORTS` key (``risk`` needs ``risk``, the SQL at-risk condition),
    ``page`` the page number asked for (moved within the pages there are); counted, ordered
    and cut in SQL.  ``upcoming`` is :func:`scheduling.upcoming_count` at ``upcoming_cap`` (an
    int up to ``upcoming_cap + 1``), read in the same statement as the count.
    ``live_bid_trip_ids``: the trips of the agency's live bids, when the caller has read them
    (:func:`agency_live_bids`), else read here.  The statements of each sort and shape of
    filters are built once (:func:`_open_statements`); the at-risk sort's per request."""
    query = _open_query(agency_id, agency_levels, level, urgency, pickup_before, now, live_bid_trip_ids)
    if query is None:
        return [], boards.page_of(1, 0), 0
    if sort.removeprefix("-") == "risk":
        count, rows = _open_page_statements(query.conditions(), boards.order_by(sort, risk))
    else:
        count, rows = _open_statements(query.holds_bids, query.by_urgency, query.by_pickup, query.dialect, sort)
    total, upcoming = db.session.execute(count, dict(query.values, upcoming_cap=upcoming_cap + 1)).one()
    shown = boards.page_of(page, total)
    return list(db.session.scalars(rows, dict(query.values, limit=shown.size, offset=shown.offset))), shown, upcoming


def open_requests_page(agency_id, agency_levels, sort, page, risk, level=None, urgency=None,
                       pickup_before=None, now=None, live_bid_trip_ids=None):
    """One page of the agency's board: ``(rows, boards.Page)`` (:func:`board_page` without the
    upcoming count)."""
    rows, shown, _upcoming = board_page(agency_id, agency_levels, sort, page, risk, 0, level, urgency,
                                        pickup_before, now, live_bid_trip_ids)
    return rows, shown


def validate_eta(raw):
    """An ETA in whole minutes, 1 .. 1440, or BidRefused(400)."""
    try:
        eta = int(str(raw).strip())
    except (TypeError, ValueError):
        raise BidRefused("Enter the ETA to pickup in whole minutes.", status=400) from None
    if eta < 1:
        raise BidRefused("The ETA must be at least 1 minute.", status=400)
    if eta > MAX_ETA_MINUTES:
        raise BidRefused(f"An ETA over {MAX_ETA_MINUTES} minutes (24 hours) is not a real offer.", status=400)
    return eta


AGENCY_DEACTIVATED = ("Your agency is deactivated in MedPort's registry, so it cannot bid. "
                      "Ask the transport center.")


def check_agency_active(agency_id):
    """Refuse (403) a bid of an agency deactivated in the registry.

    Reads the center's registry (through :func:`dashboard.services.center_reads.registry_names`,
    so bidding goes on while the center is unreachable) and the EMS silo's profile; on
    PostgreSQL the profile is share-locked until commit, so the relay's deactivation (which
    withdraws the agency's live bids) waits for this bid and then withdraws it too.
    """
    agency = center_reads.registry_names()[1].get(agency_id)
    profile_active = db.session.scalar(
        sa.select(EmsAgency.active).where(EmsAgency.agency_id == agency_id).with_for_update(read=True))
    if (agency is not None and not agency.active) or profile_active is False:
        raise BidRefused(AGENCY_DEACTIVATED, status=403)


def _check_trip_open(trip, agency_id, agency_levels, now):
    if trip is None:
        raise BidRefused("No such request.", status=404)
    if not agency_may_serve(trip, agency_id, agency_levels, now):
        raise BidRefused("No such request.", status=404)
    if trip.status != "open":
        raise BidRefused("This request is no longer open for bids.")
    if trip.will_call_waiting:
        raise BidRefused("This will-call return waits until the patient is ready; bidding opens then.")
    if trip.bidding_opens_at is not None and trip.bidding_opens_at > now:
        opens = to_local(trip.bidding_opens_at).strftime("%a %d %b %H:%M")
        raise BidRefused(f"This request is booked ahead: bidding opens {opens}. It is in your "
                         "upcoming list until then.")
    if trip.bid_deadline <= now:
        raise BidRefused("The bidding deadline for this request has passed.")


@built_once
def _booked_statement(excluding_bid):
    """:func:`booked_unit_ids`' statement: the units bid on (live or accepted) and the units
    with an active route, for another trip in an overlapping window, in one ``UNION``; bound:
    ``unit_ids`` (a list), ``trip_id``, ``window_start``, ``window_end`` and, ``excluding_bid``,
    ``bid_id``."""
    unit_ids = sa.bindparam("unit_ids", expanding=True)
    trip_id = sa.bindparam("trip_id", type_=sa.Integer)
    starts, ends = sa.bindparam("window_start", type_=sa.DateTime), sa.bindparam("window_end", type_=sa.DateTime)
    by_bid = sa.select(TransportBid.unit_id).where(
        TransportBid.unit_id.in_(unit_ids),
        TransportBid.status.in_(("live", "accepted")),
        TransportBid.trip_id != trip_id,
        TransportBid.window_start < ends,
        TransportBid.window_end > starts,
        *([TransportBid.id != sa.bindparam("bid_id", type_=sa.Integer)] if excluding_bid else []),
    )
    by_route = sa.select(EmsRoute.unit_id).where(
        EmsRoute.unit_id.in_(unit_ids),
        EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES),
        EmsRoute.trip_id != trip_id,
        EmsRoute.window_start < ends,
        EmsRoute.window_end > starts,
    )
    return sa.union(by_bid, by_route)


def booked_unit_ids(unit_ids, trip, exclude_bid_id=None):
    """The ids among ``unit_ids`` already bid or booked for a pickup window overlapping
    ``trip``'s: a live or accepted bid on another trip (other than ``exclude_bid_id``), or an
    active route of another trip (a trip the center assigned has a route but no accepted bid).

    Windows overlap when each starts before the other ends (touching windows do not).  The one
    rule both for refusing a bid (:func:`place`, :func:`change`) and for the units a bid form
    offers.  Returns a set of unit ids; one query whatever the number of units (a statement
    built once, :mod:`.statements`).
    """
    unit_ids = list(unit_ids)
    if not unit_ids:
        return set()
    return set(db.session.scalars(_booked_statement(bool(exclude_bid_id)), {
        "unit_ids": unit_ids, "trip_id": trip.id, "window_start": trip.window_start,
        "window_end": trip.window_end, "bid_id": exclude_bid_id}, bind_arguments={"mapper": TransportBid}))


def _check_unit(unit, agency_id, trip, exclude_bid_id=None):
    if unit is None or unit.agency_id != agency_id or not unit.active:
        raise BidRefused("Choose one of your agency's units.", status=400)
    # Two bids of one unit at once: the second waits here for the first to commit, then sees it.
    db.session.execute(sa.select(Unit.id).where(Unit.id == unit.id).with_for_update())
    if LEVEL_RANK[unit.level] < LEVEL_RANK[trip.level_of_care]:
        raise BidRefused(
            f"{unit.number} is {unit.level}; this request needs {trip.level_of_care} or higher.",
            status=400,
        )
    if unit.status in ("on_break", "out_of_service"):
        raise BidRefused(f"{unit.number} is not available ({unit.status.replace('_', ' ')}).")
    if booked_unit_ids([unit.id], trip, exclude_bid_id):
        raise BidRefused(f"{unit.number} is already bid or booked for an overlapping pickup window.")


def place(trip, agency_id, agency_name, agency_levels, unit_id, eta_raw, note, *, actor):
    """Place this agency's one live bid on ``trip``; emit ``bid.placed``.

    Raises :class:`BidRefused`: 404 (not visible to the agency), 403 (agency
    deactivated), 400 (bad ETA or unit), 409 (closed, past deadline, already bid).
    """
    now = utcnow()
    _check_trip_open(trip, agency_id, agency_levels, now)
    check_agency_active(agency_id)
    eta = validate_eta(eta_raw)
    if live_bid(trip.id, agency_id) is not None:
        raise BidRefused("Your agency already has a bid on this request; change it instead.")
    unit = db.session.get(Unit, unit_id) if unit_id else None
    _check_unit(unit, agency_id, trip)
    bid = TransportBid(
        trip_id=trip.id, hospital_id=trip.hospital_id, agency_id=agency_id, unit_id=unit.id,
        eta_minutes=eta, note=(note or "").strip()[:200], status="live",
        window_start=trip.window_start, window_end=trip.window_end,
        created_by_user_id=actor.user_id, created_at=now, updated_at=now,
    )
    db.session.add(bid)
    try:
        db.session.flush()
    except IntegrityError:
        db.session.rollback()
        raise BidRefused("Your agency already has a bid on this request; change it instead.") from None
    emit("ems", "bid.placed", "bid", bid.public_id, bid_payload(bid, agency_name), actor=actor)
    return bid


def place_pair(outbound, return_leg, agency_id, agency_name, agency_levels, outbound_unit_id, outbound_eta,
               return_unit_id, return_eta, note, *, actor):
    """Bid on a request and its return leg as a pair: two bids, each checked on its own rules
    (:func:`place`), placed together or not at all (a refusal of either raises, naming the
    leg, and the caller rolls back).  Returns ``(outbound bid, return bid)``.  Raises
    :class:`BidRefused` as :func:`place`, and 400 when ``return_leg`` is not ``outbound``'s
    return."""
    if return_leg is None or return_leg.return_of_id != outbound.id:
        raise BidRefused("This request has no return leg to bid on.", status=400)
    first = place(outbound, agency_id, agency_name, agency_levels, outbound_unit_id, outbound_eta, note, actor=actor)
    try:
        second = place(return_leg, agency_id, agency_name, agency_levels, return_unit_id, return_eta, note,
                       actor=actor)
    except BidRefused as refused:
        raise BidRefused(f"Return leg {return_leg.reference}: {refused.message} No bid was placed.",
                         status=refused.status if refused.status != 404 else 409) from None
    return first, second


def _still_live(bid, values):
    """Write ``values`` on the bid only if it is still live (one UPDATE), else refuse.

    The award's follow-up may have accepted or declined it since the page was read.
    """
    result = db.session.execute(
        sa.update(TransportBid).where(TransportBid.id == bid.id, TransportBid.status == "live")
        .values(**values).execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise BidRefused("This bid was decided meanwhile (the request was awarded or cancelled).")


def change(bid, trip, agency_id, agency_name, agency_levels, unit_id, eta_raw, note, *, actor):
    """Change this agency's live bid (unit, ETA, note); emit ``bid.changed``."""
    now = utcnow()
    if bid is None or bid.agency_id != agency_id:
        raise BidRefused("No such bid.", status=404)
    if bid.status != "live":
        raise BidRefused("This bid can no longer be changed.")
    _check_trip_open(trip, agency_id, agency_levels, now)
    check_agency_active(agency_id)
    eta = validate_eta(eta_raw)
    unit = db.session.get(Unit, unit_id) if unit_id else None
    if unit is None or unit.id != bid.unit_id:
        _check_unit(unit, agency_id, trip, exclude_bid_id=bid.id)
    _still_live(bid, dict(unit_id=unit.id, eta_minutes=eta, note=(note or "").strip()[:200], updated_at=now))
    db.session.refresh(bid)
    emit("ems", "bid.changed", "bid", bid.public_id, bid_payload(bid, agency_name), actor=actor)
    return bid


def withdraw(bid, trip, agency_id, agency_name, *, actor):
    """Withdraw this agency's live bid while the request is open; emit ``bid.withdrawn``."""
    if bid is None or bid.agency_id != agency_id:
        raise BidRefused("No such bid.", status=404)
    if bid.status != "live":
        raise BidRefused("This bid is no longer live.")
    if trip is not None and trip.status != "open":
        raise BidRefused("The request is no longer open; the bid cannot be withdrawn.")
    now = utcnow()
    _still_live(bid, dict(status="withdrawn", decided_at=now, updated_at=now))
    db.session.refresh(bid)
    emit("ems", "bid.withdrawn", "bid", bid.public_id, bid_payload(bid, agency_name), actor=actor)
    return bid


