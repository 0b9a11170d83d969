"""Fault isolation on PostgreSQL: one silo's database really stopped, then back.

The database refuses connections (``ALLOW_CONNECTIONS false``) and its
sessions are ended, as when its server goes away.  Roles that do not need it
keep working, pages that need it answer 503 naming it, writes to the other
silos succeed with their follow-ups waiting in the outbox, and once it is
back every pending event is delivered and the silos agree again.
"""
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import bidding, trips
from dashboard.services.deadlines import bid_for_award
from tests.test_events import awarded_trip, pending, post_trip
from tests.test_stream import signed_in


@pytest.fixture
def postgres(backend):
    if backend != "postgres":
        pytest.skip("stopping one silo's database is done on PostgreSQL")


def _dispose(app):
    with app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@contextmanager
def silo_stopped(app, silo):
    """The silo's database refuses connections and its open sessions are ended."""
    url = make_url(app.config["SQLALCHEMY_DATABASE_URI"] if silo == "center"
                   else app.config["SQLALCHEMY_BINDS"][silo]["url"])
    name = url.database
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name AND pid <> pg_backend_pid()"), {"name": name})
        _dispose(app)
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
        _dispose(app)


def _converge(app):
    """Once the silo is back: the relay, past every back-off, until nothing is pending."""
    Relay(app).drain(now=utcnow() + timedelta(minutes=10))
    with app.app_context():
        return {silo: pending(silo) for silo in OUTBOX_BY_SILO}


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
            trips.award(db.session.get(TransportRequest, trip_id), offer, None, "Charge Nurse")
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
    assert _converge(app) == {"center": 0, "hospital": 0, "ems": 0}
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
        trips.award(db.session.get(TransportRequest, trip_id), offer, None, "Charge Nurse")
        db.session.commit()
    deliver()
    nurse = signed_in(app, "nurse@altoona.medport.test")
    dispatcher = signed_in(app, "dispatch@altoonaems.medport.test")
    with silo_stopped(app, "hospital"):
        assert dispatcher.get("/ems/units").status_code == 200
        with app.app_context():
            route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
            bidding.advance(route, "en_route", None, "Medic 11")
            db.session.commit()
        for client, path in ((nurse, "/hospital/"), (dispatcher, "/ems/")):
            response = client.get(path)
            assert response.status_code == 503, path
            assert "Hospital data is temporarily unavailable" in response.get_data(as_text=True)
        Relay(app).run_once()
        with app.app_context():
            assert pending("ems") == 1
    assert _converge(app) == {"center": 0, "hospital": 0, "ems": 0}
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.status == "en_route" and trip.en_route_at is not None
