"""A user's alerts: the unread count, the newest, one of their own, marked read; and old alerts
and old sent deliveries pruned (the relay's timer)."""
from datetime import timedelta

import sqlalchemy as sa

from ...extensions import db
from ...models.base import utcnow
from ...models.center import Alert, AlertDelivery


def unread_count(user_id):
    return db.session.scalar(sa.select(sa.func.count(Alert.id)).where(
        Alert.user_id == user_id, Alert.read_at.is_(None))) or 0


def recent(user_id, limit=50, after_id=None):
    """The user's newest alerts (or those after ``after_id``, oldest first), at most ``limit``."""
    query = sa.select(Alert).where(Alert.user_id == user_id)
    if after_id is not None:
        return list(db.session.scalars(query.where(Alert.id > after_id).order_by(Alert.id).limit(limit)))
    return list(db.session.scalars(query.order_by(Alert.id.desc()).limit(limit)))


def own_alert(user_id, public_id):
    """The user's alert with ``public_id``, or None (another user's is not found)."""
    return db.session.scalar(sa.select(Alert).where(Alert.public_id == public_id, Alert.user_id == user_id))


def mark_read(user_id, public_id=None, now=None):
    """Mark one alert (or all) of the user read; returns how many changed.  The caller commits."""
    query = sa.update(Alert).where(Alert.user_id == user_id, Alert.read_at.is_(None))
    if public_id is not None:
        query = query.where(Alert.public_id == public_id)
    return db.session.execute(query.values(read_at=now or utcnow())
                              .execution_options(synchronize_session=False)).rowcount


#: Alerts older than this are deleted, read or not; so are sent deliveries older than
#: :data:`DELIVERY_RETENTION` (parked and waiting ones stay until replayed or sent).
ALERT_RETENTION = timedelta(days=90)
DELIVERY_RETENTION = timedelta(days=30)
PRUNE_BATCH = 5000


def prune(now=None):
    """Delete old alerts and old sent deliveries, at most ``PRUNE_BATCH`` each; returns how many.
    Commits."""
    now = now or utcnow()
    count = 0
    for model, old in ((Alert, [Alert.created_at < now - ALERT_RETENTION]),
                       (AlertDelivery, [AlertDelivery.status == "sent",
                                        AlertDelivery.created_at < now - DELIVERY_RETENTION])):
        batch = sa.select(model.id).where(*old).limit(PRUNE_BATCH).scalar_subquery()
        count += db.session.execute(sa.delete(model).where(model.id.in_(batch))
                                    .execution_options(synchronize_session=False)).rowcount
    db.session.commit()
    return count
