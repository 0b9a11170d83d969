"""Hospital staff acting on one request: award a bid, cancel, edit (views on ``hospital.bp``).

Each writes through :func:`dashboard.views.act`: the service checks (``services.awards``,
``services.trips``) refuse with a message and a status, and the request page (or the form's
page) answers with them.
"""
from flask import flash, render_template, request

from ..auth.routes import roles_required
from ..services import awards, trip_posting, trips
from ..views import act, actor, found
from .forms import AwardForm, CancelForm, EditForm, parse_version
from .routes import CANCELLABLE, FORM_ALTERED, _render_request, _summary_context, _trip_or_404, bp


@bp.route("/requests/<public_id>/award", methods=["POST"])
@roles_required("hospital")
def award(public_id):
    """Award one live bid of this request; of two awards at once, exactly one wins.

    Refuses: 404 another hospital's request, or a bid not on it; 409 the request not open
    (or a stale version), the bid no longer live, its unit booked or its agency deactivated;
    400 a form not filled in right, or a unit below the request's level of care."""
    trip = _trip_or_404(public_id)
    form = AwardForm()
    version = parse_version(form.version)
    if not form.validate_on_submit() or version is None:
        return _render_request(trip, 400, FORM_ALTERED)
    return act(
        lambda: awards.award_bid(trip, form.bid.data, version, by="hospital", actor=actor()),
        done=lambda awarded: found(
            ".request_detail", f"{awarded.reference} awarded to {awarded.awarded_agency_name} ({awarded.awarded_unit_label}, "
            f"ETA {awarded.awarded_eta_minutes} min). The other bidders are told.",
            public_id=awarded.public_id),
        refused=lambda message, status: _render_request(trip, status, message))


@bp.route("/requests/<public_id>/cancel", methods=["GET", "POST"])
@roles_required("hospital")
def cancel_request(public_id):
    """Cancel an open or awarded request, with a reason.

    Refuses: 404 another hospital's request; 409 a request neither open nor awarded (or a
    stale version); 400 a form not filled in right."""
    trip = _trip_or_404(public_id)
    if trip.status not in CANCELLABLE:
        return _render_request(trip, 409, f"A request that is {trip.status.replace('_', ' ')} cannot be "
                                          "cancelled here; call the agency or the transport center.")
    form = CancelForm()
    if request.method == "GET":
        form.version.data = str(trip.version)
        return _render_cancel(trip, form)
    version = parse_version(form.version)
    if not form.validate_on_submit():
        return _render_cancel(trip, form, 400)
    if version is None:
        return _render_cancel(trip, form, 400, FORM_ALTERED)
    return act(
        lambda: trips.cancel(trip, form.reason.data, form.note.data, expected_version=version,
                             actor=actor()),
        done=lambda _: found(".request_detail", f"{trip.reference} is cancelled.", public_id=trip.public_id),
        refused=lambda message, status: _render_cancel(trip, form, status, message),
        form=form)


def _render_cancel(trip, form, status=200, message=None):
    """The cancel page; after a refusal the form carries the version now shown."""
    if message and trip.status in CANCELLABLE:
        form.version.data = str(trip.version)  # the page now shows the current state
    return render_template("hospital/cancel.html", form=form, message=message, **_summary_context(trip)), status


@bp.route("/requests/<public_id>/edit", methods=["GET", "POST"])
@roles_required("hospital")
def edit_request(public_id):
    """Change an open request's window, needs or notes.

    Refuses: 404 another hospital's request; 409 a request not open (or a stale version);
    400 a form not filled in right (a need above the level of care without an override)."""
    trip = _trip_or_404(public_id)
    if trip.status != "open":
        return _render_request(trip, 409, "Only an open request can be edited; this one is "
                                          f"{trip.status.replace('_', ' ')}. Nothing was saved.")
    form = EditForm()
    if request.method == "GET":
        form.fill_from(trip)
        return _render_edit(trip, form)
    ok = form.validate_on_submit()
    ok = form.check_window(unchanged=(trip.window_start, trip.window_end)) and ok
    ok = form.check_care(trip.level_of_care, kept=(trip.care_override_reason, trip.care_override_needs)) and ok
    if not ok:
        return _render_edit(trip, form, 400)
    version = parse_version(form.version)
    if version is None:
        return _render_edit(trip, form, 400, FORM_ALTERED)
    return act(
        lambda: trip_posting.edit(trip, form.changes(trip), expected_version=version,
                                  care_override=form.care_override_value(), actor=actor()),
        done=lambda result: _edited(trip, form, result[1]),
        refused=lambda message, status: _render_edit(trip, form, status, message),
        form=form)


def _edited(trip, form, changed):
    """The answer to a done edit: what changed, and whether an override was needed."""
    if changed:
        message, category = f"{trip.reference} updated; agencies that bid see the change.", "success"
    else:
        message, category = "Nothing was changed.", "info"
    response = found(".request_detail", message, category, public_id=trip.public_id)
    notice = form.override_not_needed(trip.level_of_care)
    if notice:
        flash(notice, "info")
    return response


def _render_edit(trip, form, status=200, message=None):
    """The edit page; after a refusal the form carries the version now shown."""
    if message and trip.status == "open":
        form.version.data = str(trip.version)  # the page now shows the current state
    return render_template("hospital/edit.html", form=form, message=message,
                           hints=form.window_hints(stored_start=trip.window_start),
                           editable=trip.status == "open", **_summary_context(trip)), status
