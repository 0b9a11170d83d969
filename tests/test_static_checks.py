"""Static checks as part of the suite: ruff (lint) over the code, bandit (security lint) over
the package with no finding of medium or high severity.

A finding bandit reports wrongly is marked where it is, ``# nosec <ID>`` with the reason
beside it, so every exception is read in the code it excuses.  Where a tool is not installed
the test skips and says so, unless ``CI`` or ``MEDPORT_REQUIRE_STATIC_CHECKS=1`` is set: then
it fails.
"""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REQUIRED

ROOT = Path(__file__).resolve().parent.parent


def tool(module):
    """``python -m <module>``, or a skip (a failure where the checks are required)."""
    if importlib.util.find_spec(module) is None:
        reason = f"{module} is not installed (pip install -r requirements-dev.txt)"
        if REQUIRED:
            pytest.fail(reason + "; CI or MEDPORT_REQUIRE_STATIC_CHECKS=1 requires it")
        pytest.skip(reason)
    return [sys.executable, "-m", module]


def test_ruff_finds_nothing():
    result = subprocess.run(tool("ruff") + ["check", "--no-cache", "--output-format", "concise", "."],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_bandit_finds_nothing_of_medium_or_high_severity():
    result = subprocess.run(
        tool("bandit") + ["--recursive", "dashboard", "--severity-level", "medium", "--format", "json",
                          "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    findings = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_severity']}: {r['issue_text']}"
                for r in report["results"]]
    assert not findings, "\n".join(findings)
    assert not report["errors"], report["errors"]
    assert report["metrics"]["_totals"]["loc"] > 1000  # the package was scanned
    assert result.returncode == 0, result.stderr[-2000:]
