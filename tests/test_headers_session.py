"""Response headers on every kind of answer, and sessions that end when they should.

Headers: a Content-Security-Policy that allows no inline script (and pages
that need none), nosniff, a referrer policy, no framing; HSTS only when the
request really came over HTTPS (directly, or through a trusted proxy).
Sessions: nothing planted before sign-in survives it; sign-out, deactivation,
a password reset, a revoked session, signing in again over a session and (for the
user's other sessions) changing one's own password end the session, its htmx panels and
its open event stream (``event: session-ended`` at the stream's next session
check, even when no relay delivers the account's signal), and a deactivated
account's old sessions stay ended after it is re-activated.
Sign-in throttling and the basic cookie flags are tested in test_auth.py.
"""
import re
from html.parser import HTMLParser

import pytest
import sqlalchemy as sa

from dashboard import create_app
from dashboard.extensions import db
from dashboard.models.center import AuditLog, User, UserSession
from dashboard.models.hospital import TransportRequest
from dashboard.services.silos import SiloUnavailable
from tests.conftest import DEMO_PASSWORD
from tests.helpers import Stream, signed_in

NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"
ADMIN = "admin@medport.test"


# --- headers ------------------------------------------------------------------------------------

def assert_safe_headers(response, what):
    """The headers every answer carries, over plain HTTP."""
    headers = response.headers
    csp = headers.get("Content-Security-Policy", "")
    directives = dict((part.strip().split(" ", 1) + [""])[:2] for part in csp.split(";") if part.strip())
    assert directives.get("script-src") == "'self'", (what, csp)
    assert directives.get("style-src") == "'self'", (what, csp)
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, what
    assert directives.get("object-src") == "'none'" and directives.get("base-uri") == "'none'", what
    assert directives.get("frame-ancestors") == "'none'", what
    assert headers.get("X-Frame-Options") == "DENY", what
    assert headers.get("X-Content-Type-Options") == "nosniff", what
    assert headers.get("Referrer-Policy") in ("same-origin", "strict-origin-when-cross-origin", "no-referrer"), what
    assert "Strict-Transport-Security" not in headers, what  # plain HTTP here


class InlineCode(HTMLParser):
    """What a strict CSP would block in a page: inline scripts, event handlers, style attributes,
    ``javascript:`` links, htmx's inline handlers."""

    def __init__(self):
        super().__init__()
        self.found = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script":
            self._in_script = "src" not in a
            if a.get("type") == "application/json":
                self._in_script = False
        for name, value in attrs:
            if name.startswith("on") or name.startswith("hx-on") or name == "style":
                self.found.append(f"<{tag} {name}=…>")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.found.append(f"<{tag} {name}=javascript:…>")

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.found.append("inline <script>")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False


def inline_code(html):
    """What in ``html`` the Content-Security-Policy would block."""
    parser = InlineCode()
    parser.feed(html)
    return parser.found


def test_the_inline_code_check_finds_what_the_policy_would_block():
    page = ('<script src="/static/medport.js"></script><script>alert(1)</script>'
            '<a href="javascript:go()">x</a><p style="color:red" onclick="x()">y</p>'
            '<button hx-on:click="x()">z</button>')
    assert len(inline_code(page)) == 5
    assert inline_code('<script src="/static/medport.js" defer></script><p class="x">ok</p>') == []


def _pages(app):
    """(client, url, kind) for each kind of answer: pages of every role, partials, exports,
    the stream, JSON, static files, redirects and error pages."""
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest.public_id).limit(1))
    anonymous = app.test_client()
    nurse, dispatch, coordinator, admin = (signed_in(app, e) for e in (NURSE, DISPATCH, COORDINATOR, ADMIN))
    return [
        (anonymous, "/login", "public page"),
        (anonymous, "/", "redirect"),
        (anonymous, "/hospital/", "redirect to sign in"),
        (anonymous, "/healthz", "JSON"),
        (anonymous, "/static/medport.css", "static file"),
        (anonymous, "/static/medport.js", "static script"),
        (anonymous, "/no/such/page", "404 page"),
        (nurse, "/hospital/", "hospital page"),
        (nurse, "/hospital/requests/panel", "partial"),
        (nurse, "/hospital/requests/new", "form page"),
        (nurse, "/hospital/analytics", "charts page"),
        (nurse, "/center/", "403 page"),
        (nurse, "/account/password", "account page"),
        (dispatch, "/ems/", "EMS page"),
        (dispatch, "/ems/units", "EMS form page"),
        (dispatch, "/ems/trips.csv", "CSV export"),
        (dispatch, "/ems/analytics?format=csv&table=trips", "analytics export"),
        (coordinator, "/center/", "center page"),
        (coordinator, f"/center/requests/{trip}", "request page"),
        (coordinator, "/center/audit/export.csv", "audit export"),
        (coordinator, "/center/audit?after=x", "400 page"),
        (coordinator, "/center/analytics", "center charts page"),
        (admin, "/center/users", "admin page"),
        (admin, "/center/config", "admin form page"),
        (admin, "/logout", "405 page"),
    ]


def test_every_kind_of_answer_carries_the_security_headers(app, demo):
    for client, url, kind in _pages(app):
        response = client.get(url, buffered=True)
        assert response.status_code < 500, (kind, url)
        assert_safe_headers(response, kind)
        if response.mimetype == "text/html":
            assert not inline_code(response.get_data(as_text=True)), (kind, url, inline_code(
                response.get_data(as_text=True))[:5])
            if response.status_code == 200 and response.request.path != "/login":
                assert response.headers.get("Cache-Control") == "no-store", kind
    stream = signed_in(app, NURSE).get("/events", buffered=False)
    try:
        assert stream.mimetype == "text/event-stream"
        assert_safe_headers(stream, "event stream")
    finally:
        stream.close()
    htmx = app.test_client().get("/hospital/requests/panel", headers={"HX-Request": "true"})
    assert htmx.status_code == 401
    assert_safe_headers(htmx, "htmx sign-in answer")


def test_error_pages_of_a_failure_carry_the_headers_too(migrated_config):
    app = create_app(dict(migrated_config, PROPAGATE_EXCEPTIONS=False))

    @app.route("/__failing")
    def failing():
        raise RuntimeError("a bug")

    @app.route("/__silo_down")
    def silo_down():
        raise SiloUnavailable("hospital")

    client = app.test_client()
    for url, status in (("/__failing", 500), ("/__silo_down", 503)):
        response = client.get(url)
        assert response.status_code == status
        assert_safe_headers(response, url)
        assert not inline_code(response.get_data(as_text=True))
    too_large = client.post("/login", data={"email": "x" * (300 * 1024), "password": "p"})
    assert too_large.status_code == 413
    assert_safe_headers(too_large, "413")


@pytest.mark.parametrize("hops,headers,base_url,hsts", [
    (0, {}, "http://localhost", False),
    (0, {}, "https://localhost", True),
    (0, {"X-Forwarded-Proto": "https"}, "http://localhost", False),  # no trusted proxy: ignored
    (1, {"X-Forwarded-Proto": "https"}, "http://localhost", True),
    (1, {"X-Forwarded-Proto": "http"}, "http://localhost", False),
    (1, {}, "http://localhost", False),
])
def test_hsts_only_when_the_request_came_over_https(migrated_config, hops, headers, base_url, hsts):
    app = create_app(dict(migrated_config, MEDPORT_PROXY_HOPS=hops))
    response = app.test_client().get("/login", headers=headers, base_url=base_url)
    assert response.status_code == 200
    if hsts:
        value = response.headers["Strict-Transport-Security"]
        assert int(re.search(r"max-age=(\d+)", value).group(1)) >= 180 * 24 * 3600
    else:
        assert "Strict-Transport-Security" not in response.headers


# --- sessions: fixation -------------------------------------------------------------------------

def test_the_cookie_from_before_sign_in_does_not_sign_anyone_in(app, client, demo):
    """An attacker who knows the victim's cookie from before sign-in gains nothing by it."""
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by-an-attacker"
        before = dict(session)
    assert client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD}).status_code == 302
    with client.session_transaction() as session:
        after = dict(session)
    assert "planted" not in after and after != before
    attacker = app.test_client()
    with attacker.session_transaction() as session:
        session.update(before)
    response = attacker.get("/hospital/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_a_csrf_token_planted_before_sign_in_is_worthless_after(app, client, demo):
    app.config["WTF_CSRF_ENABLED"] = True
    page = client.get("/login").get_data(as_text=True)
    planted = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD, "csrf_token": planted})
    assert response.status_code == 302
    refused = client.post("/hospital/preferences", data={"csrf_token": planted, "agency": "x"})
    assert refused.status_code == 400 and b"security token" in refused.data
    fresh = re.search(r'"X-CSRFToken": "([^"]+)"', client.get("/hospital/").get_data(as_text=True)).group(1)
    assert fresh != planted


def test_each_sign_in_is_a_new_server_side_session(app, demo):
    first, second = signed_in(app, NURSE), signed_in(app, NURSE)
    with app.app_context():
        tokens = db.session.scalars(sa.select(UserSession.token).join(User, User.id == UserSession.user_id)
                                    .where(User.email == NURSE)).all()
    assert len(set(tokens)) == 2
    for client in (first, second):
        with client.session_transaction() as session:
            assert session["_user_id"].rsplit(":", 1)[1] in tokens


# --- sessions: ending them ------------------------------------------------------------------------

def _user(email):
    """The account (inside an app context)."""
    return db.session.scalar(sa.select(User).where(User.email == email))


def _deactivate(admin, app, email):
    """Deactivate through the user page, as an administrator does."""
    with app.app_context():
        user = _user(email)
        form = {"email": user.email, "display_name": user.display_name, "role": user.role,
                "hospital": user.hospital_id or "", "agency": user.agency_id or ""}  # active unticked
        public_id = user.public_id
    response = admin.post(f"/center/users/{public_id}", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    with app.app_context():
        assert not _user(email).active


@pytest.fixture
def quick_checks(app):
    """Streams check their session every 0.3 s (a deployment: every minute)."""
    app.config["MEDPORT_STREAM_SESSION_CHECK_SECONDS"] = 0.3
    return app


def assert_signed_out(client):
    """Pages send to sign in, htmx panels get ``HX-Redirect``, the stream is refused."""
    page = client.get("/hospital/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    panel = client.get("/hospital/requests/panel", headers={"HX-Request": "true"})
    assert panel.status_code == 401 and panel.headers["HX-Redirect"].startswith("/login")
    assert client.get("/events").status_code == 401


def test_deactivation_ends_pages_panels_and_the_open_stream(app, demo, quick_checks):
    admin = signed_in(app, ADMIN)
    nurse, dispatcher = signed_in(app, NURSE), signed_in(app, DISPATCH)
    nurse_stream, other_stream = Stream(nurse), Stream(dispatcher)
    try:
        nurse_stream.read()
        other_stream.read()
        _deactivate(admin, app, NURSE)  # no relay run: the stream's own session check must notice
        assert nurse_stream.read_until("event: session-ended\n", max_reads=5)
        nurse_stream.read()
        assert nurse_stream.ended
        assert other_stream.read_until(": keep-alive", max_reads=5)
        assert "session-ended" not in other_stream.text
    finally:
        nurse_stream.close()
        other_stream.close()
    assert_signed_out(nurse)
    assert dispatcher.get("/ems/").status_code == 200


def test_re_activation_does_not_bring_old_sessions_back(app, demo):
    admin, nurse = signed_in(app, ADMIN), signed_in(app, NURSE)
    _deactivate(admin, app, NURSE)
    with app.app_context():
        user = _user(NURSE)
        form = {"email": user.email, "display_name": user.display_name, "role": user.role,
                "hospital": user.hospital_id, "agency": "", "active": "y"}
        public_id = user.public_id
    assert admin.post(f"/center/users/{public_id}", data=form).status_code == 302
    assert_signed_out(nurse)
    assert signed_in(app, NURSE).get("/hospital/").status_code == 200


def test_a_password_reset_ends_the_session_and_its_stream(app, demo, quick_checks):
    admin, nurse = signed_in(app, ADMIN), signed_in(app, NURSE)
    stream = Stream(nurse)
    try:
        stream.read()
        with app.app_context():
            public_id = _user(NURSE).public_id
        assert admin.post(f"/center/users/{public_id}/reset-password").status_code == 200
        assert stream.read_until("event: session-ended\n", max_reads=5)
    finally:
        stream.close()
    assert_signed_out(nurse)


def test_revoking_one_session_ends_its_stream_and_not_the_other(app, demo, quick_checks):
    """One session revoked on the server (signed out elsewhere, or by an operator): its stream
    ends at the next check; the same user's other session streams on."""
    first, second = signed_in(app, NURSE), signed_in(app, NURSE)
    with first.session_transaction() as session:
        token = session["_user_id"].rsplit(":", 1)[1]
    streams = Stream(first), Stream(second)
    try:
        for stream in streams:
            stream.read()
        with app.app_context():
            db.session.execute(sa.update(UserSession).where(UserSession.token == token)
                               .values(revoked_at=sa.func.now()))
            db.session.commit()
        assert streams[0].read_until("event: session-ended\n", max_reads=5)
        assert streams[1].read_until(": keep-alive", max_reads=5)
        assert "session-ended" not in streams[1].text
    finally:
        for stream in streams:
            stream.close()
    assert_signed_out(first)
    assert second.get("/hospital/").status_code == 200


def test_after_sign_out_the_old_cookie_opens_no_stream_and_no_panel(app, demo):
    client = signed_in(app, NURSE)
    with client.session_transaction() as session:
        copied = dict(session)
    assert client.post("/logout").status_code == 302
    thief = app.test_client()
    with thief.session_transaction() as session:
        session.update(copied)
    assert_signed_out(thief)


def _token(client):
    with client.session_transaction() as session:
        return session["_user_id"].rsplit(":", 1)[1]


def _revoked(app, token):
    with app.app_context():
        return db.session.scalar(sa.select(UserSession.revoked_at).where(UserSession.token == token)) is not None


def _copy(app, client, **environ):
    """A second browser holding a copy of ``client``'s session cookie (optionally elsewhere)."""
    with client.session_transaction() as session:
        copied = dict(session)
    other = app.test_client()
    other.environ_base.update(environ)
    with other.session_transaction() as session:
        session.update(copied)
    return other


NEW_PASSWORD = "a-new-long-password"


def test_changing_ones_password_ends_the_other_sessions_and_their_streams(app, demo, quick_checks):
    """The browser the password is changed in stays signed in; every other session of the user
    is revoked, its pages sign out at once and its stream ends at its next session check
    (no relay runs here)."""
    here, elsewhere, colleague = signed_in(app, NURSE), signed_in(app, NURSE), signed_in(app, DISPATCH)
    streams = Stream(here), Stream(elsewhere), Stream(colleague)
    try:
        for stream in streams:
            stream.read()
        changed = here.post("/account/password", data={"current_password": DEMO_PASSWORD,
                                                       "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
        assert changed.status_code == 302, changed.get_data(as_text=True)[:300]
        assert streams[1].read_until("event: session-ended\n", max_reads=20)
        for stream in (streams[0], streams[2]):
            assert stream.read_until(": keep-alive", max_reads=20)
            assert "session-ended" not in stream.text
    finally:
        for stream in streams:
            stream.close()
    assert not _revoked(app, _token(here)) and _revoked(app, _token(elsewhere))
    assert_signed_out(elsewhere)
    assert here.get("/hospital/").status_code == 200
    assert colleague.get("/ems/").status_code == 200
    with app.app_context():
        (entry,) = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "user.password_changed"))
        assert entry.detail == "1 other session(s) ended"
    # The old password is gone; the new one signs in.
    assert app.test_client().post("/login", data={"email": NURSE, "password": DEMO_PASSWORD}).status_code == 401
    assert signed_in_with(app, NURSE, NEW_PASSWORD).get("/hospital/").status_code == 200


def signed_in_with(app, email, password):
    client = app.test_client()
    assert client.post("/login", data={"email": email, "password": password}).status_code == 302
    return client


@pytest.mark.parametrize("again_as", [NURSE, COORDINATOR])
def test_signing_in_again_over_a_live_session_revokes_the_old_one(app, demo, again_as):
    client = signed_in(app, NURSE)
    old_token = _token(client)
    copied = _copy(app, client)
    assert copied.get("/hospital/").status_code == 200
    assert client.post("/login", data={"email": again_as, "password": DEMO_PASSWORD}).status_code == 302
    assert _revoked(app, old_token) and not _revoked(app, _token(client))
    assert_signed_out(copied)
    home = "/hospital/" if again_as == NURSE else "/center/"
    assert client.get(home).status_code == 200


def test_a_failed_sign_in_over_a_live_session_leaves_it_alone(app, demo):
    client = signed_in(app, NURSE)
    token = _token(client)
    assert client.post("/login", data={"email": NURSE, "password": "wrong-password"}).status_code == 401
    assert not _revoked(app, token)
    assert client.get("/hospital/").status_code == 200


def test_a_session_is_bound_to_its_server_side_token(app, demo):
    """Not to the address or user agent (crews change networks while driving): a copy of the
    cookie works while its session lives, from anywhere, and nowhere once it is revoked."""
    from dashboard.extensions import login_manager

    assert not login_manager.session_protection and not app.config.get("SESSION_PROTECTION")
    client = signed_in(app, NURSE)
    moved = _copy(app, client, REMOTE_ADDR="198.51.100.7", HTTP_USER_AGENT="Crew tablet/2.0")
    assert moved.get("/hospital/").status_code == 200
    with moved.session_transaction() as session:
        assert session["_user_id"].rsplit(":", 1)[1] == _token(client)
    assert client.post("/logout").status_code == 302
    assert_signed_out(moved)
    assert_signed_out(_copy(app, moved))


def test_the_session_lasts_a_shift_and_no_longer(app, client, demo):
    response = client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "Expires=" in cookie
    lifetime = app.permanent_session_lifetime.total_seconds()
    assert 12 * 3600 <= lifetime <= 24 * 3600


def test_a_pool_with_no_free_connection_answers_busy_not_an_error(migrated_config):
    """Overload (every pooled connection held past the pool's timeout) is a 503 with Retry-After."""
    from dashboard import create_app
    from dashboard.extensions import db

    # Whole seconds: Flask-SQLAlchemy builds engines with SQLAlchemy's engine_from_config, which
    # reads pool_timeout as an int (0.2 would be 0: no wait at all, even for the test's own
    # checkout below, which then failed whenever the process's signal listener, started by an
    # earlier test, was reading through this newest app's pool at that moment); the
    # environment's MEDPORT_DB_POOL_TIMEOUT_SECONDS is whole seconds too.
    config = dict(migrated_config, SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0,
                                                              "pool_timeout": 1})
    app = create_app(config)
    client = app.test_client()
    with app.app_context():
        assert db.engine.pool.timeout() == 1
        held = db.engine.connect()  # the center pool's only connection
        try:
            response = client.post("/login", data={"email": "nobody@medport.test", "password": "x" * 12})
        finally:
            held.close()
            db.engine.dispose()
    assert response.status_code == 503, response.status_code
    assert response.headers["Retry-After"] == "5"
    assert b"very busy" in response.data
