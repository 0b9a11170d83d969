"""Accounts: authentication, login throttling, user creation and role rules."""
import math
import secrets
from datetime import timedelta
from typing import NamedTuple

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .. import hashing
from ..extensions import db
from ..hashing import HashingBusy
from ..models.base import utcnow
from ..models.center import AuditLog, User, UserSession
from ..models.vocabulary import ROLES
from . import audit, session_trust
from .refusals import Refused

DEMO_PASSWORD = "medport-demo"
MIN_PASSWORD_LENGTH = 10


class LoginRefused(Refused):
    """Login is refused; ``status`` is the HTTP status the view answers with (401, 429, 503)."""

    def __init__(self, message, status=401, retry_after=None):
        super().__init__(message, status)
        #: Whole seconds before trying again is worth it (429 only), else None.
        self.retry_after = retry_after


def normalise_email(email):
    return (email or "").strip().lower()


def find_user_by_email(email):
    return db.session.scalar(sa.select(User).where(User.email == normalise_email(email)))


#: Seconds a pair (account, address) waits after its first throttled failure; each further
#: failure of the pair doubles it, up to the window.
BACKOFF_SECONDS = 30
#: The per-account backstop: this many times ``MEDPORT_LOGIN_MAX_FAILURES`` failures on one
#: account from all addresses together in the window.
ACCOUNT_BACKSTOP_FACTOR = 10


def _failures(*conditions, since):
    """``(count, latest)`` of the failed sign-ins matching ``conditions`` at or after ``since``."""
    row = db.session.execute(
        sa.select(sa.func.count(AuditLog.id), sa.func.max(AuditLog.created_at)).where(
            AuditLog.action == "login.failed", AuditLog.created_at >= since, *conditions)
    ).one()
    return row[0] or 0, row[1]


def _last_success(*conditions, since):
    """The latest successful sign-in matching ``conditions`` at or after ``since``, or None."""
    return db.session.scalar(sa.select(sa.func.max(AuditLog.created_at)).where(
        AuditLog.action == "login.success", AuditLog.created_at >= since, *conditions))


def _nth_latest_failure(n, *conditions, since):
    """The time of the ``n``-th most recent failure matching ``conditions`` (1 = the latest)."""
    return db.session.scalar(
        sa.select(AuditLog.created_at).where(
            AuditLog.action == "login.failed", AuditLog.created_at >= since, *conditions)
        .order_by(AuditLog.created_at.desc()).offset(n - 1).limit(1))


def _wait_text(seconds):
    """``seconds`` (> 0) in words, rounded up: ``"30 seconds"``, ``"4 minutes"``."""
    seconds = max(1, math.ceil(seconds))
    if seconds < 90:
        return f"{seconds} second{'s' if seconds != 1 else ''}"
    return f"{math.ceil(seconds / 60)} minutes"


def throttle_wait(email, ip, now=None):
    """Seconds until ``email`` may try to sign in from ``ip`` again: ``(seconds, rule)``, or
    ``(0, None)`` when an attempt may go ahead now.

    Failures are read from the audit log (``login.failed``), so every worker and host
    sees the same counts; a window is ``MEDPORT_LOGIN_WINDOW_MINUTES``.  Three rules:

    * ``"address"``: ``MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS`` failures from one address
      (any accounts) in the window refuse that address until the oldest of them that
      counts leaves the window.  A success does not reset this count, so an attacker
      cannot clear it by signing in to an account of their own between guesses.
    * ``"pair"``: after ``MEDPORT_LOGIN_MAX_FAILURES`` failures of one account from one
      address (since that pair's last success), the pair waits ``BACKOFF_SECONDS`` after
      its latest failure, twice as long after each further failure, at most the window.
      A stranger's wrong guesses therefore slow the stranger down, not the account's
      owner signing in from elsewhere.
    * ``"account"``: a backstop against guessing spread over many addresses.  With
      ``ACCOUNT_BACKSTOP_FACTOR`` x ``MEDPORT_LOGIN_MAX_FAILURES`` failures on the account
      in the window (since its last success), an address that has failed on the account
      in the window is refused until that failure leaves the window; an address without
      a failure on it still gets its attempt.  Each guessing address thus gets one guess
      per window, while the owner (whose own address has not failed) still signs in with
      the right password: the backstop slows distributed guessing without letting a
      stranger lock the owner out, which a hard lock on the account would.
    """
    now = now or utcnow()
    config = current_app.config
    window = timedelta(minutes=config["MEDPORT_LOGIN_WINDOW_MINUTES"])
    since = now - window
    per_address = config["MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS"]
    per_pair = config["MEDPORT_LOGIN_MAX_FAILURES"]
    if ip:
        count, _latest = _failures(AuditLog.ip == ip, since=since)
        if count >= per_address:
            oldest_counting = _nth_latest_failure(per_address, AuditLog.ip == ip, since=since)
            return max((oldest_counting + window - now).total_seconds(), 1), "address"
    pair = (AuditLog.user_email == email, AuditLog.ip == ip) if ip else (AuditLog.user_email == email,)
    pair_since = max(since, _last_success(*pair, since=since) or since)
    pair_count, pair_latest = _failures(*pair, since=pair_since)
    if pair_count >= per_pair:
        delay = min(BACKOFF_SECONDS * 2 ** (pair_count - per_pair), window.total_seconds())
        wait = (pair_latest + timedelta(seconds=delay) - now).total_seconds()
        if wait > 0:
            return wait, "pair"
    account_since = max(since, _last_success(AuditLog.user_email == email, since=since) or since)
    account_count, _latest = _failures(AuditLog.user_email == email, since=account_since)
    if account_count >= ACCOUNT_BACKSTOP_FACTOR * per_pair and pair_count:
        return max((pair_latest + window - now).total_seconds(), 1), "account"
    return 0, None


_THROTTLE_MESSAGES = {
    "address": "Too many failed sign-in attempts from this address. Try again in {wait}.",
    "pair": "Too many failed sign-in attempts for this account from this address. Try again in {wait}.",
    "account": "Too many failed sign-in attempts for this account. Try again in {wait} "
               "or ask an administrator to reset your password.",
}


def _release_connections():
    """End the session's read-only transaction, so its pooled connections go back while the
    password hash waits for a slot and runs (a rush of sign-ins must not hold every connection
    of the center's pool for their hashes).  Does nothing when the session holds changes."""
    session = db.session
    if not (session.new or session.dirty or session.deleted):
        session.commit()


def authenticate(email, password, ip):
    """Return the :class:`User` for valid credentials or raise :class:`LoginRefused`.

    Refusals: 429 while :func:`throttle_wait` holds ``email`` at ``ip`` back (``retry_after``
    gives the wait in whole seconds; nothing is checked then); 401 for a wrong email or
    password (one password hash is checked either way, a dummy one for an unknown email,
    so the answer takes as long: :func:`dashboard.hashing.check_password`); 403 for a
    deactivated account (right password).  The caller commits: the audit entry of a refusal is
    written either way.  Raises :class:`dashboard.hashing.HashingBusy` (nothing recorded) when no
    hashing slot came free within ``MEDPORT_PASSWORD_HASH_WAIT_SECONDS``.

    On a success only, a stored hash of an older scheme or weaker parameters is replaced by the
    current hash the check made (:func:`_store_upgraded_hash`), in the sign-in's own transaction;
    a refused attempt changes no hash.
    """
    email = normalise_email(email)
    wait, rule = throttle_wait(email, ip)
    if rule:
        audit.record("login.throttled", user_email=email, ip=ip, detail=f"per {rule}")
        raise LoginRefused(_THROTTLE_MESSAGES[rule].format(wait=_wait_text(wait)), status=429,
                           retry_after=math.ceil(wait))
    user = find_user_by_email(email)
    stored_hash = user.password_hash if user is not None else None
    _release_connections()
    checked = hashing.check_password(stored_hash, password)
    if not checked.ok:
        audit.record("login.failed", user_email=email, ip=ip,
                     user_id=user.id if user else None, detail="wrong email or password")
        raise LoginRefused("Wrong email or password.")
    if not user.is_active:
        audit.record("login.failed", user=user, ip=ip, detail="account deactivated")
        raise LoginRefused("This account is deactivated. Ask an administrator.", status=403)
    organisation = user.hospital if user.role == "hospital" else user.agency if user.role in ("ems", "crew") else None
    if organisation is not None and not organisation.active:
        audit.record("login.failed", user=user, ip=ip, detail="organisation deactivated")
        raise LoginRefused(f"{organisation.name} is deactivated in MedPort's registry, so its accounts "
                           "cannot sign in. Ask the transport center.", status=403)
    user.last_login_at = utcnow()
    upgraded = checked.upgrade is not None and _store_upgraded_hash(user, stored_hash, checked.upgrade)
    audit.record("login.success", user=user, ip=ip, entity_type="user", entity_id=user.public_id,
                 detail="password hash upgraded" if upgraded else None)
    return user


def _store_upgraded_hash(user, checked_hash, upgrade):
    """Replace ``user``'s stored hash by ``upgrade`` (a current hash of the password just checked)
    if it is still ``checked_hash``, the one the password was checked against; returns whether
    it did.  One UPDATE in the caller's transaction.  The condition keeps a password changed or
    reset since the check (by another request) from being overwritten by the old one."""
    result = db.session.execute(
        sa.update(User).where(User.id == user.id, User.password_hash == checked_hash)
        .values(password_hash=upgrade).execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return False
    db.session.expire(user, ["password_hash"])  # read again from the row if asked
    return True


class SignIn(NamedTuple):
    """The outcome of :func:`sign_in`: the signed-in ``user``, or the ``refused`` attempt."""

    user: object
    refused: LoginRefused | None


def sign_in(email, password, ip, previous_token=None):
    """Check the credentials and, when they hold, start a server-side session: a :class:`SignIn`.

    A refused attempt is returned, not raised, because its audit entry is to be committed like
    a success (the throttle counts it): ``SignIn(None, LoginRefused)`` with the statuses of
    :func:`authenticate`, or 503 with ``retry_after`` when no password-hashing slot came free
    (nothing recorded then).  On success the session ``previous_token`` names (signing in
    over a live one) is revoked and a new one started (``user.session_token``).  The caller
    commits.
    """
    try:
        user = authenticate(email, password, ip)
    except LoginRefused as refused:
        return SignIn(None, refused)
    except HashingBusy as busy:
        return SignIn(None, LoginRefused(busy.message, status=503, retry_after=busy.retry_after))
    end_session(previous_token)
    start_session(user, ip)
    return SignIn(user, None)


class SignOutRefused(Refused):
    """A sign-out that could not be written anywhere (the center and the user's own silo are
    both unreachable): 503."""

    status = 503


def sign_out(user, ip):
    """End ``user``'s current server-side session, with its audit entry; returns True, or False
    when it was queued instead (see below).

    With the center unreachable the revocation waits in the outbox of the user's own silo
    (:func:`.session_trust.queue_sign_out`); when that silo is unreachable too, raises
    :class:`SignOutRefused` (503): the browser's session is to be cleared all the same.  The
    caller commits.
    """
    if not session_trust.center_unreachable():
        audit.record("logout", user=user, ip=ip, entity_type="user", entity_id=user.public_id)
        end_session(user.session_token)
        return True
    try:
        session_trust.queue_sign_out(user, ip)
        db.session.flush()
    except (DBAPIError, PoolTimeout):
        current_app.logger.warning(
            "sign-out could not be queued: the center and the user's silo are unreachable")
        raise SignOutRefused("The sign-out could not be recorded; the browser's session is "
                             "cleared all the same.") from None
    return False


class PasswordRefused(Refused):
    """A password change the rules do not allow (400); ``field`` names the form field at fault."""

    status = 400


def change_password(user, current_password, new_password, ip):
    """Change ``user``'s own password and sign out every other browser signed in as them (the
    current session stays); audited.  Returns how many other sessions were ended.

    Raises :class:`PasswordRefused` (400): ``current_password`` not theirs (field
    ``current_password``), ``new_password`` too weak (field ``new_password``).  Raises
    :class:`dashboard.hashing.HashingBusy` when no hashing slot came free.  The caller commits.
    """
    if not user.check_password(current_password):
        raise PasswordRefused("This is not your current password.", field="current_password")
    problem = validate_password(new_password)
    if problem:
        raise PasswordRefused(problem, field="new_password")
    user.set_password(new_password)
    user.must_change_password = False
    ended = end_other_sessions(user, user.session_token)
    audit.record("user.password_changed", user=user, ip=ip, entity_type="user",
                 entity_id=user.public_id, detail=f"{ended} other session(s) ended")
    return ended


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
    if role in ("ems", "crew") and not agency_id:
        raise ValueError("An EMS user or crew member must belong to an agency.")
    if role not in ("hospital",):
        hospital_id = None
    if role not in ("ems", "crew"):
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
