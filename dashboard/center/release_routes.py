"""The transport center releases a will-call return (the patient is ready), on the center blueprint."""
from flask_login import current_user

from ..hospital.return_forms import ReleaseForm
from ..services import configuration, trip_readiness
from ..views import act, actor, found
from .routes import bp, center_only
from .trips import _render_request, _trip_or_404


@bp.route("/requests/<public_id>/release", methods=["POST"])
@center_only
def release(public_id):
    """Mark a will-call return's patient ready: bidding opens now with the urgency chosen.

    Refuses: 404 no such request; 400 no urgency chosen; 409 the request is not a will-call
    return waiting for its patient."""
    trip = _trip_or_404(public_id)
    form = ReleaseForm()
    if not form.validate_on_submit():
        return _render_request(trip, 400, "Choose routine, urgent or emergent.")
    return act(
        lambda: trip_readiness.release(trip, form.urgency.data,
                                       configuration.get("bid_deadline_default_minutes"),
                                       actor=actor()._replace(label=f"{current_user.display_name} (transport center)")),
        done=lambda _: found("center.request_detail", f"{trip.reference}: patient ready, bidding is open.",
                             public_id=public_id),
        refused=lambda message, status: _render_request(_trip_or_404(public_id), status, message))
