"""Analytics of scheduled work: scheduled versus same-day volume, will-call release to pickup,
and waiting at pickup attributed to "crew late" or "patient not ready".

Next to :mod:`dashboard.services.analytics` (same period, scope and :class:`Table`), computed
from the hospital silo for the period each time rather than from the stored day cells: the
measures are sums and medians of minutes per hospital and per agency over the period's
requests (a few columns of ``transport_requests``, read through the ``created_at`` index), and
adding them to the cells would mean a new cell column per measure and a re-rollup.  Volume is
by posting day, as on the rest of the page.

* *Scheduled*: booked ahead (bidding opened at a lead time before pickup), a recurring
  series' occurrence, or a return leg; *same-day*: the rest.
* *Will-call release to pickup*: minutes from the patient marked ready to the crew at the
  pickup (``released_at`` → ``at_pickup_at``), median and 90th percentile.
* *Delay attribution*: :func:`dashboard.services.returns.waiting` of every request whose crew
  reached the pickup, summed per hospital and per awarded agency.
"""
from collections import defaultdict
from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..localtime import local_midnight
from ..models.hospital import TransportRequest
from .analytics import Table, _scope_conditions
from .returns import waiting

TABLE_NAMES = ("scheduled_volume", "will_call", "delay_hospitals", "delay_agencies")


def _percentile(values, fraction):
    """Linear-interpolated percentile (as ``percentile_cont``) of a list, or None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (position - low), 1)


def report(period, scope):
    """``{"volume": {...}, "will_call": {...}, "delay": {"hospitals": [...], "agencies": [...]}}``
    for ``period`` (local dates) and ``scope`` (``analytics.Scope``)."""
    T = TransportRequest
    where = [T.created_at >= local_midnight(period.start),
             T.created_at < local_midnight(period.end + timedelta(days=1)), *_scope_conditions(scope)]
    scheduled = sa.or_(T.bidding_opens_at.is_not(None), T.series_id.is_not(None), T.return_of_id.is_not(None))
    counts = db.session.execute(sa.select(
        sa.func.count(T.id).filter(scheduled), sa.func.count(T.id).filter(~scheduled),
        sa.func.count(T.id).filter(T.series_id.is_not(None)), sa.func.count(T.id).filter(T.will_call.is_(True)),
    ).where(*where)).one()
    released = [
        (pickup - release).total_seconds() / 60
        for release, pickup in db.session.execute(sa.select(T.released_at, T.at_pickup_at).where(
            *where, T.will_call.is_(True), T.released_at.is_not(None), T.at_pickup_at.is_not(None)))]
    per_hospital = defaultdict(lambda: [0, 0.0, 0.0])
    per_agency = defaultdict(lambda: [0, 0.0, 0.0])
    rows = db.session.execute(sa.select(
        T.hospital_id, T.awarded_agency_id, T.window_start, T.at_pickup_at, T.transporting_at,
        T.patient_ready_at, T.not_ready_at).where(*where, T.at_pickup_at.is_not(None)))
    for row in rows:
        split = waiting(row)
        for target, key in ((per_hospital, row.hospital_id), (per_agency, row.awarded_agency_id)):
            if key is None:
                continue
            target[key][0] += 1
            target[key][1] += split.crew_late
            target[key][2] += split.not_ready
    total = counts[0] + counts[1]
    return {
        "volume": {"scheduled": counts[0], "same_day": counts[1], "series": counts[2], "will_call": counts[3],
                   "scheduled_share": round(100.0 * counts[0] / total, 1) if total else None},
        "will_call": {"n": len(released), "p50": _percentile(released, 0.5), "p90": _percentile(released, 0.9)},
        "delay": {"hospitals": dict(per_hospital), "agencies": dict(per_agency)},
    }


def tables(data, hospitals, agencies):
    """The section's tables; ``hospitals`` and ``agencies`` map registry ids to names."""
    volume, will_call, delay = data["volume"], data["will_call"], data["delay"]

    def delay_rows(per, names):
        return sorted(([names.get(key, f"#{key}"), n, round(late, 1), round(not_ready, 1)]
                       for key, (n, late, not_ready) in per.items()), key=lambda r: (-r[1], r[0]))

    columns = [("Name", "text"), ("Pickups", "int"), ("Crew late (min, total)", "num"),
               ("Patient not ready (min, total)", "num")]
    return [
        Table("scheduled_volume", "Scheduled versus same-day requests",
              [("Kind", "text"), ("Requests", "int")],
              [["Scheduled (booked ahead, series, returns)", volume["scheduled"]],
               ["Same-day", volume["same_day"]], ["Of which series occurrences", volume["series"]],
               ["Of which will-call returns", volume["will_call"]]]),
        Table("will_call", "Will-call: patient ready to crew at pickup (minutes)",
              [("Measure", "text"), ("Returns measured", "int"), ("Median (min)", "num"),
               ("90th percentile (min)", "num")],
              [["Release to pickup", will_call["n"], will_call["p50"], will_call["p90"]]]),
        Table("delay_hospitals", "Waiting at pickup by hospital", columns,
              delay_rows(delay["hospitals"], hospitals)),
        Table("delay_agencies", "Waiting at pickup by agency", columns, delay_rows(delay["agencies"], agencies)),
    ]
