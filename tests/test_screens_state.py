"""What the screens say is true: one rule for "unfilled", history kept, pre-filled forms that post,
a demo region a real shift could reach."""
from datetime import datetime, timedelta

import sqlalchemy as sa

from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import dispatch_state, trip_dispatch_state, utcnow
from dashboard.models.center import Agency
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import TransportRequest, TransportRequestEvent
from dashboard.services import bidding, oversight, trips
from tests.test_events import outbox_types, place_bid, post_trip

ALT_NURSE = "nurse@altoona.medport.test"
COORDINATOR = "coordinator@medport.test"


def _close_bidding(trip_id, minutes_ago=1):
    """Move the trip's bidding deadline into the past (bids are refused after it, so they are
    placed first); returns the trip's reference and public id."""
    trip = db.session.get(TransportRequest, trip_id)
    trip.bid_deadline = utcnow() - timedelta(minutes=minutes_ago)
    db.session.commit()
    return trip.reference, trip.public_id


def _actions(trip_id):
    return list(db.session.scalars(sa.select(TransportRequestEvent.action).where(
        TransportRequestEvent.trip_id == trip_id).order_by(TransportRequestEvent.id)))


def _page(client, auth, email, path):
    auth.login(email)
    html = client.get(path).data.decode()
    auth.logout()
    return html


# --- 1. "Unfilled" means no one can take it ---------------------------------------------------


def test_dispatch_state_is_one_rule():
    now = utcnow()

    class Trip:
        status, bid_deadline = "open", now

    assert dispatch_state(Trip, True, now - timedelta(seconds=1)) == "bidding"
    assert dispatch_state(Trip, True, now) == "awaiting_award"
    assert dispatch_state(Trip, False, now) == "unfilled"
    Trip.status = "awarded"
    assert dispatch_state(Trip, False, now) is None


def test_a_deadline_passed_with_live_bids_awaits_an_award_everywhere(app, demo, client, auth, deliver):
    with app.app_context():
        trip_id = post_trip()
        bids = [place_bid(trip_id, code, eta) for code, eta in (("AEMS", 20), ("CLL", 12), ("BCA", 25))]
    deliver()
    with app.app_context():
        reference, public_id = _close_bidding(trip_id)
    Relay(app).drain()
    deliver()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.bid_count == 3 and trip.unfilled_at is None
        assert trip_dispatch_state(trip) == "awaiting_award"
        assert _actions(trip_id)[-1] == "awaiting_award" and "unfilled" not in _actions(trip_id)
        assert "trip.awaiting_award" in outbox_types("hospital", public_id)
        assert "trip.unfilled" not in outbox_types("hospital", public_id)
        result = oversight.board(oversight.BoardFilters())
        (row,) = [r for r in result["groups"]["open"] if r.trip.id == trip_id]
        assert [code for code, _ in row.marks] == ["awaiting_award"]
    Relay(app).drain()  # a later sweep says nothing more
    with app.app_context():
        assert _actions(trip_id).count("awaiting_award") == 1

    page = _page(client, auth, ALT_NURSE, f"/hospital/requests/{public_id}")
    assert "Awaiting award" in page and ">Unfilled<" not in page and "passed unfilled" not in page
    assert "Bidding closed with 3 live bids: award one" in page
    assert f"/hospital/requests/new?repost={public_id}" not in page  # pick a bid instead
    board = _page(client, auth, ALT_NURSE, "/hospital/requests/panel?tab=open")
    assert "Awaiting award" in board and ">Unfilled<" not in board
    center = _page(client, auth, COORDINATOR, f"/center/requests/{public_id}")
    assert "awaiting award" in center and "passed unfilled" not in center
    assert "Bidding closed: award one of 3 bids" in _page(client, auth, COORDINATOR, "/center/")

    # Every bid withdrawn: now no one can take it, and the timer says so once.
    with app.app_context():
        for bid_id in bids:
            bid = db.session.get(TransportBid, bid_id)
            bidding.withdraw(bid, db.session.get(TransportRequest, trip_id), bid.agency_id, "Agency")
            db.session.commit()
    deliver()
    Relay(app).drain()
    with app.app_context():
        trip = db.session.get(TransportRequest, trip_id)
        assert trip.bid_count == 0 and trip.unfilled_at is not None
        assert trip_dispatch_state(trip) == "unfilled"
        assert _actions(trip_id)[-1] == "unfilled"
    page = _page(client, auth, ALT_NURSE, f"/hospital/requests/{public_id}")
    assert "Unfilled" in page and "Awaiting award" not in page.split("timeline")[0]


# --- 2. History is not rewritten ---------------------------------------------------------------


def _csv_table(client, url):
    import csv
    import io

    response = client.get(url)
    assert response.status_code == 200, response.data[:300]
    return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))


def test_went_unfilled_is_kept_and_a_center_assignment_is_no_bid_win(app, demo, client, auth, deliver):
    from dashboard.models.ems import Unit
    from dashboard.services import intervention
    from tests.test_events import award

    with app.app_context():
        extended, assigned, cancelled, won = (post_trip() for _ in range(4))
        place_bid(won, "AEMS", 15)
        for trip_id in (extended, assigned, cancelled):
            _close_bidding(trip_id)
    deliver()
    with app.app_context():
        award(won, db.session.scalar(sa.select(TransportBid.id).where(TransportBid.trip_id == won)))
    Relay(app).drain()  # three go unfilled: no bid on them
    with app.app_context():
        went = {t: db.session.get(TransportRequest, t).unfilled_at for t in (extended, assigned, cancelled)}
        assert all(went.values())
        trip = db.session.get(TransportRequest, extended)
        intervention.extend_deadline(trip, 30, "", None, "Coordinator", trip.version)
        db.session.commit()
        trip = db.session.get(TransportRequest, assigned)
        aems = db.session.scalar(sa.select(Agency).where(Agency.short_code == "AEMS"))
        unit = next(u for u in db.session.scalars(sa.select(Unit).where(Unit.agency_id == aems.id,
                                                                          Unit.active.is_(True)))
                    if db.session.get(TransportRequest, won).awarded_unit_id != u.id)
        intervention.assign_unit(trip, aems.id, unit.id, 20, "Agreed by phone", None, "Coordinator",
                                 trip.version)
        db.session.commit()
        trips.cancel(db.session.get(TransportRequest, cancelled), "no_availability", "", None, "Nurse")
        db.session.commit()
    deliver()
    with app.app_context():
        for trip_id, first in went.items():  # an extension, an assignment, a cancellation: kept
            assert db.session.get(TransportRequest, trip_id).unfilled_at == first
        assigned_trip = db.session.get(TransportRequest, assigned)
        assert (assigned_trip.award_source, assigned_trip.awarded_bid_id) == ("center", None)
        assert trip_dispatch_state(db.session.get(TransportRequest, extended)) == "bidding"
        # Far from the demo's trips (near today), so the day holds these four alone.
        for trip_id in (extended, assigned, cancelled, won):
            db.session.get(TransportRequest, trip_id).created_at = datetime(2024, 3, 12, 16, 0)
        db.session.commit()

    auth.login(COORDINATOR)
    period = "/center/analytics?start=2024-03-12&end=2024-03-12&format=csv&table="
    fill = {row[0]: row[1:] for row in _csv_table(client, period + "fill")[1:]}
    assert fill["Went unfilled (deadline passed, no live bid)"] == ["3", "75.0"]
    assert fill["Ended unfilled (never taken by an agency)"] == ["2", "50.0"]  # extended, cancelled
    assert fill["Awarded"] == ["2", "50.0"]
    agencies = {row[0]: row[1:] for row in _csv_table(client, period + "agencies")[1:]}
    assert agencies["Altoona EMS"][:2] == ["1", "1"]  # one bid, one win: the assignment is none
    header, *body = _csv_table(client, period + "trips")
    unfilled = [dict(zip(header, row, strict=True))["unfilled_at"] for row in body]
    assert sum(bool(value) for value in unfilled) == 3

