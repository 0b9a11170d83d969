"""The README's "where is what" table stays true: every file it names exists, every URL is served.

The table maps each feature to its URL, view, service, template and test; a renamed module or
template, or a moved route, fails here instead of leaving the map wrong.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEADING = "### Feature → URL → view → service → template → test"
COLUMNS = ("feature", "url", "view", "service", "template", "test")


def table_rows():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert HEADING in text, "the README has no feature table"
    section = text.split(HEADING, 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| feature")]
    return [dict(zip(COLUMNS, (cell.strip() for cell in row.strip("|").split(" | ")), strict=True))
            for row in rows]


def named_paths(column, cell):
    """The files and folders a cell names, as paths from the project's root."""
    paths, folder = [], ""
    for token in re.findall(r"`([^`]+)`", cell):
        if not (token.endswith((".py", ".html", "/"))):
            continue
        if token.endswith(".html"):
            if "/" in token:
                folder = token.rsplit("/", 1)[0] + "/"
            paths.append("templates/" + (token if "/" in token else folder + token))
        elif column == "test":
            paths.append("tests/" + token)
        elif column == "service" and not token.startswith(("events/", "models/")):
            paths.append("dashboard/services/" + token)
        else:
            paths.append("dashboard/" + token)
    return paths


def test_the_table_has_a_row_for_each_role():
    features = " ".join(row["feature"] for row in table_rows()).lower()
    for word in ("hospital", "ems", "crew", "regional board", "analytics", "alerts", "series"):
        assert word in features, word


@pytest.mark.parametrize("row", table_rows(), ids=lambda row: row["feature"])
def test_every_file_named_exists(row):
    for column in ("view", "service", "template", "test"):
        for path in named_paths(column, row[column]):
            assert list(ROOT.glob(path)), f"{row['feature']}: {column} {path} does not exist"


def test_every_url_named_is_served(app):
    rules = [re.sub(r"<[^>]+>", "<id>", rule.rule) for rule in app.url_map.iter_rules()]
    for row in table_rows():
        for token in re.findall(r"`(/[^`]*)`", row["url"]):
            wanted = re.sub(r"<[^>]+>", "<id>", token).rstrip("…")
            assert any(rule.startswith(wanted) or rule.endswith(wanted) for rule in rules), \
                f"{row['feature']}: {token} is not a URL of the app"
