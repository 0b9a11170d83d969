"""The serving worker's garbage collector (dashboard/gc_tuning.py, called by gunicorn.conf.py)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dashboard.gc_tuning import DEFAULT_THRESHOLD, threshold_from

ROOT = Path(__file__).resolve().parent.parent

# Loads gunicorn.conf.py as gunicorn does and runs its post_worker_init with a stand-in worker,
# in a child process, so this process's collector is left alone.
IN_A_WORKER = r'''
import gc, json, runpy, sys
sys.path.insert(0, sys.argv[1])
before = gc.get_threshold()[0]
conf = runpy.run_path(sys.argv[1] + "/gunicorn.conf.py")

class Worker:
    def handle_exit(self, sig, frame):
        pass

import dashboard.events.hub  # loaded with the app in a real worker
frozen_before = gc.get_freeze_count()
conf["post_worker_init"](Worker())
print(json.dumps({"before": before, "after": gc.get_threshold()[0], "frozen_before": frozen_before,
                  "frozen_after": gc.get_freeze_count()}))
'''


def run_worker_init(env_value):
    env = {"PATH": "/usr/bin:/bin"}
    if env_value is not None:
        env["MEDPORT_GC_THRESHOLD"] = env_value
    return subprocess.run([sys.executable, "-c", IN_A_WORKER, str(ROOT)], capture_output=True, text=True,
                          timeout=120, env=env, check=False)


def test_the_worker_freezes_what_it_loaded_and_collects_less_often():
    done = run_worker_init(None)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["before"] == 700  # CPython's own
    assert found["after"] == DEFAULT_THRESHOLD
    assert found["frozen_before"] == 0 and found["frozen_after"] > 10000  # the app's modules and more


def test_zero_keeps_the_defaults_and_a_wrong_value_stops_the_worker():
    done = run_worker_init("0")
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["after"] == 700 and found["frozen_after"] == 0
    wrong = run_worker_init("lots")
    assert wrong.returncode != 0 and "MEDPORT_GC_THRESHOLD must be a whole number" in wrong.stderr


@pytest.mark.parametrize("raw,value", [(None, DEFAULT_THRESHOLD), ("", DEFAULT_THRESHOLD), ("0", 0),
                                       ("50000", 50000)])
def test_threshold_setting(raw, value):
    assert threshold_from({} if raw is None else {"MEDPORT_GC_THRESHOLD": raw}) == value


@pytest.mark.parametrize("raw", ["-1", "1e4", "many"])
def test_threshold_setting_refuses(raw):
    with pytest.raises(ValueError, match="MEDPORT_GC_THRESHOLD"):
        threshold_from({"MEDPORT_GC_THRESHOLD": raw})
