"""The silos: which engine each one is, their health checks, and the one-silo-per-commit rule.

``flask medport check`` and ``GET /healthz`` both use :func:`check_silo`; the
nine checks are connection, expected tables and a write/read/delete round trip
for each of the three silos.
"""
import time
import uuid
import weakref

import sqlalchemy as sa
from flask import current_app
from sqlalchemy import event, inspect
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlalchemy.pool import QueuePool

from ..config import SILOS
from ..extensions import bind_key, db, engine
from ..models.base import utcnow
from ..models.center import DatabaseReference, ServiceRegistry
from ..models.outbox import OUTBOX_BY_SILO


class SiloUnavailable(Exception):
    """A silo's database cannot be reached; pages that need it answer 503."""

    def __init__(self, silo, original=None):
        super().__init__(f"{silo} silo unavailable")
        self.silo = silo
        self.original = original


def metadata(silo):
    return db.metadatas[bind_key(silo)]


#: engine -> silo, for the error tag below (engines of every app in this process).
_ENGINE_SILOS = weakref.WeakKeyDictionary()


def _tag_error(context):
    """``handle_error`` listener: the error remembers the silo whose engine raised it."""
    # A failed pre-ping reaches here without an engine (and a weak mapping cannot look up None).
    silo = _ENGINE_SILOS.get(context.engine) if context.engine is not None else None
    if silo is not None and context.sqlalchemy_exception is not None:
        context.sqlalchemy_exception.medport_silo = silo


def install_error_tags(app):
    """Tag every database error of ``app``'s engines with its silo (see :func:`silo_of_error`).

    A statement or lock timeout comes from a silo that still answers a connection check, so
    only the engine that raised the error can say which silo stalled.
    """
    with app.app_context():
        for key, eng in db.engines.items():
            _ENGINE_SILOS[eng] = key or "center"
            if not event.contains(eng, "handle_error", _tag_error):
                event.listen(eng, "handle_error", _tag_error)


def silo_of_error(exc):
    """The silo (``"center"``, ``"hospital"`` or ``"ems"``) whose engine raised ``exc``, or None.

    Follows the exception's cause and context chain, so an error re-raised by other code
    still names its silo.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        silo = getattr(exc, "medport_silo", None)
        if silo is not None:
            return silo
        exc = exc.__cause__ or exc.__context__
    return None


def is_unreachable(exc):
    """Whether ``exc`` says a silo could not be reached or did not answer in time (connection
    refused or lost, a statement or lock timeout, no pooled connection free): an outage, not
    a fault of the statement.  The one test the relay and the pages share."""
    if isinstance(exc, (OperationalError, PoolTimeout)):
        return True
    return isinstance(exc, DBAPIError) and bool(exc.connection_invalidated)


def error_kind(exc):
    """What kind of database error ``exc`` is, without its message (which may quote values).

    Returns e.g. ``"OperationalError (LockNotAvailable, sqlstate 55P03)"``: SQLAlchemy's class,
    then the driver's class and its SQLSTATE (PostgreSQL) or error name (SQLite) when known.
    """
    orig = getattr(exc, "orig", None)
    if orig is None:
        return type(exc).__name__
    detail = [type(orig).__name__]
    code = getattr(orig, "pgcode", None) or getattr(orig, "sqlstate", None)
    if code:
        detail.append(f"sqlstate {code}")
    elif getattr(orig, "sqlite_errorname", None):
        detail.append(orig.sqlite_errorname)
    return f"{type(exc).__name__} ({', '.join(detail)})"


def saturated_silos():
    """Silos whose connection pool has no connection free (all checked out), in ``SILOS`` order.

    What a request that timed out waiting for a pooled connection can say about the cause:
    a silo whose requests are stalled, or plain overload.  Reads pool counters only.
    """
    full = []
    for silo in SILOS:
        pool = engine(silo).pool
        if isinstance(pool, QueuePool) and pool.checkedin() == 0 and pool.checkedout() >= pool.size():
            full.append(silo)
    return full


def silo_of_table(table):
    key = table.metadata.info.get("bind_key")
    return key or "center"


def describe_url(silo):
    """Dialect, host and database name of a silo, never the password or user."""
    url = engine(silo).url
    return {
        "dialect": url.get_backend_name(),
        "host": url.host or "",
        "database": (url.database or "").rsplit("/", 1)[-1],
    }


def _timed(fn):
    started = time.perf_counter()
    fn()
    return round((time.perf_counter() - started) * 1000, 2)


def check_silo(silo, full=True):
    """Run the checks of one silo; return a dict of check name -> {ok, ms, error}.

    ``full=False`` only checks the connection (the cheap check ``/healthz`` runs).
    """
    results = {}
    eng = engine(silo)

    def connection():
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def tables():
        expected = set(metadata(silo).tables)
        with eng.connect() as conn:
            present = set(inspect(conn).get_table_names())
        missing = sorted(expected - present)
        if missing:
            raise RuntimeError("missing tables: " + ", ".join(missing))

    def round_trip():
        inbox = metadata(silo).tables["inbox_events"]
        probe = "check-" + uuid.uuid4().hex[:29]
        with eng.begin() as conn:
            conn.execute(inbox.insert().values(event_id=probe, handler="silo-check", applied_at=utcnow()))
        with eng.begin() as conn:
            found = conn.execute(
                sa.select(inbox.c.event_id).where(inbox.c.event_id == probe)
            ).scalar()
            if found != probe:
                raise RuntimeError("row written was not read back")
            deleted = conn.execute(inbox.delete().where(inbox.c.event_id == probe)).rowcount
            if deleted != 1:
                raise RuntimeError("row written was not deleted")

    checks = [("connection", connection)]
    if full:
        checks += [("tables", tables), ("round_trip", round_trip)]
    for name, fn in checks:
        try:
            results[name] = {"ok": True, "ms": _timed(fn)}
        except Exception as exc:  # report every failure, never raise from a check
            results[name] = {"ok": False, "ms": None, "error": _short_error(exc)}
            if name == "connection":
                break
    return results


def _short_error(exc):
    """A one-line error without connection strings (psycopg2 messages name no password)."""
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def check_all(full=True):
    """Check every silo; return ``{silo: {"up": bool, "latency_ms": float, "checks": {...}}}``."""
    report = {}
    for silo in SILOS:
        checks = check_silo(silo, full=full)
        up = all(c["ok"] for c in checks.values()) and len(checks) == (3 if full else 1)
        latency = checks.get("connection", {}).get("ms")
        report[silo] = {"up": up, "latency_ms": latency, "checks": checks}
    return report


def outbox_backlog(silo):
    """The events waiting in one silo's outbox: ``{"pending": int, "parked": int}``.

    ``pending`` counts events not yet delivered, those whose follow-ups are applied and
    whose center record waits (``recording``) included.  Read on a connection of its own
    (the request's session is left alone).  Raises
    SQLAlchemy's ``OperationalError`` (or another ``DBAPIError``) when the silo cannot be
    read within its timeouts; callers report the backlog as unknown then.
    """
    model = OUTBOX_BY_SILO[silo]
    with engine(silo).connect() as conn:
        counts = dict(conn.execute(
            sa.select(model.status, sa.func.count(model.id))
            .where(model.status.in_(("pending", "recording", "parked"))).group_by(model.status)
        ).all())
    return {"pending": counts.get("pending", 0) + counts.get("recording", 0), "parked": counts.get("parked", 0)}


def record_report(report):
    """Store the last result of each silo in the center's service registry (best effort)."""
    if not report["center"]["checks"]["connection"]["ok"]:
        return False
    session = Session(bind=engine("center"))
    try:
        for silo, result in report.items():
            row = session.scalar(sa.select(ServiceRegistry).where(ServiceRegistry.silo == silo))
            if row is None:
                row = ServiceRegistry(silo=silo)
                session.add(row)
            row.status = "up" if result["up"] else "down"
            row.latency_ms = result["latency_ms"]
            row.detail = result["checks"]
            row.checked_at = utcnow()
            ref = session.scalar(sa.select(DatabaseReference).where(DatabaseReference.silo == silo))
            if ref is None:
                ref = DatabaseReference(silo=silo)
                session.add(ref)
            described = describe_url(silo)
            ref.dialect, ref.host, ref.database = (
                described["dialect"],
                described["host"],
                described["database"],
            )
            ref.updated_at = utcnow()
        session.commit()
        return True
    except Exception:
        session.rollback()
        current_app.logger.warning("could not record silo health in the service registry")
        return False
    finally:
        session.close()


# --- the silo rule: one use case writes one silo in one transaction -----------------------

class CrossSiloWrite(RuntimeError):
    """A session tried to commit writes to two silos at once (not atomic: not allowed)."""


def _written_silos(session):
    silos = session.info.setdefault("medport_written_silos", set())
    return silos


def install_single_silo_guard():
    """Refuse a commit that would write to two silos; every app session gets the guard."""
    if getattr(install_single_silo_guard, "installed", False):
        return
    install_single_silo_guard.installed = True

    @event.listens_for(Session, "before_flush")
    def _collect(session, flush_context, instances):
        written = _written_silos(session)
        for obj in list(session.new) + list(session.dirty) + list(session.deleted):
            if session.is_modified(obj) or obj in session.new or obj in session.deleted:
                written.add(silo_of_table(obj.__table__))
        if len(written) > 1:
            session.info["medport_written_silos"] = set()
            raise CrossSiloWrite(
                "one transaction may write one silo; this one wrote " + ", ".join(sorted(written))
            )

    @event.listens_for(Session, "after_commit")
    def _reset_commit(session):
        session.info["medport_written_silos"] = set()

    @event.listens_for(Session, "after_rollback")
    def _reset_rollback(session):
        session.info["medport_written_silos"] = set()
