"""A hospital's ordered list of preferred agencies: read, add, remove, move, notes.

The list lives in the hospital silo (center registry agency ids, ranked 1..n); a posting
invites the list as it is then (:func:`trip_posting.preferred_agency_ids`).  Every change adds a
``preference.*`` outbox event (the hospital silo's record of it), which the relay audits in
the center like the silo's other changes.  Refusals raise :class:`PreferenceRefused`.
Nothing here commits.
"""
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..events.outbox import emit
from ..extensions import db
from ..models.base import row_id
from ..models.center import Agency
from ..models.hospital import HospitalAgencyPreference
from . import center_reads
from .refusals import Refused

#: Which way an entry may move on the list.
DIRECTIONS = ("up", "down")


class PreferenceRefused(Refused):
    """A change the list does not take (409 an agency already listed, 400 a bad direction)."""


def rows(hospital_id):
    """The hospital's preferred agencies (:class:`HospitalAgencyPreference`), in rank order."""
    return list(db.session.scalars(
        sa.select(HospitalAgencyPreference).where(HospitalAgencyPreference.hospital_id == hospital_id)
        .order_by(HospitalAgencyPreference.rank, HospitalAgencyPreference.id)
    ))


def get_for_hospital(pref_id, hospital_id):
    """One entry of the hospital's list, or None (absent, not a row id, or another hospital's)."""
    pref = db.session.get(HospitalAgencyPreference, pref_id) if row_id(pref_id) else None
    if pref is None or pref.hospital_id != hospital_id:
        return None
    return pref


def agencies_of(entries):
    """The center registry's agencies of ``entries``: ``{agency id: Agency}``."""
    ids = [entry.agency_id for entry in entries]
    if not ids:
        return {}
    return {a.id: a for a in db.session.scalars(sa.select(Agency).where(Agency.id.in_(ids)))}


def addable_agencies(hospital_id):
    """The center's active agencies not on the hospital's list yet, by name."""
    listed = set(db.session.scalars(sa.select(HospitalAgencyPreference.agency_id).where(
        HospitalAgencyPreference.hospital_id == hospital_id)))
    return [a for a in db.session.scalars(sa.select(Agency).where(Agency.active.is_(True)).order_by(Agency.name))
            if a.id not in listed]


def _record(type_, pref, actor, **extra):
    """The outbox event of one change: the entry (its agency by id and registry name), and the
    list's order after it (agency ids)."""
    order = [entry.agency_id for entry in rows(pref.hospital_id)]
    agency = center_reads.registry_names()[1].get(pref.agency_id)
    payload = dict(preference_id=pref.id, hospital_id=pref.hospital_id, agency_id=pref.agency_id,
                   agency_name=agency.name if agency else None, rank=pref.rank, notes=pref.notes,
                   order=order, **extra)
    emit("hospital", type_, "preference", pref.id, payload, actor=actor)


def _renumber(entries):
    """Ranks 1..n in list order."""
    for rank, entry in enumerate(entries, start=1):
        if entry.rank != rank:
            entry.rank = rank


def add(hospital_id, agency, notes, actor):
    """Put ``agency`` (a center :class:`Agency`) at the end of the list; emits ``preference.added``.

    Returns the new entry.  Raises :class:`PreferenceRefused` (409) when the agency is on the
    list already (also when another page added it at the same moment)."""
    refused = PreferenceRefused(f"{agency.name} is already on your list.")
    if db.session.scalar(sa.select(HospitalAgencyPreference.id).where(
            HospitalAgencyPreference.hospital_id == hospital_id,
            HospitalAgencyPreference.agency_id == agency.id)) is not None:
        raise refused
    last = db.session.scalar(sa.select(sa.func.max(HospitalAgencyPreference.rank))
                             .where(HospitalAgencyPreference.hospital_id == hospital_id)) or 0
    pref = HospitalAgencyPreference(hospital_id=hospital_id, agency_id=agency.id, rank=last + 1,
                                    notes=notes or "")
    db.session.add(pref)
    try:
        db.session.flush()
    except IntegrityError:  # the caller's rollback (on the refusal) clears the failed flush
        raise refused from None
    _record("preference.added", pref, actor)
    return pref


def remove(pref, actor):
    """Take the entry off its list, the others closing ranks; emits ``preference.removed``."""
    db.session.delete(pref)
    db.session.flush()
    _renumber(rows(pref.hospital_id))
    db.session.flush()
    _record("preference.removed", pref, actor)
    return pref


def move(pref, direction, actor):
    """Move the entry one place ``"up"`` or ``"down"``; emits ``preference.moved`` when it moved.

    Returns True when the list changed (the first cannot go up, the last not down).  Raises
    :class:`PreferenceRefused` (400) for another direction."""
    if direction not in DIRECTIONS:
        raise PreferenceRefused("Move an agency up or down the list.", status=400)
    entries = rows(pref.hospital_id)
    at = entries.index(pref)
    to = at - 1 if direction == "up" else at + 1
    moved = 0 <= to < len(entries)
    if moved:
        entries[at], entries[to] = entries[to], entries[at]
    _renumber(entries)
    if not moved:
        return False
    db.session.flush()
    _record("preference.moved", pref, actor, direction=direction)
    return True


def set_notes(pref, notes, actor):
    """Change the entry's notes; emits ``preference.changed`` when they changed.

    Returns True when they changed."""
    notes = notes or ""
    if pref.notes == notes:
        return False
    before = pref.notes
    pref.notes = notes
    db.session.flush()
    _record("preference.changed", pref, actor, notes_before=before)
    return True
