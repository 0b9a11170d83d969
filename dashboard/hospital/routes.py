"""Hospital staff: request entry, tracking, awarding, preferred agencies.

Everything here is scoped to the signed-in user's hospital: another
hospital's request answers 404.  A use case writes the hospital silo only
and commits once; the relay tells the other silos.
"""
from datetime import timedelta

import sqlalchemy as sa
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from ..auth.routes import roles_required
from ..extensions import db
from ..localtime import from_local, local_midnight, local_today, to_local
from ..models.base import row_id, trip_dispatch_state, utcnow
from ..models.center import Agency
from ..models.ems import TransportBid
from ..models.hospital import (
    ACTIVE_STATUSES,
    HospitalAgencyPreference,
    HospitalFacility,
    HospitalUser,
    TransportRequest,
    TransportRequestEvent,
)
from ..services import boards, configuration, deadlines, degraded, oversight, submissions, trips
from ..templating import format_time
from .forms import (
    MIN_BID_MINUTES,
    WINDOW_GRACE,
    AwardForm,
    CancelForm,
    EditForm,
    PreferenceForm,
    PreferenceMoveForm,
    PreferenceNotesForm,
    RequestForm,
    parse_version,
)

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
SHOWN_BID_STATUSES = ("live", "accepted", "declined")
STATUS_WORDS = {"awarded": "awarded", "en_route": "awarded (the crew is en route)",
                "at_pickup": "awarded (the crew is at pickup)", "transporting": "awarded (transporting)",
                "at_destination": "awarded (the crew is at the destination)",
                "completed": "completed", "cancelled": "cancelled"}
FORM_ALTERED = "This form was altered or is incomplete; reload the page and try again. Nothing was saved."


# --- loading -------------------------------------------------------------------------------

def _hospital_id():
    """The signed-in user's hospital (center registry id)."""
    return current_user.hospital_id


def _own_trip(public_id):
    """The user's hospital's trip, or 404 (another hospital's trip does not exist for them)."""
    trip = trips.get_for_hospital(public_id, _hospital_id())
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
    return list(db.session.scalars(
        sa.select(HospitalFacility)
        .where(HospitalFacility.hospital_id == _hospital_id(), HospitalFacility.active.is_(True))
        .order_by(HospitalFacility.name)
    ))


def _all_facilities():
    """Every active facility of the region: where a patient may go."""
    return list(db.session.scalars(
        sa.select(HospitalFacility).where(HospitalFacility.active.is_(True))
        .order_by(HospitalFacility.city, HospitalFacility.name)
    ))


def _agency_names(ids):
    """Center registry names of the given agency ids."""
    ids = {i for i in ids if i}
    if not ids:
        return {}
    agencies = oversight.registry_names()[1]
    return {i: agencies[i].name for i in ids if i in agencies}


# --- dashboard -------------------------------------------------------------------------------

def _sort_column(key):
    """The column (or expression) behind a sort key of the hospital's own (not a board sort)."""
    return {
        "reference": TransportRequest.reference,
        "created": TransportRequest.created_at,
    }[key]


def _order(sort, now):
    """``ORDER BY`` of a dashboard sort: the boards' shared sorts (``services.boards``), or by
    reference or posting time, then the pickup window."""
    key, descending = sort.removeprefix("-"), sort.startswith("-")
    if key in boards.SORTS:
        risk = None
        if key == "risk":
            risk = oversight.risk_condition(now, configuration.get_all(),
                                            oversight.deactivated_agency_ids(oversight.registry_names()[1]))
        return boards.order_by(sort, risk)
    column = _sort_column(key)
    return [column.desc() if descending else column.asc(), TransportRequest.window_start.asc(),
            TransportRequest.id.desc() if descending else TransportRequest.id.asc()]


def _today_utc():
    """The region's current local day as a naive-UTC [start, end) range."""
    day = local_today()
    return local_midnight(day), local_midnight(day + timedelta(days=1))


def _not_bidding_yet():
    """Open requests no agency can bid on yet: booked ahead (upcoming) or will-call waiting."""
    T = TransportRequest
    return sa.and_(T.status == "open", sa.or_(T.bidding_opens_at > utcnow(),
                                              sa.and_(T.will_call.is_(True), T.released_at.is_(None))))


def _tab_filter(tab):
    """The condition that puts a request in a dashboard tab: "Upcoming" holds the open requests
    not taking bids yet (booked ahead, will-call waiting), "Open" the others."""
    if tab == "open":
        T = TransportRequest
        return sa.and_(T.status == "open", sa.or_(T.bidding_opens_at.is_(None), T.bidding_opens_at <= utcnow()),
                       sa.or_(T.will_call.is_(False), T.released_at.is_not(None)))
    if tab == "upcoming":
        return _not_bidding_yet()
    if tab == "active":
        return TransportRequest.status.in_(ACTIVE_STATUSES)
    if tab == "completed":
        start, end = _today_utc()
        return sa.and_(TransportRequest.status == "completed", TransportRequest.completed_at >= start,
                       TransportRequest.completed_at < end)
    return TransportRequest.status == "cancelled"


def _search_filter(q):
    """Reference or patient reference containing ``q`` (LIKE wildcards taken literally)."""
    pattern = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return sa.or_(TransportRequest.reference.ilike(pattern, escape="\\"),
                  TransportRequest.patient_ref.ilike(pattern, escape="\\"))


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


def _tab_counts(hospital_id):
    """How many requests each tab holds (before any search)."""
    counts = dict(db.session.execute(
        sa.select(TransportRequest.status, sa.func.count())
        .where(TransportRequest.hospital_id == hospital_id,
               TransportRequest.status.in_(("open", "cancelled") + ACTIVE_STATUSES))
        .group_by(TransportRequest.status)
    ).all())
    completed = db.session.scalar(
        sa.select(sa.func.count())
        .where(TransportRequest.hospital_id == hospital_id, _tab_filter("completed"))
    )
    upcoming = db.session.scalar(
        sa.select(sa.func.count())
        .where(TransportRequest.hospital_id == hospital_id, _tab_filter("upcoming"))
    )
    return {"open": counts.get("open", 0) - upcoming,
            "upcoming": upcoming,
            "active": sum(counts.get(s, 0) for s in ACTIVE_STATUSES),
            "completed": completed,
            "cancelled": counts.get("cancelled", 0)}


def _requests_view():
    """Everything the requests panel shows, for the current query string."""
    view = _view_args()
    hospital_id = _hospital_id()
    conditions = [TransportRequest.hospital_id == hospital_id, _tab_filter(view["tab"])]
    if view["q"]:
        conditions.append(_search_filter(view["q"]))
    total = db.session.scalar(sa.select(sa.func.count()).where(*conditions))
    shown = boards.page_of(view["page"], total, PAGE_SIZE)
    view["page"] = shown.number
    now = utcnow()
    rows = list(db.session.scalars(
        sa.select(TransportRequest)
        .options(selectinload(TransportRequest.origin), selectinload(TransportRequest.destination))
        .where(*conditions).order_by(*_order(view["sort"], now))
        .offset(shown.offset).limit(PAGE_SIZE)
    ))

    def link_args(**changes):
        return _link_args(view, **changes)

    return dict(view=view, rows=rows, total=total, pages=shown.pages, page=shown,
                counts=_tab_counts(hospital_id), tabs=TABS, sorts=SORTS, board_sorts=boards.SORTS,
                default_sort=DEFAULT_SORT, link_args=_link_args, board_args=link_args, now=now,
                panel_args=_link_args(view))


@bp.route("/")
@roles_required("hospital")
def dashboard():
    """The hospital's requests, in tabs, refreshed live."""
    return render_template("hospital/dashboard.html", live=True, **_requests_view())


@bp.route("/requests/panel")
@roles_required("hospital")
def requests_panel():
    """The requests panel alone, for live refreshes (tab, sort, page and search from the URL)."""
    return render_template("hospital/_requests_panel.html", **_requests_view())


# --- one request ------------------------------------------------------------------------------

def _bids(trip):
    """Bids received for the trip (EMS silo), live ones first, best ETA first."""
    bids = list(db.session.scalars(
        sa.select(TransportBid).options(selectinload(TransportBid.unit))
        .where(TransportBid.trip_id == trip.id, TransportBid.status.in_(SHOWN_BID_STATUSES))
    ))
    rank = {status: i for i, status in enumerate(SHOWN_BID_STATUSES)}
    bids.sort(key=lambda b: (rank[b.status], b.eta_minutes, b.created_at, b.id))
    return bids


def _bids_context(trip):
    """What the bids panel shows; ``bids`` is None while the EMS silo cannot be reached."""
    bids = degraded.optional("ems", lambda: _bids(trip))
    preferred = set(trips.preferred_agency_ids(trip.hospital_id))
    return dict(trip=trip, bids=bids, agency_names=_agency_names(b.agency_id for b in bids or ()),
                preferred=preferred, now=utcnow())


def _timeline(trip):
    """Every status change of the trip, oldest first."""
    return list(db.session.scalars(
        sa.select(TransportRequestEvent).where(TransportRequestEvent.trip_id == trip.id)
        .order_by(TransportRequestEvent.at, TransportRequestEvent.id)
    ))


def _summary_context(trip):
    """What the request summary shows: facts, award, cancel, re-post links."""
    related = list(db.session.scalars(
        sa.select(TransportRequest).where(
            TransportRequest.hospital_id == trip.hospital_id,
            sa.or_(TransportRequest.id == trip.reposted_from_id, TransportRequest.reposted_from_id == trip.id),
        )
    ))
    names = _agency_names(trip.invited_ids)
    return dict(
        trip=trip, now=utcnow(), repostable=_repostable(trip),
        cancellable=trip.status in CANCELLABLE,
        invited_names=[names.get(i, f"Agency {i}") for i in sorted(trip.invited_ids)],
        reposted_from=next((t for t in related if t.id == trip.reposted_from_id), None),
        reposted_as=[t for t in related if t.reposted_from_id == trip.id],
    )


def _render_request(trip, status=200, alert=None):
    """The request page; ``alert`` explains a refused action (answered with ``status``)."""
    context = dict(_summary_context(trip), **_bids_context(trip))
    return render_template("hospital/request.html", live=True, alert=alert, events=_timeline(trip),
                           **context), status


@bp.route("/requests/<public_id>")
@roles_required("hospital")
def request_detail(public_id):
    """One request: details, bids received and status timeline, refreshed live."""
    return _render_request(_own_trip(public_id))


@bp.route("/requests/<public_id>/summary")
@roles_required("hospital")
def request_summary(public_id):
    """The request summary panel alone, for live refreshes."""
    return render_template("hospital/_request_summary.html", **_summary_context(_own_trip(public_id)))


@bp.route("/requests/<public_id>/bids")
@roles_required("hospital")
def bids_panel(public_id):
    """The bids panel alone, for live refreshes."""
    return render_template("hospital/_bids.html", **_bids_context(_own_trip(public_id)))


@bp.route("/requests/<public_id>/timeline")
@roles_required("hospital")
def timeline_panel(public_id):
    """The timeline panel alone, for live refreshes."""
    trip = _own_trip(public_id)
    return render_template("hospital/_timeline.html", trip=trip, events=_timeline(trip))


@bp.route("/requests/<public_id>/award", methods=["POST"])
@roles_required("hospital")
def award(public_id):
    """Award one live bid of this request; of two awards at once, exactly one wins."""
    trip = _own_trip(public_id)
    form = AwardForm()
    version = parse_version(form.version)
    if not form.validate_on_submit() or version is None:
        return _render_request(trip, 400, FORM_ALTERED)
    bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == form.bid.data))
    if bid is None or bid.trip_id != trip.id:
        abort(404)
    if trip.status != "open":
        taken = f" to {trip.awarded_agency_name}" if trip.awarded_agency_name else ""
        return _render_request(trip, 409, f"{trip.reference} was already {STATUS_WORDS.get(trip.status, trip.status)}"
                                          f"{taken}; nothing was saved.")
    if bid.status != "live":
        return _render_request(trip, 409, f"That bid is no longer live (it was {bid.status}). "
                                          "Choose another bid; nothing was saved.")
    offer = deadlines.bid_for_award(bid)
    try:
        trips.award(trip, offer, current_user.id, current_user.display_name, expected_version=version)
    except trips.TransitionRefused as refused:
        db.session.rollback()
        return _render_request(trip, refused.status, refused.message)
    db.session.commit()
    flash(f"{trip.reference} awarded to {offer['agency_name']} ({offer['unit_label']}, "
          f"ETA {offer['eta_minutes']} min). The other bidders are told.", "success")
    return redirect(url_for(".request_detail", public_id=trip.public_id))


@bp.route("/requests/<public_id>/cancel", methods=["GET", "POST"])
@roles_required("hospital")
def cancel_request(public_id):
    """Cancel an open or awarded request, with a reason."""
    trip = _own_trip(public_id)
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
    try:
        trips.cancel(trip, form.reason.data, form.note.data, current_user.id, current_user.display_name,
                     expected_version=version)
    except trips.TransitionRefused as refused:
        db.session.rollback()
        return _render_cancel(trip, form, refused.status, refused.message)
    db.session.commit()
    flash(f"{trip.reference} is cancelled.", "success")
    return redirect(url_for(".request_detail", public_id=trip.public_id))


def _render_cancel(trip, form, status=200, alert=None):
    """The cancel page; after a refusal the form carries the version now shown."""
    if alert and trip.status in CANCELLABLE:
        form.version.data = str(trip.version)  # the page now shows the current state
    return render_template("hospital/cancel.html", form=form, alert=alert, **_summary_context(trip)), status


@bp.route("/requests/<public_id>/edit", methods=["GET", "POST"])
@roles_required("hospital")
def edit_request(public_id):
    """Change an open request's window, needs or notes."""
    trip = _own_trip(public_id)
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
    try:
        _trip, changed = trips.edit(trip, form.changes(trip), current_user.id, current_user.display_name,
                                    expected_version=version, care_override=form.care_override_value())
    except trips.TransitionRefused as refused:
        db.session.rollback()
        return _render_edit(trip, form, refused.status, refused.message)
    db.session.commit()
    if changed:
        flash(f"{trip.reference} updated; agencies that bid see the change.", "success")
    else:
        flash("Nothing was changed.", "info")
    notice = form.override_not_needed(trip.level_of_care)
    if notice:
        flash(notice, "info")
    return redirect(url_for(".request_detail", public_id=trip.public_id))


def _render_edit(trip, form, status=200, alert=None):
    """The edit page; after a refusal the form carries the version now shown."""
    if alert and trip.status == "open":
        form.version.data = str(trip.version)  # the page now shows the current state
    return render_template("hospital/edit.html", form=form, alert=alert,
                           hints=form.window_hints(stored_start=trip.window_start),
                           editable=trip.status == "open", **_summary_context(trip)), status


# --- new request (and re-post) ------------------------------------------------------------------

def _default_origin(own):
    """The user's usual facility (staff profile), else the hospital's first."""
    profile = db.session.scalar(sa.select(HospitalUser).where(HospitalUser.user_id == current_user.id))
    by_id = {f.id: f for f in own}
    if profile is not None and profile.default_facility_id in by_id:
        return by_id[profile.default_facility_id]
    return own[0] if own else None


#: Minutes a nurse has to fill in the new-request form before its pre-filled earliest pickup
#: comes closer than its bidding time (:func:`default_window`).
FORM_FILL_MINUTES = 15


def _next_quarter_hour(value):
    """The first quarter hour at or after ``value`` (14:15:30 gives 14:30, never 14:15)."""
    floor = value.replace(minute=value.minute - value.minute % 15, second=0, microsecond=0)
    return floor if floor == value else floor + timedelta(minutes=15)


def default_window(deadline_minutes, now=None):
    """The pre-filled pickup window, ``(start, end)`` in naive local time, for a form showing a
    bidding time of ``deadline_minutes``.

    It starts at the first quarter hour at least ``FORM_FILL_MINUTES`` plus the bidding time
    ahead, so bidding closes no later than the earliest pickup when the form is posted within
    that quarter of an hour, and lasts an hour, or longer when bidding would close later: the
    form as shown stays postable for as long as its earliest pickup is accepted (until
    ``WINDOW_GRACE`` after it), since bidding must close by the latest pickup
    (``RequestForm.validate``).  So ``start >= now + FORM_FILL_MINUTES + deadline_minutes`` and
    ``end >= start + WINDOW_GRACE + deadline_minutes``, whatever the time of day the form is
    opened.
    """
    now = now or utcnow()
    lead = timedelta(minutes=FORM_FILL_MINUTES + (deadline_minutes or 0))
    start = _next_quarter_hour(to_local(now + lead).replace(tzinfo=None))
    start_utc = from_local(start)  # measured in real time: a clock change in the window counts
    bidding_closes = start_utc + WINDOW_GRACE + timedelta(minutes=deadline_minutes or 0)
    end = _next_quarter_hour(to_local(max(start_utc + timedelta(hours=1), bidding_closes)).replace(tzinfo=None))
    return start, end


def fit_deadline(form, configured, now=None):
    """The bidding time a re-posted form shows with the window it copied: ``configured``
    (minutes), shortened so bidding closes by the latest pickup even when the form is posted
    at the last moment its earliest pickup is accepted.  A copied window in which not even
    the shortest bidding time (5 minutes) fits is left out, like one already past: the page
    asks for a new one.
    """
    now = now or utcnow()
    form.bid_deadline_minutes.data = configured
    if form.window_start.data is None or form.window_end.data is None:
        return
    start, end = form.window_utc()
    room = int((end - (max(start, now) + WINDOW_GRACE)).total_seconds() // 60)
    if room >= MIN_BID_MINUTES:
        form.bid_deadline_minutes.data = min(configured, room)
    else:
        form.window_start.data = form.window_end.data = None


def _fill_defaults(form, own, preferred):
    """A fresh form: usual origin, new patient reference, the :func:`default_window`."""
    origin = _default_origin(own)
    form.origin_facility.data = origin.public_id if origin else ""
    form.patient_ref.data = trips.new_patient_ref()
    form.window_start.data, form.window_end.data = default_window(form.bid_deadline_minutes.data)
    form.mobility.data = "stretcher"
    form.invite_mode.data = "preferred_then_all" if preferred else "all"
    form.invite_all_after_minutes.data = 10


@bp.route("/requests/new", methods=["GET", "POST"])
@roles_required("hospital")
def new_request():
    """Post a transport request; ``?repost=<id>`` pre-fills it from a cancelled or unfilled one."""
    hospital_id = _hospital_id()
    own, everywhere = _own_facilities(), _all_facilities()
    preferred = trips.active_agency_ids(trips.preferred_agency_ids(hospital_id))
    form = RequestForm()
    form.offer(own, everywhere, len(preferred))
    source_id = request.args.get("repost") if request.method == "GET" else form.reposted_from.data
    source = _own_trip(source_id) if source_id else None
    now = utcnow()
    if source is not None and not _repostable(source, now):
        return _render_request(source, 409, "Only a cancelled or unfilled request can be re-posted.")
    if request.method == "GET":
        form.bid_deadline_minutes.data = configuration.get("bid_deadline_default_minutes")
        if source is not None:
            form.fill_from(source, now)
            fit_deadline(form, form.bid_deadline_minutes.data, now)
        else:
            _fill_defaults(form, own, preferred)
        return _render_new(form, source)
    posted = submissions.previous("hospital", form.submission_id.data, "request", current_user.id)
    if posted is not None:
        return _already_posted(posted)
    if not form.validate_on_submit():
        if form.patient_ref.errors:
            form.patient_ref.data = trips.new_patient_ref()
        return _render_new(form, source, 400)
    source_version = parse_version(form.reposted_version) if source is not None else None
    if source is not None and source_version is None:
        return _render_new(form, source, 400, FORM_ALTERED)
    fields = form.trip_fields()
    if source is not None:
        fields["reposted_from_id"] = source.id
    short_code, user_id, user_label = current_user.hospital.short_code, current_user.id, current_user.display_name
    try:
        claim = submissions.claim("hospital", form.submission_id.data, "request", user_id)
        if claim.repeat:  # the same form, sent at the same moment, was posted first
            return _already_posted(claim.created_id)
        trip = trips.post(hospital_id, short_code, fields, user_id, user_label,
                          care_override=form.care_override_value())
        claim.created(trip.public_id)
        if source is not None and source.status == "open":
            trips.cancel(source, "other", f"Unfilled; re-posted as {trip.reference}", user_id,
                         user_label, expected_version=source_version)
    except (trips.TransitionRefused, submissions.SubmissionRefused) as refused:
        db.session.rollback()
        return _render_new(form, source, refused.status, refused.message)
    same_patient = _same_patient_requests(trip, source)
    db.session.commit()
    flash(f"Request {trip.reference} posted. Agencies may bid until "
          f"{format_time(trip.bid_deadline, '%H:%M')}; bids appear below as they arrive.", "success")
    notice = form.override_not_needed(trip.level_of_care)
    if notice:
        flash(notice, "info")
    if same_patient:
        # The references only: the patient reference stays out of the session cookie.
        flash(f"This patient reference already has an active request: {', '.join(same_patient)}. "
              "If this is not meant as a second transport, cancel one of them.", "warning")
    return redirect(url_for(".request_detail", public_id=trip.public_id))


def _already_posted(public_id):
    """A form sent again: the request its first send posted, said so (303 to it)."""
    if public_id is None or trips.get_for_hospital(public_id, _hospital_id()) is None:
        flash("This form was already sent; reload the page to post a new request.", "info")
        return redirect(url_for(".dashboard"), 303)
    flash("This request was already posted; here it is.", "info")
    return redirect(url_for(".request_detail", public_id=public_id), 303)


def _same_patient_requests(trip, source=None):
    """References of the hospital's other active requests for ``trip``'s patient reference
    (a re-posted request's source excluded), oldest first."""
    query = sa.select(TransportRequest.reference).where(
        TransportRequest.hospital_id == trip.hospital_id,
        TransportRequest.patient_ref == trip.patient_ref,
        TransportRequest.status.in_(("open",) + ACTIVE_STATUSES),
        TransportRequest.id != trip.id)
    if source is not None:
        query = query.where(TransportRequest.id != source.id)
    return list(db.session.scalars(query.order_by(TransportRequest.created_at).limit(5)))


def _render_new(form, source, status=200, alert=None):
    """The new-request form page."""
    return render_template("hospital/new_request.html", form=form, source=source, alert=alert,
                           hints=form.window_hints()), status


# --- preferred agencies -----------------------------------------------------------------------

def _preference_rows(hospital_id):
    """The hospital's preferred agencies, in order."""
    return list(db.session.scalars(
        sa.select(HospitalAgencyPreference).where(HospitalAgencyPreference.hospital_id == hospital_id)
        .order_by(HospitalAgencyPreference.rank, HospitalAgencyPreference.id)
    ))


def _own_preference(pref_id):
    """One entry of the user's hospital's list, or 404."""
    pref = db.session.get(HospitalAgencyPreference, pref_id) if row_id(pref_id) else None
    if pref is None or pref.hospital_id != _hospital_id():
        abort(404)
    return pref


def _render_preferences(form, status=200, alert=None):
    """The preferred-agencies page."""
    rows = _preference_rows(_hospital_id())
    agencies = {a.id: a for a in db.session.scalars(
        sa.select(Agency).where(Agency.id.in_([r.agency_id for r in rows])))} if rows else {}
    return render_template("hospital/preferences.html", form=form, rows=rows, agencies=agencies,
                           alert=alert), status


def _addable_agencies(hospital_id):
    """The center's active agencies not on the hospital's list yet."""
    listed = sa.select(HospitalAgencyPreference.agency_id).where(
        HospitalAgencyPreference.hospital_id == hospital_id)
    listed_ids = set(db.session.scalars(listed))
    return [a for a in db.session.scalars(
        sa.select(Agency).where(Agency.active.is_(True)).order_by(Agency.name)) if a.id not in listed_ids]


@bp.route("/preferences", methods=["GET", "POST"])
@roles_required("hospital")
def preferences():
    """The hospital's ordered list of preferred agencies; POST adds one at the end."""
    hospital_id = _hospital_id()
    form = PreferenceForm()
    form.offer(_addable_agencies(hospital_id))
    if request.method == "GET":
        return _render_preferences(form)
    added = "This agency was already added; here is your list."
    if submissions.previous("hospital", form.submission_id.data, "preference", current_user.id):
        flash(added, "info")
        return redirect(url_for(".preferences"), 303)
    if not form.validate_on_submit():
        return _render_preferences(form, 400)
    agency = form.chosen
    try:
        claim = submissions.claim("hospital", form.submission_id.data, "preference", current_user.id)
    except submissions.SubmissionRefused as refused:
        db.session.rollback()
        return _render_preferences(form, refused.status, refused.message)
    if claim.repeat:
        flash(added, "info")
        return redirect(url_for(".preferences"), 303)
    last = db.session.scalar(sa.select(sa.func.max(HospitalAgencyPreference.rank))
                             .where(HospitalAgencyPreference.hospital_id == hospital_id)) or 0
    preference = HospitalAgencyPreference(hospital_id=hospital_id, agency_id=agency.id, rank=last + 1,
                                          notes=form.notes.data or "")
    db.session.add(preference)
    try:
        db.session.flush()
        claim.created(preference.id)
        db.session.commit()
    except IntegrityError:
        db.session.rollback()
        return _render_preferences(form, 409, f"{agency.name} is already on your list.")
    flash(f"{agency.name} added to your preferred agencies.", "success")
    return redirect(url_for(".preferences"))


def _renumber(rows):
    """Ranks 1..n in list order."""
    for rank, row in enumerate(rows, start=1):
        if row.rank != rank:
            row.rank = rank


@bp.route("/preferences/<int:pref_id>/remove", methods=["POST"])
@roles_required("hospital")
def remove_preference(pref_id):
    """Take an agency off the list; the others close ranks."""
    pref = _own_preference(pref_id)
    if not FlaskForm().validate_on_submit():
        return _render_preferences(_fresh_preference_form(), 400, FORM_ALTERED)
    name = _agency_names([pref.agency_id]).get(pref.agency_id, "The agency")
    db.session.delete(pref)
    db.session.flush()
    _renumber(_preference_rows(pref.hospital_id))
    db.session.commit()
    flash(f"{name} removed from your preferred agencies.", "success")
    return redirect(url_for(".preferences"))


@bp.route("/preferences/<int:pref_id>/move", methods=["POST"])
@roles_required("hospital")
def move_preference(pref_id):
    """Move an agency one place up or down the list."""
    pref = _own_preference(pref_id)
    form = PreferenceMoveForm()
    if not form.validate_on_submit():
        return _render_preferences(_fresh_preference_form(), 400, "Move an agency up or down the list.")
    rows = _preference_rows(pref.hospital_id)
    at = rows.index(pref)
    to = at - 1 if form.direction.data == "up" else at + 1
    if 0 <= to < len(rows):
        rows[at], rows[to] = rows[to], rows[at]
    _renumber(rows)
    db.session.commit()
    return redirect(url_for(".preferences"))


@bp.route("/preferences/<int:pref_id>/notes", methods=["POST"])
@roles_required("hospital")
def preference_notes(pref_id):
    """Change the notes of one preferred agency."""
    pref = _own_preference(pref_id)
    form = PreferenceNotesForm()
    if not form.validate_on_submit():
        message = form.notes.errors[0] if form.notes.errors else FORM_ALTERED
        return _render_preferences(_fresh_preference_form(), 400, message)
    pref.notes = form.notes.data or ""
    db.session.commit()
    flash("Notes saved.", "success")
    return redirect(url_for(".preferences"))


def _fresh_preference_form():
    """An empty add-agency form (for re-rendering the page after a refused action)."""
    form = PreferenceForm(formdata=None)
    form.offer(_addable_agencies(_hospital_id()))
    return form
