"""Every page of every role: accessible (axe), no overflow or overlap, screenshots saved.

Layout and accessibility do not depend on the database, so these run against the
embedded-default server only; the dispatch story runs on both databases.
"""
import pytest

from .conftest import layout_problems, run_axe, screenshot

ROLES = {
    "hospital": "nurse@altoona.medport.test",
    "ems": "dispatch@altoonaems.medport.test",
    "coordinator": "coordinator@medport.test",
    "admin": "admin@medport.test",
}
SIZES = [(1920, 1080), (1280, 800)]


def nav_paths(page):
    return page.eval_on_selector_all("nav[aria-label=Main] a", "links => links.map(a => a.getAttribute('href'))")


def check_page(page, name, problems):
    """axe once, then layout and a screenshot at each size, the page loaded at that size."""
    page.wait_for_load_state("networkidle")
    violations = run_axe(page)
    if violations:
        problems.append(f"{name}: axe {violations}")
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.reload()
        page.wait_for_load_state("networkidle")
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
