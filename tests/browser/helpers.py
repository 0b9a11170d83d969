"""What the browser tests share: the nurse's login, the bound on a live update, and the steps
of the dispatch story (post a request, place a bid) as a person takes them on the pages.

``nurse`` and ``ems`` are the sessions ``open_session`` (conftest) returns; every wait is
bounded by Playwright's timeouts.
"""
import re

NURSE = "nurse@altoona.medport.test"
LIVE = 10_000  # ms: a live update must arrive well within this


def wait_live(page):
    """Wait (at most ``LIVE`` ms) until the page's event stream is open."""
    page.wait_for_selector("#live-status[data-state=open]", timeout=LIVE)


def post_request(nurse, level="BLS", note="Story"):
    """Post a request through the nurse's new-request form; return (reference, public id)."""
    page = nurse.page
    nurse.goto("/hospital/requests/new")
    page.fill("#pickup_location", "4 West, room 412")
    page.select_option("#destination_facility", index=2)
    page.check(f"input[name=level_of_care][value={level}]")
    page.select_option("#age_group", "adult")
    page.select_option("#mobility", "stretcher")
    page.fill("#weight_kg", "82")
    page.check("input[name=invite_mode][value=all]")
    page.fill("#other_needs", note)
    page.click("button:has-text('Post request')")
    page.wait_for_url(re.compile(r"/hospital/requests/[0-9a-f-]{36}$"))
    reference = re.search(r"[A-Z]{3}-\d{6}-[A-Z0-9]{4}", page.title()).group(0)
    return reference, page.url.rsplit("/", 1)[1]


def place_bid(ems, reference, eta="17", unit_index=1):
    """From the EMS board, bid on the request ``reference`` with the unit at ``unit_index``."""
    page = ems.page
    page.click(f"text={reference}")
    page.wait_for_url(re.compile(r"/ems/requests/"))
    page.select_option("#unit", index=unit_index)  # 0 is "Choose a unit"
    page.fill("#eta_minutes", eta)
    page.click("button:has-text('Place bid')")
    page.wait_for_load_state()
    assert "Change bid" in page.content(), page.inner_text("main")[:600]
