"""Sign-in throttling that cannot be reset by an attacker's own account, cannot be turned
against the account's owner, and does not tell known emails from unknown ones by time.

Time passing is played by moving the audit log's failures back (the counts are read from
it), so nothing here waits on the clock.
"""
from datetime import timedelta

import argon2
import pytest
import sqlalchemy as sa

from dashboard import hashing
from dashboard.extensions import db
from dashboard.models.center import AuditLog, User
from dashboard.services import accounts
from tests.conftest import DEMO_PASSWORD

NURSE = "nurse@altoona.medport.test"
COORDINATOR = "coordinator@medport.test"
ADDRESS_A, ADDRESS_B, ADDRESS_C = "203.0.113.5", "198.51.100.9", "192.0.2.77"


def browser(app, address):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def sign_in(client, email=NURSE, password=DEMO_PASSWORD):
    return client.post("/login", data={"email": email, "password": password})


def move_back(app, seconds):
    """Everything the audit log holds happened ``seconds`` earlier (time passing)."""
    with app.app_context():
        for row in db.session.scalars(sa.select(AuditLog)):
            row.created_at -= timedelta(seconds=seconds)
        db.session.commit()


def retry_after(response):
    assert response.status_code == 429, response.status_code
    return int(response.headers["Retry-After"])


def test_a_strangers_wrong_guesses_do_not_lock_the_owner_out(app, demo):
    stranger, owner = browser(app, ADDRESS_A), browser(app, ADDRESS_B)
    for _ in range(app.config["MEDPORT_LOGIN_MAX_FAILURES"]):
        assert sign_in(stranger, password="wrong-password").status_code == 401
    held = sign_in(stranger)  # even the right password waits, from the stranger's address
    assert 0 < retry_after(held) <= accounts.BACKOFF_SECONDS
    assert b"for this account from this address. Try again in" in held.data
    assert sign_in(owner).status_code == 302
    assert owner.get("/hospital/").status_code == 200


def test_the_pair_backs_off_twice_as_long_after_each_failure(app, demo):
    client = browser(app, ADDRESS_A)
    limit = app.config["MEDPORT_LOGIN_MAX_FAILURES"]
    for _ in range(limit):
        assert sign_in(client, password="wrong-password").status_code == 401
    assert retry_after(sign_in(client, password="wrong-password")) <= accounts.BACKOFF_SECONDS
    move_back(app, accounts.BACKOFF_SECONDS + 1)
    assert sign_in(client, password="wrong-password").status_code == 401  # failure limit + 1
    wait = retry_after(sign_in(client))
    assert accounts.BACKOFF_SECONDS < wait <= 2 * accounts.BACKOFF_SECONDS
    move_back(app, accounts.BACKOFF_SECONDS + 1)
    assert 0 < retry_after(sign_in(client)) <= accounts.BACKOFF_SECONDS  # still waiting
    move_back(app, accounts.BACKOFF_SECONDS)
    assert sign_in(client).status_code == 302
    # The pair's success starts its count afresh: the next wrong password is a plain 401.
    assert sign_in(browser(app, ADDRESS_A), password="wrong-password").status_code == 401


def test_a_success_on_ones_own_account_does_not_reset_the_address_count(app, demo):
    """The pattern "limit - 1 failures, then a success on the attacker's own account",
    repeated (19 + 1 with the default limit of 20), stays throttled once the limit is met."""
    app.config["MEDPORT_LOGIN_MAX_FAILURES_PER_ADDRESS"] = limit = 5
    attacker = browser(app, ADDRESS_A)
    statuses = []
    for round_ in range(3):
        for i in range(limit - 1):
            statuses.append(sign_in(attacker, f"victim{round_}-{i}@medport.test", "guess-123456").status_code)
        statuses.append(sign_in(attacker, COORDINATOR).status_code)  # the attacker's own account
    assert statuses[:limit] == [401] * (limit - 1) + [302]
    assert statuses[limit] == 401  # the limit-th failure
    assert set(statuses[limit + 1:]) == {429}
    refused = sign_in(attacker, COORDINATOR)
    assert b"from this address" in refused.data
    assert 0 < retry_after(refused) <= app.config["MEDPORT_LOGIN_WINDOW_MINUTES"] * 60
    # Another address is not held back by this one.
    assert sign_in(browser(app, ADDRESS_B), COORDINATOR).status_code == 302
    # Once the failures leave the window, the address may sign in again.
    move_back(app, app.config["MEDPORT_LOGIN_WINDOW_MINUTES"] * 60 + 1)
    assert sign_in(attacker, COORDINATOR).status_code == 302


def test_the_account_backstop_holds_back_failing_addresses_not_a_fresh_one(app, demo, monkeypatch):
    """Guessing spread over many addresses: past the backstop each address that failed on the
    account waits out the window, and the owner from an address that has not failed gets in."""
    monkeypatch.setattr(accounts, "ACCOUNT_BACKSTOP_FACTOR", 1)
    limit = app.config["MEDPORT_LOGIN_MAX_FAILURES"]
    guessers = [browser(app, f"203.0.113.{10 + i}") for i in range(limit)]
    for guesser in guessers:
        assert sign_in(guesser, password="wrong-password").status_code == 401
    held = sign_in(guessers[0])
    assert retry_after(held) > accounts.BACKOFF_SECONDS
    assert b"for this account. Try again in" in held.data
    owner = browser(app, ADDRESS_C)
    assert sign_in(owner).status_code == 302
    # The owner's success clears the account's count; the pair rule alone applies again.
    assert sign_in(guessers[0], password="wrong-password").status_code == 401


def test_the_throttle_is_audited_and_checks_no_password(app, demo, monkeypatch):
    client = browser(app, ADDRESS_A)
    for _ in range(app.config["MEDPORT_LOGIN_MAX_FAILURES"]):
        sign_in(client, password="wrong-password")
    calls = spy_on_password_checks(monkeypatch)
    assert sign_in(client).status_code == 429
    assert calls == []
    with app.app_context():
        (entry,) = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "login.throttled"))
        assert (entry.user_email, entry.ip, entry.detail) == (NURSE, ADDRESS_A, "per pair")


def spy_on_password_checks(monkeypatch):
    """Count the password checks (``dashboard.hashing.verify``; the real one still runs); returns
    the list the hashes checked are appended to."""
    real = hashing.verify
    calls = []

    def spy(stored_hash, password):
        calls.append(stored_hash)
        return real(stored_hash, password)

    monkeypatch.setattr(hashing, "verify", spy)
    return calls


@pytest.mark.parametrize("email,password,status", [
    (NURSE, DEMO_PASSWORD, 302),
    (NURSE, "wrong-password", 401),
    ("nobody@medport.test", "wrong-password", 401),
    ("nobody@medport.test", DEMO_PASSWORD, 401),
])
def test_known_and_unknown_emails_each_check_one_password_hash(app, demo, monkeypatch, email, password, status):
    """An unknown email is checked against a dummy hash of the same scheme and cost, so it
    takes as long as a known one and the time does not tell which accounts exist."""
    calls = spy_on_password_checks(monkeypatch)
    assert sign_in(browser(app, ADDRESS_A), email, password).status_code == status
    assert len(calls) == 1
    with app.app_context():
        real_hash = db.session.scalar(sa.select(User.password_hash).where(User.email == NURSE))
    assert argon2.extract_parameters(calls[0]) == argon2.extract_parameters(real_hash)  # scheme and cost
    if email != NURSE:
        assert calls[0] != real_hash
