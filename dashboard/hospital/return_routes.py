"""Hospital staff: return legs, will-call release and the patient's readiness.

Views on the hospital blueprint (``services.returns``, ``services.trips``); each writes the
hospital silo through :func:`dashboard.views.act` (one commit).  A will-call return may be
released by the hospital that booked it and by staff of the hospital whose facility the patient
is at (their will-call list).
"""
from flask import abort, render_template
from flask_login import current_user

from ..auth.routes import roles_required
from ..services import configuration, returns, trip_readiness, trips
from ..views import act, actor, found
from .return_forms import NotReadyForm, ReleaseForm, ReturnForm
from .routes import _render_request, _trip_or_404, bp


def _refused(trip_public_id, message, status):
    """A refused action's page: the request's own page, or the will-call list of the facility's
    hospital when the request is another hospital's."""
    trip = trips.get_for_hospital(trip_public_id, current_user.hospital_id)
    if trip is None:  # the will-call list of the facility's hospital
        return _render_will_call(status, message)
    return _render_request(trip, status, message)


def _releasable_or_404(public_id):
    """A will-call return this user may release (their hospital's, or waiting at one of its
    facilities), or 404."""
    trip = returns.get_releasable(public_id, current_user)
    if trip is None:
        abort(404)
    return trip


@bp.route("/requests/<public_id>/return", methods=["POST"])
@roles_required("hospital")
def add_return(public_id):
    """Add the return leg of this request: will-call or at a fixed time.

    Refuses: 404 another hospital's request; 409 a request that cannot take a return (or has
    one); 400 a form not filled in right."""
    trip = _trip_or_404(public_id)
    form = ReturnForm()
    if not form.validate_on_submit():
        message = " ".join(e for errors in form.errors.values() for e in errors)
        return _render_request(trip, 400, f"The return was not added: {message}")
    window = form.window_utc() if form.kind.data == "fixed" else (None, None)
    will_call = form.kind.data == "will_call"
    return act(
        lambda: returns.add_return(trip, form.kind.data, window,
                                   configuration.get("bid_deadline_default_minutes"),
                                   current_user.hospital.short_code, actor=actor()),
        done=lambda leg: found(".request_detail", f"Return {leg.reference} added" + (
            ": it waits until the patient is marked ready." if will_call else "."), public_id=leg.public_id),
        refused=lambda message, status: _refused(public_id, message, status))


def _render_will_call(status=200, message=None):
    """The will-call list page; ``alert`` explains a refused release (answered with ``status``)."""
    rows = returns.waiting_at_facilities(current_user.hospital_id)
    return render_template("hospital/will_call.html", rows=rows, message=message,
                           own_hospital=current_user.hospital_id), status


@bp.route("/will-call")
@roles_required("hospital")
def will_call():
    """Will-call returns waiting for a patient at this hospital's facilities (or booked by it).

    Refuses nothing a hospital user may ask (other roles: the role check's 403)."""
    return _render_will_call()


@bp.route("/requests/<public_id>/release", methods=["POST"])
@roles_required("hospital")
def release(public_id):
    """The patient of a will-call return is ready: bidding opens now, with the urgency chosen.

    Refuses: 404 a return this user may not release; 400 no urgency chosen; 409 a return not
    waiting any more."""
    trip = _releasable_or_404(public_id)
    form = ReleaseForm()
    if not form.validate_on_submit():
        return _refused(public_id, "Choose routine, urgent or emergent.", 400)
    reference, own = trip.reference, trip.hospital_id == current_user.hospital_id
    return act(
        lambda: trip_readiness.release(trip, form.urgency.data,
                                       configuration.get("bid_deadline_default_minutes"), actor=actor()),
        done=lambda _: found(".request_detail" if own else ".will_call",
                                 f"{reference}: patient ready, bidding is open.",
                                 **({"public_id": public_id} if own else {})),
        refused=lambda message, status: _refused(public_id, message, status))


@bp.route("/requests/<public_id>/ready", methods=["POST"])
@roles_required("hospital")
def patient_ready(public_id):
    """Record that the patient is ready for pickup (a waiting will-call return is released).

    Refuses: 404 another hospital's request; 409 a waiting will-call return (released with its
    urgency instead) or a request whose patient cannot be marked ready now."""
    trip = _trip_or_404(public_id)
    return act(
        lambda: trip_readiness.mark_patient_ready(trip, actor=actor()),
        done=lambda _: found(".request_detail", f"{trip.reference}: patient marked ready.",
                                 public_id=public_id),
        refused=lambda message, status: _refused(public_id, message, status))


@bp.route("/requests/<public_id>/not-ready", methods=["POST"])
@roles_required("hospital")
def not_ready(public_id):
    """The crew is at the pickup and the patient is not ready: why.

    Refuses: 404 another hospital's request; 400 no reason (or over 200 characters); 409 a
    request whose crew is not at the pickup."""
    trip = _trip_or_404(public_id)
    form = NotReadyForm()
    if not form.validate_on_submit():
        return _render_request(trip, 400, "Say why the patient is not ready (up to 200 characters).")
    return act(
        lambda: trip_readiness.mark_not_ready(trip, form.reason.data, actor=actor()),
        done=lambda _: found(".request_detail", f"{trip.reference}: patient marked not ready.",
                                 public_id=public_id),
        refused=lambda message, status: _refused(public_id, message, status))
