"""The registry (administrators): hospitals, their facilities and EMS agencies, on the ``center``
blueprint.  Creating forms carry a one-time token: a form sent again answers with what its first
send created."""
from flask import abort, render_template, request

from ..services import registry
from ..views import act, found
from .forms import AgencyForm, FacilityForm, HospitalForm, NewHospitalForm
from .routes import _actor, admin_only, bp
from .submitting import claimed, on_form, repeat_of


def _hospital_or_404(public_id):
    """The registry's hospital ``public_id``, else 404."""
    hospital = registry.get_hospital(public_id)
    if hospital is None:
        abort(404)
    return hospital


def _agency_or_404(public_id):
    """The registry's agency ``public_id``, else 404."""
    agency = registry.get_agency(public_id)
    if agency is None:
        abort(404)
    return agency


def _facility_or_404(public_id):
    """``(facility, hospital)`` of the facility ``public_id`` and its registry hospital, else 404."""
    facility = registry.get_facility(public_id)
    hospital = registry.hospital_of(facility) if facility is not None else None
    if hospital is None:
        abort(404)
    return facility, hospital


@bp.route("/registry", endpoint="registry")
@admin_only
def registry_index():
    """Hospitals with their facilities and agencies with their EMS profile state.

    Refuses nothing beyond the role check (403: administrators only)."""
    return render_template("center/registry.html", **registry.listing())


def _hospital_page(form, hospital=None, status=200):
    return render_template("center/hospital_form.html", form=form, hospital=hospital), status


@bp.route("/registry/hospitals/new", methods=["GET", "POST"])
@admin_only
def hospital_new():
    """Register a hospital with its main campus (the hospital silo gets the campus by event).

    Refuses: 400 a form not filled in right or a name or code another hospital has; 409 a
    form token used for something else.  A form sent again answers 303 with the first one's."""
    form = NewHospitalForm()
    if request.method == "GET":
        return _hospital_page(form)
    registered = "This hospital was already registered; here it is."
    if (repeat := repeat_of(form, "hospital", registered)) is not None:
        return repeat
    if not form.validate_on_submit():
        return _hospital_page(form, status=400)
    values = {name: getattr(form, name).data for name in registry.HOSPITAL_FIELDS}
    facility = {"address": form.facility_address.data, "lat": form.facility_lat.data,
                "lon": form.facility_lon.data}

    def done(result):
        claim, saved = result
        if saved is None:
            return repeat_of(form, "hospital", registered, claim)
        return found(".registry", f"{saved[0].name} is registered; its main campus appears in the "
                     "hospital's records in a moment.")

    return act(
        lambda: claimed(form, "hospital",
                        lambda: registry.save_hospital(_actor(), values, main_facility=facility),
                        lambda saved: saved[0].public_id),
        done=done,
        refused=lambda message, status: _hospital_page(on_form(form, message), status=status),
        form=form)


@bp.route("/registry/hospitals/<public_id>", methods=["GET", "POST"])
@admin_only
def hospital_edit(public_id):
    """Edit a hospital; deactivating it signs its users out and stops its requests.

    Refuses: 404 no such hospital; 400 a form not filled in right or a name or code another
    hospital has."""
    hospital = _hospital_or_404(public_id)
    form = HospitalForm(obj=hospital)
    if request.method == "GET":
        return _hospital_page(form, hospital)
    if not form.validate_on_submit():
        return _hospital_page(form, hospital, 400)
    values = {name: getattr(form, name).data for name in registry.HOSPITAL_FIELDS}

    def done(result):
        _saved, changed = result
        if "active" in changed and not hospital.active:
            return found(".registry", f"{hospital.name} is deactivated: its users are signed out and "
                         "cannot sign in, and it cannot post requests.")
        return found(".registry", "Saved." if changed else "Nothing changed.",
                     "success" if changed else "info")

    return act(
        lambda: registry.save_hospital(_actor(), values, hospital),
        done=done,
        refused=lambda message, status: _hospital_page(on_form(form, message), hospital, status),
        form=form)


def _facility_page(form, hospital, facility=None, status=200):
    return render_template("center/facility_form.html", form=form, hospital=hospital,
                           facility=facility), status


def _save_facility(form, hospital, facility=None):
    added = "This facility was already added; the hospital's records show it in a moment."
    if facility is None and (repeat := repeat_of(form, "facility", added)) is not None:
        return repeat
    if not form.validate_on_submit():
        return _facility_page(form, hospital, facility, 400)
    values = {name: getattr(form, name).data for name in registry.FACILITY_FIELDS if name != "hospital_id"}

    def save():
        return registry.save_facility(_actor(), hospital, values, facility)

    def done(result):
        claim, saved = result
        if saved is None:
            return repeat_of(form, "facility", added, claim)
        if saved[1]:
            return found(".registry", "Saved; the hospital's facility records update in a moment.")
        return found(".registry", "Nothing changed.", "info")

    return act(
        lambda: claimed(form, "facility", save, lambda saved: saved[0]["public_id"])
        if facility is None else (None, save()),
        done=done,
        refused=lambda message, status: _facility_page(on_form(form, message), hospital, facility, status),
        form=form)


@bp.route("/registry/hospitals/<public_id>/facilities/new", methods=["GET", "POST"])
@admin_only
def facility_new(public_id):
    """Add a facility to a hospital (the hospital silo gets it by event).

    Refuses: 404 no such hospital; 400 a form not filled in right; 409 a form token used for
    something else.  A form sent again answers 303 with the first one's."""
    hospital = _hospital_or_404(public_id)
    form = FacilityForm()
    if request.method == "GET":
        form.city.data = hospital.city
        return _facility_page(form, hospital)
    return _save_facility(form, hospital)


@bp.route("/registry/facilities/<public_id>", methods=["GET", "POST"])
@admin_only
def facility_edit(public_id):
    """Edit a facility of a hospital.

    Refuses: 404 no such facility (or its hospital is gone); 400 a form not filled in right."""
    facility, hospital = _facility_or_404(public_id)
    form = FacilityForm(obj=facility)
    if request.method == "GET":
        return _facility_page(form, hospital, facility)
    return _save_facility(form, hospital, facility)


def _agency_page(form, agency=None, status=200):
    return render_template("center/agency_form.html", form=form, agency=agency), status


def _save_agency(form, agency=None):
    added = "This agency was already registered; here it is."
    if agency is None and (repeat := repeat_of(form, "agency", added)) is not None:
        return repeat
    if not form.validate_on_submit():
        return _agency_page(form, agency, 400)
    values = {name: getattr(form, name).data for name in registry.AGENCY_FIELDS}

    def save():
        return registry.save_agency(_actor(), values, agency)

    def done(result):
        claim, outcome = result
        if outcome is None:
            return repeat_of(form, "agency", added, claim)
        saved, changed = outcome
        if agency is None:
            return found(".registry", f"{saved.name} is registered; its EMS profile is set up in a moment.")
        if "active" in changed and not saved.active:
            return found(".registry", f"{saved.name} is deactivated: its users are signed out and cannot "
                         "sign in, its live bids are withdrawn, and its awarded trips are flagged on the "
                         "board for reassignment.")
        return found(".registry", "Saved." if changed else "Nothing changed.",
                     "success" if changed else "info")

    return act(
        lambda: claimed(form, "agency", save, lambda outcome: outcome[0].public_id)
        if agency is None else (None, save()),
        done=done,
        refused=lambda message, status: _agency_page(on_form(form, message), agency, status),
        form=form)


@bp.route("/registry/agencies/new", methods=["GET", "POST"])
@admin_only
def agency_new():
    """Register an EMS agency (the EMS silo sets up its profile by event).

    Refuses: 400 a form not filled in right, no level of care, or a name or code another agency
    has; 409 a form token used for something else.  A form sent again answers 303 with the
    first one's."""
    form = AgencyForm()
    if request.method == "GET":
        return _agency_page(form)
    return _save_agency(form)


@bp.route("/registry/agencies/<public_id>", methods=["GET", "POST"])
@admin_only
def agency_edit(public_id):
    """Edit an agency; deactivating it signs its users out, withdraws its live bids and flags
    its awarded trips for reassignment.

    Refuses: 404 no such agency; 400 a form not filled in right or a name or code another
    agency has."""
    agency = _agency_or_404(public_id)
    form = AgencyForm(obj=agency)
    if request.method == "GET":
        form.levels.data = agency.level_list
        return _agency_page(form, agency)
    return _save_agency(form, agency)
