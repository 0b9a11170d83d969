"""Load: the three roles at work on the demo region, as their pages drive the server.

    locust -f bench/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8000

Run it against the app under gunicorn (``gunicorn -c gunicorn.conf.py wsgi:app``) on a
seeded demo region (``flask medport seed-demo``) with a relay running (``flask medport
relay``), on this machine only (loopback).  The run ends by itself after ``-t``.

Who does what (weights are how many of each user there are, tasks how often each acts):

* hospital staff (nurses of the six hospitals): their request list and its live panel,
  one request's page and panels (awarding its best bid when it has bids), now and then
  a new request (the form as the page fills it, plus the fields a nurse picks);
* EMS dispatchers (the six agencies): the open-request board and its panel, a request's
  page, and a bid on an open request with the first free unit (a refusal, such as the
  unit being booked already, is an expected answer, not a failure);
* transport center coordinators: the regional board and its panel, a request in full.

Live panels are fetched as htmx does (``HX-Request``); each user signs in once.  No
live stream is held open here (``bench/sse_fanout.py`` measures those).
"""
import random
import re
from html.parser import HTMLParser

from locust import HttpUser, between, task

PASSWORD = "medport-demo"
HOSPITAL_LOGINS = [f"nurse@{slug}.medport.test" for slug in
                   ("altoona", "mountnittany", "juniata", "johnstown", "bedford", "tyrone")]
EMS_LOGINS = [f"dispatch@{slug}.medport.test" for slug in
              ("altoonaems", "blaircounty", "centrelifelink", "alleghenycct", "huntingdonrescue",
               "cambriamedical")]
HTMX = {"HX-Request": "true"}
#: Answers a bid or an award may get besides success: refused with a message (booked unit,
#: closed request, a bid withdrawn or a request awarded meanwhile).
EXPECTED_REFUSALS = (400, 409)


class FormReader(HTMLParser):
    """The fields of the first ``<form method=post>`` whose action contains ``action``.

    Text inputs and hidden fields keep their value, checked radios and boxes theirs,
    selects their selected option (else the first); ``options`` lists each select's values.
    """

    def __init__(self, action):
        super().__init__()
        self.action, self.inside, self.done = action, False, False
        self.fields, self.options, self._select = {}, {}, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and not self.done and (attrs.get("method") or "").lower() == "post" \
                and self.action in (attrs.get("action") or ""):
            self.inside = True
        if not self.inside:
            return
        name = attrs.get("name")
        if tag == "input" and name:
            kind = (attrs.get("type") or "text").lower()
            if kind in ("radio", "checkbox"):
                if "checked" in attrs:
                    self.fields[name] = attrs.get("value", "y")
            elif kind != "submit":
                self.fields[name] = attrs.get("value") or ""
        elif tag == "select" and name:
            self._select = name
            self.options[name] = []
        elif tag == "option" and self._select:
            value = attrs.get("value") or ""
            self.options[self._select].append(value)
            if "selected" in attrs or self._select not in self.fields:
                self.fields[self._select] = value
        elif tag == "textarea" and name:
            self.fields[name] = ""

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None
        elif tag == "form" and self.inside:
            self.inside, self.done = False, True


def read_form(html, action):
    reader = FormReader(action)
    reader.feed(html)
    return reader


def public_ids(html, prefix):
    """The request ids linked from a page, as in ``/hospital/requests/<id>``."""
    return sorted(set(re.findall(prefix + r"/requests/([0-9a-f-]{36})\"", html)))


class SignedIn(HttpUser):
    """A user who signs in once, as one of ``logins``."""

    abstract = True
    logins = ()

    def on_start(self):
        email = random.choice(self.logins)
        page = self.client.get("/login", name="/login").text
        token = read_form(page, "/login").fields.get("csrf_token", "")
        with self.client.post("/login", data={"csrf_token": token, "email": email, "password": PASSWORD},
                              name="/login [POST]", allow_redirects=False, catch_response=True) as answer:
            if answer.status_code != 302:
                answer.failure(f"sign-in of {email} answered {answer.status_code}")
        self.seen = []

    def remember(self, html, prefix):
        found = public_ids(html, prefix)
        if found:
            self.seen = found[:20]


class HospitalStaff(SignedIn):
    """A nurse or case manager: watches the hospital's requests, awards bids, posts a new one now and then."""

    weight = 3
    wait_time = between(2, 6)
    logins = HOSPITAL_LOGINS

    # Task weights: one action in 53 is a new request, so each nurse posts about every 4-5
    # minutes and the ~67 nurses of a 200-user run about 15 requests a minute: several times a
    # busy region's rate (a million trips a year is under 2 a minute), without the boards every
    # user reloads growing by hundreds of rows within a run.
    @task(16)
    def request_list(self):
        self.remember(self.client.get("/hospital/", name="/hospital/").text, "/hospital")

    @task(24)
    def request_list_panel(self):
        self.client.get("/hospital/requests/panel", headers=HTMX, name="/hospital/requests/panel")

    @task(12)
    def one_request(self):
        """A request's page and its bids; a request with bids is awarded to the first (best) one."""
        if not self.seen:
            return
        public_id = random.choice(self.seen)
        self.client.get(f"/hospital/requests/{public_id}", name="/hospital/requests/[id]")
        bids = self.client.get(f"/hospital/requests/{public_id}/bids", headers=HTMX,
                               name="/hospital/requests/[id]/bids").text
        form = read_form(bids, f"/hospital/requests/{public_id}/award")
        if not form.fields.get("bid"):
            return
        with self.client.post(f"/hospital/requests/{public_id}/award", data=form.fields, allow_redirects=False,
                              name="/hospital/requests/[id]/award [POST]", catch_response=True) as answer:
            if answer.status_code == 302 or answer.status_code in EXPECTED_REFUSALS:
                answer.success()  # a refusal: awarded meanwhile, or the bid was withdrawn
            else:
                answer.failure(f"awarding answered {answer.status_code}")

    @task(1)
    def post_request(self):
        page = self.client.get("/hospital/requests/new", name="/hospital/requests/new").text
        form = read_form(page, "/hospital/requests/new")
        fields = dict(form.fields)
        destinations = [value for value in form.options.get("destination_facility", [])
                        if value and value != fields.get("origin_facility")]
        fields.update(pickup_location="Med-surg 2 East, room 221", level_of_care="BLS", urgency="routine",
                      age_group="adult", weight_kg="82", mobility=fields.get("mobility") or "stretcher",
                      destination_facility=random.choice(destinations) if destinations else "",
                      invite_mode="all")
        with self.client.post("/hospital/requests/new", data=fields, allow_redirects=False,
                              name="/hospital/requests/new [POST]", catch_response=True) as answer:
            if answer.status_code != 302:
                answer.failure(f"posting answered {answer.status_code}")


class Dispatcher(SignedIn):
    """An EMS dispatcher: watches the open-request board, bids with a free unit."""

    weight = 3
    wait_time = between(2, 6)
    logins = EMS_LOGINS

    @task(4)
    def board(self):
        self.remember(self.client.get("/ems/", name="/ems/").text, "/ems")

    @task(6)
    def board_panel(self):
        self.client.get("/ems/board/panel", headers=HTMX, name="/ems/board/panel")

    @task(2)
    def bid(self):
        if not self.seen:
            return
        public_id = random.choice(self.seen)
        page = self.client.get(f"/ems/requests/{public_id}", name="/ems/requests/[id]").text
        form = read_form(page, f"/ems/requests/{public_id}/bid")
        units = [value for value in form.options.get("unit", []) if value]
        if not form.fields or not units:
            return  # already bid on, or no longer open: the page offers no bid form
        fields = dict(form.fields, unit=random.choice(units), eta_minutes=str(random.randint(8, 45)))
        with self.client.post(f"/ems/requests/{public_id}/bid", data=fields, allow_redirects=False,
                              name="/ems/requests/[id]/bid [POST]", catch_response=True) as answer:
            if answer.status_code == 302 or answer.status_code in EXPECTED_REFUSALS:
                answer.success()
            else:
                answer.failure(f"bidding answered {answer.status_code}")


class Coordinator(SignedIn):
    """A transport center coordinator: the regional board, a request in full."""

    weight = 1
    wait_time = between(3, 8)
    logins = ["coordinator@medport.test"]

    @task(3)
    def board(self):
        self.remember(self.client.get("/center/", name="/center/").text, "/center")

    @task(5)
    def board_panel(self):
        self.client.get("/center/board/panel", headers=HTMX, name="/center/board/panel")

    @task(2)
    def one_request(self):
        if self.seen:
            public_id = random.choice(self.seen)
            self.client.get(f"/center/requests/{public_id}", name="/center/requests/[id]")
