"""Several processes: a signal written by the relay of one server reaches a stream on another.

Two gunicorn servers (gevent workers, ``gunicorn.conf.py``) on loopback ports
share the PostgreSQL test databases.  Server A runs the relay; server B only
serves the stream; the request is posted from this process.  The relay hears
the commit through ``LISTEN medport_outbox``; B hears the relay's signal
through ``LISTEN medport_signals``.  Every wait is bounded.
"""
import socket
import time

import pytest

from dashboard.extensions import db
from dashboard.models.hospital import TransportRequest
from tests.helpers import Client, Server, post_trip

SIGNAL_SECONDS = 15


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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
