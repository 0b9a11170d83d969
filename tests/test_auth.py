"""Sign-in, roles, throttling, CSRF, sessions, audit."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from dashboard import create_app
from dashboard.extensions import db
from dashboard.models.center import AuditLog, User

USERS = [
    ("coordinator@medport.test", "/center/"),
    ("admin@medport.test", "/center/"),
    ("nurse@altoona.medport.test", "/hospital/"),
    ("dispatch@altoonaems.medport.test", "/ems/"),
]
ROLE_PAGES = ["/hospital/", "/ems/", "/center/"]


def actions(app, action):
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditLog).where(AuditLog.action == action)))


@pytest.mark.parametrize("email,home", USERS)
def test_each_demo_user_lands_on_their_page_and_only_there(client, auth, demo, email, home):
    response = auth.login(email)
    assert response.status_code == 302
    assert response.headers["Location"] == home
    assert client.get(home).status_code == 200
    for page in ROLE_PAGES:
        if page != home:
            assert client.get(page).status_code == 403, page


def test_login_is_audited_with_address(app, auth, demo):
    auth.login("nurse@altoona.medport.test")
    auth.logout()
    (success,) = actions(app, "login.success")
    assert success.user_email == "nurse@altoona.medport.test" and success.ip == "127.0.0.1"
    assert len(actions(app, "logout")) == 1


@pytest.mark.parametrize("email,password", [
    ("nurse@altoona.medport.test", "wrong-password"),
    ("nobody@medport.test", "medport-demo"),
])
def test_wrong_credentials_get_one_clear_message(app, auth, demo, email, password):
    response = auth.login(email, password)
    assert response.status_code == 401
    assert b"Wrong email or password." in response.data
    assert len(actions(app, "login.failed")) == 1


@pytest.mark.parametrize("data", [
    {"email": "", "password": ""},
    {"email": "nurse@altoona.medport.test", "password": ""},
    {"email": "x" * 300 + "@medport.test", "password": "medport-demo"},
    {"email": "nurse@altoona.medport.test", "password": "p" * 500},
])
def test_empty_and_overlong_fields_are_400(client, demo, data):
    response = client.post("/login", data=data)
    assert response.status_code == 400
    assert b"field-msg" in response.data


def test_failed_logins_are_throttled_per_account_and_address(app, auth, demo):
    """More in test_login_throttling.py (the backoff, the backstop, other addresses)."""
    for _ in range(app.config["MEDPORT_LOGIN_MAX_FAILURES"]):
        assert auth.login(password="wrong-password").status_code == 401
    throttled = auth.login()  # even the right password waits now, from this address
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert b"Too many failed sign-in attempts for this account from this address" in throttled.data
    # Another account from the same address is not blocked yet.
    assert auth.login("coordinator@medport.test").status_code == 302


def test_failed_logins_are_throttled_per_address(app, auth, demo):
    app.config["MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS"] = 3
    for i in range(3):
        assert auth.login(f"someone{i}@medport.test", "x").status_code == 401
    response = auth.login("coordinator@medport.test")
    assert response.status_code == 429
    assert b"from this address" in response.data


def test_next_is_followed_only_on_site(client, auth, demo):
    assert auth.login(next="/hospital/?tab=open").headers["Location"] == "/hospital/?tab=open"
    auth.logout()
    for evil in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)"]:
        response = auth.login(next=evil)
        assert response.status_code == 302
        assert response.headers["Location"] == "/hospital/", evil
        auth.logout()


def test_login_page_drops_an_offsite_next(client):
    page = client.get("/login?next=https://evil.example/").data.decode()
    assert "evil.example" not in page


def test_anonymous_is_sent_to_login_and_htmx_gets_hx_redirect(client):
    response = client.get("/hospital/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    response = client.get("/hospital/", headers={"HX-Request": "true"})
    assert response.status_code == 401
    assert response.headers["HX-Redirect"].startswith("/login")


def test_session_cookie_flags_and_fresh_session_at_login(client, auth, demo):
    with client.session_transaction() as session:
        session["planted"] = "by-an-attacker"
    response = auth.login()
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    with client.session_transaction() as session:
        assert "planted" not in session


def test_secure_cookie_when_configured(migrated_config):
    app = create_app(dict(migrated_config, SESSION_COOKIE_SECURE=True))
    with app.app_context():
        from dashboard.seed import demo

        if not demo.is_seeded():
            demo.seed()
    response = app.test_client().post("/login", data={"email": "admin@medport.test",
                                                      "password": "medport-demo"})
    assert "Secure" in response.headers["Set-Cookie"]


def test_deactivation_and_epoch_bump_end_the_session(app, client, auth, demo):
    auth.login()
    assert client.get("/hospital/").status_code == 200
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "nurse@altoona.medport.test"))
        user.session_epoch += 1
        db.session.commit()
    assert client.get("/hospital/").status_code == 302
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "nurse@altoona.medport.test"))
        user.active = False
        db.session.commit()
    response = auth.login()
    assert response.status_code == 403 and b"deactivated" in response.data


def test_must_change_password_blocks_other_pages_until_changed(app, client, auth, demo):
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "nurse@altoona.medport.test"))
        user.must_change_password = True
        db.session.commit()
    assert auth.login().headers["Location"] == "/account/password"
    assert client.get("/hospital/").headers["Location"] == "/account/password"
    short = client.post("/account/password", data={"current_password": "medport-demo",
                                                   "new_password": "short", "confirm": "short"})
    assert short.status_code == 400
    ok = client.post("/account/password", data={"current_password": "medport-demo",
                                                "new_password": "a-new-long-password",
                                                "confirm": "a-new-long-password"})
    assert ok.status_code == 302
    assert client.get("/hospital/").status_code == 200


def test_csrf_is_required_and_survives_a_shift(migrated_config):
    app = create_app(dict(migrated_config, WTF_CSRF_ENABLED=True))
    assert app.config["WTF_CSRF_TIME_LIMIT"] >= 12 * 3600
    with app.app_context():
        from dashboard.seed import demo

        if not demo.is_seeded():
            demo.seed()
    client = app.test_client()
    missing = client.post("/login", data={"email": "admin@medport.test", "password": "medport-demo"})
    assert missing.status_code == 400 and b"security token" in missing.data
    forged = client.post("/login", data={"email": "admin@medport.test", "password": "medport-demo",
                                         "csrf_token": "forged"})
    assert forged.status_code == 400
    page = client.get("/login").data.decode()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    ok = client.post("/login", data={"email": "admin@medport.test", "password": "medport-demo",
                                     "csrf_token": token})
    assert ok.status_code == 302
    # htmx requests carry the token in a header, taken from <body hx-headers>.
    body = client.get("/center/").data.decode()
    header_token = re.search(r'"X-CSRFToken": "([^"]+)"', body).group(1)
    logout = client.post("/logout", headers={"X-CSRFToken": header_token})
    assert logout.status_code == 302


def test_error_pages_use_the_layout(client, auth, demo):
    auth.login()
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert b"Not found" in response.data and b"Sign out" in response.data
    forbidden = client.get("/center/")
    assert forbidden.status_code == 403 and b"Sign out" in forbidden.data


def test_security_headers(client):
    response = client.get("/login")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in response.headers
    secure = client.get("/login", base_url="https://localhost")
    assert "max-age" in secure.headers["Strict-Transport-Security"]


def test_sign_out_revokes_the_session_even_for_a_copied_cookie(app, client, auth, demo):
    auth.login()
    with client.session_transaction() as session:
        stolen = dict(session)
    auth.logout()
    thief = app.test_client()
    with thief.session_transaction() as session:
        session.update(stolen)
    response = thief.get("/hospital/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")


def test_two_sessions_of_one_user_are_independent(app, auth, demo):
    first, second = app.test_client(), app.test_client()
    for c in (first, second):
        assert c.post("/login", data={"email": "nurse@altoona.medport.test",
                                      "password": "medport-demo"}).status_code == 302
    first.post("/logout")
    assert first.get("/hospital/").status_code == 302
    assert second.get("/hospital/").status_code == 200


GEVENT_PASSWORD_CHECK = """
from gevent import monkey
monkey.patch_all()
import gevent
from dashboard import hashing
from dashboard.models.center import User

user = User(password_hash=hashing.make_hash("correct horse battery"))
ticks = []

def ticker():
    while True:
        ticks.append(1)
        gevent.sleep(0.001)

other = gevent.spawn(ticker)
gevent.sleep(0)
before = len(ticks)
right, wrong = user.check_password("correct horse battery"), user.check_password("wrong horse")
print(right, wrong, len(ticks) - before)
other.kill()
"""


def test_password_checks_leave_a_gevent_worker_free_for_its_other_requests():
    """The hash runs in gevent's thread pool: another greenlet of the worker keeps running meanwhile
    (checked inline, the loop would stall and the other greenlet would not run at all)."""
    pytest.importorskip("gevent", reason="gevent is installed with requirements.txt")
    done = subprocess.run([sys.executable, "-c", GEVENT_PASSWORD_CHECK], capture_output=True, text=True,
                          timeout=120, cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr
    right, wrong, ticks = done.stdout.split()
    assert (right, wrong) == ("True", "False")
    assert int(ticks) >= 2
