"""Every bind's bounded waits: read from the environment, given to each engine."""
import logging
import time

import pytest

from dashboard import create_app
from dashboard.config import DB_TIMEOUT_DEFAULTS, ConfigurationError, build_config, engine_options
from dashboard.extensions import db
from tests.helpers import DISPATCH_AEMS, NURSE_ALT, signed_in

SERVER_ENV = {
    "MEDPORT_CENTER_DATABASE_URL": "postgresql://db1/medport_center",
    "MEDPORT_HOSPITAL_DATABASE_URL": "postgresql://db2/medport_hospital",
    "MEDPORT_EMS_DATABASE_URL": "postgresql://db3/medport_ems",
    "SECRET_KEY": "x" * 40,
}


def every_bind(config):
    return [config["SQLALCHEMY_ENGINE_OPTIONS"], config["SQLALCHEMY_BINDS"]["hospital"],
            config["SQLALCHEMY_BINDS"]["ems"]]


def test_server_binds_get_the_default_bounds(tmp_path):
    config = build_config(str(tmp_path), environ=SERVER_ENV)
    assert DB_TIMEOUT_DEFAULTS == {"MEDPORT_DB_CONNECT_TIMEOUT_SECONDS": 3, "MEDPORT_DB_STATEMENT_TIMEOUT_MS": 15000,
                                   "MEDPORT_DB_LOCK_TIMEOUT_MS": 5000, "MEDPORT_DB_POOL_TIMEOUT_SECONDS": 5}
    for options in every_bind(config):
        assert options["connect_args"] == {"connect_timeout": 3,
                                           "options": "-c statement_timeout=15000 -c lock_timeout=5000"}
        assert options["pool_timeout"] == 5 and options["hide_parameters"] is True
    assert config["MEDPORT_DB_STATEMENT_TIMEOUT_MS"] == 15000


def test_the_environment_sets_the_bounds_of_every_bind(tmp_path):
    env = dict(SERVER_ENV, MEDPORT_DB_CONNECT_TIMEOUT_SECONDS="2", MEDPORT_DB_STATEMENT_TIMEOUT_MS="0",
               MEDPORT_DB_LOCK_TIMEOUT_MS=" 750 ", MEDPORT_DB_POOL_TIMEOUT_SECONDS="9")
    config = build_config(str(tmp_path), environ=env)
    for options in every_bind(config):
        assert options["connect_args"] == {"connect_timeout": 2,
                                           "options": "-c statement_timeout=0 -c lock_timeout=750"}
        assert options["pool_timeout"] == 9


def test_sqlite_binds_wait_for_a_locked_database_at_most_the_lock_timeout(tmp_path):
    config = build_config(str(tmp_path), environ={"MEDPORT_DB_LOCK_TIMEOUT_MS": "1500"})
    for options in every_bind(config):
        assert options["connect_args"] == {"timeout": 1.5} and options["hide_parameters"] is True
        assert options["pool_timeout"] == 5
    unbounded = build_config(str(tmp_path), environ={"MEDPORT_DB_LOCK_TIMEOUT_MS": "0"})
    assert unbounded["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"] == {"timeout": 15.0}


@pytest.mark.parametrize("name, value", [
    ("MEDPORT_DB_STATEMENT_TIMEOUT_MS", "15s"),
    ("MEDPORT_DB_LOCK_TIMEOUT_MS", "-1"),
    ("MEDPORT_DB_CONNECT_TIMEOUT_SECONDS", "0"),
    ("MEDPORT_DB_POOL_TIMEOUT_SECONDS", "2.5"),
])
def test_a_bound_that_is_not_a_whole_number_in_range_is_refused(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError, match=name):
        create_app({"TESTING": True})


def test_a_silo_whose_connections_are_all_held_answers_busy_within_the_pool_timeout(app, demo, migrated_config,
                                                                                    caplog):
    """Every pooled hospital connection is held (as by stalled requests): a page that needs one
    answers 503 with Retry-After after the pool timeout, and the log names the full pool."""
    timeouts = dict(DB_TIMEOUT_DEFAULTS, MEDPORT_DB_POOL_TIMEOUT_SECONDS=1)
    config = dict(migrated_config)
    urls = {"center": config["SQLALCHEMY_DATABASE_URI"],
            **{silo: bind["url"] for silo, bind in config["SQLALCHEMY_BINDS"].items()}}
    config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options(urls["center"], timeouts)
    config["SQLALCHEMY_BINDS"] = {
        silo: {"url": urls[silo], **engine_options(urls[silo], timeouts), "pool_size": 1, "max_overflow": 0}
        for silo in ("hospital", "ems")}
    small = create_app(config)
    nurse, dispatcher = signed_in(small, NURSE_ALT), signed_in(small, DISPATCH_AEMS)
    caplog.set_level(logging.WARNING)
    try:
        with small.app_context():
            held = db.engines["hospital"].connect()
        try:
            started = time.monotonic()
            response = nurse.get("/hospital/")
            elapsed = time.monotonic() - started
            assert response.status_code == 503 and response.headers["Retry-After"] == "5"
            assert "MedPort is very busy right now" in response.get_data(as_text=True)
            assert elapsed < 10, f"answered after {elapsed:.1f} s"  # ten times the 1 s pool timeout
            assert dispatcher.get("/ems/units").status_code == 200  # the EMS pool is free
        finally:
            held.close()
        assert nurse.get("/hospital/").status_code == 200
    finally:
        with small.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()
    (record,) = [r for r in caplog.records if r.getMessage().startswith("no database connection free")]
    assert record.getMessage() == "no database connection free on GET /hospital/: pools full: hospital"
