"""Password hashes (dashboard/hashing.py): Argon2id at OWASP's minimum for every new hash, the hashes
made before (werkzeug's scrypt and PBKDF2) still signing in and replaced by a current one at a
successful sign-in only, and every hash and check made in a slot of the worker's hash pool.
"""
import argon2
import pytest
import sqlalchemy as sa
from werkzeug.security import generate_password_hash

from dashboard import hashing
from dashboard.extensions import db
from dashboard.models.center import Agency, AuditLog, User
from dashboard.services import accounts, users
from tests.conftest import DEMO_PASSWORD

NURSE = "nurse@altoona.medport.test"
ADMIN = "admin@medport.test"
NEW_PASSWORD = "a-new-long-password"
#: OWASP Password Storage Cheat Sheet: Argon2id, 19 MiB (19,456 KiB), 2 iterations, 1 lane.
#: Written out here rather than read from the module, so weakening the module fails this file.
CURRENT = argon2.Parameters(type=argon2.Type.ID, version=19, salt_len=16, hash_len=32, time_cost=2,
                            memory_cost=19456, parallelism=1)
#: Hashes of the demo password as they were made before: werkzeug's default (scrypt N=2**15, r=8,
#: p=1), werkzeug's PBKDF2, and Argon2id with parameters below the current ones.
LEGACY = {
    "scrypt": lambda password: generate_password_hash(password),
    "pbkdf2": lambda password: generate_password_hash(password, method="pbkdf2:sha256:600000"),
    "weaker argon2id": lambda password: argon2.PasswordHasher(time_cost=1, memory_cost=8192,
                                                              parallelism=1).hash(password),
}


def stored_hash(email):
    return db.session.scalar(sa.select(User.password_hash).where(User.email == email))


def set_stored_hash(app, email, value):
    with app.app_context():
        db.session.execute(sa.update(User).where(User.email == email).values(password_hash=value))
        db.session.commit()


def assert_current(value, password):
    """``value`` is a current hash (Argon2id, OWASP's parameters) of ``password``."""
    assert value.startswith("$argon2id$v=19$m=19456,t=2,p=1$"), value[:40]
    assert argon2.extract_parameters(value) == CURRENT
    assert argon2.PasswordHasher().verify(value, password)


def sign_in(app, email, password):
    return app.test_client().post("/login", data={"email": email, "password": password})


def login_entries(app, email):
    with app.app_context():
        return [(row.action, row.detail) for row in db.session.scalars(
            sa.select(AuditLog).where(AuditLog.user_email == email, AuditLog.action.like("login.%"))
            .order_by(AuditLog.id))]


def test_every_new_hash_is_argon2id_with_owasps_parameters(app, demo, runner):
    made = runner.invoke(args=["medport", "create-user", "--email", "ops@example.org", "--name", "Ops",
                               "--role", "coordinator"], input="an-ops-password\nan-ops-password\n")
    assert made.exit_code == 0, made.output
    with app.app_context():
        assert_current(stored_hash(NURSE), DEMO_PASSWORD)  # the demo seed
        assert_current(stored_hash("ops@example.org"), "an-ops-password")  # flask medport create-user
        created = accounts.create_user("new@medport.test", "New Coordinator", "coordinator", "another-long-one")
        assert_current(created.password_hash, "another-long-one")
        admin = db.session.scalar(sa.select(User).where(User.email == ADMIN))
        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
        actor = users.Actor(admin.id, admin.email, "127.0.0.1")
        crew, temporary = users.create_crew(actor, agency_id, "medic@altoonaems.medport.test", "Medic")
        assert_current(crew.password_hash, temporary)
        nurse = db.session.scalar(sa.select(User).where(User.email == NURSE))
        reset = users.reset_password(actor, nurse)
        assert_current(nurse.password_hash, reset)
        # What an unknown email is checked against: the same scheme and cost.
        assert argon2.extract_parameters(hashing._dummy_hash()) == CURRENT
        db.session.commit()
    # A password change, from the account page, over a hash made before (checked, then replaced).
    client = app.test_client()
    assert client.post("/login", data={"email": NURSE, "password": reset}).status_code == 302
    set_stored_hash(app, NURSE, LEGACY["scrypt"](DEMO_PASSWORD))
    changed = client.post("/account/password", data={"current_password": DEMO_PASSWORD,
                                                      "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert changed.status_code == 302
    with app.app_context():
        assert_current(stored_hash(NURSE), NEW_PASSWORD)


@pytest.mark.parametrize("scheme", sorted(LEGACY))
def test_a_hash_made_before_signs_in_and_is_replaced_by_a_current_one(app, demo, scheme):
    set_stored_hash(app, NURSE, LEGACY[scheme](DEMO_PASSWORD))
    assert sign_in(app, NURSE, DEMO_PASSWORD).status_code == 302
    with app.app_context():
        upgraded = stored_hash(NURSE)
    assert_current(upgraded, DEMO_PASSWORD)
    assert login_entries(app, NURSE) == [("login.success", "password hash upgraded")]
    # Once current, a sign-in leaves it as it is.
    assert sign_in(app, NURSE, DEMO_PASSWORD).status_code == 302
    with app.app_context():
        assert stored_hash(NURSE) == upgraded
    assert login_entries(app, NURSE)[-1] == ("login.success", None)


@pytest.mark.parametrize("case", ["wrong password", "account deactivated", "throttled"])
def test_a_refused_sign_in_replaces_no_hash(app, demo, case):
    legacy = LEGACY["scrypt"](DEMO_PASSWORD)
    set_stored_hash(app, NURSE, legacy)
    password, status = DEMO_PASSWORD, {"wrong password": 401, "account deactivated": 403,
                                       "throttled": 429}[case]
    if case == "wrong password":
        password = "not-the-password"
    elif case == "account deactivated":
        with app.app_context():
            db.session.execute(sa.update(User).where(User.email == NURSE).values(active=False))
            db.session.commit()
    else:
        for _ in range(app.config["MEDPORT_LOGIN_MAX_FAILURES"]):
            assert sign_in(app, NURSE, "not-the-password").status_code == 401
    assert sign_in(app, NURSE, password).status_code == status
    with app.app_context():
        assert stored_hash(NURSE) == legacy
    assert ("login.success", "password hash upgraded") not in login_entries(app, NURSE)


def test_an_upgrade_never_overwrites_a_password_changed_meanwhile(app, demo, monkeypatch):
    """The nurse changes her password in one browser while another browser's sign-in with the old
    one is being checked: the sign-in holds (its password was right when checked), the new
    password stays."""
    set_stored_hash(app, NURSE, LEGACY["scrypt"](DEMO_PASSWORD))
    with app.app_context():
        changed_meanwhile = hashing.make_hash(NEW_PASSWORD)
    real = hashing.verify

    def verify_then_change(stored, password):
        checked = real(stored, password)
        with db.engine.begin() as other:  # another request's transaction, committed first
            other.execute(sa.update(User).where(User.email == NURSE).values(password_hash=changed_meanwhile))
        return checked

    monkeypatch.setattr(hashing, "verify", verify_then_change)
    assert sign_in(app, NURSE, DEMO_PASSWORD).status_code == 302
    monkeypatch.setattr(hashing, "verify", real)
    with app.app_context():
        assert stored_hash(NURSE) == changed_meanwhile
    assert login_entries(app, NURSE) == [("login.success", None)]
    assert sign_in(app, NURSE, NEW_PASSWORD).status_code == 302
    assert sign_in(app, NURSE, DEMO_PASSWORD).status_code == 401


@pytest.mark.parametrize("unreadable", ["x", "$argon2id$v=19$not-a-hash", "md5$salt$0123abcd", "scrypt:x$a$b"])
def test_an_unreadable_stored_hash_is_a_wrong_password_not_an_error(app, demo, unreadable):
    set_stored_hash(app, NURSE, unreadable)
    assert sign_in(app, NURSE, DEMO_PASSWORD).status_code == 401
    with app.app_context():
        assert stored_hash(NURSE) == unreadable


class CountingHasher:
    """The module's hasher, noting for each hash or check made whether a slot of the app's hash
    pool was held at the time."""

    def __init__(self, real, seen):
        self.real, self.seen = real, seen

    def _note(self, what):
        self.seen.append((what, hashing.pool().running))

    def hash(self, password):
        self._note("hash")
        return self.real.hash(password)

    def verify(self, stored, password):
        self._note("verify")
        return self.real.verify(stored, password)

    def check_needs_rehash(self, stored):
        return self.real.check_needs_rehash(stored)


def count_hashing(monkeypatch):
    """Note every Argon2 hash or check and every werkzeug check the module makes from now on
    (``[(what, slots running)]``, the list returned)."""
    seen = []
    monkeypatch.setattr(hashing, "HASHER", CountingHasher(hashing.HASHER, seen))
    real_werkzeug = hashing._check_werkzeug_hash

    def werkzeug_check(stored, password):
        seen.append(("werkzeug", hashing.pool().running))
        return real_werkzeug(stored, password)

    monkeypatch.setattr(hashing, "_check_werkzeug_hash", werkzeug_check)
    return seen


def test_every_hash_and_check_is_made_in_a_slot_of_the_pool(app, runner, monkeypatch):
    """Seeding, sign-in (right, wrong, unknown email, a hash made before), a password change, a
    reset, a crew account and ``create-user``: each hash or check is made while the pool counts
    it as running, so the bound holds for all of them (a call made beside the pool counts 0)."""
    from dashboard.seed import demo as demo_seed

    seen = count_hashing(monkeypatch)
    demo_seed._demo_password_hash.cache_clear()
    hashing._dummy_hash.cache_clear()
    hashing._legacy_dummy_hash()  # made before counting: it is werkzeug's make, not a check
    with app.app_context():
        demo_seed.seed()
    steps = {"seed": list(seen)}

    def step(name, action):
        before = len(seen)
        action()
        steps[name] = seen[before:]

    step("sign in", lambda: sign_in(app, NURSE, DEMO_PASSWORD))
    step("wrong password", lambda: sign_in(app, NURSE, "not-the-password"))
    step("unknown email", lambda: sign_in(app, "nobody@medport.test", DEMO_PASSWORD))
    set_stored_hash(app, NURSE, LEGACY["scrypt"](DEMO_PASSWORD))
    step("sign in over a hash made before", lambda: sign_in(app, NURSE, DEMO_PASSWORD))
    client = app.test_client()
    client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD})
    step("password change", lambda: client.post("/account/password", data={
        "current_password": DEMO_PASSWORD, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD}))
    admin = app.test_client()
    admin.post("/login", data={"email": ADMIN, "password": DEMO_PASSWORD})
    with app.app_context():
        nurse_id = db.session.scalar(sa.select(User.public_id).where(User.email == NURSE))
    step("password reset", lambda: admin.post(f"/center/users/{nurse_id}/reset-password"))
    dispatcher = app.test_client()
    dispatcher.post("/login", data={"email": "dispatch@altoonaems.medport.test", "password": DEMO_PASSWORD})
    step("crew account", lambda: dispatcher.post("/ems/crew-accounts", data={
        "email": "medic@altoonaems.medport.test", "display_name": "Medic"}))
    step("create-user", lambda: runner.invoke(args=[
        "medport", "create-user", "--email", "ops@example.org", "--name", "Ops", "--role", "coordinator"],
        input="an-ops-password\nan-ops-password\n"))
    assert {name: [what for what, _ in calls] for name, calls in steps.items()} == {
        "seed": ["hash"],  # once for every demo account
        "sign in": ["verify"],
        "wrong password": ["verify", "werkzeug"],  # a failed check also checks the other scheme
        "unknown email": ["hash", "verify", "werkzeug"],  # the dummy hash, made at its first use
        "sign in over a hash made before": ["werkzeug", "hash"],  # checked, then its replacement
        "password change": ["verify", "hash"],
        "password reset": ["hash"],
        "crew account": ["hash"],
        "create-user": ["hash"],
    }
    assert [name for name, calls in steps.items() if any(running < 1 for _, running in calls)] == []


@pytest.mark.parametrize("case", ["current hash", "scrypt", "pbkdf2", "weaker argon2id", "unreadable",
                                  "unknown email"])
def test_a_failed_check_costs_one_check_of_each_scheme(app, monkeypatch, case):
    """Whatever the stored hash (or none: an unknown email), a wrong password is checked once
    by Argon2id and once by werkzeug, so its time does not tell which accounts exist or which
    are still on the hash made before; a right one is checked by its own scheme alone."""
    made = {"current hash": hashing.make_hash, "unreadable": lambda password: "x$y$z",
            "unknown email": lambda password: None, **LEGACY}
    stored = made[case](DEMO_PASSWORD)
    hashing._legacy_dummy_hash(), hashing._argon2_dummy_hash()  # made (not checked) before counting
    seen = count_hashing(monkeypatch)
    with app.app_context():
        hashing._dummy_hash()
        seen.clear()
        assert hashing.check_password(stored, "not-the-password") == hashing.Checked(False)
        failed = sorted(what for what, _ in seen)
        seen.clear()
        right = hashing.check_password(stored, DEMO_PASSWORD) if stored else None
    # An unreadable hash is refused by werkzeug at once (the first "werkzeug"), then checked as
    # any failure is.
    assert failed == (["verify", "werkzeug", "werkzeug"] if case == "unreadable" else ["verify", "werkzeug"])
    if case in ("current hash", "weaker argon2id"):
        assert right.ok and [what for what, _ in seen][0] == "verify" and "werkzeug" not in dict(seen)
    elif case in ("scrypt", "pbkdf2"):
        assert right.ok and [what for what, _ in seen] == ["werkzeug", "hash"]
