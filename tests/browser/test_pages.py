"""Every page of every role: accessible (axe), no overflow or overlap, screenshots saved."""
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
    page.wait_for_load_state("networkidle")
    violations = run_axe(page)
    if violations:
        problems.append(f"{name}: axe {violations}")
    layout = layout_problems(page)
    if layout:
        problems.append(f"{name}: {layout}")
    screenshot(page, name)


@pytest.mark.parametrize("width,height", SIZES)
def test_login_page(open_session, live_server, width, height):
    session = open_session(None, width=width, height=height)
    session.goto("/login")
    problems = []
    check_page(session.page, f"{live_server.backend}-{width}x{height}-login", problems)
    assert problems == []


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("width,height", SIZES)
def test_every_page_of_a_role(open_session, live_server, role, width, height):
    session = open_session(ROLES[role], width=width, height=height)
    paths = nav_paths(session.page)
    assert paths, "the role has a navigation"
    problems = []
    for path in paths:
        response = session.goto(path)
        assert response.status == 200, path
        check_page(session.page, f"{live_server.backend}-{width}x{height}-{role}{path.replace('/', '_')}", problems)
    assert session.errors == []
    assert problems == []


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
