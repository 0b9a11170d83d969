"""Every page of every role: accessible (axe), no overflow or overlap, screenshots saved.

Layout and accessibility do not depend on the database, so these run against the
embedded-default server only; the dispatch story runs on both databases.
"""
import pytest

from .conftest import layout_problems, run_axe, screenshot
from .helpers import post_request

ROLES = {
    "hospital": "nurse@altoona.medport.test",
    "ems": "dispatch@altoonaems.medport.test",
    "crew": "crew2@altoonaems.medport.test",  # before the shift: the choice of the unit
    "coordinator": "coordinator@medport.test",
    "admin": "admin@medport.test",
}
SIZES = [(1920, 1080), (1280, 800)]  # the last is the size every session opens at
# Resolves once the browser has laid out and painted the page at its new size.
NEXT_FRAME = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"


def nav_paths(page):
    return page.eval_on_selector_all("nav[aria-label=Main] a", "links => links.map(a => a.getAttribute('href'))")


def check_page(page, name, problems):
    """axe once, then layout and a screenshot at each size (the window resized, as a user would)."""
    page.wait_for_load_state("networkidle")
    violations = run_axe(page)
    if violations:
        problems.append(f"{name}: axe {violations}")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.evaluate(NEXT_FRAME)
        layout = layout_problems(page)
        if layout:
            problems.append(f"{name} at {width}x{height}: {layout}")
        screenshot(page, f"{width}x{height}-{name}")


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_login_page(open_session, live_server):
    session = open_session(None)
    session.goto("/login")
    problems = []
    check_page(session.page, "login", problems)
    assert problems == []


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("role", list(ROLES))
def test_every_page_of_a_role(open_session, live_server, role):
    session = open_session(ROLES[role])
    paths = nav_paths(session.page)
    assert paths, "the role has a navigation"
    problems = []
    for path in paths:
        response = session.goto(path)
        assert response.status == 200, path
        check_page(session.page, f"{role}{path.replace('/', '_')}", problems)
    assert session.errors == []
    assert problems == []


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_login_form_works_by_keyboard_alone(open_session, live_server):
    session = open_session(None)
    page = session.page
    session.goto("/login")
    page.keyboard.press("Tab")  # skip link
    page.keyboard.press("Tab")  # brand
    focused = page.evaluate("document.activeElement.id")
    if focused != "email":
        page.focus("#email")
    page.keyboard.type(ROLES["hospital"])
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "password"
    page.keyboard.type("medport-demo")
    page.keyboard.press("Enter")
    page.wait_for_url("**/hospital/")


def first_href(page, selector):
    """The first link matching ``selector`` on the current page (panels loaded)."""
    page.wait_for_load_state("networkidle")
    link = page.locator(selector).first
    link.wait_for()
    return link.get_attribute("href")


def trip_path(server, prefix, where):
    order = "" if "ORDER BY" in where else " ORDER BY id"
    rows = server.query("hospital", f"SELECT public_id FROM transport_requests WHERE {where}{order} LIMIT 1")
    assert rows, where
    return f"{prefix}{rows[0][0]}"


def pages_outside_navigation(role, session, server):
    """(name, path, expected status) of the detail, form and error pages a role reaches."""
    page = session.page
    if role == "hospital":
        (own,), = server.query("center", "SELECT hospital_id FROM users WHERE email = :e", e=ROLES[role])
        _reference, public_id = post_request(session, note="Page check")
        detail = f"/hospital/requests/{public_id}"
        awarded = trip_path(server, "/hospital/requests/", f"status = 'completed' AND hospital_id = {int(own)}")
        return [("request", detail, 200), ("request-completed", awarded, 200),
                ("new-request", "/hospital/requests/new", 200),
                ("edit-request", detail + "/edit", 200), ("cancel-request", detail + "/cancel", 200),
                ("analytics-filtered", "/hospital/analytics?period=30d&level=BLS&urgency=routine", 200),
                ("change-password", "/account/password", 200),
                ("forbidden", "/center/", 403), ("not-found", "/hospital/requests/no-such-request", 404)]
    if role == "ems":
        session.goto("/ems/")
        detail = first_href(page, "#board-panel a[href*='/ems/requests/']")
        session.goto("/ems/units")
        unit = first_href(page, "#units-panel a[href$='/edit']")
        return [("request", detail, 200), ("unit-edit", unit, 200),
                ("trips-completed", "/ems/trips?tab=completed", 200),
                ("analytics-filtered", "/ems/analytics?period=30d&level=ALS", 200),
                ("forbidden", "/hospital/", 403), ("not-found", "/ems/units/no-such-unit/edit", 404)]
    if role == "crew":
        return [("change-password", "/account/password", 200), ("forbidden", "/ems/", 403)]
    if role == "coordinator":
        return [("request-open", trip_path(server, "/center/requests/", "status = 'open'"), 200),
                ("request-awarded", trip_path(server, "/center/requests/", "status = 'awarded'"), 200),
                ("request-completed", trip_path(server, "/center/requests/", "status = 'completed'"), 200),
                ("analytics-filtered", "/center/analytics?period=30d&level=ALS&urgency=urgent", 200),
                ("analytics-bad-filter", "/center/analytics?period=custom&start=2026-13-40", 400),
                ("forbidden", "/center/users", 403), ("not-found", "/center/requests/no-such-request", 404)]
    session.goto("/center/users")
    user = first_href(page, "main table a[href*='/center/users/']")
    session.goto("/center/registry")
    hospital = first_href(page, "main a[href*='/registry/hospitals/']:not([href$='/new']):not([href*='/facilities'])")
    facility = first_href(page, "main a[href*='/registry/facilities/']")
    facility_new = first_href(page, "main a[href$='/facilities/new']")
    agency = first_href(page, "main a[href*='/registry/agencies/']:not([href$='/new'])")
    return [("user-new", "/center/users/new", 200), ("user-edit", user, 200),
            ("hospital-new", "/center/registry/hospitals/new", 200), ("hospital-edit", hospital, 200),
            ("facility-new", facility_new, 200), ("facility-edit", facility, 200),
            ("agency-new", "/center/registry/agencies/new", 200), ("agency-edit", agency, 200),
            ("forbidden", "/hospital/", 403), ("not-found", "/center/users/no-such-user", 404)]


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
@pytest.mark.parametrize("role", list(ROLES))
def test_pages_outside_the_navigation(open_session, live_server, role):
    session = open_session(ROLES[role])
    problems = []
    for name, path, status in pages_outside_navigation(role, session, live_server):
        response = session.goto(path)
        assert response.status == status, (name, path, response.status)
        check_page(session.page, f"{role}-{name}", problems)
    assert session.errors == []
    assert problems == []


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_forms_showing_their_errors(open_session, live_server):
    """A refused form (errors beside the fields, a summary) is as accessible as a fresh one."""
    session = open_session(ROLES["ems"])
    page = session.page
    session.goto("/ems/units")
    page.fill("#number", "")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("button:has-text('Add unit')")
    assert posted.value.status == 400
    page.wait_for_load_state()
    assert page.locator("#number[aria-invalid=true]").count() == 1
    problems = []
    violations = run_axe(page)
    if violations:
        problems.append(f"unit form with errors: axe {violations}")
    layout = layout_problems(page)
    if layout:
        problems.append(f"unit form with errors: {layout}")
    screenshot(page, "1280x800-ems-unit-form-errors")
    assert problems == []


@pytest.mark.parametrize("live_server", ["sqlite"], indirect=True)
def test_the_request_form_refusing_a_need_above_the_level(open_session, live_server):
    """A ventilator on BLS: refused on its field (as accessible as a fresh form), then posted with
    the override and its reason, and marked on the request page."""
    session = open_session(ROLES["hospital"])
    page = session.page
    session.goto("/hospital/requests/new")
    page.fill("#pickup_location", "ICU bed 7")
    page.select_option("#destination_facility", index=2)
    page.check("input[name=level_of_care][value=BLS]")
    page.select_option("#age_group", "adult")
    page.fill("#weight_kg", "82")
    page.check("input[name=invite_mode][value=all]")
    page.check("#ventilator")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.click("button:has-text('Post request')")
    assert posted.value.status == 400
    page.wait_for_load_state()
    assert page.locator("#ventilator-msg .error").inner_text().startswith(
        "A ventilator needs CCT or higher; this request is BLS.")
    problems = []
    check_page(page, "hospital-new-request-care-refused", problems)
    assert problems == []
    page.check("#care_override")
    page.fill("#care_override_reason", "Respiratory therapist rides along")
    page.click("button:has-text('Post request')")
    page.wait_for_url(lambda url: "/hospital/requests/new" not in url)
    assert "Level override" in page.inner_text("main")
    assert session.errors == []
