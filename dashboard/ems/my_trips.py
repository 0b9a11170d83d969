"""My trips: the agency's awarded trips, the crew's steps on them one tap at a time, a trip
handed back, and the completed trips as CSV."""
from flask import abort, render_template, request, stream_with_context

from ..auth.routes import roles_required
from ..localtime import to_local
from ..models.base import utcnow
from ..models.vocabulary import CREW_STEP_LABELS, ROUTE_STATUS_LABELS
from ..services import csvout, degraded, ems_reads, route_steps, trips
from ..services import units as unit_service
from ..views import act, actor, found
from .forms import AdvanceForm, HandBackForm
from .routes import (
    CSV_COLUMNS,
    NEXT_STEP,
    _agency,
    _page_or_400,
    _page_size,
    bp,
)


def _my_trips_context():
    """The active tab (``?tab=active``, by window start) or one page of the completed tab
    (keyset, newest first, ``?after=``); aborts 400 for a page cursor not of this list."""
    agency = _agency()
    tab = request.args.get("tab") if request.args.get("tab") in ("active", "completed") else "active"
    after = request.args.get("after") or None if tab == "completed" else None
    next_after = None
    if tab == "active":
        routes = ems_reads.active_routes(agency.id)
    else:
        page = _page_or_400(lambda: ems_reads.completed_routes(agency.id, after, size=_page_size()))
        routes, next_after = page.rows, page.after
    # The hospital's view of each trip (patient reference, its status); with the hospital
    # silo down the crew drives from the route's own copy of the trip.
    by_id = degraded.optional("hospital", lambda: ems_reads.trips_by_id({route.trip_id for route in routes}), {})
    now = utcnow()
    rows = [{"route": route, "trip": by_id.get(route.trip_id),
             "undo": route_steps.last_step(route, now),
             "trip_public_id": route.trip_public_id or getattr(by_id.get(route.trip_id), "public_id", None),
             "facts": by_id.get(route.trip_id) or (route if route.has_crew_facts else None),
             "next_step": NEXT_STEP.get(route.status),
             "can_hand_back": route.status in ("planned", "en_route")} for route in routes]
    panel_args = {"tab": tab}
    if after:
        panel_args["after"] = after
    return {"rows": rows, "tab": tab, "paged": bool(after), "next_after": next_after,
            "panel_args": panel_args, "step_buttons": CREW_STEP_LABELS,
            "route_status_labels": ROUTE_STATUS_LABELS}


def _render_my_trips(message=None, status=200):
    return render_template("ems/my_trips.html", live=True, message=message, **_my_trips_context()), status


@bp.route("/trips")
@roles_required("ems")
def my_trips():
    """The agency's awarded trips with their units; the crew advances them one tap at a time.

    Refuses: 403 a user without an agency; 400 a page cursor the completed list did not make."""
    return _render_my_trips()


@bp.route("/trips/panel")
@roles_required("ems")
def my_trips_panel():
    """The trips table alone, for the live refresh.

    Refuses: 403 a user without an agency; 400 a page cursor the completed list did not make."""
    return render_template("ems/_my_trips_panel.html", **_my_trips_context())


def _route_or_404(public_id):
    """This agency's stop for a trip (by the trip's public id) and the trip; else 404.

    The stop is found in the EMS silo; the trip (to refuse a step on a trip the hospital
    cancelled or took back) is read from the hospital silo when it can be reached, else
    it is None and the step is checked against the stop alone.
    """
    agency = _agency()
    route = route_steps.route_by_trip_public_id(public_id, agency.id)
    trip = degraded.optional("hospital", lambda: trips.get_by_public_id(public_id))
    if route is None and trip is not None:
        route = route_steps.route_for(trip.id, agency.id)  # a stop from before routes kept the id
    if route is None:
        abort(404)
    return route, trip


def _crew_label(route):
    return f"{route.unit.number}, {_agency().name}"


def _crew_step(public_id, step_action, missing, done):
    """Run a crew's step action (``step_action(route, step, trip=trip, actor=actor)``) from
    the step button's form: 400 ``missing`` without a step, a refusal with its status, else
    commit and back to My trips with ``done`` (``"{reference}: {step label}"`` + ``done``)."""
    route, trip = _route_or_404(public_id)
    form = AdvanceForm()
    if not form.validate_on_submit():
        return _render_my_trips(missing, 400)
    step = form.step.data
    reference = route.trip_reference
    label = _crew_label(route)
    return act(lambda: step_action(route, step, trip=trip, actor=actor()._replace(label=label)),
               done=lambda _: found("ems.my_trips", f"{reference}: {CREW_STEP_LABELS.get(step, step)}{done}."),
               refused=lambda message, status: _render_my_trips(f"{reference}: {message}", status))


@bp.route("/trips/<public_id>/advance", methods=["POST"])
@roles_required("ems")
def advance_trip(public_id):
    """The crew's next step: en route, at pickup, transporting, at destination, back in service.

    Refuses: 403 a user without an agency; 404 a trip that is not the agency's; 400 no step
    given; 409 when it is not the trip's next step, the trip was cancelled or taken back, or
    the unit is under way on another trip."""
    return _crew_step(public_id, route_steps.advance, "Choose the next step from the trip's button.", "")


@bp.route("/trips/<public_id>/undo", methods=["POST"])
@roles_required("ems")
def undo_step(public_id):
    """Undo the crew's last step on a trip within ``route_steps.UNDO_WINDOW`` of taking it.

    Refuses: 403 a user without an agency; 404 a trip that is not the agency's; 400 no step
    given; 409 after the window or once a later step was taken."""
    return _crew_step(public_id, route_steps.undo, "Choose the step to undo from the trip's button.", " undone")


@bp.route("/trips/<public_id>/hand-back", methods=["POST"])
@roles_required("ems")
def hand_back_trip(public_id):
    """Give a trip back before pickup, with a reason; the request re-opens for bids.

    Refuses: 403 a user without an agency; 404 a trip that is not the agency's; 400 no reason
    given; 409 the crew is already at pickup or past it, or the trip is no longer the agency's."""
    route, trip = _route_or_404(public_id)
    form = HandBackForm()
    reference = route.trip_reference
    if not form.validate_on_submit():
        message = "; ".join(form.reason.errors) or "Say why the trip is handed back."
        return _render_my_trips(f"{reference}: {message}", 400)
    label = _crew_label(route)
    return act(lambda: route_steps.hand_back(route, form.reason.data, trip=trip,
                                             actor=actor()._replace(label=label)),
               done=lambda _: found("ems.my_trips",
                                    f"{reference} handed back; the hospital and the transport center are told."),
               refused=lambda message, status: _render_my_trips(f"{reference}: {message}", status))


def _csv_time(value):
    local = to_local(value)
    return local.strftime("%Y-%m-%d %H:%M") if local else ""


@bp.route("/trips.csv")
@roles_required("ems")
def trips_csv():
    """The agency's completed trips as CSV (local times, no patient data), streamed.

    Refuses: 403 a user without an agency."""
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
