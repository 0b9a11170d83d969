"""Writing events: an outbox row in the same silo and transaction as the change."""
from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..extensions import db, engine
from ..models.outbox import OUTBOX_BY_SILO

#: PostgreSQL channel on which a commit that wrote outbox rows wakes the relays.
RELAY_CHANNEL = "medport_outbox"

EVENT_TYPES = (
    "trip.posted",
    "trip.changed",
    "trip.awarded",
    "trip.status_changed",
    "trip.step_undone",
    "trip.cancelled",
    "trip.handed_back",
    "trip.unfilled",
    "trip.awaiting_award",
    "trip.reopened",
    "trip.invite_widened",
    "trip.bidding_opened",
    "trip.released",
    "trip.readiness",
    "series.created",
    "series.changed",
    "series.cancelled",
    "series.generated",
    "trip.care_override",
    "preference.added",
    "preference.removed",
    "preference.moved",
    "preference.changed",
    "bid.placed",
    "bid.changed",
    "bid.withdrawn",
    "unit.status_changed",
    "unit.changed",
    "unit.shift_started",
    "unit.shift_ended",
    "user.created",
    "user.updated",
    "user.login",
    "session.ended",
    "config.changed",
    "registry.changed",
)


class Actor(NamedTuple):
    """Who made a change: the account id (None for the system), the client's address and the
    name shown in timelines.  Views build it (``dashboard.views.actor``); the relay and the
    command line use :data:`SYSTEM`."""

    user_id: int | None
    ip: str | None = None
    label: str | None = None


#: The actor of changes nobody made by hand (the relay's timer, the command line).
SYSTEM = Actor(None, None, "MedPort")


def emit(silo, type_, entity_type, entity_id, payload, *, actor):
    """Add an outbox row to the current session; it commits with the change it describes.

    ``actor`` (an :class:`Actor`, or any value with ``user_id`` and ``ip``) is recorded on the
    row as who made the change and from which address; :data:`SYSTEM` for the timer, the relay
    and the command line.  The payload (a dict, or None for ``{}``) holds ids and operational
    facts only, never patient data beyond what the receiving silo already shows (level, needs,
    window).  Returns the outbox row.  Raises ``ValueError`` for a type not in
    :data:`EVENT_TYPES`.
    """
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    row = OUTBOX_BY_SILO[silo](
        type=type_,
        entity_type=entity_type,
        entity_id=str(entity_id),
        payload=payload or {},
        actor_user_id=actor.user_id,
        actor_ip=actor.ip,
    )
    db.session.add(row)
    _mark_written(db.session())
    _notify_relays(silo)
    return row


def _notify_relays(silo):
    """On PostgreSQL, wake every relay process when this transaction commits.

    ``NOTIFY`` is transactional: it is delivered at commit, and never for a
    transaction rolled back.  Repeats within one transaction are folded into one.
    """
    silo_engine = engine(silo)
    if silo_engine.dialect.name == "postgresql":
        db.session.execute(sa.text("SELECT pg_notify(:channel, :silo)"),
                           {"channel": RELAY_CHANNEL, "silo": silo}, bind_arguments={"bind": silo_engine})


def _mark_written(session):
    session.info["medport_outbox_written"] = True


def install_relay_wakeup(wake):
    """After a commit that wrote outbox rows, call ``wake()`` (the in-process relay's, on the
    embedded default); installed once per process by the app factory.  The relay sits above
    this module, so it is handed in rather than imported."""
    if getattr(install_relay_wakeup, "installed", False):
        return
    install_relay_wakeup.installed = True

    @event.listens_for(Session, "after_commit")
    def _wake(session):
        if session.info.pop("medport_outbox_written", False):
            wake()

    @event.listens_for(Session, "after_rollback")
    def _forget(session):
        session.info.pop("medport_outbox_written", None)
