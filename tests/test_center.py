"""The transport center: regional board, interventions, units, registry, users, configuration,
audit log and silo health."""
import csv
import io
import re
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard import create_app
from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency, AuditLog, Hospital, SystemConfiguration, User
from dashboard.models.ems import EmsAgency, EmsRoute, TransportBid, Unit
from dashboard.models.hospital import (
    HospitalFacility,
    HospitalUser,
    TransportRequest,
    TransportRequestEvent,
)
from dashboard.models.outbox import CenterOutboxEvent, HospitalOutboxEvent
from dashboard.services import bidding, oversight, trip_posting, users
from dashboard.services.accounts import DEMO_PASSWORD
from tests.helpers import row_of

COORDINATOR = "coordinator@medport.test"
ADMIN = "admin@medport.test"
NURSE = "nurse@altoona.medport.test"
DISPATCH = "dispatch@altoonaems.medport.test"


# --- helpers -----------------------------------------------------------------------------

def scalar(app, statement):
    with app.app_context():
        return db.session.scalar(statement)


def scalars(app, statement):
    with app.app_context():
        return list(db.session.scalars(statement))


def user_id(app, email):
    return scalar(app, sa.select(User.id).where(User.email == email))


def hospital(app, code):
    return scalar(app, sa.select(Hospital).where(Hospital.short_code == code))


def agency(app, code):
    return scalar(app, sa.select(Agency).where(Agency.short_code == code))


def post_trip(app, code="TYR", level="BLS", urgency="routine", created_ago=1, window_in=180,
              deadline_in=30, **values):
    """Post a request at hospital ``code`` and backdate it as asked; returns its public id."""
    now = utcnow()
    with app.app_context():
        hosp = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == code))
        origin = db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.hospital_id == hosp.id))
        fields = dict(
            origin_facility_id=origin.id, pickup_location="ED bay 1", destination_facility_id=None,
            destination_address="12 Home Street, Altoona, PA", level_of_care=level, mobility="stretcher",
            urgency=urgency, window_start=now + timedelta(minutes=window_in - 60),
            window_end=now + timedelta(minutes=window_in), patient_ref="", age_group="adult",
            weight_kg=80, bid_deadline=now + timedelta(minutes=deadline_in), invite_mode="all",
        )
        trip = trip_posting.post(hosp.id, code, fields, actor=Actor(1, None, "Test nurse"))
        trip.created_at = now - timedelta(minutes=created_ago)
        for key, value in values.items():
            setattr(trip, key, value)
        db.session.commit()
        return trip.public_id


def trip_row(app, public_id):
    return scalar(app, sa.select(TransportRequest).where(TransportRequest.public_id == public_id))


def place_bid(app, public_id, agency_code, unit_number, eta=20):
    """An agency's live bid, placed through the EMS service; returns the bid's public id."""
    with app.app_context():
        trip = db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == public_id))
        ag = db.session.scalar(sa.select(Agency).where(Agency.short_code == agency_code))
        unit = db.session.scalar(sa.select(Unit).where(Unit.agency_id == ag.id, Unit.number == unit_number))
        bid = bidding.place(trip, ag.id, ag.name, ag.level_list, unit.id, eta, "", actor=Actor(None))
        db.session.commit()
        return bid.public_id


def unit_row(app, agency_code, number):
    with app.app_context():
        ag = db.session.scalar(sa.select(Agency).where(Agency.short_code == agency_code))
        return db.session.scalar(sa.select(Unit).where(Unit.agency_id == ag.id, Unit.number == number))


def audit_rows(app, action, entity_id=None):
    query = sa.select(AuditLog).where(AuditLog.action == action)
    if entity_id is not None:
        query = query.where(AuditLog.entity_id == str(entity_id))
    return scalars(app, query.order_by(AuditLog.id))


# --- who may see what ----------------------------------------------------------------------

CENTER_PAGES = ["/center/", "/center/board/panel", "/center/units", "/center/units/panel",
                "/center/audit", "/center/audit/export.csv", "/center/health", "/center/health/panel"]
ADMIN_PAGES = ["/center/registry", "/center/registry/hospitals/new", "/center/registry/agencies/new",
               "/center/users", "/center/users/new", "/center/config"]


@pytest.mark.parametrize("email", [NURSE, DISPATCH])
def test_hospital_and_ems_users_are_refused_on_center_pages(client, auth, demo, app, email):
    public_id = post_trip(app)
    auth.login(email)
    for page in CENTER_PAGES + ADMIN_PAGES + [f"/center/requests/{public_id}"]:
        assert client.get(page).status_code == 403, page
    assert client.post(f"/center/requests/{public_id}/cancel",
                       data={"cancel-reason": "not_needed", "cancel-version": "1"}).status_code == 403
    assert trip_row(app, public_id).status == "open"


def test_coordinator_sees_oversight_pages_but_not_administration(client, auth, demo, app):
    auth.login(COORDINATOR)
    for page in CENTER_PAGES:
        assert client.get(page).status_code == 200, page
    for page in ADMIN_PAGES:
        assert client.get(page).status_code == 403, page
    assert client.post("/center/config", data={"risk_no_bids_minutes": "5"}).status_code == 403
    assert client.post("/center/users/new", data={"email": "x@medport.test", "display_name": "X",
                                                  "role": "admin"}).status_code == 403
    assert scalar(app, sa.select(User.id).where(User.email == "x@medport.test")) is None
    nav = client.get("/center/").data.decode()
    for link in ("/center/units", "/center/audit", "/center/health"):
        assert f'href="{link}"' in nav
    assert "/center/registry" not in nav and "/center/users" not in nav


def test_admin_navigation_reaches_every_center_page(client, auth, demo):
    auth.login(ADMIN)
    nav = client.get("/center/").data.decode()
    for link in ("/center/units", "/center/registry", "/center/users", "/center/config",
                 "/center/audit", "/center/health"):
        assert f'href="{link}"' in nav
        assert client.get(link).status_code == 200, link


# --- regional board ------------------------------------------------------------------------

def test_board_groups_requests_by_state_and_marks_the_ones_at_risk(client, auth, demo, app):
    now = utcnow()
    waiting = post_trip(app, created_ago=25)                                  # no bids after 10 min
    unfilled = post_trip(app, created_ago=40, deadline_in=-10, unfilled_at=now - timedelta(minutes=10),
                         bid_count=0)                                        # deadline passed, no bid
    awaiting = post_trip(app, created_ago=40, deadline_in=-10, bid_count=2)   # deadline passed, 2 bids
    tight = post_trip(app, window_in=10, bid_count=2, best_eta_minutes=9)     # window ends soon
    emergent = post_trip(app, urgency="emergent", bid_count=1)
    calm = post_trip(app)                                                     # fresh, nothing wrong
    awarded = post_trip(app, status="awarded", awarded_agency_name="Altoona EMS",
                        awarded_unit_label="Medic 11 (ALS)", bid_count=2, best_eta_minutes=12)
    done = post_trip(app, status="completed", completed_at=now - timedelta(hours=2))
    old = post_trip(app, status="completed", completed_at=now - timedelta(hours=30))
    refs = {pid: trip_row(app, pid).reference for pid in
            (waiting, unfilled, awaiting, tight, emergent, calm, awarded, done, old)}

    with app.app_context():
        result = oversight.board(oversight.BoardFilters())
    placed = {row.trip.public_id: (state, [code for code, _ in row.marks])
              for state, rows in result["groups"].items() for row in rows}
    assert placed[waiting] == ("open", ["no_bids"])
    assert placed[unfilled] == ("open", ["unfilled", "no_bids"])
    assert placed[awaiting] == ("open", ["awaiting_award"])
    assert placed[tight] == ("open", ["pickup"])
    assert placed[emergent] == ("open", ["emergent"])
    assert placed[calm] == ("open", [])
    assert placed[awarded][0] == "active"
    assert placed[done] == ("closed", [])
    assert old not in placed  # closed more than 24 h ago: off the board
    open_ids = [row.trip.public_id for row in result["groups"]["open"]]
    assert open_ids.index(emergent) < open_ids.index(calm)  # at risk first

    auth.login(COORDINATOR)
    html = client.get("/center/").data.decode()
    assert 'sse:trip-updated, sse:bid-updated' in html
    assert 'class="at-risk"' in row_of(html, refs[waiting]) and "No bids after 25 min" in row_of(html, refs[waiting])
    assert "Deadline passed unfilled" in row_of(html, refs[unfilled])
    assert "Bidding closed: award one of 2 bids" in row_of(html, refs[awaiting])
    assert "unfilled" not in row_of(html, refs[awaiting])
    assert "Pickup window ends in" in row_of(html, refs[tight])
    assert "Emergent" in row_of(html, refs[emergent])
    assert "at-risk" not in row_of(html, refs[calm])
    awarded_row = row_of(html, refs[awarded])
    assert "Altoona EMS · " in awarded_row and '"unit-name">Medic 11 (ALS)<' in awarded_row
    assert ">2<" in awarded_row and "12 min" in awarded_row
    assert refs[done] in html and refs[old] not in html


def test_board_previews_the_latest_closed_requests_with_their_true_count(client, auth, demo, app,
                                                                          monkeypatch):
    monkeypatch.setattr(oversight, "CLOSED_PREVIEW", 2)
    now = utcnow()
    closed = [post_trip(app, status="completed", completed_at=now - timedelta(minutes=minutes))
              for minutes in (50, 10, 30)] + [
        post_trip(app, status="cancelled", cancelled_at=now - timedelta(minutes=20), cancel_reason="not_needed")]
    refs = {pid: trip_row(app, pid).reference for pid in closed}
    with app.app_context():
        since = now - timedelta(hours=24)
        expected_total = db.session.scalar(sa.select(sa.func.count()).select_from(TransportRequest).where(
            sa.or_(sa.and_(TransportRequest.status == "completed", TransportRequest.completed_at >= since),
                   sa.and_(TransportRequest.status == "cancelled", TransportRequest.cancelled_at >= since))))
        result = oversight.board(oversight.BoardFilters(), now=now)
    assert expected_total >= 4
    assert [row.trip.public_id for row in result["groups"]["closed"]] == [closed[1], closed[3]]  # latest first
    assert result["counts"]["closed"] == expected_total and result["previewed"] == {"closed"}

    auth.login(COORDINATOR)
    html = client.get("/center/").data.decode()
    assert f"Showing the latest 2 of {expected_total}." in html
    assert refs[closed[1]] in html and refs[closed[3]] in html and refs[closed[0]] not in html
    link = re.search(r'<a href="(/center/\?state=closed)">Show all', html)
    assert link is not None
    everything = client.get(link.group(1)).data.decode()
    assert all(ref in everything for ref in refs.values()) and "Showing the latest" not in everything


def test_board_filters_apply_to_page_and_panel(client, auth, demo, app):
    tyrone = post_trip(app, "TYR", level="ALS", urgency="urgent")
    altoona = post_trip(app, "ALT", level="ALS", urgency="urgent")
    tyr_id = hospital(app, "TYR").id
    auth.login(COORDINATOR)
    page = client.get(f"/center/?hospital={tyr_id}&state=open&level=ALS&urgency=urgent")
    html = page.data.decode()
    assert page.status_code == 200
    assert trip_row(app, tyrone).reference in html and trip_row(app, altoona).reference not in html
    assert 'id="group-open"' in html and 'id="group-active"' not in html
    # The live panel keeps the filters in its URL.
    panel_url = re.search(r'hx-get="(/center/board/panel[^"]*)"', html).group(1).replace("&amp;", "&")
    assert f"hospital={tyr_id}" in panel_url and "state=open" in panel_url and "level=ALS" in panel_url
    panel = client.get(panel_url).data.decode()
    assert "<html" not in panel and trip_row(app, tyrone).reference in panel
    assert trip_row(app, altoona).reference not in panel
    assert client.get("/center/?hospital=9999").status_code == 400
    assert client.get("/center/board/panel?state=everything").status_code == 400


# --- interventions -------------------------------------------------------------------------

def test_center_awards_a_bid_on_the_hospitals_behalf(client, auth, demo, app, deliver):
    public_id = post_trip(app, level="ALS")
    winning = place_bid(app, public_id, "AEMS", "Medic 11", eta=14)
    place_bid(app, public_id, "BCA", "Medic 23", eta=25)
    deliver()
    trip = trip_row(app, public_id)
    assert trip.bid_count == 2
    auth.login(COORDINATOR)
    page = client.get(f"/center/requests/{public_id}").data.decode()
    assert "Medic 11 (ALS)" in page and 'name="bid"' in page

    stale = client.post(f"/center/requests/{public_id}/award", data={"bid": winning, "version": trip.version - 1})
    assert stale.status_code == 409 and b"changed while you were looking" in stale.data
    assert trip_row(app, public_id).status == "open"

    response = client.post(f"/center/requests/{public_id}/award", data={"bid": winning, "version": trip.version})
    assert response.status_code == 302
    deliver()
    trip = trip_row(app, public_id)
    assert (trip.status, trip.award_source, trip.awarded_unit_label) == ("awarded", "center", "Medic 11 (ALS)")
    history = scalar(app, sa.select(TransportRequestEvent).where(
        TransportRequestEvent.trip_id == trip.id, TransportRequestEvent.action == "awarded"))
    assert history.user_id == user_id(app, COORDINATOR) and "transport center" in history.user_label
    statuses = {b.public_id: b.status
                for b in scalars(app, sa.select(TransportBid).where(TransportBid.trip_id == trip.id))}
    assert statuses[winning] == "accepted" and sorted(statuses.values()) == ["accepted", "declined"]
    assert unit_row(app, "AEMS", "Medic 11").status == "assigned"
    (entry,) = audit_rows(app, "trip.awarded", public_id)
    assert entry.user_email == COORDINATOR and entry.ip == "127.0.0.1" and entry.after["source"] == "center"

    again = client.post(f"/center/requests/{public_id}/award", data={"bid": winning, "version": trip.version})
    assert again.status_code == 409


def test_center_assigns_a_unit_directly_and_refuses_unfit_units(client, auth, demo, app, deliver):
    public_id = post_trip(app, level="ALS")
    version = trip_row(app, public_id).version
    aems, bca = agency(app, "AEMS"), agency(app, "BCA")
    medic = unit_row(app, "AEMS", "Medic 12")
    basic = unit_row(app, "AEMS", "Ambulance 14")
    with app.app_context():
        db.session.execute(sa.update(Unit).where(Unit.id == unit_row(app, "AEMS", "Medic 11").id)
                           .values(status="on_break"))
        db.session.commit()
    on_break = unit_row(app, "AEMS", "Medic 11")
    auth.login(COORDINATOR)
    url = f"/center/requests/{public_id}/assign"
    base = {"assign-agency": aems.id, "assign-unit": medic.id, "assign-eta_minutes": 20,
            "assign-reason": "No bids; agency agreed by phone", "assign-version": version}
    cases = [
        ({**base, "assign-unit": basic.id}, 400, b"this request needs ALS or higher"),
        ({**base, "assign-unit": on_break.id}, 409, b"is not available (on break)"),
        ({**base, "assign-agency": bca.id}, 400, b"is not a unit of Blair County Ambulance"),
        ({**base, "assign-unit": 99999}, 400, b"Choose an active unit."),
        ({**base, "assign-reason": ""}, 400, b"Say why the center assigns this request."),
    ]
    for data, status, message in cases:
        response = client.post(url, data=data)
        assert response.status_code == status, data
        assert message in response.data
    assert trip_row(app, public_id).status == "open"

    assert client.post(url, data=base).status_code == 302
    deliver()
    trip = trip_row(app, public_id)
    assert (trip.status, trip.award_source, trip.awarded_bid_id) == ("awarded", "center", None)
    assert trip.award_note == "No bids; agency agreed by phone"
    note = scalar(app, sa.select(TransportRequestEvent.note).where(
        TransportRequestEvent.trip_id == trip.id, TransportRequestEvent.action == "awarded"))
    assert "Reason: No bids; agency agreed by phone" in note
    assert scalar(app, sa.select(EmsRoute).where(EmsRoute.trip_id == trip.id)).unit_id == medic.id
    assert unit_row(app, "AEMS", "Medic 12").status == "assigned"
    (entry,) = audit_rows(app, "trip.awarded", public_id)
    assert entry.user_email == COORDINATOR

    # The same unit cannot be booked twice for an overlapping window.
    other = post_trip(app, level="ALS")
    clash = client.post(f"/center/requests/{other}/assign",
                        data={**base, "assign-version": trip_row(app, other).version})
    assert clash.status_code == 409 and b"already booked" in clash.data


def test_center_extends_a_deadline_passed_unfilled(client, auth, demo, app, deliver):
    now = utcnow()
    public_id = post_trip(app, created_ago=45, deadline_in=-15, unfilled_at=now - timedelta(minutes=15))
    trip = trip_row(app, public_id)
    auth.login(COORDINATOR)
    bad = client.post(f"/center/requests/{public_id}/extend", data={"extend-minutes": "0", "extend-version": trip.version})
    assert bad.status_code == 400
    response = client.post(f"/center/requests/{public_id}/extend", data={"extend-minutes": "30", "extend-version": trip.version})
    assert response.status_code == 302
    deliver()
    trip = trip_row(app, public_id)
    # Taking bids again; that it went unfilled is history and stays.
    assert trip.unfilled_at == now - timedelta(minutes=15) and trip.bid_deadline > now + timedelta(minutes=25)
    (entry,) = audit_rows(app, "trip.changed", public_id)
    assert entry.user_email == COORDINATOR and entry.after["changed"] == ["bid_deadline"]


def test_center_reopens_an_awarded_trip_and_the_unit_is_released(client, auth, demo, app, deliver):
    public_id = post_trip(app, level="ALS")
    bid = place_bid(app, public_id, "AEMS", "Medic 11")
    deliver()
    auth.login(COORDINATOR)
    client.post(f"/center/requests/{public_id}/award", data={"bid": bid, "version": trip_row(app, public_id).version})
    deliver()
    assert unit_row(app, "AEMS", "Medic 11").status == "assigned"
    trip = trip_row(app, public_id)
    assert client.post(f"/center/requests/{public_id}/reopen",
                       data={"reopen-reason": "", "reopen-version": trip.version}).status_code == 400
    response = client.post(f"/center/requests/{public_id}/reopen",
                           data={"reopen-reason": "Crew delayed at another call", "reopen-version": trip.version})
    assert response.status_code == 302
    deliver()
    trip = trip_row(app, public_id)
    assert trip.status == "open" and trip.awarded_unit_id is None
    assert (trip.bid_count, trip.best_eta_minutes) == (0, None)  # the earlier round's bids are over
    assert unit_row(app, "AEMS", "Medic 11").status == "available"
    (entry,) = audit_rows(app, "trip.reopened", public_id)
    assert entry.user_email == COORDINATOR
    # An open request cannot be re-opened.
    illegal = client.post(f"/center/requests/{public_id}/reopen",
                          data={"reopen-reason": "again", "reopen-version": trip.version})
    assert illegal.status_code == 409 and b"Only a request that is awarded or en route" in illegal.data


def test_center_cancels_with_a_reason(client, auth, demo, app, deliver):
    public_id = post_trip(app, level="BLS")
    bid = place_bid(app, public_id, "HCR", "Ambulance 51")
    deliver()
    version = trip_row(app, public_id).version
    auth.login(COORDINATOR)
    url = f"/center/requests/{public_id}/cancel"
    assert client.post(url, data={"cancel-reason": "", "cancel-version": version}).status_code == 400
    other = client.post(url, data={"cancel-reason": "other", "cancel-note": "", "cancel-version": version})
    assert other.status_code == 400 and b"Say what the other reason is." in other.data
    assert client.post(url, data={"cancel-reason": "not_needed", "cancel-note": "Patient discharged by family",
                                  "cancel-version": version}).status_code == 302
    deliver()
    trip = trip_row(app, public_id)
    assert (trip.status, trip.cancel_reason) == ("cancelled", "not_needed")
    assert scalar(app, sa.select(TransportBid.status).where(TransportBid.public_id == bid)) == "closed"
    (entry,) = audit_rows(app, "trip.cancelled", public_id)
    assert entry.user_email == COORDINATOR and entry.after["reason"] == "not_needed"
    page = client.get(f"/center/requests/{public_id}").data.decode()
    assert "takes no intervention" in page
    assert client.get("/center/requests/no-such-request").status_code == 404


# --- units overview ------------------------------------------------------------------------

def test_units_overview_shows_every_agency_with_counts_and_current_trips(client, auth, demo, app):
    busy = scalar(app, sa.select(Unit).where(Unit.current_trip_id.is_not(None)))
    reference = scalar(app, sa.select(TransportRequest.reference).where(TransportRequest.id == busy.current_trip_id))
    available_als = scalar(app, sa.select(sa.func.count(Unit.id)).where(
        Unit.status == "available", Unit.level == "ALS", Unit.active.is_(True)))
    auth.login(COORDINATOR)
    html = client.get("/center/units").data.decode()
    assert "sse:unit-updated" in html and reference in html
    assert re.search(rf'<span class="center-count">{available_als}</span> ALS', html)
    for name in scalars(app, sa.select(Agency.name)):
        assert name in html

    statements = []

    def count(_conn, _cursor, statement, *_args):
        statements.append(statement)

    with app.app_context():
        engines = list(db.engines.values())
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", count)
    try:
        panel = client.get(f"/center/units/panel?agency={busy.agency_id}")
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", count)
    assert panel.status_code == 200 and reference in panel.data.decode()
    # No query per unit: one read of the units, one of their counts, one of their trips.
    reads = {table: sum(f"FROM {table}" in statement for statement in statements)
             for table in ("units", "transport_requests")}
    assert reads == {"units": 2, "transport_requests": 1}, statements


# --- registry ------------------------------------------------------------------------------

def test_registry_changes_reach_the_hospital_and_ems_silos_through_events(client, auth, demo, app, deliver):
    auth.login(ADMIN)
    response = client.post("/center/registry/hospitals/new", data={
        "name": "Lewistown Community Hospital", "short_code": "lch", "city": "Lewistown",
        "region": "Central PA", "phone": "", "active": "y",
        "facility_address": "400 Highland Ave, Lewistown, PA", "facility_lat": "40.6", "facility_lon": "-77.57"})
    assert response.status_code == 302
    lewistown = hospital(app, "LCH")
    # The center transaction wrote only the center: the facility follows the event.
    assert scalar(app, sa.select(HospitalFacility).where(HospitalFacility.hospital_id == lewistown.id)) is None
    deliver()
    main = scalar(app, sa.select(HospitalFacility).where(HospitalFacility.hospital_id == lewistown.id))
    assert (main.name, main.address, main.kind, main.lat) == (
        "Lewistown Community Hospital", "400 Highland Ave, Lewistown, PA", "hospital", 40.6)

    response = client.post(f"/center/registry/hospitals/{lewistown.public_id}/facilities/new", data={
        "name": "Lewistown Dialysis", "kind": "dialysis", "address": "10 Main St", "city": "Lewistown",
        "lat": "", "lon": "", "active": "y"})
    assert response.status_code == 302
    deliver()
    dialysis = scalar(app, sa.select(HospitalFacility).where(HospitalFacility.name == "Lewistown Dialysis"))
    assert dialysis.active and dialysis.hospital_id == lewistown.id and dialysis.lat is None

    response = client.post(f"/center/registry/facilities/{dialysis.public_id}", data={
        "name": "Lewistown Dialysis Unit", "kind": "dialysis", "address": "10 Main St",
        "city": "Lewistown", "lat": "", "lon": ""})  # "active" unticked: deactivate
    assert response.status_code == 302
    deliver()
    dialysis = scalar(app, sa.select(HospitalFacility).where(HospitalFacility.public_id == dialysis.public_id))
    assert (dialysis.name, dialysis.active) == ("Lewistown Dialysis Unit", False)
    (entry,) = audit_rows(app, "registry.deactivated", dialysis.public_id)
    assert entry.user_email == ADMIN and entry.before == {"active": True, "name": "Lewistown Dialysis"}

    response = client.post("/center/registry/agencies/new", data={
        "name": "Mifflin County EMS", "short_code": "MCE", "levels": ["BLS", "ALS"],
        "service_area": "Mifflin County", "base_lat": "40.6", "base_lon": "-77.6",
        "service_radius_km": "60", "phone": "717-555-0100", "active": "y"})
    assert response.status_code == 302
    mifflin = agency(app, "MCE")
    deliver()
    profile = scalar(app, sa.select(EmsAgency).where(EmsAgency.agency_id == mifflin.id))
    assert (profile.name, profile.levels, profile.service_radius_km, profile.active) == (
        "Mifflin County EMS", "BLS,ALS", 60, True)
    client.post(f"/center/registry/agencies/{mifflin.public_id}", data={
        "name": "Mifflin County EMS", "short_code": "MCE", "levels": ["BLS", "ALS", "CCT"],
        "service_area": "Mifflin County", "base_lat": "40.6", "base_lon": "-77.6",
        "service_radius_km": "60", "phone": "717-555-0100"})
    deliver()
    profile = scalar(app, sa.select(EmsAgency).where(EmsAgency.agency_id == mifflin.id))
    assert (profile.levels, profile.active) == ("BLS,ALS,CCT", False)
    assert len(audit_rows(app, "registry.created")) == 3
    assert "Mifflin County EMS" in client.get("/center/registry").data.decode()

    duplicate = client.post("/center/registry/agencies/new", data={
        "name": "Another", "short_code": "AEMS", "levels": ["BLS"], "service_radius_km": "50"})
    assert duplicate.status_code == 400 and b"Another agency already has this short code." in duplicate.data
    no_levels = client.post("/center/registry/agencies/new", data={
        "name": "Another", "short_code": "ANO", "service_radius_km": "50"})
    assert no_levels.status_code == 400
    assert agency(app, "ANO") is None


# --- users ---------------------------------------------------------------------------------

def test_admin_creates_a_user_who_must_change_the_temporary_password(client, auth, demo, app, deliver):
    auth.login(ADMIN)
    response = client.post("/center/users/new", data={
        "email": "Charge.Nurse@Altoona.medport.test", "display_name": "Dana Charge", "role": "hospital",
        "hospital": hospital(app, "ALT").id, "agency": ""})
    assert response.status_code == 201, re.findall(r"error\">([^<]*)", response.data.decode())
    password = re.search(r"<code>([a-z0-9-]{14})</code>", response.data.decode()).group(1)
    created = scalar(app, sa.select(User).where(User.email == "charge.nurse@altoona.medport.test"))
    assert created.must_change_password and created.role == "hospital"
    (entry,) = audit_rows(app, "user.created", created.public_id)
    assert entry.user_email == ADMIN and "password_hash" not in entry.after and password not in str(entry.after)
    deliver()
    assert scalar(app, sa.select(HospitalUser).where(HospitalUser.user_id == created.id)).display_name == "Dana Charge"

    auth.logout()
    login = auth.login("charge.nurse@altoona.medport.test", password)
    assert login.headers["Location"] == "/account/password"


FORGED = [
    ({"role": "superuser"}, b"Not a valid choice"),
    ({"role": "hospital", "hospital": ""}, b"Hospital staff must belong to a hospital."),
    ({"role": "ems", "agency": "1", "hospital": "1"}, b"An EMS user belongs to no hospital"),
    ({"role": "hospital", "hospital": "9999"}, b"Not a valid choice"),
    ({"role": "ems", "agency": "abc"}, b"Invalid Choice"),
    ({"role": "coordinator", "agency": "2"}, b"Center users belong to no hospital or agency"),
]


def test_forged_roles_and_bindings_are_refused(client, auth, demo, app):
    auth.login(ADMIN)
    form = {"email": "forged@medport.test", "display_name": "Forged", "hospital": "", "agency": ""}
    for data, message in FORGED:
        response = client.post("/center/users/new", data=dict(form, **data))
        assert response.status_code == 400, data
        assert message in response.data, data
    nurse = scalar(app, sa.select(User).where(User.email == NURSE))
    page = client.get(f"/center/users/{nurse.public_id}").data.decode()
    assert f'<option selected value="{nurse.hospital_id}">' in page
    edit = client.post(f"/center/users/{nurse.public_id}", data=dict(
        form, email=NURSE, display_name=nurse.display_name, role="ems", agency="", active="y"))
    assert edit.status_code == 400 and b"An EMS user must belong to an agency." in edit.data
    assert scalar(app, sa.select(User.id).where(User.email == "forged@medport.test")) is None
    assert scalar(app, sa.select(User.role).where(User.id == nurse.id)) == "hospital"
    assert audit_rows(app, "user.created") == audit_rows(app, "user.updated") == []


def test_nobody_raises_their_own_role_and_the_last_admin_stays(client, auth, demo, app):
    admin = scalar(app, sa.select(User).where(User.email == ADMIN))
    form = {"email": ADMIN, "display_name": admin.display_name, "hospital": "", "agency": ""}
    auth.login(ADMIN)
    demote = client.post(f"/center/users/{admin.public_id}", data=dict(form, role="coordinator", active="y"))
    assert demote.status_code == 409 and b"last active administrator" in demote.data
    itself = client.post(f"/center/users/{admin.public_id}", data=dict(form, role="admin"))
    assert itself.status_code == 409 and b"cannot deactivate your own account" in itself.data
    assert scalar(app, sa.select(User.role).where(User.id == admin.id)) == "admin"

    with app.app_context():
        coordinator = db.session.scalar(sa.select(User).where(User.email == COORDINATOR))
        actor = users.Actor(coordinator.id, coordinator.email, "127.0.0.1")
        with pytest.raises(users.UserRefused) as refused:
            users.update(actor, coordinator, coordinator.email, coordinator.display_name, "admin",
                         None, None, True)
        assert refused.value.status == 403
        db.session.rollback()
        second = db.session.scalar(sa.select(User).where(User.email == COORDINATOR))
        users.update(users.Actor(admin.id, ADMIN, None), second, second.email, second.display_name,
                     "admin", None, None, True)
        db.session.commit()
    # With a second administrator, the first may step down.
    stepped = client.post(f"/center/users/{admin.public_id}", data=dict(form, role="coordinator", active="y"))
    assert stepped.status_code == 302
    assert scalar(app, sa.select(User.role).where(User.id == admin.id)) == "coordinator"
    (entry,) = audit_rows(app, "user.updated", admin.public_id)
    assert entry.before == {"role": "admin"} and entry.after == {"role": "coordinator"}


def test_password_reset_forces_a_change_and_ends_the_old_session(app, auth, demo, deliver):
    nurse_client = app.test_client()
    nurse_client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD})
    assert nurse_client.get("/hospital/").status_code == 200
    nurse = scalar(app, sa.select(User).where(User.email == NURSE))

    auth.login(ADMIN)
    admin_client = auth._client
    response = admin_client.post(f"/center/users/{nurse.public_id}/reset-password")
    assert response.status_code == 200
    password = re.search(r"<code>([a-z0-9-]{14})</code>", response.data.decode()).group(1)
    after = scalar(app, sa.select(User).where(User.id == nurse.id))
    assert after.must_change_password and after.session_epoch == nurse.session_epoch + 1
    (entry,) = audit_rows(app, "user.password_reset", nurse.public_id)
    assert "password_hash" not in (entry.after or {}) and entry.after == {"must_change_password": True}

    ended = nurse_client.get("/hospital/")
    assert ended.status_code == 302 and "/login" in ended.headers["Location"]
    assert nurse_client.post("/login", data={"email": NURSE, "password": DEMO_PASSWORD}).status_code == 401
    login = nurse_client.post("/login", data={"email": NURSE, "password": password})
    assert login.headers["Location"] == "/account/password"
    assert nurse_client.get("/hospital/").headers["Location"] == "/account/password"


def test_deactivation_ends_sessions_and_is_audited(app, auth, demo, deliver):
    dispatcher_client = app.test_client()
    dispatcher_client.post("/login", data={"email": DISPATCH, "password": DEMO_PASSWORD})
    dispatcher = scalar(app, sa.select(User).where(User.email == DISPATCH))
    auth.login(ADMIN)
    response = auth._client.post(f"/center/users/{dispatcher.public_id}", data={
        "email": DISPATCH, "display_name": dispatcher.display_name, "role": "ems",
        "hospital": "", "agency": dispatcher.agency_id, "org_admin": "y"})  # the demo's agency admin
    assert response.status_code == 302
    after = scalar(app, sa.select(User).where(User.id == dispatcher.id))
    assert not after.active and after.session_epoch == dispatcher.session_epoch + 1
    assert dispatcher_client.get("/ems/").status_code == 302
    (entry,) = audit_rows(app, "user.deactivated", dispatcher.public_id)
    assert entry.before == {"active": True} and entry.after == {"active": False}
    assert scalar(app, sa.select(sa.func.count(CenterOutboxEvent.id)).where(
        CenterOutboxEvent.type == "user.updated")) == 1


# --- configuration -------------------------------------------------------------------------

def test_configuration_is_validated_and_each_change_audited(client, auth, demo, app):
    auth.login(ADMIN)
    page = client.get("/center/config").data.decode()
    assert 'name="risk_no_bids_minutes"' in page and "First qualifying bid" in page
    values = {"bid_deadline_default_minutes": "30", "risk_no_bids_minutes": "10",
              "risk_pickup_window_minutes": "15", "auto_award_policy": "off", "board_recent_hours": "24",
              "booking_horizon_days": "90", "bidding_lead_hours_bls": "48", "bidding_lead_hours_als": "48",
              "bidding_lead_hours_cct": "72", "series_generate_days": "14",
              "alert_closing_minutes": "10", "escalation_ladder": "admin@10"}
    for key, bad in [("risk_no_bids_minutes", "0"), ("bid_deadline_default_minutes", "9999"),
                     ("risk_pickup_window_minutes", "ten"), ("auto_award_policy", "lottery"),
                     ("escalation_ladder", "admin@30, admin@10"), ("alert_closing_minutes", "0")]:
        response = client.post("/center/config", data=dict(values, **{key: bad}))
        assert response.status_code == 400, key
    assert b"Enter a value from 1 to 240." in client.post(
        "/center/config", data=dict(values, risk_no_bids_minutes="0", risk_pickup_window_minutes="20")).data
    assert audit_rows(app, "config.changed") == []
    assert scalar(app, sa.select(SystemConfiguration.value).where(
        SystemConfiguration.key == "risk_pickup_window_minutes")) == 15

    response = client.post("/center/config", data=dict(values, risk_no_bids_minutes="20",
                                                       auto_award_policy="first_qualifying"))
    assert response.status_code == 302
    entries = {e.entity_id: e for e in audit_rows(app, "config.changed")}
    assert set(entries) == {"risk_no_bids_minutes", "auto_award_policy"}
    assert entries["risk_no_bids_minutes"].before == {"risk_no_bids_minutes": 10}
    assert entries["risk_no_bids_minutes"].after == {"risk_no_bids_minutes": 20}
    assert entries["auto_award_policy"].user_email == ADMIN
    (event,) = scalars(app, sa.select(CenterOutboxEvent).where(CenterOutboxEvent.type == "config.changed"))
    assert event.payload["changed"]["auto_award_policy"] == ["off", "first_qualifying"]
    with app.app_context():
        assert oversight.board(oversight.BoardFilters())["settings"]["risk_no_bids_minutes"] == 20


# --- audit log -----------------------------------------------------------------------------

def test_audit_log_filters_pages_and_exports(client, auth, demo, app):
    with app.app_context():
        for i in range(60):
            db.session.add(AuditLog(action="login.failed", user_email=f"someone{i % 3}@medport.test",
                                    ip="10.0.0.9", detail="wrong email or password"))
        db.session.add(AuditLog(action="user.updated", user_email=ADMIN, entity_type="user",
                                entity_id="abc", before={"role": "ems"}, after={"role": "=cmd()"},
                                detail='=HYPERLINK("http://example.invalid")'))
        db.session.commit()
    auth.login(COORDINATOR)
    first = client.get("/center/audit?action=login.failed").data.decode()
    assert first.count("<tr>") == 51  # header + 50 entries
    older = re.search(r'href="(/center/audit\?[^"]*after=[A-Za-z0-9_-]+[^"]*)">Next page', first).group(1).replace("&amp;", "&")
    assert "action=login.failed" in older
    second = client.get(older).data.decode()
    assert second.count("<tr>") == 1 + 10 and "Newest" in second

    by_user = client.get("/center/audit?user=someone1@").data.decode()
    assert by_user.count("<tr>") == 1 + 20
    entity = client.get("/center/audit?entity_type=user&entity_id=abc").data.decode()
    assert entity.count("<tr>") == 2 and "=cmd()" in entity
    local_now = utcnow() + timedelta(days=2)
    future = client.get(f"/center/audit?since={local_now:%Y-%m-%dT%H:%M}").data.decode()
    assert "No entries match." in future
    assert client.get("/center/audit?since=2026-01-02T00:00&until=2026-01-01T00:00").status_code == 400

    export = client.get("/center/audit/export.csv?user=someone1@")
    assert export.mimetype == "text/csv" and "attachment" in export.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(export.data.decode("utf-8-sig"))))
    assert len(rows) == 20 and {r["user_email"] for r in rows} == {"someone1@medport.test"}
    assert [int(r["id"]) for r in rows] == sorted((int(r["id"]) for r in rows), reverse=True)
    (risky,) = csv.DictReader(io.StringIO(client.get("/center/audit/export.csv?entity_id=abc").data.decode("utf-8-sig")))
    assert risky["after"].startswith("{") and risky["detail"].startswith("'=")  # never a live formula
    (login,) = csv.DictReader(io.StringIO(client.get(
        f"/center/audit/export.csv?action=login.success&user={COORDINATOR}").data.decode("utf-8-sig")))
    assert login["ip"] == "127.0.0.1" and login["time_local"]
    # No route edits or deletes audit rows.
    for method in ("post", "put", "delete"):
        assert getattr(client, method)("/center/audit").status_code == 405


# --- silo health ---------------------------------------------------------------------------

def test_health_page_counts_pending_and_parked_events(client, auth, demo, app):
    post_trip(app)  # one pending hospital event (trip.posted), not delivered
    with app.app_context():
        db.session.add(HospitalOutboxEvent(type="trip.changed", entity_type="trip", entity_id="t-parked",
                                           payload={}, status="parked", attempts=12,
                                           last_error="OperationalError: ems silo down"))
        db.session.commit()
    auth.login(COORDINATOR)
    html = client.get("/center/health").data.decode()
    assert 'hx-trigger="every 10s"' in html and html.count(">Up<") == 3
    hospital_row = row_of(html, "Hospital</th>")
    assert re.search(r'<td class="num">1</td>\s*<td class="num">1</td>', hospital_row)
    assert "t-parked" in html and "OperationalError: ems silo down" in html
    panel = client.get("/center/health/panel").data.decode()
    assert "<html" not in panel and "t-parked" in panel


def test_a_coordinator_retries_parked_events_from_the_health_page(client, auth, demo, app, deliver):
    deliver()
    with app.app_context():
        first, second = (HospitalOutboxEvent(type="trip.changed", entity_type="trip", entity_id=name, payload={},
                                             status="parked", attempts=15, last_error="OperationalError")
                         for name in ("t-one", "t-two"))
        db.session.add_all([first, second])
        db.session.commit()
        first_id, second_id = first.event_id, second.event_id

    def status(event_id):
        return scalar(app, sa.select(HospitalOutboxEvent.status).where(HospitalOutboxEvent.event_id == event_id))

    auth.login(NURSE)
    assert client.post("/center/health/parked/retry", data={"silo": "hospital", "event": first_id}).status_code == 403
    auth.login(COORDINATOR)
    html = client.get("/center/health").data.decode()
    assert f'name="event" value="{first_id}"' in html and "Retry every parked event" in html
    for bad in ({"silo": "nowhere"}, {"event": first_id}, {"silo": "hospital", "event": "x" * 37}):
        assert client.post("/center/health/parked/retry", data=bad).status_code == 400, bad
    assert status(first_id) == status(second_id) == "parked"

    done = client.post("/center/health/parked/retry", data={"silo": "hospital", "event": first_id},
                       follow_redirects=True)
    assert done.status_code == 200 and "1 parked event queued for delivery again." in done.data.decode()
    assert (status(first_id), status(second_id)) == ("pending", "parked")
    again = client.post("/center/health/parked/retry", data={"silo": "hospital", "event": first_id})
    assert again.status_code == 404  # no longer parked
    assert client.post("/center/health/parked/retry", data={}).status_code == 302  # every silo
    assert status(second_id) == "pending"
    entries = audit_rows(app, "relay.parked_retried")
    assert [(e.user_email, e.after["events"]) for e in entries] == [(COORDINATOR, 1), (COORDINATOR, 1)]


def test_health_page_shows_a_silo_that_is_down(app, demo, migrated_config, tmp_path):
    config = dict(migrated_config)
    url = config["SQLALCHEMY_BINDS"]["ems"]["url"]
    broken = (f"sqlite:///{tmp_path}/no/such/dir/ems.sqlite3" if url.startswith("sqlite")
              else url.rsplit("/", 1)[0] + "/medport_no_such_database")
    config["SQLALCHEMY_BINDS"] = dict(config["SQLALCHEMY_BINDS"], ems={"url": broken})
    degraded = create_app(config)
    client = degraded.test_client()
    client.post("/login", data={"email": ADMIN, "password": DEMO_PASSWORD})
    response = client.get("/center/health")
    assert response.status_code == 200
    html = response.data.decode()
    assert row_of(html, "EMS</th>").count("Down") == 1 and html.count(">Up<") == 2
    with degraded.app_context():
        for engine in db.engines.values():
            engine.dispose()
