"""Analytics: volume, speed, fill, on-time, competition, agencies, units and hospitals.

Every figure is aggregated in SQL by the silo that owns the data and combined
here; no trip is loaded into Python.  A request belongs to the local day it was
posted (the region's time zone), so a period is a run of local days.

Counts add up across days, so each *closed* day (in the past, every request of it
finished or cancelled) is computed once per filter scope and kept in the center's
``system_analytics`` table (``period_kind='day'``, ``dimension`` = the scope,
``metric`` = what is counted); later pages read those rows and compute only the
days still open.  Medians and 90th percentiles do not add up, so they are
computed over the whole period each time: ``percentile_cont`` on PostgreSQL,
``ORDER BY ... LIMIT/OFFSET`` on SQLite (the same interpolation, so both agree).

Bids live in the EMS silo and carry no level of care or urgency, so bids are
counted for the requests in scope by their ids, day by day, in chunks.
"""
import csv
import io
import math
import re
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased

from ..extensions import db
from ..models.base import LEVELS, URGENCIES, utcnow
from ..models.center import Agency, Hospital, SystemAnalytics
from ..models.ems import TransportBid, Unit
from ..models.hospital import (
    CANCEL_REASONS,
    HospitalAgencyPreference,
    HospitalFacility,
    TransportRequest,
)

PERIODS = {"today": "Today", "7d": "Last 7 days", "30d": "Last 30 days", "custom": "Custom dates"}
PERIOD_DAYS = {"today": 1, "7d": 7, "30d": 30}
MAX_PERIOD_DAYS = 400
EARLIEST_DATE = date(2000, 1, 1)
#: How far past today a custom period may end.
MAX_FUTURE_DAYS = 366
UNFINISHED_STATUSES = ("open", "awarded", "en_route", "at_pickup", "transporting")
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
ROLLUP_KIND = "day"


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


def local_today(now=None):
    now = now or utcnow()
    return now.replace(tzinfo=UTC).astimezone(ZoneInfo(zone_name())).date()


def utc_midnight(day):
    """Naive UTC of local midnight at the start of ``day``."""
    local = datetime.combine(day, time()).replace(tzinfo=ZoneInfo(zone_name()))
    return local.astimezone(UTC).replace(tzinfo=None)


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
    futures = [pool.submit(read, _percentile_statement(query)) for query in queries]
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
    ranges = [sa.and_(T.created_at >= utc_midnight(first), T.created_at < utc_midnight(last + timedelta(days=1)))
              for first, last in _runs(days)]
    return ranges[0] if len(ranges) == 1 else sa.or_(*ranges)


def compute_days(days, scope):
    """Aggregate the given local days for ``scope`` in SQL: ``({day: Counter}, {day: unfinished})``."""
    T = TransportRequest
    dialect = dialect_of("hospital")
    clock = Clock(dialect, utc_midnight(min(days)), utc_midnight(max(days) + timedelta(days=1)))
    day = clock.day(T.created_at).label("day")
    where = [_created_in(days), *_scope_conditions(scope)]
    metrics = defaultdict(Counter)
    unfinished = Counter()

    def count(*conditions):
        return sa.func.count(T.id).filter(*conditions)

    picked_up = T.at_pickup_at.isnot(None)
    late = minutes_between(dialect, T.at_pickup_at, T.window_end)
    preference = aliased(HospitalAgencyPreference)
    columns = {
        "requests": sa.func.count(T.id),
        "awarded": count(T.awarded_at.isnot(None)),
        "unfilled": count(T.unfilled_at.isnot(None)),
        "cancelled": count(T.status == "cancelled"),
        "handed_back": count(T.handed_back_count > 0),
        "pickups": count(picked_up),
        "inside": count(picked_up, T.at_pickup_at >= T.window_start, T.at_pickup_at <= T.window_end),
        "early": count(picked_up, T.at_pickup_at < T.window_start),
        "preferred_awards": count(T.awarded_at.isnot(None), preference.id.isnot(None)),
    }
    lower = 0
    for suffix, _label, upper in LATE_BUCKETS:
        bound = [late > lower] + ([late <= upper] if upper is not None else [])
        columns["late:" + suffix] = count(picked_up, T.at_pickup_at > T.window_end, *bound)
        lower = upper
    stmt = (
        sa.select(day, count(T.status.in_(UNFINISHED_STATUSES)), *columns.values())
        .select_from(T)
        .outerjoin(preference, sa.and_(preference.hospital_id == T.hospital_id,
                                       preference.agency_id == T.awarded_agency_id))
        .where(*where).group_by(day)
    )
    for row in db.session.execute(stmt):
        key = _as_date(row[0])
        unfinished[key] = row[1]
        for name, value in zip(columns, row[2:], strict=True):
            if value:
                metrics[key][name] += value

    completed = T.status == "completed"
    breakdowns = (  # (metric prefix, grouped column, extra conditions, value; default a count)
        ("level", T.level_of_care, (), None),
        ("urgency", T.urgency, (), None),
        ("hour", clock.hour(T.created_at), (), None),
        ("cancel", T.cancel_reason, (T.status == "cancelled",), None),
        ("hospital_requests", T.hospital_id, (), None),
        ("hospital_unfilled", T.hospital_id, (T.unfilled_at.isnot(None),), None),
        ("agency_wins", T.awarded_agency_id, (T.awarded_at.isnot(None),), None),
        ("agency_completed", T.awarded_agency_id, (completed,), None),
        ("unit_trips", T.awarded_unit_id, (completed,), None),
        ("unit_busy_min", T.awarded_unit_id, (completed,),
         sa.func.sum(minutes_between(dialect, T.completed_at, T.awarded_at))),
    )
    # One statement (a UNION ALL of small GROUP BYs): one round trip for every breakdown.
    parts = [
        sa.select(sa.literal_column(f"'{prefix}'").label("prefix"), day,
                  sa.cast(column, sa.String).label("key"),
                  sa.cast(value if value is not None else sa.func.count(T.id), sa.Float).label("amount"))
        .where(*where, *conditions).group_by(day, column)
        for prefix, column, conditions, value in breakdowns
    ]
    hospital_engine = db.engines["hospital"]  # a UNION names no table the session could route by
    for prefix, row_day, key, amount in db.session.execute(sa.union_all(*parts),
                                                           bind_arguments={"bind": hospital_engine}):
        if key is not None and amount:
            metrics[_as_date(row_day)][f"{prefix}:{key}"] += amount
    _bid_metrics(days, scope, clock, metrics)
    return metrics, unfinished


def _bid_metrics(days, scope, clock, metrics):
    """Bids on the requests of each day, counted in the EMS silo by trip id.

    The request scope (with the agency filter: trips awarded to the agency) gives
    bids per request; the agency table counts each agency's bids on every request
    matching the other filters, so an agency's lost bids count too.
    """
    T = TransportRequest
    day = clock.day(T.created_at).label("day")
    stmt = sa.select(day, T.id, T.awarded_agency_id).where(
        _created_in(days), *_scope_conditions(scope, include_agency=False))
    bidding, requested = defaultdict(list), defaultdict(list)
    for row_day, trip_id, agency_id in db.session.execute(stmt):
        key = _as_date(row_day)
        bidding[key].append(trip_id)
        if scope.agency_id is None or agency_id == scope.agency_id:
            requested[key].append(trip_id)
    chunk = ID_CHUNK.get(dialect_of("ems"), ID_CHUNK_DEFAULT)
    B = TransportBid
    for key, ids in bidding.items():
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            stmt = sa.select(B.agency_id, sa.func.count(B.id)).where(B.trip_id.in_(part))
            if scope.agency_id is not None:
                stmt = stmt.where(B.agency_id == scope.agency_id)
            for agency_id, amount in db.session.execute(stmt.group_by(B.agency_id)):
                metrics[key][f"agency_bids:{agency_id}"] += amount
    for key, ids in requested.items():
        for start in range(0, len(ids), chunk):
            part = ids[start:start + chunk]
            per_trip = (sa.select(B.trip_id, sa.func.count(B.id).label("n"))
                        .where(B.trip_id.in_(part)).group_by(B.trip_id).subquery())
            stmt = sa.select(per_trip.c.n, sa.func.count()).group_by(per_trip.c.n)
            for n, trips in db.session.execute(stmt):
                bucket = str(n) if n < 5 else "5+"
                metrics[key]["bids_trips:" + bucket] += trips
                metrics[key]["bids"] += n * trips


def day_metrics(period, scope, now=None):
    """{day: Counter} for every day of the period: closed days from rollups, others live.

    Closed days computed now are staged in ``system_analytics`` (the caller
    commits); a concurrent page that stored them first wins, nothing doubles.
    """
    now = now or utcnow()
    today = local_today(now)
    key = scope.key()
    SA = SystemAnalytics
    stored = defaultdict(Counter)
    rows = db.session.execute(
        sa.select(SA.period_start, SA.metric, SA.value).where(
            SA.period_kind == ROLLUP_KIND, SA.dimension == key,
            SA.period_start >= period.start, SA.period_start <= period.end)
    )
    for period_start, metric, value in rows:
        stored[period_start][metric] = value
    closed = {d for d, counts in stored.items() if "requests" in counts}
    result = {d: stored[d] for d in closed}
    missing = [d for d in period.days if d not in closed and utc_midnight(d) < now]
    if missing:
        computed, unfinished = compute_days(missing, scope)
        new_rows = []
        for d in missing:
            counts = computed.get(d, Counter())
            result[d] = counts
            if d < today and not unfinished.get(d):
                new_rows.append(dict(period_kind=ROLLUP_KIND, period_start=d, metric="requests",
                                     dimension=key, value=float(counts.get("requests", 0)),
                                     computed_at=now))
                new_rows += [dict(period_kind=ROLLUP_KIND, period_start=d, metric=metric,
                                  dimension=key, value=float(value), computed_at=now)
                             for metric, value in counts.items() if metric != "requests" and value]
        if new_rows:
            insert = postgresql.insert if dialect_of("center") == "postgresql" else sqlite.insert
            db.session.execute(insert(SA.__table__).on_conflict_do_nothing(), new_rows)
    for d in period.days:
        result.setdefault(d, Counter())
    return result


# --- the report --------------------------------------------------------------------------

def _share(part, whole):
    return round(100.0 * part / whole, 1) if whole else None


def _round(value, digits=1):
    return None if value is None else round(value, digits)


def _period_bounds(period, now):
    """UTC bounds of the period, the end capped at ``now`` (for shift time)."""
    return utc_midnight(period.start), min(utc_midnight(period.end + timedelta(days=1)), now)


def _shift_minutes(shift_start, shift_end, period, now):
    """Minutes a daily shift covers inside the period (up to now)."""
    zone = ZoneInfo(zone_name())
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
    where = [T.created_at >= utc_midnight(period.start),
             T.created_at < utc_midnight(period.end + timedelta(days=1)), *_scope_conditions(scope)]
    pending = start_percentiles("hospital", [
        PercentileQuery({
            "first_bid": minutes_between(dialect, T.first_bid_at, T.created_at),
            "award": minutes_between(dialect, T.awarded_at, T.created_at),
            "pickup": minutes_between(dialect, T.at_pickup_at, T.awarded_at),
        }, where),
        PercentileQuery({
            "eta": T.awarded_eta_minutes,
            "actual": minutes_between(dialect, T.at_pickup_at, T.awarded_at),
        }, where + [T.awarded_agency_id.isnot(None), T.at_pickup_at.isnot(None), T.awarded_at.isnot(None)],
            group=T.awarded_agency_id, fractions=(0.5,)),
        PercentileQuery({"award": minutes_between(dialect, T.awarded_at, T.created_at)},
                        where + [T.awarded_at.isnot(None)], group=T.hospital_id, fractions=(0.5,)),
    ])
    per_day = day_metrics(period, scope, now)
    total = Counter()
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
    "first_bid": "Time to first bid (posted → first bid)",
    "award": "Time to award (posted → awarded)",
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
        for key, label in (("awarded", "Awarded"), ("unfilled", "Unfilled (deadline passed)"),
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
    """One table as CSV text (header row first)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([label for label, _kind in table.columns])
    writer.writerows([["" if value is None else value for value in row] for row in table.rows])
    return buffer.getvalue()


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
    """Yield the period's trips as CSV text, a batch of rows at a time, from a server-side cursor.

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
        .where(T.created_at >= utc_midnight(period.start),
               T.created_at < utc_midnight(period.end + timedelta(days=1)), *_scope_conditions(scope))
        .order_by(T.created_at, T.id)
    )
    local_text = _local_formatter(ZoneInfo(zone_name()))
    time_positions = [i for i, name in enumerate(TRIP_COLUMNS) if name in _TIME_COLUMNS]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(TRIP_COLUMNS)
    result = db.session.execute(stmt, execution_options={"yield_per": batch})
    for rows in result.partitions():
        for row in rows:
            values = list(row)
            values[1] = hospitals.get(values[1], values[1])
            values[14] = agencies.get(values[14], values[14]) if values[14] is not None else None
            for i in time_positions:
                if values[i] is not None:
                    values[i] = local_text(values[i])
            writer.writerow(["" if v is None else v for v in values])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
    remainder = buffer.getvalue()
    if remainder:
        yield remainder
