"""The per-process signal hub: live pages wait here for new signals.

Signals are rows of the center's ``live_signals`` table (so a reconnecting
stream can replay what it missed).  Each process keeps the recent ones in
memory and is woken when new ones exist:

* ``local``: the in-process relay pokes the hub directly (embedded default);
* ``postgres``: the relay sends ``NOTIFY medport_signals`` on the center
  database, and one listener thread per process ``LISTEN``s and fetches;
* a slow poll backs both up, so a lost notification delays, never loses.
"""
import logging
import select
import threading
import time
from collections import deque

import sqlalchemy as sa

from ..extensions import db
from ..models.center import LiveSignal

log = logging.getLogger("medport.events")
CHANNEL = "medport_signals"
RECENT = 5000
# Ids a concurrent writer may still commit below the highest id seen.
LOOKBACK = 200


class SignalHub:
    def __init__(self):
        self.app = None
        self._cond = threading.Condition()
        self._recent = deque(maxlen=RECENT)
        self._seen = set()
        self._last_id = None
        self._listener = None
        self._lock = threading.Lock()
        #: Grows with every signal taken in; streams wait for it to change.
        self.generation = 0

    def init_app(self, app):
        self.app = app

    # -- state ---------------------------------------------------------------------
    @property
    def last_id(self):
        if self._last_id is None:
            self.refresh()
        return self._last_id or 0

    def refresh(self):
        """Fetch signals newer than what this process has; wake the waiting streams."""
        app = self.app
        if app is None:
            return 0
        with self._lock, app.app_context():
            try:
                floor = max((self._last_id or 0) - LOOKBACK, 0)
                if self._last_id is None:
                    top = db.session.scalar(sa.select(sa.func.max(LiveSignal.id))) or 0
                    floor = max(top - LOOKBACK, 0)
                rows = db.session.execute(
                    sa.select(LiveSignal.id, LiveSignal.name, LiveSignal.entity_id,
                              LiveSignal.hospital_id, LiveSignal.agency_ids, LiveSignal.user_id)
                    .where(LiveSignal.id > floor).order_by(LiveSignal.id).limit(RECENT)
                ).all()
            except Exception as exc:
                log.warning("signal hub: cannot read signals: %s", type(exc).__name__)
                return 0
            finally:
                db.session.remove()
            fresh = [r for r in rows if r.id not in self._seen]
            for row in fresh:
                self._seen.add(row.id)
                self._recent.append(tuple(row))
            if len(self._seen) > RECENT * 2:
                keep = {r[0] for r in self._recent}
                self._seen = keep
            top = max([r.id for r in rows], default=self._last_id or 0)
            self._last_id = max(self._last_id or 0, top)
        if fresh:
            with self._cond:
                self.generation += len(fresh)
                self._cond.notify_all()
        return len(fresh)

    def wait(self, generation, timeout):
        """Block until signals newer than ``generation`` (a count) arrive, or ``timeout``."""
        with self._cond:
            self._cond.wait_for(lambda: self.generation != generation, timeout)
        return self.generation

    def since(self, last_id):
        """Signals with id > ``last_id`` held in memory, and whether memory covers the gap."""
        items = [s for s in list(self._recent) if s[0] > last_id]
        oldest = self._recent[0][0] if self._recent else None
        covered = oldest is not None and oldest <= last_id + 1 or not self._recent
        return items, covered

    def replay_from_db(self, last_id, limit=1000):
        with self.app.app_context():
            try:
                rows = db.session.execute(
                    sa.select(LiveSignal.id, LiveSignal.name, LiveSignal.entity_id,
                              LiveSignal.hospital_id, LiveSignal.agency_ids, LiveSignal.user_id)
                    .where(LiveSignal.id > last_id).order_by(LiveSignal.id).limit(limit)
                ).all()
                return [tuple(r) for r in rows]
            finally:
                db.session.remove()

    # -- publishing ------------------------------------------------------------------
    def poke(self):
        """Called by the relay after it wrote signals: tell every process."""
        if self.app is None:
            return
        if self.app.config["MEDPORT_SIGNAL_BACKEND"] == "postgres":
            try:
                with db.engines[None].connect() as conn:
                    conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
                    conn.commit()
            except Exception as exc:
                log.warning("signal hub: NOTIFY failed: %s", type(exc).__name__)
        self.refresh()

    # -- listening -------------------------------------------------------------------
    def ensure_listener(self):
        """Start this process's listener thread once (LISTEN, or a slow poll)."""
        if self._listener is not None or self.app is None:
            return
        with self._lock:
            if self._listener is not None:
                return
            self._listener = threading.Thread(target=self._listen_forever, name="medport-signals",
                                              daemon=True)
            self._listener.start()

    def _listen_forever(self):
        poll = self.app.config.get("MEDPORT_SIGNAL_POLL_SECONDS", 5)
        while True:
            if self.app.config["MEDPORT_SIGNAL_BACKEND"] == "postgres":
                try:
                    self._listen_postgres(poll)
                except Exception as exc:
                    log.warning("signal hub: LISTEN lost (%s); retrying", type(exc).__name__)
            self.refresh()
            time.sleep(poll)

    def _listen_postgres(self, poll):
        with self.app.app_context():
            raw = db.engines[None].raw_connection()
        try:
            conn = raw.driver_connection
            conn.set_session(autocommit=True)
            with conn.cursor() as cur:
                cur.execute(f"LISTEN {CHANNEL}")
            self.refresh()
            while True:
                ready, _, _ = select.select([conn], [], [], poll)
                if ready:
                    conn.poll()
                    conn.notifies.clear()
                self.refresh()
        finally:
            raw.invalidate()


hub = SignalHub()
