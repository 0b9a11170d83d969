"""Who may reach what: the access matrix (``ACCESS``), the small region it is checked on
(``build_world``, one per backend) and a snapshot of every silo's rows, to prove a refused
request changed nothing.
"""

import sqlalchemy as sa
from flask import url_for

from dashboard import create_app
from dashboard.events.outbox import Actor
from dashboard.extensions import db
from dashboard.models.center import Agency, Hospital, User
from dashboard.models.ems import EmsRoute, TransportBid, Unit, UnitAvailability
from dashboard.models.hospital import (
    HospitalAgencyPreference,
    HospitalFacility,
    TransportRequest,
    TransportSeries,
)
from dashboard.seed import demo as demo_service
from tests.conftest import _wipe
from tests.helpers.accounts import signed_in
from tests.helpers.trips import award, place_bid, post_trip

EMAILS = {
    "hospital_a": "nurse@altoona.medport.test",
    "hospital_b": "nurse@mountnittany.medport.test",
    "ems_x": "dispatch@altoonaems.medport.test",
    "ems_y": "dispatch@huntingdonrescue.medport.test",
    "crew_x": "crew@altoonaems.medport.test",
    "coordinator": "coordinator@medport.test",
    "admin": "admin@medport.test",
    "deactivated": "nurse@tyrone.medport.test",
}
#: The roles whose user is their organisation's administrator (``User.org_admin``); set (and
#: every other user's mark cleared) when the world is built.
ORG_ADMINS = {"hospital_a", "ems_x"}
#: Tables that change on reads or sign-ins, not on a refused action.
VOLATILE_TABLES = {"audit_logs", "user_sessions", "live_signals", "service_registry"}
#: endpoint -> who may use it.  The one table of this test.
ACCESS = {
    "static": "public",
    "health.healthz": "public",
    "auth.index": "public",
    "auth.login": "public",
    "auth.logout": "signed-in",
    "auth.change_password": "signed-in",
    "events.stream": "signed-in",
    # hospital staff
    "hospital.dashboard": "hospital",
    "hospital.requests_panel": "hospital",
    "hospital.request_detail": "hospital",
    "hospital.request_summary": "hospital",
    "hospital.bids_panel": "hospital",
    "hospital.timeline_panel": "hospital",
    "hospital.award": "hospital",
    "hospital.cancel_request": "hospital",
    "hospital.edit_request": "hospital",
    "hospital.new_request": "hospital",
    "hospital.preferences": "hospital",
    "hospital.remove_preference": "hospital",
    "hospital.move_preference": "hospital",
    "hospital.preference_notes": "hospital",
    "hospital.add_return": "hospital",
    "hospital.will_call": "hospital",
    "hospital.release": "hospital",
    "hospital.patient_ready": "hospital",
    "hospital.not_ready": "hospital",
    "series.index": "hospital",
    "series.new": "hospital",
    "series.detail": "hospital",
    "series.exception": "hospital",
    "series.change": "hospital",
    "series.cancel": "hospital",
    "analytics.hospital_view": "hospital",
    # EMS dispatchers and crews
    "ems.board": "ems",
    "ems.board_panel": "ems",
    "ems.upcoming_panel": "ems",
    "ems.request_detail": "ems",
    "ems.request_panel": "ems",
    "ems.place_bid": "ems",
    "ems.change_bid": "ems",
    "ems.withdraw_bid": "ems",
    "ems.place_pair_bid": "ems",
    "ems.my_trips": "ems",
    "ems.my_trips_panel": "ems",
    "ems.advance_trip": "ems",
    "ems.hand_back_trip": "ems",
    "ems.undo_step": "ems",
    "ems.trips_csv": "ems",
    "ems.units": "ems",
    "ems.units_panel": "ems",
    "ems.create_unit": "ems",
    "ems.edit_unit": "ems",
    "ems.unit_status": "ems",
    "ems.availability": "ems",
    "ems.add_availability": "ems",
    "ems.remove_availability": "ems",
    "ems.routes": "ems",
    "ems.history": "ems",
    "analytics.ems_view": "ems",
    # crews on a phone (crew_x staffs unit X for its shift)
    "crew.home": "crew",
    "crew.panel": "crew",
    "crew.start_shift": "crew",
    "crew.end_shift": "crew",
    "crew.tap": "crew",
    "crew.manifest": "public",
    "crew.service_worker": "public",
    # transport center: coordinators and administrators
    "center.board": "center",
    "center.board_panel": "center",
    "center.request_detail": "center",
    "center.request_panel": "center",
    "center.award": "center",
    "center.assign": "center",
    "center.extend": "center",
    "center.reopen": "center",
    "center.cancel": "center",
    "center.release": "center",
    "center.units": "center",
    "center.units_panel": "center",
    "center.audit": "center",
    "center.audit_export": "center",
    "center.health": "center",
    "center.health_panel": "center",
    "center.retry_parked": "center",
    "analytics.center_view": "center",
    # administrators only
    "center.registry": "admin",
    "center.hospital_new": "admin",
    "center.hospital_edit": "admin",
    "center.facility_new": "admin",
    "center.facility_edit": "admin",
    "center.agency_new": "admin",
    "center.agency_edit": "admin",
    "center.users": "admin",
    "center.user_new": "admin",
    "center.user_edit": "admin",
    "center.user_reset_password": "admin",
    "center.config": "admin",
    # alerts: every signed-in user's own but crews'; the organisations' defaults (admins); escalations (center)
    "alerts.index": "desk",
    "alerts.feed": "desk",
    "alerts.open_alert": "desk",
    "alerts.read_all": "desk",
    "alerts.settings": "desk",
    "alerts.reset_settings": "desk",
    "alerts.defaults_index": "admin",
    "alerts.defaults": "org-admin+admin",
    "alerts.own_defaults": "org-admin",
    "alerts.acknowledge": "center",
    "alerts.webhooks_index": "org-admin+admin",
    "alerts.remove_webhook": "org-admin+admin",
    "alerts.deliveries_index": "org-admin+center",
    "alerts.replay_delivery": "org-admin+center",
    # an agency administrator's crew accounts
    "ems.crew_accounts": "ems-admin",
    "ems.crew_account_active": "ems-admin",
    "ems.crew_account_reset_password": "ems-admin",
}


#: URL arguments, by name (and per endpoint where one name means different objects).
PARAMS = {
    "filename": "static_file",
    "public_id": "trip_a",
    "bid_public_id": "bid_x_live",
    "pref_id": "pref_a",
}
ENDPOINT_PARAMS = {
    "ems.withdraw_bid": {"bid_public_id": "bid_x_accepted"},
    "ems.advance_trip": {"public_id": "trip_x_awarded"},
    "ems.hand_back_trip": {"public_id": "trip_x_awarded"},
    "ems.undo_step": {"public_id": "trip_x_awarded"},
    "ems.edit_unit": {"public_id": "unit_x"},
    "ems.unit_status": {"public_id": "unit_x"},
    "center.hospital_edit": {"public_id": "hospital_a"},
    "center.facility_new": {"public_id": "hospital_a"},
    "center.facility_edit": {"public_id": "facility_a"},
    "center.agency_edit": {"public_id": "agency_x"},
    "center.user_edit": {"public_id": "user_a"},
    "center.user_reset_password": {"public_id": "user_a"},
    "series.detail": {"public_id": "series_a"},
    "hospital.release": {"public_id": "will_call_a"},
    "center.release": {"public_id": "will_call_a"},
    "series.exception": {"public_id": "series_a"},
    "series.change": {"public_id": "series_a"},
    "series.cancel": {"public_id": "series_a"},
    "alerts.defaults": {"kind": "org_kind", "org_id": "org_id"},
    "ems.crew_account_active": {"public_id": "crew_x_user"},
    "ems.crew_account_reset_password": {"public_id": "crew_x_user"},
}


class World:
    """The module's app, one signed-in client per role, and the ids the URLs use."""

    def __init__(self, app, ids, clients, markers):
        self.app, self.ids, self.clients, self.markers = app, ids, clients, markers

    def url(self, endpoint, rule):
        """The rule with its arguments filled from the demo's ids."""
        values = {}
        for name in rule.arguments:
            key = ENDPOINT_PARAMS.get(endpoint, {}).get(name) or PARAMS.get(name)
            assert key, f"{endpoint}: no demo value for URL argument {name!r}; add it to PARAMS"
            values[name] = self.ids[key]
        with self.app.test_request_context():
            return url_for(endpoint, **values)


def build_world(migrated_config, more_ids=None):
    """The demo region plus the scenario (and ``more_ids()``'s objects), delivered; a client
    per role, the deactivated one deactivated behind its session's back."""
    from dashboard.events.relay import Relay

    app = create_app(dict(migrated_config))
    _wipe(app)
    with app.app_context():
        demo_service.seed()
        created = _scenario()
        extra = more_ids() if more_ids else {}
    Relay(app).drain(max_passes=10)
    with app.app_context():
        ids = dict(_collect_ids(*created), **extra)
        markers = _markers(ids)
    clients = {"anonymous": app.test_client()}
    clients.update({role: signed_in(app, email) for role, email in EMAILS.items()})
    # The crew member staffs the unit X's awarded trip went to: the crew's pages show its trips.
    assert clients["crew_x"].post("/crew/shift", data={"unit": ids["unit_x_awarded"]}).status_code == 303
    with app.app_context():
        db.session.execute(sa.update(User).values(org_admin=User.email.in_(
            [EMAILS[role] for role in ORG_ADMINS])))
        # No epoch bump, no sign-out: the session itself must notice.
        db.session.execute(sa.update(User).where(User.email == EMAILS["deactivated"]).values(active=False))
        db.session.commit()
    return World(app, ids, clients, markers)


def close_world(world):
    """Release the module app's connections."""
    with world.app.app_context():
        db.session.remove()
        for engine in db.engines.values():
            engine.dispose()


def snapshot(app):
    """Every row of every silo (but the read-side and sign-in tables), to compare."""
    state = {}
    with app.app_context():
        for key, metadata in db.metadatas.items():
            with db.engines[key].connect() as conn:
                for table in metadata.sorted_tables:
                    if table.name not in VOLATILE_TABLES:
                        rows = conn.exec_driver_sql(f'SELECT * FROM "{table.name}" ORDER BY 1')
                        state[(key, table.name)] = rows.fetchall()
    return state


def _scenario():
    """Requests of hospital A that agency X bid on and won; returns the ids the URLs use."""
    trip_a = post_trip("ALT", level="ALS", invite_mode="preferred")  # invites AEMS, BCA, ACCT
    bid_x_live = place_bid(trip_a, "AEMS", 25)
    trip_x_awarded = post_trip("ALT", level="ALS", invite_mode="preferred")
    bid_x_accepted = place_bid(trip_x_awarded, "AEMS", 15)
    place_bid(trip_x_awarded, "ACCT", 30)
    award(trip_x_awarded, bid_x_accepted)
    trip_b = post_trip("MNV", level="BLS")
    bid_on_b = place_bid(trip_b, "CLL", 20)
    _series_of_a()
    return trip_a, bid_x_live, trip_x_awarded, bid_x_accepted, trip_b, bid_on_b


def _collect_ids(trip_a, bid_x_live, trip_x_awarded, bid_x_accepted, trip_b, bid_on_b):
    """Every id a URL or form of the tests names, by a short key."""

    def one(model, *conditions):
        return db.session.scalar(sa.select(model).where(*conditions).order_by(model.id).limit(1))

    alt = one(Hospital, Hospital.short_code == "ALT")
    mnv = one(Hospital, Hospital.short_code == "MNV")
    aems = one(Agency, Agency.short_code == "AEMS")
    hcr = one(Agency, Agency.short_code == "HCR")
    unit_x = one(Unit, Unit.agency_id == aems.id)
    unit_y = one(Unit, Unit.agency_id == hcr.id)
    window_x = one(UnitAvailability, UnitAvailability.unit_id == unit_x.id)
    return {
        "static_file": "medport.css",
        "trip_a": _public(TransportRequest, trip_a),
        "trip_x_awarded": _public(TransportRequest, trip_x_awarded),
        "trip_b": _public(TransportRequest, trip_b),
        "bid_x_live": _public(TransportBid, bid_x_live),
        "bid_x_accepted": _public(TransportBid, bid_x_accepted),
        "bid_on_b": _public(TransportBid, bid_on_b),
        "pref_a": one(HospitalAgencyPreference, HospitalAgencyPreference.hospital_id == alt.id).id,
        "unit_x": unit_x.public_id,
        "unit_x_awarded": db.session.get(Unit, db.session.get(TransportRequest, trip_x_awarded).awarded_unit_id)
        .public_id,
        "unit_y": unit_y.public_id,
        "window_x": window_x.id,
        "hospital_a": alt.public_id,
        "hospital_b": mnv.public_id,
        "facility_a": one(HospitalFacility, HospitalFacility.hospital_id == alt.id).public_id,
        "facility_b": one(HospitalFacility, HospitalFacility.hospital_id == mnv.id).public_id,
        "agency_x": aems.public_id,
        "agency_y": hcr.public_id,
        "user_a": one(User, User.email == EMAILS["hospital_a"]).public_id,
        "series_a": one(TransportSeries, TransportSeries.hospital_id == alt.id).public_id,
        "will_call_a": one(TransportRequest, TransportRequest.will_call.is_(True)).public_id,
        "crew_x_user": one(User, User.email == EMAILS["crew_x"]).public_id,
        "org_kind": "agency",
        "org_id": aems.id,
    }


def _markers(ids):
    """What hospital B and agency Y must never be shown: A's requests (ids and references),
    X's units and bids, and the trips X drives that Y never bid on."""
    alt = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "ALT"))
    aems = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "AEMS"))
    alt_trips = db.session.execute(sa.select(TransportRequest.public_id, TransportRequest.reference)
                                   .where(TransportRequest.hospital_id == alt)).all()
    aems_units = db.session.scalars(sa.select(Unit.public_id).where(Unit.agency_id == aems)).all()
    aems_bids = db.session.scalars(sa.select(TransportBid.public_id)
                                   .where(TransportBid.agency_id == aems)).all()
    hcr = db.session.scalar(sa.select(Agency.id).where(Agency.short_code == "HCR"))
    hcr_bid_on = sa.select(TransportBid.trip_id).where(TransportBid.agency_id == hcr)
    aems_trips = db.session.scalars(sa.select(EmsRoute.trip_reference).where(
        EmsRoute.agency_id == aems, EmsRoute.trip_id.not_in(hcr_bid_on))).all()
    crew_unit = db.session.scalar(sa.select(Unit.id).where(Unit.public_id == ids["unit_x_awarded"]))
    other_units_trips = db.session.scalars(sa.select(EmsRoute.trip_reference).where(
        EmsRoute.agency_id == aems, EmsRoute.unit_id != crew_unit)).all()
    return {"hospital_b": {value for row in alt_trips for value in row},
            "ems_y": set(aems_units) | set(aems_bids) | set(aems_trips),
            "crew_x": set(other_units_trips) | set(aems_bids)}


def _series_of_a():
    """A recurring series of hospital A (its pages name it)."""
    from datetime import time, timedelta

    from dashboard.localtime import local_today
    from dashboard.services import series as series_service

    alt = db.session.scalar(sa.select(Hospital).where(Hospital.short_code == "ALT"))
    facilities = db.session.scalars(sa.select(HospitalFacility.id).where(
        HospitalFacility.hospital_id == alt.id).order_by(HospitalFacility.id)).all()
    series_service.create(alt.id, alt.short_code, dict(
        frequency="weekly", interval=1, weekdays="0,2,4", pickup_time=time(6, 30), window_minutes=60,
        start_date=local_today() + timedelta(days=1), occurrence_count=12, origin_facility_id=facilities[0],
        pickup_location="Dialysis", destination_address="12 Home Street", level_of_care="BLS",
        mobility="wheelchair", age_group="adult", weight_kg=70, patient_ref=""), actor=Actor(1))
    db.session.commit()
    # A will-call return of A, its patient at a third hospital's facility (Juniata).
    from dashboard.services import returns

    jun = db.session.scalar(sa.select(Hospital.id).where(Hospital.short_code == "JVM"))
    outbound = db.session.get(TransportRequest, post_trip("ALT", level="BLS"))
    outbound.destination_facility_id = db.session.scalar(sa.select(HospitalFacility.id).where(
        HospitalFacility.hospital_id == jun).order_by(HospitalFacility.id).limit(1))
    db.session.flush()
    returns.add_return(outbound, "will_call", (None, None), 30, "ALT", actor=Actor(1, None, "Nurse"))
    db.session.commit()


def _public(model, row_id):
    """The public id of a row (what URLs show)."""
    return db.session.get(model, row_id).public_id
