"""The crew on a phone (``/crew/``): pick the unit for the shift, then one large button for the
trip's next step, the address to navigate to, the next planned trips and an undo.

Everything is scoped to the unit the crew member staffs this shift (``services/crew.py``):
another unit's trips are not found.  Views read the EMS silo (and the hospital silo, when it
answers, to refuse a step on a trip cancelled there), write only the EMS silo, and commit
once per use case.  Taps come from ``static/crew.js`` as JSON with an idempotency key and the
time of the tap (they may have waited on the phone for coverage); without the script the
same forms post here and the server's clock is the tap's time.  Writes go through
:func:`dashboard.views.act`.  The page works offline
through the service worker ``/crew/sw.js`` (``static/crew-sw.js``), installable with
``/crew/manifest.webmanifest``.
"""
import os
import uuid
from datetime import UTC
from urllib.parse import quote

from flask import (
    Blueprint,
    abort,
    current_app,
    jsonify,
    render_template,
    request,
    send_from_directory,
    url_for,
)
from flask_login import current_user

from ..auth.routes import roles_required
from ..models.base import utcnow
from ..models.vocabulary import CREW_STEP_LABELS
from ..services import crew, degraded, lateness, route_steps, trips
from ..views import act, actor, see_other

bp = Blueprint("crew", __name__, url_prefix="/crew")

#: A stop's status -> the steps still ahead of it, in order.
STEPS_AHEAD = {status: trips.CREW_STEPS[index:] for index, status in enumerate(route_steps.ROUTE_ORDER[:-1])}
STATUS_WORDS = {"planned": "Planned", "en_route": "En route", "at_pickup": "At pickup",
                "transporting": "Transporting", "at_destination": "At destination"}


def _agency_id():
    if current_user.agency_id is None:
        abort(403)
    return current_user.agency_id


def _navigation(label, lat, lon):
    """``(geo URI, address link)`` opening the device's maps app (``geo:``) or a map search for
    ``label``; built here, no request leaves the server."""
    if not label and lat is None:
        return None
    query = quote(label or f"{lat},{lon}")
    geo = f"geo:{lat},{lon}?q={lat},{lon}({quote(label or '')})" if lat is not None and lon is not None \
        else f"geo:0,0?q={query}"
    return {"geo": geo, "address": f"https://www.openstreetmap.org/search?query={query}", "label": label}


def _row(route, trip, now):
    going_to_pickup = route.status in ("planned", "en_route")
    target = (_navigation(route.pickup_label, route.pickup_lat, route.pickup_lon) if going_to_pickup
              else _navigation(route.dropoff_label, route.dropoff_lat, route.dropoff_lon))
    facts = route if route.has_crew_facts else trip
    taken = [step for step in trips.CREW_STEPS if getattr(route, f"{step}_at", None) is not None
             and step not in STEPS_AHEAD.get(route.status, ())]
    return {"route": route, "facts": facts, "public_id": route.trip_public_id or getattr(trip, "public_id", None),
            "steps": STEPS_AHEAD.get(route.status, ()), "taken": taken,
            "undo": route_steps.last_step(route, now), "late": lateness.of_route(route, now),
            "navigate": target, "navigate_to": "pickup" if going_to_pickup else "destination"}


def _context(shift):
    now = utcnow()
    routes = crew.unit_routes(shift.unit_id)
    missing = [route.trip_id for route in routes if not route.has_crew_facts]
    by_id = {}
    if missing:
        by_id = degraded.optional("hospital", lambda: crew.route_trips(missing), {})
    rows = [_row(route, by_id.get(route.trip_id), now) for route in routes]
    return {"shift": shift, "unit": shift.unit, "rows": rows, "step_words": CREW_STEP_LABELS,
            "status_words": STATUS_WORDS, "new_key": lambda: uuid.uuid4().hex,
            "undo_seconds": int(route_steps.UNDO_WINDOW.total_seconds())}


def _shift_headers(shift):
    """The shift's end for the service worker (milliseconds since the epoch): its copy of the
    page expires then."""
    ends = shift.ends_at.replace(tzinfo=UTC)
    return {"X-Crew-Shift-Ends": str(int(ends.timestamp() * 1000)), "Cache-Control": "no-store"}


def _render(shift, message=None, status=200):
    if shift is None:
        return render_template("crew/pick_unit.html", units=crew.staffable_units(_agency_id()),
                               message=message), status
    return render_template("crew/home.html", live=True, message=message, **_context(shift)), status, \
        _shift_headers(shift)


@bp.route("/")
@roles_required("crew")
def home():
    """The crew's page: the unit's current trip with its next-step button, the next planned
    trips; without a shift, the choice of the unit to staff.

    Refuses: 403 a crew member bound to no agency (when choosing a unit)."""
    return _render(crew.open_shift(current_user.id))


@bp.route("/panel")
@roles_required("crew")
def panel():
    """The unit's trips alone, for the live refresh (204 without a shift: nothing to show).

    Refuses: nothing beyond the crew role (403 for other roles)."""
    shift = crew.open_shift(current_user.id)
    if shift is None:
        return "", 204, {"HX-Redirect": url_for("crew.home")}
    return render_template("crew/_trips_panel.html", **_context(shift)), 200, _shift_headers(shift)


@bp.route("/shift", methods=["POST"])
@roles_required("crew")
def start_shift():
    """Staff a unit of the crew member's agency for the shift (``unit``: the unit's public id).

    Refuses: 403 a crew member bound to no agency; 400 a unit that is not an active unit of
    the agency."""
    agency_id = _agency_id()
    return act(lambda: crew.start_shift(current_user.id, current_user.display_name, agency_id,
                                        request.form.get("unit"), actor=actor()),
               done=lambda _shift: see_other("crew.home", "Shift started. Your unit's trips are below."),
               refused=lambda message, status: _render(None, message, status))


@bp.route("/shift/end", methods=["POST"])
@roles_required("crew")
def end_shift():
    """End the crew member's shift: the unit is no longer shown as staffed by them.

    Refuses: nothing beyond the crew role (403 for other roles); without a shift it ends none."""
    return act(lambda: crew.end_shift(current_user.id, actor=actor()),
               done=lambda _count: see_other("crew.home", "Shift ended.", "info"),
               refused=lambda message, status: _render(None, message, status))


def _tap_fields():
    data = request.get_json(silent=True) if request.is_json else None
    source = data if isinstance(data, dict) else request.form
    return {name: str(source.get(name) or "").strip()[:80]
            for name in ("key", "trip", "act", "step", "tapped_at")}


@bp.route("/taps", methods=["POST"])
@roles_required("crew")
def tap():
    """One tap of the crew: a step or an undo of the unit's trip, at the tap's time.

    JSON (from ``static/crew.js``) ``{"key", "trip", "act": "advance"|"undo", "step",
    "tapped_at": ISO 8601 UTC}`` is answered ``{"status", "message", "replayed"}`` with the
    same HTTP status: 200 recorded; 400 bad input or a tap time out of bounds; 404 not this
    unit's trip; 409 a conflict (cancelled, taken back, moved on, before the previous step,
    no shift).  A key sent again gets the first answer (``replayed``), with no second
    effect.  A form post (no script) is answered with the page.

    Refuses: 400 a tap the page does not send or a tap time out of bounds; 404 a trip not on
    the unit; 409 no shift, a key used for another tap, or a step the trip no longer allows.
    """
    fields = _tap_fields()
    wants_json = request.is_json
    shift = crew.open_shift(current_user.id)

    def answer(status, message, replayed=False):
        if wants_json:
            return jsonify(status=status, message=message, replayed=replayed), status
        if status == 200:
            return see_other("crew.home", message)
        return _render(shift, message, status)

    return act(lambda: crew.tap(shift, fields["key"], fields["trip"], fields["act"], fields["step"],
                                fields["tapped_at"], actor=actor()),
               done=lambda taken: answer(*taken),
               refused=lambda message, status: answer(status, message))


# --- the installable app: manifest and service worker (vendored, no CDN) ----------------------

@bp.route("/manifest.webmanifest")
def manifest():
    """The web app manifest: the crew page installs as an app on the phone's home screen.

    Refuses: nothing (public, no patient data)."""
    body = {
        "name": "MedPort crew", "short_name": "MedPort crew", "start_url": url_for("crew.home"),
        "scope": url_for("crew.home"), "display": "standalone", "background_color": "#ffffff",
        "theme_color": "#0b3d66",
        "icons": [{"src": url_for("static", filename="favicon.svg"), "sizes": "any",
                   "type": "image/svg+xml"}],
    }
    response = jsonify(body)
    response.mimetype = "application/manifest+json"
    return response


@bp.route("/sw.js")
def service_worker():
    """The crew page's service worker, served under ``/crew/`` so that is its scope.

    Refuses: nothing (public, no patient data)."""
    response = send_from_directory(os.path.join(current_app.static_folder), "crew-sw.js",
                                   mimetype="text/javascript", max_age=0)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Service-Worker-Allowed"] = url_for("crew.home")
    return response
