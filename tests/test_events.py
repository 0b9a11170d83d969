"""Events: the outbox written with each change, the relay's follow-ups, retries, parking, deadlines.

The helpers (``tests.helpers``: ``post_trip``, ``place_bid``, ``award`` ...) act as the views do:
services, then one commit.
"""
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from dashboard import create_app
from dashboard.events import handlers
from dashboard.events.outbox import SYSTEM, Actor, emit
from dashboard.events.relay import (
    UNREACHABLE_BACKOFF_SECONDS,
    Relay,
    backoff_seconds,
    retry_parked,
    start_inprocess_relay,
    stop_inprocess_relay,
)
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, AuditLog, LiveSignal, User
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import HospitalUser, TransportRequest
from dashboard.models.outbox import INBOX_BY_SILO, OUTBOX_BY_SILO
from dashboard.services import bidding, configuration, intervention, route_steps, trip_posting, trips
from dashboard.services.silos import CrossSiloWrite
from tests.helpers import agency, award, awarded_trip, outbox_types, pending, place_bid, post_trip

# --- the outbox: an event with every committed change, none without -------------------------


def test_a_trip_lifecycle_writes_each_event_in_its_own_silo(app, demo, deliver):
    trip_id, aems, cll = awarded_trip(app, deliver)
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        public_id = trip.public_id
        trip_posting.edit(trip, {"notes": "Bring a bariatric stretcher"}, actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
        org = agency("AEMS")
        bid = db.session.get(TransportBid, aems)
        bidding.change(bid, db.session.get(TransportRequest, trip_id), org.id, org.name, org.level_list,
                       bid.unit_id, "18", "Closer now", actor=Actor(None))
        db.session.commit()
        org = agency("CLL")
        bidding.withdraw(db.session.get(TransportBid, cll), db.session.get(TransportRequest, trip_id),
                         org.id, org.name, actor=Actor(None))
        db.session.commit()
    deliver()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert (trip.bid_count, trip.best_eta_minutes) == (1, 18)
        award(trip_id, aems)
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        route_steps.advance(route, "en_route", actor=Actor(None, None, "Medic 11"))
        db.session.commit()
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        route_steps.hand_back(route, "Unit broke down", actor=Actor(None, None, "Medic 11"))
        db.session.commit()
    deliver()
    with app.app_context():
        assert outbox_types("hospital", public_id) == [
            "trip.posted", "trip.changed", "trip.awarded", "trip.status_changed", "trip.handed_back"]
        assert outbox_types("ems", trip_id) == ["trip.status_changed", "trip.handed_back"]
        ems_types = outbox_types("ems")
        assert ems_types.count("bid.placed") == 2
        assert {"bid.changed", "bid.withdrawn"} <= set(ems_types)
        assert "unit.status_changed" in ems_types  # assigned by the award, freed by the hand-back
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.status == "open" and trip.handed_back_count == 1
        for silo in OUTBOX_BY_SILO:
            assert pending(silo) == 0
        # Every delivered event left its audit entry in the center, once.
        audited = db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(AuditLog.event_id.is_not(None)))
        delivered = sum(db.session.scalar(sa.select(sa.func.count(m.id)).where(m.status == "delivered"))
                        for silo, m in OUTBOX_BY_SILO.items() if silo != "center")
        assert audited == delivered


def test_a_failed_transaction_leaves_no_event(app, demo):
    with app.app_context():
        count = sa.select(sa.func.count(TransportRequest.id))
        trips_before, events_before = db.session.scalar(count), len(outbox_types("hospital"))
        post_trip(commit=False)
        db.session.rollback()
        assert db.session.scalar(count) == trips_before
        assert len(outbox_types("hospital")) == events_before


def test_a_refused_transition_leaves_no_event(app, demo, deliver):
    trip_id, aems, cll = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
        with pytest.raises(trips.TransitionRefused):
            award(trip_id, cll)
        db.session.rollback()
        assert outbox_types("hospital").count("trip.awarded") == 1


def test_a_transaction_writing_two_silos_is_refused_with_its_event(app, demo):
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "nurse@altoona.medport.test"))
        with pytest.raises(CrossSiloWrite):
            user.display_name = "Renamed"
            emit("center", "user.updated", "user", user.public_id, {"user_id": user.id}, actor=SYSTEM)
            post_trip()
        db.session.rollback()
        assert outbox_types("center") == [] and "trip.posted" not in outbox_types("hospital")


def test_unknown_event_types_are_refused(app):
    with app.app_context(), pytest.raises(ValueError):
        emit("hospital", "trip.teleported", "trip", "x", {}, actor=SYSTEM)


# --- follow-ups ----------------------------------------------------------------------------


def test_award_accepts_the_winner_declines_the_rest_and_books_the_unit(app, demo, deliver):
    trip_id, aems, cll = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
    deliver()
    with app.app_context():
        winner, loser = db.session.get(TransportBid, aems), db.session.get(TransportBid, cll)
        assert (winner.status, loser.status) == ("accepted", "declined")
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        assert route.unit_id == winner.unit_id and route.status == "planned"
        unit = db.session.get(Unit, winner.unit_id)
        assert unit.status == "assigned" and unit.current_trip_id == trip_id
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.bid_count == 2 and trip.best_eta_minutes == 12
        entry = db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "trip.awarded",
                                                            AuditLog.event_id.is_not(None)))
        assert entry.entity_id == trip.public_id and entry.silo == "hospital"


def test_a_bid_event_delivered_after_the_award_keeps_the_trips_bid_summary(app, demo, deliver):
    """The summary counts live bids while the request takes bids; once awarded it stays as the
    hospital saw it when it chose (a bid event that arrives late does not recount it to 0)."""
    trip_id, aems, cll = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
    deliver()
    with app.app_context():
        late = db.session.get(TransportBid, cll)
        emit("ems", "bid.changed", "bid", late.public_id, bidding.bid_payload(late, "Centre LifeLink"), actor=SYSTEM)
        db.session.commit()
    assert deliver() >= 1
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert (trip.status, trip.bid_count, trip.best_eta_minutes) == ("awarded", 2, 12)


def test_cancel_closes_the_bids_and_frees_the_unit(app, demo, deliver):
    trip_id, aems, cll = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
    deliver()
    with app.app_context():
        trips.cancel(db.session.get(TransportRequest, trip_id), "not_needed", "", actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        assert db.session.get(TransportBid, aems).status == "closed"
        assert db.session.get(TransportBid, cll).status == "declined"
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        assert route.status == "cancelled"
        unit = db.session.get(Unit, db.session.get(TransportBid, aems).unit_id)
        assert unit.status == "available" and unit.current_trip_id is None


def test_a_new_hospital_user_gets_a_staff_profile(app, demo, deliver, runner):
    result = runner.invoke(args=["medport", "create-user", "--email", "ward@altoona.medport.test",
                                 "--name", "Ward Clerk", "--role", "hospital", "--hospital", "ALT",
                                 "--password", "long enough password"])
    assert result.exit_code == 0, result.output
    deliver()
    with app.app_context():
        user = db.session.scalar(sa.select(User).where(User.email == "ward@altoona.medport.test"))
        user_id = user.id
        profile = db.session.scalar(sa.select(HospitalUser).where(HospitalUser.user_id == user_id))
        assert profile.hospital_id == user.hospital_id and profile.display_name == "Ward Clerk"
        user.active = False
        emit("center", "user.updated", "user", user.public_id,
             {"user_id": user.id, "public_id": user.public_id, "display_name": "Ward Clerk",
              "role": "hospital", "hospital_id": user.hospital_id, "agency_id": None, "active": False}, actor=SYSTEM)
        db.session.commit()
    deliver()
    with app.app_context():
        profile = db.session.scalar(sa.select(HospitalUser).where(HospitalUser.user_id == user_id))
        assert profile.active is False


def test_a_configuration_change_reaches_every_organisation(app, demo, deliver):
    from types import SimpleNamespace

    with app.app_context():
        values = configuration.get_all()
        values["bid_deadline_default_minutes"] = 45
        admin = db.session.scalar(sa.select(User).where(User.email == "admin@medport.test"))
        changed, errors = configuration.save(
            values, SimpleNamespace(user_id=admin.id, email=admin.email, ip="127.0.0.1"))
        assert changed and not errors
        db.session.commit()
        assert outbox_types("center") == ["config.changed"]
    deliver()
    with app.app_context():
        signal = db.session.scalar(sa.select(LiveSignal).where(LiveSignal.name == "config-updated"))
        assert signal.agency_ids == "*"


# --- idempotency -----------------------------------------------------------------------------


def _effects(trip_id):
    """Everything the award's delivery creates, counted."""
    return dict(
        routes=db.session.scalar(sa.select(sa.func.count(EmsRoute.id)).where(EmsRoute.trip_id == trip_id)),
        accepted=db.session.scalar(sa.select(sa.func.count(TransportBid.id)).where(
            TransportBid.trip_id == trip_id, TransportBid.status == "accepted")),
        audit=db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(  # the demo's have no event
            AuditLog.action == "trip.awarded", AuditLog.event_id.is_not(None))),
        signals=db.session.scalar(sa.select(sa.func.count(LiveSignal.id))),
        unit_events=outbox_types("ems").count("unit.status_changed"),
        inbox=sum(db.session.scalar(sa.select(sa.func.count(m.id))) for m in INBOX_BY_SILO.values()),
    )


def test_delivering_the_same_event_twice_has_one_effect(app, demo, deliver):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
    deliver()
    with app.app_context():
        once = _effects(trip_id)
        model = OUTBOX_BY_SILO["hospital"]
        # As if the relay died after applying the follow-ups but before marking the event.
        db.session.execute(sa.update(model).where(model.type == "trip.awarded")
                           .values(status="pending", delivered_at=None))
        db.session.commit()
    assert deliver() == 1
    with app.app_context():
        assert _effects(trip_id) == once
        assert once["routes"] == 1 and once["accepted"] == 1 and once["audit"] == 1


class LeaseExpiredRelay(Relay):
    """A relay that finds every lease run out, as when another relay stalled mid-delivery."""

    def _claim(self, model, event_pk, now):
        return True


def test_two_relays_racing_on_one_event_apply_it_once(app, demo, deliver, monkeypatch):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
        before = _effects(trip_id)
    barrier = threading.Barrier(2, timeout=20)
    registered = handlers.handlers_for

    def racing(silo, type_):
        """Both relays enter each of the award's handlers before either commits it."""
        if type_ != "trip.awarded":
            return registered(silo, type_)

        def entered_together(fn):
            def run(event):
                barrier.wait()
                fn(event)
            return run
        return [(name, target, entered_together(fn)) for name, target, fn in registered(silo, type_)]

    monkeypatch.setattr(handlers, "handlers_for", racing)
    relays = [LeaseExpiredRelay(app), LeaseExpiredRelay(app)]
    results, errors = [], []

    def run(relay):
        try:
            results.append(relay.run_once())
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(relay,)) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors and min(results) >= 1
    monkeypatch.setattr(handlers, "handlers_for", registered)
    deliver()  # the unit's status event
    with app.app_context():
        after = _effects(trip_id)
        assert after["routes"] == 1 and after["accepted"] == 1
        assert after["audit"] == before["audit"] + 1
        assert after["unit_events"] == before["unit_events"] + 1
        model = INBOX_BY_SILO["ems"]
        assert db.session.scalar(sa.select(sa.func.count(model.id)).where(model.handler == "ems_apply_award")) == 1


def test_two_relays_together_deliver_everything_once(app, demo, deliver):
    deliver()
    with app.app_context():
        trip_ids = [post_trip() for _ in range(6)]
        public_ids = list(db.session.scalars(sa.select(TransportRequest.public_id).where(
            TransportRequest.id.in_(trip_ids))))
    relays = [Relay(app), Relay(app)]
    threads = [threading.Thread(target=relay.drain) for relay in relays]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with app.app_context():
        assert pending("hospital") == 0
        posted = db.session.scalar(sa.select(sa.func.count(AuditLog.id)).where(
            AuditLog.action == "trip.posted", AuditLog.entity_id.in_(public_ids)))
        assert posted == len(trip_ids)
        assert db.session.scalar(sa.select(sa.func.count(LiveSignal.id)).where(
            LiveSignal.entity_id.in_(public_ids))) == len(trip_ids)


# --- order, back-off, parking ----------------------------------------------------------------


def test_events_of_one_entity_are_delivered_in_order(app, demo, deliver, monkeypatch):
    deliver()
    with app.app_context():
        first = post_trip()
        trip_posting.edit(db.session.get(TransportRequest, first), {"notes": "changed"}, actor=Actor(None, None, "Nurse"))
        db.session.commit()
        other = post_trip()
    registered = handlers.handlers_for

    def failing_posted(silo, type_):
        if type_ == "trip.posted":
            def fail(event):
                if event.entity_id == first_public:
                    raise RuntimeError("target unreachable")
            return [("fail", "center", fail)] + registered(silo, type_)
        return registered(silo, type_)

    with app.app_context():
        first_public = db.session.get(TransportRequest, first).public_id
        other_public = db.session.get(TransportRequest, other).public_id
    monkeypatch.setattr(handlers, "handlers_for", failing_posted)
    relay = Relay(app)
    now = utcnow()
    assert relay.run_once(now) == 1  # the other trip's event only
    model = OUTBOX_BY_SILO["hospital"]
    with app.app_context():
        states = dict(db.session.execute(sa.select(model.type, model.status).where(model.entity_id == first_public)).all())
        assert states == {"trip.posted": "pending", "trip.changed": "pending"}
        assert db.session.scalar(sa.select(model.status).where(model.entity_id == other_public)) == "delivered"
    monkeypatch.setattr(handlers, "handlers_for", registered)
    assert relay.run_once(now) == 0  # still backing off: the later event waits behind it
    assert relay.run_once(now + timedelta(seconds=2)) == 2
    with app.app_context():
        rows = db.session.execute(sa.select(model.type, model.delivered_at).where(
            model.entity_id == first_public).order_by(model.id)).all()
        assert [r.type for r in rows] == ["trip.posted", "trip.changed"]
        assert rows[0].delivered_at <= rows[1].delivered_at
        signals = list(db.session.scalars(sa.select(LiveSignal.entity_id).where(
            LiveSignal.entity_id.in_((first_public, other_public))).order_by(LiveSignal.id)))
        assert signals == [other_public, first_public, first_public]


def _unreachable(url, tmp_path):
    """The same kind of database at an address where none exists."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path}/missing-folder/medport_ems.sqlite3"
    return make_url(url).set(database="medport_test_missing").render_as_string(hide_password=False)


def test_a_silo_down_is_retried_with_back_off_and_never_parked(app, demo, deliver, tmp_path):
    """An unreachable silo is an outage, not a poison event: its events wait (at most
    ``UNREACHABLE_BACKOFF_SECONDS`` between tries) however long it lasts, and nothing is lost."""
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
    config = dict(app.config)
    config["SQLALCHEMY_BINDS"] = dict(config["SQLALCHEMY_BINDS"])
    config["SQLALCHEMY_BINDS"]["ems"] = {"url": _unreachable(config["SQLALCHEMY_BINDS"]["ems"]["url"], tmp_path)}
    config["MEDPORT_RELAY_MAX_ATTEMPTS"] = 4
    cut_off = create_app(config)
    relay, model = Relay(cut_off), OUTBOX_BY_SILO["hospital"]
    now = utcnow()

    def state():
        with cut_off.app_context():
            row = db.session.scalar(sa.select(model).where(model.type == "trip.awarded"))
            return row.status, row.attempts, row.next_attempt_at, row.last_error

    try:
        for attempt in range(1, 9):  # twice the attempts that would park a failing handler
            relay.run_once(now)
            status, attempts, next_at, error = state()
            assert (status, attempts) == ("pending", attempt)
            assert next_at == now + timedelta(
                seconds=min(backoff_seconds(attempt), UNREACHABLE_BACKOFF_SECONDS))
            assert error.startswith("OperationalError")
            relay.run_once(now)  # not due yet: not tried again
            assert state()[1] == attempt
            now = next_at
    finally:
        with cut_off.app_context():
            db.session.remove()
            for engine in db.engines.values():
                engine.dispose()
    with app.app_context():
        assert db.session.get(TransportBid, aems).status == "live"  # not applied yet, not lost
    Relay(app).drain(now=now)  # the silo is back: the next try delivers it
    with app.app_context():
        assert db.session.get(TransportBid, aems).status == "accepted"
        assert db.session.scalar(sa.select(model.status).where(model.type == "trip.awarded")) == "delivered"


def test_a_handler_that_keeps_failing_is_parked_and_can_be_retried(app, demo, deliver, monkeypatch):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award(trip_id, aems)
    app.config["MEDPORT_RELAY_MAX_ATTEMPTS"] = 3
    registry = handlers._REGISTRY[("hospital", "trip.awarded")]
    original = list(registry)

    def broken(event):
        raise ValueError("a bug in a follow-up")

    monkeypatch.setitem(handlers._REGISTRY, ("hospital", "trip.awarded"),
                        [(name, target, broken) for name, target, _fn in original])
    relay, model = Relay(app), OUTBOX_BY_SILO["hospital"]
    now = utcnow()
    for attempt in range(1, 4):
        relay.run_once(now)
        with app.app_context():
            row = db.session.scalar(sa.select(model).where(model.type == "trip.awarded"))
            assert row.attempts == attempt and row.last_error.startswith("ValueError")
            now = row.next_attempt_at
            status = row.status
    assert status == "parked"
    relay.run_once(now + timedelta(hours=1))
    with app.app_context():
        assert db.session.scalar(sa.select(model.status).where(model.type == "trip.awarded")) == "parked"
        assert db.session.get(TransportBid, aems).status == "live"  # not applied, not lost
    monkeypatch.setitem(handlers._REGISTRY, ("hospital", "trip.awarded"), original)
    with app.app_context():
        assert retry_parked(silo="hospital") == 1
    deliver()
    with app.app_context():
        assert db.session.get(TransportBid, aems).status == "accepted"
        assert db.session.scalar(sa.select(model.status).where(model.type == "trip.awarded")) == "delivered"


def test_backoff_doubles_up_to_five_minutes():
    assert [backoff_seconds(n) for n in (1, 2, 3, 4, 10, 30)] == [1, 2, 4, 8, 300, 300]


# --- the relay command and the in-process relay -------------------------------------------


def test_relay_command_once_delivers_everything_pending(app, demo, deliver, runner):
    deliver()
    with app.app_context():
        trip_id = post_trip()
        place_bid(trip_id, "AEMS", 15)
    result = runner.invoke(args=["medport", "relay", "--once"])
    assert result.exit_code == 0, result.output
    assert "delivered 2 events" in result.output
    with app.app_context():
        assert db.session.get(TransportRequest, trip_id).bid_count == 1
        assert pending("hospital") == pending("ems") == 0


def test_relay_command_retries_parked_events(app, demo, deliver, runner):
    deliver()
    with app.app_context():
        post_trip()
        model = OUTBOX_BY_SILO["hospital"]
        db.session.execute(sa.update(model).where(model.status == "pending")
                           .values(status="parked", attempts=15, last_error="X"))
        db.session.commit()
    result = runner.invoke(args=["medport", "relay", "--once", "--retry-parked"])
    assert result.exit_code == 0, result.output
    assert "1 parked events queued again" in result.output and "delivered 1 events" in result.output


def test_the_inprocess_relay_delivers_after_a_commit(app, demo):
    from dashboard.events.hub import hub

    start_inprocess_relay(app)
    try:
        app.test_client().get("/login")  # the first request starts the relay thread
        position = hub.position()
        with app.app_context():
            trip_id = post_trip()  # the commit wakes the relay
            public_id = db.session.get(TransportRequest, trip_id).public_id
        deadline = utcnow() + timedelta(seconds=20)
        seen = []
        while public_id not in seen and utcnow() < deadline:
            position = hub.wait(position, 5)
            seen = [signal[2] for signal in hub.after(0)[1]]
        assert public_id in seen
    finally:
        stop_inprocess_relay()


# --- deadlines ---------------------------------------------------------------------------------


def _set_policy(app, policy):
    with app.app_context():
        configuration.set_value("auto_award_policy", policy, None)
        db.session.commit()


def _past_deadline(trip_id):
    return db.session.get(TransportRequest, trip_id).bid_deadline + timedelta(seconds=1)


def test_deadline_marks_an_open_request_unfilled_when_auto_award_is_off(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip()  # no bid: no one can take it (with one it awaits an award instead)
        after = _past_deadline(trip_id)
    relay = Relay(app)
    relay.run_once(after - timedelta(seconds=2))
    with app.app_context():
        assert db.session.get(TransportRequest, trip_id).unfilled_at is None
    relay.drain(now=after)
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.status == "open" and trip.unfilled_at == after
        assert "trip.unfilled" in outbox_types("hospital", trip.public_id)
        assert db.session.scalar(sa.select(AuditLog.id).where(AuditLog.action == "trip.unfilled",
                                                              AuditLog.entity_id == trip.public_id))


def test_preferred_best_eta_awards_the_best_preferred_bid_after_the_deadline(app, demo, deliver):
    _set_policy(app, "preferred_best_eta")
    with app.app_context():
        trip_id = post_trip()  # ALT prefers AEMS, BCA, ACCT
        place_bid(trip_id, "CLL", 5)
        slow = place_bid(trip_id, "AEMS", 40)
        fast = place_bid(trip_id, "BCA", 25)
        after = _past_deadline(trip_id)
    relay = Relay(app)
    relay.drain(now=after - timedelta(seconds=5))
    with app.app_context():
        assert db.session.get(TransportRequest, trip_id).status == "open"
    relay.drain(now=after)
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert (trip.status, trip.awarded_bid_id, trip.award_source) == ("awarded", fast, "auto")
        assert trip.unfilled_at is None
        assert db.session.get(TransportBid, fast).status == "accepted"
        assert db.session.get(TransportBid, slow).status == "declined"


def test_preferred_best_eta_passes_over_a_bid_whose_unit_was_booked_since(app, demo, deliver):
    _set_policy(app, "preferred_best_eta")
    with app.app_context():
        trip_id = post_trip()  # ALT prefers AEMS, BCA, ACCT
        slow = place_bid(trip_id, "AEMS", 40)
        fast = place_bid(trip_id, "BCA", 25)
        other = post_trip("TYR")  # the same pickup window
        unit_id = db.session.get(TransportBid, fast).unit_id
        trip = db.session.get(TransportRequest, other)
        intervention.assign_unit(trip, agency("BCA").id, unit_id, 20, "Closest crew", trip.version,
                                 actor=Actor(None, None, "Coordinator"))
        db.session.commit()
        after = _past_deadline(trip_id)
    deliver()
    Relay(app).drain(now=after)
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert (trip.status, trip.awarded_bid_id, trip.award_source) == ("awarded", slow, "auto")
        assert db.session.get(TransportRequest, other).awarded_unit_id == unit_id


def test_preferred_best_eta_without_a_preferred_bid_awaits_an_award(app, demo, deliver):
    _set_policy(app, "preferred_best_eta")
    with app.app_context():
        trip_id = post_trip()
        place_bid(trip_id, "CLL", 5)
        after = _past_deadline(trip_id)
    deliver()
    Relay(app).drain(now=after)
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        # Not auto-awarded, but a live bid remains: the hospital or the center picks it.
        assert trip.status == "open" and trip.unfilled_at is None
        assert "trip.awaiting_award" in outbox_types("hospital", trip.public_id)


def test_first_qualifying_awards_at_the_first_bid(app, demo, deliver):
    _set_policy(app, "first_qualifying")
    with app.app_context():
        trip_id = post_trip()
    deliver()
    with app.app_context():
        first = place_bid(trip_id, "CLL", 30)
    deliver()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert (trip.status, trip.awarded_bid_id, trip.award_source) == ("awarded", first, "auto")
        assert db.session.get(TransportBid, first).status == "accepted"
        assert db.session.scalar(sa.select(EmsRoute.id).where(EmsRoute.trip_id == trip_id))


def test_a_widened_invitation_is_announced_to_every_agencys_board_once(app, demo, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", invite_mode="preferred_then_all")
        trip = db.session.get(TransportRequest, trip_id)
        public_id, opens, invited = trip.public_id, trip.widen_invite_at, trip.invited_ids
        assert opens == trip.created_at + timedelta(minutes=10)
        outsider = next(a.id for a in db.session.scalars(sa.select(Agency).where(Agency.active.is_(True)))
                        if a.id not in invited)
    deliver()

    def announced():
        with app.app_context():
            return outbox_types("hospital", public_id).count("trip.invite_widened")

    relay = Relay(app)
    relay.run_once(opens - timedelta(minutes=1))
    assert announced() == 0
    relay.run_once(opens + timedelta(seconds=1))
    deliver()
    assert announced() == 1
    with app.app_context():
        signal = db.session.scalar(sa.select(LiveSignal).where(LiveSignal.entity_id == public_id)
                                   .order_by(LiveSignal.id.desc()))
        assert f",{outsider}," in signal.agency_ids  # the boards of agencies that were not invited hear it
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.widen_invite_at is None and trip.version == 1  # no open form goes stale
        assert "invite_widened" in [event.action for event in trip.history]
    relay.run_once(opens + timedelta(minutes=5))
    assert announced() == 1


def test_an_awarded_or_cancelled_request_has_no_widening_left_and_a_reopened_one_gets_it_back(
        app, demo, deliver):
    with app.app_context():
        awarded_id = post_trip("ALT", invite_mode="preferred_then_all")
        cancelled_id = post_trip("ALT", invite_mode="preferred_then_all")
        opens = db.session.get(TransportRequest, awarded_id).widen_invite_at
        award(awarded_id, place_bid(awarded_id, "AEMS", 15))
        trip = db.session.get(TransportRequest, cancelled_id)
        trips.cancel(trip, "not_needed", "", actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
        assert db.session.get(TransportRequest, awarded_id).widen_invite_at is None
        assert db.session.get(TransportRequest, cancelled_id).widen_invite_at is None
    deliver()
    with app.app_context():  # taken back inside the preferred agencies' ten-minute head start
        trip = db.session.get(TransportRequest, awarded_id)
        trips.reopen(trip, "Crew unavailable", 30, actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
        assert db.session.get(TransportRequest, awarded_id).widen_invite_at == opens
    deliver()
    Relay(app).run_once(opens + timedelta(seconds=1))
    with app.app_context():
        assert outbox_types("hospital", db.session.get(TransportRequest, awarded_id).public_id) \
            .count("trip.invite_widened") == 1


def test_the_sweep_prunes_old_live_signals(app, demo):
    now = utcnow()
    with app.app_context():
        db.session.add_all([LiveSignal(name="trip-updated", entity_id="old", created_at=now - timedelta(days=2)),
                            LiveSignal(name="trip-updated", entity_id="new", created_at=now)])
        db.session.commit()
    Relay(app).run_once(now)
    with app.app_context():
        assert list(db.session.scalars(sa.select(LiveSignal.entity_id).where(
            LiveSignal.name == "trip-updated"))) == ["new"]


def test_the_sweep_prunes_delivered_events_but_keeps_what_a_retry_needs(app, demo, deliver):
    deliver()
    now = utcnow()
    old, fresh = now - timedelta(days=8), now - timedelta(days=6)

    def outbox_row(silo, status, at):
        row = OUTBOX_BY_SILO[silo](type="trip.changed", entity_type="trip", entity_id="prune-test",
                                   payload={}, created_at=at, status=status, next_attempt_at=now + timedelta(days=30),
                                   delivered_at=at if status == "delivered" else None)
        db.session.add(row)
        return row

    with app.app_context():
        parked = outbox_row("hospital", "parked", old)
        db.session.commit()
        kept_for_retry, parked_id = parked.event_id, parked.id
        ids = {}
        for silo in ("center", "hospital", "ems"):  # one transaction per silo
            pair = {"old": outbox_row(silo, "delivered", old), "fresh": outbox_row(silo, "delivered", fresh)}
            db.session.flush()
            ids[silo] = {key: row.event_id for key, row in pair.items()}
            inbox = INBOX_BY_SILO[silo]
            db.session.add_all([
                inbox(event_id=ids[silo]["old"], handler="record", applied_at=old),
                inbox(event_id=ids[silo]["fresh"], handler="record", applied_at=fresh),
                inbox(event_id=kept_for_retry, handler="record", applied_at=old)])
            db.session.commit()

    Relay(app).run_once(now)  # the timer prunes when given a clock
    with app.app_context():
        for silo in ("center", "hospital", "ems"):
            outbox, inbox = OUTBOX_BY_SILO[silo], INBOX_BY_SILO[silo]
            left = set(db.session.scalars(sa.select(outbox.event_id).where(outbox.entity_id == "prune-test")))
            assert ids[silo]["old"] not in left and ids[silo]["fresh"] in left, silo
            recorded = set(db.session.scalars(sa.select(inbox.event_id)))
            assert ids[silo]["old"] not in recorded and ids[silo]["fresh"] in recorded, silo
            assert kept_for_retry in recorded, silo  # its event is parked: a retry must still see it
        assert db.session.get(OUTBOX_BY_SILO["hospital"], parked_id).status == "parked"


def test_signal_backends_are_checked(tmp_path):
    from dashboard.config import ConfigurationError, build_config, check_config

    config = build_config(str(tmp_path), environ={"MEDPORT_SIGNAL_BACKEND": "redis"})
    with pytest.raises(ConfigurationError):
        check_config(config)
    config = build_config(str(tmp_path), environ={"MEDPORT_SIGNAL_BACKEND": "postgres"})
    with pytest.raises(ConfigurationError, match="center silo on PostgreSQL"):
        check_config(config)
    assert build_config(str(tmp_path), environ={})["MEDPORT_SIGNAL_BACKEND"] == "local"
