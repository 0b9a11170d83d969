"""The ``Server-Timing`` header: what a response cost the app and each silo's database.

Every response the app answers carries (W3C Server Timing, https://www.w3.org/TR/server-timing/)::

    Server-Timing: app;dur=12.41, db-hospital;dur=3.08;desc="hospital: 4 queries",
                   db-center;dur=0.52;desc="center: 1 query"

``app`` is the wall time in milliseconds from the call into the app (before the session is
read) to the response's headers; one ``db-<silo>`` entry per silo the request ran statements on,
with the time spent in the driver (``before_cursor_execute`` to ``after_cursor_execute``,
milliseconds) and the number of statements.  A streamed response (the live stream, the CSV
exports) carries the cost of its start only: headers leave before its body is made.

Per-request state lives in a :class:`contextvars.ContextVar`, which is per thread and, under
gevent, per greenlet; statements run outside a request (the relay's thread, the CLI) find no
collector and cost one lookup.  Work a request hands to another thread carries its collector with
:func:`carry`.  Of a statement only its first word is read (whether it is a ``SELECT``); its
values never are.
"""
import contextvars
import threading
import weakref
from time import perf_counter

from sqlalchemy import event

from .extensions import db

_current = contextvars.ContextVar("medport_server_timing", default=None)

#: engine -> silo name, for every app's engines in this process.
_ENGINE_SILOS = weakref.WeakKeyDictionary()


class Collector:
    """One request's clock and database time: ``silos`` maps silo -> ``[seconds, statements]``;
    ``wrote`` turns True at the first statement that is not a ``SELECT`` (a write, or anything
    this module does not read as a plain read: a savepoint, a ``WITH``), so
    :func:`dashboard.views.act` knows a request that only read."""

    __slots__ = ("started", "silos", "lock", "wrote")

    def __init__(self):
        self.started = perf_counter()
        self.silos = {}
        self.lock = threading.Lock()
        self.wrote = False

    def add(self, silo, seconds):
        with self.lock:
            entry = self.silos.get(silo)
            if entry is None:
                self.silos[silo] = [seconds, 1]
            else:
                entry[0] += seconds
                entry[1] += 1

    def header(self, now=None):
        """The header's value: ``app;dur=<ms>`` then one ``db-<silo>`` entry per silo used."""
        app_ms = ((now if now is not None else perf_counter()) - self.started) * 1000
        parts = [f"app;dur={app_ms:.2f}"]
        with self.lock:
            entries = sorted(self.silos.items())
        for silo, (seconds, count) in entries:
            noun = "query" if count == 1 else "queries"
            parts.append(f'db-{silo};dur={seconds * 1000:.2f};desc="{silo}: {count} {noun}"')
        return ", ".join(parts)


def current():
    """The collector of the request running in this thread or greenlet, or None."""
    return _current.get()


def carry(fn):
    """``fn`` wrapped to run in a copy of the caller's context, so the statements it runs on
    another thread count toward the caller's request (their time adds up: the ``db-`` entries
    are database time, which may exceed the wall time when statements overlap)."""
    context = contextvars.copy_context()

    def run(*args, **kwargs):
        return context.run(fn, *args, **kwargs)

    return run


def _before_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    collector = _current.get()
    if collector is None:
        return
    if not collector.wrote and statement.lstrip()[:6].upper() != "SELECT":
        collector.wrote = True
    if context is not None:
        context._medport_timing = (collector, perf_counter())


def _after_cursor_execute(conn, cursor, statement, parameters, context, executemany):
    started = getattr(context, "_medport_timing", None) if context is not None else None
    if started is None:
        return
    collector, t0 = started
    context._medport_timing = None
    collector.add(_ENGINE_SILOS.get(conn.engine, "db"), perf_counter() - t0)


class _Middleware:
    """Starts a request's collector before Flask reads the request, ends it after the call."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        token = _current.set(Collector())
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            _current.reset(token)


def install(app):
    """Time every request of ``app`` and add its ``Server-Timing`` header.

    Call before other ``after_request`` functions are registered: Flask runs them in reverse,
    so this one runs last and its ``app`` figure includes theirs.
    """
    with app.app_context():
        for key, eng in db.engines.items():
            _ENGINE_SILOS[eng] = key or "center"
            if not event.contains(eng, "before_cursor_execute", _before_cursor_execute):
                event.listen(eng, "before_cursor_execute", _before_cursor_execute)
                event.listen(eng, "after_cursor_execute", _after_cursor_execute)
    app.wsgi_app = _Middleware(app.wsgi_app)

    @app.after_request
    def server_timing(response):
        collector = _current.get()
        if collector is not None:
            response.headers["Server-Timing"] = collector.header()
        return response
