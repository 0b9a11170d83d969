"""Several processes: a signal written by the relay of one server reaches a stream on another.

Two gunicorn servers (gevent workers, ``gunicorn.conf.py``) on loopback ports
share the PostgreSQL test databases.  Server A runs the relay; server B only
serves the stream; the request is posted from this process.  The relay hears
the commit through ``LISTEN medport_outbox``; B hears the relay's signal
through ``LISTEN medport_signals``.  Every wait is bounded.
"""
import http.client
import os
import re
import socket
import subprocess
import sys
import time
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import urlencode

import pytest

from dashboard.extensions import db
from dashboard.models.hospital import TransportRequest
from tests.test_events import post_trip

ROOT = Path(__file__).resolve().parent.parent
STARTUP_SECONDS = 30
SIGNAL_SECONDS = 15


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A gunicorn process serving the app against the test databases."""

    def __init__(self, app, tmp_path, name, workers, relay):
        self.port = free_port()
        self.log_path = tmp_path / f"server-{name}.log"
        env = dict(os.environ)
        env.update({
            "MEDPORT_CENTER_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
            "MEDPORT_HOSPITAL_DATABASE_URL": app.config["SQLALCHEMY_BINDS"]["hospital"]["url"],
            "MEDPORT_EMS_DATABASE_URL": app.config["SQLALCHEMY_BINDS"]["ems"]["url"],
            "SECRET_KEY": "multi-worker-test-secret-key-0123456789",
            "MEDPORT_SIGNAL_BACKEND": "postgres",
            "MEDPORT_INPROCESS_RELAY": "1" if relay else "0",
            # The slow poll must not be what delivers within the test's wait.
            "MEDPORT_SIGNAL_POLL_SECONDS": "120",
            "MEDPORT_STREAM_KEEPALIVE_SECONDS": "1",
            "MEDPORT_ACCESS_LOG": "-",
        })
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", str(workers),
                 "-b", f"127.0.0.1:{self.port}", "wsgi:app"],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

    def wait_until_up(self):
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            try:
                status, _, _ = Client(self).request("GET", "/healthz")
                if status in (200, 503):
                    return
            except OSError:
                pass
            try:
                self.process.wait(timeout=0.2)  # doubles as a bounded pause between tries
            except subprocess.TimeoutExpired:
                continue
            break
        raise AssertionError(f"server did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self):
        """Wait for the graceful shutdown asked by :meth:`terminate`; kill it if it hangs."""
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def terminate(self):
        if self.process.poll() is None:
            self.process.terminate()


class Client:
    """A minimal HTTP client that keeps the session cookie."""

    def __init__(self, server):
        self.server = server
        self.cookies = SimpleCookie()

    def request(self, method, path, form=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=timeout)
        headers = {"Cookie": "; ".join(f"{k}={m.value}" for k, m in self.cookies.items())}
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        text = response.read().decode()
        for value in response.headers.get_all("Set-Cookie") or []:
            self.cookies.load(value)
        conn.close()
        return response.status, response.headers, text

    def login(self, email):
        _, _, page = self.request("GET", "/login")
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        status, _, _ = self.request("POST", "/login", {"csrf_token": token, "email": email,
                                                        "password": "medport-demo"})
        assert status == 302, f"login of {email} answered {status}"

    def open_stream(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.server.port, timeout=3)
        conn.request("GET", "/events", headers={
            "Cookie": "; ".join(f"{k}={m.value}" for k, m in self.cookies.items()),
            "Accept": "text/event-stream"})
        response = conn.getresponse()
        assert response.status == 200
        return conn, response


def read_until(response, needle, seconds):
    """Read the stream until ``needle`` arrives or ``seconds`` pass; return what was read."""
    text, deadline = "", time.monotonic() + seconds
    while needle not in text and time.monotonic() < deadline:
        try:
            chunk = response.read1(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        text += chunk.decode()
    return text


@pytest.fixture
def postgres(backend):
    if backend != "postgres":
        pytest.skip("signals between processes travel by PostgreSQL LISTEN/NOTIFY")


@pytest.fixture
def servers(postgres, app, demo, tmp_path):
    started = []
    try:
        relaying = Server(app, tmp_path, "a", workers=1, relay=True)
        started.append(relaying)
        streaming = Server(app, tmp_path, "b", workers=2, relay=False)
        started.append(streaming)
        relaying.wait_until_up()  # its first request starts its relay
        streaming.wait_until_up()
        yield relaying, streaming
    finally:
        for server in started:
            server.terminate()
        for server in started:
            server.stop()


def test_a_signal_relayed_by_one_server_reaches_a_stream_on_another(servers, app):
    relaying, streaming = servers
    client = Client(streaming)
    client.login("nurse@altoona.medport.test")
    conn, response = client.open_stream()
    try:
        assert ": connected" in read_until(response, ": connected", 5)
        with app.app_context():
            public_id = db.session.get(TransportRequest, post_trip("ALT")).public_id
        started = time.monotonic()
        text = read_until(response, f"data: {public_id}\n", SIGNAL_SECONDS)
        assert f"event: trip-updated\ndata: {public_id}\n" in text, (
            relaying.log_path.read_text()[-2000:] + streaming.log_path.read_text()[-2000:])
        # Far sooner than any poll: the commit woke the relay, the relay woke the stream.
        assert time.monotonic() - started < 5
    finally:
        conn.close()
