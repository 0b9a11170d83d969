"""Audit entries in the center silo.  Append-only: nothing here updates or deletes."""
from ..extensions import db
from ..models.center import AuditLog


def record(action, *, user=None, user_id=None, user_email=None, ip=None, entity_type=None,
           entity_id=None, before=None, after=None, detail=None, silo="center", event_id=None,
           created_at=None):
    """Add an audit row to the current session (the caller commits).

    ``created_at`` (naive UTC) is when the action happened, when that was earlier than now:
    an action taken while the center was unreachable is recorded with its own time.
    """
    if user is not None:
        user_id, user_email = user.id, user.email
    row = AuditLog(
        action=action,
        user_id=user_id,
        user_email=user_email,
        ip=ip,
        entity_type=entity_type,
        entity_id=None if entity_id is None else str(entity_id),
        before=before,
        after=after,
        detail=(detail or "")[:500] or None,
        silo=silo,
        event_id=event_id,
    )
    if created_at is not None:
        row.created_at = created_at
    db.session.add(row)
    return row
