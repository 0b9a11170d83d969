"""Every bind's bounded waits: read from the environment, given to each engine."""
import pytest

from dashboard import create_app
from dashboard.config import DB_TIMEOUT_DEFAULTS, ConfigurationError, build_config

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
