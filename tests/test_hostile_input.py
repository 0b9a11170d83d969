"""Hostile input: every form and query parameter, fed empty, huge, unicode, control
characters, NUL bytes, SQL and HTML fragments, wrong types and missing fields.

Never a 5xx; a refused form stores nothing (the databases are compared before
and after); what is stored comes back escaped.  Each form is submitted as the
browser would (its fields read from the page that shows it), with some values
replaced.  Generated values (hypothesis) run on SQLite; PostgreSQL gets a
fixed list of the values that trouble a server database (NUL bytes, numbers
out of range, oversized text).  Missing and forged CSRF tokens are refused on
every state-changing route, enumerated from the URL map.  Dates at the ends of the
calendar and numbers of hundreds of digits, in every field and query parameter
that takes a date or a number, are refused with 400 and a message on both databases.
"""
import io
import re
from html import unescape
from urllib.parse import quote, urlsplit

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.extensions import db
from dashboard.models.center import Agency, Hospital, User
from dashboard.models.hospital import HospitalFacility, TransportRequest
from tests.helpers import ACCESS, PageForms, award, build_world, close_world, place_bid, post_trip, snapshot

MISSING = object()  # the field is left out of the submission
FILE = object()  # a file upload where text is expected

NASTY = [
    "", " ", "\x00", "nul\x00byte", "x" * 5000, "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>', "'; DROP TABLE users; --", "' OR '1'='1", "%", "_", "\\",
    "{{ config }}", "𝕳𝖔𝖘𝖕𝖎𝖙𝖆𝖑 🚑", "\u202eevil", "\r\n\t\x0b\x0c", "\x1b[2J", "\ufeff",
    "-1", "0", "99999999999999999999999999", "-99999999999999999999", "1e309", "NaN", "inf",
    "²", "٣", "2026-13-45T25:61", "0000-00-00T00:00", "9999-12-31T23:59", "null", "[]", "true",
]
#: What a server database refuses to take: a NUL byte, a number past 64 bits, oversized text.
SERVER_NASTY = ["nul\x00byte", "9" * 30, "x" * 3000]

text_values = st.one_of(
    st.sampled_from(NASTY),
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=4),
    st.integers().map(str),
    st.floats().map(str),
)
field_values = st.one_of(text_values, st.just(MISSING), st.just(FILE),
                         st.lists(text_values, min_size=2, max_size=3))
GENERATED = settings(max_examples=25, deadline=None, database=None,
                     suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

#: name -> (role, page that shows the form, where it posts).  ``{key}`` is an id of the world.
FORMS = {
    "login": ("anonymous", "/login", "/login"),
    "change password": ("ems_y", "/account/password", "/account/password"),
    "new request": ("hospital_a", "/hospital/requests/new", "/hospital/requests/new"),
    "edit request": ("hospital_a", "/hospital/requests/{trip_edit}/edit", "/hospital/requests/{trip_edit}/edit"),
    "cancel request": ("hospital_a", "/hospital/requests/{trip_cancel}/cancel",
                       "/hospital/requests/{trip_cancel}/cancel"),
    "award": ("hospital_a", "/hospital/requests/{trip_a}", "/hospital/requests/{trip_a}/award"),
    "add preferred agency": ("hospital_a", "/hospital/preferences", "/hospital/preferences"),
    "preference notes": ("hospital_a", "/hospital/preferences", "/hospital/preferences/{pref_a}/notes"),
    "move preference": ("hospital_a", "/hospital/preferences", "/hospital/preferences/{pref_a}/move"),
    "place bid": ("ems_x", "/ems/requests/{trip_bid}", "/ems/requests/{trip_bid}/bid"),
    "change bid": ("ems_x", "/ems/requests/{trip_bids}", "/ems/bids/{bid_change}/change"),
    "withdraw bid": ("ems_x", "/ems/requests/{trip_bids}", "/ems/bids/{bid_change}/withdraw"),
    "advance trip": ("ems_x", "/ems/trips", "/ems/trips/{trip_x_awarded}/advance"),
    "hand back trip": ("ems_x", "/ems/trips", "/ems/trips/{trip_hand_back}/hand-back"),
    "crew tap": ("crew_x", "/crew/", "/crew/taps"),
    "add unit": ("ems_x", "/ems/units", "/ems/units"),
    "edit unit": ("ems_x", "/ems/units/{unit_x}/edit", "/ems/units/{unit_x}/edit"),
    "unit status": ("ems_x", "/ems/units", "/ems/units/{unit_x}/status"),
    "add availability": ("ems_x", "/ems/availability", "/ems/availability"),
    "remove availability": ("ems_x", "/ems/availability", "/ems/availability/remove"),
    "center award": ("coordinator", "/center/requests/{trip_b}", "/center/requests/{trip_b}/award"),
    "center assign": ("coordinator", "/center/requests/{trip_assign}", "/center/requests/{trip_assign}/assign"),
    "center extend": ("coordinator", "/center/requests/{trip_extend}", "/center/requests/{trip_extend}/extend"),
    "center reopen": ("coordinator", "/center/requests/{trip_reopen}", "/center/requests/{trip_reopen}/reopen"),
    "center cancel": ("coordinator", "/center/requests/{trip_center_cancel}",
                      "/center/requests/{trip_center_cancel}/cancel"),
    "new user": ("admin", "/center/users/new", "/center/users/new"),
    "edit user": ("admin", "/center/users/{user_bed}", "/center/users/{user_bed}"),
    "new hospital": ("admin", "/center/registry/hospitals/new", "/center/registry/hospitals/new"),
    "edit hospital": ("admin", "/center/registry/hospitals/{hospital_bed}",
                      "/center/registry/hospitals/{hospital_bed}"),
    "new facility": ("admin", "/center/registry/hospitals/{hospital_bed}/facilities/new",
                     "/center/registry/hospitals/{hospital_bed}/facilities/new"),
    "edit facility": ("admin", "/center/registry/facilities/{facility_bed}",
                      "/center/registry/facilities/{facility_bed}"),
    "new agency": ("admin", "/center/registry/agencies/new", "/center/registry/agencies/new"),
    "edit agency": ("admin", "/center/registry/agencies/{agency_cmt}", "/center/registry/agencies/{agency_cmt}"),
    "configuration": ("admin", "/center/config", "/center/config"),
    "alert settings": ("ems_x", "/alerts/settings", "/alerts/settings"),
    "alert defaults": ("admin", "/alerts/defaults/center/0", "/alerts/defaults/center/0"),
    "webhook": ("admin", "/alerts/webhooks", "/alerts/webhooks"),
    "new crew account": ("ems_x", "/ems/crew-accounts", "/ems/crew-accounts"),
}

#: What a user types into a form the page shows empty, so that a submission can be accepted.
#: (Forms that act once, like cancel or award, stay as shown: their checks are what is fed.)
TYPED = {
    "new request": {"destination_facility": "{facility_b}", "age_group": "adult", "weight_kg": "80"},
    "add preferred agency": {"agency": "{agency_y}"},
    "add unit": {"number": "Medic 99"},
    "add availability": {"unit": "{unit_x}"},
    "new user": {"email": "new.user@medport.test", "display_name": "New User", "role": "coordinator"},
    "new crew account": {"email": "new.crew@altoonaems.medport.test", "display_name": "New Medic"},
    "new hospital": {"name": "Hollidaysburg Hospital", "short_code": "HOL", "facility_address": "1 Main St"},
    "new facility": {"name": "Bedford Dialysis", "address": "2 Main St"},
    "new agency": {"name": "Ridge Ambulance", "short_code": "RDG", "levels": "BLS"},
}

#: (role, page, query parameters it reads)
QUERIES = [
    ("anonymous", "/login", ["next"]),
    ("hospital_a", "/hospital/", ["tab", "sort", "page", "q"]),
    ("hospital_a", "/hospital/requests/panel", ["tab", "sort", "page", "q"]),
    ("hospital_a", "/hospital/requests/new", ["repost"]),
    ("hospital_a", "/hospital/analytics", ["period", "start", "end", "hospital", "level", "urgency",
                                          "format", "table"]),
    ("ems_x", "/ems/", ["level", "urgency", "within", "sort", "page"]),
    ("ems_x", "/ems/board/panel", ["level", "urgency", "within", "sort", "page"]),
    ("ems_x", "/ems/trips", ["tab", "after"]),
    ("ems_x", "/ems/trips/panel", ["tab", "after"]),
    ("ems_x", "/ems/history", ["outcome", "after"]),
    ("ems_x", "/ems/availability", ["date"]),
    ("ems_x", "/ems/routes", ["date", "unit"]),
    ("ems_x", "/ems/analytics", ["period", "start", "end", "agency", "format", "table"]),
    ("coordinator", "/center/", ["hospital", "agency", "level", "urgency", "state", "risk", "sort", "page"]),
    ("coordinator", "/center/board/panel", ["hospital", "agency", "level", "urgency", "state", "risk", "sort",
                                            "page"]),
    ("coordinator", "/center/units", ["agency", "level", "status"]),
    ("coordinator", "/center/units/panel", ["agency", "level", "status"]),
    ("coordinator", "/center/audit", ["user", "action", "entity_type", "entity_id", "since", "until",
                                      "after"]),
    ("coordinator", "/center/audit/export.csv", ["user", "action", "entity_type", "entity_id", "since",
                                                 "until"]),
    ("coordinator", "/center/analytics", ["period", "start", "end", "hospital", "agency", "level",
                                          "urgency", "format", "table"]),
    ("admin", "/center/users", ["q", "role", "status", "after"]),
]


# --- the world of this module ---------------------------------------------------------------

def _more_objects():
    """Requests for each form to act on, and the organisations the registry forms edit."""
    trip_edit = post_trip("ALT", level="BLS")
    trip_cancel = post_trip("ALT", level="BLS")
    trip_bid = post_trip("ALT", level="ALS", invite_mode="preferred")
    # A unit free for the window, so the bid form has one to offer (it offers only those).
    from dashboard.models.ems import Unit

    aems = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
    db.session.add(Unit(agency_id=aems, number="Medic 90", level="ALS", status="available"))
    db.session.commit()
    trip_bids = post_trip("ALT", level="ALS", invite_mode="preferred")
    bid_change = place_bid(trip_bids, "AEMS", 30)
    trip_hand_back = post_trip("ALT", level="BLS")
    award(trip_hand_back, place_bid(trip_hand_back, "AEMS", 10))
    trip_reopen = post_trip("JVM", level="BLS")
    award(trip_reopen, place_bid(trip_reopen, "HCR", 20))
    center_trips = {name: post_trip("MNV", level="BLS")
                    for name in ("trip_assign", "trip_extend", "trip_center_cancel")}
    from dashboard.models.ems import TransportBid

    bed = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "BED"))

    def public(trip_id):
        return db.session.get(TransportRequest, trip_id).public_id

    return {
        "trip_edit": public(trip_edit), "trip_cancel": public(trip_cancel), "trip_bid": public(trip_bid),
        "trip_bids": public(trip_bids), "trip_reopen": public(trip_reopen),
        "trip_hand_back": public(trip_hand_back),
        **{name: public(trip_id) for name, trip_id in center_trips.items()},
        "bid_change": db.session.get(TransportBid, bid_change).public_id,
        "hospital_bed": bed.public_id,
        "facility_bed": db.session.scalar(sa.select(HospitalFacility.public_id)
                                          .where(HospitalFacility.hospital_id == bed.id).limit(1)),
        "agency_cmt": db.session.scalar(sa.select(Agency.public_id).where(Agency.short_code == "CMT")),
        "user_bed": db.session.scalar(sa.select(User.public_id)
                                      .where(User.email == "nurse@bedford.medport.test")),
    }


@pytest.fixture(scope="module")
def world(migrated_config):
    """The demo region, the scenario and this module's requests, seeded once per backend."""
    built = build_world(migrated_config, _more_objects)
    built.forms, built.fresh_forms, built.field_names, built.baseline = {}, set(), {}, {}
    yield built
    close_world(built)


@pytest.fixture(autouse=True)
def fresh_baseline(world):
    """What a refused submission is compared with is taken anew in each test."""
    world.baseline = {}


# --- forms as the browser submits them -------------------------------------------------------


def resolve(world, form_name):
    """(role, page, action) of a form, its ids filled in."""
    role, page, action = FORMS[form_name]
    return role, page.format(**world.ids), action.format(**world.ids)


def browser_fields(world, form_name):
    """The form's fields as its page shows them (read again after an accepted submission; as
    last seen once the page no longer offers the form, e.g. after a bid was placed)."""
    if form_name in world.fresh_forms:
        return world.forms[form_name]
    role, page, action = resolve(world, form_name)
    response = world.clients[role].get(page, buffered=True)
    parser = PageForms(page)
    parser.feed(response.get_data(as_text=True))
    found = [fields for form_action, fields in parser.forms if urlsplit(form_action).path == action]
    if found:
        typed = {name: value.format(**world.ids) for name, value in TYPED.get(form_name, {}).items()}
        world.forms[form_name] = [(n, v) for n, v in found[0] if n not in typed] + list(typed.items())
        world.fresh_forms.add(form_name)
    assert form_name in world.forms, f"{page} shows no form posting to {action} ({response.status_code})"
    return world.forms[form_name]


def submission(fields, changes):
    """The browser's fields with ``changes`` applied: a list is several values, MISSING drops
    the field, FILE sends a file, a new name is an extra field."""
    data = {}
    for name, value in fields:
        data.setdefault(name, []).append(value)
    for name, value in changes.items():
        if value is MISSING:
            data.pop(name, None)
        elif value is FILE:
            data[name] = (io.BytesIO(b"<script>alert(1)</script>\x00"), "payload.html")
        else:
            data[name] = value if isinstance(value, list) else [value]
    return data


def count_rows(app):
    """Rows per table of every silo (three statements): the cheap "nothing stored" check."""
    counts = {}
    with app.app_context():
        for key, metadata in db.metadatas.items():
            tables = metadata.sorted_tables
            query = sa.union_all(*[sa.select(sa.literal(t.name), sa.func.count()).select_from(t)
                                   for t in tables])
            with db.engines[key].connect() as conn:
                counts.update({(key, name): n for name, n in conn.execute(query)})
    return counts


def _raw_markup(values):
    """The submitted values that would be live markup if shown unescaped."""
    flat = []
    for value in values:
        flat.extend(value if isinstance(value, list) else [value])
    return [v for v in flat if isinstance(v, str) and "<" in v and len(v) > 1]


def assert_shown_escaped(world, role, response, values):
    """The answer, and the page a redirect leads to, show no submitted markup unescaped."""
    markup = _raw_markup(values)
    if not markup:
        return
    pages = [response]
    if response.status_code in (301, 302, 303) and response.headers["Location"].startswith("/"):
        pages.append(world.clients[role].get(response.headers["Location"], buffered=True))
    for page in pages:
        if page.mimetype == "text/html":
            body = page.get_data(as_text=True)
            for value in markup:
                assert value not in body, f"{value!r} shown unescaped on {page.request.path}"


def field_names(world, form_name):
    """The names a submission may change: the form's fields and one it does not have."""
    if form_name not in world.field_names:
        names = {name for name, _ in browser_fields(world, form_name) if name != "csrf_token"}
        world.field_names[form_name] = sorted(names | {"unexpected"})
    return world.field_names[form_name]


def submit(world, form_name, changes, compare=snapshot):
    """Submit the form with ``changes``; check the answer; return it.

    A refusal is compared with the state after the last submission (or taken now).
    """
    role, _page, action = resolve(world, form_name)
    data = submission(browser_fields(world, form_name), changes)
    before = world.baseline.get(compare) or compare(world.app)
    response = world.clients[role].post(action, data=data, buffered=True)
    context = f"{form_name}: {changes!r}"[:400]
    assert response.status_code < 500, context
    if form_name != "login":  # elsewhere 401/403 would mean the session was lost
        assert response.status_code not in (401, 403), context
    if response.status_code >= 400:
        after = compare(world.app)
        assert after == before, f"refused, yet something was stored: {context}"
        world.baseline[compare] = after
    else:
        world.fresh_forms.clear()  # what the pages show may have changed
        world.baseline.pop(compare, None)
        assert_shown_escaped(world, role, response, changes.values())
    return response


# --- forms ----------------------------------------------------------------------------------

@pytest.mark.parametrize("form_name", list(FORMS))
@GENERATED
@given(data=st.data())
def test_forms_survive_generated_values(world, backend, form_name, data):
    if backend != "sqlite":
        pytest.skip("generated values run on SQLite; PostgreSQL gets the fixed list")
    names = field_names(world, form_name)
    changes = data.draw(st.dictionaries(st.sampled_from(names), field_values, min_size=1, max_size=4))
    submit(world, form_name, changes)


@pytest.mark.parametrize("form_name", list(FORMS))
def test_forms_survive_values_a_server_database_refuses(world, backend, form_name):
    if backend == "sqlite":
        pytest.skip("on SQLite the generated values include these")
    names = [name for name in field_names(world, form_name) if name != "unexpected"]
    for name in names:
        for value in SERVER_NASTY:
            submit(world, form_name, {name: value}, compare=count_rows)
    submit(world, form_name, dict.fromkeys(names, FILE), compare=count_rows)


def test_stored_text_comes_back_escaped(world):
    """Notes, needs, a bid note, a unit number and a user's name, shown to each role that sees them."""
    script, attribute = "<script>alert('medport')</script>", '"><img src=x onerror=alert(1)>'
    hospital, ems, coordinator, admin = (world.clients[r] for r in ("hospital_a", "ems_x", "coordinator",
                                                                     "admin"))
    world.fresh_forms.discard("new request")  # the page as it is now (its window starts from now)
    fields = dict(browser_fields(world, "new request"))
    fields.update(notes=script, other_needs=attribute, pickup_location=script, level_of_care="BLS",
                  invite_mode="all", destination_facility=world.ids["facility_b"])
    posted = hospital.post("/hospital/requests/new", data=fields)
    assert posted.status_code == 302, re.findall(r'class="error">([^<]+)', posted.get_data(as_text=True))
    trip_page = posted.headers["Location"]
    public_id = trip_page.rsplit("/", 1)[1]
    escaped = "&lt;script&gt;alert(&#39;medport&#39;)&lt;/script&gt;"
    for client, url in ((hospital, trip_page), (ems, f"/ems/requests/{public_id}"),
                        (coordinator, f"/center/requests/{public_id}")):
        body = client.get(url).get_data(as_text=True)
        assert escaped in body and script not in body, url
        assert attribute not in body, url
    added = ems.post("/ems/units", data={"number": "<i>U1</i>", "level": "BLS"})
    assert added.status_code == 302
    units = ems.get("/ems/units").get_data(as_text=True)
    assert "&lt;i&gt;U1&lt;/i&gt;" in units and "<i>U1</i>" not in units
    # The bid goes out with that new unit: the agency's other units may be booked by now.
    bid_page = ems.get(f"/ems/requests/{public_id}").get_data(as_text=True)
    unit = re.search(r'<option value="([0-9a-f-]{36})">&lt;i&gt;U1&lt;/i&gt; \(BLS', bid_page).group(1)
    bid = ems.post(f"/ems/requests/{public_id}/bid", data={"unit": unit, "eta_minutes": "20",
                                                          "note": "<b>bold</b>"})
    assert bid.status_code == 302, re.findall(r'class="error">([^<]+)', bid.get_data(as_text=True))
    bids = hospital.get(f"/hospital/requests/{public_id}/bids").get_data(as_text=True)
    assert "&lt;b&gt;bold&lt;/b&gt;" in bids and "<b>bold</b>" not in bids
    created = admin.post("/center/users/new", data={"email": "hostile@medport.test",
                                                    "display_name": script, "role": "coordinator"})
    assert created.status_code == 201
    listing = admin.get("/center/users?q=hostile").get_data(as_text=True)
    assert escaped in listing and script not in listing


# --- query parameters and URL arguments ---------------------------------------------------------

def fetch(world, role, path, params):
    """GET with hostile query parameters; never a 5xx, nothing reflected unescaped."""
    response = world.clients[role].get(path, query_string=params, buffered=True)
    context = f"{role} {path} {params!r}"[:400]
    assert response.status_code < 500, context
    assert response.status_code not in (401, 403), context
    if response.mimetype == "text/html":
        body = response.get_data(as_text=True)
        for value in _raw_markup(params.values()):
            assert value not in body, context
    return response


@pytest.mark.parametrize("role,path,names", QUERIES, ids=[f"{r} {p}" for r, p, _ in QUERIES])
@GENERATED
@given(data=st.data())
def test_query_parameters_survive_generated_values(world, backend, role, path, names, data):
    if backend != "sqlite":
        pytest.skip("generated values run on SQLite; PostgreSQL gets the fixed list")
    values = st.one_of(text_values, st.lists(text_values, min_size=2, max_size=3))
    params = data.draw(st.dictionaries(st.sampled_from(names), values, min_size=1, max_size=4))
    fetch(world, role, path, params)


@pytest.mark.parametrize("role,path,names", QUERIES, ids=[f"{r} {p}" for r, p, _ in QUERIES])
def test_query_parameters_survive_values_a_server_database_refuses(world, backend, role, path, names):
    if backend == "sqlite":
        pytest.skip("on SQLite the generated values include these")
    for name in names:
        for value in SERVER_NASTY + ["²", "-1", "<script>alert(1)</script>"]:
            fetch(world, role, path, {name: value})


def test_the_event_stream_survives_a_hostile_last_event_id(world):
    client = world.clients["hospital_a"]
    for value in SERVER_NASTY + ["²", "-1", "1e9", " 7 "]:
        for kwargs in ({"query_string": {"last_event_id": value}},
                       {"headers": {"Last-Event-ID": value.replace("\x00", "")}}):
            response = client.get("/events", buffered=False, **kwargs)
            try:
                assert response.status_code in (200, 400), (value, kwargs)
                if response.status_code == 200:
                    assert next(iter(response.response)).startswith(b"retry:")
            finally:
                response.close()


def test_hostile_url_arguments_are_not_found(world):
    """Every route with an id in its URL, given ids that are no id at all: 404 (400 for a NUL,
    405 for a method the route lacks), never a 5xx, nothing changed."""
    roles = {"hospital": "hospital_a", "ems": "ems_x", "crew": "crew_x", "center": "coordinator",
             "admin": "admin", "signed-in": "hospital_a", "desk": "hospital_a", "public": "anonymous", "ems-admin": "ems_x",
             "org-admin": "hospital_a", "org-admin+admin": "ems_x", "org-admin+center": "hospital_a"}
    values = ["x" * 300, "nul\x00byte", "'; DROP TABLE users; --", "9" * 25, "-1", "²", "..", "%"]
    before = snapshot(world.app)
    for rule in world.app.url_map.iter_rules():
        if not rule.arguments or rule.endpoint == "static":
            continue
        client = world.clients[roles[ACCESS[rule.endpoint]]]
        for value in values:
            path = rule.rule
            for name in rule.arguments:
                path = re.sub(rf"<(?:[a-z]+:)?{name}>", quote(value, safe=""), path)
            allowed = (400,) if "\x00" in value else (404, 405)
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = client.open(path, method=method, buffered=True)
                assert response.status_code in allowed, (method, path, response.status_code)
    assert snapshot(world.app) == before


# --- CSRF ---------------------------------------------------------------------------------------

@pytest.fixture
def csrf_on(world):
    """CSRF protection on, as in production, for one test."""
    world.app.config["WTF_CSRF_ENABLED"] = True
    yield world
    world.app.config["WTF_CSRF_ENABLED"] = False


def test_every_state_changing_route_refuses_a_missing_or_forged_token(csrf_on):
    world = csrf_on
    roles = {"hospital": "hospital_a", "ems": "ems_x", "crew": "crew_x", "center": "coordinator",
             "admin": "admin", "signed-in": "hospital_a", "desk": "hospital_a", "public": "anonymous", "ems-admin": "ems_x",
             "org-admin": "hospital_a", "org-admin+admin": "ems_x", "org-admin+center": "hospital_a"}
    # A real token, but of another session: as good as forged.
    page = world.clients["hospital_b"].get("/hospital/").get_data(as_text=True)
    other_sessions_token = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
    posts = [rule for rule in world.app.url_map.iter_rules() if "POST" in rule.methods]
    assert len(posts) > 30
    before = snapshot(world.app)
    for rule in posts:
        client = world.clients[roles[ACCESS[rule.endpoint]]]
        url = world.url(rule.endpoint, rule)
        attempts = [
            {"data": {}},
            {"data": {"csrf_token": "forged"}},
            {"data": {"csrf_token": other_sessions_token}},
            {"data": {}, "headers": {"X-CSRFToken": "forged", "HX-Request": "true"}},
        ]
        for attempt in attempts:
            response = client.post(url, buffered=True, **attempt)
            assert response.status_code == 400, (url, attempt)
            assert b"security token" in response.data, url
    assert snapshot(world.app) == before


# --- dates at the ends of the calendar, numbers of hundreds of digits ---------------------------
#
# Each is refused with 400 and a message saying what is wrong (a form is shown again with its
# field's message), never a 5xx, and nothing is stored, on both databases, in every field and
# query parameter that takes a date, a time or a number; the other fields get them too and must
# not answer a 5xx.  Pager positions keep their documented tolerance (a number no pager shows
# is the first page), as do lists of fixed choices (a value not offered is no filter).

HUGE = "9" * 320
DATE_TIMES = ["9999-12-31T23:59", "0001-01-01T00:00", "9999-12-31", "0001-01-01"]
NUMBERS = [HUGE, "-" + HUGE, "1" + "0" * 400, "٣" * 320, "9_" * 200]
HOSTILE = DATE_TIMES + NUMBERS

#: form -> the fields that take a date, a time of day or a number.
TYPED_FIELDS = {
    "new request": ["window_start", "window_end", "weight_kg", "oxygen_lpm", "bid_deadline_minutes",
                    "invite_all_after_minutes"],
    "edit request": ["window_start", "window_end", "weight_kg", "oxygen_lpm", "version"],
    "cancel request": ["version"],
    "award": ["version"],
    "place bid": ["eta_minutes"],
    "change bid": ["eta_minutes"],
    "add unit": ["shift_start", "shift_end"],
    "edit unit": ["shift_start", "shift_end"],
    "add availability": ["starts_at", "ends_at"],
    "center award": ["version"],
    "center assign": ["assign-eta_minutes", "assign-agency", "assign-unit", "assign-version"],
    "center extend": ["extend-minutes", "extend-version"],
    "center reopen": ["reopen-version"],
    "center cancel": ["cancel-version"],
    "new user": ["hospital", "agency"],
    "edit user": ["hospital", "agency"],
    "new hospital": ["facility_lat", "facility_lon"],
    "new facility": ["lat", "lon"],
    "edit facility": ["lat", "lon"],
    "new agency": ["base_lat", "base_lon", "service_radius_km"],
    "edit agency": ["base_lat", "base_lon", "service_radius_km"],
    "configuration": "*",  # every setting is a number but the auto-award policy
}

#: (role, page, query parameters that take a date or a number)
TYPED_QUERIES = [
    ("hospital_a", "/hospital/analytics", ["start", "end"]),
    ("ems_x", "/ems/availability", ["date"]),
    ("ems_x", "/ems/routes", ["date"]),
    ("ems_x", "/ems/analytics", ["start", "end"]),
    ("coordinator", "/center/", ["hospital", "agency"]),
    ("coordinator", "/center/board/panel", ["hospital", "agency"]),
    ("coordinator", "/center/units", ["agency"]),
    ("coordinator", "/center/units/panel", ["agency"]),
    ("coordinator", "/center/audit", ["since", "until", "after"]),
    ("ems_x", "/ems/history", ["after"]),
    ("admin", "/center/users", ["after"]),
    ("coordinator", "/alerts/deliveries", ["after"]),
    ("coordinator", "/center/audit/export.csv", ["since", "until"]),
    ("coordinator", "/center/analytics", ["start", "end"]),
]
#: Pagers (a position no pager shows is the first page) and lists of fixed choices (a value not
#: offered is no filter): 200, or 400.
PAGER_QUERIES = [
    ("hospital_a", "/hospital/", ["page"]),
    ("hospital_a", "/hospital/requests/panel", ["page"]),
    # A cursor on the active tab, which is not paged, is ignored.
    ("ems_x", "/ems/trips", ["after"]),
    ("ems_x", "/ems/trips/panel", ["after"]),
    ("ems_x", "/ems/", ["page"]),
    ("ems_x", "/ems/board/panel", ["page"]),
    ("coordinator", "/center/", ["page"]),
    ("coordinator", "/center/board/panel", ["page"]),
    # Choices of a filter list: a value not offered is no filter.
    ("ems_x", "/ems/", ["within"]),
    ("ems_x", "/ems/board/panel", ["within"]),
]

_MESSAGE = re.compile(
    r'<span class="error">(.*?)</span>|role="alert"[^>]*>(.*?)</(?:div|p)>'
    r'|<section class="error-page">.*?<p>(.*?)</p>', re.S)
GENERIC = "The request could not be understood."


def messages(response):
    """The messages an answer shows: field errors, alerts, an error page's text, a text body."""
    body = response.get_data(as_text=True)
    if response.mimetype == "text/plain":
        return [body.strip()] if body.strip() else []
    found = [unescape(re.sub(r"<[^>]+>", "", "".join(groups))).strip() for groups in _MESSAGE.findall(body)]
    return [text for text in found if text and text != GENERIC]


def typed_fields(world, form_name):
    names = TYPED_FIELDS.get(form_name, [])
    if names == "*":
        names = [n for n in field_names(world, form_name) if n not in ("unexpected", "auto_award_policy")]
    return names


@pytest.mark.parametrize("form_name", list(FORMS))
def test_dates_and_numbers_in_forms_are_refused_with_a_message(world, backend, form_name):
    typed = set(typed_fields(world, form_name))
    for name in field_names(world, form_name):
        for value in HOSTILE:
            response = submit(world, form_name, {name: value}, compare=count_rows)
            if name in typed:
                context = f"{form_name}: {name}={value[:30]!r}"
                assert 400 <= response.status_code < 500, (context, response.status_code)
                assert messages(response), (context, response.get_data(as_text=True)[:2000])


@pytest.mark.parametrize("role,path,names", TYPED_QUERIES, ids=[f"{r} {p}" for r, p, _ in TYPED_QUERIES])
def test_dates_and_numbers_in_query_strings_are_refused_with_a_message(world, backend, role, path, names):
    extras = [{}, {"format": "csv", "table": "fill"}] if path.endswith("/analytics") else [{}]
    for name in names:
        for value in HOSTILE:
            for extra in extras:
                response = fetch(world, role, path, {name: value, **extra})
                context = f"{role} {path} {name}={value[:30]!r} {extra}"
                assert response.status_code == 400, (context, response.status_code)
                assert messages(response), (context, response.get_data(as_text=True)[:2000])


@pytest.mark.parametrize("role,path,names", PAGER_QUERIES, ids=[f"{r} {p}" for r, p, _ in PAGER_QUERIES])
def test_pager_positions_and_fixed_choices_of_any_size_are_never_an_error(world, backend, role, path, names):
    for name in names:
        for value in HOSTILE:
            response = fetch(world, role, path, {name: value})
            assert response.status_code in (200, 400), (role, path, name, value[:30])
