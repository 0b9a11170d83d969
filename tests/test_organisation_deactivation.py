"""A hospital or an agency deactivated in the center's registry: its users are out, its agency
cannot bid and its live bids are withdrawn, its awarded trips are flagged for reassignment,
its hospital cannot post; reactivation lets its users sign in again."""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.center import Agency, AuditLog, Hospital, User
from dashboard.models.ems import EmsAgency, TransportBid
from dashboard.services import bidding, configuration, deadlines, oversight, trips
from dashboard.services.oversight import BoardFilters
from tests.conftest import DEMO_PASSWORD
from tests.helpers import Stream, award_agency, bid, bids_of, new_unit, post_request, signed_in, trip_row

ADMIN = "admin@medport.test"
COORDINATOR = "coordinator@medport.test"
NURSE = "nurse@altoona.medport.test"
AEMS = "dispatch@altoonaems.medport.test"
CMT = "dispatch@cambriamedical.medport.test"


def _agency_form(row, active):
    form = {"name": row.name, "short_code": row.short_code, "levels": row.level_list,
            "service_area": row.service_area, "base_lat": row.base_lat, "base_lon": row.base_lon,
            "service_radius_km": row.service_radius_km, "phone": row.phone}
    if active:
        form["active"] = "y"
    return form


def set_agency_active(app, admin, code, active):
    """Deactivate (or reactivate) the agency through the registry page, as an admin would."""
    with app.app_context():
        row = db.session.scalar(sa.select(Agency).where(Agency.short_code == code))
        public_id, form = row.public_id, _agency_form(row, active)
    response = admin.post(f"/center/registry/agencies/{public_id}", data=form)
    assert response.status_code == 302, response.data
    return response


def set_hospital_active(app, admin, code, active):
    with app.app_context():
        row = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == code))
        public_id = row.public_id
        form = {"name": row.name, "short_code": row.short_code, "city": row.city,
                "region": row.region, "phone": row.phone}
    if active:
        form["active"] = "y"
    response = admin.post(f"/center/registry/hospitals/{public_id}", data=form)
    assert response.status_code == 302, response.data
    return response


def sign_in(app, email):
    client = app.test_client()
    return client, client.post("/login", data={"email": email, "password": DEMO_PASSWORD})


def agency_id(app, code):
    with app.app_context():
        return db.session.scalar(sa.select(Agency.id).where(Agency.short_code == code))


# --- users out -------------------------------------------------------------------------------

def test_a_deactivated_agencys_dispatchers_are_signed_out_and_refused_until_reactivated(app, demo):
    admin, dispatcher, other = signed_in(app, ADMIN), signed_in(app, AEMS), signed_in(app, CMT)
    assert dispatcher.get("/ems/").status_code == 200
    with app.app_context():
        epoch = db.session.scalar(sa.select(User.session_epoch).where(User.email == AEMS))
    response = set_agency_active(app, admin, "AEMS", False)
    assert "its users are signed out" in admin.get(response.headers["Location"]).data.decode()
    with app.app_context():
        assert db.session.scalar(sa.select(User.session_epoch).where(User.email == AEMS)) == epoch + 1
        (entry,) = db.session.scalars(sa.select(AuditLog).where(AuditLog.action == "registry.deactivated"))
        assert entry.detail.endswith("signed out")

    page = dispatcher.get("/ems/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    panel = dispatcher.get("/ems/board/panel", headers={"HX-Request": "true"})
    assert panel.status_code == 401 and panel.headers["HX-Redirect"].startswith("/login")
    assert dispatcher.get("/events").status_code == 401
    assert other.get("/ems/").status_code == 200  # another agency's dispatcher stays in

    _client, refused = sign_in(app, AEMS)
    assert refused.status_code == 403
    assert "Altoona EMS is deactivated" in refused.data.decode()

    set_agency_active(app, admin, "AEMS", True)
    client, accepted = sign_in(app, AEMS)
    assert accepted.status_code == 302
    assert client.get("/ems/").status_code == 200


def test_a_deactivated_hospitals_staff_are_signed_out_and_it_cannot_post(app, demo):
    admin, nurse = signed_in(app, ADMIN), signed_in(app, NURSE)
    set_hospital_active(app, admin, "ALT", False)
    page = nurse.get("/hospital/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login")
    _client, refused = sign_in(app, NURSE)
    assert refused.status_code == 403 and "is deactivated" in refused.data.decode()

    # The service refuses too, whoever calls it.
    with pytest.raises(trips.TransitionRefused) as refusal:
        post_request(app)
    assert refusal.value.status == 403 and "cannot post requests" in refusal.value.message

    set_hospital_active(app, admin, "ALT", True)
    client, accepted = sign_in(app, NURSE)
    assert accepted.status_code == 302 and client.get("/hospital/").status_code == 200
    assert post_request(app)


def test_the_deactivation_ends_the_users_open_streams_once_the_relay_delivers(app, demo, deliver):
    # The user-scoped signal ends the stream, not the periodic session check.
    app.config.update(MEDPORT_STREAM_KEEPALIVE_SECONDS=30, MEDPORT_STREAM_SESSION_CHECK_SECONDS=3600)
    admin = signed_in(app, ADMIN)
    stream = Stream(signed_in(app, AEMS))
    try:
        stream.read()
        set_agency_active(app, admin, "AEMS", False)
        deliver()
        assert stream.read_until("event: session-ended\n", max_reads=3)
        stream.read()
        assert stream.ended
    finally:
        stream.close()


# --- bids ------------------------------------------------------------------------------------

def test_a_deactivated_agency_cannot_bid_and_its_live_bids_are_withdrawn(app, demo, deliver):
    trip_id, other_trip = post_request(app), post_request(app)
    deliver()
    dispatcher = signed_in(app, AEMS)
    new_unit(app, "AEMS", "AEMS-X1")
    new_unit(app, "CMT", "CMT-X1")
    assert bid(dispatcher, trip_id, "AEMS-X1").status_code == 302
    assert bid(signed_in(app, CMT), trip_id, "CMT-X1").status_code == 302
    deliver()
    assert trip_row(app, trip_id).bid_count == 2

    set_agency_active(app, signed_in(app, ADMIN), "AEMS", False)
    # Before the relay delivers: the registry already refuses the agency's bids.
    with app.app_context():
        trip = trips.get_by_public_id(other_trip)
        unit_id = db.session.scalar(sa.select(TransportBid.unit_id).where(TransportBid.status == "live")
                                    .where(TransportBid.agency_id == agency_id(app, "AEMS")))
        with pytest.raises(bidding.BidRefused) as refusal:
            bidding.place(trip, agency_id(app, "AEMS"), "Altoona EMS", ["BLS", "ALS", "CCT"], unit_id,
                          "15", "", actor=Actor(None))
        assert refusal.value.status == 403 and "deactivated" in refusal.value.message
        db.session.rollback()

    deliver()
    (withdrawn,) = bids_of(app, trip_id, "AEMS")
    (kept,) = bids_of(app, trip_id, "CMT")
    assert (withdrawn.status, kept.status) == ("withdrawn", "live")
    assert trip_row(app, trip_id).bid_count == 1  # the hospital's count followed
    with app.app_context():
        assert db.session.scalar(sa.select(EmsAgency.active).where(
            EmsAgency.agency_id == agency_id(app, "AEMS"))) is False
        # The EMS silo's own copy refuses as well, once delivered.
        with pytest.raises(bidding.BidRefused):
            bidding.check_agency_active(agency_id(app, "AEMS"))


def test_a_bid_that_crossed_the_deactivation_is_withdrawn_when_its_event_arrives(app, demo, deliver):
    trip_id = post_request(app)
    deliver()
    new_unit(app, "AEMS", "AEMS-X1")
    assert bid(signed_in(app, AEMS), trip_id, "AEMS-X1").status_code == 302
    # The agency's profile is already inactive in the EMS silo when the bid's event is delivered.
    with app.app_context():
        db.session.execute(sa.update(EmsAgency).where(EmsAgency.agency_id == agency_id(app, "AEMS"))
                           .values(active=False))
        db.session.commit()
    deliver()
    (withdrawn,) = bids_of(app, trip_id, "AEMS")
    assert withdrawn.status == "withdrawn"
    assert trip_row(app, trip_id).bid_count == 0


def test_a_deactivated_agencys_bid_cannot_be_awarded(app, demo, deliver):
    trip_id = post_request(app)
    deliver()
    new_unit(app, "AEMS", "AEMS-X1")
    assert bid(signed_in(app, AEMS), trip_id, "AEMS-X1").status_code == 302
    deliver()
    set_agency_active(app, signed_in(app, ADMIN), "AEMS", False)
    with pytest.raises(trips.AgencyDeactivated) as refusal:
        award_agency(app, trip_id, "AEMS")  # before the relay has withdrawn the bid
    assert refusal.value.status == 409 and "deactivated" in refusal.value.message
    assert trip_row(app, trip_id).status == "open"


# --- invitations and awarded trips -----------------------------------------------------------

def test_new_requests_do_not_invite_a_deactivated_agency(app, demo, deliver):
    preferred_before = trip_row(app, post_request(app, invite_mode="preferred")).invited_ids
    assert agency_id(app, "AEMS") in preferred_before
    set_agency_active(app, signed_in(app, ADMIN), "AEMS", False)
    invited = trip_row(app, post_request(app, invite_mode="preferred")).invited_ids
    assert invited == preferred_before - {agency_id(app, "AEMS")}
    with app.app_context():
        # Every preferred agency deactivated: a preferred-only invitation could reach nobody.
        db.session.execute(sa.update(Agency).where(Agency.id.in_(preferred_before)).values(active=False))
        db.session.commit()
    with pytest.raises(trips.TransitionRefused) as refusal:
        post_request(app, invite_mode="preferred")
    assert refusal.value.status == 400 and "no active preferred agencies" in refusal.value.message
    # The form offers no preferred agency then, as for a hospital without any.
    page = signed_in(app, NURSE).get("/hospital/requests/new").get_data(as_text=True)
    assert "Your hospital has no preferred agencies yet." in page


def test_a_deactivated_agencys_awarded_trips_are_flagged_for_reassignment(app, demo, deliver):
    trip_id = post_request(app)
    deliver()
    new_unit(app, "AEMS", "AEMS-X1")
    assert bid(signed_in(app, AEMS), trip_id, "AEMS-X1").status_code == 302
    deliver()
    award_agency(app, trip_id, "AEMS")
    deliver()

    def marks():
        with app.app_context():
            rows = oversight.board(BoardFilters(state="active"))["groups"]["active"]
            return {row.trip.public_id: [code for code, _label in row.marks] for row in rows}

    assert "reassign" not in marks()[trip_id]
    coordinator = signed_in(app, COORDINATOR)
    set_agency_active(app, signed_in(app, ADMIN), "AEMS", False)
    deliver()
    flagged = marks()
    assert "reassign" in flagged[trip_id]
    # Demo trips of the agency still under way are flagged too; other agencies' are not.
    with app.app_context():
        trips_by_agency = {t.public_id: t.awarded_agency_id for t in db.session.scalars(
            sa.select(trips.TransportRequest).where(trips.TransportRequest.status.in_(
                trips.ACTIVE_STATUSES)))}
    for public_id, codes in flagged.items():
        assert ("reassign" in codes) == (trips_by_agency[public_id] == agency_id(app, "AEMS"))
    panel = coordinator.get("/center/board/panel?state=active", headers={"HX-Request": "true"})
    assert "Altoona EMS deactivated: reassign" in panel.data.decode()
    # The bid stays accepted: the center decides (re-open or assign another unit).
    (accepted,) = bids_of(app, trip_id, "AEMS")
    assert accepted.status == "accepted"

    set_agency_active(app, signed_in(app, ADMIN), "AEMS", True)
    assert "reassign" not in marks()[trip_id]


def test_the_sweep_passes_over_a_deactivated_agencys_bid(app, demo, deliver):
    trip_id = post_request(app)  # ALT prefers AEMS, BCA, ACCT
    deliver()
    new_unit(app, "AEMS", "AEMS-X1")
    new_unit(app, "BCA", "BCA-X1")
    assert bid(signed_in(app, AEMS), trip_id, "AEMS-X1", eta="5").status_code == 302
    assert bid(signed_in(app, "dispatch@blaircounty.medport.test"), trip_id, "BCA-X1",
               eta="30").status_code == 302
    deliver()
    with app.app_context():
        configuration.set_value("auto_award_policy", "preferred_best_eta", None)
        # Deactivated at the center; the relay has not withdrawn the bid yet.
        db.session.execute(sa.update(Agency).where(Agency.short_code == "AEMS").values(active=False))
        db.session.commit()
        after = trips.get_by_public_id(trip_id).bid_deadline + timedelta(seconds=1)
        deadlines.sweep(now=after)
    trip = trip_row(app, trip_id)
    assert (trip.status, trip.awarded_agency_id) == ("awarded", agency_id(app, "BCA"))
