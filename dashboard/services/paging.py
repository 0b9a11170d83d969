"""The one keyset pager of every history list (bids, trips, routes, the audit log, alerts).

A page is cut by the sort key of its last row, not by an OFFSET, so page 200 of a
million-row history costs what page 1 costs and rows arriving meanwhile do not shift it.
The key is one or more columns sorted the same way (all newest first, or all oldest
first), ending with a unique column (the id) so that ties are cut once.  The cursor in the
URL (``?after=``) is the last row's key as an opaque URL-safe token.

The open-request boards are not history: they page by the user's chosen sort in
:mod:`.boards` ("Showing 1–50 of N").
"""
import base64
import binascii
import json
from datetime import date, datetime
from typing import NamedTuple

import sqlalchemy as sa

from ..extensions import db
from .refusals import Refused

#: Rows per page of a history list.
PAGE_SIZE = 25
#: A cursor longer than this is not one of ours.
MAX_CURSOR_CHARS = 400


class CursorRefused(Refused):
    """A page cursor (``after``) that this list did not make: 400."""

    status = 400


class Page(NamedTuple):
    """One page: ``rows`` in order, ``after`` the cursor of the next page (None on the last)."""

    rows: list
    after: str | None


def _encode(values):
    plain = [value.isoformat() if isinstance(value, date | datetime) else value for value in values]
    raw = json.dumps(plain, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token, columns):
    """The key values of ``token`` typed as ``columns``; raises :class:`CursorRefused`."""
    refused = CursorRefused("That page link is not valid any more; start again from the first page.")
    if not isinstance(token, str) or len(token) > MAX_CURSOR_CHARS:
        raise refused
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise refused from None
    if not isinstance(values, list) or len(values) != len(columns):
        raise refused
    typed = []
    for column, value in zip(columns, values, strict=True):
        python_type = column.type.python_type
        try:
            if value is None:
                raise ValueError("a key column is never null")
            if python_type is datetime:
                typed.append(datetime.fromisoformat(value))
            elif python_type is date:
                typed.append(date.fromisoformat(value))
            elif python_type is int and isinstance(value, int) and not isinstance(value, bool):
                typed.append(value)
            elif python_type is str and isinstance(value, str):
                typed.append(value)
            else:
                raise ValueError("unexpected key type")
        except (TypeError, ValueError):
            raise refused from None
    return tuple(typed)


def keyset(query, columns, *, after=None, newest_first=True, size=PAGE_SIZE, key=None, params=None):
    """One page of ``query`` (a ``select`` of one entity) ordered by ``columns``.

    - ``columns``: the sort key, most significant first, ending in a unique column.
    - ``after``: the cursor of the page before (``Page.after``), or None for the first page.
    - ``newest_first``: all columns descending (True) or all ascending.
    - ``key(row)``: the row's key values; default, the columns' attributes of the entity.
    - ``params``: values of ``query``'s bound parameters (a query built once, with
      ``bindparam()`` where it varies: :mod:`.statements`).

    Returns a :class:`Page`.  Raises :class:`CursorRefused` (400) for a cursor it did not make.
    """
    if after:
        values = _decode(after, columns)
        row_key = sa.tuple_(*columns)
        query = query.where(row_key < sa.tuple_(*values) if newest_first else row_key > sa.tuple_(*values))
    order = [column.desc() if newest_first else column.asc() for column in columns]
    rows = list(db.session.scalars(query.order_by(*order).limit(size + 1), params))
    more = len(rows) > size
    rows = rows[:size]
    if not more or not rows:
        return Page(rows, None)
    last = rows[-1]
    values = key(last) if key else tuple(getattr(last, column.key) for column in columns)
    return Page(rows, _encode(values))
