"""Fault isolation on PostgreSQL: one silo's database really stopped, then back.

The database refuses connections (``ALLOW_CONNECTIONS false``) and its
sessions are ended, as when its server goes away.  Roles that do not need it
keep working, pages that need it answer 503 naming it, writes to the other
silos succeed with their follow-ups waiting in the outbox, and once it is
back every pending event is delivered and the silos agree again.
"""

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import route_steps, trips
from dashboard.services.deadlines import bid_for_award
from tests.helpers import awarded_trip, converge, pending, post_trip, signed_in, silo_stopped


@pytest.fixture
def postgres(backend):
    if backend != "postgres":
        pytest.skip("stopping one silo's database is done on PostgreSQL")


def test_with_the_ems_silo_down_hospitals_award_and_the_follow_up_waits(postgres, app, demo, deliver):
    trip_id, aems, cll = awarded_trip(app, deliver)
    with app.app_context():
        offer = bid_for_award(db.session.get(TransportBid, aems))
        trip_public = db.session.get(TransportRequest, trip_id).public_id
        db.session.commit()
    nurse = signed_in(app, "nurse@altoona.medport.test")
    dispatcher = signed_in(app, "dispatch@altoonaems.medport.test")
    with silo_stopped(app, "ems"):
        # The hospital side works: its list, an award, a new request.
        assert nurse.get("/hospital/").status_code == 200
        with app.app_context():
            trips.award(db.session.get(TransportRequest, trip_id), offer, actor=Actor(None, None, "Charge Nurse"))
            db.session.commit()
            other = db.session.get(TransportRequest, post_trip("ALT")).public_id
        # Pages that need EMS data say so.
        response = dispatcher.get("/ems/")
        assert response.status_code == 503
        assert "EMS data is temporarily unavailable" in response.get_data(as_text=True)
        # The request page shows the request; its bids panel says bids are unavailable.
        response = nurse.get(f"/hospital/requests/{trip_public}")
        assert response.status_code == 200
        assert "Bids are unavailable: the EMS database cannot be reached" in response.get_data(as_text=True)
        health = nurse.get("/healthz")
        assert health.status_code == 503 and health.get_json()["down"] == ["ems"]
        # The relay delivers what needs no EMS; the award's follow-up waits, with its reason.
        assert Relay(app).run_once() >= 1
        with app.app_context():
            model = OUTBOX_BY_SILO["hospital"]
            awarded = db.session.scalar(sa.select(model).where(model.type == "trip.awarded"))
            assert (awarded.status, awarded.attempts) == ("pending", 1)
            assert awarded.last_error.startswith("OperationalError")
            posted = db.session.scalar(sa.select(model.status).where(model.entity_id == other))
            assert posted == "delivered"
    assert dispatcher.get("/ems/").status_code == 200
    assert converge(app) == {"center": 0, "hospital": 0, "ems": 0}
    with app.app_context():
        assert db.session.get(TransportBid, aems).status == "accepted"
        assert db.session.get(TransportBid, cll).status == "declined"
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        unit = db.session.get(Unit, offer["unit_id"])
        assert route.unit_id == unit.id and unit.status == "assigned"


def test_with_the_hospital_silo_down_crews_progress_and_the_trip_catches_up(postgres, app, demo, deliver):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        offer = bid_for_award(db.session.get(TransportBid, aems))
        db.session.commit()
        trips.award(db.session.get(TransportRequest, trip_id), offer, actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
    deliver()
    nurse = signed_in(app, "nurse@altoona.medport.test")
    dispatcher = signed_in(app, "dispatch@altoonaems.medport.test")
    with silo_stopped(app, "hospital"):
        assert dispatcher.get("/ems/units").status_code == 200
        with app.app_context():
            route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
            route_steps.advance(route, "en_route", actor=Actor(None, None, "Medic 11"))
            db.session.commit()
        for client, path in ((nurse, "/hospital/"), (dispatcher, "/ems/")):
            response = client.get(path)
            assert response.status_code == 503, path
            assert "Hospital data is temporarily unavailable" in response.get_data(as_text=True)
        Relay(app).run_once()
        with app.app_context():
            assert pending("ems") == 1
    assert converge(app) == {"center": 0, "hospital": 0, "ems": 0}
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.status == "en_route" and trip.en_route_at is not None
