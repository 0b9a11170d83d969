"""The templates' conventions, read from the files: one macro file, one naming scheme for the
partials htmx fetches alone, one name for the page message."""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
MACROS = "_macros.html"
#: The variable of the message at the top of a page.
PAGE_MESSAGE = "message"
OTHER_NAMES = ("alert", "error", "errors")


def _templates():
    return {path.relative_to(TEMPLATES).as_posix(): path.read_text() for path in TEMPLATES.rglob("*.html")}


def _render_calls():
    """``(module, call)`` for every ``render_template(...)`` call of the dashboard package."""
    for path in (ROOT / "dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == \
                    "render_template":
                yield path.relative_to(ROOT).as_posix(), node


def _served_templates():
    """Template names the dashboard package renders on their own (string constants naming a
    template: render_template's first argument, or a name chosen before the call)."""
    names = set()
    for path in (ROOT / "dashboard").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    re.fullmatch(r"[\w/]+\.html", node.value):
                names.add(node.value)
    return names


def test_macros_live_in_one_file_with_one_window():
    templates = _templates()
    defining = sorted(name for name, text in templates.items() if "{% macro" in text)
    assert defining == [MACROS]
    imported = {m for text in templates.values()
                for m in re.findall(r"\{%-?\s*(?:from|import)\s+[\"']([^\"']+)[\"']", text)}
    assert imported == {MACROS}
    assert len(re.findall(r"\{% macro window\(", templates[MACROS])) == 1


def test_every_partial_served_alone_is_a_panel():
    templates = _templates()
    served = _served_templates()
    assert served and served <= set(templates), served - set(templates)
    partials = sorted(name for name in served if name.rsplit("/", 1)[-1].startswith("_"))
    assert partials, "no partial is rendered on its own"
    assert [name for name in partials if not name.endswith("_panel.html")] == []
    # and a *_panel.html name promises a template that is served alone
    panels = sorted(name for name in templates if name.endswith("_panel.html"))
    assert [name for name in panels if name not in served] == []


def test_the_page_message_has_one_name():
    for module, call in _render_calls():
        names = {keyword.arg for keyword in call.keywords}
        assert not names & set(OTHER_NAMES), f"{module}:{call.lineno} passes {names & set(OTHER_NAMES)}"
    other = "|".join(OTHER_NAMES)
    pattern = re.compile(r"\{\{-?\s*(?:OTHER)\s*-?\}\}|\{%-?\s*if\s+(?:not\s+)?(?:OTHER)\s*-?%\}"
                         r"|\((?:[^()]*,\s*)?(?:OTHER)\)".replace("OTHER", other))
    found = {name: pattern.findall(text) for name, text in _templates().items()}
    assert {name: hits for name, hits in found.items() if hits} == {}
    # the one name is the one the error pages and the macros use
    templates = _templates()
    assert "{{ " + PAGE_MESSAGE + " }}" in templates["errors/error.html"]
    assert "page_message(" + PAGE_MESSAGE + ")" in templates[MACROS]
