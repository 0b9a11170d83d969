"""SQL time: the local day and hour of a naive-UTC column, and minutes between two, per dialect.

PostgreSQL converts with ``AT TIME ZONE``; SQLite has no time zones, so :class:`Clock` picks the
UTC offset by a CASE over the zone's offset changes inside the period.  Both silos give the same
local dates, so a request counts on the same day whichever database holds it.
"""
import re
from datetime import UTC, date, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app

from ...extensions import engine


def zone_name():
    """The region's time zone name (``MEDPORT_TIMEZONE``, e.g. ``America/New_York``)."""
    return current_app.config["MEDPORT_TIMEZONE"]


def _offset_minutes(zone, moment):
    """The zone's UTC offset in minutes at ``moment`` (naive UTC)."""
    return int(moment.replace(tzinfo=UTC).astimezone(zone).utcoffset().total_seconds() // 60)


def _transitions(zone, start, end):
    """[(utc instant, offset minutes from then on)] for UTC-offset changes in [start, end)."""
    changes = []
    step = timedelta(hours=6)
    moment, offset = start, _offset_minutes(zone, start)
    while moment < end:
        following = min(moment + step, end)
        new_offset = _offset_minutes(zone, following)
        if new_offset != offset:
            low, high = moment, following  # the change happens in (low, high]
            while high - low > timedelta(minutes=1):
                middle = low + (high - low) / 2
                if _offset_minutes(zone, middle) == offset:
                    low = middle
                else:
                    high = middle
            changes.append((high.replace(second=0, microsecond=0), new_offset))
            offset = new_offset
        moment = following
    return changes


class Clock:
    """Local day and hour of a naive-UTC column, in the SQL of one silo's dialect.

    PostgreSQL converts with ``AT TIME ZONE``; SQLite has no time zones, so the
    offset is chosen by a CASE over the zone's offset changes inside the period.
    """

    def __init__(self, dialect, start_utc, end_utc):
        """``dialect``: ``postgresql`` or ``sqlite``; ``start_utc``/``end_utc``: the naive-UTC
        bounds of the rows read (SQLite's offsets are exact inside them).  Raises ``ValueError``
        when ``MEDPORT_TIMEZONE`` is not a zone name."""
        self.dialect = dialect
        self.zone = zone_name()
        if not re.fullmatch(r"[A-Za-z0-9_+\-/]+", self.zone):
            raise ValueError("MEDPORT_TIMEZONE is not a time zone name")
        zone = ZoneInfo(self.zone)
        self.first_offset = _offset_minutes(zone, start_utc)
        self.changes = _transitions(zone, start_utc, end_utc)

    @property
    def key(self):
        """What the SQL of this clock depends on (hashable): the dialect and zone, and on
        SQLite the offsets inside the period."""
        if self.dialect == "postgresql":
            return self.dialect, self.zone
        return self.dialect, self.zone, self.first_offset, tuple(self.changes)

    def local(self, column):
        """The local wall-clock time of ``column`` (a timestamp expression)."""
        if self.dialect == "postgresql":
            # A literal zone name: the same text in SELECT and GROUP BY.
            zone = sa.literal_column(f"'{self.zone}'")
            return sa.func.timezone(zone, sa.func.timezone(sa.literal_column("'UTC'"), column))
        modifier = sa.literal_column(f"'{self.first_offset:+d} minutes'")
        if self.changes:
            whens, previous = [], self.first_offset
            for instant, offset in self.changes:
                whens.append((column < sa.literal_column(f"'{instant:%Y-%m-%d %H:%M:%S}'"),
                              sa.literal_column(f"'{previous:+d} minutes'")))
                previous = offset
            modifier = sa.case(*whens, else_=sa.literal_column(f"'{previous:+d} minutes'"))
        return sa.func.datetime(column, modifier)

    def day(self, column):
        """The local date of ``column`` (a ``date`` on PostgreSQL, ``YYYY-MM-DD`` text on SQLite:
        see :func:`as_date`)."""
        if self.dialect == "postgresql":
            return sa.cast(self.local(column), sa.Date)
        return sa.func.date(self.local(column))

    def hour(self, column):
        """The local hour of ``column``, an integer 0–23."""
        if self.dialect == "postgresql":
            return sa.cast(sa.extract("hour", self.local(column)), sa.Integer)
        return sa.cast(sa.func.strftime("%H", self.local(column)), sa.Integer)


def as_date(value):
    """A ``date`` from a day column's value (a ``date``, or ISO text from SQLite)."""
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def dialect_of(silo):
    """The SQL dialect name (``postgresql`` or ``sqlite``) of ``silo`` (center, hospital or ems)."""
    return engine(silo).dialect.name


def minutes_between(dialect, later, earlier):
    """``later - earlier`` in minutes, a float expression (NULL when either is NULL)."""
    if dialect == "postgresql":
        # date_part gives double precision (EXTRACT gives numeric: far slower to sort and sum).
        return sa.func.date_part("epoch", later - earlier) / 60.0
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 1440.0
