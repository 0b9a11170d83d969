"""The center silo stopped for real (PostgreSQL): signed-in people keep working.

Nurses post, award and cancel; dispatchers see the board and bid; crews progress
their trips; coordinators read the regional board.  Sign-in and the center's own
pages (accounts, registry, configuration, audit, analytics) answer 503 saying what
is unavailable.  Once the center is back, the relay writes every audit entry once,
with the time the action was taken, and the outboxes drain to zero.
"""
import re
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import AuditLog, UserSession
from dashboard.models.ems import TransportBid, Unit
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import center_reads
from tests.helpers import signed_in, silo_stopped, valid_form

NURSE = "nurse@altoona.medport.test"
DISPATCHER = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"
ADMIN = "admin@medport.test"
UNAVAILABLE = "Center data is temporarily unavailable"
BANNER = 'class="banner banner-warning" role="status" data-silo="center"'


@pytest.fixture
def postgres(backend):
    if backend != "postgres":
        pytest.skip("stopping the center's database is done on PostgreSQL")
    center_reads.forget()
    yield
    center_reads.forget()


def _text(response):
    return response.get_data(as_text=True)


def _free_unit(app, agency_code="AEMS"):
    """A unit of the agency (ALS-capable, active) with no bid or route at all."""
    with app.app_context():
        from dashboard.models.center import Agency

        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == agency_code))
        busy = sa.select(TransportBid.unit_id)
        unit = db.session.scalar(sa.select(Unit).where(
            Unit.agency_id == agency_id, Unit.level.in_(("ALS", "CCT")), Unit.id.not_in(busy))
            .order_by(Unit.id).limit(1))
        if unit is None:
            unit = Unit(agency_id=agency_id, number="M-99", level="ALS", status="available")
            db.session.add(unit)
            db.session.commit()
        return unit.public_id


def _pending_total(app):
    with app.app_context():
        total = 0
        for model in OUTBOX_BY_SILO.values():
            total += db.session.scalar(sa.select(sa.func.count(model.id)).where(model.status != "delivered"))
        db.session.commit()
        return total


def test_with_the_center_down_signed_in_work_goes_on_and_is_recorded_once(postgres, app, demo, deliver):
    deliver()
    nurse = signed_in(app, NURSE)
    dispatcher = signed_in(app, DISPATCHER)
    coordinator = signed_in(app, COORDINATOR)
    admin = signed_in(app, ADMIN)
    leaving = signed_in(app, "nurse@juniata.medport.test")
    form = valid_form(app, patient_ref="P-CDEFHJ", bid_deadline_minutes="60")
    spare = valid_form(app, patient_ref="P-KMNPRT", bid_deadline_minutes="60")
    unit_public = _free_unit(app)
    # Every page renders once before the outage (this process has read the registry).
    assert nurse.get("/hospital/").status_code == 200
    assert coordinator.get("/center/").status_code == 200
    started = utcnow()

    with silo_stopped(app, "center"):
        # Nurses: the dashboard, with the banner, and a new request.
        page = nurse.get("/hospital/")
        assert page.status_code == 200 and BANNER in _text(page)
        posted = nurse.post("/hospital/requests/new", data=form)
        assert posted.status_code == 302, _text(posted)
        trip_public = re.fullmatch(r"/hospital/requests/([0-9a-f-]{36})", posted.headers["Location"]).group(1)
        second = nurse.post("/hospital/requests/new", data=spare)
        assert second.status_code == 302, _text(second)
        spare_public = second.headers["Location"].rsplit("/", 1)[1]
        assert nurse.get(f"/hospital/requests/{trip_public}").status_code == 200
        # Dispatchers: the board lists it, and they bid.
        Relay(app).run_once()  # the follow-ups that need no center still go out
        board = dispatcher.get("/ems/")
        assert board.status_code == 200 and BANNER in _text(board)
        bid = dispatcher.post(f"/ems/requests/{trip_public}/bid",
                              data={"unit": unit_public, "eta_minutes": "15", "note": ""})
        assert bid.status_code in (200, 302), _text(bid)
        Relay(app).run_once()
        with app.app_context():
            trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == trip_public))
            live = db.session.scalar(sa.select(TransportBid).where(TransportBid.trip_id == trip.id,
                                                                   TransportBid.status == "live"))
            version, bid_public = trip.version, live.public_id
            db.session.commit()
        # The nurse awards it; the crew drives it; another request is cancelled.
        awarded = nurse.post(f"/hospital/requests/{trip_public}/award",
                             data={"bid": bid_public, "version": str(version)})
        assert awarded.status_code in (200, 302), _text(awarded)
        Relay(app).run_once()
        for step in ("en_route", "at_pickup"):
            moved = dispatcher.post(f"/ems/trips/{trip_public}/advance", data={"step": step})
            assert moved.status_code in (200, 302), (step, _text(moved))
            Relay(app).run_once()
        with app.app_context():
            spare_version = db.session.scalar(sa.select(TransportRequest.version).where(
                TransportRequest.public_id == spare_public))
            db.session.commit()
        cancelled = nurse.post(f"/hospital/requests/{spare_public}/cancel",
                               data={"reason": "not_needed", "note": "", "version": str(spare_version)})
        assert cancelled.status_code in (200, 302), _text(cancelled)
        # Coordinators: the regional board and the request.
        for path in ("/center/", "/center/board/panel", f"/center/requests/{trip_public}", "/center/units"):
            assert coordinator.get(path).status_code == 200, path
        # What needs the center says so, with 503.
        for client, path in ((admin, "/center/users"), (admin, "/center/registry"), (admin, "/center/config"),
                             (coordinator, "/center/audit"), (coordinator, "/center/analytics"),
                             (nurse, "/hospital/analytics"), (nurse, "/account/password")):
            response = client.get(path)
            assert response.status_code == 503, path
            assert UNAVAILABLE in _text(response), path
            assert "signed-in work" in _text(response), path
        refused = app.test_client().post("/login", data={"email": DISPATCHER, "password": "medport-demo"})
        assert refused.status_code == 503 and UNAVAILABLE in _text(refused)
        # Signing out clears the browser's session at once; the center learns of it later.
        assert leaving.post("/logout").status_code == 302
        assert leaving.get("/hospital/").status_code == 302
        acted_until = utcnow()

    # The center is back: every event is delivered, every action audited once, at its own time.
    Relay(app).drain(now=utcnow() + timedelta(minutes=10))
    assert _pending_total(app) == 0
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == trip_public))
        assert trip.status == "at_pickup"
        spare_trip = db.session.scalar(sa.select(TransportRequest).where(
            TransportRequest.public_id == spare_public))
        assert spare_trip.status == "cancelled"
        entries = db.session.execute(sa.select(AuditLog.action, AuditLog.entity_id, AuditLog.created_at,
                                               AuditLog.event_id)
                                     .where(AuditLog.created_at >= started)).all()
        ids = [row.event_id for row in entries if row.event_id]
        assert len(ids) == len(set(ids))
        actions = [row.action for row in entries]
        taken = ("trip.posted", "bid.placed", "trip.awarded", "trip.status_changed", "trip.cancelled",
                 "session.ended")
        for action in taken:
            assert action in actions, (action, actions)
        for row in entries:  # recorded with the time the action was taken, not the delivery's
            if row.action in taken:
                assert started <= row.created_at <= acted_until, row
        # The sign-out made during the outage revoked that session in the center.
        leaver = db.session.scalar(sa.select(AuditLog.user_id).where(AuditLog.action == "session.ended"))
        live = db.session.scalar(sa.select(sa.func.count(UserSession.id)).where(
            UserSession.user_id == leaver, UserSession.revoked_at.is_(None)))
        assert live == 0
    # Pages are whole again, without the banner, once this process asks the center again
    # (it waits CENTER_RETRY_SECONDS after a failure).
    deadline = time.monotonic() + 30
    while True:
        page = nurse.get("/hospital/")
        assert page.status_code == 200
        if BANNER not in _text(page) or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert BANNER not in _text(page)


def test_a_session_is_trusted_without_the_center_only_within_its_bound(postgres, app, demo):
    nurse = signed_in(app, NURSE)
    app.config["MEDPORT_SESSION_OFFLINE_TRUST_MINUTES"] = 0
    with silo_stopped(app, "center"):
        response = nurse.get("/hospital/")
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    app.config["MEDPORT_SESSION_OFFLINE_TRUST_MINUTES"] = 240
    nurse = signed_in(app, NURSE)
    with silo_stopped(app, "center"):
        assert nurse.get("/hospital/").status_code == 200


def test_a_revoked_session_stays_revoked_whenever_the_center_is_up(postgres, app, demo):
    nurse = signed_in(app, NURSE)
    copy = app.test_client()
    for cookie in nurse._cookies.values():
        copy.set_cookie(cookie.key, cookie.value, domain=cookie.domain)
    assert copy.get("/hospital/").status_code == 200
    assert nurse.post("/logout").status_code == 302
    assert copy.get("/hospital/").status_code == 302  # the copied cookie is refused at once


def test_the_live_stream_says_the_center_is_unreachable_and_catches_up_once_back(
        postgres, app, demo, deliver, monkeypatch):
    from dashboard.events import routes as stream_routes
    from tests.helpers import Stream

    deliver()
    monkeypatch.setattr(stream_routes, "STALE_REFRESH_SECONDS", 0.5)
    app.config["MEDPORT_SIGNAL_POLL_SECONDS"] = 0.2
    app.config["MEDPORT_STREAM_MAX_SECONDS"] = 60
    nurse = signed_in(app, NURSE)
    dispatcher = signed_in(app, DISPATCHER)
    form = valid_form(app, patient_ref="P-CDEFHJ", bid_deadline_minutes="60")
    assert dispatcher.get("/ems/").status_code == 200
    with silo_stopped(app, "center"):
        stream = Stream(dispatcher)
        assert stream.read_until("event: live-status\ndata: center-unreachable", max_reads=100)
        # The page refreshes its panels from the silos that are up, now and then.
        assert stream.read_until("event: trip-updated\ndata: *", max_reads=100)
        posted = nurse.post("/hospital/requests/new", data=form)
        assert posted.status_code == 302
        trip_public = posted.headers["Location"].rsplit("/", 1)[1]
        Relay(app).run_once()  # the center's record of it (and its signal) waits
    try:
        # Back: the same stream says so, and the signal written once the relay records the
        # event arrives.
        assert stream.read_until("event: live-status\ndata: ok", max_reads=200), stream.text[-500:]
        Relay(app).drain(now=utcnow() + timedelta(minutes=1))
        assert stream.read_until(f"event: trip-updated\ndata: {trip_public}", max_reads=200), stream.text[-500:]
    finally:
        stream.close()


@pytest.mark.parametrize("silo", ["center", "ems"])
def test_with_the_center_or_ems_down_nurses_post_edit_and_cancel(postgres, app, demo, deliver, silo):
    from tests.helpers import edit_form

    deliver()
    nurse = signed_in(app, NURSE)
    assert nurse.get("/hospital/").status_code == 200
    with silo_stopped(app, silo):
        posted = nurse.post("/hospital/requests/new", data=valid_form(app, patient_ref="P-CDEFHJ"))
        assert posted.status_code == 302, _text(posted)
        public_id = posted.headers["Location"].rsplit("/", 1)[1]
        edited = nurse.post(f"/hospital/requests/{public_id}/edit",
                            data=edit_form(app, notes="Meet at the north entrance"))
        assert edited.status_code == 302, _text(edited)
        cancelled = nurse.post(f"/hospital/requests/{public_id}/cancel",
                               data={"reason": "not_needed", "note": "", "version": "2"})
        assert cancelled.status_code == 302, _text(cancelled)
        page = nurse.get(f"/hospital/requests/{public_id}")
        assert page.status_code == 200 and "Meet at the north entrance" in _text(page)
    Relay(app).drain(now=utcnow() + timedelta(minutes=1))
    assert _pending_total(app) == 0
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == public_id))
        assert (trip.status, trip.notes) == ("cancelled", "Meet at the north entrance")
        actions = set(db.session.scalars(sa.select(AuditLog.action).where(AuditLog.entity_id == public_id)))
        assert {"trip.posted", "trip.changed", "trip.cancelled"} <= actions


def test_a_session_ended_while_the_center_was_up_stays_ended_when_it_goes_down(postgres, app, demo):
    from dashboard.models.center import User

    nurse = signed_in(app, NURSE)
    assert nurse.get("/hospital/").status_code == 200
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == NURSE))
        user.session_epoch += 1  # what deactivation and a password reset do
        db.session.commit()
    assert nurse.get("/hospital/").status_code == 302  # ended, and its snapshot dropped
    with silo_stopped(app, "center"):
        response = nurse.get("/hospital/")
        assert response.status_code == 302 and "/login" in response.headers["Location"]
