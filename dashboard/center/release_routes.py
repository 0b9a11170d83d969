"""The transport center releases a will-call return (the patient is ready), on the center blueprint."""
from flask import flash, redirect, url_for
from flask_login import current_user

from ..extensions import db
from ..hospital.return_forms import ReleaseForm
from ..services import configuration, trips
from .routes import _render_request, _trip_or_404, bp, center_only


@bp.route("/requests/<public_id>/release", methods=["POST"])
@center_only
def release(public_id):
    """Mark a will-call return's patient ready: bidding opens now with the urgency chosen."""
    trip = _trip_or_404(public_id)
    form = ReleaseForm()
    if not form.validate_on_submit():
        return _render_request(trip, 400, "Choose routine, urgent or emergent.")
    try:
        trips.release(trip, form.urgency.data, configuration.get("bid_deadline_default_minutes"),
                      current_user.id, f"{current_user.display_name} (transport center)")
    except trips.TransitionRefused as refused:
        db.session.rollback()
        return _render_request(trips.get_by_public_id(public_id), refused.status, refused.message)
    db.session.commit()
    flash(f"{trip.reference}: patient ready, bidding is open.", "success")
    return redirect(url_for("center.request_detail", public_id=public_id))
