"""Races on one request: whatever arrives together, the silos end in one legal state.

The racing tests run on PostgreSQL only (SQLite serialises every writer of a
file, so nothing races there): several threads, each with its own client (its
own app context and session), are lined up by a barrier at the point where
each acts (the trip's compare-and-set, or right after a bid's checks) and let
go together.  After the relay has delivered everything, :func:`assert_consistent`
checks the hospital's trip against the EMS silo: one award, at most one
accepted bid (the awarded one), one active route on the awarded unit, every
unit's current trip one of its active routes.

The interleaving tests run on both backends: an action reads the request, then
another role acts and the relay delivers before the first one writes, exactly
as when a slow request is overtaken.
"""
import threading
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import bidding, intervention, route_steps, trips
from dashboard.services.bidding import ACTIVE_ROUTE_STATUSES, BidRefused
from dashboard.services.deadlines import bid_for_award
from tests.helpers import (
    StartingLine,
    agency,
    assert_consistent,
    awarded_trip,
    free_unit,
    place_bid,
    post_trip,
    seed_region,
    signed_in,
)
from tests.pg_slots import wait_for_slots

# --- the invariants ------------------------------------------------------------------------


def assert_all_delivered():
    """Every outbox row of every silo is delivered (none pending, none parked)."""
    for silo, model in OUTBOX_BY_SILO.items():
        left = db.session.scalar(sa.select(sa.func.count(model.id)).where(model.status != "delivered"))
        assert left == 0, f"{left} {silo} events not delivered"


# --- lining threads up ---------------------------------------------------------------------


def test_a_broken_line_fails_naming_each_racer_and_where_the_late_one_was(monkeypatch):
    """The starting line's own failure path: a racer that cannot reach the gate in time
    breaks the line, and the test fails with every racer's outcome, not a TypeError."""
    import types

    from tests.helpers import processes

    monkeypatch.setattr(processes, "BARRIER_SECONDS", 0.5)
    spot = types.SimpleNamespace(step=lambda: "stepped")
    released = threading.Event()

    def late():
        released.wait(30)  # held up elsewhere (a lock, a slow machine) until the line broke
        return ("late", "")

    def punctual():
        try:
            return ("on time", spot.step())
        finally:
            released.set()

    line = StartingLine(pytest.MonkeyPatch(), 2)
    line.gate(spot, "step")
    with pytest.raises(pytest.fail.Exception) as failed:
        line.run(late, punctual)
    message = str(failed.value)
    assert "racer 1: raised BrokenBarrierError" in message
    assert "racer 0: answered late" in message
    assert "racer 0 had not reached the gate; it was at:" in message and "released.wait" in message
    assert spot.step() == "stepped"  # the gate is undone


@pytest.fixture(autouse=True)
def connection_slots(request):
    """Racers' connections, opened from threads mid-test, wait (bounded) for a slot on the
    shared server (tests/pg_slots.py)."""
    if "app" in request.fixturenames:
        wait_for_slots(request.getfixturevalue("app"))


@pytest.fixture
def region(app):
    """The demo region, lighter than the ``demo`` fixture: no trips yet."""
    return seed_region(app)


@pytest.fixture
def postgres(backend):
    """Skip on SQLite: its writers never run at the same time."""
    if backend != "postgres":
        pytest.skip("writers race on PostgreSQL; SQLite serialises them")


def _trip_state(app, trip_id):
    """The trip's public id and version, as a page shows them."""
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        return trip.public_id, trip.version


def _bid_public(app, bid_id):
    """The bid's public id (what a form posts)."""
    with app.app_context():
        return db.session.get(TransportBid, bid_id).public_id


def _post(client, path, form):
    """POST a form as a signed-in user; the status and the page."""
    response = client.post(path, data=form)
    return response.status_code, response.get_data(as_text=True)


# --- races ------------------------------------------------------------------------------------


def test_awards_of_different_bids_at_once_leave_one_award(postgres, app, region, deliver, monkeypatch):
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS")
        bid_ids = [place_bid(trip_id, code, eta) for code, eta in
                   (("AEMS", 20), ("BCA", 14), ("CLL", 11), ("CMT", 30))]
    deliver()
    public_id, version = _trip_state(app, trip_id)
    bids = [_bid_public(app, bid_id) for bid_id in bid_ids]
    nurses = [signed_in(app, "nurse@altoona.medport.test") for _ in range(2)]
    coordinators = [signed_in(app, "coordinator@medport.test") for _ in range(2)]
    line = StartingLine(monkeypatch, 4)
    line.gate(trips, "compare_and_set")
    results = line.run(
        lambda: _post(nurses[0], f"/hospital/requests/{public_id}/award", {"bid": bids[0], "version": version}),
        lambda: _post(nurses[1], f"/hospital/requests/{public_id}/award", {"bid": bids[1], "version": version}),
        lambda: _post(coordinators[0], f"/center/requests/{public_id}/award", {"bid": bids[2], "version": version}),
        lambda: _post(coordinators[1], f"/center/requests/{public_id}/award", {"bid": bids[3], "version": version}),
    )
    statuses = [r[0] for r in results]
    assert sorted(statuses) == [302, 409, 409, 409], statuses
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        winner = bid_ids[statuses.index(302)]
        assert trip.awarded_bid_id == winner
        assert {db.session.get(TransportBid, b).status for b in bid_ids if b != winner} == {"declined"}
        assert_all_delivered()


def test_a_hospital_award_and_a_center_assignment_at_once(postgres, app, region, deliver, monkeypatch):
    with app.app_context():
        trip_id = post_trip("ALT")
        bid_id = place_bid(trip_id, "AEMS", 15)
        cmt = agency("CMT")
        unit = free_unit(cmt.id, db.session.get(TransportRequest, trip_id))
        assign = {"assign-agency": cmt.id, "assign-unit": unit.id, "assign-eta_minutes": 25, "assign-reason": "Closest crew"}
    deliver()
    public_id, version = _trip_state(app, trip_id)
    nurse = signed_in(app, "nurse@altoona.medport.test")
    coordinator = signed_in(app, "coordinator@medport.test")
    line = StartingLine(monkeypatch, 2)
    line.gate(trips, "compare_and_set")
    results = line.run(
        lambda: _post(nurse, f"/hospital/requests/{public_id}/award",
                      {"bid": _bid_public(app, bid_id), "version": version}),
        lambda: _post(coordinator, f"/center/requests/{public_id}/assign", {**assign, "assign-version": version}),
    )
    assert sorted(r[0] for r in results) == [302, 409], results
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        if results[0][0] == 302:
            assert trip.awarded_bid_id == bid_id
        else:
            assert (trip.awarded_unit_id, trip.award_source) == (assign["assign-unit"], "center")
            assert db.session.get(TransportBid, bid_id).status == "declined"
        assert_all_delivered()


def test_bids_placed_while_the_hospital_cancels(postgres, app, region, deliver, monkeypatch):
    with app.app_context():
        trip_id = post_trip("ALT", level="BLS")
        trip = db.session.get(TransportRequest, trip_id)
        units = {code: free_unit(agency(code).id, trip).public_id for code in ("AEMS", "BCA", "CLL")}
    deliver()
    public_id, version = _trip_state(app, trip_id)
    dispatchers = {code: signed_in(app, f"dispatch@{slug}.medport.test") for code, slug in
                   (("AEMS", "altoonaems"), ("BCA", "blaircounty"), ("CLL", "centrelifelink"))}
    nurse = signed_in(app, "nurse@altoona.medport.test")
    line = StartingLine(monkeypatch, 4)
    line.gate(bidding, "_check_trip_open", after=True)  # every bid has seen the request open
    line.gate(trips, "compare_and_set")
    results = line.run(
        *[(lambda code=code: _post(dispatchers[code], f"/ems/requests/{public_id}/bid",
                                   {"unit": units[code], "eta_minutes": "20", "note": ""}))
          for code in dispatchers],
        lambda: _post(nurse, f"/hospital/requests/{public_id}/cancel",
                      {"reason": "not_needed", "note": "", "version": version}),
    )
    assert [r[0] for r in results] == [302, 302, 302, 302], results
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        assert trip.status == "cancelled"
        statuses = list(db.session.scalars(sa.select(TransportBid.status).where(TransportBid.trip_id == trip_id)))
        assert statuses == ["closed"] * 3
        assert_all_delivered()


def test_a_crew_advancing_while_the_center_reopens_and_reassigns(postgres, app, region, deliver, monkeypatch):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        offer = bid_for_award(db.session.get(TransportBid, aems))
        db.session.commit()
        trips.award(db.session.get(TransportRequest, trip_id), offer, actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()
        aems_agency = agency("AEMS")
        other_unit = next(u for u in db.session.scalars(sa.select(Unit).where(
            Unit.agency_id == aems_agency.id, Unit.status == "available", Unit.id != offer["unit_id"],
            Unit.level.in_(("BLS", "ALS")))))
        reassign = {"assign-agency": aems_agency.id, "assign-unit": other_unit.id, "assign-eta_minutes": 18,
                    "assign-reason": "Medic 11 is needed elsewhere"}
    deliver()
    public_id, version = _trip_state(app, trip_id)
    crew = signed_in(app, "dispatch@altoonaems.medport.test")
    coordinator = signed_in(app, "coordinator@medport.test")

    def reopen_then_reassign():
        """The center's re-assignment: re-open, then assign the other unit at the new version."""
        status, page = _post(coordinator, f"/center/requests/{public_id}/reopen",
                             {"reopen-reason": "Crew delayed", "reopen-version": version})
        if status != 302:
            return status, page
        _, current = _trip_state(app, trip_id)
        return _post(coordinator, f"/center/requests/{public_id}/assign", {**reassign, "assign-version": current})

    line = StartingLine(monkeypatch, 2)
    line.gate(route_steps, "_check_still_ours", after=True)  # the crew has checked the trip is theirs
    line.gate(trips, "compare_and_set")
    advanced, reassigned = line.run(
        lambda: _post(crew, f"/ems/trips/{public_id}/advance", {"step": "en_route"}),
        reopen_then_reassign,
    )
    assert reassigned[0] == 302, reassigned
    assert advanced[0] in (302, 409), advanced
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        # The re-assignment stands: the old crew's step neither moved the trip nor kept its unit.
        assert (trip.status, trip.awarded_unit_id) == ("awarded", other_unit.id)
        old = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id,
                                                         EmsRoute.unit_id == offer["unit_id"]))
        assert old.status == "handed_back"
        assert db.session.get(Unit, offer["unit_id"]).current_trip_id != trip_id
        assert_all_delivered()


def test_two_dispatchers_bidding_one_unit_on_two_overlapping_requests(postgres, app, region, deliver, monkeypatch):
    with app.app_context():
        first, second = post_trip("ALT"), post_trip("TYR")
        unit = free_unit(agency("AEMS").id, db.session.get(TransportRequest, first)).public_id
    deliver()
    dispatchers = [signed_in(app, "dispatch@altoonaems.medport.test") for _ in range(2)]
    line = StartingLine(monkeypatch, 2)
    line.gate(bidding, "_check_trip_open", after=True)
    results = line.run(*[
        (lambda client=client, trip_id=trip_id: _post(
            client, f"/ems/requests/{_trip_state(app, trip_id)[0]}/bid",
            {"unit": unit, "eta_minutes": "15", "note": ""}))
        for client, trip_id in zip(dispatchers, (first, second), strict=True)])
    assert sorted(r[0] for r in results) == [302, 409], results
    assert "already bid or booked" in [r for r in results if r[0] == 409][0][1]
    deliver()
    with app.app_context():
        live = db.session.scalar(sa.select(sa.func.count(TransportBid.id)).where(
            TransportBid.status == "live", TransportBid.unit_id == db.session.scalar(
                sa.select(Unit.id).where(Unit.public_id == unit))))
        assert live == 1


# --- interleavings: an action overtaken between its read and its write -----------------------


@contextmanager
def overtaken(app):
    """A second app context (its own session) for what happens while the first one waits."""
    with app.app_context():
        yield
        db.session.commit()


def test_a_bid_overtaken_by_the_cancellation_is_closed(app, region, deliver):
    with app.app_context():
        trip_id = post_trip("ALT")
    deliver()
    with app.app_context():
        org = agency("BCA")
        trip = db.session.get(TransportRequest, trip_id)  # the dispatcher's page: open
        unit = free_unit(org.id, trip)
        with overtaken(app):
            trips.cancel(db.session.get(TransportRequest, trip_id), "not_needed", "", actor=Actor(None, None, "Nurse"))
        deliver()  # the cancellation's follow-up ran before the bid was written
        bid = bidding.place(trip, org.id, org.name, org.level_list, unit.id, "12", "", actor=Actor(None))
        bid_id = bid.id
        db.session.commit()
    deliver()
    with app.app_context():
        assert db.session.get(TransportBid, bid_id).status == "closed"
        assert_consistent(trip_id)


def test_a_bid_overtaken_by_an_award_is_declined(app, region, deliver):
    with app.app_context():
        trip_id = post_trip("ALT")
        winner = place_bid(trip_id, "AEMS", 20)
    deliver()
    with app.app_context():
        org = agency("CLL")
        trip = db.session.get(TransportRequest, trip_id)
        unit = free_unit(org.id, trip)
        with overtaken(app):
            offer = bid_for_award(db.session.get(TransportBid, winner))
            trips.award(db.session.get(TransportRequest, trip_id), offer, actor=Actor(None, None, "Nurse"))
        deliver()
        late = bidding.place(trip, org.id, org.name, org.level_list, unit.id, "9", "", actor=Actor(None)).id
        db.session.commit()
    deliver()
    with app.app_context():
        assert db.session.get(TransportBid, late).status == "declined"
        assert_consistent(trip_id)


def test_a_withdrawal_overtaken_by_the_award_leaves_the_award_standing(app, region, deliver):
    with app.app_context():
        trip_id = post_trip("ALT")
        bid_id = place_bid(trip_id, "AEMS", 20)
    deliver()
    with app.app_context():
        org = agency("AEMS")
        bid, trip = db.session.get(TransportBid, bid_id), db.session.get(TransportRequest, trip_id)
        assert bid.status == "live"  # what the dispatcher's page showed
        with overtaken(app):
            offer = bid_for_award(db.session.get(TransportBid, bid_id))
            trips.award(db.session.get(TransportRequest, trip_id), offer, actor=Actor(None, None, "Nurse"))
        deliver()
        with pytest.raises(BidRefused):
            bidding.withdraw(bid, trip, org.id, org.name, actor=Actor(None))
        db.session.rollback()
    deliver()
    with app.app_context():
        assert db.session.get(TransportBid, bid_id).status == "accepted"
        assert_consistent(trip_id)


def test_an_award_crossing_a_withdrawal_stands(app, region, deliver):
    with app.app_context():
        trip_id = post_trip("ALT")
        bid_id = place_bid(trip_id, "AEMS", 20)
        other = place_bid(trip_id, "BCA", 30)
    deliver()
    with app.app_context():
        offer = bid_for_award(db.session.get(TransportBid, bid_id))  # the nurse's page: live
        db.session.commit()
        with overtaken(app):
            org = agency("AEMS")
            bidding.withdraw(db.session.get(TransportBid, bid_id),
                             db.session.get(TransportRequest, trip_id), org.id, org.name,
                             actor=Actor(None))
        trips.award(db.session.get(TransportRequest, trip_id), offer, actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        assert trip.awarded_bid_id == bid_id
        assert db.session.get(TransportBid, bid_id).status == "accepted"
        assert db.session.get(TransportBid, other).status == "declined"


def test_a_crew_step_overtaken_by_a_reopening_is_refused(app, region, deliver):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award_offer = bid_for_award(db.session.get(TransportBid, aems))
        db.session.commit()
        trips.award(db.session.get(TransportRequest, trip_id), award_offer, actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        trip = db.session.get(TransportRequest, trip_id)  # the crew's page: still theirs
        with overtaken(app):
            fresh = db.session.get(TransportRequest, trip_id)
            intervention.reopen(fresh, "Crew delayed", fresh.version, actor=Actor(None, None, "Coordinator"))
        deliver()
        with pytest.raises(BidRefused):
            route_steps.advance(route, "en_route", trip=trip, actor=Actor(None, None, "Medic 11"))
        db.session.rollback()
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        assert trip.status == "open"
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        assert route.status == "handed_back"


def test_a_reopening_overtaking_the_crew_at_the_pickup_ends_its_route(app, region, deliver):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award_offer = bid_for_award(db.session.get(TransportBid, aems))
        db.session.commit()
        trips.award(db.session.get(TransportRequest, trip_id), award_offer, actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        route_steps.advance(route, "en_route", trip=db.session.get(TransportRequest, trip_id), actor=Actor(None, None, "Medic 11"))
        db.session.commit()
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        route_steps.advance(route, "at_pickup", trip=db.session.get(TransportRequest, trip_id), actor=Actor(None, None, "Medic 11"))
        db.session.commit()  # the step waits in the EMS outbox: the hospital still sees en route
        trip = db.session.get(TransportRequest, trip_id)
        intervention.reopen(trip, "No word from the crew", trip.version, actor=Actor(None, None, "Coordinator"))
        db.session.commit()
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        assert trip.status == "open"
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        assert route.status == "handed_back"


def test_a_late_crew_step_of_the_old_unit_does_not_move_the_new_one(app, region, deliver):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award_offer = bid_for_award(db.session.get(TransportBid, aems))
        db.session.commit()
        trips.award(db.session.get(TransportRequest, trip_id), award_offer, actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        route_steps.advance(route, "en_route", trip=db.session.get(TransportRequest, trip_id), actor=Actor(None, None, "Medic 11"))
        db.session.commit()  # the step waits in the EMS outbox
        org = agency("AEMS")
        trip = db.session.get(TransportRequest, trip_id)
        intervention.reopen(trip, "Crew delayed", trip.version, actor=Actor(None, None, "Coordinator"))
        db.session.commit()
        trip = db.session.get(TransportRequest, trip_id)
        other = next(u for u in db.session.scalars(sa.select(Unit).where(
            Unit.agency_id == org.id, Unit.status == "available", Unit.id != award_offer["unit_id"],
            Unit.level.in_(("BLS", "ALS")))))
        intervention.assign_unit(trip, org.id, other.id, 15, "Closer unit", trip.version, actor=Actor(None, None, "Coordinator"))
        db.session.commit()
        other_id = other.id
    deliver()  # the hospital's events go first, then the old crew's step
    with app.app_context():
        trip = assert_consistent(trip_id)
        assert (trip.status, trip.awarded_unit_id) == ("awarded", other_id)


def test_a_late_hand_back_of_the_old_unit_does_not_reopen_the_new_assignment(app, region, deliver):
    trip_id, aems, _ = awarded_trip(app, deliver)
    with app.app_context():
        award_offer = bid_for_award(db.session.get(TransportBid, aems))
        db.session.commit()
        trips.award(db.session.get(TransportRequest, trip_id), award_offer, actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        route = db.session.scalar(sa.select(EmsRoute).where(EmsRoute.trip_id == trip_id))
        route_steps.hand_back(route, "Unit broke down", trip=db.session.get(TransportRequest, trip_id),
                              actor=Actor(None, None, "Medic 11"))
        db.session.commit()
        org = agency("AEMS")
        trip = db.session.get(TransportRequest, trip_id)
        intervention.reopen(trip, "Unit broke down, per phone call", trip.version, actor=Actor(None, None, "Coordinator"))
        db.session.commit()
        trip = db.session.get(TransportRequest, trip_id)
        other = next(u for u in db.session.scalars(sa.select(Unit).where(
            Unit.agency_id == org.id, Unit.status == "available", Unit.id != award_offer["unit_id"],
            Unit.level.in_(("BLS", "ALS")))))
        intervention.assign_unit(trip, org.id, other.id, 15, "Replacement unit", trip.version,
                                 actor=Actor(None, None, "Coordinator"))
        db.session.commit()
        other_id = other.id
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        assert (trip.status, trip.awarded_unit_id, trip.handed_back_count) == ("awarded", other_id, 0)


def test_a_sweep_and_an_award_at_the_deadline(app, region, deliver):
    with app.app_context():
        trip_id = post_trip("ALT", deadline_minutes=5)
        bid_id = place_bid(trip_id, "AEMS", 20)
    deliver()
    with app.app_context():
        offer = bid_for_award(db.session.get(TransportBid, bid_id))
        trip = db.session.get(TransportRequest, trip_id)
        version = trip.version
        db.session.commit()
        after = trip.bid_deadline + timedelta(seconds=1)
    Relay(app).run_once(now=after)  # the sweep first: bidding closed with a live bid
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.version == version and trip.unfilled_at is None  # awaiting award, not unfilled
        # The page shown before the deadline awards as it is: the sweep changed no version.
        trips.award(trip, offer, expected_version=version, actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    with app.app_context():
        trip = assert_consistent(trip_id)
        assert trip.status == "awarded" and trip.unfilled_at is None
        assert utcnow() < trip.window_start


# --- one unit, two center assignments --------------------------------------------------------


def _two_overlapping_trips_and_a_unit():
    """Two open requests of one pickup window and a free CMT unit able to serve both."""
    first, second = post_trip("ALT", level="BLS"), post_trip("TYR", level="BLS")
    cmt = agency("CMT")
    unit = free_unit(cmt.id, db.session.get(TransportRequest, first))
    return first, second, {"assign-agency": cmt.id, "assign-unit": unit.id, "assign-eta_minutes": 20, "assign-reason": "No bids yet"}


def test_a_unit_assigned_by_the_center_is_not_assigned_again_before_the_relay(app, region, deliver):
    """The EMS silo books the route only when the relay delivers; the second assignment of the
    unit to an overlapping window is refused before that, and after it."""
    with app.app_context():
        first, second, assign = _two_overlapping_trips_and_a_unit()
    coordinator = signed_in(app, "coordinator@medport.test")
    public_first, version_first = _trip_state(app, first)
    public_second, version_second = _trip_state(app, second)
    status, _ = _post(coordinator, f"/center/requests/{public_first}/assign", {**assign, "assign-version": version_first})
    assert status == 302
    status, page = _post(coordinator, f"/center/requests/{public_second}/assign",
                         {**assign, "assign-version": version_second})
    assert status == 409 and "already booked" in page
    deliver()
    status, page = _post(coordinator, f"/center/requests/{public_second}/assign",
                         {**assign, "assign-version": version_second})
    assert status == 409 and "already booked" in page
    with app.app_context():
        assert db.session.get(TransportRequest, second).status == "open"
        assert_consistent(first)
        assert_consistent(second)


def test_two_center_assignments_of_one_unit_at_once(postgres, app, region, deliver, monkeypatch):
    with app.app_context():
        first, second, assign = _two_overlapping_trips_and_a_unit()
    deliver()
    coordinators = [signed_in(app, "coordinator@medport.test") for _ in range(2)]
    forms = [(_trip_state(app, trip_id), client) for trip_id, client in zip((first, second), coordinators,
                                                                             strict=True)]
    line = StartingLine(monkeypatch, 2)
    line.gate(trips, "check_unit_free")  # both have passed every other check of the assignment
    results = line.run(*[
        (lambda client=client, public_id=public_id, version=version: _post(
            client, f"/center/requests/{public_id}/assign", {**assign, "assign-version": version}))
        for (public_id, version), client in forms])
    assert sorted(r[0] for r in results) == [302, 409], [r[0] for r in results]
    assert "already booked" in [r for r in results if r[0] == 409][0][1]
    deliver()
    with app.app_context():
        holding = db.session.scalars(sa.select(TransportRequest.status).where(
            TransportRequest.id.in_((first, second)), TransportRequest.awarded_unit_id == assign["assign-unit"])).all()
        assert holding == ["awarded"]
        assert_consistent(first)
        assert_consistent(second)
        assert_all_delivered()


def test_a_center_assignment_and_a_bid_award_of_one_unit_at_once(postgres, app, region, deliver, monkeypatch):
    """The center assigns a unit to one request while a hospital awards that unit's bid on an
    overlapping one: the unit ends booked once, the other request stays open."""
    with app.app_context():
        first, second, assign = _two_overlapping_trips_and_a_unit()
        bid_id = place_bid(second, "CMT", 20)
        assign["assign-unit"] = db.session.get(TransportBid, bid_id).unit_id
    deliver()
    coordinator = signed_in(app, "coordinator@medport.test")
    nurse = signed_in(app, "nurse@tyrone.medport.test")
    public_first, version_first = _trip_state(app, first)
    public_second, version_second = _trip_state(app, second)
    bid_public = _bid_public(app, bid_id)
    line = StartingLine(monkeypatch, 2)
    line.gate(trips, "check_unit_free")  # both have passed every other check of their action
    results = line.run(
        lambda: _post(coordinator, f"/center/requests/{public_first}/assign",
                      {**assign, "assign-version": version_first}),
        lambda: _post(nurse, f"/hospital/requests/{public_second}/award",
                      {"bid": bid_public, "version": version_second}),
    )
    assert sorted(r[0] for r in results) == [302, 409], [r[0] for r in results]
    assert "already booked" in [r for r in results if r[0] == 409][0][1]
    deliver()
    with app.app_context():
        statuses = db.session.execute(sa.select(TransportRequest.id, TransportRequest.status).where(
            TransportRequest.id.in_((first, second)))).all()
        assert sorted(status for _, status in statuses) == ["awarded", "open"]
        assert db.session.scalar(sa.select(sa.func.count()).select_from(EmsRoute).where(
            EmsRoute.unit_id == assign["assign-unit"], EmsRoute.status.in_(ACTIVE_ROUTE_STATUSES))) == 1
        assert_consistent(first)
        assert_consistent(second)
        assert_all_delivered()
