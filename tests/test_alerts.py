"""Alerts: produced by the relay from the outbox and its timer, per recipient, per setting, scoped
to what each role may see; the escalation ladder; the alerts pages."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.events.routes import may_receive
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, Alert, AlertEscalation, AlertSetting, LiveSignal, User
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import configuration, escalation, route_steps, trip_timers, trips
from dashboard.services.alerts import kinds as alert_kinds
from dashboard.services.alerts import settings as alert_settings
from tests.helpers import agency, award, hospital, place_bid, post_trip, signed_in

DISPATCH = {code: f"dispatch@{slug}.medport.test" for code, slug in (
    ("AEMS", "altoonaems"), ("BCA", "blaircounty"), ("CLL", "centrelifelink"), ("ACCT", "alleghenycct"),
    ("HCR", "huntingdonrescue"), ("CMT", "cambriamedical"))}
NURSE_ALT = "nurse@altoona.medport.test"
NURSE_MNV = "nurse@mountnittany.medport.test"


def received(kind=None, reference=None):
    """``{email: [title]}`` of the alerts written, of ``kind`` and about ``reference`` when given."""
    query = sa.select(User.email, Alert.title).join(User, User.id == Alert.user_id).order_by(Alert.id)
    if kind:
        query = query.where(Alert.kind == kind)
    if reference:
        query = query.where(Alert.reference == reference)
    found = {}
    for email, title in db.session.execute(query):
        found.setdefault(email, []).append(title)
    return found


def reference_of(trip_id):
    return db.session.get(TransportRequest, trip_id).reference


def user(email):
    return db.session.scalar(sa.select(User).where(User.email == email))


# --- who hears of a new request -------------------------------------------------------------


def test_a_new_request_alerts_only_the_agencies_that_may_bid_on_it(app, demo, deliver):
    with app.app_context():
        cct = post_trip("ALT", level="CCT")
        bls = post_trip("ALT", level="BLS")
    deliver()
    with app.app_context():
        got = received("ems.new_request", reference_of(cct))
        with_cct = {DISPATCH[code] for code in DISPATCH if "CCT" in agency(code).level_list}
        assert set(got) == with_cct and DISPATCH["AEMS"] in with_cct and DISPATCH["BCA"] not in with_cct
        assert got[DISPATCH["AEMS"]] == [f"New CCT, routine request {reference_of(cct)}"]
        assert set(received("ems.new_request", reference_of(bls))) == set(DISPATCH.values())
        # Nobody else hears of it: not the hospital, not the center.
        assert set(received(reference=reference_of(cct))) == with_cct
        # Each alert links to the request's EMS page and has its own live signal for its user.
        alert = db.session.scalar(sa.select(Alert).where(Alert.reference == reference_of(cct)).limit(1))
        trip = db.session.get(TransportRequest, cct)
        assert alert.link == f"/ems/requests/{trip.public_id}"
        signal = db.session.scalar(sa.select(LiveSignal).where(LiveSignal.entity_id == alert.public_id))
        assert signal.name == "alert" and signal.user_id == alert.user_id


def test_a_request_booked_ahead_alerts_the_agencies_when_its_bidding_opens(app, demo, deliver):
    from tests.helpers import post_ahead

    with app.app_context():
        trip_id = post_ahead("BLS", days=5)
        opens = db.session.get(TransportRequest, trip_id).bidding_opens_at
        assert opens is not None
    deliver()
    with app.app_context():
        assert received("ems.new_request", reference_of(trip_id)) == {}  # upcoming: nobody may bid yet
        assert trip_timers.announce_openings(now=opens) == 1
        db.session.commit()
    deliver()
    with app.app_context():
        got = received("ems.new_request", reference_of(trip_id))
        assert set(got) == set(DISPATCH.values())
        assert got[DISPATCH["AEMS"]] == [f"New BLS, routine request {reference_of(trip_id)}"]


def test_a_preferred_only_request_alerts_only_the_invited_agencies(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", level="ALS", invite_mode="preferred")
        invited = set(db.session.get(TransportRequest, trip_id).invited_ids)
        expected = {DISPATCH[code] for code in DISPATCH if agency(code).id in invited}
    deliver()
    with app.app_context():
        got = set(received("ems.new_request", reference_of(trip_id)))
        assert got and got == expected
        assert DISPATCH["HCR"] not in got and DISPATCH["CLL"] not in got


def test_an_alert_goes_to_its_recipient_alone_on_the_stream():
    signal = (7, "alert", "a-public-id", None, "", 42)
    assert may_receive(("ems", None, 3, 42), signal)
    assert not may_receive(("ems", None, 3, 43), signal)
    assert not may_receive(("coordinator", None, None, 1), signal)  # not even the center
    assert not may_receive(("admin", None, None, 2), signal)


# --- settings ---------------------------------------------------------------------------------


def test_a_user_narrows_new_requests_by_level_and_urgency(app, demo, deliver):
    with app.app_context():
        me = user(DISPATCH["AEMS"])
        alert_settings.save_settings(alert_settings.user_scope(me.id), "ems", ["ems.new_request"],
                                     levels=["ALS"], urgencies=["routine"], user_id=me.id)
        db.session.commit()
        bls, als = post_trip("ALT", level="BLS"), post_trip("ALT", level="ALS")
    deliver()
    with app.app_context():
        assert DISPATCH["AEMS"] not in received("ems.new_request", reference_of(bls))
        assert DISPATCH["AEMS"] in received("ems.new_request", reference_of(als))
        assert DISPATCH["BCA"] in received("ems.new_request", reference_of(bls))  # others unchanged


def test_an_organisation_default_applies_until_the_user_chooses(app, demo, deliver):
    with app.app_context():
        bca = agency("BCA")
        alert_settings.save_settings(alert_settings.org_scope("ems", agency_id=bca.id), "ems", [], user_id=None)
        db.session.commit()
        first = post_trip("ALT", level="BLS")
    deliver()
    with app.app_context():
        assert DISPATCH["BCA"] not in received("ems.new_request", reference_of(first))
        me = user(DISPATCH["BCA"])
        assert alert_settings.choices_for(me)["ems.new_request"].source == "organisation"
        alert_settings.save_settings(alert_settings.user_scope(me.id), "ems", ["ems.new_request"], user_id=me.id)
        db.session.commit()
        second = post_trip("ALT", level="BLS")
    deliver()
    with app.app_context():
        assert DISPATCH["BCA"] in received("ems.new_request", reference_of(second))
        alert_settings.clear_user_settings(user(DISPATCH["BCA"]).id)
        db.session.commit()
        assert alert_settings.choices_for(user(DISPATCH["BCA"]))["ems.new_request"].enabled is False


def test_settings_refuse_kinds_of_another_role_and_unknown_levels(app, demo):
    with app.app_context():
        with pytest.raises(alert_settings.SettingsRefused):
            alert_settings.save_settings("user:1", "ems", ["center.silo_down"])
        with pytest.raises(alert_settings.SettingsRefused):
            alert_settings.save_settings("user:1", "ems", ["ems.new_request"], levels=["XLS"])
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count(AlertSetting.id))) == 0


# --- bids, awards, changes, crew steps, unfilled -----------------------------------------------


def test_first_bid_award_and_the_other_bidders(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS")
        aems = place_bid(trip_id, "AEMS", 20)
    deliver()
    with app.app_context():
        place_bid(trip_id, "CLL", 12)
    deliver()
    with app.app_context():
        ref = reference_of(trip_id)
        assert received("hospital.first_bid", ref) == {NURSE_ALT: [f"First bid on {ref}, ETA 20 min"]}
        award(trip_id, aems)
    deliver()
    with app.app_context():
        assert set(received("ems.bid_awarded", ref)) == {DISPATCH["AEMS"]}
        assert set(received("ems.bid_not_awarded", ref)) == {DISPATCH["CLL"]}  # not those that never bid
        assert received("hospital.center_award", ref) == {}  # the hospital awarded it itself
        trip = db.session.get(TransportRequest, trip_id)
        trips.cancel(trip, "not_needed", "", actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        assert received("ems.trip_changed", ref) == {DISPATCH["AEMS"]: [f"Cancelled: {ref}, which we serve"]}
        assert NURSE_MNV not in received(reference=ref)


def test_crew_steps_reach_the_hospital_as_alerts(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS")
        aems = place_bid(trip_id, "AEMS", 20)
        award(trip_id, aems)
    deliver()
    with app.app_context():
        from dashboard.models.ems import EmsRoute

        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        route_steps.advance(route, "en_route", actor=Actor(None, None, "Medic 11"))
        db.session.commit()
    deliver()  # the EMS step reaches the hospital, whose own event then raises the alert
    deliver()
    with app.app_context():
        ref = reference_of(trip_id)
        assert received("hospital.crew_en_route", ref) == {NURSE_ALT: [f"Crew en route: {ref}"]}


def test_unfilled_alerts_hospital_and_center_and_starts_the_ladder(app, demo, deliver):
    with app.app_context():
        configuration.set_value("escalation_ladder", "admin@10, coordinator@30", None)
        db.session.commit()
        trip_id = post_trip("ALT", level="BLS", deadline_minutes=5)
    deliver()
    relay = Relay(app)
    start = utcnow()  # the ladder counts from the unfilled event, written now
    relay.run_once(start + timedelta(minutes=6))
    with app.app_context():
        ref = reference_of(trip_id)
        assert set(received("hospital.unfilled", ref)) == {NURSE_ALT}
        assert set(received("center.unfilled", ref)) == {"coordinator@medport.test", "admin@medport.test"}
        ladder = db.session.scalar(sa.select(AlertEscalation).where(AlertEscalation.reference == ref))
        assert ladder.step == 0 and ladder.acknowledged_at is None
        ladder_id = ladder.public_id
        # The admin turned unfilled alerts off: the ladder reaches them all the same.
        admin = user("admin@medport.test")
        alert_settings.save_settings(alert_settings.user_scope(admin.id), "center", [], user_id=admin.id)
        db.session.commit()
    relay.run_once(start + timedelta(minutes=8))  # not yet
    with app.app_context():
        assert len(received("center.unfilled", ref)["admin@medport.test"]) == 1
    relay.run_once(start + timedelta(minutes=11))
    with app.app_context():
        got = received("center.unfilled", ref)
        assert len(got["admin@medport.test"]) == 2 and "Escalation level 1" in got["admin@medport.test"][1]
        assert len(got["coordinator@medport.test"]) == 1
        escalation.acknowledge(ladder_id, user("coordinator@medport.test"))
        db.session.commit()
    relay.run_once(start + timedelta(minutes=45))
    with app.app_context():
        got = received("center.unfilled", ref)
        assert len(got["coordinator@medport.test"]) == 1  # acknowledged: no second level
        row = db.session.scalar(sa.select(AlertEscalation).where(AlertEscalation.reference == ref))
        assert row.acknowledged_by == "coordinator@medport.test" and row.acknowledged_at is not None
        with pytest.raises(escalation.EscalationRefused):
            escalation.acknowledge(row.public_id, user("admin@medport.test"))


def test_the_ladder_stops_once_the_request_is_awarded(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS", deadline_minutes=5)
    deliver()
    relay = Relay(app)
    deadline = utcnow() + timedelta(minutes=6)
    relay.run_once(deadline)
    with app.app_context():
        # The clock of the pages is still before the deadline: an agency bids and wins.
        award(trip_id, place_bid(trip_id, "AEMS", 10))
    deliver()
    relay.run_once(deadline + timedelta(minutes=11))
    with app.app_context():
        row = db.session.scalar(sa.select(AlertEscalation).where(AlertEscalation.reference == reference_of(trip_id)))
        assert row.resolved_at is not None and row.step == 0
        assert "admin@medport.test" in received("center.unfilled", reference_of(trip_id))
        assert len(received("center.unfilled", reference_of(trip_id))["admin@medport.test"]) == 1


def test_the_ladder_setting_is_checked():
    assert configuration.parse_ladder("admin@10, coordinator@30") == [("admin", 10), ("coordinator", 30)]
    assert configuration.parse_ladder("") == []
    for bad in ("admin@30, admin@10", "nurse@5", "admin", "admin@0", "admin@x"):
        with pytest.raises(ValueError):
            configuration.parse_ladder(bad)
    assert configuration.validate("escalation_ladder", "admin@10,admin@20") == ("admin@10, admin@20", None)
    assert configuration.validate("escalation_ladder", "admin@20,admin@10")[0] is None


# --- the timer --------------------------------------------------------------------------------


def test_bidding_closing_with_no_bid_is_announced_once(app, demo, deliver):
    with app.app_context():
        quiet = post_trip("ALT", level="BLS", deadline_minutes=30)
        busy = post_trip("ALT", level="BLS", deadline_minutes=30)
        place_bid(busy, "AEMS", 15)
    deliver()
    relay = Relay(app)
    relay.run_once(utcnow() + timedelta(minutes=10))  # 20 minutes before: not yet
    with app.app_context():
        assert received("hospital.closing_no_bid", reference_of(quiet)) == {}
    relay.run_once(utcnow() + timedelta(minutes=22))
    relay.run_once(utcnow() + timedelta(minutes=23))
    with app.app_context():
        assert len(received("hospital.closing_no_bid", reference_of(quiet))[NURSE_ALT]) == 1
        assert received("hospital.closing_no_bid", reference_of(busy)) == {}


def test_a_parked_event_alerts_the_center_once(app, demo, deliver):
    with app.app_context():
        post_trip("ALT", level="BLS")
        model = OUTBOX_BY_SILO["hospital"]
        event_id = db.session.scalar(sa.select(model.event_id).order_by(model.id.desc()).limit(1))
        db.session.execute(sa.update(model).where(model.event_id == event_id).values(status="parked"))
        db.session.commit()
    relay = Relay(app)
    relay.run_once(utcnow())
    relay.run_once(utcnow())
    with app.app_context():
        got = received("center.parked")
        assert set(got) == {"coordinator@medport.test", "admin@medport.test"}
        assert len(got["admin@medport.test"]) == 1
        assert received(reference="hospital").keys() == got.keys()


def test_a_late_crew_alerts_its_hospital(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS")
        aems = place_bid(trip_id, "AEMS", 20)
        award(trip_id, aems)
        window_start = db.session.get(TransportRequest, trip_id).window_start
    deliver()
    relay = Relay(app)
    relay.run_once(window_start + timedelta(minutes=5))
    with app.app_context():
        ref = reference_of(trip_id)
        got = received("hospital.crew_late", ref)
        assert list(got) == [NURSE_ALT] and got[NURSE_ALT][0].startswith("Late: not en route")
    relay.run_once(window_start + timedelta(minutes=6))
    with app.app_context():
        assert len(received("hospital.crew_late", ref)[NURSE_ALT]) == 1  # once per late step


# --- the pages --------------------------------------------------------------------------------


def test_the_feed_and_pages_show_only_the_users_own_alerts(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", level="CCT")
    deliver()
    aems, hcr = signed_in(app, DISPATCH["AEMS"]), signed_in(app, DISPATCH["HCR"])
    with app.app_context():
        ref = reference_of(trip_id)
        mine = db.session.scalar(sa.select(Alert).where(Alert.user_id == user(DISPATCH["AEMS"]).id))
        public_id, link = mine.public_id, mine.link
    feed = aems.get("/alerts/feed?after=0").get_json()
    assert feed["unread"] == 1 and [a["reference"] for a in feed["alerts"]] == [ref]
    assert feed["latest"] == feed["alerts"][0]["id"]
    assert aems.get(f"/alerts/feed?after={feed['latest']}").get_json()["alerts"] == []
    assert aems.get("/alerts/feed?after=x").status_code == 400
    assert hcr.get("/alerts/feed?after=0").get_json() == {"unread": 0, "latest": 0, "alerts": []}
    assert ref not in hcr.get("/alerts/").get_data(as_text=True)
    assert ref in aems.get("/alerts/").get_data(as_text=True)
    assert hcr.post(f"/alerts/{public_id}/open").status_code == 404  # another user's alert
    opened = aems.post(f"/alerts/{public_id}/open")
    assert opened.status_code == 302 and opened.headers["Location"] == link
    assert aems.get("/alerts/feed").get_json()["unread"] == 0


def test_the_settings_page_saves_and_refuses_unknown_kinds(app, demo):
    client = signed_in(app, DISPATCH["AEMS"])
    page = client.get("/alerts/settings")
    assert page.status_code == 200 and "A new request my agency may bid on" in page.get_data(as_text=True)
    bad = client.post("/alerts/settings", data={"enabled": ["center.silo_down"]})
    assert bad.status_code == 400
    saved = client.post("/alerts/settings", data={"enabled": ["ems.bid_awarded"], "levels": ["CCT"]})
    assert saved.status_code == 302
    with app.app_context():
        choices = alert_settings.choices_for(user(DISPATCH["AEMS"]))
        assert not choices["ems.new_request"].enabled and choices["ems.bid_awarded"].enabled
    nurse = signed_in(app, NURSE_ALT)
    assert "Crew en route" in nurse.get("/alerts/settings").get_data(as_text=True)
    assert nurse.get("/alerts/defaults").status_code == 403
    admin = signed_in(app, "admin@medport.test")
    with app.app_context():
        bca = agency("BCA").id
    assert admin.get(f"/alerts/defaults/agency/{bca}").status_code == 200
    assert admin.get("/alerts/defaults/agency/999999").status_code == 404
    assert admin.get("/alerts/defaults/galaxy/1").status_code == 404
    assert admin.post(f"/alerts/defaults/agency/{bca}", data={"enabled": ["ems.new_request"]}).status_code == 302
    with app.app_context():
        assert alert_settings.choices_for(user(DISPATCH["BCA"]))["ems.bid_awarded"].enabled is False


def test_acknowledging_from_the_alerts_page(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS", deadline_minutes=5)
    deliver()
    Relay(app).run_once(utcnow() + timedelta(minutes=6))
    coordinator = signed_in(app, "coordinator@medport.test")
    with app.app_context():
        row = db.session.scalar(sa.select(AlertEscalation).where(AlertEscalation.reference == reference_of(trip_id)))
        public_id = row.public_id
    page = coordinator.get("/alerts/").get_data(as_text=True)
    assert f"Acknowledge {row.reference}" in page
    assert signed_in(app, NURSE_ALT).post(f"/alerts/escalations/{public_id}/acknowledge").status_code == 403
    assert coordinator.post(f"/alerts/escalations/{public_id}/acknowledge").status_code == 302
    again = coordinator.post(f"/alerts/escalations/{public_id}/acknowledge")
    assert again.status_code == 409 and "Already acknowledged by coordinator@medport.test" in again.get_data(as_text=True)
    assert coordinator.post("/alerts/escalations/nope/acknowledge").status_code == 404
    with app.app_context():
        from dashboard.models.center import AuditLog

        assert db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(
            AuditLog.action == "escalation.acknowledged")) == 1


def test_a_deactivated_agency_hears_nothing(app, demo, deliver):
    with app.app_context():
        db.session.execute(sa.update(Agency).where(Agency.short_code == "BCA").values(active=False))
        db.session.commit()
        trip_id = post_trip("MNV", level="BLS")
    deliver()
    with app.app_context():
        got = received("ems.new_request", reference_of(trip_id))
        assert DISPATCH["BCA"] not in got and DISPATCH["AEMS"] in got
        assert hospital("MNV") is not None


# --- the tones ----------------------------------------------------------------------------------


def test_every_kind_has_its_own_short_tone_as_committed(tmp_path):
    import os
    import wave

    from dashboard.tones import TONES, write_all

    assert set(TONES) == set(alert_kinds.ALL_KINDS)
    assert len(set(TONES.values())) == len(TONES)  # each kind sounds different
    static = os.path.join(os.path.dirname(__file__), os.pardir, "static", "alerts")
    for path in write_all(str(tmp_path)):
        name = os.path.basename(path)
        with open(path, "rb") as made, open(os.path.join(static, name), "rb") as committed:
            assert made.read() == committed.read(), name  # `flask medport alert-tones` wrote them
        with wave.open(path) as tone:
            assert tone.getnchannels() == 1 and tone.getnframes() / tone.getframerate() < 0.5


def test_old_alerts_and_sent_deliveries_are_pruned(app, demo):
    from dashboard.models.center import AlertDelivery

    now = utcnow()
    with app.app_context():
        uid = user(NURSE_ALT).id
        db.session.add_all([
            Alert(user_id=uid, kind="hospital.unfilled", key="old", title="Old", created_at=now - timedelta(days=91)),
            Alert(user_id=uid, kind="hospital.unfilled", key="new", title="New", created_at=now - timedelta(days=89)),
            AlertDelivery(channel="email", target="x@medport.test", status="sent", created_at=now - timedelta(days=31)),
            AlertDelivery(channel="email", target="y@medport.test", status="parked",
                          created_at=now - timedelta(days=31)),
            AlertDelivery(channel="email", target="z@medport.test", status="sent", created_at=now - timedelta(days=2)),
        ])
        db.session.commit()
    Relay(app).run_once(now)
    with app.app_context():
        assert db.session.scalars(sa.select(Alert.key).where(Alert.key.in_(("old", "new")))).all() == ["new"]
        assert sorted(db.session.scalars(sa.select(AlertDelivery.target))) == ["y@medport.test", "z@medport.test"]


def test_a_crew_stuck_at_pickup_alerts_its_hospital(app, demo, deliver):
    """The crew's late bounds past pickup (services/lateness.py) reach the alerts too."""
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS")
        aems = place_bid(trip_id, "AEMS", 20)
        award(trip_id, aems)
        trip = db.session.get(TransportRequest, trip_id)
        at_pickup = trip.window_start
        trip.status, trip.at_pickup_at = "at_pickup", at_pickup
        db.session.commit()
    deliver()
    Relay(app).run_once(at_pickup + timedelta(minutes=45))
    with app.app_context():
        got = received("hospital.crew_late", reference_of(trip_id))
        assert list(got) == [NURSE_ALT] and got[NURSE_ALT][0].startswith("Stuck: at pickup")
