"""The dispatch story, live in three browsers: nurse, EMS dispatcher, center coordinator.

No page is reloaded to see another person's action: each step must appear on the
other screens through the event stream.  Waits are bounded (Playwright's timeouts).
"""

import pytest

from .helpers import LIVE, NURSE, place_bid, post_request, wait_live

DISPATCH = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"


@pytest.fixture
def people(open_session):
    nurse = open_session(NURSE)
    ems = open_session(DISPATCH)
    center = open_session(COORDINATOR)
    for session in (nurse, ems, center):
        session.page.on("dialog", lambda dialog: dialog.accept())
    return nurse, ems, center


def test_post_bid_award_drive_complete(people, live_server):
    nurse, ems, center = people
    ems.goto("/ems/")
    center.goto("/center/")
    wait_live(ems.page)
    wait_live(center.page)

    reference, public_id = post_request(nurse)
    # Without any reload the request appears on the EMS board and the center board.
    ems.page.wait_for_selector(f"text={reference}", timeout=LIVE)
    center.page.wait_for_selector(f"text={reference}", timeout=LIVE)

    wait_live(nurse.page)  # the nurse is on the request page, live
    place_bid(ems, reference)
    # The nurse sees the bid appear and awards it.
    nurse.page.wait_for_selector("button:has-text('Award')", timeout=LIVE)
    assert "Altoona EMS" in nurse.page.inner_text("main")
    nurse.page.click("button:has-text('Award')")
    nurse.page.wait_for_selector("text=Awarded", timeout=LIVE)

    # The crew runs the trip; every step shows on the nurse's and the coordinator's screens.
    center.goto(f"/center/requests/{public_id}")
    wait_live(center.page)
    ems.goto("/ems/trips")
    wait_live(ems.page)
    card = ems.page.locator("li.trip-card", has_text=reference)
    card.wait_for(timeout=LIVE)
    # (the status each step shows, the step button's text): "Back in service" completes the trip.
    for step, button_text in [("en_route", "En route"), ("at_pickup", "pickup"),
                              ("transporting", "Transport"), ("at_destination", "destination"),
                              ("completed", "Back in service")]:
        button = ems.page.locator("li.trip-card", has_text=reference).locator("button.step-button")
        assert button_text.lower() in button.inner_text().lower()
        button.click()
        ems.page.wait_for_load_state()
        for other in (nurse, center):
            other.page.locator(f"main .badge.status-{step}").first.wait_for(timeout=LIVE)
    # The hospital's record is completed; the coordinator's analytics count it.
    rows = live_server.query("hospital", "SELECT status FROM transport_requests WHERE public_id = :p",
                             p=public_id)
    assert rows[0][0] == "completed"
    export = center.context.request.get(live_server.url + "/center/analytics?period=today&format=csv&table=trips")
    assert export.status == 200
    line = next(row for row in export.text().splitlines() if reference in row)
    assert "completed" in line
    page = center.goto("/center/analytics?period=today")
    assert page.status == 200
    assert nurse.errors == [] and ems.errors == [] and center.errors == []


def test_cancellation_leaves_the_board_live(people, live_server):
    nurse, ems, center = people
    ems.goto("/ems/")
    wait_live(ems.page)
    reference, public_id = post_request(nurse, note="To cancel")
    ems.page.wait_for_selector(f"text={reference}", timeout=LIVE)
    nurse.goto(f"/hospital/requests/{public_id}/cancel")
    nurse.page.check("input[name=reason][value=not_needed]")
    nurse.page.click("button:has-text('Cancel request')")
    nurse.page.wait_for_load_state()
    ems.page.wait_for_selector(f"text={reference}", state="detached", timeout=LIVE)
    status = live_server.query("hospital", "SELECT status, cancel_reason FROM transport_requests "
                                           "WHERE public_id = :p", p=public_id)
    assert tuple(status[0]) == ("cancelled", "not_needed")


def test_center_rescues_an_unfilled_request(people, live_server):
    nurse, ems, center = people
    (public_id, reference), = live_server.query(
        "hospital", "SELECT public_id, reference FROM transport_requests WHERE status = 'open' "
                    "AND level_of_care = 'BLS' AND bid_deadline < CURRENT_TIMESTAMP "
                    "ORDER BY id LIMIT 1")
    ems.goto("/ems/trips")
    wait_live(ems.page)
    center.goto(f"/center/requests/{public_id}")
    page = center.page
    agency_value = page.eval_on_selector(
        "#assign-agency", "s => [...s.options].find(o => o.text.includes('Altoona EMS')).value")
    page.select_option("#assign-agency", agency_value)
    unit_value = page.eval_on_selector(
        "#assign-unit", "s => [...s.options].find(o => o.text.includes('Ambulance 14') || o.text.includes('Ambulance 15')).value")
    page.select_option("#assign-unit", unit_value)
    page.fill("#assign-eta_minutes", "25")
    page.fill("#assign-reason", "Unfilled past deadline; Altoona EMS agreed by phone")
    page.click("button:has-text('Assign')")
    page.wait_for_load_state()
    # The agency's crew sees the trip arrive, live.
    ems.page.locator("li.trip-card", has_text=reference).wait_for(timeout=LIVE)
    award = live_server.query("hospital", "SELECT status, award_source FROM transport_requests "
                                          "WHERE public_id = :p", p=public_id)
    assert tuple(award[0]) == ("awarded", "center")


def test_hand_back_reopens_the_request(people, live_server):
    nurse, ems, center = people
    ems.goto("/ems/")
    wait_live(ems.page)
    reference, public_id = post_request(nurse, note="Hand back")
    ems.page.wait_for_selector(f"text={reference}", timeout=LIVE)
    place_bid(ems, reference, eta="30", unit_index=2)  # unit 1 is booked by the first story
    nurse.page.wait_for_selector("button:has-text('Award')", timeout=LIVE)
    nurse.page.click("button:has-text('Award')")
    nurse.page.wait_for_selector("text=Awarded", timeout=LIVE)
    ems.goto("/ems/trips")
    card = ems.page.locator("li.trip-card", has_text=reference)
    card.wait_for(timeout=LIVE)
    ems.page.evaluate("""() => { window.refreshes = 0; document.addEventListener('htmx:afterSwap',
        e => { if (e.detail.target.id === 'trips-panel') window.refreshes++; }); }""")
    reason = card.locator("input[name=reason]")
    card.locator("summary").click()
    reason.fill("Unit broke down")
    # A live refresh while the crew types (another request posted) keeps the form open and the
    # reason typed (hx-preserve on the form's <details>).
    before = ems.page.evaluate("window.refreshes")
    post_request(nurse, note="Posted while the crew types")
    ems.page.wait_for_function("n => window.refreshes > n", arg=before, timeout=LIVE)
    assert reason.is_visible() and reason.input_value() == "Unit broke down"
    nurse.goto(f"/hospital/requests/{public_id}")
    wait_live(nurse.page)
    card.locator("button:has-text('Hand back')").click()
    ems.page.wait_for_load_state()
    # The nurse's page shows the request open again, live.
    nurse.page.locator("main").get_by_text("Handed back", exact=False).first.wait_for(timeout=LIVE)
    status = live_server.query("hospital", "SELECT status, handed_back_count FROM transport_requests "
                                           "WHERE public_id = :p", p=public_id)
    assert tuple(status[0]) == ("open", 1)
