"""Foundation: config, migrations, silo checks, health, demo data."""
import json

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dashboard import create_app
from dashboard.config import DEV_SECRET_KEY, ConfigurationError, build_config
from dashboard.extensions import db
from dashboard.models.center import Agency, Hospital, ServiceRegistry, User
from dashboard.models.hospital import TransportRequest


def test_default_config_is_three_sqlite_files(tmp_path):
    config = build_config(str(tmp_path), environ={})
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path}/medport_center.sqlite3"
    assert config["SQLALCHEMY_BINDS"]["hospital"]["url"].endswith("medport_hospital.sqlite3")
    assert config["SQLALCHEMY_BINDS"]["ems"]["url"].endswith("medport_ems.sqlite3")
    assert config["MEDPORT_EMBEDDED"] is True


def test_environment_sets_each_silo_with_its_own_engine_options(tmp_path):
    env = {
        "MEDPORT_CENTER_DATABASE_URL": "postgresql://db1/medport_center",
        "MEDPORT_HOSPITAL_DATABASE_URL": "postgres://db2/medport_hospital",
        "MEDPORT_EMS_DATABASE_URL": "postgresql://db3/medport_ems",
        "SECRET_KEY": "x" * 40,
    }
    config = build_config(str(tmp_path), environ=env)
    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg2://db1/medport_center"
    hospital = config["SQLALCHEMY_BINDS"]["hospital"]
    assert hospital["url"] == "postgresql+psycopg2://db2/medport_hospital"
    assert hospital["pool_pre_ping"] is True
    assert config["SQLALCHEMY_ENGINE_OPTIONS"]["pool_pre_ping"] is True
    assert config["MEDPORT_EMBEDDED"] is False
    assert config["MEDPORT_SIGNAL_BACKEND"] == "postgres"


@pytest.mark.parametrize("env", [
    {"MEDPORT_ENV": "production"},
    {"MEDPORT_CENTER_DATABASE_URL": "postgresql://db1/c"},
])
def test_refuses_to_start_with_the_development_key(monkeypatch, env):
    monkeypatch.delenv("SECRET_KEY", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigurationError):
        create_app()


def test_models_and_migrations_agree(app):
    """Autogenerate against the migrated silos finds nothing to do."""
    with app.app_context():
        for key, metadata in db.metadatas.items():
            with db.engines[key].connect() as conn:
                context = MigrationContext.configure(conn, opts={"compare_type": True})
                diff = compare_metadata(context, metadata)
            assert diff == [], f"bind {key or 'center'}: {diff}"


def test_downgrade_base_removes_and_upgrade_rebuilds(app):
    from flask_migrate import downgrade, upgrade

    with app.app_context():
        downgrade(revision="base")
        for key in db.metadatas:
            names = set(sa.inspect(db.engines[key]).get_table_names()) - {"alembic_version"}
            assert names == set(), f"{key}: {names}"
        upgrade()
        for key, metadata in db.metadatas.items():
            names = set(sa.inspect(db.engines[key]).get_table_names())
            assert set(metadata.tables) <= names


def test_no_foreign_key_crosses_a_silo(app):
    with app.app_context():
        for key, metadata in db.metadatas.items():
            for table in metadata.tables.values():
                for fk in table.foreign_keys:
                    assert fk.column.table.name in metadata.tables, (key, table.name, fk)


def test_check_command_passes_and_records_registry(app, runner):
    result = runner.invoke(args=["medport", "check"])
    assert result.exit_code == 0, result.output
    assert "all 9 checks passed" in result.output
    for silo in ("center", "hospital", "ems"):
        assert f"{silo} (" in result.output
    assert result.output.count(" ok ") == 9
    with app.app_context():
        rows = {r.silo: r.status for r in db.session.scalars(sa.select(ServiceRegistry))}
    assert rows == {"center": "up", "hospital": "up", "ems": "up"}


def test_check_command_fails_when_a_table_is_missing(app, runner):
    with app.app_context():
        with db.engines["ems"].begin() as conn:
            conn.execute(sa.text("DROP TABLE ems_routes"))
    try:
        result = runner.invoke(args=["medport", "check"])
        assert result.exit_code == 1
        assert "missing tables: ems_routes" in result.output
    finally:
        with app.app_context():
            db.metadatas["ems"].tables["ems_routes"].create(db.engines["ems"])


def test_healthz_up(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "ok"
    assert set(body["silos"]) == {"center", "hospital", "ems"}
    assert all(s["status"] == "up" for s in body["silos"].values())


def test_healthz_names_the_silo_that_is_down(migrated_config, tmp_path):
    config = dict(migrated_config)
    url = config["SQLALCHEMY_BINDS"]["ems"]["url"]
    if url.startswith("sqlite"):
        broken = f"sqlite:///{tmp_path}/no/such/dir/ems.sqlite3"
    else:
        broken = url.rsplit("/", 1)[0] + "/medport_no_such_database"
    config["SQLALCHEMY_BINDS"] = dict(config["SQLALCHEMY_BINDS"], ems={"url": broken})
    app = create_app(config)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["down"] == ["ems"]
    assert body["silos"]["hospital"]["status"] == "up"
    text = json.dumps(body)
    assert "sqlite" not in text and "postgresql" not in text and "medport_no_such" not in text


def test_seed_demo_builds_a_region_with_every_state(app, runner):
    result = runner.invoke(args=["medport", "seed-demo"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Hospital.id))) >= 5
        assert db.session.scalar(sa.select(sa.func.count(Agency.id))) == 6
        statuses = set(db.session.scalars(sa.select(TransportRequest.status).distinct()))
        assert statuses == {"open", "awarded", "en_route", "at_pickup", "transporting",
                            "completed", "cancelled"}
        emails = set(db.session.scalars(sa.select(User.email)))
    assert {"coordinator@medport.test", "admin@medport.test", "nurse@altoona.medport.test",
            "dispatch@altoonaems.medport.test"} <= emails
    again = runner.invoke(args=["medport", "seed-demo"])
    assert again.exit_code != 0
    assert runner.invoke(args=["medport", "seed-demo", "--if-empty"]).exit_code == 0


def test_create_user_command(app, runner, demo):
    result = runner.invoke(args=["medport", "create-user", "--email", "New.Nurse@Example.org",
                                 "--name", "New Nurse", "--role", "hospital", "--hospital", "ALT"],
                           input="a-long-password\na-long-password\n")
    assert result.exit_code == 0, result.output
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "new.nurse@example.org"))
        assert user.role == "hospital" and user.hospital.short_code == "ALT"
        assert user.password_hash != "a-long-password" and user.check_password("a-long-password")
    bad = runner.invoke(args=["medport", "create-user", "--email", "x@example.org", "--name", "X",
                              "--role", "ems"], input="a-long-password\na-long-password\n")
    assert bad.exit_code != 0 and "agency" in bad.output


def test_dev_secret_key_is_not_used_in_tests(app):
    assert app.config["SECRET_KEY"] != DEV_SECRET_KEY
