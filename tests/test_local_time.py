"""Local times around the clock changes of 2026 in America/New_York (the region's default zone).

On Sunday 8 March 2026 the clocks go forward from 02:00 to 03:00: 02:30 does not exist and is
refused with a message naming the change.  On Sunday 1 November 2026 they go back from 02:00
to 01:00: 01:30 happens twice (05:30Z in EDT, then 06:30Z in EST); the forms ask which, store
the instant chosen, and measure a window across the change in real time.  The forms that
check a time against now run with the clock set to the day before each change.
"""
import re
import sys
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa

from dashboard.extensions import db
from dashboard.localtime import clock_change, fold_message, from_local, gap_message, to_local
from dashboard.models import base
from dashboard.models.ems import UnitAvailability
from dashboard.models.hospital import TransportRequest
from tests.conftest import DEMO_PASSWORD
from tests.helpers import PageForms

SPRING = datetime(2026, 3, 8, 2, 30)
FALL = datetime(2026, 11, 1, 1, 30)
NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"


@pytest.fixture
def clock(monkeypatch):
    """Set the app's "now" (naive UTC) for every module that reads it."""

    real = base.utcnow

    def set_now(moment):
        for name, module in list(sys.modules.items()):
            if name.startswith("dashboard") and getattr(module, "utcnow", None) is real:
                monkeypatch.setattr(module, "utcnow", lambda: moment)

    return set_now


def _client(app, email):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": DEMO_PASSWORD}).status_code == 302
    return client


def _form(client, page, action):
    """The fields of the form on ``page`` posting to ``action``, as a browser would send them."""
    parser = PageForms(page)
    parser.feed(client.get(page).get_data(as_text=True))
    (fields,) = [fields for form_action, fields in parser.forms if form_action.split("?")[0] == action]
    data = {}
    for name, value in fields:
        data.setdefault(name, value)
    return data


def _new_request(client, **changes):
    data = _form(client, "/hospital/requests/new", "/hospital/requests/new")
    page = client.get("/hospital/requests/new").get_data(as_text=True)
    data.update(destination_facility=_other_facility(page, data["origin_facility"]), age_group="adult",
                weight_kg="80", pickup_location="4 West", bid_deadline_minutes="5", invite_mode="all", level_of_care="BLS")
    data.update(changes)
    return client.post("/hospital/requests/new", data={k: v for k, v in data.items() if v is not None})


def _other_facility(page, origin):
    ids = re.findall(r'<option value="([0-9a-f-]{36})"', page)
    return next(i for i in ids if i != origin)


def _stored_window(response):
    assert response.status_code == 302, response.get_data(as_text=True)[:3000]
    public_id = response.headers["Location"].rsplit("/", 1)[1]
    trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == public_id))
    return trip.window_start, trip.window_end


def _trip_count():
    return db.session.scalar(sa.select(sa.func.count()).select_from(TransportRequest))


# --- the conversions ------------------------------------------------------------------------

def test_conversions_around_the_changes(app):
    with app.app_context():
        assert clock_change(SPRING) == "gap" and clock_change(FALL) == "fold"
        assert clock_change(datetime(2026, 3, 8, 3, 30)) is None
        assert clock_change(datetime(2026, 11, 1, 2, 30)) is None
        assert "clocks go forward from 02:00 to 03:00" in gap_message(SPRING)
        assert "Sunday 8 March 2026" in gap_message(SPRING)
        message = fold_message(FALL)
        assert "clocks go back from 02:00 to 01:00" in message and "happens twice" in message
        assert "EDT, UTC-04:00" in message and "EST, UTC-05:00" in message
        assert from_local(FALL) == datetime(2026, 11, 1, 5, 30)
        assert from_local(FALL.replace(fold=1)) == datetime(2026, 11, 1, 6, 30)
        assert from_local(FALL.replace(fold=1)) - from_local(FALL) == timedelta(minutes=60)
        back = to_local(datetime(2026, 11, 1, 6, 30))
        assert (back.hour, back.minute, back.fold) == (1, 30, 1)


# --- a new request ------------------------------------------------------------------------------

def test_a_pickup_time_the_clocks_skip_is_refused(app, demo, clock):
    clock(datetime(2026, 3, 7, 15, 0))
    client = _client(app, NURSE)
    with app.app_context():
        before = _trip_count()
    response = _new_request(client, window_start="2026-03-08T02:30", window_end="2026-03-08T05:00")
    assert response.status_code == 400
    body = response.get_data(as_text=True)
    assert "the clocks go forward from 02:00 to 03:00, so 02:30 does not exist" in body
    with app.app_context():
        assert _trip_count() == before
    accepted = _new_request(client, window_start="2026-03-08T03:30", window_end="2026-03-08T05:00")
    with app.app_context():
        assert _stored_window(accepted) == (datetime(2026, 3, 8, 7, 30), datetime(2026, 3, 8, 9, 0))


def test_a_pickup_time_that_happens_twice_asks_which_and_stores_the_choice(app, demo, clock):
    clock(datetime(2026, 10, 31, 15, 0))
    client = _client(app, NURSE)
    with app.app_context():
        before = _trip_count()
    asked = _new_request(client, window_start="2026-11-01T01:30", window_end="2026-11-01T04:00")
    assert asked.status_code == 400
    body = asked.get_data(as_text=True)
    assert "the clocks go back from 02:00 to 01:00, so 01:30 happens twice" in body
    assert 'name="window_start_fold" id="window_start-fold-0" value="0">' in body
    assert 'name="window_start_fold" id="window_start-fold-1" value="1">' in body
    assert 'name="window_end_fold"' not in body  # 04:00 happens once
    with app.app_context():
        assert _trip_count() == before
    first = _new_request(client, window_start="2026-11-01T01:30", window_start_fold="0",
                         window_end="2026-11-01T04:00")
    second = _new_request(client, window_start="2026-11-01T01:30", window_start_fold="1",
                          window_end="2026-11-01T04:00")
    with app.app_context():
        assert _stored_window(first)[0] == datetime(2026, 11, 1, 5, 30)
        assert _stored_window(second)[0] == datetime(2026, 11, 1, 6, 30)


def test_a_window_across_the_change_is_measured_in_real_time(app, demo, clock):
    clock(datetime(2026, 10, 31, 15, 0))
    client = _client(app, NURSE)
    across = _new_request(client, window_start="2026-11-01T01:30", window_start_fold="0",
                          window_end="2026-11-01T01:30", window_end_fold="1")
    with app.app_context():
        start, end = _stored_window(across)
    assert (start, end) == (datetime(2026, 11, 1, 5, 30), datetime(2026, 11, 1, 6, 30))
    assert end - start == timedelta(minutes=60)
    backwards = _new_request(client, window_start="2026-11-01T01:30", window_start_fold="1",
                             window_end="2026-11-01T01:30", window_end_fold="0")
    assert backwards.status_code == 400
    assert "The latest pickup must be after the earliest pickup." in backwards.get_data(as_text=True)


def test_the_edit_form_shows_the_stored_occurrence(app, demo, clock):
    clock(datetime(2026, 10, 31, 15, 0))
    client = _client(app, NURSE)
    posted = _new_request(client, window_start="2026-11-01T01:30", window_start_fold="1",
                          window_end="2026-11-01T03:00")
    edit = posted.headers["Location"] + "/edit"
    page = client.get(edit).get_data(as_text=True)
    assert 'name="window_start_fold" id="window_start-fold-1" value="1" checked>' in page
    data = _form(client, edit, edit)
    assert data["window_start"] == "2026-11-01T01:30" and data["window_start_fold"] == "1"
    data["notes"] = "Second 01:30 kept."
    saved = client.post(edit, data=data)
    assert saved.status_code == 302, saved.get_data(as_text=True)[:3000]
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.notes == "Second 01:30 kept."))
        assert trip.window_start == datetime(2026, 11, 1, 6, 30)


# --- availability windows and the audit filter ----------------------------------------------

def _availability(client, **changes):
    data = _form(client, "/ems/availability", "/ems/availability")
    page = client.get("/ems/availability").get_data(as_text=True)
    units = re.search(r'<select[^>]*name="unit".*?</select>', page, re.S).group(0)
    data["unit"] = re.findall(r'<option value="([0-9a-f-]{36})"', units)[0]
    data.update(changes)
    return client.post("/ems/availability", data=data)


def test_availability_windows_around_the_changes(app, demo):
    client = _client(app, DISPATCH)
    skipped = _availability(client, starts_at="2026-03-08T02:30", ends_at="2026-03-08T06:00")
    assert skipped.status_code == 400
    assert "clocks go forward from 02:00 to 03:00" in skipped.get_data(as_text=True)
    asked = _availability(client, starts_at="2026-11-01T01:30", ends_at="2026-11-01T01:30")
    assert asked.status_code == 400 and "happens twice" in asked.get_data(as_text=True)
    with app.app_context():
        before = db.session.scalar(sa.select(sa.func.count()).select_from(UnitAvailability))
    hour = _availability(client, kind="on_break", starts_at="2026-11-01T01:30", starts_at_fold="0",
                         ends_at="2026-11-01T01:30", ends_at_fold="1")
    assert hour.status_code == 302, hour.get_data(as_text=True)[:3000]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UnitAvailability)) == before + 1
        window = db.session.scalar(sa.select(UnitAvailability).order_by(UnitAvailability.id.desc()).limit(1))
        assert (window.starts_at, window.ends_at) == (datetime(2026, 11, 1, 5, 30), datetime(2026, 11, 1, 6, 30))


def test_the_audit_filter_around_the_changes(app, demo):
    client = _client(app, "coordinator@medport.test")
    skipped = client.get("/center/audit?since=2026-03-08T02:30")
    assert skipped.status_code == 400 and "clocks go forward" in skipped.get_data(as_text=True)
    assert client.get("/center/audit?since=2026-11-01T01:30").status_code == 200  # a filter takes the first
    forwards = client.get("/center/audit?since=2026-11-01T01:30&until=2026-11-01T01:59")
    assert forwards.status_code == 200
