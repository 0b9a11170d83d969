"""Transport-center coordinators and administrators: oversight, intervention, administration.

Coordinators and administrators watch the region (board, units, one request,
audit log, silo health) and step in on requests.  Administrators also run the
registry, the accounts and the system configuration.  Each POST is one use
case: it writes one silo and commits once.
"""
import re

from flask import (
    Blueprint,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user

from ..auth.routes import roles_required
from ..config import SILOS
from ..events.relay import retry_parked as requeue_parked
from ..extensions import db
from ..localtime import from_local
from ..models.center import Agency, Hospital
from ..services import (
    audit,
    audit_trail,
    boards,
    configuration,
    csvout,
    degraded,
    intervention,
    oversight,
    registry,
    session_trust,
    submissions,
    trips,
    users,
)
from ..services.trips import TransitionRefused
from ..templating import format_time
from .forms import (
    AgencyForm,
    AssignForm,
    AuditFilterForm,
    AwardForm,
    BoardFilterForm,
    CancelForm,
    ConfirmForm,
    ExtendForm,
    FacilityForm,
    HospitalForm,
    NewHospitalForm,
    ReopenForm,
    UnitFilterForm,
    UserFilterForm,
    UserForm,
    choices,
    config_form_class,
)

bp = Blueprint("center", __name__, url_prefix="/center")


def center_only(view):
    """Coordinators and administrators; any other role gets 403."""
    return roles_required("coordinator", "admin")(view)


def admin_only(view):
    """Administrators only; coordinators (and everyone else) get 403."""
    return roles_required("admin")(view)


def _actor():
    return users.Actor(current_user.id, current_user.email, request.remote_addr)


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
    form, filters, valid = _board_filters()
    data = oversight.board(filters)
    return render_template("center/board.html", form=form, filters=filters, live=True,
                           **data), (200 if valid else 400)


@bp.route("/board/panel")
@center_only
def board_panel():
    _form, filters, valid = _board_filters()
    if not valid:
        return render_template("errors/_panel.html", status=400, title="Filters not understood",
                               message="Reload the board and choose the filters again."), 400
    return render_template("center/_board.html", filters=filters, **oversight.board(filters))


# --- one request: details, timeline, bids, interventions -----------------------------------

def _trip_or_404(public_id):
    trip = trips.get_by_public_id(public_id)
    if trip is None:
        abort(404)
    return trip


def _assign_choices(form, trip, posted=False):
    """On the page: eligible units only.  On a POST every id is left to the service to judge."""
    if posted:
        form.agency.validate_choice = form.unit.validate_choice = False
        return
    grouped = oversight.assignable_units(trip)
    form.agency.choices = choices([(a.id, a.name) for a, _units in grouped], "Choose an agency")
    form.unit.choices = choices(
        [(u.id, f"{a.short_code} · {u.number} ({u.level}) · {u.status.replace('_', ' ')}")
         for a, units in grouped for u in units], "Choose a unit")


def _render_request(trip, status=200, error=None, **forms):
    view = oversight.request_view(trip)
    version = {"version": trip.version}
    assign = forms.get("assign") or AssignForm(formdata=None, data=version)
    if trip.status == "open" and view["bids"] is not None:  # units are in the EMS silo too
        degraded.optional("ems", lambda: _assign_choices(assign, trip))
    context = dict(
        view,
        error=error,
        assign_form=assign,
        extend_form=forms.get("extend") or ExtendForm(formdata=None, data=dict(version, minutes=15)),
        reopen_form=forms.get("reopen") or ReopenForm(formdata=None, data=version),
        cancel_form=forms.get("cancel") or CancelForm(formdata=None, data=version),
        live=True,
    )
    # Several forms share field names (reason, note): each label must name its own field.
    for key, form in (("extend", context["extend_form"]), ("reopen", context["reopen_form"]),
                      ("cancel", context["cancel_form"])):
        for f in form:
            if f.type not in ("HiddenField", "CSRFTokenField"):
                f.id = f.label.field_id = f"{key}-{f.name}"
    return render_template("center/request.html", **context), status


@bp.route("/requests/<public_id>")
@center_only
def request_detail(public_id):
    return _render_request(_trip_or_404(public_id))


@bp.route("/requests/<public_id>/panel")
@center_only
def request_panel(public_id):
    trip = _trip_or_404(public_id)
    return render_template("center/_request_panel.html", **oversight.request_view(trip))


def _intervene(public_id, form_class, key, act, done):
    """Run one intervention: validate the form, act, commit; refusals answer 4xx with the message."""
    trip = _trip_or_404(public_id)
    form = form_class()
    if key == "assign":
        _assign_choices(form, trip, posted=True)
    if not form.validate_on_submit():
        message = ("This form was incomplete or altered; reload the page and try again. Nothing was saved."
                   if key == "award" else "Check the highlighted fields; nothing was saved.")
        return _render_request(trip, 400, message, **{key: form})
    label = intervention.actor_label(current_user.display_name)
    try:
        act(trip, form, label, int(form.version.data))
    except TransitionRefused as refused:
        db.session.rollback()
        trip = _trip_or_404(public_id)
        # The page now shows the request as it is: what was typed stays, at the current version.
        form.version.data = str(trip.version)
        return _render_request(trip, refused.status, refused.message + (
            "" if refused.message.endswith("nothing was saved.") else " Nothing was saved."),
            **{key: form})
    db.session.commit()
    flash(done(trip), "success")
    return redirect(url_for(".request_detail", public_id=public_id))


@bp.route("/requests/<public_id>/award", methods=["POST"])
@center_only
def award(public_id):
    return _intervene(
        public_id, AwardForm, "award",
        lambda trip, form, label, version: intervention.award_bid(
            trip, form.bid.data, current_user.id, label, version),
        lambda trip: f"Awarded to {trip.awarded_agency_name}, {trip.awarded_unit_label}, "
                     "on the hospital's behalf.")


@bp.route("/requests/<public_id>/assign", methods=["POST"])
@center_only
def assign(public_id):
    return _intervene(
        public_id, AssignForm, "assign",
        lambda trip, form, label, version: intervention.assign_unit(
            trip, form.agency.data, form.unit.data, form.eta_minutes.data, form.reason.data,
            current_user.id, label, version),
        lambda trip: f"Assigned to {trip.awarded_agency_name}, {trip.awarded_unit_label}.")


@bp.route("/requests/<public_id>/extend", methods=["POST"])
@center_only
def extend(public_id):
    return _intervene(
        public_id, ExtendForm, "extend",
        lambda trip, form, label, version: intervention.extend_deadline(
            trip, form.minutes.data, (form.note.data or "").strip(), current_user.id, label, version),
        lambda trip: f"Bidding deadline extended to {format_time(trip.bid_deadline)}.")


@bp.route("/requests/<public_id>/reopen", methods=["POST"])
@center_only
def reopen(public_id):
    return _intervene(
        public_id, ReopenForm, "reopen",
        lambda trip, form, label, version: intervention.reopen(
            trip, form.reason.data, current_user.id, label, version),
        lambda trip: "Re-opened for bids; the agency's unit is released.")


@bp.route("/requests/<public_id>/cancel", methods=["POST"])
@center_only
def cancel(public_id):
    return _intervene(
        public_id, CancelForm, "cancel",
        lambda trip, form, label, version: intervention.cancel(
            trip, form.reason.data, form.note.data, current_user.id, label, version),
        lambda trip: "Request cancelled.")


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
    form, args, query, valid = _unit_filters()
    return render_template("center/units.html", form=form, query=query, live=True,
                           **oversight.units_overview(**args)), (200 if valid else 400)


@bp.route("/units/panel")
@center_only
def units_panel():
    _form, args, query, valid = _unit_filters()
    if not valid:
        return render_template("errors/_panel.html", status=400, title="Filters not understood",
                               message="Reload the page and choose the filters again."), 400
    return render_template("center/_units.html", query=query, **oversight.units_overview(**args))


# --- registry (admin) ----------------------------------------------------------------------

def _refused_on_form(form, refused):
    """Put a service refusal on its form field (or the form) and answer its status."""
    field = getattr(form, refused.field, None) if refused.field else None
    if field is not None:
        field.errors = list(field.errors) + [refused.message]
    else:
        form.form_errors.append(refused.message)
    return refused.status


def _get_or_404(model, public_id):
    row = db.session.scalar(db.select(model).where(model.public_id == public_id))
    if row is None:
        abort(404)
    return row


@bp.route("/registry", endpoint="registry")
@admin_only
def registry_index():
    return render_template("center/registry.html", **registry.listing())


def _claim(form, kind):
    """Claim the form's one-time token in the center silo before creating a ``kind``."""
    return submissions.claim("center", form.submission_id.data, kind, current_user.id)


def _repeat(form, kind, message, claim=None):
    """The answer to a creating form sent again (303 to the registry or the account, with
    ``message``), or None when this is its first send."""
    created_id = claim.created_id if claim is not None else submissions.previous(
        "center", form.submission_id.data, kind, current_user.id)
    if claim is None and created_id is None:
        return None
    db.session.rollback()
    flash(message, "info")
    if kind == "user" and created_id:
        return redirect(url_for(".user_edit", public_id=created_id), 303)
    return redirect(url_for(".registry"), 303)


def _hospital_page(form, hospital=None, status=200):
    return render_template("center/hospital_form.html", form=form, hospital=hospital), status


@bp.route("/registry/hospitals/new", methods=["GET", "POST"])
@admin_only
def hospital_new():
    form = NewHospitalForm()
    if request.method == "GET":
        return _hospital_page(form)
    repeat = _repeat(form, "hospital", "This hospital was already registered; here it is.")
    if repeat is not None:
        return repeat
    if not form.validate_on_submit():
        return _hospital_page(form, status=400)
    values = {name: getattr(form, name).data for name in registry.HOSPITAL_FIELDS}
    facility = {"address": form.facility_address.data, "lat": form.facility_lat.data,
                "lon": form.facility_lon.data}
    try:
        claim = _claim(form, "hospital")
        if claim.repeat:
            return _repeat(form, "hospital", "This hospital was already registered; here it is.", claim)
        hospital, _changed = registry.save_hospital(_actor(), values, main_facility=facility)
        claim.created(hospital.public_id)
    except (registry.RegistryRefused, submissions.SubmissionRefused) as refused:
        db.session.rollback()
        return _hospital_page(form, status=_refused_on_form(form, refused))
    db.session.commit()
    flash(f"{hospital.name} is registered; its main campus appears in the hospital's records "
          "in a moment.", "success")
    return redirect(url_for(".registry"))


@bp.route("/registry/hospitals/<public_id>", methods=["GET", "POST"])
@admin_only
def hospital_edit(public_id):
    hospital = _get_or_404(Hospital, public_id)
    form = HospitalForm(obj=hospital)
    if request.method == "GET":
        return _hospital_page(form, hospital)
    if not form.validate_on_submit():
        return _hospital_page(form, hospital, 400)
    values = {name: getattr(form, name).data for name in registry.HOSPITAL_FIELDS}
    try:
        _hospital, changed = registry.save_hospital(_actor(), values, hospital)
    except registry.RegistryRefused as refused:
        db.session.rollback()
        return _hospital_page(form, hospital, _refused_on_form(form, refused))
    db.session.commit()
    if "active" in changed and not hospital.active:
        flash(f"{hospital.name} is deactivated: its users are signed out and cannot sign in, "
              "and it cannot post requests.", "success")
    else:
        flash("Saved." if changed else "Nothing changed.", "success" if changed else "info")
    return redirect(url_for(".registry"))


def _facility_page(form, hospital, facility=None, status=200):
    return render_template("center/facility_form.html", form=form, hospital=hospital,
                           facility=facility), status


def _save_facility(form, hospital, facility=None):
    added = "This facility was already added; the hospital's records show it in a moment."
    if facility is None and (repeat := _repeat(form, "facility", added)) is not None:
        return repeat
    if not form.validate_on_submit():
        return _facility_page(form, hospital, facility, 400)
    values = {name: getattr(form, name).data for name in registry.FACILITY_FIELDS if name != "hospital_id"}
    try:
        claim = _claim(form, "facility") if facility is None else submissions.Claim()
        if claim.repeat:
            return _repeat(form, "facility", added, claim)
        saved, changed = registry.save_facility(_actor(), hospital, values, facility)
        claim.created(saved["public_id"])
    except (registry.RegistryRefused, submissions.SubmissionRefused) as refused:
        db.session.rollback()
        return _facility_page(form, hospital, facility, _refused_on_form(form, refused))
    db.session.commit()
    if changed:
        flash("Saved; the hospital's facility records update in a moment.", "success")
    else:
        flash("Nothing changed.", "info")
    return redirect(url_for(".registry"))


@bp.route("/registry/hospitals/<public_id>/facilities/new", methods=["GET", "POST"])
@admin_only
def facility_new(public_id):
    hospital = _get_or_404(Hospital, public_id)
    form = FacilityForm()
    if request.method == "GET":
        form.city.data = hospital.city
        return _facility_page(form, hospital)
    return _save_facility(form, hospital)


@bp.route("/registry/facilities/<public_id>", methods=["GET", "POST"])
@admin_only
def facility_edit(public_id):
    facility = registry.get_facility(public_id)
    if facility is None:
        abort(404)
    hospital = db.session.get(Hospital, facility.hospital_id)
    if hospital is None:
        abort(404)
    form = FacilityForm(obj=facility)
    if request.method == "GET":
        return _facility_page(form, hospital, facility)
    return _save_facility(form, hospital, facility)


def _agency_page(form, agency=None, status=200):
    return render_template("center/agency_form.html", form=form, agency=agency), status


def _save_agency(form, agency=None):
    added = "This agency was already registered; here it is."
    if agency is None and (repeat := _repeat(form, "agency", added)) is not None:
        return repeat
    if not form.validate_on_submit():
        return _agency_page(form, agency, 400)
    values = {name: getattr(form, name).data for name in registry.AGENCY_FIELDS}
    try:
        claim = _claim(form, "agency") if agency is None else submissions.Claim()
        if claim.repeat:
            return _repeat(form, "agency", added, claim)
        saved, changed = registry.save_agency(_actor(), values, agency)
        claim.created(saved.public_id)
    except (registry.RegistryRefused, submissions.SubmissionRefused) as refused:
        db.session.rollback()
        return _agency_page(form, agency, _refused_on_form(form, refused))
    db.session.commit()
    if agency is None:
        flash(f"{saved.name} is registered; its EMS profile is set up in a moment.", "success")
    elif "active" in changed and not saved.active:
        flash(f"{saved.name} is deactivated: its users are signed out and cannot sign in, its live "
              "bids are withdrawn, and its awarded trips are flagged on the board for reassignment.",
              "success")
    else:
        flash("Saved." if changed else "Nothing changed.", "success" if changed else "info")
    return redirect(url_for(".registry"))


@bp.route("/registry/agencies/new", methods=["GET", "POST"])
@admin_only
def agency_new():
    form = AgencyForm()
    if request.method == "GET":
        return _agency_page(form)
    return _save_agency(form)


@bp.route("/registry/agencies/<public_id>", methods=["GET", "POST"])
@admin_only
def agency_edit(public_id):
    agency = _get_or_404(Agency, public_id)
    form = AgencyForm(obj=agency)
    if request.method == "GET":
        form.levels.data = agency.level_list
        return _agency_page(form, agency)
    return _save_agency(form, agency)


# --- users (admin) -------------------------------------------------------------------------

def _user_form(user=None):
    hospitals, agencies = oversight.registry_names()
    if request.method == "GET" and user is not None:
        # Not ``obj=user``: ``user.hospital`` is the registry row, the field wants its id.
        form = UserForm(data={"email": user.email, "display_name": user.display_name, "role": user.role,
                              "hospital": user.hospital_id, "agency": user.agency_id,
                              "active": user.active, "org_admin": bool(user.org_admin)})
    else:
        form = UserForm()
    form.hospital.choices = choices([(h.id, f"{h.short_code} · {h.name}") for h in hospitals.values()],
                                    "None")
    form.agency.choices = choices([(a.id, a.name) for a in agencies.values()], "None")
    return form


def _user_page(form, user=None, status=200):
    return render_template("center/user_form.html", form=form, user=user,
                           reset_form=ConfirmForm(formdata=None)), status


def _password_page(user, password, created, status=200):
    return render_template("center/user_password.html", user=user, password=password,
                           created=created), status


@bp.route("/users", endpoint="users")
@admin_only
def users_index():
    form = UserFilterForm(request.args)
    if not form.validate():
        return render_template("center/users.html", form=form, users=[], truncated=False), 400
    found, truncated = users.listing(form.q.data, form.role.data or None, form.status.data or None)
    hospitals, agencies = oversight.registry_names()
    return render_template("center/users.html", form=form, users=found, truncated=truncated,
                           hospitals=hospitals, agencies=agencies)


@bp.route("/users/new", methods=["GET", "POST"])
@admin_only
def user_new():
    session_trust.require_center()
    form = _user_form()
    if request.method == "GET":
        return _user_page(form)
    created = ("This account was already created; its temporary password was shown then. "
               "If it was lost, reset the password.")
    if (repeat := _repeat(form, "user", created)) is not None:
        return repeat
    if not form.validate_on_submit():
        return _user_page(form, status=400)
    try:
        claim = _claim(form, "user")
        if claim.repeat:
            return _repeat(form, "user", created, claim)
        user, password = users.create(_actor(), form.email.data, form.display_name.data, form.role.data,
                                      form.hospital.data, form.agency.data, form.org_admin.data)
        claim.created(user.public_id)
    except (users.UserRefused, submissions.SubmissionRefused) as refused:
        db.session.rollback()
        return _user_page(form, status=_refused_on_form(form, refused))
    db.session.commit()
    return _password_page(user, password, created=True, status=201)


@bp.route("/users/<public_id>", methods=["GET", "POST"])
@admin_only
def user_edit(public_id):
    user = users.get(public_id)
    if user is None:
        abort(404)
    form = _user_form(user)
    if request.method == "GET":
        return _user_page(form, user)
    if not form.validate_on_submit():
        return _user_page(form, user, 400)
    try:
        changed = users.update(_actor(), user, form.email.data, form.display_name.data, form.role.data,
                               form.hospital.data, form.agency.data, form.active.data,
                               form.org_admin.data)
    except users.UserRefused as refused:
        db.session.rollback()
        return _user_page(form, users.get(public_id), _refused_on_form(form, refused))
    db.session.commit()
    flash("Saved." if changed else "Nothing changed.", "success" if changed else "info")
    return redirect(url_for(".users"))


@bp.route("/users/<public_id>/reset-password", methods=["POST"])
@admin_only
def user_reset_password(public_id):
    user = users.get(public_id)
    if user is None:
        abort(404)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    try:
        password = users.reset_password(_actor(), user)
    except users.UserRefused as refused:
        db.session.rollback()
        flash(refused.message, "error")
        return _user_page(_user_form(user), user, refused.status)
    db.session.commit()
    return _password_page(user, password, created=False)


# --- configuration (admin) -----------------------------------------------------------------

def _config_page(form, status=200):
    return render_template("center/config.html", form=form, settings=configuration.SETTINGS,
                           groups=configuration.grouped()), status


@bp.route("/config", methods=["GET", "POST"])
@admin_only
def config():
    session_trust.require_center()
    form_class = config_form_class(configuration.SETTINGS, configuration.AUTO_AWARD_POLICIES)
    if request.method == "GET":
        return _config_page(form_class(data={k: str(v) for k, v in configuration.get_all().items()}))
    form = form_class()
    if not form.validate_on_submit():
        return _config_page(form, 400)
    raw = {key: getattr(form, key).data for key in configuration.SETTINGS}
    changed, errors = configuration.save(raw, _actor())
    if errors:
        db.session.rollback()
        for key, message in errors.items():
            getattr(form, key).errors = [message]
        return _config_page(form, 400)
    db.session.commit()
    if changed:
        flash(f"Saved {len(changed)} change{'s' if len(changed) != 1 else ''}.", "success")
    else:
        flash("Nothing changed.", "info")
    return redirect(url_for(".config"))


# --- audit log -----------------------------------------------------------------------------

def _audit_filters():
    form = AuditFilterForm(request.args)
    if not form.validate():
        return form, None, {}
    filters = audit_trail.AuditFilters(
        user=form.user.data or None, action=form.action.data or None,
        entity_type=form.entity_type.data or None, entity_id=form.entity_id.data or None,
        since=from_local(form.since.data), until=from_local(form.until.data))
    query = {key: request.args[key] for key in ("user", "action", "entity_type", "entity_id",
                                                "since", "until") if request.args.get(key)}
    return form, filters, query


@bp.route("/audit", endpoint="audit")
@center_only
def audit_log():
    form, filters, query = _audit_filters()
    if filters is None:
        return render_template("center/audit.html", form=form, entries=[], next_before=None,
                               query={}, paged=False), 400
    before = request.args.get("before", "")
    if before and not re.fullmatch(r"[0-9]{1,18}", before):
        abort(400)
    entries, next_before = audit_trail.page(filters, int(before) if before else None)
    return render_template("center/audit.html", form=form, entries=entries, next_before=next_before,
                           query=query, paged=bool(before))


@bp.route("/audit/export.csv")
@center_only
def audit_export():
    form, filters, _query = _audit_filters()
    if filters is None:
        problems = " ".join(f"{field.label.text}: {' '.join(field.errors)}" for field in form if field.errors)
        abort(400, f"The filters are not valid ({problems}); correct them on the audit page and export again.")
    lines = audit_trail.csv_lines(filters, lambda value: format_time(value, "%Y-%m-%d %H:%M:%S %Z"))
    return csvout.response(stream_with_context(lines), "medport-audit.csv")


# --- silo health ---------------------------------------------------------------------------

@bp.route("/health")
@center_only
def health():
    return render_template("center/health.html", **oversight.silo_health())


@bp.route("/health/panel")
@center_only
def health_panel():
    return render_template("center/_health.html", **oversight.silo_health())


@bp.route("/health/parked/retry", methods=["POST"])
@center_only
def retry_parked():
    """Put parked events back in the relay's queue: one (``silo`` and ``event``) or all."""
    silo, event_id = request.form.get("silo") or None, request.form.get("event") or None
    if (silo is not None and silo not in SILOS) or (event_id is not None and (silo is None or len(event_id) > 36)):
        abort(400, "Choose a parked event from the list on the health page.")
    try:
        count = requeue_parked(silo, event_id)
    except Exception as exc:  # the silo went down meanwhile: nothing was changed there
        db.session.rollback()
        abort(503, f"The {silo or 'event'} database could not be reached ({type(exc).__name__}); try again.")
    if event_id is not None and count == 0:
        abort(404, "That event is no longer parked; it may have been retried already.")
    audit.record("relay.parked_retried", user=current_user, ip=request.remote_addr, entity_type="outbox_event",
                 entity_id=event_id, after={"silo": silo, "events": count})
    db.session.commit()
    flash(f"{count} parked event{'' if count == 1 else 's'} queued for delivery again." if count
          else "No events were parked.", "success" if count else "info")
    return redirect(url_for("center.health"))

