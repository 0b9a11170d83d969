"""Hospital staff: the hospital's ordered list of preferred agencies (views on ``hospital.bp``).

The list and its rank logic are :mod:`dashboard.services.preferences`; each change writes
through :func:`dashboard.views.act` and is recorded (``preference.*`` events, audited in the
center).
"""
from flask import abort, render_template, request
from flask_login import current_user
from flask_wtf import FlaskForm

from ..auth.routes import roles_required
from ..services import preferences as preference_service
from ..services import submissions
from ..views import act, actor, found
from .forms import PreferenceForm, PreferenceMoveForm, PreferenceNotesForm
from .routes import FORM_ALTERED, _agency_names, _hospital_id, bp

ADDED_ALREADY = "This agency was already added; here is your list."


def _preference_or_404(pref_id):
    """One entry of the user's hospital's list, or 404."""
    pref = preference_service.get_for_hospital(pref_id, _hospital_id())
    if pref is None:
        abort(404)
    return pref


def _render_preferences(form, status=200, message=None):
    """The preferred-agencies page."""
    rows = preference_service.rows(_hospital_id())
    return render_template("hospital/preferences.html", form=form, rows=rows,
                           agencies=preference_service.agencies_of(rows), message=message), status


def _fresh_preference_form():
    """An empty add-agency form (for re-rendering the page after a refused action)."""
    form = PreferenceForm(formdata=None)
    form.offer(preference_service.addable_agencies(_hospital_id()))
    return form


@bp.route("/preferences", methods=["GET", "POST"])
@roles_required("hospital")
def preferences():
    """The hospital's ordered list of preferred agencies; POST adds one at the end.

    Refuses: 400 a form not filled in right (an agency not offered: inactive or listed
    already); 409 an agency another page added meanwhile, or a form token used for something
    else.  A form sent again answers 303 to the list."""
    hospital_id = _hospital_id()
    form = PreferenceForm()
    form.offer(preference_service.addable_agencies(hospital_id))
    if request.method == "GET":
        return _render_preferences(form)
    if submissions.previous("hospital", form.submission_id.data, "preference", current_user.id):
        return _repeat()
    if not form.validate_on_submit():
        return _render_preferences(form, 400)
    agency, who = form.chosen, actor()

    def add():
        claim = submissions.claim("hospital", form.submission_id.data, "preference", who.user_id)
        if claim.repeat:
            return None
        preference = preference_service.add(hospital_id, agency, form.notes.data, who)
        claim.created(preference.id)
        return preference

    return act(add, done=lambda added: _repeat() if added is None else found(
                   ".preferences", f"{agency.name} added to your preferred agencies."),
               refused=lambda message, status: _render_preferences(form, status, message),
               form=form)


def _repeat():
    """A form sent again: the list, said so (303)."""
    response = found(".preferences", ADDED_ALREADY, "info")
    response.status_code = 303
    return response


@bp.route("/preferences/<int:pref_id>/remove", methods=["POST"])
@roles_required("hospital")
def remove_preference(pref_id):
    """Take an agency off the list; the others close ranks.

    Refuses: 404 another hospital's entry (or none); 400 a form altered."""
    pref = _preference_or_404(pref_id)
    if not FlaskForm().validate_on_submit():
        return _render_preferences(_fresh_preference_form(), 400, FORM_ALTERED)
    name = _agency_names([pref.agency_id]).get(pref.agency_id, "The agency")
    return act(lambda: preference_service.remove(pref, actor()),
               done=lambda _: found(".preferences", f"{name} removed from your preferred agencies."),
               refused=lambda message, status: _render_preferences(_fresh_preference_form(), status, message))


@bp.route("/preferences/<int:pref_id>/move", methods=["POST"])
@roles_required("hospital")
def move_preference(pref_id):
    """Move an agency one place up or down the list (the first stays first, the last last).

    Refuses: 404 another hospital's entry (or none); 400 a direction other than up or down."""
    pref = _preference_or_404(pref_id)
    form = PreferenceMoveForm()
    if not form.validate_on_submit():
        return _render_preferences(_fresh_preference_form(), 400, "Move an agency up or down the list.")
    return act(lambda: preference_service.move(pref, form.direction.data, actor()),
               done=lambda _: found(".preferences"),
               refused=lambda message, status: _render_preferences(_fresh_preference_form(), status, message))


@bp.route("/preferences/<int:pref_id>/notes", methods=["POST"])
@roles_required("hospital")
def preference_notes(pref_id):
    """Change the notes of one preferred agency.

    Refuses: 404 another hospital's entry (or none); 400 notes over 300 characters or a form
    altered."""
    pref = _preference_or_404(pref_id)
    form = PreferenceNotesForm()
    if not form.validate_on_submit():
        message = form.notes.errors[0] if form.notes.errors else FORM_ALTERED
        return _render_preferences(_fresh_preference_form(), 400, message)
    return act(lambda: preference_service.set_notes(pref, form.notes.data, actor()),
               done=lambda _: found(".preferences", "Notes saved."),
               refused=lambda message, status: _render_preferences(_fresh_preference_form(), status, message))
