"""Reading the audit log: filters, keyset pages (newest first, by id, through :mod:`.paging`)
and a streamed CSV export.

Read only: nothing here (or anywhere in the app) edits or deletes audit rows.
"""
import json
from dataclasses import dataclass

import sqlalchemy as sa

from ..models.center import AuditLog
from ..models.hospital import FIELD_LABELS
from . import csvout, paging
from .text_search import like_contains, like_prefix

PAGE_SIZE = 50
EXPORT_BATCH = 500
CSV_COLUMNS = ("id", "time_local", "time_utc", "user_email", "user_id", "action", "silo",
               "entity_type", "entity_id", "ip", "before", "after", "detail")


@dataclass
class AuditFilters:
    """``since``/``until`` are naive UTC; text filters are matched as documented on the page."""

    user: str | None = None
    action: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None
    since: object = None
    until: object = None


def conditions(filters):
    """The WHERE clauses of the filters: email contains, action starts with, entity exact."""
    where = []
    if filters.user:
        where.append(like_contains(AuditLog.user_email, filters.user))
    if filters.action:
        where.append(like_prefix(AuditLog.action, filters.action))
    if filters.entity_type:
        where.append(AuditLog.entity_type == filters.entity_type.strip())
    if filters.entity_id:
        where.append(AuditLog.entity_id == filters.entity_id.strip())
    if filters.since:
        where.append(AuditLog.created_at >= filters.since)
    if filters.until:
        where.append(AuditLog.created_at < filters.until)
    return where


def page(filters, after=None, size=PAGE_SIZE):
    """One page of the matching entries, newest first, keyset-paged by id through
    :func:`.paging.keyset`: a :class:`.paging.Page` (``rows``, ``after`` the next page's cursor
    or None).  Raises :class:`.paging.CursorRefused` (400) for a cursor it did not make."""
    query = sa.select(AuditLog).where(*conditions(filters))
    return paging.keyset(query, [AuditLog.id], after=after, size=size)


def subject(entry):
    """What ``entry`` (an :class:`AuditLog`) is about, as the screens name it: a request's
    reference (e.g. "ALT-261201-3VRM") when its before or after mapping carries one, else the
    first 8 characters of its entity id; "" without an entity id."""
    for values in (entry.after, entry.before):
        if isinstance(values, dict) and isinstance(values.get("reference"), str) and values["reference"]:
            return values["reference"]
    return (entry.entity_id or "")[:8]


def _label(key):
    return FIELD_LABELS.get(key) or key.replace("_", " ").capitalize()


def _plain(value):
    if isinstance(value, dict):
        return ", ".join(f"{_label(key).lower()} {_plain(item)}" for key, item in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(_plain(item) for item in value) if value else "none"
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value).replace("_", " ") if isinstance(value, str) and value.isidentifier() else str(value)


def readable(value):
    """A before/after value as lines a person reads: a mapping gives one "Label: value" line
    per key, in its order (request fields by :data:`FIELD_LABELS`, nested mappings and lists on
    one line, e.g. "Care override: level of care BLS, needs cardiac monitor, reason RT rides
    along"); anything else one line.  ``[]`` for None.  The CSV export keeps the JSON."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{_label(key)}: {_plain(item)}" for key, item in value.items()]
    return [_plain(value)]


def _value(value):
    """JSON text for the before/after mappings; other values as they are (:mod:`.csvout` writes them)."""
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def csv_lines(filters, local_time):
    """The matching entries as CSV text pieces (BOM and header first, newest entry first),
    read :data:`EXPORT_BATCH` entries at a time as the pieces are taken.

    ``local_time`` formats a naive-UTC datetime in the region's zone.
    """
    return csvout.stream(CSV_COLUMNS, _export_rows(filters, local_time))


def _export_rows(filters, local_time):
    """The CSV rows of the matching entries, read a keyset page of :data:`EXPORT_BATCH` at a
    time (only when the stream wants more)."""
    query = sa.select(AuditLog).where(*conditions(filters))
    after = None
    while True:
        batch = paging.keyset(query, [AuditLog.id], after=after, size=EXPORT_BATCH)
        for row in batch.rows:
            yield [_value(v) for v in (
                row.id, local_time(row.created_at), row.created_at.isoformat(sep=" ", timespec="seconds"),
                row.user_email, row.user_id, row.action, row.silo, row.entity_type, row.entity_id,
                row.ip, row.before, row.after, row.detail)]
        if batch.after is None:
            break
        after = batch.after
