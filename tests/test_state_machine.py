"""Random sequences of every role's actions, with the silos' invariants checked after each step.

A hypothesis state machine acts as the views do (read, call the service, commit
once; a refusal rolls back): hospitals post, edit, award and cancel; agencies
bid, change, withdraw, advance and hand back; the center assigns, awards,
extends, re-opens and cancels; the relay delivers some or all of what is
pending, and the deadline timer runs with the clock moved ahead.  Delivery is a
step like any other, so actions meet a relay that lags behind.

Checked after every step: each trip's status is legal; an awarded or active
trip has an agency and a unit; no agency has two live bids on one trip; every
unit's current trip is one of its active routes; nothing is parked.  Whenever
nothing is pending, the silos agree in full (:func:`assert_consistent`) and every
delivered hospital and EMS event has exactly one audit entry.
"""
from datetime import timedelta

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, AuditLog, Hospital, User
from dashboard.models.ems import EmsRoute, TransportBid, Unit
from dashboard.models.hospital import HospitalFacility, TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.models.vocabulary import ACTIVE_STATUSES, LEVELS, TRIP_STATUSES
from dashboard.seed import demo
from dashboard.services import bidding, configuration, intervention, route_steps, trip_posting, trips
from dashboard.services.bidding import BidRefused
from dashboard.services.deadlines import bid_for_award
from dashboard.services.trips import TransitionRefused
from tests.conftest import _wipe
from tests.helpers import assert_consistent, assert_units_consistent

HOSPITALS = ("ALT", "MNV")
AGENCIES = ("AEMS", "BCA", "CLL", "ACCT")
CREW_ORDER = route_steps.ROUTE_ORDER  # a stop's statuses in the order the crew's steps take it
MAX_TRIPS = 4
SETTINGS = {
    "sqlite": settings(max_examples=8, stateful_step_count=40, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck)),
    "postgres": settings(max_examples=3, stateful_step_count=30, deadline=None, database=None,
                         suppress_health_check=list(HealthCheck)),
}


class DispatchMachine(RuleBasedStateMachine):
    """One region, a few requests, every role acting in a random order."""

    app = None  # set per backend by the test

    def __init__(self):
        """A fresh region for each example: the silos wiped, the organisations seeded."""
        super().__init__()
        _wipe(self.app)
        with self.app.app_context():
            demo.seed(trips_per_day=0, days=0)
            self.hospitals = {code: db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == code))
                              for code in HOSPITALS}
            self.agencies = {code: db.session.scalar(sa.select(Agency.id).where(Agency.short_code == code))
                             for code in AGENCIES}
            self.units = {code: list(db.session.scalars(sa.select(Unit.id).where(
                Unit.agency_id == agency_id).order_by(Unit.id))) for code, agency_id in self.agencies.items()}
            self.nurses = {code: db.session.scalar(sa.select(User.id).where(User.hospital_id == hospital_id))
                           for code, hospital_id in self.hospitals.items()}
            self.coordinator = db.session.scalar(sa.select(User.id).where(User.email == "coordinator@medport.test"))
        self.trips = []
        self.bid_on_trips = []  # trips with a live bid, as of the last check
        self.crews_on_the_road = False  # a route before completion exists, as of the last check
        self.reopenable = False  # a trip is awarded or en route, as of the last check

    # -- acting as a view does ------------------------------------------------------------
    def act(self, name, action, data):
        """Run one use case in its own app context and commit; a refusal leaves nothing.

        Then, as drawn, the relay keeps up at once (the usual case) or lags behind.
        """
        with self.app.app_context():
            try:
                action()
            except (TransitionRefused, BidRefused) as refused:
                db.session.rollback()
                assert 400 <= refused.status < 500
                event(f"{name}: refused ({refused.message[:60]})")
                return False
            db.session.commit()
            event(f"{name}: done")
        if data.draw(st.booleans(), label="relay keeps up"):
            Relay(self.app).drain()
        return True

    def trip(self, data, statuses=None, with_bids=False):
        """One of the machine's trips, mostly one in ``statuses`` (where the action makes sense)."""
        candidates = self.trips
        if statuses and data.draw(st.integers(0, 9), label="aim") > 0:
            candidates = list(db.session.scalars(sa.select(TransportRequest.id).where(
                TransportRequest.id.in_(self.bid_on_trips if with_bids else self.trips),
                TransportRequest.status.in_(statuses)))) or self.trips
        return db.session.get(TransportRequest, data.draw(st.sampled_from(sorted(candidates)), label="trip"))

    def unit_for(self, code, trip, data):
        """One of the agency's units, mostly one of the level the trip needs."""
        units = self.units[code]
        if data.draw(st.integers(0, 9), label="aim") > 0:
            fitting = list(db.session.scalars(sa.select(Unit.id).where(
                Unit.id.in_(units), Unit.level.in_(LEVELS[LEVELS.index(trip.level_of_care):]))))
            units = fitting or units
        return data.draw(st.sampled_from(units), label="unit")

    def bid_on(self, trip, data, live_only=True):
        """One of the trip's bids (live ones only, unless told), or a refusal when it has none."""
        query = sa.select(TransportBid).where(TransportBid.trip_id == trip.id).order_by(TransportBid.id)
        if live_only:
            query = query.where(TransportBid.status == "live")
        bids = list(db.session.scalars(query))
        if not bids:
            raise BidRefused("No bid to act on.")
        return data.draw(st.sampled_from(bids), label="bid")

    def agency(self, data):
        """One of the machine's agencies: its registry row and code."""
        code = data.draw(st.sampled_from(AGENCIES), label="agency")
        return db.session.get(Agency, self.agencies[code]), code

    def crew_route(self, data):
        """A route of one of the machine's trips, as a crew's page shows it."""
        query = sa.select(EmsRoute).where(EmsRoute.trip_id.in_(self.trips)).order_by(EmsRoute.id)
        routes = list(db.session.scalars(query.where(EmsRoute.status.in_(CREW_ORDER[:-1]))))
        if not routes or data.draw(st.integers(0, 9), label="aim") == 0:
            routes = list(db.session.scalars(query))
        if not routes:
            raise BidRefused("No route to act on.")
        return data.draw(st.sampled_from(routes), label="route")

    # -- the set-up -------------------------------------------------------------------------
    @initialize(policy=st.sampled_from(["off", "preferred_best_eta", "first_qualifying"]))
    def choose_policy(self, policy):
        """The region's auto-award policy for this example."""
        with self.app.app_context():
            configuration.set_value("auto_award_policy", policy, None)
            db.session.commit()

    # -- hospital -----------------------------------------------------------------------------
    @precondition(lambda self: len(self.trips) < MAX_TRIPS)
    @rule(code=st.sampled_from(HOSPITALS), level=st.sampled_from(LEVELS),
          invite=st.sampled_from(["all", "all", "preferred", "preferred_then_all"]),
          start_hours=st.integers(2, 5), deadline_minutes=st.integers(5, 90), data=st.data())
    def post(self, code, level, invite, start_hours, deadline_minutes, data):
        """A hospital posts a request (at most a few per example)."""
        def action():
            hospital_id = self.hospitals[code]
            facilities = list(db.session.scalars(sa.select(HospitalFacility.id).where(
                HospitalFacility.hospital_id == hospital_id).order_by(HospitalFacility.id)))
            destination = db.session.scalar(sa.select(HospitalFacility.id).where(
                HospitalFacility.hospital_id != hospital_id).order_by(HospitalFacility.id).limit(1))
            now = utcnow()
            trip = trip_posting.post(hospital_id, code, dict(
                origin_facility_id=facilities[0], pickup_location="ICU bed 7",
                destination_facility_id=destination, level_of_care=level, mobility="stretcher",
                urgency="routine", window_start=now + timedelta(hours=start_hours),
                window_end=now + timedelta(hours=start_hours + 1), age_group="adult", weight_kg=80,
                bid_deadline=now + timedelta(minutes=deadline_minutes), invite_mode=invite,
                invite_all_after_minutes=10 if invite == "preferred_then_all" else None,
            ),
                                     actor=Actor(self.nurses[code], None, "Charge Nurse"))
            self.trips.append(trip.id)
        self.act("post", action, data)

    @precondition(lambda self: self.bid_on_trips)
    @rule(data=st.data(), by_center=st.booleans())
    def award(self, data, by_center):
        """The hospital (as its page checks first) or the center awards a bid."""
        def action():
            trip = self.trip(data, ("open",), with_bids=True)
            bid = self.bid_on(trip, data, live_only=False)
            if by_center:
                intervention.award_bid(trip, bid.public_id, trip.version,
                                       actor=Actor(self.coordinator, None, "Coordinator (transport center)"))
                return
            if trip.status != "open" or bid.status != "live":
                raise TransitionRefused("Not open, or the bid is no longer live.")
            trips.award(trip, bid_for_award(bid), expected_version=trip.version, actor=Actor(None, None, "Charge Nurse"))
        self.act("center_awards" if by_center else "hospital_awards", action, data)

    @precondition(lambda self: self.trips)
    @rule(data=st.data(), by_center=st.booleans(), reason=st.sampled_from(["no_availability", "not_needed"]))
    def cancel(self, data, by_center, reason):
        """The hospital or the center cancels a request."""
        def action():
            trip = self.trip(data, ("open", "awarded"))
            if by_center:
                intervention.cancel(trip, reason, "", trip.version,
                                    actor=Actor(self.coordinator, None, "Coordinator (transport center)"))
            else:
                trips.cancel(trip, reason, "", expected_version=trip.version, actor=Actor(None, None, "Charge Nurse"))
        self.act("center_cancels" if by_center else "hospital_cancels", action, data)

    @precondition(lambda self: self.trips)
    @rule(data=st.data(), notes=st.sampled_from(["Bariatric stretcher", "Oxygen 2 L", ""]))
    def hospital_edits(self, data, notes):
        """The hospital changes an open request's notes."""
        def action():
            trip = self.trip(data, ("open",))
            trip_posting.edit(trip, {"notes": notes}, expected_version=trip.version, actor=Actor(None, None, "Charge Nurse"))
        self.act("hospital_edits", action, data)

    # -- EMS ----------------------------------------------------------------------------------
    @precondition(lambda self: self.trips)
    @rule(data=st.data(), eta=st.integers(1, 90))
    def agency_bids(self, data, eta):
        """An agency bids on a request with one of its units."""
        def action():
            trip = self.trip(data, ("open",))
            org, code = self.agency(data)
            unit_id = self.unit_for(code, trip, data)
            bidding.place(trip, org.id, org.name, org.level_list, unit_id, str(eta), "", actor=Actor(None))
        self.act("agency_bids", action, data)

    @precondition(lambda self: self.bid_on_trips)
    @rule(data=st.data(), eta=st.integers(1, 90), other_unit=st.booleans())
    def agency_changes_bid(self, data, eta, other_unit):
        """An agency changes its live bid's ETA, and perhaps its unit."""
        def action():
            trip = self.trip(data, ("open",), with_bids=True)
            bid = self.bid_on(trip, data)
            org = db.session.get(Agency, bid.agency_id)
            code = next(c for c, a in self.agencies.items() if a == org.id)
            unit_id = self.unit_for(code, trip, data) if other_unit else bid.unit_id
            bidding.change(bid, trip, org.id, org.name, org.level_list, unit_id, str(eta), "Updated", actor=Actor(None))
        self.act("agency_changes_bid", action, data)

    @precondition(lambda self: self.bid_on_trips)
    @rule(data=st.data())
    def agency_withdraws(self, data):
        """An agency withdraws its live bid."""
        def action():
            trip = self.trip(data, ("open",), with_bids=True)
            bid = self.bid_on(trip, data)
            org = db.session.get(Agency, bid.agency_id)
            bidding.withdraw(bid, trip, org.id, org.name, actor=Actor(None))
        self.act("agency_withdraws", action, data)

    @precondition(lambda self: self.crews_on_the_road)
    @rule(data=st.data(), wrong_step=st.booleans())
    def crew_advances(self, data, wrong_step):
        """A crew taps its next step (or, as a double tap would, the one after)."""
        def action():
            route = self.crew_route(data)
            position = CREW_ORDER.index(route.status) if route.status in CREW_ORDER else 0
            step = trips.CREW_STEPS[min(position + (1 if wrong_step else 0), len(trips.CREW_STEPS) - 1)]
            trip = db.session.get(TransportRequest, route.trip_id)
            route_steps.advance(route, step, trip=trip, actor=Actor(None, None, "Crew"))
        self.act("crew_advances", action, data)

    @precondition(lambda self: self.crews_on_the_road)
    @rule(data=st.data(), late=st.booleans())
    def crew_undoes(self, data, late):
        """A crew undoes its last step (within the window, or just after it)."""
        def action():
            route = self.crew_route(data)
            position = CREW_ORDER.index(route.status) if route.status in CREW_ORDER else 1
            step = trips.CREW_STEPS[max(position - 1, 0)]
            now = utcnow() + (route_steps.UNDO_WINDOW if late else timedelta(0))
            trip = db.session.get(TransportRequest, route.trip_id)
            route_steps.undo(route, step, trip=trip, now=now, actor=Actor(None, None, "Crew"))
        self.act("crew_undoes", action, data)

    @precondition(lambda self: self.crews_on_the_road)
    @rule(data=st.data())
    def crew_hands_back(self, data):
        """A crew hands its trip back."""
        def action():
            route = self.crew_route(data)
            route_steps.hand_back(route, "Unit out of service",
                                  trip=db.session.get(TransportRequest, route.trip_id),
                                  actor=Actor(None, None, "Crew"))
        self.act("crew_hands_back", action, data)

    # -- transport center ---------------------------------------------------------------------
    @precondition(lambda self: self.trips)
    @rule(data=st.data(), eta=st.integers(5, 60))
    def center_assigns(self, data, eta):
        """The center assigns an agency's unit directly."""
        def action():
            trip = self.trip(data, ("open",))
            org, code = self.agency(data)
            unit_id = self.unit_for(code, trip, data)
            intervention.assign_unit(trip, org.id, unit_id, eta, "Nobody bid in time", trip.version,
                                     actor=Actor(self.coordinator, None, "Coordinator (transport center)"))
        self.act("center_assigns", action, data)

    @precondition(lambda self: self.trips)
    @rule(data=st.data(), minutes=st.integers(5, 120))
    def center_extends(self, data, minutes):
        """The center gives an open request more bidding time."""
        def action():
            trip = self.trip(data, ("open",))
            intervention.extend_deadline(trip, minutes, "", trip.version,
                                         actor=Actor(self.coordinator, None, "Coordinator (transport center)"))
        self.act("center_extends", action, data)

    @precondition(lambda self: self.reopenable)
    @rule(data=st.data())
    def center_reopens(self, data):
        """The center takes an awarded or en-route request back to open."""
        def action():
            trip = self.trip(data, trips.HAND_BACK_FROM)
            intervention.reopen(trip, "Crew delayed", trip.version,
                                actor=Actor(self.coordinator, None, "Coordinator (transport center)"))
        self.act("center_reopens", action, data)

    # -- the relay and the timer ----------------------------------------------------------------
    @precondition(lambda self: self.trips)
    @rule(mode=st.sampled_from(["one pass", "catch up", "later"]), minutes=st.integers(0, 180))
    def relay(self, mode, minutes):
        """One relay pass, a pass until nothing is left, or a pass (and the timer) later on."""
        relay = Relay(self.app)
        event(f"relay: {mode}")
        if mode == "one pass":
            relay.run_once()
        elif mode == "catch up":
            relay.drain()
        else:
            relay.run_once(now=utcnow() + timedelta(minutes=minutes))

    # -- invariants ------------------------------------------------------------------------------
    @invariant()
    def silos_hold_together(self):
        """What holds after every step, and in full whenever nothing is pending."""
        with self.app.app_context():
            for trip in db.session.scalars(sa.select(TransportRequest)):
                assert trip.status in TRIP_STATUSES
                if trip.status in ACTIVE_STATUSES + ("completed",):
                    assert trip.awarded_agency_id is not None and trip.awarded_unit_id is not None
            doubled = db.session.execute(
                sa.select(TransportBid.trip_id, TransportBid.agency_id).where(TransportBid.status == "live")
                .group_by(TransportBid.trip_id, TransportBid.agency_id).having(sa.func.count() > 1)).all()
            assert doubled == []
            assert_units_consistent()
            self.bid_on_trips = sorted(set(db.session.scalars(sa.select(TransportBid.trip_id).where(
                TransportBid.status == "live"))))
            self.crews_on_the_road = db.session.scalar(sa.select(sa.func.count(EmsRoute.id)).where(
                EmsRoute.status.in_(CREW_ORDER[:-1]))) > 0
            self.reopenable = db.session.scalar(sa.select(sa.func.count(TransportRequest.id)).where(
                TransportRequest.status.in_(trips.HAND_BACK_FROM))) > 0
            pending = 0
            for silo, model in OUTBOX_BY_SILO.items():
                failed = db.session.execute(sa.select(model.type, model.status, model.last_error).where(
                    sa.or_(model.status == "parked", model.last_error.is_not(None)))).all()
                assert failed == [], f"{silo} events failed in delivery: {failed}"
                pending += db.session.scalar(sa.select(sa.func.count(model.id)).where(model.status == "pending"))
            if pending == 0:
                for trip_id in self.trips:
                    assert_consistent(trip_id)
                self.assert_audited()

    def assert_audited(self):
        """One audit entry per delivered hospital and EMS event, none for anything else."""
        delivered = set()
        for silo in ("hospital", "ems"):
            model = OUTBOX_BY_SILO[silo]
            delivered |= set(db.session.scalars(sa.select(model.event_id).where(model.status == "delivered")))
        audited = list(db.session.scalars(sa.select(AuditLog.event_id).where(AuditLog.event_id.is_not(None))))
        assert len(audited) == len(set(audited)), "an event audited twice"
        assert set(audited) == delivered

    def teardown(self):
        """The relay catches up in the end: every event delivered, the silos agreeing."""
        Relay(self.app).drain(now=utcnow() + timedelta(minutes=1))
        self.silos_hold_together()
        with self.app.app_context():
            for silo, model in OUTBOX_BY_SILO.items():
                left = db.session.scalar(sa.select(sa.func.count(model.id)).where(model.status != "delivered"))
                assert left == 0, f"{left} {silo} events left undelivered"


@pytest.fixture
def machine(app, backend):
    """The machine bound to this backend's app, and its settings."""
    return type("DispatchMachineRun", (DispatchMachine,), {"app": app}), SETTINGS[backend]


def test_random_dispatch_sequences_keep_the_silos_consistent(machine):
    machine_class, machine_settings = machine
    run_state_machine_as_test(machine_class, settings=machine_settings)
