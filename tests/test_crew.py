"""The crew on a phone (/crew/): shifts, the unit's trips only, taps with their own time and key.

Server side, on SQLite and PostgreSQL: who may use the crew's page and what it shows, the
idempotency of taps, the bounds on a tap's time, and the conflicts a tap that waited on the
phone can meet.  The browser side (offline queue, service worker, storage) is
``tests/browser/test_crew_phone.py``.
"""
from datetime import UTC, timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.routes import may_receive
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import LiveSignal, User
from dashboard.models.ems import CrewShift, CrewTap, EmsRoute, TransportBid, Unit
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import crew, trips, users
from dashboard.services.crew import CrewRefused
from dashboard.services.users import Actor as AccountActor
from dashboard.services.users import UserRefused
from tests.conftest import DEMO_PASSWORD
from tests.helpers import agency, award, place_bid, post_trip

CREW = "crew@altoonaems.medport.test"
CREW_BCA = "crew@blaircounty.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"


def _sign_in(app, email):
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 302, email
    return client


def _awarded(app, deliver, agency_code="AEMS", level="BLS"):
    """A trip of Altoona awarded to a unit of ``agency_code``, delivered: (trip public id,
    unit public id, unit id, trip reference)."""
    with app.app_context():
        trip_id = post_trip("ALT", level=level)
        bid_id = place_bid(trip_id, agency_code, 15)
        award(trip_id, bid_id)
    deliver()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        unit = db.session.get(TransportBid, bid_id).unit
        return trip.public_id, unit.public_id, unit.id, trip.reference


def _tap(client, trip, step, act="advance", key=None, tapped_at=None):
    body = {"key": key or f"k{utcnow().timestamp():.6f}".replace(".", ""), "trip": trip, "act": act,
            "step": step}
    if tapped_at is not None:
        body["tapped_at"] = tapped_at.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z")
    return client.post("/crew/taps", json=body)


def _route(trip_public_id):
    return db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_public_id == trip_public_id))


def _step_events(trip_id):
    model = OUTBOX_BY_SILO["ems"]
    return db.session.scalar(sa.select(sa.func.count(model.id)).where(
        model.type == "trip.status_changed", model.entity_id == str(trip_id)))


@pytest.fixture
def shift(app, demo, deliver):
    """A trip awarded to an Altoona EMS unit, and the demo crew member signed in on that unit."""
    trip, unit, unit_id, reference = _awarded(app, deliver)
    client = _sign_in(app, CREW)
    response = client.post("/crew/shift", data={"unit": unit})
    assert response.status_code == 303
    return {"client": client, "trip": trip, "unit": unit, "unit_id": unit_id, "reference": reference}


# --- accounts and shifts ------------------------------------------------------------------------

def test_the_center_makes_a_crew_account_bound_to_an_agency(app, demo):
    with app.app_context():
        admin = db.session.scalar(sa.select(User).where(User.email == "admin@medport.test"))
        actor = AccountActor(admin.id, admin.email, "127.0.0.1")
        with pytest.raises(UserRefused, match="crew member must belong to an agency"):
            users.check_binding("crew", None, None)
        user, password = users.create(actor, "medic@altoonaems.test", "New Medic", "crew", None,
                                      agency("AEMS").id)
        db.session.commit()
        assert user.role == "crew" and user.agency_id == agency("AEMS").id and password
        # The silo's own check refuses a crew account without an agency, whatever the code says.
        db.session.add(User(email="loose@crew.test", display_name="Loose", role="crew", password_hash="x"))
        with pytest.raises(sa.exc.IntegrityError):
            db.session.commit()
        db.session.rollback()


def test_an_administrator_makes_a_crew_account_from_the_users_page(app, demo):
    admin = _sign_in(app, "admin@medport.test")
    with app.app_context():
        aems = agency("AEMS").id
    response = admin.post("/center/users/new", data={"email": "medic.new@altoonaems.test",
                                                     "display_name": "Pat Medic", "role": "crew",
                                                     "hospital": "", "agency": str(aems)})
    assert response.status_code == 201 and "Temporary password" in response.get_data(as_text=True)
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "medic.new@altoonaems.test"))
        assert user is not None and user.role == "crew" and user.agency_id == aems
    refused = admin.post("/center/users/new", data={"email": "medic.loose@altoonaems.test",
                                                    "display_name": "Loose Medic", "role": "crew",
                                                    "hospital": "", "agency": ""})
    assert refused.status_code == 400 and "crew member must belong to an agency" in refused.get_data(as_text=True)


def test_a_crew_member_signs_in_picks_a_unit_and_the_dispatcher_sees_who_staffs_it(app, demo):
    client = _sign_in(app, CREW)
    assert client.get("/").headers["Location"].endswith("/crew/")
    page = client.get("/crew/")
    assert page.status_code == 200 and "Which unit do you staff this shift?" in page.text
    with app.app_context():
        own = db.session.scalar(sa.select(Unit).where(Unit.agency_id == agency("AEMS").id).order_by(Unit.id))
        other = db.session.scalar(sa.select(Unit).where(Unit.agency_id == agency("BCA").id).order_by(Unit.id))
        own_public, own_number, other_public = own.public_id, own.number, other.public_id
    # Another agency's unit, or none: refused, nothing kept.
    assert client.post("/crew/shift", data={"unit": other_public}).status_code == 400
    assert client.post("/crew/shift", data={}).status_code == 400
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(CrewShift.id))) == 0
    assert client.post("/crew/shift", data={"unit": own_public}).status_code == 303
    page = client.get("/crew/")
    assert own_number in page.text and page.headers["X-Crew-Shift-Ends"].isdigit()
    units_page = _sign_in(app, DISPATCH).get("/ems/units/panel").text
    row = units_page[units_page.index(f"<th scope=\"row\">{own_number}</th>"):]
    assert "Riley Medic" in row[:row.index("</tr>")]
    # Ending the shift: the unit is no longer staffed by them.
    assert client.post("/crew/shift/end").status_code == 303
    assert "Riley Medic" not in _sign_in(app, DISPATCH).get("/ems/units/panel").text
    assert "Which unit" in client.get("/crew/").text


def test_a_shift_is_over_at_its_planned_end(app, shift):
    with app.app_context():
        row = db.session.scalar(sa.select(CrewShift))
        user_id = row.user_id
        assert crew.open_shift(user_id) is not None
        assert crew.open_shift(user_id, now=row.ends_at) is None
        row.ends_at = utcnow() - timedelta(seconds=1)
        row.started_at = row.ends_at - timedelta(hours=12)
        db.session.commit()
    client = shift["client"]
    assert client.get("/crew/panel").status_code == 204
    response = _tap(client, shift["trip"], "en_route")
    assert response.status_code == 409 and "shift has ended" in response.json["message"]


# --- who sees what ----------------------------------------------------------------------------

def test_the_crew_sees_only_their_units_trips(app, shift, deliver):
    other_trip, other_unit, _id, other_reference = _awarded(app, deliver)  # another AEMS unit
    assert other_unit != shift["unit"]
    client = shift["client"]
    page = client.get("/crew/").text
    assert shift["reference"] in page and other_reference not in page
    assert other_reference not in client.get("/crew/panel").text
    # A tap on another unit's trip: not found, and nothing moves.
    response = _tap(client, other_trip, "en_route")
    assert response.status_code == 404
    with app.app_context():
        assert _route(other_trip).status == "planned"


def test_the_crew_cannot_use_dispatcher_hospital_or_center_pages(app, shift):
    client = shift["client"]
    for url in ("/ems/", "/ems/trips", "/ems/units", "/hospital/", "/center/", "/center/users",
                "/ems/analytics"):
        assert client.get(url).status_code == 403, url
    assert client.post(f"/ems/trips/{shift['trip']}/advance", data={"step": "en_route"}).status_code == 403


def test_other_roles_cannot_use_the_crews_actions(app, shift):
    for email in (DISPATCH, "nurse@altoona.medport.test", "coordinator@medport.test"):
        other = _sign_in(app, email)
        assert other.get("/crew/").status_code == 403, email
        assert _tap(other, shift["trip"], "en_route").status_code == 403, email
        assert other.post("/crew/shift", data={"unit": shift["unit"]}).status_code == 403, email
    with app.app_context():
        assert _route(shift["trip"]).status == "planned"


def test_a_crews_stream_passes_on_only_its_units_signals():
    crew_viewer = ("crew", None, 5, 77, 12)
    ours = (1, "trip-updated", "t1", 3, ",5,", None, ",12,")
    other_unit = (2, "trip-updated", "t2", 3, ",5,", None, ",13,")
    open_request = (3, "trip-updated", "t3", 3, ",1,5,", None, "")
    other_agency = (4, "unit-updated", "u", None, ",6,", None, ",12,")
    config = (5, "config-updated", "c", None, "*", None, "")
    assert may_receive(crew_viewer, ours)
    assert not any(may_receive(crew_viewer, s) for s in (other_unit, open_request, other_agency, config))
    assert not may_receive(("crew", None, 5, 77, None), ours)  # no shift: nothing
    assert may_receive(("ems", None, 5, 1), other_unit)  # the dispatcher hears every unit


def test_a_crews_live_stream_carries_its_units_trips_only(app, shift, deliver):
    from tests.helpers import Stream

    app.config["MEDPORT_STREAM_MAX_SECONDS"] = 1.0
    stream = Stream(shift["client"])
    assert stream.read().startswith("retry: 2000")
    other_trip, _unit, _id, _reference = _awarded(app, deliver)  # another unit of the agency
    with app.app_context():
        open_request = db.session.get(TransportRequest, post_trip("ALT", level="BLS")).public_id
    deliver()
    assert _tap(shift["client"], shift["trip"], "en_route").status_code == 200
    deliver()
    assert stream.read_until(f"event: trip-updated\ndata: {shift['trip']}")
    text = stream.read_to_end()
    assert other_trip not in text and open_request not in text
    stream.close()


def test_a_trip_signal_names_its_awarded_unit(app, shift):
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == shift["trip"]))
        signal = db.session.scalar(sa.select(LiveSignal).where(LiveSignal.entity_id == trip.public_id)
                                   .order_by(LiveSignal.id.desc()).limit(1))
        assert signal.unit_ids == f",{shift['unit_id']},"


# --- taps ---------------------------------------------------------------------------------------

def test_a_tap_is_recorded_at_its_own_time_and_reaches_the_hospital(app, shift, deliver):
    client = shift["client"]
    tapped = utcnow().replace(microsecond=0) - timedelta(minutes=9)
    response = _tap(client, shift["trip"], "en_route", key="tap-en-route-0001", tapped_at=tapped)
    assert response.status_code == 200 and response.json["replayed"] is False
    deliver()
    with app.app_context():
        route = _route(shift["trip"])
        assert route.status == "en_route" and route.en_route_at == tapped
        trip = db.session.get(TransportRequest, route.trip_id)
        assert trip.status == "en_route" and trip.en_route_at == tapped


def test_a_tap_sent_again_is_the_same_tap(app, shift, deliver):
    client = shift["client"]
    tapped = utcnow().replace(microsecond=0) - timedelta(minutes=3)
    first = _tap(client, shift["trip"], "en_route", key="same-key-000001", tapped_at=tapped)
    again = _tap(client, shift["trip"], "en_route", key="same-key-000001",
                 tapped_at=tapped + timedelta(minutes=1))
    assert first.status_code == again.status_code == 200
    assert again.json["message"] == first.json["message"] and again.json["replayed"] is True
    with app.app_context():
        route = _route(shift["trip"])
        assert route.en_route_at == tapped
        assert _step_events(route.trip_id) == 1
        assert db.session.scalar(sa.select(sa.func.count(CrewTap.id))) == 1
    # The key of that tap cannot carry another one.
    other = _tap(client, shift["trip"], "at_pickup", key="same-key-000001")
    assert other.status_code == 409 and "another tap" in other.json["message"]


def test_taps_waiting_on_the_phone_arrive_in_order_with_their_times(app, shift, deliver):
    client = shift["client"]
    start = utcnow().replace(microsecond=0) - timedelta(minutes=20)
    times = {"en_route": start, "at_pickup": start + timedelta(minutes=7),
             "transporting": start + timedelta(minutes=15)}
    for number, (step, at) in enumerate(times.items()):
        assert _tap(client, shift["trip"], step, key=f"queued-{number:04d}", tapped_at=at).status_code == 200
    deliver()
    with app.app_context():
        route = _route(shift["trip"])
        trip = db.session.get(TransportRequest, route.trip_id)
        for step, at in times.items():
            assert getattr(route, f"{step}_at") == at and getattr(trip, f"{step}_at") == at, step
        assert trip.status == "transporting"


def test_a_taps_time_is_bounded(app, shift):
    client = shift["client"]
    now = utcnow().replace(microsecond=0)
    future = _tap(client, shift["trip"], "en_route", tapped_at=now + timedelta(minutes=10))
    assert future.status_code == 400 and "ahead of the server's clock" in future.json["message"]
    old = _tap(client, shift["trip"], "en_route", tapped_at=now - timedelta(hours=20))
    assert old.status_code == 400 and "older than" in old.json["message"]
    garbled = client.post("/crew/taps", json={"key": "garbled-0001", "trip": shift["trip"], "act": "advance",
                                              "step": "en_route", "tapped_at": "yesterday-ish"})
    assert garbled.status_code == 400
    # A little ahead (the phone's clock runs fast, within the allowance) is taken.
    assert _tap(client, shift["trip"], "en_route", tapped_at=now + timedelta(seconds=30)).status_code == 200
    # Before the previous step: refused as a conflict, nothing moves.
    early = _tap(client, shift["trip"], "at_pickup", tapped_at=now - timedelta(minutes=5))
    assert early.status_code == 409 and "before the trip's previous step" in early.json["message"]
    with app.app_context():
        assert _route(shift["trip"]).status == "en_route"


def test_bad_taps_get_a_clear_400(app, shift):
    client = shift["client"]
    cases = [{"key": "short", "trip": shift["trip"], "act": "advance", "step": "en_route"},
             {"key": "valid-key-0001", "trip": "not a trip", "act": "advance", "step": "en_route"},
             {"key": "valid-key-0002", "trip": shift["trip"], "act": "jump", "step": "en_route"},
             {"key": "valid-key-0003", "trip": shift["trip"], "act": "advance", "step": "teleport"}]
    for body in cases:
        response = client.post("/crew/taps", json=body)
        assert response.status_code == 400 and response.json["message"], body
    assert client.post("/crew/taps", data="{not json", content_type="application/json").status_code == 400


def test_a_trip_cancelled_while_the_phone_was_offline_is_a_plain_conflict(app, shift, deliver):
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == shift["trip"]))
        trips.cancel(trip, "no_longer_needed", "", actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
    client = shift["client"]
    tapped = utcnow().replace(microsecond=0) - timedelta(minutes=1)
    response = _tap(client, shift["trip"], "en_route", key="cancelled-0001", tapped_at=tapped)
    assert response.status_code == 409 and "cancelled" in response.json["message"]
    assert shift["reference"] in response.json["message"]
    again = _tap(client, shift["trip"], "en_route", key="cancelled-0001", tapped_at=tapped)
    assert again.status_code == 409 and again.json == response.json
    deliver()  # the relay ends the stop too: the same plain conflict
    response = _tap(client, shift["trip"], "en_route", key="cancelled-0002", tapped_at=tapped)
    assert response.status_code == 409 and "The hospital cancelled this trip." in response.json["message"]
    with app.app_context():
        assert _route(shift["trip"]).en_route_at is None


def test_a_trip_taken_from_the_unit_is_a_conflict(app, shift, deliver):
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == shift["trip"]))
        trips.reopen(trip, "reassigned", 30, actor=Actor(None, None, "Coordinator"))
        db.session.commit()
    response = _tap(shift["client"], shift["trip"], "en_route")
    assert response.status_code == 409 and "no longer assigned to this unit" in response.json["message"]
    deliver()  # the relay ends the stop: the same answer
    response = _tap(shift["client"], shift["trip"], "en_route")
    assert response.status_code == 409 and "no longer assigned to this unit" in response.json["message"]


def test_an_undo_within_the_window_at_the_taps_time(app, shift, deliver):
    client = shift["client"]
    stepped = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    assert _tap(client, shift["trip"], "en_route", tapped_at=stepped).status_code == 200
    # Tapped 90 s after the step (inside the 2-minute window), arriving minutes later: undone.
    undone = _tap(client, shift["trip"], "en_route", act="undo", tapped_at=stepped + timedelta(seconds=90))
    assert undone.status_code == 200
    with app.app_context():
        assert _route(shift["trip"]).status == "planned"
    assert _tap(client, shift["trip"], "en_route", tapped_at=stepped + timedelta(minutes=2)).status_code == 200
    late = _tap(client, shift["trip"], "en_route", act="undo", tapped_at=stepped + timedelta(minutes=4, seconds=1))
    assert late.status_code == 409 and "can no longer be undone" in late.json["message"]


def test_a_form_tap_without_the_script_uses_the_servers_clock(app, shift):
    client = shift["client"]
    before = utcnow()
    response = client.post("/crew/taps", data={"key": "form-tap-0001", "trip": shift["trip"], "act": "advance",
                                               "step": "en_route", "tapped_at": ""})
    assert response.status_code == 303
    with app.app_context():
        assert _route(shift["trip"]).en_route_at >= before.replace(microsecond=0)
    refused = client.post("/crew/taps", data={"key": "form-tap-0002", "trip": shift["trip"], "act": "advance",
                                              "step": "back_in_service"})
    assert refused.status_code == 409 and "The next step is at pickup" in refused.text


def test_the_crew_page_shows_the_trip_the_button_and_the_way_there(app, shift):
    page = shift["client"].get("/crew/").text
    assert "4 West, room 412" in page and "Current trip" in page
    assert 'data-step="en_route"' in page and ">En route</button>" in page
    assert 'href="geo:' in page and "openstreetmap.org/search?query=" in page


@pytest.mark.parametrize("silo", ["center", "hospital"])
def test_taps_go_through_with_the_center_or_the_hospital_silo_down(app, shift, deliver, backend, silo):
    if backend != "postgres":
        pytest.skip("stopping a silo's database is done on PostgreSQL")
    from tests.helpers import silo_stopped

    client = shift["client"]
    assert client.get("/crew/").status_code == 200  # the signed snapshot of the session
    tapped = utcnow().replace(microsecond=0) - timedelta(minutes=2)
    with silo_stopped(app, silo):
        response = _tap(client, shift["trip"], "en_route", key=f"outage-{silo}-0001", tapped_at=tapped)
        assert response.status_code == 200, response.json
        assert shift["reference"] in client.get("/crew/panel").get_data(as_text=True)
    from dashboard.events.relay import Relay

    Relay(app).drain(now=utcnow() + timedelta(minutes=10))
    with app.app_context():
        route = _route(shift["trip"])
        assert route.en_route_at == tapped
        assert db.session.get(TransportRequest, route.trip_id).en_route_at == tapped


# --- late and stuck: flagged to the crew, the dispatcher, the hospital and the center -----------

def _flag_shown(client, url, text):
    return text in client.get(url).get_data(as_text=True)


@pytest.mark.parametrize("steps, flag", [
    ({"en_route": 50, "at_pickup": 40}, "Stuck: at pickup since"),
    ({"en_route": 200, "at_pickup": 190, "transporting": 180}, "Late: not at destination"),
])
def test_a_crew_late_on_a_step_is_flagged_everywhere(app, shift, deliver, steps, flag):
    now = utcnow().replace(microsecond=0)
    for step, minutes_ago in steps.items():
        assert _tap(shift["client"], shift["trip"], step, tapped_at=now - timedelta(minutes=minutes_ago)
                    ).status_code == 200
    deliver()
    assert _flag_shown(shift["client"], "/crew/panel", flag)
    dispatcher = _sign_in(app, DISPATCH)
    assert _flag_shown(dispatcher, "/ems/trips/panel", flag)
    assert _flag_shown(dispatcher, "/ems/units/panel", flag)
    coordinator = _sign_in(app, "coordinator@medport.test")
    assert _flag_shown(coordinator, "/center/units/panel", flag)
    assert _flag_shown(coordinator, "/center/board/panel", flag)
    assert _flag_shown(_sign_in(app, "nurse@altoona.medport.test"), f"/hospital/requests/{shift['trip']}", flag)
    # The next step clears it.
    next_step = "transporting" if "transporting" not in steps else "at_destination"
    assert _tap(shift["client"], shift["trip"], next_step).status_code == 200
    deliver()
    assert not _flag_shown(shift["client"], "/crew/panel", flag)
    assert not _flag_shown(dispatcher, "/ems/trips/panel", flag)


def test_a_crew_not_en_route_within_its_lead_is_flagged(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT")
        trip = db.session.get(TransportRequest, trip_id)
        # The window starts in 10 minutes: inside the crew's 15-minute lead.
        trip.window_start, trip.window_end = utcnow() + timedelta(minutes=10), utcnow() + timedelta(minutes=70)
        db.session.commit()
        award(trip_id, place_bid(trip_id, "AEMS", 5))
        public_id = trip.public_id
    deliver()
    assert _flag_shown(_sign_in(app, DISPATCH), "/ems/trips/panel", "Late: not en route, pickup window starts")
    assert _flag_shown(_sign_in(app, "nurse@altoona.medport.test"), f"/hospital/requests/{public_id}",
                       "Late: not en route")


# --- the installable app and signing out ------------------------------------------------------

def test_the_manifest_and_service_worker_are_served_from_the_app(client):
    manifest = client.get("/crew/manifest.webmanifest")
    assert manifest.status_code == 200 and manifest.json["start_url"] == "/crew/"
    assert manifest.mimetype == "application/manifest+json"
    worker = client.get("/crew/sw.js")
    assert worker.status_code == 200 and "text/javascript" in worker.content_type
    assert worker.headers["Service-Worker-Allowed"] == "/crew/"
    assert "X-Crew-Shift-Ends" in worker.text


def test_signing_out_tells_the_browser_to_clear_what_it_stored(app, shift):
    response = shift["client"].post("/logout")
    assert response.status_code == 302
    assert response.headers["Clear-Site-Data"] == '"cache", "storage"'


def test_refusals_of_the_service_rules(app, shift):
    with app.app_context():
        with pytest.raises(CrewRefused):
            crew.parse_tap_time("2026-13-40T99:00:00Z")
        with pytest.raises(CrewRefused):
            crew.parse_tap_time("2026-01-01T10:00:00")  # no offset: whose clock?
        assert crew.parse_tap_time("") is not None
