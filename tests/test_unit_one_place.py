"""A unit is in one place at a time, and what the screens say of it is true.

- A crew cannot start a second trip while another of its trips is under way (en route, at
  pickup, transporting, at destination): ``route_steps.advance`` refuses it, naming the other
  trip, and the EMS silo's unique index refuses it too.
- The unit's current trip is the one under way, then the next planned one: an award_agency of
  another trip does not replace the trip the crew is driving.
- The crew's steps include "at destination" and "back in service" (which completes the trip
  and frees the unit); each reaches the hospital's trip with its time.
- The last step can be undone within ``route_steps.UNDO_WINDOW``, audited and shown in the
  timelines; later, or once another step was taken, it is refused.
"""
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import AuditLog
from dashboard.models.ems import EmsAgency, EmsRoute, Unit
from dashboard.models.hospital import TransportRequestEvent
from dashboard.services import bidding, route_steps, trips, units
from tests.helpers import (
    AEMS,
    CLL,
    advance,
    award_agency,
    bid,
    new_unit,
    post_request,
    route_of,
    signed_in,
    trip_row,
    unit,
)

COORDINATOR = "coordinator@medport.test"
NURSE = "nurse@altoona.medport.test"


class Clock:
    """The time the crew's steps and their undo read (``route_steps`` and the EMS views)."""

    def __init__(self, monkeypatch):
        self.now = utcnow()
        for module in ("dashboard.services.route_steps", "dashboard.ems.my_trips"):
            monkeypatch.setattr(f"{module}.utcnow", lambda: self.now)

    def advance(self, **delta):
        self.now += timedelta(**delta)


@pytest.fixture
def clock(monkeypatch):
    return Clock(monkeypatch)


def awarded_to(app, deliver, client, number, starts_in):
    """A trip of ALT whose window starts ``starts_in`` from now, awarded to AEMS's unit
    ``number`` and delivered; returns its public id."""
    public_id = post_request(app, starts_in=starts_in)
    assert bid(client, public_id, number, eta="15").status_code == 302
    award_agency(app, public_id, "AEMS")
    deliver()
    return public_id


def undo(client, public_id, step):
    return client.post(f"/ems/trips/{public_id}/undo", data={"step": step})


def trip_card(page, reference):
    """The my-trips card of the trip ``reference``."""
    return next(card for card in page.split('<li class="card trip-card">')[1:] if reference in card)


def unit_row(page, number):
    """The units table row of unit ``number`` (EMS page: a row header; center page: a cell)."""
    for row in re.findall(r"<tr>.*?</tr>", page, re.S):
        if re.search(rf"<t[hd][^>]*>\s*{re.escape(number)}\s*</t[hd]>", row):
            return row
    raise AssertionError(f"no row for {number}")


# --- (a) one trip under way per unit ---------------------------------------------------------

def test_a_unit_under_way_cannot_start_a_second_trip(app, demo, deliver):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    first = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    second = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=9))
    first_ref, second_ref = trip_row(app, first).reference, trip_row(app, second).reference
    assert advance(crew, first, "en_route").status_code == 302

    for step, shown in (("en_route", "en route"), ("at_pickup", "at pickup"),
                        ("transporting", "transporting"), ("at_destination", "at destination")):
        if step != "en_route":
            assert advance(crew, first, step).status_code == 302
        refused = advance(crew, second, "en_route")
        text = refused.get_data(as_text=True)
        assert refused.status_code == 409, step
        assert f"is {shown} on {first_ref}" in text and second_ref in text
        assert route_of(app, second).status == "planned"
    deliver()
    assert trip_row(app, second).status == "awarded"

    # Back in service on the first: the second may start.
    assert advance(crew, first, "back_in_service").status_code == 302
    assert advance(crew, second, "en_route").status_code == 302
    deliver()
    assert trip_row(app, first).status == "completed"
    assert trip_row(app, second).status == "en_route"


def test_the_ems_silo_refuses_a_second_stop_under_way_of_one_unit(app, demo, deliver):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    first = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    second = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=9))
    assert advance(crew, first, "en_route").status_code == 302
    second_route = route_of(app, second)
    with app.app_context():
        with pytest.raises(IntegrityError):
            db.session.execute(sa.update(EmsRoute).where(EmsRoute.id == second_route.id)
                               .values(status="en_route", en_route_at=utcnow()))
            db.session.flush()
        db.session.rollback()


# --- (b) the current trip is the one under way ------------------------------------------------

def test_the_current_trip_stays_the_one_under_way_after_another_award(app, demo, deliver):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    driving = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=9))
    assert advance(crew, driving, "en_route").status_code == 302
    deliver()
    # Awarded later, its window earlier than the trip the crew is driving (not overlapping).
    earlier = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    driving_trip, earlier_trip = trip_row(app, driving), trip_row(app, earlier)
    assert unit(app, "Test 1").current_trip_id == driving_trip.id
    row = unit_row(crew.get("/ems/units/panel").get_data(as_text=True), "Test 1")
    assert driving_trip.reference in row and earlier_trip.reference not in row
    center = signed_in(app, COORDINATOR)
    row = unit_row(center.get("/center/units").get_data(as_text=True), "Test 1")
    assert driving_trip.reference in row and earlier_trip.reference not in row

    # Back in service: the next planned trip becomes the current one.
    for step in trips.CREW_STEPS[1:]:
        assert advance(crew, driving, step).status_code == 302
    deliver()
    assert unit(app, "Test 1").current_trip_id == earlier_trip.id
    assert unit(app, "Test 1").status == "assigned"


# --- (c) at destination and back in service -------------------------------------------------

def test_at_destination_and_back_in_service_reach_the_hospital_with_their_times(app, demo, deliver):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    public_id = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    reference = trip_row(app, public_id).reference
    buttons = []
    for step in trips.CREW_STEPS:
        card = trip_card(crew.get("/ems/trips/panel").get_data(as_text=True), reference)
        buttons.append(re.search(r'class="primary step-button">([^<]+)<', card).group(1))
        assert advance(crew, public_id, step).status_code == 302
        deliver()
        trip, route = trip_row(app, public_id), route_of(app, public_id)
        assert trip.status == route.status == trips.STEP_STATUS[step]
        assert getattr(trip, f"{step}_at") == getattr(route, f"{step}_at") is not None
    assert buttons == ["En route", "At pickup", "Transporting", "At destination", "Back in service"]
    assert trip.completed_at == trip.back_in_service_at
    assert trip.at_destination_at <= trip.back_in_service_at
    assert unit(app, "Test 1").status == "available" and unit(app, "Test 1").current_trip_id is None

    nurse_page = signed_in(app, NURSE).get(f"/hospital/requests/{public_id}").get_data(as_text=True)
    center_page = signed_in(app, COORDINATOR).get(f"/center/requests/{public_id}").get_data(as_text=True)
    for page in (nurse_page, center_page):
        assert "At destination" in page and "Back in service" in page


def test_a_step_reported_as_completed_before_back_in_service_existed_still_completes(app, demo, deliver):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    public_id = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    for step in ("en_route", "at_pickup", "transporting"):
        assert advance(crew, public_id, step).status_code == 302
    deliver()
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        at = utcnow()
        assert trips.apply_crew_step(trip, "completed", at, trip.awarded_agency_id, actor=Actor(None, None, "Test 1"))
        db.session.commit()
        assert (trip.status, trip.completed_at) == ("completed", at)


# --- (d) undo -----------------------------------------------------------------------------

def test_the_last_step_can_be_undone_within_the_window_and_is_audited(app, demo, deliver, clock):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    public_id = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    reference = trip_row(app, public_id).reference
    assert advance(crew, public_id, "en_route").status_code == 302
    clock.advance(minutes=5)
    assert advance(crew, public_id, "at_pickup").status_code == 302
    deliver()
    assert trip_row(app, public_id).status == "at_pickup"

    clock.advance(seconds=90)
    panel = crew.get("/ems/trips/panel").get_data(as_text=True)
    assert "Undo At pickup" in panel and "Undo En route" not in panel
    response = undo(crew, public_id, "at_pickup")
    assert response.status_code == 302
    route = route_of(app, public_id)
    assert route.status == "en_route" and route.at_pickup_at is None and route.en_route_at is not None
    assert "Undo At pickup" not in crew.get("/ems/trips/panel").get_data(as_text=True)
    deliver()
    trip = trip_row(app, public_id)
    assert trip.status == "en_route" and trip.at_pickup_at is None and trip.en_route_at is not None

    with app.app_context():
        undone = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "trip.step_undone")).all()
        assert len(undone) == 1 and undone[0].after["step"] == "at_pickup" and undone[0].user_id
        line = db.session.scalar(sa.select(TransportRequestEvent).where(
            TransportRequestEvent.trip_id == trip.id, TransportRequestEvent.action == "step_undone"))
        assert (line.from_status, line.to_status, line.note) == ("at_pickup", "en_route", "Undid at pickup")
    for page in (signed_in(app, NURSE).get(f"/hospital/requests/{public_id}"),
                 signed_in(app, COORDINATOR).get(f"/center/requests/{public_id}")):
        assert "Step undone" in page.get_data(as_text=True)
        assert "Undid at pickup" in page.get_data(as_text=True)

    # The crew takes it again; the hospital follows.
    assert advance(crew, public_id, "at_pickup").status_code == 302
    deliver()
    assert trip_row(app, public_id).status == "at_pickup"
    assert reference in crew.get("/ems/trips/panel").get_data(as_text=True)


def test_undo_is_refused_after_the_window_or_after_a_later_step(app, demo, deliver, clock):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    public_id = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    assert advance(crew, public_id, "en_route").status_code == 302
    assert advance(crew, public_id, "at_pickup").status_code == 302
    later = undo(crew, public_id, "en_route")
    assert later.status_code == 409 and "later step" in later.get_data(as_text=True)

    clock.advance(seconds=route_steps.UNDO_WINDOW.total_seconds())
    assert "Undo At pickup" not in crew.get("/ems/trips/panel").get_data(as_text=True)
    late = undo(crew, public_id, "at_pickup")
    assert late.status_code == 409 and "can no longer be undone" in late.get_data(as_text=True)
    assert route_of(app, public_id).status == "at_pickup"
    assert undo(crew, public_id, "flying").status_code == 400
    assert undo(signed_in(app, CLL), public_id, "at_pickup").status_code == 404
    deliver()
    assert trip_row(app, public_id).status == "at_pickup"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id))
                                 .where(AuditLog.action == "trip.step_undone")) == 0


def test_undoing_back_in_service_puts_the_unit_back_on_the_trip(app, demo, deliver, clock):
    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    public_id = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    other = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=9))
    for step in trips.CREW_STEPS:
        assert advance(crew, public_id, step).status_code == 302
    deliver()
    assert trip_row(app, public_id).status == "completed"
    assert unit(app, "Test 1").current_trip_id == trip_row(app, other).id

    assert undo(crew, public_id, "back_in_service").status_code == 302
    deliver()
    trip = trip_row(app, public_id)
    assert trip.status == "at_destination" and trip.completed_at is None and trip.back_in_service_at is None
    assert unit(app, "Test 1").current_trip_id == trip.id and unit(app, "Test 1").status == "assigned"

    # Back in service again, and the other trip started: undoing back in service would put
    # the unit under way on two trips.
    assert advance(crew, public_id, "back_in_service").status_code == 302
    assert advance(crew, other, "en_route").status_code == 302
    refused = undo(crew, public_id, "back_in_service")
    assert refused.status_code == 409 and trip_row(app, other).reference in refused.get_data(as_text=True)


def test_with_the_hospital_silo_down_crews_take_and_undo_steps_and_the_trip_catches_up(
        backend, app, demo, deliver, clock):
    if backend != "postgres":
        pytest.skip("stopping one silo's database is done on PostgreSQL")
    from tests.helpers import converge, silo_stopped

    new_unit(app, "AEMS", "Test 1")
    crew = signed_in(app, AEMS)
    public_id = awarded_to(app, deliver, crew, "Test 1", timedelta(hours=3))
    reference = trip_row(app, public_id).reference
    with silo_stopped(app, "hospital"):
        for step in ("en_route", "at_pickup"):
            assert advance(crew, public_id, step).status_code == 302
        card = trip_card(crew.get("/ems/trips/panel").get_data(as_text=True), reference)
        assert "Undo At pickup" in card
        assert undo(crew, public_id, "at_pickup").status_code == 302
        for step in ("at_pickup", "transporting", "at_destination"):
            assert advance(crew, public_id, step).status_code == 302
    assert converge(app) == {"center": 0, "hospital": 0, "ems": 0}
    trip = trip_row(app, public_id)
    assert trip.status == "at_destination" and trip.at_pickup_at is not None
    with app.app_context():
        actions = list(db.session.scalars(sa.select(TransportRequestEvent.action).where(
            TransportRequestEvent.trip_id == trip.id).order_by(TransportRequestEvent.id)))
    assert actions[-6:] == ["en_route", "at_pickup", "step_undone", "at_pickup", "transporting",
                            "at_destination"]


def test_unit_refusals_are_unit_refusals_with_their_status(app, demo):
    """A unit edit the rules refuse raises the units service's own refusal (not a bid's), with
    the status the page answers: 400 bad input, 409 a conflict."""
    with app.app_context():
        agency = db.session.scalar(sa.select(EmsAgency).order_by(EmsAgency.id))
        existing = db.session.scalar(sa.select(Unit).where(Unit.agency_id == agency.id).order_by(Unit.id))
        levels = agency.levels.split(",")
        with pytest.raises(units.UnitRefused) as duplicate:
            units.create_unit(agency.id, levels, existing.number, existing.level, actor=Actor(None))
        assert duplicate.value.status == 409 and existing.number in duplicate.value.message
        db.session.rollback()
        with pytest.raises(units.UnitRefused) as bad_level:
            units.create_unit(agency.id, levels, "Medic 999", "XYZ", actor=Actor(None))
        assert bad_level.value.status == 400
        assert not isinstance(bad_level.value, bidding.BidRefused)
