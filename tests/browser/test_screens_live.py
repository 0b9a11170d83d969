"""What the screens say stays true without a reload: clocks move on a fake clock with no event
arriving, and the EMS request page follows the request live (awarded elsewhere, cancelled).

Waits are bounded (Playwright's timeouts); the browser's clock is Playwright's fake clock, so
no test waits for real minutes to pass.
"""
import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.sync_api import expect

from dashboard.templating import format_duration

from .conftest import wait_for
from .helpers import LIVE, place_bid, post_request, wait_live

NURSE = "nurse@altoona.medport.test"
ALTOONA = "dispatch@altoonaems.medport.test"
CAMBRIA = "dispatch@cambriamedical.medport.test"


def expected_text(clock, now):
    """What ``static/medport.js`` must show for a ``<time data-relative>`` at ``now`` (aware UTC):
    the server's wording, :func:`dashboard.templating.format_duration`."""
    at = datetime.fromisoformat(clock.get_attribute("datetime").replace("Z", "+00:00"))
    seconds = int((now - at).total_seconds())
    text = "in " + format_duration(-seconds) if seconds < 0 else format_duration(seconds)
    if seconds >= 0 and clock.get_attribute("data-relative") == "ago":
        text += " ago"
    return text


def _no_events(page):
    """The page's event stream is refused: nothing the page shows can change by an event."""
    page.route(re.compile(r"/events/"), lambda route: route.abort())


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_countdowns_and_ages_move_with_the_clock_and_no_event(open_session, live_server):
    nurse, ems = open_session(NURSE), open_session(ALTOONA)
    start = datetime.now(UTC).replace(microsecond=0)
    for session in (nurse, ems):
        session.page.clock.install(time=start)
    reference, _public_id = post_request(nurse, note="Clocks")
    _no_events(ems.page)
    ems.goto("/ems/")
    row = ems.page.locator("#board-panel tr", has_text=reference)
    row.wait_for()
    ems.page.wait_for_load_state("networkidle")
    _no_events(nurse.page)
    nurse.page.reload()
    nurse.page.wait_for_load_state("networkidle")

    paused = start + timedelta(minutes=3)
    later = paused + timedelta(minutes=10)
    watched = {
        "EMS posted": row.locator("time[data-relative]").first,
        "EMS bidding closes": row.locator("time[data-relative]").last,
        "hospital bidding closes": nurse.page.locator("main time[data-relative]").first,
    }
    for session in (nurse, ems):
        session.page.clock.pause_at(paused)
    before = {}
    for name, clock in watched.items():
        clock.evaluate("element => { element.dataset.probe = 'kept'; }")  # gone if re-rendered
        before[name] = clock.inner_text()
    for session in (nurse, ems):
        session.page.clock.fast_forward("10:00")
    for name, clock in watched.items():
        text = expected_text(clock, later)
        assert text != before[name], name
        expect(clock, name).to_have_text(text, timeout=5_000)
        assert clock.evaluate("element => element.dataset.probe") == "kept", f"{name} was re-rendered"
    assert watched["EMS posted"].inner_text().endswith(" ago")
    assert watched["EMS bidding closes"].inner_text().startswith("in ")
    assert nurse.errors == [] and ems.errors == []


def test_the_ems_request_page_shows_an_award_elsewhere_and_a_cancellation_live(open_session, live_server):
    nurse, altoona, cambria = open_session(NURSE), open_session(ALTOONA), open_session(CAMBRIA)
    for session in (nurse, altoona, cambria):
        session.page.on("dialog", lambda dialog: dialog.accept())

    reference, _public_id = post_request(nurse, note="Awarded elsewhere")
    for dispatcher in (cambria, altoona):
        dispatcher.goto("/ems/")
        dispatcher.page.locator(f"text={reference}").wait_for(timeout=LIVE)
        place_bid(dispatcher, reference, eta="20")
    page = altoona.page
    wait_live(page)
    page.evaluate("() => { window.stillThisPage = true; }")  # a reload would drop it
    expect(page.locator("#request-panel")).to_contain_text("Open for bids.")

    wait_live(nurse.page)
    award = nurse.page.locator("tr", has_text="Cambria Medical Transport").locator("button:has-text('Award')")
    award.wait_for(timeout=LIVE)
    award.click()
    expect(page.locator("#request-panel .request-state")).to_contain_text("Awarded to another agency.", timeout=LIVE)
    expect(page.locator("#bid")).to_contain_text("awarded to another agency")
    expect(page.locator("#bid button:has-text('Change bid')")).to_have_count(0)
    assert page.evaluate("() => window.stillThisPage === true"), "the page was reloaded"

    reference, public_id = post_request(nurse, note="Cancelled later")
    altoona.goto("/ems/")
    page.locator(f"text={reference}").wait_for(timeout=LIVE)
    place_bid(altoona, reference, eta="25", unit_index=1)
    wait_live(page)
    page.evaluate("() => { window.stillThisPage = true; }")
    nurse.goto(f"/hospital/requests/{public_id}/cancel")
    nurse.page.check("input[name=reason][value=not_needed]")
    nurse.page.click("button:has-text('Cancel request')")
    expect(page.locator("#request-panel .request-state")).to_contain_text("Cancelled by the hospital.", timeout=LIVE)
    expect(page.locator("#bid form")).to_have_count(0)
    assert page.evaluate("() => window.stillThisPage === true"), "the page was reloaded"
    assert nurse.errors == [] and altoona.errors == [] and cambria.errors == []


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_crew_late_flag_appears_when_the_window_starts_with_no_event(open_session, live_server):
    nurse, crew = open_session(NURSE), open_session(ALTOONA)
    nurse.page.on("dialog", lambda dialog: dialog.accept())
    crew.page.clock.install(time=datetime.now(UTC))
    reference, public_id = post_request(nurse, note="Late crew")
    crew.goto("/ems/")
    crew.page.locator(f"text={reference}").wait_for(timeout=LIVE)
    place_bid(crew, reference, eta="20")
    award = nurse.page.locator("#request-bids button", has_text="Award")
    award.wait_for(timeout=LIVE)
    award.click()
    nurse.page.locator("#request-bids", has_text="Awarded").wait_for(timeout=LIVE)
    wait_for("the crew's stop", lambda: live_server.query(
        "ems", "SELECT 1 FROM ems_routes WHERE trip_public_id = :p AND status = 'planned'", p=public_id))

    _no_events(crew.page)
    crew.goto("/ems/trips")
    badge = crew.page.locator("li.trip-card", has_text=reference).locator(".badge.late")
    expect(badge).to_be_hidden()
    crew.page.wait_for_load_state("networkidle")
    badge.evaluate("element => { element.dataset.probe = 'kept'; }")
    due = datetime.fromisoformat(badge.get_attribute("data-late-from").replace("Z", "+00:00"))
    browser_now = crew.page.evaluate("() => Date.now()")
    crew.page.clock.fast_forward(int(due.timestamp() * 1000 - browser_now) + 60_000)
    expect(badge).to_be_visible(timeout=5_000)
    expect(badge).to_contain_text("Late: not en route")
    assert badge.evaluate("element => element.dataset.probe") == "kept", "the card was re-rendered"
    assert nurse.errors == [] and crew.errors == []


COUNT_REFRESHES = """panel => { window.refreshes = 0;
  document.addEventListener('htmx:beforeSwap', e => { if (e.detail.target.id === panel) window.refreshes++; }); }"""


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_a_live_refresh_waits_while_a_form_of_the_panel_is_in_use(open_session, live_server):
    """A unit's new status chosen but not yet set survives live refreshes of the units panel:
    the refresh is held with a note, shown once the choice is put back and the field left, or
    at once with "Show it now" (which drops the choice)."""
    nurse, altoona = open_session(NURSE), open_session(ALTOONA)
    altoona.goto("/ems/units")
    page = altoona.page
    wait_live(page)
    page.evaluate(COUNT_REFRESHES, "units-panel")
    status = page.locator("#units-panel select[name=status]").first
    shown = status.input_value()
    other = next(value for value in status.locator("option").evaluate_all("os => os.map(o => o.value)")
                 if value != shown)
    held = page.locator("#units-panel .refresh-held")

    status.select_option(other)
    post_request(nurse, note="Refresh one")  # a live signal for every EMS page
    held.wait_for(timeout=LIVE)
    assert page.evaluate("window.refreshes") >= 1
    assert status.input_value() == other, "the live refresh undid the chosen status"
    expect(held).to_contain_text("Newer information is waiting")

    held.locator("button:has-text('Show it now')").click()
    expect(held).to_have_count(0, timeout=LIVE)
    status = page.locator("#units-panel select[name=status]").first
    assert status.input_value() == shown  # the panel as the server shows it now

    status.select_option(other)
    post_request(nurse, note="Refresh two")
    held.wait_for(timeout=LIVE)
    before = page.evaluate("window.refreshes")
    status.select_option(shown)  # put back as the page showed it, then the field is left
    page.locator("h1").click()
    expect(held).to_have_count(0, timeout=LIVE)
    page.wait_for_function("n => window.refreshes > n", arg=before, timeout=LIVE)
    assert nurse.errors == [] and altoona.errors == []
