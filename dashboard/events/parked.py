"""Parked events (deliveries the relay gave up on) put back in the queue from the silo health page.

The relay's :func:`dashboard.events.relay.retry_parked` commits each silo's outbox itself; the
audit entry is the caller's to commit.
"""
from ..config import SILOS
from ..services import audit
from ..services.refusals import Refused
from .relay import retry_parked

#: The longest event id (a UUID) the health page lists.
EVENT_ID_MAX = 36


def requeue(silo, event_id, user, ip):
    """Queue parked events for delivery again: one (``silo`` and ``event_id``), one silo's
    (``silo``) or every silo's (neither); returns how many, and audits it.

    Raises :class:`Refused`: 400 a silo not in :data:`SILOS` or an event without its silo (or
    longer than :data:`EVENT_ID_MAX`); 404 the event is no longer parked; 503 a silo could not be
    reached (nothing was changed there).  The caller commits the audit entry.
    """
    if (silo is not None and silo not in SILOS) or (
            event_id is not None and (silo is None or len(event_id) > EVENT_ID_MAX)):
        raise Refused("Choose a parked event from the list on the health page.", 400)
    try:
        count = retry_parked(silo, event_id)
    except Exception as exc:  # the silo went down meanwhile: nothing was changed there
        raise Refused(f"The {silo or 'event'} database could not be reached ({type(exc).__name__}); "
                      "try again.", 503) from exc
    if event_id is not None and count == 0:
        raise Refused("That event is no longer parked; it may have been retried already.", 404)
    audit.record("relay.parked_retried", user=user, ip=ip, entity_type="outbox_event",
                 entity_id=event_id, after={"silo": silo, "events": count})
    return count
