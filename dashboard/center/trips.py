"""One request seen from the transport center: details, timeline, bids, and the interventions
(award, assign, extend, re-open, cancel), on the ``center`` blueprint."""
from flask import abort, render_template
from flask_login import current_user

from ..services import degraded, intervention, oversight, trips
from ..templating import format_time
from ..views import SEE_FIELDS, act, actor, found
from .forms import AssignForm, AwardForm, CancelForm, ExtendForm, ReopenForm
from .routes import bp, center_only

#: The page message of an award form that does not validate (its fields are all hidden).
AWARD_ALTERED = "This form was incomplete or altered; reload the page and try again. Nothing was saved."


def _trip_or_404(public_id):
    """The request ``public_id`` (the center sees every request), else 404."""
    trip = trips.get_by_public_id(public_id)
    if trip is None:
        abort(404)
    return trip


def _assign_choices(form, trip, posted=False):
    """On the page: eligible units only.  On a POST every id is left to the service to judge."""
    if posted:
        form.agency.validate_choice = form.unit.validate_choice = False
        return
    grouped = oversight.assignable_units(trip)
    # Plain (value, label) pairs: the pickers (AssignForm's PickerFields) write them directly.
    form.agency.choices = [("", "Choose an agency"), *((a.id, a.name) for a, _units in grouped)]
    form.unit.choices = [("", "Choose a unit"), *(
        (u.id, f"{a.short_code} · {u.number} ({u.level}) · {u.status.replace('_', ' ')}")
        for a, units in grouped for u in units)]


def _render_request(trip, status=200, message=None, **forms):
    view = oversight.request_view(trip)
    version = {"version": trip.version}
    # The page's forms share field names (reason, note, version): each has its prefix, so its
    # ids and posted names are its own ("cancel-reason").
    assign = forms.get("assign") or AssignForm(formdata=None, data=version, prefix="assign")
    if trip.status == "open" and view["bids"] is not None:  # units are in the EMS silo too
        degraded.optional("ems", lambda: _assign_choices(assign, trip))
    context = dict(
        view,
        message=message,
        assign_form=assign,
        extend_form=forms.get("extend") or ExtendForm(formdata=None, data=dict(version, minutes=15), prefix="extend"),
        reopen_form=forms.get("reopen") or ReopenForm(formdata=None, data=version, prefix="reopen"),
        cancel_form=forms.get("cancel") or CancelForm(formdata=None, data=version, prefix="cancel"),
        live=True,
    )
    return render_template("center/request.html", **context), status


@bp.route("/requests/<public_id>")
@center_only
def request_detail(public_id):
    """One request in full: details, timeline, bids, and the intervention forms.

    Refuses: 404 no such request."""
    return _render_request(_trip_or_404(public_id))


@bp.route("/requests/<public_id>/panel")
@center_only
def request_panel(public_id):
    """The request's live part (state, timeline, bids), for the live refresh.

    Refuses: 404 no such request."""
    trip = _trip_or_404(public_id)
    return render_template("center/_request_panel.html", **oversight.request_view(trip))


def _label():
    """How the signed-in coordinator appears in the request's history."""
    return intervention.actor_label(current_user.display_name)


def _refused_on(public_id, key, form):
    """The answer to a refused intervention: the request as it is now, with what was typed in
    form ``key`` kept at the current version, and the refusal as the page message."""
    def refused(message, status):
        trip = _trip_or_404(public_id)
        form.version.data = str(trip.version)
        suffix = "" if message.endswith("nothing was saved.") else " Nothing was saved."
        return _render_request(trip, status, message + suffix, **{key: form})
    return refused


@bp.route("/requests/<public_id>/award", methods=["POST"])
@center_only
def award(public_id):
    """Award a live bid on the hospital's behalf.

    Refuses: 404 no such request or a bid not on it; 409 the bid is no longer live, the request
    is not open or changed meanwhile (stale version); 400 a unit below the level of care or an
    altered form."""
    trip = _trip_or_404(public_id)
    form = AwardForm()
    if not form.validate_on_submit():
        return _render_request(trip, 400, AWARD_ALTERED, award=form)
    return act(
        lambda: intervention.award_bid(trip, form.bid.data, int(form.version.data),
                                       actor=actor()._replace(label=_label())),
        done=lambda _: found(".request_detail", f"Awarded to {trip.awarded_agency_name}, "
                                 f"{trip.awarded_unit_label}, on the hospital's behalf.",
                                 public_id=public_id),
        refused=_refused_on(public_id, "award", form))


@bp.route("/requests/<public_id>/assign", methods=["POST"])
@center_only
def assign(public_id):
    """Assign an agency's unit directly, with the reason recorded.

    Refuses: 404 no such request; 400 no reason, an inactive agency or unit, a unit of another
    agency or below the level of care; 409 the unit is not free or booked for an overlapping
    pickup, the request is not open or changed meanwhile."""
    trip = _trip_or_404(public_id)
    form = AssignForm(prefix="assign")
    _assign_choices(form, trip, posted=True)
    if not form.validate_on_submit():
        return _render_request(trip, 400, SEE_FIELDS, assign=form)
    return act(
        lambda: intervention.assign_unit(trip, form.agency.data, form.unit.data, form.eta_minutes.data,
                                         form.reason.data, int(form.version.data),
                                         actor=actor()._replace(label=_label())),
        done=lambda _: found(".request_detail", f"Assigned to {trip.awarded_agency_name}, "
                                 f"{trip.awarded_unit_label}.", public_id=public_id),
        refused=_refused_on(public_id, "assign", form))


@bp.route("/requests/<public_id>/extend", methods=["POST"])
@center_only
def extend(public_id):
    """Extend the bidding deadline by the minutes chosen.

    Refuses: 404 no such request; 400 minutes out of range; 409 the request is not open or
    changed meanwhile."""
    trip = _trip_or_404(public_id)
    form = ExtendForm(prefix="extend")
    if not form.validate_on_submit():
        return _render_request(trip, 400, SEE_FIELDS, extend=form)
    return act(
        lambda: intervention.extend_deadline(trip, form.minutes.data, (form.note.data or "").strip(),
                                             int(form.version.data),
                                             actor=actor()._replace(label=_label())),
        done=lambda _: found(".request_detail", "Bidding deadline extended to "
                                 f"{format_time(trip.bid_deadline)}.", public_id=public_id),
        refused=_refused_on(public_id, "extend", form))


@bp.route("/requests/<public_id>/reopen", methods=["POST"])
@center_only
def reopen(public_id):
    """Re-open an awarded request for bids; the agency's unit is released.

    Refuses: 404 no such request; 400 no reason; 409 the request cannot be re-opened from its
    state or changed meanwhile."""
    trip = _trip_or_404(public_id)
    form = ReopenForm(prefix="reopen")
    if not form.validate_on_submit():
        return _render_request(trip, 400, SEE_FIELDS, reopen=form)
    return act(
        lambda: intervention.reopen(trip, form.reason.data, int(form.version.data),
                                    actor=actor()._replace(label=_label())),
        done=lambda _: found(".request_detail", "Re-opened for bids; the agency's unit is released.",
                                 public_id=public_id),
        refused=_refused_on(public_id, "reopen", form))


@bp.route("/requests/<public_id>/cancel", methods=["POST"])
@center_only
def cancel(public_id):
    """Cancel the request with a reason.

    Refuses: 404 no such request; 400 no reason (or "other" without a note); 409 the request
    is already closed or changed meanwhile."""
    trip = _trip_or_404(public_id)
    form = CancelForm(prefix="cancel")
    if not form.validate_on_submit():
        return _render_request(trip, 400, SEE_FIELDS, cancel=form)
    return act(
        lambda: intervention.cancel(trip, form.reason.data, form.note.data, int(form.version.data),
                                    actor=actor()._replace(label=_label())),
        done=lambda _: found(".request_detail", "Request cancelled.", public_id=public_id),
        refused=_refused_on(public_id, "cancel", form))
