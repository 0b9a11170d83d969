"""Hospital staff: posting, tracking, awarding, cancelling, editing, re-posting, preferred agencies."""
import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.localtime import to_local
from dashboard.models.base import LEVEL_RANK, utcnow
from dashboard.models.center import Agency, AuditLog, Hospital, LiveSignal
from dashboard.models.ems import TransportBid, Unit
from dashboard.models.hospital import (
    HospitalAgencyPreference,
    HospitalFacility,
    TransportRequest,
    TransportRequestEvent,
)
from dashboard.models.outbox import CenterOutboxEvent, EmsOutboxEvent, HospitalOutboxEvent
from dashboard.services import bidding, deadlines, trips

ALT_NURSE = "nurse@altoona.medport.test"
JMH_NURSE = "nurse@johnstown.medport.test"
STALE = "changed while you were looking at it"


# --- helpers -------------------------------------------------------------------------------

def local_time(app, minutes):
    """A ``datetime-local`` value ``minutes`` from now, in the region's zone."""
    with app.app_context():
        return to_local(utcnow() + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M")


def facility_id(app, name):
    with app.app_context():
        return db.session.scalar(sa.select(HospitalFacility.public_id).where(HospitalFacility.name == name))


def hospital_id(app, code):
    with app.app_context():
        return db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == code))


def valid_form(app, **overrides):
    """A complete, valid new-request form for Altoona (pickup 5 to 7 hours from now)."""
    data = dict(
        origin_facility=facility_id(app, "Altoona Regional Medical Center"),
        pickup_location="4 West, room 412",
        destination_facility=facility_id(app, "Johnstown Memorial Hospital"),
        destination_address="",
        level_of_care="ALS", urgency="urgent", mobility="stretcher",
        window_start=local_time(app, 300), window_end=local_time(app, 420),
        patient_ref="P-ACDEFH", age_group="older_adult", weight_kg="82", isolation="contact",
        oxygen_lpm="2.5", cardiac_monitor="y", other_needs="Fall risk", notes="Daughter meets the crew",
        bid_deadline_minutes="30", invite_mode="all", invite_all_after_minutes="",
    )
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def post_trip(client, app, **overrides):
    """Post a request through the form; return its public id."""
    response = client.post("/hospital/requests/new", data=valid_form(app, **overrides))
    assert response.status_code == 302, response.get_data(as_text=True)
    match = re.fullmatch(r"/hospital/requests/([0-9a-f-]{36})", response.headers["Location"])
    assert match, response.headers["Location"]
    return match.group(1)


def load(app, public_id):
    """The trip as stored now (detached, columns loaded)."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        db.session.expunge(trip)
        return trip


def counts(app):
    """(trips, history rows, hospital outbox rows): what a refused action must leave alone."""
    with app.app_context():
        return tuple(db.session.scalar(sa.select(sa.func.count(model.id)))
                     for model in (TransportRequest, TransportRequestEvent, HospitalOutboxEvent))


def outbox_types(app, public_id):
    with app.app_context():
        return list(db.session.scalars(
            sa.select(HospitalOutboxEvent.type).where(HospitalOutboxEvent.entity_id == public_id)
            .order_by(HospitalOutboxEvent.id)))


def history_actions(app, public_id):
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        return [e.action for e in db.session.scalars(
            sa.select(TransportRequestEvent).where(TransportRequestEvent.trip_id == trip.id)
            .order_by(TransportRequestEvent.id))]


def place_bid(app, public_id, agency_code, eta, note=""):
    """An agency's bid (EMS silo), with the first of its units that may take it; return its public id."""
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        agency = db.session.scalar(sa.select(Agency).where(Agency.short_code == agency_code))
        units = db.session.scalars(sa.select(Unit).where(Unit.agency_id == agency.id).order_by(Unit.id))
        for unit in units:
            if LEVEL_RANK[unit.level] < LEVEL_RANK[trip.level_of_care]:
                continue
            try:
                bid = bidding.place(trip, agency.id, agency.name, agency.level_list, unit.id, eta, note, None)
            except bidding.BidRefused:
                db.session.rollback()
                continue
            db.session.commit()
            return bid.public_id
    raise AssertionError(f"{agency_code} has no unit free for this request")


def version_of(app, public_id):
    return load(app, public_id).version


def award(client, public_id, bid_public_id, version):
    return client.post(f"/hospital/requests/{public_id}/award",
                       data={"bid": bid_public_id, "version": str(version)})


def text(response):
    return response.get_data(as_text=True)


@pytest.fixture
def nurse(client, auth, demo):
    """The Altoona charge nurse, signed in."""
    assert auth.login(ALT_NURSE).status_code == 302
    return client


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


def freeze_clock(monkeypatch, moment):
    """Every ``utcnow`` the app reads returns ``moment`` (naive UTC) from here on, so a page
    and the form posted from it see one instant, chosen by the test, not the wall clock."""
    import sys

    from dashboard.models import base

    real = base.utcnow
    for name, module in list(sys.modules.items()):
        if name.startswith("dashboard.") and getattr(module, "utcnow", None) is real:
            monkeypatch.setattr(module, "utcnow", lambda: moment)


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
    from tests.test_hostile_input import PageForms

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
    public_id = post_trip(nurse, app)
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
    public_id = post_trip(nurse, app, destination_facility="", destination_address="12 Elm St, Hollidaysburg",
                          invite_mode="preferred_then_all", invite_all_after_minutes="15")
    trip = load(app, public_id)
    assert trip.destination_facility_id is None and trip.destination_address == "12 Elm St, Hollidaysburg"
    assert trip.invite_mode == "preferred_then_all" and trip.invite_all_after_minutes == 15
    with app.app_context():
        preferred = trips.preferred_agency_ids(trip.hospital_id)
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
    post_trip(nurse, app, window_start=local_time(app, -5), window_end=local_time(app, 60),
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
    public_id = post_trip(nurse, app, hospital_id=str(hospital_id(app, "JMH")), status="awarded", version="9")
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
            trips.post(hospital_id(app, "ALT"), "ALT", {"invite_mode": "preferred"}, None, "")
        assert refused.value.status == 400
        db.session.rollback()


def test_csrf_token_is_required(app, nurse):
    app.config["WTF_CSRF_ENABLED"] = True
    before = counts(app)
    response = nurse.post("/hospital/requests/new", data=valid_form(app))
    assert response.status_code == 400 and "Form expired" in text(response)
    assert counts(app) == before


# --- dashboard -------------------------------------------------------------------------------

def test_dashboard_tabs_follow_the_lifecycle(app, nurse, deliver):
    open_id = post_trip(nurse, app, pickup_location="ICU bed 7")
    place_bid(app, open_id, "AEMS", 25)
    place_bid(app, open_id, "CLL", 12)
    deliver()
    open_ref = load(app, open_id).reference
    panel = text(nurse.get("/hospital/requests/panel"))
    row = re.search(rf"{open_ref}.*?</tr>", panel, re.S).group(0)
    assert re.search(r'<td class="num">2</td>\s*<td class="num">12 min</td>', row)
    assert "<html" not in panel and 'aria-current="page">Open' in panel

    awarded_id = post_trip(nurse, app)
    bid_id = place_bid(app, awarded_id, "ACCT", 18)
    assert award(nurse, awarded_id, bid_id, version_of(app, awarded_id)).status_code == 302
    active = text(nurse.get("/hospital/?tab=active"))
    assert load(app, awarded_id).reference in active and "Allegheny Critical Care Transport" in active
    assert "18 min" in active and 'aria-current="page">Awarded / in progress' in active

    done_id = post_trip(nurse, app)
    done_bid = place_bid(app, done_id, "CMT", 30)
    award(nurse, done_id, done_bid, version_of(app, done_id))
    with app.app_context():
        trip = trips.get_by_public_id(done_id)
        for step in trips.CREW_STEPS:
            assert trips.apply_crew_step(trip, step, utcnow(), "Medic 62", trip.awarded_agency_id)
        db.session.commit()
    completed = text(nurse.get("/hospital/?tab=completed"))
    assert load(app, done_id).reference in completed

    cancelled_id = post_trip(nurse, app)
    nurse.post(f"/hospital/requests/{cancelled_id}/cancel",
               data={"reason": "not_needed", "version": "1"})
    cancelled = text(nurse.get("/hospital/?tab=cancelled"))
    assert load(app, cancelled_id).reference in cancelled and "Transport no longer needed" in cancelled
    # Each trip shows in its own tab only.
    assert load(app, cancelled_id).reference not in text(nurse.get("/hospital/"))


def test_dashboard_sorts_searches_and_pages(app, nurse):
    alt = hospital_id(app, "ALT")
    with app.app_context():
        origin = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == alt))
        now = utcnow()
        for i in range(27):
            trips.post(alt, "ALT", dict(
                origin_facility_id=origin.id, pickup_location=f"Room {i}", destination_address="Home",
                level_of_care="BLS", mobility="wheelchair", urgency=("emergent" if i == 26 else "routine"),
                window_start=now + timedelta(hours=2, minutes=i), window_end=now + timedelta(hours=4),
                patient_ref="", age_group="adult", weight_kg=70, bid_deadline=now + timedelta(hours=1),
            ), 1, "Test")
        db.session.commit()
        references = sorted(db.session.scalars(sa.select(TransportRequest.reference).where(
            TransportRequest.hospital_id == alt, TransportRequest.status == "open")))
    first = text(nurse.get("/hospital/"))
    assert first.count('<tr>') + first.count('<tr class="at-risk">') == 26  # 25 rows and the header
    assert "Showing 1–25 of 27 requests · page 1 of 2" in first and 'rel="next"' in first
    # Default sort for open requests: emergent first.
    assert re.search(r"<tbody>\s*<tr[^>]*>\s*<td[^>]*><a[^>]*>([A-Z0-9-]+)</a>", first)
    assert "Emergent" in re.search(r"<tbody>.*?</tr>", first, re.S).group(0)
    second = text(nurse.get("/hospital/?page=2"))
    assert "Showing 26–27 of 27 requests · page 2 of 2" in second and 'rel="prev"' in second
    by_reference = text(nurse.get("/hospital/?sort=reference"))
    shown = re.findall(r'/hospital/requests/[0-9a-f-]{36}">([A-Z0-9-]+)</a>', by_reference)
    assert shown == references[:25]
    assert 'aria-sort="ascending"' in by_reference and 'href="/hospital/?sort=-reference"' in by_reference
    descending = text(nurse.get("/hospital/?sort=-reference"))
    assert re.findall(r'/hospital/requests/[0-9a-f-]{36}">([A-Z0-9-]+)</a>', descending)[0] == references[-1]
    found = text(nurse.get("/hospital/?q=" + references[3].lower()))
    assert re.findall(r'/hospital/requests/[0-9a-f-]{36}">([A-Z0-9-]+)</a>', found) == [references[3]]
    assert "1 request matching" in found
    assert "No open request matches" in text(nurse.get("/hospital/?q=%25_nothing"))
    for odd in ("page=abc", "page=-3", "page=99999999", "tab=secret", "q=" + "x" * 500, "page=%C2%B2"):
        assert nurse.get("/hospital/?" + odd).status_code == 200, odd
    for path in ("/hospital/?sort=drop+table", "/hospital/requests/panel?sort=-nonsense"):
        refused = nurse.get(path)
        assert refused.status_code == 400 and "Sort by one of: reference" in text(refused), path
    # The live panel keeps the view in its own URL.
    page = text(nurse.get("/hospital/?tab=open&sort=-reference&page=2&q=ALT"))
    assert 'hx-get="/hospital/requests/panel?sort=-reference&amp;page=2&amp;q=ALT"' in page
    assert 'hx-trigger="load, sse:trip-updated, sse:bid-updated"' in page
    panel = text(nurse.get("/hospital/requests/panel?sort=-reference&page=2&q=ALT"))
    assert "page 2 of 2" in panel and "<main" not in panel


def test_unfilled_requests_are_marked_and_may_be_reposted(app, nurse, deliver):
    public_id = post_trip(nurse, app)
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id)
                           .values(bid_deadline=utcnow() - timedelta(minutes=1)))
        db.session.commit()
    row = re.search(rf"{load(app, public_id).reference}.*?</tr>", text(nurse.get("/hospital/requests/panel")),
                    re.S).group(0)
    assert "Unfilled" in row
    deliver()  # the deadline timer flags it
    assert load(app, public_id).unfilled_at is not None
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    assert "Unfilled" in page and f"/hospital/requests/new?repost={public_id}" in page
    assert "Bidding deadline passed unfilled" in page


# --- request page ------------------------------------------------------------------------------

def test_request_page_shows_details_bids_best_first_and_timeline(app, nurse, deliver):
    public_id = post_trip(nurse, app)
    withdrawn = place_bid(app, public_id, "AEMS", 40, note="Crew nearby")
    place_bid(app, public_id, "CLL", 15)
    with app.app_context():  # a withdrawn bid is not shown
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == withdrawn))
        bid.status = "withdrawn"
        db.session.commit()
    place_bid(app, public_id, "ACCT", 22)
    deliver()
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    for fact in ("4 West, room 412", "Johnstown Memorial Hospital", "ALS", "Older adult (65+)", "82 kg",
                 "Contact", "2.5 L/min", "Cardiac monitor", "Fall risk", "Daughter meets the crew"):
        assert fact in page, fact
    assert 'hx-trigger="load, sse:trip-updated, sse:bid-updated"' in page
    bids = text(nurse.get(f"/hospital/requests/{public_id}/bids"))
    assert "<main" not in bids
    names = re.findall(r"<td>(Centre LifeLink|Allegheny Critical Care Transport|Altoona EMS)", bids)
    assert names == ["Centre LifeLink", "Allegheny Critical Care Transport"]
    assert re.search(r'class="best-bid">\s*<td>Centre LifeLink', bids)
    assert bids.count('name="version" value="1"') == 2 and "data-confirm=" in bids
    timeline = text(nurse.get(f"/hospital/requests/{public_id}/timeline"))
    assert "Posted" in timeline and "by Charge Nurse (ALT)" in timeline and "<main" not in timeline
    summary = text(nurse.get(f"/hospital/requests/{public_id}/summary"))
    assert "best ETA 15 min" in summary and "<main" not in summary


# --- awarding --------------------------------------------------------------------------------

def test_award_a_live_bid(app, nurse, deliver):
    public_id = post_trip(nurse, app)
    slow = place_bid(app, public_id, "AEMS", 40)
    fast = place_bid(app, public_id, "CLL", 15)
    deliver()
    response = award(nurse, public_id, fast, 1)
    assert response.status_code == 302
    trip = load(app, public_id)
    assert trip.status == "awarded" and trip.version == 2 and trip.award_source == "hospital"
    assert trip.awarded_agency_name == "Centre LifeLink" and trip.awarded_eta_minutes == 15
    assert history_actions(app, public_id) == ["posted", "awarded"]
    assert outbox_types(app, public_id) == ["trip.posted", "trip.awarded"]
    deliver()
    with app.app_context():
        statuses = dict(db.session.execute(sa.select(TransportBid.public_id, TransportBid.status).where(
            TransportBid.public_id.in_([slow, fast]))).all())
        assert statuses == {fast: "accepted", slow: "declined"}
        assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "trip.awarded",
                                                           AuditLog.entity_id == public_id)) is not None
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    assert "awarded to Centre LifeLink" in page and "<strong>Awarded</strong>" in page
    assert "Award<span" not in page  # no more award buttons


def test_two_users_award_at_once_exactly_one_wins(app, client, auth, demo, deliver):
    auth.login(ALT_NURSE)
    other = app.test_client()
    assert other.post("/login", data={"email": ALT_NURSE, "password": "medport-demo"}).status_code == 302
    public_id = post_trip(client, app)
    first = place_bid(app, public_id, "AEMS", 30)
    second = place_bid(app, public_id, "CLL", 20)
    deliver()
    # Both pages were loaded with version 1.
    for browser in (client, other):
        assert 'name="version" value="1"' in text(browser.get(f"/hospital/requests/{public_id}/bids"))
    assert award(client, public_id, first, 1).status_code == 302
    losing = award(other, public_id, second, 1)
    assert losing.status_code == 409
    assert "was already awarded to Altoona EMS; nothing was saved." in text(losing)
    trip = load(app, public_id)
    assert trip.status == "awarded" and trip.awarded_agency_name == "Altoona EMS"
    assert history_actions(app, public_id).count("awarded") == 1
    assert outbox_types(app, public_id).count("trip.awarded") == 1


def test_a_user_loses_cleanly_to_the_auto_award(app, nurse, deliver):
    public_id = post_trip(nurse, app)
    mine = place_bid(app, public_id, "AEMS", 30)
    auto = place_bid(app, public_id, "CLL", 20)
    deliver()
    version = version_of(app, public_id)
    with app.app_context():  # the auto-award acts first
        trip = trips.get_by_public_id(public_id)
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == auto))
        trips.award(trip, deadlines.bid_for_award(bid), None, "MedPort auto-award", source="auto")
        db.session.commit()
    response = award(nurse, public_id, mine, version)
    assert response.status_code == 409 and "was already awarded to Centre LifeLink" in text(response)
    trip = load(app, public_id)
    assert trip.award_source == "auto" and trip.awarded_agency_name == "Centre LifeLink"


def test_two_sessions_racing_compare_and_set(app, nurse, deliver):
    """Two sessions read the same open trip; both award it; the second finds it changed."""
    public_id = post_trip(nurse, app)
    bids = [place_bid(app, public_id, "AEMS", 30), place_bid(app, public_id, "CLL", 20)]
    deliver()

    def offer(bid_public_id):
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))
        return deadlines.bid_for_award(bid)

    with app.app_context():
        first = trips.get_by_public_id(public_id)
        with app.app_context():  # a second session, reading the same version
            second = trips.get_by_public_id(public_id)
            assert first is not second and second.version == first.version == 1
            trips.award(second, offer(bids[1]), None, "MedPort auto-award", source="auto", expected_version=1)
            db.session.commit()
        with pytest.raises(trips.TransitionRefused) as refused:
            trips.award(first, offer(bids[0]), None, "Charge Nurse (ALT)", expected_version=1)
        db.session.rollback()
    assert refused.value.status == 409 and STALE in refused.value.message
    trip = load(app, public_id)
    assert trip.award_source == "auto" and trip.version == 2
    assert history_actions(app, public_id).count("awarded") == 1


def test_two_awards_in_parallel_threads(app, nurse, deliver):
    """A real race: two threads award the same trip at the same moment."""
    public_id = post_trip(nurse, app)
    bids = [place_bid(app, public_id, "AEMS", 30), place_bid(app, public_id, "CLL", 20)]
    deliver()
    barrier = threading.Barrier(2, timeout=20)
    outcomes = []

    def contender(bid_public_id):
        with app.app_context():
            try:
                trip = trips.get_by_public_id(public_id)
                bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == bid_public_id))
                offer = deadlines.bid_for_award(bid)
                db.session.commit()  # end the reads: both now hold nothing
                barrier.wait()
                trips.award(trip, offer, None, "Race", expected_version=1)
                db.session.commit()
                outcomes.append("won")
            except trips.TransitionRefused:
                db.session.rollback()
                outcomes.append("refused")
            except Exception as exc:
                db.session.rollback()
                outcomes.append(type(exc).__name__)
            finally:
                db.session.remove()

    threads = [threading.Thread(target=contender, args=(b,)) for b in bids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(outcomes) == ["refused", "won"], outcomes
    assert history_actions(app, public_id).count("awarded") == 1


def test_award_refusals(app, nurse, deliver):
    public_id = post_trip(nurse, app)
    other_id = post_trip(nurse, app)
    live = place_bid(app, public_id, "AEMS", 30)
    withdrawn = place_bid(app, public_id, "CLL", 20)
    foreign = place_bid(app, other_id, "ACCT", 10)
    with app.app_context():
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.public_id == withdrawn))
        bid.status = "withdrawn"
        db.session.commit()
    deliver()
    before = counts(app)
    assert award(nurse, public_id, foreign, 1).status_code == 404
    assert award(nurse, public_id, "no-such-bid", 1).status_code == 404
    response = award(nurse, public_id, withdrawn, 1)
    assert response.status_code == 409 and "no longer live (it was withdrawn)" in text(response)
    for version in ("abc", "", "-1", "1.0", "99999999999"):
        response = award(nurse, public_id, live, version)
        assert response.status_code == 400 and "This form was altered" in text(response), version
    assert nurse.post(f"/hospital/requests/{public_id}/award", data={"version": "1"}).status_code == 400
    assert award(nurse, public_id, live, 7).status_code == 409  # a stale page
    assert counts(app) == before and load(app, public_id).status == "open"
    assert nurse.get(f"/hospital/requests/{public_id}/award").status_code == 405
    # Awarded already: a second award with the current version is refused too.
    assert award(nurse, public_id, live, 1).status_code == 302
    second = place_bid(app, other_id, "CLL", 12)
    assert award(nurse, other_id, second, 1).status_code == 302
    response = award(nurse, public_id, live, 2)
    assert response.status_code == 409 and "was already awarded to Altoona EMS" in text(response)


# --- cancelling ------------------------------------------------------------------------------

def test_cancel_open_and_awarded_requests(app, nurse, deliver):
    open_id = post_trip(nurse, app)
    page = text(nurse.get(f"/hospital/requests/{open_id}/cancel"))
    assert 'name="version" type="hidden" value="1"' in page and "Transport no longer needed" in page
    response = nurse.post(f"/hospital/requests/{open_id}/cancel",
                          data={"reason": "patient_not_stable", "note": "", "version": "1"})
    assert response.status_code == 302
    trip = load(app, open_id)
    assert trip.status == "cancelled" and trip.cancel_reason == "patient_not_stable"
    assert outbox_types(app, open_id)[-1] == "trip.cancelled"
    assert history_actions(app, open_id) == ["posted", "cancelled"]

    awarded_id = post_trip(nurse, app)
    bid_id = place_bid(app, awarded_id, "AEMS", 25)
    award(nurse, awarded_id, bid_id, 1)
    deliver()
    response = nurse.post(f"/hospital/requests/{awarded_id}/cancel",
                          data={"reason": "other", "note": "Family is driving", "version": "2"})
    assert response.status_code == 302
    trip = load(app, awarded_id)
    assert trip.status == "cancelled" and trip.cancel_note == "Family is driving"
    deliver()
    with app.app_context():
        assert db.session.scalar(sa.select(TransportBid.status).where(TransportBid.public_id == bid_id)) == "closed"
        assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "trip.cancelled",
                                                           AuditLog.entity_id == awarded_id)) is not None


def test_cancel_refusals(app, nurse):
    public_id = post_trip(nurse, app)
    before = counts(app)
    cases = [
        (dict(reason="other", note="", version="1"), 400, "Say why, when the reason is"),
        (dict(reason="other", note="   ", version="1"), 400, "Say why, when the reason is"),
        (dict(reason="bored", version="1"), 400, "Choose one of the listed reasons."),
        (dict(version="1"), 400, "Choose why the request is cancelled."),
        (dict(reason="not_needed", note="x" * 301, version="1"), 400, "Keep the details to 300 characters."),
        (dict(reason="not_needed", version="x"), 400, "This form was altered"),
        (dict(reason="not_needed"), 400, "This form is incomplete"),
        (dict(reason="not_needed", version="5"), 409, STALE),
    ]
    for data, status, message in cases:
        response = nurse.post(f"/hospital/requests/{public_id}/cancel", data=data)
        assert response.status_code == status and message in text(response), data
    assert counts(app) == before and load(app, public_id).status == "open"
    # A stale form re-renders with the current version, so a second, informed try works.
    assert nurse.post(f"/hospital/requests/{public_id}/cancel",
                      data={"reason": "not_needed", "version": "1"}).status_code == 302
    again = nurse.post(f"/hospital/requests/{public_id}/cancel", data={"reason": "not_needed", "version": "2"})
    assert again.status_code == 409 and "cannot be cancelled here" in text(again)
    with app.app_context():  # en route: too late to cancel here
        trip = trips.post(hospital_id(app, "ALT"), "ALT", dict(load_fields(app)), 1, "Test")
        db.session.commit()
        en_route_id = trip.public_id
    bid_id = place_bid(app, en_route_id, "AEMS", 20)
    award(nurse, en_route_id, bid_id, 1)
    with app.app_context():
        trip = trips.get_by_public_id(en_route_id)
        trips.apply_crew_step(trip, "en_route", utcnow(), "Medic 11", trip.awarded_agency_id)
        db.session.commit()
    response = nurse.post(f"/hospital/requests/{en_route_id}/cancel", data={"reason": "not_needed", "version": "3"})
    assert response.status_code == 409 and load(app, en_route_id).status == "en_route"


def load_fields(app):
    """Stored fields for a request posted directly through the service."""
    alt = hospital_id(app, "ALT")
    origin = db.session.scalar(sa.select(HospitalFacility.id).where(HospitalFacility.hospital_id == alt))
    now = utcnow()
    return dict(origin_facility_id=origin, pickup_location="ED bay 3", destination_address="Home",
                level_of_care="BLS", mobility="stretcher", urgency="routine",
                window_start=now + timedelta(hours=9), window_end=now + timedelta(hours=10),
                patient_ref="", age_group="adult", weight_kg=70, bid_deadline=now + timedelta(hours=1))


# --- editing ---------------------------------------------------------------------------------

def edit_form(app, **overrides):
    data = dict(window_start=local_time(app, 300), window_end=local_time(app, 420), mobility="stretcher",
                weight_kg="82", isolation="contact", oxygen_lpm="2.5", cardiac_monitor="y",
                other_needs="Fall risk", notes="Daughter meets the crew", version="1")
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def test_edit_an_open_request(app, nurse, deliver):
    public_id = post_trip(nurse, app)
    page = text(nurse.get(f"/hospital/requests/{public_id}/edit"))
    assert 'value="Fall risk"' in page and 'name="version" type="hidden" value="1"' in page
    original = load(app, public_id)
    unchanged = nurse.post(f"/hospital/requests/{public_id}/edit",
                           data=edit_form(app, window_start=to_local_input(app, original.window_start),
                                          window_end=to_local_input(app, original.window_end)))
    assert unchanged.status_code == 302 and load(app, public_id).version == 1
    assert outbox_types(app, public_id) == ["trip.posted"]
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=edit_form(
        app, window_start=to_local_input(app, original.window_start), window_end=local_time(app, 480),
        notes="Bring the bariatric stretcher", mobility="bariatric_stretcher", iv_pump="y"))
    assert response.status_code == 302
    trip = load(app, public_id)
    assert trip.version == 2 and trip.notes == "Bring the bariatric stretcher" and trip.iv_pump
    assert trip.window_start == original.window_start and trip.window_end > original.window_end
    with app.app_context():
        event = db.session.scalar(sa.select(HospitalOutboxEvent).where(
            HospitalOutboxEvent.entity_id == public_id, HospitalOutboxEvent.type == "trip.changed"))
        assert sorted(event.payload["changed"]) == ["iv_pump", "mobility", "notes", "window_end"]
    assert history_actions(app, public_id) == ["posted", "changed"]
    deliver()
    assert "Changed: Latest pickup, Mobility, IV pump, Notes for the crew" in text(
        nurse.get(f"/hospital/requests/{public_id}/timeline"))
    # A window that has begun may be kept while other things change.
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id)
                           .values(window_start=utcnow().replace(second=0, microsecond=0) - timedelta(minutes=30)))
        db.session.commit()
    started = load(app, public_id)
    page = text(nurse.get(f"/hospital/requests/{public_id}/edit"))
    assert f'min="{to_local_input(app, started.window_start)}"' in page
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=edit_form(
        app, window_start=to_local_input(app, started.window_start),
        window_end=to_local_input(app, started.window_end), notes="Ready now", version="2"))
    assert response.status_code == 302 and load(app, public_id).notes == "Ready now"


def to_local_input(app, value):
    with app.app_context():
        return to_local(value).strftime("%Y-%m-%dT%H:%M")


def test_edit_refusals(app, nurse):
    public_id = post_trip(nurse, app)
    before = counts(app)
    cases = [
        (dict(window_end=local_time(app, 200)), 400, "The latest pickup must be after the earliest pickup."),
        (dict(window_start=local_time(app, -60)), 400, "The earliest pickup is in the past."),
        (dict(weight_kg="9000"), 400, "Enter a weight from 1 to 400 kg."),
        (dict(oxygen_lpm="nan"), 400, "Enter the oxygen flow as a number."),
        (dict(notes="x" * 501), 400, "Keep notes to 500 characters."),
        (dict(mobility="hover"), 400, "Choose one of the listed mobility options."),
        (dict(version="one"), 400, "This form was altered"),
        (dict(version="4", notes="Changed"), 409, STALE),
        (dict(version="4"), 409, STALE),  # stale even with nothing to change
    ]
    for overrides, status, message in cases:
        response = nurse.post(f"/hospital/requests/{public_id}/edit", data=edit_form(app, **overrides))
        assert response.status_code == status and message in text(response), overrides
    assert counts(app) == before and load(app, public_id).notes == "Daughter meets the crew"
    bid_id = place_bid(app, public_id, "AEMS", 20)
    award(nurse, public_id, bid_id, 1)
    before = counts(app)
    for method in ("get", "post"):
        response = getattr(nurse, method)(f"/hospital/requests/{public_id}/edit", data=edit_form(app, version="2"))
        assert response.status_code == 409 and "Only an open request can be edited" in text(response)
    assert counts(app) == before


# --- re-posting ------------------------------------------------------------------------------

def test_repost_a_cancelled_request(app, nurse):
    public_id = post_trip(nurse, app, other_needs="Oxygen at destination")
    nurse.post(f"/hospital/requests/{public_id}/cancel", data={"reason": "no_availability", "version": "1"})
    old = load(app, public_id)
    form = text(nurse.get(f"/hospital/requests/new?repost={public_id}"))
    assert f"Re-post {old.reference} as a new request" in form
    assert 'value="4 West, room 412"' in form and "P-ACDEFH" in form and 'value="Oxygen at destination"' in form
    assert f'name="reposted_from" type="hidden" value="{public_id}"' in form
    assert re.search(r'id="window_start"[^>]*value="\d{4}-', form)  # still in the future: kept
    new_id = post_trip(nurse, app, reposted_from=public_id, reposted_version="2")
    new = load(app, new_id)
    assert new.reposted_from_id == old.id and new.status == "open" and new.patient_ref == "P-ACDEFH"
    assert load(app, public_id).status == "cancelled"
    assert f"Re-post of</dt><dd><a href=\"/hospital/requests/{public_id}\">" in text(
        nurse.get(f"/hospital/requests/{new_id}"))


def test_repost_an_unfilled_request_replaces_it(app, nurse):
    public_id = post_trip(nurse, app)
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id).values(
            bid_deadline=utcnow() - timedelta(minutes=5), window_start=utcnow() - timedelta(hours=1)))
        db.session.commit()
    form = text(nurse.get(f"/hospital/requests/new?repost={public_id}"))
    assert "The old pickup window has passed: enter a new one." in form
    assert re.search(r'id="window_start"[^>]*value=""', form)
    assert "Posting this cancels the unfilled" in form
    new_id = post_trip(nurse, app, reposted_from=public_id, reposted_version="1")
    old = load(app, public_id)
    assert old.status == "cancelled" and old.cancel_reason == "other"
    assert load(app, new_id).reference in old.cancel_note


def test_repost_refusals(app, nurse, client):
    public_id = post_trip(nurse, app)
    before = counts(app)
    response = nurse.get(f"/hospital/requests/new?repost={public_id}")
    assert response.status_code == 409 and "Only a cancelled or unfilled request can be re-posted." in text(response)
    response = nurse.post("/hospital/requests/new", data=valid_form(app, reposted_from=public_id,
                                                                     reposted_version="1"))
    assert response.status_code == 409
    assert nurse.get("/hospital/requests/new?repost=nope").status_code == 404
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id)
                           .values(bid_deadline=utcnow() - timedelta(minutes=5)))
        db.session.commit()
    response = nurse.post("/hospital/requests/new", data=valid_form(app, reposted_from=public_id,
                                                                     reposted_version="zz"))
    assert response.status_code == 400 and "This form was altered" in text(response)
    stale = nurse.post("/hospital/requests/new", data=valid_form(app, reposted_from=public_id,
                                                                  reposted_version="7"))
    assert stale.status_code == 409 and STALE in text(stale)
    assert counts(app) == before and load(app, public_id).status == "open"
    # Another hospital's request cannot be the source, even through the hidden field.
    nurse.post("/logout")
    assert nurse.post("/login", data={"email": JMH_NURSE, "password": "medport-demo"}).status_code == 302
    assert nurse.get(f"/hospital/requests/new?repost={public_id}").status_code == 404
    johnstown = facility_id(app, "Johnstown Memorial Hospital")
    response = nurse.post("/hospital/requests/new", data=valid_form(
        app, origin_facility=johnstown, destination_facility=facility_id(app, "Tyrone Area Hospital"),
        reposted_from=public_id, reposted_version="1"))
    assert response.status_code == 404 and counts(app) == before


# --- scoping ---------------------------------------------------------------------------------

def test_another_hospital_cannot_see_or_touch_a_request(app, client, auth, demo):
    auth.login(ALT_NURSE)
    public_id = post_trip(client, app)
    bid_id = place_bid(app, public_id, "AEMS", 20)
    reference = load(app, public_id).reference
    auth.logout()
    auth.login(JMH_NURSE)
    before = counts(app)
    for path in ("", "/summary", "/bids", "/timeline", "/edit", "/cancel"):
        assert client.get(f"/hospital/requests/{public_id}{path}").status_code == 404, path
    assert award(client, public_id, bid_id, 1).status_code == 404
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
    trip = load(app, post_trip(nurse, app, invite_mode="preferred"))
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
