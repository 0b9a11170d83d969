"""The center's units overview: every agency's active units with their status, crew and current
trip, and the units available per level and agency.

Reads only: units from the EMS silo, agencies from the center registry, current trips from the
hospital silo (or, while it is down, from the units' routes in the EMS silo); three queries
whatever the number of units.
"""
from types import SimpleNamespace
from typing import NamedTuple

import sqlalchemy as sa

from ..extensions import db
from ..models.base import utcnow
from ..models.center import Agency
from ..models.ems import EmsRoute, Unit
from ..models.hospital import TransportRequest
from ..models.vocabulary import LEVELS
from . import degraded, statements
from .center_reads import registry_names


class UnitRow(NamedTuple):
    """One unit of the overview (a named tuple: the page reads it hundreds of times)."""

    unit: object  # the columns of :data:`_UNIT_COLUMNS` (a named tuple, read like a Unit)
    agency: Agency | None
    trip: object = None  # (public_id, reference, status, hospital_id, ...) of its current trip


#: What the units overview reads of each unit.
_UNIT_COLUMNS = (Unit.id, Unit.agency_id, Unit.number, Unit.level, Unit.status, Unit.base_station,
                 Unit.updated_at, Unit.current_trip_id)


def units_overview(agency_id=None, level=None, status=None):
    """Every agency's active units with their status and current trip; available counts.

    Returns ``{"rows": [UnitRow], "available": {level: count}, "by_agency": [(agency entry,
    {level: [available, total]})], "agencies": {...}, "now": naive UTC}`` (``now``: the time the
    page's relative times and late badges are read at).

    Three queries whatever the number of units: units (EMS), agencies (center),
    current trips (hospital, one ``IN``).  Units are read as the columns the page shows
    (:data:`_UNIT_COLUMNS`), not as ORM objects: a region has hundreds of them.
    """
    _hospitals, agencies = registry_names()
    query = sa.select(*_UNIT_COLUMNS).where(Unit.active.is_(True))
    if agency_id:
        query = query.where(Unit.agency_id == agency_id)
    if level:
        query = query.where(Unit.level == level)
    if status:
        query = query.where(Unit.status == status)
    units = statements.plain_rows(db.session.execute(query.order_by(Unit.agency_id, Unit.number)))
    trip_ids = {u.current_trip_id for u in units if u.current_trip_id}
    trips = {}
    if trip_ids:
        trips = degraded.optional("hospital", lambda: {row.id: row for row in statements.plain_rows(db.session.execute(
            sa.select(TransportRequest.id, TransportRequest.public_id, TransportRequest.reference,
                      TransportRequest.status, TransportRequest.hospital_id,
                      TransportRequest.window_start, TransportRequest.window_end,  # the late flag
                      TransportRequest.at_pickup_at, TransportRequest.transporting_at)
            .where(TransportRequest.id.in_(trip_ids))
        ))})
        if trips is None:  # the hospital silo is down: the trips as the units' routes know them
            trips = _trips_from_routes(trip_ids)
    rows = [UnitRow(u, agencies.get(u.agency_id), trips.get(u.current_trip_id)) for u in units]
    rows.sort(key=lambda r: ((r.agency.name if r.agency else ""), r.unit.number))
    available = {lv: 0 for lv in LEVELS}
    matrix = {}
    for agency_key, lv, unit_status, count in db.session.execute(
        sa.select(Unit.agency_id, Unit.level, Unit.status, sa.func.count(Unit.id))
        .where(Unit.active.is_(True)).group_by(Unit.agency_id, Unit.level, Unit.status)
    ):
        cell = matrix.setdefault(agency_key, {level_: [0, 0] for level_ in LEVELS})
        cell[lv][1] += count
        if unit_status == "available":
            cell[lv][0] += count
            available[lv] += count
    by_agency = [(agencies.get(key), cells) for key, cells in matrix.items()]
    by_agency.sort(key=lambda pair: pair[0].name if pair[0] else "")
    return {"rows": rows, "available": available, "by_agency": by_agency, "agencies": agencies,
            "now": utcnow()}


#: A route's status as the trip's status (a planned stop is an awarded trip).
_ROUTE_TO_TRIP_STATUS = {"planned": "awarded"}


def _trips_from_routes(trip_ids):
    """``{trip id: row}`` of trips as the EMS silo's routes know them (id, public id, reference,
    status, window and step times, for the late flag; hospital unknown): what the units page shows while the hospital silo is down."""
    found = {}
    for route in db.session.scalars(sa.select(EmsRoute).where(EmsRoute.trip_id.in_(trip_ids))
                                    .order_by(EmsRoute.id)):
        found[route.trip_id] = SimpleNamespace(
            id=route.trip_id, public_id=route.trip_public_id, reference=route.trip_reference,
            status=_ROUTE_TO_TRIP_STATUS.get(route.status, route.status), hospital_id=None,
            window_start=route.window_start, window_end=route.window_end,
            at_pickup_at=route.at_pickup_at, transporting_at=route.transporting_at)
    return found
