"""Each role typing another role's URLs is refused; logout ends the live stream."""
import pytest

HOMES = {
    "nurse@altoona.medport.test": "/hospital/",
    "dispatch@altoonaems.medport.test": "/ems/",
    "crew2@altoonaems.medport.test": "/crew/",
    "coordinator@medport.test": "/center/",
}


@pytest.mark.parametrize("email", list(HOMES))
def test_other_roles_pages_are_refused(open_session, email):
    session = open_session(email)
    assert session.page.url.endswith(HOMES[email])
    for other_email, path in HOMES.items():
        if other_email == email:
            continue
        response = session.goto(path)
        assert response.status == 403, path
        assert "Not allowed" in session.page.inner_text("main")


def test_anonymous_is_sent_to_sign_in(open_session):
    session = open_session(None)
    session.goto("/center/")
    assert "/login" in session.page.url
    assert session.page.is_visible("#email")


def test_logout_ends_the_live_stream(open_session, live_server):
    session = open_session("coordinator@medport.test", fresh=True)
    page = session.page
    status = page.wait_for_selector("#live-status[data-state=open]", timeout=10_000)
    assert status is not None
    # Sign out in a second tab of the same browser context (same session cookie).
    other = session.context.new_page()
    other.goto(live_server.url + "/center/")
    other.click("text=Sign out")
    other.wait_for_url("**/login")
    # The old tab's stream is now refused: a fresh EventSource gets 401, never a stream.
    code = page.evaluate(
        "async () => (await fetch('/events', {headers: {'Accept': 'text/event-stream'}})).status")
    assert code == 401
