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

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_required, login_user, logout_user
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..extensions import db, htmx, login_manager
from ..hashing import HashingBusy
from ..services import accounts, audit, session_trust
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
    if current_user.is_authenticated:
        return redirect(url_for(current_user.home_endpoint))
    return redirect(url_for("auth.login"))


@bp.route("/login", methods=["GET", "POST"])
def login():
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
    try:
        user = accounts.authenticate(form.email.data, form.password.data, request.remote_addr)
    except accounts.LoginRefused as refused:
        db.session.commit()  # the audit entry of the failure
        flash(refused.message, "error")
        headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else {}
        return render_template("auth/login.html", form=form), refused.status, headers
    except HashingBusy as busy:
        db.session.rollback()
        flash(busy.message, "error")
        return render_template("auth/login.html", form=form), 503, {"Retry-After": str(busy.retry_after)}
    accounts.end_session(previous_token)
    accounts.start_session(user, request.remote_addr)
    db.session.commit()
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
    :func:`dashboard.services.session_trust.queue_sign_out`).
    """
    if session_trust.center_unreachable():
        try:
            session_trust.queue_sign_out(current_user, request.remote_addr)
            db.session.commit()
        except (DBAPIError, PoolTimeout):
            # The user's own silo is down too: the browser's session is cleared all the same;
            # the server-side session ends at the latest with the trust bound or its lifetime.
            db.session.rollback()
            current_app.logger.warning("sign-out could not be queued: the center and the user's silo "
                                       "are unreachable")
    else:
        audit.record("logout", user=current_user, ip=request.remote_addr,
                     entity_type="user", entity_id=current_user.public_id)
        accounts.end_session(current_user.session_token)
        db.session.commit()
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
    session_trust.require_center()
    form = ChangePasswordForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            return render_template("auth/change_password.html", form=form), 400
        if not current_user.check_password(form.current_password.data):
            form.current_password.errors.append("This is not your current password.")
            return render_template("auth/change_password.html", form=form), 400
        problem = accounts.validate_password(form.new_password.data)
        if problem:
            form.new_password.errors.append(problem)
            return render_template("auth/change_password.html", form=form), 400
        user = current_user._get_current_object()
        user.set_password(form.new_password.data)
        user.must_change_password = False
        # Every other browser signed in as this user is signed out; this one stays.
        ended = accounts.end_other_sessions(user, user.session_token)
        audit.record("user.password_changed", user=user, ip=request.remote_addr,
                     entity_type="user", entity_id=user.public_id,
                     detail=f"{ended} other session(s) ended")
        db.session.commit()
        flash("Your password is changed.", "success")
        return redirect(url_for(user.home_endpoint))
    return render_template("auth/change_password.html", form=form)


@bp.before_app_request
def _require_password_change():
    """A user whose password was reset may only change it (or sign out) until they do."""
    if (current_user.is_authenticated and current_user.must_change_password
            and request.endpoint not in ("auth.change_password", "auth.logout", "static", "health.healthz")):
        if htmx:
            return "", 401, {"HX-Redirect": url_for("auth.change_password")}
        return redirect(url_for("auth.change_password"))
    return None


