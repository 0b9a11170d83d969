"""Configuration read from the environment.

The embedded default needs no configuration at all: three SQLite files under
``instance/`` and a development secret key.  A deployment sets the three
database URLs (one per silo) and a real ``SECRET_KEY``; the app refuses to
start in production with the development key.
"""
import os
from datetime import timedelta
from urllib.parse import urlsplit

from .hashing import DEFAULT_WAIT_SECONDS, default_concurrency

DEV_SECRET_KEY = "medport-embedded-development-key"

#: The three silos, in the order checks and pages list them.  ``center`` is the
#: default bind (``SQLALCHEMY_DATABASE_URI``), the other two are named binds.
SILOS = ("center", "hospital", "ems")

#: Bounded waits of every bind, in the environment's units (see the README's configuration
#: table): a silo that is down, a table held by a lock or a runaway statement answers 503
#: within these bounds instead of holding a worker.
DB_TIMEOUT_DEFAULTS = {
    "MEDPORT_DB_CONNECT_TIMEOUT_SECONDS": 3,
    "MEDPORT_DB_STATEMENT_TIMEOUT_MS": 15000,
    "MEDPORT_DB_LOCK_TIMEOUT_MS": 5000,
    "MEDPORT_DB_POOL_TIMEOUT_SECONDS": 5,
}


def db_timeouts(environ=None):
    """The bounded waits of every bind, read from the environment.

    Returns ``{name: int}`` with the four ``MEDPORT_DB_*`` names of
    :data:`DB_TIMEOUT_DEFAULTS` (seconds or milliseconds, as each name says).  A statement or
    lock timeout of ``0`` turns that bound off (long maintenance work).  Raises
    :class:`ConfigurationError` for a value that is not a whole number, is negative, or is a
    connect or pool timeout of 0.
    """
    environ = os.environ if environ is None else environ
    timeouts = {}
    for name, default in DB_TIMEOUT_DEFAULTS.items():
        raw = (environ.get(name) or "").strip()
        try:
            value = int(raw) if raw else default
        except ValueError:
            raise ConfigurationError(f"{name} must be a whole number, not {raw!r}.") from None
        minimum = 0 if name.endswith("_MS") else 1
        if value < minimum:
            raise ConfigurationError(f"{name} must be at least {minimum}, not {value}.")
        timeouts[name] = value
    return timeouts


def engine_options(url, timeouts=None):
    """SQLAlchemy engine options for the database behind ``url`` with the bounded waits.

    ``timeouts`` is a mapping like :func:`db_timeouts` returns (its defaults when ``None``).
    PostgreSQL gets a connect timeout (seconds), ``statement_timeout`` and ``lock_timeout``
    (milliseconds, set at connection start through libpq's ``options``) and a pool checkout
    timeout (seconds); SQLite, which has neither statement nor lock timeout, waits for a locked
    database at most the lock timeout (its busy timeout) and for a pooled connection at most
    the pool timeout.  A failed statement's error (logged) leaves out the values
    it was given: they may be patient data.
    """
    timeouts = dict(DB_TIMEOUT_DEFAULTS, **(timeouts or {}))
    if url.startswith("sqlite"):
        # A busy timeout of 0 would not wait at all: with the lock timeout off, the statement
        # timeout bounds the wait, and with both off a generous 60 s.
        busy_ms = (timeouts["MEDPORT_DB_LOCK_TIMEOUT_MS"] or timeouts["MEDPORT_DB_STATEMENT_TIMEOUT_MS"]
                   or 60000)
        options = {"connect_args": {"timeout": busy_ms / 1000}, "hide_parameters": True}
        if not _in_memory(url):
            # An in-memory database has one static connection, no pool to wait for.
            options["pool_timeout"] = timeouts["MEDPORT_DB_POOL_TIMEOUT_SECONDS"]
        return options
    return {
        "hide_parameters": True,
        "pool_pre_ping": True,
        "pool_size": 5,
        "max_overflow": 10,
        "pool_recycle": 1800,
        # A silo that is down, or whose connections are all held by stalled requests, must
        # fail a request quickly, not hang a worker.
        "pool_timeout": timeouts["MEDPORT_DB_POOL_TIMEOUT_SECONDS"],
        "connect_args": {
            "connect_timeout": timeouts["MEDPORT_DB_CONNECT_TIMEOUT_SECONDS"],
            "options": (f"-c statement_timeout={timeouts['MEDPORT_DB_STATEMENT_TIMEOUT_MS']} "
                        f"-c lock_timeout={timeouts['MEDPORT_DB_LOCK_TIMEOUT_MS']}"),
        },
    }


def _env_bool(name, default=False):
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "yes", "on")


def _positive(environ, name, default, kind):
    """A positive number (``kind`` int or float) from the environment, else ``default``;
    raises :class:`ConfigurationError` for anything else."""
    raw = (environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigurationError(f"{name} must be a {'whole ' if kind is int else ''}number, not {raw!r}.") from None
    if not value > 0:
        raise ConfigurationError(f"{name} must be more than 0, not {raw!r}.")
    return value


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
    timeouts = db_timeouts(environ)
    return {
        **timeouts,
        "SECRET_KEY": secret_key,
        "MEDPORT_PRODUCTION": production,
        "MEDPORT_EMBEDDED": embedded,
        "SQLALCHEMY_DATABASE_URI": urls["center"],
        "SQLALCHEMY_ENGINE_OPTIONS": engine_options(urls["center"], timeouts),
        "SQLALCHEMY_BINDS": {
            silo: {"url": urls[silo], **engine_options(urls[silo], timeouts)}
            for silo in SILOS
            if silo != "center"
        },
        # Sessions and CSRF tokens must outlive a 12-hour dispatch shift.
        "PERMANENT_SESSION_LIFETIME": timedelta(hours=14),
        # The session cookie is written only by a response that changed the session: one that
        # echoed it back unchanged (a live panel answering while the browser follows a
        # redirect) would bring back a confirmation the next page had already shown.
        "SESSION_REFRESH_EACH_REQUEST": False,
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
        # Password hashes (Argon2id, 19 MiB each) at once per worker, and the longest a sign-in
        # waits for one before a 503 with Retry-After (dashboard/hashing.py).
        "MEDPORT_PASSWORD_HASH_CONCURRENCY": _positive(environ, "MEDPORT_PASSWORD_HASH_CONCURRENCY",
                                                       default_concurrency(), int),
        "MEDPORT_PASSWORD_HASH_WAIT_SECONDS": _positive(environ, "MEDPORT_PASSWORD_HASH_WAIT_SECONDS",
                                                        DEFAULT_WAIT_SECONDS, float),
        "MEDPORT_LOGIN_MAX_FAILURES": int(environ.get("MEDPORT_LOGIN_MAX_FAILURES", "5")),
        "MEDPORT_LOGIN_WINDOW_MINUTES": int(environ.get("MEDPORT_LOGIN_WINDOW_MINUTES", "15")),
        # While the center cannot be reached, a session checked there within this many
        # minutes is trusted from its signed snapshot (services/session_trust.py).
        "MEDPORT_SESSION_OFFLINE_TRUST_MINUTES": int(environ.get("MEDPORT_SESSION_OFFLINE_TRUST_MINUTES", "240")),
        "MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS": int(
            environ.get("MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS", "20")
        ),
        # The crew's phone (services/crew.py): how long a shift lasts once a unit is picked,
        # how far ahead of the server's clock a tap's time may be, and how late a tap stored
        # on the phone may still arrive.
        "MEDPORT_CREW_SHIFT_HOURS": float(environ.get("MEDPORT_CREW_SHIFT_HOURS", "12")),
        "MEDPORT_CREW_CLOCK_SKEW_SECONDS": int(environ.get("MEDPORT_CREW_CLOCK_SKEW_SECONDS", "120")),
        "MEDPORT_CREW_TAP_MAX_AGE_HOURS": float(environ.get("MEDPORT_CREW_TAP_MAX_AGE_HOURS", "14")),
        # Late and stuck (services/lateness.py): the crew should be en route this many minutes
        # before the pickup window starts, may stay at pickup this long, and should reach the
        # destination within this long of loading the patient (0 turns a rule off).
        "MEDPORT_CREW_EN_ROUTE_LEAD_MINUTES": int(environ.get("MEDPORT_CREW_EN_ROUTE_LEAD_MINUTES", "15")),
        "MEDPORT_CREW_AT_PICKUP_MAX_MINUTES": int(environ.get("MEDPORT_CREW_AT_PICKUP_MAX_MINUTES", "30")),
        "MEDPORT_CREW_TRANSPORT_MAX_MINUTES": int(environ.get("MEDPORT_CREW_TRANSPORT_MAX_MINUTES", "90")),
        # Alert emails (services/deliveries/): the SMTP server (none: no email is sent), the
        # sender's address, and the site's address for the links they carry.
        "MEDPORT_SMTP_URL": environ.get("MEDPORT_SMTP_URL", ""),
        "MEDPORT_MAIL_FROM": environ.get("MEDPORT_MAIL_FROM", "MedPort <medport@localhost>"),
        "MEDPORT_BASE_URL": environ.get("MEDPORT_BASE_URL", "http://127.0.0.1:5000").rstrip("/"),
        "MEDPORT_SMTP_TIMEOUT_SECONDS": float(environ.get("MEDPORT_SMTP_TIMEOUT_SECONDS", "10")),
        # Webhooks: how long a POST may take, and whether http:// to this machine is allowed
        # (development and tests; otherwise only https://).
        "MEDPORT_WEBHOOK_TIMEOUT_SECONDS": float(environ.get("MEDPORT_WEBHOOK_TIMEOUT_SECONDS", "5")),
        "MEDPORT_WEBHOOK_ALLOW_LOOPBACK_HTTP": _env_bool("MEDPORT_WEBHOOK_ALLOW_LOOPBACK_HTTP", False),
        # Tries of an email or webhook delivery before it is parked (a server that cannot be
        # reached at all is retried without end).
        "MEDPORT_DELIVERY_MAX_ATTEMPTS": int(environ.get("MEDPORT_DELIVERY_MAX_ATTEMPTS", "8")),
    }


def _in_memory(url):
    return url.startswith("sqlite") and (url.rstrip("/") == "sqlite:" or ":memory:" in url)


def fit_engine_options(config):
    """Drop the pool timeout of an in-memory SQLite engine (one static connection, no pool),
    which SQLAlchemy refuses; the URL may come from a test's configuration after the options."""
    options = config.get("SQLALCHEMY_ENGINE_OPTIONS")
    if options and _in_memory(config.get("SQLALCHEMY_DATABASE_URI", "")) and "pool_timeout" in options:
        config["SQLALCHEMY_ENGINE_OPTIONS"] = {k: v for k, v in options.items() if k != "pool_timeout"}
    for key, bind in list((config.get("SQLALCHEMY_BINDS") or {}).items()):
        if isinstance(bind, dict) and _in_memory(bind.get("url", "")) and "pool_timeout" in bind:
            config["SQLALCHEMY_BINDS"] = dict(config["SQLALCHEMY_BINDS"])
            config["SQLALCHEMY_BINDS"][key] = {k: v for k, v in bind.items() if k != "pool_timeout"}


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
    smtp = config.get("MEDPORT_SMTP_URL") or ""
    if smtp and (urlsplit(smtp).scheme not in ("smtp", "smtps") or not urlsplit(smtp).hostname):
        raise ConfigurationError("MEDPORT_SMTP_URL must look like smtp://host:port or smtps://host:port.")
    if config.get("TESTING"):
        return
    if config["SECRET_KEY"] == DEV_SECRET_KEY and (
        config["MEDPORT_PRODUCTION"] or not config["MEDPORT_EMBEDDED"]
    ):
        raise ConfigurationError(
            "SECRET_KEY must be set to a long random value outside the embedded default "
            "(MEDPORT_ENV=production or server databases)."
        )
