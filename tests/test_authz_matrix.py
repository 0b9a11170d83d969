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
import sqlalchemy as sa
from flask import url_for

from dashboard import create_app
from dashboard.extensions import db
from dashboard.models.center import Agency, Hospital, User
from dashboard.models.ems import EmsRoute, TransportBid, Unit, UnitAvailability
from dashboard.models.hospital import (
    HospitalAgencyPreference,
    HospitalFacility,
    TransportRequest,
    TransportSeries,
)
from dashboard.services import demo as demo_service
from tests.conftest import DEMO_PASSWORD, _wipe
from tests.test_events import award, place_bid, post_trip

ROLES = ("anonymous", "hospital_a", "hospital_b", "ems_x", "ems_y", "crew_x", "coordinator", "admin",
         "deactivated")
EMAILS = {
    "hospital_a": "nurse@altoona.medport.test",
    "hospital_b": "nurse@mountnittany.medport.test",
    "ems_x": "dispatch@altoonaems.medport.test",
    "ems_y": "dispatch@huntingdonrescue.medport.test",
    "crew_x": "crew@altoonaems.medport.test",
    "coordinator": "coordinator@medport.test",
    "admin": "admin@medport.test",
    "deactivated": "nurse@tyrone.medport.test",
}
#: The roles whose user is their organisation's administrator (``User.org_admin``); set (and
#: every other user's mark cleared) when the world is built.
ORG_ADMINS = {"hospital_a", "ems_x"}
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

#: endpoint -> who may use it.  The one table of this test.
ACCESS = {
    "static": "public",
    "health.healthz": "public",
    "auth.index": "public",
    "auth.login": "public",
    "auth.logout": "signed-in",
    "auth.change_password": "signed-in",
    "events.stream": "signed-in",
    # hospital staff
    "hospital.dashboard": "hospital",
    "hospital.requests_panel": "hospital",
    "hospital.request_detail": "hospital",
    "hospital.request_summary": "hospital",
    "hospital.bids_panel": "hospital",
    "hospital.timeline_panel": "hospital",
    "hospital.award": "hospital",
    "hospital.cancel_request": "hospital",
    "hospital.edit_request": "hospital",
    "hospital.new_request": "hospital",
    "hospital.preferences": "hospital",
    "hospital.remove_preference": "hospital",
    "hospital.move_preference": "hospital",
    "hospital.preference_notes": "hospital",
    "hospital.add_return": "hospital",
    "hospital.will_call": "hospital",
    "hospital.release": "hospital",
    "hospital.patient_ready": "hospital",
    "hospital.not_ready": "hospital",
    "series.index": "hospital",
    "series.new": "hospital",
    "series.detail": "hospital",
    "series.exception": "hospital",
    "series.change": "hospital",
    "series.cancel": "hospital",
    "analytics.hospital_view": "hospital",
    # EMS dispatchers and crews
    "ems.board": "ems",
    "ems.board_panel": "ems",
    "ems.request_detail": "ems",
    "ems.request_panel": "ems",
    "ems.place_bid": "ems",
    "ems.change_bid": "ems",
    "ems.withdraw_bid": "ems",
    "ems.place_pair_bid": "ems",
    "ems.my_trips": "ems",
    "ems.my_trips_panel": "ems",
    "ems.advance_trip": "ems",
    "ems.hand_back_trip": "ems",
    "ems.undo_step": "ems",
    "ems.trips_csv": "ems",
    "ems.units": "ems",
    "ems.units_panel": "ems",
    "ems.create_unit": "ems",
    "ems.edit_unit": "ems",
    "ems.unit_status": "ems",
    "ems.availability": "ems",
    "ems.add_availability": "ems",
    "ems.remove_availability": "ems",
    "ems.routes": "ems",
    "ems.history": "ems",
    "analytics.ems_view": "ems",
    # crews on a phone (crew_x staffs unit X for its shift)
    "crew.home": "crew",
    "crew.panel": "crew",
    "crew.start_shift": "crew",
    "crew.end_shift": "crew",
    "crew.tap": "crew",
    "crew.manifest": "public",
    "crew.service_worker": "public",
    # transport center: coordinators and administrators
    "center.board": "center",
    "center.board_panel": "center",
    "center.request_detail": "center",
    "center.request_panel": "center",
    "center.award": "center",
    "center.assign": "center",
    "center.extend": "center",
    "center.reopen": "center",
    "center.cancel": "center",
    "center.release": "center",
    "center.units": "center",
    "center.units_panel": "center",
    "center.audit": "center",
    "center.audit_export": "center",
    "center.health": "center",
    "center.health_panel": "center",
    "center.retry_parked": "center",
    "analytics.center_view": "center",
    # administrators only
    "center.registry": "admin",
    "center.hospital_new": "admin",
    "center.hospital_edit": "admin",
    "center.facility_new": "admin",
    "center.facility_edit": "admin",
    "center.agency_new": "admin",
    "center.agency_edit": "admin",
    "center.users": "admin",
    "center.user_new": "admin",
    "center.user_edit": "admin",
    "center.user_reset_password": "admin",
    "center.config": "admin",
    # alerts: every signed-in user's own but crews'; the organisations' defaults (admins); escalations (center)
    "alerts.index": "desk",
    "alerts.feed": "desk",
    "alerts.open_alert": "desk",
    "alerts.read_all": "desk",
    "alerts.settings": "desk",
    "alerts.reset_settings": "desk",
    "alerts.defaults_index": "admin",
    "alerts.defaults": "org-admin+admin",
    "alerts.own_defaults": "org-admin",
    "alerts.acknowledge": "center",
    "alerts.webhooks_index": "org-admin+admin",
    "alerts.remove_webhook": "org-admin+admin",
    "alerts.deliveries_index": "org-admin+center",
    "alerts.replay_delivery": "org-admin+center",
    # an agency administrator's crew accounts
    "ems.crew_accounts": "ems-admin",
    "ems.crew_account_active": "ems-admin",
    "ems.crew_account_reset_password": "ems-admin",
}

#: URL arguments, by name (and per endpoint where one name means different objects).
PARAMS = {
    "filename": "static_file",
    "public_id": "trip_a",
    "bid_public_id": "bid_x_live",
    "pref_id": "pref_a",
}
ENDPOINT_PARAMS = {
    "ems.withdraw_bid": {"bid_public_id": "bid_x_accepted"},
    "ems.advance_trip": {"public_id": "trip_x_awarded"},
    "ems.hand_back_trip": {"public_id": "trip_x_awarded"},
    "ems.undo_step": {"public_id": "trip_x_awarded"},
    "ems.edit_unit": {"public_id": "unit_x"},
    "ems.unit_status": {"public_id": "unit_x"},
    "center.hospital_edit": {"public_id": "hospital_a"},
    "center.facility_new": {"public_id": "hospital_a"},
    "center.facility_edit": {"public_id": "facility_a"},
    "center.agency_edit": {"public_id": "agency_x"},
    "center.user_edit": {"public_id": "user_a"},
    "center.user_reset_password": {"public_id": "user_a"},
    "series.detail": {"public_id": "series_a"},
    "hospital.release": {"public_id": "will_call_a"},
    "center.release": {"public_id": "will_call_a"},
    "series.exception": {"public_id": "series_a"},
    "series.change": {"public_id": "series_a"},
    "series.cancel": {"public_id": "series_a"},
    "alerts.defaults": {"kind": "org_kind", "org_id": "org_id"},
    "ems.crew_account_active": {"public_id": "crew_x_user"},
    "ems.crew_account_reset_password": {"public_id": "crew_x_user"},
}

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
#: Tables that change on reads or sign-ins, not on a refused action.
VOLATILE_TABLES = {"audit_logs", "user_sessions", "live_signals", "service_registry"}
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

class World:
    """The module's app, one signed-in client per role, and the ids the URLs use."""

    def __init__(self, app, ids, clients, markers):
        self.app, self.ids, self.clients, self.markers = app, ids, clients, markers

    def url(self, endpoint, rule):
        """The rule with its arguments filled from the demo's ids."""
        values = {}
        for name in rule.arguments:
            key = ENDPOINT_PARAMS.get(endpoint, {}).get(name) or PARAMS.get(name)
            assert key, f"{endpoint}: no demo value for URL argument {name!r}; add it to PARAMS"
            values[name] = self.ids[key]
        with self.app.test_request_context():
            return url_for(endpoint, **values)


def _scenario():
    """Requests of hospital A that agency X bid on and won; returns the ids the URLs use."""
    trip_a = post_trip("ALT", level="ALS", invite_mode="preferred")  # invites AEMS, BCA, ACCT
    bid_x_live = place_bid(trip_a, "AEMS", 25)
    trip_x_awarded = post_trip("ALT", level="ALS", invite_mode="preferred")
    bid_x_accepted = place_bid(trip_x_awarded, "AEMS", 15)
    place_bid(trip_x_awarded, "ACCT", 30)
    award(trip_x_awarded, bid_x_accepted)
    trip_b = post_trip("MNV", level="BLS")
    bid_on_b = place_bid(trip_b, "CLL", 20)
    _series_of_a()
    return trip_a, bid_x_live, trip_x_awarded, bid_x_accepted, trip_b, bid_on_b


def _series_of_a():
    """A recurring series of hospital A (its pages name it)."""
    from datetime import time, timedelta

    from dashboard.localtime import local_today
    from dashboard.services import series as series_service

    alt = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
    facilities = db.session.scalars(sa.select(HospitalFacility.id).where(
        HospitalFacility.hospital_id == alt.id).order_by(HospitalFacility.id)).all()
    series_service.create(alt.id, alt.short_code, dict(
        frequency="weekly", interval=1, weekdays="0,2,4", pickup_time=time(6, 30), window_minutes=60,
        start_date=local_today() + timedelta(days=1), occurrence_count=12, origin_facility_id=facilities[0],
        pickup_location="Dialysis", destination_address="12 Home Street", level_of_care="BLS",
        mobility="wheelchair", age_group="adult", weight_kg=70, patient_ref=""), 1)
    db.session.commit()
    # A will-call return of A, its patient at a third hospital's facility (Juniata).
    from dashboard.services import returns

    jun = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "JVM"))
    outbound = db.session.get(TransportRequest, post_trip("ALT", level="BLS"))
    outbound.destination_facility_id = db.session.scalar(sa.select(HospitalFacility.id).where(
        HospitalFacility.hospital_id == jun).order_by(HospitalFacility.id).limit(1))
    db.session.flush()
    returns.add_return(outbound, "will_call", (None, None), 30, "ALT", 1, "Nurse")
    db.session.commit()


def _public(model, row_id):
    """The public id of a row (what URLs show)."""
    return db.session.get(model, row_id).public_id


def _collect_ids(trip_a, bid_x_live, trip_x_awarded, bid_x_accepted, trip_b, bid_on_b):
    """Every id a URL or form of the tests names, by a short key."""

    def one(model, *conditions):
        return db.session.scalar(sa.select(model).where(*conditions).order_by(model.id).limit(1))

    alt = one(Hospital, Hospital.short_code == "ALT")
    mnv = one(Hospital, Hospital.short_code == "MNV")
    aems = one(Agency, Agency.short_code == "AEMS")
    hcr = one(Agency, Agency.short_code == "HCR")
    unit_x = one(Unit, Unit.agency_id == aems.id)
    unit_y = one(Unit, Unit.agency_id == hcr.id)
    window_x = one(UnitAvailability, UnitAvailability.unit_id == unit_x.id)
    return {
        "static_file": "medport.css",
        "trip_a": _public(TransportRequest, trip_a),
        "trip_x_awarded": _public(TransportRequest, trip_x_awarded),
        "trip_b": _public(TransportRequest, trip_b),
        "bid_x_live": _public(TransportBid, bid_x_live),
        "bid_x_accepted": _public(TransportBid, bid_x_accepted),
        "bid_on_b": _public(TransportBid, bid_on_b),
        "pref_a": one(HospitalAgencyPreference, HospitalAgencyPreference.hospital_id == alt.id).id,
        "unit_x": unit_x.public_id,
        "unit_x_awarded": db.session.get(Unit, db.session.get(TransportRequest, trip_x_awarded).awarded_unit_id)
        .public_id,
        "unit_y": unit_y.public_id,
        "window_x": window_x.id,
        "hospital_a": alt.public_id,
        "hospital_b": mnv.public_id,
        "facility_a": one(HospitalFacility, HospitalFacility.hospital_id == alt.id).public_id,
        "facility_b": one(HospitalFacility, HospitalFacility.hospital_id == mnv.id).public_id,
        "agency_x": aems.public_id,
        "agency_y": hcr.public_id,
        "user_a": one(User, User.email == EMAILS["hospital_a"]).public_id,
        "series_a": one(TransportSeries, TransportSeries.hospital_id == alt.id).public_id,
        "will_call_a": one(TransportRequest, TransportRequest.will_call.is_(True)).public_id,
        "crew_x_user": one(User, User.email == EMAILS["crew_x"]).public_id,
        "org_kind": "agency",
        "org_id": aems.id,
    }


def _markers(ids):
    """What hospital B and agency Y must never be shown: A's requests (ids and references),
    X's units and bids, and the trips X drives that Y never bid on."""
    alt = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "ALT"))
    aems = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
    alt_trips = db.session.execute(sa.select(TransportRequest.public_id, TransportRequest.reference)
                                   .where(TransportRequest.hospital_id == alt)).all()
    aems_units = db.session.scalars(sa.select(Unit.public_id).where(Unit.agency_id == aems)).all()
    aems_bids = db.session.scalars(sa.select(TransportBid.public_id)
                                   .where(TransportBid.agency_id == aems)).all()
    hcr = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "HCR"))
    hcr_bid_on = sa.select(TransportBid.trip_id).where(TransportBid.agency_id == hcr)
    aems_trips = db.session.scalars(sa.select(EmsRoute.trip_reference).where(
        EmsRoute.agency_id == aems, EmsRoute.trip_id.not_in(hcr_bid_on))).all()
    crew_unit = db.session.scalar(sa.select(Unit.id).where(Unit.public_id == ids["unit_x_awarded"]))
    other_units_trips = db.session.scalars(sa.select(EmsRoute.trip_reference).where(
        EmsRoute.agency_id == aems, EmsRoute.unit_id != crew_unit)).all()
    return {"hospital_b": {value for row in alt_trips for value in row},
            "ems_y": set(aems_units) | set(aems_bids) | set(aems_trips),
            "crew_x": set(other_units_trips) | set(aems_bids)}


def sign_in(app, email):
    """A test client signed in as ``email``."""
    client = app.test_client()
    response = client.post("/login", data={"email": email, "password": DEMO_PASSWORD})
    assert response.status_code == 302, email
    return client


def build_world(migrated_config, more_ids=None):
    """The demo region plus the scenario (and ``more_ids()``'s objects), delivered; a client
    per role, the deactivated one deactivated behind its session's back."""
    from dashboard.events.relay import Relay

    app = create_app(dict(migrated_config))
    _wipe(app)
    with app.app_context():
        demo_service.seed()
        created = _scenario()
        extra = more_ids() if more_ids else {}
    relay = Relay(app)
    for _ in range(10):
        if not relay.run_once():
            break
    with app.app_context():
        ids = dict(_collect_ids(*created), **extra)
        markers = _markers(ids)
    clients = {"anonymous": app.test_client()}
    clients.update({role: sign_in(app, email) for role, email in EMAILS.items()})
    # The crew member staffs the unit X's awarded trip went to: the crew's pages show its trips.
    assert clients["crew_x"].post("/crew/shift", data={"unit": ids["unit_x_awarded"]}).status_code == 303
    with app.app_context():
        db.session.execute(sa.update(User).values(org_admin=User.email.in_(
            [EMAILS[role] for role in ORG_ADMINS])))
        # No epoch bump, no sign-out: the session itself must notice.
        db.session.execute(sa.update(User).where(User.email == EMAILS["deactivated"]).values(active=False))
        db.session.commit()
    return World(app, ids, clients, markers)


def close_world(world):
    """Release the module app's connections."""
    with world.app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


@pytest.fixture(scope="module")
def world(migrated_config):
    """The region of this module, seeded once per backend."""
    built = build_world(migrated_config)
    yield built
    close_world(built)


def snapshot(app):
    """Every row of every silo (but the read-side and sign-in tables), to compare."""
    state = {}
    with app.app_context():
        for key, metadata in db.metadatas.items():
            with db.engines[key].connect() as conn:
                for table in metadata.sorted_tables:
                    if table.name not in VOLATILE_TABLES:
                        rows = conn.exec_driver_sql(f'SELECT * FROM "{table.name}" ORDER BY 1')
                        state[(key, table.name)] = rows.fetchall()
    return state


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
