"""Hospital staff posting requests: the new-request form, its refusals, and one hospital's requests
kept from another."""
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import AuditLog, LiveSignal
from dashboard.models.hospital import (
    HospitalAgencyPreference,
    HospitalFacility,
)
from dashboard.models.outbox import HospitalOutboxEvent
from dashboard.services import trip_posting, trips
from tests.helpers import (
    ALT_NURSE,
    JMH_NURSE,
    award_form,
    bid_on,
    counts,
    edit_form,
    facility_id,
    freeze_clock,
    history_actions,
    hospital_id,
    load,
    local_time,
    post_form,
    text,
    valid_form,
)

# --- the new-request form ----------------------------------------------------------------------

def test_new_request_form_has_hints_and_no_identity_fields(app, nurse):
    page = text(nurse.get("/hospital/requests/new"))
    assert re.search(r'<output class="patient-ref" for="patient_ref">P-[A-Z0-9]{6}</output>', page)
    assert re.search(r'name="weight_kg" required type="number"', page) and 'max="400" min="1"' in page
    assert re.search(r'max="25" min="0" name="oxygen_lpm"', page)
    assert re.search(r'id="window_start" max="[0-9T:-]+" min="[0-9T:-]+" name="window_start" required', page)
    assert 'maxlength="200" name="other_needs"' in page and 'maxlength="500" name="notes"' in page
    assert re.search(r'max="1440" min="5" name="bid_deadline_minutes" required type="number" value="30"', page)
    assert '<optgroup label="Johnstown">' in page
    names = set(re.findall(r'name="([a-z_]+)"', page))
    for forbidden in ("name", "first_name", "last_name", "dob", "date_of_birth", "mrn", "record_number"):
        assert forbidden not in names
    # Preferred agencies exist for Altoona, so "preferred first" is the default.
    assert re.search(r'checked id="invite_mode-2"', page)


def local_moment(app, clock_time, days_ahead=1):
    """Naive UTC of ``clock_time`` ("HH:MM:SS", the region's time) on a day ``days_ahead`` away."""
    from datetime import datetime

    from dashboard.localtime import from_local, local_today

    with app.app_context():
        day = local_today() + timedelta(days=days_ahead)
        return from_local(datetime.combine(day, datetime.strptime(clock_time, "%H:%M:%S").time()))


@pytest.mark.parametrize("clock_time", [
    "09:07:00",
    "14:15:30",  # on a quarter hour, seconds past it: the window's end must not round down
    "14:29:59",
    "23:50:10",  # the default window crosses midnight
])
@pytest.mark.parametrize("deadline", [30, 600])
def test_the_new_request_form_as_shown_can_be_posted(app, nurse, monkeypatch, deadline, clock_time):
    """Whatever default bidding deadline the center configured, the pre-filled form is accepted
    once a destination is chosen (a deadline past the default hour window widens the window),
    at any time of day: the clock is frozen at the chosen moments, the page and its post
    seeing the same instant."""
    from dashboard.services import configuration
    from tests.helpers import PageForms

    freeze_clock(monkeypatch, local_moment(app, clock_time))
    with app.app_context():
        configuration.set_value("bid_deadline_default_minutes", deadline, None)
        db.session.commit()
        destination = db.session.scalar(sa.select(HospitalFacility.public_id).where(
            HospitalFacility.hospital_id != hospital_id(app, "ALT")).limit(1))
    parser = PageForms("/hospital/requests/new")
    parser.feed(text(nurse.get("/hospital/requests/new")))
    ((action, fields),) = [form for form in parser.forms if form[0] == "/hospital/requests/new"]
    data = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    assert data["bid_deadline_minutes"] == [str(deadline)]
    data.update(destination_facility=[destination], weight_kg=["80"], age_group=["adult"],
                pickup_location=["ED bay 3"], level_of_care=["BLS"])
    response = nurse.post(action, data=data)
    assert response.status_code == 302, re.findall(r'class="error">([^<]+)', text(response))
    trip = load(app, response.headers["Location"].rsplit("/", 1)[1])
    assert trip.bid_deadline <= trip.window_end
    assert trip.window_end - trip.window_start >= timedelta(hours=1)
    # Bidding closes no later than the earliest pickup shown (the post comes at the same instant).
    assert trip.bid_deadline <= trip.window_start


def test_posting_creates_an_open_trip_emits_and_is_audited(app, nurse, deliver):
    before = counts(app)
    public_id = post_form(nurse, app)
    trip = load(app, public_id)
    assert trip.status == "open" and trip.version == 1
    assert trip.hospital_id == hospital_id(app, "ALT") and trip.reference.startswith("ALT-")
    assert trip.patient_ref == "P-ACDEFH" and trip.weight_kg == 82 and trip.oxygen_lpm == 2.5
    assert trip.cardiac_monitor and not trip.ventilator and trip.isolation == "contact"
    assert trip.destination_address == "" and trip.destination_facility_id is not None
    assert trip.window_end - trip.window_start == timedelta(hours=2)
    assert abs((trip.window_start - utcnow()) - timedelta(minutes=300)) < timedelta(minutes=2)
    assert abs((trip.bid_deadline - utcnow()) - timedelta(minutes=30)) < timedelta(minutes=2)
    assert trip.invite_mode == "all" and trip.invite_all_after_minutes is None
    assert counts(app) == (before[0] + 1, before[1] + 1, before[2] + 1)
    assert history_actions(app, public_id) == ["posted"]
    with app.app_context():
        (event,) = db.session.scalars(sa.select(HospitalOutboxEvent).where(
            HospitalOutboxEvent.entity_id == public_id))
        assert event.type == "trip.posted" and event.status == "pending"
        assert "patient_ref" not in event.payload and event.payload["level_of_care"] == "ALS"
    assert deliver() >= 1
    with app.app_context():
        entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "trip.posted",
                                                            AuditLog.entity_id == public_id))
        assert entry is not None and entry.user_email == ALT_NURSE and entry.silo == "hospital"
        assert db.session.scalar(sa.select(sa.func.count(LiveSignal.id)).where(
            LiveSignal.entity_id == public_id, LiveSignal.hospital_id == trip.hospital_id)) == 1
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    assert f"Request {trip.reference} posted" in page and "P-ACDEFH" in page


def test_a_free_text_destination_and_preferred_first_invitation(app, nurse):
    public_id = post_form(nurse, app, destination_facility="", destination_address="12 Elm St, Hollidaysburg",
                          invite_mode="preferred_then_all", invite_all_after_minutes="15")
    trip = load(app, public_id)
    assert trip.destination_facility_id is None and trip.destination_address == "12 Elm St, Hollidaysburg"
    assert trip.invite_mode == "preferred_then_all" and trip.invite_all_after_minutes == 15
    with app.app_context():
        preferred = trip_posting.preferred_agency_ids(trip.hospital_id)
    assert trip.invited_ids == set(preferred) and len(preferred) == 3


BAD_POSTS = [
    # (overrides, expected message)
    (dict(pickup_location="   "), "Say where in the facility the crew picks up"),
    (dict(pickup_location="x" * 121), "Keep the pickup location to 120 characters."),
    (dict(level_of_care="XYZ"), "Choose BLS, ALS or CCT."),
    (dict(level_of_care=None), "Choose the level of care."),
    (dict(urgency="now"), "Choose routine, urgent or emergent."),
    (dict(mobility="flying"), "Choose one of the listed mobility options."),
    (dict(age_group="baby"), "Choose one of the listed age groups."),
    (dict(isolation="bogus"), "Choose one of the listed isolation options."),
    (dict(weight_kg="abc"), "Enter the weight in whole kilograms."),
    (dict(weight_kg="1e3"), "Enter the weight in whole kilograms."),
    (dict(weight_kg="0"), "Enter a weight from 1 to 400 kg."),
    (dict(weight_kg="401"), "Enter a weight from 1 to 400 kg."),
    (dict(weight_kg=""), "Enter the patient&#39;s weight in kg."),
    (dict(oxygen_lpm="nan"), "Enter the oxygen flow as a number."),
    (dict(oxygen_lpm="inf"), "Enter the oxygen flow as a number."),
    (dict(oxygen_lpm="-1"), "Enter an oxygen flow from 0 to 25 L/min."),
    (dict(oxygen_lpm="25.5"), "Enter an oxygen flow from 0 to 25 L/min."),
    (dict(other_needs="x" * 201), "Keep other needs to 200 characters."),
    (dict(notes="x" * 501), "Keep notes to 500 characters."),
    (dict(bid_deadline_minutes="4"), "Enter a bidding time from 5 to 1440 minutes"),
    (dict(bid_deadline_minutes="1441"), "Enter a bidding time from 5 to 1440 minutes"),
    (dict(bid_deadline_minutes="soon"), "Enter the bidding time in whole minutes."),
    (dict(invite_mode="friends"), "Choose one of the listed invitation modes."),
    (dict(invite_mode="preferred_then_all", invite_all_after_minutes=""), "Say after how many minutes"),
    (dict(invite_mode="preferred_then_all", invite_all_after_minutes="0"), "Enter from 1 to 240 minutes."),
    (dict(invite_mode="preferred_then_all", invite_all_after_minutes="241"), "Enter from 1 to 240 minutes."),
    (dict(patient_ref="John Smith 1954"), "The patient reference was missing or altered"),
    (dict(window_start="tomorrow"), "Enter a date and time"),
    (dict(window_start=""), "Enter the earliest pickup time."),
    (dict(destination_address="12 Elm St"), "either a registered facility or an address, not both"),
    (dict(destination_facility=""), "Choose the destination facility, or type an address below."),
    (dict(destination_facility="not-a-facility"), "Choose one of the listed facilities."),
    (dict(destination_address="x" * 241, destination_facility=""), "Keep the address to 240 characters."),
    (dict(origin_facility="not-a-facility"), "Choose one of your hospital&#39;s facilities."),
]


def test_every_bad_field_is_refused_with_its_message_and_nothing_stored(app, nurse):
    before = counts(app)
    for overrides, message in BAD_POSTS:
        response = nurse.post("/hospital/requests/new", data=valid_form(app, **overrides))
        assert response.status_code == 400, overrides
        assert message in text(response), (overrides, message)
        assert "marked below; nothing was saved" in text(response)
    response = nurse.post("/hospital/requests/new", data={})
    assert response.status_code == 400
    for message in ("Choose the facility the patient leaves from.", "Say where in the facility",
                    "Choose the destination facility", "Choose the level of care.",
                    "Enter the earliest pickup time.", "Enter the latest pickup time.",
                    "Choose the patient&#39;s age group.", "Enter the patient&#39;s weight in kg.",
                    "Enter how long agencies may bid", "The patient reference was missing or altered"):
        assert message in text(response), message
    # The re-rendered form carries a fresh, valid reference (never the forged one).
    assert re.search(r'name="patient_ref" type="hidden" value="P-[A-Z0-9]{6}"', text(response))
    assert counts(app) == before


def test_window_rules(app, nurse):
    before = counts(app)
    cases = [
        (dict(window_start=local_time(app, 300), window_end=local_time(app, 240)),
         "The latest pickup must be after the earliest pickup."),
        (dict(window_start=local_time(app, 300), window_end=local_time(app, 300)),
         "The latest pickup must be after the earliest pickup."),
        (dict(window_start=local_time(app, -30), window_end=local_time(app, 60)),
         "The earliest pickup is in the past."),
        (dict(window_start=local_time(app, 91 * 24 * 60), window_end=local_time(app, 91 * 24 * 60 + 60)),
         "The earliest pickup can be at most 90 days ahead."),
        (dict(window_start=local_time(app, 60), window_end=local_time(app, 91 * 24 * 60)),
         "The latest pickup can be at most 90 days ahead."),
        (dict(window_start=local_time(app, 0), window_end=local_time(app, 20), bid_deadline_minutes="30"),
         "Bidding would close after the latest pickup time"),
    ]
    for overrides, message in cases:
        response = nurse.post("/hospital/requests/new", data=valid_form(app, **overrides))
        assert response.status_code == 400 and message in text(response), message
    assert counts(app) == before
    # Within the 10-minute grace, a pickup "now" is fine.
    post_form(nurse, app, window_start=local_time(app, -5), window_end=local_time(app, 60),
              bid_deadline_minutes="10")


def test_facilities_of_another_hospital_and_forged_hospital_ids(app, nurse):
    before = counts(app)
    johnstown = facility_id(app, "Johnstown Memorial Hospital")
    response = nurse.post("/hospital/requests/new", data=valid_form(app, origin_facility=johnstown))
    assert response.status_code == 400 and "Choose one of your hospital&#39;s facilities." in text(response)
    same = facility_id(app, "Altoona Regional Medical Center")
    response = nurse.post("/hospital/requests/new", data=valid_form(app, destination_facility=same))
    assert response.status_code == 400 and "The destination is the facility the patient leaves from." in text(response)
    assert counts(app) == before
    # A forged hospital id is not a field: the request belongs to the user's hospital.
    public_id = post_form(nurse, app, hospital_id=str(hospital_id(app, "JMH")), status="awarded", version="9")
    trip = load(app, public_id)
    assert trip.hospital_id == hospital_id(app, "ALT") and trip.status == "open" and trip.version == 1


def test_preferred_only_needs_a_preferred_list(app, nurse):
    with app.app_context():
        db.session.execute(sa.delete(HospitalAgencyPreference).where(
            HospitalAgencyPreference.hospital_id == hospital_id(app, "ALT")))
        db.session.commit()
    before = counts(app)
    page = text(nurse.get("/hospital/requests/new"))
    assert "Your hospital has no preferred agencies yet." in page
    assert re.search(r'checked id="invite_mode-1"', page)  # "all" is the default now
    for mode in ("preferred", "preferred_then_all"):
        response = nurse.post("/hospital/requests/new",
                              data=valid_form(app, invite_mode=mode, invite_all_after_minutes="10"))
        assert response.status_code == 400
        assert "no preferred agencies yet: invite all agencies" in text(response)
    assert counts(app) == before
    # The service refuses it too (a list emptied while the form was open).
    with app.app_context():
        with pytest.raises(trips.TransitionRefused) as refused:
            trip_posting.post(hospital_id(app, "ALT"), "ALT", {"invite_mode": "preferred"}, actor=Actor(None, None, ""))
        assert refused.value.status == 400
        db.session.rollback()


def test_csrf_token_is_required(app, nurse):
    app.config["WTF_CSRF_ENABLED"] = True
    before = counts(app)
    response = nurse.post("/hospital/requests/new", data=valid_form(app))
    assert response.status_code == 400 and "Form expired" in text(response)
    assert counts(app) == before


# --- scoping ---------------------------------------------------------------------------------

def test_another_hospital_cannot_see_or_touch_a_request(app, client, auth, demo):
    auth.login(ALT_NURSE)
    public_id = post_form(client, app)
    bid_id = bid_on(app, public_id, "AEMS", 20)
    reference = load(app, public_id).reference
    auth.logout()
    auth.login(JMH_NURSE)
    before = counts(app)
    for path in ("", "/summary", "/bids", "/timeline", "/edit", "/cancel"):
        assert client.get(f"/hospital/requests/{public_id}{path}").status_code == 404, path
    assert award_form(client, public_id, bid_id, 1).status_code == 404
    assert client.post(f"/hospital/requests/{public_id}/cancel",
                       data={"reason": "not_needed", "version": "1"}).status_code == 404
    assert client.post(f"/hospital/requests/{public_id}/edit", data=edit_form(app)).status_code == 404
    found = text(client.get(f"/hospital/requests/panel?q={reference}"))
    assert public_id not in found and "No open request matches" in found
    assert counts(app) == before and load(app, public_id).status == "open"
    auth.logout()
    auth.login("dispatch@altoonaems.medport.test")
    assert client.get(f"/hospital/requests/{public_id}").status_code == 403
    assert client.get("/hospital/requests/panel").status_code == 403


def test_panels_ask_an_expired_session_to_sign_in_again(client):
    response = client.get("/hospital/requests/panel", headers={"HX-Request": "true"})
    assert response.status_code == 401 and response.headers["HX-Redirect"].startswith("/login")
