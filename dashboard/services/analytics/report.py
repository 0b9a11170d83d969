"""Report: every figure of the analytics page for a period and a scope, as plain data.

Volume, speed, fill, on time, competition, agencies, units and hospitals: counts summed from
the cells (:mod:`.stored`, :mod:`.cells`), medians and 90th percentiles from
:mod:`.percentiles`, combined here; no trip is loaded into Python.  The data names each figure
(``key``) and carries the measure's label where the figure is one of a list (speed measures,
outcomes, cancel reasons, late buckets); how it is shown (tables, charts, section titles) is
the blueprint's (``dashboard.analytics.presentation``).  Shares are percentages with one
decimal, times minutes or hours as the key says; a share or median with nothing to measure is
None.
"""
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa

from ...extensions import db
from ...localtime import local_midnight, local_zone
from ...models.base import utcnow
from ...models.center import Agency, Hospital
from ...models.ems import Unit
from ...models.hospital import CANCEL_REASONS, TransportRequest
from ...models.vocabulary import LEVELS, URGENCIES
from .cells import BID_BUCKETS, LATE_BUCKETS
from .percentiles import PercentileQuery, start_percentiles
from .period import bound_conditions, bound_values, filter_shape, statement
from .sqltime import dialect_of, minutes_between
from .stored import day_metrics


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


def report(period, scope, now=None, units=True):
    """Every figure of the analytics page for ``period`` and ``scope``, as plain data.

    ``now`` (naive UTC, default the clock) ends today's figures and the units' shift time;
    ``units=False`` leaves unit utilisation out (``units`` is then None: the hospital's view
    does not show it).
    Returns a dict: ``period``, ``scope``, ``requests`` (int); ``volume`` (``by_day``: per day
    ``{"day", "total", "levels", "urgencies"}``, ``by_hour``: 24 counts, ``by_level``,
    ``by_urgency``); ``speed`` (``[{"key", "label", "n", "p50", "p90"}]``, minutes); ``fill``
    (``outcomes`` and ``reasons``: ``[{"key", "label", "count", "share"}]``, ``cancelled``);
    ``on_time`` (``pickups``, ``rows``, ``share``, ``late_buckets``); ``daily_rates`` (per day
    ``{"day", "requests", "awarded_share", "on_time_share"}``); ``competition`` (bids, bids
    per request, the bids-received ``distribution``, preferred awards); ``agencies``, ``units``
    and ``hospitals`` (one dict per row, sorted as the page lists them).  Closed days computed
    for it are staged in the center silo: the caller commits (``views.keep()``).
    """
    now = now or utcnow()
    dialect, shape = dialect_of("hospital"), filter_shape(scope, period.days)
    queries = statement(("percentiles", dialect, shape), lambda: _percentile_queries(dialect, shape))
    pending = start_percentiles("hospital", queries, bound_values(scope, period.days))
    per_day, total = day_metrics(period, scope, now)
    total = Counter(total)
    for counts in per_day.values():
        total.update(counts)
    # Rows of the columns shown (``.name``, ``.short_code``), not whole registry entities.
    hospitals = {h.id: h for h in db.session.execute(sa.select(Hospital.id, Hospital.name, Hospital.short_code))}
    agencies = {a.id: a for a in db.session.execute(sa.select(Agency.id, Agency.name, Agency.short_code))}
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
        "units": _units(total, period, scope, now, agencies) if units else None,
        "hospitals": _hospitals(total, by_hospital, hospitals, scope),
    }



def _percentile_queries(dialect, shape):
    """The page's :class:`PercentileQuery` s for a :func:`.period.filter_shape` (the period's
    and the filter's values bound): speeds, per agency, per hospital."""
    T = TransportRequest
    where = bound_conditions(shape)
    # Speeds count from when bidding opened: posting, or the opening of a request booked ahead.
    bidding_start = sa.func.coalesce(T.bidding_opens_at, T.created_at)
    return [
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
    ]

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
