"""Every form works by keyboard alone, with focus visible at every stop and no trap.

Each test starts at the top of a page, Tabs to the skip link and into the main region,
then moves only by Tab and Shift+Tab, types, uses the arrow keys in selects and radio
groups, Space on checkboxes and Enter on buttons; it never clicks or fills.  Keyboard
behaviour does not depend on the database, so these run on the embedded default.
"""
import re

import pytest

from .conftest import wait_for
from .keyboard import Keyboard

NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"
ADMIN = "admin@medport.test"
REQUEST_URL = re.compile(r"/hospital/requests/([0-9a-f-]{36})(#main)?$")
END = r"(#main)?$"  # the skip link leaves #main on the URL, and a redirect keeps it

pytestmark = pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)


def keyboard_on(session, path):
    session.goto(path)
    return Keyboard(session.page).start()


def post_by_keyboard(nurse, pickup, level="BLS", weight="82"):
    """The new-request form, by keyboard; returns (reference, public id)."""
    page = nurse.page
    kb = keyboard_on(nurse, "/hospital/requests/new")
    kb.tab_to("#pickup_location")
    kb.type(pickup)
    kb.tab_to("#destination_facility")
    kb.select(re.compile(r"^(?!None|Altoona)"))
    kb.tab_to("input[name=level_of_care]")
    kb.radio(level)
    kb.tab_to("#age_group")
    kb.select("Adult")
    kb.tab_to("#weight_kg")
    kb.type(weight)
    kb.tab_to("#cardiac_monitor")
    kb.toggle(True)
    if level == "BLS":  # a cardiac monitor needs ALS: sent at BLS with an override and its reason
        kb.tab_to("#care_override")
        kb.toggle(True)
        kb.tab_to("#care_override_reason")
        kb.type("Telemetry only")
    kb.tab_to("#other_needs")
    kb.type("Hard of hearing")
    kb.tab_to("input[name=invite_mode]")
    kb.radio("all")
    kb.tab_to("button[type=submit].primary")
    # Backwards through the whole form (date parts and radio groups included): no trap.
    kb.tab_to("#origin_facility", backwards=True, max_tabs=80)
    kb.submit_with("button[type=submit].primary", max_tabs=80)
    kb.lands_on(REQUEST_URL)
    kb.check_focus_seen()
    reference = re.search(r"[A-Z]{3}-\d{6}-[A-Z0-9]{4}", page.title()).group(0)
    return reference, REQUEST_URL.search(page.url).group(1)


def trip_row(server, public_id, columns):
    return tuple(server.query("hospital", f"SELECT {columns} FROM transport_requests WHERE public_id = :p",
                              p=public_id)[0])


def test_hospital_forms_by_keyboard(open_session, live_server):
    nurse = open_session(NURSE)
    page = nurse.page
    page.on("dialog", lambda dialog: dialog.accept())

    # New request.
    reference, public_id = post_by_keyboard(nurse, "Keyboard ward, bed 3")
    assert "Keyboard ward, bed 3" in page.inner_text("main")
    assert trip_row(live_server, public_id, "status, level_of_care, weight_kg, cardiac_monitor, other_needs, "
                    "care_override_reason") == ("open", "BLS", 82, True, "Hard of hearing", "Telemetry only")

    # Edit it.
    kb = keyboard_on(nurse, f"/hospital/requests/{public_id}/edit")
    kb.tab_to("#weight_kg")
    kb.type("95")
    kb.tab_to("#iv_pump")
    kb.toggle(True)
    kb.tab_to("#care_override")  # the override covers the monitor, not the pump: given again
    kb.toggle(True)
    kb.tab_to("#care_override_reason")
    kb.type("RT rides along")
    kb.submit_with("button[type=submit].primary")
    kb.lands_on(REQUEST_URL)
    kb.check_focus_seen()
    assert trip_row(live_server, public_id, "weight_kg, iv_pump, care_override_reason, care_override_needs") \
        == (95, True, "RT rides along", "iv_pump,cardiac_monitor")

    # Find it from the dashboard's search.
    kb = keyboard_on(nurse, "/hospital/")
    kb.tab_to("#q")
    kb.type(reference)
    kb.press("Enter")
    page.wait_for_url(re.compile(r"[?&]q="))
    page.locator("#requests-panel", has_text=reference).wait_for()
    kb.check_focus_seen()

    # Cancel it with a reason and a note.
    kb = keyboard_on(nurse, f"/hospital/requests/{public_id}/cancel")
    kb.tab_to("input[name=reason]")
    kb.radio("other")
    kb.tab_to("#note")
    kb.type("Family is driving")
    kb.submit_with("button[type=submit].danger")
    kb.lands_on(REQUEST_URL)
    kb.check_focus_seen()
    assert trip_row(live_server, public_id, "status, cancel_reason, cancel_note") \
        == ("cancelled", "other", "Family is driving")

    # Re-post it: the link on its page, then the pre-filled form.
    kb = Keyboard(page).start()
    kb.tab_to("a:has-text('Re-post as a new request')", max_tabs=60)
    kb.press("Enter")
    page.wait_for_url(re.compile(r"repost="))
    kb = Keyboard(page).start()
    assert page.input_value("#pickup_location") == "Keyboard ward, bed 3"
    kb.submit_with("button[type=submit].primary", max_tabs=80)
    kb.lands_on(REQUEST_URL)
    kb.check_focus_seen()
    reposted = REQUEST_URL.search(page.url).group(1)
    (source,), = live_server.query("hospital", "SELECT id FROM transport_requests WHERE public_id = :p",
                                   p=public_id)
    assert trip_row(live_server, reposted, "status, reposted_from_id") == ("open", source)

    # Preferred agencies: add one, note it, move it up.
    kb = keyboard_on(nurse, "/hospital/preferences")
    kb.tab_to("#agency")
    chosen = kb.select(re.compile(r"^(?!Choose)\w"))
    kb.tab_to("#notes")
    kb.type("Night runs")
    kb.submit_with("button[type=submit].primary")
    page.locator("table.preferences tbody tr", has_text=chosen).wait_for()
    kb.check_focus_seen()
    rows = page.locator("table.preferences tbody tr")
    last = rows.count()
    assert rows.nth(last - 1).inner_text().startswith(str(last)), "the new agency goes to the end"

    kb = keyboard_on(nurse, "/hospital/preferences")
    notes_id = rows.nth(last - 1).locator("input[name=notes]").get_attribute("id")
    kb.tab_to(f"#{notes_id}")
    kb.type("Night runs, weekends too")
    kb.tab_to(f"#{notes_id} ~ button")
    kb.press("Enter")
    page.locator(f"#{notes_id}[value='Night runs, weekends too']").wait_for()
    kb = keyboard_on(nurse, "/hospital/preferences")
    kb.tab_to(f"#{notes_id}")
    kb.tab_to("button[title='Move up']")
    kb.press("Enter")
    page.wait_for_load_state()
    moved = page.locator("table.preferences tbody tr").nth(last - 2)
    moved.filter(has_text=chosen).wait_for()
    kb.check_focus_seen()
    kb = keyboard_on(nurse, "/hospital/preferences")
    kb.tab_to(f"tr:has(#{notes_id}) button.danger", max_tabs=80)
    kb.press("Enter")
    page.locator("table.preferences tbody tr", has_text=chosen).wait_for(state="detached")
    kb.check_focus_seen()
    assert nurse.errors == []


def test_bid_award_advance_and_hand_back_by_keyboard(open_session, live_server):
    nurse = open_session(NURSE)
    ems = open_session(DISPATCH)
    for session in (nurse, ems):
        session.page.on("dialog", lambda dialog: dialog.accept())
    reference, public_id = post_by_keyboard(nurse, "Keyboard bid, room 9")

    # The EMS board's filter, then the bid form.
    kb = keyboard_on(ems, "/ems/")
    kb.tab_to("#filter-level")
    kb.select("BLS")
    kb.submit_with("form.filters button[type=submit]")
    ems.page.wait_for_url(re.compile(r"[?&]level=BLS"))
    link = ems.page.locator("#board-panel a", has_text=reference)
    link.wait_for()
    kb = Keyboard(ems.page).start()
    kb.tab_to(f"#board-panel a:has-text('{reference}')", max_tabs=200)
    kb.press("Enter")
    ems.page.wait_for_url(re.compile(r"/ems/requests/"))
    # A unit already booked for an overlapping window is refused: try the next one.
    for steps in range(1, 8):
        kb = Keyboard(ems.page).start()
        kb.tab_to("#unit")
        kb.press("Home")
        for _ in range(steps):
            kb.press("ArrowDown")
        unit = kb.selected()
        kb.tab_to("#eta_minutes")
        kb.type("18")
        kb.tab_to("#note")
        kb.type("Crew of two")
        kb.submit_with("#bid button[type=submit].primary")
        ems.page.wait_for_load_state()
        outcome = ems.page.locator("#bid button:has-text('Change bid'), [role=alert]").first
        outcome.wait_for()
        if "overlapping" not in outcome.inner_text():
            break
    ems.page.locator("#bid button", has_text="Change bid").wait_for()
    # Withdraw it, and bid again.
    kb = Keyboard(ems.page).start()
    kb.tab_to("#bid button.danger", max_tabs=60)
    kb.press("Enter")
    ems.page.locator("#bid button", has_text="Place bid").wait_for()
    kb = Keyboard(ems.page).start()
    kb.tab_to("#unit")
    kb.select(unit)
    kb.tab_to("#eta_minutes")
    kb.type("18")
    kb.submit_with("#bid button[type=submit].primary")
    ems.page.locator("#bid button", has_text="Change bid").wait_for()
    # Change it.
    kb = Keyboard(ems.page).start()
    kb.tab_to("#eta_minutes")
    kb.type("14")
    kb.submit_with("#bid button[type=submit].primary")
    ems.page.locator("#bid", has_text="ETA 14 min").wait_for()
    kb.check_focus_seen()

    # The nurse awards it from the request page (the bid arrives live).
    nurse.page.locator("#request-bids button", has_text="Award").wait_for()
    kb = Keyboard(nurse.page).start()
    kb.tab_to("#request-bids button.primary")
    kb.press("Enter")
    nurse.page.locator("#request-bids", has_text="Awarded").wait_for()
    kb.check_focus_seen()
    assert trip_row(live_server, public_id, "status, awarded_unit_label")[0] == "awarded"
    assert unit.split(" ")[0] in trip_row(live_server, public_id, "awarded_unit_label")[0]

    # The crew reports en route, then hands the trip back.
    kb = keyboard_on(ems, "/ems/trips")
    card = f"li.trip-card:has-text('{reference}')"
    kb.tab_to(f"{card} button.step-button", max_tabs=80)
    kb.press("Enter")
    ems.page.locator(card).locator(".badge", has_text="En route").first.wait_for()
    assert trip_row(live_server, public_id, "status")[0] == "en_route"
    kb = keyboard_on(ems, "/ems/trips")
    kb.tab_to(f"{card} summary", max_tabs=80)
    kb.press("Enter")
    kb.leaves_and_returns()
    kb.tab_to(f"{card} input[name=reason]")
    kb.type("Flat tyre")
    kb.submit_with(f"{card} button.danger")
    ems.page.locator(card).wait_for(state="detached")
    kb.check_focus_seen()
    assert trip_row(live_server, public_id, "status, handed_back_count") == ("open", 1)
    assert nurse.errors == [] and ems.errors == []


def test_units_and_availability_by_keyboard(open_session, live_server):
    ems = open_session(DISPATCH)
    page = ems.page
    page.on("dialog", lambda dialog: dialog.accept())

    kb = keyboard_on(ems, "/ems/units")
    kb.tab_to("#number", max_tabs=200)
    kb.type("Keyboard 7")
    kb.tab_to("#level")
    kb.select("ALS")
    kb.tab_to("#base_station")
    kb.type("Station 4")
    kb.submit_with("form[action$='/ems/units'] button.primary")
    row = page.locator("#units-panel tr", has_text="Keyboard 7")
    row.wait_for()
    assert "Station 4" in row.inner_text()
    kb.check_focus_seen()

    # Its status, from the units table.
    kb = keyboard_on(ems, "/ems/units")
    status = row.locator("select").get_attribute("id")
    kb.tab_to(f"#{status}", max_tabs=200)
    kb.select("On break")
    kb.tab_to(f"#{status} + button")
    kb.press("Enter")
    page.locator("#units-panel tr", has_text="Keyboard 7").locator(".badge", has_text="On break").wait_for()
    assert live_server.query("ems", "SELECT status FROM units WHERE number = 'Keyboard 7'")[0][0] == "on_break"

    # Edit it, reached by its Edit link.
    kb = keyboard_on(ems, "/ems/units")
    kb.tab_to("#units-panel a:has-text('Keyboard 7')", max_tabs=200)
    kb.press("Enter")
    page.wait_for_url(re.compile(r"/ems/units/[^/]+/edit" + END))
    kb = Keyboard(page).start()
    kb.tab_to("#base_station")
    kb.type("Station 5")
    kb.submit_with("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/ems/units" + END))
    page.locator("#units-panel tr", has_text="Keyboard 7").filter(has_text="Station 5").wait_for()
    kb.check_focus_seen()

    # Availability: add a break window for it, then remove the window.
    kb = keyboard_on(ems, "/ems/availability")
    kb.tab_to("#unit", max_tabs=200)
    kb.select("Keyboard 7")
    kb.tab_to("#kind")
    kb.select("Out of service")
    kb.tab_to("#note", max_tabs=60)
    kb.type("Tyres")
    kb.submit_with("form[action*='/ems/availability'] button.primary")
    window_row = page.locator("table tr", has_text="Keyboard 7").filter(has_text="Tyres")
    window_row.wait_for()
    kb.check_focus_seen()
    kb = Keyboard(page).start()
    kb.tab_to("tr:has-text('Tyres') button", max_tabs=200)
    kb.press("Enter")
    window_row.wait_for(state="detached")
    kb.check_focus_seen()

    # The day filters: the next day by its link, then another day by the date field's arrow
    # keys, and on routes a unit too; each is a plain GET form.
    for path in ("/ems/availability", "/ems/routes"):
        kb = keyboard_on(ems, path)
        shown = page.inner_text("h1")
        kb.tab_to("form.filters a:has-text('Next day')", max_tabs=60)
        kb.press("Enter")
        page.wait_for_url(re.compile(r"[?&]date=\d{4}-\d{2}-\d{2}"))
        next_day = re.search(r"date=([\d-]+)", page.url).group(1)
        assert page.inner_text("h1") != shown
        kb = Keyboard(page).start()
        kb.tab_to("#day", max_tabs=60)
        # ArrowUp moves the date's first part (month or day, by locale) on by one; a month with
        # no such day (31 November) leaves the field empty until the next press.
        for _ in range(3):
            kb.press("ArrowUp")
            chosen = page.input_value("#day")
            if chosen:
                break
        assert chosen and chosen != next_day, (chosen, next_day)
        if path == "/ems/routes":
            kb.tab_to("#unit", max_tabs=10)
            kb.select("Keyboard 7")
        kb.submit_with("form.filters button[type=submit]", max_tabs=10)
        page.wait_for_url(re.compile(rf"[?&]date={chosen}"))
        if path == "/ems/routes":
            assert "unit=" in page.url
            page.locator("main", has_text="No trips for Keyboard 7").wait_for()
        kb.check_focus_seen()
    assert ems.errors == []


def open_trips(server, count):
    return server.query(
        "hospital", "SELECT public_id, reference FROM transport_requests WHERE status = 'open' "
                    "ORDER BY bid_deadline DESC LIMIT :n", n=count)


def test_center_interventions_by_keyboard(open_session, live_server):
    center = open_session(COORDINATOR)
    page = center.page
    page.on("dialog", lambda dialog: dialog.accept())
    (first, first_ref), (second, _) = open_trips(live_server, 2)

    # The board's filter.
    kb = keyboard_on(center, "/center/")
    kb.tab_to("#state")
    kb.select("Open")
    kb.submit_with("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"[?&]state="))
    kb.check_focus_seen()

    # Extend the deadline, then assign an agency and unit.
    kb = keyboard_on(center, f"/center/requests/{first}")
    kb.tab_to("#extend-minutes", max_tabs=120)
    kb.type("30")
    kb.tab_to("#extend-note")
    kb.type("Waiting on a unit")
    kb.submit_with("form[action$='/extend'] button")
    page.locator(".flash", has_text="deadline extended").wait_for()
    kb.check_focus_seen()

    kb = keyboard_on(center, f"/center/requests/{first}")
    code = live_server.query("center", "SELECT short_code FROM agencies WHERE name = 'Altoona EMS'")[0][0]
    kb.tab_to("#assign-agency", max_tabs=120)
    kb.select("Altoona EMS")
    kb.tab_to("#assign-unit")
    kb.select(re.compile(rf"^{code} · .*available"))
    kb.tab_to("#assign-eta_minutes")
    kb.type("25")
    kb.tab_to("#assign-reason")
    kb.type("Agreed by phone")
    kb.submit_with("form[action$='/assign'] button.primary")
    kb.lands_on(re.compile(r"/center/requests/[^/]+" + END))
    page.locator("#request-panel .badge.status-awarded").wait_for()
    assert trip_row(live_server, first, "status, award_source") == ("awarded", "center")

    # Re-open it for bids.
    kb = keyboard_on(center, f"/center/requests/{first}")
    kb.tab_to("#reopen-reason", max_tabs=120)
    kb.type("Unit needed elsewhere")
    kb.submit_with("form[action$='/reopen'] button")
    page.locator("#request-panel .badge.status-open").wait_for()
    assert trip_row(live_server, first, "status")[0] == "open"

    # Award a live bid on the hospital's behalf (the button asks to confirm first).
    # A request whose first live bid names a unit not booked for an overlapping window meanwhile
    # (the other keyboard tests award units too; the server would rightly refuse that one).
    units_bid = dict(live_server.query(
        "ems", "SELECT trip_id, unit_id FROM transport_bids WHERE status = 'live' ORDER BY eta_minutes DESC"))
    booked = live_server.query(
        "hospital", "SELECT awarded_unit_id, window_start, window_end FROM transport_requests "
                    "WHERE status IN ('awarded', 'en_route', 'at_pickup', 'transporting')")
    bid_on = next(public_id for public_id, trip_id, start, end in live_server.query(
        "hospital", "SELECT public_id, id, window_start, window_end FROM transport_requests "
                    "WHERE status = 'open' ORDER BY id")
        if trip_id in units_bid and public_id not in (first, second)
        and not any(unit == units_bid[trip_id] and s < end and start < e for unit, s, e in booked))
    kb = keyboard_on(center, f"/center/requests/{bid_on}")
    kb.submit_with("#request-panel form[action$='/award'] button.primary", max_tabs=150)
    page.locator("#request-panel .badge.status-awarded").wait_for()
    kb.check_focus_seen()
    assert trip_row(live_server, bid_on, "status, award_source") == ("awarded", "center")

    # Cancel another with a reason.
    kb = keyboard_on(center, f"/center/requests/{second}")
    kb.tab_to("#cancel-reason", max_tabs=120)
    kb.select("No EMS availability")
    kb.submit_with("form[action$='/cancel'] button.danger")
    page.locator("#request-panel .badge.status-cancelled").wait_for()
    kb.check_focus_seen()
    assert trip_row(live_server, second, "status, cancel_reason") == ("cancelled", "no_availability")

    # Analytics: choose a period and a level.
    kb = keyboard_on(center, "/center/analytics")
    kb.tab_to("#period")
    kb.select("Last 30 days")
    kb.tab_to("#level")
    kb.select("BLS")
    kb.submit_with("form.analytics-filters button[type=submit]")
    page.wait_for_url(re.compile(r"level=BLS"))
    page.locator(".analytics-period", has_text="BLS").wait_for()
    kb.check_focus_seen()
    assert center.errors == []


def test_accounts_by_keyboard(open_session, live_server):
    admin = open_session(ADMIN)
    page = admin.page
    page.on("dialog", lambda dialog: dialog.accept())
    email = "kb.nurse@altoona.medport.test"

    # Create a hospital user.
    kb = keyboard_on(admin, "/center/users/new")
    kb.tab_to("#email")
    kb.type(email)
    kb.tab_to("#display_name")
    kb.type("Keyboard Nurse")
    kb.tab_to("#role")
    kb.select("Hospital staff")
    kb.tab_to("#hospital")
    kb.select("Altoona")
    kb.submit_with("button[type=submit].primary")
    page.locator("h1", has_text="User created").wait_for()
    password = page.inner_text(".center-secret code").strip()
    kb.check_focus_seen()

    # The new user signs in and must change the password: both by keyboard.
    newcomer = open_session(None)
    kb = keyboard_on(newcomer, "/login")
    kb.tab_to("#email")
    kb.type(email)
    kb.tab_to("#password")
    kb.type(password)
    kb.press("Enter")
    newcomer.page.wait_for_url(re.compile(r"/account/password"))
    kb = Keyboard(newcomer.page).start()
    kb.tab_to("#current_password")
    kb.type(password)
    kb.tab_to("#new_password")
    kb.type("keyboard-only-2026")
    kb.tab_to("#confirm")
    kb.type("keyboard-only-2026")
    kb.submit_with("button[type=submit].primary")
    newcomer.page.wait_for_url(re.compile(r"/hospital/" + END))
    kb.check_focus_seen()
    kb = Keyboard(newcomer.page)
    kb.press("Tab")  # from the top of the page: the skip link, then the header
    kb.tab_to("button:has-text('Sign out')", max_tabs=20)
    kb.press("Enter")
    newcomer.page.wait_for_url(re.compile(r"/login"))
    kb.check_focus_seen()

    # Find the user with the filter, open it by its Edit link, reset the password.
    kb = keyboard_on(admin, "/center/users")
    kb.tab_to("#q")
    kb.type("kb.nurse")
    kb.press("Enter")
    page.wait_for_url(re.compile(r"[?&]q=kb.nurse"))
    kb = Keyboard(page).start()
    kb.tab_to(f"tr:has-text('{email}') a", max_tabs=60)
    kb.press("Enter")
    page.wait_for_url(re.compile(r"/center/users/[^/]+" + END))
    edit_url = page.url
    kb = Keyboard(page).start()
    kb.tab_to("form[action$='/reset-password'] button", max_tabs=60)
    kb.press("Enter")
    page.locator("h1", has_text="Password reset").wait_for()
    kb.check_focus_seen()

    # Deactivate it.
    page.goto(edit_url)
    kb = Keyboard(page).start()
    kb.tab_to("#active")
    kb.toggle(False)
    kb.submit_with("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/center/users" + END))
    kb.check_focus_seen()
    assert live_server.query("center", "SELECT active FROM users WHERE email = :e", e=email)[0][0] in (False, 0)

    # The audit log's filter finds the changes.
    kb = keyboard_on(admin, "/center/audit")
    kb.tab_to("#action")
    kb.type("user.")
    kb.press("Enter")
    page.wait_for_url(re.compile(r"[?&]action=user"))
    page.locator("main table", has_text=email).first.wait_for()
    kb.check_focus_seen()
    assert admin.errors == [] and newcomer.errors == []


def test_registry_and_configuration_by_keyboard(open_session, live_server):
    admin = open_session(ADMIN)
    page = admin.page

    # A new hospital with its main campus, then a facility, then an edit.
    kb = keyboard_on(admin, "/center/registry/hospitals/new")
    kb.tab_to("#name")
    kb.type("Keyboard General")
    kb.tab_to("#short_code")
    kb.type("KBG")
    kb.tab_to("#city")
    kb.type("Tyrone")
    kb.tab_to("#facility_address")
    kb.type("1 Keyboard Way, Tyrone, PA")
    kb.submit_with("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/center/registry" + END))
    row = "tr:has-text('Keyboard General')"
    page.locator(row).wait_for()
    kb.check_focus_seen()

    kb = Keyboard(page).start().follow(f"{row} a[href*='/facilities/new']", re.compile(r"/facilities/new" + END))
    kb.tab_to("#name")
    kb.type("Keyboard General Dialysis")
    kb.tab_to("#kind")
    kb.select(re.compile(r"\w"))
    kb.tab_to("#address")
    kb.type("2 Keyboard Way, Tyrone, PA")
    kb.submit_with("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/center/registry" + END))
    kb.check_focus_seen()
    # The facility lives in the hospital silo: the relay writes it there within moments.
    wait_for("the new facility in the hospital silo", lambda: live_server.query(
        "hospital", "SELECT 1 FROM hospital_facilities WHERE name = 'Keyboard General Dialysis'"))
    page.reload()
    page.locator(row, has_text="Keyboard General Dialysis").wait_for()

    kb = Keyboard(page).start().follow(f"{row} a:has-text('Keyboard General Dialysis')",
                                       re.compile(r"/registry/facilities/[^/]+" + END))
    kb.tab_to("#city")
    kb.type("Bellwood")
    kb.submit_with("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/center/registry" + END))
    kb.check_focus_seen()
    wait_for("the facility's new city in the hospital silo", lambda: live_server.query(
        "hospital", "SELECT 1 FROM hospital_facilities WHERE name = 'Keyboard General Dialysis' "
                    "AND city = 'Bellwood'"))

    kb = Keyboard(page).start()
    kb.tab_to(f"{row} a[href*='/registry/hospitals/']:not([href*='/facilities'])", max_tabs=150)
    kb.press("Enter")
    page.wait_for_url(re.compile(r"/registry/hospitals/[^/]+" + END))
    kb = Keyboard(page).start()
    kb.tab_to("#region")
    kb.type("Blair County")
    kb.submit_with("button[type=submit].primary")
    page.locator(row, has_text="Blair County").wait_for()
    kb.check_focus_seen()

    # A new agency (levels are checkboxes), then deactivated.
    kb = keyboard_on(admin, "/center/registry/agencies/new")
    kb.tab_to("#name")
    kb.type("Keyboard Rescue")
    kb.tab_to("#short_code")
    kb.type("KBR")
    kb.tab_to("input[name=levels][value=BLS]")
    kb.toggle(True)
    kb.tab_to("input[name=levels][value=ALS]")
    kb.toggle(True)
    kb.tab_to("#service_area")
    kb.type("Blair County")
    kb.submit_with("button[type=submit].primary")
    page.wait_for_url(re.compile(r"/center/registry" + END))
    agency_row = "tr:has-text('Keyboard Rescue')"
    page.locator(agency_row).wait_for()
    kb = Keyboard(page).start()
    kb.tab_to(f"{agency_row} a[href*='/registry/agencies/']", max_tabs=200)
    kb.press("Enter")
    page.wait_for_url(re.compile(r"/registry/agencies/[^/]+" + END))
    kb = Keyboard(page).start()
    kb.tab_to("#active")
    kb.toggle(False)
    kb.submit_with("button[type=submit].primary")
    page.locator(agency_row, has_text="Deactivated").wait_for()
    kb.check_focus_seen()

    # Configuration.
    kb = keyboard_on(admin, "/center/config")
    kb.tab_to("#board_recent_hours")
    kb.type("36")
    kb.submit_with("button[type=submit].primary")
    page.locator(".flash").first.wait_for()
    kb = keyboard_on(admin, "/center/config")
    assert page.input_value("#board_recent_hours") == "36"
    kb.tab_to("#board_recent_hours")
    kb.type("24")
    kb.submit_with("button[type=submit].primary")
    page.locator(".flash").first.wait_for()
    kb.check_focus_seen()

    # The center's units overview filter.
    kb = keyboard_on(admin, "/center/units")
    kb.tab_to("#status")
    kb.select("On break")
    kb.submit_with("form.filters button[type=submit]")
    page.wait_for_url(re.compile(r"[?&]status=on_break"))
    kb.check_focus_seen()
    assert admin.errors == []


def test_crew_accounts_by_keyboard(open_session, live_server):
    """Altoona EMS's organisation admin makes a crew account, resets its password and deactivates it."""
    dispatcher = open_session(DISPATCH)
    page = dispatcher.page
    page.on("dialog", lambda dialog: dialog.accept())
    email = "kb.medic@altoonaems.medport.test"

    kb = keyboard_on(dispatcher, "/ems/crew-accounts")
    kb.tab_to("#email")
    kb.type(email)
    kb.tab_to("#display_name")
    kb.type("Keyboard Medic")
    kb.submit_with("button[type=submit].primary")
    page.locator("h1", has_text="User created").wait_for()
    kb.check_focus_seen()

    kb = keyboard_on(dispatcher, "/ems/crew-accounts")
    kb.tab_to(f"tr:has-text('{email}') form[action$='/reset-password'] button", max_tabs=60)
    kb.press("Enter")
    page.locator("h1", has_text="Password reset").wait_for()
    kb.check_focus_seen()

    kb = keyboard_on(dispatcher, "/ems/crew-accounts")
    kb.tab_to(f"tr:has-text('{email}') button:has-text('Deactivate')", max_tabs=60)
    kb.press("Enter")
    page.locator(f"tr:has-text('{email}')", has_text="Deactivated").wait_for()
    kb.check_focus_seen()
    assert live_server.query("center", "SELECT active, role FROM users WHERE email = :e", e=email)[0] in (
        (False, "crew"), (0, "crew"))
