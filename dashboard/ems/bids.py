"""One request as the EMS agency sees it, and the agency's bids on it: place, pair, change,
withdraw."""
from flask import render_template
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from ..auth.routes import roles_required
from ..models.base import utcnow
from ..models.vocabulary import BID_OUTCOMES, LEVEL_RANK, ROUTE_STATUS_LABELS, trip_dispatch_state
from ..services import bidding, ems_reads, route_steps, submissions, trips
from ..services import units as unit_service
from ..views import act, actor, found
from .forms import BidForm, PairBidForm
from .routes import (
    BIDDABLE_UNIT_STATUSES,
    _agency,
    _already_done,
    _bid_or_404,
    _trip_or_404,
    bp,
    trip_distance,
)


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


def _request_context(trip, form=None, pair_form=None):
    """What the request page and its live panel show: the trip, this agency's bid on it, the
    bid form with the units it may offer.  The form and its units are made only while the
    agency may bid (bidding open, not awarded to it): the page shows them then alone.
    ``form`` and ``pair_form`` are forms as sent (their values and errors shown again), else
    fresh ones are made."""
    agency = _agency()
    now = utcnow()
    bid, earlier = ems_reads.bids_on_trip(trip.id, agency.id)
    ours = trip.awarded_agency_id == agency.id
    bidding_open = trip_dispatch_state(trip, now) == "bidding"
    units, booked = [], []
    if bidding_open and not ours:
        if form is None:
            form = BidForm(formdata=None)
            if bid is not None:
                form.unit.data = bid.unit.public_id
                form.eta_minutes.data = str(bid.eta_minutes)
                form.note.data = bid.note
        units, booked = _fill_unit_choices(form, trip, agency.id, bid)
    route = route_steps.route_for(trip.id, agency.id) if ours else None
    return dict(
        trip=trip, bid=bid, form=form, units=units, booked_units=booked,
        earlier_bids=earlier, outcomes=BID_OUTCOMES,
        distance_km=trip_distance(trip), route=route, ours=ours, now=now,
        bidding_open=bidding_open,
        pair=_pair_context(trip, agency.id, bid, now, pair_form),
        upcoming=trip.status == "open" and trip.bidding_opens_at is not None and trip.bidding_opens_at > now,
        route_status_labels=ROUTE_STATUS_LABELS,
    )


def _fill_pair_choices(form, trip, leg, agency_id):
    """Offer each leg's units on the pair bid ``form`` (as :func:`_fill_unit_choices` does for
    one); returns (outbound units, return units)."""
    units, _booked = _fill_unit_choices(form, trip, agency_id)
    leg_units, _booked = _fill_unit_choices(BidForm(formdata=None), leg, agency_id)
    form.return_unit.choices = [SelectChoice("", "Choose a unit")] + [
        SelectChoice(u.public_id, f"{u.number} ({u.level})") for u in leg_units]
    return units, leg_units


def _pair_context(trip, agency_id, bid, now, form=None):
    """The pair bid offer: the return leg and the units for each, when both legs take bids and
    the agency has a bid on neither; else None.  ``form`` is the pair bid form as sent (shown
    again with its values and errors), else a fresh one is made."""
    leg = trip.return_leg
    if leg is None or bid is not None or trip.status != "open" or leg.status != "open":
        return None
    if any(trip_dispatch_state(t, now) != "bidding" for t in (trip, leg)):
        return None
    if bidding.live_bid(leg.id, agency_id) is not None:
        return None
    form = form if form is not None else PairBidForm(formdata=None, prefix="pair")
    units, leg_units = _fill_pair_choices(form, trip, leg, agency_id)
    return {"leg": leg, "form": form} if units and leg_units else None


def _render_request(trip, form=None, message=None, status=200, pair_form=None):
    return render_template("ems/request.html", live=True, message=message,
                           **_request_context(trip, form, pair_form)), status


def _render_refused(public_id, form=None, pair_form=None):
    """``refused(message, status)`` for a bid form: the request page read again (the refusal
    rolled the session back) with the form as sent and the message."""
    return lambda message, status: _render_request(trips.get_by_public_id(public_id), form, message, status,
                                                   pair_form)


@bp.route("/requests/<public_id>")
@roles_required("ems")
def request_detail(public_id):
    """A request's operational details and this agency's bid on it.

    Refuses: 403 a user without an agency; 404 a request the agency may not see."""
    return _render_request(_trip_or_404(public_id))


@bp.route("/requests/<public_id>/panel")
@roles_required("ems")
def request_panel(public_id):
    """The request's state and this agency's bid alone, for the live refresh: a request awarded
    to another agency, cancelled or closed for bids shows so without a reload.

    Refuses: 403 a user without an agency; 404 a request the agency may not see."""
    return render_template("ems/_request_panel.html", **_request_context(_trip_or_404(public_id)))


@bp.route("/requests/<public_id>/bid", methods=["POST"])
@roles_required("ems")
def place_bid(public_id):
    """Place this agency's bid: a unit and an ETA to pickup; the form sent again shows the bid
    it placed (303).

    Refuses: 403 a user without an agency; 404 a request the agency may not see (or a unit it
    does not have); 400 a form not filled in right; 409 the request no longer takes bids, the
    agency has a live bid on it, or the unit is booked then."""
    trip = _trip_or_404(public_id)
    agency = _agency()
    agency_id, agency_name, levels = agency.id, agency.name, agency.level_list
    form = BidForm()
    _fill_unit_choices(form, trip, agency_id)
    user_id = current_user.id
    again = "This bid was already placed; here it is."
    if submissions.previous("ems", form.submission_id.data, "bid", user_id) is not None:
        return _already_done(again, "ems.request_detail", public_id=public_id)
    if not form.validate_on_submit():
        return _render_request(trip, form, "Check the highlighted fields; no bid was placed.", 400)

    def place():
        claim = submissions.claim("ems", form.submission_id.data, "bid", user_id)
        if claim.repeat:
            return None
        bid = bidding.place(trip, agency_id, agency_name, levels,
                            unit_service.unit_id_by_public_id(form.unit.data), form.eta_minutes.data,
                            form.note.data, actor=actor())
        claim.created(bid.public_id)
        return f"Bid placed: {bid.unit.number}, ETA {bid.eta_minutes} min."

    return act(place,
               done=lambda message: found("ems.request_detail", message, public_id=public_id) if message
               else _already_done(again, "ems.request_detail", public_id=public_id),
               refused=_render_refused(public_id, form), form=form)


@bp.route("/requests/<public_id>/bid-pair", methods=["POST"])
@roles_required("ems")
def place_pair_bid(public_id):
    """Bid on a request and its return leg as a pair (two bids, each valid on its own rules);
    the form sent again shows the bids it placed (303).

    Refuses: 403 a user without an agency; 404 a request the agency may not see; 400 a form
    not filled in right; 409 either leg no longer takes bids or a unit is booked then."""
    trip = _trip_or_404(public_id)
    agency = _agency()
    agency_id, agency_name, levels = agency.id, agency.name, agency.level_list
    leg = trip.return_leg
    form = PairBidForm(prefix="pair")
    if leg is not None:
        _fill_pair_choices(form, trip, leg, agency_id)
    else:
        _fill_unit_choices(form, trip, agency_id)
    user_id = current_user.id
    again = "These bids were already placed; here they are."
    if submissions.previous("ems", form.submission_id.data, "bid", user_id) is not None:
        return _already_done(again, "ems.request_detail", public_id=public_id)
    if not form.validate_on_submit():
        return _render_request(trip, None, "Check the pair bid's fields; no bid was placed.", 400, pair_form=form)

    def place():
        claim = submissions.claim("ems", form.submission_id.data, "bid", user_id)
        if claim.repeat:
            return False
        first, _second = bidding.place_pair(trip, leg, agency_id, agency_name, levels,
                                            unit_service.unit_id_by_public_id(form.unit.data),
                                            form.eta_minutes.data,
                                            unit_service.unit_id_by_public_id(form.return_unit.data),
                                            form.return_eta_minutes.data, form.note.data, actor=actor())
        claim.created(first.public_id)
        return True

    return act(place,
               done=lambda placed: found("ems.request_detail", "Bids placed on the request and its return.",
                                         public_id=public_id) if placed
               else _already_done(again, "ems.request_detail", public_id=public_id),
               refused=_render_refused(public_id, pair_form=form))


@bp.route("/bids/<bid_public_id>/change", methods=["POST"])
@roles_required("ems")
def change_bid(bid_public_id):
    """Change this agency's live bid (unit, ETA, note) while the request is open.

    Refuses: 403 a user without an agency; 404 another agency's bid; 400 a form not filled in
    right; 409 the bid is no longer live, the request no longer takes bids, or the unit is
    booked then."""
    bid, trip = _bid_or_404(bid_public_id)
    agency = _agency()
    agency_id, agency_name, levels = agency.id, agency.name, agency.level_list
    trip_public_id = trip.public_id
    form = BidForm()
    _fill_unit_choices(form, trip, agency_id, bid)
    if not form.validate_on_submit():
        return _render_request(trip, form, "Check the highlighted fields; the bid is unchanged.", 400)

    def change():
        bidding.change(bid, trip, agency_id, agency_name, levels,
                       unit_service.unit_id_by_public_id(form.unit.data), form.eta_minutes.data,
                       form.note.data, actor=actor())
        return f"Bid changed: {bid.unit.number}, ETA {bid.eta_minutes} min."

    return act(change,
               done=lambda message: found("ems.request_detail", message, public_id=trip_public_id),
               refused=_render_refused(trip_public_id, form), form=form)


@bp.route("/bids/<bid_public_id>/withdraw", methods=["POST"])
@roles_required("ems")
def withdraw_bid(bid_public_id):
    """Withdraw this agency's live bid while the request is open.

    Refuses: 403 a user without an agency; 404 another agency's bid; 409 the bid is no longer
    live or the request is no longer open."""
    bid, trip = _bid_or_404(bid_public_id)
    agency = _agency()
    trip_public_id = trip.public_id
    return act(lambda: bidding.withdraw(bid, trip, agency.id, agency.name, actor=actor()),
               done=lambda _bid: found("ems.request_detail", "Bid withdrawn.", public_id=trip_public_id),
               refused=_render_refused(trip_public_id))
