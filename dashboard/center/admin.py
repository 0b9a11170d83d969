"""Accounts and the system configuration (administrators), on the ``center`` blueprint."""
from flask import abort, flash, render_template, request

from ..services import configuration, oversight, session_trust, users
from ..views import act, found
from .forms import ConfirmForm, UserFilterForm, UserForm, choices, config_form_class
from .routes import _actor, admin_only, answer_abort, bp
from .submitting import claimed, on_form, repeat_of


def _user_or_404(public_id):
    """The account ``public_id`` (any role), else 404."""
    user = users.get(public_id)
    if user is None:
        abort(404)
    return user


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
    """The accounts matching the filters (text, role, active or not), by email, a page at a
    time ("Next page" carries ``after``).

    Refuses: 400 filters not offered (an empty list) or a page cursor not ours."""
    form = UserFilterForm(request.args)
    if not form.validate():
        return render_template("center/users.html", form=form, users=[], next_after=None, query={},
                               paged=False), 400
    query = {key: request.args[key] for key in ("q", "role", "status") if request.args.get(key)}
    after = request.args.get("after") or None

    def show(page):
        hospitals, agencies = oversight.registry_names()
        return render_template("center/users.html", form=form, users=page.rows, next_after=page.after,
                               query=query, paged=bool(after), hospitals=hospitals, agencies=agencies)

    return act(lambda: users.listing(form.q.data, form.role.data or None, form.status.data or None, after),
               done=show, refused=answer_abort)


@bp.route("/users/new", methods=["GET", "POST"])
@admin_only
def user_new():
    """Create an account; its temporary password is shown once (201).

    Refuses: 503 the center is unreachable; 400 a form not filled in right, an email in use, or
    an organisation that does not fit the role; 409 a form token used for something else.  A
    form sent again answers 303 to the account it created."""
    session_trust.require_center()
    form = _user_form()
    if request.method == "GET":
        return _user_page(form)
    created = ("This account was already created; its temporary password was shown then. "
               "If it was lost, reset the password.")
    if (repeat := repeat_of(form, "user", created)) is not None:
        return repeat
    if not form.validate_on_submit():
        return _user_page(form, status=400)

    def done(result):
        claim, outcome = result
        if outcome is None:
            return repeat_of(form, "user", created, claim)
        user, password = outcome
        return _password_page(user, password, created=True, status=201)

    return act(
        lambda: claimed(form, "user", lambda: users.create(
            _actor(), form.email.data, form.display_name.data, form.role.data, form.hospital.data,
            form.agency.data, form.org_admin.data), lambda outcome: outcome[0].public_id),
        done=done,
        refused=lambda message, status: _user_page(on_form(form, message), status=status),
        form=form)


@bp.route("/users/<public_id>", methods=["GET", "POST"])
@admin_only
def user_edit(public_id):
    """Edit an account (role, organisation, active, organisation administrator).

    Refuses: 404 no such account; 400 a form not filled in right, an email in use, an
    organisation that does not fit the role, or raising or deactivating one's own account."""
    user = _user_or_404(public_id)
    form = _user_form(user)
    if request.method == "GET":
        return _user_page(form, user)
    if not form.validate_on_submit():
        return _user_page(form, user, 400)
    return act(
        lambda: users.update(_actor(), user, form.email.data, form.display_name.data, form.role.data,
                             form.hospital.data, form.agency.data, form.active.data, form.org_admin.data),
        done=lambda changed: found(".users", "Saved." if changed else "Nothing changed.",
                                   "success" if changed else "info"),
        refused=lambda message, status: _user_page(on_form(form, message), users.get(public_id), status),
        form=form)


def _reset_refused(user):
    def refused(message, status):
        flash(message, "error")
        return _user_page(_user_form(user), user, status)
    return refused


@bp.route("/users/<public_id>/reset-password", methods=["POST"])
@admin_only
def user_reset_password(public_id):
    """Give an account a new temporary password (shown once); its sessions end.

    Refuses: 404 no such account; 400 the confirmation form altered; 409 one's own account
    (changed from the account page instead)."""
    user = _user_or_404(public_id)
    if not ConfirmForm().validate_on_submit():
        abort(400)
    return act(lambda: users.reset_password(_actor(), user),
               done=lambda password: _password_page(user, password, created=False),
               refused=_reset_refused(user))


# --- configuration (admin) -----------------------------------------------------------------

def _config_page(form, status=200):
    return render_template("center/config.html", form=form, settings=configuration.SETTINGS,
                           groups=configuration.grouped()), status


def _config_refused(form, raw):
    """The configuration page with each value that did not validate marked on its field."""
    def refused(_message, status):
        for key, message in configuration.problems(raw).items():
            getattr(form, key).errors = [message]
        return _config_page(form, status)
    return refused


@bp.route("/config", methods=["GET", "POST"])
@admin_only
def config():
    """The system configuration (risk thresholds, deadlines, auto-award, escalation ladder);
    each changed value is audited and announced to the silos.

    Refuses: 503 the center is unreachable; 400 a value out of its range (nothing is saved)."""
    session_trust.require_center()
    form_class = config_form_class(configuration.SETTINGS, configuration.AUTO_AWARD_POLICIES)
    if request.method == "GET":
        return _config_page(form_class(data={k: str(v) for k, v in configuration.get_all().items()}))
    form = form_class()
    if not form.validate_on_submit():
        return _config_page(form, 400)
    raw = {key: getattr(form, key).data for key in configuration.SETTINGS}

    def done(changed):
        if changed:
            return found(".config", f"Saved {len(changed)} change{'s' if len(changed) != 1 else ''}.")
        return found(".config", "Nothing changed.", "info")

    return act(lambda: configuration.apply(raw, _actor()), done=done, refused=_config_refused(form, raw))
