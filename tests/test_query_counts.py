"""No N+1: each dashboard page and partial runs as many queries with more rows as with fewer.

Every statement on every silo's engine is counted while a page is fetched,
first with the demo region plus one request in each state (open with bids,
awarded, completed today, cancelled) and a watched request with one bid, then
again after three more in each state and five more bids on the watched request.
"""
import threading
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy import event

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, Hospital, User
from dashboard.models.ems import Unit
from dashboard.models.hospital import HospitalFacility
from dashboard.services import bidding, deadlines, route_steps, trip_posting, trips

NURSE = "nurse@altoona.medport.test"
DISPATCHER = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"
PASSWORD = "medport-demo"


def pages(trip):
    """``{user: [path]}``: every dashboard page and partial, with ``trip`` as the one request shown."""
    return {
        NURSE: [
            "/hospital/", "/hospital/requests/panel", "/hospital/requests/panel?tab=active",
            "/hospital/requests/panel?tab=completed", "/hospital/requests/panel?tab=cancelled",
            f"/hospital/requests/{trip}", f"/hospital/requests/{trip}/summary",
            f"/hospital/requests/{trip}/bids", f"/hospital/requests/{trip}/timeline",
            "/hospital/analytics",
        ],
        DISPATCHER: [
            "/ems/", "/ems/board/panel", "/ems/board/upcoming", "/ems/trips", "/ems/trips/panel",
            "/ems/trips/panel?tab=completed", f"/ems/requests/{trip}", "/ems/units", "/ems/units/panel",
            "/ems/history", "/ems/routes", "/ems/analytics",
        ],
        COORDINATOR: [
            "/center/", "/center/board/panel", f"/center/requests/{trip}",
            f"/center/requests/{trip}/panel", "/center/units", "/center/units/panel", "/center/audit",
            "/center/analytics",
        ],
    }


def page_statements(app, trip, warm=False):
    """``{(user, path): [statement]}`` for every page; ``warm`` fetches each once first, so what
    a process loads once (and keeps) is not counted."""
    counts = {}
    request_thread = threading.get_ident()
    for email, paths in pages(trip).items():
        client = app.test_client()
        assert client.post("/login", data={"email": email, "password": PASSWORD}).status_code == 302
        for path in paths:
            if warm:
                client.get(path)
            statements = []

            def count(conn, cursor, statement, parameters, context, executemany, statements=statements):
                if threading.get_ident() == request_thread:  # not the signal hub's background reads
                    statements.append(statement)

            with app.app_context():
                engines = list(db.engines.values())
            for engine in engines:
                event.listen(engine, "before_cursor_execute", count)
            try:
                response = client.get(path)
            finally:
                for engine in engines:
                    event.remove(engine, "before_cursor_execute", count)
            assert response.status_code == 200, (email, path, response.status_code)
            counts[(email, path)] = statements
    return counts


class Region:
    """Acts as the demo region's users would, through the services: one commit per use case,
    the relay run once per batch of them."""

    def __init__(self, app, deliver):
        self.app, self.deliver = app, deliver
        with app.app_context():
            self.hospital = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
            self.nurse_id = db.session.scalar(sa.select(User.id).where(User.email == NURSE))
            self.origin = db.session.scalar(sa.select(HospitalFacility.id).where(
                HospitalFacility.hospital_id == self.hospital.id))
            self.destination = db.session.scalar(sa.select(HospitalFacility.id).where(
                HospitalFacility.hospital_id != self.hospital.id))
            self.agencies = {a.short_code: (a.id, a.name, a.level_list)
                             for a in db.session.scalars(sa.select(Agency))}
            self.units = {code: db.session.scalar(
                sa.select(Unit.id).where(Unit.agency_id == agency_id, Unit.active.is_(True)).order_by(Unit.id))
                for code, (agency_id, _name, _levels) in self.agencies.items()}
        self.posted = 0

    def post(self, count):
        """``count`` BLS requests from Altoona, open to every agency, pickup windows 3 h apart."""
        public_ids = []
        with self.app.app_context():
            for _ in range(count):
                self.posted += 1
                starts = utcnow() + timedelta(hours=2 + 3 * self.posted)
                trip = trip_posting.post(self.hospital.id, self.hospital.short_code, dict(
                    origin_facility_id=self.origin, pickup_location="4 West",
                    destination_facility_id=self.destination, level_of_care="BLS", mobility="stretcher",
                    urgency="routine", window_start=starts, window_end=starts + timedelta(hours=1),
                    age_group="adult", weight_kg=70, bid_deadline=utcnow() + timedelta(minutes=30),
                    invite_mode="all"),
                                         actor=Actor(self.nurse_id, None, "Nurse"))
                db.session.commit()
                public_ids.append(trip.public_id)
        self.deliver()
        return public_ids

    def bid(self, public_ids, codes):
        """Each agency of ``codes`` bids on each request with its first unit."""
        with self.app.app_context():
            for public_id in public_ids:
                for code in codes:
                    agency_id, name, levels = self.agencies[code]
                    bidding.place(trips.get_by_public_id(public_id), agency_id, name, levels,
                                  self.units[code], 20, "", actor=Actor(None))
                    db.session.commit()
        self.deliver()

    def award(self, public_ids, code):
        with self.app.app_context():
            for public_id in public_ids:
                trip = trips.get_by_public_id(public_id)
                live = bidding.live_bid(trip.id, self.agencies[code][0])
                trips.award(trip, deadlines.bid_for_award(live), actor=Actor(self.nurse_id, None, "Nurse"))
                db.session.commit()
        self.deliver()

    def complete(self, public_ids, code):
        """The crew's five steps on each request, each step its own use case; one unit drives
        the requests one after the other (it is under way on one trip at a time)."""
        for public_id in public_ids:
            with self.app.app_context():
                for step in trips.CREW_STEPS:
                    trip = trips.get_by_public_id(public_id)
                    route_steps.advance(route_steps.route_for(trip.id, self.agencies[code][0]), step,
                                        trip=trip, actor=Actor(None, None, "Crew"))
                    db.session.commit()
            self.deliver()

    def cancel(self, public_ids):
        with self.app.app_context():
            for public_id in public_ids:
                trips.cancel(trips.get_by_public_id(public_id), "not_needed", "", actor=Actor(self.nurse_id, None, "Nurse"))
                db.session.commit()
        self.deliver()

    def activity(self, each):
        """``each`` requests in every state the pages show: open with bids, awarded to Altoona EMS,
        completed by it, cancelled."""
        bidders = ["AEMS", "BCA", "CLL", "HCR"]
        open_, awarded, completed, cancelled = (self.post(each) for _ in range(4))
        self.bid(open_ + awarded + completed, bidders)
        self.award(awarded + completed, "AEMS")
        self.complete(completed, "AEMS")
        self.cancel(cancelled)


def test_no_page_runs_more_queries_with_more_rows(app, demo, deliver):
    region = Region(app, deliver)
    region.activity(1)
    watched = region.post(1)
    region.bid(watched, ["AEMS"])
    before = page_statements(app, watched[0], warm=True)

    region.activity(3)
    region.bid(watched, ["BCA", "CLL", "ACCT", "HCR", "CMT"])
    after = page_statements(app, watched[0])

    grown = {page: (len(before[page]), len(after[page]), _extra(before[page], after[page]))
             for page in before if len(after[page]) > len(before[page])}
    assert not grown, f"query count grew with the rows (before, after, statements added): {grown}"


def _extra(before, after):
    """The statements run after that were not run before (shortened), to say what grew."""
    remaining = list(before)
    added = []
    for statement in after:
        if statement in remaining:
            remaining.remove(statement)
        else:
            added.append(" ".join(statement.split())[:160])
    return added

