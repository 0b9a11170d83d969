"""Alert settings: which kinds each user (else their organisation, else the default) wants,
narrowed by level of care and urgency for new requests, and by email or not."""
import sqlalchemy as sa

from ...extensions import db
from ...models.center import AlertSetting
from ...models.vocabulary import LEVELS, URGENCIES
from ..refusals import Refused
from .kinds import DIGEST, KINDS, NEW_REQUEST, kinds_for


def user_scope(user_id):
    return f"user:{user_id}"


def org_scope(role, hospital_id=None, agency_id=None):
    """The default scope of a role's organisation: ``hospital:<id>``, ``agency:<id>`` or ``center``."""
    if role == "hospital":
        return f"hospital:{hospital_id}"
    if role == "ems":
        return f"agency:{agency_id}"
    return "center"


def _csv(values, allowed):
    return ",".join(v for v in allowed if v in set(values or ()))


def _split(text):
    return [v for v in (text or "").split(",") if v]


class Choice:
    """What a scope says of one kind: ``enabled``, ``email`` (also by email), ``levels`` and
    ``urgencies`` (lists, empty for all), and ``source``: ``user``, ``organisation`` or
    ``default`` (on, not by email)."""

    __slots__ = ("kind", "enabled", "email", "levels", "urgencies", "source")

    def __init__(self, kind, enabled=True, levels=(), urgencies=(), source="default", email=False):
        self.kind, self.enabled, self.source, self.email = kind, enabled, source, email
        self.levels, self.urgencies = list(levels), list(urgencies)

    def wants(self, level=None, urgency=None):
        """Whether an alert of this kind about a request of ``level`` and ``urgency`` is wanted."""
        if not self.enabled:
            return False
        if level and self.levels and level not in self.levels:
            return False
        return not (urgency and self.urgencies and urgency not in self.urgencies)


def setting_rows(scopes, kinds):
    """``{(scope, kind): AlertSetting}`` stored for ``scopes`` and ``kinds``."""
    if not scopes:
        return {}
    rows = db.session.scalars(sa.select(AlertSetting).where(
        AlertSetting.scope.in_(sorted(set(scopes))), AlertSetting.kind.in_(sorted(set(kinds)))))
    return {(row.scope, row.kind): row for row in rows}


def choice_from(kind, rows, scopes):
    """The :class:`Choice` of ``kind``: the first of ``scopes`` (``[(scope, source)]``) with a row
    in ``rows``, else the default."""
    for scope, source in scopes:
        row = rows.get((scope, kind))
        if row is not None:
            return Choice(kind, row.enabled, _split(row.levels), _split(row.urgencies), source, row.email)
    return Choice(kind)


def choices_for(user):
    """``{kind: Choice}`` of every kind ``user`` may receive (its own, else its organisation's),
    and of :data:`DIGEST` (enabled: alert emails come as an hourly digest)."""
    kinds = [kind for kind, _label in kinds_for(user.role)] + [DIGEST]
    scopes = [(user_scope(user.id), "user"),
              (org_scope(user.role, user.hospital_id, user.agency_id), "organisation")]
    rows = setting_rows([s for s, _ in scopes], kinds)
    return {kind: choice_from(kind, rows, scopes) for kind in kinds}


def scope_choices(scope, role_group):
    """``{kind: Choice}`` stored for one scope (an organisation's defaults), "on" where none is."""
    kinds = [kind for kind, _label in KINDS[role_group]] + [DIGEST]
    rows = setting_rows([scope], kinds)
    return {kind: choice_from(kind, rows, [(scope, "organisation")]) for kind in kinds}


class SettingsRefused(Refused):
    """Settings that cannot be saved; ``message`` says why (400)."""

    status = 400


def save_settings(scope, role_group, enabled_kinds, levels=(), urgencies=(), user_id=None,
                  email_kinds=(), digest=False):
    """Store, for ``scope``, which of ``role_group``'s kinds are on (and which of those also by
    email), for the EMS new-request kind the ``levels`` and ``urgencies`` wanted (none chosen:
    all), and whether alert emails come as an hourly ``digest``.  Every kind of the group gets a
    row, so what is saved holds whatever the organisation's default becomes.  Raises
    :class:`SettingsRefused` for an unknown kind, level or urgency.  The caller commits."""
    allowed = [kind for kind, _label in KINDS[role_group]]
    unknown = (set(enabled_kinds) | set(email_kinds)) - set(allowed)
    if unknown:
        raise SettingsRefused("Unknown alert kind.")
    if set(levels) - set(LEVELS) or set(urgencies) - set(URGENCIES):
        raise SettingsRefused("Choose levels of care and urgencies from the lists.")
    rows = setting_rows([scope], allowed)
    for kind in allowed:
        row = rows.get((scope, kind))
        if row is None:
            row = AlertSetting(scope=scope, kind=kind)
            db.session.add(row)
        row.enabled = kind in enabled_kinds
        row.email = kind in enabled_kinds and kind in email_kinds
        row.levels = _csv(levels, LEVELS) if kind == NEW_REQUEST else ""
        row.urgencies = _csv(urgencies, URGENCIES) if kind == NEW_REQUEST else ""
        row.updated_by_user_id = user_id
    row = setting_rows([scope], [DIGEST]).get((scope, DIGEST))
    if row is None:
        row = AlertSetting(scope=scope, kind=DIGEST)
        db.session.add(row)
    row.enabled, row.updated_by_user_id = bool(digest), user_id
    return allowed


def clear_user_settings(user_id):
    """Drop a user's own settings: their organisation's defaults apply again.  The caller commits."""
    db.session.execute(sa.delete(AlertSetting).where(AlertSetting.scope == user_scope(user_id))
                       .execution_options(synchronize_session=False))
