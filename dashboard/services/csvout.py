"""The one CSV writer of every export: safe to open in a spreadsheet, and opened right.

- A text cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
  would be run as a formula by a spreadsheet (CSV injection): it gets a leading
  single quote, as OWASP advises, so it shows as the text it is.  Numbers
  (``int``, ``float``, ``Decimal``; not ``bool``) are written as numbers, negative
  ones included: they are data, not formulas.
- The text starts with a UTF-8 byte-order mark, so a spreadsheet reads it as
  UTF-8 ("Médic", not "MÃ©dic").  A streamed export sends it once, before the header.

Exports build rows of plain values and hand them here; nothing else writes CSV for a person
to open.  The one other CSV, ``seed.scale``'s ``COPY`` feed to PostgreSQL, is read by the
database, not a spreadsheet: it must carry values exactly (no byte-order mark, no quote
before a negative number or a ``-`` in a name), so it keeps its own plain ``csv.writer``.
"""
import csv
import io
import itertools
from decimal import Decimal

from flask import Response

BOM = "\ufeff"
#: A spreadsheet runs a cell starting with one of these as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
#: A streamed export sends its rows in pieces of about this many characters.
CHUNK_CHARS = 8192


def cell(value):
    """One value as a CSV cell: ``None`` is empty, a number stays a number, text is neutralised.

    Returns ``int``/``float``/``Decimal`` unchanged, otherwise ``str``.
    """
    if value is None:
        return ""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return value
    text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def _writer(buffer):
    return csv.writer(buffer, lineterminator="\r\n")


def text(header, rows):
    """The whole export as one string: BOM, the header row, then ``rows`` (iterables of values)."""
    buffer = io.StringIO()
    buffer.write(BOM)
    writer = _writer(buffer)
    writer.writerow([cell(v) for v in header])
    writer.writerows([cell(v) for v in row] for row in rows)
    return buffer.getvalue()


def stream(header, rows, chunk_chars=CHUNK_CHARS):
    """Yield the export as strings: the BOM and header row first, then the rows about
    ``chunk_chars`` characters at a time, so memory stays flat however many rows come."""
    buffer = io.StringIO()
    writer = _writer(buffer)
    rows = iter(rows)
    first = next(rows, None)  # read before anything is sent: a silo that is down fails here
    buffer.write(BOM)
    writer.writerow([cell(v) for v in header])
    yield _take(buffer)
    if first is None:
        return
    rows = itertools.chain([first], rows)
    for row in rows:
        writer.writerow([cell(v) for v in row])
        if buffer.tell() >= chunk_chars:
            yield _take(buffer)
    rest = _take(buffer)
    if rest:
        yield rest


def _take(buffer):
    value = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return value


def response(body, filename, status=200):
    """A CSV download: ``body`` is a string or an iterable of strings (streamed as it comes).

    A streamed body is started here, in the view, up to its first chunk (for :func:`stream`,
    after its first row is read): a database error then reaches the app's error pages (a 503
    naming the silo) instead of breaking a download already under way.
    """
    if not isinstance(body, str):
        body = _started(body)
    return Response(body, status=status, mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _started(chunks):
    chunks = iter(chunks)
    try:
        first = next(chunks)
    except StopIteration:
        return iter(())
    return itertools.chain([first], chunks)
