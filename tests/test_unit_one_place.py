"""What the screens say of a unit and its trip is true.

- The crew's steps include "at destination" and "back in service" (which completes the trip
  and frees the unit); each reaches the hospital's trip with its time.
"""
import re
from datetime import timedelta

from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.services import trips
from tests.test_ems import (
    AEMS,
    advance,
    award,
    bid,
    new_unit,
    post_trip,
    route_of,
    signed_in,
    trip_row,
    unit,
)

COORDINATOR = "coordinator@medport.test"
NURSE = "nurse@altoona.medport.test"


def awarded_to(app, deliver, client, number, starts_in):
    """A trip of ALT whose window starts ``starts_in`` from now, awarded to AEMS's unit
    ``number`` and delivered; returns its public id."""
    public_id = post_trip(app, starts_in=starts_in)
    assert bid(client, public_id, number, eta="15").status_code == 302
    award(app, public_id, "AEMS")
    deliver()
    return public_id


def trip_card(page, reference):
    """The my-trips card of the trip ``reference``."""
    return next(card for card in page.split('<li class="card trip-card">')[1:] if reference in card)


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
        assert trips.apply_crew_step(trip, "completed", at, "Test 1", trip.awarded_agency_id)
        db.session.commit()
        assert (trip.status, trip.completed_at) == ("completed", at)
