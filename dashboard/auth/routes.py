"""Sign in, sign out, change password; role decorators used by every other blueprint.

What a session is bound to: its server-side token (a ``UserSession`` row, named in the
signed cookie with the account's epoch), and nothing else.  The token is revoked at
sign-out, when the same browser signs in again over it, and (every token but the current
one) when the user changes their own password; the epoch ends every session at
deactivation, a password reset or a change of role.  A copied cookie therefore works only
as long as the session it was copied from.  Sessions are not bound to the client's address
or user agent (Flask-Login's ``session_protection``, which with permanent sessions only
marks a session not fresh): crews' addresses change as they drive between cellular
networks, and a hospital's users share a proxy's address, so such a binding would sign
the right people out without keeping a thief who copied the cookie and its headers out.
"""
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, abort, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user

from ..extensions import htmx, login_manager
from ..services import accounts, session_trust
from ..views import act
from .forms import ChangePasswordForm, LoginForm

bp = Blueprint("auth", __name__)

login_manager.login_view = "auth.login"
login_manager.login_message = "Please sign in to continue."
login_manager.login_message_category = "info"
# Off on purpose: the server-side token is what a session is bound to (see above).
login_manager.session_protection = None


@login_manager.user_loader
def _load_user(session_id):
    return session_trust.load(session_id)


@login_manager.unauthorized_handler
def _unauthorized():
    """Send the user to sign in; an htmx request gets ``HX-Redirect`` instead of a swapped page."""
    login_url = url_for("auth.login", next=_safe_next(request.full_path.rstrip("?")))
    if htmx:
        return "", 401, {"HX-Redirect": login_url}
    if request.accept_mimetypes.best == "text/event-stream" or request.path.startswith("/events"):
        return "Sign in required.", 401
    flash(login_manager.login_message, "info")
    return redirect(login_url)


def _safe_next(target):
    """Only same-site paths may be a ``next``: no scheme, no host, no ``//``, no backslash."""
    if not target or not isinstance(target, str):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target or any(ord(c) < 32 for c in target):
        return None
    return target


def roles_required(*roles):
    """Allow only the given roles; other signed-in roles get 403."""

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if current_user.role not in roles:
                abort(403)
            return view(*args, **kwargs)

        return wrapped

    return decorator


@bp.route("/")
def index():
    """The signed-in user's home page (302), or the sign-in page for anyone else.

    Refuses nothing."""
    if current_user.is_authenticated:
        return redirect(url_for(current_user.home_endpoint))
    return redirect(url_for("auth.login"))


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Sign in; then to ``next`` (a same-site path) or the user's home page, or to the password
    change when the password was reset.

    Refuses: 400 a form not filled in right; 401 a wrong email or password; 403 a deactivated
    account or organisation; 429 too many failed attempts (``Retry-After``); 503 no
    password-hashing slot came free (``Retry-After``)."""
    if current_user.is_authenticated and request.method == "GET":
        return redirect(url_for(current_user.home_endpoint))
    form = LoginForm()
    if request.method == "GET":
        form.next.data = _safe_next(request.args.get("next")) or ""
        return render_template("auth/login.html", form=form)
    if not form.validate_on_submit():
        return render_template("auth/login.html", form=form), 400
    # Signing in over a live session replaces it: its server-side row is revoked, so a copy
    # of the old cookie stops working too.
    previous_token = current_user.session_token if current_user.is_authenticated else None
    return act(lambda: accounts.sign_in(form.email.data, form.password.data, request.remote_addr,
                                        previous_token),
               done=lambda outcome: _signed_in(form, outcome.user) if outcome.refused is None
               else _login_refused(form, outcome.refused),
               refused=lambda message, status: _login_refused(form, accounts.LoginRefused(message, status)))


def _login_refused(form, refused):
    """The sign-in page again with the refusal flashed (and its ``Retry-After``)."""
    flash(refused.message, "error")
    headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else {}
    return render_template("auth/login.html", form=form), refused.status, headers


def _signed_in(form, user):
    """The answer to a sign-in that holds (its session row committed)."""
    # A fresh session at sign-in: nothing from before survives (no session fixation).
    session.clear()
    login_user(user)
    session.permanent = True
    session_trust.remember(user, user.session_token)
    if user.must_change_password:
        flash("Please choose a new password before you continue.", "info")
        return redirect(url_for("auth.change_password"))
    return redirect(_safe_next(form.next.data) or url_for(user.home_endpoint))


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """Sign out: the server-side session is revoked, the cookie cleared, and the browser told
    to drop the site's stored data and cache (``Clear-Site-Data``).

    With the center unreachable, the cookie is cleared at once and the revocation and
    its audit entry wait in the outbox of the user's own silo (see
    :func:`dashboard.services.session_trust.queue_sign_out`).  With that silo down too, the
    browser's session is cleared all the same; the server-side session ends at the latest with
    the trust bound or its lifetime.  Refuses nothing (405 for a GET).
    """
    return act(lambda: accounts.sign_out(current_user._get_current_object(), request.remote_addr),
               done=lambda _: _signed_out(), refused=lambda _message, _status: _signed_out())


def _signed_out():
    """Clear the browser's session and send it to the sign-in page."""
    logout_user()
    session.clear()
    flash("You are signed out.", "info")
    response = redirect(url_for("auth.login"))
    # A shared phone or workstation: what the pages stored in this browser (the crew page's
    # trips and taps, its offline cache and service worker) goes with the session.
    response.headers["Clear-Site-Data"] = '"cache", "storage"'
    return response


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def change_password():
    """Change one's own password; every other browser signed in as the user is signed out.

    Refuses: 503 the center is unreachable; 400 a form not filled in right, a wrong current
    password or a new one too weak."""
    session_trust.require_center()
    form = ChangePasswordForm()
    if request.method != "POST":
        return render_template("auth/change_password.html", form=form)
    if not form.validate_on_submit():
        return render_template("auth/change_password.html", form=form), 400
    user = current_user._get_current_object()
    return act(lambda: accounts.change_password(user, form.current_password.data, form.new_password.data,
                                                request.remote_addr),
               done=lambda _: _password_changed(user),
               refused=lambda _message, status: (render_template("auth/change_password.html", form=form),
                                                 status),
               form=form)


def _password_changed(user):
    flash("Your password is changed.", "success")
    return redirect(url_for(user.home_endpoint))


@bp.before_app_request
def _require_password_change():
    """A user whose password was reset may only change it (or sign out) until they do."""
    if (current_user.is_authenticated and current_user.must_change_password
            and request.endpoint not in ("auth.change_password", "auth.logout", "static", "health.healthz")):
        if htmx:
            return "", 401, {"HX-Redirect": url_for("auth.change_password")}
        return redirect(url_for("auth.change_password"))
    return None


