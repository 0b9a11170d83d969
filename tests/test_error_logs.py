"""Logs without patient data: database errors by kind and silo, request lines without queries."""
import logging
import threading
import urllib.error
import urllib.request

from werkzeug.serving import make_server

from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.request_log import QueryStringFilter

#: A value that must never reach the log.
PATIENT_REFERENCE = "P-LOGREF4KZ"
#: How long a request to the development server may take, in seconds (a bound, not a pause).
REQUEST_TIMEOUT_SECONDS = 10


def test_a_database_error_is_logged_by_kind_and_silo_without_its_values(app, backend, caplog):
    """A unique violation's message quotes the row (``Key (event_id)=(...)``): it is not logged."""

    def write_twice():
        inbox = db.metadatas["hospital"].tables["inbox_events"]
        row = {"event_id": PATIENT_REFERENCE, "handler": "log-probe", "applied_at": utcnow()}
        db.session.execute(inbox.insert(), [row])
        db.session.execute(inbox.insert(), [row])
        return "written"

    app.add_url_rule("/write-twice", view_func=write_twice)
    caplog.set_level(logging.WARNING)
    response = app.test_client().get("/write-twice")
    assert response.status_code == 500
    assert PATIENT_REFERENCE not in response.get_data(as_text=True)
    (record,) = [r for r in caplog.records if r.getMessage().startswith("database error on")]
    message = record.getMessage()
    assert "GET /write-twice: silo hospital, IntegrityError" in message
    assert ("UniqueViolation, sqlstate 23505" if backend == "postgres" else "SQLITE_CONSTRAINT_UNIQUE") in message
    assert "write_twice" in message  # where it happened: the stack, without the message
    assert PATIENT_REFERENCE not in message and record.exc_info is None


class _Collect(logging.Handler):
    """Keeps the werkzeug logger's records; ``arrived`` is set at the first request line."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records = []
        self.arrived = threading.Event()

    def emit(self, record):
        self.records.append(record)
        if "HTTP/1.1" in record.getMessage():
            self.arrived.set()


def test_the_development_server_logs_requests_without_their_query_string(app):
    """``flask run``'s server (werkzeug) on a loopback port: its request line keeps the path only."""
    server = make_server("127.0.0.1", 0, app)
    collect = _Collect()
    logger = logging.getLogger("werkzeug")
    logger.addHandler(collect)
    previous_level = logger.level
    logger.setLevel(logging.INFO)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/login?next=%2Fhospital%2F&q={PATIENT_REFERENCE}"
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT_SECONDS) as response:
            assert response.status == 200
        assert collect.arrived.wait(REQUEST_TIMEOUT_SECONDS), "no request line was logged"
    finally:
        server.shutdown()
        thread.join(REQUEST_TIMEOUT_SECONDS)
        logger.removeHandler(collect)
        logger.setLevel(previous_level)
    lines = [r.getMessage() for r in collect.records]
    assert any('"GET /login HTTP/1.1" 200' in line for line in lines), lines
    assert not any(PATIENT_REFERENCE in line or "?" in line for line in lines), lines


def test_the_filter_cleans_every_shape_of_werkzeug_request_line():
    """Coloured lines (404, 5xx) and the raw line of a request werkzeug could not parse."""
    shapes = [
        ('"%s" %s %s', (f"\x1b[33mGET /nowhere?q={PATIENT_REFERENCE} HTTP/1.1\x1b[0m", "404", "-")),
        ("code 400, message Bad request syntax (%r)", (f"GET /x?q={PATIENT_REFERENCE}&a=b HTTP/1.1",)),
        (f'"GET /hospital/?q={PATIENT_REFERENCE}&tab=open HTTP/1.1" 200 -', ()),
    ]
    for msg, args in shapes:
        record = logging.LogRecord("werkzeug", logging.INFO, __file__, 1, msg, args, None)
        assert QueryStringFilter().filter(record) is True
        cleaned = record.getMessage()
        assert PATIENT_REFERENCE not in cleaned and "?" not in cleaned, cleaned
        assert "HTTP/1.1" in cleaned
