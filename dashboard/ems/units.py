"""The agency's units (add, edit, status) and their availability windows (shift, break, out
of service)."""
from datetime import datetime, time, timedelta

from flask import render_template, request
from flask_login import current_user
from wtforms.fields.choices import SelectChoice

from ..auth.routes import roles_required
from ..localtime import from_local, to_local
from ..models.vocabulary import LEVEL_LABELS, ROUTE_STATUS_LABELS
from ..services import crew, ems_reads, submissions
from ..services import units as unit_service
from ..views import SEE_FIELDS, act, actor, found
from .forms import AvailabilityForm, UnitForm, UnitStatusForm
from .routes import (
    _agency,
    _already_done,
    _local_day,
    _unit_or_404,
    _window_or_404,
    bp,
)

# --- units ---------------------------------------------------------------------------------


def _units_context():
    agency = _agency()
    return {"units": unit_service.agency_units(agency.id),
            # each unit's current trip: the one under way, else the next planned one
            "current_routes": ems_reads.current_routes(agency.id),
            "route_status_labels": ROUTE_STATUS_LABELS,
            "staffing": crew.staffing(agency.id)}  # who staffs each unit this shift


def _unit_form(agency, **kwargs):
    form = UnitForm(**kwargs)
    form.level.choices = [SelectChoice(level, LEVEL_LABELS[level]) for level in agency.level_list
                          if level in LEVEL_LABELS]
    return form


def _render_units(form=None, message=None, status=200):
    agency = _agency()
    form = form or _unit_form(agency, formdata=None)
    return render_template("ems/units.html", live=True, form=form, message=message,
                           **_units_context()), status


@bp.route("/units")
@roles_required("ems")
def units():
    """The agency's units with their status; add a unit; change a status.

    Refuses: 403 a user without an agency."""
    return _render_units()


@bp.route("/units/panel")
@roles_required("ems")
def units_panel():
    """The units table alone, for the live refresh.

    Refuses: 403 a user without an agency."""
    return render_template("ems/_units_panel.html", **_units_context())


@bp.route("/units", methods=["POST"])
@roles_required("ems")
def create_unit():
    """Add a unit to the agency; the form sent again shows the units (303).

    Refuses: 403 a user without an agency; 400 a form not filled in right (a level the agency
    does not serve included); 409 a number another unit of the agency has."""
    agency = _agency()
    agency_id, levels = agency.id, agency.level_list
    form = _unit_form(agency)
    user_id = current_user.id
    again = "This unit was already added; here it is."
    if submissions.previous("ems", form.submission_id.data, "unit", user_id) is not None:
        return _already_done(again, "ems.units")
    if not form.validate_on_submit():
        return _render_units(form, "Check the highlighted fields; no unit was added.", 400)

    def create():
        claim = submissions.claim("ems", form.submission_id.data, "unit", user_id)
        if claim.repeat:
            return None
        unit = unit_service.create_unit(agency_id, levels, form.number.data, form.level.data,
                                        form.base_station.data, form.shift_start.data, form.shift_end.data,
                                        actor=actor())
        claim.created(unit.public_id)
        return f"{unit.number} added."

    return act(create,
               done=lambda message: found("ems.units", message) if message else _already_done(again, "ems.units"),
               refused=lambda message, status: _render_units(form, message, status), form=form)


@bp.route("/units/<public_id>/edit", methods=["GET", "POST"])
@roles_required("ems")
def edit_unit(public_id):
    """Change a unit's number, level, base station or usual shift.

    Refuses: 403 a user without an agency; 404 another agency's unit; 400 a form not filled in
    right; 409 a number another unit of the agency has."""
    unit = _unit_or_404(public_id)
    agency = _agency()
    levels = agency.level_list
    form = _unit_form(agency, obj=unit)

    def render(message=None, status=200):
        return render_template("ems/unit_edit.html", unit=unit, form=form, message=message), status

    if request.method != "POST":
        return render()
    if not form.validate_on_submit():
        return render(SEE_FIELDS, 400)

    def update():
        unit_service.update_unit(unit, levels, form.number.data, form.level.data, form.base_station.data,
                                 form.shift_start.data, form.shift_end.data, actor=actor())
        return f"{unit.number} saved."

    return act(update, done=lambda message: found("ems.units", message), refused=render, form=form)


@bp.route("/units/<public_id>/status", methods=["POST"])
@roles_required("ems")
def unit_status(public_id):
    """Set a unit available, on break or out of service (assigned follows its trips).

    Refuses: 403 a user without an agency; 404 another agency's unit; 400 a status not listed;
    409 a unit under way on a trip."""
    unit = _unit_or_404(public_id)
    form = UnitStatusForm()
    if not form.validate_on_submit():
        return _render_units(message="Choose one of the listed statuses.", status=400)
    number = unit.number
    return act(lambda: unit_service.change_status(unit, form.status.data, actor=actor()),
               done=lambda changed: found(
                   "ems.units", f"{number} is now {form.status.data.replace('_', ' ')}." if changed else None),
               refused=lambda message, status: _render_units(message=message, status=status))


# --- availability --------------------------------------------------------------------------

def _availability_form(agency_id, **kwargs):
    form = AvailabilityForm(**kwargs)
    form.unit.choices = [SelectChoice("", "Choose a unit")] + [
        SelectChoice(unit.public_id, unit.label) for unit in unit_service.agency_units(agency_id)]
    return form


def _render_availability(day_raw=None, form=None, message=None, status=200):
    agency = _agency()
    day, starts, ends = _local_day(day_raw if day_raw is not None else request.args.get("date"))
    units = unit_service.agency_units(agency.id)
    windows = unit_service.agency_windows(agency.id, starts, ends)
    routes = unit_service.day_routes(agency.id, starts, ends)
    if form is None:
        form = _availability_form(agency.id, formdata=None)
        form.starts_at.data = datetime.combine(day, time(7, 0))
        form.ends_at.data = datetime.combine(day, time(19, 0))
    return render_template(
        "ems/availability.html", day=day, form=form, message=message, windows=windows,
        timeline=unit_service.day_timeline(units, windows, routes, starts),
        hours=[to_local(starts + timedelta(hours=h)) for h in range(24)],
        cell_labels=unit_service.CELL_LABELS, kinds=unit_service.AVAILABILITY_KINDS,
        previous_day=day - timedelta(days=1), next_day=day + timedelta(days=1),
    ), status


@bp.route("/availability")
@roles_required("ems")
def availability():
    """Each unit's day as a timeline of shift, breaks, out of service and trips.

    Refuses: 403 a user without an agency; 400 a malformed day or one too far from today."""
    return _render_availability()


def _window_day(form):
    """``{"date": ...}`` of the window a form names, when it names one."""
    return {"date": form.starts_at.data.date().isoformat()} if form.starts_at.data else {}


@bp.route("/availability", methods=["POST"])
@roles_required("ems")
def add_availability():
    """Add a shift, break or out-of-service window to one of the agency's units; the form sent
    again shows the windows (303).

    Refuses: 403 a user without an agency; 404 another agency's unit; 400 a form not filled in
    right (an end before the start included); 409 a window overlapping another of its kind."""
    agency = _agency()
    form = _availability_form(agency.id)
    day_raw = request.args.get("date")
    user_id = current_user.id
    added = "This window was already added; here it is."
    if submissions.previous("ems", form.submission_id.data, "availability", user_id) is not None:
        return _already_done(added, "ems.availability", **_window_day(form))
    if not form.validate_on_submit():
        return _render_availability(day_raw, form, "Check the highlighted fields; nothing was saved.", 400)
    unit = _unit_or_404(form.unit.data)
    starts, ends = from_local(form.starts_at.data), from_local(form.ends_at.data)

    def add():
        claim = submissions.claim("ems", form.submission_id.data, "availability", user_id)
        if claim.repeat:
            return None
        window = unit_service.add_availability(unit, form.kind.data, starts, ends, form.note.data, actor=actor())
        claim.created(window.id)
        return f"{unit.number}: {unit_service.AVAILABILITY_KINDS[form.kind.data].lower()} window added."

    return act(add,
               done=lambda message: found("ems.availability", message,
                                          date=form.starts_at.data.date().isoformat()) if message
               else _already_done(added, "ems.availability", **_window_day(form)),
               refused=lambda message, status: _render_availability(day_raw, form, message, status),
               form=form)


@bp.route("/availability/remove", methods=["POST"])
@roles_required("ems")
def remove_availability():
    """Remove one of the agency's availability windows.

    Refuses: 403 a user without an agency; 404 another agency's window (or none)."""
    window = _window_or_404(request.form.get("window_id"))
    day = to_local(window.starts_at).date().isoformat()
    return act(lambda: unit_service.remove_availability(window, actor=actor()),
               done=lambda _: found("ems.availability", "Window removed.", date=day),
               refused=lambda message, status: _render_availability(day, None, message, status))
