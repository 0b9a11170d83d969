"""Center data that pages of the hospital and EMS silos show, read so that a center outage
does not take those pages down.

Each read runs on its own short connection to the center (never the request's session, so a
failure leaves the request's own transaction untouched).  Its result is kept in this
process; when the center cannot be reached the last result read is used, or, before any
read succeeded, a fallback built from what the other silos know.  A page built from kept
data carries the center-unreachable banner (:func:`dashboard.services.degraded.note_unavailable`).
"""
import logging
import threading

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from . import degraded, silos

log = logging.getLogger("medport.center")

_kept = {}
_lock = threading.Lock()


def read(key, query, fallback):
    """``query(connection)`` on the center, kept under ``key``; when the center cannot be
    reached, the value kept last, else ``fallback()``.  Raises nothing for an outage."""
    try:
        with silos.engine("center").connect() as conn:
            value = query(conn)
    except (DBAPIError, PoolTimeout) as exc:
        log.warning("center unreachable reading %s: %s; using what was read last", key, type(exc).__name__)
        degraded.note_unavailable("center")
        with _lock:
            if key in _kept:
                return _kept[key]
        return fallback()
    with _lock:
        _kept[key] = value
    from . import session_trust

    session_trust.forget()  # the center answers: sessions are checked there again
    return value


def forget():
    """Drop every kept value (tests)."""
    with _lock:
        _kept.clear()
