"""``views.act``'s one commit: a read that wrote nothing keeps what it loaded; anything else
expires as before, so the answer after a write reads what was written (dashboard/views.py)."""
import sqlalchemy as sa
from sqlalchemy import event

from dashboard import server_timing
from dashboard.extensions import db
from dashboard.models.center import AuditLog, User
from dashboard.views import act
from tests.helpers import signed_in

COORDINATOR = "coordinator@medport.test"


class Counted:
    """The statements every silo's engine runs inside the ``with`` block."""

    def __enter__(self):
        self.statements = []
        self.engines = list(db.engines.values())
        for engine in self.engines:
            event.listen(engine, "before_cursor_execute", self._count)
        return self.statements

    def _count(self, conn, cursor, statement, *args):
        self.statements.append(statement)

    def __exit__(self, *exc):
        for engine in self.engines:
            event.remove(engine, "before_cursor_execute", self._count)


def _in_request(app, fn):
    """Run ``fn`` in a request with its Server-Timing collector, as the app's middleware does."""
    with app.test_request_context("/"):
        token = server_timing._current.set(server_timing.Collector())
        try:
            return fn()
        finally:
            server_timing._current.reset(token)


def _coordinator():
    return db.session.scalar(sa.select(User).where(User.email == COORDINATOR))


def test_a_read_keeps_what_it_loaded(app, demo):
    def run():
        user = _coordinator()
        answer = act(lambda: _coordinator(), done=lambda found: found, refused=None)
        assert answer is user
        with Counted() as statements:
            assert answer.display_name and answer.email == COORDINATOR
        assert statements == []

    _in_request(app, run)


def test_a_write_expires_what_was_loaded(app, demo):
    def run():
        user = _coordinator()
        table = User.__table__
        act(lambda: db.session.execute(sa.update(table).where(table.c.id == user.id)
                                       .values(display_name="Renamed Coordinator")),
            done=lambda _: None, refused=None)
        with Counted() as statements:
            assert user.display_name == "Renamed Coordinator"
        assert len(statements) == 1

    _in_request(app, run)


def test_a_change_left_to_flush_expires_too(app, demo):
    def run():
        user = _coordinator()

        def rename():
            user.display_name = "Flushed At Commit"

        act(rename, done=lambda _: None, refused=None)
        with Counted() as statements:
            assert user.display_name == "Flushed At Commit"
        assert len(statements) == 1

    _in_request(app, run)


def test_outside_a_timed_request_the_commit_expires(app, demo):
    with app.test_request_context("/"):
        user = _coordinator()
        act(lambda: None, done=lambda _: None, refused=None)
        with Counted() as statements:
            assert user.email == COORDINATOR
        assert len(statements) == 1


def test_the_audit_page_reads_no_row_twice(app, demo):
    with app.app_context():
        coordinator_id = _coordinator().id
        db.session.add_all([AuditLog(user_id=coordinator_id, user_email=COORDINATOR, action="test.read",
                                     silo="center", entity_type="user", entity_id=str(n)) for n in range(30)])
        db.session.commit()
    client = signed_in(app, COORDINATOR)
    client.get("/center/audit")
    with app.app_context(), Counted() as statements:
        response = client.get("/center/audit")
    assert response.status_code == 200
    assert response.get_data(as_text=True).count("test.read") >= 30
    audit_reads = [s for s in statements if "FROM audit_logs" in s]
    assert len(audit_reads) == 1, audit_reads
