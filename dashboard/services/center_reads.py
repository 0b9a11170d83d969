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
from types import SimpleNamespace

import sqlalchemy as sa
from flask import g, has_request_context, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from ..models.center import Agency, Hospital
from ..models.ems import EmsAgency
from . import degraded, session_trust, silos

log = logging.getLogger("medport.center")

_kept = {}
_lock = threading.Lock()


def read(key, query, fallback):
    """``query(connection)`` on the center, kept under ``key``; when the center cannot be
    reached, the value kept last, else ``fallback()``.  Raises nothing for an outage.

    Within one GET (or HEAD) request the first answer for ``key`` is reused: a page that
    needs the registry in its filters and in its rows reads it once.  Other requests (a
    form that changes the registry or the configuration) read it each time.
    """
    memo = _request_memo()
    if memo is not None and key in memo:
        return memo[key]
    value = _read(key, query, fallback)
    if memo is not None:
        memo[key] = value
    return value


def _request_memo():
    """This GET request's ``{key: value}`` of center reads, or None (no request, or not a read)."""
    if not has_request_context() or request.method not in ("GET", "HEAD"):
        return None
    memo = g.get("_center_reads")
    if memo is None:
        memo = g._center_reads = {}
    return memo


def _read(key, query, fallback):
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

    session_trust.forget()  # the center answers: sessions are checked there again
    return value


def forget():
    """Drop every kept value (tests)."""
    with _lock:
        _kept.clear()


# --- the registry ---------------------------------------------------------------------

def registry_names():
    """``({hospital id: entry}, {agency id: entry})`` of the center registry, ordered by name.

    An entry has ``id``, ``name``, ``short_code``, ``active`` and, for agencies, ``levels``
    and ``level_list``.  Two queries on their own center connection; while the center is
    unreachable, the registry read last in this process, or, before any, the agencies'
    profiles in the EMS silo and hospitals named by their registry id
    (:func:`read`).
    """
    return read("registry", _read_registry, _registry_from_silos)


#: The registry's two statements, built once (every page view runs them).
_HOSPITALS = sa.select(Hospital.id, Hospital.name, Hospital.short_code, Hospital.active).order_by(Hospital.name)
_AGENCIES = sa.select(Agency.id, Agency.name, Agency.short_code, Agency.active, Agency.levels).order_by(Agency.name)


def _read_registry(conn):
    hospitals = {row.id: _entry(row) for row in conn.execute(_HOSPITALS)}
    agencies = {row.id: _entry(row, row.levels) for row in conn.execute(_AGENCIES)}
    return hospitals, agencies


def _entry(row, levels=None):
    entry = SimpleNamespace(id=row.id, name=row.name, short_code=row.short_code, active=row.active)
    if levels is not None:
        entry.levels, entry.level_list = levels, [lv for lv in levels.split(",") if lv]
    return entry


class _UnnamedHospitals(dict):
    """Hospitals by registry id, named by their id (the names live in the center only)."""

    def get(self, key, default=None):
        if key is None:
            return default
        if key not in self:
            dict.__setitem__(self, key, SimpleNamespace(id=key, name=f"Hospital {key}", short_code="",
                                                        active=True))
        return dict.__getitem__(self, key)

    def __getitem__(self, key):
        return self.get(key)


def _registry_from_silos():
    """What the hospital and EMS silos know of the registry (the center unreachable, nothing
    read before): agencies from their EMS profiles, hospitals by id."""
    agencies = {}
    try:
        with silos.engine("ems").connect() as conn:
            for profile in conn.execute(sa.select(EmsAgency.agency_id, EmsAgency.name, EmsAgency.active,
                                                  EmsAgency.levels).order_by(EmsAgency.name)):
                agencies[profile.agency_id] = SimpleNamespace(
                    id=profile.agency_id, name=profile.name, short_code="", active=profile.active,
                    levels=profile.levels, level_list=[lv for lv in profile.levels.split(",") if lv])
    except (DBAPIError, PoolTimeout):
        pass  # the EMS silo is down too: agencies go unnamed
    return _UnnamedHospitals(), agencies
