"""Stored cells: the cells of closed days kept in the center silo, and the period's counts read.

Each *closed* day (in the past, every request of it finished or cancelled) is aggregated once
into cells (:mod:`.cells`) kept in the center silo: ``analytics_cells``,
``analytics_unit_cells``, ``analytics_bid_cells``, and the day itself in ``analytics_days``.
The relay's timer stores the last few closed days as they close (:func:`roll_up`), ``flask
medport rollup`` backfills older ones, and a page that meets a closed day not stored yet
computes and stages it (:func:`day_metrics`; the view keeps it for the next reader).  Today,
and a past day with a request still running, are computed live for the page's filters.
"""
import threading
from collections import Counter, defaultdict
from datetime import timedelta

import sqlalchemy as sa
from flask import current_app
from sqlalchemy.dialects import postgresql, sqlite

from ... import server_timing
from ...extensions import db, engine
from ...localtime import local_midnight, local_today
from ...models.base import utcnow
from ...models.center import AnalyticsBidCell, AnalyticsCell, AnalyticsDay, AnalyticsUnitCell
from .cells import CELL_METRICS, add, cell_metrics, compute_cells, live_metrics
from .period import bound_conditions, bound_values, filter_shape, statement
from .sqltime import as_date, dialect_of

#: Past local days the relay's timer rolls up (older days: ``flask medport rollup``).
ROLLUP_TICK_DAYS = 7
ROLLUP_BATCH_DAYS = 7


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
    totals, parts = statement(("stored", filter_shape(scope, days)), lambda: _stored_statements(scope, days))
    values = bound_values(scope, days)
    names = list(CELL_METRICS)
    center = {"bind": engine("center")}  # a UNION names no table the session could route by
    for row in db.session.execute(totals, values, bind_arguments=center):
        target = per_day[as_date(row[0])]
        add(target, "ended_unfilled", row[1])
        for name, value in zip(names, row[2:], strict=True):
            add(target, CELL_METRICS[name], value)
    for prefixes, row_day, key, *amounts in db.session.execute(parts, values, bind_arguments=center):
        if key is None:
            continue
        target = per_day[as_date(row_day)] if row_day is not None else overall
        for prefix, amount in zip(prefixes.split(","), amounts, strict=True):
            if prefix and amount:
                add(target, f"{prefix}:{key}", int(amount) if prefix == "unit_trips" else amount)
    return per_day, overall


def _stored_statements(scope, days):
    """The statements of :func:`stored_metrics` for the shape of ``scope`` and ``days``
    (:func:`.period.filter_shape`; the values are bound): the per-day sums, and the breakdowns
    by day and level or urgency, by hospital, agency and unit (a UNION)."""
    shape = filter_shape(scope, days)
    C, U, B = AnalyticsCell.__table__.c, AnalyticsUnitCell.__table__.c, AnalyticsBidCell.__table__.c

    def where(columns):
        return bound_conditions(shape, columns={"day": columns.day, "hospital_id": columns.hospital_id,
                                                "agency_id": columns.agency_id,
                                                "level": columns.level_of_care, "urgency": columns.urgency})

    ended_unfilled = sa.func.sum(sa.case((C.agency_id == 0, C.unfilled), else_=0))
    totals = (sa.select(C.day, ended_unfilled, *[sa.func.sum(C[name]) for name in CELL_METRICS])
              .where(*where(C)).group_by(C.day))

    def part(prefixes, group, amounts, columns, *conditions, by_day=False):
        """One GROUP BY giving two metrics (``prefixes``) summed from two columns (``amounts``)."""
        keys = ([columns.day] if by_day else [])
        return (sa.select(sa.literal_column(f"'{prefixes}'").label("prefixes"),
                          (columns.day if by_day else sa.null()).label("day"),
                          sa.cast(group, sa.String).label("key"),
                          *[sa.cast(sa.func.sum(amount), sa.Float) for amount in amounts])
                .where(*where(columns), *conditions).group_by(*keys, group))

    parts = sa.union_all(
        part("level,", C.level_of_care, (C.requests, sa.literal(0)), C, by_day=True),
        part("urgency,", C.urgency, (C.requests, sa.literal(0)), C, by_day=True),
        part("hospital_requests,hospital_unfilled", C.hospital_id, (C.requests, C.unfilled), C),
        part("agency_wins,agency_completed", C.agency_id, (C.bid_awards, C.completed), C, C.agency_id != 0),
        part("unit_trips,unit_busy_min", U.unit_id, (U.trips, U.busy_minutes), U),
        # Bid cells are keyed by the bidding agency: the scope's agency filters the bidder.
        part("agency_bids,", B.agency_id, (B.bids, sa.literal(0)), B),
    )
    return totals, parts

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
    Today is computed live for the scope (:func:`.cells.live_metrics`), and so
    is a past day with a request still running (from the cells computed for it).
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
        today_metrics = _meanwhile(lambda: live_metrics(current, scope))
    done = [d for d in reachable if d < today and d not in missing]
    per_day, overall = stored_metrics(done, scope)
    if today_metrics is not None:
        live.update(today_metrics())
    for d, counts in live.items():
        per_day[d] = counts
    result = {d: per_day.get(d, Counter()) for d in period.days}
    return result, overall
