"""Password hashes, at most N at once per worker (dashboard/hashing.py).

A rush of sign-ins queues for the hashing slots; a sign-in that waited too long answers 503 with
Retry-After, and records nothing.  Checked with real threads and, in a child process, under
gevent's monkey-patching as gunicorn's gevent worker runs it.
"""
import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from dashboard import hashing
from dashboard.config import ConfigurationError, build_config
from dashboard.extensions import db
from dashboard.models.center import AuditLog
from tests.conftest import DEMO_PASSWORD

ROOT = Path(__file__).resolve().parent.parent
NURSE = "nurse@altoona.medport.test"
WAIT = 30  # seconds: the bound on every wait below, never reached when the code is right


class Gate:
    """A hash stand-in that holds its slot until opened; counts how many are inside at once."""

    def __init__(self):
        self.inside = 0
        self.most = 0
        self.changed = threading.Condition()
        self.opened = False

    def __call__(self, value):
        with self.changed:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.changed.notify_all()
            self.changed.wait_for(lambda: self.opened, timeout=WAIT)
            self.inside -= 1
            self.changed.notify_all()
        return value

    def wait_inside(self, count):
        with self.changed:
            return self.changed.wait_for(lambda: self.inside == count, timeout=WAIT)

    def open(self):
        with self.changed:
            self.opened = True
            self.changed.notify_all()


def test_at_most_n_hashes_at_once_and_the_rest_queue():
    pool = hashing.HashPool(size=2, wait_seconds=WAIT)
    gate = Gate()
    results = []
    threads = [threading.Thread(target=lambda i=i: results.append(pool.run(gate, i))) for i in range(8)]
    for thread in threads:
        thread.start()
    assert gate.wait_inside(2)  # the slots fill up: two at once, not one after the other
    assert gate.most == 2 and pool.running == 2
    gate.open()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert sorted(results) == list(range(8))  # every waiter got its turn
    assert gate.most == 2 and pool.peak == 2 and pool.running == 0


def test_real_hashes_from_many_threads_stay_within_the_bound():
    pool = hashing.HashPool(size=2, wait_seconds=WAIT)
    stored = hashing.make_hash("correct horse battery")
    counted = Gate()
    counted.opened = True  # counts only
    outcomes = []

    def check(password):
        counted(None)
        return hashing.verify(stored, password).ok

    threads = [threading.Thread(target=lambda i=i: outcomes.append(
        pool.run(check, "correct horse battery" if i % 2 else "wrong"))) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WAIT)
    assert sorted(outcomes) == [False] * 5 + [True] * 5
    assert counted.most <= 2 and pool.peak <= 2


def test_a_caller_that_waits_too_long_is_told_to_retry():
    pool = hashing.HashPool(size=1, wait_seconds=0.2)
    gate = Gate()
    holder = threading.Thread(target=pool.run, args=(gate, 1))
    holder.start()
    assert gate.wait_inside(1)
    ran = []
    with pytest.raises(hashing.HashingBusy) as busy:
        pool.run(ran.append, "should not run")
    assert ran == [] and busy.value.retry_after >= 1
    gate.open()
    holder.join(timeout=WAIT)
    assert pool.run(ran.append, "now") is None and ran == ["now"]


def test_a_sign_in_in_a_rush_answers_503_and_records_nothing(app, demo):
    app.config["MEDPORT_PASSWORD_HASH_CONCURRENCY"] = 1
    app.config["MEDPORT_PASSWORD_HASH_WAIT_SECONDS"] = 0.2
    app.extensions.pop("medport_hash_pool", None)  # made at first use (seeding may have used it)
    client = app.test_client()
    with app.app_context():
        pool = hashing.pool()
        assert (pool.size, pool.wait_seconds) == (1, 0.2)
        slot = pool._semaphore(cooperative=False)
        assert slot.acquire(timeout=WAIT)  # another sign-in holds the only slot
        try:
            response = client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD})
        finally:
            slot.release()
        assert response.status_code == 503
        assert int(response.headers["Retry-After"]) >= 1
        assert b"Many people are signing in right now" in response.data
        assert NURSE.encode() in response.data  # the form keeps what was typed
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditLog)
                                 .where(AuditLog.action.like("login.%"))) == 0
    assert client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD}).status_code == 302


def test_no_connection_is_held_while_the_hash_runs(app, demo, monkeypatch):
    real = hashing.verify
    seen = []

    def spy(stored_hash, password):
        seen.append(db.session().get_transaction())
        return real(stored_hash, password)

    monkeypatch.setattr(hashing, "verify", spy)
    client = app.test_client()
    assert client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD}).status_code == 302
    assert seen == [None]


@pytest.mark.parametrize("name,value", [
    ("MEDPORT_PASSWORD_HASH_CONCURRENCY", "0"),
    ("MEDPORT_PASSWORD_HASH_CONCURRENCY", "two"),
    ("MEDPORT_PASSWORD_HASH_CONCURRENCY", "1.5"),
    ("MEDPORT_PASSWORD_HASH_WAIT_SECONDS", "-1"),
    ("MEDPORT_PASSWORD_HASH_WAIT_SECONDS", "soon"),
])
def test_settings_refuse_what_cannot_work(tmp_path, name, value):
    with pytest.raises(ConfigurationError, match=name):
        build_config(str(tmp_path), {name: value})


def test_settings_defaults(tmp_path):
    config = build_config(str(tmp_path), {})
    assert config["MEDPORT_PASSWORD_HASH_CONCURRENCY"] == hashing.default_concurrency() >= 1
    assert config["MEDPORT_PASSWORD_HASH_WAIT_SECONDS"] == hashing.DEFAULT_WAIT_SECONDS
    config = build_config(str(tmp_path), {"MEDPORT_PASSWORD_HASH_CONCURRENCY": "3",
                                          "MEDPORT_PASSWORD_HASH_WAIT_SECONDS": "2.5"})
    assert (config["MEDPORT_PASSWORD_HASH_CONCURRENCY"], config["MEDPORT_PASSWORD_HASH_WAIT_SECONDS"]) == (3, 2.5)


UNDER_GEVENT = r'''
from gevent import monkey
monkey.patch_all()
import json, sys, threading
import gevent
import gevent.event
from gevent import lock as gevent_lock
sys.path.insert(0, sys.argv[1])
from dashboard import hashing

native_lock = monkey.get_original("threading", "Lock")()
stored = hashing.make_hash("correct horse battery")
state = {"inside": 0, "most": 0, "ticks": 0}

def check(password):  # runs on a thread of gevent's pool
    with native_lock:
        state["inside"] += 1
        state["most"] = max(state["most"], state["inside"])
    try:
        return hashing.verify(stored, password).ok
    finally:
        with native_lock:
            state["inside"] -= 1

pool = hashing.HashPool(size=2, wait_seconds=60)
done = gevent.event.Event()

def ticker():  # the event loop keeps turning while hashes run
    while not done.is_set():
        state["ticks"] += 1
        gevent.sleep(0.005)

tick = gevent.spawn(ticker)
jobs = [gevent.spawn(pool.run, check, "correct horse battery" if i % 2 else "wrong") for i in range(10)]
gevent.joinall(jobs, timeout=120)
done.set()
tick.join(timeout=5)
semaphore = pool._slots["gevent"]

# A caller that waits past the bound is told to retry; the holder's hash runs on a pool thread.
small = hashing.HashPool(size=1, wait_seconds=0.2)
release = monkey.get_original("threading", "Event")()
holder = gevent.spawn(small.run, release.wait, 60)
while small.running == 0:
    gevent.sleep(0.001)
try:
    small.run(lambda: None)
    busy = False
except hashing.HashingBusy:
    busy = True
release.set()
holder.join(timeout=60)
print(json.dumps({"results": sorted(job.value for job in jobs), "most": state["most"], "peak": pool.peak,
                  "ticks": state["ticks"], "gevent_semaphore": isinstance(semaphore, gevent_lock.Semaphore),
                  "busy": busy, "holder_done": holder.successful()}))
'''


def test_the_bound_holds_under_gevent():
    pytest.importorskip("gevent")
    done = subprocess.run([sys.executable, "-c", UNDER_GEVENT, str(ROOT)], capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["results"] == [False] * 5 + [True] * 5
    assert found["most"] <= 2 and found["peak"] <= 2
    assert found["gevent_semaphore"]
    assert found["ticks"] >= 5  # the loop turned while the hashes ran on the pool's threads
    assert found["busy"] and found["holder_done"]
