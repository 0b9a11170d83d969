"""The relay: delivers each silo's outbox, applies cross-silo follow-ups, runs the timer.

The timer (:class:`dashboard.events.timer.Timer`) handles deadlines of open requests, raises
the alerts no event marks (and the escalation ladder's steps), prunes old live signals and, at
most once a minute, stores the analytics cells of the days that closed.

Delivery of one event:
1. claim it (a short lease; several relays may run together and never apply
   the same event at once);
2. run each handler registered for its type, each in its own transaction in
   its target silo, recording ``(event_id, handler)`` in that silo's
   ``inbox_events`` in the same transaction: a retried event skips handlers
   that already took effect, and of two relays racing on one handler the
   inbox's unique key lets exactly one commit;
3. mark it delivered.

The live streams are woken as soon as a step that wrote live signals has committed (the
center's record, then the alerts it raised), not after the event's last step: a new request
reaches the boards without waiting for its alerts to be worked out.

A handler that fails leaves the event pending with a growing back-off; after
``MEDPORT_RELAY_MAX_ATTEMPTS`` tries it is parked for the center's health panel,
never dropped (:func:`retry_parked` puts it back).  A silo that cannot be reached
(refused, lost, timed out) is an outage, not a faulty event: its events are retried
every ``UNREACHABLE_BACKOFF_SECONDS`` at most, never parked for it, and within one
pass only the first event that needs it pays the timeout.
Events of one entity are delivered in order: while an earlier pending event of
an entity waits, the later ones wait behind it.  The center's record (audit entry,
live signal) is the exception: once an event's follow-ups are applied it is
``recording`` and later events pass it, so a center outage never holds up what the
hospital and EMS silos tell each other; the record is written, with the event's own
time, when the center is back.
"""
import logging
import select
import threading
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..config import SILOS
from ..extensions import db, engine
from ..models.base import utcnow
from ..models.outbox import INBOX_BY_SILO, OUTBOX_BY_SILO
from ..services.deliveries.sender import start_sender_thread
from ..services.silos import error_kind
from ..services.silos import is_unreachable as silo_unreachable
from . import handlers as handler_registry
from .hub import hub, signals_written, watch_signal_writes
from .outbox import RELAY_CHANNEL
from .timer import Timer

log = logging.getLogger("medport.relay")

DEFAULT_MAX_ATTEMPTS = 15
MAX_BACKOFF_SECONDS = 300
LEASE_SECONDS = 30
BATCH = 100
LISTEN_CHECK_SECONDS = 5


#: Follow-ups applied, the center's record (audit entry, live signal) still to write.
RECORDING = "recording"
#: Outbox statuses the relay delivers.
DUE_STATUSES = ("pending", RECORDING)
#: Longest wait between tries while a silo cannot be reached (seconds).
UNREACHABLE_BACKOFF_SECONDS = 5


class TargetUnreachable(Exception):
    """A handler's target silo was found unreachable earlier in this pass: not tried again."""


def is_unreachable(exc):
    """:func:`dashboard.services.silos.is_unreachable`, or a target already found unreachable."""
    return isinstance(exc, TargetUnreachable) or silo_unreachable(exc)


def backoff_seconds(attempts):
    """1, 2, 4, ... seconds after the 1st, 2nd, 3rd failure; at most 5 minutes."""
    return min(2 ** max(attempts - 1, 0), MAX_BACKOFF_SECONDS)


class Relay:
    """Delivers outbox events; one instance per thread or process."""

    def __init__(self, app):
        self.app = app
        self._unreachable = set()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.timer = Timer()
        watch_signal_writes()

    @property
    def max_attempts(self):
        return int(self.app.config.get("MEDPORT_RELAY_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))

    # -- one pass -------------------------------------------------------------------
    def run_once(self, now=None):
        """Deliver every due event of every reachable silo, then run the timer when due.

        ``now`` (naive UTC) stands in for the clock, so tests can step past a
        back-off or a deadline; given, the timer always runs.  What the timer
        emits (unfilled, auto-awarded) is delivered in the same pass.  Returns
        how many events were delivered.
        """
        with self.app.app_context():
            try:
                delivered = self._deliver_all(now)
                if (now is not None or self.timer.due()) and self.timer.run(now):
                    delivered += self._deliver_all(now)
            finally:
                db.session.remove()
        return delivered

    def _deliver_all(self, now):
        delivered = 0
        # Target silos found unreachable in this pass: events that need them wait for the
        # next pass untried, so an outage costs one try (and one timeout) per pass, not one
        # per event.
        self._unreachable = set()
        for silo in SILOS:
            try:
                delivered += self._deliver_silo(silo, now or utcnow())
            except Exception as exc:  # a silo down: its events wait, the others go on
                db.session.rollback()
                log.warning("relay: cannot read the %s outbox: %s", silo, type(exc).__name__)
        return delivered

    def drain(self, max_passes=20, now=None):
        """Run passes until one delivers nothing (bounded); return the total delivered.

        Follow-ups emitted while delivering (a unit freed, an auto-award) go out too.
        """
        total = 0
        for _ in range(max_passes):
            delivered = self.run_once(now)
            total += delivered
            if not delivered:
                break
        return total

    def _deliver_silo(self, silo, now):
        model = OUTBOX_BY_SILO[silo]
        # Entities whose earliest pending event is still backing off: nothing later may pass it.
        waiting = {
            (row.entity_type, row.entity_id): row.first
            for row in db.session.execute(
                sa.select(model.entity_type, model.entity_id, sa.func.min(model.id).label("first"))
                .where(model.status == "pending", model.next_attempt_at > now)
                .group_by(model.entity_type, model.entity_id)
            )
        }
        rows = db.session.execute(
            sa.select(model.id, model.entity_type, model.entity_id, model.status)
            .where(model.status.in_(DUE_STATUSES), model.next_attempt_at <= now)
            .order_by(model.id)
            .limit(BATCH)
        ).all()
        db.session.commit()
        blocked = set()  # entities with an earlier event not delivered in this pass
        delivered = 0
        for row in rows:
            key = (row.entity_type, row.entity_id)
            if row.status == "pending" and (key in blocked or waiting.get(key, row.id) < row.id):
                continue
            if not self._claim(model, row.id, now):
                blocked.add(key)  # another relay holds it, or it is no longer pending
                continue
            if self._deliver(silo, model, row.id, now):
                delivered += 1
            elif row.status == "pending":
                blocked.add(key)
        return delivered

    def _claim(self, model, event_pk, now):
        """Take a lease on a due, pending event; False when another relay holds it."""
        result = db.session.execute(
            sa.update(model)
            .where(model.id == event_pk, model.status.in_(DUE_STATUSES), model.next_attempt_at <= now,
                   sa.or_(model.claimed_until.is_(None), model.claimed_until < now))
            .values(claimed_until=now + timedelta(seconds=LEASE_SECONDS))
            .execution_options(synchronize_session=False)
        )
        db.session.commit()
        return result.rowcount == 1

    def _deliver(self, silo, model, event_pk, now):
        event = db.session.get(model, event_pk)
        db.session.expunge(event)
        db.session.commit()
        handlers = handler_registry.handlers_for(silo, event.type)
        if event.status == RECORDING:
            handlers = [h for h in handlers if h[0] in handler_registry.CENTER_STEPS]
        step = None
        try:
            for step in handlers:
                if step[1] in self._unreachable:
                    raise TargetUnreachable(step[1])
                self._apply(*step, event)
        except Exception as exc:
            db.session.rollback()
            attempts = event.attempts + 1
            unreachable = is_unreachable(exc)
            if unreachable and step is not None:
                self._unreachable.add(step[1])
            # A silo that cannot be reached is an outage, not a poison event: it is retried
            # (every UNREACHABLE_BACKOFF_SECONDS at most) until the silo is back, never parked.
            parked = attempts >= self.max_attempts and not unreachable
            # Follow-ups all applied, only the center's record waits: later events of the
            # entity may pass (their follow-ups must not wait for the center).
            status = "parked" if parked else (
                RECORDING if step is not None and step[0] in handler_registry.CENTER_STEPS else event.status)
            delay = backoff_seconds(attempts)
            if unreachable:
                delay = min(delay, UNREACHABLE_BACKOFF_SECONDS)
            log.warning("relay: %s %s %s attempt %d failed%s: %s", silo, event.type, event.event_id,
                        attempts, " (parked)" if parked else "", error_kind(exc))
            db.session.execute(
                sa.update(model).where(model.id == event_pk).values(
                    attempts=attempts,
                    status=status,
                    next_attempt_at=now + timedelta(seconds=delay),
                    last_error=_describe(exc),
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
        return True

    def _apply(self, name, target, fn, event):
        """Run one handler in its target silo, exactly once in effect.

        A handler that wrote live signals (the center's record, alerts) wakes the live
        streams of every process once it has committed, before the next handler runs.
        """
        inbox = INBOX_BY_SILO[target]
        signals_written(db.session())  # forget what earlier commits of this session wrote
        applied = sa.select(inbox.id).where(inbox.event_id == event.event_id, inbox.handler == name)
        if db.session.scalar(applied) is not None:
            db.session.commit()
            return
        try:
            fn(event)
            db.session.add(inbox(event_id=event.event_id, handler=name))
            db.session.commit()
        except IntegrityError:
            # Another relay applied the same handler first: its effect stands, ours is undone.
            db.session.rollback()
            if db.session.scalar(applied) is None:
                raise
            db.session.commit()
            return
        if signals_written(db.session()):
            hub.poke()

    # -- loops ----------------------------------------------------------------------
    def run_forever(self, poll_seconds=1.0):
        """Deliver until stopped; a commit that wrote outbox rows wakes the loop early.

        In this process the commit hook wakes it; on PostgreSQL a commit in any
        process does too (``LISTEN medport_outbox`` on each silo).
        """
        listener = threading.Thread(target=self._listen_for_commits, name="medport-relay-listen",
                                    daemon=True)
        listener.start()
        while not self.stopping.is_set():
            # Cleared before the pass, not after the wait: a commit noticed during the pass
            # (or just as the wait ends) starts the next pass at once, never a poll later.
            self.wake.clear()
            try:
                self.run_once()
            except Exception:  # never let the relay die; the next pass retries
                log.exception("relay pass failed")
            self.wake.wait(poll_seconds)

    def stop(self):
        """End :meth:`run_forever` after the pass under way."""
        self.stopping.set()
        self.wake.set()

    def _listen_for_commits(self):
        """LISTEN on every PostgreSQL silo; each notification wakes the delivery loop."""
        with self.app.app_context():
            engines = [silo_engine for silo_engine in (engine(silo) for silo in SILOS)
                       if silo_engine.dialect.name == "postgresql"]
        while engines and not self.stopping.is_set():
            raws = []
            try:
                for silo_engine in engines:
                    raws.append(silo_engine.raw_connection())
                    conn = raws[-1].driver_connection
                    conn.rollback()
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        cur.execute(f"LISTEN {RELAY_CHANNEL}")
                self.wake.set()  # whatever was committed before LISTEN took effect
                conns = [raw.driver_connection for raw in raws]
                while not self.stopping.is_set():
                    ready, _, _ = select.select(conns, [], [], LISTEN_CHECK_SECONDS)
                    for conn in ready:
                        conn.poll()
                        conn.notifies.clear()
                    if ready:
                        self.wake.set()
            except Exception as exc:  # a silo down: the poll goes on; listen again later
                log.info("relay: LISTEN interrupted (%s); retrying", type(exc).__name__)
                self.stopping.wait(LISTEN_CHECK_SECONDS)
            finally:
                for raw in raws:
                    raw.invalidate()


def _describe(exc):
    """A one-line error for the health panel (driver messages name no password)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


# -- what the operators use ---------------------------------------------------------------

def retry_parked(silo=None, event_id=None):
    """Put parked events back in the queue (all, one silo's, or one event); return how many.

    Handlers that already took effect are skipped on the next delivery (the
    inbox).  Each silo's outbox is updated in its own transaction, committed here.
    """
    count = 0
    for name, model in OUTBOX_BY_SILO.items():
        if silo is not None and name != silo:
            continue
        query = sa.update(model).where(model.status == "parked")
        if event_id is not None:
            query = query.where(model.event_id == event_id)
        result = db.session.execute(
            query.values(status="pending", attempts=0, next_attempt_at=utcnow(), claimed_until=None)
            .execution_options(synchronize_session=False))
        db.session.commit()
        count += result.rowcount
    wake_inprocess_relay()
    return count


# -- the embedded default: a relay thread in the web process ------------------------------

_inprocess = {"relay": None, "thread": None, "sender": None}
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
            thread = threading.Thread(target=relay.run_forever, name="medport-relay", daemon=True)
            thread.start()
            # Alert emails and webhooks in a thread of their own: a slow server never holds the relay.
            _inprocess.update(relay=relay, thread=thread, sender=start_sender_thread(app))


def stop_inprocess_relay(timeout=10):
    """Stop this process's relay thread (a worker shutting down); it finishes its pass."""
    with _inprocess_lock:
        relay, thread, sender = _inprocess["relay"], _inprocess["thread"], _inprocess["sender"]
        _inprocess.update(relay=None, thread=None, sender=None)
    if sender is not None:
        sender.stop()
    if relay is not None:
        relay.stop()
        thread.join(timeout)


def wake_inprocess_relay():
    """Called after a commit that wrote outbox rows: deliver now, not at the next poll."""
    relay = _inprocess["relay"]
    if relay is not None:
        relay.wake.set()
