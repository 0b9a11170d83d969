"""Hospital staff: the requests dashboard and one request's page (its panels).

Everything here is scoped to the signed-in user's hospital: another hospital's request
answers 404.  A use case writes the hospital silo only, through :func:`dashboard.views.act`
(one commit); the relay tells the other silos.  The views that act on a request are in
:mod:`.trip_actions` (award, cancel, edit), posting in :mod:`.posting`, the preferred agencies in
:mod:`.preferred_agencies` and return legs in :mod:`.return_routes`, all on this blueprint.
"""
from flask import Blueprint, abort, render_template, request
from flask_login import current_user

from ..auth.routes import roles_required
from ..models.base import utcnow
from ..models.vocabulary import trip_dispatch_state
from ..services import boards, degraded, hospital_reads, oversight, trip_posting

bp = Blueprint("hospital", __name__, url_prefix="/hospital")

PAGE_SIZE = 25
MAX_PAGES = 200
MAX_SEARCH = 40
TABS = {
    "open": "Open",
    "upcoming": "Upcoming",
    "active": "Awarded / in progress",
    "completed": "Completed today",
    "cancelled": "Cancelled",
}
SORTS = {"reference": "Reference", "created": "Posted", "window": "Pickup window", "urgency": "Urgency",
         "deadline": "Bidding closes", "risk": "At risk first"}
DEFAULT_SORT = {"open": "urgency", "upcoming": "window", "active": "window", "completed": "-window",
                "cancelled": "-created"}
CANCELLABLE = ("open", "awarded")
FORM_ALTERED = "This form was altered or is incomplete; reload the page and try again. Nothing was saved."


# --- loading -------------------------------------------------------------------------------

def _hospital_id():
    """The signed-in user's hospital (center registry id)."""
    return current_user.hospital_id


def _trip_or_404(public_id, detail=False):
    """The user's hospital's trip, or 404 (another hospital's trip does not exist for them);
    ``detail`` reads what the request page shows of its relatives with it."""
    trip = hospital_reads.request_for_hospital(public_id, _hospital_id(), detail)
    if trip is None:
        abort(404)
    return trip




def _is_unfilled(trip, now=None):
    """An open request past its bidding deadline with no live bid (by ``dispatch_state``):
    one holding live bids awaits an award instead."""
    return trip_dispatch_state(trip, now) == "unfilled"


def _repostable(trip, now=None):
    """A cancelled or unfilled request may be re-posted as a new one."""
    return trip.status == "cancelled" or _is_unfilled(trip, now)


def _own_facilities():
    """The user's hospital's active facilities: where a patient may leave from."""
    return hospital_reads.own_facilities(_hospital_id())


def _all_facilities():
    """Every active facility of the region: where a patient may go."""
    return hospital_reads.all_facilities()


def _agency_names(ids):
    """Center registry names of the given agency ids."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    agencies = oversight.registry_names()[1]
    return {i: agencies[i].name for i in ids if i in agencies}


# --- dashboard -------------------------------------------------------------------------------

def _view_args():
    """Tab, sort, page and search from the query string.

    A tab not offered is the open tab; a page no pager shows is the first; a sort not offered
    aborts 400 with a message naming the ones offered (``services.boards.sort_from``)."""
    tab = request.args.get("tab", "open")
    tab = tab if tab in TABS else "open"
    try:
        sort = boards.sort_from(request.args.get("sort"), DEFAULT_SORT[tab], SORTS)
    except boards.BoardQueryRefused as refused:
        abort(refused.status, refused.message)
    page = boards.page_from(request.args.get("page"))
    q = " ".join((request.args.get("q") or "").split())[:MAX_SEARCH]
    return dict(tab=tab, sort=sort, page=min(page, MAX_PAGES), q=q)


def _link_args(view, **changes):
    """Query arguments for a link that keeps the view and changes some of it (defaults left out)."""
    args = dict(view, **changes)
    if args["sort"] == DEFAULT_SORT[args["tab"]]:
        args.pop("sort")
    if args["page"] == 1:
        args.pop("page")
    if not args["q"]:
        args.pop("q")
    if args["tab"] == "open":
        args.pop("tab")
    return args


def _requests_view():
    """Everything the requests panel shows, for the current query string."""
    view = _view_args()
    hospital_id = _hospital_id()
    now = utcnow()
    counts = hospital_reads.tab_counts(hospital_id, now)
    board = hospital_reads.requests_page(hospital_id, view["tab"], view["sort"], view["q"], view["page"],
                                         PAGE_SIZE, now, counts)
    shown = board.page
    view["page"] = shown.number

    def link_args(**changes):
        return _link_args(view, **changes)

    for capped in ("upcoming", "cancelled"):
        counts[capped] = boards.count_label(counts[capped], hospital_reads.UPCOMING_COUNT_CAP)
    return dict(view=view, rows=board.rows, total=shown.total, pages=shown.pages, page=shown,
                counts=counts, tabs=TABS, sorts=SORTS,
                board_sorts=boards.SORTS, default_sort=DEFAULT_SORT, link_args=_link_args,
                board_args=link_args, now=board.now, panel_args=_link_args(view))


@bp.route("/")
@roles_required("hospital")
def dashboard():
    """The hospital's requests, in tabs, refreshed live.

    Refuses: 400 a sort the tab does not offer."""
    return render_template("hospital/dashboard.html", live=True, **_requests_view())


@bp.route("/requests/panel")
@roles_required("hospital")
def requests_panel():
    """The requests panel alone, for live refreshes (tab, sort, page and search from the URL).

    Refuses: 400 a sort the tab does not offer."""
    return render_template("hospital/_requests_panel.html", **_requests_view())


# --- one request ------------------------------------------------------------------------------

def _bids_context(trip):
    """What the bids panel shows; ``bids`` is None while the EMS silo cannot be reached."""
    bids = degraded.optional("ems", lambda: hospital_reads.shown_bids(trip))
    # Which bidders are preferred agencies (read only when there are bids to mark).
    preferred = set(trip_posting.preferred_agency_ids(trip.hospital_id)) if bids else set()
    return dict(trip=trip, bids=bids, agency_names=_agency_names(b.agency_id for b in bids or ()),
                preferred=preferred, now=utcnow())


def _summary_context(trip):
    """What the request summary shows: facts, award, cancel, re-post links."""
    related = hospital_reads.repost_relatives(trip)
    names = _agency_names(trip.invited_ids)
    return dict(
        trip=trip, now=utcnow(), repostable=_repostable(trip),
        cancellable=trip.status in CANCELLABLE,
        invited_names=[names.get(i, f"Agency {i}") for i in sorted(trip.invited_ids)],
        reposted_from=next((t for t in related if t.id == trip.reposted_from_id), None),
        reposted_as=[t for t in related if t.reposted_from_id == trip.id],
    )


def _render_request(trip, status=200, message=None):
    """The request page; ``alert`` explains a refused action (answered with ``status``)."""
    context = dict(_summary_context(trip), **_bids_context(trip))
    return render_template("hospital/request.html", live=True, message=message,
                           events=hospital_reads.timeline(trip), **context), status


@bp.route("/requests/<public_id>")
@roles_required("hospital")
def request_detail(public_id):
    """One request: details, bids received and status timeline, refreshed live.

    Refuses: 404 another hospital's request (or none)."""
    return _render_request(_trip_or_404(public_id, detail=True))


@bp.route("/requests/<public_id>/summary")
@roles_required("hospital")
def request_summary(public_id):
    """The request summary panel alone, for live refreshes.

    Refuses: 404 another hospital's request (or none)."""
    return render_template("hospital/_request_summary_panel.html",
                           **_summary_context(_trip_or_404(public_id, detail=True)))


@bp.route("/requests/<public_id>/bids")
@roles_required("hospital")
def bids_panel(public_id):
    """The bids panel alone, for live refreshes.

    Refuses: 404 another hospital's request (or none)."""
    return render_template("hospital/_bids_panel.html", **_bids_context(_trip_or_404(public_id)))


@bp.route("/requests/<public_id>/timeline")
@roles_required("hospital")
def timeline_panel(public_id):
    """The timeline panel alone, for live refreshes.

    Refuses: 404 another hospital's request (or none)."""
    trip = _trip_or_404(public_id)
    return render_template("hospital/_timeline_panel.html", trip=trip, events=hospital_reads.timeline(trip))


# The views acting on requests, posting and the preferred agencies register on ``bp`` too.
from . import posting, preferred_agencies, trip_actions  # noqa: E402,F401
