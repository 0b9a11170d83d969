"""Transport-center coordinators and administrators: oversight, intervention, administration.

Coordinators and administrators watch the region (board, units, one request,
audit log, silo health) and step in on requests.  Administrators also run the
registry, the accounts and the system configuration.  Each POST is one use
case through :func:`dashboard.views.act`: it writes one silo and commits once.

The views live in the modules of this package, all on the one ``center`` blueprint
(endpoint names ``center.<view>``): this module has the board, the units overview
and the silo health; :mod:`.trips` one request and the interventions; :mod:`.registry`
hospitals, facilities and agencies; :mod:`.admin` accounts and the configuration;
:mod:`.audit_log` the audit log and its export.
"""
from flask import Blueprint, abort, render_template, request
from flask_login import current_user
from markupsafe import Markup

from ..auth.routes import roles_required
from ..events import parked as parked_events
from ..services import boards, oversight, silo_health, units_overview, users
from ..views import act, found
from .forms import BoardFilterForm, UnitFilterForm, choices

bp = Blueprint("center", __name__, url_prefix="/center")


def center_only(view):
    """Coordinators and administrators; any other role gets 403."""
    return roles_required("coordinator", "admin")(view)


def admin_only(view):
    """Administrators only; coordinators (and everyone else) get 403."""
    return roles_required("admin")(view)


def _actor():
    """The signed-in administrator as the registry and account services name them."""
    return users.Actor(current_user.id, current_user.email, request.remote_addr)


def page_with_panel(page, panel, **context):
    """``page`` rendered with ``context`` and its live ``panel`` (the partial its ``…/panel`` URL
    serves) rendered first, on its own, and placed whole as ``panel_html``: the markup an
    ``{% include %}`` of the panel gives, without handing each of the panel's pieces (a board's
    thousands) up through the page's block and layout one at a time."""
    panel_html = Markup(render_template(panel, **context))  # nosec B704 - an autoescaped template's output
    return render_template(page, panel_html=panel_html, **context)


def answer_abort(message, status):
    """A refusal answered by the error page of ``status`` with ``message`` (no form to show)."""
    abort(status, message)


# --- regional board ------------------------------------------------------------------------

def _board_filters():
    """(form, filters, valid) from the query string; choices come from the registry.

    A sort the board does not offer aborts 400 with the message naming the ones it does."""
    hospitals, agencies = oversight.registry_names()
    form = BoardFilterForm(request.args)
    form.hospital.choices = choices(
        [(h.id, f"{h.short_code} · {h.name}") for h in hospitals.values()], "All hospitals")
    form.agency.choices = choices([(a.id, a.name) for a in agencies.values()], "All agencies")
    try:
        sort = boards.sort_from(request.args.get("sort"), oversight.DEFAULT_SORT)
    except boards.BoardQueryRefused as refused:
        abort(refused.status, refused.message)
    page = boards.page_from(request.args.get("page"))
    if not form.validate():
        return form, oversight.BoardFilters(sort=sort), False
    return form, oversight.BoardFilters(
        hospital_id=form.hospital.data, agency_id=form.agency.data, level=form.level.data or None,
        urgency=form.urgency.data or None, state=form.state.data or None, risk_only=form.risk.data,
        sort=sort, page=page,
    ), True


@bp.route("/")
@center_only
def board():
    """The regional board: every open, active and recently closed request with its risk marks.

    Refuses: 400 filters or a sort the board does not offer (the board shows unfiltered)."""
    form, filters, valid = _board_filters()
    data = oversight.board(filters)
    return page_with_panel("center/board.html", "center/_board_panel.html", form=form, filters=filters,
                           live=True, **data), (200 if valid else 400)


@bp.route("/board/panel")
@center_only
def board_panel():
    """The board's table alone, for the live refresh.

    Refuses: 400 filters or a sort the board does not offer (a panel saying so)."""
    _form, filters, valid = _board_filters()
    if not valid:
        return render_template("errors/_error_panel.html", status=400, title="Filters not understood",
                               message="Reload the board and choose the filters again."), 400
    return render_template("center/_board_panel.html", filters=filters, **oversight.board(filters))


# --- units overview ------------------------------------------------------------------------

def _unit_filters():
    form = UnitFilterForm(request.args)
    _hospitals, agencies = oversight.registry_names()
    form.agency.choices = choices([(a.id, a.name) for a in agencies.values()], "All agencies")
    valid = form.validate()
    args = {}
    if valid:
        args = {"agency_id": form.agency.data, "level": form.level.data or None,
                "status": form.status.data or None}
    query = {k: v for k, v in (("agency", args.get("agency_id")), ("level", args.get("level")),
                               ("status", args.get("status"))) if v}
    return form, args, query, valid


@bp.route("/units")
@center_only
def units():
    """Every agency's units with their status, crew and current trip.

    Refuses: 400 filters not offered (the overview shows unfiltered)."""
    form, args, query, valid = _unit_filters()
    return page_with_panel("center/units.html", "center/_units_panel.html", form=form, query=query,
                           live=True, **units_overview.units_overview(**args)), (200 if valid else 400)


@bp.route("/units/panel")
@center_only
def units_panel():
    """The units table alone, for the live refresh.

    Refuses: 400 filters not offered (a panel saying so)."""
    _form, args, query, valid = _unit_filters()
    if not valid:
        return render_template("errors/_error_panel.html", status=400, title="Filters not understood",
                               message="Reload the page and choose the filters again."), 400
    return render_template("center/_units_panel.html", query=query, **units_overview.units_overview(**args))


# --- silo health ---------------------------------------------------------------------------

@bp.route("/health")
@center_only
def health():
    """Each silo's state and latency, its outbox backlog and the parked events.

    Refuses nothing beyond the role check (403); a silo that cannot be read shows as down."""
    return render_template("center/health.html", **silo_health.silo_health())


@bp.route("/health/panel")
@center_only
def health_panel():
    """The silo health table alone, for the live refresh.

    Refuses nothing beyond the role check (403)."""
    return render_template("center/_health_panel.html", **silo_health.silo_health())


@bp.route("/health/parked/retry", methods=["POST"])
@center_only
def retry_parked():
    """Put parked events back in the relay's queue: one (``silo`` and ``event``) or all.

    Refuses: 400 a silo or event not from the list; 404 an event no longer parked;
    503 the silo could not be reached (nothing was changed there)."""
    silo, event_id = request.form.get("silo") or None, request.form.get("event") or None
    return act(
        lambda: parked_events.requeue(silo, event_id, current_user._get_current_object(),
                                      request.remote_addr),
        done=lambda count: found(
            "center.health",
            f"{count} parked event{'' if count == 1 else 's'} queued for delivery again." if count
            else "No events were parked.", "success" if count else "info"),
        refused=answer_abort)


# The views of the other modules register on ``bp`` when imported.
from . import admin, audit_log, registry, trips  # noqa: E402,F401  isort: skip
