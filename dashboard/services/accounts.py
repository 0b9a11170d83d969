"""Accounts: authentication, login throttling, user creation and role rules."""
import secrets
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app

from ..extensions import db
from ..models.base import ROLES, utcnow
from ..models.center import AuditLog, User, UserSession
from . import audit

DEMO_PASSWORD = "medport-demo"
MIN_PASSWORD_LENGTH = 10


class LoginRefused(Exception):
    """Login is refused; ``status`` is the HTTP status the view answers with."""

    def __init__(self, message, status=401):
        super().__init__(message)
        self.message = message
        self.status = status


def normalise_email(email):
    return (email or "").strip().lower()


def find_user_by_email(email):
    return db.session.scalar(sa.select(User).where(User.email == normalise_email(email)))


def _recent_failures(column, value):
    """Failed logins matching ``column == value`` in the window, since the last success."""
    since = utcnow() - timedelta(minutes=current_app.config["MEDPORT_LOGIN_WINDOW_MINUTES"])
    last_success = db.session.scalar(
        sa.select(sa.func.max(AuditLog.created_at)).where(
            AuditLog.action == "login.success", column == value, AuditLog.created_at >= since
        )
    )
    return db.session.scalar(
        sa.select(sa.func.count(AuditLog.id)).where(
            AuditLog.action == "login.failed",
            column == value,
            AuditLog.created_at >= (last_success or since),
        )
    )


def authenticate(email, password, ip):
    """Return the user for valid credentials or raise :class:`LoginRefused`.

    Failures are throttled per account (email) and per address, counted from
    the audit log so every worker and host sees the same count.  The caller
    commits: the audit entry of a failure is written either way.
    """
    email = normalise_email(email)
    window = current_app.config["MEDPORT_LOGIN_WINDOW_MINUTES"]
    if _recent_failures(AuditLog.user_email, email) >= current_app.config["MEDPORT_LOGIN_MAX_FAILURES"]:
        audit.record("login.throttled", user_email=email, ip=ip, detail="per account")
        raise LoginRefused(
            f"Too many failed sign-in attempts for this account. Try again in {window} minutes "
            "or ask an administrator to reset your password.",
            status=429,
        )
    if ip and _recent_failures(AuditLog.ip, ip) >= current_app.config["MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS"]:
        audit.record("login.throttled", user_email=email, ip=ip, detail="per address")
        raise LoginRefused(
            f"Too many failed sign-in attempts from this address. Try again in {window} minutes.",
            status=429,
        )
    user = find_user_by_email(email)
    if user is None or not user.check_password(password):
        audit.record("login.failed", user_email=email, ip=ip,
                     user_id=user.id if user else None, detail="wrong email or password")
        raise LoginRefused("Wrong email or password.")
    if not user.is_active:
        audit.record("login.failed", user=user, ip=ip, detail="account deactivated")
        raise LoginRefused("This account is deactivated. Ask an administrator.", status=403)
    user.last_login_at = utcnow()
    audit.record("login.success", user=user, ip=ip, entity_type="user", entity_id=user.public_id)
    return user


def start_session(user, ip):
    """A new server-side session for ``user`` (the caller commits); returns its token."""
    token = secrets.token_urlsafe(32)
    db.session.add(UserSession(token=token, user_id=user.id, ip=ip))
    user.session_token = token
    return token


def end_session(token):
    """Revoke one server-side session (sign-out); the caller commits."""
    if token:
        db.session.execute(
            sa.update(UserSession).where(UserSession.token == token, UserSession.revoked_at.is_(None))
            .values(revoked_at=utcnow()))


def end_other_sessions(user, keep_token):
    """Revoke every live session of ``user`` except ``keep_token`` (the caller commits).

    Used when a user changes their own password: the browser they changed it in stays
    signed in, every other one is signed out (its pages at the next request, its live
    stream at the stream's next session check).  Returns how many sessions were revoked.
    """
    result = db.session.execute(
        sa.update(UserSession)
        .where(UserSession.user_id == user.id, UserSession.revoked_at.is_(None),
               UserSession.token != (keep_token or ""))
        .values(revoked_at=utcnow()))
    return result.rowcount


def session_is_live(user_id, epoch, token):
    """Whether a session (user, epoch, token) is still valid: active user, same epoch, not revoked."""
    row = db.session.execute(
        sa.select(User.active, User.session_epoch, UserSession.revoked_at)
        .join(UserSession, UserSession.user_id == User.id)
        .where(User.id == user_id, UserSession.token == token)
    ).first()
    return row is not None and row.active and row.session_epoch == epoch and row.revoked_at is None


def load_session_user(session_id):
    """Flask-Login loader: ``public_id:epoch:token``.

    An old epoch (deactivation, password reset) or a revoked token (sign-out) means the
    session ended.  One query: the user joined with their live session row.
    """
    public_id, epoch, token = ((session_id or "").split(":") + ["", "", ""])[:3]
    if not public_id or not epoch.isdigit() or not token:
        return None
    user = db.session.scalar(
        sa.select(User).join(UserSession, UserSession.user_id == User.id).where(
            User.public_id == public_id, UserSession.token == token, UserSession.revoked_at.is_(None)))
    if user is None or user.session_epoch != int(epoch) or not user.is_active:
        return None
    user.session_token = token
    return user


def validate_password(password):
    """Return an error message for a weak password, or None."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        return f"Use at least {MIN_PASSWORD_LENGTH} characters."
    if len(password) > 128:
        return "Use at most 128 characters."
    return None


def create_user(email, display_name, role, password, hospital_id=None, agency_id=None,
                must_change_password=False):
    """Create a center user (the caller commits); raises ValueError with a clear message."""
    email = normalise_email(email)
    if role not in ROLES:
        raise ValueError(f"Unknown role {role!r}.")
    if role == "hospital" and not hospital_id:
        raise ValueError("A hospital user must belong to a hospital.")
    if role == "ems" and not agency_id:
        raise ValueError("An EMS user must belong to an agency.")
    if role not in ("hospital",):
        hospital_id = None
    if role not in ("ems",):
        agency_id = None
    if find_user_by_email(email) is not None:
        raise ValueError("A user with this email already exists.")
    user = User(email=email, display_name=display_name.strip(), role=role,
                hospital_id=hospital_id, agency_id=agency_id,
                must_change_password=must_change_password)
    user.set_password(password)
    db.session.add(user)
    db.session.flush()
    return user


def user_event_payload(user):
    """What other silos learn of a user: ids and binding, no password material."""
    return {
        "user_id": user.id,
        "public_id": user.public_id,
        "display_name": user.display_name,
        "role": user.role,
        "hospital_id": user.hospital_id,
        "agency_id": user.agency_id,
        "active": bool(user.active),
    }
