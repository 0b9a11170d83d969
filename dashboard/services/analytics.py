"""Analytics: volume, speed, fill, on-time, competition, agencies, units and hospitals.

Every figure is aggregated in SQL by the silo that owns the data and combined
here; no trip is loaded into Python.  A request belongs to the local day it was
posted (the region's time zone), so a period is a run of local days.

Counts add up across days and across filters, so each *closed* day (in the past,
every request of it finished or cancelled) is aggregated once into *cells* kept in
the center silo: one row per day, hospital, awarded agency (0: none), level of
care and urgency (``analytics_cells``), plus completed trips and busy minutes per
unit (``analytics_unit_cells``) and bids per bidding agency (``analytics_bid_cells``,
not keyed by the winner), and the day itself in ``analytics_days``.  Any filter
combination of the page is then a sum over cells in SQL.  The relay's timer stores
the last few closed days as they close, ``flask medport rollup`` backfills older
ones, and a page that meets a closed day not stored yet computes and stages it.
Today, and a past day with a request still running, are computed live into cells
for the page's filters and summed in Python the same way.

A request that went unfilled (its deadline passed with no live bid) keeps ``unfilled_at``
after a later award, extension or re-opening, so it counts as *went unfilled* for good;
it *ended unfilled* when no agency holds it at the end (cell agency 0).  An agency's
*wins* are awards of its bids (``bid_awards``): a center assignment without a bid is an
award but not a win.

Medians and 90th percentiles do not add up, so they are computed over the whole
period each time: ``percentile_cont`` on PostgreSQL, ``ORDER BY ... LIMIT/OFFSET``
on SQLite (the same interpolation, so both agree).

Bids live in the EMS silo and carry no level of care or urgency, so bids are
counted per request by trip id, in chunks, when a day's cells are computed; only
ids and counts pass through Python, never whole trips.
"""
import math
import re
import threading
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from .. import server_timing
from ..extensions import db
from ..localtime import local_midnight, local_today, local_zone
from ..models.base import LEVELS, URGENCIES, utcnow
from ..models.center import (
    ANALYTICS_CELL_COUNTS,
    Agency,
    AnalyticsBidCell,
    AnalyticsCell,
    AnalyticsDay,
    AnalyticsUnitCell,
    Hospital,
)
from ..models.ems import TransportBid, Unit
from ..models.hospital import (
    CANCEL_REASONS,
    HospitalAgencyPreference,
    HospitalFacility,
    TransportRequest,
)
from . import csvout

PERIODS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom dates"}
PERIOD_DAYS = {"today": 1, "7d": 7, "30d": 30}
MAX_PERIOD_DAYS = 400
EARLIEST_DATE = date(2000, 1, 1)
#: How far past today a custom period may end.
MAX_FUTURE_DAYS = 366
UNFINISHED_STATUSES = ("open", "awarded", "en_route", "at_pickup", "transporting", "at_destination")
#: Late pickups by minutes after the window's end: (metric suffix, label, upper bound or None).
LATE_BUCKETS = (
    ("1-15", "1–15 min", 15),
    ("16-30", "16–30 min", 30),
    ("31-60", "31–60 min", 60),
    ("61-120", "61–120 min", 120),
    ("120+", "Over 120 min", None),
)
#: Requests by the number of bids they received; the last bucket is "or more".
BID_BUCKETS = ("0", "1", "2", "3", "4", "5+")
#: Trip ids sent to the EMS silo per query (SQLite caps bound parameters).
ID_CHUNK = {"sqlite": 900}
ID_CHUNK_DEFAULT = 20000
#: Bids are read by one id range when the range is at most this many times the ids asked for.
DENSE_IDS = 2


class AnalyticsInputError(ValueError):
    """A period or filter the page cannot show; ``errors`` maps field -> message."""

    def __init__(self, errors):
        super().__init__("; ".join(errors.values()))
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

    def without_agency(self):
        return Scope(self.hospital_id, None, self.level, self.urgency)


@dataclass(frozen=True)
class Period:
    """A run of local dates, ``start`` to ``end`` inclusive."""

    kind: str
    start: date
    end: date

    @property
    def days(self):
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    @property
    def label(self):
        if self.start == self.end:
            return f"{self.start:%a %d %b %Y}"
        return f"{self.start:%d %b %Y} – {self.end:%d %b %Y}"


def resolve_period(kind, start=None, end=None, today=None):
    """The period for a choice of ``PERIODS``; custom dates are checked (``AnalyticsInputError``)."""
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


# --- time: local days in SQL -------------------------------------------------------------

def zone_name():
    return current_app.config["MEDPORT_TIMEZONE"]


def _offset_minutes(zone, moment):
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
        self.dialect = dialect
        self.zone = zone_name()
        if not re.fullmatch(r"[A-Za-z0-9_+\-/]+", self.zone):
            raise ValueError("MEDPORT_TIMEZONE is not a time zone name")
        zone = ZoneInfo(self.zone)
        self.first_offset = _offset_minutes(zone, start_utc)
        self.changes = _transitions(zone, start_utc, end_utc)

    def local(self, column):
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
        if self.dialect == "postgresql":
            return sa.cast(self.local(column), sa.Date)
        return sa.func.date(self.local(column))

    def hour(self, column):
        if self.dialect == "postgresql":
            return sa.cast(sa.extract("hour", self.local(column)), sa.Integer)
        return sa.cast(sa.func.strftime("%H", self.local(column)), sa.Integer)


def _as_date(value):
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def dialect_of(silo):
    return db.engines[None if silo == "center" else silo].dialect.name


def minutes_between(dialect, later, earlier):
    """``later - earlier`` in minutes (NULL when either is NULL)."""
    if dialect == "postgresql":
        # date_part gives double precision (EXTRACT gives numeric: far slower to sort and sum).
        return sa.func.date_part("epoch", later - earlier) / 60.0
    return (sa.func.julianday(later) - sa.func.julianday(earlier)) * 1440.0


@dataclass
class PercentileQuery:
    """Percentiles of measure expressions (``{name: expr}``) over rows matching ``where``, per group."""

    measures: dict
    where: list
    group: object = None
    fractions: tuple = (0.5, 0.9)


def start_percentiles(silo, queries):
    """Start :class:`PercentileQuery` s; returns a function that waits for and returns their results.

    Each result is ``{group value: {name: {"n": count, fraction: value}}}``
    (``percentile_cont`` semantics, NULLs left out, group value ``None`` when
    ungrouped).  On PostgreSQL each query is one ``percentile_cont(ARRAY[...])
    WITHIN GROUP`` statement (one sort per measure) run at once on its own
    connection, so the caller's other queries overlap with them; on SQLite the
    ordered values are read with ``ORDER BY ... LIMIT/OFFSET`` when asked for.
    """
    if dialect_of(silo) != "postgresql":
        return lambda: [_sqlite_percentiles(query) for query in queries]
    engine = db.engines[None if silo == "center" else silo]

    def read(stmt):
        with engine.connect() as conn:
            return conn.execute(stmt).all()

    pool = ThreadPoolExecutor(max_workers=len(queries))
    futures = [pool.submit(server_timing.carry(read), _percentile_statement(query)) for query in queries]
    pool.shutdown(wait=False)  # the threads end when their statement has answered

    def results():
        return [_percentile_rows(query, future.result()) for query, future in zip(queries, futures, strict=True)]

    return results


def _percentile_statement(query):
    fractions = postgresql.array([sa.literal(f, sa.Float) for f in query.fractions])
    columns = []
    for expr in query.measures.values():
        columns += [sa.func.count(expr),
                    sa.func.percentile_cont(fractions, type_=postgresql.ARRAY(sa.Float)).within_group(expr)]
    stmt = sa.select(*([query.group] if query.group is not None else []), *columns).where(*query.where)
    return stmt.group_by(query.group) if query.group is not None else stmt


def _percentile_rows(query, rows):
    result = {}
    empty = [None] * len(query.fractions)
    for row in rows:
        key, values = (row[0], row[1:]) if query.group is not None else (None, row)
        result[key] = {
            name: {"n": values[2 * i], **dict(zip(query.fractions, values[2 * i + 1] or empty, strict=True))}
            for i, name in enumerate(query.measures)
        }
    return result


def _sqlite_percentiles(query):
    """Counts in one statement, then two ordered values per percentile (LIMIT 2 OFFSET k)."""
    group = query.group
    stmt = sa.select(*([group] if group is not None else []),
                     *[sa.func.count(expr) for expr in query.measures.values()]).where(*query.where)
    if group is not None:
        stmt = stmt.group_by(group)
    result = {}
    for row in db.session.execute(stmt).all():
        key, counts = (row[0], row[1:]) if group is not None else (None, row)
        entry = {}
        for (name, expr), n in zip(query.measures.items(), counts, strict=True):
            entry[name] = {"n": n}
            conditions = list(query.where) + [expr.isnot(None)]
            if group is not None:
                conditions.append(group == key)
            for f in query.fractions:
                entry[name][f] = _sqlite_percentile(expr, conditions, n, f)
        result[key] = entry
    return result


def _sqlite_percentile(expr, conditions, n, fraction):
    """Linear interpolation between the two ordered values around ``fraction * (n - 1)``."""
    if not n:
        return None
    position = fraction * (n - 1)
    low = math.floor(position)
    values = db.session.execute(
        sa.select(expr).where(*conditions).order_by(expr).limit(2).offset(low)
    ).scalars().all()
    if not values:
        return None
    if len(values) == 1 or position == low:
        return float(values[0])
    return float(values[0]) + (float(values[1]) - float(values[0])) * (position - low)


# --- the day aggregates (hospital and EMS), and their rollups -----------------------------

def _scope_conditions(scope, include_agency=True):
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


def _runs(days):
    """Consecutive runs of sorted dates, as (first, last) pairs."""
    runs = []
    for day in sorted(days):
        if runs and runs[-1][1] + timedelta(days=1) == day:
            runs[-1][1] = day
        else:
            runs.append([day, day])
    return [(first, last) for first, last in runs]


def _created_in(days):
    T = TransportRequest
    ranges = [sa.and_(T.created_at >= local_midnight(first), T.created_at < local_midnight(last + timedelta(days=1)))
              for first, last in _runs(days)]
    return ranges[0] if len(ranges) == 1 else sa.or_(*ranges)


# Cell columns (see AnalyticsCell) and the metric names the report reads from them.
LATE_COLUMNS = dict(zip((suffix for suffix, _label, _upper in LATE_BUCKETS),
                        ("late_1_15", "late_16_30", "late_31_60", "late_61_120", "late_over_120"), strict=True))
BID_COLUMNS = dict(zip(BID_BUCKETS[1:], ("bids_1", "bids_2", "bids_3", "bids_4", "bids_5_plus"), strict=True))
CELL_METRICS = {
    **{name: name for name in ("requests", "awarded", "unfilled", "cancelled", "handed_back", "pickups",
                               "inside", "early", "preferred_awards", "completed", "bids", "bid_awards")},
    **{column: "late:" + suffix for suffix, column in LATE_COLUMNS.items()},
    **{f"cancel_{reason}": f"cancel:{reason}" for reason in CANCEL_REASONS},
    **{column: "bids_trips:" + bucket for bucket, column in BID_COLUMNS.items()},
    **{f"hour_{h:02d}": f"hour:{h}" for h in range(24)},
}
assert set(CELL_METRICS) == set(ANALYTICS_CELL_COUNTS)
#: Past local days the relay's timer rolls up (older days: ``flask medport rollup``).
ROLLUP_TICK_DAYS = 7
ROLLUP_BATCH_DAYS = 7


@dataclass
class Cells:
    """Counts of some local days, per cell (day, hospital, awarded agency or 0, level, urgency).

    ``cells`` maps a cell to its counts (the columns of AnalyticsCell), ``units``
    a cell plus unit id to [completed trips, busy minutes], ``bids`` (day,
    hospital, level, urgency, bidding agency) to bids; ``unfinished`` counts the
    requests of each day still running.
    """

    cells: dict
    units: dict
    bids: dict
    unfinished: Counter

    def requests(self, day):
        return sum(counts["requests"] for key, counts in self.cells.items() if key[0] == day)


def compute_cells(days, scope=None):
    """Aggregate the given local days into cells, in SQL, from the hospital and EMS silos.

    ``scope``'s hospital, level and urgency narrow what is read (its agency does
    not: an agency's bids count on requests it did not win); without a scope the
    cells cover every request and can be stored.
    """
    T = TransportRequest
    scope = scope or Scope()
    dialect = dialect_of("hospital")
    clock = Clock(dialect, local_midnight(min(days)), local_midnight(max(days) + timedelta(days=1)))
    day = clock.day(T.created_at).label("day")
    agency = sa.func.coalesce(T.awarded_agency_id, 0)
    key = (day, T.hospital_id, agency, T.level_of_care, T.urgency)
    where = [_created_in(days), *_scope_conditions(scope, include_agency=False)]

    def count(*conditions):
        return sa.func.count(T.id).filter(*conditions)

    picked_up = T.at_pickup_at.isnot(None)
    completed = T.status == "completed"
    late = minutes_between(dialect, T.at_pickup_at, T.window_end)
    hour = clock.hour(T.created_at)
    preference = aliased(HospitalAgencyPreference)
    columns = {
        "requests": sa.func.count(T.id),
        "awarded": count(T.awarded_at.isnot(None)),
        # Went unfilled (kept after a later award, extension or re-opening: history).
        "unfilled": count(T.unfilled_at.isnot(None)),
        "cancelled": count(T.status == "cancelled"),
        "handed_back": count(T.handed_back_count > 0),
        "pickups": count(picked_up),
        "inside": count(picked_up, T.at_pickup_at >= T.window_start, T.at_pickup_at <= T.window_end),
        "early": count(picked_up, T.at_pickup_at < T.window_start),
        "preferred_awards": count(T.awarded_at.isnot(None), preference.id.isnot(None)),
        "completed": count(completed),
        # An agency's bid wins: a center assignment without a bid is not one.
        "bid_awards": count(T.awarded_at.isnot(None), T.awarded_bid_id.isnot(None)),
    }
    lower = 0
    for suffix, _label, upper in LATE_BUCKETS:
        bound = [late > lower] + ([late <= upper] if upper is not None else [])
        columns[LATE_COLUMNS[suffix]] = count(picked_up, T.at_pickup_at > T.window_end, *bound)
        lower = upper
    for reason in CANCEL_REASONS:
        columns[f"cancel_{reason}"] = count(T.status == "cancelled", T.cancel_reason == reason)
    # Grouped by the hour too (the local time is converted once per row, not once per hour),
    # then folded into the cell's hour_00 ... hour_23.
    stmt = (
        sa.select(*key, hour, count(T.status.in_(UNFINISHED_STATUSES)), *columns.values())
        .select_from(T)
        .outerjoin(preference, sa.and_(preference.hospital_id == T.hospital_id,
                                       preference.agency_id == T.awarded_agency_id))
        .where(*where).group_by(*key, hour)
    )
    empty = dict.fromkeys(ANALYTICS_CELL_COUNTS, 0)
    cells, unfinished = {}, Counter()
    for row in db.session.execute(stmt):
        cell = (_as_date(row[0]), *row[1:5])
        unfinished[cell[0]] += row[6]
        counts = cells.get(cell)
        if counts is None:
            counts = cells[cell] = dict(empty)
        for name, value in zip(columns, row[7:], strict=True):
            counts[name] += value
        counts[f"hour_{int(row[5]):02d}"] += row[7]

    units = {}
    stmt = (
        sa.select(*key, T.awarded_unit_id, sa.func.count(T.id),
                  sa.func.sum(minutes_between(dialect, T.completed_at, T.awarded_at)))
        .where(*where, completed, T.awarded_unit_id.isnot(None))
        .group_by(*key, T.awarded_unit_id)
    )
    for row in db.session.execute(stmt):
        units[(_as_date(row[0]), *row[1:6])] = [row[6], float(row[7] or 0.0)]

    bids = _bid_cells(db.session.execute(sa.select(T.id, *key).where(*where)), cells)
    return Cells(cells, units, bids, unfinished)


def _bid_cells(trips, cells):
    """Count the bids on ``trips`` ((id, *cell) rows) in the EMS silo, by trip id in chunks.

    Adds each request's bids to its cell (``bids`` and the per-request bucket) and
    returns {(day, hospital, level, urgency, bidding agency): bids}.
    """
    where = {}
    for trip_id, row_day, hospital_id, agency_id, level, urgency in trips:
        where[trip_id] = (_as_date(row_day), hospital_id, agency_id, level, urgency)
    ids = sorted(where)
    chunk = ID_CHUNK.get(dialect_of("ems"), ID_CHUNK_DEFAULT)
    B = TransportBid
    if ids and ids[-1] - ids[0] < DENSE_IDS * len(ids):
        # Ids are handed out in posting order, so a run of days is (nearly) one id range:
        # one range scan, and the few bids of requests outside the set are skipped below.
        ranges = [B.trip_id.between(ids[0], ids[-1])]
    else:
        ranges = [B.trip_id.in_(ids[start:start + chunk]) for start in range(0, len(ids), chunk)]
    per_trip, bids = Counter(), Counter()
    for condition in ranges:
        stmt = (sa.select(B.trip_id, B.agency_id, sa.func.count(B.id))
                .where(condition).group_by(B.trip_id, B.agency_id))
        for trip_id, agency_id, amount in db.session.execute(stmt):
            if trip_id not in where:
                continue
            per_trip[trip_id] += amount
            row_day, hospital_id, _awarded, level, urgency = where[trip_id]
            bids[row_day, hospital_id, level, urgency, agency_id] += amount
    for trip_id, amount in per_trip.items():
        counts = cells[where[trip_id]]
        counts["bids"] += amount
        counts[BID_COLUMNS["5+" if amount >= 5 else str(amount)]] += 1
    return dict(bids)


def _matches(scope, hospital_id, agency_id, level, urgency):
    return ((scope.hospital_id is None or hospital_id == scope.hospital_id)
            and (scope.agency_id is None or agency_id == scope.agency_id)
            and (scope.level is None or level == scope.level)
            and (scope.urgency is None or urgency == scope.urgency))


def _add(counter, metric, value):
    if value:
        counter[metric] += value


def cell_metrics(cells, days, scope):
    """{day: Counter} of ``scope`` for ``days``, summed from computed :class:`Cells` in Python."""
    days = set(days)
    metrics = defaultdict(Counter)
    for (row_day, hospital_id, agency_id, level, urgency), counts in cells.cells.items():
        if row_day not in days or not _matches(scope, hospital_id, agency_id, level, urgency):
            continue
        target = metrics[row_day]
        for column, metric in CELL_METRICS.items():
            _add(target, metric, counts[column])
        _add(target, f"level:{level}", counts["requests"])
        _add(target, f"urgency:{urgency}", counts["requests"])
        _add(target, f"hospital_requests:{hospital_id}", counts["requests"])
        _add(target, f"hospital_unfilled:{hospital_id}", counts["unfilled"])
        if not agency_id:  # no agency at the end: those that went unfilled ended unfilled
            _add(target, "ended_unfilled", counts["unfilled"])
        if agency_id:
            _add(target, f"agency_wins:{agency_id}", counts["bid_awards"])
            _add(target, f"agency_completed:{agency_id}", counts["completed"])
    for (row_day, hospital_id, agency_id, level, urgency, unit_id), (trips, busy) in cells.units.items():
        if row_day in days and _matches(scope, hospital_id, agency_id, level, urgency):
            _add(metrics[row_day], f"unit_trips:{unit_id}", trips)
            _add(metrics[row_day], f"unit_busy_min:{unit_id}", busy)
    for (row_day, hospital_id, level, urgency, agency_id), amount in cells.bids.items():
        if row_day in days and _matches(scope, hospital_id, scope.agency_id and agency_id, level, urgency):
            _add(metrics[row_day], f"agency_bids:{agency_id}", amount)
    return metrics


def store_cells(cells, days, now=None):
    """Stage the cells of closed ``days`` in the center silo; returns the days this call stored.

    Each day is claimed by inserting its AnalyticsDay row first: a day another
    transaction stored already is skipped, so nothing doubles (the caller commits).
    """
    if not days:
        return []
    now = now or utcnow()
    insert = postgresql.insert if dialect_of("center") == "postgresql" else sqlite.insert
    claimed = set(db.session.scalars(
        insert(AnalyticsDay.__table__).values(
            [dict(day=d, requests=cells.requests(d), computed_at=now) for d in days]
        ).on_conflict_do_nothing().returning(AnalyticsDay.__table__.c.day)
    ))
    rows = [dict(zip(("day", "hospital_id", "agency_id", "level_of_care", "urgency"), key, strict=True), **counts)
            for key, counts in cells.cells.items() if key[0] in claimed]
    units = [dict(day=key[0], hospital_id=key[1], agency_id=key[2], level_of_care=key[3], urgency=key[4],
                  unit_id=key[5], trips=trips, busy_minutes=busy)
             for key, (trips, busy) in cells.units.items() if key[0] in claimed]
    bids = [dict(day=key[0], hospital_id=key[1], level_of_care=key[2], urgency=key[3], agency_id=key[4],
                 bids=amount) for key, amount in cells.bids.items() if key[0] in claimed]
    for table, values in ((AnalyticsCell.__table__, rows), (AnalyticsUnitCell.__table__, units),
                          (AnalyticsBidCell.__table__, bids)):
        for start in range(0, len(values), 5000):
            db.session.execute(sa.insert(table), values[start:start + 5000])
    return sorted(claimed)


def stored_metrics(days, scope):
    """Per-day counts and period-wide breakdowns of ``scope`` over stored ``days``, summed in SQL.

    Returns ``({day: Counter}, Counter)``: the day-by-day figures, and the
    breakdowns by hospital, agency and unit over all of ``days``.
    """
    per_day, overall = defaultdict(Counter), Counter()
    if not days:
        return per_day, overall
    C, U, B = AnalyticsCell.__table__.c, AnalyticsUnitCell.__table__.c, AnalyticsBidCell.__table__.c

    def where(columns, include_agency=True):
        runs = [sa.and_(columns.day >= first, columns.day <= last) for first, last in _runs(days)]
        conditions = [runs[0] if len(runs) == 1 else sa.or_(*runs)]
        for name in ("hospital_id", "agency_id", "level_of_care", "urgency"):
            value = getattr(scope, {"level_of_care": "level"}.get(name, name))
            if value is not None and (include_agency or name != "agency_id"):
                conditions.append(columns[name] == value)
        return conditions

    names = list(CELL_METRICS)
    ended_unfilled = sa.func.sum(sa.case((C.agency_id == 0, C.unfilled), else_=0))
    stmt = (sa.select(C.day, ended_unfilled, *[sa.func.sum(C[name]) for name in names])
            .where(*where(C)).group_by(C.day))
    for row in db.session.execute(stmt):
        target = per_day[_as_date(row[0])]
        _add(target, "ended_unfilled", row[1])
        for name, value in zip(names, row[2:], strict=True):
            _add(target, CELL_METRICS[name], value)

    def part(prefixes, group, amounts, columns, *conditions, by_day=False, include_agency=True):
        """One GROUP BY giving two metrics (``prefixes``) summed from two columns (``amounts``)."""
        keys = ([columns.day] if by_day else [])
        return (sa.select(sa.literal_column(f"'{prefixes}'").label("prefixes"),
                          (columns.day if by_day else sa.null()).label("day"),
                          sa.cast(group, sa.String).label("key"),
                          *[sa.cast(sa.func.sum(amount), sa.Float) for amount in amounts])
                .where(*where(columns, include_agency), *conditions).group_by(*keys, group))

    parts = [
        part("level,", C.level_of_care, (C.requests, sa.literal(0)), C, by_day=True),
        part("urgency,", C.urgency, (C.requests, sa.literal(0)), C, by_day=True),
        part("hospital_requests,hospital_unfilled", C.hospital_id, (C.requests, C.unfilled), C),
        part("agency_wins,agency_completed", C.agency_id, (C.bid_awards, C.completed), C, C.agency_id != 0),
        part("unit_trips,unit_busy_min", U.unit_id, (U.trips, U.busy_minutes), U),
        part("agency_bids,", B.agency_id, (B.bids, sa.literal(0)), B,
             *([B.agency_id == scope.agency_id] if scope.agency_id is not None else []), include_agency=False),
    ]
    center = db.engines[None]  # a UNION names no table the session could route by
    for prefixes, row_day, key, *amounts in db.session.execute(sa.union_all(*parts),
                                                                bind_arguments={"bind": center}):
        if key is None:
            continue
        target = per_day[_as_date(row_day)] if row_day is not None else overall
        for prefix, amount in zip(prefixes.split(","), amounts, strict=True):
            if prefix and amount:
                _add(target, f"{prefix}:{key}", int(amount) if prefix == "unit_trips" else amount)
    return per_day, overall


def _closed_candidates(days, now):
    """Those of ``days`` that are past (before today) and not stored yet.

    Today is the earlier of ``now``'s and the clock's: a ``now`` stepped ahead
    (tests of the timer) never stores a day still open in fact.
    """
    today = min(local_today(now), local_today())
    past = [d for d in days if d < today]
    if not past:
        return []
    stored = set(db.session.scalars(
        sa.select(AnalyticsDay.day).where(AnalyticsDay.day >= min(past), AnalyticsDay.day <= max(past))))
    return [d for d in past if d not in stored]


def roll_up(now=None, days_back=ROLLUP_TICK_DAYS, batch_days=ROLLUP_BATCH_DAYS, progress=None):
    """Store the cells of every closed day among the last ``days_back`` local days not stored yet.

    Run by the relay's timer (the last few days) and ``flask medport rollup``
    (backfill).  A day still running a request stays open and is tried again
    later.  Commits after each batch of days; returns how many days it stored.
    """
    now = now or utcnow()
    today = local_today(now)
    candidates = _closed_candidates([today - timedelta(days=i) for i in range(days_back, 0, -1)], now)
    stored = 0
    for start in range(0, len(candidates), batch_days):
        batch = candidates[start:start + batch_days]
        cells = compute_cells(batch)
        stored += len(store_cells(cells, [d for d in batch if not cells.unfinished.get(d)], now))
        db.session.commit()
        if progress is not None:
            progress(len(batch))
    return stored


def _meanwhile(work):
    """Start ``work()``; returns a function that waits for and returns its result.

    On PostgreSQL it runs on a thread with its own app context (so its own
    session and connections) while the caller goes on; on SQLite it runs when
    asked for, in the caller's session.
    """
    if dialect_of("hospital") != "postgresql":
        return work
    app = current_app._get_current_object()
    outcome = {}

    def run():
        with app.app_context():
            try:
                outcome["value"] = work()
            except Exception as exc:  # handed to the caller, raised there
                outcome["error"] = exc
            finally:
                db.session.remove()

    thread = threading.Thread(target=server_timing.carry(run), name="analytics-today", daemon=True)
    thread.start()

    def result():
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    return result


def day_metrics(period, scope, now=None):
    """The period's counts for ``scope``: ``({day: Counter} for every day, period-wide Counter)``.

    Closed days come from the stored cells (summed in SQL); a closed day not
    stored yet is computed for every scope at once and staged (the caller
    commits; a concurrent page that stored it first wins, nothing doubles).
    Today, and a past day with a request still running, are computed live for
    the scope.
    """
    now = now or utcnow()
    today = local_today(now)
    reachable = [d for d in period.days if local_midnight(d) < now]
    missing = set(_closed_candidates(reachable, now))
    live = defaultdict(Counter)
    if missing:
        cells = compute_cells(sorted(missing))
        closed = [d for d in sorted(missing) if not cells.unfinished.get(d)]
        store_cells(cells, closed, now)
        running = missing - set(closed)
        live.update(cell_metrics(cells, running, scope))
        missing = running
    current = [d for d in reachable if d >= today]
    today_metrics = None
    if current:  # today reads the hospital and EMS silos while the stored cells are summed
        today_metrics = _meanwhile(lambda: cell_metrics(compute_cells(current, scope), current, scope))
    done = [d for d in reachable if d < today and d not in missing]
    per_day, overall = stored_metrics(done, scope)
    if today_metrics is not None:
        live.update(today_metrics())
    for d, counts in live.items():
        per_day[d] = counts
    result = {d: per_day.get(d, Counter()) for d in period.days}
    return result, overall


# --- the report --------------------------------------------------------------------------

def _share(part, whole):
    return round(100.0 * part / whole, 1) if whole else None


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def _period_bounds(period, now):
    """UTC bounds of the period, the end capped at ``now`` (for shift time)."""
    return local_midnight(period.start), min(local_midnight(period.end + timedelta(days=1)), now)


def _shift_minutes(shift_start, shift_end, period, now):
    """Minutes a daily shift covers inside the period (up to now)."""
    zone = local_zone()
    start_utc, end_utc = _period_bounds(period, now)
    if end_utc <= start_utc:
        return 0.0
    total = 0.0
    length = (datetime.combine(date.min, shift_end) - datetime.combine(date.min, shift_start))
    if length <= timedelta(0):
        length += timedelta(days=1)
    for day in [period.start - timedelta(days=1)] + period.days:
        begin = datetime.combine(day, shift_start).replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)
        finish = begin + length
        overlap = (min(finish, end_utc) - max(begin, start_utc)).total_seconds() / 60
        if overlap > 0:
            total += overlap
    return total


def report(period, scope, now=None):
    """Every figure of the analytics page for ``period`` and ``scope``, as plain data."""
    now = now or utcnow()
    T = TransportRequest
    dialect = dialect_of("hospital")
    where = [T.created_at >= local_midnight(period.start),
             T.created_at < local_midnight(period.end + timedelta(days=1)), *_scope_conditions(scope)]
    # Speeds count from when bidding opened: posting, or the opening of a request booked ahead.
    bidding_start = sa.func.coalesce(T.bidding_opens_at, T.created_at)
    pending = start_percentiles("hospital", [
        PercentileQuery({
            "first_bid": minutes_between(dialect, T.first_bid_at, bidding_start),
            "award": minutes_between(dialect, T.awarded_at, bidding_start),
            "pickup": minutes_between(dialect, T.at_pickup_at, T.awarded_at),
        }, where),
        PercentileQuery({
            "eta": T.awarded_eta_minutes,
            "actual": minutes_between(dialect, T.at_pickup_at, T.awarded_at),
        }, where + [T.awarded_agency_id.isnot(None), T.at_pickup_at.isnot(None), T.awarded_at.isnot(None)],
            group=T.awarded_agency_id, fractions=(0.5,)),
        PercentileQuery({"award": minutes_between(dialect, T.awarded_at, bidding_start)},
                        where + [T.awarded_at.isnot(None)], group=T.hospital_id, fractions=(0.5,)),
    ])
    per_day, total = day_metrics(period, scope, now)
    total = Counter(total)
    for counts in per_day.values():
        total.update(counts)
    hospitals = {h.id: h for h in db.session.execute(sa.select(Hospital)).scalars()}
    agencies = {a.id: a for a in db.session.execute(sa.select(Agency)).scalars()}
    speed, by_agency, by_hospital = pending()
    speed = speed.get(None, {})
    requests = int(total["requests"])
    return {
        "period": period,
        "scope": scope,
        "requests": requests,
        "volume": _volume(period, per_day, total),
        "speed": _speed(speed),
        "fill": _fill(total, requests),
        "on_time": _on_time(total),
        "daily_rates": [
            {"day": d, "requests": int(per_day[d]["requests"]),
             "awarded_share": _share(per_day[d]["awarded"], per_day[d]["requests"]),
             "on_time_share": _share(per_day[d]["inside"], per_day[d]["pickups"])}
            for d in period.days
        ],
        "competition": _competition(total, requests),
        "agencies": _agencies(total, by_agency, agencies, scope),
        "units": _units(total, period, scope, now, agencies),
        "hospitals": _hospitals(total, by_hospital, hospitals, scope),
    }


def _volume(period, per_day, total):
    return {
        "by_day": [
            {"day": d, "total": int(per_day[d]["requests"]),
             "levels": {lv: int(per_day[d][f"level:{lv}"]) for lv in LEVELS},
             "urgencies": {u: int(per_day[d][f"urgency:{u}"]) for u in URGENCIES}}
            for d in period.days
        ],
        "by_hour": [int(total[f"hour:{h}"]) for h in range(24)],
        "by_level": {lv: int(total[f"level:{lv}"]) for lv in LEVELS},
        "by_urgency": {u: int(total[f"urgency:{u}"]) for u in URGENCIES},
    }


SPEED_LABELS = {
    "first_bid": "Time to first bid (bidding opened → first bid)",
    "award": "Time to award (bidding opened → awarded)",
    "pickup": "Award to pickup (awarded → crew at pickup)",
}


def _speed(speed):
    return [
        {"key": key, "label": label, "n": int(speed.get(key, {}).get("n") or 0),
         "p50": _round(speed.get(key, {}).get(0.5)), "p90": _round(speed.get(key, {}).get(0.9))}
        for key, label in SPEED_LABELS.items()
    ]


def _fill(total, requests):
    cancelled = int(total["cancelled"])
    reasons = [
        {"key": key, "label": label, "count": int(total[f"cancel:{key}"]),
         "share": _share(total[f"cancel:{key}"], cancelled)}
        for key, label in CANCEL_REASONS.items()
    ]
    known = sum(r["count"] for r in reasons)
    if cancelled > known:
        reasons.append({"key": "unknown", "label": "Not recorded", "count": cancelled - known,
                        "share": _share(cancelled - known, cancelled)})
    outcomes = [
        {"key": key, "label": label, "count": int(total[key]), "share": _share(total[key], requests)}
        for key, label in (("awarded", "Awarded"),
                           ("unfilled", "Went unfilled (deadline passed, no live bid)"),
                           ("ended_unfilled", "Ended unfilled (never taken by an agency)"),
                           ("cancelled", "Cancelled"), ("handed_back", "Handed back by an agency"))
    ]
    return {"outcomes": outcomes, "reasons": reasons, "cancelled": cancelled}


def _on_time(total):
    pickups = int(total["pickups"])
    inside, early = int(total["inside"]), int(total["early"])
    late = pickups - inside - early
    buckets = [{"key": key, "label": label, "count": int(total["late:" + key])}
               for key, label, _upper in LATE_BUCKETS]
    return {
        "pickups": pickups,
        "rows": [
            {"key": "inside", "label": "Inside the requested window", "count": inside,
             "share": _share(inside, pickups)},
            {"key": "early", "label": "Before the window", "count": early, "share": _share(early, pickups)},
            {"key": "late", "label": "After the window", "count": late, "share": _share(late, pickups)},
        ],
        "share": _share(inside, pickups),
        "late_buckets": buckets,
    }


def _competition(total, requests):
    with_bids = {b: int(total["bids_trips:" + b]) for b in BID_BUCKETS[1:]}
    distribution = [{"label": "0", "count": max(requests - sum(with_bids.values()), 0)}]
    distribution += [{"label": b, "count": with_bids[b]} for b in BID_BUCKETS[1:]]
    bids, awarded = int(total["bids"]), int(total["awarded"])
    return {
        "bids": bids,
        "requests": requests,
        "per_request": round(bids / requests, 2) if requests else None,
        "distribution": distribution,
        "awarded": awarded,
        "preferred_awards": int(total["preferred_awards"]),
        "preferred_share": _share(total["preferred_awards"], awarded),
    }


def _ids_with(total, prefix):
    ids = set()
    for metric in total:
        name, _, value = metric.partition(":")
        if name == prefix and value.isdigit():
            ids.add(int(value))
    return ids


def _agencies(total, by_agency, agencies, scope):
    ids = _ids_with(total, "agency_bids") | _ids_with(total, "agency_wins") | set(by_agency)
    if scope.agency_id is not None:
        ids = {scope.agency_id}
    rows = []
    for agency_id in ids:
        agency = agencies.get(agency_id)
        bids, wins = int(total[f"agency_bids:{agency_id}"]), int(total[f"agency_wins:{agency_id}"])
        timing = by_agency.get(agency_id, {})
        rows.append({
            "id": agency_id,
            "name": agency.name if agency else f"Agency #{agency_id}",
            "code": agency.short_code if agency else "",
            "bids": bids, "wins": wins, "win_rate": _share(wins, bids),
            "eta_p50": _round(timing.get("eta", {}).get(0.5)),
            "actual_p50": _round(timing.get("actual", {}).get(0.5)),
            "arrivals": int(timing.get("eta", {}).get("n") or 0),
            "completed": int(total[f"agency_completed:{agency_id}"]),
        })
    return sorted(rows, key=lambda r: (-r["wins"], -r["bids"], r["name"]))


def _units(total, period, scope, now, agencies):
    stmt = sa.select(Unit.id, Unit.agency_id, Unit.number, Unit.level, Unit.shift_start,
                     Unit.shift_end, Unit.active)
    if scope.agency_id is not None:
        stmt = stmt.where(Unit.agency_id == scope.agency_id)
    busy_ids = _ids_with(total, "unit_busy_min")
    shift_cache = {}
    rows = []
    for unit_id, agency_id, number, level, shift_start, shift_end, active in db.session.execute(stmt):
        if not active and unit_id not in busy_ids:
            continue
        shift = None
        if shift_start is not None and shift_end is not None:
            if (shift_start, shift_end) not in shift_cache:
                shift_cache[shift_start, shift_end] = _shift_minutes(shift_start, shift_end, period, now)
            shift = shift_cache[shift_start, shift_end]
        busy = float(total[f"unit_busy_min:{unit_id}"])
        agency = agencies.get(agency_id)
        rows.append({
            "id": unit_id, "label": f"{number} ({level})", "level": level,
            "agency": agency.short_code if agency else str(agency_id),
            "busy_h": round(busy / 60, 1), "shift_h": None if shift is None else round(shift / 60, 1),
            "utilisation": _share(busy, shift) if shift else None,
            "trips": int(total[f"unit_trips:{unit_id}"]),
        })
    return sorted(rows, key=lambda r: (-(r["utilisation"] or 0), r["agency"], r["label"]))


def _hospitals(total, by_hospital, hospitals, scope):
    ids = _ids_with(total, "hospital_requests")
    if scope.hospital_id is not None:
        ids = {scope.hospital_id}
    rows = []
    for hospital_id in ids:
        hospital = hospitals.get(hospital_id)
        requests = int(total[f"hospital_requests:{hospital_id}"])
        unfilled = int(total[f"hospital_unfilled:{hospital_id}"])
        rows.append({
            "id": hospital_id,
            "name": hospital.name if hospital else f"Hospital #{hospital_id}",
            "code": hospital.short_code if hospital else "",
            "requests": requests,
            "award_p50": _round(by_hospital.get(hospital_id, {}).get("award", {}).get(0.5)),
            "unfilled": unfilled, "unfilled_share": _share(unfilled, requests),
        })
    return sorted(rows, key=lambda r: (-r["requests"], r["name"]))


# --- tables: what the page shows, the CSV exports, and the charts ------------------------

@dataclass
class Table:
    """One table of numbers: the page renders it, the CSV export writes it."""

    name: str
    title: str
    columns: list  # [(label, kind)] kind: text, int, num, pct
    rows: list


TABLE_NAMES = ("volume_by_day", "volume_by_hour", "speed", "fill", "cancel_reasons", "on_time",
               "late_minutes", "daily_rates", "bids_per_request", "competition", "agencies", "units",
               "hospitals")


def table_names(include_units=True):
    """The names of the exportable tables, in page order."""
    return tuple(name for name in TABLE_NAMES if include_units or name != "units")


def tables(data, include_units=True):
    """The page's tables in order, built from :func:`report` data."""
    volume = data["volume"]
    result = [
        Table("volume_by_day", "Requests per day",
              [("Day", "text"), ("Requests", "int")] + [(lv, "int") for lv in LEVELS]
              + [(label, "int") for label in URGENCIES.values()],
              [[row["day"].isoformat(), row["total"], *row["levels"].values(), *row["urgencies"].values()]
               for row in volume["by_day"]]),
        Table("volume_by_hour", "Requests by hour of day (local time)",
              [("Hour", "text"), ("Requests", "int")],
              [[f"{h:02d}:00", n] for h, n in enumerate(volume["by_hour"])]),
        Table("speed", "Speed (minutes)",
              [("Measure", "text"), ("Requests measured", "int"), ("Median (min)", "num"),
               ("90th percentile (min)", "num")],
              [[s["label"], s["n"], s["p50"], s["p90"]] for s in data["speed"]]),
        Table("fill", "How requests ended up",
              [("Outcome", "text"), ("Requests", "int"), ("Share of requests (%)", "pct")],
              [[o["label"], o["count"], o["share"]] for o in data["fill"]["outcomes"]]),
        Table("cancel_reasons", "Cancellations by reason",
              [("Reason", "text"), ("Cancelled", "int"), ("Share of cancellations (%)", "pct")],
              [[r["label"], r["count"], r["share"]] for r in data["fill"]["reasons"]]),
        Table("on_time", "Pickups against the requested window",
              [("Pickup", "text"), ("Pickups", "int"), ("Share of pickups (%)", "pct")],
              [[r["label"], r["count"], r["share"]] for r in data["on_time"]["rows"]]),
        Table("late_minutes", "Late pickups by minutes after the window",
              [("Late by", "text"), ("Pickups", "int")],
              [[b["label"], b["count"]] for b in data["on_time"]["late_buckets"]]),
        Table("daily_rates", "Awarded and on-time share per day",
              [("Day", "text"), ("Requests", "int"), ("Awarded (%)", "pct"), ("On time (%)", "pct")],
              [[r["day"].isoformat(), r["requests"], r["awarded_share"], r["on_time_share"]]
               for r in data["daily_rates"]]),
        Table("bids_per_request", "Requests by number of bids received",
              [("Bids received", "text"), ("Requests", "int")],
              [[b["label"], b["count"]] for b in data["competition"]["distribution"]]),
        Table("competition", "Competition",
              [("Measure", "text"), ("Value", "num")],
              [["Bids", data["competition"]["bids"]],
               ["Requests", data["competition"]["requests"]],
               ["Bids per request", data["competition"]["per_request"]],
               ["Awarded requests", data["competition"]["awarded"]],
               ["Awarded to a preferred agency", data["competition"]["preferred_awards"]],
               ["Share awarded to a preferred agency (%)", data["competition"]["preferred_share"]]]),
        Table("agencies", "Agencies",
              [("Agency", "text"), ("Bids", "int"), ("Wins", "int"), ("Win rate (%)", "pct"),
               ("Median ETA promised (min)", "num"), ("Median actual arrival (min)", "num"),
               ("Arrivals measured", "int"), ("Completed trips", "int")],
              [[a["name"], a["bids"], a["wins"], a["win_rate"], a["eta_p50"], a["actual_p50"],
                a["arrivals"], a["completed"]] for a in data["agencies"]]),
    ]
    if include_units:
        result.append(Table(
            "units", "Unit utilisation (busy: award to completion; shift: the unit's daily shift)",
            [("Unit", "text"), ("Agency", "text"), ("Busy (h)", "num"), ("On shift (h)", "num"),
             ("Utilisation (%)", "pct"), ("Completed trips", "int")],
            [[u["label"], u["agency"], u["busy_h"], u["shift_h"], u["utilisation"], u["trips"]]
             for u in data["units"]]))
    result.append(Table(
        "hospitals", "Hospitals",
        [("Hospital", "text"), ("Requests", "int"), ("Median time to award (min)", "num"),
         ("Unfilled", "int"), ("Unfilled share (%)", "pct")],
        [[h["name"], h["requests"], h["award_p50"], h["unfilled"], h["unfilled_share"]]
         for h in data["hospitals"]]))
    return result


def charts(data):
    """Chart specifications for static/analytics.js, drawn from the same numbers as the tables."""
    volume = data["volume"]
    days = [row["day"].strftime("%d %b") for row in volume["by_day"]]
    return [
        {"id": "volume_level", "table": "volume_by_day", "type": "bar", "stacked": True,
         "title": "Requests per day by level of care", "labels": days, "y": "Requests",
         "datasets": [{"label": lv, "data": [row["levels"][lv] for row in volume["by_day"]]}
                      for lv in LEVELS]},
        {"id": "volume_urgency", "table": "volume_by_day", "type": "bar", "stacked": True,
         "title": "Requests per day by urgency", "labels": days, "y": "Requests",
         "datasets": [{"label": label, "data": [row["urgencies"][u] for row in volume["by_day"]]}
                      for u, label in URGENCIES.items()]},
        {"id": "volume_hour", "table": "volume_by_hour", "type": "bar", "stacked": False,
         "title": "Requests by hour of day", "labels": [f"{h:02d}" for h in range(24)], "y": "Requests",
         "datasets": [{"label": "Requests", "data": volume["by_hour"]}]},
        {"id": "speed", "table": "speed", "type": "bar", "stacked": False,
         "title": "Speed: median and 90th percentile (minutes)",
         "labels": ["Time to first bid", "Time to award", "Award to pickup"], "y": "Minutes",
         "datasets": [{"label": "Median", "data": [s["p50"] for s in data["speed"]]},
                      {"label": "90th percentile", "data": [s["p90"] for s in data["speed"]]}]},
        {"id": "daily_rates", "table": "daily_rates", "type": "line", "stacked": False,
         "title": "Awarded and on-time share per day (%)", "labels": days, "y": "%",
         "datasets": [{"label": "Awarded", "data": [r["awarded_share"] for r in data["daily_rates"]]},
                      {"label": "On time", "data": [r["on_time_share"] for r in data["daily_rates"]]}]},
        {"id": "late_minutes", "table": "late_minutes", "type": "bar", "stacked": False,
         "title": "Late pickups by minutes after the window",
         "labels": [b["label"] for b in data["on_time"]["late_buckets"]], "y": "Pickups",
         "datasets": [{"label": "Pickups", "data": [b["count"] for b in data["on_time"]["late_buckets"]]}]},
        {"id": "bids_per_request", "table": "bids_per_request", "type": "bar", "stacked": False,
         "title": "Requests by number of bids received",
         "labels": [b["label"] for b in data["competition"]["distribution"]], "y": "Requests",
         "datasets": [{"label": "Requests",
                       "data": [b["count"] for b in data["competition"]["distribution"]]}]},
        {"id": "agencies", "table": "agencies", "type": "bar", "stacked": False,
         "title": "Bids and wins per agency",
         "labels": [a["code"] or a["name"] for a in data["agencies"]], "y": "Count",
         "datasets": [{"label": "Bids", "data": [a["bids"] for a in data["agencies"]]},
                      {"label": "Wins", "data": [a["wins"] for a in data["agencies"]]}]},
    ]


def csv_text(table):
    """One table as CSV text (BOM, header row first), through :mod:`.csvout`."""
    return csvout.text([label for label, _kind in table.columns], table.rows)


# --- trips export: streamed, operational columns only ----------------------------------------

TRIP_COLUMNS = (
    "reference", "hospital", "status", "level_of_care", "urgency", "origin_facility",
    "destination_facility", "posted_at", "window_start", "window_end", "bid_deadline",
    "first_bid_at", "awarded_at", "award_source", "awarded_agency", "awarded_unit",
    "awarded_eta_minutes", "en_route_at", "at_pickup_at", "transporting_at", "completed_at",
    "cancelled_at", "cancel_reason", "unfilled_at", "handed_back_count",
)
_TIME_COLUMNS = {"posted_at", "window_start", "window_end", "bid_deadline", "first_bid_at",
                 "awarded_at", "en_route_at", "at_pickup_at", "transporting_at", "completed_at",
                 "cancelled_at", "unfilled_at"}


def _local_formatter(zone):
    """``YYYY-MM-DD HH:MM`` local text of a naive-UTC datetime; the UTC offset is looked up once per hour."""
    offsets = {}

    def local_text(value):
        hour = (value.year, value.month, value.day, value.hour)
        offset = offsets.get(hour)
        if offset is None:
            offset = offsets[hour] = value.replace(tzinfo=UTC).astimezone(zone).utcoffset()
        return (value + offset).isoformat(" ", "minutes")

    return local_text


def trips_csv(period, scope, batch=1000):
    """The period's trips as CSV text pieces (BOM and header first, :func:`.csvout.stream`),
    read ``batch`` rows at a time from a server-side cursor as the pieces are taken.

    No patient reference, needs, notes or addresses: operational columns only,
    times in the region's local time.
    """
    T = TransportRequest
    origin, destination = aliased(HospitalFacility), aliased(HospitalFacility)
    hospitals = dict(db.session.execute(sa.select(Hospital.id, Hospital.short_code)).all())
    agencies = dict(db.session.execute(sa.select(Agency.id, Agency.short_code)).all())
    stmt = (
        sa.select(T.reference, T.hospital_id, T.status, T.level_of_care, T.urgency, origin.name,
                  destination.name, T.created_at, T.window_start, T.window_end, T.bid_deadline,
                  T.first_bid_at, T.awarded_at, T.award_source, T.awarded_agency_id,
                  T.awarded_unit_label, T.awarded_eta_minutes, T.en_route_at, T.at_pickup_at,
                  T.transporting_at, T.completed_at, T.cancelled_at, T.cancel_reason,
                  T.unfilled_at, T.handed_back_count)
        .join(origin, origin.id == T.origin_facility_id)
        .outerjoin(destination, destination.id == T.destination_facility_id)
        .where(T.created_at >= local_midnight(period.start),
               T.created_at < local_midnight(period.end + timedelta(days=1)), *_scope_conditions(scope))
        .order_by(T.created_at, T.id)
    )
    local_text = _local_formatter(local_zone())
    time_positions = [i for i, name in enumerate(TRIP_COLUMNS) if name in _TIME_COLUMNS]

    def rows():
        result = db.session.execute(stmt, execution_options={"yield_per": batch})
        for partition in result.partitions():
            for row in partition:
                values = list(row)
                values[1] = hospitals.get(values[1], values[1])
                values[14] = agencies.get(values[14], values[14]) if values[14] is not None else None
                for i in time_positions:
                    if values[i] is not None:
                        values[i] = local_text(values[i])
                yield values

    return csvout.stream(TRIP_COLUMNS, rows())
