"""Configuration read from the environment.

The embedded default needs no configuration at all: three SQLite files under
``instance/`` and a development secret key.  A deployment sets the three
database URLs (one per silo) and a real ``SECRET_KEY``; the app refuses to
start in production with the development key.
"""
import os
from datetime import timedelta

DEV_SECRET_KEY = "medport-embedded-development-key"

#: The three silos, in the order checks and pages list them.  ``center`` is the
#: default bind (``SQLALCHEMY_DATABASE_URI``), the other two are named binds.
SILOS = ("center", "hospital", "ems")

#: A failed statement's error (logged with its traceback) leaves out the values it was
#: given: they may be patient data.
_SQLITE_ENGINE_OPTIONS = {"connect_args": {"timeout": 15}, "hide_parameters": True}
_SERVER_ENGINE_OPTIONS = {
    "hide_parameters": True,
    "pool_pre_ping": True,
    "pool_size": 5,
    "max_overflow": 10,
    "pool_recycle": 1800,
    # A silo that is down must fail a request quickly, not hang a worker.
    "connect_args": {"connect_timeout": 3},
}


def _engine_options(url):
    """Engine options suited to the database behind ``url``."""
    if url.startswith("sqlite"):
        return dict(_SQLITE_ENGINE_OPTIONS)
    options = dict(_SERVER_ENGINE_OPTIONS)
    options["connect_args"] = dict(options["connect_args"])
    return options


def _env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def normalise_url(url):
    """``postgres://`` and driverless ``postgresql://`` URLs use psycopg2 (our driver)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def silo_urls(instance_path, environ=None):
    """Return ``{silo: url}`` from the environment or the embedded default."""
    environ = os.environ if environ is None else environ
    urls = {}
    for silo in SILOS:
        url = environ.get(f"MEDPORT_{silo.upper()}_DATABASE_URL")
        if not url:
            url = "sqlite:///" + os.path.join(instance_path, f"medport_{silo}.sqlite3")
        urls[silo] = normalise_url(url)
    return urls


def build_config(instance_path, environ=None):
    """Build the Flask config mapping from the environment."""
    environ = os.environ if environ is None else environ
    urls = silo_urls(instance_path, environ)
    embedded = all(url.startswith("sqlite") for url in urls.values())
    production = environ.get("MEDPORT_ENV", "").lower() == "production"
    secret_key = environ.get("SECRET_KEY") or DEV_SECRET_KEY
    return {
        "SECRET_KEY": secret_key,
        "MEDPORT_PRODUCTION": production,
        "MEDPORT_EMBEDDED": embedded,
        "SQLALCHEMY_DATABASE_URI": urls["center"],
        "SQLALCHEMY_ENGINE_OPTIONS": _engine_options(urls["center"]),
        "SQLALCHEMY_BINDS": {
            silo: {"url": urls[silo], **_engine_options(urls[silo])}
            for silo in SILOS
            if silo != "center"
        },
        # Sessions and CSRF tokens must outlive a 12-hour dispatch shift.
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=14),
        "WTF_CSRF_TIME_LIMIT": 14 * 3600,
        "WTF_CSRF_HEADERS": ["X-CSRFToken"],
        "WTF_CSRF_SSL_STRICT": True,
        "SESSION_COOKIE_NAME": "medport_session",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": _env_bool("MEDPORT_SECURE_COOKIES", production),
        "REMEMBER_COOKIE_HTTPONLY": True,
        "REMEMBER_COOKIE_SAMESITE": "Lax",
        "MAX_CONTENT_LENGTH": 256 * 1024,
        # Behind a TLS-terminating proxy, trust one hop of X-Forwarded-*.
        "MEDPORT_PROXY_HOPS": int(environ.get("MEDPORT_PROXY_HOPS", "0") or 0),
        "MEDPORT_TIMEZONE": environ.get("MEDPORT_TIMEZONE", "America/New_York"),
        # Where live signals fan out between workers: "local" (one process) or
        # "postgres" (LISTEN/NOTIFY on the center database: every worker, every host).
        "MEDPORT_SIGNAL_BACKEND": environ.get(
            "MEDPORT_SIGNAL_BACKEND", "postgres" if urls["center"].startswith("postgresql") else "local"
        ),
        # Run the outbox relay inside the web process (embedded default).
        "MEDPORT_INPROCESS_RELAY": _env_bool("MEDPORT_INPROCESS_RELAY", embedded),
        # Tries before an event that keeps failing is parked for the health panel.
        "MEDPORT_RELAY_MAX_ATTEMPTS": int(environ.get("MEDPORT_RELAY_MAX_ATTEMPTS", "15")),
        # Live streams: a keep-alive comment when idle, a reconnect after at most an hour,
        # a check that the viewer is still signed in, and a slow poll of the signal
        # table behind LISTEN/NOTIFY.
        "MEDPORT_STREAM_KEEPALIVE_SECONDS": float(environ.get("MEDPORT_STREAM_KEEPALIVE_SECONDS", "15")),
        "MEDPORT_STREAM_MAX_SECONDS": float(environ.get("MEDPORT_STREAM_MAX_SECONDS", "3600")),
        "MEDPORT_STREAM_SESSION_CHECK_SECONDS": float(
            environ.get("MEDPORT_STREAM_SESSION_CHECK_SECONDS", "60")),
        "MEDPORT_SIGNAL_POLL_SECONDS": float(environ.get("MEDPORT_SIGNAL_POLL_SECONDS", "5")),
        "MEDPORT_LOGIN_MAX_FAILURES": int(environ.get("MEDPORT_LOGIN_MAX_FAILURES", "5")),
        "MEDPORT_LOGIN_WINDOW_MINUTES": int(environ.get("MEDPORT_LOGIN_WINDOW_MINUTES", "15")),
        "MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS": int(
            environ.get("MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS", "20")
        ),
    }


class ConfigurationError(RuntimeError):
    """The environment asks for something the app must not do."""


SIGNAL_BACKENDS = ("local", "postgres")


def check_config(config):
    """Refuse configurations that are unsafe or impossible to serve."""
    backend = config["MEDPORT_SIGNAL_BACKEND"]
    if backend not in SIGNAL_BACKENDS:
        raise ConfigurationError(f"MEDPORT_SIGNAL_BACKEND must be one of {', '.join(SIGNAL_BACKENDS)}, "
                                 f"not {backend!r}.")
    if backend == "postgres" and not config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        raise ConfigurationError("MEDPORT_SIGNAL_BACKEND=postgres needs the center silo on PostgreSQL.")
    if config.get("TESTING"):
        return
    if config["SECRET_KEY"] == DEV_SECRET_KEY and (
        config["MEDPORT_PRODUCTION"] or not config["MEDPORT_EMBEDDED"]
    ):
        raise ConfigurationError(
            "SECRET_KEY must be set to a long random value outside the embedded default "
            "(MEDPORT_ENV=production or server databases)."
        )
