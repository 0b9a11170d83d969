"""One submission, one result: a creating form sent twice (double click, two tabs, Back and
send again) creates one row, and the second answer names what the first one created."""
import re

import pytest
import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.models.center import Agency, CenterSubmission, Hospital, User
from dashboard.models.ems import TransportBid, Unit, UnitAvailability
from dashboard.models.hospital import (
    HospitalAgencyPreference,
    HospitalFacility,
    HospitalSubmission,
    TransportRequest,
)
from dashboard.services import submissions
from tests.helpers import new_unit, post_request, signed_in, valid_form

ADMIN = "admin@medport.test"
NURSE = "nurse@altoona.medport.test"
AEMS = "dispatch@altoonaems.medport.test"


def token_of(page):
    """The one-time token a rendered form carries."""
    match = re.search(r'name="submission_id" type="hidden" value="([A-Za-z0-9_-]+)"', page)
    assert match, "the form carries no submission_id"
    return match.group(1)


def count(app, model, *where):
    with app.app_context():
        return db.session.scalar(sa.select(sa.func.count()).select_from(model).where(*where))


def followed(client, response):
    """The page a 303 leads to."""
    assert response.status_code == 303, response.get_data(as_text=True)
    return client.get(response.headers["Location"]).get_data(as_text=True)


# --- the hospital's new request ------------------------------------------------------------

def test_a_request_sent_twice_is_posted_once_and_the_repeat_shows_it(app, demo):
    nurse = signed_in(app, NURSE)
    before = count(app, TransportRequest)
    token = token_of(nurse.get("/hospital/requests/new").get_data(as_text=True))
    form = valid_form(app, submission_id=token)
    first = nurse.post("/hospital/requests/new", data=form)
    assert first.status_code == 302
    again = nurse.post("/hospital/requests/new", data=form)
    assert again.headers["Location"] == first.headers["Location"]
    assert "This request was already posted; here it is." in followed(nurse, again)
    assert count(app, TransportRequest) == before + 1
    with app.app_context():
        (claim,) = db.session.scalars(sa.select(HospitalSubmission))
        assert (claim.kind, claim.created_id) == ("request", first.headers["Location"].rsplit("/", 1)[1])
    # Even a repeat whose form no longer validates (its window has passed since) names the request.
    stale = nurse.post("/hospital/requests/new", data=dict(form, window_start="", window_end=""))
    assert stale.headers["Location"] == first.headers["Location"]
    assert count(app, TransportRequest) == before + 1


def test_two_forms_for_one_patient_post_two_requests_and_warn(app, demo):
    nurse = signed_in(app, NURSE)
    before = count(app, TransportRequest)
    tokens = [token_of(nurse.get("/hospital/requests/new").get_data(as_text=True)) for _ in range(2)]
    assert tokens[0] != tokens[1]
    first = nurse.post("/hospital/requests/new", data=valid_form(app, submission_id=tokens[0]))
    assert first.status_code == 302
    page = nurse.get(first.headers["Location"]).get_data(as_text=True)
    assert "already has an active request" not in page
    second = nurse.post("/hospital/requests/new", data=valid_form(app, submission_id=tokens[1]))
    assert second.status_code == 302 and second.headers["Location"] != first.headers["Location"]
    assert count(app, TransportRequest) == before + 2
    page = nurse.get(second.headers["Location"]).get_data(as_text=True)
    with app.app_context():
        reference = db.session.scalar(sa.select(TransportRequest.reference).where(
            TransportRequest.public_id == first.headers["Location"].rsplit("/", 1)[1]))
    (warning,) = re.findall(r'<p class="flash flash-warning">(.*?)</p>', page)
    assert warning.startswith("This patient reference already has an active request: " + reference)
    assert "P-ACDEFH" not in warning  # the patient reference stays out of the session cookie
    # Another patient: no warning.
    third = nurse.post("/hospital/requests/new", data=valid_form(
        app, submission_id=submissions.new_token(), patient_ref="P-ACDEFJ"))
    assert "already has an active request" not in nurse.get(third.headers["Location"]).get_data(as_text=True)


def test_a_form_without_a_token_still_posts_and_a_malformed_one_is_refused(app, demo):
    nurse = signed_in(app, NURSE)
    before = count(app, TransportRequest)
    assert nurse.post("/hospital/requests/new", data=valid_form(app)).status_code == 302
    assert nurse.post("/hospital/requests/new", data=valid_form(app)).status_code == 302
    assert count(app, TransportRequest) == before + 2  # an old page or a script: not deduplicated
    bad = nurse.post("/hospital/requests/new", data=valid_form(app, submission_id="x'; drop"))
    assert bad.status_code == 400
    assert count(app, TransportRequest) == before + 2


def test_a_preferred_agency_added_twice_is_added_once(app, demo):
    nurse = signed_in(app, NURSE)
    page = nurse.get("/hospital/preferences").get_data(as_text=True)
    with app.app_context():
        agency = db.session.scalar(sa.select(Agency).where(Agency.short_code == "CMT"))
        agency_public_id, agency_id = agency.public_id, agency.id
        altoona = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "ALT"))
    form = {"agency": agency_public_id, "notes": "", "submission_id": token_of(page)}
    assert nurse.post("/hospital/preferences", data=form).status_code == 302
    assert "This agency was already added" in followed(nurse, nurse.post("/hospital/preferences", data=form))
    assert count(app, HospitalAgencyPreference, HospitalAgencyPreference.agency_id == agency_id,
                 HospitalAgencyPreference.hospital_id == altoona) == 1


# --- EMS: bid, unit, availability window ---------------------------------------------------

def test_a_bid_sent_twice_is_placed_once(app, demo, deliver):
    trip_id = post_request(app)
    deliver()
    dispatcher = signed_in(app, AEMS)
    unit_public_id = new_unit(app, "AEMS", "AEMS-X1")
    token = token_of(dispatcher.get(f"/ems/requests/{trip_id}").get_data(as_text=True))
    form = {"unit": unit_public_id, "eta_minutes": "20", "note": "", "submission_id": token}
    assert dispatcher.post(f"/ems/requests/{trip_id}/bid", data=form).status_code == 302
    again = dispatcher.post(f"/ems/requests/{trip_id}/bid", data=form)
    assert again.headers["Location"] == f"/ems/requests/{trip_id}"
    assert "This bid was already placed; here it is." in followed(dispatcher, again)
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == trip_id))
        assert db.session.scalar(sa.select(sa.func.count(TransportBid.id)).where(
            TransportBid.trip_id == trip.id)) == 1


def test_a_unit_and_a_window_sent_twice_are_added_once(app, demo):
    dispatcher = signed_in(app, AEMS)
    before = count(app, Unit)
    form = {"number": "AEMS-99", "level": "BLS", "base_station": "", "shift_start": "", "shift_end": "",
            "submission_id": token_of(dispatcher.get("/ems/units").get_data(as_text=True))}
    assert dispatcher.post("/ems/units", data=form).status_code == 302
    assert "This unit was already added" in followed(dispatcher, dispatcher.post("/ems/units", data=form))
    assert count(app, Unit) == before + 1
    # A second form (a new token) for another unit adds it.
    form.update(number="AEMS-98", submission_id=token_of(dispatcher.get("/ems/units").get_data(as_text=True)))
    assert dispatcher.post("/ems/units", data=form).status_code == 302
    assert count(app, Unit) == before + 2

    with app.app_context():
        unit_public_id = db.session.scalar(sa.select(Unit.public_id).where(Unit.number == "AEMS-99"))
    windows = count(app, UnitAvailability)
    page = dispatcher.get("/ems/availability?date=2027-06-15").get_data(as_text=True)
    form = {"unit": unit_public_id, "kind": "on_break", "starts_at": "2027-06-15T10:00",
            "ends_at": "2027-06-15T10:30", "note": "", "submission_id": token_of(page)}
    assert dispatcher.post("/ems/availability", data=form).status_code == 302
    again = dispatcher.post("/ems/availability", data=form)
    assert again.headers["Location"] == "/ems/availability?date=2027-06-15"
    assert "This window was already added" in followed(dispatcher, again)
    assert count(app, UnitAvailability) == windows + 1


# --- center: hospital, facility, agency, user ----------------------------------------------

def test_registry_and_account_forms_sent_twice_create_once(app, demo, deliver):
    admin = signed_in(app, ADMIN)

    def twice(path, form, message):
        form = dict(form, submission_id=token_of(admin.get(path).get_data(as_text=True)))
        first = admin.post(path, data=form)
        assert first.status_code in (201, 302), first.get_data(as_text=True)
        assert message in followed(admin, admin.post(path, data=form))
        return first

    twice("/center/registry/hospitals/new", {
        "name": "Lewistown Community Hospital", "short_code": "LCH", "city": "Lewistown", "region": "",
        "phone": "", "active": "y", "facility_address": "400 Highland Ave", "facility_lat": "",
        "facility_lon": ""}, "This hospital was already registered; here it is.")
    assert count(app, Hospital, Hospital.short_code == "LCH") == 1

    with app.app_context():
        lewistown = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "LCH")).public_id
    twice(f"/center/registry/hospitals/{lewistown}/facilities/new", {
        "name": "Lewistown Dialysis", "kind": "dialysis", "address": "10 Main St", "city": "Lewistown",
        "lat": "", "lon": "", "active": "y"}, "This facility was already added")
    deliver()
    assert count(app, HospitalFacility, HospitalFacility.name == "Lewistown Dialysis") == 1

    twice("/center/registry/agencies/new", {
        "name": "Mifflin County EMS", "short_code": "MCE", "levels": ["BLS"], "service_area": "",
        "base_lat": "", "base_lon": "", "service_radius_km": "60", "phone": "", "active": "y"},
        "This agency was already registered; here it is.")
    assert count(app, Agency, Agency.short_code == "MCE") == 1

    first = twice("/center/users/new", {"email": "clerk@lewistown.test", "display_name": "Unit Clerk",
                                        "role": "coordinator", "hospital": "", "agency": "", "active": "y"},
                  "This account was already created")
    assert first.status_code == 201 and "Temporary password" in first.get_data(as_text=True)
    assert count(app, User, User.email == "clerk@lewistown.test") == 1
    with app.app_context():
        kinds = sorted(db.session.scalars(sa.select(CenterSubmission.kind)))
    assert kinds == ["agency", "facility", "hospital", "user"]


# --- the service ---------------------------------------------------------------------------

def test_a_claim_that_meets_one_committed_meanwhile_is_a_repeat(app, demo, monkeypatch):
    token = submissions.new_token()
    with app.app_context():
        first = submissions.claim("hospital", token, "request", 7)
        first.created("created-first")
        db.session.commit()
    # The second send read before the first committed: it finds no claim, then meets the
    # unique token when it writes its own, and gets the first one's result.
    real = submissions._existing
    calls = []

    def not_yet(model, token_, kind, user_id):
        calls.append(1)
        return None if len(calls) == 1 else real(model, token_, kind, user_id)

    monkeypatch.setattr(submissions, "_existing", not_yet)
    with app.app_context():
        second = submissions.claim("hospital", token, "request", 7)
        assert (second.repeat, second.created_id) == (True, "created-first")
        db.session.commit()
        assert db.session.scalar(sa.select(sa.func.count(HospitalSubmission.id))) == 1


def test_a_token_of_another_user_or_form_is_refused(app, demo):
    token = submissions.new_token()
    with app.app_context():
        submissions.claim("ems", token, "bid", 7).created("b")
        db.session.commit()
        with pytest.raises(submissions.SubmissionRefused) as refused:
            submissions.claim("ems", token, "bid", 8)
        assert refused.value.status == 409
        with pytest.raises(submissions.SubmissionRefused):
            submissions.claim("ems", token, "unit", 7)
        assert submissions.previous("ems", token, "bid", 8) is None
        assert submissions.previous("ems", "not a token", "bid", 7) is None
        with pytest.raises(ValueError):
            submissions.claim("ems", "not a token", "bid", 7)
        assert not submissions.claim("ems", "", "bid", 7).repeat


def test_one_form_sent_twice_at_the_same_moment_posts_once(app, demo, backend, monkeypatch):
    if backend != "postgres":
        pytest.skip("writers race on PostgreSQL; SQLite serialises them")
    from tests.helpers import StartingLine

    nurses = [signed_in(app, NURSE) for _ in range(2)]
    before = count(app, TransportRequest)
    form = valid_form(app, submission_id=token_of(nurses[0].get("/hospital/requests/new").get_data(
        as_text=True)))
    line = StartingLine(monkeypatch, 2)
    line.gate(submissions, "claim")  # both have found no earlier send; they claim together

    def send(client):
        response = client.post("/hospital/requests/new", data=form)
        return response.status_code, response.headers.get("Location")

    results = line.run(lambda: send(nurses[0]), lambda: send(nurses[1]))
    assert sorted(status for status, _ in results) == [302, 303], results
    assert results[0][1] == results[1][1]  # the second answer names the first one's request
    assert count(app, TransportRequest) == before + 1
