"""What the screens say is true: one rule for "unfilled", history kept, pre-filled forms that post,
a demo region a real shift could reach."""
from datetime import timedelta

import sqlalchemy as sa

from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import dispatch_state, trip_dispatch_state, utcnow
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import TransportRequest, TransportRequestEvent
from dashboard.services import bidding, oversight
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

