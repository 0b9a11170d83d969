"""Scheduled work in a live browser: a nurse creates a dialysis series from one form, adds a
will-call return to a request, and the destination hospital's staff release it with one click;
the agency's board shows the released return open for bids."""
from datetime import date, timedelta

from .conftest import run_axe, wait_for

NURSE = "nurse@altoona.medport.test"
JUNIATA = "nurse@juniata.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"


def test_a_series_and_a_will_call_return_released_with_one_click(open_session, live_server):
    nurse = open_session(NURSE)
    page = nurse.page
    # The series: Monday, Wednesday, Friday at 06:30 for 36 occurrences.
    nurse.goto("/hospital/series/new")
    page.check("input[name=weekdays][value='0']")
    page.check("input[name=weekdays][value='2']")
    page.check("input[name=weekdays][value='4']")
    page.fill("#pickup_time", "06:30")
    page.fill("#start_date", (date.today() + timedelta(days=1)).isoformat())
    page.check("input[name=end][value=count]")
    page.fill("#occurrence_count", "36")
    page.select_option("#origin_facility", label="Altoona Regional Medical Center")
    page.fill("#pickup_location", "Dialysis chair 3")
    page.select_option("#destination_facility", label="Nittany Dialysis Center")
    page.check("input[name=level_of_care][value=BLS]")
    page.select_option("#age_group", value="older_adult")
    page.fill("#weight_kg", "70")
    page.check("input[name=invite_mode][value=all]")
    page.click("button:has-text('Create series')")
    page.wait_for_url(lambda url: "/hospital/series/" in url and not url.endswith("/new"))
    assert "Mon, Wed, Fri at 06:30" in page.content() and "36 times" in page.content()
    assert not [v for v in run_axe(page) if v["impact"] in ("serious", "critical")]
    nurse.goto("/hospital/series/")
    assert "Mon, Wed, Fri at 06:30" in page.content()

    # A request to Juniata, and its will-call return.
    nurse.goto("/hospital/requests/new")
    page.select_option("#destination_facility", label="Juniata Valley Medical Center")
    page.fill("#pickup_location", "4 West, room 412")
    page.check("input[name=level_of_care][value=BLS]")
    page.select_option("#age_group", value="adult")
    page.fill("#weight_kg", "80")
    page.check("input[name=invite_mode][value=all]")
    page.click("button:has-text('Post request')")
    page.wait_for_url(lambda url: "/hospital/requests/" in url and not url.endswith("/new"))
    page.check("input[name=kind][value=will_call]")
    page.click("button:has-text('Add return')")
    page.wait_for_selector("text=Waiting for the patient")
    reference = page.locator("h1#request-heading").inner_text().split()[0]
    assert page.locator("text=Will-call: waiting").count() >= 1

    # The clinic at Juniata marks the patient ready: one click.
    clinic = open_session(JUNIATA)
    clinic.goto("/hospital/will-call")
    row = clinic.page.locator("tr", has_text=reference)
    row.locator("select").select_option("urgent")
    row.locator("button:has-text('Patient ready')").click()
    clinic.page.wait_for_selector("text=patient ready, bidding is open")
    assert not [v for v in run_axe(clinic.page) if v["impact"] in ("serious", "critical")]

    def released():
        rows = live_server.query("hospital", "SELECT released_at, urgency FROM transport_requests "
                                            "WHERE reference = :ref", ref=reference)
        return rows and rows[0][0] is not None and rows[0][1] == "urgent"

    wait_for("the return released", released, timeout=15)
    # The agency sees it open for bids on its board (live).
    crew = open_session(DISPATCH)
    crew.goto("/ems/")
    crew.page.wait_for_selector(f"text={reference}")
    open_part = crew.page.content().split('id="upcoming-title"')[0]
    assert reference in open_part
    # Upcoming requests are only counted on the board; opening their fold fetches the list.
    assert crew.page.locator("#upcoming-list").count() == 0
    crew.page.click("#upcoming > summary")
    crew.page.wait_for_selector("#upcoming-list table")
    assert reference not in crew.page.locator("#upcoming-list").inner_text()
    assert not [v for v in run_axe(crew.page) if v["impact"] in ("serious", "critical")]
