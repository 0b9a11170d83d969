"""Export: the analytics page's tables and the period's trips as CSV, written through
:mod:`dashboard.services.csvout` only (formula cells neutralised, numbers kept, UTF-8 BOM).

The trips export is streamed: rows are read ``batch`` at a time from a server-side cursor as
the response is sent, so a long period never sits in memory.  It has operational columns
only: no patient reference, needs, notes or addresses.
"""
from datetime import UTC

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from ...extensions import db
from ...localtime import local_zone
from ...models.center import Agency, Hospital
from ...models.hospital import HospitalFacility, TransportRequest
from .. import csvout
from .period import posted_in, scope_conditions


def csv_text(table):
    """One table as CSV text (BOM, header row first), through :mod:`.csvout`.

    ``table`` has ``columns`` (``[(label, kind)]``: the labels are the header) and ``rows``
    (lists of plain values)."""
    return csvout.text([label for label, _kind in table.columns], table.rows)


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
        .where(*posted_in(period), *scope_conditions(scope))
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
