"""Dashboard benchmark: every role's pages and writes, timed inside the server, at two history sizes.

    python bench/dashboards_bench.py --trips 10000 1000000

For each size N it uses three PostgreSQL databases ``medport_bench<size>_{center,hospital,ems}``
(``medport_bench10k_*``, ``medport_bench1m_*``, ...) on ``--server``.  When they already
hold the N generated trips over the expected span they are reused; otherwise they are
created, migrated and filled with ``flask medport seed-demo`` and ``flask medport
seed-scale --trips N --years N/(365 * per-day) --live 200`` (15 to 30 minutes for a
million trips).  Every size is the same region (``--per-day`` trips a day, default
1,370: a million trips over two years) with the same 200 trips in a live state, so
the sizes differ in how far back the history reaches (10,000 trips: a week; a
million: two years), not in what is happening now.  Rows an earlier run of this
script wrote are removed, then the databases are vacuumed and analysed.

Then it starts, as in a deployment, gunicorn with ``gunicorn.conf.py`` (one gevent
worker) and one ``flask medport relay`` process, and measures:

- server-side time of each page and partial: a WSGI middleware wrapped around the
  app in the worker (this module's ``timed_app()``) takes the time from the call
  into the app until its response body is complete, for requests that carry an
  ``X-Bench-Label`` header, and appends it to a file; the client asks one page at a
  time, pages in turn, ``--samples`` rounds after a warm-up;
- the framework's ceiling: ``/bench/ping``, a route this module adds to its own app
  instance, which answers text without a database; each time is also given as a
  multiple of the ceiling's time;
- posting a request, a bid and an award (``--writes`` of each, server-side);
- post → visible on the EMS board, end to end, client-side: from sending the
  hospital's POST until an EMS client, holding the live stream open, has got the
  trip's signal and fetched a board partial that lists the trip (the relay and
  the signal hub run as in production: NOTIFY, relay process, LISTEN);
- the worker's peak resident memory (``VmHWM``);
- the load average before and after, since other work on the machine slows every figure;
- the database time of each page, from its ``Server-Timing`` header (all silos, p50).

With ``--before DIR`` (a checkout of earlier code, e.g. ``git worktree add /tmp/before main``)
it serves that code too, from a second gunicorn on the same databases, asks every page of it
just before asking this checkout's, and prints each page's worker CPU before and after, in ms
and as a multiple of each server's bare endpoint: one run, the same load on both.

The signed-in users are created here (``flask medport create-user``): a nurse of the
generated hospital with the most open requests, a dispatcher of a generated agency
that serves every level of care, and the demo coordinator.

Figures are printed as a Markdown table, never asserted.
"""
import argparse
import http.client
import os
import platform
import re
import secrets
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
SILOS = ("center", "hospital", "ems")
PASSWORD = "bench-password-1"
NURSE, DISPATCHER, COORDINATOR = "nurse@bench.test", "dispatch@bench.test", "coordinator@medport.test"
DEMO_PASSWORD = "medport-demo"
BENCH_PICKUP = "Bench ward"  # marks the requests this script posts, so the next run removes them
CEILING = "bare endpoint (no database)"
TIMINGS_ENV = "MEDPORT_BENCH_TIMINGS"
LABEL_HEADER = "X-Bench-Label"


# --- inside the server: the timed app ---------------------------------------------------------

class RequestTimer:
    """WSGI middleware: the time of each labelled request, call to complete body, to a file."""

    def __init__(self, wsgi_app, path):
        self.wsgi_app = wsgi_app
        self.out = open(path, "a", buffering=1)

    def __call__(self, environ, start_response):
        label = environ.get("HTTP_" + LABEL_HEADER.upper().replace("-", "_"))
        if not label:
            return self.wsgi_app(environ, start_response)
        started, cpu = time.perf_counter(), time.process_time()
        body = self.wsgi_app(environ, start_response)
        try:
            chunks = list(body)
        finally:
            if hasattr(body, "close"):
                body.close()
        self.out.write(f"{label}\t{(time.perf_counter() - started) * 1000:.3f}"
                       f"\t{(time.process_time() - cpu) * 1000:.3f}\n")
        return chunks


def timed_app():
    """The app as gunicorn runs it here: ``/bench/ping`` added, labelled requests timed."""
    sys.path.insert(0, str(ROOT))
    from dashboard import create_app

    app = create_app()
    app.add_url_rule("/bench/ping", "bench_ping",
                     lambda: ("ok", 200, {"Content-Type": "text/plain"}))
    app.wsgi_app = RequestTimer(app.wsgi_app, os.environ[TIMINGS_ENV])
    return app


# --- databases --------------------------------------------------------------------------------

def size_label(trips):
    """10000 -> "10k", 1000000 -> "1m" (database names and table headings)."""
    if trips % 1_000_000 == 0:
        return f"{trips // 1_000_000}m"
    if trips % 1000 == 0:
        return f"{trips // 1000}k"
    return str(trips)


def database_names(trips):
    return {silo: f"medport_bench{size_label(trips)}_{silo}" for silo in SILOS}


def _engine(url, **kwargs):
    import sqlalchemy as sa

    return sa.create_engine(url, **kwargs)


def history_years(trips, per_day):
    """How far back ``trips`` trips reach at ``per_day`` trips a day."""
    return trips / per_day / 365


def _generated_trips(urls):
    """(generated trips, days their posting times span) in the databases, or None."""
    import sqlalchemy as sa

    engine = _engine(urls["hospital"], connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            count, first, last = conn.execute(sa.text(
                "SELECT count(*), min(created_at), max(created_at) FROM transport_requests "
                "WHERE patient_ref = 'P-SCALE1'")).one()
            return count, ((last - first).total_seconds() / 86400 if count else 0)
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def _run_flask(env, *args):
    """``flask --app wsgi ARGS`` with the bench databases; output shown (progress bar).

    These are maintenance commands (migrations, bulk loads): no statement timeout, as the
    README says for long maintenance work; the server measured keeps the defaults.
    """
    env = dict(env, MEDPORT_DB_STATEMENT_TIMEOUT_MS="0")
    subprocess.run([sys.executable, "-m", "flask", "--app", "wsgi", *args], cwd=ROOT, env=env, check=True)


def prepare(server, trips, args, env):
    """Reuse the databases if they hold ``trips`` generated trips over the expected span,
    else create and fill them."""
    import sqlalchemy as sa

    names = database_names(trips)
    urls = {silo: f"{server}/{name}" for silo, name in names.items()}
    years = history_years(trips, args.per_day)
    found = _generated_trips(urls)
    if found and found[0] == trips and abs(found[1] - years * 365) <= 0.05 * years * 365 + 1:
        print(f"[{size_label(trips)}] reusing {', '.join(names.values())} "
              f"({trips:,} generated trips over {found[1]:.0f} days)")
        _run_flask(env, "db", "upgrade")  # the code measured may have added a migration since
    else:
        print(f"[{size_label(trips)}] creating {', '.join(names.values())} (found "
              f"{f'{found[0]:,} generated trips over {found[1]:.0f} days' if found else 'no databases'})")
        admin = _engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        _run_flask(env, "db", "upgrade")
        _run_flask(env, "medport", "seed-demo")
        _run_flask(env, "medport", "seed-scale", "--trips", str(trips), "--years", f"{years:.4f}",
                   "--live", str(args.live))
    return urls


def remove_earlier_bench_rows(urls):
    """Requests this script posted before (and their bids, routes, history); units freed."""
    import sqlalchemy as sa

    hospital, ems = _engine(urls["hospital"]), _engine(urls["ems"])
    with hospital.begin() as conn:
        ids = list(conn.execute(sa.text("SELECT id FROM transport_requests WHERE pickup_location = :p"),
                                {"p": BENCH_PICKUP}).scalars())
        if ids:
            conn.execute(sa.text("DELETE FROM transport_request_events WHERE trip_id = ANY(:ids)"), {"ids": ids})
            conn.execute(sa.text("DELETE FROM transport_requests WHERE id = ANY(:ids)"), {"ids": ids})
    if ids:
        with ems.begin() as conn:
            conn.execute(sa.text("DELETE FROM transport_bids WHERE trip_id = ANY(:ids)"), {"ids": ids})
            conn.execute(sa.text("DELETE FROM ems_routes WHERE trip_id = ANY(:ids)"), {"ids": ids})
            conn.execute(sa.text("UPDATE units SET status = 'available', current_trip_id = NULL "
                                 "WHERE current_trip_id = ANY(:ids)"), {"ids": ids})
    hospital.dispose()
    ems.dispose()
    for url in urls.values():
        engine = _engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text("VACUUM (ANALYZE)"))
        engine.dispose()
    return len(ids)


def choose_organisations(urls):
    """(hospital code, agency code): the generated hospital with the most open requests, and
    the generated agency serving every level with the most live bids."""
    import sqlalchemy as sa

    center, hospital, ems = (_engine(urls[silo]) for silo in SILOS)
    with center.connect() as conn:
        hospitals = dict(conn.execute(sa.text(
            "SELECT id, short_code FROM hospitals WHERE region = 'Scale'")).all())
        agencies = dict(conn.execute(sa.text(
            "SELECT id, short_code FROM agencies WHERE levels = 'BLS,ALS,CCT' AND service_area = 'Scale'")).all())
    with hospital.connect() as conn:
        open_by_hospital = dict(conn.execute(sa.text(
            "SELECT hospital_id, count(*) FROM transport_requests WHERE status = 'open' "
            "GROUP BY hospital_id")).all())
    with ems.connect() as conn:
        live_by_agency = dict(conn.execute(sa.text(
            "SELECT agency_id, count(*) FROM transport_bids WHERE status = 'live' GROUP BY agency_id")).all())
    for engine in (center, hospital, ems):
        engine.dispose()
    hospital_id = max(sorted(hospitals), key=lambda h: open_by_hospital.get(h, 0))
    agency_id = max(sorted(agencies), key=lambda a: live_by_agency.get(a, 0))
    return hospitals[hospital_id], agencies[agency_id]


def ensure_users(urls, env, hospital_code, agency_code):
    """The bench nurse and dispatcher (created once per database set)."""
    import sqlalchemy as sa

    center = _engine(urls["center"])
    with center.connect() as conn:
        existing = set(conn.execute(sa.text("SELECT email FROM users WHERE email IN (:a, :b)"),
                                    {"a": NURSE, "b": DISPATCHER}).scalars())
    center.dispose()
    if NURSE not in existing:
        _run_flask(env, "medport", "create-user", "--email", NURSE, "--name", "Bench Nurse", "--role",
                   "hospital", "--hospital", hospital_code, "--password", PASSWORD)
    if DISPATCHER not in existing:
        _run_flask(env, "medport", "create-user", "--email", DISPATCHER, "--name", "Bench Dispatcher",
                   "--role", "ems", "--agency", agency_code, "--password", PASSWORD)
    _run_flask(env, "medport", "relay", "--once")


# --- the client -------------------------------------------------------------------------------

class Session:
    """One signed-in browser: a keep-alive connection, its cookies, its CSRF token."""

    def __init__(self, port, email=None, password=None):
        self.port = port
        self.cookies = {}
        self.conn = None
        self.csrf = None
        if email is None:
            return  # a visitor who is not signed in
        page = self.get("/login").text
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
        answer = self.post("/login", {"csrf_token": token, "email": email, "password": password})
        if answer.status != 302:
            raise RuntimeError(f"sign-in of {email} answered {answer.status}")

    def request(self, method, path, form=None, label=None):
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        if label:
            headers[LABEL_HEADER] = label
        body = None
        if form is not None:
            body = urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                text = response.read().decode()
                break
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        for cookie in response.headers.get_all("Set-Cookie") or []:
            name, value = cookie.split(";", 1)[0].split("=", 1)
            self.cookies[name] = value
        response.text = text
        return response

    def get(self, path, label=None):
        return self.request("GET", path, label=label)

    def post(self, path, form, label=None):
        return self.request("POST", path, form, label)

    def token(self, page_path):
        """The CSRF token the pages carry (``<body hx-headers>``)."""
        if self.csrf is None:
            page = self.get(page_path).text
            self.csrf = re.search(r'"X-CSRFToken": "([^"]+)"', page).group(1)
        return self.csrf


class BoardWatcher(threading.Thread):
    """An EMS dispatcher's open board: the live stream, and on a new trip's first signal the
    board partial fetched as htmx would; records when the partial first listed the trip."""

    def __init__(self, port, cookies):
        super().__init__(daemon=True)
        self.port, self.cookies = port, cookies
        self.seen, self.signalled, self.visible = set(), {}, {}
        self.changed = threading.Condition()
        self.connected = threading.Event()
        self.board = None

    def run(self):
        sock = socket.create_connection(("127.0.0.1", self.port))
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        sock.sendall((f"GET /events HTTP/1.1\r\nHost: 127.0.0.1\r\nCookie: {cookie}\r\n"
                      "Accept: text/event-stream\r\n\r\n").encode())
        stream = sock.makefile("rb")
        self.board = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        event = None
        for raw in stream:
            line = raw.decode().rstrip("\r\n")
            if line.startswith(": connected") or line.startswith(":"):
                self.connected.set()
            elif line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "trip-updated":
                public_id = line[6:].strip()
                if public_id not in self.seen:
                    self.seen.add(public_id)
                    self.signalled[public_id] = time.perf_counter()
                    self._fetch_board(public_id)

    def _fetch_board(self, public_id):
        self.board.request("GET", "/ems/board/panel", headers={
            "Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), "HX-Request": "true"})
        page = self.board.getresponse().read().decode()
        if public_id in page:
            with self.changed:
                self.visible[public_id] = time.perf_counter()
                self.changed.notify_all()

    def wait_visible(self, public_id, timeout=10):
        deadline = time.perf_counter() + timeout
        with self.changed:
            while public_id not in self.visible:
                left = deadline - time.perf_counter()
                if left <= 0:
                    return None
                self.changed.wait(left)
            return self.visible[public_id]


# --- the run ----------------------------------------------------------------------------------

def _children(pid):
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if re.search(rf"^PPid:\s+{pid}$", status, re.M):
                found.append(int(entry.name))
    return found


def _memory_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


_ENGINES = {}


def _sql(url, query, **params):
    """The rows of one read of the bench databases (one engine per database, kept)."""
    import sqlalchemy as sa

    if url not in _ENGINES:
        _ENGINES[url] = _engine(url)
    with _ENGINES[url].connect() as conn:
        return conn.execute(sa.text(query), params).all()


def page_list(trip, ems_trip):
    """``[(label, role, path)]``: every page and partial measured, the request pages showing
    ``trip`` (the hospital's and the center's) and ``ems_trip`` (the agency's), public ids."""
    t = trip
    return [
        (CEILING, None, "/bench/ping"),
        ("hospital dashboard", "hospital", "/hospital/"),
        ("hospital requests partial", "hospital", "/hospital/requests/panel"),
        ("hospital requests partial, cancelled tab", "hospital", "/hospital/requests/panel?tab=cancelled"),
        ("hospital request page", "hospital", f"/hospital/requests/{t}"),
        ("hospital request bids partial", "hospital", f"/hospital/requests/{t}/bids"),
        ("hospital analytics", "hospital", "/hospital/analytics"),
        ("EMS board", "ems", "/ems/"),
        ("EMS board partial", "ems", "/ems/board/panel"),
        ("EMS my trips", "ems", "/ems/trips"),
        ("EMS my trips partial, completed tab", "ems", "/ems/trips/panel?tab=completed"),
        ("EMS request page", "ems", f"/ems/requests/{ems_trip}"),
        ("EMS bid history", "ems", "/ems/history"),
        ("EMS analytics", "ems", "/ems/analytics"),
        ("regional board", "center", "/center/"),
        ("regional board partial", "center", "/center/board/panel"),
        ("center request page", "center", f"/center/requests/{t}"),
        ("center units", "center", "/center/units"),
        ("audit log", "center", "/center/audit"),
        ("regional analytics", "center", "/center/analytics"),
    ]


def pages(urls, hospital_code, agency_code):
    """``[(label, role, path)]``: every page measured, with the trips its request pages show."""
    hospital_id = _sql(urls["center"], "SELECT id FROM hospitals WHERE short_code = :c", c=hospital_code)[0][0]
    agency_id = _sql(urls["center"], "SELECT id FROM agencies WHERE short_code = :c", c=agency_code)[0][0]
    # The nurse's open request with the most bids; the dispatcher has bid on it if any such exists.
    trip = _sql(urls["hospital"], "SELECT public_id, id FROM transport_requests WHERE hospital_id = :h "
                "AND status = 'open' ORDER BY bid_count DESC, id LIMIT 1", h=hospital_id)[0]
    bid_on = {row[0] for row in _sql(urls["ems"], "SELECT trip_id FROM transport_bids WHERE agency_id = :a "
                                     "AND status = 'live'", a=agency_id)}
    ems_trip = trip[0]
    if bid_on:
        ems_trip = _sql(urls["hospital"], "SELECT public_id FROM transport_requests WHERE id = ANY(:ids) "
                        "ORDER BY id LIMIT 1", ids=list(bid_on))[0][0]
    return page_list(trip[0], ems_trip)


def _local_input(moment):
    zone = ZoneInfo(os.environ.get("MEDPORT_TIMEZONE", "America/New_York"))
    return moment.replace(tzinfo=UTC).astimezone(zone).strftime("%Y-%m-%dT%H:%M")


def _wait_for(url, query, timeout=10, **params):
    """Repeat a read until it finds rows (bounded); return them or None."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _sql(url, query, **params)
        if rows:
            return rows
        time.sleep(0.005)
    return None


def writes(sessions, watcher, urls, hospital_code, agency_code, count):
    """Post ``count`` requests, bid on each and award it; returns, per request, the milliseconds
    from sending the POST to: its answer, the EMS stream's signal, the board partial listing it."""
    nurse, dispatcher = sessions["hospital"], sessions["ems"]
    hospital_id = _sql(urls["center"], "SELECT id FROM hospitals WHERE short_code = :c", c=hospital_code)[0][0]
    agency_id = _sql(urls["center"], "SELECT id FROM agencies WHERE short_code = :c", c=agency_code)[0][0]
    facilities = _sql(urls["hospital"], "SELECT public_id, hospital_id FROM hospital_facilities "
                      "WHERE active ORDER BY id")
    origin = next(p for p, h in facilities if h == hospital_id)
    destination = next(p for p, h in facilities if h != hospital_id)
    units = [row[0] for row in _sql(urls["ems"], "SELECT public_id FROM units WHERE agency_id = :a "
                                    "AND active ORDER BY id", a=agency_id)]
    token = nurse.token("/hospital/")
    ems_token = dispatcher.token("/ems/")
    visible_ms = []
    now = datetime.now(UTC).replace(tzinfo=None)
    for i in range(count):
        # Pickups 26 to 44 hours ahead, inside every level's bidding lead time (48 h), so each
        # request takes bids at once: seven windows three hours apart. The units bid in turn and
        # each unit's next bid takes the next window, so a unit never has two overlapping bids
        # (for up to seven bids per unit).
        starts = now + timedelta(hours=26 + 3 * ((i // len(units)) % 7))
        form = dict(
            csrf_token=token, origin_facility=origin, pickup_location=BENCH_PICKUP,
            destination_facility=destination, destination_address="", level_of_care="BLS",
            urgency="routine", mobility="stretcher", window_start=_local_input(starts),
            window_end=_local_input(starts + timedelta(hours=1)), patient_ref="P-ACDEFH",
            age_group="adult", weight_kg="80", isolation="none", oxygen_lpm="0", other_needs="",
            notes="", bid_deadline_minutes="30", invite_mode="all", invite_all_after_minutes="")
        sent = time.perf_counter()
        answer = nurse.post("/hospital/requests/new", form, label="post a request")
        if answer.status != 302:
            raise RuntimeError(f"posting a request answered {answer.status}: {answer.text[:500]}")
        answered = time.perf_counter()
        public_id = answer.getheader("Location").rstrip("/").rsplit("/", 1)[1]
        shown = watcher.wait_visible(public_id)
        if shown is None:
            raise RuntimeError(f"request {public_id} did not reach the EMS board within 10 s")
        visible_ms.append(tuple((moment - sent) * 1000 for moment in (
            answered, watcher.signalled[public_id], shown)))
        answer = dispatcher.post(f"/ems/requests/{public_id}/bid", dict(
            csrf_token=ems_token, unit=units[i % len(units)], eta_minutes="15", note=""), label="post a bid")
        if answer.status != 302:
            raise RuntimeError(f"bidding answered {answer.status}: {answer.text[:500]}")
        # The relay tells the hospital of the bid (which moves the request's version).
        row = _wait_for(urls["hospital"], "SELECT version FROM transport_requests "
                        "WHERE public_id = :p AND bid_count > 0", p=public_id)
        if row is None:
            raise RuntimeError("the bid did not reach the hospital within 10 s")
        trip_id = _sql(urls["hospital"], "SELECT id FROM transport_requests WHERE public_id = :p",
                       p=public_id)[0][0]
        bid = _sql(urls["ems"], "SELECT public_id FROM transport_bids WHERE trip_id = :t AND agency_id = :a "
                   "AND status = 'live'", t=trip_id, a=agency_id)[0][0]
        answer = nurse.post(f"/hospital/requests/{public_id}/award",
                            dict(csrf_token=token, bid=bid, version=str(row[0][0])), label="award a bid")
        if answer.status != 302:
            raise RuntimeError(f"awarding answered {answer.status}: {answer.text[:500]}")
        # The next round starts once the award's follow-ups are applied (the bid accepted).
        if _wait_for(urls["ems"], "SELECT 1 FROM transport_bids WHERE public_id = :b "
                     "AND status = 'accepted'", b=bid) is None:
            raise RuntimeError("the award did not reach the EMS silo within 10 s")
    return visible_ms


def read_server_timing(response):
    """A response's ``Server-Timing`` header as ``{"app": ms, "db": {silo: ms}}`` (empty when absent)."""
    found = {}
    for part in (response.getheader("Server-Timing") or "").split(","):
        fields = dict(f.strip().split("=", 1) for f in part.split(";")[1:] if "=" in f)
        name = part.split(";")[0].strip()
        if "dur" not in fields:
            continue
        if name == "app":
            found["app"] = float(fields["dur"])
        elif name.startswith("db-"):
            found.setdefault("db", {})[name[3:]] = float(fields["dur"])
    return found


def _reset_to_werkzeug_hashes(urls):
    """Give the bench's three accounts werkzeug's default hash (scrypt) of their passwords."""
    import sqlalchemy as sa
    from werkzeug.security import generate_password_hash

    engine = _engine(urls["center"])
    with engine.begin() as connection:
        for email, password in ((NURSE, PASSWORD), (DISPATCHER, PASSWORD), (COORDINATOR, DEMO_PASSWORD)):
            connection.execute(sa.text("UPDATE users SET password_hash = :h WHERE email = :e"),
                               {"h": generate_password_hash(password), "e": email})
    engine.dispose()


def _percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def run_size(server, trips, args):
    """Prepare one size's databases, serve them, measure; returns the figures."""
    label = size_label(trips)
    urls = {silo: f"{server}/{name}" for silo, name in database_names(trips).items()}
    env = dict(os.environ)
    env.update({f"MEDPORT_{silo.upper()}_DATABASE_URL": url for silo, url in urls.items()})
    env.update({"SECRET_KEY": "bench-" + secrets.token_hex(16), "MEDPORT_SIGNAL_BACKEND": "postgres",
                "MEDPORT_INPROCESS_RELAY": "0", "MEDPORT_ACCESS_LOG": "", "MEDPORT_LOG_LEVEL": "warning"})
    prepare(server, trips, args, env)
    removed = remove_earlier_bench_rows(urls)
    if removed:
        print(f"[{label}] removed {removed} requests an earlier run posted")
    hospital_code, agency_code = choose_organisations(urls)
    ensure_users(urls, env, hospital_code, agency_code)

    # A script's own folder is on its import path; gunicorn imports this module as bench.*.
    from serving import free_port, wait_until_up

    timings = ROOT / "instance" / f"bench-dashboards-{label}.tsv"
    timings.unlink(missing_ok=True)
    before_timings = ROOT / "instance" / f"bench-dashboards-{label}-before.tsv"
    before_timings.unlink(missing_ok=True)
    port = free_port()
    log = open(ROOT / "instance" / "bench-dashboards-server.log", "a")

    def serve(code, timings_file, serve_port):
        return subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "-w", "1", "-b", f"127.0.0.1:{serve_port}",
             "bench.dashboards_bench:timed_app()"], cwd=code, env=dict(env, **{TIMINGS_ENV: str(timings_file)}),
            stdout=log, stderr=subprocess.STDOUT)

    server_process = serve(ROOT, timings, port)
    before_port = free_port() if args.before else None
    before_process = serve(Path(args.before).resolve(), before_timings, before_port) if args.before else None
    relay = subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "medport", "relay"],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(f"http://127.0.0.1:{port}", server_process, timeout=60)
        workers = _children(server_process.pid)
        before_sessions = None
        if before_process is not None:
            # The code before may know only werkzeug's hashes, and this code replaces them at
            # sign-in: the three accounts get a werkzeug hash and sign in to the code before
            # first (sessions live on the server, so an upgrade afterwards does not end them).
            _reset_to_werkzeug_hashes(urls)
            wait_until_up(f"http://127.0.0.1:{before_port}", before_process, timeout=60)
            before_sessions = {"hospital": Session(before_port, NURSE, PASSWORD),
                               "ems": Session(before_port, DISPATCHER, PASSWORD),
                               "center": Session(before_port, COORDINATOR, DEMO_PASSWORD), None: Session(before_port)}
        sessions = {"hospital": Session(port, NURSE, PASSWORD), "ems": Session(port, DISPATCHER, PASSWORD),
                    "center": Session(port, COORDINATOR, DEMO_PASSWORD), None: Session(port)}
        measured = pages(urls, hospital_code, agency_code)

        def fetch(page_label, role, path, tag):
            if before_sessions is not None:  # the same page from the code before, just before
                response = before_sessions[role].get(path, label=tag)
                if response.status != 200:
                    raise RuntimeError(f"{page_label} ({path}) answered {response.status} (before)")
            response = sessions[role].get(path, label=tag)
            if response.status != 200:
                raise RuntimeError(f"{page_label} ({path}) answered {response.status}")
            if tag == page_label:
                database_ms[page_label].append(sum(read_server_timing(response).get("db", {}).values()))

        database_ms = defaultdict(list)
        load_before = os.getloadavg()
        print(f"[{label}] measuring {len(measured)} pages x {args.samples} (+ warm-up) ...", flush=True)
        for page_label, role, path in measured:
            fetch(page_label, role, path, "first|" + page_label)
            for _ in range(args.warmup):
                fetch(page_label, role, path, "warm|" + page_label)
        for _ in range(args.samples):
            for page_label, role, path in measured:
                fetch(page_label, role, path, page_label)

        print(f"[{label}] posting {args.writes} requests, bids and awards ...", flush=True)
        watcher = BoardWatcher(port, sessions["ems"].cookies)
        watcher.start()
        if not watcher.connected.wait(10):
            raise RuntimeError("the EMS live stream did not open")
        visible_ms = writes(sessions, watcher, urls, hospital_code, agency_code, args.writes)
        load_after = os.getloadavg()
        peak_kb = {pid: _memory_kb(pid, "VmHWM") for pid in workers}
        relay_peak_kb = _memory_kb(relay.pid, "VmHWM")
    finally:
        processes = [p for p in (relay, server_process, before_process) if p is not None]
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)
        log.close()

    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()
    samples, cpu, first = _read_timings(timings)
    before = None
    if args.before:
        before_samples, before_cpu, _first = _read_timings(before_timings)
        before = {"samples": before_samples, "cpu": before_cpu, "code": str(Path(args.before).resolve())}
    return {"label": label, "trips": trips, "samples": samples, "cpu": cpu, "first": first,
            "database_ms": dict(database_ms), "before": before,
            "visible_ms": visible_ms, "peak_kb": peak_kb, "relay_peak_kb": relay_peak_kb,
            "hospital": hospital_code, "agency": agency_code, "load": (load_before, load_after)}


def _read_timings(path):
    """``(samples, cpu, first)`` of a timings file: per page, wall ms and CPU ms of each
    counted request, and the wall ms of its first."""
    samples, cpu, first = defaultdict(list), defaultdict(list), {}
    for line in path.read_text().splitlines():
        tag, ms, cpu_ms = line.split("\t")
        if tag.startswith("first|"):
            first[tag[6:]] = float(ms)
        elif not tag.startswith("warm|"):
            samples[tag].append(float(ms))
            cpu[tag].append(float(cpu_ms))
    return dict(samples), dict(cpu), first


# --- the report -------------------------------------------------------------------------------

def machine(server):
    import sqlalchemy as sa

    engine = _engine(f"{server}/postgres")
    with engine.connect() as conn:
        pg = conn.execute(sa.text("SHOW server_version")).scalar()
        settings = {name: conn.execute(sa.text(f"SHOW {name}")).scalar()
                    for name in ("shared_buffers", "work_mem", "effective_cache_size")}
    engine.dispose()
    mem_kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    import gunicorn

    return (f"{os.cpu_count()} CPUs ({cpu.group(1).strip() if cpu else platform.machine()}), "
            f"{mem_kb / 1024 / 1024:.1f} GiB RAM, PostgreSQL {pg} "
            f"({', '.join(f'{k} {v}' for k, v in settings.items())}), Python {platform.python_version()}, "
            f"gunicorn {gunicorn.__version__} (1 gevent worker), {platform.system()} {platform.release()}")


def _cell(values, ceiling):
    p50, p95 = statistics.median(values), _percentile(values, 0.95)
    return f"{p50:.1f} / {p95:.1f}", f"{p50 / ceiling[0]:.0f}× / {p95 / ceiling[1]:.0f}×"


def compare(r):
    """The worker CPU of each page before and after, from one run (requests interleaved: each
    page from the code before, then from this one), as ms and as a multiple of each server's
    bare endpoint p50 (wall)."""
    before = r["before"]
    ceiling_before = statistics.median(before["samples"][CEILING])
    ceiling_after = statistics.median(r["samples"][CEILING])
    print()
    print(f"[{r['label']}] before = {before['code']}, after = this checkout; interleaved, one run. "
          "CPU ms = the worker's CPU per request, p50; × ceiling = that CPU over the bare endpoint's p50 "
          f"(before {ceiling_before:.2f} ms, after {ceiling_after:.2f} ms).")
    print()
    print("| page | CPU ms before | CPU ms after | × ceiling before | × ceiling after | after / before |")
    print("|---|---:|---:|---:|---:|---:|")
    for page_label in r["cpu"]:
        if page_label not in before["cpu"]:
            continue
        old, new = statistics.median(before["cpu"][page_label]), statistics.median(r["cpu"][page_label])
        print(f"| {page_label} | {old:.1f} | {new:.1f} | {old / ceiling_before:.1f}× | {new / ceiling_after:.1f}× "
              f"| {new / old:.2f} |")


def report(results, server, args):
    print()
    print(f"Machine: {machine(server)}")
    print(f"{args.samples} samples per page after {args.warmup + 1} warm-up requests; "
          f"{args.writes} of each write; at every size {args.per_day} trips a day and {args.live} live trips, "
          "so the sizes differ in how far back the history reaches.")
    print("Server-side times (WSGI middleware in the gunicorn worker), milliseconds p50 / p95; "
          "× = multiple of the bare endpoint's p50 / p95; first = the page's first request after start; "
          "CPU = the worker's own CPU time per request, p50 (the database's is not in it); "
          "DB = the database time the response's Server-Timing header gives (all silos), p50.")
    print()
    head = ["page"]
    for r in results:
        head += [f"{r['label']} p50 / p95 ms", f"{r['label']} × ceiling", f"{r['label']} first ms",
                 f"{r['label']} CPU ms", f"{r['label']} DB ms"]
    if len(results) > 1:
        head.append(f"{results[-1]['label']} / {results[0]['label']} (p50, p95)")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    labels = list(results[0]["samples"])
    for page_label in labels:
        row = [page_label]
        for r in results:
            ceiling = (statistics.median(r["samples"][CEILING]), _percentile(r["samples"][CEILING], 0.95))
            values = r["samples"].get(page_label)
            row += list(_cell(values, ceiling)) if values else ["—", "—"]
            row.append(f"{r['first'][page_label]:.0f}" if page_label in r["first"] else "—")
            row.append(f"{statistics.median(r['cpu'][page_label]):.1f}" if values else "—")
            database = r["database_ms"].get(page_label)
            row.append(f"{statistics.median(database):.1f}" if database else "—")
        if len(results) > 1:
            small, big = results[0]["samples"].get(page_label), results[-1]["samples"].get(page_label)
            row.append(f"{statistics.median(big) / statistics.median(small):.2f}, "
                       f"{_percentile(big, 0.95) / _percentile(small, 0.95):.2f}" if small and big else "—")
        print("| " + " | ".join(row) + " |")
    for r in results:
        if r["before"]:
            compare(r)
    print()
    for r in results:
        answered, signalled, visible = zip(*r["visible_ms"], strict=True)
        print(f"[{r['label']}] post → visible on the EMS board (client-side, end to end): "
              f"p50 {statistics.median(visible):.1f} ms, p95 {_percentile(visible, 0.95):.1f} ms, "
              f"max {max(visible):.1f} ms over {len(visible)} requests; from sending the POST, p50: "
              f"answered {statistics.median(answered):.1f} ms, signal on the EMS stream "
              f"{statistics.median(signalled):.1f} ms, board partial listing it {statistics.median(visible):.1f} ms")
        peaks = ", ".join(f"{kb / 1024:.1f} MiB" for kb in r["peak_kb"].values())
        print(f"[{r['label']}] peak RSS (VmHWM): gunicorn worker {peaks}; relay process "
              f"{r['relay_peak_kb'] / 1024:.1f} MiB; signed in as the nurse of {r['hospital']} and the "
              f"dispatcher of {r['agency']}")
        print(f"[{r['label']}] load average (1, 5, 15 min) before {' '.join(f'{x:.2f}' for x in r['load'][0])}, "
              f"after {' '.join(f'{x:.2f}' for x in r['load'][1])}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trips", type=int, nargs="+", default=[10_000, 1_000_000],
                        help="history sizes, smallest first (default: 10000 1000000)")
    parser.add_argument("--per-day", type=int, default=1370,
                        help="trips a day at every size: the history reaches back trips / per-day days "
                             "(default 1370: a million trips over two years)")
    parser.add_argument("--live", type=int, default=200, help="trips in a live state at every size")
    parser.add_argument("--samples", type=int, default=200, help="timed requests per page")
    parser.add_argument("--warmup", type=int, default=5, help="untimed requests per page before sampling")
    parser.add_argument("--writes", type=int, default=30, help="requests posted, bid on and awarded")
    parser.add_argument("--before", help="a checkout of earlier code: it is served too, on the same databases, "
                                         "and every page is asked of it just before this one (CPU before/after)")
    parser.add_argument("--server", default=os.environ.get("MEDPORT_BENCH_POSTGRES_URL",
                                                           "postgresql://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from dashboard.config import normalise_url

    server = normalise_url(args.server.rstrip("/"))
    results = [run_size(server, trips, args) for trips in sorted(args.trips)]
    report(results, server, args)


if __name__ == "__main__":
    main()
