"""Waiting for a free connection slot on a shared PostgreSQL server.

The test server is shared: several suites at once, each with its own databases, and
gunicorn servers of the browser and load tests each opening up to pool size plus
overflow connections per silo.  While they hold every slot, PostgreSQL refuses a new
connection with ``too many clients already`` (or ``too many connections for role``).
A test whose work opens connections from threads in the middle of the test (the
analytics page's percentile and "today" queries, racing requests) then meets that
refusal as a 503 page or a racer that never reaches its gate, although nothing is
wrong with the code under test.  :func:`wait_for_slots` makes the test's engines wait
(bounded) for a slot instead: any other refusal or error is raised at once.
"""
import time

import sqlalchemy as sa

from dashboard.extensions import db

#: How long a connection attempt waits for the server to have a slot free again.
SLOT_WAIT_SECONDS = 120
#: How often it asks meanwhile.
SLOT_POLL_SECONDS = 0.25
SERVER_FULL = ("too many clients already", "too many connections for role",
               "remaining connection slots are reserved")


def server_full(exc):
    """Whether a connection error is the server refusing for lack of a free slot."""
    return any(marker in str(exc) for marker in SERVER_FULL)


def _connect_when_a_slot_is_free(dialect, conn_rec, cargs, cparams):
    deadline = time.monotonic() + SLOT_WAIT_SECONDS
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as exc:
            if not server_full(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(SLOT_POLL_SECONDS)  # polling the condition "a slot is free", bounded above


def wait_for_slots(app):
    """Make every PostgreSQL engine of ``app`` wait up to ``SLOT_WAIT_SECONDS`` for a free slot."""
    with app.app_context():
        for engine in db.engines.values():
            if engine.dialect.name == "postgresql" and not sa.event.contains(
                    engine, "do_connect", _connect_when_a_slot_is_free):
                sa.event.listen(engine, "do_connect", _connect_when_a_slot_is_free)
    return app
