"""Fixtures in the style of the Flask tutorial: ``app``, ``client``, ``auth``, plus the silos.

Every test that takes ``app`` runs twice: on three SQLite files and on three
real PostgreSQL databases.  PostgreSQL is found through
``MEDPORT_TEST_POSTGRES_URL`` (a server URL without a database name, default
``postgresql://postgres@127.0.0.1:5432``); when it is unreachable those runs
skip with the reason, unless ``MEDPORT_REQUIRE_POSTGRES=1`` makes them fail.
"""
import os
import re

import pytest
import sqlalchemy as sa

from dashboard import create_app
from dashboard.config import SILOS, normalise_url
from dashboard.extensions import db

# The shared helpers assert too: their failures are explained like a test's own.
pytest.register_assert_rewrite("tests.helpers")

PG_BASE = normalise_url(
    os.environ.get("MEDPORT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
)
REQUIRE_PG = os.environ.get("MEDPORT_REQUIRE_POSTGRES") == "1"
#: Two test runs at once (two checkouts) each set their own prefix.
PG_PREFIX = os.environ.get("MEDPORT_TEST_DB_PREFIX", "medport_test")
PG_DATABASES = {silo: f"{PG_PREFIX}_{silo}" for silo in SILOS}
DEMO_PASSWORD = "medport-demo"

_pg_state = {}


def postgres_available():
    """(ok, reason); creates the three test databases when the server is there."""
    if "ok" in _pg_state:
        return _pg_state["ok"], _pg_state["reason"]
    try:
        engine = sa.create_engine(f"{PG_BASE}/postgres", isolation_level="AUTOCOMMIT",
                                  connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            existing = set(conn.execute(sa.text("SELECT datname FROM pg_database")).scalars())
            for name in PG_DATABASES.values():
                if name not in existing:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
        _pg_state.update(ok=True, reason="")
    except Exception as exc:  # the reason is shown in the skip message
        reason = re.sub(r"\s+", " ", str(exc))[:200]
        _pg_state.update(ok=False, reason=f"PostgreSQL not reachable at {PG_BASE}: {reason}")
    return _pg_state["ok"], _pg_state["reason"]


def pg_urls():
    return {silo: f"{PG_BASE}/{name}" for silo, name in PG_DATABASES.items()}


def backend_config(backend, tmp_path_factory):
    if backend == "sqlite":
        folder = tmp_path_factory.mktemp("silos")
        urls = {silo: f"sqlite:///{folder}/medport_{silo}.sqlite3" for silo in SILOS}
    else:
        ok, reason = postgres_available()
        if not ok:
            if REQUIRE_PG:
                pytest.fail(reason + " (MEDPORT_REQUIRE_POSTGRES=1)")
            pytest.skip(reason)
        urls = pg_urls()
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "WTF_CSRF_ENABLED": False,
        "MEDPORT_INPROCESS_RELAY": False,
        "MEDPORT_SIGNAL_BACKEND": "local",
        "SQLALCHEMY_DATABASE_URI": urls["center"],
        "SQLALCHEMY_ENGINE_OPTIONS": {},
        "SQLALCHEMY_BINDS": {"hospital": {"url": urls["hospital"]}, "ems": {"url": urls["ems"]}},
        "MEDPORT_STREAM_KEEPALIVE_SECONDS": 0.2,
        "MEDPORT_STREAM_MAX_SECONDS": 2,
    }


@pytest.fixture(scope="session", params=["sqlite", "postgres"])
def backend(request):
    return request.param


@pytest.fixture(scope="session")
def migrated_config(backend, tmp_path_factory):
    """Build the three silos once per backend with the migrations (not create_all)."""
    from flask_migrate import downgrade, upgrade

    config = backend_config(backend, tmp_path_factory)
    app = create_app(config)
    with app.app_context():
        if backend == "postgres":
            downgrade(revision="base")  # a clean slate even after an aborted earlier run
        upgrade()
        for engine in db.engines.values():
            engine.dispose()
    return config


def _wipe(app):
    """Empty every table of every silo (schema stays)."""
    with app.app_context():
        for key, metadata in db.metadatas.items():
            engine = db.engines[key]
            tables = [t.name for t in reversed(metadata.sorted_tables)]
            with engine.begin() as conn:
                if engine.dialect.name == "postgresql":
                    conn.execute(sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)
                                         + " RESTART IDENTITY CASCADE"))
                else:
                    for table in tables:
                        conn.execute(sa.text(f'DELETE FROM "{table}"'))


@pytest.fixture
def app(migrated_config):
    from dashboard.services import center_reads, session_trust

    center_reads.forget()  # nothing kept from another test's outage
    session_trust.forget()
    app = create_app(dict(migrated_config))
    _wipe(app)
    yield app
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture
def demo(app):
    """The demo region, seeded through the same code as ``flask medport seed-demo``."""
    from dashboard.seed import demo as demo_service

    with app.app_context():
        return demo_service.seed()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


class AuthActions:
    def __init__(self, client):
        self._client = client

    def login(self, email="nurse@altoona.medport.test", password=DEMO_PASSWORD, **kwargs):
        return self._client.post("/login", data={"email": email, "password": password, **kwargs})

    def logout(self):
        return self._client.post("/logout")


@pytest.fixture
def auth(client):
    return AuthActions(client)


@pytest.fixture
def nurse(client, auth, demo):
    """The ``client``, signed in as the Altoona charge nurse (demo region)."""
    assert auth.login("nurse@altoona.medport.test").status_code == 302
    return client


@pytest.fixture
def deliver(app):
    """The relay's own ``Relay.drain`` on this app: passes until one delivers nothing (at most
    ``max_passes``, 10 by default); returns how many events were delivered."""
    from dashboard.events.relay import Relay

    relay = Relay(app)

    def run(max_passes=10):
        return relay.drain(max_passes=max_passes)

    return run
