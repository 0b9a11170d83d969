"""The layers of the package, written down in ``.importlinter`` and checked by import-linter:
blueprints → the view helper → event handlers and the relay → services → event infrastructure
(the outbox, the hub) → models.  A new import the wrong way fails here, and so does an import
of ``flask_login`` by the outbox or a service (they take the actor as an argument).

The second test proves the check can fail: a copy of the package with one service importing a
blueprint must break the contract.  Where import-linter is not installed the tests skip, unless
``CI`` or ``MEDPORT_REQUIRE_STATIC_CHECKS=1`` is set: then they fail.
"""
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRED = bool(os.environ.get("CI")) or os.environ.get("MEDPORT_REQUIRE_STATIC_CHECKS") == "1"


def _lint(cwd):
    if importlib.util.find_spec("importlinter") is None:
        reason = "import-linter is not installed (pip install -r requirements-dev.txt)"
        if REQUIRED:
            pytest.fail(reason + "; CI or MEDPORT_REQUIRE_STATIC_CHECKS=1 requires it")
        pytest.skip(reason)
    code = ("import sys; from importlinter.cli import lint_imports; "
            "sys.exit(lint_imports(config_filename='.importlinter', no_cache=True, no_logo=True))")
    env = dict(os.environ, PYTHONPATH=str(cwd))
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_layer_contracts_are_kept():
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "0 broken" in result.stdout


#: (module of a copy of the package, the wrong import added to it, what import-linter must name):
#: each contract of ``.importlinter`` broken once, to prove the check can fail.
WRONG_IMPORTS = [
    ("services/geo.py", "from ..hospital import routes as _wrong_way  # noqa: E402",
     "dashboard.services.geo -> dashboard.hospital"),
    ("ems/board.py", "import sqlalchemy as _sql_in_a_view  # noqa: E402",
     "dashboard.ems.board -> sqlalchemy"),
    ("services/geo.py", "from flask_login import current_user as _unseen  # noqa: E402,F401",
     "dashboard.services.geo -> flask_login"),
]


@pytest.mark.parametrize("module,line,named", WRONG_IMPORTS, ids=["layers", "blueprints-http-only",
                                                                   "no-signed-in-user-below-views"])
def test_a_wrong_import_breaks_its_contract(tmp_path, module, line, named):
    shutil.copytree(ROOT / "dashboard", tmp_path / "dashboard",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    path = tmp_path / "dashboard" / module
    path.write_text(path.read_text() + "\n" + line + "\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert named in result.stdout


#: The blueprints' packages: HTTP only, every write through ``views.act``.
BLUEPRINTS = ("auth", "hospital", "ems", "center", "crew", "series", "analytics", "alerts")


def test_no_blueprint_commits_or_rolls_back():
    """One place commits: ``dashboard.views.act``.  A view that commits or rolls back itself
    fails here."""
    found = []
    for package in BLUEPRINTS:
        for path in sorted((ROOT / "dashboard" / package).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if ".commit()" in line or ".rollback()" in line:
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert found == []


def test_every_view_of_a_role_says_what_it_refuses(app):
    """Every view of the role blueprints has a docstring with its "Refuses:" line (the statuses
    it answers besides success), so a reader learns a view's refusals without reading its body."""
    missing = []
    for endpoint, view in app.view_functions.items():
        module = getattr(view, "__module__", "")
        if not module.startswith(tuple(f"dashboard.{package}." for package in BLUEPRINTS)):
            continue
        if "Refuses" not in (view.__doc__ or ""):
            missing.append(f"{endpoint} ({module})")
    assert missing == [], missing


#: The longest a module of the package may grow: past it, it holds more than one job.
MAX_MODULE_LINES = 500
#: The analytics package's modules are split by concern, each shorter still.
MAX_ANALYTICS_MODULE_LINES = 400


def test_no_module_of_the_package_is_over_its_size_limit():
    too_long = []
    for path in sorted((ROOT / "dashboard").rglob("*.py")):
        lines = len(path.read_text(encoding="utf-8").splitlines())
        in_analytics = path.parent == ROOT / "dashboard" / "services" / "analytics"
        limit = MAX_ANALYTICS_MODULE_LINES if in_analytics else MAX_MODULE_LINES
        if lines > limit:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines (limit {limit})")
    assert not too_long, "split by job:\n" + "\n".join(too_long)
