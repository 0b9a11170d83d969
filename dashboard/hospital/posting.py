"""Hospital staff posting a transport request, or re-posting a cancelled or unfilled one
(views on ``hospital.bp``).

The form is pre-filled (usual facility, a new patient reference, a pickup window that leaves
room for the bidding time); posting claims the form's one-time token first, so a form sent
twice posts once, and writes through :func:`dashboard.views.act`.
"""
from datetime import timedelta

from flask import flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..auth.routes import roles_required
from ..localtime import from_local, to_local
from ..models.base import utcnow
from ..services import configuration, hospital_reads, submissions, trip_posting, trips
from ..templating import format_time
from ..views import act, actor
from .forms import MIN_BID_MINUTES, WINDOW_GRACE, RequestForm, parse_version
from .routes import (
    FORM_ALTERED,
    _all_facilities,
    _hospital_id,
    _own_facilities,
    _render_request,
    _repostable,
    _trip_or_404,
    bp,
)


def _default_origin(own):
    """The user's usual facility (staff profile), else the hospital's first."""
    default_id = hospital_reads.default_facility_id(current_user.id)
    by_id = {f.id: f for f in own}
    if default_id in by_id:
        return by_id[default_id]
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
    form.patient_ref.data = trip_posting.new_patient_ref()
    form.window_start.data, form.window_end.data = default_window(form.bid_deadline_minutes.data)
    form.mobility.data = "stretcher"
    form.invite_mode.data = "preferred_then_all" if preferred else "all"
    form.invite_all_after_minutes.data = 10


@bp.route("/requests/new", methods=["GET", "POST"])
@roles_required("hospital")
def new_request():
    """Post a transport request; ``?repost=<id>`` pre-fills it from a cancelled or unfilled one.

    Refuses: 404 another hospital's request to re-post; 409 a re-post of a request neither
    cancelled nor unfilled (or a stale version of it), or a form token used for something else;
    400 a form not filled in right (a need above the level of care without an override).  A form
    sent again answers 303 to what its first send posted."""
    hospital_id = _hospital_id()
    own, everywhere = _own_facilities(), _all_facilities()
    preferred = trips.active_agency_ids(trip_posting.preferred_agency_ids(hospital_id))
    form = RequestForm()
    form.offer(own, everywhere, len(preferred))
    source_id = request.args.get("repost") if request.method == "GET" else form.reposted_from.data
    source = _trip_or_404(source_id) if source_id else None
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
            form.patient_ref.data = trip_posting.new_patient_ref()
        return _render_new(form, source, 400)
    source_version = parse_version(form.reposted_version) if source is not None else None
    if source is not None and source_version is None:
        return _render_new(form, source, 400, FORM_ALTERED)
    fields = form.trip_fields()
    if source is not None:
        fields["reposted_from_id"] = source.id
    short_code, user_id = current_user.hospital.short_code, current_user.id

    def post():
        claim = submissions.claim("hospital", form.submission_id.data, "request", user_id)
        if claim.repeat:  # the same form, sent at the same moment, was posted first
            return claim.created_id, None, ()
        trip = trip_posting.post(hospital_id, short_code, fields, care_override=form.care_override_value(),
                                 actor=actor())
        claim.created(trip.public_id)
        if source is not None and source.status == "open":
            trips.cancel(source, "other", f"Unfilled; re-posted as {trip.reference}",
                         expected_version=source_version, actor=actor())
        return trip.public_id, trip, hospital_reads.same_patient_references(trip, source)

    return act(post, done=lambda result: _posted(form, *result),
               refused=lambda message, status: _render_new(form, source, status, message),
               form=form)


def _posted(form, public_id, trip, same_patient):
    """The answer to a posting: the new request's page (or, for a repeat, the first one's)."""
    if trip is None:
        return _already_posted(public_id)
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


def _render_new(form, source, status=200, message=None):
    """The new-request form page."""
    return render_template("hospital/new_request.html", form=form, source=source, message=message,
                           hints=form.window_hints()), status
