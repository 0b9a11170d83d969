"""EMS dispatchers and crews: open-request board, bids, trips, units, availability, routes, history.

Everything is scoped to the signed-in user's agency: another agency's bids,
units and trips are not found (404).  Views read the hospital silo, write only
the EMS silo, and commit once per use case; what the hospital must learn
follows through the outbox.
"""
import re
from datetime import date, datetime, time, timedelta
from functools import wraps

import sqlalchemy as sa
from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user
from sqlalchemy.orm import selectinload
from wtforms.fields.choices import SelectChoice

from ..auth.routes import roles_required
from ..extensions import db
from ..localtime import from_local, local_midnight, local_today, to_local
from ..models.base import LEVEL_LABELS, LEVEL_RANK, URGENCIES, utcnow
from ..models.ems import EmsRoute, TransportBid, Unit
from ..models.hospital import TransportRequest
from ..services import (
    bidding,
    boards,
    configuration,
    csvout,
    degraded,
    oversight,
    scheduling,
    session_trust,
    submissions,
    trips,
    users,
)
from ..services import units as unit_service
from ..services.bidding import ACTIVE_ROUTE_STATUSES, BID_OUTCOMES, BidRefused
from ..services.geo import distance_km
from .forms import (
    AdvanceForm,
    AvailabilityForm,
    BidForm,
    CrewAccountForm,
    CrewActiveForm,
    CrewResetForm,
    HandBackForm,
    PairBidForm,
    UnitForm,
    UnitStatusForm,
)

bp = Blueprint("ems", __name__, url_prefix="/ems")

#: The open-request board's order (a ``services.boards.SORTS`` key): emergent first.
BOARD_DEFAULT_SORT = "urgency"
BOARD_WITHIN = {"": "Any time", "2": "Next 2 hours", "4": "Next 4 hours", "8": "Next 8 hours",
                "today": "Today"}
#: A stop's status -> the crew's next step (``trips.CREW_STEPS`` in order).
NEXT_STEP = dict(zip(bidding.ROUTE_ORDER[:-1], trips.CREW_STEPS, strict=True))
STEP_BUTTONS = {"en_route": "En route", "at_pickup": "At pickup", "transporting": "Transporting",
                "at_destination": "At destination", "back_in_service": "Back in service"}
ROUTE_STATUS_LABELS = {"planned": "Planned", "en_route": "En route", "at_pickup": "At pickup",
                       "transporting": "Transporting", "at_destination": "At destination",
                       "completed": "Completed", "handed_back": "Handed back", "cancelled": "Cancelled"}
HISTORY_FILTERS = {"": "All bids", "live": "Live", "accepted": "Won", "declined": "Lost",
                   "withdrawn": "Withdrawn", "ended": "Expired or closed"}
PAGE_SIZE = 25
MAX_PAGE = 100_000
#: The upcoming requests the board lists (soonest opening first): the rest follow as they open.
UPCOMING_SHOWN = 50
#: How far from today the availability and route pages may look.
MAX_DAYS_AWAY = 3 * 366
CSV_COLUMNS = ["trip_reference", "service_date", "unit", "unit_level", "level_of_care", "urgency",
               "pickup_facility", "destination_facility", "window_start", "window_end",
               "en_route_at", "at_pickup_at", "transporting_at", "completed_at"]
BIDDABLE_UNIT_STATUSES = ("available", "assigned")


# --- helpers ------------------------------------------------------------------------------

def _agency():
    """The signed-in dispatcher's agency (the center registry row)."""
    agency = current_user.agency
    if agency is None:
        abort(403)
    return agency


def _page():
    """The page asked for, within what a pager may show (a huge number is page 1)."""
    page = request.args.get("page", 1, type=int) or 1
    return page if 1 <= page <= MAX_PAGE else 1


def _refused(refused, render):
    """Answer a refusal: nothing kept, 404 as not found, anything else shown with its status."""
    db.session.rollback()
    if refused.status == 404:
        abort(404)
    return render(refused.message, refused.status)


def _already_done(message, endpoint, **values):
    """A form sent again (double click, second tab, Back): nothing new, what the first send
    created is shown (303), and the page says so."""
    db.session.rollback()
    flash(message, "info")
    return redirect(url_for(endpoint, **values), 303)


def _local_day(raw):
    """The local day asked for (``YYYY-MM-DD``, default today) and its naive-UTC bounds.

    Aborts 400 with a message for a day that is malformed or more than ``MAX_DAYS_AWAY`` days
    from today."""
    today = local_today()
    raw = (raw or "").strip()
    try:
        day = date.fromisoformat(raw) if re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", raw) else None
    except ValueError:
        day = None
    if raw and day is None:
        abort(400, "Enter the day as YYYY-MM-DD, e.g. 2026-11-25.")
    day = day or today
    if abs((day - today).days) > MAX_DAYS_AWAY:
        abort(400, f"Choose a day within {MAX_DAYS_AWAY // 366} years of today.")
    return day, local_midnight(day), local_midnight(day + timedelta(days=1))


def trip_distance(trip):
    """Kilometres from the trip's pickup facility to its destination, or None."""
    return distance_km(*unit_service.trip_coordinates(trip))


def _trips_by_id(trip_ids):
    if not trip_ids:
        return {}
    return {trip.id: trip for trip in db.session.scalars(
        sa.select(TransportRequest).where(TransportRequest.id.in_(list(trip_ids)))
        .options(selectinload(TransportRequest.origin), selectinload(TransportRequest.destination)))}


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
    open_trips, shown = bidding.open_requests_page(
        agency.id, agency.level_list, sort, page, risk, level=filters["level"] or None,
        urgency=filters["urgency"] or None, pickup_before=_pickup_before(filters["within"], now),
        now=now)
    bids = bidding.live_bids_by_trip(agency.id, [trip.id for trip in open_trips])
    rows = [{"trip": trip, "distance_km": trip_distance(trip), "bid": bids.get(trip.id),
             "bidding_open": trip.bid_deadline > now} for trip in open_trips]
    upcoming = [{"trip": trip, "distance_km": trip_distance(trip)}
                for trip in scheduling.upcoming_requests(agency.id, agency.level_list, limit=UPCOMING_SHOWN,
                                                         level=filters["level"] or None, now=now)]
    view = dict(filters, sort=sort, page=shown.number)

    def link_args(**changes):
        """The board's query arguments with ``changes`` applied, defaults left out."""
        args = dict(view, **changes)
        return {key: value for key, value in args.items()
                if value and not (key == "sort" and value == BOARD_DEFAULT_SORT)
                and not (key == "page" and value == 1)}

    return {"rows": rows, "upcoming": upcoming, "filters": filters, "now": now, "sort": sort,
            "sorts": boards.SORTS, "page": shown, "link_args": link_args,
            "levels": bidding.servable_levels(agency.level_list), "within_choices": BOARD_WITHIN,
            "panel_args": link_args()}


@bp.route("/")
@roles_required("ems")
def board():
    """Open requests this agency may serve, live."""
    return render_template("ems/board.html", live=True, **_board_context())


@bp.route("/board/panel")
@roles_required("ems")
def board_panel():
    """The board's table alone, for the live refresh."""
    return render_template("ems/_board_panel.html", **_board_context())


# --- one request: details and the agency's bid ---------------------------------------------

def _visible_trip(public_id):
    """A trip this agency may see: invited at its level, awarded to it, or bid on by it; else 404."""
    agency = _agency()
    trip = trips.get_by_public_id(public_id)
    if trip is None:
        abort(404)
    if trip.awarded_agency_id == agency.id or trips.agency_may_serve(trip, agency.id, agency.level_list):
        return trip
    has_bid = db.session.scalar(sa.select(TransportBid.id).where(
        TransportBid.trip_id == trip.id, TransportBid.agency_id == agency.id).limit(1))
    if has_bid is None:
        abort(404)
    return trip


def _fill_unit_choices(form, trip, agency_id, bid=None):
    """Offer the agency's units the server would accept for this trip: active, of its level of
    care or higher, not on break or out of service, and not bid or booked for an overlapping
    pickup window (:func:`..services.bidding.booked_unit_ids`, the check a bid must pass).
    The unit of ``bid`` (the agency's live bid, being changed) is always offered: keeping it
    is not checked again.  Returns (units offered, units left out as booked)."""
    fit = [unit for unit in unit_service.agency_units(agency_id)
           if unit.active and LEVEL_RANK[unit.level] >= LEVEL_RANK[trip.level_of_care]
           and unit.status in BIDDABLE_UNIT_STATUSES]
    booked = bidding.booked_unit_ids([unit.id for unit in fit], trip, bid.id if bid else None)
    keep = bid.unit_id if bid is not None else None
    units = [unit for unit in fit if unit.id == keep or unit.id not in booked]
    if keep is not None and all(unit.id != keep for unit in units) and bid.unit is not None:
        units.insert(0, bid.unit)
    form.unit.choices = [SelectChoice("", "Choose a unit")] + [
        SelectChoice(unit.public_id, f"{unit.number} ({unit.level}, {unit.status.replace('_', ' ')})")
        for unit in units]
    return units, [unit for unit in fit if unit.id in booked and unit.id != keep]


def _request_context(trip, form=None):
    """What the request page and its live panel show: the trip, this agency's bid on it, the
    bid form with the units it may offer."""
    agency = _agency()
    now = utcnow()
    bid = bidding.live_bid(trip.id, agency.id)
    if form is None:
        form = BidForm(formdata=None)
        if bid is not None:
            form.unit.data = bid.unit.public_id
            form.eta_minutes.data = str(bid.eta_minutes)
            form.note.data = bid.note
    units, booked = _fill_unit_choices(form, trip, agency.id, bid)
    earlier = list(db.session.scalars(
        sa.select(TransportBid).where(TransportBid.trip_id == trip.id,
                                      TransportBid.agency_id == agency.id,
                                      TransportBid.status != "live")
        .order_by(TransportBid.created_at.desc()).options(selectinload(TransportBid.unit))))
    ours = trip.awarded_agency_id == agency.id
    route = bidding.route_for(trip.id, agency.id) if ours else None
    return dict(
        trip=trip, bid=bid, form=form, units=units, booked_units=booked,
        earlier_bids=earlier, outcomes=BID_OUTCOMES, distance_km=trip_distance(trip), route=route,
        ours=ours, now=now,
        bidding_open=trip.status == "open" and trip.bid_deadline > now and not trip.will_call_waiting
        and (trip.bidding_opens_at is None or trip.bidding_opens_at <= now),
        pair=_pair_context(trip, agency.id, bid, now),
        upcoming=trip.status == "open" and trip.bidding_opens_at is not None and trip.bidding_opens_at > now,
        route_status_labels=ROUTE_STATUS_LABELS,
    )


def _pair_context(trip, agency_id, bid, now):
    """The pair bid offer: the return leg and the units for each, when both legs take bids and
    the agency has a bid on neither; else None."""
    leg = trip.return_leg
    if leg is None or bid is not None or trip.status != "open" or leg.status != "open":
        return None
    if any(t.will_call_waiting or (t.bidding_opens_at and t.bidding_opens_at > now) or t.bid_deadline <= now
           for t in (trip, leg)):
        return None
    if bidding.live_bid(leg.id, agency_id) is not None:
        return None
    form = PairBidForm(formdata=None, prefix="pair")
    units, _booked = _fill_unit_choices(form, trip, agency_id)
    leg_units, _booked = _fill_unit_choices(BidForm(formdata=None), leg, agency_id)
    form.return_unit.choices = [SelectChoice("", "Choose a unit")] + [
        SelectChoice(u.public_id, f"{u.number} ({u.level})") for u in leg_units]
    return {"leg": leg, "form": form} if units and leg_units else None


def _render_request(trip, form=None, error=None, status=200):
    return render_template("ems/request.html", live=True, error=error,
                           **_request_context(trip, form)), status


@bp.route("/requests/<public_id>")
@roles_required("ems")
def request_detail(public_id):
    """A request's operational details and this agency's bid on it."""
    return _render_request(_visible_trip(public_id))


@bp.route("/requests/<public_id>/panel")
@roles_required("ems")
def request_panel(public_id):
    """The request's state and this agency's bid alone, for the live refresh: a request awarded
    to another agency, cancelled or closed for bids shows so without a reload."""
    return render_template("ems/_request_panel.html", **_request_context(_visible_trip(public_id)))


def _unit_id_for_bid(public_id):
    """The unit a bid form names (any agency's: the service says clearly when it is not ours)."""
    return db.session.scalar(sa.select(Unit.id).where(Unit.public_id == str(public_id or "")))


@bp.route("/requests/<public_id>/bid", methods=["POST"])
@roles_required("ems")
def place_bid(public_id):
    """Place this agency's bid: a unit and an ETA to pickup."""
    trip = _visible_trip(public_id)
    agency = _agency()
    agency_id, agency_name, levels = agency.id, agency.name, agency.level_list
    form = BidForm()
    _fill_unit_choices(form, trip, agency_id)
    user_id = current_user.id
    if submissions.previous("ems", form.submission_id.data, "bid", user_id) is not None:
        return _already_done("This bid was already placed; here it is.", "ems.request_detail",
                             public_id=public_id)
    if not form.validate_on_submit():
        return _render_request(trip, form, "Check the highlighted fields; no bid was placed.", 400)
    try:
        claim = submissions.claim("ems", form.submission_id.data, "bid", user_id)
        if claim.repeat:
            return _already_done("This bid was already placed; here it is.", "ems.request_detail",
                                 public_id=public_id)
        bid = bidding.place(trip, agency_id, agency_name, levels, _unit_id_for_bid(form.unit.data),
                            form.eta_minutes.data, form.note.data, user_id)
        claim.created(bid.public_id)
    except (BidRefused, submissions.SubmissionRefused) as refused:
        return _refused(refused, lambda message, status: _render_request(
            trips.get_by_public_id(public_id), form, message, status))
    message = f"Bid placed: {bid.unit.number}, ETA {bid.eta_minutes} min."
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("ems.request_detail", public_id=public_id))


@bp.route("/requests/<public_id>/bid-pair", methods=["POST"])
@roles_required("ems")
def place_pair_bid(public_id):
    """Bid on a request and its return leg as a pair (two bids, each valid on its own rules)."""
    trip = _visible_trip(public_id)
    agency = _agency()
    agency_id, agency_name, levels = agency.id, agency.name, agency.level_list
    leg = trip.return_leg
    form = PairBidForm(prefix="pair")
    _fill_unit_choices(form, trip, agency_id)
    if leg is not None:
        leg_units, _booked = _fill_unit_choices(BidForm(formdata=None), leg, agency_id)
        form.return_unit.choices = [SelectChoice(u.public_id, u.number) for u in leg_units]
    user_id = current_user.id
    if submissions.previous("ems", form.submission_id.data, "bid", user_id) is not None:
        return _already_done("These bids were already placed; here they are.", "ems.request_detail",
                             public_id=public_id)
    if not form.validate_on_submit():
        return _render_request(trip, None, "Check the pair bid's fields; no bid was placed.", 400)
    try:
        claim = submissions.claim("ems", form.submission_id.data, "bid", user_id)
        if claim.repeat:
            return _already_done("These bids were already placed; here they are.", "ems.request_detail",
                                 public_id=public_id)
        first, _second = bidding.place_pair(
            trip, leg, agency_id, agency_name, levels, _unit_id_for_bid(form.unit.data), form.eta_minutes.data,
            _unit_id_for_bid(form.return_unit.data), form.return_eta_minutes.data, form.note.data, user_id)
        claim.created(first.public_id)
    except (BidRefused, submissions.SubmissionRefused) as refused:
        return _refused(refused, lambda message, status: _render_request(
            trips.get_by_public_id(public_id), None, message, status))
    db.session.commit()
    flash("Bids placed on the request and its return.", "success")
    return redirect(url_for("ems.request_detail", public_id=public_id))


def _own_bid(bid_public_id):
    """This agency's bid and its trip; another agency's bid is not found."""
    agency = _agency()
    bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))
    if bid is None or bid.agency_id != agency.id:
        abort(404)
    trip = db.session.get(TransportRequest, bid.trip_id)
    if trip is None:
        abort(404)
    return bid, trip


@bp.route("/bids/<bid_public_id>/change", methods=["POST"])
@roles_required("ems")
def change_bid(bid_public_id):
    """Change this agency's live bid (unit, ETA, note) while the request is open."""
    bid, trip = _own_bid(bid_public_id)
    agency = _agency()
    agency_id, agency_name, levels = agency.id, agency.name, agency.level_list
    trip_public_id = trip.public_id
    form = BidForm()
    _fill_unit_choices(form, trip, agency_id, bid)
    if not form.validate_on_submit():
        return _render_request(trip, form, "Check the highlighted fields; the bid is unchanged.", 400)
    try:
        bidding.change(bid, trip, agency_id, agency_name, levels, _unit_id_for_bid(form.unit.data),
                       form.eta_minutes.data, form.note.data)
    except BidRefused as refused:
        return _refused(refused, lambda message, status: _render_request(
            trips.get_by_public_id(trip_public_id), form, message, status))
    message = f"Bid changed: {bid.unit.number}, ETA {bid.eta_minutes} min."
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("ems.request_detail", public_id=trip_public_id))


@bp.route("/bids/<bid_public_id>/withdraw", methods=["POST"])
@roles_required("ems")
def withdraw_bid(bid_public_id):
    """Withdraw this agency's live bid while the request is open."""
    bid, trip = _own_bid(bid_public_id)
    agency = _agency()
    trip_public_id = trip.public_id
    try:
        bidding.withdraw(bid, trip, agency.id, agency.name)
    except BidRefused as refused:
        return _refused(refused, lambda message, status: _render_request(
            trips.get_by_public_id(trip_public_id), None, message, status))
    db.session.commit()
    flash("Bid withdrawn.", "success")
    return redirect(url_for("ems.request_detail", public_id=trip_public_id))


# --- my trips: the crew's awarded trips -----------------------------------------------------

def _my_trips_context():
    agency = _agency()
    tab = request.args.get("tab") if request.args.get("tab") in ("active", "completed") else "active"
    query = sa.select(EmsRoute).where(EmsRoute.agency_id == agency.id).options(
        selectinload(EmsRoute.unit))
    pagination = None
    if tab == "active":
        routes = list(db.session.scalars(
            query.where(EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))
            .order_by(EmsRoute.window_start, EmsRoute.id)))
    else:
        pagination = db.paginate(
            query.where(EmsRoute.status == "completed")
            .order_by(EmsRoute.window_start.desc(), EmsRoute.id.desc()),
            page=_page(), per_page=PAGE_SIZE, error_out=False)
        routes = list(pagination.items)
    # The hospital's view of each trip (patient reference, its status); with the hospital
    # silo down the crew drives from the route's own copy of the trip.
    by_id = degraded.optional("hospital", lambda: _trips_by_id({route.trip_id for route in routes}), {})
    now = utcnow()
    rows = [{"route": route, "trip": by_id.get(route.trip_id),
             "undo": bidding.last_step(route, now),
             "trip_public_id": route.trip_public_id or getattr(by_id.get(route.trip_id), "public_id", None),
             "facts": by_id.get(route.trip_id) or (route if route.has_crew_facts else None),
             "next_step": NEXT_STEP.get(route.status),
             "can_hand_back": route.status in ("planned", "en_route")} for route in routes]
    panel_args = {"tab": tab}
    if pagination is not None and pagination.page > 1:
        panel_args["page"] = pagination.page
    return {"rows": rows, "tab": tab, "pagination": pagination, "panel_args": panel_args,
            "step_buttons": STEP_BUTTONS, "route_status_labels": ROUTE_STATUS_LABELS}


def _render_my_trips(error=None, status=200):
    return render_template("ems/my_trips.html", live=True, error=error, **_my_trips_context()), status


@bp.route("/trips")
@roles_required("ems")
def my_trips():
    """The agency's awarded trips with their units; the crew advances them one tap at a time."""
    return _render_my_trips()


@bp.route("/trips/panel")
@roles_required("ems")
def my_trips_panel():
    """The trips table alone, for the live refresh."""
    return render_template("ems/_my_trips_panel.html", **_my_trips_context())


def _agency_route(public_id):
    """This agency's stop for a trip (by the trip's public id) and the trip; else 404.

    The stop is found in the EMS silo; the trip (to refuse a step on a trip the hospital
    cancelled or took back) is read from the hospital silo when it can be reached, else
    it is None and the step is checked against the stop alone.
    """
    agency = _agency()
    route = bidding.route_by_trip_public_id(public_id, agency.id)
    trip = degraded.optional("hospital", lambda: trips.get_by_public_id(public_id))
    if route is None and trip is not None:
        route = bidding.route_for(trip.id, agency.id)  # a stop from before routes kept the id
    if route is None:
        abort(404)
    return route, trip


def _crew_label(route):
    return f"{route.unit.number}, {_agency().name}"


def _crew_step(public_id, act, missing, done):
    """Run a crew's step action (``act(route, step, user_id, label, trip=trip)``) from the
    step button's form: 400 ``missing`` without a step, a refusal with its status, else
    commit and back to My trips with ``done`` (``"{reference}: {step label}"`` + ``done``)."""
    route, trip = _agency_route(public_id)
    form = AdvanceForm()
    if not form.validate_on_submit():
        return _render_my_trips(missing, 400)
    step = form.step.data
    reference = route.trip_reference
    try:
        act(route, step, current_user.id, _crew_label(route), trip=trip)
    except BidRefused as refused:
        return _refused(refused, lambda message, status: _render_my_trips(
            f"{reference}: {message}", status))
    db.session.commit()
    flash(f"{reference}: {STEP_BUTTONS.get(step, step)}{done}.", "success")
    return redirect(url_for("ems.my_trips"))


@bp.route("/trips/<public_id>/advance", methods=["POST"])
@roles_required("ems")
def advance_trip(public_id):
    """The crew's next step: en route, at pickup, transporting, at destination, back in service.
    Refused with 409 when it is not the trip's next step or the unit is under way on another trip."""
    return _crew_step(public_id, bidding.advance, "Choose the next step from the trip's button.", "")


@bp.route("/trips/<public_id>/undo", methods=["POST"])
@roles_required("ems")
def undo_step(public_id):
    """Undo the crew's last step on a trip within ``bidding.UNDO_WINDOW`` of taking it; 409
    after the window or once a later step was taken."""
    return _crew_step(public_id, bidding.undo, "Choose the step to undo from the trip's button.", " undone")


@bp.route("/trips/<public_id>/hand-back", methods=["POST"])
@roles_required("ems")
def hand_back_trip(public_id):
    """Give a trip back before pickup, with a reason; the request re-opens for bids."""
    route, trip = _agency_route(public_id)
    form = HandBackForm()
    reference = route.trip_reference
    if not form.validate_on_submit():
        message = "; ".join(form.reason.errors) or "Say why the trip is handed back."
        return _render_my_trips(f"{reference}: {message}", 400)
    try:
        bidding.hand_back(route, form.reason.data, current_user.id, _crew_label(route), trip=trip)
    except BidRefused as refused:
        return _refused(refused, lambda message, status: _render_my_trips(
            f"{reference}: {message}", status))
    db.session.commit()
    flash(f"{reference} handed back; the hospital and the transport center are told.", "success")
    return redirect(url_for("ems.my_trips"))


def _csv_time(value):
    local = to_local(value)
    return local.strftime("%Y-%m-%d %H:%M") if local else ""


@bp.route("/trips.csv")
@roles_required("ems")
def trips_csv():
    """The agency's completed trips as CSV (local times, no patient data), streamed."""
    agency = _agency()
    agency_id, code = agency.id, agency.short_code

    def rows():
        for row in unit_service.completed_trip_rows(agency_id):
            route, trip = row["route"], row["trip"]
            yield (
                route.trip_reference, to_local(route.window_start).date().isoformat(), row["unit_number"],
                row["unit_level"], trip.level_of_care if trip else "", trip.urgency if trip else "",
                trip.origin_name if trip else "", (trip.destination_name or "") if trip else "",
                _csv_time(route.window_start), _csv_time(route.window_end),
                _csv_time(trip.en_route_at if trip else None),
                _csv_time(trip.at_pickup_at if trip else None),
                _csv_time(trip.transporting_at if trip else None),
                _csv_time(trip.completed_at if trip else None))

    filename = f"{code.lower()}-completed-trips-{to_local(utcnow()):%Y%m%d}.csv"
    return csvout.response(stream_with_context(csvout.stream(CSV_COLUMNS, rows())), filename)


# --- units ---------------------------------------------------------------------------------

def _units_context():
    from ..services import crew  # who staffs each unit this shift

    agency = _agency()
    units = unit_service.agency_units(agency.id)
    current = {}  # each unit's current trip: the one under way, else the next planned one
    for route in db.session.scalars(
            sa.select(EmsRoute).where(EmsRoute.agency_id == agency.id,
                                      EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))
            .order_by(*bidding.current_route_order())):
        current.setdefault(route.unit_id, route)
    return {"units": units, "current_routes": current, "route_status_labels": ROUTE_STATUS_LABELS,
            "staffing": crew.staffing(agency.id)}


def _unit_form(agency, **kwargs):
    form = UnitForm(**kwargs)
    form.level.choices = [SelectChoice(level, LEVEL_LABELS[level]) for level in agency.level_list
                          if level in LEVEL_LABELS]
    return form


def _render_units(form=None, error=None, status=200):
    agency = _agency()
    form = form or _unit_form(agency, formdata=None)
    return render_template("ems/units.html", live=True, form=form, error=error,
                           **_units_context()), status


@bp.route("/units")
@roles_required("ems")
def units():
    """The agency's units with their status; add a unit; change a status."""
    return _render_units()


@bp.route("/units/panel")
@roles_required("ems")
def units_panel():
    """The units table alone, for the live refresh."""
    return render_template("ems/_units_panel.html", **_units_context())


@bp.route("/units", methods=["POST"])
@roles_required("ems")
def create_unit():
    """Add a unit to the agency."""
    agency = _agency()
    agency_id, levels = agency.id, agency.level_list
    form = _unit_form(agency)
    user_id = current_user.id
    if submissions.previous("ems", form.submission_id.data, "unit", user_id) is not None:
        return _already_done("This unit was already added; here it is.", "ems.units")
    if not form.validate_on_submit():
        return _render_units(form, "Check the highlighted fields; no unit was added.", 400)
    try:
        claim = submissions.claim("ems", form.submission_id.data, "unit", user_id)
        if claim.repeat:
            return _already_done("This unit was already added; here it is.", "ems.units")
        unit = unit_service.create_unit(agency_id, levels, form.number.data, form.level.data,
                                        form.base_station.data, form.shift_start.data,
                                        form.shift_end.data)
        claim.created(unit.public_id)
    except (BidRefused, submissions.SubmissionRefused) as refused:
        return _refused(refused, lambda message, status: _render_units(form, message, status))
    message = f"{unit.number} added."
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("ems.units"))


def _own_unit(public_id):
    unit = unit_service.unit_of_agency(public_id, _agency().id)
    if unit is None:
        abort(404)
    return unit


@bp.route("/units/<public_id>/edit", methods=["GET", "POST"])
@roles_required("ems")
def edit_unit(public_id):
    """Change a unit's number, level, base station or usual shift."""
    unit = _own_unit(public_id)
    agency = _agency()
    levels = agency.level_list
    form = _unit_form(agency, obj=unit)
    error, status = None, 200
    if request.method == "POST":
        if form.validate_on_submit():
            try:
                unit_service.update_unit(unit, levels, form.number.data, form.level.data,
                                         form.base_station.data, form.shift_start.data,
                                         form.shift_end.data)
            except BidRefused as refused:
                db.session.rollback()
                if refused.status == 404:
                    abort(404)
                error, status = refused.message, refused.status
            else:
                message = f"{unit.number} saved."
                db.session.commit()
                flash(message, "success")
                return redirect(url_for("ems.units"))
        else:
            error, status = "Check the highlighted fields; nothing was saved.", 400
    return render_template("ems/unit_edit.html", unit=unit, form=form, error=error), status


@bp.route("/units/<public_id>/status", methods=["POST"])
@roles_required("ems")
def unit_status(public_id):
    """Set a unit available, on break or out of service (assigned follows its trips)."""
    unit = _own_unit(public_id)
    form = UnitStatusForm()
    if not form.validate_on_submit():
        return _render_units(error="Choose one of the listed statuses.", status=400)
    number = unit.number
    try:
        changed = unit_service.change_status(unit, form.status.data)
    except BidRefused as refused:
        return _refused(refused, lambda message, status: _render_units(error=message, status=status))
    db.session.commit()
    if changed:
        flash(f"{number} is now {form.status.data.replace('_', ' ')}.", "success")
    return redirect(url_for("ems.units"))


# --- availability --------------------------------------------------------------------------

def _availability_form(agency_id, **kwargs):
    form = AvailabilityForm(**kwargs)
    form.unit.choices = [SelectChoice("", "Choose a unit")] + [
        SelectChoice(unit.public_id, unit.label) for unit in unit_service.agency_units(agency_id)]
    return form


def _render_availability(day_raw=None, form=None, error=None, status=200):
    agency = _agency()
    day, starts, ends = _local_day(day_raw if day_raw is not None else request.args.get("date"))
    units = unit_service.agency_units(agency.id)
    windows = unit_service.agency_windows(agency.id, starts, ends)
    routes = unit_service.day_routes(agency.id, starts, ends)
    if form is None:
        form = _availability_form(agency.id, formdata=None)
        form.starts_at.data = datetime.combine(day, time(7, 0))
        form.ends_at.data = datetime.combine(day, time(19, 0))
    return render_template(
        "ems/availability.html", day=day, form=form, error=error, windows=windows,
        timeline=unit_service.day_timeline(units, windows, routes, starts),
        hours=[to_local(starts + timedelta(hours=h)) for h in range(24)],
        cell_labels=unit_service.CELL_LABELS, kinds=unit_service.AVAILABILITY_KINDS,
        previous_day=day - timedelta(days=1), next_day=day + timedelta(days=1),
    ), status


@bp.route("/availability")
@roles_required("ems")
def availability():
    """Each unit's day as a timeline of shift, breaks, out of service and trips."""
    return _render_availability()


@bp.route("/availability", methods=["POST"])
@roles_required("ems")
def add_availability():
    """Add a shift, break or out-of-service window to one of the agency's units."""
    agency = _agency()
    form = _availability_form(agency.id)
    day_raw = request.args.get("date")
    user_id = current_user.id
    added = "This window was already added; here it is."
    if submissions.previous("ems", form.submission_id.data, "availability", user_id) is not None:
        return _already_done(added, "ems.availability", **_window_day(form))
    if not form.validate_on_submit():
        return _render_availability(day_raw, form, "Check the highlighted fields; nothing was saved.", 400)
    unit = unit_service.unit_of_agency(form.unit.data, agency.id)
    if unit is None:
        abort(404)
    starts, ends = from_local(form.starts_at.data), from_local(form.ends_at.data)
    try:
        claim = submissions.claim("ems", form.submission_id.data, "availability", user_id)
        if claim.repeat:
            return _already_done(added, "ems.availability", **_window_day(form))
        window = unit_service.add_availability(unit, form.kind.data, starts, ends, form.note.data)
        claim.created(window.id)
    except (BidRefused, submissions.SubmissionRefused) as refused:
        return _refused(refused, lambda message, status: _render_availability(
            day_raw, form, message, status))
    message = f"{unit.number}: {unit_service.AVAILABILITY_KINDS[form.kind.data].lower()} window added."
    db.session.commit()
    flash(message, "success")
    return redirect(url_for("ems.availability", date=form.starts_at.data.date().isoformat()))


def _window_day(form):
    """``{"date": ...}`` of the window a form names, when it names one."""
    return {"date": form.starts_at.data.date().isoformat()} if form.starts_at.data else {}


@bp.route("/availability/remove", methods=["POST"])
@roles_required("ems")
def remove_availability():
    """Remove one of the agency's availability windows."""
    window = unit_service.window_of_agency(request.form.get("window_id"), _agency().id)
    if window is None:
        abort(404)
    day = to_local(window.starts_at).date().isoformat()
    unit_service.remove_availability(window)
    db.session.commit()
    flash("Window removed.", "success")
    return redirect(url_for("ems.availability", date=day))


# --- routes: each unit's day ---------------------------------------------------------------

@bp.route("/routes")
@roles_required("ems")
def routes():
    """Each unit's trips of the day in order, the empty kilometres between them, and what
    open requests would chain well after the last one."""
    agency = _agency()
    now = utcnow()
    day, starts, ends = _local_day(request.args.get("date"))
    all_units = unit_service.agency_units(agency.id)
    chosen = None
    if request.args.get("unit"):
        chosen = unit_service.unit_of_agency(request.args["unit"], agency.id)
        if chosen is None:
            abort(404)
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

    Keyset pages: ``?before=<bid>`` continues after that bid in (placed, id) order, so a
    page costs the same on the first day and after years of bids (no OFFSET, no count).
    """
    agency = _agency()
    outcome = request.args.get("outcome") if request.args.get("outcome") in HISTORY_FILTERS else ""
    query = (sa.select(TransportBid).where(TransportBid.agency_id == agency.id)
             .options(selectinload(TransportBid.unit))
             .order_by(TransportBid.created_at.desc(), TransportBid.id.desc()))
    if outcome == "ended":
        query = query.where(TransportBid.status.in_(("expired", "closed")))
    elif outcome:
        query = query.where(TransportBid.status == outcome)
    before = request.args.get("before", "")
    if before:
        cursor = db.session.execute(
            sa.select(TransportBid.created_at, TransportBid.id)
            .where(TransportBid.public_id == before[:36], TransportBid.agency_id == agency.id)).first()
        if cursor is None:
            abort(404)
        query = query.where(sa.tuple_(TransportBid.created_at, TransportBid.id) < tuple(cursor))
    rows = list(db.session.scalars(query.limit(PAGE_SIZE + 1)))
    bids, older = rows[:PAGE_SIZE], len(rows) > PAGE_SIZE
    trip_ids = [bid.trip_id for bid in bids]
    by_id = degraded.optional("hospital", lambda: {row.id: row for row in db.session.execute(
        sa.select(TransportRequest.id, TransportRequest.public_id, TransportRequest.reference,
                  TransportRequest.status, TransportRequest.level_of_care, TransportRequest.urgency)
        .where(TransportRequest.id.in_(trip_ids)))}, {}) if bids else {}
    return render_template("ems/history.html", bids=bids, trips_by_id=by_id, outcome=outcome,
                           outcomes=BID_OUTCOMES, filters=HISTORY_FILTERS, paged=bool(before),
                           next_before=bids[-1].public_id if older else None)


# --- crew accounts (the agency's organisation administrator) ------------------------------------

def agency_admin_only(view):
    """EMS users marked as their agency's administrator; everyone else gets 403."""

    @wraps(view)
    @roles_required("ems")
    def wrapped(*args, **kwargs):
        if not current_user.is_org_admin:
            abort(403)
        session_trust.require_center()
        return view(*args, **kwargs)

    return wrapped


def _crew_page(form, status=200, error=None):
    return render_template("ems/crew_accounts.html", form=form, crew=users.crew_listing(current_user.agency_id),
                           active_form=CrewActiveForm(formdata=None), reset_form=CrewResetForm(formdata=None),
                           error=error), status


def _crew_actor():
    return users.Actor(current_user.id, current_user.email, request.remote_addr)


def _crew_member_or_refuse(public_id):
    """The agency's crew member ``public_id``; another agency's (or nobody's) 404, a non-crew 403."""
    try:
        return users.crew_member(current_user.agency_id, public_id)
    except users.UserRefused as refused:
        abort(refused.status)


@bp.route("/crew-accounts", methods=["GET", "POST"])
@agency_admin_only
def crew_accounts():
    """The agency's crew accounts; a new one gets a temporary password, shown once (201)."""
    form = CrewAccountForm()
    if request.method == "GET":
        return _crew_page(CrewAccountForm(formdata=None))
    if not form.validate_on_submit():
        return _crew_page(form, 400)
    try:
        user, password = users.create_crew(_crew_actor(), current_user.agency_id, form.email.data,
                                           form.display_name.data)
    except users.UserRefused as refused:
        db.session.rollback()
        target = getattr(form, refused.field or "", None)
        if target is not None:
            target.errors = list(target.errors) + [refused.message]
            return _crew_page(form, refused.status)
        return _crew_page(form, refused.status, error=refused.message)
    db.session.commit()
    return render_template("center/user_password.html", user=user, password=password, created=True,
                           done_url=url_for(".crew_accounts")), 201


@bp.route("/crew-accounts/<public_id>/active", methods=["POST"])
@agency_admin_only
def crew_account_active(public_id):
    """Deactivate (every session of the crew member ends at once) or reactivate a crew account."""
    user = _crew_member_or_refuse(public_id)
    form = CrewActiveForm()
    if not form.validate_on_submit():
        return _crew_page(CrewAccountForm(formdata=None), 400,
                          error="; ".join(form.active.errors) or "The form expired; try again.")
    active = form.active.data == "1"
    try:
        changed = users.set_crew_active(_crew_actor(), user, active)
    except users.UserRefused as refused:
        db.session.rollback()
        return _crew_page(CrewAccountForm(formdata=None), refused.status, error=refused.message)
    db.session.commit()
    if changed:
        flash(f"{user.display_name} is {'active again' if active else 'deactivated; their sessions ended'}.",
              "success")
    else:
        flash(f"{user.display_name} was already {'active' if active else 'deactivated'}.", "info")
    return redirect(url_for(".crew_accounts"), 303)


@bp.route("/crew-accounts/<public_id>/reset-password", methods=["POST"])
@agency_admin_only
def crew_account_reset_password(public_id):
    """A temporary password for the crew member, shown once; their sessions end."""
    user = _crew_member_or_refuse(public_id)
    if not CrewResetForm().validate_on_submit():
        return _crew_page(CrewAccountForm(formdata=None), 400, error="The form expired; try again.")
    password = users.reset_password(_crew_actor(), user)
    db.session.commit()
    return render_template("center/user_password.html", user=user, password=password, created=False,
                           done_url=url_for(".crew_accounts"))
