"""Cells: the day-by-day counts of the analytics page, computed from the hospital and EMS silos.

Counts add up across days and across filters, so each local day is aggregated into *cells*:
one per day, hospital, awarded agency (0: none), level of care and urgency, holding the
columns of ``AnalyticsCell``; plus completed trips and busy minutes per unit, and bids per
bidding agency (not keyed by the winner).  Any filter combination of the page is then a sum
over cells: in Python here (:func:`cell_metrics`, for days computed live), in SQL over the
stored cells (:mod:`.stored`).

A request that went unfilled (its deadline passed with no live bid) keeps ``unfilled_at`` after
a later award, extension or re-opening, so it counts as *went unfilled* for good; it *ended
unfilled* when no agency holds it at the end (cell agency 0).  An agency's *wins* are awards of
its bids (``bid_awards``): a center assignment without a bid is an award but not a win.

Bids live in the EMS silo and carry no level of care or urgency, so bids are counted per
request by trip id, in chunks, when a day's cells are computed; only ids and counts pass
through Python, never whole trips.

Metrics are named ``requests``, ``late:1-15``, ``level:ALS``, ``agency_bids:<agency id>`` and
so on (``CELL_METRICS`` and :func:`cell_metrics`); busy minutes are floats, the rest counts.
"""
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from ...extensions import db, engine
from ...localtime import local_midnight
from ...models.center import ANALYTICS_CELL_COUNTS
from ...models.ems import TransportBid
from ...models.hospital import CANCEL_REASONS, HospitalAgencyPreference, TransportRequest
from .period import (
    Scope,
    bound_conditions,
    bound_values,
    filter_shape,
    posted_on,
    scope_conditions,
    statement,
)
from .sqltime import Clock, as_date, dialect_of, minutes_between

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
        """The number of requests posted on ``day`` (a local date)."""
        return sum(counts["requests"] for key, counts in self.cells.items() if key[0] == day)


def _clock(days):
    """The hospital silo's dialect and a :class:`Clock` spanning the local ``days``."""
    dialect = dialect_of("hospital")
    return dialect, Clock(dialect, local_midnight(min(days)), local_midnight(max(days) + timedelta(days=1)))


def _count(*conditions):
    """SQL: the number of requests of the group meeting every condition."""
    return sa.func.count(TransportRequest.id).filter(*conditions)


def _count_columns(dialect):
    """The counted columns of a cell (``{AnalyticsCell column: SQL count}``, the bid columns left
    out: bids are in the EMS silo) and the aliased preference the statement must outer-join
    (``preferred_awards``)."""
    T = TransportRequest
    count = _count
    picked_up = T.at_pickup_at.isnot(None)
    completed = T.status == "completed"
    late = minutes_between(dialect, T.at_pickup_at, T.window_end)
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
    return columns, preference


def compute_cells(days, scope=None):
    """Aggregate the given local days into cells, in SQL, from the hospital and EMS silos.

    ``scope``'s hospital, level and urgency narrow what is read (its agency does
    not: an agency's bids count on requests it did not win); without a scope the
    cells cover every request and can be stored.
    """
    T = TransportRequest
    scope = scope or Scope()
    dialect, clock = _clock(days)
    day = clock.day(T.created_at).label("day")
    agency = sa.func.coalesce(T.awarded_agency_id, 0)
    key = (day, T.hospital_id, agency, T.level_of_care, T.urgency)
    where = [posted_on(days), *scope_conditions(scope, include_agency=False)]
    hour = clock.hour(T.created_at)
    columns, preference = _count_columns(dialect)
    completed = T.status == "completed"
    # Grouped by the hour too (the local time is converted once per row, not once per hour),
    # then folded into the cell's hour_00 ... hour_23.
    stmt = (
        sa.select(*key, hour, _count(T.status.in_(UNFINISHED_STATUSES)), *columns.values())
        .select_from(T)
        .outerjoin(preference, sa.and_(preference.hospital_id == T.hospital_id,
                                       preference.agency_id == T.awarded_agency_id))
        .where(*where).group_by(*key, hour)
    )
    empty = dict.fromkeys(ANALYTICS_CELL_COUNTS, 0)
    cells, unfinished = {}, Counter()
    for row in db.session.execute(stmt):
        cell = (as_date(row[0]), *row[1:5])
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
        units[(as_date(row[0]), *row[1:6])] = [row[6], float(row[7] or 0.0)]

    bids = _bid_cells(db.session.execute(sa.select(T.id, *key).where(*where)), cells)
    return Cells(cells, units, bids, unfinished)


def _bid_cells(trips, cells):
    """Count the bids on ``trips`` ((id, *cell) rows) in the EMS silo, by trip id in chunks.

    Adds each request's bids to its cell (``bids`` and the per-request bucket) and
    returns {(day, hospital, level, urgency, bidding agency): bids}.
    """
    where = {}
    for trip_id, row_day, hospital_id, agency_id, level, urgency in trips:
        where[trip_id] = (as_date(row_day), hospital_id, agency_id, level, urgency)
    per_trip, bids = Counter(), Counter()
    for trip_id, agency_id, amount in _bids_on(where):
        per_trip[trip_id] += amount
        row_day, hospital_id, _awarded, level, urgency = where[trip_id]
        bids[row_day, hospital_id, level, urgency, agency_id] += amount
    for trip_id, amount in per_trip.items():
        counts = cells[where[trip_id]]
        counts["bids"] += amount
        counts[BID_COLUMNS["5+" if amount >= 5 else str(amount)]] += 1
    return dict(bids)


def _bids_on(trips):
    """``(trip id, bidding agency id, bids)`` for each agency that bid on one of ``trips`` (a
    container of trip ids), read from the EMS silo by id range or in chunks of ids."""
    ids = sorted(trips)
    chunk = ID_CHUNK.get(dialect_of("ems"), ID_CHUNK_DEFAULT)
    B = TransportBid
    if ids and ids[-1] - ids[0] < DENSE_IDS * len(ids):
        # Ids are handed out in posting order, so a run of days is (nearly) one id range:
        # one range scan, and the few bids of requests outside the set are skipped below.
        ranges = [B.trip_id.between(ids[0], ids[-1])]
    else:
        ranges = [B.trip_id.in_(ids[start:start + chunk]) for start in range(0, len(ids), chunk)]
    for condition in ranges:
        stmt = (sa.select(B.trip_id, B.agency_id, sa.func.count(B.id))
                .where(condition).group_by(B.trip_id, B.agency_id))
        for trip_id, agency_id, amount in db.session.execute(stmt):
            if trip_id in trips:
                yield trip_id, agency_id, amount


def _matches(scope, hospital_id, agency_id, level, urgency):
    """Whether a cell's dimensions fall inside ``scope``."""
    return ((scope.hospital_id is None or hospital_id == scope.hospital_id)
            and (scope.agency_id is None or agency_id == scope.agency_id)
            and (scope.level is None or level == scope.level)
            and (scope.urgency is None or urgency == scope.urgency))


def add(counter, metric, value):
    """Add ``value`` (a count or minutes) to ``counter[metric]``; a zero or None adds no key."""
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
            add(target, metric, counts[column])
        add(target, f"level:{level}", counts["requests"])
        add(target, f"urgency:{urgency}", counts["requests"])
        add(target, f"hospital_requests:{hospital_id}", counts["requests"])
        add(target, f"hospital_unfilled:{hospital_id}", counts["unfilled"])
        if not agency_id:  # no agency at the end: those that went unfilled ended unfilled
            add(target, "ended_unfilled", counts["unfilled"])
        if agency_id:
            add(target, f"agency_wins:{agency_id}", counts["bid_awards"])
            add(target, f"agency_completed:{agency_id}", counts["completed"])
    for (row_day, hospital_id, agency_id, level, urgency, unit_id), (trips, busy) in cells.units.items():
        if row_day in days and _matches(scope, hospital_id, agency_id, level, urgency):
            add(metrics[row_day], f"unit_trips:{unit_id}", trips)
            add(metrics[row_day], f"unit_busy_min:{unit_id}", busy)
    for (row_day, hospital_id, level, urgency, agency_id), amount in cells.bids.items():
        if row_day in days and _matches(scope, hospital_id, scope.agency_id and agency_id, level, urgency):
            add(metrics[row_day], f"agency_bids:{agency_id}", amount)
    return metrics


def live_metrics(days, scope):
    """{day: Counter} of ``scope`` for the local ``days``, aggregated in SQL to the page's figures.

    The same figures as ``cell_metrics(compute_cells(days), days, scope)`` (a test holds them
    equal for every filter), for days read live (today, a day still running a request): the
    scope, its agency included, is a condition of each statement, and the statements group by
    what the page shows (day and hour; hospital, agency, level and urgency for four counts; unit;
    request for its bids) rather than by cell, so few rows come back.  The statements are built
    once per shape of filter (:func:`.period.statement`), the values bound per call.
    """
    dialect, clock = _clock(days)
    shape = filter_shape(scope, days)
    hours, names, breakdowns, units, trips = statement(
        ("live", clock.key, shape), lambda: _live_statements(dialect, clock, shape))
    values = bound_values(scope, days)
    hospital = {"bind": engine("hospital")}  # cached statements: routed by name, not by their columns
    metrics = defaultdict(Counter)
    for row_day, row_hour, *counts in db.session.execute(hours, values, bind_arguments=hospital):
        target = metrics[as_date(row_day)]
        for metric, value in zip(names, counts, strict=True):
            add(target, metric, value)
        add(target, f"hour:{int(row_hour)}", counts[0])
    for prefixes, row_day, key, *amounts in db.session.execute(breakdowns, values, bind_arguments=hospital):
        target = metrics[as_date(row_day)]
        for prefix, amount in zip(prefixes.split(","), amounts, strict=True):
            if prefix:
                add(target, f"{prefix}:{key}", amount)
    for row_day, unit_id, count, busy in db.session.execute(units, values, bind_arguments=hospital):
        add(metrics[as_date(row_day)], f"unit_trips:{unit_id}", count)
        add(metrics[as_date(row_day)], f"unit_busy_min:{unit_id}", float(busy or 0.0))

    # Bids: an agency's count on every request of the scope but its agency (it bid on requests
    # it did not win); the bids per request on those of the scope, its agency included.
    trips = {trip_id: (as_date(row_day), scope.agency_id is None or awarded == scope.agency_id)
             for trip_id, row_day, awarded in db.session.execute(trips, values, bind_arguments=hospital)}
    per_trip = Counter()
    for trip_id, agency_id, amount in _bids_on(trips):
        row_day, in_scope = trips[trip_id]
        if in_scope:
            per_trip[trip_id] += amount
        if scope.agency_id is None or agency_id == scope.agency_id:
            add(metrics[row_day], f"agency_bids:{agency_id}", amount)
    for trip_id, amount in per_trip.items():
        target = metrics[trips[trip_id][0]]
        add(target, "bids", amount)
        add(target, "bids_trips:" + ("5+" if amount >= 5 else str(amount)), 1)
    return metrics


def _live_statements(dialect, clock, shape):
    """The statements of :func:`live_metrics` for a :func:`.period.filter_shape`: by day and
    hour (and the metric names of its counts), the breakdowns (a UNION), by unit, and the
    requests whose bids are counted (the scope but its agency)."""
    T = TransportRequest
    day = clock.day(T.created_at).label("day")
    agency = sa.func.coalesce(T.awarded_agency_id, 0)
    scoped = bound_conditions(shape)
    columns, preference = _count_columns(dialect)
    columns["ended_unfilled"] = _count(T.unfilled_at.isnot(None), agency == 0)
    hour = clock.hour(T.created_at)
    hours = (sa.select(day, hour, *columns.values()).select_from(T)
             .outerjoin(preference, sa.and_(preference.hospital_id == T.hospital_id,
                                            preference.agency_id == T.awarded_agency_id))
             .where(*scoped).group_by(day, hour))

    def breakdown(prefixes, group, first, second, *conditions):
        """One GROUP BY of the day and ``group`` giving two metrics (``prefixes``)."""
        return (sa.select(sa.literal_column(f"'{prefixes}'"), day, sa.cast(group, sa.String), first, second)
                .where(*scoped, *conditions).group_by(day, group))

    requests, zero = sa.func.count(T.id), sa.literal(0)
    breakdowns = sa.union_all(
        breakdown("level,", T.level_of_care, requests, zero),
        breakdown("urgency,", T.urgency, requests, zero),
        breakdown("hospital_requests,hospital_unfilled", T.hospital_id, requests, columns["unfilled"]),
        breakdown("agency_wins,agency_completed", T.awarded_agency_id, columns["bid_awards"],
                  columns["completed"], T.awarded_agency_id.isnot(None), T.awarded_agency_id != 0),
    )
    units = (sa.select(day, T.awarded_unit_id, sa.func.count(T.id),
                       sa.func.sum(minutes_between(dialect, T.completed_at, T.awarded_at)))
             .where(*scoped, T.status == "completed", T.awarded_unit_id.isnot(None))
             .group_by(day, T.awarded_unit_id))
    trips = sa.select(T.id, day, T.awarded_agency_id).where(*bound_conditions(shape, include_agency=False))
    return hours, [CELL_METRICS.get(name, name) for name in columns], breakdowns, units, trips
