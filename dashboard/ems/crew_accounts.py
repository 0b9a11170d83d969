"""Crew accounts, run by the agency's organisation administrator: add one (a temporary
password shown once), deactivate or reactivate, reset a password."""
from functools import wraps

from flask import abort, render_template, request, url_for
from flask_login import current_user

from ..auth.routes import roles_required
from ..services import session_trust, users
from ..views import act, see_other
from .forms import CrewAccountForm, CrewActiveForm, CrewResetForm
from .routes import bp


def agency_admin_only(view):
    """EMS users marked as their agency's administrator; everyone else gets 403."""

    @wraps(view)
    @roles_required("ems")
    def wrapped(*args, **kwargs):
        if not current_user.is_org_admin:
            abort(403)
        session_trust.require_center()
        return view(*args, **kwargs)

    return wrapped


def _crew_page(form, status=200, message=None):
    return render_template("ems/crew_accounts.html", form=form, crew=users.crew_listing(current_user.agency_id),
                           active_form=CrewActiveForm(formdata=None), reset_form=CrewResetForm(formdata=None),
                           message=message), status


def _crew_actor():
    return users.Actor(current_user.id, current_user.email, request.remote_addr)


def _crew_member_or_404(public_id):
    """The agency's crew member ``public_id``; another agency's (or nobody's) 404, an account of
    the agency that is not a crew member's 403 (the service's refusal, answered as an abort)."""
    try:
        return users.crew_member(current_user.agency_id, public_id)
    except users.UserRefused as refused:
        abort(refused.status)


def _password_page(user, password, created):
    return render_template("center/user_password.html", user=user, password=password, created=created,
                           done_url=url_for(".crew_accounts"))


@bp.route("/crew-accounts", methods=["GET", "POST"])
@agency_admin_only
def crew_accounts():
    """The agency's crew accounts; a new one gets a temporary password, shown once (201).

    Refuses: 403 a user who is not the agency's administrator (or a session the center does not
    trust); 400 a form not filled in right or an email another account uses."""
    form = CrewAccountForm()
    if request.method == "GET":
        return _crew_page(CrewAccountForm(formdata=None))
    if not form.validate_on_submit():
        return _crew_page(form, 400)
    return act(lambda: users.create_crew(_crew_actor(), current_user.agency_id, form.email.data,
                                         form.display_name.data),
               done=lambda created: (_password_page(*created, created=True), 201),
               refused=lambda message, status: _crew_page(form, status, message=message), form=form)


@bp.route("/crew-accounts/<public_id>/active", methods=["POST"])
@agency_admin_only
def crew_account_active(public_id):
    """Deactivate (every session of the crew member ends at once) or reactivate a crew account.

    Refuses: 403 a user who is not the agency's administrator, or an account that is not a
    crew member's; 404 another agency's account; 400 a form not filled in right."""
    user = _crew_member_or_404(public_id)
    form = CrewActiveForm()
    if not form.validate_on_submit():
        return _crew_page(CrewAccountForm(formdata=None), 400,
                          message="; ".join(form.active.errors) or "The form expired; try again.")
    active = form.active.data == "1"
    name = user.display_name

    def done(changed):
        if changed:
            return see_other(".crew_accounts",
                             f"{name} is {'active again' if active else 'deactivated; their sessions ended'}.")
        return see_other(".crew_accounts", f"{name} was already {'active' if active else 'deactivated'}.", "info")

    return act(lambda: users.set_crew_active(_crew_actor(), user, active), done=done,
               refused=lambda message, status: _crew_page(CrewAccountForm(formdata=None), status, message=message))


@bp.route("/crew-accounts/<public_id>/reset-password", methods=["POST"])
@agency_admin_only
def crew_account_reset_password(public_id):
    """A temporary password for the crew member, shown once; their sessions end.

    Refuses: 403 a user who is not the agency's administrator, or an account that is not a
    crew member's; 404 another agency's account; 400 a form not filled in right."""
    user = _crew_member_or_404(public_id)
    if not CrewResetForm().validate_on_submit():
        return _crew_page(CrewAccountForm(formdata=None), 400, message="The form expired; try again.")
    return act(lambda: users.reset_password(_crew_actor(), user),
               done=lambda password: _password_page(user, password, created=False),
               refused=lambda message, status: _crew_page(CrewAccountForm(formdata=None), status, message=message))
