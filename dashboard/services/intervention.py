"""The transport center steps in on a request: award, assign, extend, re-open, cancel.

Every action writes the hospital silo only, through :mod:`services.trips` (so the
same checks and compare-and-set apply as for the hospital itself), with the
coordinator as the history user.  The relay audits each action from its event.
Refusals raise :class:`trips.TransitionRefused` with a message and an HTTP status.
Nothing here commits.
"""
from datetime import timedelta

import sqlalchemy as sa

from ..extensions import db
from ..models.base import utcnow
from ..models.center import Agency
from ..models.ems import TransportBid, Unit
from ..models.hospital import CANCEL_REASONS
from ..models.vocabulary import LEVEL_RANK
from . import awards, configuration, oversight, trips
from .trips import TransitionRefused

STALE = ("This request changed while you were looking at it (another user or the center acted). "
         "Reload to see its current state; nothing was saved.")


def actor_label(display_name):
    """How the center appears in a request's history."""
    return f"{display_name} (transport center)"


def check_version(trip, expected_version):
    """Refuse (409) when the coordinator acted on an older version of the request."""
    if expected_version is not None and trip.version != expected_version:
        raise TransitionRefused(STALE)


def award_bid(trip, bid_public_id, expected_version, *, actor):
    """Award a live bid on the hospital's behalf (source "center"): :func:`awards.award_bid`."""
    return awards.award_bid(trip, bid_public_id, expected_version, by="center", actor=actor)


def assign_unit(trip, agency_id, unit_id, eta_minutes, reason, expected_version, *, actor):
    """Assign an agency's unit directly, with a reason recorded in the award note and history.

    The unit must be the agency's, active, not on break or out of service, of a
    sufficient level and not booked for an overlapping pickup window.  When the
    agency has a live bid with that unit, that bid is the one accepted.
    """
    check_version(trip, expected_version)
    reason = (reason or "").strip()
    if not reason:
        raise TransitionRefused("Say why the center assigns this request.", status=400)
    agency = db.session.get(Agency, agency_id) if agency_id else None
    if agency is None or not agency.active:
        raise TransitionRefused("Choose an active agency.", status=400)
    unit = db.session.get(Unit, unit_id) if unit_id else None
    if unit is None or not unit.active:
        raise TransitionRefused("Choose an active unit.", status=400)
    if unit.agency_id != agency.id:
        raise TransitionRefused(f"{unit.number} is not a unit of {agency.name}.", status=400)
    if LEVEL_RANK[unit.level] < LEVEL_RANK[trip.level_of_care]:
        raise TransitionRefused(
            f"{unit.number} is {unit.level}; this request needs {trip.level_of_care} or higher.",
            status=400)
    if unit.status not in oversight.ASSIGNABLE_UNIT_STATUSES:
        raise TransitionRefused(
            f"{unit.number} is not available ({unit.status.replace('_', ' ')}).", status=409)
    if oversight.overlapping_route(unit.id, trip) is not None:
        raise TransitionRefused(
            f"{unit.number} is already booked for an overlapping pickup window.", status=409)
    bid = db.session.scalar(sa.select(TransportBid.id).where(
        TransportBid.trip_id == trip.id, TransportBid.agency_id == agency.id,
        TransportBid.unit_id == unit.id, TransportBid.status == "live"))
    offer = {"id": bid, "trip_id": trip.id, "agency_id": agency.id, "agency_name": agency.name,
             "unit_id": unit.id, "unit_label": unit.label, "eta_minutes": eta_minutes}
    return trips.award(trip, offer, source="center", note=reason[:250], expected_version=expected_version,
                       actor=actor)


def extend_deadline(trip, minutes, note, expected_version, now=None, *, actor):
    """Push an open request's bidding deadline ``minutes`` past the later of now and the deadline."""
    check_version(trip, expected_version)
    now = now or utcnow()
    new_deadline = max(trip.bid_deadline, now) + timedelta(minutes=minutes)
    text = f"Bidding deadline extended by {minutes} min by the transport center"
    if note:
        text += f": {note}"
    return trips.extend_deadline(trip, new_deadline, text, actor=actor)


def reopen(trip, reason, expected_version, *, actor):
    """Take an awarded or en-route request back to open for new bids."""
    check_version(trip, expected_version)
    reason = (reason or "").strip()
    if not reason:
        raise TransitionRefused("Say why the request is re-opened.", status=400)
    return trips.reopen(trip, "Re-opened by the transport center: " + reason,
                        configuration.get("bid_deadline_default_minutes"),
                        expected_version=expected_version, actor=actor)


def cancel(trip, reason, note, expected_version, *, actor):
    """Cancel an open or awarded request with a reason."""
    check_version(trip, expected_version)
    if reason not in CANCEL_REASONS:
        raise TransitionRefused("Choose a cancellation reason.", status=400)
    note = (note or "").strip()
    if reason == "other" and not note:
        raise TransitionRefused("Say what the other reason is.", status=400)
    return trips.cancel(trip, reason, note, expected_version=expected_version, actor=actor)
