"""Hospital staff: recurring series (services.series), under ``/hospital/series``.

Scoped to the signed-in user's hospital: another hospital's series answers 404.  Each use
case writes the hospital silo only, through :func:`dashboard.views.act` (one commit).
"""
from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from ..auth.routes import roles_required
from ..localtime import local_today
from ..models.hospital import WEEKDAYS
from ..services import (
    center_reads,
    configuration,
    hospital_reads,
    series_changes,
    submissions,
    trip_posting,
    trips,
)
from ..services import series as series_service
from ..views import act, actor
from ..views import found as found_redirect
from .forms import ChangeForm, ExceptionForm, SeriesCancelForm, SeriesForm, parse_version

bp = Blueprint("series", __name__, url_prefix="/hospital/series")

FORM_ALTERED = "This form was altered or is incomplete; reload the page and try again. Nothing was saved."


def _hospital_id():
    """The signed-in user's hospital (center registry id)."""
    return current_user.hospital_id


def _series_or_404(public_id):
    """The user's hospital's series, or 404."""
    found = series_service.get_for_hospital(public_id, _hospital_id())
    if found is None:
        abort(404)
    return found




def _agencies():
    """Active agencies of the registry (read as last known while the center is unreachable)."""
    return [a for a in center_reads.registry_names()[1].values() if a.active]


@bp.route("/")
@roles_required("hospital")
def index():
    """The hospital's series on one page: rule, next occurrences, state.

    Refuses nothing a hospital user may ask (other roles: the role check's 403)."""
    rows = series_service.of_hospital(_hospital_id())
    today = local_today()
    names = {a.id: a.name for a in center_reads.registry_names()[1].values()}
    return render_template("series/index.html", rows=[
        {"series": s, "next": series_service.preview(s, 3, today) if s.status == "active" else []}
        for s in rows], agency_names=names, WEEKDAYS=WEEKDAYS)


def _new_form():
    """The new-series form offering the hospital's facilities and the active agencies; and the
    hospital's active preferred agencies."""
    form = SeriesForm()
    preferred = trips.active_agency_ids(trip_posting.preferred_agency_ids(_hospital_id()))
    form.offer(hospital_reads.own_facilities(_hospital_id()), hospital_reads.all_facilities(), len(preferred))
    form.offer_agencies(_agencies())
    return form, preferred


@bp.route("/new", methods=["GET", "POST"])
@roles_required("hospital")
def new():
    """Create a series from one form: the request, the days or interval, the time, the end.

    Refuses: 400 a form not filled in right (a rule that cannot stand, a need above the level of
    care without an override); 409 a form token used for something else.  A form sent again
    answers 303 to the series its first send created."""
    form, preferred = _new_form()
    if request.method == "GET":
        own = form._own
        form.origin_facility.data = next(iter(own)) if len(own) == 1 else ""
        form.patient_ref.data = trip_posting.new_patient_ref()
        form.mobility.data = "wheelchair"
        form.bid_deadline_minutes.data = configuration.get("bid_deadline_default_minutes")
        form.invite_mode.data = "preferred_then_all" if preferred else "all"
        form.invite_all_after_minutes.data = 10
        form.start_date.data = local_today()
        return _render_new(form)
    done = submissions.previous("hospital", form.submission_id.data, "series", current_user.id)
    if done is not None:
        flash("This series was already created; here it is.", "info")
        return redirect(url_for(".detail", public_id=done), 303)
    if not form.validate_on_submit():
        if form.patient_ref.errors:
            form.patient_ref.data = trip_posting.new_patient_ref()
        return _render_new(form, 400)
    user_id, code, hospital_id = current_user.id, current_user.hospital.short_code, _hospital_id()

    def create():
        claim = submissions.claim("hospital", form.submission_id.data, "series", user_id)
        if claim.repeat:
            return claim.created_id, True
        created = series_service.create(hospital_id, code, form.series_values(), actor=actor())
        claim.created(created.public_id)
        return created.public_id, False

    return act(create, done=lambda result: _created(*result),
               refused=lambda message, status: _render_new(form, status, message), form=form)


def _created(public_id, repeat):
    """The answer to a creation: the new series (303 to the first one for a repeat)."""
    if repeat:
        return redirect(url_for(".detail", public_id=public_id), 303)
    return found_redirect(".detail", "Series created. Its occurrences are posted as requests ahead of their "
                     f"bidding lead time, {configuration.get('series_generate_days')} days ahead.",
                     public_id=public_id)


def _render_new(form, status=200, message=None):
    """The new-series page; ``alert`` explains a refusal (answered with ``status``)."""
    return render_template("series/new.html", form=form, message=message, WEEKDAYS=WEEKDAYS), status


def _detail_context(found, exception_form=None, change_form=None, cancel_form=None):
    """What the series page shows: the series, its occurrences, and its three forms (blank
    unless given, e.g. one sent back with its errors)."""
    if exception_form is None:
        exception_form = ExceptionForm(formdata=None, prefix="exception")
    if change_form is None:
        change_form = ChangeForm(formdata=None, prefix="change")
        change_form.fill_from(found)
        change_form.from_day.data = local_today()
    if cancel_form is None:
        cancel_form = SeriesCancelForm(formdata=None, prefix="cancel")
        cancel_form.version.data = str(found.version)
    names = {a.id: a.name for a in center_reads.registry_names()[1].values()}
    return dict(series=found, occurrences=series_service.occurrence_requests(found.id),
                upcoming=series_service.preview(found, 10) if found.status == "active" else [],
                exception_form=exception_form, change_form=change_form, cancel_form=cancel_form,
                agency_names=names, WEEKDAYS=WEEKDAYS)


def _render_detail(found, status=200, message=None, **forms):
    """The series page; ``alert`` explains a refusal (answered with ``status``)."""
    return render_template("series/detail.html", message=message, **_detail_context(found, **forms)), status


@bp.route("/<public_id>")
@roles_required("hospital")
def detail(public_id):
    """One series: its rule, exceptions, occurrences, and the forms that change it.

    Refuses: 404 another hospital's series (or none)."""
    return _render_detail(_series_or_404(public_id))


@bp.route("/<public_id>/exception", methods=["POST"])
@roles_required("hospital")
def exception(public_id):
    """Skip one date, or move its occurrence.

    Refuses: 404 another hospital's series; 400 a form not filled in right (a date not of the
    rule, a move into the past); 409 a series not active, or a date already handled."""
    found = _series_or_404(public_id)
    form = ExceptionForm(prefix="exception")
    if not form.validate_on_submit():
        return _render_detail(found, 400, "Check the highlighted fields; nothing was changed.",
                              exception_form=form)
    def apply():
        if form.kind.data == "skip":
            series_changes.skip(found, form.day.data, form.note.data, actor=actor())
            return f"{form.day.data:%a %d %b} skipped."
        series_changes.move(found, form.day.data, form.moved_to.data, form.moved_to.data.fold,
                            form.note.data, actor=actor())
        return f"The occurrence of {form.day.data:%a %d %b} moved to {form.moved_to.data:%a %d %b %H:%M}."

    return act(apply, done=lambda message: found_redirect(".detail", message, public_id=public_id),
               refused=lambda message, status: _render_detail(_series_or_404(public_id), status, message,
                                                              exception_form=form),
               form=form)


@bp.route("/<public_id>/change", methods=["POST"])
@roles_required("hospital")
def change(public_id):
    """"This and later": change the time, days or needs from a date on.

    Refuses: 404 another hospital's series; 400 a form not filled in right; 409 a series not
    active (or a stale version)."""
    found = _series_or_404(public_id)
    form = ChangeForm(prefix="change")
    form._weekly = found.frequency == "weekly"
    if not form.validate_on_submit():
        return _render_detail(found, 400, "Check the highlighted fields; nothing was changed.", change_form=form)
    version = parse_version(form.version)
    if version is None:
        return _render_detail(found, 400, FORM_ALTERED, change_form=form)
    return act(
        lambda: series_changes.change_from(found, form.from_day.data, form.changes(found), version,
                                           actor=actor()).public_id,
        done=lambda successor_id: found_redirect(".detail", f"Changed from {form.from_day.data:%a %d %b} on: the series continues as shown here.",
            public_id=successor_id),
        refused=lambda message, status: _render_detail(_series_or_404(public_id), status, message,
                                                       change_form=form),
        form=form)


@bp.route("/<public_id>/cancel", methods=["POST"])
@roles_required("hospital")
def cancel(public_id):
    """Cancel the series, with a reason: its occurrences still ahead are cancelled.

    Refuses: 404 another hospital's series; 400 a form not filled in right; 409 a series
    cancelled already (or a stale version)."""
    found = _series_or_404(public_id)
    form = SeriesCancelForm(prefix="cancel")
    if not form.validate_on_submit():
        return _render_detail(found, 400, "Check the highlighted fields; nothing was changed.", cancel_form=form)
    version = parse_version(form.version)
    if version is None:
        return _render_detail(found, 400, FORM_ALTERED, cancel_form=form)
    return act(
        lambda: series_changes.cancel(found, form.reason.data, form.note.data, version, actor=actor()),
        done=lambda count: found_redirect(".detail", f"Series cancelled; {count} occurrence{'s' if count != 1 else ''} still ahead "
            "cancelled with it.", public_id=public_id),
        refused=lambda message, status: _render_detail(_series_or_404(public_id), status, message,
                                                       cancel_form=form),
        form=form)
