"""Outbox and inbox tables, one pair in every silo.

A write that another silo (or a live page) must hear about inserts an
``outbox_events`` row in the same transaction, in the same silo.  The relay
applies the event's follow-ups in the target silo and records the event id in
that silo's ``inbox_events`` within the same transaction as the follow-up, so
a follow-up takes effect once even when the relay retries or two relays race.
"""
import sqlalchemy as sa

from ..extensions import db
from .base import JSONText, new_public_id, utcnow


class OutboxEventMixin:
    """Columns of an outbox row; ``status`` is pending, delivered or parked."""

    id = sa.Column(sa.Integer, primary_key=True)
    event_id = sa.Column(sa.String(36), nullable=False, unique=True, default=new_public_id)
    type = sa.Column(sa.String(40), nullable=False)
    entity_type = sa.Column(sa.String(40), nullable=False)
    entity_id = sa.Column(sa.String(64), nullable=False)
    payload = sa.Column(JSONText, nullable=False, default=dict)
    actor_user_id = sa.Column(sa.Integer)
    actor_ip = sa.Column(sa.String(64))
    created_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    status = sa.Column(sa.String(12), nullable=False, default="pending")
    attempts = sa.Column(sa.Integer, nullable=False, default=0)
    next_attempt_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)
    last_error = sa.Column(sa.Text)
    delivered_at = sa.Column(sa.DateTime)
    # A relay claims a row for a short lease so several relays never apply
    # the same event at the same time.
    claimed_until = sa.Column(sa.DateTime)


class InboxEventMixin:
    """An event whose follow-up has been applied in this silo."""

    id = sa.Column(sa.Integer, primary_key=True)
    event_id = sa.Column(sa.String(36), nullable=False)
    handler = sa.Column(sa.String(60), nullable=False)
    applied_at = sa.Column(sa.DateTime, nullable=False, default=utcnow)


def _outbox_table_args():
    return (sa.Index("ix_outbox_events_status_next", "status", "next_attempt_at"),)


def _inbox_table_args():
    return (sa.UniqueConstraint("event_id", "handler"),)


class CenterOutboxEvent(OutboxEventMixin, db.Model):
    __tablename__ = "outbox_events"
    __table_args__ = _outbox_table_args()
    silo = "center"


class HospitalOutboxEvent(OutboxEventMixin, db.Model):
    __bind_key__ = "hospital"
    __tablename__ = "outbox_events"
    __table_args__ = _outbox_table_args()
    silo = "hospital"


class EmsOutboxEvent(OutboxEventMixin, db.Model):
    __bind_key__ = "ems"
    __tablename__ = "outbox_events"
    __table_args__ = _outbox_table_args()
    silo = "ems"


class CenterInboxEvent(InboxEventMixin, db.Model):
    __tablename__ = "inbox_events"
    __table_args__ = _inbox_table_args()


class HospitalInboxEvent(InboxEventMixin, db.Model):
    __bind_key__ = "hospital"
    __tablename__ = "inbox_events"
    __table_args__ = _inbox_table_args()


class EmsInboxEvent(InboxEventMixin, db.Model):
    __bind_key__ = "ems"
    __tablename__ = "inbox_events"
    __table_args__ = _inbox_table_args()


OUTBOX_BY_SILO = {
    "center": CenterOutboxEvent,
    "hospital": HospitalOutboxEvent,
    "ems": EmsOutboxEvent,
}
INBOX_BY_SILO = {
    "center": CenterInboxEvent,
    "hospital": HospitalInboxEvent,
    "ems": EmsInboxEvent,
}
