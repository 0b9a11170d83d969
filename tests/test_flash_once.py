"""A confirmation is said once: shown by the page after the redirect, never by a later one.

The session lives in a signed cookie.  A response that writes the cookie back unchanged
(Flask's ``SESSION_REFRESH_EACH_REQUEST`` on a permanent session) echoes whatever the request
carried: a live panel refreshed while the browser follows a POST's redirect carries the
cookie holding the confirmation, and its answer, arriving after the page that showed the
confirmation, put it back for the next page.  Responses now write the cookie only when they
change the session.
"""
import re

from tests.helpers import AEMS, post_request, signed_in

COOKIE = "medport_session"
PLACED = "Bid placed:"


def _place_bid(app, client):
    public_id = post_request(app)
    page = client.get(f"/ems/requests/{public_id}").get_data(as_text=True)
    unit = re.findall(r'<option value="([0-9a-f-]{36})"', page)[0]
    response = client.post(f"/ems/requests/{public_id}/bid",
                           data={"unit": unit, "eta_minutes": "20", "note": ""})
    assert response.status_code == 302
    return public_id


def test_a_confirmation_shows_on_the_page_after_the_redirect_and_not_on_the_next(app, demo):
    client = signed_in(app, AEMS)
    public_id = _place_bid(app, client)
    assert PLACED in client.get(f"/ems/requests/{public_id}").get_data(as_text=True)
    assert PLACED not in client.get(f"/ems/requests/{public_id}").get_data(as_text=True)
    assert PLACED not in client.get("/ems/").get_data(as_text=True)


def test_a_panel_refreshed_during_the_redirect_does_not_bring_the_confirmation_back(app, demo):
    client = signed_in(app, AEMS)
    public_id = _place_bid(app, client)
    carried = client.get_cookie(COOKIE).value  # what a request sent during the redirect carries
    assert PLACED in client.get(f"/ems/requests/{public_id}").get_data(as_text=True)

    # The old page's live panel, sent with that cookie, answered after the new page.
    panel = app.test_client()
    panel.set_cookie(COOKIE, carried)
    answer = panel.get("/ems/board/panel", headers={"HX-Request": "true"})
    assert answer.status_code == 200
    written = [header for header in answer.headers.getlist("Set-Cookie") if header.startswith(COOKIE + "=")]
    for header in written:  # as the browser would: the answer's cookie replaces the page's
        client.set_cookie(COOKIE, header.split(";", 1)[0].split("=", 1)[1])
    assert PLACED not in client.get(f"/ems/requests/{public_id}").get_data(as_text=True)


def test_a_response_that_changes_nothing_writes_no_cookie(app, demo):
    client = signed_in(app, AEMS)
    client.get("/ems/")  # the session's snapshot is fresh from here on
    for path in ("/ems/", "/ems/board/panel", "/ems/trips/panel"):
        response = client.get(path)
        assert response.status_code == 200
        assert not [h for h in response.headers.getlist("Set-Cookie") if h.startswith(COOKIE + "=")], path
