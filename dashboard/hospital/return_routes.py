"""Hospital staff: return legs, will-call release and the patient's readiness.

Views on the hospital blueprint (``services.returns``, ``services.trips``); each writes the
hospital silo and commits once.  A will-call return may be released by the hospital that booked
it and by staff of the hospital whose facility the patient is at (their will-call list).
"""
from flask import abort, flash, redirect, render_template, url_for
from flask_login import current_user

from ..auth.routes import roles_required
from ..extensions import db
from ..services import configuration, returns, trips
from .return_forms import NotReadyForm, ReleaseForm, ReturnForm
from .routes import _own_trip, _render_request, bp


def _refused(trip_public_id, refused):
    db.session.rollback()
    trip = trips.get_for_hospital(trip_public_id, current_user.hospital_id)
    if trip is None:  # the will-call list of the facility's hospital
        return _render_will_call(refused.status, refused.message)
    return _render_request(trip, refused.status, refused.message)


@bp.route("/requests/<public_id>/return", methods=["POST"])
@roles_required("hospital")
def add_return(public_id):
    """Add the return leg of this request: will-call or at a fixed time."""
    trip = _own_trip(public_id)
    form = ReturnForm()
    if not form.validate_on_submit():
        message = " ".join(e for errors in form.errors.values() for e in errors)
        return _render_request(trip, 400, f"The return was not added: {message}")
    window = form.window_utc() if form.kind.data == "fixed" else (None, None)
    try:
        leg = returns.add_return(trip, form.kind.data, window,
                                 configuration.get("bid_deadline_default_minutes"),
                                 current_user.hospital.short_code, current_user.id, current_user.display_name)
    except trips.TransitionRefused as refused:
        return _refused(public_id, refused)
    reference, leg_id = leg.reference, leg.public_id
    db.session.commit()
    flash(f"Return {reference} added" + (": it waits until the patient is marked ready."
                                         if form.kind.data == "will_call" else "."), "success")
    return redirect(url_for(".request_detail", public_id=leg_id))


def _render_will_call(status=200, alert=None):
    rows = returns.waiting_at_facilities(current_user.hospital_id)
    return render_template("hospital/will_call.html", rows=rows, alert=alert,
                           own_hospital=current_user.hospital_id), status


@bp.route("/will-call")
@roles_required("hospital")
def will_call():
    """Will-call returns waiting for a patient at this hospital's facilities (or booked by it)."""
    return _render_will_call()


@bp.route("/requests/<public_id>/release", methods=["POST"])
@roles_required("hospital")
def release(public_id):
    """The patient of a will-call return is ready: bidding opens now, with the urgency chosen."""
    trip = returns.get_releasable(public_id, current_user)
    if trip is None:
        abort(404)
    form = ReleaseForm()
    if not form.validate_on_submit():
        return _refused(public_id, trips.TransitionRefused("Choose routine, urgent or emergent.", 400))
    try:
        trips.release(trip, form.urgency.data, configuration.get("bid_deadline_default_minutes"),
                      current_user.id, current_user.display_name)
    except trips.TransitionRefused as refused:
        return _refused(public_id, refused)
    reference, own = trip.reference, trip.hospital_id == current_user.hospital_id
    db.session.commit()
    flash(f"{reference}: patient ready, bidding is open.", "success")
    if own:
        return redirect(url_for(".request_detail", public_id=public_id))
    return redirect(url_for(".will_call"))


@bp.route("/requests/<public_id>/ready", methods=["POST"])
@roles_required("hospital")
def patient_ready(public_id):
    """Record that the patient is ready for pickup (a waiting will-call return is released)."""
    trip = _own_trip(public_id)
    if trip.will_call_waiting:
        return _render_request(trip, 409, "Release this will-call return with its urgency (the button above).")
    try:
        trips.mark_patient_ready(trip, current_user.id, current_user.display_name)
    except trips.TransitionRefused as refused:
        return _refused(public_id, refused)
    db.session.commit()
    flash(f"{trip.reference}: patient marked ready.", "success")
    return redirect(url_for(".request_detail", public_id=public_id))


@bp.route("/requests/<public_id>/not-ready", methods=["POST"])
@roles_required("hospital")
def not_ready(public_id):
    """The crew is at the pickup and the patient is not ready: why."""
    trip = _own_trip(public_id)
    form = NotReadyForm()
    if not form.validate_on_submit():
        return _render_request(trip, 400, "Say why the patient is not ready (up to 200 characters).")
    try:
        trips.mark_not_ready(trip, form.reason.data, current_user.id, current_user.display_name)
    except trips.TransitionRefused as refused:
        return _refused(public_id, refused)
    db.session.commit()
    flash(f"{trip.reference}: patient marked not ready.", "success")
    return redirect(url_for(".request_detail", public_id=public_id))
