"""The EMS open-request board, each unit's day of routes, and the agency's bid history."""
from datetime import timedelta

from flask import abort, render_template, request

from ..auth.routes import roles_required
from ..localtime import local_midnight, local_today
from ..models.base import utcnow
from ..models.vocabulary import BID_OUTCOMES, ROUTE_STATUS_LABELS, URGENCIES
from ..services import bidding, boards, configuration, degraded, ems_reads, oversight, scheduling
from ..services import units as unit_service
from .routes import (
    BOARD_DEFAULT_SORT,
    BOARD_WITHIN,
    HISTORY_FILTERS,
    UPCOMING_SHOWN,
    _agency,
    _local_day,
    _page_or_400,
    _page_size,
    _unit_or_404,
    bp,
    trip_distance,
)

# --- the open-request board ---------------------------------------------------------------


def _board_filters(agency):
    """The board's filters from the query string: ``{"level", "urgency", "within"}``, "" for
    all.  A value the board does not offer (a level the agency does not serve included) aborts
    400 with a message naming the values it does, as the center's board and a bad sort do."""
    offered = {
        "level": ("Level of care", tuple(bidding.servable_levels(agency.level_list))),
        "urgency": ("Urgency", tuple(URGENCIES)),
        "within": ("Pickup within", tuple(key for key in BOARD_WITHIN if key)),
    }
    filters = {}
    for name, (label, values) in offered.items():
        value = request.args.get(name, "")
        if value and value not in values:
            abort(400, f"{label}: not a valid choice. Choose one of {', '.join(values)}, or none for all.")
        filters[name] = value
    return filters


def _pickup_before(within, now):
    """The latest pickup start the time filter keeps, as naive UTC (None: any time)."""
    if within == "today":
        return local_midnight(local_today(now) + timedelta(days=1))
    if within:
        return now + timedelta(hours=int(within))
    return None


def _board_view():
    """Sort and page from the query string (:mod:`dashboard.services.boards`): a sort the board
    does not offer aborts 400 with a message; a page no pager shows is the first."""
    try:
        sort = boards.sort_from(request.args.get("sort"), BOARD_DEFAULT_SORT)
    except boards.BoardQueryRefused as refused:
        abort(refused.status, refused.message)
    return sort, boards.page_from(request.args.get("page"))


def _board_context():
    agency = _agency()
    now = utcnow()
    filters = _board_filters(agency)
    sort, page = _board_view()
    risk = None
    if sort.removeprefix("-") == "risk":
        risk = oversight.risk_condition(now, configuration.get_all())
    bids = bidding.agency_live_bids(agency.id)
    open_trips, shown, upcoming = bidding.board_page(
        agency.id, agency.level_list, sort, page, risk, UPCOMING_SHOWN, level=filters["level"] or None,
        urgency=filters["urgency"] or None, pickup_before=_pickup_before(filters["within"], now),
        now=now, live_bid_trip_ids=bids.keys())
    rows = [{"trip": trip, "distance_km": trip_distance(trip), "bid": bids.get(trip.id),
             "bidding_open": trip.bid_deadline > now} for trip in open_trips]
    view = dict(filters, sort=sort, page=shown.number)

    def link_args(**changes):
        """The board's query arguments with ``changes`` applied, defaults left out."""
        args = dict(view, **changes)
        return {key: value for key, value in args.items()
                if value and not (key == "sort" and value == BOARD_DEFAULT_SORT)
                and not (key == "page" and value == 1)}

    return {"rows": rows, "upcoming_count": boards.count_label(upcoming, UPCOMING_SHOWN),
            "upcoming_args": {"level": filters["level"]} if filters["level"] else {},
            "filters": filters, "now": now, "sort": sort,
            "sorts": boards.SORTS, "page": shown, "link_args": link_args,
            "levels": bidding.servable_levels(agency.level_list), "within_choices": BOARD_WITHIN,
            "panel_args": link_args()}


@bp.route("/")
@roles_required("ems")
def board():
    """Open requests this agency may serve, live.

    Refuses: 403 a user without an agency; 400 a filter or sort the board does not offer."""
    return render_template("ems/board.html", live=True, **_board_context())


@bp.route("/board/panel")
@roles_required("ems")
def board_panel():
    """The board's table alone, for the live refresh.

    Refuses: 403 a user without an agency; 400 a filter or sort the board does not offer."""
    return render_template("ems/_board_panel.html", partial=True, **_board_context())


@bp.route("/board/upcoming")
@roles_required("ems")
def upcoming_panel():
    """The board's upcoming requests (booked ahead, bidding not open yet), the
    ``UPCOMING_SHOWN`` soonest to open, of the board's level filter: the table alone for the
    board's fold (htmx), a page of its own otherwise.

    Refuses: 403 a user without an agency (or not EMS); 400 a filter the board does not offer."""
    agency = _agency()
    level = _board_filters(agency)["level"]
    upcoming = [{"trip": trip, "distance_km": trip_distance(trip)}
                for trip in scheduling.upcoming_requests(agency.id, agency.level_list, limit=UPCOMING_SHOWN,
                                                         level=level or None)]
    template = "ems/_upcoming_panel.html" if request.headers.get("HX-Request") else "ems/upcoming.html"
    return render_template(template, upcoming=upcoming, shown=UPCOMING_SHOWN,
                           upcoming_args={"level": level} if level else {}, live=True)


# --- routes: each unit's day ---------------------------------------------------------------

@bp.route("/routes")
@roles_required("ems")
def routes():
    """Each unit's trips of the day in order, the empty kilometres between them, and what
    open requests would chain well after the last one.

    Refuses: 403 a user without an agency; 404 another agency's unit; 400 a malformed day or
    one too far from today."""
    agency = _agency()
    now = utcnow()
    day, starts, ends = _local_day(request.args.get("date"))
    all_units = unit_service.agency_units(agency.id)
    chosen = _unit_or_404(request.args["unit"]) if request.args.get("unit") else None
    day_routes = unit_service.day_routes(agency.id, starts, ends, chosen.id if chosen else None)
    by_unit = {}
    for route in day_routes:
        by_unit.setdefault(route.unit_id, []).append(route)
    shown = [chosen] if chosen else [unit for unit in all_units if unit.id in by_unit]
    # Open requests to chain after a unit's last stop (hospital silo): none while it is down.
    open_trips = degraded.optional(
        "hospital", lambda: bidding.open_requests(agency.id, agency.level_list, now=now), []) if by_unit else []
    bids = bidding.live_bids_by_trip(agency.id, [trip.id for trip in open_trips])
    plans = []
    for unit in shown:
        stops = unit_service.stops_with_deadhead(unit, by_unit.get(unit.id, []))
        last = stops[-1]["route"] if stops else None
        plans.append({
            "unit": unit, "stops": stops,
            "deadhead_total": round(sum(s["deadhead_km"] or 0 for s in stops), 1),
            "suggestions": unit_service.chain_suggestions(unit, last, open_trips, now),
        })
    return render_template(
        "ems/routes.html", day=day, plans=plans, units=all_units, chosen=chosen, bids=bids,
        route_status_labels=ROUTE_STATUS_LABELS, chain_radius_km=unit_service.CHAIN_RADIUS_KM,
        previous_day=day - timedelta(days=1), next_day=day + timedelta(days=1))


# --- bid history -----------------------------------------------------------------------------

@bp.route("/history")
@roles_required("ems")
def history():
    """The agency's bids, newest first, with how each ended.

    Keyset pages (:mod:`dashboard.services.paging`): ``?after=<cursor>`` continues after the
    last bid of the page before in (placed, id) order, so a page costs the same on the first
    day and after years of bids (no OFFSET, no count).

    Refuses: 403 a user without an agency; 400 a page cursor this list did not make.
    """
    agency = _agency()
    outcome = request.args.get("outcome") if request.args.get("outcome") in HISTORY_FILTERS else ""
    after = request.args.get("after") or None
    page = _page_or_400(lambda: ems_reads.bid_history(agency.id, outcome, after, size=_page_size()))
    bids = page.rows
    by_id = degraded.optional(
        "hospital", lambda: ems_reads.trip_summaries(bid.trip_id for bid in bids), {}) if bids else {}
    return render_template("ems/history.html", bids=bids, trips_by_id=by_id, outcome=outcome,
                           outcomes=BID_OUTCOMES, filters=HISTORY_FILTERS, paged=bool(after),
                           next_after=page.after)
