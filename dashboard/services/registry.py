"""The center's registry of hospitals, their facilities and agencies, kept in step with the silos.

The center owns the registry rows (``Hospital``, ``Agency``).  What the other
silos keep of them travels as one ``registry.changed`` event per change: the
hospital silo applies facility changes (``HospitalFacility``), the EMS silo
applies agency changes (``EmsAgency``).  Facilities live in the hospital silo
only, so a facility edit at the center is an event (and an audit entry), never
a write to the hospital silo.  Nothing is deleted: deactivate instead.
Every change is audited here with its before/after values; nothing here commits.

Deactivating a hospital or an agency puts its users out: their ``session_epoch`` is
bumped in the same center transaction (every session ends, and the event's record
signals each user's live streams to end), and sign-in stays refused until the
organisation is reactivated.  The EMS silo withdraws a deactivated agency's live
bids when the event reaches it.
"""
import sqlalchemy as sa

from ..events.outbox import emit
from ..extensions import db
from ..models.base import new_public_id
from ..models.center import Agency, Hospital, User
from ..models.ems import EmsAgency
from ..models.hospital import HospitalFacility
from ..models.vocabulary import LEVELS
from . import audit
from .refusals import Refused

FACILITY_KINDS = {
    "hospital": "Hospital",
    "rehabilitation": "Rehabilitation",
    "dialysis": "Dialysis center",
    "nursing_home": "Nursing home",
    "specialty": "Specialty center",
    "oncology": "Oncology center",
    "other": "Other",
}
HOSPITAL_FIELDS = ("name", "short_code", "city", "region", "phone", "active")
AGENCY_FIELDS = ("name", "short_code", "levels", "service_area", "base_lat", "base_lon",
                 "service_radius_km", "phone", "active")
FACILITY_FIELDS = ("hospital_id", "name", "kind", "address", "city", "lat", "lon", "active")


class RegistryRefused(Refused):
    """A registry change the rules do not allow; ``field`` names the form field at fault."""

    def __init__(self, message, field=None, status=400):
        super().__init__(message, status, field)


def _snapshot(row, fields):
    return {name: getattr(row, name) for name in fields}


def hospital_values(hospital):
    return dict(_snapshot(hospital, HOSPITAL_FIELDS), hospital_id=hospital.id, public_id=hospital.public_id)


def agency_values(agency):
    return dict(_snapshot(agency, AGENCY_FIELDS), agency_id=agency.id, public_id=agency.public_id)


def facility_values(facility):
    return dict(_snapshot(facility, FACILITY_FIELDS), public_id=facility.public_id)


def _operation(before, after):
    if before is None:
        return "created"
    if before["active"] and not after["active"]:
        return "deactivated"
    if not before["active"] and after["active"]:
        return "reactivated"
    return "updated"


def _changed(before, after, fields):
    return [name for name in fields if before is None or before[name] != after[name]]


def _unique(model, row, column, value, field, label):
    query = sa.select(model.id).where(sa.func.lower(column) == value.lower())
    if row is not None and row.id is not None:
        query = query.where(model.id != row.id)
    if db.session.scalar(query.limit(1)) is not None:
        raise RegistryRefused(f"Another {label} already has this {field.replace('_', ' ')}.", field=field)


def end_sessions(column, organisation_id):
    """End every session of the organisation's users (one UPDATE); returns their user ids.

    ``column`` is ``User.hospital_id`` or ``User.agency_id``.  Bumping the epoch
    ends the sessions at their next request; the ids go in the event so the
    record signals each user's live streams.
    """
    user_ids = sorted(db.session.scalars(sa.select(User.id).where(column == organisation_id)))
    if user_ids:
        db.session.execute(
            sa.update(User).where(User.id.in_(user_ids))
            .values(session_epoch=User.session_epoch + 1).execution_options(synchronize_session=False))
    return user_ids


def _signed_out(user_ids):
    return f"{len(user_ids)} user{'' if len(user_ids) == 1 else 's'} signed out"


def _record(actor, op, entity_type, public_id, before, after, changed, detail=""):
    audit.record(f"registry.{op}", user_id=actor.user_id, user_email=actor.email, ip=actor.ip,
                 entity_type=entity_type, entity_id=public_id,
                 before=None if before is None else {k: before[k] for k in changed},
                 after={k: after[k] for k in changed}, detail=detail)


def save_hospital(actor, values, hospital=None, main_facility=None):
    """Create (``hospital=None``) or change a hospital; returns ``(hospital, changed fields)``.

    A new hospital's ``main_facility`` (address, lat, lon) becomes its first
    facility in the hospital silo, through the event.
    """
    values = dict(values, name=values["name"].strip(), short_code=values["short_code"].strip().upper())
    _unique(Hospital, hospital, Hospital.name, values["name"], "name", "hospital")
    _unique(Hospital, hospital, Hospital.short_code, values["short_code"], "short_code", "hospital")
    before = None if hospital is None else hospital_values(hospital)
    if hospital is None:
        hospital = Hospital()
        db.session.add(hospital)
    for name in HOSPITAL_FIELDS:
        setattr(hospital, name, values[name] if values[name] is not None else "")
    db.session.flush()
    after = hospital_values(hospital)
    changed = _changed(before, after, HOSPITAL_FIELDS)
    if not changed:
        return hospital, []
    op = _operation(before, after)
    payload = {"kind": "hospital", "op": op, "public_id": hospital.public_id,
               "hospital_id": hospital.id, "changed": changed, "hospital": after}
    detail = ""
    if op == "deactivated":
        payload["signed_out_user_ids"] = end_sessions(User.hospital_id, hospital.id)
        detail = _signed_out(payload["signed_out_user_ids"])
    if before is None and main_facility is not None:
        facility = {"public_id": new_public_id(), "hospital_id": hospital.id, "name": hospital.name,
                    "kind": "hospital", "address": main_facility["address"].strip(),
                    "city": hospital.city, "lat": main_facility.get("lat"),
                    "lon": main_facility.get("lon"), "active": True}
        payload["facility"] = facility
        detail = f"with main campus facility at {facility['address']}"
    _record(actor, op, "hospital", hospital.public_id, before, after, changed, detail)
    emit("center", "registry.changed", "registry", hospital.public_id, payload, actor=actor)
    return hospital, changed


def save_agency(actor, values, agency=None):
    """Create (``agency=None``) or change an agency; returns ``(agency, changed fields)``."""
    levels = [lv for lv in LEVELS if lv in (values.get("levels") or [])]
    if not levels:
        raise RegistryRefused("Choose at least one level of care.", field="levels")
    values = dict(values, name=values["name"].strip(), short_code=values["short_code"].strip().upper(),
                  levels=",".join(levels))
    _unique(Agency, agency, Agency.name, values["name"], "name", "agency")
    _unique(Agency, agency, Agency.short_code, values["short_code"], "short_code", "agency")
    before = None if agency is None else agency_values(agency)
    if agency is None:
        agency = Agency()
        db.session.add(agency)
    for name in AGENCY_FIELDS:
        value = values[name]
        if value is None and name in ("service_area", "phone"):
            value = ""
        setattr(agency, name, value)
    db.session.flush()
    after = agency_values(agency)
    changed = _changed(before, after, AGENCY_FIELDS)
    if not changed:
        return agency, []
    op = _operation(before, after)
    payload = {"kind": "agency", "op": op, "public_id": agency.public_id, "agency_id": agency.id,
               "changed": changed, "agency": after}
    detail = ""
    if op == "deactivated":
        payload["signed_out_user_ids"] = end_sessions(User.agency_id, agency.id)
        detail = _signed_out(payload["signed_out_user_ids"])
    _record(actor, op, "agency", agency.public_id, before, after, changed, detail)
    emit("center", "registry.changed", "registry", agency.public_id, payload, actor=actor)
    return agency, changed


def save_facility(actor, hospital, values, facility=None):
    """Create or change a facility of ``hospital``; returns ``(facility values, changed fields)``.

    ``facility`` is the hospital silo's row (read only).  The change travels as
    an event; the hospital silo applies it when the relay delivers it.
    """
    if facility is not None and facility.hospital_id != hospital.id:
        raise RegistryRefused("That facility belongs to another hospital.", status=404)
    before = None if facility is None else facility_values(facility)
    after = dict(before or {"public_id": new_public_id(), "hospital_id": hospital.id})
    for name in FACILITY_FIELDS:
        if name == "hospital_id":
            continue
        value = values[name]
        if isinstance(value, str):
            value = value.strip()
        after[name] = value if value is not None or name in ("lat", "lon") else ""
    if after["kind"] not in FACILITY_KINDS:
        raise RegistryRefused("Choose one of the listed kinds.", field="kind")
    changed = _changed(before, after, FACILITY_FIELDS)
    if not changed:
        return after, []
    op = _operation(before, after)
    _record(actor, op, "facility", after["public_id"], before, after, changed,
            detail=f"{hospital.short_code}: {after['name']}")
    emit("center", "registry.changed", "registry", after["public_id"],
         {"kind": "facility", "op": op, "public_id": after["public_id"], "hospital_id": hospital.id,
          "changed": changed, "facility": after}, actor=actor)
    return after, changed


def listing():
    """Hospitals with their facilities (hospital silo) and agencies with their EMS profile state."""
    hospitals = list(db.session.scalars(sa.select(Hospital).order_by(Hospital.name)))
    facilities = {}
    for facility in db.session.scalars(
            sa.select(HospitalFacility).order_by(HospitalFacility.hospital_id, HospitalFacility.name)):
        facilities.setdefault(facility.hospital_id, []).append(facility)
    agencies = list(db.session.scalars(sa.select(Agency).order_by(Agency.name)))
    profiles = {p.agency_id: p for p in db.session.scalars(sa.select(EmsAgency))}
    return {
        "hospitals": [(h, facilities.get(h.id, [])) for h in hospitals],
        "agencies": [(a, profile_in_step(a, profiles.get(a.id))) for a in agencies],
    }


def profile_in_step(agency, profile):
    """Whether the EMS silo's profile already shows the registry's current values."""
    return profile is not None and all(
        getattr(profile, name) == getattr(agency, name)
        for name in ("name", "levels", "base_lat", "base_lon", "service_radius_km", "active")
    )


def get_facility(public_id):
    return db.session.scalar(sa.select(HospitalFacility).where(HospitalFacility.public_id == public_id))


def get_hospital(public_id):
    """The registry's hospital ``public_id`` (a :class:`Hospital`), or None."""
    return db.session.scalar(sa.select(Hospital).where(Hospital.public_id == public_id))


def get_agency(public_id):
    """The registry's agency ``public_id`` (an :class:`Agency`), or None."""
    return db.session.scalar(sa.select(Agency).where(Agency.public_id == public_id))


def hospital_of(facility):
    """The registry's hospital a facility of the hospital silo belongs to, or None."""
    return db.session.get(Hospital, facility.hospital_id)


def organisation(kind, org_id):
    """The hospital (``kind`` "hospital") or agency ("agency") with row id ``org_id``, or None
    for another kind or no such row."""
    model = {"hospital": Hospital, "agency": Agency}.get(kind)
    return db.session.get(model, org_id) if model is not None else None


def organisations():
    """``(hospitals, agencies)`` of the registry, each a list ordered by name (active or not)."""
    return (db.session.scalars(sa.select(Hospital).order_by(Hospital.name)).all(),
            db.session.scalars(sa.select(Agency).order_by(Agency.name)).all())


def apply_facility(values):
    """Hospital silo: create or update the facility ``values`` describe (idempotent)."""
    facility = get_facility(values["public_id"])
    if facility is None:
        facility = HospitalFacility(public_id=values["public_id"], hospital_id=values["hospital_id"])
        db.session.add(facility)
    for name in FACILITY_FIELDS:
        if name != "hospital_id":
            setattr(facility, name, values[name])
    return facility


def apply_agency(values):
    """EMS silo: create or update the agency's operating profile (idempotent)."""
    profile = db.session.scalar(sa.select(EmsAgency).where(EmsAgency.agency_id == values["agency_id"]))
    if profile is None:
        profile = EmsAgency(agency_id=values["agency_id"], dispatch_phone=values.get("phone") or "")
        db.session.add(profile)
    for name in ("name", "levels", "base_lat", "base_lon", "service_radius_km", "active"):
        setattr(profile, name, values[name])
    return profile
