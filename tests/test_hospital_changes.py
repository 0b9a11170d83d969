"""Hospital staff changing a request: cancelling, editing and re-posting, and their refusals."""
import re
from datetime import timedelta

import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import AuditLog
from dashboard.models.ems import TransportBid
from dashboard.models.hospital import TransportRequest
from dashboard.models.outbox import HospitalOutboxEvent
from dashboard.services import trip_posting, trips
from tests.helpers import (
    JMH_NURSE,
    STALE,
    award_form,
    bid_on,
    counts,
    edit_form,
    facility_id,
    history_actions,
    hospital_id,
    hospital_outbox_types,
    load,
    load_fields,
    local_time,
    post_form,
    text,
    to_local_input,
    valid_form,
)

# --- cancelling ------------------------------------------------------------------------------

def test_cancel_open_and_awarded_requests(app, nurse, deliver):
    open_id = post_form(nurse, app)
    page = text(nurse.get(f"/hospital/requests/{open_id}/cancel"))
    assert 'name="version" type="hidden" value="1"' in page and "Transport no longer needed" in page
    response = nurse.post(f"/hospital/requests/{open_id}/cancel",
                          data={"reason": "patient_not_stable", "note": "", "version": "1"})
    assert response.status_code == 302
    trip = load(app, open_id)
    assert trip.status == "cancelled" and trip.cancel_reason == "patient_not_stable"
    assert hospital_outbox_types(app, open_id)[-1] == "trip.cancelled"
    assert history_actions(app, open_id) == ["posted", "cancelled"]

    awarded_id = post_form(nurse, app)
    bid_id = bid_on(app, awarded_id, "AEMS", 25)
    award_form(nurse, awarded_id, bid_id, 1)
    deliver()
    response = nurse.post(f"/hospital/requests/{awarded_id}/cancel",
                          data={"reason": "other", "note": "Family is driving", "version": "2"})
    assert response.status_code == 302
    trip = load(app, awarded_id)
    assert trip.status == "cancelled" and trip.cancel_note == "Family is driving"
    deliver()
    with app.app_context():
        assert db.session.scalar(sa.select(TransportBid.status).where(TransportBid.public_id == bid_id)) == "closed"
        assert db.session.scalar(sa.select(AuditLog).where(AuditLog.action == "trip.cancelled",
                                                           AuditLog.entity_id == awarded_id)) is not None


def test_cancel_refusals(app, nurse):
    public_id = post_form(nurse, app)
    before = counts(app)
    cases = [
        (dict(reason="other", note="", version="1"), 400, "Say why, when the reason is"),
        (dict(reason="other", note="   ", version="1"), 400, "Say why, when the reason is"),
        (dict(reason="bored", version="1"), 400, "Choose one of the listed reasons."),
        (dict(version="1"), 400, "Choose why the request is cancelled."),
        (dict(reason="not_needed", note="x" * 301, version="1"), 400, "Keep the details to 300 characters."),
        (dict(reason="not_needed", version="x"), 400, "This form was altered"),
        (dict(reason="not_needed"), 400, "This form is incomplete"),
        (dict(reason="not_needed", version="5"), 409, STALE),
    ]
    for data, status, message in cases:
        response = nurse.post(f"/hospital/requests/{public_id}/cancel", data=data)
        assert response.status_code == status and message in text(response), data
    assert counts(app) == before and load(app, public_id).status == "open"
    # A stale form re-renders with the current version, so a second, informed try works.
    assert nurse.post(f"/hospital/requests/{public_id}/cancel",
                      data={"reason": "not_needed", "version": "1"}).status_code == 302
    again = nurse.post(f"/hospital/requests/{public_id}/cancel", data={"reason": "not_needed", "version": "2"})
    assert again.status_code == 409 and "cannot be cancelled here" in text(again)
    with app.app_context():  # en route: too late to cancel here
        trip = trip_posting.post(hospital_id(app, "ALT"), "ALT", dict(load_fields(app)), actor=Actor(1, None, "Test"))
        db.session.commit()
        en_route_id = trip.public_id
    bid_id = bid_on(app, en_route_id, "AEMS", 20)
    award_form(nurse, en_route_id, bid_id, 1)
    with app.app_context():
        trip = trips.get_by_public_id(en_route_id)
        trips.apply_crew_step(trip, "en_route", utcnow(), trip.awarded_agency_id, actor=Actor(None, None, "Medic 11"))
        db.session.commit()
    response = nurse.post(f"/hospital/requests/{en_route_id}/cancel", data={"reason": "not_needed", "version": "3"})
    assert response.status_code == 409 and load(app, en_route_id).status == "en_route"


# --- editing ---------------------------------------------------------------------------------


def test_edit_an_open_request(app, nurse, deliver):
    public_id = post_form(nurse, app)
    page = text(nurse.get(f"/hospital/requests/{public_id}/edit"))
    assert 'value="Fall risk"' in page and 'name="version" type="hidden" value="1"' in page
    original = load(app, public_id)
    unchanged = nurse.post(f"/hospital/requests/{public_id}/edit",
                           data=edit_form(app, window_start=to_local_input(app, original.window_start),
                                          window_end=to_local_input(app, original.window_end)))
    assert unchanged.status_code == 302 and load(app, public_id).version == 1
    assert hospital_outbox_types(app, public_id) == ["trip.posted"]
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=edit_form(
        app, window_start=to_local_input(app, original.window_start), window_end=local_time(app, 480),
        notes="Bring the bariatric stretcher", mobility="bariatric_stretcher", iv_pump="y"))
    assert response.status_code == 302
    trip = load(app, public_id)
    assert trip.version == 2 and trip.notes == "Bring the bariatric stretcher" and trip.iv_pump
    assert trip.window_start == original.window_start and trip.window_end > original.window_end
    with app.app_context():
        event = db.session.scalar(sa.select(HospitalOutboxEvent).where(
            HospitalOutboxEvent.entity_id == public_id, HospitalOutboxEvent.type == "trip.changed"))
        assert sorted(event.payload["changed"]) == ["iv_pump", "mobility", "notes", "window_end"]
    assert history_actions(app, public_id) == ["posted", "changed"]
    deliver()
    assert "Changed: Latest pickup, Mobility, IV pump, Notes for the crew" in text(
        nurse.get(f"/hospital/requests/{public_id}/timeline"))
    # A window that has begun may be kept while other things change.
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id)
                           .values(window_start=utcnow().replace(second=0, microsecond=0) - timedelta(minutes=30)))
        db.session.commit()
    started = load(app, public_id)
    page = text(nurse.get(f"/hospital/requests/{public_id}/edit"))
    assert f'min="{to_local_input(app, started.window_start)}"' in page
    response = nurse.post(f"/hospital/requests/{public_id}/edit", data=edit_form(
        app, window_start=to_local_input(app, started.window_start),
        window_end=to_local_input(app, started.window_end), notes="Ready now", version="2"))
    assert response.status_code == 302 and load(app, public_id).notes == "Ready now"


def test_edit_refusals(app, nurse):
    public_id = post_form(nurse, app)
    before = counts(app)
    cases = [
        (dict(window_end=local_time(app, 200)), 400, "The latest pickup must be after the earliest pickup."),
        (dict(window_start=local_time(app, -60)), 400, "The earliest pickup is in the past."),
        (dict(weight_kg="9000"), 400, "Enter a weight from 1 to 400 kg."),
        (dict(oxygen_lpm="nan"), 400, "Enter the oxygen flow as a number."),
        (dict(notes="x" * 501), 400, "Keep notes to 500 characters."),
        (dict(mobility="hover"), 400, "Choose one of the listed mobility options."),
        (dict(version="one"), 400, "This form was altered"),
        (dict(version="4", notes="Changed"), 409, STALE),
        (dict(version="4"), 409, STALE),  # stale even with nothing to change
    ]
    for overrides, status, message in cases:
        response = nurse.post(f"/hospital/requests/{public_id}/edit", data=edit_form(app, **overrides))
        assert response.status_code == status and message in text(response), overrides
    assert counts(app) == before and load(app, public_id).notes == "Daughter meets the crew"
    bid_id = bid_on(app, public_id, "AEMS", 20)
    award_form(nurse, public_id, bid_id, 1)
    before = counts(app)
    for method in ("get", "post"):
        response = getattr(nurse, method)(f"/hospital/requests/{public_id}/edit", data=edit_form(app, version="2"))
        assert response.status_code == 409 and "Only an open request can be edited" in text(response)
    assert counts(app) == before


# --- re-posting ------------------------------------------------------------------------------

def test_repost_a_cancelled_request(app, nurse):
    public_id = post_form(nurse, app, other_needs="Oxygen at destination")
    nurse.post(f"/hospital/requests/{public_id}/cancel", data={"reason": "no_availability", "version": "1"})
    old = load(app, public_id)
    form = text(nurse.get(f"/hospital/requests/new?repost={public_id}"))
    assert f"Re-post {old.reference} as a new request" in form
    assert 'value="4 West, room 412"' in form and "P-ACDEFH" in form and 'value="Oxygen at destination"' in form
    assert f'name="reposted_from" type="hidden" value="{public_id}"' in form
    assert re.search(r'id="window_start"[^>]*value="\d{4}-', form)  # still in the future: kept
    new_id = post_form(nurse, app, reposted_from=public_id, reposted_version="2")
    new = load(app, new_id)
    assert new.reposted_from_id == old.id and new.status == "open" and new.patient_ref == "P-ACDEFH"
    assert load(app, public_id).status == "cancelled"
    assert f"Re-post of</dt><dd><a href=\"/hospital/requests/{public_id}\">" in text(
        nurse.get(f"/hospital/requests/{new_id}"))


def test_repost_an_unfilled_request_replaces_it(app, nurse):
    public_id = post_form(nurse, app)
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id).values(
            bid_deadline=utcnow() - timedelta(minutes=5), window_start=utcnow() - timedelta(hours=1)))
        db.session.commit()
    form = text(nurse.get(f"/hospital/requests/new?repost={public_id}"))
    assert "The old pickup window has passed: enter a new one." in form
    assert re.search(r'id="window_start"[^>]*value=""', form)
    assert "Posting this cancels the unfilled" in form
    new_id = post_form(nurse, app, reposted_from=public_id, reposted_version="1")
    old = load(app, public_id)
    assert old.status == "cancelled" and old.cancel_reason == "other"
    assert load(app, new_id).reference in old.cancel_note


def test_repost_refusals(app, nurse, client):
    public_id = post_form(nurse, app)
    before = counts(app)
    response = nurse.get(f"/hospital/requests/new?repost={public_id}")
    assert response.status_code == 409 and "Only a cancelled or unfilled request can be re-posted." in text(response)
    response = nurse.post("/hospital/requests/new", data=valid_form(app, reposted_from=public_id,
                                                                     reposted_version="1"))
    assert response.status_code == 409
    assert nurse.get("/hospital/requests/new?repost=nope").status_code == 404
    with app.app_context():
        db.session.execute(sa.update(TransportRequest).where(TransportRequest.public_id == public_id)
                           .values(bid_deadline=utcnow() - timedelta(minutes=5)))
        db.session.commit()
    response = nurse.post("/hospital/requests/new", data=valid_form(app, reposted_from=public_id,
                                                                     reposted_version="zz"))
    assert response.status_code == 400 and "This form was altered" in text(response)
    stale = nurse.post("/hospital/requests/new", data=valid_form(app, reposted_from=public_id,
                                                                  reposted_version="7"))
    assert stale.status_code == 409 and STALE in text(stale)
    assert counts(app) == before and load(app, public_id).status == "open"
    # Another hospital's request cannot be the source, even through the hidden field.
    nurse.post("/logout")
    assert nurse.post("/login", data={"email": JMH_NURSE, "password": "medport-demo"}).status_code == 302
    assert nurse.get(f"/hospital/requests/new?repost={public_id}").status_code == 404
    johnstown = facility_id(app, "Johnstown Memorial Hospital")
    response = nurse.post("/hospital/requests/new", data=valid_form(
        app, origin_facility=johnstown, destination_facility=facility_id(app, "Tyrone Area Hospital"),
        reposted_from=public_id, reposted_version="1"))
    assert response.status_code == 404 and counts(app) == before
