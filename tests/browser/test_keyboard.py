"""Every form works by keyboard alone, with focus visible at every stop and no trap.

Each test starts at the top of a page, Tabs to the skip link and into the main region,
then moves only by Tab and Shift+Tab, types, uses the arrow keys in selects and radio
groups, Space on checkboxes and Enter on buttons; it never clicks or fills.  Keyboard
behaviour does not depend on the database, so these run on the embedded default.
"""
import re

import pytest

from .keyboard import Keyboard

NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"
ADMIN = "admin@medport.test"
REQUEST_URL = re.compile(r"/hospital/requests/([0-9a-f-]{36})$")

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
    kb.tab_to("#other_needs")
    kb.type("Hard of hearing")
    kb.tab_to("input[name=invite_mode]")
    kb.radio("all")
    kb.submit_with("button[type=submit].primary")
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
    assert trip_row(live_server, public_id, "status, level_of_care, weight_kg, cardiac_monitor, other_needs") \
        == ("open", "BLS", 82, True, "Hard of hearing")

    # Edit it.
    kb = keyboard_on(nurse, f"/hospital/requests/{public_id}/edit")
    kb.tab_to("#weight_kg")
    kb.type("95")
    kb.tab_to("#iv_pump")
    kb.toggle(True)
    kb.submit_with("button[type=submit].primary")
    kb.lands_on(REQUEST_URL)
    kb.check_focus_seen()
    assert trip_row(live_server, public_id, "weight_kg, iv_pump") == (95, True)

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
    assert nurse.errors == []
