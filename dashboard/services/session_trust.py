"""Trusting a signed-in session while the center silo is unreachable.

Whenever the center answers, every request checks the session there (the user is
active, the session epoch is current, the server-side session is not revoked), so
sign-out, deactivation and a password change take effect at once.

Each successful check also writes a small snapshot of the session into the signed
session cookie (:data:`SNAPSHOT_KEY`): the user's ids, role, organisation, display
name, epoch, token and the time of the check.  When the center cannot be reached,
the snapshot stands in for the check for at most ``MEDPORT_SESSION_OFFLINE_TRUST_MINUTES``
(default 240) after the last successful check: the people already signed in keep
working on the hospital and EMS silos, and nobody new gets in (signing in needs the
center).  The snapshot is signed with ``SECRET_KEY`` (Flask's session cookie), so a
browser can read it but not change it; it holds no password material and no patient
data.  A snapshot that does not match the session identity it rides with is ignored.

After a failed check the center is not asked again for ``CENTER_RETRY_SECONDS``
(per process), so a center that stalls costs one request its timeout, not every one.
"""
import hashlib
import hmac
import threading
import time
from types import SimpleNamespace

import sqlalchemy as sa
from flask import current_app, has_request_context, session
from sqlalchemy import orm
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..events.outbox import Actor, emit
from ..extensions import db
from ..models.base import utcnow
from ..models.center import User, UserSession
from . import degraded
from .silos import SiloUnavailable

#: Session cookie key of the snapshot.
SNAPSHOT_KEY = "_mp_who"
#: A snapshot older than this is rewritten at the next successful check (seconds).  Rarely:
#: a response writes the session cookie only when the session changed (so a live panel cannot
#: bring back a message already shown), and the bound is counted from the last rewrite.
REFRESH_SECONDS = 900
#: After the center failed a check, this process trusts snapshots without asking it (seconds).
CENTER_RETRY_SECONDS = 5
DEFAULT_OFFLINE_TRUST_MINUTES = 240

_state = {"center_failed_at": None}
_lock = threading.Lock()


def _center_recently_failed():
    failed_at = _state["center_failed_at"]
    return failed_at is not None and time.monotonic() - failed_at < CENTER_RETRY_SECONDS


def _mark_center_failed():
    with _lock:
        _state["center_failed_at"] = time.monotonic()


def _mark_center_answered():
    if _state["center_failed_at"] is not None:
        with _lock:
            _state["center_failed_at"] = None


def offline_trust_seconds():
    """How long after its last successful check a snapshot is trusted (seconds)."""
    minutes = current_app.config.get("MEDPORT_SESSION_OFFLINE_TRUST_MINUTES", DEFAULT_OFFLINE_TRUST_MINUTES)
    return float(minutes) * 60


class SessionUser:
    """The signed-in user as the session snapshot describes them (center unreachable).

    Has the attributes pages read of :class:`~dashboard.models.center.User`:
    ``id``, ``public_id``, ``role``, ``hospital_id``, ``agency_id``, ``display_name``,
    ``session_epoch``, ``session_token``, ``hospital`` / ``agency`` (``id``, ``name``,
    ``short_code``, ``level_list``), ``is_org_admin`` and ``home_endpoint``.  ``offline`` is True.
    """

    is_authenticated = True
    is_active = True
    is_anonymous = False
    offline = True
    must_change_password = False

    def __init__(self, snapshot):
        self.id = snapshot["uid"]
        self.public_id = snapshot["pid"]
        self.session_epoch = snapshot["epoch"]
        self.session_token = snapshot["tok"]
        self.role = snapshot["role"]
        self.display_name = snapshot["name"]
        self.email = None
        self.hospital_id = snapshot.get("hid")
        self.agency_id = snapshot.get("aid")
        self.must_change_password = bool(snapshot.get("mcp"))
        # The navigation's organisation pages; those pages need the center and answer 503 meanwhile.
        self.is_org_admin = bool(snapshot.get("oa"))
        org = snapshot.get("org")
        organisation = None
        if org:
            levels = org.get("levels", "")
            organisation = SimpleNamespace(id=org["id"], name=org["name"], short_code=org["code"],
                                           levels=levels, active=True,
                                           level_list=[lv for lv in levels.split(",") if lv])
        self.hospital = organisation if self.hospital_id else None
        self.agency = organisation if self.agency_id else None

    def get_id(self):
        return f"{self.public_id}:{self.session_epoch}:{self.session_token}"

    @property
    def home_endpoint(self):
        return User.home_endpoint.fget(self)

    def check_password(self, password):
        """Passwords are checked by the center only."""
        return False


def snapshot_of(user, token):
    """The snapshot of ``user``'s session ``token``: a small dict of ids and names, no secrets."""
    org = user.hospital if user.hospital_id else (user.agency if user.agency_id else None)
    return {
        "uid": user.id, "pid": user.public_id, "epoch": user.session_epoch, "tok": token,
        "role": user.role, "name": user.display_name, "hid": user.hospital_id, "aid": user.agency_id,
        "org": None if org is None else {
            "id": org.id, "name": org.name, "code": org.short_code,
            "levels": getattr(org, "levels", ""),
        },
        "mcp": bool(user.must_change_password),
        "oa": bool(user.is_org_admin),
        "at": int(time.time()),
    }


def remember(user, token):
    """Write the snapshot of a session the center just confirmed into the session cookie."""
    if has_request_context():
        session[SNAPSHOT_KEY] = snapshot_of(user, token)


def _parse(session_id):
    public_id, epoch, token = ((session_id or "").split(":") + ["", "", ""])[:3]
    if not public_id or not epoch.isdigit() or not token:
        return None
    return public_id, int(epoch), token


def _from_snapshot(identity):
    """The :class:`SessionUser` of a snapshot matching ``identity`` and still inside its bound."""
    snapshot = session.get(SNAPSHOT_KEY) if has_request_context() else None
    if not isinstance(snapshot, dict):
        return None
    try:
        if (snapshot["pid"], snapshot["epoch"], snapshot["tok"]) != identity:
            return None
        if time.time() - float(snapshot["at"]) > offline_trust_seconds():
            return None
        user = SessionUser(snapshot)
    except (KeyError, TypeError, ValueError):
        return None
    degraded.note_unavailable("center")
    return user


_USER_OF_SESSION = []


def _user_of_session():
    """The loader's statement, built once: the user of a live session (bind parameters
    ``public_id`` and ``token``) with their hospital or agency in the same round trip (the
    layout names it on every page)."""
    if not _USER_OF_SESSION:
        _USER_OF_SESSION.append(
            sa.select(User).join(UserSession, UserSession.user_id == User.id).where(
                User.public_id == sa.bindparam("public_id"), UserSession.token == sa.bindparam("token"),
                UserSession.revoked_at.is_(None))
            .options(orm.joinedload(User.hospital), orm.joinedload(User.agency)))
    return _USER_OF_SESSION[0]


def load(session_id):
    """Flask-Login's user loader: the session's user, or None when the session ended.

    ``session_id`` is ``public_id:epoch:token``.  Asks the center (one query: the user
    joined with their live session row and their organisation); when the center cannot be
    reached, answers from the session's snapshot within its bound (see the module's
    description).
    """
    identity = _parse(session_id)
    if identity is None:
        return None
    public_id, epoch, token = identity
    if _center_recently_failed():
        return _from_snapshot(identity)
    try:
        user = db.session.scalar(_user_of_session(), {"public_id": public_id, "token": token})
        if user is not None and user.session_epoch == epoch and user.is_active:
            user.session_token = token
            snapshot = session.get(SNAPSHOT_KEY) if has_request_context() else None
            if not isinstance(snapshot, dict) or snapshot.get("tok") != token \
                    or snapshot.get("epoch") != epoch or snapshot.get("name") != user.display_name \
                    or time.time() - float(snapshot.get("at") or 0) > REFRESH_SECONDS:
                remember(user, token)
        else:
            # The session ended (signed out, deactivated, password reset): the browser's
            # snapshot goes too, so a later center outage cannot bring the session back.
            user = None
            if has_request_context():
                session.pop(SNAPSHOT_KEY, None)
    except (DBAPIError, PoolTimeout):
        db.session.rollback()
        _mark_center_failed()
        current_app.logger.warning("center unreachable while checking a session: trusting its snapshot")
        return _from_snapshot(identity)
    _mark_center_answered()
    return user


def center_unreachable():
    """Whether this request found the center unreachable (its user trusted from the snapshot,
    or center data shown as read last)."""
    return "center" in degraded.unavailable()

def session_digest(token):
    """A digest naming a session without revealing its token (hex, 32 characters)."""
    return hashlib.sha256(token.encode()).hexdigest()[:32]


def queue_sign_out(user, ip):
    """Sign-out while the center is unreachable: a ``session.ended`` event in the user's own silo.

    The relay revokes the session in the center and writes the audit entry, with the
    time of the sign-out, once the center is back.  Hospital users' events go to the
    hospital silo, EMS users' and crews' to the EMS silo, center roles' to the hospital silo.
    The caller commits.  Returns the outbox row.
    """
    silo = "ems" if user.role in ("ems", "crew") else "hospital"
    return emit(silo, "session.ended", "user", user.public_id,
                {"user_id": user.id, "public_id": user.public_id,
                 "session_digest": session_digest(user.session_token)},
                actor=Actor(user.id, ip))


def end_session_by_digest(user_id, digest):
    """Revoke the live session of ``user_id`` whose token has ``digest`` (the relay's follow-up
    of :func:`queue_sign_out`); the caller commits.  Returns True when one was revoked."""
    for row in db.session.scalars(sa.select(UserSession).where(
            UserSession.user_id == user_id, UserSession.revoked_at.is_(None))):
        if hmac.compare_digest(session_digest(row.token), digest):
            row.revoked_at = utcnow()
            return True
    return False


def require_center():
    """Raise :class:`~dashboard.services.silos.SiloUnavailable` (503) when this request's user
    was trusted without the center: for pages that change or show center-only data."""
    if center_unreachable():
        raise SiloUnavailable("center")


def forget():
    """Forget that the center failed (tests; a process that knows the center is back)."""
    _mark_center_answered()
