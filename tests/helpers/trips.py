"""Requests, bids and awards made as the views make them: through the services, then one
commit per silo.

``post_trip``, ``place_bid``, ``award``, ``outbox_types``, ``pending``, ``hospital``, ``agency``
and ``free_unit`` run inside an app context and take or return row ids; the others open their
own app context and take or return public ids.
"""
from datetime import timedelta

import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, Hospital, User
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import (
    HospitalFacility,
    TransportRequest,
)
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import bidding, configuration, deadlines, trip_posting, trips
from dashboard.services.deadlines import bid_for_award


def hospital(code):
    """The center's hospital row with short code ``code`` (inside an app context)."""
    return db.session.scalar(sa.select(Hospital).where(Hospital.short_code == code))


def agency(code):
    """The center's agency row with short code ``code`` (inside an app context)."""
    return db.session.scalar(sa.select(Agency).where(Agency.short_code == code))


def post_trip(code="ALT", level="BLS", invite_mode="all", deadline_minutes=30, commit=True):
    """Post an open request for hospital ``code``; return its id."""
    org = hospital(code)
    facilities = db.session.scalars(sa.select(HospitalFacility).where(
        HospitalFacility.hospital_id == org.id).order_by(HospitalFacility.id)).all()
    destination = db.session.scalar(sa.select(HospitalFacility).where(
        HospitalFacility.hospital_id != org.id).order_by(HospitalFacility.id).limit(1))
    now = utcnow()
    fields = dict(
        origin_facility_id=facilities[0].id, pickup_location="4 West, room 412",
        destination_facility_id=destination.id, level_of_care=level, mobility="stretcher",
        urgency="routine", window_start=now + timedelta(hours=6), window_end=now + timedelta(hours=7),
        age_group="adult", weight_kg=80, bid_deadline=now + timedelta(minutes=deadline_minutes),
        invite_mode=invite_mode, invite_all_after_minutes=10 if invite_mode == "preferred_then_all" else None,
    )
    nurse = db.session.scalar(sa.select(User.id).where(User.hospital_id == org.id).limit(1))
    trip = trip_posting.post(org.id, org.short_code, fields, actor=Actor(nurse, None, "Charge Nurse"))
    trip_id = trip.id
    if commit:
        db.session.commit()
    return trip_id


def free_unit(agency_id, trip):
    """An active unit of the agency able to serve ``trip``, with no bid overlapping its window."""
    busy = sa.select(TransportBid.unit_id).where(
        TransportBid.status.in_(("live", "accepted")), TransportBid.window_start < trip.window_end,
        TransportBid.window_end > trip.window_start)
    levels = ("BLS", "ALS", "CCT")
    for unit in db.session.scalars(sa.select(Unit).where(
            Unit.agency_id == agency_id, Unit.active.is_(True), Unit.id.not_in(busy),
            Unit.status.in_(("available", "assigned"))).order_by(Unit.id)):
        if levels.index(unit.level) >= levels.index(trip.level_of_care):
            return unit
    raise AssertionError(f"no free unit for agency {agency_id}")


def place_bid(trip_id, agency_code, eta):
    """This agency's bid on the trip with a free unit; return the bid id."""
    org = agency(agency_code)
    trip = db.session.get(TransportRequest, trip_id)
    unit = free_unit(org.id, trip)
    bid = bidding.place(trip, org.id, org.name, org.level_list, unit.id, str(eta), "", actor=Actor(None))
    bid_id = bid.id
    db.session.commit()
    return bid_id


def award(trip_id, bid_id):
    """The hospital awards the trip to the bid."""
    offer = bid_for_award(db.session.get(TransportBid, bid_id))
    db.session.commit()  # end the EMS and center reads before the hospital write
    trips.award(db.session.get(TransportRequest, trip_id), offer, actor=Actor(None, None, "Charge Nurse"))
    db.session.commit()


def outbox_types(silo, entity_id=None):
    """The event types of ``silo``'s outbox, oldest first; only the entity's when ``entity_id`` is given."""
    model = OUTBOX_BY_SILO[silo]
    query = sa.select(model.type).order_by(model.id)
    if entity_id is not None:
        query = query.where(model.entity_id == str(entity_id))
    return list(db.session.scalars(query))


def pending(silo):
    """How many events of ``silo``'s outbox are still pending."""
    model = OUTBOX_BY_SILO[silo]
    return db.session.scalar(sa.select(sa.func.count(model.id)).where(model.status == "pending"))


def awarded_trip(app, deliver):
    """A posted trip with two bids (AEMS ETA 20, CLL ETA 12), all delivered; returns ids."""
    with app.app_context():
        trip_id = post_trip()
        aems = place_bid(trip_id, "AEMS", 20)
        cll = place_bid(trip_id, "CLL", 12)
    deliver()
    return trip_id, aems, cll


def post_request(app, level="BLS", urgency="routine", invite_mode="all", starts_in=timedelta(days=2),
              deadline_in=timedelta(minutes=30), origin="Altoona Regional Medical Center",
              destination="Tyrone Area Hospital", hospital="ALT", minutes=60, after_minutes=None):
    """Post a trip as the hospital would; return its public id.  Bidding opens at posting: the
    region's bidding lead times are set to their longest (14 days; booking ahead has its own
    tests in ``test_scheduled``)."""
    with app.app_context():
        for key in configuration.LEAD_SETTINGS.values():
            if configuration.get(key) != 14 * 24:
                configuration.set_value(key, 14 * 24, None)
        db.session.commit()
        hosp = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == hospital))
        nurse = db.session.scalar(sa.select(User).where(User.hospital_id == hosp.id))
        facility = {f.name: f for f in db.session.scalars(sa.select(HospitalFacility))}
        now = utcnow()
        fields = dict(
            origin_facility_id=facility[origin].id, pickup_location="4 West, room 412",
            destination_facility_id=facility[destination].id, level_of_care=level,
            mobility="stretcher", urgency=urgency, window_start=now + starts_in,
            window_end=now + starts_in + timedelta(minutes=minutes), patient_ref="",
            age_group="adult", weight_kg=80, oxygen_lpm=2, cardiac_monitor=level != "BLS",
            other_needs="Fall risk", bid_deadline=now + deadline_in, invite_mode=invite_mode,
            invite_all_after_minutes=after_minutes)
        trip = trip_posting.post(hosp.id, hosp.short_code, fields, actor=Actor(nurse.id, None, nurse.display_name))
        db.session.commit()
        return trip.public_id


def trip_row(app, public_id):
    """The request as stored now (detached)."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        db.session.expunge(trip)
        return trip


def set_trip(app, public_id, **values):
    """Change a trip directly in the hospital silo (time travel for deadlines and invitations)."""
    with app.app_context():
        db.session.execute(sa.update(TransportRequest)
                           .where(TransportRequest.public_id == public_id).values(**values))
        db.session.commit()


def unit(app, number):
    """The unit numbered ``number`` (detached)."""
    with app.app_context():
        row = db.session.scalar(sa.select(Unit).where(Unit.number == number))
        db.session.expunge(row)
        return row


def new_unit(app, agency_code, number, level="BLS"):
    """A unit of the agency with no trips of its own (the demo's units carry demo trips)."""
    with app.app_context():
        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == agency_code))
        row = Unit(agency_id=agency_id, number=number, level=level, status="available")
        db.session.add(row)
        db.session.commit()
        return row.public_id


def bids_of(app, public_id, agency_code=None):
    """The request's bids, oldest first, only the agency's when ``agency_code`` is given (detached)."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        query = sa.select(TransportBid).where(TransportBid.trip_id == trip.id)
        if agency_code:
            agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == agency_code))
            query = query.where(TransportBid.agency_id == agency_id)
        rows = list(db.session.scalars(query.order_by(TransportBid.id)))
        for row in rows:
            db.session.expunge(row)
        return rows


def bid(client, public_id, unit_number, eta="20", note=""):
    """Post the EMS bid form for the request with the unit numbered ``unit_number``; return the response."""
    app_unit = unit(client.application, unit_number)
    return client.post(f"/ems/requests/{public_id}/bid",
                       data={"unit": app_unit.public_id, "eta_minutes": eta, "note": note})


def award_agency(app, public_id, agency_code):
    """Award the agency's live bid, as the hospital would."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == agency_code))
        live = db.session.scalar(sa.select(TransportBid).where(
            TransportBid.trip_id == trip.id, TransportBid.agency_id == agency_id,
            TransportBid.status == "live"))
        trips.award(trip, deadlines.bid_for_award(live), actor=Actor(None, None, "Charge Nurse (ALT)"))
        db.session.commit()


def route_of(app, public_id):
    """The newest EMS route of the request (detached), or None."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip.id)
                                  .order_by(EmsRoute.id.desc()))
        if route is not None:
            db.session.expunge(route)
        return route


def advance(client, public_id, step):
    """Post a crew step (``en_route``, ``at_pickup`` ...) for the trip; return the response."""
    return client.post(f"/ems/trips/{public_id}/advance", data={"step": step})


def post_ahead(level="BLS", days=5, deadline_minutes=30, invite_mode="all", hours_long=1):
    """Post (service level) a routine request of Altoona picked up ``days`` from now; its id."""
    from dashboard.models.hospital import HospitalFacility

    org = hospital("ALT")
    facilities = db.session.scalars(sa.select(HospitalFacility).where(
        HospitalFacility.hospital_id == org.id).order_by(HospitalFacility.id)).all()
    destination = db.session.scalar(sa.select(HospitalFacility).where(
        HospitalFacility.hospital_id != org.id).order_by(HospitalFacility.id).limit(1))
    now = utcnow()
    start = now + timedelta(days=days)
    fields = dict(
        origin_facility_id=facilities[0].id, pickup_location="Dialysis chair 3",
        destination_facility_id=destination.id, level_of_care=level, mobility="wheelchair",
        urgency="routine", window_start=start, window_end=start + timedelta(hours=hours_long),
        age_group="adult", weight_kg=80, bid_deadline=now + timedelta(minutes=deadline_minutes),
        invite_mode=invite_mode, invite_all_after_minutes=10 if invite_mode == "preferred_then_all" else None)
    trip = trip_posting.post(org.id, org.short_code, fields, actor=Actor(1, None, "Charge Nurse"))
    db.session.commit()
    return trip.id
