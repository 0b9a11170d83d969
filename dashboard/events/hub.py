"""The per-process signal hub: live pages wait here for new signals.

Signals are rows of the center's ``live_signals`` table (so a reconnecting
stream can replay what it missed).  Each process keeps the recent ones in
memory, numbered in the order it learnt of them, and is woken when new ones
exist:

* ``local``: the relay in this process pokes the hub directly (embedded default);
* ``postgres``: the relay sends ``NOTIFY medport_signals`` on the center
  database, and one listener thread per process ``LISTEN``s and fetches, so a
  signal reaches the streams of every worker and host;
* a slow poll backs both up, so a lost notification delays, never loses.

A stream follows the hub's own sequence, not the table's ids: a signal
committed late with a lower id (two relays at once) is still passed on.

Fan-out: streams that may receive the same signals form an *audience* (a viewer's
role and organisation, without the user; :meth:`SignalHub.join`).  Which audiences a new
signal concerns is decided once per audience, and only the streams of those audiences
wake; the text an audience is sent is built once per batch of signals and shared by
its streams.  A signal addressed to one user (an alert, an account change) wakes the
audiences that user's streams belong to, with a text of its own for that user.
"""
import logging
import select
import threading
import time
from collections import Counter, deque

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from ..extensions import db, engine
from ..models.center import LiveSignal

log = logging.getLogger("medport.events")
CHANNEL = "medport_signals"
#: Signals held in memory for streams that fell behind and for replays.
RECENT = 5000
#: Ids a concurrent writer may still commit below the highest id seen.
LOOKBACK = 100
_COLUMNS = (LiveSignal.id, LiveSignal.name, LiveSignal.entity_id, LiveSignal.hospital_id,
            LiveSignal.agency_ids, LiveSignal.user_id, LiveSignal.unit_ids)


class Batch:
    """The signals after a stream's position, as one audience sees them.

    ``signals``: every signal after the position, in the hub's order (the hub's tuples);
    ``data``: the encoded text (bytes) of those a stream of the audience receives, for a user
    no signal of the batch names; ``by_user``: the same for each user of the audience a signal
    names (an alert, an account change); ``accounts``: the user ids an ``account-updated``
    signal names (their streams re-check the session, one by one); ``newest``: the highest
    signal id in ``signals`` (None when empty); ``complete``: False when the position is older
    than memory reaches.
    """

    __slots__ = ("signals", "data", "by_user", "accounts", "newest", "complete")

    def __init__(self, signals, data, by_user, accounts, newest, complete):
        self.signals, self.data, self.by_user, self.accounts = signals, data, by_user, accounts
        self.newest, self.complete = newest, complete

    def data_for(self, user_id):
        """What a stream of ``user_id`` is sent of this batch (bytes)."""
        return self.by_user.get(user_id, self.data)


class Audience:
    """The streams of one scope (a viewer's role and organisation, without the user).

    ``accepts(signal, user_id)`` is the access rule of the scope's streams; asked with
    ``user_id`` None it answers for any user a signal does not name, once per signal for all
    the streams.  ``encode(signal)`` is a signal's text on the wire (bytes).  ``users`` counts
    the open streams per user id; ``last`` is the newest hub sequence that may concern one of
    them (its streams sleep while their position is at or past it).
    """

    def __init__(self, key, accepts, encode, sequence):
        self.key, self.accepts, self.encode = key, accepts, encode
        self.users = Counter()
        self.last = sequence
        self.arrived = threading.Event()
        self._batch = None  # (position, new position, Batch): shared by the streams at one position

    def concerned_by(self, signal):
        """Whether ``signal`` is for one of these streams."""
        named = signal[5]
        if named is not None and named in self.users and self.accepts(signal, named):
            return True
        return self.accepts(signal, None)

    def wake(self):
        arrived, self.arrived = self.arrived, threading.Event()
        arrived.set()

    def build(self, signals, complete):
        """The :class:`Batch` of ``signals``: each signal encoded once, each rule asked once per
        signal (and once more per user of the audience a signal names)."""
        wire = {}

        def text(signal):
            if signal[0] not in wire:
                wire[signal[0]] = self.encode(signal)
            return wire[signal[0]]

        named = {signal[5] for signal in signals if signal[5] is not None}
        by_user = {user_id: b"".join(text(s) for s in signals if self.accepts(s, user_id))
                   for user_id in named if user_id in self.users}
        accounts = {signal[5] for signal in signals if signal[1] == "account-updated"}
        return Batch(signals, b"".join(text(s) for s in signals if self.accepts(s, None)), by_user,
                     accounts, max((signal[0] for signal in signals), default=None), complete)


class SignalHub:
    """Recent signals of this process, and the event its streams wait on.

    A signal is a tuple ``(id, name, entity_id, hospital_id, agency_ids, user_id, unit_ids)``.
    """

    def __init__(self):
        self.app = None
        self._lock = threading.Lock()
        #: Set (and replaced) whenever new signals arrive: every waiting stream wakes at once.
        self._arrived = threading.Event()
        self._fetch_lock = threading.Lock()
        self._listener_lock = threading.Lock()
        self._listener = None
        self._reset()

    def _reset(self):
        with self._lock:
            self._recent = deque(maxlen=RECENT)  # (sequence number, signal)
            self._sequence = 0
            self._seen = set()
            self._last_id = None
            self._primed_floor = None
            self._audiences = {}
            self._app_generation = getattr(self, "_app_generation", 0) + 1
            self.closing = False
            #: False while the center (where signals are kept) cannot be read: live pages
            #: are told their data may be stale, and refresh themselves.
            self.reachable = True

    def close(self):
        """This process is stopping: every stream ends now (browsers reconnect elsewhere)."""
        with self._lock:
            self.closing = True
            self._arrived.set()
            for audience in self._audiences.values():
                audience.wake()

    def init_app(self, app):
        """Serve ``app`` (one per process; a new app starts from a clean memory)."""
        self.app = app
        self._reset()

    # -- state ---------------------------------------------------------------------
    def position(self):
        """The current end of the sequence: a new stream starts here."""
        if self._last_id is None:
            self.refresh()
        return self._sequence

    def latest_id(self):
        """The newest signal id this process knows of, or None when it cannot tell.

        A page rendered now reflects every signal up to (at least) this id, so its
        stream asks to replay from here: nothing between render and connect is lost.
        The id may lag behind the table (then a little more is replayed), never lead it:
        the listener keeps it current.  The first read goes through the request's own
        session, so a page never waits for a second pooled connection.
        """
        self.ensure_listener()
        if self._last_id is None:
            self.refresh(reader=db.session())
        return self._last_id

    def refresh(self, reader=None):
        """Fetch signals newer than what this process has; wake the waiting streams.

        ``reader`` (the listener's connection, a request's session) spares the
        pool, which page requests may be using up; its errors are the caller's.
        Returns how many new signals were taken in.
        """
        app = self.app
        if app is None:
            return 0
        with self._fetch_lock, app.app_context():
            generation = self._app_generation
            own = reader is None
            reader = db.session if own else reader
            try:
                known = self._last_id
                rows = [] if known is None else self._read_after(reader, known - LOOKBACK)
                # Starting, or the newest signal seen is gone (the table was emptied or
                # pruned): begin again from the newest signals there are.
                priming = known is None or (known > 0 and all(row.id != known for row in rows))
                if priming:
                    top = reader.scalar(sa.select(sa.func.max(LiveSignal.id))) or 0
                    floor = max(top - LOOKBACK, 0)
                    rows = self._read_after(reader, floor)
            except Exception as exc:
                if not own:
                    raise
                self._set_reachable(False)
                log.warning("signal hub: cannot read signals: %s", type(exc).__name__)
                return 0
            finally:
                if own:
                    db.session.remove()
            self._set_reachable(True)
            with self._lock:
                if generation != self._app_generation:
                    return 0  # the hub was reset meanwhile
                if priming:
                    self._seen, self._last_id, self._primed_floor = set(), 0, floor
                fresh = [tuple(row) for row in rows if row.id not in self._seen]
                numbered = []
                for signal in fresh:
                    self._sequence += 1
                    numbered.append((self._sequence, signal))
                    self._seen.add(signal[0])
                self._recent.extend(numbered)
                self._wake_concerned(numbered)
                self._last_id = max([self._last_id] + [row.id for row in rows])
                keep_above = self._last_id - 2 * LOOKBACK
                if len(self._seen) > 4 * LOOKBACK:
                    self._seen = {i for i in self._seen if i > keep_above}
                if fresh:
                    arrived, self._arrived = self._arrived, threading.Event()
                    arrived.set()
        return len(fresh)

    def _set_reachable(self, reachable):
        """Note whether the center can be read; a change wakes every stream to tell its page."""
        if reachable != self.reachable:
            self.reachable = reachable
            with self._lock:
                arrived, self._arrived = self._arrived, threading.Event()
                for audience in self._audiences.values():
                    audience.wake()
            arrived.set()

    def _wake_concerned(self, numbered):
        """Wake the audiences that ``numbered`` ((sequence, signal) pairs) may concern.

        Called with the lock held; each audience's rule is asked once per signal.
        """
        for audience in self._audiences.values():
            newest = None
            for sequence, signal in numbered:
                if audience.concerned_by(signal):
                    newest = sequence
            if newest is not None:
                audience.last = newest
                audience.wake()

    @staticmethod
    def _read_after(reader, floor):
        return reader.execute(
            sa.select(*_COLUMNS).where(LiveSignal.id > max(floor, 0)).order_by(LiveSignal.id).limit(RECENT)
        ).all()

    def wait(self, position, timeout):
        """Block until the sequence moves past ``position``, or ``timeout``; return it."""
        arrived = self._arrived  # taken before the check: a signal after it sets this one
        if self._sequence == position:
            arrived.wait(timeout)
        return self._sequence

    # -- audiences -------------------------------------------------------------------
    def join(self, key, user_id, accepts, encode):
        """A stream of ``user_id`` opens in the audience ``key``; returns the :class:`Audience`.

        ``key`` is any hashable naming the scope; ``accepts`` and ``encode`` are taken from
        the first stream of the scope (every stream of one scope has the same rule).  The
        stream must :meth:`leave` when it ends.
        """
        with self._lock:
            audience = self._audiences.get(key)
            if audience is None:
                audience = self._audiences[key] = Audience(key, accepts, encode, self._sequence)
            audience.users[user_id] += 1
            # What arrived before this stream joined may concern it (its user was not counted
            # then): its first wait looks rather than sleeps.
            audience.last = max(audience.last, self._sequence)
            return audience

    def leave(self, audience, user_id):
        """A stream of ``audience`` ended; the audience goes with its last stream."""
        with self._lock:
            audience.users[user_id] -= 1
            if audience.users[user_id] <= 0:
                del audience.users[user_id]
            if not audience.users and self._audiences.get(audience.key) is audience:
                del self._audiences[audience.key]

    def wait_for(self, audience, position, timeout):
        """Block until a signal after ``position`` may concern ``audience``, the center's
        reachability changes, the hub closes, or ``timeout`` (seconds) passes."""
        arrived = audience.arrived  # taken before the check: a signal after it sets this one
        if audience.last <= position and not self.closing:
            arrived.wait(timeout)

    def batch_for(self, audience, position):
        """``(new position, Batch)`` of the signals after ``position`` for ``audience``.

        Built once per audience and position: the other streams at the same position
        share it (its ``data`` is not rebuilt nor re-encoded per stream).
        """
        cached = audience._batch
        if cached is not None and cached[0] == position and cached[1] == self._sequence:
            return cached[1], cached[2]
        new_position, signals, complete = self.after(position)
        batch = audience.build(signals, complete)
        audience._batch = (position, new_position, batch)
        return new_position, batch

    def after(self, position):
        """``(new position, signals after position, complete)``.

        ``complete`` is False when the stream fell behind further than memory
        reaches (it then replays from the table).
        """
        with self._lock:
            items = []
            for sequence, signal in reversed(self._recent):
                if sequence <= position:
                    break
                items.append(signal)
            items.reverse()
            oldest = self._recent[0][0] if self._recent else self._sequence + 1
            complete = position >= oldest - 1 or position >= self._sequence
            return self._sequence, items, complete

    def since_id(self, last_id):
        """Signals with id > ``last_id`` held in memory, or None when memory does not reach back.

        Memory reaches back when the hub has held every signal after ``last_id``:
        ``last_id`` is at or above where this process started listening.
        """
        if self._last_id is None:
            self.refresh()
        with self._lock:
            if self._primed_floor is None or last_id < self._primed_floor:
                return None
            oldest_kept = self._recent[0][1][0] if self._recent else None
            if len(self._recent) == RECENT and oldest_kept is not None and last_id < oldest_kept:
                return None
            return sorted((s for _, s in self._recent if s[0] > last_id), key=lambda s: s[0])

    def replay_from_db(self, last_id, limit=1000):
        """``(signals with id > last_id, complete)`` from the table.

        ``complete`` is False when the table no longer holds what came right
        after ``last_id`` (pruned), or cannot be read (the center unreachable): the
        stream then asks every panel to refresh.
        """
        with self.app.app_context():
            try:
                rows = db.session.execute(
                    sa.select(*_COLUMNS).where(LiveSignal.id > last_id).order_by(LiveSignal.id).limit(limit)
                ).all()
                reaches_back = last_id <= 0 or db.session.scalar(
                    sa.select(LiveSignal.id).where(LiveSignal.id <= last_id).limit(1)) is not None
                self._set_reachable(True)
                return [tuple(r) for r in rows], reaches_back and len(rows) < limit
            except Exception as exc:  # the center is unreachable: nothing to replay now
                self._set_reachable(False)
                log.warning("signal hub: cannot replay signals: %s", type(exc).__name__)
                return [], False
            finally:
                db.session.remove()

    # -- publishing ------------------------------------------------------------------
    def poke(self):
        """Called by the relay after it wrote a signal: tell the streams of every process.

        With ``postgres``, a NOTIFY reaches every process's listener (this one's
        too, when it serves streams); with ``local``, this process looks at once.
        """
        if self.app is None:
            return
        if self.app.config["MEDPORT_SIGNAL_BACKEND"] != "postgres":
            self.refresh()
            return
        try:
            with self.app.app_context(), engine("center").connect() as conn:
                conn.execute(sa.text("SELECT pg_notify(:channel, '')"), {"channel": CHANNEL})
                conn.commit()
        except Exception as exc:  # the slow poll still brings the signal
            log.warning("signal hub: NOTIFY failed: %s", type(exc).__name__)

    # -- listening -------------------------------------------------------------------
    def ensure_listener(self):
        """Start this process's listener thread once (LISTEN, or a slow poll)."""
        if self._listener is not None or self.app is None:
            return
        with self._listener_lock:
            if self._listener is not None:
                return
            self._listener = threading.Thread(target=self._listen_forever, name="medport-signals",
                                              daemon=True)
            self._listener.start()

    def _poll_seconds(self):
        return float(self.app.config.get("MEDPORT_SIGNAL_POLL_SECONDS", 5))

    def _listen_forever(self):
        while True:
            if self.app.config["MEDPORT_SIGNAL_BACKEND"] == "postgres":
                try:
                    self._listen_postgres()
                except Exception as exc:
                    log.warning("signal hub: LISTEN lost (%s); retrying", type(exc).__name__)
            self.refresh()
            time.sleep(self._poll_seconds())

    def _listen_postgres(self):
        """LISTEN on the center database until the connection is lost or the app changes.

        The listening connection also fetches the signals, so fan-out never
        waits for a pooled connection.
        """
        app, generation = self.app, self._app_generation
        with app.app_context():
            center = engine("center")
        conn = center.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.exec_driver_sql(f"LISTEN {CHANNEL}")
            driver = conn.connection.driver_connection
            self.refresh(reader=conn)  # whatever was written before LISTEN took effect
            while generation == self._app_generation:
                ready, _, _ = select.select([driver], [], [], self._poll_seconds())
                if ready:
                    driver.poll()
                    driver.notifies.clear()
                self.refresh(reader=conn)
        finally:
            conn.invalidate()  # never back to the pool still listening
            conn.close()


hub = SignalHub()


# -- knowing when signals were written ------------------------------------------------------

_FLUSHED, _COMMITTED = "medport_signals_flushed", "medport_signals_committed"


def watch_signal_writes():
    """Note on each session when a transaction that inserted live signals commits (read with
    :func:`signals_written`).  Installed once per process by the relay, which wakes the
    streams after each such commit."""
    if getattr(watch_signal_writes, "installed", False):
        return
    watch_signal_writes.installed = True

    @event.listens_for(Session, "after_flush")
    def _note(session, flush_context):
        # ``session.new`` still holds what this flush inserted.
        if any(isinstance(obj, LiveSignal) for obj in session.new):
            session.info[_FLUSHED] = True

    @event.listens_for(Session, "after_commit")
    def _committed(session):
        if session.info.pop(_FLUSHED, False):
            session.info[_COMMITTED] = True

    @event.listens_for(Session, "after_rollback")
    def _forget(session):
        session.info.pop(_FLUSHED, None)


def signals_written(session):
    """Whether ``session`` committed live signals since this was last asked (then forgotten).

    Needs :func:`watch_signal_writes` installed; otherwise always False.
    """
    return session.info.pop(_COMMITTED, False)
