"""The relay: delivers each silo's outbox, applies cross-silo follow-ups, runs the deadline timer.

Delivery of one event:
1. claim it (a short lease; several relays may run together and never apply
   the same event at once);
2. run each handler registered for its type, each in its own transaction in
   its target silo, recording ``(event_id, handler)`` in that silo's
   ``inbox_events`` in the same transaction: a retried event skips handlers
   that already took effect;
3. mark it delivered, then wake the live streams.

A handler that fails (a silo down) leaves the event pending with a growing
back-off; after ``MAX_ATTEMPTS`` it is parked for the center's health panel,
never dropped.  Events of one entity are delivered in order.
"""
import logging
import threading
import time
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..config import SILOS
from ..extensions import db
from ..models.base import utcnow
from ..models.outbox import INBOX_BY_SILO, OUTBOX_BY_SILO
from . import handlers as handler_registry

log = logging.getLogger("medport.relay")

MAX_ATTEMPTS = 12
LEASE_SECONDS = 30
BATCH = 100
SWEEP_EVERY_SECONDS = 5


def backoff_seconds(attempts):
    """1, 2, 4, ... seconds, at most 5 minutes between tries."""
    return min(2 ** max(attempts - 1, 0), 300)


class Relay:
    """Delivers outbox events; one instance per thread or process."""

    def __init__(self, app):
        self.app = app
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self._last_sweep = 0.0

    # -- one pass -------------------------------------------------------------------
    def run_once(self, now=None):
        """Deliver every due event of every reachable silo; run the deadline timer. Returns count."""
        delivered = 0
        with self.app.app_context():
            for silo in SILOS:
                try:
                    delivered += self._deliver_silo(silo, now)
                except Exception as exc:  # a silo down: its events wait, the others go on
                    db.session.rollback()
                    log.warning("relay: cannot read the %s outbox: %s", silo, type(exc).__name__)
            if time.monotonic() - self._last_sweep >= SWEEP_EVERY_SECONDS or now is not None:
                self._last_sweep = time.monotonic()
                try:
                    from ..services import deadlines

                    deadlines.sweep(now)
                except Exception as exc:
                    db.session.rollback()
                    log.warning("relay: deadline sweep failed: %s", type(exc).__name__)
            db.session.remove()
        return delivered

    def _deliver_silo(self, silo, now=None):
        model = OUTBOX_BY_SILO[silo]
        now = now or utcnow()
        rows = db.session.execute(
            sa.select(model.id, model.entity_type, model.entity_id, model.next_attempt_at)
            .where(model.status == "pending")
            .order_by(model.id)
            .limit(BATCH)
        ).all()
        db.session.commit()
        blocked = set()  # entities with an earlier event not delivered in this pass
        delivered = 0
        for row in rows:
            key = (row.entity_type, row.entity_id)
            if key in blocked:
                continue
            if row.next_attempt_at > now or not self._claim(model, row.id, now):
                blocked.add(key)
                continue
            if self._deliver(silo, model, row.id):
                delivered += 1
            else:
                blocked.add(key)
        return delivered

    def _claim(self, model, event_pk, now):
        result = db.session.execute(
            sa.update(model)
            .where(model.id == event_pk, model.status == "pending",
                   sa.or_(model.claimed_until.is_(None), model.claimed_until < now))
            .values(claimed_until=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        return result.rowcount == 1

    def _deliver(self, silo, model, event_pk):
        event = db.session.get(model, event_pk)
        db.session.expunge(event)
        db.session.commit()
        try:
            for name, target, fn in handler_registry.handlers_for(silo, event.type):
                self._apply(name, target, fn, event)
        except Exception as exc:
            db.session.rollback()
            attempts = event.attempts + 1
            parked = attempts >= MAX_ATTEMPTS
            log.warning("relay: %s %s attempt %d failed: %s", silo, event.type, attempts,
                        type(exc).__name__)
            db.session.execute(
                sa.update(model).where(model.id == event_pk).values(
                    attempts=attempts,
                    status="parked" if parked else "pending",
                    next_attempt_at=utcnow() + timedelta(seconds=backoff_seconds(attempts)),
                    last_error=f"{type(exc).__name__}: {str(exc)[:300]}",
                    claimed_until=None,
                ).execution_options(synchronize_session=False)
            )
            db.session.commit()
            return False
        db.session.execute(
            sa.update(model).where(model.id == event_pk).values(
                status="delivered", delivered_at=utcnow(), attempts=event.attempts + 1,
                claimed_until=None, last_error=None,
            ).execution_options(synchronize_session=False)
        )
        db.session.commit()
        from .hub import hub

        hub.poke()
        return True

    def _apply(self, name, target, fn, event):
        """Run one handler in its target silo, exactly once in effect."""
        inbox = INBOX_BY_SILO[target]
        already = db.session.scalar(
            sa.select(inbox.id).where(inbox.event_id == event.event_id, inbox.handler == name)
        )
        if already is not None:
            db.session.commit()
            return
        try:
            fn(event)
            db.session.add(inbox(event_id=event.event_id, handler=name))
            db.session.commit()
        except IntegrityError:
            # Another relay applied the same handler first: its effect stands, ours is undone.
            db.session.rollback()
            if db.session.scalar(
                sa.select(inbox.id).where(inbox.event_id == event.event_id, inbox.handler == name)
            ) is None:
                raise

    # -- loops ----------------------------------------------------------------------
    def run_forever(self, poll_seconds=1.0):
        """Deliver until stopped; a commit that wrote outbox rows wakes the loop early."""
        while not self.stopping.is_set():
            try:
                self.run_once()
            except Exception:  # never let the relay die; the next pass retries
                log.exception("relay pass failed")
            self.wake.wait(poll_seconds)
            self.wake.clear()

    def stop(self):
        self.stopping.set()
        self.wake.set()


_inprocess = {"relay": None}
_inprocess_lock = threading.Lock()


def start_inprocess_relay(app):
    """Start the relay in a daemon thread the first time this process serves a request."""

    @app.before_request
    def _ensure_relay():
        if _inprocess["relay"] is not None:
            return
        with _inprocess_lock:
            if _inprocess["relay"] is not None:
                return
            relay = Relay(app)
            _inprocess["relay"] = relay
            thread = threading.Thread(target=relay.run_forever, name="medport-relay", daemon=True)
            thread.start()


def wake_inprocess_relay():
    """Called after a commit that wrote outbox rows: deliver now, not at the next poll."""
    relay = _inprocess["relay"]
    if relay is not None:
        relay.wake.set()
