"""Every action of every role with each silo's database stopped for real (PostgreSQL).

The page matrix (``tests/test_silo_matrix.py``) reads; this one writes.  Each action is
prepared while every silo is up (its request, bid, unit or window exists), then taken once
with one silo stopped.  ``WORKS`` says which actions go through (a redirect or a page) with
each silo down; every other action must answer 503 naming the silo that is down, and nothing
may answer anything else.  Once the silo is back the relay drains every outbox to zero and
each action that went through left its audit entry in the center.
"""
from datetime import timedelta

import pytest
import sqlalchemy as sa

from dashboard.events.outbox import Actor
from dashboard.events.relay import Relay
from dashboard.extensions import db
from dashboard.models.base import utcnow
from dashboard.models.center import Agency
from dashboard.models.ems import TransportBid, Unit, UnitAvailability
from dashboard.models.hospital import HospitalAgencyPreference, TransportRequest
from dashboard.models.outbox import OUTBOX_BY_SILO
from dashboard.services import trips
from dashboard.services.deadlines import bid_for_award
from tests.helpers import edit_form, signed_in, silo_stopped, valid_form

NURSE = "nurse@altoona.medport.test"
DISPATCHER = "dispatch@altoonaems.medport.test"
COORDINATOR = "coordinator@medport.test"
ADMIN = "admin@medport.test"
LABELS = {"center": "Center", "hospital": "Hospital", "ems": "EMS"}

HOSPITAL_ACTIONS = ("post", "edit", "cancel", "award", "preference add", "preference notes",
                    "preference move", "preference remove")
EMS_ACTIONS = ("bid", "change bid", "withdraw bid", "advance", "hand back", "unit add", "unit status",
               "unit edit", "window add", "window remove")
CENTER_ACTIONS = ("center extend", "center assign", "center award", "center cancel", "user add",
                  "configuration")

#: silo down -> the actions that go through; every other action answers 503 naming the silo.
WORKS = {
    "center": {"post", "edit", "cancel", "award", "preference notes", "preference move", "preference remove",
               "bid", "change bid", "withdraw bid", "advance", "hand back", "unit add", "unit status",
               "unit edit", "window add", "window remove", "center extend", "center award", "center cancel"},
    "hospital": {"advance", "hand back", "unit add", "unit status", "unit edit", "window add", "window remove",
                 "user add", "configuration"},
    "ems": {"post", "edit", "cancel", "preference add", "preference notes", "preference move",
            "preference remove", "center extend", "center cancel", "user add", "configuration"},
}


@pytest.fixture
def postgres(backend):
    if backend != "postgres":
        pytest.skip("stopping a silo's database is done on PostgreSQL")


def _new_units(app, count):
    with app.app_context():
        agency_id = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
        units = [Unit(agency_id=agency_id, number=f"MX-{i:02d}", level="ALS", status="available")
                 for i in range(count)]
        db.session.add_all(units)
        db.session.commit()
        return [unit.public_id for unit in units]


def _post(nurse, app, letter):
    response = nurse.post("/hospital/requests/new", data=valid_form(app, patient_ref="P-" + letter * 6,
                                                                     bid_deadline_minutes="60"))
    assert response.status_code == 302, response.get_data(as_text=True)
    return response.headers["Location"].rsplit("/", 1)[1]


def _bid(dispatcher, trip, unit):
    response = dispatcher.post(f"/ems/requests/{trip}/bid", data={"unit": unit, "eta_minutes": "15", "note": ""})
    assert response.status_code == 302, response.get_data(as_text=True)


def _live_bid(app, trip_public):
    with app.app_context():
        trip = trips.get_by_public_id(trip_public)
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.trip_id == trip.id,
                                                              TransportBid.status == "live"))
        return bid.public_id, trip.version


def _award(app, trip_public):
    with app.app_context():
        trip = trips.get_by_public_id(trip_public)
        bid = db.session.scalar(sa.select(TransportBid).where(TransportBid.trip_id == trip.id,
                                                              TransportBid.status == "live"))
        trips.award(trip, bid_for_award(bid), actor=Actor(None, None, "Charge Nurse"))
        db.session.commit()


def _prepare(app, deliver):
    """Everything the actions act on, made while every silo is up."""
    nurse, dispatcher = signed_in(app, NURSE), signed_in(app, DISPATCHER)
    coordinator, admin = signed_in(app, COORDINATOR), signed_in(app, ADMIN)
    units = _new_units(app, 9)
    t = {name: _post(nurse, app, letter) for name, letter in (
        ("edit", "A"), ("cancel", "C"), ("award", "D"), ("bid", "E"), ("change", "F"), ("withdraw", "H"),
        ("drive", "J"), ("hand back", "K"), ("extend", "M"), ("assign", "N"), ("center award", "P"),
        ("center cancel", "R"))}
    deliver()
    for name, unit in (("award", 0), ("change", 1), ("withdraw", 2), ("drive", 3), ("hand back", 4),
                       ("center award", 5)):
        _bid(dispatcher, t[name], units[unit])
    deliver()
    _award(app, t["drive"])
    _award(app, t["hand back"])
    deliver()
    with app.app_context():
        hospital_id = trips.get_by_public_id(t["edit"]).hospital_id
        preferences = list(db.session.scalars(sa.select(HospitalAgencyPreference).where(
            HospitalAgencyPreference.hospital_id == hospital_id).order_by(HospitalAgencyPreference.rank)))
        listed = {p.agency_id for p in preferences}
        addable = db.session.scalar(sa.select(Agency.public_id).where(
            Agency.id.not_in(listed), Agency.active.is_(True)).order_by(Agency.id).limit(1))
        aems = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
        assign_unit = db.session.scalar(sa.select(Unit.id).where(Unit.public_id == units[6]))
        window = UnitAvailability(unit_id=assign_unit, kind="on_break",
                                  starts_at=utcnow() + timedelta(days=2), ends_at=utcnow() + timedelta(days=2, hours=1))
        db.session.add(window)
        db.session.commit()
        context = {
            "trips": t, "units": units, "preferences": [p.id for p in preferences], "addable": addable,
            "aems": aems, "assign_unit": assign_unit, "window": window.id,
            "versions": {name: trips.get_by_public_id(public).version for name, public in t.items()},
        }
    context["bids"] = {name: _live_bid(app, t[name])[0] for name in ("award", "change", "withdraw", "center award")}
    return {"hospital": nurse, "ems": dispatcher, "coordinator": coordinator, "admin": admin}, context


def _actions(app, c):
    """(role, action name, path, form data) of every action, on what ``_prepare`` made."""
    t, v, units = c["trips"], c["versions"], c["units"]
    day = (utcnow() + timedelta(days=3)).strftime("%Y-%m-%d")
    return [
        ("hospital", "post", "/hospital/requests/new", valid_form(app, patient_ref="P-TTTTTT")),
        ("hospital", "edit", f"/hospital/requests/{t['edit']}/edit",
         edit_form(app, notes="North entrance", version=str(v["edit"]))),
        ("hospital", "cancel", f"/hospital/requests/{t['cancel']}/cancel",
         {"reason": "not_needed", "note": "", "version": str(v["cancel"])}),
        ("hospital", "award", f"/hospital/requests/{t['award']}/award",
         {"bid": c["bids"]["award"], "version": str(v["award"])}),
        ("hospital", "preference add", "/hospital/preferences", {"agency": c["addable"], "notes": ""}),
        ("hospital", "preference notes", f"/hospital/preferences/{c['preferences'][0]}/notes",
         {"notes": "Call dispatch first"}),
        ("hospital", "preference move", f"/hospital/preferences/{c['preferences'][1]}/move", {"direction": "up"}),
        ("hospital", "preference remove", f"/hospital/preferences/{c['preferences'][-1]}/remove", {}),
        ("ems", "bid", f"/ems/requests/{t['bid']}/bid", {"unit": units[7], "eta_minutes": "20", "note": ""}),
        ("ems", "change bid", f"/ems/bids/{c['bids']['change']}/change",
         {"unit": units[1], "eta_minutes": "9", "note": "Closer now"}),
        ("ems", "withdraw bid", f"/ems/bids/{c['bids']['withdraw']}/withdraw", {}),
        ("ems", "advance", f"/ems/trips/{t['drive']}/advance", {"step": "en_route"}),
        ("ems", "hand back", f"/ems/trips/{t['hand back']}/hand-back", {"reason": "Unit broke down"}),
        ("ems", "unit add", "/ems/units", {"number": "MX-NEW", "level": "BLS", "base_station": "",
                                            "shift_start": "", "shift_end": ""}),
        ("ems", "unit status", f"/ems/units/{units[8]}/status", {"status": "on_break"}),
        ("ems", "unit edit", f"/ems/units/{units[8]}/edit", {"number": "MX-08B", "level": "ALS", "base_station": "",
                                                             "shift_start": "", "shift_end": ""}),
        ("ems", "window add", "/ems/availability", {"unit": units[7], "kind": "on_break",
                                                     "starts_at": f"{day}T10:00", "ends_at": f"{day}T10:30",
                                                     "note": ""}),
        ("ems", "window remove", "/ems/availability/remove", {"window_id": str(c["window"])}),
        ("coordinator", "center extend", f"/center/requests/{t['extend']}/extend",
         {"extend-minutes": "15", "extend-note": "", "extend-version": str(v["extend"])}),
        ("coordinator", "center assign", f"/center/requests/{t['assign']}/assign",
         {"assign-agency": str(c["aems"]), "assign-unit": str(c["assign_unit"]), "assign-eta_minutes": "25",
          "assign-reason": "No bids yet; AEMS agreed by phone", "assign-version": str(v["assign"])}),
        ("coordinator", "center award", f"/center/requests/{t['center award']}/award",
         {"bid": c["bids"]["center award"], "version": str(v["center award"])}),
        ("coordinator", "center cancel", f"/center/requests/{t['center cancel']}/cancel",
         {"cancel-reason": "not_needed", "cancel-note": "", "cancel-version": str(v["center cancel"])}),
        ("admin", "user add", "/center/users/new", {"email": "new.dispatcher@medport.test",
                                                    "display_name": "New Dispatcher", "role": "coordinator",
                                                    "hospital": "", "agency": ""}),
        ("admin", "configuration", "/center/config", {"bid_deadline_default_minutes": "45",
                                                      "risk_no_bids_minutes": "10", "risk_pickup_window_minutes": "15",
                                                      "auto_award_policy": "off", "board_recent_hours": "24",
                                                      "booking_horizon_days": "90", "bidding_lead_hours_bls": "48",
                                                      "bidding_lead_hours_als": "48", "bidding_lead_hours_cct": "72",
                                                      "series_generate_days": "14",
                                                      "alert_closing_minutes": "10",
                                                      "escalation_ladder": "admin@10"}),
    ]


def _run(clients, actions, silo):
    outcomes, wrong = {}, []
    for role, name, path, data in actions:
        response = clients[role].post(path, data=data)
        body = response.get_data(as_text=True)
        outcomes[name] = response.status_code
        works = silo is None or name in WORKS[silo]
        if works and response.status_code not in (200, 201, 302, 303):
            wrong.append((name, response.status_code, "expected to go through"))
        if not works and (response.status_code != 503
                          or f"{LABELS[silo]} data is temporarily unavailable" not in body):
            wrong.append((name, response.status_code, f"expected 503 naming {silo}"))
    return outcomes, wrong


def _backlog(app):
    with app.app_context():
        total = sum(db.session.scalar(sa.select(sa.func.count(m.id)).where(m.status != "delivered"))
                    for m in OUTBOX_BY_SILO.values())
        db.session.remove()
        return total


def test_every_action_goes_through_with_every_silo_up(postgres, app, demo, deliver):
    clients, context = _prepare(app, deliver)
    outcomes, wrong = _run(clients, _actions(app, context), None)
    assert wrong == [], outcomes
    assert set(outcomes) == set(HOSPITAL_ACTIONS + EMS_ACTIONS + CENTER_ACTIONS)


@pytest.mark.parametrize("silo", ["center", "hospital", "ems"])
def test_each_action_goes_through_or_names_the_silo_that_is_down(postgres, app, demo, deliver, silo):
    clients, context = _prepare(app, deliver)
    actions = _actions(app, context)
    with silo_stopped(app, silo):
        outcomes, wrong = _run(clients, actions, silo)
    assert wrong == [], sorted(outcomes.items())
    Relay(app).drain(now=utcnow() + timedelta(minutes=10))
    assert _backlog(app) == 0
    # What went through while the silo was down is there once it is back.
    with app.app_context():
        if "post" in WORKS[silo]:
            assert db.session.scalar(sa.select(TransportRequest.id).where(
                TransportRequest.patient_ref == "P-TTTTTT")) is not None
        if "advance" in WORKS[silo]:
            assert trips.get_by_public_id(context["trips"]["drive"]).status == "en_route"
        if "cancel" in WORKS[silo]:
            assert trips.get_by_public_id(context["trips"]["cancel"]).status == "cancelled"
        db.session.remove()
