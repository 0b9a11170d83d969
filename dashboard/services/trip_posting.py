"""Posting and editing a request (hospital silo): its references, its invitations and its level
of care checked against its needs (:mod:`.care_rules`), with an override and its reason.

Functions here write the hospital silo only and add the matching outbox event; the caller commits.
``actor`` (keyword, a :class:`dashboard.events.outbox.Actor`) is who acts: its ``user_id``
and ``label`` go on the request's timeline, its ``user_id`` and ``ip`` on the outbox event.
"""
import secrets
from datetime import timedelta

import sqlalchemy as sa

from ..events.outbox import emit
from ..extensions import db
from ..models.base import utcnow
from ..models.hospital import (
    FIELD_LABELS,
    HospitalAgencyPreference,
    TransportRequest,
    field_labels,
)
from ..models.vocabulary import LEVEL_RANK
from . import care_rules, center_reads, scheduling
from .trips import (
    PATIENT_REF_ALPHABET,
    REFERENCE_ATTEMPTS,
    STALE_MESSAGE,
    CareLevelRefused,
    TransitionRefused,
    active_agency_ids,
    compare_and_set,
    record_history,
    trip_payload,
    widen_invite_at,
)


def new_patient_ref():
    """A generated patient reference: no name, no date of birth, no record number."""
    return "P-" + "".join(secrets.choice(PATIENT_REF_ALPHABET) for _ in range(6))


def new_reference(hospital_code, now=None):
    """A human trip reference like ``ALT-261125-7KQ3``; unique by construction and index."""
    now = now or utcnow()
    return f"{hospital_code}-{now:%y%m%d}-" + "".join(
        secrets.choice(PATIENT_REF_ALPHABET) for _ in range(4)
    )


def preferred_agency_ids(hospital_id):
    """The hospital's preferred agencies (center registry ids), in the hospital's order."""
    return list(
        db.session.scalars(
            sa.select(HospitalAgencyPreference.agency_id)
            .where(HospitalAgencyPreference.hospital_id == hospital_id)
            .order_by(HospitalAgencyPreference.rank)
        )
    )


def _unused_reference(hospital_code, now):
    """A reference no trip has yet (a clash is rare, but it must not fail a posting)."""
    for _ in range(REFERENCE_ATTEMPTS):
        reference = new_reference(hospital_code, now)
        taken = db.session.scalar(
            sa.select(TransportRequest.id).where(TransportRequest.reference == reference)
        )
        if taken is None:
            return reference
    raise TransitionRefused("Could not allocate a request reference; please post again.", status=503)


def _care_override(level, needs, reason, kept=None):
    """``(reason, needs covered)`` to store for a request of ``level`` with ``needs`` (a
    mapping of request columns), by the table of :mod:`.care_rules`.

    ``reason`` is the override given now (free text, "" or None for none); ``kept`` is the
    request's stored ``(reason, covered needs)`` on an edit.  No need above the level: no
    override, ``(None, None)``.  Needs above it: the reason given, else the kept override
    when it already covers every one of them.  Raises :class:`CareLevelRefused` (400) when a
    need is above the level with no override covering it, and :class:`TransitionRefused`
    (400) for an unknown level or a reason longer than ``care_rules.OVERRIDE_REASON_MAX``.
    """
    if level not in LEVEL_RANK:
        raise TransitionRefused("Choose BLS, ALS or CCT.", status=400)
    reason = care_rules.clean_reason(reason)
    if len(reason) > care_rules.OVERRIDE_REASON_MAX:
        raise TransitionRefused(
            f"Keep the override reason to {care_rules.OVERRIDE_REASON_MAX} characters.", status=400)
    short = care_rules.shortfalls(level, needs)
    if not short:
        return None, None
    covered = ",".join(rule.need for rule in short)
    if reason:
        return reason, covered
    kept_reason, kept_needs = kept or (None, None)
    kept_needs = set((kept_needs or "").split(",")) if kept_reason else set()
    uncovered = [rule for rule in short if rule.need not in kept_needs]
    if not uncovered:
        return kept_reason, covered
    raise CareLevelRefused(
        " ".join(rule.message(level) for rule in uncovered)
        + f" Send it at {care_rules.required_level(needs)}, or override the level with a reason; "
        "nothing was saved.", uncovered)


def _record_care_override(trip, actor, at=None):
    """The timeline line and the audited event of a request's override set, changed or ended."""
    if trip.care_override_reason:
        rules = care_rules.override_rules(trip)
        note = (f"Level of care override: {care_rules.summary(trip.level_of_care, rules)}. "
                f"Reason: {trip.care_override_reason}")
        detail = {"level_of_care": trip.level_of_care, "needs": [rule.need for rule in rules],
                  "reason": trip.care_override_reason}
    else:
        note, detail = f"Level of care override ended: {trip.level_of_care} covers every need", None
    record_history(trip, "care_override", trip.status, trip.status, actor.user_id, actor.label, note,
                   detail=detail, at=at)
    emit("hospital", "trip.care_override", "trip", trip.public_id,
         dict(trip_payload(trip), care_override=detail), actor=actor)


def post(hospital_id, hospital_code, fields, care_override=None, *, actor):
    """Create an ``open`` trip from validated ``fields`` and emit ``trip.posted``.

    Invitations to preferred agencies need a preferred list: posting one with
    an empty list is refused (nobody could bid).  Agencies deactivated in the
    center's registry are not invited.  A pickup booked ahead (past its level of care's
    lead time) is posted *upcoming*: bidding opens at the lead time before pickup and
    ``fields["bid_deadline"]`` (counted from now) counts from then (:func:`scheduling.plan`).
    A need above the level of care (the table of :mod:`.care_rules`) needs ``care_override``,
    the nurse's reason: it is kept on the trip, written to its timeline and audited
    (``trip.care_override``).  Raises :class:`TransitionRefused`: 403 when the hospital
    itself is deactivated, 400 when no preferred agency is active, when the pickup lies past
    the booking horizon or when bidding would close after the latest pickup;
    :class:`CareLevelRefused` (400) for a need above the level without a reason.
    """
    now = utcnow()
    booking, problem = scheduling.plan(fields, now)
    if problem:
        raise TransitionRefused(problem, status=400)
    hospital = center_reads.registry_names()[0].get(hospital_id)
    if hospital is not None and not hospital.active:
        raise TransitionRefused(
            f"{hospital.name} is deactivated in MedPort's registry, so it cannot post requests. "
            "Ask the transport center.", status=403)
    preferred = active_agency_ids(preferred_agency_ids(hospital_id))
    if fields.get("invite_mode", "all") != "all" and not preferred:
        raise TransitionRefused(
            "Your hospital has no active preferred agencies, so no agency could bid. Add preferred "
            "agencies first or invite all agencies.",
            status=400,
        )
    override_reason, override_needs = _care_override(fields.get("level_of_care"), fields, care_override)
    trip = TransportRequest(
        hospital_id=hospital_id,
        reference=_unused_reference(hospital_code, now),
        status="open",
        created_by_user_id=actor.user_id,
        created_at=now,
        updated_at=now,
        invited_agency_ids="," + ",".join(str(a) for a in preferred) + ",",
        care_override_reason=override_reason,
        care_override_needs=override_needs,
        **(fields | booking),
    )
    if not trip.patient_ref:
        trip.patient_ref = new_patient_ref()
    trip.widen_invite_at = widen_invite_at(trip)
    db.session.add(trip)
    db.session.flush()
    record_history(trip, "posted", None, "open", actor.user_id, actor.label, at=now)
    emit("hospital", "trip.posted", "trip", trip.public_id, trip_payload(trip), actor=actor)
    if override_reason:
        _record_care_override(trip, actor, at=now)
    return trip


def _field_order(name):
    """Where a field comes in the "Changed: ..." line: the forms' order (:data:`FIELD_LABELS`)."""
    order = list(FIELD_LABELS)
    return (order.index(name) if name in FIELD_LABELS else len(order), name)


def edit(trip, changes, expected_version=None, care_override=None, *, actor):
    """Change an open trip's window, needs or notes; emit ``trip.changed``.

    A stale ``expected_version`` is refused even when nothing would change.  The needs are
    checked against the level of care as on posting (:func:`_care_override`): a need above
    the level needs ``care_override`` (a reason), or the trip's override already covering it;
    an override no longer needed ends.  A new, changed or ended override is written to the
    timeline and audited (``trip.care_override``).  Raises :class:`TransitionRefused` (409
    not open or stale) and :class:`CareLevelRefused` (400).
    """
    if trip.status != "open":
        raise TransitionRefused("Only an open request can be edited.")
    if expected_version is not None and expected_version != trip.version:
        raise TransitionRefused(STALE_MESSAGE)
    merged = {key: changes.get(key, getattr(trip, key)) for key in ("level_of_care", *care_rules.RULES_BY_NEED)}
    reason, needs = _care_override(merged["level_of_care"], merged, care_override,
                                   kept=(trip.care_override_reason, trip.care_override_needs))
    changes = dict(changes, care_override_reason=reason, care_override_needs=needs)
    before = {key: getattr(trip, key) for key in changes}
    changed = {k: v for k, v in changes.items() if before[k] != v}
    if not changed:
        return trip, {}
    values = dict(changed)
    if "window_start" in changed:  # an upcoming request's opening follows its pickup
        values.update(scheduling.replan(trip, changed["window_start"]))
        if "bidding_opens_at" in values and trip.invite_mode == "preferred_then_all":
            values["widen_invite_at"] = values["bidding_opens_at"] + timedelta(
                minutes=trip.invite_all_after_minutes or 0)
    if {"invite_mode", "invite_all_after_minutes"} & set(changed):
        values["widen_invite_at"] = widen_invite_at(trip, changes.get("invite_mode", trip.invite_mode),
                                                    changes.get("invite_all_after_minutes",
                                                                trip.invite_all_after_minutes))
    compare_and_set(trip, "open", values, expected_version)
    note = "Changed: " + ", ".join(field_labels(sorted(changed, key=_field_order)))
    record_history(trip, "changed", "open", "open", actor.user_id, actor.label, note,
                   detail={k: [str(before[k]), str(v)] for k, v in changed.items()})
    emit("hospital", "trip.changed", "trip", trip.public_id,
         dict(trip_payload(trip), changed=sorted(changed)), actor=actor)
    if {"care_override_reason", "care_override_needs"} & set(changed):
        _record_care_override(trip, actor)
    return trip, changed
