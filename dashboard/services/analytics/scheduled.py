"""Analytics of scheduled work: scheduled versus same-day volume, will-call release to pickup,
and waiting at pickup attributed to "crew late" or "patient not ready".

Part of :mod:`dashboard.services.analytics` (same period and scope; the blueprint lays the
figures out as tables beside the others).  Computed from the hospital silo for the period each
time rather than from the stored day cells: the measures are sums and medians of minutes per hospital and per agency over the period's
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

import sqlalchemy as sa

from ...extensions import db
from ...models.hospital import TransportRequest
from ..returns import waiting
from .percentiles import percentile_of
from .period import posted_in, scope_conditions


def report(period, scope):
    """The scheduled-work figures for ``period`` and ``scope`` (:mod:`.period`), as plain data.

    ``{"volume": {"scheduled", "same_day", "series", "will_call": counts, "scheduled_share": %
    or None}, "will_call": {"n": returns measured, "p50", "p90": minutes or None}, "delay":
    {"hospitals": {hospital id: [pickups, crew late min, not ready min]}, "agencies": {agency id:
    [...]}}}`` (registry ids; agencies by the awarded agency).
    """
    T = TransportRequest
    where = [*posted_in(period), *scope_conditions(scope)]
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
        "will_call": {"n": len(released), "p50": percentile_of(released, 0.5), "p90": percentile_of(released, 0.9)},
        "delay": {"hospitals": dict(per_hospital), "agencies": dict(per_agency)},
    }
