"""The load script runs: a short locust run (20 users, 30 s) against gunicorn and a relay
on PostgreSQL, loopback only, through ``bench/load_run.py`` (what a full run uses too).

Every request answers as the script expects (no failure), and each of the three roles
signs in and fetches its pages.  Figures are not asserted here (README: Benchmarks).
Without locust the test skips and says so, unless ``CI`` or ``MEDPORT_REQUIRE_STATIC_CHECKS=1``
is set; without PostgreSQL it skips unless ``MEDPORT_REQUIRE_POSTGRES=1``.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_BASE, PG_PREFIX, REQUIRE_PG, postgres_available
from tests.helpers import REQUIRED

ROOT = Path(__file__).resolve().parent.parent
USERS = 20


def test_a_short_load_run_has_no_failures(tmp_path):
    if importlib.util.find_spec("locust") is None:
        reason = "locust is not installed (pip install -r requirements-dev.txt)"
        if REQUIRED:
            pytest.fail(reason)
        pytest.skip(reason)
    ok, reason = postgres_available()
    if not ok:
        if REQUIRE_PG:
            pytest.fail(reason)
        pytest.skip(reason)
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, "bench/load_run.py", "--users", str(USERS), "--spawn-rate", "10", "--time", "30s", "--warmup", "0",
         "--db-prefix", f"{PG_PREFIX}_load", "--postgres", PG_BASE.replace("+psycopg2", ""),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=540)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())
    pages = {f"{row['method']} {row['page']}": row for row in result["pages"] if row["page"] != "all"}
    failed = {name: row["failures"] for name, row in pages.items() if row["failures"]}
    assert not failed, (failed, result["locust_tail"])
    assert result["locust_exit"] == 0, result["locust_tail"]
    assert 0 < pages["POST /login [POST]"]["requests"] <= USERS, result["locust_tail"]
    for role in ("/hospital/", "/ems/", "/center/"):
        assert any(name.startswith("GET " + role) for name in pages), (role, sorted(pages))
    assert all(w["after"] > 0 for w in result["workers_rss_mib"]) and len(result["workers_rss_mib"]) == 2
