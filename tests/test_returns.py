"""Return legs, will-call release and the patient's readiness.

The state machine of an open request gains ``will_call_waiting`` (not biddable, never late or
unfilled) and *released* (bidding opens at once, with the urgency chosen then).  Waiting at
pickup is split between "crew late" and "patient not ready" from the times kept.
"""
import re
from datetime import timedelta
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, Hospital
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import HospitalFacility, TransportRequest
from dashboard.models.vocabulary import trip_dispatch_state
from dashboard.services import bidding, configuration, oversight, returns, trip_readiness, trips
from tests.helpers import free_unit, post_trip, text

ALT_NURSE = "nurse@altoona.medport.test"


def outbound_to(code="JVM"):
    """An open BLS request of Altoona to a facility of hospital ``code``; its id."""
    trip = db.session.get(TransportRequest, post_trip("ALT", level="BLS"))
    hospital_id = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == code))
    trip.destination_facility_id = db.session.scalar(sa.select(HospitalFacility.id).where(
        HospitalFacility.hospital_id == hospital_id).order_by(HospitalFacility.id).limit(1))
    db.session.commit()
    return trip.id


def will_call_of(outbound_id):
    outbound = db.session.get(TransportRequest, outbound_id)
    leg = returns.add_return(outbound, "will_call", (None, None), 30, "ALT", actor=Actor(1, None, "Nurse"))
    db.session.commit()
    return leg.id


def test_a_will_call_return_waits_then_is_released_with_the_urgency_chosen(app, demo, deliver):
    with app.app_context():
        outbound_id = outbound_to()
        leg = db.session.get(TransportRequest, will_call_of(outbound_id))
        outbound = db.session.get(TransportRequest, outbound_id)
        assert leg.return_of_id == outbound_id and outbound.return_leg.id == leg.id
        assert (leg.origin_facility_id, leg.destination_facility_id) == (
            outbound.destination_facility_id, outbound.origin_facility_id)
        assert trip_dispatch_state(leg) == "will_call_waiting"
        # Waiting: not biddable, never unfilled, late or at risk, whatever the clock says.
        later = utcnow() + timedelta(days=2)
        assert trip_dispatch_state(leg, later) == "will_call_waiting"
        assert oversight.risk_marks(leg, later, configuration.get_all()) == []
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        with pytest.raises(bidding.BidRefused) as refused:
            bidding.place(leg, aems.id, aems.name, aems.level_list, free_unit(aems.id, leg).id, 20, "", actor=Actor(None))
        assert refused.value.status == 409 and "waits until the patient is ready" in refused.value.message
        db.session.rollback()
        assert leg.id not in {t.id for t in bidding.open_requests(aems.id, aems.level_list, now=later)}
        leg_id = leg.id
    Relay(app).run_once(utcnow() + timedelta(days=2))
    with app.app_context():
        leg = db.session.get(TransportRequest, leg_id)
        assert leg.unfilled_at is None and "unfilled" not in [e.action for e in leg.history]
        before = utcnow()
        trip_readiness.release(leg, "urgent", 30, actor=Actor(1, None, "Clinic nurse"))
        db.session.commit()
        assert leg.released_at >= before and leg.urgency == "urgent" and leg.patient_ready_at == leg.released_at
        assert leg.window_start == leg.released_at and leg.window_end - leg.window_start == timedelta(minutes=60)
        assert trip_dispatch_state(leg) == "bidding"
        assert leg.bid_deadline == leg.released_at + timedelta(minutes=30)
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        assert leg.id in {t.id for t in bidding.open_requests(aems.id, aems.level_list)}
        with pytest.raises(trips.TransitionRefused):
            trip_readiness.release(leg, "routine", 30, actor=Actor(1, None, "Again"))


def test_who_may_release_a_will_call(app, demo):
    with app.app_context():
        leg = db.session.get(TransportRequest, will_call_of(outbound_to("JVM")))
        ids = {code: db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == code))
               for code in ("ALT", "JVM", "MNV")}

        def user(role, hospital=None):
            return SimpleNamespace(role=role, hospital_id=ids.get(hospital))

        assert returns.may_release(leg, user("hospital", "ALT"))  # booked it
        assert returns.may_release(leg, user("hospital", "JVM"))  # the patient is at its facility
        assert returns.may_release(leg, user("coordinator"))
        assert not returns.may_release(leg, user("hospital", "MNV"))
        assert not returns.may_release(leg, user("ems"))


def test_the_destination_hospital_releases_it_with_one_click_and_others_do_not_find_it(app, demo, client, auth):
    with app.app_context():
        leg = db.session.get(TransportRequest, will_call_of(outbound_to("JVM")))
        public_id, reference = leg.public_id, leg.reference
    assert auth.login("nurse@mountnittany.medport.test").status_code == 302
    assert reference not in text(client.get("/hospital/will-call"))
    assert client.post(f"/hospital/requests/{public_id}/release", data={"urgency": "routine"}).status_code == 404
    auth.logout()
    assert auth.login("nurse@juniata.medport.test").status_code == 302
    page = text(client.get("/hospital/will-call"))
    assert reference in page and "Will-call: waiting" in page
    bad = client.post(f"/hospital/requests/{public_id}/release", data={"urgency": "whenever"})
    assert bad.status_code == 400
    response = client.post(f"/hospital/requests/{public_id}/release", data={"urgency": "emergent"})
    assert response.status_code == 302
    with app.app_context():
        leg = trips.get_by_public_id(public_id)
        assert leg.released_at is not None and leg.urgency == "emergent"
        assert leg.released_by
    again = client.post(f"/hospital/requests/{public_id}/release", data={"urgency": "emergent"})
    assert again.status_code == 409


def test_a_fixed_return_and_a_pair_bid(app, demo, client, auth):
    with app.app_context():
        outbound = db.session.get(TransportRequest, outbound_to("JVM"))
        start = outbound.window_end + timedelta(hours=3)
        leg = returns.add_return(outbound, "fixed", (start, start + timedelta(hours=1)), 30, "ALT", actor=Actor(1, None, "Nurse"))
        db.session.commit()
        assert trip_dispatch_state(leg) == "bidding" and not leg.will_call
        with pytest.raises(trips.TransitionRefused) as refused:
            returns.add_return(outbound, "will_call", (None, None), 30, "ALT", actor=Actor(1, None, "Nurse"))
        assert refused.value.status == 409
        db.session.rollback()
        outbound_id, leg_id = outbound.public_id, leg.public_id
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        unit = free_unit(aems.id, outbound).public_id
    assert auth.login("dispatch@altoonaems.medport.test").status_code == 302
    page = text(client.get(f"/ems/requests/{outbound_id}"))
    assert "bid on both legs" in page and leg.reference in page
    # A bad ETA on the return: neither bid is placed.
    response = client.post(f"/ems/requests/{outbound_id}/bid-pair", data={
        "pair-unit": unit, "pair-eta_minutes": "20", "pair-return_unit": unit, "pair-return_eta_minutes": "0"})
    assert response.status_code == 400
    # The pair bid form comes back as sent: what was typed, and the error at the return's ETA.
    pair_form = text(response).split('id="pair-bid-form"', 1)[1].split("</form>", 1)[0]
    assert re.search(r'id="pair-eta_minutes"[^>]*value="20"', pair_form), pair_form
    assert re.search(rf'<option selected value="{unit}">', pair_form), pair_form
    assert re.search(r'aria-invalid="true"[^>]*id="pair-return_eta_minutes"[^>]*value="0"', pair_form), pair_form
    assert "pair-return_eta_minutes-msg" in pair_form and 'class="error"' in pair_form
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(TransportBid.id)).where(
            TransportBid.agency_id == aems.id, TransportBid.status == "live",
            TransportBid.trip_id.in_([trips.get_by_public_id(outbound_id).id,
                                      trips.get_by_public_id(leg_id).id]))) == 0
    response = client.post(f"/ems/requests/{outbound_id}/bid-pair", data={
        "pair-unit": unit, "pair-eta_minutes": "20", "pair-return_unit": unit, "pair-return_eta_minutes": "15"})
    assert response.status_code == 302, text(response)
    with app.app_context():
        placed = db.session.execute(sa.select(TransportBid.trip_id, TransportBid.eta_minutes).where(
            TransportBid.agency_id == aems.id, TransportBid.status == "live")).all()
        ids = {trips.get_by_public_id(outbound_id).id: 20, trips.get_by_public_id(leg_id).id: 15}
        assert {row[0]: row[1] for row in placed if row[0] in ids} == ids


def test_a_return_needs_a_registered_facility(app, demo):
    with app.app_context():
        outbound = db.session.get(TransportRequest, post_trip("ALT"))
        outbound.destination_facility_id, outbound.destination_address = None, "12 Home Street"
        db.session.commit()
        with pytest.raises(trips.TransitionRefused) as refused:
            returns.add_return(outbound, "will_call", (None, None), 30, "ALT", actor=Actor(1, None, "Nurse"))
        assert refused.value.status == 400


# --- readiness and the waiting split -------------------------------------------------------------

def timed(window_start, at_pickup, transporting=None, ready=None, not_ready=None):
    return SimpleNamespace(window_start=window_start, at_pickup_at=at_pickup, transporting_at=transporting,
                           patient_ready_at=ready, not_ready_at=not_ready)


def test_waiting_is_split_between_crew_late_and_patient_not_ready():
    t0 = utcnow().replace(microsecond=0)
    minutes = lambda m: t0 + timedelta(minutes=m)  # noqa: E731
    assert returns.waiting(timed(t0, None)) is None
    # The crew 20 minutes late, the patient ready at the booked time.
    assert returns.waiting(timed(t0, minutes(20), minutes(25))) == returns.Waiting(20, 0)
    # The crew on time, the patient not ready for 15 minutes (marked not ready, then ready).
    assert returns.waiting(timed(t0, t0, minutes(20), ready=minutes(15), not_ready=t0)) == returns.Waiting(0, 15)
    # Marked not ready and never ready: until the crew left with the patient.
    # (the crew 5 min after the booked time, but the patient was not ready then: not the crew's delay)
    assert returns.waiting(timed(t0, minutes(5), minutes(30), not_ready=minutes(5))) == returns.Waiting(0, 25)
    # The crew early: waiting for the patient counts from the booked pickup only.
    assert returns.waiting(timed(t0, minutes(-10), minutes(5), ready=minutes(5))) == returns.Waiting(0, 5)


def test_the_hospital_marks_ready_and_not_ready_and_the_request_shows_the_split(app, demo, client, auth):
    with app.app_context():
        trip = db.session.get(TransportRequest, post_trip("ALT"))
        public_id = trip.public_id
        now = utcnow()
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip.id).values(
            status="at_pickup", window_start=now - timedelta(minutes=30), at_pickup_at=now - timedelta(minutes=25),
            awarded_agency_id=1, awarded_at=now - timedelta(hours=1)))
        db.session.commit()
    assert auth.login(ALT_NURSE).status_code == 302
    assert client.post(f"/hospital/requests/{public_id}/not-ready", data={"reason": ""}).status_code == 400
    response = client.post(f"/hospital/requests/{public_id}/not-ready", data={"reason": "Still on dialysis"})
    assert response.status_code == 302
    assert client.post(f"/hospital/requests/{public_id}/ready").status_code == 302
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        assert trip.not_ready_reason == "Still on dialysis" and trip.patient_ready_at >= trip.not_ready_at
        split = returns.waiting(trip)
        assert split.not_ready >= 25 and split.crew_late == 0
        trip_id = trip.id
    page = text(client.get(f"/hospital/requests/{public_id}"))
    assert "Waiting at pickup" in page and "patient not ready" in page and "Still on dialysis" in page
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip_id)
                           .values(status="completed"))
        db.session.commit()
    assert client.post(f"/hospital/requests/{public_id}/ready").status_code == 409


# --- analytics of scheduled work ---------------------------------------------------------------

def test_analytics_show_scheduled_volume_will_call_release_to_pickup_and_delay_attribution(app, demo, client, auth):
    from dashboard.localtime import local_today
    from dashboard.services.analytics import period as analytics
    from dashboard.services.analytics import scheduled as scheduled_analytics
    from tests.helpers import post_ahead

    with app.app_context():
        alt = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
        scope = analytics.Scope(hospital_id=alt.id)
        period = analytics.resolve_period("today", today=local_today())
        before = scheduled_analytics.report(period, scope)
        post_ahead("BLS", days=5)  # booked ahead: scheduled
        same_day = db.session.get(TransportRequest, post_trip("ALT"))
        leg = db.session.get(TransportRequest, will_call_of(outbound_to("JVM")))
        trip_readiness.release(leg, "urgent", 30, actor=Actor(1, None, "Nurse"))
        db.session.commit()
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        now = utcnow()
        # The will-call's crew at the pickup 24 minutes after release, the patient ready: 24 min crew late.
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == leg.id).values(
            status="transporting", awarded_agency_id=aems.id, at_pickup_at=leg.released_at + timedelta(minutes=24),
            transporting_at=leg.released_at + timedelta(minutes=30)))
        # The same-day one: crew on time, patient not ready for 12 minutes.
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == same_day.id).values(
            status="transporting", awarded_agency_id=aems.id, window_start=now - timedelta(minutes=40),
            at_pickup_at=now - timedelta(minutes=40), not_ready_at=now - timedelta(minutes=40),
            patient_ready_at=now - timedelta(minutes=28), transporting_at=now - timedelta(minutes=20)))
        db.session.commit()
        after = scheduled_analytics.report(period, scope)
        # Booked ahead and the return leg are scheduled; the same-day one and the outbound are not.
        assert after["volume"]["scheduled"] - before["volume"]["scheduled"] == 2
        assert after["volume"]["same_day"] - before["volume"]["same_day"] == 2
        assert after["will_call"]["n"] == 1 and after["will_call"]["p50"] == 24
        late_before = before["delay"]["agencies"].get(aems.id, [0, 0, 0])
        n, late, not_ready = after["delay"]["agencies"][aems.id]
        assert (late - late_before[1], not_ready - late_before[2]) == (24, 12)
    assert auth.login(ALT_NURSE).status_code == 302
    page = text(client.get("/hospital/analytics"))
    assert "Scheduled work" in page and "Waiting at pickup by agency" in page
    export = client.get("/hospital/analytics?format=csv&table=will_call")
    assert export.status_code == 200 and "Release to pickup" in export.get_data(as_text=True)


def test_waiting_at_pickup_sums_round_each_request_as_waiting_does(app, demo):
    """The delay table's sums: each request's minutes rounded as ``waiting`` rounds them (Python's
    ``round`` of a float), ties of the SQL sum on PostgreSQL included: 9 s is 0.15 min, rounded
    to 0.1 (the float is just under 0.15), 15 s is 0.25, rounded to 0.2 (half to even)."""
    from datetime import datetime

    from dashboard.services.analytics import period as analytics
    from dashboard.services.analytics import scheduled as scheduled_analytics
    from dashboard.services.analytics.sqltime import dialect_of

    day = datetime(2024, 3, 5, 17, 0)  # noon in Altoona, far from the demo's trips
    late_seconds = (9, 15, 21, 45, 100.5)
    with app.app_context():
        alt = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        ids = [post_trip("ALT") for _ in range(len(late_seconds) + 1)]
        for trip_id, late in zip(ids, late_seconds, strict=False):
            db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip_id).values(
                status="completed", created_at=day, awarded_agency_id=aems.id, window_start=day,
                at_pickup_at=day + timedelta(seconds=late), transporting_at=day + timedelta(minutes=10)))
        # Crew on time, the patient ready 33 s later: 0.55 min not ready, rounded to 0.6.
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == ids[-1]).values(
            status="completed", created_at=day, awarded_agency_id=aems.id, window_start=day, at_pickup_at=day,
            not_ready_at=day, patient_ready_at=day + timedelta(seconds=33),
            transporting_at=day + timedelta(minutes=10)))
        db.session.commit()
        period = analytics.resolve_period("custom", day.date(), day.date())
        where = analytics.posted_in(period)
        row_by_row = scheduled_analytics._waiting_sums(where)
        n, late, not_ready = row_by_row[0][alt.id]
        assert (n, round(late, 1), round(not_ready, 1)) == (6, 3.1, 0.6)  # 0.1 + 0.2 + 0.3 + 0.8 + 1.7
        if dialect_of("hospital") == "postgresql":
            for in_sql, expected in zip(scheduled_analytics._waiting_sums_sql(where), row_by_row, strict=True):
                assert in_sql.keys() == expected.keys()
                for key, (count, crew_late, waited) in in_sql.items():
                    assert (count, round(crew_late, 1), round(waited, 1)) == (
                        expected[key][0], round(expected[key][1], 1), round(expected[key][2], 1))
        figures = scheduled_analytics.report(period, analytics.Scope(hospital_id=alt.id))["delay"]
        for per in (figures["hospitals"][alt.id], figures["agencies"][aems.id]):
            assert (per[0], round(per[1], 1), round(per[2], 1)) == (6, 3.1, 0.6)
