"""EMS pages: the open-request board, bids, my trips, units, availability, routes, history."""
import csv
import io
import re
from datetime import datetime, time, timedelta

import sqlalchemy as sa

from dashboard import create_app
from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.localtime import from_local, to_local
from dashboard.models.base import utcnow
from dashboard.models.center import Agency
from dashboard.models.ems import EmsRoute, TransportBid, Unit, UnitAvailability
from dashboard.models.outbox import EmsOutboxEvent
from dashboard.services import trip_posting, trips
from tests.conftest import DEMO_PASSWORD
from tests.helpers import (
    AEMS,
    CLL,
    CMT,
    HCR,
    advance,
    award_agency,
    bid,
    bids_of,
    new_unit,
    post_request,
    route_of,
    set_trip,
    signed_in,
    trip_row,
    unit,
)

# --- the board --------------------------------------------------------------------------

def test_board_shows_what_the_agency_may_serve_and_was_invited_to(app, demo, deliver):
    everyone = post_request(app, level="BLS")
    cct = post_request(app, level="CCT")
    preferred = post_request(app, level="BLS", invite_mode="preferred")
    later = post_request(app, level="BLS", invite_mode="preferred_then_all", after_minutes=10)
    deliver()
    refs = {pid: trip_row(app, pid).reference for pid in (everyone, cct, preferred, later)}

    aems = signed_in(app, AEMS).get("/ems/").get_data(as_text=True)
    assert all(ref in aems for ref in refs.values())

    cll = signed_in(app, CLL)
    page = cll.get("/ems/").get_data(as_text=True)
    assert refs[everyone] in page
    assert refs[cct] not in page            # CLL has no CCT level
    assert refs[preferred] not in page      # ALT prefers AEMS, BCA, ACCT
    assert refs[later] not in page          # not yet open to everyone
    assert cll.get(f"/ems/requests/{preferred}").status_code == 404
    assert bid(cll, preferred, "Medic 31").status_code == 404
    assert bids_of(app, preferred) == []

    with app.app_context():
        created = trips.get_by_public_id(later).created_at
    set_trip(app, later, created_at=created - timedelta(minutes=11))
    assert refs[later] in cll.get("/ems/").get_data(as_text=True)

    hcr = signed_in(app, HCR).get("/ems/").get_data(as_text=True)
    assert refs[cct] not in hcr and refs[everyone] in hcr


def test_board_order_filters_panel_and_what_leaves_it(app, demo, deliver):
    routine_old = post_request(app, urgency="routine", starts_in=timedelta(hours=1))
    routine_new = post_request(app, urgency="routine", level="ALS", starts_in=timedelta(days=2))
    emergent = post_request(app, urgency="emergent", starts_in=timedelta(hours=1))
    set_trip(app, routine_old, created_at=utcnow() - timedelta(minutes=5))
    refs = {pid: trip_row(app, pid).reference for pid in (routine_old, routine_new, emergent)}
    client = signed_in(app, AEMS)

    page = client.get("/ems/").get_data(as_text=True)
    # Emergent first, then the earliest pickup.
    positions = [page.index(refs[pid]) for pid in (emergent, routine_old, routine_new)]
    assert positions == sorted(positions)
    assert "Tyrone Area Hospital" in page and "km" in page and "Fall risk" in page
    assert trip_row(app, emergent).patient_ref not in page  # no patient reference on the board

    als = client.get("/ems/?level=ALS").get_data(as_text=True)
    assert refs[routine_new] in als and refs[routine_old] not in als
    emergent_only = client.get("/ems/?urgency=emergent").get_data(as_text=True)
    assert refs[emergent] in emergent_only and refs[routine_old] not in emergent_only
    soon = client.get("/ems/?within=2").get_data(as_text=True)
    assert refs[routine_old] in soon and refs[routine_new] not in soon

    panel = client.get("/ems/board/panel?urgency=emergent", headers={"HX-Request": "true"})
    assert panel.status_code == 200
    body = panel.get_data(as_text=True)
    assert "<html" not in body and refs[emergent] in body and refs[routine_old] not in body
    assert 'hx-get="/ems/board/panel?urgency=emergent"' in client.get("/ems/?urgency=emergent").get_data(as_text=True)
    # A filter value the board does not offer is refused with a message, as the center's board does.
    for query, said in (("level=XYZ", "Level of care: not a valid choice"), ("urgency=foo", "Urgency: not a valid choice"),
                        ("within=99", "Pickup within: not a valid choice")):
        for url in (f"/ems/?{query}", f"/ems/board/panel?{query}"):
            refused = client.get(url)
            assert refused.status_code == 400 and said in refused.get_data(as_text=True), url

    with app.app_context():
        trip = trips.get_by_public_id(emergent)
        trips.cancel(trip, "not_needed", "", actor=Actor(None, None, "Charge Nurse (ALT)"))
        db.session.commit()
    assert bid(client, routine_new, "Medic 11").status_code == 302
    award_agency(app, routine_new, "AEMS")
    deliver()
    page = client.get("/ems/").get_data(as_text=True)
    assert refs[emergent] not in page and refs[routine_new] not in page
    assert refs[routine_old] in page


# --- bids -------------------------------------------------------------------------------

def test_bid_lifecycle_updates_the_hospital_trip(app, demo, deliver):
    trip_id = post_request(app)
    client = signed_in(app, AEMS)
    response = bid(client, trip_id, "Ambulance 14", eta="20", note="Crew nearby")
    assert response.status_code == 302
    deliver()
    trip = trip_row(app, trip_id)
    assert (trip.bid_count, trip.best_eta_minutes) == (1, 20)
    assert "ETA 20 min" in client.get("/ems/").get_data(as_text=True)

    again = bid(client, trip_id, "Ambulance 14", eta="20")
    assert again.status_code == 409
    assert "already has a bid" in again.get_data(as_text=True)
    assert len(bids_of(app, trip_id)) == 1

    (live,) = bids_of(app, trip_id)
    changed = client.post(f"/ems/bids/{live.public_id}/change",
                          data={"unit": unit(app, "Ambulance 15").public_id, "eta_minutes": "12"})
    assert changed.status_code == 302
    deliver()
    trip = trip_row(app, trip_id)
    assert (trip.bid_count, trip.best_eta_minutes) == (1, 12)
    assert bids_of(app, trip_id)[0].unit_id == unit(app, "Ambulance 15").id

    assert client.post(f"/ems/bids/{live.public_id}/withdraw").status_code == 302
    deliver()
    trip = trip_row(app, trip_id)
    assert (trip.bid_count, trip.best_eta_minutes) == (0, None)
    assert bids_of(app, trip_id)[0].status == "withdrawn"
    assert bid(client, trip_id, "Ambulance 14", eta="25").status_code == 302


BAD_ETAS = [
    ("0", "at least 1 minute"),
    ("-5", "at least 1 minute"),
    ("100000", "not a real offer"),
    ("abc", "whole minutes"),
    ("12.5", "whole minutes"),
    ("", "ETA to pickup"),
]


def test_bad_bid_input_is_refused_and_nothing_is_stored(app, demo):
    trip_id = post_request(app)
    als_trip = post_request(app, level="ALS")
    client = signed_in(app, AEMS)
    for eta, message in BAD_ETAS:
        response = bid(client, trip_id, "Ambulance 14", eta=eta)
        assert response.status_code == 400, eta
        assert message in response.get_data(as_text=True), eta
    low = bid(client, als_trip, "Ambulance 14")
    assert low.status_code == 400 and "needs ALS or higher" in low.get_data(as_text=True)
    foreign = bid(client, als_trip, "Medic 31")  # a Centre LifeLink unit
    assert foreign.status_code == 400 and "your agency" in foreign.get_data(as_text=True)
    missing = client.post(f"/ems/requests/{als_trip}/bid", data={"unit": "", "eta_minutes": "10"})
    assert missing.status_code == 400
    assert bids_of(app, trip_id) == [] and bids_of(app, als_trip) == []


def test_late_closed_and_foreign_bids_are_refused(app, demo):
    late = post_request(app)
    closed = post_request(app)
    set_trip(app, late, bid_deadline=utcnow() - timedelta(minutes=1))
    with app.app_context():
        trips.cancel(trips.get_by_public_id(closed), "not_needed", "", actor=Actor(None, None, "Nurse"))
        db.session.commit()
    client = signed_in(app, AEMS)
    response = bid(client, late, "Ambulance 14")
    assert response.status_code == 409 and "deadline" in response.get_data(as_text=True)
    response = bid(client, closed, "Ambulance 14")
    assert response.status_code == 409 and "no longer open" in response.get_data(as_text=True)
    assert bids_of(app, late) == [] and bids_of(app, closed) == []

    trip_id = post_request(app)
    assert bid(client, trip_id, "Ambulance 14").status_code == 302
    (theirs,) = bids_of(app, trip_id)
    other = signed_in(app, CMT)
    assert other.post(f"/ems/bids/{theirs.public_id}/withdraw").status_code == 404
    assert other.post(f"/ems/bids/{theirs.public_id}/change",
                      data={"unit": unit(app, "Ambulance 61").public_id, "eta_minutes": "5"}).status_code == 404
    (after,) = bids_of(app, trip_id)
    assert (after.status, after.eta_minutes) == ("live", 20)


def test_a_unit_cannot_be_bid_twice_for_overlapping_windows(app, demo, deliver):
    first = post_request(app, starts_in=timedelta(days=2))
    overlapping = post_request(app, starts_in=timedelta(days=2, minutes=30))
    separate = post_request(app, starts_in=timedelta(days=2, hours=3))
    client = signed_in(app, AEMS)
    assert bid(client, first, "Ambulance 14").status_code == 302
    response = bid(client, overlapping, "Ambulance 14")
    assert response.status_code == 409 and "overlapping" in response.get_data(as_text=True)
    assert bid(client, overlapping, "Ambulance 15").status_code == 302
    assert bid(client, separate, "Ambulance 14").status_code == 302

    # A trip the center assigned without a bid books the unit as well.
    assigned = post_request(app, starts_in=timedelta(days=4))
    later = post_request(app, starts_in=timedelta(days=4, minutes=15))
    with app.app_context():
        medic = db.session.scalar(sa.select(Unit).where(Unit.number == "Medic 11"))
        trips.award(trips.get_by_public_id(assigned),
                    {"id": None, "agency_id": medic.agency_id, "agency_name": "Altoona EMS",
                     "unit_id": medic.id, "unit_label": medic.label, "eta_minutes": 30},
                    source="center", note="Arranged by phone",
                    actor=Actor(None, None, "Casey Coordinator"))
        db.session.commit()
    deliver()
    response = bid(client, later, "Medic 11")
    assert response.status_code == 409 and "overlapping" in response.get_data(as_text=True)


def test_an_edited_window_reaches_the_bids_overlap_checks(app, demo, deliver):
    """The hospital moves a bid-on request's window: the unit's bid now books the new window."""
    moved = post_request(app, starts_in=timedelta(days=2))
    at_old_time = post_request(app, starts_in=timedelta(days=2, minutes=15))
    at_new_time = post_request(app, starts_in=timedelta(days=3, minutes=15))
    client = signed_in(app, AEMS)
    assert bid(client, moved, "Ambulance 14").status_code == 302
    deliver()
    with app.app_context():
        trip = trips.get_by_public_id(moved)
        trip_posting.edit(trip,
                          {"window_start": trip.window_start + timedelta(days=1),
                          "window_end": trip.window_end + timedelta(days=1)},
                          actor=Actor(None, None, "Nurse"))
        db.session.commit()
        new_window = (trip.window_start, trip.window_end)
    deliver()
    (mine,) = bids_of(app, moved, "AEMS")
    assert (mine.window_start, mine.window_end) == new_window
    response = bid(client, at_new_time, "Ambulance 14")
    assert response.status_code == 409 and "overlapping" in response.get_data(as_text=True)
    assert bid(client, at_old_time, "Ambulance 14").status_code == 302


# --- my trips ---------------------------------------------------------------------------

def test_award_progress_to_completed_and_csv(app, demo, deliver):
    trip_id = post_request(app)
    new_unit(app, "AEMS", "Test 1")
    client = signed_in(app, AEMS)
    assert bid(client, trip_id, "Test 1", eta="15").status_code == 302
    assert bid(signed_in(app, CMT), trip_id, "Ambulance 61", eta="30").status_code == 302
    award_agency(app, trip_id, "AEMS")
    deliver()
    reference = trip_row(app, trip_id).reference
    page = client.get("/ems/trips").get_data(as_text=True)
    assert reference in page and "Test 1" in page and "En route" in page
    assert unit(app, "Test 1").status == "assigned"
    assert {b.status for b in bids_of(app, trip_id)} == {"accepted", "declined"}
    assert signed_in(app, CMT).post(f"/ems/trips/{trip_id}/advance",
                                    data={"step": "en_route"}).status_code == 404

    skipped = advance(client, trip_id, "transporting")
    assert skipped.status_code == 409 and "next step is en route" in skipped.get_data(as_text=True)
    for step in trips.CREW_STEPS:
        assert advance(client, trip_id, step).status_code == 302, step
        deliver()
        trip = trip_row(app, trip_id)
        assert trip.status == trips.STEP_STATUS[step] and getattr(trip, f"{step}_at") is not None
    assert trip.completed_at == trip.back_in_service_at
    assert advance(client, trip_id, "back_in_service").status_code == 409
    assert route_of(app, trip_id).status == "completed"
    assert unit(app, "Test 1").status == "available"
    assert reference not in client.get("/ems/trips/panel").get_data(as_text=True)
    assert reference in client.get("/ems/trips/panel?tab=completed").get_data(as_text=True)

    response = client.get("/ems/trips.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    rows = list(csv.DictReader(io.StringIO(response.data.decode("utf-8-sig"))))
    mine = [row for row in rows if row["trip_reference"] == reference]
    assert len(mine) == 1
    assert mine[0]["unit"] == "Test 1" and mine[0]["completed_at"]
    assert mine[0]["pickup_facility"] == "Altoona Regional Medical Center"
    assert trip.patient_ref not in response.get_data(as_text=True)
    assert "room 412" not in response.get_data(as_text=True)
    cmt_csv = signed_in(app, CMT).get("/ems/trips.csv").get_data(as_text=True)
    assert reference not in cmt_csv


def test_completed_trips_page_by_keyset(app, demo, monkeypatch):
    """The completed tab pages newest window first; following "Next page" walks every completed
    trip once, ties on the window cut by id; a cursor the list did not make is a 400."""
    monkeypatch.setattr("dashboard.ems.routes.PAGE_SIZE", 2)
    new_unit(app, "AEMS", "Page 1")
    base = utcnow().replace(microsecond=0) - timedelta(days=10)
    starts = [base, base - timedelta(hours=1), base - timedelta(hours=1), base - timedelta(hours=3),
              base - timedelta(hours=2)]
    with app.app_context():
        amb = db.session.scalar(sa.select(Unit).where(Unit.number == "Page 1"))
        for n, start in enumerate(starts):
            db.session.add(EmsRoute(unit_id=amb.id, agency_id=amb.agency_id, trip_id=990_000 + n,
                                    trip_reference=f"PG-{n}", service_date=start.date(), position=n,
                                    window_start=start, window_end=start + timedelta(minutes=30),
                                    status="completed", back_in_service_at=start + timedelta(hours=1)))
        db.session.commit()
        expected = [route.trip_reference for route in db.session.scalars(
            sa.select(EmsRoute).where(EmsRoute.agency_id == amb.agency_id, EmsRoute.status == "completed")
            .order_by(EmsRoute.window_start.desc(), EmsRoute.id.desc()))]
    client = signed_in(app, AEMS)
    seen, path = [], "/ems/trips?tab=completed"
    for _ in range(len(expected) + 1):
        page = client.get(path)
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        seen.extend(re.findall(r"<td>([A-Z0-9-]+)</td>\s*<td>", html))
        following = re.search(r'href="(/ems/trips\?tab=completed&amp;after=[A-Za-z0-9_-]+)">Next page', html)
        if following is None:
            break
        path = following.group(1).replace("&amp;", "&")
        panel = client.get(path.replace("/ems/trips?", "/ems/trips/panel?")).get_data(as_text=True)
        assert "← Newest" in panel
    assert [ref for ref in seen if ref.startswith("PG-")] == [ref for ref in expected if ref.startswith("PG-")]
    assert seen == expected
    assert client.get("/ems/trips?tab=completed&after=not-a-cursor").status_code == 400
    assert client.get("/ems/trips/panel?tab=completed&after=not-a-cursor").status_code == 400


def test_hand_back_reopens_the_trip(app, demo, deliver):
    trip_id = post_request(app)
    new_unit(app, "AEMS", "Test 1")
    client = signed_in(app, AEMS)
    assert bid(client, trip_id, "Test 1").status_code == 302
    award_agency(app, trip_id, "AEMS")
    deliver()
    assert client.post(f"/ems/trips/{trip_id}/hand-back", data={"reason": " "}).status_code == 400
    assert route_of(app, trip_id).status == "planned"

    response = client.post(f"/ems/trips/{trip_id}/hand-back", data={"reason": "Unit broke down"})
    assert response.status_code == 302
    deliver()
    trip = trip_row(app, trip_id)
    assert trip.status == "open" and trip.handed_back_count == 1 and trip.awarded_agency_id is None
    assert route_of(app, trip_id).status == "handed_back"
    assert bids_of(app, trip_id)[0].status == "closed"
    assert unit(app, "Test 1").status == "available"
    assert trip.reference not in client.get("/ems/trips/panel").get_data(as_text=True)
    assert trip.reference in client.get("/ems/board/panel").get_data(as_text=True)
    with app.app_context():
        from dashboard.models.center import AuditLog
        actions = set(db.session.scalars(sa.select(AuditLog.action)))
    assert "trip.handed_back" in actions

    picked_up = post_request(app, starts_in=timedelta(days=3))
    assert bid(client, picked_up, "Test 1").status_code == 302
    award_agency(app, picked_up, "AEMS")
    deliver()
    assert advance(client, picked_up, "en_route").status_code == 302
    assert advance(client, picked_up, "at_pickup").status_code == 302
    response = client.post(f"/ems/trips/{picked_up}/hand-back", data={"reason": "Too late"})
    assert response.status_code == 409 and "before pickup" in response.get_data(as_text=True)
    assert route_of(app, picked_up).status == "at_pickup"

    cancelled = post_request(app, starts_in=timedelta(days=4))
    assert bid(client, cancelled, "Test 1").status_code == 302
    award_agency(app, cancelled, "AEMS")
    deliver()
    with app.app_context():
        trips.cancel(trips.get_by_public_id(cancelled), "not_needed", "", actor=Actor(None, None, "Nurse"))
        db.session.commit()
    # Before the relay tells the EMS silo, the crew's tap is refused from the hospital's trip.
    response = advance(client, cancelled, "en_route")
    assert response.status_code == 409 and "cancelled" in response.get_data(as_text=True)
    assert route_of(app, cancelled).status == "planned"
    deliver()
    assert route_of(app, cancelled).status == "cancelled"


# --- units and availability -------------------------------------------------------------

def test_units_create_edit_and_status_rules(app, demo, deliver):
    client = signed_in(app, AEMS)
    response = client.post("/ems/units", data={"number": "Medic 99", "level": "ALS",
                                               "base_station": "North", "shift_start": "07:00",
                                               "shift_end": "19:00"})
    assert response.status_code == 302
    assert "Medic 99" in client.get("/ems/units").get_data(as_text=True)
    duplicate = client.post("/ems/units", data={"number": "Medic 99", "level": "BLS"})
    assert duplicate.status_code == 409 and "already has a unit" in duplicate.get_data(as_text=True)
    assert signed_in(app, HCR).post("/ems/units", data={"number": "Medic 7", "level": "ALS"}).status_code == 400

    medic = unit(app, "Medic 99")
    assert client.post(f"/ems/units/{medic.public_id}/edit",
                       data={"number": "Medic 98", "level": "CCT", "base_station": "South"}).status_code == 302
    assert unit(app, "Medic 98").level == "CCT"

    assert client.post(f"/ems/units/{medic.public_id}/status", data={"status": "on_break"}).status_code == 302
    assert unit(app, "Medic 98").status == "on_break"
    with app.app_context():
        events = list(db.session.scalars(sa.select(EmsOutboxEvent).where(
            EmsOutboxEvent.type == "unit.status_changed", EmsOutboxEvent.entity_id == medic.public_id)))
    assert [e.payload["status"] for e in events] == ["available", "on_break"]
    assigned = client.post(f"/ems/units/{medic.public_id}/status", data={"status": "assigned"})
    assert assigned.status_code == 409

    other = signed_in(app, CLL)
    assert other.post(f"/ems/units/{medic.public_id}/status", data={"status": "available"}).status_code == 404
    assert other.get(f"/ems/units/{medic.public_id}/edit").status_code == 404
    assert "Medic 98" not in other.get("/ems/units").get_data(as_text=True)


def test_a_unit_with_an_active_trip_cannot_be_marked_available(app, demo, deliver):
    trip_id = post_request(app, level="ALS")
    new_unit(app, "AEMS", "Medic 90", "ALS")
    client = signed_in(app, AEMS)
    assert bid(client, trip_id, "Medic 90").status_code == 302
    award_agency(app, trip_id, "AEMS")
    deliver()
    medic = unit(app, "Medic 90")
    assert medic.status == "assigned"
    response = client.post(f"/ems/units/{medic.public_id}/status", data={"status": "available"})
    assert response.status_code == 409 and "active trip" in response.get_data(as_text=True)
    assert client.post(f"/ems/units/{medic.public_id}/status",
                       data={"status": "out_of_service"}).status_code == 409
    lowered = client.post(f"/ems/units/{medic.public_id}/edit", data={"number": "Medic 90", "level": "BLS"})
    assert lowered.status_code == 409
    assert unit(app, "Medic 90").status == "assigned" and unit(app, "Medic 90").level == "ALS"
    assert client.post(f"/ems/units/{medic.public_id}/status", data={"status": "on_break"}).status_code == 302
    assert client.post(f"/ems/units/{medic.public_id}/status", data={"status": "assigned"}).status_code == 302


def test_availability_windows_and_day_timeline(app, demo):
    client = signed_in(app, AEMS)
    medic = unit(app, "Medic 11")
    with app.app_context():
        day = to_local(utcnow()).date() + timedelta(days=3)
    data = {"unit": medic.public_id, "kind": "out_of_service", "starts_at": f"{day}T09:00",
            "ends_at": f"{day}T11:30", "note": "Oil change"}
    assert client.post("/ems/availability", data=data).status_code == 302
    page = client.get(f"/ems/availability?date={day}").get_data(as_text=True)
    assert page.count("cell cell-out_of_service") == 5  # 09:00-11:30 in half hours
    assert "Oil change" in page and 'style="' not in page

    assert client.post("/ems/availability", data=data).status_code == 409  # overlapping, same kind
    backwards = dict(data, starts_at=f"{day}T12:00", ends_at=f"{day}T10:00")
    assert client.post("/ems/availability", data=backwards).status_code == 400
    foreign = dict(data, unit=unit(app, "Medic 31").public_id, starts_at=f"{day}T13:00", ends_at=f"{day}T14:00")
    assert client.post("/ems/availability", data=foreign).status_code == 404
    with app.app_context():
        (window,) = db.session.scalars(sa.select(UnitAvailability).where(UnitAvailability.note == "Oil change"))
        window_id = window.id
    assert signed_in(app, CLL).post("/ems/availability/remove", data={"window_id": window_id}).status_code == 404
    for not_an_id in ("9223372036854775808", str(2**31), "-1", "0", "1e3", ""):  # 2**63 overflowed SQLite
        assert client.post("/ems/availability/remove", data={"window_id": not_an_id}).status_code == 404
    assert client.post("/ems/availability/remove", data={"window_id": window_id}).status_code == 302
    with app.app_context():
        assert db.session.get(UnitAvailability, window_id) is None


# --- routes and history -----------------------------------------------------------------

def local_morning_in(app, days):
    """From now until 08:00 local time ``days`` days ahead: trips from then on, a few hours
    apart, fall on one local day (and one route page) whatever the time the test runs."""
    with app.app_context():
        now = utcnow()
        return from_local(datetime.combine(to_local(now).date() + timedelta(days=days), time(8))) - now


def test_routes_show_order_deadhead_and_chain_suggestions(app, demo, deliver):
    morning = local_morning_in(app, 2)
    first = post_request(app, starts_in=morning, destination="Tyrone Area Hospital")
    second = post_request(app, starts_in=morning + timedelta(hours=2), origin="Altoona Rehabilitation Pavilion",
                       destination="Altoona Regional Medical Center")
    chain = post_request(app, starts_in=morning + timedelta(hours=4), hospital="TYR",
                      origin="Tyrone Area Hospital", destination="Altoona Regional Medical Center")
    too_early = post_request(app, starts_in=morning + timedelta(hours=2, minutes=30), hospital="TYR",
                          origin="Tyrone Area Hospital", destination="Altoona Regional Medical Center")
    far = post_request(app, starts_in=morning + timedelta(hours=4), hospital="JMH",
                    origin="Johnstown Memorial Hospital", destination="Altoona Regional Medical Center")
    client = signed_in(app, AEMS)
    for trip_id in (second, first):  # awarded out of time order
        assert bid(client, trip_id, "Ambulance 14").status_code == 302
        award_agency(app, trip_id, "AEMS")
    deliver()
    refs = {pid: trip_row(app, pid).reference for pid in (first, second, chain, too_early, far)}
    with app.app_context():
        day = to_local(trips.get_by_public_id(first).window_start).date()
    amb = unit(app, "Ambulance 14")
    page = client.get(f"/ems/routes?date={day}&unit={amb.public_id}").get_data(as_text=True)
    assert page.index(refs[first]) < page.index(refs[second])
    assert "Empty drive" in page and "From base" in page
    suggestions = page[page.index("Would chain well"):]
    assert refs[chain] in suggestions      # Tyrone, about 20 km from the last drop-off in Altoona
    assert refs[far] not in suggestions    # Johnstown, about 50 km away
    assert refs[too_early] not in suggestions  # starts before the last trip's window ends
    assert signed_in(app, CLL).get(f"/ems/routes?unit={amb.public_id}").status_code == 404


def test_history_shows_outcomes_paginated(app, demo, deliver, monkeypatch):
    monkeypatch.setattr("dashboard.ems.routes.PAGE_SIZE", 2)
    won, lost, withdrawn, closed = (post_request(app, starts_in=timedelta(days=2, hours=h)) for h in range(4))
    client = signed_in(app, AEMS)
    rival = signed_in(app, CMT)
    for trip_id in (won, lost, withdrawn, closed):
        assert bid(client, trip_id, "Ambulance 14").status_code == 302
    assert bid(rival, lost, "Ambulance 61").status_code == 302
    award_agency(app, won, "AEMS")
    award_agency(app, lost, "CMT")
    (mine,) = bids_of(app, withdrawn, "AEMS")
    assert client.post(f"/ems/bids/{mine.public_id}/withdraw").status_code == 302
    with app.app_context():
        trips.cancel(trips.get_by_public_id(closed), "not_needed", "", actor=Actor(None, None, "Nurse"))
        db.session.commit()
    deliver()
    refs = {pid: trip_row(app, pid).reference for pid in (won, lost, withdrawn, closed)}
    expected = {won: "Won", lost: "Lost", withdrawn: "Withdrawn", closed: "Closed"}
    outcome = {"Won": "accepted", "Lost": "declined", "Withdrawn": "withdrawn", "Closed": "ended"}
    for pid, label in expected.items():
        page = client.get(f"/ems/history?outcome={outcome[label]}").get_data(as_text=True)
        assert refs[pid] in page, label
        assert all(refs[other] not in page for other in refs if other != pid), label
    assert "Ambulance 61" not in client.get("/ems/history?outcome=declined").get_data(as_text=True)

    # Keyset pages of two, newest first: following "Next page" walks every bid once, in order.
    with app.app_context():
        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
        mine_newest_first = [bid.public_id for bid in db.session.scalars(
            sa.select(TransportBid).where(TransportBid.agency_id == agency_id)
            .order_by(TransportBid.created_at.desc(), TransportBid.id.desc()))]
    seen, path = [], "/ems/history"
    for _ in range(len(mine_newest_first) + 1):
        page = client.get(path)
        assert page.status_code == 200
        html = page.get_data(as_text=True)
        seen.extend(re.findall(r'data-bid="([0-9a-f-]{36})"', html))
        older = re.search(r'href="(/ems/history\?after=[A-Za-z0-9_-]+)">Next page', html)
        if older is None:
            break
        assert "← Newest" in client.get(older.group(1)).get_data(as_text=True)
        path = older.group(1)
    assert seen == mine_newest_first
    assert {bid.public_id for pid in (won, lost, withdrawn, closed) for bid in bids_of(app, pid, "AEMS")} <= set(seen)
    assert client.get("/ems/history?after=00000000-0000-0000-0000-000000000000").status_code == 400
    assert client.get("/ems/history?after=not-a-cursor").status_code == 400  # a cursor this list did not make


def test_other_roles_cannot_use_ems_pages(app, demo):
    nurse = signed_in(app, "nurse@altoona.medport.test")
    for path in ("/ems/", "/ems/trips", "/ems/units", "/ems/availability", "/ems/routes",
                 "/ems/history", "/ems/trips.csv"):
        assert nurse.get(path).status_code == 403, path


def test_every_ems_form_carries_the_csrf_token(app, demo, deliver, migrated_config):
    trip_id = post_request(app)
    new_unit(app, "AEMS", "Test 1")
    plain = signed_in(app, AEMS)
    assert bid(plain, trip_id, "Test 1").status_code == 302
    award_agency(app, trip_id, "AEMS")
    deliver()
    open_trip = post_request(app)

    guarded = create_app(dict(migrated_config, WTF_CSRF_ENABLED=True))
    client = guarded.test_client()
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"',
                      client.get("/login").get_data(as_text=True)).group(1)
    assert client.post("/login", data={"email": AEMS, "password": DEMO_PASSWORD,
                                       "csrf_token": token}).status_code == 302
    for path in ("/ems/", f"/ems/requests/{open_trip}", "/ems/trips", "/ems/units",
                 "/ems/availability"):
        page = client.get(path).get_data(as_text=True)
        forms = [part for part in page.split("<form")[1:] if 'method="post"' in part.split(">")[0]]
        assert forms, path
        for form in forms:
            assert 'name="csrf_token"' in form.split("</form>")[0], path
    data = {"unit": unit(app, "Ambulance 14").public_id, "eta_minutes": "20"}
    assert client.post(f"/ems/requests/{open_trip}/bid", data=data).status_code == 400
    assert bids_of(app, open_trip) == []
    page = client.get(f"/ems/requests/{open_trip}").get_data(as_text=True)
    form_token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', page).group(1)
    assert client.post(f"/ems/requests/{open_trip}/bid",
                       data=dict(data, csrf_token=form_token)).status_code == 302
    with guarded.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def test_unit_edits_and_availability_are_audited(app, demo, deliver):
    """Every EMS state change reaches the center audit log through the relay."""
    from datetime import timedelta

    import sqlalchemy as sa

    from dashboard.extensions import db
    from dashboard.models.base import utcnow
    from dashboard.models.center import AuditLog
    from dashboard.models.ems import Unit
    from dashboard.services import units as unit_service

    with app.app_context():
        unit = db.session.scalar(sa.select(Unit).where(Unit.number == "Ambulance 14"))
        unit_service.update_unit(unit, ["BLS", "ALS", "CCT"], "Ambulance 14", "BLS", base_station="North", actor=Actor(None))
        db.session.commit()
        start = utcnow() + timedelta(days=3)
        window = unit_service.add_availability(unit, "on_break", start, start + timedelta(hours=1), actor=Actor(None))
        db.session.commit()
        unit_service.remove_availability(window, actor=Actor(None))
        db.session.commit()
    deliver()
    with app.app_context():
        changes = [row.after["change"] for row in db.session.scalars(
            sa.select(AuditLog).where(AuditLog.action == "unit.changed").order_by(AuditLog.id))]
    assert changes == ["edited", "availability_added", "availability_removed"]
