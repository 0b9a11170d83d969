"""The crew on a phone: Chromium at 360×640 with touch, driving a trip through a dead zone.

The scene is set through the app (a nurse posts, the dispatcher bids, the nurse awards); the
crew signs in on a phone-sized, touch context and picks the awarded unit.  Offline is the
browser context's own (``context.set_offline``): the service worker and the page see no
network.  Every wait is bounded (Playwright's timeouts, ``wait_for``).
"""
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from playwright.sync_api import expect

from dashboard.config import normalise_url

from .conftest import PASSWORD, run_axe, screenshot, wait_for
from .helpers import LIVE, NURSE, post_request, wait_live

DISPATCH = "dispatch@altoonaems.medport.test"
CREW = "crew@altoonaems.medport.test"
PHONE = {"viewport": {"width": 360, "height": 640}, "has_touch": True, "is_mobile": True,
         "device_scale_factor": 2}
#: How far the server's record of a tap may be from the phone's time of it (the phone's ISO
#: time has milliseconds; the server keeps them).
TOLERANCE = timedelta(seconds=1)


def _execute(server, silo, sql, **params):
    """Change the served silo directly (a scene the app has no button for)."""
    engine = sa.create_engine(normalise_url(server.database_urls[silo]))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(sql), params)
    finally:
        engine.dispose()


def _at(value):
    """A database time (naive UTC, or text on SQLite) as aware UTC."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC)


def _new_unit(server):
    """A unit of Altoona EMS of its own for one test (the demo's units stay free for the other
    browser tests, which bid with them for the same pickup windows)."""
    (agency_id,), = server.query("center", "SELECT id FROM agencies WHERE short_code = 'AEMS'")
    public_id = str(uuid.uuid4())
    _execute(server, "ems", "INSERT INTO units (public_id, agency_id, number, level, base_station, status, active, "
                            "updated_at) VALUES (:p, :a, :n, 'BLS', '', 'available', :t, :u)",
             p=public_id, a=agency_id, n=f"Phone {public_id[:6]}", t=True, u=datetime.now(UTC).replace(tzinfo=None))
    return public_id


@pytest.fixture
def awarded(open_session, live_server):
    """A request of Altoona awarded to a new Altoona EMS unit: (reference, trip public id, unit
    public id, nurse session, dispatcher session)."""
    nurse, ems = open_session(NURSE), open_session(DISPATCH)
    for session in (nurse, ems):
        session.page.on("dialog", lambda dialog: dialog.accept())
    unit = _new_unit(live_server)
    reference, public_id = post_request(nurse, note="Crew phone")
    ems.goto("/ems/")
    ems.page.wait_for_selector(f"text={reference}", timeout=LIVE)
    ems.page.click(f"text={reference}")
    ems.page.wait_for_url(re.compile(r"/ems/requests/"))
    ems.page.select_option("#unit", value=unit)
    ems.page.fill("#eta_minutes", "12")
    ems.page.click("button:has-text('Place bid')")
    ems.page.wait_for_selector("text=Change bid")
    nurse.goto(f"/hospital/requests/{public_id}")
    nurse.page.click("button:has-text('Award')")
    nurse.page.wait_for_selector("text=Awarded", timeout=LIVE)
    wait_for("the award reaches the EMS silo", lambda: live_server.query(
        "ems", "SELECT 1 FROM ems_routes WHERE trip_public_id = :p", p=public_id))
    # A crew shift left over from another test of this server: the crew starts afresh.
    _execute(live_server, "ems", "UPDATE crew_shifts SET ended_at = started_at + interval '1 second' "
             "WHERE ended_at IS NULL" if live_server.backend == "postgres" else
             "UPDATE crew_shifts SET ended_at = datetime(started_at, '+1 second') WHERE ended_at IS NULL")
    return reference, public_id, unit, nurse, ems


@pytest.fixture
def phone(browser, live_server):
    """The crew's phone: a fresh 360×640 touch context, signed in as the crew member."""
    context = browser.new_context(**PHONE)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(live_server.url + "/login")
    page.fill("#email", CREW)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/crew/$"))
    yield context, page, errors
    context.close()


def _start_shift(page, unit):
    page.check(f"input[name=unit][value='{unit}']")
    page.tap("button:has-text('Start shift')")
    page.wait_for_selector(".crew-trip.crew-current")
    wait_live(page)
    wait_for("the service worker controls the page", lambda: page.evaluate(
        "navigator.serviceWorker.controller !== null"), timeout=LIVE / 1000)


def _big_button(page):
    return page.locator(".crew-current form.crew-step:not([hidden]) button.crew-big")


def _laid_out(locator):
    """The element's box, once it has one: a live refresh may swap the panel meanwhile (the
    element found a moment before is then detached and has no box)."""
    boxes = []
    wait_for("the element is laid out", lambda: boxes.append(locator.bounding_box()) or boxes[-1] is not None,
             timeout=LIVE / 1000)
    return boxes[-1]


def _route(server, public_id):
    return server.query("ems", "SELECT status, en_route_at, at_pickup_at, transporting_at, at_destination_at "
                               "FROM ems_routes WHERE trip_public_id = :p", p=public_id)[0]


def test_the_whole_crew_flow_on_a_phone(awarded, phone, live_server):
    reference, public_id, unit, nurse, ems = awarded
    _context, page, errors = phone
    assert "Which unit do you staff this shift?" in page.inner_text("main")
    _start_shift(page, unit)
    current = page.locator(".crew-current")
    assert reference in current.inner_text()
    assert "4 West, room 412" in current.inner_text() and "Crew phone" in current.inner_text()
    # One thumb: the next step's button is wide and at least 48 px high; the way there is a tap away.
    box = _laid_out(_big_button(page))
    assert box["height"] >= 48 and box["width"] >= 300, box
    assert _big_button(page).inner_text() == "En route"
    assert current.locator("a[href^='geo:']").count() == 1
    assert "openstreetmap.org/search" in current.locator("a.crew-address").get_attribute("href")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360
    assert run_axe(page) == []
    screenshot(page, f"crew-phone-{live_server.backend}")
    # The dispatcher sees who staffs the unit.
    ems.goto("/ems/units")
    assert "Riley Medic" in ems.page.inner_text("#main")

    # A mistaken tap, undone within the window.
    _big_button(page).tap()
    wait_for("en route recorded", lambda: _route(live_server, public_id)[0] == "en_route")
    undo = page.locator(".crew-current form.crew-undo:not([hidden]) button")
    expect(undo).to_have_text("Undo En route")
    undo.tap()
    wait_for("the undo recorded", lambda: _route(live_server, public_id)[0] == "planned")
    expect(_big_button(page)).to_have_text("En route", timeout=LIVE)

    # Every step, one tap each; the hospital's record follows.
    for step, text in [("en_route", "En route"), ("at_pickup", "At pickup"), ("transporting", "Transporting"),
                       ("at_destination", "At destination"), ("completed", "Back in service")]:
        expect(_big_button(page)).to_have_text(text, timeout=LIVE)
        _big_button(page).tap()
        wait_for(f"{step} recorded", lambda step=step: _route(live_server, public_id)[0] == step)
    wait_for("the hospital sees the trip completed", lambda: live_server.query(
        "hospital", "SELECT status FROM transport_requests WHERE public_id = :p", p=public_id)[0][0] == "completed")
    expect(page.locator(f".crew-trip[data-trip='{public_id}']")).to_have_count(0, timeout=LIVE)
    assert errors == []


def test_three_taps_without_coverage_arrive_in_order_with_their_times_once(awarded, phone, live_server):
    reference, public_id, unit, _nurse, _ems = awarded
    context, page, errors = phone
    _start_shift(page, unit)
    context.set_offline(True)
    for text in ("En route", "At pickup", "Transporting"):
        expect(_big_button(page)).to_have_text(text)
        _big_button(page).tap()
        page.wait_for_timeout(300)  # distinct tap times, a little apart as in the cab
    expect(_big_button(page)).to_have_text("At destination")
    expect(page.locator("#crew-network")).to_contain_text("3 taps kept on this phone")
    taps = page.evaluate("JSON.parse(localStorage.getItem('medport.crew.queue'))")
    assert [t["step"] for t in taps] == ["en_route", "at_pickup", "transporting"]
    assert _route(live_server, public_id)[0] == "planned"  # nothing reached the server
    # Reloaded without coverage, the page shows the unit's trips as last seen, and the taps.
    page.reload()
    assert reference in page.locator(".crew-current").inner_text()
    expect(_big_button(page)).to_have_text("At destination")

    context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    wait_for("the three taps recorded", lambda: _route(live_server, public_id)[0] == "transporting", timeout=LIVE / 1000)
    expect(page.locator("#crew-network")).to_have_text("", timeout=LIVE)
    route = _route(live_server, public_id)
    for tap, recorded in zip(taps, route[1:4], strict=True):
        phone_time = datetime.fromisoformat(tap["tapped_at"].replace("Z", "+00:00"))
        assert abs(_at(recorded) - phone_time) <= TOLERANCE, (tap, recorded)
    # Once: one recorded tap and one step event each.
    keys = live_server.query("ems", "SELECT key FROM crew_taps WHERE trip_public_id = :p ORDER BY id", p=public_id)
    assert [k[0] for k in keys] == [t["key"] for t in taps]
    trip_id = live_server.query("hospital", "SELECT id FROM transport_requests WHERE public_id = :p", p=public_id)[0][0]
    events = live_server.query("ems", "SELECT COUNT(*) FROM outbox_events WHERE type = 'trip.status_changed' "
                                      "AND entity_id = :t", t=str(trip_id))
    assert events[0][0] == 3
    # The hospital sees the real times once the phone is back in coverage.
    def hospital_times():
        return live_server.query("hospital", "SELECT en_route_at, at_pickup_at, transporting_at "
                                             "FROM transport_requests WHERE public_id = :p", p=public_id)[0]
    wait_for("the steps reach the hospital", lambda: hospital_times()[2] is not None)
    for tap, recorded in zip(taps, hospital_times(), strict=True):
        assert abs(_at(recorded) - datetime.fromisoformat(tap["tapped_at"].replace("Z", "+00:00"))) <= TOLERANCE
    assert page.evaluate("localStorage.getItem('medport.crew.queue')") == "[]"
    assert errors == []


def test_a_trip_cancelled_while_the_phone_is_offline_shows_a_conflict(awarded, phone, live_server):
    reference, public_id, unit, nurse, _ems = awarded
    context, page, _errors = phone
    _start_shift(page, unit)
    context.set_offline(True)
    _big_button(page).tap()
    expect(page.locator("#crew-network")).to_contain_text("1 tap kept on this phone")
    nurse.goto(f"/hospital/requests/{public_id}/cancel")
    nurse.page.check("input[name=reason][value=not_needed]")
    nurse.page.click("button:has-text('Cancel request')")
    nurse.page.wait_for_selector("text=Cancelled", timeout=LIVE)
    context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    conflict = page.locator("#crew-notices .crew-conflict")
    expect(conflict).to_contain_text(f"{reference}: The hospital cancelled this trip.", timeout=LIVE)
    assert live_server.query("ems", "SELECT COUNT(*) FROM crew_taps WHERE trip_public_id = :p", p=public_id)[0][0] == 0
    assert _route(live_server, public_id)[1] is None


def test_signing_out_clears_what_the_phone_stored(awarded, phone, live_server):
    _reference, _public_id, unit, _nurse, _ems = awarded
    _context, page, _errors = phone
    _start_shift(page, unit)
    wait_for("the page is kept for offline use", lambda: page.evaluate(
        "caches.keys().then(k => k.length)") > 0)
    assert page.evaluate("localStorage.getItem('medport.crew.expires')")
    page.locator("form[action$='/logout'] button").tap()
    page.wait_for_url(re.compile(r"/login"))
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("caches.keys().then(k => k.length)") == 0
    assert page.evaluate("navigator.serviceWorker.getRegistrations().then(r => r.length)") == 0
    # Back to the crew's page: signed out, nothing of the shift shown.
    page.goto(live_server.url + "/crew/")
    assert "/login" in page.url


def test_what_the_phone_kept_expires_at_the_end_of_the_shift(awarded, phone, live_server):
    reference, _public_id, unit, _nurse, _ems = awarded
    context, page, _errors = phone
    _start_shift(page, unit)
    wait_for("the page is kept for offline use", lambda: page.evaluate(
        "caches.keys().then(k => k.length)") > 0)
    context.set_offline(True)
    page.clock.install(time=datetime.now(UTC) + timedelta(hours=13))  # past the 12-hour shift
    page.reload()
    expect(page.locator("#crew-trips")).to_contain_text("Your shift has ended")
    assert reference not in page.inner_text("main")
    wait_for("the kept trips are deleted", lambda: page.evaluate("caches.keys().then(k => k.length)") == 0)
