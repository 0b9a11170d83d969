"""Every page of every role with each silo's database stopped for real (PostgreSQL).

``WORKS`` says, for each silo down, which pages keep answering 200 (with a banner naming
what is missing where they show less); every other page must answer 503 naming the silo
that is down, and no page may answer anything else (no 500, no unhandled error).  The
README's fault-isolation matrix is this table.  With all three down at once, every page
still answers 503 or sends the user to sign in, rendered without a database.
"""
import re

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.hospital import TransportRequest
from tests.helpers import signed_in, silo_stopped

USERS = {
    "hospital": None,  # a nurse of the hospital of the open request the pages show
    "ems": "dispatch@altoonaems.medport.test",  # Altoona EMS's organisation administrator
    "crew": "crew@altoonaems.medport.test",  # on a shift on a unit with a trip under way
    "coordinator": "coordinator@medport.test",
    "admin": "admin@medport.test",
}

PAGES = {
    "hospital": ["/hospital/", "/hospital/requests/panel", "/hospital/requests/{trip}",
                 "/hospital/requests/{trip}/bids", "/hospital/requests/{trip}/timeline",
                 "/hospital/requests/{trip}/summary", "/hospital/requests/new", "/hospital/requests/{trip}/edit",
                 "/hospital/requests/{trip}/cancel", "/hospital/preferences", "/hospital/analytics",
                 "/hospital/series/", "/hospital/series/new", "/hospital/series/{series}",
                 "/hospital/will-call", "/account/password"],
    "ems": ["/ems/", "/ems/board/panel", "/ems/requests/{trip}", "/ems/requests/{trip}/panel",
            "/ems/trips", "/ems/trips/panel",
            "/ems/history", "/ems/units", "/ems/units/panel", "/ems/availability", "/ems/routes",
            "/ems/analytics", "/ems/trips.csv"],
    "crew": ["/crew/", "/crew/panel", "/crew/manifest.webmanifest", "/crew/sw.js"],
    "coordinator": ["/center/", "/center/board/panel", "/center/requests/{trip}",
                    "/center/requests/{trip}/panel", "/center/units", "/center/units/panel",
                    "/center/health", "/center/health/panel", "/center/audit", "/center/analytics",
                    "/center/audit/export.csv"],
    "admin": ["/center/users", "/center/registry", "/center/config", "/center/users/new",
              "/alerts/defaults", "/alerts/defaults/center/0", "/alerts/webhooks"],
}
#: The alerts pages, the same for every role but crews (refused there): kept in the center silo alone.
ALERT_PAGES = ["/alerts/", "/alerts/feed", "/alerts/settings"]
for _role, _paths in PAGES.items():
    if _role != "crew":
        _paths.extend(ALERT_PAGES)
PAGES["coordinator"].append("/alerts/deliveries")
#: An organisation administrator's pages (the EMS user runs Altoona EMS): the center silo alone.
ORG_ADMIN_PAGES = ["/ems/crew-accounts", "/alerts/defaults/mine", "/alerts/webhooks", "/alerts/deliveries"]
PAGES["ems"].extend(ORG_ADMIN_PAGES)

#: silo down -> the pages that keep working (200); all others answer 503 naming the silo.
WORKS = {
    "center": {
        "hospital": {"/hospital/", "/hospital/requests/panel", "/hospital/requests/{trip}",
                     "/hospital/requests/{trip}/bids", "/hospital/requests/{trip}/timeline",
                     "/hospital/requests/{trip}/summary", "/hospital/requests/new",
                     "/hospital/requests/{trip}/edit", "/hospital/requests/{trip}/cancel",
                     "/hospital/series/", "/hospital/series/new", "/hospital/series/{series}",
                     "/hospital/will-call"},
        "ems": {"/ems/", "/ems/board/panel", "/ems/requests/{trip}", "/ems/requests/{trip}/panel",
                "/ems/trips", "/ems/trips/panel",
                "/ems/history", "/ems/units", "/ems/units/panel", "/ems/availability", "/ems/routes",
                "/ems/trips.csv"},
        "crew": {"/crew/", "/crew/panel", "/crew/manifest.webmanifest", "/crew/sw.js"},
        "coordinator": {"/center/", "/center/board/panel", "/center/requests/{trip}",
                        "/center/requests/{trip}/panel", "/center/units", "/center/units/panel",
                        "/center/health", "/center/health/panel"},
        "admin": set(),
    },
    "hospital": {
        "hospital": {"/account/password"},
        "ems": {"/ems/trips", "/ems/trips/panel", "/ems/history", "/ems/units", "/ems/units/panel",
                "/ems/availability", "/ems/routes"},
        "crew": {"/crew/", "/crew/panel", "/crew/manifest.webmanifest", "/crew/sw.js"},
        "coordinator": {"/center/units", "/center/units/panel", "/center/health", "/center/health/panel",
                        "/center/audit", "/center/audit/export.csv"},
        "admin": {"/center/users", "/center/config", "/center/users/new", "/alerts/defaults",
                  "/alerts/defaults/center/0"},
    },
    "ems": {
        "hospital": {"/hospital/", "/hospital/requests/panel", "/hospital/requests/{trip}",
                     "/hospital/requests/{trip}/bids", "/hospital/requests/{trip}/timeline",
                     "/hospital/requests/{trip}/summary", "/hospital/requests/new",
                     "/hospital/requests/{trip}/edit", "/hospital/requests/{trip}/cancel",
                     "/hospital/preferences", "/account/password",
                     "/hospital/series/", "/hospital/series/new", "/hospital/series/{series}",
                     "/hospital/will-call"},
        "ems": set(),
        "crew": {"/crew/manifest.webmanifest", "/crew/sw.js"},
        "coordinator": {"/center/", "/center/board/panel", "/center/requests/{trip}",
                        "/center/requests/{trip}/panel", "/center/health", "/center/health/panel",
                        "/center/audit", "/center/audit/export.csv"},
        "admin": {"/center/users", "/center/config", "/center/users/new", "/alerts/defaults",
                  "/alerts/defaults/center/0"},
    },
}
for _works in (WORKS["hospital"], WORKS["ems"]):  # the alerts pages need the center alone
    for _role in _works:
        if _role != "crew":
            _works[_role] |= set(ALERT_PAGES)
    _works["coordinator"].add("/alerts/deliveries")
    _works["admin"].add("/alerts/webhooks")
    _works["ems"] |= set(ORG_ADMIN_PAGES)
LABELS = {"center": "Center", "hospital": "Hospital", "ems": "EMS"}


@pytest.fixture
def postgres(backend):
    if backend != "postgres":
        pytest.skip("stopping a silo's database is done on PostgreSQL")


def _open_trip(app):
    """An open request of the demo and the email of a nurse of its hospital."""
    with app.app_context():
        from dashboard.models.center import User

        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.status == "open")
                                 .order_by(TransportRequest.id).limit(1))
        nurse = db.session.scalar(sa.select(User.email).where(User.hospital_id == trip.hospital_id)
                                  .order_by(User.id).limit(1))
        public_id = trip.public_id
        db.session.commit()
        return public_id, nurse


def _series(app, trip):
    """A recurring series of the hospital of ``trip`` (the series pages show it)."""
    from datetime import time, timedelta

    from dashboard.localtime import local_today
    from dashboard.models.center import Hospital
    from dashboard.models.hospital import HospitalFacility
    from dashboard.services import series as series_service

    with app.app_context():
        hospital_id = db.session.scalar(sa.select(TransportRequest.hospital_id)
                                        .where(TransportRequest.public_id == trip))
        code = db.session.scalar(sa.select(Hospital.short_code).where(Hospital.id == hospital_id))
        origin = db.session.scalar(sa.select(HospitalFacility.id).where(
            HospitalFacility.hospital_id == hospital_id).order_by(HospitalFacility.id).limit(1))
        created = series_service.create(hospital_id, code, dict(
            frequency="weekly", interval=1, weekdays="0,2,4", pickup_time=time(6, 30), window_minutes=60,
            start_date=local_today() + timedelta(days=1), occurrence_count=12, origin_facility_id=origin,
            pickup_location="Dialysis", destination_address="12 Home Street", level_of_care="BLS",
            mobility="wheelchair", age_group="adult", weight_kg=70, patient_ref=""),
                                        actor=Actor(1))
        public_id = created.public_id
        db.session.commit()
        return public_id


def _clients(app, nurse):
    clients = {role: signed_in(app, nurse if role == "hospital" else email) for role, email in USERS.items()}
    with app.app_context():  # the crew member staffs the Altoona EMS unit with a trip under way
        from dashboard.models.center import Agency
        from dashboard.models.ems import EmsRoute, Unit

        aems = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
        unit = db.session.scalar(sa.select(Unit.public_id).join(EmsRoute, EmsRoute.unit_id == Unit.id).where(
            Unit.agency_id == aems, EmsRoute.status.in_(("en_route", "at_pickup", "transporting")))
            .order_by(Unit.id).limit(1))
        db.session.commit()
    assert clients["crew"].post("/crew/shift", data={"unit": unit}).status_code == 303
    return clients


@pytest.mark.parametrize("silo", ["center", "hospital", "ems"])
def test_each_page_works_or_names_the_silo_that_is_down(postgres, app, demo, silo):
    trip, nurse = _open_trip(app)
    series = _series(app, trip)
    clients = _clients(app, nurse)
    for role, paths in PAGES.items():  # every page works with every silo up
        for path in paths:
            assert clients[role].get(path.format(trip=trip, series=series)).status_code == 200, (role, path)
    wrong = []
    with silo_stopped(app, silo):
        for role, paths in PAGES.items():
            for path in paths:
                response = clients[role].get(path.format(trip=trip, series=series))
                body = response.get_data(as_text=True)
                if path in WORKS[silo][role]:
                    if response.status_code != 200:
                        wrong.append((role, path, response.status_code, "expected 200"))
                elif response.status_code != 503 or \
                        f"{LABELS[silo]} data is temporarily unavailable" not in body:
                    wrong.append((role, path, response.status_code, f"expected 503 naming {silo}"))
    assert wrong == []


def test_with_every_silo_down_every_page_still_renders_an_answer(postgres, app, demo):
    trip, nurse = _open_trip(app)
    clients = _clients(app, nurse)
    for role in PAGES:  # the signed session snapshot is written on a page view
        assert clients[role].get(PAGES[role][0].format(trip=trip)).status_code == 200
    with silo_stopped(app, "center"), silo_stopped(app, "hospital"), silo_stopped(app, "ems"):
        for role, paths in PAGES.items():
            for path in paths:
                response = clients[role].get(path.format(trip=trip, series="not-a-series"))
                body = response.get_data(as_text=True)
                assert response.status_code in (200, 503), (role, path, response.status_code)
                if response.status_code == 503:
                    assert re.search(r"(Center|Hospital|EMS) data is temporarily unavailable", body), path
                    assert "Sign out" in body  # the signed-in layout, built without a database
        missing = clients["hospital"].get("/hospital/requests/not-a-request")
        assert missing.status_code in (404, 503)
        anonymous = app.test_client()
        assert anonymous.get("/login").status_code == 200
        assert anonymous.get("/hospital/").status_code == 302
        health = anonymous.get("/healthz")
        assert health.status_code == 503 and sorted(health.get_json()["down"]) == ["center", "ems", "hospital"]
        # Signing out still clears the browser's session (nothing can record it now).
        for role, client in clients.items():
            assert client.post("/logout").status_code == 302, role
            assert client.get(PAGES[role][0].format(trip=trip)).status_code == 302, role
