"""The keyset pager (``services.paging``): every row once, in order, across pages; bad cursors 400."""
import pytest

from dashboard.models.center import AuditLog
from dashboard.services import audit, paging
from dashboard.services.refusals import Refused


def _entries(n):
    for i in range(n):
        audit.record("test.paging", entity_type="test", entity_id=str(i))


def test_pages_cover_every_row_once_newest_first(app):
    with app.app_context():
        from dashboard.extensions import db

        _entries(23)
        db.session.commit()
        query = db.select(AuditLog).where(AuditLog.action == "test.paging")
        seen, after, pages = [], None, 0
        while True:
            page = paging.keyset(query, [AuditLog.created_at, AuditLog.id], after=after, size=5)
            seen += [row.id for row in page.rows]
            pages += 1
            if page.after is None:
                break
            after = page.after
        expected = [row.id for row in db.session.scalars(
            query.order_by(AuditLog.created_at.desc(), AuditLog.id.desc()))]
        assert seen == expected and len(seen) == 23 and pages == 5
        oldest = paging.keyset(query, [AuditLog.id], newest_first=False, size=30)
        assert [row.id for row in oldest.rows] == sorted(expected) and oldest.after is None


@pytest.mark.parametrize("token", ["nonsense!", "W10", "WyJ4Il0", "x" * 500, "WzEsMl0"])
def test_a_cursor_not_ours_is_refused_with_400(app, token):
    with app.app_context():
        from dashboard.extensions import db

        query = db.select(AuditLog)
        with pytest.raises(Refused) as refused:
            paging.keyset(query, [AuditLog.created_at, AuditLog.id], after=token)
        assert refused.value.status == 400 and "first page" in refused.value.message
