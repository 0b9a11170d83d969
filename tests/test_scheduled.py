"""Booking ahead: a request whose pickup lies past its lead time is *upcoming* until bidding opens.

The state machine of an open request gains ``upcoming`` (before ``bidding``); the timer
announces the opening once; agencies see it in their upcoming list and may not bid; the
hospital edits it freely; the deadline, the risk marks and analytics count from the opening.
"""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import HospitalOutboxEvent
from dashboard.models.vocabulary import dispatch_state, trip_dispatch_state
from dashboard.services import bidding, configuration, oversight, scheduling, trips
from tests.helpers import ALT_NURSE, free_unit, hospital, local_time, post_ahead, text, valid_form

DAY = timedelta(days=1)


def agency(code):
    return db.session.scalar(sa.select(Agency).where(Agency.short_code == code))


def opened_events(public_id):
    return db.session.scalar(sa.select(sa.func.count(HospitalOutboxEvent.id)).where(
        HospitalOutboxEvent.entity_id == public_id, HospitalOutboxEvent.type == "trip.bidding_opened"))


def test_a_pickup_past_its_lead_time_is_upcoming_then_bidding_then_unfilled(app, demo):
    with app.app_context():
        trip = db.session.get(TransportRequest, post_ahead("BLS", days=5))
        lead = timedelta(hours=48)
        assert trip.bidding_opens_at == trip.window_start - lead
        # The bidding time (30 min) counts from the opening, not from posting.
        assert abs(trip.bid_deadline - trip.bidding_opens_at - timedelta(minutes=30)) < timedelta(seconds=1)
        opens = trip.bidding_opens_at
        assert trip_dispatch_state(trip) == "upcoming"
        assert trip_dispatch_state(trip, trip.created_at + timedelta(hours=2)) == "upcoming"
        assert trip_dispatch_state(trip, opens - timedelta(seconds=1)) == "upcoming"
        assert trip_dispatch_state(trip, opens) == "bidding"
        assert trip_dispatch_state(trip, opens + timedelta(minutes=31)) == "unfilled"
        assert dispatch_state(trip, True, opens + timedelta(minutes=31)) == "awaiting_award"


def test_the_lead_time_is_per_level_of_care_and_a_near_pickup_opens_at_posting(app, demo):
    with app.app_context():
        cct = db.session.get(TransportRequest, post_ahead("CCT", days=5))
        assert cct.window_start - cct.bidding_opens_at == timedelta(hours=72)
        near = db.session.get(TransportRequest, post_ahead("BLS", days=1))  # inside 48 h
        assert near.bidding_opens_at is None and trip_dispatch_state(near) == "bidding"
        assert near.bid_deadline <= utcnow() + timedelta(minutes=30)
        configuration.set_value("bidding_lead_hours_bls", 12, None)
        db.session.commit()
        now_upcoming = db.session.get(TransportRequest, post_ahead("BLS", days=1))
        assert now_upcoming.window_start - now_upcoming.bidding_opens_at == timedelta(hours=12)


def test_an_agency_may_not_bid_before_the_opening_and_sees_it_as_upcoming(app, demo, client, auth):
    with app.app_context():
        trip = db.session.get(TransportRequest, post_ahead("BLS", days=5))
        public_id, reference, opens = trip.public_id, trip.reference, trip.bidding_opens_at
        aems = agency("AEMS")
        unit = free_unit(aems.id, trip)
        with pytest.raises(bidding.BidRefused) as refused:
            bidding.place(trip, aems.id, aems.name, aems.level_list, unit.id, 20, "", actor=Actor(None))
        assert refused.value.status == 409 and "bidding opens" in refused.value.message
        db.session.rollback()
        assert trip.id not in {t.id for t in bidding.open_requests(aems.id, aems.level_list)}
        assert trip.id in {t.id for t in scheduling.upcoming_requests(aems.id, aems.level_list)}
        # At the opening it moves from the upcoming list to the open ones.
        assert trip.id in {t.id for t in bidding.open_requests(aems.id, aems.level_list, now=opens)}
        assert trip.id not in {t.id for t in scheduling.upcoming_requests(aems.id, aems.level_list, now=opens)}
        unit_public_id = unit.public_id
    assert auth.login("dispatch@altoonaems.medport.test").status_code == 302
    board = text(client.get("/ems/"))
    # The board counts it under Upcoming; the list itself is fetched when that fold opens.
    assert reference not in board and '<span id="upcoming-count" class="count">1</span>' in board
    assert reference in text(client.get("/ems/board/upcoming", headers={"HX-Request": "true"}))
    page = client.get(f"/ems/requests/{public_id}")
    assert page.status_code == 200 and "Upcoming: booked ahead, bidding opens" in text(page)
    response = client.post(f"/ems/requests/{public_id}/bid",
                           data={"unit": unit_public_id, "eta_minutes": "20", "note": ""})
    assert response.status_code == 409 and "booked ahead: bidding opens" in text(response)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(TransportBid.id))
                                 .where(TransportBid.trip_id == trip.id)) == 0


def test_the_sweep_announces_the_opening_once_and_never_marks_an_upcoming_request_unfilled(app, demo, deliver):
    with app.app_context():
        trip = db.session.get(TransportRequest, post_ahead("BLS", days=5))
        trip_id, public_id, opens, created = trip.id, trip.public_id, trip.bidding_opens_at, trip.created_at
    deliver()
    relay = Relay(app)
    relay.run_once(created + timedelta(hours=3))  # a same-day deadline would have passed long ago
    relay.run_once(opens - timedelta(minutes=1))
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert opened_events(public_id) == 0 and trip.unfilled_at is None
        assert "unfilled" not in [e.action for e in trip.history]
    relay.run_once(opens + timedelta(seconds=1))
    relay.run_once(opens + timedelta(seconds=2))
    deliver()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert opened_events(public_id) == 1
        assert trip.opening_announced_at == opens + timedelta(seconds=1) and trip.version == 1
        assert [e.action for e in trip.history].count("bidding_opened") == 1
    relay.run_once(trip.bid_deadline + timedelta(seconds=1))  # its own deadline: unfilled now
    with app.app_context():
        assert db.session.get(TransportRequest, trip_id).unfilled_at == trip.bid_deadline + timedelta(seconds=1)


def test_risk_marks_count_from_the_opening(app, demo):
    with app.app_context():
        trip = db.session.get(TransportRequest, post_ahead("BLS", days=5))
        settings = configuration.get_all()
        later = trip.created_at + timedelta(hours=5)
        assert [kind for kind, _label in oversight.risk_marks(trip, later, settings)] == []
        assert [kind for kind, _ in oversight.risk_marks(trip, trip.bidding_opens_at + timedelta(minutes=5),
                                                         settings)] == []
        assert "no_bids" in [kind for kind, _ in oversight.risk_marks(
            trip, trip.bidding_opens_at + timedelta(minutes=11), settings)]


def test_a_preferred_head_start_counts_from_the_opening(app, demo):
    with app.app_context():
        trip = db.session.get(TransportRequest, post_ahead("BLS", days=5, invite_mode="preferred_then_all"))
        assert trip.widen_invite_at == trip.bidding_opens_at + timedelta(minutes=10)
        outsider = next(a for a in db.session.scalars(sa.select(Agency).where(Agency.active.is_(True)))
                        if a.id not in trip.invited_ids and "BLS" in bidding.servable_levels(a.level_list))
        assert not trips.agency_may_serve(trip, outsider.id, outsider.level_list,
                                          trip.bidding_opens_at + timedelta(minutes=9))
        assert trips.agency_may_serve(trip, outsider.id, outsider.level_list,
                                      trip.bidding_opens_at + timedelta(minutes=10))


@pytest.fixture
def nurse(client, auth, demo):
    assert auth.login(ALT_NURSE).status_code == 302
    return client


def test_the_form_books_ahead_to_the_horizon_and_the_hospital_edits_it_freely(app, nurse):
    start, end = local_time(app, 10 * 24 * 60), local_time(app, 10 * 24 * 60 + 120)
    response = nurse.post("/hospital/requests/new", data=valid_form(app, level_of_care="BLS",
                                                                    cardiac_monitor=None,
                                                                    window_start=start, window_end=end))
    assert response.status_code == 302
    public_id = response.headers["Location"].rsplit("/", 1)[1]
    page = text(nurse.get(f"/hospital/requests/{public_id}"))
    assert "Upcoming" in page and "Bidding opens" in page and "edit freely until then" in page
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        assert trip.window_start - trip.bidding_opens_at == timedelta(hours=48)
        duration = trip.bid_deadline - trip.bidding_opens_at
        version = trip.version
    # Moved three days later: the opening follows, the bidding time is kept.
    moved = dict(window_start=local_time(app, 13 * 24 * 60), window_end=local_time(app, 13 * 24 * 60 + 120),
                 mobility="stretcher", weight_kg="82", isolation="contact", oxygen_lpm="2.5",
                 other_needs="Fall risk", notes="Daughter meets the crew",
                 version=str(version))
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=moved)
    assert response.status_code == 302, text(response)
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        assert trip.window_start - trip.bidding_opens_at == timedelta(hours=48)
        assert trip.bid_deadline - trip.bidding_opens_at == duration
        version = trip.version
    # Moved inside the lead time: bidding opens at once.
    soon = dict(moved, window_start=local_time(app, 20 * 60), window_end=local_time(app, 22 * 60),
                version=str(version))
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=soon)
    assert response.status_code == 302, text(response)
    with app.app_context():
        trip = trips.get_by_public_id(public_id)
        assert trip.bidding_opens_at <= utcnow() and trip_dispatch_state(trip) == "bidding"
        assert trip.bid_deadline - trip.bidding_opens_at == duration


def test_the_horizon_is_configured_and_refused_past_with_a_message(app, nurse):
    with app.app_context():
        configuration.set_value("booking_horizon_days", 30, None)
        db.session.commit()
        before = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)))
    form = valid_form(app, window_start=local_time(app, 31 * 24 * 60), window_end=local_time(app, 31 * 24 * 60 + 60))
    response = nurse.post("/hospital/requests/new", data=form)
    assert response.status_code == 400 and "can be at most 30 days ahead" in text(response)
    assert "Within 30 days" in text(nurse.get("/hospital/requests/new"))
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(TransportRequest.id))) == before
        # The service refuses it too, whatever calls it.
        with pytest.raises(trips.TransitionRefused) as refused:
            post_ahead(days=31)
        assert refused.value.status == 400
    assert configuration.validate("booking_horizon_days", "0")[1]
    assert configuration.validate("bidding_lead_hours_cct", "500")[1]


def test_analytics_count_time_to_first_bid_and_award_from_the_opening(app, demo):
    from dashboard.localtime import local_today
    from dashboard.services.analytics import period, report

    with app.app_context():
        trip_id = post_ahead("BLS", days=5)
        T = TransportRequest
        # Every request of the scope: bidding opened 5 min after posting, first bid 20 min after
        # posting, awarded 30 min after: 15 and 25 minutes from the opening (20 and 30 from posting).
        for trip in db.session.scalars(sa.select(T).where(T.hospital_id == hospital("ALT").id)):
            trip.bidding_opens_at = trip.created_at + timedelta(minutes=5)
            trip.first_bid_at = trip.created_at + timedelta(minutes=20)
            trip.awarded_at = trip.created_at + timedelta(minutes=30)
        db.session.commit()
        today = local_today()
        figures = report.report(period.resolve_period("today", today=today),
                                period.Scope(hospital_id=hospital("ALT").id))
        speed = {row["key"]: row for row in figures["speed"]}
        assert speed["first_bid"]["n"] >= 1 and db.session.get(T, trip_id) is not None
        assert speed["first_bid"]["p50"] == 15 and speed["first_bid"]["p90"] == 15
        assert speed["award"]["p50"] == 25
        assert "bidding opened" in speed["first_bid"]["label"]


def test_upcoming_requests_have_their_own_tab_and_stay_off_the_center_board(app, nurse, client, auth):
    start, end = local_time(app, 10 * 24 * 60), local_time(app, 10 * 24 * 60 + 120)
    response = nurse.post("/hospital/requests/new", data=valid_form(app, level_of_care="BLS",
                                                                    cardiac_monitor=None,
                                                                    window_start=start, window_end=end))
    public_id = response.headers["Location"].rsplit("/", 1)[1]
    with app.app_context():
        reference = trips.get_by_public_id(public_id).reference
    assert reference in text(nurse.get("/hospital/requests/panel?tab=upcoming"))
    assert reference not in text(nurse.get("/hospital/requests/panel"))
    assert 'Upcoming <span class="count">1</span>' in text(nurse.get("/hospital/"))
    auth.logout()
    assert auth.login("coordinator@medport.test").status_code == 302
    assert reference not in text(client.get("/center/board/panel"))
