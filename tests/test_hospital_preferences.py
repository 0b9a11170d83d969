"""Hospital staff and their preferred agencies: adding, ordering, notes, removing, and the refusals."""
import re

import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.models.center import Agency
from dashboard.models.hospital import HospitalAgencyPreference
from dashboard.models.outbox import CenterOutboxEvent, EmsOutboxEvent, HospitalOutboxEvent
from tests.helpers import (
    ALT_NURSE,
    hospital_id,
    load,
    post_form,
    text,
)

# --- preferred agencies ------------------------------------------------------------------------

def preference_order(app, code="ALT"):
    with app.app_context():
        return [db.session.get(Agency, p.agency_id).short_code for p in db.session.scalars(
            sa.select(HospitalAgencyPreference).where(
                HospitalAgencyPreference.hospital_id == hospital_id(app, code))
            .order_by(HospitalAgencyPreference.rank))]


def preference_id(app, agency_code, code="ALT"):
    with app.app_context():
        agency = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == agency_code))
        return db.session.scalar(sa.select(HospitalAgencyPreference.id).where(
            HospitalAgencyPreference.hospital_id == hospital_id(app, code),
            HospitalAgencyPreference.agency_id == agency))


def agency_public_id(app, code):
    with app.app_context():
        return db.session.scalar(sa.select(Agency.public_id).where(Agency.short_code == code))


def outbox_total(app):
    with app.app_context():
        return sum(db.session.scalar(sa.select(sa.func.count(model.id)))
                   for model in (CenterOutboxEvent, HospitalOutboxEvent, EmsOutboxEvent))


def test_preferred_agencies_add_move_notes_remove(app, nurse):
    assert preference_order(app) == ["AEMS", "BCA", "ACCT"]
    events = outbox_total(app)
    page = text(nurse.get("/hospital/preferences"))
    assert "Altoona EMS" in page and "Regular partner" in page
    assert re.search(r'<option value="[0-9a-f-]{36}">Centre LifeLink</option>', page)
    assert not re.search(r'<option value="[0-9a-f-]{36}">Altoona EMS</option>', page)
    response = nurse.post("/hospital/preferences", data={"agency": agency_public_id(app, "CLL"),
                                                         "notes": "Nights and weekends"})
    assert response.status_code == 302
    assert preference_order(app) == ["AEMS", "BCA", "ACCT", "CLL"]
    assert nurse.post(f"/hospital/preferences/{preference_id(app, 'CLL')}/move",
                      data={"direction": "up"}).status_code == 302
    assert nurse.post(f"/hospital/preferences/{preference_id(app, 'AEMS')}/move",
                      data={"direction": "down"}).status_code == 302
    assert preference_order(app) == ["BCA", "AEMS", "CLL", "ACCT"]
    nurse.post(f"/hospital/preferences/{preference_id(app, 'BCA')}/move", data={"direction": "up"})
    assert preference_order(app) == ["BCA", "AEMS", "CLL", "ACCT"]  # already first
    assert nurse.post(f"/hospital/preferences/{preference_id(app, 'CLL')}/notes",
                      data={"notes": "Call 814-555-0123 first"}).status_code == 302
    assert nurse.post(f"/hospital/preferences/{preference_id(app, 'AEMS')}/remove").status_code == 302
    assert preference_order(app) == ["BCA", "CLL", "ACCT"]
    with app.app_context():
        ranks = list(db.session.scalars(sa.select(HospitalAgencyPreference.rank).where(
            HospitalAgencyPreference.hospital_id == hospital_id(app, "ALT"))
            .order_by(HospitalAgencyPreference.rank)))
        notes = db.session.scalar(sa.select(HospitalAgencyPreference.notes).where(
            HospitalAgencyPreference.id == preference_id(app, "CLL")))
    assert ranks == [1, 2, 3] and notes == "Call 814-555-0123 first"
    # Each change is recorded for the audit log: the add, two moves, the notes, the removal
    # (a move that moves nothing records nothing); see tests/test_preferences.py.
    assert outbox_total(app) == events + 5
    # A posting takes the list as it is now.
    trip = load(app, post_form(nurse, app, invite_mode="preferred"))
    with app.app_context():
        ids = [db.session.scalar(sa.select(Agency.id).where(Agency.short_code == c)) for c in ("BCA", "CLL", "ACCT")]
    assert trip.invited_ids == set(ids)


def test_preferred_agency_refusals(app, nurse):
    before = preference_order(app)
    with app.app_context():
        agency = db.session.scalar(sa.select(Agency).where(Agency.short_code == "HCR"))
        agency.active = False
        db.session.commit()
    cases = [
        ({"agency": agency_public_id(app, "AEMS")}, "Choose one of the listed agencies"),  # already listed
        ({"agency": agency_public_id(app, "HCR")}, "Choose one of the listed agencies"),   # inactive
        ({"agency": "not-an-agency"}, "Choose one of the listed agencies"),
        ({"agency": ""}, "Choose an agency to add."),
        ({"agency": agency_public_id(app, "CLL"), "notes": "x" * 301}, "Keep the notes to 300 characters."),
    ]
    for data, message in cases:
        response = nurse.post("/hospital/preferences", data=data)
        assert response.status_code == 400 and message in text(response), data
    aems = preference_id(app, "AEMS")
    response = nurse.post(f"/hospital/preferences/{aems}/move", data={"direction": "sideways"})
    assert response.status_code == 400
    response = nurse.post(f"/hospital/preferences/{aems}/notes", data={"notes": "x" * 301})
    assert response.status_code == 400 and "Keep the notes to 300 characters." in text(response)
    assert preference_order(app) == before
    # Another hospital's entries are not found.
    johnstown_entry = preference_id(app, "CMT", code="JMH")
    for action, data in (("move", {"direction": "up"}), ("notes", {"notes": "mine"}), ("remove", {})):
        assert nurse.post(f"/hospital/preferences/{johnstown_entry}/{action}", data=data).status_code == 404
    assert nurse.post("/hospital/preferences/999999/remove").status_code == 404
    assert preference_order(app, "JMH") == ["CMT", "ACCT"]
    # Two pages add the same agency: the second is refused, the list holds it once.
    other = app.test_client()
    other.post("/login", data={"email": ALT_NURSE, "password": "medport-demo"})
    other.get("/hospital/preferences")
    assert nurse.post("/hospital/preferences", data={"agency": agency_public_id(app, "CLL")}).status_code == 302
    assert other.post("/hospital/preferences", data={"agency": agency_public_id(app, "CLL")}).status_code == 400
    assert preference_order(app).count("CLL") == 1
