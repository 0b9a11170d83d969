"""The one way a search box becomes a SQL ``LIKE``: what was typed is matched literally.

``%``, ``_`` and ``\\`` in the text are escaped (``ESCAPE '\\'``), so "50%" finds "50%" and not
"500"; both sides are lower-cased, so the match ignores case alike on SQLite and PostgreSQL.
"""
import sqlalchemy as sa

#: The escape character of every pattern built here.
ESCAPE = "\\"


def escape_like(text):
    """``text`` (str) with the LIKE wildcards ``%`` and ``_`` and the escape character itself
    escaped, to be used with ``escape=ESCAPE``."""
    return text.replace(ESCAPE, ESCAPE * 2).replace("%", ESCAPE + "%").replace("_", ESCAPE + "_")


def like_contains(column, text):
    """A condition: ``column`` (a SQL string expression) contains ``text`` (str, taken
    literally, any case).  Surrounding spaces of ``text`` are dropped."""
    return sa.func.lower(column).like("%" + escape_like(text.strip().lower()) + "%", escape=ESCAPE)


def like_prefix(column, text):
    """A condition: ``column`` (a SQL string expression) starts with ``text`` (str, taken
    literally, any case).  Surrounding spaces of ``text`` are dropped."""
    return sa.func.lower(column).like(escape_like(text.strip().lower()) + "%", escape=ESCAPE)
