"""Error pages in the site layout; a silo that is down or stalled answers 503 naming the silo.

Database errors are logged with their kind (classes and SQLSTATE) and silo, never their
message: a driver's message may quote the values of a row (a patient's).
"""
import traceback

from flask import current_app, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from .extensions import db, htmx
from .hashing import HashingBusy
from .models.vocabulary import SILO_LABELS
from .request_log import install as install_request_log_filter
from .services.silos import (
    SiloUnavailable,
    check_silo,
    error_kind,
    install_error_tags,
    saturated_silos,
    silo_of_error,
)

#: What a page that needs an unreachable silo says, after "<Silo> data is temporarily unavailable."
SILO_CONSEQUENCES = {
    "center": "Signing in, accounts, the registry, configuration, the audit log and analytics wait "
              "for it; signed-in work on requests, bids and trips goes on.",
}


def unavailable_message(silo):
    """The 503 message of a page that needs ``silo`` (None: a silo not identified)."""
    label = SILO_LABELS.get(silo, "Some")
    extra = SILO_CONSEQUENCES.get(silo, "")
    return (f"{label} data is temporarily unavailable. {extra} "
            "Nothing you saved is lost; try again in a moment.").replace("  ", " ")


def _render(status, title, message):
    template = "errors/_error_panel.html" if htmx else "errors/error.html"
    return render_template(template, status=status, title=title, message=message), status


def _down_silo():
    """Which silo is down, judged by a quick connection check (for an error not tagged)."""
    for silo in ("hospital", "ems", "center"):
        if not check_silo(silo, full=False)["connection"]["ok"]:
            return silo
    return None


def _silo_of(error):
    """The silo an error came from: its engine's tag, else the silo that fails a connection."""
    return silo_of_error(error) or _down_silo()


def register(app):
    """Install the error pages, the silo tags on database errors and the request-log filter."""
    install_error_tags(app)
    install_request_log_filter()

    @app.errorhandler(400)
    def bad_request(error):
        return _render(400, "Bad request", getattr(error, "description", None)
                       or "The request could not be understood.")

    @app.errorhandler(CSRFError)
    def csrf_error(error):
        return _render(400, "Form expired",
                       "This form's security token is missing or no longer valid. "
                       "Reload the page and submit again; nothing was saved.")

    @app.errorhandler(403)
    def forbidden(error):
        return _render(403, "Not allowed", "Your role does not give access to this page.")

    @app.errorhandler(404)
    def not_found(error):
        return _render(404, "Not found", "There is nothing at this address.")

    @app.errorhandler(405)
    def method_not_allowed(error):
        return _render(405, "Not allowed", "This action is not available here.")

    @app.errorhandler(413)
    def too_large(error):
        return _render(413, "Too large", "What you sent is too large.")

    @app.errorhandler(429)
    def too_many(error):
        return _render(429, "Slow down", getattr(error, "description", None)
                       or "Too many requests; wait a moment and try again.")

    @app.errorhandler(SiloUnavailable)
    def silo_unavailable(error):
        db.session.rollback()
        return _render(503, "Temporarily unavailable", unavailable_message(error.silo))

    @app.errorhandler(OperationalError)
    def database_down(error):
        """A silo that is down, or stalled past its statement or lock timeout: 503 naming it."""
        db.session.rollback()
        silo = _silo_of(error)
        current_app.logger.warning("database error on %s %s: silo %s, %s", request.method,
                                   request.path, silo or "unknown", error_kind(error))
        return _render(503, "Temporarily unavailable", unavailable_message(silo))

    @app.errorhandler(PoolTimeout)
    def too_busy(error):
        """Every pooled connection stayed busy past the pool's timeout: overload, not a fault.
        The answer says to retry shortly (503 with Retry-After), as a load balancer expects."""
        db.session.rollback()
        current_app.logger.warning("no database connection free on %s %s: pools full: %s", request.method,
                                   request.path, ", ".join(saturated_silos()) or "none now")
        response, status = _render(503, "Busy", "MedPort is very busy right now. Nothing you saved is "
                                   "lost; try again in a moment.")
        return response, status, {"Retry-After": "5"}

    @app.errorhandler(HashingBusy)
    def hashing_busy(error):
        """Setting or resetting a password while every hashing slot stays taken (a rush of
        sign-ins): 503 with Retry-After; nothing was changed."""
        db.session.rollback()
        response, status = _render(503, "Busy", error.message)
        return response, status, {"Retry-After": str(error.retry_after)}

    @app.errorhandler(DBAPIError)
    def database_error(error):
        db.session.rollback()
        if error.connection_invalidated:
            return database_down(error)
        # The stack without the message, which may quote a row's values.
        current_app.logger.error("database error on %s %s: silo %s, %s\n%s", request.method, request.path,
                                 silo_of_error(error) or "unknown", error_kind(error),
                                 "".join(traceback.format_tb(error.__traceback__)).rstrip())
        return _render(500, "Something went wrong", "The error was logged. Please try again.")

    @app.errorhandler(500)
    def server_error(error):
        return _render(500, "Something went wrong", "The error was logged. Please try again.")
