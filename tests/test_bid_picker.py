"""What is offered can be done: the bid form offers only units a bid would be accepted with,
and the request page follows the request live (awarded elsewhere, cancelled, closed)."""
import re
from datetime import timedelta

import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency
from dashboard.models.ems import Unit
from dashboard.services import bidding, trips
from tests.helpers import AEMS, CMT, award_agency, bid, new_unit, post_request, set_trip, signed_in

OPTION = re.compile(r'<option[^>]*? value="([0-9a-f-]{36})"[^>]*>([^<]*)</option>')


def offered(client, public_id, path="/ems/requests/{}"):
    page = client.get(path.format(public_id))
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    return {label.split(" (")[0]: value for value, label in OPTION.findall(text)}, text


def test_a_unit_bid_for_an_overlapping_window_is_not_offered(app, demo, deliver):
    new_unit(app, "AEMS", "Ambulance 91")
    first = post_request(app, starts_in=timedelta(days=2))
    overlapping = post_request(app, starts_in=timedelta(days=2, minutes=30))
    separate = post_request(app, starts_in=timedelta(days=2, hours=3))
    client = signed_in(app, AEMS)
    assert "Ambulance 91" in offered(client, overlapping)[0]
    assert bid(client, first, "Ambulance 91").status_code == 302

    units, page = offered(client, overlapping)
    assert "Ambulance 91" not in units
    assert "already bid or booked for an overlapping pickup window: Ambulance 91" in page
    assert "Ambulance 91" in offered(client, separate)[0]
    # Its own request still offers it (the bid being changed keeps its unit).
    assert "Ambulance 91" in offered(client, first)[0]
    # The panel that refreshes the page offers the same.
    assert "Ambulance 91" not in offered(client, overlapping, "/ems/requests/{}/panel")[0]


def test_every_unit_offered_is_accepted_and_every_other_is_refused(app, demo, deliver):
    """The picker and the bid's check are one rule: for each of the agency's units, offered if
    and only if a bid with it passes ``bidding``'s unit check."""
    new_unit(app, "AEMS", "Ambulance 91")
    new_unit(app, "AEMS", "Medic 92", "ALS")
    first = post_request(app, starts_in=timedelta(days=2))
    target = post_request(app, starts_in=timedelta(days=2, minutes=20))
    client = signed_in(app, AEMS)
    assert bid(client, first, "Ambulance 91").status_code == 302
    assigned = post_request(app, starts_in=timedelta(days=2, minutes=10))
    with app.app_context():  # a trip the center assigned (a route, no bid) books Medic 11
        medic = db.session.scalar(sa.select(Unit).where(Unit.number == "Medic 92"))
        trips.award(trips.get_by_public_id(assigned),
                    {"id": None, "agency_id": medic.agency_id, "agency_name": "Altoona EMS",
                     "unit_id": medic.id, "unit_label": medic.label, "eta_minutes": 30},
                    source="center", note="Arranged by phone",
                    actor=Actor(None, None, "Casey Coordinator"))
        db.session.commit()
    deliver()
    units, _page = offered(client, target)
    assert "Ambulance 91" not in units and "Medic 92" not in units
    with app.app_context():
        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
        trip = trips.get_by_public_id(target)
        for row in db.session.scalars(sa.select(Unit).where(Unit.agency_id == agency_id, Unit.active)):
            try:
                bidding._check_unit(row, agency_id, trip)
                accepted = True
            except bidding.BidRefused:
                accepted = False
            db.session.rollback()
            assert accepted == (row.number in units), row.number
    assert len(units) >= 2


def test_booked_unit_ids_is_the_overlap_rule(app, demo):
    new_unit(app, "AEMS", "Ambulance 91")
    first = post_request(app, starts_in=timedelta(days=3), minutes=60)
    touching = post_request(app, starts_in=timedelta(days=3, minutes=60))
    client = signed_in(app, AEMS)
    assert bid(client, first, "Ambulance 91").status_code == 302
    with app.app_context():
        ambulance = db.session.scalar(sa.select(Unit).where(Unit.number == "Ambulance 91"))
        first_trip, touching_trip = trips.get_by_public_id(first), trips.get_by_public_id(touching)
        live = bidding.live_bid(first_trip.id, ambulance.agency_id)
        assert bidding.booked_unit_ids([ambulance.id], touching_trip) == set()  # windows touch
        set_window = touching_trip.window_start - timedelta(minutes=1)
    set_trip(app, touching, window_start=set_window)
    with app.app_context():
        touching_trip = trips.get_by_public_id(touching)
        assert bidding.booked_unit_ids([ambulance.id], touching_trip) == {ambulance.id}
        assert bidding.booked_unit_ids([ambulance.id], touching_trip, live.id) == set()
        assert bidding.booked_unit_ids([], touching_trip) == set()


def test_the_request_panel_says_awarded_elsewhere_cancelled_or_closed(app, demo, deliver):
    for number in ("Ambulance 91", "Ambulance 93", "Ambulance 94"):
        new_unit(app, "AEMS", number)
    new_unit(app, "CMT", "Ambulance 95")
    awarded = post_request(app)
    cancelled = post_request(app, starts_in=timedelta(days=3))
    closed = post_request(app, starts_in=timedelta(days=4))
    ours, theirs = signed_in(app, AEMS), signed_in(app, CMT)
    for public_id in (awarded, cancelled, closed):
        assert bid(ours, public_id, "Ambulance 91" if public_id == awarded else
                   ("Ambulance 93" if public_id == cancelled else "Ambulance 94")).status_code == 302
    assert bid(theirs, awarded, "Ambulance 95").status_code == 302
    panel = ours.get(f"/ems/requests/{awarded}/panel").get_data(as_text=True)
    assert "Open for bids." in panel and "Place bid" not in panel and "Change bid" in panel
    assert "<html" not in panel

    award_agency(app, awarded, "CMT")
    deliver()
    panel = ours.get(f"/ems/requests/{awarded}/panel").get_data(as_text=True)
    assert "Awarded to another agency." in panel and "awarded to another agency" in panel
    assert "Change bid" not in panel and "Withdraw bid" not in panel

    with app.app_context():
        trips.cancel(trips.get_by_public_id(cancelled), "not_needed", "", actor=Actor(None, None, "Charge Nurse (ALT)"))
        db.session.commit()
    deliver()
    panel = ours.get(f"/ems/requests/{cancelled}/panel").get_data(as_text=True)
    assert "Cancelled by the hospital." in panel and "Change bid" not in panel

    set_trip(app, closed, bid_deadline=utcnow() - timedelta(minutes=1))
    panel = ours.get(f"/ems/requests/{closed}/panel").get_data(as_text=True)
    assert "Bidding closed." in panel and "Change bid" not in panel and "Withdraw bid" in panel
    board = ours.get("/ems/board/panel").get_data(as_text=True)
    row = board[board.index(trip_reference(app, closed)):]
    row = row[:row.index("</tr>")]
    assert "Closed" in row and "Change or withdraw" not in row and "View or withdraw" in row

    page = ours.get(f"/ems/requests/{awarded}").get_data(as_text=True)
    assert 'hx-trigger="sse:trip-updated, sse:bid-updated"' in page and "sse-connect" in page


def trip_reference(app, public_id):
    with app.app_context():
        return trips.get_by_public_id(public_id).reference
