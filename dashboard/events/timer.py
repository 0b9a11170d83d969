"""The relay's timer: what no event marks, run by the relay between deliveries.

Deadlines of open requests, the alerts no event raises (and the escalation ladder's steps),
live signals, delivered events and old alerts pruned, and, at most once a minute, the analytics
cells of the days that closed stored.  Each part on its own: a silo down skips only what needs it.
"""
import logging
import time
from datetime import timedelta

import sqlalchemy as sa

from ..config import SILOS
from ..extensions import db
from ..models.base import utcnow
from ..models.center import LiveSignal
from ..models.outbox import INBOX_BY_SILO, OUTBOX_BY_SILO
from ..services import deadlines, escalation
from ..services.alerts import inbox as alert_inbox
from ..services.alerts import sweep as alert_sweep
from ..services.analytics.stored import roll_up
from .hub import hub

log = logging.getLogger("medport.relay")

SWEEP_EVERY_SECONDS = 5
#: How often the timer looks for closed days whose analytics cells are not stored yet.
ROLLUP_EVERY_SECONDS = 60
#: Live signals older than this are pruned; a page away longer reloads anyway.
SIGNAL_RETENTION = timedelta(days=1)
#: Delivered outbox rows and inbox records older than this are pruned (the audit log keeps
#: the record of every event); pending and parked rows are never pruned.
EVENT_RETENTION = timedelta(days=7)
PRUNE_EVERY_SECONDS = 600
#: Rows deleted per table and prune, so a backlog is cleared in short transactions.
PRUNE_BATCH = 5000


class Timer:
    """The timer of one relay: remembers when each of its parts last ran."""

    def __init__(self):
        self._last_sweep = None
        self._last_prune = None
        self._last_rollup = None

    def due(self):
        """Whether a run is due (every ``SWEEP_EVERY_SECONDS``)."""
        return self._last_sweep is None or time.monotonic() - self._last_sweep >= SWEEP_EVERY_SECONDS

    def run(self, now):
        """One run: deadlines of open requests, old live signals pruned (old events and alerts
        every ``PRUNE_EVERY_SECONDS``), the timer's alerts and escalation steps, the rollup.
        ``now`` (naive UTC) stands in for the clock; given, old events and alerts are pruned too.

        Returns how many requests reached their deadline.
        """
        self._last_sweep = time.monotonic()
        handled = 0
        try:
            handled = deadlines.sweep(now)
        except Exception as exc:  # a silo the policy needs is down: the next sweep retries
            db.session.rollback()
            log.warning("relay: deadline sweep failed: %s", type(exc).__name__)
        try:
            db.session.execute(
                sa.delete(LiveSignal)
                .where(LiveSignal.created_at < (now or utcnow()) - SIGNAL_RETENTION)
                .execution_options(synchronize_session=False)
            )
            db.session.commit()
        except Exception as exc:
            db.session.rollback()
            log.warning("relay: pruning live signals failed: %s", type(exc).__name__)
        if now is not None or self._last_prune is None \
                or time.monotonic() - self._last_prune >= PRUNE_EVERY_SECONDS:
            self._last_prune = time.monotonic()
            self.prune_events(now or utcnow())
            self._prune_alerts(now)
        self._alerts(now)
        self._roll_up(now)
        return handled

    def _prune_alerts(self, now):
        """Old alerts and sent deliveries deleted (``services.alerts.inbox.prune``); a center outage waits."""
        try:
            alert_inbox.prune(now)
        except Exception as exc:
            db.session.rollback()
            log.warning("relay: pruning alerts failed: %s", type(exc).__name__)

    def _alerts(self, now):
        """The timer's alerts (deadlines near, crews late, requests at risk, parked events, silos
        down) and the escalation ladder's due steps; a silo down skips what needs it."""
        try:
            alert_sweep.sweep(now)
        except Exception as exc:
            db.session.rollback()
            log.warning("relay: alert sweep failed: %s", type(exc).__name__)
        try:
            if escalation.step_due(now):
                hub.poke()
        except Exception as exc:
            db.session.rollback()
            log.warning("relay: escalation step failed: %s", type(exc).__name__)

    def prune_events(self, now):
        """Delete delivered outbox rows and inbox records older than ``EVENT_RETENTION``, at
        most ``PRUNE_BATCH`` per table.  Returns ``{silo: rows deleted}``.

        An inbox record is what keeps a retried event from applying twice, so none is pruned
        while its event is still pending or parked somewhere (a parked event may be retried
        weeks later); if an outbox cannot be read, no inbox is pruned this time.  A silo that
        is down is left for the next prune.
        """
        cutoff, pruned = now - EVENT_RETENTION, {}
        unfinished = set()
        try:
            for model in OUTBOX_BY_SILO.values():
                unfinished.update(db.session.scalars(
                    sa.select(model.event_id).where(model.status != "delivered").limit(PRUNE_BATCH + 1)))
            db.session.commit()
        except Exception:
            db.session.rollback()
            unfinished = None
        prune_inbox = unfinished is not None and len(unfinished) <= PRUNE_BATCH
        for silo in SILOS:
            outbox, inbox = OUTBOX_BY_SILO[silo], INBOX_BY_SILO[silo]
            targets = [(outbox, [outbox.status == "delivered", outbox.delivered_at < cutoff])]
            if prune_inbox:
                targets.append((inbox, [inbox.applied_at < cutoff]
                                + ([inbox.event_id.not_in(unfinished)] if unfinished else [])))
            try:
                count = 0
                for model, old in targets:
                    batch = sa.select(model.id).where(*old).limit(PRUNE_BATCH).scalar_subquery()
                    count += db.session.execute(
                        sa.delete(model).where(model.id.in_(batch))
                        .execution_options(synchronize_session=False)).rowcount
                db.session.commit()
                pruned[silo] = count
            except Exception as exc:
                db.session.rollback()
                log.warning("relay: pruning the %s event tables failed: %s", silo, type(exc).__name__)
        return pruned

    def _roll_up(self, now):
        """Store the analytics cells of the last few days that closed (at most once a minute)."""
        if self._last_rollup is not None and time.monotonic() - self._last_rollup < ROLLUP_EVERY_SECONDS:
            return
        self._last_rollup = time.monotonic()
        try:
            roll_up(now)
        except Exception as exc:  # a silo down: the next minute retries
            db.session.rollback()
            log.warning("relay: analytics rollup failed: %s", type(exc).__name__)
