"""No patient data in the logs.

A request with a distinctive value in every patient and clinical field is
posted to the live server (gunicorn, with its access log and the app's and
relay's logs in one file), refused once and accepted once, searched for by its
patient reference (the way a nurse finds it), bid on, awarded and driven to
completion.  The server's log must then name the request's pages, and none
of the values.
"""
import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timedelta

import sqlalchemy as sa

from dashboard import create_app
from dashboard.config import build_config
from dashboard.extensions import db
from tests.helpers import PageForms

from .conftest import wait_for

NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"
PASSWORD = "medport-demo"
#: Free text a nurse may type about a patient: none of it may reach a log.
TYPED = {
    "pickup_location": "Vellichor ward, bed Quillonby-7",
    "destination_address": "88 Thistlewode Lane, Ozymandry PA",
    "other_needs": "Xylobrant sling for transfer",
    "notes": "History of Marbletonosis; allergic to Quorvexin",
    "care_override_reason": "Trelvani telemetry only, per Dr Ostrowind",
}
WEIGHT, OXYGEN = "287", "13.5"


class Browser:
    """Cookies and no automatic redirects: what the server answered, as a browser got it."""

    class _NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    def __init__(self, base):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), self._NoRedirect())

    def open(self, path, data=None, headers=None):
        """(status, location, body) of one request; ``data`` (a list of pairs) makes it a POST."""
        body = urllib.parse.urlencode(data, doseq=True).encode() if data is not None else None
        request = urllib.request.Request(self.base + path, data=body, headers=headers or {})
        try:
            with self.opener.open(request, timeout=30) as response:
                return response.status, response.headers.get("Location"), response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Location"), error.read().decode(errors="replace")

    def form(self, page, action):
        """The fields of the POST form of ``page`` that posts to ``action``, as a browser sends them."""
        status, _, body = self.open(page)
        assert status == 200, (page, status)
        parser = PageForms(page)
        parser.feed(body)
        found = [fields for form_action, fields in parser.forms if urllib.parse.urlsplit(form_action).path == action]
        assert found, f"{page} shows no form posting to {action}"
        return found[0]

    def sign_in(self, email):
        fields = dict(self.form("/login", "/login"))
        fields.update(email=email, password=PASSWORD)
        status, location, _ = self.open("/login", list(fields.items()))
        assert status == 302 and not location.startswith("/login"), (email, status, location)


def replace(fields, **values):
    """The form's fields with some values replaced (a field not in the form is added)."""
    kept = [(name, value) for name, value in fields if name not in values]
    return kept + list(values.items())


def test_the_server_logs_no_patient_data(live_server):
    nurse, dispatch = Browser(live_server.url), Browser(live_server.url)
    nurse.sign_in(NURSE)
    dispatch.sign_in(DISPATCH)
    fields = nurse.form("/hospital/requests/new", "/hospital/requests/new")
    patient_ref = dict(fields)["patient_ref"]
    assert re.fullmatch(r"P-[A-Z0-9]{6}", patient_ref)
    # Tomorrow at night, inside the BLS bidding lead (48 h), so bidding opens at posting; the
    # agency bids below with the first of its units free then.
    start = (datetime.now() + timedelta(days=1)).replace(hour=3, minute=0, second=0, microsecond=0)
    request = replace(
        fields, **TYPED, weight_kg=WEIGHT, oxygen_lpm=OXYGEN, destination_facility="", level_of_care="BLS",
        age_group="adult", isolation="contact", cardiac_monitor="y", care_override="y", invite_mode="all",
        window_start=start.strftime("%Y-%m-%dT%H:%M"), window_end=(start + timedelta(hours=2)).strftime(
            "%Y-%m-%dT%H:%M"))

    # Refused first (no level of care), then accepted.
    status, _, body = nurse.open("/hospital/requests/new", replace(request, level_of_care=""))
    assert status == 400, status
    status, location, body = nurse.open("/hospital/requests/new", request)
    assert status == 302, re.findall(r'class="error">([^<]+)', body)
    trip_page = location
    public_id = trip_page.rsplit("/", 1)[1]

    # The nurse finds it again by the patient reference; the next page is opened from the results.
    search = "/hospital/?" + urllib.parse.urlencode({"q": patient_ref})
    status, _, body = nurse.open(search)
    assert status == 200 and public_id in body
    status, _, body = nurse.open(trip_page, headers={"Referer": live_server.url + search})
    assert status == 200 and TYPED["notes"] in body

    # The agency bids with the first of its units free then; the hospital awards.
    wait_for("the request on the agency's board",
             lambda: dispatch.open(f"/ems/requests/{public_id}")[0] == 200)
    bid_form = dispatch.form(f"/ems/requests/{public_id}", f"/ems/requests/{public_id}/bid")
    units = re.findall(r'<option value="([0-9a-f-]{36})"',
                       dispatch.open(f"/ems/requests/{public_id}")[2])
    assert units
    for unit in units:
        status, _, body = dispatch.open(f"/ems/requests/{public_id}/bid",
                                        replace(bid_form, unit=unit, eta_minutes="25"))
        if status == 302:
            break
        assert status == 409, re.findall(r'class="error">([^<]+)', body)
    assert status == 302
    wait_for("the bid on the hospital's page", lambda: f"{trip_page}/award" in nurse.open(trip_page)[2])
    status, _, body = nurse.open(f"{trip_page}/award", nurse.form(trip_page, f"{trip_page}/award"))
    assert status == 302, re.findall(r'class="error">([^<]+)', body)

    # The crew drives it to the end, once the relay has given the agency its route.
    ((trip_id,),) = live_server.query("hospital", "SELECT id FROM transport_requests WHERE public_id = :p",
                                      p=public_id)
    wait_for("the agency's route", lambda: live_server.query(
        "ems", "SELECT status FROM ems_routes WHERE trip_id = :t", t=trip_id))
    token = dict(bid_form)["csrf_token"]
    for step in ("en_route", "at_pickup", "transporting", "at_destination", "back_in_service"):
        status, _, body = dispatch.open(f"/ems/trips/{public_id}/advance", [("csrf_token", token),
                                                                            ("step", step)])
        assert status == 302, (step, re.findall(r'class="error">([^<]+)', body))
    wait_for("the hospital's record of completion", lambda: live_server.query(
        "hospital", "SELECT status FROM transport_requests WHERE id = :t", t=trip_id)[0][0] == "completed")

    # The log names what happened (so it is the right log, and written), and no patient data.
    wait_for("the log of the last step",
             lambda: live_server.log_text().count(f"/ems/trips/{public_id}/advance") >= 4)
    log = live_server.log_text()
    assert f"POST {trip_page}/award" in log and "POST /hospital/requests/new" in log
    leaked = [value for value in [*TYPED.values(), patient_ref] if value in log]
    leaked += [pattern for pattern in (rf"weight\w*\W{{1,4}}{WEIGHT}\b", rf"{WEIGHT} ?kg",
                                       rf"oxygen\w*\W{{1,4}}{re.escape(OXYGEN)}")
               if re.search(pattern, log)]
    assert not leaked, f"patient data in {live_server.log_path}: {leaked}"


def test_database_errors_carry_no_statement_parameters(tmp_path):
    """A failed statement's error (logged with its traceback) names no value it was given."""
    urls = {f"MEDPORT_{silo.upper()}_DATABASE_URL": f"sqlite:///{tmp_path}/{silo}.sqlite3"
            for silo in ("center", "hospital", "ems")}
    config = build_config(str(tmp_path), urls)
    assert config["SQLALCHEMY_ENGINE_OPTIONS"]["hide_parameters"] is True
    assert all(bind["hide_parameters"] is True for bind in config["SQLALCHEMY_BINDS"].values())
    app = create_app(dict(config, TESTING=True, MEDPORT_INPROCESS_RELAY=False,
                          MEDPORT_SIGNAL_BACKEND="local"))
    with app.app_context():
        engine = db.engines["hospital"]
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("INSERT INTO no_such_table VALUES (:notes)"),
                             {"notes": TYPED["notes"]})
        except sa.exc.DBAPIError as error:
            message = str(error)
        else:
            raise AssertionError("the statement did not fail")
        engine.dispose()
    assert "no_such_table" in message and TYPED["notes"] not in message
