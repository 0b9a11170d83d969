"""Units, their availability windows and their day's route, owned by the EMS silo.

Functions here write the EMS silo only (they read the hospital silo where a
trip's facts are needed) and do not commit.  Refusals are :class:`UnitRefused` with a
message for the user.
``actor`` (keyword, a :class:`dashboard.events.outbox.Actor`) is who acts: its ``user_id``
and ``ip`` go on the outbox event.
"""
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from ..events.outbox import emit
from ..extensions import db
from ..models.base import row_id, utcnow
from ..models.ems import EmsRoute, TransportBid, Unit, UnitAvailability
from ..models.hospital import HospitalFacility, TransportRequest
from ..models.vocabulary import LEVEL_RANK, UNIT_STATUSES
from .bidding import ACTIVE_ROUTE_STATUSES
from .geo import distance_km
from .refusals import Refused
from .route_steps import current_route


class UnitRefused(Refused):
    """A unit or availability change the rules do not allow (409 unless it says otherwise);
    ``message`` is for the user."""


AVAILABILITY_KINDS = {"on_shift": "On shift", "on_break": "On break", "out_of_service": "Out of service"}
#: What a timeline cell shows when several things cover it: the strongest wins.
CELL_PRIORITY = {"off": 0, "on_shift": 1, "trip": 2, "on_break": 3, "out_of_service": 4}
CELL_LABELS = dict(AVAILABILITY_KINDS, off="Off shift", trip="On a trip")
CELL_MINUTES = 30
CELLS_PER_DAY = 24 * 60 // CELL_MINUTES
MAX_WINDOW_HOURS = 7 * 24
#: A request "chains well" when its pickup is this close to the last drop-off.
CHAIN_RADIUS_KM = 40
CHAIN_SUGGESTIONS = 5
ROUTE_SHOWN_STATUSES = ACTIVE_ROUTE_STATUSES + ("completed",)
CSV_CHUNK = 500


# --- units ------------------------------------------------------------------------------

def agency_units(agency_id):
    """Every unit of the agency, by number."""
    return list(db.session.scalars(
        sa.select(Unit).where(Unit.agency_id == agency_id).order_by(Unit.number, Unit.id)))


def unit_of_agency(public_id, agency_id):
    """One of this agency's units, or None (another agency's unit is not found)."""
    return db.session.scalar(
        sa.select(Unit).where(Unit.public_id == str(public_id), Unit.agency_id == agency_id))


def unit_id_by_public_id(public_id):
    """The id of the unit ``public_id`` of any agency, or None: for a form naming a unit, so the
    service that checks it can say clearly when it is not the agency's."""
    return db.session.scalar(sa.select(Unit.id).where(Unit.public_id == str(public_id or "")))


def active_route(unit):
    """The unit's current stop: the trip under way, else its next planned one by window start
    (see :func:`dashboard.services.route_steps.current_route`); None without one."""
    return current_route(unit.id)


def _unit_event(unit, actor):
    emit("ems", "unit.status_changed", "unit", unit.public_id,
         {"unit_id": unit.id, "agency_id": unit.agency_id, "status": unit.status}, actor=actor)


def _unit_changed(unit, change, actor, **detail):
    """Record an edit of a unit or of its availability (audited by the relay, shown live)."""
    emit("ems", "unit.changed", "unit", unit.public_id,
         {"unit_id": unit.id, "agency_id": unit.agency_id, "status": unit.status,
          "change": change, **{k: str(v) if v is not None else None for k, v in detail.items()}}, actor=actor)


def _clean_unit_fields(agency_id, agency_levels, number, level, unit_id=None):
    number = (number or "").strip()
    if not number or len(number) > 20:
        raise UnitRefused("Give the unit a number of 1 to 20 characters.", status=400)
    if level not in LEVEL_RANK:
        raise UnitRefused("Choose BLS, ALS or CCT.", status=400)
    if level not in agency_levels:
        raise UnitRefused(f"Your agency is not registered for {level}; ask the transport center.",
                         status=400)
    taken = db.session.scalar(
        sa.select(Unit.id).where(Unit.agency_id == agency_id, Unit.number == number,
                                 *([Unit.id != unit_id] if unit_id else [])))
    if taken is not None:
        raise UnitRefused(f"Your agency already has a unit numbered {number}.")
    return number


def create_unit(agency_id, agency_levels, number, level, base_station="", shift_start=None,
                shift_end=None, *, actor):
    """Add a unit (available); emits ``unit.status_changed`` so live pages show it."""
    number = _clean_unit_fields(agency_id, agency_levels, number, level)
    unit = Unit(agency_id=agency_id, number=number, level=level,
                base_station=(base_station or "").strip()[:120], status="available",
                shift_start=shift_start, shift_end=shift_end, updated_at=utcnow())
    db.session.add(unit)
    db.session.flush()
    _unit_event(unit, actor)
    return unit


def update_unit(unit, agency_levels, number, level, base_station="", shift_start=None, shift_end=None,
                *, actor):
    """Change a unit's number, level, base or shift.

    A unit cannot drop below the level of a trip it is bid or booked for.
    """
    number = _clean_unit_fields(unit.agency_id, agency_levels, number, level, unit_id=unit.id)
    if LEVEL_RANK[level] < LEVEL_RANK[unit.level]:
        trip_ids = set(db.session.scalars(
            sa.select(TransportBid.trip_id).where(TransportBid.unit_id == unit.id,
                                                  TransportBid.status.in_(("live", "accepted")))))
        trip_ids.update(db.session.scalars(
            sa.select(EmsRoute.trip_id).where(EmsRoute.unit_id == unit.id,
                                              EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))))
        needed = db.session.scalars(
            sa.select(TransportRequest.level_of_care).where(TransportRequest.id.in_(trip_ids))
        ) if trip_ids else []
        if any(LEVEL_RANK[need] > LEVEL_RANK[level] for need in needed):
            raise UnitRefused(f"{unit.number} is bid or booked for a trip that needs more than "
                             f"{level}; withdraw or hand it back first.")
    unit.number, unit.level = number, level
    unit.base_station = (base_station or "").strip()[:120]
    unit.shift_start, unit.shift_end = shift_start, shift_end
    unit.updated_at = utcnow()
    db.session.flush()
    _unit_changed(unit, "edited", actor, number=unit.number, level=unit.level, base_station=unit.base_station,
                  shift_start=shift_start, shift_end=shift_end)
    return unit


def change_status(unit, status, *, actor):
    """Set a unit's status; emits ``unit.status_changed``.  Returns False when nothing changed.

    A unit with an active trip is assigned, never available; only an award
    assigns a unit; a unit on a trip under way cannot go on break or out of
    service, and one with a planned trip cannot go out of service.
    """
    if status not in UNIT_STATUSES:
        raise UnitRefused("Choose one of the listed statuses.", status=400)
    if status == unit.status:
        return False
    route = active_route(unit)
    if status == "available" and route is not None:
        raise UnitRefused(f"{unit.number} has an active trip ({route.trip_reference}); it stays "
                         "assigned until the trip is completed or handed back.")
    if status == "assigned" and route is None:
        raise UnitRefused(f"{unit.number} has no trip; a unit is assigned when it wins one.")
    if status in ("on_break", "out_of_service") and route is not None:
        if route.status != "planned":
            raise UnitRefused(f"{unit.number} is on a trip ({route.trip_reference}, "
                             f"{route.status.replace('_', ' ')}); complete it first.")
        if status == "out_of_service":
            raise UnitRefused(f"{unit.number} has a planned trip ({route.trip_reference}); "
                             "hand it back before taking the unit out of service.")
    unit.status = status
    unit.updated_at = utcnow()
    db.session.flush()
    _unit_event(unit, actor)
    return True


# --- availability -----------------------------------------------------------------------

def add_availability(unit, kind, starts_at, ends_at, note="", *, actor):
    """Add an on-shift, break or out-of-service window (naive UTC) to a unit."""
    if kind not in AVAILABILITY_KINDS:
        raise UnitRefused("Choose on shift, on break or out of service.", status=400)
    if starts_at is None or ends_at is None:
        raise UnitRefused("Give the window a start and an end.", status=400)
    if ends_at <= starts_at:
        raise UnitRefused("The window must end after it starts.", status=400)
    if ends_at - starts_at > timedelta(hours=MAX_WINDOW_HOURS):
        raise UnitRefused(f"A window may last at most {MAX_WINDOW_HOURS // 24} days.", status=400)
    clash = db.session.scalar(
        sa.select(UnitAvailability.id).where(UnitAvailability.unit_id == unit.id,
                                             UnitAvailability.kind == kind,
                                             UnitAvailability.starts_at < ends_at,
                                             UnitAvailability.ends_at > starts_at).limit(1))
    if clash is not None:
        raise UnitRefused(f"{unit.number} already has an overlapping "
                         f"{AVAILABILITY_KINDS[kind].lower()} window.")
    window = UnitAvailability(unit_id=unit.id, kind=kind, starts_at=starts_at, ends_at=ends_at,
                              note=(note or "").strip()[:200])
    db.session.add(window)
    db.session.flush()
    _unit_changed(unit, "availability_added", actor, kind=kind, starts_at=starts_at, ends_at=ends_at)
    return window


def window_of_agency(window_id, agency_id):
    """One availability window of this agency's units, or None."""
    window_id = row_id(window_id)
    if window_id is None:
        return None
    return db.session.scalar(
        sa.select(UnitAvailability).join(Unit, UnitAvailability.unit_id == Unit.id)
        .where(UnitAvailability.id == window_id, Unit.agency_id == agency_id))


def remove_availability(window, *, actor):
    """Delete an availability window."""
    if window is None:
        raise UnitRefused("No such window.", status=404)
    _unit_changed(window.unit, "availability_removed", actor, kind=window.kind,
                  starts_at=window.starts_at, ends_at=window.ends_at)
    db.session.delete(window)
    db.session.flush()


def agency_windows(agency_id, starts, ends):
    """The agency's availability windows overlapping ``[starts, ends)``, by unit and start."""
    return list(db.session.scalars(
        sa.select(UnitAvailability).join(Unit, UnitAvailability.unit_id == Unit.id)
        .where(Unit.agency_id == agency_id, UnitAvailability.starts_at < ends,
               UnitAvailability.ends_at > starts)
        .order_by(Unit.number, UnitAvailability.starts_at)))


def day_timeline(units, windows, routes, day_start):
    """Per unit, 48 half-hour cells from ``day_start`` (naive UTC), each with a kind.

    A cell takes the strongest of what covers it: out of service, break, trip,
    shift, else off.  Returns ``[(unit, [{"kind", "starts_at"}, ...]), ...]``.
    """
    spans = {}
    for window in windows:
        spans.setdefault(window.unit_id, []).append((window.starts_at, window.ends_at, window.kind))
    for route in routes:
        spans.setdefault(route.unit_id, []).append((route.window_start, route.window_end, "trip"))
    rows = []
    for unit in units:
        cells = []
        for index in range(CELLS_PER_DAY):
            start = day_start + timedelta(minutes=CELL_MINUTES * index)
            end = start + timedelta(minutes=CELL_MINUTES)
            kind = "off"
            for s, e, k in spans.get(unit.id, ()):
                if s < end and e > start and CELL_PRIORITY[k] > CELL_PRIORITY[kind]:
                    kind = k
            cells.append({"kind": kind, "starts_at": start})
        rows.append((unit, cells))
    return rows


# --- routes -----------------------------------------------------------------------------

def day_routes(agency_id, starts, ends, unit_id=None):
    """The agency's trips whose window starts in ``[starts, ends)``, by unit, time, position.

    Handed-back and cancelled stops are left out: they are no longer the unit's.
    """
    days = []
    day = starts.date()
    while day <= ends.date():
        days.append(day)
        day += timedelta(days=1)
    query = (
        sa.select(EmsRoute)
        .where(EmsRoute.agency_id == agency_id, EmsRoute.service_date.in_(days),
               EmsRoute.window_start >= starts, EmsRoute.window_start < ends,
               EmsRoute.status.in_(ROUTE_SHOWN_STATUSES))
        .order_by(EmsRoute.unit_id, EmsRoute.window_start, EmsRoute.position)
    )
    if unit_id is not None:
        query = query.where(EmsRoute.unit_id == unit_id)
    return list(db.session.scalars(query))


def stops_with_deadhead(unit, routes):
    """Each stop with the empty distance driven to reach its pickup.

    The first stop counts from the unit's base; the others from the previous drop-off.
    """
    stops = []
    previous = None
    for route in routes:
        if previous is None:
            deadhead = distance_km(unit.lat, unit.lon, route.pickup_lat, route.pickup_lon)
        else:
            deadhead = distance_km(previous.dropoff_lat, previous.dropoff_lon,
                                   route.pickup_lat, route.pickup_lon)
        leg = distance_km(route.pickup_lat, route.pickup_lon, route.dropoff_lat, route.dropoff_lon)
        stops.append({"route": route, "deadhead_km": deadhead, "leg_km": leg,
                      "from_base": previous is None})
        previous = route
    return stops


def trip_coordinates(trip):
    """(pickup lat, lon, drop-off lat, lon) of a hospital trip, from its facilities."""
    origin, destination = trip.origin, trip.destination
    if destination is not None:
        drop = (destination.lat, destination.lon)
    else:
        drop = (trip.destination_lat, trip.destination_lon)
    return origin.lat, origin.lon, drop[0], drop[1]


def chain_suggestions(unit, last_route, open_trips, now=None):
    """Open requests that follow ``last_route`` well for ``unit``.

    ``open_trips`` are requests the agency may serve (see
    :func:`bidding.open_requests`).  Kept: bidding still open, a level the unit
    covers, a window starting after the last trip's window ends, a pickup within
    :data:`CHAIN_RADIUS_KM` of its drop-off.  Nearest first.
    """
    if last_route is None:
        return []
    now = now or utcnow()
    found = []
    for trip in open_trips:
        if trip.bid_deadline <= now or LEVEL_RANK[trip.level_of_care] > LEVEL_RANK[unit.level]:
            continue
        if trip.window_start < last_route.window_end:
            continue
        pickup_lat, pickup_lon, _lat, _lon = trip_coordinates(trip)
        gap = distance_km(last_route.dropoff_lat, last_route.dropoff_lon, pickup_lat, pickup_lon)
        if gap is None or gap > CHAIN_RADIUS_KM:
            continue
        found.append({"trip": trip, "deadhead_km": gap,
                      "wait_minutes": int((trip.window_start - last_route.window_end).total_seconds() // 60)})
    found.sort(key=lambda s: (s["deadhead_km"], s["trip"].window_start))
    return found[:CHAIN_SUGGESTIONS]


def completed_trip_rows(agency_id):
    """The agency's completed trips, oldest first, with the hospital's recorded times.

    Read in chunks (EMS routes, then their trips from the hospital silo), so an
    export of any size is streamed.  No patient data: reference, unit, facility
    names and times; a destination that is not a facility (a home address) is not named.
    """
    origin = aliased(HospitalFacility)
    destination = aliased(HospitalFacility)
    last_id = 0
    while True:
        chunk = db.session.execute(
            sa.select(EmsRoute, Unit.number, Unit.level)
            .join(Unit, EmsRoute.unit_id == Unit.id)
            .where(EmsRoute.agency_id == agency_id, EmsRoute.status == "completed",
                   EmsRoute.id > last_id)
            .order_by(EmsRoute.id).limit(CSV_CHUNK)
        ).all()
        if not chunk:
            return
        trip_ids = [route.trip_id for route, _n, _l in chunk]
        trips = {
            row.id: row for row in db.session.execute(
                sa.select(TransportRequest.id, TransportRequest.level_of_care,
                          TransportRequest.urgency, TransportRequest.en_route_at,
                          TransportRequest.at_pickup_at, TransportRequest.transporting_at,
                          TransportRequest.completed_at, origin.name.label("origin_name"),
                          destination.name.label("destination_name"))
                .join(origin, TransportRequest.origin_facility_id == origin.id)
                .outerjoin(destination, TransportRequest.destination_facility_id == destination.id)
                .where(TransportRequest.id.in_(trip_ids)))
        }
        for route, number, level in chunk:
            yield {"route": route, "unit_number": number, "unit_level": level,
                   "trip": trips.get(route.trip_id)}
            db.session.expunge(route)
        last_id = chunk[-1][0].id
