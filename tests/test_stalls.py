"""Stalls on PostgreSQL: one silo's table held by a lock, or a statement running too long.

The silo still accepts connections (a connection check says it is up), but a statement
that needs the locked table waits.  With the bind's lock and statement timeouts, a page
that needs the stalled silo answers 503 naming it within those bounds, and pages that do
not read the locked table keep answering 200.  The lock is held by a separate connection in
an open transaction, as a long migration or a manual ``LOCK TABLE`` would.
"""
import logging
import time
from contextlib import contextmanager

import pytest
import sqlalchemy as sa

from dashboard import create_app
from dashboard.config import engine_options
from dashboard.extensions import db
from tests.helpers import COORDINATOR, DISPATCH_AEMS, NURSE_ALT, signed_in

#: Small bounds for the tests: a lock is given up after 1 s, any statement after 2 s.
TIMEOUTS = {
    "MEDPORT_DB_CONNECT_TIMEOUT_SECONDS": 3,
    "MEDPORT_DB_STATEMENT_TIMEOUT_MS": 2000,
    "MEDPORT_DB_LOCK_TIMEOUT_MS": 1000,
    "MEDPORT_DB_POOL_TIMEOUT_SECONDS": 3,
}
#: The longest a stalled page may wait on the database, in seconds.
BOUND_SECONDS = TIMEOUTS["MEDPORT_DB_STATEMENT_TIMEOUT_MS"] / 1000
#: A page must answer well within this (ten times the bound: a loaded machine, not a hang).
ANSWER_WITHIN_SECONDS = 10 * BOUND_SECONDS
#: The lock holder's transaction ends itself after this long, so a page that hangs on the
#: lock (no timeout) makes the test fail instead of waiting for ever.
LOCK_HOLDER_IDLE_LIMIT_MS = 60000
#: A value that must never reach the log.
PATIENT_REFERENCE = "P-STALLREF7Q"

LABELS = {"center": "Center", "hospital": "Hospital", "ems": "EMS"}

#: silo -> (table locked, (user, page that needs it), (user, page that does not read it)).
#: The center's page reads its audit log; the nurse's list reads the center's accounts (the
#: session) but never the audit log.
STALLS = {
    "hospital": ("transport_requests", (NURSE_ALT, f"/hospital/?q={PATIENT_REFERENCE}"),
                 (DISPATCH_AEMS, "/ems/units")),
    "ems": ("units", (DISPATCH_AEMS, "/ems/units"), (NURSE_ALT, "/hospital/")),
    "center": ("audit_logs", (COORDINATOR, "/center/audit"), (NURSE_ALT, "/hospital/")),
}


@pytest.fixture
def postgres(backend):
    if backend != "postgres":
        pytest.skip("SQLite has no statement or lock timeout per table: stalls are tested on PostgreSQL")


def silo_url(config, silo):
    return config["SQLALCHEMY_DATABASE_URI"] if silo == "center" else config["SQLALCHEMY_BINDS"][silo]["url"]


@pytest.fixture
def bounded(postgres, app, demo, migrated_config):
    """The app on the test silos (with the demo region) with the small bounded waits."""
    config = dict(migrated_config, **TIMEOUTS)
    urls = {silo: silo_url(migrated_config, silo) for silo in LABELS}
    config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(urls["center"], TIMEOUTS)
    config["SQLALCHEMY_BINDS"] = {silo: {"url": urls[silo], **engine_options(urls[silo], TIMEOUTS)}
                                  for silo in ("hospital", "ems")}
    bounded_app = create_app(config)
    yield bounded_app
    with bounded_app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@contextmanager
def table_locked(app, silo, table):
    """Hold ``LOCK TABLE <table> IN ACCESS EXCLUSIVE MODE`` in an open transaction.

    On leaving, the lock must still have been held (its transaction not ended early).
    """
    holder = sa.create_engine(
        silo_url(app.config, silo), poolclass=sa.pool.NullPool,
        connect_args={"options": f"-c lock_timeout=10000 -c idle_in_transaction_session_timeout="
                                 f"{LOCK_HOLDER_IDLE_LIMIT_MS}"})
    conn = holder.connect()
    try:
        conn.execute(sa.text(f'LOCK TABLE "{table}" IN ACCESS EXCLUSIVE MODE'))
        yield
        still_held = conn.execute(sa.text(
            "SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND mode = 'AccessExclusiveLock' "
            "AND relation = CAST(:table AS regclass)"), {"table": table}).scalar()
        assert still_held == 1, "the lock ended before the test did"
    finally:
        try:
            conn.rollback()
            conn.close()
        finally:
            holder.dispose()


def timed_get(client, path):
    started = time.monotonic()
    response = client.get(path)
    return response, time.monotonic() - started


def database_records(caplog):
    return [r for r in caplog.records if r.getMessage().startswith("database error on")]


@pytest.mark.parametrize("silo", sorted(STALLS))
def test_a_stalled_silo_answers_503_naming_it_and_the_others_keep_working(bounded, caplog, silo):
    table, (stalled_user, stalled_page), (other_user, other_page) = STALLS[silo]
    stalled_client, other_client = signed_in(bounded, stalled_user), signed_in(bounded, other_user)
    assert stalled_client.get(stalled_page).status_code == 200  # before the stall
    caplog.set_level(logging.WARNING)
    with table_locked(bounded, silo, table):
        response, elapsed = timed_get(stalled_client, stalled_page)
        assert response.status_code == 503, stalled_page
        assert f"{LABELS[silo]} data is temporarily unavailable" in response.get_data(as_text=True)
        assert elapsed < ANSWER_WITHIN_SECONDS, f"answered after {elapsed:.1f} s"
        other, other_elapsed = timed_get(other_client, other_page)
        assert other.status_code == 200, other_page
        assert other_elapsed < ANSWER_WITHIN_SECONDS
    # The log names the silo and the kind of error (the lock given up), never the search.
    records = database_records(caplog)
    assert len(records) == 1
    message = records[0].getMessage()
    assert f"silo {silo}," in message and "LockNotAvailable" in message and "sqlstate 55P03" in message
    assert PATIENT_REFERENCE not in message and records[0].exc_text is None
    assert stalled_client.get(stalled_page).status_code == 200  # the lock is gone: working again


def test_a_statement_past_its_timeout_answers_503_naming_its_silo(bounded, caplog):
    """A live silo (its connection check passes) whose statement runs past the timeout."""

    def slow_search():
        db.session.execute(sa.text("SELECT pg_sleep(:seconds), :reference"),
                           {"seconds": 60, "reference": PATIENT_REFERENCE},
                           bind_arguments={"bind": db.engines["hospital"]})
        return "finished"

    bounded.add_url_rule("/slow-search", view_func=slow_search)
    caplog.set_level(logging.WARNING)
    response, elapsed = timed_get(bounded.test_client(), "/slow-search")
    assert response.status_code == 503
    assert "Hospital data is temporarily unavailable" in response.get_data(as_text=True)
    assert elapsed < ANSWER_WITHIN_SECONDS, f"answered after {elapsed:.1f} s"
    (record,) = database_records(caplog)
    message = record.getMessage()
    assert "silo hospital," in message and "QueryCanceled" in message and "sqlstate 57014" in message
    assert PATIENT_REFERENCE not in message and "60" not in message


def test_a_stalled_outbox_reports_its_silo_down_with_the_backlog_unknown(bounded):
    coordinator = signed_in(bounded, COORDINATOR)
    with table_locked(bounded, "hospital", "outbox_events"):
        response, elapsed = timed_get(bounded.test_client(), "/healthz")
        assert elapsed < ANSWER_WITHIN_SECONDS
        assert response.status_code == 503
        body = response.get_json()
        assert body["down"] == ["hospital"]
        assert body["silos"]["hospital"] == dict(body["silos"]["hospital"], status="down", outbox=None)
        assert all(isinstance(body["silos"][silo]["outbox"]["pending"], int) for silo in ("center", "ems"))
        page, elapsed = timed_get(coordinator, "/center/health")
        assert page.status_code == 200 and elapsed < ANSWER_WITHIN_SECONDS
        html = page.get_data(as_text=True)
        row = html[html.index("Hospital</th>"):]
        row = row[:row.index("</tr>")]
        assert "Down" in row and row.count("unknown") == 2 and "LockNotAvailable" in row
