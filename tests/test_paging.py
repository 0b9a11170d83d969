"""The keyset pager (``services.paging``): every row once, in order, across pages; bad cursors 400."""
import re
from html import unescape

import pytest

from dashboard.extensions import db
from dashboard.models.center import AlertDelivery, AuditLog, User
from dashboard.services import audit, paging
from dashboard.services.refusals import Refused
from tests.helpers import signed_in


def _entries(n):
    for i in range(n):
        audit.record("test.paging", entity_type="test", entity_id=str(i))


def test_pages_cover_every_row_once_newest_first(app):
    with app.app_context():
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
        query = db.select(AuditLog)
        with pytest.raises(Refused) as refused:
            paging.keyset(query, [AuditLog.created_at, AuditLog.id], after=token)
        assert refused.value.status == 400 and "first page" in refused.value.message


def test_the_users_list_pages_by_email_with_its_filters_kept(app, demo):
    """The center's users list: every account once, by email, 50 a page, the filters carried
    from page to page; a cursor not ours is a 400 with a message."""
    with app.app_context():
        for i in range(60):
            db.session.add(User(email=f"paging{i:02d}@medport.test", display_name=f"Paging {i}",
                                role="coordinator", password_hash="x"))
        db.session.commit()
        expected = sorted(email for email in db.session.scalars(db.select(User.email)) if "paging" in email)
    admin = signed_in(app, "admin@medport.test")
    seen, url, pages = [], "/center/users?q=paging&status=active", 0
    while url:
        body = admin.get(url).get_data(as_text=True)
        assert "Next page" in body or pages == 1, body[:300]
        seen += re.findall(r"<td>(paging\d\d@medport\.test)</td>", body)
        pages += 1
        found = re.search(r'href="([^"]*after=[^"]*)">Next page', body)
        url = unescape(found.group(1)) if found else None
        if url:
            assert "q=paging" in url and "status=active" in url
    assert seen == expected and pages == 2
    refused = admin.get("/center/users?after=nonsense!")
    assert refused.status_code == 400 and "first page" in refused.get_data(as_text=True)


def test_the_deliveries_list_pages_newest_first_with_its_filters_kept(app, demo):
    """The center's email and webhook deliveries: 50 a page, newest first, the state and
    channel carried from page to page; a cursor not ours is a 400."""
    with app.app_context():
        for i in range(60):
            db.session.add(AlertDelivery(channel="email", target=f"paging{i:02d}@medport.test", status="parked",
                                         message={"subject": "s", "text": "t"}))
        db.session.commit()
        expected = [target for target in db.session.scalars(
            db.select(AlertDelivery.target).order_by(AlertDelivery.id.desc())) if "paging" in target]
    coordinator = signed_in(app, "coordinator@medport.test")
    seen, url, pages = [], "/alerts/deliveries?status=parked&channel=email", 0
    while url:
        response = coordinator.get(url)
        assert response.status_code == 200
        body = response.get_data(as_text=True)
        seen += re.findall(r"<td>(paging\d\d@medport\.test)</td>", body)
        pages += 1
        found = re.search(r'href="([^"]*after=[^"]*)">Next page', body)
        url = unescape(found.group(1)) if found else None
        if url:
            assert "status=parked" in url and "channel=email" in url
    assert seen == expected and pages == 2
    assert coordinator.get("/alerts/deliveries?after=nonsense!").status_code == 400
