"""Starting the app under gunicorn on loopback: a free port, and waiting for it to answer.

Shared by the benchmarks (run as ``python bench/<script>.py``, which puts this folder
on the import path) and by the browser tests (``from bench.serving import ...``).
"""
import socket
import time
import urllib.request


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url, process, timeout=30.0, interval=0.2):
    """Poll ``url``'s ``/healthz`` until it answers 200, for at most ``timeout`` seconds.

    ``process`` is the server's ``subprocess.Popen``: its exit ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(interval)
    raise RuntimeError(f"the server at {url} did not come up within {timeout} s")
