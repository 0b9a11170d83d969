"""The escalation ladder: a request unfilled or at risk climbs it until someone acknowledges it.

The first alert to the center is the ``center.unfilled`` or ``center.at_risk`` alert itself;
:func:`start` (a step of that alert's production, in the relay) opens the ladder.  The relay's
timer (:func:`step_due`) alerts each further step of the center's ``escalation_ladder``
setting (``admin@10, admin@30``: :func:`dashboard.services.configuration.parse_ladder`) when
its minutes since the first alert have passed with no acknowledgement; those alerts go out
whatever the recipients' settings say.  An acknowledgement (:func:`acknowledge`, a
coordinator or admin) records who and when, is audited, and stops the ladder; so does the
request no longer needing it (awarded, cancelled, no longer at risk: ``resolved_at``).
"""
from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models.base import utcnow
from ..models.center import AlertEscalation
from ..models.hospital import TransportRequest
from ..models.vocabulary import trip_dispatch_state
from . import audit, configuration
from .alerts.recipients import center_users
from .alerts.write import notify, trip_link
from .refusals import Refused

BATCH = 200


class EscalationRefused(Refused):
    """An acknowledgement that cannot be made; ``message`` for the user, ``status`` 404 or 409."""


def ladder():
    """The configured steps after the first alert: ``[(role, minutes)]``."""
    try:
        return configuration.parse_ladder(configuration.get("escalation_ladder"))
    except ValueError:
        return configuration.parse_ladder(configuration.SETTINGS["escalation_ladder"][0])


def start(reason, facts, at, occasion=""):
    """Open the ladder for a request (``facts``: ``public_id``, ``reference``) that went
    ``reason`` (``unfilled`` or ``at_risk``) at ``at`` (naive UTC), unless one is open for it
    already or this occasion started one before.  Adds to the center session; returns the
    escalation or None."""
    public_id = facts.get("public_id")
    if not public_id:
        return None
    key = f"{reason}:{public_id}:{occasion or at.isoformat()}"[:160]
    existing = db.session.scalar(sa.select(AlertEscalation.id).where(sa.or_(
        AlertEscalation.key == key,
        sa.and_(AlertEscalation.trip_public_id == public_id, AlertEscalation.acknowledged_at.is_(None),
                AlertEscalation.resolved_at.is_(None)))).limit(1))
    if existing is not None:
        return None
    steps = ladder()
    row = AlertEscalation(key=key, reason=reason, trip_public_id=public_id,
                          reference=(facts.get("reference") or "")[:64], started_at=at, step=0,
                          next_at=at + timedelta(minutes=steps[0][1]) if steps else None)
    db.session.add(row)
    return row


def _still_needed(row, trip, now):
    if trip is None or trip.status in ("cancelled", "completed", "at_pickup", "transporting",
                                       "at_destination"):
        return False
    if row.reason == "unfilled":
        return trip.status == "open" and trip_dispatch_state(trip, now) in ("unfilled", "awaiting_award")
    return True


def step_due(now=None):
    """Alert the next step of every open ladder whose time has come (the relay's timer); close
    those whose request no longer needs them.  Reads the hospital silo for the requests' state.
    Returns how many alerts were added.  Commits."""
    now = now or utcnow()
    steps = ladder()
    due = list(db.session.scalars(sa.select(AlertEscalation).where(
        AlertEscalation.acknowledged_at.is_(None), AlertEscalation.resolved_at.is_(None),
        AlertEscalation.next_at.is_not(None), AlertEscalation.next_at <= now)
        .order_by(AlertEscalation.next_at).limit(BATCH)))
    if not due:
        db.session.commit()
        return 0
    trips = {t.public_id: t for t in db.session.scalars(sa.select(TransportRequest).where(
        TransportRequest.public_id.in_([row.trip_public_id for row in due])))}
    added = 0
    for row in due:
        if not _still_needed(row, trips.get(row.trip_public_id), now):
            row.resolved_at, row.next_at = now, None
            continue
        if row.step >= len(steps):
            row.next_at = None
            continue
        role, minutes = steps[row.step]
        row.step += 1
        row.next_at = row.started_at + timedelta(minutes=steps[row.step][1]) if row.step < len(steps) else None
        what = "unfilled" if row.reason == "unfilled" else "at risk"
        added += len(notify(
            center_users((role,)), f"center.{row.reason}", f"escalation:{row.public_id}:{row.step}",
            f"Escalation level {row.step}: {row.reference} {what}, not acknowledged for {minutes} min",
            reference=row.reference,
            link_of=lambda user, pid=row.trip_public_id: trip_link(user.role, pid),
            now=now, force=True))
    db.session.commit()
    return added


def open_escalations(limit=100):
    """Ladders not acknowledged nor resolved, oldest first."""
    return list(db.session.scalars(sa.select(AlertEscalation).where(
        AlertEscalation.acknowledged_at.is_(None), AlertEscalation.resolved_at.is_(None))
        .order_by(AlertEscalation.started_at).limit(limit)))


def acknowledge(public_id, user, ip=None, now=None):
    """Record that ``user`` (a coordinator or admin) has the request in hand: the ladder stops.
    Raises :class:`EscalationRefused` (404 unknown; 409 already acknowledged, with who).  Audited;
    the caller commits."""
    row = db.session.scalar(sa.select(AlertEscalation).where(AlertEscalation.public_id == public_id))
    if row is None:
        raise EscalationRefused("No such escalation.", 404)
    if row.acknowledged_at is not None:
        raise EscalationRefused(f"Already acknowledged by {row.acknowledged_by}.")
    now = now or utcnow()
    row.acknowledged_at, row.acknowledged_by_user_id = now, user.id
    row.acknowledged_by, row.next_at = user.email, None
    audit.record("escalation.acknowledged", user=user, ip=ip, entity_type="trip",
                 entity_id=row.trip_public_id,
                 after={"reason": row.reason, "reference": row.reference, "step": row.step})
    return row
