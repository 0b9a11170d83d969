"""The trip lifecycle, owned by the hospital silo.  Every transition is checked here, once.

``open`` → ``awarded`` → ``en_route`` → ``at_pickup`` → ``transporting`` →
``at_destination`` → ``completed``; ``cancelled`` from ``open`` or ``awarded``; an
``open`` trip past its deadline is awaiting award while it holds a live bid, and unfilled
when it holds none (it stays ``open``; :func:`dashboard.models.base.dispatch_state` is the
rule).  ``unfilled_at`` keeps when a trip first went unfilled: an award, an extension or a
re-opening does not clear it.  Every change is a compare-and-set on the trip's ``version``,
so of two awards arriving at once exactly one wins and the other gets
:class:`TransitionRefused` with a clear message.

The crew's steps (:data:`CREW_STEPS`, taken in the EMS silo and applied here by the
relay) are ``en_route``, ``at_pickup``, ``transporting``, ``at_destination`` and
``back_in_service``.  "Back in service" is the last: the unit is free again and the trip
is ``completed`` (:data:`STEP_STATUS`); the patient was handed over at the destination,
and the trip keeps each step's time (``<step>_at``; ``completed_at`` is the back in
service time).  A crew may undo its last step within ``bidding.UNDO_WINDOW``: the trip
goes back one status (:data:`UNDO_TO`) and the step's time is cleared, with a history line.

Functions here write the hospital silo only and add the matching outbox event;
the caller commits.
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
    TransportRequestEvent,
    field_labels,
)
from ..models.vocabulary import ACTIVE_STATUSES, LEVEL_RANK, dispatch_state
from . import care_rules, center_reads, scheduling
from .refusals import Refused

#: from status -> statuses a trip may move to.
TRANSITIONS = {
    "open": {"awarded", "cancelled"},
    "awarded": {"en_route", "cancelled", "open"},
    "en_route": {"at_pickup", "open"},
    "at_pickup": {"transporting"},
    # ``completed`` straight from ``transporting``: a step reported before "at destination" existed.
    "transporting": {"at_destination", "completed"},
    "at_destination": {"completed"},
    "completed": set(),
    "cancelled": set(),
}
#: The crew's steps in order (the EMS silo's ``bidding.advance`` takes them one at a time).
CREW_STEPS = ("en_route", "at_pickup", "transporting", "at_destination", "back_in_service")
#: The status a crew step puts the trip (and the unit's stop) in: the step's own name but for
#: the last, "back in service", which completes the trip.
STEP_STATUS = {step: step for step in CREW_STEPS} | {"back_in_service": "completed"}
#: Crew steps by the status they lead to (``completed`` as reported before "back in service").
STATUS_STEP = {status: step for step, status in STEP_STATUS.items()}
#: A crew's last step undone: the status the trip goes back to.  Only the relay's
#: :func:`undo_crew_step` moves a trip backwards.
UNDO_TO = {"en_route": "awarded", "at_pickup": "en_route", "transporting": "at_pickup",
           "at_destination": "transporting", "completed": "at_destination"}
HAND_BACK_FROM = ("awarded", "en_route")
PATIENT_REF_ALPHABET = "ACDEFHJKMNPRTUVWXY3479"
PATIENT_REF_PATTERN = "^P-[" + PATIENT_REF_ALPHABET + "]{6}$"
REFERENCE_ATTEMPTS = 8
STALE_MESSAGE = (
    "This request changed while you were looking at it (another user or the center acted). "
    "Reload to see its current state; nothing was saved."
)


#: First key of the PostgreSQL advisory lock that makes bookings of one unit take turns.
UNIT_BOOKING_LOCK = 7301


class TransitionRefused(Refused):
    """An illegal or stale change; ``message`` is for the user, ``status`` for HTTP."""


class CareLevelRefused(TransitionRefused):
    """A request whose needs ask more than its level of care (:mod:`.care_rules`), without an
    override and its reason: 400.  ``rules`` are the broken rules of the table."""

    def __init__(self, message, rules=()):
        super().__init__(message, status=400)
        self.rules = tuple(rules)


class UnitBooked(TransitionRefused):
    """The unit is awarded another request of an overlapping window: award another bid instead."""


class AgencyDeactivated(UnitBooked):
    """The bid's agency is deactivated in the registry: award another bid instead."""


def active_agency_ids(agency_ids):
    """``agency_ids`` without those the center registry lists as deactivated, in their order.

    Read through :func:`dashboard.services.center_reads.registry_names`, so posting and
    awarding go on while the center is unreachable (with the registry as read last)."""
    if not agency_ids:
        return []
    agencies = center_reads.registry_names()[1]
    return [agency_id for agency_id in agency_ids
            if agency_id not in agencies or agencies[agency_id].active]


def new_patient_ref():
    """A generated patient reference: no name, no date of birth, no record number."""
    return "P-" + "".join(secrets.choice(PATIENT_REF_ALPHABET) for _ in range(6))


def new_reference(hospital_code, now=None):
    """A human trip reference like ``ALT-261125-7KQ3``; unique by construction and index."""
    now = now or utcnow()
    return f"{hospital_code}-{now:%y%m%d}-" + "".join(
        secrets.choice(PATIENT_REF_ALPHABET) for _ in range(4)
    )


def trip_payload(trip):
    """What other silos learn of a trip: operational facts, no patient reference."""
    return {
        "trip_id": trip.id,
        "public_id": trip.public_id,
        "reference": trip.reference,
        "hospital_id": trip.hospital_id,
        "status": trip.status,
        "level_of_care": trip.level_of_care,
        "urgency": trip.urgency,
        "invite_mode": trip.invite_mode,
        "invited_agency_ids": sorted(trip.invited_ids),
        "awarded_agency_id": trip.awarded_agency_id,
        "awarded_unit_id": trip.awarded_unit_id,
        "awarded_bid_id": trip.awarded_bid_id,
        "window_start": trip.window_start.isoformat(),
        "window_end": trip.window_end.isoformat(),
        "version": trip.version,
    }


def _history(trip, action, from_status, to_status, user_id, user_label, note="", detail=None, at=None):
    db.session.add(
        TransportRequestEvent(
            trip_id=trip.id, action=action, from_status=from_status, to_status=to_status,
            at=at or utcnow(), user_id=user_id, user_label=user_label or "", note=(note or "")[:300],
            detail=detail,
        )
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


def _record_care_override(trip, user_id, user_label, at=None):
    """The timeline line and the audited event of a request's override set, changed or ended."""
    if trip.care_override_reason:
        rules = care_rules.override_rules(trip)
        note = (f"Level of care override: {care_rules.summary(trip.level_of_care, rules)}. "
                f"Reason: {trip.care_override_reason}")
        detail = {"level_of_care": trip.level_of_care, "needs": [rule.need for rule in rules],
                  "reason": trip.care_override_reason}
    else:
        note, detail = f"Level of care override ended: {trip.level_of_care} covers every need", None
    _history(trip, "care_override", trip.status, trip.status, user_id, user_label, note,
             detail=detail, at=at)
    emit("hospital", "trip.care_override", "trip", trip.public_id,
         dict(trip_payload(trip), care_override=detail))


def post(hospital_id, hospital_code, fields, user_id, user_label, care_override=None):
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
        created_by_user_id=user_id,
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
    _history(trip, "posted", None, "open", user_id, user_label, at=now)
    emit("hospital", "trip.posted", "trip", trip.public_id, trip_payload(trip))
    if override_reason:
        _record_care_override(trip, user_id, user_label, at=now)
    return trip


def _compare_and_set(trip, expected_status, values, expected_version=None):
    """Apply ``values`` only if the trip is still in ``expected_status`` (and version).

    One UPDATE with the old state in its WHERE: of two racing writers, one
    matches and the other finds zero rows and is refused.
    """
    version = trip.version if expected_version is None else expected_version
    values = dict(values, version=version + 1, updated_at=utcnow())
    result = db.session.execute(
        sa.update(TransportRequest)
        .where(
            TransportRequest.id == trip.id,
            TransportRequest.status == expected_status,
            TransportRequest.version == version,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise TransitionRefused(STALE_MESSAGE)
    db.session.refresh(trip)


def _check(trip, to_status):
    if to_status not in TRANSITIONS.get(trip.status, set()):
        raise TransitionRefused(
            f"A request that is {trip.status.replace('_', ' ')} cannot become "
            f"{to_status.replace('_', ' ')}."
        )


def check_unit_free(trip, agency_id, unit_id, unit_number):
    """Refuse a unit this silo has already awarded another trip of an overlapping window.

    The EMS silo learns of an award (and books the unit's route) only when the
    relay delivers it, so an assignment that names its unit checks the awards
    themselves too.  On PostgreSQL a transaction-level advisory lock on the unit,
    held until the caller commits, makes two such bookings take turns: the second
    one reads the first one's award and is refused.
    """
    if db.session.get_bind(mapper=TransportRequest).dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(UNIT_BOOKING_LOCK, unit_id)),
                           bind_arguments={"mapper": TransportRequest})
    clash = db.session.scalar(sa.select(TransportRequest.reference).where(
        TransportRequest.awarded_agency_id == agency_id,
        TransportRequest.status.in_(ACTIVE_STATUSES),
        TransportRequest.awarded_unit_id == unit_id,
        TransportRequest.id != trip.id,
        TransportRequest.window_start < trip.window_end,
        TransportRequest.window_end > trip.window_start,
    ).limit(1))
    if clash is not None:
        raise UnitBooked(f"{unit_number} is already booked for {clash}, an overlapping pickup window.")


def award(trip, bid, user_id, user_label, source="hospital", note="", expected_version=None):
    """Award ``bid`` (a live EMS bid, read from the EMS silo) and emit ``trip.awarded``.

    ``bid`` is a mapping with ``id``, ``agency_id``, ``agency_name``, ``unit_id``,
    ``unit_label``, ``eta_minutes`` (or ``bid_id=None`` for a center assignment).
    """
    _check(trip, "awarded")
    if bid.get("trip_id") not in (None, trip.id):
        raise TransitionRefused("That bid belongs to another request.", status=400)
    if not active_agency_ids([bid["agency_id"]]):
        raise AgencyDeactivated(
            f"{bid['agency_name'] or 'This agency'} is deactivated in MedPort's registry; "
            "award another bid.")
    # A bid's unit was free when it bid, but the center may have assigned it to an
    # overlapping trip since (or be doing so now): bookings of one unit take turns here.
    check_unit_free(trip, bid["agency_id"], bid["unit_id"], bid["unit_label"])
    _compare_and_set(
        trip,
        "open",
        dict(
            status="awarded",
            awarded_bid_id=bid.get("id"),
            awarded_agency_id=bid["agency_id"],
            awarded_agency_name=bid["agency_name"],
            awarded_unit_id=bid["unit_id"],
            awarded_unit_label=bid["unit_label"],
            awarded_eta_minutes=bid["eta_minutes"],
            awarded_at=utcnow(),
            award_source=source,
            award_note=(note or "")[:300] or None,
            widen_invite_at=None,  # nothing left to announce; a reopening sets it again
        ),
        expected_version,
    )
    summary = f"{bid['agency_name']}, {bid['unit_label']}, ETA {bid['eta_minutes']} min"
    if source == "center":
        summary = "Center assignment: " + summary + (f". Reason: {note}" if note else "")
    elif source == "auto":
        summary = "Auto-award: " + summary
    _history(trip, "awarded", "open", "awarded", user_id, user_label, summary)
    payload = trip_payload(trip)
    payload.update(
        source=source,
        eta_minutes=bid["eta_minutes"],
        pickup_facility_id=trip.origin_facility_id,
        window_start=trip.window_start.isoformat(),
        window_end=trip.window_end.isoformat(),
    )
    emit("hospital", "trip.awarded", "trip", trip.public_id, payload)
    return trip


def cancel(trip, reason, note, user_id, user_label, expected_version=None):
    """Cancel an open or awarded trip with a reason; emit ``trip.cancelled``."""
    _check(trip, "cancelled")
    previous = trip.status
    _compare_and_set(
        trip, previous,
        dict(status="cancelled", cancel_reason=reason, cancel_note=(note or "")[:300] or None,
             cancelled_at=utcnow(), widen_invite_at=None),
        expected_version,
    )
    _history(trip, "cancelled", previous, "cancelled", user_id, user_label,
             note or reason.replace("_", " "))
    emit("hospital", "trip.cancelled", "trip", trip.public_id,
         dict(trip_payload(trip), reason=reason, previous_status=previous))
    return trip


def _field_order(name):
    """Where a field comes in the "Changed: ..." line: the forms' order (:data:`FIELD_LABELS`)."""
    order = list(FIELD_LABELS)
    return (order.index(name) if name in FIELD_LABELS else len(order), name)


def edit(trip, changes, user_id, user_label, expected_version=None, care_override=None):
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
    _compare_and_set(trip, "open", values, expected_version)
    note = "Changed: " + ", ".join(field_labels(sorted(changed, key=_field_order)))
    _history(trip, "changed", "open", "open", user_id, user_label, note,
             detail={k: [str(before[k]), str(v)] for k, v in changed.items()})
    emit("hospital", "trip.changed", "trip", trip.public_id,
         dict(trip_payload(trip), changed=sorted(changed)))
    if {"care_override_reason", "care_override_needs"} & set(changed):
        _record_care_override(trip, user_id, user_label)
    return trip, changed


def extend_deadline(trip, new_deadline, user_id, user_label, note=""):
    """Give an open trip more bidding time (``new_deadline``, naive UTC, in the future).

    Its ``unfilled_at``, if it went unfilled, is kept: that is history.  Raises
    :class:`TransitionRefused` (409 not open, 400 a deadline not in the future)."""
    if trip.status != "open":
        raise TransitionRefused("Only an open request's deadline can be extended.")
    if new_deadline <= utcnow():
        raise TransitionRefused("The new deadline must be in the future.", status=400)
    _compare_and_set(trip, "open", dict(bid_deadline=new_deadline))
    _history(trip, "deadline_extended", "open", "open", user_id, user_label,
             note or "Bidding deadline extended")
    emit("hospital", "trip.changed", "trip", trip.public_id,
         dict(trip_payload(trip), changed=["bid_deadline"]))
    return trip


def _reopen_values(trip, deadline_minutes):
    now = utcnow()
    widens = widen_invite_at(trip)
    return dict(
        status="open", awarded_bid_id=None, awarded_agency_id=None, awarded_agency_name=None,
        awarded_unit_id=None, awarded_unit_label=None, awarded_eta_minutes=None, awarded_at=None,
        award_source=None, award_note=None, en_route_at=None,
        bid_count=0, best_eta_minutes=None,  # a new round of bids: the earlier ones are over
        bid_deadline=now + timedelta(minutes=deadline_minutes),
        # Re-opened inside the preferred agencies' head start: its end is still to be
        # announced.  After it, the re-opening itself reaches every agency's board.
        widen_invite_at=widens if widens is not None and widens > now else None,
    )


def reopen(trip, user_id, user_label, reason, deadline_minutes, event_type="trip.reopened",
           action="reopened", expected_version=None):
    """Take an awarded (not yet picked up) trip back to ``open`` for new bids."""
    if trip.status not in HAND_BACK_FROM:
        raise TransitionRefused("Only a request that is awarded or en route (before pickup) can be re-opened.")
    previous = trip.status
    released = dict(agency_id=trip.awarded_agency_id, unit_id=trip.awarded_unit_id,
                    bid_id=trip.awarded_bid_id)
    values = _reopen_values(trip, deadline_minutes)
    if event_type == "trip.handed_back":
        values["handed_back_count"] = trip.handed_back_count + 1
    _compare_and_set(trip, previous, values, expected_version)
    _history(trip, action, previous, "open", user_id, user_label, reason)
    emit("hospital", event_type, "trip", trip.public_id,
         dict(trip_payload(trip), released=released, reason=reason, previous_status=previous))
    return trip


def apply_crew_step(trip, step, at, user_label, agency_id, unit_id=None):
    """Apply a crew's progress (reported through the EMS silo) to the trip.

    ``step`` is one of :data:`CREW_STEPS` (or ``completed``, as reported before "back in
    service" existed); ``at`` is when the crew took it (naive UTC), kept in ``<step>_at``
    (and ``completed_at`` for the last step).  Idempotent: a step already applied (or
    passed) is a no-op, and so is a late step of a unit the trip has since been taken
    from.  Returns True when applied; raises :class:`TransitionRefused` for a step the
    state machine does not allow from the trip's status.
    """
    if trip.awarded_agency_id != agency_id or unit_id not in (None, trip.awarded_unit_id):
        return False
    if step == "completed":
        step = "back_in_service"
    if step not in STEP_STATUS:
        raise TransitionRefused(f"{step!r} is not a crew step.", status=400)
    status = STEP_STATUS[step]
    order = ("awarded",) + tuple(STEP_STATUS[s] for s in CREW_STEPS)
    if trip.status not in order or order.index(trip.status) >= order.index(status):
        return False
    _check(trip, status)
    previous = trip.status
    values = {"status": status, f"{step}_at": at}
    if status == "completed":
        values["completed_at"] = at
    _compare_and_set(trip, previous, values)
    _history(trip, step, previous, status, None, user_label, at=at)
    emit("hospital", "trip.status_changed", "trip", trip.public_id,
         dict(trip_payload(trip), previous_status=previous))
    return True


def undo_crew_step(trip, step, at, user_label, agency_id, unit_id=None):
    """Take back a crew's last step (undone in the EMS silo) on the trip.

    The trip goes back to the status before ``step`` (:data:`UNDO_TO`), the step's time is
    cleared, and a ``step_undone`` history line says which step, by whom, at ``at`` (when it
    was undone, naive UTC).  A no-op (False) when the trip is not at that step: taken from the
    unit since, or the step never reached the hospital silo.  Returns True when applied.
    """
    if trip.awarded_agency_id != agency_id or unit_id not in (None, trip.awarded_unit_id):
        return False
    status = STEP_STATUS.get(step)
    if status is None or trip.status != status:
        return False
    previous = UNDO_TO[status]
    values = {"status": previous, f"{step}_at": None}
    if status == "completed":
        values["completed_at"] = None
    _compare_and_set(trip, status, values)
    _history(trip, "step_undone", status, previous, None, user_label,
             note=f"Undid {step.replace('_', ' ')}", detail={"step": step}, at=at)
    emit("hospital", "trip.status_changed", "trip", trip.public_id,
         dict(trip_payload(trip), previous_status=status, undone_step=step))
    return True


#: History actions the deadline timer writes, once per deadline and state.
DEADLINE_ACTIONS = ("unfilled", "awaiting_award")


def deadline_recorded(trip, action):
    """Whether the timer has written ``action`` (one of :data:`DEADLINE_ACTIONS`) since the
    trip's current bidding deadline (an extension or a re-opening sets a new one)."""
    return db.session.scalar(sa.select(sa.exists().where(
        TransportRequestEvent.trip_id == trip.id, TransportRequestEvent.action == action,
        TransportRequestEvent.at >= trip.bid_deadline)),
        bind_arguments={"mapper": TransportRequestEvent}) or False


def mark_unfilled(trip, now=None):
    """Flag an open trip past its deadline with no live bid as unfilled (it stays open for the
    center) and emit ``trip.unfilled``; once per deadline.  ``unfilled_at`` keeps the first
    time it went unfilled.  Returns False when the trip is not unfilled or already marked."""
    now = now or utcnow()
    if dispatch_state(trip, bool(trip.bid_count), now) != "unfilled" or deadline_recorded(trip, "unfilled"):
        return False
    _compare_and_set(trip, "open", dict(unfilled_at=trip.unfilled_at or now))
    _history(trip, "unfilled", "open", "open", None, "MedPort", "Bidding deadline passed unfilled", at=now)
    emit("hospital", "trip.unfilled", "trip", trip.public_id, trip_payload(trip))
    return True


def mark_awaiting_award(trip, now=None):
    """Tell the hospital and the center that an open trip's bidding closed with live bids: one of
    them awards one.  Writes the timeline entry and emits ``trip.awaiting_award``, once per
    deadline; the trip's ``version`` is left alone, so an award form already open still posts.
    Returns False when the trip is not awaiting award or was already announced."""
    now = now or utcnow()
    if dispatch_state(trip, bool(trip.bid_count), now) != "awaiting_award":
        return False
    # Two relays may sweep at once: the row lock (PostgreSQL) makes them take turns.
    db.session.execute(sa.select(TransportRequest.id).where(TransportRequest.id == trip.id)
                       .with_for_update())
    if deadline_recorded(trip, "awaiting_award"):
        return False
    bids = f"{trip.bid_count} live bid{'s' if trip.bid_count != 1 else ''}"
    _history(trip, "awaiting_award", "open", "open", None, "MedPort",
             f"Bidding closed with {bids}: award one", at=now)
    emit("hospital", "trip.awaiting_award", "trip", trip.public_id, trip_payload(trip))
    return True


def widen_invite_at(trip, invite_mode=None, after_minutes=None):
    """When a preferred-then-all invitation opens to every agency (None for other modes): the
    head start counts from when bidding opens (posting, or the opening of one booked ahead)."""
    invite_mode = invite_mode or trip.invite_mode
    if invite_mode != "preferred_then_all":
        return None
    if after_minutes is None:
        after_minutes = trip.invite_all_after_minutes
    return trip.bidding_start + timedelta(minutes=after_minutes or 0)


def announce_widened_invites(now=None, limit=200):
    """Tell every agency's board about the requests whose invitation has just widened.

    Each is announced once: the timer clears ``widen_invite_at`` with a conditional update
    (two relays racing announce it once) and emits ``trip.invite_widened`` in the same
    transaction.  The trip's version is left alone, so no open form goes stale.  The caller
    commits.  Returns how many were announced.
    """
    now = now or utcnow()
    due = list(db.session.scalars(
        sa.select(TransportRequest).where(TransportRequest.status == "open",
                                          TransportRequest.widen_invite_at <= now)
        .order_by(TransportRequest.widen_invite_at).limit(limit)))
    announced = 0
    for trip in due:
        claimed = db.session.execute(
            sa.update(TransportRequest)
            .where(TransportRequest.id == trip.id, TransportRequest.widen_invite_at.is_not(None),
                   TransportRequest.widen_invite_at <= now)
            .values(widen_invite_at=None).execution_options(synchronize_session=False)).rowcount
        if not claimed:
            continue
        _history(trip, "invite_widened", "open", "open", None, "MedPort",
                 "Opened to every agency after the preferred agencies' head start", at=now)
        emit("hospital", "trip.invite_widened", "trip", trip.public_id, trip_payload(trip))
        announced += 1
    return announced


#: The pickup window a released will-call return gets, by the urgency chosen at release (minutes).
RELEASE_WINDOW_MINUTES = {"emergent": 30, "urgent": 60, "routine": 120}


def release(trip, urgency, deadline_minutes, user_id, user_label, now=None):
    """Release a will-call return: the patient is ready, bidding opens at once.

    The pickup window runs from now for :data:`RELEASE_WINDOW_MINUTES` of ``urgency`` (chosen
    now), bidding closes ``deadline_minutes`` from now (never after the window's end), and the
    patient is recorded ready now.  Emits ``trip.released``.  Raises
    :class:`TransitionRefused`: 409 when the trip is not a will-call return still waiting
    (released already, cancelled), 400 for an unknown urgency.
    """
    now = now or utcnow()
    if urgency not in RELEASE_WINDOW_MINUTES:
        raise TransitionRefused("Choose routine, urgent or emergent.", status=400)
    if not trip.will_call_waiting:
        raise TransitionRefused("This return is not waiting for the patient (released already, or "
                                "not a will-call return).")
    end = now + timedelta(minutes=RELEASE_WINDOW_MINUTES[urgency])
    values = dict(released_at=now, released_by=(user_label or "")[:160], urgency=urgency,
                  window_start=now, window_end=end, patient_ready_at=now, bidding_opens_at=None,
                  bid_deadline=min(now + timedelta(minutes=deadline_minutes), end))
    if trip.invite_mode == "preferred_then_all":
        values["widen_invite_at"] = now + timedelta(minutes=trip.invite_all_after_minutes or 0)
    _compare_and_set(trip, "open", values)
    _history(trip, "released", "open", "open", user_id, user_label,
             f"Patient ready: bidding opened ({urgency})", at=now)
    emit("hospital", "trip.released", "trip", trip.public_id, trip_payload(trip))
    return trip


#: Where a patient's readiness may be marked: before the crew leaves the pickup with them.
READY_STATUSES = ("open", "awarded", "en_route", "at_pickup")


def mark_patient_ready(trip, user_id, user_label, now=None):
    """Record that the patient is ready for pickup (now).  A will-call return still waiting is
    released instead (:func:`release`, by the caller).  The trip's version is left alone (no
    open form goes stale).  Raises :class:`TransitionRefused` (409) for a will-call return still
    waiting (released with its urgency instead), once the crew has left with the patient or
    the trip is closed."""
    now = now or utcnow()
    if trip.will_call_waiting:
        raise TransitionRefused("Release this will-call return with its urgency (the button above).")
    if trip.status not in READY_STATUSES:
        raise TransitionRefused("The patient's readiness can only be marked before the crew leaves "
                                "the pickup.")
    db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip.id)
                       .values(patient_ready_at=now).execution_options(synchronize_session=False))
    db.session.refresh(trip)
    _history(trip, "patient_ready", trip.status, trip.status, user_id, user_label, "Patient ready", at=now)
    emit("hospital", "trip.readiness", "trip", trip.public_id, dict(trip_payload(trip), ready=True))
    return trip


def mark_not_ready(trip, reason, user_id, user_label, now=None):
    """Record that the patient was not ready when the crew arrived (the trip is at pickup), with a
    reason; a later :func:`mark_patient_ready` says when they were.  Raises
    :class:`TransitionRefused`: 409 unless the crew is at the pickup, 400 without a reason."""
    now = now or utcnow()
    reason = " ".join((reason or "").split())[:200]
    if not reason:
        raise TransitionRefused("Say why the patient is not ready.", status=400)
    if trip.status != "at_pickup":
        raise TransitionRefused("\"Not ready\" is marked when the crew is at the pickup.")
    db.session.execute(sa.update(TransportRequest).where(TransportRequest.id == trip.id)
                       .values(not_ready_at=now, not_ready_reason=reason, patient_ready_at=None)
                       .execution_options(synchronize_session=False))
    db.session.refresh(trip)
    _history(trip, "not_ready", trip.status, trip.status, user_id, user_label,
             f"Patient not ready: {reason}", at=now)
    emit("hospital", "trip.readiness", "trip", trip.public_id, dict(trip_payload(trip), ready=False))
    return trip


def announce_openings(now=None, limit=200):
    """Tell the boards about the requests booked ahead whose bidding has just opened.

    Each is announced once: the timer sets ``opening_announced_at`` with a conditional update
    (two relays racing announce it once), writes a ``bidding_opened`` history line and emits
    ``trip.bidding_opened`` in the same transaction.  Bidding itself opened at
    ``bidding_opens_at`` whether announced or not (the clock is the rule); the trip's version
    is left alone, so no open form goes stale.  The caller commits.  Returns how many were
    announced.
    """
    now = now or utcnow()
    T = TransportRequest
    due = list(db.session.scalars(
        sa.select(T).where(T.opening_announced_at.is_(None), T.bidding_opens_at.is_not(None),
                           T.will_call.is_(False),
                           T.bidding_opens_at <= now, T.status == "open")
        .order_by(T.bidding_opens_at).limit(limit)))
    announced = 0
    for trip in due:
        claimed = db.session.execute(
            sa.update(T).where(T.id == trip.id, T.opening_announced_at.is_(None))
            .values(opening_announced_at=now).execution_options(synchronize_session=False)).rowcount
        if not claimed:
            continue
        _history(trip, "bidding_opened", "open", "open", None, "MedPort",
                 "Bidding opened (booked ahead)", at=now)
        emit("hospital", "trip.bidding_opened", "trip", trip.public_id, trip_payload(trip))
        announced += 1
    return announced


def agency_may_serve(trip, agency_id, agency_levels, now=None):
    """Whether the agency is invited to ``trip`` and has the level of care for it."""
    now = now or utcnow()
    if not any(LEVEL_RANK[level] >= LEVEL_RANK[trip.level_of_care] for level in agency_levels):
        return False
    if trip.invite_mode == "all":
        return True
    if agency_id in trip.invited_ids:
        return True
    if trip.invite_mode == "preferred_then_all":
        return now >= trip.bidding_start + timedelta(minutes=trip.invite_all_after_minutes or 0)
    return False


def get_for_hospital(public_id, hospital_id):
    """A trip of this hospital, or None (another hospital's trip is not found, not forbidden)."""
    return db.session.scalar(
        sa.select(TransportRequest).where(
            TransportRequest.public_id == public_id, TransportRequest.hospital_id == hospital_id
        )
    )


def get_by_public_id(public_id):
    return db.session.scalar(sa.select(TransportRequest).where(TransportRequest.public_id == public_id))
