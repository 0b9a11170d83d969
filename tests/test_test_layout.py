"""The suite's own layout: shared helpers live in ``tests/helpers`` (``tests/browser/helpers.py``
for the browser tests) or in a conftest, never in a test module, and no test module grows past
``MAX_LINES``."""
import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
MAX_LINES = 800


def python_files():
    """Every Python file of the suite (test modules, helpers, conftests), vendored code aside."""
    return sorted(path for path in TESTS.rglob("*.py") if "vendor" not in path.parts)


def suite_test_modules():
    return [path for path in python_files() if path.name.startswith("test_")]


def imported_test_modules(source):
    """The test modules (``test_*``) that ``source`` imports, as written: ``tests.test_x``,
    ``.test_x``, ``from tests import test_x`` ..., at any depth (inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            modules = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for module in modules:
            if any(part.startswith("test_") for part in module.split(".")):
                found.append(module)
                break
    return found


@pytest.mark.parametrize("source", [
    "from tests.test_events import post_trip",
    "from .test_dispatch_story import LIVE",
    "import tests.test_hospital",
    "from tests import test_stream",
    "from . import test_faults as faults",
    "def helper():\n    from tests.browser.test_pages import x\n",
])
def test_the_check_sees_every_form_of_a_test_module_import(source):
    assert imported_test_modules(source)


@pytest.mark.parametrize("source", [
    "from tests.helpers import post_trip",
    "from .helpers import LIVE",
    "from tests.conftest import DEMO_PASSWORD",
    "from .conftest import wait_for",
    "import pytest",
])
def test_the_check_lets_helpers_and_conftest_imports_pass(source):
    assert imported_test_modules(source) == []


def test_no_module_of_the_suite_imports_a_test_module():
    offenders = {str(path.relative_to(TESTS)): imported_test_modules(path.read_text(encoding="utf-8"))
                 for path in python_files()}
    assert {name: modules for name, modules in offenders.items() if modules} == {}


def test_no_test_module_is_longer_than_the_limit():
    long = {str(path.relative_to(TESTS)): lines for path in suite_test_modules()
            if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"split these by feature (at most {MAX_LINES} lines each)"
