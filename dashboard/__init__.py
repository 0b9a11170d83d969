"""MedPort: a dispatch dashboard for inter-facility medical transport."""
import os

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import build_config, check_config, fit_engine_options


def create_app(test_config=None):
    """Create the app.  ``test_config`` overrides what the environment says."""
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder=os.path.join(os.path.dirname(__file__), os.pardir, "templates"),
        static_folder=os.path.join(os.path.dirname(__file__), os.pardir, "static"),
    )
    os.makedirs(app.instance_path, exist_ok=True)
    app.config.from_mapping(build_config(app.instance_path))
    if test_config:
        app.config.from_mapping(test_config)
    fit_engine_options(app.config)
    check_config(app.config)
    if app.config["MEDPORT_PROXY_HOPS"]:
        hops = app.config["MEDPORT_PROXY_HOPS"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops)

    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_security(app)
    register_template_helpers(app)
    register_commands(app)
    start_background_work(app)
    return app


def register_extensions(app):
    from . import models, server_timing  # noqa: F401  (models: all three silos' tables on the metadata)
    from .events.hub import hub
    from .events.outbox import install_relay_wakeup
    from .events.relay import wake_inprocess_relay
    from .extensions import csrf, db, htmx, login_manager, migrate
    from .services.silos import install_single_silo_guard

    db.init_app(app)
    server_timing.install(app)  # first: its after_request runs last
    migrate.init_app(
        app,
        db,
        directory=os.path.join(os.path.dirname(__file__), os.pardir, "migrations"),
        render_as_batch=True,
        compare_type=True,
    )
    login_manager.init_app(app)
    csrf.init_app(app)
    htmx.init_app(app)
    hub.init_app(app)
    install_single_silo_guard()
    install_relay_wakeup(wake_inprocess_relay)


def register_blueprints(app):
    from .alerts.routes import bp as alerts_bp
    from .analytics.routes import bp as analytics_bp
    from .auth.routes import bp as auth_bp
    from .center import release_routes  # noqa: F401  (a view on the center blueprint)
    from .center.routes import bp as center_bp
    from .crew.routes import bp as crew_bp
    from .ems.routes import bp as ems_bp
    from .events.routes import bp as events_bp
    from .health import bp as health_bp
    from .hospital import return_routes  # noqa: F401  (views on the hospital blueprint)
    from .hospital.routes import bp as hospital_bp
    from .series.routes import bp as series_bp

    for blueprint in (auth_bp, health_bp, hospital_bp, series_bp, ems_bp, crew_bp, center_bp, events_bp,
                      analytics_bp, alerts_bp):
        app.register_blueprint(blueprint)


def register_errorhandlers(app):
    from .errors import register

    register(app)


def register_security(app):
    from .security import register

    register(app)


def register_template_helpers(app):
    from .templating import register

    register(app)


def register_commands(app):
    from .cli import medport

    app.cli.add_command(medport)


def start_background_work(app):
    """On the embedded default the outbox relay runs in a thread of this process."""
    if app.config["MEDPORT_INPROCESS_RELAY"] and not app.config.get("TESTING"):
        from .events.relay import start_inprocess_relay

        start_inprocess_relay(app)
