"""What the screens say is true: one rule for "unfilled", history kept, pre-filled forms that post,
a demo region a real shift could reach."""
import re
import sys
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.hospital.forms import WINDOW_GRACE
from dashboard.localtime import from_local, to_local
from dashboard.models import base
from dashboard.models.base import utcnow
from dashboard.models.center import Agency
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import HospitalFacility, TransportRequest, TransportRequestEvent
from dashboard.models.vocabulary import dispatch_state, trip_dispatch_state
from dashboard.services import bidding, configuration, oversight, trips
from tests.conftest import DEMO_PASSWORD
from tests.helpers import PageForms, free_unit, outbox_types, place_bid, post_trip

ALT_NURSE = "nurse@altoona.medport.test"
COORDINATOR = "coordinator@medport.test"


def _close_bidding(trip_id, minutes_ago=1):
    """Move the trip's bidding deadline into the past (bids are refused after it, so they are
    placed first); returns the trip's reference and public id."""
    trip = db.session.get(TransportRequest, trip_id)
    trip.bid_deadline = utcnow() - timedelta(minutes=minutes_ago)
    db.session.commit()
    return trip.reference, trip.public_id


def _actions(trip_id):
    return list(db.session.scalars(sa.select(TransportRequestEvent.action).where(
        TransportRequestEvent.trip_id == trip_id).order_by(TransportRequestEvent.id)))


def _page(client, auth, email, path):
    auth.login(email)
    html = client.get(path).data.decode()
    auth.logout()
    return html


# --- 1. "Unfilled" means no one can take it ---------------------------------------------------


def test_dispatch_state_is_one_rule():
    now = utcnow()

    class Trip:
        status, bid_deadline = "open", now

    assert dispatch_state(Trip, True, now - timedelta(seconds=1)) == "bidding"
    assert dispatch_state(Trip, True, now) == "awaiting_award"
    assert dispatch_state(Trip, False, now) == "unfilled"
    Trip.status = "awarded"
    assert dispatch_state(Trip, False, now) is None


def test_a_deadline_passed_with_live_bids_awaits_an_award_everywhere(app, demo, client, auth, deliver):
    with app.app_context():
        trip_id = post_trip()
        bids = [place_bid(trip_id, code, eta) for code, eta in (("AEMS", 20), ("CLL", 12), ("BCA", 25))]
    deliver()
    with app.app_context():
        reference, public_id = _close_bidding(trip_id)
    Relay(app).drain()
    deliver()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.bid_count == 3 and trip.unfilled_at is None
        assert trip_dispatch_state(trip) == "awaiting_award"
        assert _actions(trip_id)[-1] == "awaiting_award" and "unfilled" not in _actions(trip_id)
        assert "trip.awaiting_award" in outbox_types("hospital", public_id)
        assert "trip.unfilled" not in outbox_types("hospital", public_id)
        result = oversight.board(oversight.BoardFilters())
        (row,) = [r for r in result["groups"]["open"] if r.trip.id == trip_id]
        assert [code for code, _ in row.marks] == ["awaiting_award"]
    Relay(app).drain()  # a later sweep says nothing more
    with app.app_context():
        assert _actions(trip_id).count("awaiting_award") == 1

    page = _page(client, auth, ALT_NURSE, f"/hospital/requests/{public_id}")
    assert "Awaiting award" in page and ">Unfilled<" not in page and "passed unfilled" not in page
    assert "Bidding closed with 3 live bids: award one" in page
    assert f"/hospital/requests/new?repost={public_id}" not in page  # pick a bid instead
    board = _page(client, auth, ALT_NURSE, "/hospital/requests/panel?tab=open")
    assert "Awaiting award" in board and ">Unfilled<" not in board
    center = _page(client, auth, COORDINATOR, f"/center/requests/{public_id}")
    assert "awaiting award" in center and "passed unfilled" not in center
    assert "Bidding closed: award one of 3 bids" in _page(client, auth, COORDINATOR, "/center/")

    # Every bid withdrawn: now no one can take it, and the timer says so once.
    with app.app_context():
        for bid_id in bids:
            bid = db.session.get(TransportBid, bid_id)
            bidding.withdraw(bid, db.session.get(TransportRequest, trip_id), bid.agency_id, "Agency", actor=Actor(None))
            db.session.commit()
    deliver()
    Relay(app).drain()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.bid_count == 0 and trip.unfilled_at is not None
        assert trip_dispatch_state(trip) == "unfilled"
        assert _actions(trip_id)[-1] == "unfilled"
    page = _page(client, auth, ALT_NURSE, f"/hospital/requests/{public_id}")
    assert "Unfilled" in page and "Awaiting award" not in page.split("timeline")[0]


# --- 2. History is not rewritten ---------------------------------------------------------------


def _csv_table(client, url):
    import csv
    import io

    response = client.get(url)
    assert response.status_code == 200, response.data[:300]
    return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))


def test_went_unfilled_is_kept_and_a_center_assignment_is_no_bid_win(app, demo, client, auth, deliver):
    from dashboard.models.ems import Unit
    from dashboard.services import intervention
    from tests.helpers import award

    with app.app_context():
        extended, assigned, cancelled, won = (post_trip() for _ in range(4))
        place_bid(won, "AEMS", 15)
        for trip_id in (extended, assigned, cancelled):
            _close_bidding(trip_id)
    deliver()
    with app.app_context():
        award(won, db.session.scalar(sa.select(TransportBid.id).where(TransportBid.trip_id == won)))
    Relay(app).drain()  # three go unfilled: no bid on them
    with app.app_context():
        went = {t: db.session.get(TransportRequest, t).unfilled_at for t in (extended, assigned, cancelled)}
        assert all(went.values())
        trip = db.session.get(TransportRequest, extended)
        intervention.extend_deadline(trip, 30, "", trip.version, actor=Actor(None, None, "Coordinator"))
        db.session.commit()
        trip = db.session.get(TransportRequest, assigned)
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        unit = next(u for u in db.session.scalars(sa.select(Unit).where(Unit.agency_id == aems.id,
                                                                          Unit.active.is_(True)))
                    if db.session.get(TransportRequest, won).awarded_unit_id != u.id)
        intervention.assign_unit(trip, aems.id, unit.id, 20, "Agreed by phone", trip.version,
                                 actor=Actor(None, None, "Coordinator"))
        db.session.commit()
        trips.cancel(db.session.get(TransportRequest, cancelled), "no_availability", "", actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        for trip_id, first in went.items():  # an extension, an assignment, a cancellation: kept
            assert db.session.get(TransportRequest, trip_id).unfilled_at == first
        assigned_trip = db.session.get(TransportRequest, assigned)
        assert (assigned_trip.award_source, assigned_trip.awarded_bid_id) == ("center", None)
        assert trip_dispatch_state(db.session.get(TransportRequest, extended)) == "bidding"
        # Far from the demo's trips (near today), so the day holds these four alone.
        for trip_id in (extended, assigned, cancelled, won):
            db.session.get(TransportRequest, trip_id).created_at = datetime(2024, 3, 12, 16, 0)
        db.session.commit()

    auth.login(COORDINATOR)
    period = "/center/analytics?start=2024-03-12&end=2024-03-12&format=csv&table="
    fill = {row[0]: row[1:] for row in _csv_table(client, period + "fill")[1:]}
    assert fill["Went unfilled (deadline passed, no live bid)"] == ["3", "75.0"]
    assert fill["Ended unfilled (never taken by an agency)"] == ["2", "50.0"]  # extended, cancelled
    assert fill["Awarded"] == ["2", "50.0"]
    agencies = {row[0]: row[1:] for row in _csv_table(client, period + "agencies")[1:]}
    assert agencies["Altoona EMS"][:2] == ["1", "1"]  # one bid, one win: the assignment is none
    header, *body = _csv_table(client, period + "trips")
    unfilled = [dict(zip(header, row, strict=True))["unfilled_at"] for row in body]
    assert sum(bool(value) for value in unfilled) == 3


# --- 3. The pre-filled form posts --------------------------------------------------------------


@pytest.fixture
def clock(app, monkeypatch):
    """Set the app's "now" (naive UTC) for every module that reads it."""
    real = base.utcnow
    modules = [module for name, module in list(sys.modules.items())
               if name.startswith("dashboard") and getattr(module, "utcnow", None) is real]

    def set_now(moment):
        for module in modules:
            monkeypatch.setattr(module, "utcnow", lambda: moment)

    return set_now


def _login(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": DEMO_PASSWORD}).status_code == 302
    return client


def _shown(client, page, action):
    """The fields of the form on ``page`` posting to ``action``, as a browser would send them."""
    parser = PageForms(page)
    parser.feed(client.get(page).get_data(as_text=True))
    forms = [fields for form_action, fields in parser.forms if form_action.split("?")[0] == action]
    assert forms, f"no form posting to {action} on {page}"
    data = {}
    for name, value in forms[0]:
        data.setdefault(name, []).append(value)
    return data


def _first_option(client, page, name):
    """The first choice a select of ``page`` offers."""
    select = re.search(rf'<select[^>]*name="{name}".*?</select>', client.get(page).get_data(as_text=True), re.S)
    return next(value for value in re.findall(r'<option[^>]*value="([^"]*)"', select.group(0)) if value)


def _errors(response):
    return re.findall(r'class="error">([^<]+)', response.get_data(as_text=True))


def _next_quarter_hour_utc():
    local = to_local(utcnow()).replace(tzinfo=None, second=0, microsecond=0)
    return from_local(local + timedelta(minutes=15 - local.minute % 15))


@pytest.mark.parametrize("deadline", [30, 120, 600, 1440])
@pytest.mark.parametrize("opened", [timedelta(0), timedelta(seconds=1), timedelta(minutes=14, seconds=59)])
def test_the_new_request_form_posts_as_shown_whenever_it_is_opened(app, demo, clock, deadline, opened):
    """Opened on a quarter hour or just after, and posted at the last moment its earliest pickup
    is accepted (``WINDOW_GRACE`` after it), the pre-filled form posts: only what it cannot know
    (where to, who) is chosen."""
    with app.app_context():
        configuration.set_value("bid_deadline_default_minutes", deadline, None)
        db.session.commit()
        destination = db.session.scalar(sa.select(HospitalFacility.public_id).where(
            HospitalFacility.name == "Johnstown Memorial Hospital"))
    nurse = _login(app, ALT_NURSE)
    with app.app_context():
        clock(_next_quarter_hour_utc() + opened)
    data = _shown(nurse, "/hospital/requests/new", "/hospital/requests/new")
    assert data["bid_deadline_minutes"] == [str(deadline)]
    with app.app_context():
        start = from_local(datetime.strptime(data["window_start"][0], "%Y-%m-%dT%H:%M"))
    clock(start + WINDOW_GRACE)
    data.update(destination_facility=[destination], weight_kg=["80"], age_group=["adult"],
                pickup_location=["ED bay 3"], level_of_care=["BLS"])
    response = nurse.post("/hospital/requests/new", data=data)
    assert response.status_code == 302, _errors(response)


def test_a_reposted_form_with_a_near_window_posts_as_shown(app, demo, clock):
    """A re-post copies the window; the configured bidding time is shortened to fit it."""
    with app.app_context():
        configuration.set_value("bid_deadline_default_minutes", 120, None)
        db.session.commit()
        trip_id = post_trip(commit=False)
        trip = db.session.get(TransportRequest, trip_id)
        trip.window_start, trip.window_end = utcnow() + timedelta(minutes=20), utcnow() + timedelta(minutes=80)
        trips.cancel(trip, "other", "", actor=Actor(None, None, "Nurse"))
        db.session.commit()
        public_id, start = trip.public_id, trip.window_start
    nurse = _login(app, ALT_NURSE)
    data = _shown(nurse, f"/hospital/requests/new?repost={public_id}", "/hospital/requests/new")
    assert 5 <= int(data["bid_deadline_minutes"][0]) < 120
    clock(start.replace(second=0, microsecond=0) + WINDOW_GRACE)
    response = nurse.post("/hospital/requests/new", data=data)
    assert response.status_code == 302, _errors(response)


def test_every_other_pre_filled_form_posts_as_shown(app, demo, deliver):
    """Edit, cancel (its reason chosen), a bid (its unit and ETA given), availability, the center's
    extension and assignment (its reason written) post as shown."""
    with app.app_context():
        editable, cancellable, bid_on, extended, assigned = (post_trip() for _ in range(5))
        public = {t: db.session.get(TransportRequest, t).public_id for t in
                  (editable, cancellable, bid_on, extended, assigned)}
        _close_bidding(extended)
    deliver()
    nurse = _login(app, ALT_NURSE)
    page = f"/hospital/requests/{public[editable]}/edit"
    response = nurse.post(page, data=_shown(nurse, page, page))
    assert response.status_code == 302, _errors(response)
    page = f"/hospital/requests/{public[cancellable]}/cancel"
    data = _shown(nurse, page, page)
    data.setdefault("reason", ["not_needed"])
    response = nurse.post(page, data=data)
    assert response.status_code == 302, _errors(response)

    dispatch = _login(app, "dispatch@altoonaems.medport.test")
    action = f"/ems/requests/{public[bid_on]}/bid"
    data = _shown(dispatch, f"/ems/requests/{public[bid_on]}", action)
    # What only the dispatcher knows: which unit (the first offered), how soon.
    data.update(unit=[_first_option(dispatch, f"/ems/requests/{public[bid_on]}", "unit")], eta_minutes=["20"])
    response = dispatch.post(action, data=data)
    assert response.status_code in (200, 302) and not _errors(response), _errors(response)
    # A day with no window yet (the demo's units are on shift today: the shown shift would overlap).
    with app.app_context():
        day = (to_local(utcnow()) + timedelta(days=10)).date().isoformat()
    page = f"/ems/availability?date={day}"
    data = _shown(dispatch, page, "/ems/availability")
    data["unit"] = [_first_option(dispatch, page, "unit")]
    response = dispatch.post("/ems/availability", data=data)
    assert response.status_code in (200, 302) and not _errors(response), _errors(response)

    center = _login(app, COORDINATOR)
    page = f"/center/requests/{public[extended]}"
    response = center.post(page + "/extend", data=_shown(center, page, page + "/extend"))
    assert response.status_code == 302, _errors(response)
    page = f"/center/requests/{public[assigned]}"
    data = _shown(center, page, page + "/assign")
    with app.app_context():  # the coordinator's choice: an agency's unit free for the window
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        unit = free_unit(aems.id, db.session.get(TransportRequest, assigned))
    data.update({"assign-agency": [str(aems.id)], "assign-unit": [str(unit.id)], "assign-eta_minutes": ["20"],
                 "assign-reason": ["Agreed by phone"]})
    response = center.post(page + "/assign", data=data)
    assert response.status_code == 302, _errors(response)


# --- 4. The demo region is consistent ---------------------------------------------------------


def test_the_demo_region_is_one_a_real_shift_can_reach(app, demo):
    from dashboard.models.center import AuditLog
    from dashboard.models.ems import Unit
    from dashboard.models.vocabulary import ACTIVE_STATUSES

    with app.app_context():
        now = utcnow()
        all_trips = list(db.session.scalars(sa.select(TransportRequest)))
        bids = list(db.session.scalars(sa.select(TransportBid)))
        history = list(db.session.scalars(sa.select(TransportRequestEvent)))
        audit = {(row.action, row.entity_id, row.created_at)
                 for row in db.session.scalars(sa.select(AuditLog).where(AuditLog.entity_type == "trip"))}
        units = list(db.session.scalars(sa.select(Unit)))
    assert {t.status for t in all_trips} >= {"open", "awarded", "en_route", "at_pickup", "transporting",
                                             "completed", "cancelled"}
    by_id = {t.id: t for t in all_trips}
    live = {t.id: sum(1 for b in bids if b.trip_id == t.id and b.status == "live") for t in all_trips}

    for trip in all_trips:
        stamps = [trip.created_at, trip.awarded_at, trip.en_route_at, trip.at_pickup_at, trip.transporting_at,
                  trip.completed_at, trip.cancelled_at, trip.unfilled_at, trip.first_bid_at]
        assert all(at <= now for at in stamps if at is not None), trip.reference  # nothing yet to come
        if trip.status == "open":
            assert trip.bid_count == live[trip.id], trip.reference
            state = trip_dispatch_state(trip, now)
            assert (state == "unfilled") == (trip.unfilled_at is not None), trip.reference
        if trip.status == "en_route":  # on its way to a window still open or ahead
            assert trip.window_end > now and trip.en_route_at < trip.window_end, trip.reference
        if trip.status in ("at_pickup", "transporting"):
            assert trip.window_start <= trip.at_pickup_at <= trip.window_end, trip.reference
        if trip.awarded_agency_id is not None:
            (accepted,) = [b for b in bids if b.id == trip.awarded_bid_id]
            assert (accepted.status, accepted.unit_id) == ("accepted", trip.awarded_unit_id), trip.reference

    for unit in units:  # in one place at a time, booked once per window
        mine = [t for t in all_trips if t.awarded_unit_id == unit.id]
        moving = [t for t in mine if t.status in ("en_route", "at_pickup", "transporting")]
        assert len(moving) <= 1, unit.number
        booked = [t for t in mine if t.status in ACTIVE_STATUSES]
        for a in booked:
            for b in booked:
                assert a is b or not (a.window_start < b.window_end and b.window_start < a.window_end), unit.number
        out = [(t.en_route_at, t.completed_at or now) for t in mine if t.en_route_at]
        for a in out:
            for b in out:
                assert a is b or not (a[0] < b[1] and b[0] < a[1]), unit.number
        if booked:
            assert by_id[unit.current_trip_id] in booked and unit.status == "assigned", unit.number

    # The audit log has the demo's history, each entry at its time.
    actions = {"posted": "trip.posted", "awarded": "trip.awarded", "cancelled": "trip.cancelled",
               "unfilled": "trip.unfilled", "awaiting_award": "trip.awaiting_award",
               "care_override": "trip.care_override"}
    for event in history:
        assert event.at <= now
        action = actions.get(event.action, "trip.status_changed")
        assert (action, by_id[event.trip_id].public_id, event.at) in audit, (event.action, event.trip_id)
