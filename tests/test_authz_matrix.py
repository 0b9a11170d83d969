"""Who may do what: every route of the app, for every role, with every method it allows.

The expected outcome is written down once, in ``ACCESS`` (endpoint -> who may
use it).  The routes come from ``app.url_map``: a new route without a line in
the table fails here.  URL ids name objects of hospital A (Altoona) and
agency X (Altoona EMS), so hospital B (Mount Nittany) and agency Y
(Huntingdon County Rescue, BLS only) must find them missing (404), while A
and X use them.

Outcomes: anonymous and a deactivated user's session are sent to sign in
(302 to /login; 401 with ``HX-Redirect`` for htmx, 401 for the event stream);
a signed-in user of another role gets 403; another organisation's object
404.  ``ORG_ADMINS`` are the roles whose user is marked as their organisation's
administrator (hospital A's nurse and agency X's dispatcher); the other hospital and
EMS users are not, so the organisation administrators' pages refuse them (403).  The demo region is seeded once per backend for the whole module: GETs
read, and every POST here must be refused without changing anything (the
databases are compared before and after).  The owner's POST sends an
incomplete form, which must be refused too (400 unless ``OWNER_POST`` says).
"""
import pytest

from dashboard import create_app
from tests.helpers import (
    ACCESS,
    ENDPOINT_PARAMS,
    build_world,
    close_world,
    snapshot,
)

ROLES = ("anonymous", "hospital_a", "hospital_b", "ems_x", "ems_y", "crew_x", "coordinator", "admin",
         "deactivated")
SIGNED_OUT = {"anonymous", "deactivated"}
SIGNED_IN = set(ROLES) - SIGNED_OUT

#: Who may use each group of endpoints.
WHO = {
    "public": set(ROLES),
    "signed-in": SIGNED_IN,
    "desk": SIGNED_IN - {"crew_x"},  # every signed-in role but crews (their one page is /crew/)
    "hospital": {"hospital_a", "hospital_b"},
    "ems": {"ems_x", "ems_y"},
    "crew": {"crew_x"},
    "center": {"coordinator", "admin"},
    "admin": {"admin"},
    # organisation administrators: agency X's runs its crew accounts; both theirs and the
    # center administrator run alert defaults and webhooks; the center also sees deliveries
    "ems-admin": {"ems_x"},
    "org-admin": {"hospital_a", "ems_x"},
    "org-admin+admin": {"hospital_a", "ems_x", "admin"},
    "org-admin+center": {"hospital_a", "ems_x", "coordinator", "admin"},
}
#: For a URL naming hospital A's / agency X's object: the other organisation of that role
#: (the alert defaults' URL names agency X: hospital A's administrator must not find it).
OTHER_ORGANISATION = {"hospital": "hospital_b", "ems": "ems_y", "org-admin+admin": "hospital_a"}


#: GETs that do not answer 200: (signed out, signed in); both send on to a page.
REDIRECTING_GET = {"auth.index": (302, 302), "auth.login": (200, 302)}
#: What the owner gets for a POST of an incomplete form when it is not 400.
OWNER_POST = {
    "ems.withdraw_bid": 409,  # the bid named was accepted: no longer live
    "ems.remove_availability": 404,  # no window named
    "alerts.open_alert": 404,  # a request's id names no alert of the user's
    "alerts.acknowledge": 404,  # nor an escalation
    "alerts.remove_webhook": 404,  # nor an endpoint
    "alerts.replay_delivery": 404,  # nor a parked delivery
}
#: Actions that need no field: an owner's POST would act, so only the refusals are checked here
#: (each blueprint's tests do the action itself).
ACTS_WITHOUT_FIELDS = {"auth.logout", "crew.end_shift", "hospital.remove_preference", "hospital.preference_notes",
                       "hospital.patient_ready",
                       "center.user_reset_password", "center.retry_parked", "alerts.read_all",
                       "alerts.reset_settings", "alerts.settings", "alerts.defaults", "alerts.own_defaults",
                       "ems.crew_account_reset_password"}
#: Required fields sent empty (an edit form that misses a field keeps its stored value).
INCOMPLETE_FORM = {"name": "", "number": ""}


def _route_cases():
    """(endpoint, rule, method) for every rule of the app's URL map."""
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": "sqlite://",
                      "MEDPORT_INPROCESS_RELAY": False, "MEDPORT_SIGNAL_BACKEND": "local",
                      "SQLALCHEMY_BINDS": {"hospital": {"url": "sqlite://"}, "ems": {"url": "sqlite://"}}})
    cases = []
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: (r.rule, r.endpoint)):
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            cases.append(pytest.param(rule.endpoint, rule.rule, method,
                                      id=f"{method} {rule.endpoint}"))
    return cases


ROUTE_CASES = _route_cases()


# --- the region, seeded once per backend ----------------------------------------------------


@pytest.fixture(scope="module")
def world(migrated_config):
    """The region of this module, seeded once per backend."""
    built = build_world(migrated_config)
    yield built
    close_world(built)


# --- the matrix ---------------------------------------------------------------------------------

def expected(endpoint, method, role, names_object):
    """The status ``role`` must get (``"login"`` for the sign-in redirect)."""
    who = ACCESS[endpoint]
    if role in SIGNED_OUT and who != "public":
        return 401 if endpoint == "events.stream" else "login"
    if role not in WHO[who]:
        return 403
    if names_object and OTHER_ORGANISATION.get(who) == role:
        return 404
    if method == "GET":
        if endpoint in REDIRECTING_GET:
            return REDIRECTING_GET[endpoint][role in SIGNED_IN]
        return 200
    return OWNER_POST.get(endpoint, 400)


def request_as(world, role, method, url, **kwargs):
    """One request, its body read at once (a streamed export left unread would keep its
    request context pushed into the next request of the test client)."""
    client = world.clients[role]
    if method == "GET":
        return client.get(url, buffered=True, **kwargs)
    return client.post(url, data=INCOMPLETE_FORM, buffered=True, **kwargs)


def check(response, want, context):
    """The response is ``want``: a status, or ``"login"`` for the redirect to sign in."""
    if want == "login":
        assert response.status_code == 302, context
        assert response.headers["Location"].startswith("/login"), context
    else:
        assert response.status_code == want, (context, response.get_data(as_text=True)[:300])


def check_stream(world, role, url):
    """The event stream: open it, read its first line, close it."""
    response = world.clients[role].get(url, buffered=False)
    try:
        want = expected("events.stream", "GET", role, False)
        assert response.status_code == want, role
        if want == 200:
            assert response.mimetype == "text/event-stream"
            assert next(iter(response.response)).startswith(b"retry:")
    finally:
        response.close()


@pytest.mark.parametrize("endpoint,path,method", ROUTE_CASES)
def test_every_route_answers_each_role_as_the_table_says(world, endpoint, path, method):
    assert endpoint in ACCESS, f"{method} {path} ({endpoint}) has no line in ACCESS"
    rule = next(r for r in world.app.url_map.iter_rules() if r.endpoint == endpoint and r.rule == path)
    url = world.url(endpoint, rule)
    names_object = bool(rule.arguments)
    if endpoint == "events.stream":
        for role in ROLES:
            check_stream(world, role, url)
        return
    before = snapshot(world.app) if method == "POST" else None
    for role in ROLES:
        want = expected(endpoint, method, role, names_object)
        if method == "POST" and endpoint in ACTS_WITHOUT_FIELDS and want not in (403, 404, "login"):
            continue
        response = request_as(world, role, method, url)
        check(response, want, f"{role} {method} {url}")
        if response.status_code == 200 and role in world.markers:
            body = response.get_data(as_text=True)
            leaked = [m for m in world.markers[role] if m in body]
            assert not leaked, f"{role} {method} {url} shows another organisation's ids {leaked[:3]}"
        if want == "login" and method == "GET":
            htmx = request_as(world, role, method, url, headers={"HX-Request": "true"})
            assert htmx.status_code == 401, f"{role} htmx {url}"
            assert htmx.headers["HX-Redirect"].startswith("/login")
    if before is not None:
        assert snapshot(world.app) == before, f"a refused POST {url} changed something"


def test_the_table_names_only_existing_routes(world):
    endpoints = {rule.endpoint for rule in world.app.url_map.iter_rules()}
    assert set(ACCESS) <= endpoints, set(ACCESS) - endpoints
    assert set(ENDPOINT_PARAMS) <= endpoints and ACTS_WITHOUT_FIELDS <= endpoints


# --- ids carried in the query or the form ---------------------------------------------------

def test_another_organisations_ids_in_the_query_are_not_found(world):
    ids, clients = world.ids, world.clients
    cases = [
        ("hospital_a", f"/hospital/analytics?hospital={ids['hospital_b']}"),
        ("ems_x", f"/ems/analytics?agency={ids['agency_y']}"),
        ("ems_y", f"/ems/routes?unit={ids['unit_x']}"),
        ("hospital_b", f"/hospital/requests/new?repost={ids['trip_a']}"),
        ("ems_y", f"/ems/requests/{ids['trip_x_awarded']}"),
    ]
    for role, url in cases:
        assert clients[role].get(url).status_code == 404, (role, url)
    # The organisation's own ids in the same places are fine.
    assert clients["hospital_a"].get(f"/hospital/analytics?hospital={ids['hospital_a']}").status_code == 200
    assert clients["ems_x"].get(f"/ems/routes?unit={ids['unit_x']}").status_code == 200


def test_another_organisations_ids_in_a_form_change_nothing(world):
    ids, clients = world.ids, world.clients
    before = snapshot(world.app)
    # Agency Y removing agency X's availability window.
    response = clients["ems_y"].post("/ems/availability/remove", data={"window_id": ids["window_x"]})
    assert response.status_code == 404
    # Hospital A awarding its request to a bid on hospital B's request.
    response = clients["hospital_a"].post(f"/hospital/requests/{ids['trip_a']}/award",
                                          data={"bid": ids["bid_on_b"], "version": "1"})
    assert response.status_code == 404
    # Hospital B re-posting hospital A's request.
    response = clients["hospital_b"].post("/hospital/requests/new", data={"reposted_from": ids["trip_a"]})
    assert response.status_code == 404
    # Agency X bidding with agency Y's unit; adding a window to it.
    response = clients["ems_x"].post(f"/ems/requests/{ids['trip_a']}/bid",
                                     data={"unit": ids["unit_y"], "eta_minutes": "20"})
    assert response.status_code in (400, 404, 409)
    response = clients["ems_x"].post("/ems/availability", data={
        "unit": ids["unit_y"], "kind": "on_break", "starts_at": "2030-01-01T10:00",
        "ends_at": "2030-01-01T11:00"})
    assert response.status_code in (400, 404)
    # Hospital A posting a request from hospital B's facility.
    response = clients["hospital_a"].post("/hospital/requests/new", data={
        "origin_facility": ids["facility_b"], "pickup_location": "ED bay 3",
        "destination_facility": ids["facility_a"]})
    assert response.status_code == 400
    assert snapshot(world.app) == before


def test_the_event_stream_replays_only_the_viewers_own_signals(world):
    """Reconnecting from the start (``Last-Event-ID: 0``) replays nothing of another organisation."""
    trip_a, unit_x = world.ids["trip_a"], world.ids["unit_x"]
    bid_x = world.ids["bid_x_live"]
    seen = {}
    for role in ("hospital_a", "hospital_b", "ems_x", "ems_y"):
        response = world.clients[role].get("/events", headers={"Last-Event-ID": "0"}, buffered=False)
        text = ""
        try:
            for _, chunk in zip(range(3), response.response, strict=False):
                text += chunk.decode()
                if "keep-alive" in text:
                    break
        finally:
            response.close()
        seen[role] = text
    assert f"data: {trip_a}" in seen["hospital_a"] and f"data: {bid_x}" in seen["ems_x"]
    assert trip_a not in seen["hospital_b"]
    assert bid_x not in seen["ems_y"] and unit_x not in seen["ems_y"]
