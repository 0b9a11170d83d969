"""Period and input: the page's choice of period and filters, checked, and the requests they select.

A request belongs to the local day it was posted (the region's time zone), so a period is a run
of local dates; a :class:`Scope` narrows it to a hospital, an awarded agency, a level of care
and an urgency.  :func:`resolve_period` refuses a period the page cannot show
(:class:`AnalyticsInputError`, one message per form field); :func:`scope_conditions` and
:func:`posted_on` are the SQL conditions on ``transport_requests`` that every figure shares;
:func:`bound_conditions` the same with bind parameters (:func:`bound_values`), for statements
built once per shape of filter (:func:`statement`) and only executed per page.
"""
from dataclasses import dataclass
from datetime import date, timedelta

import sqlalchemy as sa

from ...localtime import local_midnight, local_today
from ...models.hospital import TransportRequest
from ..refusals import Refused

PERIODS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom dates"}
PERIOD_DAYS = {"today": 1, "7d": 7, "30d": 30}
MAX_PERIOD_DAYS = 400
EARLIEST_DATE = date(2000, 1, 1)
#: How far past today a custom period may end.
MAX_FUTURE_DAYS = 366


class AnalyticsInputError(Refused, ValueError):
    """A period or filter the page cannot show (400); ``errors`` maps field -> message.

    ``message`` joins the messages with "; "; ``field`` names the one field when there is one.
    """

    status = 400

    def __init__(self, errors):
        super().__init__("; ".join(errors.values()), field=next(iter(errors)) if len(errors) == 1 else None)
        self.errors = errors


@dataclass(frozen=True)
class Scope:
    """The filters: center registry ids, level of care and urgency (``None`` = all)."""

    hospital_id: int | None = None
    agency_id: int | None = None
    level: str | None = None
    urgency: str | None = None

    def key(self):
        """The rollup dimension of this scope, e.g. ``h3a*lALSu*``."""
        return "h{}a{}l{}u{}".format(*(value or "*" for value in (
            self.hospital_id, self.agency_id, self.level, self.urgency)))


@dataclass(frozen=True)
class Period:
    """A run of local dates, ``start`` to ``end`` inclusive."""

    kind: str
    start: date
    end: date

    @property
    def days(self):
        """Every local date of the period, in order (a list of ``date``)."""
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    @property
    def label(self):
        """The period as the page heads it, e.g. ``Mon 04 Mar 2024`` or ``04 Mar 2024 – 06 Mar 2024``."""
        if self.start == self.end:
            return f"{self.start:%a %d %b %Y}"
        return f"{self.start:%d %b %Y} – {self.end:%d %b %Y}"


def resolve_period(kind, start=None, end=None, today=None):
    """The :class:`Period` for ``kind`` (a key of ``PERIODS``) ending ``today`` (a local date,
    default the region's today); ``start``/``end`` (dates) are used for ``custom`` only.

    Raises :class:`AnalyticsInputError` (``errors`` by field: ``period``, ``start``, ``end``) for
    an unknown kind, a missing date, a date before 2000 or more than a year ahead, an end before
    the start or a period over ``MAX_PERIOD_DAYS`` days.
    """
    today = today or local_today()
    if kind in PERIOD_DAYS:
        return Period(kind, today - timedelta(days=PERIOD_DAYS[kind] - 1), today)
    if kind != "custom":
        raise AnalyticsInputError({"period": "Choose a period from the list."})
    errors = {}
    if start is None:
        errors["start"] = "Enter a start date (YYYY-MM-DD) for custom dates."
    if end is None:
        errors["end"] = "Enter an end date (YYYY-MM-DD) for custom dates."
    for name, value in (("start", start), ("end", end)):
        if value is not None and value < EARLIEST_DATE:
            errors[name] = "Dates before 2000 are not kept; choose a later date."
        elif value is not None and value > today + timedelta(days=MAX_FUTURE_DAYS):
            errors[name] = "That date is more than a year ahead; choose an earlier date."
    if not errors and end < start:
        errors["end"] = "The end date is before the start date."
    if not errors and (end - start).days + 1 > MAX_PERIOD_DAYS:
        errors["end"] = f"A period may cover at most {MAX_PERIOD_DAYS} days."
    if errors:
        raise AnalyticsInputError(errors)
    return Period("custom", start, end)


def scope_conditions(scope, include_agency=True):
    """The SQL conditions on ``TransportRequest`` for ``scope`` (a list, empty for every request).

    ``include_agency=False`` leaves the awarded agency out (an agency's bids count on requests
    it did not win)."""
    T = TransportRequest
    conditions = []
    if scope.hospital_id is not None:
        conditions.append(T.hospital_id == scope.hospital_id)
    if include_agency and scope.agency_id is not None:
        conditions.append(T.awarded_agency_id == scope.agency_id)
    if scope.level is not None:
        conditions.append(T.level_of_care == scope.level)
    if scope.urgency is not None:
        conditions.append(T.urgency == scope.urgency)
    return conditions


def posted_in(period):
    """The SQL conditions on ``TransportRequest.created_at`` for requests posted in ``period``
    (its first local midnight to the midnight after its last day, naive UTC)."""
    T = TransportRequest
    return [T.created_at >= local_midnight(period.start),
            T.created_at < local_midnight(period.end + timedelta(days=1))]


def day_runs(days):
    """Consecutive runs of ``days`` (dates, any order), as sorted ``[(first, last)]`` pairs."""
    runs = []
    for day in sorted(days):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return [(first, last) for first, last in runs]


def posted_on(days):
    """One SQL condition on ``TransportRequest.created_at``: posted on one of the local ``days``
    (a range per run of consecutive days)."""
    T = TransportRequest
    ranges = [sa.and_(T.created_at >= local_midnight(first), T.created_at < local_midnight(last + timedelta(days=1)))
              for first, last in day_runs(days)]
    return ranges[0] if len(ranges) == 1 else sa.or_(*ranges)


#: The scope's fields (see :class:`Scope`) and the request column each one filters.
SCOPE_COLUMNS = {"hospital_id": TransportRequest.hospital_id, "agency_id": TransportRequest.awarded_agency_id,
                 "level": TransportRequest.level_of_care, "urgency": TransportRequest.urgency}


def filter_shape(scope, days):
    """What a statement filtering on ``scope`` and the local ``days`` is shaped by: ``(runs of
    consecutive days, the names of the scope's fields that are set)``; hashable."""
    return len(day_runs(days)), tuple(name for name in SCOPE_COLUMNS if getattr(scope, name) is not None)


def bound_conditions(shape, include_agency=True, columns=None):
    """:func:`posted_on` and :func:`scope_conditions` for a :func:`filter_shape`, with bind
    parameters for the values (:func:`bound_values`).

    ``columns`` maps the scope's fields and ``"day"`` to another table's columns (the stored
    cells: then the days are compared as dates, not posting times)."""
    runs, fields = shape
    if columns is None:
        T = TransportRequest
        ranges = [sa.and_(T.created_at >= sa.bindparam(f"posted_from_{i}", type_=sa.DateTime()),
                          T.created_at < sa.bindparam(f"posted_until_{i}", type_=sa.DateTime()))
                  for i in range(runs)]
        columns = SCOPE_COLUMNS
    else:
        ranges = [sa.and_(columns["day"] >= sa.bindparam(f"first_day_{i}", type_=sa.Date()),
                          columns["day"] <= sa.bindparam(f"last_day_{i}", type_=sa.Date()))
                  for i in range(runs)]
    conditions = [ranges[0] if runs == 1 else sa.or_(*ranges)]
    conditions += [columns[name] == sa.bindparam(name) for name in fields
                   if include_agency or name != "agency_id"]
    return conditions


def bound_values(scope, days):
    """The values of :func:`bound_conditions`' parameters for ``scope`` and the local ``days``
    (a dict; a statement ignores those it does not name)."""
    values = {name: getattr(scope, name) for name in SCOPE_COLUMNS}
    for i, (first, last) in enumerate(day_runs(days)):
        values.update({f"posted_from_{i}": local_midnight(first),
                       f"posted_until_{i}": local_midnight(last + timedelta(days=1)),
                       f"first_day_{i}": first, f"last_day_{i}": last})
    return values


_STATEMENTS = {}
#: Shapes kept: filters and runs of days combine into a few dozen in practice.
MAX_STATEMENTS = 512


def statement(key, build):
    """``build()`` (a statement, or any SQL constructs), built once per hashable ``key`` and
    kept: building a statement costs more CPU than SQLAlchemy's cached compilation of it.
    The cache is bounded (emptied when full)."""
    built = _STATEMENTS.get(key)
    if built is None:
        if len(_STATEMENTS) >= MAX_STATEMENTS:
            _STATEMENTS.clear()
        built = _STATEMENTS[key] = build()
    return built
