"""What the transport center watches: the regional board (its risk rule in Python and in SQL) and
one request in full.  The units overview is :mod:`.units_overview`, the silos' health
:mod:`.silo_health`.

Reads only.  Trips come from the hospital silo, units and bids from the EMS
silo, names from the center registry; every cross-silo lookup is one batched
query (no query per row).
"""
from dataclasses import dataclass, field
from datetime import UTC, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import aliased, joinedload
from sqlalchemy.orm.attributes import set_committed_value

from ..extensions import db
from ..localtime import local_zone
from ..models.base import utcnow
from ..models.center import Hospital
from ..models.ems import EmsRoute, TransportBid, Unit
from ..models.hospital import WEEKDAYS, HospitalFacility, TransportRequest
from ..models.vocabulary import (
    ACTIVE_STATUSES,
    BIDDING_OPENED,
    LEVEL_RANK,
    LEVELS,
    dispatch_condition,
    trip_dispatch_state,
)
from . import boards, center_reads, configuration, degraded, lateness, statements
from .bidding import ACTIVE_ROUTE_STATUSES

BOARD_STATES = {
    "open": "Open",
    "active": "Awarded / in progress",
    "closed": "Recently completed or cancelled",
}
CLOSED_STATUSES = ("completed", "cancelled")
#: At most this many requests per board group; the board says when it shows fewer than exist.
GROUP_LIMIT = 300
#: The unfiltered board shows only the latest closed requests (with their true count and a
#: link to all of them): coordinators watch what is open and moving, and a busy region
#: closes a few hundred trips a day.
CLOSED_PREVIEW = 25
#: Before the pickup window runs out the crew must be at the pickup.
BEFORE_PICKUP = ("open", "awarded", "en_route")
#: Units that may take a center assignment.
ASSIGNABLE_UNIT_STATUSES = ("available", "assigned")
#: The regional board's open group: at risk first.
DEFAULT_SORT = "risk"


@dataclass
class BoardFilters:
    """The board's filters; None means "all"."""

    hospital_id: int | None = None
    agency_id: int | None = None
    level: str | None = None
    urgency: str | None = None
    state: str | None = None
    risk_only: bool = False
    #: The open group's order (a :data:`boards.SORTS` key) and page.
    sort: str = DEFAULT_SORT
    page: int = 1

    def as_args(self, **changes):
        """The filters, sort and page as query-string arguments (for the panel URL and links),
        with ``changes`` applied; defaults are left out."""
        values = dict(hospital=self.hospital_id, agency=self.agency_id, level=self.level,
                      urgency=self.urgency, state=self.state, risk="y" if self.risk_only else None,
                      sort=self.sort, page=self.page)
        values.update(changes)
        if values["sort"] == DEFAULT_SORT:
            values["sort"] = None
        if values["page"] == 1:
            values["page"] = None
        return {key: value for key, value in values.items() if value not in (None, "")}

    @property
    def narrowed(self):
        """Whether any filter (not the order or the page) leaves requests out."""
        return bool(self.as_args(sort=DEFAULT_SORT, page=1))


@dataclass
class BoardRow:
    """One request on the regional board.

    ``trip`` is a row of :data:`_BOARD_COLUMNS` (read like a ``TransportRequest``: ``id``,
    ``public_id``, ``reference``, ``status``... plus ``origin_name`` and ``destination_label``);
    ``marks`` its :func:`risk_marks`; ``window`` its pickup window in the region's local time
    (``"Wed 04:06–05:06"``)."""

    trip: object
    hospital: Hospital | None
    marks: list = field(default_factory=list)
    window: str = ""

    @property
    def at_risk(self):
        return bool(self.marks)


def risk_marks(trip, now, settings, agencies=None, bounds=None):
    """The reasons a request needs the center's eye, as ``[(code, label)]``.

    ``trip`` is a ``TransportRequest`` or a row with its columns (the board's); ``bounds`` the
    crew bounds of :func:`dashboard.services.lateness.crew_bounds` (read from the configuration
    when not given: a board passes them once for all its rows).

    * ``reassign``: awarded (not yet completed) to an agency since deactivated in the
      registry (``agencies``: ``{agency id: Agency}``): the center re-opens or reassigns it;

    * ``awaiting_award``: open, past its bidding deadline, holding live bids (award one);
    * ``unfilled``: open, past its bidding deadline, with no live bid (flagged or not yet
      swept); both by :func:`dashboard.models.vocabulary.dispatch_state`;
    * ``no_bids``: open with no bids ``risk_no_bids_minutes`` after its bidding opened (an
      upcoming request, booked ahead and not open for bids yet, is never at risk);
    * ``late``: past its pickup window, or a crew late on a step (the rule of
      :mod:`dashboard.services.lateness`, the one the crew and the hospital see);
    * ``pickup``: not late yet, and the pickup window ends within ``risk_pickup_window_minutes``
      with no crew at the pickup yet;
    * ``emergent``: an emergent request not yet completed or cancelled.
    """
    marks = []
    status = trip.status
    awarded_to = (agencies or {}).get(trip.awarded_agency_id) if status in ACTIVE_STATUSES else None
    if awarded_to is not None and not awarded_to.active:
        marks.append(("reassign", f"{awarded_to.name} deactivated: reassign"))
    # The model's own rules, applied to an ORM object or a row alike.
    waiting = _WILL_CALL_WAITING(trip)
    if status == "open":
        state = trip_dispatch_state(trip, now)
        if state == "awaiting_award":
            marks.append(("awaiting_award", f"Bidding closed: award one of {trip.bid_count} "
                                            f"bid{'s' if trip.bid_count != 1 else ''}"))
        elif state == "unfilled":
            marks.append(("unfilled", "Deadline passed unfilled"))
        waited = now - _BIDDING_START(trip)  # booked ahead: from the opening; upcoming: none yet
        if state not in ("upcoming", "will_call_waiting") and not trip.bid_count \
                and waited >= timedelta(minutes=settings["risk_no_bids_minutes"]):
            marks.append(("no_bids", f"No bids after {int(waited.total_seconds() // 60)} min"))
    if waiting:
        pass  # waits for the patient: no window yet, nothing at risk
    else:
        late = lateness.late(status, trip.window_start, trip.window_end, now,
                             at_pickup_at=trip.at_pickup_at, transporting_at=trip.transporting_at,
                             **(bounds if bounds is not None else lateness.crew_bounds()))
        if late is not None:
            marks.append(("late", late.label))
        elif status in BEFORE_PICKUP:
            left = trip.window_end - now
            if left <= timedelta(minutes=settings["risk_pickup_window_minutes"]):
                marks.append(("pickup", f"Pickup window ends in {int(left.total_seconds() // 60)} min"))
    if trip.urgency == "emergent" and status not in CLOSED_STATUSES:
        marks.append(("emergent", "Emergent"))
    return marks


_WILL_CALL_WAITING = TransportRequest.will_call_waiting.fget
_BIDDING_START = TransportRequest.bidding_start.fget


def risk_condition(now, settings, deactivated_agency_ids=()):
    """The SQL twin of :func:`risk_marks`: true for a request it would mark at ``now``.

    ``settings`` holds ``risk_no_bids_minutes`` and ``risk_pickup_window_minutes``;
    ``deactivated_agency_ids`` the registry's deactivated agencies (the ``reassign`` mark).
    Used to count, filter and order the boards' rows in SQL ("at risk first"); a test holds
    it to :func:`risk_marks` over every kind of mark."""
    bounds = lateness.crew_bounds()
    return _risk_clause(now, _risk_instants(now, settings, bounds), sorted(deactivated_agency_ids) or None)


def _risk_instants(now, settings, bounds):
    """The instants :func:`_risk_clause` compares with at ``now`` (naive UTC; None: that rule
    is turned off by its crew bound)."""
    return {
        "no_bids_before": now - timedelta(minutes=settings["risk_no_bids_minutes"]),
        "pickup_before": now + timedelta(minutes=settings["risk_pickup_window_minutes"]),
        "en_route_by": now + (bounds["en_route_lead"] or timedelta(0)),
        "at_pickup_before": now - bounds["at_pickup_max"] if bounds["at_pickup_max"] else None,
        "transport_before": now - bounds["transport_max"] if bounds["transport_max"] else None,
    }


def _risk_clause(now, at, deactivated):
    """:func:`risk_condition` from ``now``, the instants of :func:`_risk_instants` and the
    deactivated agencies' ids (None: none); each a value, or a bind parameter given when a
    cached statement runs."""
    T = TransportRequest
    # A will-call return waiting for its patient, or one booked ahead before its bidding
    # opens, is neither unfilled nor short of bids; the former is never late either.
    waiting = sa.and_(T.will_call.is_(True), T.released_at.is_(None))
    started = sa.func.coalesce(T.bidding_opens_at, T.released_at, T.created_at)
    conditions = [
        # awaiting_award and unfilled (dispatch_state): open, the bidding deadline reached
        dispatch_condition(T, ("awaiting_award", "unfilled"), now),
        # no_bids: counted from when bidding opened
        sa.and_(dispatch_condition(T, BIDDING_OPENED, now), T.bid_count == 0, started <= at["no_bids_before"]),
        # late (services/lateness.py, with the configured crew bounds)
        sa.and_(T.status.in_(("awarded", "en_route")), T.window_end <= now),
        sa.and_(T.status == "awarded", T.window_start <= at["en_route_by"]),
        sa.and_(T.status == "open", sa.not_(waiting), T.window_end <= now),
        # pickup
        sa.and_(T.status.in_(BEFORE_PICKUP), sa.not_(sa.and_(T.status == "open", waiting)),
                T.window_end <= at["pickup_before"]),
        # emergent
        sa.and_(T.urgency == "emergent", T.status.not_in(CLOSED_STATUSES)),
    ]
    if at["at_pickup_before"] is not None:
        conditions.append(sa.and_(T.status == "at_pickup", T.at_pickup_at <= at["at_pickup_before"]))
    if at["transport_before"] is not None:
        conditions.append(sa.and_(T.status == "transporting", T.transporting_at <= at["transport_before"]))
    if deactivated is not None:
        conditions.append(sa.and_(T.status.in_(ACTIVE_STATUSES), T.awarded_agency_id.in_(deactivated)))
    return sa.or_(*conditions)


def deactivated_agency_ids(agencies):
    """The ids of the registry's deactivated agencies (``{id: entry}`` of :func:`registry_names`)."""
    return {agency_id for agency_id, agency in agencies.items() if not agency.active}


registry_names = center_reads.registry_names


def _group_condition(state, since, now=None):
    if state == "open":
        # Booked ahead and not open for bids yet, or a will-call waiting for its patient: nothing
        # for the center to act on, so not on the board (the hospital's and agencies' lists have them).
        return dispatch_condition(TransportRequest, BIDDING_OPENED, now)
    if state == "active":
        return TransportRequest.status.in_(ACTIVE_STATUSES)
    return sa.or_(
        sa.and_(TransportRequest.status == "completed", TransportRequest.completed_at >= since),
        sa.and_(TransportRequest.status == "cancelled", TransportRequest.cancelled_at >= since),
    )


def _group_order(state):
    if state == "open":
        return (TransportRequest.created_at,)
    if state == "active":
        return (TransportRequest.window_start,)
    return (sa.func.coalesce(TransportRequest.completed_at, TransportRequest.cancelled_at).desc(),)


def _Given(key):
    """A time given when a cached statement runs (a :class:`statements.Bound` named ``key``)."""
    return statements.Bound(key, sa.DateTime)


_Origin = aliased(HospitalFacility, name="origin_facility")
_Destination = aliased(HospitalFacility, name="destination_facility")
#: What the regional board reads of each request (a row read like a ``TransportRequest``):
#: what its table shows and what :func:`risk_marks` reads.
_BOARD_COLUMNS = (
    TransportRequest.id, TransportRequest.public_id, TransportRequest.reference,
    TransportRequest.hospital_id, TransportRequest.status, TransportRequest.level_of_care,
    TransportRequest.urgency, TransportRequest.care_override_reason,
    TransportRequest.window_start, TransportRequest.window_end, TransportRequest.created_at,
    TransportRequest.bid_count, TransportRequest.best_eta_minutes, TransportRequest.bid_deadline,
    TransportRequest.bidding_opens_at, TransportRequest.will_call, TransportRequest.released_at,
    TransportRequest.at_pickup_at, TransportRequest.transporting_at,
    TransportRequest.awarded_agency_id, TransportRequest.awarded_agency_name,
    TransportRequest.awarded_unit_label, TransportRequest.award_source,
    _Origin.name.label("origin_name"),
    # TransportRequest.destination_label: the destination facility's name, else the address
    sa.case((_Destination.id.is_not(None), _Destination.name),
            else_=TransportRequest.destination_address).label("destination_label"),
)


def _board_shape(filters, states, at, deactivated):
    """What decides the board's statements' SQL (not their values)."""
    return (tuple(states), bool(filters.hospital_id), bool(filters.agency_id), bool(filters.level),
            bool(filters.urgency), bool(filters.risk_only), filters.sort,
            at["at_pickup_before"] is not None, at["transport_before"] is not None, bool(deactivated))


@statements.built_once
def _board_statements_of(shape):
    """``(counts, {state: rows})``: the board's statements of ``shape`` (see :func:`board`),
    built once per shape.  The shapes are few and bounded (the states, which filters are set,
    the sort offered, which crew bounds are on, whether any agency is deactivated); the values
    of a view (its time, filters, settings, page) are bound when the statements run."""
    (states, by_hospital, by_agency, by_level, by_urgency, risk_only, sort,
     at_pickup_rule, transport_rule, any_deactivated) = shape
    T = TransportRequest
    now, since = _Given("now"), _Given("since")
    at = {"no_bids_before": _Given("no_bids_before"), "pickup_before": _Given("pickup_before"),
          "en_route_by": _Given("en_route_by"),
          "at_pickup_before": _Given("at_pickup_before") if at_pickup_rule else None,
          "transport_before": _Given("transport_before") if transport_rule else None}
    at_risk = _risk_clause(now, at, sa.bindparam("deactivated", expanding=True) if any_deactivated else None)
    conditions = []
    if by_hospital:
        conditions.append(T.hospital_id == sa.bindparam("hospital_id"))
    if by_agency:
        conditions.append(T.awarded_agency_id == sa.bindparam("agency_id"))
    if by_level:
        conditions.append(T.level_of_care == sa.bindparam("level"))
    if by_urgency:
        conditions.append(T.urgency == sa.bindparam("urgency"))
    if risk_only:
        conditions.append(at_risk)
    groups = {state: _group_condition(state, since, now) for state in states}
    # One statement counts every group and the requests at risk among the open and active ones.
    watched = [groups[state] for state in ("open", "active") if state in groups]
    counts = sa.select(
        *(sa.func.count(sa.case((condition, 1))).label(state) for state, condition in groups.items()),
        (sa.func.count(sa.case((sa.and_(sa.or_(*watched), at_risk), 1))) if watched
         else sa.literal(0)).label("at_risk"),
    ).select_from(T).where(*conditions, sa.or_(*groups.values()))
    rows = {}
    for state, condition in groups.items():
        order = boards.order_by(sort, at_risk) if state == "open" else (*_group_order(state), T.id)
        rows[state] = (
            sa.select(*_BOARD_COLUMNS).select_from(T)
            .outerjoin(_Origin, _Origin.id == T.origin_facility_id)
            .outerjoin(_Destination, _Destination.id == T.destination_facility_id)
            .where(condition, *conditions).order_by(*order)
            .limit(sa.bindparam("row_limit", type_=sa.Integer))
            .offset(sa.bindparam("row_offset", type_=sa.Integer)))
    return counts, rows


def board(filters, now=None):
    """The regional board: every hospital's requests grouped by state, at-risk ones marked.

    The open group is one page (:data:`boards.PAGE_SIZE` rows) in the order ``filters.sort``
    names (at risk first by default), counted, ordered and cut in SQL; the others show at most
    :data:`GROUP_LIMIT` (the closed ones, unfiltered, a preview of :data:`CLOSED_PREVIEW`).
    ``filters.risk_only`` keeps the rows :func:`risk_condition` marks, in SQL.

    Returns ``{"groups": {state: [BoardRow]}, "truncated": {state: bool}, "counts": {...},
    "settings": {...}, "hospitals": {...}, "agencies": {...}, "previewed": {state},
    "open_page": boards.Page | None, "sorts": {...}}``; ``previewed`` names the groups cut to a
    preview, whose ``counts`` are their true totals (the open group's count is its total too).

    Statements: one counting the groups, one per group for its rows (the origin and destination
    names joined), whatever the number of rows; each is built once per shape of the filters and
    run with this view's values bound (:func:`_board_statements_of`).
    """
    now = now or utcnow()
    settings = configuration.get_all()
    hospitals, agencies = registry_names()
    bounds = lateness.crew_bounds()
    at = _risk_instants(now, settings, bounds)
    deactivated = sorted(deactivated_agency_ids(agencies))
    states = [filters.state] if filters.state else list(BOARD_STATES)
    count_statement, row_statements = _board_statements_of(_board_shape(filters, states, at, deactivated))
    values = {"now": now, "since": now - timedelta(hours=settings["board_recent_hours"]),
              **{key: value for key, value in at.items() if value is not None}}
    if deactivated:
        values["deactivated"] = deactivated
    for key, value in (("hospital_id", filters.hospital_id), ("agency_id", filters.agency_id),
                       ("level", filters.level), ("urgency", filters.urgency)):
        if value:
            values[key] = value
    # Plain rows, no ORM entities: run on the hospital silo's connection of this session.
    connection = db.session.connection(bind_arguments={"mapper": TransportRequest})
    totals_found = connection.execute(count_statement, values).one()._mapping
    zone = local_zone()
    groups, truncated, totals = {}, {}, {}
    open_page = None
    for state in states:
        if state == "open":
            open_page = boards.page_of(filters.page, totals_found["open"])
            limit, offset = open_page.size, open_page.offset
            totals[state] = open_page.total
        else:
            limit, offset = (CLOSED_PREVIEW if state == "closed" and not filters.state else GROUP_LIMIT), 0
        # A group but the open one reads one row more than it shows: whether it was cut.
        read = limit if state == "open" else limit + 1
        rows = statements.plain_rows(connection.execute(row_statements[state],
                                                        {**values, "row_limit": read, "row_offset": offset}))
        if state != "open":
            truncated[state] = len(rows) > limit
            rows = rows[:limit]
            if truncated[state] and limit == CLOSED_PREVIEW:
                totals[state] = totals_found[state]
        else:
            truncated[state] = False
        groups[state] = [
            BoardRow(trip, hospitals.get(trip.hospital_id), risk_marks(trip, now, settings, agencies, bounds),
                     _window_text(trip.window_start, trip.window_end, zone))
            for trip in rows]
    counts = {state: totals.get(state, len(rows)) for state, rows in groups.items()}
    counts["at_risk"] = totals_found["at_risk"]
    return {"groups": groups, "truncated": truncated, "counts": counts, "settings": settings,
            "hospitals": hospitals, "agencies": agencies, "now": now, "state_labels": BOARD_STATES,
            "group_limit": GROUP_LIMIT, "previewed": set(totals) - {"open"}, "open_page": open_page,
            "sorts": boards.SORTS}


def _window_text(start, end, zone):
    """A pickup window (naive UTC) as the board shows it in ``zone``: ``"Wed 04:06–05:06"``.

    Formatted from the local times' fields (a board formats one per row; ``strftime`` took
    twice as long, and its ``%a`` would follow the server's locale)."""
    first = start.replace(tzinfo=UTC).astimezone(zone)
    last = end.replace(tzinfo=UTC).astimezone(zone)
    return (f"{WEEKDAYS[first.weekday()]} {first.hour:02d}:{first.minute:02d}–"
            f"{last.hour:02d}:{last.minute:02d}")


# --- one request -------------------------------------------------------------------------

def request_view(trip):
    """Everything the center's request page shows: hospital, history, bids, assignable units.

    ``bids`` is None while the EMS silo cannot be reached (the page says so).
    """
    hospitals, agencies = registry_names()
    bids = degraded.optional("ems", lambda: list(db.session.scalars(
        sa.select(TransportBid).where(TransportBid.trip_id == trip.id)
        .options(joinedload(TransportBid.unit))
        .order_by(TransportBid.status != "live", TransportBid.eta_minutes, TransportBid.created_at)
    ).unique()))
    # The pickup and destination facilities in one statement, not one lazy load each.
    facilities = {facility.id: facility for facility in db.session.scalars(
        sa.select(HospitalFacility).where(HospitalFacility.id.in_(
            {trip.origin_facility_id, trip.destination_facility_id} - {None})))}
    for relation, key in (("origin", trip.origin_facility_id), ("destination", trip.destination_facility_id)):
        set_committed_value(trip, relation, facilities.get(key))
    return {
        "trip": trip,
        "hospital": hospitals.get(trip.hospital_id),
        "history": list(trip.history),
        "bids": bids,
        "agencies": agencies,
    }


def assignable_units(trip):
    """Active units of a sufficient level, not on break or out of service, of active agencies.

    Returns ``[(agency entry, [unit])]`` in agency order; each unit is a row of ``id``,
    ``agency_id``, ``number``, ``level`` and ``status`` (read as columns, not ORM objects: the
    picker lists hundreds of units in a large region).
    """
    _hospitals, agencies = registry_names()
    levels = [lv for lv in LEVELS if LEVEL_RANK[lv] >= LEVEL_RANK[trip.level_of_care]]
    units = db.session.execute(
        sa.select(Unit.id, Unit.agency_id, Unit.number, Unit.level, Unit.status).where(Unit.active.is_(True), Unit.level.in_(levels),
                              Unit.status.in_(ASSIGNABLE_UNIT_STATUSES))
        .order_by(Unit.agency_id, Unit.number)
    )
    grouped = {}
    for unit in units:
        agency = agencies.get(unit.agency_id)
        if agency is not None and agency.active:
            grouped.setdefault(agency.id, (agency, []))[1].append(unit)
    return sorted(grouped.values(), key=lambda pair: pair[0].name)


def overlapping_route(unit_id, trip):
    """An active route of this unit whose pickup window overlaps the trip's, or None."""
    return db.session.scalar(
        sa.select(EmsRoute).where(
            EmsRoute.unit_id == unit_id,
            EmsRoute.trip_id != trip.id,
            EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES),
            EmsRoute.window_start < trip.window_end,
            EmsRoute.window_end > trip.window_start,
        ).limit(1)
    )
