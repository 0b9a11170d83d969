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
  reached the pickup, summed per hospital and per awarded agency.  On PostgreSQL the same rule
  is summed in SQL (:func:`_waiting_sums_sql`, one row per hospital and per agency); SQLite reads
  the requests' times and applies ``waiting`` to each.
"""
from collections import defaultdict

import sqlalchemy as sa

from ...extensions import db, engine
from ...models.hospital import TransportRequest
from ..returns import waiting
from .percentiles import percentile_of
from .period import bound_conditions, bound_values, filter_shape, statement
from .sqltime import dialect_of


def report(period, scope):
    """The scheduled-work figures for ``period`` and ``scope`` (:mod:`.period`), as plain data.

    ``{"volume": {"scheduled", "same_day", "series", "will_call": counts, "scheduled_share": %
    or None}, "will_call": {"n": returns measured, "p50", "p90": minutes or None}, "delay":
    {"hospitals": {hospital id: [pickups, crew late min, not ready min]}, "agencies": {agency id:
    [...]}}}`` (registry ids; agencies by the awarded agency).
    """
    dialect, shape = dialect_of("hospital"), filter_shape(scope, period.days)
    counting, releases, sums = statement(("scheduled", dialect, shape), lambda: _statements(dialect, shape))
    values, hospital = bound_values(scope, period.days), {"bind": engine("hospital")}
    counts = db.session.execute(counting, values, bind_arguments=hospital).one()
    released = [(pickup - release).total_seconds() / 60
                for release, pickup in db.session.execute(releases, values, bind_arguments=hospital)]
    fold = _fold_sums if dialect == "postgresql" else _fold_rows
    per_hospital, per_agency = fold(db.session.execute(sums, values, bind_arguments=hospital))
    total = counts[0] + counts[1]
    return {
        "volume": {"scheduled": counts[0], "same_day": counts[1], "series": counts[2], "will_call": counts[3],
                   "scheduled_share": round(100.0 * counts[0] / total, 1) if total else None},
        "will_call": {"n": len(released), "p50": percentile_of(released, 0.5), "p90": percentile_of(released, 0.9)},
        "delay": {"hospitals": per_hospital, "agencies": per_agency},
    }


def _statements(dialect, shape):
    """The statements of :func:`report` for a :func:`.period.filter_shape` (values bound): the
    volume counts, the will-call releases and pickups, the waiting at pickup (summed in SQL on
    PostgreSQL, else the requests' times)."""
    T = TransportRequest
    where = bound_conditions(shape)
    scheduled = sa.or_(T.bidding_opens_at.is_not(None), T.series_id.is_not(None), T.return_of_id.is_not(None))
    counting = sa.select(
        sa.func.count(T.id).filter(scheduled), sa.func.count(T.id).filter(~scheduled),
        sa.func.count(T.id).filter(T.series_id.is_not(None)), sa.func.count(T.id).filter(T.will_call.is_(True)),
    ).where(*where)
    releases = sa.select(T.released_at, T.at_pickup_at).where(
        *where, T.will_call.is_(True), T.released_at.is_not(None), T.at_pickup_at.is_not(None))
    sums = _waiting_sums_statement(where) if dialect == "postgresql" else _waiting_rows_statement(where)
    return counting, releases, sums


def _waiting_sums(where):
    """``({hospital id: [pickups, crew late, not ready]}, {awarded agency id: [...]})``: the
    :func:`~dashboard.services.returns.waiting` minutes of each request matching ``where`` (SQL
    conditions on requests) whose crew reached the pickup, summed per hospital and per awarded
    agency (each request's minutes rounded as ``waiting`` rounds them; requests no agency holds
    count for their hospital only), read request by request."""
    return _fold_rows(db.session.execute(_waiting_rows_statement(where)))


def _waiting_rows_statement(where):
    """The times :func:`~dashboard.services.returns.waiting` reads, of the requests matching
    ``where`` whose crew reached the pickup, with their hospital and awarded agency."""
    T = TransportRequest
    return sa.select(T.hospital_id, T.awarded_agency_id, T.window_start, T.at_pickup_at, T.transporting_at,
                     T.patient_ready_at, T.not_ready_at).where(*where, T.at_pickup_at.is_not(None))


def _fold_rows(rows):
    """:func:`_waiting_sums` of the rows of :func:`_waiting_rows_statement`."""
    per_hospital = defaultdict(lambda: [0, 0.0, 0.0])
    per_agency = defaultdict(lambda: [0, 0.0, 0.0])
    for row in rows:
        split = waiting(row)
        for target, key in ((per_hospital, row.hospital_id), (per_agency, row.awarded_agency_id)):
            if key is None:
                continue
            target[key][0] += 1
            target[key][1] += split.crew_late
            target[key][2] += split.not_ready
    return dict(per_hospital), dict(per_agency)


def _rounded_sum(seconds):
    """SQL: the sum over the group of ``round(seconds / 60, 1)`` as :func:`waiting` computes it,
    less the *ties* (an odd multiple of 3 s, so a minute figure ending in 5 hundredths), and the
    array of the ties' seconds.

    ``waiting`` rounds a float (Python's ``round``: the binary value, half to even), PostgreSQL's
    ``round(numeric)`` the exact decimal, half away from zero.  They agree on every value but
    the ties: timestamps are kept to the microsecond, so any other value is at least 1/60,000,000
    of a minute from a half-tenth, far more than a float's error.  The ties are returned as they
    are and rounded in Python (:func:`_add_ties`)."""
    tie = sa.func.mod(seconds, 6) == 3
    return (sa.func.coalesce(sa.func.sum(sa.func.round(seconds / 60, 1)).filter(~tie), 0),
            sa.func.array_agg(seconds).filter(tie))


def _add_ties(total, ties):
    """``total`` (a Decimal sum of tenths) plus each tie's ``round(seconds / 60, 1)`` as
    :func:`waiting` rounds it; a float."""
    return float(total) + sum(round(float(seconds) / 60, 1) for seconds in ties or ())


def _waiting_sums_sql(where):
    """:func:`_waiting_sums` on PostgreSQL: the rule of
    :func:`~dashboard.services.returns.waiting` in SQL, grouped by hospital and, apart, by awarded
    agency (``GROUPING SETS``); the same figures (a test holds the two equal, ties included)."""
    return _fold_sums(db.session.execute(_waiting_sums_statement(where)))


def _waiting_sums_statement(where):
    """PostgreSQL: the statement of :func:`_waiting_sums_sql` for ``where``."""
    T = TransportRequest
    booked, arrival, left = T.window_start, T.at_pickup_at, T.transporting_at
    ready = sa.func.greatest(sa.case(
        (T.patient_ready_at.is_not(None), T.patient_ready_at),
        (sa.and_(T.not_ready_at.is_not(None), left.is_not(None)), left),
        else_=booked), booked)
    until = sa.case((left.is_not(None), sa.func.least(ready, left)), else_=ready)

    def seconds(later, earlier):
        return sa.func.greatest(sa.extract("epoch", later - earlier), 0, type_=sa.Numeric())

    return (sa.select(sa.func.grouping(T.hospital_id), T.hospital_id, T.awarded_agency_id, sa.func.count(T.id),
                      *_rounded_sum(seconds(arrival, ready)),
                      *_rounded_sum(seconds(until, sa.func.greatest(arrival, booked))))
            .where(*where, arrival.is_not(None))
            .group_by(sa.func.grouping_sets(sa.tuple_(T.hospital_id), sa.tuple_(T.awarded_agency_id))))


def _fold_sums(rows):
    """:func:`_waiting_sums_sql` of the rows of :func:`_waiting_sums_statement`."""
    per_hospital, per_agency = {}, {}
    for by_agency, hospital_id, agency_id, n, late, late_ties, not_ready, not_ready_ties in rows:
        target, key = (per_agency, agency_id) if by_agency else (per_hospital, hospital_id)
        if key is not None:
            target[key] = [n, _add_ties(late, late_ties), _add_ties(not_ready, not_ready_ties)]
    return per_hospital, per_agency
