"""User administration at the center: create, edit, deactivate, reset a password.

Rules: a user cannot raise their own role or deactivate themselves; the last
active administrator cannot be deactivated or demoted; a role's binding must
be exactly right (hospital staff: a hospital and no agency; EMS dispatchers and
crew members: an agency and no hospital; center roles: neither), with ids that exist.  Deactivation, a
password reset and a change of role or binding bump ``session_epoch`` so every
older session (and live stream) ends.  Each action is audited with before/after
values (never password material) and emits ``user.created`` / ``user.updated``.
Only hospital and EMS users may be their organisation's administrator (``org_admin``).
An agency's administrator runs its crew accounts through the same functions
(``crew_member``, ``create_crew``, ``set_crew_active``): the rules and the audit are the center's.
Nothing here commits.
"""
import secrets
from typing import NamedTuple

import sqlalchemy as sa

from ..events.outbox import emit
from ..extensions import db
from ..models.center import Agency, Hospital, User
from ..models.vocabulary import ROLES
from . import accounts, audit, paging
from .refusals import Refused
from .text_search import like_contains

#: Who may do more: raising your own role means moving up this ranking.
ROLE_RANK = {"hospital": 0, "ems": 0, "crew": 0, "coordinator": 1, "admin": 2}
SNAPSHOT_FIELDS = ("email", "display_name", "role", "hospital_id", "agency_id", "active",
                   "must_change_password", "org_admin")
#: The roles whose users may be their organisation's administrator.
ORG_ADMIN_ROLES = ("hospital", "ems")
TEMPORARY_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
#: Accounts per page of the users list.
PAGE_SIZE = 50


class Actor(NamedTuple):
    """Who acts: the signed-in user's id and email, and the address they act from."""

    user_id: int | None
    email: str | None
    ip: str | None


class UserRefused(Refused):
    """An account change the rules do not allow; ``field`` names the form field at fault."""

    def __init__(self, message, field=None, status=400):
        super().__init__(message, status, field)


def snapshot(user):
    """An account's auditable state: no password, no hash."""
    return {name: bool(user.org_admin) if name == "org_admin" else getattr(user, name)
            for name in SNAPSHOT_FIELDS}


def check_org_admin(role, org_admin):
    """Refuse marking a user of a role other than hospital or EMS as an organisation administrator."""
    if org_admin and role not in ORG_ADMIN_ROLES:
        raise UserRefused("Only hospital and EMS users can be their organisation's administrator.",
                          field="org_admin")


def temporary_password():
    """A one-time password to read out or hand over: 12 unambiguous characters in three groups."""
    chars = "".join(secrets.choice(TEMPORARY_ALPHABET) for _ in range(12))
    return "-".join(chars[i:i + 4] for i in range(0, 12, 4))


def check_binding(role, hospital_id, agency_id):
    """Refuse an unknown role or a binding that does not fit the role (or names no real row)."""
    if role not in ROLES:
        raise UserRefused("Choose one of the listed roles.", field="role")
    if role == "hospital":
        if not hospital_id:
            raise UserRefused("Hospital staff must belong to a hospital.", field="hospital")
        if agency_id:
            raise UserRefused("Hospital staff belong to no agency; leave Agency empty.", field="agency")
    elif role in ("ems", "crew"):
        who = "An EMS user" if role == "ems" else "A crew member"
        if not agency_id:
            raise UserRefused(f"{who} must belong to an agency.", field="agency")
        if hospital_id:
            raise UserRefused(f"{who} belongs to no hospital; leave Hospital empty.", field="hospital")
    elif hospital_id or agency_id:
        field = "hospital" if hospital_id else "agency"
        raise UserRefused("Center users belong to no hospital or agency; leave both empty.", field=field)
    if hospital_id and db.session.get(Hospital, hospital_id) is None:
        raise UserRefused("No such hospital.", field="hospital")
    if agency_id and db.session.get(Agency, agency_id) is None:
        raise UserRefused("No such agency.", field="agency")


def _email_free(email, user=None):
    query = sa.select(User.id).where(User.email == accounts.normalise_email(email))
    if user is not None:
        query = query.where(User.id != user.id)
    if db.session.scalar(query) is not None:
        raise UserRefused("Another account already uses this email.", field="email")


def _other_active_admins(user):
    """Active administrators other than ``user``, locked (on PostgreSQL) until commit."""
    return list(db.session.scalars(
        sa.select(User.id).where(User.role == "admin", User.active.is_(True), User.id != user.id)
        .with_for_update()
    ))


def _audit(actor, action, user, before, after, detail=""):
    changed = [k for k in SNAPSHOT_FIELDS if before is None or before[k] != after[k]]
    audit.record(action, user_id=actor.user_id, user_email=actor.email, ip=actor.ip,
                 entity_type="user", entity_id=user.public_id,
                 before=None if before is None else {k: before[k] for k in changed},
                 after={k: after[k] for k in changed}, detail=detail)


def create(actor, email, display_name, role, hospital_id, agency_id, org_admin=False):
    """Create an account with a temporary password; returns ``(user, temporary password)``.
    Raises :class:`UserRefused` (400) for a binding that does not fit the role, an email in use
    or ``org_admin`` on a role that cannot have it."""
    check_binding(role, hospital_id, agency_id)
    check_org_admin(role, org_admin)
    _email_free(email)
    password = temporary_password()
    try:
        user = accounts.create_user(email, display_name, role, password, hospital_id=hospital_id,
                                    agency_id=agency_id, must_change_password=True)
    except ValueError as exc:
        raise UserRefused(str(exc)) from None
    user.org_admin = bool(org_admin)
    db.session.flush()
    _audit(actor, "user.created", user, None, snapshot(user))
    emit("center", "user.created", "user", user.public_id, accounts.user_event_payload(user), actor=actor)
    return user, password


def update(actor, user, email, display_name, role, hospital_id, agency_id, active, org_admin=None):
    """Change an account; returns the changed field names (empty when nothing changed).
    ``org_admin`` None keeps the stored mark."""
    if org_admin is None:
        org_admin = bool(user.org_admin) and role in ORG_ADMIN_ROLES
    check_binding(role, hospital_id, agency_id)
    check_org_admin(role, org_admin)
    _email_free(email, user)
    oneself = user.id == actor.user_id
    if oneself and ROLE_RANK[role] > ROLE_RANK[user.role]:
        raise UserRefused("You cannot raise your own role; ask another administrator.",
                          field="role", status=403)
    if oneself and not active:
        raise UserRefused("You cannot deactivate your own account; another administrator can.",
                          field="active", status=409)
    if user.role == "admin" and user.active and (role != "admin" or not active) \
            and not _other_active_admins(user):
        raise UserRefused(
            f"{user.display_name} is the last active administrator; make another user an "
            "administrator first, or nobody could run the accounts.",
            field="role" if role != "admin" else "active", status=409)
    before = snapshot(user)
    user.email = accounts.normalise_email(email)
    user.display_name = display_name.strip()
    user.role = role
    user.hospital_id = hospital_id
    user.agency_id = agency_id
    user.active = active
    user.org_admin = bool(org_admin)
    after = snapshot(user)
    changed = [k for k in SNAPSHOT_FIELDS if before[k] != after[k]]
    if not changed:
        return []
    if {"role", "hospital_id", "agency_id", "active"} & set(changed):
        # What the old sessions (and their live streams) were allowed to see has changed.
        user.session_epoch += 1
    if before["active"] and not active:
        action = "user.deactivated"
    elif not before["active"] and active:
        action = "user.reactivated"
    else:
        action = "user.updated"
    db.session.flush()
    _audit(actor, action, user, before, after)
    emit("center", "user.updated", "user", user.public_id, accounts.user_event_payload(user), actor=actor)
    return changed


def reset_password(actor, user):
    """Give ``user`` a temporary password they must change at next sign-in; end their sessions."""
    if user.id == actor.user_id:
        raise UserRefused("Change your own password from your account page instead.", status=409)
    password = temporary_password()
    before = snapshot(user)
    user.set_password(password)
    user.must_change_password = True
    user.session_epoch += 1
    db.session.flush()
    _audit(actor, "user.password_reset", user, before, snapshot(user),
           detail="temporary password issued; all sessions ended")
    emit("center", "user.updated", "user", user.public_id, accounts.user_event_payload(user), actor=actor)
    return password


def listing(q=None, role=None, status=None, after=None, size=PAGE_SIZE):
    """One page of the accounts matching the filters (``q`` a part of the email or name, LIKE
    wildcards taken literally; ``role``; ``status`` "active" or "inactive"), ordered by email and
    keyset-paged through :func:`.paging.keyset`: a :class:`.paging.Page` (``rows``, ``after`` the
    next page's cursor or None).  Raises :class:`.paging.CursorRefused` (400) for a cursor it did
    not make."""
    query = sa.select(User)
    if q:
        query = query.where(sa.or_(like_contains(User.email, q), like_contains(User.display_name, q)))
    if role:
        query = query.where(User.role == role)
    if status == "active":
        query = query.where(User.active.is_(True))
    elif status == "inactive":
        query = query.where(User.active.is_(False))
    return paging.keyset(query, [User.email, User.id], after=after, newest_first=False, size=size)


def get(public_id):
    return db.session.scalar(sa.select(User).where(User.public_id == public_id))


# --- an agency's crew accounts, run by its organisation administrator ----------------------------

def crew_listing(agency_id):
    """The crew accounts of one agency (active and deactivated), by name."""
    return db.session.scalars(sa.select(User).where(User.role == "crew", User.agency_id == agency_id)
                              .order_by(User.display_name, User.email)).all()


def crew_member(agency_id, public_id):
    """The crew account ``public_id`` of agency ``agency_id``.  Raises :class:`UserRefused`: 404
    when there is none or it belongs to another agency (not told apart), 403 when it is an
    account of the agency that is not a crew member's (a dispatcher's is the center's to run)."""
    user = get(public_id)
    if user is None or user.agency_id != agency_id:
        raise UserRefused("No such crew member in your agency.", status=404)
    if user.role != "crew":
        raise UserRefused("Only crew accounts are run from here; the transport center runs the others.",
                          status=403)
    return user


def create_crew(actor, agency_id, email, display_name):
    """A new crew account of agency ``agency_id`` (through :func:`create`): ``(user, temporary
    password)``; a duplicate email is refused (400) like the center's form."""
    return create(actor, email, display_name, "crew", None, agency_id)


def set_crew_active(actor, user, active):
    """Deactivate or reactivate a crew account (through :func:`update`: audited, and
    deactivation ends its sessions); returns the changed field names."""
    return update(actor, user, user.email, user.display_name, user.role, None, user.agency_id, active)
